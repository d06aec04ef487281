/*
 * sessions — explicit POP3 sessions held open for the REST API
 * (POST /api/v1/accounts/{account}/sessions ... DELETE /api/v1/sessions/{id}).
 *
 * POP3's own transaction (RFC 1939 §5, §6) over HTTP: a session logs in once
 * and keeps the maildrop locked; DELE only marks, RSET unmarks, QUIT commits
 * the deletions (UPDATE state).  A session not used for its idle timeout, or
 * alive past its whole-session deadline (the POP3 options' session_timeout_ms,
 * when set: the account's limit on one POP3 session), is aborted WITHOUT QUIT
 * by the reaper thread, so nothing it marked is deleted.  A command running
 * at the deadline fails with ERR_TIMEOUT (the engine's own deadline) and
 * breaks the session.  Every interval is measured on the monotonic clock: a
 * wall-clock jump neither expires nor prolongs a session.
 *
 * Message numbers are the ones of the listing taken when the session opened:
 * RFC 1939 keeps them stable for the whole session (a marked message keeps
 * its number; the server refuses to RETR it), so the listing is not re-read.
 *
 * Ids are "s_" + 32 lowercase hex digits from 128 random bits (OpenSSL's
 * RAND_bytes): knowing one is the capability to use the session (with a valid
 * API token).  Ids are compared in constant time and only their first
 * SESSIONS_LOG_ID characters are ever logged.  With an origin set
 * (sessions_set_origin: several instances share a store), the first
 * SESSIONS_ORIGIN_HEX hex digits name the instance that opened the session
 * (the start of SHA-256 of its id) and the other 96 bits are random, so an
 * instance told about another's session can say which one holds it.
 *
 * One request uses a session at a time: sessions_acquire() waits (bounded)
 * while another request holds it.  Limits: sessions per account and in
 * total, counted including sessions still connecting.
 *
 * Threads: every call is thread-safe; a struct session * returned by
 * sessions_acquire() belongs to the calling thread until sessions_release()
 * or sessions_quit().
 *
 * Return values: 0, or one of the SESSIONS_* codes below, or -1 with *e set
 * to the POP3 engine's error (pop3.h: ERR_CONN, ERR_TIMEOUT, ERR_TLS,
 * ERR_PROTO, ERR_SERVER with its code, ERR_AUTH, ERR_LIMIT) or ERR_INTERNAL.
 * After an error other than ERR_SERVER the session is broken: it is aborted
 * (no QUIT) and forgotten when released.
 */
#ifndef POP3BRIDGE_SESSIONS_H
#define POP3BRIDGE_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgref.h"
#include "error.h"
#include "pop3.h"

#define SESSIONS_ID_BYTES 16                          /* random bytes in an id */
#define SESSIONS_ID_LEN (2 + 2 * SESSIONS_ID_BYTES)   /* "s_" + hex */
#define SESSIONS_LOG_ID 10                            /* characters of an id in logs */
#define SESSIONS_REAP_MAX_MS 1000                     /* the reaper looks at least this often */
#define SESSIONS_NAME_MAX 128                         /* account name bytes */
#define SESSIONS_IDLE_DEFAULT_MS 60000                /* idle timeout when none is given */
#define SESSIONS_ORIGIN_HEX 8                         /* hex digits naming the opening instance */

enum {
    SESSIONS_NOTFOUND = 1, /* no session with that id (or it expired) */
    SESSIONS_BUSY,         /* another request held it for the whole wait */
    SESSIONS_FULL,         /* the per-account or total limit is reached */
    SESSIONS_NOMSG,        /* no message with that number in the session */
    SESSIONS_MARKED,       /* the message is marked for deletion in this session */
};

struct sessions_limits {
    int per_account;       /* >= 1 */
    int total;             /* >= 1 */
    int64_t idle_ms;       /* >= 1 */
};

struct session_info {
    char id[SESSIONS_ID_LEN + 1];
    char account[SESSIONS_NAME_MAX + 1];
    uint32_t count;        /* messages in the listing taken at open */
    uint64_t octets;       /* their total size (STAT) */
    uint32_t marked;       /* messages marked for deletion now */
    uint64_t marked_octets;
    int64_t created_at;    /* Unix ms */
    int64_t expires_at;    /* Unix ms: aborted if not used before (or at the deadline) */
};

struct sessions;
struct session;

/* A session table with its reaper thread.  NULL with e (ERR_INTERNAL). */
struct sessions *sessions_new(struct err *e);
/* Abort every session (no QUIT: nothing is deleted), stop the reaper, free;
 * *s = NULL.  NULL-safe.  No other call may be running. */
void sessions_free(struct sessions **s);

/* The origin tag of an instance id: SESSIONS_ORIGIN_HEX hex digits + NUL. */
void sessions_origin_tag(const char *instance_id, char out[SESSIONS_ORIGIN_HEX + 1]);
/* New ids start with instance_id's origin tag (call before the first open). */
void sessions_set_origin(struct sessions *s, const char *instance_id);
/* Whether id is well formed and was opened by another instance (its tag is
 * not ours; never with no origin set); *tag gets its tag. */
bool sessions_foreign(const struct sessions *s, const char *id,
                      char tag[SESSIONS_ORIGIN_HEX + 1]);

/* Open a session for `account` with the POP3 options o (its strings borrowed
 * from the configuration held by `hold`, which the session keeps a reference
 * to until it ends; o->session_timeout_ms, when > 0, is the whole session's
 * deadline).  Connects, logs in and takes the listing (STAT, UIDL, LIST).  0
 * with *out filled; SESSIONS_FULL; -1 with e. */
int sessions_open(struct sessions *s, const char *account, const struct pop3_opts *o,
                  struct cfgref *hold, const struct sessions_limits *lim,
                  struct session_info *out, struct err *e);

/* Take the session with this id for one request, waiting at most wait_ms
 * while another request holds it.  NULL with *why = SESSIONS_NOTFOUND or
 * SESSIONS_BUSY. */
struct session *sessions_acquire(struct sessions *s, const char *id, int64_t wait_ms, int *why);
/* Give it back (its idle time starts again); a broken one is aborted and
 * forgotten. */
void sessions_release(struct sessions *s, struct session *x);

void sessions_info(const struct session *x, struct session_info *out);
/* The listing taken at open (owned by the session). */
const struct pop3_listing *sessions_listing(const struct session *x);
/* Whether message `number` is marked for deletion. */
bool sessions_is_marked(const struct session *x, uint32_t number);

/* RETR / TOP message `number` to the sink.  SESSIONS_NOMSG, SESSIONS_MARKED,
 * or -1 with e. */
int sessions_retr(struct session *x, uint32_t number, const struct pop3_sink *sink,
                  struct err *e);
int sessions_top(struct session *x, uint32_t number, unsigned lines,
                 const struct pop3_sink *sink, struct err *e);
/* DELE (marks only).  Marking a marked message again is SESSIONS_MARKED. */
int sessions_dele(struct session *x, uint32_t number, struct err *e);
/* RSET: unmark everything. */
int sessions_rset(struct session *x, struct err *e);
int sessions_noop(struct session *x, struct err *e);

/* QUIT and forget the session, whatever the outcome.  0 when the server
 * answered +OK: the marked messages are deleted, *deleted gets their count
 * and, if uidls is not NULL, *uidls a malloc'd array of their UIDLs
 * (*n_uidls entries, each malloc'd; free with sessions_uidls_free).  -1 with
 * e otherwise: nothing may be assumed deleted. */
int sessions_quit(struct sessions *s, struct session *x, uint32_t *deleted, char ***uidls,
                  size_t *n_uidls, struct err *e);
void sessions_uidls_free(char **uidls, size_t n);

/* Sessions open (including those connecting). */
size_t sessions_count(struct sessions *s);

#endif
