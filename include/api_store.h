/*
 * api_store — what the bridge stored: GET /api/v1/messages/{id} (the
 * message as JSON, like its webhook event), .../raw (streamed from the
 * store), .../attachments/{attachment_id}; the webhook outbox: GET
 * /api/v1/deliveries (filters, cursor paging), GET /api/v1/deliveries/{id}
 * (with its attempts), POST /api/v1/deliveries/{id}/retry; signed links
 * (links.h): .../raw and .../attachments/{attachment_id} are served without
 * a token to a valid ?exp=&sig=, and POST /api/v1/links/rotate replaces the
 * store's link key, revoking every link.  Store only: no POP3.
 */
#ifndef POP3BRIDGE_API_STORE_H
#define POP3BRIDGE_API_STORE_H

#include <stddef.h>

#include "http_route.h"

extern const struct http_route api_store_routes[];
extern const size_t api_store_nroutes;

/* http_options.link_verify: the link's exp and sig against the store's link
 * key, now.  0, or -1 with why (expired, altered or revoked, malformed, or
 * the store unreadable). */
int api_link_verify(struct http_req *r, const char *path, const char *exp, const char *sig,
                    char *why, size_t why_size);

#endif
