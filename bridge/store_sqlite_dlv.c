/*
 * store_sqlite_dlv — the SQLite store's deliveries (leases, attempts,
 * listing, drop, bulk retry), disabled webhooks, the link key and events that
 * are not messages; see bridge/store_sqlite_impl.h.
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

/* ---- deliveries -------------------------------------------------------- */

static void delivery_row(sqlite3_stmt *s, struct store_delivery *d)
{
    d->id = sqlite3_column_int64(s, 0);
    d->msg_id = sqlite3_column_int64(s, 1);
    sq_col_copy(s, 2, d->account, sizeof d->account);
    sq_col_copy(s, 3, d->uidl, sizeof d->uidl);
    sq_col_copy(s, 4, d->webhook, sizeof d->webhook);
    d->status = (enum store_dstatus)sqlite3_column_int(s, 5);
    d->attempts = sqlite3_column_int(s, 6);
    d->created_at = sqlite3_column_int64(s, 7);
    d->updated_at = sqlite3_column_int64(s, 8);
    d->next_attempt_at = sqlite3_column_int64(s, 9);
    d->delivered_at = sqlite3_column_int64(s, 10);
    d->last_http_status = sqlite3_column_int(s, 11);
    sq_col_copy(s, 12, d->last_error, sizeof d->last_error);
    sq_col_copy(s, 13, d->msg_key, sizeof d->msg_key);
    sq_col_copy(s, 14, d->lease_owner, sizeof d->lease_owner);
    d->lease_until = sqlite3_column_int64(s, 15);
    d->event_id = sqlite3_column_int64(s, 16);
    sq_col_copy(s, 17, d->event_type, sizeof d->event_type);
}

static int delivery_row_read(sqlite3_stmt *s, void *d, struct err *e)
{
    (void)e;
    delivery_row(s, d);
    return 0;
}

int sq_delivery_lease_due(struct store *st, const char *owner, const char *webhook,
                          int64_t now, int64_t lease_ms, struct store_delivery *out,
                          size_t max, size_t *n, struct err *e)
{
    *n = 0;
    if (store_check_lease_due(owner, webhook, lease_ms, max, e) < 0)
        return -1;
    if (max == 0)
        return 0;
    const char *op = "lease due deliveries";
    sqlite3_stmt *sel = sq_stmt(st, webhook ? S_DUE_WH : S_DUE, e),
                 *lease = sq_stmt(st, S_LEASE, e);
    if (!sel || !lease || sq_tx_begin(st, e, op) < 0)
        return -1;
    sqlite3_bind_int64(sel, 1, now);
    sqlite3_bind_int64(sel, 2, (sqlite3_int64)max);
    if (webhook)
        sq_bind_str(sel, 3, webhook);
    size_t k = 0;
    int rc = SQLITE_DONE;
    while (k < max && (rc = sqlite3_step(sel)) == SQLITE_ROW)
        delivery_row(sel, &out[k++]);
    if (k < max && rc != SQLITE_DONE) {
        sq_dberr(st, e, op);
        sq_done(sel);
        sq_tx_rollback(st);
        return -1;
    }
    sq_done(sel);
    for (size_t i = 0; i < k; i++) {
        sqlite3_bind_int64(lease, 1, out[i].id);
        sq_bind_str(lease, 2, owner);
        sqlite3_bind_int64(lease, 3, now + lease_ms);
        if (sq_run(st, lease, e, op) < 0) {
            sq_tx_rollback(st);
            return -1;
        }
        snprintf(out[i].lease_owner, sizeof out[i].lease_owner, "%s", owner);
        out[i].lease_until = now + lease_ms;
    }
    if (sq_tx_commit(st, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    *n = k;
    return 0;
}

static int write1(struct store *st, enum sid id, int64_t *changes, struct err *e, const char *op)
{
    sqlite3_stmt *s = sq_stmt(st, id, e);
    return s ? sq_write(st, s, changes, e, op) : -1;
}

/* One UPDATE of the leases owner holds (renew, release all or one). */
int sq_lease_write(struct store *st, enum sid id, const char *owner, int64_t arg,
                   int64_t *changes, struct err *e, const char *op)
{
    if (store_check_owner(owner, e) < 0)
        return -1;
    sqlite3_stmt *s = sq_stmt(st, id, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, owner);
    if (id != S_RELEASE_ALL && id != S_ACC_RELEASE_ALL)
        sqlite3_bind_int64(s, 2, arg);
    return sq_write(st, s, changes, e, op);
}

int sq_delivery_renew(struct store *st, const char *owner, int64_t now, int64_t lease_ms,
                      int64_t *renewed, struct err *e)
{
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: renew leases: lease_ms must be positive");
    return sq_lease_write(st, S_RENEW, owner, now + lease_ms, renewed, e, "renew delivery leases");
}

int sq_delivery_release(struct store *st, const char *owner, int64_t id, int64_t *released,
                        struct err *e)
{
    return sq_lease_write(st, id ? S_RELEASE_ONE : S_RELEASE_ALL, owner, id, released, e,
                       "release delivery leases");
}

/* Where delivery_status puts a row. */
struct dstatus_out {
    enum store_dstatus *status;
    int64_t *msg_id;
    char *owner;
    int64_t *until;
};

static int dstatus_row(sqlite3_stmt *s, void *p, struct err *e)
{
    (void)e;
    const struct dstatus_out *o = p;
    *o->status = (enum store_dstatus)sqlite3_column_int(s, 0);
    *o->msg_id = sqlite3_column_int64(s, 1);
    if (o->owner)
        sq_col_copy(s, 2, o->owner, STORE_OWNER_MAX + 1);
    if (o->until)
        *o->until = sqlite3_column_int64(s, 3);
    return 0;
}

/* Status, message and lease of delivery id: 0, STORE_NOTFOUND or -1.
 * owner (STORE_OWNER_MAX + 1 bytes) and until may be NULL. */
static int delivery_status(struct store *st, int64_t id, enum store_dstatus *status,
                           int64_t *msg_id, char *owner, int64_t *until, struct err *e)
{
    sqlite3_stmt *s = sq_stmt(st, S_DELIV_STATUS, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    struct dstatus_out o = {status, msg_id, owner, until};
    return sq_one(st, s, dstatus_row, &o, e, "get delivery status");
}

static int attempt_insert(struct store *st, int64_t id, const struct store_attempt *a,
                          enum store_dstatus status, struct err *e)
{
    const char *op = "record delivery attempt";
    sqlite3_stmt *s = sq_stmt(st, S_ATTEMPT_INS, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, a->started_at);
    sqlite3_bind_int64(s, 3, a->duration_ms);
    sqlite3_bind_int(s, 4, a->http_status);
    sq_bind_trunc(s, 5, a->error ? a->error : "", STORE_ERROR_MAX);
    sq_bind_str(s, 6, a->outcome ? a->outcome : store_dstatus_name(status));
    return sq_run(st, s, e, op);
}

static int msg_maybe_delivered(struct store *st, int64_t msg_id, int64_t end, struct err *e,
                               const char *op);

static int record_tx(struct store *st, int64_t id, int64_t msg_id, const struct store_attempt *a,
                     enum store_dstatus status, int64_t next_attempt_at, struct err *e)
{
    const char *op = "record delivery attempt";
    int64_t end = a->started_at + (a->duration_ms > 0 ? a->duration_ms : 0);
    sqlite3_stmt *s = sq_stmt(st, S_DELIV_UPDATE, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, status);
    sqlite3_bind_int64(s, 3, status == STORE_D_FAILED ? next_attempt_at : 0);
    sqlite3_bind_int64(s, 4, end);
    sqlite3_bind_int64(s, 5, status == STORE_D_DELIVERED ? end : 0);
    sqlite3_bind_int(s, 6, a->http_status);
    sq_bind_trunc(s, 7, a->error ? a->error : "", STORE_ERROR_MAX);
    if (sq_run(st, s, e, op) < 0 || attempt_insert(st, id, a, status, e) < 0)
        return -1;
    if (status != STORE_D_DELIVERED)
        return 0;
    return msg_maybe_delivered(st, msg_id, end, e, op);
}

/* When none of message msg_id's deliveries is left to do (each delivered
 * or dropped): the message delivered at `end`, its UIDL "delivered".  An
 * event's delivery (msg_id 0) has no message. */
static int msg_maybe_delivered(struct store *st, int64_t msg_id, int64_t end, struct err *e,
                               const char *op)
{
    sqlite3_stmt *s;
    if (msg_id <= 0)
        return 0;
    if (!(s = sq_stmt(st, S_MSG_UNDELIVERED, e)))
        return -1;
    sqlite3_bind_int64(s, 1, msg_id);
    int64_t left = 0;
    if (sq_one(st, s, sq_row_i64, &left, e, op) < 0)
        return -1;
    if (left > 0)
        return 0;
    if (!(s = sq_stmt(st, S_MSG_SET_DELIVERED, e)))
        return -1;
    sqlite3_bind_int64(s, 1, msg_id);
    sqlite3_bind_int64(s, 2, end);
    if (sq_run(st, s, e, op) < 0 || !(s = sq_stmt(st, S_UIDL_SET_DELIVERED, e)))
        return -1;
    sqlite3_bind_int64(s, 1, msg_id);
    return sq_run(st, s, e, op);
}

int sq_delivery_record(struct store *st, const char *owner, int64_t id,
                       const struct store_attempt *a, enum store_dstatus status,
                       int64_t next_attempt_at, struct err *e)
{
    if (store_check_record(owner, a, status, e) < 0)
        return -1;
    const char *op = "record delivery attempt";
    if (sq_tx_begin(st, e, op) < 0)
        return -1;
    enum store_dstatus cur;
    int64_t msg_id = 0, until = 0;
    char holder[STORE_OWNER_MAX + 1] = "";
    int64_t end = a->started_at + (a->duration_ms > 0 ? a->duration_ms : 0);
    int r = delivery_status(st, id, &cur, &msg_id, holder, &until, e);
    bool lost = r == 0 && ((cur != STORE_D_PENDING && cur != STORE_D_FAILED) ||
                           (holder[0] && strcmp(holder, owner) != 0 && until > end));
    if (r == 0 && lost) {
        r = attempt_insert(st, id, a, status, e);
        if (r == 0)
            r = STORE_LEASE_LOST;
    } else if (r == 0) {
        r = record_tx(st, id, msg_id, a, status, next_attempt_at, e);
    }
    if (r >= 0 && r != STORE_NOTFOUND && sq_tx_commit(st, e, op) < 0)
        r = -1;
    if (r < 0 || r == STORE_NOTFOUND)
        sq_tx_rollback(st);
    return r;
}

int sq_delivery_retry(struct store *st, int64_t id, int64_t now, struct err *e)
{
    const char *op = "retry delivery";
    if (sq_tx_begin(st, e, op) < 0)
        return -1;
    enum store_dstatus cur;
    int64_t msg_id = 0;
    uint64_t len;
    int r = delivery_status(st, id, &cur, &msg_id, NULL, NULL, e);
    if (r == 0)
        r = store_check_settled("retry", "retried", id, cur, e);
    if (r == 0 && msg_id > 0) {
        int b = sq_body_len(st, msg_id, &len, e);
        if (b == STORE_NOTFOUND)
            r = store_err_body_purged(id, e);
        else
            r = b;
    }
    if (r == 0) {
        sqlite3_stmt *s = sq_stmt(st, S_RETRY, e);
        if (!s) {
            r = -1;
        } else {
            sqlite3_bind_int64(s, 1, id);
            sqlite3_bind_int64(s, 2, now);
            r = sq_run(st, s, e, op);
        }
    }
    if (r == 0)
        r = sq_tx_commit(st, e, op);
    if (r != 0)
        sq_tx_rollback(st);
    return r;
}

int sq_delivery_get(struct store *st, int64_t id, struct store_delivery *out,
                    store_attempt_cb cb, void *ctx, struct err *e)
{
    err_clear(e);
    sqlite3_stmt *s = sq_stmt(st, S_DELIV_GET, e), *a = sq_stmt(st, S_ATTEMPTS, e);
    if (!s || !a)
        return -1;
    /* one read transaction: the delivery and its attempts agree */
    if (!st->batch && sq_exec(st, "BEGIN", e, "get delivery") < 0)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    int rc, r = sq_one(st, s, delivery_row_read, out, e, "get delivery");
    if (r == 0 && cb) {
        sqlite3_bind_int64(a, 1, id);
        while ((rc = sqlite3_step(a)) == SQLITE_ROW) {
            const char *er = (const char *)sqlite3_column_text(a, 3);
            const char *oc = (const char *)sqlite3_column_text(a, 4);
            struct store_attempt_row row = {
                .started_at = sqlite3_column_int64(a, 0),
                .duration_ms = sqlite3_column_int64(a, 1),
                .http_status = sqlite3_column_int(a, 2),
                .error = er ? er : "",
                .outcome = oc ? oc : "",
            };
            if (cb(ctx, &row, e) != 0) {
                r = store_cb_stop(e);
                break;
            }
        }
        if (r == 0 && rc != SQLITE_DONE)
            r = sq_dberr(st, e, "get delivery attempts");
        sq_done(a);
    }
    if (!st->batch)
        sq_exec(st, "COMMIT", NULL, "get delivery");
    return r;
}

int sq_delivery_list(struct store *st, const enum store_dstatus *status,
                     const char *account, size_t limit, const char *cursor,
                     store_delivery_cb cb, void *ctx, char *next_cursor, struct err *e)
{
    int64_t before = INT64_MAX;
    if (store_check_list(status, account, limit, cursor, next_cursor, &before, e) < 0)
        return -1;
    enum sid id = status ? (account ? S_LIST_SA : S_LIST_S) : (account ? S_LIST_A : S_LIST_ALL);
    sqlite3_stmt *s = sq_stmt(st, id, e);
    if (!s)
        return -1;
    if (status)
        sqlite3_bind_int(s, sqlite3_bind_parameter_index(s, ":status"), *status);
    if (account)
        sq_bind_str(s, sqlite3_bind_parameter_index(s, ":account"), account);
    sqlite3_bind_int64(s, sqlite3_bind_parameter_index(s, ":before"), before);
    /* one row more than asked tells whether there is a next page */
    sqlite3_bind_int64(s, sqlite3_bind_parameter_index(s, ":limit"), (sqlite3_int64)limit + 1);
    struct store_delivery d;
    size_t k = 0;
    int rc, r = 0;
    int64_t last = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (k == limit) {
            char tmp[STORE_CURSOR_MAX];
            int n = snprintf(tmp, sizeof tmp, "c%" PRId64, last);
            if (n > 0 && (size_t)n < sizeof tmp)
                memcpy(next_cursor, tmp, (size_t)n + 1);
            rc = SQLITE_DONE;
            break;
        }
        memset(&d, 0, sizeof d);
        delivery_row(s, &d);
        last = d.id;
        k++;
        if (cb(ctx, &d, e) != 0) {
            r = store_cb_stop(e);
            next_cursor[0] = '\0';
            break;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sq_dberr(st, e, "list deliveries");
    sq_done(s);
    return r;
}

int sq_delivery_counts(struct store *st, struct store_queue_counts *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = sq_stmt(st, S_COUNTS, e);
    if (!s)
        return -1;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t c = sqlite3_column_int64(s, 1);
        switch (sqlite3_column_int(s, 0)) {
        case STORE_D_PENDING: out->pending = c; break;
        case STORE_D_DELIVERED: out->delivered = c; break;
        case STORE_D_FAILED: out->failed = c; break;
        case STORE_D_DEAD: out->dead = c; break;
        case STORE_D_DROPPED: out->dropped = c; break;
        default: break;
        }
    }
    int r = rc == SQLITE_DONE ? 0 : sq_dberr(st, e, "count deliveries");
    sq_done(s);
    return r;
}

int sq_delivery_next_due(struct store *st, int64_t now, int64_t *at, struct err *e)
{
    *at = 0;
    sqlite3_stmt *s = sq_stmt(st, S_NEXT_DUE, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, now);
    /* NULL (none) reads as 0 */
    return sq_one(st, s, sq_row_i64, at, e, "next due delivery") < 0 ? -1 : 0;
}

/* ---- webhooks ---------------------------------------------------------- */

int sq_webhook_disable(struct store *st, const char *webhook, const char *reason,
                       int64_t now, struct err *e)
{
    if (store_check_name("webhook", webhook, e) < 0)
        return -1;
    const char *op = "disable webhook";
    sqlite3_stmt *s = sq_stmt(st, S_WH_DISABLE, e);
    if (!s || sq_tx_begin(st, e, op) < 0)
        return -1;
    sq_bind_str(s, 1, webhook);
    sq_bind_trunc(s, 2, reason ? reason : "", STORE_ERROR_MAX);
    sqlite3_bind_int64(s, 3, now);
    if (sq_run(st, s, e, op) < 0 || sq_tx_commit(st, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    return 0;
}

int sq_webhooks_enable_all(struct store *st, struct err *e)
{
    return write1(st, S_WH_ENABLE_ALL, NULL, e, "enable webhooks");
}

int sq_webhook_disabled(struct store *st, const char *webhook, bool *disabled,
                        int64_t *since, struct err *e)
{
    if (store_check_name("webhook", webhook, e) < 0)
        return -1;
    sqlite3_stmt *s = sq_stmt(st, S_WH_GET, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, webhook);
    int64_t at = 0;
    int r = sq_one(st, s, sq_row_i64, &at, e, "get webhook state");
    if (r < 0)
        return -1;
    *disabled = r == 0;
    if (since)
        *since = at;
    return 0;
}

/* ---- link key ---------------------------------------------------------- */

struct link_key_out {
    unsigned char *key;
    int64_t *created_at;
    const char *path;
};

static int link_key_row(sqlite3_stmt *s, void *p, struct err *e)
{
    const struct link_key_out *o = p;
    if (sqlite3_column_bytes(s, 0) != STORE_LINK_KEY_LEN)
        return err_set(e, ERR_INTERNAL, "store: the link key in %s is not %d bytes", o->path,
                       STORE_LINK_KEY_LEN);
    memcpy(o->key, sqlite3_column_blob(s, 0), STORE_LINK_KEY_LEN);
    if (o->created_at)
        *o->created_at = sqlite3_column_int64(s, 1);
    return 0;
}

static int link_key_read(struct store *st, unsigned char *key, int64_t *created_at, bool *found,
                         struct err *e)
{
    sqlite3_stmt *s = sq_stmt(st, S_LINK_GET, e);
    if (!s)
        return -1;
    struct link_key_out o = {key, created_at, st->path};
    int r = sq_one(st, s, link_key_row, &o, e, "get the link key");
    *found = r == 0;
    return r < 0 ? -1 : 0;
}

/* Write a new random key: `which` is S_LINK_CREATE (only if none) or S_LINK_SET. */
static int link_key_write(struct store *st, int which, int64_t now, struct err *e)
{
    unsigned char key[STORE_LINK_KEY_LEN];
    const char *op = which == S_LINK_SET ? "rotate the link key" : "create the link key";
    if (RAND_bytes(key, sizeof key) != 1)
        return err_set(e, ERR_INTERNAL, "store: %s: no random bytes", op);
    sqlite3_stmt *s = sq_stmt(st, which, e);
    if (!s || sq_tx_begin(st, e, op) < 0) {
        OPENSSL_cleanse(key, sizeof key);
        return -1;
    }
    sqlite3_bind_blob(s, 1, key, sizeof key, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, now);
    OPENSSL_cleanse(key, sizeof key);
    if (sq_run(st, s, e, op) < 0 || sq_tx_commit(st, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    return 0;
}

int sq_link_key(struct store *st, unsigned char key[STORE_LINK_KEY_LEN], int64_t *created_at,
                int64_t now, struct err *e)
{
    bool found;
    if (!st || !key)
        return err_set(e, ERR_USAGE, "store: link key: no store or buffer");
    if (link_key_read(st, key, created_at, &found, e) < 0)
        return -1;
    if (found)
        return 0;
    /* first use: whoever inserts first wins, everyone reads that one */
    if (link_key_write(st, S_LINK_CREATE, now, e) < 0 ||
        link_key_read(st, key, created_at, &found, e) < 0)
        return -1;
    if (!found)
        return err_set(e, ERR_INTERNAL, "store: the link key vanished after it was made");
    return 0;
}

int sq_link_key_rotate(struct store *st, int64_t now, struct err *e)
{
    if (!st)
        return err_set(e, ERR_USAGE, "store: link key: no store");
    return link_key_write(st, S_LINK_SET, now, e);
}

/* ---- events that are not messages (schema 7) --------------------------------------- */

static int event_insert(struct store *st, const char *account, const char *type,
                        const char *data, const char *const *webhooks, size_t n, int64_t now,
                        int64_t *id_out, struct err *e)
{
    const char *op = "add event";
    char key[STORE_KEY_HEX + 1];
    sqlite3_stmt *s = sq_stmt(st, S_EVENT_INS, e);
    if (!s || store_new_event_key(key, e) < 0)
        return -1;
    sq_bind_str(s, 1, account);
    sq_bind_str(s, 2, type);
    sq_bind_str(s, 3, data);
    sqlite3_bind_int64(s, 4, now);
    sq_bind_str(s, 5, key);
    if (sq_run(st, s, e, op) < 0)
        return -1;
    int64_t id = sqlite3_last_insert_rowid(st->db);
    if (!(s = sq_stmt(st, S_EVENT_DELIV_INS, e)))
        return -1;
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(s, 1, id);
        sq_bind_str(s, 2, account);
        sq_bind_str(s, 3, webhooks[i]);
        sqlite3_bind_int64(s, 4, now);
        if (sq_run(st, s, e, op) < 0)
            return -1;
    }
    *id_out = id;
    return 0;
}

int sq_event_add(struct store *st, const char *account, const char *type, const char *data,
                 const char *const *webhooks, size_t n_webhooks, int64_t now,
                 int64_t *id, struct err *e)
{
    int64_t got = 0;
    if (store_check_event(account, type, data, webhooks, n_webhooks, e) < 0 ||
        sq_tx_begin(st, e, "add event") < 0)
        return -1;
    if (event_insert(st, account, type, data, webhooks, n_webhooks, now, &got, e) < 0 ||
        sq_tx_commit(st, e, "add event") < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    if (id)
        *id = got;
    return 0;
}

/* The newest event's time; NULL (none) leaves *out as it was. */
static int last_event_row(sqlite3_stmt *s, void *out, struct err *e)
{
    (void)e;
    if (sqlite3_column_type(s, 0) != SQLITE_NULL)
        *(int64_t *)out = sqlite3_column_int64(s, 0);
    return 0;
}

int sq_account_event_once(struct store *st, const char *account, const char *type,
                          const char *data, const char *const *webhooks, size_t n_webhooks,
                          int64_t now, int64_t *event_id, struct err *e)
{
    const char *op = "add account event";
    if (event_id)
        *event_id = 0;
    if (store_check_event(account, type, data, webhooks, n_webhooks, e) < 0)
        return -1;
    if (sq_tx_begin(st, e, op) < 0)
        return -1;
    /* read under the write lock: of several instances, one writes it */
    struct store_account_state cur;
    int g = sq_account_get(st, account, &cur, e);
    int r = g < 0 ? -1 : 0;
    int64_t since = g == 0 ? cur.last_success_at : 0, last = -1, got = 0;
    sqlite3_stmt *s = r == 0 ? sq_stmt(st, S_EVENT_LAST, e) : NULL;
    if (r == 0 && !s)
        r = -1;
    if (s) {
        sq_bind_str(s, 1, account);
        sq_bind_str(s, 2, type);
        if (sq_one(st, s, last_event_row, &last, e, op) < 0)
            r = -1;
    }
    if (r == 0 && last < since) /* none yet (-1), or none since the last success */
        r = event_insert(st, account, type, data, webhooks, n_webhooks, now, &got, e);
    if (r == 0 && sq_tx_commit(st, e, op) < 0)
        r = -1;
    if (r < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    if (event_id)
        *event_id = got;
    return 0;
}

struct event_out {
    struct store_event *ev;
    char **data; /* NULL: not wanted */
};

static int event_row(sqlite3_stmt *s, void *p, struct err *e)
{
    const struct event_out *o = p;
    struct store_event *out = o->ev;
    int64_t id = out->id;
    memset(out, 0, sizeof *out);
    out->id = id;
    sq_col_copy(s, 0, out->account, sizeof out->account);
    sq_col_copy(s, 1, out->type, sizeof out->type);
    out->created_at = sqlite3_column_int64(s, 3);
    sq_col_copy(s, 4, out->key, sizeof out->key);
    if (o->data) {
        const char *t = (const char *)sqlite3_column_text(s, 2);
        if (!(*o->data = strdup(t ? t : "{}")))
            return err_set(e, ERR_INTERNAL, "store: out of memory reading event data");
    }
    return 0;
}

int sq_event_get(struct store *st, int64_t id, struct store_event *out, char **data,
                 struct err *e)
{
    if (data)
        *data = NULL;
    sqlite3_stmt *s = sq_stmt(st, S_EVENT_GET, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, id);
    struct store_event ev = {.id = id};
    struct event_out o = {&ev, data};
    int r = sq_one(st, s, event_row, &o, e, "get event");
    if (r == 0)
        *out = ev;
    return r;
}

/* ---- operators: drop, retry in bulk ------------------------------------------------ */

int sq_delivery_drop(struct store *st, int64_t id, int64_t now, struct err *e)
{
    const char *op = "drop delivery";
    if (sq_tx_begin(st, e, op) < 0)
        return -1;
    enum store_dstatus cur;
    int64_t msg_id = 0;
    int r = delivery_status(st, id, &cur, &msg_id, NULL, NULL, e);
    if (r == 0)
        r = store_check_settled("drop", "dropped", id, cur, e);
    if (r == 0) {
        sqlite3_stmt *s = sq_stmt(st, S_DROP, e);
        if (!s) {
            r = -1;
        } else {
            sqlite3_bind_int64(s, 1, id);
            sqlite3_bind_int64(s, 2, now);
            r = sq_run(st, s, e, op);
        }
    }
    if (r == 0)
        r = msg_maybe_delivered(st, msg_id, now, e, op);
    if (r == 0)
        r = sq_tx_commit(st, e, op);
    if (r != 0)
        sq_tx_rollback(st);
    return r;
}

int sq_delivery_retry_bulk(struct store *st, const char *webhook, enum store_dstatus status,
                           size_t max, int64_t now, int64_t *retried, struct err *e)
{
    const char *op = "retry deliveries";
    if (retried)
        *retried = 0;
    if (store_check_retry_bulk(webhook, status, max, e) < 0)
        return -1;
    sqlite3_stmt *s = sq_stmt(st, S_RETRY_BULK, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, now);
    sqlite3_bind_int(s, 2, status);
    if (webhook)
        sq_bind_str(s, 3, webhook);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)max);
    int64_t n = 0;
    if (sq_write(st, s, &n, e, op) < 0)
        return -1;
    if (retried)
        *retried = n;
    return 0;
}
