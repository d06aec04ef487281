/*
 * pollhist — the recent polls of each account and the details of its last
 * POP3 session, kept in memory for the dashboard.  With SQLite (one
 * instance) this is the whole history: nothing is stored, a restart begins
 * a new one.  With PostgreSQL the poller also writes each poll and its
 * session to the store (store_poll_record), and the API reads them from
 * there (store_poll_history), so every instance sharing the store shows the
 * same history whichever instance polled; this memory then feeds the store
 * write and answers only when the store cannot be read.
 *
 * Per account: a ring of the last POLLHIST_POLLS polls (when, how long, how
 * many messages were listed, new, deleted, and the outcome) and the last
 * session's server capabilities (CAPA lines, RFC 2449) and TLS details
 * (version, cipher, the leaf certificate's subject, issuer and expiry).
 *
 * Bounded: at most `max_accounts` accounts (POLLHIST_ACCOUNTS_MAX for the
 * process-wide history); a further account takes the slot of the one
 * updated longest ago.  CAPA lines beyond POLLHIST_CAPA_MAX, longer lines
 * and error texts are cut.
 *
 * Thread-safe: the poller threads record, the HTTP threads read copies.
 * Nothing here blocks on I/O.  Account names are copied (at most
 * POLLHIST_NAME_MAX bytes; a longer name is not recorded).
 */
#ifndef POP3BRIDGE_POLLHIST_H
#define POP3BRIDGE_POLLHIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"

#define POLLHIST_POLLS 20            /* polls kept per account */
#define POLLHIST_ACCOUNTS_MAX 1024   /* accounts of the process-wide history */
#define POLLHIST_NAME_MAX 128        /* bytes of an account name */
#define POLLHIST_CAPA_MAX 32         /* CAPA lines kept */
#define POLLHIST_CAPA_LINE_MAX 127   /* bytes of one CAPA line kept */
#define POLLHIST_ERROR_MAX 255       /* bytes of a poll's error kept */

struct pollhist_poll {
    int64_t at;             /* when it began, Unix ms */
    int64_t duration_ms;
    uint32_t listed;        /* messages on the server */
    uint32_t new_messages;  /* stored in this poll (whole or too large) */
    uint32_t deleted;       /* deleted from the server */
    bool ok;
    char error[POLLHIST_ERROR_MAX + 1]; /* "" when ok */
};

struct pollhist_session {
    int64_t at;             /* when it logged in, Unix ms; 0: no session yet */
    bool tls;               /* false: a plaintext session; the fields below are "" */
    struct net_tls_info tls_info;
    size_t n_capa;
    char capa[POLLHIST_CAPA_MAX][POLLHIST_CAPA_LINE_MAX + 1];
};

struct pollhist;

/* A history for at most max_accounts (>= 1) accounts; NULL when out of memory. */
struct pollhist *pollhist_new(size_t max_accounts);
/* Free; *h = NULL.  NULL-safe. */
void pollhist_free(struct pollhist **h);

/* The process-wide history (POLLHIST_ACCOUNTS_MAX accounts) that the poller
 * feeds and the API reads; made at first use and kept until exit.  NULL only
 * when it could not be made (out of memory): the calls below accept NULL and
 * then record nothing and find nothing. */
struct pollhist *pollhist_default(void);

/* A session of `account` logged in at `at`: its CAPA lines (n of them) and
 * its TLS details (NULL: no TLS). */
void pollhist_session(struct pollhist *h, const char *account, int64_t at,
                      const char *const *capa, size_t n, const struct net_tls_info *tls);

/* A poll of `account` ended. */
void pollhist_poll(struct pollhist *h, const char *account, const struct pollhist_poll *p);

/* What the store (store_poll_record) needs of the account's last session
 * after a poll that began at `since`, so that a session whose details did
 * not change is not written again in full:
 *   POLLHIST_SHARE_NONE  no session began since `since`: nothing;
 *   POLLHIST_SHARE_AT    one did, with the details of the session last saved
 *                        (pollhist_session_shared): out->at gets its time and
 *                        *shared_at the time saved with them (only the time
 *                        moves);
 *   POLLHIST_SHARE_FULL  one did, with new details (or none saved yet, or
 *                        the last save failed): *out gets the whole session.
 * Details are all but the time and whether TLS was resumed. */
enum pollhist_share { POLLHIST_SHARE_NONE, POLLHIST_SHARE_AT, POLLHIST_SHARE_FULL };
enum pollhist_share pollhist_session_share(struct pollhist *h, const char *account,
                                           int64_t since, struct pollhist_session *out,
                                           int64_t *shared_at);

/* The store holds the account's session as of s->at (saved true: written
 * in full or its time moved), or may not hold what it was given (false:
 * the next share writes it in full).  Ignored when a newer session has been
 * recorded meanwhile. */
void pollhist_session_shared(struct pollhist *h, const char *account,
                             const struct pollhist_session *s, bool saved);

/* Copies of what is known of `account`: its last session into *s (may be
 * NULL) and up to max of its polls, newest first, into out[] (*n gets the
 * count).  0, or -1 when nothing was recorded for it. */
int pollhist_get(struct pollhist *h, const char *account, struct pollhist_session *s,
                 struct pollhist_poll *out, size_t max, size_t *n);

#endif
