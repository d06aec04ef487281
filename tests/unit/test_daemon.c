/* Unit tests: the daemon's backoff policy (the one place a poll failure
 * becomes an account state and a delay). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "daemon.h"

#define MIN_MS 60000LL

static int64_t backoff(enum err_kind kind, enum err_code code, int fails, int64_t interval,
                       long login_delay, enum account_state *state)
{
    struct err e;
    err_set(&e, kind, "x");
    e.code = code;
    return daemon_backoff_ms(&e, fails, interval, login_delay, state);
}

static void auth_failures_back_off_long(void **st)
{
    (void)st;
    enum account_state state;
    int64_t d1 = backoff(ERR_AUTH, ERR_CODE_AUTH, 1, MIN_MS, -1, &state);
    assert_int_equal(state, ACCOUNT_AUTH_ERROR);
    assert_true(d1 >= 15 * MIN_MS);
    int64_t d2 = backoff(ERR_AUTH, ERR_CODE_NONE, 2, MIN_MS, -1, &state);
    assert_true(d2 > d1);
    int64_t dmax = backoff(ERR_AUTH, ERR_CODE_NONE, 50, MIN_MS, -1, &state);
    assert_true(dmax <= 6 * 60 * MIN_MS); /* capped */
}

/* No OAuth2 grant: nothing is sent anywhere, so the account is looked at
 * again each interval (polling resumes soon after `oauth2 login`), in
 * auth_error, however many times it failed. */
static void missing_grant_looks_each_interval(void **st)
{
    (void)st;
    enum account_state state = ACCOUNT_IDLE;
    for (int fails = 1; fails < 40; fails += 7) {
        assert_int_equal(backoff(ERR_AUTH, ERR_CODE_NO_GRANT, fails, 2000, -1, &state), 2000);
        assert_int_equal(state, ACCOUNT_AUTH_ERROR);
    }
    assert_int_equal(backoff(ERR_AUTH, ERR_CODE_NO_GRANT, 3, 5 * MIN_MS, -1, &state), 5 * MIN_MS);
}

static void temporary_failures_back_off_and_grow(void **st)
{
    (void)st;
    enum account_state state;
    static const struct {
        enum err_kind kind;
        enum err_code code;
    } temp[] = {{ERR_CONN, ERR_CODE_NONE},
                {ERR_TIMEOUT, ERR_CODE_NONE},
                {ERR_TLS, ERR_CODE_NONE},
                {ERR_SERVER, ERR_CODE_IN_USE},
                {ERR_SERVER, ERR_CODE_SYS_TEMP},
                {ERR_AUTH, ERR_CODE_IN_USE}}; /* [IN-USE] at PASS is not a bad password */
    for (size_t i = 0; i < sizeof temp / sizeof temp[0]; i++) {
        int64_t d1 = backoff(temp[i].kind, temp[i].code, 1, MIN_MS, -1, &state);
        assert_int_equal(state, ACCOUNT_BACKOFF);
        int64_t d3 = backoff(temp[i].kind, temp[i].code, 3, MIN_MS, -1, &state);
        assert_true(d1 > 0 && d3 > d1);
        int64_t dmax = backoff(temp[i].kind, temp[i].code, 100, MIN_MS, -1, &state);
        assert_true(dmax <= 15 * MIN_MS); /* never longer than max(interval, 15 min) */
    }
}

static void login_delay_is_a_minimum(void **st)
{
    (void)st;
    enum account_state state;
    int64_t d = backoff(ERR_SERVER, ERR_CODE_LOGIN_DELAY, 1, MIN_MS, 900, &state);
    assert_int_equal(state, ACCOUNT_BACKOFF);
    assert_true(d >= 900 * 1000LL);
    d = backoff(ERR_SERVER, ERR_CODE_LOGIN_DELAY, 1, 30 * MIN_MS, 900, &state);
    assert_true(d >= 30 * MIN_MS); /* and never below the poll interval */
}

static void other_failures_are_errors(void **st)
{
    (void)st;
    enum account_state state;
    int64_t d = backoff(ERR_PROTO, ERR_CODE_NONE, 1, MIN_MS, -1, &state);
    assert_int_equal(state, ACCOUNT_ERROR);
    assert_true(d > 0);
    backoff(ERR_SERVER, ERR_CODE_SYS_PERM, 1, MIN_MS, -1, &state);
    assert_int_equal(state, ACCOUNT_ERROR);
    int64_t dmax = backoff(ERR_INTERNAL, ERR_CODE_NONE, 1000, MIN_MS, -1, &state);
    assert_true(dmax <= 60 * MIN_MS);
}

static void account_state_names(void **state)
{
    (void)state;
    const char *names[] = {"idle", "polling", "backoff", "auth_error", "error"};
    for (int i = 0; i < ACCOUNT_STATES; i++) {
        enum account_state s = ACCOUNT_ERROR;
        assert_string_equal(account_state_name((enum account_state)i), names[i]);
        assert_int_equal(account_state_parse(names[i], &s), 0);
        assert_int_equal(s, i);
    }
    enum account_state s = ACCOUNT_IDLE;
    assert_string_equal(account_state_name((enum account_state)ACCOUNT_STATES), "unknown");
    assert_int_equal(account_state_parse("Idle", &s), -1);
    assert_int_equal(account_state_parse("", &s), -1);
    assert_int_equal(account_state_parse(NULL, &s), -1);
    assert_int_equal(s, ACCOUNT_IDLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auth_failures_back_off_long),
        cmocka_unit_test(missing_grant_looks_each_interval),
        cmocka_unit_test(temporary_failures_back_off_and_grow),
        cmocka_unit_test(login_delay_is_a_minimum),
        cmocka_unit_test(other_failures_are_errors),
        cmocka_unit_test(account_state_names),
    };
    return cmocka_run_group_tests_name("daemon", tests, NULL, NULL);
}
