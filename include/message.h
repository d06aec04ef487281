/*
 * message — a stored RFC 5322 message, parsed with GMime 3.2, as the JSON
 * object that is the webhook event's `data.message` (and the API's message
 * view), plus extraction of one attachment and the TOP view.
 *
 * Follows RFC 5322 (message format), RFC 2045/2046 (MIME, multiparts,
 * quoted-printable and base64), RFC 2047 (encoded words in headers), RFC 2231
 * (encoded and continued parameters: filename*=UTF-8''...), RFC 2183
 * (Content-Disposition; an unknown disposition counts as "attachment"),
 * RFC 2392 (Content-ID), RFC 3339 (dates), RFC 3501 §6.4.5 (part numbers).
 *
 * The object (field names are the contract, see openapi.yaml):
 *   id, uidl, received_at     from the caller (null when not given)
 *   size, sha256              octets of the raw message and their SHA-256 (hex)
 *   date                      the Date header in UTC, "YYYY-MM-DDThh:mm:ssZ";
 *                             null when missing or unparseable (a bad one adds a
 *                             parse error)
 *   subject                   RFC 2047-decoded, UTF-8; null when missing
 *   message_id, in_reply_to   ids WITHOUT angle brackets ("abc@host"); null
 *                             when missing; in_reply_to is the first id
 *   references                array of ids without angle brackets, in order
 *   from, sender              {name, address} (first mailbox, groups
 *                             flattened) or null; name is null when absent
 *   reply_to, to, cc          arrays of {name, address}; groups flattened
 *   headers                   [{name, value}] of the top-level header, in
 *                             order, values unfolded and RFC 2047-decoded
 *                             (capped: MESSAGE_HEADERS_MAX entries,
 *                             MESSAGE_HEADER_BYTES_MAX bytes in all)
 *   text, html                the first text/plain (text/html) part that is
 *                             not an attachment (no file name, disposition not
 *                             "attachment"), outside attached messages,
 *                             transfer-decoded and converted to UTF-8, line
 *                             ends as stored; null when there is none (capped
 *                             at MESSAGE_BODY_MAX).  Later such parts are
 *                             listed as inline attachments.
 *   text_reply                the new text of a reply: `text` (or, without a
 *                             text/plain part, the text of `html`) without the
 *                             quoted history and the signature, the html
 *                             structure telling where they begin (reply.h);
 *                             "" when nothing new is left; null when the
 *                             message has neither text nor html
 *   authentication            {authserv_id, spf, dkim: [{domain, result}], dmarc,
 *                             arc} from Authentication-Results (authres.h):
 *                             only the topmost field, or, with
 *                             opts->trusted_authserv_ids, the fields of the
 *                             topmost trusted authserv-id; null without one
 *   spam                      {score, flag, tests} from X-Spam-Status,
 *                             X-Spam-Score, X-Spam-Flag (mailclass.h); null
 *                             without them
 *   auto_reply                null, or "vacation", "auto-replied",
 *                             "auto-generated", "auto-notified" (mailclass.h)
 *   bounce                    {recipient, action, status, diagnostic,
 *                             reporting_mta, original_message_id} when the
 *                             message is a delivery status notification
 *                             (bounce.h), else null.  A non-null bounce is
 *                             what makes the event "message.bounce" instead of
 *                             "message.received" (the caller building the
 *                             event looks at this field)
 *   list                      {id, unsubscribe: [uris], unsubscribe_post} from
 *                             List-Id, List-Unsubscribe, List-Unsubscribe-Post
 *                             (mailclass.h); null without them
 *   mailbox_hash              the "+detail" of the recipient (Delivered-To,
 *                             X-Original-To, To, Cc) that is opts->address with
 *                             one (subaddr.h); null without an address or a
 *                             detail
 *   attachments               [{id, filename, content_type, size, sha256,
 *                             content_id, disposition, content | url +
 *                             inline_limit}]
 *   raw_url                   <public_url>/api/v1/messages/<id>/raw (the id
 *                             percent-encoded); null without public_url or id
 *   parse_errors              what was wrong, as strings (never a secret)
 *
 * Attachments are every leaf part that is not taken as text or html, plus
 * every message/rfc822 part (whose own parts are not looked into; its decoded
 * bytes are the attached message as GMime writes it back: the same header
 * fields and body, with LF line ends in the header).  An attachment's id is
 * its MIME part number (RFC 3501 §6.4.5): "1" for a single-part message, "2",
 * "2.1" ... inside multiparts, depth first; the same message always gives the
 * same ids, and message_attachment() takes them.  `disposition` is
 * "attachment" or "inline" (RFC 2183: unknown types are "attachment"; without
 * the header, a part with a file name is an "attachment", one without is
 * "inline"); `content_type` is "type/subtype" in lower case; `filename`
 * (RFC 2231 and RFC 2047 decoded) and `content_id` (without angle brackets)
 * are null when absent; `size` and `sha256` are of the decoded bytes, which
 * are hashed while streaming and never held whole in memory unless they are
 * inlined: `content` (base64) when size <= inline_max and the message's
 * inline budget (inline_total_max decoded bytes over all its attachments,
 * spent in attachment order) still has room for it; else `url`
 * (<public_url>/api/v1/messages/<id>/attachments/<attachment id>; null
 * without public_url or id) and `inline_limit`, the limit that kept it out:
 * "inline_attachments_max" (its own size) or "inline_total_max" (the
 * budget).
 *
 * Charsets: a declared charset GMime or iconv knows is converted to UTF-8;
 * an unknown one is read as windows-1252 (a superset of ISO-8859-1 in its
 * printable range); a part without a charset is taken as UTF-8 if valid, else
 * windows-1252.  Any byte sequence that still is not valid UTF-8, and every
 * NUL, becomes U+FFFD.  Each fallback adds a parse error.  Every string in the
 * returned object is valid UTF-8.
 *
 * A malformed message (no header, broken boundaries, bad base64, truncated,
 * empty, binary) still gives an object, best effort, with parse_errors: input
 * without any header is taken whole as `text`; a multipart whose boundary
 * never appears gives its content as `text`; invalid base64 characters are
 * skipped.  Header text in raw 8-bit is read as UTF-8 if valid, else as
 * windows-1252 (GMime's fallback charsets).
 *
 * Threads: the calls are safe from several threads at once (each call has its
 * own parser).  GMime is initialised once on first use.
 */
#ifndef POP3BRIDGE_MESSAGE_H
#define POP3BRIDGE_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "error.h"

#define MESSAGE_HEADERS_MAX 1000              /* header fields listed in `headers` */
#define MESSAGE_HEADER_BYTES_MAX (256 * 1024) /* bytes of names + values in `headers` */
#define MESSAGE_BODY_MAX (4 * 1024 * 1024)    /* bytes of `text`, and of `html` (UTF-8) */
#define MESSAGE_ATTACHMENTS_MAX 1000          /* entries in `attachments` */
#define MESSAGE_DEPTH_MAX 32                  /* multipart nesting we descend into */
#define MESSAGE_PARSE_ERRORS_MAX 50           /* entries in `parse_errors` (+1 "more") */
#define MESSAGE_ADDRESSES_MAX 1000            /* entries in each address array */
#define MESSAGE_REFERENCES_MAX 500            /* entries in `references` */
#define MESSAGE_TOP_BODY_MAX (1024 * 1024)    /* bytes of `body` in the TOP view */
#define MESSAGE_ID_MAX 128                    /* attachment id length ("2.1.3") */
#define MESSAGE_CT_MAX 128                    /* content type buffer in the info */
#define MESSAGE_FILENAME_MAX 256              /* filename buffer in the info */
#define MESSAGE_INLINE_TOTAL_DEFAULT (1u << 20) /* inline budget when the opts give none */

struct message_opts {
    const char *id;          /* stored message id (put in URLs percent-encoded); may be NULL */
    const char *uidl;        /* may be NULL */
    const char *received_at; /* RFC 3339, from the store; may be NULL */
    const char *public_url;  /* api.public_url, e.g. "http://127.0.0.1:8025"; NULL: no URLs */
    const char *sha256_hex;  /* of the raw message if the caller knows it; NULL: computed */
    uint64_t inline_max;     /* attachments of at most this many decoded bytes are inlined */
    uint64_t inline_total_max; /* ...while the message's inlined bytes stay within this;
                                  0: MESSAGE_INLINE_TOTAL_DEFAULT */
    const char *const *trusted_authserv_ids; /* the account's trusted_authserv_ids (authres.h) */
    size_t trusted_authserv_id_count;        /*   0: only the topmost Authentication-Results */
    const char *address;     /* the account's address, for mailbox_hash; NULL: none */
    const unsigned char *link_key; /* with public_url and id: raw_url and attachment urls */
    size_t link_key_len;     /*   are signed links (links.h) valid until link_exp */
    int64_t link_exp;        /*   (unix seconds); NULL: plain URLs (a token needed) */
};

/*
 * The message object for `len` bytes at `raw` (which are copied into a GMime
 * memory stream: meant for messages the store holds in memory; use the _fd
 * call for large ones).  `o` may be NULL (all caller fields null, no URLs,
 * nothing inlined).  Returns a new object the caller frees with cJSON_Delete.
 * NULL only with ERR_INTERNAL (out of memory) or ERR_USAGE (raw NULL with
 * len > 0).  Malformed input is never an error: see parse_errors.
 */
cJSON *message_to_json(const void *raw, size_t len, const struct message_opts *o,
                       struct err *e);

/*
 * The same for the message that is the whole content of `fd` (from offset 0
 * to its end), which must be seekable (a regular file): parts are read in
 * place, attachments streamed, so memory stays modest whatever the size.
 * The fd is not closed; its file offset is changed.
 * Errors: ERR_USAGE (fd not seekable), ERR_INTERNAL (read error, no memory).
 */
cJSON *message_to_json_fd(int fd, const struct message_opts *o, struct err *e);

/* Receives decoded attachment bytes; returns 0 to go on, non-zero to stop. */
typedef int (*message_sink_fn)(void *ctx, const void *buf, size_t len);

struct message_attachment_info {
    char content_type[MESSAGE_CT_MAX];       /* "type/subtype", lower case */
    char filename[MESSAGE_FILENAME_MAX];     /* UTF-8, cut on a character boundary; "" if none */
    uint64_t size;                           /* decoded bytes written to the sink */
};

/*
 * Writes the decoded bytes of attachment `att_id` (an id from the object's
 * `attachments`) to `sink`, in chunks; fills `info` (may be NULL) before the
 * first byte is written.  Returns 0, or -1 with:
 *   ERR_USAGE     no attachment with that id in this message (HTTP 404)
 *   ERR_CONN      the sink returned non-zero (e.g. the client went away)
 *   ERR_INTERNAL  out of memory, read error
 */
int message_attachment(const void *raw, size_t len, const char *att_id,
                       message_sink_fn sink, void *ctx,
                       struct message_attachment_info *info, struct err *e);
/* The same from a seekable fd (as message_to_json_fd). */
int message_attachment_fd(int fd, const char *att_id, message_sink_fn sink, void *ctx,
                          struct message_attachment_info *info, struct err *e);

/*
 * The TOP view for the API, from what POP3 TOP returned (the header, a blank
 * line, the first lines of the body): {uidl, headers, subject, from, date,
 * body}; the fields are as in the message object, `body` is the body lines
 * as they came (not transfer-decoded), made valid UTF-8 and capped at
 * MESSAGE_TOP_BODY_MAX.  Caller frees with cJSON_Delete.  NULL only with
 * ERR_INTERNAL (out of memory) or ERR_USAGE (raw NULL with len > 0).
 */
cJSON *message_top_json(const void *raw, size_t len, const char *uidl, struct err *e);

/* The Message-ID of the message whose first `len` bytes are at head (the
 * header is read up to its end or len, unfolded), without angle brackets,
 * into out (size bytes, cut if longer).  Returns 1 when found, 0 when there
 * is none (or it is empty).  No GMime: meant for the poller's
 * de-duplication before a message is stored. */
int message_id_of(const void *head, size_t len, char *out, size_t size);

/*
 * What a webhook filter (filter.h) looks at, read as cheaply as it can be:
 * an object with only subject, from, to, cc, headers and auto_reply, as in
 * the full object; with MESSAGE_FILTER_ATTACHMENTS also `attachments`,
 * one {disposition, filename} per entry the full object would list.
 *   MESSAGE_FILTER_HEADER       only the header block is read: up to its
 *                               blank line (at most MESSAGE_FILTER_HEAD_MAX
 *                               bytes; a longer header block, or a message
 *                               that is all header, is read whole); the
 *                               body is never looked at
 *   MESSAGE_FILTER_ATTACHMENTS  the MIME structure is parsed (the whole
 *                               message is read once), but no part is
 *                               decoded, converted or hashed
 * No bounce (it needs the text): a caller that must tell message.bounce
 * from message.received uses message_to_json.  From fd (>= 0, read with
 * pread, seekable) or else len bytes at raw.  The caller frees the object
 * with cJSON_Delete.  NULL only with ERR_INTERNAL (no memory, read error)
 * or ERR_USAGE (raw NULL with len > 0, fd not seekable).
 */
#define MESSAGE_FILTER_HEADER 0u
#define MESSAGE_FILTER_ATTACHMENTS 1u
#define MESSAGE_FILTER_HEAD_MAX (1024 * 1024) /* bytes of header block read alone */
cJSON *message_filter_json(const void *raw, size_t len, int fd, unsigned what, struct err *e);

/* Releases GMime's global state; call once at process exit, after every
 * other message_* call has returned; no message_* call may follow. */
void message_global_cleanup(void);

#endif
