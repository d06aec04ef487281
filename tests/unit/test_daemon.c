/* Unit tests: `pop3bridge run` (include/daemon.h): its command line, how a
 * finished poll counts, the exit code, and one whole `run --once` against an
 * account whose server refuses the connection.  daemon_main keeps its state
 * in the process, so it runs to its end (past argument parsing) once here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define _XOPEN_SOURCE 700
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capture.h"
#include "cli.h"
#include "clock.h"
#include "daemon.h"
#include "store.h"
#include "tmpstore.h"

#define OUT_MAX 16384
#define ONCE_MAX_MS 20000 /* a --once run against a refusing server ends within this */

static char out[OUT_MAX];

static int run(char **argv) { return capture_run(daemon_main, argv, out, sizeof out); }

static void args_help(void **state)
{
    (void)state;
    char *argv[] = {"run", "--help", NULL};
    assert_int_equal(run(argv), CLI_EXIT_OK);
    assert_non_null(strstr(out, "usage: pop3bridge run --config FILE [--once]"));
}

static void args_bad(void **state)
{
    (void)state;
    char *unknown[] = {"run", "--config", "x.json", "--bogus", NULL};
    assert_int_equal(run(unknown), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "unknown or incomplete option \"--bogus\""));
    assert_non_null(strstr(out, "usage: pop3bridge run"));

    char *no_config[] = {"run", "--once", NULL};
    assert_int_equal(run(no_config), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "usage: pop3bridge run"));

    char *no_value[] = {"run", "--config", NULL};
    assert_int_equal(run(no_value), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "unknown or incomplete option \"--config\""));

    char *extra[] = {"run", "--config", "x.json", "surplus", NULL};
    assert_int_equal(run(extra), CLI_EXIT_USAGE);
    assert_non_null(strstr(out, "usage: pop3bridge run"));
}

static void poll_outcome(void **state)
{
    (void)state;
    assert_int_equal(daemon_poll_outcome(0, false), DAEMON_POLL_OK);
    assert_int_equal(daemon_poll_outcome(0, true), DAEMON_POLL_OK); /* done before the stop */
    assert_int_equal(daemon_poll_outcome(-1, true), DAEMON_POLL_CANCELLED);
    assert_int_equal(daemon_poll_outcome(-1, false), DAEMON_POLL_FAILED);
}

static void exit_code(void **state)
{
    (void)state;
    assert_int_equal(daemon_exit_code(false, true, 0, 0), CLI_EXIT_OK);
    assert_int_equal(daemon_exit_code(false, true, 1, 0), DAEMON_EXIT_POLLS_FAILED);
    assert_int_equal(daemon_exit_code(false, true, 2, 3), DAEMON_EXIT_POLLS_FAILED);
    assert_int_equal(daemon_exit_code(false, true, 0, 1), DAEMON_EXIT_POLLS_SKIPPED);
    /* without --once failures only back off: a stop is a clean exit */
    assert_int_equal(daemon_exit_code(false, false, 5, 5), CLI_EXIT_OK);
    assert_int_equal(daemon_exit_code(true, true, 1, 1), CLI_EXIT_LOCAL);
    assert_int_equal(daemon_exit_code(true, false, 0, 0), CLI_EXIT_LOCAL);
    assert_int_not_equal(DAEMON_EXIT_POLLS_FAILED, CLI_EXIT_OK);
    assert_int_not_equal(DAEMON_EXIT_POLLS_SKIPPED, DAEMON_EXIT_POLLS_FAILED);
}

/* A 127.0.0.1 port nothing listens on (bound, then closed). */
static unsigned closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* run --once: the poll fails (connection refused), the run ends by itself
 * with DAEMON_EXIT_POLLS_FAILED, the failure is logged with the account's
 * name, and the account's state is saved as a backoff. */
static void once_failed_poll(void **state)
{
    (void)state;
    char dir[TMPDIR_MAX], state_dir[96], cfg_path[96];
    assert_int_equal(tmpdir_make(dir, sizeof dir, "daemon"), 0);
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/bridge.json", dir);
    FILE *f = fopen(cfg_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{ \"state_dir\": \"%s\", \"log_level\": \"info\",\n"
            "  \"accounts\": [ { \"name\": \"refusing-acct\", \"host\": \"127.0.0.1\",\n"
            "    \"port\": %u, \"tls\": \"none\", \"allow_plaintext\": true,\n"
            "    \"username\": \"u\", \"password_env\": \"TEST_DAEMON_PW\",\n"
            "    \"timeout\": \"2s\" } ] }\n",
            state_dir, closed_port());
    fclose(f);
    assert_int_equal(chmod(cfg_path, 0600), 0);
    setenv("TEST_DAEMON_PW", "pw", 1);

    char *argv[] = {"run", "--config", cfg_path, "--once", NULL};
    int64_t t0 = clock_mono_ms();
    int rc = run(argv);
    int64_t took = clock_mono_ms() - t0;
    if (rc != DAEMON_EXIT_POLLS_FAILED)
        fail_msg("run --once exited %d, not %d; it printed:\n%s", rc, DAEMON_EXIT_POLLS_FAILED,
                 out);
    if (took > ONCE_MAX_MS)
        fail_msg("run --once took %lld ms", (long long)took);
    assert_non_null(strstr(out, "poll_failed"));
    assert_non_null(strstr(out, "account=refusing-acct"));
    assert_null(strstr(out, "poll_cancelled"));

    struct err e;
    struct store *st = store_open(state_dir, &e);
    assert_non_null(st);
    struct store_account_state s;
    assert_int_equal(store_account_get(st, "refusing-acct", &s, &e), 0);
    assert_string_equal(s.state, "backoff");
    assert_true(s.backoff_until > 0);
    assert_non_null(strstr(s.last_error, "127.0.0.1"));
    tmpstore_close(dir, st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(args_help),
        cmocka_unit_test(args_bad),
        cmocka_unit_test(poll_outcome),
        cmocka_unit_test(exit_code),
        cmocka_unit_test(once_failed_poll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
