/* codec — hex, strict base64, certificate pins; see include/codec.h. */
#include "codec.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int codec_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void codec_hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

char *codec_b64_encode(const void *data, size_t len)
{
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    char *out = malloc(CODEC_B64_SIZE(len));
    if (out)
        codec_b64_encode_buf(data, len, out, CODEC_B64_SIZE(len));
    return out;
}

int codec_b64_encode_buf(const void *data, size_t len, char *out, size_t out_size)
{
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3 || out_size < CODEC_B64_SIZE(len)) {
        if (out && out_size)
            out[0] = '\0';
        return -1;
    }
    const unsigned char *in = data;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            w |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            w |= in[i + 2];
        out[o++] = b64_alphabet[(w >> 18) & 63];
        out[o++] = b64_alphabet[(w >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(w >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64_alphabet[w & 63] : '=';
    }
    out[o] = '\0';
    return 0;
}

bool codec_is_b64token(const char *t)
{
    size_t i = 0;
    for (; t[i] && t[i] != '='; i++) {
        unsigned char c = (unsigned char)t[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'))
            return false;
    }
    if (i == 0)
        return false;
    for (; t[i]; i++)
        if (t[i] != '=')
            return false;
    return true;
}

int codec_b64_decode(const char *in, size_t len, unsigned char *out, size_t out_size,
                     size_t *out_len, size_t *bad_at)
{
    size_t o = 0, bad;
    if (len % 4 != 0) {
        bad = len;
        goto invalid;
    }
    for (size_t i = 0; i < len; i += 4) {
        bool last = i + 4 == len;
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + (size_t)k];
            if (c == '=' && last && k >= 2) {
                if (k == 2 && in[i + 3] != '=') { /* "x=y=": padding runs to the end */
                    bad = i + 2;
                    goto invalid;
                }
                v[k] = 0;
                pad++;
                continue;
            }
            if ((v[k] = b64_value(c)) < 0) {
                bad = i + (size_t)k;
                goto invalid;
            }
        }
        if ((pad == 2 && (v[1] & 0x0f) != 0) || (pad == 1 && (v[2] & 0x03) != 0)) {
            bad = i + 3 - (size_t)pad; /* stray bits in the last character */
            goto invalid;
        }
        unsigned char b[3] = {
            (unsigned char)(v[0] << 2 | v[1] >> 4),
            (unsigned char)((v[1] & 0x0f) << 4 | v[2] >> 2),
            (unsigned char)((v[2] & 0x03) << 6 | v[3]),
        };
        size_t nb = 3 - (size_t)pad;
        if (o + nb > out_size)
            return -2;
        memcpy(out + o, b, nb);
        o += nb;
    }
    *out_len = o;
    return 0;
invalid:
    if (bad_at)
        *bad_at = bad;
    return -1;
}

int codec_b64_decode_alloc(const char *in, size_t len, unsigned char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!in || len % 4 != 0)
        return -1;
    unsigned char *buf = malloc(len / 4 * 3 + 1);
    if (!buf)
        return -2;
    size_t n;
    if (codec_b64_decode(in, len, buf, len / 4 * 3, &n, NULL) < 0) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
}

int codec_pin_parse(const char *s, unsigned char out[CODEC_PIN_LEN])
{
    static const char prefix[] = "sha256:";
    if (!s || strncasecmp(s, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *p = s + sizeof prefix - 1;
    size_t len = strlen(p);
    bool colons;
    if (len == 2 * CODEC_PIN_LEN)
        colons = false;
    else if (len == 3 * CODEC_PIN_LEN - 1)
        colons = true;
    else
        return -1;
    for (size_t i = 0; i < CODEC_PIN_LEN; i++) {
        const char *q = p + i * (colons ? 3 : 2);
        int hi = codec_hex_value(q[0]), lo = codec_hex_value(q[1]);
        if (hi < 0 || lo < 0 || (colons && i + 1 < CODEC_PIN_LEN && q[2] != ':'))
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}
