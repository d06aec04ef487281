/* webhook — signing, ids, outcomes, retry delays and custom headers of webhook
 * POSTs; see include/webhook.h.  The sender is in webhook_sender.c. */
#include "webhook.h"

#include "clock.h"
#include "codec.h"
#include "url.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define SHA256_LEN 32
#define TS_DIGITS_MAX 19          /* int64_t in decimal */
#define ID_HEX_DIGITS 32

/* ---- process set-up ---------------------------------------------------- */

int webhook_global_init(struct err *e)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK)
        return err_set(e, ERR_INTERNAL, "curl_global_init failed: %s", curl_easy_strerror(rc));
    return 0;
}

void webhook_global_cleanup(void)
{
    curl_global_cleanup();
}

/* ---- signing ----------------------------------------------------------- */

int webhook_secret_decode(const char *secret, unsigned char *key, size_t key_size,
                          size_t *key_len, struct err *e)
{
    static const char prefix[] = WEBHOOK_SECRET_PREFIX;
    const size_t plen = sizeof prefix - 1;
    unsigned char tmp[WEBHOOK_KEY_MAX + 3]; /* room to detect "too long" */
    size_t n = 0, bad = 0;

    if (!secret || !key || !key_len)
        return err_set(e, ERR_USAGE, "webhook secret: missing");
    if (strncmp(secret, prefix, plen) != 0)
        return err_set(e, ERR_USAGE, "webhook secret: must start with \"%s\"", prefix);
    const char *b64 = secret + plen;
    size_t blen = strlen(b64);
    if (blen > (WEBHOOK_KEY_MAX + 2) / 3 * 4)
        return err_set(e, ERR_USAGE, "webhook secret: key longer than %d bytes", WEBHOOK_KEY_MAX);
    int rc = blen ? codec_b64_decode(b64, blen, tmp, sizeof tmp, &n, &bad) : -1;
    if (rc == -2)
        bad = SIZE_MAX; /* does not fit: too long */
    if (rc < 0) {
        OPENSSL_cleanse(tmp, sizeof tmp);
        if (bad == blen)
            return err_set(e, ERR_USAGE,
                           "webhook secret: base64 part is %zu characters, not a non-zero "
                           "multiple of 4",
                           blen);
        if (bad == SIZE_MAX)
            return err_set(e, ERR_USAGE, "webhook secret: key longer than %d bytes",
                           WEBHOOK_KEY_MAX);
        return err_set(e, ERR_USAGE, "webhook secret: not valid base64 at character %zu",
                       plen + bad + 1);
    }
    if (n < WEBHOOK_KEY_MIN || n > WEBHOOK_KEY_MAX) {
        OPENSSL_cleanse(tmp, sizeof tmp);
        return err_set(e, ERR_USAGE, "webhook secret: key is %zu bytes, must be %d..%d", n,
                       WEBHOOK_KEY_MIN, WEBHOOK_KEY_MAX);
    }
    if (n > key_size) {
        OPENSSL_cleanse(tmp, sizeof tmp);
        return err_set(e, ERR_USAGE, "webhook secret: key is %zu bytes, buffer holds %zu", n,
                       key_size);
    }
    memcpy(key, tmp, n);
    OPENSSL_cleanse(tmp, sizeof tmp);
    *key_len = n;
    return 0;
}

/* HMAC-SHA256 over "{id}.{timestamp}." and then the body, fed in pieces:
 * one MAC per key (several while a secret is being rotated). */
struct webhook_signer {
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx[WEBHOOK_KEYS_MAX];
    size_t n;
    uint64_t bytes; /* body bytes fed */
    bool failed;
};

static struct webhook_signer *signer_open(const struct webhook_key *keys, size_t n_keys,
                                          const char *id, const char *ts)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (!keys || n_keys == 0 || n_keys > WEBHOOK_KEYS_MAX || !id || !ts)
        return NULL;
    for (size_t i = 0; i < n_keys; i++)
        if (!keys[i].key || keys[i].len == 0)
            return NULL;
    struct webhook_signer *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    bool ok = g->mac != NULL;
    for (size_t i = 0; ok && i < n_keys; i++) {
        EVP_MAC_CTX *c = EVP_MAC_CTX_new(g->mac);
        if (c)
            g->ctx[g->n++] = c;
        ok = c && EVP_MAC_init(c, keys[i].key, keys[i].len, params) == 1 &&
             EVP_MAC_update(c, (const unsigned char *)id, strlen(id)) == 1 &&
             EVP_MAC_update(c, (const unsigned char *)".", 1) == 1 &&
             EVP_MAC_update(c, (const unsigned char *)ts, strlen(ts)) == 1 &&
             EVP_MAC_update(c, (const unsigned char *)".", 1) == 1;
    }
    if (!ok) {
        webhook_signer_free(g);
        return NULL;
    }
    return g;
}

struct webhook_signer *webhook_signer_new_keys(const struct webhook_key *keys, size_t n_keys,
                                               const char *id, int64_t ts)
{
    char tsbuf[TS_DIGITS_MAX + 2];
    int n = snprintf(tsbuf, sizeof tsbuf, "%lld", (long long)ts);
    if (n < 0 || (size_t)n >= sizeof tsbuf)
        return NULL;
    return signer_open(keys, n_keys, id, tsbuf);
}

struct webhook_signer *webhook_signer_new(const unsigned char *key, size_t key_len,
                                          const char *id, int64_t ts)
{
    struct webhook_key k = {key, key_len};
    return webhook_signer_new_keys(&k, 1, id, ts);
}

int webhook_signer_update(struct webhook_signer *g, const void *data, size_t len)
{
    if (!g || g->failed || (!data && len))
        return -1;
    for (size_t i = 0; len && i < g->n; i++)
        if (EVP_MAC_update(g->ctx[i], data, len) != 1) {
            g->failed = true;
            return -1;
        }
    g->bytes += len;
    return 0;
}

uint64_t webhook_signer_bytes(const struct webhook_signer *g)
{
    return g ? g->bytes : 0;
}

int webhook_signer_final(struct webhook_signer *g, char *out, size_t out_size)
{
    unsigned char mac[SHA256_LEN];
    char b64[CODEC_B64_SIZE(SHA256_LEN)];
    size_t used = 0;
    if (out && out_size)
        out[0] = '\0';
    if (!g || g->failed || !out) {
        if (g)
            g->failed = true;
        return -1;
    }
    g->failed = true; /* a MAC is final once */
    for (size_t i = 0; i < g->n; i++) {
        size_t outl = 0;
        if (EVP_MAC_final(g->ctx[i], mac, &outl, sizeof mac) != 1 || outl != SHA256_LEN) {
            out[0] = '\0';
            return -1;
        }
        codec_b64_encode_buf(mac, SHA256_LEN, b64, sizeof b64);
        OPENSSL_cleanse(mac, sizeof mac);
        int n = snprintf(out + used, out_size - used, "%sv1,%s", i ? " " : "", b64);
        if (n < 0 || (size_t)n >= out_size - used) {
            out[0] = '\0';
            return -1;
        }
        used += (size_t)n;
    }
    return 0;
}

void webhook_signer_free(struct webhook_signer *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++)
        EVP_MAC_CTX_free(g->ctx[i]); /* clears the key schedule */
    EVP_MAC_free(g->mac);
    free(g);
}

static int sign_ts_text(const unsigned char *key, size_t key_len, const char *id,
                        const char *ts, const char *body, size_t body_len, char *out,
                        size_t out_size)
{
    struct webhook_key k = {key, key_len};
    struct webhook_signer *g = signer_open(&k, 1, id, ts);
    int r = g && webhook_signer_update(g, body, body_len) == 0 &&
                    webhook_signer_final(g, out, out_size) == 0
                ? 0
                : -1;
    webhook_signer_free(g);
    if (r < 0 && out && out_size)
        out[0] = '\0';
    return r;
}

int webhook_sign(const unsigned char *key, size_t key_len, const char *id, int64_t ts,
                 const char *body, size_t body_len, char *out, size_t out_size)
{
    char tsbuf[TS_DIGITS_MAX + 2];
    if (!out || out_size == 0)
        return -1;
    out[0] = '\0';
    if (!key || key_len == 0 || !id || (!body && body_len))
        return -1;
    int n = snprintf(tsbuf, sizeof tsbuf, "%lld", (long long)ts);
    if (n < 0 || (size_t)n >= sizeof tsbuf)
        return -1;
    return sign_ts_text(key, key_len, id, tsbuf, body ? body : "", body_len, out, out_size);
}

int webhook_verify(const unsigned char *key, size_t key_len, const char *id,
                   const char *timestamp, const char *body, size_t body_len,
                   const char *signatures, int64_t now, int64_t tolerance_s, struct err *e)
{
    char expect[WEBHOOK_SIG_SIZE];
    int64_t ts;

    if (!key || key_len == 0)
        return err_set(e, ERR_USAGE, "webhook verify: no key");
    if (!id || !*id)
        return err_set(e, ERR_PROTO, "missing webhook-id header");
    if (strlen(id) > WEBHOOK_ID_MAX)
        return err_set(e, ERR_PROTO, "webhook-id longer than %d bytes", WEBHOOK_ID_MAX);
    if (!timestamp || !*timestamp)
        return err_set(e, ERR_PROTO, "missing webhook-timestamp header");
    if (codec_int64_digits(timestamp, strlen(timestamp), &ts) < 0)
        return err_set(e, ERR_PROTO, "malformed webhook-timestamp header");
    if (!signatures || !*signatures)
        return err_set(e, ERR_PROTO, "missing webhook-signature header");
    if (strlen(signatures) > WEBHOOK_SIGNATURES_MAX)
        return err_set(e, ERR_PROTO, "webhook-signature longer than %d bytes",
                       WEBHOOK_SIGNATURES_MAX);
    if (!body && body_len)
        return err_set(e, ERR_USAGE, "webhook verify: no body");
    if (tolerance_s < 0)
        tolerance_s = 0;
    if (ts < now && now - ts > tolerance_s)
        return err_set(e, ERR_AUTH, "webhook-timestamp too old (%lld s)",
                       (long long)(now - ts));
    if (ts > now && ts - now > tolerance_s)
        return err_set(e, ERR_AUTH, "webhook-timestamp too new (%lld s ahead)",
                       (long long)(ts - now));
    if (sign_ts_text(key, key_len, id, timestamp, body ? body : "", body_len, expect,
                     sizeof expect) < 0)
        return err_set(e, ERR_INTERNAL, "webhook verify: HMAC failed");

    size_t elen = strlen(expect);
    bool match = false;
    const char *p = signatures;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *start = p;
        while (*p && *p != ' ')
            p++;
        size_t len = (size_t)(p - start);
        if (len == elen && CRYPTO_memcmp(start, expect, elen) == 0)
            match = true;
    }
    OPENSSL_cleanse(expect, sizeof expect);
    if (!match)
        return err_set(e, ERR_AUTH, "no matching webhook signature");
    return 0;
}

/* "msg_" + the first ID_HEX_DIGITS hex digits of SHA-256 over the parts,
 * each but the last followed by its NUL. */
static int id_of(const char *const *parts, size_t n, char *out, size_t out_size)
{
    unsigned char md[SHA256_LEN];
    unsigned int mdlen = 0;
    if (!out || out_size < WEBHOOK_ID_SIZE) {
        if (out && out_size)
            out[0] = '\0';
        return -1;
    }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!parts[i])
            return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + (i + 1 < n)) == 1;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == SHA256_LEN;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    memcpy(out, "msg_", 4);
    codec_hex_encode(md, ID_HEX_DIGITS / 2, out + 4);
    return 0;
}

int webhook_id(const char *account, const char *uidl, const char *webhook, char *out,
               size_t out_size)
{
    const char *parts[] = {account, uidl, webhook};
    return id_of(parts, 3, out, out_size);
}

int webhook_event_id(const char *event_key, const char *webhook, char *out, size_t out_size)
{
    const char *parts[] = {event_key, webhook};
    if (event_key && !*event_key) {
        if (out && out_size)
            out[0] = '\0';
        return -1;
    }
    return id_of(parts, 2, out, out_size);
}

/* ---- outcomes and retries ---------------------------------------------- */

enum webhook_outcome webhook_classify(const struct webhook_result *r)
{
    if (!r || r->aborted)
        return WEBHOOK_RETRY;
    if (r->err.kind != ERR_NONE)
        return r->err.kind == ERR_USAGE ? WEBHOOK_REJECTED : WEBHOOK_RETRY;
    int s = r->status;
    if (s >= 200 && s <= 299)
        return WEBHOOK_DELIVERED;
    if (s == 410)
        return WEBHOOK_DISABLED;
    if (s == 0 || s == 408 || s == 429 || (s >= 500 && s <= 599))
        return WEBHOOK_RETRY;
    return WEBHOOK_REJECTED; /* 1xx, 3xx, other 4xx, nonsense codes */
}

const char *webhook_outcome_name(enum webhook_outcome o)
{
    switch (o) {
    case WEBHOOK_DELIVERED:
        return "delivered";
    case WEBHOOK_DISABLED:
        return "disabled";
    case WEBHOOK_RETRY:
        return "retry";
    case WEBHOOK_REJECTED:
        return "rejected";
    }
    return "unknown";
}

/* xorshift64*, one state per thread, seeded from getrandom(). */
static double random_unit(void)
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
            seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&seed;
        state = seed ? seed : 0x9e3779b97f4a7c15ULL;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    uint64_t r = state * 0x2545f4914f6cdd1dULL;
    return (double)(r >> 11) * 0x1.0p-53; /* [0, 1) */
}

int64_t webhook_next_delay_ms(const int64_t *schedule_ms, size_t n, unsigned attempt,
                              int64_t retry_after_s, double jitter)
{
    if (!schedule_ms || attempt < 1 || attempt > n)
        return -1;
    int64_t base = schedule_ms[attempt - 1];
    if (base < 0)
        base = 0;
    if (!(jitter > 0)) /* also NaN */
        jitter = 0;
    if (jitter > 1)
        jitter = 1;
    double d = (double)base * (1.0 + jitter * (2.0 * random_unit() - 1.0));
    int64_t delay = d >= 9.0e18 ? INT64_MAX / 2 : (int64_t)llround(d);
    if (retry_after_s >= 0) {
        if (retry_after_s > WEBHOOK_RETRY_AFTER_MAX_S)
            retry_after_s = WEBHOOK_RETRY_AFTER_MAX_S;
        if (retry_after_s * 1000 > delay)
            delay = retry_after_s * 1000;
    }
    return delay;
}

int64_t webhook_parse_retry_after(const char *value, int64_t now)
{
    char buf[WEBHOOK_RETRY_AFTER_RAW_MAX];
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, value, len);
    buf[len] = '\0';

    if (buf[0] >= '0' && buf[0] <= '9') {
        int64_t v = 0;
        for (size_t i = 0; i < len; i++) {
            if (buf[i] < '0' || buf[i] > '9')
                return -1;
            if (v < WEBHOOK_RETRY_AFTER_MAX_S) /* stop growing once clamped: no overflow */
                v = v * 10 + (buf[i] - '0');
        }
        return v > WEBHOOK_RETRY_AFTER_MAX_S ? WEBHOOK_RETRY_AFTER_MAX_S : v;
    }
    /* every HTTP-date form starts with a day name */
    if (!((buf[0] >= 'A' && buf[0] <= 'Z') || (buf[0] >= 'a' && buf[0] <= 'z')))
        return -1;
    time_t t = curl_getdate(buf, NULL);
    if (t == (time_t)-1)
        return -1;
    int64_t delta = (int64_t)t - now;
    if (delta < 0)
        return 0;
    return delta > WEBHOOK_RETRY_AFTER_MAX_S ? WEBHOOK_RETRY_AFTER_MAX_S : delta;
}

/* ---- custom headers ---------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int webhook_header_check(const char *name, const char *value, struct err *e)
{
    static const char *const reserved[] = {
        "Content-Type", "Content-Length", "Transfer-Encoding", "Host",
        "User-Agent",   "Expect",         "Connection",
    };
    if (!name || !*name)
        return err_set(e, ERR_USAGE, "webhook header: empty name");
    size_t nlen = strlen(name);
    if (nlen > WEBHOOK_HEADER_NAME_MAX)
        return err_set(e, ERR_USAGE, "webhook header name longer than %d bytes",
                       WEBHOOK_HEADER_NAME_MAX);
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)name[i])) {
            char shown[WEBHOOK_HEADER_NAME_MAX + 4];
            err_sanitize(shown, sizeof shown, name, nlen);
            return err_set(e, ERR_USAGE,
                           "webhook header \"%s\": name has a character not allowed in a "
                           "header name at byte %zu",
                           shown, i + 1);
        }
    if (strncasecmp(name, "webhook-", 8) == 0)
        return err_set(e, ERR_USAGE, "webhook header \"%s\": webhook-* headers are set by the "
                                     "bridge", name);
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcasecmp(name, reserved[i]) == 0)
            return err_set(e, ERR_USAGE, "webhook header \"%s\": set by the bridge itself",
                           name);
    if (!value)
        return err_set(e, ERR_USAGE, "webhook header \"%s\": missing value", name);
    size_t vlen = strlen(value);
    if (vlen > WEBHOOK_HEADER_VALUE_MAX)
        return err_set(e, ERR_USAGE, "webhook header \"%s\": value longer than %d bytes", name,
                       WEBHOOK_HEADER_VALUE_MAX);
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return err_set(e, ERR_USAGE,
                           "webhook header \"%s\": value has a control character (%s) at "
                           "byte %zu",
                           name, c == '\r' ? "CR" : c == '\n' ? "LF" : "not allowed", i + 1);
    }
    return 0;
}
