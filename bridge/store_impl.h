/*
 * store_impl — what a store backend provides behind include/store.h (private
 * to bridge/store*.c; not a public header).
 *
 * Every handle a backend returns (struct store, struct store_msg, struct
 * store_body) starts with a struct store_hdr naming the backend's ops table;
 * bridge/store.c turns each public store_* call into a call through it.  A
 * backend fills every entry: store.c refuses to open a backend whose table
 * has a hole, naming the missing call.
 *
 * STORE_CALLS lists the calls taking a struct store * first and a struct
 * err * last: (return type, name, parameters, arguments).  Adding a store call = one line here, one
 * function per backend.
 */
#ifndef POP3BRIDGE_STORE_IMPL_H
#define POP3BRIDGE_STORE_IMPL_H

#include "store.h"
#include "spool.h"

#include <openssl/evp.h>

struct store_ops;
struct store_hdr {
    const struct store_ops *ops;
};

/* A message on its way in (bridge/store.c): the same on every backend. */
struct store_msg {
    struct store_hdr hdr;       /* the store's ops */
    struct store *st;
    char account[STORE_NAME_MAX + 1];
    char uidl[STORE_UIDL_MAX + 1];
    struct spool sp;            /* in memory, then an unlinked file in the state_dir */
    EVP_MD_CTX *sha;
    bool failed;                /* a write failed: only abort is left */
};

#define STORE_CALLS(X)                                                                          \
    X(int, schema_version, (struct store * st, struct err * e), (st, e))                        \
    X(int, batch_begin, (struct store * st, struct err * e), (st, e))                           \
    X(int, batch_commit, (struct store * st, struct err * e), (st, e))                          \
    X(int, uidls_each,                                                                          \
      (struct store * st, const char *account, store_uidl_cb cb, void *ctx, struct err *e),     \
      (st, account, cb, ctx, e))                                                                \
    X(int, uidl_get,                                                                            \
      (struct store * st, const char *account, const char *uidl, enum store_uidl_state *state,  \
       int64_t *msg_id, struct err *e),                                                         \
      (st, account, uidl, state, msg_id, e))                                                    \
    X(int, uidls_record_ignored,                                                                \
      (struct store * st, const char *account, const char *const *uidls, size_t n, int64_t now, \
       struct err *e),                                                                          \
      (st, account, uidls, n, now, e))                                                          \
    X(int, uidls_deletable,                                                                     \
      (struct store * st, const char *account, bool delete_delivered, int64_t delete_after_ms,  \
       int64_t now, store_uidl_cb cb, void *ctx, struct err *e),                                \
      (st, account, delete_delivered, delete_after_ms, now, cb, ctx, e))                        \
    X(int, uidls_mark_deleted,                                                                  \
      (struct store * st, const char *account, const char *const *uidls, size_t n,              \
       struct err *e),                                                                          \
      (st, account, uidls, n, e))                                                               \
    X(int, uidls_forget_vanished,                                                               \
      (struct store * st, const char *account, const char *const *listed, size_t n,             \
       int64_t *forgotten, struct err *e),                                                      \
      (st, account, listed, n, forgotten, e))                                                   \
    X(int, msg_get, (struct store * st, int64_t id, struct store_msg_info *out, struct err *e), \
      (st, id, out, e))                                                                         \
    X(int, msg_stream,                                                                          \
      (struct store * st, int64_t id, store_sink_cb sink, void *ctx, struct err *e),            \
      (st, id, sink, ctx, e))                                                                   \
    X(int, body_open,                                                                           \
      (struct store * st, int64_t id, struct store_body **out, uint64_t *size, struct err *e),  \
      (st, id, out, size, e))                                                                   \
    X(int, delivery_lease_due,                                                                  \
      (struct store * st, const char *owner, const char *webhook, int64_t now,                  \
       int64_t lease_ms, struct store_delivery *out, size_t max, size_t *n, struct err *e),     \
      (st, owner, webhook, now, lease_ms, out, max, n, e))                                      \
    X(int, delivery_renew,                                                                      \
      (struct store * st, const char *owner, int64_t now, int64_t lease_ms, int64_t *renewed,   \
       struct err *e),                                                                          \
      (st, owner, now, lease_ms, renewed, e))                                                   \
    X(int, delivery_release,                                                                    \
      (struct store * st, const char *owner, int64_t id, int64_t *released, struct err *e),     \
      (st, owner, id, released, e))                                                             \
    X(int, delivery_record,                                                                     \
      (struct store * st, const char *owner, int64_t id, const struct store_attempt *a,         \
       enum store_dstatus status, int64_t next_attempt_at, struct err *e),                      \
      (st, owner, id, a, status, next_attempt_at, e))                                           \
    X(int, delivery_retry, (struct store * st, int64_t id, int64_t now, struct err *e),         \
      (st, id, now, e))                                                                         \
    X(int, delivery_get,                                                                        \
      (struct store * st, int64_t id, struct store_delivery *out, store_attempt_cb cb,          \
       void *ctx, struct err *e),                                                               \
      (st, id, out, cb, ctx, e))                                                                \
    X(int, delivery_list,                                                                       \
      (struct store * st, const enum store_dstatus *status, const char *account, size_t limit,  \
       const char *cursor, store_delivery_cb cb, void *ctx, char *next_cursor, struct err *e),  \
      (st, status, account, limit, cursor, cb, ctx, next_cursor, e))                            \
    X(int, delivery_next_due, (struct store * st, int64_t now, int64_t *at, struct err *e),     \
      (st, now, at, e))                                                                         \
    X(int, delivery_counts, (struct store * st, struct store_queue_counts *out, struct err *e), \
      (st, out, e))                                                                             \
    X(int, webhook_disable,                                                                     \
      (struct store * st, const char *webhook, const char *reason, int64_t now,                 \
       struct err *e),                                                                          \
      (st, webhook, reason, now, e))                                                            \
    X(int, webhooks_enable_all, (struct store * st, struct err * e), (st, e))                   \
    X(int, webhook_disabled,                                                                    \
      (struct store * st, const char *webhook, bool *disabled, int64_t *since, struct err *e),  \
      (st, webhook, disabled, since, e))                                                        \
    X(int, account_get,                                                                         \
      (struct store * st, const char *account, struct store_account_state *out,                 \
       struct err *e),                                                                          \
      (st, account, out, e))                                                                    \
    X(int, account_set,                                                                         \
      (struct store * st, const char *account, const struct store_account_state *in,            \
       struct err *e),                                                                          \
      (st, account, in, e))                                                                     \
    X(int, account_counts,                                                                      \
      (struct store * st, const char *account, struct store_account_counts *out,                \
       struct err *e),                                                                          \
      (st, account, out, e))                                                                    \
    X(int, oauth2_get,                                                                          \
      (struct store * st, const char *account, struct store_oauth2 *out, struct err *e),        \
      (st, account, out, e))                                                                    \
    X(int, oauth2_grant,                                                                        \
      (struct store * st, const char *account, const char *flow,                                \
       const struct store_oauth2_tokens *t, int64_t now, struct err *e),                        \
      (st, account, flow, t, now, e))                                                           \
    X(int, oauth2_lease,                                                                        \
      (struct store * st, const char *account, const char *owner, int64_t now,                  \
       int64_t lease_ms, bool create, const char *flow, struct store_oauth2 *out,               \
       struct err *e),                                                                          \
      (st, account, owner, now, lease_ms, create, flow, out, e))                                \
    X(int, oauth2_refreshed,                                                                    \
      (struct store * st, const char *account, int64_t version,                                 \
       const struct store_oauth2_tokens *t, int64_t now, struct err *e),                        \
      (st, account, version, t, now, e))                                                        \
    X(int, oauth2_failed,                                                                       \
      (struct store * st, const char *account, int64_t version, bool invalid,                   \
       const char *error, int64_t retry_at, struct err *e),                                     \
      (st, account, version, invalid, error, retry_at, e))                                      \
    X(int, oauth2_release,                                                                      \
      (struct store * st, const char *account, const char *owner, struct err *e),               \
      (st, account, owner, e))                                                                  \
    X(int, purge_bodies,                                                                        \
      (struct store * st, int64_t retention_ms, int64_t now, size_t max, int64_t *purged,       \
       struct err *e),                                                                          \
      (st, retention_ms, now, max, purged, e))                                                  \
    X(int, purge_events,                                                                        \
      (struct store * st, int64_t retention_ms, int64_t now, size_t max, int64_t *purged,       \
       struct err *e),                                                                          \
      (st, retention_ms, now, max, purged, e))                                                  \
    X(int, account_lease,                                                                       \
      (struct store * st, const char *account, const char *owner, int64_t now,                  \
       int64_t lease_ms, struct err *e),                                                        \
      (st, account, owner, now, lease_ms, e))                                                   \
    X(int, account_release,                                                                     \
      (struct store * st, const char *owner, int64_t *released, struct err *e),                 \
      (st, owner, released, e))                                                                 \
    X(int, account_renew,                                                                       \
      (struct store * st, const char *owner, int64_t now, int64_t lease_ms, int64_t *renewed,   \
       struct err *e),                                                                          \
      (st, owner, now, lease_ms, renewed, e))                                                   \
    X(int, account_give_back,                                                                   \
      (struct store * st, const char *account, const char *owner, struct err *e),               \
      (st, account, owner, e))                                                                  \
    X(int, account_leases_each,                                                                 \
      (struct store * st, int64_t now, store_lease_cb cb, void *ctx, struct err *e),            \
      (st, now, cb, ctx, e))                                                                    \
    X(int, instance_beat, (struct store * st, const struct store_instance *in, struct err *e),  \
      (st, in, e))                                                                              \
    X(int, instance_remove, (struct store * st, const char *id, struct err *e), (st, id, e))    \
    X(int, instances_each,                                                                      \
      (struct store * st, int64_t live_since, int64_t forget_before, store_instance_cb cb,      \
       void *ctx, struct err *e),                                                               \
      (st, live_since, forget_before, cb, ctx, e))                                              \
    X(int, instance_get,                                                                        \
      (struct store * st, const char *id, struct store_instance *out, struct err *e),           \
      (st, id, out, e))                                                                         \
    X(int, webhook_stats,                                                                       \
      (struct store * st, const char *webhook, int64_t now, struct store_webhook_stats *out,    \
       struct err *e),                                                                          \
      (st, webhook, now, out, e))                                                               \
    X(int, stats_hourly,                                                                        \
      (struct store * st, int64_t now, size_t hours, struct store_hour *out, struct err *e),    \
      (st, now, hours, out, e))                                                                 \
    X(int, link_key,                                                                            \
      (struct store * st, unsigned char key[STORE_LINK_KEY_LEN], int64_t *created_at,           \
       int64_t now, struct err *e),                                                             \
      (st, key, created_at, now, e))                                                            \
    X(int, link_key_rotate, (struct store * st, int64_t now, struct err * e), (st, now, e))     \
    X(int, msgs_each,                                                                           \
      (struct store * st, const char *account, store_msg_cb cb, void *ctx, struct err *e),      \
      (st, account, cb, ctx, e))                                                                \
    X(int, delivery_drop, (struct store * st, int64_t id, int64_t now, struct err *e),          \
      (st, id, now, e))                                                                         \
    X(int, delivery_retry_bulk,                                                                 \
      (struct store * st, const char *webhook, enum store_dstatus status, size_t max,           \
       int64_t now, int64_t *retried, struct err *e),                                           \
      (st, webhook, status, max, now, retried, e))                                              \
    X(int, event_add,                                                                           \
      (struct store * st, const char *account, const char *type, const char *data,              \
       const char *const *webhooks, size_t n_webhooks, int64_t now, int64_t *id,                \
       struct err *e),                                                                          \
      (st, account, type, data, webhooks, n_webhooks, now, id, e))                              \
    X(int, account_event_once,                                                                  \
      (struct store * st, const char *account, const char *type, const char *data,              \
       const char *const *webhooks, size_t n_webhooks, int64_t now, int64_t *event_id,          \
       struct err *e),                                                                          \
      (st, account, type, data, webhooks, n_webhooks, now, event_id, e))                        \
    X(int, event_get,                                                                           \
      (struct store * st, int64_t id, struct store_event *out, char **data, struct err *e),     \
      (st, id, out, data, e))                                                      \
    X(int, poll_record,                                                                         \
      (struct store * st, const char *account, const struct store_poll_write *w,                \
       bool *session_saved, struct err *e),                                                     \
      (st, account, w, session_saved, e))                                                       \
    X(int, poll_history,                                                                        \
      (struct store * st, const char *account, struct pollhist_session *s,                      \
       struct store_poll *out, size_t max, size_t *n, struct err *e),                           \
      (st, account, s, out, max, n, e))

#define STORE_OPS_FIELD(ret, name, params, args) ret(*name) params;

struct store_ops {
    const char *backend; /* "sqlite", "postgresql" */
    STORE_CALLS(STORE_OPS_FIELD)
    void (*close)(struct store *st);
    void (*batch_rollback)(struct store *st);
    /* the directory of a message's spool file (lives as long as the store) */
    const char *(*spool_dir)(const struct store *st);
    /* a finished message (checked, SHA-256 taken) in one transaction: the
     * message, its body, its UIDL, one delivery per webhook (none for a
     * duplicate: store_dedupe_since); *id, *dup.  0 or -1 with *e. */
    int (*msg_store)(struct store_msg *m, const struct store_msg_meta *meta,
                     const char *const *webhooks, size_t n_webhooks, int64_t now,
                     const char *sha_hex, int64_t *id, int64_t *dup, struct err *e);
    int (*body_read)(struct store_body *b, uint64_t offset, void *buf, size_t len, size_t *got,
                     struct err *e);
    void (*body_close)(struct store_body *b);
    /* optional: store_msg_finish_many's writes at once (NULL: msg_store one
     * by one); f[i] with result 1 are to be stored, their SHA-256 in hex[i] */
    void (*msg_store_many)(struct store *st, struct store_finish *f,
                           const char (*hex)[STORE_SHA256_HEX + 1], size_t n);
    /* optional: store_delivery_record_many at once (NULL: one by one) */
    int (*delivery_record_many)(struct store *st, const char *owner, struct store_record *recs,
                                size_t n, struct err *e);
    /* optional: store_msg_load in one read (NULL: store.c composes it) */
    int (*msg_load)(struct store *st, int64_t id, struct store_msg_info *out, size_t mem_max,
                    char **body, size_t *body_len, unsigned char *link_key, int64_t now,
                    struct err *e);
    /* optional: store_msg_load_many in one read (NULL: store_msg_load one by
     * one); n checked, l[i] cleared but for id */
    int (*msg_load_many)(struct store *st, struct store_loaded *l, size_t n, size_t mem_max,
                         size_t total_max, unsigned char *link_key, int64_t now, struct err *e);
};

/* The backends' tables and openers. */
extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;
struct store *store_sqlite_open(const char *state_dir, struct err *e);
struct store *store_pg_open(const char *state_dir, struct err *e);

/* PostgreSQL: set up / tear down the process's connection pool (store.c
 * calls these from store_setup / store_teardown). */
int store_pg_setup(const struct store_target *t, struct err *e);
void store_pg_teardown(void);
const char *store_pg_target_name(void);
/* A pooled connection (libpq's PGconn) for bridge/store_pg_import.c, and
 * its return (a connection returned inside a transaction is closed). */
struct pg_conn;
struct pg_conn *store_pg_borrow(struct err *e);
void store_pg_return(struct pg_conn *c);

/* Shared argument checks (bridge/store.c): 0, or -1 with *e (ERR_USAGE for
 * empty, ERR_LIMIT for too long), worded as every backend words them. */
int store_check_name(const char *what, const char *v, struct err *e);
int store_check_uidl(const char *v, struct err *e);
int store_check_owner(const char *owner, struct err *e);
/* A callback said stop: make sure *e says something (ERR_USAGE); -1. */
int store_cb_stop(struct err *e);
/* n UIDLs (at most STORE_UIDLS_MAX), each checked. */
int store_check_uidls(const char *const *uidls, size_t n, struct err *e);
/* The webhooks of one `what` ("message", "event"): at most
 * STORE_WEBHOOKS_MAX, each a name, none twice. */
int store_check_webhooks(const char *what, const char *const *webhooks, size_t n, struct err *e);
/* store_event_add's and store_account_event_once's arguments. */
int store_check_event(const char *account, const char *type, const char *data,
                      const char *const *webhooks, size_t n, struct err *e);
int store_check_instance(const struct store_instance *in, struct err *e);
int store_check_sealed(const char *what, const unsigned char *p, size_t len, struct err *e);
int store_check_flow(const char *flow, struct err *e);
/* store_delivery_record's owner, status and attempt. */
int store_check_record(const char *owner, const struct store_attempt *a,
                       enum store_dstatus status, struct err *e);
/* A delivery id's message body is gone: it cannot be retried (ERR_USAGE); -1. */
int store_err_body_purged(int64_t id, struct err *e);
/* Only a failed or dead delivery can be dropped or retried: 0, or -1 with
 * *e (ERR_USAGE) naming delivery id, its status cur and verb ("drop",
 * "dropped"). */
int store_check_settled(const char *verb, const char *done_verb, int64_t id,
                        enum store_dstatus cur, struct err *e);
/* store_delivery_retry_bulk's arguments. */
int store_check_retry_bulk(const char *webhook, enum store_dstatus status, size_t max,
                           struct err *e);
/* A delivery list cursor ("c<id>"; empty or NULL: from the newest). */
int store_cursor_parse(const char *cursor, int64_t *before, struct err *e);
/* The first checks of the store calls named (as every backend makes them). */
int store_check_account_uidls(const char *account, const char *const *uidls, size_t n,
                              struct err *e);
/* store_delivery_list: also clears next_cursor and *e, and parses cursor into *before. */
int store_check_list(const enum store_dstatus *status, const char *account, size_t limit,
                     const char *cursor, char *next_cursor, int64_t *before, struct err *e);
/* store_account_set: *state_len is in->state's length. */
int store_check_account_state(const char *account, const struct store_account_state *in,
                              size_t *state_len, struct err *e);
int store_check_lease_due(const char *owner, const char *webhook, int64_t lease_ms, size_t max,
                          struct err *e);
/* what: "an OAuth2 grant", "a refresh"; flow NULL: none to check. */
int store_check_tokens(const char *what, const char *account, const char *flow,
                       const struct store_oauth2_tokens *t, struct err *e);
int store_check_oauth2_lease(const char *account, const char *owner, int64_t lease_ms,
                             bool create, const char *flow, struct err *e);
/* store_stats_hourly: checks hours, zeroes out[] and sets each hour's start;
 * *first is the first hour's number (ms / STORE_HOUR_MS). */
int store_hours_init(int64_t now, size_t hours, struct store_hour *out, int64_t *first,
                     struct err *e);
/* store_webhook_stats: out zeroed (no latency: -1), webhook checked. */
int store_webhook_stats_init(const char *webhook, struct store_webhook_stats *out, struct err *e);
/* Whether meta asks for a duplicate check; then *since is where its window starts. */
bool store_dedupe_since(const struct store_msg_meta *meta, int64_t now, int64_t *since);
/* A new random event key (STORE_KEY_HEX hex digits and a NUL) into key. */
int store_new_event_key(char *key, struct err *e);

#endif
