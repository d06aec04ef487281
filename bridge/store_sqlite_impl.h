/*
 * store_sqlite_impl — what the files of the SQLite backend share (private
 * to bridge/store_sqlite*.c; not a public header): the handle, the cached
 * statements' ids, the calls behind include/store.h (bridge/store_impl.h's
 * table, filled in bridge/store_sqlite.c) and the helpers every file uses.
 *
 * The backend, by area:
 *   store_sqlite.c         schema, migrations, statements, transactions,
 *                          open / close, the ops table
 *   store_sqlite_msg.c     UIDLs, storing and reading messages, retention
 *   store_sqlite_dlv.c     deliveries, webhooks, the link key, events,
 *                          operators' drop and bulk retry
 *   store_sqlite_acct.c    account state and leases, instances, OAuth2
 *                          tokens, statistics
 *   store_sqlite_backup.c  backup, restore, export
 */
#ifndef POP3BRIDGE_STORE_SQLITE_IMPL_H
#define POP3BRIDGE_STORE_SQLITE_IMPL_H

#include "store_impl.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#define PATH_BYTES 4096 /* a path in the state_dir */

/* The cached statements (their text: sql_text in store_sqlite.c). */
enum sid {
    S_UIDLS_EACH,
    S_UIDL_GET,
    S_UIDL_INS_IGNORED,
    S_DELETABLE,
    S_MARK_DELETED,
    S_LISTED_CLEAR,
    S_LISTED_INS,
    S_FORGET,
    S_MSG_INS,
    S_BODY_INS,
    S_UIDL_INS_STORED,
    S_DELIV_INS,
    S_MSG_GET,
    S_BODY_LEN,
    S_DUE,
    S_DUE_WH,
    S_LEASE,
    S_RENEW,
    S_RELEASE_ALL,
    S_RELEASE_ONE,
    S_DELIV_STATUS,
    S_DELIV_UPDATE,
    S_ATTEMPT_INS,
    S_MSG_UNDELIVERED,
    S_MSG_SET_DELIVERED,
    S_UIDL_SET_DELIVERED,
    S_RETRY,
    S_DELIV_GET,
    S_ATTEMPTS,
    S_LIST_ALL,
    S_LIST_S,
    S_LIST_A,
    S_LIST_SA,
    S_COUNTS,
    S_WH_DISABLE,
    S_WH_ENABLE_ALL,
    S_WH_GET,
    S_ACC_GET,
    S_ACC_SET,
    S_ACC_LEASE,
    S_ACC_RENEW,
    S_ACC_RELEASE_ALL,
    S_ACC_GIVE_BACK,
    S_ACC_STORED,
    S_ACC_PENDING,
    S_PURGE_CLEAR,
    S_PURGE_SEL,
    S_PURGE_BODIES,
    S_PURGE_MARK,
    S_EVPURGE_SEL,
    S_EVPURGE_ATTEMPTS,
    S_EVPURGE_DELIVERIES,
    S_EVPURGE_EVENTS,
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_NEXT_DUE,
    S_OA_GET,
    S_OA_GRANT,
    S_OA_CREATE,
    S_OA_LEASE,
    S_OA_REFRESHED,
    S_OA_FAILED,
    S_OA_RELEASE,
    S_EVENT_INS,
    S_EVENT_DELIV_INS,
    S_EVENT_GET,
    S_DROP,
    S_RETRY_BULK,
    S_DUP_FIND,
    S_EVENT_LAST,
    S_WH_ATTEMPTS,
    S_WH_LATENCY,
    S_WH_LAST_ERROR,
    S_HOURLY_MSGS,
    S_HOURLY_ATTEMPTS,
    S_LINK_GET,
    S_LINK_CREATE,
    S_LINK_SET,
    S_COUNT
};

/* the calls behind include/store.h (bridge/store.c dispatches to them) */
#define SQ_DECL(ret, name, params, args) ret sq_##name params;
STORE_CALLS(SQ_DECL)
void sq_close(struct store *st);
void sq_batch_rollback(struct store *st);
int sq_body_read(struct store_body *b, uint64_t offset, void *buf, size_t len,
                 size_t *got, struct err *e);
void sq_body_close(struct store_body *b);
const char *sq_spool_dir(const struct store *st);
int sq_msg_store(struct store_msg *m, const struct store_msg_meta *meta,
                 const char *const *webhooks, size_t n_webhooks, int64_t now,
                 const char *sha_hex, int64_t *id, int64_t *dup, struct err *e);

struct store {
    struct store_hdr hdr;       /* first: store_sqlite_ops */
    sqlite3 *db;
    char path[PATH_BYTES];      /* the database file */
    char dir[PATH_BYTES];       /* state_dir, for spool files */
    sqlite3_stmt *stmt[S_COUNT];
    bool batch;                 /* store_batch_begin called */
    bool batch_tx;              /* the batch's transaction is open */
    bool batch_lost;            /* the database rolled the batch back */
};

struct store_body {
    struct store_hdr hdr;
    sqlite3 *db;
    int64_t id;
};

/* ---- helpers shared by the files (each under the file defining it) ---- */

/* store_sqlite.c */
int sq_dberr(struct store *st, struct err *e, const char *op);
sqlite3_stmt *sq_stmt(struct store *st, enum sid id, struct err *e);
void sq_done(sqlite3_stmt *s);
int sq_run(struct store *st, sqlite3_stmt *s, struct err *e, const char *op);
/* A reader of one result row into out: 0, or -1 with e. */
typedef int (*sq_row_fn)(sqlite3_stmt *s, void *out, struct err *e);
/* Step s (prepared and bound by the caller) for its first row and read(s,
 * out, e) it: 0; STORE_NOTFOUND when there is no row (read not called); -1
 * with e when the step (op names the read) or read fails.  s is reset and
 * its bindings cleared in every case.  (pq_one on PostgreSQL.) */
int sq_one(struct store *st, sqlite3_stmt *s, sq_row_fn read, void *out, struct err *e,
           const char *op);
/* sq_row_fn of an integer in column 0 into *(int64_t *)out (NULL reads 0). */
int sq_row_i64(sqlite3_stmt *s, void *out, struct err *e);
int sq_run_id(struct store *st, enum sid id, struct err *e, const char *op);
/* Run s (prepared and bound by the caller; a write) in a transaction of its
 * own (a savepoint inside a batch): 0 with the rows it changed in *changes
 * (may be NULL), or -1 with e, rolled back.  s is reset in every case. */
int sq_write(struct store *st, sqlite3_stmt *s, int64_t *changes, struct err *e, const char *op);
int sq_exec(struct store *st, const char *sql, struct err *e, const char *op);
int sq_bind_trunc(sqlite3_stmt *s, int i, const char *v, size_t max);
int sq_bind_str(sqlite3_stmt *s, int i, const char *v);
void sq_col_copy(sqlite3_stmt *s, int i, char *dst, size_t size);
int sq_tx_begin(struct store *st, struct err *e, const char *op);
int sq_tx_commit(struct store *st, struct err *e, const char *op);
void sq_tx_rollback(struct store *st);
int sq_make_dirs(const char *dir, struct err *e);
int sq_conn_setup(sqlite3 *db);

/* store_sqlite_msg.c */
int sq_body_len(struct store *st, int64_t id, uint64_t *len, struct err *e);

/* store_sqlite_dlv.c */
int sq_lease_write(struct store *st, enum sid id, const char *owner, int64_t arg,
                   int64_t *changes, struct err *e, const char *op);

#endif
