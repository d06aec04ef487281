/* Unit tests: HTML to text (include/htmltext.h): rendering, character
 * references, the tokenizer's edges, roles, and the limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "htmltext.h"

/* The text of s without roles (the caller frees it). */
static char *render(const char *s)
{
    struct htmltext h;
    htmltext_render(s, strlen(s), NULL, NULL, &h);
    assert_true(g_utf8_validate(h.text, (gssize)h.len, NULL));
    assert_int_equal(strlen(h.text), h.len);
    char *t = g_strdup(h.text);
    htmltext_free(&h);
    return t;
}

#define RENDERS(html, want)                                                                        \
    do {                                                                                           \
        char *got_ = render(html);                                                                 \
        assert_string_equal(got_, want);                                                           \
        g_free(got_);                                                                              \
    } while (0)

static void blocks_and_lines(void **state)
{
    (void)state;
    RENDERS("", "");
    RENDERS("plain words", "plain words");
    RENDERS("<div>one</div><div>two</div>", "one\ntwo");
    RENDERS("<p>one</p><p>two</p>", "one\n\ntwo");
    RENDERS("<p class=MsoNormal>one<o:p></o:p></p><p class=MsoNormal>two</p>", "one\ntwo");
    RENDERS("<p class=MsoNormal>a</p><p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>b</p>",
            "a\n\nb");
    RENDERS("<p style=\"margin:0\">a</p><p style=\"margin: 0cm\">b</p>", "a\nb");
    RENDERS("a<br>b<br/>c<br><br>d", "a\nb\nc\n\nd");
    RENDERS("<div>Hi</div><div><br></div><div>there</div>", "Hi\n\nthere");
    RENDERS("  lots \n\t of\r\n   space  ", "lots of space");
    RENDERS("<pre>  keep\n    this</pre>after", "  keep\n    this\n\nafter");
    RENDERS("<h1>Title</h1>text", "Title\n\ntext");
    RENDERS("<span>in</span><b>line</b> <i>elements</i>", "inline elements");
    RENDERS("<br><br><div>lead</div><br><br>", "lead");
    RENDERS("a<hr>b", "a\nb");
    RENDERS("</p>stray end tags</div></span>", "stray end tags");
}

static void lists_tables(void **state)
{
    (void)state;
    RENDERS("<ul><li>one</li><li>two<li>three</ul>", "- one\n- two\n- three");
    RENDERS("<ol><li>a<li>b</ol>", "1. a\n2. b");
    RENDERS("<ol start=\"4\"><li>d</li><li>e</li></ol>", "4. d\n5. e");
    RENDERS("<table><tr><td>a<td>b</tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d");
    RENDERS("<dl><dt>term<dd>meaning</dl>", "term\nmeaning");
}

static void references(void **state)
{
    (void)state;
    /* a no-break space is a space that is never collapsed */
    RENDERS("&amp; &lt; &gt; &quot; &apos; &nbsp;x", "& < > \" '  x");
    RENDERS("&eacute;t&eacute; &Uuml;ber &szlig; &euro;5 &hellip;", "\xc3\xa9t\xc3\xa9 \xc3\x9c" "ber "
            "\xc3\x9f \xe2\x82\xac" "5 \xe2\x80\xa6");
    RENDERS("&#233;&#xE9;&#X1F600;", "\xc3\xa9\xc3\xa9\xf0\x9f\x98\x80");
    /* C1 numbers are windows-1252; 0, surrogates and huge ones are U+FFFD */
    RENDERS("&#128;&#150;", "\xe2\x82\xac\xe2\x80\x93");
    RENDERS("&#0;&#xD800;&#x110000;&#99999999999;", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    /* Latin-1 names work without ';', others do not; unknown names stay */
    RENDERS("&copy 2024 &hellip &bogus; &; & alone", "\xc2\xa9 2024 &hellip &bogus; &; & alone");
    RENDERS("<a href=\"?a=1&amp;b=2\">link</a>", "link");
    RENDERS("A&nbsp;&nbsp;&nbsp;B", "A   B");
}

static void tokenizer_edges(void **state)
{
    (void)state;
    RENDERS("a<!-- hidden <b>x</b> -->b", "ab");
    RENDERS("a<!--[if gte mso 9]><xml><o:x/></xml><![endif]-->b", "ab");
    RENDERS("<!DOCTYPE html><?xml version=\"1.0\"?>text", "text");
    RENDERS("<![if !supportLists]>1.<![endif]> item", "1. item");
    RENDERS("<head><title>T</title><style>p{color:red}</style></head><body>x</body>", "x");
    RENDERS("<script>if (a < b) document.write('<p>')</script>y", "y");
    RENDERS("<SCRIPT>z</SCRIPT >after", "after");
    RENDERS("a < b and c<d", "a < b and c<d");
    RENDERS("<div title='a>b' class=\"x\" data-x=unquoted>in</div>", "in");
    RENDERS("unclosed <div class=\"never closed", "unclosed <div class=\"never closed");
    RENDERS("<!-- never closed", "");
    RENDERS("x<", "x<");
    /* the BOM and NULs are dropped, invalid UTF-8 becomes U+FFFD */
    RENDERS("\xef\xbb\xbfhi", "hi");
    RENDERS("a\xff" "b", "a\xef\xbf\xbd" "b");
    struct htmltext h;
    htmltext_render("a\0b", 3, NULL, NULL, &h);
    assert_string_equal(h.text, "ab");
    htmltext_free(&h);
    htmltext_render(NULL, 0, NULL, NULL, &h);
    assert_string_equal(h.text, "");
    htmltext_free(&h);
    htmltext_free(NULL);
}

/* ---- roles --------------------------------------------------------------------- */

static enum htmltext_role roles(void *ctx, const struct htmltext_tag *t)
{
    int *calls = ctx;
    (*calls)++;
    if (htmltext_tag_has_token(t, "class", "drop"))
        return HTMLTEXT_DROP;
    if (htmltext_tag_has_token(t, "class", "mark"))
        return HTMLTEXT_MARK;
    const char *type = htmltext_tag_attr(t, "type");
    if (strcmp(htmltext_tag_name(t), "blockquote") == 0 && type && strcmp(type, "cite") == 0)
        return HTMLTEXT_QUOTE;
    const char *id = htmltext_tag_attr(t, "id");
    if (id && strcmp(id, "cut") == 0)
        return HTMLTEXT_CUT;
    return HTMLTEXT_KEEP;
}

static enum htmltext_role inspect(void *ctx, const struct htmltext_tag *t)
{
    int *ok = ctx;
    if (strcmp(htmltext_tag_name(t), "div") == 0) {
        const char *title = htmltext_tag_attr(t, "title");
        const char *hidden = htmltext_tag_attr(t, "hidden");
        if (title && strcmp(title, "a&b") == 0 && hidden && strcmp(hidden, "") == 0 &&
            htmltext_tag_has_token(t, "class", "gmail_quote") &&
            htmltext_tag_has_token(t, "class", "OTHER") &&
            !htmltext_tag_has_token(t, "class", "gmail") && !htmltext_tag_attr(t, "id"))
            (*ok)++;
    }
    return HTMLTEXT_KEEP;
}

static void tag_attributes(void **state)
{
    (void)state;
    int ok = 0;
    struct htmltext h;
    const char *s = "<DIV CLASS=\"Gmail_Quote  other\" title='a&amp;b' hidden>x</DIV>";
    htmltext_render(s, strlen(s), inspect, &ok, &h);
    assert_int_equal(ok, 1);
    assert_string_equal(h.text, "x");
    htmltext_free(&h);
}

static void roles_render(void **state)
{
    (void)state;
    int calls = 0;
    struct htmltext h;
    const char *s = "<div>new text</div><div class=drop>gone <b>too</b></div>"
                    "<div class=mark>On Monday, X wrote:</div>"
                    "<blockquote type=cite>quoted<br><br>more<blockquote type=cite>deeper</blockquote></blockquote>"
                    "<div>answer</div><div id=cut><b>From:</b> X<br>Sent: today</div><div>history</div>";
    htmltext_render(s, strlen(s), roles, &calls, &h);
    assert_string_equal(h.text, "new text\nOn Monday, X wrote:\n\n> quoted\n>\n> more\n>\n> > deeper\n\nanswer");
    assert_true(calls > 0);
    assert_int_equal(h.mark_count, 1);
    assert_memory_equal(h.text + h.marks[0].start, "On Monday, X wrote:", 19);
    assert_true(h.marks[0].end >= h.marks[0].start + 19);
    assert_true(h.cut);
    assert_non_null(h.cut_anchor);
    assert_string_equal(h.cut_anchor, "From: X\nSent: today\nhistory");
    assert_false(h.truncated);
    htmltext_free(&h);

    /* no cut: no anchor; a cut with nothing after it: no anchor either */
    htmltext_render("<p>a</p>", 8, roles, &calls, &h);
    assert_false(h.cut);
    assert_null(h.cut_anchor);
    htmltext_free(&h);
    htmltext_render("a<div id=cut></div>", 19, roles, &calls, &h);
    assert_true(h.cut);
    assert_null(h.cut_anchor);
    assert_string_equal(h.text, "a");
    htmltext_free(&h);

    /* the classifier is not asked about what is inside a dropped element */
    calls = 0;
    htmltext_render("<div class=drop><p><b>x</b></p></div>", 37, roles, &calls, &h);
    assert_int_equal(calls, 1);
    assert_string_equal(h.text, "");
    htmltext_free(&h);
}

/* ---- limits ----------------------------------------------------------------------- */

static void limits(void **state)
{
    (void)state;
    struct htmltext h;
    /* a tag longer than HTMLTEXT_TAG_MAX is text */
    GString *g = g_string_new("<div title=\"");
    for (int i = 0; i < HTMLTEXT_TAG_MAX; i++)
        g_string_append_c(g, 'x');
    g_string_append(g, "\">t</div>");
    htmltext_render(g->str, g->len, NULL, NULL, &h);
    assert_memory_equal(h.text, "<div title=\"xxx", 15);
    htmltext_free(&h);
    /* nesting deeper than HTMLTEXT_DEPTH_MAX renders, without roles below */
    g_string_truncate(g, 0);
    for (int i = 0; i < HTMLTEXT_DEPTH_MAX + 50; i++)
        g_string_append(g, "<span>");
    g_string_append(g, "deep");
    int calls = 0;
    htmltext_render(g->str, g->len, roles, &calls, &h);
    assert_string_equal(h.text, "deep");
    assert_true(h.truncated);
    assert_int_equal(calls, HTMLTEXT_DEPTH_MAX);
    htmltext_free(&h);
    /* quote prefixes stop at HTMLTEXT_QUOTE_MAX levels */
    g_string_truncate(g, 0);
    for (int i = 0; i < HTMLTEXT_QUOTE_MAX + 4; i++)
        g_string_append(g, "<blockquote type=cite>");
    g_string_append(g, "q");
    htmltext_render(g->str, g->len, roles, &calls, &h);
    GString *want = g_string_new(NULL);
    for (int i = 0; i < HTMLTEXT_QUOTE_MAX; i++)
        g_string_append(want, "> ");
    g_string_append_c(want, 'q');
    assert_string_equal(h.text, want->str);
    g_string_free(want, TRUE);
    htmltext_free(&h);
    /* input beyond HTMLTEXT_INPUT_MAX is not read */
    g_string_truncate(g, 0);
    while (g->len < HTMLTEXT_INPUT_MAX)
        g_string_append(g, "<p>abcdefgh</p>");
    g_string_append(g, "<p>END</p>");
    htmltext_render(g->str, g->len, NULL, NULL, &h);
    assert_true(h.truncated);
    assert_null(strstr(h.text, "END"));
    assert_true(h.len <= HTMLTEXT_OUTPUT_MAX);
    htmltext_free(&h);
    /* output beyond HTMLTEXT_OUTPUT_MAX stops: quote prefixes expand */
    g_string_truncate(g, 0);
    for (int i = 0; i < HTMLTEXT_QUOTE_MAX; i++)
        g_string_append(g, "<blockquote type=cite>");
    while (g->len < HTMLTEXT_INPUT_MAX - 16)
        g_string_append(g, "&#x1F600;<br>");
    htmltext_render(g->str, g->len, roles, &calls, &h);
    assert_true(h.truncated);
    assert_true(h.len <= HTMLTEXT_OUTPUT_MAX);
    assert_true(h.len > HTMLTEXT_OUTPUT_MAX - 64);
    assert_true(g_utf8_validate(h.text, (gssize)h.len, NULL));
    htmltext_free(&h);
    g_string_free(g, TRUE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blocks_and_lines),
        cmocka_unit_test(lists_tables),
        cmocka_unit_test(references),
        cmocka_unit_test(tokenizer_edges),
        cmocka_unit_test(tag_attributes),
        cmocka_unit_test(roles_render),
        cmocka_unit_test(limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
