/*
 * store_pg_msg — the PostgreSQL store's UIDLs, messages (storing in chunks,
 * reading, streaming) and retention; see bridge/store_pg_impl.h.
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

/* ---- UIDLs ------------------------------------------------------------- */

#define UIDL_CHUNK 4096 /* UIDLs per statement in the list calls */
#define BODY_PIPE_CHUNKS 8 /* body chunks written per round trip */

/* A PostgreSQL array literal of uidls[0..n) ({"a","b"}), malloc'd. */
static char *array_lit(const char *const *v, size_t n, struct err *e)
{
    GString *g = g_string_sized_new(n * 16 + 2);
    g_string_append_c(g, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            g_string_append_c(g, ',');
        g_string_append_c(g, '"');
        for (const char *p = v[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                g_string_append_c(g, '\\');
            g_string_append_c(g, *p);
        }
        g_string_append_c(g, '"');
    }
    g_string_append_c(g, '}');
    (void)e;
    return g_string_free(g, FALSE);
}

/* Run sql once per UIDL_CHUNK uidls: $1 account, $2 the array, $3 arg. */
static int uidl_chunks(struct store *st, PGconn *c, const char *sql, const char *account,
                       const char *const *uidls, size_t n, const int64_t *arg, int64_t *changes,
                       struct err *e, const char *op)
{
    if (changes)
        *changes = 0;
    for (size_t i = 0; i < n; i += UIDL_CHUNK) {
        size_t k = n - i < UIDL_CHUNK ? n - i : UIDL_CHUNK;
        char *lit = array_lit(uidls + i, k, e);
        struct pq q = {0};
        if (account)
            pq_text(&q, account);
        q.v[q.n++] = lit;
        if (arg)
            pq_i64(&q, *arg);
        int64_t ch = 0;
        int r = pq_cmd(st, c, sql, &q, &ch, e, op);
        g_free(lit);
        if (r < 0)
            return -1;
        if (changes)
            *changes += ch;
    }
    return 0;
}

struct uidl_rows {
    store_uidl_cb cb;
    void *ctx;
};

static int uidl_row(void *ctx, PGresult *r, struct err *e)
{
    struct uidl_rows *u = ctx;
    return u->cb(u->ctx, PQgetvalue(r, 0, 0), (enum store_uidl_state)pg_g64(r, 0, 1),
                 pg_g64(r, 0, 2), e);
}

int pg_uidls_each(struct store *st, const char *account, store_uidl_cb cb, void *ctx,
                  struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    err_clear(e);
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    struct uidl_rows u = {cb, ctx};
    int r = pq_each(st, c, "SELECT uidl, state, message_id FROM uidls WHERE account = $1", &q, 0,
                    uidl_row, &u, e, "list UIDLs");
    pg_conn_put(st, c);
    return r;
}

/* A UIDL's state and message (state, message_id). */
struct uidl_read {
    enum store_uidl_state state;
    int64_t msg_id;
};

static void uidl_read_row(PGresult *r, int i, void *p)
{
    struct uidl_read *u = p;
    u->state = (enum store_uidl_state)pg_g64(r, i, 0);
    u->msg_id = pg_g64(r, i, 1);
}

int pg_uidl_get(struct store *st, const char *account, const char *uidl,
                enum store_uidl_state *state, int64_t *msg_id, struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_uidl(uidl, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    pq_text(&q, uidl);
    struct uidl_read u = {0};
    int rv = pq_one(st, NULL,
                    "SELECT state, message_id FROM uidls WHERE account = $1 AND uidl = $2", &q,
                    uidl_read_row, &u, e, "get UIDL");
    if (rv == 0) {
        *state = u.state;
        if (msg_id)
            *msg_id = u.msg_id;
    }
    return rv;
}

int pg_uidls_record_ignored(struct store *st, const char *account,
                            const char *const *uidls, size_t n, int64_t now,
                            struct err *e)
{
    if (store_check_account_uidls(account, uidls, n, e) < 0)
        return -1;
    if (n == 0)
        return 0;
    const char *op = "record ignored UIDLs";
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    if (uidl_chunks(st, c,
                    "INSERT INTO uidls(account, uidl, state, message_id, seen_at)"
                    " SELECT $1, u, 0, NULL, $3 FROM unnest($2::text[]) u"
                    " ON CONFLICT DO NOTHING",
                    account, uidls, n, &now, NULL, e, op) < 0 ||
        pg_tx_commit(st, c, e, op) < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    return 0;
}

int pg_uidls_deletable(struct store *st, const char *account, bool delete_delivered,
                       int64_t delete_after_ms, int64_t now, store_uidl_cb cb, void *ctx,
                       struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    err_clear(e);
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    pq_i64(&q, delete_delivered ? 1 : 0);
    pq_i64(&q, delete_after_ms > 0 ? delete_after_ms : 0);
    pq_i64(&q, now);
    struct uidl_rows u = {cb, ctx};
    int r = pq_each(st, c,
                    "SELECT u.uidl, u.state, u.message_id FROM uidls u"
                    " JOIN messages m ON m.id = u.message_id"
                    " WHERE u.account = $1 AND u.state = 2 AND m.kind = 'message'"
                    " AND ($2::int = 1 OR ($3::bigint > 0 AND m.received_at <= $4::bigint - $3::bigint))"
                    " AND NOT EXISTS (SELECT 1 FROM deliveries d"
                    "   WHERE d.message_id = u.message_id AND d.status NOT IN (1, 4))",
                    &q, 0, uidl_row, &u, e, "list deletable UIDLs");
    pg_conn_put(st, c);
    return r;
}

int pg_uidls_mark_deleted(struct store *st, const char *account,
                          const char *const *uidls, size_t n, struct err *e)
{
    if (store_check_account_uidls(account, uidls, n, e) < 0)
        return -1;
    if (n == 0)
        return 0;
    const char *op = "mark UIDLs deleted";
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    if (uidl_chunks(st, c,
                    "UPDATE uidls SET state = 3 WHERE account = $1 AND uidl = ANY($2::text[])",
                    account, uidls, n, NULL, NULL, e, op) < 0 ||
        pg_tx_commit(st, c, e, op) < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    return 0;
}

int pg_uidls_forget_vanished(struct store *st, const char *account,
                             const char *const *listed, size_t n, int64_t *forgotten,
                             struct err *e)
{
    if (store_check_account_uidls(account, listed, n, e) < 0)
        return -1;
    const char *op = "forget vanished UIDLs";
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    int64_t count = 0;
    if (pq_cmd(st, c,
               "CREATE TEMP TABLE IF NOT EXISTS listed(uidl text PRIMARY KEY)"
               " ON COMMIT DELETE ROWS", NULL, NULL, e, op) < 0 ||
        pq_cmd(st, c, "DELETE FROM listed", NULL, NULL, e, op) < 0 ||
        uidl_chunks(st, c,
                    "INSERT INTO listed SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", NULL,
                    listed, n, NULL, NULL, e, op) < 0 ||
        pq_cmd(st, c,
               "DELETE FROM uidls WHERE account = $1 AND state <> 1"
               " AND uidl NOT IN (SELECT uidl FROM listed)"
               " AND (message_id IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries d"
               "   WHERE d.message_id = uidls.message_id AND d.status NOT IN (1, 4)))",
               &q, &count, e, op) < 0 ||
        pq_cmd(st, c, "DELETE FROM listed", NULL, NULL, e, op) < 0 ||
        pg_tx_commit(st, c, e, op) < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    if (forgotten)
        *forgotten = count;
    return 0;
}

/* ---- storing a message ------------------------------------------------- */

/* Up to STORE_IO_CHUNK bytes of the body at off into *p: from memory, or
 * read from the spool file into buf. */
static int body_chunk(struct store *st, struct store_msg *m, uint64_t off, unsigned char *buf,
                      const void **p, size_t *len, struct err *e)
{
    size_t want = m->sp.size - off < STORE_IO_CHUNK ? (size_t)(m->sp.size - off) : STORE_IO_CHUNK;
    *len = want;
    if (m->sp.fd < 0) {
        *p = m->sp.mem + off;
        return 0;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t k = pread(m->sp.fd, buf + got, want - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return err_set(e, ERR_INTERNAL, "store: cannot read spool file in %s: %s", st->dir,
                           k < 0 ? strerror(errno) : "unexpected end of file");
        got += (size_t)k;
    }
    *p = buf;
    return 0;
}

/* The body's chunks after the first (which finish_tx wrote with the
 * message), STORE_IO_CHUNK bytes each, from memory or the spool file: one
 * INSERT per chunk, BODY_PIPE_CHUNKS of them per round trip, so at most
 * that many chunks of the body are in memory at once. */
static int body_rest(struct store *st, PGconn *c, struct store_msg *m, int64_t id,
                     unsigned char *buf, struct err *e)
{
    static const char sql_one[] =
        "INSERT INTO body_chunks(message_id, seq, data) VALUES ($1, $2, $3)";
    const char *sql[BODY_PIPE_CHUNKS];
    struct pq q[BODY_PIPE_CHUNKS];
    struct pq *qs[BODY_PIPE_CHUNKS];
    unsigned char *bufs = NULL; /* a spooled body: BODY_PIPE_CHUNKS chunks read at a time */
    if (m->sp.fd >= 0 && m->sp.size > 2 * (uint64_t)STORE_IO_CHUNK &&
        !(bufs = malloc((size_t)BODY_PIPE_CHUNKS * STORE_IO_CHUNK)))
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    int64_t seq = 1;
    int rv = 0;
    for (uint64_t off = STORE_IO_CHUNK; off < m->sp.size && rv == 0;) {
        int k = 0;
        for (; k < BODY_PIPE_CHUNKS && off < m->sp.size; k++, off += STORE_IO_CHUNK, seq++) {
            const void *p;
            size_t want;
            unsigned char *b = bufs ? bufs + (size_t)k * STORE_IO_CHUNK : buf;
            if (body_chunk(st, m, off, b, &p, &want, e) < 0) {
                rv = -1;
                break;
            }
            memset(&q[k], 0, sizeof q[k]);
            pq_i64(&q[k], id);
            pq_i64(&q[k], seq);
            pq_bin(&q[k], p, want);
            sql[k] = sql_one;
            qs[k] = &q[k];
            if (!bufs && m->sp.fd >= 0) { /* one buffer: one chunk per round trip */
                k++, off += STORE_IO_CHUNK, seq++;
                break;
            }
        }
        if (rv < 0) {
            for (int i = 0; i < k; i++)
                pq_free(&q[i]);
            break;
        }
        PGresult *r = pq_pipe(st, c, k, sql, qs, 0, e, "store message body");
        if (!r)
            rv = -1;
        PQclear(r);
    }
    free(bufs);
    return rv;
}

/* The first message of account with this Message-ID stored since `since`
 * (not itself a duplicate): its id, or 0.  The account's poll is the only
 * writer of its messages (account leases), so no lock is needed. */
static int find_duplicate(struct store *st, PGconn *c, const char *account,
                          const char *message_id, int64_t since, int64_t *dup, struct err *e)
{
    *dup = 0;
    struct pq q = {0};
    pq_text(&q, account);
    pq_trunc(&q, message_id, STORE_META_MAX); /* as it was stored */
    pq_i64(&q, since);
    PGresult *r = pq_run(st, c,
                         "SELECT id FROM messages WHERE account = $1 AND message_id_hdr = $2"
                         " AND received_at >= $3 AND duplicate_of IS NULL ORDER BY id LIMIT 1",
                         &q, 0, e, "find duplicate");
    if (!r)
        return -1;
    if (PQntuples(r) > 0)
        *dup = pg_g64(r, 0, 0);
    PQclear(r);
    return 0;
}

/* One statement (one round trip) writes the UIDLs, the messages, their
 * body records, the bodies' first chunks and their deliveries, for one
 * message or a group, from arrays ($1..$15 one element per message, $16
 * the chunk size, $17 the first chunks, $18/$19 the webhooks with their
 * message's position), in the given order (ids, and deliveries by message
 * then webhook).  Each message's id is taken from the sequence first so its
 * UIDL row carries it; the UIDL comes first: a known one (ON CONFLICT, or
 * earlier in the group) makes every later part of that message write
 * nothing.  The foreign keys between the parts are checked at the
 * statement's end.  One row per message: its position and its new id (0:
 * its UIDL was known). */
static const char STORE_SQL[] =
    "WITH s AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],"
    "   $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],"
    "   $11::bigint[], $12::text[], $13::bigint[], $14::text[], $15::bigint[])"
    "   WITH ORDINALITY AS s(account, uidl, state, now, size, sha, subject, from_addr,"
    "   msgid, date_hdr, delivered_at, kind, declared, key, dup, k)),"
    " n AS (SELECT s.*, nextval(pg_get_serial_sequence('messages', 'id')) AS id"
    "   FROM s ORDER BY k),"
    " u AS (INSERT INTO uidls(account, uidl, state, message_id, seen_at)"
    "   SELECT account, uidl, state::smallint, id, now FROM n ORDER BY k"
    "   ON CONFLICT DO NOTHING RETURNING message_id),"
    " m AS (INSERT INTO messages(id, account, uidl, size, sha256, received_at,"
    "   subject, from_addr, message_id_hdr, date_hdr, delivered_at, kind,"
    "   declared_size, event_key, duplicate_of)"
    "   SELECT n.id, n.account, n.uidl, n.size, n.sha, n.now, n.subject, n.from_addr,"
    "   n.msgid, n.date_hdr, n.delivered_at, n.kind, n.declared, n.key, n.dup"
    "   FROM n JOIN u ON u.message_id = n.id ORDER BY n.k RETURNING id),"
    " b AS (INSERT INTO bodies(message_id, size, chunk_size)"
    "   SELECT n.id, n.size, $16::integer FROM n JOIN m ON m.id = n.id),"
    " c AS (INSERT INTO body_chunks(message_id, seq, data)"
    "   SELECT n.id, 0, x.data FROM unnest($17::bytea[]) WITH ORDINALITY AS x(data, k)"
    "   JOIN n ON n.k = x.k JOIN m ON m.id = n.id WHERE n.size > 0),"
    " d AS (INSERT INTO deliveries(message_id, account, webhook, status, attempts,"
    "   next_attempt_at, created_at, updated_at)"
    "   SELECT n.id, n.account, h.w, 0, 0, n.now, n.now, n.now"
    "   FROM unnest($18::text[], $19::bigint[]) WITH ORDINALITY AS h(w, mk, hk)"
    "   JOIN n ON n.k = h.mk JOIN m ON m.id = n.id ORDER BY h.hk)"
    " SELECT n.k, coalesce(m.id, 0) FROM n LEFT JOIN m ON m.id = n.id ORDER BY n.k";

/* One message of STORE_SQL: what store_msg_finish was given, its body's
 * first chunk, and the earlier message it duplicates (0: none; a
 * duplicate is recorded, not delivered: done at once). */
struct store_row {
    const struct store_msg *m;
    const struct store_msg_meta *meta;
    const char *const *webhooks;
    size_t n_webhooks;
    int64_t now;
    const char *sha_hex;
    int64_t dup;
    const void *chunk;
    size_t chunk_len;
};

enum { G_ACCOUNT, G_UIDL, G_STATE, G_NOW, G_SIZE, G_SHA, G_SUBJECT, G_FROM, G_MSGID, G_DATE,
       G_DELIVERED, G_KIND, G_DECLARED, G_KEY, G_DUP, G_DATA, G_HOOK, G_HOOK_MSG, G_ARRAYS };

/* STORE_SQL's parameters for rows[0..n) into q, each with a new event key. */
static int store_params(const struct store_row *rows, size_t n, struct pq *q, struct err *e)
{
    static const uint32_t oid[G_ARRAYS] = {
        [G_ACCOUNT] = PG_OID_TEXT, [G_UIDL] = PG_OID_TEXT,     [G_STATE] = PG_OID_INT8,
        [G_NOW] = PG_OID_INT8,     [G_SIZE] = PG_OID_INT8,     [G_SHA] = PG_OID_TEXT,
        [G_SUBJECT] = PG_OID_TEXT, [G_FROM] = PG_OID_TEXT,     [G_MSGID] = PG_OID_TEXT,
        [G_DATE] = PG_OID_TEXT,    [G_DELIVERED] = PG_OID_INT8, [G_KIND] = PG_OID_TEXT,
        [G_DECLARED] = PG_OID_INT8, [G_KEY] = PG_OID_TEXT,     [G_DUP] = PG_OID_INT8,
        [G_DATA] = PG_OID_BYTEA,   [G_HOOK] = PG_OID_TEXT,     [G_HOOK_MSG] = PG_OID_INT8};
    struct pq_arr a[G_ARRAYS];
    for (int i = 0; i < G_ARRAYS; i++)
        pq_arr_init(&a[i], oid[i]);
    for (size_t i = 0; i < n; i++) {
        const struct store_row *w = &rows[i];
        const struct store_msg_meta *meta = w->meta;
        char key[STORE_KEY_HEX + 1];
        if (store_new_event_key(key, e) < 0) {
            for (int j = 0; j < G_ARRAYS; j++)
                pq_arr_free(&a[j]);
            return -1;
        }
        size_t hooks = w->dup ? 0 : w->n_webhooks;
        pq_arr_text(&a[G_ACCOUNT], w->m->account);
        pq_arr_text(&a[G_UIDL], w->m->uidl);
        pq_arr_i64(&a[G_STATE], hooks ? STORE_UIDL_STORED : STORE_UIDL_DELIVERED);
        pq_arr_i64(&a[G_NOW], w->now);
        pq_arr_i64(&a[G_SIZE], (int64_t)w->m->sp.size);
        pq_arr_text(&a[G_SHA], w->sha_hex);
        pq_arr_trunc(&a[G_SUBJECT], meta ? meta->subject : NULL, STORE_META_MAX);
        pq_arr_trunc(&a[G_FROM], meta ? meta->from : NULL, STORE_META_MAX);
        pq_arr_trunc(&a[G_MSGID], meta ? meta->message_id : NULL, STORE_META_MAX);
        pq_arr_trunc(&a[G_DATE], meta ? meta->date : NULL, STORE_META_MAX);
        if (hooks)
            pq_arr_null(&a[G_DELIVERED]);
        else
            pq_arr_i64(&a[G_DELIVERED], w->now);
        pq_arr_text(&a[G_KIND], meta && meta->kind ? meta->kind : STORE_KIND_MESSAGE);
        pq_arr_i64(&a[G_DECLARED], meta ? (int64_t)meta->declared_size : 0);
        pq_arr_text(&a[G_KEY], key);
        if (w->dup)
            pq_arr_i64(&a[G_DUP], w->dup);
        else
            pq_arr_null(&a[G_DUP]);
        pq_arr_bin(&a[G_DATA], w->chunk_len ? w->chunk : "", w->chunk_len);
        for (size_t h = 0; h < hooks; h++) {
            pq_arr_text(&a[G_HOOK], w->webhooks[h]);
            pq_arr_i64(&a[G_HOOK_MSG], (int64_t)i + 1);
        }
    }
    for (int i = 0; i < G_ARRAYS; i++) {
        if (i == G_DATA)
            pq_i64(q, STORE_IO_CHUNK); /* $16 */
        pq_arr_put(q, &a[i]);
    }
    return 0;
}

/* STORE_SQL's answer for its row'th message: the new id, or 0 with *e
 * when the UIDL was known. */
static int64_t store_result(PGresult *r, int row, const struct store_msg *m, struct err *e)
{
    int64_t id = PQntuples(r) > row ? pg_g64(r, row, 1) : 0;
    if (!id)
        err_set(e, ERR_USAGE, "store: UIDL is already known for account %s", m->account);
    return id;
}

static int finish_tx(struct store *st, PGconn *c, struct store_msg *m,
                     const struct store_msg_meta *meta, const char *const *webhooks,
                     size_t n_webhooks, int64_t now, const char *sha_hex, int64_t *id_out,
                     int64_t *dup_out, struct err *e)
{
    const char *op = "store message";
    int64_t dup = 0, since = 0;
    if (store_dedupe_since(meta, now, &since) &&
        find_duplicate(st, c, m->account, meta->message_id, since, &dup, e) < 0)
        return -1;
    *dup_out = dup;
    unsigned char *buf = m->sp.fd >= 0 ? malloc(STORE_IO_CHUNK) : NULL;
    if (m->sp.fd >= 0 && !buf)
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    const void *chunk = "";
    size_t chunk_len = 0;
    if (m->sp.size > 0 && body_chunk(st, m, 0, buf, &chunk, &chunk_len, e) < 0) {
        free(buf);
        return -1;
    }
    struct store_row row = {m, meta, webhooks, n_webhooks, now, sha_hex, dup, chunk, chunk_len};
    struct pq q = {0};
    if (store_params(&row, 1, &q, e) < 0) {
        free(buf);
        return -1;
    }
    PGresult *r = pq_run(st, c, STORE_SQL, &q, 0, e, op);
    int64_t id = r ? store_result(r, 0, m, e) : 0;
    PQclear(r);
    if (!id) {
        free(buf);
        return -1;
    }
    int rc = body_rest(st, c, m, id, buf, e);
    free(buf);
    if (rc < 0)
        return -1;
    *id_out = id;
    return 0;
}

/* messages stored in one statement (store_msg_finish_many): a whole commit
 * of the committer (COMMITTER_GROUP_MAX) */
#define STORE_GROUP 64

/* Whether f can join a group: one statement (no duplicate lookup, a body of
 * one chunk held in memory). */
static bool groupable(const struct store_finish *f)
{
    int64_t since;
    return f->result == 1 && f->m->sp.fd < 0 && f->m->sp.size <= STORE_IO_CHUNK &&
           !store_dedupe_since(f->meta, f->now, &since);
}

static void store_one(struct store *st, struct store_finish *f, const char *hex)
{
    int64_t id = 0, dup = 0;
    f->result = pg_msg_store(f->m, f->meta, f->webhooks, f->n_webhooks, f->now, hex, &id, &dup,
                             &f->err);
    if (f->result == 0) {
        f->res.id = id;
        f->res.duplicate_of = dup;
    }
    (void)st;
}

/* f[0..n) in one statement under one savepoint (the batch's write); one
 * failing at the database: all undone, then each on its own. */
static void store_group(struct store *st, struct store_finish *f,
                        const char (*hex)[STORE_SHA256_HEX + 1], size_t n)
{
    const char *op = "store message";
    struct pq q = {0};
    struct err e;
    err_clear(&e);
    PGconn *c = NULL;
    PGresult *r = NULL;
    struct store_row rows[STORE_GROUP];
    for (size_t i = 0; i < n; i++) {
        const struct store_msg *m = f[i].m;
        rows[i] = (struct store_row){m, f[i].meta, f[i].webhooks, f[i].n_webhooks, f[i].now,
                                     hex[i], 0, m->sp.mem, m->sp.size};
    }
    if (store_params(rows, n, &q, &e) == 0 && (c = pg_tx_begin(st, &e, op)))
        r = pq_run(st, c, STORE_SQL, &q, 0, &e, op);
    else
        pq_free(&q);
    if (r && (size_t)PQntuples(r) == n && pg_tx_commit(st, c, &e, op) == 0) {
        for (size_t i = 0; i < n; i++) {
            f[i].res.id = store_result(r, (int)i, f[i].m, &f[i].err);
            f[i].result = f[i].res.id ? 0 : -1; /* a known UIDL wrote nothing */
        }
        PQclear(r);
        return;
    }
    PQclear(r);
    if (c)
        pg_tx_rollback(st, c);
    for (size_t i = 0; i < n; i++)
        store_one(st, &f[i], hex[i]);
}

void pg_msg_store_many(struct store *st, struct store_finish *f,
                       const char (*hex)[STORE_SHA256_HEX + 1], size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (f[i].result != 1) {
            i++;
            continue;
        }
        size_t k = 0;
        while (st->batch && i + k < n && k < STORE_GROUP && groupable(&f[i + k]))
            k++;
        if (k < 2) {
            store_one(st, &f[i], hex[i]);
            i++;
            continue;
        }
        store_group(st, f + i, hex + i, k);
        i += k;
    }
}

int pg_msg_store(struct store_msg *m, const struct store_msg_meta *meta,
                 const char *const *webhooks, size_t n_webhooks, int64_t now,
                 const char *sha_hex, int64_t *id, int64_t *dup, struct err *e)
{
    struct store *st = m->st;
    PGconn *c = pg_tx_begin(st, e, "store message");
    if (!c)
        return -1;
    if (finish_tx(st, c, m, meta, webhooks, n_webhooks, now, sha_hex, id, dup, e) < 0 ||
        pg_tx_commit(st, c, e, "store message") < 0) {
        pg_tx_rollback(st, c);
        return -1;
    }
    return 0;
}

const char *pg_spool_dir(const struct store *st)
{
    return st->dir;
}

/* ---- reading a message ------------------------------------------------- */

#define MSG_FIELDS                                                                      \
    "id, account, uidl, size, sha256, received_at, delivered_at,"                      \
    " body_purged_at, subject, from_addr, message_id_hdr, date_hdr, kind,"             \
    " declared_size, event_key, coalesce(duplicate_of, 0)"
#define MSG_COLS "SELECT " MSG_FIELDS " FROM messages "
#define MSG_NCOLS 16

static void msg_row(PGresult *r, int i, void *p)
{
    struct store_msg_info *out = p;
    memset(out, 0, sizeof *out);
    out->id = pg_g64(r, i, 0);
    pg_gstr(r, i, 1, out->account, sizeof out->account);
    pg_gstr(r, i, 2, out->uidl, sizeof out->uidl);
    out->size = (uint64_t)pg_g64(r, i, 3);
    pg_gstr(r, i, 4, out->sha256, sizeof out->sha256);
    out->received_at = pg_g64(r, i, 5);
    out->delivered_at = pg_g64(r, i, 6);
    out->body_purged_at = pg_g64(r, i, 7);
    pg_gstr(r, i, 8, out->subject, sizeof out->subject);
    pg_gstr(r, i, 9, out->from, sizeof out->from);
    pg_gstr(r, i, 10, out->message_id, sizeof out->message_id);
    pg_gstr(r, i, 11, out->date, sizeof out->date);
    pg_gstr(r, i, 12, out->kind, sizeof out->kind);
    out->declared_size = (uint64_t)pg_g64(r, i, 13);
    pg_gstr(r, i, 14, out->key, sizeof out->key);
    out->duplicate_of = pg_g64(r, i, 15);
}

int pg_msg_get(struct store *st, int64_t id, struct store_msg_info *out, struct err *e)
{
    struct pq q = {0};
    pq_i64(&q, id);
    return pq_one(st, NULL, MSG_COLS "WHERE id = $1", &q, msg_row, out, e, "get message");
}

/* A bytea column of row i (binary, or text: hex) as it is: malloc'd (at
 * least one byte allocated), *len; NULL with *e when out of memory. */
static unsigned char *bytea_col(PGresult *r, int i, int col, size_t *len, struct err *e)
{
    if (PQfformat(r, col) == 1) {
        size_t n = (size_t)PQgetlength(r, i, col);
        unsigned char *out = malloc(n ? n : 1);
        if (!out)
            return err_set(e, ERR_INTERNAL, "store: out of memory reading a stored message"),
                   NULL;
        memcpy(out, PQgetvalue(r, i, col), n);
        *len = n;
        return out;
    }
    size_t n = 0;
    unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, col), &n);
    unsigned char *out = b ? malloc(n ? n : 1) : NULL;
    if (out && n)
        memcpy(out, b, n);
    if (b) {
        OPENSSL_cleanse(b, n); /* the link key passes here too */
        PQfreemem(b);
    }
    if (!out)
        err_set(e, ERR_INTERNAL, "store: out of memory reading a stored message");
    *len = n;
    return out;
}

/* What both loads select after MSG_FIELDS: whether message `id` (an
 * expression) has a body (`has`), the body when `fits` and the link key
 * when $3 is 1. */
#define LOAD_COLS(has, id, fits)                                                           \
    " " has ","                                                                             \
    " CASE WHEN " fits " THEN"                                                              \
    "   (SELECT coalesce(string_agg(data, ''::bytea ORDER BY seq), ''::bytea)"              \
    "    FROM body_chunks WHERE message_id = " id ") END,"                                  \
    " CASE WHEN $3::integer = 1 THEN (SELECT key FROM link_key WHERE id = 1) END"

/* Row i of a load: the message into *out, its body (when selected) into
 * *body; STORE_NOTFOUND when its body is gone though body_purged_at is not
 * set yet (being purged). */
static int load_row(PGresult *r, int i, struct store_msg_info *out, char **body,
                    size_t *body_len, struct err *e)
{
    msg_row(r, i, out);
    if (out->body_purged_at)
        return 0;
    if (!pg_gbool(r, i, MSG_NCOLS))
        return STORE_NOTFOUND;
    if (PQgetisnull(r, i, MSG_NCOLS + 1))
        return 0;
    *body = (char *)bytea_col(r, i, MSG_NCOLS + 1, body_len, e);
    return *body ? 0 : -1;
}

/* The link key of row i into key: 0; 1 when there is none yet; -1. */
static int load_key(PGresult *r, int i, unsigned char *key, struct err *e)
{
    if (PQgetisnull(r, i, MSG_NCOLS + 2))
        return 1;
    size_t n = 0;
    unsigned char *k = bytea_col(r, i, MSG_NCOLS + 2, &n, e);
    if (!k)
        return -1;
    int rv = 0;
    if (n != STORE_LINK_KEY_LEN)
        rv = err_set(e, ERR_INTERNAL, "store: the link key in PostgreSQL %s is not %d bytes",
                     store_pg_target_name(), STORE_LINK_KEY_LEN);
    else
        memcpy(key, k, n);
    OPENSSL_cleanse(k, n);
    free(k);
    return rv;
}

int pg_msg_load(struct store *st, int64_t id, struct store_msg_info *out, size_t mem_max,
                char **body, size_t *body_len, unsigned char *link_key, int64_t now,
                struct err *e)
{
    *body = NULL;
    *body_len = 0;
    struct pq q = {0};
    pq_i64(&q, id);
    pq_i64(&q, mem_max > INT64_MAX ? INT64_MAX : (int64_t)mem_max);
    pq_i64(&q, link_key ? 1 : 0);
    PGconn *c = pg_conn_get(st, e);
    if (!c) {
        pq_free(&q);
        return -1;
    }
    /* one statement: the row, the body and the key in one snapshot */
    PGresult *r = pq_run(st, c,
                         "SELECT " MSG_FIELDS ","
                         LOAD_COLS("EXISTS (SELECT 1 FROM bodies WHERE message_id = $1::bigint)", "$1::bigint",
                                   "size <= $2::bigint AND body_purged_at IS NULL")
                         " FROM messages WHERE id = $1::bigint",
                         &q, 1, e, "get message"); /* binary: the body as it is */
    pg_conn_put(st, c);
    if (!r)
        return -1;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return STORE_NOTFOUND;
    }
    int rv = load_row(r, 0, out, body, body_len, e);
    int key = rv == 0 && link_key ? load_key(r, 0, link_key, e) : 0;
    PQclear(r);
    if (key < 0)
        rv = -1;
    if (rv == 0 && key == 1) /* first use: made now */
        rv = pg_link_key(st, link_key, NULL, now, e);
    if (rv != 0) {
        free(*body);
        *body = NULL;
        *body_len = 0;
    }
    return rv;
}

/* The messages of an array of ids ($1), in its order (k): their bodies
 * while each is at most $2 octets and the running total at most $4.  The
 * bodies rows are joined (an EXISTS per row would be planned as a scan of
 * them all). */
static const char LOAD_MANY_SQL[] =
    "SELECT " MSG_FIELDS ","
    LOAD_COLS("s.has_body", "s.id", "s.fits AND s.has_body") ", k"
    " FROM (SELECT m.*, a.k, b.message_id IS NOT NULL AS has_body,"
    "   m.size <= $2::bigint AND m.body_purged_at IS NULL"
    "   AND sum(CASE WHEN m.size <= $2::bigint AND m.body_purged_at IS NULL THEN m.size"
    "       ELSE 0 END) OVER (ORDER BY a.k) <= $4::bigint AS fits"
    "   FROM unnest($1::bigint[]) WITH ORDINALITY AS a(id, k)"
    "   JOIN messages m ON m.id = a.id LEFT JOIN bodies b ON b.message_id = m.id) s"
    " ORDER BY k";

/* LOAD_MANY_SQL's result into l[0..n): each row at its k. */
static int load_many_rows(PGresult *r, struct store_loaded *l, size_t n, unsigned char *link_key,
                          bool *key_missing, struct err *e)
{
    *key_missing = link_key != NULL;
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t k = pg_g64(r, i, MSG_NCOLS + 3);
        if (k < 1 || (uint64_t)k > n)
            return err_set(e, ERR_INTERNAL, "store: a message read at once is out of place");
        struct store_loaded *x = &l[k - 1];
        x->result = load_row(r, i, &x->info, &x->body, &x->body_len, e);
        if (x->result < 0)
            return -1;
        if (link_key && i == 0) {
            int key = load_key(r, i, link_key, e);
            if (key < 0)
                return -1;
            *key_missing = key == 1;
        }
    }
    return 0;
}

int pg_msg_load_many(struct store *st, struct store_loaded *l, size_t n, size_t mem_max,
                     size_t total_max, unsigned char *link_key, int64_t now, struct err *e)
{
    GString *ids = g_string_sized_new(n * 12 + 2);
    g_string_append_c(ids, '{');
    for (size_t i = 0; i < n; i++)
        g_string_append_printf(ids, i ? ",%lld" : "%lld", (long long)l[i].id);
    g_string_append_c(ids, '}');
    struct pq q = {0};
    q.owned[0] = g_string_free(ids, FALSE);
    q.v[q.n++] = q.owned[0];                                              /* $1 */
    pq_i64(&q, mem_max > INT64_MAX ? INT64_MAX : (int64_t)mem_max);       /* $2 */
    pq_i64(&q, link_key ? 1 : 0);                                         /* $3 */
    pq_i64(&q, total_max > INT64_MAX ? INT64_MAX : (int64_t)total_max);   /* $4 */
    PGconn *c = pg_conn_get(st, e);
    if (!c) {
        pq_free(&q);
        return -1;
    }
    PGresult *r = pq_run(st, c, LOAD_MANY_SQL, &q, 1, e, "get messages"); /* binary */
    pg_conn_put(st, c);
    if (!r)
        return -1;
    bool key_missing = false;
    int rv = load_many_rows(r, l, n, link_key, &key_missing, e);
    PQclear(r);
    if (rv == 0 && key_missing) /* first use, or no row: as store_link_key */
        rv = pg_link_key(st, link_key, NULL, now, e);
    if (rv < 0)
        store_loaded_free(l, n);
    return rv;
}

/* Size and chunk size of message id's body; STORE_NOTFOUND if none. */
/* A body's size and chunk size (size, chunk_size). */
struct body_read {
    uint64_t size;
    uint32_t chunk;
};

static void body_read_row(PGresult *r, int i, void *p)
{
    struct body_read *b = p;
    b->size = (uint64_t)pg_g64(r, i, 0);
    b->chunk = (uint32_t)pg_g64(r, i, 1);
}

int pg_body_info(struct store *st, PGconn *c, int64_t id, uint64_t *size, uint32_t *chunk,
                 struct err *e)
{
    struct pq q = {0};
    pq_i64(&q, id);
    struct body_read b = {0};
    int rv = pq_one(st, c, "SELECT size, chunk_size FROM bodies WHERE message_id = $1", &q,
                    body_read_row, &b, e, "get body length");
    if (rv == 0) {
        *size = b.size;
        if (chunk)
            *chunk = b.chunk;
    }
    return rv;
}

struct sink_rows {
    store_sink_cb sink;
    void *ctx;
    size_t rows;
};

static int chunk_row(void *ctx, PGresult *r, struct err *e)
{
    struct sink_rows *s = ctx;
    s->rows++;
    int n = PQgetlength(r, 0, 0);
    if (n <= 0)
        return 0;
    return s->sink(s->ctx, PQgetvalue(r, 0, 0), (size_t)n, e);
}

int pg_msg_stream(struct store *st, int64_t id, store_sink_cb sink, void *ctx,
                  struct err *e)
{
    err_clear(e);
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    /* the chunks first (one round trip); only when there is none, whether
     * the body is empty or gone (purged: STORE_NOTFOUND) */
    struct pq q = {0};
    pq_i64(&q, id);
    struct sink_rows s = {sink, ctx, 0};
    int r = pq_each(st, c, "SELECT data FROM body_chunks WHERE message_id = $1 ORDER BY seq", &q,
                    1, chunk_row, &s, e, "read body");
    if (r == 0 && s.rows == 0) {
        uint64_t size;
        r = pg_body_info(st, c, id, &size, NULL, e);
    }
    pg_conn_put(st, c);
    return r;
}

int pg_body_open(struct store *st, int64_t id, struct store_body **out, uint64_t *size,
                 struct err *e)
{
    *out = NULL;
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    uint64_t len = 0;
    uint32_t chunk = 0;
    int r = pg_body_info(st, c, id, &len, &chunk, e);
    pg_conn_put(st, c);
    if (r != 0)
        return r;
    struct store_body *b = calloc(1, sizeof *b);
    if (!b)
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    b->hdr.ops = &store_pg_ops;
    b->id = id;
    b->size = len;
    b->chunk_size = chunk ? chunk : STORE_IO_CHUNK;
    b->cached_seq = -1;
    if (size)
        *size = len;
    *out = b;
    return 0;
}

/* Up to len bytes at offset from the one chunk holding offset. */
static int body_read_chunk(struct store_body *b, uint64_t offset, void *buf, size_t len,
                           size_t *got, struct err *e)
{
    *got = 0;
    int64_t seq = (int64_t)(offset / b->chunk_size);
    if (seq != b->cached_seq) {
        PGconn *c = pg_pool_get(e);
        if (!c)
            return -1;
        struct pq q = {0};
        pq_i64(&q, b->id);
        pq_i64(&q, seq);
        PGresult *r = pq_run(NULL, c, "SELECT data FROM body_chunks WHERE message_id = $1 AND seq = $2",
                             &q, 1, e, "read body");
        pg_pool_put(c);
        if (!r)
            return -1;
        if (PQntuples(r) == 0) {
            PQclear(r);
            char idbuf[STORE_ID_MAX];
            return err_set(e, ERR_INTERNAL, "store: read body of %s: it was purged",
                           store_msg_id_format(b->id, idbuf));
        }
        size_t n = (size_t)PQgetlength(r, 0, 0);
        unsigned char *p = realloc(b->chunk, n ? n : 1);
        if (!p) {
            PQclear(r);
            return err_set(e, ERR_INTERNAL, "store: out of memory");
        }
        memcpy(p, PQgetvalue(r, 0, 0), n);
        PQclear(r);
        b->chunk = p;
        b->chunk_len = n;
        b->cached_seq = seq;
    }
    uint64_t in = offset - (uint64_t)seq * b->chunk_size;
    if (in >= b->chunk_len)
        return 0;
    size_t n = b->chunk_len - (size_t)in;
    if (n > len)
        n = len;
    memcpy(buf, b->chunk + in, n);
    *got = n;
    return 0;
}

int pg_body_read(struct store_body *b, uint64_t offset, void *buf, size_t len,
                 size_t *got, struct err *e)
{
    *got = 0;
    while (*got < len && offset + *got < b->size) {
        size_t n = 0;
        if (body_read_chunk(b, offset + *got, (unsigned char *)buf + *got, len - *got, &n, e) < 0)
            return -1;
        if (n == 0)
            break;
        *got += n;
    }
    return 0;
}

void pg_body_close(struct store_body *b)
{
    if (!b)
        return;
    free(b->chunk);
    free(b);
}

int pg_msgs_each(struct store *st, const char *account, store_msg_cb cb, void *ctx,
                 struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    int64_t after = 0;
    for (;;) {
        PGconn *c = pg_conn_get(st, e);
        if (!c)
            return -1;
        struct pq q = {0};
        pq_text(&q, account);
        pq_i64(&q, after);
        pq_i64(&q, STORE_EXPORT_PAGE);
        PGresult *r = pq_run(st, c, MSG_COLS "WHERE account = $1 AND id > $2 ORDER BY id LIMIT $3",
                             &q, 0, e, "list messages");
        pg_conn_put(st, c); /* no connection held while cb works */
        if (!r)
            return -1;
        int n = PQntuples(r), rv = 0;
        for (int i = 0; i < n && rv == 0; i++) {
            struct store_msg_info m;
            msg_row(r, i, &m);
            after = m.id;
            if (cb(ctx, &m, e) < 0)
                rv = store_cb_stop(e);
        }
        PQclear(r);
        if (rv < 0)
            return -1;
        if (n < STORE_EXPORT_PAGE)
            return 0;
    }
}

/* ---- retention --------------------------------------------------------- */

/* A purge in one statement: $1 the limit of age (now - retention_ms), $2
 * max (0: no limit), $3 now when with_now.  SKIP LOCKED in sql: instances
 * purging at the same time take different rows, and each is purged once. */
static int purge_write(struct store *st, const char *sql, bool with_now, int64_t retention_ms,
                       int64_t now, size_t max, int64_t *purged, struct err *e, const char *op)
{
    if (retention_ms < 0)
        return err_set(e, ERR_USAGE, "store: purge: negative retention");
    struct pq q = {0};
    pq_i64(&q, now - retention_ms);
    pq_i64(&q, max == 0 || max > INT64_MAX ? INT64_MAX : (int64_t)max);
    if (with_now)
        pq_i64(&q, now);
    return pg_write1(st, sql, &q, purged, e, op);
}

int pg_purge_bodies(struct store *st, int64_t retention_ms, int64_t now, size_t max,
                    int64_t *purged, struct err *e)
{
    return purge_write(st,
                       "WITH p AS (SELECT id FROM messages WHERE delivered_at IS NOT NULL"
                       "   AND delivered_at <= $1 AND body_purged_at IS NULL"
                       "   ORDER BY delivered_at LIMIT $2 FOR UPDATE SKIP LOCKED),"
                       " gone AS (DELETE FROM bodies WHERE message_id IN (SELECT id FROM p))"
                       " UPDATE messages SET body_purged_at = $3 WHERE id IN (SELECT id FROM p)",
                       true, retention_ms, now, max, purged, e, "purge bodies");
}

/* A settled delivery no longer changes; the newest event of each account
 * and type stays. */
int pg_purge_events(struct store *st, int64_t retention_ms, int64_t now, size_t max,
                    int64_t *purged, struct err *e)
{
    return purge_write(st,
                       "WITH p AS (SELECT ev.id FROM events ev WHERE ev.created_at <= $1"
                       "   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = ev.id"
                       "     AND d.status NOT IN (1, 4))"
                       "   AND EXISTS (SELECT 1 FROM events n WHERE n.account = ev.account"
                       "     AND n.type = ev.type AND n.id > ev.id)"
                       "   ORDER BY ev.id LIMIT $2 FOR UPDATE SKIP LOCKED),"
                       " d AS (SELECT id FROM deliveries WHERE event_id IN (SELECT id FROM p)),"
                       " a AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM d)),"
                       " dd AS (DELETE FROM deliveries WHERE id IN (SELECT id FROM d))"
                       " DELETE FROM events WHERE id IN (SELECT id FROM p)",
                       false, retention_ms, now, max, purged, e, "purge events");
}
