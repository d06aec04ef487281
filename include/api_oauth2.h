/*
 * api_oauth2 — OAuth2 authorization through the API (issue 11 §2):
 *
 *   POST /api/v1/accounts/{account}/oauth2/device   start a device-code
 *        authorization (RFC 8628): 201 with verification_uri, user_code,
 *        expires_in and interval; 200 with the same while one is pending
 *        for the account (no new code is asked for).  The device
 *        authorization request runs on a mailbox worker, the polling of the
 *        token endpoint on a thread of its own (oauth2_device.h): no HTTP
 *        thread waits for the authorization server.
 *   GET  /api/v1/accounts/{account}/oauth2/device   its state: pending,
 *        authorized, denied, expired or error (with the reason).
 *
 * 404 for an unknown account or when no authorization was started; 409
 * (wrong-flow) for an account whose oauth2 is not a provider with the
 * device_code flow; 409 (in-progress) while another request is starting
 * one; 429 (device-limit) when OAUTH2_DEVICE_PENDING_MAX are pending.  No
 * token and no device code is ever part of an answer.
 *
 * api_oauth2_account_json() is the "oauth2" member of an account in
 * GET /api/v1/accounts[/{account}]: null for an account without an OAuth2
 * provider, else {provider, flow, authorization, access_expires_at, error}.
 */
#ifndef POP3BRIDGE_API_OAUTH2_H
#define POP3BRIDGE_API_OAUTH2_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "http_route.h"
#include "pop3.h"
#include "store.h"

struct http_req;

extern const struct http_route api_oauth2_routes[];
extern const size_t api_oauth2_nroutes;

/* For an account with an OAuth2 provider (oauth2.h), like the poller: its
 * current access token (refreshed first when due; with `rejected`, the
 * token the POP3 server just refused, a new one unless the stored one
 * already differs) into tok (OAUTH2_TOKEN_BUF bytes, the caller wipes it)
 * and o->oauth2_token.  Other accounts: nothing to do.  0, or -1 with *e
 * (oauth2_access_token's errors; ERR_AUTH + ERR_CODE_NO_GRANT when the
 * account must be authorized).  May block on the token endpoint: call it
 * on a mailbox worker.  st: the request's store handle.  until_mono_ms:
 * the request's deadline (clock_mono_ms; 0 none): waiting for another
 * instance's refresh stops there with ERR_TIMEOUT + ERR_CODE_REFRESH_WAIT
 * (answered 503 with Retry-After, api_http_status). */
int api_oauth2_login_opts(struct store *st, const struct config_account *a, const char *rejected,
                          int64_t until_mono_ms, struct pop3_opts *o, char *tok, struct err *e);
/* Whether a failed POP3 login of account a is worth one more try with a
 * fresh token: a provider account whose token the server refused. */
bool api_oauth2_refused(const struct config_account *a, const struct err *e);

/* The account's OAuth2 summary (see above); NULL when the store failed. */
cJSON *api_oauth2_account_json(struct http_req *r, const struct config_account *ca);

#endif
