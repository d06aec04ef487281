/*
 * store — the bridge's durable state behind one interface.
 *
 * What it holds:
 *   - per account, the UIDLs seen on the server and what became of each
 *     (RFC 1939 "unique-id listing"; the store treats a UIDL as an opaque
 *     byte string of 1..STORE_UIDL_MAX bytes);
 *   - the raw messages (RFC 5322 bytes exactly as retrieved) with their size,
 *     SHA-256 and a few summary header fields;
 *   - the delivery outbox: one delivery per message and webhook, with every
 *     attempt recorded;
 *   - per-webhook "disabled" marks (410 Gone) and per-account runtime state;
 *   - per account, its OAuth2 grant: access and refresh tokens as sealed,
 *     opaque bytes (the store never sees a token in clear; oauth2.h seals
 *     them), their times, a refresh lease and a version for compare-and-set.
 *
 * Two backends provide every call (bridge/store.c dispatches through an ops
 * table, bridge/store_impl.h):
 *   - bridge/store_sqlite.c, the default, keeps everything in one SQLite
 *     database, `<state_dir>/pop3bridge.db`, in WAL mode with
 *     synchronous=FULL, foreign keys on and a busy timeout;
 *   - bridge/store_pg.c keeps it in PostgreSQL (libpq), so that several
 *     instances share one state: a process-wide pool of at most `pool`
 *     connections (store_setup), each call borrowing one for its duration;
 *     leases taken with SELECT ... FOR UPDATE SKIP LOCKED; message bodies in
 *     rows of STORE_IO_CHUNK bytes, written and read one chunk at a time.
 * Both keep a schema version and migrate it at open, and refuse a schema
 * newer than STORE_SCHEMA_VERSION with one line.
 *
 * Threads: a `struct store *` is one connection.  Open one handle per thread
 * (poller threads, the delivery thread, each HTTP worker); a handle is used
 * by one thread at a time.  Different handles may be used concurrently from
 * different threads and processes: writers are serialised by the database
 * (each write is a transaction taking the write lock up front, waiting at
 * most STORE_BUSY_TIMEOUT_MS), readers never block writers.
 *
 * Times are Unix time in milliseconds (int64_t); 0 means "never"/"unset".
 * The caller passes `now` so the store never reads a clock itself.
 *
 * Leases, not claims: work taken by a worker (a delivery being sent, later an
 * account being polled) carries an owner — the taking instance's id, at most
 * STORE_OWNER_MAX bytes — and an expiry (lease_until, Unix ms).  The owner
 * renews its leases while it works; once a lease has expired anyone may take
 * the work again.  Nothing waits for a restart.  An instance that starts
 * under the id of a previous run releases that run's leases at once.
 *
 * Ids: messages and deliveries have stable positive int64 ids.  At the REST
 * API level they are opaque strings "m_<n>" and "d_<n>"
 * (store_msg_id_format/parse, store_delivery_id_format/parse).  List cursors
 * are opaque strings too.
 *
 * Return values: 0 on success; -1 with *e filled on error.  Calls that look
 * something up by id or name return STORE_NOTFOUND (1) when it does not
 * exist, leaving *e untouched.  Error kinds:
 *   ERR_INTERNAL  the database or the file system failed (message names the
 *                 operation and carries SQLite's or the OS's text), or the
 *                 database is corrupt, or its schema is newer than this build;
 *   ERR_LIMIT     a named limit below was exceeded (what and which limit);
 *   ERR_USAGE     the call itself is wrong: empty name, unknown status,
 *                 retrying a delivered delivery, a UIDL already stored, a
 *                 malformed id or cursor, nested batches, a callback's abort.
 * Strings in errors are ours; no message content, header or secret is ever
 * copied into an error.
 *
 * How the bridge uses it:
 *   start-up   store_open in main; store_delivery_release(owner, 0) and
 *              store_account_release(owner) once for this instance's own id
 *              (leases a previous run of it held).
 *   scheduler  store_account_lease before an account's first poll (and
 *              again whenever the instance is not sure it still holds it);
 *              a keeper thread: store_account_renew every quarter of the
 *              lease; at stop store_account_release.
 *   poller     store_uidls_each -> diff with UIDL listing -> for each new
 *              message: store_msg_begin/_write... while it is received,
 *              then on the committer's thread store_msg_finish_many of the
 *              messages already fully received inside store_batch_begin/_commit
 *              (only after commit: DELE allowed);
 *              "start: new" first poll: store_uidls_record_ignored;
 *              store_uidls_deletable -> DELE -> QUIT +OK ->
 *              store_uidls_mark_deleted; store_uidls_forget_vanished with
 *              the full listing; store_account_set for the visible state
 *              (a shared store: store_poll_record saves it with the poll).
 *   delivery   store_delivery_lease_due (per webhook) -> store_msg_load_many
 *              of the lease's messages (small bodies with it; store_msg_load
 *              and store_msg_stream for the rest) -> POST
 *              (store_delivery_renew meanwhile) -> the outcomes of a flush
 *              together in a batch: store_delivery_record_many;
 *              410: store_webhook_disable;
 *              SIGHUP: store_webhooks_enable_all; periodically
 *              store_purge_bodies.
 *   oauth2     store_oauth2_get -> (refresh due) store_oauth2_lease -> token
 *              endpoint -> store_oauth2_refreshed or store_oauth2_failed;
 *              `oauth2 login`: store_oauth2_grant.
 *   API        store_msg_get, store_body_open/_read/_close,
 *              store_delivery_list/_get/_retry, store_account_get/_counts,
 *              store_uidl_get, store_delivery_counts (metrics),
 *              store_webhook_stats, store_stats_hourly (dashboard).
 *
 * Memory: every struct filled by the store is caller-owned plain data with
 * fixed-size, NUL-terminated string fields; strings passed to callbacks are
 * valid only during the callback.  Every _free/_close/_abort accepts NULL.
 */
#ifndef POP3BRIDGE_STORE_H
#define POP3BRIDGE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "pollhist.h"

/* ---- limits ------------------------------------------------------------ */
#define STORE_NOTFOUND 1
#define STORE_DB_FILE "pop3bridge.db"
#define STORE_NAME_MAX 128            /* account and webhook names, bytes */
#define STORE_UIDL_MAX 255            /* bytes (RFC 1939 says 70; be lenient) */
#define STORE_META_MAX 998            /* summary header fields; longer values
                                         are truncated at a UTF-8 boundary */
#define STORE_ERROR_MAX 512           /* error texts kept; longer: truncated */
#define STORE_STATE_MAX 31            /* account state names ("auth_error") */
#define STORE_ERROR_CODE_MAX 31       /* account last-error codes ("login_delay") */
#define STORE_OUTCOME_MAX 31          /* attempt outcome names */
#define STORE_SHA256_HEX 64
#define STORE_ID_MAX 24               /* "m_9223372036854775807" + NUL fits */
#define STORE_CURSOR_MAX 24
#define STORE_WEBHOOKS_MAX 64         /* webhooks per message */
#define STORE_LIST_MAX 1000           /* rows per store_delivery_list page */
#define STORE_DUE_MAX 1000            /* rows per store_delivery_lease_due */
#define STORE_LOAD_MANY_MAX 1000      /* messages per store_msg_load_many */
#define STORE_OWNER_MAX 64            /* lease owner (an instance id), bytes */
#define STORE_KEY_HEX 32              /* a message's event key: 128 random bits, hex */
#define STORE_LEASE_LOST 2            /* record: another owner holds the lease now */
#define STORE_UIDLS_MAX 1000000       /* UIDLs in one call (ignored / listed) */
#define STORE_MSG_MAX (512ull << 20)  /* bytes in one stored message */
#define STORE_SPOOL_MEM_MAX (1u << 20) /* larger messages spool to a temp file */
#define STORE_IO_CHUNK (64u << 10)    /* blob I/O and stream chunk size */
#define STORE_BUSY_TIMEOUT_MS 10000   /* wait for another writer at most this */
#define STORE_SEALED_MAX 16448        /* bytes of one sealed OAuth2 token */
#define STORE_FLOW_MAX 31             /* OAuth2 flow names ("client_credentials") */
#define STORE_OAUTH2_BUSY 3           /* oauth2 lease: another owner is refreshing */
#define STORE_EVENT_TYPE_MAX 31       /* event type names ("account.auth_error") */
#define STORE_EVENT_DATA_MAX 65536    /* bytes of an event's data (JSON text) */
#define STORE_RETRY_BULK_MAX 1000     /* deliveries one store_delivery_retry_bulk resets */
#define STORE_SCHEMA_VERSION 10       /* newest schema this build knows */
#define STORE_LINK_KEY_LEN 32         /* bytes of the link key (links.h) */

struct store;      /* one connection; see "Threads" above */
struct store_msg;  /* a message being written (store_msg_begin..finish) */
struct store_body; /* a reader of one stored message body */

/* ---- backend ----------------------------------------------------------- */

#define STORE_POOL_DEFAULT 8     /* PostgreSQL connections per process */
#define STORE_POOL_MAX 256
#define STORE_URL_MAX 1024       /* bytes of a postgresql:// URL */

/* Where the state lives, for the whole process.  url NULL or "": SQLite
 * under each store_open's state_dir (the default).  Otherwise a libpq
 * connection URI ("postgresql://user@host:5432/db?sslmode=verify-full");
 * password NULL means the URL's own, PGPASSWORD or libpq's PGPASSFILE.  The
 * URL and the password are copied, and never appear in errors or logs (an
 * error names host, port and database). */
struct store_target {
    const char *url;
    const char *password;
    unsigned pool;             /* 1..STORE_POOL_MAX; 0: STORE_POOL_DEFAULT */
};

/* Choose the backend before the first store_open (and before threads start).
 * For PostgreSQL, one connection is made at once (so a wrong URL, password or
 * an unreachable server is reported here) and the schema is migrated.
 * Errors: ERR_USAGE (URL too long or not postgresql://, pool out of range),
 * ERR_INTERNAL (cannot connect: libpq's reason, without the password;
 * schema newer than this build). */
int store_setup(const struct store_target *t, struct err *e);
/* Close the pool (every store handle must be closed); back to SQLite. */
void store_teardown(void);
/* "sqlite" or "postgresql": the backend store_open opens. */
const char *store_backend(void);
/* Whether the state may be shared by several instances (PostgreSQL): what
 * decides account leases, the poll history and account state kept in the
 * store for every instance, and the API answering from there.  The one
 * test of it (the daemon's, the poller's and the API's). */
bool store_is_shared(void);
/* PostgreSQL: "host=H port=P dbname=D" naming the target without secrets,
 * for logs ("" under SQLite). */
const char *store_target_name(void);
/* ---- the link key --------------------------------------------------------
 *
 * The HMAC key that signs the links in events and answers (raw_url,
 * attachment url; include/links.h).  One per store, so every instance
 * sharing it signs and accepts the same links.  Unlike the rest of this
 * header, its times (now, created_at) are Unix seconds, as links' expiry. */

/* Into key: the current link key, made from random bytes (created_at = now)
 * on first use.  *created_at (may be NULL) gets when it was made.  0, or -1
 * with e: ERR_USAGE (no store or buffer), ERR_INTERNAL (database, no random
 * bytes, the database busy). */
int store_link_key(struct store *st, unsigned char key[STORE_LINK_KEY_LEN], int64_t *created_at,
                   int64_t now, struct err *e);

/* Replace the link key with a new random one, made at `now`: every link
 * signed before stops working at once, on every instance.  0, or -1 as
 * above. */
int store_link_key_rotate(struct store *st, int64_t now, struct err *e);

/* ---- opening ----------------------------------------------------------- */

/* Open (creating if needed) <state_dir>/pop3bridge.db.  state_dir is created
 * with mode 0700 if missing (missing parents too).  Runs pending schema
 * migrations, in order, in one write transaction (the version is re-read
 * under the lock, so concurrent opens migrate once).  With a current schema
 * no write lock is taken, so opening never waits for another handle's batch.
 * Errors: ERR_USAGE (state_dir NULL/empty), ERR_LIMIT (path too long),
 * ERR_INTERNAL (cannot create state_dir, not a directory, cannot open, file
 * is not a database or is corrupt, schema newer than STORE_SCHEMA_VERSION,
 * WAL not supported by the file system). */
struct store *store_open(const char *state_dir, struct err *e);

/* Close the connection; an open batch is rolled back.  NULL is a no-op. */
void store_close(struct store *st);

/* The schema version of the open database (== STORE_SCHEMA_VERSION), or -1
 * with *e set (ERR_INTERNAL). */
int store_schema_version(struct store *st, struct err *e);

/* ---- batching ---------------------------------------------------------- */

/* Group many writes into one durable commit (one fsync).  Between begin and
 * commit, every write call on this handle joins the batch; each call is
 * still all-or-nothing on its own (a failing store_msg_finish rolls back only
 * that message).  Nothing in a batch is durable, or visible to other
 * handles, before store_batch_commit returns 0: the poller must not DELE or
 * deliver anything from a batch before that.  The write lock is taken at the
 * first write in the batch and held until commit: a batch must never stay
 * open across a network read or write, or a webhook POST (it would hold
 * every other writer up for as long as the network takes).  Its users are
 * the committer (messages already fully received, committer.h) and the
 * delivery worker (outcomes already known).
 * If the database had to roll the whole batch back (disk full, I/O error),
 * later writes in the batch and the commit fail with ERR_INTERNAL.
 * Errors: ERR_USAGE (batch already open / none open), ERR_INTERNAL. */
int store_batch_begin(struct store *st, struct err *e);
int store_batch_commit(struct store *st, struct err *e);
void store_batch_rollback(struct store *st); /* no batch open: no-op */

/* ---- UIDLs (poller) ---------------------------------------------------- */

enum store_uidl_state {
    STORE_UIDL_IGNORED = 0, /* recorded by "start: new", never delivered */
    STORE_UIDL_STORED,      /* message stored, deliveries not all 2xx */
    STORE_UIDL_DELIVERED,   /* every delivery answered 2xx */
    STORE_UIDL_DELETED,     /* DELE + QUIT +OK done */
};
const char *store_uidl_state_name(enum store_uidl_state s); /* "ignored"... */

/* Called once per UIDL; return 0 to go on, or -1 with *e set to stop (the
 * store call then returns -1 with that error). */
typedef int (*store_uidl_cb)(void *ctx, const char *uidl, enum store_uidl_state state,
                             int64_t msg_id, struct err *e);

/* Every UIDL known for the account (any order).  msg_id is 0 for ignored. */
int store_uidls_each(struct store *st, const char *account, store_uidl_cb cb, void *ctx,
                     struct err *e);

/* State of one UIDL; STORE_NOTFOUND if unknown.  msg_id may be NULL. */
int store_uidl_get(struct store *st, const char *account, const char *uidl,
                   enum store_uidl_state *state, int64_t *msg_id, struct err *e);

/* Record n UIDLs as ignored in one transaction (those already known are
 * left as they are).  Errors: ERR_LIMIT (n > STORE_UIDLS_MAX or a UIDL too
 * long), ERR_USAGE (empty UIDL), ERR_INTERNAL. */
int store_uidls_record_ignored(struct store *st, const char *account,
                               const char *const *uidls, size_t n, int64_t now,
                               struct err *e);

/* UIDLs that may be DELEted from the server now: state delivered, and
 * either delete_delivered (after_delivery: delete) or delete_after_ms > 0
 * and the message was stored at least delete_after_ms before now.  Never a
 * UIDL with an unfinished delivery, never an ignored one, never one stored
 * as STORE_KIND_TOO_LARGE (its body was never retrieved). */
int store_uidls_deletable(struct store *st, const char *account, bool delete_delivered,
                          int64_t delete_after_ms, int64_t now, store_uidl_cb cb, void *ctx,
                          struct err *e);

/* After QUIT answered +OK: mark these UIDLs deleted, whatever their state
 * (unknown ones are skipped).  One transaction.  A message deleted from the
 * server before delivery (through the API) keeps its pending deliveries and
 * body; its UIDL is not forgotten until they are delivered. */
int store_uidls_mark_deleted(struct store *st, const char *account,
                             const char *const *uidls, size_t n, struct err *e);

/* Given the complete UIDL listing the server just gave, forget the UIDLs it
 * no longer lists — but only those whose messages have no unfinished
 * delivery (ignored, delivered or deleted, and every delivery delivered).
 * Call only with a complete, successful listing.  *forgotten (may be NULL)
 * gets the count.  Stored messages and delivery history are kept. */
int store_uidls_forget_vanished(struct store *st, const char *account,
                                const char *const *listed, size_t n, int64_t *forgotten,
                                struct err *e);

/* ---- storing a message (poller) ---------------------------------------- */

/* What a stored message is: the message itself, or only the header of one
 * too large to retrieve (TOP n 0), with the size the server gave. */
#define STORE_KIND_MESSAGE "message"
#define STORE_KIND_TOO_LARGE "too_large"
#define STORE_KIND_MAX 15

/* Summary fields taken from the parsed headers; any may be NULL.  kind NULL
 * means STORE_KIND_MESSAGE; declared_size is kept for too_large. */
struct store_msg_meta {
    const char *subject;
    const char *from;
    const char *message_id;
    const char *date;
    const char *kind;
    uint64_t declared_size;
    int64_t dedupe_window_ms; /* > 0 with message_id: a message of the account with the
                                 same message_id stored within this window before now
                                 (itself no duplicate) makes this one a duplicate:
                                 stored, with duplicate_of set, and no delivery */
};

struct store_msg_result {
    int64_t id;
    int64_t duplicate_of;  /* the earlier message this one duplicates; 0: none */
    uint64_t size;
    char sha256[STORE_SHA256_HEX + 1]; /* lowercase hex of the raw bytes */
};

/* Start writing the raw message for account/uidl.  Bytes are spooled in
 * memory up to STORE_SPOOL_MEM_MAX, beyond that to an unlinked temp file in
 * state_dir; size and SHA-256 are computed on the way.  Nothing touches the
 * database until finish (a UIDL already known is refused there): begin,
 * write and abort never use st's connection (only its state_dir), so one
 * thread may receive a message begun on st while the thread that owns st
 * finishes others, and then finishes this one (committer.h).
 * Errors: ERR_USAGE (empty name/UIDL), ERR_LIMIT (name/UIDL length),
 * ERR_INTERNAL (out of memory, SHA-256 unavailable). */
int store_msg_begin(struct store *st, const char *account, const char *uidl,
                    struct store_msg **out, struct err *e);

/* Append len bytes.  Errors: ERR_LIMIT (total over STORE_MSG_MAX),
 * ERR_INTERNAL (temp file).  After an error only _abort is allowed. */
int store_msg_write(struct store_msg *m, const void *data, size_t len, struct err *e);

/* In ONE transaction (or the open batch): the message and its body, its
 * UIDL marked stored, and one pending delivery per webhook, due at `now`.
 * With n_webhooks == 0 the message counts as delivered at once.  The body is
 * written with incremental blob I/O in STORE_IO_CHUNK pieces.  meta may be
 * NULL; res may be NULL.  Always consumes m (freed on success and error).
 * A duplicate (meta->dedupe_window_ms) gets no deliveries whatever webhooks
 * says, and counts as delivered at once.
 * Errors: ERR_USAGE (UIDL already known for the account, empty or repeated
 * webhook name, earlier write error), ERR_LIMIT (n_webhooks >
 * STORE_WEBHOOKS_MAX, webhook name too long), ERR_INTERNAL. */
int store_msg_finish(struct store_msg *m, const struct store_msg_meta *meta,
                     const char *const *webhooks, size_t n_webhooks, int64_t now,
                     struct store_msg_result *res, struct err *e);

/* One message for store_msg_finish_many: the arguments of store_msg_finish,
 * and (out) its result, what it returned and its error. */
struct store_finish {
    struct store_msg *m;               /* consumed */
    const struct store_msg_meta *meta; /* may be NULL */
    const char *const *webhooks;
    size_t n_webhooks;
    int64_t now;
    struct store_msg_result res;       /* out */
    int result;                        /* out: 0 or -1 */
    struct err err;                    /* out: when result is -1 */
};

/* store_msg_finish for each of f[0..n) (all on st), in order, each as if
 * alone (one failing leaves the others); inside a batch on PostgreSQL
 * several small ones in one round trip (should one of those fail at the
 * database, the group is rolled back and stored one by one).  0, or -1
 * with *e when st is missing (the messages are consumed all the same). */
int store_msg_finish_many(struct store *st, struct store_finish *f, size_t n, struct err *e);

/* Octets written so far (0 for NULL). */
uint64_t store_msg_size(const struct store_msg *m);

/* Drop a message being written; nothing is stored.  NULL is a no-op. */
void store_msg_abort(struct store_msg *m);

/* The bytes written so far, to look at before finish (routing filters):
 * either in memory (*mem, *len; *fd = -1) or in the spool file (*fd, a
 * regular file holding them from offset 0; *mem = NULL).  Both stay owned
 * by m and valid until finish or abort; the caller may read the fd and move
 * its offset (the store reads it with pread) but must not write or close
 * it.  Errors: ERR_USAGE (after a write error). */
int store_msg_peek(struct store_msg *m, const void **mem, size_t *len, int *fd, struct err *e);

/* ---- reading a message (delivery, API) --------------------------------- */

struct store_msg_info {
    int64_t id;
    char account[STORE_NAME_MAX + 1];
    char uidl[STORE_UIDL_MAX + 1];
    uint64_t size;
    char sha256[STORE_SHA256_HEX + 1];
    int64_t received_at;    /* when it was stored */
    int64_t delivered_at;   /* when its last delivery answered 2xx; 0 if not */
    int64_t body_purged_at; /* 0 while the raw body is kept */
    char subject[STORE_META_MAX + 1];
    char from[STORE_META_MAX + 1];
    char message_id[STORE_META_MAX + 1];
    char date[STORE_META_MAX + 1];
    char kind[STORE_KIND_MAX + 1];     /* STORE_KIND_MESSAGE or STORE_KIND_TOO_LARGE */
    uint64_t declared_size;            /* too_large: the size LIST gave */
    char key[STORE_KEY_HEX + 1];       /* the event key (random, given when it was stored;
                                          "" for messages stored before schema 3) */
    int64_t duplicate_of;              /* de-duplication: the earlier message of the same
                                          Message-ID; 0: none (schema 6) */
};

/* Metadata of message id; STORE_NOTFOUND if there is no such message. */
int store_msg_get(struct store *st, int64_t id, struct store_msg_info *out, struct err *e);

/* A sink for raw bytes; return 0, or -1 with *e set to stop. */
typedef int (*store_sink_cb)(void *ctx, const void *data, size_t len, struct err *e);

/* Stream the raw body to sink in chunks of at most STORE_IO_CHUNK bytes.
 * STORE_NOTFOUND if the message does not exist or its body was purged. */
int store_msg_stream(struct store *st, int64_t id, store_sink_cb sink, void *ctx,
                     struct err *e);

/* What building a message's event reads, in one go: its metadata; its raw
 * body into *body (malloc'd, *body_len octets; free() it) when it is at
 * most mem_max octets, else *body NULL (stream it with store_msg_stream);
 * and when link_key is not NULL, the link key (as store_link_key: made at
 * `now` if there is none yet).  On PostgreSQL one round trip and one
 * snapshot instead of three.  STORE_NOTFOUND if there is no such message,
 * or its body is gone though body_purged_at is not set yet; a purged body
 * (body_purged_at set) is not read. */
int store_msg_load(struct store *st, int64_t id, struct store_msg_info *out, size_t mem_max,
                   char **body, size_t *body_len, unsigned char link_key[STORE_LINK_KEY_LEN],
                   int64_t now, struct err *e);

/* One message of store_msg_load_many: id in; the rest out. */
struct store_loaded {
    int64_t id;                 /* the message to read */
    int result;                 /* 0, or STORE_NOTFOUND as store_msg_load says */
    struct store_msg_info info; /* when result is 0 */
    char *body;                 /* malloc'd (free() it), body_len octets, or NULL:
                                   not read (stream it; see below) or purged */
    size_t body_len;
};

/* store_msg_load for the messages l[0..n) at once (n <= STORE_LOAD_MANY_MAX),
 * for the deliveries of one lease: each one's metadata, result and body.
 * Bodies are read in the order of l while each is at most mem_max octets and
 * all read so far stay within total_max octets; the first that would pass
 * total_max, and every body after it, is not read (body NULL: stream it with
 * store_msg_stream), so memory stays bounded.  link_key (may be NULL) as
 * store_msg_load: one key for the call.  On PostgreSQL one round trip and one
 * snapshot.  0 with every l[i].result set, or -1 with *e (ERR_LIMIT for n,
 * ERR_INTERNAL) and every l[i].body NULL. */
int store_msg_load_many(struct store *st, struct store_loaded *l, size_t n, size_t mem_max,
                        size_t total_max, unsigned char link_key[STORE_LINK_KEY_LEN],
                        int64_t now, struct err *e);
/* Free the bodies of l[0..n) (NULL-safe); each body set to NULL. */
void store_loaded_free(struct store_loaded *l, size_t n);

/* A positional reader of one body, for HTTP responses read at offsets from
 * any thread: it has its own connection, independent of st (st may be
 * closed or used elsewhere meanwhile).  No transaction is held between
 * reads.  STORE_NOTFOUND if there is no such message or its body was purged.
 * *size (may be NULL) gets the body length. */
int store_body_open(struct store *st, int64_t id, struct store_body **out, uint64_t *size,
                    struct err *e);
/* Read up to len bytes at offset; *got is 0 at or past the end.  Errors:
 * ERR_INTERNAL (including a body purged while being read). */
int store_body_read(struct store_body *b, uint64_t offset, void *buf, size_t len, size_t *got,
                    struct err *e);
void store_body_close(struct store_body *b);

/* ---- deliveries -------------------------------------------------------- */

enum store_dstatus {
    STORE_D_PENDING = 0, /* not tried yet, or reset for retry */
    STORE_D_DELIVERED,   /* answered 2xx */
    STORE_D_FAILED,      /* tried, will retry at next_attempt_at */
    STORE_D_DEAD,        /* gave up after the last retry; can be retried */
    STORE_D_DROPPED,     /* an operator gave it up (failed or dead before); kept, final:
                            for the message it counts as done (schema 6) */
};
const char *store_dstatus_name(enum store_dstatus s); /* "pending"... */
/* 0 and *out set, or -1 (unknown name; *e ERR_USAGE). */
int store_dstatus_parse(const char *name, enum store_dstatus *out, struct err *e);

struct store_delivery {
    int64_t id;
    int64_t msg_id;
    char account[STORE_NAME_MAX + 1];
    char uidl[STORE_UIDL_MAX + 1];
    char webhook[STORE_NAME_MAX + 1];
    enum store_dstatus status;
    int attempts;            /* attempts recorded so far */
    int64_t created_at;
    int64_t updated_at;
    int64_t next_attempt_at; /* meaningful for pending/failed */
    int64_t delivered_at;    /* 0 unless delivered */
    int last_http_status;    /* 0: none (no attempt, or no HTTP answer) */
    char last_error[STORE_ERROR_MAX + 1];
    char msg_key[STORE_KEY_HEX + 1];       /* the message's event key ("" before schema 3):
                                              the identity webhook-ids derive from */
    char lease_owner[STORE_OWNER_MAX + 1]; /* "" when not leased */
    int64_t lease_until;                   /* 0 when not leased */
    int64_t event_id;        /* > 0: the delivery of an event that is not a message
                                (msg_id 0, uidl ""; msg_key is the event's key) */
    char event_type[STORE_EVENT_TYPE_MAX + 1]; /* its type; "" for a message */
};

/* Lease up to max (<= STORE_DUE_MAX) due deliveries of `webhook` (NULL: of
 * any webhook) to owner until now + lease_ms: status pending or failed,
 * next_attempt_at <= now, webhook not disabled, and no live lease
 * (lease_until <= now: never leased, released, or expired — an expired lease
 * of any owner is taken back here).  Oldest next_attempt_at first.  Atomic:
 * no other handle, thread or process gets them while the lease lasts.
 * *n gets the count placed in out[].  Errors: ERR_USAGE (owner empty,
 * lease_ms <= 0), ERR_LIMIT (max > STORE_DUE_MAX, owner or webhook too
 * long), ERR_INTERNAL. */
int store_delivery_lease_due(struct store *st, const char *owner, const char *webhook,
                             int64_t now, int64_t lease_ms, struct store_delivery *out,
                             size_t max, size_t *n, struct err *e);

/* Extend every delivery lease owner still holds to now + lease_ms (call
 * well within lease_ms while the work goes on).  A lease taken over by
 * another owner is not touched.  *renewed (may be NULL) gets the count. */
int store_delivery_renew(struct store *st, const char *owner, int64_t now, int64_t lease_ms,
                         int64_t *renewed, struct err *e);

/* Release owner's lease on delivery id, or with id == 0 every lease owner
 * holds (start-up: what a previous run under the same id held; shutdown:
 * what was still queued), without recording an attempt: the deliveries are
 * due again at once.  *released (may be NULL) gets the count. */
int store_delivery_release(struct store *st, const char *owner, int64_t id, int64_t *released,
                           struct err *e);

struct store_attempt {
    int64_t started_at;
    int64_t duration_ms;
    int http_status;   /* 0: no HTTP answer */
    const char *error; /* NULL or text (truncated to STORE_ERROR_MAX) */
    const char *outcome; /* short name, e.g. "delivered", "retry", "gone" */
};

/* Record an attempt made under owner's lease and set the new status, in one
 * transaction: delivered (2xx), failed (retry at next_attempt_at) or dead;
 * the lease is released.  When every delivery of the message is delivered,
 * the message gets delivered_at = now-of-attempt-end and its UIDL (if still
 * "stored") becomes "delivered".
 * If the lease was lost meanwhile — another owner holds a live lease on it,
 * or it is no longer pending or failed (another owner finished it, or an
 * operator's retry is under way) — the attempt is kept in the delivery's
 * history but its status, counters and lease are left alone:
 * STORE_LEASE_LOST.  A lease that expired without being taken over still
 * counts as owner's.  STORE_NOTFOUND for an unknown id.  Errors: ERR_USAGE
 * (new status pending, owner empty), ERR_LIMIT (outcome over
 * STORE_OUTCOME_MAX, owner too long), ERR_INTERNAL. */
int store_delivery_record(struct store *st, const char *owner, int64_t id,
                          const struct store_attempt *a, enum store_dstatus status,
                          int64_t next_attempt_at, struct err *e);

/* One outcome for store_delivery_record_many: the arguments of
 * store_delivery_record, and (out) what it returned, with its error. */
struct store_record {
    int64_t id;
    struct store_attempt a;
    enum store_dstatus status;
    int64_t next_attempt_at;
    int result;      /* out: 0, STORE_LEASE_LOST, STORE_NOTFOUND or -1 */
    struct err err;  /* out: when result is -1 */
};

/* store_delivery_record for each of recs[0..n), in order, each as if alone
 * (one failing leaves the others); inside a batch on PostgreSQL several in
 * one round trip (should one of those fail, the group is rolled back and
 * recorded one by one).  0, or -1 with *e when st is missing. */
int store_delivery_record_many(struct store *st, const char *owner, struct store_record *recs,
                               size_t n, struct err *e);

/* Reset a failed or dead delivery to pending, due at now, and drop any lease
 * on it (an operator's retry never waits for a lease to expire; a worker
 * still holding it records its outcome normally).  STORE_NOTFOUND for an
 * unknown id; ERR_USAGE if it is pending or delivered, or its body was
 * purged. */
int store_delivery_retry(struct store *st, int64_t id, int64_t now, struct err *e);

/* One delivery; its attempts (oldest first) go to cb if cb is not NULL.
 * STORE_NOTFOUND for an unknown id. */
struct store_attempt_row {
    int64_t started_at;
    int64_t duration_ms;
    int http_status;
    const char *error;   /* "" if none */
    const char *outcome;
};
typedef int (*store_attempt_cb)(void *ctx, const struct store_attempt_row *a, struct err *e);
int store_delivery_get(struct store *st, int64_t id, struct store_delivery *out,
                       store_attempt_cb cb, void *ctx, struct err *e);

/* A page of deliveries, newest first (id descending).  Filters: status (NULL
 * = any), account (NULL = any).  limit 1..STORE_LIST_MAX.  cursor: NULL or
 * "" for the first page, else a next_cursor from a previous page (same
 * filters).  Rows go to cb; next_cursor (STORE_CURSOR_MAX bytes) gets ""
 * when this was the last page.  Keyset paging: rows added meanwhile never
 * cause duplicates or gaps among older rows.  Errors: ERR_USAGE (bad
 * cursor, limit out of range). */
typedef int (*store_delivery_cb)(void *ctx, const struct store_delivery *d, struct err *e);
int store_delivery_list(struct store *st, const enum store_dstatus *status,
                        const char *account, size_t limit, const char *cursor,
                        store_delivery_cb cb, void *ctx, char *next_cursor, struct err *e);

/* When the next delivery falls due (pending or failed, webhook enabled):
 * *at gets the later of its next_attempt_at and its lease's expiry (a live
 * lease at `now` counts), or 0 when there is none. */
int store_delivery_next_due(struct store *st, int64_t now, int64_t *at, struct err *e);

struct store_queue_counts {
    int64_t pending, failed, delivered, dead, dropped;
};
/* Deliveries by status, over all accounts (metrics: queue depth). */
int store_delivery_counts(struct store *st, struct store_queue_counts *out, struct err *e);

/* An operator gives a failed or dead delivery up: status dropped (never
 * erased: its attempts stay), lease dropped; when it was the message's last
 * one not delivered, the message counts as delivered (its UIDL may be
 * deleted from the server by after_delivery/delete_after).  STORE_NOTFOUND
 * for an unknown id; ERR_USAGE when it is pending, delivered or dropped. */
int store_delivery_drop(struct store *st, int64_t id, int64_t now, struct err *e);

/* Reset up to max (1..STORE_RETRY_BULK_MAX) deliveries of `status` (failed
 * or dead) of `webhook` (NULL: any) to pending, due at now, leases dropped,
 * oldest first, in one transaction; those whose message body was purged are
 * left alone.  *retried (may be NULL) gets the count.  Errors: ERR_USAGE
 * (another status), ERR_LIMIT (max), ERR_INTERNAL. */
int store_delivery_retry_bulk(struct store *st, const char *webhook, enum store_dstatus status,
                              size_t max, int64_t now, int64_t *retried, struct err *e);

/* ---- events that are not messages ------------------------------------------
 *
 * An event about an account (e.g. "account.auth_error") goes through the
 * same outbox as messages: one delivery per webhook, leased, signed, retried
 * and recorded alike.  The event's data object (JSON text, at most
 * STORE_EVENT_DATA_MAX bytes) is kept with its type, time and a random key
 * (webhook-ids derive from it, as from a message's). */
struct store_event {
    int64_t id;
    char account[STORE_NAME_MAX + 1];
    char type[STORE_EVENT_TYPE_MAX + 1];
    int64_t created_at;
    char key[STORE_KEY_HEX + 1];
};

/* Store an event and its deliveries (due at now) in one transaction.  *id
 * (may be NULL) gets its id.  Errors: ERR_USAGE (empty names, a webhook
 * named twice, bad type), ERR_LIMIT (data size, n_webhooks over
 * STORE_WEBHOOKS_MAX), ERR_INTERNAL. */
int store_event_add(struct store *st, const char *account, const char *type, const char *data,
                    const char *const *webhooks, size_t n_webhooks, int64_t now,
                    int64_t *id, struct err *e);

/* Once per transition: in one transaction, store the event as
 * store_event_add does unless an event of this type for this account was
 * stored after the account's last successful poll (last_success_at of
 * store_account_get; none saved: 0).  So an account that keeps failing gets
 * one event, and one more after it worked again and fails anew.  *event_id
 * (may be NULL) gets its id, or 0 when nothing was written.  Several
 * instances racing: one of them writes it. */
int store_account_event_once(struct store *st, const char *account, const char *type,
                             const char *data, const char *const *webhooks, size_t n_webhooks,
                             int64_t now, int64_t *event_id, struct err *e);

/* Event id; *data (may be NULL) gets its data (JSON text, malloc'd: the
 * caller frees it).  STORE_NOTFOUND if there is none. */
int store_event_get(struct store *st, int64_t id, struct store_event *out, char **data,
                    struct err *e);

/* ---- webhooks ---------------------------------------------------------- */

/* Disable a webhook (it answered 410 Gone): its deliveries are not handed
 * out until store_webhooks_enable_all (config reload).  reason may be NULL.
 * Disabling again keeps the first time and reason. */
int store_webhook_disable(struct store *st, const char *webhook, const char *reason,
                          int64_t now, struct err *e);
int store_webhooks_enable_all(struct store *st, struct err *e);
/* *disabled set; *since (may be NULL) gets when, 0 if enabled. */
int store_webhook_disabled(struct store *st, const char *webhook, bool *disabled,
                           int64_t *since, struct err *e);

/* ---- accounts (API, poller) -------------------------------------------- */

struct store_account_state {
    char state[STORE_STATE_MAX + 1];        /* "idle", "polling", "backoff"... */
    char last_error[STORE_ERROR_MAX + 1];   /* "" if none */
    char last_error_code[STORE_ERROR_CODE_MAX + 1]; /* last_error's kind for programs
                                                       ("login_delay", "auth"...: runtime.h's
                                                       account_error names), "" if none
                                                       (schema 8) */
    int64_t last_attempt_at;
    int64_t last_success_at;
    int64_t backoff_until;
};
/* STORE_NOTFOUND if nothing was ever saved for the account. */
int store_account_get(struct store *st, const char *account, struct store_account_state *out,
                      struct err *e);
/* Save (insert or replace).  state must be 1..STORE_STATE_MAX bytes,
 * last_error_code at most STORE_ERROR_CODE_MAX (ERR_LIMIT); last_error is
 * truncated to STORE_ERROR_MAX. */
int store_account_set(struct store *st, const char *account,
                      const struct store_account_state *in, struct err *e);

/* Account leases: one poller per account at a time, across threads and
 * instances (the row's lease_owner and lease_until).  An instance takes an
 * account's lease before it polls it, keeps it while it runs (renewing all
 * of its account leases in one call, well within lease_ms) and releases
 * them when it stops; once a lease has expired anyone may take it.
 *
 * Take (or keep) the lease on `account` for owner until now + lease_ms: 0
 * when taken — the account had no lease, owner held it, or it had expired
 * (a row is created, state "idle", if there was none) — or
 * STORE_LEASE_LOST when another owner holds a live lease (nothing
 * changed).  Errors: ERR_USAGE (empty owner, lease_ms <= 0), ERR_LIMIT
 * (account or owner too long), ERR_INTERNAL. */
int store_account_lease(struct store *st, const char *account, const char *owner, int64_t now,
                        int64_t lease_ms, struct err *e);
/* Extend every account lease owner holds to now + lease_ms; *renewed (may
 * be NULL) gets the count.  A lease taken over by another owner is not
 * touched (compare the count with the leases owner believes it holds). */
int store_account_renew(struct store *st, const char *owner, int64_t now, int64_t lease_ms,
                        int64_t *renewed, struct err *e);
/* Give back owner's lease on `account` (the share of the accounts among
 * instances, share.h): the account is left with no lease (no owner, no
 * expiry), as if never leased, so that any owner may take it at once and
 * store_account_renew(owner) cannot revive it.  One statement: a lease
 * another owner holds, live or expired, is left alone.  0 when given back,
 * STORE_LEASE_LOST when owner did not hold it (another owner does, or
 * nobody; nothing changed, no row made).  Errors: ERR_USAGE (empty owner),
 * ERR_LIMIT (account or owner too long), ERR_INTERNAL. */
int store_account_give_back(struct store *st, const char *account, const char *owner,
                            struct err *e);
/* Release every account lease owner holds (shutdown; start-up, for what a
 * previous run under the same id held).  *released may be NULL. */
int store_account_release(struct store *st, const char *owner, int64_t *released,
                          struct err *e);

struct store_account_counts {
    int64_t stored;             /* messages whose raw body is kept */
    int64_t pending_deliveries; /* deliveries pending or failed (not dead) */
};
int store_account_counts(struct store *st, const char *account,
                         struct store_account_counts *out, struct err *e);

/* ---- poll history (dashboard; several instances) ------------------------
 *
 * The recent polls of each account and its last POP3 session, as pollhist.h
 * records them in memory, kept in the store so that every instance sharing
 * it shows the same (GET /api/v1/accounts/{name}).  PostgreSQL only (schema
 * 10: tables polls and poll_sessions): the daemon writes them there after
 * each poll.  SQLite has one instance by construction and keeps the history
 * in pollhist's memory alone, at no cost per poll: there both calls refuse
 * with ERR_USAGE ("not kept on SQLite").  Rows are bounded: POLLHIST_POLLS
 * polls per account (an account removed from the configuration keeps its
 * last polls and session, as it keeps its accounts row). */

/* A poll and the instance that made it. */
struct store_poll {
    struct pollhist_poll p;
    char instance[STORE_OWNER_MAX + 1]; /* "" when not known */
};

/* A poll that ended, as store_poll_record writes it. */
struct store_poll_write {
    const char *instance;                  /* who polled; NULL or "": not known */
    const struct pollhist_poll *poll;      /* the poll (required) */
    const struct pollhist_session *session; /* its session's details, saved in full
                                              (replacing the account's); NULL: see below */
    int64_t session_at, session_was;       /* without session, session_at > 0: a session
                                              with the details saved at session_was began at
                                              session_at (only the saved session's time
                                              moves, if it is still that of session_was);
                                              session_at 0: the poll had no session */
    const struct store_account_state *state; /* the account's state, saved as
                                                store_account_set does; NULL: not */
};

/* A poll of `account` ended: w->poll is added and the account's polls
 * beyond the newest POLLHIST_POLLS are dropped, its session saved or its
 * time moved, and its state saved, all in one statement (one round trip).
 * *session_saved (may be NULL) is true when the account's saved session is
 * now this poll's (written in full, or its time moved), false otherwise (no
 * session; or another session was saved meanwhile, whose time was not
 * session_was: nothing moved, write the session in full next time).
 * Error texts and CAPA lines are cut at pollhist's limits and kept as valid
 * UTF-8.  0, or -1 with e: ERR_USAGE (SQLite, empty account, no poll),
 * ERR_LIMIT (account, instance or state too long), ERR_INTERNAL. */
int store_poll_record(struct store *st, const char *account, const struct store_poll_write *w,
                      bool *session_saved, struct err *e);

/* The account's last session into *s (may be NULL; s->at == 0: none yet)
 * and up to max of its polls, newest first, into out[] (*n gets the count).
 * 0, or -1 with e as above. */
int store_poll_history(struct store *st, const char *account, struct pollhist_session *s,
                       struct store_poll *out, size_t max, size_t *n, struct err *e);

/* ---- account leases seen by all, and instances (several instances) ------ */

/* Every live account lease (lease_until > now): account, owner, expiry. */
typedef int (*store_lease_cb)(void *ctx, const char *account, const char *owner,
                              int64_t lease_until, struct err *e);
int store_account_leases_each(struct store *st, int64_t now, store_lease_cb cb, void *ctx,
                              struct err *e);

#define STORE_HOST_MAX 255
struct store_instance {
    char id[STORE_OWNER_MAX + 1];         /* the lease owner name */
    char host[STORE_HOST_MAX + 1];
    char public_url[STORE_URL_MAX + 1];   /* its API's public URL, "" if none */
    int64_t started_at;
    int64_t heartbeat_at;
};
/* Insert or refresh this instance's row (heartbeat).  Errors: ERR_USAGE
 * (empty id), ERR_LIMIT (a field too long), ERR_INTERNAL. */
int store_instance_beat(struct store *st, const struct store_instance *in, struct err *e);
/* Remove an instance's row (clean shutdown). */
int store_instance_remove(struct store *st, const char *id, struct err *e);
/* Instances whose last heartbeat is at or after live_since, oldest start
 * first; rows older than forget_before (0: none) are deleted first. */
typedef int (*store_instance_cb)(void *ctx, const struct store_instance *i, struct err *e);
int store_instances_each(struct store *st, int64_t live_since, int64_t forget_before,
                         store_instance_cb cb, void *ctx, struct err *e);
/* One instance; STORE_NOTFOUND if unknown. */
int store_instance_get(struct store *st, const char *id, struct store_instance *out,
                       struct err *e);

/* ---- statistics (dashboard) ------------------------------------------- */

/* Read-only summaries for the dashboard, computed from the attempts and
 * messages kept (nothing is counted separately).  An attempt succeeded when
 * its HTTP status is 2xx.  Times are Unix ms; hours are UTC hours (Unix ms
 * divided by STORE_HOUR_MS). */
#define STORE_HOUR_MS 3600000LL
#define STORE_DAY_MS (24 * STORE_HOUR_MS)
#define STORE_STATS_HOURS_MAX 168     /* hours in one store_stats_hourly call */

struct store_webhook_stats {
    int64_t attempts_hour, attempts_day;   /* attempts started in (now - 1 h, now] / 24 h */
    int64_t delivered_hour, delivered_day; /* of those, answered 2xx */
    int64_t p50_ms, p99_ms;   /* nearest-rank latency of the last 24 h's attempts; -1: none */
    int64_t last_error_at;    /* the latest attempt that did not answer 2xx (any age); 0: none */
    int last_error_status;    /* its HTTP status, 0 without an HTTP answer */
    char last_error[STORE_ERROR_MAX + 1]; /* its error text; "" */
};
/* Delivery statistics of one webhook at `now`.  A webhook never attempted
 * gets zeros and -1 latencies.  Errors: ERR_USAGE/ERR_LIMIT (name),
 * ERR_INTERNAL. */
int store_webhook_stats(struct store *st, const char *webhook, int64_t now,
                        struct store_webhook_stats *out, struct err *e);

struct store_hour {
    int64_t start;     /* the hour's first Unix ms */
    int64_t received;  /* messages stored in that hour (any account, any kind) */
    int64_t attempts;  /* delivery attempts started in it (any webhook) */
    int64_t delivered; /* of those, answered 2xx */
};
/* The `hours` (1..STORE_STATS_HOURS_MAX) whole UTC hours ending with the one
 * holding `now`, oldest first, into out[hours] (hours with no traffic are
 * zero).  Errors: ERR_USAGE (hours out of range), ERR_INTERNAL. */
int store_stats_hourly(struct store *st, int64_t now, size_t hours, struct store_hour *out,
                       struct err *e);

/* ---- OAuth2 tokens (oauth2) ------------------------------------------- */

/* One row per account authorized through a provider.  Tokens are sealed
 * bytes the store does not interpret (at most STORE_SEALED_MAX each).
 *
 * One refresher per account at a time, across threads and instances: a
 * refresher takes the row's lease (owner + expiry) with store_oauth2_lease,
 * talks to the token endpoint without any transaction open, and saves the
 * outcome with store_oauth2_refreshed / store_oauth2_failed.  The others see
 * STORE_OAUTH2_BUSY and wait for its result (or use the current access token
 * while it lasts).  Every write of tokens or status increments `version`;
 * the saving calls take the version read under the lease and save only if
 * it is unchanged (compare-and-set), so a newer grant (`oauth2 login`) or a
 * newer refresh is never overwritten by an older one.  A rotated refresh
 * token is saved in the same statement as the access token it came with. */

enum store_oauth2_status {
    STORE_OAUTH2_OK = 0,      /* usable grant */
    STORE_OAUTH2_INVALID = 1, /* the token endpoint refused the grant (invalid_grant):
                                 nothing is tried until a new grant is stored */
};

struct store_oauth2 {
    int64_t version;                   /* > 0; +1 at every write of tokens or status */
    enum store_oauth2_status status;
    char flow[STORE_FLOW_MAX + 1];     /* the flow the grant came from */
    char error[STORE_ERROR_MAX + 1];   /* why invalid, or the last failed refresh; "" */
    unsigned char access[STORE_SEALED_MAX];  /* sealed access token */
    size_t access_len;                 /* 0: none */
    unsigned char refresh[STORE_SEALED_MAX]; /* sealed refresh token */
    size_t refresh_len;                /* 0: none (client credentials) */
    int64_t access_issued_at;          /* when the access token was obtained */
    int64_t access_expires_at;         /* when it expires; 0 when there is none */
    int64_t authorized_at;             /* when the grant was stored (login) */
    int64_t refresh_used_at;           /* last successful refresh; 0: never */
    int64_t retry_at;                  /* no refresh attempt before this (after a
                                          failure); 0: none */
    int failures;                      /* failed refreshes in a row */
    char lease_owner[STORE_OWNER_MAX + 1]; /* "" when not leased */
    int64_t lease_until;               /* 0 when not leased */
};

/* Tokens just obtained (sealed).  refresh NULL: none came (store_oauth2_grant)
 * or the current one stays (store_oauth2_refreshed: no rotation). */
struct store_oauth2_tokens {
    const unsigned char *access;
    size_t access_len;
    const unsigned char *refresh;
    size_t refresh_len;
    int64_t issued_at, expires_at;
};

/* The account's row; STORE_NOTFOUND if it was never authorized. */
int store_oauth2_get(struct store *st, const char *account, struct store_oauth2 *out,
                     struct err *e);

/* A new grant (`oauth2 login`): replace the row's tokens and flow, status
 * OK, error, failures, retry_at and lease cleared, authorized_at = now,
 * version + 1 (1 for a new row).  One transaction.  Errors: ERR_USAGE (no
 * access token, empty flow), ERR_LIMIT (a token over STORE_SEALED_MAX, flow
 * over STORE_FLOW_MAX), ERR_INTERNAL. */
int store_oauth2_grant(struct store *st, const char *account, const char *flow,
                       const struct store_oauth2_tokens *t, int64_t now, struct err *e);

/* Take the refresh lease for owner until now + lease_ms, in one transaction,
 * and fill *out with the row as it is then (read it again: another
 * refresher may have finished just before).  Returns 0 (taken; also when
 * owner holds it already, or it expired), STORE_OAUTH2_BUSY (another owner
 * holds a live lease: *out filled, nothing changed), or STORE_NOTFOUND (no
 * row; with create, an empty row — no tokens, status OK, version 1, flow
 * `flow` — is inserted and leased instead).  A row with status INVALID is
 * not leased: 0 with *out showing the status.  Errors: ERR_USAGE (owner
 * empty, lease_ms <= 0), ERR_LIMIT, ERR_INTERNAL. */
int store_oauth2_lease(struct store *st, const char *account, const char *owner, int64_t now,
                       int64_t lease_ms, bool create, const char *flow,
                       struct store_oauth2 *out, struct err *e);

/* Save a refresh's result if the row's version is still `version`: the
 * access token with its times, the rotated refresh token (if t->refresh) in
 * the same statement, refresh_used_at = now, failures, retry_at and error
 * cleared, the lease released, version + 1.  STORE_LEASE_LOST when the
 * version changed (a newer grant or refresh was saved meanwhile: nothing is
 * written; use the row as it is).  STORE_NOTFOUND if the row is gone. */
int store_oauth2_refreshed(struct store *st, const char *account, int64_t version,
                           const struct store_oauth2_tokens *t, int64_t now, struct err *e);

/* Record a failed refresh if the version is still `version`: invalid sets
 * status INVALID (no attempt until a new grant); otherwise failures + 1 and
 * no attempt before retry_at.  error (truncated to STORE_ERROR_MAX) says
 * why; the lease is released; version + 1.  STORE_LEASE_LOST when the
 * version changed (nothing written), STORE_NOTFOUND if the row is gone. */
int store_oauth2_failed(struct store *st, const char *account, int64_t version, bool invalid,
                        const char *error, int64_t retry_at, struct err *e);

/* Release owner's lease on the account's row without changing anything
 * else (the refresh turned out not to be needed). */
int store_oauth2_release(struct store *st, const char *account, const char *owner,
                         struct err *e);

/* ---- retention --------------------------------------------------------- */

/* Drop the raw bodies of messages delivered (every delivery 2xx) at least
 * retention_ms before now; metadata, UIDL and delivery history stay, and the
 * message gets body_purged_at = now.  At most `max` bodies per call (0 = no
 * limit) so a purge never holds the write lock long.  *purged may be NULL. */
int store_purge_bodies(struct store *st, int64_t retention_ms, int64_t now, size_t max,
                       int64_t *purged, struct err *e);

/* Delete the events (store_event_add) created at least retention_ms before
 * now whose every delivery is delivered or dropped, with those deliveries
 * and their attempts; the newest event of each account and type stays
 * (store_account_event_once compares with it).  At most `max` events per
 * call (0 = no limit).  On PostgreSQL instances purging at the same time
 * take different rows, so each event is purged once.  *purged (may be
 * NULL) gets the number of events deleted. */
int store_purge_events(struct store *st, int64_t retention_ms, int64_t now, size_t max,
                       int64_t *purged, struct err *e);

/* ---- ids --------------------------------------------------------------- */

/* "m_<n>" / "d_<n>" into buf (STORE_ID_MAX bytes); returns buf. */
char *store_msg_id_format(int64_t id, char *buf);
char *store_delivery_id_format(int64_t id, char *buf);
/* Strict parse (no sign, no leading zero, in range): 0, or -1 (ERR_USAGE). */
int store_msg_id_parse(const char *s, int64_t *id, struct err *e);
int store_delivery_id_parse(const char *s, int64_t *id, struct err *e);

/* ---- backup, restore and export (operator commands) --------------------- */

#define STORE_LOCK_FILE "pop3bridge.lock" /* in state_dir: store restore and
                                             migrate hold flock(LOCK_EX) on it
                                             (a running bridge is known by its
                                             open database instead) */
#define STORE_IN_USE 3                    /* store_restore: the state is in use */
#define STORE_EXPORT_PAGE 256             /* message ids read per query in
                                             store_msgs_each */

/* Write a consistent copy of <state_dir>/STORE_DB_FILE to out_path while
 * bridges and other handles go on using it: SQLite's online backup API,
 * the whole database copied inside one read snapshot (writers are not
 * blocked; the copy shows every transaction committed before it began,
 * none after).  The copy is written to "<out_path>.tmp-<pid>" (mode 0600,
 * whatever the umask), switched to a rollback journal so it is one
 * self-contained file, fsync'd and renamed over out_path, and the
 * directory fsync'd: out_path is the old file or the whole new copy, never
 * a part.  *bytes (may be NULL) gets its size.  Nothing is migrated: the
 * copy has the schema the state has.  Errors: ERR_USAGE (no database in
 * state_dir), ERR_LIMIT (a path too long), ERR_INTERNAL (SQLite's or the
 * file system's text, with the path). */
int store_backup(const char *state_dir, const char *out_path, uint64_t *bytes, struct err *e);

/* Put the copy at in_path back as <state_dir>/STORE_DB_FILE (state_dir is
 * created 0700 if missing).  First in_path is checked: a database with
 * pop3bridge's tables, a schema between 1 and STORE_SCHEMA_VERSION, and a
 * clean PRAGMA quick_check.  Then, refusing with STORE_IN_USE (*e says why,
 * ERR_USAGE) while state_dir is in use — another restore or migrate holds
 * its STORE_LOCK_FILE, or any process (a bridge) has the database open —
 * the database's whole content is replaced in one transaction (the backup
 * API in the other direction, under an exclusive lock, so nothing can open
 * it meanwhile), and it is migrated to STORE_SCHEMA_VERSION as store_open does.
 * Run as root on a state_dir owned by another user, the database files and
 * the lock file are given to that user.
 * *schema_from (may be NULL) gets the copy's schema version.  Everything the
 * state held is replaced: messages stored after the copy was made are no
 * longer known, and are fetched again as new.  Errors: ERR_USAGE (in_path
 * missing or not a pop3bridge state), ERR_LIMIT, ERR_INTERNAL. */
int store_restore(const char *state_dir, const char *in_path, int *schema_from, struct err *e);

/* Whether a bridge (or a command) is working on the SQLite state in
 * state_dir: STORE_IN_USE (ERR_USAGE, *e says so, naming the database and
 * to stop it first; what begins the message) while any process has its
 * database open, 0 when none has (the check locks it for a moment), -1 on
 * an error (no database there: ERR_INTERNAL with SQLite's text).  The check
 * store_restore makes before it replaces the database. */
int store_sqlite_in_use(const char *state_dir, const char *what, struct err *e);

/* Every message stored for `account` (any kind, purged or not), oldest
 * first (id ascending), read STORE_EXPORT_PAGE ids per query so no read
 * transaction is held while cb works (cb may call store_msg_stream on st).
 * Messages stored meanwhile with a higher id are included.  cb returns 0 to
 * go on or -1 with *e set to stop (then this returns -1).  Errors:
 * ERR_USAGE, ERR_LIMIT (account name), ERR_INTERNAL. */
typedef int (*store_msg_cb)(void *ctx, const struct store_msg_info *m, struct err *e);
int store_msgs_each(struct store *st, const char *account, store_msg_cb cb, void *ctx,
                    struct err *e);

/* ---- growing from SQLite to PostgreSQL (`pop3bridge store migrate`) ------ */

struct store_migrate_counts {
    int64_t rows;      /* rows copied, every table */
    int64_t messages;  /* of which messages */
    int64_t bytes;     /* body bytes copied */
};
/* Copy the SQLite state in state_dir (migrated to STORE_SCHEMA_VERSION
 * first) into the PostgreSQL store chosen by store_setup, in one
 * PostgreSQL transaction: every table's rows with their ids, event keys,
 * UIDL states, deliveries (with their attempts) and OAuth2 rows, so nothing
 * is fetched or delivered again; leases are cleared; bodies are copied
 * STORE_IO_CHUNK bytes at a time.  Refused, changing nothing: with SQLite
 * chosen, or when PostgreSQL already holds messages, UIDLs or deliveries
 * (ERR_USAGE); while a bridge runs on state_dir (STORE_IN_USE, *e says
 * why: another process holds its STORE_LOCK_FILE or has its database open,
 * store_sqlite_in_use); when the SQLite state has a table this build does not know how to
 * copy (ERR_INTERNAL, naming it).  *counts may be NULL. */
int store_migrate_sqlite(const char *state_dir, struct store_migrate_counts *counts,
                         struct err *e);

#endif
