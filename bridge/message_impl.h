/*
 * message_impl — what the files of the message module share (private to
 * bridge/message*.c; not a public header; the module's interface is
 * include/message.h).
 *
 *   message.c       the entry points (a message to its JSON, one attachment,
 *                   the TOP view, Message-ID), headers and addresses, the
 *                   message object
 *   message_mime.c  GMime set-up, the parse context and its errors, decoding
 *                   a part in chunks, text bodies, attachments, walking the
 *                   MIME tree
 *
 * One module: its unit tests stay in tests/unit/test_message.c.
 */
#ifndef POP3BRIDGE_MESSAGE_IMPL_H
#define POP3BRIDGE_MESSAGE_IMPL_H

#include "message.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gmime/gmime.h>

#define MESSAGE_CHUNK (64 * 1024)         /* read size while hashing and decoding */
#define MESSAGE_PARTS_MAX 10000           /* MIME parts visited in one message */
#define MESSAGE_ERROR_ITEM_MAX 80         /* bytes of message text quoted in a parse error */
#define MESSAGE_ERROR_LEN_MAX 256         /* one parse error string */
#define MESSAGE_GROUP_DEPTH_MAX 4         /* nested address groups flattened */
#define MESSAGE_URL_MAX 2048              /* raw_url and attachment url */
#define MESSAGE_FALLBACK_CHARSET "WINDOWS-1252"

struct ctx {
    const struct message_opts *o;
    GMimeParserOptions *popts;
    cJSON *errors;         /* parse_errors array, or NULL: errors not collected */
    int nerrors;
    bool errors_capped;
    bool oom;
    /* walking the parts */
    int parts_seen;
    bool parts_capped;
    bool have_text, have_html;
    GString *text, *html;
    cJSON *atts;           /* attachments array (NULL when extracting) */
    int natts;
    uint64_t inlined;      /* decoded bytes inlined so far, against inline_total_max */
    char base_url[MESSAGE_URL_MAX]; /* "<public_url>/api/v1/messages/<id>", "" if none */
    /* extracting one attachment */
    const char *want;
    bool found;
    int extract_rc;
    message_sink_fn sink;
    void *sink_ctx;
    struct message_attachment_info *info;
    struct err *e;
};

/* what a part's decoded content, or a text, is handed to in chunks */
typedef int (*chunk_fn)(void *arg, const char *buf, size_t len);

/* bytes kept up to max (msg_capped_put); over: more came */
struct capped {
    GByteArray *buf;
    size_t max;
    bool over;
};


/* message.c */
int msg_link_query(struct ctx *c, const char *sub, char *q, size_t size);
GMimeMessage *msg_parse(struct ctx *c, GMimeStream *stream);

/* message_mime.c */
cJSON *msg_add(struct ctx *c, cJSON *obj, const char *key, cJSON *item);
int msg_capped_put(void *arg, const char *buf, size_t len);
void msg_ctx_done(struct ctx *c);
int msg_ctx_init(struct ctx *c, const struct message_opts *o, bool collect);
void msg_gmime_ensure(void);
cJSON *msg_jstr(struct ctx *c, const char *what, const char *s);
void msg_perr(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void msg_push(struct ctx *c, cJSON *arr, cJSON *item);
void msg_quote_item(char *dst, size_t size, const char *s);
GString *msg_text_to_utf8(struct ctx *c, const char *path, const char *cs, const char *s,
                      size_t n);
size_t msg_utf8_append(GString *out, const char *s, size_t n);
void msg_utf8_truncate(GString *s, size_t max);
void msg_walk(struct ctx *c, GMimeObject *obj, const char *path, int depth);

#endif
