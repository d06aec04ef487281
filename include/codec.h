/*
 * codec — the small encodings several modules share: hex digits, RFC 4648
 * base64 (strict), and the "sha256:<hex>" certificate pin syntax.
 *
 * Strict base64 (RFC 4648 §4, the standard alphabet): whole 4-character
 * quantums, '=' padding only at the very end, no whitespace, and the unused
 * bits of the last character zero (one canonical encoding per byte string).
 * Pure functions, thread-safe.
 */
#ifndef POP3BRIDGE_CODEC_H
#define POP3BRIDGE_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#define CODEC_PIN_LEN 32 /* bytes of a SHA-256 pin */

/* The value of a hex digit (either case), or -1. */
int codec_hex_value(int c);
/* Lowercase hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void codec_hex_encode(const unsigned char *in, size_t n, char *out);

/* Bytes base64 takes for len bytes, with its NUL. */
#define CODEC_B64_SIZE(len) (((len) + 2) / 3 * 4 + 1)

/* Base64 of len bytes, NUL-terminated, malloc'd; NULL when out of memory. */
char *codec_b64_encode(const void *data, size_t len);
/* The same into out (out_size bytes, at least CODEC_B64_SIZE(len)).  0, or -1
 * (out left empty when out_size > 0) when it does not fit. */
int codec_b64_encode_buf(const void *data, size_t len, char *out, size_t out_size);

/* RFC 6750 §2.1 b64token, the syntax of a bearer token:
 * 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
bool codec_is_b64token(const char *t);

/* Strictly decode len characters into out (out_size bytes).  0 with *out_len
 * set; -1 when the input is not strict base64 (*bad_at, if not NULL, gets the
 * offset of the first bad character, or len when the length is wrong); -2
 * when the result does not fit in out_size. */
int codec_b64_decode(const char *in, size_t len, unsigned char *out, size_t out_size,
                     size_t *out_len, size_t *bad_at);
/* The same into a malloc'd buffer (NUL-terminated for convenience).  0, -1
 * invalid, -2 out of memory.  *out is NULL on failure. */
int codec_b64_decode_alloc(const char *in, size_t len, unsigned char **out, size_t *out_len);

/* "sha256:" (any case) followed by 64 hex digits, either contiguous or as 32
 * ':'-separated pairs.  0 with out filled, or -1. */
int codec_pin_parse(const char *s, unsigned char out[CODEC_PIN_LEN]);

#endif
