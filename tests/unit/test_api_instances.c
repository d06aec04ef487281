/* Unit tests: GET /api/v1/instances (bridge/api_instances.c) over real HTTP
 * (tests/unit/api_fixture.h), on an SQLite store holding heartbeats and
 * account leases: live instances only, each with the accounts it holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api_fixture.h"
#include "clock.h"
#include "store.h"

static struct fixture F;

static void live_instances_and_their_accounts(void **state)
{
    (void)state;
    struct err e;
    struct store *st = store_open(F.state, &e);
    assert_non_null(st);
    int64_t now = clock_wall_ms();
    struct store_instance a = {.id = "host-a:1", .host = "host-a",
                               .public_url = "http://127.0.0.1:1", .started_at = now - 5000,
                               .heartbeat_at = now};
    struct store_instance b = {.id = "host-b:2", .host = "host-b", .started_at = now - 4000,
                               .heartbeat_at = now};
    struct store_instance gone = {.id = "host-c:3", .host = "host-c",
                                  .started_at = now - 900000, .heartbeat_at = now - 600000};
    assert_int_equal(store_instance_beat(st, &a, &e), 0);
    assert_int_equal(store_instance_beat(st, &b, &e), 0);
    assert_int_equal(store_instance_beat(st, &gone, &e), 0);
    assert_int_equal(store_account_lease(st, "x", "host-a:1", now, 60000, &e), 0);
    assert_int_equal(store_account_lease(st, "y", "host-a:1", now, 60000, &e), 0);
    store_close(st);

    fix_expect(&F, "GET", "/api/v1/instances", 200,
               "{\"instances\":[{\"id\":\"host-a:1\",\"host\":\"host-a\","
               "\"public_url\":\"http://127.0.0.1:1\"",
               "\"accounts\":[\"x\",\"y\"]}",
               "{\"id\":\"host-b:2\",\"host\":\"host-b\",\"public_url\":null",
               "\"store\":\"sqlite\"", NULL);
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/instances"), 200);
    assert_null(strstr(r.body, "host-c")); /* silent for longer than store.lease */
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/instances", NULL, &r); /* no token */
    assert_int_equal(r.status, 401);
    fix_resp_free(&r);
    fix_expect(&F, "POST", "/api/v1/instances", 405, NULL);
}

static int setup(void **state)
{
    *state = &F;
    return fix_start(&F, "", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(live_instances_and_their_accounts, setup, fix_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
