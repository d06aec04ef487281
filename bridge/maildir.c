/* maildir — see include/maildir.h. */
#include "maildir.h"

#include "codec.h"
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define MAILDIR_PATH_MAX 4096

struct maildir {
    char *path;
    char **keys;      /* sorted */
    size_t n_keys, cap_keys;
    int fd;           /* current tmp file, -1 if none */
    char name[512];
    char host[128];
    unsigned seq;
    unsigned long long written;
    int tmp_fd, new_fd; /* tmp/ and new/, so each message costs no path walks */
    int pid;
};

static int sys_err(struct err *e, const char *what, const char *path)
{
    return err_set(e, ERR_INTERNAL, "%s %s: %s", what, path, strerror(errno));
}

/* An error about the message file being written in tmp/ (errno kept). */
static int tmp_err(const struct maildir *md, struct err *e, const char *what)
{
    return err_set(e, ERR_INTERNAL, "%s %s/tmp/%s: %s", what, md->path, md->name,
                   strerror(errno));
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_key(struct maildir *md, const char *key)
{
    if (md->n_keys == md->cap_keys) {
        size_t cap = md->cap_keys ? md->cap_keys * 2 : 256;
        char **k = realloc(md->keys, cap * sizeof *k);
        if (!k)
            return -1;
        md->keys = k;
        md->cap_keys = cap;
    }
    md->keys[md->n_keys] = strndup(key, MAILDIR_KEY_LEN);
    if (!md->keys[md->n_keys])
        return -1;
    md->n_keys++;
    return 0;
}

static int index_dir(struct maildir *md, const char *sub, struct err *e)
{
    char dpath[MAILDIR_PATH_MAX];
    if (snprintf(dpath, sizeof dpath, "%s/%s", md->path, sub) >= (int)sizeof dpath)
        return err_set(e, ERR_INTERNAL, "Maildir path too long: %s", md->path);
    DIR *d = opendir(dpath);
    if (!d)
        return sys_err(e, "cannot read", dpath);
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *u = strstr(de->d_name, ",U=");
        if (!u || strspn(u + 3, "0123456789abcdef") < MAILDIR_KEY_LEN)
            continue;
        if (add_key(md, u + 3) < 0) {
            closedir(d);
            return err_set(e, ERR_INTERNAL, "out of memory");
        }
    }
    closedir(d);
    return 0;
}

static int mkdir_p(const char *path, struct err *e)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return sys_err(e, "cannot create", path);
    return 0;
}

struct maildir *maildir_open(const char *path, struct err *e)
{
    struct maildir *md = calloc(1, sizeof *md);
    if (!md || !(md->path = strdup(path))) {
        free(md);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    md->fd = md->tmp_fd = md->new_fd = -1;
    size_t pl = strlen(md->path);
    while (pl > 1 && md->path[pl - 1] == '/')
        md->path[--pl] = '\0';
    if (gethostname(md->host, sizeof md->host) < 0 || !md->host[0])
        snprintf(md->host, sizeof md->host, "localhost");
    md->host[sizeof md->host - 1] = '\0';
    for (char *c = md->host; *c; c++)
        if (*c == '/' || *c == ':' || *c == ',')
            *c = '_';
    static const char *subs[] = {"tmp", "new", "cur"};
    char sub[MAILDIR_PATH_MAX];
    if (mkdir_p(md->path, e) < 0)
        goto fail;
    for (size_t i = 0; i < 3; i++) {
        if (snprintf(sub, sizeof sub, "%s/%s", md->path, subs[i]) >= (int)sizeof sub) {
            err_set(e, ERR_INTERNAL, "Maildir path too long: %s", md->path);
            goto fail;
        }
        if (mkdir_p(sub, e) < 0)
            goto fail;
    }
    if (index_dir(md, "new", e) < 0 || index_dir(md, "cur", e) < 0)
        goto fail;
    static const char *const dirs[] = {"tmp", "new"};
    int *fds[] = {&md->tmp_fd, &md->new_fd};
    for (size_t i = 0; i < 2; i++) {
        if (snprintf(sub, sizeof sub, "%s/%s", md->path, dirs[i]) >= (int)sizeof sub) {
            err_set(e, ERR_INTERNAL, "Maildir path too long: %s", md->path);
            goto fail;
        }
        if ((*fds[i] = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
            sys_err(e, "cannot open", sub);
            goto fail;
        }
    }
    md->pid = (int)getpid();
    if (md->n_keys)
        qsort(md->keys, md->n_keys, sizeof *md->keys, cmp_key);
    return md;
fail:
    maildir_close(&md);
    return NULL;
}

void maildir_close(struct maildir **mdp)
{
    if (!mdp || !*mdp)
        return;
    struct maildir *md = *mdp;
    maildir_abort(md);
    if (md->tmp_fd >= 0)
        close(md->tmp_fd);
    if (md->new_fd >= 0)
        close(md->new_fd);
    for (size_t i = 0; i < md->n_keys; i++)
        free(md->keys[i]);
    free(md->keys);
    free(md->path);
    free(md);
    *mdp = NULL;
}

void maildir_key(const char *source, const char *uidl, char key[MAILDIR_KEY_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, source, strlen(source) + 1);
    EVP_DigestUpdate(c, uidl, strlen(uidl));
    EVP_DigestFinal_ex(c, md, &mdlen);
    EVP_MD_CTX_free(c);
    codec_hex_encode(md, MAILDIR_KEY_LEN / 2, key);
}

bool maildir_has(const struct maildir *md, const char *key)
{
    const char *k = key;
    return md->n_keys && bsearch(&k, md->keys, md->n_keys, sizeof *md->keys, cmp_key) != NULL;
}

int maildir_begin(struct maildir *md, const char *key, struct err *e)
{
    maildir_abort(md);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int n = snprintf(md->name, sizeof md->name, "%lld.M%06ldP%dQ%u.%s,U=%s", (long long)tv.tv_sec,
                     (long)tv.tv_usec, md->pid, ++md->seq, md->host, key);
    if (n < 0 || (size_t)n >= sizeof md->name)
        return err_set(e, ERR_INTERNAL, "Maildir file name too long");
    md->fd = openat(md->tmp_fd, md->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (md->fd < 0)
        return tmp_err(md, e, "cannot create");
    md->written = 0;
    return 0;
}

int maildir_write(struct maildir *md, const void *buf, size_t len, struct err *e)
{
    if (spool_write_all(md->fd, buf, len) < 0)
        return tmp_err(md, e, "cannot write");
    md->written += (unsigned long long)len;
    return 0;
}

int maildir_commit(struct maildir *md, struct err *e)
{
    char dst[MAILDIR_PATH_MAX];
    if (md->fd < 0)
        return err_set(e, ERR_INTERNAL, "no message in progress");
    if (fsync(md->fd) < 0) {
        tmp_err(md, e, "cannot fsync");
        maildir_abort(md);
        return -1;
    }
    if (close(md->fd) < 0) {
        md->fd = -1;
        tmp_err(md, e, "cannot close");
        unlinkat(md->tmp_fd, md->name, 0);
        return -1;
    }
    md->fd = -1;
    /* ",S=<size>" lets Dovecot and others skip a stat */
    if (snprintf(dst, sizeof dst, "%s,S=%llu", md->name, md->written) >= (int)sizeof dst ||
        renameat(md->tmp_fd, md->name, md->new_fd, dst) < 0) {
        tmp_err(md, e, "cannot move into new/");
        unlinkat(md->tmp_fd, md->name, 0);
        return -1;
    }
    return 0;
}

void maildir_abort(struct maildir *md)
{
    if (md->fd >= 0) {
        close(md->fd);
        md->fd = -1;
        unlinkat(md->tmp_fd, md->name, 0);
    }
}

int maildir_sync(struct maildir *md, struct err *e)
{
    if (fsync(md->new_fd) < 0)
        return err_set(e, ERR_INTERNAL, "cannot fsync %s/new: %s", md->path, strerror(errno));
    return 0;
}
