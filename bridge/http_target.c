/* http_target — see include/http_target.h. */
#include "http_target.h"

#include <glib.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define WHY_HEX "a \"%\" not followed by two hex digits"

int http_pct_decode(const char *in, size_t len, char *out, size_t size, size_t *out_len,
                    const char **why)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            int hi = i + 2 < len ? codec_hex_value(in[i + 1]) : -1;
            int lo = i + 2 < len ? codec_hex_value(in[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                *why = WHY_HEX;
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
    if (size)
        out[o] = '\0';
    if (!g_utf8_validate_len(out, o, NULL)) {
        *why = "invalid UTF-8";
        return -1;
    }
    if (out_len)
        *out_len = o;
    return 0;
}

static bool is_dots(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

/* Split and decode the path (len bytes) into t->seg, decoded strings from
 * t->buf + *used. */
static int parse_path(const char *raw, size_t len, struct http_target *t, size_t *used,
                      size_t size, const char **why)
{
    if (len == 0 || raw[0] != '/') {
        *why = "the path does not start with \"/\"";
        return -1;
    }
    for (size_t i = 1; len > 1;) {
        const char *slash = memchr(raw + i, '/', len - i);
        size_t end = slash ? (size_t)(slash - raw) : len;
        if (t->nseg >= HTTP_SEGMENTS_MAX) {
            *why = "too many path segments";
            return -1;
        }
        if (is_dots(raw + i, end - i)) {
            *why = "a \".\" or \"..\" path segment";
            return -1;
        }
        char *out = t->buf + *used;
        size_t dl;
        if (http_pct_decode(raw + i, end - i, out, size - *used, &dl, why) < 0)
            return -1;
        if (is_dots(out, dl)) {
            *why = "an encoded \".\" or \"..\" path segment";
            return -1;
        }
        t->seg[t->nseg++] = out;
        *used += dl + 1;
        if (!slash)
            break;
        i = end + 1;
    }
    return 0;
}

/* Decode one "name[=value]" pair of len bytes. */
static int parse_pair(const char *p, size_t len, struct http_target *t, size_t *used,
                      size_t size, const char **why)
{
    if (t->nq >= HTTP_QUERY_MAX) {
        *why = "too many query parameters";
        return -1;
    }
    const char *eq = memchr(p, '=', len);
    size_t nl = eq ? (size_t)(eq - p) : len, dl;
    char *name = t->buf + *used;
    if (http_pct_decode(p, nl, name, size - *used, &dl, why) < 0)
        return -1;
    *used += dl + 1;
    char *val = t->buf + *used;
    if (http_pct_decode(eq ? eq + 1 : p + len, eq ? len - nl - 1 : 0, val, size - *used, &dl,
                        why) < 0)
        return -1;
    *used += dl + 1;
    if (http_target_query(t, name)) {
        *why = "a query parameter given twice";
        return -1;
    }
    t->q[t->nq].name = name;
    t->q[t->nq].value = val;
    t->nq++;
    return 0;
}

static int parse_query(const char *qs, struct http_target *t, size_t *used, size_t size,
                       const char **why)
{
    for (const char *p = qs; *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len && parse_pair(p, len, t, used, size, why) < 0)
            return -1;
        if (!amp)
            break;
        p = amp + 1;
    }
    return 0;
}

enum http_target_error http_target_parse(const char *raw, struct http_target *t,
                                         const char **why)
{
    memset(t, 0, sizeof *t);
    size_t len = strlen(raw);
    /* each decoded string is no longer than its raw form, plus its NUL */
    size_t size = 2 * len + 4;
    t->buf = malloc(size);
    if (!t->buf) {
        *why = "out of memory";
        return HTTP_TARGET_NOMEM;
    }
    const char *qm = strchr(raw, '?');
    size_t used = 0;
    if (parse_path(raw, qm ? (size_t)(qm - raw) : len, t, &used, size, why) < 0)
        return HTTP_TARGET_BAD_PATH;
    if (qm && parse_query(qm + 1, t, &used, size, why) < 0)
        return HTTP_TARGET_BAD_QUERY;
    return HTTP_TARGET_OK;
}

void http_target_free(struct http_target *t)
{
    if (!t)
        return;
    free(t->buf);
    t->buf = NULL;
}

const char *http_target_query(const struct http_target *t, const char *name)
{
    for (size_t i = 0; i < t->nq; i++)
        if (strcmp(t->q[i].name, name) == 0)
            return t->q[i].value;
    return NULL;
}
