/* message — RFC 5322 message (GMime) to the event's JSON; see include/message.h. */
#include "message.h"
#include "message_impl.h"

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
            msg_perr(c, "%s: more than %d addresses, the rest left out", what, MESSAGE_ADDRESSES_MAX);
            return;
        }
        cJSON *a = cJSON_CreateObject();
        if (!a) {
            c->oom = true;
            return;
        }
        msg_push(c, arr, a);
        if (c->oom)
            return;
        const char *name = internet_address_get_name(ia);
        msg_add(c, a, "name", msg_jstr(c, what, name && *name ? name : NULL));
        msg_add(c, a, "address",
            msg_jstr(c, what, internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia))));
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
            msg_perr(c, "%d header fields; only the first %d are listed", n, MESSAGE_HEADERS_MAX);
            break;
        }
        GMimeHeader *h = g_ptr_array_index(all, i);
        const char *name = g_mime_header_get_name(h);
        const char *value = g_mime_header_get_value(h);
        name = name ? name : "";
        value = value ? value : "";
        bytes += strlen(name) + strlen(value);
        if (bytes > MESSAGE_HEADER_BYTES_MAX) {
            msg_perr(c, "header fields exceed %d bytes; only the first %d are listed",
                 MESSAGE_HEADER_BYTES_MAX, i);
            break;
        }
        cJSON *o = cJSON_CreateObject();
        if (!o) {
            c->oom = true;
            break;
        }
        msg_push(c, arr, o);
        if (c->oom)
            break;
        char what[MESSAGE_ERROR_ITEM_MAX + 16];
        char q[MESSAGE_ERROR_ITEM_MAX];
        msg_quote_item(q, sizeof q, name);
        snprintf(what, sizeof what, "header %s", q);
        msg_add(c, o, "name", msg_jstr(c, what, name));
        GString *v = g_string_new(NULL);
        /* unfold (RFC 5322 2.2.3): a value may still carry the CR/LF of folds */
        for (const char *p = value; *p; p++)
            if (*p != '\r' && *p != '\n')
                g_string_append_c(v, *p);
        msg_add(c, o, "value", msg_jstr(c, what, v->str));
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
        msg_perr(c, "no Date header");
        return cJSON_CreateNull();
    }
    GDateTime *dt = g_mime_message_get_date(msg);
    GDateTime *utc = dt ? g_date_time_to_utc(dt) : NULL;
    if (!utc) {
        char q[MESSAGE_ERROR_ITEM_MAX];
        msg_quote_item(q, sizeof q, raw);
        msg_perr(c, "Date header not understood: %s", q);
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
        msg_perr(c, "public_url and id longer than %d bytes: no URLs", MESSAGE_URL_MAX - 1);
    g_string_free(g, TRUE);
}

/* The query that signs the link to <base>/<sub> (links.h), "" without a
 * link key.  The signed path is the decoded one the API will see. */
int msg_link_query(struct ctx *c, const char *sub, char *q, size_t size)
{
    q[0] = '\0';
    if (!c->o->link_key)
        return 0;
    char path[LINKS_PATH_MAX];
    int n = snprintf(path, sizeof path, "/api/v1/messages/%s/%s", c->o->id, sub);
    if (n < 0 || (size_t)n >= sizeof path ||
        links_query(c->o->link_key, c->o->link_key_len, path, c->o->link_exp, q, size) < 0) {
        msg_perr(c, "a link could not be signed: no URL");
        return -1;
    }
    return 0;
}

static void add_str_or_null(struct ctx *c, cJSON *obj, const char *key, const char *s)
{
    msg_add(c, obj, key, msg_jstr(c, key, s));
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

/* The header fields that tell an automatic reply (mailclass_auto_reply),
 * the event's and the routing filter's alike; the other fields NULL.  The
 * strings live as long as msg (NULL: none). */
static struct mailclass_headers auto_reply_headers(GMimeMessage *msg)
{
    return (struct mailclass_headers){
        .subject = msg ? g_mime_message_get_subject(msg) : NULL,
        .auto_submitted = first_value(msg, "Auto-Submitted"),
        .x_autoreply = first_value(msg, "X-Autoreply"),
        .x_autorespond = first_value(msg, "X-Autorespond"),
        .precedence = first_value(msg, "Precedence"),
        .x_auto_response_suppress = first_value(msg, "X-Auto-Response-Suppress"),
    };
}

/* "auto_reply": the kind of automatic reply h shows, or null. */
static void add_auto_reply(struct ctx *c, cJSON *m, const struct mailclass_headers *h)
{
    const char *kind = mailclass_auto_reply(h);
    msg_add(c, m, "auto_reply", kind ? cJSON_CreateString(kind) : cJSON_CreateNull());
}

/* authentication, spam, auto_reply, bounce, list, mailbox_hash (null
 * without a header). */
static void add_classification(struct ctx *c, cJSON *m, GMimeMessage *msg)
{
    GPtrArray *ar = header_values(msg, "Authentication-Results");
    msg_add(c, m, "authentication",
        authres_json((const char *const *)ar->pdata, ar->len, c->o->trusted_authserv_ids,
                     c->o->trusted_authserv_id_count));
    g_ptr_array_free(ar, TRUE);
    struct mailclass_headers h = auto_reply_headers(msg);
    h.x_spam_status = first_value(msg, "X-Spam-Status");
    h.x_spam_score = first_value(msg, "X-Spam-Score");
    h.x_spam_flag = first_value(msg, "X-Spam-Flag");
    h.list_id = first_value(msg, "List-Id");
    h.list_unsubscribe = first_value(msg, "List-Unsubscribe");
    h.list_unsubscribe_post = first_value(msg, "List-Unsubscribe-Post");
    msg_add(c, m, "spam", mailclass_spam_json(&h));
    add_auto_reply(c, m, &h);
    msg_add(c, m, "bounce",
        bounce_json(msg, c->text ? c->text->str : NULL, c->html ? c->html->str : NULL));
    msg_add(c, m, "list", mailclass_list_json(&h));
    char *hash = NULL;
    if (msg && c->o->address) {
        GPtrArray *rc = recipients(c, msg);
        hash = subaddr_detail(c->o->address, (const char *const *)rc->pdata, rc->len);
        g_ptr_array_free(rc, TRUE);
    }
    msg_add(c, m, "mailbox_hash", hash ? cJSON_CreateString(hash) : cJSON_CreateNull());
    g_free(hash);
}

GMimeMessage *msg_parse(struct ctx *c, GMimeStream *stream)
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
            msg_perr(c, "no header fields");
        msg_add(c, m, "date", date_json(c, msg));
        add_str_or_null(c, m, "subject", g_mime_message_get_subject(msg));
        add_str_or_null(c, m, "message_id", g_mime_message_get_message_id(msg));
        GMimeReferences *irt = ids_of(c, msg, "In-Reply-To");
        add_str_or_null(c, m, "in_reply_to",
                        irt && g_mime_references_length(irt) > 0
                            ? g_mime_references_get_message_id(irt, 0)
                            : NULL);
        if (irt)
            g_mime_references_free(irt);
        cJSON *refs = msg_add(c, m, "references", cJSON_CreateArray());
        GMimeReferences *r = ids_of(c, msg, "References");
        int nr = r ? g_mime_references_length(r) : 0;
        for (int i = 0; refs && i < nr && !c->oom; i++) {
            if (i >= MESSAGE_REFERENCES_MAX) {
                msg_perr(c, "References: more than %d ids, the rest left out", MESSAGE_REFERENCES_MAX);
                break;
            }
            msg_push(c, refs, msg_jstr(c, "References", g_mime_references_get_message_id(r, i)));
        }
        if (r)
            g_mime_references_free(r);
        msg_add(c, m, "from", first_address(c, g_mime_message_get_from(msg), "From"));
        msg_add(c, m, "sender", first_address(c, g_mime_message_get_sender(msg), "Sender"));
        msg_add(c, m, "reply_to", address_array(c, g_mime_message_get_reply_to(msg), "Reply-To"));
        msg_add(c, m, "to", address_array(c, g_mime_message_get_to(msg), "To"));
        msg_add(c, m, "cc", address_array(c, g_mime_message_get_cc(msg), "Cc"));
        msg_add(c, m, "headers", header_array(c, msg));
    } else {
        const char *nulls[] = {"date", "subject", "message_id", "in_reply_to"};
        for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
            msg_add(c, m, nulls[i], cJSON_CreateNull());
        msg_add(c, m, "references", cJSON_CreateArray());
        msg_add(c, m, "from", cJSON_CreateNull());
        msg_add(c, m, "sender", cJSON_CreateNull());
        const char *arrays[] = {"reply_to", "to", "cc", "headers"};
        for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
            msg_add(c, m, arrays[i], cJSON_CreateArray());
    }
    c->atts = cJSON_CreateArray();
    if (!c->atts) {
        c->oom = true;
        return;
    }
    if (msg && !c->oom)
        msg_walk(c, g_mime_message_get_mime_part(msg), "", 0);
    cJSON *atts = c->atts;
    c->atts = NULL;
    msg_add(c, m, "text", c->text ? cJSON_CreateString(c->text->str) : cJSON_CreateNull());
    msg_add(c, m, "html", c->html ? cJSON_CreateString(c->html->str) : cJSON_CreateNull());
    msg_add(c, m, "text_reply", text_reply_json(c));
    add_classification(c, m, msg);
    msg_add(c, m, "attachments", atts);
    if (c->base_url[0]) {
        char url[MESSAGE_URL_MAX], q[LINKS_QUERY_MAX];
        int n = msg_link_query(c, "raw", q, sizeof q) < 0
                    ? -1
                    : snprintf(url, sizeof url, "%s/raw%s", c->base_url, q);
        msg_add(c, m, "raw_url",
            (n < 0 || (size_t)n >= sizeof url) ? cJSON_CreateNull() : cJSON_CreateString(url));
    } else {
        msg_add(c, m, "raw_url", cJSON_CreateNull());
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
            msg_capped_put(&k, buf, (size_t)n);
        }
    }
    g_free(buf);
    GString *s = msg_text_to_utf8(c, "1", NULL, (const char *)k.buf->data, k.buf->len);
    g_byte_array_free(k.buf, TRUE);
    msg_utf8_truncate(s, MESSAGE_BODY_MAX);
    return s;
}

/* Builds the object from a GMime stream over the raw message. */
static cJSON *build(GMimeStream *stream, uint64_t size, const char *sha_hex,
                    const struct message_opts *o, struct err *e)
{
    struct ctx c;
    if (msg_ctx_init(&c, o, true) != 0) {
        msg_ctx_done(&c);
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    cJSON *m = cJSON_CreateObject();
    if (!m) {
        msg_ctx_done(&c);
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    set_base_url(&c);
    add_str_or_null(&c, m, "id", c.o->id);
    add_str_or_null(&c, m, "uidl", c.o->uidl);
    msg_add(&c, m, "size", cJSON_CreateNumber((double)size));
    add_str_or_null(&c, m, "sha256", sha_hex);
    add_str_or_null(&c, m, "received_at", c.o->received_at);

    GMimeMessage *msg = NULL;
    if (size == 0)
        msg_perr(&c, "empty message");
    else {
        msg = msg_parse(&c, stream);
        if (!msg) {
            msg_perr(&c, "no RFC 5322 header found; the whole input is taken as text");
            c.text = stream_text(&c, stream);
        }
    }
    fill(&c, m, msg);
    if (msg)
        g_object_unref(msg);
    cJSON *errs = c.errors;
    c.errors = NULL;
    msg_add(&c, m, "parse_errors", errs);
    bool oom = c.oom;
    msg_ctx_done(&c);
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
    msg_gmime_ensure();
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
    msg_gmime_ensure();
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
    msg_ctx_init(&c, NULL, false);
    c.want = att_id;
    c.sink = sink;
    c.sink_ctx = sctx;
    c.info = info;
    c.e = e;
    GMimeMessage *msg = g_mime_stream_length(stream) > 0 ? msg_parse(&c, stream) : NULL;
    if (msg)
        msg_walk(&c, g_mime_message_get_mime_part(msg), "", 0);
    int rc = c.extract_rc;
    if (!c.found) {
        char q[MESSAGE_ERROR_ITEM_MAX];
        msg_quote_item(q, sizeof q, att_id);
        rc = err_set(e, ERR_USAGE, "message: no attachment \"%s\" in this message", q);
    }
    if (msg)
        g_object_unref(msg);
    g_object_unref(stream);
    msg_ctx_done(&c);
    return rc;
}

int message_attachment(const void *raw, size_t len, const char *att_id, message_sink_fn sink,
                       void *ctx, struct message_attachment_info *info, struct err *e)
{
    if (!raw && len)
        return err_set(e, ERR_USAGE, "message: no buffer given for %zu bytes", len);
    msg_gmime_ensure();
    return extract(g_mime_stream_mem_new_with_buffer(raw ? raw : "", len), att_id, sink, ctx, info,
                   e);
}

int message_attachment_fd(int fd, const char *att_id, message_sink_fn sink, void *ctx,
                          struct message_attachment_info *info, struct err *e)
{
    msg_gmime_ensure();
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
    msg_gmime_ensure();
    struct ctx c;
    if (msg_ctx_init(&c, NULL, false) != 0) {
        err_set(e, ERR_INTERNAL, "message: out of memory");
        return NULL;
    }
    cJSON *t = cJSON_CreateObject();
    if (!t) {
        msg_ctx_done(&c);
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
        msg = msg_parse(&c, st);
        g_object_unref(st);
    }
    add_str_or_null(&c, t, "uidl", uidl);
    msg_add(&c, t, "headers", msg ? header_array(&c, msg) : cJSON_CreateArray());
    add_str_or_null(&c, t, "subject", msg ? g_mime_message_get_subject(msg) : NULL);
    msg_add(&c, t, "from", msg ? first_address(&c, g_mime_message_get_from(msg), "From")
                           : cJSON_CreateNull());
    msg_add(&c, t, "date", msg ? date_json(&c, msg) : cJSON_CreateNull());
    if (has_body) {
        size_t n = len - off;
        GString *b = g_string_sized_new(n < MESSAGE_TOP_BODY_MAX ? n + 16 : MESSAGE_TOP_BODY_MAX);
        msg_utf8_append(b, s + off, n < MESSAGE_TOP_BODY_MAX ? n : MESSAGE_TOP_BODY_MAX);
        msg_utf8_truncate(b, MESSAGE_TOP_BODY_MAX);
        msg_add(&c, t, "body", cJSON_CreateString(b->str));
        g_string_free(b, TRUE);
    } else {
        msg_add(&c, t, "body", cJSON_CreateString(""));
    }
    if (msg)
        g_object_unref(msg);
    bool oom = c.oom;
    msg_ctx_done(&c);
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

/* The filter's fields of a parsed message (NULL: none) into m. */
static void filter_fill(struct ctx *c, cJSON *m, GMimeMessage *msg, unsigned what)
{
    add_str_or_null(c, m, "subject", msg ? g_mime_message_get_subject(msg) : NULL);
    msg_add(c, m, "from", msg ? first_address(c, g_mime_message_get_from(msg), "From")
                          : cJSON_CreateNull());
    msg_add(c, m, "to", msg ? address_array(c, g_mime_message_get_to(msg), "To") : cJSON_CreateArray());
    msg_add(c, m, "cc", msg ? address_array(c, g_mime_message_get_cc(msg), "Cc") : cJSON_CreateArray());
    msg_add(c, m, "headers", msg ? header_array(c, msg) : cJSON_CreateArray());
    struct mailclass_headers h = auto_reply_headers(msg);
    add_auto_reply(c, m, &h);
    if (!(what & MESSAGE_FILTER_ATTACHMENTS))
        return;
    c->atts = cJSON_CreateArray();
    if (!c->atts) {
        c->oom = true;
        return;
    }
    if (msg)
        msg_filter_walk(c, g_mime_message_get_mime_part(msg), 0);
    msg_add(c, m, "attachments", c->atts);
    c->atts = NULL;
}

static cJSON *filter_build(GMimeStream *stream, unsigned what, struct err *e)
{
    struct ctx c;
    cJSON *m = NULL;
    if (msg_ctx_init(&c, NULL, false) == 0 && (m = cJSON_CreateObject()) != NULL) {
        GMimeMessage *msg = msg_parse(&c, stream);
        filter_fill(&c, m, msg, what);
        if (msg)
            g_object_unref(msg);
    }
    bool oom = c.oom || !m;
    msg_ctx_done(&c);
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
    msg_gmime_ensure();
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
