/*
 * htmltext — the text of an HTML body as a reader sees it: tags gone,
 * character references decoded, white space collapsed as a browser does, one
 * output line per rendered line.  A caller may give elements a role, so that
 * the structures mail clients use for quoted history and signatures come out
 * as such (reply.c is the caller that knows those structures).
 *
 * Reading follows the WHATWG HTML tokenizer in a simplified form: start and
 * end tags with attributes (double-, single- or unquoted values), comments,
 * declarations (<!DOCTYPE>, <![if ...]>, <?xml ...?>) skipped, the content of
 * script, style, title, textarea and xmp skipped, numeric character
 * references and the common named ones (HTML 4's Latin-1, symbol and special
 * sets; an unknown name is kept as written).  There is no tree construction:
 * an end tag closes the nearest open element of its name (and whatever was
 * left open inside it); one that matches nothing is ignored; void elements
 * (br, img, hr, ...) never open.
 *
 * Rendering:
 *  - block elements (div, p, li, tr, h1-h6, table, ul, ol, blockquote, pre,
 *    ...) begin and end lines; p, h1-h6, ul, ol, dl, blockquote and pre are
 *    set apart by a blank line, except paragraphs without vertical margins
 *    (Word's class MsoNormal, or a style starting "margin:0");
 *  - <br> ends a line (two in a row leave an empty line);
 *  - runs of white space are one space (kept as written inside <pre>);
 *    no-break spaces are spaces, but a line holding only them still counts
 *    as a line (as Word's `<p>&nbsp;</p>` paragraph separators do);
 *  - list items start with "- " (ul) or "N. " (ol); table cells on a row are
 *    separated by a space; images and other embedded content give nothing;
 *  - lines inside an element with the QUOTE role start with "> " per level
 *    (at most HTMLTEXT_QUOTE_MAX levels), an empty one with ">";
 *  - the result is valid UTF-8 (invalid bytes become U+FFFD, NULs are
 *    dropped), lines end in "\n", no line has trailing white space, and it
 *    has no leading or trailing empty lines.
 *
 * Limits: only the first HTMLTEXT_INPUT_MAX bytes are read; a tag longer than
 * HTMLTEXT_TAG_MAX bytes is taken as text; HTMLTEXT_DEPTH_MAX open elements
 * are tracked (deeper ones render but get no role); the text stops at
 * HTMLTEXT_OUTPUT_MAX bytes.  `truncated` says when one of them cut
 * something.  Pure functions; thread-safe.
 */
#ifndef POP3BRIDGE_HTMLTEXT_H
#define POP3BRIDGE_HTMLTEXT_H

#include <stdbool.h>
#include <stddef.h>

#define HTMLTEXT_INPUT_MAX (4 * 1024 * 1024)  /* bytes of HTML read */
#define HTMLTEXT_OUTPUT_MAX (4 * 1024 * 1024) /* bytes of text produced */
#define HTMLTEXT_TAG_MAX (16 * 1024)          /* bytes of one tag, '<' to '>' */
#define HTMLTEXT_ATTRS_MAX 32                 /* attributes kept per tag */
#define HTMLTEXT_NAME_MAX 32                  /* bytes of a tag or attribute name kept */
#define HTMLTEXT_DEPTH_MAX 256                /* open elements tracked */
#define HTMLTEXT_QUOTE_MAX 8                  /* "> " levels written before a line */
#define HTMLTEXT_MARKS_MAX 64                 /* MARK elements reported */
#define HTMLTEXT_ANCHOR_MAX 256               /* bytes of the text kept after a CUT */

/* What becomes of an element (and its content). */
enum htmltext_role {
    HTMLTEXT_KEEP = 0, /* rendered as usual */
    HTMLTEXT_DROP,     /* left out, content and all */
    HTMLTEXT_QUOTE,    /* rendered, each line prefixed with "> " */
    HTMLTEXT_MARK,     /* rendered as usual; its extent in the text is reported */
    HTMLTEXT_CUT,      /* it and everything after it are left out; the
                          beginning of the text from there on is reported
                          (cut_anchor) */
};

/* One start tag, as the classifier sees it (valid during the call only). */
struct htmltext_tag;

/* The tag name, lower case ("div"). */
const char *htmltext_tag_name(const struct htmltext_tag *t);
/* The value of attribute `name` (lower case), entity-decoded; "" for an
 * attribute without a value; NULL when absent. */
const char *htmltext_tag_attr(const struct htmltext_tag *t, const char *name);
/* Whether the space-separated list in attribute `name` holds `token`
 * (ASCII case-insensitive), e.g. class="gmail_quote gmail_quote_container". */
bool htmltext_tag_has_token(const struct htmltext_tag *t, const char *name, const char *token);

/* Decides the role of an element from its start tag; called for each element
 * that is not inside a dropped or quoted-away part.  NULL: every element KEEP. */
typedef enum htmltext_role (*htmltext_classify_fn)(void *ctx, const struct htmltext_tag *t);

/* The extent of a MARK element in `text`: [start, end) byte offsets. */
struct htmltext_mark {
    size_t start, end;
};

struct htmltext {
    char *text;                  /* NUL-terminated UTF-8, g_malloc'd */
    size_t len;
    struct htmltext_mark *marks; /* outermost MARK elements in document order */
    size_t mark_count;
    bool cut;                    /* a CUT element was met: text ends before it */
    char *cut_anchor;            /* the text from the CUT element on, rendered
                                    without roles, its first HTMLTEXT_ANCHOR_MAX
                                    bytes (possibly cut inside a character:
                                    made valid UTF-8); NULL if empty */
    bool truncated;              /* a limit above cut something */
};

/*
 * Renders `len` bytes of HTML (any bytes; NULL with len 0 is the empty
 * document) into `out`, which the caller releases with htmltext_free().
 * Cannot fail (GLib aborts when memory runs out).
 */
void htmltext_render(const char *html, size_t len, htmltext_classify_fn classify, void *ctx,
                     struct htmltext *out);

/* Releases what htmltext_render() put in `t` and zeroes it; NULL is a no-op. */
void htmltext_free(struct htmltext *t);

#endif
