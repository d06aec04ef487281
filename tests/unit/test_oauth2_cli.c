/* Unit tests: `pop3bridge oauth2 login` and `oauth2 status`
 * (include/oauth2_cli.h): usage, what login refuses before any request, and
 * status of accounts never authorized.  The flows against a token endpoint
 * are tested in tests/integration/test_oauth2.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capture.h"
#include "cli.h"
#include "oauth2_cli.h"

static char dir[64], cfg_path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_oauth2_cli.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(cfg_path, sizeof cfg_path, "%s/bridge.json", dir);
    FILE *f = fopen(cfg_path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "{ \"state_dir\": \"%s/state\", \"secrets_key_env\": \"TEST_O2_KEY\",\n"
            "  \"accounts\": [\n"
            "    { \"name\": \"st\", \"host\": \"h\", \"username\": \"u\",\n"
            "      \"oauth2\": { \"token_env\": \"TEST_O2_TOKEN\" } },\n"
            "    { \"name\": \"ms\", \"host\": \"h\", \"username\": \"u\",\n"
            "      \"oauth2\": { \"provider\": \"microsoft\", \"client_id\": \"c\" } },\n"
            "    { \"name\": \"pw\", \"host\": \"h\", \"username\": \"u\",\n"
            "      \"password_env\": \"TEST_O2_TOKEN\" } ] }\n",
            dir);
    fclose(f);
    setenv("TEST_O2_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", 1);
    setenv("TEST_O2_TOKEN", "ya29.static", 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void usage(void **state)
{
    (void)state;
    static const struct {
        const char *argv[8];
        const char *says;
    } v[] = {
        {{"oauth2", NULL}, "login"},
        {{"oauth2", "refresh", NULL}, "unknown oauth2 command \"refresh\""},
        {{"oauth2", "login", "ms", NULL}, "needs --config FILE"},
        {{"oauth2", "login", "--config", "x.json", NULL}, "exactly one ACCOUNT"},
        {{"oauth2", "login", "--config", "x.json", "--port", "0", "ms", NULL}, "--port must be"},
        {{"oauth2", "login", "--config", "x.json", "--timeout", "1h", "ms", NULL},
         "--timeout must be"},
        {{"oauth2", "status", NULL}, "needs --config FILE"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[4096];
        int rc = capture_run(oauth2_cli_main, (char **)v[i].argv, out, sizeof out);
        if (rc != CLI_EXIT_USAGE || !strstr(out, v[i].says))
            fail_msg("case %zu: exit %d, \"%s\"", i, rc, out);
    }
}

static void login_refused(void **state)
{
    (void)state;
    char out[4096];
    char *nobody[] = {"oauth2", "login", "--config", cfg_path, "zz", NULL};
    assert_int_equal(capture_run(oauth2_cli_main, nobody, out, sizeof out), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "has no account named \"zz\""));
    char *static_tok[] = {"oauth2", "login", "--config", cfg_path, "st", NULL};
    assert_int_equal(capture_run(oauth2_cli_main, static_tok, out, sizeof out), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "account st has no oauth2 provider"));
    char *password[] = {"oauth2", "login", "--config", cfg_path, "pw", NULL};
    assert_int_equal(capture_run(oauth2_cli_main, password, out, sizeof out), CLI_EXIT_USAGE);
}

static void status_of_new_accounts(void **state)
{
    (void)state;
    char out[4096];
    char *st[] = {"oauth2", "status", "--config", cfg_path, NULL};
    if (capture_run(oauth2_cli_main, st, out, sizeof out) != 0)
        fail_msg("status: %s", out);
    assert_non_null(strstr(out, "st: static token"));
    assert_non_null(strstr(out, "ms: not authorized (microsoft, "));
    assert_non_null(strstr(out, "run: pop3bridge oauth2 login --config"));
    assert_null(strstr(out, "pw:")); /* a password account has nothing to show */
    assert_null(strstr(out, "ya29.static"));
}

int main(void)
{
    umask(077); /* the configs and secret files written here are 0600: perms.h refuses others */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(usage),
        cmocka_unit_test(login_refused),
        cmocka_unit_test(status_of_new_accounts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
