/* Unit tests: secrets from environment variables, files, systemd credentials
 * and commands (include/secrets.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "secrets.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_secrets.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void put(const char *name, const void *data, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Read r; expect the value `want`, or (want NULL) a failure whose text holds `why`. */
static void expect(enum secrets_source src, const char *ref, const char *want, const char *why,
                   int64_t timeout_ms)
{
    struct secrets_req q = {.source = src, .ref = ref, .cwd = dir, .timeout_ms = timeout_ms};
    char *v = (char *)"sentinel", text[SECRETS_WHY_MAX];
    size_t len = 99;
    int rc = secrets_read(&q, &v, &len, text, sizeof text);
    if (want) {
        if (rc != 0)
            fail_msg("%s: %s", ref, text);
        assert_string_equal(v, want);
        assert_int_equal(len, strlen(want));
        secrets_free(&v, len);
        assert_null(v);
    } else {
        assert_int_equal(rc, -1);
        assert_null(v);
        assert_int_equal(len, 0);
        if (!strstr(text, why))
            fail_msg("%s: \"%s\" does not hold \"%s\"", ref, text, why);
    }
}

static void env(void **state)
{
    (void)state;
    setenv("TS_OK", "s3cret", 1);
    setenv("TS_EMPTY", "", 1);
    setenv("TS_TWO", "a\nb", 1);
    setenv("TS_CR", "abc\r", 1);
    unsetenv("TS_UNSET");
    expect(SECRETS_ENV, "TS_OK", "s3cret", NULL, 0);
    expect(SECRETS_ENV, "TS_UNSET", NULL, "environment variable TS_UNSET is not set", 0);
    expect(SECRETS_ENV, "TS_EMPTY", NULL, "environment variable TS_EMPTY is empty", 0);
    expect(SECRETS_ENV, "TS_TWO", NULL, "contains a control character", 0);
    expect(SECRETS_ENV, "TS_CR", NULL, "contains a control character", 0);
    char *big = malloc(SECRETS_MAX + 2);
    assert_non_null(big);
    memset(big, 'x', SECRETS_MAX + 1);
    big[SECRETS_MAX + 1] = '\0';
    setenv("TS_BIG", big, 1);
    expect(SECRETS_ENV, "TS_BIG", NULL, "is longer than", 0);
    big[SECRETS_MAX] = '\0'; /* exactly the limit is fine */
    setenv("TS_BIG", big, 1);
    expect(SECRETS_ENV, "TS_BIG", big, NULL, 0);
    free(big);
}

static void files(void **state)
{
    (void)state;
    char p[128];
    put("crlf", "pw\r\nsecond line\n", 16);
    snprintf(p, sizeof p, "%s/crlf", dir);
    expect(SECRETS_FILE, p, "pw", NULL, 0);
    put("empty", "", 0);
    snprintf(p, sizeof p, "%s/empty", dir);
    expect(SECRETS_FILE, p, NULL, "is empty", 0);
    put("ctl", "a\tb\n", 4);
    snprintf(p, sizeof p, "%s/ctl", dir);
    expect(SECRETS_FILE, p, NULL, "contains a control character", 0);
    snprintf(p, sizeof p, "%s/missing", dir);
    expect(SECRETS_FILE, p, NULL, "cannot open", 0);
    expect(SECRETS_FILE, dir, NULL, "is not a regular file", 0);
    /* a long first line is refused even when the file goes on */
    char *big = malloc(SECRETS_MAX + 100);
    assert_non_null(big);
    memset(big, 'y', SECRETS_MAX + 100);
    put("big", big, SECRETS_MAX + 100);
    free(big);
    snprintf(p, sizeof p, "%s/big", dir);
    expect(SECRETS_FILE, p, NULL, "is longer than", 0);
}

static void credentials(void **state)
{
    (void)state;
    assert_int_equal(secrets_credential_prefix("${CREDENTIALS_DIRECTORY}/pw"), 25);
    assert_int_equal(secrets_credential_prefix("$CREDENTIALS_DIRECTORY/pw"), 23);
    assert_int_equal(secrets_credential_prefix("${CREDENTIALS_DIRECTORY}/"), 0);
    assert_int_equal(secrets_credential_prefix("/etc/pw"), 0);
    assert_int_equal(secrets_credential_prefix(NULL), 0);
    put("cred", "from-systemd\n", 13);
    unsetenv("CREDENTIALS_DIRECTORY");
    expect(SECRETS_FILE, "${CREDENTIALS_DIRECTORY}/cred", NULL,
           "CREDENTIALS_DIRECTORY is not set", 0);
    setenv("CREDENTIALS_DIRECTORY", "relative/dir", 1);
    expect(SECRETS_FILE, "$CREDENTIALS_DIRECTORY/cred", NULL, "not an absolute path", 0);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    expect(SECRETS_FILE, "${CREDENTIALS_DIRECTORY}/cred", "from-systemd", NULL, 0);
    expect(SECRETS_FILE, "$CREDENTIALS_DIRECTORY/cred", "from-systemd", NULL, 0);
    unsetenv("CREDENTIALS_DIRECTORY");
}

static void commands(void **state)
{
    (void)state;
    expect(SECRETS_COMMAND, "printf 'tok\\nrest\\n'", "tok", NULL, 5000);
    expect(SECRETS_COMMAND, "exit 3", NULL, "the command exited with status 3", 5000);
    expect(SECRETS_COMMAND, "kill -9 $$", NULL, "the command was killed by signal 9", 5000);
    expect(SECRETS_COMMAND, "printf '\\nlate'", NULL, "has an empty first line", 5000);
    expect(SECRETS_COMMAND, "head -c 70000 /dev/zero | tr '\\0' a", NULL,
           "printed more than SECRETS_OUTPUT_MAX", 5000);
    /* runs in cwd */
    put("here", "x", 1);
    expect(SECRETS_COMMAND, "test -f here && echo yes", "yes", NULL, 5000);
    /* a command that outlives its deadline is killed, with whatever it started */
    int64_t t0 = clock_mono_ms();
    expect(SECRETS_COMMAND, "sleep 30 & sleep 30", NULL, "the command timed out", 300);
    int64_t took = clock_mono_ms() - t0;
    assert_true(took >= 250 && took < 5000);
    /* one that closes its output but does not exit is timed out too */
    t0 = clock_mono_ms();
    expect(SECRETS_COMMAND, "echo v; exec >&-; sleep 30", NULL, "the command timed out", 300);
    assert_true(clock_mono_ms() - t0 < 5000);
}

static void read_file_raw(void **state)
{
    (void)state;
    char p[128], buf[8];
    size_t n = 99;
    put("raw", "abcdefghij", 10);
    snprintf(p, sizeof p, "%s/raw", dir);
    assert_int_equal(secrets_read_file(p, true, buf, sizeof buf, &n), 0);
    assert_int_equal(n, sizeof buf); /* cut at the cap */
    assert_memory_equal(buf, "abcdefgh", 8);
    assert_int_equal(secrets_read_file(dir, true, buf, sizeof buf, &n), -2);
    snprintf(p, sizeof p, "%s/none", dir);
    assert_int_equal(secrets_read_file(p, false, buf, sizeof buf, &n), -1);
    /* not regular but allowed: a pipe's other end, as with --password-file <(...) */
    assert_int_equal(secrets_read_file("/dev/null", false, buf, sizeof buf, &n), 0);
    assert_int_equal(n, 0);
    char *v = NULL;
    secrets_free(&v, 0); /* NULL-safe */
    secrets_free(NULL, 0);
}

int main(void)
{
    umask(077); /* the configs and secret files written here are 0600: perms.h refuses others */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(env),
        cmocka_unit_test(files),
        cmocka_unit_test(credentials),
        cmocka_unit_test(commands),
        cmocka_unit_test(read_file_raw),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
