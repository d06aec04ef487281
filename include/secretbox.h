/*
 * secretbox — small secrets (OAuth2 tokens) sealed at rest with AES-256-GCM
 * (NIST SP 800-38D) through OpenSSL's EVP interface.
 *
 * A sealed value is opaque bytes:
 *
 *   version (1 byte, SECRETBOX_VERSION) | key id (4) | nonce (12, random)
 *   | ciphertext (as long as the plaintext) | tag (16)
 *
 * The key id is the first 4 bytes of HMAC-SHA-256(key, "pop3bridge secretbox
 * key id"): it tells a value sealed under another key apart from a damaged
 * one, so a wrong key is reported as such, in one clear line, without
 * revealing anything useful about either key.  Every seal draws a fresh
 * random nonce (RAND_bytes); with 96-bit random nonces one key safely seals
 * far more values than a bridge ever will (SP 800-38D §8.3).
 *
 * Associated data (aad) binds a value to its place — the bridge passes
 * "<account>\0<field>" — so a value copied to another account or field does
 * not open.
 *
 * The key: 32 bytes, written as 64 hex digits (what `openssl rand -hex 32`
 * prints).  Nothing here reads files or the environment; config.h resolves
 * secrets_key_env / secrets_key_file and calls secretbox_key_parse().
 *
 * No call allocates; callers pass the output buffers.  Errors never contain
 * key material or plaintext.  Thread-safe.
 */
#ifndef POP3BRIDGE_SECRETBOX_H
#define POP3BRIDGE_SECRETBOX_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define SECRETBOX_KEY_LEN 32
#define SECRETBOX_KEY_HEX 64
#define SECRETBOX_VERSION 1
#define SECRETBOX_KEY_ID_LEN 4
#define SECRETBOX_NONCE_LEN 12
#define SECRETBOX_TAG_LEN 16
#define SECRETBOX_OVERHEAD (1 + SECRETBOX_KEY_ID_LEN + SECRETBOX_NONCE_LEN + SECRETBOX_TAG_LEN)
#define SECRETBOX_PLAIN_MAX 65536         /* bytes of one plaintext */
#define SECRETBOX_AAD_MAX 1024            /* bytes of associated data */
#define SECRETBOX_WRONG_KEY (-2)          /* secretbox_open: sealed under another key */

/* Decode exactly SECRETBOX_KEY_HEX hex digits (either case) from hex[0..len)
 * into key.  0, or -1 with *e (ERR_USAGE) saying what is wrong — the length,
 * or the position of the first character that is not a hex digit — never
 * the characters themselves. */
int secretbox_key_parse(const char *hex, size_t len, unsigned char key[SECRETBOX_KEY_LEN],
                        struct err *e);

/* The key id of key as 8 lowercase hex digits (out: 9 bytes). */
void secretbox_key_id(const unsigned char key[SECRETBOX_KEY_LEN], char out[9]);

/* Seal len bytes of plain (len <= SECRETBOX_PLAIN_MAX) into out, which must
 * hold len + SECRETBOX_OVERHEAD bytes; *out_len gets that length.  Errors:
 * ERR_LIMIT (plaintext, aad or output size), ERR_INTERNAL (OpenSSL, no
 * randomness). */
int secretbox_seal(const unsigned char key[SECRETBOX_KEY_LEN], const void *aad, size_t aad_len,
                   const void *plain, size_t len, unsigned char *out, size_t out_size,
                   size_t *out_len, struct err *e);

/* Open a sealed value into out (room for len - SECRETBOX_OVERHEAD + 1
 * bytes: the plaintext is followed by a NUL for convenience); *out_len gets
 * the plaintext length.  Nothing is left in out on failure.  Returns 0;
 * SECRETBOX_WRONG_KEY with *e (ERR_USAGE) naming both key ids when it was
 * sealed under another key; or -1 with *e: ERR_INTERNAL when the value is
 * truncated, of an unknown version, or does not authenticate (damaged or
 * tampered with, or bound to other associated data), ERR_LIMIT when out is
 * too small. */
int secretbox_open(const unsigned char key[SECRETBOX_KEY_LEN], const void *aad, size_t aad_len,
                   const unsigned char *sealed, size_t len, unsigned char *out, size_t out_size,
                   size_t *out_len, struct err *e);

/* Whether sealed (len bytes) names key's id: 1 yes, 0 another key, -1 not a
 * sealed value of a known version.  Opens nothing. */
int secretbox_key_matches(const unsigned char key[SECRETBOX_KEY_LEN], const unsigned char *sealed,
                          size_t len);

#endif
