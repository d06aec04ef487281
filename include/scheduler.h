/*
 * scheduler — when each account is polled next: the table of accounts'
 * schedules, picking the next due one, what a poll's outcome does to the
 * schedule (the interval, LOGIN-DELAY, "more messages remain", the backoff
 * after failures) and whether a poll asked for now is allowed.
 *
 * Pure functions over plain data: no clock, no lock, no store (the daemon
 * holds its lock around them and passes `now`, Unix ms).
 *
 * Policy:
 *   - after a successful poll: the account's poll_interval, but never less
 *     than the server's LOGIN-DELAY (RFC 2449); when max_messages_per_poll
 *     left messages behind, at once (still not before LOGIN-DELAY);
 *   - after a failure, by its kind (sched_backoff_ms): LOGIN-DELAY given as a
 *     reply code: the larger of the interval and the delay (default
 *     SCHED_LOGIN_DELAY_DEFAULT_MS); no OAuth2 grant: each interval (nothing
 *     is contacted, so polling resumes soon after `oauth2 login`), state
 *     auth_error; a refused login: SCHED_AUTH_BASE_MS doubling up to
 *     SCHED_AUTH_MAX_MS, auth_error; temporary (connection, timeout, TLS,
 *     [IN-USE], [SYS/TEMP]): SCHED_TEMP_BASE_MS doubling up to the larger of
 *     the interval and SCHED_TEMP_CAP_MS, backoff; anything else:
 *     SCHED_ERROR_BASE_MS doubling up to SCHED_ERROR_MAX_MS, error.  The
 *     doubling stops after SCHED_SHIFT_MAX failures in a row;
 *   - a poll asked for now (API, `poll now`) never bypasses a backoff or
 *     LOGIN-DELAY (not_before).
 */
#ifndef POP3BRIDGE_SCHEDULER_H
#define POP3BRIDGE_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "runtime.h"
#include "store.h"

#define SCHED_WAIT_MAX_MS 1000                /* longest idle wait before looking again */
#define SCHED_LOGIN_DELAY_DEFAULT_MS 300000   /* [LOGIN-DELAY] without a CAPA value */
#define SCHED_AUTH_BASE_MS (15 * 60000LL)     /* refused login: first delay */
#define SCHED_AUTH_MAX_MS (6 * 3600000LL)     /* refused login: longest delay */
#define SCHED_TEMP_BASE_MS 30000LL            /* temporary failure: first delay */
#define SCHED_TEMP_CAP_MS (15 * 60000LL)      /* ...up to this (or the interval if longer) */
#define SCHED_CONN_BASE_MIN_MS 1000LL         /* connection refused/reset: first delay is
                                                 min(SCHED_TEMP_BASE_MS, interval), not
                                                 below this */
#define SCHED_ERROR_BASE_MS 60000LL           /* other failures: first delay */
#define SCHED_ERROR_MAX_MS 3600000LL          /* other failures: longest delay */
#define SCHED_SHIFT_MAX 10                    /* doublings at most */
#define SCHED_STATE_SAVE_MS (15 * 60000LL)    /* an idle account's state (its times) is
                                                 written at most this often; a change of
                                                 state or error at once */

/* One account's schedule and live state (plain data, the daemon's table). */
struct sched_account {
    char name[CONFIG_NAME_MAX + 1];
    enum account_state state;
    char last_error[STORE_ERROR_MAX + 1]; /* "" if the last poll succeeded */
    enum account_error last_error_code;   /* what last_error is (runtime.h) */
    int64_t last_attempt_at;  /* Unix ms, 0 = never */
    int64_t last_success_at;
    int64_t next_at;          /* next poll due (Unix ms) */
    int64_t not_before;       /* no poll before (Unix ms): backoff or LOGIN-DELAY, even
                                 when one is requested */
    int fails;                /* failed polls in a row */
    bool running;             /* a worker is polling it now */
    bool requested;           /* a poll now was asked */
    bool polled_once;         /* --once: done with it */
    int64_t lease_until;      /* the instance's lease on it (Unix ms) as last taken or
                                 renewed; 0: not held, or not sure */
    int free_turns;           /* shared store: lease keeper turns in a row that saw no
                                 live lease on it (share.h) */
    enum account_state saved_state; /* as last written to the store */
    int64_t saved_at;         /* monotonic ms of that write; 0 never */
};

/* The delay before the next poll after a failure (fails >= 1 in a row), and
 * the state it puts the account in (backoff, auth_error or error).
 * interval_ms is the account's poll interval, login_delay_s the server's
 * LOGIN-DELAY (-1 if none). */
int64_t sched_backoff_ms(const struct err *e, int fails, int64_t interval_ms,
                         long login_delay_s, enum account_state *state);

/* When the account is due: next_at, or not_before when a poll was asked. */
int64_t sched_due(const struct sched_account *a);

/* The due account (due <= now) that has waited longest, not running (and
 * with `once`, not done yet); NULL if none.  *wait_ms gets the time until
 * the next one falls due, at most SCHED_WAIT_MAX_MS. */
struct sched_account *sched_pick(struct sched_account *v, size_t n, int64_t now, bool once,
                                 int64_t *wait_ms);

/* This instance has just taken the lease of an account nobody held (the
 * keeper's share turn: its holder died, or gave it back), at now; saved:
 * what the store has of it (its previous holder's last times), NULL if
 * nothing.  The account is due from the last poll anyone made of it, not
 * from the takeover, so that sched_pick (the most overdue first) polls an
 * account nobody polled for long before the accounts this instance polled
 * a moment ago, however far behind these are on a loaded instance:
 * next_at = the later of saved's last_attempt_at and last_success_at, plus
 * interval_ms (0 if never polled), but not later than now (the holder's
 * clock may be ahead of this one's), and not before a wait still pending
 * (saved's backoff_until, the holder's backoff or LOGIN-DELAY, which
 * becomes not_before; or not_before).  The saved times may be older than
 * the last poll (an idle account's state is written every
 * SCHED_STATE_SAVE_MS at most), which only brings the poll forward.  An
 * account being polled is left to its poll's end.  last_success_at from
 * saved if later. */
void sched_taken_over(struct sched_account *a, const struct store_account_state *saved,
                      int64_t now, int64_t interval_ms);

/* A worker takes the account: running, polling, last_attempt_at = now. */
void sched_begin(struct sched_account *a, int64_t now);

/* A poll succeeded: state idle, failures reset, the next poll scheduled
 * (see the policy above); returns the delay until it. */
int64_t sched_succeeded(struct sched_account *a, int64_t now, int64_t interval_ms,
                        long login_delay_s, bool more);

/* A poll failed with e: failures + 1, the state and the next poll from
 * sched_backoff_ms, last_error and last_error_code from e; returns the
 * delay. */
int64_t sched_failed(struct sched_account *a, int64_t now, int64_t interval_ms,
                     long login_delay_s, const struct err *e);

/* After a poll (rc 0: it succeeded; first: the account's first poll), at
 * monotonic time mono_ms: whether the account's state must be written to
 * the store now.  A write when something a restart needs changed (the
 * state, a failure, a LOGIN-DELAY, the first poll), else only once
 * SCHED_STATE_SAVE_MS have passed since the last write, so that an account
 * polled every minute or more often does not write at every poll; when true,
 * saved_state and saved_at are updated. */
bool sched_save_due(struct sched_account *a, int rc, bool first, int64_t now, int64_t mono_ms);

/* A poll asked for now: 0 (queued: requested set), or 1 with *retry_after_s
 * (>= 1) while not_before forbids one. */
int sched_request(struct sched_account *a, int64_t now, int64_t *retry_after_s);

/* The account of that name in v[0..n), or NULL. */
struct sched_account *sched_find(struct sched_account *v, size_t n, const char *name);
/* The same, looking at v[hint] first (where the account was when its poll
 * began: the table is rebuilt only by a reload), so that the end of a poll
 * does not compare the name with every account's. */
struct sched_account *sched_find_at(struct sched_account *v, size_t n, const char *name,
                                    size_t hint);
/* The accounts of v[0..n) whose lease the instance believes it holds
 * (lease_until set). */
size_t sched_leases_held(const struct sched_account *v, size_t n);

#endif
