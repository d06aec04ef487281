/* daemon_keeper.c — the share of the accounts among the live instances
 * of a shared store, and the lease keeper thread; see include/daemon.h and
 * bridge/daemon_impl.h.  Split from daemon.c, whose account table it works
 * on through a struct daemon_keeper and nothing else. */
#include "daemon_impl.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cfgref.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "share.h"
#include "util.h"

/* ---- the share of the accounts (several instances) ------------------------------- */

/* What one keeper turn reads of the store: the live instances' ids and
 * every live account lease. */
struct share_view {
    const char *owner;                    /* this instance's id */
    size_t live;                          /* live instances, this one included */
    bool self_seen;
    char (*ids)[STORE_OWNER_MAX + 1];     /* the live instances */
    size_t nids, cap_ids;
    struct share_lease {
        char account[CONFIG_NAME_MAX + 1];
        int who;                          /* SHARE_MINE, SHARE_LIVE, SHARE_DEAD */
        int64_t until;
    } *leases;
    size_t nleases, cap_leases;
};
enum { SHARE_MINE, SHARE_LIVE, SHARE_DEAD };

static int view_instance(void *ctx, const struct store_instance *in, struct err *e)
{
    struct share_view *v = ctx;
    v->self_seen |= strcmp(in->id, v->owner) == 0;
    v->live++;
    if (v->nids >= SHARE_INSTANCES_MAX)
        return 0;
    if (v->nids == v->cap_ids) {
        size_t cap = v->cap_ids ? 2 * v->cap_ids : 8;
        void *p = realloc(v->ids, cap * sizeof *v->ids);
        if (!p)
            return err_set(e, ERR_INTERNAL, "daemon: share: out of memory listing instances");
        v->ids = p;
        v->cap_ids = cap;
    }
    snprintf(v->ids[v->nids++], sizeof v->ids[0], "%s", in->id);
    return 0;
}

static int view_lease(void *ctx, const char *account, const char *owner, int64_t until,
                      struct err *e)
{
    struct share_view *v = ctx;
    if (strlen(account) > CONFIG_NAME_MAX)
        return 0; /* not an account of any configuration */
    if (v->nleases == v->cap_leases) {
        size_t cap = v->cap_leases ? 2 * v->cap_leases : 64;
        void *p = realloc(v->leases, cap * sizeof *v->leases);
        if (!p)
            return err_set(e, ERR_INTERNAL, "daemon: share: out of memory listing leases");
        v->leases = p;
        v->cap_leases = cap;
    }
    struct share_lease *l = &v->leases[v->nleases++];
    snprintf(l->account, sizeof l->account, "%s", account);
    l->until = until;
    l->who = SHARE_DEAD;
    if (strcmp(owner, v->owner) == 0)
        l->who = SHARE_MINE;
    else
        for (size_t i = 0; i < v->nids; i++)
            if (strcmp(v->ids[i], owner) == 0)
                l->who = SHARE_LIVE;
    return 0;
}

static int lease_cmp(const void *a, const void *b)
{
    return strcmp(((const struct share_lease *)a)->account,
                  ((const struct share_lease *)b)->account);
}

static const struct share_lease *view_find(const struct share_view *v, const char *account)
{
    struct share_lease key;
    snprintf(key.account, sizeof key.account, "%s", account);
    return v->nleases ? bsearch(&key, v->leases, v->nleases, sizeof *v->leases, lease_cmp)
                      : NULL; /* none: v->leases is NULL, which bsearch may not be given */
}

/* Take the lease of an account nobody holds for this instance, ahead of its
 * poll (keeper, lock not held): what the previous holder saved says
 * whether its next poll is a first one, as in take_lease().  True if taken. */
static bool share_take(const struct daemon_keeper *k, struct store *st, const char *name,
                       int64_t now)
{
    struct err e;
    err_clear(&e);
    int r = store_account_lease(st, name, k->owner, now, k->lease_ms, &e);
    if (r < 0)
        log_error("store_failed", "op=account_lease account=%s error=%s", name, log_q(e.msg));
    if (r != 0)
        return false;
    struct store_account_state saved;
    bool have = store_account_get(st, name, &saved, &e) == 0;
    struct cfgref *ref = cfgref_get(k->cfg);
    const struct config_account *ca = config_account_find(ref->cfg, name);
    int64_t interval = ca ? ca->poll_interval_ms : DAEMON_INTERVAL_UNKNOWN_MS;
    cfgref_put(ref);
    pthread_mutex_lock(k->lock);
    struct sched_account *a = sched_find(*k->accounts, *k->n_accounts, name);
    if (a) {
        a->lease_until = now + k->lease_ms;
        a->free_turns = 0;
        sched_taken_over(a, have ? &saved : NULL, now, interval);
        pthread_cond_broadcast(k->cond);
    }
    pthread_mutex_unlock(k->lock);
    return a != NULL;
}

/* One turn of spreading the accounts over the live instances (share.h),
 * with the store handle st, k->lock not held:
 *  - count the live instances and read every live account lease;
 *  - set *k->share_limit, the most leases this instance takes;
 *  - above it, give back the excess, only of accounts not being polled;
 *  - below it (or for an orphan), take the leases of accounts nobody holds
 *    at once (the accounts are polled when a worker is free), and make due
 *    when their lease ends those a dead instance (no heartbeat) still
 *    holds;
 * *next_at gets the earliest end of such a lease (0: none), when the keeper
 * turns again.  -1 when the store could not be read or a lease could not be
 * given back (logged): the keeper then checks every lease again. */
int daemon_share_turn(const struct daemon_keeper *k, struct store *st, int64_t *next_at)
{
    int64_t now = daemon_now_ms();
    *next_at = 0;
    struct share_view v = {.owner = k->owner};
    struct err e;
    err_clear(&e);
    int rc = 0;
    if (store_instances_each(st, now - share_live_window_ms(k->lease_ms), 0, view_instance, &v,
                             &e) < 0 ||
        store_account_leases_each(st, now, view_lease, &v, &e) < 0) {
        log_error("store_failed", "op=share error=%s", log_q(e.msg));
        free(v.ids);
        free(v.leases);
        return -1;
    }
    if (!v.self_seen)
        v.live++; /* its first heartbeat not written yet, or failed */
    if (v.nleases) /* none: v.leases is NULL, which qsort may not be given */
        qsort(v.leases, v.nleases, sizeof *v.leases, lease_cmp);

    pthread_mutex_lock(k->lock);
    struct sched_account *accounts = *k->accounts;
    size_t n = *k->n_accounts;
    /* names to give back, then names to take: at most n in all */
    char (*names)[CONFIG_NAME_MAX + 1] = calloc(n ? n : 1, sizeof *names);
    size_t nback = 0, ntake = 0, mine = 0, orphans = 0;
    size_t limit = share_limit(n, v.live);
    if (limit != *k->share_limit)
        log_info("account_share", "instances=%zu accounts=%zu share=%zu", v.live, n, limit);
    *k->share_limit = limit;
    for (size_t i = 0; i < n; i++) {
        struct sched_account *a = &accounts[i];
        const struct share_lease *l = view_find(&v, a->name);
        mine += l && l->who == SHARE_MINE;
        a->free_turns = l ? 0 : a->free_turns + (a->free_turns < SHARE_ORPHAN_TURNS);
        orphans += a->free_turns >= SHARE_ORPHAN_TURNS;
    }
    /* nothing given back while an account has no taker */
    size_t excess = orphans ? 0 : share_excess(mine, limit);
    size_t held = sched_leases_held(accounts, n);
    for (size_t i = n; names && i-- > 0;) {
        struct sched_account *a = &accounts[i];
        const struct share_lease *l = view_find(&v, a->name);
        if (l && l->who == SHARE_MINE && nback < excess && !a->running) {
            /* not polled now, and not before it is taken again (take_lease) */
            snprintf(names[nback++], sizeof *names, "%s", a->name);
            if (a->lease_until)
                held--;
            a->lease_until = 0;
        }
    }
    for (size_t i = 0; names && i < n; i++) {
        struct sched_account *a = &accounts[i];
        const struct share_lease *l = view_find(&v, a->name);
        if (a->lease_until || (l && l->who != SHARE_DEAD) ||
            !share_may_take_account(held + ntake, limit, a->free_turns))
            continue;
        if (!l) {
            snprintf(names[nback + ntake++], sizeof *names, "%s", a->name);
        } else if (!*next_at || l->until < *next_at) {
            *next_at = l->until; /* a dead instance's: taken when it ends */
        }
    }
    pthread_mutex_unlock(k->lock);
    free(v.ids);
    free(v.leases);

    size_t given = 0, taken = 0;
    for (size_t i = 0; i < nback; i++) {
        int r = store_account_give_back(st, names[i], k->owner, &e);
        if (r < 0) {
            log_error("store_failed", "op=account_give_back account=%s error=%s", names[i],
                      log_q(e.msg));
            rc = -1;
        } else if (r == 0) {
            given++;
        }
    }
    for (size_t i = 0; i < ntake; i++)
        taken += share_take(k, st, names[nback + i], daemon_now_ms());
    if (nback)
        log_info("account_leases_given_back", "count=%zu held=%zu share=%zu instances=%zu", given,
                 mine, limit, v.live);
    if (taken)
        log_info("account_leases_taken", "count=%zu held=%zu share=%zu instances=%zu", taken,
                 mine, limit, v.live);
    static size_t orphans_logged; /* the keeper's thread (and main's once before it) */
    if (orphans != orphans_logged)
        log_info("account_orphans", "count=%zu share=%zu instances=%zu", orphans, limit, v.live);
    orphans_logged = orphans;
    free(names);
    return rc;
}

/* ---- the lease keeper ------------------------------------------------------------ */

/* The one renewer of this instance's account leases: every quarter of
 * the lease (k->lease_ms: DAEMON_ACCOUNT_LEASE_MS, or store.lease with
 * PostgreSQL), all of them in one store call (its own handle, k->st).
 * If fewer were renewed than it believes held (another instance took one
 * after it had expired), every account is checked again before its next
 * poll.  Delivery leases are renewed by the delivery worker (delivery.h). */
void *daemon_lease_keeper(void *arg)
{
    const struct daemon_keeper *k = arg;
    struct store *st = k->st;
    pthread_mutex_lock(k->lock);
    int64_t next = clock_mono_ms() + k->lease_ms / 4;
    while (!*k->stopping) {
        int64_t left = next - clock_mono_ms();
        if (left > 0) {
            struct timespec ts;
            clock_deadline(&ts, left);
            pthread_cond_timedwait(k->cond, k->lock, &ts);
            continue;
        }
        next = clock_mono_ms() + k->lease_ms / 4;
        pthread_mutex_unlock(k->lock);
        /* first the share: what is given back is not renewed */
        int64_t dead_until = 0;
        int sr = k->share ? daemon_share_turn(k, st, &dead_until) : 0;
        if (dead_until) /* again when a dead instance's lease ends */
            next = MIN(next, clock_mono_ms() + MAX(dead_until - daemon_now_ms(), 0) + 1);
        pthread_mutex_lock(k->lock);
        int64_t held = (int64_t)sched_leases_held(*k->accounts, *k->n_accounts), renewed = 0;
        pthread_mutex_unlock(k->lock);
        int64_t now = daemon_now_ms();
        struct err e;
        int r = held ? store_account_renew(st, k->owner, now, k->lease_ms, &renewed, &e) : 0;
        /* a share turn that failed (a lease given back or not) or a lease
         * lost: each is taken again before its next poll */
        bool sure = r == 0 && renewed >= held && sr == 0;
        if (r < 0)
            log_error("store_failed", "op=account_renew error=%s", log_q(e.msg));
        else if (renewed < held)
            log_warn("account_leases_lost", "held=%lld renewed=%lld", (long long)held,
                     (long long)renewed);
        pthread_mutex_lock(k->lock);
        struct sched_account *accounts = *k->accounts;
        for (size_t i = 0; i < *k->n_accounts; i++)
            if (accounts[i].lease_until)
                accounts[i].lease_until = sure ? now + k->lease_ms : 0;
    }
    pthread_mutex_unlock(k->lock);
    return NULL;
}
