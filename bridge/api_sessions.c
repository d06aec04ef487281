/* api_sessions — see include/api_sessions.h. */
#include "api_sessions.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "api_oauth2.h"
#include "clock.h"
#include "log.h"
#include "oauth2.h"
#include "pop3cfg.h"
#include "sessions.h"

enum sx_op { SX_OPEN, SX_INFO, SX_QUIT, SX_LIST, SX_RETR, SX_TOP, SX_DELE, SX_RSET, SX_NOOP };

/* One session command: what to do, and what came of it. */
struct sx_call {
    struct api_work w; /* first */
    enum sx_op op;
    struct sessions *ss;
    const char *id;               /* the request's {id} */
    uint32_t number;
    unsigned lines;
    int64_t wait_ms;
    int64_t limit_ms;             /* api.request_timeout, from the call's queueing */
    /* SX_OPEN */
    struct pop3_opts o;           /* strings borrowed from the request's configuration */
    const char *account;
    const struct config_account *a; /* in hold */
    struct store *st;             /* the request's, for an OAuth2 account's token; else NULL */
    struct cfgref *hold;
    struct sessions_limits lim;
    /* results */
    int why;                      /* SESSIONS_NOTFOUND / SESSIONS_BUSY: not acquired */
    int rc;                       /* 0, a SESSIONS_* code, or -1 with e */
    struct err e;
    struct session_info info;
    char uidl[POP3_UIDL_MAX + 1]; /* of message `number`, "" if unknown */
    cJSON *list;                  /* SX_LIST */
    uint32_t deleted;             /* SX_QUIT */
    char **uidls;
    size_t n_uidls;
    struct spool s;
};

static void call_free(void *p)
{
    struct sx_call *c = p;
    cJSON_Delete(c->list);
    sessions_uidls_free(c->uidls, c->n_uidls);
    spool_free(&c->s);
    free(c);
}

static cJSON *session_json(const struct session_info *i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", i->id);
    cJSON_AddStringToObject(o, "account", i->account);
    cJSON_AddNumberToObject(o, "count", i->count);
    cJSON_AddNumberToObject(o, "octets", (double)i->octets);
    cJSON_AddNumberToObject(o, "marked", i->marked);
    cJSON_AddItemToObject(o, "created_at", api_json_time(i->created_at));
    cJSON_AddItemToObject(o, "expires_at", api_json_time(i->expires_at));
    return o;
}

static cJSON *listing_json(struct session *x)
{
    const struct pop3_listing *l = sessions_listing(x);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "messages");
    for (uint32_t i = 0; i < l->count; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddNumberToObject(m, "number", l->entries[i].number);
        cJSON_AddItemToObject(m, "uidl", api_json_str(l->entries[i].uidl));
        cJSON_AddNumberToObject(m, "size", (double)l->entries[i].size);
        cJSON_AddBoolToObject(m, "marked", sessions_is_marked(x, l->entries[i].number));
        cJSON_AddItemToArray(arr, m);
    }
    return root;
}

/* The command on an acquired session (released here, or ended by QUIT). */
static void run_command(struct sx_call *c, struct session *x)
{
    struct pop3_sink k;
    api_sink(&k, &c->s);
    const struct pop3_listing *l = sessions_listing(x);
    if (c->number >= 1 && c->number <= l->count)
        snprintf(c->uidl, sizeof c->uidl, "%s", l->entries[c->number - 1].uidl);
    sessions_info(x, &c->info);
    switch (c->op) {
    case SX_QUIT:
        c->rc = sessions_quit(c->ss, x, &c->deleted, &c->uidls, &c->n_uidls, &c->e);
        return;
    case SX_LIST: c->list = listing_json(x); break;
    case SX_RETR: c->rc = sessions_retr(x, c->number, &k, &c->e); break;
    case SX_TOP: c->rc = sessions_top(x, c->number, c->lines, &k, &c->e); break;
    case SX_DELE: c->rc = sessions_dele(x, c->number, &c->e); break;
    case SX_RSET: c->rc = sessions_rset(x, &c->e); break;
    case SX_NOOP: c->rc = sessions_noop(x, &c->e); break;
    case SX_OPEN:
    case SX_INFO: break;
    }
    if (c->op == SX_RSET || c->op == SX_NOOP || c->op == SX_DELE)
        sessions_info(x, &c->info);
    sessions_release(c->ss, x);
}

/* SX_OPEN: log in (a provider account with its current OAuth2 access
 * token, as the poller does: once more with a fresh one if the server
 * refused it) and take the listing. */
static void open_work(struct sx_call *c)
{
    /* waiting for another instance's token refresh counts against the request's time */
    int64_t until = c->w.job.queued_at + c->limit_ms;
    char *tok = NULL;
    if (oauth2_managed(c->a)) {
        if (!(tok = malloc(2 * OAUTH2_TOKEN_BUF))) {
            c->rc = err_set(&c->e, ERR_INTERNAL, "out of memory");
            return;
        }
        if (api_oauth2_login_opts(c->st, c->a, NULL, until, &c->o, tok, &c->e) < 0) {
            c->rc = -1;
            goto out;
        }
    }
    c->rc = sessions_open(c->ss, c->account, &c->o, c->hold, &c->lim, &c->info, &c->e);
    if (c->rc < 0 && tok && api_oauth2_refused(c->a, &c->e)) {
        struct err e2;
        if (api_oauth2_login_opts(c->st, c->a, tok, until, &c->o, tok + OAUTH2_TOKEN_BUF,
                                  &e2) == 0)
            c->rc = sessions_open(c->ss, c->account, &c->o, c->hold, &c->lim, &c->info, &c->e);
    }
out:
    c->o.oauth2_token = NULL; /* the session keeps no credential past login (pop3.h) */
    if (tok) {
        OPENSSL_cleanse(tok, 2 * OAUTH2_TOKEN_BUF);
        free(tok);
    }
}

static void call_work(struct api_work *w)
{
    struct sx_call *c = (struct sx_call *)w;
    if (c->op == SX_OPEN) {
        open_work(c);
        return;
    }
    struct session *x = sessions_acquire(c->ss, c->id, c->wait_ms, &c->why);
    if (x)
        run_command(c, x);
}

struct owner_find {
    const char *tag;
    struct store_instance found;
    bool have;
};

static int owner_match(void *ctx, const struct store_instance *i, struct err *e)
{
    (void)e;
    struct owner_find *f = ctx;
    char tag[SESSIONS_ORIGIN_HEX + 1];
    sessions_origin_tag(i->id, tag);
    if (!f->have && strcmp(tag, f->tag) == 0) {
        f->found = *i;
        f->have = true;
    }
    return 0;
}

/* A session this instance does not know: opened on another live instance?
 * Then 421 naming that instance's api.public_url; answered, true. */
static bool misdirected(struct http_req *r, struct sx_call *c)
{
    char tag[SESSIONS_ORIGIN_HEX + 1];
    if (!sessions_foreign(c->ss, c->id, tag))
        return false;
    struct err e;
    err_clear(&e);
    struct store *st = api_store(r, &e);
    struct owner_find f = {.tag = tag};
    int64_t now = clock_wall_ms();
    if (!st || store_instances_each(st, now - http_cfg(r)->store.lease_ms, 0, owner_match, &f,
                                    &e) < 0 || !f.have)
        return false;
    http_problem(r, 421, "misdirected",
                 "session %.*s... lives on instance %s: send its requests to %s",
                 SESSIONS_LOG_ID, c->id, f.found.id,
                 f.found.public_url[0] ? f.found.public_url : "(no api.public_url)");
    return true;
}

/* The call's failure, if it failed: answered, true.  what names the command. */
static bool call_failed(struct http_req *r, struct sx_call *c, const char *what)
{
    if (c->why == SESSIONS_BUSY)
        http_problem(r, 409, "session-busy",
                     "the session is in use by another request; try again");
    else if (c->why == SESSIONS_NOTFOUND && misdirected(r, c))
        ;
    else if (c->why)
        http_problem(r, 404, "not-found", "no such session (it ended, or expired)");
    else if (c->rc == SESSIONS_NOMSG)
        http_problem(r, 404, "not-found", "no message %u in this session", c->number);
    else if (c->rc == SESSIONS_MARKED)
        http_problem(r, 409, "marked-deleted",
                     "message %u is marked for deletion in this session (RSET unmarks it)",
                     c->number);
    else if (c->rc != 0)
        api_reply_err(r, what, &c->e);
    return c->why || c->rc != 0;
}

static struct sx_call *call_new(struct http_req *r, enum sx_op op)
{
    struct sx_call *c = calloc(1, sizeof *c);
    if (!c) {
        http_problem(r, 500, "internal", "out of memory");
        return NULL;
    }
    int64_t t = api_request_timeout_ms(r);
    c->op = op;
    c->ss = api_sessions(r);
    c->id = http_param(r, "id");
    c->wait_ms = t < API_SESSION_WAIT_MS ? t : API_SESSION_WAIT_MS;
    c->limit_ms = t;
    spool_init(&c->s, op == SX_TOP ? NULL : api_tmp_dir(r), op == SX_TOP ? API_TOP_MAX
                                                                           : SPOOL_MEM_DEFAULT,
               op == SX_TOP ? API_TOP_MAX : 0);
    c->w.work = call_work;
    return c;
}

static void call_start(struct http_req *r, enum sx_op op,
                       void (*reply)(struct http_req *, struct api_work *))
{
    struct sx_call *c = call_new(r, op);
    if (!c)
        return;
    c->w.reply = reply;
    api_run(r, &c->w, call_free);
}

/* Commands on message {number} (with ?lines for TOP). */
static void number_start(struct http_req *r, enum sx_op op,
                         void (*reply)(struct http_req *, struct api_work *))
{
    const char *num = http_param(r, "number");
    uint64_t n, lines = 0;
    if (api_parse_u64(num, 1, POP3_MESSAGES_MAX, &n) < 0) {
        http_problem(r, 400, "bad-request", "\"%s\" is not a message number", num);
        return;
    }
    const char *v = op == SX_TOP ? http_query(r, "lines") : NULL;
    if (v && api_parse_u64(v, 0, API_TOP_LINES_MAX, &lines) < 0) {
        http_problem(r, 400, "bad-request", "lines must be a whole number from 0 to %d",
                     API_TOP_LINES_MAX);
        return;
    }
    struct sx_call *c = call_new(r, op);
    if (!c)
        return;
    c->number = (uint32_t)n;
    c->lines = (unsigned)lines;
    c->w.reply = reply;
    api_run(r, &c->w, call_free);
}

/* ---- POST /api/v1/accounts/{account}/sessions --------------------------------------------- */

static void reply_open(struct http_req *r, struct api_work *w)
{
    struct sx_call *c = (struct sx_call *)w;
    if (c->rc == SESSIONS_FULL) {
        int64_t s = c->lim.idle_ms / 1000;
        http_set_retry_after(r, s > 0 ? (int)s : 1);
        http_problem(r, 429, "session-limit",
                     "session limit reached (%d per account, %d in all): end a session "
                     "with DELETE /api/v1/sessions/{id}",
                     c->lim.per_account, c->lim.total);
        return;
    }
    if (call_failed(r, c, "POP3 session"))
        return;
    char loc[64 + SESSIONS_ID_LEN];
    snprintf(loc, sizeof loc, API_PREFIX "/sessions/%s", c->info.id);
    http_set_location(r, loc);
    http_reply_json(r, 201, session_json(&c->info));
}

static void h_session_open(struct http_req *r)
{
    const struct config_account *ca = api_account(r);
    if (!ca)
        return;
    struct sx_call *c = call_new(r, SX_OPEN);
    if (!c)
        return;
    const struct config_api *api = &http_cfg(r)->api;
    c->account = ca->name;
    c->a = ca;
    if (oauth2_managed(ca) && !(c->st = api_store(r, &c->e))) {
        http_problem(r, 500, "internal", "the store could not be opened: %s", c->e.msg);
        call_free(c);
        return;
    }
    c->hold = http_cfgref(r);
    pop3cfg_opts(ca, &c->o);
    c->lim = (struct sessions_limits){api->sessions_per_account, api->sessions_total,
                                      api->session_idle_timeout_ms};
    c->w.reply = reply_open;
    api_run(r, &c->w, call_free);
}

/* ---- /api/v1/sessions/{id} ------------------------------------------------------------------ */

static void reply_info(struct http_req *r, struct api_work *w)
{
    struct sx_call *c = (struct sx_call *)w;
    const char *what = c->op == SX_RSET ? "RSET" : c->op == SX_NOOP ? "NOOP" : "session";
    if (!call_failed(r, c, what))
        http_reply_json(r, 200, session_json(&c->info));
}

static void h_session(struct http_req *r) { call_start(r, SX_INFO, reply_info); }
static void h_session_reset(struct http_req *r) { call_start(r, SX_RSET, reply_info); }
static void h_session_noop(struct http_req *r) { call_start(r, SX_NOOP, reply_info); }

static void reply_quit(struct http_req *r, struct api_work *w)
{
    struct sx_call *c = (struct sx_call *)w;
    if (call_failed(r, c, "QUIT (nothing may be assumed deleted)"))
        return;
    struct err e;
    struct store *st = c->n_uidls ? api_store(r, &e) : NULL;
    if (c->n_uidls && (!st || store_uidls_mark_deleted(st, c->info.account,
                                                       (const char *const *)c->uidls,
                                                       c->n_uidls, &e) < 0))
        log_error("store_failed", "op=uidls_mark_deleted account=%s error=%s", c->info.account,
                  log_q(e.msg));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "deleted", c->deleted);
    http_reply_json(r, 200, o);
}

static void h_session_quit(struct http_req *r) { call_start(r, SX_QUIT, reply_quit); }

static void reply_list(struct http_req *r, struct api_work *w)
{
    struct sx_call *c = (struct sx_call *)w;
    if (call_failed(r, c, "session"))
        return;
    cJSON *list = c->list;
    c->list = NULL;
    http_reply_json(r, 200, list);
}

static void h_session_messages(struct http_req *r) { call_start(r, SX_LIST, reply_list); }

static void reply_retr(struct http_req *r, struct api_work *w)
{
    struct sx_call *c = (struct sx_call *)w;
    if (!call_failed(r, c, "RETR"))
        api_reply_message(r, c->info.account, c->uidl, &c->s);
}

static void h_session_retr(struct http_req *r) { number_start(r, SX_RETR, reply_retr); }

static void reply_top(struct http_req *r, struct api_work *w)
{
    struct sx_call *c = (struct sx_call *)w;
    if (!call_failed(r, c, "TOP"))
        api_reply_top(r, &c->s, c->uidl);
}

static void h_session_top(struct http_req *r) { number_start(r, SX_TOP, reply_top); }

static void reply_dele(struct http_req *r, struct api_work *w)
{
    struct sx_call *c = (struct sx_call *)w;
    if (!call_failed(r, c, "DELE"))
        http_reply_empty(r, 204);
}

static void h_session_dele(struct http_req *r) { number_start(r, SX_DELE, reply_dele); }

const struct http_route api_sessions_routes[] = {
    {"POST", "/api/v1/accounts/{account}/sessions", h_session_open, NULL, 0},
    {"GET", "/api/v1/sessions/{id}", h_session, NULL, 0},
    {"DELETE", "/api/v1/sessions/{id}", h_session_quit, NULL, 0},
    {"GET", "/api/v1/sessions/{id}/messages", h_session_messages, NULL, 0},
    {"GET", "/api/v1/sessions/{id}/messages/{number}", h_session_retr, NULL, 0},
    {"DELETE", "/api/v1/sessions/{id}/messages/{number}", h_session_dele, NULL, 0},
    {"GET", "/api/v1/sessions/{id}/messages/{number}/top", h_session_top, "lines", 0},
    {"POST", "/api/v1/sessions/{id}/reset", h_session_reset, NULL, 0},
    {"POST", "/api/v1/sessions/{id}/noop", h_session_noop, NULL, 0},
};
const size_t api_sessions_nroutes = sizeof api_sessions_routes / sizeof api_sessions_routes[0];
