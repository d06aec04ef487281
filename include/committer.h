/*
 * committer — the group commit of messages already fully received.
 *
 * A poll receives each new message into a store_msg (spooled: in memory up
 * to STORE_SPOOL_MEM_MAX, then in an unlinked file), and hands it over
 * complete.  One committer thread, with its own store handle, takes what has
 * queued up from every poll worker and writes it in one store batch: each
 * message with its UIDL marked stored and its pending deliveries, all in one
 * durable commit (one fsync).  While it commits, the pollers go on reading
 * the network; while they wait on the network, no write transaction is open
 * (ARCHITECTURE.md, invariant 6: no transaction waits on the network).
 *
 *   poll worker:  committer_msg_begin -> store_msg_write... ->
 *                 committer_submit (hands the message over) ... ->
 *                 committer_wait (everything submitted is durable, or the
 *                 first error) -> only then DELE.
 *   committer:    up to COMMITTER_GROUP_MAX messages (COMMITTER_GROUP_BYTES)
 *                 -> store_batch_begin, store_msg_finish each,
 *                 store_batch_commit -> notify (deliveries are due).
 *
 * Memory is bounded: at most COMMITTER_QUEUE_MAX messages wait, holding at
 * most COMMITTER_QUEUE_BYTES in memory (a message counts with the part of it
 * the store keeps in memory); committer_submit waits for the committer while
 * the queue is full.  That wait is on the database, never on the network.
 *
 * Threads: committer_start/_stop from one thread; committer_msg_begin,
 * _submit and _wait from any thread, each committer_session used by one
 * thread.  Errors: struct err as the store gives them (ERR_INTERNAL,
 * ERR_USAGE for a UIDL already stored, ERR_LIMIT); ERR_INTERNAL for out of
 * memory or a thread that cannot start.
 */
#ifndef POP3BRIDGE_COMMITTER_H
#define POP3BRIDGE_COMMITTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "store.h"

#define COMMITTER_QUEUE_MAX 128             /* messages waiting for a commit */
#define COMMITTER_QUEUE_BYTES (16u << 20)   /* their bytes held in memory */
#define COMMITTER_GROUP_MAX 64              /* messages in one commit */
#define COMMITTER_GROUP_BYTES (32u << 20)   /* their octets (after the first) */

struct committer;

/* Called on the committer's thread after a commit that stored messages. */
typedef void (*committer_notify_fn)(void *ctx);

/* Open a store handle on state_dir and start the thread.  notify may be
 * NULL.  NULL with *e on failure. */
struct committer *committer_start(const char *state_dir, committer_notify_fn notify,
                                  void *notify_ctx, struct err *e);
/* Commit what is queued, stop the thread, close the handle; *c = NULL.
 * NULL-safe.  Every session must have returned from committer_wait. */
void committer_stop(struct committer **c);

/* One poll's share: what it submitted, what is committed, the first error.
 * Plain data on the caller's stack; fields are the committer's. */
struct committer_session {
    struct committer *c;
    size_t submitted, done, stored;
    bool failed;
    struct err error;
};
void committer_session_init(struct committer_session *s, struct committer *c);

/* store_msg_begin on the committer's handle (begin and write never use its
 * connection: see store.h), so the committer can finish it. */
int committer_msg_begin(struct committer_session *s, const char *account, const char *uidl,
                        struct store_msg **out, struct err *e);

/* Hand m over (always consumed), to be finished with meta, the webhooks and
 * `now` as store_msg_finish does.  meta.message_id and the array of
 * webhook names are copied; meta's other strings and the names themselves
 * are borrowed until committer_wait returns.  A duplicate (meta's dedupe
 * window) is logged as "duplicate".  Waits while the queue is full.
 * -1 with *e only when an earlier message of this session already failed
 * (m is dropped then), or with ERR_LIMIT for more than STORE_WEBHOOKS_MAX
 * webhooks. */
int committer_submit(struct committer_session *s, struct store_msg *m,
                     const struct store_msg_meta *meta, const char *const *webhooks,
                     size_t n_webhooks, int64_t now, struct err *e);

/* Wait until everything this session submitted is committed (or failed).
 * 0, or -1 with the session's first error. */
int committer_wait(struct committer_session *s, struct err *e);

#endif
