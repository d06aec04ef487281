/*
 * cli — the `probe` and `fetch` commands: a person's diagnostics and the
 * engine's benchmark path.  Each returns the process exit code.
 *
 * Exit codes (CLI_EXIT_*), one per error category; every failure prints one
 * line on stderr, "pop3bridge: <Kind>: <what>".
 */
#ifndef POP3BRIDGE_CLI_H
#define POP3BRIDGE_CLI_H

#include <stdio.h>

#include "error.h"

enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_CONN = 3,      /* connection or timeout */
    CLI_EXIT_TLS = 4,
    CLI_EXIT_AUTH = 5,
    CLI_EXIT_PROTO = 6,     /* protocol violation or limit exceeded */
    CLI_EXIT_TEMP = 7,      /* [IN-USE], [LOGIN-DELAY], [SYS/TEMP] */
    CLI_EXIT_SERVER = 8,    /* other -ERR */
    CLI_EXIT_LOCAL = 9,     /* local failure (Maildir, memory) */
};

/* The one place an error category becomes an exit code. */
int cli_exit_code(const struct err *e);
/* Print "pop3bridge: <formatted error>" on stderr and return cli_exit_code(). */
int cli_fail(const struct err *e);

int cli_probe(int argc, char **argv);
int cli_fetch(int argc, char **argv);
/* Usage text for probe/fetch (part of `pop3bridge --help`). */
void cli_usage_pop3(FILE *out);

#endif
