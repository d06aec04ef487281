/* url — http(s) and POP3 URLs through libcurl's URL API; see include/url.h. */
#include "url.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define URL_MAX 8192 /* bytes of a URL handed to libcurl here */

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* A part of h, or NULL when it has none (the caller curl_free()s it). */
static char *part(CURLU *h, CURLUPart what, unsigned flags)
{
    char *v = NULL;
    if (curl_url_get(h, what, &v, flags) != CURLUE_OK)
        return NULL;
    return v;
}

static bool part_present(CURLU *h, CURLUPart what)
{
    char *v = part(h, what, 0);
    curl_free(v);
    return v != NULL;
}

static const char *curl_problem(CURLUcode rc)
{
    switch (rc) {
    case CURLUE_BAD_PORT_NUMBER:
        return "has a bad port number";
    case CURLUE_NO_HOST:
        return "has no host after the scheme";
    case CURLUE_BAD_HOSTNAME:
        return "has a bad host name";
    case CURLUE_OUT_OF_MEMORY:
        return "could not be checked (out of memory)";
    default:
        return "is not a valid URL";
    }
}

const char *url_http_problem(const char *u, unsigned flags)
{
    if (!u || !(has_prefix_ci(u, "http://") || has_prefix_ci(u, "https://")))
        return "must start with http:// or https://";
    const char *rest = strstr(u, "://") + 3;
    size_t auth = strcspn(rest, "/?#");
    if (auth == 0)
        return "has no host after the scheme";
    if (strchr(u, ' '))
        return "must not contain spaces";
    if (has_ctl(u))
        return "must not contain control characters";
    if (strlen(u) > URL_MAX)
        return "is too long";
    if ((flags & URL_ORIGIN_ONLY) && rest[auth] != '\0')
        return "an origin is scheme://host[:port], without a path";
    CURLU *h = curl_url();
    if (!h)
        return curl_problem(CURLUE_OUT_OF_MEMORY);
    const char *why = NULL;
    CURLUcode rc = curl_url_set(h, CURLUPART_URL, u, 0);
    if (rc != CURLUE_OK) {
        why = curl_problem(rc);
    } else {
        char *user = part(h, CURLUPART_USER, 0), *pw = part(h, CURLUPART_PASSWORD, 0);
        char *host = part(h, CURLUPART_HOST, 0);
        if (user || pw || memchr(rest, '@', auth))
            why = "must not carry user information (user:password@)";
        else if (!host || !*host)
            why = "has no host after the scheme";
        curl_free(user);
        curl_free(pw);
        curl_free(host);
    }
    curl_url_cleanup(h);
    if (!why && (flags & URL_HTTPS_ONLY) && !has_prefix_ci(u, "https://"))
        why = "must start with https:// (authorization servers are reached over TLS only)";
    return why;
}

/* ---- POP3 URLs ---------------------------------------------------------------- */

/* u with every '@' before the last one percent-encoded, so that libcurl
 * (which ends the user information at the first '@') sees one.  malloc'd. */
static char *encode_inner_ats(const char *u)
{
    const char *last = strrchr(u, '@');
    size_t extra = 0;
    for (const char *p = u; last && p < last; p++)
        extra += *p == '@' ? 2 : 0;
    char *out = malloc(strlen(u) + extra + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const char *p = u; *p; p++) {
        if (*p == '@' && p < last) {
            memcpy(o, "%40", 3);
            o += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* The user name, decoded: user[:password] as written (a ':' is part of it). */
static int take_user(CURLU *h, struct url_pop3 *out, struct err *e)
{
    char *raw = part(h, CURLUPART_USER, 0);
    bool named = raw && *raw;
    curl_free(raw);
    /* libcurl refuses to decode control characters: then user is NULL */
    char *user = part(h, CURLUPART_USER, CURLU_URLDECODE);
    char *pw = part(h, CURLUPART_PASSWORD, CURLU_URLDECODE);
    int rc = 0;
    if (!named) {
        rc = err_set(e, ERR_USAGE, "URL needs a user name: pop3s://USER@HOST[:PORT]");
    } else if (!user || (part_present(h, CURLUPART_PASSWORD) && !pw)) {
        rc = err_set(e, ERR_USAGE, "bad user name in URL (percent-encoding or length)");
    } else {
        int n = snprintf(out->user, sizeof out->user, "%s%s%s", user, pw ? ":" : "", pw ? pw : "");
        if (n < 0 || (size_t)n >= sizeof out->user || strpbrk(out->user, "\r\n") ||
            strlen(out->user) != (size_t)n)
            rc = err_set(e, ERR_USAGE, "bad user name in URL (percent-encoding or length)");
    }
    curl_free(user);
    curl_free(pw);
    return rc;
}

/* The host without IPv6 brackets (a zone id kept after '%'), and the port. */
static int take_host_port(CURLU *h, struct url_pop3 *out, struct err *e)
{
    char *host = part(h, CURLUPART_HOST, 0), *zone = part(h, CURLUPART_ZONEID, 0);
    char *port = part(h, CURLUPART_PORT, 0);
    int rc = 0;
    const char *hp = host ? host : "";
    size_t hl = strlen(hp);
    if (hl >= 2 && hp[0] == '[' && hp[hl - 1] == ']') {
        hp++;
        hl -= 2;
    }
    int n = snprintf(out->host, sizeof out->host, "%.*s%s%s", (int)hl, hp, zone ? "%" : "",
                     zone ? zone : "");
    if (hl == 0 || n < 0 || (size_t)n >= sizeof out->host) {
        rc = err_set(e, ERR_USAGE, "URL needs a host: pop3s://USER@HOST[:PORT]");
    } else if (port) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(port, &end, 10);
        if (errno || *end || v < 1 || v > 65535)
            rc = err_set(e, ERR_USAGE, "bad port in URL (1-65535)");
        out->port = (unsigned)v;
    }
    curl_free(host);
    curl_free(zone);
    curl_free(port);
    return rc;
}

int url_parse_pop3(const char *u, struct url_pop3 *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    if (strncmp(u, "pop3s://", 8) == 0)
        out->tls = true;
    else if (strncmp(u, "pop3://", 7) != 0)
        return err_set(e, ERR_USAGE, "URL must start with pop3s:// or pop3:// (got \"%.80s\")", u);
    if (strlen(u) > URL_MAX || has_ctl(u) || strchr(u, ' '))
        return err_set(e, ERR_USAGE, "bad URL: too long, or spaces or control characters in it");
    const char *at = strrchr(u, '@');
    if (!at || at[-1] == '/')
        return err_set(e, ERR_USAGE, "URL needs a user name: pop3s://USER@HOST[:PORT]");
    char *enc = encode_inner_ats(u);
    CURLU *h = enc ? curl_url() : NULL;
    if (!h) {
        free(enc);
        return err_set(e, ERR_INTERNAL, "out of memory");
    }
    int rc = 0;
    CURLUcode cr = curl_url_set(h, CURLUPART_URL, enc, CURLU_NON_SUPPORT_SCHEME);
    char *path = NULL, *query = NULL, *frag = NULL;
    if (cr == CURLUE_BAD_PORT_NUMBER)
        rc = err_set(e, ERR_USAGE, "bad port in URL (1-65535)");
    else if (cr != CURLUE_OK)
        rc = err_set(e, ERR_USAGE, "bad URL \"%.80s\": %s", u, curl_url_strerror(cr));
    else if ((path = part(h, CURLUPART_PATH, 0), path && strcmp(path, "/") != 0) ||
             (query = part(h, CURLUPART_QUERY, 0)) || (frag = part(h, CURLUPART_FRAGMENT, 0)))
        rc = err_set(e, ERR_USAGE, "bad URL \"%.80s\": a POP3 URL ends after HOST[:PORT]", u);
    else if (take_user(h, out, e) < 0 || take_host_port(h, out, e) < 0)
        rc = -1;
    curl_free(path);
    curl_free(query);
    curl_free(frag);
    curl_url_cleanup(h);
    free(enc);
    return rc;
}
