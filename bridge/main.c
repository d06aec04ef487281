/* pop3bridge — command line entry. */
#include <stdio.h>

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "usage: pop3bridge probe|fetch ... (work in progress)\n");
    return 64;
}
