/* Unit tests: the dashboard's figures (bridge/api_stats.c) over real HTTP
 * (tests/unit/api_fixture.h), from attempts recorded in the fixture's store:
 * per-webhook statistics and traffic by hour; the bounds of ?hours. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api_fixture.h"
#include "clock.h"

static struct fixture F;

/* One message for account a, delivered to "hook" by one attempt of http
 * status `status` taking `ms`, at `at`. */
static void delivered(struct store *st, const char *uidl, int64_t at, int status, int64_t ms)
{
    struct err e;
    struct store_msg *m = NULL;
    const char *wh[] = {"hook"};
    assert_int_equal(store_msg_begin(st, "a", uidl, &m, &e), 0);
    assert_int_equal(store_msg_write(m, "Subject: x\r\n\r\nx\r\n", 17, &e), 0);
    assert_int_equal(store_msg_finish(m, NULL, wh, 1, at, NULL, &e), 0);
    struct store_delivery d[4];
    size_t n = 0;
    assert_int_equal(store_delivery_lease_due(st, "t", "hook", at, 60000, d, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    struct store_attempt a = {.started_at = at, .duration_ms = ms, .http_status = status,
                              .error = status >= 300 ? "HTTP 500 from receiver" : NULL,
                              .outcome = status >= 300 ? "dead" : "delivered"};
    assert_int_equal(store_delivery_record(st, "t", d[0].id, &a,
                                           status >= 300 ? STORE_D_DEAD : STORE_D_DELIVERED, 0,
                                           &e),
                     0);
}

static void webhooks_and_hourly(void **state)
{
    (void)state;
    fix_expect(&F, "GET", "/api/v1/webhooks", 200,
               "\"name\":\"hook\",\"accounts\":[\"a\"],\"disabled\":false",
               "\"attempts_last_day\":0", "\"success_rate\":null,\"p50_ms\":null",
               "\"last_error\":null", NULL);

    struct err e;
    struct store *st = store_open(F.state, &e);
    assert_non_null(st);
    int64_t now = clock_wall_ms();
    delivered(st, "u1", now - 3 * STORE_HOUR_MS, 200, 40);
    delivered(st, "u2", now - 1000, 200, 20);
    delivered(st, "u3", now - 500, 500, 900);
    store_close(st);

    fix_expect(&F, "GET", "/api/v1/webhooks", 200,
               "\"attempts_last_hour\":2,\"attempts_last_day\":3,"
               "\"delivered_last_hour\":1,\"delivered_last_day\":2",
               "\"p50_ms\":40,\"p99_ms\":900",
               "\"http_status\":500,\"error\":\"HTTP 500 from receiver\"", NULL);

    struct fix_resp r;
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/stats/hourly?hours=%d", 5), 200);
    /* the last hour holds u2 and u3 (unless the hour turned in between) */
    const char *last = strrchr(r.body, '{');
    assert_non_null(last);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    cJSON *hours = cJSON_GetObjectItem(j, "hours");
    assert_int_equal(cJSON_GetArraySize(hours), 5);
    int received = 0, attempts = 0, ok = 0;
    for (int i = 0; i < 5; i++) {
        cJSON *h = cJSON_GetArrayItem(hours, i);
        received += cJSON_GetObjectItem(h, "received")->valueint;
        attempts += cJSON_GetObjectItem(h, "attempts")->valueint;
        ok += cJSON_GetObjectItem(h, "delivered")->valueint;
    }
    assert_int_equal(received, 3);
    assert_int_equal(attempts, 3);
    assert_int_equal(ok, 2);
    cJSON_Delete(j);
    fix_resp_free(&r);

    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/stats/hourly"), 200);
    j = cJSON_Parse(r.body);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "hours")), 48);
    cJSON_Delete(j);
    fix_resp_free(&r);
    fix_expect(&F, "GET", "/api/v1/stats/hourly?hours=0", 400, NULL);
    fix_expect(&F, "GET", "/api/v1/stats/hourly?hours=169", 400, NULL);
    fix_req(&F, "GET", "/api/v1/webhooks", NULL, &r);
    assert_int_equal(r.status, 401);
    fix_resp_free(&r);
}

static int setup(void **state)
{
    *state = &F;
    F.acc[0] = (struct fix_account){.name = "a", .state = ACCOUNT_IDLE};
    F.nacc = 1;
    return fix_start(&F, "", FIX_ACCOUNT("a", ", \"webhooks\": [\"hook\"]"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webhooks_and_hourly),
    };
    return cmocka_run_group_tests(tests, setup, fix_teardown);
}
