/*
 * http — the HTTP/1.1 server of the REST API and the dashboard, on
 * libmicrohttpd.  It knows nothing of POP3 or of the store: it listens,
 * reads and checks requests, finds the route (http_route.h), checks the
 * Bearer token and CORS, calls the handler, and sends what the handler
 * answers.  The handlers live in the api_*.c files.
 *
 * Follows RFC 9110 (HTTP semantics: 404 vs 405 with Allow, 413, 414),
 * RFC 9457 (problem details: every error is application/problem+json with
 * type, title, status, detail), RFC 6750 (Bearer tokens), RFC 3986 (strict
 * decoding of the request-target, see http_target.h), the W3C Fetch
 * standard for CORS.
 *
 * Threads and slow clients.  A bounded pool of `threads` threads serves every
 * connection (libmicrohttpd's internal thread pool with epoll), at most
 * `max_connections` connections in all and `max_per_client` from one client
 * address (the next one is closed at once, unanswered).  A request must
 * arrive whole, head and body, within `read_timeout_ms` of the connection's
 * start (or of the previous response on a kept-alive connection): a total
 * time, not an inactivity time, so a client sending a byte every few seconds
 * is cut off too.  An idle connection is closed after `idle_timeout_ms`.
 * A handler that waits on something slow (a POP3 server) must not hold a
 * pool thread: it calls http_defer(), hands the work to another thread and
 * returns; that thread calls http_resume() when the work is done, and the
 * continuation answers on a pool thread.  Meanwhile the connection is
 * suspended and the pool serves the others.
 *
 * Requests:
 *   - a request-target longer than max_url is 414; a malformed one is 400
 *     (bad-path, bad-query); a query parameter the route does not accept is
 *     400;
 *   - a route not marked HTTP_ROUTE_PUBLIC, and any path under /api, needs
 *     "Authorization: Bearer <token>" with a token of the current
 *     configuration's api.tokens (compared in constant time over SHA-256
 *     digests): 401 with WWW-Authenticate otherwise, before 404 or 405, so
 *     an unauthenticated client learns nothing of the routes;
 *   - a path no route has, outside /api, goes to the fallback handler (the
 *     static files) for GET and HEAD, 405 otherwise;
 *   - a body larger than max_body is refused with 413 before it is read
 *     (Content-Length), or as soon as it passes the limit (chunked);
 *   - CORS headers only for an Origin listed in api.cors_origins ("*" lists
 *     every origin); OPTIONS preflights from those origins answer 204.
 * Every response carries Content-Security-Policy, X-Content-Type-Options:
 * nosniff, Referrer-Policy: no-referrer, X-Frame-Options: DENY and
 * Cache-Control.  Tokens are never logged; requests are logged by their
 * route pattern, never by their path.
 *
 * Each request takes the current configuration snapshot once (options.config)
 * and holds it until it completes: a reload applies to the next request.
 *
 * Ownership: a struct http_req belongs to the server; a handler may use it
 * until it has answered, or, after http_defer(), until http_resume().  Every
 * reply function takes ownership of what it is given (a cJSON object, a
 * buffer, a file descriptor, a stream's context), also when it fails.
 */
#ifndef POP3BRIDGE_HTTP_H
#define POP3BRIDGE_HTTP_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgref.h"
#include "error.h"
#include "http_route.h"

#define HTTP_PROBLEM_PREFIX "urn:pop3bridge:problem:" /* problem "type" URIs */
#define HTTP_DETAIL_MAX 1024       /* bytes of a problem's detail */
#define HTTP_EXTRA_HEADERS_MAX 4   /* headers a handler may add to one response */
#define HTTP_SWEEP_MAX_MS 1000     /* read deadlines are checked at least this often */
#define HTTP_FD_RESERVE 64         /* descriptors kept free beside the connections */
#define HTTP_BACKLOG 128           /* listen(2) backlog */

struct http_options {
    const char *listen_host;       /* numeric or resolvable; IPv6 without brackets */
    int listen_port;
    unsigned threads;              /* >= 1: the pool serving every connection */
    unsigned max_connections;      /* >= 1 */
    unsigned max_per_client;       /* >= 1: connections from one client address */
    int64_t read_timeout_ms;       /* >= 1: a whole request (head and body) */
    int64_t idle_timeout_ms;       /* >= 1000: a connection with no traffic */
    uint64_t max_body;
    size_t max_url;
    const struct http_route *routes; /* checked with http_route_check() */
    size_t nroutes;
    http_handler fallback;         /* GET/HEAD of a path no route has, outside /api; NULL: 404 */
    /* The current configuration snapshot with a new reference (api.tokens,
     * api.cors_origins are read from it); never NULL. */
    struct cfgref *(*config)(void *app);
    void *app;                     /* given back by http_app() */
    /* For HTTP_ROUTE_SIGNED routes requested without a valid token but with
     * an exp or sig query parameter: 0 lets the request through, -1 refuses
     * it with 403 and `why` (a problem+json detail, no secret).  path is the
     * decoded path ("/api/v1/messages/m_1/raw").  NULL: such routes need a
     * token like any other. */
    int (*link_verify)(struct http_req *r, const char *path, const char *exp, const char *sig,
                       char *why, size_t why_size);
};

struct http_server;
struct http_req;

/* Listen on listen_host:listen_port and serve.  The descriptor limit
 * (RLIMIT_NOFILE) is raised towards max_connections + HTTP_FD_RESERVE when
 * the hard limit allows.  NULL with e: ERR_CONN "cannot listen on HOST:PORT
 * (api.listen): <reason>" (address in use, cannot be resolved...);
 * ERR_INTERNAL (a bad route table, no thread, libmicrohttpd refused). */
struct http_server *http_start(const struct http_options *o, struct err *e);
/* The port it listens on (the one bound when listen_port was 0). */
int http_port(const struct http_server *s);
/* Stop accepting, close every connection, join the threads, free; *s = NULL.
 * NULL-safe.  No request may be deferred any more: whoever defers must have
 * resumed every request before (the continuations then run during the stop). */
void http_stop(struct http_server **s);

/* ---- for handlers: the request ------------------------------------------------------ */

void *http_app(const struct http_req *r);
/* The request's configuration snapshot, and its reference (to keep it longer:
 * cfgref_hold()). */
const struct config *http_cfg(const struct http_req *r);
struct cfgref *http_cfgref(const struct http_req *r);
/* The method as received ("HEAD" is routed as GET). */
const char *http_method(const struct http_req *r);
/* A path parameter bound by name ("account", "uidl"); NULL if the route has
 * none by that name. */
const char *http_param(const struct http_req *r, const char *name);
/* The decoded path segments ("/" has none): their count, *seg the array. */
size_t http_segments(const struct http_req *r, const char *const **seg);
/* A decoded query parameter, or NULL. */
const char *http_query(const struct http_req *r, const char *name);
/* A request header (case-insensitive name), or NULL. */
const char *http_header(const struct http_req *r, const char *name);
/* The request body (at most max_body bytes: a larger one is refused before
 * the handler runs), NUL-terminated; "" when there is none.  *len (may be
 * NULL) gets its length.  Valid until the request completes. */
const char *http_body(const struct http_req *r, size_t *len);
/* Whether the request carried a valid token (also on public routes). */
bool http_authorized(const struct http_req *r);

/* One pointer of the handler's own per request, freed with free_fn (may be
 * NULL) when the request completes, whatever happened to the connection. */
void *http_data(const struct http_req *r);
void http_set_data(struct http_req *r, void *data, void (*free_fn)(void *data));

/* Answer later: suspends the connection; `then` runs on a pool thread after
 * http_resume(r) and answers.  Called from a handler, which then returns
 * without answering. */
void http_defer(struct http_req *r, http_handler then);
/* From any thread, once, after http_defer(r). */
void http_resume(struct http_req *r);

/* ---- for handlers: the answer (exactly one per request) ----------------------------- */

/* Headers of the coming answer.  Retry-After in seconds (> 0); Location; a
 * sandboxing Content-Security-Policy (raw mail, attachments); "a static
 * file" (Cache-Control: no-cache instead of no-store, logged as static);
 * another header (value copied; at most HTTP_EXTRA_HEADERS_MAX). */
void http_set_retry_after(struct http_req *r, int seconds);
void http_set_location(struct http_req *r, const char *url);
void http_set_sandbox(struct http_req *r);
void http_set_static(struct http_req *r);
void http_add_header(struct http_req *r, const char *name, const char *value);

/* application/json (obj is printed and deleted). */
void http_reply_json(struct http_req *r, unsigned status, cJSON *obj);
/* No body (204, 202...). */
void http_reply_empty(struct http_req *r, unsigned status);
/* len bytes of buf, freed with free_fn. */
void http_reply_buffer(struct http_req *r, unsigned status, char *buf, size_t len,
                       void (*free_fn)(void *), const char *ctype);
/* size bytes of an open file from its start (closed afterwards). */
void http_reply_fd(struct http_req *r, unsigned status, int fd, uint64_t size,
                   const char *ctype);
/* size bytes produced by read(cls, pos, buf, max, &got): 0 with got > 0
 * bytes, 0 with got == 0 at the end, -1 on error (the connection is cut);
 * free_cls(cls) when done. */
typedef int (*http_read_fn)(void *cls, uint64_t pos, char *buf, size_t max, size_t *got);
void http_reply_stream(struct http_req *r, unsigned status, uint64_t size, http_read_fn read,
                       void *cls, void (*free_cls)(void *), const char *ctype);

/* THE writer of every application/problem+json (RFC 9457): type
 * HTTP_PROBLEM_PREFIX + slug, title the status's reason phrase, detail from
 * fmt (cut at HTTP_DETAIL_MAX, made valid UTF-8).  e (may be NULL) adds the
 * error's kind, response code and server text ("kind", "code",
 * "server_text"). */
void http_problem(struct http_req *r, unsigned status, const char *slug, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_problem_err(struct http_req *r, unsigned status, const char *slug,
                      const struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
