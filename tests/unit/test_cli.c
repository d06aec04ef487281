/* Unit tests: the probe and fetch commands (include/cli.h): the one mapping
 * of error categories to exit codes, and what is refused before any
 * connection is made.  Sessions against real servers are in
 * tests/integration/test_pop3_cli.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capture.h"
#include "cli.h"

static void exit_codes(void **state)
{
    (void)state;
    static const struct {
        enum err_kind kind;
        const char *server;
        int code;
    } v[] = {
        {ERR_NONE, NULL, CLI_EXIT_OK},
        {ERR_USAGE, NULL, CLI_EXIT_USAGE},
        {ERR_CONN, NULL, CLI_EXIT_CONN},
        {ERR_TIMEOUT, NULL, CLI_EXIT_CONN},
        {ERR_TLS, NULL, CLI_EXIT_TLS},
        {ERR_PROTO, NULL, CLI_EXIT_PROTO},
        {ERR_LIMIT, NULL, CLI_EXIT_PROTO},
        {ERR_AUTH, NULL, CLI_EXIT_AUTH},
        {ERR_AUTH, "[AUTH] wrong", CLI_EXIT_AUTH},
        {ERR_AUTH, "[LOGIN-DELAY] soon", CLI_EXIT_TEMP},
        {ERR_SERVER, "no such message", CLI_EXIT_SERVER},
        {ERR_SERVER, "[IN-USE] locked", CLI_EXIT_TEMP},
        {ERR_SERVER, "[SYS/PERM] gone", CLI_EXIT_SERVER},
        {ERR_INTERNAL, NULL, CLI_EXIT_LOCAL},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        struct err e;
        err_clear(&e);
        if (v[i].kind != ERR_NONE)
            err_set(&e, v[i].kind, "case %zu", i);
        if (v[i].server)
            err_set_server(&e, v[i].server, strlen(v[i].server));
        if (cli_exit_code(&e) != v[i].code)
            fail_msg("case %zu: exit %d, not %d", i, cli_exit_code(&e), v[i].code);
    }
}

static void usage_errors(void **state)
{
    (void)state;
    /* port 9 on loopback: nothing may be reached before these are refused */
    static const struct {
        const char *args[6];
        const char *says;
    } v[] = {
        {{"probe", NULL}, "pop3bridge: "},
        {{"probe", "http://u@127.0.0.1:9", NULL}, "pop3s:// or pop3://"},
        {{"probe", "pop3s://127.0.0.1:9", NULL}, "needs a user name"},
        {{"probe", "pop3s://u@127.0.0.1:99999", NULL}, "bad port"},
        {{"probe", "--tls", "sometimes", "pop3s://u@127.0.0.1:9", NULL}, "pop3bridge: "},
        {{"probe", "--auth", "md4", "pop3s://u@127.0.0.1:9", NULL}, "md4"},
        {{"probe", "--timeout", "soon", "pop3s://u@127.0.0.1:9", NULL}, "pop3bridge: "},
        {{"probe", "--password-file", "/nonexistent/pw", "pop3s://u@127.0.0.1:9", NULL},
         "cannot read password file /nonexistent/pw"},
        {{"fetch", "pop3s://u@127.0.0.1:9", NULL}, "pop3bridge: "},
    };
    setenv("POP3BRIDGE_PASSWORD", "pw", 1);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *argv[6];
        memcpy(argv, v[i].args, sizeof argv);
        char out[4096];
        int (*fn)(int, char **) = strcmp(argv[0], "probe") == 0 ? cli_probe : cli_fetch;
        int rc = capture_run(fn, argv, out, sizeof out);
        if (rc != CLI_EXIT_USAGE || !strstr(out, v[i].says))
            fail_msg("case %zu: exit %d, output \"%s\"", i, rc, out);
        /* the password never shows */
        assert_null(strstr(out, "=pw"));
    }
    unsetenv("POP3BRIDGE_PASSWORD");
}

static void password_file_limits(void **state)
{
    (void)state;
    char path[] = "/tmp/test_cli.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char *argv[] = {"probe", "--password-file", path, "pop3s://u@127.0.0.1:9", NULL};
    char out[4096];
    assert_int_equal(capture_run(cli_probe, argv, out, sizeof out), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "is empty"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exit_codes),
        cmocka_unit_test(usage_errors),
        cmocka_unit_test(password_file_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
