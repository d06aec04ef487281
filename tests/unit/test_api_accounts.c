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
    fix_expect(&F, "GET", "/api/v1/accounts", 200,
               "{\"accounts\":[{\"name\":\"a\",\"state\":\"idle\"",
               "{\"name\":\"b\",\"state\":\"auth_error\"",
               "\"last_error\":\"Authentication: refused\"",
               "\"last_attempt_at\":\"2023-11-14T22:13:20.000Z\"",
               /* c is configured but the runtime does not know it (yet): idle, never polled */
               "{\"name\":\"c\",\"state\":\"idle\",\"last_attempt_at\":null",
               "\"stored\":0,\"pending_deliveries\":0", NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/b", 200, "\"name\":\"b\",\"state\":\"auth_error\"",
               NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/nope", 404, "no account named \\\"nope\\\"", NULL);
    struct fix_resp r;
    fix_req(&F, "GET", "/api/v1/accounts", NULL, &r); /* no token */
    assert_int_equal(r.status, 401);
    fix_resp_free(&r);
}

static void poll_now(void **state)
{
    (void)state;
    fix_expect(&F, "POST", "/api/v1/accounts/a/poll", 202,
               "{\"account\":\"a\",\"poll_requested\":true}", NULL);
    assert_int_equal(fix_find(&F, "a")->polls, 1);

    struct fix_resp r;
    assert_int_equal(fix_call(&F, "POST", NULL, &r, "/api/v1/accounts/b/poll"), 429);
    assert_true(fix_has(&r, "Retry-After: 900"));
    assert_non_null(strstr(r.body, "\"type\":\"urn:pop3bridge:problem:backoff\""));
    assert_non_null(strstr(r.body, "allowed again in 900 s"));
    fix_resp_free(&r);
    assert_int_equal(fix_find(&F, "b")->polls, 0); /* nothing was queued */

    fix_expect(&F, "POST", "/api/v1/accounts/c/poll", 404, NULL);
    fix_expect(&F, "POST", "/api/v1/accounts/nope/poll", 404, NULL);
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/accounts/a/poll"), 405);
    assert_true(fix_has(&r, "Allow: POST"));
    fix_resp_free(&r);
}

/* GET .../{account} shows the last session and the polls the poller
 * recorded (pollhist.h); before any, null and []. */
static void session_and_polls(void **state)
{
    (void)state;
    fix_expect(&F, "GET", "/api/v1/accounts/c", 200, "\"last_session\":null,\"polls\":[]", NULL);
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
    /* newest first */
    fix_expect(&F, "GET", "/api/v1/accounts/c", 200,
               "\"capabilities\":[\"TOP\",\"UIDL\",\"SASL PLAIN\"]", "\"version\":\"TLSv1.3\"",
               "\"subject\":\"CN=localhost\",\"issuer\":\"CN=Test CA\"",
               "\"not_after\":\"2030-03-17T17:46:40.000Z\"",
               "\"polls\":[{\"at\":\"2023-11-14T22:14:20.000Z\","
               "\"duration_ms\":42,\"listed\":5,\"new_messages\":2,"
               "\"deleted\":0,\"outcome\":\"failed\","
               "\"error\":\"Connection: refused\"},",
               "\"outcome\":\"ok\",\"error\":null}]", NULL);
}

static int setup(void **state)
{
    *state = &F;
    F.acc[0] = (struct fix_account){.name = "a", .state = ACCOUNT_IDLE};
    F.acc[1] = (struct fix_account){.name = "b", .state = ACCOUNT_AUTH_ERROR, .backoff_s = 900};
    F.nacc = 2;
    return fix_start(&F, "", FIX_ACCOUNT("a", "") "," FIX_ACCOUNT("b", "") "," FIX_ACCOUNT("c", ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(listing_and_states),
        cmocka_unit_test(poll_now),
        cmocka_unit_test(session_and_polls),
    };
    return cmocka_run_group_tests(tests, setup, fix_teardown);
}
