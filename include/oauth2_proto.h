/*
 * oauth2_proto — the OAuth 2.0 client side of the wire: the requests the
 * bridge makes to an authorization server and what it accepts back.
 *
 *   RFC 6749  OAuth 2.0: token endpoint (§3.2), refresh_token grant (§6),
 *             client_credentials grant (§4.4), authorization code grant
 *             (§4.1), error responses (§5.2), client authentication (§2.3.1)
 *   RFC 8628  device authorization grant: the device authorization request
 *             and polling (authorization_pending, slow_down, expired_token,
 *             access_denied)
 *   RFC 7636  PKCE, code_challenge_method S256
 *   RFC 8252  native apps: the loopback redirect (§7.3) — the listener
 *             itself lives in oauth2_cli.c
 *   RFC 6750  bearer tokens (the b64token syntax an access token must have)
 *
 * Provider defaults: "microsoft" (Microsoft identity platform v2.0 at
 * login.microsoftonline.com/{tenant}: POP scope
 * https://outlook.office.com/POP.AccessAsUser.All offline_access for a
 * user's mailbox, https://outlook.office365.com/.default for client
 * credentials) and "google" (oauth2.googleapis.com, scope
 * https://mail.google.com/); "custom" takes every URL from the
 * configuration.  oauth2_proto_client() resolves them.
 *
 * Transport: one libcurl easy handle per request, HTTPS only (no other
 * protocol, no redirects followed), certificate and host name verification
 * on, a connect timeout and an overall timeout, a response body of at most
 * OAUTH2_RESPONSE_MAX bytes.  The caller has run curl_global_init().
 * Client authentication: microsoft and google take client_id (and
 * client_secret) in the request body; custom servers get HTTP Basic when
 * there is a secret (RFC 6749 §2.3.1: the one method every server supports),
 * client_id in the body otherwise.
 *
 * Nothing here touches the store or logs.  Errors never contain a token, a
 * client secret, a device code or an authorization code; the server's
 * error_description is sanitised and kept apart (err.server).
 */
#ifndef POP3BRIDGE_OAUTH2_PROTO_H
#define POP3BRIDGE_OAUTH2_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"

#define OAUTH2_TOKEN_MAX 16384          /* bytes of an access or refresh token */
#define OAUTH2_URL_MAX 2048             /* an endpoint URL */
#define OAUTH2_SCOPE_MAX 1024           /* the scope string */
#define OAUTH2_RESPONSE_MAX (64 * 1024) /* bytes of a token endpoint's response body */
#define OAUTH2_CODE_MAX 2048            /* device_code, user_code, authorization code */
#define OAUTH2_EXPIRES_MIN_S 10         /* expires_in accepted: 10 s ... */
#define OAUTH2_EXPIRES_MAX_S (400LL * 86400) /* ... 400 days */
#define OAUTH2_EXPIRES_DEFAULT_S 3600   /* when a response has no expires_in */
#define OAUTH2_CONNECT_TIMEOUT_MS 10000
#define OAUTH2_TIMEOUT_MS 20000         /* one whole request */
#define OAUTH2_PKCE_VERIFIER_LEN 43     /* 32 random bytes, base64url */
#define OAUTH2_PKCE_CHALLENGE_LEN 43    /* BASE64URL(SHA-256(verifier)) */
#define OAUTH2_DEVICE_INTERVAL_S 5      /* RFC 8628 §3.2 default polling interval */

/* A client of one authorization server, resolved from an account's oauth2
 * block and the provider's defaults.  Strings in it are its own, except the
 * borrowed client_id, client_secret and ca_file (the configuration's). */
struct oauth2_client {
    enum config_oauth2_provider provider;
    enum config_oauth2_flow flow;
    char token_url[OAUTH2_URL_MAX + 1];
    char device_url[OAUTH2_URL_MAX + 1];    /* "" when the provider has none */
    char authorize_url[OAUTH2_URL_MAX + 1]; /* "" when the provider has none */
    char scope[OAUTH2_SCOPE_MAX + 1];       /* "" when none is sent */
    bool basic_auth;                        /* client_secret by HTTP Basic */
    bool scope_on_refresh;                  /* send scope with refresh_token */
    bool offline_params;                    /* authorize: access_type=offline&prompt=consent */
    const char *client_id;
    const char *client_secret;              /* NULL for a public client */
    const char *ca_file;                    /* NULL: the system trust store */
};

/* Fill *c from a provider-based oauth2 block (not "static").  Errors:
 * ERR_USAGE (static provider, no client_id, a URL the provider lacks),
 * ERR_LIMIT (a URL or the scope too long). */
int oauth2_proto_client(const struct config_oauth2 *o, struct oauth2_client *c, struct err *e);

/* A successful token response (RFC 6749 §5.1).  Wipe it after use
 * (oauth2_proto_token_wipe). */
struct oauth2_token {
    char access_token[OAUTH2_TOKEN_MAX + 1];
    char refresh_token[OAUTH2_TOKEN_MAX + 1]; /* "" when none came */
    char scope[OAUTH2_SCOPE_MAX + 1];         /* "" when not given */
    int64_t expires_in_s;                     /* OAUTH2_EXPIRES_DEFAULT_S when not given */
};
void oauth2_proto_token_wipe(struct oauth2_token *t);

/* How a request to the authorization server ended. */
enum oauth2_result {
    OAUTH2_OK = 0,
    OAUTH2_PENDING,       /* authorization_pending (device flow): ask again later */
    OAUTH2_SLOW_DOWN,     /* slow_down: ask again, 5 s less often */
    OAUTH2_DENIED,        /* access_denied: the user said no */
    OAUTH2_EXPIRED,       /* expired_token: the device code expired */
    OAUTH2_INVALID_GRANT, /* invalid_grant: the refresh token (or code) was revoked,
                             expired, used or never valid */
    OAUTH2_REFUSED,       /* any other error answer (invalid_client, invalid_scope,
                             unauthorized_client, 4xx...): a configuration problem */
    OAUTH2_TEMPORARY,     /* no usable answer: connection, timeout, TLS, 429, 5xx,
                             a malformed response */
};
const char *oauth2_result_name(enum oauth2_result r); /* "ok", "invalid_grant", ... */

/* What came back besides the result, for errors and backoff. */
struct oauth2_reply {
    int http_status;        /* 0: no HTTP answer */
    long retry_after_s;     /* Retry-After (seconds or HTTP date), -1: none */
    char error[64];         /* the "error" code, sanitised; "" if none */
};

/* Parse a 200 token response body.  0, or -1 with *e (ERR_PROTO): not a
 * JSON object, access_token missing, empty, too long or not a bearer token
 * (RFC 6750 b64token), token_type missing or not "Bearer", expires_in not a
 * whole number within OAUTH2_EXPIRES_MIN_S..OAUTH2_EXPIRES_MAX_S (a number
 * or a string of digits), refresh_token or scope not a string or too long.
 * *t is wiped on failure. */
int oauth2_proto_parse_token(const char *body, size_t len, struct oauth2_token *t, struct err *e);

/* Parse an error response body (RFC 6749 §5.2) into the result it means;
 * code (64 bytes) gets the sanitised "error" value and desc (desc_size) the
 * sanitised error_description ("" if none).  A body that is not an error
 * object gives OAUTH2_TEMPORARY. */
enum oauth2_result oauth2_proto_parse_error(const char *body, size_t len, char code[64],
                                            char *desc, size_t desc_size);

/* The token endpoint request of each grant.  Each returns the result; for
 * anything but OAUTH2_OK, *e says what happened (ERR_AUTH for refusals,
 * ERR_CONN / ERR_TIMEOUT / ERR_TLS / ERR_PROTO / ERR_SERVER for
 * OAUTH2_TEMPORARY, with the server's description in e->server) and *r
 * (may be NULL) has the details.  *t is filled only on OAUTH2_OK. */
enum oauth2_result oauth2_proto_refresh(const struct oauth2_client *c, const char *refresh_token,
                                        struct oauth2_token *t, struct oauth2_reply *r,
                                        struct err *e);
enum oauth2_result oauth2_proto_client_credentials(const struct oauth2_client *c,
                                                   struct oauth2_token *t,
                                                   struct oauth2_reply *r, struct err *e);
enum oauth2_result oauth2_proto_device_poll(const struct oauth2_client *c, const char *device_code,
                                            struct oauth2_token *t, struct oauth2_reply *r,
                                            struct err *e);
enum oauth2_result oauth2_proto_exchange_code(const struct oauth2_client *c, const char *code,
                                              const char *redirect_uri, const char *verifier,
                                              struct oauth2_token *t, struct oauth2_reply *r,
                                              struct err *e);

/* RFC 8628 §3.2 device authorization response. */
struct oauth2_device {
    char device_code[OAUTH2_CODE_MAX + 1];          /* secret: never printed */
    char user_code[OAUTH2_CODE_MAX + 1];            /* shown to the user */
    char verification_uri[OAUTH2_URL_MAX + 1];      /* (Google says verification_url) */
    char verification_uri_complete[OAUTH2_URL_MAX + 1]; /* "" if not given */
    int64_t expires_in_s;
    int64_t interval_s;                             /* OAUTH2_DEVICE_INTERVAL_S if not given */
};
/* Parse a device authorization response body.  0 or -1 (ERR_PROTO). */
int oauth2_proto_parse_device(const char *body, size_t len, struct oauth2_device *d,
                              struct err *e);
/* Start a device authorization (POST device_url with client_id and scope). */
enum oauth2_result oauth2_proto_device_start(const struct oauth2_client *c,
                                             struct oauth2_device *d, struct oauth2_reply *r,
                                             struct err *e);

/* PKCE (RFC 7636): a fresh verifier of OAUTH2_PKCE_VERIFIER_LEN characters
 * (out: +1 byte); 0 or -1 (ERR_INTERNAL: no randomness). */
int oauth2_proto_pkce_verifier(char *out, struct err *e);
/* The S256 challenge of verifier (out: OAUTH2_PKCE_CHALLENGE_LEN + 1). */
int oauth2_proto_pkce_challenge(const char *verifier, char *out, struct err *e);
/* A random state value (out: 33 bytes: 32 base64url characters). */
int oauth2_proto_state(char *out, struct err *e);

/* The authorization request URL (RFC 6749 §4.1.1 + PKCE) into out.
 * Errors: ERR_USAGE (no authorize_url), ERR_LIMIT (longer than size). */
int oauth2_proto_authorize_url(const struct oauth2_client *c, const char *redirect_uri,
                               const char *state, const char *challenge, char *out, size_t size,
                               struct err *e);

#endif
