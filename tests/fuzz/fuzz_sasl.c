/* Fuzz target: arbitrary server challenges fed to every SASL mechanism.
 *
 * Input: byte 0 picks the mechanism, byte 1 holds flags, the rest is up to
 * MAX_STEPS challenges separated by '\n'.
 *   flag 1: the challenges are base64 text passed as they are (the decoder is
 *           fuzzed too); otherwise they are raw bytes we encode first (the
 *           mechanisms see the bytes the fuzzer chose).
 *   flag 2: begin with the initial response (NULL challenge).
 *   flag 4: also run the APOP digest and the base64 decoder on the rest.
 * Checked on every step: a result is valid base64 or an error with a kind and
 * a message; no error message (our text) holds the password or token, and no
 * error detail holds the token.
 *
 * The SCRAM client nonce is fixed (18 zero bytes, "AAAA...") by defining
 * gsasl_nonce() here, which libgsasl calls through its PLT, so that the
 * fuzzer can reach the later SCRAM steps.  Server-first messages asking for
 * more than COSTLY_ITER PBKDF2 iterations are skipped: their cost is bounded
 * by SASL_SCRAM_ITER_MAX and tested in the unit tests, and here they would
 * only slow the search.
 */
#include <gsasl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "sasl.h"

#define MAX_STEPS 8
#define COSTLY_ITER 4096
#define PASSWORD "pencil-SECRET"
#define TOKEN "tok3n-SECRET"

int gsasl_nonce(char *data, size_t datalen)
{
    memset(data, 0, datalen);
    return GSASL_OK;
}

static const char *const mechs[] = {"PLAIN",   "LOGIN",       "CRAM-MD5", "SCRAM-SHA-1",
                                    "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER"};

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "invariant broken: %s\n", what);
        abort();
    }
}

static bool leaks_secret(const char *text)
{
    return strstr(text, PASSWORD) || strstr(text, TOKEN);
}

/* Whether raw bytes hold "i=" followed by a number above COSTLY_ITER. */
static bool costly(const unsigned char *d, size_t n)
{
    for (size_t i = 0; i + 2 < n; i++) {
        if (d[i] != 'i' || d[i + 1] != '=')
            continue;
        unsigned long v = 0;
        for (size_t k = i + 2; k < n && d[k] >= '0' && d[k] <= '9'; k++) {
            v = v * 10 + (unsigned long)(d[k] - '0');
            if (v > COSTLY_ITER)
                return true;
        }
    }
    return false;
}

static void step_once(struct sasl *s, const char *b64)
{
    char *resp = NULL;
    struct err e;
    err_clear(&e);
    int rc = sasl_step(s, b64, &resp, &e);
    if (rc < 0) {
        check(resp == NULL, "resp NULL on error");
        check(e.kind != ERR_NONE && e.msg[0], "error has a kind and a message");
        check(!leaks_secret(e.msg), "no secret in the error message");
    } else {
        check(rc == SASL_MORE || rc == SASL_DONE, "return value");
        check(resp != NULL, "resp set on success");
        unsigned char *dec = NULL;
        size_t n = 0;
        check(codec_b64_decode_alloc(resp, strlen(resp), &dec, &n) == 0, "response is valid base64");
        free(dec);
    }
    /* the detail is the server's own report: it can only echo what was sent,
     * and a report echoing the token is withheld */
    check(!strstr(sasl_error_detail(s), TOKEN), "no token in the error detail");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *mech = mechs[data[0] % (sizeof mechs / sizeof mechs[0])];
    unsigned flags = data[1];
    const unsigned char *p = data + 2;
    size_t n = size - 2;

    if (flags & 4) {
        char out[33];
        struct err e;
        if (sasl_apop_digest((const char *)p, n, PASSWORD, out, &e) == 0)
            check(strlen(out) == 32, "APOP digest length");
        else
            check(!leaks_secret(e.msg), "no secret in the APOP error");
        char *text = malloc(n + 1);
        if (!text)
            return 0;
        memcpy(text, p, n);
        text[n] = '\0';
        unsigned char *dec = NULL;
        size_t dn = 0;
        if (codec_b64_decode_alloc(text, strlen(text), &dec, &dn) == 0 && strlen(text) == n) {
            char *again = codec_b64_encode(dec, dn);
            check(again && strcmp(again, text) == 0, "strict base64 round-trips");
            free(again);
        }
        free(dec);
        free(text);
    }

    struct sasl_creds c = {"user", PASSWORD, TOKEN, NULL, "pop.example.com", 995};
    struct err e;
    struct sasl *s = sasl_new(mech, &c, &e);
    check(s != NULL, "sasl_new with good credentials");
    if (flags & 2)
        step_once(s, NULL);

    size_t i = 0;
    for (int steps = 0; steps < MAX_STEPS && i <= n; steps++) {
        size_t j = i;
        while (j < n && p[j] != '\n')
            j++;
        char *b64;
        if (flags & 1) {
            b64 = malloc(j - i + 1);
            if (b64) {
                memcpy(b64, p + i, j - i);
                b64[j - i] = '\0';
                unsigned char *dec = NULL;
                size_t dn = 0;
                if (codec_b64_decode_alloc(b64, strlen(b64), &dec, &dn) == 0 && costly(dec, dn)) {
                    free(dec);
                    free(b64);
                    break;
                }
                free(dec);
            }
        } else {
            if (costly(p + i, j - i))
                break;
            b64 = codec_b64_encode(p + i, j - i);
        }
        if (!b64)
            break;
        step_once(s, b64);
        free(b64);
        i = j + 1;
    }
    sasl_free(&s);
    check(s == NULL, "sasl_free clears the pointer");
    return 0;
}
