/* pop3bridge — command line entry: dispatches to the subcommands. */
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "cli.h"
#include "config.h"
#include "daemon.h"
#include "oauth2_cli.h"
#include "perms.h"

static void usage(FILE *out)
{
    fprintf(out, "pop3bridge %s — a bridge from POP3 mailboxes to the web\n\n", POP3BRIDGE_VERSION);
    fputs("pop3bridge run --config FILE [--once]   poll accounts, store, deliver webhooks, serve the API\n"
          "pop3bridge check-config FILE [--keys]   validate a configuration file\n"
          "  " PERMS_OPTION " (with any command that reads the configuration, probe, fetch):\n"
          "      accept a configuration, secret file or state_dir that other users may read\n"
          "      or write, with a warning, instead of refusing it (see pop3bridge(8))\n\n",
          out);
    admin_usage(out);
    oauth2_cli_usage(out);
    cli_usage_pop3(out);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* every file a command creates (the store, a restored database, a Maildir
     * or mbox export, spool files) may hold mail: for this user only */
    umask(077);
    /* the override of perms.h, accepted by every command: taken out of argv before the
     * command parses its own options (up to a "--") */
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            while (i < argc)
                argv[kept++] = argv[i++];
            break;
        }
        if (strcmp(argv[i], PERMS_OPTION) == 0)
            perms_allow_insecure(true);
        else
            argv[kept++] = argv[i];
    }
    argv[kept] = NULL;
    argc = kept;
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "probe") == 0)
        return cli_probe(argc - 1, argv + 1);
    if (strcmp(cmd, "fetch") == 0)
        return cli_fetch(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return daemon_main(argc - 1, argv + 1);
    if (strcmp(cmd, "store") == 0)
        return admin_store_main(argc - 1, argv + 1);
    if (strcmp(cmd, "export") == 0)
        return admin_export_main(argc - 1, argv + 1);
    if (strcmp(cmd, "check-config") == 0)
        return config_check_main(argc - 1, argv + 1);
    if (strcmp(cmd, "oauth2") == 0)
        return oauth2_cli_main(argc - 1, argv + 1);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("pop3bridge %s\n", POP3BRIDGE_VERSION);
        return 0;
    }
    fprintf(stderr, "pop3bridge: Usage: unknown command \"%s\" (see pop3bridge --help)\n", cmd);
    return CLI_EXIT_USAGE;
}
