/*
 * api_stats — the dashboard's figures, read from the store:
 *
 *   GET /api/v1/webhooks               each configured webhook with its
 *                                      accounts, whether it is disabled (410),
 *                                      and its delivery statistics
 *                                      (store_webhook_stats: attempts in the
 *                                      last hour and day, success rate,
 *                                      p50/p99 latency, last error);
 *   GET /api/v1/stats/hourly?hours=N   messages received, delivery attempts
 *                                      and 2xx answers per UTC hour over the
 *                                      last N hours (default
 *                                      API_STATS_HOURS_DEFAULT, at most
 *                                      STORE_STATS_HOURS_MAX), oldest first
 *                                      (store_stats_hourly).
 *
 * Both run on the HTTP pool's threads (store reads only).
 */
#ifndef POP3BRIDGE_API_STATS_H
#define POP3BRIDGE_API_STATS_H

#include <stddef.h>

#include "http_route.h"

#define API_STATS_HOURS_DEFAULT 48

extern const struct http_route api_stats_routes[];
extern const size_t api_stats_nroutes;

#endif
