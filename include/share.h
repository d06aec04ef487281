/*
 * share — spreading account polls over the live instances of one shared
 * store (PostgreSQL): how many account leases an instance may hold, and
 * giving one back.
 *
 * Every instance counts the live instances (a heartbeat within
 * share_live_window_ms(): the heartbeat period, a quarter of the lease, and
 * SHARE_LIVE_BEATS more; itself included) and the accounts of
 * the configuration, and holds at most share_limit() of their leases:
 * ceil(accounts / live).  The sum of every live instance's limit is at least
 * the number of accounts, so no account is left without a poller when the
 * instances agree on the live count.  There is no slack above the limit: an
 * instance allowed to keep ceil + 1 could leave the last one to join with
 * less than its share and, with every other at its limit, an account
 * nobody may take.  Flapping is avoided instead by counting an instance as
 * live through a missed heartbeat (SHARE_LIVE_BEATS) and by giving leases
 * back only at the lease keeper's turn (every quarter of store.lease), at
 * most the excess, and only of accounts not being polled.  A lease is given
 * back with store_account_give_back(): the account is left with no lease,
 * and any instance may take it at once.
 *
 * The instances' counts can disagree for a while (one died and is still
 * counted live by the others), and then an account may be left with no
 * instance allowed to take it.  An account that no instance holds at
 * SHARE_ORPHAN_TURNS keeper turns in a row is an orphan: any instance takes
 * it whatever its share, and no instance gives leases back while it sees an
 * orphan (what it gave back would be one more).  Every account thus has a
 * poller again within a few keeper turns; the share is restored once the
 * counts agree.
 *
 * Pure arithmetic: the keeper (bridge/daemon_keeper.c) reads and writes the
 * leases through the store (store.h).
 */
#ifndef POP3BRIDGE_SHARE_H
#define POP3BRIDGE_SHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHARE_LIVE_BEATS 2   /* heartbeat periods (a quarter of the lease each) an
                                instance stays counted as live without a beat */
#define SHARE_ORPHAN_TURNS 2 /* keeper turns an account stays without a live lease
                                before any instance takes it beyond its share */
#define SHARE_INSTANCES_MAX 1024 /* live instances whose ids a keeper turn keeps (more
                                are counted, and their leases seen as a dead one's) */

/* The most account leases one instance may hold: ceil(accounts / live),
 * live counted as at least 1; 0 when there are no accounts. */
size_t share_limit(size_t accounts, size_t live);

/* Leases to give back when holding `held` with limit `limit` (0 if none). */
size_t share_excess(size_t held, size_t limit);

/* May an instance holding `held` take one more lease under `limit`? */
bool share_may_take(size_t held, size_t limit);

/* May an instance holding `held` take this account, which no instance has
 * held at its last free_turns keeper turns?  Within the limit, or an orphan. */
bool share_may_take_account(size_t held, size_t limit, int free_turns);

/* How long (ms) after its last heartbeat an instance still counts as live,
 * for leases of lease_ms (heartbeats every lease_ms / 4). */
int64_t share_live_window_ms(int64_t lease_ms);

#endif
