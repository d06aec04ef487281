/* http — see include/http.h. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "http_target.h"
#include "log.h"
#include "metrics.h"

#define LINK_PATH_MAX 4096 /* a signed link's decoded path */
#define API_SEGMENT "api" /* the first path segment under which every path needs a token */
#define CSP_DEFAULT                                                                            \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "         \
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "        \
    "form-action 'self'"
#define CSP_SANDBOX "sandbox; default-src 'none'; frame-ancestors 'none'"
#define STREAM_BLOCK (64u << 10)
#define CONN_MEMORY_EXTRA 32768 /* libmicrohttpd's per-connection memory beyond max_url */

/* ---- types ---------------------------------------------------------------------------- */

/* One connection, for the read deadline. */
struct conn {
    struct conn *prev, *next;
    int fd;
    _Atomic int64_t deadline; /* monotonic ms by which the current request must be read; 0: none */
    bool cut;                 /* shut down by the sweep */
};

struct http_server {
    struct http_options o;
    struct MHD_Daemon *d;
    int listen_fd;
    int port;
    pthread_mutex_t mu;       /* conns, stop */
    pthread_cond_t cv;
    struct conn *conns;
    bool stop;
    bool sweeping;            /* the sweep thread runs */
    pthread_t sweeper;
};

struct extra_header {
    const char *name;
    char *value;
};

struct http_req {
    struct http_server *srv;
    struct MHD_Connection *conn;
    char *uri;                 /* the raw request-target; NULL when too long */
    bool uri_too_long, started, body_too_large;
    uint64_t body_len;
    char *body;                /* the body read so far (at most max_body), NUL-terminated */
    size_t body_cap;
    const char *method;
    struct http_target t;
    const struct http_route *route;
    struct http_params params;
    struct cfgref *ref;
    bool authorized;
    bool link_ok;                 /* a signed link let it in (HTTP_ROUTE_SIGNED) */
    /* the answer */
    bool replied;
    enum MHD_Result rc;
    int status;
    char allow[HTTP_ALLOW_MAX];
    int retry_after;
    bool www_auth, sandbox, is_static;
    const char *cors_origin;   /* borrowed from the request's headers */
    struct extra_header extra[HTTP_EXTRA_HEADERS_MAX];
    size_t nextra;
    /* deferral and the handler's own data */
    http_handler then;
    void *data;
    void (*data_free)(void *);
    int64_t t0;
};

/* ---- the read deadline ------------------------------------------------------------------ */

static struct conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* A new request may start on c: it must be read within read_timeout. */
static void conn_reading(struct http_server *s, struct MHD_Connection *c)
{
    struct conn *k = conn_of(c);
    if (k)
        atomic_store(&k->deadline, clock_mono_ms() + s->o.read_timeout_ms);
}

static void conn_read_done(struct MHD_Connection *c)
{
    struct conn *k = conn_of(c);
    if (k)
        atomic_store(&k->deadline, 0);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct conn *k = calloc(1, sizeof *k);
        if (!k || !ci) {
            free(k);
            log_error("http_conn_untracked", "reason=%s", log_q("out of memory"));
            return;
        }
        k->fd = ci->connect_fd;
        atomic_init(&k->deadline, clock_mono_ms() + s->o.read_timeout_ms);
        pthread_mutex_lock(&s->mu);
        k->next = s->conns;
        if (s->conns)
            s->conns->prev = k;
        s->conns = k;
        pthread_mutex_unlock(&s->mu);
        *socket_context = k;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        /* libmicrohttpd closes the descriptor only after this returns, so the
         * sweep never shuts down a descriptor that was reused */
        struct conn *k = *socket_context;
        pthread_mutex_lock(&s->mu);
        if (k->prev)
            k->prev->next = k->next;
        else
            s->conns = k->next;
        if (k->next)
            k->next->prev = k->prev;
        pthread_mutex_unlock(&s->mu);
        free(k);
        *socket_context = NULL;
    }
}

/* Shut down every connection whose request is not read by its deadline:
 * libmicrohttpd then reads the end of the stream and closes it. */
static void *sweep(void *arg)
{
    struct http_server *s = arg;
    int64_t every = s->o.read_timeout_ms / 4;
    every = every < 50 ? 50 : every > HTTP_SWEEP_MAX_MS ? HTTP_SWEEP_MAX_MS : every;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        int64_t now = clock_mono_ms();
        size_t cut = 0;
        for (struct conn *k = s->conns; k; k = k->next) {
            int64_t dl = atomic_load(&k->deadline);
            if (dl && now >= dl && !k->cut) {
                shutdown(k->fd, SHUT_RDWR);
                k->cut = true;
                cut++;
            }
        }
        if (cut)
            log_info("http_read_timeout", "connections=%zu read_timeout_ms=%lld", cut,
                     (long long)s->o.read_timeout_ms);
        struct timespec ts;
        clock_deadline(&ts, every);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the request, for handlers ---------------------------------------------------------- */

void *http_app(const struct http_req *r) { return r->srv->o.app; }
const struct config *http_cfg(const struct http_req *r) { return r->ref->cfg; }
struct cfgref *http_cfgref(const struct http_req *r) { return r->ref; }
const char *http_method(const struct http_req *r) { return r->method; }
bool http_authorized(const struct http_req *r) { return r->authorized; }
void *http_data(const struct http_req *r) { return r->data; }

const char *http_param(const struct http_req *r, const char *name)
{
    return http_params_get(&r->params, name);
}

size_t http_segments(const struct http_req *r, const char *const **seg)
{
    *seg = r->t.seg;
    return r->t.nseg;
}

const char *http_query(const struct http_req *r, const char *name)
{
    return http_target_query(&r->t, name);
}

const char *http_header(const struct http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

void http_set_data(struct http_req *r, void *data, void (*free_fn)(void *))
{
    r->data = data;
    r->data_free = free_fn;
}

void http_defer(struct http_req *r, http_handler then)
{
    r->then = then;
    MHD_suspend_connection(r->conn);
}

void http_resume(struct http_req *r) { MHD_resume_connection(r->conn); }

void http_set_retry_after(struct http_req *r, int seconds) { r->retry_after = seconds; }
void http_set_sandbox(struct http_req *r) { r->sandbox = true; }
void http_set_static(struct http_req *r) { r->is_static = true; }

void http_add_header(struct http_req *r, const char *name, const char *value)
{
    if (r->nextra >= HTTP_EXTRA_HEADERS_MAX) {
        log_error("http_header_dropped", "name=%s", log_q(name));
        return;
    }
    char *v = strdup(value);
    if (!v)
        return;
    r->extra[r->nextra].name = name;
    r->extra[r->nextra].value = v;
    r->nextra++;
}

void http_set_location(struct http_req *r, const char *url)
{
    http_add_header(r, MHD_HTTP_HEADER_LOCATION, url);
}

/* ---- answers ---------------------------------------------------------------------------- */

static void access_log(struct http_req *r)
{
    long ms = (long)(clock_mono_ms() - r->t0);
    const char *what = r->route ? r->route->pattern : r->is_static ? "static" : "-";
    const char *m = r->method ? r->method : "-";
    if (r->status >= 500)
        log_warn("http", "method=%s route=%s status=%d ms=%ld", m, log_q(what), r->status, ms);
    else
        log_debug("http", "method=%s route=%s status=%d ms=%ld", m, log_q(what), r->status, ms);
}

static void add_common_headers(struct http_req *r, struct MHD_Response *resp, unsigned status)
{
    MHD_add_response_header(resp, "Content-Security-Policy",
                            r->sandbox ? CSP_SANDBOX : CSP_DEFAULT);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                            r->is_static ? "no-cache" : "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED && r->allow[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (status == MHD_HTTP_UNAUTHORIZED && r->www_auth)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"pop3bridge\"");
    for (size_t i = 0; i < r->nextra; i++)
        MHD_add_response_header(resp, r->extra[i].name, r->extra[i].value);
    if (r->cors_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "Location, Retry-After, Allow");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    }
}

/* Every answer goes out here: the common headers, CORS, metrics, log.  A
 * NULL response (out of memory) drops the connection. */
static void send_resp(struct http_req *r, unsigned status, struct MHD_Response *resp,
                      const char *ctype)
{
    if (r->replied) {
        log_error("http_second_answer", "status=%u", status);
        if (resp)
            MHD_destroy_response(resp);
        return;
    }
    r->replied = true;
    r->status = (int)status;
    if (!resp) {
        r->rc = MHD_NO;
        access_log(r);
        return;
    }
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_common_headers(r, resp, status);
    r->rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    metrics_on_http((int)status);
    access_log(r);
}

void http_reply_buffer(struct http_req *r, unsigned status, char *buf, size_t len,
                       void (*free_fn)(void *), const char *ctype)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(len, buf, free_fn);
    if (!resp)
        free_fn(buf);
    send_resp(r, status, resp, ctype);
}

static void reply_json_ct(struct http_req *r, unsigned status, cJSON *obj, const char *ctype)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s) {
        static const char oom[] = "{\"type\":\"" HTTP_PROBLEM_PREFIX "internal\",\"title\":"
                                  "\"Internal Server Error\",\"status\":500,\"detail\":"
                                  "\"out of memory building the response\"}";
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        send_resp(r, 500, resp, "application/problem+json");
        return;
    }
    http_reply_buffer(r, status, s, strlen(s), cJSON_free, ctype);
}

void http_reply_json(struct http_req *r, unsigned status, cJSON *obj)
{
    reply_json_ct(r, status, obj, "application/json");
}

void http_reply_empty(struct http_req *r, unsigned status)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    send_resp(r, status, resp, NULL);
}

void http_reply_fd(struct http_req *r, unsigned status, int fd, uint64_t size,
                   const char *ctype)
{
    struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);
    if (!resp)
        close(fd);
    send_resp(r, status, resp, ctype);
}

struct stream {
    http_read_fn read;
    void *cls;
    void (*free_cls)(void *);
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    size_t got = 0;
    if (st->read(st->cls, pos, buf, max, &got) < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return got ? (ssize_t)got : MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    if (st->free_cls)
        st->free_cls(st->cls);
    free(st);
}

void http_reply_stream(struct http_req *r, unsigned status, uint64_t size, http_read_fn read,
                       void *cls, void (*free_cls)(void *), const char *ctype)
{
    struct stream *st = malloc(sizeof *st);
    struct MHD_Response *resp = NULL;
    if (st) {
        *st = (struct stream){read, cls, free_cls};
        resp = MHD_create_response_from_callback(size, STREAM_BLOCK, stream_read, st,
                                                 stream_free);
        if (!resp)
            stream_free(st);
    } else if (free_cls) {
        free_cls(cls);
    }
    send_resp(r, status, resp, ctype);
}

static void problem_v(struct http_req *r, unsigned status, const char *slug,
                      const struct err *e, const char *fmt, va_list ap)
{
    char detail[HTTP_DETAIL_MAX], type[96];
    int n = vsnprintf(detail, sizeof detail, fmt, ap);
    if (n < 0)
        detail[0] = '\0';
    else if ((size_t)n >= sizeof detail)
        memcpy(detail + sizeof detail - 4, "...", 4);
    if (!g_utf8_validate_len(detail, strlen(detail), NULL))
        err_sanitize(detail, sizeof detail, detail, strlen(detail));
    if (snprintf(type, sizeof type, HTTP_PROBLEM_PREFIX "%s", slug) >= (int)sizeof type)
        type[sizeof type - 1] = '\0';
    const char *title = MHD_get_reason_phrase_for(status);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "title", title && *title ? title : "Error");
    cJSON_AddNumberToObject(o, "status", status);
    cJSON_AddStringToObject(o, "detail", detail);
    if (e && e->kind != ERR_NONE) {
        cJSON_AddStringToObject(o, "kind", err_kind_name(e->kind));
        cJSON_AddItemToObject(o, "code", e->code_text[0] ? cJSON_CreateString(e->code_text)
                                                         : cJSON_CreateNull());
        cJSON_AddItemToObject(o, "server_text", e->server[0] ? cJSON_CreateString(e->server)
                                                             : cJSON_CreateNull());
    }
    reply_json_ct(r, status, o, "application/problem+json");
}

void http_problem(struct http_req *r, unsigned status, const char *slug, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    problem_v(r, status, slug, NULL, fmt, ap);
    va_end(ap);
}

void http_problem_err(struct http_req *r, unsigned status, const char *slug,
                      const struct err *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    problem_v(r, status, slug, e, fmt, ap);
    va_end(ap);
}

/* ---- authentication and CORS ------------------------------------------------------------ */

static bool token_ok(struct http_req *r)
{
    const char *h = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    const char *t = h + 7;
    while (*t == ' ')
        t++;
    size_t tl = strlen(t);
    while (tl && t[tl - 1] == ' ')
        tl--;
    if (!tl)
        return false;
    unsigned char given[32], want[32];
    unsigned int dl;
    if (!EVP_Digest(t, tl, given, &dl, EVP_sha256(), NULL))
        return false;
    const struct config_api *api = &http_cfg(r)->api;
    int match = 0;
    for (size_t i = 0; i < api->token_count; i++) {
        const struct config_secret *s = &api->tokens[i].token;
        if (!s->value || !s->len)
            continue;
        if (!EVP_Digest(s->value, s->len, want, &dl, EVP_sha256(), NULL))
            continue;
        match |= CRYPTO_memcmp(given, want, sizeof given) == 0;
    }
    OPENSSL_cleanse(given, sizeof given);
    OPENSSL_cleanse(want, sizeof want);
    return match != 0;
}

static void cors_check(struct http_req *r)
{
    const char *origin = http_header(r, "Origin");
    if (!origin || !*origin)
        return;
    const struct config_api *api = &http_cfg(r)->api;
    for (size_t i = 0; i < api->cors_origin_count; i++) {
        if (strcmp(api->cors_origins[i], "*") == 0 || strcmp(api->cors_origins[i], origin) == 0) {
            r->cors_origin = origin;
            return;
        }
    }
}

/* An OPTIONS preflight from an allowed origin. */
static void preflight(struct http_req *r)
{
    char allow[HTTP_ALLOW_MAX];
    struct http_params p;
    const struct http_options *o = &r->srv->o;
    int k = http_route_find(o->routes, o->nroutes, "OPTIONS", r->t.seg, r->t.nseg, &p, allow,
                            sizeof allow, NULL);
    if (k == HTTP_ROUTE_NOT_FOUND) {
        http_problem(r, 404, "not-found", "no such resource");
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (resp) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, Accept");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
    send_resp(r, 204, resp, NULL);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* What the request-target says, before routing: 0, or -1 with the answer made. */
static int check_target(struct http_req *r)
{
    const struct http_options *o = &r->srv->o;
    if (r->body_too_large) {
        http_problem(r, 413, "body-too-large",
                     "the request body is larger than %llu bytes (api.max_request_body)",
                     (unsigned long long)o->max_body);
        return -1;
    }
    if (r->uri_too_long || !r->uri) {
        http_problem(r, 414, "uri-too-long",
                     "the request target is longer than %zu bytes (api.max_url_length)",
                     o->max_url);
        return -1;
    }
    const char *why = "";
    switch (http_target_parse(r->uri, &r->t, &why)) {
    case HTTP_TARGET_OK: return 0;
    case HTTP_TARGET_BAD_PATH: http_problem(r, 400, "bad-path", "malformed path: %s", why); break;
    case HTTP_TARGET_BAD_QUERY:
        http_problem(r, 400, "bad-query", "malformed query: %s", why);
        break;
    default: http_problem(r, 500, "internal", "out of memory"); break;
    }
    return -1;
}

/* A path no route has. */
static void no_route(struct http_req *r, bool under_api)
{
    if (under_api || !r->srv->o.fallback) {
        http_problem(r, 404, "not-found", "no such resource");
    } else if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0) {
        snprintf(r->allow, sizeof r->allow, "GET, HEAD");
        http_problem(r, 405, "method-not-allowed", "%s is not allowed here (allowed: %s)",
                     r->method, r->allow);
    } else if (r->t.nq) {
        http_problem(r, 400, "bad-query", "unknown query parameter \"%s\"", r->t.q[0].name);
    } else {
        r->srv->o.fallback(r);
    }
}

static void dispatch(struct http_req *r)
{
    const struct http_options *o = &r->srv->o;
    if (!r->body_too_large) /* a refused body may still be arriving: its deadline stays */
        conn_read_done(r->conn);
    r->ref = o->config(o->app);
    if (check_target(r) < 0)
        return;
    cors_check(r);
    r->authorized = token_ok(r);
    if (strcmp(r->method, "OPTIONS") == 0 && r->cors_origin &&
        http_header(r, "Access-Control-Request-Method")) {
        preflight(r);
        return;
    }
    bool public = false;
    bool under_api = r->t.nseg >= 1 && strcmp(r->t.seg[0], API_SEGMENT) == 0;
    int k = http_route_find(o->routes, o->nroutes, r->method, r->t.seg, r->t.nseg, &r->params,
                            r->allow, sizeof r->allow, &public);
    if (k >= 0 && !r->authorized && (o->routes[k].flags & HTTP_ROUTE_SIGNED) && o->link_verify &&
        (http_target_query(&r->t, "exp") || http_target_query(&r->t, "sig"))) {
        char path[LINK_PATH_MAX], why[256] = "";
        size_t used = 0;
        for (size_t i = 0; i < r->t.nseg && used < sizeof path; i++) {
            int n = snprintf(path + used, sizeof path - used, "/%s", r->t.seg[i]);
            used = n < 0 ? sizeof path : used + (size_t)n;
        }
        if (used >= sizeof path || o->link_verify(r, path, http_target_query(&r->t, "exp"),
                                                  http_target_query(&r->t, "sig"), why,
                                                  sizeof why) < 0) {
            http_problem(r, 403, "link-refused", "%s", why[0] ? why : "the link is not valid");
            return;
        }
        r->link_ok = true;
    }
    if ((under_api || (k != HTTP_ROUTE_NOT_FOUND && !public)) && !r->authorized && !r->link_ok) {
        r->www_auth = true;
        http_problem(r, 401, "unauthorized",
                     "a valid \"Authorization: Bearer <token>\" header is required");
        return;
    }
    if (k == HTTP_ROUTE_NO_METHOD) {
        http_problem(r, 405, "method-not-allowed", "%s is not allowed here (allowed: %s)",
                     r->method, r->allow);
        return;
    }
    if (k == HTTP_ROUTE_NOT_FOUND) {
        no_route(r, under_api);
        return;
    }
    r->route = &o->routes[k];
    for (size_t i = 0; i < r->t.nq; i++) {
        if (!http_route_query_ok(r->route, r->t.q[i].name)) {
            http_problem(r, 400, "bad-query", "unknown query parameter \"%s\"", r->t.q[i].name);
            return;
        }
    }
    r->route->fn(r);
}

/* After a handler or a continuation: it answered, or deferred. */
static enum MHD_Result settle(struct http_req *r)
{
    if (!r->replied && !r->then)
        http_problem(r, 500, "internal", "the request was not answered");
    return r->replied ? r->rc : MHD_YES;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    struct http_server *s = cls;
    struct http_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = s;
    r->conn = c;
    r->t0 = clock_mono_ms();
    if (strlen(uri) > s->o.max_url)
        r->uri_too_long = true;
    else
        r->uri = strdup(uri);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)url;
    (void)version;
    struct http_server *s = cls;
    struct http_req *r = *con_cls;
    if (!r)
        return MHD_NO; /* out of memory in on_uri: drop the connection */
    if (!r->started) {
        r->started = true;
        r->conn = c;
        r->method = method;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        char *end;
        errno = 0;
        unsigned long long n = cl ? strtoull(cl, &end, 10) : 0;
        if (cl && *cl >= '0' && *cl <= '9' && !*end && (errno == ERANGE || n > s->o.max_body)) {
            r->body_too_large = true;
            dispatch(r); /* refused before the body is read */
            return settle(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t had = (size_t)r->body_len;
        r->body_len += *upload_data_size;
        if (r->body_len > s->o.max_body) {
            r->body_too_large = true;
        } else if (!r->body_too_large) {
            if (r->body_len + 1 > r->body_cap) {
                size_t cap = r->body_cap ? r->body_cap : 1024;
                while (cap < r->body_len + 1)
                    cap *= 2;
                char *b = realloc(r->body, cap);
                if (!b)
                    return MHD_NO; /* out of memory: drop the connection */
                r->body = b;
                r->body_cap = cap;
            }
            memcpy(r->body + had, upload_data, *upload_data_size);
            r->body[r->body_len] = '\0';
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->then) {
        http_handler then = r->then;
        r->then = NULL;
        then(r);
        return settle(r);
    }
    if (r->replied)
        return MHD_YES;
    dispatch(r);
    return settle(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    struct http_server *s = cls;
    conn_reading(s, c); /* a kept-alive connection: the next request's time starts */
    struct http_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->data_free)
        r->data_free(r->data);
    cfgref_put(r->ref);
    http_target_free(&r->t);
    for (size_t i = 0; i < r->nextra; i++)
        free(r->extra[i].value);
    free(r->uri);
    free(r->body);
    free(r);
}

const char *http_body(const struct http_req *r, size_t *len)
{
    if (len)
        *len = r->body ? (size_t)r->body_len : 0;
    return r->body ? r->body : "";
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s); /* the raw target is decoded strictly by http_target_parse() */
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    if (n > 0) {
        size_t l = strlen(buf);
        while (l && (buf[l - 1] == '\n' || buf[l - 1] == '\r'))
            buf[--l] = '\0';
        log_debug("http_server", "message=%s", log_q(buf));
    }
}

/* ---- start / stop ------------------------------------------------------------------------- */

static int listen_socket(const char *host, int port, struct err *e)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g != 0)
        return err_set(e, ERR_CONN, "cannot listen on %s:%d (api.listen): %s", host, port,
                       gai_strerror(g));
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, HTTP_BACKLOG) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return err_set(e, ERR_CONN, "cannot listen on %s:%d (api.listen): %s", host, port,
                       strerror(saved));
    return fd;
}

/* Enough descriptors for every connection, as far as the hard limit allows. */
static void raise_fd_limit(unsigned max_connections)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)max_connections + HTTP_FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
        log_warn("http_fd_limit", "max_connections=%u descriptors=%llu note=%s", max_connections,
                 (unsigned long long)rl.rlim_cur,
                 log_q("RLIMIT_NOFILE is below api.max_connections plus a reserve"));
}

static struct MHD_Daemon *start_mhd(struct http_server *s)
{
    const struct http_options *o = &s->o;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL
                                                                    : MHD_USE_AUTO;
    unsigned idle_s = (unsigned)(o->idle_timeout_ms / 1000);
    size_t mem = o->max_url + CONN_MEMORY_EXTRA;
    return MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, o->threads > 1 ? o->threads : 0u,
        MHD_OPTION_CONNECTION_LIMIT, o->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        o->max_per_client, MHD_OPTION_CONNECTION_TIMEOUT, idle_s ? idle_s : 1u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, s, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
}

static void server_free(struct http_server *s)
{
    if (s->sweeping) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->sweeper, NULL);
    }
    if (s->d)
        MHD_stop_daemon(s->d); /* closes every connection: the list empties */
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

struct http_server *http_start(const struct http_options *o, struct err *e)
{
    size_t bad = 0;
    if (http_route_check(o->routes, o->nroutes, &bad) < 0) {
        err_set(e, ERR_INTERNAL, "bad route %zu in the table (%s)", bad,
                o->routes[bad].pattern ? o->routes[bad].pattern : "no pattern");
        return NULL;
    }
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->listen_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    int rc = clock_cond_init(&s->cv);
    if (rc != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        err_set(e, ERR_INTERNAL, "cannot make a condition variable: %s", strerror(rc));
        return NULL;
    }
    raise_fd_limit(o->max_connections);
    s->listen_fd = listen_socket(o->listen_host, o->listen_port, e);
    if (s->listen_fd < 0)
        goto fail;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    s->port = o->listen_port;
    if (getsockname(s->listen_fd, (struct sockaddr *)&sa, &sl) == 0)
        s->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                 : ((struct sockaddr_in *)&sa)->sin_port);
    rc = pthread_create(&s->sweeper, NULL, sweep, s);
    if (rc != 0) {
        err_set(e, ERR_INTERNAL, "cannot start the HTTP read-deadline thread: %s", strerror(rc));
        goto fail;
    }
    s->sweeping = true;
    s->d = start_mhd(s);
    if (!s->d) {
        err_set(e, ERR_INTERNAL, "cannot start the HTTP server on %s:%d", o->listen_host,
                o->listen_port);
        goto fail;
    }
    s->listen_fd = -1; /* libmicrohttpd owns it now and closes it when stopped */
    return s;
fail:
    server_free(s);
    return NULL;
}

int http_port(const struct http_server *s) { return s->port; }

void http_stop(struct http_server **sp)
{
    if (!sp || !*sp)
        return;
    server_free(*sp);
    *sp = NULL;
}
