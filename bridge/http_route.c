/* http_route — see include/http_route.h. */
#include "http_route.h"

#include <stdio.h>
#include <string.h>

/* Match pat against the segments, binding its parameters into p. */
static bool pattern_match(const char *pat, const char *const *seg, size_t nseg,
                          struct http_params *p)
{
    size_t i = 0;
    p->n = 0;
    for (const char *s = pat + 1; *s;) {
        const char *slash = strchr(s, '/');
        size_t pl = slash ? (size_t)(slash - s) : strlen(s);
        if (i >= nseg)
            return false;
        if (s[0] != '{') {
            if (strlen(seg[i]) != pl || memcmp(seg[i], s, pl) != 0)
                return false;
        } else {
            if (!seg[i][0] || p->n >= HTTP_PARAMS_MAX)
                return false; /* a parameter is never empty */
            p->name[p->n] = s + 1;
            p->name_len[p->n] = pl - 2;
            p->value[p->n] = seg[i];
            p->n++;
        }
        i++;
        s += pl + (slash ? 1 : 0);
    }
    return i == nseg;
}

static bool method_is(const char *route_method, const char *method)
{
    return strcmp(route_method, method) == 0 ||
           (strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

static void allow_add(char *allow, size_t size, size_t *al, const char *m)
{
    int n = snprintf(allow + *al, size - *al, "%s%s%s", *al ? ", " : "", m,
                     strcmp(m, "GET") == 0 ? ", HEAD" : "");
    if (n > 0 && (size_t)n < size - *al)
        *al += (size_t)n;
}

int http_route_find(const struct http_route *routes, size_t n, const char *method,
                    const char *const *seg, size_t nseg, struct http_params *p, char *allow,
                    size_t allow_size, bool *public)
{
    bool known = false, all_public = true;
    size_t al = 0;
    struct http_params tmp;
    if (allow_size)
        allow[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!pattern_match(routes[i].pattern, seg, nseg, &tmp))
            continue;
        known = true;
        all_public = all_public && (routes[i].flags & HTTP_ROUTE_PUBLIC);
        if (method_is(routes[i].method, method)) {
            *p = tmp;
            if (public)
                *public = (routes[i].flags & HTTP_ROUTE_PUBLIC) != 0;
            return (int)i;
        }
        if (allow_size)
            allow_add(allow, allow_size, &al, routes[i].method);
    }
    if (public)
        *public = known && all_public;
    return known ? HTTP_ROUTE_NO_METHOD : HTTP_ROUTE_NOT_FOUND;
}

const char *http_params_get(const struct http_params *p, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < p->n; i++)
        if (p->name_len[i] == nl && memcmp(p->name[i], name, nl) == 0)
            return p->value[i];
    return NULL;
}

bool http_route_query_ok(const struct http_route *r, const char *name)
{
    if (!r->query)
        return false;
    size_t nl = strlen(name);
    for (const char *p = r->query; *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        if (l == nl && memcmp(p, name, l) == 0)
            return true;
        p += l + (c ? 1 : 0);
    }
    return false;
}

/* One "{name}" part of pl bytes: closed, [a-z_]+, not already in names. */
static bool param_ok(const char *s, size_t pl, const char **names, size_t *lens, size_t n)
{
    if (pl < 3 || s[pl - 1] != '}' || pl - 2 > HTTP_PARAM_NAME_MAX)
        return false;
    for (size_t k = 1; k + 1 < pl; k++)
        if (!((s[k] >= 'a' && s[k] <= 'z') || s[k] == '_'))
            return false;
    for (size_t k = 0; k < n; k++)
        if (lens[k] == pl - 2 && memcmp(names[k], s + 1, pl - 2) == 0)
            return false;
    return true;
}

static bool pattern_ok(const char *pat)
{
    const char *names[HTTP_PARAMS_MAX];
    size_t lens[HTTP_PARAMS_MAX], n = 0;
    if (!pat || pat[0] != '/')
        return false;
    for (const char *s = pat + 1; *s;) {
        const char *slash = strchr(s, '/');
        size_t pl = slash ? (size_t)(slash - s) : strlen(s);
        if (pl == 0 || (slash && !slash[1]))
            return false;
        if (s[0] == '{') {
            if (n >= HTTP_PARAMS_MAX || !param_ok(s, pl, names, lens, n))
                return false;
            names[n] = s + 1;
            lens[n++] = pl - 2;
        } else if (memchr(s, '{', pl) || memchr(s, '}', pl)) {
            return false;
        }
        s += pl + (slash ? 1 : 0);
    }
    return true;
}

int http_route_check(const struct http_route *routes, size_t n, size_t *bad)
{
    for (size_t i = 0; i < n; i++) {
        bool ok = routes[i].method && routes[i].fn && pattern_ok(routes[i].pattern);
        for (size_t j = 0; ok && j < i; j++)
            ok = !(strcmp(routes[i].method, routes[j].method) == 0 &&
                   strcmp(routes[i].pattern, routes[j].pattern) == 0);
        if (!ok) {
            *bad = i;
            return -1;
        }
    }
    return 0;
}
