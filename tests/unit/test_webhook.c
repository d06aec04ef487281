/* Unit tests: webhook signing, ids, classification, backoff, and the sender
 * against real HTTP servers on 127.0.0.1 (include/webhook.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "webhook.h"

/* The Standard Webhooks published test vector. */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS 1614265330
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

#define WAIT_LIMIT_MS 10000 /* every wait for the network is bounded by this */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void vec_key(unsigned char *key, size_t *len)
{
    struct err e;
    assert_int_equal(webhook_secret_decode(VEC_SECRET, key, WEBHOOK_KEY_MAX, len, &e), 0);
}

/* ---- pure functions ---------------------------------------------------- */

static void sign_vector(void **state)
{
    (void)state;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char sig[WEBHOOK_SIG_SIZE];
    vec_key(key, &klen);
    assert_int_equal(klen, 24);
    assert_int_equal(webhook_sign(key, klen, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), sig,
                                  sizeof sig),
                     0);
    assert_string_equal(sig, VEC_SIG);

    /* one byte of the body, the id or the timestamp changes it */
    assert_int_equal(webhook_sign(key, klen, VEC_ID, VEC_TS + 1, VEC_BODY, strlen(VEC_BODY),
                                  sig, sizeof sig),
                     0);
    assert_string_not_equal(sig, VEC_SIG);
    assert_int_equal(webhook_sign(key, klen, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY) - 1,
                                  sig, sizeof sig),
                     0);
    assert_string_not_equal(sig, VEC_SIG);
    /* output too small: refused, not truncated */
    char small[20];
    assert_int_equal(webhook_sign(key, klen, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), small,
                                  sizeof small),
                     -1);
    assert_string_equal(small, "");
    assert_int_equal(webhook_sign(NULL, 0, VEC_ID, VEC_TS, "", 0, sig, sizeof sig), -1);
}

static void verify_vector(void **state)
{
    (void)state;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    struct err e;
    const char *b = VEC_BODY;
    size_t bl = strlen(b);
    vec_key(key, &klen);

    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", b, bl, VEC_SIG, VEC_TS,
                                    300, &e),
                     0);
    /* several signatures, the good one not first; other versions ignored */
    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", b, bl,
                                    "v1,Zm9v v1a,xyz " VEC_SIG, VEC_TS, 300, &e),
                     0);
    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", b, bl,
                                    "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", VEC_TS,
                                    300, &e),
                     -1);
    assert_int_equal(e.kind, ERR_AUTH);
    /* tampered body, wrong id */
    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", "{\"test\": 2432232315}",
                                    bl, VEC_SIG, VEC_TS, 300, &e),
                     -1);
    assert_int_equal(e.kind, ERR_AUTH);
    assert_int_equal(webhook_verify(key, klen, "msg_other", "1614265330", b, bl, VEC_SIG,
                                    VEC_TS, 300, &e),
                     -1);
    /* a prefix of the right signature does not match */
    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", b, bl,
                                    "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", VEC_TS,
                                    300, &e),
                     -1);
    /* timestamp tolerance, both directions */
    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", b, bl, VEC_SIG,
                                    VEC_TS + 300, 300, &e),
                     0);
    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", b, bl, VEC_SIG,
                                    VEC_TS + 301, 300, &e),
                     -1);
    assert_int_equal(e.kind, ERR_AUTH);
    assert_non_null(strstr(e.msg, "too old"));
    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", b, bl, VEC_SIG,
                                    VEC_TS - 301, 300, &e),
                     -1);
    assert_non_null(strstr(e.msg, "too new"));
    /* malformed headers */
    const char *bad_ts[] = {"", "-1614265330", "1614265330 ", "16142653x0",
                            "99999999999999999999", "+1614265330"};
    for (size_t i = 0; i < sizeof bad_ts / sizeof bad_ts[0]; i++) {
        assert_int_equal(webhook_verify(key, klen, VEC_ID, bad_ts[i], b, bl, VEC_SIG, VEC_TS,
                                        300, &e),
                         -1);
        assert_int_equal(e.kind, ERR_PROTO);
    }
    assert_int_equal(webhook_verify(key, klen, NULL, "1614265330", b, bl, VEC_SIG, VEC_TS, 300,
                                    &e),
                     -1);
    assert_int_equal(e.kind, ERR_PROTO);
    assert_int_equal(webhook_verify(key, klen, VEC_ID, "1614265330", b, bl, "", VEC_TS, 300,
                                    &e),
                     -1);
    assert_int_equal(e.kind, ERR_PROTO);
    /* a different key */
    unsigned char other[24];
    memset(other, 7, sizeof other);
    assert_int_equal(webhook_verify(other, sizeof other, VEC_ID, "1614265330", b, bl, VEC_SIG,
                                    VEC_TS, 300, &e),
                     -1);
    assert_int_equal(e.kind, ERR_AUTH);
}

static void secret_decode(void **state)
{
    (void)state;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t len = 99;
    struct err e;
    /* 64 bytes: the largest accepted */
    assert_int_equal(
        webhook_secret_decode("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJy"
                              "gpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==",
                              key, sizeof key, &len, &e),
        0);
    assert_int_equal(len, 64);
    for (int i = 0; i < 64; i++)
        assert_int_equal(key[i], i);

    const char *bad[] = {
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",          /* no prefix */
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",    /* prefix is case-sensitive */
        "whsec_",                                   /* empty */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",     /* not a multiple of 4 */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa w",    /* space */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa\nw",   /* newline */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-w",    /* URL-safe alphabet */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZI=2LaLaSw",    /* padding in the middle */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa=w",    /* "x=y" padding */
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX=",   /* bad length with padding */
        "whsec_AAECAwQFBgcICQoLDA0ODw==",           /* 16 bytes: too short */
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4"
        "OTo7PD0+P0A=",                              /* 65 bytes: too long */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx==",  /* 40 chars, padding wrong */
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx==", /* stray bits before "==" */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        len = 99;
        e.msg[0] = '\0';
        assert_int_equal(webhook_secret_decode(bad[i], key, sizeof key, &len, &e), -1);
        assert_int_equal(e.kind, ERR_USAGE);
        assert_int_equal(len, 99);
        assert_true(strlen(e.msg) > 0);
        /* the error never quotes the secret */
        assert_null(strstr(e.msg, "MfKQ9r8G"));
        assert_null(strstr(e.msg, "AAECAwQF"));
    }
    assert_int_equal(webhook_secret_decode(NULL, key, sizeof key, &len, &e), -1);
    /* a buffer smaller than the key is refused */
    assert_int_equal(webhook_secret_decode(VEC_SECRET, key, 16, &len, &e), -1);
}

static void id_stable(void **state)
{
    (void)state;
    char a[WEBHOOK_ID_SIZE], b[WEBHOOK_ID_SIZE];
    /* printf 'support\0uidl-1\0crm' | sha256sum | cut -c1-32 */
    assert_int_equal(webhook_id("support", "uidl-1", "crm", a, sizeof a), 0);
    assert_string_equal(a, "msg_5386ace5417989c2b8f74a0438bf1a18");
    assert_int_equal(webhook_id("support", "uidl-1", "crm", b, sizeof b), 0);
    assert_string_equal(a, b);
    assert_int_equal(webhook_id("support", "uidl-2", "crm", b, sizeof b), 0);
    assert_string_equal(b, "msg_3b20da572fcbddf028762089ce23eda1");
    assert_int_equal(webhook_id("support", "uidl-1", "crm2", b, sizeof b), 0);
    assert_string_not_equal(a, b);
    /* the separators keep the fields apart */
    assert_int_equal(webhook_id("ab", "c", "d", a, sizeof a), 0);
    assert_int_equal(webhook_id("a", "bc", "d", b, sizeof b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(strlen(a), 36);
    assert_int_equal(webhook_id("a", "b", "c", a, WEBHOOK_ID_SIZE - 4), -1);
    assert_int_equal(webhook_id(NULL, "b", "c", a, sizeof a), -1);
}

static void classify_table(void **state)
{
    (void)state;
    static const struct {
        int status;
        enum err_kind kind;
        enum webhook_outcome want;
    } t[] = {
        {200, ERR_NONE, WEBHOOK_DELIVERED},   {201, ERR_NONE, WEBHOOK_DELIVERED},
        {204, ERR_NONE, WEBHOOK_DELIVERED},   {299, ERR_NONE, WEBHOOK_DELIVERED},
        {410, ERR_NONE, WEBHOOK_DISABLED},    {429, ERR_NONE, WEBHOOK_RETRY},
        {408, ERR_NONE, WEBHOOK_RETRY},       {500, ERR_NONE, WEBHOOK_RETRY},
        {502, ERR_NONE, WEBHOOK_RETRY},       {503, ERR_NONE, WEBHOOK_RETRY},
        {599, ERR_NONE, WEBHOOK_RETRY},       {0, ERR_TIMEOUT, WEBHOOK_RETRY},
        {0, ERR_CONN, WEBHOOK_RETRY},         {0, ERR_TLS, WEBHOOK_RETRY},
        {0, ERR_PROTO, WEBHOOK_RETRY},        {0, ERR_INTERNAL, WEBHOOK_RETRY},
        {0, ERR_USAGE, WEBHOOK_REJECTED},     {200, ERR_TIMEOUT, WEBHOOK_RETRY},
        {400, ERR_NONE, WEBHOOK_REJECTED},    {401, ERR_NONE, WEBHOOK_REJECTED},
        {404, ERR_NONE, WEBHOOK_REJECTED},    {413, ERR_NONE, WEBHOOK_REJECTED},
        {301, ERR_NONE, WEBHOOK_REJECTED},    {302, ERR_NONE, WEBHOOK_REJECTED},
        {307, ERR_NONE, WEBHOOK_REJECTED},    {100, ERR_NONE, WEBHOOK_REJECTED},
        {600, ERR_NONE, WEBHOOK_REJECTED},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct webhook_result r;
        memset(&r, 0, sizeof r);
        r.status = t[i].status;
        r.err.kind = t[i].kind;
        r.retry_after_s = -1;
        if (webhook_classify(&r) != t[i].want)
            fail_msg("status %d kind %d: got %s, want %s", t[i].status, t[i].kind,
                     webhook_outcome_name(webhook_classify(&r)),
                     webhook_outcome_name(t[i].want));
    }
    struct webhook_result r;
    memset(&r, 0, sizeof r);
    r.status = 200;
    r.aborted = true;
    assert_int_equal(webhook_classify(&r), WEBHOOK_RETRY);
    assert_int_equal(webhook_classify(NULL), WEBHOOK_RETRY);
    assert_string_equal(webhook_outcome_name(WEBHOOK_REJECTED), "rejected");
}

static void backoff(void **state)
{
    (void)state;
    const int64_t sched[] = {5000, 30000, 120000};
    /* no jitter: exact */
    assert_int_equal(webhook_next_delay_ms(sched, 3, 1, -1, 0), 5000);
    assert_int_equal(webhook_next_delay_ms(sched, 3, 2, -1, 0), 30000);
    assert_int_equal(webhook_next_delay_ms(sched, 3, 3, -1, 0), 120000);
    /* after the last attempt: dead */
    assert_int_equal(webhook_next_delay_ms(sched, 3, 4, -1, 0), -1);
    assert_int_equal(webhook_next_delay_ms(sched, 3, 4, 10, 0.2), -1);
    assert_int_equal(webhook_next_delay_ms(sched, 3, 0, -1, 0), -1);
    assert_int_equal(webhook_next_delay_ms(NULL, 0, 1, -1, 0), -1);
    /* Retry-After: the larger wins */
    assert_int_equal(webhook_next_delay_ms(sched, 3, 1, 60, 0), 60000);
    assert_int_equal(webhook_next_delay_ms(sched, 3, 2, 1, 0), 30000);
    assert_int_equal(webhook_next_delay_ms(sched, 3, 1, 0, 0), 5000);
    assert_int_equal(webhook_next_delay_ms(sched, 3, 1, 10LL * WEBHOOK_RETRY_AFTER_MAX_S, 0),
                     (int64_t)WEBHOOK_RETRY_AFTER_MAX_S * 1000);
    /* jitter: within +-20%, and not constant */
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 2000; i++) {
        int64_t d = webhook_next_delay_ms(sched, 3, 2, -1, 0.2);
        assert_in_range(d, 24000, 36000);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_true(hi - lo > 6000); /* spread over most of the 12 s range */
    assert_true(lo < 27000 && hi > 33000);
    /* Retry-After still a floor under jitter */
    for (int i = 0; i < 200; i++)
        assert_true(webhook_next_delay_ms(sched, 3, 1, 10, 0.2) == 10000);
    /* silly jitter is clamped to 0..1 */
    for (int i = 0; i < 200; i++)
        assert_in_range(webhook_next_delay_ms(sched, 3, 1, -1, 7.0), 0, 10000);
    assert_int_equal(webhook_next_delay_ms(sched, 3, 1, -1, -3.0), 5000);
}

static void retry_after_parse(void **state)
{
    (void)state;
    const int64_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_int_equal(webhook_parse_retry_after("120", now), 120);
    assert_int_equal(webhook_parse_retry_after(" 5 ", now), 5);
    assert_int_equal(webhook_parse_retry_after("0", now), 0);
    assert_int_equal(webhook_parse_retry_after("99999999999999999999999", now),
                     WEBHOOK_RETRY_AFTER_MAX_S);
    assert_int_equal(webhook_parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), 60);
    assert_int_equal(webhook_parse_retry_after("Sunday, 06-Nov-94 08:51:37 GMT", now), 120);
    assert_int_equal(webhook_parse_retry_after("Sun Nov  6 08:49:47 1994", now), 10);
    assert_int_equal(webhook_parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), 0);
    assert_int_equal(webhook_parse_retry_after("Sun, 06 Nov 2094 08:49:37 GMT", now),
                     WEBHOOK_RETRY_AFTER_MAX_S);
    const char *bad[] = {"", "   ", "-1", "1.5", "12s", "+3", "soon", "Sun, 99 Foo 1994",
                         "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (webhook_parse_retry_after(bad[i], now) != -1)
            fail_msg("Retry-After \"%s\" accepted", bad[i]);
    assert_int_equal(webhook_parse_retry_after(NULL, now), -1);
}

static void header_check(void **state)
{
    (void)state;
    struct err e;
    assert_int_equal(webhook_header_check("X-Tenant", "acme", &e), 0);
    assert_int_equal(webhook_header_check("Authorization", "Bearer abc\tdef", &e), 0);
    assert_int_equal(webhook_header_check("X-Empty", "", &e), 0);
    static const struct {
        const char *name, *value, *why;
    } bad[] = {
        {"X-Tenant", "acme\r\nX-Injected: 1", "CR"},
        {"X-Tenant", "acme\nX-Injected: 1", "LF"},
        {"X-Tenant", "a\001b", "control"},
        {"X-Ten\rant", "acme", "not allowed"},
        {"X Tenant", "acme", "not allowed"},
        {"X-Tenant:", "acme", "not allowed"},
        {"", "acme", "empty"},
        {"webhook-signature", "v1,forged", "webhook-*"},
        {"Webhook-Id", "x", "webhook-*"},
        {"content-type", "text/plain", "set by the bridge"},
        {"Host", "evil", "set by the bridge"},
        {"X-Tenant", NULL, "missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e.msg[0] = '\0';
        assert_int_equal(webhook_header_check(bad[i].name, bad[i].value, &e), -1);
        assert_int_equal(e.kind, ERR_USAGE);
        if (!strstr(e.msg, bad[i].why))
            fail_msg("header %zu: \"%s\" lacks \"%s\"", i, e.msg, bad[i].why);
        assert_null(strstr(e.msg, "Injected")); /* values are not quoted */
    }
    char longv[WEBHOOK_HEADER_VALUE_MAX + 2];
    memset(longv, 'a', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    assert_int_equal(webhook_header_check("X-Long", longv, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
}

/* ---- a small HTTP server for the sender tests --------------------------- */

#define SRV_BODY_MAX (8 << 20)
#define SRV_FIELD 512

struct srv {
    struct MHD_Daemon *d;
    unsigned port;
    pthread_mutex_t mu;
    /* behaviour */
    int status;
    const char *location;
    const char *retry_after;
    const char *reply; /* response body, NULL: "ok" */
    size_t reply_len;
    int delay_ms;
    volatile int stopping;
    /* what was seen */
    int requests, cur, max_cur;
    char method[16], url[SRV_FIELD];
    char id[SRV_FIELD], ts[SRV_FIELD], sig[SRV_FIELD], ctype[SRV_FIELD], ua[SRV_FIELD];
    char tenant[SRV_FIELD], expect[SRV_FIELD];
    int n_headers;
    char *body;
    size_t body_len;
};

struct srv_req {
    char *buf;
    size_t len;
    int counted;
};

static void copy_hdr(struct MHD_Connection *c, const char *name, char *dst)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    snprintf(dst, SRV_FIELD, "%s", v ? v : "<none>");
}

static enum MHD_Result count_hdr(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    (void)key;
    (void)value;
    (*(int *)cls)++;
    return MHD_YES;
}

static enum MHD_Result srv_handler(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version,
                                   const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    struct srv *s = cls;
    struct srv_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        pthread_mutex_lock(&s->mu);
        r->counted = 1;
        s->requests++;
        s->cur++;
        if (s->cur > s->max_cur)
            s->max_cur = s->cur;
        snprintf(s->method, sizeof s->method, "%s", method);
        snprintf(s->url, sizeof s->url, "%s", url);
        copy_hdr(c, "webhook-id", s->id);
        copy_hdr(c, "webhook-timestamp", s->ts);
        copy_hdr(c, "webhook-signature", s->sig);
        copy_hdr(c, "Content-Type", s->ctype);
        copy_hdr(c, "User-Agent", s->ua);
        copy_hdr(c, "X-Tenant", s->tenant);
        copy_hdr(c, "Expect", s->expect);
        s->n_headers = 0;
        MHD_get_connection_values(c, MHD_HEADER_KIND, count_hdr, &s->n_headers);
        pthread_mutex_unlock(&s->mu);
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->len + *upload_size > SRV_BODY_MAX)
            return MHD_NO;
        char *nb = realloc(r->buf, r->len + *upload_size + 1);
        if (!nb)
            return MHD_NO;
        r->buf = nb;
        memcpy(r->buf + r->len, upload, *upload_size);
        r->len += *upload_size;
        r->buf[r->len] = '\0';
        *upload_size = 0;
        return MHD_YES;
    }
    /* whole body read: answer */
    for (int waited = 0; waited < s->delay_ms && !s->stopping; waited += 10)
        usleep(10 * 1000);
    pthread_mutex_lock(&s->mu);
    free(s->body);
    s->body = r->buf;
    s->body_len = r->len;
    r->buf = NULL;
    pthread_mutex_unlock(&s->mu);
    const char *reply = s->reply ? s->reply : "ok";
    size_t rlen = s->reply ? s->reply_len : 2;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(rlen, (void *)reply, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (s->location)
        MHD_add_response_header(resp, "Location", s->location);
    if (s->retry_after)
        MHD_add_response_header(resp, "Retry-After", s->retry_after);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)s->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void srv_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                          enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    struct srv *s = cls;
    struct srv_req *r = *con_cls;
    if (!r)
        return;
    if (r->counted) {
        pthread_mutex_lock(&s->mu);
        s->cur--;
        pthread_mutex_unlock(&s->mu);
    }
    free(r->buf);
    free(r);
    *con_cls = NULL;
}

static struct srv *srv_start(int status)
{
    struct srv *s = calloc(1, sizeof *s);
    assert_non_null(s);
    pthread_mutex_init(&s->mu, NULL);
    s->status = status;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, srv_handler, s, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, srv_completed,
                            s, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    assert_non_null(s->d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    s->port = info->port;
    assert_true(s->port > 0);
    return s;
}

static void srv_stop(struct srv *s)
{
    s->stopping = 1;
    MHD_stop_daemon(s->d);
    pthread_mutex_destroy(&s->mu);
    free(s->body);
    free(s);
}

/* ---- sender helpers ---------------------------------------------------- */

#define MAX_RESULTS 32

struct collected {
    int n;
    struct webhook_result r[MAX_RESULTS];
    int tags[MAX_RESULTS];
};

struct tag {
    struct collected *c;
    int tag;
};

static void on_done(void *user, const struct webhook_result *r)
{
    struct tag *t = user;
    if (t->c->n < MAX_RESULTS) {
        t->c->r[t->c->n] = *r;
        t->c->tags[t->c->n] = t->tag;
    }
    t->c->n++;
}

static char *dup_body(const char *s)
{
    char *b = strdup(s);
    assert_non_null(b);
    return b;
}

static void fill_req(struct webhook_request *q, char *url, const unsigned char *key,
                     size_t klen, const char *body)
{
    memset(q, 0, sizeof *q);
    q->url = url;
    q->id = "msg_5386ace5417989c2b8f74a0438bf1a18";
    q->key = key;
    q->key_len = klen;
    q->body = dup_body(body);
    q->body_len = strlen(body);
    q->timeout_ms = 5000;
    q->connect_timeout_ms = 2000;
    q->done = on_done;
}

/* Run until c->n reaches want; bounded by WAIT_LIMIT_MS.  Also checks the
 * sender never runs more than max transfers at once. */
static void drive(struct webhook_sender *s, struct collected *c, int want, size_t max)
{
    struct err e;
    int64_t end = mono_ms() + WAIT_LIMIT_MS;
    while (c->n < want && mono_ms() < end) {
        int r = webhook_sender_run(s, 100, &e);
        assert_true(r >= 0);
        assert_true(webhook_sender_active(s) <= max);
    }
    assert_int_equal(c->n, want);
}

static struct webhook_result send_one(struct srv *srv, const char *path, int64_t timeout_ms)
{
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct tag t = {&c, 1};
    struct webhook_request q;
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", srv->port, path);
    fill_req(&q, url, key, klen, "{\"type\":\"message.received\"}");
    if (timeout_ms)
        q.timeout_ms = timeout_ms;
    struct webhook_sender *s = webhook_sender_new(8, &e);
    assert_non_null(s);
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), 0);
    assert_int_equal(webhook_sender_in_flight(s), 1);
    drive(s, &c, 1, 8);
    assert_int_equal(webhook_sender_in_flight(s), 0);
    webhook_sender_free(s);
    return c.r[0];
}

/* ---- sender against a real server --------------------------------------- */

static void http_headers_exact(void **state)
{
    (void)state;
    struct srv *srv = srv_start(200);
    srv->reply = "{\"received\":true}";
    srv->reply_len = strlen(srv->reply);
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct tag t = {&c, 1};
    struct webhook_request q;
    struct err e;
    const char *body = "{\"type\":\"message.received\",\"data\":{\"subject\":\"h\\u00e9\"}}";
    const struct webhook_header hdrs[] = {{"X-Tenant", "acme"}};
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/hooks/mail", srv->port);
    fill_req(&q, url, key, klen, body);
    q.headers = hdrs;
    q.n_headers = 1;
    struct webhook_sender *s = webhook_sender_new(8, &e);
    assert_non_null(s);
    int64_t before = (int64_t)time(NULL);
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), 0);
    drive(s, &c, 1, 8);
    int64_t after = (int64_t)time(NULL);
    webhook_sender_free(s);

    const struct webhook_result *r = &c.r[0];
    assert_int_equal(r->err.kind, ERR_NONE);
    assert_int_equal(r->status, 200);
    assert_int_equal(webhook_classify(r), WEBHOOK_DELIVERED);
    assert_int_equal(r->retry_after_s, -1);
    assert_string_equal(r->response, "{\"received\":true}");
    assert_int_equal(r->response_bytes, strlen("{\"received\":true}"));
    assert_in_range(r->timestamp, before, after);

    assert_int_equal(srv->requests, 1);
    assert_string_equal(srv->method, "POST");
    assert_string_equal(srv->url, "/hooks/mail");
    assert_string_equal(srv->id, "msg_5386ace5417989c2b8f74a0438bf1a18");
    char ts[32];
    snprintf(ts, sizeof ts, "%lld", (long long)r->timestamp);
    assert_string_equal(srv->ts, ts);
    assert_string_equal(srv->ctype, "application/json");
    assert_string_equal(srv->ua, "pop3bridge/" POP3BRIDGE_VERSION);
    assert_string_equal(srv->tenant, "acme");
    assert_string_equal(srv->expect, "<none>");
    assert_int_equal(srv->body_len, strlen(body));
    assert_memory_equal(srv->body, body, strlen(body));
    /* the signature the server got verifies with the secret */
    assert_int_equal(webhook_verify(key, klen, srv->id, srv->ts, srv->body, srv->body_len,
                                    srv->sig, (int64_t)time(NULL), 300, &e),
                     0);
    /* and is exactly what signing gives */
    char sig[WEBHOOK_SIG_SIZE];
    assert_int_equal(webhook_sign(key, klen, srv->id, r->timestamp, body, strlen(body), sig,
                                  sizeof sig),
                     0);
    assert_string_equal(srv->sig, sig);
    /* Host, User-Agent, Accept, Content-Type, Content-Length, webhook-* x3, X-Tenant */
    assert_int_equal(srv->n_headers, 9);
    srv_stop(srv);
}

static void http_fixed_timestamp(void **state)
{
    (void)state;
    struct srv *srv = srv_start(204);
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct tag t = {&c, 1};
    struct webhook_request q;
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", srv->port);
    fill_req(&q, url, key, klen, VEC_BODY);
    q.id = VEC_ID;
    q.timestamp = VEC_TS;
    struct webhook_sender *s = webhook_sender_new(1, &e);
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), 0);
    drive(s, &c, 1, 1);
    webhook_sender_free(s);
    assert_int_equal(c.r[0].status, 204);
    assert_int_equal(webhook_classify(&c.r[0]), WEBHOOK_DELIVERED);
    assert_string_equal(srv->ts, "1614265330");
    assert_string_equal(srv->sig, VEC_SIG); /* the published vector, over the wire */
    srv_stop(srv);
}

static void http_statuses(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *retry_after;
        enum webhook_outcome want;
        int64_t want_ra;
    } t[] = {
        {500, NULL, WEBHOOK_RETRY, -1},
        {500, "30", WEBHOOK_RETRY, -1}, /* Retry-After only counts on 429/503 */
        {410, NULL, WEBHOOK_DISABLED, -1},
        {429, "7", WEBHOOK_RETRY, 7},
        {503, "120", WEBHOOK_RETRY, 120},
        {429, "soon", WEBHOOK_RETRY, -1},
        {400, NULL, WEBHOOK_REJECTED, -1},
        {201, NULL, WEBHOOK_DELIVERED, -1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct srv *srv = srv_start(t[i].status);
        srv->retry_after = t[i].retry_after;
        struct webhook_result r = send_one(srv, "/", 0);
        assert_int_equal(r.err.kind, ERR_NONE);
        assert_int_equal(r.status, t[i].status);
        assert_int_equal(webhook_classify(&r), t[i].want);
        assert_int_equal(r.retry_after_s, t[i].want_ra);
        assert_int_equal(srv->requests, 1);
        srv_stop(srv);
    }
}

static void http_retry_after_date(void **state)
{
    (void)state;
    struct srv *srv = srv_start(429);
    char date[64];
    time_t when = time(NULL) + 90;
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    srv->retry_after = date;
    struct webhook_result r = send_one(srv, "/", 0);
    assert_int_equal(r.status, 429);
    assert_in_range(r.retry_after_s, 85, 90);
    srv_stop(srv);
}

static void http_redirect_not_followed(void **state)
{
    (void)state;
    struct srv *srv = srv_start(302);
    char loc[128];
    snprintf(loc, sizeof loc, "http://127.0.0.1:%u/elsewhere", srv->port);
    srv->location = loc;
    struct webhook_result r = send_one(srv, "/hook", 0);
    assert_int_equal(r.err.kind, ERR_NONE);
    assert_int_equal(r.status, 302);
    assert_int_equal(webhook_classify(&r), WEBHOOK_REJECTED);
    assert_int_equal(srv->requests, 1);
    assert_string_equal(srv->url, "/hook");
    srv_stop(srv);
}

static void http_timeout(void **state)
{
    (void)state;
    struct srv *srv = srv_start(200);
    srv->delay_ms = 3000;
    struct webhook_result r = send_one(srv, "/", 300);
    assert_int_equal(r.err.kind, ERR_TIMEOUT);
    assert_int_equal(r.status, 0);
    assert_int_equal(webhook_classify(&r), WEBHOOK_RETRY);
    assert_in_range(r.duration_ms, 250, 2500);
    assert_true(strlen(r.err.msg) > 0);
    srv_stop(srv);
}

static void http_connection_refused(void **state)
{
    (void)state;
    /* a bound socket that does not listen: connecting to it is refused */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);

    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct tag t = {&c, 1};
    struct webhook_request q;
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", ntohs(sa.sin_port));
    fill_req(&q, url, key, klen, "{}");
    struct webhook_sender *s = webhook_sender_new(2, &e);
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), 0);
    drive(s, &c, 1, 2);
    webhook_sender_free(s);
    close(fd);
    assert_int_equal(c.r[0].status, 0);
    assert_int_equal(c.r[0].err.kind, ERR_CONN);
    assert_int_equal(webhook_classify(&c.r[0]), WEBHOOK_RETRY);
    assert_null(strchr(c.r[0].err.msg, '\n'));
}

static void http_concurrency_bounded(void **state)
{
    (void)state;
    struct srv *srv = srv_start(200);
    srv->delay_ms = 150;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct tag tags[20];
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", srv->port);
    struct webhook_sender *s = webhook_sender_new(8, &e);
    assert_non_null(s);
    for (int i = 0; i < 20; i++) {
        struct webhook_request q;
        char body[64];
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        fill_req(&q, url, key, klen, body);
        tags[i].c = &c;
        tags[i].tag = i;
        assert_int_equal(webhook_sender_submit(s, &q, &tags[i], &e), 0);
    }
    assert_int_equal(webhook_sender_in_flight(s), 20);
    assert_int_equal(webhook_sender_active(s), 0);
    drive(s, &c, 20, 8);
    webhook_sender_free(s);
    int seen[20] = {0};
    for (int i = 0; i < 20; i++) {
        assert_int_equal(c.r[i].status, 200);
        assert_int_equal(webhook_classify(&c.r[i]), WEBHOOK_DELIVERED);
        seen[c.tags[i]]++;
    }
    for (int i = 0; i < 20; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(srv->requests, 20);
    assert_true(srv->max_cur <= 8);
    print_message("max concurrent at the server: %d\n", srv->max_cur);
    assert_true(srv->max_cur >= 2); /* really concurrent */
    srv_stop(srv);
}

static void submit_rejects(void **state)
{
    (void)state;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    struct collected c = {0};
    struct tag t = {&c, 1};
    struct webhook_request q;
    struct err e;
    char url[] = "http://127.0.0.1:9/";
    vec_key(key, &klen);
    struct webhook_sender *s = webhook_sender_new(8, &e);
    assert_non_null(s);

    const struct webhook_header crlf[] = {{"X-Tenant", "acme\r\nX-Evil: 1"}};
    fill_req(&q, url, key, klen, "{}");
    q.headers = crlf;
    q.n_headers = 1;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1); /* body freed (ASan) */
    assert_int_equal(e.kind, ERR_USAGE);
    assert_non_null(strstr(e.msg, "CR"));

    const struct webhook_header lf_name[] = {{"X-Ten\nant", "acme"}};
    fill_req(&q, url, key, klen, "{}");
    q.headers = lf_name;
    q.n_headers = 1;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);

    const char *bad_urls[] = {"ftp://127.0.0.1/", "file:///etc/passwd", "127.0.0.1:80/",
                              "http://127.0.0.1/a b", "http://127.0.0.1/\r\n"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        char u[64];
        snprintf(u, sizeof u, "%s", bad_urls[i]);
        fill_req(&q, u, key, klen, "{}");
        assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);
        assert_int_equal(e.kind, ERR_USAGE);
    }
    fill_req(&q, url, key, klen, "{}");
    q.id = "msg id with spaces";
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);
    fill_req(&q, url, key, klen, "{}");
    q.key_len = 0;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);
    fill_req(&q, url, key, klen, "{}");
    q.done = NULL;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);

    /* credentials: only to https:// unless allowed; never quoted in the error */
    fill_req(&q, url, key, klen, "{}");
    q.bearer = "tok-secret-1";
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_non_null(strstr(e.msg, "https://"));
    assert_null(strstr(e.msg, "tok-secret-1"));
    const struct webhook_header key_hdr[] = {{"X-API-Key", "k-secret-2"}};
    fill_req(&q, url, key, klen, "{}");
    q.secret_headers = key_hdr;
    q.n_secret_headers = 1;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);
    assert_null(strstr(e.msg, "k-secret-2"));
    fill_req(&q, url, key, klen, "{}");
    q.basic_user = "u";
    q.basic_password = "p";
    q.bearer = "t";
    q.allow_plaintext_credentials = true;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1); /* both kinds */
    fill_req(&q, url, key, klen, "{}");
    q.basic_user = "a:b";
    q.allow_plaintext_credentials = true;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);
    fill_req(&q, url, key, klen, "{}");
    q.bearer = "line\nbreak";
    q.allow_plaintext_credentials = true;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);
    assert_null(strstr(e.msg, "break"));
    /* keys: 1..WEBHOOK_KEYS_MAX, none empty */
    struct webhook_key many[WEBHOOK_KEYS_MAX + 1];
    for (size_t i = 0; i <= WEBHOOK_KEYS_MAX; i++)
        many[i] = (struct webhook_key){key, klen};
    fill_req(&q, url, key, klen, "{}");
    q.keys = many;
    q.n_keys = WEBHOOK_KEYS_MAX + 1;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);
    many[1].len = 0;
    fill_req(&q, url, key, klen, "{}");
    q.keys = many;
    q.n_keys = 2;
    assert_int_equal(webhook_sender_submit(s, &q, &t, &e), -1);

    assert_int_equal(webhook_sender_in_flight(s), 0);
    assert_int_equal(webhook_sender_run(s, 0, &e), 0);
    assert_int_equal(c.n, 0);
    webhook_sender_free(s);

    assert_null(webhook_sender_new(0, &e));
    assert_int_equal(e.kind, ERR_USAGE);
    assert_null(webhook_sender_new(WEBHOOK_IN_FLIGHT_MAX + 1, &e));
    webhook_sender_free(NULL);
}

static void free_aborts_in_flight(void **state)
{
    (void)state;
    struct srv *srv = srv_start(200);
    srv->delay_ms = 5000;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct tag t[3] = {{&c, 0}, {&c, 1}, {&c, 2}};
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", srv->port);
    struct webhook_sender *s = webhook_sender_new(2, &e);
    for (int i = 0; i < 3; i++) {
        struct webhook_request q;
        fill_req(&q, url, key, klen, "{}");
        assert_int_equal(webhook_sender_submit(s, &q, &t[i], &e), 0);
    }
    /* let the first two reach the server; the third waits for a slot */
    int64_t end = mono_ms() + WAIT_LIMIT_MS;
    while (mono_ms() < end) {
        assert_true(webhook_sender_run(s, 50, &e) >= 0);
        pthread_mutex_lock(&srv->mu);
        int got = srv->requests;
        pthread_mutex_unlock(&srv->mu);
        if (got == 2)
            break;
    }
    assert_int_equal(webhook_sender_active(s), 2);
    assert_int_equal(webhook_sender_in_flight(s), 3);
    assert_int_equal(c.n, 0);
    webhook_sender_free(s);
    assert_int_equal(c.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_true(c.r[i].aborted);
        assert_int_equal(webhook_classify(&c.r[i]), WEBHOOK_RETRY);
    }
    srv_stop(srv);
}

static void http_response_capped(void **state)
{
    (void)state;
    struct srv *srv = srv_start(500);
    static char big[10240];
    memset(big, 'x', sizeof big);
    big[0] = '\n'; /* control characters are sanitised */
    srv->reply = big;
    srv->reply_len = sizeof big;
    struct webhook_result r = send_one(srv, "/", 0);
    assert_int_equal(r.status, 500);
    assert_int_equal(r.response_bytes, sizeof big);
    assert_int_equal(strlen(r.response), WEBHOOK_RESPONSE_KEEP + 3);
    assert_int_equal(r.response[0], '?');
    assert_string_equal(r.response + WEBHOOK_RESPONSE_KEEP, "...");
    srv_stop(srv);
}

/* ---- signing while writing, event ids ---------------------------------- */

/* Rotation: one signature per key, space-separated, in order; a receiver
 * with any one of the secrets verifies, one with neither does not. */
static void signer_several_keys(void **state)
{
    (void)state;
    unsigned char k1[WEBHOOK_KEY_MAX], k2[32], k3[32];
    size_t l1;
    vec_key(k1, &l1);
    memset(k2, 0x42, sizeof k2);
    memset(k3, 0x43, sizeof k3);
    struct webhook_key keys[] = {{k1, l1}, {k2, sizeof k2}};
    struct webhook_signer *g = webhook_signer_new_keys(keys, 2, VEC_ID, VEC_TS);
    assert_non_null(g);
    assert_int_equal(webhook_signer_update(g, VEC_BODY, 5), 0);
    assert_int_equal(webhook_signer_update(g, VEC_BODY + 5, strlen(VEC_BODY) - 5), 0);
    char sigs[WEBHOOK_SIGS_SIZE], one[WEBHOOK_SIG_SIZE], want[WEBHOOK_SIGS_SIZE];
    assert_int_equal(webhook_signer_final(g, sigs, sizeof sigs), 0);
    webhook_signer_free(g);
    assert_int_equal(webhook_sign(k2, sizeof k2, VEC_ID, VEC_TS, VEC_BODY, strlen(VEC_BODY), one,
                                  sizeof one),
                     0);
    snprintf(want, sizeof want, "%s %s", VEC_SIG, one);
    assert_string_equal(sigs, want);
    struct err e;
    assert_int_equal(webhook_verify(k1, l1, VEC_ID, "1614265330", VEC_BODY, strlen(VEC_BODY), sigs,
                                    VEC_TS, 300, &e),
                     0);
    assert_int_equal(webhook_verify(k2, sizeof k2, VEC_ID, "1614265330", VEC_BODY,
                                    strlen(VEC_BODY), sigs, VEC_TS, 300, &e),
                     0);
    assert_int_equal(webhook_verify(k3, sizeof k3, VEC_ID, "1614265330", VEC_BODY,
                                    strlen(VEC_BODY), sigs, VEC_TS, 300, &e),
                     -1);
    assert_int_equal(e.kind, ERR_AUTH);
    /* too small an output: refused, not cut after the first signature */
    g = webhook_signer_new_keys(keys, 2, VEC_ID, VEC_TS);
    assert_int_equal(webhook_signer_final(g, one, sizeof one), -1);
    assert_string_equal(one, "");
    webhook_signer_free(g);
    /* key counts out of range, an empty key */
    assert_null(webhook_signer_new_keys(keys, 0, VEC_ID, VEC_TS));
    struct webhook_key five[WEBHOOK_KEYS_MAX + 1];
    for (size_t i = 0; i <= WEBHOOK_KEYS_MAX; i++)
        five[i] = keys[0];
    assert_null(webhook_signer_new_keys(five, WEBHOOK_KEYS_MAX + 1, VEC_ID, VEC_TS));
    assert_non_null(g = webhook_signer_new_keys(five, WEBHOOK_KEYS_MAX, VEC_ID, VEC_TS));
    webhook_signer_free(g);
    keys[1].len = 0;
    assert_null(webhook_signer_new_keys(keys, 2, VEC_ID, VEC_TS));
}

static void signer_in_pieces(void **state)
{
    (void)state;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    vec_key(key, &klen);
    const char *body = VEC_BODY;
    size_t blen = strlen(body);
    /* every way of cutting the body gives the published signature */
    for (size_t piece = 1; piece <= blen; piece++) {
        struct webhook_signer *g = webhook_signer_new(key, klen, VEC_ID, VEC_TS);
        assert_non_null(g);
        for (size_t off = 0; off < blen; off += piece) {
            size_t n = blen - off < piece ? blen - off : piece;
            assert_int_equal(webhook_signer_update(g, body + off, n), 0);
        }
        assert_int_equal(webhook_signer_bytes(g), blen);
        char sig[WEBHOOK_SIG_SIZE];
        assert_int_equal(webhook_signer_final(g, sig, sizeof sig), 0);
        assert_string_equal(sig, VEC_SIG);
        /* final once */
        assert_int_equal(webhook_signer_final(g, sig, sizeof sig), -1);
        assert_int_equal(webhook_signer_update(g, "x", 1), -1);
        webhook_signer_free(g);
    }
    /* a large body: equal to webhook_sign over the whole */
    size_t n = 3u << 20;
    char *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 131 + 7);
    char whole[WEBHOOK_SIG_SIZE], pieces[WEBHOOK_SIG_SIZE];
    assert_int_equal(webhook_sign(key, klen, "msg_x", 1700000000, big, n, whole, sizeof whole), 0);
    struct webhook_signer *g = webhook_signer_new(key, klen, "msg_x", 1700000000);
    for (size_t off = 0; off < n; off += 65537)
        assert_int_equal(webhook_signer_update(g, big + off, n - off < 65537 ? n - off : 65537),
                         0);
    assert_int_equal(webhook_signer_final(g, pieces, sizeof pieces), 0);
    assert_string_equal(pieces, whole);
    webhook_signer_free(g);
    /* an empty body */
    assert_int_equal(webhook_sign(key, klen, "msg_x", 5, "", 0, whole, sizeof whole), 0);
    g = webhook_signer_new(key, klen, "msg_x", 5);
    assert_int_equal(webhook_signer_final(g, pieces, sizeof pieces), 0);
    assert_string_equal(pieces, whole);
    webhook_signer_free(g);
    free(big);
    assert_null(webhook_signer_new(NULL, 0, "msg_x", 5));
    assert_null(webhook_signer_new(key, klen, NULL, 5));
    webhook_signer_free(NULL);
}

static void event_id_from_key(void **state)
{
    (void)state;
    char a[WEBHOOK_ID_SIZE], b[WEBHOOK_ID_SIZE], legacy[WEBHOOK_ID_SIZE];
    const char *key = "0123456789abcdef0123456789abcdef";
    /* printf '0123456789abcdef0123456789abcdef\0crm' | sha256sum | cut -c1-32 */
    assert_int_equal(webhook_event_id(key, "crm", a, sizeof a), 0);
    assert_string_equal(a, "msg_29816a068f63aa674a0c72d8be3aadb7");
    assert_int_equal(webhook_event_id(key, "crm", b, sizeof b), 0);
    assert_string_equal(a, b);
    assert_int_equal(webhook_event_id("fedcba9876543210fedcba9876543210", "crm", b, sizeof b), 0);
    assert_string_not_equal(a, b); /* a new message: a new id, whatever its UIDL */
    assert_int_equal(webhook_event_id(key, "crm2", b, sizeof b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(webhook_id("support", "uidl-1", "crm", legacy, sizeof legacy), 0);
    assert_string_not_equal(a, legacy);
    assert_int_equal(webhook_event_id("", "crm", b, sizeof b), -1);
    assert_int_equal(webhook_event_id(NULL, "crm", b, sizeof b), -1);
    assert_int_equal(webhook_event_id(key, NULL, b, sizeof b), -1);
    assert_int_equal(webhook_event_id(key, "crm", b, WEBHOOK_ID_SIZE - 1), -1);
}

/* ---- bodies written at the start --------------------------------------- */

struct prep {
    struct collected *c;
    int tag;
    const char *body;   /* written in pieces of `piece` bytes */
    size_t len, piece;
    int calls;
    int64_t called_ms;
    bool fail;          /* refuse with ERR_USAGE */
    bool lie;           /* report one byte more than written */
};

static void on_prep_done(void *user, const struct webhook_result *r)
{
    struct prep *p = user;
    struct tag t = {p->c, p->tag};
    on_done(&t, r);
}

static int prep_body(void *user, struct webhook_signer *sig, int *fd, uint64_t *len,
                     struct err *e)
{
    struct prep *p = user;
    p->calls++;
    p->called_ms = mono_ms();
    if (p->fail)
        return err_set(e, ERR_USAGE, "no such message");
    int f = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    assert_true(f >= 0);
    for (size_t off = 0; off < p->len; off += p->piece) {
        size_t n = p->len - off < p->piece ? p->len - off : p->piece;
        assert_int_equal(write(f, p->body + off, n), (ssize_t)n);
        assert_int_equal(webhook_signer_update(sig, p->body + off, n), 0);
    }
    *fd = f;
    *len = p->len + (p->lie ? 1 : 0);
    return 0;
}

static void fill_prep_req(struct webhook_request *q, char *url, const unsigned char *key,
                          size_t klen)
{
    memset(q, 0, sizeof *q);
    q->url = url;
    q->id = "msg_5386ace5417989c2b8f74a0438bf1a18";
    q->key = key;
    q->key_len = klen;
    q->prepare = prep_body;
    q->timeout_ms = 5000;
    q->connect_timeout_ms = 2000;
    q->done = on_prep_done;
}

static void http_prepared_body(void **state)
{
    (void)state;
    struct srv *srv = srv_start(200);
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/hooks/big", srv->port);
    size_t n = 2u << 20; /* many times curl's upload buffer */
    char *body = malloc(n);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++)
        body[i] = "{\"k\":\"v\"}x\n"[i % 11];
    struct prep p = {&c, 1, body, n, 70001, 0, 0, false, false};
    struct webhook_request q;
    fill_prep_req(&q, url, key, klen);
    q.timeout_ms = WAIT_LIMIT_MS; /* the test server is slow with large bodies under ASan */
    struct webhook_sender *s = webhook_sender_new(4, &e);
    assert_non_null(s);
    assert_int_equal(webhook_sender_submit(s, &q, &p, &e), 0);
    assert_int_equal(p.calls, 0); /* written only when the transfer starts */
    drive(s, &c, 1, 4);
    webhook_sender_free(s);
    assert_int_equal(p.calls, 1);
    assert_int_equal(c.r[0].err.kind, ERR_NONE);
    assert_false(c.r[0].prepare_failed);
    assert_int_equal(c.r[0].status, 200);
    assert_int_equal(srv->body_len, n);
    assert_memory_equal(srv->body, body, n);
    assert_int_equal(webhook_verify(key, klen, srv->id, srv->ts, srv->body, srv->body_len,
                                    srv->sig, (int64_t)time(NULL), 300, &e),
                     0);
    char ts[32];
    snprintf(ts, sizeof ts, "%lld", (long long)c.r[0].timestamp);
    assert_string_equal(srv->ts, ts);
    srv_stop(srv);
    free(body);
}

static void http_prepare_fails(void **state)
{
    (void)state;
    struct srv *srv = srv_start(200);
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", srv->port);
    struct prep refuse = {&c, 1, "{}", 2, 2, 0, 0, true, false};
    struct prep liar = {&c, 2, "{}", 2, 2, 0, 0, false, true};
    struct webhook_request q;
    struct webhook_sender *s = webhook_sender_new(2, &e);
    fill_prep_req(&q, url, key, klen);
    assert_int_equal(webhook_sender_submit(s, &q, &refuse, &e), 0);
    assert_int_equal(webhook_sender_submit(s, &q, &liar, &e), 0);
    drive(s, &c, 2, 2);
    webhook_sender_free(s);
    for (int i = 0; i < 2; i++) {
        assert_true(c.r[i].prepare_failed);
        assert_int_equal(c.r[i].status, 0);
        assert_int_equal(c.r[i].err.kind, c.tags[i] == 1 ? ERR_USAGE : ERR_INTERNAL);
    }
    assert_int_equal(srv->requests, 0); /* nothing was sent */
    /* a request with both a body and a prepare callback is refused */
    fill_prep_req(&q, url, key, klen);
    q.body = dup_body("{}");
    q.body_len = 2;
    s = webhook_sender_new(2, &e);
    assert_int_equal(webhook_sender_submit(s, &q, &refuse, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    webhook_sender_free(s);
    srv_stop(srv);
}

/* ---- queues -------------------------------------------------------------- */

static void submit_to(struct webhook_sender *s, char *url, const unsigned char *key, size_t klen,
                      const char *queue, int limit, struct tag *t)
{
    struct webhook_request q;
    struct err e;
    fill_req(&q, url, key, klen, "{}");
    q.queue = queue;
    q.queue_max_in_flight = limit;
    assert_int_equal(webhook_sender_submit(s, &q, t, &e), 0);
}

/* A slow queue does not pace a fast one: each has its own limit, and the
 * fast one is done long before the slow one. */
static void queues_own_limits(void **state)
{
    (void)state;
    struct srv *slow = srv_start(200), *fast = srv_start(200);
    slow->delay_ms = 1500;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char slow_url[128], fast_url[128];
    struct collected c = {0};
    struct tag tags[30];
    struct err e;
    vec_key(key, &klen);
    snprintf(slow_url, sizeof slow_url, "http://127.0.0.1:%u/", slow->port);
    snprintf(fast_url, sizeof fast_url, "http://127.0.0.1:%u/", fast->port);
    struct webhook_sender *s = webhook_sender_new(16, &e);
    for (int i = 0; i < 30; i++) {
        tags[i].c = &c;
        tags[i].tag = i; /* 0..9 slow, 10..29 fast; the slow ones first */
        if (i < 10)
            submit_to(s, slow_url, key, klen, "slow", 2, &tags[i]);
        else
            submit_to(s, fast_url, key, klen, "fast", 4, &tags[i]);
    }
    int64_t end = mono_ms() + WAIT_LIMIT_MS;
    int fast_done = 0, slow_done_then = -1;
    while (mono_ms() < end && fast_done < 20) {
        assert_true(webhook_sender_run(s, 50, &e) >= 0);
        fast_done = 0;
        for (int i = 0; i < c.n && i < MAX_RESULTS; i++)
            fast_done += c.tags[i] >= 10;
        if (fast_done == 20)
            slow_done_then = c.n - fast_done;
    }
    assert_int_equal(fast_done, 20);
    print_message("slow requests done when the fast queue was: %d of 10\n", slow_done_then);
    assert_true(slow_done_then <= 2); /* 10 slow ones take 5 rounds of 1.5 s */
    assert_true(slow->max_cur <= 2);
    assert_true(fast->max_cur <= 4);
    webhook_sender_free(s); /* aborts the slow rest */
    assert_int_equal(c.n, 30);
    srv_stop(slow);
    srv_stop(fast);
}

/* When the sender is full, a queue below its fair share gets the next slot
 * before a queue above it, whatever the order of submission. */
static void queues_fair_share(void **state)
{
    (void)state;
    struct srv *slow = srv_start(200), *fast = srv_start(200);
    slow->delay_ms = 700;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char slow_url[128], fast_url[128];
    struct collected c = {0};
    struct tag tags[16];
    struct err e;
    vec_key(key, &klen);
    snprintf(slow_url, sizeof slow_url, "http://127.0.0.1:%u/", slow->port);
    snprintf(fast_url, sizeof fast_url, "http://127.0.0.1:%u/", fast->port);
    struct webhook_sender *s = webhook_sender_new(4, &e);
    /* the slow queue alone takes all 4 slots */
    for (int i = 0; i < 8; i++) {
        tags[i] = (struct tag){&c, i};
        submit_to(s, slow_url, key, klen, "slow", 4, &tags[i]);
    }
    assert_true(webhook_sender_run(s, 0, &e) >= 0);
    assert_int_equal(webhook_sender_active(s), 4);
    for (int i = 8; i < 16; i++) {
        tags[i] = (struct tag){&c, i};
        submit_to(s, fast_url, key, klen, "fast", 4, &tags[i]);
    }
    /* from the first free slot on, the fast queue (below its share of 2)
     * goes first; it needs no more than two slots to finish quickly */
    int64_t end = mono_ms() + WAIT_LIMIT_MS;
    int fast_done = 0, slow_done_then = -1;
    while (mono_ms() < end && fast_done < 8) {
        assert_true(webhook_sender_run(s, 50, &e) >= 0);
        assert_true(webhook_sender_active(s) <= 4);
        fast_done = 0;
        for (int i = 0; i < c.n && i < MAX_RESULTS; i++)
            fast_done += c.tags[i] >= 8;
        if (fast_done == 8)
            slow_done_then = c.n - fast_done;
    }
    assert_int_equal(fast_done, 8);
    print_message("slow requests done when the fast queue was: %d of 8\n", slow_done_then);
    assert_true(slow_done_then < 8); /* first come, first served would finish all 8 first */
    assert_true(slow_done_then <= 6);
    webhook_sender_free(s);
    assert_int_equal(c.n, 16);
    srv_stop(slow);
    srv_stop(fast);
}

static void drop_queued_keeps_running(void **state)
{
    (void)state;
    struct srv *srv = srv_start(200);
    srv->delay_ms = 300;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct collected c = {0};
    struct tag tags[5];
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", srv->port);
    struct webhook_sender *s = webhook_sender_new(8, &e);
    for (int i = 0; i < 5; i++) {
        tags[i] = (struct tag){&c, i};
        submit_to(s, url, key, klen, "one", 2, &tags[i]);
    }
    assert_true(webhook_sender_run(s, 0, &e) >= 0);
    assert_int_equal(webhook_sender_active(s), 2);
    assert_int_equal(webhook_sender_drop_queued(s, &e), 3);
    assert_int_equal(c.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_true(c.r[i].aborted);
        assert_true(c.tags[i] >= 2); /* the waiting ones */
    }
    assert_int_equal(webhook_sender_in_flight(s), 2);
    drive(s, &c, 5, 2);
    assert_int_equal(c.r[3].status, 200);
    assert_int_equal(c.r[4].status, 200);
    assert_int_equal(webhook_sender_drop_queued(s, &e), 0);
    assert_int_equal(webhook_sender_drop_queued(NULL, &e), -1);
    webhook_sender_free(s);
    assert_int_equal(srv->requests, 2);
    srv_stop(srv);
}

struct nested {
    struct webhook_sender *s;
    int rc;
    enum err_kind kind;
    int calls;
};

static void on_done_nested(void *user, const struct webhook_result *r)
{
    (void)r;
    struct nested *n = user;
    struct err e;
    err_clear(&e);
    n->rc = webhook_sender_run(n->s, 0, &e);
    n->kind = e.kind;
    n->calls++;
}

static void run_not_reentrant(void **state)
{
    (void)state;
    struct srv *srv = srv_start(200);
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen;
    char url[128];
    struct webhook_request q;
    struct err e;
    vec_key(key, &klen);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", srv->port);
    fill_req(&q, url, key, klen, "{}");
    q.done = on_done_nested;
    struct nested n = {webhook_sender_new(1, &e), 0, ERR_NONE, 0};
    assert_non_null(n.s);
    assert_int_equal(webhook_sender_submit(n.s, &q, &n, &e), 0);
    int64_t end = mono_ms() + WAIT_LIMIT_MS;
    while (n.calls == 0 && mono_ms() < end)
        assert_true(webhook_sender_run(n.s, 100, &e) >= 0);
    assert_int_equal(n.calls, 1);
    assert_int_equal(n.rc, -1);
    assert_int_equal(n.kind, ERR_USAGE);
    webhook_sender_free(n.s);
    srv_stop(srv);
}

static void *wake_later(void *arg)
{
    usleep(100 * 1000);
    webhook_sender_wakeup(arg);
    return NULL;
}

static void wakeup_interrupts_run(void **state)
{
    (void)state;
    struct err e;
    struct webhook_sender *s = webhook_sender_new(1, &e);
    assert_non_null(s);
    pthread_t th;
    int64_t t0 = mono_ms();
    assert_int_equal(pthread_create(&th, NULL, wake_later, s), 0);
    assert_int_equal(webhook_sender_run(s, 8000, &e), 0);
    int64_t took = mono_ms() - t0;
    pthread_join(th, NULL);
    assert_in_range(took, 50, 4000); /* woken, not the full 8 s */
    webhook_sender_free(s);
}

static int group_setup(void **state)
{
    (void)state;
    struct err e;
    signal(SIGPIPE, SIG_IGN);
    return webhook_global_init(&e);
}

static int group_teardown(void **state)
{
    (void)state;
    webhook_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sign_vector),
        cmocka_unit_test(verify_vector),
        cmocka_unit_test(secret_decode),
        cmocka_unit_test(id_stable),
        cmocka_unit_test(classify_table),
        cmocka_unit_test(backoff),
        cmocka_unit_test(retry_after_parse),
        cmocka_unit_test(header_check),
        cmocka_unit_test(signer_in_pieces),
        cmocka_unit_test(signer_several_keys),
        cmocka_unit_test(event_id_from_key),
        cmocka_unit_test(http_prepared_body),
        cmocka_unit_test(http_prepare_fails),
        cmocka_unit_test(queues_own_limits),
        cmocka_unit_test(queues_fair_share),
        cmocka_unit_test(drop_queued_keeps_running),
        cmocka_unit_test(http_headers_exact),
        cmocka_unit_test(http_fixed_timestamp),
        cmocka_unit_test(http_statuses),
        cmocka_unit_test(http_retry_after_date),
        cmocka_unit_test(http_redirect_not_followed),
        cmocka_unit_test(http_timeout),
        cmocka_unit_test(http_connection_refused),
        cmocka_unit_test(http_concurrency_bounded),
        cmocka_unit_test(submit_rejects),
        cmocka_unit_test(free_aborts_in_flight),
        cmocka_unit_test(http_response_capped),
        cmocka_unit_test(run_not_reentrant),
        cmocka_unit_test(wakeup_interrupts_run),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
