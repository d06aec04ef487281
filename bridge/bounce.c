/* bounce — delivery status notifications; see include/bounce.h. */
#include "bounce.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <glib.h>

#include "htmltext.h"

#define BOUNCE_CHUNK 4096      /* read size while taking a part's bytes */
#define BOUNCE_LINES_MAX 20000 /* lines of text looked at */

/* ---- small string helpers -------------------------------------------------------------- */

/* Copies s[0..n) into dst (BOUNCE_FIELD_MAX), trimmed, white space runs made
 * one space, cut on a character boundary. */
static void set(char *dst, const char *s, size_t n)
{
    size_t o = 0;
    bool sp = false;
    for (size_t i = 0; i < n && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            sp = o > 0;
            continue;
        }
        if (sp && o + 1 < BOUNCE_FIELD_MAX)
            dst[o++] = ' ';
        sp = false;
        if (o + 1 >= BOUNCE_FIELD_MAX)
            break;
        dst[o++] = (char)c;
    }
    if (o + 1 >= BOUNCE_FIELD_MAX) {
        /* drop a last character left incomplete */
        size_t i = o;
        while (i > 0 && ((unsigned char)dst[i - 1] & 0xC0) == 0x80)
            i--;
        if (i > 0 && ((unsigned char)dst[i - 1] & 0xC0) == 0xC0)
            o = i - 1;
    }
    dst[o] = '\0';
}

static void set_if_empty(char *dst, const char *s, size_t n)
{
    if (!dst[0])
        set(dst, s, n);
}

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* s begins with prefix (ASCII case-insensitively). */
static bool starts(const char *s, const char *prefix)
{
    return g_ascii_strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* An ASCII case-insensitive strstr. */
static const char *find_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; *s; s++)
        if (g_ascii_strncasecmp(s, needle, n) == 0)
            return s;
    return NULL;
}

/* The first RFC 3463 enhanced status code ("5.1.1") in s, into out. */
static bool find_status(const char *s, char *out)
{
    for (const char *p = s; *p; p++) {
        if (*p != '2' && *p != '4' && *p != '5')
            continue;
        if (p > s && (g_ascii_isdigit(p[-1]) || p[-1] == '.'))
            continue;
        const char *q = p + 1;
        int groups = 0;
        while (groups < 2 && *q == '.') {
            const char *d = ++q;
            while (g_ascii_isdigit(*q) && q - d < 3)
                q++;
            if (q == d)
                break;
            groups++;
        }
        if (groups == 2 && !g_ascii_isdigit(*q) && !(*q == '.' && g_ascii_isdigit(q[1]))) {
            set(out, p, (size_t)(q - p));
            return true;
        }
    }
    return false;
}

/* The first address of a line: inside <...>, else a word holding '@'. */
static bool find_address(const char *line, char *out)
{
    const char *lt = strchr(line, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt && memchr(lt, '@', (size_t)(gt - lt))) {
        set(out, lt + 1, (size_t)(gt - lt - 1));
        return true;
    }
    const char *at = strchr(line, '@');
    if (!at)
        return false;
    const char *a = at, *b = at;
    while (a > line && !strchr(" \t<>()[],;:'\"", a[-1]))
        a--;
    while (*b && !strchr(" \t<>()[],;:'\"", *b))
        b++;
    if (a == at || b == at + 1)
        return false;
    set(out, a, (size_t)(b - a));
    return true;
}

/* A Message-ID value without its angle brackets. */
static void set_message_id(char *dst, const char *v)
{
    const char *lt = strchr(v, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt)
        set(dst, lt + 1, (size_t)(gt - lt - 1));
    else
        set(dst, v, strlen(v));
}

/* ---- RFC 3464 fields -------------------------------------------------------------------- */

struct field {
    const char *name;
    GString *value;
};

/* "type; value" without its type (rfc822;, dns;, smtp;). */
static const char *untyped(const char *v)
{
    const char *semi = strchr(v, ';');
    return semi ? skip_ws(semi + 1) : skip_ws(v);
}

/* The blocks of a delivery-status body: header-style fields, folded lines
 * joined, blocks split at empty lines.  Each block is a GPtrArray of
 * "Name: value" strings. */
static GPtrArray *status_blocks(const char *body, size_t len)
{
    GPtrArray *blocks = g_ptr_array_new_with_free_func((GDestroyNotify)g_ptr_array_unref);
    GPtrArray *cur = NULL;
    const char *p = body, *end = body + len;
    while (p < end && blocks->len <= BOUNCE_RECIPIENTS_MAX + 1) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r')
            n--;
        bool blank = true;
        for (size_t i = 0; i < n; i++)
            if (p[i] != ' ' && p[i] != '\t')
                blank = false;
        if (blank) {
            cur = NULL;
        } else if ((p[0] == ' ' || p[0] == '\t') && cur && cur->len) {
            char *last = g_ptr_array_index(cur, cur->len - 1);
            char *joined = g_strdup_printf("%s %.*s", last, (int)n, p);
            g_free(last);
            cur->pdata[cur->len - 1] = joined;
        } else {
            if (!cur) {
                cur = g_ptr_array_new_with_free_func(g_free);
                g_ptr_array_add(blocks, cur);
            }
            g_ptr_array_add(cur, g_strndup(p, n));
        }
        p = nl ? nl + 1 : end;
    }
    return blocks;
}

/* The value of field `name` in a block, or NULL. */
static const char *field(GPtrArray *block, const char *name)
{
    size_t n = strlen(name);
    for (unsigned i = 0; i < block->len; i++) {
        const char *f = g_ptr_array_index(block, i);
        if (g_ascii_strncasecmp(f, name, n) == 0 && f[n] == ':')
            return skip_ws(f + n + 1);
    }
    return NULL;
}

int bounce_parse_status(const char *body, size_t len, struct bounce *out)
{
    if (!body)
        return 0;
    if (len > BOUNCE_STATUS_MAX)
        len = BOUNCE_STATUS_MAX;
    GPtrArray *blocks = status_blocks(body, len);
    int recipients = 0;
    GPtrArray *pick = NULL;
    int pick_rank = 3; /* failed 0, delayed 1, other 2 */
    for (unsigned b = 0; b < blocks->len; b++) {
        GPtrArray *block = g_ptr_array_index(blocks, b);
        const char *mta = field(block, "Reporting-MTA");
        if (mta)
            set_if_empty(out->reporting_mta, untyped(mta), strlen(untyped(mta)));
        if (!field(block, "Final-Recipient") && !field(block, "Original-Recipient"))
            continue;
        if (recipients++ >= BOUNCE_RECIPIENTS_MAX)
            break;
        const char *action = field(block, "Action");
        int rank = !action ? 2 : starts(action, "failed") ? 0 : starts(action, "delayed") ? 1 : 2;
        if (rank < pick_rank) {
            pick = block;
            pick_rank = rank;
        }
    }
    if (pick) {
        const char *r = field(pick, "Final-Recipient");
        if (!r)
            r = field(pick, "Original-Recipient");
        set_if_empty(out->recipient, untyped(r), strlen(untyped(r)));
        const char *action = field(pick, "Action");
        if (action && !out->action[0]) {
            char *low = g_ascii_strdown(action, -1);
            const char *sp = strpbrk(low, " \t(;");
            set(out->action, low, sp ? (size_t)(sp - low) : strlen(low));
            g_free(low);
        }
        const char *status = field(pick, "Status");
        if (status && !out->status[0])
            find_status(status, out->status);
        const char *diag = field(pick, "Diagnostic-Code");
        if (diag)
            set_if_empty(out->diagnostic, untyped(diag), strlen(untyped(diag)));
    }
    g_ptr_array_unref(blocks);
    return recipients;
}

/* ---- the text formats -------------------------------------------------------------------- */

struct lines {
    gchar **v;
    size_t n;
};

static struct lines split_lines(const char *text, size_t len)
{
    struct lines l;
    char *t = g_strndup(text, len > BOUNCE_TEXT_MAX ? BOUNCE_TEXT_MAX : len);
    l.v = g_strsplit(t, "\n", BOUNCE_LINES_MAX);
    g_free(t);
    l.n = g_strv_length(l.v);
    for (size_t i = 0; i < l.n; i++)
        g_strchomp(l.v[i]);
    return l;
}

static bool blank(const char *s)
{
    return *skip_ws(s) == '\0';
}

/* Lines from..(blank) joined into dst (if empty); returns the index after. */
static size_t join_until_blank(const struct lines *l, size_t from, char *dst)
{
    GString *g = g_string_new(NULL);
    size_t i = from;
    for (; i < l->n && !blank(l->v[i]); i++) {
        if (g->len)
            g_string_append_c(g, ' ');
        g_string_append(g, skip_ws(l->v[i]));
    }
    set_if_empty(dst, g->str, g->len);
    g_string_free(g, TRUE);
    return i;
}

static size_t next_nonblank(const struct lines *l, size_t i)
{
    while (i < l->n && blank(l->v[i]))
        i++;
    return i;
}

/* The host of "... at host HOST." / "... program at HOST." */
static void host_after(const char *s, const char *marker, char *dst)
{
    const char *m = find_ci(s, marker);
    if (!m)
        return;
    const char *h = skip_ws(m + strlen(marker));
    const char *e = h;
    while (*e && *e != ' ' && *e != '\t')
        e++;
    while (e > h && (e[-1] == '.' || e[-1] == ','))
        e--;
    set_if_empty(dst, h, (size_t)(e - h));
}

/* "<rcpt>: diagnostic" (Postfix) or "<rcpt>:" followed by lines (qmail). */
static bool angle_recipient(const struct lines *l, size_t i, struct bounce *b)
{
    const char *s = l->v[i];
    if (s[0] != '<')
        return false;
    const char *gt = strchr(s, '>');
    if (!gt || !memchr(s, '@', (size_t)(gt - s)))
        return false;
    const char *after = gt + 1;
    if (starts(skip_ws(after), "(expanded from")) {
        const char *close = strchr(after, ')');
        if (!close)
            return false;
        after = close + 1;
    }
    if (*after != ':')
        return false;
    set_if_empty(b->recipient, s + 1, (size_t)(gt - s - 1));
    GString *g = g_string_new(skip_ws(after + 1));
    for (size_t k = i + 1; k < l->n && !blank(l->v[k]); k++) {
        if (g->len)
            g_string_append_c(g, ' ');
        g_string_append(g, skip_ws(l->v[k]));
    }
    set_if_empty(b->diagnostic, g->str, g->len);
    g_string_free(g, TRUE);
    return true;
}

static bool is_copy_marker(const char *s)
{
    static const char *const markers[] = {
        "--- Below this line is a copy of the message", "--- Enclosed is a copy of the message",
        "------ This is a copy of the message", "----- Original message -----",
        "----- Unsent message follows -----", "----- Message header follows -----",
        "----- Original message follows -----", "Original message headers:",
        "----- The header of the original message is following. -----",
    };
    s = skip_ws(s);
    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
        if (starts(s, markers[i]))
            return true;
    return false;
}

/* What the scan of a report's text has found so far. */
struct scan {
    bool format;  /* a known MTA's wording was seen */
    bool delayed; /* it says "not yet", not "failed" */
};

/* Exim and Sendmail: a heading, then the address on the next non-blank
 * line.  true when line i is such a heading. */
static bool exim_sendmail(const struct lines *l, size_t i, struct bounce *b, struct scan *sc)
{
    const char *s = l->v[i];
    if (find_ci(s, "The following address(es) failed:") ||
        find_ci(s, "The address to which the message has not yet been delivered is:") ||
        find_ci(s, "The addresses to which the message has not yet been delivered are:")) {
        if (find_ci(s, "not yet been delivered"))
            sc->delayed = true;
        size_t j = next_nonblank(l, i + 1);
        if (j < l->n && find_address(l->v[j], b->recipient)) {
            join_until_blank(l, j + 1, b->diagnostic);
            sc->format = true;
        }
        return true;
    }
    if (find_ci(s, "----- The following addresses had permanent fatal errors -----") ||
        find_ci(s, "----- The following addresses had transient non-fatal errors -----")) {
        if (find_ci(s, "transient"))
            sc->delayed = true;
        size_t j = next_nonblank(l, i + 1);
        if (j < l->n && find_address(l->v[j], b->recipient)) {
            sc->format = true;
            const char *reason = j + 1 < l->n ? find_ci(l->v[j + 1], "(reason:") : NULL;
            if (reason) {
                const char *r = skip_ws(reason + 8);
                const char *close = strrchr(r, ')');
                set_if_empty(b->diagnostic, r, close ? (size_t)(close - r) : strlen(r));
            }
        }
        return true;
    }
    return false;
}

/* Exchange and Office 365, in the languages seen.  true when line i is one
 * of their lines. */
static bool exchange(const struct lines *l, size_t i, struct bounce *b, struct scan *sc)
{
    const char *s = l->v[i], *t = skip_ws(s);
    if (find_ci(s, "Delivery has failed to these recipients or groups:") ||
        find_ci(s, "Die Zustellung an folgende Empf") ||
        find_ci(s, "La remise aux destinataires ou groupes suivants a")) {
        size_t j = next_nonblank(l, i + 1);
        if (j < l->n && find_address(l->v[j], b->recipient))
            sc->format = true;
        return true;
    }
    if (starts(t, "Generating server:")) {
        set_if_empty(b->reporting_mta, skip_ws(t + 18), strlen(skip_ws(t + 18)));
        sc->format = true;
        return true;
    }
    if (t[0] == '#' && g_ascii_isdigit(t[1])) {
        const char *end = strstr(t, "##");
        set_if_empty(b->diagnostic, t + 1, end ? (size_t)(end - t - 1) : strlen(t + 1));
        return true;
    }
    const char *rsr = find_ci(s, "Remote Server returned '");
    if (rsr) {
        const char *v = rsr + 24;
        const char *q = strrchr(v, '\'');
        set_if_empty(b->diagnostic, v, q && q > v ? (size_t)(q - v) : strlen(v));
        sc->format = true;
        return true;
    }
    const char *ymw = find_ci(s, "Your message to ");
    if (ymw && find_ci(ymw, "couldn't be delivered")) {
        find_address(ymw, b->recipient);
        sc->format = true;
        return true;
    }
    ymw = find_ci(s, "Your message wasn't delivered to ");
    if (ymw) {
        find_address(ymw, b->recipient);
        sc->format = true;
        return true;
    }
    return false;
}

/* Gmail.  true when line i is one of its headings. */
static bool gmail(const struct lines *l, size_t i, struct bounce *b, struct scan *sc)
{
    const char *s = l->v[i];
    if (find_ci(s, "Delivery to the following recipient failed permanently:") ||
        find_ci(s, "Delivery to the following recipient has been delayed:") ||
        find_ci(s, "Delivery to the following recipients failed")) {
        if (find_ci(s, "delayed"))
            sc->delayed = true;
        size_t j = next_nonblank(l, i + 1);
        if (j < l->n && find_address(l->v[j], b->recipient))
            sc->format = true;
        return true;
    }
    if (find_ci(s, "Technical details of permanent failure:") ||
        find_ci(s, "Technical details of temporary failure:")) {
        size_t j = next_nonblank(l, i + 1);
        join_until_blank(l, j, b->diagnostic);
        sc->format = true;
        return true;
    }
    return false;
}

/* A status code from the diagnostic, else from the text before any
 * returned copy. */
static void status_fallback(const struct lines *l, struct bounce *b)
{
    if (!b->status[0] && b->diagnostic[0])
        find_status(b->diagnostic, b->status);
    if (b->status[0])
        return;
    GString *g = g_string_new(NULL);
    for (size_t i = 0; i < l->n && !is_copy_marker(l->v[i]); i++)
        g_string_append_printf(g, "%s\n", l->v[i]);
    find_status(g->str, b->status);
    g_string_free(g, TRUE);
}

int bounce_parse_text(const char *text, size_t len, struct bounce *b)
{
    if (!text)
        return 0;
    struct lines l = split_lines(text, len);
    struct scan sc = {false, false};
    bool copy = false;
    for (size_t i = 0; i < l.n; i++) {
        const char *s = l.v[i];
        const char *t = skip_ws(s);
        if (copy) {
            /* the returned message's header, inline */
            if (!b->original_message_id[0] && starts(t, "Message-ID:"))
                set_message_id(b->original_message_id, t + 11);
            continue;
        }
        if (is_copy_marker(s)) {
            copy = true;
            continue;
        }
        /* qmail */
        if (find_ci(s, "This is the qmail-send program at")) {
            host_after(s, "qmail-send program at", b->reporting_mta);
            sc.format = true;
        }
        /* Postfix */
        if (find_ci(s, "This is the mail system at host") ||
            find_ci(s, "This is the Postfix program at host")) {
            host_after(s, "at host", b->reporting_mta);
            sc.format = true;
        }
        if (angle_recipient(&l, i, b)) {
            sc.format = true;
            continue;
        }
        if (exim_sendmail(&l, i, b, &sc) || exchange(&l, i, b, &sc) || gmail(&l, i, b, &sc))
            continue;
    }
    status_fallback(&l, b);
    if (sc.format && !b->action[0])
        g_strlcpy(b->action, sc.delayed ? "delayed" : "failed", sizeof b->action);
    g_strfreev(l.v);
    return sc.format || b->recipient[0] || b->status[0] ? 1 : 0;
}

/* ---- the MIME structure ------------------------------------------------------------------ */

/* The first BOUNCE_STATUS_MAX bytes of a leaf part, transfer-decoded. */
static GByteArray *part_bytes(GMimeObject *obj)
{
    GByteArray *out = g_byte_array_new();
    if (!GMIME_IS_PART(obj))
        return out;
    GMimeDataWrapper *w = g_mime_part_get_content(GMIME_PART(obj));
    GMimeStream *raw = w ? g_mime_data_wrapper_get_stream(w) : NULL;
    if (!raw || g_mime_stream_reset(raw) != 0)
        return out;
    GMimeStream *f = g_mime_stream_filter_new(raw);
    GMimeContentEncoding enc = g_mime_data_wrapper_get_encoding(w);
    if (enc == GMIME_CONTENT_ENCODING_BASE64 || enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
        enc == GMIME_CONTENT_ENCODING_UUENCODE) {
        GMimeFilter *dec = g_mime_filter_basic_new(enc, FALSE);
        g_mime_stream_filter_add(GMIME_STREAM_FILTER(f), dec);
        g_object_unref(dec);
    }
    char buf[BOUNCE_CHUNK];
    while (out->len < BOUNCE_STATUS_MAX) {
        ssize_t n = g_mime_stream_read(f, buf, sizeof buf);
        if (n <= 0)
            break;
        size_t take = (size_t)n;
        if (take > BOUNCE_STATUS_MAX - out->len)
            take = BOUNCE_STATUS_MAX - out->len;
        g_byte_array_append(out, (const guint8 *)buf, (guint)take);
    }
    g_object_unref(f);
    return out;
}

static bool is_type(GMimeObject *obj, const char *type, const char *sub)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    return ct && g_mime_content_type_is_type(ct, type, sub);
}

/* The delivery-status report inside obj (depth levels of multiparts). */
static GMimeMultipart *find_report(GMimeObject *obj, int depth)
{
    if (!obj || !GMIME_IS_MULTIPART(obj) || depth > BOUNCE_DEPTH_MAX)
        return NULL;
    if (is_type(obj, "multipart", "report")) {
        const char *rt = g_mime_object_get_content_type_parameter(obj, "report-type");
        if (rt && (g_ascii_strcasecmp(rt, "delivery-status") == 0 ||
                   g_ascii_strcasecmp(rt, "global-delivery-status") == 0))
            return GMIME_MULTIPART(obj);
    }
    GMimeMultipart *mp = GMIME_MULTIPART(obj);
    int n = g_mime_multipart_get_count(mp);
    for (int i = 0; i < n; i++) {
        GMimeMultipart *r = find_report(g_mime_multipart_get_part(mp, i), depth + 1);
        if (r)
            return r;
    }
    return NULL;
}

/* The Message-ID of a returned message or of returned headers. */
static void returned_id(GMimeObject *obj, struct bounce *b)
{
    if (b->original_message_id[0])
        return;
    if (GMIME_IS_MESSAGE_PART(obj)) {
        GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
        const char *id = inner ? g_mime_message_get_message_id(inner) : NULL;
        if (id)
            set(b->original_message_id, id, strlen(id));
        return;
    }
    if (is_type(obj, "text", "rfc822-headers") || is_type(obj, "message", "global-headers")) {
        GByteArray *bytes = part_bytes(obj);
        GPtrArray *blocks = status_blocks((const char *)bytes->data, bytes->len);
        const char *id = blocks->len ? field(g_ptr_array_index(blocks, 0), "Message-ID") : NULL;
        if (id)
            set_message_id(b->original_message_id, id);
        g_ptr_array_unref(blocks);
        g_byte_array_free(bytes, TRUE);
    }
}

/* A returned message attached anywhere in obj (non-standard bounces). */
static void attached_id(GMimeObject *obj, int depth, struct bounce *b)
{
    if (!obj || depth > BOUNCE_DEPTH_MAX || b->original_message_id[0])
        return;
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n; i++)
            attached_id(g_mime_multipart_get_part(mp, i), depth + 1, b);
        return;
    }
    returned_id(obj, b);
}

/* From a mailer daemon, or with a bounce's subject. */
static bool looks_like_bounce(GMimeMessage *msg, char *from_domain, size_t size)
{
    InternetAddressList *from = g_mime_message_get_from(msg);
    bool daemon = false;
    from_domain[0] = '\0';
    if (from && internet_address_list_length(from) > 0) {
        InternetAddress *ia = internet_address_list_get_address(from, 0);
        const char *name = internet_address_get_name(ia);
        if (name && (find_ci(name, "Mail Delivery System") || find_ci(name, "Mail Delivery Subsystem") ||
                     find_ci(name, "Mail Delivery Service")))
            daemon = true;
        if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
            const char *a = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
            const char *at = a ? strrchr(a, '@') : NULL;
            if (a && (starts(a, "mailer-daemon@") || starts(a, "postmaster@") || starts(a, "mail-daemon@") ||
                      starts(a, "mailerdaemon@") || starts(a, "microsoftexchange")))
                daemon = true;
            if (at)
                g_strlcpy(from_domain, at + 1, size);
        }
    }
    const char *subject = g_mime_message_get_subject(msg);
    static const char *const subjects[] = {
        "Undelivered Mail Returned to Sender", "Undeliverable:", "Undeliverable mail", "Mail delivery failed",
        "Returned mail:", "failure notice", "Delivery Status Notification", "Delivery Failure",
        "Mail System Error", "Undelivered Mail", "Warning: could not send message", "Unzustellbar:",
        "Non remis :", "Non remis:", "No se puede entregar:", "Non recapitabile:", "Não é possível entregar:",
        "Onbestelbaar:", "Kan inte levereras:", "Kunne ikke leveres:", "Ei voitu toimittaa:",
        "Niedostarczalne:", "配信不能:", "无法投递:",
    };
    for (size_t i = 0; subject && i < sizeof subjects / sizeof subjects[0]; i++)
        if (starts(skip_ws(subject), subjects[i]))
            return true;
    return daemon || g_mime_object_get_header(GMIME_OBJECT(msg), "X-Failed-Recipients") != NULL;
}

static cJSON *field_json(const char *v)
{
    if (!v[0])
        return cJSON_CreateNull();
    char *s = g_utf8_make_valid(v, -1);
    cJSON *j = cJSON_CreateString(s);
    g_free(s);
    return j;
}

static cJSON *to_json(const struct bounce *b)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    const char *keys[] = {"recipient", "action", "status", "diagnostic", "reporting_mta", "original_message_id"};
    const char *vals[] = {b->recipient, b->action, b->status, b->diagnostic, b->reporting_mta, b->original_message_id};
    for (size_t i = 0; i < 6; i++) {
        cJSON *j = field_json(vals[i]);
        if (!j || !cJSON_AddItemToObject(o, keys[i], j)) {
            cJSON_Delete(j);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

cJSON *bounce_json(GMimeMessage *msg, const char *text, const char *html)
{
    if (!msg)
        return cJSON_CreateNull();
    struct bounce *b = g_new0(struct bounce, 1);
    char *html_text = NULL;
    if (!text && html) {
        struct htmltext h;
        htmltext_render(html, strnlen(html, BOUNCE_TEXT_MAX), NULL, NULL, &h);
        html_text = h.text;
        h.text = NULL;
        htmltext_free(&h);
        text = html_text;
    }
    bool is_bounce = false;
    GMimeObject *top = g_mime_message_get_mime_part(msg);
    GMimeMultipart *report = find_report(top, 0);
    if (report) {
        is_bounce = true;
        int n = g_mime_multipart_get_count(report);
        for (int i = 0; i < n; i++) {
            GMimeObject *part = g_mime_multipart_get_part(report, i);
            if (is_type(part, "message", "delivery-status") ||
                is_type(part, "message", "global-delivery-status")) {
                GByteArray *bytes = part_bytes(part);
                bounce_parse_status((const char *)bytes->data, bytes->len, b);
                g_byte_array_free(bytes, TRUE);
            } else {
                returned_id(part, b);
            }
        }
        if (text)
            bounce_parse_text(text, strlen(text), b);
    } else {
        char from_domain[256];
        if (looks_like_bounce(msg, from_domain, sizeof from_domain)) {
            const char *failed = g_mime_object_get_header(GMIME_OBJECT(msg), "X-Failed-Recipients");
            if (failed) {
                const char *comma = strchr(failed, ',');
                set(b->recipient, failed, comma ? (size_t)(comma - failed) : strlen(failed));
            }
            is_bounce = text && bounce_parse_text(text, strlen(text), b);
            if (is_bounce) {
                set_if_empty(b->reporting_mta, from_domain, strlen(from_domain));
                attached_id(top, 0, b);
            }
        }
    }
    cJSON *out = is_bounce ? to_json(b) : cJSON_CreateNull();
    g_free(b);
    g_free(html_text);
    return out;
}
