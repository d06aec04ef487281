/* Unit tests: the OAuth2 endpoints (bridge/api_oauth2.c) over real HTTP
 * (tests/unit/api_fixture.h): an account's oauth2 summary, which accounts
 * may start a device-code authorization (404, 409), and a start whose
 * authorization server cannot be reached (https://127.0.0.1:1: nothing
 * listens) — 502, then GET says error.  The whole flow against a real
 * authorization server is tests/integration/test_oauth2.py's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "api_fixture.h"

#define KEY_HEX "4f3c2a1b0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"
#define OAUTH2(flow)                                                                          \
    "\"oauth2\": {\"provider\": \"custom\", \"flow\": \"" flow "\", \"client_id\": \"cid\", " \
    "\"token_url\": \"https://127.0.0.1:1/token\", "                                          \
    "\"device_authorization_url\": \"https://127.0.0.1:1/device\", "                          \
    "\"authorization_url\": \"https://127.0.0.1:1/authorize\"}"

static struct fixture F;

static void account_summary(void **state)
{
    (void)state;
    fix_expect(&F, "GET", "/api/v1/accounts/pw", 200, "\"oauth2\":null", NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/dev", 200,
               "\"oauth2\":{\"provider\":\"custom\",\"flow\":\"device_code\","
               "\"authorization\":\"none\",\"access_expires_at\":null,\"error\":null}",
               NULL);
}

static void only_device_code_accounts(void **state)
{
    (void)state;
    fix_expect(&F, "POST", "/api/v1/accounts/nope/oauth2/device", 404, NULL);
    fix_expect(&F, "POST", "/api/v1/accounts/pw/oauth2/device", 409,
               "\"type\":\"urn:pop3bridge:problem:wrong-flow\"",
               "account pw does not use an OAuth2 provider", NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/code/oauth2/device", 409,
               "uses the OAuth2 flow authorization_code", NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/dev/oauth2/device", 404,
               "no device authorization was started for account dev", NULL);
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "DELETE", NULL, &r, "/api/v1/accounts/dev/oauth2/device"), 405);
    assert_true(fix_has(&r, "Allow: POST, GET, HEAD"));
    fix_resp_free(&r);
    fix_req(&F, "POST", "/api/v1/accounts/dev/oauth2/device", NULL, &r); /* no token */
    assert_int_equal(r.status, 401);
    fix_resp_free(&r);
}

static void unreachable_server(void **state)
{
    (void)state;
    struct fix_resp r;
    for (int i = 0; i < 2; i++) { /* a failed start does not block the next one */
        fix_expect(&F, "POST", "/api/v1/accounts/dev/oauth2/device", 502,
                   "\"detail\":\"device authorization: ", "device authorization endpoint", NULL);
        assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/accounts/dev/oauth2/device"), 200);
        assert_non_null(strstr(r.body, "{\"account\":\"dev\",\"state\":\"error\","
                                       "\"verification_uri\":null,"));
        assert_non_null(strstr(r.body, "\"expires_in\":0"));
        assert_null(strstr(r.body, "\"error\":null"));
        fix_resp_free(&r);
    }
    assert_int_equal(fix_find(&F, "dev")->polls, 0); /* nothing was authorized */
}

static int setup(void **state)
{
    *state = &F;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    setenv("FIX_KEY", KEY_HEX, 1);
    F.acc[0] = (struct fix_account){.name = "dev", .state = ACCOUNT_AUTH_ERROR};
    F.nacc = 1;
    return fix_start_top(&F, "",
                         FIX_ACCOUNT("pw", "") ","
                         "{\"name\": \"dev\", \"host\": \"127.0.0.1\", \"username\": \"u\", " OAUTH2(
                             "device_code") "},"
                         "{\"name\": \"code\", \"host\": \"127.0.0.1\", \"username\": \"u\", " OAUTH2(
                             "authorization_code") "}",
                         "\"secrets_key_env\": \"FIX_KEY\"");
}

static int teardown(void **state)
{
    fix_teardown(state);
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(account_summary),
        cmocka_unit_test(only_device_code_accounts),
        cmocka_unit_test(unreachable_server),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
