/* Unit tests: sealing secrets at rest (include/secretbox.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "secretbox.h"

#define KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define OTHER_HEX "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define AAD "acct\0access"
#define AAD_LEN (sizeof AAD - 1)

static void key(const char *hex, unsigned char *k)
{
    struct err e;
    assert_int_equal(secretbox_key_parse(hex, strlen(hex), k, &e), 0);
}

static void key_parsing(void **state)
{
    (void)state;
    unsigned char k[SECRETBOX_KEY_LEN];
    struct err e;
    key(KEY_HEX, k);
    for (int i = 0; i < SECRETBOX_KEY_LEN; i++)
        assert_int_equal(k[i], i);
    key("FFEEDDCCBBAA99887766554433221100ffeeddccbbaa99887766554433221100", k);
    assert_int_equal(k[0], 0xff);
    assert_int_equal(k[31], 0x00);
    /* wrong length: says the length, not the characters */
    assert_int_equal(secretbox_key_parse("abcd", 4, k, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_non_null(strstr(e.msg, "64 hex digits"));
    assert_non_null(strstr(e.msg, "not 4 characters"));
    assert_null(strstr(e.msg, "abcd"));
    char bad[] = KEY_HEX;
    bad[17] = 'g';
    assert_int_equal(secretbox_key_parse(bad, 64, k, &e), -1);
    assert_non_null(strstr(e.msg, "character 18 is not one"));
    assert_int_equal(secretbox_key_parse(NULL, 0, k, &e), -1);
    /* the id is stable and differs between keys */
    char id1[9], id2[9], id3[9];
    key(KEY_HEX, k);
    secretbox_key_id(k, id1);
    secretbox_key_id(k, id2);
    assert_string_equal(id1, id2);
    assert_int_equal(strlen(id1), 8);
    key(OTHER_HEX, k);
    secretbox_key_id(k, id3);
    assert_string_not_equal(id1, id3);
}

static void round_trip(void **state)
{
    (void)state;
    unsigned char k[SECRETBOX_KEY_LEN], sealed[256], again[256];
    char plain[256];
    size_t n = 0, m = 0, got = 0;
    struct err e;
    key(KEY_HEX, k);
    const char *token = "ya29.a0AfH6SMB-token_value~with/all+chars==";
    assert_int_equal(secretbox_seal(k, AAD, AAD_LEN, token, strlen(token), sealed, sizeof sealed,
                                    &n, &e),
                     0);
    assert_int_equal(n, strlen(token) + SECRETBOX_OVERHEAD);
    assert_int_equal(sealed[0], SECRETBOX_VERSION);
    assert_null(memmem(sealed, n, "ya29", 4)); /* not in clear */
    assert_int_equal(secretbox_key_matches(k, sealed, n), 1);
    assert_int_equal(secretbox_open(k, AAD, AAD_LEN, sealed, n, (unsigned char *)plain,
                                    sizeof plain, &got, &e),
                     0);
    assert_int_equal(got, strlen(token));
    assert_string_equal(plain, token);
    /* a fresh nonce each time: the same plaintext seals differently */
    assert_int_equal(secretbox_seal(k, AAD, AAD_LEN, token, strlen(token), again, sizeof again,
                                    &m, &e),
                     0);
    assert_int_equal(m, n);
    assert_memory_not_equal(sealed, again, n);
    /* empty plaintext */
    assert_int_equal(secretbox_seal(k, NULL, 0, "", 0, sealed, sizeof sealed, &n, &e), 0);
    assert_int_equal(n, SECRETBOX_OVERHEAD);
    assert_int_equal(secretbox_open(k, NULL, 0, sealed, n, (unsigned char *)plain, sizeof plain,
                                    &got, &e),
                     0);
    assert_int_equal(got, 0);
    assert_string_equal(plain, "");
}

static void wrong_key(void **state)
{
    (void)state;
    unsigned char k[SECRETBOX_KEY_LEN], other[SECRETBOX_KEY_LEN], sealed[128];
    char plain[128] = "untouched";
    size_t n = 0, got = 0;
    struct err e;
    key(KEY_HEX, k);
    key(OTHER_HEX, other);
    assert_int_equal(secretbox_seal(k, AAD, AAD_LEN, "secret", 6, sealed, sizeof sealed, &n, &e), 0);
    assert_int_equal(secretbox_key_matches(other, sealed, n), 0);
    err_clear(&e);
    assert_int_equal(secretbox_open(other, AAD, AAD_LEN, sealed, n, (unsigned char *)plain,
                                    sizeof plain, &got, &e),
                     SECRETBOX_WRONG_KEY);
    assert_int_equal(e.kind, ERR_USAGE);
    char id1[9], id2[9];
    secretbox_key_id(k, id1);
    secretbox_key_id(other, id2);
    assert_non_null(strstr(e.msg, "different secrets key"));
    assert_non_null(strstr(e.msg, id1));
    assert_non_null(strstr(e.msg, id2));
    assert_string_equal(plain, "untouched");
}

static void tampered_and_truncated(void **state)
{
    (void)state;
    unsigned char k[SECRETBOX_KEY_LEN], sealed[128], copy[128];
    char plain[128];
    size_t n = 0, got = 0;
    struct err e;
    key(KEY_HEX, k);
    assert_int_equal(secretbox_seal(k, AAD, AAD_LEN, "refresh-token-1", 15, sealed, sizeof sealed,
                                    &n, &e),
                     0);
    /* every single flipped bit after the key id is caught (nonce, ciphertext, tag) */
    for (size_t i = 1 + SECRETBOX_KEY_ID_LEN; i < n; i++) {
        memcpy(copy, sealed, n);
        copy[i] ^= 0x01;
        err_clear(&e);
        assert_int_equal(secretbox_open(k, AAD, AAD_LEN, copy, n, (unsigned char *)plain,
                                        sizeof plain, &got, &e),
                         -1);
        assert_int_equal(e.kind, ERR_INTERNAL);
        assert_non_null(strstr(e.msg, "does not authenticate"));
    }
    /* a changed key id reads as another key */
    memcpy(copy, sealed, n);
    copy[2] ^= 0x80;
    assert_int_equal(secretbox_open(k, AAD, AAD_LEN, copy, n, (unsigned char *)plain,
                                    sizeof plain, &got, &e),
                     SECRETBOX_WRONG_KEY);
    /* moved to another account or field: the associated data differs */
    assert_int_equal(secretbox_open(k, "acct\0refresh", 12, sealed, n, (unsigned char *)plain,
                                    sizeof plain, &got, &e),
                     -1);
    assert_non_null(strstr(e.msg, "does not authenticate"));
    assert_int_equal(secretbox_open(k, "other\0access", 12, sealed, n, (unsigned char *)plain,
                                    sizeof plain, &got, &e),
                     -1);
    /* truncated at every length */
    for (size_t len = 0; len < n; len++) {
        err_clear(&e);
        int r = secretbox_open(k, AAD, AAD_LEN, sealed, len, (unsigned char *)plain,
                               sizeof plain, &got, &e);
        assert_int_equal(r, -1);
        assert_int_equal(e.kind, ERR_INTERNAL);
        if (len > 0 && len < SECRETBOX_OVERHEAD)
            assert_non_null(strstr(e.msg, "truncated"));
    }
    /* an unknown version */
    memcpy(copy, sealed, n);
    copy[0] = 2;
    assert_int_equal(secretbox_open(k, AAD, AAD_LEN, copy, n, (unsigned char *)plain,
                                    sizeof plain, &got, &e),
                     -1);
    assert_non_null(strstr(e.msg, "unknown sealed format version 2"));
    assert_int_equal(secretbox_key_matches(k, copy, n), -1);
}

static void limits(void **state)
{
    (void)state;
    unsigned char k[SECRETBOX_KEY_LEN], sealed[64];
    char plain[8];
    size_t n = 0, got = 0;
    struct err e;
    key(KEY_HEX, k);
    /* output too small for seal and for open */
    assert_int_equal(secretbox_seal(k, NULL, 0, "0123456789abcdef0123456789abcdef0123", 36, sealed,
                                    sizeof sealed, &n, &e),
                     -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_int_equal(secretbox_seal(k, NULL, 0, "0123456789", 10, sealed, sizeof sealed, &n, &e), 0);
    assert_int_equal(secretbox_open(k, NULL, 0, sealed, n, (unsigned char *)plain, sizeof plain,
                                    &got, &e),
                     -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    static unsigned char big[SECRETBOX_PLAIN_MAX + 1];
    assert_int_equal(secretbox_seal(k, NULL, 0, big, sizeof big, sealed, sizeof sealed, &n, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
}

/* The format is AES-256-GCM as NIST specifies it: decrypt a value sealed
 * here with OpenSSL's EVP directly (nonce, ciphertext and tag where the
 * header says). */
static void interoperable(void **state)
{
    (void)state;
    unsigned char k[SECRETBOX_KEY_LEN], sealed[64], out[64];
    size_t n = 0;
    struct err e;
    key(KEY_HEX, k);
    assert_int_equal(secretbox_seal(k, AAD, AAD_LEN, "hello", 5, sealed, sizeof sealed, &n, &e), 0);
    const unsigned char *nonce = sealed + 1 + SECRETBOX_KEY_ID_LEN;
    const unsigned char *ct = nonce + SECRETBOX_NONCE_LEN;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l = 0;
    assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, k, nonce), 1);
    assert_int_equal(EVP_DecryptUpdate(c, NULL, &l, (const unsigned char *)AAD, AAD_LEN), 1);
    assert_int_equal(EVP_DecryptUpdate(c, out, &l, ct, 5), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)(ct + 5)), 1);
    assert_int_equal(EVP_DecryptFinal_ex(c, out + l, &l), 1);
    EVP_CIPHER_CTX_free(c);
    assert_memory_equal(out, "hello", 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_parsing),
        cmocka_unit_test(round_trip),
        cmocka_unit_test(wrong_key),
        cmocka_unit_test(tampered_and_truncated),
        cmocka_unit_test(limits),
        cmocka_unit_test(interoperable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
