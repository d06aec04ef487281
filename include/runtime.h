/*
 * runtime — what the running daemon offers the HTTP API, as an interface of
 * functions: whether it is stopping, its current configuration, waking the
 * delivery worker, an account's live state, and asking for a poll now.
 *
 * The daemon implements the operations (struct runtime_ops) over its own
 * state and hands a struct runtime to api_start(); the API calls only the
 * functions below, never the daemon's locks or tables.  Every operation is
 * thread-safe and returns at once (no network, no store).
 *
 * Also the account states as the API and the store name them.
 */
#ifndef POP3BRIDGE_RUNTIME_H
#define POP3BRIDGE_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "cfgref.h"
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

/* What an account's last poll failed of, for programs (the text is in
 * last_error): the server's RFC 2449 / RFC 3206 code when it gave one, else
 * the kind of error (error.h).  The store keeps the name. */
enum account_error {
    ACCOUNT_ERR_NONE = 0,    /* "": the last poll succeeded */
    ACCOUNT_ERR_LOGIN_DELAY, /* [LOGIN-DELAY]: logged in too soon */
    ACCOUNT_ERR_IN_USE,      /* [IN-USE]: the mailbox is locked */
    ACCOUNT_ERR_SYS_TEMP,    /* [SYS/TEMP] */
    ACCOUNT_ERR_SYS_PERM,    /* [SYS/PERM] */
    ACCOUNT_ERR_AUTH,        /* the login was refused ([AUTH] or not) */
    ACCOUNT_ERR_NO_GRANT,    /* no usable OAuth2 grant: `oauth2 login` */
    ACCOUNT_ERR_NETWORK,     /* connect, DNS, read/write, peer closed */
    ACCOUNT_ERR_TIMEOUT,
    ACCOUNT_ERR_TLS,
    ACCOUNT_ERR_PROTOCOL,    /* the server broke the protocol */
    ACCOUNT_ERR_SERVER,      /* another -ERR */
    ACCOUNT_ERR_LIMIT,       /* a named limit was exceeded */
    ACCOUNT_ERR_INTERNAL,    /* local: store, memory, configuration */
};
#define ACCOUNT_ERRORS 14
/* "", "login_delay", "in_use", "sys_temp", "sys_perm", "auth", "no_grant",
 * "network", "timeout", "tls", "protocol", "server", "limit", "internal". */
const char *account_error_name(enum account_error c);
/* 0 and *out set, or -1 for a name that is not one of the above. */
int account_error_parse(const char *name, enum account_error *out);
/* The code of a poll's error (ERR_NONE: ACCOUNT_ERR_NONE). */
enum account_error account_error_of(const struct err *e);

/* One account's live state (a copy). */
struct runtime_account {
    enum account_state state;
    char last_error[STORE_ERROR_MAX + 1]; /* "" if the last poll succeeded */
    enum account_error last_error_code;   /* what last_error is, for programs */
    int64_t last_attempt_at;  /* Unix ms, 0 = never */
    int64_t last_success_at;  /* Unix ms, 0 = never */
    int64_t next_at;          /* next poll due (Unix ms) */
    bool held;                /* this instance holds the account's lease (a shared
                                 store; otherwise another instance may poll it) */
};

/* What a request for a poll now came to. */
enum runtime_poll {
    RUNTIME_POLL_QUEUED = 0, /* the poll runs as soon as a worker is free */
    RUNTIME_POLL_UNKNOWN,    /* no such account */
    RUNTIME_POLL_BACKOFF,    /* the account is backing off (after a failure, or the
                                server's LOGIN-DELAY): nothing was queued */
};

struct runtime_ops {
    bool (*stopping)(void *ctx);
    struct cfgref *(*config)(void *ctx);
    void (*wake_delivery)(void *ctx);
    int (*account)(void *ctx, const char *name, struct runtime_account *out);
    enum runtime_poll (*poll_now)(void *ctx, const char *name, int64_t *retry_after_s);
};

/* The daemon's side of the interface: its operations and their context. */
struct runtime {
    const struct runtime_ops *ops;
    void *ctx;
};

/* Whether the daemon is shutting down. */
bool runtime_stopping(const struct runtime *rt);
/* The current configuration snapshot with a new reference (cfgref_put() it);
 * never NULL. */
struct cfgref *runtime_config(const struct runtime *rt);
/* Wake the delivery worker (a delivery became due). */
void runtime_wake_delivery(const struct runtime *rt);
/* A copy of one account's live state: 0, or -1 if there is no such account. */
int runtime_account(const struct runtime *rt, const char *name, struct runtime_account *out);
/* Ask for a poll of `name` now.  RUNTIME_POLL_BACKOFF sets *retry_after_s
 * (>= 1) to the seconds until a poll is allowed again: a request for a poll
 * never bypasses LOGIN-DELAY or a backoff. */
enum runtime_poll runtime_poll_now(const struct runtime *rt, const char *name,
                                   int64_t *retry_after_s);

#endif
