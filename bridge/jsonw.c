/* jsonw — a cJSON tree written out in chunks; see include/jsonw.h. */
#include "jsonw.h"

#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct w {
    jsonw_sink_fn sink;
    void *ctx;
    struct err *e;
    uint64_t written;
    size_t len;
    char buf[JSONW_CHUNK];
};

static int flush(struct w *w)
{
    if (w->len == 0)
        return 0;
    if (w->sink(w->ctx, w->buf, w->len, w->e) < 0)
        return -1;
    w->written += w->len;
    w->len = 0;
    return 0;
}

static int put(struct w *w, const char *p, size_t n)
{
    while (n) {
        if (w->len == sizeof w->buf && flush(w) < 0)
            return -1;
        size_t take = sizeof w->buf - w->len;
        if (take > n)
            take = n;
        memcpy(w->buf + w->len, p, take);
        w->len += take;
        p += take;
        n -= take;
    }
    return 0;
}

static int put_c(struct w *w, char c)
{
    return put(w, &c, 1);
}

/* A string with cJSON's escapes; NULL prints as "". */
static int put_string(struct w *w, const char *s)
{
    if (put_c(w, '"') < 0)
        return -1;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        const unsigned char *run = p;
        while (*p > 31 && *p != '"' && *p != '\\')
            p++;
        if (p > run && put(w, (const char *)run, (size_t)(p - run)) < 0)
            return -1;
        if (!*p)
            break;
        char esc[8];
        size_t n = 2;
        esc[0] = '\\';
        switch (*p) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            snprintf(esc + 1, sizeof esc - 1, "u%04x", *p);
            n = 6;
            break;
        }
        if (put(w, esc, n) < 0)
            return -1;
        p++;
    }
    return put_c(w, '"');
}

/* cJSON's form: 15 significant digits, 17 when 15 lose the value. */
static int put_number(struct w *w, double d)
{
    char num[32];
    int n;
    if (isnan(d) || isinf(d)) {
        n = snprintf(num, sizeof num, "null");
    } else {
        n = snprintf(num, sizeof num, "%1.15g", d);
        char *end = NULL;
        double back = strtod(num, &end);
        double m = fabs(back) > fabs(d) ? fabs(back) : fabs(d);
        if (end == num || !(fabs(back - d) <= m * DBL_EPSILON))
            n = snprintf(num, sizeof num, "%1.17g", d);
    }
    if (n < 0 || (size_t)n >= sizeof num)
        return err_set(w->e, ERR_INTERNAL, "json: a number did not fit its buffer");
    const struct lconv *lc = localeconv();
    char point = lc && lc->decimal_point ? lc->decimal_point[0] : '.';
    for (int i = 0; i < n; i++)
        if (num[i] == point)
            num[i] = '.';
    return put(w, num, (size_t)n);
}

static int put_value(struct w *w, const cJSON *item, int depth)
{
    switch (item->type & 0xff) {
    case cJSON_NULL:
        return put(w, "null", 4);
    case cJSON_False:
        return put(w, "false", 5);
    case cJSON_True:
        return put(w, "true", 4);
    case cJSON_Number:
        return put_number(w, item->valuedouble);
    case cJSON_String:
        return put_string(w, item->valuestring);
    case cJSON_Raw:
        if (!item->valuestring)
            return err_set(w->e, ERR_USAGE, "json: a raw item without text");
        return put(w, item->valuestring, strlen(item->valuestring));
    case cJSON_Array:
    case cJSON_Object:
        break;
    default:
        return err_set(w->e, ERR_USAGE, "json: an item of unknown type %d", item->type & 0xff);
    }
    bool object = (item->type & 0xff) == cJSON_Object;
    if (depth >= JSONW_DEPTH_MAX)
        return err_set(w->e, ERR_LIMIT, "json: nested deeper than %d levels", JSONW_DEPTH_MAX);
    if (put_c(w, object ? '{' : '[') < 0)
        return -1;
    for (const cJSON *c = item->child; c; c = c->next) {
        if (object && (put_string(w, c->string) < 0 || put_c(w, ':') < 0))
            return -1;
        if (put_value(w, c, depth + 1) < 0)
            return -1;
        if (c->next && put_c(w, ',') < 0)
            return -1;
    }
    return put_c(w, object ? '}' : ']');
}

int jsonw_write(const cJSON *item, jsonw_sink_fn sink, void *ctx, uint64_t *written,
                struct err *e)
{
    if (written)
        *written = 0;
    if (!item || !sink)
        return err_set(e, ERR_USAGE, "json: nothing to write, or nowhere to write it");
    struct w *w = malloc(sizeof *w);
    if (!w)
        return err_set(e, ERR_INTERNAL, "json: out of memory");
    w->sink = sink;
    w->ctx = ctx;
    w->e = e;
    w->written = 0;
    w->len = 0;
    int r = put_value(w, item, 0);
    if (r == 0)
        r = flush(w);
    if (r == 0 && written)
        *written = w->written;
    free(w);
    return r;
}
