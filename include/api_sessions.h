/*
 * api_sessions — explicit POP3 sessions (sessions.h): POST
 * /api/v1/accounts/{account}/sessions, GET and DELETE (QUIT)
 * /api/v1/sessions/{id}, .../messages[/{number}[/top]], DELETE
 * .../messages/{number} (marks), POST .../reset and .../noop.  Every
 * command runs on a mailbox worker with the connection suspended.
 */
#ifndef POP3BRIDGE_API_SESSIONS_H
#define POP3BRIDGE_API_SESSIONS_H

#include <stddef.h>

#include "http_route.h"

extern const struct http_route api_sessions_routes[];
extern const size_t api_sessions_nroutes;

#endif
