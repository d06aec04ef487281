/*
 * api_mailbox — one-shot mailbox operations over POP3 (mailbox.h: open, one
 * operation, QUIT), each on a mailbox worker with the connection suspended:
 * GET /api/v1/accounts/{account}/mailbox (STAT and CAPA), .../messages
 * (UIDL and LIST, with what the bridge stored and delivered),
 * .../messages/{uidl} (JSON, or raw with Accept: message/rfc822),
 * .../messages/{uidl}/top?lines=N, DELETE .../messages/{uidl} (204 only
 * after QUIT's +OK).
 */
#ifndef POP3BRIDGE_API_MAILBOX_H
#define POP3BRIDGE_API_MAILBOX_H

#include <stddef.h>

#include "http_route.h"

extern const struct http_route api_mailbox_routes[];
extern const size_t api_mailbox_nroutes;

#endif
