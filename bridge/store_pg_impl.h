/*
 * store_pg_impl — what the files of the PostgreSQL backend share (private
 * to bridge/store_pg*.c; not a public header): the handle, a statement's
 * parameters, the calls behind include/store.h (bridge/store_impl.h's
 * table, filled in bridge/store_pg.c) and the helpers every file uses.
 *
 * The backend, by area:
 *   store_pg.c         schema, migrations, the connection pool, statements,
 *                      transactions, setup / open / close, the ops table
 *   store_pg_msg.c     UIDLs, storing and reading messages, retention
 *   store_pg_dlv.c     deliveries, webhooks, the link key, events,
 *                      operators' drop and bulk retry
 *   store_pg_acct.c    account state and leases, instances, statistics,
 *                      OAuth2 tokens
 *   store_pg_import.c  moving a SQLite store into PostgreSQL
 */
#ifndef POP3BRIDGE_STORE_PG_IMPL_H
#define POP3BRIDGE_STORE_PG_IMPL_H

#include "store_impl.h"

#include <glib.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#define PATH_BYTES 4096                /* a path in the state_dir */
#define PQ_PARAMS_MAX 32               /* parameters of one statement */
#define PG_PIPE_MAX 32                 /* statements of one round trip (pq_pipe) */

/* the calls behind include/store.h (bridge/store.c dispatches to them) */
#define PG_DECL(ret, name, params, args) ret pg_##name params;
STORE_CALLS(PG_DECL)
void pg_close(struct store *st);
void pg_batch_rollback(struct store *st);
int pg_body_read(struct store_body *b, uint64_t offset, void *buf, size_t len, size_t *got,
                 struct err *e);
void pg_body_close(struct store_body *b);
const char *pg_spool_dir(const struct store *st);
int pg_msg_store(struct store_msg *m, const struct store_msg_meta *meta,
                 const char *const *webhooks, size_t n_webhooks, int64_t now,
                 const char *sha_hex, int64_t *id, int64_t *dup, struct err *e);

void pg_msg_store_many(struct store *st, struct store_finish *f,
                       const char (*hex)[STORE_SHA256_HEX + 1], size_t n);
int pg_delivery_record_many(struct store *st, const char *owner, struct store_record *recs,
                            size_t n, struct err *e);
int pg_msg_load(struct store *st, int64_t id, struct store_msg_info *out, size_t mem_max,
                char **body, size_t *body_len, unsigned char *link_key, int64_t now,
                struct err *e);
int pg_msg_load_many(struct store *st, struct store_loaded *l, size_t n, size_t mem_max,
                     size_t total_max, unsigned char *link_key, int64_t now, struct err *e);

/* A statement's parameters (pq_i64, pq_text, ...; freed by the call that runs it). */
struct pq {
    int n;
    const char *v[PQ_PARAMS_MAX];
    int len[PQ_PARAMS_MAX];
    int fmt[PQ_PARAMS_MAX];
    char num[PQ_PARAMS_MAX][24];
    char *owned[PQ_PARAMS_MAX];
};
/* A one-dimensional array parameter in binary form, built element by
 * element (pq_arr_*) and handed to a statement's parameters with
 * pq_arr_put: no quoting, and bodies as they are. */
#define PG_OID_BYTEA 17
#define PG_OID_INT8 20
#define PG_OID_TEXT 25
struct pq_arr {
    GByteArray *b;
    uint32_t n, oid;
    bool nulls;
};
void pq_arr_init(struct pq_arr *a, uint32_t elem_oid);
void pq_arr_null(struct pq_arr *a);
void pq_arr_i64(struct pq_arr *a, int64_t x);
void pq_arr_bin(struct pq_arr *a, const void *p, size_t len);
void pq_arr_trunc(struct pq_arr *a, const char *s, size_t max);
void pq_arr_text(struct pq_arr *a, const char *s);
void pq_arr_put(struct pq *q, struct pq_arr *a);
void pq_arr_free(struct pq_arr *a);
struct store {
    struct store_hdr hdr;       /* first: store_pg_ops */
    char dir[PATH_BYTES];       /* state_dir, for spool files */
    PGconn *bc;                 /* the batch's connection, once it wrote */
    bool batch;                 /* store_batch_begin called */
    bool batch_lost;            /* the batch's transaction failed */
    bool sp_held;               /* the last write's savepoint w is not released yet */
    /* Commands deferred to the next statement on pend_c, sent before it in
     * the same round trip (pipeline mode): BEGIN of a transaction, RELEASE
     * of the previous write's savepoint, SAVEPOINT of this write's. */
    PGconn *pend_c;
    bool pend_begin, pend_release, pend_sp;
    char sqlstate[6];           /* of the last failed statement */
};

struct store_body {
    struct store_hdr hdr;
    int64_t id;
    uint64_t size;
    uint32_t chunk_size;
    int64_t cached_seq;         /* -1: none */
    unsigned char *chunk;       /* the cached chunk */
    size_t chunk_len;
};

typedef int (*row_fn)(void *ctx, PGresult *r, struct err *e);
/* A row reader: row i of r into the struct out points to. */
typedef void (*row_read_fn)(PGresult *r, int i, void *out);

/* ---- helpers shared by the files (each under the file defining it) ---- */

/* store_pg.c */
PGconn *pg_pool_get(struct err *e);
void pg_pool_put(PGconn *c);
void pq_i64(struct pq *q, int64_t x);
void pq_null(struct pq *q);
void pq_trunc(struct pq *q, const char *s, size_t max);
void pq_text(struct pq *q, const char *s);
void pq_bin(struct pq *q, const void *p, size_t len);
void pq_free(struct pq *q);
PGresult *pq_run(struct store *st, PGconn *c, const char *sql, struct pq *q, int rfmt,
                 struct err *e, const char *op);
PGresult *pq_run2(struct store *st, PGconn *c, const char *sql1, struct pq *q1,
                  const char *sql2, struct pq *q2, struct err *e, const char *op);
PGresult *pq_pipe(struct store *st, PGconn *c, int n, const char *const *sql, struct pq *const *q,
                  int rfmt, struct err *e, const char *op);
PGresult *pq_pipe_all(struct store *st, PGconn *c, int n, const char *const *sql,
                      struct pq *const *q, int rfmt, PGresult **out_all, struct err *e,
                      const char *op);
int pq_cmd(struct store *st, PGconn *c, const char *sql, struct pq *q, int64_t *changes,
           struct err *e, const char *op);
int64_t pg_g64(PGresult *r, int row, int col);
bool pg_gbool(PGresult *r, int row, int col);
void pg_gstr(PGresult *r, int row, int col, char *dst, size_t size);
int pq_each(struct store *st, PGconn *c, const char *sql, struct pq *q, int rfmt,
            row_fn fn, void *ctx, struct err *e, const char *op);
PGconn *pg_conn_get(struct store *st, struct err *e);
void pg_conn_put(struct store *st, PGconn *c);
int pq_one(struct store *st, PGconn *c, const char *sql, struct pq *q, row_read_fn read,
           void *out, struct err *e, const char *op);
PGconn *pg_tx_begin(struct store *st, struct err *e, const char *op);
int pg_tx_commit(struct store *st, PGconn *c, struct err *e, const char *op);
void pg_tx_rollback(struct store *st, PGconn *c);

/* store_pg_msg.c */
int pg_body_info(struct store *st, PGconn *c, int64_t id, uint64_t *size, uint32_t *chunk,
                 struct err *e);

/* store_pg_dlv.c */
int pg_write1(struct store *st, const char *sql, struct pq *q, int64_t *changes,
              struct err *e, const char *op);

#endif
