/* Unit tests: the runtime interface (include/runtime.h): each function calls
 * the daemon's operation, and a backoff always comes with a Retry-After of
 * at least one second.  The daemon's own table behind it is tested through
 * the API in tests/integration/test_api.py (POST .../poll). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "runtime.h"

struct fake {
    bool stopping;
    int wakes;
    int64_t backoff_s;
    struct cfgref *ref;
};

static bool f_stopping(void *ctx) { return ((struct fake *)ctx)->stopping; }
static struct cfgref *f_config(void *ctx) { return ((struct fake *)ctx)->ref; }
static void f_wake(void *ctx) { ((struct fake *)ctx)->wakes++; }

static int f_account(void *ctx, const char *name, struct runtime_account *out)
{
    (void)ctx;
    if (strcmp(name, "a") != 0)
        return -1;
    memset(out, 0, sizeof *out);
    out->state = ACCOUNT_AUTH_ERROR;
    snprintf(out->last_error, sizeof out->last_error, "refused");
    return 0;
}

static enum runtime_poll f_poll(void *ctx, const char *name, int64_t *retry_after_s)
{
    struct fake *f = ctx;
    if (strcmp(name, "a") != 0)
        return RUNTIME_POLL_UNKNOWN;
    if (f->backoff_s < 0)
        return RUNTIME_POLL_QUEUED;
    *retry_after_s = f->backoff_s;
    return RUNTIME_POLL_BACKOFF;
}

static const struct runtime_ops ops = {f_stopping, f_config, f_wake, f_account, f_poll};

static void interface(void **state)
{
    (void)state;
    struct fake f = {.backoff_s = -1, .ref = (struct cfgref *)&f};
    struct runtime rt = {&ops, &f};
    assert_false(runtime_stopping(&rt));
    f.stopping = true;
    assert_true(runtime_stopping(&rt));
    assert_ptr_equal(runtime_config(&rt), (struct cfgref *)&f);
    runtime_wake_delivery(&rt);
    runtime_wake_delivery(&rt);
    assert_int_equal(f.wakes, 2);
    struct runtime_account ra;
    assert_int_equal(runtime_account(&rt, "a", &ra), 0);
    assert_int_equal(ra.state, ACCOUNT_AUTH_ERROR);
    assert_string_equal(ra.last_error, "refused");
    assert_int_equal(runtime_account(&rt, "b", &ra), -1);
    int64_t ra_s = 99;
    assert_int_equal(runtime_poll_now(&rt, "a", &ra_s), RUNTIME_POLL_QUEUED);
    assert_int_equal(ra_s, 0);
    assert_int_equal(runtime_poll_now(&rt, "b", &ra_s), RUNTIME_POLL_UNKNOWN);
    f.backoff_s = 900;
    assert_int_equal(runtime_poll_now(&rt, "a", &ra_s), RUNTIME_POLL_BACKOFF);
    assert_int_equal(ra_s, 900);
    f.backoff_s = 0; /* less than a second left: still "wait a second" */
    assert_int_equal(runtime_poll_now(&rt, "a", &ra_s), RUNTIME_POLL_BACKOFF);
    assert_int_equal(ra_s, 1);
}

static void state_names(void **state)
{
    (void)state;
    enum account_state s;
    for (int i = 0; i < ACCOUNT_STATES; i++) {
        assert_int_equal(account_state_parse(account_state_name((enum account_state)i), &s), 0);
        assert_int_equal(s, i);
    }
    assert_string_equal(account_state_name(ACCOUNT_BACKOFF), "backoff");
    assert_string_equal(account_state_name((enum account_state)99), "unknown");
    assert_int_equal(account_state_parse("Backoff", &s), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(interface),
        cmocka_unit_test(state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
