/*
 * api — the REST API (/api/v1), health, metrics, the OpenAPI document and
 * the dashboard's static files, over HTTP/1.1 with libmicrohttpd.
 *
 * openapi.yaml at the top of the source tree is the contract: every route,
 * parameter, response and error below is described there.
 *
 * Follows RFC 9110 (HTTP semantics: 404 vs 405 with Allow, 413, 414),
 * RFC 9457 (problem details: every error is application/problem+json with
 * type, title, status, detail), RFC 6750 (Bearer tokens), RFC 3986 (strict
 * percent-decoding of path segments and query values), RFC 3629 (UTF-8),
 * the W3C Fetch standard for CORS, and the Prometheus text format 0.0.4.
 *
 * Threads: libmicrohttpd runs one thread per connection
 * (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, at most
 * api.max_connections), so a slow POP3 server only holds the connection
 * waiting for it.  One-shot mailbox operations open their own POP3 session
 * and QUIT it; explicit sessions live in sessions.h.  Store handles come
 * from a pool (one per request at a time, up to API_STORE_POOL kept idle).
 * The number of threads follows the connections, bounded by
 * api.max_connections.
 *
 * Requests:
 *   - the raw request-target is parsed here, not by libmicrohttpd: a path of
 *     more than api.max_url_length bytes is 414; a raw or decoded "." or ".."
 *     segment, a bad %-escape, %00, control characters, invalid UTF-8, a
 *     repeated or unknown query parameter is 400;
 *   - /api/v1/... and /metrics need "Authorization: Bearer <token>" (a token
 *     of api.tokens, compared in constant time over SHA-256 digests): 401
 *     with WWW-Authenticate otherwise.  /healthz, /readyz, /openapi.yaml and
 *     the static files need none;
 *   - a body larger than api.max_request_body is refused with 413 before it
 *     is read (Content-Length), or as soon as it passes the limit (chunked);
 *   - CORS headers only for an Origin listed in api.cors_origins ("*" lists
 *     every origin); OPTIONS preflights for those answer 204.
 * Every response carries Content-Security-Policy, X-Content-Type-Options:
 * nosniff and Referrer-Policy: no-referrer.  Tokens and passwords are never
 * logged; session ids are logged shortened, request paths by their route.
 *
 * Where files are found (the "share directory"): the directory holding
 * openapi.yaml and web/ — the first of <dir of the binary>/.. and
 * <dir of the binary>/../.. that holds openapi.yaml (running build/pop3bridge
 * or build/<variant>/pop3bridge in the source tree), else
 * <dir of the binary>/../share/pop3bridge (make install's layout).
 * api.web_dir, when set, replaces <share>/web for the static files.
 * GET / serves index.html; other files only with a whitelisted extension
 * (html css js mjs json map svg png jpg jpeg gif ico webp woff woff2 txt
 * webmanifest), names of [A-Za-z0-9._-] not starting with ".", no symlink
 * leaving the directory.
 *
 * The listen address, limits and connection settings are read at start;
 * tokens, CORS origins, accounts and public_url come from the current
 * configuration snapshot for each request (a reload applies to them).
 */
#ifndef POP3BRIDGE_API_H
#define POP3BRIDGE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define API_PREFIX "/api/v1"
#define API_SEGMENTS_MAX 16          /* path segments */
#define API_QUERY_MAX 16             /* query parameters */
#define API_LIST_DEFAULT 50          /* deliveries per page without ?limit */
#define API_LIST_MAX 1000            /* largest ?limit (STORE_LIST_MAX) */
#define API_TOP_LINES_MAX 100000     /* largest ?lines */
#define API_TOP_MAX (4u << 20)       /* bytes of a TOP reply kept */
#define API_SPOOL_MEM_MAX (1u << 20) /* a retrieved message larger than this spools to a file */
#define API_STORE_POOL 64            /* idle store handles kept */
#define API_SESSION_WAIT_MS 10000    /* longest wait for a session another request uses */
#define API_RETRY_AFTER_S 30         /* Retry-After for [SYS/TEMP] */
#define API_LOGIN_DELAY_RETRY_S 60   /* Retry-After for [LOGIN-DELAY] */
#define API_STATIC_FILE_MAX (32u << 20) /* largest static file served */
#define API_PATH_MAX 4096            /* file system paths */

struct api;
struct runtime;

/* Listen on rt's api.listen and serve.  NULL with e: ERR_CONN "cannot listen
 * on HOST:PORT: <reason>" (address in use, cannot be resolved...), or
 * ERR_INTERNAL. */
struct api *api_start(struct runtime *rt, struct err *e);
/* Stop accepting, let running requests end, abort every explicit session
 * (no QUIT), free; *a = NULL.  NULL-safe. */
void api_stop(struct api **a);

/* ---- pure pieces, exposed for tests ----------------------------------------------- */

/* THE mapping from a POP3 (or store) error to an HTTP status:
 *   ERR_AUTH, ERR_SERVER [AUTH]            502  upstream refused the login
 *   ERR_SERVER [IN-USE]                    409  mailbox locked by another session
 *   ERR_SERVER [LOGIN-DELAY]               429  *retry_after_s = API_LOGIN_DELAY_RETRY_S
 *   ERR_SERVER [SYS/TEMP]                  503  *retry_after_s = API_RETRY_AFTER_S
 *   ERR_SERVER other, ERR_CONN, ERR_TLS,
 *   ERR_PROTO, ERR_LIMIT                   502
 *   ERR_TIMEOUT                            504
 *   ERR_INTERNAL, ERR_USAGE, ERR_NONE      500
 * *retry_after_s is 0 when no Retry-After applies. */
int api_http_status(const struct err *e, int *retry_after_s);

/* Strict percent-decoding of one path segment or query value (RFC 3986):
 * "%XX" with two hex digits; no %00, no raw or decoded control characters
 * (0x00-0x1F, 0x7F), no raw space; the result must be valid UTF-8.  Writes
 * a NUL-terminated string of at most size-1 bytes.  0, or -1 with a short
 * reason in *why (static string). */
int api_pct_decode(const char *in, size_t len, char *out, size_t size, size_t *out_len,
                   const char **why);

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool api_utf8_valid(const char *s, size_t len);

/* Content type for a static file name by its extension; NULL when the
 * extension is not on the whitelist. */
const char *api_static_type(const char *name);

/* Route lookup for a method and a raw path (no query): >= 0 the index of the
 * route; -404 no route for the path; -405 the path exists for other methods
 * (allow gets "GET, HEAD" etc.); -400 the path is malformed. */
int api_route_lookup(const char *method, const char *raw_path, char *allow, size_t allow_size);

#endif
