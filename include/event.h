/*
 * event — the webhook event (and the API's message view) for a stored
 * message: the raw bytes come from the store, the parsing from message.h.
 *
 *   { "type": "message.received" | "message.too_large",
 *     "timestamp": "<RFC 3339, now>",
 *     "data": { "account": "...", "message": { ...message.h's object... } } }
 *
 * A too-large message was stored as its header only (TOP n 0): its object
 * has the size the server gave, sha256 and raw_url null, no text or html.
 * Small bodies are parsed from memory; large ones (over EVENT_MEM_MAX) are
 * spooled to an unlinked temporary file and parsed from there, so memory
 * stays modest.
 */
#ifndef POP3BRIDGE_EVENT_H
#define POP3BRIDGE_EVENT_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "error.h"
#include "store.h"

#define EVENT_MEM_MAX (1u << 20) /* bodies up to this are parsed in memory */

/* The data.message object of stored message id.  info (may be NULL) gets the
 * store's metadata.  STORE_NOTFOUND-like: NULL with ERR_USAGE "no such
 * message" when it does not exist or its body was purged; ERR_INTERNAL. */
cJSON *event_message(struct store *st, const char *tmp_dir, int64_t id, const char *public_url,
                     uint64_t inline_max, struct store_msg_info *info, struct err *e);

/* The whole event, printed (unformatted); *len gets its length.  The caller
 * frees it with free().  NULL with e set as above. */
char *event_body(struct store *st, const char *tmp_dir, int64_t id, const char *public_url,
                 uint64_t inline_max, size_t *len, struct err *e);

/* RFC 3339 UTC with milliseconds, from Unix ms; returns buf (>= 32 bytes). */
char *event_time(int64_t ms, char *buf, size_t size);

#endif
