/* Unit tests: the new text of a reply (include/reply.h), rule by rule, and
 * the accuracy on the corpus of real-looking replies in tests/data/replies/
 * (REPLY_DATA overrides the directory): each NAME.eml is parsed with
 * message_to_json() and its text_reply compared with NAME.expected.
 *
 * "Exact" means equal after removing the white space at the end of every
 * line and the empty lines at the start and the end, on both sides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "message.h"
#include "reply.h"

#define DATA_DIR "tests/data/replies/"
#define CORPUS_MIN 60        /* replies the corpus must hold */
#define ACCURACY_MIN 95      /* percent of them that must come out exact */

static char *reply_t(const char *text)
{
    return reply_text(text, strlen(text), NULL, 0);
}

static char *reply_h(const char *html)
{
    return reply_text(NULL, 0, html, strlen(html));
}

#define TEXT_GIVES(text, want)                                                                     \
    do {                                                                                           \
        char *got_ = reply_t(text);                                                                \
        assert_non_null(got_);                                                                     \
        assert_string_equal(got_, want);                                                           \
        g_free(got_);                                                                              \
    } while (0)

#define HTML_GIVES(html, want)                                                                     \
    do {                                                                                           \
        char *got_ = reply_h(html);                                                                \
        assert_non_null(got_);                                                                     \
        assert_string_equal(got_, want);                                                           \
        g_free(got_);                                                                              \
    } while (0)

/* ---- the plain-text rules ---------------------------------------------------------- */

static void nothing_to_strip(void **state)
{
    (void)state;
    assert_null(reply_text(NULL, 0, NULL, 0));
    TEXT_GIVES("", "");
    TEXT_GIVES("Hello.\n", "Hello.");
    /* normalised: CR LF, trailing blanks, runs of empty lines, edges */
    TEXT_GIVES("\r\n\r\nHello,  \r\n\r\n\r\n\r\nsecond paragraph\t\r\n\r\n", "Hello,\n\nsecond paragraph");
    TEXT_GIVES("  indented stays\n", "  indented stays");
}

static void signature_delimiter(void **state)
{
    (void)state;
    TEXT_GIVES("Thanks!\n\n-- \nAnna Berg\nExample Org\n", "Thanks!");
    TEXT_GIVES("Thanks!\n--\nAnna\n", "Thanks!");
    TEXT_GIVES("Thanks!\n--\xc2\xa0\nAnna\n", "Thanks!");
    /* not a delimiter: text after the dashes, or three of them */
    TEXT_GIVES("a -- b\n-- not a sig\n---\nend\n", "a -- b\n-- not a sig\n---\nend");
}

static void quoted_lines(void **state)
{
    (void)state;
    /* inline answers between quotes are kept, the quotes are not */
    TEXT_GIVES("> question one?\nanswer one\n\n> question two?\n>\n> more\n\nanswer two\n> tail\n",
               "answer one\n\nanswer two");
    TEXT_GIVES(">no space\n  > indented quote\nkept\n", "kept");
    /* four spaces before '>' is no longer a quote */
    TEXT_GIVES("    > code\n", "    > code");
    TEXT_GIVES("> all quoted\n> nothing new\n", "");
}

/* One attribution in each of the 14 languages: dropped before quoted lines. */
static void attributions(void **state)
{
    (void)state;
    static const char *const attr[] = {
        "On Mon, Mar 4, 2024 at 10:15 AM John Smith <john@example.com> wrote:",
        "On 4 Mar 2024, at 10:15, John Smith <john@example.com> wrote:",
        "On 04/03/2024 10:15, John Smith wrote:",
        "John Smith <john@example.com> wrote:",
        "Am Mo., 4. M\xc3\xa4rz 2024 um 10:15 Uhr schrieb Thomas M\xc3\xbcller <t@beispiel.de>:",
        "Thomas M\xc3\xbcller <t@beispiel.de> schrieb am 4. M\xc3\xa4rz 2024 10:15:15 MEZ:",
        "Le lun. 4 mars 2024 \xc3\xa0 10:15, Pierre Dubois <p@exemple.fr> a \xc3\xa9" "crit\xc2\xa0:",
        "Le 04/03/2024 \xc3\xa0 10:15, Pierre Dubois a \xc3\xa9" "crit :",
        "El lun, 4 mar 2024 a las 10:15, Carlos Garc\xc3\xad" "a (<c@ejemplo.es>) escribi\xc3\xb3:",
        "Il giorno lun 4 mar 2024 alle ore 10:15 Marco Rossi <m@esempio.it> ha scritto:",
        "Em seg., 4 de mar. de 2024 \xc3\xa0s 10:15, Jo\xc3\xa3o Silva <j@exemplo.com.br> escreveu:",
        "Op ma 4 mrt 2024 om 10:15 schreef Jan de Vries <j@voorbeeld.nl>:",
        "Op 4 mrt. 2024, om 10:15 heeft Jan de Vries <j@voorbeeld.nl> het volgende geschreven:",
        "Den m\xc3\xa5n 4 mars 2024 kl 10:15 skrev Erik Johansson <e@exempel.se>:",
        "Den man. 4. mar. 2024 kl. 10.15 skrev Mads Nielsen <m@eksempel.dk>:",
        "man. 4. mar. 2024 kl. 10:15 skrev Ola Nordmann <o@eksempel.no>:",
        "Mikko Virtanen (<m@esimerkki.fi>) kirjoitti ma 4.3.2024 klo 10.15:",
        "pon., 4 mar 2024 o 10:15 Piotr Kowalski <p@przyklad.pl> napisa\xc5\x82(a):",
        "W dniu 4.03.2024 o 10:15, Piotr Kowalski pisze:",
        "Wiadomo\xc5\x9b\xc4\x87 napisana przez Piotr Kowalski <p@przyklad.pl> w dniu 04.03.2024, o godz. 10:15:",
        "2024\xe5\xb9\xb4" "3\xe6\x9c\x88" "4\xe6\x97\xa5(\xe6\x9c\x88) 10:15 \xe4\xbd\x90\xe8\x97\xa4 <k@example.co.jp>:",
        "2024/03/04 10:15\xe3\x80\x81\xe4\xbd\x90\xe8\x97\xa4 <k@example.co.jp>\xe3\x81\xae\xe3\x83\xa1\xe3\x83\xbc\xe3\x83\xab:",
        "\xe7\x8e\x8b\xe4\xbc\x9f <w@example.com.cn> \xe4\xba\x8e" "2024\xe5\xb9\xb4" "3\xe6\x9c\x88" "4\xe6\x97\xa5"
        "\xe5\x91\xa8\xe4\xb8\x80 10:15\xe5\x86\x99\xe9\x81\x93\xef\xbc\x9a",
    };
    for (size_t i = 0; i < sizeof attr / sizeof attr[0]; i++) {
        char *text = g_strdup_printf("New text.\n\n%s\n\n> old text\n> more\n", attr[i]);
        char *got = reply_t(text);
        if (strcmp(got, "New text.") != 0)
            fail_msg("attribution %zu not recognised: \"%s\" gave \"%s\"", i, attr[i], got);
        g_free(got);
        /* inline: the answer after the quote is kept */
        g_free(text);
        text = g_strdup_printf("%s\n> question\nanswer\n", attr[i]);
        got = reply_t(text);
        if (strcmp(got, "answer") != 0)
            fail_msg("inline after attribution %zu: \"%s\"", i, got);
        g_free(got);
        g_free(text);
    }
}

static void attribution_shapes(void **state)
{
    (void)state;
    /* wrapped over two lines, as Gmail's plain text does */
    TEXT_GIVES("Yes.\n\nOn Mon, Mar 4, 2024 at 10:15 AM Jonathan Livingston <\njonathan@example.com> wrote:\n\n> q\n",
               "Yes.");
    TEXT_GIVES("Yes.\n\nOn Mon, 4 Mar 2024 10:15:00 +0900\nJohn <j@example.com> wrote:\n> q\n", "Yes.");
    /* a closing right above an attribution stays */
    TEXT_GIVES("Thanks,\nJohn Smith <john@example.com> wrote:\n> q\n", "Thanks,");
    /* not followed by quoted lines: the history is not quoted, it ends the reply */
    TEXT_GIVES("Short answer.\n\nOn Monday, March 4, 2024 at 10:15:00 AM GMT+1, J <j@example.com> wrote:\n\n Hi,\n old\n",
               "Short answer.");
    /* without a time or an address it is just a sentence */
    TEXT_GIVES("Here is what the customer wrote:\n\nthe parcel was late\n",
               "Here is what the customer wrote:\n\nthe parcel was late");
    TEXT_GIVES("On 4 March the supplier wrote:\n\nthe parcel was late\n",
               "On 4 March the supplier wrote:\n\nthe parcel was late");
    /* a line too long to be an attribution */
    GString *g = g_string_new("On 4 March ");
    for (int i = 0; i < REPLY_LINE_MAX; i++)
        g_string_append_c(g, 'x');
    g_string_append(g, " wrote:\nkept\n");
    char *got = reply_t(g->str);
    assert_true(g_str_has_suffix(got, "wrote:\nkept"));
    g_free(got);
    g_string_free(g, TRUE);
}

static void header_blocks(void **state)
{
    (void)state;
    static const char *const blocks[] = {
        "From: John Smith <john@example.com>\nSent: Monday, March 4, 2024 10:15 AM\nTo: Anna\nSubject: x\n",
        "Von: Thomas M\xc3\xbcller <t@beispiel.de>\nGesendet: Montag, 4. M\xc3\xa4rz 2024 10:15\nAn: Julia\nBetreff: x\n",
        "De : Pierre Dubois <p@exemple.fr>\nEnvoy\xc3\xa9 : lundi 4 mars 2024 10:15\n\xc3\x80 : Claire\nObjet : x\n",
        "De: Carlos <c@ejemplo.es>\nEnviado el: lunes, 4 de marzo de 2024 10:15\nPara: Luc\xc3\xad" "a\nAsunto: x\n",
        "Da: Marco Rossi <m@esempio.it>\nInviato: luned\xc3\xac 4 marzo 2024 10:15\nA: Giulia\nOggetto: x\n",
        "De: Jo\xc3\xa3o <j@exemplo.com.br>\nEnviado: segunda-feira, 4 de mar\xc3\xa7o de 2024 10:15\nPara: Ana\nAssunto: x\n",
        "Van: Jan <j@voorbeeld.nl>\nVerzonden: maandag 4 maart 2024 10:15\nAan: Sanne\nOnderwerp: x\n",
        "Fr\xc3\xa5n: Erik <e@exempel.se>\nSkickat: den 4 mars 2024 10:15\nTill: Karin\n\xc3\x84mne: x\n",
        "Fra: Mads <m@eksempel.dk>\nSendt: 4. marts 2024 10:15\nTil: Sofie\nEmne: x\n",
        "L\xc3\xa4hett\xc3\xa4j\xc3\xa4: Mikko <m@esimerkki.fi>\nL\xc3\xa4hetetty: maanantai 4. maaliskuuta 2024 10.15\n"
        "Vastaanottaja: Aino\nAihe: x\n",
        "Od: Piotr <p@przyklad.pl>\nWys\xc5\x82" "ano: poniedzia\xc5\x82" "ek, 4 marca 2024 10:15\nDo: Anna\nTemat: x\n",
        "\xe5\xb7\xae\xe5\x87\xba\xe4\xba\xba: \xe4\xbd\x90\xe8\x97\xa4 <k@example.co.jp>\n"
        "\xe9\x80\x81\xe4\xbf\xa1\xe6\x97\xa5\xe6\x99\x82: 2024\xe5\xb9\xb4" "3\xe6\x9c\x88" "4\xe6\x97\xa5 10:15\n"
        "\xe5\xae\x9b\xe5\x85\x88: \xe9\x88\xb4\xe6\x9c\xa8\n\xe4\xbb\xb6\xe5\x90\x8d: x\n",
        "\xe5\x8f\x91\xe4\xbb\xb6\xe4\xba\xba: \xe7\x8e\x8b\xe4\xbc\x9f <w@example.com.cn>\n"
        "\xe5\x8f\x91\xe9\x80\x81\xe6\x97\xb6\xe9\x97\xb4: 2024\xe5\xb9\xb4" "3\xe6\x9c\x88" "4\xe6\x97\xa5 10:15\n"
        "\xe6\x94\xb6\xe4\xbb\xb6\xe4\xba\xba: \xe6\x9d\x8e\xe5\xa8\x9c\n\xe4\xb8\xbb\xe9\xa2\x98: x\n",
        /* GMX and WEB.DE write the date first */
        "Gesendet: Montag, 04. M\xc3\xa4rz 2024 um 10:15 Uhr\nVon: \"T\" <t@beispiel.de>\nAn: \"J\" <j@example.de>\nBetreff: x\n",
    };
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        char *text = g_strdup_printf("Reply text.\n\nBest,\nAnna\n________________________________\n%s\nold body\n",
                                     blocks[i]);
        char *got = reply_t(text);
        if (strcmp(got, "Reply text.\n\nBest,\nAnna") != 0)
            fail_msg("header block %zu not recognised: \"%s\"", i, got);
        g_free(got);
        g_free(text);
    }
    /* one field is not a block */
    TEXT_GIVES("From: the sales team\n\nWe are happy to help.\n", "From: the sales team\n\nWe are happy to help.");
    TEXT_GIVES("From: me\nTo: you\n\ntext\n", "From: me\nTo: you\n\ntext");
}

static void separators(void **state)
{
    (void)state;
    static const char *const seps[] = {
        "-----Original Message-----", "----- Original Message -----", "-------- Original message --------",
        "---------- Forwarded message ---------", "-----Urspr\xc3\xbcngliche Nachricht-----",
        "-------- Weitergeleitete Nachricht --------", "-----Message d'origine-----", "-----Mensaje original-----",
        "-----Messaggio originale-----", "-----Mensagem original-----", "-----Oorspronkelijk bericht-----",
        "-----Ursprungligt meddelande-----", "-----Oprindelig meddelelse-----", "-----Opprinnelig melding-----",
        "-----Alkuper\xc3\xa4inen viesti-----", "-----Oryginalna wiadomo\xc5\x9b\xc4\x87-----",
        "-----\xe5\x85\x83\xe3\x81\xae\xe3\x83\xa1\xe3\x83\x83\xe3\x82\xbb\xe3\x83\xbc\xe3\x82\xb8-----",
        "------------------ \xe5\x8e\x9f\xe5\xa7\x8b\xe9\x82\xae\xe4\xbb\xb6 ------------------",
        "Begin forwarded message:", "Anfang der weitergeleiteten Nachricht:",
    };
    for (size_t i = 0; i < sizeof seps / sizeof seps[0]; i++) {
        char *text = g_strdup_printf("Note above.\n\n%s\nFrom: x\n\nold\n", seps[i]);
        char *got = reply_t(text);
        if (strcmp(got, "Note above.") != 0)
            fail_msg("separator %zu not recognised: \"%s\"", i, got);
        g_free(got);
        g_free(text);
    }
    TEXT_GIVES("-----BEGIN PGP SIGNATURE-----\nkept\n", "-----BEGIN PGP SIGNATURE-----\nkept");
}

static void mobile_lines(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "Sent from my iPhone", "Von meinem iPhone gesendet", "Envoy\xc3\xa9 de mon iPhone", "Enviado desde mi iPhone",
        "Inviato da iPhone", "Enviado do meu iPhone", "Verstuurd vanaf mijn iPhone", "Skickat fr\xc3\xa5n min iPhone",
        "Sendt fra min iPhone", "L\xc3\xa4hetetty iPhonesta", "Wys\xc5\x82" "ane z iPhone'a",
        "iPhone\xe3\x81\x8b\xe3\x82\x89\xe9\x80\x81\xe4\xbf\xa1", "\xe5\x8f\x91\xe8\x87\xaa\xe6\x88\x91\xe7\x9a\x84iPhone",
        "Get Outlook for Android<https://aka.ms/AAb9ysg>", "Sent from my Galaxy",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        char *text = g_strdup_printf("Fine by me.\n\n%s\n", lines[i]);
        char *got = reply_t(text);
        if (strcmp(got, "Fine by me.") != 0)
            fail_msg("mobile line %zu not recognised: \"%s\"", i, got);
        g_free(got);
        g_free(text);
    }
    /* only at the end */
    TEXT_GIVES("Sent from my iPhone, which I dropped.\nSo excuse typos.\n",
               "Sent from my iPhone, which I dropped.\nSo excuse typos.");
}

/* ---- the HTML structure ------------------------------------------------------------ */

static void html_structures(void **state)
{
    (void)state;
    /* Gmail */
    HTML_GIVES("<div dir=\"ltr\">Works for me.</div><br><div class=\"gmail_quote\"><div dir=\"ltr\" "
               "class=\"gmail_attr\">Le lun. 4 mars, P &lt;p@x.fr&gt; a \xc3\xa9" "crit&nbsp;:<br></div>"
               "<blockquote class=\"gmail_quote\" style=\"margin:0\">old</blockquote></div>",
               "Works for me.");
    /* an attribution the table does not know, marked by Gmail: dropped before quotes */
    HTML_GIVES("<div class=\"gmail_quote\"><div class=\"gmail_attr\">Dne po 4. 3. 2024 napsal J:</div>"
               "<blockquote class=\"gmail_quote\">q</blockquote><div>answer</div></div>",
               "answer");
    /* Apple Mail, Thunderbird: blockquote type=cite, inline */
    HTML_GIVES("<div>top</div><blockquote type=\"cite\"><div>On 4 Mar, J wrote:</div><div>q1</div>"
               "</blockquote><div>a1</div><blockquote type=\"cite\">q2</blockquote><div>a2</div>",
               "top\n\na1\n\na2");
    HTML_GIVES("<div class=\"moz-cite-prefix\">Dne 4.3.2024 v 10:15 J napsal(a):<br></div>"
               "<blockquote type=\"cite\"><pre class=\"moz-quote-pre\">q</pre></blockquote><p>answer</p>"
               "<pre class=\"moz-signature\" cols=\"72\">-- \nAnna</pre>",
               "answer");
    /* Outlook: the separators end the reply, whatever the language */
    HTML_GIVES("<div>Ano.</div><div id=\"appendonsend\"></div><hr tabindex=\"-1\"><div id=\"divRplyFwdMsg\">"
               "<b>Od:</b> J<br><b>Odesl\xc3\xa1no:</b> pond\xc4\x9bl\xc3\xad</div><div>old</div>",
               "Ano.");
    HTML_GIVES("<p class=MsoNormal>Ano.<o:p></o:p></p><div style='border:none;border-top:solid #E1E1E1 1.0pt;"
               "padding:3.0pt 0cm 0cm 0cm'><p class=MsoNormal><b>Od:</b> J</p></div><p>old</p>",
               "Ano.");
    HTML_GIVES("<p>x</p><hr size=2 width=\"100%\" align=center tabindex=-1><p>old</p>", "x");
    HTML_GIVES("<p>x</p><div class=\"OutlookMessageHeader\">From: J</div><p>old</p>", "x");
    HTML_GIVES("<p>x</p><div id=\"x_divRplyFwdMsg\">From: J</div><p>old</p>", "x");
    /* signatures */
    HTML_GIVES("<div>Reply</div><div id=\"Signature\"><div>Anna Berg</div></div>", "Reply");
    HTML_GIVES("<div>Reply<br clear=\"all\"><div><br></div><span class=\"gmail_signature_prefix\">-- </span><br>"
               "<div class=\"gmail_signature\">Anna</div></div>",
               "Reply");
    HTML_GIVES("<p class=MsoNormal>Reply</p><p class=MsoNormal><a name=\"_MailAutoSig\">Anna</a></p>", "Reply");
    /* an ordinary blockquote (indentation) is text */
    HTML_GIVES("<p>Quote of the day:</p><blockquote style=\"margin:0 0 0 40px;border:none\">Be kind.</blockquote>",
               "Quote of the day:\n\nBe kind.");
}

/* With both bodies, the text comes from text/plain, cut where the HTML says. */
static void html_guides_text(void **state)
{
    (void)state;
    /* a header block in a language the table does not know (Czech) */
    const char *text = "Ano, plat\xc3\xad.\r\n\r\nOd: J <j@example.cz>\r\nOdesl\xc3\xa1no: pond\xc4\x9bl\xc3\xad 4. b\xc5\x99" "ezna 2024 10:15\r\n"
                       "Komu: A\r\nP\xc5\x99" "edm\xc4\x9bt: x\r\n\r\nold\r\n";
    const char *html = "<p class=MsoNormal>Ano, plat\xc3\xad.</p><div><div style='border:none;border-top:solid "
                       "#E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'><p class=MsoNormal><b>Od:</b> J &lt;j@example.cz&gt;"
                       "<br><b>Odesl\xc3\xa1no:</b> pond\xc4\x9bl\xc3\xad 4. b\xc5\x99" "ezna 2024 10:15</p></div></div><p>old</p>";
    char *got = reply_text(text, strlen(text), html, strlen(html));
    assert_string_equal(got, "Ano, plat\xc3\xad.");
    g_free(got);
    /* the same text alone: no rule knows the block (the HTML made the difference) */
    got = reply_text(text, strlen(text), NULL, 0);
    assert_non_null(strstr(got, "old"));
    g_free(got);
    /* an attribution the table does not know, marked by the HTML */
    text = "Odpov\xc4\x9b\xc4\x8f.\n\nDne po 4. 3. 2024 v 10:15 J <j@example.cz> napsal:\n\n> q\n";
    html = "<div>Odpov\xc4\x9b\xc4\x8f.</div><div class=\"gmail_quote\"><div class=\"gmail_attr\">Dne po 4. 3. 2024 "
           "v 10:15 J &lt;j@example.cz&gt; napsal:<br></div><blockquote class=\"gmail_quote\">q</blockquote></div>";
    got = reply_text(text, strlen(text), html, strlen(html));
    assert_string_equal(got, "Odpov\xc4\x9b\xc4\x8f.");
    g_free(got);
    /* a signature the HTML marks (Outlook on the web): cut in the text too */
    text = "Thanks, done.\n\nAnna Berg\nFinance\n________________________________\nFrom: J\nSent: today\nTo: A\n\nold\n";
    html = "<div>Thanks, done.</div><div id=\"Signature\"><div>Anna Berg</div><div>Finance</div></div>"
           "<div id=\"appendonsend\"></div><hr tabindex=\"-1\"><div id=\"divRplyFwdMsg\"><b>From:</b> J<br>"
           "<b>Sent:</b> today<br><b>To:</b> A</div>";
    got = reply_text(text, strlen(text), html, strlen(html));
    assert_string_equal(got, "Thanks, done.");
    g_free(got);
    /* the anchor must match: an HTML saying something else cuts nothing */
    html = "<div>Other.</div><div id=\"Signature\"><div>Nobody Here</div></div>";
    got = reply_text(text, strlen(text), html, strlen(html));
    assert_string_equal(got, "Thanks, done.\n\nAnna Berg\nFinance");
    g_free(got);
    /* an empty text/plain part: the HTML is the text */
    got = reply_text("\r\n", 2, "<p>Only in HTML</p>", 19);
    assert_string_equal(got, "Only in HTML");
    g_free(got);
    /* no text at all */
    assert_null(reply_text(NULL, 0, "<img src=x>", 11));
}

static void bad_input(void **state)
{
    (void)state;
    /* invalid UTF-8 and NULs come out valid */
    const char raw[] = "ok \xff\xfe text\0more\n> q\n";
    char *got = reply_text(raw, sizeof raw - 1, NULL, 0);
    assert_true(g_utf8_validate(got, -1, NULL));
    assert_non_null(strstr(got, "ok "));
    g_free(got);
    got = reply_text(NULL, 0, raw, sizeof raw - 1);
    assert_true(g_utf8_validate(got, -1, NULL));
    g_free(got);
    /* beyond REPLY_INPUT_MAX nothing is examined */
    GString *g = g_string_new(NULL);
    while (g->len < REPLY_INPUT_MAX)
        g_string_append(g, "line of new text \xc3\xa9\n");
    g_string_append(g, "TAIL\n");
    got = reply_text(g->str, g->len, NULL, 0);
    assert_true(strlen(got) <= REPLY_INPUT_MAX);
    assert_null(strstr(got, "TAIL"));
    assert_true(g_utf8_validate(got, -1, NULL));
    g_free(got);
    /* many lines that look like the start of something */
    g_string_truncate(g, 0);
    while (g->len < REPLY_INPUT_MAX / 4)
        g_string_append(g, "On 4 March 2024 at 10:15 someone said something and then:\nFrom: x\n");
    got = reply_text(g->str, g->len, NULL, 0);
    assert_true(g_utf8_validate(got, -1, NULL));
    g_free(got);
    g_string_free(g, TRUE);
}

/* ---- the corpus ------------------------------------------------------------------------ */

/* Trailing white space of each line and the empty lines at both ends removed. */
static char *exact_form(const char *s)
{
    gchar **lines = g_strsplit(s, "\n", -1);
    GString *g = g_string_new(NULL);
    for (int i = 0; lines[i]; i++) {
        char *l = lines[i];
        size_t n = strlen(l);
        while (n && (l[n - 1] == ' ' || l[n - 1] == '\t' || l[n - 1] == '\r'))
            n--;
        g_string_append_len(g, l, (gssize)n);
        g_string_append_c(g, '\n');
    }
    g_strfreev(lines);
    size_t start = 0;
    while (start < g->len && g->str[start] == '\n')
        start++;
    while (g->len > start && g->str[g->len - 1] == '\n')
        g_string_truncate(g, g->len - 1);
    char *out = g_strdup(g->str + start);
    g_string_free(g, TRUE);
    return out;
}

static void show_difference(const char *name, const char *want, const char *got)
{
    int line = 1;
    const char *w = want, *o = got;
    while (*w && *w == *o) {
        if (*w == '\n')
            line++;
        w++, o++;
    }
    if (*w == '\n' && !*o)
        w++, line++; /* the text ends where more lines were expected */
    else if (*o == '\n' && !*w)
        o++, line++;
    else
        while (w > want && w[-1] != '\n') /* from the start of the line where they part */
            w--, o--;
    const char *we = strchr(w, '\n'), *oe = strchr(o, '\n');
    printf("  differs: %s, line %d: expected %s%.*s%s, got %s%.*s%s\n", name, line,
           *w ? "\"" : "(the end)", (int)(we ? we - w : (long)strlen(w)), w, *w ? "\"" : "",
           *o ? "\"" : "(the end)", (int)(oe ? oe - o : (long)strlen(o)), o, *o ? "\"" : "");
}

static void corpus(void **state)
{
    (void)state;
    const char *dir = getenv("REPLY_DATA") ? getenv("REPLY_DATA") : DATA_DIR;
    GDir *d = g_dir_open(dir, 0, NULL);
    assert_non_null(d);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *ent;
    while ((ent = g_dir_read_name(d)))
        if (g_str_has_suffix(ent, ".eml"))
            g_ptr_array_add(names, g_strndup(ent, strlen(ent) - 4));
    g_dir_close(d);
    g_ptr_array_sort(names, (GCompareFunc)(void (*)(void))g_strcmp0);
    unsigned total = names->len, exact = 0;
    for (unsigned i = 0; i < total; i++) {
        const char *name = g_ptr_array_index(names, i);
        char *eml = g_strconcat(dir, "/", name, ".eml", NULL);
        char *exp = g_strconcat(dir, "/", name, ".expected", NULL);
        gchar *raw = NULL, *want = NULL;
        gsize len = 0;
        if (!g_file_get_contents(eml, &raw, &len, NULL) || !g_file_get_contents(exp, &want, NULL, NULL))
            fail_msg("%s: cannot read %s or %s", name, eml, exp);
        struct err e;
        cJSON *m = message_to_json(raw, len, NULL, &e);
        assert_non_null(m);
        const cJSON *tr = cJSON_GetObjectItemCaseSensitive(m, "text_reply");
        if (!cJSON_IsString(tr))
            fail_msg("%s: text_reply is not a string", name);
        char *a = exact_form(want), *b = exact_form(tr->valuestring);
        if (strcmp(a, b) == 0)
            exact++;
        else
            show_difference(name, a, b);
        g_free(a);
        g_free(b);
        cJSON_Delete(m);
        g_free(raw);
        g_free(want);
        g_free(eml);
        g_free(exp);
    }
    g_ptr_array_free(names, TRUE);
    printf("  text_reply corpus: %u of %u replies exact (%.1f%%)\n", exact, total,
           total ? 100.0 * exact / total : 0.0);
    assert_true(total >= CORPUS_MIN);
    assert_true(exact * 100 >= ACCURACY_MIN * total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nothing_to_strip),
        cmocka_unit_test(signature_delimiter),
        cmocka_unit_test(quoted_lines),
        cmocka_unit_test(attributions),
        cmocka_unit_test(attribution_shapes),
        cmocka_unit_test(header_blocks),
        cmocka_unit_test(separators),
        cmocka_unit_test(mobile_lines),
        cmocka_unit_test(html_structures),
        cmocka_unit_test(html_guides_text),
        cmocka_unit_test(bad_input),
        cmocka_unit_test(corpus),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    message_global_cleanup();
    return rc;
}
