/*
 * api_accounts — accounts and their live state: GET /api/v1/accounts, GET
 * /api/v1/accounts/{account}, POST /api/v1/accounts/{account}/poll (429
 * with Retry-After while the account backs off or the server's LOGIN-DELAY
 * runs).
 */
#ifndef POP3BRIDGE_API_ACCOUNTS_H
#define POP3BRIDGE_API_ACCOUNTS_H

#include <stddef.h>

#include "http_route.h"

extern const struct http_route api_accounts_routes[];
extern const size_t api_accounts_nroutes;

#endif
