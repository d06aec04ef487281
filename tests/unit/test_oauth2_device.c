/* Unit tests: device-code authorizations polled in the background
 * (include/oauth2_device.h).  The authorization server is
 * https://127.0.0.1:1/ (nothing listens), so every start fails at its first
 * request; what a start that succeeds does (pending, polling, authorized,
 * denied, one per account) is tested against a real authorization server by
 * tests/integration/test_oauth2.py (test_api_device_flow_*) and the
 * dashboard's browser test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oauth2.h"
#include "oauth2_device.h"
#include "secretbox.h"

#define KEY_HEX "4f3c2a1b0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"

static int authorized_calls;
static void on_authorized(void *ctx, const char *account)
{
    (void)ctx;
    (void)account;
    authorized_calls++;
}

static void state_names(void **state)
{
    (void)state;
    assert_string_equal(oauth2_device_state_name(OAUTH2_DEVICE_STARTING), "starting");
    assert_string_equal(oauth2_device_state_name(OAUTH2_DEVICE_PENDING), "pending");
    assert_string_equal(oauth2_device_state_name(OAUTH2_DEVICE_AUTHORIZED), "authorized");
    assert_string_equal(oauth2_device_state_name(OAUTH2_DEVICE_DENIED), "denied");
    assert_string_equal(oauth2_device_state_name(OAUTH2_DEVICE_EXPIRED), "expired");
    assert_string_equal(oauth2_device_state_name(OAUTH2_DEVICE_ERROR), "error");
}

static void starts_and_failures(void **state)
{
    (void)state;
    char dir[] = "/tmp/oauth2-device-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct err e;
    unsigned char key[SECRETBOX_KEY_LEN];
    assert_int_equal(secretbox_key_parse(KEY_HEX, 64, key, &e), 0);
    struct config_account a = {0};
    a.name = "acct";
    a.oauth2.present = true;
    a.oauth2.provider = CONFIG_OAUTH2_CUSTOM;
    a.oauth2.flow = CONFIG_FLOW_DEVICE_CODE;
    a.oauth2.client_id = "cid";
    a.oauth2.token_url = "https://127.0.0.1:1/token";
    a.oauth2.device_authorization_url = "https://127.0.0.1:1/device";
    a.oauth2.secrets_key = key;
    struct oauth2_devices *d = oauth2_devices_new(dir, on_authorized, NULL, &e);
    assert_non_null(d);
    static struct oauth2_device_info info;
    assert_int_equal(oauth2_devices_get(d, "acct", &info), -1);

    /* only device-code provider accounts with a key */
    struct config_account b = a;
    b.oauth2.flow = CONFIG_FLOW_CLIENT_CREDENTIALS;
    assert_int_equal(oauth2_devices_start(d, NULL, &b, &info, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    b = a;
    b.oauth2.provider = CONFIG_OAUTH2_STATIC;
    assert_int_equal(oauth2_devices_start(d, NULL, &b, &info, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    b = a;
    b.oauth2.secrets_key = NULL;
    assert_int_equal(oauth2_devices_start(d, NULL, &b, &info, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(oauth2_devices_get(d, "acct", &info), -1); /* nothing remembered */

    /* the server cannot be reached: error, remembered, and the next start may try again */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(oauth2_devices_start(d, NULL, &a, &info, &e), -1);
        assert_int_equal(e.kind, ERR_CONN);
        assert_int_equal(info.state, OAUTH2_DEVICE_ERROR);
        assert_non_null(strstr(info.error, "device authorization endpoint"));
        assert_true(info.ended_at > 0);
        memset(&info, 0, sizeof info);
        assert_int_equal(oauth2_devices_get(d, "acct", &info), 0);
        assert_string_equal(info.account, "acct");
        assert_int_equal(info.state, OAUTH2_DEVICE_ERROR);
        assert_string_equal(info.user_code, "");
    }
    /* many accounts: each remembered, at most OAUTH2_DEVICE_MAX of them */
    char names[OAUTH2_DEVICE_MAX + 4][16];
    for (int i = 0; i < OAUTH2_DEVICE_MAX + 4; i++) {
        snprintf(names[i], sizeof names[i], "n%d", i);
        b = a;
        b.name = names[i];
        assert_int_equal(oauth2_devices_start(d, NULL, &b, &info, &e), -1);
    }
    int known = 0;
    for (int i = 0; i < OAUTH2_DEVICE_MAX + 4; i++)
        known += oauth2_devices_get(d, names[i], &info) == 0;
    assert_int_equal(known, OAUTH2_DEVICE_MAX);
    assert_int_equal(oauth2_devices_get(d, names[OAUTH2_DEVICE_MAX + 3], &info), 0); /* newest kept */
    assert_int_equal(authorized_calls, 0);
    oauth2_devices_free(&d);
    assert_null(d);
    oauth2_devices_free(&d); /* NULL-safe */
    char cmd[80];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(state_names),
        cmocka_unit_test(starts_and_failures),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return r;
}
