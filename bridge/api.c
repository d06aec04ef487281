/* api — see include/api.h. */
#include "api.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "event.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "poller.h"
#include "runtime.h"
#include "sessions.h"
#include "store.h"

#define PROBLEM_TYPE_PREFIX "urn:pop3bridge:problem:"
#define CSP_DEFAULT                                                                            \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "         \
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "        \
    "form-action 'self'"
#define CSP_SANDBOX "sandbox; default-src 'none'; frame-ancestors 'none'"
#define READER_BLOCK (64u << 10)

/* ---- types ---------------------------------------------------------------------------- */

struct api {
    struct runtime *rt;
    struct MHD_Daemon *d;
    struct sessions *sessions;
    int listen_fd;
    uint64_t max_body;
    size_t max_url;
    int64_t request_timeout_ms;
    char state_dir[API_PATH_MAX];
    char web_dir[API_PATH_MAX];      /* real path; "" when there is none */
    char openapi[API_PATH_MAX];      /* path of openapi.yaml; "" when not found */
    pthread_mutex_t pool_mu;
    struct store *pool[API_STORE_POOL];
    size_t npool;
};

struct qparam {
    const char *name;
    const char *value;
};

struct req;
typedef enum MHD_Result (*handler_fn)(struct req *r);

struct route {
    const char *method;
    const char *pattern; /* "/api/v1/accounts/{account}"; "{...}" matches one segment */
    handler_fn fn;
    const char *query;   /* allowed query parameters, comma-separated; NULL: none */
};

struct req {
    struct api *api;
    struct MHD_Connection *conn;
    char *uri;                 /* the raw request-target; NULL when too long */
    bool uri_too_long, started, body_too_large;
    uint64_t body_len;
    const char *method;        /* as received; HEAD is routed as GET */
    char *buf;                 /* decoded path segments and query values */
    const char *seg[API_SEGMENTS_MAX];
    size_t nseg;
    struct qparam q[API_QUERY_MAX];
    size_t nq;
    const struct route *route;
    struct cfgref *ref;        /* the configuration for this request */
    struct store *st;          /* from the pool, when one was needed */
    char allow[96];            /* Allow header for 405 */
    int retry_after;           /* Retry-After header when > 0 */
    bool www_auth;             /* WWW-Authenticate on a 401 */
    bool sandbox;              /* CSP sandbox: raw mail and attachment bytes */
    bool is_static;
    const char *cors_origin;   /* allowed Origin (borrowed from the request) */
    char location[128];
    int status;
    struct timespec t0;
};

/* ---- small helpers -------------------------------------------------------------------- */

static int64_t now_ms(void) { return poller_now_ms(); }

static const struct config *cfg_of(struct req *r) { return r->ref->cfg; }

static const struct config_account *find_account(const struct config *cfg, const char *name)
{
    return config_account_find(cfg, name);
}

/* Inline limit for a message of `account`: its first webhook's, else 256 KiB. */
static uint64_t inline_max_for(const struct config *cfg, const char *account)
{
    const struct config_account *a = find_account(cfg, account);
    if (a && a->webhook_count && a->webhook_index)
        return cfg->webhooks[a->webhook_index[0]].inline_attachments_max;
    return 256u << 10;
}

static cJSON *time_or_null(int64_t ms)
{
    if (ms <= 0)
        return cJSON_CreateNull();
    char buf[40];
    return cJSON_CreateString(event_time(ms, buf, sizeof buf));
}

static cJSON *str_or_null(const char *s)
{
    return s && *s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

static const char *qvalue(const struct req *r, const char *name)
{
    for (size_t i = 0; i < r->nq; i++)
        if (strcmp(r->q[i].name, name) == 0)
            return r->q[i].value;
    return NULL;
}

/* Strict decimal in [min, max]: no sign, no leading zero, no spaces. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 20 || (s[0] == '0' && s[1]) )
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

static struct store *store_get(struct req *r, struct err *e)
{
    if (r->st)
        return r->st;
    struct api *a = r->api;
    pthread_mutex_lock(&a->pool_mu);
    if (a->npool)
        r->st = a->pool[--a->npool];
    pthread_mutex_unlock(&a->pool_mu);
    if (!r->st)
        r->st = store_open(a->state_dir, e);
    return r->st;
}

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

/* ---- UTF-8 and percent-decoding --------------------------------------------------------- */

bool api_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n) /* fewer than n continuation bytes left */
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

int api_pct_decode(const char *in, size_t len, char *out, size_t size, size_t *out_len,
                   const char **why)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            if (i + 2 >= len) {
                *why = "a \"%\" not followed by two hex digits";
                return -1;
            }
            int hi = codec_hex_value(in[i + 1]), lo = codec_hex_value(in[i + 2]);
            if (hi < 0 || lo < 0) {
                *why = "a \"%\" not followed by two hex digits";
                return -1;
            }
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        } else if (c == ' ') {
            *why = "a raw space";
            return -1;
        }
        if (c < 0x20 || c == 0x7F) {
            *why = "a control character";
            return -1;
        }
        if (o + 1 >= size) {
            *why = "too long";
            return -1;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (!api_utf8_valid(out, o)) {
        *why = "invalid UTF-8";
        return -1;
    }
    if (out_len)
        *out_len = o;
    return 0;
}

/* Split and decode a raw path into segments stored in buf.  "/" gives no
 * segments.  0, or -1 with *why. */
static int parse_path(const char *raw, size_t len, char *buf, size_t size, const char **seg,
                      size_t *nseg, const char **why)
{
    *nseg = 0;
    if (len == 0 || raw[0] != '/') {
        *why = "the path does not start with \"/\"";
        return -1;
    }
    if (len == 1)
        return 0;
    size_t used = 0, i = 1;
    for (;;) {
        const char *slash = memchr(raw + i, '/', len - i);
        size_t end = slash ? (size_t)(slash - raw) : len;
        size_t sl = end - i;
        if (*nseg >= API_SEGMENTS_MAX) {
            *why = "too many path segments";
            return -1;
        }
        if ((sl == 1 && raw[i] == '.') || (sl == 2 && raw[i] == '.' && raw[i + 1] == '.')) {
            *why = "a \".\" or \"..\" path segment";
            return -1;
        }
        size_t dl;
        if (api_pct_decode(raw + i, sl, buf + used, size - used, &dl, why) < 0)
            return -1;
        if (strcmp(buf + used, ".") == 0 || strcmp(buf + used, "..") == 0) {
            *why = "an encoded \".\" or \"..\" path segment";
            return -1;
        }
        seg[(*nseg)++] = buf + used;
        used += dl + 1;
        if (!slash)
            break;
        i = end + 1;
    }
    return 0;
}

/* ---- the route table -------------------------------------------------------------------- */

static enum MHD_Result h_accounts(struct req *r);
static enum MHD_Result h_account(struct req *r);
static enum MHD_Result h_poll(struct req *r);
static enum MHD_Result h_mailbox(struct req *r);
static enum MHD_Result h_messages(struct req *r);
static enum MHD_Result h_message(struct req *r);
static enum MHD_Result h_message_delete(struct req *r);
static enum MHD_Result h_message_top(struct req *r);
static enum MHD_Result h_session_open(struct req *r);
static enum MHD_Result h_session(struct req *r);
static enum MHD_Result h_session_quit(struct req *r);
static enum MHD_Result h_session_messages(struct req *r);
static enum MHD_Result h_session_retr(struct req *r);
static enum MHD_Result h_session_dele(struct req *r);
static enum MHD_Result h_session_top(struct req *r);
static enum MHD_Result h_session_reset(struct req *r);
static enum MHD_Result h_session_noop(struct req *r);
static enum MHD_Result h_stored(struct req *r);
static enum MHD_Result h_stored_raw(struct req *r);
static enum MHD_Result h_attachment(struct req *r);
static enum MHD_Result h_deliveries(struct req *r);
static enum MHD_Result h_delivery(struct req *r);
static enum MHD_Result h_delivery_retry(struct req *r);
static enum MHD_Result h_healthz(struct req *r);
static enum MHD_Result h_readyz(struct req *r);
static enum MHD_Result h_metrics(struct req *r);
static enum MHD_Result h_openapi(struct req *r);

static const struct route routes[] = {
    {"GET", "/api/v1/accounts", h_accounts, NULL},
    {"GET", "/api/v1/accounts/{account}", h_account, NULL},
    {"POST", "/api/v1/accounts/{account}/poll", h_poll, NULL},
    {"GET", "/api/v1/accounts/{account}/mailbox", h_mailbox, NULL},
    {"GET", "/api/v1/accounts/{account}/messages", h_messages, NULL},
    {"GET", "/api/v1/accounts/{account}/messages/{uidl}", h_message, NULL},
    {"DELETE", "/api/v1/accounts/{account}/messages/{uidl}", h_message_delete, NULL},
    {"GET", "/api/v1/accounts/{account}/messages/{uidl}/top", h_message_top, "lines"},
    {"POST", "/api/v1/accounts/{account}/sessions", h_session_open, NULL},
    {"GET", "/api/v1/sessions/{id}", h_session, NULL},
    {"DELETE", "/api/v1/sessions/{id}", h_session_quit, NULL},
    {"GET", "/api/v1/sessions/{id}/messages", h_session_messages, NULL},
    {"GET", "/api/v1/sessions/{id}/messages/{number}", h_session_retr, NULL},
    {"DELETE", "/api/v1/sessions/{id}/messages/{number}", h_session_dele, NULL},
    {"GET", "/api/v1/sessions/{id}/messages/{number}/top", h_session_top, "lines"},
    {"POST", "/api/v1/sessions/{id}/reset", h_session_reset, NULL},
    {"POST", "/api/v1/sessions/{id}/noop", h_session_noop, NULL},
    {"GET", "/api/v1/messages/{id}", h_stored, NULL},
    {"GET", "/api/v1/messages/{id}/raw", h_stored_raw, NULL},
    {"GET", "/api/v1/messages/{id}/attachments/{attachment_id}", h_attachment, NULL},
    {"GET", "/api/v1/deliveries", h_deliveries, "status,account,limit,cursor"},
    {"GET", "/api/v1/deliveries/{id}", h_delivery, NULL},
    {"POST", "/api/v1/deliveries/{id}/retry", h_delivery_retry, NULL},
    {"GET", "/healthz", h_healthz, NULL},
    {"GET", "/readyz", h_readyz, NULL},
    {"GET", "/metrics", h_metrics, NULL},
    {"GET", "/openapi.yaml", h_openapi, NULL},
};
#define NROUTES (sizeof routes / sizeof routes[0])

static bool pattern_match(const char *pat, const char *const *seg, size_t nseg)
{
    size_t i = 0;
    const char *p = pat + 1;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t pl = slash ? (size_t)(slash - p) : strlen(p);
        if (i >= nseg)
            return false;
        if (p[0] != '{') {
            if (strlen(seg[i]) != pl || memcmp(seg[i], p, pl) != 0)
                return false;
        } else if (!seg[i][0]) {
            return false; /* a parameter is never empty */
        }
        i++;
        p += pl + (slash ? 1 : 0);
    }
    return i == nseg;
}

static bool method_is(const char *route_method, const char *method)
{
    return strcmp(route_method, method) == 0 ||
           (strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

/* Route for method + decoded segments: >= 0, -404 or -405 (allow filled). */
static int route_find(const char *method, const char *const *seg, size_t nseg, char *allow,
                      size_t allow_size)
{
    bool path_known = false;
    size_t al = 0;
    if (allow_size)
        allow[0] = '\0';
    for (size_t i = 0; i < NROUTES; i++) {
        if (!pattern_match(routes[i].pattern, seg, nseg))
            continue;
        if (method_is(routes[i].method, method))
            return (int)i;
        path_known = true;
        const char *m = routes[i].method;
        int n = snprintf(allow + al, allow_size - al, "%s%s%s", al ? ", " : "", m,
                         strcmp(m, "GET") == 0 ? ", HEAD" : "");
        if (n > 0 && (size_t)n < allow_size - al)
            al += (size_t)n;
    }
    if (path_known)
        return -405;
    return -404;
}

int api_route_lookup(const char *method, const char *raw_path, char *allow, size_t allow_size)
{
    size_t len = strlen(raw_path);
    char *buf = malloc(len + 2);
    const char *seg[API_SEGMENTS_MAX], *why;
    size_t nseg;
    if (!buf)
        return -400;
    int rc = parse_path(raw_path, len, buf, len + 2, seg, &nseg, &why) < 0
                 ? -400
                 : route_find(method, seg, nseg, allow, allow_size);
    free(buf);
    return rc;
}

/* ---- the one status mapping ------------------------------------------------------------- */

int api_http_status(const struct err *e, int *retry_after_s)
{
    *retry_after_s = 0;
    switch (e->kind) {
    case ERR_AUTH: return MHD_HTTP_BAD_GATEWAY;
    case ERR_SERVER:
        switch (e->code) {
        case ERR_CODE_IN_USE: return MHD_HTTP_CONFLICT;
        case ERR_CODE_LOGIN_DELAY:
            *retry_after_s = API_LOGIN_DELAY_RETRY_S;
            return MHD_HTTP_TOO_MANY_REQUESTS;
        case ERR_CODE_SYS_TEMP:
            *retry_after_s = API_RETRY_AFTER_S;
            return MHD_HTTP_SERVICE_UNAVAILABLE;
        default: return MHD_HTTP_BAD_GATEWAY;
        }
    case ERR_CONN:
    case ERR_TLS:
    case ERR_PROTO:
    case ERR_LIMIT: return MHD_HTTP_BAD_GATEWAY;
    case ERR_TIMEOUT: return MHD_HTTP_GATEWAY_TIMEOUT;
    case ERR_NONE:
    case ERR_INTERNAL:
    case ERR_USAGE:
    default: return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

/* ---- responses -------------------------------------------------------------------------- */

static void access_log(struct req *r)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (long)((t1.tv_sec - r->t0.tv_sec) * 1000 + (t1.tv_nsec - r->t0.tv_nsec) / 1000000);
    const char *what = r->route ? r->route->pattern : r->is_static ? "static" : "-";
    if (r->status >= 500)
        log_warn("http", "method=%s route=%s status=%d ms=%ld", r->method ? r->method : "-",
                 log_q(what), r->status, ms);
    else
        log_debug("http", "method=%s route=%s status=%d ms=%ld", r->method ? r->method : "-",
                  log_q(what), r->status, ms);
}

/* Every response goes out here: the common headers, CORS, metrics, log. */
static enum MHD_Result send_resp(struct req *r, unsigned status, struct MHD_Response *resp,
                                 const char *ctype)
{
    if (!resp)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "Content-Security-Policy", r->sandbox ? CSP_SANDBOX : CSP_DEFAULT);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, r->is_static ? "no-cache" : "no-store");
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
    if (r->location[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, r->location);
    if (r->cors_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "Location, Retry-After, Allow");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    }
    r->status = (int)status;
    enum MHD_Result rc = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    metrics_on_http((int)status);
    access_log(r);
    return rc;
}

static enum MHD_Result reply_text(struct req *r, unsigned status, char *text, size_t len,
                                  void (*free_fn)(void *), const char *ctype)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(len, text, free_fn);
    if (!resp) {
        free_fn(text);
        return MHD_NO;
    }
    return send_resp(r, status, resp, ctype);
}

static enum MHD_Result reply_json_ct(struct req *r, unsigned status, cJSON *obj,
                                     const char *ctype)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s) {
        static const char oom[] = "{\"type\":\"" PROBLEM_TYPE_PREFIX "internal\",\"title\":"
                                  "\"Internal Server Error\",\"status\":500,\"detail\":"
                                  "\"out of memory building the response\"}";
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        return send_resp(r, 500, resp, "application/problem+json");
    }
    return reply_text(r, status, s, strlen(s), cJSON_free, ctype);
}

static enum MHD_Result reply_json(struct req *r, unsigned status, cJSON *obj)
{
    return reply_json_ct(r, status, obj, "application/json");
}

static enum MHD_Result reply_empty(struct req *r, unsigned status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"",
                                                                MHD_RESPMEM_PERSISTENT);
    return send_resp(r, status, resp, NULL);
}

/* THE writer of every application/problem+json (RFC 9457).  e (may be NULL)
 * adds the POP3 error's kind, response code and server text. */
static enum MHD_Result problem_e(struct req *r, unsigned status, const char *slug,
                                 const struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum MHD_Result problem_e(struct req *r, unsigned status, const char *slug,
                                 const struct err *e, const char *fmt, ...)
{
    char detail[1024], type[96];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (n < 0)
        detail[0] = '\0';
    else if ((size_t)n >= sizeof detail)
        memcpy(detail + sizeof detail - 4, "...", 4);
    if (!api_utf8_valid(detail, strlen(detail)))
        err_sanitize(detail, sizeof detail, detail, strlen(detail));
    if (snprintf(type, sizeof type, PROBLEM_TYPE_PREFIX "%s", slug) >= (int)sizeof type)
        type[sizeof type - 1] = '\0';
    const char *title = MHD_get_reason_phrase_for(status);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "title", title && *title ? title : "Error");
    cJSON_AddNumberToObject(o, "status", status);
    cJSON_AddStringToObject(o, "detail", detail);
    if (e && e->kind != ERR_NONE) {
        cJSON_AddStringToObject(o, "kind", err_kind_name(e->kind));
        cJSON_AddItemToObject(o, "code", str_or_null(e->code_text));
        cJSON_AddItemToObject(o, "server_text", str_or_null(e->server));
    }
    return reply_json_ct(r, status, o, "application/problem+json");
}

#define problem(r, status, slug, ...) problem_e(r, status, slug, NULL, __VA_ARGS__)

/* A failed POP3 (or store) operation, through the one mapping. */
static enum MHD_Result reply_err(struct req *r, const char *what, const struct err *e)
{
    int ra;
    int status = api_http_status(e, &ra);
    r->retry_after = ra;
    static const struct {
        int status;
        const char *slug;
    } slugs[] = {{502, "upstream"}, {409, "in-use"}, {429, "login-delay"},
                 {503, "unavailable"}, {504, "upstream-timeout"}, {500, "internal"}};
    const char *slug = "internal";
    for (size_t i = 0; i < sizeof slugs / sizeof slugs[0]; i++)
        if (slugs[i].status == status)
            slug = slugs[i].slug;
    if (e->kind == ERR_AUTH || (e->kind == ERR_SERVER && e->code == ERR_CODE_AUTH))
        slug = "upstream-auth";
    char line[ERR_MSG_MAX + ERR_SERVER_MAX + 64];
    err_format(e, line, sizeof line);
    return problem_e(r, (unsigned)status, slug, e->kind == ERR_INTERNAL ? NULL : e, "%s: %s",
                     what, line);
}

static enum MHD_Result no_account(struct req *r, const char *name)
{
    return problem(r, 404, "not-found", "no account named \"%s\" in the configuration", name);
}

/* ---- spooling a retrieved message ------------------------------------------------------- */

struct spool {
    const char *dir;
    char *mem;
    size_t len, cap;
    int fd;            /* -1 while in memory */
    uint64_t size;
    uint64_t max;      /* 0: no limit; over it: silently cut (TOP) */
};

static int open_tmp(const char *dir, struct err *e)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        err_set(e, ERR_INTERNAL, "cannot create a temporary file in %s: %s", dir,
                strerror(errno));
    return fd;
}

static int write_all(int fd, const char *p, size_t n, struct err *e)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return err_set(e, ERR_INTERNAL, "spool file: %s", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int spool_put(struct spool *s, const void *data, size_t len, struct err *e)
{
    if (s->max && s->size + len > s->max)
        len = s->size >= s->max ? 0 : (size_t)(s->max - s->size);
    if (!len)
        return 0;
    s->size += len;
    if (s->fd < 0 && s->len + len > API_SPOOL_MEM_MAX && s->dir) {
        s->fd = open_tmp(s->dir, e);
        if (s->fd < 0)
            return -1;
        if (write_all(s->fd, s->mem ? s->mem : "", s->len, e) < 0)
            return -1;
        free(s->mem);
        s->mem = NULL;
        s->len = s->cap = 0;
    }
    if (s->fd >= 0)
        return write_all(s->fd, data, len, e);
    if (s->len + len + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 16384;
        while (cap < s->len + len + 1)
            cap *= 2;
        char *p = realloc(s->mem, cap);
        if (!p)
            return err_set(e, ERR_INTERNAL, "out of memory spooling %zu bytes", s->len + len);
        s->mem = p;
        s->cap = cap;
    }
    memcpy(s->mem + s->len, data, len);
    s->len += len;
    s->mem[s->len] = '\0';
    return 0;
}

static void spool_free(struct spool *s)
{
    free(s->mem);
    s->mem = NULL;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static int sink_data(void *ctx, const char *buf, size_t len, struct err *e)
{
    return spool_put(ctx, buf, len, e);
}

static int sink_store(void *ctx, const void *data, size_t len, struct err *e)
{
    return spool_put(ctx, data, len, e);
}

static int sink_att(void *ctx, const void *buf, size_t len)
{
    struct err e;
    return spool_put(ctx, buf, len, &e) < 0 ? 1 : 0;
}

/* Response with the spooled bytes (consumes the spool). */
static struct MHD_Response *spool_response(struct spool *s)
{
    struct MHD_Response *resp;
    if (s->fd >= 0) {
        resp = MHD_create_response_from_fd64(s->size, s->fd);
        if (resp)
            s->fd = -1; /* closed by libmicrohttpd */
    } else {
        char *m = s->mem ? s->mem : strdup("");
        resp = m ? MHD_create_response_from_buffer_with_free_callback(s->len, m, free) : NULL;
        if (resp)
            s->mem = NULL;
        else if (!s->mem)
            free(m);
    }
    spool_free(s);
    return resp;
}

static cJSON *spool_json(struct spool *s, const struct message_opts *o, struct err *e)
{
    if (s->fd >= 0)
        return message_to_json_fd(s->fd, o, e);
    return message_to_json(s->mem ? s->mem : "", s->len, o, e);
}

/* ---- POP3 one-shot sessions ------------------------------------------------------------- */

static struct pop3 *oneshot_open(struct req *r, const struct config_account *a, struct err *e)
{
    struct pop3_opts o;
    poller_pop3_opts(a, &o);
    o.session_timeout_ms = r->api->request_timeout_ms;
    return pop3_open(&o, e);
}

/* QUIT after a read-only operation: its outcome changes nothing. */
static void oneshot_close(struct pop3 **p)
{
    struct err e;
    if (*p && pop3_quit(p, &e) < 0)
        log_debug("api_quit_failed", "error=%s", log_q(e.msg));
}

static const struct pop3_entry *find_uidl(const struct pop3_listing *l, const char *uidl)
{
    for (uint32_t i = 0; i < l->count; i++)
        if (l->entries[i].number && strcmp(l->entries[i].uidl, uidl) == 0)
            return &l->entries[i];
    return NULL;
}

/* ---- JSON views ------------------------------------------------------------------------- */

static cJSON *account_json(struct req *r, const struct config_account *ca)
{
    struct rt_account ra;
    bool live = runtime_account(r->api->rt, ca->name, &ra) == 0;
    struct store_account_counts cnt = {0};
    struct err e;
    struct store *st = store_get(r, &e);
    if (!st || store_account_counts(st, ca->name, &cnt, &e) < 0)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", ca->name);
    cJSON_AddStringToObject(o, "state", account_state_name(live ? ra.state : ACCOUNT_IDLE));
    cJSON_AddItemToObject(o, "last_attempt_at", time_or_null(live ? ra.last_attempt_at : 0));
    cJSON_AddItemToObject(o, "last_success_at", time_or_null(live ? ra.last_success_at : 0));
    cJSON_AddItemToObject(o, "last_error", str_or_null(live ? ra.last_error : NULL));
    cJSON_AddNumberToObject(o, "stored", (double)cnt.stored);
    cJSON_AddNumberToObject(o, "pending_deliveries", (double)cnt.pending_deliveries);
    return o;
}

static cJSON *delivery_json(const struct store_delivery *d)
{
    char id[STORE_ID_MAX], mid[STORE_ID_MAX];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", store_delivery_id_format(d->id, id));
    cJSON_AddStringToObject(o, "message_id", store_msg_id_format(d->msg_id, mid));
    cJSON_AddStringToObject(o, "account", d->account);
    cJSON_AddStringToObject(o, "uidl", d->uidl);
    cJSON_AddStringToObject(o, "webhook", d->webhook);
    cJSON_AddStringToObject(o, "status", store_dstatus_name(d->status));
    cJSON_AddNumberToObject(o, "attempt_count", d->attempts);
    cJSON_AddItemToObject(o, "created_at", time_or_null(d->created_at));
    cJSON_AddItemToObject(o, "updated_at", time_or_null(d->updated_at));
    bool waiting = d->status == STORE_D_PENDING || d->status == STORE_D_FAILED;
    cJSON_AddItemToObject(o, "next_attempt_at", time_or_null(waiting ? d->next_attempt_at : 0));
    cJSON_AddItemToObject(o, "delivered_at", time_or_null(d->delivered_at));
    if (d->last_http_status)
        cJSON_AddNumberToObject(o, "last_http_status", d->last_http_status);
    else
        cJSON_AddNullToObject(o, "last_http_status");
    cJSON_AddItemToObject(o, "last_error", str_or_null(d->last_error));
    return o;
}

static cJSON *session_json(const struct session_info *i)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", i->id);
    cJSON_AddStringToObject(o, "account", i->account);
    cJSON_AddNumberToObject(o, "count", i->count);
    cJSON_AddNumberToObject(o, "octets", (double)i->octets);
    cJSON_AddNumberToObject(o, "marked", i->marked);
    cJSON_AddItemToObject(o, "created_at", time_or_null(i->created_at));
    cJSON_AddItemToObject(o, "expires_at", time_or_null(i->expires_at));
    return o;
}

/* ---- handlers: accounts ----------------------------------------------------------------- */

static enum MHD_Result h_accounts(struct req *r)
{
    const struct config *cfg = cfg_of(r);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "accounts");
    for (size_t i = 0; i < cfg->account_count; i++) {
        cJSON *a = account_json(r, &cfg->accounts[i]);
        if (!a) {
            cJSON_Delete(root);
            return problem(r, 500, "internal", "the store could not be read");
        }
        cJSON_AddItemToArray(arr, a);
    }
    return reply_json(r, 200, root);
}

static enum MHD_Result h_account(struct req *r)
{
    const struct config_account *ca = find_account(cfg_of(r), r->seg[3]);
    if (!ca)
        return no_account(r, r->seg[3]);
    cJSON *a = account_json(r, ca);
    if (!a)
        return problem(r, 500, "internal", "the store could not be read");
    return reply_json(r, 200, a);
}

static enum MHD_Result h_poll(struct req *r)
{
    const struct config_account *ca = find_account(cfg_of(r), r->seg[3]);
    if (!ca || runtime_poll_now(r->api->rt, ca->name) < 0)
        return no_account(r, r->seg[3]);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "account", ca->name);
    cJSON_AddTrueToObject(o, "poll_requested");
    return reply_json(r, 202, o);
}

static enum MHD_Result h_mailbox(struct req *r)
{
    const struct config_account *ca = find_account(cfg_of(r), r->seg[3]);
    if (!ca)
        return no_account(r, r->seg[3]);
    struct err e;
    uint32_t count;
    uint64_t octets;
    struct pop3 *p = oneshot_open(r, ca, &e);
    if (!p)
        return reply_err(r, "POP3 login", &e);
    if (pop3_stat(p, &count, &octets, &e) < 0) {
        pop3_abort(&p);
        return reply_err(r, "STAT", &e);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", count);
    cJSON_AddNumberToObject(o, "octets", (double)octets);
    cJSON *caps = cJSON_AddArrayToObject(o, "capabilities");
    const struct pop3_capa *c = pop3_capa(p);
    for (size_t i = 0; c && i < c->n_lines; i++)
        cJSON_AddItemToArray(caps, cJSON_CreateString(c->lines[i]));
    oneshot_close(&p);
    return reply_json(r, 200, o);
}

struct known_uidl {
    char *uidl;
    enum store_uidl_state state;
    int64_t msg_id;
};
struct known_set {
    struct known_uidl *v;
    size_t n, cap;
};

static int known_add(void *ctx, const char *uidl, enum store_uidl_state state, int64_t msg_id,
                     struct err *e)
{
    struct known_set *k = ctx;
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 256;
        struct known_uidl *v = realloc(k->v, cap * sizeof *v);
        if (!v)
            return err_set(e, ERR_INTERNAL, "out of memory");
        k->v = v;
        k->cap = cap;
    }
    k->v[k->n].uidl = strdup(uidl);
    if (!k->v[k->n].uidl)
        return err_set(e, ERR_INTERNAL, "out of memory");
    k->v[k->n].state = state;
    k->v[k->n].msg_id = msg_id;
    k->n++;
    return 0;
}

static int known_cmp(const void *a, const void *b)
{
    return strcmp(((const struct known_uidl *)a)->uidl, ((const struct known_uidl *)b)->uidl);
}

static void known_free(struct known_set *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->v[i].uidl);
    free(k->v);
}

static enum MHD_Result h_messages(struct req *r)
{
    const struct config_account *ca = find_account(cfg_of(r), r->seg[3]);
    if (!ca)
        return no_account(r, r->seg[3]);
    struct err e;
    struct pop3_listing *l = NULL;
    struct pop3 *p = oneshot_open(r, ca, &e);
    if (!p)
        return reply_err(r, "POP3 login", &e);
    if (pop3_listing(p, &l, &e) < 0) {
        pop3_abort(&p);
        return reply_err(r, "listing", &e);
    }
    oneshot_close(&p);
    struct known_set k = {0};
    struct store *st = store_get(r, &e);
    if (!st || store_uidls_each(st, ca->name, known_add, &k, &e) < 0) {
        known_free(&k);
        pop3_listing_free(&l);
        return problem(r, 500, "internal", "the store could not be read: %s", e.msg);
    }
    qsort(k.v, k.n, sizeof *k.v, known_cmp);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "messages");
    for (uint32_t i = 0; i < l->count; i++) {
        const struct pop3_entry *en = &l->entries[i];
        struct known_uidl key = {.uidl = (char *)en->uidl};
        const struct known_uidl *kn =
            l->has_uidl ? bsearch(&key, k.v, k.n, sizeof *k.v, known_cmp) : NULL;
        bool stored = kn && kn->msg_id > 0, delivered = kn && kn->state == STORE_UIDL_DELIVERED;
        if (kn && kn->state == STORE_UIDL_DELETED && kn->msg_id > 0) {
            struct store_msg_info mi;
            delivered = store_msg_get(st, kn->msg_id, &mi, &e) == 0 && mi.delivered_at > 0;
        }
        cJSON *m = cJSON_CreateObject();
        cJSON_AddNumberToObject(m, "number", en->number);
        cJSON_AddItemToObject(m, "uidl", str_or_null(en->uidl));
        cJSON_AddNumberToObject(m, "size", (double)en->size);
        cJSON_AddBoolToObject(m, "stored", stored);
        cJSON_AddBoolToObject(m, "delivered", delivered);
        char id[STORE_ID_MAX];
        cJSON_AddItemToObject(m, "id", stored ? cJSON_CreateString(store_msg_id_format(
                                                    kn->msg_id, id))
                                              : cJSON_CreateNull());
        cJSON_AddItemToArray(arr, m);
    }
    known_free(&k);
    pop3_listing_free(&l);
    return reply_json(r, 200, root);
}

static bool wants_raw(struct req *r)
{
    const char *acc = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
    return acc && strcasestr(acc, "message/rfc822") != NULL;
}

/* Reply with a retrieved message: raw (Accept: message/rfc822) or as JSON. */
static enum MHD_Result reply_message(struct req *r, const char *account, const char *uidl,
                                     struct spool *s)
{
    if (wants_raw(r)) {
        r->sandbox = true;
        return send_resp(r, 200, spool_response(s), "message/rfc822");
    }
    struct err e;
    int64_t msg_id = 0;
    char idbuf[STORE_ID_MAX];
    struct store *st = store_get(r, &e);
    enum store_uidl_state ust;
    if (st && uidl && *uidl && store_uidl_get(st, account, uidl, &ust, &msg_id, &e) != 0)
        msg_id = 0;
    struct message_opts o = {
        .id = msg_id > 0 ? store_msg_id_format(msg_id, idbuf) : NULL,
        .uidl = uidl && *uidl ? uidl : NULL,
        .public_url = cfg_of(r)->api.public_url,
        .inline_max = inline_max_for(cfg_of(r), account),
    };
    const struct config_account *ca = find_account(cfg_of(r), account);
    if (ca) {
        o.trusted_authserv_ids = (const char *const *)ca->trusted_authserv_ids;
        o.trusted_authserv_id_count = ca->trusted_authserv_id_count;
        o.address = ca->address;
    }
    cJSON *m = spool_json(s, &o, &e);
    spool_free(s);
    if (!m)
        return problem(r, 500, "internal", "the message could not be parsed: %s", e.msg);
    return reply_json(r, 200, m);
}

static void top_sink(struct spool *s, struct pop3_sink *k)
{
    memset(k, 0, sizeof *k);
    k->data = sink_data;
    k->ctx = s;
}

/* A one-shot session of the request's account (seg[3]), with the number of the
 * message whose UIDL is seg[5].  0 with *pp open; -1 with *ret the reply already
 * made (no such account or message, or the POP3 failure). */
static int oneshot_at_uidl(struct req *r, const struct config_account **cap, struct pop3 **pp,
                           uint32_t *num, enum MHD_Result *ret)
{
    const struct config_account *ca = find_account(cfg_of(r), r->seg[3]);
    const char *uidl = r->seg[5];
    struct err e;
    struct pop3_listing *l = NULL;
    *pp = NULL;
    if (!ca) {
        *ret = no_account(r, r->seg[3]);
        return -1;
    }
    struct pop3 *p = oneshot_open(r, ca, &e);
    if (!p) {
        *ret = reply_err(r, "POP3 login", &e);
        return -1;
    }
    if (pop3_listing(p, &l, &e) < 0) {
        pop3_abort(&p);
        *ret = reply_err(r, "listing", &e);
        return -1;
    }
    const struct pop3_entry *en = find_uidl(l, uidl);
    if (!en) {
        oneshot_close(&p);
        pop3_listing_free(&l);
        *ret = problem(r, 404, "not-found", "no message with UIDL \"%s\" in mailbox %s", uidl,
                       ca->name);
        return -1;
    }
    *num = en->number;
    pop3_listing_free(&l);
    *cap = ca;
    *pp = p;
    return 0;
}

static enum MHD_Result h_message(struct req *r)
{
    const struct config_account *ca;
    const char *uidl = r->seg[5];
    struct err e;
    struct pop3 *p;
    uint32_t num;
    enum MHD_Result ret;
    if (oneshot_at_uidl(r, &ca, &p, &num, &ret) < 0)
        return ret;
    struct spool s = {.dir = r->api->state_dir, .fd = -1};
    struct pop3_sink k;
    top_sink(&s, &k);
    if (pop3_retr(p, &num, 1, &k, &e) < 0) {
        pop3_abort(&p);
        spool_free(&s);
        return reply_err(r, "RETR", &e);
    }
    oneshot_close(&p);
    return reply_message(r, ca->name, uidl, &s);
}

static int parse_lines(struct req *r, unsigned *lines)
{
    const char *v = qvalue(r, "lines");
    uint64_t n = 0;
    if (v && parse_u64(v, 0, API_TOP_LINES_MAX, &n) < 0)
        return -1;
    *lines = (unsigned)n;
    return 0;
}

static enum MHD_Result reply_top(struct req *r, struct spool *s, const char *uidl)
{
    struct err e;
    cJSON *t = message_top_json(s->mem ? s->mem : "", s->len, uidl && *uidl ? uidl : NULL, &e);
    spool_free(s);
    if (!t)
        return problem(r, 500, "internal", "the TOP reply could not be parsed: %s", e.msg);
    return reply_json(r, 200, t);
}

static enum MHD_Result h_message_top(struct req *r)
{
    unsigned lines;
    if (parse_lines(r, &lines) < 0)
        return problem(r, 400, "bad-request", "lines must be a whole number from 0 to %d",
                       API_TOP_LINES_MAX);
    const struct config_account *ca;
    const char *uidl = r->seg[5];
    struct err e;
    struct pop3 *p;
    uint32_t num;
    enum MHD_Result ret;
    if (oneshot_at_uidl(r, &ca, &p, &num, &ret) < 0)
        return ret;
    struct spool s = {.fd = -1, .max = API_TOP_MAX};
    struct pop3_sink k;
    top_sink(&s, &k);
    if (pop3_top(p, num, lines, &k, &e) < 0) {
        pop3_abort(&p);
        spool_free(&s);
        return reply_err(r, "TOP", &e);
    }
    oneshot_close(&p);
    return reply_top(r, &s, uidl);
}

static enum MHD_Result h_message_delete(struct req *r)
{
    const struct config_account *ca;
    const char *uidl = r->seg[5];
    struct err e;
    struct pop3 *p;
    uint32_t num;
    enum MHD_Result ret;
    if (oneshot_at_uidl(r, &ca, &p, &num, &ret) < 0)
        return ret;
    if (pop3_dele(p, &num, 1, &e) < 0) {
        pop3_abort(&p); /* nothing deleted */
        return reply_err(r, "DELE", &e);
    }
    if (pop3_quit(&p, &e) < 0)
        return reply_err(r, "QUIT (nothing may be assumed deleted)", &e);
    struct store *st = store_get(r, &e);
    const char *one[1] = {uidl};
    if (!st || store_uidls_mark_deleted(st, ca->name, one, 1, &e) < 0)
        log_error("store_failed", "op=uidls_mark_deleted account=%s error=%s", ca->name,
                  log_q(e.msg));
    log_info("api_deleted", "account=%s uidl=%s", ca->name, log_q(uidl));
    return reply_empty(r, 204);
}

/* ---- handlers: explicit sessions -------------------------------------------------------- */

static enum MHD_Result h_session_open(struct req *r)
{
    const struct config *cfg = cfg_of(r);
    const struct config_account *ca = find_account(cfg, r->seg[3]);
    if (!ca)
        return no_account(r, r->seg[3]);
    struct pop3_opts o;
    poller_pop3_opts(ca, &o);
    struct sessions_limits lim = {cfg->api.sessions_per_account, cfg->api.sessions_total,
                                  cfg->api.session_idle_timeout_ms};
    struct session_info info;
    struct err e;
    int rc = sessions_open(r->api->sessions, ca->name, &o, r->ref, &lim, &info, &e);
    if (rc == SESSIONS_FULL) {
        r->retry_after = (int)(lim.idle_ms / 1000 > 0 ? lim.idle_ms / 1000 : 1);
        return problem(r, 429, "session-limit",
                       "session limit reached (%d per account, %d in all): end a session "
                       "with DELETE /api/v1/sessions/{id}",
                       lim.per_account, lim.total);
    }
    if (rc < 0)
        return reply_err(r, "POP3 session", &e);
    snprintf(r->location, sizeof r->location, API_PREFIX "/sessions/%s", info.id);
    return reply_json(r, 201, session_json(&info));
}

/* Take the session named in the path; on failure the reply is queued and
 * NULL returned with *rc set. */
static struct session *take(struct req *r, enum MHD_Result *rc)
{
    int why = 0;
    int64_t wait = r->api->request_timeout_ms < API_SESSION_WAIT_MS ? r->api->request_timeout_ms
                                                                   : API_SESSION_WAIT_MS;
    struct session *x = sessions_acquire(r->api->sessions, r->seg[3], wait, &why);
    if (!x) {
        if (why == SESSIONS_BUSY)
            *rc = problem(r, 409, "session-busy",
                          "the session is in use by another request; try again");
        else
            *rc = problem(r, 404, "not-found", "no such session (it ended, or expired)");
    }
    return x;
}

static enum MHD_Result h_session(struct req *r)
{
    enum MHD_Result rc;
    struct session *x = take(r, &rc);
    if (!x)
        return rc;
    struct session_info i;
    sessions_info(x, &i);
    sessions_release(r->api->sessions, x);
    return reply_json(r, 200, session_json(&i));
}

static enum MHD_Result h_session_quit(struct req *r)
{
    enum MHD_Result rc;
    struct session *x = take(r, &rc);
    if (!x)
        return rc;
    struct session_info info;
    sessions_info(x, &info);
    uint32_t deleted = 0;
    char **uidls = NULL;
    size_t nu = 0;
    struct err e;
    if (sessions_quit(r->api->sessions, x, &deleted, &uidls, &nu, &e) < 0)
        return reply_err(r, "QUIT (nothing may be assumed deleted)", &e);
    if (nu) {
        struct store *st = store_get(r, &e);
        if (!st || store_uidls_mark_deleted(st, info.account, (const char *const *)uidls, nu,
                                            &e) < 0)
            log_error("store_failed", "op=uidls_mark_deleted account=%s error=%s",
                      info.account, log_q(e.msg));
    }
    sessions_uidls_free(uidls, nu);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "deleted", deleted);
    return reply_json(r, 200, o);
}

static enum MHD_Result h_session_messages(struct req *r)
{
    enum MHD_Result rc;
    struct session *x = take(r, &rc);
    if (!x)
        return rc;
    const struct pop3_listing *l = sessions_listing(x);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "messages");
    for (uint32_t i = 0; i < l->count; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddNumberToObject(m, "number", l->entries[i].number);
        cJSON_AddItemToObject(m, "uidl", str_or_null(l->entries[i].uidl));
        cJSON_AddNumberToObject(m, "size", (double)l->entries[i].size);
        cJSON_AddBoolToObject(m, "marked", sessions_is_marked(x, l->entries[i].number));
        cJSON_AddItemToArray(arr, m);
    }
    sessions_release(r->api->sessions, x);
    return reply_json(r, 200, root);
}

static int parse_number(struct req *r, uint32_t *n)
{
    uint64_t v;
    if (parse_u64(r->seg[5], 1, POP3_MESSAGES_MAX, &v) < 0)
        return -1;
    *n = (uint32_t)v;
    return 0;
}

/* A SESSIONS_* code or -1 from a session command, as a reply. */
static enum MHD_Result session_failed(struct req *r, int code, uint32_t n, const char *what,
                                      const struct err *e)
{
    if (code == SESSIONS_NOMSG)
        return problem(r, 404, "not-found", "no message %u in this session", n);
    if (code == SESSIONS_MARKED)
        return problem(r, 409, "marked-deleted",
                       "message %u is marked for deletion in this session (RSET unmarks it)", n);
    return reply_err(r, what, e);
}

static enum MHD_Result h_session_retr(struct req *r)
{
    uint32_t n;
    if (parse_number(r, &n) < 0)
        return problem(r, 400, "bad-request", "\"%s\" is not a message number", r->seg[5]);
    enum MHD_Result rc;
    struct session *x = take(r, &rc);
    if (!x)
        return rc;
    struct session_info info;
    sessions_info(x, &info);
    char uidl[POP3_UIDL_MAX + 1] = "";
    if (n <= sessions_listing(x)->count)
        snprintf(uidl, sizeof uidl, "%s", sessions_listing(x)->entries[n - 1].uidl);
    struct spool s = {.dir = r->api->state_dir, .fd = -1};
    struct pop3_sink k;
    top_sink(&s, &k);
    struct err e;
    int c = sessions_retr(x, n, &k, &e);
    sessions_release(r->api->sessions, x);
    if (c != 0) {
        spool_free(&s);
        return session_failed(r, c, n, "RETR", &e);
    }
    return reply_message(r, info.account, uidl, &s);
}

static enum MHD_Result h_session_top(struct req *r)
{
    uint32_t n;
    unsigned lines;
    if (parse_number(r, &n) < 0)
        return problem(r, 400, "bad-request", "\"%s\" is not a message number", r->seg[5]);
    if (parse_lines(r, &lines) < 0)
        return problem(r, 400, "bad-request", "lines must be a whole number from 0 to %d",
                       API_TOP_LINES_MAX);
    enum MHD_Result rc;
    struct session *x = take(r, &rc);
    if (!x)
        return rc;
    char uidl[POP3_UIDL_MAX + 1] = "";
    if (n <= sessions_listing(x)->count)
        snprintf(uidl, sizeof uidl, "%s", sessions_listing(x)->entries[n - 1].uidl);
    struct spool s = {.fd = -1, .max = API_TOP_MAX};
    struct pop3_sink k;
    top_sink(&s, &k);
    struct err e;
    int c = sessions_top(x, n, lines, &k, &e);
    sessions_release(r->api->sessions, x);
    if (c != 0) {
        spool_free(&s);
        return session_failed(r, c, n, "TOP", &e);
    }
    return reply_top(r, &s, uidl);
}

static enum MHD_Result h_session_dele(struct req *r)
{
    uint32_t n;
    if (parse_number(r, &n) < 0)
        return problem(r, 400, "bad-request", "\"%s\" is not a message number", r->seg[5]);
    enum MHD_Result rc;
    struct session *x = take(r, &rc);
    if (!x)
        return rc;
    struct err e;
    int c = sessions_dele(x, n, &e);
    sessions_release(r->api->sessions, x);
    if (c != 0)
        return session_failed(r, c, n, "DELE", &e);
    return reply_empty(r, 204);
}

static enum MHD_Result session_simple(struct req *r, bool reset)
{
    enum MHD_Result rc;
    struct session *x = take(r, &rc);
    if (!x)
        return rc;
    struct err e;
    int c = reset ? sessions_rset(x, &e) : sessions_noop(x, &e);
    struct session_info i;
    sessions_info(x, &i);
    sessions_release(r->api->sessions, x);
    if (c != 0)
        return reply_err(r, reset ? "RSET" : "NOOP", &e);
    return reply_json(r, 200, session_json(&i));
}

static enum MHD_Result h_session_reset(struct req *r) { return session_simple(r, true); }
static enum MHD_Result h_session_noop(struct req *r) { return session_simple(r, false); }

/* ---- handlers: stored messages ------------------------------------------------------------ */

/* Look up stored message seg[3]; on failure the reply is queued. */
static int stored_info(struct req *r, int64_t *id, struct store_msg_info *info,
                       enum MHD_Result *rc)
{
    struct err e;
    if (store_msg_id_parse(r->seg[3], id, &e) < 0) {
        *rc = problem(r, 404, "not-found", "\"%s\" is not a message id (m_<n>)", r->seg[3]);
        return -1;
    }
    struct store *st = store_get(r, &e);
    int g = st ? store_msg_get(st, *id, info, &e) : -1;
    if (g < 0) {
        *rc = problem(r, 500, "internal", "the store could not be read: %s", e.msg);
        return -1;
    }
    if (g == STORE_NOTFOUND) {
        *rc = problem(r, 404, "not-found", "no stored message %s", r->seg[3]);
        return -1;
    }
    if (info->body_purged_at) {
        *rc = problem(r, 410, "purged",
                      "the raw message %s was purged after its retention time", r->seg[3]);
        return -1;
    }
    return 0;
}

static enum MHD_Result h_stored(struct req *r)
{
    int64_t id;
    struct store_msg_info info;
    enum MHD_Result rc;
    if (stored_info(r, &id, &info, &rc) < 0)
        return rc;
    struct err e;
    struct event_opts eo = {
        .public_url = cfg_of(r)->api.public_url,
        .inline_max = inline_max_for(cfg_of(r), info.account),
    };
    event_opts_account(&eo, find_account(cfg_of(r), info.account));
    cJSON *m = event_message(r->st, r->api->state_dir, id, &eo, NULL, &e);
    if (!m) {
        if (e.kind == ERR_USAGE)
            return problem(r, 404, "not-found", "no stored message %s", r->seg[3]);
        return problem(r, 500, "internal", "the message could not be read: %s", e.msg);
    }
    return reply_json(r, 200, m);
}

static ssize_t body_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    size_t got = 0;
    struct err e;
    if (store_body_read(cls, pos, buf, max, &got, &e) < 0) {
        log_error("api_body_read_failed", "error=%s", log_q(e.msg));
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    return got ? (ssize_t)got : MHD_CONTENT_READER_END_OF_STREAM;
}

static void body_free(void *cls) { store_body_close(cls); }

static enum MHD_Result h_stored_raw(struct req *r)
{
    int64_t id;
    struct store_msg_info info;
    enum MHD_Result rc;
    if (stored_info(r, &id, &info, &rc) < 0)
        return rc;
    if (strcmp(info.kind, STORE_KIND_TOO_LARGE) == 0)
        return problem(r, 404, "not-found",
                       "message %s was too large to retrieve: only its header was stored",
                       r->seg[3]);
    struct store_body *b = NULL;
    uint64_t size = 0;
    struct err e;
    int g = store_body_open(r->st, id, &b, &size, &e);
    if (g == STORE_NOTFOUND)
        return problem(r, 404, "not-found", "no stored message %s", r->seg[3]);
    if (g < 0)
        return problem(r, 500, "internal", "the message could not be read: %s", e.msg);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(size, READER_BLOCK, body_reader, b, body_free);
    if (!resp) {
        store_body_close(b);
        return MHD_NO;
    }
    r->sandbox = true;
    return send_resp(r, 200, resp, "message/rfc822");
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
    size_t o = 0;
    int n = snprintf(out, size, "attachment");
    if (n < 0 || (size_t)n >= size || !filename[0])
        return;
    o = (size_t)n;
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

static enum MHD_Result h_attachment(struct req *r)
{
    int64_t id;
    struct store_msg_info info;
    enum MHD_Result rc;
    if (stored_info(r, &id, &info, &rc) < 0)
        return rc;
    const char *att = r->seg[5];
    if (!attachment_id_ok(att))
        return problem(r, 404, "not-found", "\"%s\" is not an attachment id", att);
    struct err e;
    struct spool raw = {.dir = r->api->state_dir, .fd = -1};
    int g = store_msg_stream(r->st, id, sink_store, &raw, &e);
    if (g != 0) {
        spool_free(&raw);
        if (g == STORE_NOTFOUND)
            return problem(r, 404, "not-found", "no stored message %s", r->seg[3]);
        return problem(r, 500, "internal", "the message could not be read: %s", e.msg);
    }
    struct spool out = {.dir = r->api->state_dir, .fd = -1};
    struct message_attachment_info ai;
    if (raw.fd >= 0)
        g = message_attachment_fd(raw.fd, att, sink_att, &out, &ai, &e);
    else
        g = message_attachment(raw.mem ? raw.mem : "", raw.len, att, sink_att, &out, &ai, &e);
    spool_free(&raw);
    if (g < 0) {
        spool_free(&out);
        if (e.kind == ERR_USAGE)
            return problem(r, 404, "not-found", "message %s has no attachment %s", r->seg[3],
                           att);
        return problem(r, 500, "internal", "the attachment could not be read: %s", e.msg);
    }
    char ctype[MESSAGE_CT_MAX + 16], disp[3 * MESSAGE_FILENAME_MAX + 64];
    bool ct_ok = ai.content_type[0] != '\0';
    for (const char *p = ai.content_type; *p && ct_ok; p++)
        ct_ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("/+-.", *p);
    snprintf(ctype, sizeof ctype, "%s", ct_ok ? ai.content_type : "application/octet-stream");
    disposition(ai.filename, disp, sizeof disp);
    struct MHD_Response *resp = spool_response(&out);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Disposition", disp);
    r->sandbox = true;
    return send_resp(r, 200, resp, ctype);
}

/* ---- handlers: deliveries ----------------------------------------------------------------- */

static int delivery_row(void *ctx, const struct store_delivery *d, struct err *e)
{
    (void)e;
    cJSON_AddItemToArray(ctx, delivery_json(d));
    return 0;
}

static enum MHD_Result h_deliveries(struct req *r)
{
    const char *status = qvalue(r, "status"), *account = qvalue(r, "account"),
               *limit = qvalue(r, "limit"), *cursor = qvalue(r, "cursor");
    enum store_dstatus ds;
    struct err e;
    if (status && store_dstatus_parse(status, &ds, &e) < 0)
        return problem(r, 400, "bad-request",
                       "status must be pending, delivered, failed or dead, not \"%s\"", status);
    if (account && (!*account || strlen(account) > STORE_NAME_MAX))
        return problem(r, 400, "bad-request", "account must be 1 to %d bytes", STORE_NAME_MAX);
    uint64_t lim = API_LIST_DEFAULT;
    if (limit && parse_u64(limit, 1, API_LIST_MAX, &lim) < 0)
        return problem(r, 400, "bad-request", "limit must be a whole number from 1 to %d",
                       API_LIST_MAX);
    if (cursor && (!*cursor || strlen(cursor) >= STORE_CURSOR_MAX))
        return problem(r, 400, "bad-request", "cursor is not one this API gave");
    struct store *st = store_get(r, &e);
    if (!st)
        return problem(r, 500, "internal", "the store could not be opened: %s", e.msg);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "deliveries");
    char next[STORE_CURSOR_MAX + 1] = "";
    if (store_delivery_list(st, status ? &ds : NULL, account, (size_t)lim, cursor, delivery_row,
                            arr, next, &e) < 0) {
        cJSON_Delete(root);
        if (e.kind == ERR_USAGE)
            return problem(r, 400, "bad-request", "%s", e.msg);
        return problem(r, 500, "internal", "the store could not be read: %s", e.msg);
    }
    cJSON_AddItemToObject(root, "next_cursor", str_or_null(next));
    return reply_json(r, 200, root);
}

static int attempt_row(void *ctx, const struct store_attempt_row *a, struct err *e)
{
    (void)e;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "started_at", time_or_null(a->started_at));
    cJSON_AddNumberToObject(o, "duration_ms", (double)a->duration_ms);
    if (a->http_status)
        cJSON_AddNumberToObject(o, "http_status", a->http_status);
    else
        cJSON_AddNullToObject(o, "http_status");
    cJSON_AddItemToObject(o, "error", str_or_null(a->error));
    cJSON_AddStringToObject(o, "outcome", a->outcome ? a->outcome : "");
    cJSON_AddItemToArray(ctx, o);
    return 0;
}

static enum MHD_Result h_delivery(struct req *r)
{
    int64_t id;
    struct err e;
    if (store_delivery_id_parse(r->seg[3], &id, &e) < 0)
        return problem(r, 404, "not-found", "\"%s\" is not a delivery id (d_<n>)", r->seg[3]);
    struct store *st = store_get(r, &e);
    if (!st)
        return problem(r, 500, "internal", "the store could not be opened: %s", e.msg);
    struct store_delivery d;
    cJSON *attempts = cJSON_CreateArray();
    int g = store_delivery_get(st, id, &d, attempt_row, attempts, &e);
    if (g != 0) {
        cJSON_Delete(attempts);
        if (g == STORE_NOTFOUND)
            return problem(r, 404, "not-found", "no delivery %s", r->seg[3]);
        return problem(r, 500, "internal", "the store could not be read: %s", e.msg);
    }
    cJSON *o = delivery_json(&d);
    cJSON_AddItemToObject(o, "attempts", attempts);
    return reply_json(r, 200, o);
}

static enum MHD_Result h_delivery_retry(struct req *r)
{
    int64_t id;
    struct err e;
    if (store_delivery_id_parse(r->seg[3], &id, &e) < 0)
        return problem(r, 404, "not-found", "\"%s\" is not a delivery id (d_<n>)", r->seg[3]);
    struct store *st = store_get(r, &e);
    if (!st)
        return problem(r, 500, "internal", "the store could not be opened: %s", e.msg);
    int g = store_delivery_retry(st, id, now_ms(), &e);
    if (g == STORE_NOTFOUND)
        return problem(r, 404, "not-found", "no delivery %s", r->seg[3]);
    if (g < 0) {
        if (e.kind == ERR_USAGE)
            return problem(r, 409, "not-retryable", "delivery %s cannot be retried: %s",
                           r->seg[3], e.msg);
        return problem(r, 500, "internal", "the store could not be written: %s", e.msg);
    }
    if (r->api->rt->delivery)
        delivery_wakeup(r->api->rt->delivery);
    log_info("api_retry", "delivery=%s", r->seg[3]);
    struct store_delivery d;
    if (store_delivery_get(st, id, &d, NULL, NULL, &e) != 0)
        return problem(r, 500, "internal", "the store could not be read: %s", e.msg);
    return reply_json(r, 202, delivery_json(&d));
}

/* ---- handlers: outside /api/v1 ------------------------------------------------------------ */

static enum MHD_Result h_healthz(struct req *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    return reply_json(r, 200, o);
}

static enum MHD_Result h_readyz(struct req *r)
{
    struct err e;
    pthread_mutex_lock(&r->api->rt->lock);
    bool stopping = r->api->rt->stopping;
    pthread_mutex_unlock(&r->api->rt->lock);
    if (stopping)
        return problem(r, 503, "unavailable", "the bridge is shutting down");
    struct store *st = store_get(r, &e);
    if (!st || store_schema_version(st, &e) < 0)
        return problem(r, 503, "unavailable", "the store is not usable: %s", e.msg);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ready");
    return reply_json(r, 200, o);
}

static enum MHD_Result h_metrics(struct req *r)
{
    struct err e;
    struct store_queue_counts q;
    struct store *st = store_get(r, &e);
    bool have_q = st && store_delivery_counts(st, &q, &e) == 0;
    struct metrics_gauges g = {have_q ? &q : NULL, (int64_t)sessions_count(r->api->sessions)};
    size_t len;
    char *text = metrics_render(&g, &len, &e);
    if (!text)
        return problem(r, 500, "internal", "%s", e.msg);
    return reply_text(r, 200, text, len, free, "text/plain; version=0.0.4; charset=utf-8");
}

static enum MHD_Result reply_file(struct req *r, const char *path, const char *ctype)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        return problem(r, 404, "not-found", "no such file");
    }
    if ((uint64_t)sb.st_size > API_STATIC_FILE_MAX) {
        close(fd);
        return problem(r, 500, "internal", "the file is larger than API_STATIC_FILE_MAX");
    }
    struct MHD_Response *resp = MHD_create_response_from_fd64((uint64_t)sb.st_size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    return send_resp(r, 200, resp, ctype);
}

static enum MHD_Result h_openapi(struct req *r)
{
    r->is_static = true;
    if (!r->api->openapi[0])
        return problem(r, 404, "not-found", "openapi.yaml was not found next to the binary");
    return reply_file(r, r->api->openapi, "application/yaml; charset=utf-8");
}

const char *api_static_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"svg", "image/svg+xml"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"ico", "image/x-icon"},
        {"webp", "image/webp"},
        {"woff", "font/woff"},
        {"woff2", "font/woff2"},
        {"txt", "text/plain; charset=utf-8"},
        {"webmanifest", "application/manifest+json"},
    };
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        return NULL;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot + 1, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

static enum MHD_Result h_static(struct req *r)
{
    r->is_static = true;
    struct api *a = r->api;
    char rel[API_PATH_MAX] = "";
    size_t rl = 0;
    if (r->nseg == 0) {
        snprintf(rel, sizeof rel, "index.html");
    } else {
        if (r->nseg > 8)
            return problem(r, 404, "not-found", "no such file");
        for (size_t i = 0; i < r->nseg; i++) {
            const char *s = r->seg[i];
            if (!s[0] || s[0] == '.')
                return problem(r, 404, "not-found", "no such file");
            for (const char *p = s; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                      (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
                    return problem(r, 404, "not-found", "no such file");
            int n = snprintf(rel + rl, sizeof rel - rl, "%s%s", i ? "/" : "", s);
            if (n < 0 || (size_t)n >= sizeof rel - rl)
                return problem(r, 404, "not-found", "no such file");
            rl += (size_t)n;
        }
    }
    const char *type = api_static_type(rel);
    if (!type)
        return problem(r, 404, "not-found", "no such file");
    if (!a->web_dir[0])
        return problem(r, 404, "not-found", "the dashboard's files were not found (api.web_dir)");
    char full[API_PATH_MAX], real[PATH_MAX];
    int n = snprintf(full, sizeof full, "%s/%s", a->web_dir, rel);
    if (n < 0 || (size_t)n >= sizeof full || !realpath(full, real))
        return problem(r, 404, "not-found", "no such file");
    size_t wl = strlen(a->web_dir);
    if (strncmp(real, a->web_dir, wl) != 0 || real[wl] != '/')
        return problem(r, 404, "not-found", "no such file");
    return reply_file(r, real, type);
}

/* ---- authentication and CORS --------------------------------------------------------------- */

static bool token_ok(struct req *r)
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
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
    const struct config_api *api = &cfg_of(r)->api;
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

static void cors_check(struct req *r)
{
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!origin || !*origin)
        return;
    const struct config_api *api = &cfg_of(r)->api;
    for (size_t i = 0; i < api->cors_origin_count; i++) {
        if (strcmp(api->cors_origins[i], "*") == 0 || strcmp(api->cors_origins[i], origin) == 0) {
            r->cors_origin = origin;
            return;
        }
    }
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static bool query_allowed(const struct route *rt, const char *name)
{
    if (!rt->query)
        return false;
    size_t nl = strlen(name);
    for (const char *p = rt->query; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        if (l == nl && memcmp(p, name, l) == 0)
            return true;
        p += l + (c ? 1 : 0);
    }
    return false;
}

/* Split raw "a=1&b=2" into r->q (values decoded into buf at *used). */
static int parse_query(struct req *r, const char *qs, size_t *used, size_t size, const char **why)
{
    if (!*qs)
        return 0;
    for (const char *p = qs;;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len) {
            if (r->nq >= API_QUERY_MAX) {
                *why = "too many query parameters";
                return -1;
            }
            const char *eq = memchr(p, '=', len);
            size_t nl = eq ? (size_t)(eq - p) : len;
            size_t dl;
            char *name = r->buf + *used;
            if (api_pct_decode(p, nl, name, size - *used, &dl, why) < 0)
                return -1;
            *used += dl + 1;
            char *val = r->buf + *used;
            if (api_pct_decode(eq ? eq + 1 : p + len, eq ? len - nl - 1 : 0, val, size - *used,
                               &dl, why) < 0)
                return -1;
            *used += dl + 1;
            for (size_t i = 0; i < r->nq; i++) {
                if (strcmp(r->q[i].name, name) == 0) {
                    *why = "a query parameter given twice";
                    return -1;
                }
            }
            r->q[r->nq].name = name;
            r->q[r->nq].value = val;
            r->nq++;
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    return 0;
}

static enum MHD_Result dispatch(struct req *r)
{
    struct api *a = r->api;
    r->ref = cfgref_get(&a->rt->cfg);
    if (r->body_too_large)
        return problem(r, 413, "body-too-large", "the request body is larger than %llu bytes "
                       "(api.max_request_body)", (unsigned long long)a->max_body);
    if (r->uri_too_long || !r->uri)
        return problem(r, 414, "uri-too-long", "the request target is longer than %zu bytes "
                       "(api.max_url_length)", a->max_url);
    size_t ulen = strlen(r->uri);
    r->buf = malloc(2 * ulen + 4);
    if (!r->buf)
        return problem(r, 500, "internal", "out of memory");
    const char *qm = strchr(r->uri, '?');
    size_t plen = qm ? (size_t)(qm - r->uri) : ulen;
    const char *why = "";
    size_t used = 0;
    if (parse_path(r->uri, plen, r->buf, 2 * ulen + 4, r->seg, &r->nseg, &why) < 0)
        return problem(r, 400, "bad-path", "malformed path: %s", why);
    for (size_t i = 0; i < r->nseg; i++)
        used += strlen(r->seg[i]) + 1;
    if (qm && parse_query(r, qm + 1, &used, 2 * ulen + 4, &why) < 0)
        return problem(r, 400, "bad-query", "malformed query: %s", why);
    cors_check(r);

    bool is_api = r->nseg >= 2 && strcmp(r->seg[0], "api") == 0 && strcmp(r->seg[1], "v1") == 0;
    bool is_head_get = strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;

    /* CORS preflight from an allowed origin */
    if (strcmp(r->method, "OPTIONS") == 0 && r->cors_origin &&
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Access-Control-Request-Method")) {
        char allow[96];
        int k = route_find("OPTIONS", r->seg, r->nseg, allow, sizeof allow);
        if (k == -404)
            return problem(r, 404, "not-found", "no such resource");
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"",
                                                                    MHD_RESPMEM_PERSISTENT);
        if (resp) {
            MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
            MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                    "Authorization, Content-Type, Accept");
            MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
        }
        return send_resp(r, 204, resp, NULL);
    }

    bool needs_token = is_api || (r->nseg == 1 && strcmp(r->seg[0], "metrics") == 0);
    if (needs_token && !token_ok(r)) {
        r->www_auth = true;
        return problem(r, 401, "unauthorized",
                       "a valid \"Authorization: Bearer <token>\" header is required");
    }
    int k = route_find(r->method, r->seg, r->nseg, r->allow, sizeof r->allow);
    if (k == -405)
        return problem(r, 405, "method-not-allowed", "%s is not allowed here (allowed: %s)",
                       r->method, r->allow);
    if (k == -404) {
        bool special = r->nseg == 1 && (strcmp(r->seg[0], "healthz") == 0 ||
                                         strcmp(r->seg[0], "readyz") == 0);
        if (is_api || special || (r->nseg >= 1 && strcmp(r->seg[0], "api") == 0))
            return problem(r, 404, "not-found", "no such resource");
        if (!is_head_get) {
            snprintf(r->allow, sizeof r->allow, "GET, HEAD");
            return problem(r, 405, "method-not-allowed", "%s is not allowed here (allowed: %s)",
                           r->method, r->allow);
        }
        if (r->nq)
            return problem(r, 400, "bad-query", "unknown query parameter \"%s\"", r->q[0].name);
        return h_static(r);
    }
    r->route = &routes[k];
    for (size_t i = 0; i < r->nq; i++)
        if (!query_allowed(r->route, r->q[i].name))
            return problem(r, 400, "bad-query", "unknown query parameter \"%s\"", r->q[i].name);
    return r->route->fn(r);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    struct api *a = cls;
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->api = a;
    r->conn = c;
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    size_t n = strlen(uri);
    if (n > a->max_url)
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
    (void)upload_data;
    struct api *a = cls;
    struct req *r = *con_cls;
    if (!r)
        return MHD_NO; /* out of memory in on_uri: drop the connection */
    if (!r->started) {
        r->started = true;
        r->conn = c;
        r->method = method;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        uint64_t n;
        if (cl && parse_u64(cl, 0, UINT64_MAX, &n) == 0 && n > a->max_body) {
            r->body_too_large = true;
            return dispatch(r); /* refused before the body is read */
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        r->body_len += *upload_data_size;
        if (r->body_len > a->max_body)
            r->body_too_large = true;
        *upload_data_size = 0; /* bodies are not used by any route */
        return MHD_YES;
    }
    if (r->status)
        return MHD_YES; /* already answered */
    return dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    struct api *a = cls;
    struct req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    cfgref_put(r->ref);
    store_put(a, r->st);
    free(r->uri);
    free(r->buf);
    free(r);
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s); /* the raw target is decoded strictly by dispatch() */
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
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
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

/* The directory holding openapi.yaml and web/ (see api.h); 0 or -1. */
static int share_dir(char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    const char *cands[] = {"%s/..", "%s/../..", "%s/../share/pop3bridge"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        char d[API_PATH_MAX], f[API_PATH_MAX + 16], real[PATH_MAX];
        int k = snprintf(d, sizeof d, cands[i], exe);
        if (k < 0 || (size_t)k >= sizeof d)
            continue;
        k = snprintf(f, sizeof f, "%s/openapi.yaml", d);
        if (k < 0 || (size_t)k >= sizeof f || access(f, R_OK) != 0 || !realpath(d, real))
            continue;
        if (snprintf(out, size, "%s", real) >= (int)size)
            return -1;
        return 0;
    }
    return -1;
}

struct api *api_start(struct runtime *rt, struct err *e)
{
    struct cfgref *ref = cfgref_get(&rt->cfg);
    const struct config *cfg = ref->cfg;
    struct api *a = calloc(1, sizeof *a);
    if (!a) {
        cfgref_put(ref);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    a->rt = rt;
    a->listen_fd = -1;
    pthread_mutex_init(&a->pool_mu, NULL);
    a->max_body = cfg->api.max_request_body;
    a->max_url = (size_t)cfg->api.max_url_length;
    a->request_timeout_ms = cfg->api.request_timeout_ms;
    snprintf(a->state_dir, sizeof a->state_dir, "%s", cfg->state_dir);
    char share[API_PATH_MAX] = "", real[PATH_MAX];
    bool have_share = share_dir(share, sizeof share) == 0;
    if (have_share && snprintf(a->openapi, sizeof a->openapi, "%s/openapi.yaml", share) >=
                          (int)sizeof a->openapi)
        a->openapi[0] = '\0';
    char web[API_PATH_MAX] = "";
    if (cfg->api.web_dir)
        snprintf(web, sizeof web, "%s", cfg->api.web_dir);
    else if (have_share && snprintf(web, sizeof web, "%s/web", share) >= (int)sizeof web)
        web[0] = '\0';
    if (web[0] && realpath(web, real) && strlen(real) < sizeof a->web_dir)
        snprintf(a->web_dir, sizeof a->web_dir, "%s", real);

    a->sessions = sessions_new(e);
    if (!a->sessions)
        goto fail;
    a->listen_fd = listen_socket(cfg->api.listen_host, cfg->api.listen_port, e);
    if (a->listen_fd < 0)
        goto fail;
    unsigned timeout_s = (unsigned)(cfg->api.request_timeout_ms / 1000);
    size_t mem = a->max_url + 32768;
    a->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, a, MHD_OPTION_LISTEN_SOCKET, a->listen_fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->api.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout_s ? timeout_s : 1u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem, MHD_OPTION_URI_LOG_CALLBACK, on_uri, a,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape,
        NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!a->d) {
        err_set(e, ERR_INTERNAL, "cannot start the HTTP server on %s:%d", cfg->api.listen_host,
                cfg->api.listen_port);
        goto fail;
    }
    a->listen_fd = -1; /* libmicrohttpd owns it now and closes it when stopped */
    log_info("api_listening", "listen=%s:%d web_dir=%s openapi=%s tokens=%zu",
             cfg->api.listen_host, cfg->api.listen_port,
             log_q(a->web_dir[0] ? a->web_dir : "(none)"),
             log_q(a->openapi[0] ? a->openapi : "(none)"), cfg->api.token_count);
    cfgref_put(ref);
    return a;
fail:
    cfgref_put(ref);
    if (a->listen_fd >= 0)
        close(a->listen_fd);
    sessions_free(&a->sessions);
    pthread_mutex_destroy(&a->pool_mu);
    free(a);
    return NULL;
}

void api_stop(struct api **ap)
{
    if (!ap || !*ap)
        return;
    struct api *a = *ap;
    *ap = NULL;
    MHD_stop_daemon(a->d);
    if (a->listen_fd >= 0)
        close(a->listen_fd);
    sessions_free(&a->sessions);
    for (size_t i = 0; i < a->npool; i++)
        store_close(a->pool[i]);
    pthread_mutex_destroy(&a->pool_mu);
    free(a);
}
