/*
 * poller — one poll cycle of one account:
 *
 *   connect, authenticate (pop3) → STAT/UIDL/LIST → compare with the store →
 *   RETR the new ones, pipelined, each streamed into a spooled store_msg and
 *   handed whole to the committer (committer.h), which commits messages
 *   already fully received in groups (message + UIDL seen + one pending
 *   delivery per webhook) on its own thread → wait for those commits → DELE
 *   what the account's policy allows (every delivery done, or older than
 *   delete_after) → QUIT → record the deletions only after QUIT's +OK →
 *   forget UIDLs the server no longer lists.
 *
 * Invariants kept here (ARCHITECTURE.md): no store transaction is open while
 * this thread reads or writes the network (each store call here is its own
 * short transaction, and messages are committed by the committer once
 * received); nothing is DELEted before the commit holding it is durable and
 * every delivery answered 2xx (or delete_after passed); a session that fails
 * before QUIT deletes nothing.
 *
 * A message larger than max_message_size (by LIST) is not retrieved: its
 * header (TOP n 0) is stored instead, marked too large, and delivered as a
 * "message.too_large" event.  A message that turns out larger while being
 * received (LIST understated it) breaks that session, with nothing deleted;
 * the poll then runs once more at once and takes only its header.
 *
 * The store handle is used by the calling thread only.
 */
#ifndef POP3BRIDGE_POLLER_H
#define POP3BRIDGE_POLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "committer.h"
#include "config.h"
#include "error.h"
#include "pop3.h"
#include "store.h"

struct poller_result {
    size_t listed;        /* messages on the server */
    size_t fetched;       /* stored in this poll */
    size_t too_large;     /* recorded as too large */
    size_t ignored;       /* recorded without delivery (start: new) */
    size_t deleted;       /* deleted from the server (QUIT +OK) */
    size_t failed;        /* messages the server refused to give (-ERR on RETR) */
    uint64_t bytes;       /* octets stored */
    long login_delay;     /* seconds the server asks between logins; -1 none */
    bool more;            /* max_messages_per_poll left some for the next poll */
    struct pollhist_poll poll; /* the poll as its history records it (pollhist.h) */
};

/* Run one poll.  `first` is true when the account has never completed a
 * poll (start: new then records what is there without delivering it).
 * Returns 0, or -1 with e set: the pop3 categories (ERR_CONN, ERR_TIMEOUT,
 * ERR_TLS, ERR_PROTO, ERR_SERVER with its code, ERR_AUTH, ERR_LIMIT) or
 * ERR_INTERNAL from the store.  Whatever was committed before an error stays
 * committed and is delivered; nothing was deleted.  Messages are committed
 * through cm (which tells the delivery worker); poller_poll returns only
 * once everything it handed over is committed or failed.  cancel_fd (> 0;
 * 0 none) cancels the session when it becomes readable (pop3_opts): the
 * poll ends at once with ERR_TIMEOUT, nothing deleted.
 * An oauth2 provider account's access token comes from oauth2_access_token
 * first (its errors end the poll); when the server refuses it, the token is
 * refreshed once more and the session tried once again. */
int poller_poll(struct store *st, struct committer *cm, const struct config_account *a,
                bool first, int cancel_fd, struct poller_result *res, struct err *e);

/* This instance's id (config_instance_id), named as the poller of each poll
 * shared through the store on PostgreSQL (store_poll_record).  Call before
 * the first poll; unset: "". */
void poller_set_instance(const char *id);

/* A shared store (store_is_shared): the poll that ended (res->poll of
 * poller_poll) into the store, with its session when one began in the poll
 * (in full only when its details changed since the last written: otherwise
 * only its time; pollhist_session_share) and the account's state when not
 * NULL, in one statement (store_poll_record); buf is the caller's room for
 * the session.  A failure is logged once per streak of failures ("the
 * other instances show older polls").  0, or -1 when nothing was written
 * (state included). */
int poller_share(struct store *st, const char *account, const struct pollhist_poll *h,
                 const struct store_account_state *state, struct pollhist_session *buf);

/* Current wall-clock time in Unix milliseconds (the store's time base). */
int64_t poller_now_ms(void);

#endif
