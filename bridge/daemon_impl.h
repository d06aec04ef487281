/*
 * daemon_impl.h — what daemon.c (start-up, poll workers, delivery, reloads,
 * the runtime interface) shares with daemon_keeper.c (the share of the
 * accounts among the live instances, and the lease keeper).  Internal to
 * the daemon module; its unit tests are tests/unit/test_daemon.c and
 * tests/unit/test_share.c.
 */
#ifndef POP3BRIDGE_DAEMON_IMPL_H
#define POP3BRIDGE_DAEMON_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgref.h"
#include "committer.h"
#include "config.h"
#include "delivery.h"
#include "poller.h"
#include "scheduler.h"
#include "store.h"

/* What the daemon's threads share, guarded by `lock`; `cond` is signalled
 * when an account's state or a request changes. */
struct daemon_rt {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct cfgref *cfg;       /* current snapshot: take it with cfgref_get(&rt.cfg) */
    char config_path[4096];
    struct sched_account *accounts;
    size_t n_accounts;
    struct delivery *delivery;
    struct committer *committer;
    char owner[STORE_OWNER_MAX + 1]; /* this instance's id: the owner of its leases */
    int cancel_fd;            /* an eventfd written at stop: polls in progress end */
    bool once, stopping, delivery_done;
    uint64_t polls_ok, polls_failed, polls_skipped;
    /* several instances on one store (PostgreSQL) */
    bool shared;
    int64_t lease_ms;         /* accounts' and (shared) deliveries' lease */
    size_t share_limit;       /* the most account leases this instance takes (share.h);
                                 0: no limit (one instance, or not yet counted) */
    /* the API's metrics hook, when the API runs; called with lock held */
    void (*on_poll)(const char *account, const struct err *e, const struct poller_result *r);
};
extern struct daemon_rt daemon_rt;

/* the wall clock the scheduler uses (poller_now_ms) */
int64_t daemon_now_ms(void);
/* the account of that name in daemon_rt.accounts, or NULL (lock held) */
struct sched_account *daemon_find_acct(const char *name);
/* account leases this instance believes it holds (lock held) */
size_t daemon_held_leases(void);
/* One turn of the share (daemon_keeper.c): gives back leases over this
 * instance's share, takes free ones within it; *next_at: when a dead
 * instance's lease ends (0: none).  0, or -1 when the store failed. */
int daemon_share_turn(struct store *st, int64_t *next_at);
/* the lease keeper thread (daemon_keeper.c); arg: its own store handle */
void *daemon_lease_keeper(void *arg);

#endif
