/* libFuzzer target: the new text of a reply (reply_text) and the HTML
 * renderer under it (htmltext_render), over arbitrary input.  The first byte
 * says what the rest is: text only, HTML only, or both (split at the first
 * NUL).  Must not crash or leak; the results must be valid UTF-8 within
 * their limits, and the renderer's marks inside its text. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "htmltext.h"
#include "reply.h"

static enum htmltext_role every_role(void *ctx, const struct htmltext_tag *t)
{
    (void)ctx;
    const char *c = htmltext_tag_attr(t, "class");
    size_t n = strlen(htmltext_tag_name(t)) + (c ? strlen(c) : 0);
    return (enum htmltext_role)(n % 5);
}

static void check_text(const char *s)
{
    if (!s || !g_utf8_validate(s, -1, NULL))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 3;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    const char *nul = memchr(in, '\0', n);
    size_t first = nul ? (size_t)(nul - in) : n;
    char *r;
    if (mode == 0)
        r = reply_text(in, n, NULL, 0);
    else if (mode == 1)
        r = reply_text(NULL, 0, in, n);
    else
        r = reply_text(in, first, nul ? nul + 1 : "", nul ? n - first - 1 : 0);
    if (r) {
        check_text(r);
        if (strlen(r) > 4 * (size_t)REPLY_INPUT_MAX)
            abort();
    }
    g_free(r);

    struct htmltext h;
    htmltext_render(in, n, every_role, NULL, &h);
    check_text(h.text);
    if (h.len != strlen(h.text) || h.len > HTMLTEXT_OUTPUT_MAX || h.mark_count > HTMLTEXT_MARKS_MAX)
        abort();
    for (size_t i = 0; i < h.mark_count; i++)
        if (h.marks[i].start > h.marks[i].end || h.marks[i].end > h.len)
            abort();
    if (h.cut_anchor) {
        check_text(h.cut_anchor);
        if (strlen(h.cut_anchor) > HTMLTEXT_ANCHOR_MAX)
            abort();
    }
    htmltext_free(&h);
    return 0;
}
