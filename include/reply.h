/*
 * reply — the new text of a reply: a message's text without the quoted
 * history and without the signature (the message object's `text_reply`).
 *
 * Two sources of knowledge, in this order:
 *
 *  1. The HTML structure, when there is an HTML body.  Mail clients mark what
 *     they quote: blockquote type="cite" (Apple Mail, Thunderbird and most
 *     others), Gmail's div.gmail_quote with its div.gmail_attr attribution
 *     and blockquote.gmail_quote, Thunderbird's div.moz-cite-prefix, and
 *     Outlook's separators that open the quoted history: div#appendonsend,
 *     div#divRplyFwdMsg, the div with "border:none;border-top:solid ..."
 *     around the From:/Sent: block, hr tabindex="-1", div.OutlookMessageHeader,
 *     div#mail-editor-reference-message-container; also Yahoo's
 *     div.yahoo_quoted, Proton's div.protonmail_quote, GMX's div name=quote,
 *     Zoho's div.zmail_extra, Zimbra's #zwchr, Thunderbird's
 *     div.moz-forward-container.  Outlook's copies of ids and classes
 *     ("x_...") count.
 *     Signatures: div.gmail_signature, .moz-signature, Outlook's
 *     div#Signature, Word's a name=_MailAutoSig and #ms-outlook-mobile-signature,
 *     #AppleMailSignature.
 *     Quotes are rendered as "> " lines (see htmltext.h), the rest dropped.
 *     With a text/plain body as well, the text comes from text/plain, and
 *     the HTML tells where the history begins in it: the first line of an
 *     Outlook separator's block (or a signature) cuts the plain text there,
 *     and the lines of a Gmail/Thunderbird attribution are taken as one.
 *
 *  2. The text itself (text/plain, or the text of the HTML):
 *     - lines quoted with '>' are dropped, so the new text between quotes
 *       of an inline (interleaved) reply is kept;
 *     - an attribution line ("On ... wrote:", "Am ... schrieb ...:", "Le ...
 *       a écrit :", "El ... escribió:", "Il ... ha scritto:", "Em ...
 *       escreveu:", "Op ... schreef ...:", "... skrev ...:", "... kirjoitti
 *       ...:", "... napisał(a):", "2024年3月4日(月) ... :", "...のメール:",
 *       "... 写道：" ...) that names a time ("10:15") or an address, possibly
 *       wrapped over REPLY_WRAP_MAX lines, is dropped when quoted lines
 *       follow it, and ends the reply when none do;
 *     - an Outlook header block (From:/Sent:/To:/Subject: and its
 *       translations: Von/Gesendet/An/Betreff, De/Envoyé/À/Objet,
 *       De/Enviado/Para/Asunto, Da/Inviato/A/Oggetto, Van/Verzonden/Aan/
 *       Onderwerp, Från/Skickat/Till/Ämne, Fra/Sendt/Til/Emne, Lähettäjä/
 *       Lähetetty/Vastaanottaja/Aihe, Od/Wysłano/Do/Temat, 差出人/送信日時/
 *       宛先/件名, 发件人/发送时间/收件人/主题 ...): a From line with at least
 *       two other such fields within REPLY_HEADER_WINDOW lines ends the reply,
 *       with the fields right above it (GMX writes "Gesendet:" first);
 *     - "-----Original Message-----", "---------- Forwarded message ---------"
 *       and their translations, and "Begin forwarded message:", end it;
 *     - the signature delimiter "-- " (RFC 3676 §4.3; "--" is taken too) ends it;
 *     - what is left at the end that is only a separator line (____, ----)
 *       or a mobile client's line ("Sent from my iPhone", "Von meinem iPhone
 *       gesendet", "Get Outlook for Android", "iPhoneから送信", ...) is dropped.
 *
 * The result is normalised: "\n" line ends, no trailing white space on a
 * line, runs of empty lines made one, no leading or trailing empty line.
 *
 * Limits: REPLY_INPUT_MAX bytes of text and of HTML are examined (the new
 * text is at the top); lines longer than REPLY_LINE_MAX are never taken as an
 * attribution or header line.  Pure functions, thread-safe.
 */
#ifndef POP3BRIDGE_REPLY_H
#define POP3BRIDGE_REPLY_H

#include <stddef.h>

#define REPLY_INPUT_MAX (1024 * 1024) /* bytes of text, and of HTML, examined */
#define REPLY_LINE_MAX 1000           /* longer lines are never attribution or header lines */
#define REPLY_WRAP_MAX 3              /* lines an attribution may be wrapped over */
#define REPLY_CANDIDATE_MAX 600       /* bytes of a (joined) attribution candidate */
#define REPLY_HEADER_WINDOW 8         /* lines after From: searched for the other fields */
#define REPLY_ANCHOR_MATCH 60         /* bytes of an HTML anchor compared with the text */
#define REPLY_ANCHOR_LINES 8          /* lines of the text joined to compare with one */
#define REPLY_ANCHOR_MIN 4            /* shorter anchors are not looked for */

/*
 * The new text of a reply, from the message's text/plain body (`text`,
 * `text_len` bytes) and/or its text/html body (`html`, `html_len` bytes);
 * either may be NULL.  Input that is not valid UTF-8 is repaired (U+FFFD).
 * Returns a NUL-terminated UTF-8 string the caller frees with g_free() ("" when
 * nothing new remains), or NULL when both bodies are NULL (or the text is
 * NULL and the HTML has no text).  Cannot fail (GLib aborts when memory runs
 * out).
 */
char *reply_text(const char *text, size_t text_len, const char *html, size_t html_len);

#endif
