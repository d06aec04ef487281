/*
 * daemon_impl.h — what daemon.c (start-up, poll workers, delivery, reloads,
 * the runtime interface, and the state they share) gives daemon_keeper.c
 * (the share of the accounts among the live instances, and the lease
 * keeper): a struct daemon_keeper, the few things of the daemon's state the
 * keeper works on, and nothing else.  Internal to the daemon module; its
 * unit tests are tests/unit/test_daemon.c and tests/unit/test_share.c.
 */
#ifndef POP3BRIDGE_DAEMON_IMPL_H
#define POP3BRIDGE_DAEMON_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgref.h"
#include "scheduler.h"
#include "store.h"

/* the poll interval of an account in the table that the configuration no
 * longer has (a reload in between) */
#define DAEMON_INTERVAL_UNKNOWN_MS 60000

/* What the share and the lease keeper see of the daemon: pointers into its
 * state, set once before the keeper's first turn.  Everything pointed to is
 * guarded by *lock; the rest does not change while the daemon runs. */
struct daemon_keeper {
    pthread_mutex_t *lock;
    pthread_cond_t *cond;             /* the keeper waits on it; broadcast when the
                                         keeper takes an account (due to be polled) */
    struct cfgref *const *cfg;        /* the configuration (cfgref_get; a reload
                                         replaces it) */
    struct sched_account **accounts;  /* the account table (a reload replaces it) */
    size_t *n_accounts;
    size_t *share_limit;              /* set by each share turn: the most account leases
                                         this instance takes (share.h); 0: no limit */
    const bool *stopping;             /* the keeper thread ends once it is set */
    const char *owner;                /* this instance's id: the owner of its leases */
    int64_t lease_ms;                 /* the account leases' length */
    bool share;                       /* several instances (PostgreSQL), not --once:
                                         the keeper takes share turns */
    struct store *st;                 /* the keeper thread's own store handle */
};

/* the wall clock the scheduler uses (poller_now_ms) */
int64_t daemon_now_ms(void);
/* One turn of the share (daemon_keeper.c), with the store handle st:
 * gives back leases over this instance's share, takes free ones within it;
 * *next_at: when a dead instance's lease ends (0: none).  0, or -1 when the
 * store failed.  k->lock not held. */
int daemon_share_turn(const struct daemon_keeper *k, struct store *st, int64_t *next_at);
/* the lease keeper thread (daemon_keeper.c); arg: its struct daemon_keeper */
void *daemon_lease_keeper(void *arg);

#endif
