/*
 * event — the webhook event (and the API's message view) for a stored
 * message: the raw bytes come from the store, the parsing from message.h.
 *
 *   { "type": "message.received" | "message.too_large" | "message.bounce",
 *     "timestamp": "<RFC 3339, when the event was written>",
 *     "data": { "account": "...", "message": { ...message.h's object... } } }
 *
 * A message whose object has a non-null `bounce` (a delivery status
 * notification, message.h) is a "message.bounce".
 * A too-large message was stored as its header only (TOP n 0): its object
 * has the size the server gave, sha256 and raw_url null, no text or html.
 * Small bodies are parsed from memory; large ones (over EVENT_MEM_MAX) are
 * spooled to an unlinked temporary file and parsed from there, so memory
 * stays modest.
 *
 * Memory: an event is written to a file (event_spool), never printed into
 * memory; what it holds in memory while it is written is its tree, whose
 * inlined attachments are bounded by the inline budget (message.h), text
 * and html by MESSAGE_BODY_MAX.  Temporary files are made with O_TMPFILE in
 * the directory given (the state directory: mode 0600, never linked, gone
 * when closed).
 */
#ifndef POP3BRIDGE_EVENT_H
#define POP3BRIDGE_EVENT_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "store.h"

#define EVENT_MEM_MAX (1u << 20) /* bodies up to this are parsed in memory */

struct event_opts {
    const char *public_url;     /* api.public_url, for URLs; NULL: none */
    uint64_t inline_max;        /* inline attachments of at most this many bytes... */
    uint64_t inline_total_max;  /* ...within this budget per event; 0: the default
                                   (MESSAGE_INLINE_TOTAL_DEFAULT) */
    int64_t now_ms;             /* the event's timestamp (Unix ms); 0: now */
    const char *const *trusted_authserv_ids; /* the account's (message.h); may be NULL */
    size_t trusted_authserv_id_count;
    const char *address;        /* the account's address, for mailbox_hash; NULL: none */
    const struct config_payload *payload; /* the webhook's payload shaping (event_spool
                                             only); NULL or not present: everything */
    int64_t links_ttl_ms;       /* > 0 (with public_url): raw_url and attachment urls are
                                   signed links (links.h) valid this long, under the
                                   store's link key; 0: plain URLs */
    struct store_loaded *loaded; /* the message as read ahead (store_msg_load_many), used
                                    when its id is the one asked for: its body is taken
                                    over (set to NULL); NULL: read it now */
    const unsigned char *loaded_key; /* the link key read with it (STORE_LINK_KEY_LEN
                                        bytes); NULL: read it now if links are signed */
};

/* The account's part of the options (trusted authserv-ids, address); a is
 * borrowed: keep the configuration alive while o is used.  a may be NULL. */
void event_opts_account(struct event_opts *o, const struct config_account *a);

/* The data.message object of stored message id, with o's URLs, inline
 * limits (inline_total_max 0: MESSAGE_INLINE_TOTAL_DEFAULT) and account
 * options (now_ms is not used).  info (may be NULL) gets the store's
 * metadata.  NULL with ERR_USAGE "no such message" when it does not exist or
 * its body was purged; ERR_INTERNAL. */
cJSON *event_message(struct store *st, const char *tmp_dir, int64_t id, const struct event_opts *o,
                     struct store_msg_info *info, struct err *e);

/* Payload shaping (a webhook's "payload", config.h), applied to a message
 * object in place: a field left out of include becomes null (text, html,
 * raw_url) or [] (headers, attachments); headers "none" empties the
 * header list, a list of names keeps only those fields (any case); with
 * text_max, text and html longer than that many bytes are cut (on a UTF-8
 * character boundary) and the object gets "text_truncated": true.  The
 * other fields (text_reply included) stay.  p NULL or not present: nothing
 * changes. */
void event_shape(cJSON *msg, const struct config_payload *p);

/* Receives each piece of an event as it is written (e.g. to sign it). */
typedef int (*event_tap_fn)(void *ctx, const void *data, size_t len);

/* Write the whole event for stored message id, unformatted JSON (the bytes
 * cJSON_PrintUnformatted would give, see jsonw.h), to a new temporary file
 * in tmp_dir, passing every byte, in order, to tap (may be NULL) as well.
 * 0 with *fd (the file, read it with pread from offset 0; the caller closes
 * it) and *len (its size), or -1 with e: ERR_USAGE "no such message" as
 * above, ERR_INTERNAL (the file, the store, out of memory, tap returned
 * non-zero). */
int event_spool(struct store *st, const char *tmp_dir, int64_t id, const struct event_opts *o,
                event_tap_fn tap, void *tap_ctx, int *fd, uint64_t *len, struct err *e);

/* The same for a stored event that is not a message (store_event_get):
 *   { "type": "<its type>", "timestamp": "<now_ms>", "data": <its data> }
 * ERR_USAGE "no such event" when it does not exist (or its data is not an
 * object), ERR_INTERNAL. */
int event_spool_stored(struct store *st, const char *tmp_dir, int64_t event_id, int64_t now_ms,
                       event_tap_fn tap, void *tap_ctx, int *fd, uint64_t *len, struct err *e);

#endif
