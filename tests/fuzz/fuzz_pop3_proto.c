/* libFuzzer target: the pure POP3 parsers — status lines, numbers, UIDLs,
 * CAPA lines, APOP timestamps and the streaming dot decoder, which must give
 * the same output whatever the chunking. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3.h"

struct sink {
    char *buf;
    size_t len, cap;
};

static int put(void *ctx, const char *b, size_t n, struct err *e)
{
    (void)e;
    struct sink *s = ctx;
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = realloc(s->buf, s->cap);
        if (!s->buf)
            abort();
    }
    memcpy(s->buf + s->len, b, n);
    s->len += n;
    return 0;
}

static long run(const uint8_t *data, size_t size, size_t step, bool lf, uint64_t max,
                struct sink *out, bool *done)
{
    struct pop3_dot *d = malloc(sizeof *d);
    struct err e;
    pop3_dot_init(d, lf, max, put, out);
    size_t pos = 0;
    long rc = 0;
    while (pos < size && !d->done) {
        size_t piece = size - pos < step ? size - pos : step;
        long used = pop3_dot_feed(d, (const char *)data + pos, piece, &e);
        if (used < 0) {
            rc = -1;
            break;
        }
        if ((size_t)used > piece)
            abort();
        pos += (size_t)used;
        if ((size_t)used < piece && !d->done)
            abort(); /* only the terminator stops a feed early */
    }
    *done = d->done;
    if (rc == 0) {
        rc = (long)pos;
        if (d->done && d->octets != out->len)
            abort(); /* a finished body is fully flushed */
    }
    free(d);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *t;
    size_t tl;
    uint64_t v;
    pop3_parse_status((const char *)data, size, &t, &tl);
    pop3_parse_number((const char *)data, size, 0, UINT64_MAX, &v);
    pop3_uidl_valid((const char *)data, size);
    struct pop3_capa c;
    memset(&c, 0, sizeof c);
    pop3_capa_parse_line(&c, (const char *)data, size);
    if (memchr(c.sasl, 0, sizeof c.sasl) == NULL || memchr(c.implementation, 0, sizeof c.implementation) == NULL)
        abort();
    const char *ts;
    size_t tsl;
    if (pop3_apop_timestamp((const char *)data, size, &ts, &tsl) == 0 &&
        (ts < (const char *)data || ts + tsl > (const char *)data + size))
        abort();

    /* The decoder: whole input vs byte by byte vs odd chunks must agree. */
    bool lf = size && (data[0] & 1);
    struct sink a = {0}, b = {0}, c2 = {0};
    bool da, db, dc;
    long ra = run(data, size, size ? size : 1, lf, 0, &a, &da);
    long rb = run(data, size, 1, lf, 0, &b, &db);
    long rc = run(data, size, 7, lf, 0, &c2, &dc);
    if (ra != rb || ra != rc || da != db || da != dc)
        abort();
    if (da && (a.len != b.len || a.len != c2.len || memcmp(a.buf, b.buf, a.len) != 0 ||
               memcmp(a.buf, c2.buf, a.len) != 0))
        abort();
    /* a limit below the output size must stop it with an error */
    if (da && a.len > 1) {
        struct sink s = {0};
        bool dd;
        if (run(data, size, 3, lf, a.len - 1, &s, &dd) != -1)
            abort();
        free(s.buf);
    }
    free(a.buf);
    free(b.buf);
    free(c2.buf);
    return 0;
}
