/* message — RFC 5322 message (GMime) to the event's JSON; see include/message.h. */
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

#define MESSAGE_CHUNK (64 * 1024)         /* read size while hashing and decoding */
#define MESSAGE_PARTS_MAX 10000           /* MIME parts visited in one message */
#define MESSAGE_ERROR_ITEM_MAX 80         /* bytes of message text quoted in a parse error */
#define MESSAGE_ERROR_LEN_MAX 256         /* one parse error string */
#define MESSAGE_GROUP_DEPTH_MAX 4         /* nested address groups flattened */
#define MESSAGE_URL_MAX 2048              /* raw_url and attachment url */
#define MESSAGE_FALLBACK_CHARSET "WINDOWS-1252"

/* ---- GMime, once ----------------------------------------------------------- */

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;
static bool gmime_ready;

static void gmime_start(void)
{
    g_mime_init();
    gmime_ready = true;
}

static void gmime_ensure(void)
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
static size_t utf8_append(GString *out, const char *s, size_t n)
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
static void utf8_truncate(GString *s, size_t max)
{
    if (s->len <= max)
        return;
    size_t n = max;
    while (n > 0 && ((unsigned char)s->str[n] & 0xc0) == 0x80)
        n--;
    g_string_truncate(s, n);
}

/* ---- the parse context -------------------------------------------------------- */

struct ctx {
    const struct message_opts *o;
    GMimeParserOptions *popts;
    cJSON *errors;         /* parse_errors array, or NULL: errors not collected */
    int nerrors;
    bool errors_capped;
    bool oom;
    /* walking the parts */
    int parts_seen;
    bool parts_capped;
    bool have_text, have_html;
    GString *text, *html;
    cJSON *atts;           /* attachments array (NULL when extracting) */
    int natts;
    uint64_t inlined;      /* decoded bytes inlined so far, against inline_total_max */
    char base_url[MESSAGE_URL_MAX]; /* "<public_url>/api/v1/messages/<id>", "" if none */
    /* extracting one attachment */
    const char *want;
    bool found;
    int extract_rc;
    message_sink_fn sink;
    void *sink_ctx;
    struct message_attachment_info *info;
    struct err *e;
};

static const struct message_opts no_opts;

static void perr(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int link_query(struct ctx *c, const char *sub, char *q, size_t size);

/* Adds one parse error (the formatted text is made valid UTF-8). */
static void perr(struct ctx *c, const char *fmt, ...)
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
    utf8_append(g, buf, len);
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
static void quote_item(char *dst, size_t size, const char *s)
{
    err_sanitize(dst, size < MESSAGE_ERROR_ITEM_MAX ? size : MESSAGE_ERROR_ITEM_MAX, s ? s : "",
                 s ? strlen(s) : 0);
}

static cJSON *add(struct ctx *c, cJSON *obj, const char *key, cJSON *item)
{
    if (!item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        c->oom = true;
        return NULL;
    }
    return item;
}

static void push(struct ctx *c, cJSON *arr, cJSON *item)
{
    if (!item || !cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        c->oom = true;
    }
}

/* A JSON string for s (NULL -> null), replacing invalid UTF-8 and noting it. */
static cJSON *jstr(struct ctx *c, const char *what, const char *s)
{
    if (!s)
        return cJSON_CreateNull();
    size_t n = strlen(s);
    if (g_utf8_validate_len(s, n, NULL))
        return cJSON_CreateString(s);
    GString *g = g_string_sized_new(n + 16);
    size_t bad = utf8_append(g, s, n);
    perr(c, "%s: %zu invalid UTF-8 byte(s) replaced by U+FFFD", what, bad);
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
    quote_item(q, sizeof q, item);
    char at[32] = "";
    if (offset >= 0)
        snprintf(at, sizeof at, "offset %lld: ", (long long)offset);
    if (q[0])
        perr(c, "%s%s: %s", at, warning_text(code), q);
    else
        perr(c, "%s%s", at, warning_text(code));
}

static int ctx_init(struct ctx *c, const struct message_opts *o, bool collect)
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

static void ctx_done(struct ctx *c)
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

typedef int (*chunk_fn)(void *arg, const char *buf, size_t len);

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
        perr(c, "part %s: content could not be read", path);
        goto done;
    }
    while (!g_mime_stream_eos(src)) {
        ssize_t n = g_mime_stream_read(src, in, MESSAGE_CHUNK);
        if (n < 0) {
            if (!g_mime_stream_eos(src))
                perr(c, "part %s: read error in content", path);
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
        perr(c, "part %s: %llu invalid base64 character(s) skipped", path,
             (unsigned long long)b64_bad);
    if (b64_count % 4 == 1 || b64_after_pad)
        perr(c, "part %s: base64 content is truncated or malformed", path);
done:
    g_free(in);
    g_free(out);
    return rc;
}

/* ---- text bodies ----------------------------------------------------------------- */

struct capped {
    GByteArray *buf;
    size_t max;
    bool over;
};

static int capped_put(void *arg, const char *buf, size_t len)
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
    bad += (long)utf8_append(out, raw->str, raw->len);
    g_string_free(raw, TRUE);
    return bad;
}

static bool charset_is_utf8(const char *cs)
{
    return !g_ascii_strcasecmp(cs, "utf-8") || !g_ascii_strcasecmp(cs, "utf8") ||
           !g_ascii_strcasecmp(cs, "us-ascii") || !g_ascii_strcasecmp(cs, "ascii");
}

/* The decoded bytes of a text part, in charset cs (may be NULL), as UTF-8. */
static GString *text_to_utf8(struct ctx *c, const char *path, const char *cs, const char *s,
                             size_t n)
{
    GString *out = g_string_sized_new(n + 16);
    if (!cs || !*cs || charset_is_utf8(cs)) {
        if (g_utf8_validate_len(s, n, NULL)) {
            g_string_append_len(out, s, (gssize)n);
            return out;
        }
        if (cs && *cs && g_ascii_strcasecmp(cs, "us-ascii") && g_ascii_strcasecmp(cs, "ascii")) {
            size_t bad = utf8_append(out, s, n);
            perr(c, "part %s: %zu invalid UTF-8 byte(s) replaced by U+FFFD", path, bad);
            return out;
        }
        /* undeclared (or ASCII declared) 8-bit text: the common real-world case */
        long bad = convert(out, MESSAGE_FALLBACK_CHARSET, s, n);
        perr(c, "part %s: 8-bit text without a charset, read as windows-1252", path);
        if (bad < 0)
            utf8_append(out, s, n);
        return out;
    }
    const char *iname = g_mime_charset_iconv_name(cs);
    long bad = convert(out, iname ? iname : cs, s, n);
    if (bad < 0) {
        char q[MESSAGE_ERROR_ITEM_MAX];
        quote_item(q, sizeof q, cs);
        perr(c, "part %s: unknown charset \"%s\", read as windows-1252", path, q);
        bad = convert(out, MESSAGE_FALLBACK_CHARSET, s, n);
        if (bad < 0)
            utf8_append(out, s, n);
    } else if (bad > 0) {
        char q[MESSAGE_ERROR_ITEM_MAX];
        quote_item(q, sizeof q, cs);
        perr(c, "part %s: %ld byte sequence(s) invalid in charset \"%s\" replaced by U+FFFD",
             path, bad, q);
    }
    return out;
}

static GString *read_text(struct ctx *c, GMimePart *part, const char *path)
{
    struct capped k = {g_byte_array_new(), MESSAGE_BODY_MAX, false};
    part_decode(c, part, path, capped_put, &k);
    if (k.over)
        perr(c, "part %s: text longer than %d bytes, cut", path, MESSAGE_BODY_MAX);
    const char *cs = g_mime_object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
    GString *s = text_to_utf8(c, path, cs, (const char *)k.buf->data, k.buf->len);
    g_byte_array_free(k.buf, TRUE);
    if (s->len > MESSAGE_BODY_MAX) {
        utf8_truncate(s, MESSAGE_BODY_MAX);
        if (!k.over)
            perr(c, "part %s: text longer than %d bytes, cut", path, MESSAGE_BODY_MAX);
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
            perr(c, "part %s: attached message could not be written out", path);
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
        utf8_append(g, s, strlen(s));
    utf8_truncate(g, size - 1);
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
            perr(c, "more than %d attachments; the rest are not listed", MESSAGE_ATTACHMENTS_MAX);
        c->natts++;
        return;
    }
    c->natts++;
    cJSON *a = cJSON_CreateObject();
    if (!a) {
        c->oom = true;
        return;
    }
    push(c, c->atts, a);
    if (c->oom)
        return;
    char what[MESSAGE_ID_MAX + 32];
    snprintf(what, sizeof what, "part %s filename", path);
    add(c, a, "id", cJSON_CreateString(path));
    add(c, a, "filename", jstr(c, what, filename_of(obj)));
    char *t = mime_type(obj);
    add(c, a, "content_type", jstr(c, "content type", t));
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
    add(c, a, "size", cJSON_CreateNumber((double)acc.size));
    add(c, a, "sha256", cJSON_CreateString(dhex));
    const char *cid = g_mime_object_get_content_id(obj);
    snprintf(what, sizeof what, "part %s content_id", path);
    add(c, a, "content_id", jstr(c, what, cid));
    add(c, a, "disposition",
        cJSON_CreateString(disposition_is_attachment(obj) ? "attachment" : "inline"));
    if (acc.keep) {
        char *b64 = codec_b64_encode(acc.keep->data, acc.keep->len);
        add(c, a, "content", b64 ? cJSON_CreateString(b64) : NULL);
        free(b64);
        g_byte_array_free(acc.keep, TRUE);
        c->inlined += acc.size;
        return;
    }
    if (c->base_url[0]) {
        char url[MESSAGE_URL_MAX], q[LINKS_QUERY_MAX], sub[MESSAGE_ID_MAX + 16];
        snprintf(sub, sizeof sub, "attachments/%s", path);
        int n = link_query(c, sub, q, sizeof q) < 0
                    ? -1
                    : snprintf(url, sizeof url, "%s/attachments/%s%s", c->base_url, path, q);
        add(c, a, "url", (n < 0 || (size_t)n >= sizeof url) ? cJSON_CreateNull()
                                                              : cJSON_CreateString(url));
    } else {
        add(c, a, "url", cJSON_CreateNull());
    }
    /* which limit kept it out: its own size, or the message's budget */
    add(c, a, "inline_limit",
        cJSON_CreateString(acc.size > c->o->inline_max ? "inline_attachments_max"
                                                       : "inline_total_max"));
}

/* ---- walking the MIME tree --------------------------------------------------------- */

static bool is_type(GMimeObject *obj, const char *type, const char *sub)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    return ct && g_mime_content_type_is_type(ct, type, sub);
}

static void walk(struct ctx *c, GMimeObject *obj, const char *path, int depth);

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

static void walk(struct ctx *c, GMimeObject *obj, const char *path, int depth)
{
    if (!obj || c->oom || c->found)
        return;
    if (++c->parts_seen > MESSAGE_PARTS_MAX) {
        if (!c->parts_capped)
            perr(c, "more than %d MIME parts; the rest are left out", MESSAGE_PARTS_MAX);
        c->parts_capped = true;
        return;
    }
    if (!GMIME_IS_MULTIPART(obj)) {
        leaf(c, obj, path[0] ? path : "1");
        return;
    }
    if (depth >= MESSAGE_DEPTH_MAX) {
        perr(c, "part %s: multipart nested deeper than %d levels, left out", path[0] ? path : "0",
             MESSAGE_DEPTH_MAX);
        return;
    }
    GMimeMultipart *mp = GMIME_MULTIPART(obj);
    int n = g_mime_multipart_get_count(mp);
    if (n == 0) {
        perr(c, "part %s: multipart without parts", path[0] ? path : "0");
        /* best effort: a broken boundary leaves the content in the prologue */
        const char *pro = g_mime_multipart_get_prologue(mp);
        if (pro && *pro && !c->have_text) {
            c->have_text = true;
            if (!c->want) {
                perr(c, "part %s: its text before any boundary is taken as the text",
                     path[0] ? path : "0");
                c->text = text_to_utf8(c, path[0] ? path : "0", NULL, pro, strlen(pro));
                utf8_truncate(c->text, MESSAGE_BODY_MAX);
            }
        }
    }
    for (int i = 0; i < n && !c->oom && !c->found && !c->parts_capped; i++) {
        char sub[MESSAGE_ID_MAX];
        int k = path[0] ? snprintf(sub, sizeof sub, "%s.%d", path, i + 1)
                        : snprintf(sub, sizeof sub, "%d", i + 1);
        if (k < 0 || (size_t)k >= sizeof sub) {
            perr(c, "part number longer than %d characters, left out", MESSAGE_ID_MAX - 1);
            continue;
        }
        walk(c, g_mime_multipart_get_part(mp, i), sub, depth + 1);
    }
}

/* ---- headers and addresses --------------------------------------------------------- */

static void addresses(struct ctx *c, InternetAddressList *l, cJSON *arr, int depth,
                      const char *what)
{
    if (!l)
        return;
    int n = internet_address_list_length(l);
    for (int i = 0; i < n && !c->oom; i++) {
        InternetAddress *ia = internet_address_list_get_address(l, i);
        if (INTERNET_ADDRESS_IS_GROUP(ia)) {
            if (depth < MESSAGE_GROUP_DEPTH_MAX)
                addresses(c, internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), arr,
                          depth + 1, what);
            continue;
        }
        if (!INTERNET_ADDRESS_IS_MAILBOX(ia))
            continue;
        if (cJSON_GetArraySize(arr) >= MESSAGE_ADDRESSES_MAX) {
            perr(c, "%s: more than %d addresses, the rest left out", what, MESSAGE_ADDRESSES_MAX);
            return;
        }
        cJSON *a = cJSON_CreateObject();
        if (!a) {
            c->oom = true;
            return;
        }
        push(c, arr, a);
        if (c->oom)
            return;
        const char *name = internet_address_get_name(ia);
        add(c, a, "name", jstr(c, what, name && *name ? name : NULL));
        add(c, a, "address",
            jstr(c, what, internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia))));
    }
}

static cJSON *address_array(struct ctx *c, InternetAddressList *l, const char *what)
{
    cJSON *arr = cJSON_CreateArray();
    if (arr)
        addresses(c, l, arr, 0, what);
    return arr;
}

/* The first mailbox of a list, or null. */
static cJSON *first_address(struct ctx *c, InternetAddressList *l, const char *what)
{
    cJSON *arr = address_array(c, l, what);
    if (!arr)
        return NULL;
    cJSON *first = cJSON_DetachItemFromArray(arr, 0);
    cJSON_Delete(arr);
    return first ? first : cJSON_CreateNull();
}

/* The header fields of a message in their order: GMime keeps the Content-*
 * fields of the top level with the top-level part, so the two lists are
 * merged by their offsets in the message. */
static GPtrArray *message_headers(GMimeObject *msg, GMimeObject *body)
{
    GPtrArray *all = g_ptr_array_new();
    GMimeHeaderList *a = g_mime_object_get_header_list(msg);
    GMimeHeaderList *b = body ? g_mime_object_get_header_list(body) : NULL;
    int na = a ? g_mime_header_list_get_count(a) : 0;
    int nb = b ? g_mime_header_list_get_count(b) : 0;
    int i = 0, j = 0;
    while (i < na || j < nb) {
        GMimeHeader *ha = i < na ? g_mime_header_list_get_header_at(a, i) : NULL;
        GMimeHeader *hb = j < nb ? g_mime_header_list_get_header_at(b, j) : NULL;
        if (ha && (!hb || g_mime_header_get_offset(ha) <= g_mime_header_get_offset(hb))) {
            g_ptr_array_add(all, ha);
            i++;
        } else {
            g_ptr_array_add(all, hb);
            j++;
        }
    }
    return all;
}

static cJSON *header_array(struct ctx *c, GMimeMessage *msg)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr)
        return NULL;
    GPtrArray *all = message_headers(GMIME_OBJECT(msg), g_mime_message_get_mime_part(msg));
    int n = (int)all->len;
    size_t bytes = 0;
    for (int i = 0; i < n && !c->oom; i++) {
        if (i >= MESSAGE_HEADERS_MAX) {
            perr(c, "%d header fields; only the first %d are listed", n, MESSAGE_HEADERS_MAX);
            break;
        }
        GMimeHeader *h = g_ptr_array_index(all, i);
        const char *name = g_mime_header_get_name(h);
        const char *value = g_mime_header_get_value(h);
        name = name ? name : "";
        value = value ? value : "";
        bytes += strlen(name) + strlen(value);
        if (bytes > MESSAGE_HEADER_BYTES_MAX) {
            perr(c, "header fields exceed %d bytes; only the first %d are listed",
                 MESSAGE_HEADER_BYTES_MAX, i);
            break;
        }
        cJSON *o = cJSON_CreateObject();
        if (!o) {
            c->oom = true;
            break;
        }
        push(c, arr, o);
        if (c->oom)
            break;
        char what[MESSAGE_ERROR_ITEM_MAX + 16];
        char q[MESSAGE_ERROR_ITEM_MAX];
        quote_item(q, sizeof q, name);
        snprintf(what, sizeof what, "header %s", q);
        add(c, o, "name", jstr(c, what, name));
        GString *v = g_string_new(NULL);
        /* unfold (RFC 5322 2.2.3): a value may still carry the CR/LF of folds */
        for (const char *p = value; *p; p++)
            if (*p != '\r' && *p != '\n')
                g_string_append_c(v, *p);
        add(c, o, "value", jstr(c, what, v->str));
        g_string_free(v, TRUE);
    }
    g_ptr_array_free(all, TRUE);
    return arr;
}

/* The Date header as RFC 3339 UTC, or null (with a parse error). */
static cJSON *date_json(struct ctx *c, GMimeMessage *msg)
{
    const char *raw = g_mime_object_get_header(GMIME_OBJECT(msg), "Date");
    if (!raw) {
        perr(c, "no Date header");
        return cJSON_CreateNull();
    }
    GDateTime *dt = g_mime_message_get_date(msg);
    GDateTime *utc = dt ? g_date_time_to_utc(dt) : NULL;
    if (!utc) {
        char q[MESSAGE_ERROR_ITEM_MAX];
        quote_item(q, sizeof q, raw);
        perr(c, "Date header not understood: %s", q);
        return cJSON_CreateNull();
    }
    char buf[CLOCK_RFC3339_SIZE];
    clock_rfc3339(g_date_time_to_unix(utc) * 1000, 0, buf, sizeof buf);
    g_date_time_unref(utc);
    return buf[0] ? cJSON_CreateString(buf) : cJSON_CreateNull();
}

/* Message ids of a header field (without angle brackets), via GMime. */
static GMimeReferences *ids_of(struct ctx *c, GMimeMessage *msg, const char *field)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(msg));
    GMimeHeader *h = hl ? g_mime_header_list_get_header(hl, field) : NULL;
    const char *raw = h ? g_mime_header_get_raw_value(h) : NULL;
    return raw ? g_mime_references_parse(c->popts, raw) : NULL;
}

/* ---- the message object ------------------------------------------------------------- */

static void percent_encode(GString *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (g_ascii_isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~')
            g_string_append_c(out, (char)*p);
        else
            g_string_append_printf(out, "%%%02X", *p);
    }
}

static void set_base_url(struct ctx *c)
{
    c->base_url[0] = '\0';
    if (!c->o->public_url || !c->o->id || !*c->o->id)
        return;
    GString *g = g_string_new(c->o->public_url);
    while (g->len && g->str[g->len - 1] == '/')
        g_string_truncate(g, g->len - 1);
    g_string_append(g, "/api/v1/messages/");
    percent_encode(g, c->o->id);
    if (g->len < sizeof c->base_url)
        memcpy(c->base_url, g->str, g->len + 1);
    else
        perr(c, "public_url and id longer than %d bytes: no URLs", MESSAGE_URL_MAX - 1);
    g_string_free(g, TRUE);
}

/* The query that signs the link to <base>/<sub> (links.h), "" without a
 * link key.  The signed path is the decoded one the API will see. */
static int link_query(struct ctx *c, const char *sub, char *q, size_t size)
{
    q[0] = '\0';
    if (!c->o->link_key)
        return 0;
    char path[LINKS_PATH_MAX];
    int n = snprintf(path, sizeof path, "/api/v1/messages/%s/%s", c->o->id, sub);
    if (n < 0 || (size_t)n >= sizeof path ||
        links_query(c->o->link_key, c->o->link_key_len, path, c->o->link_exp, q, size) < 0) {
        perr(c, "a link could not be signed: no URL");
        return -1;
    }
    return 0;
}

static void add_str_or_null(struct ctx *c, cJSON *obj, const char *key, const char *s)
{
    add(c, obj, key, jstr(c, key, s));
}

/* text_reply: the new text of the text/plain body (the html one's structure
 * helping), or of the html body alone; null without either. */
static cJSON *text_reply_json(struct ctx *c)
{
    char *r = reply_text(c->text ? c->text->str : NULL, c->text ? c->text->len : 0,
                         c->html ? c->html->str : NULL, c->html ? c->html->len : 0);
    cJSON *j = r ? cJSON_CreateString(r) : cJSON_CreateNull();
    g_free(r);
    return j;
}

/* The raw values of the top-level header fields named `name`, top first. */
static GPtrArray *header_values(GMimeMessage *msg, const char *name)
{
    GPtrArray *v = g_ptr_array_new();
    GMimeHeaderList *hl = msg ? g_mime_object_get_header_list(GMIME_OBJECT(msg)) : NULL;
    int n = hl ? g_mime_header_list_get_count(hl) : 0;
    for (int i = 0; i < n && i < MESSAGE_HEADERS_MAX; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        const char *hn = g_mime_header_get_name(h);
        const char *raw = g_mime_header_get_raw_value(h);
        if (hn && raw && g_ascii_strcasecmp(hn, name) == 0)
            g_ptr_array_add(v, (gpointer)raw);
    }
    return v;
}

static const char *first_value(GMimeMessage *msg, const char *name)
{
    GPtrArray *v = header_values(msg, name);
    const char *first = v->len ? g_ptr_array_index(v, 0) : NULL;
    g_ptr_array_free(v, TRUE);
    return first;
}

/* The recipients' addresses, envelope first: Delivered-To, X-Original-To,
 * To, Cc (groups flattened one level). */
static GPtrArray *recipients(struct ctx *c, GMimeMessage *msg)
{
    static const char *const names[] = {"Delivered-To", "X-Original-To", "To", "Cc"};
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        GPtrArray *vals = header_values(msg, names[k]);
        for (unsigned i = 0; i < vals->len && out->len < MESSAGE_ADDRESSES_MAX; i++) {
            InternetAddressList *l = internet_address_list_parse(c->popts, g_ptr_array_index(vals, i));
            int n = l ? internet_address_list_length(l) : 0;
            for (int j = 0; j < n && out->len < MESSAGE_ADDRESSES_MAX; j++) {
                InternetAddress *ia = internet_address_list_get_address(l, j);
                InternetAddressList *members =
                    INTERNET_ADDRESS_IS_GROUP(ia) ? internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)) : NULL;
                int m = members ? internet_address_list_length(members) : 1;
                for (int q = 0; q < m && out->len < MESSAGE_ADDRESSES_MAX; q++) {
                    InternetAddress *a = members ? internet_address_list_get_address(members, q) : ia;
                    if (INTERNET_ADDRESS_IS_MAILBOX(a) && internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)))
                        g_ptr_array_add(out, g_strdup(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a))));
                }
            }
            if (l)
                g_object_unref(l);
        }
        g_ptr_array_free(vals, TRUE);
    }
    return out;
}

/* authentication, spam, auto_reply, bounce, list, mailbox_hash (null
 * without a header). */
static void add_classification(struct ctx *c, cJSON *m, GMimeMessage *msg)
{
    GPtrArray *ar = header_values(msg, "Authentication-Results");
    add(c, m, "authentication",
        authres_json((const char *const *)ar->pdata, ar->len, c->o->trusted_authserv_ids,
                     c->o->trusted_authserv_id_count));
    g_ptr_array_free(ar, TRUE);
    struct mailclass_headers h = {
        .subject = msg ? g_mime_message_get_subject(msg) : NULL,
        .auto_submitted = first_value(msg, "Auto-Submitted"),
        .x_autoreply = first_value(msg, "X-Autoreply"),
        .x_autorespond = first_value(msg, "X-Autorespond"),
        .precedence = first_value(msg, "Precedence"),
        .x_auto_response_suppress = first_value(msg, "X-Auto-Response-Suppress"),
        .x_spam_status = first_value(msg, "X-Spam-Status"),
        .x_spam_score = first_value(msg, "X-Spam-Score"),
        .x_spam_flag = first_value(msg, "X-Spam-Flag"),
        .list_id = first_value(msg, "List-Id"),
        .list_unsubscribe = first_value(msg, "List-Unsubscribe"),
        .list_unsubscribe_post = first_value(msg, "List-Unsubscribe-Post"),
    };
    add(c, m, "spam", mailclass_spam_json(&h));
    const char *kind = mailclass_auto_reply(&h);
    add(c, m, "auto_reply", kind ? cJSON_CreateString(kind) : cJSON_CreateNull());
    add(c, m, "bounce",
        bounce_json(msg, c->text ? c->text->str : NULL, c->html ? c->html->str : NULL));
    add(c, m, "list", mailclass_list_json(&h));
    char *hash = NULL;
    if (msg && c->o->address) {
        GPtrArray *rc = recipients(c, msg);
        hash = subaddr_detail(c->o->address, (const char *const *)rc->pdata, rc->len);
        g_ptr_array_free(rc, TRUE);
    }
    add(c, m, "mailbox_hash", hash ? cJSON_CreateString(hash) : cJSON_CreateNull());
    g_free(hash);
}

static GMimeMessage *parse(struct ctx *c, GMimeStream *stream)
{
    GMimeParser *p = g_mime_parser_new_with_stream(stream);
    g_mime_parser_set_format(p, GMIME_FORMAT_MESSAGE);
    g_mime_parser_set_persist_stream(p, TRUE);
    GMimeMessage *msg = g_mime_parser_construct_message(p, c->popts);
    g_object_unref(p);
    return msg;
}

static void fill(struct ctx *c, cJSON *m, GMimeMessage *msg)
{
    if (msg) {
        GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(msg));
        if (!hl || g_mime_header_list_get_count(hl) == 0)
            perr(c, "no header fields");
        add(c, m, "date", date_json(c, msg));
        add_str_or_null(c, m, "subject", g_mime_message_get_subject(msg));
        add_str_or_null(c, m, "message_id", g_mime_message_get_message_id(msg));
        GMimeReferences *irt = ids_of(c, msg, "In-Reply-To");
        add_str_or_null(c, m, "in_reply_to",
                        irt && g_mime_references_length(irt) > 0
                            ? g_mime_references_get_message_id(irt, 0)
                            : NULL);
        if (irt)
            g_mime_references_free(irt);
        cJSON *refs = add(c, m, "references", cJSON_CreateArray());
        GMimeReferences *r = ids_of(c, msg, "References");
        int nr = r ? g_mime_references_length(r) : 0;
        for (int i = 0; refs && i < nr && !c->oom; i++) {
            if (i >= MESSAGE_REFERENCES_MAX) {
                perr(c, "References: more than %d ids, the rest left out", MESSAGE_REFERENCES_MAX);
                break;
            }
            push(c, refs, jstr(c, "References", g_mime_references_get_message_id(r, i)));
        }
        if (r)
            g_mime_references_free(r);
        add(c, m, "from", first_address(c, g_mime_message_get_from(msg), "From"));
        add(c, m, "sender", first_address(c, g_mime_message_get_sender(msg), "Sender"));
        add(c, m, "reply_to", address_array(c, g_mime_message_get_reply_to(msg), "Reply-To"));
        add(c, m, "to", address_array(c, g_mime_message_get_to(msg), "To"));
        add(c, m, "cc", address_array(c, g_mime_message_get_cc(msg), "Cc"));
        add(c, m, "headers", header_array(c, msg));
    } else {
        const char *nulls[] = {"date", "subject", "message_id", "in_reply_to"};
        for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
            add(c, m, nulls[i], cJSON_CreateNull());
        add(c, m, "references", cJSON_CreateArray());
        add(c, m, "from", cJSON_CreateNull());
        add(c, m, "sender", cJSON_CreateNull());
        const char *arrays[] = {"reply_to", "to", "cc", "headers"};
        for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
            add(c, m, arrays[i], cJSON_CreateArray());
    }
    c->atts = cJSON_CreateArray();
    if (!c->atts) {
        c->oom = true;
        return;
    }
    if (msg && !c->oom)
        walk(c, g_mime_message_get_mime_part(msg), "", 0);
    cJSON *atts = c->atts;
    c->atts = NULL;
    add(c, m, "text", c->text ? cJSON_CreateString(c->text->str) : cJSON_CreateNull());
    add(c, m, "html", c->html ? cJSON_CreateString(c->html->str) : cJSON_CreateNull());
    add(c, m, "text_reply", text_reply_json(c));
    add_classification(c, m, msg);
    add(c, m, "attachments", atts);
    if (c->base_url[0]) {
        char url[MESSAGE_URL_MAX], q[LINKS_QUERY_MAX];
        int n = link_query(c, "raw", q, sizeof q) < 0
                    ? -1
                    : snprintf(url, sizeof url, "%s/raw%s", c->base_url, q);
        add(c, m, "raw_url",
            (n < 0 || (size_t)n >= sizeof url) ? cJSON_CreateNull() : cJSON_CreateString(url));
    } else {
        add(c, m, "raw_url", cJSON_CreateNull());
    }
}

/* The first MESSAGE_BODY_MAX bytes of a stream as UTF-8 text. */
static GString *stream_text(struct ctx *c, GMimeStream *stream)
{
    struct capped k = {g_byte_array_new(), MESSAGE_BODY_MAX, false};
    char *buf = g_malloc(MESSAGE_CHUNK);
    if (g_mime_stream_reset(stream) == 0) {
        while (!k.over && !g_mime_stream_eos(stream)) {
            ssize_t n = g_mime_stream_read(stream, buf, MESSAGE_CHUNK);
            if (n <= 0)
                break;
            capped_put(&k, buf, (size_t)n);
        }
    }
    g_free(buf);
    GString *s = text_to_utf8(c, "1", NULL, (const char *)k.buf->data, k.buf->len);
    g_byte_array_free(k.buf, TRUE);
    utf8_truncate(s, MESSAGE_BODY_MAX);
    return s;
}

/* Builds the object from a GMime stream over the raw message. */
static cJSON *build(GMimeStream *stream, uint64_t size, const char *sha_hex,
                    const struct message_opts *o, struct err *e)
{
    struct ctx c;
    if (ctx_init(&c, o, true) != 0) {
        ctx_done(&c);
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    cJSON *m = cJSON_CreateObject();
    if (!m) {
        ctx_done(&c);
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    set_base_url(&c);
    add_str_or_null(&c, m, "id", c.o->id);
    add_str_or_null(&c, m, "uidl", c.o->uidl);
    add(&c, m, "size", cJSON_CreateNumber((double)size));
    add_str_or_null(&c, m, "sha256", sha_hex);
    add_str_or_null(&c, m, "received_at", c.o->received_at);

    GMimeMessage *msg = NULL;
    if (size == 0)
        perr(&c, "empty message");
    else {
        msg = parse(&c, stream);
        if (!msg) {
            perr(&c, "no RFC 5322 header found; the whole input is taken as text");
            c.text = stream_text(&c, stream);
        }
    }
    fill(&c, m, msg);
    if (msg)
        g_object_unref(msg);
    cJSON *errs = c.errors;
    c.errors = NULL;
    add(&c, m, "parse_errors", errs);
    bool oom = c.oom;
    ctx_done(&c);
    if (oom) {
        cJSON_Delete(m);
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    return m;
}

static int sha256_hex_mem(const void *raw, size_t len, char out[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    if (EVP_Digest(raw, len, d, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
        return -1;
    codec_hex_encode(d, dlen, out);
    return 0;
}

/* SHA-256 and length of everything in fd, read with pread (offset untouched). */
static int sha256_hex_fd(int fd, char out[65], uint64_t *size, struct err *e)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return err_set(e, ERR_INTERNAL, "message: out of memory");
    }
    char *buf = g_malloc(MESSAGE_CHUNK);
    uint64_t off = 0;
    int rc = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, MESSAGE_CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = err_set(e, ERR_INTERNAL, "message: reading the stored message: %s",
                         strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if (EVP_DigestUpdate(md, buf, (size_t)n) != 1) {
            rc = err_set(e, ERR_INTERNAL, "message: hashing failed");
            break;
        }
        off += (uint64_t)n;
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    if (rc == 0 && EVP_DigestFinal_ex(md, d, &dlen) != 1)
        rc = err_set(e, ERR_INTERNAL, "message: hashing failed");
    EVP_MD_CTX_free(md);
    g_free(buf);
    if (rc == 0) {
        codec_hex_encode(d, dlen, out);
        *size = off;
    }
    return rc;
}

/* A GMime stream over fd from offset 0 to its end; the fd stays ours. */
static GMimeStream *fd_stream(int fd, struct err *e)
{
    if (fd < 0 || lseek(fd, 0, SEEK_SET) != 0) {
        err_set(e, ERR_USAGE, "message: the stored message's file descriptor is not seekable");
        return NULL;
    }
    GMimeStream *s = g_mime_stream_fs_new_with_bounds(fd, 0, -1);
    g_mime_stream_fs_set_owner(GMIME_STREAM_FS(s), FALSE);
    return s;
}

cJSON *message_to_json(const void *raw, size_t len, const struct message_opts *o, struct err *e)
{
    if (!raw && len) {
        err_set(e, ERR_USAGE, "message: no buffer given for %zu bytes", len);
        return NULL;
    }
    gmime_ensure();
    char sha[65];
    const char *sha_hex = o && o->sha256_hex ? o->sha256_hex : NULL;
    if (!sha_hex) {
        if (sha256_hex_mem(raw ? raw : "", len, sha) != 0) {
            err_set(e, ERR_INTERNAL, "message: hashing failed");
            return NULL;
        }
        sha_hex = sha;
    }
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(raw ? raw : "", len);
    cJSON *m = build(s, len, sha_hex, o, e);
    g_object_unref(s);
    return m;
}

cJSON *message_to_json_fd(int fd, const struct message_opts *o, struct err *e)
{
    gmime_ensure();
    char sha[65];
    uint64_t size = 0;
    GMimeStream *s = fd_stream(fd, e);
    if (!s)
        return NULL;
    if (sha256_hex_fd(fd, sha, &size, e) != 0) {
        g_object_unref(s);
        return NULL;
    }
    cJSON *m = build(s, size, o && o->sha256_hex ? o->sha256_hex : sha, o, e);
    g_object_unref(s);
    return m;
}

/* ---- one attachment ------------------------------------------------------------------ */

static int extract(GMimeStream *stream, const char *att_id, message_sink_fn sink, void *sctx,
                   struct message_attachment_info *info, struct err *e)
{
    if (!att_id || !sink) {
        g_object_unref(stream);
        return err_set(e, ERR_USAGE, "message: attachment id and sink are required");
    }
    struct ctx c;
    ctx_init(&c, NULL, false);
    c.want = att_id;
    c.sink = sink;
    c.sink_ctx = sctx;
    c.info = info;
    c.e = e;
    GMimeMessage *msg = g_mime_stream_length(stream) > 0 ? parse(&c, stream) : NULL;
    if (msg)
        walk(&c, g_mime_message_get_mime_part(msg), "", 0);
    int rc = c.extract_rc;
    if (!c.found) {
        char q[MESSAGE_ERROR_ITEM_MAX];
        quote_item(q, sizeof q, att_id);
        rc = err_set(e, ERR_USAGE, "message: no attachment \"%s\" in this message", q);
    }
    if (msg)
        g_object_unref(msg);
    g_object_unref(stream);
    ctx_done(&c);
    return rc;
}

int message_attachment(const void *raw, size_t len, const char *att_id, message_sink_fn sink,
                       void *ctx, struct message_attachment_info *info, struct err *e)
{
    if (!raw && len)
        return err_set(e, ERR_USAGE, "message: no buffer given for %zu bytes", len);
    gmime_ensure();
    return extract(g_mime_stream_mem_new_with_buffer(raw ? raw : "", len), att_id, sink, ctx, info,
                   e);
}

int message_attachment_fd(int fd, const char *att_id, message_sink_fn sink, void *ctx,
                          struct message_attachment_info *info, struct err *e)
{
    gmime_ensure();
    GMimeStream *s = fd_stream(fd, e);
    if (!s)
        return -1;
    return extract(s, att_id, sink, ctx, info, e);
}

/* ---- the TOP view ------------------------------------------------------------------------ */

/* Offset of the body (after the first empty line), or len if there is none. */
static size_t body_offset(const char *s, size_t len, bool *found)
{
    *found = false;
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\n')
            continue;
        size_t l = i - line;
        if (l == 0 || (l == 1 && s[line] == '\r')) {
            *found = true;
            return i + 1;
        }
        line = i + 1;
    }
    return len;
}

cJSON *message_top_json(const void *raw, size_t len, const char *uidl, struct err *e)
{
    if (!raw && len) {
        err_set(e, ERR_USAGE, "message: no buffer given for %zu bytes", len);
        return NULL;
    }
    gmime_ensure();
    struct ctx c;
    if (ctx_init(&c, NULL, false) != 0) {
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    cJSON *t = cJSON_CreateObject();
    if (!t) {
        ctx_done(&c);
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    const char *s = raw ? raw : "";
    bool has_body;
    size_t off = body_offset(s, len, &has_body);
    GMimeMessage *msg = NULL;
    if (len) {
        /* only the header matters here: the body of a TOP reply is cut anyway */
        GMimeStream *st = g_mime_stream_mem_new_with_buffer(s, off);
        msg = parse(&c, st);
        g_object_unref(st);
    }
    add_str_or_null(&c, t, "uidl", uidl);
    add(&c, t, "headers", msg ? header_array(&c, msg) : cJSON_CreateArray());
    add_str_or_null(&c, t, "subject", msg ? g_mime_message_get_subject(msg) : NULL);
    add(&c, t, "from", msg ? first_address(&c, g_mime_message_get_from(msg), "From")
                           : cJSON_CreateNull());
    add(&c, t, "date", msg ? date_json(&c, msg) : cJSON_CreateNull());
    if (has_body) {
        size_t n = len - off;
        GString *b = g_string_sized_new(n < MESSAGE_TOP_BODY_MAX ? n + 16 : MESSAGE_TOP_BODY_MAX);
        utf8_append(b, s + off, n < MESSAGE_TOP_BODY_MAX ? n : MESSAGE_TOP_BODY_MAX);
        utf8_truncate(b, MESSAGE_TOP_BODY_MAX);
        add(&c, t, "body", cJSON_CreateString(b->str));
        g_string_free(b, TRUE);
    } else {
        add(&c, t, "body", cJSON_CreateString(""));
    }
    if (msg)
        g_object_unref(msg);
    bool oom = c.oom;
    ctx_done(&c);
    if (oom) {
        cJSON_Delete(t);
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    return t;
}

/* ---- Message-ID without a parse -------------------------------------------------- */

int message_id_of(const void *head, size_t len, char *out, size_t size)
{
    const char *p = head, *end = p + len;
    if (size)
        out[0] = '\0';
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        size_t n = (size_t)(line_end - p);
        if (n && p[n - 1] == '\r')
            n--;
        if (n == 0)
            return 0; /* the blank line: the header ended without one */
        if (n >= 11 && g_ascii_strncasecmp(p, "Message-ID:", 11) == 0) {
            /* the value, with its continuation lines */
            char val[1024];
            size_t v = 0;
            const char *q = p + 11;
            for (;;) {
                for (; q < p + n && v + 1 < sizeof val; q++)
                    val[v++] = *q == '\t' ? ' ' : *q;
                if (!eol || eol + 1 >= end || (eol[1] != ' ' && eol[1] != '\t'))
                    break;
                p = eol + 1;
                eol = memchr(p, '\n', (size_t)(end - p));
                line_end = eol ? eol : end;
                n = (size_t)(line_end - p);
                if (n && p[n - 1] == '\r')
                    n--;
                q = p;
            }
            val[v] = '\0';
            char *lt = strchr(val, '<'), *gt = lt ? strchr(lt, '>') : NULL;
            char *b = lt && gt ? lt + 1 : val, *e = lt && gt ? gt : val + v;
            while (b < e && (*b == ' ' || *b == '\r'))
                b++;
            while (e > b && (e[-1] == ' ' || e[-1] == '\r'))
                e--;
            if (e == b || !size)
                return 0;
            size_t k = (size_t)(e - b) < size - 1 ? (size_t)(e - b) : size - 1;
            memcpy(out, b, k);
            out[k] = '\0';
            return 1;
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    return 0;
}

/* ---- what a webhook filter looks at -------------------------------------------------- */

/* Where the header block of buf[0..len) ends (the offset after its blank
 * line), or 0 when no blank line ends it there; scans from the line that
 * starts at *line, and leaves there the start of the last line not seen
 * whole.  Looks at nothing past the blank line. */
static size_t header_scan(const char *buf, size_t len, size_t *line)
{
    size_t i = *line;
    while (i < len) {
        *line = i;
        if (buf[i] == '\n')
            return i + 1; /* an empty line ends the header */
        if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl)
            return 0;
        i = (size_t)(nl - buf) + 1;
    }
    *line = i;
    return 0;
}

/* The header block, read from fd in MESSAGE_CHUNK steps up to
 * MESSAGE_FILTER_HEAD_MAX bytes: a new buffer and its length in *len.
 * NULL with e cleared when it does not end within that; NULL with e set
 * on a read error or without memory. */
static char *head_of_fd(int fd, size_t *len, struct err *e)
{
    size_t cap = 0, have = 0, line = 0;
    char *buf = NULL;
    err_clear(e);
    while (have < MESSAGE_FILTER_HEAD_MAX) {
        if (have == cap) {
            cap += MESSAGE_CHUNK;
            char *nb = g_try_realloc(buf, cap);
            if (!nb) {
                g_free(buf);
                err_set(e, ERR_INTERNAL, "message: out of memory");
                return NULL;
            }
            buf = nb;
        }
        ssize_t n = pread(fd, buf + have, cap - have, (off_t)have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_set(e, ERR_INTERNAL, "message: reading the stored message: %s", strerror(errno));
            g_free(buf);
            return NULL;
        }
        have += (size_t)n;
        size_t end = header_scan(buf, have, &line);
        if (end) {
            *len = end;
            return buf;
        }
        if (n == 0)
            break; /* all of it is header: the whole message is parsed */
    }
    g_free(buf);
    return NULL;
}

/* An attachment entry as the full object would list it, with only what a
 * filter looks at: disposition and filename.  Parts are not decoded. */
static void filter_leaf(struct ctx *c, GMimeObject *obj)
{
    const char *fname = filename_of(obj);
    bool att = disposition_is_attachment(obj);
    bool body_candidate = GMIME_IS_PART(obj) && !att && !fname;
    if (body_candidate && !c->have_text && is_type(obj, "text", "plain")) {
        c->have_text = true;
        return;
    }
    if (body_candidate && !c->have_html && is_type(obj, "text", "html")) {
        c->have_html = true;
        return;
    }
    if (c->natts >= MESSAGE_ATTACHMENTS_MAX)
        return;
    c->natts++;
    cJSON *a = cJSON_CreateObject();
    if (!a) {
        c->oom = true;
        return;
    }
    add(c, a, "disposition", cJSON_CreateString(att ? "attachment" : "inline"));
    add(c, a, "filename", fname ? jstr(c, "filename", fname) : cJSON_CreateNull());
    push(c, c->atts, a);
}

/* walk() for filter_leaf, under the same bounds (parts, depth). */
static void filter_walk(struct ctx *c, GMimeObject *obj, int depth)
{
    if (!obj || c->oom || ++c->parts_seen > MESSAGE_PARTS_MAX)
        return;
    if (!GMIME_IS_MULTIPART(obj)) {
        filter_leaf(c, obj);
        return;
    }
    if (depth >= MESSAGE_DEPTH_MAX)
        return;
    GMimeMultipart *mp = GMIME_MULTIPART(obj);
    int n = g_mime_multipart_get_count(mp);
    if (n == 0) {
        const char *pro = g_mime_multipart_get_prologue(mp);
        if (pro && *pro)
            c->have_text = true; /* taken as the text, as the full object does */
    }
    for (int i = 0; i < n && !c->oom; i++)
        filter_walk(c, g_mime_multipart_get_part(mp, i), depth + 1);
}

/* The filter's fields of a parsed message (NULL: none) into m. */
static void filter_fill(struct ctx *c, cJSON *m, GMimeMessage *msg, unsigned what)
{
    add_str_or_null(c, m, "subject", msg ? g_mime_message_get_subject(msg) : NULL);
    add(c, m, "from", msg ? first_address(c, g_mime_message_get_from(msg), "From")
                          : cJSON_CreateNull());
    add(c, m, "to", msg ? address_array(c, g_mime_message_get_to(msg), "To") : cJSON_CreateArray());
    add(c, m, "cc", msg ? address_array(c, g_mime_message_get_cc(msg), "Cc") : cJSON_CreateArray());
    add(c, m, "headers", msg ? header_array(c, msg) : cJSON_CreateArray());
    struct mailclass_headers h = {
        .subject = msg ? g_mime_message_get_subject(msg) : NULL,
        .auto_submitted = first_value(msg, "Auto-Submitted"),
        .x_autoreply = first_value(msg, "X-Autoreply"),
        .x_autorespond = first_value(msg, "X-Autorespond"),
        .precedence = first_value(msg, "Precedence"),
        .x_auto_response_suppress = first_value(msg, "X-Auto-Response-Suppress"),
    };
    const char *kind = mailclass_auto_reply(&h);
    add(c, m, "auto_reply", kind ? cJSON_CreateString(kind) : cJSON_CreateNull());
    if (!(what & MESSAGE_FILTER_ATTACHMENTS))
        return;
    c->atts = cJSON_CreateArray();
    if (!c->atts) {
        c->oom = true;
        return;
    }
    if (msg)
        filter_walk(c, g_mime_message_get_mime_part(msg), 0);
    add(c, m, "attachments", c->atts);
    c->atts = NULL;
}

static cJSON *filter_build(GMimeStream *stream, unsigned what, struct err *e)
{
    struct ctx c;
    cJSON *m = NULL;
    if (ctx_init(&c, NULL, false) == 0 && (m = cJSON_CreateObject()) != NULL) {
        GMimeMessage *msg = parse(&c, stream);
        filter_fill(&c, m, msg, what);
        if (msg)
            g_object_unref(msg);
    }
    bool oom = c.oom || !m;
    ctx_done(&c);
    if (oom) {
        cJSON_Delete(m);
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    return m;
}

cJSON *message_filter_json(const void *raw, size_t len, int fd, unsigned what, struct err *e)
{
    if (fd < 0 && !raw && len) {
        err_set(e, ERR_USAGE, "message: no buffer given for %zu bytes", len);
        return NULL;
    }
    gmime_ensure();
    GMimeStream *s = NULL;
    char *head = NULL;
    if (!(what & MESSAGE_FILTER_ATTACHMENTS)) {
        /* the header block only; when it does not end within
         * MESSAGE_FILTER_HEAD_MAX, the whole message (as the full object) */
        size_t hl = 0;
        if (fd >= 0) {
            head = head_of_fd(fd, &hl, e);
            if (!head && e->kind != ERR_NONE)
                return NULL;
        } else {
            size_t line = 0;
            hl = header_scan(raw ? raw : "",
                             len < MESSAGE_FILTER_HEAD_MAX ? len : MESSAGE_FILTER_HEAD_MAX, &line);
        }
        if (head)
            s = g_mime_stream_mem_new_with_buffer(head, hl);
        else if (fd < 0 && hl)
            s = g_mime_stream_mem_new_with_buffer(raw, hl);
    }
    if (!s && fd >= 0 && !(s = fd_stream(fd, e))) {
        g_free(head);
        return NULL;
    }
    if (!s)
        s = g_mime_stream_mem_new_with_buffer(raw ? raw : "", len);
    cJSON *m = filter_build(s, what, e);
    g_object_unref(s);
    g_free(head);
    return m;
}
