/* Unit tests: SASL client mechanisms, APOP, base64 (include/sasl.h).
 *
 * RFC vectors checked byte for byte: RFC 4648 §10 (base64), RFC 1939 §7
 * (APOP), RFC 2195 §2 (CRAM-MD5, base64 both ways), RFC 5802 §5 (SCRAM-SHA-1)
 * and RFC 7677 §3 (SCRAM-SHA-256): every message of both SCRAM examples — our
 * client-first, our client-final with its proof, and the verification of the
 * server-final signature.  RFC 7628 §4.1 (OAUTHBEARER) and Google's XOAUTH2
 * example.
 *
 * Fixing the SCRAM client nonce: libgsasl has no property for it (its
 * SCRAMDEBUG switch is compile-time).  It draws the nonce with gsasl_nonce()
 * and base64-encodes it with gsasl_base64_to(), both called through the PLT
 * of libgsasl.so, so the definitions below take precedence inside libgsasl
 * (ELF symbol interposition).  While `fixed_nonce` is set they turn the
 * 18 random bytes into a marker and the marker's base64 into the RFC's nonce;
 * everything else goes to the real functions.  The first SCRAM message is
 * compared exactly, so a build where this interposition does not take effect
 * fails loudly instead of passing by accident.  The SCRAM exchanges against a
 * libgsasl server run with real random nonces.
 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <gsasl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "sasl.h"

/* ---- deterministic SCRAM nonce ------------------------------------------ */

#define NONCE_MARK "pop3bridge-nonce!!" /* 18 bytes, libgsasl's nonce size */
static const char *fixed_nonce;         /* NULL: real randomness */

int gsasl_nonce(char *data, size_t datalen)
{
    if (fixed_nonce && datalen == strlen(NONCE_MARK)) {
        memcpy(data, NONCE_MARK, datalen);
        return GSASL_OK;
    }
    int (*real)(char *, size_t) = (int (*)(char *, size_t))dlsym(RTLD_NEXT, "gsasl_nonce");
    return real ? real(data, datalen) : GSASL_CRYPTO_ERROR;
}

int gsasl_base64_to(const char *in, size_t inlen, char **out, size_t *outlen)
{
    if (fixed_nonce && inlen == strlen(NONCE_MARK) && memcmp(in, NONCE_MARK, inlen) == 0) {
        *out = strdup(fixed_nonce);
        if (outlen)
            *outlen = strlen(fixed_nonce);
        return *out ? GSASL_OK : GSASL_MALLOC_ERROR;
    }
    int (*real)(const char *, size_t, char **, size_t *) =
        (int (*)(const char *, size_t, char **, size_t *))dlsym(RTLD_NEXT, "gsasl_base64_to");
    return real ? real(in, inlen, out, outlen) : GSASL_MALLOC_ERROR;
}

/* ---- helpers -------------------------------------------------------------- */

static struct sasl_creds creds(const char *user, const char *pw)
{
    struct sasl_creds c = {user, pw, NULL, NULL, "pop.example.com", 995};
    return c;
}

/* Step with a raw challenge (base64-encoded here; NULL: initial response);
 * the decoded response must be exactly want (want_len bytes). */
static void step_expect(struct sasl *s, const char *raw, size_t raw_len, int want_rc,
                        const char *want, size_t want_len)
{
    char *b64 = raw ? codec_b64_encode(raw, raw_len) : NULL;
    if (raw)
        assert_non_null(b64);
    char *resp = NULL;
    struct err e;
    err_clear(&e);
    int rc = sasl_step(s, b64, &resp, &e);
    free(b64);
    if (rc != want_rc)
        fail_msg("sasl_step returned %d, wanted %d (%s)", rc, want_rc, e.msg);
    assert_non_null(resp);
    unsigned char *dec = NULL;
    size_t dec_len = 0;
    assert_int_equal(codec_b64_decode_alloc(resp, strlen(resp), &dec, &dec_len), 0);
    if (dec_len != want_len || memcmp(dec, want, want_len) != 0)
        fail_msg("response \"%.*s\" (%zu bytes), wanted \"%.*s\" (%zu bytes)", (int)dec_len,
                 (const char *)dec, dec_len, (int)want_len, want, want_len);
    free(dec);
}

static void step_expect_str(struct sasl *s, const char *raw, int want_rc, const char *want)
{
    step_expect(s, raw, raw ? strlen(raw) : 0, want_rc, want, strlen(want));
}

/* Step with a base64 challenge given verbatim; must fail with kind. */
static void step_fails(struct sasl *s, const char *b64, enum err_kind kind, const char *secret)
{
    char *resp = (char *)"untouched";
    struct err e;
    err_clear(&e);
    assert_int_equal(sasl_step(s, b64, &resp, &e), -1);
    assert_null(resp);
    if (e.kind != kind)
        fail_msg("error kind %s (%s), wanted %s", err_kind_name(e.kind), e.msg,
                 err_kind_name(kind));
    assert_true(strlen(e.msg) > 0);
    if (secret)
        assert_null(strstr(e.msg, secret));
}

static void step_fails_raw(struct sasl *s, const char *raw, enum err_kind kind,
                           const char *secret)
{
    char *b64 = codec_b64_encode(raw, strlen(raw));
    assert_non_null(b64);
    step_fails(s, b64, kind, secret);
    free(b64);
}

static struct sasl *new_ok(const char *mech, const struct sasl_creds *c)
{
    struct err e;
    err_clear(&e);
    struct sasl *s = sasl_new(mech, c, &e);
    if (!s)
        fail_msg("sasl_new(%s): %s", mech, e.msg);
    return s;
}

static void new_fails(const char *mech, const struct sasl_creds *c, enum err_kind kind,
                      const char *must_say, const char *secret)
{
    struct err e;
    err_clear(&e);
    assert_null(sasl_new(mech, c, &e));
    if (e.kind != kind)
        fail_msg("sasl_new(%s): kind %s (%s), wanted %s", mech ? mech : "NULL",
                 err_kind_name(e.kind), e.msg, err_kind_name(kind));
    if (must_say && !strstr(e.msg, must_say))
        fail_msg("message \"%s\" does not say \"%s\"", e.msg, must_say);
    if (secret)
        assert_null(strstr(e.msg, secret));
}

/* ---- base64 ------------------------------------------------------------------ */

static void b64_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *const v[][2] = {
        {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char *enc = codec_b64_encode(v[i][0], strlen(v[i][0]));
        assert_non_null(enc);
        assert_string_equal(enc, v[i][1]);
        free(enc);
        unsigned char *dec = NULL;
        size_t n = 99;
        assert_int_equal(codec_b64_decode_alloc(v[i][1], strlen(v[i][1]), &dec, &n), 0);
        assert_int_equal(n, strlen(v[i][0]));
        assert_memory_equal(dec, v[i][0], n);
        assert_int_equal(dec[n], '\0');
        free(dec);
    }
}

static void b64_round_trip(void **state)
{
    (void)state;
    unsigned char buf[300];
    uint32_t x = 12345;
    for (size_t len = 0; len <= sizeof buf; len++) {
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (unsigned char)(x >> 16);
        }
        char *enc = codec_b64_encode(buf, len);
        assert_non_null(enc);
        assert_int_equal(strlen(enc), (len + 2) / 3 * 4);
        unsigned char *dec = NULL;
        size_t n = 0;
        assert_int_equal(codec_b64_decode_alloc(enc, strlen(enc), &dec, &n), 0);
        assert_int_equal(n, len);
        if (len)
            assert_memory_equal(dec, buf, len);
        free(dec);
        free(enc);
    }
}

static void b64_strict_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg=",       /* length not a multiple of 4 */
        "Zg",        /* padding missing */
        "Zm9v\n",    /* trailing newline */
        " Zm9v",     /* leading space */
        "Zm 9v",     /* inner space */
        "Zm9v\r\n",  /* CRLF */
        "Zm=9",      /* padding in the middle of a group */
        "Z===",      /* three pad characters */
        "====",      /* only padding */
        "Zg==Zm9v",  /* padding before the end */
        "Zm9v====",  /* a whole group of padding */
        "Zh==",      /* non-zero unused bits (RFC 4648 §3.5) */
        "Zm9=",      /* non-zero unused bits */
        "Zm9v-_8=",  /* base64url alphabet */
        "Zm9v*A==",  /* not in the alphabet */
        "\xc3\xa9Zm9", /* non-ASCII */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *dec = (unsigned char *)"x";
        size_t n = 7;
        if (codec_b64_decode_alloc(bad[i], strlen(bad[i]), &dec, &n) != -1)
            fail_msg("accepted invalid base64 \"%s\"", bad[i]);
        assert_null(dec);
        assert_int_equal(n, 0);
    }
    unsigned char *dec = NULL;
    size_t n = 0;
    assert_int_equal(codec_b64_decode_alloc(NULL, 0, &dec, &n), -1);
    assert_null(dec);
}

/* ---- APOP -------------------------------------------------------------------- */

static void apop_rfc1939(void **state)
{
    (void)state;
    struct err e;
    char out[33];
    /* the timestamp inside a greeting line: ts_len bounds it, no NUL after it */
    const char *greeting = "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us> more";
    const char *ts = strchr(greeting, '<');
    size_t ts_len = (size_t)(strchr(ts, '>') - ts) + 1;
    assert_int_equal(sasl_apop_digest(ts, ts_len, "tanstaaf", out, &e), 0);
    assert_string_equal(out, "c4c9334bac560ecc979e58001b3e22fb");
    /* a different secret gives a different digest */
    assert_int_equal(sasl_apop_digest(ts, ts_len, "tanstaaF", out, &e), 0);
    assert_string_not_equal(out, "c4c9334bac560ecc979e58001b3e22fb");
}

static void apop_rejects(void **state)
{
    (void)state;
    struct err e;
    char out[33];
    static const char *const bad[] = {
        "1896.697170952@dbc.mtview.ca.us",   /* no brackets */
        "<1896.697170952@dbc.mtview.ca.us",  /* no closing bracket */
        "<1896.697170952 @dbc.mtview.ca.us>", /* space */
        "<1896\t697170952@dbc>",              /* control character */
        "<a<b>",                              /* nested bracket */
        "<>",                                 /* too short */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memcpy(out, "junk", 5);
        err_clear(&e);
        assert_int_equal(sasl_apop_digest(bad[i], strlen(bad[i]), "tanstaaf", out, &e), -1);
        assert_int_equal(e.kind, ERR_PROTO);
        assert_string_equal(out, "");
        assert_null(strstr(e.msg, "tanstaaf"));
    }
    char big[SASL_APOP_TS_MAX + 2];
    memset(big, 'a', sizeof big);
    big[0] = '<';
    big[sizeof big - 1] = '>';
    assert_int_equal(sasl_apop_digest(big, sizeof big, "x", out, &e), -1);
    assert_int_equal(e.kind, ERR_PROTO);
    assert_non_null(strstr(e.msg, "SASL_APOP_TS_MAX"));
    assert_int_equal(sasl_apop_digest("<a@b>", 5, NULL, out, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(sasl_apop_digest(NULL, 5, "x", out, &e), -1);
    assert_int_equal(e.kind, ERR_PROTO);
}

/* ---- CRAM-MD5, PLAIN, LOGIN --------------------------------------------------- */

static void cram_md5_rfc2195(void **state)
{
    (void)state;
    struct sasl_creds c = creds("tim", "tanstaaftanstaaf");
    assert_false(sasl_mech_client_first("CRAM-MD5"));
    struct sasl *s = new_ok("CRAM-MD5", &c);
    assert_string_equal(sasl_mech_name(s), "CRAM-MD5");
    /* no initial response: a NULL challenge is a caller error */
    step_fails(s, NULL, ERR_USAGE, "tanstaaf");
    sasl_free(&s);
    assert_null(s);

    s = new_ok("cram-md5", &c);
    char *resp = NULL;
    struct err e;
    assert_int_equal(sasl_step(s, "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
                               &resp, &e),
                     SASL_DONE);
    assert_string_equal(resp, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw");
    /* nothing may follow */
    step_fails(s, "PDE+", ERR_PROTO, NULL);
    sasl_free(&s);

    /* an empty challenge is malformed for CRAM-MD5 */
    s = new_ok("CRAM-MD5", &c);
    step_fails(s, "", ERR_PROTO, NULL);
    sasl_free(&s);

    /* a different challenge gives a different response (the digest is computed) */
    s = new_ok("CRAM-MD5", &c);
    assert_int_equal(sasl_step(s, "PDE4OTYuNjk3MTcwOTUzQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
                               &resp, &e),
                     SASL_DONE);
    assert_string_not_equal(resp, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw");
    sasl_free(&s);
}

static void plain_encodings(void **state)
{
    (void)state;
    assert_true(sasl_mech_client_first("PLAIN"));
    struct sasl_creds c = creds("tim", "tanstaaftanstaaf");
    struct sasl *s = new_ok("PLAIN", &c);
    char *resp = NULL;
    struct err e;
    assert_int_equal(sasl_step(s, NULL, &resp, &e), SASL_DONE);
    assert_string_equal(resp, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"); /* "\0tim\0tanstaaftanstaaf" */
    step_fails(s, "", ERR_PROTO, "tanstaaf"); /* nothing after the initial response */
    sasl_free(&s);

    /* with an authorization identity */
    c.authzid = "admin";
    s = new_ok("plain", &c);
    step_expect(s, NULL, 0, SASL_DONE, "admin\0tim\0tanstaaftanstaaf", 26);
    sasl_free(&s);

    /* initial response sent in answer to an empty challenge (RFC 5034 §4) */
    c.authzid = NULL;
    s = new_ok("PLAIN", &c);
    step_expect(s, "", 0, SASL_DONE, "\0tim\0tanstaaftanstaaf", 21);
    sasl_free(&s);

    /* a non-empty challenge before the initial response is a protocol error */
    s = new_ok("PLAIN", &c);
    step_fails_raw(s, "hello", ERR_PROTO, "tanstaaf");
    /* and the exchange is over afterwards */
    step_fails(s, NULL, ERR_USAGE, NULL);
    sasl_free(&s);
}

static void login_two_challenges(void **state)
{
    (void)state;
    assert_false(sasl_mech_client_first("LOGIN"));
    struct sasl_creds c = creds("tim@example.com", "s3cr=t,pw");
    struct sasl *s = new_ok("LOGIN", &c);
    step_fails(s, NULL, ERR_USAGE, "s3cr");
    sasl_free(&s);

    s = new_ok("Login", &c);
    char *resp = NULL;
    struct err e;
    assert_int_equal(sasl_step(s, "VXNlcm5hbWU6", &resp, &e), SASL_MORE); /* "Username:" */
    assert_string_equal(resp, "dGltQGV4YW1wbGUuY29t");
    assert_int_equal(sasl_step(s, "UGFzc3dvcmQ6", &resp, &e), SASL_DONE); /* "Password:" */
    assert_string_equal(resp, "czNjcj10LHB3");
    step_fails(s, "UGFzc3dvcmQ6", ERR_PROTO, "s3cr");
    sasl_free(&s);

    /* LOGIN carries no authorization identity */
    c.authzid = "admin";
    new_fails("LOGIN", &c, ERR_USAGE, "authzid", "s3cr");
}

/* ---- SCRAM ------------------------------------------------------------------------ */

struct scram_vector {
    const char *mech, *cnonce, *client_first, *server_first, *client_final, *server_final;
};

static const struct scram_vector rfc5802 = {
    "SCRAM-SHA-1",
    "fyko+d2lbbFgONRv9qkxdawL",
    "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

static const struct scram_vector rfc7677 = {
    "SCRAM-SHA-256",
    "rOprNGfwEbeRWgbNEkqO",
    "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

/* A server-final for the RFC 7677 exchange that differs from the real one
 * only after its 33rd character; it must be refused. */
#define RFC7677_WRONG_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLSdp4Y1wXuo="

/* Run a vector up to (and including) the client-final message. */
static struct sasl *scram_to_final(const struct scram_vector *v, const char *password)
{
    struct sasl_creds c = creds("user", password);
    fixed_nonce = v->cnonce;
    struct sasl *s = new_ok(v->mech, &c);
    step_expect_str(s, NULL, SASL_MORE, v->client_first);
    fixed_nonce = NULL;
    return s;
}

static void scram_vector_run(const struct scram_vector *v)
{
    assert_true(sasl_mech_client_first(v->mech));
    struct sasl *s = scram_to_final(v, "pencil");
    step_expect_str(s, v->server_first, SASL_MORE, v->client_final);
    step_expect_str(s, v->server_final, SASL_DONE, "");
    /* nothing may follow the server-final message */
    step_fails_raw(s, v->server_final, ERR_PROTO, "pencil");
    sasl_free(&s);

    /* a wrong password gives a different proof, and the server's real
     * signature then does not verify for us either */
    s = scram_to_final(v, "pencil2");
    char *b64 = codec_b64_encode(v->server_first, strlen(v->server_first));
    char *resp = NULL;
    struct err e;
    assert_int_equal(sasl_step(s, b64, &resp, &e), SASL_MORE);
    free(b64);
    unsigned char *dec = NULL;
    size_t n = 0;
    assert_int_equal(codec_b64_decode_alloc(resp, strlen(resp), &dec, &n), 0);
    assert_false(n == strlen(v->client_final) && memcmp(dec, v->client_final, n) == 0);
    free(dec);
    step_fails_raw(s, v->server_final, ERR_AUTH, "pencil");
    sasl_free(&s);
}

static void scram_sha1_rfc5802(void **state)
{
    (void)state;
    scram_vector_run(&rfc5802);
}

static void scram_sha256_rfc7677(void **state)
{
    (void)state;
    scram_vector_run(&rfc7677);
    struct sasl *s = scram_to_final(&rfc7677, "pencil");
    step_expect_str(s, rfc7677.server_first, SASL_MORE, rfc7677.client_final);
    step_fails_raw(s, RFC7677_WRONG_FINAL, ERR_AUTH, "pencil");
    sasl_free(&s);
}

static void scram_bad_server(void **state)
{
    (void)state;
    const struct scram_vector *vs[] = {&rfc5802, &rfc7677};
    for (size_t i = 0; i < 2; i++) {
        const struct scram_vector *v = vs[i];
        /* tampered server signature: ERR_AUTH, and it says so */
        struct sasl *s = scram_to_final(v, "pencil");
        step_expect_str(s, v->server_first, SASL_MORE, v->client_final);
        char tampered[128];
        snprintf(tampered, sizeof tampered, "%s", v->server_final);
        tampered[2] = tampered[2] == 'A' ? 'B' : 'A';
        char *b64 = codec_b64_encode(tampered, strlen(tampered));
        char *resp = NULL;
        struct err e;
        err_clear(&e);
        assert_int_equal(sasl_step(s, b64, &resp, &e), -1);
        free(b64);
        assert_int_equal(e.kind, ERR_AUTH);
        assert_non_null(strstr(e.msg, "server signature did not verify"));
        assert_null(strstr(e.msg, "pencil"));
        sasl_free(&s);

        /* the server reports an error instead of its signature */
        s = scram_to_final(v, "pencil");
        step_expect_str(s, v->server_first, SASL_MORE, v->client_final);
        char *b64e = codec_b64_encode("e=invalid-proof", 15);
        err_clear(&e);
        assert_int_equal(sasl_step(s, b64e, &resp, &e), -1);
        free(b64e);
        assert_int_equal(e.kind, ERR_AUTH);
        assert_string_equal(e.server, "invalid-proof");
        sasl_free(&s);

        /* a server-final with neither v= nor e= */
        s = scram_to_final(v, "pencil");
        step_expect_str(s, v->server_first, SASL_MORE, v->client_final);
        step_fails_raw(s, "x=whatever", ERR_PROTO, "pencil");
        sasl_free(&s);

        /* the server nonce does not start with ours */
        s = scram_to_final(v, "pencil");
        step_fails_raw(s, "r=AAAAfyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=4096",
                       ERR_AUTH, "pencil");
        sasl_free(&s);

        /* malformed server-first messages */
        const char *bad_first[] = {
            "", "garbage", "s=QSXCR+Q6sek8bf92,i=4096", "r=%s", /* %s: no salt/iter */
        };
        for (size_t k = 0; k < sizeof bad_first / sizeof bad_first[0]; k++) {
            char msg[200];
            snprintf(msg, sizeof msg, bad_first[k], v->cnonce);
            s = scram_to_final(v, "pencil");
            step_fails_raw(s, msg, ERR_PROTO, "pencil");
            sasl_free(&s);
        }

        /* iteration count: over our cap, and not a number */
        char msg[200];
        snprintf(msg, sizeof msg, "r=%sXYZ,s=QSXCR+Q6sek8bf92,i=%d", v->cnonce,
                 SASL_SCRAM_ITER_MAX + 1);
        s = scram_to_final(v, "pencil");
        step_fails_raw(s, msg, ERR_LIMIT, "pencil");
        sasl_free(&s);
        snprintf(msg, sizeof msg, "r=%sXYZ,s=QSXCR+Q6sek8bf92,i=99999999999999999999999",
                 v->cnonce);
        s = scram_to_final(v, "pencil");
        step_fails_raw(s, msg, ERR_LIMIT, "pencil");
        sasl_free(&s);
        snprintf(msg, sizeof msg, "r=%sXYZ,s=QSXCR+Q6sek8bf92,i=40x6", v->cnonce);
        s = scram_to_final(v, "pencil");
        step_fails_raw(s, msg, ERR_PROTO, "pencil");
        sasl_free(&s);

        /* salt that is not base64 */
        snprintf(msg, sizeof msg, "r=%sXYZ,s=*not base64*,i=4096", v->cnonce);
        s = scram_to_final(v, "pencil");
        step_fails_raw(s, msg, ERR_PROTO, "pencil");
        sasl_free(&s);

        /* a non-empty challenge before the client-first message */
        s = new_ok(v->mech, &(struct sasl_creds){"user", "pencil", NULL, NULL, NULL, 0});
        step_fails_raw(s, v->server_first, ERR_PROTO, "pencil");
        sasl_free(&s);
    }
}

/* The libgsasl server used as the other end. */
static const char *srv_password;
static const char *srv_salt; /* base64; NULL: the server picks a random one */
static const char *srv_iter; /* NULL: the server's default (4096) */

static int srv_callback(Gsasl *ctx, Gsasl_session *sctx, Gsasl_property prop)
{
    (void)ctx;
    if (prop == GSASL_PASSWORD && srv_password)
        return gsasl_property_set(sctx, GSASL_PASSWORD, srv_password);
    if (prop == GSASL_SCRAM_SALT && srv_salt)
        return gsasl_property_set(sctx, GSASL_SCRAM_SALT, srv_salt);
    if (prop == GSASL_SCRAM_ITER && srv_iter)
        return gsasl_property_set(sctx, GSASL_SCRAM_ITER, srv_iter);
    return GSASL_NO_CALLBACK;
}

/* Our client against a libgsasl server session; returns the server's final rc. */
static int scram_against_server(const char *mech, const char *user, const char *client_pw,
                                const char *server_pw, char *client_first, size_t cf_size)
{
    Gsasl *ctx = NULL;
    assert_int_equal(gsasl_init(&ctx), GSASL_OK);
    gsasl_callback_set(ctx, srv_callback);
    srv_password = server_pw;
    Gsasl_session *srv = NULL;
    assert_int_equal(gsasl_server_start(ctx, mech, &srv), GSASL_OK);

    struct sasl_creds c = {user, client_pw, NULL, NULL, "localhost", 110};
    struct sasl *s = new_ok(mech, &c);
    struct err e;
    char *cresp = NULL, *sresp = NULL;
    assert_int_equal(sasl_step(s, NULL, &cresp, &e), SASL_MORE);
    unsigned char *dec = NULL;
    size_t n = 0;
    assert_int_equal(codec_b64_decode_alloc(cresp, strlen(cresp), &dec, &n), 0);
    snprintf(client_first, cf_size, "%s", (const char *)dec);
    free(dec);

    int src = gsasl_step64(srv, cresp, &sresp); /* server-first */
    assert_int_equal(src, GSASL_NEEDS_MORE);
    assert_int_equal(sasl_step(s, sresp, &cresp, &e), SASL_MORE); /* client-final */
    gsasl_free(sresp);
    sresp = NULL;
    src = gsasl_step64(srv, cresp, &sresp); /* server-final, or refusal */
    if (src == GSASL_OK) {
        int rc = sasl_step(s, sresp, &cresp, &e);
        if (rc != SASL_DONE)
            fail_msg("server-final refused: %s", e.msg);
        assert_string_equal(cresp, "");
        gsasl_free(sresp);
    }
    sasl_free(&s);
    gsasl_finish(srv);
    gsasl_done(ctx);
    return src;
}

static void scram_against_gsasl_server(void **state)
{
    (void)state;
    const char *mechs[] = {"SCRAM-SHA-1", "SCRAM-SHA-256"};
    char cf[256];
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(scram_against_server(mechs[i], "user", "pencil", "pencil", cf, sizeof cf),
                         GSASL_OK);
        assert_int_equal(strncmp(cf, "n,,n=user,r=", 12), 0);
        assert_true(strlen(cf) > 12 + 16); /* a nonce of real length */
        assert_int_equal(
            scram_against_server(mechs[i], "user", "pencil", "pencil!", cf, sizeof cf),
            GSASL_AUTHENTICATION_ERROR);
        /* ',' and '=' in the user name travel as =2C and =3D (RFC 5802 §5.1) */
        assert_int_equal(
            scram_against_server(mechs[i], "a,b=c", "pencil", "pencil", cf, sizeof cf), GSASL_OK);
        assert_int_equal(strncmp(cf, "n,,n=a=2Cb=3Dc,r=", 17), 0);
    }
}

/* Hi() computed here equals OpenSSL's PBKDF2 and libgsasl's. */
static void scram_hi_matches_pbkdf2(void **state)
{
    (void)state;
    char longpw[200];
    memset(longpw, 'x', sizeof longpw - 1);
    longpw[sizeof longpw - 1] = '\0';
    const char *pws[] = {"pencil", "", longpw, "0123456789012345678901234567890123456789012345678901234567890123"};
    const unsigned long iters[] = {1, 2, 4096};
    const unsigned char salt[] = "\x41\x25\xc2\x47\xe4\x3a\xb1\xe9\x3c\x6d\xff\x76";
    for (size_t p = 0; p < sizeof pws / sizeof pws[0]; p++) {
        for (size_t i = 0; i < sizeof iters / sizeof iters[0]; i++) {
            for (int sha256 = 0; sha256 <= 1; sha256++) {
                unsigned char a[32], b[32];
                size_t n = sasl_scram_hi(sha256, pws[p], strlen(pws[p]), salt, sizeof salt - 1,
                                         iters[i], a);
                assert_int_equal(n, sha256 ? 32 : 20);
                assert_int_equal(PKCS5_PBKDF2_HMAC(pws[p], (int)strlen(pws[p]), salt,
                                                   sizeof salt - 1, (int)iters[i],
                                                   sha256 ? EVP_sha256() : EVP_sha1(), (int)n, b),
                                 1);
                assert_memory_equal(a, b, n);
            }
        }
    }
    unsigned char out[32];
    assert_int_equal(sasl_scram_hi(true, "p", 1, salt, 4, 0, out), 0);
    char sp[65], ck[65], sk[65], stk[65];
    unsigned char mine[32];
    assert_int_equal(gsasl_scram_secrets_from_password(GSASL_HASH_SHA256, "pencil", 4096,
                                                       (const char *)salt, sizeof salt - 1, sp, ck,
                                                       sk, stk),
                     GSASL_OK);
    sasl_scram_hi(true, "pencil", 6, salt, sizeof salt - 1, 4096, mine);
    assert_memory_equal(mine, sp, 32);
    /* SASLprep'd on the way (RFC 4013: no-break space is a space, soft hyphen
     * is nothing): our client and libgsasl's server agree */
    char cf[256];
    sasl_scram_cache_clear();
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "user", "pen\xC2\xA0" "c\xC2\xAD" "il",
                                          "pen cil", cf, sizeof cf),
                     GSASL_OK);
    sasl_scram_cache_clear();
}

/* The salted password is computed once per (mechanism, user, password, salt,
 * iterations) and remembered only after the server proved itself. */
static void scram_salted_password_cache(void **state)
{
    (void)state;
    char cf[256];
    struct sasl_scram_stats st;
    sasl_scram_cache_clear();
    srv_salt = "QSXCR+Q6sek8bf92";
    srv_iter = "4096";
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "user", "pencil", "pencil", cf, sizeof cf),
                     GSASL_OK);
    st = sasl_scram_cache_stats();
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 0);
    assert_int_equal(st.entries, 1);
    /* the same inputs again: the remembered value, and the server accepts its proof */
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "user", "pencil", "pencil", cf, sizeof cf),
                     GSASL_OK);
    st = sasl_scram_cache_stats();
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 1);
    /* a wrong password is another key, and a refused login is not remembered */
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "user", "pencil!", "pencil", cf, sizeof cf),
                     GSASL_AUTHENTICATION_ERROR);
    st = sasl_scram_cache_stats();
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 1);
    /* the password changed on both sides: not the old value */
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "user", "new-pw", "new-pw", cf, sizeof cf),
                     GSASL_OK);
    st = sasl_scram_cache_stats();
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 2);
    /* another user, another mechanism, another salt, another count: each its own */
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "other", "pencil", "pencil", cf, sizeof cf),
                     GSASL_OK);
    assert_int_equal(scram_against_server("SCRAM-SHA-1", "user", "pencil", "pencil", cf, sizeof cf),
                     GSASL_OK);
    srv_salt = "c2FsdHNhbHQ=";
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "user", "pencil", "pencil", cf, sizeof cf),
                     GSASL_OK);
    srv_iter = "4097";
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "user", "pencil", "pencil", cf, sizeof cf),
                     GSASL_OK);
    st = sasl_scram_cache_stats();
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 6);
    /* every one of them is used again */
    assert_int_equal(scram_against_server("SCRAM-SHA-256", "user", "pencil", "pencil", cf, sizeof cf),
                     GSASL_OK);
    srv_salt = "QSXCR+Q6sek8bf92";
    srv_iter = "4096";
    assert_int_equal(scram_against_server("SCRAM-SHA-1", "user", "pencil", "pencil", cf, sizeof cf),
                     GSASL_OK);
    st = sasl_scram_cache_stats();
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.entries, 6);

    /* bounded: the least recently used entry goes first */
    sasl_scram_cache_clear();
    srv_iter = "1";
    char salt[32];
    for (int i = 0; i <= SASL_SCRAM_CACHE_MAX; i++) {
        snprintf(salt, sizeof salt, "c2FsdA%06d", i); /* distinct base64 */
        srv_salt = salt;
        assert_int_equal(scram_against_server("SCRAM-SHA-1", "u", "p", "p", cf, sizeof cf), GSASL_OK);
    }
    st = sasl_scram_cache_stats();
    assert_int_equal(st.entries, SASL_SCRAM_CACHE_MAX);
    assert_int_equal(st.evicted, 1);
    assert_int_equal(st.hits, 0);
    snprintf(salt, sizeof salt, "c2FsdA%06d", SASL_SCRAM_CACHE_MAX); /* the newest: kept */
    assert_int_equal(scram_against_server("SCRAM-SHA-1", "u", "p", "p", cf, sizeof cf), GSASL_OK);
    assert_int_equal(sasl_scram_cache_stats().hits, 1);
    snprintf(salt, sizeof salt, "c2FsdA%06d", 0); /* the oldest: dropped */
    assert_int_equal(scram_against_server("SCRAM-SHA-1", "u", "p", "p", cf, sizeof cf), GSASL_OK);
    assert_int_equal(sasl_scram_cache_stats().hits, 1);
    /* ...and put back in the place of the next oldest (1); the others are
     * still found, the one dropped is not */
    snprintf(salt, sizeof salt, "c2FsdA%06d", 2);
    assert_int_equal(scram_against_server("SCRAM-SHA-1", "u", "p", "p", cf, sizeof cf), GSASL_OK);
    snprintf(salt, sizeof salt, "c2FsdA%06d", 0);
    assert_int_equal(scram_against_server("SCRAM-SHA-1", "u", "p", "p", cf, sizeof cf), GSASL_OK);
    assert_int_equal(sasl_scram_cache_stats().hits, 3);
    snprintf(salt, sizeof salt, "c2FsdA%06d", 1);
    assert_int_equal(scram_against_server("SCRAM-SHA-1", "u", "p", "p", cf, sizeof cf), GSASL_OK);
    assert_int_equal(sasl_scram_cache_stats().hits, 3);
    assert_int_equal(sasl_scram_cache_stats().entries, SASL_SCRAM_CACHE_MAX);
    srv_salt = NULL;
    srv_iter = NULL;
    sasl_scram_cache_clear();
}

/* ---- XOAUTH2, OAUTHBEARER ------------------------------------------------------------ */

static void xoauth2_encoding(void **state)
{
    (void)state;
    assert_true(sasl_mech_client_first("XOAUTH2"));
    struct sasl_creds c = {"someuser@example.com", NULL,
                           "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", NULL, "imap.gmail.com",
                           993};
    struct sasl *s = new_ok("xoauth2", &c);
    char *resp = NULL;
    struct err e;
    assert_int_equal(sasl_step(s, NULL, &resp, &e), SASL_DONE);
    /* Google's documented example */
    assert_string_equal(resp, "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOW"
                              "RmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==");
    assert_string_equal(sasl_error_detail(s), "");
    /* the error report: {"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"} */
    assert_int_equal(sasl_step(s,
                               "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoia"
                               "HR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0=",
                               &resp, &e),
                     SASL_DONE);
    assert_string_equal(resp, ""); /* XOAUTH2 answers an empty response */
    assert_string_equal(sasl_error_detail(s), "status=401 scope=https://mail.google.com/");
    /* only one report may come */
    step_fails(s, "e30=", ERR_PROTO, "ya29");
    sasl_free(&s);

    /* a report that is not JSON is kept as sanitised text */
    const char initial[] = "user=someuser@example.com\001auth=Bearer "
                           "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\001\001";
    s = new_ok("XOAUTH2", &c);
    step_expect(s, NULL, 0, SASL_DONE, initial, sizeof initial - 1);
    step_expect(s, "bad\ntoken\x01", 10, SASL_DONE, "", 0);
    assert_string_equal(sasl_error_detail(s), "bad?token?");
    sasl_free(&s);

    /* a report that echoes the token is withheld */
    s = new_ok("XOAUTH2", &c);
    step_expect(s, NULL, 0, SASL_DONE, initial, sizeof initial - 1);
    const char *echo = "{\"status\":\"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\"}";
    step_expect(s, echo, strlen(echo), SASL_DONE, "", 0);
    assert_null(strstr(sasl_error_detail(s), "ya29"));
    assert_non_null(strstr(sasl_error_detail(s), "withheld"));
    sasl_free(&s);

    /* XOAUTH2 carries no authzid; the user may not hold ^A */
    c.authzid = "other";
    new_fails("XOAUTH2", &c, ERR_USAGE, "authzid", "ya29");
    c.authzid = NULL;
    c.username = "some\001user";
    new_fails("XOAUTH2", &c, ERR_USAGE, "control", "ya29");
}

static void oauthbearer_encoding(void **state)
{
    (void)state;
    assert_true(sasl_mech_client_first("OAUTHBEARER"));
    /* RFC 7628 §4.1 */
    struct sasl_creds c = {"user@example.com", NULL, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
                           NULL, "server.example.com", 143};
    struct sasl *s = new_ok("OAUTHBEARER", &c);
    char *resp = NULL;
    struct err e;
    assert_int_equal(sasl_step(s, NULL, &resp, &e), SASL_DONE);
    assert_string_equal(resp, "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBv"
                              "cnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1"
                              "semRHRXVZMjl0Q2c9PQEB");
    /* RFC 7628 §4.3's error report; the answer is a single ^A (§3.2.3) */
    const char *report = "{\"status\":\"invalid_token\",\"scope\":\"example_scope\","
                         "\"openid-configuration\":\"https://example.com/.well-known/"
                         "openid-configuration\"}";
    step_expect(s, report, strlen(report), SASL_DONE, "\001", 1);
    assert_string_equal(sasl_error_detail(s), "status=invalid_token scope=example_scope");
    step_fails(s, "", ERR_PROTO, "vF9d");
    sasl_free(&s);

    /* ',' and '=' in the user are escaped (RFC 5801 saslname); host and port
     * are left out when unknown */
    struct sasl_creds c2 = {"a,b=c@example.com", NULL, "tok-123._~+/=", NULL, NULL, 0};
    s = new_ok("oauthbearer", &c2);
    const char want[] = "n,a=a=2Cb=3Dc@example.com,\001auth=Bearer tok-123._~+/=\001\001";
    step_expect(s, NULL, 0, SASL_DONE, want, sizeof want - 1);
    sasl_free(&s);

    /* authzid, when given, is the a= identity */
    struct sasl_creds c3 = {"me", NULL, "tok", "boss=1", "h", 995};
    s = new_ok("OAUTHBEARER", &c3);
    const char want3[] = "n,a=boss=3D1,\001host=h\001port=995\001auth=Bearer tok\001\001";
    step_expect(s, "", 0, SASL_DONE, want3, sizeof want3 - 1); /* after an empty challenge */
    /* a numeric status is kept too */
    step_expect_str(s, "{\"status\":401}", SASL_DONE, "\001");
    assert_string_equal(sasl_error_detail(s), "status=401");
    sasl_free(&s);

    /* tokens must be RFC 6750 b64token; hosts may not hold control characters */
    const char *bad_tokens[] = {"", "tok en", "tok\001", "=abc", "ab=c", "tök"};
    for (size_t i = 0; i < sizeof bad_tokens / sizeof bad_tokens[0]; i++) {
        struct sasl_creds b = {"me", NULL, bad_tokens[i], NULL, "h", 1};
        new_fails("OAUTHBEARER", &b, ERR_USAGE, NULL, NULL);
    }
    struct sasl_creds bh = {"me", NULL, "tok", NULL, "h\001x", 1};
    new_fails("OAUTHBEARER", &bh, ERR_USAGE, "host", NULL);
}

/* ---- errors common to all mechanisms ------------------------------------------------- */

static void invalid_base64_challenge(void **state)
{
    (void)state;
    const char *all[] = {"PLAIN",   "LOGIN",       "CRAM-MD5", "SCRAM-SHA-1",
                         "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        struct sasl_creds c = {"user", "hunter2", "tok3n", NULL, "h", 110};
        struct sasl *s = new_ok(all[i], &c);
        struct err e;
        char *resp;
        if (sasl_mech_client_first(all[i]))
            assert_true(sasl_step(s, NULL, &resp, &e) >= 0);
        step_fails(s, "not base64!", ERR_PROTO, "hunter2");
        /* after an error only sasl_free remains */
        step_fails(s, "", ERR_USAGE, NULL);
        sasl_free(&s);

        /* a challenge longer than the cap (as the first challenge: for most
         * mechanisms nothing else may come after the initial response) */
        s = new_ok(all[i], &c);
        char *big = malloc(SASL_CHALLENGE_MAX + 5);
        assert_non_null(big);
        memset(big, 'A', SASL_CHALLENGE_MAX + 4);
        big[SASL_CHALLENGE_MAX + 4] = '\0';
        step_fails(s, big, ERR_LIMIT, "hunter2");
        free(big);
        sasl_free(&s);
    }
}

static void usage_errors(void **state)
{
    (void)state;
    struct sasl_creds c = creds("user", "hunter2");
    new_fails("DIGEST-MD5", &c, ERR_USAGE, "unknown", "hunter2");
    new_fails("", &c, ERR_USAGE, "unknown", NULL);
    new_fails(NULL, &c, ERR_USAGE, "unknown", NULL);
    new_fails("PLAIN", NULL, ERR_USAGE, NULL, NULL);
    assert_false(sasl_mech_supported("GSSAPI"));
    assert_true(sasl_mech_supported("scram-sha-256"));
    assert_false(sasl_mech_client_first("GSSAPI"));
    assert_false(sasl_mech_client_first(NULL));

    const char *pw_mechs[] = {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"};
    for (size_t i = 0; i < sizeof pw_mechs / sizeof pw_mechs[0]; i++) {
        struct sasl_creds no_pw = {"user", NULL, "tok", NULL, "h", 1};
        new_fails(pw_mechs[i], &no_pw, ERR_USAGE, "password", "tok");
        struct sasl_creds no_user = {NULL, "hunter2", NULL, NULL, "h", 1};
        new_fails(pw_mechs[i], &no_user, ERR_USAGE, "user name", "hunter2");
        no_user.username = "";
        new_fails(pw_mechs[i], &no_user, ERR_USAGE, "user name", "hunter2");
    }
    const char *tok_mechs[] = {"XOAUTH2", "OAUTHBEARER"};
    for (size_t i = 0; i < 2; i++) {
        struct sasl_creds no_tok = {"user", "hunter2", NULL, NULL, "h", 1};
        new_fails(tok_mechs[i], &no_tok, ERR_USAGE, "token", "hunter2");
    }
    /* over-long credentials */
    char *long_pw = malloc(SASL_CRED_MAX + 2);
    assert_non_null(long_pw);
    memset(long_pw, 'p', SASL_CRED_MAX + 1);
    long_pw[SASL_CRED_MAX + 1] = '\0';
    struct sasl_creds lc = creds("user", long_pw);
    new_fails("PLAIN", &lc, ERR_USAGE, "SASL_CRED_MAX", "pppppppp");
    free(long_pw);
    char *long_tok = malloc(SASL_TOKEN_MAX + 2);
    assert_non_null(long_tok);
    memset(long_tok, 't', SASL_TOKEN_MAX + 1);
    long_tok[SASL_TOKEN_MAX + 1] = '\0';
    struct sasl_creds lt = {"user", NULL, long_tok, NULL, NULL, 0};
    new_fails("XOAUTH2", &lt, ERR_USAGE, "SASL_TOKEN_MAX", "tttttttt");
    free(long_tok);

    /* NULL-safety */
    struct err e;
    char *resp = (char *)"x";
    assert_int_equal(sasl_step(NULL, "", &resp, &e), -1);
    assert_null(resp);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_string_equal(sasl_error_detail(NULL), "");
    struct sasl *none = NULL;
    sasl_free(&none);
    sasl_free(NULL);
}

static int teardown_global(void **state)
{
    (void)state;
    sasl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(b64_rfc4648_vectors),
        cmocka_unit_test(b64_round_trip),
        cmocka_unit_test(b64_strict_rejects),
        cmocka_unit_test(apop_rfc1939),
        cmocka_unit_test(apop_rejects),
        cmocka_unit_test(cram_md5_rfc2195),
        cmocka_unit_test(plain_encodings),
        cmocka_unit_test(login_two_challenges),
        cmocka_unit_test(scram_sha1_rfc5802),
        cmocka_unit_test(scram_sha256_rfc7677),
        cmocka_unit_test(scram_bad_server),
        cmocka_unit_test(scram_against_gsasl_server),
        cmocka_unit_test(scram_hi_matches_pbkdf2),
        cmocka_unit_test(scram_salted_password_cache),
        cmocka_unit_test(xoauth2_encoding),
        cmocka_unit_test(oauthbearer_encoding),
        cmocka_unit_test(invalid_base64_challenge),
        cmocka_unit_test(usage_errors),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_global);
}
