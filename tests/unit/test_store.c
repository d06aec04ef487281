/* Unit tests: the store (include/store.h), one suite for both backends: on
 * real SQLite files in a temp dir, and, when POP3BRIDGE_TEST_PG_URL names a
 * PostgreSQL database (tests/run-unit starts one: tests/lib/postgres.py), on
 * PostgreSQL too, with a fresh schema for every test.  The password comes
 * from POP3BRIDGE_TEST_PG_PASSWORD. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "store.h"
#include "tmpstore.h"

#define T0 1700000000000LL /* a fixed "now" in Unix ms */
#define OWNER "test-instance"
#define LEASE 60000
#define lease_due(st, now, out, max, n, e)                                                    \
    store_delivery_lease_due(st, OWNER, NULL, now, LEASE, out, max, n, e)
#define DAY_MS 86400000LL

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

struct fx {
    char dir[TMPDIR_MAX];
    struct store *st;
};

/* PostgreSQL mode: the database's URL and password, else NULL. */
static const char *pg_url, *pg_pw;

/* Run sql on the test database directly (not through the store). */
static int pg_exec(const char *sql)
{
    const char *keys[] = {"dbname", "password", NULL}, *vals[] = {pg_url, pg_pw, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    int rc = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PQclear(PQexec(c, "SET client_min_messages = warning"));
        PGresult *r = PQexec(c, sql);
        rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
        if (rc < 0)
            fprintf(stderr, "pg_exec: %s", PQerrorMessage(c));
        PQclear(r);
    } else {
        fprintf(stderr, "pg_exec: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return rc;
}

/* One number from sql, or -1. */
static long long pg_value(const char *sql)
{
    const char *keys[] = {"dbname", "password", NULL}, *vals[] = {pg_url, pg_pw, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    long long v = -1;
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

static int pg_fresh(void)
{
    store_teardown();
    if (pg_exec("DROP SCHEMA public CASCADE; CREATE SCHEMA public") < 0)
        return -1;
    struct store_target t = {.url = pg_url, .password = pg_pw, .pool = 8};
    struct err e;
    err_clear(&e);
    if (store_setup(&t, &e) < 0) {
        fprintf(stderr, "store_setup: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    if (pg_url && pg_fresh() < 0)
        return -1;
    struct fx *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    if (tmpdir_make(fx->dir, sizeof fx->dir, "store") < 0)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    tmpstore_close(fx->dir, fx->st);
    free(fx);
    if (pg_url)
        store_teardown();
    return 0;
}

static struct store *open_ok(const char *dir)
{
    struct err e;
    err_clear(&e);
    struct store *st = store_open(dir, &e);
    if (!st)
        fail_msg("store_open(%s): %s", dir, e.msg);
    return st;
}

static struct store *fx_open(void **state)
{
    struct fx *fx = *state;
    fx->st = open_ok(fx->dir);
    return fx->st;
}

static void sha_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int l = 0;
    assert_int_equal(EVP_Digest(p, n, md, &l, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
}

/* Store len bytes of p in chunks of `chunk` bytes; returns store_msg_finish's result. */
static int put(struct store *st, const char *account, const char *uidl, const void *p, size_t len,
               size_t chunk, const char *const *wh, size_t nwh, int64_t now,
               struct store_msg_result *res, struct err *e)
{
    struct store_msg *m = NULL;
    if (store_msg_begin(st, account, uidl, &m, e) < 0)
        return -1;
    for (size_t off = 0; off < len;) {
        size_t n = len - off < chunk ? len - off : chunk;
        if (store_msg_write(m, (const char *)p + off, n, e) < 0) {
            store_msg_abort(m);
            return -1;
        }
        off += n;
    }
    struct store_msg_meta meta = {.subject = "Hello", .from = "a@example.com",
                                  .message_id = "<x@example.com>", .date = "Mon, 1 Jan 2024"};
    return store_msg_finish(m, &meta, wh, nwh, now, res, e);
}

static int64_t put_ok(struct store *st, const char *account, const char *uidl,
                      const char *const *wh, size_t nwh, int64_t now)
{
    char body[700];
    int n = snprintf(body, sizeof body, "Subject: %s\r\n\r\nbody of %s\r\n", uidl, uidl);
    struct err e;
    struct store_msg_result r;
    if (put(st, account, uidl, body, (size_t)n, 7, wh, nwh, now, &r, &e) != 0)
        fail_msg("put %s/%s: %s", account, uidl, e.msg);
    return r.id;
}

struct buf {
    unsigned char *p;
    size_t len, cap;
    int fail_after; /* sink fails on this call number (1-based); 0 never */
    int calls;
};

static int sink(void *ctx, const void *data, size_t len, struct err *e)
{
    struct buf *b = ctx;
    if (b->fail_after && ++b->calls >= b->fail_after)
        return err_set(e, ERR_CONN, "test sink refused");
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

/* The UIDL's state, or -1 if unknown. */
static int uidl_state(struct store *st, const char *acc, const char *uidl)
{
    enum store_uidl_state s = 99;
    struct err e;
    int r = store_uidl_get(st, acc, uidl, &s, NULL, &e);
    if (r == STORE_NOTFOUND)
        return -1;
    assert_int_equal(r, 0);
    return (int)s;
}

static int count_cb(void *ctx, const char *uidl, enum store_uidl_state s, int64_t id,
                    struct err *e)
{
    (void)uidl;
    (void)s;
    (void)id;
    (void)e;
    (*(int *)ctx)++;
    return 0;
}

static int count_uidls(struct store *st, const char *acc)
{
    int n = 0;
    struct err e;
    assert_int_equal(store_uidls_each(st, acc, count_cb, &n, &e), 0);
    return n;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- opening, schema ---------------------------------------------------- */

static void open_migrate_reopen(void **state)
{
    struct fx *fx = *state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/a/b/state", fx->dir);
    struct err e;
    struct store *st = open_ok(dir);
    assert_int_equal(store_schema_version(st, &e), STORE_SCHEMA_VERSION);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    const char *wh[] = {"crm"};
    int64_t id = put_ok(st, "acc", "u1", wh, 1, T0);
    store_close(st);

    /* journal mode is WAL, foreign keys hold, schema version recorded */
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, STORE_DB_FILE);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), STORE_SCHEMA_VERSION);
    sqlite3_finalize(s);
    sqlite3_close(db);

    /* reopen: nothing migrated twice, data still there */
    st = open_ok(dir);
    assert_int_equal(store_schema_version(st, &e), STORE_SCHEMA_VERSION);
    struct store_msg_info info;
    assert_int_equal(store_msg_get(st, id, &info, &e), 0);
    assert_string_equal(info.uidl, "u1");
    assert_string_equal(info.subject, "Hello");
    assert_int_equal(uidl_state(st, "acc", "u1"), STORE_UIDL_STORED);
    store_close(st);
    store_close(NULL);
}

/* A database as schema version 2 left it (claims, no event keys), with a
 * delivery claimed by a process that died: version 3 turns the claim into
 * nothing (due at once) and keeps every row. */
static const char v2_schema[] =
    "CREATE TABLE accounts(name TEXT PRIMARY KEY, state TEXT NOT NULL,"
    " last_error TEXT NOT NULL DEFAULT '', last_attempt_at INTEGER NOT NULL DEFAULT 0,"
    " last_success_at INTEGER NOT NULL DEFAULT 0, backoff_until INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE messages(id INTEGER PRIMARY KEY, account TEXT NOT NULL, uidl TEXT NOT NULL,"
    " size INTEGER NOT NULL, sha256 TEXT NOT NULL, received_at INTEGER NOT NULL, subject TEXT,"
    " from_addr TEXT, message_id_hdr TEXT, date_hdr TEXT, delivered_at INTEGER,"
    " body_purged_at INTEGER, kind TEXT NOT NULL DEFAULT 'message',"
    " declared_size INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX messages_account ON messages(account, body_purged_at);"
    "CREATE INDEX messages_purgeable ON messages(delivered_at) WHERE body_purged_at IS NULL;"
    "CREATE TABLE bodies(message_id INTEGER PRIMARY KEY REFERENCES messages(id),"
    " raw BLOB NOT NULL);"
    "CREATE TABLE uidls(account TEXT NOT NULL, uidl TEXT NOT NULL,"
    " state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 3),"
    " message_id INTEGER REFERENCES messages(id), seen_at INTEGER NOT NULL,"
    " PRIMARY KEY (account, uidl)) WITHOUT ROWID;"
    "CREATE INDEX uidls_message ON uidls(message_id) WHERE message_id IS NOT NULL;"
    "CREATE TABLE deliveries(id INTEGER PRIMARY KEY,"
    " message_id INTEGER NOT NULL REFERENCES messages(id), account TEXT NOT NULL,"
    " webhook TEXT NOT NULL, status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 3),"
    " attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " delivered_at INTEGER NOT NULL DEFAULT 0, last_http_status INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT NOT NULL DEFAULT '', claimed_at INTEGER, UNIQUE (message_id, webhook));"
    "CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id)"
    " WHERE status IN (0, 2) AND claimed_at IS NULL;"
    "CREATE INDEX deliveries_status ON deliveries(status, id);"
    "CREATE INDEX deliveries_account ON deliveries(account, id);"
    "CREATE INDEX deliveries_account_status ON deliveries(account, status, id);"
    "CREATE TABLE attempts(id INTEGER PRIMARY KEY,"
    " delivery_id INTEGER NOT NULL REFERENCES deliveries(id), started_at INTEGER NOT NULL,"
    " duration_ms INTEGER NOT NULL, http_status INTEGER NOT NULL, error TEXT NOT NULL,"
    " outcome TEXT NOT NULL);"
    "CREATE INDEX attempts_delivery ON attempts(delivery_id, id);"
    "CREATE TABLE webhooks_disabled(name TEXT PRIMARY KEY, reason TEXT NOT NULL,"
    " since INTEGER NOT NULL);"
    "INSERT INTO messages VALUES (1, 'acc', 'u1', 3, 'x', 5, 'Old', NULL, NULL, NULL, NULL,"
    " NULL, 'message', 0);"
    "INSERT INTO bodies VALUES (1, X'414243');"
    "INSERT INTO uidls VALUES ('acc', 'u1', 1, 1, 5);"
    "INSERT INTO deliveries(message_id, account, webhook, status, attempts, next_attempt_at,"
    " created_at, updated_at, claimed_at) VALUES (1, 'acc', 'crm', 2, 1, 7, 5, 6, 8);"
    "INSERT INTO attempts VALUES (1, 1, 6, 10, 500, 'boom', 'retry');"
    "INSERT INTO accounts VALUES ('acc', 'backoff', 'Server: login: server said \"[LOGIN-DELAY]"
    " wait\"', 5, 0, 9);"
    "INSERT INTO accounts VALUES ('b', 'backoff', 'Connection: connect: refused', 5, 0, 9);"
    "PRAGMA user_version = 2;";

static int count_attempt(void *ctx, const struct store_attempt_row *a, struct err *e)
{
    (void)e;
    (void)a;
    (*(int *)ctx)++;
    return 0;
}

static void migrate_from_v2(void **state)
{
    struct fx *fx = *state;
    char path[256];
    snprintf(path, sizeof path, "%s/%s", fx->dir, STORE_DB_FILE);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, v2_schema, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct store *st = open_ok(fx->dir);
    struct err e;
    assert_int_equal(store_schema_version(st, &e), STORE_SCHEMA_VERSION);
    struct store_delivery d[2];
    size_t n = 0;
    assert_int_equal(lease_due(st, T0, d, 2, &n, &e), 0);
    assert_int_equal(n, 1); /* the dead process's claim is gone */
    assert_string_equal(d[0].webhook, "crm");
    assert_string_equal(d[0].msg_key, ""); /* stored before event keys existed */
    assert_int_equal(d[0].attempts, 1);
    /* schema 5 rebuilt deliveries with the same ids: the attempt still hangs on it */
    int nat = 0;
    struct store_delivery one;
    assert_int_equal(store_delivery_get(st, d[0].id, &one, count_attempt, &nat, &e), 0);
    assert_int_equal(nat, 1);
    assert_int_equal(one.event_id, 0);
    struct store_msg_info info;
    assert_int_equal(store_msg_get(st, 1, &info, &e), 0);
    assert_string_equal(info.subject, "Old");
    assert_string_equal(info.key, "");
    /* new messages get a key of their own */
    const char *wh[] = {"crm"};
    int64_t id = put_ok(st, "acc", "u2", wh, 1, T0);
    assert_int_equal(store_msg_get(st, id, &info, &e), 0);
    assert_int_equal(strlen(info.key), STORE_KEY_HEX);
    struct store_msg_info other;
    int64_t id2 = put_ok(st, "acc", "u3", wh, 1, T0);
    assert_int_equal(store_msg_get(st, id2, &other, &e), 0);
    assert_string_not_equal(info.key, other.key);
    /* schema 8: a LOGIN-DELAY saved before has its code; other errors none */
    struct store_account_state as;
    assert_int_equal(store_account_get(st, "acc", &as, &e), 0);
    assert_string_equal(as.last_error_code, "login_delay");
    assert_int_equal(as.backoff_until, 9);
    assert_int_equal(store_account_get(st, "b", &as, &e), 0);
    assert_string_equal(as.last_error_code, "");
    store_close(st);
}

static void newer_schema_refused(void **state)
{
    struct fx *fx = *state;
    store_close(open_ok(fx->dir));
    char path[128];
    snprintf(path, sizeof path, "%s/%s", fx->dir, STORE_DB_FILE);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct err e;
    err_clear(&e);
    assert_null(store_open(fx->dir, &e));
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "schema version 99"));
    assert_non_null(strstr(e.msg, "newer"));
}

static void open_errors(void **state)
{
    struct fx *fx = *state;
    struct err e;
    /* empty */
    assert_null(store_open("", &e));
    assert_int_equal(e.kind, ERR_USAGE);
    assert_null(store_open(NULL, &e));
    /* state_dir below a regular file: cannot be created (even as root) */
    char file[128], dir[160];
    snprintf(file, sizeof file, "%s/plain", fx->dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(dir, sizeof dir, "%s/sub", file);
    assert_null(store_open(dir, &e));
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "Not a directory"));
    assert_null(store_open(file, &e));
    assert_non_null(strstr(e.msg, "not a directory"));
    /* too long */
    char *longp = malloc(5000);
    assert_non_null(longp);
    memset(longp, 'x', 4999);
    longp[0] = '/';
    longp[4999] = '\0';
    assert_null(store_open(longp, &e));
    assert_int_equal(e.kind, ERR_LIMIT);
    free(longp);
    /* corrupt database file */
    char cdir[128], cpath[160];
    snprintf(cdir, sizeof cdir, "%s/corrupt", fx->dir);
    assert_int_equal(mkdir(cdir, 0700), 0);
    snprintf(cpath, sizeof cpath, "%s/%s", cdir, STORE_DB_FILE);
    f = fopen(cpath, "w");
    assert_non_null(f);
    unsigned char junk[8192];
    fill(junk, sizeof junk, 3);
    fwrite(junk, 1, sizeof junk, f);
    fclose(f);
    err_clear(&e);
    assert_null(store_open(cdir, &e));
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "not a database"));
    assert_non_null(strstr(e.msg, cpath));
    /* the database path is a directory */
    char ddir[128], dpath[160];
    snprintf(ddir, sizeof ddir, "%s/dbdir", fx->dir);
    snprintf(dpath, sizeof dpath, "%s/%s", ddir, STORE_DB_FILE);
    assert_int_equal(mkdir(ddir, 0700), 0);
    assert_int_equal(mkdir(dpath, 0700), 0);
    err_clear(&e);
    assert_null(store_open(ddir, &e));
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "store_open"));
}

/* ---- storing and reading ------------------------------------------------ */

static void roundtrip(struct store *st, const char *uidl, size_t len, size_t chunk)
{
    unsigned char *p = malloc(len ? len : 1);
    assert_non_null(p);
    fill(p, len, (uint32_t)len);
    char want[65];
    sha_hex(p, len, want);
    struct err e;
    struct store_msg_result r;
    const char *wh[] = {"crm", "audit"};
    if (put(st, "acc", uidl, p, len, chunk, wh, 2, T0, &r, &e) != 0)
        fail_msg("put: %s", e.msg);
    assert_string_equal(r.sha256, want);
    assert_int_equal(r.size, len);
    struct store_msg_info info;
    assert_int_equal(store_msg_get(st, r.id, &info, &e), 0);
    assert_string_equal(info.sha256, want);
    assert_int_equal(info.size, len);
    assert_int_equal(info.received_at, T0);
    assert_int_equal(info.body_purged_at, 0);
    /* streamed out */
    struct buf b = {0};
    assert_int_equal(store_msg_stream(st, r.id, sink, &b, &e), 0);
    assert_int_equal(b.len, len);
    if (len)
        assert_memory_equal(b.p, p, len);
    free(b.p);
    /* positional reader at odd offsets */
    struct store_body *br = NULL;
    uint64_t size = 0;
    assert_int_equal(store_body_open(st, r.id, &br, &size, &e), 0);
    assert_int_equal(size, len);
    unsigned char tmp[5003];
    for (uint64_t off = 0; off < len; off += sizeof tmp) {
        size_t got = 0;
        assert_int_equal(store_body_read(br, off, tmp, sizeof tmp, &got, &e), 0);
        size_t want_n = len - off < sizeof tmp ? len - off : sizeof tmp;
        assert_int_equal(got, want_n);
        assert_memory_equal(tmp, p + off, got);
    }
    size_t got = 7;
    assert_int_equal(store_body_read(br, len + 10, tmp, sizeof tmp, &got, &e), 0);
    assert_int_equal(got, 0);
    store_body_close(br);
    store_body_close(NULL);
    free(p);
}

static void streamed_store(void **state)
{
    struct store *st = fx_open(state);
    roundtrip(st, "small", 300 * 1024 + 17, 1);   /* byte by byte at first */
    roundtrip(st, "odd", 300 * 1024 + 17, 4093);
    roundtrip(st, "empty", 0, 10);
    roundtrip(st, "at-limit", STORE_SPOOL_MEM_MAX, 65536);     /* last in-memory size */
    roundtrip(st, "over-limit", STORE_SPOOL_MEM_MAX + 1, 65536); /* first spooled size */
    struct err e;
    enum store_uidl_state s;
    int64_t id = 0;
    assert_int_equal(store_uidl_get(st, "acc", "odd", &s, &id, &e), 0);
    assert_int_equal(s, STORE_UIDL_STORED);
    assert_true(id > 0);
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(st, &q, &e), 0);
    assert_int_equal(q.pending, 10);
    assert_int_equal(q.delivered + q.failed + q.dead, 0);
    /* unknown message */
    struct store_msg_info info;
    struct buf b = {0};
    struct store_body *br = NULL;
    assert_int_equal(store_msg_get(st, 9999, &info, &e), STORE_NOTFOUND);
    assert_int_equal(store_msg_stream(st, 9999, sink, &b, &e), STORE_NOTFOUND);
    assert_int_equal(store_body_open(st, 9999, &br, NULL, &e), STORE_NOTFOUND);
    assert_null(br);
}

static void store_meta_and_errors(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm"};
    /* a long UTF-8 subject is cut at a character boundary */
    char subj[2 * STORE_META_MAX + 3];
    size_t k = 0;
    subj[k++] = 'x';
    while (k + 2 < sizeof subj) {
        subj[k++] = (char)0xC3;
        subj[k++] = (char)0xA9; /* é */
    }
    subj[k] = '\0';
    struct store_msg *m = NULL;
    assert_int_equal(store_msg_begin(st, "acc", "u1", &m, &e), 0);
    assert_int_equal(store_msg_write(m, "x", 1, &e), 0);
    struct store_msg_meta meta = {.subject = subj};
    struct store_msg_result r;
    assert_int_equal(store_msg_finish(m, &meta, wh, 1, T0, &r, &e), 0);
    struct store_msg_info info;
    assert_int_equal(store_msg_get(st, r.id, &info, &e), 0);
    size_t sl = strlen(info.subject);
    assert_true(sl <= STORE_META_MAX && sl >= STORE_META_MAX - 1);
    assert_int_equal((unsigned char)info.subject[sl - 1], 0xA9);
    assert_string_equal(info.from, "");
    /* same UIDL again: refused, nothing added */
    assert_int_equal(put(st, "acc", "u1", "y", 1, 1, wh, 1, T0, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_non_null(strstr(e.msg, "already known"));
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(st, &q, &e), 0);
    assert_int_equal(q.pending, 1);
    /* but the same UIDL on another account is another message */
    assert_int_equal(put(st, "other", "u1", "y", 1, 1, wh, 1, T0, NULL, &e), 0);
    /* webhook list errors */
    const char *dup[] = {"a", "a"};
    assert_int_equal(put(st, "acc", "u2", "y", 1, 1, dup, 2, T0, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    const char *empty[] = {""};
    assert_int_equal(put(st, "acc", "u2", "y", 1, 1, empty, 1, T0, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    const char *many[STORE_WEBHOOKS_MAX + 1];
    for (int i = 0; i <= STORE_WEBHOOKS_MAX; i++)
        many[i] = "w";
    assert_int_equal(put(st, "acc", "u2", "y", 1, 1, many, STORE_WEBHOOKS_MAX + 1, T0, NULL, &e),
                     -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_int_equal(uidl_state(st, "acc", "u2"), -1);
    /* names and UIDLs */
    char longu[STORE_UIDL_MAX + 2];
    memset(longu, 'u', sizeof longu - 1);
    longu[sizeof longu - 1] = '\0';
    assert_int_equal(store_msg_begin(st, "acc", longu, &m, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_null(m);
    longu[STORE_UIDL_MAX] = '\0'; /* exactly the limit is fine */
    assert_int_equal(put(st, "acc", longu, "z", 1, 1, wh, 1, T0, NULL, &e), 0);
    assert_int_equal(uidl_state(st, "acc", longu), STORE_UIDL_STORED);
    assert_int_equal(store_msg_begin(st, "acc", "", &m, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_msg_begin(st, "", "u", &m, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    char longa[STORE_NAME_MAX + 2];
    memset(longa, 'a', sizeof longa - 1);
    longa[sizeof longa - 1] = '\0';
    assert_int_equal(store_msg_begin(st, longa, "u", &m, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    /* abort stores nothing */
    assert_int_equal(store_msg_begin(st, "acc", "aborted", &m, &e), 0);
    assert_int_equal(store_msg_write(m, "abc", 3, &e), 0);
    store_msg_abort(m);
    store_msg_abort(NULL);
    assert_int_equal(uidl_state(st, "acc", "aborted"), -1);
    /* no webhooks: delivered at once */
    int64_t id = put_ok(st, "acc", "nowh", NULL, 0, T0);
    assert_int_equal(uidl_state(st, "acc", "nowh"), STORE_UIDL_DELIVERED);
    assert_int_equal(store_msg_get(st, id, &info, &e), 0);
    assert_int_equal(info.delivered_at, T0);
}

static void spool_failure(void **state)
{
    struct fx *fx = *state;
    struct store *st = fx_open(state);
    struct err e;
    char moved[96];
    snprintf(moved, sizeof moved, "%s-moved", fx->dir);
    struct store_msg *m = NULL;
    assert_int_equal(store_msg_begin(st, "acc", "big", &m, &e), 0);
    /* the state_dir disappears: the spool file cannot be created */
    assert_int_equal(rename(fx->dir, moved), 0);
    unsigned char chunk[65536];
    fill(chunk, sizeof chunk, 1);
    int r = 0;
    for (int i = 0; i < 20 && r == 0; i++)
        r = store_msg_write(m, chunk, sizeof chunk, &e);
    assert_int_equal(r, -1);
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "spool"));
    assert_int_equal(store_msg_write(m, chunk, 1, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_msg_finish(m, NULL, NULL, 0, T0, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(rename(moved, fx->dir), 0);
    assert_int_equal(uidl_state(st, "acc", "big"), -1);
}

static int no_spool_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, ".spool-", 7) == 0)
            n++;
    closedir(d);
    return n == 0;
}

static long maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void large_message(void **state)
{
    struct fx *fx = *state;
    struct store *st = fx_open(state);
    const size_t total = 25u << 20, chunk = 65536;
    unsigned char *buf = malloc(chunk);
    assert_non_null(buf);
    EVP_MD_CTX *ref = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ref, EVP_sha256(), NULL);
    long rss0 = maxrss_kb();
    struct err e;
    struct store_msg *m = NULL;
    assert_int_equal(store_msg_begin(st, "acc", "huge", &m, &e), 0);
    for (size_t off = 0; off < total; off += chunk) {
        fill(buf, chunk, (uint32_t)(off / chunk));
        EVP_DigestUpdate(ref, buf, chunk);
        assert_int_equal(store_msg_write(m, buf, chunk, &e), 0);
        if (off == 4u << 20)
            assert_true(no_spool_files(fx->dir)); /* spool file is unlinked at once */
    }
    const char *wh[] = {"crm"};
    struct store_msg_result r;
    if (store_msg_finish(m, NULL, wh, 1, T0, &r, &e) != 0)
        fail_msg("finish: %s", e.msg);
    unsigned char md[32];
    unsigned int l;
    EVP_DigestFinal_ex(ref, md, &l);
    EVP_MD_CTX_free(ref);
    char want[65];
    for (int i = 0; i < 32; i++)
        snprintf(want + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(r.sha256, want);
    assert_int_equal(r.size, total);
    /* read back in chunks and hash again */
    struct store_body *br = NULL;
    uint64_t size = 0;
    assert_int_equal(store_body_open(st, r.id, &br, &size, &e), 0);
    assert_int_equal(size, total);
    EVP_MD_CTX *back = EVP_MD_CTX_new();
    EVP_DigestInit_ex(back, EVP_sha256(), NULL);
    uint64_t off = 0;
    for (int guard = 0; guard < 10000; guard++) {
        size_t got = 0;
        assert_int_equal(store_body_read(br, off, buf, chunk, &got, &e), 0);
        if (got == 0)
            break;
        unsigned char expect[65536];
        fill(expect, chunk, (uint32_t)(off / chunk));
        assert_memory_equal(buf, expect, got);
        EVP_DigestUpdate(back, buf, got);
        off += got;
    }
    store_body_close(br);
    assert_int_equal(off, total);
    EVP_DigestFinal_ex(back, md, &l);
    EVP_MD_CTX_free(back);
    char got_hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(got_hex + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(got_hex, want);
    long peak = maxrss_kb(), grow = peak - rss0;
    /* sanitizers and valgrind have their own memory overhead: print only */
    const char *pre = getenv("LD_PRELOAD");
    bool check = !SANITIZED && !(pre && strstr(pre, "vgpreload"));
    if (!check)
        printf("  [store] 25 MiB message: peak RSS not checked in this build\n");
    if (check) { /* far less than the message itself */
        assert_true(grow < 16 * 1024);
        assert_true(peak < 48 * 1024);
    }
    assert_true(no_spool_files(fx->dir));
    free(buf);
}

/* ---- batching and crashes ----------------------------------------------- */

static void batch_many(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm", "audit"};
    unsigned char *p = malloc(20480);
    assert_non_null(p);
    fill(p, 20480, 9);
    const int n = 2000, per = 64;
    for (int i = 0; i < n; i++) {
        if (i % per == 0)
            assert_int_equal(store_batch_begin(st, &e), 0);
        char uidl[32];
        snprintf(uidl, sizeof uidl, "uidl-%05d", i);
        size_t len = 2048 + (size_t)(i * 7919) % (20480 - 2048);
        if (put(st, "bench", uidl, p, len, 16384, wh, 2, T0, NULL, &e) != 0)
            fail_msg("put %d: %s", i, e.msg);
        if (i % per == per - 1 || i == n - 1)
            assert_int_equal(store_batch_commit(st, &e), 0);
    }
    struct store_account_counts c;
    assert_int_equal(store_account_counts(st, "bench", &c, &e), 0);
    assert_int_equal(c.stored, n);
    assert_int_equal(c.pending_deliveries, 2 * n);
    assert_int_equal(count_uidls(st, "bench"), n);
    free(p);
    /* misuse */
    assert_int_equal(store_batch_commit(st, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_batch_begin(st, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    store_batch_rollback(st);
    store_batch_rollback(st);
}

static void batch_partial_failure(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm"};
    assert_int_equal(store_batch_begin(st, &e), 0);
    put_ok(st, "acc", "a", wh, 1, T0);
    assert_int_equal(put(st, "acc", "a", "dup", 3, 3, wh, 1, T0, NULL, &e), -1);
    put_ok(st, "acc", "b", wh, 1, T0);
    const char *ign[] = {"i1", "i2"};
    assert_int_equal(store_uidls_record_ignored(st, "acc", ign, 2, T0, &e), 0);
    /* another handle sees nothing before commit */
    struct fx *fx = *state;
    struct store *other = open_ok(fx->dir);
    assert_int_equal(count_uidls(other, "acc"), 0);
    assert_int_equal(store_batch_commit(st, &e), 0);
    assert_int_equal(count_uidls(other, "acc"), 4);
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(other, &q, &e), 0);
    assert_int_equal(q.pending, 2);
    /* rollback drops the batch */
    assert_int_equal(store_batch_begin(st, &e), 0);
    put_ok(st, "acc", "c", wh, 1, T0);
    store_batch_rollback(st);
    assert_int_equal(uidl_state(other, "acc", "c"), -1);
    /* close with an open batch rolls back too */
    assert_int_equal(store_batch_begin(st, &e), 0);
    put_ok(st, "acc", "d", wh, 1, T0);
    store_close(st);
    fx->st = NULL;
    assert_int_equal(uidl_state(other, "acc", "d"), -1);
    store_close(other);
}

static struct store_attempt att(int64_t at, int http, const char *error, const char *outcome);

/* Writes of a batch that find nothing (rolled back to their savepoint),
 * one after another and between writes that do: the others all commit. */
static void batch_write_not_found(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm"};
    struct store_attempt a = att(T0, 200, NULL, "delivered");
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_delivery_record(st, OWNER, 424242, &a, STORE_D_DELIVERED, 0, &e),
                     STORE_NOTFOUND); /* the batch's first write */
    put_ok(st, "acc", "a", wh, 1, T0);
    assert_int_equal(store_delivery_record(st, OWNER, 424242, &a, STORE_D_DELIVERED, 0, &e),
                     STORE_NOTFOUND);
    assert_int_equal(store_delivery_record(st, OWNER, 424243, &a, STORE_D_DELIVERED, 0, &e),
                     STORE_NOTFOUND);
    put_ok(st, "acc", "b", wh, 1, T0);
    const char *ign[] = {"i1"};
    assert_int_equal(store_uidls_record_ignored(st, "acc", ign, 1, T0, &e), 0);
    assert_int_equal(store_delivery_record(st, OWNER, 424242, &a, STORE_D_DELIVERED, 0, &e),
                     STORE_NOTFOUND); /* the batch's last write */
    assert_int_equal(store_batch_commit(st, &e), 0);
    assert_int_equal(count_uidls(st, "acc"), 3);
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(st, &q, &e), 0);
    assert_int_equal(q.pending, 2);
    /* a batch of nothing but such writes, then one without any */
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_delivery_record(st, OWNER, 424242, &a, STORE_D_DELIVERED, 0, &e),
                     STORE_NOTFOUND);
    assert_int_equal(store_batch_commit(st, &e), 0);
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_batch_commit(st, &e), 0);
    put_ok(st, "acc", "c", wh, 1, T0);
    assert_int_equal(count_uidls(st, "acc"), 4);
}

static void crash_child(const char *dir, int commit)
{
    struct err e;
    struct store *st = store_open(dir, &e);
    if (!st)
        _exit(2);
    if (store_batch_begin(st, &e) < 0)
        _exit(3);
    const char *wh[] = {"crm"};
    for (int i = 0; i < 10; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "c%d-%d", commit, i);
        struct store_msg *m;
        if (store_msg_begin(st, "acc", uidl, &m, &e) < 0 || store_msg_write(m, uidl, 4, &e) < 0 ||
            store_msg_finish(m, NULL, wh, 1, T0, NULL, &e) < 0)
            _exit(4);
    }
    if (commit && store_batch_commit(st, &e) < 0)
        _exit(5);
    _exit(0); /* no close, no cleanup: as if killed */
}

static void crash_in_batch(void **state)
{
    struct fx *fx = *state;
    store_close(open_ok(fx->dir)); /* create the schema before forking */
    for (int commit = 0; commit <= 1; commit++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            crash_child(fx->dir, commit);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        struct store *st = open_ok(fx->dir);
        struct err e;
        struct store_queue_counts q;
        assert_int_equal(store_delivery_counts(st, &q, &e), 0);
        assert_int_equal(count_uidls(st, "acc"), commit ? 10 : 0);
        assert_int_equal(q.pending, commit ? 10 : 0);
        if (commit)
            assert_int_equal(uidl_state(st, "acc", "c1-9"), STORE_UIDL_STORED);
        store_close(st);
    }
}

/* ---- deliveries --------------------------------------------------------- */

static struct store_attempt att(int64_t at, int http, const char *error, const char *outcome)
{
    struct store_attempt a = {.started_at = at, .duration_ms = 120, .http_status = http,
                              .error = error, .outcome = outcome};
    return a;
}

struct attempts {
    int n;
    int http[8];
    char outcome[8][32];
};

static int attempt_cb(void *ctx, const struct store_attempt_row *a, struct err *e)
{
    (void)e;
    struct attempts *x = ctx;
    if (x->n < 8) {
        x->http[x->n] = a->http_status;
        snprintf(x->outcome[x->n], sizeof x->outcome[0], "%s", a->outcome);
    }
    x->n++;
    return 0;
}

static void delivery_lifecycle(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a", "b"};
    int64_t mid = put_ok(st, "acc", "u1", wh, 2, T0);
    struct store_delivery d[8];
    size_t n = 0;
    assert_int_equal(lease_due(st, T0 - 1, d, 8, &n, &e), 0);
    assert_int_equal(n, 0); /* not due yet */
    assert_int_equal(lease_due(st, T0, d, 8, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(d[0].msg_id, mid);
    assert_string_equal(d[0].account, "acc");
    assert_string_equal(d[0].uidl, "u1");
    assert_int_equal(d[0].status, STORE_D_PENDING);
    assert_int_equal(d[0].attempts, 0);
    struct store_delivery da = strcmp(d[0].webhook, "a") == 0 ? d[0] : d[1];
    struct store_delivery db = strcmp(d[0].webhook, "a") == 0 ? d[1] : d[0];
    assert_string_equal(db.webhook, "b");
    size_t n2 = 9;
    assert_int_equal(lease_due(st, T0, d, 8, &n2, &e), 0);
    assert_int_equal(n2, 0); /* claimed: not handed out twice */

    struct store_attempt a1 = att(T0 + 10, 503, "Service Unavailable", "retry");
    assert_int_equal(store_delivery_record(st, OWNER, da.id, &a1, STORE_D_FAILED, T0 + 5000, &e), 0);
    struct store_attempt b1 = att(T0 + 10, 200, NULL, "delivered");
    assert_int_equal(store_delivery_record(st, OWNER, db.id, &b1, STORE_D_DELIVERED, 0, &e), 0);
    assert_int_equal(uidl_state(st, "acc", "u1"), STORE_UIDL_STORED); /* a still open */
    struct store_msg_info info;
    assert_int_equal(store_msg_get(st, mid, &info, &e), 0);
    assert_int_equal(info.delivered_at, 0);

    assert_int_equal(lease_due(st, T0 + 4999, d, 8, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(lease_due(st, T0 + 5000, d, 8, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].id, da.id);
    assert_int_equal(d[0].status, STORE_D_FAILED);
    assert_int_equal(d[0].attempts, 1);
    assert_int_equal(d[0].last_http_status, 503);
    assert_string_equal(d[0].last_error, "Service Unavailable");
    struct store_attempt a2 = att(T0 + 5000, 204, NULL, "delivered");
    assert_int_equal(store_delivery_record(st, OWNER, da.id, &a2, STORE_D_DELIVERED, 0, &e), 0);
    assert_int_equal(uidl_state(st, "acc", "u1"), STORE_UIDL_DELIVERED);
    assert_int_equal(store_msg_get(st, mid, &info, &e), 0);
    assert_int_equal(info.delivered_at, T0 + 5120);
    /* a delivered delivery takes no more attempts: a late one is only history */
    assert_int_equal(store_delivery_record(st, OWNER, da.id, &a2, STORE_D_DELIVERED, 0, &e),
                     STORE_LEASE_LOST);
    struct store_delivery one;
    struct attempts x = {0};
    assert_int_equal(store_delivery_get(st, da.id, &one, attempt_cb, &x, &e), 0);
    assert_int_equal(one.status, STORE_D_DELIVERED);
    assert_int_equal(one.attempts, 2);
    assert_int_equal(one.delivered_at, T0 + 5120);
    assert_int_equal(x.n, 3);
    assert_int_equal(x.http[0], 503);
    assert_string_equal(x.outcome[0], "retry");
    assert_int_equal(x.http[1], 204);

    /* to dead, with a long error truncated */
    const char *wc[] = {"c"};
    put_ok(st, "acc", "u2", wc, 1, T0);
    char longerr[STORE_ERROR_MAX * 2];
    memset(longerr, 'E', sizeof longerr - 1);
    longerr[sizeof longerr - 1] = '\0';
    int64_t t = T0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(lease_due(st, t, d, 8, &n, &e), 0);
        assert_int_equal(n, 1);
        struct store_attempt ax = att(t, 0, longerr, i < 2 ? "retry" : "dead");
        assert_int_equal(
            store_delivery_record(st, OWNER, d[0].id, &ax, i < 2 ? STORE_D_FAILED : STORE_D_DEAD,
                                  t + 1000, &e),
            0);
        t += 1000;
    }
    assert_int_equal(lease_due(st, t + DAY_MS, d, 8, &n, &e), 0);
    assert_int_equal(n, 0);
    struct attempts y = {0};
    assert_int_equal(store_delivery_get(st, d[0].id, &one, attempt_cb, &y, &e), 0);
    assert_int_equal(one.status, STORE_D_DEAD);
    assert_int_equal(one.attempts, 3);
    assert_int_equal(strlen(one.last_error), STORE_ERROR_MAX);
    assert_int_equal(y.n, 3);
    assert_string_equal(y.outcome[2], "dead");
    assert_int_equal(uidl_state(st, "acc", "u2"), STORE_UIDL_STORED);
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(st, &q, &e), 0);
    assert_int_equal(q.delivered, 2);
    assert_int_equal(q.dead, 1);
    assert_int_equal(q.pending + q.failed, 0);
    /* bad calls */
    assert_int_equal(store_delivery_record(st, OWNER, 9999, &a2, STORE_D_DELIVERED, 0, &e),
                     STORE_NOTFOUND);
    assert_int_equal(store_delivery_record(st, OWNER, da.id, &a2, STORE_D_PENDING, 0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    struct store_attempt bad = att(T0, 0, NULL, "an outcome name that is far too long to keep");
    assert_int_equal(store_delivery_record(st, OWNER, d[0].id, &bad, STORE_D_FAILED, 0, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_int_equal(store_delivery_get(st, 9999, &one, NULL, NULL, &e), STORE_NOTFOUND);
    assert_int_equal(lease_due(st, T0, d, STORE_DUE_MAX + 1, &n, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
}

static void retry_dead(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a"};
    put_ok(st, "acc", "u1", wh, 1, T0);
    struct store_delivery d[2];
    size_t n;
    assert_int_equal(lease_due(st, T0, d, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    int64_t id = d[0].id;
    /* pending: nothing to retry */
    assert_int_equal(store_delivery_retry(st, id, T0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    struct store_attempt a = att(T0, 500, "boom", "dead");
    assert_int_equal(store_delivery_record(st, OWNER, id, &a, STORE_D_DEAD, 0, &e), 0);
    assert_int_equal(lease_due(st, T0 + DAY_MS, d, 2, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_delivery_retry(st, id, T0 + DAY_MS, &e), 0);
    struct store_delivery one;
    assert_int_equal(store_delivery_get(st, id, &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_PENDING);
    assert_int_equal(one.next_attempt_at, T0 + DAY_MS);
    assert_int_equal(one.attempts, 1); /* history kept */
    assert_int_equal(lease_due(st, T0 + DAY_MS, d, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].id, id);
    a = att(T0 + DAY_MS, 200, NULL, "delivered");
    assert_int_equal(store_delivery_record(st, OWNER, id, &a, STORE_D_DELIVERED, 0, &e), 0);
    assert_int_equal(uidl_state(st, "acc", "u1"), STORE_UIDL_DELIVERED);
    assert_int_equal(store_delivery_retry(st, id, T0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_delivery_retry(st, 424242, T0, &e), STORE_NOTFOUND);
}

/* Account leases: one owner at a time, renewed in one call, taken back by
 * anyone once expired, released at stop; the visible state is untouched. */
static void account_leases(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    assert_int_equal(store_account_lease(st, "acc", "A", T0, LEASE, &e), 0); /* row created */
    struct store_account_state as;
    assert_int_equal(store_account_get(st, "acc", &as, &e), 0);
    assert_string_equal(as.state, "idle");
    assert_int_equal(store_account_lease(st, "acc", "A", T0 + 1, LEASE, &e), 0); /* ours */
    assert_int_equal(store_account_lease(st, "acc", "B", T0 + 2, LEASE, &e), STORE_LEASE_LOST);
    /* the state written meanwhile keeps the lease */
    struct store_account_state set = {.state = "backoff", .last_attempt_at = T0};
    assert_int_equal(store_account_set(st, "acc", &set, &e), 0);
    assert_int_equal(store_account_lease(st, "acc", "B", T0 + 3, LEASE, &e), STORE_LEASE_LOST);
    /* renewed by A: still A's past the first expiry */
    int64_t n = -1;
    assert_int_equal(store_account_renew(st, "A", T0 + LEASE / 2, LEASE, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_account_lease(st, "acc", "B", T0 + LEASE + 5, LEASE, &e),
                     STORE_LEASE_LOST);
    /* A stops renewing: once expired, B takes it, and A's renewal misses it */
    int64_t later = T0 + LEASE / 2 + LEASE;
    assert_int_equal(store_account_lease(st, "acc", "B", later, LEASE, &e), 0);
    assert_int_equal(store_account_renew(st, "A", later + 1, LEASE, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_account_lease(st, "acc", "A", later + 2, LEASE, &e), STORE_LEASE_LOST);
    /* B releases at stop: A may take it at once */
    assert_int_equal(store_account_release(st, "B", &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_account_lease(st, "acc", "A", later + 3, LEASE, &e), 0);
    assert_int_equal(store_account_get(st, "acc", &as, &e), 0);
    assert_string_equal(as.state, "backoff");
    /* bad calls */
    assert_int_equal(store_account_lease(st, "acc", "", T0, LEASE, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_account_lease(st, "acc", "A", T0, 0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* One number from sql on the fixture's database (SQLite's file, or
 * PostgreSQL's), read directly, not through the store; -1 if none. */
static long long db_value(void **state, const char *sql)
{
    if (pg_url)
        return pg_value(sql);
    char path[256];
    snprintf(path, sizeof path, "%s/%s", ((struct fx *)*state)->dir, STORE_DB_FILE);
    sqlite3 *db;
    long long v = -1;
    sqlite3_stmt *s = NULL;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* A lease given back leaves the account with no lease at all (no owner, no
 * expiry, as if released), only if the owner held it, and makes no row. */
static void account_give_back(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    err_clear(&e);
    assert_int_equal(store_account_lease(st, "acc", "A", T0, LEASE, &e), 0);
    assert_int_equal(store_account_lease(st, "other", "B", T0, LEASE, &e), 0);
    struct store_account_state set = {.state = "backoff", .last_attempt_at = T0};
    assert_int_equal(store_account_set(st, "acc", &set, &e), 0);
    assert_int_equal(store_account_give_back(st, "acc", "A", &e), 0);
    assert_int_equal(db_value(state, "SELECT count(*) FROM accounts WHERE name = 'acc'"
                                     " AND lease_owner IS NULL AND lease_until = 0"),
                     1);
    assert_int_equal(db_value(state, "SELECT count(*) FROM accounts WHERE lease_owner IS NOT NULL"),
                     1); /* B's only */
    /* the state is kept */
    struct store_account_state as;
    assert_int_equal(store_account_get(st, "acc", &as, &e), 0);
    assert_string_equal(as.state, "backoff");
    /* not revived by A's renewal; anyone takes it at once */
    int64_t n = -1;
    assert_int_equal(store_account_renew(st, "A", T0 + 1, LEASE, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_account_lease(st, "acc", "C", T0 + 2, LEASE, &e), 0);
    /* only the holder gives back: not A now, not A for B's, nor twice */
    assert_int_equal(store_account_give_back(st, "acc", "A", &e), STORE_LEASE_LOST);
    assert_int_equal(store_account_give_back(st, "other", "A", &e), STORE_LEASE_LOST);
    assert_int_equal(store_account_give_back(st, "acc", "C", &e), 0);
    assert_int_equal(store_account_give_back(st, "acc", "C", &e), STORE_LEASE_LOST);
    assert_int_equal(db_value(state, "SELECT count(*) FROM accounts WHERE name = 'other'"
                                     " AND lease_owner = 'B'"),
                     1);
    /* an account never leased: nothing given back, no row made */
    assert_int_equal(store_account_give_back(st, "never", "A", &e), STORE_LEASE_LOST);
    assert_int_equal(db_value(state, "SELECT count(*) FROM accounts WHERE name = 'never'"), 0);
    /* bad calls */
    assert_int_equal(store_account_give_back(st, "acc", "", &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    char longname[STORE_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(store_account_give_back(st, longname, "A", &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
}

/* Schema 5: an operator drops a dead delivery (kept, final, the message then
 * counts as delivered) and retries in bulk by webhook and status. */
static void drop_and_bulk_retry(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a", "b"};
    put_ok(st, "acc", "u1", wh, 2, T0);
    put_ok(st, "acc", "u2", wh, 2, T0);
    struct store_delivery d[8];
    size_t n;
    assert_int_equal(lease_due(st, T0, d, 8, &n, &e), 0);
    assert_int_equal(n, 4);
    int64_t a_u1 = 0, b_u1 = 0;
    for (size_t i = 0; i < n; i++) {
        struct store_attempt a = att(T0, 500, "boom", "dead");
        assert_int_equal(store_delivery_record(st, OWNER, d[i].id, &a, STORE_D_DEAD, 0, &e), 0);
        if (strcmp(d[i].uidl, "u1") == 0)
            *(strcmp(d[i].webhook, "a") == 0 ? &a_u1 : &b_u1) = d[i].id;
    }
    /* drop a of u1: kept as dropped; u1 still waits for b */
    assert_int_equal(store_delivery_drop(st, a_u1, T0 + 1, &e), 0);
    struct store_delivery one;
    assert_int_equal(store_delivery_get(st, a_u1, &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_DROPPED);
    assert_string_equal(store_dstatus_name(one.status), "dropped");
    assert_int_equal(one.attempts, 1);
    assert_int_equal(uidl_state(st, "acc", "u1"), STORE_UIDL_STORED);
    /* dropped is final: neither dropped again nor retried */
    assert_int_equal(store_delivery_drop(st, a_u1, T0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_delivery_retry(st, a_u1, T0, &e), -1);
    assert_int_equal(store_delivery_drop(st, 424242, T0, &e), STORE_NOTFOUND);
    /* dropping b of u1 too: the message is done, its UIDL delivered */
    assert_int_equal(store_delivery_drop(st, b_u1, T0 + 2, &e), 0);
    assert_int_equal(uidl_state(st, "acc", "u1"), STORE_UIDL_DELIVERED);
    struct store_queue_counts qc;
    assert_int_equal(store_delivery_counts(st, &qc, &e), 0);
    assert_int_equal(qc.dropped, 2);
    assert_int_equal(qc.dead, 2);
    /* bulk: only webhook b's dead ones (u2's), bounded by max */
    int64_t got = -1;
    assert_int_equal(store_delivery_retry_bulk(st, "b", STORE_D_DEAD, 1000, T0 + 3, &got, &e), 0);
    assert_int_equal(got, 1);
    assert_int_equal(store_delivery_retry_bulk(st, NULL, STORE_D_DEAD, 1000, T0 + 3, &got, &e), 0);
    assert_int_equal(got, 1); /* a's of u2 */
    assert_int_equal(store_delivery_retry_bulk(st, NULL, STORE_D_DEAD, 1000, T0 + 3, &got, &e), 0);
    assert_int_equal(got, 0);
    assert_int_equal(lease_due(st, T0 + 3, d, 8, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(store_delivery_retry_bulk(st, NULL, STORE_D_PENDING, 10, T0, &got, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_delivery_retry_bulk(st, NULL, STORE_D_DEAD, STORE_RETRY_BULK_MAX + 1, T0,
                                               &got, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    enum store_dstatus ds;
    assert_int_equal(store_dstatus_parse("dropped", &ds, &e), 0);
    assert_int_equal(ds, STORE_D_DROPPED);
}

/* Schema 5: events that are not messages go through the same outbox; one
 * per fall into a state until a poll works again. */
static void account_events(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"ops"};
    int64_t id = 0;
    assert_int_equal(store_account_event_once(st, "acc", "account.auth_error",
                                              "{\"account\":\"acc\"}", wh, 1, T0, &id, &e), 0);
    assert_true(id > 0);
    /* failing again: nothing new */
    int64_t again = -1;
    assert_int_equal(store_account_event_once(st, "acc", "account.auth_error", "{}", wh, 1,
                                              T0 + 1000, &again, &e), 0);
    assert_int_equal(again, 0);
    struct store_delivery d[4];
    size_t n;
    assert_int_equal(lease_due(st, T0, d, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].event_id, id);
    assert_int_equal(d[0].msg_id, 0);
    assert_string_equal(d[0].event_type, "account.auth_error");
    assert_string_equal(d[0].uidl, "");
    assert_int_equal(strlen(d[0].msg_key), STORE_KEY_HEX); /* the event's own key */
    struct store_event ev;
    char *data = NULL;
    assert_int_equal(store_event_get(st, id, &ev, &data, &e), 0);
    assert_string_equal(ev.type, "account.auth_error");
    assert_string_equal(ev.account, "acc");
    assert_string_equal(data, "{\"account\":\"acc\"}");
    free(data);
    assert_int_equal(store_event_get(st, id + 100, &ev, NULL, &e), STORE_NOTFOUND);
    /* recorded like any delivery; a dead one can be retried (no body needed) */
    struct store_attempt a = att(T0, 500, "boom", "dead");
    assert_int_equal(store_delivery_record(st, OWNER, d[0].id, &a, STORE_D_DEAD, 0, &e), 0);
    assert_int_equal(store_delivery_retry(st, d[0].id, T0 + 2, &e), 0);
    /* the account worked again (last_success_at after the event), then fails anew */
    struct store_account_state as = {.state = "idle", .last_success_at = T0 + 5000};
    assert_int_equal(store_account_set(st, "acc", &as, &e), 0);
    assert_int_equal(store_account_event_once(st, "acc", "account.auth_error", "{}", wh, 1,
                                              T0 + 6000, &again, &e), 0);
    assert_true(again > id);
    /* the outbox listing shows both */
    struct store_queue_counts qc;
    assert_int_equal(store_delivery_counts(st, &qc, &e), 0);
    assert_int_equal(qc.pending, 2);
    /* bad arguments */
    assert_int_equal(store_event_add(st, "acc", "", "{}", wh, 1, T0, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    const char *twice[] = {"x", "x"};
    assert_int_equal(store_event_add(st, "acc", "account.auth_error", "{}", twice, 2, T0, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

static void deliver_all(struct store *st, int64_t at);

/* Events are purged with the retention of bodies: only settled ones
 * (delivered or dropped), never the newest of an account and type (so
 * store_account_event_once still sees it), with their deliveries and
 * attempts; at most max per call. */
static void events_purge(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a", "b"};
    const char *auth = "account.auth_error";
    int64_t e1 = 0, e2 = 0, e3 = 0, e4 = 0, purged = -1;
    /* e3: a dead delivery */
    assert_int_equal(store_event_add(st, "acc", "x.test", "{}", wh, 1, T0, &e3, &e), 0);
    struct store_delivery d[4];
    size_t n = 0;
    assert_int_equal(lease_due(st, T0, d, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    int64_t d3 = d[0].id;
    struct store_attempt a = att(T0, 500, "boom", "dead");
    assert_int_equal(store_delivery_record(st, OWNER, d3, &a, STORE_D_DEAD, 0, &e), 0);
    /* e1, e2 of one account and type, each to two webhooks; e4 newer than e3 */
    assert_int_equal(store_event_add(st, "acc", auth, "{\"n\":1}", wh, 2, T0, &e1, &e), 0);
    assert_int_equal(store_event_add(st, "acc", auth, "{\"n\":2}", wh, 2, T0 + DAY_MS, &e2, &e),
                     0);
    assert_int_equal(store_event_add(st, "acc", "x.test", "{}", wh, 1, T0 + 1, &e4, &e), 0);
    assert_int_equal(lease_due(st, T0 + DAY_MS, d, 4, &n, &e), 0);
    assert_int_equal(n, 4);
    int64_t d1 = 0;
    for (size_t i = 0; i < n; i++) {
        struct store_attempt ok = att(T0 + DAY_MS, 200, NULL, "delivered");
        assert_int_equal(store_delivery_record(st, OWNER, d[i].id, &ok, STORE_D_DELIVERED, 0, &e),
                         0);
        if (d[i].event_id == e1)
            d1 = d[i].id;
    }
    assert_true(d1 > 0);
    struct store_queue_counts qc;
    assert_int_equal(store_delivery_counts(st, &qc, &e), 0);
    assert_int_equal(qc.delivered, 4);
    /* too young for the retention: nothing */
    assert_int_equal(store_purge_events(st, 7 * DAY_MS, T0 + 3 * DAY_MS, 0, &purged, &e), 0);
    assert_int_equal(purged, 0);
    /* e1 only: e2 and e4 are the newest of theirs, e3's delivery is dead */
    int64_t now = T0 + 30 * DAY_MS;
    assert_int_equal(store_purge_events(st, 7 * DAY_MS, now, 0, &purged, &e), 0);
    assert_int_equal(purged, 1);
    struct store_event ev;
    assert_int_equal(store_event_get(st, e1, &ev, NULL, &e), STORE_NOTFOUND);
    assert_int_equal(store_event_get(st, e2, &ev, NULL, &e), 0);
    assert_int_equal(store_event_get(st, e3, &ev, NULL, &e), 0);
    assert_int_equal(store_event_get(st, e4, &ev, NULL, &e), 0);
    struct store_delivery got;
    assert_int_equal(store_delivery_get(st, d1, &got, NULL, NULL, &e), STORE_NOTFOUND);
    assert_int_equal(store_delivery_counts(st, &qc, &e), 0);
    assert_int_equal(qc.delivered, 2);
    assert_int_equal(qc.dead, 1);
    /* the account never worked since e2: still nothing new */
    int64_t again = -1;
    assert_int_equal(store_account_event_once(st, "acc", auth, "{}", wh, 1, now, &again, &e), 0);
    assert_int_equal(again, 0);
    /* dropped, e3 goes too */
    assert_int_equal(store_delivery_drop(st, d3, now, &e), 0);
    assert_int_equal(store_purge_events(st, 7 * DAY_MS, now, 0, &purged, &e), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(store_event_get(st, e3, &ev, NULL, &e), STORE_NOTFOUND);
    assert_int_equal(store_purge_events(st, 7 * DAY_MS, now, 0, &purged, &e), 0);
    assert_int_equal(purged, 0);
    /* the max bound: four more of one type, three of them purgeable */
    for (int i = 0; i < 4; i++)
        assert_int_equal(store_event_add(st, "acc2", auth, "{}", wh, 1, T0 + i, NULL, &e), 0);
    deliver_all(st, T0 + 10);
    assert_int_equal(store_purge_events(st, 7 * DAY_MS, now, 2, &purged, &e), 0);
    assert_int_equal(purged, 2);
    assert_int_equal(store_purge_events(st, 7 * DAY_MS, now, 2, &purged, &e), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(store_purge_events(st, -1, now, 0, &purged, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* Schema 5: a Message-ID already stored for the account within the window
 * makes a message a duplicate: stored, not delivered. */
static void dedupe_by_message_id(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a"};
    struct store_msg_meta meta = {.message_id = "same@host", .dedupe_window_ms = 30 * DAY_MS};
    struct store_msg_result r1, r2, r3, r4;
    struct store_msg *m;
    assert_int_equal(store_msg_begin(st, "acc", "u1", &m, &e), 0);
    assert_int_equal(store_msg_write(m, "x", 1, &e), 0);
    assert_int_equal(store_msg_finish(m, &meta, wh, 1, T0, &r1, &e), 0);
    assert_int_equal(r1.duplicate_of, 0);
    /* re-listed under a new UIDL a day later: a duplicate of the first */
    assert_int_equal(store_msg_begin(st, "acc", "u2", &m, &e), 0);
    assert_int_equal(store_msg_write(m, "x", 1, &e), 0);
    assert_int_equal(store_msg_finish(m, &meta, wh, 1, T0 + DAY_MS, &r2, &e), 0);
    assert_int_equal(r2.duplicate_of, r1.id);
    assert_int_equal(uidl_state(st, "acc", "u2"), STORE_UIDL_DELIVERED); /* nothing to deliver */
    struct store_msg_info info;
    assert_int_equal(store_msg_get(st, r2.id, &info, &e), 0);
    assert_int_equal(info.duplicate_of, r1.id);
    /* another account, or past the window: not a duplicate */
    assert_int_equal(store_msg_begin(st, "other", "u1", &m, &e), 0);
    assert_int_equal(store_msg_finish(m, &meta, wh, 1, T0, &r3, &e), 0);
    assert_int_equal(r3.duplicate_of, 0);
    assert_int_equal(store_msg_begin(st, "acc", "u3", &m, &e), 0);
    assert_int_equal(store_msg_finish(m, &meta, wh, 1, T0 + 31 * DAY_MS, &r4, &e), 0);
    assert_int_equal(r4.duplicate_of, 0);
    /* one delivery each for u1, other/u1, u3; none for the duplicate */
    struct store_queue_counts qc;
    assert_int_equal(store_delivery_counts(st, &qc, &e), 0);
    assert_int_equal(qc.pending, 3);
}

static void leases(void **state)
{
    struct fx *fx = *state;
    struct store *st = open_ok(fx->dir);
    struct err e;
    const char *wh[] = {"a", "b", "c"};
    put_ok(st, "acc", "u1", wh, 3, T0);
    struct store_delivery d[4];
    size_t n;
    assert_int_equal(lease_due(st, T0, d, 2, &n, &e), 0);
    assert_int_equal(n, 2); /* limit respected */
    assert_string_equal(d[0].lease_owner, OWNER);
    assert_int_equal(d[0].lease_until, T0 + LEASE);
    assert_int_equal(strlen(d[0].msg_key), STORE_KEY_HEX);
    store_close(st);        /* "crash" with two leases held */
    st = fx_open(state);
    assert_int_equal(lease_due(st, T0, d, 4, &n, &e), 0);
    assert_int_equal(n, 1); /* the third one only: the other two are leased */
    int64_t third = d[0].id;

    /* another owner takes nothing live, but takes back what has expired */
    assert_int_equal(store_delivery_lease_due(st, "other", NULL, T0 + LEASE - 1, LEASE, d, 4, &n,
                                              &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(store_delivery_lease_due(st, "other", NULL, T0 + LEASE, LEASE, d, 4, &n, &e),
                     0);
    assert_int_equal(n, 3);
    assert_string_equal(d[0].lease_owner, "other");

    /* renewing keeps them from the first owner; only "other" renews */
    int64_t renewed = -1;
    assert_int_equal(store_delivery_renew(st, OWNER, T0 + LEASE, LEASE, &renewed, &e), 0);
    assert_int_equal(renewed, 0);
    assert_int_equal(store_delivery_renew(st, "other", T0 + 2 * LEASE - 1, LEASE, &renewed, &e),
                     0);
    assert_int_equal(renewed, 3);
    assert_int_equal(lease_due(st, T0 + 2 * LEASE, d, 4, &n, &e), 0);
    assert_int_equal(n, 0); /* renewed: still "other"'s */

    /* the first owner's late outcome is history only: the lease was lost */
    struct store_attempt late = att(T0, 200, NULL, "delivered");
    assert_int_equal(store_delivery_record(st, OWNER, third, &late, STORE_D_DELIVERED, 0, &e),
                     STORE_LEASE_LOST);
    struct store_delivery one;
    struct attempts x = {0};
    assert_int_equal(store_delivery_get(st, third, &one, attempt_cb, &x, &e), 0);
    assert_int_equal(one.status, STORE_D_PENDING);
    assert_int_equal(one.attempts, 0);
    assert_string_equal(one.lease_owner, "other");
    assert_int_equal(x.n, 1);

    /* release one, then all: due again at once */
    int64_t released = 0;
    assert_int_equal(store_delivery_release(st, "other", third, &released, &e), 0);
    assert_int_equal(released, 1);
    assert_int_equal(store_delivery_release(st, OWNER, third, &released, &e), 0);
    assert_int_equal(released, 0); /* not OWNER's */
    assert_int_equal(lease_due(st, T0 + 2 * LEASE, d, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].id, third);
    assert_int_equal(store_delivery_release(st, "other", 0, &released, &e), 0);
    assert_int_equal(released, 2);
    assert_int_equal(store_delivery_release(st, OWNER, 0, &released, &e), 0);
    assert_int_equal(released, 1);
    assert_int_equal(lease_due(st, T0 + 2 * LEASE, d, 4, &n, &e), 0);
    assert_int_equal(n, 3);

    /* an expired lease nobody took is still the owner's to record */
    struct store_attempt ok = att(T0 + 5 * LEASE, 200, NULL, "delivered");
    assert_int_equal(store_delivery_record(st, OWNER, d[0].id, &ok, STORE_D_DELIVERED, 0, &e), 0);
    assert_int_equal(store_delivery_get(st, d[0].id, &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_DELIVERED);
    assert_string_equal(one.lease_owner, "");
    assert_int_equal(one.lease_until, 0);

    /* an operator's retry drops the lease at once */
    struct store_attempt bad = att(T0 + 2 * LEASE, 500, "boom", "dead");
    assert_int_equal(store_delivery_record(st, OWNER, d[1].id, &bad, STORE_D_DEAD, 0, &e), 0);
    assert_int_equal(lease_due(st, T0 + 2 * LEASE, d, 4, &n, &e), 0);
    assert_int_equal(n, 0); /* the third is still leased, the second is dead */
    int64_t next = -1;
    assert_int_equal(store_delivery_next_due(st, T0 + 2 * LEASE, &next, &e), 0);
    assert_int_equal(next, T0 + 3 * LEASE); /* when the live lease expires */

    /* per webhook */
    put_ok(st, "acc", "u2", wh, 3, T0);
    assert_int_equal(store_delivery_lease_due(st, OWNER, "b", T0, LEASE, d, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].webhook, "b");
    assert_string_equal(d[0].uidl, "u2");

    /* bad calls */
    assert_int_equal(store_delivery_lease_due(st, "", NULL, T0, LEASE, d, 4, &n, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_delivery_lease_due(st, OWNER, NULL, T0, 0, d, 4, &n, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    char longowner[STORE_OWNER_MAX + 2];
    memset(longowner, 'o', sizeof longowner - 1);
    longowner[sizeof longowner - 1] = '\0';
    assert_int_equal(store_delivery_renew(st, longowner, T0, LEASE, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_int_equal(store_delivery_record(st, NULL, third, &ok, STORE_D_DELIVERED, 0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* The link key: made once, the same for every connection to the store,
 * replaced by a rotation. */
static void link_key(void **state)
{
    struct fx *fx = *state;
    struct store *st = fx_open(state);
    struct err e;
    unsigned char k1[STORE_LINK_KEY_LEN], k2[STORE_LINK_KEY_LEN], k3[STORE_LINK_KEY_LEN];
    unsigned char zero[STORE_LINK_KEY_LEN] = {0};
    int64_t at = 0;
    assert_int_equal(store_link_key(st, k1, &at, 1000, &e), 0);
    assert_int_equal(at, 1000);
    assert_memory_not_equal(k1, zero, sizeof zero);
    struct store *other = open_ok(fx->dir); /* another instance on the same store */
    assert_int_equal(store_link_key(other, k2, &at, 2000, &e), 0);
    assert_memory_equal(k1, k2, sizeof k1);
    assert_int_equal(at, 1000);
    assert_int_equal(store_link_key_rotate(other, 3000, &e), 0);
    assert_int_equal(store_link_key(st, k3, &at, 4000, &e), 0);
    assert_memory_not_equal(k1, k3, sizeof k1);
    assert_int_equal(at, 3000);
    store_close(other);
    assert_int_equal(store_link_key(NULL, k1, NULL, 0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* f[0..n) begun for account "acc" as UIDLs prefix0, prefix1, ..., each
 * with the len octets of body, to be finished at `now` (no metadata, no
 * webhooks yet). */
static void group_begin(struct store *st, struct store_finish *f, int n, const char *prefix,
                        const void *body, size_t len, int64_t now)
{
    struct err e;
    memset(f, 0, (size_t)n * sizeof *f);
    for (int i = 0; i < n; i++) {
        char u[64];
        snprintf(u, sizeof u, "%s%d", prefix, i);
        assert_int_equal(store_msg_begin(st, "acc", u, &f[i].m, &e), 0);
        assert_int_equal(store_msg_write(f[i].m, body, len, &e), 0);
        f[i].now = now;
    }
}

/* store_msg_finish_many: each message as store_msg_finish alone would take
 * it, in a batch (small ones several per round trip on PostgreSQL) and
 * outside one: stored, a UIDL already known (before, or earlier in the same
 * call), a write error, bad webhooks, a spooled body, a duplicate. */
static void finish_many(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm", "audit"};
    const char *bad[] = {"crm", "crm"};
    put_ok(st, "acc", "known-0", wh, 1, T0);
    size_t big = STORE_SPOOL_MEM_MAX + 10;
    unsigned char *p = malloc(big);
    assert_non_null(p);
    fill(p, big, 3);
    struct store_msg_meta meta = {.subject = "S", .message_id = "<same@x>"};
    struct store_msg_meta dmeta = {.subject = "D", .message_id = "<same@x>",
                                   .dedupe_window_ms = DAY_MS};
    for (int pass = 0; pass < 2; pass++) {
        const char *uidls[] = {"n1", "known", "n2", "n1", "werr", "badhooks", "big", "n3", "dup"};
        enum { N = 9 };
        struct store_finish f[N];
        memset(f, 0, sizeof f);
        for (int i = 0; i < N; i++) {
            char u[32];
            snprintf(u, sizeof u, "%s-%d", uidls[i], strcmp(uidls[i], "known") ? pass : 0);
            assert_int_equal(store_msg_begin(st, "acc", u, &f[i].m, &e), 0);
            size_t len = strcmp(uidls[i], "big") == 0 ? big : 100 + (size_t)i;
            assert_int_equal(store_msg_write(f[i].m, p, len, &e), 0);
            f[i].meta = strcmp(uidls[i], "dup") == 0 ? &dmeta : &meta;
            f[i].webhooks = strcmp(uidls[i], "badhooks") == 0 ? bad : wh;
            f[i].n_webhooks = 2;
            f[i].now = T0 + pass;
        }
        /* a write error: a message larger than allowed */
        assert_int_equal(store_msg_write(f[4].m, p, STORE_MSG_MAX, &e), -1);
        if (pass == 0)
            assert_int_equal(store_batch_begin(st, &e), 0);
        assert_int_equal(store_msg_finish_many(st, f, N, &e), 0);
        if (pass == 0)
            assert_int_equal(store_batch_commit(st, &e), 0);
        int want[N] = {0, -1, 0, -1, -1, -1, 0, 0, 0};
        for (int i = 0; i < N; i++) {
            if (f[i].result != want[i])
                fail_msg("pass %d, message %d (%s): %d, want %d: %s", pass, i, uidls[i],
                         f[i].result, want[i], f[i].err.msg);
            assert_null(f[i].m); /* consumed */
        }
        assert_int_equal(f[1].err.kind, ERR_USAGE);
        assert_int_equal(f[3].err.kind, ERR_USAGE);
        assert_int_equal(f[5].err.kind, ERR_USAGE);
        assert_true(f[0].res.id > 0 && f[2].res.id > f[0].res.id && f[7].res.id > f[6].res.id);
        assert_int_equal(f[6].res.size, big);
        assert_int_equal(strlen(f[0].res.sha256), STORE_SHA256_HEX);
        assert_true(f[8].res.duplicate_of > 0); /* of an earlier "<same@x>" */
        struct store_msg_info info;
        assert_int_equal(store_msg_get(st, f[2].res.id, &info, &e), 0);
        assert_int_equal(info.size, 102);
        assert_string_equal(info.sha256, f[2].res.sha256);
        struct buf b = {0};
        assert_int_equal(store_msg_stream(st, f[6].res.id, sink, &b, &e), 0);
        assert_int_equal(b.len, big);
        assert_memory_equal(b.p, p, big);
        free(b.p);
    }
    struct store_account_counts c;
    assert_int_equal(store_account_counts(st, "acc", &c, &e), 0);
    assert_int_equal(c.stored, 1 + 2 * 5);
    /* each stored non-duplicate has its two deliveries */
    assert_int_equal(c.pending_deliveries, 1 + 2 * 2 * 4); /* "known": one */
    struct store_finish g = {0};
    assert_int_equal(store_msg_begin(st, "acc", "x", &g.m, &e), 0);
    assert_int_equal(store_msg_finish_many(NULL, &g, 1, &e), -1);
    assert_int_equal(g.result, -1);
    assert_null(g.m);
    free(p);
}

/* The deliveries of messages, in list order (newest first): webhook and
 * message, one per line. */
struct dlist {
    char text[1024];
};

static int dlist_cb(void *ctx, const struct store_delivery *d, struct err *e)
{
    (void)e;
    struct dlist *l = ctx;
    size_t n = strlen(l->text);
    snprintf(l->text + n, sizeof l->text - n, "%lld:%s;", (long long)d->msg_id, d->webhook);
    return 0;
}

/* store_msg_finish_many in a batch (on PostgreSQL, a group written by one
 * statement from arrays) stores every field as store_msg_finish alone
 * does: the same message stored both ways, then compared.  Header fields
 * with array syntax in them ({, ", \, commas, "NULL"), invalid UTF-8, one
 * too long (cut at a character boundary), none at all, an empty body, a
 * binary one; no webhooks (delivered at once) and two (their deliveries in
 * the given order, message by message).  On PostgreSQL the group's
 * messages are one INSERT statement (a statement trigger counts them). */
static void finish_many_fields(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    char longsub[STORE_META_MAX + 40];
    size_t ln = 0;
    while (ln + 2 < sizeof longsub - 1) { /* "é" (two octets) past the limit */
        longsub[ln++] = (char)0xC3;
        longsub[ln++] = (char)0xA9;
    }
    longsub[ln] = '\0';
    const struct store_msg_meta metas[] = {
        {.subject = "{\"a,b\"} \\ NULL", .from = "\"Doe, J\" <j@x>", .message_id = "<q\"x@y>",
         .date = "Mon, 1 Jan 2024 00:00:00 +0000"},
        {.subject = "bad \xff\xfe end", .from = NULL, .message_id = NULL, .date = "NULL"},
        {.subject = longsub, .from = "a@b", .message_id = "<l@x>", .declared_size = 7},
        {.subject = "", .from = "", .message_id = "", .date = ""},
    };
    enum { N = 5 };
    const char *wh[] = {"zeta", "alpha"};
    unsigned char body[4096];
    fill(body, sizeof body, 9);
    body[0] = 0;
    if (pg_url)
        assert_int_equal(pg_exec("CREATE TABLE t_stmts(n int);"
                                 " CREATE FUNCTION t_count() RETURNS trigger LANGUAGE plpgsql"
                                 " AS $$BEGIN INSERT INTO t_stmts VALUES (1); RETURN NULL; END$$;"
                                 " CREATE TRIGGER t_count AFTER INSERT ON messages"
                                 " FOR EACH STATEMENT EXECUTE FUNCTION t_count()"),
                         0);
    int64_t ids[2][N];
    for (int way = 0; way < 2; way++) { /* 0: in a batch, together; 1: each alone */
        struct store_finish f[N];
        memset(f, 0, sizeof f);
        for (int i = 0; i < N; i++) {
            char u[32];
            snprintf(u, sizeof u, "f%d-%d", i, way);
            assert_int_equal(store_msg_begin(st, "acc", u, &f[i].m, &e), 0);
            size_t len = i == 3 ? 0 : 1000 + 100 * (size_t)i;
            if (len)
                assert_int_equal(store_msg_write(f[i].m, body, len, &e), 0);
            f[i].meta = i < 4 ? &metas[i] : NULL;
            f[i].webhooks = wh;
            f[i].n_webhooks = i == 1 ? 0 : 2;
            f[i].now = T0 + i;
        }
        if (way == 0) {
            assert_int_equal(store_batch_begin(st, &e), 0);
            assert_int_equal(store_msg_finish_many(st, f, N, &e), 0);
            assert_int_equal(store_batch_commit(st, &e), 0);
            if (pg_url)
                assert_int_equal(pg_value("SELECT count(*) FROM t_stmts"), 1);
        } else {
            for (int i = 0; i < N; i++)
                assert_int_equal(store_msg_finish_many(st, &f[i], 1, &e), 0);
        }
        for (int i = 0; i < N; i++) {
            if (f[i].result != 0)
                fail_msg("way %d, message %d: %s", way, i, f[i].err.msg);
            ids[way][i] = f[i].res.id;
            if (i)
                assert_true(ids[way][i] > ids[way][i - 1]);
        }
    }
    for (int i = 0; i < N; i++) {
        struct store_msg_info a, b;
        assert_int_equal(store_msg_get(st, ids[0][i], &a, &e), 0);
        assert_int_equal(store_msg_get(st, ids[1][i], &b, &e), 0);
        assert_int_equal(a.size, b.size);
        assert_string_equal(a.sha256, b.sha256);
        assert_string_equal(a.subject, b.subject);
        assert_string_equal(a.from, b.from);
        assert_string_equal(a.message_id, b.message_id);
        assert_string_equal(a.date, b.date);
        assert_string_equal(a.kind, b.kind);
        assert_int_equal(a.declared_size, b.declared_size);
        assert_int_equal(a.received_at, b.received_at);
        assert_int_equal(a.delivered_at, b.delivered_at);
        assert_int_equal(a.duplicate_of, 0);
        assert_int_equal(strlen(a.key), STORE_KEY_HEX);
        assert_string_not_equal(a.key, b.key);
        struct buf x = {0}, y = {0};
        assert_int_equal(store_msg_stream(st, ids[0][i], sink, &x, &e), 0);
        assert_int_equal(store_msg_stream(st, ids[1][i], sink, &y, &e), 0);
        assert_int_equal(x.len, a.size);
        assert_int_equal(y.len, a.size);
        if (x.len)
            assert_memory_equal(x.p, body, x.len);
        free(x.p);
        free(y.p);
    }
    struct store_msg_info m;
    assert_int_equal(store_msg_get(st, ids[0][0], &m, &e), 0);
    assert_string_equal(m.subject, metas[0].subject);
    assert_string_equal(m.from, metas[0].from);
    assert_int_equal(store_msg_get(st, ids[0][1], &m, &e), 0);
    /* PostgreSQL takes valid UTF-8 only: U+FFFD for each bad octet (SQLite
     * keeps the octets) */
    assert_string_equal(m.subject, pg_url ? "bad \xef\xbf\xbd\xef\xbf\xbd end" : metas[1].subject);
    assert_string_equal(m.from, "");
    assert_int_equal(m.delivered_at, T0 + 1); /* no webhooks: delivered at once */
    assert_int_equal(store_msg_get(st, ids[0][2], &m, &e), 0);
    assert_true(strlen(m.subject) <= STORE_META_MAX && strlen(m.subject) % 2 == 0);
    assert_int_equal(m.size, 1200);
    /* deliveries: message by message, each's webhooks in order (the list
     * is newest first) */
    struct dlist l = {{0}};
    char next[STORE_CURSOR_MAX];
    assert_int_equal(store_delivery_list(st, NULL, "acc", 100, NULL, dlist_cb, &l, next, &e), 0);
    assert_string_equal(next, "");
    char want[1024] = "";
    for (int way = 1; way >= 0; way--)
        for (int i = N - 1; i >= 0; i--)
            for (int w = 1; w >= 0 && i != 1; w--) {
                size_t n = strlen(want);
                snprintf(want + n, sizeof want - n, "%lld:%s;", (long long)ids[way][i], wh[w]);
            }
    assert_string_equal(l.text, want);
    /* a group with no webhook at all (empty arrays of webhooks): each
     * recorded, delivered at once */
    struct store_finish g[3];
    group_begin(st, g, 3, "nohook-", body, 10, T0 + 50);
    long long before = pg_url ? pg_value("SELECT count(*) FROM t_stmts") : 0;
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_msg_finish_many(st, g, 3, &e), 0);
    assert_int_equal(store_batch_commit(st, &e), 0);
    if (pg_url) /* one statement, not three */
        assert_int_equal(pg_value("SELECT count(*) FROM t_stmts"), before + 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].result, 0);
        assert_int_equal(store_msg_get(st, g[i].res.id, &m, &e), 0);
        assert_int_equal(m.delivered_at, T0 + 50);
    }
    assert_int_equal(uidl_state(st, "acc", "nohook-2"), STORE_UIDL_DELIVERED);
}

/* store_delivery_record_many settles messages as recording each outcome
 * alone, one after the other, would (on PostgreSQL: all in one statement):
 * a message whose deliveries are all delivered here is delivered at the
 * last one's end, its UIDL "delivered"; one delivered here and one before
 * too; one with a delivery failed or dead here is not.  On PostgreSQL the
 * group is one INSERT into attempts (a statement trigger counts them). */
static void record_many_settles(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *ab[] = {"a", "b"}, *a1[] = {"a"};
    int64_t m[4];
    m[0] = put_ok(st, "acc", "m0", ab, 2, T0);
    m[1] = put_ok(st, "acc", "m1", ab, 2, T0);
    m[2] = put_ok(st, "acc", "m2", ab, 2, T0);
    m[3] = put_ok(st, "acc", "m3", a1, 1, T0);
    struct store_delivery d[8];
    size_t n = 0;
    assert_int_equal(lease_due(st, T0, d, 8, &n, &e), 0);
    assert_int_equal(n, 7);
    int64_t id[4][2] = {{0}};
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 4; j++)
            if (d[i].msg_id == m[j])
                id[j][strcmp(d[i].webhook, "b") == 0] = d[i].id;
    /* m2's "b": delivered before */
    struct store_attempt before = att(T0 + 5, 200, NULL, "delivered");
    assert_int_equal(store_delivery_record(st, OWNER, id[2][1], &before, STORE_D_DELIVERED, 0, &e),
                     0);
    if (pg_url)
        assert_int_equal(pg_exec("CREATE TABLE t_stmts(n int);"
                                 " CREATE FUNCTION t_count() RETURNS trigger LANGUAGE plpgsql"
                                 " AS $$BEGIN INSERT INTO t_stmts VALUES (1); RETURN NULL; END$$;"
                                 " CREATE TRIGGER t_count AFTER INSERT ON attempts"
                                 " FOR EACH STATEMENT EXECUTE FUNCTION t_count()"),
                         0);
    struct store_record r[6];
    memset(r, 0, sizeof r);
    const struct {
        int msg, hook, at;
        enum store_dstatus status;
    } plan[6] = {
        {0, 0, 10, STORE_D_DELIVERED}, {0, 1, 20, STORE_D_DELIVERED}, /* m0: both, here */
        {1, 0, 10, STORE_D_DELIVERED}, {1, 1, 10, STORE_D_FAILED},    /* m1: one failed */
        {2, 0, 30, STORE_D_DELIVERED},                                /* m2: the other before */
        {3, 0, 10, STORE_D_DEAD},                                     /* m3: dead */
    };
    for (int i = 0; i < 6; i++) {
        r[i].id = id[plan[i].msg][plan[i].hook];
        r[i].status = plan[i].status;
        r[i].a = att(T0 + plan[i].at, plan[i].status == STORE_D_DELIVERED ? 200 : 503,
                     plan[i].status == STORE_D_DELIVERED ? NULL : "Service Unavailable",
                     store_dstatus_name(plan[i].status));
        r[i].next_attempt_at = plan[i].status == STORE_D_FAILED ? T0 + 5000 : 0;
    }
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_delivery_record_many(st, OWNER, r, 6, &e), 0);
    assert_int_equal(store_batch_commit(st, &e), 0);
    for (int i = 0; i < 6; i++)
        if (r[i].result != 0)
            fail_msg("outcome %d: %d %s", i, r[i].result, r[i].err.msg);
    if (pg_url)
        assert_int_equal(pg_value("SELECT count(*) FROM t_stmts"), 1);
    const int64_t want_at[4] = {T0 + 20 + 120, 0, T0 + 30 + 120, 0};
    const char *uidl[4] = {"m0", "m1", "m2", "m3"};
    for (int j = 0; j < 4; j++) {
        struct store_msg_info info;
        assert_int_equal(store_msg_get(st, m[j], &info, &e), 0);
        if (info.delivered_at != want_at[j])
            fail_msg("message %s: delivered_at %lld, want %lld", uidl[j],
                     (long long)info.delivered_at, (long long)want_at[j]);
        assert_int_equal(uidl_state(st, "acc", uidl[j]),
                         want_at[j] ? STORE_UIDL_DELIVERED : STORE_UIDL_STORED);
    }
    struct store_delivery one;
    assert_int_equal(store_delivery_get(st, id[1][1], &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_FAILED);
    assert_int_equal(one.attempts, 1);
    assert_int_equal(one.last_http_status, 503);
    assert_int_equal(store_delivery_get(st, id[3][0], &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_DEAD);
}

/* store_delivery_record_many: each outcome as store_delivery_record alone
 * would take it, in a batch (several per round trip on PostgreSQL) and
 * outside one: recorded, unknown, too late (another owner's live lease),
 * refused by the checks. */
static void record_many(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a", "b", "c", "d", "e"};
    int64_t mid = put_ok(st, "acc", "u1", wh, 5, T0);
    const char *wf[] = {"f"};
    int64_t m2 = put_ok(st, "acc", "u2", wf, 1, T0);
    struct store_delivery d[8];
    size_t n = 0;
    assert_int_equal(lease_due(st, T0, d, 8, &n, &e), 0);
    assert_int_equal(n, 6);
    /* d[5]'s lease taken over by another owner after it expired */
    int64_t other_id = 0;
    for (size_t i = 0; i < n; i++)
        if (d[i].msg_id == m2)
            other_id = d[i].id;
    assert_true(other_id > 0);
    struct store_delivery o[8];
    size_t on = 0;
    assert_int_equal(store_delivery_lease_due(st, "other", "f", T0 + 10 * LEASE, 10 * LEASE, o, 8,
                                              &on, &e), 0);
    assert_int_equal(on, 1);
    struct store_record r[8];
    memset(r, 0, sizeof r);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i].msg_id != mid)
            continue;
        r[k].id = d[i].id;
        r[k].a = att(T0 + 10, 200, NULL, "delivered");
        r[k].status = STORE_D_DELIVERED;
        k++;
    }
    assert_int_equal(k, 5);
    r[1].a = att(T0 + 10, 503, "Service Unavailable", "retry");
    r[1].status = STORE_D_FAILED;
    r[1].next_attempt_at = T0 + 5000;
    r[2].status = STORE_D_PENDING; /* refused: a record's status is never pending */
    r[k].id = 987654;               /* unknown */
    r[k].a = att(T0 + 10, 200, NULL, "delivered");
    r[k++].status = STORE_D_DELIVERED;
    r[k].id = other_id;            /* another owner's live lease */
    r[k].a = att(T0 + 10, 200, NULL, "delivered");
    r[k++].status = STORE_D_DELIVERED;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < k; i++)
            r[i].result = 99;
        if (pass == 0)
            assert_int_equal(store_batch_begin(st, &e), 0);
        assert_int_equal(store_delivery_record_many(st, OWNER, r, k, &e), 0);
        if (pass == 0)
            assert_int_equal(store_batch_commit(st, &e), 0);
        /* the first pass records; the second finds them settled (history only) */
        assert_int_equal(r[0].result, pass ? STORE_LEASE_LOST : 0);
        assert_int_equal(r[1].result, 0); /* failed: due again, still ours */
        assert_int_equal(r[2].result, -1);
        assert_int_equal(r[2].err.kind, ERR_USAGE);
        assert_int_equal(r[3].result, pass ? STORE_LEASE_LOST : 0);
        assert_int_equal(r[4].result, pass ? STORE_LEASE_LOST : 0);
        assert_int_equal(r[5].result, STORE_NOTFOUND);
        assert_int_equal(r[6].result, STORE_LEASE_LOST);
    }
    struct store_delivery one;
    assert_int_equal(store_delivery_get(st, r[0].id, &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_DELIVERED);
    assert_int_equal(one.attempts, 1);
    assert_int_equal(store_delivery_get(st, r[1].id, &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_FAILED);
    assert_int_equal(one.attempts, 2);
    assert_int_equal(store_delivery_get(st, other_id, &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_PENDING);
    assert_string_equal(one.lease_owner, "other");
    /* two still open (r[1] failed, r[2] refused): the message is not delivered */
    assert_int_equal(uidl_state(st, "acc", "u1"), STORE_UIDL_STORED);
    /* one delivery named twice in a batch: recorded in order, the second
     * finds it settled by the first */
    struct store_record twice[2];
    memset(twice, 0, sizeof twice);
    for (int i = 0; i < 2; i++) {
        twice[i].id = r[1].id;
        twice[i].a = att(T0 + 20 + i, i ? 503 : 200, i ? "late" : NULL, i ? "retry" : "delivered");
        twice[i].status = i ? STORE_D_FAILED : STORE_D_DELIVERED;
        twice[i].next_attempt_at = i ? T0 + 9000 : 0;
    }
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_delivery_record_many(st, OWNER, twice, 2, &e), 0);
    assert_int_equal(store_batch_commit(st, &e), 0);
    assert_int_equal(twice[0].result, 0);
    assert_int_equal(twice[1].result, STORE_LEASE_LOST);
    assert_int_equal(store_delivery_get(st, r[1].id, &one, NULL, NULL, &e), 0);
    assert_int_equal(one.status, STORE_D_DELIVERED);
    assert_int_equal(one.attempts, 3);
    assert_int_equal(store_delivery_record_many(NULL, OWNER, r, k, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* store_msg_load: the row, a body up to mem_max in memory and the link key
 * (made on first use) in one call; a larger body is left to streaming; a
 * purged one is not read; an unknown id is STORE_NOTFOUND. */
static void msg_load(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm"};
    size_t len = 3 * STORE_IO_CHUNK + 123; /* several chunks, in order */
    unsigned char *p = malloc(len);
    assert_non_null(p);
    fill(p, len, 7);
    struct store_msg_result res;
    assert_int_equal(put(st, "acc", "big", p, len, 9000, wh, 1, T0, &res, &e), 0);
    struct store_msg_info info;
    char *body = (char *)1;
    size_t blen = 1;
    unsigned char key[STORE_LINK_KEY_LEN], key2[STORE_LINK_KEY_LEN];
    assert_int_equal(store_msg_load(st, res.id, &info, len, &body, &blen, key, 1000, &e), 0);
    assert_int_equal(info.id, res.id);
    assert_string_equal(info.uidl, "big");
    assert_string_equal(info.subject, "Hello");
    assert_int_equal(info.size, len);
    assert_non_null(body);
    assert_int_equal(blen, len);
    assert_memory_equal(body, p, len);
    free(body);
    assert_int_equal(store_link_key(st, key2, NULL, 2000, &e), 0); /* the one made above */
    assert_memory_equal(key, key2, sizeof key);
    /* larger than mem_max: metadata only; no key asked for */
    assert_int_equal(store_msg_load(st, res.id, &info, len - 1, &body, &blen, NULL, 0, &e), 0);
    assert_null(body);
    assert_int_equal(blen, 0);
    assert_int_equal(info.size, len);
    /* an empty body is an empty buffer, not "too large" */
    int64_t empty = 0;
    {
        struct store_msg *m = NULL;
        struct store_msg_result r2;
        assert_int_equal(store_msg_begin(st, "acc", "empty", &m, &e), 0);
        assert_int_equal(store_msg_finish(m, NULL, wh, 1, T0, &r2, &e), 0);
        empty = r2.id;
    }
    assert_int_equal(store_msg_load(st, empty, &info, len, &body, &blen, NULL, 0, &e), 0);
    assert_non_null(body);
    assert_int_equal(blen, 0);
    free(body);
    assert_int_equal(store_msg_load(st, 999999, &info, len, &body, &blen, key, 0, &e),
                     STORE_NOTFOUND);
    assert_null(body);
    /* purged: not read */
    deliver_all(st, T0);
    int64_t purged = 0;
    assert_int_equal(store_purge_bodies(st, 0, T0 + DAY_MS, 0, &purged, &e), 0);
    assert_int_equal(purged, 2);
    assert_int_equal(store_msg_load(st, res.id, &info, len, &body, &blen, NULL, 0, &e), 0);
    assert_true(info.body_purged_at > 0);
    assert_null(body);
    assert_int_equal(store_msg_load(NULL, res.id, &info, len, &body, &blen, NULL, 0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    free(p);
}

/* store_msg_load_many: each id gets its own row and body (in any order,
 * an unknown id in between), a body over mem_max or past total_max is left
 * to streaming (and every body after the first past total_max), a purged
 * one is not read, and the link key is the store's. */
static const size_t many_len[] = {100, 3 * STORE_IO_CHUNK + 123, 200, 300};

static void many_check(const struct store_loaded *l, const int64_t *ids, unsigned char (*p)[4096],
                       const bool *read)
{
    static const int at[] = {2, -1, 0, 1, 3}; /* l[i] is message at[i] (-1: unknown) */
    char uidl[16];
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(l[i].id, at[i] < 0 ? 999999 : ids[at[i]]);
        if (at[i] < 0) {
            assert_int_equal(l[i].result, STORE_NOTFOUND);
            assert_null(l[i].body);
            continue;
        }
        assert_int_equal(l[i].result, 0);
        assert_int_equal(l[i].info.id, ids[at[i]]);
        snprintf(uidl, sizeof uidl, "m%d", at[i]);
        assert_string_equal(l[i].info.uidl, uidl);
        assert_int_equal(l[i].info.size, many_len[at[i]]);
        if (!read[i]) {
            assert_null(l[i].body);
            assert_int_equal(l[i].body_len, 0);
            continue;
        }
        assert_non_null(l[i].body);
        assert_int_equal(l[i].body_len, many_len[at[i]]);
        assert_memory_equal(l[i].body, p[at[i]], many_len[at[i]]);
    }
}

static void msg_load_many(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm"};
    static unsigned char p[4][4096];
    unsigned char *big = malloc(many_len[1]);
    assert_non_null(big);
    int64_t ids[4];
    for (int i = 0; i < 4; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "m%d", i);
        fill(i == 1 ? big : p[i], many_len[i], 11 + (uint32_t)i);
        if (i == 1)
            memcpy(p[1], big, sizeof p[1]);
        struct store_msg_result res;
        assert_int_equal(put(st, "acc", uidl, i == 1 ? big : p[i], many_len[i], 9000, wh, 1, T0,
                             &res, &e), 0);
        ids[i] = res.id;
    }
    free(big);
    struct store_loaded l[5];
    const int64_t want[] = {ids[2], 999999, ids[0], ids[1], ids[3]};
    unsigned char key[STORE_LINK_KEY_LEN], key2[STORE_LINK_KEY_LEN];
    for (int i = 0; i < 5; i++)
        l[i].id = want[i];
    if (store_msg_load_many(st, l, 5, 1000, 100000, key, 1000, &e) != 0)
        fail_msg("store_msg_load_many: %s", e.msg);
    many_check(l, ids, p, (const bool[]){true, false, true, false, true});
    store_loaded_free(l, 5);
    assert_null(l[0].body);
    assert_int_equal(store_link_key(st, key2, NULL, 2000, &e), 0); /* the one made above */
    assert_memory_equal(key, key2, sizeof key);
    /* within 250 octets: m2 (200); m0 (100) would pass it, so m3 is not read either */
    assert_int_equal(store_msg_load_many(st, l, 5, 1000, 250, NULL, 0, &e), 0);
    many_check(l, ids, p, (const bool[]){true, false, false, false, false});
    store_loaded_free(l, 5);
    /* nothing to read: the key still */
    memset(key, 0, sizeof key);
    assert_int_equal(store_msg_load_many(st, l, 0, 1000, 1000, key, 3000, &e), 0);
    assert_memory_equal(key, key2, sizeof key);
    /* the first one not read (an unknown id; an event's row, id 0): the key still */
    const int64_t unread_first[] = {999999, 0, ids[2]};
    for (int i = 0; i < 3; i++)
        l[i].id = unread_first[i];
    memset(key, 0, sizeof key);
    if (store_msg_load_many(st, l, 3, 1000, 1000, key, 3000, &e) != 0)
        fail_msg("store_msg_load_many, the first unread: %s", e.msg);
    assert_memory_equal(key, key2, sizeof key);
    assert_int_equal(l[0].result, STORE_NOTFOUND);
    assert_int_equal(l[1].result, STORE_NOTFOUND);
    assert_int_equal(l[2].result, 0);
    store_loaded_free(l, 3);
    assert_int_equal(store_msg_load_many(st, l, STORE_LOAD_MANY_MAX + 1, 1, 1, NULL, 0, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_int_equal(store_msg_load_many(NULL, l, 1, 1, 1, NULL, 0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    /* purged: metadata only */
    deliver_all(st, T0);
    int64_t purged = 0;
    assert_int_equal(store_purge_bodies(st, 0, T0 + DAY_MS, 0, &purged, &e), 0);
    l[0].id = ids[0];
    assert_int_equal(store_msg_load_many(st, l, 1, 1000, 1000, NULL, 0, &e), 0);
    assert_int_equal(l[0].result, 0);
    assert_true(l[0].info.body_purged_at > 0);
    assert_null(l[0].body);
}

static void webhook_disable(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"gone", "ok"};
    put_ok(st, "acc", "u1", wh, 2, T0);
    bool dis = true;
    int64_t since = 5;
    assert_int_equal(store_webhook_disabled(st, "gone", &dis, &since, &e), 0);
    assert_false(dis);
    assert_int_equal(since, 0);
    assert_int_equal(store_webhook_disable(st, "gone", "410 Gone", T0, &e), 0);
    assert_int_equal(store_webhook_disable(st, "gone", "again", T0 + 9, &e), 0);
    assert_int_equal(store_webhook_disabled(st, "gone", &dis, &since, &e), 0);
    assert_true(dis);
    assert_int_equal(since, T0); /* first disable time kept */
    struct store_delivery d[4];
    size_t n;
    assert_int_equal(lease_due(st, T0, d, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].webhook, "ok");
    assert_int_equal(store_webhooks_enable_all(st, &e), 0);
    assert_int_equal(lease_due(st, T0, d, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].webhook, "gone");
    assert_int_equal(store_webhook_disable(st, "", NULL, T0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* ---- UIDL policy -------------------------------------------------------- */

struct names {
    int n;
    char v[16][32];
};

static int names_cb(void *ctx, const char *uidl, enum store_uidl_state s, int64_t id,
                    struct err *e)
{
    (void)s;
    (void)id;
    (void)e;
    struct names *x = ctx;
    if (x->n < 16)
        snprintf(x->v[x->n], sizeof x->v[0], "%s", uidl);
    x->n++;
    return 0;
}

static bool has(const struct names *x, const char *u)
{
    for (int i = 0; i < x->n && i < 16; i++)
        if (strcmp(x->v[i], u) == 0)
            return true;
    return false;
}

static void deliver_all(struct store *st, int64_t at)
{
    struct store_delivery d[16];
    size_t n;
    struct err e;
    assert_int_equal(lease_due(st, at, d, 16, &n, &e), 0);
    for (size_t i = 0; i < n; i++) {
        struct store_attempt a = att(at, 200, NULL, "delivered");
        a.duration_ms = 0;
        assert_int_equal(store_delivery_record(st, OWNER, d[i].id, &a, STORE_D_DELIVERED, 0, &e), 0);
    }
}

static void deletable_policy(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a"};
    const char *ign[] = {"i1"};
    assert_int_equal(store_uidls_record_ignored(st, "acc", ign, 1, T0, &e), 0);
    put_ok(st, "acc", "old", wh, 1, T0);
    deliver_all(st, T0);
    put_ok(st, "acc", "new", wh, 1, T0 + 6 * DAY_MS);
    deliver_all(st, T0 + 6 * DAY_MS);
    put_ok(st, "acc", "open", wh, 1, T0); /* stays pending */
    put_ok(st, "other", "old", wh, 1, T0);
    struct names x = {0};
    int64_t now = T0 + 8 * DAY_MS;
    /* after_delivery: delete */
    assert_int_equal(store_uidls_deletable(st, "acc", true, 0, now, names_cb, &x, &e), 0);
    assert_int_equal(x.n, 2);
    assert_true(has(&x, "old") && has(&x, "new"));
    /* keep + delete_after 7d: only the one stored 8 days ago */
    memset(&x, 0, sizeof x);
    assert_int_equal(store_uidls_deletable(st, "acc", false, 7 * DAY_MS, now, names_cb, &x, &e),
                     0);
    assert_int_equal(x.n, 1);
    assert_string_equal(x.v[0], "old");
    /* keep without delete_after: nothing */
    memset(&x, 0, sizeof x);
    assert_int_equal(store_uidls_deletable(st, "acc", false, 0, now, names_cb, &x, &e), 0);
    assert_int_equal(x.n, 0);
    /* an undelivered message is never deletable, however old */
    memset(&x, 0, sizeof x);
    assert_int_equal(
        store_uidls_deletable(st, "acc", true, 1, now + 365 * DAY_MS, names_cb, &x, &e), 0);
    assert_false(has(&x, "open"));
    assert_false(has(&x, "i1"));
    /* after QUIT +OK */
    const char *gone[] = {"old", "unknown"};
    assert_int_equal(store_uidls_mark_deleted(st, "acc", gone, 2, &e), 0);
    assert_int_equal(uidl_state(st, "acc", "old"), STORE_UIDL_DELETED);
    assert_int_equal(uidl_state(st, "other", "old"), STORE_UIDL_STORED);
    assert_int_equal(uidl_state(st, "acc", "unknown"), -1);
    memset(&x, 0, sizeof x);
    assert_int_equal(store_uidls_deletable(st, "acc", true, 0, now, names_cb, &x, &e), 0);
    assert_int_equal(x.n, 1);
    assert_string_equal(x.v[0], "new");
}

/* A message too large to retrieve is stored as its header; delivering its
 * event must never make the real message deletable from the server. */
static void too_large_never_deletable(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a"};
    struct store_msg *m;
    const char hdr[] = "Subject: huge\r\n\r\n";
    assert_int_equal(store_msg_begin(st, "acc", "big", &m, &e), 0);
    assert_int_equal(store_msg_write(m, hdr, sizeof hdr - 1, &e), 0);
    struct store_msg_meta meta = {.kind = STORE_KIND_TOO_LARGE, .declared_size = 40u << 20};
    struct store_msg_result r;
    assert_int_equal(store_msg_finish(m, &meta, wh, 1, T0, &r, &e), 0);
    put_ok(st, "acc", "small", wh, 1, T0);
    deliver_all(st, T0);
    struct store_msg_info info;
    assert_int_equal(store_msg_get(st, r.id, &info, &e), 0);
    assert_string_equal(info.kind, STORE_KIND_TOO_LARGE);
    assert_true(info.declared_size == (40u << 20));
    assert_int_equal(info.size, sizeof hdr - 1);
    assert_int_equal(uidl_state(st, "acc", "big"), STORE_UIDL_DELIVERED);
    struct names x = {0};
    assert_int_equal(store_uidls_deletable(st, "acc", true, 1, T0 + 365 * DAY_MS, names_cb, &x,
                                           &e), 0);
    assert_int_equal(x.n, 1);
    assert_string_equal(x.v[0], "small");
    /* an ordinary message reads back as such */
    int64_t next = 0;
    assert_int_equal(store_delivery_next_due(st, T0, &next, &e), 0);
    assert_int_equal(next, 0); /* everything delivered: nothing due */
}

static void forget_vanished(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a"};
    const char *ign[] = {"i1", "i2"};
    assert_int_equal(store_uidls_record_ignored(st, "acc", ign, 2, T0, &e), 0);
    int64_t dmid = put_ok(st, "acc", "d1", wh, 1, T0);
    put_ok(st, "acc", "x1", wh, 1, T0);
    deliver_all(st, T0);
    const char *x1[] = {"x1"};
    assert_int_equal(store_uidls_mark_deleted(st, "acc", x1, 1, &e), 0);
    put_ok(st, "acc", "s1", wh, 1, T0); /* pending */
    put_ok(st, "acc", "api-deleted", wh, 1, T0);
    const char *ad[] = {"api-deleted"};
    assert_int_equal(store_uidls_mark_deleted(st, "acc", ad, 1, &e), 0); /* undelivered */
    put_ok(st, "other", "i1", wh, 1, T0);
    assert_int_equal(count_uidls(st, "acc"), 6);

    const char *listed[] = {"i2"};
    int64_t forgotten = -1;
    assert_int_equal(store_uidls_forget_vanished(st, "acc", listed, 1, &forgotten, &e), 0);
    assert_int_equal(forgotten, 3); /* i1, d1, x1 */
    assert_int_equal(uidl_state(st, "acc", "i1"), -1);
    assert_int_equal(uidl_state(st, "acc", "d1"), -1);
    assert_int_equal(uidl_state(st, "acc", "x1"), -1);
    assert_int_equal(uidl_state(st, "acc", "i2"), STORE_UIDL_IGNORED);
    assert_int_equal(uidl_state(st, "acc", "s1"), STORE_UIDL_STORED);
    assert_int_equal(uidl_state(st, "acc", "api-deleted"), STORE_UIDL_DELETED);
    assert_int_equal(uidl_state(st, "other", "i1"), STORE_UIDL_STORED);
    struct store_msg_info info; /* the message and its history stay */
    assert_int_equal(store_msg_get(st, dmid, &info, &e), 0);

    /* s1 goes dead: still not forgotten */
    struct store_delivery d[4];
    size_t n;
    assert_int_equal(lease_due(st, T0, d, 4, &n, &e), 0);
    assert_int_equal(n, 3); /* s1, api-deleted, other's i1 */
    int64_t dead[4];
    size_t nd = 0;
    for (size_t i = 0; i < n; i++) {
        bool mine = strcmp(d[i].account, "acc") == 0;
        struct store_attempt a = att(T0, mine ? 500 : 200, NULL, NULL);
        assert_int_equal(store_delivery_record(st, OWNER, d[i].id, &a,
                                               mine ? STORE_D_DEAD : STORE_D_DELIVERED, 0, &e),
                         0);
        if (mine)
            dead[nd++] = d[i].id;
    }
    assert_int_equal(nd, 2);
    assert_int_equal(store_uidls_forget_vanished(st, "acc", NULL, 0, &forgotten, &e), 0);
    assert_int_equal(forgotten, 1); /* only i2 */
    assert_int_equal(uidl_state(st, "acc", "s1"), STORE_UIDL_STORED);
    assert_int_equal(uidl_state(st, "acc", "api-deleted"), STORE_UIDL_DELETED);
    /* once delivered they go */
    for (size_t i = 0; i < nd; i++)
        assert_int_equal(store_delivery_retry(st, dead[i], T0 + 1, &e), 0);
    deliver_all(st, T0 + 1);
    assert_int_equal(store_uidls_forget_vanished(st, "acc", NULL, 0, &forgotten, &e), 0);
    assert_int_equal(forgotten, 2);
    assert_int_equal(count_uidls(st, "acc"), 0);
    assert_int_equal(count_uidls(st, "other"), 1);
}

static void ignored_uidls(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    enum { N = 1000 };
    char(*names)[16] = calloc(N, 16);
    const char **list = calloc(N, sizeof *list);
    assert_non_null(names);
    assert_non_null(list);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], 16, "ig%d", i);
        list[i] = names[i];
    }
    const char *wh[] = {"a"};
    put_ok(st, "acc", "ig5", wh, 1, T0);
    assert_int_equal(store_uidls_record_ignored(st, "acc", list, N, T0, &e), 0);
    assert_int_equal(count_uidls(st, "acc"), N);
    assert_int_equal(uidl_state(st, "acc", "ig5"), STORE_UIDL_STORED); /* left alone */
    assert_int_equal(uidl_state(st, "acc", "ig999"), STORE_UIDL_IGNORED);
    /* all or nothing: one bad UIDL, nothing recorded */
    const char *bad[] = {"new1", ""};
    assert_int_equal(store_uidls_record_ignored(st, "acc", bad, 2, T0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(uidl_state(st, "acc", "new1"), -1);
    assert_int_equal(store_uidls_record_ignored(st, "acc", list, STORE_UIDLS_MAX + 1, T0, &e),
                     -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    free(names);
    free(list);
}

static int stop_cb(void *ctx, const char *uidl, enum store_uidl_state s, int64_t id,
                   struct err *e)
{
    (void)uidl;
    (void)s;
    (void)id;
    int *n = ctx;
    if (++*n == 2)
        return err_set(e, ERR_CONN, "listener went away");
    return 0;
}

static void callbacks_stop(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *ign[] = {"a", "b", "c"};
    assert_int_equal(store_uidls_record_ignored(st, "acc", ign, 3, T0, &e), 0);
    int n = 0;
    assert_int_equal(store_uidls_each(st, "acc", stop_cb, &n, &e), -1);
    assert_int_equal(n, 2);
    assert_int_equal(e.kind, ERR_CONN);
    assert_string_equal(e.msg, "listener went away");
    /* the handle is still usable (statement was reset) */
    assert_int_equal(count_uidls(st, "acc"), 3);
    /* a sink that fails mid-stream */
    unsigned char *p = malloc(300000);
    assert_non_null(p);
    fill(p, 300000, 5);
    const char *wh[] = {"a"};
    struct store_msg_result r;
    assert_int_equal(put(st, "acc", "m", p, 300000, 65536, wh, 1, T0, &r, &e), 0);
    struct buf b = {.fail_after = 2};
    assert_int_equal(store_msg_stream(st, r.id, sink, &b, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_int_equal(b.len, STORE_IO_CHUNK);
    free(b.p);
    free(p);
    /* writes still work after the aborted read */
    put_ok(st, "acc", "after", wh, 1, T0);
}

/* ---- listing ------------------------------------------------------------ */

struct collect {
    int n;
    int64_t ids[4096];
    int64_t prev;
    bool order_ok;
    const char *want_account;
    int want_status; /* -1 any */
    bool filter_ok;
};

static int collect_cb(void *ctx, const struct store_delivery *d, struct err *e)
{
    (void)e;
    struct collect *c = ctx;
    if (c->prev && d->id >= c->prev)
        c->order_ok = false;
    c->prev = d->id;
    if (c->want_account && strcmp(d->account, c->want_account) != 0)
        c->filter_ok = false;
    if (c->want_status >= 0 && (int)d->status != c->want_status)
        c->filter_ok = false;
    if (c->n < 4096)
        c->ids[c->n] = d->id;
    c->n++;
    return 0;
}

static int page_all(struct store *st, const enum store_dstatus *status, const char *account,
                    size_t limit, struct collect *c, struct store *writer)
{
    char cursor[STORE_CURSOR_MAX] = "";
    struct err e;
    int pages = 0;
    c->order_ok = c->filter_ok = true;
    c->want_account = account;
    c->want_status = status ? (int)*status : -1;
    for (int guard = 0; guard < 1000; guard++) {
        char next[STORE_CURSOR_MAX];
        if (store_delivery_list(st, status, account, limit, cursor, collect_cb, c, next, &e) != 0)
            fail_msg("list: %s", e.msg);
        pages++;
        if (writer && pages == 2) /* new rows arrive while paging */
            put_ok(writer, "acc0", "late", (const char *[]){"w0"}, 1, T0);
        if (!next[0])
            return pages;
        memcpy(cursor, next, sizeof cursor);
    }
    fail_msg("paging did not end");
    return -1;
}

static void list_paging(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    /* 3 accounts x 25 messages x 2 webhooks; some delivered, some dead */
    int per_acc_status[3][4] = {{0}};
    const char *wh[] = {"w0", "w1"};
    assert_int_equal(store_batch_begin(st, &e), 0);
    for (int a = 0; a < 3; a++)
        for (int i = 0; i < 25; i++) {
            char acc[16], uidl[16];
            snprintf(acc, sizeof acc, "acc%d", a);
            snprintf(uidl, sizeof uidl, "u%d", i);
            put_ok(st, acc, uidl, wh, 2, T0);
        }
    assert_int_equal(store_batch_commit(st, &e), 0);
    struct store_delivery d[STORE_DUE_MAX];
    size_t n;
    assert_int_equal(lease_due(st, T0, d, STORE_DUE_MAX, &n, &e), 0);
    assert_int_equal(n, 150);
    for (size_t i = 0; i < n; i++) {
        int a = d[i].account[3] - '0';
        enum store_dstatus s = (d[i].id % 3 == 0)   ? STORE_D_DELIVERED
                               : (d[i].id % 3 == 1) ? STORE_D_DEAD
                                                    : STORE_D_PENDING;
        if (s != STORE_D_PENDING) {
            struct store_attempt at = att(T0, s == STORE_D_DELIVERED ? 200 : 500, NULL, NULL);
            assert_int_equal(store_delivery_record(st, OWNER, d[i].id, &at, s, 0, &e), 0);
        }
        per_acc_status[a][s]++;
    }
    assert_int_equal(store_delivery_release(st, OWNER, 0, NULL, &e), 0);

    struct collect *c = calloc(1, sizeof *c);
    assert_non_null(c);
    /* everything, pages of 7 */
    int pages = page_all(st, NULL, NULL, 7, c, NULL);
    assert_int_equal(c->n, 150);
    assert_int_equal(pages, (150 + 6) / 7);
    assert_true(c->order_ok); /* strictly descending: no duplicates */
    for (int i = 0; i < 150; i++)
        assert_int_equal(c->ids[i], 150 - i); /* no gaps */
    /* filters */
    for (int a = 0; a < 3; a++) {
        char acc[16];
        snprintf(acc, sizeof acc, "acc%d", a);
        for (int s = 0; s < 4; s++) {
            enum store_dstatus st_s = (enum store_dstatus)s;
            memset(c, 0, sizeof *c);
            page_all(st, &st_s, acc, 4, c, NULL);
            assert_int_equal(c->n, per_acc_status[a][s]);
            assert_true(c->order_ok && c->filter_ok);
        }
        memset(c, 0, sizeof *c);
        page_all(st, NULL, acc, 10, c, NULL);
        assert_int_equal(c->n, 50);
        assert_true(c->order_ok && c->filter_ok);
    }
    enum store_dstatus dead = STORE_D_DEAD;
    memset(c, 0, sizeof *c);
    page_all(st, &dead, NULL, 1000, c, NULL);
    assert_int_equal(c->n, per_acc_status[0][3] + per_acc_status[1][3] + per_acc_status[2][3]);
    /* a row added while paging does not disturb the pages of older rows */
    memset(c, 0, sizeof *c);
    page_all(st, NULL, NULL, 20, c, st);
    assert_int_equal(c->n, 150);
    assert_true(c->order_ok);
    assert_int_equal(c->ids[0], 150);
    assert_int_equal(c->ids[149], 1);
    /* exact page boundary: the last full page says there is no next */
    char next[STORE_CURSOR_MAX];
    memset(c, 0, sizeof *c);
    assert_int_equal(store_delivery_list(st, NULL, NULL, 151, NULL, collect_cb, c, next, &e), 0);
    assert_int_equal(c->n, 151);
    assert_string_equal(next, "");
    /* bad input */
    const char *bad[] = {"x", "c", "c0", "c-1", "c12a", "c99999999999999999999", "m_1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(store_delivery_list(st, NULL, NULL, 5, bad[i], collect_cb, c, next, &e),
                         -1);
        assert_int_equal(e.kind, ERR_USAGE);
    }
    assert_int_equal(store_delivery_list(st, NULL, NULL, 0, NULL, collect_cb, c, next, &e), -1);
    assert_int_equal(store_delivery_list(st, NULL, NULL, STORE_LIST_MAX + 1, NULL, collect_cb, c,
                                         next, &e),
                     -1);
    enum store_dstatus weird = (enum store_dstatus)7;
    assert_int_equal(store_delivery_list(st, &weird, NULL, 5, NULL, collect_cb, c, next, &e), -1);
    free(c);
}

/* ---- retention, accounts, ids ------------------------------------------- */

static void retention_purge(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"a"};
    int64_t m1 = put_ok(st, "acc", "m1", wh, 1, T0);
    deliver_all(st, T0);
    int64_t m2 = put_ok(st, "acc", "m2", wh, 1, T0 + 5 * DAY_MS);
    deliver_all(st, T0 + 5 * DAY_MS);
    int64_t m3 = put_ok(st, "acc", "m3", wh, 1, T0); /* never delivered */
    int64_t m4 = put_ok(st, "acc", "m4", wh, 1, T0);
    struct store_delivery d[2];
    size_t n;
    assert_int_equal(lease_due(st, T0, d, 2, &n, &e), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        struct store_attempt a = att(T0, 500, NULL, "dead");
        assert_int_equal(store_delivery_record(st, OWNER, d[i].id, &a, STORE_D_DEAD, 0, &e), 0);
    }
    struct store_account_counts c;
    assert_int_equal(store_account_counts(st, "acc", &c, &e), 0);
    assert_int_equal(c.stored, 4);
    int64_t purged = -1;
    int64_t now = T0 + 8 * DAY_MS;
    assert_int_equal(store_purge_bodies(st, 7 * DAY_MS, now, 0, &purged, &e), 0);
    assert_int_equal(purged, 1);
    struct store_msg_info info;
    assert_int_equal(store_msg_get(st, m1, &info, &e), 0);
    assert_int_equal(info.body_purged_at, now);
    assert_string_equal(info.uidl, "m1"); /* metadata stays */
    struct buf b = {0};
    struct store_body *br = NULL;
    assert_int_equal(store_msg_stream(st, m1, sink, &b, &e), STORE_NOTFOUND);
    assert_int_equal(store_body_open(st, m1, &br, NULL, &e), STORE_NOTFOUND);
    assert_int_equal(store_msg_stream(st, m2, sink, &b, &e), 0);
    assert_true(b.len > 0);
    free(b.p);
    assert_int_equal(store_account_counts(st, "acc", &c, &e), 0);
    assert_int_equal(c.stored, 3);
    /* dead and pending ones keep their bodies however old */
    assert_int_equal(store_purge_bodies(st, 0, now + 365 * DAY_MS, 0, &purged, &e), 0);
    assert_int_equal(purged, 1); /* m2 */
    assert_int_equal(store_msg_get(st, m3, &info, &e), 0);
    assert_int_equal(info.body_purged_at, 0);
    assert_int_equal(store_msg_get(st, m4, &info, &e), 0);
    assert_int_equal(info.body_purged_at, 0);
    assert_int_equal(store_purge_bodies(st, 0, now + 365 * DAY_MS, 0, &purged, &e), 0);
    assert_int_equal(purged, 0);
    /* the max bound */
    for (int i = 0; i < 5; i++) {
        char u[16];
        snprintf(u, sizeof u, "b%d", i);
        put_ok(st, "acc", u, wh, 1, T0);
    }
    deliver_all(st, T0);
    assert_int_equal(store_purge_bodies(st, 0, now, 2, &purged, &e), 0);
    assert_int_equal(purged, 2);
    assert_int_equal(store_purge_bodies(st, 0, now, 0, &purged, &e), 0);
    assert_int_equal(purged, 3);
    assert_int_equal(store_purge_bodies(st, -1, now, 0, &purged, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    /* a purged message's body: retry refused */
    assert_int_equal(store_msg_get(st, m2, &info, &e), 0);
    assert_true(info.body_purged_at > 0);
}

static void account_state(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    struct store_account_state s;
    assert_int_equal(store_account_get(st, "acc", &s, &e), STORE_NOTFOUND);
    struct store_account_state in = {.state = "backoff", .last_error = "connection refused",
                                     .last_error_code = "network",
                                     .last_attempt_at = T0, .last_success_at = T0 - 60000,
                                     .backoff_until = T0 + 30000};
    assert_int_equal(store_account_set(st, "acc", &in, &e), 0);
    assert_int_equal(store_account_get(st, "acc", &s, &e), 0);
    assert_string_equal(s.state, "backoff");
    assert_string_equal(s.last_error, "connection refused");
    assert_string_equal(s.last_error_code, "network");
    assert_int_equal(s.last_attempt_at, T0);
    assert_int_equal(s.last_success_at, T0 - 60000);
    assert_int_equal(s.backoff_until, T0 + 30000);
    struct store_account_state idle = {.state = "idle", .last_success_at = T0 + 1};
    assert_int_equal(store_account_set(st, "acc", &idle, &e), 0);
    store_close(st);
    st = fx_open(state); /* a restart remembers */
    assert_int_equal(store_account_get(st, "acc", &s, &e), 0);
    assert_string_equal(s.state, "idle");
    assert_string_equal(s.last_error, "");
    assert_string_equal(s.last_error_code, "");
    assert_int_equal(s.last_success_at, T0 + 1);
    struct store_account_state empty = {0};
    assert_int_equal(store_account_set(st, "acc", &empty, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    struct store_account_state toolong;
    memset(&toolong, 'x', sizeof toolong);
    assert_int_equal(store_account_set(st, "acc", &toolong, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    struct store_account_state longcode = {.state = "error"};
    memset(longcode.last_error_code, 'x', sizeof longcode.last_error_code);
    assert_int_equal(store_account_set(st, "acc", &longcode, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_non_null(strstr(e.msg, "STORE_ERROR_CODE_MAX"));
    assert_int_equal(store_account_get(st, "", &s, &e), -1);
    struct store_account_counts c;
    assert_int_equal(store_account_counts(st, "nobody", &c, &e), 0);
    assert_int_equal(c.stored + c.pending_deliveries, 0);
}

static void ids(void **state)
{
    (void)state;
    char buf[STORE_ID_MAX];
    struct err e;
    int64_t id = 0;
    assert_string_equal(store_msg_id_format(42, buf), "m_42");
    assert_int_equal(store_msg_id_parse(buf, &id, &e), 0);
    assert_int_equal(id, 42);
    assert_string_equal(store_delivery_id_format(INT64_MAX, buf), "d_9223372036854775807");
    assert_int_equal(store_delivery_id_parse(buf, &id, &e), 0);
    assert_int_equal(id, INT64_MAX);
    const char *bad[] = {"", "m_", "m_0", "m_01", "m_-1", "m_+1", "m_1a", "m_ 1", "d_1", "M_1",
                         "m_9223372036854775808", "m_99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        id = 7;
        assert_int_equal(store_msg_id_parse(bad[i], &id, &e), -1);
        assert_int_equal(e.kind, ERR_USAGE);
        assert_int_equal(id, 7);
    }
    assert_int_equal(store_msg_id_parse(NULL, &id, &e), -1);
    enum store_dstatus s;
    assert_int_equal(store_dstatus_parse("dead", &s, &e), 0);
    assert_int_equal(s, STORE_D_DEAD);
    assert_int_equal(store_dstatus_parse("Dead", &s, &e), -1);
    assert_int_equal(store_dstatus_parse(NULL, &s, &e), -1);
    assert_string_equal(store_dstatus_name(STORE_D_FAILED), "failed");
    assert_string_equal(store_uidl_state_name(STORE_UIDL_IGNORED), "ignored");
    assert_string_equal(store_uidl_state_name((enum store_uidl_state)9), "unknown");
}

/* ---- threads ------------------------------------------------------------ */

#define THR_MSGS 150

struct shared {
    const char *dir;
    int seen[4 * THR_MSGS + 1]; /* deliveries handed out, by id */
    pthread_mutex_t mu;
    int delivered;
    char fail[600];
};

static void thr_fail(struct shared *sh, const char *what, const struct err *e)
{
    pthread_mutex_lock(&sh->mu);
    if (!sh->fail[0])
        snprintf(sh->fail, sizeof sh->fail, "%s: %s", what, e ? e->msg : "");
    pthread_mutex_unlock(&sh->mu);
}

struct thr {
    struct shared *sh;
    int no;
};

static void *poller_thread(void *arg)
{
    struct thr *t = arg;
    struct err e;
    struct store *st = store_open(t->sh->dir, &e);
    if (!st) {
        thr_fail(t->sh, "open", &e);
        return NULL;
    }
    char acc[16];
    snprintf(acc, sizeof acc, "acc%d", t->no);
    const char *wh[] = {"w"};
    for (int i = 0; i < THR_MSGS; i++) {
        if (i % 16 == 0 && store_batch_begin(st, &e) < 0)
            thr_fail(t->sh, "batch", &e);
        char uidl[16], body[64];
        snprintf(uidl, sizeof uidl, "u%d", i);
        int n = snprintf(body, sizeof body, "Subject: %s %s\r\n\r\nx\r\n", acc, uidl);
        struct store_msg *m;
        if (store_msg_begin(st, acc, uidl, &m, &e) < 0 ||
            store_msg_write(m, body, (size_t)n, &e) < 0 ||
            store_msg_finish(m, NULL, wh, 1, T0, NULL, &e) < 0)
            thr_fail(t->sh, "store", &e);
        if ((i % 16 == 15 || i == THR_MSGS - 1) && store_batch_commit(st, &e) < 0)
            thr_fail(t->sh, "commit", &e);
    }
    store_close(st);
    return NULL;
}

static void *worker_thread(void *arg)
{
    struct thr *t = arg;
    struct shared *sh = t->sh;
    struct err e;
    struct store *st = store_open(sh->dir, &e);
    if (!st) {
        thr_fail(sh, "open", &e);
        return NULL;
    }
    struct store_delivery *d = calloc(32, sizeof *d);
    int64_t deadline = now_ns() + 60LL * 1000000000;
    while (now_ns() < deadline) {
        pthread_mutex_lock(&sh->mu);
        bool all = sh->delivered >= 2 * THR_MSGS || sh->fail[0];
        pthread_mutex_unlock(&sh->mu);
        if (all)
            break;
        size_t n = 0;
        if (lease_due(st, T0, d, 32, &n, &e) < 0) {
            thr_fail(sh, "claim", &e);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            pthread_mutex_lock(&sh->mu);
            if (d[i].id > 0 && d[i].id <= 4 * THR_MSGS)
                sh->seen[d[i].id]++;
            sh->delivered++;
            pthread_mutex_unlock(&sh->mu);
            struct store_attempt a = att(T0, 200, NULL, "delivered");
            if (store_delivery_record(st, OWNER, d[i].id, &a, STORE_D_DELIVERED, 0, &e) < 0)
                thr_fail(sh, "record", &e);
        }
        /* readers meanwhile: a listing page and the counts */
        struct collect *c = calloc(1, sizeof *c);
        char next[STORE_CURSOR_MAX];
        struct store_queue_counts q;
        if (store_delivery_list(st, NULL, NULL, 50, NULL, collect_cb, c, next, &e) < 0 ||
            store_delivery_counts(st, &q, &e) < 0)
            thr_fail(sh, "read", &e);
        free(c);
        if (n == 0)
            usleep(1000);
    }
    free(d);
    store_close(st);
    return NULL;
}

static void concurrent_threads(void **state)
{
    struct fx *fx = *state;
    store_close(open_ok(fx->dir));
    struct shared *sh = calloc(1, sizeof *sh);
    assert_non_null(sh);
    sh->dir = fx->dir;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_t th[4];
    struct thr args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thr){sh, i};
        assert_int_equal(
            pthread_create(&th[i], NULL, i < 2 ? poller_thread : worker_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    if (sh->fail[0])
        fail_msg("thread: %s", sh->fail);
    assert_int_equal(sh->delivered, 2 * THR_MSGS);
    for (int i = 1; i <= 2 * THR_MSGS; i++)
        assert_int_equal(sh->seen[i], 1); /* each handed out exactly once */
    struct store *st = fx_open(state);
    struct err e;
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(st, &q, &e), 0);
    assert_int_equal(q.delivered, 2 * THR_MSGS);
    assert_int_equal(q.pending + q.failed + q.dead, 0);
    assert_int_equal(count_uidls(st, "acc0"), THR_MSGS);
    assert_int_equal(count_uidls(st, "acc1"), THR_MSGS);
    assert_int_equal(uidl_state(st, "acc1", "u7"), STORE_UIDL_DELIVERED);
    pthread_mutex_destroy(&sh->mu);
    free(sh);
}

/* ---- OAuth2 tokens ------------------------------------------------------ */

static struct store_oauth2_tokens toks(const char *access, const char *refresh, int64_t at,
                                       int64_t life)
{
    struct store_oauth2_tokens t = {
        .access = (const unsigned char *)access,
        .access_len = access ? strlen(access) : 0,
        .refresh = (const unsigned char *)refresh,
        .refresh_len = refresh ? strlen(refresh) : 0,
        .issued_at = at,
        .expires_at = at + life,
    };
    return t;
}

static void oauth2_get(struct store *st, const char *acc, struct store_oauth2 *row)
{
    struct err e;
    if (store_oauth2_get(st, acc, row, &e) != 0)
        fail_msg("store_oauth2_get %s: %s", acc, e.msg);
}

static void oauth2_rows(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    static struct store_oauth2 row, other;
    assert_int_equal(store_oauth2_get(st, "acc", &row, &e), STORE_NOTFOUND);
    struct store_oauth2_tokens t = toks("A1", "R1", T0, 3600000);
    assert_int_equal(store_oauth2_grant(st, "acc", "device_code", &t, T0, &e), 0);
    oauth2_get(st, "acc", &row);
    assert_int_equal(row.version, 1);
    assert_int_equal(row.status, STORE_OAUTH2_OK);
    assert_string_equal(row.flow, "device_code");
    assert_int_equal(row.access_len, 2);
    assert_memory_equal(row.access, "A1", 2);
    assert_memory_equal(row.refresh, "R1", 2);
    assert_int_equal(row.access_issued_at, T0);
    assert_int_equal(row.access_expires_at, T0 + 3600000);
    assert_int_equal(row.authorized_at, T0);
    assert_int_equal(row.refresh_used_at, 0);
    assert_string_equal(row.lease_owner, "");

    /* lease: taken, then busy for another owner, ours again for the same */
    assert_int_equal(store_oauth2_lease(st, "acc", "o1", T0 + 10, 30000, false, NULL, &row, &e), 0);
    assert_string_equal(row.lease_owner, "o1");
    assert_int_equal(row.lease_until, T0 + 30010);
    assert_int_equal(store_oauth2_lease(st, "acc", "o2", T0 + 20, 30000, false, NULL, &other, &e),
                     STORE_OAUTH2_BUSY);
    assert_string_equal(other.lease_owner, "o1");
    assert_int_equal(other.version, 1);
    assert_int_equal(store_oauth2_lease(st, "acc", "o1", T0 + 30, 30000, false, NULL, &row, &e), 0);
    /* the refresh result: access and rotated refresh together, version + 1 */
    t = toks("A2", "R2", T0 + 100, 3600000);
    assert_int_equal(store_oauth2_refreshed(st, "acc", 1, &t, T0 + 100, &e), 0);
    oauth2_get(st, "acc", &row);
    assert_int_equal(row.version, 2);
    assert_memory_equal(row.access, "A2", 2);
    assert_memory_equal(row.refresh, "R2", 2);
    assert_int_equal(row.refresh_used_at, T0 + 100);
    assert_string_equal(row.lease_owner, "");
    assert_int_equal(row.lease_until, 0);
    /* a stale save (version 1) changes nothing */
    t = toks("A-stale", "R-stale", T0 + 200, 3600000);
    assert_int_equal(store_oauth2_refreshed(st, "acc", 1, &t, T0 + 200, &e), STORE_LEASE_LOST);
    oauth2_get(st, "acc", &row);
    assert_memory_equal(row.access, "A2", 2);
    assert_int_equal(row.version, 2);
    /* no rotation: the refresh token stays */
    t = toks("A3", NULL, T0 + 300, 600000);
    assert_int_equal(store_oauth2_refreshed(st, "acc", 2, &t, T0 + 300, &e), 0);
    oauth2_get(st, "acc", &row);
    assert_memory_equal(row.access, "A3", 2);
    assert_int_equal(row.refresh_len, 2);
    assert_memory_equal(row.refresh, "R2", 2);

    /* an expired lease is taken over */
    assert_int_equal(store_oauth2_lease(st, "acc", "o1", T0, 1000, false, NULL, &row, &e), 0);
    assert_int_equal(store_oauth2_lease(st, "acc", "o2", T0 + 999, 1000, false, NULL, &row, &e),
                     STORE_OAUTH2_BUSY);
    assert_int_equal(store_oauth2_lease(st, "acc", "o2", T0 + 1000, 1000, false, NULL, &row, &e),
                     0);
    assert_string_equal(row.lease_owner, "o2");
    /* release by another owner does nothing; by the holder frees it */
    assert_int_equal(store_oauth2_release(st, "acc", "o1", &e), 0);
    oauth2_get(st, "acc", &row);
    assert_string_equal(row.lease_owner, "o2");
    assert_int_equal(store_oauth2_release(st, "acc", "o2", &e), 0);
    oauth2_get(st, "acc", &row);
    assert_string_equal(row.lease_owner, "");
    assert_int_equal(row.version, 3); /* leases do not count as writes */

    /* a temporary failure: failures + 1, retry_at, error */
    assert_int_equal(store_oauth2_lease(st, "acc", "o1", T0, 30000, false, NULL, &row, &e), 0);
    assert_int_equal(store_oauth2_failed(st, "acc", 3, false, "Connection: refused", T0 + 30000, &e),
                     0);
    oauth2_get(st, "acc", &row);
    assert_int_equal(row.status, STORE_OAUTH2_OK);
    assert_int_equal(row.failures, 1);
    assert_int_equal(row.retry_at, T0 + 30000);
    assert_string_equal(row.error, "Connection: refused");
    assert_string_equal(row.lease_owner, "");
    /* invalid_grant: the row is invalid and is not leased any more */
    assert_int_equal(store_oauth2_failed(st, "acc", 4, true, "re-authorize", 0, &e), 0);
    oauth2_get(st, "acc", &row);
    assert_int_equal(row.status, STORE_OAUTH2_INVALID);
    assert_int_equal(store_oauth2_lease(st, "acc", "o1", T0, 30000, false, NULL, &row, &e), 0);
    assert_int_equal(row.status, STORE_OAUTH2_INVALID);
    assert_string_equal(row.lease_owner, "");
    /* a stale failure does not mark a newer grant invalid */
    t = toks("A9", "R9", T0 + 5000, 3600000);
    assert_int_equal(store_oauth2_lease(st, "acc", "o1", T0, 30000, false, NULL, &row, &e), 0);
    assert_int_equal(store_oauth2_grant(st, "acc", "authorization_code", &t, T0 + 5000, &e), 0);
    assert_int_equal(store_oauth2_failed(st, "acc", 5, true, "old news", 0, &e), STORE_LEASE_LOST);
    oauth2_get(st, "acc", &row);
    assert_int_equal(row.version, 6);
    assert_int_equal(row.status, STORE_OAUTH2_OK);
    assert_string_equal(row.flow, "authorization_code");
    assert_string_equal(row.error, "");
    assert_int_equal(row.failures, 0);
    assert_int_equal(row.retry_at, 0);
    assert_int_equal(row.authorized_at, T0 + 5000);
    assert_string_equal(row.lease_owner, ""); /* a grant clears the lease */
    assert_memory_equal(row.refresh, "R9", 2);

    /* create: a client-credentials row appears leased, without tokens */
    assert_int_equal(store_oauth2_lease(st, "app", "o1", T0, 30000, false, NULL, &row, &e),
                     STORE_NOTFOUND);
    assert_int_equal(store_oauth2_lease(st, "app", "o1", T0, 30000, true, "client_credentials",
                                        &row, &e),
                     0);
    assert_int_equal(row.version, 1);
    assert_int_equal(row.access_len, 0);
    assert_int_equal(row.refresh_len, 0);
    assert_string_equal(row.lease_owner, "o1");
    t = toks("C1", NULL, T0, 3600000);
    assert_int_equal(store_oauth2_refreshed(st, "app", 1, &t, T0, &e), 0);
    oauth2_get(st, "app", &row);
    assert_memory_equal(row.access, "C1", 2);
    assert_int_equal(row.refresh_len, 0);
    assert_int_equal(store_oauth2_refreshed(st, "gone", 1, &t, T0, &e), STORE_NOTFOUND);
    assert_int_equal(store_oauth2_failed(st, "gone", 1, false, "x", 0, &e), STORE_NOTFOUND);

    /* bad calls */
    assert_int_equal(store_oauth2_grant(st, "acc", "", &t, T0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    struct store_oauth2_tokens none = {0};
    assert_int_equal(store_oauth2_grant(st, "acc", "device_code", &none, T0, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    static unsigned char big[STORE_SEALED_MAX + 1];
    struct store_oauth2_tokens huge = {.access = big, .access_len = sizeof big};
    assert_int_equal(store_oauth2_grant(st, "acc", "device_code", &huge, T0, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_int_equal(store_oauth2_lease(st, "acc", "", T0, 1, false, NULL, &row, &e), -1);
    assert_int_equal(store_oauth2_lease(st, "acc", "o", T0, 0, false, NULL, &row, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    /* a long (sealed-size) token round-trips */
    static unsigned char longtok[STORE_SEALED_MAX];
    fill(longtok, sizeof longtok, 7);
    struct store_oauth2_tokens lt = {.access = longtok, .access_len = sizeof longtok,
                                     .refresh = longtok, .refresh_len = sizeof longtok};
    assert_int_equal(store_oauth2_grant(st, "big", "device_code", &lt, T0, &e), 0);
    oauth2_get(st, "big", &row);
    assert_int_equal(row.access_len, STORE_SEALED_MAX);
    assert_memory_equal(row.access, longtok, sizeof longtok);
    assert_memory_equal(row.refresh, longtok, sizeof longtok);
}

/* Two handles (threads or instances) ask for the lease at once: exactly one
 * gets it; the loser's save with the old version is refused. */
static void oauth2_one_refresher(void **state)
{
    struct fx *fx = *state;
    struct store *a = fx_open(state), *b = open_ok(fx->dir);
    struct err e;
    static struct store_oauth2 ra, rb;
    struct store_oauth2_tokens t = toks("A1", "R1", T0, 1200000);
    assert_int_equal(store_oauth2_grant(a, "acc", "device_code", &t, T0, &e), 0);
    int x = store_oauth2_lease(a, "acc", "host:1:1", T0, 30000, false, NULL, &ra, &e);
    int y = store_oauth2_lease(b, "acc", "host:2:1", T0, 30000, false, NULL, &rb, &e);
    assert_int_equal(x, 0);
    assert_int_equal(y, STORE_OAUTH2_BUSY);
    /* a's lease expires while it is stuck; b takes over and saves first */
    y = store_oauth2_lease(b, "acc", "host:2:1", T0 + 30000, 30000, false, NULL, &rb, &e);
    assert_int_equal(y, 0);
    t = toks("A-b", "R-b", T0 + 30001, 1200000);
    assert_int_equal(store_oauth2_refreshed(b, "acc", rb.version, &t, T0 + 30001, &e), 0);
    t = toks("A-a", "R-a", T0 + 30002, 1200000);
    assert_int_equal(store_oauth2_refreshed(a, "acc", ra.version, &t, T0 + 30002, &e),
                     STORE_LEASE_LOST);
    oauth2_get(a, "acc", &ra);
    assert_memory_equal(ra.access, "A-b", 3);
    assert_memory_equal(ra.refresh, "R-b", 3);
    store_close(b);
}

static void *open_thread(void *arg)
{
    struct err e;
    struct store *st = store_open(arg, &e);
    if (!st)
        fprintf(stderr, "open: %s\n", e.msg);
    int v = st ? store_schema_version(st, &e) : -1;
    store_close(st);
    return (void *)(intptr_t)v;
}

/* Several threads opening a fresh database at once: one migrates, all work. */
static void concurrent_first_open(void **state)
{
    struct fx *fx = *state;
    for (int round = 0; round < 20; round++) {
        char dir[96];
        snprintf(dir, sizeof dir, "%s/r%d", fx->dir, round);
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            assert_int_equal(pthread_create(&th[i], NULL, open_thread, dir), 0);
        for (int i = 0; i < 4; i++) {
            void *v;
            pthread_join(th[i], &v);
            assert_int_equal((intptr_t)v, STORE_SCHEMA_VERSION);
        }
    }
}

/* ---- account leases and instances (both backends) ------------------------ */

static int collect_instance(void *ctx, const struct store_instance *i, struct err *e)
{
    (void)e;
    char *out = ctx;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "%s@%s;", i->id, i->public_url);
    return 0;
}

static void instances(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    struct store_instance a = {.id = "i1", .host = "h1", .public_url = "http://127.0.0.1:1",
                               .started_at = T0, .heartbeat_at = T0};
    struct store_instance b = {.id = "i2", .host = "h2", .public_url = "",
                               .started_at = T0 + 5, .heartbeat_at = T0 + 5};
    assert_int_equal(store_instance_beat(st, &a, &e), 0);
    assert_int_equal(store_instance_beat(st, &b, &e), 0);
    a.heartbeat_at = T0 + 10000;
    assert_int_equal(store_instance_beat(st, &a, &e), 0);
    char seen[256] = "";
    assert_int_equal(store_instances_each(st, T0, 0, collect_instance, seen, &e), 0);
    assert_string_equal(seen, "i1@http://127.0.0.1:1;i2@;");
    seen[0] = '\0';
    assert_int_equal(store_instances_each(st, T0 + 100, 0, collect_instance, seen, &e), 0);
    assert_string_equal(seen, "i1@http://127.0.0.1:1;"); /* i2's heartbeat is old */
    struct store_instance got;
    assert_int_equal(store_instance_get(st, "i2", &got, &e), 0);
    assert_string_equal(got.host, "h2");
    /* forgotten after forget_before; removed at shutdown */
    seen[0] = '\0';
    assert_int_equal(store_instances_each(st, 0, T0 + 100, collect_instance, seen, &e), 0);
    assert_string_equal(seen, "i1@http://127.0.0.1:1;");
    assert_int_equal(store_instance_get(st, "i2", &got, &e), STORE_NOTFOUND);
    assert_int_equal(store_instance_remove(st, "i1", &e), 0);
    assert_int_equal(store_instance_get(st, "i1", &got, &e), STORE_NOTFOUND);
    struct store_instance bad = {.id = ""};
    assert_int_equal(store_instance_beat(st, &bad, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* ---- PostgreSQL only ------------------------------------------------------------- */

/* The schema is versioned; a newer one is refused with one line that names
 * the database but holds no secret. */
static void pg_schema(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    assert_string_equal(store_backend(), "postgresql");
    assert_true(store_is_shared());
    assert_int_equal(store_schema_version(st, &e), STORE_SCHEMA_VERSION);
    assert_int_equal(pg_value("SELECT version FROM schema_version"), STORE_SCHEMA_VERSION);
    store_close(st);
    ((struct fx *)*state)->st = NULL;
    store_teardown();
    /* set up again on a current schema: nothing to migrate */
    struct store_target t = {.url = pg_url, .password = pg_pw, .pool = 2};
    assert_int_equal(store_setup(&t, &e), 0);
    store_teardown();
    assert_int_equal(pg_exec("UPDATE schema_version SET version = 99"), 0);
    err_clear(&e);
    assert_int_equal(store_setup(&t, &e), -1);
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_non_null(strstr(e.msg, "schema version 99, newer than this build supports"));
    assert_non_null(strstr(e.msg, "dbname="));
    assert_null(strchr(e.msg, '\n'));
    assert_null(strstr(e.msg, pg_pw));
    assert_string_equal(store_backend(), "sqlite");
    assert_false(store_is_shared()); /* a failed setup falls back to SQLite */
    /* a wrong password: refused, and neither password appears */
    assert_int_equal(pg_exec("UPDATE schema_version SET version = 4"), 0);
    struct store_target w = {.url = pg_url, .password = "wrong-secret-123", .pool = 2};
    assert_int_equal(store_setup(&w, &e), -1);
    assert_non_null(strstr(e.msg, "cannot connect to PostgreSQL"));
    assert_null(strstr(e.msg, "wrong-secret-123"));
    assert_null(strstr(e.msg, pg_pw));
    /* not a PostgreSQL URL, a pool too large */
    struct store_target u = {.url = "mysql://x", .pool = 2};
    assert_int_equal(store_setup(&u, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    struct store_target p = {.url = pg_url, .password = pg_pw, .pool = STORE_POOL_MAX + 1};
    assert_int_equal(store_setup(&p, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* Bodies are rows of STORE_IO_CHUNK bytes, and read back at any offset. */
static void pg_body_chunks(void **state)
{
    struct store *st = fx_open(state);
    const size_t len = 3 * STORE_IO_CHUNK + 123;
    unsigned char *p = malloc(len), *back = malloc(len);
    assert_non_null(p);
    assert_non_null(back);
    fill(p, len, 7);
    struct err e;
    struct store_msg_result r;
    const char *wh[] = {"crm"};
    assert_int_equal(put(st, "acc", "u1", p, len, 1000, wh, 1, T0, &r, &e), 0);
    assert_int_equal(pg_value("SELECT count(*) FROM body_chunks"), 4);
    assert_int_equal(pg_value("SELECT max(length(data)) FROM body_chunks"), STORE_IO_CHUNK);
    struct store_body *b = NULL;
    uint64_t size = 0;
    assert_int_equal(store_body_open(st, r.id, &b, &size, &e), 0);
    assert_int_equal(size, len);
    /* odd offsets and lengths across chunk boundaries */
    size_t off = 0;
    for (int guard = 0; guard < 1000 && off < len; guard++) {
        size_t got = 0;
        assert_int_equal(store_body_read(b, off, back + off, 7777, &got, &e), 0);
        assert_true(got > 0);
        off += got;
    }
    assert_int_equal(off, len);
    assert_memory_equal(back, p, len);
    size_t got = 1;
    assert_int_equal(store_body_read(b, len, back, 10, &got, &e), 0);
    assert_int_equal(got, 0);
    store_body_close(b);
    /* purged: the chunks go with the body */
    assert_int_equal(pg_exec("UPDATE deliveries SET status = 1"), 0);
    assert_int_equal(pg_exec("UPDATE messages SET delivered_at = 1"), 0);
    int64_t purged = 0;
    assert_int_equal(store_purge_bodies(st, 0, T0, 0, &purged, &e), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(pg_value("SELECT count(*) FROM body_chunks"), 0);
    free(p);
    free(back);
}

/* Back from schema 9 to the shape migration 8 left (PostgreSQL). */
#define PG_UNDO_9                                                                          \
    "DROP INDEX deliveries_status; CREATE INDEX deliveries_status ON deliveries(status, id);" \
    " DROP INDEX deliveries_account_status;"                                               \
    " CREATE INDEX deliveries_account_status ON deliveries(account, status, id);"          \
    " DROP INDEX deliveries_webhook_status;"                                               \
    " CREATE INDEX deliveries_webhook_status ON deliveries(webhook, status, id);"          \
    " CREATE INDEX deliveries_leased ON deliveries(lease_owner)"                           \
    "   WHERE lease_owner IS NOT NULL;"                                                    \
    " DROP INDEX deliveries_event_webhook; ALTER TABLE deliveries"                         \
    "   ADD CONSTRAINT deliveries_event_id_webhook_key UNIQUE (event_id, webhook);"        \
    " ALTER TABLE deliveries RESET (fillfactor); ALTER TABLE accounts RESET (fillfactor);" \
    " ALTER TABLE uidls RESET (fillfactor); ALTER TABLE body_chunks RESET (toast_tuple_target);" \
    " ALTER TABLE body_chunks ALTER COLUMN data SET STORAGE EXTENDED;"                     \
    " UPDATE schema_version SET version = 8;"

/* Migrations 7 to 9 in place on a database at schema 6 holding a message,
 * its dead delivery and an attempt, and an account waiting out a
 * LOGIN-DELAY: the ids and the history stay, the new calls work on them,
 * and the account's LOGIN-DELAY has its code. */
static void pg_migrate_from_6(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm"};
    int64_t id = put_ok(st, "acc", "u1", wh, 1, T0);
    struct store_delivery d[2];
    size_t n = 0;
    assert_int_equal(lease_due(st, T0, d, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    struct store_attempt a = att(T0, 500, "boom", "dead");
    assert_int_equal(store_delivery_record(st, OWNER, d[0].id, &a, STORE_D_DEAD, 0, &e), 0);
    struct store_account_state as = {
        .state = "backoff", .backoff_until = T0 + 9,
        .last_error = "Server: login: server said \"[LOGIN-DELAY] wait\""};
    assert_int_equal(store_account_set(st, "acc", &as, &e), 0);
    store_close(st);
    ((struct fx *)*state)->st = NULL;
    store_teardown();
    /* back to the schema migrations 4 to 6 made */
    assert_int_equal(pg_exec(PG_UNDO_9 " ALTER TABLE accounts DROP COLUMN last_error_code;"
                             " ALTER TABLE deliveries DROP CONSTRAINT deliveries_message_or_event;"
                             " ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_webhook_key;"
                             " ALTER TABLE deliveries DROP COLUMN event_id; DROP TABLE events;"
                             " ALTER TABLE deliveries ALTER COLUMN message_id SET NOT NULL;"
                             " ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;"
                             " ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check"
                             "   CHECK (status BETWEEN 0 AND 3);"
                             " DROP INDEX deliveries_webhook_status; DROP INDEX messages_message_id;"
                             " ALTER TABLE messages DROP COLUMN duplicate_of;"
                             " DROP TABLE polls; DROP TABLE poll_sessions;" /* 10 */
                             " UPDATE schema_version SET version = 6"),
                     0);
    assert_int_equal(pg_value("SELECT count(*) FROM information_schema.tables"
                              " WHERE table_name = 'events'"),
                     0);
    struct store_target t = {.url = pg_url, .password = pg_pw, .pool = 2};
    assert_int_equal(store_setup(&t, &e), 0);
    assert_int_equal(pg_value("SELECT version FROM schema_version"), STORE_SCHEMA_VERSION);
    st = fx_open(state);
    assert_int_equal(store_account_get(st, "acc", &as, &e), 0);
    assert_string_equal(as.last_error_code, "login_delay");
    assert_int_equal(as.backoff_until, T0 + 9);
    struct store_delivery got;
    assert_int_equal(store_delivery_get(st, d[0].id, &got, NULL, NULL, &e), 0);
    assert_int_equal(got.status, STORE_D_DEAD);
    assert_int_equal(got.msg_id, id);
    assert_int_equal(got.attempts, 1);
    assert_int_equal(got.event_id, 0);
    /* dropped: a status the old check refused; its message is done */
    assert_int_equal(store_delivery_drop(st, d[0].id, T0 + 5, &e), 0);
    struct store_msg_info m;
    assert_int_equal(store_msg_get(st, id, &m, &e), 0);
    assert_int_equal(m.delivered_at, T0 + 5);
    assert_int_equal(m.duplicate_of, 0);
    assert_int_equal(pg_value("SELECT count(*) FROM attempts"), 1);
    /* deliveries of events (no message) fit the migrated table */
    int64_t ev = 0;
    assert_int_equal(store_event_add(st, "acc", "account.auth_error", "{}", wh, 1, T0 + 6, &ev,
                                     &e), 0);
    assert_int_equal(lease_due(st, T0 + 6, d, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].event_id, ev);
    assert_true(d[0].id > got.id);
}

/* Migrations 9 and 10 in place on a database at schema 8 holding a delivered
 * delivery, a leased one, a dead one and an event's: the indexes by status
 * leave delivered rows out, the lease owner has no index, the tables keep
 * room for HOT updates, bodies are stored uncompressed; every row stays,
 * and listing, counting, renewing, releasing and the events' unique key
 * work on them. */
static void pg_migrate_from_8(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const char *wh[] = {"crm"};
    int64_t m1 = put_ok(st, "acc", "u1", wh, 1, T0);
    put_ok(st, "acc", "u2", wh, 1, T0 + 1);
    put_ok(st, "acc", "u3", wh, 1, T0 + 2);
    int64_t ev = 0;
    assert_int_equal(store_event_add(st, "acc", "account.auth_error", "{}", wh, 1, T0 + 3, &ev,
                                     &e), 0);
    struct store_delivery d[4];
    size_t n = 0;
    assert_int_equal(lease_due(st, T0 + 10, d, 4, &n, &e), 0);
    assert_int_equal(n, 4);
    struct store_attempt ok = att(T0 + 10, 200, "", "delivered");
    struct store_attempt bad = att(T0 + 10, 500, "boom", "dead");
    assert_int_equal(store_delivery_record(st, OWNER, d[0].id, &ok, STORE_D_DELIVERED, 0, &e), 0);
    assert_int_equal(store_delivery_record(st, OWNER, d[1].id, &bad, STORE_D_DEAD, 0, &e), 0);
    assert_int_equal(store_delivery_release(st, OWNER, d[3].id, NULL, &e), 0);
    store_close(st);
    ((struct fx *)*state)->st = NULL;
    store_teardown();
    assert_int_equal(pg_exec("DROP TABLE polls; DROP TABLE poll_sessions;" /* 10 */ PG_UNDO_9), 0);
    assert_int_equal(pg_value("SELECT count(*) FROM pg_indexes WHERE indexname = 'deliveries_leased'"),
                     1);
    struct store_target t = {.url = pg_url, .password = pg_pw, .pool = 2};
    assert_int_equal(store_setup(&t, &e), 0);
    assert_int_equal(pg_value("SELECT version FROM schema_version"), STORE_SCHEMA_VERSION);
    assert_int_equal(pg_value("SELECT count(*) FROM pg_indexes WHERE indexname = 'deliveries_leased'"),
                     0);
    assert_int_equal(pg_value("SELECT count(*) FROM pg_indexes WHERE indexname IN"
                              " ('deliveries_status', 'deliveries_account_status',"
                              "  'deliveries_webhook_status') AND indexdef LIKE '%WHERE (status <> 1)'"),
                     3);
    assert_int_equal(pg_value("SELECT count(*) FROM pg_class WHERE"
                              " (relname = 'deliveries' AND reloptions @> '{fillfactor=70}')"
                              " OR (relname = 'accounts' AND reloptions @> '{fillfactor=50}')"
                              " OR (relname = 'uidls' AND reloptions @> '{fillfactor=85}')"
                              " OR (relname = 'body_chunks' AND reloptions @> '{toast_tuple_target=8160}')"),
                     4);
    assert_int_equal(pg_value("SELECT count(*) FROM pg_attribute WHERE attrelid = 'body_chunks'::regclass"
                              " AND attname = 'data' AND attstorage = 'e'"),
                     1);
    st = fx_open(state);
    /* the rows and their statuses, through the new indexes */
    enum store_dstatus want[] = {STORE_D_DELIVERED, STORE_D_DEAD, STORE_D_PENDING};
    for (size_t i = 0; i < 3; i++) {
        struct collect *c = calloc(1, sizeof *c);
        assert_non_null(c);
        char next[STORE_CURSOR_MAX];
        c->want_status = (int)want[i];
        c->filter_ok = c->order_ok = true;
        assert_int_equal(store_delivery_list(st, &want[i], "acc", 10, NULL, collect_cb, c, next,
                                             &e), 0);
        assert_true(c->filter_ok);
        assert_int_equal(c->n, want[i] == STORE_D_PENDING ? 2 : 1);
        assert_int_equal(c->ids[0], want[i] == STORE_D_PENDING   ? d[3].id
                                    : want[i] == STORE_D_DEAD    ? d[1].id
                                                                 : d[0].id);
        free(c);
    }
    struct store_delivery got;
    assert_int_equal(store_delivery_get(st, d[0].id, &got, NULL, NULL, &e), 0);
    assert_int_equal(got.msg_id, m1);
    assert_int_equal(got.status, STORE_D_DELIVERED);
    struct store_account_counts ac;
    assert_int_equal(store_account_counts(st, "acc", &ac, &e), 0);
    assert_int_equal(ac.pending_deliveries, 2);
    /* d[2] is still leased: renewed and released by its owner alone */
    int64_t k = 0;
    assert_int_equal(store_delivery_renew(st, OWNER, T0 + 20, LEASE, &k, &e), 0);
    assert_int_equal(k, 1);
    assert_int_equal(store_delivery_release(st, OWNER, 0, &k, &e), 0);
    assert_int_equal(k, 1);
    assert_int_equal(store_delivery_renew(st, OWNER, T0 + 21, LEASE, &k, &e), 0);
    assert_int_equal(k, 0);
    /* an event goes to a webhook once */
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO deliveries(event_id, account, webhook, status, next_attempt_at,"
             " created_at, updated_at) VALUES (%lld, 'acc', 'crm', 0, 0, 0, 0)",
             (long long)ev);
    assert_int_equal(pg_exec(sql), -1);
    assert_int_equal(pg_value("SELECT count(*) FROM deliveries"), 4);
}

/* A poll with a few fields set, at `at`. */
static struct pollhist_poll hpoll(int64_t at, bool ok)
{
    struct pollhist_poll p = {.at = at, .duration_ms = 40, .listed = 3, .new_messages = 2,
                              .deleted = 1, .ok = ok};
    if (!ok)
        snprintf(p.error, sizeof p.error, "Connection: connect to 127.0.0.1:1: refused");
    return p;
}

/* store_poll_record of a poll and (s not NULL) its session written in full. */
static int poll_rec(struct store *st, const char *account, const char *instance,
                    const struct pollhist_poll *p, const struct pollhist_session *s,
                    struct err *e)
{
    struct store_poll_write w = {.instance = instance, .poll = p, .session = s};
    bool saved = true;
    int rc = store_poll_record(st, account, &w, &saved, e);
    assert_true(saved == (rc == 0 && s != NULL));
    return rc;
}

/* The poll history (schema 10): on PostgreSQL each poll is added and the
 * account's polls beyond POLLHIST_POLLS dropped, with the session it had;
 * on SQLite both calls refuse (the history stays in memory). */
static void poll_history(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    struct pollhist_poll p = hpoll(T0, true);
    struct pollhist_session s;
    struct store_poll out[POLLHIST_POLLS + 5];
    size_t n = 99;
    if (!store_is_shared()) {
        assert_string_equal(store_backend(), "sqlite");
        assert_int_equal(poll_rec(st, "acc", OWNER, &p, NULL, &e), -1);
        assert_int_equal(e.kind, ERR_USAGE);
        assert_non_null(strstr(e.msg, "not kept on SQLite"));
        assert_int_equal(store_poll_history(st, "acc", &s, out, POLLHIST_POLLS, &n, &e), -1);
        assert_int_equal(e.kind, ERR_USAGE);
        assert_int_equal(n, 0);
        return;
    }
    /* nothing yet: no session, no polls */
    assert_int_equal(store_poll_history(st, "acc", &s, out, POLLHIST_POLLS, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(s.at, 0);
    /* a poll with a TLS session */
    struct pollhist_session in = {.at = T0 + 5, .tls = true, .n_capa = 3};
    snprintf(in.capa[0], sizeof in.capa[0], "USER");
    snprintf(in.capa[1], sizeof in.capa[1], "UIDL");
    snprintf(in.capa[2], sizeof in.capa[2], "SASL PLAIN XOAUTH2");
    snprintf(in.tls_info.version, sizeof in.tls_info.version, "TLSv1.3");
    snprintf(in.tls_info.cipher, sizeof in.tls_info.cipher, "TLS_AES_256_GCM_SHA384");
    in.tls_info.verified = true;
    snprintf(in.tls_info.verify, sizeof in.tls_info.verify, "chain");
    snprintf(in.tls_info.peer, sizeof in.tls_info.peer, "CN=pop.example");
    snprintf(in.tls_info.issuer, sizeof in.tls_info.issuer, "CN=Test CA");
    in.tls_info.not_after = T0 + DAY_MS;
    snprintf(in.tls_info.fingerprint, sizeof in.tls_info.fingerprint, "sha256:%064d", 7);
    assert_int_equal(poll_rec(st, "acc", OWNER, &p, &in, &e), 0);
    assert_int_equal(store_poll_history(st, "acc", &s, out, POLLHIST_POLLS, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].p.at, T0);
    assert_int_equal(out[0].p.duration_ms, 40);
    assert_int_equal(out[0].p.listed, 3);
    assert_int_equal(out[0].p.new_messages, 2);
    assert_int_equal(out[0].p.deleted, 1);
    assert_true(out[0].p.ok);
    assert_string_equal(out[0].p.error, "");
    assert_string_equal(out[0].instance, OWNER);
    assert_int_equal(s.at, T0 + 5);
    assert_true(s.tls);
    assert_int_equal(s.n_capa, 3);
    assert_string_equal(s.capa[2], "SASL PLAIN XOAUTH2");
    assert_string_equal(s.tls_info.version, "TLSv1.3");
    assert_string_equal(s.tls_info.cipher, "TLS_AES_256_GCM_SHA384");
    assert_true(s.tls_info.verified);
    assert_string_equal(s.tls_info.verify, "chain");
    assert_string_equal(s.tls_info.peer, "CN=pop.example");
    assert_string_equal(s.tls_info.issuer, "CN=Test CA");
    assert_int_equal(s.tls_info.not_after, T0 + DAY_MS);
    assert_string_equal(s.tls_info.fingerprint, in.tls_info.fingerprint);
    /* a failed poll without a session keeps the last session; another
     * instance's poll with a plaintext session replaces it */
    p = hpoll(T0 + 10, false);
    assert_int_equal(poll_rec(st, "acc", "other", &p, NULL, &e), 0);
    assert_int_equal(store_poll_history(st, "acc", &s, out, POLLHIST_POLLS, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_false(out[0].p.ok);
    assert_string_equal(out[0].p.error, "Connection: connect to 127.0.0.1:1: refused");
    assert_string_equal(out[0].instance, "other");
    assert_int_equal(out[1].p.at, T0);
    assert_int_equal(s.at, T0 + 5);
    struct pollhist_session plain = {.at = T0 + 21, .n_capa = 1};
    snprintf(plain.capa[0], sizeof plain.capa[0], "TOP");
    p = hpoll(T0 + 20, true);
    assert_int_equal(poll_rec(st, "acc", NULL, &p, &plain, &e), 0);
    assert_int_equal(store_poll_history(st, "acc", &s, out, 1, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].p.at, T0 + 20);
    assert_string_equal(out[0].instance, "");
    assert_int_equal(s.at, T0 + 21);
    assert_false(s.tls);
    assert_int_equal(s.n_capa, 1);
    assert_string_equal(s.capa[0], "TOP");
    assert_string_equal(s.tls_info.version, "");
    /* bounded: the newest POLLHIST_POLLS stay, newest first */
    for (int i = 0; i < POLLHIST_POLLS + 5; i++) {
        p = hpoll(T0 + 100 + i, true);
        assert_int_equal(poll_rec(st, "acc", OWNER, &p, NULL, &e), 0);
    }
    assert_int_equal(pg_value("SELECT count(*) FROM polls WHERE account = 'acc'"), POLLHIST_POLLS);
    assert_int_equal(store_poll_history(st, "acc", NULL, out, POLLHIST_POLLS + 5, &n, &e), 0);
    assert_int_equal(n, POLLHIST_POLLS);
    assert_int_equal(out[0].p.at, T0 + 100 + POLLHIST_POLLS + 4);
    assert_int_equal(out[POLLHIST_POLLS - 1].p.at, T0 + 105);
    /* other accounts are apart; text that is not UTF-8 is kept valid */
    p = hpoll(T0, false);
    snprintf(p.error, sizeof p.error, "bad \xff byte");
    assert_int_equal(poll_rec(st, "b", OWNER, &p, NULL, &e), 0);
    assert_int_equal(store_poll_history(st, "b", &s, out, POLLHIST_POLLS, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(s.at, 0);
    assert_non_null(strstr(out[0].p.error, "bad "));
    assert_null(strchr(out[0].p.error, '\xff'));
    /* errors */
    assert_int_equal(poll_rec(st, "", OWNER, &p, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    char longname[STORE_OWNER_MAX + 2];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(poll_rec(st, "acc", longname, &p, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_int_equal(store_poll_history(st, "", &s, out, POLLHIST_POLLS, &n, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* One statement for a poll, its session and the account's state
 * (store_poll_write): the state saved as store_account_set saves it, a
 * session with unchanged details only moved in time (and only when the
 * saved one is the one the caller wrote), nothing at all when any part is
 * refused. */
static void poll_record_with_state(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    struct pollhist_poll p = hpoll(T0, true);
    struct store_account_state as = {.state = "idle", .last_attempt_at = T0,
                                     .last_success_at = T0 + 40, .backoff_until = T0 + 9};
    struct pollhist_session in = {.at = T0 + 5, .n_capa = 1}, s;
    snprintf(in.capa[0], sizeof in.capa[0], "UIDL");
    struct store_poll_write w = {.instance = OWNER, .poll = &p, .session = &in, .state = &as};
    bool saved = true;
    if (!store_is_shared()) {
        assert_int_equal(store_poll_record(st, "acc", &w, &saved, &e), -1);
        assert_int_equal(e.kind, ERR_USAGE);
        assert_false(saved);
        assert_int_equal(store_account_get(st, "acc", &as, &e), STORE_NOTFOUND);
        return;
    }
    assert_int_equal(store_poll_record(st, "acc", &w, &saved, &e), 0);
    assert_true(saved);
    struct store_account_state got;
    assert_int_equal(store_account_get(st, "acc", &got, &e), 0);
    assert_string_equal(got.state, "idle");
    assert_int_equal(got.last_attempt_at, T0);
    assert_int_equal(got.last_success_at, T0 + 40);
    assert_int_equal(got.backoff_until, T0 + 9);
    assert_string_equal(got.last_error, "");
    struct store_poll out[2];
    size_t n = 0;
    assert_int_equal(store_poll_history(st, "acc", &s, out, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(s.at, T0 + 5);
    /* the next poll: same details, so only the session's time moves; a
     * failure's state replaces the last */
    p = hpoll(T0 + 1000, false);
    struct store_account_state failed = {.state = "backoff", .last_attempt_at = T0 + 1000,
                                         .last_success_at = T0 + 40,
                                         .backoff_until = T0 + 61000,
                                         .last_error = "Connection: refused",
                                         .last_error_code = "conn"};
    w = (struct store_poll_write){.instance = OWNER, .poll = &p, .session_at = T0 + 1005,
                                  .session_was = T0 + 5, .state = &failed};
    assert_int_equal(store_poll_record(st, "acc", &w, &saved, &e), 0);
    assert_true(saved);
    assert_int_equal(store_poll_history(st, "acc", &s, out, 2, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(s.at, T0 + 1005);
    assert_int_equal(s.n_capa, 1);
    assert_string_equal(s.capa[0], "UIDL");
    assert_false(out[0].p.ok);
    assert_int_equal(store_account_get(st, "acc", &got, &e), 0);
    assert_string_equal(got.state, "backoff");
    assert_string_equal(got.last_error, "Connection: refused");
    assert_string_equal(got.last_error_code, "conn");
    assert_int_equal(got.backoff_until, T0 + 61000);
    /* another session was saved meanwhile (another instance): its time is
     * not the one given, so nothing moves and the caller is told */
    w.session_was = T0 + 5;
    w.session_at = T0 + 2005;
    p = hpoll(T0 + 2000, true);
    assert_int_equal(store_poll_record(st, "acc", &w, &saved, &e), 0);
    assert_false(saved);
    assert_int_equal(store_poll_history(st, "acc", &s, out, 2, &n, &e), 0);
    assert_int_equal(s.at, T0 + 1005);
    assert_int_equal(out[0].p.at, T0 + 2000); /* the poll itself is in */
    /* no session and no state: the poll alone */
    w = (struct store_poll_write){.poll = &p};
    assert_int_equal(store_poll_record(st, "acc", &w, &saved, &e), 0);
    assert_false(saved);
    assert_int_equal(store_account_get(st, "acc", &got, &e), 0);
    assert_string_equal(got.state, "backoff");
    /* a state refused: nothing written, the poll neither */
    int64_t polls = pg_value("SELECT count(*) FROM polls WHERE account = 'acc'");
    struct store_account_state bad = {0};
    w = (struct store_poll_write){.poll = &p, .session = &in, .state = &bad};
    assert_int_equal(store_poll_record(st, "acc", &w, &saved, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE); /* an empty state name */
    assert_false(saved);
    assert_int_equal(pg_value("SELECT count(*) FROM polls WHERE account = 'acc'"), polls);
    w = (struct store_poll_write){0};
    assert_int_equal(store_poll_record(st, "acc", &w, &saved, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* Migration 10 on its own, from a database at schema 9 (its tables only):
 * the poll history's tables are made and used. */
static void pg_migrate_9_to_10(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    store_close(st);
    ((struct fx *)*state)->st = NULL;
    store_teardown();
    assert_int_equal(pg_exec("DROP TABLE polls; DROP TABLE poll_sessions;"
                             " UPDATE schema_version SET version = 9"),
                     0);
    struct store_target t = {.url = pg_url, .password = pg_pw, .pool = 2};
    assert_int_equal(store_setup(&t, &e), 0);
    assert_int_equal(pg_value("SELECT version FROM schema_version"), STORE_SCHEMA_VERSION);
    st = fx_open(state);
    struct pollhist_poll p = hpoll(T0, true);
    struct pollhist_session in = {.at = T0 + 1, .n_capa = 1}, s;
    snprintf(in.capa[0], sizeof in.capa[0], "UIDL");
    assert_int_equal(poll_rec(st, "acc", OWNER, &p, &in, &e), 0);
    struct store_poll out[2];
    size_t n = 0;
    assert_int_equal(store_poll_history(st, "acc", &s, out, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(s.at, T0 + 1);
    assert_string_equal(s.capa[0], "UIDL");
}

/* A COMMIT that fails (a deferred trigger refuses it) leaves the pool
 * sound: the call fails with the server's reason, its connection goes back
 * to the pool once (ASan: closed once at teardown), and the next calls
 * work. */
static void pg_commit_failure(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    assert_int_equal(pg_exec("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                             " $$BEGIN RAISE EXCEPTION 'refused at commit'; END$$;"
                             " CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON messages"
                             " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()"),
                     0);
    const char *wh[] = {"crm"};
    for (int i = 0; i < 3; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "u%d", i);
        err_clear(&e);
        assert_int_equal(put(st, "acc", uidl, "x", 1, 1, wh, 1, T0, NULL, &e), -1);
        assert_non_null(strstr(e.msg, "refused at commit"));
    }
    assert_int_equal(pg_value("SELECT count(*) FROM messages"), 0);
    int64_t ev = 0;
    assert_int_equal(store_event_add(st, "acc", "account.auth_error", "{}", wh, 1, T0, &ev, &e), 0);
    assert_int_equal(pg_exec("DROP TRIGGER refuse ON messages"), 0);
    assert_true(put_ok(st, "acc", "u0", wh, 1, T0) > 0);
    store_close(st);
    ((struct fx *)*state)->st = NULL;
    store_teardown();
}

/* A group written in one round trip with one statement the database
 * refuses: the group is undone and written one by one; only that one
 * fails, the batch commits the others (messages, then outcomes). */
static void pg_group_fallback(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    assert_int_equal(pg_exec("ALTER TABLE messages ADD CONSTRAINT t_boom"
                             " CHECK (subject IS DISTINCT FROM 'boom');"
                             " ALTER TABLE attempts ADD CONSTRAINT t_boom"
                             " CHECK (error IS DISTINCT FROM 'boom')"),
                     0);
    const char *wh[] = {"crm"};
    struct store_msg_meta ok = {.subject = "fine"}, boom = {.subject = "boom"};
    struct store_finish f[4];
    group_begin(st, f, 4, "g", "body", 4, T0);
    for (int i = 0; i < 4; i++) {
        f[i].meta = i == 2 ? &boom : &ok;
        f[i].webhooks = wh;
        f[i].n_webhooks = 1;
    }
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_msg_finish_many(st, f, 4, &e), 0);
    assert_int_equal(store_batch_commit(st, &e), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(f[i].result, i == 2 ? -1 : 0);
    assert_non_null(strstr(f[2].err.msg, "t_boom"));
    assert_int_equal(pg_value("SELECT count(*) FROM messages"), 3);
    assert_int_equal(pg_value("SELECT count(*) FROM deliveries"), 3);
    struct store_delivery d[4];
    size_t n = 0;
    assert_int_equal(lease_due(st, T0, d, 4, &n, &e), 0);
    assert_int_equal(n, 3);
    struct store_record r[3];
    memset(r, 0, sizeof r);
    for (size_t i = 0; i < n; i++) {
        r[i].id = d[i].id;
        r[i].a = att(T0 + 1, 200, i == 1 ? "boom" : NULL, "delivered");
        r[i].status = STORE_D_DELIVERED;
    }
    assert_int_equal(store_batch_begin(st, &e), 0);
    assert_int_equal(store_delivery_record_many(st, OWNER, r, n, &e), 0);
    assert_int_equal(store_batch_commit(st, &e), 0);
    assert_int_equal(r[0].result, 0);
    assert_int_equal(r[1].result, -1);
    assert_non_null(strstr(r[1].err.msg, "t_boom"));
    assert_int_equal(r[2].result, 0);
    assert_int_equal(pg_value("SELECT count(*) FROM deliveries WHERE status = 1"), 2);
    assert_int_equal(pg_value("SELECT count(*) FROM attempts"), 2);
}

struct sink_buf {
    unsigned char *p;
    size_t len;
};

static int sink_append(void *ctx, const void *data, size_t len, struct err *e)
{
    (void)e;
    struct sink_buf *b = ctx;
    unsigned char *q = realloc(b->p, b->len + len);
    if (!q)
        return -1;
    memcpy(q + b->len, data, len);
    b->p = q;
    b->len += len;
    return 0;
}

/* An SQLite state with messages, deliveries in every status and ignored
 * UIDLs, copied into PostgreSQL: the same ids, keys, states and bodies;
 * only what was pending is handed out; a second copy is refused. */
static void pg_migrate_from_sqlite(void **state)
{
    struct fx *fx = *state;
    struct err e;
    store_teardown(); /* SQLite */
    struct store *sq = open_ok(fx->dir);
    const char *wh[] = {"crm", "erp"};
    const char *ign[] = {"seen1", "seen2"};
    assert_int_equal(store_uidls_record_ignored(sq, "acc", ign, 2, T0, &e), 0);
    int64_t ids[4];
    ids[0] = put_ok(sq, "acc", "u-delivered", wh, 1, T0);
    deliver_all(sq, T0);
    ids[1] = put_ok(sq, "acc", "u-pending", wh, 2, T0 + 1);
    ids[2] = put_ok(sq, "acc", "u-failed", wh, 1, T0 + 2);
    ids[3] = put_ok(sq, "other", "u-dead", wh, 1, T0 + 3);
    struct store_delivery d[8];
    size_t n = 0;
    /* u-failed: failed, retry later; u-dead: dead; leave u-pending's two pending */
    assert_int_equal(lease_due(sq, T0 + 10, d, 8, &n, &e), 0);
    for (size_t i = 0; i < n; i++) {
        struct store_attempt a = att(T0 + 10, 500, "boom", "retry");
        if (d[i].msg_id == ids[2])
            assert_int_equal(store_delivery_record(sq, OWNER, d[i].id, &a, STORE_D_FAILED,
                                                   T0 + DAY_MS, &e), 0);
        else if (d[i].msg_id == ids[3])
            assert_int_equal(store_delivery_record(sq, OWNER, d[i].id, &a, STORE_D_DEAD, 0, &e), 0);
        else
            assert_int_equal(store_delivery_release(sq, OWNER, d[i].id, NULL, &e), 0);
    }
    /* an account event (schema 7) waiting for its one webhook */
    int64_t ev = 0;
    assert_int_equal(store_event_add(sq, "acc", "account.auth_error", "{\"n\":1}", wh, 1,
                                     T0 + 11, &ev, &e), 0);
    struct store_event ev_before;
    assert_int_equal(store_event_get(sq, ev, &ev_before, NULL, &e), 0);
    struct store_msg_info before[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(store_msg_get(sq, ids[i], &before[i], &e), 0);
    struct store_queue_counts q0;
    assert_int_equal(store_delivery_counts(sq, &q0, &e), 0);
    store_close(sq);

    assert_int_equal(pg_fresh(), 0);
    struct store_migrate_counts c;
    if (store_migrate_sqlite(fx->dir, &c, &e) != 0)
        fail_msg("migrate: %s", e.msg);
    assert_int_equal(c.messages, 4);
    assert_true(c.bytes > 0);
    struct store *st = fx_open(state);
    for (int i = 0; i < 4; i++) {
        struct store_msg_info m;
        assert_int_equal(store_msg_get(st, ids[i], &m, &e), 0);
        assert_string_equal(m.key, before[i].key);
        assert_string_equal(m.uidl, before[i].uidl);
        assert_string_equal(m.sha256, before[i].sha256);
        assert_int_equal(m.delivered_at, before[i].delivered_at);
        struct sink_buf b = {0};
        assert_int_equal(store_msg_stream(st, ids[i], sink_append, &b, &e), 0);
        assert_int_equal(b.len, m.size);
        char hex[65];
        sha_hex(b.p, b.len, hex);
        assert_string_equal(hex, m.sha256);
        free(b.p);
    }
    struct store_queue_counts q1;
    assert_int_equal(store_delivery_counts(st, &q1, &e), 0);
    assert_memory_equal(&q0, &q1, sizeof q0);
    assert_int_equal(uidl_state(st, "acc", "seen1"), STORE_UIDL_IGNORED);
    assert_int_equal(uidl_state(st, "acc", "u-delivered"), STORE_UIDL_DELIVERED);
    assert_int_equal(uidl_state(st, "acc", "u-pending"), STORE_UIDL_STORED);
    struct store_event ev_after;
    char *data = NULL;
    assert_int_equal(store_event_get(st, ev, &ev_after, &data, &e), 0);
    assert_string_equal(ev_after.key, ev_before.key);
    assert_string_equal(ev_after.type, "account.auth_error");
    assert_string_equal(data, "{\"n\":1}");
    free(data);
    /* only the two pending and the event go out now, each with its key */
    assert_int_equal(lease_due(st, T0 + 20, d, 8, &n, &e), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        if (d[i].event_id) {
            assert_int_equal(d[i].event_id, ev);
            assert_int_equal(d[i].msg_id, 0);
            assert_string_equal(d[i].msg_key, ev_before.key);
            assert_string_equal(d[i].event_type, "account.auth_error");
            continue;
        }
        assert_int_equal(d[i].msg_id, ids[1]);
        assert_string_equal(d[i].msg_key, before[1].key);
    }
    /* a new event too gets a new id above the copied ones */
    int64_t ev_next = 0;
    assert_int_equal(store_event_add(st, "acc", "account.auth_error", "{}", wh, 1, T0 + 30,
                                     &ev_next, &e), 0);
    assert_true(ev_next > ev);
    /* a new message gets a new id above the copied ones */
    int64_t next = put_ok(st, "acc", "u-new", wh, 1, T0 + 30);
    assert_true(next > ids[3]);
    /* not into a store that holds state */
    assert_int_equal(store_migrate_sqlite(fx->dir, &c, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_non_null(strstr(e.msg, "already holds"));
}

/* Dashboard statistics: attempts per webhook in the last hour and day,
 * success, nearest-rank latencies, the last error; traffic by UTC hour. */
static void webhook_stats_hourly(void **state)
{
    struct store *st = fx_open(state);
    struct err e;
    const int64_t H = STORE_HOUR_MS;
    const int64_t now = (T0 / H) * H + 30 * 60000; /* half past an hour */
    struct store_webhook_stats ws;
    assert_int_equal(store_webhook_stats(st, "a", now, &ws, &e), 0);
    assert_int_equal(ws.attempts_day, 0);
    assert_int_equal(ws.p50_ms, -1);
    assert_int_equal(ws.p99_ms, -1);
    assert_int_equal(ws.last_error_at, 0);

    /* messages stored 30 h ago, 2 h ago (x2) and now; webhooks a and b */
    const char *wh[] = {"a", "b"};
    int64_t at[] = {now - 30 * H, now - 2 * H, now - 2 * H + 1000, now - 60000};
    for (int i = 0; i < 4; i++) {
        char u[16];
        snprintf(u, sizeof u, "u%d", i);
        put_ok(st, "acc", u, wh, 2, at[i]);
    }
    /* attempts: for each message's delivery to a, one at its time; durations
     * 100, 200, 300, 400; the one 2 h ago (second) failed with 503 */
    for (int i = 0; i < 4; i++) {
        struct store_delivery d[8];
        size_t n = 0;
        assert_int_equal(store_delivery_lease_due(st, OWNER, "a", at[i], LEASE, d, 8, &n, &e), 0);
        assert_true(n >= 1);
        struct store_attempt a = att(at[i], i == 1 ? 503 : 200, i == 1 ? "Service Unavailable"
                                                                         : NULL,
                                     i == 1 ? "retry" : "delivered");
        a.duration_ms = 100 * (i + 1);
        assert_int_equal(store_delivery_record(st, OWNER, d[0].id, &a,
                                               i == 1 ? STORE_D_DEAD : STORE_D_DELIVERED, 0, &e),
                         0);
    }
    assert_int_equal(store_webhook_stats(st, "a", now, &ws, &e), 0);
    assert_int_equal(ws.attempts_hour, 1);
    assert_int_equal(ws.delivered_hour, 1);
    assert_int_equal(ws.attempts_day, 3); /* 30 h ago is out of the day */
    assert_int_equal(ws.delivered_day, 2);
    assert_int_equal(ws.p50_ms, 300);     /* of 200, 300, 400: rank ceil(1.5) = 2 */
    assert_int_equal(ws.p99_ms, 400);
    assert_int_equal(ws.last_error_at, at[1]);
    assert_int_equal(ws.last_error_status, 503);
    assert_string_equal(ws.last_error, "Service Unavailable");
    assert_int_equal(store_webhook_stats(st, "b", now, &ws, &e), 0);
    assert_int_equal(ws.attempts_day, 0); /* b was never attempted */
    assert_int_equal(store_webhook_stats(st, "", now, &ws, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);

    struct store_hour h[48];
    assert_int_equal(store_stats_hourly(st, now, 48, h, &e), 0);
    assert_int_equal(h[47].start, (now / H) * H);
    assert_int_equal(h[0].start, (now / H - 47) * H);
    int64_t recv = 0, att_n = 0;
    for (int i = 0; i < 48; i++) {
        recv += h[i].received;
        att_n += h[i].attempts;
    }
    assert_int_equal(recv, 4);
    assert_int_equal(att_n, 4);
    assert_int_equal(h[47].received, 1);   /* now - 1 min */
    assert_int_equal(h[47].delivered, 1);
    assert_int_equal(h[45].received, 2);   /* 2 h ago */
    assert_int_equal(h[45].attempts, 2);
    assert_int_equal(h[45].delivered, 1);  /* one 503 */
    assert_int_equal(h[17].received, 1);   /* 30 h ago */
    assert_int_equal(h[46].received, 0);
    /* a shorter window leaves older hours out */
    assert_int_equal(store_stats_hourly(st, now, 1, h, &e), 0);
    assert_int_equal(h[0].received, 1);
    assert_int_equal(store_stats_hourly(st, now, 0, h, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(store_stats_hourly(st, now, STORE_STATS_HOURS_MAX + 1, h, &e), -1);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    pg_url = getenv("POP3BRIDGE_TEST_PG_URL");
    pg_pw = getenv("POP3BRIDGE_TEST_PG_PASSWORD");
    if (pg_url && !*pg_url)
        pg_url = NULL;
    if (pg_url) {
        /* the same suite on PostgreSQL, without the tests of SQLite's files */
        const struct CMUnitTest pg_tests[] = {
            T(pg_schema),           T(pg_body_chunks),      T(pg_migrate_from_sqlite),
            T(streamed_store),      T(store_meta_and_errors), T(spool_failure),
            T(large_message),       T(batch_many),          T(batch_partial_failure), T(batch_write_not_found),
            T(crash_in_batch),      T(delivery_lifecycle),   T(retry_dead),
            T(leases), T(webhook_disable), T(link_key), T(msg_load), T(msg_load_many), T(record_many), T(record_many_settles), T(finish_many), T(finish_many_fields), T(deletable_policy),
            T(too_large_never_deletable),
            T(forget_vanished),     T(ignored_uidls),        T(callbacks_stop),
            T(list_paging),         T(retention_purge),      T(account_state),
            T(ids),                 T(concurrent_threads),   T(concurrent_first_open),
            T(oauth2_rows),         T(oauth2_one_refresher), T(account_leases),
            T(account_give_back),
            T(instances),           T(webhook_stats_hourly), T(drop_and_bulk_retry),
            T(account_events),      T(dedupe_by_message_id), T(pg_migrate_from_6), T(pg_migrate_from_8),
            T(pg_commit_failure),   T(pg_group_fallback),   T(events_purge),
            T(poll_history),        T(pg_migrate_9_to_10),  T(poll_record_with_state),
        };
        return cmocka_run_group_tests_name("store on PostgreSQL", pg_tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        T(open_migrate_reopen), T(migrate_from_v2), T(drop_and_bulk_retry), T(account_events), T(dedupe_by_message_id), T(newer_schema_refused), T(open_errors),
        T(streamed_store),      T(store_meta_and_errors), T(spool_failure),
        T(large_message),       T(batch_many),          T(batch_partial_failure), T(batch_write_not_found),
        T(crash_in_batch),      T(delivery_lifecycle),   T(retry_dead),
        T(leases), T(account_leases), T(account_give_back), T(webhook_disable), T(link_key),
        T(msg_load), T(msg_load_many), T(record_many), T(record_many_settles), T(finish_many), T(finish_many_fields), T(deletable_policy),
        T(too_large_never_deletable),
        T(forget_vanished),     T(ignored_uidls),        T(callbacks_stop),
        T(list_paging),         T(retention_purge),      T(account_state),
        T(ids),                 T(concurrent_threads),   T(concurrent_first_open),
        T(oauth2_rows),         T(oauth2_one_refresher),
        T(instances),           T(webhook_stats_hourly), T(events_purge),
        T(poll_history),        T(poll_record_with_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
