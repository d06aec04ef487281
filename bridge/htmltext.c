/* htmltext — HTML to the text a reader sees; see include/htmltext.h. */
#include "htmltext.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <glib.h>

#define REF_DIGITS_MAX 8 /* digits read in a numeric character reference */
#define REF_NAME_MAX 10  /* longest entity name in the table */

/* ---- character references ------------------------------------------------ */

struct entity {
    const char *name;
    uint32_t cp;
};

/* HTML 4's named character references (and &apos;), sorted by strcmp. */
static const struct entity entities[] = {
    {"AElig", 0xC6}, {"Aacute", 0xC1}, {"Acirc", 0xC2}, {"Agrave", 0xC0}, {"Alpha", 0x391},
    {"Aring", 0xC5}, {"Atilde", 0xC3}, {"Auml", 0xC4}, {"Beta", 0x392}, {"Ccedil", 0xC7},
    {"Chi", 0x3A7}, {"Dagger", 0x2021}, {"Delta", 0x394}, {"ETH", 0xD0}, {"Eacute", 0xC9},
    {"Ecirc", 0xCA}, {"Egrave", 0xC8}, {"Epsilon", 0x395}, {"Eta", 0x397}, {"Euml", 0xCB},
    {"Gamma", 0x393}, {"Iacute", 0xCD}, {"Icirc", 0xCE}, {"Igrave", 0xCC}, {"Iota", 0x399},
    {"Iuml", 0xCF}, {"Kappa", 0x39A}, {"Lambda", 0x39B}, {"Mu", 0x39C}, {"Ntilde", 0xD1},
    {"Nu", 0x39D}, {"OElig", 0x152}, {"Oacute", 0xD3}, {"Ocirc", 0xD4}, {"Ograve", 0xD2},
    {"Omega", 0x3A9}, {"Omicron", 0x39F}, {"Oslash", 0xD8}, {"Otilde", 0xD5}, {"Ouml", 0xD6},
    {"Phi", 0x3A6}, {"Pi", 0x3A0}, {"Prime", 0x2033}, {"Psi", 0x3A8}, {"Rho", 0x3A1},
    {"Scaron", 0x160}, {"Sigma", 0x3A3}, {"THORN", 0xDE}, {"Tau", 0x3A4}, {"Theta", 0x398},
    {"Uacute", 0xDA}, {"Ucirc", 0xDB}, {"Ugrave", 0xD9}, {"Upsilon", 0x3A5}, {"Uuml", 0xDC},
    {"Xi", 0x39E}, {"Yacute", 0xDD}, {"Yuml", 0x178}, {"Zeta", 0x396}, {"aacute", 0xE1},
    {"acirc", 0xE2}, {"acute", 0xB4}, {"aelig", 0xE6}, {"agrave", 0xE0}, {"alefsym", 0x2135},
    {"alpha", 0x3B1}, {"amp", 0x26}, {"and", 0x2227}, {"ang", 0x2220}, {"apos", 0x27},
    {"aring", 0xE5}, {"asymp", 0x2248}, {"atilde", 0xE3}, {"auml", 0xE4}, {"bdquo", 0x201E},
    {"beta", 0x3B2}, {"brvbar", 0xA6}, {"bull", 0x2022}, {"cap", 0x2229}, {"ccedil", 0xE7},
    {"cedil", 0xB8}, {"cent", 0xA2}, {"chi", 0x3C7}, {"circ", 0x2C6}, {"clubs", 0x2663},
    {"cong", 0x2245}, {"copy", 0xA9}, {"crarr", 0x21B5}, {"cup", 0x222A}, {"curren", 0xA4},
    {"dArr", 0x21D3}, {"dagger", 0x2020}, {"darr", 0x2193}, {"deg", 0xB0}, {"delta", 0x3B4},
    {"diams", 0x2666}, {"divide", 0xF7}, {"eacute", 0xE9}, {"ecirc", 0xEA}, {"egrave", 0xE8},
    {"empty", 0x2205}, {"emsp", 0x2003}, {"ensp", 0x2002}, {"epsilon", 0x3B5}, {"equiv", 0x2261},
    {"eta", 0x3B7}, {"eth", 0xF0}, {"euml", 0xEB}, {"euro", 0x20AC}, {"exist", 0x2203},
    {"fnof", 0x192}, {"forall", 0x2200}, {"frac12", 0xBD}, {"frac14", 0xBC}, {"frac34", 0xBE},
    {"frasl", 0x2044}, {"gamma", 0x3B3}, {"ge", 0x2265}, {"gt", 0x3E}, {"hArr", 0x21D4},
    {"harr", 0x2194}, {"hearts", 0x2665}, {"hellip", 0x2026}, {"iacute", 0xED}, {"icirc", 0xEE},
    {"iexcl", 0xA1}, {"igrave", 0xEC}, {"image", 0x2111}, {"infin", 0x221E}, {"int", 0x222B},
    {"iota", 0x3B9}, {"iquest", 0xBF}, {"isin", 0x2208}, {"iuml", 0xEF}, {"kappa", 0x3BA},
    {"lArr", 0x21D0}, {"lambda", 0x3BB}, {"lang", 0x2329}, {"laquo", 0xAB}, {"larr", 0x2190},
    {"lceil", 0x2308}, {"ldquo", 0x201C}, {"le", 0x2264}, {"lfloor", 0x230A}, {"lowast", 0x2217},
    {"loz", 0x25CA}, {"lrm", 0x200E}, {"lsaquo", 0x2039}, {"lsquo", 0x2018}, {"lt", 0x3C},
    {"macr", 0xAF}, {"mdash", 0x2014}, {"micro", 0xB5}, {"middot", 0xB7}, {"minus", 0x2212},
    {"mu", 0x3BC}, {"nabla", 0x2207}, {"nbsp", 0xA0}, {"ndash", 0x2013}, {"ne", 0x2260},
    {"ni", 0x220B}, {"not", 0xAC}, {"notin", 0x2209}, {"nsub", 0x2284}, {"ntilde", 0xF1},
    {"nu", 0x3BD}, {"oacute", 0xF3}, {"ocirc", 0xF4}, {"oelig", 0x153}, {"ograve", 0xF2},
    {"oline", 0x203E}, {"omega", 0x3C9}, {"omicron", 0x3BF}, {"oplus", 0x2295}, {"or", 0x2228},
    {"ordf", 0xAA}, {"ordm", 0xBA}, {"oslash", 0xF8}, {"otilde", 0xF5}, {"otimes", 0x2297},
    {"ouml", 0xF6}, {"para", 0xB6}, {"part", 0x2202}, {"permil", 0x2030}, {"perp", 0x22A5},
    {"phi", 0x3C6}, {"pi", 0x3C0}, {"piv", 0x3D6}, {"plusmn", 0xB1}, {"pound", 0xA3},
    {"prime", 0x2032}, {"prod", 0x220F}, {"prop", 0x221D}, {"psi", 0x3C8}, {"quot", 0x22},
    {"rArr", 0x21D2}, {"radic", 0x221A}, {"rang", 0x232A}, {"raquo", 0xBB}, {"rarr", 0x2192},
    {"rceil", 0x2309}, {"rdquo", 0x201D}, {"real", 0x211C}, {"reg", 0xAE}, {"rfloor", 0x230B},
    {"rho", 0x3C1}, {"rlm", 0x200F}, {"rsaquo", 0x203A}, {"rsquo", 0x2019}, {"sbquo", 0x201A},
    {"scaron", 0x161}, {"sdot", 0x22C5}, {"sect", 0xA7}, {"shy", 0xAD}, {"sigma", 0x3C3},
    {"sigmaf", 0x3C2}, {"sim", 0x223C}, {"spades", 0x2660}, {"sub", 0x2282}, {"sube", 0x2286},
    {"sum", 0x2211}, {"sup", 0x2283}, {"sup1", 0xB9}, {"sup2", 0xB2}, {"sup3", 0xB3},
    {"supe", 0x2287}, {"szlig", 0xDF}, {"tau", 0x3C4}, {"there4", 0x2234}, {"theta", 0x3B8},
    {"thetasym", 0x3D1}, {"thinsp", 0x2009}, {"thorn", 0xFE}, {"tilde", 0x2DC}, {"times", 0xD7},
    {"trade", 0x2122}, {"uArr", 0x21D1}, {"uacute", 0xFA}, {"uarr", 0x2191}, {"ucirc", 0xFB},
    {"ugrave", 0xF9}, {"uml", 0xA8}, {"upsih", 0x3D2}, {"upsilon", 0x3C5}, {"uuml", 0xFC},
    {"weierp", 0x2118}, {"xi", 0x3BE}, {"yacute", 0xFD}, {"yen", 0xA5}, {"yuml", 0xFF},
    {"zeta", 0x3B6}, {"zwj", 0x200D}, {"zwnj", 0x200C},
};

static int entity_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct entity *)elem)->name);
}

/* windows-1252 for the C1 range, as HTML maps &#128; .. &#159;. */
static const uint16_t c1_map[32] = {
    0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD, 0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178,
};

/* A character reference at p ('&'); returns the bytes it spans (0: not one)
 * and its code point. */
static size_t char_ref(const char *p, const char *end, uint32_t *cp)
{
    const char *q = p + 1;
    if (q < end && *q == '#') {
        q++;
        bool hexa = q < end && (*q == 'x' || *q == 'X');
        if (hexa)
            q++;
        uint32_t v = 0;
        int digits = 0;
        bool big = false;
        for (; q < end && (hexa ? g_ascii_isxdigit(*q) : g_ascii_isdigit(*q)); q++, digits++) {
            if (digits >= REF_DIGITS_MAX)
                big = true;
            else
                v = v * (hexa ? 16 : 10) + (uint32_t)(hexa ? g_ascii_xdigit_value(*q)
                                                            : g_ascii_digit_value(*q));
        }
        if (!digits)
            return 0;
        if (q < end && *q == ';')
            q++;
        if (big || v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
            v = 0xFFFD;
        else if (v >= 0x80 && v <= 0x9F)
            v = c1_map[v - 0x80];
        *cp = v;
        return (size_t)(q - p);
    }
    char name[REF_NAME_MAX + 1];
    size_t n = 0;
    for (; q < end && g_ascii_isalnum(*q); q++) {
        if (n >= REF_NAME_MAX)
            return 0;
        name[n++] = *q;
    }
    if (!n)
        return 0;
    name[n] = '\0';
    const struct entity *ent =
        bsearch(name, entities, sizeof entities / sizeof entities[0], sizeof entities[0],
                entity_cmp);
    if (!ent)
        return 0;
    if (q < end && *q == ';')
        q++;
    else if (ent->cp > 0xFF || (q < end && *q == '='))
        return 0; /* only the Latin-1 names are taken without ';' */
    *cp = ent->cp;
    return (size_t)(q - p);
}

/* ---- elements --------------------------------------------------------------- */

enum {
    E_BLOCK = 1u << 0, /* begins and ends lines */
    E_PARA = 1u << 1,  /* set apart by a blank line */
    E_VOID = 1u << 2,  /* never has content or an end tag */
    E_RAW = 1u << 3,   /* content skipped up to the end tag */
    E_PRE = 1u << 4,   /* white space kept */
    E_LIST = 1u << 5,  /* ul, ol, menu, dir */
    E_ITEM = 1u << 6,  /* li */
    E_CELL = 1u << 7,  /* td, th */
    E_ROW = 1u << 8,   /* tr */
};

struct element {
    const char *name;
    unsigned flags;
};

static const struct element elements[] = {
    {"address", E_BLOCK},         {"area", E_VOID},
    {"article", E_BLOCK},         {"aside", E_BLOCK},
    {"base", E_VOID},             {"blockquote", E_BLOCK | E_PARA},
    {"body", E_BLOCK},            {"caption", E_BLOCK},
    {"center", E_BLOCK},          {"col", E_VOID},
    {"dd", E_BLOCK},              {"details", E_BLOCK},
    {"dialog", E_BLOCK},          {"dir", E_BLOCK | E_PARA | E_LIST},
    {"div", E_BLOCK},             {"dl", E_BLOCK | E_PARA},
    {"dt", E_BLOCK},              {"embed", E_VOID},
    {"fieldset", E_BLOCK},        {"figcaption", E_BLOCK},
    {"figure", E_BLOCK},          {"footer", E_BLOCK},
    {"form", E_BLOCK},            {"h1", E_BLOCK | E_PARA},
    {"h2", E_BLOCK | E_PARA},     {"h3", E_BLOCK | E_PARA},
    {"h4", E_BLOCK | E_PARA},     {"h5", E_BLOCK | E_PARA},
    {"h6", E_BLOCK | E_PARA},     {"header", E_BLOCK},
    {"hr", E_VOID | E_BLOCK},     {"html", E_BLOCK},
    {"img", E_VOID},              {"input", E_VOID},
    {"keygen", E_VOID},           {"li", E_BLOCK | E_ITEM},
    {"link", E_VOID},             {"listing", E_BLOCK | E_PARA | E_PRE},
    {"main", E_BLOCK},            {"menu", E_BLOCK | E_PARA | E_LIST},
    {"meta", E_VOID},             {"nav", E_BLOCK},
    {"ol", E_BLOCK | E_PARA | E_LIST}, {"p", E_BLOCK | E_PARA},
    {"param", E_VOID},            {"plaintext", E_BLOCK | E_PRE},
    {"pre", E_BLOCK | E_PARA | E_PRE}, {"script", E_RAW},
    {"section", E_BLOCK},         {"source", E_VOID},
    {"style", E_RAW},             {"summary", E_BLOCK},
    {"table", E_BLOCK},           {"td", E_CELL},
    {"template", E_RAW},          {"textarea", E_RAW},
    {"th", E_CELL},               {"title", E_RAW},
    {"tr", E_BLOCK | E_ROW},      {"track", E_VOID},
    {"ul", E_BLOCK | E_PARA | E_LIST}, {"wbr", E_VOID},
    {"xmp", E_RAW},
};

static int element_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct element *)elem)->name);
}

static unsigned element_flags(const char *name)
{
    const struct element *el = bsearch(name, elements, sizeof elements / sizeof elements[0],
                                       sizeof elements[0], element_cmp);
    return el ? el->flags : 0;
}

/* ---- a start tag -------------------------------------------------------------- */

struct attr {
    char name[HTMLTEXT_NAME_MAX];
    size_t value_off; /* in the tag's value buffer */
    bool has_value;
};

struct htmltext_tag {
    char name[HTMLTEXT_NAME_MAX];
    struct attr attrs[HTMLTEXT_ATTRS_MAX];
    int nattrs;
    GString *values; /* NUL-separated attribute values */
};

const char *htmltext_tag_name(const struct htmltext_tag *t)
{
    return t->name;
}

const char *htmltext_tag_attr(const struct htmltext_tag *t, const char *name)
{
    for (int i = 0; i < t->nattrs; i++)
        if (strcmp(t->attrs[i].name, name) == 0)
            return t->attrs[i].has_value ? t->values->str + t->attrs[i].value_off : "";
    return NULL;
}

bool htmltext_tag_has_token(const struct htmltext_tag *t, const char *name, const char *token)
{
    const char *v = htmltext_tag_attr(t, name);
    size_t n = strlen(token);
    while (v && *v) {
        while (*v && g_ascii_isspace(*v))
            v++;
        const char *w = v;
        while (*w && !g_ascii_isspace(*w))
            w++;
        if ((size_t)(w - v) == n && g_ascii_strncasecmp(v, token, n) == 0)
            return true;
        v = w;
    }
    return false;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

/* Appends s[0..n) to g with character references decoded. */
static void append_decoded(GString *g, const char *s, size_t n)
{
    const char *end = s + n;
    while (s < end) {
        uint32_t cp;
        size_t k = *s == '&' ? char_ref(s, end, &cp) : 0;
        if (k) {
            char u[8];
            g_string_append_len(g, u, g_unichar_to_utf8(cp, u));
            s += k;
        } else {
            if (*s)
                g_string_append_c(g, *s);
            s++;
        }
    }
}

/* Reads a name (tag or attribute) at p, lower-cased into dst (cut to fit);
 * stops at white space, '/', '>' and, for attributes, '='. */
static const char *read_name(const char *p, const char *end, char *dst, bool attr)
{
    size_t n = 0;
    while (p < end && !is_space(*p) && *p != '/' && *p != '>' && !(attr && *p == '=' && n > 0)) {
        if (n + 1 < HTMLTEXT_NAME_MAX)
            dst[n++] = g_ascii_tolower(*p);
        p++;
    }
    dst[n] = '\0';
    return p;
}

/* Parses the tag whose name starts at p (after '<' or "</").  Returns the
 * position after its '>', or NULL when there is no '>' within
 * HTMLTEXT_TAG_MAX bytes of `lt` (then the '<' is text). */
static const char *parse_tag(const char *lt, const char *p, const char *end, struct htmltext_tag *t)
{
    const char *limit = end - lt > HTMLTEXT_TAG_MAX ? lt + HTMLTEXT_TAG_MAX : end;
    if (!memchr(p, '>', (size_t)(limit - p)))
        return NULL;
    t->nattrs = 0;
    g_string_truncate(t->values, 0);
    p = read_name(p, limit, t->name, false);
    for (;;) {
        while (p < limit && (is_space(*p) || *p == '/'))
            p++;
        if (p >= limit)
            return NULL;
        if (*p == '>')
            return p + 1;
        struct attr a = {.has_value = false};
        p = read_name(p, limit, a.name, true);
        while (p < limit && is_space(*p))
            p++;
        if (p < limit && *p == '=') {
            p++;
            while (p < limit && is_space(*p))
                p++;
            const char *v = p, *ve;
            if (p < limit && (*p == '"' || *p == '\'')) {
                char q = *p;
                v = ++p;
                while (p < limit && *p != q)
                    p++;
                if (p >= limit)
                    return NULL;
                ve = p++;
            } else {
                while (p < limit && !is_space(*p) && *p != '>')
                    p++;
                ve = p;
            }
            a.has_value = true;
            a.value_off = t->values->len;
            append_decoded(t->values, v, (size_t)(ve - v));
            g_string_append_c(t->values, '\0');
        }
        if (a.name[0] && t->nattrs < HTMLTEXT_ATTRS_MAX && !htmltext_tag_attr(t, a.name))
            t->attrs[t->nattrs++] = a;
    }
}

/* ---- the renderer --------------------------------------------------------------- */

struct open_el {
    char name[HTMLTEXT_NAME_MAX];
    unsigned flags;
    bool para;
    enum htmltext_role role; /* as applied (KEEP after a CUT) */
    int items;               /* list items seen (ol numbering) */
    bool ordered;
};

struct r {
    GString *s;           /* where text goes: the result, or the anchor after a CUT */
    GString *main;
    size_t line_start;    /* offset of the current line in s */
    bool line_text;       /* the current line has begun (prefix written) */
    bool line_content;    /* ... and holds something visible */
    bool space;           /* a space is pending before the next content */
    bool want_blank;      /* an empty line before the next content */
    bool prev_blank;      /* the last finished line was empty */
    int quote, drop, pre, mark_depth;
    size_t mark_start;
    struct htmltext_mark *marks;
    size_t nmarks;
    bool cut, stop, truncated;
    struct open_el stack[HTMLTEXT_DEPTH_MAX];
    int depth;
};

/* Whether `more` bytes (and the quote prefix and line end that may come
 * with them) would pass the limit; if so, rendering stops. */
static bool full(struct r *r, size_t more)
{
    size_t max = r->cut ? HTMLTEXT_ANCHOR_MAX : HTMLTEXT_OUTPUT_MAX;
    if (r->s->len + more + 2 * HTMLTEXT_QUOTE_MAX + 2 <= max)
        return false;
    if (!r->cut)
        r->truncated = true;
    r->stop = true;
    return true;
}

static void trim_line(struct r *r)
{
    GString *s = r->s;
    while (s->len > r->line_start && (s->str[s->len - 1] == ' ' || s->str[s->len - 1] == '\t'))
        g_string_truncate(s, s->len - 1);
}

static void write_prefix(struct r *r)
{
    int q = r->cut ? 0 : (r->quote < HTMLTEXT_QUOTE_MAX ? r->quote : HTMLTEXT_QUOTE_MAX);
    for (int i = 0; i < q; i++)
        g_string_append(r->s, "> ");
}

/* Ends the current line (begun or not: an empty line is written). */
static void newline(struct r *r)
{
    if (full(r, 0))
        return;
    if (!r->line_text)
        write_prefix(r);
    trim_line(r);
    g_string_append_c(r->s, '\n');
    r->line_start = r->s->len;
    r->prev_blank = !r->line_content;
    r->line_text = r->line_content = r->space = false;
}

/* Before something visible: begins the line, or writes a pending space. */
static void content(struct r *r)
{
    if (!r->line_text) {
        if (r->want_blank && r->s->len > 0 && !r->prev_blank)
            newline(r);
        r->want_blank = false;
        write_prefix(r);
        r->line_text = true;
    } else if (r->space && r->line_content) {
        g_string_append_c(r->s, ' ');
    }
    r->space = false;
    r->line_content = true;
}

/* A block boundary: the next content starts a line (after a blank one). */
static void block(struct r *r, bool para)
{
    if (r->drop)
        return;
    if (r->line_text)
        newline(r);
    if (para)
        r->want_blank = true;
}

static void br(struct r *r)
{
    if (r->drop)
        return;
    if (r->line_text || r->s->len > 0)
        newline(r);
    r->want_blank = false;
}

static void put_char(struct r *r, uint32_t cp)
{
    if (r->drop || r->stop || full(r, 8))
        return;
    if (cp == 0xFEFF || cp == 0)
        return;
    if (r->pre) {
        if (cp == '\n') {
            br(r);
            return;
        }
        if (cp == '\r')
            return;
        if (cp == ' ' || cp == '\t' || cp == 0xA0) {
            content(r);
            g_string_append_c(r->s, cp == '\t' ? '\t' : ' ');
            return;
        }
    } else if (cp < 0x80 && is_space((char)cp)) {
        r->space = true;
        return;
    } else if (cp == 0xA0) {
        content(r);
        g_string_append_c(r->s, ' ');
        return;
    }
    content(r);
    char u[8];
    g_string_append_len(r->s, u, g_unichar_to_utf8(cp, u));
}

/* Text bytes, UTF-8: each invalid or incomplete sequence becomes U+FFFD here,
 * so that the limits count what is written. */
static void put_bytes(struct r *r, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end && !r->drop && !r->stop) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x80) {
            put_char(r, c);
            p++;
            continue;
        }
        gunichar cp = g_utf8_get_char_validated(p, (gssize)(end - p));
        if (cp == (gunichar)-1 || cp == (gunichar)-2) {
            put_char(r, 0xFFFD);
            p++;
            continue;
        }
        put_char(r, cp);
        p = g_utf8_next_char(p);
    }
}

static void start_cut(struct r *r)
{
    if (r->line_text)
        newline(r);
    r->cut = true;
    r->s = g_string_new(NULL);
    r->line_start = 0;
    r->line_text = r->line_content = r->space = r->want_blank = r->prev_blank = false;
    r->drop = 0;
    r->mark_depth = 0;
}

static void pop(struct r *r)
{
    struct open_el *el = &r->stack[--r->depth];
    if (el->flags & E_PRE)
        r->pre--;
    switch (el->role) {
    case HTMLTEXT_DROP:
        r->drop--;
        break;
    case HTMLTEXT_QUOTE:
        block(r, el->para);
        r->quote--;
        break;
    case HTMLTEXT_MARK:
        if (--r->mark_depth == 0 && r->nmarks < HTMLTEXT_MARKS_MAX) {
            r->marks[r->nmarks].start = r->mark_start;
            r->marks[r->nmarks].end = r->s->len;
            r->nmarks++;
        }
        break;
    default:
        break;
    }
    if (el->flags & E_BLOCK)
        block(r, el->para);
}

/* Closes open elements down to and including the nearest `name`, stopping
 * at any of `fence` (names separated by '|', e.g. the enclosing list). */
static bool close_to(struct r *r, const char *name, const char *fence)
{
    for (int i = r->depth - 1; i >= 0; i--) {
        if (strcmp(r->stack[i].name, name) == 0) {
            while (r->depth > i)
                pop(r);
            return true;
        }
        if (fence) {
            const char *f = strstr(fence, r->stack[i].name);
            size_t n = strlen(r->stack[i].name);
            if (f && (f == fence || f[-1] == '|') && (f[n] == '|' || f[n] == '\0'))
                return false;
        }
    }
    return false;
}

static bool para_without_margins(const struct htmltext_tag *t)
{
    if (htmltext_tag_has_token(t, "class", "MsoNormal"))
        return true;
    const char *st = htmltext_tag_attr(t, "style");
    if (!st)
        return false;
    while (is_space(*st))
        st++;
    return g_ascii_strncasecmp(st, "margin:0", 8) == 0 ||
           g_ascii_strncasecmp(st, "margin: 0", 9) == 0;
}

static void start_tag(struct r *r, const struct htmltext_tag *t, htmltext_classify_fn classify,
                      void *ctx)
{
    const char *name = t->name;
    if (!name[0])
        return;
    if (strcmp(name, "br") == 0) {
        br(r);
        return;
    }
    unsigned flags = element_flags(name);
    /* what a start tag implies for elements left open */
    if ((flags & E_BLOCK) && !(flags & E_ITEM) && r->depth && strcmp(r->stack[r->depth - 1].name, "p") == 0)
        pop(r);
    if (flags & E_ITEM)
        close_to(r, "li", "ul|ol|menu|dir");
    if (flags & E_CELL) {
        close_to(r, "td", "tr|table");
        close_to(r, "th", "tr|table");
    }
    if (flags & E_ROW)
        close_to(r, "tr", "table");
    if (strcmp(name, "dt") == 0 || strcmp(name, "dd") == 0) {
        close_to(r, "dt", "dl");
        close_to(r, "dd", "dl");
    }

    enum htmltext_role role = HTMLTEXT_KEEP;
    if (classify && !r->cut && !r->drop && r->depth < HTMLTEXT_DEPTH_MAX)
        role = classify(ctx, t);
    if (role == HTMLTEXT_CUT) {
        start_cut(r);
        role = HTMLTEXT_KEEP;
    }
    bool para = (flags & E_PARA) && !(strcmp(name, "p") == 0 && para_without_margins(t));
    if (flags & E_VOID) {
        if (flags & E_BLOCK)
            block(r, false);
        return;
    }
    if (flags & E_BLOCK)
        block(r, para);
    if (flags & E_ITEM && !r->drop && !full(r, 16)) {
        struct open_el *list = NULL;
        for (int i = r->depth - 1; i >= 0 && !list; i--)
            if (r->stack[i].flags & E_LIST)
                list = &r->stack[i];
        content(r);
        if (list && list->ordered)
            g_string_append_printf(r->s, "%d. ", ++list->items);
        else
            g_string_append(r->s, "- ");
        r->line_content = false; /* a marker alone is not content */
    }
    if (flags & E_CELL && r->line_content)
        r->space = true;
    if (r->depth >= HTMLTEXT_DEPTH_MAX) {
        r->truncated = true;
        return;
    }
    struct open_el *el = &r->stack[r->depth++];
    memcpy(el->name, name, sizeof el->name);
    el->flags = flags;
    el->para = para;
    el->role = role;
    el->items = 0;
    el->ordered = strcmp(name, "ol") == 0;
    if (el->ordered) {
        const char *st = htmltext_tag_attr(t, "start");
        long v = st ? strtol(st, NULL, 10) : 1;
        el->items = v > -1000000 && v < 1000000 ? (int)v - 1 : 0;
    }
    if (flags & E_PRE)
        r->pre++;
    switch (role) {
    case HTMLTEXT_DROP:
        r->drop++;
        break;
    case HTMLTEXT_QUOTE:
        /* the blank line before a quote belongs to the outer level */
        block(r, para);
        if (r->want_blank && r->s->len > 0 && !r->prev_blank)
            newline(r);
        r->want_blank = false;
        r->quote++;
        break;
    case HTMLTEXT_MARK:
        if (r->mark_depth++ == 0)
            r->mark_start = r->s->len;
        break;
    default:
        break;
    }
}

static void end_tag(struct r *r, const char *name)
{
    if (strcmp(name, "br") == 0) {
        br(r);
        return;
    }
    if (strcmp(name, "p") == 0 && !close_to(r, "p", NULL)) {
        block(r, true); /* "</p>" alone is an empty paragraph */
        return;
    }
    close_to(r, name, NULL);
}

/* After a CUT: done once the anchor is full. */
static bool anchor_done(struct r *r)
{
    return r->cut && r->stop;
}

/* Skips the content of a raw-text element: returns the position after its
 * end tag, or end. */
static const char *skip_raw(const char *p, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (; p < end; p++) {
        if (*p == '<' && p + 2 + n <= end && p[1] == '/' &&
            g_ascii_strncasecmp(p + 2, name, n) == 0 &&
            (p + 2 + n == end || is_space(p[2 + n]) || p[2 + n] == '>' || p[2 + n] == '/')) {
            const char *gt = memchr(p, '>', (size_t)(end - p));
            return gt ? gt + 1 : end;
        }
    }
    return end;
}

static const char *find_str(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);
    for (; p + n <= end; p++)
        if (*p == needle[0] && memcmp(p, needle, n) == 0)
            return p;
    return NULL;
}

/* Trims the end of the result: trailing white space and empty lines. */
static void finish(GString *s)
{
    while (s->len && (s->str[s->len - 1] == '\n' || s->str[s->len - 1] == ' ' ||
                      s->str[s->len - 1] == '\t' || s->str[s->len - 1] == '>')) {
        /* a trailing ">" is kept unless it is an empty quoted line */
        if (s->str[s->len - 1] == '>') {
            size_t ls = s->len - 1;
            while (ls > 0 && s->str[ls - 1] != '\n')
                ls--;
            bool only_prefix = true;
            for (size_t i = ls; i < s->len; i++)
                if (s->str[i] != '>' && s->str[i] != ' ')
                    only_prefix = false;
            if (!only_prefix)
                break;
            g_string_truncate(s, ls);
            continue;
        }
        g_string_truncate(s, s->len - 1);
    }
}

static char *valid_utf8(GString *s, size_t *len)
{
    char *v = g_utf8_make_valid(s->str, (gssize)s->len);
    *len = strlen(v);
    return v;
}

void htmltext_render(const char *html, size_t len, htmltext_classify_fn classify, void *ctx,
                     struct htmltext *out)
{
    memset(out, 0, sizeof *out);
    struct r *r = g_new0(struct r, 1);
    r->main = r->s = g_string_sized_new(len / 2 + 16);
    r->marks = g_new0(struct htmltext_mark, HTMLTEXT_MARKS_MAX);
    struct htmltext_tag tag;
    tag.values = g_string_new(NULL);
    if (!html)
        len = 0;
    if (len > HTMLTEXT_INPUT_MAX) {
        len = HTMLTEXT_INPUT_MAX;
        r->truncated = true;
    }
    const char *p = html, *end = html ? html + len : NULL;
    while (p && p < end && !r->stop && !anchor_done(r)) {
        if (*p == '<' && p + 1 < end) {
            const char *q = p + 1;
            if (*q == '/' && q + 1 < end && g_ascii_isalpha(q[1])) {
                const char *next = parse_tag(p, q + 1, end, &tag);
                if (next) {
                    end_tag(r, tag.name);
                    p = next;
                    continue;
                }
            } else if (g_ascii_isalpha(*q)) {
                const char *next = parse_tag(p, q, end, &tag);
                if (next) {
                    start_tag(r, &tag, classify, ctx);
                    p = next;
                    if (element_flags(tag.name) & E_RAW)
                        p = skip_raw(p, end, tag.name);
                    continue;
                }
            } else if (*q == '!' && q + 2 < end && q[1] == '-' && q[2] == '-') {
                const char *c = find_str(q + 3, end, "-->");
                p = c ? c + 3 : end;
                continue;
            } else if (*q == '!' || *q == '?') {
                const char *gt = memchr(q, '>', (size_t)(end - q));
                p = gt ? gt + 1 : end;
                continue;
            }
        }
        if (*p == '&') {
            uint32_t cp;
            size_t k = char_ref(p, end, &cp);
            if (k) {
                put_char(r, cp);
                p += k;
                continue;
            }
        }
        /* a run of plain text up to the next '<' or '&' */
        const char *q = p + 1;
        while (q < end && *q != '<' && *q != '&')
            q++;
        put_bytes(r, p, (size_t)(q - p));
        p = q;
    }
    /* the result */
    finish(r->main);
    out->text = valid_utf8(r->main, &out->len);
    out->truncated = r->truncated;
    if (r->mark_depth > 0 && !r->cut && r->nmarks < HTMLTEXT_MARKS_MAX) {
        r->marks[r->nmarks].start = r->mark_start;
        r->marks[r->nmarks].end = r->main->len;
        r->nmarks++;
    }
    if (r->nmarks) {
        out->marks = r->marks;
        out->mark_count = r->nmarks;
        for (size_t i = 0; i < r->nmarks; i++) {
            /* valid_utf8 only changes invalid bytes, which are rare: clamp */
            if (out->marks[i].end > out->len)
                out->marks[i].end = out->len;
            if (out->marks[i].start > out->marks[i].end)
                out->marks[i].start = out->marks[i].end;
        }
    } else {
        g_free(r->marks);
    }
    if (r->cut) {
        out->cut = true;
        GString *a = r->s;
        finish(a);
        if (a->len) {
            size_t alen;
            out->cut_anchor = valid_utf8(a, &alen);
        }
        g_string_free(a, TRUE);
    }
    g_string_free(r->main, TRUE);
    g_string_free(tag.values, TRUE);
    g_free(r);
}

void htmltext_free(struct htmltext *t)
{
    if (!t)
        return;
    g_free(t->text);
    g_free(t->marks);
    g_free(t->cut_anchor);
    memset(t, 0, sizeof *t);
}
