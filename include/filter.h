/*
 * filter — which events go to which webhook: a webhook's `filter`
 * (config.h struct config_filter) compiled once when the configuration is
 * loaded, and matched against an event type and a message object (the
 * message.h object: the same one the webhook receives and the API shows).
 *
 * Conditions, all of which must pass (a condition not given passes):
 *   types                the event type is listed ("message.received",
 *                        "message.bounce", "message.too_large",
 *                        "account.auth_error").  Without `types` a webhook
 *                        gets every message.* event and no account.* event.
 *   to                   an address of To, Cc or Delivered-To matches one of
 *                        the patterns
 *   from                 the From address matches one of the patterns
 *                        Address patterns are globs, compared without regard
 *                        to case: `*` any run of characters, `?` one
 *                        character; everything else stands for itself
 *                        ("*@support.example.com", "sales+*@example.com").
 *   subject              the subject matches the PCRE2 pattern (UTF, not
 *                        anchored: use ^ and $; (?i) for case); a message
 *                        without a subject is matched as ""
 *   headers              for each name, some header field of that name
 *                        (case-insensitive) has a value matching the PCRE2
 *                        pattern
 *   has_attachments      true: at least one attachment (disposition
 *                        "attachment" or a file name); false: none
 *   exclude_auto_replies the message's auto_reply is null
 * Message conditions apply to message events only; an account.* event
 * passes when its type is listed.
 *
 * PCRE2 patterns are compiled with PCRE2_UTF | PCRE2_UCP, JIT-compiled when
 * the library has JIT (else interpreted), and matched under the named
 * limits below; a match that hits a limit counts as "no match" and says so
 * in its reason.  Subjects are checked as UTF-8 by the message parser, so
 * matches use PCRE2_NO_UTF_CHECK.
 *
 * Threads: a compiled filter is read-only; filter_match may run on several
 * threads at once (match data is per call).
 * Ownership: filter_compile returns a filter the caller frees with
 * filter_free (NULL is a no-op); the spec may be freed afterwards.
 */
#ifndef POP3BRIDGE_FILTER_H
#define POP3BRIDGE_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "config.h"

#define FILTER_PATTERN_MAX 1024       /* bytes of one pattern (glob or PCRE2) */
#define FILTER_PATTERNS_MAX 64        /* patterns in `to` or `from` */
#define FILTER_MATCH_LIMIT 100000     /* pcre2_set_match_limit */
#define FILTER_DEPTH_LIMIT 10000      /* pcre2_set_depth_limit */
#define FILTER_HEAP_LIMIT_KIB 4096    /* pcre2_set_heap_limit, KiB */
#define FILTER_VALUE_MAX 65536        /* bytes of a subject or header value looked at */
#define FILTER_ADDRESSES_MAX 1000     /* addresses looked at per field (To, Cc...) */
#define FILTER_ERROR_MAX 256          /* a compile error's text */
#define FILTER_KEY_MAX 160            /* the key path of a compile error, under "filter" */

/* Event types, in the order of enum config_event_type; NULL-terminated. */
extern const char *const filter_event_types[];

struct filter;

/* Where and why a filter does not compile. */
struct filter_error {
    char key[FILTER_KEY_MAX];     /* "subject", "headers.X-Priority", "to[2]" */
    char msg[FILTER_ERROR_MAX];   /* "PCRE2 error at offset 3: missing closing parenthesis" */
};

/* Compile spec (spec->present must be true).  NULL with *fe filled when a
 * pattern is bad (the first bad one) or memory runs out. */
struct filter *filter_compile(const struct config_filter *spec, struct filter_error *fe);

void filter_free(struct filter *f);

/* Whether webhook w receives events of `type` at all (its filter's types,
 * or the default: message.* only).  Cheap: no message needed. */
bool filter_wants_type(const struct config_webhook *w, const char *type);

/* Whether w's filter has conditions on the message itself (so the caller
 * must parse it before deciding). */
bool filter_needs_message(const struct config_webhook *w);

/* Whether an event of `type` about message object msg (message.h; may be
 * NULL for account.* events) goes to webhook w.  When why is not NULL (a
 * cJSON array), every condition is evaluated and one object per condition
 * given is appended: {"condition": "subject", "passed": false, "reason":
 * "..."}; without why, evaluation stops at the first failing condition.
 * Reasons quote at most a short prefix of the message's values. */
bool filter_match(const struct config_webhook *w, const char *type, const cJSON *msg,
                  cJSON *why);

/* The event type of a message object: "message.bounce" when its bounce is
 * not null, "message.too_large" when too_large, else "message.received". */
const char *filter_message_type(const cJSON *msg, bool too_large);

/* Routing at store time: whether any webhook of account a has a filter
 * that needs the parsed message (its types or its conditions). */
bool filter_route_needs_message(const struct config_account *a);

/* Routing at store time: what of the message the filters of account a's
 * webhooks need (0: nothing, route by configuration alone):
 *   FILTER_NEEDS_ROUTE        types: routed by the event type (filter_route
 *                             with msg NULL when nothing else is needed)
 *   FILTER_NEEDS_HEADER       to, from, subject, headers or
 *                             exclude_auto_replies: the header block
 *                             (message_filter_json, MESSAGE_FILTER_HEADER)
 *   FILTER_NEEDS_ATTACHMENTS  has_attachments: the MIME structure
 *                             (MESSAGE_FILTER_ATTACHMENTS)
 *   FILTER_NEEDS_TYPE         types that list one of message.received and
 *                             message.bounce without the other: whether the
 *                             message is a bounce (the full message object)
 * Without FILTER_NEEDS_TYPE the routing is the same whether the message is
 * taken as message.received or message.bounce. */
#define FILTER_NEEDS_HEADER 1u
#define FILTER_NEEDS_ATTACHMENTS 2u
#define FILTER_NEEDS_TYPE 4u
#define FILTER_NEEDS_ROUTE 8u
unsigned filter_route_needs(const struct config_account *a);

/* The names of a's webhooks (borrowed from the configuration, in a's
 * order) that get an event of `type` about msg, into names[] (at most max);
 * returns the count.  msg may be NULL when the caller could not parse the
 * message: then only the types decide (nothing is lost for want of a
 * parse). */
size_t filter_route(const struct config_account *a, const char *type, const cJSON *msg,
                    const char **names, size_t max);

/* w's filter as configured (the keys given, header patterns included),
 * for the API; NULL when it has none.  The caller owns it. */
cJSON *filter_to_json(const struct config_webhook *w);

/* Glob match of an address against a pattern (see above); exposed for
 * tests.  Bounded: O(len(p) * len(s)). */
bool filter_glob(const char *pattern, const char *s);

#endif
