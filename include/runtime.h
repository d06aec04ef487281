/*
 * runtime — what the running daemon shares between its threads and with the
 * HTTP API: the current configuration snapshot, the accounts' live states,
 * the delivery worker, counters.  Guarded by `lock`; `cond` is signalled
 * when an account's state or a request changes.
 */
#ifndef POP3BRIDGE_RUNTIME_H
#define POP3BRIDGE_RUNTIME_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgref.h"
#include "delivery.h"
#include "error.h"
#include "poller.h"
#include "store.h"

/* An account's state, as the API and the store show it. */
enum account_state {
    ACCOUNT_IDLE = 0,   /* waiting for its next poll */
    ACCOUNT_POLLING,    /* a poll is running */
    ACCOUNT_BACKOFF,    /* a temporary failure: connection, timeout, TLS, [IN-USE],
                           [SYS/TEMP], [LOGIN-DELAY] */
    ACCOUNT_AUTH_ERROR, /* the login was refused: a longer backoff */
    ACCOUNT_ERROR,      /* anything else */
};
#define ACCOUNT_STATES 5
/* "idle", "polling", "backoff", "auth_error", "error"; "unknown" out of range. */
const char *account_state_name(enum account_state s);
/* 0 and *out set, or -1 for a name that is not one of the above. */
int account_state_parse(const char *name, enum account_state *out);

struct rt_account {
    char name[CONFIG_NAME_MAX + 1];
    enum account_state state;
    char last_error[STORE_ERROR_MAX + 1]; /* "" if the last poll succeeded */
    int64_t last_attempt_at;  /* Unix ms, 0 = never */
    int64_t last_success_at;
    int64_t next_at;          /* next poll due (Unix ms) */
    int fails;                /* failed polls in a row */
    bool running;             /* a worker is polling it now */
    bool requested;           /* "poll now" was asked */
    bool polled_once;         /* for --once */
};

struct runtime {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct cfgref *cfg;       /* current snapshot: take it with cfgref_get(&rt->cfg) */
    char config_path[4096];
    struct rt_account *accounts;
    size_t n_accounts;
    struct delivery *delivery;
    bool once, stopping, delivery_done;
    uint64_t polls_ok, polls_failed;
    /* hooks for the API's metrics; called with lock held */
    void (*on_poll)(const char *account, const struct err *e, const struct poller_result *r);
    void *services;           /* the HTTP API, when running */
};

/* Ask for a poll of `account` now.  0, or -1 if there is no such account. */
int runtime_poll_now(struct runtime *rt, const char *account);
/* A copy of one account's live state; 0, or -1 if there is no such account. */
int runtime_account(struct runtime *rt, const char *account, struct rt_account *out);

/* Start / stop the HTTP API when the configuration has one (api.listen). */
int runtime_start_services(struct runtime *rt, struct err *e);
void runtime_stop_services(struct runtime *rt);

#endif
