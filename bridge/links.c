/* links — signed links; see include/links.h. */
#include "links.h"

#include "codec.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define LINKS_CONTEXT "pop3bridge-link-v1"
#define SHA256_LEN 32

/* HMAC-SHA256(key, context LF path LF exp-digits) into mac. */
static int mac_of(const unsigned char *key, size_t key_len, const char *path, const char *exp,
                  unsigned char mac[SHA256_LEN])
{
    char msg[sizeof LINKS_CONTEXT + LINKS_PATH_MAX + LINKS_EXP_DIGITS_MAX + 4];
    unsigned int len = 0;
    if (!key || key_len == 0 || !path || !exp || strlen(path) > LINKS_PATH_MAX)
        return -1;
    int n = snprintf(msg, sizeof msg, "%s\n%s\n%s", LINKS_CONTEXT, path, exp);
    if (n < 0 || (size_t)n >= sizeof msg)
        return -1;
    if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, (size_t)n, mac, &len) ||
        len != SHA256_LEN)
        return -1;
    return 0;
}

int links_query(const unsigned char *key, size_t key_len, const char *path, int64_t exp,
                char *out, size_t out_size)
{
    char e[LINKS_EXP_DIGITS_MAX + 2], hex[2 * SHA256_LEN + 1];
    unsigned char mac[SHA256_LEN];
    if (!out || out_size == 0)
        return -1;
    out[0] = '\0';
    if (exp < 0)
        return -1;
    snprintf(e, sizeof e, "%lld", (long long)exp);
    if (mac_of(key, key_len, path, e, mac) < 0)
        return -1;
    codec_hex_encode(mac, sizeof mac, hex);
    OPENSSL_cleanse(mac, sizeof mac);
    int n = snprintf(out, out_size, "?exp=%s&sig=%s", e, hex);
    if (n < 0 || (size_t)n >= out_size) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int parse_exp(const char *s, int64_t *out)
{
    size_t len = s ? strlen(s) : 0;
    int64_t v = 0;
    if (len == 0 || len > LINKS_EXP_DIGITS_MAX || (len > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

enum links_verdict links_verify(const unsigned char *key, size_t key_len, const char *path,
                                const char *exp, const char *sig, int64_t now)
{
    unsigned char mac[SHA256_LEN], got[SHA256_LEN];
    int64_t when;
    if (parse_exp(exp, &when) < 0 || !sig || strlen(sig) != LINKS_SIG_HEX)
        return LINKS_MALFORMED;
    for (size_t i = 0; i < SHA256_LEN; i++) {
        int hi = codec_hex_value((unsigned char)sig[2 * i]);
        int lo = codec_hex_value((unsigned char)sig[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return LINKS_MALFORMED;
        got[i] = (unsigned char)(hi << 4 | lo);
    }
    if (mac_of(key, key_len, path, exp, mac) < 0)
        return LINKS_BAD_SIGNATURE;
    bool same = CRYPTO_memcmp(mac, got, SHA256_LEN) == 0;
    OPENSSL_cleanse(mac, sizeof mac);
    if (!same)
        return LINKS_BAD_SIGNATURE;
    return now > when ? LINKS_EXPIRED : LINKS_OK;
}

const char *links_verdict_text(enum links_verdict v)
{
    switch (v) {
    case LINKS_OK:
        return "the link is valid";
    case LINKS_MALFORMED:
        return "the link's exp or sig parameter is missing or malformed";
    case LINKS_BAD_SIGNATURE:
        return "the link's signature does not match: it was altered, or the link key was "
               "rotated (POST /api/v1/links/rotate) and every older link revoked";
    case LINKS_EXPIRED:
        return "the link has expired (links_ttl); fetch the message again for a new one";
    }
    return "unknown";
}
