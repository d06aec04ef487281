/*
 * api_instances — GET /api/v1/instances: the bridge instances sharing this
 * store, as their heartbeats say (store_instances_each): id, host,
 * public_url, start time, last heartbeat and the accounts each holds a poll
 * lease on now.  An instance counts as live while its last heartbeat is
 * younger than store.lease (it beats every quarter of it); rows older than
 * API_INSTANCES_FORGET_MS are deleted on the way.
 */
#ifndef POP3BRIDGE_API_INSTANCES_H
#define POP3BRIDGE_API_INSTANCES_H

#include <stddef.h>

#include "http_route.h"

#define API_INSTANCES_MAX 256                  /* instances listed */
#define API_INSTANCES_FORGET_MS (24LL * 3600000) /* a silent instance's row is dropped after */

extern const struct http_route api_instances_routes[];
extern const size_t api_instances_nroutes;

#endif
