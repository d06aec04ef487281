/* api — see include/api.h. */
#include "api.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api_accounts.h"
#include "api_instances.h"
#include "api_mailbox.h"
#include "api_oauth2.h"
#include "api_sessions.h"
#include "api_store.h"
#include "api_stats.h"
#include "clock.h"
#include "event.h"
#include "http_static.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "oauth2_device.h"
#include "sessions.h"

#define API_ROUTES_MAX 64

struct api {
    const struct runtime *rt;
    struct http_server *http;
    struct sessions *sessions;
    struct mailbox *mailbox;
    struct oauth2_devices *devices;
    struct mailbox_cache *summaries; /* From/Subject/Date of listed messages */
    int64_t request_timeout_ms;
    char state_dir[HTTP_PATH_MAX];
    char web_dir[HTTP_PATH_MAX];     /* real path; "" when there is none */
    char openapi[HTTP_PATH_MAX];     /* path of openapi.yaml; "" when not found */
    pthread_mutex_t pool_mu;
    struct store *pool[API_STORE_POOL];
    size_t npool;
};

/* What the API keeps for one request: its store handle, its POP3 work. */
struct api_req {
    struct api *api;
    struct store *st;
    struct api_work *work;
    void (*work_free)(void *);
};

/* ---- helpers for the handlers ------------------------------------------------------------ */

static struct api *api_of(const struct http_req *r) { return http_app(r); }

const struct runtime *api_runtime(const struct http_req *r) { return api_of(r)->rt; }
struct sessions *api_sessions(const struct http_req *r) { return api_of(r)->sessions; }
struct oauth2_devices *api_devices(const struct http_req *r) { return api_of(r)->devices; }
struct mailbox_cache *api_summaries(const struct http_req *r) { return api_of(r)->summaries; }
const char *api_tmp_dir(const struct http_req *r) { return api_of(r)->state_dir; }
int64_t api_request_timeout_ms(const struct http_req *r) { return api_of(r)->request_timeout_ms; }

static void store_put(struct api *a, struct store *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&a->pool_mu);
    if (a->npool < API_STORE_POOL) {
        a->pool[a->npool++] = st;
        st = NULL;
    }
    pthread_mutex_unlock(&a->pool_mu);
    store_close(st);
}

static void req_free(void *p)
{
    struct api_req *q = p;
    if (q->work_free)
        q->work_free(q->work);
    store_put(q->api, q->st);
    free(q);
}

/* The request's own data, made on first use; NULL when out of memory. */
static struct api_req *req_of(struct http_req *r)
{
    struct api_req *q = http_data(r);
    if (!q && (q = calloc(1, sizeof *q)) != NULL) {
        q->api = api_of(r);
        http_set_data(r, q, req_free);
    }
    return q;
}

struct store *api_store(struct http_req *r, struct err *e)
{
    struct api_req *q = req_of(r);
    if (!q) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (q->st)
        return q->st;
    struct api *a = q->api;
    pthread_mutex_lock(&a->pool_mu);
    if (a->npool)
        q->st = a->pool[--a->npool];
    pthread_mutex_unlock(&a->pool_mu);
    if (!q->st)
        q->st = store_open(a->state_dir, e);
    return q->st;
}

const struct config_account *api_account(struct http_req *r)
{
    const char *name = http_param(r, "account");
    const struct config_account *a = config_account_find(http_cfg(r), name);
    if (a)
        return a;
    http_problem(r, 404, "not-found", "no account named \"%s\" in the configuration",
                 name ? name : "");
    return NULL;
}

uint64_t api_inline_max(const struct config *cfg, const char *account)
{
    const struct config_account *a = config_account_find(cfg, account);
    if (a && a->webhook_count && a->webhook_index)
        return cfg->webhooks[a->webhook_index[0]].inline_attachments_max;
    return API_INLINE_DEFAULT;
}

int api_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 20 || (s[0] == '0' && s[1]))
        return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

cJSON *api_json_time(int64_t ms)
{
    if (ms <= 0)
        return cJSON_CreateNull();
    char buf[CLOCK_RFC3339_SIZE];
    return cJSON_CreateString(clock_rfc3339(ms, 1, buf, sizeof buf));
}

cJSON *api_json_str(const char *s)
{
    return s && *s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

/* ---- retrieved messages ------------------------------------------------------------------ */

static int sink_data(void *ctx, const char *buf, size_t len, struct err *e)
{
    return spool_write(ctx, buf, len, e);
}

void api_sink(struct pop3_sink *k, struct spool *s)
{
    memset(k, 0, sizeof *k);
    k->data = sink_data;
    k->ctx = s;
}

static void reply_raw(struct http_req *r, struct spool *s)
{
    struct spool_content c;
    struct err e;
    if (spool_take(s, &c, &e) < 0) {
        http_problem(r, 500, "internal", "%s", e.msg);
        return;
    }
    http_set_sandbox(r);
    if (c.fd >= 0)
        http_reply_fd(r, 200, c.fd, c.size, "message/rfc822");
    else
        http_reply_buffer(r, 200, c.mem, c.len, free, "message/rfc822");
}

void api_reply_message(struct http_req *r, const char *account, const char *uidl,
                       struct spool *s)
{
    const char *accept = http_header(r, "Accept");
    if (accept && strcasestr(accept, "message/rfc822")) {
        reply_raw(r, s);
        return;
    }
    struct err e;
    int64_t msg_id = 0;
    char idbuf[STORE_ID_MAX];
    enum store_uidl_state ust;
    struct store *st = api_store(r, &e);
    if (st && uidl && *uidl && store_uidl_get(st, account, uidl, &ust, &msg_id, &e) != 0)
        msg_id = 0;
    struct message_opts o = {
        .id = msg_id > 0 ? store_msg_id_format(msg_id, idbuf) : NULL,
        .uidl = uidl && *uidl ? uidl : NULL,
        .public_url = http_cfg(r)->api.public_url,
        .inline_max = api_inline_max(http_cfg(r), account),
    };
    unsigned char link_key[STORE_LINK_KEY_LEN];
    int64_t now_s = (int64_t)time(NULL);
    if (o.id && o.public_url && http_cfg(r)->links_ttl_ms > 0 &&
        store_link_key(st, link_key, NULL, now_s, &e) == 0) {
        o.link_key = link_key; /* else plain URLs, which need a token */
        o.link_key_len = sizeof link_key;
        o.link_exp = now_s + http_cfg(r)->links_ttl_ms / 1000;
    }
    const struct config_account *ca = config_account_find(http_cfg(r), account);
    if (ca) {
        o.trusted_authserv_ids = (const char *const *)ca->trusted_authserv_ids;
        o.trusted_authserv_id_count = ca->trusted_authserv_id_count;
        o.address = ca->address;
    }
    cJSON *m = s->fd >= 0 ? message_to_json_fd(s->fd, &o, &e)
                          : message_to_json(s->mem ? s->mem : "", s->len, &o, &e);
    OPENSSL_cleanse(link_key, sizeof link_key);
    spool_free(s);
    if (!m) {
        http_problem(r, 500, "internal", "the message could not be parsed: %s", e.msg);
        return;
    }
    http_reply_json(r, 200, m);
}

void api_reply_top(struct http_req *r, struct spool *s, const char *uidl)
{
    struct err e;
    cJSON *t = message_top_json(s->mem ? s->mem : "", s->len, uidl && *uidl ? uidl : NULL, &e);
    spool_free(s);
    if (!t) {
        http_problem(r, 500, "internal", "the TOP reply could not be parsed: %s", e.msg);
        return;
    }
    http_reply_json(r, 200, t);
}

/* ---- the one status mapping --------------------------------------------------------------- */

int api_http_status(const struct err *e, int *retry_after_s)
{
    *retry_after_s = 0;
    switch (e->kind) {
    case ERR_AUTH: return 502;
    case ERR_SERVER:
        switch (e->code) {
        case ERR_CODE_IN_USE: return 409;
        case ERR_CODE_LOGIN_DELAY: *retry_after_s = API_LOGIN_DELAY_RETRY_S; return 429;
        case ERR_CODE_SYS_TEMP: *retry_after_s = API_RETRY_AFTER_S; return 503;
        default: return 502;
        }
    case ERR_CONN:
    case ERR_TLS:
    case ERR_PROTO:
    case ERR_LIMIT: return 502;
    case ERR_TIMEOUT:
        if (e->code == ERR_CODE_REFRESH_WAIT) {
            *retry_after_s = API_REFRESH_WAIT_RETRY_S;
            return 503;
        }
        return 504;
    case ERR_NONE:
    case ERR_INTERNAL:
    case ERR_USAGE:
    default: return 500;
    }
}

void api_reply_err(struct http_req *r, const char *what, const struct err *e)
{
    static const struct {
        int status;
        const char *slug;
    } slugs[] = {{502, "upstream"},    {409, "in-use"},           {429, "login-delay"},
                 {503, "unavailable"}, {504, "upstream-timeout"}, {500, "internal"}};
    int ra;
    int status = api_http_status(e, &ra);
    http_set_retry_after(r, ra);
    const char *slug = "internal";
    for (size_t i = 0; i < sizeof slugs / sizeof slugs[0]; i++)
        if (slugs[i].status == status)
            slug = slugs[i].slug;
    if (e->kind == ERR_AUTH || (e->kind == ERR_SERVER && e->code == ERR_CODE_AUTH))
        slug = "upstream-auth";
    if (e->code == ERR_CODE_REFRESH_WAIT)
        slug = "oauth2-refresh-wait";
    char line[ERR_MSG_MAX + ERR_SERVER_MAX + 64];
    err_format(e, line, sizeof line);
    http_problem_err(r, (unsigned)status, slug, e->kind == ERR_INTERNAL ? NULL : e, "%s: %s",
                     what, line);
}

/* ---- POP3 work on the mailbox workers ------------------------------------------------------ */

static void work_run(struct mailbox_job *j, bool cancelled)
{
    struct api_work *w = (struct api_work *)j;
    struct http_req *r = w->r;
    w->cancelled = cancelled;
    if (!cancelled)
        w->work(w);
    http_resume(r); /* w may be freed from here on */
}

static void work_reply(struct http_req *r)
{
    struct api_req *q = http_data(r);
    struct api_work *w = q->work;
    if (w->cancelled) {
        http_set_retry_after(r, API_BUSY_RETRY_S);
        http_problem(r, 503, "busy",
                     "every POP3 worker of the API is busy (api.mailbox_workers); try again");
        return;
    }
    w->reply(r, w);
}

void api_run(struct http_req *r, struct api_work *w, void (*free_fn)(void *))
{
    struct api_req *q = req_of(r);
    if (!q) {
        if (free_fn)
            free_fn(w);
        http_problem(r, 500, "internal", "out of memory");
        return;
    }
    q->work = w;
    q->work_free = free_fn;
    w->r = r;
    w->job.run = work_run;
    w->cancelled = false;
    http_defer(r, work_reply);
    if (mailbox_submit(q->api->mailbox, &w->job) != 0) {
        w->cancelled = true;
        http_resume(r);
    }
}

/* ---- the operations endpoints ---------------------------------------------------------------- */

static void h_healthz(struct http_req *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    http_reply_json(r, 200, o);
}

/* Not ready: the reason only for a client with a token (it may name files). */
static void not_ready(struct http_req *r, const char *why)
{
    log_warn("not_ready", "reason=%s", log_q(why));
    if (http_authorized(r))
        http_problem(r, 503, "unavailable", "%s", why);
    else
        http_problem(r, 503, "unavailable", "not ready");
}

static void h_readyz(struct http_req *r)
{
    struct err e;
    if (runtime_stopping(api_runtime(r))) {
        not_ready(r, "the bridge is shutting down");
        return;
    }
    struct store *st = api_store(r, &e);
    if (!st || store_schema_version(st, &e) < 0) {
        char why[ERR_MSG_MAX + 32];
        snprintf(why, sizeof why, "the store is not usable: %s", e.msg);
        not_ready(r, why);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ready");
    http_reply_json(r, 200, o);
}

static void h_metrics(struct http_req *r)
{
    struct err e;
    struct store_queue_counts q;
    struct store *st = api_store(r, &e);
    bool have_q = st && store_delivery_counts(st, &q, &e) == 0;
    struct metrics_gauges g = {have_q ? &q : NULL, (int64_t)sessions_count(api_sessions(r))};
    size_t len;
    char *text = metrics_render(&g, &len, &e);
    if (!text) {
        http_problem(r, 500, "internal", "%s", e.msg);
        return;
    }
    http_reply_buffer(r, 200, text, len, free, "text/plain; version=0.0.4; charset=utf-8");
}

static void h_openapi(struct http_req *r)
{
    struct api *a = api_of(r);
    http_set_static(r);
    if (!a->openapi[0]) {
        http_problem(r, 404, "not-found", "openapi.yaml was not found next to the binary");
        return;
    }
    http_static_file(r, a->openapi, "application/yaml; charset=utf-8");
}

static void h_static(struct http_req *r) { http_static_serve(r, api_of(r)->web_dir); }

static const struct http_route ops_routes[] = {
    {"GET", "/healthz", h_healthz, NULL, HTTP_ROUTE_PUBLIC},
    {"GET", "/readyz", h_readyz, NULL, HTTP_ROUTE_PUBLIC},
    {"GET", "/metrics", h_metrics, NULL, 0},
    {"GET", "/openapi.yaml", h_openapi, NULL, HTTP_ROUTE_PUBLIC},
};

/* ---- the route table ------------------------------------------------------------------------- */

static struct http_route table[API_ROUTES_MAX];
static size_t table_n;
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_add(const struct http_route *v, size_t n)
{
    for (size_t i = 0; i < n && table_n < API_ROUTES_MAX; i++)
        table[table_n++] = v[i];
}

static void table_build(void)
{
    table_add(api_accounts_routes, api_accounts_nroutes);
    table_add(api_instances_routes, api_instances_nroutes);
    table_add(api_mailbox_routes, api_mailbox_nroutes);
    table_add(api_oauth2_routes, api_oauth2_nroutes);
    table_add(api_sessions_routes, api_sessions_nroutes);
    table_add(api_store_routes, api_store_nroutes);
    table_add(api_stats_routes, api_stats_nroutes);
    table_add(ops_routes, sizeof ops_routes / sizeof ops_routes[0]);
}

const struct http_route *api_routes(size_t *n)
{
    pthread_once(&table_once, table_build);
    *n = table_n;
    return table;
}

/* ---- start / stop ---------------------------------------------------------------------------- */

static struct cfgref *current_config(void *app)
{
    struct api *a = app;
    return runtime_config(a->rt);
}

/* Where openapi.yaml and the dashboard's files are. */
static void find_files(struct api *a, const struct config *cfg)
{
    char share[HTTP_PATH_MAX] = "", web[HTTP_PATH_MAX] = "", real[PATH_MAX];
    bool have_share = http_static_share_dir(share, sizeof share) == 0;
    if (have_share && snprintf(a->openapi, sizeof a->openapi, "%s/openapi.yaml", share) >=
                          (int)sizeof a->openapi)
        a->openapi[0] = '\0';
    if (cfg->api.web_dir)
        snprintf(web, sizeof web, "%s", cfg->api.web_dir);
    else if (have_share && snprintf(web, sizeof web, "%s/web", share) >= (int)sizeof web)
        web[0] = '\0';
    if (web[0] && realpath(web, real) && strlen(real) < sizeof a->web_dir)
        snprintf(a->web_dir, sizeof a->web_dir, "%s", real);
}

static struct http_server *start_http(struct api *a, const struct config *cfg, struct err *e)
{
    size_t n;
    const struct http_route *routes = api_routes(&n);
    struct http_options o = {
        .listen_host = cfg->api.listen_host,
        .listen_port = cfg->api.listen_port,
        .threads = (unsigned)cfg->api.threads,
        .max_connections = (unsigned)cfg->api.max_connections,
        .max_per_client = (unsigned)cfg->api.max_connections_per_client,
        .read_timeout_ms = cfg->api.request_read_timeout_ms,
        .idle_timeout_ms = cfg->api.request_timeout_ms,
        .max_body = cfg->api.max_request_body,
        .max_url = (size_t)cfg->api.max_url_length,
        .routes = routes,
        .nroutes = n,
        .fallback = h_static,
        .config = current_config,
        .link_verify = api_link_verify,
        .app = a,
    };
    return http_start(&o, e);
}

static void api_free(struct api *a)
{
    mailbox_free(&a->mailbox);
    oauth2_devices_free(&a->devices);
    mailbox_cache_free(&a->summaries);
    sessions_free(&a->sessions);
    for (size_t i = 0; i < a->npool; i++)
        store_close(a->pool[i]);
    pthread_mutex_destroy(&a->pool_mu);
    free(a);
}

/* A device-code authorization through the API was approved: poll the
 * account soon (never bypassing a backoff: the next poll then picks it up). */
static void device_authorized(void *ctx, const char *account)
{
    struct api *a = ctx;
    int64_t retry_after = 0;
    enum runtime_poll p = runtime_poll_now(a->rt, account, &retry_after);
    log_info("oauth2_device_poll_requested", "account=%s queued=%s retry_after_s=%lld", account,
             p == RUNTIME_POLL_QUEUED ? "yes" : "no", (long long)retry_after);
}

struct api *api_start(const struct runtime *rt, struct err *e)
{
    struct cfgref *ref = runtime_config(rt);
    const struct config *cfg = ref->cfg;
    struct api *a = calloc(1, sizeof *a);
    if (!a) {
        cfgref_put(ref);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    a->rt = rt;
    pthread_mutex_init(&a->pool_mu, NULL);
    a->request_timeout_ms = cfg->api.request_timeout_ms;
    snprintf(a->state_dir, sizeof a->state_dir, "%s", cfg->state_dir);
    find_files(a, cfg);
    a->sessions = sessions_new(e);
    if (a->sessions && cfg->store.url) {
        /* several instances: session ids say which one holds them (421) */
        char id[CONFIG_INSTANCE_ID_MAX + 1];
        config_instance_id(cfg, id, sizeof id);
        sessions_set_origin(a->sessions, id);
    }
    a->devices = a->sessions ? oauth2_devices_new(cfg->state_dir, device_authorized, a, e) : NULL;
    a->mailbox = a->devices ? mailbox_new((unsigned)cfg->api.mailbox_workers,
                                           (size_t)cfg->api.max_connections,
                                           cfg->api.request_timeout_ms, e)
                             : NULL;
    a->summaries = a->mailbox ? mailbox_cache_new(MAILBOX_CACHE_MAX) : NULL;
    if (a->mailbox && !a->summaries)
        err_set(e, ERR_INTERNAL, "out of memory for the message summary cache");
    a->http = a->summaries ? start_http(a, cfg, e) : NULL;
    if (!a->http) {
        cfgref_put(ref);
        api_free(a);
        return NULL;
    }
    log_info("api_listening",
             "listen=%s:%d threads=%d mailbox_workers=%d max_connections=%d per_client=%d "
             "web_dir=%s openapi=%s tokens=%zu",
             cfg->api.listen_host, cfg->api.listen_port, cfg->api.threads,
             cfg->api.mailbox_workers, cfg->api.max_connections,
             cfg->api.max_connections_per_client, log_q(a->web_dir[0] ? a->web_dir : "(none)"),
             log_q(a->openapi[0] ? a->openapi : "(none)"), cfg->api.token_count);
    cfgref_put(ref);
    return a;
}

void api_stop(struct api **ap)
{
    if (!ap || !*ap)
        return;
    struct api *a = *ap;
    *ap = NULL;
    /* every suspended request is resumed and answered before the server stops */
    mailbox_stop(a->mailbox);
    http_stop(&a->http);
    api_free(a);
}
