/* Unit tests: the clock module (include/clock.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static void clocks(void **state)
{
    (void)state;
    int64_t m0 = clock_mono_ms(), w0 = clock_wall_ms();
    usleep(30000);
    int64_t m1 = clock_mono_ms(), w1 = clock_wall_ms();
    assert_true(m1 - m0 >= 25 && m1 - m0 < 2000);
    assert_true(w0 > (int64_t)1600000000000); /* Unix ms, after 2020 */
    assert_true(w1 >= w0);
}

/* A timed wait on a monotonic condition variable ends at its deadline. */
static void rfc3339(void **state)
{
    (void)state;
    char b[CLOCK_RFC3339_SIZE];
    assert_string_equal(clock_rfc3339(0, 1, b, sizeof b), "1970-01-01T00:00:00.000Z");
    /* 2026-01-31T10:00:00Z is 1769853600 s */
    assert_string_equal(clock_rfc3339(1769853600123LL, 1, b, sizeof b), "2026-01-31T10:00:00.123Z");
    assert_string_equal(clock_rfc3339(1769853600999LL, 0, b, sizeof b), "2026-01-31T10:00:00Z");
    /* a leap day, and the last millisecond of a year */
    assert_string_equal(clock_rfc3339(951782400000LL, 0, b, sizeof b), "2000-02-29T00:00:00Z");
    assert_string_equal(clock_rfc3339(946684799999LL, 1, b, sizeof b), "1999-12-31T23:59:59.999Z");
    /* before 1970 the millisecond part still counts up from the second */
    assert_string_equal(clock_rfc3339(-1, 1, b, sizeof b), "1969-12-31T23:59:59.999Z");
    /* a short buffer gets a cut, terminated string */
    char s[11];
    assert_string_equal(clock_rfc3339(0, 1, s, sizeof s), "1970-01-01");
}

static void micros(void **state)
{
    (void)state;
    int64_t us = clock_mono_us(), ms = clock_mono_ms();
    assert_true(us > 0);
    /* the same clock in two units: within a second of each other */
    assert_true(us / 1000 - ms < 1000 && ms - us / 1000 < 1000);
}

static void timed_wait(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    assert_int_equal(clock_cond_init(&cv), 0);
    struct timespec ts;
    int64_t t0 = clock_mono_ms();
    clock_deadline(&ts, 120);
    pthread_mutex_lock(&mu);
    int rc = 0;
    while (rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&cv, &mu, &ts);
    pthread_mutex_unlock(&mu);
    int64_t took = clock_mono_ms() - t0;
    assert_true(took >= 110 && took < 2000);
    clock_deadline(&ts, -5); /* negative: now */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    assert_true(ts.tv_sec <= now.tv_sec);
    pthread_cond_destroy(&cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clocks),
        cmocka_unit_test(rfc3339),
        cmocka_unit_test(micros),
        cmocka_unit_test(timed_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
