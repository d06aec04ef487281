/* reply — the new text of a reply; see include/reply.h. */
#include "reply.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <glib.h>
#include <pcre2.h>

#include "htmltext.h"

#define REPLY_MATCH_LIMIT 200000 /* PCRE2 match steps for one test of one line */
#define REPLY_LABEL_SPAN 40      /* bytes into a line where a header label's ':' may be */
#define REPLY_MOBILE_MAX 160     /* longer lines are never a mobile client's line */

/* ---- the tables ------------------------------------------------------------ */

enum kind {
    K_ATTRIBUTION, /* "On ... wrote:" and its translations */
    K_FROM,        /* the From line of an Outlook header block */
    K_FIELD,       /* the other lines of that block: Sent/Date, To, Cc, Subject */
    K_SEPARATOR,   /* "-----Original Message-----", "Begin forwarded message:" */
    K_MOBILE,      /* "Sent from my iPhone" */
    K_HEAD,        /* how an attribution's first line begins: "On", "Am", "2024年" */
};

struct pattern {
    enum kind kind;
    int field; /* K_FIELD: which one (1 date, 2 to, 3 cc, 4 subject) */
    const char *re;
};

/* An attribution names a time ("10:15", "10.15") or an address ('@'); it ends
 * in a colon.  The candidate text has its white space collapsed and '*'
 * removed. */
#define ATTR "^(?=.*(?:@|\\d{1,2}[:.]\\d{2}))"
static const struct pattern patterns[] = {
    /* English: Gmail, Apple Mail, Thunderbird, K-9, Outlook for Mac */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\b(?:wrote|writes)\\s?:$"},
    {K_ATTRIBUTION, 0, "^(?:quoting|zitat von|citando|citation de|cytuję)\\b.{1,300}:$"},
    /* German: "Am ... schrieb X:", "X schrieb am ...:" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\bschrieb\\b.{0,300}:$"},
    /* French: "Le ... a écrit :" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\ba\\s+écrit\\s?:$"},
    /* Spanish: "El ... escribió:" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\bescribió\\s?:$"},
    /* Italian: "Il giorno ... ha scritto:" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\bha\\s+scritto\\s?:$"},
    /* Portuguese: "Em ... escreveu:" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\bescreveu\\s?:$"},
    /* Dutch: "Op ... schreef X:", "Op ... heeft X het volgende geschreven:" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\b(?:schreef|geschreven)\\b.{0,300}:$"},
    /* Swedish, Danish, Norwegian: "Den ... skrev X:" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\bskrev\\b.{0,300}:$"},
    /* Finnish: "X kirjoitti ...:" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\bkirjoitti\\b.{0,300}:$"},
    /* Polish: "... napisał(a):", "W dniu ... X pisze:", Apple's "Wiadomość napisana przez" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}\\b(?:napisał|napisała|pisze)(?:\\s?\\(a\\))?\\s?:$"},
    {K_ATTRIBUTION, 0, "^wiadomość napisana przez\\b.{1,300}:$"},
    /* Japanese: Gmail "2024年3月4日(月) 10:15 X <x@y>:", Apple "...のメール:",
       Thunderbird "... さんは書きました:" */
    {K_ATTRIBUTION, 0, "^\\d{4}\\s?年\\s?\\d{1,2}\\s?月\\s?\\d{1,2}\\s?日.{0,300}[:：]$"},
    {K_ATTRIBUTION, 0, ATTR ".{1,300}(?:のメール|書きました)\\s?[:：]$"},
    /* Chinese: "X 于2024年3月4日周一 10:15写道：", "在 ...，X 写道：" */
    {K_ATTRIBUTION, 0, ATTR ".{1,300}(?:写道|寫道|寫到|写到)\\s?[:：]$"},

    /* Outlook's header block and its translations */
    {K_FROM, 0,
     "^(?:from|von|de|da|van|från|fra|lähettäjä|od|nadawca|差出人|发件人|發件人|寄件者|寄件人)"
     "\\s?[:：]"},
    {K_FIELD, 1,
     "^(?:sent|date|gesendet|datum|envoyé|enviado|enviado el|enviada em|enviado em|fecha|data"
     "|inviato|verzonden|verstuurd|skickat|sendt|dato|lähetetty|päivämäärä|wysłano|wysłane"
     "|送信日時|日付|发送时间|發送時間|日期|时间|時間|寄件日期)\\s?[:：]"},
    {K_FIELD, 2,
     "^(?:to|an|à|a|para|aan|till|til|vastaanottaja|do|adresat|宛先|收件人|收件者)\\s?[:：]"},
    {K_FIELD, 3, "^(?:cc|kopie|kopia|dw|kopio|抄送|副本)\\s?[:：]"},
    {K_FIELD, 4,
     "^(?:subject|betreff|objet|asunto|oggetto|assunto|onderwerp|ämne|emne|aihe|temat|件名|主题"
     "|主題|主旨)\\s?[:：]"},

    /* "-----Original Message-----" and forwards, in the 14 languages */
    {K_SEPARATOR, 0,
     "^[-_=]{2,}\\s?(?:original message|ursprüngliche nachricht|originalnachricht"
     "|message d'origine|message original|mensaje original|messaggio originale"
     "|mensagem original|oorspronkelijk bericht|origineel bericht|ursprungligt meddelande"
     "|originalmeddelande|oprindelig meddelelse|original meddelelse|opprinnelig melding"
     "|opprinnelig e-post|alkuperäinen viesti|oryginalna wiadomość|wiadomość oryginalna"
     "|元のメッセージ|原始邮件|原始郵件|原始信件|原邮件|forwarded message"
     "|weitergeleitete nachricht|message transféré|mensaje reenviado|messaggio inoltrato"
     "|mensagem encaminhada|doorgestuurd bericht|vidarebefordrat meddelande"
     "|videresendt meddelelse|videresendt melding|välitetty viesti|przekazana wiadomość"
     "|wiadomość przekazana dalej|転送メッセージ|转发邮件|轉寄郵件)\\s?[-_=]{2,}$"},
    {K_SEPARATOR, 0,
     "^(?:begin forwarded message|anfang der weitergeleiteten nachricht"
     "|début du message réexpédié|inicio del mensaje reenviado|inizio messaggio inoltrato"
     "|início da mensagem reencaminhada|início da mensagem encaminhada"
     "|begin doorgestuurd bericht|vidarebefordrat brev|videresendt besked"
     "|videresendt melding|välitetty viesti alkaa|początek przekazywanej wiadomości"
     "|転送されたメッセージ|转发的邮件|開始轉寄的郵件)\\s?[:：]$"},

    /* what mobile clients add at the end */
    {K_MOBILE, 0,
     "^(?:sent from|sent via|sent with|get outlook for|download outlook for|von meinem"
     "|gesendet von|gesendet mit|outlook für|envoyé de|envoyé depuis|envoyé à partir de"
     "|télécharger outlook|obtenir outlook|enviado desde|enviado do|enviado de"
     "|enviado a partir do|obtener outlook|baixe o outlook|obter o outlook|inviato da"
     "|inviato dal|scarica outlook|ottieni outlook|verstuurd vanaf|verzonden vanaf"
     "|verzonden met|outlook voor|skickat från|hämta outlook|sendt fra|hent outlook|få outlook"
     "|lähetetty \\S*(?:iphone|ipad|android|galaxy|puhelime|mobiili)\\S*|hanki outlook"
     "|wysłane z|pobierz outlook)\\b.{0,120}$"},
    {K_MOBILE, 0, "^.{1,60}から送信(?:しました)?$"},

    /* the words an attribution wrapped over lines begins with */
    {K_HEAD, 0,
     "^(?:on|am|le|el|il|em|a|op|den|w dniu|dnia|quoting|zitat von|wiadomość napisana)\\b"},
    {K_HEAD, 0, "^(?:在|\\d{1,4}\\s?[年/.-])"},
    {K_MOBILE, 0, "^(?:从我的|發自我的|发自我的|来自我的|從我的|寄自我的).{1,60}$"},
};
#define NPATTERNS (sizeof patterns / sizeof patterns[0])

static pcre2_code *compiled[NPATTERNS];
static pcre2_match_context *match_ctx;
static pthread_once_t compile_once = PTHREAD_ONCE_INIT;

static void compile_all(void)
{
    for (size_t i = 0; i < NPATTERNS; i++) {
        int errcode;
        PCRE2_SIZE erroff;
        compiled[i] = pcre2_compile((PCRE2_SPTR)patterns[i].re, PCRE2_ZERO_TERMINATED,
                                    PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &errcode, &erroff,
                                    NULL);
        if (!compiled[i])
            abort(); /* a pattern of the table above is wrong: caught by the unit tests */
        pcre2_jit_compile(compiled[i], PCRE2_JIT_COMPLETE); /* optional: speed only */
    }
    match_ctx = pcre2_match_context_create(NULL);
    if (!match_ctx)
        abort();
    pcre2_set_match_limit(match_ctx, REPLY_MATCH_LIMIT);
}

/* ---- lines ------------------------------------------------------------------------ */

struct line {
    const char *s; /* the line, without its end */
    size_t n;
    char *norm;    /* white space collapsed, '*' removed, trimmed (lazily made) */
    size_t norm_n;
    bool quoted, blank;
};

struct scan {
    struct line *lines;
    size_t n;         /* lines examined (the HTML may have cut some) */
    size_t total;     /* lines made */
    int *attr_marked; /* > 0: lines i .. i+k-1 are an attribution the HTML marked */
    pcre2_match_data *md;
};

static bool matches(struct scan *sc, enum kind kind, int field, const char *s, size_t n)
{
    for (size_t i = 0; i < NPATTERNS; i++) {
        if (patterns[i].kind != kind || (field && patterns[i].field != field))
            continue;
        if (pcre2_match(compiled[i], (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK, sc->md, match_ctx) >= 0)
            return true;
    }
    return false;
}

/* The white space a mail client writes: ASCII, no-break, narrow no-break,
 * thin, ideographic; and the zero-width characters.  Returns its length at
 * s (n bytes left), or 0. */
static size_t space_at(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] == ' ' || u[0] == '\t' || u[0] == '\f' || u[0] == '\v' || u[0] == '\n' || u[0] == '\r')
        return 1;
    if (n >= 2 && u[0] == 0xC2 && u[1] == 0xA0)
        return 2; /* U+00A0 */
    if (n >= 3 && u[0] == 0xE2 && u[1] == 0x80 && (u[2] == 0xAF || u[2] == 0x89 || u[2] == 0x8B))
        return 3; /* U+202F, U+2009, U+200B */
    if (n >= 3 && u[0] == 0xE3 && u[1] == 0x80 && u[2] == 0x80)
        return 3; /* U+3000 */
    if (n >= 3 && u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF)
        return 3; /* U+FEFF */
    return 0;
}

static void normalise_into(GString *g, const char *s, size_t n)
{
    bool sp = g->len > 0;
    for (size_t i = 0; i < n;) {
        size_t k = space_at(s + i, n - i);
        if (k) {
            sp = true;
            i += k;
            continue;
        }
        if (s[i] == '*') {
            i++;
            continue;
        }
        if (sp && g->len)
            g_string_append_c(g, ' ');
        sp = false;
        g_string_append_c(g, s[i]);
        i++;
    }
}

/* The normalised line (made on first use); its length is l->norm_n after the
 * call (read it only then: not in the same argument list). */
static const char *norm_of(struct line *l)
{
    if (!l->norm) {
        GString *g = g_string_sized_new(l->n < REPLY_LINE_MAX ? l->n + 1 : 64);
        if (l->n <= REPLY_LINE_MAX)
            normalise_into(g, l->s, l->n);
        l->norm_n = g->len;
        l->norm = g_string_free(g, FALSE);
    }
    return l->norm;
}

static void classify_line(struct line *l)
{
    size_t i = 0, spaces = 0;
    l->blank = true;
    l->quoted = false;
    while (i < l->n) {
        size_t k = space_at(l->s + i, l->n - i);
        if (!k)
            break;
        i += k;
        spaces++;
    }
    if (i < l->n) {
        l->blank = false;
        l->quoted = l->s[i] == '>' && spaces <= 3;
    }
}

/* Splits the (valid UTF-8) text into lines; CR LF and lone CR end lines too. */
static void split(struct scan *sc, const char *s, size_t n)
{
    size_t cap = 64;
    sc->lines = g_new0(struct line, cap);
    sc->n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '\n' && s[i] != '\r')
            continue;
        if (sc->n == cap) {
            cap *= 2;
            sc->lines = g_renew(struct line, sc->lines, cap);
        }
        struct line *l = &sc->lines[sc->n++];
        memset(l, 0, sizeof *l);
        l->s = s + start;
        l->n = i - start;
        classify_line(l);
        if (i < n && s[i] == '\r' && i + 1 < n && s[i + 1] == '\n')
            i++;
        start = i + 1;
    }
    sc->total = sc->n;
    sc->attr_marked = g_new0(int, sc->n + 1);
}

static void scan_free(struct scan *sc)
{
    for (size_t i = 0; i < sc->total; i++)
        g_free(sc->lines[i].norm);
    g_free(sc->lines);
    g_free(sc->attr_marked);
}

/* ---- what ends the reply ------------------------------------------------------------ */

static bool is_signature_delimiter(const struct line *l)
{
    if (l->n < 2 || l->s[0] != '-' || l->s[1] != '-')
        return false;
    for (size_t i = 2; i < l->n;) {
        size_t k = space_at(l->s + i, l->n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

static bool ends_with_colon(const char *s, size_t n)
{
    return (n >= 1 && s[n - 1] == ':') || (n >= 3 && memcmp(s + n - 3, "\xef\xbc\x9a", 3) == 0);
}

/* A header label's colon within the first bytes: the cheap test before the
 * patterns. */
static bool has_label(const char *s, size_t n)
{
    size_t lim = n < REPLY_LABEL_SPAN ? n : REPLY_LABEL_SPAN;
    for (size_t i = 0; i < lim; i++)
        if (s[i] == ':' || (i + 2 < n && memcmp(s + i, "\xef\xbc\x9a", 3) == 0))
            return true;
    return false;
}

static bool is_separator(struct scan *sc, struct line *l)
{
    const char *s = norm_of(l);
    size_t n = l->norm_n;
    if (!n || !(s[0] == '-' || s[0] == '_' || s[0] == '=' || ends_with_colon(s, n)))
        return false;
    return matches(sc, K_SEPARATOR, 0, s, n);
}

/* An Outlook header block starting at line i. */
static bool is_header_block(struct scan *sc, size_t i)
{
    struct line *l = &sc->lines[i];
    const char *s = norm_of(l);
    if (!l->norm_n || !has_label(s, l->norm_n) || !matches(sc, K_FROM, 0, s, l->norm_n))
        return false;
    unsigned seen = 0;
    for (size_t j = i + 1; j < sc->n && j <= i + REPLY_HEADER_WINDOW; j++) {
        struct line *m = &sc->lines[j];
        if (m->blank)
            break;
        const char *t = norm_of(m);
        if (!m->norm_n || !has_label(t, m->norm_n))
            continue;
        for (int f = 1; f <= 4; f++)
            if (!(seen & (1u << f)) && matches(sc, K_FIELD, f, t, m->norm_n))
                seen |= 1u << f;
    }
    int count = 0;
    for (int f = 1; f <= 4; f++)
        count += (seen >> f) & 1;
    return count >= 2;
}

/* One of the fields of the block other than From:. */
static bool is_field(struct scan *sc, struct line *l)
{
    const char *t = norm_of(l);
    return l->norm_n && has_label(t, l->norm_n) && matches(sc, K_FIELD, 0, t, l->norm_n);
}

/* The attribution lines i .. i+w-1 joined and normalised into g; false if
 * they cannot be one (blank, quoted, too long). */
static bool join_lines(struct scan *sc, size_t i, size_t w, GString *g)
{
    g_string_truncate(g, 0);
    for (size_t k = i; k < i + w; k++) {
        struct line *l = &sc->lines[k];
        if (l->blank || l->quoted || l->n > REPLY_LINE_MAX)
            return false;
        const char *ln = norm_of(l);
        if (g->len)
            g_string_append_c(g, ' ');
        g_string_append_len(g, ln, (gssize)l->norm_n);
        if (g->len > REPLY_CANDIDATE_MAX)
            return false;
    }
    return true;
}

/* The number of lines of an attribution starting at line i, or 0. */
static size_t attribution_at(struct scan *sc, size_t i, GString *g)
{
    if (sc->attr_marked[i] > 0)
        return (size_t)sc->attr_marked[i];
    for (size_t w = 1; w <= REPLY_WRAP_MAX && i + w <= sc->n; w++) {
        if (!join_lines(sc, i, w, g))
            return 0;
        if (!ends_with_colon(g->str, g->len) || !matches(sc, K_ATTRIBUTION, 0, g->str, g->len))
            continue;
        /* not when a later line starts the attribution by itself, unless
           this one begins as attributions do ("Thanks,\nX wrote:" is a
           closing and an attribution; "On <date>\nX wrote:" is one) */
        struct line *first = &sc->lines[i];
        const char *head = norm_of(first);
        if (matches(sc, K_HEAD, 0, head, first->norm_n))
            return w;
        for (size_t k = i + 1; k < i + w; k++)
            if (join_lines(sc, k, i + w - k, g) && matches(sc, K_ATTRIBUTION, 0, g->str, g->len))
                return 0;
        return w;
    }
    return 0;
}

/* A line of only rule characters (____, ----, ====): a separator. */
static bool only_rule(const struct line *l)
{
    size_t marks = 0;
    for (size_t i = 0; i < l->n;) {
        size_t k = space_at(l->s + i, l->n - i);
        if (k) {
            i += k;
            continue;
        }
        char c = l->s[i++];
        if (c != '_' && c != '-' && c != '=' && c != '*' && c != '~')
            return false;
        marks++;
    }
    return marks >= 3;
}

/* ---- anchors from the HTML ------------------------------------------------------------ */

/* The first non-empty line of s[0..n), normalised. */
static GString *first_line_norm(const char *s, size_t n)
{
    GString *g = g_string_new(NULL);
    while (n) {
        const char *nl = memchr(s, '\n', n);
        size_t len = nl ? (size_t)(nl - s) : n;
        normalise_into(g, s, len);
        if (g->len || !nl)
            break;
        n -= len + 1;
        s = nl + 1;
    }
    return g;
}

/* Text of the HTML for comparing with the plain text: its lines normalised
 * and joined by a space, empty lines and rules left out (an <hr> renders as
 * nothing, the plain text shows it as a line of '_'). */
static GString *anchor_norm(const char *s, size_t n)
{
    GString *g = g_string_new(NULL);
    while (n) {
        const char *nl = memchr(s, '\n', n);
        size_t len = nl ? (size_t)(nl - s) : n;
        struct line l = {.s = s, .n = len};
        classify_line(&l);
        if (!l.blank && !only_rule(&l))
            normalise_into(g, s, len);
        if (!nl)
            break;
        n -= len + 1;
        s = nl + 1;
    }
    return g;
}

/* Finds where text of the HTML (normalised, `a`) begins in the text, at or
 * after line `from`, outside quotes: its first REPLY_ANCHOR_MATCH bytes (or
 * all of it, if shorter) must equal the text's from there, joined over up to
 * REPLY_ANCHOR_LINES lines (empty ones skipped).  Returns the line index, and
 * in *w the lines up to the one where all of `a` is covered (at most
 * REPLY_WRAP_MAX), or -1. */
static long find_anchor(struct scan *sc, size_t from, const GString *a, size_t *w)
{
    if (a->len < REPLY_ANCHOR_MIN)
        return -1;
    size_t want = a->len < REPLY_ANCHOR_MATCH ? a->len : REPLY_ANCHOR_MATCH;
    GString *g = g_string_new(NULL);
    long found = -1;
    for (size_t k = from; k < sc->n && found < 0; k++) {
        struct line *l = &sc->lines[k];
        if (l->blank || l->quoted)
            continue;
        const char *s = norm_of(l);
        size_t cmp = l->norm_n < want ? l->norm_n : want;
        if (!cmp || memcmp(s, a->str, cmp) != 0)
            continue;
        g_string_truncate(g, 0);
        size_t covered = 0; /* lines up to the one where all of a is covered */
        for (size_t j = k, used = 0; j < sc->n && used < REPLY_ANCHOR_LINES; j++) {
            struct line *m = &sc->lines[j];
            if (m->quoted)
                break;
            if (m->blank || only_rule(m))
                continue;
            const char *mn = norm_of(m);
            if (g->len)
                g_string_append_c(g, ' ');
            g_string_append_len(g, mn, (gssize)m->norm_n);
            used++;
            if (!covered && g->len >= a->len)
                covered = j - k + 1;
            if (g->len >= want && covered)
                break;
        }
        if (g->len >= want && memcmp(g->str, a->str, want) == 0) {
            found = (long)k;
            *w = covered && covered <= REPLY_WRAP_MAX ? covered : REPLY_WRAP_MAX;
        }
    }
    g_string_free(g, TRUE);
    return found;
}

/* The text/plain body, told by the HTML where its history begins. */
static void apply_html_hints(struct scan *sc, const struct htmltext *h)
{
    size_t from = 0, w;
    for (size_t m = 0; m < h->mark_count; m++) {
        GString *a = first_line_norm(h->text + h->marks[m].start,
                                     h->marks[m].end - h->marks[m].start);
        long k = find_anchor(sc, from, a, &w);
        g_string_free(a, TRUE);
        if (k >= 0) {
            sc->attr_marked[k] = (int)w;
            from = (size_t)k + w;
        }
    }
    if (h->cut_anchor) {
        GString *a = anchor_norm(h->cut_anchor, strlen(h->cut_anchor));
        long k = find_anchor(sc, 0, a, &w);
        g_string_free(a, TRUE);
        if (k >= 0)
            sc->n = (size_t)k;
    }
}

/* The text of the HTML, with its marks as attribution lines. */
static void marks_to_lines(struct scan *sc, const struct htmltext *h)
{
    for (size_t m = 0; m < h->mark_count; m++) {
        size_t a = h->marks[m].start, b = h->marks[m].end;
        while (a < b && (h->text[a] == '\n' || h->text[a] == ' '))
            a++;
        while (b > a && (h->text[b - 1] == '\n' || h->text[b - 1] == ' '))
            b--;
        if (a >= b)
            continue;
        size_t first = SIZE_MAX, last = 0;
        for (size_t i = 0; i < sc->n; i++) {
            size_t ls = (size_t)(sc->lines[i].s - h->text), le = ls + sc->lines[i].n;
            if (le >= a && ls < b) {
                if (first == SIZE_MAX)
                    first = i;
                last = i;
            }
        }
        if (first != SIZE_MAX)
            sc->attr_marked[first] = (int)(last - first + 1);
    }
}

/* ---- the scan ----------------------------------------------------------------------------- */

static bool is_mobile_line(struct scan *sc, struct line *l)
{
    if (l->n > REPLY_MOBILE_MAX)
        return false;
    const char *s = norm_of(l);
    return l->norm_n && matches(sc, K_MOBILE, 0, s, l->norm_n);
}

/* Appends line l to out with its trailing white space removed. */
static void put_line(GString *out, const struct line *l)
{
    size_t n = l->n;
    while (n) {
        size_t k = 0;
        for (size_t back = 1; back <= 3 && back <= n; back++)
            if (space_at(l->s + n - back, back) == back) {
                k = back;
                break;
            }
        if (!k)
            break;
        n -= k;
    }
    g_string_append_len(out, l->s, (gssize)n);
}

static char *scan_reply(struct scan *sc)
{
    size_t *kept = g_new(size_t, sc->n + 1);
    size_t nkept = 0;
    GString *g = g_string_new(NULL);
    for (size_t i = 0; i < sc->n;) {
        struct line *l = &sc->lines[i];
        if (l->quoted) {
            i++;
            continue;
        }
        if (!l->blank) {
            if (is_signature_delimiter(l) || is_separator(sc, l))
                break;
            if (is_header_block(sc, i)) {
                /* fields written above From: (GMX and WEB.DE begin with Gesendet:) */
                while (nkept && kept[nkept - 1] + 1 == i && is_field(sc, &sc->lines[i - 1]))
                    nkept--, i--;
                break;
            }
            size_t w = attribution_at(sc, i, g);
            if (w) {
                size_t j = i + w;
                while (j < sc->n && sc->lines[j].blank)
                    j++;
                if (j < sc->n && sc->lines[j].quoted) {
                    i += w; /* an attribution of quoted lines: drop it */
                    continue;
                }
                break; /* history that is not quoted follows */
            }
        }
        kept[nkept++] = i++;
    }
    g_string_free(g, TRUE);
    /* what is left at the end: empty lines, rules, a mobile client's line */
    for (;;) {
        while (nkept && sc->lines[kept[nkept - 1]].blank)
            nkept--;
        if (nkept && only_rule(&sc->lines[kept[nkept - 1]])) {
            nkept--;
            continue;
        }
        if (nkept && is_mobile_line(sc, &sc->lines[kept[nkept - 1]])) {
            nkept--;
            continue;
        }
        break;
    }
    GString *out = g_string_new(NULL);
    bool blank_pending = false;
    for (size_t k = 0; k < nkept; k++) {
        const struct line *l = &sc->lines[kept[k]];
        if (l->blank) {
            blank_pending = out->len > 0;
            continue;
        }
        if (out->len)
            g_string_append(out, blank_pending ? "\n\n" : "\n");
        blank_pending = false;
        put_line(out, l);
    }
    g_free(kept);
    return g_string_free(out, FALSE);
}

/* ---- HTML roles ------------------------------------------------------------------------------ */

/* id or class value v is `name`, or Outlook's copy of it ("x_name"). */
static bool named(const char *v, const char *name)
{
    if (!v)
        return false;
    if (g_ascii_strncasecmp(v, "x_", 2) == 0)
        v += 2;
    return g_ascii_strcasecmp(v, name) == 0;
}

static bool has_class(const struct htmltext_tag *t, const char *name)
{
    char x[64];
    snprintf(x, sizeof x, "x_%s", name);
    return htmltext_tag_has_token(t, "class", name) || htmltext_tag_has_token(t, "class", x);
}

/* Outlook's separator: a block with only a top border above the From: block. */
static bool outlook_border(const struct htmltext_tag *t)
{
    const char *st = htmltext_tag_attr(t, "style");
    if (!st)
        return false;
    char buf[256];
    size_t n = 0;
    for (; *st && n + 1 < sizeof buf; st++)
        if (!g_ascii_isspace(*st))
            buf[n++] = g_ascii_tolower(*st);
    buf[n] = '\0';
    return strstr(buf, "border:none;border-top:solid") != NULL ||
           (strstr(buf, "border-top:solid") && strstr(buf, "padding:3"));
}

static enum htmltext_role classify(void *ctx, const struct htmltext_tag *t)
{
    (void)ctx;
    const char *tag = htmltext_tag_name(t);
    const char *id = htmltext_tag_attr(t, "id");
    static const char *const cut_ids[] = {
        "appendonsend", "divRplyFwdMsg", "mail-editor-reference-message-container",
        "OLK_SRC_BODY_SECTION", "zwchr", "Signature", "ms-outlook-mobile-signature",
        "AppleMailSignature"};
    for (size_t i = 0; i < sizeof cut_ids / sizeof cut_ids[0]; i++)
        if (named(id, cut_ids[i]))
            return HTMLTEXT_CUT;
    const char *name = htmltext_tag_attr(t, "name");
    if (named(name, "divRplyFwdMsg") || (strcmp(tag, "a") == 0 && named(name, "_MailAutoSig")) ||
        (strcmp(tag, "div") == 0 && named(name, "quote")))
        return HTMLTEXT_CUT; /* Outlook's separator; Word's bookmark on its signature; GMX */
    static const char *const cut_classes[] = {
        "OutlookMessageHeader", "yahoo_quoted", "protonmail_quote", "moz-forward-container",
        "gmail_signature", "gmail_signature_prefix", "moz-signature", "zmail_extra"};
    for (size_t i = 0; i < sizeof cut_classes / sizeof cut_classes[0]; i++)
        if (has_class(t, cut_classes[i]))
            return HTMLTEXT_CUT;
    if (strcmp(tag, "hr") == 0) {
        const char *ti = htmltext_tag_attr(t, "tabindex");
        return ti && strcmp(ti, "-1") == 0 ? HTMLTEXT_CUT : HTMLTEXT_KEEP;
    }
    if ((strcmp(tag, "div") == 0 || strcmp(tag, "p") == 0) && outlook_border(t))
        return HTMLTEXT_CUT;
    if (has_class(t, "gmail_attr") || has_class(t, "moz-cite-prefix"))
        return HTMLTEXT_MARK;
    if (strcmp(tag, "blockquote") == 0) {
        const char *type = htmltext_tag_attr(t, "type");
        const char *st = htmltext_tag_attr(t, "style");
        if ((type && g_ascii_strcasecmp(type, "cite") == 0) || has_class(t, "gmail_quote") ||
            (st && strstr(st, "border-left")))
            return HTMLTEXT_QUOTE;
    }
    return HTMLTEXT_KEEP;
}

/* ---- the entry ------------------------------------------------------------------------------ */

static char *repaired(const char *s, size_t n)
{
    if (n > REPLY_INPUT_MAX) {
        n = REPLY_INPUT_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    char *v = g_utf8_make_valid(s, (gssize)n);
    /* NULs would end the C string early: none survive make_valid's copy of
       a length-bounded input, but the text may hold them */
    return v;
}

static bool all_blank(const char *s)
{
    for (size_t n = strlen(s), i = 0; i < n;) {
        size_t k = space_at(s + i, n - i);
        if (!k && s[i] != '\n' && s[i] != '\r')
            return false;
        i += k ? k : 1;
    }
    return true;
}

char *reply_text(const char *text, size_t text_len, const char *html, size_t html_len)
{
    pthread_once(&compile_once, compile_all);
    char *t = text ? repaired(text, text_len) : NULL;
    if (t && all_blank(t) && html) {
        g_free(t);
        t = NULL;
    }
    struct htmltext h;
    bool have_html = false;
    if (html) {
        char *hv = repaired(html, html_len);
        htmltext_render(hv, strlen(hv), classify, NULL, &h);
        g_free(hv);
        have_html = true;
    }
    if (!t && !(have_html && h.len)) {
        if (have_html)
            htmltext_free(&h);
        return NULL;
    }
    struct scan sc = {0};
    sc.md = pcre2_match_data_create(16, NULL);
    if (!sc.md)
        abort();
    char *result;
    if (t) {
        split(&sc, t, strlen(t));
        if (have_html)
            apply_html_hints(&sc, &h);
        result = scan_reply(&sc);
    } else {
        split(&sc, h.text, h.len);
        marks_to_lines(&sc, &h);
        result = scan_reply(&sc);
    }
    scan_free(&sc);
    pcre2_match_data_free(sc.md);
    if (have_html)
        htmltext_free(&h);
    g_free(t);
    return result;
}
