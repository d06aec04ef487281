/*
 * pop3_proto — the pure parts of the POP3 engine: status lines, numbers,
 * UIDLs, CAPA lines, the APOP timestamp, mechanism lists and the streaming
 * dot decoder.
 * No I/O; see include/pop3.h.
 */
#include "pop3.h"

#include <string.h>
#include <strings.h>

enum pop3_status pop3_parse_status(const char *line, size_t len, const char **text,
                                   size_t *text_len)
{
    enum pop3_status st;
    size_t skip;
    if (len >= 3 && memcmp(line, "+OK", 3) == 0) {
        st = POP3_ST_OK;
        skip = 3;
    } else if (len >= 4 && memcmp(line, "-ERR", 4) == 0) {
        st = POP3_ST_ERR;
        skip = 4;
    } else if (len >= 1 && line[0] == '+' && (len == 1 || line[1] == ' ')) {
        st = POP3_ST_CONT;
        skip = 1;
    } else {
        return POP3_ST_BAD;
    }
    /* "+OKAY" is not "+OK" */
    if (skip < len && line[skip] != ' ' && line[skip] != '\t')
        return POP3_ST_BAD;
    if (skip < len)
        skip++;
    if (text)
        *text = line + skip;
    if (text_len)
        *text_len = len - skip;
    return st;
}

bool pop3_uidl_valid(const char *s, size_t len)
{
    if (len < 1 || len > POP3_UIDL_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}

int pop3_parse_number(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Next space-separated token of [*p, end). */
static bool next_token(const char **p, const char *end, const char **tok, size_t *tlen)
{
    const char *s = *p;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    if (s >= end)
        return false;
    const char *t = s;
    while (s < end && *s != ' ' && *s != '\t')
        s++;
    *tok = t;
    *tlen = (size_t)(s - t);
    *p = s;
    return true;
}

static bool tok_is(const char *tok, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(tok, word, len) == 0;
}

static void copy_clean(char *dst, size_t size, const char *src, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < size; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[o] = '\0';
}

void pop3_capa_parse_line(struct pop3_capa *c, const char *line, size_t len)
{
    const char *p = line, *end = line + len, *tok;
    size_t tlen;
    if (!next_token(&p, end, &tok, &tlen))
        return;
    if (tok_is(tok, tlen, "TOP")) {
        c->top = true;
    } else if (tok_is(tok, tlen, "UIDL")) {
        c->uidl = true;
    } else if (tok_is(tok, tlen, "USER")) {
        c->user = true;
    } else if (tok_is(tok, tlen, "RESP-CODES")) {
        c->resp_codes = true;
    } else if (tok_is(tok, tlen, "AUTH-RESP-CODE")) {
        c->auth_resp_code = true;
    } else if (tok_is(tok, tlen, "PIPELINING")) {
        c->pipelining = true;
    } else if (tok_is(tok, tlen, "STLS")) {
        c->stls = true;
    } else if (tok_is(tok, tlen, "UTF8")) {
        c->utf8 = true;
    } else if (tok_is(tok, tlen, "SASL")) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        copy_clean(c->sasl, sizeof c->sasl, p, (size_t)(end - p));
    } else if (tok_is(tok, tlen, "IMPLEMENTATION")) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        copy_clean(c->implementation, sizeof c->implementation, p, (size_t)(end - p));
    } else if (tok_is(tok, tlen, "LOGIN-DELAY") || tok_is(tok, tlen, "EXPIRE")) {
        bool expire = tok_is(tok, tlen, "EXPIRE");
        const char *v;
        size_t vlen;
        uint64_t n;
        if (!next_token(&p, end, &v, &vlen))
            return;
        long val;
        if (expire && tok_is(v, vlen, "NEVER"))
            val = -2;
        else if (pop3_parse_number(v, vlen, 0, 100000000, &n) == 0)
            val = (long)n;
        else
            return; /* malformed: ignore, as if not advertised */
        if (expire)
            c->expire = val;
        else
            c->login_delay = val;
    }
}

int pop3_apop_timestamp(const char *greeting, size_t len, const char **ts, size_t *ts_len)
{
    const char *lt = memchr(greeting, '<', len);
    if (!lt)
        return -1;
    const char *end = greeting + len;
    const char *gt = memchr(lt, '>', (size_t)(end - lt));
    if (!gt)
        return -1;
    size_t n = (size_t)(gt - lt + 1);
    if (n < 3 || n > 256 || !memchr(lt, '@', n))
        return -1;
    for (const char *q = lt; q <= gt; q++)
        if ((unsigned char)*q < 0x21 || (unsigned char)*q > 0x7e)
            return -1;
    *ts = lt;
    *ts_len = n;
    return 0;
}

/* ---- dot decoder ---------------------------------------------------------- */

enum {
    DOT_BOL = 0,  /* at the beginning of a line */
    DOT_MID,      /* inside a line */
    DOT_MID_CR,   /* lf mode: a '\r' ended the last chunk, held back */
    DOT_DOT,      /* saw '.' at the beginning of a line */
    DOT_DOT_CR,   /* saw ".\r" at the beginning of a line */
};

void pop3_dot_init(struct pop3_dot *d, bool lf, uint64_t max,
                   int (*out)(void *ctx, const char *buf, size_t len, struct err *e),
                   void *ctx)
{
    d->state = DOT_BOL;
    d->lf = lf;
    d->done = false;
    d->octets = 0;
    d->max = max;
    d->olen = 0;
    d->out = out;
    d->ctx = ctx;
}

static int dot_flush(struct pop3_dot *d, struct err *e)
{
    if (d->olen == 0)
        return 0;
    size_t n = d->olen;
    d->olen = 0;
    return d->out(d->ctx, d->obuf, n, e);
}

/* Append to the output buffer, flushing as needed; checks the limit. */
static int dot_emit(struct pop3_dot *d, const char *s, size_t n, struct err *e)
{
    d->octets += n;
    if (d->max && d->octets > d->max)
        return err_set(e, ERR_LIMIT, "message is larger than the limit of %llu octets",
                       (unsigned long long)d->max);
    while (n) {
        size_t room = sizeof d->obuf - d->olen;
        if (room == 0) {
            if (dot_flush(d, e) < 0)
                return -1;
            room = sizeof d->obuf;
        }
        size_t k = n < room ? n : room;
        memcpy(d->obuf + d->olen, s, k);
        d->olen += k;
        s += k;
        n -= k;
    }
    return 0;
}

long pop3_dot_feed(struct pop3_dot *d, const char *in, size_t len, struct err *e)
{
    size_t i = 0;
    while (i < len && !d->done) {
        switch (d->state) {
        case DOT_BOL:
            if (in[i] == '.') {
                d->state = DOT_DOT;
                i++;
                continue;
            }
            d->state = DOT_MID;
            continue;
        case DOT_DOT:
            if (in[i] == '\r') {
                d->state = DOT_DOT_CR;
                i++;
            } else if (in[i] == '\n') {
                d->done = true; /* ".\n": tolerated terminator */
                i++;
            } else {
                d->state = DOT_MID; /* stuffed dot dropped */
            }
            continue;
        case DOT_DOT_CR:
            if (in[i] == '\n') {
                d->done = true;
                i++;
            } else {
                /* ".\r" followed by more: a line "\r..." whose dot was stuffing */
                if (dot_emit(d, "\r", 1, e) < 0)
                    return -1;
                d->state = DOT_MID;
            }
            continue;
        case DOT_MID_CR:
            if (in[i] == '\n') {
                if (dot_emit(d, "\n", 1, e) < 0)
                    return -1;
                d->state = DOT_BOL;
                i++;
            } else {
                if (dot_emit(d, "\r", 1, e) < 0)
                    return -1;
                d->state = DOT_MID;
            }
            continue;
        case DOT_MID: {
            const char *nl = memchr(in + i, '\n', len - i);
            if (!nl) {
                size_t n = len - i;
                if (d->lf && in[len - 1] == '\r') {
                    if (dot_emit(d, in + i, n - 1, e) < 0)
                        return -1;
                    d->state = DOT_MID_CR;
                } else if (dot_emit(d, in + i, n, e) < 0) {
                    return -1;
                }
                i = len;
                continue;
            }
            size_t j = (size_t)(nl - in); /* index of '\n' */
            if (d->lf && j > i && in[j - 1] == '\r') {
                if (dot_emit(d, in + i, j - 1 - i, e) < 0 || dot_emit(d, "\n", 1, e) < 0)
                    return -1;
            } else if (dot_emit(d, in + i, j + 1 - i, e) < 0) {
                return -1;
            }
            i = j + 1;
            d->state = DOT_BOL;
            continue;
        }
        }
    }
    if (d->done && dot_flush(d, e) < 0)
        return -1;
    return (long)i;
}

int pop3_mech_list_parse(const char *list, enum pop3_mech *out, size_t *n, struct err *e)
{
    *n = 0;
    const char *p = list;
    while (*p) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        char name[32];
        if (len == 0 || len >= sizeof name)
            return err_set(e, ERR_USAGE, "bad authentication mechanism list \"%s\"", list);
        memcpy(name, p, len);
        name[len] = '\0';
        enum pop3_mech m = pop3_mech_parse(name);
        if (m == POP3_MECH_NONE)
            return err_set(e, ERR_USAGE,
                           "unknown authentication mechanism \"%s\" (use user, apop, plain, "
                           "login, cram-md5, scram-sha-1, scram-sha-256, xoauth2, oauthbearer)",
                           name);
        if (*n >= POP3_MECHS_MAX)
            return err_set(e, ERR_USAGE, "too many authentication mechanisms (at most %d)",
                           POP3_MECHS_MAX);
        out[(*n)++] = m;
        p += len;
        if (*p == ',')
            p++;
    }
    if (*n == 0)
        return err_set(e, ERR_USAGE, "empty authentication mechanism list");
    return 0;
}
