/*
 * webhook — signed HTTP POSTs of events: signing, sending, classifying.
 *
 * Follows Standard Webhooks (https://www.standardwebhooks.com, spec v1):
 * headers webhook-id, webhook-timestamp (unix seconds of this attempt) and
 * webhook-signature = "v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>",
 * where key is the base64-decoded part of a "whsec_<base64>" secret.
 * HTTP semantics per RFC 9110 (Retry-After: delay-seconds or HTTP-date,
 * section 10.2.3); redirects are never followed.
 *
 * This module is the HTTP machinery only: it knows nothing of the store, of
 * messages or of the configuration file.  The delivery logic builds the
 * body, submits it, and records the outcome webhook_classify() gives.
 *
 * Process set-up: webhook_global_init() once, before any other thread
 * exists (it calls curl_global_init, which is not thread-safe), and
 * webhook_global_cleanup() once at exit.  main() does this for the daemon;
 * tests and tools call them themselves.  The process must ignore SIGPIPE.
 *
 * Threads: the pure functions (sign, verify, id, classify, delays, parsing)
 * are thread-safe.  A sender is used by one thread at a time, except
 * webhook_sender_wakeup(), which any thread may call.
 *
 * Secrets: keys and secrets never appear in errors, results or logs.
 *
 * Bodies: a request carries its body in memory, or a prepare callback that
 * the sender calls just before the transfer starts; it writes the body to a
 * file of its own, passing every byte through the signer it is given
 * (HMAC-SHA256 computed while the body is written, never from a second
 * copy), and the sender streams the file to the receiver with libcurl's
 * read callback.  So a body exists only while its transfer runs, and the
 * memory a transfer takes does not depend on the body's size.
 *
 * Queues: every request joins a named queue (e.g. its webhook's), which has
 * its own limit on transfers at once; the sender shares its own limit
 * fairly among the queues that have work (see webhook_sender_submit), so a
 * slow receiver delays only its own queue.
 *
 * Typical use by the delivery logic:
 *
 *     webhook_secret_decode(secret, key, sizeof key, &key_len, &e);   // at config load
 *     webhook_header_check(name, value, &e);                           // at config load
 *     s = webhook_sender_new(64, &e);
 *     webhook_event_id(event_key, webhook_name, id, sizeof id);
 *     req = (struct webhook_request){ .url = url, .id = id, .key = key, .key_len = key_len,
 *                                     .prepare = write_event, .queue = webhook_name,
 *                                     .queue_max_in_flight = 8, .done = on_done, ... };
 *     webhook_sender_submit(s, &req, delivery, &e);
 *     while (...) webhook_sender_run(s, 1000, &e);        // calls write_event, on_done
 *     write_event(delivery, sig, &fd, &len, &e): fd = a temporary file; for each piece
 *              write(fd, piece) and webhook_signer_update(sig, piece); *len = bytes
 *     on_done: switch (webhook_classify(r)) { DELIVERED: record 2xx; DISABLED: disable
 *              the webhook; RETRY / REJECTED: d = webhook_next_delay_ms(schedule, n,
 *              attempts, r->retry_after_s, WEBHOOK_JITTER_DEFAULT), d < 0 -> dead }
 */
#ifndef POP3BRIDGE_WEBHOOK_H
#define POP3BRIDGE_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* ---- limits ------------------------------------------------------------ */
#define WEBHOOK_SECRET_PREFIX "whsec_"
#define WEBHOOK_KEY_MIN 24                /* decoded key bytes (Standard Webhooks) */
#define WEBHOOK_KEY_MAX 64
#define WEBHOOK_SIG_SIZE 64               /* "v1," + 44 base64 + NUL fits */
#define WEBHOOK_KEYS_MAX 4                /* signing keys at once (secret rotation) */
#define WEBHOOK_SIGS_SIZE (WEBHOOK_KEYS_MAX * WEBHOOK_SIG_SIZE) /* space-separated list */
#define WEBHOOK_CREDENTIAL_MAX 4096       /* bytes of a user name, password or bearer token */
#define WEBHOOK_ID_SIZE 40                /* "msg_" + 32 hex + NUL fits */
#define WEBHOOK_ID_MAX 256                /* longest webhook-id accepted when verifying */
#define WEBHOOK_SIGNATURES_MAX 4096       /* longest webhook-signature header verified */
#define WEBHOOK_HEADERS_MAX 32            /* custom headers per request */
#define WEBHOOK_HEADER_NAME_MAX 64
#define WEBHOOK_HEADER_VALUE_MAX 1024
#define WEBHOOK_URL_MAX 2048
#define WEBHOOK_IN_FLIGHT_MAX 256         /* largest max_in_flight a sender accepts */
#define WEBHOOK_IN_FLIGHT_DEFAULT 8
#define WEBHOOK_QUEUE_MAX 4096            /* submitted, not yet completed, per sender */
#define WEBHOOK_QUEUES_MAX 128            /* queues with requests at once, per sender */
#define WEBHOOK_QUEUE_NAME_MAX 128        /* bytes of a queue's name */
#define WEBHOOK_TIMEOUT_DEFAULT_MS 15000  /* whole request */
#define WEBHOOK_CONNECT_TIMEOUT_DEFAULT_MS 10000
#define WEBHOOK_RESPONSE_KEEP 1024        /* response body bytes kept; the rest is discarded */
#define WEBHOOK_RETRY_AFTER_MAX_S 86400   /* larger Retry-After values are clamped to this */
#define WEBHOOK_RETRY_AFTER_RAW_MAX 64    /* longest Retry-After header value kept */
#define WEBHOOK_TOLERANCE_S 300           /* default timestamp tolerance when verifying */
#define WEBHOOK_JITTER_DEFAULT 0.2        /* +-20% on each retry delay */

/* ---- process set-up ---------------------------------------------------- */

/* curl_global_init(CURL_GLOBAL_DEFAULT).  0, or -1 with e (ERR_INTERNAL). */
int webhook_global_init(struct err *e);
void webhook_global_cleanup(void);

/* ---- signing ----------------------------------------------------------- */

/* Decode a "whsec_<base64>" secret into key (key_size bytes), strictly:
 * the prefix is required, standard base64 alphabet, padding only at the end
 * and correct, no whitespace, no stray bits; the key must be WEBHOOK_KEY_MIN..
 * WEBHOOK_KEY_MAX bytes.  0 with *key_len set, or -1 with e (ERR_USAGE; the
 * message says what is wrong and never quotes the secret). */
int webhook_secret_decode(const char *secret, unsigned char *key, size_t key_size,
                          size_t *key_len, struct err *e);

/* Write "v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>" into out.
 * 0, or -1 if out_size is too small (WEBHOOK_SIG_SIZE is enough), an argument
 * is missing, or OpenSSL fails. */
int webhook_sign(const unsigned char *key, size_t key_len, const char *id, int64_t ts,
                 const char *body, size_t body_len, char *out, size_t out_size);

/* One signing key: the decoded part of a "whsec_" secret. */
struct webhook_key {
    const unsigned char *key;
    size_t len;
};

/* The same signature computed while the body is produced: a signer over
 * "{id}.{ts}." is fed the body in pieces with webhook_signer_update (in
 * order, any sizes), and webhook_signer_final writes what webhook_sign gives
 * for the whole body.  new: NULL if an argument is missing or OpenSSL fails.
 * update/final: 0, or -1 (OpenSSL failed, out too small, or final already
 * called).  A signer is used by one thread; free accepts NULL. */
struct webhook_signer;
struct webhook_signer *webhook_signer_new(const unsigned char *key, size_t key_len,
                                          const char *id, int64_t ts);
int webhook_signer_update(struct webhook_signer *sig, const void *data, size_t len);
uint64_t webhook_signer_bytes(const struct webhook_signer *sig); /* body bytes fed so far */
int webhook_signer_final(struct webhook_signer *sig, char *out, size_t out_size);
void webhook_signer_free(struct webhook_signer *sig);

/* A signer with 1..WEBHOOK_KEYS_MAX keys, as while a secret is rotated:
 * webhook_signer_final then writes one "v1,<base64>" per key, in the keys'
 * order, separated by single spaces (the webhook-signature header of
 * Standard Webhooks; WEBHOOK_SIGS_SIZE is enough).  A receiver that knows
 * any one of the secrets verifies the request.  NULL as webhook_signer_new,
 * also for n_keys out of range or an empty key. */
struct webhook_signer *webhook_signer_new_keys(const struct webhook_key *keys, size_t n_keys,
                                               const char *id, int64_t ts);

/* Verify a received request as a receiver must: `timestamp` is the decimal
 * webhook-timestamp header and must be within tolerance_s of now (both
 * directions); `signatures` is the webhook-signature header, one or more
 * space-separated "v1,<base64>" entries (other versions are ignored); the
 * comparison is constant-time.  0 if one signature matches; -1 with e:
 * ERR_PROTO (missing or malformed header, over a limit), ERR_AUTH
 * ("timestamp too old" / "too new", "no matching signature"). */
int webhook_verify(const unsigned char *key, size_t key_len, const char *id,
                   const char *timestamp, const char *body, size_t body_len,
                   const char *signatures, int64_t now, int64_t tolerance_s, struct err *e);

/* The idempotency id of one stored message for one webhook: "msg_" followed
 * by the first 32 lowercase hex digits of SHA-256(event_key NUL webhook),
 * where event_key is the random key the store gave the message.  Stable
 * across retries and restarts, and new for a new message even when a server
 * reuses an old one's UIDL (RFC 1939 allows that).  0, or -1 if an argument
 * is NULL, the key is empty, or out_size < WEBHOOK_ID_SIZE. */
int webhook_event_id(const char *event_key, const char *webhook, char *out, size_t out_size);

/* The id of the first releases, for messages stored before event keys
 * existed: "msg_" + the first 32 hex digits of SHA-256(account NUL uidl NUL
 * webhook).  Same inputs, same id; a reused UIDL repeats it.  0, or -1 as
 * above. */
int webhook_id(const char *account, const char *uidl, const char *webhook, char *out,
               size_t out_size);

/* ---- outcomes and retries ---------------------------------------------- */

struct webhook_result {
    int status;              /* HTTP status of the response; 0 if none arrived */
    struct err err;          /* transport failure, ERR_NONE if the exchange completed:
                              * ERR_TIMEOUT, ERR_CONN, ERR_TLS, ERR_PROTO, ERR_USAGE
                              * (URL or protocol refused), ERR_INTERNAL; msg is curl's
                              * text, sanitised.  status may be set as well when the
                              * failure came after the status line. */
    bool aborted;            /* the sender was freed (or its queues dropped) before
                              * the request finished */
    bool prepare_failed;     /* the prepare callback failed (err is its error):
                              * nothing was sent */
    int64_t retry_after_s;   /* Retry-After of a 429 or 503, clamped; -1 if none */
    int64_t duration_ms;     /* from start of the transfer to its end */
    int64_t timestamp;       /* the webhook-timestamp that was sent */
    char response[WEBHOOK_RESPONSE_KEEP + 4]; /* start of the response body, sanitised */
    uint64_t response_bytes; /* response body bytes received in total */
};

enum webhook_outcome {
    WEBHOOK_DELIVERED, /* 2xx: done */
    WEBHOOK_DISABLED,  /* 410 Gone: the receiver asked to be disabled */
    WEBHOOK_RETRY,     /* temporary: 429, 408, 5xx, timeout, connection, TLS */
    WEBHOOK_REJECTED,  /* the receiver refused (other 4xx), a 3xx redirect, a 1xx,
                        * or a URL/protocol the sender refuses.  Retried on the
                        * same schedule as WEBHOOK_RETRY (the receiver may be fixed
                        * before the schedule ends) but marked, since it usually
                        * means a configuration problem on one side. */
};

/* The one place that maps a result to what the delivery logic does.
 * Any transport error (err.kind != ERR_NONE, or aborted) is not a delivery:
 * ERR_USAGE gives WEBHOOK_REJECTED, everything else WEBHOOK_RETRY. */
enum webhook_outcome webhook_classify(const struct webhook_result *r);
const char *webhook_outcome_name(enum webhook_outcome o); /* "delivered", ... */

/* Delay before the next attempt, after `attempt` attempts have failed
 * (attempt >= 1): schedule_ms[attempt-1] scaled by a random factor in
 * [1 - jitter, 1 + jitter] (jitter is clamped to 0..1), but at least
 * retry_after_s seconds when that is >= 0.  -1 when attempt > n: the
 * schedule is exhausted and the delivery is dead.  Also -1 for attempt < 1. */
int64_t webhook_next_delay_ms(const int64_t *schedule_ms, size_t n, unsigned attempt,
                              int64_t retry_after_s, double jitter);

/* A Retry-After value: delay-seconds (digits only) or an HTTP-date (RFC 9110
 * IMF-fixdate, also the obsolete RFC 850 and asctime forms), relative to now
 * (unix seconds); a date in the past gives 0.  Clamped to
 * WEBHOOK_RETRY_AFTER_MAX_S.  -1 if the value is not valid. */
int64_t webhook_parse_retry_after(const char *value, int64_t now);

/* ---- custom headers ---------------------------------------------------- */

struct webhook_header {
    const char *name;
    const char *value;
};

/* Check one custom header from the configuration: the name is an RFC 9110
 * token of at most WEBHOOK_HEADER_NAME_MAX bytes and not one the sender sets
 * itself (webhook-*, Content-Type, Content-Length, Transfer-Encoding, Host,
 * User-Agent, Expect, Connection); the value has at most
 * WEBHOOK_HEADER_VALUE_MAX bytes and no control characters other than TAB
 * (so no CR or LF).  0, or -1 with e (ERR_USAGE, naming the header but not
 * quoting the value). */
int webhook_header_check(const char *name, const char *value, struct err *e);

/* ---- sender ------------------------------------------------------------ */

/* What one POST needs.  Every pointer but body is only read during
 * webhook_sender_submit() (strings are copied). */
struct webhook_request {
    const char *url;                 /* http:// or https:// */
    const char *id;                  /* webhook-id, e.g. from webhook_event_id() */
    const unsigned char *key;        /* signing key (webhook_secret_decode) */
    size_t key_len;
    const struct webhook_key *keys;  /* or, with n_keys > 0 (key then unused): every key, */
    size_t n_keys;                   /* one signature each, 1..WEBHOOK_KEYS_MAX */
    char *body;                      /* malloc'd JSON; the sender owns it (see submit) */
    size_t body_len;
    /* Or, with body NULL: called once, when the transfer is about to start
     * (never from submit), to write the body into a file (*fd, read with
     * pread from offset 0; the sender closes it), feeding every byte, in
     * order, to sig; *len gets the byte count, which must equal what sig
     * was fed.  0, or -1 with e: the request then completes at once with
     * prepare_failed and that error, and nothing is sent. */
    int (*prepare)(void *user, struct webhook_signer *sig, int *fd, uint64_t *len,
                   struct err *e);
    const char *queue;               /* the queue it joins (NULL: ""), at most
                                      * WEBHOOK_QUEUE_NAME_MAX bytes */
    int queue_max_in_flight;         /* that queue's limit, 1..WEBHOOK_IN_FLIGHT_MAX
                                      * (0: WEBHOOK_IN_FLIGHT_DEFAULT); the latest
                                      * request submitted to the queue sets it */
    const struct webhook_header *headers; /* custom headers, checked as webhook_header_check */
    size_t n_headers;
    int64_t timeout_ms;              /* whole request; <= 0: WEBHOOK_TIMEOUT_DEFAULT_MS */
    int64_t connect_timeout_ms;      /* <= 0: WEBHOOK_CONNECT_TIMEOUT_DEFAULT_MS */
    const char *ca_file;             /* PEM trust anchors; NULL: system store */
    const char *client_cert;         /* PEM client certificate for mutual TLS; NULL: none */
    const char *client_key;          /* its PEM private key; NULL: in client_cert's file */
    const char *proxy;               /* "http://host:port": tunnel through it with CONNECT
                                      * (also for http:// URLs); NULL: no proxy.  The
                                      * environment (http_proxy, NO_PROXY...) is ignored. */
    /* Credentials for the receiver, never for the proxy; at most
     * WEBHOOK_CREDENTIAL_MAX bytes each, no control characters.  Sent only to
     * https:// URLs unless allow_plaintext_credentials. */
    const char *basic_user;          /* HTTP Basic (RFC 7617), with basic_password */
    const char *basic_password;
    const char *bearer;              /* "Authorization: Bearer" (RFC 6750) */
    const struct webhook_header *secret_headers; /* headers whose values are secrets */
    size_t n_secret_headers;         /* (checked as webhook_header_check) */
    bool allow_plaintext_credentials;
    int64_t timestamp;               /* webhook-timestamp; 0: now, when the transfer
                                      * starts (the body is signed then) */
    /* Called exactly once per accepted request, from webhook_sender_run(),
     * webhook_sender_drop_queued() or webhook_sender_free().  r is valid only
     * during the call.  The callback may submit new requests, but must not
     * run, drop or free the sender. */
    void (*done)(void *user, const struct webhook_result *r);
};

struct webhook_sender;

/* A sender with at most max_in_flight transfers at once (1..
 * WEBHOOK_IN_FLIGHT_MAX).  NULL with e: ERR_USAGE (bad max_in_flight),
 * ERR_INTERNAL (out of memory, curl). */
struct webhook_sender *webhook_sender_new(int max_in_flight, struct err *e);

/* Queue one POST; it starts as soon as its queue and the sender have a free
 * slot, and is signed then.  Within a queue requests start in order.  When
 * slots are free the queues take turns; a queue running fewer transfers
 * than its fair share (max_in_flight over the queues with requests, rounded
 * up) gets the next free slot before any queue running more.  The sender
 * takes ownership of req->body in every case: freed after the done
 * callback, or before this returns -1.  -1 with e: ERR_USAGE (missing
 * field, both body and prepare, URL not http/https or too long, bad custom
 * header, key length or count, credentials over http:// without
 * allow_plaintext_credentials, both basic and bearer, a credential too long or
 * with a control character, queue name or limit, sender shutting down), ERR_LIMIT
 * (WEBHOOK_QUEUE_MAX requests already pending, or WEBHOOK_QUEUES_MAX queues
 * in use), ERR_INTERNAL (out of memory, curl). */
int webhook_sender_submit(struct webhook_sender *s, const struct webhook_request *req,
                          void *user, struct err *e);

/* Drive the transfers: start waiting requests while slots are free (their
 * prepare callbacks run then), wait at
 * most timeout_ms (0: do not wait) for network activity, and call the done
 * callback of every request that finished.  Returns how many finished, or -1
 * with e: ERR_INTERNAL (curl multi failure), ERR_USAGE (called from a done
 * callback). */
int webhook_sender_run(struct webhook_sender *s, int timeout_ms, struct err *e);

/* Make a webhook_sender_run() that is waiting return early.  Any thread. */
void webhook_sender_wakeup(struct webhook_sender *s);

/* Requests accepted and not yet finished (running + waiting). */
size_t webhook_sender_in_flight(const struct webhook_sender *s);
/* Requests running right now (<= max_in_flight). */
size_t webhook_sender_active(const struct webhook_sender *s);

/* Complete every request that has not started, in every queue, with
 * aborted = true (running ones go on).  The count, or -1 with e: ERR_USAGE
 * (no sender, or called from a done callback). */
int webhook_sender_drop_queued(struct webhook_sender *s, struct err *e);

/* Abort everything (each unfinished request's done callback runs once with
 * aborted = true, classified WEBHOOK_RETRY) and free.  NULL is a no-op. */
void webhook_sender_free(struct webhook_sender *s);

#endif
