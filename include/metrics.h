/*
 * metrics — the bridge's counters and histograms, rendered in the Prometheus
 * text exposition format (version 0.0.4) for GET /metrics.
 *
 * Families (every name starts with "pop3bridge_"):
 *   polls_total{account,result}            counter  result = ok | error
 *   poll_errors_total{account,kind}        counter  kind = connection | timeout | tls |
 *                                                   protocol | auth | limit | internal |
 *                                                   usage | server | in_use | login_delay |
 *                                                   sys_temp | sys_perm
 *   messages_fetched_total{account}        counter  messages stored by polls
 *   bytes_fetched_total{account}           counter  octets stored by polls
 *   messages_too_large_total{account}      counter
 *   messages_deleted_total{account}        counter  deleted from the server by polls
 *   deliveries_total{webhook,outcome}      counter  outcome as the delivery worker names it
 *                                                   (delivered, retry, gone, dead, ...)
 *   delivery_latency_seconds               histogram  stored -> delivered (2xx)
 *   http_requests_total{code}              counter  API responses by status
 *   delivery_queue{status}                 gauge    deliveries by status (from the store)
 *   api_sessions_open                      gauge    explicit POP3 sessions open
 *   metrics_series_dropped_total           counter  updates lost to METRICS_SERIES_MAX
 *
 * The counters are process-wide (the daemon's runtime hooks have no context
 * argument): one set per process, guarded by one mutex, safe from any
 * thread.  Label values are escaped as the format requires (\\, \", \n).
 */
#ifndef POP3BRIDGE_METRICS_H
#define POP3BRIDGE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
struct poller_result; /* poller.h */
#include "store.h"

#define METRICS_SERIES_MAX 4096   /* label combinations kept per family */
#define METRICS_LABEL_MAX 128     /* bytes of one label value; longer values are cut */
#define METRICS_TEXT_MAX (8u << 20) /* bytes of one rendering */

/* Hook for runtime.on_poll: one finished poll of `account`; e is NULL on
 * success (then r is the result), else the error (r may be NULL). */
void metrics_on_poll(const char *account, const struct err *e, const struct poller_result *r);

/* Hook for delivery_set_observer: one finished delivery attempt.  ctx unused. */
void metrics_on_delivery(void *ctx, const struct store_delivery *dl, const char *outcome,
                         int http_status, int64_t latency_ms);

/* One HTTP response sent by the API. */
void metrics_on_http(int status);

/* Values read at rendering time. */
struct metrics_gauges {
    const struct store_queue_counts *queue; /* NULL: the family is left out */
    int64_t sessions_open;
};

/* The whole exposition as a NUL-terminated string (malloc'd; the caller
 * frees it with free()); *len gets its length.  NULL only when out of memory
 * or over METRICS_TEXT_MAX (e set: ERR_INTERNAL / ERR_LIMIT). */
char *metrics_render(const struct metrics_gauges *g, size_t *len, struct err *e);

/* Forget every counter (tests). */
void metrics_reset(void);

#endif
