/* admin — store backup/restore and export; see include/admin.h. */
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "codec.h"
#include "config.h"
#include "daemon.h"
#include "maildir.h"
#include "spool.h"
#include "store.h"

#define MBOX_BUF (64u << 10) /* bytes written to the mbox at a time */

void admin_usage(FILE *out)
{
    fputs("pop3bridge store backup --config FILE OUT    a consistent copy of the state, while it runs\n"
          "pop3bridge store restore --config FILE IN    put a copy back (the bridge stopped)\n"
          "pop3bridge store migrate --config FILE --from sqlite:STATE_DIR\n"
          "                                             copy an SQLite state into the configured\n"
          "                                             PostgreSQL store (nothing is delivered again)\n"
          "pop3bridge export --config FILE ACCOUNT --maildir DIR | --mbox FILE\n"
          "                                             an account's stored messages\n",
          out);
}

static int usage_error(const char *what)
{
    fprintf(stderr, "pop3bridge: Usage: %s (see pop3bridge --help)\n", what);
    return CLI_EXIT_USAGE;
}

static int fail(const struct err *e)
{
    fprintf(stderr, "pop3bridge: %s\n", e->msg);
    return e->kind == ERR_USAGE ? CLI_EXIT_USAGE : CLI_EXIT_LOCAL;
}

/* The configuration, without its secrets but with the store's, its store
 * backend set up; NULL after printing every problem. */
static struct config *load(const char *path)
{
    struct config *cfg = config_load_or_print(path, true, stderr);
    if (cfg) {
        struct config_diag d = {0};
        if (config_resolve_store_secret(cfg, &d) > 0) {
            config_diag_print(&d, stderr);
            config_free(&cfg);
        }
        config_diag_free(&d);
    }
    struct err e;
    err_clear(&e);
    if (cfg && daemon_store_setup(cfg, &e) < 0) {
        fail(&e);
        config_free(&cfg);
    }
    return cfg;
}

/* ---- store backup / restore ------------------------------------------------------- */

/* store migrate --config FILE --from sqlite:DIR */
static int store_migrate_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"from", required_argument, NULL, 'f'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *from = NULL;
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:f:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 'f': from = optarg; break;
        default: return usage_error("unknown or incomplete option");
        }
    }
    if (!path || !from || optind != argc || strncmp(from, "sqlite:", 7) != 0 || !from[7])
        return usage_error("pop3bridge store migrate --config FILE --from sqlite:STATE_DIR");
    struct config *cfg = load(path);
    if (!cfg)
        return CLI_EXIT_USAGE;
    struct err e = {0};
    struct store_migrate_counts n = {0};
    int rc = -1;
    if (!cfg->store.url)
        err_set(&e, ERR_USAGE, "store migrate: %s has no PostgreSQL \"store\" to migrate into",
                path);
    else
        rc = store_migrate_sqlite(from + 7, &n, &e);
    if (rc == 0)
        printf("%s copied into %s: %lld rows, %lld messages, %llu body bytes\n", from + 7,
               store_target_name(), (long long)n.rows, (long long)n.messages,
               (unsigned long long)n.bytes);
    config_free(&cfg);
    store_teardown();
    if (rc == STORE_IN_USE) {
        fail(&e);
        return ADMIN_EXIT_IN_USE;
    }
    return rc == 0 ? 0 : fail(&e);
}

int admin_store_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    if (argc >= 2 && strcmp(argv[1], "migrate") == 0)
        return store_migrate_main(argc - 1, argv + 1);
    if (argc < 2 || (strcmp(argv[1], "backup") != 0 && strcmp(argv[1], "restore") != 0))
        return usage_error("pop3bridge store backup|restore|migrate --config FILE ...");
    bool backup = strcmp(argv[1], "backup") == 0;
    const char *path = NULL;
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc - 1, argv + 1, "c:", longopts, NULL)) != -1) {
        if (ch != 'c')
            return usage_error("unknown or incomplete option");
        path = optarg;
    }
    if (!path || optind != argc - 2)
        return usage_error(backup ? "pop3bridge store backup --config FILE OUT"
                                  : "pop3bridge store restore --config FILE IN");
    const char *file = argv[1 + optind];
    struct config *cfg = load(path); /* no secrets but the store's */
    if (!cfg)
        return CLI_EXIT_USAGE;
    struct err e = {0};
    int rc;
    if (cfg->store.url) {
        err_set(&e, ERR_USAGE, "store %s works on an SQLite state; this configuration's state is"
                               " in PostgreSQL (%s): use pg_dump / pg_restore",
                argv[1], store_target_name());
        rc = -1;
    } else if (backup) {
        uint64_t bytes = 0;
        rc = store_backup(cfg->state_dir, file, &bytes, &e);
        if (rc == 0)
            printf("backup of %s written to %s (%llu bytes)\n", cfg->state_dir, file,
                   (unsigned long long)bytes);
    } else {
        int from = 0;
        rc = store_restore(cfg->state_dir, file, &from, &e);
        if (rc == 0)
            printf("%s restored into %s (schema %d, now %d)\n", file, cfg->state_dir, from,
                   STORE_SCHEMA_VERSION);
    }
    config_free(&cfg);
    if (rc == STORE_IN_USE) {
        fail(&e);
        return ADMIN_EXIT_IN_USE;
    }
    return rc == 0 ? 0 : fail(&e);
}

/* ---- export ------------------------------------------------------------------------ */

struct mbox {
    int fd;
    const char *path;
    unsigned char buf[MBOX_BUF];
    size_t n;
    bool failed;
    int err;
    /* the line being read: at its start, '>'s and how much of "From " so far */
    bool matching;
    uint64_t gt;
    int from;
    bool cr;    /* a CR waiting to see whether LF follows */
    int last;   /* the last byte written, -1 at the start */
};

static void mb_flush(struct mbox *m)
{
    if (!m->failed && spool_write_all(m->fd, m->buf, m->n) < 0) {
        m->failed = true;
        m->err = errno;
    }
    m->n = 0;
}

static void mb_put(struct mbox *m, int c)
{
    if (m->n == sizeof m->buf)
        mb_flush(m);
    m->buf[m->n++] = (unsigned char)c;
    m->last = c;
}

static void mb_puts(struct mbox *m, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        mb_put(m, s[i]);
}

/* What was held back at a line's start, as it was. */
static void mb_release(struct mbox *m)
{
    for (uint64_t i = 0; i < m->gt; i++)
        mb_put(m, '>');
    mb_puts(m, "From ", (size_t)m->from);
    m->matching = false;
    m->gt = 0;
    m->from = 0;
}

static void mb_byte(struct mbox *m, int c)
{
    if (m->matching) {
        if (m->from == 0 && c == '>') {
            m->gt++;
            return;
        }
        if (c == "From "[m->from]) {
            if (++m->from == 5) { /* ">*From ": quoted with one more '>' (mboxrd) */
                mb_put(m, '>');
                mb_release(m);
            }
            return;
        }
        mb_release(m);
    }
    if (m->cr) {
        m->cr = false;
        if (c == '\n') {
            mb_put(m, '\n');
            m->matching = true;
            return;
        }
        mb_put(m, '\r'); /* a lone CR stays */
    }
    if (c == '\r') {
        m->cr = true;
        return;
    }
    mb_put(m, c);
    if (c == '\n')
        m->matching = true;
}

static void mb_begin(struct mbox *m, int64_t stored_at_ms)
{
    time_t t = (time_t)(stored_at_ms / 1000);
    struct tm tm;
    char date[64];
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm);
    char line[128];
    int n = snprintf(line, sizeof line, "From MAILER-DAEMON %s\n", date);
    mb_puts(m, line, (size_t)n);
    m->matching = true;
    m->gt = 0;
    m->from = 0;
    m->cr = false;
}

static void mb_end(struct mbox *m)
{
    if (m->matching)
        mb_release(m);
    if (m->cr) {
        mb_put(m, '\r');
        m->cr = false;
    }
    if (m->last != '\n')
        mb_put(m, '\n');
    mb_put(m, '\n');
}

struct export {
    const char *account;
    struct store *st;
    struct maildir *md;
    struct mbox *mb;
    EVP_MD_CTX *sha;
    uint64_t written, already, purged, too_large;
};

static int sink(void *ctx, const void *data, size_t len, struct err *e)
{
    struct export *x = ctx;
    EVP_DigestUpdate(x->sha, data, len);
    if (x->md)
        return maildir_write(x->md, data, len, e);
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        mb_byte(x->mb, p[i]);
    if (x->mb->failed)
        return err_set(e, ERR_INTERNAL, "cannot write %s: %s", x->mb->path,
                       strerror(x->mb->err));
    return 0;
}

static int one(void *ctx, const struct store_msg_info *m, struct err *e)
{
    struct export *x = ctx;
    if (strcmp(m->kind, STORE_KIND_MESSAGE) != 0) {
        x->too_large++;
        return 0;
    }
    if (m->body_purged_at) {
        x->purged++;
        return 0;
    }
    char key[MAILDIR_KEY_LEN + 1];
    if (x->md) {
        maildir_key(x->account, m->uidl, key);
        if (maildir_has(x->md, key)) {
            x->already++;
            return 0;
        }
        if (maildir_begin(x->md, key, e) < 0)
            return -1;
    } else {
        mb_begin(x->mb, m->received_at);
    }
    if (EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL) != 1)
        return err_set(e, ERR_INTERNAL, "SHA-256 is not available");
    int r = store_msg_stream(x->st, m->id, sink, x, e);
    if (r == STORE_NOTFOUND) { /* purged meanwhile */
        if (x->md)
            maildir_abort(x->md);
        x->purged++;
        return 0;
    }
    unsigned char digest[32];
    char hex[65];
    unsigned dlen = 0;
    if (r == 0) {
        EVP_DigestFinal_ex(x->sha, digest, &dlen);
        codec_hex_encode(digest, 32, hex);
        if (strcmp(hex, m->sha256) != 0) {
            char id[STORE_ID_MAX];
            r = err_set(e, ERR_INTERNAL, "message %s (UIDL %.80s): its bytes do not match the"
                                         " SHA-256 recorded when it was stored",
                        store_msg_id_format(m->id, id), m->uidl);
        }
    }
    if (r < 0) {
        if (x->md)
            maildir_abort(x->md);
        return -1;
    }
    if (x->md && maildir_commit(x->md, e) < 0)
        return -1;
    if (x->mb)
        mb_end(x->mb);
    x->written++;
    return 0;
}

/* A new file for the mbox, beside path; its name in tmp. */
static int mbox_open(const char *path, char *tmp, size_t size, struct err *e)
{
    int n = snprintf(tmp, size, "%s.tmp-%d", path, (int)getpid());
    if (n < 0 || (size_t)n >= size)
        return err_set(e, ERR_LIMIT, "the mbox path is longer than %zu bytes", size - 16);
    if (access(path, F_OK) == 0)
        return err_set(e, ERR_USAGE, "%s exists: export writes a new mbox", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set(e, ERR_INTERNAL, "cannot create %s: %s", tmp, strerror(errno));
    return fd;
}

/* Make the mbox durable and give it its name (never over an existing file). */
static int mbox_close(struct mbox *m, const char *tmp, struct err *e)
{
    mb_flush(m);
    if (m->failed)
        return err_set(e, ERR_INTERNAL, "cannot write %s: %s", tmp, strerror(m->err));
    if (fsync(m->fd) < 0)
        return err_set(e, ERR_INTERNAL, "cannot fsync %s: %s", tmp, strerror(errno));
    if (link(tmp, m->path) < 0)
        return err_set(e, errno == EEXIST ? ERR_USAGE : ERR_INTERNAL, "cannot name %s %s: %s",
                       tmp, m->path, strerror(errno));
    unlink(tmp);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", m->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        int er = errno;
        if (dfd >= 0)
            close(dfd);
        return err_set(e, ERR_INTERNAL, "cannot fsync the directory of %s: %s", m->path,
                       strerror(er));
    }
    close(dfd);
    return 0;
}

static bool account_known(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->account_count; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            return true;
    return false;
}

static int count_one(void *ctx, const struct store_msg_info *m, struct err *e)
{
    (void)m;
    (void)e;
    (*(uint64_t *)ctx)++;
    return -1; /* one is enough */
}

int admin_export_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"maildir", required_argument, NULL, 'd'},
        {"mbox", required_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL, *maildir = NULL, *mbox = NULL;
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 'd': maildir = optarg; break;
        case 'm': mbox = optarg; break;
        default: return usage_error("unknown or incomplete option");
        }
    }
    if (!path || optind != argc - 1 || !maildir == !mbox)
        return usage_error("pop3bridge export --config FILE ACCOUNT --maildir DIR | --mbox FILE");
    const char *account = argv[optind];
    struct config *cfg = load(path); /* no secrets but the store's */
    if (!cfg)
        return CLI_EXIT_USAGE;
    struct err e = {0};
    struct mbox *mb = NULL;
    char tmp[4096] = "";
    int rc = -1;
    struct export x = {.account = account};
    x.st = store_open(cfg->state_dir, &e);
    if (!x.st)
        goto out;
    if (!account_known(cfg, account)) {
        uint64_t any = 0;
        store_msgs_each(x.st, account, count_one, &any, &e);
        err_clear(&e);
        if (!any) {
            err_set(&e, ERR_USAGE, "no account \"%.64s\" in %s, and nothing stored for it",
                    account, path);
            goto out;
        }
    }
    x.sha = EVP_MD_CTX_new();
    if (!x.sha) {
        err_set(&e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (maildir) {
        x.md = maildir_open(maildir, &e);
        if (!x.md)
            goto out;
    } else {
        mb = calloc(1, sizeof *mb);
        if (!mb) {
            err_set(&e, ERR_INTERNAL, "out of memory");
            goto out;
        }
        mb->path = mbox;
        mb->last = -1;
        mb->fd = mbox_open(mbox, tmp, sizeof tmp, &e);
        if (mb->fd < 0) {
            tmp[0] = '\0';
            goto out;
        }
        x.mb = mb;
    }
    if (store_msgs_each(x.st, account, one, &x, &e) < 0)
        goto out;
    if (x.md && maildir_sync(x.md, &e) < 0)
        goto out;
    if (x.mb && mbox_close(x.mb, tmp, &e) < 0)
        goto out;
    tmp[0] = '\0';
    printf("exported %llu message%s of %s to %s (%llu already there, %llu purged, %llu too"
           " large: not exported)\n",
           (unsigned long long)x.written, x.written == 1 ? "" : "s", account,
           maildir ? maildir : mbox, (unsigned long long)x.already,
           (unsigned long long)x.purged, (unsigned long long)x.too_large);
    rc = 0;
out:
    if (mb && mb->fd >= 0)
        close(mb->fd);
    if (tmp[0])
        unlink(tmp);
    free(mb);
    maildir_close(&x.md);
    EVP_MD_CTX_free(x.sha);
    store_close(x.st);
    config_free(&cfg);
    return rc == 0 ? 0 : fail(&e);
}
