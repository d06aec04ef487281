/*
 * store_sqlite_msg — the SQLite store's UIDLs, messages (storing, reading,
 * streaming) and retention; see bridge/store_sqlite_impl.h.
 */
#include "store_sqlite_impl.h"

#include "store.h"
#include "store_impl.h"

#include "codec.h"
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- UIDLs ------------------------------------------------------------- */

static int uidls_iter(struct store *st, sqlite3_stmt *s, store_uidl_cb cb, void *ctx,
                      struct err *e, const char *op)
{
    int rc, r = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *u = (const char *)sqlite3_column_text(s, 0);
        if (cb(ctx, u ? u : "", (enum store_uidl_state)sqlite3_column_int(s, 1),
               sqlite3_column_int64(s, 2), e) != 0) {
            r = store_cb_stop(e);
            break;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sq_dberr(st, e, op);
    sq_done(s);
    return r;
}

int sq_uidls_each(struct store *st, const char *account, store_uidl_cb cb, void *ctx,
                  struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    err_clear(e);
    sqlite3_stmt *s = sq_stmt(st, S_UIDLS_EACH, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    return uidls_iter(st, s, cb, ctx, e, "list UIDLs");
}

static int uidl_row(sqlite3_stmt *s, void *out, struct err *e)
{
    (void)e;
    ((int64_t *)out)[0] = sqlite3_column_int(s, 0);
    ((int64_t *)out)[1] = sqlite3_column_int64(s, 1);
    return 0;
}

int sq_uidl_get(struct store *st, const char *account, const char *uidl,
                enum store_uidl_state *state, int64_t *msg_id, struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_uidl(uidl, e) < 0)
        return -1;
    sqlite3_stmt *s = sq_stmt(st, S_UIDL_GET, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    sq_bind_str(s, 2, uidl);
    int64_t v[2] = {0, 0}; /* state, message id */
    int r = sq_one(st, s, uidl_row, v, e, "get UIDL");
    if (r == 0) {
        *state = (enum store_uidl_state)v[0];
        if (msg_id)
            *msg_id = v[1];
    }
    return r;
}

int sq_uidls_record_ignored(struct store *st, const char *account,
                            const char *const *uidls, size_t n, int64_t now,
                            struct err *e)
{
    if (store_check_account_uidls(account, uidls, n, e) < 0)
        return -1;
    if (n == 0)
        return 0;
    const char *op = "record ignored UIDLs";
    sqlite3_stmt *s = sq_stmt(st, S_UIDL_INS_IGNORED, e);
    if (!s || sq_tx_begin(st, e, op) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        sq_bind_str(s, 1, account);
        sq_bind_str(s, 2, uidls[i]);
        sqlite3_bind_int64(s, 3, now);
        if (sq_run(st, s, e, op) < 0) {
            sq_tx_rollback(st);
            return -1;
        }
    }
    if (sq_tx_commit(st, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    return 0;
}

int sq_uidls_deletable(struct store *st, const char *account, bool delete_delivered,
                       int64_t delete_after_ms, int64_t now, store_uidl_cb cb, void *ctx,
                       struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    err_clear(e);
    sqlite3_stmt *s = sq_stmt(st, S_DELETABLE, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    sqlite3_bind_int(s, 2, delete_delivered ? 1 : 0);
    sqlite3_bind_int64(s, 3, delete_after_ms > 0 ? delete_after_ms : 0);
    sqlite3_bind_int64(s, 4, now);
    return uidls_iter(st, s, cb, ctx, e, "list deletable UIDLs");
}

int sq_uidls_mark_deleted(struct store *st, const char *account,
                          const char *const *uidls, size_t n, struct err *e)
{
    if (store_check_account_uidls(account, uidls, n, e) < 0)
        return -1;
    if (n == 0)
        return 0;
    const char *op = "mark UIDLs deleted";
    sqlite3_stmt *s = sq_stmt(st, S_MARK_DELETED, e);
    if (!s || sq_tx_begin(st, e, op) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        sq_bind_str(s, 1, account);
        sq_bind_str(s, 2, uidls[i]);
        if (sq_run(st, s, e, op) < 0) {
            sq_tx_rollback(st);
            return -1;
        }
    }
    if (sq_tx_commit(st, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    return 0;
}

int sq_uidls_forget_vanished(struct store *st, const char *account,
                             const char *const *listed, size_t n, int64_t *forgotten,
                             struct err *e)
{
    if (store_check_account_uidls(account, listed, n, e) < 0)
        return -1;
    const char *op = "forget vanished UIDLs";
    sqlite3_stmt *ins = sq_stmt(st, S_LISTED_INS, e), *del = sq_stmt(st, S_FORGET, e);
    if (!ins || !del || sq_tx_begin(st, e, op) < 0)
        return -1;
    if (sq_run_id(st, S_LISTED_CLEAR, e, op) < 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        sq_bind_str(ins, 1, listed[i]);
        if (sq_run(st, ins, e, op) < 0)
            goto fail;
    }
    sq_bind_str(del, 1, account);
    if (sq_run(st, del, e, op) < 0)
        goto fail;
    int64_t count = sqlite3_changes64(st->db);
    if (sq_run_id(st, S_LISTED_CLEAR, e, op) < 0 || sq_tx_commit(st, e, op) < 0)
        goto fail;
    if (forgotten)
        *forgotten = count;
    return 0;
fail:
    sq_tx_rollback(st);
    return -1;
}

/* ---- storing a message ------------------------------------------------- */

/* Copy the spool file into the zero-filled blob of message id. */
static int body_from_file(struct store *st, struct store_msg *m, int64_t id, struct err *e)
{
    sqlite3_blob *b = NULL;
    if (sqlite3_blob_open(st->db, "main", "bodies", "raw", id, 1, &b) != SQLITE_OK) {
        sq_dberr(st, e, "open body blob");
        sqlite3_blob_close(b);
        return -1;
    }
    unsigned char *buf = malloc(STORE_IO_CHUNK);
    if (!buf) {
        sqlite3_blob_close(b);
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    }
    int r = 0;
    uint64_t off = 0;
    while (off < m->sp.size) {
        size_t want = m->sp.size - off < STORE_IO_CHUNK ? (size_t)(m->sp.size - off) : STORE_IO_CHUNK;
        ssize_t got = pread(m->sp.fd, buf, want, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            r = err_set(e, ERR_INTERNAL, "store: cannot read spool file in %s: %s", st->dir,
                        got < 0 ? strerror(errno) : "unexpected end of file");
            break;
        }
        if (sqlite3_blob_write(b, buf, (int)got, (int)off) != SQLITE_OK) {
            r = sq_dberr(st, e, "write body blob");
            break;
        }
        off += (uint64_t)got;
    }
    free(buf);
    if (sqlite3_blob_close(b) != SQLITE_OK && r == 0)
        r = sq_dberr(st, e, "close body blob");
    return r;
}

/* The first message of account with this Message-ID stored since `since`
 * (not itself a duplicate): its id, or 0. */
static int find_duplicate(struct store *st, const char *account, const char *message_id,
                          int64_t since, int64_t *dup, struct err *e)
{
    *dup = 0;
    sqlite3_stmt *s = sq_stmt(st, S_DUP_FIND, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    sq_bind_trunc(s, 2, message_id, STORE_META_MAX); /* as it was stored */
    sqlite3_bind_int64(s, 3, since);
    return sq_one(st, s, sq_row_i64, dup, e, "find duplicate") < 0 ? -1 : 0;
}

static int finish_tx(struct store *st, struct store_msg *m, const struct store_msg_meta *meta,
                     const char *const *webhooks, size_t n_webhooks, int64_t now,
                     const char *sha_hex, int64_t *id_out, int64_t *dup_out, struct err *e)
{
    const char *op = "store message";
    int64_t dup = 0, since = 0;
    if (store_dedupe_since(meta, now, &since) &&
        find_duplicate(st, m->account, meta->message_id, since, &dup, e) < 0)
        return -1;
    if (dup)
        n_webhooks = 0; /* recorded, not delivered: done at once */
    *dup_out = dup;
    sqlite3_stmt *s = sq_stmt(st, S_MSG_INS, e);
    if (!s)
        return -1;
    if (dup)
        sqlite3_bind_int64(s, 14, dup);
    sq_bind_str(s, 1, m->account);
    sq_bind_str(s, 2, m->uidl);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)m->sp.size);
    sq_bind_str(s, 4, sha_hex);
    sqlite3_bind_int64(s, 5, now);
    if (meta) {
        sq_bind_trunc(s, 6, meta->subject, STORE_META_MAX);
        sq_bind_trunc(s, 7, meta->from, STORE_META_MAX);
        sq_bind_trunc(s, 8, meta->message_id, STORE_META_MAX);
        sq_bind_trunc(s, 9, meta->date, STORE_META_MAX);
    }
    sq_bind_str(s, 11, meta && meta->kind ? meta->kind : STORE_KIND_MESSAGE);
    sqlite3_bind_int64(s, 12, meta ? (sqlite3_int64)meta->declared_size : 0);
    char key[STORE_KEY_HEX + 1];
    if (store_new_event_key(key, e) < 0)
        return -1;
    sq_bind_str(s, 13, key);
    if (n_webhooks == 0)
        sqlite3_bind_int64(s, 10, now);
    if (sq_run(st, s, e, op) < 0)
        return -1;
    int64_t id = sqlite3_last_insert_rowid(st->db);

    if (!(s = sq_stmt(st, S_BODY_INS, e)))
        return -1;
    sqlite3_bind_int64(s, 1, id);
    if (m->sp.fd < 0)
        sqlite3_bind_blob(s, 2, m->sp.mem ? (const void *)m->sp.mem : "", (int)m->sp.len,
                          SQLITE_STATIC);
    else
        sqlite3_bind_zeroblob64(s, 2, m->sp.size);
    if (sq_run(st, s, e, op) < 0)
        return -1;
    if (m->sp.fd >= 0 && body_from_file(st, m, id, e) < 0)
        return -1;

    if (!(s = sq_stmt(st, S_UIDL_INS_STORED, e)))
        return -1;
    sq_bind_str(s, 1, m->account);
    sq_bind_str(s, 2, m->uidl);
    sqlite3_bind_int(s, 3, n_webhooks ? STORE_UIDL_STORED : STORE_UIDL_DELIVERED);
    sqlite3_bind_int64(s, 4, id);
    sqlite3_bind_int64(s, 5, now);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            err_set(e, ERR_USAGE, "store: UIDL is already known for account %s", m->account);
        else
            sq_dberr(st, e, op);
        sq_done(s);
        return -1;
    }
    sq_done(s);

    if (!(s = sq_stmt(st, S_DELIV_INS, e)))
        return -1;
    for (size_t i = 0; i < n_webhooks; i++) {
        sqlite3_bind_int64(s, 1, id);
        sq_bind_str(s, 2, m->account);
        sq_bind_str(s, 3, webhooks[i]);
        sqlite3_bind_int64(s, 4, now);
        if (sq_run(st, s, e, op) < 0)
            return -1;
    }
    *id_out = id;
    return 0;
}

int sq_msg_store(struct store_msg *m, const struct store_msg_meta *meta,
                 const char *const *webhooks, size_t n_webhooks, int64_t now,
                 const char *sha_hex, int64_t *id, int64_t *dup, struct err *e)
{
    struct store *st = m->st;
    if (sq_tx_begin(st, e, "store message") < 0)
        return -1;
    if (finish_tx(st, m, meta, webhooks, n_webhooks, now, sha_hex, id, dup, e) < 0 ||
        sq_tx_commit(st, e, "store message") < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    return 0;
}

const char *sq_spool_dir(const struct store *st)
{
    return st->dir;
}

/* ---- reading a message ------------------------------------------------- */

static int msg_row(sqlite3_stmt *s, void *p, struct err *e)
{
    (void)e;
    struct store_msg_info *out = p;
    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(s, 0);
    sq_col_copy(s, 1, out->account, sizeof out->account);
    sq_col_copy(s, 2, out->uidl, sizeof out->uidl);
    out->size = (uint64_t)sqlite3_column_int64(s, 3);
    sq_col_copy(s, 4, out->sha256, sizeof out->sha256);
    out->received_at = sqlite3_column_int64(s, 5);
    out->delivered_at = sqlite3_column_int64(s, 6);
    out->body_purged_at = sqlite3_column_int64(s, 7);
    sq_col_copy(s, 8, out->subject, sizeof out->subject);
    sq_col_copy(s, 9, out->from, sizeof out->from);
    sq_col_copy(s, 10, out->message_id, sizeof out->message_id);
    sq_col_copy(s, 11, out->date, sizeof out->date);
    sq_col_copy(s, 12, out->kind, sizeof out->kind);
    out->declared_size = (uint64_t)sqlite3_column_int64(s, 13);
    sq_col_copy(s, 14, out->key, sizeof out->key);
    out->duplicate_of = sqlite3_column_int64(s, 15);
    return 0;
}

int sq_msg_get(struct store *st, int64_t id, struct store_msg_info *out, struct err *e)
{
    sqlite3_stmt *s = sq_stmt(st, S_MSG_GET, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    return sq_one(st, s, msg_row, out, e, "get message");
}

/* Length of the body of message id; STORE_NOTFOUND if none. */
int sq_body_len(struct store *st, int64_t id, uint64_t *len, struct err *e)
{
    sqlite3_stmt *s = sq_stmt(st, S_BODY_LEN, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    int64_t n = 0;
    int r = sq_one(st, s, sq_row_i64, &n, e, "get body length");
    if (r == 0)
        *len = (uint64_t)n;
    return r;
}

int sq_msg_stream(struct store *st, int64_t id, store_sink_cb sink, void *ctx,
                  struct err *e)
{
    err_clear(e);
    sqlite3_blob *b = NULL;
    int rc = sqlite3_blob_open(st->db, "main", "bodies", "raw", id, 0, &b);
    if (rc != SQLITE_OK) {
        sqlite3_blob_close(b);
        /* "no such rowid" is SQLITE_ERROR; tell it apart from real failures */
        uint64_t len;
        int r = sq_body_len(st, id, &len, e);
        if (r == STORE_NOTFOUND)
            return STORE_NOTFOUND;
        return r < 0 ? -1 : sq_dberr(st, e, "open body blob");
    }
    unsigned char *buf = malloc(STORE_IO_CHUNK);
    if (!buf) {
        sqlite3_blob_close(b);
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    }
    int total = sqlite3_blob_bytes(b), r = 0;
    for (int off = 0; off < total;) {
        int n = total - off < (int)STORE_IO_CHUNK ? total - off : (int)STORE_IO_CHUNK;
        if (sqlite3_blob_read(b, buf, n, off) != SQLITE_OK) {
            r = sq_dberr(st, e, "read body blob");
            break;
        }
        if (sink(ctx, buf, (size_t)n, e) != 0) {
            r = store_cb_stop(e);
            break;
        }
        off += n;
    }
    free(buf);
    sqlite3_blob_close(b);
    return r;
}

int sq_body_open(struct store *st, int64_t id, struct store_body **out, uint64_t *size,
                 struct err *e)
{
    *out = NULL;
    uint64_t len = 0;
    int r = sq_body_len(st, id, &len, e);
    if (r != 0)
        return r;
    struct store_body *b = calloc(1, sizeof *b);
    if (!b)
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    b->hdr.ops = &store_sqlite_ops;
    b->id = id;
    if (sqlite3_open_v2(st->path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: open body reader: %s",
                b->db ? sqlite3_errmsg(b->db) : "out of memory");
        sq_body_close(b);
        return -1;
    }
    sq_conn_setup(b->db);
    if (size)
        *size = len;
    *out = b;
    return 0;
}

int sq_body_read(struct store_body *b, uint64_t offset, void *buf, size_t len, size_t *got,
                 struct err *e)
{
    *got = 0;
    sqlite3_blob *h = NULL;
    if (sqlite3_blob_open(b->db, "main", "bodies", "raw", b->id, 0, &h) != SQLITE_OK) {
        char idbuf[STORE_ID_MAX];
        err_set(e, ERR_INTERNAL, "store: read body of %s: %s", store_msg_id_format(b->id, idbuf),
                sqlite3_errmsg(b->db));
        sqlite3_blob_close(h);
        return -1;
    }
    uint64_t total = (uint64_t)sqlite3_blob_bytes(h);
    int r = 0;
    if (offset < total) {
        uint64_t n = total - offset;
        if (n > len)
            n = len;
        if (sqlite3_blob_read(h, buf, (int)n, (int)offset) != SQLITE_OK)
            r = err_set(e, ERR_INTERNAL, "store: read body: %s", sqlite3_errmsg(b->db));
        else
            *got = (size_t)n;
    }
    sqlite3_blob_close(h);
    return r;
}

void sq_body_close(struct store_body *b)
{
    if (!b)
        return;
    sqlite3_close(b->db);
    free(b);
}

/* ---- retention --------------------------------------------------------- */

/* A purge in one transaction: sel puts the ids of at most max rows older
 * than now - retention_ms into temp.purge (?1 the limit of age, ?2 max),
 * then each of steps runs (with now as ?1 where it takes a parameter).
 * *purged (may be NULL) gets the number of ids. */
static int purge_run(struct store *st, enum sid sel_id, const enum sid *steps, size_t n_steps,
                     int64_t retention_ms, int64_t now, size_t max, int64_t *purged,
                     struct err *e, const char *op)
{
    if (retention_ms < 0)
        return err_set(e, ERR_USAGE, "store: purge: negative retention");
    sqlite3_stmt *sel = sq_stmt(st, sel_id, e);
    if (!sel || sq_tx_begin(st, e, op) < 0)
        return -1;
    sqlite3_bind_int64(sel, 1, now - retention_ms);
    sqlite3_bind_int64(sel, 2, max == 0 || max > INT64_MAX ? -1 : (sqlite3_int64)max);
    int64_t count = 0;
    if (sq_run_id(st, S_PURGE_CLEAR, e, op) < 0 || sq_run(st, sel, e, op) < 0)
        goto fail;
    count = sqlite3_changes64(st->db);
    for (size_t i = 0; i < n_steps; i++) {
        sqlite3_stmt *s = sq_stmt(st, steps[i], e);
        if (!s)
            goto fail;
        if (sqlite3_bind_parameter_count(s) > 0)
            sqlite3_bind_int64(s, 1, now);
        if (sq_run(st, s, e, op) < 0)
            goto fail;
    }
    if (sq_run_id(st, S_PURGE_CLEAR, e, op) < 0 || sq_tx_commit(st, e, op) < 0)
        goto fail;
    if (purged)
        *purged = count;
    return 0;
fail:
    sq_tx_rollback(st);
    return -1;
}

int sq_purge_bodies(struct store *st, int64_t retention_ms, int64_t now, size_t max,
                    int64_t *purged, struct err *e)
{
    static const enum sid steps[] = {S_PURGE_BODIES, S_PURGE_MARK};
    return purge_run(st, S_PURGE_SEL, steps, sizeof steps / sizeof steps[0], retention_ms, now,
                     max, purged, e, "purge bodies");
}

int sq_purge_events(struct store *st, int64_t retention_ms, int64_t now, size_t max,
                    int64_t *purged, struct err *e)
{
    static const enum sid steps[] = {S_EVPURGE_ATTEMPTS, S_EVPURGE_DELIVERIES, S_EVPURGE_EVENTS};
    return purge_run(st, S_EVPURGE_SEL, steps, sizeof steps / sizeof steps[0], retention_ms, now,
                     max, purged, e, "purge events");
}
