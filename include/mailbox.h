/*
 * mailbox — the REST API's one-shot POP3 operations, and the bounded pool of
 * worker threads on which all of the API's POP3 work runs.
 *
 * One-shot operations: "open, one operation, QUIT".  Each logs in (pop3.h),
 * does one thing and ends the session.  A message is named by its UIDL (RFC
 * 1939 §7): the session takes the listing and uses the number the UIDL has
 * in it.  Reading operations QUIT and ignore QUIT's outcome (they changed
 * nothing); mailbox_dele() reports success only after QUIT's +OK, since only
 * QUIT commits a deletion (RFC 1939 §6).  A session that fails midway is
 * aborted without QUIT: nothing is deleted.
 *
 * The options come from pop3cfg (the poller's own mapping) with the whole
 * session limited (mailbox_opts), so a one-shot call never outlives the HTTP
 * request that asked for it; a job may shorten the limit further by the time
 * it waited in line (queued_at).
 *
 * The worker pool: a fixed number of threads taking jobs from one queue in
 * order.  The HTTP layer hands a job over and suspends the connection, so a
 * slow POP3 server holds a worker, never an HTTP thread.  The queue is
 * bounded (queue_max jobs; more is MAILBOX_BUSY), and a job that waited
 * longer than queue_wait_ms for a worker is not started: it runs with
 * `cancelled` set, as do the jobs still queued when the service stops.
 * Every submitted job runs exactly once, so whoever submits it can rely on
 * its run() to finish the request.
 *
 * Return values of the one-shot calls: 0; MAILBOX_NOMSG when no message has
 * that UIDL; -1 with e set to the POP3 engine's error (pop3.h: ERR_CONN,
 * ERR_TIMEOUT, ERR_TLS, ERR_PROTO, ERR_SERVER with its code, ERR_AUTH,
 * ERR_LIMIT) or ERR_INTERNAL (out of memory), and *step naming what failed:
 * "POP3 login", "STAT", "listing", "RETR", "TOP", "DELE", or "QUIT (nothing
 * may be assumed deleted)".  The one-shot calls are thread-safe and block:
 * call them from a job.
 */
#ifndef POP3BRIDGE_MAILBOX_H
#define POP3BRIDGE_MAILBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "pop3.h"

#define MAILBOX_WORKERS_MAX 256   /* threads of one pool */

enum {
    MAILBOX_NOMSG = 1, /* no message with that UIDL in the mailbox */
    MAILBOX_BUSY,      /* the queue is full, or the service is stopping */
};

/* The options of a one-shot call for account a: pop3cfg_opts(), with the
 * whole session limited to limit_ms (> 0) and to the account's own session
 * limit, whichever is shorter.  Strings are borrowed from a. */
void mailbox_opts(const struct config_account *a, int64_t limit_ms, struct pop3_opts *o);

/* STAT and the server's CAPA lines (as after login).  *out is the caller's
 * to free with mailbox_info_free(). */
struct mailbox_info {
    uint32_t count;
    uint64_t octets;
    char **capa;          /* n_capa malloc'd lines */
    size_t n_capa;
};
int mailbox_info(const struct pop3_opts *o, struct mailbox_info *out, const char **step,
                 struct err *e);
void mailbox_info_free(struct mailbox_info *i);

/* The listing (STAT, UIDL, LIST).  *out is malloc'd: mailbox_listing_free(). */
int mailbox_listing(const struct pop3_opts *o, struct pop3_listing **out, const char **step,
                    struct err *e);
void mailbox_listing_free(struct pop3_listing **l);

/* ---- the listing with each message's From, Subject and Date ----------------------------- */

#define MAILBOX_FIELD_MAX 255            /* bytes kept of a name, address, subject, date */
#define MAILBOX_CACHE_MAX 4096           /* summaries a cache keeps (all accounts) */
#define MAILBOX_TOP_PER_LISTING 200      /* TOP n 0 round trips in one listing; the
                                            messages past that get no summary */
#define MAILBOX_HEADER_MAX (64u << 10)   /* bytes of a header read; the rest is skipped */

/* A message's summary, decoded (RFC 2047) as in the message JSON (message.h):
 * "" where the header is missing or not understood; date is RFC 3339 UTC. */
struct mailbox_summary {
    bool known;                                   /* false: no summary (see above) */
    char from_name[MAILBOX_FIELD_MAX + 1];
    char from_address[MAILBOX_FIELD_MAX + 1];
    char subject[MAILBOX_FIELD_MAX + 1];
    char date[MAILBOX_FIELD_MAX + 1];
};

/* The summary of a message header (what TOP n 0 gives, or a whole message:
 * only the header is read).  0, or -1 with e (ERR_INTERNAL). */
int mailbox_summary_parse(const void *raw, size_t len, struct mailbox_summary *out,
                          struct err *e);

/* Summaries by account and UIDL, at most `max` (FIFO: the oldest entry gives
 * way).  A UIDL names one message for good (RFC 1939 §7), so an entry never
 * goes stale.  Thread-safe. */
struct mailbox_cache;
struct mailbox_cache *mailbox_cache_new(size_t max); /* NULL: out of memory or max 0 */
void mailbox_cache_free(struct mailbox_cache **c);    /* *c = NULL; NULL-safe */
bool mailbox_cache_get(struct mailbox_cache *c, const char *account, const char *uidl,
                       struct mailbox_summary *out);
void mailbox_cache_put(struct mailbox_cache *c, const char *account, const char *uidl,
                       const struct mailbox_summary *s);
size_t mailbox_cache_count(struct mailbox_cache *c);

/* Where else a summary may come from before asking the server (the store):
 * 0 with *out filled, 1 when it has none, -1 with e to fail the listing. */
typedef int (*mailbox_summary_fn)(void *ctx, const char *uidl, struct mailbox_summary *out,
                                  struct err *e);

/* The listing (as mailbox_listing) and each listed message's summary in
 * (*sums)[i] for entries[i]: from the cache, else from lookup (may be NULL),
 * else from TOP n 0 in the same session, at most MAILBOX_TOP_PER_LISTING of
 * them and none after half of o->session_timeout_ms; what lookup and TOP gave is put in the cache (may be NULL).  A TOP
 * the server refuses (-ERR) leaves that message without a summary; a TOP
 * that breaks the session ends the TOPs (the session is aborted: nothing was
 * changed), the listing is still answered.  *out and *sums are the caller's
 * (mailbox_listing_free, free).  Errors as mailbox_listing, or lookup's. */
int mailbox_listing_summaries(const struct pop3_opts *o, const char *account,
                              struct mailbox_cache *cache, mailbox_summary_fn lookup,
                              void *ctx, struct pop3_listing **out,
                              struct mailbox_summary **sums, const char **step,
                              struct err *e);

/* RETR / TOP the message with this UIDL to the sink. */
int mailbox_retr(const struct pop3_opts *o, const char *uidl, const struct pop3_sink *sink,
                 const char **step, struct err *e);
int mailbox_top(const struct pop3_opts *o, const char *uidl, unsigned lines,
                const struct pop3_sink *sink, const char **step, struct err *e);
/* DELE the message with this UIDL and QUIT: 0 only when QUIT answered +OK
 * (the message is deleted).  On -1 nothing may be assumed deleted. */
int mailbox_dele(const struct pop3_opts *o, const char *uidl, const char **step,
                 struct err *e);

/* ---- the worker pool ------------------------------------------------------------------- */

/* A unit of work.  The submitter owns it and keeps it alive until run()
 * has been called (run may free it). */
struct mailbox_job {
    void (*run)(struct mailbox_job *j, bool cancelled);
    struct mailbox_job *next; /* the service's */
    int64_t queued_at;        /* set by mailbox_submit (monotonic ms); run() may read it */
};

struct mailbox;

/* workers threads (1..MAILBOX_WORKERS_MAX), at most queue_max jobs waiting,
 * each at most queue_wait_ms.  NULL with e (ERR_USAGE, ERR_INTERNAL: no
 * thread). */
struct mailbox *mailbox_new(unsigned workers, size_t queue_max, int64_t queue_wait_ms,
                            struct err *e);
/* Queue j: 0, or MAILBOX_BUSY (j was not taken and will not run). */
int mailbox_submit(struct mailbox *m, struct mailbox_job *j);
/* Take no more jobs, run the queued ones cancelled, wait for the running
 * ones to end.  Idempotent. */
void mailbox_stop(struct mailbox *m);
/* Stop, join and free; *m = NULL.  NULL-safe. */
void mailbox_free(struct mailbox **m);

/* Jobs waiting, and jobs running now. */
void mailbox_load(struct mailbox *m, size_t *queued, size_t *running);

#endif
