/* secretbox — AES-256-GCM sealing of small secrets; see include/secretbox.h. */
#include "secretbox.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

#include "codec.h"

static const char key_id_label[] = "pop3bridge secretbox key id";

int secretbox_key_parse(const char *hex, size_t len, unsigned char key[SECRETBOX_KEY_LEN],
                        struct err *e)
{
    if (!hex || len != SECRETBOX_KEY_HEX)
        return err_set(e, ERR_USAGE,
                       "the secrets key must be %d hex digits (%d bytes, as `openssl rand -hex "
                       "32` prints them), not %zu characters",
                       SECRETBOX_KEY_HEX, SECRETBOX_KEY_LEN, hex ? len : (size_t)0);
    unsigned char tmp[SECRETBOX_KEY_LEN];
    for (size_t i = 0; i < SECRETBOX_KEY_LEN; i++) {
        int hi = codec_hex_value((unsigned char)hex[2 * i]);
        int lo = codec_hex_value((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(tmp, sizeof tmp);
            return err_set(e, ERR_USAGE,
                           "the secrets key must be %d hex digits; character %zu is not one",
                           SECRETBOX_KEY_HEX, 2 * i + (hi < 0 ? 1 : 2));
        }
        tmp[i] = (unsigned char)(hi << 4 | lo);
    }
    memcpy(key, tmp, sizeof tmp);
    OPENSSL_cleanse(tmp, sizeof tmp);
    return 0;
}

static void key_id_raw(const unsigned char key[SECRETBOX_KEY_LEN],
                       unsigned char out[SECRETBOX_KEY_ID_LEN])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, SECRETBOX_KEY_LEN, (const unsigned char *)key_id_label,
              sizeof key_id_label - 1, mac, &n) ||
        n < SECRETBOX_KEY_ID_LEN)
        memset(mac, 0, sizeof mac); /* cannot happen with a working libcrypto */
    memcpy(out, mac, SECRETBOX_KEY_ID_LEN);
    OPENSSL_cleanse(mac, sizeof mac);
}

void secretbox_key_id(const unsigned char key[SECRETBOX_KEY_LEN], char out[9])
{
    unsigned char id[SECRETBOX_KEY_ID_LEN];
    key_id_raw(key, id);
    codec_hex_encode(id, sizeof id, out);
}

/* Encrypt or decrypt with AES-256-GCM; 0 or -1 (for decryption: the tag
 * did not verify, or OpenSSL failed; *bad_tag tells which). */
static int gcm(bool enc, const unsigned char *key, const unsigned char *nonce, const void *aad,
               size_t aad_len, const unsigned char *in, size_t len, unsigned char *out,
               unsigned char *tag, bool *bad_tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, rc = -1;
    if (bad_tag)
        *bad_tag = false;
    if (!ctx)
        return -1;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SECRETBOX_NONCE_LEN, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, -1) != 1)
        goto out;
    if (aad_len && EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
        goto out;
    if (len && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SECRETBOX_TAG_LEN, tag) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1) {
        if (!enc && bad_tag)
            *bad_tag = true;
        goto out;
    }
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SECRETBOX_TAG_LEN, tag) != 1)
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int secretbox_seal(const unsigned char key[SECRETBOX_KEY_LEN], const void *aad, size_t aad_len,
                   const void *plain, size_t len, unsigned char *out, size_t out_size,
                   size_t *out_len, struct err *e)
{
    if (len > SECRETBOX_PLAIN_MAX)
        return err_set(e, ERR_LIMIT, "secretbox: %zu bytes to seal, over SECRETBOX_PLAIN_MAX (%d)",
                       len, SECRETBOX_PLAIN_MAX);
    if (aad_len > SECRETBOX_AAD_MAX)
        return err_set(e, ERR_LIMIT, "secretbox: associated data over SECRETBOX_AAD_MAX (%d)",
                       SECRETBOX_AAD_MAX);
    if (out_size < len + SECRETBOX_OVERHEAD)
        return err_set(e, ERR_LIMIT, "secretbox: output buffer of %zu bytes, %zu needed", out_size,
                       len + SECRETBOX_OVERHEAD);
    unsigned char *p = out;
    *p++ = SECRETBOX_VERSION;
    key_id_raw(key, p);
    p += SECRETBOX_KEY_ID_LEN;
    unsigned char *nonce = p;
    if (RAND_bytes(nonce, SECRETBOX_NONCE_LEN) != 1)
        return err_set(e, ERR_INTERNAL, "secretbox: no randomness for the nonce");
    p += SECRETBOX_NONCE_LEN;
    if (gcm(true, key, nonce, aad, aad_len, plain, len, p, p + len, NULL) < 0) {
        OPENSSL_cleanse(out, len + SECRETBOX_OVERHEAD);
        return err_set(e, ERR_INTERNAL, "secretbox: AES-256-GCM encryption failed");
    }
    *out_len = len + SECRETBOX_OVERHEAD;
    return 0;
}

int secretbox_key_matches(const unsigned char key[SECRETBOX_KEY_LEN], const unsigned char *sealed,
                          size_t len)
{
    if (!sealed || len < 1 + SECRETBOX_KEY_ID_LEN || sealed[0] != SECRETBOX_VERSION)
        return -1;
    unsigned char id[SECRETBOX_KEY_ID_LEN];
    key_id_raw(key, id);
    return CRYPTO_memcmp(id, sealed + 1, SECRETBOX_KEY_ID_LEN) == 0;
}

int secretbox_open(const unsigned char key[SECRETBOX_KEY_LEN], const void *aad, size_t aad_len,
                   const unsigned char *sealed, size_t len, unsigned char *out, size_t out_size,
                   size_t *out_len, struct err *e)
{
    if (!sealed || len < 1)
        return err_set(e, ERR_INTERNAL, "secretbox: the sealed value is empty");
    if (sealed[0] != SECRETBOX_VERSION)
        return err_set(e, ERR_INTERNAL, "secretbox: unknown sealed format version %u",
                       (unsigned)sealed[0]);
    if (len < SECRETBOX_OVERHEAD)
        return err_set(e, ERR_INTERNAL,
                       "secretbox: the sealed value is truncated (%zu bytes, at least %d needed)",
                       len, SECRETBOX_OVERHEAD);
    if (aad_len > SECRETBOX_AAD_MAX)
        return err_set(e, ERR_LIMIT, "secretbox: associated data over SECRETBOX_AAD_MAX (%d)",
                       SECRETBOX_AAD_MAX);
    size_t plen = len - SECRETBOX_OVERHEAD;
    if (out_size < plen + 1)
        return err_set(e, ERR_LIMIT, "secretbox: output buffer of %zu bytes, %zu needed", out_size,
                       plen + 1);
    if (secretbox_key_matches(key, sealed, len) != 1) {
        char mine[9], theirs[9];
        secretbox_key_id(key, mine);
        codec_hex_encode(sealed + 1, SECRETBOX_KEY_ID_LEN, theirs);
        err_set(e, ERR_USAGE,
                "sealed under a different secrets key (key id %s; the configured key's id is %s)",
                theirs, mine);
        return SECRETBOX_WRONG_KEY;
    }
    const unsigned char *nonce = sealed + 1 + SECRETBOX_KEY_ID_LEN;
    const unsigned char *ct = nonce + SECRETBOX_NONCE_LEN;
    unsigned char tag[SECRETBOX_TAG_LEN];
    memcpy(tag, ct + plen, sizeof tag);
    bool bad_tag = false;
    if (gcm(false, key, nonce, aad, aad_len, ct, plen, out, tag, &bad_tag) < 0) {
        OPENSSL_cleanse(out, plen + 1);
        return err_set(e, ERR_INTERNAL, "secretbox: %s",
                       bad_tag ? "the sealed value does not authenticate (damaged, tampered with, "
                                 "or moved from another place)"
                               : "AES-256-GCM decryption failed");
    }
    out[plen] = '\0';
    *out_len = plen;
    return 0;
}
