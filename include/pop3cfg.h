/*
 * pop3cfg — the one mapping from an account's configuration to the POP3
 * engine's options (pop3.h): host, port, TLS mode, trust (CA file or
 * certificate pin), credentials, allowed mechanisms, network timeout and the
 * message size limit with LIST's slack (POP3_LIST_SLACK).  Shared by the
 * poller and by the API's mailbox service and sessions, so a POP3 session
 * opened for the API behaves exactly like the poller's.
 *
 * Pure; no allocation, no errors.
 */
#ifndef POP3BRIDGE_POP3CFG_H
#define POP3BRIDGE_POP3CFG_H

#include "config.h"
#include "pop3.h"

#define POP3CFG_TIMEOUT_DEFAULT_MS 30000 /* when the account's timeout is out of range */

/* Fill *o for account a.  Every string in *o is borrowed from a: keep the
 * configuration alive while the session lives.  No trace callback. */
void pop3cfg_opts(const struct config_account *a, struct pop3_opts *o);

#endif
