/*
 * links — signed links: URLs a receiver follows without an API token.
 *
 * The raw_url and attachment url of a message carry "?exp=<unix seconds>&
 * sig=<64 hex digits>", where sig is HMAC-SHA256(key, "pop3bridge-link-v1"
 * LF path LF exp) and path is the decoded request path ("/api/v1/messages/
 * m_12/raw"), whatever the method (GET and HEAD alike) and whatever prefix
 * api.public_url adds in front.  The key lives in the store
 * (store_link_key), so every instance sharing a store signs and accepts the
 * same links, and replacing it (store_link_key_rotate) revokes them all.
 *
 * Pure functions, thread-safe.  Keys never appear in results or errors.
 */
#ifndef POP3BRIDGE_LINKS_H
#define POP3BRIDGE_LINKS_H

#include <stddef.h>
#include <stdint.h>

#define LINKS_KEY_LEN 32                 /* = STORE_LINK_KEY_LEN */
#define LINKS_SIG_HEX 64                 /* hex digits of a signature */
#define LINKS_EXP_DIGITS_MAX 19          /* int64_t in decimal */
#define LINKS_QUERY_MAX 96               /* "?exp=...&sig=..." + NUL fits */
#define LINKS_PATH_MAX 4096              /* longest path signed or checked */

enum links_verdict {
    LINKS_OK,            /* the signature matches and exp has not passed */
    LINKS_MALFORMED,     /* exp or sig missing, not digits / 64 hex digits */
    LINKS_BAD_SIGNATURE, /* tampered with, for another path, or the key was rotated */
    LINKS_EXPIRED,       /* the signature matches but exp has passed */
};

/* Write "?exp=<exp>&sig=<hex>" for path into out (LINKS_QUERY_MAX is
 * enough).  0, or -1 (an argument missing, path over LINKS_PATH_MAX, exp
 * negative, out too small, OpenSSL failed), out then "". */
int links_query(const unsigned char *key, size_t key_len, const char *path, int64_t exp,
                char *out, size_t out_size);

/* Check the exp and sig query values of a request for path at time now
 * (unix seconds); the comparison is constant-time.  The signature is
 * checked before the expiry, so an expired link says so only when it was
 * genuine. */
enum links_verdict links_verify(const unsigned char *key, size_t key_len, const char *path,
                                const char *exp, const char *sig, int64_t now);

/* What a verdict means, for a problem+json detail: "the link has expired",
 * ... (static text). */
const char *links_verdict_text(enum links_verdict v);

#endif
