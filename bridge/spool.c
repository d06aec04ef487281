/* spool — see include/spool.h. */
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int spool_tmpfile(const char *dir, struct err *e)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
        /* a file system without O_TMPFILE: a named file, removed at once */
        char path[SPOOL_PATH_MAX];
        int n = snprintf(path, sizeof path, "%s/.spool-XXXXXX", dir);
        if (n > 0 && (size_t)n < sizeof path && (fd = mkostemp(path, O_CLOEXEC)) >= 0)
            unlink(path);
    }
    if (fd < 0)
        err_set(e, ERR_INTERNAL, "cannot create a temporary file in %s: %s", dir,
                strerror(errno));
    return fd;
}

int spool_write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) { /* no progress: give up rather than spin */
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void spool_init(struct spool *s, const char *dir, size_t mem_max, uint64_t cap)
{
    memset(s, 0, sizeof *s);
    s->dir = dir;
    s->mem_max = mem_max;
    s->cap = cap;
    s->fd = -1;
}

static int to_file(struct spool *s, struct err *e)
{
    s->fd = spool_tmpfile(s->dir, e);
    if (s->fd < 0)
        return -1;
    if (spool_write_all(s->fd, s->mem ? s->mem : "", s->len) < 0)
        return err_set(e, ERR_INTERNAL, "spool file in %s: %s", s->dir, strerror(errno));
    free(s->mem);
    s->mem = NULL;
    s->len = s->alloc = 0;
    return 0;
}

static int grow(struct spool *s, size_t need, struct err *e)
{
    size_t alloc = s->alloc ? s->alloc : 16384;
    while (alloc < need)
        alloc *= 2;
    char *p = realloc(s->mem, alloc);
    if (!p)
        return err_set(e, ERR_INTERNAL, "out of memory spooling %zu bytes", need);
    s->mem = p;
    s->alloc = alloc;
    return 0;
}

int spool_write(struct spool *s, const void *data, size_t len, struct err *e)
{
    if (s->cap && s->size + len > s->cap)
        len = s->size >= s->cap ? 0 : (size_t)(s->cap - s->size);
    if (!len)
        return 0;
    if (s->fd < 0 && s->dir && s->len + len > s->mem_max && to_file(s, e) < 0)
        return -1;
    if (s->fd >= 0) {
        if (spool_write_all(s->fd, data, len) < 0)
            return err_set(e, ERR_INTERNAL, "spool file in %s: %s", s->dir, strerror(errno));
    } else {
        if (s->len + len + 1 > s->alloc && grow(s, s->len + len + 1, e) < 0)
            return -1;
        memcpy(s->mem + s->len, data, len);
        s->len += len;
        s->mem[s->len] = '\0';
    }
    s->size += len;
    return 0;
}

void spool_free(struct spool *s)
{
    if (!s)
        return;
    free(s->mem);
    s->mem = NULL;
    s->len = s->alloc = 0;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->size = 0;
}

int spool_take(struct spool *s, struct spool_content *out, struct err *e)
{
    out->mem = NULL;
    out->len = 0;
    out->fd = -1;
    out->size = s->size;
    if (s->fd >= 0) {
        out->fd = s->fd;
        s->fd = -1;
    } else {
        out->mem = s->mem ? s->mem : strdup("");
        if (!out->mem) {
            spool_free(s);
            return err_set(e, ERR_INTERNAL, "out of memory");
        }
        out->len = s->len;
        s->mem = NULL;
    }
    spool_free(s);
    return 0;
}
