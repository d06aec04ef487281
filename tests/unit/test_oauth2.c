/* Unit tests: the bridge's OAuth2 grants (include/oauth2.h) on a real store.
 *
 * The refresh rules run on a fake clock.  The access-token calls run on a
 * real SQLite store; their token endpoint is https://127.0.0.1:1/ (nothing
 * listens there), so a test that expects no request would see a connection
 * error if one were made.  Requests that succeed are the integration
 * tests' (tests/integration/test_oauth2.py, a real authorization server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "oauth2.h"
#include "secretbox.h"
#include "tmpstore.h"

#define MIN 60000LL
#define T0 1700000000000LL

static int64_t wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- rules on a fake clock -------------------------------------------------- */

static void refresh_timing(void **state)
{
    (void)state;
    /* a one-hour token: refreshed in its last 5 minutes */
    int64_t iss = T0, exp = T0 + 60 * MIN;
    assert_false(oauth2_refresh_due(iss, exp, T0));
    assert_false(oauth2_refresh_due(iss, exp, exp - 5 * MIN));
    assert_true(oauth2_refresh_due(iss, exp, exp - 5 * MIN + 1));
    assert_true(oauth2_refresh_due(iss, exp, exp));
    assert_true(oauth2_refresh_due(iss, exp, exp + 1));
    /* exactly 10 minutes counts as long: the 5-minute rule */
    exp = T0 + 10 * MIN;
    assert_false(oauth2_refresh_due(iss, exp, exp - 5 * MIN));
    assert_true(oauth2_refresh_due(iss, exp, exp - 5 * MIN + 1));
    /* shorter than 10 minutes: in its second half */
    exp = T0 + 20000; /* 20 s, as in the integration test */
    assert_false(oauth2_refresh_due(iss, exp, T0));
    assert_false(oauth2_refresh_due(iss, exp, T0 + 10000));
    assert_true(oauth2_refresh_due(iss, exp, T0 + 10001));
    exp = T0 + 8 * MIN;
    assert_false(oauth2_refresh_due(iss, exp, T0 + 4 * MIN));
    assert_true(oauth2_refresh_due(iss, exp, T0 + 4 * MIN + 1));
    /* no token, or unknown issue time */
    assert_true(oauth2_refresh_due(0, 0, T0));
    assert_false(oauth2_refresh_due(0, T0 + 6 * MIN, T0));
    assert_true(oauth2_refresh_due(0, T0 + 4 * MIN, T0));
}

static void keepalive_timing(void **state)
{
    (void)state;
    static struct store_oauth2 row;
    memset(&row, 0, sizeof row);
    row.refresh_len = 10;
    row.authorized_at = T0;
    int64_t day = 24 * 60 * MIN;
    assert_false(oauth2_keepalive_due(&row, T0 + 29 * day));
    assert_true(oauth2_keepalive_due(&row, T0 + 30 * day));
    row.refresh_used_at = T0 + 20 * day; /* used since: counts from then */
    assert_false(oauth2_keepalive_due(&row, T0 + 30 * day));
    assert_true(oauth2_keepalive_due(&row, T0 + 50 * day));
    row.status = STORE_OAUTH2_INVALID; /* nothing to keep alive */
    assert_false(oauth2_keepalive_due(&row, T0 + 365 * day));
    row.status = STORE_OAUTH2_OK;
    row.refresh_len = 0; /* client credentials */
    assert_false(oauth2_keepalive_due(&row, T0 + 365 * day));
    assert_false(oauth2_keepalive_due(NULL, T0));
}

static void backoff(void **state)
{
    (void)state;
    assert_int_equal(oauth2_backoff_ms(1, -1), 30000);
    assert_int_equal(oauth2_backoff_ms(2, -1), 60000);
    assert_int_equal(oauth2_backoff_ms(3, -1), 120000);
    assert_int_equal(oauth2_backoff_ms(8, -1), 3600000);
    assert_int_equal(oauth2_backoff_ms(1000, -1), 3600000);
    assert_int_equal(oauth2_backoff_ms(1, 120), 120000);   /* Retry-After is longer: it wins */
    assert_int_equal(oauth2_backoff_ms(3, 5), 120000);     /* shorter: ours */
    assert_int_equal(oauth2_backoff_ms(1, 999999), 86400000); /* capped at a day */
}

/* ---- on a real store ---------------------------------------------------------- */

#define KEY_HEX "4f3c2a1b0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"
#define OTHER_HEX "0000000000000000000000000000000000000000000000000000000000000001"

struct fx {
    char dir[TMPDIR_MAX];
    struct store *st;
    unsigned char key[SECRETBOX_KEY_LEN], other[SECRETBOX_KEY_LEN];
    struct config_account a;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    struct err e;
    if (!fx)
        return -1;
    if (tmpstore_open(fx->dir, sizeof fx->dir, "oauth2", &fx->st) < 0)
        return -1;
    if (secretbox_key_parse(KEY_HEX, 64, fx->key, &e) < 0 ||
        secretbox_key_parse(OTHER_HEX, 64, fx->other, &e) < 0)
        return -1;
    fx->a.name = "acct";
    fx->a.oauth2.present = true;
    fx->a.oauth2.provider = CONFIG_OAUTH2_CUSTOM;
    fx->a.oauth2.flow = CONFIG_FLOW_DEVICE_CODE;
    fx->a.oauth2.client_id = "cid";
    fx->a.oauth2.token_url = "https://127.0.0.1:1/token"; /* nothing listens */
    fx->a.oauth2.device_authorization_url = "https://127.0.0.1:1/device";
    fx->a.oauth2.secrets_key = fx->key;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    tmpstore_close(fx->dir, fx->st);
    free(fx);
    return 0;
}

static struct oauth2_token *token(const char *access, const char *refresh, int64_t life_s)
{
    static struct oauth2_token t;
    memset(&t, 0, sizeof t);
    snprintf(t.access_token, sizeof t.access_token, "%s", access);
    snprintf(t.refresh_token, sizeof t.refresh_token, "%s", refresh ? refresh : "");
    t.expires_in_s = life_s;
    return &t;
}

static char buf[OAUTH2_TOKEN_BUF];

static void stored_sealed_and_served(void **state)
{
    struct fx *fx = *state;
    struct err e;
    err_clear(&e);
    /* never authorized: says so, sends nothing */
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), -1);
    assert_int_equal(e.kind, ERR_AUTH);
    assert_int_equal(e.code, ERR_CODE_NO_GRANT);
    assert_non_null(strstr(e.msg, "not authorized yet"));
    static struct oauth2_status s;
    assert_int_equal(oauth2_status(fx->st, &fx->a, &s, &e), 0);
    assert_int_equal(s.state, OAUTH2_STATE_NONE);

    int64_t now = wall();
    assert_int_equal(oauth2_save_grant(fx->st, &fx->a, token("access-ONE", "refresh-ONE", 3600),
                                       now, &e),
                     0);
    /* sealed in the store: no token in clear */
    static struct store_oauth2 row;
    assert_int_equal(store_oauth2_get(fx->st, "acct", &row, &e), 0);
    assert_null(memmem(row.access, row.access_len, "access-ONE", 10));
    assert_null(memmem(row.refresh, row.refresh_len, "refresh-ONE", 11));
    assert_int_equal(row.access_len, 10 + SECRETBOX_OVERHEAD);
    assert_string_equal(row.flow, "device_code");
    assert_true(row.access_expires_at >= now + 3600000 && row.access_expires_at <= now + 3601000);
    /* valid for an hour: served from the store, no request */
    memset(buf, 0, sizeof buf);
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "access-ONE");
    assert_int_equal(oauth2_status(fx->st, &fx->a, &s, &e), 0);
    assert_int_equal(s.state, OAUTH2_STATE_AUTHORIZED);
    assert_true(s.has_refresh_token);
    assert_int_equal(s.refresh_used_at, 0);
    /* a rejected token that is no longer the stored one: the stored one, no request */
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, "some-older-token", buf, sizeof buf, &e),
                     0);
    assert_string_equal(buf, "access-ONE");
    /* a small buffer is refused */
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, 100, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

static void wrong_key_is_one_clear_error(void **state)
{
    struct fx *fx = *state;
    struct err e;
    assert_int_equal(oauth2_save_grant(fx->st, &fx->a, token("access-K", "refresh-K", 3600), wall(),
                                       &e),
                     0);
    struct config_account other = fx->a;
    other.oauth2.secrets_key = fx->other;
    err_clear(&e);
    assert_int_equal(oauth2_access_token(fx->st, &other, NULL, buf, sizeof buf, &e), -1);
    assert_int_equal(e.kind, ERR_AUTH);
    assert_int_equal(e.code, ERR_CODE_NO_GRANT); /* the daemon looks again each interval */
    char id1[9], id2[9];
    secretbox_key_id(fx->key, id1);
    secretbox_key_id(fx->other, id2);
    assert_non_null(strstr(e.msg, "account acct: its OAuth2 tokens were sealed under another "
                                  "secrets key"));
    assert_non_null(strstr(e.msg, id1));
    assert_non_null(strstr(e.msg, id2));
    assert_non_null(strstr(e.msg, "oauth2 login"));
    assert_null(strstr(e.msg, "access-K"));
    static struct oauth2_status s;
    assert_int_equal(oauth2_status(fx->st, &other, &s, &e), 0);
    assert_int_equal(s.state, OAUTH2_STATE_WRONG_KEY);
    /* nothing was changed: the right key still works */
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "access-K");
}

static void invalid_grant_sends_nothing(void **state)
{
    struct fx *fx = *state;
    struct err e;
    static struct store_oauth2 row;
    assert_int_equal(oauth2_save_grant(fx->st, &fx->a, token("a", "r", 3600), wall(), &e), 0);
    assert_int_equal(store_oauth2_get(fx->st, "acct", &row, &e), 0);
    assert_int_equal(store_oauth2_failed(fx->st, "acct", row.version, true, OAUTH2_REAUTHORIZE, 0, &e),
                     0);
    for (int i = 0; i < 3; i++) {
        err_clear(&e);
        assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), -1);
        assert_int_equal(e.kind, ERR_AUTH);
        assert_int_equal(e.code, ERR_CODE_NO_GRANT);
        assert_string_equal(e.msg, "account acct: " OAUTH2_REAUTHORIZE);
    }
    assert_int_equal(store_oauth2_get(fx->st, "acct", &row, &e), 0);
    assert_int_equal(row.failures, 1); /* no attempt was recorded since */
    static struct oauth2_status s;
    assert_int_equal(oauth2_status(fx->st, &fx->a, &s, &e), 0);
    assert_int_equal(s.state, OAUTH2_STATE_INVALID);
    assert_string_equal(s.error, OAUTH2_REAUTHORIZE);
    /* a new grant (oauth2 login) makes it usable again */
    assert_int_equal(oauth2_save_grant(fx->st, &fx->a, token("a2", "r2", 3600), wall(), &e), 0);
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "a2");
}

/* A refresh that cannot reach the token endpoint: the current token is
 * used while it lasts, the failure is shared through the row with a
 * backoff, and no second request is made during it. */
static void unreachable_endpoint(void **state)
{
    struct fx *fx = *state;
    struct err e;
    static struct store_oauth2 row;
    /* 4 minutes left of an hour: due, still usable */
    int64_t now = wall();
    assert_int_equal(oauth2_save_grant(fx->st, &fx->a, token("old", "r", 3600), now - 56 * MIN, &e),
                     0);
    err_clear(&e);
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "old");
    assert_int_equal(e.kind, ERR_NONE);
    assert_int_equal(store_oauth2_get(fx->st, "acct", &row, &e), 0);
    assert_int_equal(row.failures, 1);
    assert_true(row.retry_at >= now + 29000 && row.retry_at <= wall() + 31000);
    assert_non_null(strstr(row.error, "Connection"));
    assert_string_equal(row.lease_owner, "");
    int64_t v = row.version;
    /* within the backoff: no new attempt */
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), 0);
    assert_int_equal(store_oauth2_get(fx->st, "acct", &row, &e), 0);
    assert_int_equal(row.version, v);
    assert_int_equal(row.failures, 1);
    /* the server refused the token: no usable one is left, the backoff holds */
    err_clear(&e);
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, "old", buf, sizeof buf, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_non_null(strstr(e.msg, "next attempt in"));
    /* expired and unreachable, after the backoff: an error, failures 2 */
    assert_int_equal(oauth2_save_grant(fx->st, &fx->a, token("gone", "r", 3600), now - 61 * MIN, &e),
                     0);
    err_clear(&e);
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_null(strstr(e.msg, "gone"));
    assert_int_equal(store_oauth2_get(fx->st, "acct", &row, &e), 0);
    assert_int_equal(row.failures, 1); /* the new grant reset the count */
}

/* Another owner is refreshing: a usable token is used without waiting. */
static void busy_lease_uses_current_token(void **state)
{
    struct fx *fx = *state;
    struct err e;
    static struct store_oauth2 row;
    int64_t now = wall();
    assert_int_equal(oauth2_save_grant(fx->st, &fx->a, token("cur", "r", 3600), now - 57 * MIN, &e),
                     0);
    assert_int_equal(store_oauth2_lease(fx->st, "acct", "elsewhere:1:1", now, 60000, false, NULL,
                                        &row, &e),
                     0);
    assert_int_equal(oauth2_access_token(fx->st, &fx->a, NULL, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "cur");
    assert_int_equal(store_oauth2_get(fx->st, "acct", &row, &e), 0);
    assert_string_equal(row.lease_owner, "elsewhere:1:1"); /* left alone */
    assert_int_equal(row.failures, 0);
}

/* Another owner is refreshing and the current token is at its end: a
 * caller with a deadline waits only until then (ERR_TIMEOUT, code
 * ERR_CODE_REFRESH_WAIT), sends nothing and leaves the lease alone; without
 * a deadline it is the lease's business (not waited for here). */
static void busy_lease_wait_bounded_by_deadline(void **state)
{
    struct fx *fx = *state;
    struct err e;
    static struct store_oauth2 row;
    int64_t now = wall();
    /* issued an hour ago, 5 s left: neither usable nor left to the holder for long */
    assert_int_equal(oauth2_save_grant(fx->st, &fx->a, token("end", "r", 3600), now - 3595000, &e),
                     0);
    assert_int_equal(store_oauth2_lease(fx->st, "acct", "elsewhere:1:1", now, 60000, false, NULL,
                                        &row, &e),
                     0);
    int64_t t0 = clock_mono_ms();
    err_clear(&e);
    assert_int_equal(oauth2_access_token_until(fx->st, &fx->a, NULL, buf, sizeof buf, t0 + 500, &e),
                     -1);
    int64_t took = clock_mono_ms() - t0;
    assert_true(took >= 500 && took < 2000);
    assert_int_equal(e.kind, ERR_TIMEOUT);
    assert_int_equal(e.code, ERR_CODE_REFRESH_WAIT);
    assert_non_null(strstr(e.msg, "another refresh"));
    assert_null(strstr(e.msg, "end"));
    assert_int_equal(store_oauth2_get(fx->st, "acct", &row, &e), 0);
    assert_string_equal(row.lease_owner, "elsewhere:1:1");
    assert_int_equal(row.failures, 0);
    /* a deadline already past: at once */
    t0 = clock_mono_ms();
    assert_int_equal(oauth2_access_token_until(fx->st, &fx->a, NULL, buf, sizeof buf, t0 - 1, &e),
                     -1);
    assert_int_equal(e.code, ERR_CODE_REFRESH_WAIT);
    assert_true(clock_mono_ms() - t0 < 500);
}

static void not_managed(void **state)
{
    struct fx *fx = *state;
    struct err e;
    struct config_account a = fx->a;
    a.oauth2.provider = CONFIG_OAUTH2_STATIC;
    assert_false(oauth2_managed(&a));
    assert_true(oauth2_managed(&fx->a));
    assert_int_equal(oauth2_access_token(fx->st, &a, NULL, buf, sizeof buf, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    a = fx->a;
    a.oauth2.secrets_key = NULL;
    assert_int_equal(oauth2_access_token(fx->st, &a, NULL, buf, sizeof buf, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_string_equal(oauth2_state_name(OAUTH2_STATE_WRONG_KEY), "wrong_key");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refresh_timing),
        cmocka_unit_test(keepalive_timing),
        cmocka_unit_test(backoff),
        T(stored_sealed_and_served),
        T(wrong_key_is_one_clear_error),
        T(invalid_grant_sends_nothing),
        T(unreachable_endpoint),
        T(busy_lease_uses_current_token),
        T(busy_lease_wait_bounded_by_deadline),
        T(not_managed),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return r;
}
