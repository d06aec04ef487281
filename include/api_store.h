/*
 * api_store — what the bridge stored: GET /api/v1/messages/{id} (the
 * message as JSON, like its webhook event), .../raw (streamed from the
 * store), .../attachments/{attachment_id}; the webhook outbox: GET
 * /api/v1/deliveries (filters, cursor paging), GET /api/v1/deliveries/{id}
 * (with its attempts), POST /api/v1/deliveries/{id}/retry.  Store only: no
 * POP3.
 */
#ifndef POP3BRIDGE_API_STORE_H
#define POP3BRIDGE_API_STORE_H

#include <stddef.h>

#include "http_route.h"

extern const struct http_route api_store_routes[];
extern const size_t api_store_nroutes;

#endif
