/*
 * http_route — a route table of method, path pattern and handler, whose
 * patterns name their parameters:
 *
 *   {"GET", "/api/v1/accounts/{account}/messages/{uidl}", handler, NULL, 0}
 *
 * A "{name}" part matches exactly one non-empty decoded path segment (see
 * http_target.h) and binds it under that name; the handler reads it with
 * http_params_get(&params, "uidl"), never by position.  Other parts match
 * literally.  HEAD is routed as GET.  RFC 9110: a path that exists for other
 * methods is 405 with an Allow list, distinct from 404.
 *
 * A route may list the query parameters it accepts ("lines", or
 * "status,account,limit,cursor"); any other one is the caller's 400.
 *
 * Pure functions over a caller's table (no globals); thread-safe.  Fuzzed by
 * tests/fuzz/fuzz_http_target.c.
 */
#ifndef POP3BRIDGE_HTTP_ROUTE_H
#define POP3BRIDGE_HTTP_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_PARAMS_MAX 4       /* "{name}" parts in one pattern */
#define HTTP_PARAM_NAME_MAX 31  /* bytes of a parameter's name */
#define HTTP_ALLOW_MAX 96       /* bytes of an Allow list */

struct http_req;
/* A handler answers its request (http.h: http_reply_*, http_problem*) or
 * defers the answer (http_defer). */
typedef void (*http_handler)(struct http_req *r);

enum {
    HTTP_ROUTE_PUBLIC = 1, /* served without a token */
    HTTP_ROUTE_SIGNED = 2, /* served without a token when its exp and sig query parameters
                            * pass http_options.link_verify (signed links) */
};

struct http_route {
    const char *method;  /* "GET", "POST", "DELETE", ... */
    const char *pattern; /* "/api/v1/accounts/{account}" */
    http_handler fn;
    const char *query;   /* accepted query parameters, comma-separated; NULL: none */
    unsigned flags;      /* HTTP_ROUTE_* */
};

/* The parameters a match bound: names point into the pattern (not
 * NUL-terminated there, hence the lengths), values are the segments. */
struct http_params {
    size_t n;
    const char *name[HTTP_PARAMS_MAX];
    size_t name_len[HTTP_PARAMS_MAX];
    const char *value[HTTP_PARAMS_MAX];
};

enum {
    HTTP_ROUTE_NOT_FOUND = -404, /* no route has this path */
    HTTP_ROUTE_NO_METHOD = -405, /* the path exists for other methods (allow filled) */
};

/* Find the route for method and decoded segments.  >= 0: its index, with p
 * bound; HTTP_ROUTE_NO_METHOD with allow ("GET, HEAD, DELETE") filled;
 * HTTP_ROUTE_NOT_FOUND.  *public (may be NULL) is set when every route that
 * has this path is HTTP_ROUTE_PUBLIC (false when none has it). */
int http_route_find(const struct http_route *routes, size_t n, const char *method,
                    const char *const *seg, size_t nseg, struct http_params *p, char *allow,
                    size_t allow_size, bool *public);

/* The value bound to `name`, or NULL. */
const char *http_params_get(const struct http_params *p, const char *name);

/* Whether route r accepts query parameter `name`. */
bool http_route_query_ok(const struct http_route *r, const char *name);

/* Check a table once, at start: every pattern starts with "/", has no empty
 * part, at most HTTP_PARAMS_MAX parameters, each "{name}" closed, named with
 * [a-z_] (1..HTTP_PARAM_NAME_MAX) and not repeated; no two routes with the
 * same method and pattern.  0, or -1 with the index of the bad route in *bad. */
int http_route_check(const struct http_route *routes, size_t n, size_t *bad);

#endif
