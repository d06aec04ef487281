/* Unit tests: reference-counted configuration snapshots (include/cfgref.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>

#include "cfgref.h"
#include "log.h"
#include "perms.h"

#define DATA "tests/data/config/"
#define THREADS 4
#define ROUNDS 20000 /* gets and puts per thread */

static struct config *load(void)
{
    struct config_diag d = {0};
    struct config *cfg = config_load_layout(DATA "minimal.json", &d);
    config_diag_free(&d);
    assert_non_null(cfg);
    return cfg;
}

static void counting(void **state)
{
    (void)state;
    struct cfgref *slot = cfgref_new(load());
    assert_non_null(slot);
    assert_int_equal(slot->refs, 1);
    struct cfgref *a = cfgref_get(&slot);
    assert_ptr_equal(a, slot);
    assert_int_equal(slot->refs, 2);
    assert_ptr_equal(cfgref_hold(a), a);
    assert_int_equal(a->refs, 3);
    assert_null(cfgref_hold(NULL));
    cfgref_put(NULL);
    /* a reload: the slot moves on, the holder keeps its snapshot */
    struct cfgref *next = cfgref_new(load());
    cfgref_swap(&slot, next);
    assert_ptr_equal(slot, next);
    assert_int_equal(a->refs, 2);
    assert_non_null(a->cfg);
    assert_int_equal(a->cfg->account_count, next->cfg->account_count);
    cfgref_put(a);
    cfgref_put(a); /* the last one frees it (ASan checks) */
    struct cfgref *b = cfgref_get(&slot);
    assert_ptr_equal(b, next);
    cfgref_put(b);
    cfgref_swap(&slot, NULL);
    assert_null(slot);
    assert_null(cfgref_get(&slot));
}

static struct cfgref *shared;

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        struct cfgref *r = cfgref_get(&shared);
        if (!r || !r->cfg)
            return (void *)1;
        cfgref_put(r);
    }
    return NULL;
}

/* Gets and puts from several threads while the main thread swaps: every
 * snapshot stays valid while held, and the count comes back to one. */
static void concurrent(void **state)
{
    (void)state;
    struct config *spare[3] = {load(), load(), load()};
    shared = cfgref_new(load());
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, NULL), 0);
    for (int i = 0; i < 3; i++)
        cfgref_swap(&shared, cfgref_new(spare[i]));
    int bad = 0;
    for (int i = 0; i < THREADS; i++) {
        void *rc;
        pthread_join(t[i], &rc);
        bad += rc != NULL;
    }
    assert_int_equal(bad, 0);
    assert_int_equal(shared->refs, 1);
    cfgref_swap(&shared, NULL);
}

int main(void)
{
    /* tests/data/config/ has the checkout's modes (0644): not what is tested here */
    perms_allow_insecure(true);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counting),
        cmocka_unit_test(concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
