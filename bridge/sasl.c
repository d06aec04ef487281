/* sasl — client SASL mechanisms for POP3 AUTH, APOP, base64; see include/sasl.h.
 *
 * PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-* run inside libgsasl; we call
 * gsasl_step() on the raw bytes (our own strict base64 on both sides) rather
 * than gsasl_step64(), because gsasl_step64() frees the raw response — which
 * for PLAIN and LOGIN is the clear password — without wiping it.
 * XOAUTH2 and OAUTHBEARER are built here.  The state machine around both is
 * the same: START -> RUNNING -> DONE, or OAUTH_SENT -> DONE for the OAuth
 * mechanisms (one error report may follow the token), FAILED after any error.
 */
/* Hi() below uses OpenSSL's SHA1/SHA256 block functions (deprecated since
 * 3.0, still part of its API): through EVP, PKCS5_PBKDF2_HMAC takes 3 times
 * as long, libgsasl's own code 8 times (4096 iterations: 0.55 ms against
 * 1.8 ms and 4.5 ms here), at every SCRAM login whose salt is new. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "sasl.h"

#include "codec.h"

#include <cjson/cJSON.h>
#include <endian.h>
#include <gsasl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SASL_SERVICE "pop" /* GSASL_SERVICE: the GSSAPI service name of POP3 */
#define SASL_PORT_DIGITS 12
#define SCRAM_SALTED_HEX (2 * 32 + 1) /* hex of the longest salted password (SHA-256), NUL */

enum mech_id {
    MECH_PLAIN,
    MECH_LOGIN,
    MECH_CRAM_MD5,
    MECH_SCRAM_SHA_1,
    MECH_SCRAM_SHA_256,
    MECH_XOAUTH2,
    MECH_OAUTHBEARER,
};

enum cred_need { NEED_PASSWORD, NEED_TOKEN };

static const struct mech {
    const char *name;
    enum mech_id id;
    bool client_first;  /* sends an initial response */
    bool by_gsasl;      /* libgsasl implements it */
    bool takes_authzid; /* can carry an authorization identity */
    enum cred_need need;
} mechs[] = {
    {"PLAIN", MECH_PLAIN, true, true, true, NEED_PASSWORD},
    {"LOGIN", MECH_LOGIN, false, true, false, NEED_PASSWORD},
    {"CRAM-MD5", MECH_CRAM_MD5, false, true, false, NEED_PASSWORD},
    {"SCRAM-SHA-1", MECH_SCRAM_SHA_1, true, true, true, NEED_PASSWORD},
    {"SCRAM-SHA-256", MECH_SCRAM_SHA_256, true, true, true, NEED_PASSWORD},
    {"XOAUTH2", MECH_XOAUTH2, true, false, false, NEED_TOKEN},
    {"OAUTHBEARER", MECH_OAUTHBEARER, true, false, true, NEED_TOKEN},
};

enum sasl_state {
    ST_START,      /* nothing sent yet */
    ST_RUNNING,    /* responses sent, the mechanism expects more */
    ST_OAUTH_SENT, /* OAuth token sent; the server may still send an error report */
    ST_DONE,       /* the client has said everything */
    ST_FAILED,     /* an error ended the exchange */
};

struct sasl {
    const struct mech *m;
    enum sasl_state st;
    unsigned gsteps;    /* gsasl_step calls made */
    Gsasl_session *gs;  /* by_gsasl mechanisms */
    char *token;        /* OAuth: copy of the token, wiped */
    char *initial;      /* OAuth: the raw initial response, wiped */
    size_t initial_len;
    char *resp;         /* the last response, base64; wiped */
    char detail[SASL_DETAIL_MAX];
    /* SCRAM: SHA-256 of mechanism, user name and password (wiped), the
     * cache key of this exchange's salt and iteration count, and the salted
     * password libgsasl computed (hex, wiped) to remember once the server
     * has proved itself */
    unsigned char scram_cred[SASL_SCRAM_KEY_LEN];
    unsigned char scram_key[SASL_SCRAM_KEY_LEN];
    bool scram_keyed;
    bool scram_hit;
    char scram_salted[SCRAM_SALTED_HEX];
};

/* ---- process-wide libgsasl handle --------------------------------------- */

/* A mutex rather than pthread_once: sasl_global_cleanup() must be able to
 * release the handle and a later sasl_new() to create a fresh one. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static Gsasl *g_ctx;

static int gsasl_session_start(const char *mech, Gsasl_session **gs)
{
    int rc = GSASL_OK;
    pthread_mutex_lock(&g_lock);
    if (!g_ctx)
        rc = gsasl_init(&g_ctx);
    if (rc == GSASL_OK)
        rc = gsasl_client_start(g_ctx, mech, gs);
    else
        g_ctx = NULL;
    pthread_mutex_unlock(&g_lock);
    return rc;
}

void sasl_global_cleanup(void)
{
    sasl_scram_cache_clear();
    pthread_mutex_lock(&g_lock);
    if (g_ctx)
        gsasl_done(g_ctx);
    g_ctx = NULL;
    pthread_mutex_unlock(&g_lock);
}

/* ---- SCRAM salted passwords ----------------------------------------------
 *
 * Hi(password, salt, i) costs i HMACs (4096 by default): at every login of
 * every account the same work for the same inputs.  The result depends on
 * nothing else, so it is kept per (mechanism, user name, password, salt,
 * iteration count), under a SHA-256 of those, and handed to libgsasl as
 * GSASL_SCRAM_SALTED_PASSWORD, which it then uses instead of the password.
 * A value is remembered only after the server proved it knows the same
 * secret (server signature verified).  The cache holds at most
 * SASL_SCRAM_CACHE_MAX entries; the least recently used one is dropped (and
 * wiped) first. */

struct scram_ent {
    unsigned char key[SASL_SCRAM_KEY_LEN];
    char salted[SCRAM_SALTED_HEX]; /* hex, as libgsasl wants it */
    uint64_t used;                        /* g_scram_tick at the last use */
    int32_t next;                         /* the next entry of its bucket, -1 none */
};

/* Entries are found through SCRAM_BUCKETS chains by the key's first bytes
 * (the key is a SHA-256: evenly spread), not by comparing every entry:
 * against a server that makes a new salt at every login (a {PLAIN} passdb)
 * the cache fills up with entries never used again, and a scan of all of
 * them at each login cost more than a tenth of a poll. */
#define SCRAM_BUCKETS 8192 /* a power of 2, >= SASL_SCRAM_CACHE_MAX */

static pthread_mutex_t g_scram_lock = PTHREAD_MUTEX_INITIALIZER;
static struct scram_ent *g_scram;  /* SASL_SCRAM_CACHE_MAX entries, allocated on first put */
static int32_t *g_scram_bucket;    /* SCRAM_BUCKETS chain heads (-1: empty), with g_scram */
static size_t g_scram_n;
static uint64_t g_scram_tick;
static struct sasl_scram_stats g_scram_stats;

static size_t scram_bucket(const unsigned char key[SASL_SCRAM_KEY_LEN])
{
    return ((size_t)key[0] | (size_t)key[1] << 8 | (size_t)key[2] << 16) & (SCRAM_BUCKETS - 1);
}

static struct scram_ent *scram_find(const unsigned char key[SASL_SCRAM_KEY_LEN])
{
    if (!g_scram)
        return NULL;
    for (int32_t i = g_scram_bucket[scram_bucket(key)]; i >= 0; i = g_scram[i].next)
        if (CRYPTO_memcmp(g_scram[i].key, key, SASL_SCRAM_KEY_LEN) == 0)
            return &g_scram[i];
    return NULL;
}

/* Take entry ent (index i) out of its key's chain. */
static void scram_unlink(struct scram_ent *ent, int32_t i)
{
    int32_t *link = &g_scram_bucket[scram_bucket(ent->key)];
    while (*link >= 0 && *link != i)
        link = &g_scram[*link].next;
    if (*link == i)
        *link = ent->next;
    ent->next = -1;
}

/* Copy the cached salted password for key into out; whether there was one. */
static bool scram_get(const unsigned char key[SASL_SCRAM_KEY_LEN], char *out, size_t size)
{
    pthread_mutex_lock(&g_scram_lock);
    struct scram_ent *ent = scram_find(key);
    if (ent) {
        ent->used = ++g_scram_tick;
        snprintf(out, size, "%s", ent->salted);
        g_scram_stats.hits++;
    } else {
        g_scram_stats.misses++;
    }
    pthread_mutex_unlock(&g_scram_lock);
    return ent != NULL;
}

static void scram_put(const unsigned char key[SASL_SCRAM_KEY_LEN], const char *salted)
{
    if (strlen(salted) >= sizeof g_scram[0].salted)
        return;
    pthread_mutex_lock(&g_scram_lock);
    if (!g_scram) {
        g_scram = calloc(SASL_SCRAM_CACHE_MAX, sizeof *g_scram);
        g_scram_bucket = g_scram ? malloc(SCRAM_BUCKETS * sizeof *g_scram_bucket) : NULL;
        if (!g_scram_bucket) {
            free(g_scram);
            g_scram = NULL;
        } else {
            for (size_t b = 0; b < SCRAM_BUCKETS; b++)
                g_scram_bucket[b] = -1;
        }
    }
    struct scram_ent *ent = scram_find(key);
    if (g_scram && !ent) {
        if (g_scram_n < SASL_SCRAM_CACHE_MAX) {
            ent = &g_scram[g_scram_n++];
        } else {
            ent = &g_scram[0];
            for (size_t i = 1; i < g_scram_n; i++)
                if (g_scram[i].used < ent->used)
                    ent = &g_scram[i];
            scram_unlink(ent, (int32_t)(ent - g_scram));
            OPENSSL_cleanse(ent, sizeof *ent);
            g_scram_stats.evicted++;
        }
        memcpy(ent->key, key, SASL_SCRAM_KEY_LEN);
        size_t b = scram_bucket(key);
        ent->next = g_scram_bucket[b];
        g_scram_bucket[b] = (int32_t)(ent - g_scram);
    }
    if (ent) {
        snprintf(ent->salted, sizeof ent->salted, "%s", salted);
        ent->used = ++g_scram_tick;
    }
    pthread_mutex_unlock(&g_scram_lock);
}

void sasl_scram_cache_clear(void)
{
    pthread_mutex_lock(&g_scram_lock);
    if (g_scram) {
        OPENSSL_cleanse(g_scram, SASL_SCRAM_CACHE_MAX * sizeof *g_scram);
        free(g_scram);
    }
    free(g_scram_bucket);
    g_scram_bucket = NULL;
    g_scram = NULL;
    g_scram_n = 0;
    memset(&g_scram_stats, 0, sizeof g_scram_stats);
    pthread_mutex_unlock(&g_scram_lock);
}

struct sasl_scram_stats sasl_scram_cache_stats(void)
{
    pthread_mutex_lock(&g_scram_lock);
    struct sasl_scram_stats st = g_scram_stats;
    st.entries = g_scram_n;
    pthread_mutex_unlock(&g_scram_lock);
    return st;
}

/* SHA-256 over the parts, each followed by a NUL (so no two tuples collide). */
static bool scram_digest(unsigned char out[SASL_SCRAM_KEY_LEN], const void *const *parts,
                         const size_t *lens, size_t n)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(md, parts[i], lens[i]) && EVP_DigestUpdate(md, "", 1);
    unsigned len = 0;
    ok = ok && EVP_DigestFinal_ex(md, out, &len) && len == SASL_SCRAM_KEY_LEN;
    EVP_MD_CTX_free(md);
    return ok;
}

/* The value of attribute `name` ("s", "i") in a server-first message, or NULL. */
static const unsigned char *scram_attr(const unsigned char *in, size_t n, char name,
                                       size_t *len)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && in[j] != ',')
            j++;
        if (j - i >= 2 && in[i] == (unsigned char)name && in[i + 1] == '=') {
            *len = j - i - 2;
            return in + i + 2;
        }
        i = j + 1;
    }
    return NULL;
}

/* Hi(str, salt, i) of RFC 5802 §2.2 (PBKDF2 with HMAC-H, one block) for
 * H = SHA-1 (sha256 false) or SHA-256, into out (20 or 32 bytes).  The HMAC
 * keys' inner and outer states are computed once and copied per iteration;
 * THEN runs before they are wiped (SHA-256 finishes the iterations in it). */
#define SCRAM_HI_KEEP(CTX, INIT, UPDATE, FINAL, DIGEST, LEN, THEN)                          \
    do {                                                                                     \
        unsigned char k[64] = {0}, pad[64], u[LEN];                                          \
        CTX ic, oc, c;                                                                       \
        if (pl > sizeof k)                                                                   \
            DIGEST(pw, pl, k);                                                               \
        else                                                                                 \
            memcpy(k, pw, pl);                                                               \
        for (size_t x = 0; x < sizeof pad; x++)                                              \
            pad[x] = k[x] ^ 0x36;                                                            \
        INIT(&ic);                                                                           \
        UPDATE(&ic, pad, sizeof pad);                                                        \
        for (size_t x = 0; x < sizeof pad; x++)                                              \
            pad[x] = k[x] ^ 0x5c;                                                            \
        INIT(&oc);                                                                           \
        UPDATE(&oc, pad, sizeof pad);                                                        \
        c = ic;                                                                              \
        UPDATE(&c, salt, sl);                                                                \
        UPDATE(&c, "\0\0\0\1", 4);                                                            \
        FINAL(u, &c);                                                                        \
        c = oc;                                                                              \
        UPDATE(&c, u, LEN);                                                                  \
        FINAL(u, &c);                                                                        \
        memcpy(out, u, LEN);                                                                 \
        for (unsigned long j = 1; j < iter; j++) {                                           \
            c = ic;                                                                          \
            UPDATE(&c, u, LEN);                                                              \
            FINAL(u, &c);                                                                    \
            c = oc;                                                                          \
            UPDATE(&c, u, LEN);                                                              \
            FINAL(u, &c);                                                                    \
            for (size_t x = 0; x < LEN; x++)                                                 \
                out[x] ^= u[x];                                                              \
        }                                                                                    \
        THEN;                                                                                \
        OPENSSL_cleanse(k, sizeof k);                                                        \
        OPENSSL_cleanse(pad, sizeof pad);                                                    \
        OPENSSL_cleanse(u, sizeof u);                                                        \
        OPENSSL_cleanse(&ic, sizeof ic);                                                     \
        OPENSSL_cleanse(&oc, sizeof oc);                                                     \
        OPENSSL_cleanse(&c, sizeof c);                                                       \
    } while (0)
#define SCRAM_HI(CTX, INIT, UPDATE, FINAL, DIGEST, LEN) \
    SCRAM_HI_KEEP(CTX, INIT, UPDATE, FINAL, DIGEST, LEN, (void)0)

/* The SHA-256 state words into a big-endian digest at out. */
static void sha256_state_out(const SHA256_CTX *c, unsigned char *out)
{
    /* one byte-swapped word store each (it runs twice per iteration: a
     * shift per octet was about a tenth of the whole Hi()) */
    for (size_t x = 0; x < 8; x++) {
        uint32_t w = htobe32((uint32_t)c->h[x]);
        memcpy(out + 4 * x, &w, sizeof w);
    }
}

/* Iterations 2..iter of Hi() with HMAC-SHA-256 (ic, oc: the states after
 * the inner and outer key blocks; u: U1; out holds U1).  Every later HMAC
 * input is one 32-octet digest, so each hash is exactly one more block,
 * padded the same way every time: the block is built once, the digest is
 * written into its first half, and SHA256_Transform runs on it directly
 * (no per-hash padding, copying or wiping of a whole context as
 * SHA256_Update/SHA256_Final do), two block operations per iteration. */
static void scram_hi256_rest(const SHA256_CTX *ic, const SHA256_CTX *oc,
                             const unsigned char u[SHA256_DIGEST_LENGTH], unsigned long iter,
                             unsigned char *out)
{
    unsigned char block[SHA256_CBLOCK];
    memset(block, 0, sizeof block);
    memcpy(block, u, SHA256_DIGEST_LENGTH);
    block[SHA256_DIGEST_LENGTH] = 0x80;
    /* length in bits of key block + digest: (64 + 32) * 8 = 768 = 0x0300 */
    block[SHA256_CBLOCK - 2] = 0x03;
    SHA256_CTX c = *ic;
    for (unsigned long j = 1; j < iter; j++) {
        memcpy(c.h, ic->h, sizeof c.h);
        SHA256_Transform(&c, block);
        sha256_state_out(&c, block);
        memcpy(c.h, oc->h, sizeof c.h);
        SHA256_Transform(&c, block);
        sha256_state_out(&c, block);
        for (size_t x = 0; x < SHA256_DIGEST_LENGTH; x++)
            out[x] ^= block[x];
    }
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(&c, sizeof c);
}

size_t sasl_scram_hi(bool sha256, const char *pw_in, size_t pl, const unsigned char *salt,
                     size_t sl, unsigned long iter, unsigned char *out)
{
    const unsigned char *pw = (const unsigned char *)pw_in;
    if (iter == 0)
        return 0;
    if (sha256) {
        unsigned long all = iter;
        iter = 1; /* U1 with the generic code, the rest block by block */
        SCRAM_HI_KEEP(SHA256_CTX, SHA256_Init, SHA256_Update, SHA256_Final, SHA256,
                      SHA256_DIGEST_LENGTH, scram_hi256_rest(&ic, &oc, u, all, out));
        return SHA256_DIGEST_LENGTH;
    }
    SCRAM_HI(SHA_CTX, SHA1_Init, SHA1_Update, SHA1_Final, SHA1, SHA_DIGEST_LENGTH);
    return SHA_DIGEST_LENGTH;
}

/* The salted password for this exchange, hex, into out; false if it cannot
 * be computed here (libgsasl then does it from the password). */
static bool scram_compute(struct sasl *s, const unsigned char *salt64, size_t sl,
                          const unsigned char *iter, size_t il, char *out)
{
    unsigned long it = 0;
    for (size_t k = 0; k < il; k++) {
        if (iter[k] < '0' || iter[k] > '9' || it > SASL_SCRAM_ITER_MAX)
            return false;
        it = it * 10 + (unsigned long)(iter[k] - '0');
    }
    if (it == 0 || it > SASL_SCRAM_ITER_MAX)
        return false;
    const char *pw = gsasl_property_fast(s->gs, GSASL_PASSWORD);
    unsigned char *salt = NULL;
    size_t saltlen = 0;
    if (!pw || codec_b64_decode_alloc((const char *)salt64, sl, &salt, &saltlen) != 0)
        return false;
    /* the same SASLprep libgsasl applies before Hi() */
    char *prep = NULL;
    bool ok = gsasl_saslprep(pw, GSASL_ALLOW_UNASSIGNED, &prep, NULL) == GSASL_OK && prep;
    unsigned char md[SHA256_DIGEST_LENGTH];
    size_t n = 0;
    if (ok)
        n = sasl_scram_hi(s->m->id == MECH_SCRAM_SHA_256, prep, strlen(prep), salt, saltlen, it,
                          md);
    if (n > 0)
        codec_hex_encode(md, n, out);
    OPENSSL_cleanse(md, sizeof md);
    if (prep) {
        OPENSSL_cleanse(prep, strlen(prep));
        gsasl_free(prep);
    }
    free(salt);
    return n > 0;
}

/* Before libgsasl reads server-first: key the exchange, and hand libgsasl the
 * salted password, remembered or computed here. */
static void scram_before_first(struct sasl *s, const unsigned char *in, size_t n)
{
    size_t sl = 0, il = 0;
    const unsigned char *salt = scram_attr(in, n, 's', &sl);
    const unsigned char *iter = scram_attr(in, n, 'i', &il);
    if (!salt || !iter || sl == 0 || il == 0)
        return;
    const void *parts[] = {s->scram_cred, salt, iter};
    const size_t lens[] = {sizeof s->scram_cred, sl, il};
    if (!scram_digest(s->scram_key, parts, lens, 3)) {
        ERR_clear_error();
        return;
    }
    s->scram_keyed = true;
    char salted[sizeof s->scram_salted];
    if (scram_get(s->scram_key, salted, sizeof salted)) {
        s->scram_hit = gsasl_property_set(s->gs, GSASL_SCRAM_SALTED_PASSWORD, salted) == GSASL_OK;
    } else if (scram_compute(s, salt, sl, iter, il, salted) &&
               gsasl_property_set(s->gs, GSASL_SCRAM_SALTED_PASSWORD, salted) == GSASL_OK) {
        memcpy(s->scram_salted, salted, sizeof salted);
    }
    OPENSSL_cleanse(salted, sizeof salted);
}

/* After libgsasl processed server-first: keep what it used. */
static void scram_after_first(struct sasl *s)
{
    if (!s->scram_keyed || s->scram_hit || s->scram_salted[0])
        return;
    const char *p = gsasl_property_fast(s->gs, GSASL_SCRAM_SALTED_PASSWORD);
    if (p && strlen(p) < sizeof s->scram_salted)
        snprintf(s->scram_salted, sizeof s->scram_salted, "%s", p);
}

/* ---- small helpers ------------------------------------------------------- */

static void wipe_free_n(void *p, size_t n)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, n);
    free(p);
}

static void wipe_free(char *p)
{
    if (p)
        wipe_free_n(p, strlen(p));
}

static const struct mech *mech_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof mechs / sizeof mechs[0]; i++)
        if (strcasecmp(name, mechs[i].name) == 0)
            return &mechs[i];
    return NULL;
}

static bool mech_is_scram(const struct mech *m)
{
    return m->id == MECH_SCRAM_SHA_1 || m->id == MECH_SCRAM_SHA_256;
}

bool sasl_mech_client_first(const char *mech)
{
    const struct mech *m = mech_find(mech);
    return m && m->client_first;
}

bool sasl_mech_supported(const char *mech)
{
    return mech_find(mech) != NULL;
}

const char *sasl_mech_name(const struct sasl *s)
{
    return s ? s->m->name : "";
}

const char *sasl_error_detail(const struct sasl *s)
{
    return s ? s->detail : "";
}


/* ---- credentials ------------------------------------------------------------ */


static bool has_control(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || (unsigned char)*v == 0x7f)
            return true;
    return false;
}

/* A field's length and bytes.  what names the field, never its value. */
static int check_field(const struct mech *m, const char *what, const char *v, bool no_ctl,
                       struct err *e)
{
    if (!v)
        return 0;
    if (strnlen(v, SASL_CRED_MAX + 1) > SASL_CRED_MAX)
        return err_set(e, ERR_USAGE, "%s: the %s is longer than %d bytes (SASL_CRED_MAX)",
                       m->name, what, SASL_CRED_MAX);
    if (no_ctl && has_control(v))
        return err_set(e, ERR_USAGE, "%s: the %s contains a control character", m->name, what);
    return 0;
}

static int check_creds(const struct mech *m, const struct sasl_creds *c, struct err *e)
{
    bool oauth = !m->by_gsasl;
    if (!c->username || !c->username[0])
        return err_set(e, ERR_USAGE, "%s needs a user name", m->name);
    if (m->need == NEED_PASSWORD && !c->password)
        return err_set(e, ERR_USAGE, "%s needs a password", m->name);
    if (m->need == NEED_TOKEN && (!c->oauth2_token || !c->oauth2_token[0]))
        return err_set(e, ERR_USAGE, "%s needs an OAuth 2.0 access token", m->name);
    if (c->authzid && c->authzid[0] && !m->takes_authzid)
        return err_set(e, ERR_USAGE, "%s cannot carry an authorization identity (authzid)",
                       m->name);
    if (check_field(m, "user name", c->username, oauth, e) < 0 ||
        check_field(m, "password", c->password, false, e) < 0 ||
        check_field(m, "authorization identity", c->authzid, oauth, e) < 0 ||
        check_field(m, "host name", c->host, true, e) < 0)
        return -1;
    if (m->need == NEED_TOKEN) {
        if (strnlen(c->oauth2_token, SASL_TOKEN_MAX + 1) > SASL_TOKEN_MAX)
            return err_set(e, ERR_USAGE,
                           "%s: the access token is longer than %d bytes (SASL_TOKEN_MAX)",
                           m->name, SASL_TOKEN_MAX);
        if (!codec_is_b64token(c->oauth2_token))
            return err_set(e, ERR_USAGE,
                           "%s: the access token is not a bearer token (RFC 6750 b64token)",
                           m->name);
    }
    return 0;
}

/* ---- session setup ------------------------------------------------------------ */

static int start_gsasl(struct sasl *s, const struct sasl_creds *c, struct err *e)
{
    int rc = gsasl_session_start(s->m->name, &s->gs);
    if (rc != GSASL_OK) {
        s->gs = NULL;
        return err_set(e, ERR_INTERNAL, "%s: libgsasl could not start the mechanism (%s)",
                       s->m->name, gsasl_strerror_name(rc));
    }
    const struct {
        Gsasl_property prop;
        const char *value;
    } props[] = {
        {GSASL_AUTHID, c->username},
        {GSASL_PASSWORD, c->password},
        {GSASL_AUTHZID, c->authzid && c->authzid[0] ? c->authzid : NULL},
        {GSASL_SERVICE, SASL_SERVICE},
        {GSASL_HOSTNAME, c->host && c->host[0] ? c->host : NULL},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
        if (!props[i].value)
            continue;
        rc = gsasl_property_set(s->gs, props[i].prop, props[i].value);
        if (rc != GSASL_OK)
            return err_set(e, ERR_INTERNAL, "%s: libgsasl could not store a property (%s)",
                           s->m->name, gsasl_strerror_name(rc));
    }
    if (mech_is_scram(s->m)) {
        const void *parts[] = {s->m->name, c->username, c->password};
        const size_t lens[] = {strlen(s->m->name), strlen(c->username), strlen(c->password)};
        if (!scram_digest(s->scram_cred, parts, lens, 3))
            return err_set(e, ERR_INTERNAL, "%s: cannot hash the credentials", s->m->name);
    }
    return 0;
}

/* An appending writer into a buffer sized in advance. */
struct wbuf {
    char *p;
    size_t len, cap;
};

static void w_put(struct wbuf *w, const char *data, size_t n)
{
    if (w->len + n <= w->cap) {
        memcpy(w->p + w->len, data, n);
        w->len += n;
    } else {
        w->len = w->cap + 1; /* marks overflow; checked once at the end */
    }
}

static void w_str(struct wbuf *w, const char *str)
{
    w_put(w, str, strlen(str));
}

/* RFC 5801 saslname: ',' -> "=2C", '=' -> "=3D". */
static void w_saslname(struct wbuf *w, const char *v)
{
    for (; *v; v++) {
        if (*v == ',')
            w_str(w, "=2C");
        else if (*v == '=')
            w_str(w, "=3D");
        else
            w_put(w, v, 1);
    }
}

/* XOAUTH2:     user=<user>^Aauth=Bearer <token>^A^A
 * OAUTHBEARER: n,a=<saslname>,^Ahost=<host>^Aport=<port>^Aauth=Bearer <token>^A^A
 *              (RFC 7628 §3.1; host and port left out when unknown) */
static int start_oauth(struct sasl *s, const struct sasl_creds *c, struct err *e)
{
    const char *who = c->authzid && c->authzid[0] ? c->authzid : c->username;
    size_t cap = 64 + 3 * strlen(who) + strlen(c->username) + strlen(c->oauth2_token) +
                 (c->host ? strlen(c->host) : 0) + SASL_PORT_DIGITS;
    s->token = strdup(c->oauth2_token);
    struct wbuf w = {malloc(cap), 0, cap};
    if (!s->token || !w.p) {
        free(w.p);
        return err_set(e, ERR_INTERNAL, "%s: out of memory", s->m->name);
    }
    if (s->m->id == MECH_XOAUTH2) {
        w_str(&w, "user=");
        w_str(&w, c->username);
        w_str(&w, "\001");
    } else {
        w_str(&w, "n,a=");
        w_saslname(&w, who);
        w_str(&w, ",\001");
        if (c->host && c->host[0]) {
            w_str(&w, "host=");
            w_str(&w, c->host);
            w_str(&w, "\001");
        }
        if (c->port) {
            char port[SASL_PORT_DIGITS];
            int n = snprintf(port, sizeof port, "%u", c->port);
            if (n < 0 || (size_t)n >= sizeof port) {
                wipe_free_n(w.p, cap);
                return err_set(e, ERR_INTERNAL, "%s: port number does not fit", s->m->name);
            }
            w_str(&w, "port=");
            w_str(&w, port);
            w_str(&w, "\001");
        }
    }
    w_str(&w, "auth=Bearer ");
    w_str(&w, c->oauth2_token);
    w_str(&w, "\001\001");
    if (w.len > w.cap) {
        wipe_free_n(w.p, cap);
        return err_set(e, ERR_INTERNAL, "%s: initial response larger than computed", s->m->name);
    }
    s->initial = w.p;
    s->initial_len = w.len;
    return 0;
}

struct sasl *sasl_new(const char *mech, const struct sasl_creds *c, struct err *e)
{
    const struct mech *m = mech_find(mech);
    if (!m) {
        char name[GSASL_MAX_MECHANISM_SIZE + 8];
        err_sanitize(name, sizeof name, mech ? mech : "(null)", mech ? strlen(mech) : 6);
        err_set(e, ERR_USAGE, "unknown SASL mechanism \"%s\"", name);
        return NULL;
    }
    if (!c) {
        err_set(e, ERR_USAGE, "%s: no credentials given", m->name);
        return NULL;
    }
    if (check_creds(m, c, e) < 0)
        return NULL;
    struct sasl *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, ERR_INTERNAL, "%s: out of memory", m->name);
        return NULL;
    }
    s->m = m;
    s->st = ST_START;
    if ((m->by_gsasl ? start_gsasl(s, c, e) : start_oauth(s, c, e)) < 0) {
        sasl_free(&s);
        return NULL;
    }
    return s;
}

void sasl_free(struct sasl **sp)
{
    if (!sp || !*sp)
        return;
    struct sasl *s = *sp;
    if (s->gs) {
        /* libgsasl frees its property copies without wiping them: wipe the
         * secret ones in place first (the memory is the session's own). */
        const Gsasl_property secret[] = {GSASL_PASSWORD, GSASL_SCRAM_SALTED_PASSWORD};
        for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++) {
            const char *p = gsasl_property_fast(s->gs, secret[i]);
            if (p)
                OPENSSL_cleanse((void *)(uintptr_t)p, strlen(p));
        }
        gsasl_finish(s->gs);
    }
    wipe_free(s->token);
    wipe_free_n(s->initial, s->initial_len);
    wipe_free(s->resp);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
    *sp = NULL;
}

/* ---- stepping ------------------------------------------------------------------- */

/* Keep our base64 of raw (n bytes) as the response. */
static int set_resp(struct sasl *s, const void *raw, size_t n, struct err *e)
{
    s->resp = codec_b64_encode(raw, n);
    if (!s->resp)
        return err_set(e, ERR_INTERNAL, "%s: out of memory", s->m->name);
    return 0;
}

/* SCRAM server-first (RFC 5802 §7): refuse an iteration count above our cap
 * before libgsasl spends the time on it.  Other checks are libgsasl's. */
static int scram_check_iter(const struct sasl *s, const unsigned char *in, size_t n,
                            struct err *e)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && in[j] != ',')
            j++;
        if (j - i >= 2 && in[i] == 'i' && in[i + 1] == '=') {
            if (j - i == 2)
                return err_set(e, ERR_PROTO, "%s: empty iteration count in server-first message",
                               s->m->name);
            unsigned long v = 0;
            for (size_t k = i + 2; k < j; k++) {
                if (in[k] < '0' || in[k] > '9')
                    return err_set(e, ERR_PROTO,
                                   "%s: iteration count in server-first message is not a number",
                                   s->m->name);
                v = v * 10 + (unsigned long)(in[k] - '0');
                if (v > SASL_SCRAM_ITER_MAX)
                    return err_set(e, ERR_LIMIT,
                                   "%s: server asks for more than %d iterations "
                                   "(SASL_SCRAM_ITER_MAX)",
                                   s->m->name, SASL_SCRAM_ITER_MAX);
            }
            return 0;
        }
        i = j + 1;
    }
    return 0;
}

static int gsasl_fail(struct sasl *s, int rc, struct err *e)
{
    const char *n = s->m->name;
    switch (rc) {
    case GSASL_AUTHENTICATION_ERROR:
        if (mech_is_scram(s->m) && s->gsteps == 2)
            return err_set(e, ERR_AUTH, "%s: server nonce does not extend the client nonce", n);
        if (mech_is_scram(s->m) && s->gsteps == 3)
            return err_set(e, ERR_AUTH,
                           "%s: server signature did not verify (the server is not who it "
                           "claims to be)",
                           n);
        return err_set(e, ERR_AUTH, "%s: authentication failed in the client (step %u)", n,
                       s->gsteps);
    case GSASL_MECHANISM_PARSE_ERROR:
        return err_set(e, ERR_PROTO, "%s: malformed server challenge (step %u)", n, s->gsteps);
    case GSASL_BASE64_ERROR:
        return err_set(e, ERR_PROTO, "%s: invalid base64 inside the server challenge", n);
    case GSASL_MECHANISM_CALLED_TOO_MANY_TIMES:
        return err_set(e, ERR_PROTO, "%s: unexpected challenge after the last step", n);
    case GSASL_SASLPREP_ERROR:
        return err_set(e, ERR_USAGE,
                       "%s: the user name or password is not valid for SASLprep (RFC 4013)", n);
    case GSASL_NO_AUTHID:
    case GSASL_NO_PASSWORD:
    case GSASL_NO_AUTHZID:
        return err_set(e, ERR_USAGE, "%s: a credential is missing (%s)", n,
                       gsasl_strerror_name(rc));
    case GSASL_MALLOC_ERROR:
        return err_set(e, ERR_INTERNAL, "%s: out of memory", n);
    default:
        return err_set(e, ERR_INTERNAL, "%s: libgsasl failed (%s)", n, gsasl_strerror_name(rc));
    }
}

static int step_gsasl(struct sasl *s, const unsigned char *in, size_t n, struct err *e)
{
    const char *name = s->m->name;
    if (s->m->id == MECH_CRAM_MD5 && n == 0)
        return err_set(e, ERR_PROTO, "%s: empty server challenge", name);
    if (mech_is_scram(s->m) && s->gsteps == 1 && scram_check_iter(s, in, n, e) < 0)
        return -1;
    if (mech_is_scram(s->m) && s->gsteps == 2 && n >= 2 && in[0] == 'e' && in[1] == '=') {
        err_set(e, ERR_AUTH, "%s: server-final message reports an error", name);
        err_set_server(e, (const char *)in + 2, n - 2); /* sanitised there */
        return -1;
    }
    bool first = mech_is_scram(s->m) && s->gsteps == 1;
    if (first)
        scram_before_first(s, in, n);
    char *out = NULL;
    size_t out_len = 0;
    int rc = gsasl_step(s->gs, (const char *)in, n, &out, &out_len);
    s->gsteps++;
    if (rc != GSASL_OK && rc != GSASL_NEEDS_MORE)
        return gsasl_fail(s, rc, e); /* out's contents are unspecified: not touched */
    if (first)
        scram_after_first(s);
    else if (mech_is_scram(s->m) && rc == GSASL_OK && s->scram_salted[0])
        scram_put(s->scram_key, s->scram_salted); /* the server proved itself */
    int r = set_resp(s, out ? out : "", out ? out_len : 0, e);
    wipe_free_n(out, out_len);
    if (r < 0)
        return -1;
    s->st = rc == GSASL_OK ? ST_DONE : ST_RUNNING;
    return rc == GSASL_OK ? SASL_DONE : SASL_MORE;
}

/* The OAuth error report: keep "status=.. scope=.." or the sanitised text. */
static void oauth_keep_detail(struct sasl *s, const unsigned char *in, size_t n)
{
    if (n == 0) {
        snprintf(s->detail, sizeof s->detail, "%s", "empty error report");
        return;
    }
    if (s->token && memmem(in, n, s->token, strlen(s->token))) {
        snprintf(s->detail, sizeof s->detail, "%s",
                 "error report withheld: it contains the access token");
        return;
    }
    char raw[SASL_DETAIL_MAX * 2];
    size_t raw_len = 0;
    cJSON *j = cJSON_ParseWithLength((const char *)in, n);
    cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
    cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "scope");
    if (cJSON_IsObject(j) && (cJSON_IsString(st) || cJSON_IsNumber(st))) {
        char num[32];
        const char *status = cJSON_GetStringValue(st);
        if (!status) {
            int k = snprintf(num, sizeof num, "%.0f", cJSON_GetNumberValue(st));
            status = k > 0 && (size_t)k < sizeof num ? num : "?";
        }
        const char *scope = cJSON_GetStringValue(sc);
        int k = snprintf(raw, sizeof raw, "status=%s%s%s", status, scope ? " scope=" : "",
                         scope ? scope : "");
        /* raw holds more than detail can: a cut shows as "..." either way */
        raw_len = k < 0 ? 0 : (size_t)k < sizeof raw ? (size_t)k : sizeof raw - 1;
        err_sanitize(s->detail, sizeof s->detail, raw, raw_len);
    } else {
        err_sanitize(s->detail, sizeof s->detail, (const char *)in, n);
    }
    cJSON_Delete(j);
}

static int step_oauth(struct sasl *s, const unsigned char *in, size_t n, struct err *e)
{
    if (s->st == ST_START) {
        if (set_resp(s, s->initial, s->initial_len, e) < 0)
            return -1;
        s->st = ST_OAUTH_SENT;
        return SASL_DONE;
    }
    /* ST_OAUTH_SENT: the challenge is the server's error report */
    oauth_keep_detail(s, in, n);
    int r = s->m->id == MECH_OAUTHBEARER ? set_resp(s, "\001", 1, e) : set_resp(s, "", 0, e);
    if (r < 0)
        return -1;
    s->st = ST_DONE;
    return SASL_DONE;
}

static int step_checked(struct sasl *s, const char *challenge_b64, struct err *e)
{
    const char *name = s->m->name;
    switch (s->st) {
    case ST_FAILED:
        return err_set(e, ERR_USAGE, "%s: the exchange already failed", name);
    case ST_DONE:
        return err_set(e, ERR_PROTO, "%s: server sent a challenge after the exchange completed",
                       name);
    case ST_START:
        if (!challenge_b64 && !s->m->client_first)
            return err_set(e, ERR_USAGE,
                           "%s has no initial response: pass the server's first challenge",
                           name);
        break;
    case ST_RUNNING:
    case ST_OAUTH_SENT:
        if (!challenge_b64)
            return err_set(e, ERR_USAGE, "%s: a challenge is needed after the first step",
                           name);
        break;
    }
    unsigned char *in = NULL;
    size_t n = 0;
    if (challenge_b64) {
        size_t len = strnlen(challenge_b64, SASL_CHALLENGE_MAX + 1);
        if (len > SASL_CHALLENGE_MAX)
            return err_set(e, ERR_LIMIT,
                           "%s: server challenge longer than %d characters (SASL_CHALLENGE_MAX)",
                           name, SASL_CHALLENGE_MAX);
        int rc = codec_b64_decode_alloc(challenge_b64, len, &in, &n);
        if (rc == -2)
            return err_set(e, ERR_INTERNAL, "%s: out of memory", name);
        if (rc < 0)
            return err_set(e, ERR_PROTO, "%s: server challenge is not valid base64", name);
    }
    int r;
    if (s->st == ST_START && s->m->client_first && n > 0)
        r = err_set(e, ERR_PROTO, "%s: non-empty server challenge before the initial response",
                    name);
    else
        r = s->m->by_gsasl ? step_gsasl(s, in, n, e) : step_oauth(s, in, n, e);
    free(in);
    return r;
}

int sasl_step(struct sasl *s, const char *challenge_b64, char **resp_b64, struct err *e)
{
    if (resp_b64)
        *resp_b64 = NULL;
    if (!s || !resp_b64)
        return err_set(e, ERR_USAGE, "sasl_step: NULL exchange or result pointer");
    wipe_free(s->resp);
    s->resp = NULL;
    int r = step_checked(s, challenge_b64, e);
    if (r < 0) {
        s->st = ST_FAILED;
        return -1;
    }
    *resp_b64 = s->resp;
    return r;
}

/* ---- APOP (RFC 1939 §7) ------------------------------------------------------------ */

int sasl_apop_digest(const char *ts, size_t ts_len, const char *password, char out[33],
                     struct err *e)
{
    if (!out)
        return err_set(e, ERR_USAGE, "APOP: no output buffer");
    out[0] = '\0';
    if (!password)
        return err_set(e, ERR_USAGE, "APOP needs a password");
    if (strnlen(password, SASL_CRED_MAX + 1) > SASL_CRED_MAX)
        return err_set(e, ERR_USAGE, "APOP: the password is longer than %d bytes (SASL_CRED_MAX)",
                       SASL_CRED_MAX);
    if (!ts || ts_len < 3)
        return err_set(e, ERR_PROTO, "APOP: timestamp missing or shorter than \"<x>\"");
    if (ts_len > SASL_APOP_TS_MAX)
        return err_set(e, ERR_PROTO,
                       "APOP: timestamp of %zu bytes is longer than %d (SASL_APOP_TS_MAX)", ts_len,
                       SASL_APOP_TS_MAX);
    if (ts[0] != '<' || ts[ts_len - 1] != '>')
        return err_set(e, ERR_PROTO, "APOP: timestamp is not enclosed in <>");
    for (size_t i = 1; i + 1 < ts_len; i++) {
        unsigned char c = (unsigned char)ts[i];
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>')
            return err_set(e, ERR_PROTO,
                           "APOP: timestamp byte %zu is not printable ASCII without spaces", i);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const EVP_MD *md5 = EVP_md5();
    bool ok = ctx && md5 && EVP_DigestInit_ex(ctx, md5, NULL) == 1 &&
              EVP_DigestUpdate(ctx, ts, ts_len) == 1 &&
              EVP_DigestUpdate(ctx, password, strlen(password)) == 1 &&
              EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(md, sizeof md);
        return err_set(e, ERR_INTERNAL, "APOP: MD5 is not available from OpenSSL");
    }
    codec_hex_encode(md, 16, out);
    OPENSSL_cleanse(md, sizeof md);
    return 0;
}
