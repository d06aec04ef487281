/*
 * bounce — delivery status notifications: the message object's `bounce`,
 *
 *   {recipient, action, status, diagnostic, reporting_mta, original_message_id}
 *
 * null unless the message is a delivery status notification.  A message with
 * a non-null `bounce` is delivered as an event of type "message.bounce".
 *
 * Standard (RFC 3464, RFC 6533): a multipart/report with report-type
 * delivery-status (or global-delivery-status), at the top or inside a
 * multipart/mixed, is a notification.  Its message/delivery-status part
 * (message/global-delivery-status) gives the fields: the per-recipient block
 * of the first recipient whose Action is "failed" (else "delayed", else the
 * first one) gives recipient (Final-Recipient, else Original-Recipient,
 * without the "rfc822;" address type), action (lower case), status (the
 * "d.d.d" code of Status, without its comment) and diagnostic
 * (Diagnostic-Code without its "smtp;" type, unfolded); the per-message
 * block gives reporting_mta (Reporting-MTA without "dns;").  The returned
 * message (message/rfc822, message/global, text/rfc822-headers or
 * message/global-headers) gives original_message_id (without angle
 * brackets).  Fields the report lacks are read from its text as for the
 * formats below.
 *
 * Non-standard: a message from a mailer daemon (From local part MAILER-DAEMON,
 * postmaster, MicrosoftExchange..., or a name "Mail Delivery System/
 * Subsystem"), or with a bounce subject ("Undelivered Mail Returned to
 * Sender", "Mail delivery failed", "Returned mail:", "failure notice",
 * "Delivery Status Notification", "Undeliverable:", "Unzustellbar:", "Non
 * remis :" ...), or with an X-Failed-Recipients field, is a notification when
 * its text reads as one of:
 *   - qmail's "Hi. This is the qmail-send program at HOST." with
 *     "<rcpt>:" blocks and "--- Below this line is a copy of the message.";
 *   - Postfix's "This is the mail system at host HOST." (and the older
 *     "Postfix program") with "<rcpt>: diagnostic" lines;
 *   - Exim's "The following address(es) failed:" with indented addresses and
 *     diagnostics (and its X-Failed-Recipients field);
 *   - Sendmail's "----- The following addresses had permanent fatal errors
 *     -----" with "(reason: ...)";
 *   - Exchange and Office 365: "Delivery has failed to these recipients or
 *     groups:", "Diagnostic information for administrators:", "Generating
 *     server: HOST", "#550 5.1.1 ... ##" or "Remote Server returned '...'";
 *   - Gmail's "Delivery to the following recipient failed permanently:"
 *     (or "has been delayed") with "Technical details of ... failure:";
 *   - otherwise any of them that names a recipient or an enhanced status code.
 * Their action is "failed" (or "delayed" when the text says so), status the
 * first enhanced status code (RFC 3463) of the diagnostic or the text (null
 * without one), reporting_mta the host the text names (else the domain of
 * the From address), and original_message_id the Message-ID of the returned
 * copy (attached, or inline below the text's copy marker).
 *
 * Every field is a string or null; all strings are valid UTF-8.
 *
 * Limits: BOUNCE_STATUS_MAX bytes of the delivery-status part and of the
 * returned headers are read, BOUNCE_TEXT_MAX bytes of the text, reports are
 * looked for BOUNCE_DEPTH_MAX levels deep, BOUNCE_RECIPIENTS_MAX recipient
 * blocks are looked at, and each field is cut at BOUNCE_FIELD_MAX bytes (on a
 * character boundary).  Pure functions, thread-safe.
 */
#ifndef POP3BRIDGE_BOUNCE_H
#define POP3BRIDGE_BOUNCE_H

#include <stddef.h>

#include <cjson/cJSON.h>
#include <gmime/gmime.h>

#define BOUNCE_STATUS_MAX (64 * 1024)  /* bytes of a delivery-status or returned-headers part */
#define BOUNCE_TEXT_MAX (256 * 1024)   /* bytes of the text read for the other formats */
#define BOUNCE_DEPTH_MAX 3             /* multipart levels searched for a report */
#define BOUNCE_RECIPIENTS_MAX 100      /* per-recipient blocks looked at */
#define BOUNCE_FIELD_MAX 1024          /* bytes of one field */

/* The fields; "" when not known. */
struct bounce {
    char recipient[BOUNCE_FIELD_MAX];
    char action[BOUNCE_FIELD_MAX];
    char status[BOUNCE_FIELD_MAX];
    char diagnostic[BOUNCE_FIELD_MAX];
    char reporting_mta[BOUNCE_FIELD_MAX];
    char original_message_id[BOUNCE_FIELD_MAX];
};

/*
 * The fields of a message/delivery-status body (`len` bytes, RFC 3464 §2.1:
 * a per-message block, an empty line, per-recipient blocks), filled into
 * `out` (fields it does not give are left as they are).  Returns the number
 * of recipient blocks read.
 */
int bounce_parse_status(const char *body, size_t len, struct bounce *out);

/*
 * The fields of a notification's text (the formats above), filled into `out`
 * where still "".  Returns 1 when the text reads as a bounce of one of the
 * formats (or names a recipient or a status code), else 0.
 */
int bounce_parse_text(const char *text, size_t len, struct bounce *out);

/*
 * The message object's `bounce` for `msg` (may be NULL: null), whose first
 * text/plain body is `text` and text/html body `html` (UTF-8, either may be
 * NULL).  Returns a new cJSON object, or a cJSON null when the message is not
 * a notification; NULL only when out of memory.
 */
cJSON *bounce_json(GMimeMessage *msg, const char *text, const char *html);

#endif
