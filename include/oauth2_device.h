/*
 * oauth2_device — device-code authorizations (RFC 8628) started through the
 * REST API (POST /api/v1/accounts/{account}/oauth2/device) and polled in the
 * background until the person approves, refuses, or the code expires.
 *
 * oauth2_devices_start() asks the account's device authorization endpoint
 * for a code (one token-endpoint request: blocks up to OAUTH2_TIMEOUT_MS;
 * call it from a mailbox worker, never an HTTP thread), remembers what the
 * person must see (verification URI, user code, expiry, interval) and starts
 * one thread that polls the token endpoint at the server's interval (RFC
 * 8628 §3.4-3.5: authorization_pending, slow_down adds 5 s, access_denied,
 * expired_token; a Retry-After longer than the interval is honoured).  On
 * approval the grant is sealed and stored exactly as `oauth2 login` does
 * (oauth2_save_grant) and the `authorized` callback is called (the API asks
 * for a poll of the account).
 *
 * Bounds: one authorization per account (a second start while one is
 * pending returns that one: no new code is requested); at most
 * OAUTH2_DEVICE_PENDING_MAX polled at once (one thread each); at most
 * OAUTH2_DEVICE_MAX remembered, an ended one replaced first; polling stops
 * at the code's expiry, never later than OAUTH2_DEVICE_LIFETIME_MAX_S, and
 * after OAUTH2_DEVICE_TEMP_FAILURES unusable answers in a row.
 *
 * Secrets: the device code and the tokens never leave this module (never in
 * an info, an error or a log line); the user code is what the person must
 * be shown, and is not logged either.  Log events: oauth2_device_started,
 * oauth2_device_poll_failed (an unusable answer, polling goes on),
 * oauth2_device_authorized, oauth2_device_ended (state=denied|expired|error).
 *
 * Threads: every call is thread-safe.
 */
#ifndef POP3BRIDGE_OAUTH2_DEVICE_H
#define POP3BRIDGE_OAUTH2_DEVICE_H

#include <stdint.h>

#include "cfgref.h"
#include "config.h"
#include "error.h"
#include "oauth2_proto.h"
#include "store.h"

#define OAUTH2_DEVICE_MAX 32              /* authorizations remembered */
#define OAUTH2_DEVICE_PENDING_MAX 8       /* polled at the same time */
#define OAUTH2_DEVICE_LIFETIME_MAX_S 1800 /* polling never lasts longer */
#define OAUTH2_DEVICE_TEMP_FAILURES 5     /* unusable answers in a row that end it */
#define OAUTH2_DEVICE_ERROR_MAX (ERR_MSG_MAX + ERR_SERVER_MAX + 32)

enum oauth2_device_state {
    OAUTH2_DEVICE_STARTING,   /* the device authorization request is under way */
    OAUTH2_DEVICE_PENDING,    /* waiting for the person to approve */
    OAUTH2_DEVICE_AUTHORIZED, /* approved: the grant is stored */
    OAUTH2_DEVICE_DENIED,     /* the person refused */
    OAUTH2_DEVICE_EXPIRED,    /* the code expired before it was approved */
    OAUTH2_DEVICE_ERROR,      /* the authorization server or the store failed (see error) */
};
/* "starting", "pending", "authorized", "denied", "expired", "error". */
const char *oauth2_device_state_name(enum oauth2_device_state s);

/* What may be shown of one authorization (no secret in it). */
struct oauth2_device_info {
    char account[STORE_NAME_MAX + 1];
    enum oauth2_device_state state;
    char user_code[OAUTH2_CODE_MAX + 1];
    char verification_uri[OAUTH2_URL_MAX + 1];
    char verification_uri_complete[OAUTH2_URL_MAX + 1]; /* "" when the server gave none */
    int64_t interval_s;       /* the polling interval now (slow_down raises it) */
    int64_t started_at;       /* Unix ms */
    int64_t expires_at;       /* Unix ms: the code's expiry (capped) */
    int64_t ended_at;         /* Unix ms, 0 while starting or pending */
    char error[OAUTH2_DEVICE_ERROR_MAX]; /* why it ended, "" while pending and when authorized */
};

/* Called (on the polling thread) once an approved grant is stored. */
typedef void (*oauth2_devices_authorized_fn)(void *ctx, const char *account);

struct oauth2_devices;

/* A table of authorizations whose grants go to the store in state_dir.
 * NULL with *e (ERR_INTERNAL). */
struct oauth2_devices *oauth2_devices_new(const char *state_dir, oauth2_devices_authorized_fn fn,
                                          void *ctx, struct err *e);
/* Stop every polling thread (a request in flight is waited for, at most
 * OAUTH2_TIMEOUT_MS), join, free; *d = NULL.  NULL-safe.  No start may be
 * running. */
void oauth2_devices_free(struct oauth2_devices **d);

enum {
    OAUTH2_DEVICES_STARTED = 0, /* a new authorization: *out describes it */
    OAUTH2_DEVICES_EXISTING,    /* one was pending for the account: *out is that one */
    OAUTH2_DEVICES_BUSY,        /* another start for the account is under way */
    OAUTH2_DEVICES_FULL,        /* OAUTH2_DEVICE_PENDING_MAX already pending */
};
/* Start a device authorization for account a (an oauth2 provider account
 * with flow device_code and a secrets key), whose configuration `hold`
 * keeps alive (a reference is taken for as long as the polling runs).
 * Blocks for the device authorization request.  One of the codes above, or
 * -1 with *e: ERR_USAGE (not a device-code account), the request's error
 * (ERR_CONN, ERR_TIMEOUT, ERR_TLS, ERR_PROTO, ERR_SERVER, ERR_AUTH for a
 * refused client), ERR_INTERNAL.  A failed start is also remembered (state
 * error) for oauth2_devices_get. */
int oauth2_devices_start(struct oauth2_devices *d, struct cfgref *hold,
                         const struct config_account *a, struct oauth2_device_info *out,
                         struct err *e);

/* The account's latest authorization: 0 with *out, or -1 when none was
 * started (or it was forgotten to make room). */
int oauth2_devices_get(struct oauth2_devices *d, const char *account,
                       struct oauth2_device_info *out);

#endif
