/*
 * delivery — the outbox worker: takes due deliveries from the store, builds
 * each event (event.h), signs and POSTs it (webhook.h, a libcurl multi
 * handle with several requests in flight), and records the outcome:
 *
 *   2xx            delivered
 *   410 Gone       the webhook is disabled until the configuration is reloaded
 *   anything else  failed, retried per the webhook's retry_schedule with
 *                  jitter (Retry-After honoured); after the last one, dead
 *
 * Redirects are not followed.  A delivery whose webhook is no longer in the
 * configuration is recorded dead, with that as its error (redeliverable
 * through the API once the webhook is back).
 *
 * One thread drives a struct delivery; delivery_wakeup() may be called from
 * any thread (new messages were committed, a retry was requested).
 */
#ifndef POP3BRIDGE_DELIVERY_H
#define POP3BRIDGE_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgref.h"
#include "error.h"
#include "store.h"

#define DELIVERY_IN_FLIGHT 16    /* requests at once */
#define DELIVERY_JITTER 0.2      /* +-20% on retry delays */
#define DELIVERY_LEASE_MS (15 * 60 * 1000) /* a leased delivery is ours this long; renewed
                                             every quarter of it while in flight */

struct delivery_stats {
    uint64_t delivered, retried, dead, disabled;
    uint64_t latency_ms_sum;     /* stored -> delivered, summed */
};

struct delivery;

/* store: a handle for this thread (the delivery owns nothing of it).
 * owner: this instance's id, the owner of the delivery leases it takes;
 * the leases a previous run under the same id left are released at once.
 * NULL with e. */
struct delivery *delivery_new(struct store *st, const char *owner, struct err *e);

/* Lease due deliveries while there is room, submit them with the given
 * configuration, and drive transfers for up to wait_ms.  Returns the number
 * of deliveries that finished, or -1 with e. */
int delivery_step(struct delivery *d, struct cfgref *cfg, int wait_ms, struct err *e);

/* Requests not yet finished. */
size_t delivery_in_flight(const struct delivery *d);
/* Make a waiting delivery_step return now.  Any thread. */
void delivery_wakeup(struct delivery *d);
void delivery_stats(const struct delivery *d, struct delivery_stats *out);
/* Called with each finished delivery (metrics); NULL to stop. */
void delivery_set_observer(struct delivery *d,
                           void (*fn)(void *ctx, const struct store_delivery *dl,
                                      const char *outcome, int http_status, int64_t latency_ms),
                           void *ctx);

/* Abort what is in flight (its leases are released, nothing recorded), free. */
void delivery_free(struct delivery *d);

#endif
