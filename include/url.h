/*
 * url — the URLs the bridge takes from its configuration and command line,
 * checked and taken apart by libcurl's URL API (curl_url_set, RFC 3986 as
 * libcurl reads it), so that what is accepted here is what libcurl will
 * later connect to:
 *   - http(s) URLs: webhooks, the API's public URL, CORS origins, OAuth2
 *     endpoints;
 *   - POP3 URLs of the command line, pop3s://USER@HOST[:PORT] (RFC 2384
 *     without its ";AUTH=" part).
 *
 * Pure functions (no network), thread-safe.
 */
#ifndef POP3BRIDGE_URL_H
#define POP3BRIDGE_URL_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define URL_ORIGIN_ONLY 1u /* scheme://host[:port] and nothing after it */
#define URL_HTTPS_ONLY 2u  /* https:// only */

/* An absolute http:// or https:// URL with a host, no spaces or control
 * characters and no user information (user:password@).  NULL when u is fine,
 * else what is wrong, as a phrase to follow the key's name ("must start with
 * http:// or https://", "has no host after the scheme", ...; static text). */
const char *url_http_problem(const char *u, unsigned flags);

#define URL_HOST_MAX 256 /* bytes of a host, with its NUL */
#define URL_USER_MAX 256 /* bytes of a user name, with its NUL */

struct url_pop3 {
    bool tls;                 /* pop3s:// (implicit TLS) rather than pop3:// */
    char user[URL_USER_MAX];  /* percent-decoded; may hold '@' and ':' */
    char host[URL_HOST_MAX];  /* an IPv6 address without its brackets */
    unsigned port;            /* 0 when the URL names none */
};

/* Parse pop3s://USER@HOST[:PORT][/] or pop3://...  The last '@' ends the
 * user name, so "user@example.com@host" works unencoded.  0, or -1 with e
 * (ERR_USAGE, saying what is wrong). */
int url_parse_pop3(const char *u, struct url_pop3 *out, struct err *e);

#endif
