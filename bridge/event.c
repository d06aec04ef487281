/* event — see include/event.h. */
#include "event.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "jsonw.h"
#include "message.h"
#include "spool.h"

static int fd_sink(void *ctx, const void *data, size_t len, struct err *e)
{
    if (spool_write_all(*(int *)ctx, data, len) < 0)
        return err_set(e, ERR_INTERNAL, "spooling a stored message: %s", strerror(errno));
    return 0;
}

void event_opts_account(struct event_opts *o, const struct config_account *a)
{
    o->trusted_authserv_ids = a ? (const char *const *)a->trusted_authserv_ids : NULL;
    o->trusted_authserv_id_count = a ? a->trusted_authserv_id_count : 0;
    o->address = a ? a->address : NULL;
}

/* Message id's row, its body when small enough for memory (else *body
 * NULL: stream it) and the link key: what was read ahead (eo->loaded), or
 * all in one read now.  As store_msg_load. */
static int load(struct store *st, int64_t id, const struct event_opts *eo,
                struct store_msg_info *info, char **body, size_t *body_len,
                unsigned char *link_key, int64_t now_s, struct err *e)
{
    struct store_loaded *l = eo->loaded;
    if (!l || l->id != id || (link_key && !eo->loaded_key) ||
        (l->result == 0 && !l->body && !l->info.body_purged_at && l->info.size <= EVENT_MEM_MAX))
        return store_msg_load(st, id, info, EVENT_MEM_MAX, body, body_len, link_key, now_s, e);
    if (l->result == 0) {
        *info = l->info;
        *body = l->body;
        *body_len = l->body_len;
        l->body = NULL;
        l->body_len = 0;
    }
    if (link_key)
        memcpy(link_key, eo->loaded_key, STORE_LINK_KEY_LEN);
    return l->result;
}

static cJSON *message_obj(struct store *st, const char *tmp_dir, int64_t id,
                          const struct event_opts *eo, struct store_msg_info *info_out,
                          struct err *e)
{
    struct store_msg_info info;
    char idbuf[STORE_ID_MAX], when[CLOCK_RFC3339_SIZE];
    unsigned char link_key[STORE_LINK_KEY_LEN];
    int64_t now_s = (int64_t)time(NULL);
    bool signed_links = eo->public_url && eo->links_ttl_ms > 0;
    /* the row, a body small enough for memory and the link key in one read */
    char *body = NULL;
    size_t body_len = 0;
    int r = load(st, id, eo, &info, &body, &body_len, signed_links ? link_key : NULL, now_s, e);
    if (r < 0)
        return NULL;
    if (r == STORE_NOTFOUND || info.body_purged_at) {
        free(body);
        err_set(e, ERR_USAGE, "no such message (or its body was purged)");
        return NULL;
    }
    if (info_out)
        *info_out = info;
    struct message_opts o = {
        .id = store_msg_id_format(id, idbuf),
        .uidl = info.uidl,
        .received_at = clock_rfc3339(info.received_at, 1, when, sizeof when),
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
    if (body) {
        m = message_to_json(body, body_len, &o, e);
        free(body);
    } else {
        int fd = spool_tmpfile(tmp_dir, e);
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
    if (spool_write_all(o->fd, data, len) < 0)
        return err_set(e, ERR_INTERNAL, "writing the event to a temporary file: %s",
                       strerror(errno));
    return 0;
}

/* ev written as JSON into a new temporary file (through tap): *fd_out at
 * its end, *len its octets. */
static int write_event(const cJSON *ev, const char *tmp_dir, event_tap_fn tap, void *tap_ctx,
                       int *fd_out, uint64_t *len, struct err *e)
{
    int fd = spool_tmpfile(tmp_dir, e);
    if (fd < 0)
        return -1;
    struct spool_out so = {fd, tap, tap_ctx};
    if (jsonw_write(ev, spool_sink, &so, len, e) < 0) {
        close(fd);
        return -1;
    }
    *fd_out = fd;
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
    event_shape(m, o->payload);
    int rc = -1;
    char when[CLOCK_RFC3339_SIZE];
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
    if (now <= 0)
        now = clock_wall_ms();
    const char *type = too_large                                     ? "message.too_large"
                       : cJSON_IsObject(cJSON_GetObjectItem(m, "bounce")) ? "message.bounce"
                                                                          : "message.received";
    bool built = cJSON_AddStringToObject(ev, "type", type) &&
                 cJSON_AddStringToObject(ev, "timestamp", clock_rfc3339(now, 1, when, sizeof when)) &&
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
    rc = write_event(ev, tmp_dir, tap, tap_ctx, fd_out, len, e);
out:
    cJSON_Delete(ev);
    return rc;
}

int event_spool_stored(struct store *st, const char *tmp_dir, int64_t event_id, int64_t now_ms,
                       event_tap_fn tap, void *tap_ctx, int *fd_out, uint64_t *len, struct err *e)
{
    *fd_out = -1;
    *len = 0;
    struct store_event ev;
    char *text = NULL;
    int g = store_event_get(st, event_id, &ev, &text, e);
    if (g == STORE_NOTFOUND)
        return err_set(e, ERR_USAGE, "no such event");
    if (g < 0)
        return -1;
    cJSON *data = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(data)) {
        cJSON_Delete(data);
        return err_set(e, ERR_USAGE, "the stored data of event %lld is not a JSON object",
                       (long long)event_id);
    }
    int rc = -1;
    char when[40];
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "type", ev.type) ||
        !cJSON_AddStringToObject(o, "timestamp", clock_rfc3339(now_ms, 1, when, sizeof when)) ||
        !cJSON_AddItemToObject(o, "data", data)) {
        if (!cJSON_GetObjectItem(o, "data"))
            cJSON_Delete(data);
        err_set(e, ERR_INTERNAL, "out of memory building an event");
        goto out;
    }
    rc = write_event(o, tmp_dir, tap, tap_ctx, fd_out, len, e);
out:
    cJSON_Delete(o);
    return rc;
}

/* ---- payload shaping ---------------------------------------------------------------- */

static bool included(const struct config_payload *p, enum config_include what)
{
    for (size_t i = 0; i < p->include_count; i++)
        if (p->include[i] == (int)what)
            return true;
    return false;
}

static void set_field(cJSON *msg, const char *name, cJSON *v)
{
    if (!v)
        return;
    if (cJSON_GetObjectItemCaseSensitive(msg, name))
        cJSON_ReplaceItemInObjectCaseSensitive(msg, name, v);
    else
        cJSON_Delete(v);
}

/* Cut a string field to max bytes on a character boundary; true if cut. */
static bool cut(cJSON *msg, const char *name, uint64_t max)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(msg, name);
    if (!cJSON_IsString(v) || strlen(v->valuestring) <= max)
        return false;
    size_t n = (size_t)max;
    while (n > 0 && ((unsigned char)v->valuestring[n] & 0xC0) == 0x80)
        n--; /* the cut falls inside a character: before it */
    char *s = strndup(v->valuestring, n);
    if (!s)
        return false;
    set_field(msg, name, cJSON_CreateString(s));
    free(s);
    return true;
}

static bool header_wanted(const struct config_payload *p, const char *name)
{
    for (size_t i = 0; i < p->header_count; i++)
        if (strcasecmp(p->headers[i], name) == 0)
            return true;
    return false;
}

void event_shape(cJSON *msg, const struct config_payload *p)
{
    if (!msg || !p || !p->present)
        return;
    if (!included(p, CONFIG_INC_TEXT))
        set_field(msg, "text", cJSON_CreateNull());
    if (!included(p, CONFIG_INC_HTML))
        set_field(msg, "html", cJSON_CreateNull());
    if (!included(p, CONFIG_INC_RAW_URL))
        set_field(msg, "raw_url", cJSON_CreateNull());
    if (!included(p, CONFIG_INC_ATTACHMENTS))
        set_field(msg, "attachments", cJSON_CreateArray());
    bool all = p->header_count == 1 && strcmp(p->headers[0], "all") == 0;
    bool none = p->header_count == 1 && strcmp(p->headers[0], "none") == 0;
    if (!included(p, CONFIG_INC_HEADERS) || none) {
        set_field(msg, "headers", cJSON_CreateArray());
    } else if (!all && p->header_count) {
        cJSON *hs = cJSON_GetObjectItemCaseSensitive(msg, "headers");
        cJSON *it = hs ? hs->child : NULL;
        while (it) {
            cJSON *next = it->next;
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
            if (!cJSON_IsString(name) || !header_wanted(p, name->valuestring))
                cJSON_Delete(cJSON_DetachItemViaPointer(hs, it));
            it = next;
        }
    }
    if (p->text_max > 0) {
        bool t = cut(msg, "text", p->text_max);
        bool h = cut(msg, "html", p->text_max);
        if (t || h)
            cJSON_AddBoolToObject(msg, "text_truncated", true);
    }
}
