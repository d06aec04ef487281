/*
 * store_pg_import — store_migrate_sqlite (include/store.h): an SQLite state
 * copied into the PostgreSQL store, for `pop3bridge store migrate`.
 *
 * The tables are copied by the columns both sides have (SQLite's
 * PRAGMA table_info, PostgreSQL's information_schema), each value in its
 * own form: integers and text as text (text made valid UTF-8), blobs as
 * bytea in binary.  So a column a later schema adds to both backends is
 * copied without a change here; a new TABLE must be added to `tables`
 * below, and until it is, a state holding one is refused by name rather
 * than copied in part.  bodies(raw BLOB) becomes bodies + body_chunks, read
 * with incremental blob I/O.  One read transaction on SQLite (a snapshot),
 * one write transaction on PostgreSQL: the copy is all or nothing.
 */
#include "store.h"
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define IMPORT_COLS_MAX 64   /* columns of one table */
#define IMPORT_PATH_MAX 4096
#define IMPORT_NAME_MAX 64   /* a column's name */

/* Copied in this order (foreign keys); bodies is copied apart. */
static const char *const tables[] = {
    "accounts", "messages", "uidls", "events", "deliveries", "attempts", "webhooks_disabled",
    "oauth2_tokens", "link_key",
};
/* Not copied: rebuilt by the instances (heartbeats) or by the copy itself. */
static const char *const skipped[] = {"instances", "bodies"};

/* identity columns whose sequence follows the copied ids */
static const char *const identities[] = {"messages", "events", "deliveries", "attempts"};

struct imp {
    sqlite3 *db;
    PGconn *pg;
    struct store_migrate_counts n;
};

static int sq_fail(struct imp *m, struct err *e, const char *what)
{
    return err_set(e, ERR_INTERNAL, "store migrate: SQLite: %s: %s", what, sqlite3_errmsg(m->db));
}

static int pg_fail(PGresult *r, PGconn *c, struct err *e, const char *what)
{
    const char *prim = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char why[ERR_MSG_MAX];
    const char *t = prim ? prim : PQerrorMessage(c);
    size_t n = strcspn(t, "\n");
    snprintf(why, sizeof why, "%.*s", (int)(n < sizeof why ? n : sizeof why - 1), t);
    return err_set(e, ERR_INTERNAL, "store migrate: PostgreSQL: %s: %s", what, why);
}

static int pg_cmd(struct imp *m, const char *sql, struct err *e, const char *what)
{
    PGresult *r = PQexec(m->pg, sql);
    ExecStatusType s = PQresultStatus(r);
    int rc = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? 0 : pg_fail(r, m->pg, e, what);
    PQclear(r);
    return rc;
}

static int64_t pg_count(struct imp *m, const char *sql, struct err *e)
{
    PGresult *r = PQexec(m->pg, sql);
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else
        pg_fail(r, m->pg, e, "count");
    PQclear(r);
    return v;
}

/* The names of table's columns that PostgreSQL has too. */
static int common_columns(struct imp *m, const char *table, char cols[][IMPORT_NAME_MAX],
                          int *n, struct err *e)
{
    *n = 0;
    const char *pv[1] = {table};
    PGresult *r = PQexecParams(m->pg,
                               "SELECT column_name FROM information_schema.columns"
                               " WHERE table_schema = current_schema() AND table_name = $1",
                               1, NULL, pv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = pg_fail(r, m->pg, e, "columns");
        PQclear(r);
        return rc;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA table_info(%s)", table);
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(m->db, sql, -1, &s, NULL) != SQLITE_OK) {
        PQclear(r);
        return sq_fail(m, e, "columns");
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *c = (const char *)sqlite3_column_text(s, 1);
        if (!c || strlen(c) >= IMPORT_NAME_MAX)
            continue;
        bool both = false;
        for (int i = 0; i < PQntuples(r) && !both; i++)
            both = strcmp(PQgetvalue(r, i, 0), c) == 0;
        if (both && *n < IMPORT_COLS_MAX)
            snprintf(cols[(*n)++], IMPORT_NAME_MAX, "%s", c);
    }
    sqlite3_finalize(s);
    PQclear(r);
    if (*n == 0)
        return err_set(e, ERR_INTERNAL, "store migrate: table %s has no column in common", table);
    return 0;
}

static int copy_table(struct imp *m, const char *table, struct err *e)
{
    char cols[IMPORT_COLS_MAX][IMPORT_NAME_MAX];
    int nc = 0;
    if (common_columns(m, table, cols, &nc, e) < 0)
        return -1;
    GString *sel = g_string_new("SELECT "), *ins = g_string_new("INSERT INTO ");
    g_string_append_printf(ins, "%s(", table);
    for (int i = 0; i < nc; i++) {
        g_string_append_printf(sel, "%s\"%s\"", i ? ", " : "", cols[i]);
        g_string_append_printf(ins, "%s\"%s\"", i ? ", " : "", cols[i]);
    }
    g_string_append_printf(sel, " FROM %s", table);
    g_string_append(ins, ") VALUES (");
    for (int i = 0; i < nc; i++)
        g_string_append_printf(ins, "%s$%d", i ? ", " : "", i + 1);
    g_string_append(ins, ")");
    sqlite3_stmt *s = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(m->db, sel->str, -1, &s, NULL) != SQLITE_OK)
        rc = sq_fail(m, e, table);
    PGresult *prep = rc == 0 ? PQprepare(m->pg, "", ins->str, 0, NULL) : NULL;
    if (rc == 0 && PQresultStatus(prep) != PGRES_COMMAND_OK)
        rc = pg_fail(prep, m->pg, e, table);
    PQclear(prep);
    const char *v[IMPORT_COLS_MAX];
    int len[IMPORT_COLS_MAX], fmt[IMPORT_COLS_MAX];
    char *own[IMPORT_COLS_MAX];
    int step;
    while (rc == 0 && (step = sqlite3_step(s)) == SQLITE_ROW) {
        for (int i = 0; i < nc; i++) {
            own[i] = NULL;
            len[i] = 0;
            fmt[i] = 0;
            switch (sqlite3_column_type(s, i)) {
            case SQLITE_NULL:
                v[i] = NULL;
                break;
            case SQLITE_BLOB:
                v[i] = sqlite3_column_blob(s, i);
                len[i] = sqlite3_column_bytes(s, i);
                fmt[i] = 1;
                if (!v[i])
                    v[i] = "";
                break;
            default: { /* integers print as text; text must be valid UTF-8 */
                const char *t = (const char *)sqlite3_column_text(s, i);
                int tl = sqlite3_column_bytes(s, i);
                if (t && !g_utf8_validate(t, tl, NULL))
                    t = own[i] = g_utf8_make_valid(t, tl);
                v[i] = t ? t : "";
                break;
            }
            }
        }
        PGresult *r = PQexecPrepared(m->pg, "", nc, v, len, fmt, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = pg_fail(r, m->pg, e, table);
        PQclear(r);
        for (int i = 0; i < nc; i++)
            g_free(own[i]);
        m->n.rows++;
        if (strcmp(table, "messages") == 0)
            m->n.messages++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = sq_fail(m, e, table);
    sqlite3_finalize(s);
    g_string_free(sel, TRUE);
    g_string_free(ins, TRUE);
    return rc;
}

/* bodies(message_id, raw) -> bodies(message_id, size, chunk_size) + chunks. */
static int copy_bodies(struct imp *m, struct err *e)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(m->db, "SELECT message_id, length(raw) FROM bodies ORDER BY message_id",
                           -1, &s, NULL) != SQLITE_OK)
        return sq_fail(m, e, "bodies");
    unsigned char *buf = malloc(STORE_IO_CHUNK);
    int rc = buf ? 0 : err_set(e, ERR_INTERNAL, "store migrate: out of memory");
    int step;
    while (rc == 0 && (step = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0), size = sqlite3_column_int64(s, 1);
        char ids[24], sizes[24], chunk[24], seqs[24];
        snprintf(ids, sizeof ids, "%" PRId64, id);
        snprintf(sizes, sizeof sizes, "%" PRId64, size);
        snprintf(chunk, sizeof chunk, "%u", STORE_IO_CHUNK);
        const char *bv[3] = {ids, sizes, chunk};
        PGresult *r = PQexecParams(m->pg,
                                   "INSERT INTO bodies(message_id, size, chunk_size)"
                                   " VALUES ($1, $2, $3)", 3, NULL, bv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            rc = pg_fail(r, m->pg, e, "bodies");
        PQclear(r);
        sqlite3_blob *b = NULL;
        if (rc == 0 && sqlite3_blob_open(m->db, "main", "bodies", "raw", id, 0, &b) != SQLITE_OK)
            rc = sq_fail(m, e, "body blob");
        for (int64_t off = 0, seq = 0; rc == 0 && off < size; off += STORE_IO_CHUNK, seq++) {
            int n = size - off < STORE_IO_CHUNK ? (int)(size - off) : (int)STORE_IO_CHUNK;
            if (sqlite3_blob_read(b, buf, n, (int)off) != SQLITE_OK) {
                rc = sq_fail(m, e, "body blob");
                break;
            }
            snprintf(seqs, sizeof seqs, "%" PRId64, seq);
            const char *cv[3] = {ids, seqs, (const char *)buf};
            int cl[3] = {0, 0, n}, cf[3] = {0, 0, 1};
            r = PQexecParams(m->pg, "INSERT INTO body_chunks(message_id, seq, data) VALUES ($1, $2, $3)",
                             3, NULL, cv, cl, cf, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                rc = pg_fail(r, m->pg, e, "body chunks");
            PQclear(r);
            m->n.bytes += n;
        }
        sqlite3_blob_close(b);
        m->n.rows++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = sq_fail(m, e, "bodies");
    sqlite3_finalize(s);
    free(buf);
    return rc;
}

/* A table in the SQLite state this build does not copy: refused by name. */
static int unknown_tables(struct imp *m, struct err *e)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(m->db, "SELECT name FROM sqlite_master WHERE type = 'table'"
                                  " AND name NOT LIKE 'sqlite_%'", -1, &s, NULL) != SQLITE_OK)
        return sq_fail(m, e, "tables");
    int rc = 0;
    while (rc == 0 && sqlite3_step(s) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(s, 0);
        bool known = false;
        for (size_t i = 0; t && i < sizeof tables / sizeof tables[0]; i++)
            known = known || strcmp(t, tables[i]) == 0;
        for (size_t i = 0; t && i < sizeof skipped / sizeof skipped[0]; i++)
            known = known || strcmp(t, skipped[i]) == 0;
        if (t && !known)
            rc = err_set(e, ERR_INTERNAL,
                         "store migrate: the SQLite state has a table this build cannot copy"
                         " (%.64s); nothing was copied", t);
    }
    sqlite3_finalize(s);
    return rc;
}

/* The copied tables' identity sequences continue after their largest id. */
static int reset_identities(struct imp *m, struct err *e)
{
    for (size_t i = 0; i < sizeof identities / sizeof identities[0]; i++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT setval(pg_get_serial_sequence('%s', 'id'),"
                 " coalesce((SELECT max(id) FROM %s), 0) + 1, false)",
                 identities[i], identities[i]);
        if (pg_cmd(m, sql, e, "identity") < 0)
            return -1;
    }
    return 0;
}

int store_migrate_sqlite(const char *state_dir, struct store_migrate_counts *counts,
                         struct err *e)
{
    if (!store_is_shared())
        return err_set(e, ERR_USAGE, "store migrate: the configuration has no PostgreSQL store");
    if (!state_dir || !*state_dir)
        return err_set(e, ERR_USAGE, "store migrate: no SQLite state directory given");
    char path[IMPORT_PATH_MAX], lock[IMPORT_PATH_MAX];
    int n1 = snprintf(path, sizeof path, "%s/%s", state_dir, STORE_DB_FILE);
    int n2 = snprintf(lock, sizeof lock, "%s/%s", state_dir, STORE_LOCK_FILE);
    if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof path || (size_t)n2 >= sizeof lock)
        return err_set(e, ERR_LIMIT, "store migrate: the state directory's path is too long");
    if (access(path, R_OK) < 0)
        return err_set(e, ERR_USAGE, "store migrate: no SQLite state in %s (%s)", state_dir,
                       strerror(errno));
    struct imp m = {0};
    int rc = -1, lock_fd = open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (lock_fd >= 0 && flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        close(lock_fd);
        err_set(e, ERR_USAGE, "store migrate: another store restore or migrate holds "
                              STORE_LOCK_FILE " in %s; wait for it to end", state_dir);
        return STORE_IN_USE;
    }
    /* a bridge running on it has the database open (it takes no lock file):
     * what it fetches or delivers after the copy would be done twice */
    int used = store_sqlite_in_use(state_dir, "store migrate", e);
    if (used != 0) {
        if (lock_fd >= 0)
            close(lock_fd);
        return used;
    }
    /* the SQLite state at the current schema (store_sqlite_open migrates) */
    struct store *sq = store_sqlite_open(state_dir, e);
    if (!sq)
        goto out;
    store_close(sq);
    if (sqlite3_open_v2(path, &m.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store migrate: cannot open %s", path);
        goto out;
    }
    sqlite3_busy_timeout(m.db, STORE_BUSY_TIMEOUT_MS);
    if (sqlite3_exec(m.db, "BEGIN; SELECT count(*) FROM messages", NULL, NULL, NULL) != SQLITE_OK) {
        sq_fail(&m, e, "begin");
        goto out;
    }
    if (unknown_tables(&m, e) < 0)
        goto out;
    if (!(m.pg = (PGconn *)store_pg_borrow(e)))
        goto out;
    if (pg_cmd(&m, "BEGIN", e, "begin") < 0)
        goto out;
    int64_t held = pg_count(&m, "SELECT (SELECT count(*) FROM messages)"
                                " + (SELECT count(*) FROM uidls) + (SELECT count(*) FROM deliveries)",
                            e);
    if (held < 0)
        goto out;
    if (held > 0) {
        err_set(e, ERR_USAGE, "store migrate: the PostgreSQL store %s already holds messages,"
                              " UIDLs or deliveries; migrate into an empty one",
                store_target_name());
        goto out;
    }
    /* accounts rows the instances created (heartbeats, leases) give way */
    if (pg_cmd(&m, "DELETE FROM accounts; DELETE FROM webhooks_disabled;"
                   " DELETE FROM oauth2_tokens; DELETE FROM link_key", e, "clear") < 0)
        goto out;
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        if (copy_table(&m, tables[i], e) < 0)
            goto out;
        if (strcmp(tables[i], "messages") == 0 && copy_bodies(&m, e) < 0)
            goto out;
    }
    if (reset_identities(&m, e) < 0)
        goto out;
    if (pg_cmd(&m, "UPDATE deliveries SET lease_owner = NULL, lease_until = 0;"
                   " UPDATE accounts SET lease_owner = NULL, lease_until = 0;"
                   " UPDATE oauth2_tokens SET lease_owner = NULL, lease_until = 0",
               e, "clear leases") < 0 ||
        pg_cmd(&m, "COMMIT", e, "commit") < 0)
        goto out;
    rc = 0;
    if (counts)
        *counts = m.n;
out:
    if (m.pg) {
        if (rc != 0)
            PQclear(PQexec(m.pg, "ROLLBACK"));
        store_pg_return((struct pg_conn *)m.pg);
    }
    if (m.db) {
        sqlite3_exec(m.db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(m.db);
    }
    if (lock_fd >= 0)
        close(lock_fd);
    return rc;
}
