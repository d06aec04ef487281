/*
 * http_target — strict parsing of an HTTP request-target in origin form
 * (RFC 9112 §3.2.1): "/seg/seg?name=value&name=value".
 *
 * RFC 3986 percent-decoding, strictly: "%XX" with two hex digits; no %00,
 * no raw or decoded control characters (0x00-0x1F, 0x7F), no raw space; every
 * decoded segment, name and value is valid UTF-8 (RFC 3629, checked by GLib:
 * no overlong forms, no surrogates, nothing above U+10FFFF).  A raw or
 * decoded "." or ".." segment is refused, so a path can never climb.  '+' is
 * a plus sign, not a space.  A query parameter given twice is refused.
 *
 * Limits: HTTP_SEGMENTS_MAX segments, HTTP_QUERY_MAX parameters; the decoded
 * strings never need more bytes than the raw target.
 *
 * Pure functions (no I/O, no globals); thread-safe.  Fuzzed by
 * tests/fuzz/fuzz_http_target.c.
 */
#ifndef POP3BRIDGE_HTTP_TARGET_H
#define POP3BRIDGE_HTTP_TARGET_H

#include <stddef.h>

#define HTTP_SEGMENTS_MAX 16 /* path segments */
#define HTTP_QUERY_MAX 16    /* query parameters */

struct http_qparam {
    const char *name;
    const char *value;
};

/* A parsed target.  The strings point into buf, which the struct owns. */
struct http_target {
    const char *seg[HTTP_SEGMENTS_MAX]; /* decoded segments; "/" has none */
    size_t nseg;
    struct http_qparam q[HTTP_QUERY_MAX];
    size_t nq;
    char *buf;
};

enum http_target_error {
    HTTP_TARGET_OK = 0,
    HTTP_TARGET_BAD_PATH,  /* 400: the path breaks a rule above */
    HTTP_TARGET_BAD_QUERY, /* 400: the query breaks a rule above */
    HTTP_TARGET_NOMEM,     /* 500 */
};

/* Strictly percent-decode len bytes of one segment, name or value into out
 * (at most size-1 bytes and a NUL).  0 with *out_len set (if not NULL), or -1
 * with a short reason in *why (a static string: "...hex digits", "a control
 * character", "a raw space", "invalid UTF-8", "too long"). */
int http_pct_decode(const char *in, size_t len, char *out, size_t size, size_t *out_len,
                    const char **why);

/* Parse the raw target (NUL-terminated) into *t.  HTTP_TARGET_OK, or an
 * error with the reason in *why (static).  t->buf is allocated in every case
 * where it could be; free it with http_target_free(). */
enum http_target_error http_target_parse(const char *raw, struct http_target *t,
                                         const char **why);
/* Free t->buf; NULL-safe, idempotent. */
void http_target_free(struct http_target *t);

/* The value of query parameter `name`, or NULL. */
const char *http_target_query(const struct http_target *t, const char *name);

#endif
