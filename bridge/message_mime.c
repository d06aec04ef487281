/* message_mime — the MIME side of a message: GMime set-up, the parse context,
 * decoding parts, text bodies, attachments, the MIME tree; see message_impl.h.
 * Part of the message module: its tests are in tests/unit/test_message.c. */
#include "message_impl.h"
#include "message.h"

#include "links.h"

#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <unistd.h>

#include <gmime/gmime.h>
#include <openssl/evp.h>

#include "authres.h"
#include "bounce.h"
#include "clock.h"
#include "codec.h"
#include "mailclass.h"
#include "reply.h"
#include "subaddr.h"


/* ---- GMime, once ----------------------------------------------------------- */

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;
static bool gmime_ready;

static void gmime_start(void)
{
    g_mime_init();
    gmime_ready = true;
}

void msg_gmime_ensure(void)
{
    pthread_once(&gmime_once, gmime_start);
}

void message_global_cleanup(void)
{
    if (gmime_ready) {
        g_mime_shutdown();
        gmime_ready = false;
    }
}

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Appends s as valid UTF-8 (as GLib validates it: no overlong forms,
 * surrogates, code points past U+10FFFF or NULs): each invalid byte becomes
 * U+FFFD.  Returns the number of replacements. */
size_t msg_utf8_append(GString *out, const char *s, size_t n)
{
    size_t bad = 0;
    while (n > 0) {
        const gchar *end;
        if (g_utf8_validate_len(s, n, &end)) {
            g_string_append_len(out, s, (gssize)n);
            break;
        }
        size_t k = (size_t)(end - s);
        g_string_append_len(out, s, (gssize)k);
        g_string_append(out, "\xef\xbf\xbd");
        bad++;
        s += k + 1;
        n -= k + 1;
    }
    return bad;
}

/* Cuts a valid UTF-8 string to at most max bytes, on a character boundary. */
void msg_utf8_truncate(GString *s, size_t max)
{
    if (s->len <= max)
        return;
    size_t n = max;
    while (n > 0 && ((unsigned char)s->str[n] & 0xc0) == 0x80)
        n--;
    g_string_truncate(s, n);
}

/* ---- the parse context -------------------------------------------------------- */

static const struct message_opts no_opts;


/* Adds one parse error (the formatted text is made valid UTF-8). */
void msg_perr(struct ctx *c, const char *fmt, ...)
{
    if (!c->errors)
        return;
    if (c->nerrors >= MESSAGE_PARSE_ERRORS_MAX) {
        if (!c->errors_capped) {
            c->errors_capped = true;
            cJSON *s = cJSON_CreateString("more parse errors were left out");
            if (!s || !cJSON_AddItemToArray(c->errors, s)) {
                cJSON_Delete(s);
                c->oom = true;
            }
        }
        return;
    }
    char buf[MESSAGE_ERROR_LEN_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
    GString *g = g_string_sized_new(len + 8);
    msg_utf8_append(g, buf, len);
    if ((size_t)n >= sizeof buf)
        g_string_append(g, "...");
    cJSON *s = cJSON_CreateString(g->str);
    g_string_free(g, TRUE);
    if (!s || !cJSON_AddItemToArray(c->errors, s)) {
        cJSON_Delete(s);
        c->oom = true;
        return;
    }
    c->nerrors++;
}

/* A short quotation of message text for a parse error: control characters
 * become '?', at most MESSAGE_ERROR_ITEM_MAX bytes. */
void msg_quote_item(char *dst, size_t size, const char *s)
{
    err_sanitize(dst, size < MESSAGE_ERROR_ITEM_MAX ? size : MESSAGE_ERROR_ITEM_MAX, s ? s : "",
                 s ? strlen(s) : 0);
}

cJSON *msg_add(struct ctx *c, cJSON *obj, const char *key, cJSON *item)
{
    if (!item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        c->oom = true;
        return NULL;
    }
    return item;
}

void msg_push(struct ctx *c, cJSON *arr, cJSON *item)
{
    if (!item || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        c->oom = true;
    }
}

/* A JSON string for s (NULL -> null), replacing invalid UTF-8 and noting it. */
cJSON *msg_jstr(struct ctx *c, const char *what, const char *s)
{
    if (!s)
        return cJSON_CreateNull();
    size_t n = strlen(s);
    if (g_utf8_validate_len(s, n, NULL))
        return cJSON_CreateString(s);
    GString *g = g_string_sized_new(n + 16);
    size_t bad = msg_utf8_append(g, s, n);
    msg_perr(c, "%s: %zu invalid UTF-8 byte(s) replaced by U+FFFD", what, bad);
    cJSON *j = cJSON_CreateString(g->str);
    g_string_free(g, TRUE);
    return j;
}

static const char *warning_text(GMimeParserWarning w)
{
    switch (w) {
    case GMIME_WARN_DUPLICATED_HEADER: return "header field repeated";
    case GMIME_WARN_DUPLICATED_PARAMETER: return "parameter repeated";
    case GMIME_WARN_UNENCODED_8BIT_HEADER: return "header with unencoded 8-bit characters";
    case GMIME_WARN_INVALID_CONTENT_TYPE:
        return "invalid Content-Type, taken as application/octet-stream";
    case GMIME_WARN_INVALID_RFC2047_HEADER_VALUE: return "invalid RFC 2047 encoded header value";
    case GMIME_WARN_MALFORMED_MULTIPART: return "malformed multipart (no parts or no end boundary)";
    case GMIME_WARN_TRUNCATED_MESSAGE: return "message truncated";
    case GMIME_WARN_MALFORMED_MESSAGE: return "malformed message";
    case GMIME_CRIT_INVALID_HEADER_NAME: return "invalid header field name";
    case GMIME_CRIT_CONFLICTING_HEADER: return "conflicting header fields";
    case GMIME_CRIT_CONFLICTING_PARAMETER: return "conflicting parameters";
    case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY: return "multipart without boundary";
    case GMIME_WARN_INVALID_PARAMETER: return "invalid header parameter";
    case GMIME_WARN_INVALID_ADDRESS_LIST: return "invalid address list";
    case GMIME_CRIT_NESTING_OVERFLOW: return "MIME nesting too deep";
    case GMIME_WARN_PART_WITHOUT_CONTENT: return "part without content";
    case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT: return "part without headers or content";
    }
    return "parser warning";
}

static void on_warning(gint64 offset, GMimeParserWarning code, const gchar *item, gpointer user)
{
    struct ctx *c = user;
    char q[MESSAGE_ERROR_ITEM_MAX];
    msg_quote_item(q, sizeof q, item);
    char at[32] = "";
    if (offset >= 0)
        snprintf(at, sizeof at, "offset %lld: ", (long long)offset);
    if (q[0])
        msg_perr(c, "%s%s: %s", at, warning_text(code), q);
    else
        msg_perr(c, "%s%s", at, warning_text(code));
}

int msg_ctx_init(struct ctx *c, const struct message_opts *o, bool collect)
{
    memset(c, 0, sizeof *c);
    c->o = o ? o : &no_opts;
    if (collect) {
        c->errors = cJSON_CreateArray();
        if (!c->errors)
            return -1;
    }
    c->popts = g_mime_parser_options_new();
    g_mime_parser_options_set_warning_callback(c->popts, on_warning, c);
    /* 8-bit header text: UTF-8 if it is valid, else windows-1252 */
    const char *fallback[] = {"UTF-8", "windows-1252", NULL};
    g_mime_parser_options_set_fallback_charsets(c->popts, fallback);
    return 0;
}

void msg_ctx_done(struct ctx *c)
{
    if (c->popts)
        g_mime_parser_options_free(c->popts);
    if (c->text)
        g_string_free(c->text, TRUE);
    if (c->html)
        g_string_free(c->html, TRUE);
    cJSON_Delete(c->errors);
    c->popts = NULL;
    c->text = c->html = NULL;
    c->errors = NULL;
}

/* ---- a GMime stream that hands what is written to it to a function ---------- */

typedef struct {
    GMimeStream parent;
    chunk_fn fn;
    void *arg;
    bool failed;
} MessageSinkStream;

typedef struct {
    GMimeStreamClass parent_class;
} MessageSinkStreamClass;

static GType message_sink_stream_get_type(void);
G_DEFINE_TYPE(MessageSinkStream, message_sink_stream, GMIME_TYPE_STREAM)

static ssize_t sink_write(GMimeStream *stream, const char *buf, size_t len)
{
    MessageSinkStream *s = (MessageSinkStream *)stream;
    if (s->failed)
        return -1;
    if (len && s->fn(s->arg, buf, len) != 0) {
        s->failed = true;
        return -1;
    }
    stream->position += (gint64)len;
    return (ssize_t)len;
}

static ssize_t sink_read(GMimeStream *stream, char *buf, size_t len)
{
    (void)stream, (void)buf, (void)len;
    return -1;
}

static int sink_zero(GMimeStream *stream)
{
    (void)stream;
    return 0;
}

static gboolean sink_eos(GMimeStream *stream)
{
    (void)stream;
    return TRUE;
}

static gint64 sink_tell(GMimeStream *stream)
{
    return stream->position;
}

static gint64 sink_seek(GMimeStream *stream, gint64 offset, GMimeSeekWhence whence)
{
    (void)stream, (void)offset, (void)whence;
    return -1;
}

static gint64 sink_length(GMimeStream *stream)
{
    (void)stream;
    return -1;
}

static GMimeStream *sink_substream(GMimeStream *stream, gint64 start, gint64 end)
{
    (void)stream, (void)start, (void)end;
    return NULL;
}

static void message_sink_stream_class_init(MessageSinkStreamClass *klass)
{
    GMimeStreamClass *sc = GMIME_STREAM_CLASS(klass);
    sc->read = sink_read;
    sc->write = sink_write;
    sc->flush = sink_zero;
    sc->close = sink_zero;
    sc->eos = sink_eos;
    sc->reset = sink_zero;
    sc->seek = sink_seek;
    sc->tell = sink_tell;
    sc->length = sink_length;
    sc->substream = sink_substream;
}

static void message_sink_stream_init(MessageSinkStream *s)
{
    s->fn = NULL;
    s->arg = NULL;
    s->failed = false;
}

static GMimeStream *sink_stream_new(chunk_fn fn, void *arg)
{
    MessageSinkStream *s = g_object_new(message_sink_stream_get_type(), NULL);
    g_mime_stream_construct(GMIME_STREAM(s), 0, -1);
    s->fn = fn;
    s->arg = arg;
    return GMIME_STREAM(s);
}

/* ---- decoding a part's content in chunks --------------------------------------- */

static bool b64_char(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

/* Streams the transfer-decoded content of a leaf part to fn.  Returns 0, or
 * -1 when fn asked to stop.  Oddities of the encoding become parse errors. */
static int part_decode(struct ctx *c, GMimePart *part, const char *path, chunk_fn fn, void *arg)
{
    GMimeDataWrapper *w = g_mime_part_get_content(part);
    if (!w)
        return 0;
    GMimeStream *src = g_mime_data_wrapper_get_stream(w);
    if (!src)
        return 0;
    GMimeContentEncoding enc = g_mime_data_wrapper_get_encoding(w);
    bool decode = enc == GMIME_CONTENT_ENCODING_BASE64 ||
                  enc == GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE ||
                  enc == GMIME_CONTENT_ENCODING_UUENCODE;
    GMimeEncoding state;
    if (decode)
        g_mime_encoding_init_decode(&state, enc);
    char *in = g_malloc(MESSAGE_CHUNK);
    char *out = g_malloc(MESSAGE_CHUNK * 2 + 64);
    uint64_t b64_bad = 0, b64_count = 0;
    bool b64_pad = false, b64_after_pad = false;
    int rc = 0;
    if (g_mime_stream_reset(src) != 0) {
        msg_perr(c, "part %s: content could not be read", path);
        goto done;
    }
    while (!g_mime_stream_eos(src)) {
        ssize_t n = g_mime_stream_read(src, in, MESSAGE_CHUNK);
        if (n < 0) {
            if (!g_mime_stream_eos(src))
                msg_perr(c, "part %s: read error in content", path);
            break;
        }
        if (n == 0)
            break;
        if (!decode) {
            if (fn(arg, in, (size_t)n) != 0) {
                rc = -1;
                goto done;
            }
            continue;
        }
        if (enc == GMIME_CONTENT_ENCODING_BASE64) {
            for (ssize_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char)in[i];
                if (b64_char(ch)) {
                    if (b64_pad)
                        b64_after_pad = true;
                    b64_count++;
                } else if (ch == '=') {
                    b64_pad = true;
                } else if (ch != '\r' && ch != '\n' && ch != ' ' && ch != '\t') {
                    b64_bad++;
                }
            }
        }
        size_t m = g_mime_encoding_step(&state, in, (size_t)n, out);
        if (m && fn(arg, out, m) != 0) {
            rc = -1;
            goto done;
        }
    }
    if (decode) {
        size_t m = g_mime_encoding_flush(&state, in, 0, out);
        if (m && fn(arg, out, m) != 0) {
            rc = -1;
            goto done;
        }
    }
    if (b64_bad)
        msg_perr(c, "part %s: %llu invalid base64 character(s) skipped", path,
             (unsigned long long)b64_bad);
    if (b64_count % 4 == 1 || b64_after_pad)
        msg_perr(c, "part %s: base64 content is truncated or malformed", path);
done:
    g_free(in);
    g_free(out);
    return rc;
}

/* ---- text bodies ----------------------------------------------------------------- */

int msg_capped_put(void *arg, const char *buf, size_t len)
{
    struct capped *k = arg;
    size_t room = k->max - k->buf->len;
    if (len > room) {
        k->over = true;
        len = room;
    }
    if (len)
        g_byte_array_append(k->buf, (const guint8 *)buf, (guint)len);
    return 0;
}

/* Converts n bytes from charset cs with iconv into out (valid UTF-8
 * afterwards).  Returns the number of undecodable sequences, or -1 if cs is
 * not known. */
static long convert(GString *out, const char *cs, const char *s, size_t n)
{
    iconv_t cd = iconv_open("UTF-8", cs);
    if (cd == (iconv_t)-1)
        return -1;
    long bad = 0;
    char obuf[4096];
    char *ip = (char *)s;
    size_t ileft = n;
    GString *raw = g_string_sized_new(n + n / 2 + 16);
    for (;;) {
        char *op = obuf;
        size_t oleft = sizeof obuf;
        size_t r = iconv(cd, ileft ? &ip : NULL, ileft ? &ileft : NULL, &op, &oleft);
        int errn = errno;
        g_string_append_len(raw, obuf, (gssize)(sizeof obuf - oleft));
        if (r != (size_t)-1) {
            if (ileft == 0) {
                /* flush a stateful encoding's shift state */
                op = obuf;
                oleft = sizeof obuf;
                iconv(cd, NULL, NULL, &op, &oleft);
                g_string_append_len(raw, obuf, (gssize)(sizeof obuf - oleft));
                break;
            }
            continue;
        }
        if (errn == E2BIG)
            continue;
        /* EILSEQ: skip one byte; EINVAL: incomplete sequence at the end */
        g_string_append(raw, "\xef\xbf\xbd");
        bad++;
        if (errn == EINVAL || ileft <= 1)
            break;
        ip++;
        ileft--;
    }
    iconv_close(cd);
    bad += (long)msg_utf8_append(out, raw->str, raw->len);
    g_string_free(raw, TRUE);
    return bad;
}

static bool charset_is_utf8(const char *cs)
{
    return !g_ascii_strcasecmp(cs, "utf-8") || !g_ascii_strcasecmp(cs, "utf8") ||
           !g_ascii_strcasecmp(cs, "us-ascii") || !g_ascii_strcasecmp(cs, "ascii");
}

/* The decoded bytes of a text part, in charset cs (may be NULL), as UTF-8. */
GString *msg_text_to_utf8(struct ctx *c, const char *path, const char *cs, const char *s,
                             size_t n)
{
    GString *out = g_string_sized_new(n + 16);
    if (!cs || !*cs || charset_is_utf8(cs)) {
        if (g_utf8_validate_len(s, n, NULL)) {
            g_string_append_len(out, s, (gssize)n);
            return out;
        }
        if (cs && *cs && g_ascii_strcasecmp(cs, "us-ascii") && g_ascii_strcasecmp(cs, "ascii")) {
            size_t bad = msg_utf8_append(out, s, n);
            msg_perr(c, "part %s: %zu invalid UTF-8 byte(s) replaced by U+FFFD", path, bad);
            return out;
        }
        /* undeclared (or ASCII declared) 8-bit text: the common real-world case */
        long bad = convert(out, MESSAGE_FALLBACK_CHARSET, s, n);
        msg_perr(c, "part %s: 8-bit text without a charset, read as windows-1252", path);
        if (bad < 0)
            msg_utf8_append(out, s, n);
        return out;
    }
    const char *iname = g_mime_charset_iconv_name(cs);
    long bad = convert(out, iname ? iname : cs, s, n);
    if (bad < 0) {
        char q[MESSAGE_ERROR_ITEM_MAX];
        msg_quote_item(q, sizeof q, cs);
        msg_perr(c, "part %s: unknown charset \"%s\", read as windows-1252", path, q);
        bad = convert(out, MESSAGE_FALLBACK_CHARSET, s, n);
        if (bad < 0)
            msg_utf8_append(out, s, n);
    } else if (bad > 0) {
        char q[MESSAGE_ERROR_ITEM_MAX];
        msg_quote_item(q, sizeof q, cs);
        msg_perr(c, "part %s: %ld byte sequence(s) invalid in charset \"%s\" replaced by U+FFFD",
             path, bad, q);
    }
    return out;
}

static GString *read_text(struct ctx *c, GMimePart *part, const char *path)
{
    struct capped k = {g_byte_array_new(), MESSAGE_BODY_MAX, false};
    part_decode(c, part, path, msg_capped_put, &k);
    if (k.over)
        msg_perr(c, "part %s: text longer than %d bytes, cut", path, MESSAGE_BODY_MAX);
    const char *cs = g_mime_object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
    GString *s = msg_text_to_utf8(c, path, cs, (const char *)k.buf->data, k.buf->len);
    g_byte_array_free(k.buf, TRUE);
    if (s->len > MESSAGE_BODY_MAX) {
        msg_utf8_truncate(s, MESSAGE_BODY_MAX);
        if (!k.over)
            msg_perr(c, "part %s: text longer than %d bytes, cut", path, MESSAGE_BODY_MAX);
    }
    return s;
}

/* ---- attachments ------------------------------------------------------------------ */

struct att_acc {
    EVP_MD_CTX *md;
    uint64_t size;
    GByteArray *keep;    /* the bytes while size <= keep_max, else NULL */
    uint64_t keep_max;
    bool md_failed;
};

static int acc_put(void *arg, const char *buf, size_t len)
{
    struct att_acc *a = arg;
    if (EVP_DigestUpdate(a->md, buf, len) != 1)
        a->md_failed = true;
    a->size += len;
    if (a->keep) {
        if (a->size > a->keep_max) {
            g_byte_array_free(a->keep, TRUE);
            a->keep = NULL;
        } else {
            g_byte_array_append(a->keep, (const guint8 *)buf, (guint)len);
        }
    }
    return 0;
}

struct user_sink {
    message_sink_fn fn;
    void *ctx;
    uint64_t size;
};

static int user_put(void *arg, const char *buf, size_t len)
{
    struct user_sink *u = arg;
    u->size += len;
    return u->fn(u->ctx, buf, len);
}

/* Streams the decoded bytes of an attachment (leaf part or message/rfc822). */
static int att_stream(struct ctx *c, GMimeObject *obj, const char *path, chunk_fn fn, void *arg)
{
    if (GMIME_IS_PART(obj))
        return part_decode(c, GMIME_PART(obj), path, fn, arg);
    if (GMIME_IS_MESSAGE_PART(obj)) {
        GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
        if (!inner)
            return 0;
        GMimeStream *s = sink_stream_new(fn, arg);
        ssize_t n = g_mime_object_write_to_stream(GMIME_OBJECT(inner), NULL, s);
        bool failed = ((MessageSinkStream *)s)->failed;
        g_object_unref(s);
        if (failed)
            return -1;
        if (n < 0)
            msg_perr(c, "part %s: attached message could not be written out", path);
    }
    return 0;
}

static char *mime_type(GMimeObject *obj)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    char *t = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
    if (!t)
        t = g_strdup("application/octet-stream");
    char *low = g_ascii_strdown(t, -1);
    g_free(t);
    return low;
}

static const char *filename_of(GMimeObject *obj)
{
    if (GMIME_IS_PART(obj))
        return g_mime_part_get_filename(GMIME_PART(obj));
    const char *f = g_mime_object_get_content_disposition_parameter(obj, "filename");
    return f ? f : g_mime_object_get_content_type_parameter(obj, "name");
}

/* RFC 2183: "inline" is inline, "attachment" and unknown types are
 * attachments; without the header, a part with a file name is an attachment
 * and one without is inline. */
static bool disposition_is_attachment(GMimeObject *obj)
{
    const char *d = g_mime_object_get_disposition(obj);
    if (!d || !*d)
        return filename_of(obj) != NULL;
    return g_ascii_strcasecmp(d, "inline") != 0;
}

/* Copies a UTF-8 string into dst (size bytes), cut on a character boundary. */
static void copy_utf8(char *dst, size_t size, const char *s)
{
    GString *g = g_string_new(NULL);
    if (s)
        msg_utf8_append(g, s, strlen(s));
    msg_utf8_truncate(g, size - 1);
    memcpy(dst, g->str, g->len + 1);
    g_string_free(g, TRUE);
}

static void attachment_extract(struct ctx *c, GMimeObject *obj, const char *path)
{
    c->found = true;
    if (c->info) {
        char *t = mime_type(obj);
        copy_utf8(c->info->content_type, sizeof c->info->content_type, t);
        g_free(t);
        copy_utf8(c->info->filename, sizeof c->info->filename, filename_of(obj));
        c->info->size = 0;
    }
    struct user_sink u = {c->sink, c->sink_ctx, 0};
    if (att_stream(c, obj, path, user_put, &u) != 0) {
        c->extract_rc = err_set(c->e, ERR_CONN, "attachment %s: the receiver stopped taking data",
                                path);
    }
    if (c->info)
        c->info->size = u.size;
}

static void attachment_add(struct ctx *c, GMimeObject *obj, const char *path)
{
    if (c->natts >= MESSAGE_ATTACHMENTS_MAX) {
        if (c->natts == MESSAGE_ATTACHMENTS_MAX)
            msg_perr(c, "more than %d attachments; the rest are not listed", MESSAGE_ATTACHMENTS_MAX);
        c->natts++;
        return;
    }
    c->natts++;
    cJSON *a = cJSON_CreateObject();
    if (!a) {
        c->oom = true;
        return;
    }
    msg_push(c, c->atts, a);
    if (c->oom)
        return;
    char what[MESSAGE_ID_MAX + 32];
    snprintf(what, sizeof what, "part %s filename", path);
    msg_add(c, a, "id", cJSON_CreateString(path));
    msg_add(c, a, "filename", msg_jstr(c, what, filename_of(obj)));
    char *t = mime_type(obj);
    msg_add(c, a, "content_type", msg_jstr(c, "content type", t));
    g_free(t);

    /* inlined only within both limits: its own size and the budget left */
    uint64_t budget = c->o->inline_total_max ? c->o->inline_total_max
                                             : MESSAGE_INLINE_TOTAL_DEFAULT;
    uint64_t left = budget > c->inlined ? budget - c->inlined : 0;
    uint64_t keep_max = c->o->inline_max < left ? c->o->inline_max : left;
    struct att_acc acc = {EVP_MD_CTX_new(), 0, NULL, keep_max, false};
    if (!acc.md || EVP_DigestInit_ex(acc.md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(acc.md);
        c->oom = true;
        return;
    }
    acc.keep = g_byte_array_new();
    att_stream(c, obj, path, acc_put, &acc);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    char dhex[2 * EVP_MAX_MD_SIZE + 1];
    if (acc.md_failed || EVP_DigestFinal_ex(acc.md, d, &dlen) != 1)
        c->oom = true;
    EVP_MD_CTX_free(acc.md);
    codec_hex_encode(d, dlen, dhex);
    msg_add(c, a, "size", cJSON_CreateNumber((double)acc.size));
    msg_add(c, a, "sha256", cJSON_CreateString(dhex));
    const char *cid = g_mime_object_get_content_id(obj);
    snprintf(what, sizeof what, "part %s content_id", path);
    msg_add(c, a, "content_id", msg_jstr(c, what, cid));
    msg_add(c, a, "disposition",
        cJSON_CreateString(disposition_is_attachment(obj) ? "attachment" : "inline"));
    if (acc.keep) {
        char *b64 = codec_b64_encode(acc.keep->data, acc.keep->len);
        msg_add(c, a, "content", b64 ? cJSON_CreateString(b64) : NULL);
        free(b64);
        g_byte_array_free(acc.keep, TRUE);
        c->inlined += acc.size;
        return;
    }
    if (c->base_url[0]) {
        char url[MESSAGE_URL_MAX], q[LINKS_QUERY_MAX], sub[MESSAGE_ID_MAX + 16];
        snprintf(sub, sizeof sub, "attachments/%s", path);
        int n = msg_link_query(c, sub, q, sizeof q) < 0
                    ? -1
                    : snprintf(url, sizeof url, "%s/attachments/%s%s", c->base_url, path, q);
        msg_add(c, a, "url", (n < 0 || (size_t)n >= sizeof url) ? cJSON_CreateNull()
                                                              : cJSON_CreateString(url));
    } else {
        msg_add(c, a, "url", cJSON_CreateNull());
    }
    /* which limit kept it out: its own size, or the message's budget */
    msg_add(c, a, "inline_limit",
        cJSON_CreateString(acc.size > c->o->inline_max ? "inline_attachments_max"
                                                       : "inline_total_max"));
}

/* ---- walking the MIME tree --------------------------------------------------------- */

static bool is_type(GMimeObject *obj, const char *type, const char *sub)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    return ct && g_mime_content_type_is_type(ct, type, sub);
}


static void leaf(struct ctx *c, GMimeObject *obj, const char *path)
{
    bool body_candidate = GMIME_IS_PART(obj) && !disposition_is_attachment(obj) &&
                          !filename_of(obj);
    if (body_candidate && !c->have_text && is_type(obj, "text", "plain")) {
        c->have_text = true;
        if (!c->want)
            c->text = read_text(c, GMIME_PART(obj), path);
        return;
    }
    if (body_candidate && !c->have_html && is_type(obj, "text", "html")) {
        c->have_html = true;
        if (!c->want)
            c->html = read_text(c, GMIME_PART(obj), path);
        return;
    }
    if (c->want) {
        if (strcmp(c->want, path) == 0)
            attachment_extract(c, obj, path);
        return;
    }
    attachment_add(c, obj, path);
}

void msg_walk(struct ctx *c, GMimeObject *obj, const char *path, int depth)
{
    if (!obj || c->oom || c->found)
        return;
    if (++c->parts_seen > MESSAGE_PARTS_MAX) {
        if (!c->parts_capped)
            msg_perr(c, "more than %d MIME parts; the rest are left out", MESSAGE_PARTS_MAX);
        c->parts_capped = true;
        return;
    }
    if (!GMIME_IS_MULTIPART(obj)) {
        leaf(c, obj, path[0] ? path : "1");
        return;
    }
    if (depth >= MESSAGE_DEPTH_MAX) {
        msg_perr(c, "part %s: multipart nested deeper than %d levels, left out", path[0] ? path : "0",
             MESSAGE_DEPTH_MAX);
        return;
    }
    GMimeMultipart *mp = GMIME_MULTIPART(obj);
    int n = g_mime_multipart_get_count(mp);
    if (n == 0) {
        msg_perr(c, "part %s: multipart without parts", path[0] ? path : "0");
        /* best effort: a broken boundary leaves the content in the prologue */
        const char *pro = g_mime_multipart_get_prologue(mp);
        if (pro && *pro && !c->have_text) {
            c->have_text = true;
            if (!c->want) {
                msg_perr(c, "part %s: its text before any boundary is taken as the text",
                     path[0] ? path : "0");
                c->text = msg_text_to_utf8(c, path[0] ? path : "0", NULL, pro, strlen(pro));
                msg_utf8_truncate(c->text, MESSAGE_BODY_MAX);
            }
        }
    }
    for (int i = 0; i < n && !c->oom && !c->found && !c->parts_capped; i++) {
        char sub[MESSAGE_ID_MAX];
        int k = path[0] ? snprintf(sub, sizeof sub, "%s.%d", path, i + 1)
                        : snprintf(sub, sizeof sub, "%d", i + 1);
        if (k < 0 || (size_t)k >= sizeof sub) {
            msg_perr(c, "part number longer than %d characters, left out", MESSAGE_ID_MAX - 1);
            continue;
        }
        msg_walk(c, g_mime_multipart_get_part(mp, i), sub, depth + 1);
    }
}
