/* Unit tests: the share of the accounts among live instances
 * (include/share.h): the limit's arithmetic, and a lease given back as the
 * keeper does (store_account_give_back), on SQLite in a temp dir and, when
 * POP3BRIDGE_TEST_PG_URL names a PostgreSQL database (tests/run-unit starts
 * one), on PostgreSQL too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libpq-fe.h>

#include "share.h"
#include "store.h"
#include "tmpstore.h"

#define T0 1700000000000LL /* a fixed "now" in Unix ms */
#define LEASE 30000

static const char *pg_url, *pg_pw;

static void limits(void **state)
{
    (void)state;
    assert_int_equal(share_limit(12, 3), 4);
    assert_int_equal(share_limit(12, 1), 12);
    assert_int_equal(share_limit(10, 3), 4);
    assert_int_equal(share_limit(50, 3), 17);
    assert_int_equal(share_limit(2, 3), 1);
    assert_int_equal(share_limit(0, 3), 0);
    assert_int_equal(share_limit(7, 0), 7); /* no instance seen: itself */
    assert_int_equal(share_limit(1000, 7), 143);
}

/* Whatever the counts, the live instances' limits cover every account, and
 * leave fewer spare places than there are instances (ceil, no slack). */
static void limits_cover_every_account(void **state)
{
    (void)state;
    for (size_t accounts = 0; accounts <= 300; accounts++)
        for (size_t live = 1; live <= 12; live++) {
            size_t l = share_limit(accounts, live);
            assert_true(l * live >= accounts);
            assert_true(l * live - accounts < live);
            /* an instance at its limit takes no more; below it, it does */
            assert_false(share_may_take(l, l));
            if (l)
                assert_true(share_may_take(l - 1, l));
        }
}

static void excess(void **state)
{
    (void)state;
    assert_int_equal(share_excess(12, 4), 8);
    assert_int_equal(share_excess(4, 4), 0);
    assert_int_equal(share_excess(3, 4), 0);
    assert_int_equal(share_excess(0, 0), 0);
    /* an instance that took everything alone gives back down to its share
     * when two more appear: 12 -> 4, and the two others may take 4 each */
    size_t l = share_limit(12, 3);
    assert_int_equal(12 - share_excess(12, l), 4);
}

/* An account nobody held at SHARE_ORPHAN_TURNS keeper turns in a row is
 * taken whatever the share (an instance counted live may be dead). */
static void orphans(void **state)
{
    (void)state;
    assert_true(share_may_take_account(3, 4, 0));
    assert_false(share_may_take_account(4, 4, 0));
    assert_false(share_may_take_account(4, 4, SHARE_ORPHAN_TURNS - 1));
    assert_true(share_may_take_account(4, 4, SHARE_ORPHAN_TURNS));
    assert_true(share_may_take_account(9, 4, SHARE_ORPHAN_TURNS + 1));
}

/* Live through one missed heartbeat (every quarter of the lease), not
 * longer than the lease: a dead instance is counted out before its leases
 * expire, so its accounts fit in the others' shares by then. */
static void live_window(void **state)
{
    (void)state;
    for (int64_t lease = 1000; lease <= 3600000; lease *= 3) {
        int64_t w = share_live_window_ms(lease);
        assert_true(w >= 2 * (lease / 4));
        assert_true(w < lease);
    }
}

/* ---- giving a lease back, on a real store ------------------------------ */

static int setup(void **state)
{
    struct err e;
    err_clear(&e);
    if (pg_url) {
        const char *keys[] = {"dbname", "password", NULL}, *vals[] = {pg_url, pg_pw, NULL};
        PGconn *c = PQconnectdbParams(keys, vals, 1);
        if (PQstatus(c) != CONNECTION_OK) {
            fprintf(stderr, "connect: %s\n", PQerrorMessage(c));
            PQfinish(c);
            return -1;
        }
        PGresult *res = PQexec(c, "DROP SCHEMA public CASCADE; CREATE SCHEMA public");
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        PQfinish(c);
        struct store_target t = {.url = pg_url, .password = pg_pw, .pool = 4};
        if (!ok || store_setup(&t, &e) < 0) {
            fprintf(stderr, "store_setup: %s\n", e.msg);
            return -1;
        }
    }
    return tmpstore_setup(state, "share");
}

static int teardown(void **state)
{
    tmpstore_teardown(state);
    if (pg_url)
        store_teardown();
    return 0;
}

static int count_lease(void *ctx, const char *account, const char *owner, int64_t until,
                       struct err *e)
{
    (void)account;
    (void)until;
    (void)e;
    if (strcmp(owner, "A") == 0)
        (*(int *)ctx)++;
    return 0;
}

static int count_all(void *ctx, const char *account, const char *owner, int64_t until,
                     struct err *e)
{
    (void)account;
    (void)owner;
    (void)until;
    (void)e;
    (*(int *)ctx)++;
    return 0;
}

static void give_back(void **state)
{
    struct store *st = ((struct tmpstore *)*state)->st;
    struct err e;
    err_clear(&e);
    assert_int_equal(store_account_lease(st, "one", "A", T0, LEASE, &e), 0);
    assert_int_equal(store_account_lease(st, "two", "A", T0, LEASE, &e), 0);
    assert_int_equal(store_account_lease(st, "three", "B", T0, LEASE, &e), 0);
    int n = 0;
    assert_int_equal(store_account_leases_each(st, T0 + 1, count_lease, &n, &e), 0);
    assert_int_equal(n, 2);

    /* given back: B takes it at once, long before A's lease would end */
    assert_int_equal(store_account_give_back(st, "one", "A", &e), 0);
    n = 0;
    assert_int_equal(store_account_leases_each(st, T0 + 2, count_lease, &n, &e), 0);
    assert_int_equal(n, 1);
    /* A's renewal does not revive it: only "two" is renewed */
    int64_t renewed = -1;
    assert_int_equal(store_account_renew(st, "A", T0 + 3, LEASE, &renewed, &e), 0);
    assert_int_equal(renewed, 1);
    assert_int_equal(store_account_lease(st, "one", "B", T0 + 4, LEASE, &e), 0);
    /* and then it is B's: A can neither give it back nor take it */
    assert_int_equal(store_account_give_back(st, "one", "A", &e), STORE_LEASE_LOST);
    assert_int_equal(store_account_lease(st, "one", "A", T0 + 5, LEASE, &e), STORE_LEASE_LOST);
    /* another instance's lease is never given back by A */
    assert_int_equal(store_account_give_back(st, "three", "A", &e), STORE_LEASE_LOST);
    assert_int_equal(store_account_lease(st, "three", "C", T0 + 6, LEASE, &e), STORE_LEASE_LOST);
    /* a lease given back and not taken yet: A may take it again itself */
    assert_int_equal(store_account_give_back(st, "two", "A", &e), 0);
    assert_int_equal(store_account_lease(st, "two", "A", T0 + 7, LEASE, &e), 0);
    n = 0;
    assert_int_equal(store_account_leases_each(st, T0 + 8, count_lease, &n, &e), 0);
    assert_int_equal(n, 1);
    /* an account never leased: nothing to give back, nothing taken */
    assert_int_equal(store_account_give_back(st, "four", "A", &e), STORE_LEASE_LOST);
    assert_int_equal(store_account_lease(st, "four", "B", T0 + 9, LEASE, &e), 0);
    /* a lease given back is no lease at all: none listed, whatever the time
     * (a lease passed to a placeholder owner would be listed at its own
     * small time) */
    assert_int_equal(store_account_give_back(st, "two", "A", &e), 0);
    n = 0;
    assert_int_equal(store_account_leases_each(st, 0, count_all, &n, &e), 0);
    assert_int_equal(n, 3); /* one, three and four: B's */
    /* bad owner */
    assert_int_equal(store_account_give_back(st, "two", "", &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

int main(void)
{
    pg_url = getenv("POP3BRIDGE_TEST_PG_URL");
    pg_pw = getenv("POP3BRIDGE_TEST_PG_PASSWORD");
    if (pg_url && !*pg_url)
        pg_url = NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(limits),
        cmocka_unit_test(limits_cover_every_account),
        cmocka_unit_test(excess),
        cmocka_unit_test(orphans),
        cmocka_unit_test(live_window),
        cmocka_unit_test_setup_teardown(give_back, setup, teardown),
    };
    return cmocka_run_group_tests_name(pg_url ? "share on PostgreSQL" : "share", tests, NULL,
                                       NULL);
}
