/*
 * api — the bridge's REST API (/api/v1), health, readiness, metrics and the
 * OpenAPI document, served by the HTTP layer (http.h) with the dashboard's
 * static files (http_static.h).
 *
 * openapi.yaml at the top of the source tree is the contract: every route,
 * parameter, response and error is described there.
 *
 * The route table is made of the resources' tables:
 *   api.c            /healthz, /readyz, /metrics, /openapi.yaml
 *   api_accounts.c   /api/v1/accounts[/{account}[/poll]]
 *   api_mailbox.c    /api/v1/accounts/{account}/mailbox, .../messages[/{uidl}[/top]]
 *   api_sessions.c   /api/v1/accounts/{account}/sessions, /api/v1/sessions/...
 *   api_oauth2.c     /api/v1/accounts/{account}/oauth2/device
 *   api_store.c      /api/v1/messages/..., /api/v1/deliveries/...
 *   api_stats.c      /api/v1/webhooks, /api/v1/stats/hourly (dashboard figures)
 *
 * Where the work runs: store reads and writes on the HTTP pool's threads;
 * everything that talks to a POP3 server (one-shot operations through the
 * mailbox service, explicit sessions through sessions.h) on the mailbox
 * service's workers, the connection suspended meanwhile (api_run), so a slow
 * POP3 server never holds an HTTP thread and never delays the store
 * endpoints.  When every worker is busy for longer than the request timeout,
 * or the queue is full, the answer is 503 with Retry-After.
 *
 * Store handles come from a pool (one per request at a time, at most
 * API_STORE_POOL kept idle).
 *
 * /readyz needs no token; without one it answers only the status (200, or
 * 503 "not ready"), with one it also says why it is not ready.
 * POST .../poll never bypasses an account's backoff or the server's
 * LOGIN-DELAY: 429 with Retry-After instead.
 *
 * The listen address, limits, threads and connection settings are read at
 * start; tokens, CORS origins, accounts and public_url come from the current
 * configuration snapshot for each request (a reload applies to them).
 */
#ifndef POP3BRIDGE_API_H
#define POP3BRIDGE_API_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "http.h"
#include "mailbox.h"
#include "pop3.h"
#include "runtime.h"
#include "spool.h"
#include "store.h"

#define API_PREFIX "/api/v1"
#define API_LIST_DEFAULT 50          /* deliveries per page without ?limit */
#define API_LIST_MAX 1000            /* largest ?limit (STORE_LIST_MAX) */
#define API_TOP_LINES_MAX 100000     /* largest ?lines */
#define API_TOP_MAX (4u << 20)       /* bytes of a TOP reply kept */
#define API_STORE_POOL 64            /* idle store handles kept */
#define API_SESSION_WAIT_MS 10000    /* longest wait for a session another request uses */
#define API_RETRY_AFTER_S 30         /* Retry-After for [SYS/TEMP] */
#define API_LOGIN_DELAY_RETRY_S 60   /* Retry-After for [LOGIN-DELAY] */
#define API_BUSY_RETRY_S 5           /* Retry-After when the mailbox workers are busy */
#define API_REFRESH_WAIT_RETRY_S 2   /* Retry-After when the request's time ran out waiting for
                                        another instance's OAuth2 token refresh */
#define API_INLINE_DEFAULT (256u << 10) /* inline limit of an account without webhooks */

struct api;

/* Listen on the configuration's api.listen and serve, with rt as the
 * daemon's interface (borrowed: it must outlive the API).  NULL with e:
 * ERR_CONN "cannot listen on HOST:PORT (api.listen): <reason>" (address in
 * use, cannot be resolved...), or ERR_INTERNAL. */
struct api *api_start(const struct runtime *rt, struct err *e);
/* Stop: let the POP3 work in progress end and answer, stop serving, abort
 * every explicit session (no QUIT), free; *a = NULL.  NULL-safe. */
void api_stop(struct api **a);

/* THE mapping from a POP3 (or store) error to an HTTP status:
 *   ERR_AUTH, ERR_SERVER [AUTH]            502  upstream refused the login
 *   ERR_SERVER [IN-USE]                    409  mailbox locked by another session
 *   ERR_SERVER [LOGIN-DELAY]               429  *retry_after_s = API_LOGIN_DELAY_RETRY_S
 *   ERR_SERVER [SYS/TEMP]                  503  *retry_after_s = API_RETRY_AFTER_S
 *   ERR_SERVER other, ERR_CONN, ERR_TLS,
 *   ERR_PROTO, ERR_LIMIT                   502
 *   ERR_TIMEOUT + ERR_CODE_REFRESH_WAIT    503  *retry_after_s = API_REFRESH_WAIT_RETRY_S
 *                                               (api.request_timeout ran out waiting for
 *                                               another refresh of an OAuth2 token)
 *   ERR_TIMEOUT otherwise                  504
 *   ERR_INTERNAL, ERR_USAGE, ERR_NONE      500
 * *retry_after_s is 0 when no Retry-After applies. */
int api_http_status(const struct err *e, int *retry_after_s);

/* The whole route table (for tests and for the fuzz target). */
const struct http_route *api_routes(size_t *n);

/* ---- for the resource handlers (api_*.c) ----------------------------------------------- */

const struct runtime *api_runtime(const struct http_req *r);
struct sessions *api_sessions(const struct http_req *r);
/* The device-code authorizations started through the API (oauth2_device.h). */
struct oauth2_devices;
struct oauth2_devices *api_devices(const struct http_req *r);
/* The cache of listed messages' summaries (mailbox.h), by account and UIDL. */
struct mailbox_cache *api_summaries(const struct http_req *r);
/* The directory for temporary files (the state directory). */
const char *api_tmp_dir(const struct http_req *r);
/* api.request_timeout as read at start. */
int64_t api_request_timeout_ms(const struct http_req *r);

/* The request's store handle (from the pool; given back when the request
 * completes).  NULL with e when the store cannot be opened. */
struct store *api_store(struct http_req *r, struct err *e);

/* The account named by the {account} parameter; NULL after answering 404. */
const struct config_account *api_account(struct http_req *r);
/* Inline attachment limit for messages of `account`: its first webhook's,
 * else API_INLINE_DEFAULT. */
uint64_t api_inline_max(const struct config *cfg, const char *account);

/* Answer a failed POP3 (or store) operation through api_http_status():
 * detail "<what>: <the error>", slug by status (upstream, upstream-auth,
 * in-use, login-delay, unavailable, upstream-timeout, internal). */
void api_reply_err(struct http_req *r, const char *what, const struct err *e);

/* Strict decimal in [min, max]: no sign, no leading zero, no spaces.  0 or -1. */
int api_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* RFC 3339 time or null (ms <= 0); a string or null (NULL or ""). */
cJSON *api_json_time(int64_t ms);
cJSON *api_json_str(const char *s);

/* A POP3 sink that writes a message body into s. */
void api_sink(struct pop3_sink *k, struct spool *s);
/* Answer with a retrieved message of `account` (its UIDL, "" if unknown):
 * raw with Accept: message/rfc822 (sandboxed, from memory or streamed from
 * the spool's file), else as JSON (message.h), with the stored message's id
 * when the bridge stored it.  Consumes the spool. */
void api_reply_message(struct http_req *r, const char *account, const char *uidl,
                       struct spool *s);
/* Answer with a TOP reply (message.h's top JSON).  Consumes the spool. */
void api_reply_top(struct http_req *r, struct spool *s, const char *uidl);

/* POP3 work for a request.  Embed it first in a larger struct; api_run()
 * runs work() on a mailbox worker with the connection suspended, then
 * reply() on an HTTP thread.  free_fn(the struct) when the request
 * completes.  When no worker takes it (queue full, waited longer than the
 * request timeout, stopping) work() does not run and the answer is 503 with
 * Retry-After: API_BUSY_RETRY_S. */
struct api_work {
    struct mailbox_job job;
    void (*work)(struct api_work *w);
    void (*reply)(struct http_req *r, struct api_work *w);
    bool cancelled;
    struct http_req *r;
};
void api_run(struct http_req *r, struct api_work *w, void (*free_fn)(void *));

#endif
