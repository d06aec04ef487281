/*
 * delivery — the outbox worker: leases due deliveries from the store, one
 * queue per webhook, writes and signs each event just before its POST
 * (event.h, webhook.h: a libcurl multi handle, each event streamed from a
 * temporary file), and records the outcome:
 *
 *   2xx            delivered
 *   410 Gone       the webhook is disabled until the configuration is reloaded
 *                  (its deliveries not yet started are given back untried)
 *   anything else  failed, retried per the webhook's retry_schedule with
 *                  jitter (Retry-After honoured); after the last one, dead
 *   event not      dead when the message is gone (purged); otherwise failed
 *   written        and retried on the schedule (disk full, store error)
 *
 * Redirects are not followed.  A delivery whose webhook is no longer in the
 * configuration is recorded dead, with that as its error (redeliverable
 * through the API once the webhook is back); they are looked for at start,
 * after each reload and every DELIVERY_SWEEP_MS.
 *
 * Queues: each webhook has its own queue and its own limit (max_in_flight),
 * and the sender's DELIVERY_IN_FLIGHT slots are shared fairly among the
 * webhooks with work, so a slow or dead receiver delays only its own
 * deliveries.  Each webhook's deliveries are leased separately, at most a
 * few times its max_in_flight ahead, so a slow webhook's backlog never takes
 * another's place.  An event is written only when its transfer starts.
 * The messages of one lease are read with it, in one store call
 * (store_msg_load_many): bodies of at most DELIVERY_PRELOAD_BODY_MAX octets,
 * DELIVERY_PRELOAD_BYTES in all held at once; larger ones, those past that
 * budget and any read more than DELIVERY_PRELOAD_TTL_MS before their
 * transfer starts are read when it starts.
 *
 * Leases (store.h): every delivery taken is leased to this instance's id for
 * the lease time and renewed every quarter of it while anything is held.
 * Outcomes are recorded after the transfers, in short group commits (at
 * most DELIVERY_FLUSH_MS or DELIVERY_FLUSH_MAX outcomes late); no store
 * write transaction is ever open while a transfer is waited on.  An outcome
 * recorded under a lease another worker has taken meanwhile is kept as
 * history only (STORE_LEASE_LOST) and counts for nothing here.  An outcome
 * that could not be recorded (the store failed) is not retried: its lease
 * is released as soon as the store takes writes again, and expires
 * otherwise, and the event goes out again with the same webhook-id.
 * Deliveries leased but not started are released when draining (cfg NULL)
 * and by delivery_free.
 *
 * Webhook-ids: webhook_event_id(the message's event key, webhook), or for
 * messages stored before event keys existed, webhook_id(account, UIDL,
 * webhook), so their ids do not change across the upgrade.
 *
 * Times: store times are Unix ms (wall clock); every interval and wait here
 * is measured on CLOCK_MONOTONIC.
 *
 * One thread drives a struct delivery and its store handle; delivery_wakeup()
 * may be called from any thread (new messages were committed, a retry was
 * requested, the configuration was reloaded).
 */
#ifndef POP3BRIDGE_DELIVERY_H
#define POP3BRIDGE_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgref.h"
#include "error.h"
#include "store.h"

#define DELIVERY_IN_FLIGHT 64     /* requests at once over all webhooks */
#define DELIVERY_AHEAD_MIN 32     /* deliveries leased ahead per webhook: 4 x its
                                     max_in_flight, at least this */
#define DELIVERY_HELD_MAX 512     /* deliveries held (waiting or running) in all */
#define DELIVERY_LEASE_BATCH 64   /* deliveries leased per store call */
#define DELIVERY_PRELOAD_BODY_MAX (256u << 10) /* bodies read with their lease: at most */
#define DELIVERY_PRELOAD_BYTES (8u << 20)      /* ... and in all, held at once */
#define DELIVERY_PRELOAD_TTL_MS 5000           /* read again when older at the transfer */
#define DELIVERY_JITTER 0.2       /* +-20% on retry delays */
#define DELIVERY_LEASE_MS (15 * 60 * 1000) /* a leased delivery is ours this long;
                                              renewed every quarter of it */
#define DELIVERY_RECHECK_MS 1000  /* a webhook with nothing due is asked again
                                     after this (at once when woken) */
#define DELIVERY_FLUSH_MS 50      /* an outcome waits at most this for its commit */
#define DELIVERY_FLUSH_MAX 256    /* ... or until this many are waiting */
#define DELIVERY_UNRECORDED_MAX 4096 /* unrecorded outcomes whose leases are kept
                                        to be released; beyond, they expire */
#define DELIVERY_SWEEP_MS (10 * 60 * 1000) /* look for deliveries of removed webhooks */
#define DELIVERY_BUSY_WAIT_MS 200 /* the longest wait of a step with work under way
                                     (transfers, a sweep, leases to release) */

struct delivery_stats {
    uint64_t delivered, retried, dead, disabled;
    uint64_t lease_lost;         /* outcomes another worker's lease overrode */
    uint64_t unrecorded;         /* outcomes the store did not take */
    uint64_t latency_ms_sum;     /* stored -> delivered, summed */
};

struct delivery;

/* store: a handle for this thread (the delivery owns nothing of it).
 * owner: this instance's id, the owner of the delivery leases it takes;
 * the leases a previous run under the same id left are released at once.
 * NULL with e (ERR_USAGE: owner empty or over STORE_OWNER_MAX bytes;
 * ERR_INTERNAL). */
struct delivery *delivery_new(struct store *st, const char *owner, struct err *e);

/* The lease time (default DELIVERY_LEASE_MS; at least 100 ms).  Before the
 * first step; tests shorten it. */
void delivery_set_lease_ms(struct delivery *d, int64_t lease_ms);

/* Lease due deliveries where a webhook's queue has room, start what the
 * sender has slots for, drive the transfers for up to wait_ms (at most
 * DELIVERY_BUSY_WAIT_MS; less when outcomes wait for their commit), and
 * record finished outcomes.  With nothing under way, sleep up to wait_ms,
 * but no later than the soonest time a webhook's store is to be asked again
 * (a retry falling due), unless woken.  cfg NULL
 * means draining: nothing new is leased or started, deliveries waiting in
 * the queues are released, running ones finish.  Returns the number of
 * transfers that finished, or -1 with e (ERR_INTERNAL: the sender or the
 * store failed; the next call tries again). */
int delivery_step(struct delivery *d, struct cfgref *cfg, int wait_ms, struct err *e);

/* Deliveries held and not yet recorded (waiting, running, or finished and
 * waiting for their commit). */
size_t delivery_in_flight(const struct delivery *d);
/* Make a waiting delivery_step return now and ask every webhook's queue for
 * due deliveries again.  Any thread. */
void delivery_wakeup(struct delivery *d);
void delivery_stats(const struct delivery *d, struct delivery_stats *out);
/* Called with each recorded outcome (metrics); NULL to stop. */
void delivery_set_observer(struct delivery *d,
                           void (*fn)(void *ctx, const struct store_delivery *dl,
                                      const char *outcome, int http_status, int64_t latency_ms),
                           void *ctx);

/* Abort what is in flight, record what finished, release every lease held
 * (the deliveries are due again at once), free.  NULL is a no-op. */
void delivery_free(struct delivery *d);

#endif
