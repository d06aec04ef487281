/*
 * oauth2 — the bridge's OAuth2 grants: a valid access token for an account
 * whenever a POP3 session needs one, refreshed in time, kept sealed in the
 * store and shared by every thread and instance using that store.
 *
 * Applies to accounts whose "oauth2" names a provider (microsoft, google,
 * custom); a "static" token comes from the configuration as before.
 *
 * Where the tokens live: the store's oauth2 rows (store.h), each token
 * sealed with AES-256-GCM under the configuration's secrets key
 * (secretbox.h), bound to "<account>\0access" or "<account>\0refresh".
 * `pop3bridge oauth2 login` stores a grant (oauth2_save_grant); polls and
 * API sessions ask for a token (oauth2_access_token).
 *
 * When to refresh (oauth2_refresh_due): when less than
 * OAUTH2_REFRESH_BEFORE_MS (5 min) of the access token's life remain, or
 * less than half of it when it was issued for less than
 * OAUTH2_SHORT_LIFETIME_MS (10 min); once more when the POP3 server refused
 * the token ([AUTH]) and the stored one is still that token; and when the
 * refresh token has not been used for OAUTH2_KEEPALIVE_MS (30 days:
 * Microsoft's refresh tokens expire after 90 days without use), which
 * oauth2_keeper also does for accounts that are not being polled.
 * Client credentials have no refresh token: a new access token is requested
 * instead.
 *
 * One refresher per account at a time, across threads and instances: the
 * refresher holds the row's lease (OAUTH2_LEASE_MS, longer than one token
 * request may take); the others use the current access token while it
 * still has OAUTH2_MIN_LEFT_MS left (or a quarter of its lifetime, when
 * that is less), else wait for the refresher's result
 * (polling the row every OAUTH2_WAIT_STEP_MS, for at most the lease's life,
 * then take the lease over).  The result is saved by compare-and-set on the
 * row's version: the rotated refresh token goes in the same statement as
 * the new access token, and a newer grant is never overwritten.
 *
 * Failures: invalid_grant marks the grant invalid ("re-authorize: the
 * refresh token was revoked or has expired"), logged once (event
 * oauth2_reauthorize); from then on no request is made for the account
 * until a new grant is stored, and every call fails at once with ERR_AUTH
 * and code ERR_CODE_NO_GRANT.  Any other failure (connection, timeout,
 * TLS, 429, 5xx, a refused client) is recorded in the row with a backoff
 * shared by all instances — OAUTH2_BACKOFF_MIN_MS doubling up to
 * OAUTH2_BACKOFF_MAX_MS, and never sooner than the server's Retry-After —
 * while the current access token, if still valid, keeps being used.
 *
 * Log events (never a token): oauth2_refreshed, oauth2_refresh_failed,
 * oauth2_reauthorize, oauth2_keepalive.
 *
 * Threads: every call takes the caller's own store handle; the module keeps
 * no state between calls (the keeper runs its own thread and handle).
 */
#ifndef POP3BRIDGE_OAUTH2_H
#define POP3BRIDGE_OAUTH2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgref.h"
#include "config.h"
#include "error.h"
#include "oauth2_proto.h"
#include "store.h"

#define OAUTH2_REFRESH_BEFORE_MS (5 * 60 * 1000LL)
#define OAUTH2_SHORT_LIFETIME_MS (10 * 60 * 1000LL)
#define OAUTH2_MIN_LEFT_MS 10000LL         /* a token closer to expiry is not handed out
                                              (a quarter of its life if less) */
#define OAUTH2_LEASE_MS (OAUTH2_TIMEOUT_MS + 10000LL)
#define OAUTH2_WAIT_STEP_MS 200
#define OAUTH2_KEEPALIVE_MS (30 * 86400 * 1000LL)
#define OAUTH2_KEEPER_PERIOD_MS (3600 * 1000LL) /* how often the keeper looks */
#define OAUTH2_BACKOFF_MIN_MS 30000LL
#define OAUTH2_BACKOFF_MAX_MS (3600 * 1000LL)
#define OAUTH2_TOKEN_BUF (OAUTH2_TOKEN_MAX + 1) /* room for an access token */
#define OAUTH2_REAUTHORIZE "re-authorize: the refresh token was revoked or has expired"

/* Whether the account's tokens are the bridge's to keep (a provider, not a
 * static token). */
bool oauth2_managed(const struct config_account *a);

/* The refresh rule above (times in Unix ms): true when an access token
 * issued at issued_at and expiring at expires_at should be refreshed at now.
 * A token without times (expires_at 0) is due. */
bool oauth2_refresh_due(int64_t issued_at, int64_t expires_at, int64_t now);

/* Whether the grant's refresh token is due a keep-alive refresh at now:
 * it has one, and neither the grant nor its last use is younger than
 * OAUTH2_KEEPALIVE_MS. */
bool oauth2_keepalive_due(const struct store_oauth2 *row, int64_t now);

/* The wait before the next refresh attempt after `failures` failures in a
 * row (>= 1), honouring the server's Retry-After (seconds, -1: none). */
int64_t oauth2_backoff_ms(int failures, long retry_after_s);

/* A valid access token for account a into buf (size >= OAUTH2_TOKEN_BUF),
 * refreshing first when due (see above).  rejected: NULL, or the token the
 * POP3 server just refused — then a fresh one is obtained unless the stored
 * one already differs.  May block: a token request (OAUTH2_TIMEOUT_MS), or
 * waiting for another refresher (at most OAUTH2_LEASE_MS and a little).
 * Wipe buf after use.  Errors:
 *   ERR_AUTH + ERR_CODE_NO_GRANT  never authorized, or the grant is invalid
 *                                 (message OAUTH2_REAUTHORIZE), or its tokens
 *                                 were sealed under another secrets key (one
 *                                 line naming both key ids: restore the key,
 *                                 or authorize again);
 *   ERR_AUTH                      the token endpoint refused the client
 *                                 (invalid_client, invalid_scope...);
 *   ERR_CONN, ERR_TIMEOUT, ERR_TLS, ERR_SERVER, ERR_PROTO
 *                                 the token endpoint could not be used, and
 *                                 the stored access token has expired; also
 *                                 while backing off after such a failure;
 *   ERR_USAGE                     no secrets key, not a provider account;
 *   ERR_INTERNAL                  the store failed, damaged sealed data. */
int oauth2_access_token(struct store *st, const struct config_account *a, const char *rejected,
                        char *buf, size_t size, struct err *e);

/* The same, bounded for a caller with a deadline of its own (an API
 * request: api.request_timeout): until_mono_ms is a clock_mono_ms() instant,
 * 0 for none.  Waiting for another refresher stops there: ERR_TIMEOUT with
 * code ERR_CODE_REFRESH_WAIT ("another refresh of its token is still
 * running"; nothing changed, ask again shortly).  A refresh this caller
 * started itself is not cut short (its rotated refresh token must be
 * saved): it may end up to OAUTH2_TIMEOUT_MS after until_mono_ms. */
int oauth2_access_token_until(struct store *st, const struct config_account *a,
                              const char *rejected, char *buf, size_t size,
                              int64_t until_mono_ms, struct err *e);

/* Seal and store a new grant for account a (what `oauth2 login` obtained):
 * the access token, the refresh token if any, obtained at now.  Replaces
 * whatever the account had, valid or not. */
int oauth2_save_grant(struct store *st, const struct config_account *a,
                      const struct oauth2_token *t, int64_t now, struct err *e);

/* For `oauth2 status` (and the API): the grant's state, no token. */
enum oauth2_state {
    OAUTH2_STATE_NONE,        /* never authorized */
    OAUTH2_STATE_AUTHORIZED,  /* usable grant */
    OAUTH2_STATE_INVALID,     /* must be authorized again */
    OAUTH2_STATE_WRONG_KEY,   /* sealed under another secrets key */
};
const char *oauth2_state_name(enum oauth2_state s); /* "none", "authorized"... */

struct oauth2_status {
    enum oauth2_state state;
    char flow[STORE_FLOW_MAX + 1];
    char error[STORE_ERROR_MAX + 1];  /* why invalid, or the last failed refresh */
    bool has_refresh_token;
    int64_t access_expires_at;        /* 0: no access token */
    int64_t authorized_at;
    int64_t refresh_used_at;          /* 0: never */
    int64_t retry_at;                 /* backing off until then; 0 */
    int failures;
};
int oauth2_status(struct store *st, const struct config_account *a, struct oauth2_status *out,
                  struct err *e);

/* The keeper: a thread that, every OAUTH2_KEEPER_PERIOD_MS, refreshes the
 * grants of the configuration's accounts that are due a keep-alive
 * (oauth2_keepalive_due), so an idle or disabled account's refresh token
 * does not expire.  It reads the current snapshot from *cfg (cfgref_get)
 * and opens its own store handle.  NULL with *e on failure. */
struct oauth2_keeper;
struct oauth2_keeper *oauth2_keeper_start(struct cfgref *const *cfg, struct err *e);
/* Stop and join the thread (waits for a refresh in flight); NULL-safe. */
void oauth2_keeper_stop(struct oauth2_keeper **k);

#endif
