/*
 * daemon — `pop3bridge run`: the scheduler, the poll workers, the delivery
 * thread, signals and configuration reloads, and the HTTP API when the
 * configuration has one.
 *
 *   pop3bridge run --config FILE [--once]
 *
 * SIGTERM/SIGINT: stop taking new polls, cancel the polls in progress at
 * once (their sessions end without QUIT: nothing is deleted; messages
 * already received whole are committed), let in-flight deliveries finish
 * (bounded by DAEMON_DRAIN_MS), exit 0.  The signals are blocked before
 * anything else: one sent during start-up (the configuration loading, the
 * store opening, the API starting) is taken between its steps and stops the
 * same way, exit 0.  SIGHUP: reload the
 * configuration; if it is invalid the old one stays and every problem is
 * logged; webhooks disabled by 410 Gone are enabled again.  --once: poll
 * every account once (again at once while max_messages_per_poll left
 * messages behind), deliver what is due, waiting through retries due
 * within DAEMON_ONCE_WAIT_MS, then exit (0 when every poll succeeded,
 * DAEMON_EXIT_POLLS_FAILED when one failed, else DAEMON_EXIT_POLLS_SKIPPED
 * when an account was skipped).  --once polls an account now even when its
 * saved backoff has not passed, except for the server's LOGIN-DELAY and a
 * refused login's backoff (auth_error): those accounts are skipped, each in
 * a poll_skipped line with the time it may be polled.  A poll cancelled by
 * a stop is logged as poll_cancelled: not a failure, no backoff saved.
 *
 * Account states (visible through the store and the API): idle, polling,
 * backoff (temporary failure: connection, timeout, TLS, [IN-USE],
 * [SYS/TEMP], [LOGIN-DELAY]), auth_error (login refused: longer backoff;
 * or no usable OAuth2 grant: looked at again each poll interval, without
 * contacting anyone, so polling resumes soon after `oauth2 login`), error
 * (anything else).  When each account is polled, and the backoff policy,
 * live in the scheduler (scheduler.h).
 * The OAuth2 keeper (oauth2.h) runs alongside, except with --once.
 *
 * Several instances on one PostgreSQL store ("store" in the configuration):
 * an instance polls an account only under its lease (store.h), taken before
 * the poll (or ahead of it by the lease keeper) and kept, renewed every
 * quarter of store.lease by the keeper thread, which also spreads the
 * accounts over the live instances (share.h): at most ceil(accounts / live)
 * leases each, the excess given back (accounts not being polled), accounts
 * nobody holds taken within the share, an orphan whatever the share.  The
 * main thread writes the heartbeat (the instances table: GET
 * /api/v1/instances) every quarter of store.lease; deliveries are leased for
 * store.lease too.  A killed instance's accounts and deliveries are taken
 * over once its leases expire: within one store.lease (plus a keeper turn).
 * At start an instance gives back the leases a previous run under its id
 * held; at a clean stop it gives back its own and removes its heartbeat row.
 */
#ifndef POP3BRIDGE_DAEMON_H
#define POP3BRIDGE_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "runtime.h"

#define DAEMON_POLL_WORKERS 16         /* accounts polled at once (a poll mostly waits
                                          on its server: login, TLS, replies) */
#define DAEMON_TICK_MS 1000            /* the main thread's turn (watchdog, status line,
                                          heartbeat) when no signal comes */
#define DAEMON_ONCE_TICK_MS 50         /* ...with --once, which ends when the work is done */
#define DAEMON_DRAIN_MS 30000          /* longest a shutdown waits for in-flight work */
#define DAEMON_ONCE_WAIT_MS 60000      /* --once waits for retries due this soon */
#define DAEMON_PURGE_EVERY_MS 3600000  /* retention purge period */
#define DAEMON_PURGE_MAX 1000          /* bodies, and events, purged per period */
#define DAEMON_ACCOUNT_LEASE_MS 60000  /* an account's lease: renewed every quarter of
                                          it while the instance runs; another instance
                                          takes it over this long after a crash */
#define DAEMON_EXIT_POLLS_FAILED 1     /* --once: some poll failed */
#define DAEMON_EXIT_POLLS_SKIPPED 7    /* --once: none failed, but an account was skipped
                                          (LOGIN-DELAY or auth_error backoff not over;
                                          CLI_EXIT_TEMP: try again later) */

/* Choose the store backend the configuration names (store_setup): SQLite
 * when it has no "store", else its PostgreSQL with the resolved password.
 * For every command that opens the store.  0, or -1 with *e. */
struct config;
int daemon_store_setup(const struct config *cfg, struct err *e);

int daemon_main(int argc, char **argv);

/* How a finished poll counts: succeeded (rc 0); cancelled when it failed
 * while the bridge was stopping (logged as poll_cancelled: no failure, no
 * backoff, nothing saved); else failed (backoff, poll_failed). */
enum daemon_poll_outcome { DAEMON_POLL_OK, DAEMON_POLL_CANCELLED, DAEMON_POLL_FAILED };
enum daemon_poll_outcome daemon_poll_outcome(int rc, bool stopping);

/* `run`'s exit code at its end: CLI_EXIT_LOCAL when a thread could not be
 * started; with --once DAEMON_EXIT_POLLS_FAILED when a poll failed, else
 * DAEMON_EXIT_POLLS_SKIPPED when an account was skipped; else CLI_EXIT_OK
 * (without --once failed polls only back off). */
int daemon_exit_code(bool thread_failed, bool once, uint64_t polls_failed,
                     uint64_t polls_skipped);

#endif
