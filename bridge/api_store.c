/* api_store — see include/api_store.h. */
#include "api_store.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "links.h"
#include "event.h"
#include "filter.h"
#include "log.h"
#include "message.h"

/* ---- stored messages ---------------------------------------------------------------------- */

/* The stored message named by {id}, with its metadata; -1 after answering
 * (not an id, unknown, purged, store failure). */
static int stored_info(struct http_req *r, int64_t *id, struct store_msg_info *info,
                       struct store **stp)
{
    struct err e;
    const char *sid = http_param(r, "id");
    if (store_msg_id_parse(sid, id, &e) < 0) {
        http_problem(r, 404, "not-found", "\"%s\" is not a message id (m_<n>)", sid);
        return -1;
    }
    struct store *st = api_store(r, &e);
    int g = st ? store_msg_get(st, *id, info, &e) : -1;
    if (g < 0)
        http_problem(r, 500, "internal", "the store could not be read: %s", e.msg);
    else if (g == STORE_NOTFOUND)
        http_problem(r, 404, "not-found", "no stored message %s", sid);
    else if (info->body_purged_at)
        http_problem(r, 410, "purged", "the raw message %s was purged after its retention time",
                     sid);
    *stp = st;
    return g == 0 && !info->body_purged_at ? 0 : -1;
}

static void h_stored(struct http_req *r)
{
    int64_t id;
    struct store_msg_info info;
    struct store *st;
    if (stored_info(r, &id, &info, &st) < 0)
        return;
    struct err e;
    const struct config *cfg = http_cfg(r);
    struct event_opts eo = {
        .public_url = cfg->api.public_url,
        .inline_max = api_inline_max(cfg, info.account),
        .links_ttl_ms = cfg->links_ttl_ms,
    };
    event_opts_account(&eo, config_account_find(cfg, info.account));
    cJSON *m = event_message(st, api_tmp_dir(r), id, &eo, NULL, &e);
    if (!m && e.kind == ERR_USAGE)
        http_problem(r, 404, "not-found", "no stored message %s", http_param(r, "id"));
    else if (!m)
        http_problem(r, 500, "internal", "the message could not be read: %s", e.msg);
    else
        http_reply_json(r, 200, m);
}

static int body_read(void *cls, uint64_t pos, char *buf, size_t max, size_t *got)
{
    struct err e;
    if (store_body_read(cls, pos, buf, max, got, &e) < 0) {
        log_error("api_body_read_failed", "error=%s", log_q(e.msg));
        return -1;
    }
    return 0;
}

static void body_free(void *cls) { store_body_close(cls); }

static void h_stored_raw(struct http_req *r)
{
    int64_t id;
    struct store_msg_info info;
    struct store *st;
    if (stored_info(r, &id, &info, &st) < 0)
        return;
    const char *sid = http_param(r, "id");
    if (strcmp(info.kind, STORE_KIND_TOO_LARGE) == 0) {
        http_problem(r, 404, "not-found",
                     "message %s was too large to retrieve: only its header was stored", sid);
        return;
    }
    struct store_body *b = NULL;
    uint64_t size = 0;
    struct err e;
    int g = store_body_open(st, id, &b, &size, &e);
    if (g == STORE_NOTFOUND) {
        http_problem(r, 404, "not-found", "no stored message %s", sid);
        return;
    }
    if (g < 0) {
        http_problem(r, 500, "internal", "the message could not be read: %s", e.msg);
        return;
    }
    http_set_sandbox(r);
    http_reply_stream(r, 200, size, body_read, b, body_free, "message/rfc822");
}

static bool attachment_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= MESSAGE_ID_MAX || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] == '.' && s[i + 1] != '.')))
            return false;
    return true;
}

/* RFC 8187 ext-value for a file name. */
static void disposition(const char *filename, char *out, size_t size)
{
    static const char keep[] = "!#$&+-.^_`|~";
    int n = snprintf(out, size, "attachment");
    if (n < 0 || (size_t)n >= size || !filename[0])
        return;
    size_t o = (size_t)n;
    n = snprintf(out + o, size - o, "; filename*=UTF-8''");
    if (n < 0 || (size_t)n >= size - o)
        return;
    o += (size_t)n;
    for (const unsigned char *p = (const unsigned char *)filename; *p && o + 4 < size; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            (*p < 0x80 && strchr(keep, *p)))
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, size - o, "%%%02X", *p);
    }
    out[o] = '\0';
}

static int sink_store(void *ctx, const void *data, size_t len, struct err *e)
{
    return spool_write(ctx, data, len, e);
}

static int sink_att(void *ctx, const void *buf, size_t len)
{
    struct err e;
    return spool_write(ctx, buf, len, &e) < 0 ? 1 : 0;
}

/* Extract attachment `att` of stored message id into out; 0, or -1 after
 * answering. */
static int extract(struct http_req *r, struct store *st, int64_t id, const char *att,
                   struct spool *out, struct message_attachment_info *ai)
{
    struct err e;
    struct spool raw;
    spool_init(&raw, api_tmp_dir(r), SPOOL_MEM_DEFAULT, 0);
    int g = store_msg_stream(st, id, sink_store, &raw, &e);
    if (g == 0 && raw.fd >= 0)
        g = message_attachment_fd(raw.fd, att, sink_att, out, ai, &e) < 0 ? -2 : 0;
    else if (g == 0)
        g = message_attachment(raw.mem ? raw.mem : "", raw.len, att, sink_att, out, ai, &e) < 0
                ? -2
                : 0;
    spool_free(&raw);
    const char *sid = http_param(r, "id");
    if (g == STORE_NOTFOUND)
        http_problem(r, 404, "not-found", "no stored message %s", sid);
    else if (g == -1)
        http_problem(r, 500, "internal", "the message could not be read: %s", e.msg);
    else if (g == -2 && e.kind == ERR_USAGE)
        http_problem(r, 404, "not-found", "message %s has no attachment %s", sid, att);
    else if (g == -2)
        http_problem(r, 500, "internal", "the attachment could not be read: %s", e.msg);
    return g == 0 ? 0 : -1;
}

static void h_attachment(struct http_req *r)
{
    int64_t id;
    struct store_msg_info info;
    struct store *st;
    if (stored_info(r, &id, &info, &st) < 0)
        return;
    const char *att = http_param(r, "attachment_id");
    if (!attachment_id_ok(att)) {
        http_problem(r, 404, "not-found", "\"%s\" is not an attachment id", att);
        return;
    }
    struct spool out;
    struct message_attachment_info ai;
    spool_init(&out, api_tmp_dir(r), SPOOL_MEM_DEFAULT, 0);
    if (extract(r, st, id, att, &out, &ai) < 0) {
        spool_free(&out);
        return;
    }
    char ctype[MESSAGE_CT_MAX + 16], disp[3 * MESSAGE_FILENAME_MAX + 64];
    bool ct_ok = ai.content_type[0] != '\0';
    for (const char *p = ai.content_type; *p && ct_ok; p++)
        ct_ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("/+-.", *p);
    snprintf(ctype, sizeof ctype, "%s", ct_ok ? ai.content_type : "application/octet-stream");
    disposition(ai.filename, disp, sizeof disp);
    struct spool_content c;
    struct err e;
    if (spool_take(&out, &c, &e) < 0) {
        http_problem(r, 500, "internal", "%s", e.msg);
        return;
    }
    http_add_header(r, "Content-Disposition", disp);
    http_set_sandbox(r);
    if (c.fd >= 0)
        http_reply_fd(r, 200, c.fd, c.size, ctype);
    else
        http_reply_buffer(r, 200, c.mem, c.len, free, ctype);
}

/* ---- deliveries ----------------------------------------------------------------------------- */

static cJSON *delivery_json(const struct store_delivery *d)
{
    char id[STORE_ID_MAX], mid[STORE_ID_MAX];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", store_delivery_id_format(d->id, id));
    /* an account event (event_type set) has no message and no UIDL */
    bool ev = d->event_id > 0;
    cJSON_AddItemToObject(o, "message_id",
                          ev ? cJSON_CreateNull() : cJSON_CreateString(store_msg_id_format(d->msg_id, mid)));
    cJSON_AddItemToObject(o, "event_type", ev ? cJSON_CreateString(d->event_type) : cJSON_CreateNull());
    cJSON_AddStringToObject(o, "account", d->account);
    cJSON_AddItemToObject(o, "uidl", ev ? cJSON_CreateNull() : cJSON_CreateString(d->uidl));
    cJSON_AddStringToObject(o, "webhook", d->webhook);
    cJSON_AddStringToObject(o, "status", store_dstatus_name(d->status));
    cJSON_AddNumberToObject(o, "attempt_count", d->attempts);
    cJSON_AddItemToObject(o, "created_at", api_json_time(d->created_at));
    cJSON_AddItemToObject(o, "updated_at", api_json_time(d->updated_at));
    bool waiting = d->status == STORE_D_PENDING || d->status == STORE_D_FAILED;
    cJSON_AddItemToObject(o, "next_attempt_at", api_json_time(waiting ? d->next_attempt_at : 0));
    cJSON_AddItemToObject(o, "delivered_at", api_json_time(d->delivered_at));
    if (d->last_http_status)
        cJSON_AddNumberToObject(o, "last_http_status", d->last_http_status);
    else
        cJSON_AddNullToObject(o, "last_http_status");
    cJSON_AddItemToObject(o, "last_error", api_json_str(d->last_error));
    return o;
}

static int delivery_row(void *ctx, const struct store_delivery *d, struct err *e)
{
    (void)e;
    cJSON_AddItemToArray(ctx, delivery_json(d));
    return 0;
}

/* The query of GET /api/v1/deliveries; 0, or -1 after answering 400. */
struct list_query {
    const char *status, *account, *cursor;
    enum store_dstatus ds;
    uint64_t limit;
};

static int list_query(struct http_req *r, struct list_query *q)
{
    struct err e;
    const char *limit = http_query(r, "limit");
    q->status = http_query(r, "status");
    q->account = http_query(r, "account");
    q->cursor = http_query(r, "cursor");
    q->limit = API_LIST_DEFAULT;
    if (q->status && store_dstatus_parse(q->status, &q->ds, &e) < 0)
        http_problem(r, 400, "bad-request",
                     "status must be pending, delivered, failed, dead or dropped, not \"%s\"", q->status);
    else if (q->account && (!*q->account || strlen(q->account) > STORE_NAME_MAX))
        http_problem(r, 400, "bad-request", "account must be 1 to %d bytes", STORE_NAME_MAX);
    else if (limit && api_parse_u64(limit, 1, API_LIST_MAX, &q->limit) < 0)
        http_problem(r, 400, "bad-request", "limit must be a whole number from 1 to %d",
                     API_LIST_MAX);
    else if (q->cursor && (!*q->cursor || strlen(q->cursor) >= STORE_CURSOR_MAX))
        http_problem(r, 400, "bad-request", "cursor is not one this API gave");
    else
        return 0;
    return -1;
}

static void h_deliveries(struct http_req *r)
{
    struct list_query q;
    struct err e;
    if (list_query(r, &q) < 0)
        return;
    struct store *st = api_store(r, &e);
    if (!st) {
        http_problem(r, 500, "internal", "the store could not be opened: %s", e.msg);
        return;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "deliveries");
    char next[STORE_CURSOR_MAX + 1] = "";
    if (store_delivery_list(st, q.status ? &q.ds : NULL, q.account, (size_t)q.limit, q.cursor,
                            delivery_row, arr, next, &e) < 0) {
        cJSON_Delete(root);
        if (e.kind == ERR_USAGE)
            http_problem(r, 400, "bad-request", "%s", e.msg);
        else
            http_problem(r, 500, "internal", "the store could not be read: %s", e.msg);
        return;
    }
    cJSON_AddItemToObject(root, "next_cursor", api_json_str(next));
    http_reply_json(r, 200, root);
}

static int attempt_row(void *ctx, const struct store_attempt_row *a, struct err *e)
{
    (void)e;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "started_at", api_json_time(a->started_at));
    cJSON_AddNumberToObject(o, "duration_ms", (double)a->duration_ms);
    if (a->http_status)
        cJSON_AddNumberToObject(o, "http_status", a->http_status);
    else
        cJSON_AddNullToObject(o, "http_status");
    cJSON_AddItemToObject(o, "error", api_json_str(a->error));
    cJSON_AddStringToObject(o, "outcome", a->outcome ? a->outcome : "");
    cJSON_AddItemToArray(ctx, o);
    return 0;
}

/* The delivery named by {id} and the store; -1 after answering. */
static int delivery_of(struct http_req *r, int64_t *id, struct store **st)
{
    struct err e;
    const char *sid = http_param(r, "id");
    if (store_delivery_id_parse(sid, id, &e) < 0) {
        http_problem(r, 404, "not-found", "\"%s\" is not a delivery id (d_<n>)", sid);
        return -1;
    }
    if (!(*st = api_store(r, &e))) {
        http_problem(r, 500, "internal", "the store could not be opened: %s", e.msg);
        return -1;
    }
    return 0;
}

static void h_delivery(struct http_req *r)
{
    int64_t id;
    struct store *st;
    struct err e;
    if (delivery_of(r, &id, &st) < 0)
        return;
    struct store_delivery d;
    cJSON *attempts = cJSON_CreateArray();
    int g = store_delivery_get(st, id, &d, attempt_row, attempts, &e);
    if (g != 0) {
        cJSON_Delete(attempts);
        if (g == STORE_NOTFOUND)
            http_problem(r, 404, "not-found", "no delivery %s", http_param(r, "id"));
        else
            http_problem(r, 500, "internal", "the store could not be read: %s", e.msg);
        return;
    }
    cJSON *o = delivery_json(&d);
    cJSON_AddItemToObject(o, "attempts", attempts);
    http_reply_json(r, 200, o);
}

/* The preamble of retry and drop: delivery {id} changed by change
 * (store_delivery_retry or store_delivery_drop), logged as event `what`, and
 * read back into *d.  0; or -1 once the answer is given: 404 for no such
 * delivery, 409 with problem type `problem` ("cannot be <done>") when the
 * store refuses, 500 when it fails. */
typedef int (*delivery_change_fn)(struct store *st, int64_t id, int64_t now, struct err *e);
static int delivery_change(struct http_req *r, delivery_change_fn change, const char *problem,
                           const char *done, const char *what, struct store_delivery *d)
{
    int64_t id;
    struct store *st;
    struct err e;
    if (delivery_of(r, &id, &st) < 0)
        return -1;
    const char *sid = http_param(r, "id");
    int g = change(st, id, clock_wall_ms(), &e);
    if (g == STORE_NOTFOUND) {
        http_problem(r, 404, "not-found", "no delivery %s", sid);
        return -1;
    }
    if (g < 0 && e.kind == ERR_USAGE) {
        http_problem(r, 409, problem, "delivery %s cannot be %s: %s", sid, done, e.msg);
        return -1;
    }
    if (g < 0) {
        http_problem(r, 500, "internal", "the store could not be written: %s", e.msg);
        return -1;
    }
    log_info(what, "delivery=%s", sid);
    if (store_delivery_get(st, id, d, NULL, NULL, &e) != 0) {
        http_problem(r, 500, "internal", "the store could not be read: %s", e.msg);
        return -1;
    }
    return 0;
}

/* POST /api/v1/deliveries/{id}/retry: a failed or dead delivery is due again. */
static void h_delivery_retry(struct http_req *r)
{
    struct store_delivery d;
    if (delivery_change(r, store_delivery_retry, "not-retryable", "retried", "api_retry", &d) < 0)
        return;
    runtime_wake_delivery(api_runtime(r));
    http_reply_json(r, 202, delivery_json(&d));
}

/* DELETE /api/v1/deliveries/{id}: an operator gives a failed or dead
 * delivery up; it stays, as "dropped". */
static void h_delivery_drop(struct http_req *r)
{
    struct store_delivery d;
    if (delivery_change(r, store_delivery_drop, "not-droppable", "dropped", "api_drop", &d) < 0)
        return;
    http_reply_json(r, 200, delivery_json(&d));
}

/* POST /api/v1/deliveries/retry {"status": "dead"|"failed", "webhook": name,
 * "limit": n}: retry in bulk, at most STORE_RETRY_BULK_MAX per call. */
static void h_deliveries_retry(struct http_req *r)
{
    const char *text = http_body(r, NULL);
    cJSON *body = *text ? cJSON_Parse(text) : cJSON_CreateObject(); /* none: the defaults */
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(body, "status");
    const cJSON *webhook = cJSON_GetObjectItemCaseSensitive(body, "webhook");
    const cJSON *limit = cJSON_GetObjectItemCaseSensitive(body, "limit");
    enum store_dstatus ds = STORE_D_DEAD;
    struct err e;
    const char *bad = NULL;
    if (!cJSON_IsObject(body))
        bad = "the body must be a JSON object {\"status\": \"dead\", \"webhook\": \"...\", \"limit\": n}";
    else if (status && (!cJSON_IsString(status) || store_dstatus_parse(status->valuestring, &ds, &e) < 0 ||
                        (ds != STORE_D_DEAD && ds != STORE_D_FAILED)))
        bad = "status must be \"dead\" or \"failed\"";
    else if (webhook && !cJSON_IsString(webhook))
        bad = "webhook must be a webhook's name";
    else if (limit && (!cJSON_IsNumber(limit) || limit->valuedouble < 1 ||
                       limit->valuedouble > STORE_RETRY_BULK_MAX ||
                       limit->valuedouble != (double)(int)limit->valuedouble))
        bad = "limit must be an integer from 1 to 1000 (STORE_RETRY_BULK_MAX)";
    for (const cJSON *it = cJSON_IsObject(body) ? body->child : NULL; it && !bad; it = it->next)
        if (strcmp(it->string, "status") && strcmp(it->string, "webhook") && strcmp(it->string, "limit"))
            bad = "unknown key in the body (status, webhook, limit)";
    if (bad) {
        cJSON_Delete(body);
        http_problem(r, 400, "bad-request", "%s", bad);
        return;
    }
    char wh[CONFIG_NAME_MAX + 1] = "";
    if (webhook) {
        if (!config_webhook_find(http_cfg(r), webhook->valuestring)) {
            http_problem(r, 404, "not-found", "no webhook is named \"%.64s\"", webhook->valuestring);
            cJSON_Delete(body);
            return;
        }
        snprintf(wh, sizeof wh, "%s", webhook->valuestring);
    }
    size_t max = limit ? (size_t)limit->valuedouble : STORE_RETRY_BULK_MAX;
    cJSON_Delete(body);
    struct store *st = api_store(r, &e);
    int64_t n = 0;
    if (!st || store_delivery_retry_bulk(st, wh[0] ? wh : NULL, ds, max, clock_wall_ms(), &n, &e) < 0) {
        http_problem(r, 500, "internal", "the store could not be written: %s", e.msg);
        return;
    }
    if (n > 0)
        runtime_wake_delivery(api_runtime(r));
    log_info("api_retry_bulk", "webhook=%s status=%s retried=%lld", wh[0] ? wh : "*",
             store_dstatus_name(ds), (long long)n);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "retried", (double)n);
    cJSON_AddStringToObject(o, "status", store_dstatus_name(ds));
    cJSON_AddItemToObject(o, "webhook", wh[0] ? cJSON_CreateString(wh) : cJSON_CreateNull());
    cJSON_AddBoolToObject(o, "more", (size_t)n == max);
    http_reply_json(r, 202, o);
}

/* ---- webhook filters -------------------------------------------------------------------- */

/* POST /api/v1/webhooks/{name}/match {"message_id": "m_<n>"}: would the
 * stored message go to the webhook, and why (filter.h). */
static void h_webhook_match(struct http_req *r)
{
    const struct config *cfg = http_cfg(r);
    const char *name = http_param(r, "name");
    const struct config_webhook *w = config_webhook_find(cfg, name);
    if (!w) {
        http_problem(r, 404, "not-found", "no webhook is named \"%s\"", name);
        return;
    }
    cJSON *body = cJSON_ParseWithLength(http_body(r, NULL), strlen(http_body(r, NULL)));
    const cJSON *mid = cJSON_GetObjectItemCaseSensitive(body, "message_id");
    if (!cJSON_IsObject(body) || !cJSON_IsString(mid)) {
        cJSON_Delete(body);
        http_problem(r, 400, "bad-request",
                     "the body must be a JSON object {\"message_id\": \"m_<n>\"}");
        return;
    }
    struct err e;
    int64_t id;
    if (store_msg_id_parse(mid->valuestring, &id, &e) < 0) {
        http_problem(r, 400, "bad-request", "message_id is not a message id (m_<n>)");
        cJSON_Delete(body);
        return;
    }
    cJSON_Delete(body);
    char sid[STORE_ID_MAX];
    store_msg_id_format(id, sid);
    struct store *st = api_store(r, &e);
    struct store_msg_info info;
    int g = st ? store_msg_get(st, id, &info, &e) : -1;
    if (g < 0) {
        http_problem(r, 500, "internal", "the store could not be read: %s", e.msg);
        return;
    }
    if (g == STORE_NOTFOUND) {
        http_problem(r, 404, "not-found", "no stored message %s", sid);
        return;
    }
    if (info.body_purged_at) {
        http_problem(r, 410, "purged", "the raw message %s was purged after its retention time",
                     sid);
        return;
    }
    const struct config_account *a = config_account_find(cfg, info.account);
    struct event_opts eo = {.public_url = NULL, .inline_max = 0, .inline_total_max = 0};
    event_opts_account(&eo, a);
    cJSON *m = event_message(st, api_tmp_dir(r), id, &eo, NULL, &e);
    if (!m) {
        http_problem(r, e.kind == ERR_USAGE ? 404 : 500, e.kind == ERR_USAGE ? "not-found" : "internal",
                     "the message %s could not be read: %s", sid, e.msg);
        return;
    }
    const char *type = filter_message_type(m, strcmp(info.kind, STORE_KIND_TOO_LARGE) == 0);
    cJSON *why = cJSON_CreateArray();
    bool listed = false;
    for (size_t i = 0; a && i < a->webhook_count && !listed; i++)
        listed = strcmp(a->webhooks[i], name) == 0;
    cJSON *acc = cJSON_CreateObject();
    cJSON_AddStringToObject(acc, "condition", "account");
    cJSON_AddBoolToObject(acc, "passed", listed);
    char reason[CONFIG_NAME_MAX * 2 + 64];
    snprintf(reason, sizeof reason, "account %s %s this webhook", info.account,
             !a ? "is no longer configured; it does not list" : listed ? "lists" : "does not list");
    cJSON_AddStringToObject(acc, "reason", reason);
    cJSON_AddItemToArray(why, acc);
    bool ok = filter_match(w, type, m, why) && listed;
    cJSON_Delete(m);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "webhook", name);
    cJSON_AddStringToObject(o, "message_id", sid);
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddBoolToObject(o, "matches", ok);
    cJSON_AddBoolToObject(o, "has_filter", w->filter.present);
    cJSON_AddItemToObject(o, "conditions", why);
    http_reply_json(r, 200, o);
}

int api_link_verify(struct http_req *r, const char *path, const char *exp, const char *sig,
                    char *why, size_t why_size)
{
    struct err e;
    unsigned char key[STORE_LINK_KEY_LEN];
    int64_t now = clock_wall_ms() / 1000;
    struct store *st = api_store(r, &e);
    if (!st || store_link_key(st, key, NULL, now, &e) < 0) {
        snprintf(why, why_size, "the link could not be checked: %s", e.msg);
        return -1;
    }
    enum links_verdict v = links_verify(key, sizeof key, path, exp, sig, now);
    OPENSSL_cleanse(key, sizeof key);
    if (v == LINKS_OK)
        return 0;
    snprintf(why, why_size, "%s", links_verdict_text(v));
    return -1;
}

/* POST /api/v1/links/rotate: a new link key; every link signed before is refused. */
static void h_links_rotate(struct http_req *r)
{
    struct err e;
    struct store *st = api_store(r, &e);
    int64_t now = clock_wall_ms() / 1000, created = 0;
    unsigned char key[STORE_LINK_KEY_LEN];
    if (!st || store_link_key_rotate(st, now, &e) < 0 ||
        store_link_key(st, key, &created, now, &e) < 0) {
        http_problem(r, 500, "internal", "the link key could not be rotated: %s", e.msg);
        return;
    }
    OPENSSL_cleanse(key, sizeof key);
    char when[CLOCK_RFC3339_SIZE];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "rotated_at", clock_rfc3339(created * 1000, 1, when, sizeof when));
    log_info("links_rotated", "revoked=all");
    http_reply_json(r, 200, o);
}

const struct http_route api_store_routes[] = {
    {"GET", "/api/v1/messages/{id}", h_stored, NULL, 0},
    {"GET", "/api/v1/messages/{id}/raw", h_stored_raw, "exp,sig", HTTP_ROUTE_SIGNED},
    {"GET", "/api/v1/messages/{id}/attachments/{attachment_id}", h_attachment, "exp,sig",
     HTTP_ROUTE_SIGNED},
    {"POST", "/api/v1/links/rotate", h_links_rotate, NULL, 0},
    {"GET", "/api/v1/deliveries", h_deliveries, "status,account,limit,cursor", 0},
    {"GET", "/api/v1/deliveries/{id}", h_delivery, NULL, 0},
    {"POST", "/api/v1/deliveries/{id}/retry", h_delivery_retry, NULL, 0},
    {"DELETE", "/api/v1/deliveries/{id}", h_delivery_drop, NULL, 0},
    {"POST", "/api/v1/deliveries/retry", h_deliveries_retry, NULL, 0},
    {"POST", "/api/v1/webhooks/{name}/match", h_webhook_match, NULL, 0},
};
const size_t api_store_nroutes = sizeof api_store_routes / sizeof api_store_routes[0];
