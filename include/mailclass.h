/*
 * mailclass — what kind of mail a message is, from its header fields: the
 * message object's `auto_reply`, `spam` and `list`.
 *
 * auto_reply: null, or the kind of automatic message:
 *   "vacation"        an out-of-office answer: a subject of the common
 *                     vacation responders ("Automatic reply:", "Out of
 *                     Office:", "Auto-Reply:", "Automatische Antwort:",
 *                     "Abwesenheitsnotiz:", "Réponse automatique :",
 *                     "Respuesta automática:", "Risposta automatica:",
 *                     "Resposta automática:", "Automatisch antwoord:",
 *                     "Automatiskt svar:", "Automatisk svar:", "Automaattinen
 *                     vastaus:", "Odpowiedź automatyczna:", "自動応答:",
 *                     "自动回复:" ...)
 *   "auto-replied"    RFC 3834 Auto-Submitted: auto-replied, X-Autoreply,
 *                     X-Autorespond, Precedence: auto_reply
 *   "auto-generated"  Auto-Submitted: auto-generated (and any other auto-*
 *                     value), Precedence: bulk or junk, X-Auto-Response-Suppress
 *   "auto-notified"   Auto-Submitted: auto-notified (RFC 5436)
 * in that order; "Auto-Submitted: no" (the sender's word that a person wrote
 * it) gives null whatever else the header says.
 *
 * spam: {score, flag, tests} from SpamAssassin's fields (and those who write
 * them alike: amavis, rspamd's compatibility mode), null when none is there:
 *   score  number from X-Spam-Status "score=" (or the older "hits="), else
 *          from X-Spam-Score; null when neither has one
 *   flag   X-Spam-Flag YES/NO, else the Yes/No that begins X-Spam-Status;
 *          null when neither says
 *   tests  the rule names of X-Spam-Status "tests=" (SpamAssassin's
 *          "A,B,C" and amavis' "[A=1.2, B=-0.1]"; "NONE" is none), in order
 *
 * list: {id, unsubscribe: [uris], unsubscribe_post}, null when none of
 * List-Id (RFC 2919: the id between angle brackets, or the whole value
 * trimmed), List-Unsubscribe (RFC 2369: each <uri>, white space removed) and
 * List-Unsubscribe-Post (RFC 8058, e.g. "List-Unsubscribe=One-Click") is
 * there.
 *
 * The fields are given as found (folded or unfolded; the first of each name
 * from the top, which is the receiving side's for the X-Spam-* fields: a
 * sender's own copies are below it); the subject decoded (RFC 2047).  Every
 * string returned is valid UTF-8.
 *
 * Limits: MAILCLASS_VALUE_MAX bytes of each field are read;
 * MAILCLASS_TESTS_MAX tests and MAILCLASS_URIS_MAX unsubscribe URIs are kept;
 * a test name longer than MAILCLASS_NAME_MAX or a URI longer than
 * MAILCLASS_URI_MAX is left out; scores are clamped to
 * ±MAILCLASS_SCORE_MAX.  Pure functions, thread-safe.
 */
#ifndef POP3BRIDGE_MAILCLASS_H
#define POP3BRIDGE_MAILCLASS_H

#include <cjson/cJSON.h>

#define MAILCLASS_VALUE_MAX (8 * 1024) /* bytes of one field read */
#define MAILCLASS_TESTS_MAX 200        /* entries in spam.tests */
#define MAILCLASS_NAME_MAX 64          /* bytes of one test name */
#define MAILCLASS_URIS_MAX 10          /* entries in list.unsubscribe */
#define MAILCLASS_URI_MAX 2048         /* bytes of one unsubscribe URI */
#define MAILCLASS_SCORE_MAX 1e6        /* |score| */

/* The header fields the classification reads; NULL when absent. */
struct mailclass_headers {
    const char *subject;                  /* decoded */
    const char *auto_submitted;
    const char *x_autoreply;
    const char *x_autorespond;
    const char *precedence;
    const char *x_auto_response_suppress;
    const char *x_spam_status;
    const char *x_spam_score;
    const char *x_spam_flag;
    const char *list_id;
    const char *list_unsubscribe;
    const char *list_unsubscribe_post;
};

/* The auto_reply kind ("vacation", "auto-replied", "auto-generated",
 * "auto-notified": a static string), or NULL for none. */
const char *mailclass_auto_reply(const struct mailclass_headers *h);

/* `spam` and `list`: a new object, or a cJSON null when the fields are
 * absent; NULL only when out of memory. */
cJSON *mailclass_spam_json(const struct mailclass_headers *h);
cJSON *mailclass_list_json(const struct mailclass_headers *h);

#endif
