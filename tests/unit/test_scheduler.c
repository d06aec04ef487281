/* Unit tests: the scheduler (include/scheduler.h): picking the due account,
 * the next poll after a success (interval, LOGIN-DELAY, more messages left),
 * the backoff policy (the one place a poll failure becomes an account state
 * and a delay) and polls asked for now. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "scheduler.h"

#define MIN_MS 60000LL

static int64_t backoff(enum err_kind kind, enum err_code code, int fails, int64_t interval,
                       long login_delay, enum account_state *state)
{
    struct err e;
    err_set(&e, kind, "x");
    e.code = code;
    return sched_backoff_ms(&e, fails, interval, login_delay, state);
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

static void exact_backoff_figures(void **st)
{
    (void)st;
    enum account_state state;
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 1, MIN_MS, -1, &state), SCHED_TEMP_BASE_MS);
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 2, MIN_MS, -1, &state),
                     2 * SCHED_TEMP_BASE_MS);
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 99, MIN_MS, -1, &state), SCHED_TEMP_CAP_MS);
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 99, 60 * MIN_MS, -1, &state), 60 * MIN_MS);
    assert_int_equal(backoff(ERR_AUTH, ERR_CODE_NONE, 1, MIN_MS, -1, &state), SCHED_AUTH_BASE_MS);
    assert_int_equal(backoff(ERR_AUTH, ERR_CODE_NONE, 99, MIN_MS, -1, &state), SCHED_AUTH_MAX_MS);
    assert_int_equal(backoff(ERR_PROTO, ERR_CODE_NONE, 1, MIN_MS, -1, &state), SCHED_ERROR_BASE_MS);
    assert_int_equal(backoff(ERR_PROTO, ERR_CODE_NONE, 99, MIN_MS, -1, &state),
                     SCHED_ERROR_MAX_MS);
    assert_int_equal(backoff(ERR_SERVER, ERR_CODE_LOGIN_DELAY, 1, MIN_MS, -1, &state),
                     SCHED_LOGIN_DELAY_DEFAULT_MS);
}

/* A connection refused or reset (a server restart) on an account polled
 * more often than SCHED_TEMP_BASE_MS: the first retry comes within its
 * interval, then doubles; other temporary failures keep SCHED_TEMP_BASE_MS. */
static void refused_connection_retries_within_a_short_interval(void **st)
{
    (void)st;
    enum account_state state;
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 1, 5000, -1, &state), 5000);
    assert_int_equal(state, ACCOUNT_BACKOFF);
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 2, 5000, -1, &state), 10000);
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 3, 5000, -1, &state), 20000);
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 99, 5000, -1, &state), SCHED_TEMP_CAP_MS);
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 1, 10, -1, &state),
                     SCHED_CONN_BASE_MIN_MS);
    /* an interval at or above the first step changes nothing */
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 1, SCHED_TEMP_BASE_MS, -1, &state),
                     SCHED_TEMP_BASE_MS);
    assert_int_equal(backoff(ERR_CONN, ERR_CODE_NONE, 1, 5 * MIN_MS, -1, &state),
                     SCHED_TEMP_BASE_MS);
    /* the server said "not now": its own word, not a restart */
    assert_int_equal(backoff(ERR_SERVER, ERR_CODE_IN_USE, 1, 5000, -1, &state),
                     SCHED_TEMP_BASE_MS);
    assert_int_equal(backoff(ERR_TIMEOUT, ERR_CODE_NONE, 1, 5000, -1, &state),
                     SCHED_TEMP_BASE_MS);
    struct sched_account a = {0};
    struct err e;
    err_set(&e, ERR_CONN, "connection refused");
    assert_int_equal(sched_failed(&a, 1000, 5000, -1, &e), 5000);
    assert_int_equal(a.next_at, 6000);
}

#define T0 1700000000000LL

static void pick_longest_waiting_due(void **st)
{
    (void)st;
    struct sched_account v[3] = {0};
    v[0].next_at = T0 + 500;
    v[1].next_at = T0 - 100;
    v[2].next_at = T0 - 300;
    int64_t wait = -1;
    assert_ptr_equal(sched_pick(v, 3, T0, false, &wait), &v[2]);
    sched_begin(&v[2], T0);
    assert_true(v[2].running);
    assert_int_equal(v[2].state, ACCOUNT_POLLING);
    assert_int_equal(v[2].last_attempt_at, T0);
    assert_ptr_equal(sched_pick(v, 3, T0, false, &wait), &v[1]); /* v[2] is running */
    sched_begin(&v[1], T0);
    assert_null(sched_pick(v, 3, T0, false, &wait));
    assert_int_equal(wait, 500); /* until v[0] */
    v[0].next_at = T0 + 10 * SCHED_WAIT_MAX_MS;
    assert_null(sched_pick(v, 3, T0, false, &wait));
    assert_int_equal(wait, SCHED_WAIT_MAX_MS);
    assert_null(sched_pick(v, 0, T0, false, &wait));
    /* --once: an account done is not picked again */
    struct sched_account o = {.next_at = T0, .polled_once = true};
    assert_null(sched_pick(&o, 1, T0, true, &wait));
    assert_ptr_equal(sched_pick(&o, 1, T0, false, &wait), &o);
}

static void next_poll_after_success(void **st)
{
    (void)st;
    struct sched_account a = {.fails = 3, .last_error = "x",
                              .last_error_code = ACCOUNT_ERR_LOGIN_DELAY};
    sched_begin(&a, T0);
    assert_int_equal(sched_succeeded(&a, T0, MIN_MS, -1, false), MIN_MS);
    assert_false(a.running);
    assert_int_equal(a.state, ACCOUNT_IDLE);
    assert_int_equal(a.fails, 0);
    assert_string_equal(a.last_error, "");
    assert_int_equal(a.last_error_code, ACCOUNT_ERR_NONE);
    assert_int_equal(a.last_success_at, T0);
    assert_int_equal(a.next_at, T0 + MIN_MS);
    assert_int_equal(a.not_before, 0);
    assert_true(a.polled_once);
    /* LOGIN-DELAY longer than the interval: the server's minimum */
    assert_int_equal(sched_succeeded(&a, T0, MIN_MS, 300, false), 300000);
    assert_int_equal(a.not_before, T0 + 300000);
    /* more messages remain: at once (issue 8, section 4) */
    assert_int_equal(sched_succeeded(&a, T0, MIN_MS, -1, true), 0);
    assert_int_equal(a.next_at, T0);
    assert_false(a.polled_once); /* --once goes on */
    /* ...unless LOGIN-DELAY holds it back */
    assert_int_equal(sched_succeeded(&a, T0, MIN_MS, 20, true), 20000);
    assert_int_equal(a.not_before, T0 + 20000);
}

static void failure_backs_off_and_request_waits(void **st)
{
    (void)st;
    struct sched_account a = {0};
    struct err e;
    err_set(&e, ERR_CONN, "connection refused");
    sched_begin(&a, T0);
    assert_int_equal(sched_failed(&a, T0, MIN_MS, -1, &e), SCHED_TEMP_BASE_MS);
    assert_int_equal(a.state, ACCOUNT_BACKOFF);
    assert_int_equal(a.fails, 1);
    assert_non_null(strstr(a.last_error, "connection refused"));
    assert_int_equal(a.last_error_code, ACCOUNT_ERR_NETWORK);
    assert_int_equal(a.next_at, T0 + SCHED_TEMP_BASE_MS);
    assert_int_equal(a.not_before, T0 + SCHED_TEMP_BASE_MS);
    assert_true(a.polled_once);
    assert_int_equal(sched_failed(&a, T0, MIN_MS, -1, &e), 2 * SCHED_TEMP_BASE_MS);
    /* a poll asked for now does not bypass the backoff */
    int64_t retry = 0;
    assert_int_equal(sched_request(&a, T0 + 1, &retry), 1);
    assert_int_equal(retry, (2 * SCHED_TEMP_BASE_MS - 1 + 999) / 1000);
    assert_false(a.requested);
    assert_int_equal(sched_request(&a, T0 + 2 * SCHED_TEMP_BASE_MS - 1, &retry), 1);
    assert_int_equal(retry, 1);
    /* once it is over, the request is due at once */
    assert_int_equal(sched_request(&a, T0 + 2 * SCHED_TEMP_BASE_MS, &retry), 0);
    assert_true(a.requested);
    assert_int_equal(sched_due(&a), a.not_before);
    int64_t wait;
    assert_ptr_equal(sched_pick(&a, 1, T0 + 2 * SCHED_TEMP_BASE_MS, false, &wait), &a);
}

/* A poll that failed for want of an OAuth2 grant sent nothing: the next one
 * is due after the interval, but a poll asked for (after an authorization)
 * runs at once. */
static void no_grant_does_not_block_a_request(void **st)
{
    (void)st;
    struct sched_account a = {0};
    struct err e;
    err_set(&e, ERR_AUTH, "account a: not authorized yet");
    e.code = ERR_CODE_NO_GRANT;
    sched_begin(&a, T0);
    assert_int_equal(sched_failed(&a, T0, MIN_MS, -1, &e), MIN_MS);
    assert_int_equal(a.state, ACCOUNT_AUTH_ERROR);
    assert_int_equal(a.last_error_code, ACCOUNT_ERR_NO_GRANT);
    assert_int_equal(a.next_at, T0 + MIN_MS);
    assert_int_equal(a.not_before, 0);
    int64_t retry = 0;
    assert_int_equal(sched_request(&a, T0 + 1, &retry), 0);
    assert_true(a.requested);
}

/* The account table: an account found by name, the leases counted. */
/* An account this instance takes over (its holder died, or gave it back)
 * is due from its last poll by whoever made it, as the store has it, not
 * from the takeover: on a loaded instance whose own accounts are all
 * overdue, the account nobody polled for 20 s is picked before them, not
 * after every one polled a moment ago. */
static void taken_over_account_due_from_its_last_poll(void **state)
{
    (void)state;
    const int64_t interval = 1000;
    struct sched_account v[3] = {{.name = "own1", .next_at = T0 - 2000},
                                 {.name = "own2", .next_at = T0 - 1500},
                                 /* leased elsewhere when this instance last looked */
                                 {.name = "taken", .next_at = T0 + 200,
                                  .last_attempt_at = T0 - 800}};
    struct store_account_state saved = {.last_attempt_at = T0 - 21000,
                                        .last_success_at = T0 - 20000};
    sched_taken_over(&v[2], &saved, T0, interval);
    assert_int_equal(v[2].next_at, T0 - 20000 + interval); /* its last poll's end + interval */
    assert_int_equal(v[2].last_success_at, T0 - 20000);
    int64_t wait;
    assert_ptr_equal(sched_pick(v, 3, T0, false, &wait), &v[2]);
    sched_begin(&v[2], T0);
    assert_ptr_equal(sched_pick(v, 3, T0, false, &wait), &v[0]);

    /* polled by its holder just before it died: due now, never later (the
     * holder's clock may be ahead of this one's) */
    struct sched_account a = {.next_at = T0 + 900};
    saved = (struct store_account_state){.last_attempt_at = T0 - 300, .last_success_at = T0 - 100};
    sched_taken_over(&a, &saved, T0, interval);
    assert_int_equal(a.next_at, T0);
    saved.last_success_at = T0 + 60000;
    sched_taken_over(&a, &saved, T0, interval);
    assert_int_equal(a.next_at, T0);
    /* nothing saved, or never polled by anyone: the most overdue of all */
    a = (struct sched_account){.next_at = T0 + 900};
    sched_taken_over(&a, NULL, T0, interval);
    assert_int_equal(a.next_at, 0);
    a = (struct sched_account){.next_at = T0 + 900};
    saved = (struct store_account_state){0};
    sched_taken_over(&a, &saved, T0, interval);
    assert_int_equal(a.next_at, 0);
    /* the holder's last poll failed: its backoff (or LOGIN-DELAY) holds */
    a = (struct sched_account){.next_at = T0 - 5000};
    saved = (struct store_account_state){.last_attempt_at = T0 - 4000,
                                         .backoff_until = T0 + 25000};
    sched_taken_over(&a, &saved, T0, interval);
    assert_int_equal(a.next_at, T0 + 25000);
    assert_int_equal(a.not_before, T0 + 25000);
    int64_t retry;
    assert_int_equal(sched_request(&a, T0, &retry), 1);
    /* ... and so does a wait of this instance's own */
    a = (struct sched_account){.next_at = T0 + 7000, .not_before = T0 + 7000};
    saved = (struct store_account_state){.last_attempt_at = T0 - 30000};
    sched_taken_over(&a, &saved, T0, interval);
    assert_int_equal(a.next_at, T0 + 7000);
    /* a backoff that has passed changes nothing */
    a = (struct sched_account){0};
    saved = (struct store_account_state){.last_attempt_at = T0 - 30000,
                                         .backoff_until = T0 - 10000};
    sched_taken_over(&a, &saved, T0, interval);
    assert_int_equal(a.next_at, T0 - 30000 + interval);
    assert_int_equal(a.not_before, 0);
    /* being polled now: its poll's end schedules it */
    a = (struct sched_account){.running = true, .next_at = T0 + 900};
    saved = (struct store_account_state){.last_attempt_at = T0 - 30000};
    sched_taken_over(&a, &saved, T0, interval);
    assert_int_equal(a.next_at, T0 + 900);
}

static void find_and_count_leases(void **state)
{
    (void)state;
    struct sched_account v[3] = {{.name = "a"}, {.name = "b", .lease_until = T0}, {.name = "c"}};
    assert_ptr_equal(sched_find(v, 3, "b"), &v[1]);
    assert_ptr_equal(sched_find(v, 3, "c"), &v[2]);
    assert_null(sched_find(v, 3, "d"));
    assert_null(sched_find(v, 2, "c")); /* only the n given */
    assert_null(sched_find(NULL, 0, "a"));
    /* the hint first; a wrong or stale one (a reload moved the account)
     * still finds it */
    assert_ptr_equal(sched_find_at(v, 3, "b", 1), &v[1]);
    assert_ptr_equal(sched_find_at(v, 3, "b", 2), &v[1]);
    assert_ptr_equal(sched_find_at(v, 3, "c", 99), &v[2]);
    assert_null(sched_find_at(v, 3, "d", 0));
    assert_null(sched_find_at(v, 2, "c", 2)); /* the hint within the n given only */
    assert_int_equal(sched_leases_held(v, 3), 1);
    v[2].lease_until = T0 + 1;
    assert_int_equal(sched_leases_held(v, 3), 2);
    assert_int_equal(sched_leases_held(v, 2), 1);
    assert_int_equal(sched_leases_held(NULL, 0), 0);
}

/* The state goes to the store when a restart needs it, not at every poll
 * of an account polled every minute (issue 8, section 10: that write was
 * a third of the store's work per poll). */
static void state_saved_on_change_not_every_poll(void **st)
{
    (void)st;
    const int64_t mono = 5000000, minute = 60000;
    struct sched_account a = {0};
    sched_begin(&a, T0);
    sched_succeeded(&a, T0, minute, -1, false);
    assert_true(sched_save_due(&a, 0, true, T0, mono)); /* the first poll */
    assert_int_equal(a.saved_at, mono);
    assert_int_equal(a.saved_state, ACCOUNT_IDLE);
    /* polls every minute (a little more), nothing changed: no write... */
    int64_t m = mono;
    for (int i = 1; (i + 1) * (minute + 500) < SCHED_STATE_SAVE_MS; i++) {
        m += minute + 500;
        sched_begin(&a, T0 + i * minute);
        sched_succeeded(&a, T0 + i * minute, minute, -1, false);
        assert_false(sched_save_due(&a, 0, false, T0 + i * minute, m));
    }
    assert_int_equal(a.saved_at, mono);
    /* ...until SCHED_STATE_SAVE_MS went by */
    assert_true(sched_save_due(&a, 0, false, T0, mono + SCHED_STATE_SAVE_MS));
    assert_int_equal(a.saved_at, mono + SCHED_STATE_SAVE_MS);
    m = mono + SCHED_STATE_SAVE_MS + minute;
    /* a failure, a change of state: at once */
    struct err e;
    err_set(&e, ERR_CONN, "connection refused");
    sched_begin(&a, T0);
    sched_failed(&a, T0, minute, -1, &e);
    assert_true(sched_save_due(&a, -1, false, T0, m));
    assert_int_equal(a.saved_state, ACCOUNT_BACKOFF);
    sched_begin(&a, T0 + minute);
    sched_succeeded(&a, T0 + minute, minute, -1, false);
    assert_true(sched_save_due(&a, 0, false, T0 + minute, m + 1));
    assert_int_equal(a.saved_state, ACCOUNT_IDLE);
    /* a LOGIN-DELAY that outlasts the poll: at once */
    sched_begin(&a, T0 + 2 * minute);
    sched_succeeded(&a, T0 + 2 * minute, minute, 300, false);
    assert_true(sched_save_due(&a, 0, false, T0 + 2 * minute, m + 2));
    /* never written (a fresh table entry): written */
    struct sched_account b = {0};
    assert_true(sched_save_due(&b, 0, false, T0, mono));
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
        cmocka_unit_test(exact_backoff_figures),
        cmocka_unit_test(refused_connection_retries_within_a_short_interval),
        cmocka_unit_test(pick_longest_waiting_due),
        cmocka_unit_test(next_poll_after_success),
        cmocka_unit_test(failure_backs_off_and_request_waits),
        cmocka_unit_test(no_grant_does_not_block_a_request),
        cmocka_unit_test(taken_over_account_due_from_its_last_poll),
        cmocka_unit_test(find_and_count_leases),
        cmocka_unit_test(state_saved_on_change_not_every_poll),
    };
    return cmocka_run_group_tests_name("scheduler", tests, NULL, NULL);
}
