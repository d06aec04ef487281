/*
 * store_sqlite_backup — the SQLite store's backup, restore and export; see
 * bridge/store_sqlite_impl.h.
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

/* ---- backup, restore and export ------------------------------------------ */

#define BACKUP_RETRY_MS 100 /* wait step while the source is busy */

static int db_path(const char *state_dir, char *out, size_t size, struct err *e)
{
    if (!state_dir || !*state_dir)
        return err_set(e, ERR_USAGE, "store: state_dir is empty");
    int n = snprintf(out, size, "%s/%s", state_dir, STORE_DB_FILE);
    if (n < 0 || (size_t)n >= size)
        return err_set(e, ERR_LIMIT, "store: state_dir is longer than %d bytes",
                       (int)(size - sizeof STORE_DB_FILE - 1));
    return 0;
}

/* fsync the directory holding path, so a rename into it is durable. */
static int sync_parent(const char *path, struct err *e)
{
    char dir[PATH_BYTES];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        int er = errno;
        if (fd >= 0)
            close(fd);
        return err_set(e, ERR_INTERNAL, "store: cannot fsync directory %s: %s", dir, strerror(er));
    }
    close(fd);
    return 0;
}

static int fsync_path(const char *path, struct err *e)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        int er = errno;
        if (fd >= 0)
            close(fd);
        return err_set(e, ERR_INTERNAL, "store: cannot fsync %s: %s", path, strerror(er));
    }
    close(fd);
    return 0;
}

/* Copy all of src's "main" into dst's, waiting while src is busy. */
static int backup_copy(sqlite3 *dst, sqlite3 *src, const char *what, struct err *e)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    if (!b)
        return err_set(e, ERR_INTERNAL, "store: %s: %s", what, sqlite3_errmsg(dst));
    int rc;
    /* -1: every page in one step, so the copy is one snapshot of the source */
    for (int waited = 0;; waited += BACKUP_RETRY_MS) {
        rc = sqlite3_backup_step(b, -1);
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || waited >= STORE_BUSY_TIMEOUT_MS)
            break;
        sqlite3_sleep(BACKUP_RETRY_MS);
    }
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE)
        return err_set(e, ERR_INTERNAL, "store: %s: %s", what,
                       sqlite3_errcode(dst) != SQLITE_OK ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
    return 0;
}

static int exec_db(sqlite3 *db, const char *sql, const char *what, struct err *e)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: %s: %s", what, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int store_backup(const char *state_dir, const char *out_path, uint64_t *bytes, struct err *e)
{
    char src_path[PATH_BYTES], tmp[PATH_BYTES];
    sqlite3 *src = NULL, *dst = NULL;
    bool made = false;
    int r = -1;
    if (db_path(state_dir, src_path, sizeof src_path, e) < 0)
        return -1;
    if (!out_path || !*out_path)
        return err_set(e, ERR_USAGE, "store: backup: no output file given");
    int n = snprintf(tmp, sizeof tmp, "%s.tmp-%d", out_path, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return err_set(e, ERR_LIMIT, "store: backup: the output path is longer than %d bytes",
                       PATH_BYTES - 16);
    struct stat sb;
    if (stat(src_path, &sb) < 0)
        return err_set(e, errno == ENOENT ? ERR_USAGE : ERR_INTERNAL,
                       "store: backup: no state database at %s: %s", src_path, strerror(errno));
    /* the source is opened as the bridge opens it (WAL needs the -shm file);
     * without SQLITE_OPEN_CREATE nothing new is made */
    if (sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot open %s: %s", src_path,
                src ? sqlite3_errmsg(src) : "out of memory");
        goto out;
    }
    sq_conn_setup(src);
    /* the copy is created here, so its mode is 0600 whatever the umask;
     * SQLite's journal for it takes the same mode */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    made = true;
    if (sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot open %s: %s", tmp,
                dst ? sqlite3_errmsg(dst) : "out of memory");
        goto out;
    }
    sq_conn_setup(dst);
    if (backup_copy(dst, src, "backup", e) < 0)
        goto out;
    /* the copied header says WAL; one file without -wal/-shm is what a backup is */
    if (exec_db(dst, "PRAGMA journal_mode = DELETE", "backup", e) < 0)
        goto out;
    if (sqlite3_close(dst) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot close %s: %s", tmp, sqlite3_errmsg(dst));
        goto out;
    }
    dst = NULL;
    if (fsync_path(tmp, e) < 0)
        goto out;
    if (stat(tmp, &sb) < 0 || rename(tmp, out_path) < 0) {
        err_set(e, ERR_INTERNAL, "store: backup: cannot rename %s to %s: %s", tmp, out_path,
                strerror(errno));
        goto out;
    }
    made = false;
    if (sync_parent(out_path, e) < 0)
        goto out;
    if (bytes)
        *bytes = (uint64_t)sb.st_size;
    r = 0;
out:
    sqlite3_close(dst);
    sqlite3_close(src);
    if (made)
        unlink(tmp);
    return r;
}

/* Is in_path a pop3bridge state this build can take?  Its schema version. */
static int check_copy(const char *in_path, int *version, struct err *e)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int r = -1;
    if (access(in_path, R_OK) < 0)
        return err_set(e, ERR_USAGE, "store: restore: cannot read %s: %s", in_path,
                       strerror(errno));
    if (sqlite3_open_v2(in_path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_USAGE, "store: restore: cannot open %s: %s", in_path,
                db ? sqlite3_errmsg(db) : "out of memory");
        goto out;
    }
    sq_conn_setup(db);
    const char *sql = "SELECT (SELECT user_version FROM pragma_user_version),"
                      " (SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                      "  AND name IN ('messages', 'bodies', 'uidls', 'deliveries'))";
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK || sqlite3_step(s) != SQLITE_ROW) {
        err_set(e, ERR_USAGE, "store: restore: %s is not a pop3bridge state: %s", in_path,
                sqlite3_errmsg(db));
        goto out;
    }
    *version = sqlite3_column_int(s, 0);
    if (sqlite3_column_int(s, 1) != 4 || *version < 1) {
        err_set(e, ERR_USAGE, "store: restore: %s is not a pop3bridge state"
                              " (no pop3bridge tables, or no schema version)", in_path);
        goto out;
    }
    if (*version > STORE_SCHEMA_VERSION) {
        err_set(e, ERR_USAGE, "store: restore: %s has schema version %d, newer than this build"
                              " supports (%d)", in_path, *version, STORE_SCHEMA_VERSION);
        goto out;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        err_set(e, ERR_USAGE, "store: restore: %s: quick_check failed: %s", in_path,
                sqlite3_errmsg(db));
        goto out;
    }
    const char *ok = (const char *)sqlite3_column_text(s, 0);
    if (!ok || strcmp(ok, "ok") != 0) {
        err_set(e, ERR_USAGE, "store: restore: %s is damaged (quick_check: %.120s)", in_path,
                ok ? ok : "");
        goto out;
    }
    r = 0;
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
    return r;
}

/* Root restoring a service's state: the database files and the lock file
 * stay the service user's (the owner of state_dir).  0, or -1 with *e. */
static int restore_owner(const char *state_dir, const char *path, const char *lock, int lock_fd,
                         struct err *e)
{
    struct stat dir_st;
    if (geteuid() != 0 || stat(state_dir, &dir_st) != 0 || dir_st.st_uid == 0)
        return 0;
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        char f[PATH_BYTES + 8];
        snprintf(f, sizeof f, "%s%s", path, suffixes[i]);
        if (chown(f, dir_st.st_uid, dir_st.st_gid) < 0 && errno != ENOENT)
            return err_set(e, ERR_INTERNAL, "store: restore: cannot chown %s: %s", f,
                           strerror(errno));
    }
    if (fchown(lock_fd, dir_st.st_uid, dir_st.st_gid) < 0)
        return err_set(e, ERR_INTERNAL, "store: restore: cannot chown %s: %s", lock,
                       strerror(errno));
    return 0;
}

/* Lock the database at path (open on db) for db alone, until db is closed:
 * 0, or STORE_IN_USE (ERR_USAGE) while another connection, in any process,
 * has it open (a bridge running on it, or a command working on it), or -1.
 * what begins the message. */
static int lock_exclusive(sqlite3 *db, const char *path, const char *what, struct err *e)
{
    int rc = sqlite3_exec(db, "PRAGMA locking_mode = EXCLUSIVE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "BEGIN EXCLUSIVE; COMMIT", NULL, NULL, NULL);
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
        err_set(e, ERR_USAGE, "%s: the database is open in another process (a bridge or a"
                              " command working on it); stop it first: %s", what, path);
        return STORE_IN_USE;
    }
    if (rc != SQLITE_OK)
        return err_set(e, ERR_INTERNAL, "%s: cannot lock %s: %s", what, path, sqlite3_errmsg(db));
    return 0;
}

int store_sqlite_in_use(const char *state_dir, const char *what, struct err *e)
{
    char path[PATH_BYTES];
    if (db_path(state_dir, path, sizeof path, e) < 0)
        return -1;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "%s: cannot open %s: %s", what, path,
                db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_extended_result_codes(db, 1);
    int r = lock_exclusive(db, path, what, e);
    sqlite3_close_v2(db); /* no statement is left: the lock goes with it */
    return r;
}

int store_restore(const char *state_dir, const char *in_path, int *schema_from, struct err *e)
{
    char path[PATH_BYTES], lock[PATH_BYTES];
    sqlite3 *src = NULL, *dst = NULL;
    int lock_fd = -1, r = -1, version = 0;
    if (db_path(state_dir, path, sizeof path, e) < 0)
        return -1;
    if (!in_path || !*in_path)
        return err_set(e, ERR_USAGE, "store: restore: no backup file given");
    int n = snprintf(lock, sizeof lock, "%s/%s", state_dir, STORE_LOCK_FILE);
    if (n < 0 || (size_t)n >= sizeof lock)
        return err_set(e, ERR_LIMIT, "store: state_dir is longer than %d bytes", PATH_BYTES - 32);
    if (check_copy(in_path, &version, e) < 0 || sq_make_dirs(state_dir, e) < 0)
        return -1;

    /* a store restore or migrate working on state_dir holds the lock file ... */
    lock_fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lock_fd < 0)
        return err_set(e, ERR_INTERNAL, "store: restore: cannot open %s: %s", lock,
                       strerror(errno));
    if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        r = errno == EWOULDBLOCK ? STORE_IN_USE : -1;
        err_set(e, r == STORE_IN_USE ? ERR_USAGE : ERR_INTERNAL,
                "store: restore: another store restore or migrate holds " STORE_LOCK_FILE
                " in %s; wait for it to end", state_dir);
        goto out;
    }
    /* ... and any process using the database holds a lock on it: in exclusive
     * locking mode, a transaction that gets the lock keeps it until close, so
     * nothing else opens the database while it is replaced */
    if (sqlite3_open_v2(path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                        SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: restore: cannot open %s: %s", path,
                dst ? sqlite3_errmsg(dst) : "out of memory");
        goto out;
    }
    sqlite3_extended_result_codes(dst, 1);
    int rc = lock_exclusive(dst, path, "store: restore", e);
    if (rc < 0 || rc == STORE_IN_USE) {
        r = rc;
        goto out;
    }
    if (sqlite3_open_v2(in_path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        err_set(e, ERR_USAGE, "store: restore: cannot open %s: %s", in_path,
                src ? sqlite3_errmsg(src) : "out of memory");
        goto out;
    }
    sq_conn_setup(src);
    if (backup_copy(dst, src, "restore", e) < 0)
        goto out;
    sqlite3_close(src);
    src = NULL;
    if (sqlite3_close(dst) != SQLITE_OK) {
        err_set(e, ERR_INTERNAL, "store: restore: cannot close %s: %s", path, sqlite3_errmsg(dst));
        goto out;
    }
    dst = NULL;
    /* WAL on, schema migrated, as a bridge would find it */
    struct store *st = store_sqlite_open(state_dir, e);
    if (!st)
        goto out;
    sq_close(st);
    if (restore_owner(state_dir, path, lock, lock_fd, e) < 0)
        goto out;
    if (schema_from)
        *schema_from = version;
    r = 0;
out:
    sqlite3_close(src);
    sqlite3_close(dst);
    if (lock_fd >= 0)
        close(lock_fd);
    return r;
}

int sq_msgs_each(struct store *st, const char *account, store_msg_cb cb, void *ctx,
                 struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id FROM messages WHERE account = ?1 AND id > ?2"
                           " ORDER BY id LIMIT ?3",
                           -1, &s, NULL) != SQLITE_OK)
        return sq_dberr(st, e, "list messages");
    int64_t ids[STORE_EXPORT_PAGE], after = 0;
    int r = 0;
    for (;;) {
        size_t n = 0;
        sqlite3_reset(s);
        sq_bind_str(s, 1, account);
        sqlite3_bind_int64(s, 2, after);
        sqlite3_bind_int(s, 3, STORE_EXPORT_PAGE);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW)
            ids[n++] = sqlite3_column_int64(s, 0);
        sqlite3_reset(s); /* no read transaction while cb works */
        if (rc != SQLITE_DONE) {
            r = sq_dberr(st, e, "list messages");
            break;
        }
        for (size_t i = 0; i < n && r == 0; i++) {
            struct store_msg_info m;
            int g = sq_msg_get(st, ids[i], &m, e);
            if (g < 0)
                r = -1;
            else if (g == 0 && cb(ctx, &m, e) < 0)
                r = store_cb_stop(e);
        }
        if (r < 0 || n < STORE_EXPORT_PAGE)
            break;
        after = ids[n - 1];
    }
    sqlite3_finalize(s);
    return r;
}
