/* Unit tests: the runtime interface (include/runtime.h): each function calls
 * the daemon's operation, and a backoff always comes with a Retry-After of
 * at least one second.  The daemon's own table behind it is tested through
 * the API in tests/integration/test_api.py (POST .../poll). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "runtime.h"

struct fake {
    bool stopping;
    int wakes;
    int64_t backoff_s;
    struct cfgref *ref;
};

static bool f_stopping(void *ctx) { return ((struct fake *)ctx)->stopping; }
static struct cfgref *f_config(void *ctx) { return ((struct fake *)ctx)->ref; }
static void f_wake(void *ctx) { ((struct fake *)ctx)->wakes++; }

static int f_account(void *ctx, const char *name, struct runtime_account *out)
{
    (void)ctx;
    if (strcmp(name, "a") != 0)
        return -1;
    memset(out, 0, sizeof *out);
    out->state = ACCOUNT_AUTH_ERROR;
    snprintf(out->last_error, sizeof out->last_error, "refused");
    return 0;
}

static enum runtime_poll f_poll(void *ctx, const char *name, int64_t *retry_after_s)
{
    struct fake *f = ctx;
    if (strcmp(name, "a") != 0)
        return RUNTIME_POLL_UNKNOWN;
    if (f->backoff_s < 0)
        return RUNTIME_POLL_QUEUED;
    *retry_after_s = f->backoff_s;
    return RUNTIME_POLL_BACKOFF;
}

static const struct runtime_ops ops = {f_stopping, f_config, f_wake, f_account, f_poll};

static void interface(void **state)
{
    (void)state;
    struct fake f = {.backoff_s = -1, .ref = (struct cfgref *)&f};
    struct runtime rt = {&ops, &f};
    assert_false(runtime_stopping(&rt));
    f.stopping = true;
    assert_true(runtime_stopping(&rt));
    assert_ptr_equal(runtime_config(&rt), (struct cfgref *)&f);
    runtime_wake_delivery(&rt);
    runtime_wake_delivery(&rt);
    assert_int_equal(f.wakes, 2);
    struct runtime_account ra;
    assert_int_equal(runtime_account(&rt, "a", &ra), 0);
    assert_int_equal(ra.state, ACCOUNT_AUTH_ERROR);
    assert_string_equal(ra.last_error, "refused");
    assert_int_equal(runtime_account(&rt, "b", &ra), -1);
    int64_t ra_s = 99;
    assert_int_equal(runtime_poll_now(&rt, "a", &ra_s), RUNTIME_POLL_QUEUED);
    assert_int_equal(ra_s, 0);
    assert_int_equal(runtime_poll_now(&rt, "b", &ra_s), RUNTIME_POLL_UNKNOWN);
    f.backoff_s = 900;
    assert_int_equal(runtime_poll_now(&rt, "a", &ra_s), RUNTIME_POLL_BACKOFF);
    assert_int_equal(ra_s, 900);
    f.backoff_s = 0; /* less than a second left: still "wait a second" */
    assert_int_equal(runtime_poll_now(&rt, "a", &ra_s), RUNTIME_POLL_BACKOFF);
    assert_int_equal(ra_s, 1);
}

static void state_names(void **state)
{
    (void)state;
    enum account_state s;
    for (int i = 0; i < ACCOUNT_STATES; i++) {
        assert_int_equal(account_state_parse(account_state_name((enum account_state)i), &s), 0);
        assert_int_equal(s, i);
    }
    assert_string_equal(account_state_name(ACCOUNT_BACKOFF), "backoff");
    assert_string_equal(account_state_name((enum account_state)99), "unknown");
    assert_int_equal(account_state_parse("Backoff", &s), -1);
}

/* The last error's code: the server's RFC 2449 code first, else the kind;
 * every code's name parses back, "" is none. */
static void error_codes(void **state)
{
    (void)state;
    static const struct {
        enum err_kind kind;
        const char *server; /* the server's text, with its code */
        enum account_error want;
        const char *name;
    } v[] = {
        {ERR_NONE, NULL, ACCOUNT_ERR_NONE, ""},
        {ERR_SERVER, "[LOGIN-DELAY] wait", ACCOUNT_ERR_LOGIN_DELAY, "login_delay"},
        {ERR_AUTH, "[LOGIN-DELAY] too soon", ACCOUNT_ERR_LOGIN_DELAY, "login_delay"},
        {ERR_SERVER, "[IN-USE] locked", ACCOUNT_ERR_IN_USE, "in_use"},
        {ERR_SERVER, "[SYS/TEMP/DISK] full", ACCOUNT_ERR_SYS_TEMP, "sys_temp"},
        {ERR_SERVER, "[SYS/PERM] gone", ACCOUNT_ERR_SYS_PERM, "sys_perm"},
        {ERR_AUTH, "[AUTH] no", ACCOUNT_ERR_AUTH, "auth"},
        {ERR_AUTH, "no", ACCOUNT_ERR_AUTH, "auth"},
        {ERR_SERVER, "[FOO] what", ACCOUNT_ERR_SERVER, "server"},
        {ERR_SERVER, "no such message", ACCOUNT_ERR_SERVER, "server"},
        {ERR_CONN, NULL, ACCOUNT_ERR_NETWORK, "network"},
        {ERR_TIMEOUT, NULL, ACCOUNT_ERR_TIMEOUT, "timeout"},
        {ERR_TLS, NULL, ACCOUNT_ERR_TLS, "tls"},
        {ERR_PROTO, NULL, ACCOUNT_ERR_PROTOCOL, "protocol"},
        {ERR_LIMIT, NULL, ACCOUNT_ERR_LIMIT, "limit"},
        {ERR_INTERNAL, NULL, ACCOUNT_ERR_INTERNAL, "internal"},
        {ERR_USAGE, NULL, ACCOUNT_ERR_INTERNAL, "internal"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        struct err e;
        err_clear(&e);
        if (v[i].kind != ERR_NONE)
            err_set(&e, v[i].kind, "x");
        if (v[i].server)
            err_set_server(&e, v[i].server, strlen(v[i].server));
        enum account_error c = account_error_of(&e);
        assert_int_equal(c, v[i].want);
        assert_string_equal(account_error_name(c), v[i].name);
    }
    struct err e;
    err_set(&e, ERR_AUTH, "not authorized yet");
    e.code = ERR_CODE_NO_GRANT;
    assert_string_equal(account_error_name(account_error_of(&e)), "no_grant");
    enum account_error c;
    for (int i = 0; i < ACCOUNT_ERRORS; i++) {
        assert_int_equal(account_error_parse(account_error_name((enum account_error)i), &c), 0);
        assert_int_equal(c, i);
    }
    assert_int_equal(account_error_parse("Login_Delay", &c), -1);
    assert_int_equal(account_error_parse(NULL, &c), -1);
    assert_string_equal(account_error_name((enum account_error)99), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(interface),
        cmocka_unit_test(state_names),
        cmocka_unit_test(error_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
