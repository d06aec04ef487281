/*
 * store_sqlite_acct — the SQLite store's account state and leases,
 * instances, OAuth2 tokens and statistics; see bridge/store_sqlite_impl.h.
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

/* ---- accounts ---------------------------------------------------------- */

static int account_row(sqlite3_stmt *s, void *p, struct err *e)
{
    (void)e;
    struct store_account_state *out = p;
    memset(out, 0, sizeof *out);
    sq_col_copy(s, 0, out->state, sizeof out->state);
    sq_col_copy(s, 1, out->last_error, sizeof out->last_error);
    out->last_attempt_at = sqlite3_column_int64(s, 2);
    out->last_success_at = sqlite3_column_int64(s, 3);
    out->backoff_until = sqlite3_column_int64(s, 4);
    sq_col_copy(s, 5, out->last_error_code, sizeof out->last_error_code);
    return 0;
}

int sq_account_get(struct store *st, const char *account, struct store_account_state *out,
                   struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    sqlite3_stmt *s = sq_stmt(st, S_ACC_GET, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    return sq_one(st, s, account_row, out, e, "get account state");
}

int sq_account_set(struct store *st, const char *account,
                   const struct store_account_state *in, struct err *e)
{
    size_t sl = 0;
    if (store_check_account_state(account, in, &sl, e) < 0)
        return -1;
    const char *op = "set account state";
    sqlite3_stmt *s = sq_stmt(st, S_ACC_SET, e);
    if (!s || sq_tx_begin(st, e, op) < 0)
        return -1;
    sq_bind_str(s, 1, account);
    sqlite3_bind_text(s, 2, in->state, (int)sl, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, in->last_error, (int)strnlen(in->last_error, STORE_ERROR_MAX),
                      SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, in->last_attempt_at);
    sqlite3_bind_int64(s, 5, in->last_success_at);
    sqlite3_bind_int64(s, 6, in->backoff_until);
    sqlite3_bind_text(s, 7, in->last_error_code,
                      (int)strnlen(in->last_error_code, STORE_ERROR_CODE_MAX), SQLITE_STATIC);
    if (sq_run(st, s, e, op) < 0 || sq_tx_commit(st, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    return 0;
}

int sq_account_lease(struct store *st, const char *account, const char *owner, int64_t now,
                     int64_t lease_ms, struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_owner(owner, e) < 0)
        return -1;
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: account lease: lease_ms must be positive");
    const char *op = "lease account";
    sqlite3_stmt *s = sq_stmt(st, S_ACC_LEASE, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    sq_bind_str(s, 2, owner);
    sqlite3_bind_int64(s, 3, now + lease_ms);
    sqlite3_bind_int64(s, 4, now);
    int64_t c = 0;
    if (sq_write(st, s, &c, e, op) < 0)
        return -1;
    return c ? 0 : STORE_LEASE_LOST;
}

int sq_account_renew(struct store *st, const char *owner, int64_t now, int64_t lease_ms,
                     int64_t *renewed, struct err *e)
{
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: renew account leases: lease_ms must be positive");
    return sq_lease_write(st, S_ACC_RENEW, owner, now + lease_ms, renewed, e,
                       "renew account leases");
}

int sq_account_give_back(struct store *st, const char *account, const char *owner,
                         struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_owner(owner, e) < 0)
        return -1;
    const char *op = "give back account lease";
    sqlite3_stmt *s = sq_stmt(st, S_ACC_GIVE_BACK, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    sq_bind_str(s, 2, owner);
    int64_t c = 0;
    if (sq_write(st, s, &c, e, op) < 0)
        return -1;
    return c ? 0 : STORE_LEASE_LOST;
}

int sq_account_release(struct store *st, const char *owner, int64_t *released,
                       struct err *e)
{
    return sq_lease_write(st, S_ACC_RELEASE_ALL, owner, 0, released, e, "release account leases");
}

static int count1(struct store *st, enum sid id, const char *account, int64_t *out,
                  struct err *e)
{
    sqlite3_stmt *s = sq_stmt(st, id, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    return sq_one(st, s, sq_row_i64, out, e, "count for account") < 0 ? -1 : 0;
}

int sq_account_counts(struct store *st, const char *account,
                      struct store_account_counts *out, struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    memset(out, 0, sizeof *out);
    if (count1(st, S_ACC_STORED, account, &out->stored, e) < 0 ||
        count1(st, S_ACC_PENDING, account, &out->pending_deliveries, e) < 0)
        return -1;
    return 0;
}

/* ---- statistics ---------------------------------------------------------- */

static int two_i64_row(sqlite3_stmt *s, void *out, struct err *e)
{
    (void)e;
    ((int64_t *)out)[0] = sqlite3_column_int64(s, 0);
    ((int64_t *)out)[1] = sqlite3_column_int64(s, 1); /* NULL (no rows) reads as 0 */
    return 0;
}

/* Attempts of webhook started in (from, to]: count and 2xx. */
static int wh_attempts(struct store *st, const char *webhook, int64_t from, int64_t to,
                       int64_t *all, int64_t *ok, struct err *e)
{
    sqlite3_stmt *s = sq_stmt(st, S_WH_ATTEMPTS, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, webhook);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, to);
    int64_t v[2] = {0, 0};
    if (sq_one(st, s, two_i64_row, v, e, "count a webhook's attempts") < 0)
        return -1;
    *all = v[0];
    *ok = v[1];
    return 0;
}

/* The nearest-rank percentile pct (1..100) of n > 0 latencies in (from, to]. */
static int wh_latency(struct store *st, const char *webhook, int64_t from, int64_t to, int64_t n,
                      int pct, int64_t *out, struct err *e)
{
    int64_t rank = (n * pct + 99) / 100; /* ceil(n * pct / 100), 1..n */
    sqlite3_stmt *s = sq_stmt(st, S_WH_LATENCY, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, webhook);
    sqlite3_bind_int64(s, 2, from);
    sqlite3_bind_int64(s, 3, to);
    sqlite3_bind_int64(s, 4, rank < 1 ? 0 : rank - 1);
    int r = sq_one(st, s, sq_row_i64, out, e, "read a webhook's latency");
    if (r == STORE_NOTFOUND)
        *out = -1; /* rows went away meanwhile (a purge) */
    return r < 0 ? -1 : 0;
}

static int wh_last_error_row(sqlite3_stmt *s, void *p, struct err *e)
{
    (void)e;
    struct store_webhook_stats *out = p;
    out->last_error_at = sqlite3_column_int64(s, 0);
    out->last_error_status = sqlite3_column_int(s, 1);
    sq_col_copy(s, 2, out->last_error, sizeof out->last_error);
    return 0;
}

int sq_webhook_stats(struct store *st, const char *webhook, int64_t now,
                     struct store_webhook_stats *out, struct err *e)
{
    if (store_webhook_stats_init(webhook, out, e) < 0)
        return -1;
    if (wh_attempts(st, webhook, now - STORE_HOUR_MS, now, &out->attempts_hour,
                    &out->delivered_hour, e) < 0 ||
        wh_attempts(st, webhook, now - STORE_DAY_MS, now, &out->attempts_day,
                    &out->delivered_day, e) < 0)
        return -1;
    if (out->attempts_day > 0 &&
        (wh_latency(st, webhook, now - STORE_DAY_MS, now, out->attempts_day, 50, &out->p50_ms,
                    e) < 0 ||
         wh_latency(st, webhook, now - STORE_DAY_MS, now, out->attempts_day, 99, &out->p99_ms,
                    e) < 0))
        return -1;
    sqlite3_stmt *s = sq_stmt(st, S_WH_LAST_ERROR, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, webhook);
    return sq_one(st, s, wh_last_error_row, out, e, "read a webhook's last error") < 0 ? -1 : 0;
}

/* Add each row's counts (columns 1.., by hour in column 0) to the bucket of
 * its hour: field offsets into struct store_hour. */
static int hourly_add(struct store *st, enum sid id, int64_t first_hour, size_t hours,
                      struct store_hour *out, const size_t *fields, int nfields, struct err *e)
{
    sqlite3_stmt *s = sq_stmt(st, id, e);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, first_hour * STORE_HOUR_MS);
    sqlite3_bind_int64(s, 2, (first_hour + (int64_t)hours) * STORE_HOUR_MS);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t h = sqlite3_column_int64(s, 0) - first_hour;
        if (h < 0 || h >= (int64_t)hours)
            continue;
        for (int f = 0; f < nfields; f++)
            *(int64_t *)((char *)&out[h] + fields[f]) = sqlite3_column_int64(s, f + 1);
    }
    int r = rc == SQLITE_DONE ? 0 : sq_dberr(st, e, "count by hour");
    sq_done(s);
    return r;
}

int sq_stats_hourly(struct store *st, int64_t now, size_t hours, struct store_hour *out,
                    struct err *e)
{
    int64_t first = 0;
    if (store_hours_init(now, hours, out, &first, e) < 0)
        return -1;
    static const size_t msg_f[] = {offsetof(struct store_hour, received)};
    static const size_t att_f[] = {offsetof(struct store_hour, attempts),
                                   offsetof(struct store_hour, delivered)};
    if (hourly_add(st, S_HOURLY_MSGS, first, hours, out, msg_f, 1, e) < 0 ||
        hourly_add(st, S_HOURLY_ATTEMPTS, first, hours, out, att_f, 2, e) < 0)
        return -1;
    return 0;
}

/* ---- OAuth2 tokens ------------------------------------------------------ */

static void blob_copy(sqlite3_stmt *s, int i, unsigned char *dst, size_t size, size_t *len)
{
    const void *b = sqlite3_column_blob(s, i);
    size_t n = b ? (size_t)sqlite3_column_bytes(s, i) : 0;
    if (n > size)
        n = 0; /* cannot be stored (check_sealed): treat as none */
    if (n)
        memcpy(dst, b, n);
    *len = n;
}

static int bind_blob(sqlite3_stmt *s, int i, const unsigned char *p, size_t len)
{
    return p ? sqlite3_bind_blob(s, i, p, (int)len, SQLITE_STATIC) : sqlite3_bind_null(s, i);
}

static int oauth2_row(sqlite3_stmt *s, void *p, struct err *e)
{
    (void)e;
    struct store_oauth2 *out = p;
    out->version = sqlite3_column_int64(s, 0);
    out->status = sqlite3_column_int(s, 1) == 1 ? STORE_OAUTH2_INVALID : STORE_OAUTH2_OK;
    sq_col_copy(s, 2, out->flow, sizeof out->flow);
    sq_col_copy(s, 3, out->error, sizeof out->error);
    blob_copy(s, 4, out->access, sizeof out->access, &out->access_len);
    blob_copy(s, 5, out->refresh, sizeof out->refresh, &out->refresh_len);
    out->access_issued_at = sqlite3_column_int64(s, 6);
    out->access_expires_at = sqlite3_column_int64(s, 7);
    out->authorized_at = sqlite3_column_int64(s, 8);
    out->refresh_used_at = sqlite3_column_int64(s, 9);
    out->retry_at = sqlite3_column_int64(s, 10);
    out->failures = sqlite3_column_int(s, 11);
    sq_col_copy(s, 12, out->lease_owner, sizeof out->lease_owner);
    out->lease_until = sqlite3_column_int64(s, 13);
    return 0;
}

/* Read the row (inside or outside a transaction): 0, STORE_NOTFOUND, -1. */
static int oauth2_read(struct store *st, const char *account, struct store_oauth2 *out,
                       struct err *e)
{
    sqlite3_stmt *s = sq_stmt(st, S_OA_GET, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    return sq_one(st, s, oauth2_row, out, e, "get OAuth2 tokens");
}

int sq_oauth2_get(struct store *st, const char *account, struct store_oauth2 *out,
                  struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    return oauth2_read(st, account, out, e);
}

int sq_oauth2_grant(struct store *st, const char *account, const char *flow,
                    const struct store_oauth2_tokens *t, int64_t now, struct err *e)
{
    if (store_check_tokens("an OAuth2 grant", account, flow, t, e) < 0)
        return -1;
    const char *op = "store OAuth2 grant";
    sqlite3_stmt *s = sq_stmt(st, S_OA_GRANT, e);
    if (!s || sq_tx_begin(st, e, op) < 0)
        return -1;
    sq_bind_str(s, 1, account);
    sq_bind_str(s, 2, flow);
    bind_blob(s, 3, t->access, t->access_len);
    bind_blob(s, 4, t->refresh, t->refresh_len);
    sqlite3_bind_int64(s, 5, t->issued_at);
    sqlite3_bind_int64(s, 6, t->expires_at);
    sqlite3_bind_int64(s, 7, now);
    if (sq_run(st, s, e, op) < 0 || sq_tx_commit(st, e, op) < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    return 0;
}

int sq_oauth2_lease(struct store *st, const char *account, const char *owner, int64_t now,
                    int64_t lease_ms, bool create, const char *flow,
                    struct store_oauth2 *out, struct err *e)
{
    if (store_check_oauth2_lease(account, owner, lease_ms, create, flow, e) < 0)
        return -1;
    const char *op = "lease OAuth2 tokens";
    sqlite3_stmt *ins = create ? sq_stmt(st, S_OA_CREATE, e) : NULL,
                 *lease = sq_stmt(st, S_OA_LEASE, e);
    if ((create && !ins) || !lease || sq_tx_begin(st, e, op) < 0)
        return -1;
    int r = oauth2_read(st, account, out, e);
    if (r == STORE_NOTFOUND && create) {
        sq_bind_str(ins, 1, account);
        sq_bind_str(ins, 2, flow);
        if (sq_run(st, ins, e, op) < 0)
            goto fail;
        r = oauth2_read(st, account, out, e);
    }
    if (r < 0 || r == STORE_NOTFOUND) {
        if (r < 0)
            goto fail;
        sq_tx_rollback(st);
        return STORE_NOTFOUND;
    }
    if (out->status == STORE_OAUTH2_INVALID) {
        sq_tx_rollback(st);
        return 0;
    }
    if (out->lease_until > now && strcmp(out->lease_owner, owner) != 0) {
        sq_tx_rollback(st);
        return STORE_OAUTH2_BUSY;
    }
    sq_bind_str(lease, 1, account);
    sq_bind_str(lease, 2, owner);
    sqlite3_bind_int64(lease, 3, now + lease_ms);
    if (sq_run(st, lease, e, op) < 0 || sq_tx_commit(st, e, op) < 0)
        goto fail;
    snprintf(out->lease_owner, sizeof out->lease_owner, "%s", owner);
    out->lease_until = now + lease_ms;
    return 0;
fail:
    sq_tx_rollback(st);
    return -1;
}

/* Run a compare-and-set UPDATE of one row: 0, STORE_LEASE_LOST (version
 * changed), STORE_NOTFOUND (no row), -1. */
static int oauth2_cas(struct store *st, sqlite3_stmt *s, const char *account, struct err *e,
                      const char *op)
{
    if (sq_tx_begin(st, e, op) < 0) {
        sq_done(s);
        return -1;
    }
    if (sq_run(st, s, e, op) < 0)
        goto fail;
    int64_t changed = sqlite3_changes64(st->db);
    int r = 0;
    if (changed == 0) {
        struct store_oauth2 *row = malloc(sizeof *row);
        if (!row) {
            err_set(e, ERR_INTERNAL, "store: out of memory");
            goto fail;
        }
        r = oauth2_read(st, account, row, e);
        OPENSSL_cleanse(row, sizeof *row);
        free(row);
        if (r < 0)
            goto fail;
        r = r == STORE_NOTFOUND ? STORE_NOTFOUND : STORE_LEASE_LOST;
    }
    if (sq_tx_commit(st, e, op) < 0)
        goto fail;
    return r;
fail:
    sq_tx_rollback(st);
    return -1;
}

int sq_oauth2_refreshed(struct store *st, const char *account, int64_t version,
                        const struct store_oauth2_tokens *t, int64_t now, struct err *e)
{
    if (store_check_tokens("a refresh", account, NULL, t, e) < 0)
        return -1;
    sqlite3_stmt *s = sq_stmt(st, S_OA_REFRESHED, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    sqlite3_bind_int64(s, 2, version);
    bind_blob(s, 3, t->access, t->access_len);
    bind_blob(s, 4, t->refresh, t->refresh_len);
    sqlite3_bind_int64(s, 5, t->issued_at);
    sqlite3_bind_int64(s, 6, t->expires_at);
    sqlite3_bind_int64(s, 7, now);
    return oauth2_cas(st, s, account, e, "save refreshed OAuth2 tokens");
}

int sq_oauth2_failed(struct store *st, const char *account, int64_t version, bool invalid,
                     const char *error, int64_t retry_at, struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    sqlite3_stmt *s = sq_stmt(st, S_OA_FAILED, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    sqlite3_bind_int64(s, 2, version);
    sqlite3_bind_int(s, 3, invalid ? 1 : 0);
    sq_bind_trunc(s, 4, error ? error : "", STORE_ERROR_MAX);
    sqlite3_bind_int64(s, 5, retry_at);
    return oauth2_cas(st, s, account, e, "record failed OAuth2 refresh");
}

int sq_oauth2_release(struct store *st, const char *account, const char *owner,
                      struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_owner(owner, e) < 0)
        return -1;
    const char *op = "release OAuth2 lease";
    sqlite3_stmt *s = sq_stmt(st, S_OA_RELEASE, e);
    if (!s)
        return -1;
    sq_bind_str(s, 1, account);
    sq_bind_str(s, 2, owner);
    return sq_write(st, s, NULL, e, op);
}

/* ---- account leases and instances ----------------------------------------------- */

/* Prepare sql (uncached: these run once per poll or heartbeat). */
static sqlite3_stmt *prep(struct store *st, const char *sql, struct err *e, const char *op)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
        sq_dberr(st, e, op);
        sqlite3_finalize(s);
        return NULL;
    }
    return s;
}

/* Step a prepared one-off write inside its own transaction; finalize it. */
static int write_once(struct store *st, sqlite3_stmt *s, int64_t *changes, struct err *e,
                      const char *op)
{
    if (sq_tx_begin(st, e, op) < 0) {
        sqlite3_finalize(s);
        return -1;
    }
    int rc = sqlite3_step(s);
    int64_t c = sqlite3_changes64(st->db);
    int r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sq_dberr(st, e, op);
    sqlite3_finalize(s);
    if (r == 0)
        r = sq_tx_commit(st, e, op);
    if (r < 0) {
        sq_tx_rollback(st);
        return -1;
    }
    if (changes)
        *changes = c;
    return 0;
}

int sq_account_leases_each(struct store *st, int64_t now, store_lease_cb cb, void *ctx,
                           struct err *e)
{
    err_clear(e);
    const char *op = "list account leases";
    sqlite3_stmt *s = prep(st, "SELECT name, lease_owner, lease_until FROM accounts"
                               " WHERE lease_owner IS NOT NULL AND lease_until > ?1 ORDER BY name",
                           e, op);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, now);
    int rc, r = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(s, 0);
        const char *o = (const char *)sqlite3_column_text(s, 1);
        if (cb(ctx, a ? a : "", o ? o : "", sqlite3_column_int64(s, 2), e) != 0) {
            r = store_cb_stop(e);
            break;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sq_dberr(st, e, op);
    sqlite3_finalize(s);
    return r;
}

int sq_instance_beat(struct store *st, const struct store_instance *in, struct err *e)
{
    if (store_check_instance(in, e) < 0)
        return -1;
    const char *op = "instance heartbeat";
    sqlite3_stmt *s = prep(st,
                           "INSERT INTO instances(id, host, public_url, started_at, heartbeat_at)"
                           " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO UPDATE SET"
                           " host = excluded.host, public_url = excluded.public_url,"
                           " started_at = excluded.started_at,"
                           " heartbeat_at = excluded.heartbeat_at",
                           e, op);
    if (!s)
        return -1;
    sq_bind_str(s, 1, in->id);
    sq_bind_str(s, 2, in->host);
    sq_bind_str(s, 3, in->public_url);
    sqlite3_bind_int64(s, 4, in->started_at);
    sqlite3_bind_int64(s, 5, in->heartbeat_at);
    return write_once(st, s, NULL, e, op);
}

int sq_instance_remove(struct store *st, const char *id, struct err *e)
{
    if (store_check_owner(id, e) < 0)
        return -1;
    const char *op = "remove instance";
    sqlite3_stmt *s = prep(st, "DELETE FROM instances WHERE id = ?1", e, op);
    if (!s)
        return -1;
    sq_bind_str(s, 1, id);
    return write_once(st, s, NULL, e, op);
}

static int instance_row(sqlite3_stmt *s, void *p, struct err *e)
{
    (void)e;
    struct store_instance *i = p;
    memset(i, 0, sizeof *i);
    sq_col_copy(s, 0, i->id, sizeof i->id);
    sq_col_copy(s, 1, i->host, sizeof i->host);
    sq_col_copy(s, 2, i->public_url, sizeof i->public_url);
    i->started_at = sqlite3_column_int64(s, 3);
    i->heartbeat_at = sqlite3_column_int64(s, 4);
    return 0;
}

#define INSTANCE_COLS "SELECT id, host, public_url, started_at, heartbeat_at FROM instances "

int sq_instances_each(struct store *st, int64_t live_since, int64_t forget_before,
                      store_instance_cb cb, void *ctx, struct err *e)
{
    err_clear(e);
    const char *op = "list instances";
    if (forget_before > 0) {
        sqlite3_stmt *d = prep(st, "DELETE FROM instances WHERE heartbeat_at < ?1", e, op);
        if (!d)
            return -1;
        sqlite3_bind_int64(d, 1, forget_before);
        if (write_once(st, d, NULL, e, op) < 0)
            return -1;
    }
    sqlite3_stmt *s = prep(st, INSTANCE_COLS "WHERE heartbeat_at >= ?1 ORDER BY started_at, id",
                           e, op);
    if (!s)
        return -1;
    sqlite3_bind_int64(s, 1, live_since);
    int rc, r = 0;
    struct store_instance i;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        instance_row(s, &i, e);
        if (cb(ctx, &i, e) != 0) {
            r = store_cb_stop(e);
            break;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sq_dberr(st, e, op);
    sqlite3_finalize(s);
    return r;
}

int sq_instance_get(struct store *st, const char *id, struct store_instance *out,
                    struct err *e)
{
    if (store_check_owner(id, e) < 0)
        return -1;
    sqlite3_stmt *s = prep(st, INSTANCE_COLS "WHERE id = ?1", e, "get instance");
    if (!s)
        return -1;
    sq_bind_str(s, 1, id);
    int r = sq_one(st, s, instance_row, out, e, "get instance");
    sqlite3_finalize(s);
    return r;
}

/* ---- poll history ---------------------------------------------------------- */

/* One instance by construction: the history stays in pollhist's memory
 * (include/store.h, "poll history"). */
int sq_poll_record(struct store *st, const char *account, const struct store_poll_write *w,
                   bool *session_saved, struct err *e)
{
    (void)st, (void)account, (void)w;
    if (session_saved)
        *session_saved = false;
    return err_set(e, ERR_USAGE, "store: record a poll: the poll history is not kept on SQLite "
                                 "(one instance: it stays in memory)");
}

int sq_poll_history(struct store *st, const char *account, struct pollhist_session *s,
                    struct store_poll *out, size_t max, size_t *n, struct err *e)
{
    (void)st, (void)account, (void)s, (void)out, (void)max;
    if (n)
        *n = 0;
    return err_set(e, ERR_USAGE, "store: read the poll history: it is not kept on SQLite "
                                 "(one instance: it stays in memory)");
}
