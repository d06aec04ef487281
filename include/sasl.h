/*
 * sasl — the client side of the authentication mechanisms POP3 AUTH carries.
 *
 * RFC 5034 (POP3 AUTH) frames the exchange; the pop3 engine sends the AUTH
 * command, reads the "+ " continuation lines and writes our answers.  This
 * module does the mechanism logic between them:
 *
 *   PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195),
 *   SCRAM-SHA-1 (RFC 5802), SCRAM-SHA-256 (RFC 7677)   — through libgsasl;
 *   XOAUTH2 (Google / Microsoft)                        — here;
 *   OAUTHBEARER (RFC 7628, GS2 header of RFC 5801)      — here;
 *   the APOP digest (RFC 1939 §7)                       — here, OpenSSL EVP;
 *   base64 (RFC 4648 §4), strict                        — here.
 *
 * The exchange, as the engine drives it:
 *
 *   s = sasl_new(mech, &creds, &e);
 *   if (sasl_mech_client_first(mech))
 *       rc = sasl_step(s, NULL, &resp, &e);    -> "AUTH <mech> <resp>"
 *   else                                       -> "AUTH <mech>"
 *   while the server answers "+ <text>":
 *       rc = sasl_step(s, text, &resp, &e);    -> send resp as one line
 *   on "+OK": success only if the last sasl_step returned SASL_DONE
 *             (a SCRAM server that says +OK without proving itself is refused);
 *   on "-ERR": failure; sasl_error_detail(s) may explain an OAuth refusal.
 *
 * RFC 5034 §4 caps the AUTH line with an initial response at 255 octets; when
 * it would be longer the engine sends "AUTH <mech>" alone and passes the
 * server's empty challenge ("") to sasl_step, which then produces the initial
 * response.  SASL_DONE means the client has nothing more to say: the response
 * must still be sent, and the server's next reply should be +OK or -ERR.  A
 * challenge after SASL_DONE is a protocol error, except the OAuth error report
 * (see sasl_error_detail).
 *
 * Secrets: passwords and tokens are copied only where needed and wiped
 * (OPENSSL_cleanse) when the exchange is freed, as are our responses (which
 * may carry them).  libgsasl keeps its own copies of the password and the
 * SCRAM salted password in the session; those are wiped before the session
 * is finished.  Temporary buffers inside libgsasl (SASLprep output, SCRAM key
 * material on its stack) are outside our reach.  No credential ever appears
 * in an error message or in sasl_error_detail().
 *
 * Threads: one struct sasl belongs to one thread at a time; different
 * exchanges may run in parallel.  The process-wide libgsasl handle is created
 * on first use; sasl_global_cleanup() releases it at exit.
 */
#ifndef POP3BRIDGE_SASL_H
#define POP3BRIDGE_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define SASL_MORE 1 /* sasl_step: the server has more to say */
#define SASL_DONE 0 /* sasl_step: the client has said everything */

#define SASL_CHALLENGE_MAX 16384  /* characters of one base64 challenge */
#define SASL_CRED_MAX 1024        /* bytes of a user name, password, authzid, host */
#define SASL_TOKEN_MAX 16384      /* bytes of an OAuth 2.0 access token */
#define SASL_SCRAM_ITER_MAX 1000000 /* SCRAM i= a server may ask us to compute */
#define SASL_DETAIL_MAX 256       /* bytes of sasl_error_detail(), with NUL */
#define SASL_APOP_TS_MAX 512      /* bytes of an APOP "<...>" timestamp */
#define SASL_SCRAM_CACHE_MAX 4096 /* remembered SCRAM salted passwords (least recently used out) */
#define SASL_SCRAM_KEY_LEN 32     /* SHA-256 naming one remembered salted password */

struct sasl_creds {
    const char *username;     /* authentication identity (required) */
    const char *password;     /* NULL if none */
    const char *oauth2_token; /* NULL if none */
    const char *authzid;      /* authorization identity; NULL normally */
    const char *host;         /* server host name: OAUTHBEARER host=, GSASL_HOSTNAME */
    unsigned port;            /* server port: OAUTHBEARER port= (0: left out) */
};

struct sasl; /* one authentication exchange, opaque */

/*
 * Start an exchange.  mech is the IANA name, case-insensitive: "PLAIN",
 * "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2",
 * "OAUTHBEARER".  The credentials are copied (the caller's may go away).
 * OAUTHBEARER's a= carries authzid when set, otherwise the user name.
 * Errors: ERR_USAGE for an unknown mechanism, a missing credential (no user
 * name; no password for PLAIN/LOGIN/CRAM-MD5/SCRAM; no token for the OAuth
 * mechanisms), an authzid the mechanism cannot carry (LOGIN, CRAM-MD5,
 * XOAUTH2), a credential longer than its limit or holding a byte the
 * encoding cannot carry (a control character in a token, ^A in a field);
 * ERR_INTERNAL when out of memory or libgsasl fails to start.
 * Returns NULL on error; free with sasl_free().
 */
struct sasl *sasl_new(const char *mech, const struct sasl_creds *c, struct err *e);

/*
 * Compute the next client response.  challenge_b64 is the base64 text the
 * server sent after "+ ": NULL for the initial response (client-first
 * mechanisms only), "" for an empty challenge.  On success *resp_b64 points to
 * a NUL-terminated base64 string owned by s, valid until the next call or
 * sasl_free(), possibly "".
 * Returns SASL_MORE when the server has more to send, SASL_DONE when the
 * client is finished (SCRAM: the server's signature verified), or -1 with e
 * set and *resp_b64 NULL:
 *   ERR_AUTH   SCRAM server-final signature mismatch ("server signature did
 *              not verify": the server is not who it claims), a SCRAM e=
 *              server error (its text, sanitised, in e->server), a server
 *              nonce that does not extend ours;
 *   ERR_PROTO  invalid base64, a malformed challenge, a challenge where none
 *              may come (after SASL_DONE, or non-empty before a client-first
 *              mechanism's initial response);
 *   ERR_LIMIT  a challenge longer than SASL_CHALLENGE_MAX, a SCRAM iteration
 *              count above SASL_SCRAM_ITER_MAX;
 *   ERR_USAGE  NULL challenge for LOGIN/CRAM-MD5 (they have no initial
 *              response), a call after the exchange failed;
 *   ERR_INTERNAL out of memory, a libgsasl or crypto failure.
 * After -1 the exchange is over; only sasl_free() remains.
 */
int sasl_step(struct sasl *s, const char *challenge_b64, char **resp_b64, struct err *e);

/* Whether the mechanism sends data first (PLAIN, SCRAM-*, XOAUTH2,
 * OAUTHBEARER: true; LOGIN, CRAM-MD5, unknown names: false). */
bool sasl_mech_client_first(const char *mech);

/* Whether mech is one this module implements (case-insensitive). */
bool sasl_mech_supported(const char *mech);

/*
 * XOAUTH2 / OAUTHBEARER: after the token was sent, a challenge is the
 * server's error report (base64 JSON such as {"status":"401",...}).
 * sasl_step answers it with the response that lets the server finish (XOAUTH2:
 * empty; OAUTHBEARER: a single ^A, RFC 7628 §3.2.3), returns SASL_DONE, and
 * keeps the report here: "status=<s> scope=<s>" when it is JSON with those
 * fields, otherwise the decoded text; sanitised, capped at SASL_DETAIL_MAX,
 * and withheld if it echoes the token.  "" if none.  Owned by s.
 */
const char *sasl_error_detail(const struct sasl *s);

/* The mechanism's canonical name ("SCRAM-SHA-256"); owned by the module. */
const char *sasl_mech_name(const struct sasl *s);

/* Wipe the secrets, free, set *s = NULL.  NULL and *s == NULL are no-ops. */
void sasl_free(struct sasl **s);

/* Release the process-wide libgsasl handle (for exit, and for leak checkers).
 * Call once no exchange is alive; a later sasl_new() creates a new handle. */
void sasl_global_cleanup(void);

/* SCRAM salted passwords: Hi(password, salt, i) is computed once per
 * (mechanism, user name, password, salt, iteration count) and remembered
 * (process-wide, at most SASL_SCRAM_CACHE_MAX, wiped when dropped) once the
 * server's signature verified; later logins with the same inputs give it to
 * libgsasl instead of spending i HMACs again.  Thread-safe. */
struct sasl_scram_stats {
    unsigned long hits, misses, evicted; /* lookups at server-first; entries dropped */
    size_t entries;
};
struct sasl_scram_stats sasl_scram_cache_stats(void);
/* Forget (and wipe) every remembered salted password; zero the counters. */
void sasl_scram_cache_clear(void);
/* Hi(password, salt, iter) of RFC 5802 §2.2 with HMAC-SHA-256 (sha256) or
 * HMAC-SHA-1, of an already SASLprep'd password: the SCRAM salted password,
 * into out (32 or 20 bytes); its length, 0 when iter is 0.  Computed here
 * with OpenSSL's hash blocks, 3 to 8 times faster than PKCS5_PBKDF2_HMAC or
 * libgsasl. */
size_t sasl_scram_hi(bool sha256, const char *password, size_t password_len,
                     const unsigned char *salt, size_t salt_len, unsigned long iter,
                     unsigned char *out);

/*
 * APOP (RFC 1939 §7): out gets the 32 lowercase hex digits of
 * MD5(timestamp || password) and a NUL.  ts is the "<...>" timestamp from the
 * greeting, angle brackets included, ts_len bytes (not NUL-terminated).
 * Errors: ERR_PROTO for a timestamp that is not "<" printable-ASCII ">"
 * (no spaces) or is longer than SASL_APOP_TS_MAX; ERR_USAGE for a NULL
 * password; ERR_INTERNAL for a crypto failure.  0 on success, -1 on error
 * (out is then "").
 */
int sasl_apop_digest(const char *ts, size_t ts_len, const char *password, char out[33],
                     struct err *e);

#endif
