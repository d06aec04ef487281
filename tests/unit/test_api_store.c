/* Unit tests: the stored-message and delivery endpoints (bridge/api_store.c)
 * over real HTTP (api_fixture.h), on a real store the test fills itself: a
 * message as JSON, its raw bytes streamed, an attachment too large to be
 * inlined served by URL, the delivery list with its filters and paging
 * checks, one delivery with its attempts, retry (409 for a pending one),
 * and the 400/404 answers.  The same over a running bridge is in
 * tests/integration/test_api.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api_fixture.h"
#include "clock.h"
#include "store.h"

static struct fixture F;
static int64_t msg_id;
static char mid[STORE_ID_MAX];

static const char RAW[] =
    "From: Sender <s@example.com>\r\nTo: r@example.com\r\nSubject: stored one\r\n"
    "Message-ID: <stored@example.com>\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
    "--XX\r\nContent-Type: text/plain\r\n\r\nsee the file\r\n"
    "--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename=\"r\xc3\xa9sum\xc3\xa9 1.bin\"\r\n\r\n"
    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\r\n--XX--\r\n";

static void message_json_raw_attachment(void **state)
{
    (void)state;
    char path[FIX_TARGET_MAX];
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/messages/%s", mid), 200);
    assert_non_null(strstr(r.body, "\"subject\":\"stored one\""));
    assert_non_null(strstr(r.body, "\"uidl\":\"u-1\""));
    /* 32 bytes > the webhook's inline limit of 16: a URL under public_url */
    const char *url = strstr(r.body, "\"url\":\"http://127.0.0.1:");
    assert_non_null(url);
    char att[128];
    assert_int_equal(sscanf(strstr(url, "/api/v1/"), "%127[^\"]", att), 1);
    fix_resp_free(&r);

    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/messages/%s/raw", mid), 200);
    assert_true(fix_has(&r, "Content-Type: message/rfc822"));
    assert_true(fix_has(&r, "Content-Security-Policy: sandbox"));
    assert_int_equal(r.len, sizeof RAW - 1);
    assert_memory_equal(r.body, RAW, sizeof RAW - 1);
    fix_resp_free(&r);

    assert_int_equal(fix_call(&F, "GET", NULL, &r, "%s", att), 200);
    assert_string_equal(r.body, "0123456789abcdef0123456789abcdef");
    assert_true(fix_has(&r, "Content-Type: application/octet-stream"));
    assert_true(fix_has(&r, "Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%201.bin"));
    fix_resp_free(&r);

    static const char *const missing[] = {
        "/api/v1/messages/m_999999", "/api/v1/messages/x", "/api/v1/messages/m_0",
        "/api/v1/messages/m_999999/raw",
    };
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++)
        fix_expect(&F, "GET", missing[i], 404, NULL);
    static const char *const bad_att[] = {"77", "1..2", ".1", "a"};
    for (size_t i = 0; i < sizeof bad_att / sizeof bad_att[0]; i++)
        fix_expect(&F, "GET", fix_path(path, "/api/v1/messages/%s/attachments/%s", mid, bad_att[i]),
                   404, NULL);
}

static void deliveries(void **state)
{
    (void)state;
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/deliveries"), 200);
    assert_non_null(strstr(r.body, "\"account\":\"a\",\"uidl\":\"u-1\",\"webhook\":\"hook\","
                                   "\"status\":\"pending\",\"attempt_count\":0"));
    assert_non_null(strstr(r.body, "\"next_cursor\":null"));
    char did[32];
    const char *p = strstr(r.body, "\"id\":\"d_");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "\"id\":\"%31[^\"]", did), 1);
    fix_resp_free(&r);
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/deliveries?status=dead&account=a&limit=1000"),
                     200);
    assert_string_equal(r.body, "{\"deliveries\":[],\"next_cursor\":null}");
    fix_resp_free(&r);
    char t[FIX_TARGET_MAX];
    static const char *const bad[] = {"status=nope", "limit=0", "limit=1001", "limit=01",
                                      "limit=x", "cursor=", "account=", "foo=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        fix_expect(&F, "GET", fix_path(t, "/api/v1/deliveries?%s", bad[i]), 400, NULL);
    fix_expect(&F, "GET", fix_path(t, "/api/v1/deliveries/%s", did), 200, "\"attempts\":[]", NULL);
    /* pending: nothing to retry */
    fix_expect(&F, "POST", fix_path(t, "/api/v1/deliveries/%s/retry", did), 409, "not-retryable",
               NULL);
    assert_int_equal(F.wakes, 0);
    fix_expect(&F, "GET", "/api/v1/deliveries/d_999999", 404, NULL);
    fix_expect(&F, "POST", "/api/v1/deliveries/nope/retry", 404, NULL);
}

static int setup(void **state)
{
    *state = &F;
    if (fix_start(&F, "", FIX_ACCOUNT("a", ", \"webhooks\": [\"hook\"]")) < 0)
        return -1;
    const char *const hooks[] = {"hook"};
    struct store_msg_meta meta = {.subject = "stored one", .from = "s@example.com"};
    msg_id = fix_stored(&F, "a", "u-1", RAW, sizeof RAW - 1, hooks, 1, &meta, clock_wall_ms());
    if (msg_id < 0)
        return -1;
    store_msg_id_format(msg_id, mid);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(message_json_raw_attachment),
        cmocka_unit_test(deliveries),
    };
    return cmocka_run_group_tests(tests, setup, fix_teardown);
}
