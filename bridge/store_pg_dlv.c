/*
 * store_pg_dlv — the PostgreSQL store's deliveries (leases, attempts,
 * listing, drop, bulk retry), disabled webhooks, the link key and events that
 * are not messages; see bridge/store_pg_impl.h.
 */
#include "store_pg_impl.h"

#include "store.h"
#include "store_impl.h"

#include <errno.h>
#include <glib.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "spool.h"

/* ---- deliveries -------------------------------------------------------- */

#define D_FIELDS                                                                        \
    "d.id, coalesce(d.message_id, 0), d.account, coalesce(m.uidl, ''), d.webhook,"     \
    " d.status, d.attempts, d.created_at, d.updated_at, d.next_attempt_at,"            \
    " d.delivered_at, d.last_http_status, d.last_error,"                               \
    " coalesce(m.event_key, ev.event_key), d.lease_owner, d.lease_until,"              \
    " coalesce(d.event_id, 0), coalesce(ev.type, '')"
/* a delivery is of a message or of an event (schema 7) */
#define D_JOINS                                                                         \
    "LEFT JOIN messages m ON m.id = d.message_id LEFT JOIN events ev ON ev.id = d.event_id "
#define D_COLS "SELECT " D_FIELDS " FROM deliveries d " D_JOINS

static void delivery_row(PGresult *r, int i, void *p)
{
    struct store_delivery *d = p;
    memset(d, 0, sizeof *d);
    d->id = pg_g64(r, i, 0);
    d->msg_id = pg_g64(r, i, 1);
    pg_gstr(r, i, 2, d->account, sizeof d->account);
    pg_gstr(r, i, 3, d->uidl, sizeof d->uidl);
    pg_gstr(r, i, 4, d->webhook, sizeof d->webhook);
    d->status = (enum store_dstatus)pg_g64(r, i, 5);
    d->attempts = (int)pg_g64(r, i, 6);
    d->created_at = pg_g64(r, i, 7);
    d->updated_at = pg_g64(r, i, 8);
    d->next_attempt_at = pg_g64(r, i, 9);
    d->delivered_at = pg_g64(r, i, 10);
    d->last_http_status = (int)pg_g64(r, i, 11);
    pg_gstr(r, i, 12, d->last_error, sizeof d->last_error);
    pg_gstr(r, i, 13, d->msg_key, sizeof d->msg_key);
    pg_gstr(r, i, 14, d->lease_owner, sizeof d->lease_owner);
    d->lease_until = pg_g64(r, i, 15);
    d->event_id = pg_g64(r, i, 16);
    pg_gstr(r, i, 17, d->event_type, sizeof d->event_type);
}

/* The lease: due deliveries (`which`: of any webhook, or of webhook $5)
 * locked, SKIP LOCKED (rows another instance is leasing right now are not
 * waited for, nor taken twice), leased and returned.  A statement of its own
 * for each form, so each keeps a plan on its own index. */
#define LEASE_SQL(which)                                                                  \
    "WITH due AS (SELECT id FROM deliveries"                                               \
    "   WHERE status IN (0, 2) AND next_attempt_at <= $1 AND lease_until <= $1" which       \
    "   AND webhook NOT IN (SELECT name FROM webhooks_disabled)"                           \
    "   ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED),"                    \
    " d AS (UPDATE deliveries x SET lease_owner = $3, lease_until = $4"                    \
    "   FROM due WHERE x.id = due.id RETURNING x.*)"                                       \
    " SELECT " D_FIELDS " FROM d " D_JOINS " ORDER BY d.next_attempt_at, d.id"
static const char LEASE_ANY_SQL[] = LEASE_SQL("");
static const char LEASE_WEBHOOK_SQL[] = LEASE_SQL(" AND webhook = $5::text");

int pg_delivery_lease_due(struct store *st, const char *owner, const char *webhook,
                          int64_t now, int64_t lease_ms, struct store_delivery *out,
                          size_t max, size_t *n, struct err *e)
{
    *n = 0;
    if (store_check_lease_due(owner, webhook, lease_ms, max, e) < 0)
        return -1;
    if (max == 0)
        return 0;
    const char *op = "lease due deliveries";
    /* one statement: on its own outside a batch (no BEGIN / COMMIT) */
    PGconn *c = st->batch ? pg_tx_begin(st, e, op) : pg_pool_get(e);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_i64(&q, now);
    pq_i64(&q, (int64_t)max);
    pq_text(&q, owner);
    pq_i64(&q, now + lease_ms);
    if (webhook)
        pq_text(&q, webhook);
    PGresult *r = pq_run(st, c, webhook ? LEASE_WEBHOOK_SQL : LEASE_ANY_SQL, &q, 0, e, op);
    if (!st->batch) {
        pg_pool_put(c);
        if (!r)
            return -1;
    } else if (!r || pg_tx_commit(st, c, e, op) < 0) {
        PQclear(r);
        pg_tx_rollback(st, c);
        return -1;
    }
    int k = PQntuples(r);
    for (int i = 0; i < k && (size_t)i < max; i++)
        delivery_row(r, i, &out[i]);
    *n = (size_t)k;
    PQclear(r);
    return 0;
}

/* One write statement: on its own (a statement is atomic: no BEGIN and
 * COMMIT round trips), or in the batch. */
int pg_write1(struct store *st, const char *sql, struct pq *q, int64_t *changes,
              struct err *e, const char *op)
{
    if (!st->batch) {
        PGconn *c = pg_pool_get(e);
        int r = c ? pq_cmd(st, c, sql, q, changes, e, op) : (pq_free(q), -1);
        pg_pool_put(c);
        return r;
    }
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c) {
        pq_free(q);
        return -1;
    }
    int64_t ch = 0;
    if (pq_cmd(st, c, sql, q, &ch, e, op) < 0 || pg_tx_commit(st, c, e, op) < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    if (changes)
        *changes = ch;
    return 0;
}

int pg_delivery_renew(struct store *st, const char *owner, int64_t now, int64_t lease_ms,
                      int64_t *renewed, struct err *e)
{
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: renew leases: lease_ms must be positive");
    if (store_check_owner(owner, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, owner);
    pq_i64(&q, now + lease_ms);
    /* only due rows are leased (recording, retrying and dropping release):
     * their partial index finds them, the lease owner has none (schema 9) */
    return pg_write1(st,
                     "UPDATE deliveries SET lease_until = $2 WHERE lease_owner = $1"
                     " AND status IN (0, 2)",
                     &q, renewed, e, "renew delivery leases");
}

int pg_delivery_release(struct store *st, const char *owner, int64_t id,
                        int64_t *released, struct err *e)
{
    if (store_check_owner(owner, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, owner);
    pq_i64(&q, id);
    return pg_write1(st,
                  "UPDATE deliveries SET lease_owner = NULL, lease_until = 0"
                  " WHERE lease_owner = $1 AND status IN (0, 2) AND ($2 = 0 OR id = $2)",
                  &q, released, e, "release delivery leases");
}

/* When none of message msg_id's deliveries is left to do (each delivered
 * or dropped): the message delivered at `end`, its UIDL "delivered".  The
 * message row is locked (delivery_lock): the last delivery of a message to
 * be recorded sees every other one's outcome.  An event's delivery (msg_id
 * 0) has no message. */
static int msg_maybe_delivered(struct store *st, PGconn *c, int64_t msg_id, int64_t end,
                               struct err *e, const char *op)
{
    if (msg_id <= 0)
        return 0;
    struct pq q = {0};
    pq_i64(&q, msg_id);
    pq_i64(&q, end);
    if (pq_cmd(st, c,
               "UPDATE messages SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL"
               " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = $1"
               "   AND status NOT IN (1, 4))",
               &q, NULL, e, op) < 0)
        return -1;
    pq_i64(&q, msg_id);
    return pq_cmd(st, c,
                  "UPDATE uidls SET state = 2 WHERE message_id = $1 AND state = 1"
                  " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE message_id = $1"
                  "   AND status NOT IN (1, 4))",
                  &q, NULL, e, op);
}

/* Outcomes, one or a group, in one round trip of two statements: their
 * messages' rows locked first, in id order (as storing and purging take
 * them: the last delivery of a message to be recorded sees every other
 * one's outcome), then one statement over arrays ($1..$11 one element per
 * outcome, $12 the owner): each delivery's row updated unless its outcome
 * came too late (settled meanwhile, or another owner holds a live lease:
 * re-checked on the row's newest version when the update waited for its
 * lock), its attempt kept either way, and each message with a delivery
 * delivered here whose other deliveries are all delivered or dropped (here,
 * or before) delivered at the latest end among them and its UIDL
 * "delivered" (as msg_maybe_delivered).  One row per outcome: its
 * position, whether its delivery exists and whether it was updated. */
static const char RECORD_LOCK_SQL[] =
    "SELECT 1 FROM messages WHERE id IN (SELECT message_id FROM deliveries"
    " WHERE id = ANY($1::bigint[])) ORDER BY id FOR UPDATE";
static const char RECORD_SQL[] =
    "WITH r AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],"
    "   $5::bigint[], $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::text[],"
    "   $11::bigint[]) WITH ORDINALITY AS r(id, status, next_at, fin, delivered_at, http,"
    "   error, started, duration, outcome, ok, k)),"
    " cur AS (SELECT r.k FROM r JOIN deliveries x ON x.id = r.id),"
    " d AS (UPDATE deliveries x SET status = r.status::smallint,"
    "   attempts = x.attempts + 1, next_attempt_at = r.next_at,"
    "   updated_at = r.fin, delivered_at = r.delivered_at,"
    "   last_http_status = r.http::integer, last_error = r.error,"
    "   lease_owner = NULL, lease_until = 0 FROM r WHERE x.id = r.id AND x.status IN (0, 2)"
    "   AND NOT (coalesce(x.lease_owner, '') NOT IN ('', $12::text) AND x.lease_until > r.fin)"
    "   RETURNING r.k, x.id, r.status AS now_status, coalesce(x.message_id, 0) AS mid, r.ok,"
    "   r.fin),"
    " a AS (INSERT INTO attempts(delivery_id, started_at, duration_ms, http_status,"
    "   error, outcome) SELECT r.id, r.started, r.duration, r.http::integer, r.error,"
    "   r.outcome FROM r JOIN cur ON cur.k = r.k ORDER BY r.k),"
    " done AS (SELECT d.mid, max(d.fin) AS at FROM d WHERE d.ok = 1 AND d.mid > 0"
    "   AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.message_id = d.mid"
    "     AND o.status NOT IN (1, 4)"
    "     AND NOT EXISTS (SELECT 1 FROM d s WHERE s.id = o.id AND s.now_status IN (1, 4)))"
    "   GROUP BY d.mid),"
    " m AS (UPDATE messages SET delivered_at = done.at FROM done WHERE messages.id = done.mid"
    "   AND messages.delivered_at IS NULL),"
    " u AS (UPDATE uidls SET state = 2 FROM done WHERE uidls.message_id = done.mid"
    "   AND uidls.state = 1)"
    " SELECT r.k, (SELECT count(*) FROM cur WHERE cur.k = r.k),"
    "   (SELECT count(*) FROM d WHERE d.k = r.k) FROM r ORDER BY r.k";

enum { REC_ID, REC_STATUS, REC_NEXT, REC_END, REC_DELIVERED, REC_HTTP, REC_ERROR, REC_STARTED,
       REC_DURATION, REC_OUTCOME, REC_OK, REC_ARRAYS };

/* The parameters of RECORD_LOCK_SQL (lq) and RECORD_SQL (q) for recs[0..n). */
static void record_params(struct pq *lq, struct pq *q, const char *owner,
                          const struct store_record *recs, size_t n)
{
    struct pq_arr a[REC_ARRAYS], ids;
    for (int i = 0; i < REC_ARRAYS; i++)
        pq_arr_init(&a[i], i == REC_ERROR || i == REC_OUTCOME ? PG_OID_TEXT : PG_OID_INT8);
    pq_arr_init(&ids, PG_OID_INT8);
    for (size_t i = 0; i < n; i++) {
        const struct store_attempt *at = &recs[i].a;
        enum store_dstatus status = recs[i].status;
        int64_t end = at->started_at + (at->duration_ms > 0 ? at->duration_ms : 0);
        pq_arr_i64(&ids, recs[i].id);
        pq_arr_i64(&a[REC_ID], recs[i].id);
        pq_arr_i64(&a[REC_STATUS], status);
        pq_arr_i64(&a[REC_NEXT], status == STORE_D_FAILED ? recs[i].next_attempt_at : 0);
        pq_arr_i64(&a[REC_END], end);
        pq_arr_i64(&a[REC_DELIVERED], status == STORE_D_DELIVERED ? end : 0);
        pq_arr_i64(&a[REC_HTTP], at->http_status);
        pq_arr_trunc(&a[REC_ERROR], at->error ? at->error : "", STORE_ERROR_MAX);
        pq_arr_i64(&a[REC_STARTED], at->started_at);
        pq_arr_i64(&a[REC_DURATION], at->duration_ms);
        pq_arr_text(&a[REC_OUTCOME], at->outcome ? at->outcome : store_dstatus_name(status));
        pq_arr_i64(&a[REC_OK], status == STORE_D_DELIVERED ? 1 : 0);
    }
    pq_arr_put(lq, &ids);
    for (int i = 0; i < REC_ARRAYS; i++)
        pq_arr_put(q, &a[i]);
    pq_text(q, owner); /* $12 */
}

/* RECORD_SQL's answer for its row'th outcome: 0, STORE_LEASE_LOST or
 * STORE_NOTFOUND. */
static int record_result(PGresult *r, int row)
{
    return pg_g64(r, row, 1) == 0 ? STORE_NOTFOUND : pg_g64(r, row, 2) == 0 ? STORE_LEASE_LOST : 0;
}

static int record_tx(struct store *st, PGconn *c, int64_t id, const char *owner,
                     const struct store_attempt *a, enum store_dstatus status,
                     int64_t next_attempt_at, struct err *e)
{
    struct store_record rec = {.id = id, .a = *a, .status = status,
                               .next_attempt_at = next_attempt_at};
    struct pq lq = {0}, q = {0};
    record_params(&lq, &q, owner, &rec, 1);
    PGresult *r = pq_run2(st, c, RECORD_LOCK_SQL, &lq, RECORD_SQL, &q, e,
                          "record delivery attempt");
    if (!r)
        return -1;
    int rv = PQntuples(r) == 1 ? record_result(r, 0)
                               : err_set(e, ERR_INTERNAL, "store: record delivery attempt:"
                                                          " %d rows for one outcome",
                                         PQntuples(r));
    PQclear(r);
    return rv;
}

/* Lock delivery id and its message; read its status and lease.  0,
 * STORE_NOTFOUND or -1. */
static int delivery_lock(struct store *st, PGconn *c, int64_t id, enum store_dstatus *status,
                         int64_t *msg_id, char *owner, int64_t *until, struct err *e)
{
    struct pq q = {0}, q2 = {0};
    pq_i64(&q, id);
    pq_i64(&q2, id);
    /* the message first, as storing and purging take it; an event's
     * delivery has none (the outer join's nullable side cannot be locked in
     * the same statement); both statements in one round trip */
    PGresult *r = pq_run2(st, c,
                          "SELECT 1 FROM messages WHERE id = (SELECT message_id FROM deliveries"
                          " WHERE id = $1) FOR UPDATE",
                          &q,
                          "SELECT status, coalesce(message_id, 0), lease_owner, lease_until"
                          " FROM deliveries WHERE id = $1 FOR UPDATE",
                          &q2, e, "get delivery status");
    if (!r)
        return -1;
    int rv = STORE_NOTFOUND;
    if (PQntuples(r) > 0) {
        *status = (enum store_dstatus)pg_g64(r, 0, 0);
        *msg_id = pg_g64(r, 0, 1);
        if (owner)
            pg_gstr(r, 0, 2, owner, STORE_OWNER_MAX + 1);
        if (until)
            *until = pg_g64(r, 0, 3);
        rv = 0;
    }
    PQclear(r);
    return rv;
}

int pg_delivery_record(struct store *st, const char *owner, int64_t id,
                       const struct store_attempt *a, enum store_dstatus status,
                       int64_t next_attempt_at, struct err *e)
{
    if (store_check_record(owner, a, status, e) < 0)
        return -1;
    const char *op = "record delivery attempt";
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    int r = record_tx(st, c, id, owner, a, status, next_attempt_at, e);
    if (r >= 0 && r != STORE_NOTFOUND) {
        if (pg_tx_commit(st, c, e, op) < 0) {
            pg_tx_rollback(st, c);
            return -1;
        }
        return r;
    }
    pg_tx_rollback(st, c);
    return r;
}

#define RECORD_GROUP 256 /* outcomes in one statement (DELIVERY_FLUSH_MAX) */

/* Whether recs[0..n) name a delivery twice (then they are recorded one
 * after the other, each seeing the one before). */
static bool record_twice(const struct store_record *recs, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (recs[i].id == recs[j].id)
                return true;
    return false;
}

/* Each of recs[0..n) recorded as by pg_delivery_record, all in one round
 * trip of two statements, under one savepoint (the batch's write). */
static void record_group(struct store *st, const char *owner, struct store_record *recs,
                         size_t n)
{
    const char *op = "record delivery attempt";
    struct err e;
    err_clear(&e);
    PGconn *c = record_twice(recs, n) ? NULL : pg_tx_begin(st, &e, op);
    PGresult *r = NULL;
    if (c) {
        struct pq lq = {0}, q = {0};
        record_params(&lq, &q, owner, recs, n);
        r = pq_run2(st, c, RECORD_LOCK_SQL, &lq, RECORD_SQL, &q, &e, op);
    }
    if (r && (size_t)PQntuples(r) == n && pg_tx_commit(st, c, &e, op) == 0) {
        for (size_t i = 0; i < n; i++)
            recs[i].result = record_result(r, (int)i);
        /* (STORE_NOTFOUND wrote nothing: no savepoint of its own needed) */
        PQclear(r);
        return;
    }
    PQclear(r);
    /* one failed (or the round trip did): the group undone, each again on its own */
    if (c)
        pg_tx_rollback(st, c);
    for (size_t i = 0; i < n; i++) {
        err_clear(&recs[i].err);
        recs[i].result = pg_delivery_record(st, owner, recs[i].id, &recs[i].a, recs[i].status,
                                            recs[i].next_attempt_at, &recs[i].err);
    }
}

int pg_delivery_record_many(struct store *st, const char *owner, struct store_record *recs,
                            size_t n, struct err *e)
{
    (void)e;
    size_t i = 0;
    while (i < n) {
        /* outside a batch, and an outcome the checks refuse: one by one */
        struct err ce;
        if (!st->batch || store_check_record(owner, &recs[i].a, recs[i].status, &ce) < 0) {
            err_clear(&recs[i].err);
            recs[i].result = pg_delivery_record(st, owner, recs[i].id, &recs[i].a,
                                                recs[i].status, recs[i].next_attempt_at,
                                                &recs[i].err);
            i++;
            continue;
        }
        size_t k = 1;
        while (i + k < n && k < RECORD_GROUP &&
               store_check_record(owner, &recs[i + k].a, recs[i + k].status, &ce) == 0)
            k++;
        for (size_t j = i; j < i + k; j++)
            err_clear(&recs[j].err);
        if (k == 1)
            recs[i].result = pg_delivery_record(st, owner, recs[i].id, &recs[i].a,
                                                recs[i].status, recs[i].next_attempt_at,
                                                &recs[i].err);
        else
            record_group(st, owner, recs + i, k);
        i += k;
    }
    return 0;
}

int pg_delivery_retry(struct store *st, int64_t id, int64_t now, struct err *e)
{
    const char *op = "retry delivery";
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    enum store_dstatus cur = STORE_D_PENDING;
    int64_t msg_id = 0;
    uint64_t len;
    int r = delivery_lock(st, c, id, &cur, &msg_id, NULL, NULL, e);
    if (r == 0)
        r = store_check_settled("retry", "retried", id, cur, e);
    if (r == 0 && msg_id > 0) {
        int b = pg_body_info(st, c, msg_id, &len, NULL, e);
        if (b == STORE_NOTFOUND)
            r = store_err_body_purged(id, e);
        else
            r = b;
    }
    if (r == 0) {
        struct pq q = {0};
        pq_i64(&q, id);
        pq_i64(&q, now);
        r = pq_cmd(st, c,
                   "UPDATE deliveries SET status = 0, next_attempt_at = $2, updated_at = $2,"
                   " lease_owner = NULL, lease_until = 0 WHERE id = $1",
                   &q, NULL, e, op);
    }
    if (r == 0 && pg_tx_commit(st, c, e, op) == 0)
        return 0;
    pg_tx_rollback(st, c);
    return r == 0 ? -1 : r;
}

struct attempt_rows {
    store_attempt_cb cb;
    void *ctx;
};

/* An attempt (started_at, duration_ms, http_status, error, outcome); its
 * strings point into r. */
static void attempt_read(PGresult *r, int i, void *p)
{
    struct store_attempt_row *row = p;
    memset(row, 0, sizeof *row);
    row->started_at = pg_g64(r, i, 0);
    row->duration_ms = pg_g64(r, i, 1);
    row->http_status = (int)pg_g64(r, i, 2);
    row->error = PQgetvalue(r, i, 3);
    row->outcome = PQgetvalue(r, i, 4);
}

static int attempt_row(void *ctx, PGresult *r, struct err *e)
{
    struct attempt_rows *a = ctx;
    struct store_attempt_row row;
    attempt_read(r, 0, &row);
    return a->cb(a->ctx, &row, e);
}

int pg_delivery_get(struct store *st, int64_t id, struct store_delivery *out,
                    store_attempt_cb cb, void *ctx, struct err *e)
{
    err_clear(e);
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    /* one snapshot: the delivery and its attempts agree */
    bool own_tx = c != st->bc;
    if (own_tx && pq_cmd(st, c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, NULL, e,
                         "get delivery") < 0) {
        pg_conn_put(st, c);
        return -1;
    }
    struct pq q = {0};
    pq_i64(&q, id);
    int rv = pq_one(st, c, D_COLS "WHERE d.id = $1", &q, delivery_row, out, e, "get delivery");
    if (rv == 0 && cb) {
        pq_i64(&q, id);
        struct attempt_rows a = {cb, ctx};
        rv = pq_each(st, c,
                     "SELECT started_at, duration_ms, http_status, error, outcome FROM attempts"
                     " WHERE delivery_id = $1 ORDER BY id",
                     &q, 0, attempt_row, &a, e, "get delivery attempts");
    }
    if (own_tx) {
        PGresult *x = PQexec(c, "COMMIT");
        PQclear(x);
    }
    pg_conn_put(st, c);
    return rv;
}

struct list_rows {
    store_delivery_cb cb;
    void *ctx;
    size_t limit, k;
    int64_t last;
    char *next_cursor;
};

static int list_row(void *ctx, PGresult *r, struct err *e)
{
    struct list_rows *l = ctx;
    if (l->k == l->limit) {
        char tmp[STORE_CURSOR_MAX];
        int n = snprintf(tmp, sizeof tmp, "c%" PRId64, l->last);
        if (n > 0 && (size_t)n < sizeof tmp)
            memcpy(l->next_cursor, tmp, (size_t)n + 1);
        return 0;
    }
    struct store_delivery d;
    delivery_row(r, 0, &d);
    l->last = d.id;
    l->k++;
    return l->cb(l->ctx, &d, e);
}

int pg_delivery_list(struct store *st, const enum store_dstatus *status,
                     const char *account, size_t limit, const char *cursor,
                     store_delivery_cb cb, void *ctx, char *next_cursor, struct err *e)
{
    int64_t before = INT64_MAX;
    if (store_check_list(status, account, limit, cursor, next_cursor, &before, e) < 0)
        return -1;
    /* one statement per filter combination, so each uses its index; the
     * indexes by status leave delivered rows out (schema 9): a filter on
     * another status says so, one on delivered walks the id's order */
    static const char *const sql[6] = {
        D_COLS "WHERE d.id < $1 ORDER BY d.id DESC LIMIT $2",
        D_COLS "WHERE d.status = $3 AND d.status <> 1 AND d.id < $1 ORDER BY d.id DESC LIMIT $2",
        D_COLS "WHERE d.account = $3 AND d.id < $1 ORDER BY d.id DESC LIMIT $2",
        D_COLS "WHERE d.account = $3 AND d.status = $4 AND d.status <> 1 AND d.id < $1"
               " ORDER BY d.id DESC LIMIT $2",
        D_COLS "WHERE d.status = 1 AND d.id < $1 ORDER BY d.id DESC LIMIT $2",
        D_COLS "WHERE d.account = $3 AND d.status = 1 AND d.id < $1"
               " ORDER BY d.id DESC LIMIT $2",
    };
    _Static_assert(STORE_D_DELIVERED == 1, "the statements' delivered status");
    bool delivered = status && *status == STORE_D_DELIVERED;
    struct pq q = {0};
    pq_i64(&q, before);
    pq_i64(&q, (int64_t)limit + 1); /* one more tells whether there is a next page */
    if (account)
        pq_text(&q, account);
    if (status && !delivered)
        pq_i64(&q, *status);
    PGconn *c = pg_conn_get(st, e);
    if (!c) {
        pq_free(&q);
        return -1;
    }
    struct list_rows l = {cb, ctx, limit, 0, 0, next_cursor};
    int r = pq_each(st, c, sql[delivered ? 4 + (account ? 1 : 0)
                                         : (status ? 1 : 0) + (account ? 2 : 0)],
                    &q, 0, list_row, &l, e,
                    "list deliveries");
    pg_conn_put(st, c);
    if (r < 0)
        next_cursor[0] = '\0';
    return r;
}

int pg_delivery_counts(struct store *st, struct store_queue_counts *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    PGresult *r = pq_run(st, c, "SELECT status, count(*) FROM deliveries GROUP BY status", NULL, 0,
                         e, "count deliveries");
    pg_conn_put(st, c);
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t n = pg_g64(r, i, 1);
        switch (pg_g64(r, i, 0)) {
        case STORE_D_PENDING: out->pending = n; break;
        case STORE_D_DELIVERED: out->delivered = n; break;
        case STORE_D_FAILED: out->failed = n; break;
        case STORE_D_DEAD: out->dead = n; break;
        case STORE_D_DROPPED: out->dropped = n; break;
        default: break;
        }
    }
    PQclear(r);
    return 0;
}

int pg_delivery_next_due(struct store *st, int64_t now, int64_t *at, struct err *e)
{
    *at = 0;
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_i64(&q, now);
    PGresult *r = pq_run(st, c,
                         "SELECT min(greatest(next_attempt_at, CASE WHEN lease_until > $1"
                         " THEN lease_until ELSE 0 END)) FROM deliveries"
                         " WHERE status IN (0, 2)"
                         " AND webhook NOT IN (SELECT name FROM webhooks_disabled)",
                         &q, 0, e, "next due delivery");
    pg_conn_put(st, c);
    if (!r)
        return -1;
    *at = pg_g64(r, 0, 0);
    PQclear(r);
    return 0;
}

/* ---- webhooks ---------------------------------------------------------- */

int pg_webhook_disable(struct store *st, const char *webhook, const char *reason,
                       int64_t now, struct err *e)
{
    if (store_check_name("webhook", webhook, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, webhook);
    pq_trunc(&q, reason ? reason : "", STORE_ERROR_MAX);
    pq_i64(&q, now);
    return pg_write1(st,
                  "INSERT INTO webhooks_disabled(name, reason, since) VALUES ($1, $2, $3)"
                  " ON CONFLICT (name) DO NOTHING",
                  &q, NULL, e, "disable webhook");
}

int pg_webhooks_enable_all(struct store *st, struct err *e)
{
    struct pq q = {0};
    return pg_write1(st, "DELETE FROM webhooks_disabled", &q, NULL, e, "enable webhooks");
}

int pg_webhook_disabled(struct store *st, const char *webhook, bool *disabled,
                        int64_t *since, struct err *e)
{
    if (store_check_name("webhook", webhook, e) < 0)
        return -1;
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_text(&q, webhook);
    PGresult *r = pq_run(st, c, "SELECT since FROM webhooks_disabled WHERE name = $1", &q, 0, e,
                         "get webhook state");
    pg_conn_put(st, c);
    if (!r)
        return -1;
    *disabled = PQntuples(r) > 0;
    if (since)
        *since = *disabled ? pg_g64(r, 0, 0) : 0;
    PQclear(r);
    return 0;
}

/* ---- the link key --------------------------------------------------------------- */

/* 0 with *found, or -1. */
static int link_key_read(struct store *st, PGconn *c, unsigned char *key, int64_t *created_at,
                         bool *found, struct err *e)
{
    *found = false;
    PGresult *r = pq_run(st, c, "SELECT key, created_at FROM link_key WHERE id = 1", NULL, 0, e,
                         "get the link key");
    if (!r)
        return -1;
    int rv = 0;
    if (PQntuples(r) > 0) {
        size_t n = 0;
        unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 0), &n);
        if (b && n == STORE_LINK_KEY_LEN) {
            memcpy(key, b, n);
            if (created_at)
                *created_at = pg_g64(r, 0, 1);
            *found = true;
        } else {
            rv = err_set(e, ERR_INTERNAL, "store: the link key in PostgreSQL %s is not %d bytes",
                         store_pg_target_name(), STORE_LINK_KEY_LEN);
        }
        if (b) {
            OPENSSL_cleanse(b, n);
            PQfreemem(b);
        }
    }
    PQclear(r);
    return rv;
}

/* A new random key: only if there is none (rotate false), or replacing it. */
static int link_key_write(struct store *st, bool rotate, int64_t now, struct err *e)
{
    unsigned char key[STORE_LINK_KEY_LEN];
    const char *op = rotate ? "rotate the link key" : "create the link key";
    if (RAND_bytes(key, sizeof key) != 1)
        return err_set(e, ERR_INTERNAL, "store: %s: no random bytes", op);
    struct pq q = {0};
    pq_bin(&q, key, sizeof key);
    pq_i64(&q, now);
    int r = pg_write1(st,
                   rotate ? "INSERT INTO link_key(id, key, created_at) VALUES (1, $1, $2)"
                            " ON CONFLICT (id) DO UPDATE SET key = excluded.key,"
                            " created_at = excluded.created_at"
                          : "INSERT INTO link_key(id, key, created_at) VALUES (1, $1, $2)"
                            " ON CONFLICT (id) DO NOTHING",
                   &q, NULL, e, op);
    OPENSSL_cleanse(key, sizeof key);
    return r;
}

int pg_link_key(struct store *st, unsigned char key[STORE_LINK_KEY_LEN],
                int64_t *created_at, int64_t now, struct err *e)
{
    if (!key)
        return err_set(e, ERR_USAGE, "store: link key: no store or buffer");
    bool found = false;
    PGconn *c = pg_conn_get(st, e);
    int r = c ? link_key_read(st, c, key, created_at, &found, e) : -1;
    pg_conn_put(st, c);
    if (r < 0)
        return -1;
    if (found)
        return 0;
    /* first use: whoever inserts first wins, everyone reads that one */
    if (link_key_write(st, false, now, e) < 0)
        return -1;
    c = pg_conn_get(st, e);
    r = c ? link_key_read(st, c, key, created_at, &found, e) : -1;
    pg_conn_put(st, c);
    if (r < 0)
        return -1;
    return found ? 0 : err_set(e, ERR_INTERNAL, "store: the link key vanished after it was made");
}

int pg_link_key_rotate(struct store *st, int64_t now, struct err *e)
{
    return link_key_write(st, true, now, e);
}

/* ---- events that are not messages (schema 7) ------------------------------------ */

#define PG_EVENT_LOCK 0x65766e74 /* advisory lock class of store_account_event_once ("evnt") */

static int event_insert(struct store *st, PGconn *c, const char *account, const char *type,
                        const char *data, const char *const *webhooks, size_t n, int64_t now,
                        int64_t *id_out, struct err *e)
{
    const char *op = "add event";
    char key[STORE_KEY_HEX + 1];
    if (store_new_event_key(key, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    pq_text(&q, type);
    pq_text(&q, data);
    pq_i64(&q, now);
    pq_text(&q, key);
    PGresult *r = pq_run(st, c,
                         "INSERT INTO events(account, type, data, created_at, event_key)"
                         " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                         &q, 0, e, op);
    if (!r)
        return -1;
    int64_t id = pg_g64(r, 0, 0);
    PQclear(r);
    for (size_t i = 0; i < n; i++) {
        pq_i64(&q, id);
        pq_text(&q, account);
        pq_text(&q, webhooks[i]);
        pq_i64(&q, now);
        if (pq_cmd(st, c,
                   "INSERT INTO deliveries(event_id, account, webhook, status, attempts,"
                   " next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, 0, 0, $4, $4, $4)",
                   &q, NULL, e, op) < 0)
            return -1;
    }
    *id_out = id;
    return 0;
}

int pg_event_add(struct store *st, const char *account, const char *type,
                 const char *data, const char *const *webhooks, size_t n_webhooks,
                 int64_t now, int64_t *id, struct err *e)
{
    const char *op = "add event";
    int64_t got = 0;
    if (store_check_event(account, type, data, webhooks, n_webhooks, e) < 0)
        return -1;
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    if (event_insert(st, c, account, type, data, webhooks, n_webhooks, now, &got, e) < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    if (pg_tx_commit(st, c, e, op) < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    if (id)
        *id = got;
    return 0;
}

int pg_account_event_once(struct store *st, const char *account, const char *type,
                          const char *data, const char *const *webhooks,
                          size_t n_webhooks, int64_t now, int64_t *event_id,
                          struct err *e)
{
    const char *op = "add account event";
    if (event_id)
        *event_id = 0;
    if (store_check_event(account, type, data, webhooks, n_webhooks, e) < 0)
        return -1;
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    /* instances racing for the same account and type wait for each other
     * here (until the transaction ends): the one after sees the event */
    struct pq q = {0};
    pq_i64(&q, PG_EVENT_LOCK);
    pq_text(&q, account);
    pq_text(&q, type);
    int r = pq_cmd(st, c, "SELECT pg_advisory_xact_lock($1::int, hashtext($2 || '/' || $3))", &q,
                   NULL, e, op);
    int64_t got = 0;
    PGresult *res = NULL;
    if (r == 0) {
        pq_text(&q, account);
        pq_text(&q, type);
        /* none yet (-1), or none since the account's last success (0: never) */
        res = pq_run(st, c,
                     "SELECT coalesce((SELECT max(created_at) FROM events"
                     "   WHERE account = $1 AND type = $2), -1)"
                     " < coalesce((SELECT last_success_at FROM accounts WHERE name = $1), 0)",
                     &q, 0, e, op);
        r = res ? 0 : -1;
    }
    bool due = res && PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (r == 0 && due)
        r = event_insert(st, c, account, type, data, webhooks, n_webhooks, now, &got, e);
    if (r < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    if (pg_tx_commit(st, c, e, op) < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    if (event_id)
        *event_id = got;
    return 0;
}

/* An event row (id, account, type, data, created_at, event_key); its data
 * copied (malloc) into *data when data is not NULL. */
struct event_read {
    struct store_event *out;
    char **data;
    bool oom;
};

static void event_row(PGresult *r, int i, void *p)
{
    struct event_read *ev = p;
    struct store_event *out = ev->out;
    memset(out, 0, sizeof *out);
    out->id = pg_g64(r, i, 0);
    pg_gstr(r, i, 1, out->account, sizeof out->account);
    pg_gstr(r, i, 2, out->type, sizeof out->type);
    out->created_at = pg_g64(r, i, 4);
    pg_gstr(r, i, 5, out->key, sizeof out->key);
    if (ev->data && !(*ev->data = strdup(PQgetisnull(r, i, 3) ? "{}" : PQgetvalue(r, i, 3))))
        ev->oom = true;
}

int pg_event_get(struct store *st, int64_t id, struct store_event *out, char **data,
                 struct err *e)
{
    if (data)
        *data = NULL;
    struct pq q = {0};
    pq_i64(&q, id);
    struct event_read ev = {out, data, false};
    int rv = pq_one(st, NULL,
                    "SELECT id, account, type, data, created_at, event_key FROM events"
                    " WHERE id = $1",
                    &q, event_row, &ev, e, "get event");
    if (rv == 0 && ev.oom)
        return err_set(e, ERR_INTERNAL, "store: out of memory reading event data");
    return rv;
}

/* ---- operators: drop, retry in bulk -------------------------------------------- */

int pg_delivery_drop(struct store *st, int64_t id, int64_t now, struct err *e)
{
    const char *op = "drop delivery";
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    enum store_dstatus cur = STORE_D_PENDING;
    int64_t msg_id = 0;
    int r = delivery_lock(st, c, id, &cur, &msg_id, NULL, NULL, e);
    if (r == 0)
        r = store_check_settled("drop", "dropped", id, cur, e);
    if (r == 0) {
        struct pq q = {0};
        pq_i64(&q, id);
        pq_i64(&q, now);
        r = pq_cmd(st, c,
                   "UPDATE deliveries SET status = 4, updated_at = $2, next_attempt_at = 0,"
                   " lease_owner = NULL, lease_until = 0 WHERE id = $1",
                   &q, NULL, e, op);
    }
    if (r == 0)
        r = msg_maybe_delivered(st, c, msg_id, now, e, op);
    if (r == 0 && pg_tx_commit(st, c, e, op) == 0)
        return 0;
    pg_tx_rollback(st, c);
    return r == 0 ? -1 : r;
}

int pg_delivery_retry_bulk(struct store *st, const char *webhook,
                           enum store_dstatus status, size_t max, int64_t now,
                           int64_t *retried, struct err *e)
{
    const char *op = "retry deliveries";
    if (retried)
        *retried = 0;
    if (store_check_retry_bulk(webhook, status, max, e) < 0)
        return -1;
    struct pq q = {0};
    pq_i64(&q, now);
    pq_i64(&q, status);
    if (webhook)
        pq_text(&q, webhook);
    else
        pq_null(&q);
    pq_i64(&q, (int64_t)max);
    /* rows another instance is recording right now are left to it */
    return pg_write1(st,
                  "UPDATE deliveries SET status = 0, next_attempt_at = $1, updated_at = $1,"
                  " lease_owner = NULL, lease_until = 0 WHERE id IN ("
                  " SELECT d.id FROM deliveries d WHERE d.status = $2 AND d.status <> 1"
                  " AND ($3::text IS NULL OR d.webhook = $3)"
                  " AND (d.message_id IS NULL OR EXISTS (SELECT 1 FROM bodies b"
                  "   WHERE b.message_id = d.message_id))"
                  " ORDER BY d.id LIMIT $4 FOR UPDATE SKIP LOCKED)",
                  &q, retried, e, op);
}
