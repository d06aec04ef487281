/* event — see include/event.h. */
#include "event.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jsonw.h"
#include "message.h"

char *event_time(int64_t ms, char *buf, size_t size)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    if (snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (int)(ms % 1000)) >= (int)size &&
        size)
        buf[size - 1] = '\0';
    return buf;
}

struct membuf {
    char *p;
    size_t len, cap;
};

static int mem_sink(void *ctx, const void *data, size_t len, struct err *e)
{
    struct membuf *m = ctx;
    if (m->len + len > m->cap) {
        size_t cap = (m->len + len) * 2;
        char *p = realloc(m->p, cap);
        if (!p)
            return err_set(e, ERR_INTERNAL, "out of memory reading a stored message");
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->len, data, len);
    m->len += len;
    return 0;
}

static int fd_sink(void *ctx, const void *data, size_t len, struct err *e)
{
    int fd = *(int *)ctx;
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return err_set(e, ERR_INTERNAL, "spooling a stored message: %s", strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* An unlinked file in dir, mode 0600: O_TMPFILE, or where the file system
 * lacks it, a named file removed at once. */
static int open_tmp(const char *dir, struct err *e)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/.event-XXXXXX", dir);
        if (n > 0 && (size_t)n < sizeof path && (fd = mkostemp(path, O_CLOEXEC)) >= 0)
            unlink(path);
    }
    if (fd < 0)
        err_set(e, ERR_INTERNAL, "cannot create a temporary file in %s: %s", dir, strerror(errno));
    return fd;
}

void event_opts_account(struct event_opts *o, const struct config_account *a)
{
    o->trusted_authserv_ids = a ? (const char *const *)a->trusted_authserv_ids : NULL;
    o->trusted_authserv_id_count = a ? a->trusted_authserv_id_count : 0;
    o->address = a ? a->address : NULL;
}

static cJSON *message_obj(struct store *st, const char *tmp_dir, int64_t id,
                          const struct event_opts *eo, struct store_msg_info *info_out,
                          struct err *e)
{
    struct store_msg_info info;
    int r = store_msg_get(st, id, &info, e);
    if (r < 0)
        return NULL;
    if (r == STORE_NOTFOUND || info.body_purged_at) {
        err_set(e, ERR_USAGE, "no such message (or its body was purged)");
        return NULL;
    }
    if (info_out)
        *info_out = info;
    char idbuf[STORE_ID_MAX], when[40];
    unsigned char link_key[STORE_LINK_KEY_LEN];
    int64_t now_s = (int64_t)time(NULL);
    bool signed_links = eo->public_url && eo->links_ttl_ms > 0;
    if (signed_links && store_link_key(st, link_key, NULL, now_s, e) < 0)
        return NULL;
    struct message_opts o = {
        .id = store_msg_id_format(id, idbuf),
        .uidl = info.uidl,
        .received_at = event_time(info.received_at, when, sizeof when),
        .public_url = eo->public_url,
        .sha256_hex = info.sha256,
        .inline_max = eo->inline_max,
        .inline_total_max = eo->inline_total_max ? eo->inline_total_max
                                                 : MESSAGE_INLINE_TOTAL_DEFAULT,
        .trusted_authserv_ids = eo->trusted_authserv_ids,
        .trusted_authserv_id_count = eo->trusted_authserv_id_count,
        .address = eo->address,
        .link_key = signed_links ? link_key : NULL,
        .link_key_len = signed_links ? sizeof link_key : 0,
        .link_exp = now_s + eo->links_ttl_ms / 1000,
    };
    bool too_large = strcmp(info.kind, STORE_KIND_TOO_LARGE) == 0;
    cJSON *m = NULL;
    if (info.size <= EVENT_MEM_MAX) {
        struct membuf mb = {0};
        r = store_msg_stream(st, id, mem_sink, &mb, e);
        if (r == 0)
            m = message_to_json(mb.p ? mb.p : "", mb.len, &o, e);
        else if (r == STORE_NOTFOUND)
            err_set(e, ERR_USAGE, "no such message (or its body was purged)");
        free(mb.p);
    } else {
        int fd = open_tmp(tmp_dir, e);
        if (fd < 0)
            return NULL;
        r = store_msg_stream(st, id, fd_sink, &fd, e);
        if (r == 0)
            m = message_to_json_fd(fd, &o, e);
        else if (r == STORE_NOTFOUND)
            err_set(e, ERR_USAGE, "no such message (or its body was purged)");
        close(fd);
    }
    OPENSSL_cleanse(link_key, sizeof link_key);
    if (m && too_large) {
        /* what is stored is the header only; describe the real message */
        cJSON_ReplaceItemInObject(m, "size", cJSON_CreateNumber((double)info.declared_size));
        cJSON_ReplaceItemInObject(m, "sha256", cJSON_CreateNull());
        cJSON_ReplaceItemInObject(m, "raw_url", cJSON_CreateNull());
        cJSON_AddTrueToObject(m, "too_large");
    }
    return m;
}

cJSON *event_message(struct store *st, const char *tmp_dir, int64_t id, const struct event_opts *o,
                     struct store_msg_info *info, struct err *e)
{
    return message_obj(st, tmp_dir, id, o, info, e);
}

struct spool_out {
    int fd;
    event_tap_fn tap;
    void *tap_ctx;
};

static int spool_sink(void *ctx, const void *data, size_t len, struct err *e)
{
    struct spool_out *o = ctx;
    if (o->tap && o->tap(o->tap_ctx, data, len) != 0)
        return err_set(e, ERR_INTERNAL, "writing the event: its reader (the signature) failed");
    const char *p = data;
    while (len) {
        ssize_t w = write(o->fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return err_set(e, ERR_INTERNAL, "writing the event to a temporary file: %s",
                           strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int event_spool(struct store *st, const char *tmp_dir, int64_t id, const struct event_opts *o,
                event_tap_fn tap, void *tap_ctx, int *fd_out, uint64_t *len, struct err *e)
{
    *fd_out = -1;
    *len = 0;
    struct store_msg_info info;
    cJSON *m = message_obj(st, tmp_dir, id, o, &info, e);
    if (!m)
        return -1;
    int rc = -1, fd = -1;
    char when[40];
    cJSON *ev = cJSON_CreateObject();
    cJSON *data = ev ? cJSON_CreateObject() : NULL;
    if (!ev || !data) {
        cJSON_Delete(data);
        cJSON_Delete(m);
        err_set(e, ERR_INTERNAL, "out of memory building an event");
        goto out;
    }
    bool too_large = strcmp(info.kind, STORE_KIND_TOO_LARGE) == 0;
    int64_t now = o->now_ms;
    if (now <= 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    const char *type = too_large                                     ? "message.too_large"
                       : cJSON_IsObject(cJSON_GetObjectItem(m, "bounce")) ? "message.bounce"
                                                                          : "message.received";
    bool built = cJSON_AddStringToObject(ev, "type", type) &&
                 cJSON_AddStringToObject(ev, "timestamp", event_time(now, when, sizeof when)) &&
                 cJSON_AddStringToObject(data, "account", info.account);
    if (!built || !cJSON_AddItemToObject(data, "message", m)) {
        cJSON_Delete(m);
        built = false;
    }
    if (!built || !cJSON_AddItemToObject(ev, "data", data)) {
        cJSON_Delete(data);
        err_set(e, ERR_INTERNAL, "out of memory building an event");
        goto out;
    }
    fd = open_tmp(tmp_dir, e);
    if (fd < 0)
        goto out;
    struct spool_out so = {fd, tap, tap_ctx};
    if (jsonw_write(ev, spool_sink, &so, len, e) < 0)
        goto out;
    *fd_out = fd;
    fd = -1;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    cJSON_Delete(ev);
    return rc;
}
