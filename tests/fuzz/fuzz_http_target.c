/* libFuzzer target: the HTTP request-target parsers (http_target.h) and the
 * route table's matching (http_route.h) over the API's own table.  Checks,
 * for any input: a parse either fails with a reason or gives segments and
 * query values that are valid UTF-8 without control characters, never "."
 * or "..", no longer than the input, within the limits, with no query name
 * twice; the query lookup finds each value; a route match binds every
 * "{name}" to a non-empty segment and matches the literal parts exactly. */
#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "http_route.h"
#include "http_target.h"

static void check_text(const char *s, size_t raw_len)
{
    size_t n = strlen(s);
    if (n > raw_len || !g_utf8_validate_len(s, n, NULL))
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            abort();
}

static void check_match(const struct http_route *r, const struct http_target *t,
                        const struct http_params *p)
{
    size_t i = 0, np = 0;
    for (const char *s = r->pattern + 1; *s; i++) {
        const char *slash = strchr(s, '/');
        size_t pl = slash ? (size_t)(slash - s) : strlen(s);
        if (i >= t->nseg)
            abort();
        if (s[0] == '{') {
            char name[HTTP_PARAM_NAME_MAX + 1];
            memcpy(name, s + 1, pl - 2);
            name[pl - 2] = '\0';
            const char *v = http_params_get(p, name);
            if (!v || v != t->seg[i] || !*v)
                abort();
            np++;
        } else if (strlen(t->seg[i]) != pl || memcmp(t->seg[i], s, pl) != 0) {
            abort();
        }
        s += pl + (slash ? 1 : 0);
    }
    if (i != t->nseg || np != p->n)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "DELETE", "PUT", "OPTIONS"};
    if (size < 1 || size > 16384)
        return 0;
    const char *method = methods[data[0] % (sizeof methods / sizeof methods[0])];
    char *raw = malloc(size);
    if (!raw)
        return 0;
    memcpy(raw, data + 1, size - 1);
    raw[size - 1] = '\0';
    size_t len = strlen(raw);

    char *out = malloc(len + 1);
    const char *why = NULL;
    size_t dl = 0;
    if (out && http_pct_decode(raw, len, out, len + 1, &dl, &why) == 0) {
        if (dl != strlen(out))
            abort(); /* %00 is refused, so no NUL inside */
        check_text(out, len);
    } else if (out && !why) {
        abort();
    }
    free(out);

    struct http_target t;
    why = NULL;
    enum http_target_error rc = http_target_parse(raw, &t, &why);
    if (rc != HTTP_TARGET_OK) {
        if (!why)
            abort();
    } else {
        if (t.nseg > HTTP_SEGMENTS_MAX || t.nq > HTTP_QUERY_MAX)
            abort();
        for (size_t i = 0; i < t.nseg; i++) {
            check_text(t.seg[i], len);
            if (!strcmp(t.seg[i], ".") || !strcmp(t.seg[i], ".."))
                abort();
        }
        for (size_t i = 0; i < t.nq; i++) {
            check_text(t.q[i].name, len);
            check_text(t.q[i].value, len);
            if (http_target_query(&t, t.q[i].name) != t.q[i].value)
                abort(); /* found, and no name given twice */
        }
        size_t n;
        const struct http_route *routes = api_routes(&n);
        struct http_params p;
        char allow[HTTP_ALLOW_MAX];
        bool pub;
        int k = http_route_find(routes, n, method, t.seg, t.nseg, &p, allow, sizeof allow, &pub);
        if (k >= 0)
            check_match(&routes[k], &t, &p);
        else if (k == HTTP_ROUTE_NO_METHOD && !allow[0])
            abort();
        else if (k != HTTP_ROUTE_NO_METHOD && k != HTTP_ROUTE_NOT_FOUND)
            abort();
    }
    http_target_free(&t);
    free(raw);
    return 0;
}
