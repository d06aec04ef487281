/* api_mailbox — see include/api_mailbox.h. */
#include "api_mailbox.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_oauth2.h"
#include "clock.h"
#include "log.h"
#include "mailbox.h"
#include "oauth2.h"

enum mb_op { MB_INFO, MB_LISTING, MB_SUMMARIES, MB_RETR, MB_TOP, MB_DELE };

/* One one-shot call: what to do, and what came of it. */
struct mb_call {
    struct api_work w; /* first */
    enum mb_op op;
    struct pop3_opts o;      /* strings borrowed from the request's configuration */
    int64_t limit_ms;        /* the whole call, from its queueing: api.request_timeout */
    const char *account;     /* the same */
    const struct config_account *a; /* the same */
    const char *uidl;        /* the request's path parameter */
    unsigned lines;
    int rc;
    const char *step;
    struct err e;
    struct mailbox_info info;
    struct pop3_listing *l;
    struct mailbox_summary *sums; /* MB_SUMMARIES: one per listed message */
    struct store *st;             /* the request's store handle: MB_SUMMARIES, and an
                                     OAuth2 account's token */
    struct mailbox_cache *cache;
    struct spool s;
};

static void call_free(void *p)
{
    struct mb_call *c = p;
    mailbox_info_free(&c->info);
    mailbox_listing_free(&c->l);
    free(c->sums);
    spool_free(&c->s);
    free(c);
}

/* ---- summaries from the store ----------------------------------------------------------- */

/* The first MAILBOX_HEADER_MAX bytes of a stored body, then stop. */
struct head {
    char *p;
    size_t len;
    bool full;
};

static int head_sink(void *ctx, const void *data, size_t len, struct err *e)
{
    struct head *h = ctx;
    size_t room = MAILBOX_HEADER_MAX - h->len;
    if (len > room)
        len = room;
    memcpy(h->p + h->len, data, len);
    h->len += len;
    if (h->len < MAILBOX_HEADER_MAX && !memmem(h->p, h->len, "\n\n", 2) &&
        !memmem(h->p, h->len, "\r\n\r\n", 4))
        return 0;
    h->full = true;
    return err_set(e, ERR_USAGE, "enough of the header read"); /* stops the stream */
}

/* Copy src into a summary field, cut at a UTF-8 boundary. */
static void cut_copy(char dst[MAILBOX_FIELD_MAX + 1], const char *src)
{
    size_t n = strlen(src);
    if (n > MAILBOX_FIELD_MAX) {
        n = MAILBOX_FIELD_MAX;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* mailbox_summary_fn: the summary of a message the bridge stored, from its
 * body's header (or, its body purged, from the fields kept with it). */
static int stored_summary(void *ctx, const char *uidl, struct mailbox_summary *out,
                          struct err *e)
{
    struct mb_call *c = ctx;
    int64_t msg_id = 0;
    enum store_uidl_state state;
    int g = store_uidl_get(c->st, c->account, uidl, &state, &msg_id, e);
    if (g < 0)
        return -1;
    if (g == STORE_NOTFOUND || msg_id <= 0)
        return 1;
    struct head h = {.p = malloc(MAILBOX_HEADER_MAX)};
    if (!h.p)
        return err_set(e, ERR_INTERNAL, "out of memory for a stored header");
    struct err se;
    int rc = store_msg_stream(c->st, msg_id, head_sink, &h, &se);
    int r = 1;
    if (rc == 0 || h.full) {
        r = mailbox_summary_parse(h.p, h.len, out, e) < 0 ? -1 : 0;
    } else if (rc == STORE_NOTFOUND) { /* purged: what was kept of it */
        struct store_msg_info mi;
        if (store_msg_get(c->st, msg_id, &mi, e) == 0 && (mi.subject[0] || mi.from[0])) {
            memset(out, 0, sizeof *out);
            out->known = true;
            cut_copy(out->subject, mi.subject);
            cut_copy(out->from_address, mi.from);
            r = 0;
        }
    } else {
        *e = se;
        r = -1;
    }
    free(h.p);
    return r;
}

static void call_op(struct mb_call *c)
{
    struct pop3_sink k;
    api_sink(&k, &c->s);
    switch (c->op) {
    case MB_INFO: c->rc = mailbox_info(&c->o, &c->info, &c->step, &c->e); break;
    case MB_LISTING: c->rc = mailbox_listing(&c->o, &c->l, &c->step, &c->e); break;
    case MB_SUMMARIES:
        c->rc = mailbox_listing_summaries(&c->o, c->account, c->cache, stored_summary, c, &c->l,
                                          &c->sums, &c->step, &c->e);
        break;
    case MB_RETR: c->rc = mailbox_retr(&c->o, c->uidl, &k, &c->step, &c->e); break;
    case MB_TOP: c->rc = mailbox_top(&c->o, c->uidl, c->lines, &k, &c->step, &c->e); break;
    case MB_DELE: c->rc = mailbox_dele(&c->o, c->uidl, &c->step, &c->e); break;
    }
}

static void call_work(struct api_work *w)
{
    struct mb_call *c = (struct mb_call *)w;
    /* the time spent waiting for a worker, and for another instance's
     * refresh of an OAuth2 token, counts against the call's limit */
    int64_t until = w->job.queued_at + c->limit_ms;
    char *tok = NULL;
    if (oauth2_managed(c->a)) {
        /* a provider account logs in with its current access token, as the poller does */
        if (!(tok = malloc(2 * OAUTH2_TOKEN_BUF))) {
            c->rc = -1;
            c->step = "OAuth2 token";
            err_set(&c->e, ERR_INTERNAL, "out of memory");
            return;
        }
        if (api_oauth2_login_opts(c->st, c->a, NULL, until, &c->o, tok, &c->e) < 0) {
            c->rc = -1;
            c->step = "OAuth2 token";
            goto out;
        }
    }
    int64_t left = until - clock_mono_ms();
    if (left < 1)
        left = 1;
    if (c->o.session_timeout_ms <= 0 || c->o.session_timeout_ms > left)
        c->o.session_timeout_ms = left;
    call_op(c);
    if (c->rc < 0 && tok && c->step && strcmp(c->step, "POP3 login") == 0 &&
        api_oauth2_refused(c->a, &c->e)) {
        /* the server refused the token: a fresh one, and one more try (a
         * refused login changed nothing) */
        struct err e2;
        if (api_oauth2_login_opts(c->st, c->a, tok, until, &c->o, tok + OAUTH2_TOKEN_BUF,
                                  &e2) == 0) {
            mailbox_info_free(&c->info);
            mailbox_listing_free(&c->l);
            free(c->sums);
            c->sums = NULL;
            c->step = NULL;
            err_clear(&c->e);
            call_op(c);
        }
    }
out:
    c->o.oauth2_token = NULL;
    if (tok) {
        OPENSSL_cleanse(tok, 2 * OAUTH2_TOKEN_BUF);
        free(tok);
    }
}

/* The call's failure, if it failed: answered, true. */
static bool call_failed(struct http_req *r, struct mb_call *c)
{
    if (c->rc == MAILBOX_NOMSG)
        http_problem(r, 404, "not-found", "no message with UIDL \"%s\" in mailbox %s", c->uidl,
                     c->account);
    else if (c->rc != 0)
        api_reply_err(r, c->step ? c->step : "POP3", &c->e);
    return c->rc != 0;
}

/* Start a call of `op` for the request's account (and UIDL): it runs on a
 * mailbox worker, then `reply` answers. */
static void call_start(struct http_req *r, enum mb_op op, unsigned lines,
                       void (*reply)(struct http_req *, struct api_work *))
{
    const struct config_account *ca = api_account(r);
    if (!ca)
        return;
    struct mb_call *c = calloc(1, sizeof *c);
    if (!c) {
        http_problem(r, 500, "internal", "out of memory");
        return;
    }
    c->op = op;
    c->account = ca->name;
    c->a = ca;
    c->uidl = http_param(r, "uidl");
    c->lines = lines;
    c->limit_ms = api_request_timeout_ms(r);
    mailbox_opts(ca, c->limit_ms, &c->o);
    if (op == MB_TOP)
        spool_init(&c->s, NULL, API_TOP_MAX, API_TOP_MAX);
    else
        spool_init(&c->s, api_tmp_dir(r), SPOOL_MEM_DEFAULT, 0);
    if (op == MB_SUMMARIES || oauth2_managed(ca)) {
        struct err e;
        if (!(c->st = api_store(r, &e))) {
            free(c);
            http_problem(r, 500, "internal", "the store could not be opened: %s", e.msg);
            return;
        }
        if (op == MB_SUMMARIES)
            c->cache = api_summaries(r);
    }
    c->w.work = call_work;
    c->w.reply = reply;
    api_run(r, &c->w, call_free);
}

/* ---- GET .../mailbox ------------------------------------------------------------------- */

static void reply_mailbox(struct http_req *r, struct api_work *w)
{
    struct mb_call *c = (struct mb_call *)w;
    if (call_failed(r, c))
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", c->info.count);
    cJSON_AddNumberToObject(o, "octets", (double)c->info.octets);
    cJSON *caps = cJSON_AddArrayToObject(o, "capabilities");
    for (size_t i = 0; i < c->info.n_capa; i++)
        cJSON_AddItemToArray(caps, cJSON_CreateString(c->info.capa[i]));
    http_reply_json(r, 200, o);
}

static void h_mailbox(struct http_req *r) { call_start(r, MB_INFO, 0, reply_mailbox); }

/* ---- GET .../messages ------------------------------------------------------------------- */

/* One listed message with what the store knows of it; NULL on a store error. */
static cJSON *listed_json(struct store *st, const char *account, const struct pop3_entry *en,
                          bool has_uidl, const struct mailbox_summary *sum, struct err *e)
{
    enum store_uidl_state state = STORE_UIDL_IGNORED;
    int64_t msg_id = 0;
    int g = has_uidl ? store_uidl_get(st, account, en->uidl, &state, &msg_id, e)
                     : STORE_NOTFOUND;
    if (g < 0)
        return NULL;
    bool known = g == 0, stored = known && msg_id > 0;
    bool delivered = known && state == STORE_UIDL_DELIVERED;
    if (known && state == STORE_UIDL_DELETED && msg_id > 0) {
        struct store_msg_info mi;
        delivered = store_msg_get(st, msg_id, &mi, e) == 0 && mi.delivered_at > 0;
    }
    char id[STORE_ID_MAX];
    cJSON *m = cJSON_CreateObject();
    cJSON_AddNumberToObject(m, "number", en->number);
    cJSON_AddItemToObject(m, "uidl", api_json_str(en->uidl));
    cJSON_AddNumberToObject(m, "size", (double)en->size);
    cJSON_AddBoolToObject(m, "stored", stored);
    cJSON_AddBoolToObject(m, "delivered", delivered);
    cJSON_AddItemToObject(m, "id", stored ? cJSON_CreateString(store_msg_id_format(msg_id, id))
                                          : cJSON_CreateNull());
    if (sum) { /* ?headers=1 */
        if (sum->known && (sum->from_name[0] || sum->from_address[0])) {
            cJSON *f = cJSON_AddObjectToObject(m, "from");
            cJSON_AddItemToObject(f, "name", api_json_str(sum->from_name));
            cJSON_AddItemToObject(f, "address", api_json_str(sum->from_address));
        } else {
            cJSON_AddNullToObject(m, "from");
        }
        cJSON_AddItemToObject(m, "subject", api_json_str(sum->known ? sum->subject : NULL));
        cJSON_AddItemToObject(m, "date", api_json_str(sum->known ? sum->date : NULL));
    }
    return m;
}

static void reply_messages(struct http_req *r, struct api_work *w)
{
    struct mb_call *c = (struct mb_call *)w;
    if (call_failed(r, c))
        return;
    struct err e;
    struct store *st = api_store(r, &e);
    if (!st) {
        http_problem(r, 500, "internal", "the store could not be opened: %s", e.msg);
        return;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "messages");
    for (uint32_t i = 0; i < c->l->count; i++) {
        cJSON *m = listed_json(st, c->account, &c->l->entries[i], c->l->has_uidl,
                               c->sums ? &c->sums[i] : NULL, &e);
        if (!m) {
            cJSON_Delete(root);
            http_problem(r, 500, "internal", "the store could not be read: %s", e.msg);
            return;
        }
        cJSON_AddItemToArray(arr, m);
    }
    http_reply_json(r, 200, root);
}

static void h_messages(struct http_req *r)
{
    const char *v = http_query(r, "headers");
    uint64_t headers = 0;
    if (v && api_parse_u64(v, 0, 1, &headers) < 0) {
        http_problem(r, 400, "bad-request", "headers must be 0 or 1");
        return;
    }
    call_start(r, headers ? MB_SUMMARIES : MB_LISTING, 0, reply_messages);
}

/* ---- one message by UIDL ---------------------------------------------------------------- */

static void reply_message(struct http_req *r, struct api_work *w)
{
    struct mb_call *c = (struct mb_call *)w;
    if (!call_failed(r, c))
        api_reply_message(r, c->account, c->uidl, &c->s);
}

static void h_message(struct http_req *r) { call_start(r, MB_RETR, 0, reply_message); }

static void reply_top(struct http_req *r, struct api_work *w)
{
    struct mb_call *c = (struct mb_call *)w;
    if (!call_failed(r, c))
        api_reply_top(r, &c->s, c->uidl);
}

static void h_message_top(struct http_req *r)
{
    const char *v = http_query(r, "lines");
    uint64_t n = 0;
    if (v && api_parse_u64(v, 0, API_TOP_LINES_MAX, &n) < 0) {
        http_problem(r, 400, "bad-request", "lines must be a whole number from 0 to %d",
                     API_TOP_LINES_MAX);
        return;
    }
    call_start(r, MB_TOP, (unsigned)n, reply_top);
}

static void reply_deleted(struct http_req *r, struct api_work *w)
{
    struct mb_call *c = (struct mb_call *)w;
    if (call_failed(r, c))
        return;
    struct err e;
    struct store *st = api_store(r, &e);
    const char *one[1] = {c->uidl};
    if (!st || store_uidls_mark_deleted(st, c->account, one, 1, &e) < 0)
        log_error("store_failed", "op=uidls_mark_deleted account=%s error=%s", c->account,
                  log_q(e.msg));
    log_info("api_deleted", "account=%s uidl=%s", c->account, log_q(c->uidl));
    http_reply_empty(r, 204);
}

static void h_message_delete(struct http_req *r) { call_start(r, MB_DELE, 0, reply_deleted); }

const struct http_route api_mailbox_routes[] = {
    {"GET", "/api/v1/accounts/{account}/mailbox", h_mailbox, NULL, 0},
    {"GET", "/api/v1/accounts/{account}/messages", h_messages, "headers", 0},
    {"GET", "/api/v1/accounts/{account}/messages/{uidl}", h_message, NULL, 0},
    {"DELETE", "/api/v1/accounts/{account}/messages/{uidl}", h_message_delete, NULL, 0},
    {"GET", "/api/v1/accounts/{account}/messages/{uidl}/top", h_message_top, "lines", 0},
};
const size_t api_mailbox_nroutes = sizeof api_mailbox_routes / sizeof api_mailbox_routes[0];
