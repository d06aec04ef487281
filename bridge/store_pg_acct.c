/*
 * store_pg_acct — the PostgreSQL store's account state and leases,
 * instances, statistics and OAuth2 tokens; see bridge/store_pg_impl.h.
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

/* ---- accounts ---------------------------------------------------------- */

static void account_state_row(PGresult *r, int i, void *p)
{
    struct store_account_state *out = p;
    memset(out, 0, sizeof *out);
    pg_gstr(r, i, 0, out->state, sizeof out->state);
    pg_gstr(r, i, 1, out->last_error, sizeof out->last_error);
    out->last_attempt_at = pg_g64(r, i, 2);
    out->last_success_at = pg_g64(r, i, 3);
    out->backoff_until = pg_g64(r, i, 4);
    pg_gstr(r, i, 5, out->last_error_code, sizeof out->last_error_code);
}

int pg_account_get(struct store *st, const char *account, struct store_account_state *out,
                   struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    return pq_one(st, NULL,
                  "SELECT state, last_error, last_attempt_at, last_success_at, backoff_until,"
                  " last_error_code FROM accounts WHERE name = $1",
                  &q, account_state_row, out, e, "get account state");
}

/* The upsert of an account's state: $1 the account, its six values from $b
 * on (account_state_params), into sql[ACCOUNT_UPSERT_SQL]. */
#define ACCOUNT_UPSERT_SQL 640
static void account_upsert_sql(char *sql, int b)
{
    snprintf(sql, ACCOUNT_UPSERT_SQL,
             "INSERT INTO accounts(name, state, last_error, last_attempt_at,"
             " last_success_at, backoff_until, last_error_code)"
             " VALUES ($1, $%d, $%d, $%d, $%d, $%d, $%d)"
             " ON CONFLICT (name) DO UPDATE SET state = excluded.state,"
             " last_error = excluded.last_error, last_attempt_at = excluded.last_attempt_at,"
             " last_success_at = excluded.last_success_at,"
             " backoff_until = excluded.backoff_until,"
             " last_error_code = excluded.last_error_code",
             b, b + 1, b + 2, b + 3, b + 4, b + 5);
}

/* in's six values onto q (checked as store_account_set checks them). */
static int account_state_params(struct pq *q, const char *account,
                                const struct store_account_state *in, struct err *e)
{
    size_t sl = 0;
    if (store_check_account_state(account, in, &sl, e) < 0)
        return -1;
    pq_trunc(q, in->state, sl); /* q borrows the strings: in's own */
    pq_trunc(q, in->last_error, STORE_ERROR_MAX);
    pq_i64(q, in->last_attempt_at);
    pq_i64(q, in->last_success_at);
    pq_i64(q, in->backoff_until);
    pq_trunc(q, in->last_error_code, STORE_ERROR_CODE_MAX);
    return 0;
}

int pg_account_set(struct store *st, const char *account,
                   const struct store_account_state *in, struct err *e)
{
    struct pq q = {0};
    pq_text(&q, account);
    if (account_state_params(&q, account, in, e) < 0) {
        pq_free(&q);
        return -1;
    }
    char sql[ACCOUNT_UPSERT_SQL];
    account_upsert_sql(sql, 2);
    return pg_write1(st, sql, &q, NULL, e, "set account state");
}

static void account_counts_row(PGresult *r, int i, void *p)
{
    struct store_account_counts *out = p;
    out->stored = pg_g64(r, i, 0);
    out->pending_deliveries = pg_g64(r, i, 1);
}

int pg_account_counts(struct store *st, const char *account,
                      struct store_account_counts *out, struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    memset(out, 0, sizeof *out);
    struct pq q = {0};
    pq_text(&q, account);
    int rv = pq_one(st, NULL,
                    "SELECT (SELECT count(*) FROM messages WHERE account = $1"
                    "   AND body_purged_at IS NULL),"
                    " (SELECT count(*) FROM deliveries WHERE account = $1 AND status IN (0, 2)"
                    "   AND status <> 1)", /* deliveries_account_status's rows */
                    &q, account_counts_row, out, e, "count for account");
    return rv == STORE_NOTFOUND ? 0 : rv; /* an aggregate has its row */
}

int pg_account_lease(struct store *st, const char *account, const char *owner,
                     int64_t now, int64_t lease_ms, struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_owner(owner, e) < 0)
        return -1;
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: account lease: lease_ms must be positive");
    struct pq q = {0};
    pq_text(&q, account);
    pq_text(&q, owner);
    pq_i64(&q, now);
    pq_i64(&q, now + lease_ms);
    /* one statement: the row made if missing, taken unless another owner
     * holds a live lease (the row lock serialises concurrent takers) */
    int64_t taken = 0;
    if (pg_write1(st,
               "INSERT INTO accounts(name, state, lease_owner, lease_until)"
               " VALUES ($1, 'idle', $2, $4) ON CONFLICT (name) DO UPDATE SET"
               " lease_owner = excluded.lease_owner, lease_until = excluded.lease_until"
               " WHERE accounts.lease_owner IS NULL OR accounts.lease_owner = excluded.lease_owner"
               " OR accounts.lease_until <= $3::bigint",
               &q, &taken, e, "lease account") < 0)
        return -1;
    return taken ? 0 : STORE_LEASE_LOST;
}

/* Drop owner's lease on one account's row (an account's, an OAuth2
 * grant's): sql is "UPDATE <table> SET lease_owner = NULL, lease_until = 0
 * WHERE <account column> = $1 AND lease_owner = $2"; *dropped (may be NULL)
 * gets the rows changed (0: owner did not hold it). */
static int lease_drop(struct store *st, const char *sql, const char *account, const char *owner,
                      int64_t *dropped, struct err *e, const char *op)
{
    if (store_check_name("account", account, e) < 0 || store_check_owner(owner, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    pq_text(&q, owner);
    return pg_write1(st, sql, &q, dropped, e, op);
}

int pg_account_give_back(struct store *st, const char *account, const char *owner,
                         struct err *e)
{
    int64_t given = 0;
    if (lease_drop(st,
                   "UPDATE accounts SET lease_owner = NULL, lease_until = 0"
                   " WHERE name = $1 AND lease_owner = $2",
                   account, owner, &given, e, "give back account lease") < 0)
        return -1;
    return given ? 0 : STORE_LEASE_LOST;
}

int pg_account_release(struct store *st, const char *owner, int64_t *released,
                       struct err *e)
{
    if (store_check_owner(owner, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, owner);
    return pg_write1(st,
                  "UPDATE accounts SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1",
                  &q, released, e, "release account leases");
}

int pg_account_renew(struct store *st, const char *owner, int64_t now, int64_t lease_ms,
                     int64_t *renewed, struct err *e)
{
    if (store_check_owner(owner, e) < 0)
        return -1;
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: renew account leases: lease_ms must be positive");
    struct pq q = {0};
    pq_text(&q, owner);
    pq_i64(&q, now + lease_ms);
    return pg_write1(st, "UPDATE accounts SET lease_until = $2 WHERE lease_owner = $1", &q, renewed,
                  e, "renew account leases");
}

struct lease_rows {
    store_lease_cb cb;
    void *ctx;
};

static int lease_row(void *ctx, PGresult *r, struct err *e)
{
    struct lease_rows *l = ctx;
    return l->cb(l->ctx, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), pg_g64(r, 0, 2), e);
}

int pg_account_leases_each(struct store *st, int64_t now, store_lease_cb cb, void *ctx,
                           struct err *e)
{
    err_clear(e);
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_i64(&q, now);
    struct lease_rows l = {cb, ctx};
    int r = pq_each(st, c,
                    "SELECT name, lease_owner, lease_until FROM accounts"
                    " WHERE lease_owner IS NOT NULL AND lease_until > $1 ORDER BY name",
                    &q, 0, lease_row, &l, e, "list account leases");
    pg_conn_put(st, c);
    return r;
}

/* ---- instances ----------------------------------------------------------- */

int pg_instance_beat(struct store *st, const struct store_instance *in, struct err *e)
{
    if (store_check_instance(in, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, in->id);
    pq_text(&q, in->host);
    pq_text(&q, in->public_url);
    pq_i64(&q, in->started_at);
    pq_i64(&q, in->heartbeat_at);
    return pg_write1(st,
                  "INSERT INTO instances(id, host, public_url, started_at, heartbeat_at)"
                  " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET"
                  " host = excluded.host, public_url = excluded.public_url,"
                  " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
                  &q, NULL, e, "instance heartbeat");
}

int pg_instance_remove(struct store *st, const char *id, struct err *e)
{
    if (store_check_owner(id, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, id);
    return pg_write1(st, "DELETE FROM instances WHERE id = $1", &q, NULL, e, "remove instance");
}

#define INSTANCE_COLS "SELECT id, host, public_url, started_at, heartbeat_at FROM instances "

static void instance_row(PGresult *r, int i, void *p)
{
    struct store_instance *in = p;
    memset(in, 0, sizeof *in);
    pg_gstr(r, i, 0, in->id, sizeof in->id);
    pg_gstr(r, i, 1, in->host, sizeof in->host);
    pg_gstr(r, i, 2, in->public_url, sizeof in->public_url);
    in->started_at = pg_g64(r, i, 3);
    in->heartbeat_at = pg_g64(r, i, 4);
}

int pg_instances_each(struct store *st, int64_t live_since, int64_t forget_before,
                      store_instance_cb cb, void *ctx, struct err *e)
{
    err_clear(e);
    if (forget_before > 0) {
        struct pq q = {0};
        pq_i64(&q, forget_before);
        if (pg_write1(st, "DELETE FROM instances WHERE heartbeat_at < $1", &q, NULL, e,
                   "list instances") < 0)
            return -1;
    }
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_i64(&q, live_since);
    PGresult *r = pq_run(st, c, INSTANCE_COLS "WHERE heartbeat_at >= $1 ORDER BY started_at, id",
                         &q, 0, e, "list instances");
    pg_conn_put(st, c);
    if (!r)
        return -1;
    int rv = 0;
    struct store_instance in;
    for (int i = 0; i < PQntuples(r) && rv == 0; i++) {
        instance_row(r, i, &in);
        if (cb(ctx, &in, e) != 0)
            rv = store_cb_stop(e);
    }
    PQclear(r);
    return rv;
}

int pg_instance_get(struct store *st, const char *id, struct store_instance *out,
                    struct err *e)
{
    if (store_check_owner(id, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, id);
    return pq_one(st, NULL, INSTANCE_COLS "WHERE id = $1", &q, instance_row, out, e,
                  "get instance");
}

/* ---- statistics (dashboard) ------------------------------------------------ */

int pg_webhook_stats(struct store *st, const char *webhook, int64_t now,
                     struct store_webhook_stats *out, struct err *e)
{
    if (store_webhook_stats_init(webhook, out, e) < 0)
        return -1;
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    struct pq q = {0};
    pq_text(&q, webhook);
    pq_i64(&q, now - STORE_HOUR_MS);
    pq_i64(&q, now - STORE_DAY_MS);
    pq_i64(&q, now);
    /* counts of the hour and the day, and the day's nearest-rank p50/p99
     * (percentile_disc is the nearest rank) in one statement */
    PGresult *r = pq_run(st, c,
                         "SELECT count(*) FILTER (WHERE a.started_at > $2),"
                         " count(*) FILTER (WHERE a.started_at > $2"
                         "   AND a.http_status BETWEEN 200 AND 299),"
                         " count(*), count(*) FILTER (WHERE a.http_status BETWEEN 200 AND 299),"
                         " percentile_disc(0.5) WITHIN GROUP (ORDER BY a.duration_ms),"
                         " percentile_disc(0.99) WITHIN GROUP (ORDER BY a.duration_ms)"
                         " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
                         " WHERE d.webhook = $1 AND a.started_at > $3 AND a.started_at <= $4",
                         &q, 0, e, "a webhook's statistics");
    int rv = -1;
    if (r) {
        out->attempts_hour = pg_g64(r, 0, 0);
        out->delivered_hour = pg_g64(r, 0, 1);
        out->attempts_day = pg_g64(r, 0, 2);
        out->delivered_day = pg_g64(r, 0, 3);
        if (out->attempts_day > 0) {
            out->p50_ms = pg_g64(r, 0, 4);
            out->p99_ms = pg_g64(r, 0, 5);
        }
        PQclear(r);
        pq_text(&q, webhook);
        r = pq_run(st, c,
                   "SELECT a.started_at, a.http_status, a.error FROM attempts a"
                   " JOIN deliveries d ON d.id = a.delivery_id WHERE d.webhook = $1"
                   " AND NOT (a.http_status BETWEEN 200 AND 299) ORDER BY a.id DESC LIMIT 1",
                   &q, 0, e, "read a webhook's last error");
        if (r) {
            if (PQntuples(r) > 0) {
                out->last_error_at = pg_g64(r, 0, 0);
                out->last_error_status = (int)pg_g64(r, 0, 1);
                pg_gstr(r, 0, 2, out->last_error, sizeof out->last_error);
            }
            PQclear(r);
            rv = 0;
        }
    }
    pg_conn_put(st, c);
    return rv;
}

int pg_stats_hourly(struct store *st, int64_t now, size_t hours, struct store_hour *out,
                    struct err *e)
{
    int64_t first = 0;
    if (store_hours_init(now, hours, out, &first, e) < 0)
        return -1;
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    static const char *const sql[2] = {
        "SELECT received_at / 3600000, count(*), 0 FROM messages"
        " WHERE received_at >= $1 AND received_at < $2 GROUP BY received_at / 3600000",
        "SELECT started_at / 3600000, count(*), count(*) FILTER (WHERE http_status"
        " BETWEEN 200 AND 299) FROM attempts"
        " WHERE started_at >= $1 AND started_at < $2 GROUP BY started_at / 3600000",
    };
    int rv = 0;
    for (int k = 0; k < 2 && rv == 0; k++) {
        struct pq q = {0};
        pq_i64(&q, first * STORE_HOUR_MS);
        pq_i64(&q, (first + (int64_t)hours) * STORE_HOUR_MS);
        PGresult *r = pq_run(st, c, sql[k], &q, 0, e, "count by hour");
        if (!r) {
            rv = -1;
            break;
        }
        for (int i = 0; i < PQntuples(r); i++) {
            int64_t h = pg_g64(r, i, 0) - first;
            if (h < 0 || h >= (int64_t)hours)
                continue;
            if (k == 0) {
                out[h].received = pg_g64(r, i, 1);
            } else {
                out[h].attempts = pg_g64(r, i, 1);
                out[h].delivered = pg_g64(r, i, 2);
            }
        }
        PQclear(r);
    }
    pg_conn_put(st, c);
    return rv;
}

/* ---- OAuth2 tokens ------------------------------------------------------ */

static void bytea_copy(PGresult *r, int row, int col, unsigned char *dst, size_t size,
                       size_t *len)
{
    *len = 0;
    if (PQgetisnull(r, row, col))
        return;
    size_t n = 0;
    unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
    if (b && n <= size) {
        memcpy(dst, b, n);
        *len = n;
    }
    if (b) {
        OPENSSL_cleanse(b, n);
        PQfreemem(b);
    }
}

static void oauth2_row(PGresult *r, int i, void *p)
{
    struct store_oauth2 *out = p;
    out->version = pg_g64(r, i, 0);
    out->status = pg_g64(r, i, 1) == 1 ? STORE_OAUTH2_INVALID : STORE_OAUTH2_OK;
    pg_gstr(r, i, 2, out->flow, sizeof out->flow);
    pg_gstr(r, i, 3, out->error, sizeof out->error);
    bytea_copy(r, i, 4, out->access, sizeof out->access, &out->access_len);
    bytea_copy(r, i, 5, out->refresh, sizeof out->refresh, &out->refresh_len);
    out->access_issued_at = pg_g64(r, i, 6);
    out->access_expires_at = pg_g64(r, i, 7);
    out->authorized_at = pg_g64(r, i, 8);
    out->refresh_used_at = pg_g64(r, i, 9);
    out->retry_at = pg_g64(r, i, 10);
    out->failures = (int)pg_g64(r, i, 11);
    pg_gstr(r, i, 12, out->lease_owner, sizeof out->lease_owner);
    out->lease_until = pg_g64(r, i, 13);
}

static int oauth2_read(struct store *st, PGconn *c, const char *account, bool lock,
                       struct store_oauth2 *out, struct err *e)
{
    struct pq q = {0};
    pq_text(&q, account);
    return pq_one(st, c,
                         lock ? "SELECT version, status, flow, error, access_sealed, refresh_sealed,"
                                " access_issued_at, access_expires_at, authorized_at,"
                                " refresh_used_at, retry_at, failures, lease_owner, lease_until"
                                " FROM oauth2_tokens WHERE account = $1 FOR UPDATE"
                              : "SELECT version, status, flow, error, access_sealed, refresh_sealed,"
                                " access_issued_at, access_expires_at, authorized_at,"
                                " refresh_used_at, retry_at, failures, lease_owner, lease_until"
                                " FROM oauth2_tokens WHERE account = $1",
                  &q, oauth2_row, out, e, "get OAuth2 tokens");
    /* libpq's buffer held the escaped tokens; pq_one's PQclear freed it */
}

int pg_oauth2_get(struct store *st, const char *account, struct store_oauth2 *out,
                  struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    int r = oauth2_read(st, c, account, false, out, e);
    pg_conn_put(st, c);
    return r;
}

int pg_oauth2_grant(struct store *st, const char *account, const char *flow,
                    const struct store_oauth2_tokens *t, int64_t now, struct err *e)
{
    if (store_check_tokens("an OAuth2 grant", account, flow, t, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    pq_text(&q, flow);
    pq_bin(&q, t->access, t->access_len);
    pq_bin(&q, t->refresh, t->refresh_len);
    pq_i64(&q, t->issued_at);
    pq_i64(&q, t->expires_at);
    pq_i64(&q, now);
    return pg_write1(st,
                  "INSERT INTO oauth2_tokens(account, version, status, flow, error,"
                  " access_sealed, refresh_sealed, access_issued_at, access_expires_at,"
                  " authorized_at, refresh_used_at, retry_at, failures, lease_owner,"
                  " lease_until) VALUES ($1, 1, 0, $2, '', $3, $4, $5, $6, $7, 0, 0, 0, NULL, 0)"
                  " ON CONFLICT (account) DO UPDATE SET version = oauth2_tokens.version + 1,"
                  " status = 0, flow = excluded.flow, error = '',"
                  " access_sealed = excluded.access_sealed,"
                  " refresh_sealed = excluded.refresh_sealed,"
                  " access_issued_at = excluded.access_issued_at,"
                  " access_expires_at = excluded.access_expires_at,"
                  " authorized_at = excluded.authorized_at, refresh_used_at = 0, retry_at = 0,"
                  " failures = 0, lease_owner = NULL, lease_until = 0",
                  &q, NULL, e, "store OAuth2 grant");
}

int pg_oauth2_lease(struct store *st, const char *account, const char *owner,
                    int64_t now, int64_t lease_ms, bool create, const char *flow,
                    struct store_oauth2 *out, struct err *e)
{
    if (store_check_oauth2_lease(account, owner, lease_ms, create, flow, e) < 0)
        return -1;
    const char *op = "lease OAuth2 tokens";
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c)
        return -1;
    struct pq q = {0};
    if (create) {
        pq_text(&q, account);
        pq_text(&q, flow);
        if (pq_cmd(st, c,
                   "INSERT INTO oauth2_tokens(account, version, flow) VALUES ($1, 1, $2)"
                   " ON CONFLICT DO NOTHING",
                   &q, NULL, e, op) < 0)
            goto fail;
    }
    int r = oauth2_read(st, c, account, true, out, e);
    if (r < 0)
        goto fail;
    if (r == STORE_NOTFOUND || out->status == STORE_OAUTH2_INVALID) {
        pg_tx_rollback(st, c);
        return r;
    }
    if (out->lease_until > now && strcmp(out->lease_owner, owner) != 0) {
        pg_tx_rollback(st, c);
        return STORE_OAUTH2_BUSY;
    }
    pq_text(&q, account);
    pq_text(&q, owner);
    pq_i64(&q, now + lease_ms);
    if (pq_cmd(st, c,
               "UPDATE oauth2_tokens SET lease_owner = $2, lease_until = $3 WHERE account = $1", &q,
               NULL, e, op) < 0 ||
        pg_tx_commit(st, c, e, op) < 0)
        goto fail;
    snprintf(out->lease_owner, sizeof out->lease_owner, "%s", owner);
    out->lease_until = now + lease_ms;
    return 0;
fail:
    pg_tx_rollback(st, c);
    return -1;
}

/* A compare-and-set UPDATE of one row: 0, STORE_LEASE_LOST (version
 * changed), STORE_NOTFOUND (no row), -1. */
static int oauth2_cas(struct store *st, const char *sql, struct pq *q, const char *account,
                      struct err *e, const char *op)
{
    PGconn *c = pg_tx_begin(st, e, op);
    if (!c) {
        pq_free(q);
        return -1;
    }
    int64_t changed = 0;
    int r = 0;
    if (pq_cmd(st, c, sql, q, &changed, e, op) < 0)
        goto fail;
    if (changed == 0) {
        struct pq k = {0};
        pq_text(&k, account);
        PGresult *x = pq_run(st, c, "SELECT 1 FROM oauth2_tokens WHERE account = $1", &k, 0, e, op);
        if (!x)
            goto fail;
        r = PQntuples(x) ? STORE_LEASE_LOST : STORE_NOTFOUND;
        PQclear(x);
    }
    if (pg_tx_commit(st, c, e, op) < 0)
        goto fail;
    return r;
fail:
    pg_tx_rollback(st, c);
    return -1;
}

int pg_oauth2_refreshed(struct store *st, const char *account, int64_t version,
                        const struct store_oauth2_tokens *t, int64_t now, struct err *e)
{
    if (store_check_tokens("a refresh", account, NULL, t, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    pq_i64(&q, version);
    pq_bin(&q, t->access, t->access_len);
    pq_bin(&q, t->refresh, t->refresh_len);
    pq_i64(&q, t->issued_at);
    pq_i64(&q, t->expires_at);
    pq_i64(&q, now);
    return oauth2_cas(st,
                      "UPDATE oauth2_tokens SET version = version + 1, access_sealed = $3,"
                      " refresh_sealed = coalesce($4, refresh_sealed), access_issued_at = $5,"
                      " access_expires_at = $6, refresh_used_at = $7, error = '', failures = 0,"
                      " retry_at = 0, lease_owner = NULL, lease_until = 0"
                      " WHERE account = $1 AND version = $2",
                      &q, account, e, "save refreshed OAuth2 tokens");
}

int pg_oauth2_failed(struct store *st, const char *account, int64_t version, bool invalid,
                     const char *error, int64_t retry_at, struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    struct pq q = {0};
    pq_text(&q, account);
    pq_i64(&q, version);
    pq_i64(&q, invalid ? 1 : 0);
    pq_trunc(&q, error ? error : "", STORE_ERROR_MAX);
    pq_i64(&q, retry_at);
    return oauth2_cas(st,
                      "UPDATE oauth2_tokens SET version = version + 1,"
                      " status = CASE WHEN $3 = 1 THEN 1 ELSE status END, error = $4,"
                      " failures = failures + 1, retry_at = $5, lease_owner = NULL, lease_until = 0"
                      " WHERE account = $1 AND version = $2",
                      &q, account, e, "record failed OAuth2 refresh");
}

int pg_oauth2_release(struct store *st, const char *account, const char *owner,
                      struct err *e)
{
    return lease_drop(st,
                      "UPDATE oauth2_tokens SET lease_owner = NULL, lease_until = 0"
                      " WHERE account = $1 AND lease_owner = $2",
                      account, owner, NULL, e, "release OAuth2 lease");
}

/* ---- poll history (dashboard) ---------------------------------------------- */

/* Checks of store_poll_record's and store_poll_history's account (and instance). */
static int poll_check(const char *account, const char *instance, struct err *e)
{
    if (store_check_name("account", account, e) < 0 ||
        (instance && *instance && store_check_owner(instance, e) < 0))
        return -1;
    return 0;
}

/* The poll's insert and the prune of the account's older polls: the DELETE
 * sees the rows before the insert, so it keeps POLLHIST_POLLS - 1 of them. */
#define POLL_INSERT                                                                        \
    "WITH ins AS (INSERT INTO polls(account, at, duration_ms, listed, new_messages,"       \
    " deleted, ok, error, instance) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)),"         \
    " pruned AS (DELETE FROM polls WHERE account = $1 AND id NOT IN"                       \
    " (SELECT id FROM polls WHERE account = $1 ORDER BY id DESC LIMIT $10))"
/* The session's upsert, its eleven values from $b on. */
#define POLL_SESSION_UPSERT                                                                \
    " INSERT INTO poll_sessions(account, at, capa, tls, tls_version, tls_cipher,"          \
    " tls_verified, tls_verify, tls_subject, tls_issuer, tls_not_after, tls_fingerprint)"  \
    " VALUES ($1, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)"                   \
    " ON CONFLICT (account) DO UPDATE SET at = excluded.at, capa = excluded.capa,"         \
    " tls = excluded.tls, tls_version = excluded.tls_version,"                            \
    " tls_cipher = excluded.tls_cipher, tls_verified = excluded.tls_verified,"             \
    " tls_verify = excluded.tls_verify, tls_subject = excluded.tls_subject,"               \
    " tls_issuer = excluded.tls_issuer, tls_not_after = excluded.tls_not_after,"           \
    " tls_fingerprint = excluded.tls_fingerprint"
/* The saved session's time moved ($b: the new one) if it is still $b+1's. */
#define POLL_SESSION_MOVE " UPDATE poll_sessions SET at = $%d WHERE account = $1 AND at = $%d"
#define POLL_SQL_MAX 2048

#define POLL_CAPA_TEXT (POLLHIST_CAPA_MAX * (POLLHIST_CAPA_LINE_MAX + 1) + 1)

/* The session's eleven values onto q (which borrows capa[POLL_CAPA_TEXT]
 * for its CAPA lines), and its upsert (values from $b) into sql. */
static void poll_session_params(struct pq *q, const struct pollhist_session *s, char *capa,
                                int b, char *sql, size_t size)
{
    /* the CAPA lines, each ended by a newline (a line holds none) */
    size_t cl = 0;
    for (size_t i = 0; i < s->n_capa && i < POLLHIST_CAPA_MAX; i++) {
        size_t l = strnlen(s->capa[i], POLLHIST_CAPA_LINE_MAX);
        memcpy(capa + cl, s->capa[i], l);
        for (size_t j = cl; j < cl + l; j++)
            if (capa[j] == '\n')
                capa[j] = ' ';
        cl += l;
        capa[cl++] = '\n';
    }
    capa[cl] = '\0';
    const struct net_tls_info *t = &s->tls_info;
    pq_i64(q, s->at);
    pq_text(q, capa);
    pq_text(q, s->tls ? "true" : "false");
    pq_trunc(q, s->tls ? t->version : "", sizeof t->version - 1);
    pq_trunc(q, s->tls ? t->cipher : "", sizeof t->cipher - 1);
    pq_text(q, s->tls && t->verified ? "true" : "false");
    pq_trunc(q, s->tls ? t->verify : "", sizeof t->verify - 1);
    pq_trunc(q, s->tls ? t->peer : "", sizeof t->peer - 1);
    pq_trunc(q, s->tls ? t->issuer : "", sizeof t->issuer - 1);
    pq_i64(q, s->tls ? t->not_after : 0);
    pq_trunc(q, s->tls ? t->fingerprint : "", sizeof t->fingerprint - 1);
    snprintf(sql, size, POLL_SESSION_UPSERT, b, b + 1, b + 2, b + 3, b + 4, b + 5, b + 6,
             b + 7, b + 8, b + 9, b + 10);
}

int pg_poll_record(struct store *st, const char *account, const struct store_poll_write *w,
                   bool *session_saved, struct err *e)
{
    if (session_saved)
        *session_saved = false;
    if (!w || !w->poll)
        return err_set(e, ERR_USAGE, "store: record a poll: no poll");
    if (poll_check(account, w->instance, e) < 0)
        return -1;
    const struct pollhist_poll *p = w->poll;
    struct pq q = {0};
    pq_text(&q, account);
    pq_i64(&q, p->at);
    pq_i64(&q, p->duration_ms);
    pq_i64(&q, p->listed);
    pq_i64(&q, p->new_messages);
    pq_i64(&q, p->deleted);
    pq_text(&q, p->ok ? "true" : "false");
    pq_trunc(&q, p->error, POLLHIST_ERROR_MAX);
    pq_text(&q, w->instance ? w->instance : "");
    pq_i64(&q, POLLHIST_POLLS - 1);
    /* the state: one more data-modifying part of the statement */
    char acct[ACCOUNT_UPSERT_SQL + 16] = "";
    if (w->state) {
        char up[ACCOUNT_UPSERT_SQL];
        account_upsert_sql(up, q.n + 1);
        if (account_state_params(&q, account, w->state, e) < 0) {
            pq_free(&q);
            return -1;
        }
        snprintf(acct, sizeof acct, ", acct AS (%s)", up);
    }
    /* the session last: what it changed (0 or 1 rows) is the statement's count */
    char sess[POLL_SQL_MAX] = " SELECT 1", capa[POLL_CAPA_TEXT];
    bool moving = !w->session && w->session_at > 0;
    if (w->session) {
        poll_session_params(&q, w->session, capa, q.n + 1, sess, sizeof sess);
    } else if (moving) {
        snprintf(sess, sizeof sess, POLL_SESSION_MOVE, q.n + 1, q.n + 2);
        pq_i64(&q, w->session_at);
        pq_i64(&q, w->session_was);
    }
    char sql[sizeof POLL_INSERT + sizeof acct + sizeof sess];
    snprintf(sql, sizeof sql, "%s%s%s", POLL_INSERT, acct, sess);
    int64_t changed = 0;
    if (pg_write1(st, sql, &q, &changed, e, "record a poll") < 0)
        return -1;
    if (session_saved)
        *session_saved = w->session != NULL || (moving && changed > 0);
    return 0;
}

static void poll_session_row(PGresult *r, int i, void *p)
{
    struct pollhist_session *s = p;
    memset(s, 0, sizeof *s);
    s->at = pg_g64(r, i, 0);
    const char *capa = PQgetisnull(r, i, 1) ? "" : PQgetvalue(r, i, 1);
    for (const char *nl; s->n_capa < POLLHIST_CAPA_MAX && (nl = strchr(capa, '\n'));
         capa = nl + 1) {
        size_t l = (size_t)(nl - capa);
        if (l > POLLHIST_CAPA_LINE_MAX)
            l = POLLHIST_CAPA_LINE_MAX;
        memcpy(s->capa[s->n_capa], capa, l);
        s->capa[s->n_capa++][l] = '\0';
    }
    s->tls = strcmp(PQgetvalue(r, i, 2), "t") == 0;
    struct net_tls_info *t = &s->tls_info;
    pg_gstr(r, i, 3, t->version, sizeof t->version);
    pg_gstr(r, i, 4, t->cipher, sizeof t->cipher);
    t->verified = strcmp(PQgetvalue(r, i, 5), "t") == 0;
    pg_gstr(r, i, 6, t->verify, sizeof t->verify);
    pg_gstr(r, i, 7, t->peer, sizeof t->peer);
    pg_gstr(r, i, 8, t->issuer, sizeof t->issuer);
    t->not_after = pg_g64(r, i, 9);
    pg_gstr(r, i, 10, t->fingerprint, sizeof t->fingerprint);
}

int pg_poll_history(struct store *st, const char *account, struct pollhist_session *s,
                    struct store_poll *out, size_t max, size_t *n, struct err *e)
{
    if (n)
        *n = 0;
    if (poll_check(account, NULL, e) < 0)
        return -1;
    if (max > POLLHIST_POLLS)
        max = POLLHIST_POLLS;
    PGconn *c = pg_conn_get(st, e);
    if (!c)
        return -1;
    int rv = 0;
    if (s) {
        struct pq q = {0};
        pq_text(&q, account);
        rv = pq_one(st, c,
                    "SELECT at, capa, tls, tls_version, tls_cipher, tls_verified, tls_verify,"
                    " tls_subject, tls_issuer, tls_not_after, tls_fingerprint"
                    " FROM poll_sessions WHERE account = $1",
                    &q, poll_session_row, s, e, "read the last session");
        if (rv == STORE_NOTFOUND) {
            memset(s, 0, sizeof *s);
            rv = 0;
        }
    }
    if (rv == 0 && out && max > 0) {
        struct pq q = {0};
        pq_text(&q, account);
        pq_i64(&q, (int64_t)max);
        PGresult *r = pq_run(st, c,
                             "SELECT at, duration_ms, listed, new_messages, deleted, ok, error,"
                             " instance FROM polls WHERE account = $1 ORDER BY id DESC LIMIT $2",
                             &q, 0, e, "read the polls");
        if (!r) {
            rv = -1;
        } else {
            size_t k = 0;
            for (int i = 0; i < PQntuples(r) && k < max; i++, k++) {
                struct store_poll *o = &out[k];
                memset(o, 0, sizeof *o);
                o->p.at = pg_g64(r, i, 0);
                o->p.duration_ms = pg_g64(r, i, 1);
                o->p.listed = (uint32_t)pg_g64(r, i, 2);
                o->p.new_messages = (uint32_t)pg_g64(r, i, 3);
                o->p.deleted = (uint32_t)pg_g64(r, i, 4);
                o->p.ok = strcmp(PQgetvalue(r, i, 5), "t") == 0;
                pg_gstr(r, i, 6, o->p.error, sizeof o->p.error);
                pg_gstr(r, i, 7, o->instance, sizeof o->instance);
            }
            if (n)
                *n = k;
            PQclear(r);
        }
    }
    pg_conn_put(st, c);
    return rv;
}
