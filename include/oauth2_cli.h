/*
 * oauth2_cli — `pop3bridge oauth2 login` and `pop3bridge oauth2 status`.
 *
 *   pop3bridge oauth2 login --config FILE [--port N] [--timeout SECONDS] ACCOUNT
 *   pop3bridge oauth2 status --config FILE
 *
 * login obtains a grant by the account's flow and stores it (oauth2.h),
 * replacing any earlier one; a running bridge uses it at its next poll:
 *   device_code         prints the verification URL and the user code
 *                       (RFC 8628), then polls the token endpoint until the
 *                       user approves, denies, or the code expires;
 *   authorization_code  listens on http://127.0.0.1:PORT/ (RFC 8252 §7.3;
 *                       an ephemeral port unless --port), prints the
 *                       authorization URL (PKCE S256, a random state), waits
 *                       for the browser to come back with the code (at most
 *                       --timeout, default 300 s) and exchanges it;
 *   client_credentials  checks that a token can be had, and stores it.
 * Instructions go to stdout (flushed line by line, so a program can read
 * them); the device code, the authorization code and every token are never
 * printed.
 *
 * status prints, per account using oauth2, whether it is authorized, when
 * the access token expires and when the refresh token was last used.
 *
 * Exit codes are cli.h's: 0 ok, 2 usage or configuration, 3 connection or
 * timeout, 4 TLS, 5 authorization refused/denied/expired, 6 protocol, 9
 * local error; every failure is one line on stderr.
 */
#ifndef POP3BRIDGE_OAUTH2_CLI_H
#define POP3BRIDGE_OAUTH2_CLI_H

#include <stdio.h>

#define OAUTH2_CLI_WAIT_S 300          /* default wait for the browser */
#define OAUTH2_CLI_TEMP_FAILURES 5     /* token endpoint failures in a row tolerated
                                          while polling a device code */

/* argv[0] is "oauth2".  Returns the process exit code. */
int oauth2_cli_main(int argc, char **argv);
void oauth2_cli_usage(FILE *out);

#endif
