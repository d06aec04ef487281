/* Unit tests: the accounts endpoints (bridge/api_accounts.c) over real HTTP,
 * with a runtime of the test's own (tests/unit/api_fixture.h): live states
 * as the runtime reports them, and POST .../poll that never bypasses a
 * backoff (429 with Retry-After, nothing queued). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api_fixture.h"
#include "pollhist.h"

static struct fixture F;

static void listing_and_states(void **state)
{
    (void)state;
    struct fix_resp r;
    fix_req(&F, "GET", "/api/v1/accounts", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "{\"accounts\":[{\"name\":\"a\",\"state\":\"idle\""));
    assert_non_null(strstr(r.body, "{\"name\":\"b\",\"state\":\"auth_error\""));
    assert_non_null(strstr(r.body, "\"last_error\":\"Authentication: refused\""));
    assert_non_null(strstr(r.body, "\"last_attempt_at\":\"2023-11-14T22:13:20.000Z\""));
    /* c is configured but the runtime does not know it (yet): idle, never polled */
    assert_non_null(strstr(r.body, "{\"name\":\"c\",\"state\":\"idle\",\"last_attempt_at\":null"));
    assert_non_null(strstr(r.body, "\"stored\":0,\"pending_deliveries\":0"));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/b", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"name\":\"b\",\"state\":\"auth_error\""));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/nope", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "no account named \\\"nope\\\""));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts", NULL, &r);
    assert_int_equal(r.status, 401);
    fix_resp_free(&r);
}

static void poll_now(void **state)
{
    (void)state;
    struct fix_resp r;
    fix_req(&F, "POST", "/api/v1/accounts/a/poll", FIX_AUTH, &r);
    assert_int_equal(r.status, 202);
    assert_string_equal(r.body, "{\"account\":\"a\",\"poll_requested\":true}");
    fix_resp_free(&r);
    assert_int_equal(fix_find(&F, "a")->polls, 1);

    fix_req(&F, "POST", "/api/v1/accounts/b/poll", FIX_AUTH, &r);
    assert_int_equal(r.status, 429);
    assert_true(fix_has(&r, "Retry-After: 900"));
    assert_non_null(strstr(r.body, "\"type\":\"urn:pop3bridge:problem:backoff\""));
    assert_non_null(strstr(r.body, "allowed again in 900 s"));
    fix_resp_free(&r);
    assert_int_equal(fix_find(&F, "b")->polls, 0); /* nothing was queued */

    fix_req(&F, "POST", "/api/v1/accounts/c/poll", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    fix_resp_free(&r);
    fix_req(&F, "POST", "/api/v1/accounts/nope/poll", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/a/poll", FIX_AUTH, &r);
    assert_int_equal(r.status, 405);
    assert_true(fix_has(&r, "Allow: POST"));
    fix_resp_free(&r);
}

/* GET .../{account} shows the last session and the polls the poller
 * recorded (pollhist.h); before any, null and []. */
static void session_and_polls(void **state)
{
    (void)state;
    struct fix_resp r;
    fix_req(&F, "GET", "/api/v1/accounts/c", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"last_session\":null,\"polls\":[]"));
    fix_resp_free(&r);
    struct net_tls_info ti = {.version = "TLSv1.3", .verified = true, .verify = "chain",
                              .peer = "CN=localhost", .issuer = "CN=Test CA",
                              .not_after = 1900000000000};
    const char *capa[] = {"TOP", "UIDL", "SASL PLAIN"};
    pollhist_session(pollhist_default(), "c", 1700000000000, capa, 3, &ti);
    struct pollhist_poll p = {.at = 1700000000000, .duration_ms = 42, .listed = 5,
                              .new_messages = 2, .ok = true};
    pollhist_poll(pollhist_default(), "c", &p);
    p.ok = false;
    p.at += 60000;
    snprintf(p.error, sizeof p.error, "Connection: refused");
    pollhist_poll(pollhist_default(), "c", &p);
    fix_req(&F, "GET", "/api/v1/accounts/c", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"capabilities\":[\"TOP\",\"UIDL\",\"SASL PLAIN\"]"));
    assert_non_null(strstr(r.body, "\"version\":\"TLSv1.3\""));
    assert_non_null(strstr(r.body, "\"subject\":\"CN=localhost\",\"issuer\":\"CN=Test CA\""));
    assert_non_null(strstr(r.body, "\"not_after\":\"2030-03-17T17:46:40.000Z\""));
    /* newest first */
    assert_non_null(strstr(r.body, "\"polls\":[{\"at\":\"2023-11-14T22:14:20.000Z\","
                                   "\"duration_ms\":42,\"listed\":5,\"new_messages\":2,"
                                   "\"deleted\":0,\"outcome\":\"failed\","
                                   "\"error\":\"Connection: refused\"},"));
    assert_non_null(strstr(r.body, "\"outcome\":\"ok\",\"error\":null}]"));
    fix_resp_free(&r);
}

static int setup(void **state)
{
    (void)state;
    F.acc[0] = (struct fix_account){.name = "a", .state = ACCOUNT_IDLE};
    F.acc[1] = (struct fix_account){.name = "b", .state = ACCOUNT_AUTH_ERROR, .backoff_s = 900};
    F.nacc = 2;
    return fix_start(&F, "",
                     "{\"name\": \"a\", \"host\": \"127.0.0.1\", \"username\": \"u\", "
                     "\"password_env\": \"FIX_PW\"},"
                     "{\"name\": \"b\", \"host\": \"127.0.0.1\", \"username\": \"u\", "
                     "\"password_env\": \"FIX_PW\"},"
                     "{\"name\": \"c\", \"host\": \"127.0.0.1\", \"username\": \"u\", "
                     "\"password_env\": \"FIX_PW\"}");
}

static int teardown(void **state)
{
    (void)state;
    fix_stop(&F);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(listing_and_states),
        cmocka_unit_test(poll_now),
        cmocka_unit_test(session_and_polls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
