/* capture.h — run a command's main function in a unit test with its stdout
 * and stderr caught, for tests of what a command prints and its exit code. */
#ifndef CAPTURE_H
#define CAPTURE_H

#include <stdio.h>
#include <unistd.h>

/* Run fn over the NULL-terminated argv with stdout and stderr into out
 * (size bytes, NUL-terminated, cut if longer); fn's exit code, or -1 when no
 * temporary file could be made. */
static inline int capture_run(int (*fn)(int, char **), char **argv, char *out, size_t size)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    fflush(stdout);
    fflush(stderr);
    FILE *tmp = tmpfile();
    if (!tmp)
        return -1;
    int o = dup(1), e = dup(2);
    dup2(fileno(tmp), 1);
    dup2(fileno(tmp), 2);
    int rc = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(o, 1);
    dup2(e, 2);
    close(o);
    close(e);
    rewind(tmp);
    size_t n = fread(out, 1, size - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return rc;
}

#endif
