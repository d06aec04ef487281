/* Unit tests: events written to a file (include/event.h) from a real store:
 * the bytes cJSON would print, signed while written, the inline budget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "clock.h"
#include "event.h"
#include "message.h"
#include "webhook.h"

#include "tmpstore.h"

#define T0 1700000000000LL

static int setup(void **state) { return tmpstore_setup(state, "event"); }

static int64_t store_raw(struct store *st, const char *uidl, const char *raw, size_t len)
{
    struct err e;
    struct store_msg *m = NULL;
    struct store_msg_result res;
    const char *wh[] = {"hook"};
    assert_int_equal(store_msg_begin(st, "acct", uidl, &m, &e), 0);
    for (size_t off = 0; off < len; off += 70000)
        assert_int_equal(store_msg_write(m, raw + off, len - off < 70000 ? len - off : 70000, &e),
                         0);
    assert_int_equal(store_msg_finish(m, NULL, wh, 1, T0, &res, &e), 0);
    return res.id;
}

static char *read_all(int fd, uint64_t len)
{
    char *p = malloc(len + 1);
    assert_non_null(p);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, p + got, len - got, (off_t)got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    p[len] = '\0';
    return p;
}

struct tap {
    GString *seen;
    struct webhook_signer *sig;
};

static int tap_fn(void *ctx, const void *data, size_t len)
{
    struct tap *t = ctx;
    g_string_append_len(t->seen, data, (gssize)len);
    return webhook_signer_update(t->sig, data, len);
}

static const char SMALL[] =
    "From: =?UTF-8?Q?Andr=C3=A9?= <andre@example.org>\r\n"
    "To: \"Quote \\\"Me\\\"\" <q@example.org>\r\n"
    "Subject: tabs\tand \"quotes\" and \\ back\r\n"
    "Date: Tue, 2 Jan 2024 10:00:00 +0000\r\n"
    "Message-ID: <small.1@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"b\"\r\n"
    "\r\n"
    "--b\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Caf\xc3\xa9 \xe2\x82\xac line\r\n\x01" "control\r\n"
    "--b\r\n"
    "Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAECAwQFBgcICQ==\r\n"
    "--b--\r\n";

/* The file holds exactly what cJSON prints for the same event; the tap saw
 * the same bytes; the signature made while writing is webhook_sign's. */
static void spool_equals_cjson(void **state)
{
    struct tmpstore *fx = *state;
    int64_t id = store_raw(fx->st, "u-small", SMALL, sizeof SMALL - 1);
    unsigned char key[32];
    memset(key, 7, sizeof key);
    struct tap t = {g_string_new(NULL), webhook_signer_new(key, sizeof key, "msg_t", 1700000000)};
    struct event_opts o = {.public_url = "http://127.0.0.1:8025", .inline_max = 1024,
                           .now_ms = T0 + 1234};
    int fd = -1;
    uint64_t len = 0;
    struct err e;
    assert_int_equal(event_spool(fx->st, fx->dir, id, &o, tap_fn, &t, &fd, &len, &e), 0);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_nlink, 0);            /* never linked */
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal((uint64_t)sb.st_size, len);
    char *got = read_all(fd, len);
    close(fd);

    /* the same event, built as a tree and printed by cJSON */
    struct store_msg_info info;
    struct event_opts mo = {.public_url = "http://127.0.0.1:8025", .inline_max = 1024};
    cJSON *m = event_message(fx->st, fx->dir, id, &mo, &info, &e);
    assert_non_null(m);
    char when[40];
    cJSON *ev = cJSON_CreateObject(), *data = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "type", "message.received");
    cJSON_AddStringToObject(ev, "timestamp", clock_rfc3339(T0 + 1234, 1, when, sizeof when));
    cJSON_AddStringToObject(data, "account", "acct");
    cJSON_AddItemToObject(data, "message", m);
    cJSON_AddItemToObject(ev, "data", data);
    char *want = cJSON_PrintUnformatted(ev);
    assert_string_equal(got, want);
    assert_string_equal(cJSON_GetObjectItem(ev, "timestamp")->valuestring,
                        "2023-11-14T22:13:21.234Z");
    /* escapes really were exercised */
    assert_non_null(strstr(got, "\\t"));
    assert_non_null(strstr(got, "\\\""));
    assert_non_null(strstr(got, "\\u0001"));
    assert_non_null(strstr(got, "Caf\xc3\xa9"));

    assert_int_equal(t.seen->len, len);
    assert_memory_equal(t.seen->str, got, len);
    char sig[WEBHOOK_SIG_SIZE], whole[WEBHOOK_SIG_SIZE];
    assert_int_equal(webhook_signer_final(t.sig, sig, sizeof sig), 0);
    assert_int_equal(webhook_sign(key, sizeof key, "msg_t", 1700000000, got, len, whole,
                                  sizeof whole),
                     0);
    assert_string_equal(sig, whole);
    webhook_signer_free(t.sig);
    g_string_free(t.seen, TRUE);
    cJSON_free(want);
    cJSON_Delete(ev);
    free(got);
}

/* size KiB of one byte value, base64 in lines of 76 */
static void add_attachment(GString *g, const char *name, size_t size, int fill)
{
    guchar *bytes = g_malloc(size);
    memset(bytes, fill, size);
    gchar *b64 = g_base64_encode(bytes, size);
    g_string_append_printf(g,
                           "--b\r\nContent-Type: application/octet-stream\r\n"
                           "Content-Disposition: attachment; filename=\"%s\"\r\n"
                           "Content-Transfer-Encoding: base64\r\n\r\n",
                           name);
    for (size_t i = 0, n = strlen(b64); i < n; i += 76) {
        g_string_append_len(g, b64 + i, (gssize)(n - i < 76 ? n - i : 76));
        g_string_append(g, "\r\n");
    }
    g_free(b64);
    g_free(bytes);
}

static cJSON *spooled_event(struct tmpstore *fx, int64_t id, const struct event_opts *o)
{
    int fd = -1;
    uint64_t len = 0;
    struct err e;
    assert_int_equal(event_spool(fx->st, fx->dir, id, o, NULL, NULL, &fd, &len, &e), 0);
    char *text = read_all(fd, len);
    close(fd);
    cJSON *ev = cJSON_Parse(text);
    assert_non_null(ev);
    free(text);
    return ev;
}

/* Attachments are inlined in order while the budget lasts; the rest travel
 * as URLs and say which limit kept them out. */
static void inline_budget(void **state)
{
    struct tmpstore *fx = *state;
    GString *g = g_string_new("From: a@example.org\r\nSubject: many\r\nMIME-Version: 1.0\r\n"
                              "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
                              "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n");
    static const size_t kib[] = {300, 300, 300, 600, 100, 300, 20};
    for (size_t i = 0; i < sizeof kib / sizeof kib[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%zu.bin", i);
        add_attachment(g, name, kib[i] << 10, 'a' + (int)i);
    }
    g_string_append(g, "--b--\r\n");
    int64_t id = store_raw(fx->st, "u-many", g->str, g->len);
    g_string_free(g, TRUE);

    struct event_opts o = {.public_url = "http://h", .inline_max = 512 << 10,
                           .inline_total_max = 1 << 20, .now_ms = T0};
    cJSON *ev = spooled_event(fx, id, &o);
    cJSON *atts = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "data"),
                                                          "message"),
                                      "attachments");
    assert_int_equal(cJSON_GetArraySize(atts), 7);
    /* 300+300+300 = 900 KiB inlined; 600 is over inline_max; 100 still fits
     * (1000 KiB); 300 would pass the budget; 20 fits (1020 KiB) */
    static const char *const want[] = {NULL, NULL, NULL, "inline_attachments_max", NULL,
                                       "inline_total_max", NULL};
    uint64_t inlined = 0;
    for (int i = 0; i < 7; i++) {
        cJSON *a = cJSON_GetArrayItem(atts, i);
        cJSON *content = cJSON_GetObjectItem(a, "content");
        cJSON *limit = cJSON_GetObjectItem(a, "inline_limit");
        if (!want[i]) {
            assert_true(cJSON_IsString(content));
            assert_null(cJSON_GetObjectItem(a, "url"));
            assert_null(limit);
            inlined += (uint64_t)cJSON_GetObjectItem(a, "size")->valuedouble;
        } else {
            assert_null(content);
            assert_true(cJSON_IsString(cJSON_GetObjectItem(a, "url")));
            assert_true(cJSON_IsString(limit));
            assert_string_equal(limit->valuestring, want[i]);
        }
    }
    assert_true(inlined <= (1u << 20));
    assert_int_equal(inlined, (300 + 300 + 300 + 100 + 20) << 10);
    cJSON_Delete(ev);

    /* 0: the default budget, 1 MiB, as the API view uses */
    o.inline_total_max = 0;
    ev = spooled_event(fx, id, &o);
    atts = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "data"), "message"),
                               "attachments");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(atts, 5), "inline_limit")
                            ->valuestring,
                        "inline_total_max");
    cJSON_Delete(ev);

    /* a budget of one byte inlines nothing of any size */
    o.inline_total_max = 1;
    ev = spooled_event(fx, id, &o);
    atts = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "data"), "message"),
                               "attachments");
    for (int i = 0; i < 7; i++)
        assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(atts, i), "content"));
    cJSON_Delete(ev);
}

static void missing_message(void **state)
{
    struct tmpstore *fx = *state;
    struct event_opts o = {.inline_max = 1024};
    int fd = 5;
    uint64_t len = 9;
    struct err e;
    assert_int_equal(event_spool(fx->st, fx->dir, 424242, &o, NULL, NULL, &fd, &len, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_int_equal(fd, -1);
    assert_int_equal(len, 0);
    /* a directory where no file can be made */
    int64_t id = store_raw(fx->st, "u-nodir", SMALL, sizeof SMALL - 1);
    assert_int_equal(event_spool(fx->st, "/nonexistent-dir", id, &o, NULL, NULL, &fd, &len, &e),
                     -1);
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_int_equal(fd, -1);
}

static int stop_after_some(void *ctx, const void *data, size_t len)
{
    (void)data;
    size_t *left = ctx;
    if (len > *left)
        return -1;
    *left -= len;
    return 0;
}

static void tap_failure_stops(void **state)
{
    struct tmpstore *fx = *state;
    int64_t id = store_raw(fx->st, "u-tap", SMALL, sizeof SMALL - 1);
    struct event_opts o = {.inline_max = 1024};
    size_t left = 10;
    int fd = -1;
    uint64_t len = 0;
    struct err e;
    assert_int_equal(event_spool(fx->st, fx->dir, id, &o, stop_after_some, &left, &fd, &len, &e),
                     -1);
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_int_equal(fd, -1);
}

/* The spooled event's parsed "type" and the account's options. */
static cJSON *spool_parsed(struct tmpstore *fx, int64_t id, const struct event_opts *o)
{
    int fd = -1;
    uint64_t len = 0;
    struct err e;
    assert_int_equal(event_spool(fx->st, fx->dir, id, o, NULL, NULL, &fd, &len, &e), 0);
    char *got = read_all(fd, len);
    close(fd);
    cJSON *ev = cJSON_Parse(got);
    free(got);
    assert_non_null(ev);
    return ev;
}

static char *slurp(const char *path, size_t *len)
{
    gchar *p = NULL;
    gsize n = 0;
    if (!g_file_get_contents(path, &p, &n, NULL))
        fail_msg("cannot read %s", path);
    *len = n;
    return p;
}

/* A delivery status notification is a "message.bounce" with its bounce
 * object; an ordinary message stays "message.received"; the account's
 * address gives mailbox_hash and its trusted ids pick the
 * Authentication-Results field. */
static void event_types_and_account_options(void **state)
{
    struct tmpstore *fx = *state;
    size_t len;
    char *raw = slurp("tests/data/bounces/postfix-dsn.eml", &len);
    int64_t bid = store_raw(fx->st, "u-bounce", raw, len);
    g_free(raw);
    struct event_opts o = {.inline_max = 1024};
    cJSON *ev = spool_parsed(fx, bid, &o);
    assert_string_equal(cJSON_GetObjectItem(ev, "type")->valuestring, "message.bounce");
    cJSON *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "data"), "message");
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(msg, "bounce")));
    cJSON_Delete(ev);

    static const char plain[] =
        "From: a@example.org\r\n"
        "To: support+billing@example.com\r\n"
        "Authentication-Results: forged.example; spf=pass smtp.mailfrom=a@example.org\r\n"
        "Authentication-Results: mx.example.com; spf=fail smtp.mailfrom=a@example.org\r\n"
        "Subject: hi\r\n\r\nhello\r\n";
    int64_t pid = store_raw(fx->st, "u-plain", plain, sizeof plain - 1);
    ev = spool_parsed(fx, pid, &o);
    assert_string_equal(cJSON_GetObjectItem(ev, "type")->valuestring, "message.received");
    msg = cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "data"), "message");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "bounce")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "mailbox_hash")));
    cJSON *auth = cJSON_GetObjectItem(msg, "authentication");
    assert_string_equal(cJSON_GetObjectItem(auth, "authserv_id")->valuestring, "forged.example");
    cJSON_Delete(ev);

    char address[] = "support@example.com", trusted[] = "mx.example.com";
    char *ids[] = {trusted};
    struct config_account a = {.address = address, .trusted_authserv_ids = ids,
                               .trusted_authserv_id_count = 1};
    event_opts_account(&o, &a);
    ev = spool_parsed(fx, pid, &o);
    msg = cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "data"), "message");
    assert_string_equal(cJSON_GetObjectItem(msg, "mailbox_hash")->valuestring, "billing");
    auth = cJSON_GetObjectItem(msg, "authentication");
    assert_string_equal(cJSON_GetObjectItem(auth, "authserv_id")->valuestring, "mx.example.com");
    assert_string_equal(cJSON_GetObjectItem(auth, "spf")->valuestring, "fail");
    cJSON_Delete(ev);
    event_opts_account(&o, NULL);
    assert_null(o.address);
    assert_int_equal(o.trusted_authserv_id_count, 0);
}

/* Payload shaping (event_shape): include, text_max, headers. */
static void payload_shaping(void **state)
{
    (void)state;
    static const char raw[] =
        "From: a@b.c\r\nTo: d@e.f\r\nSubject: shaped\r\nX-Keep: 1\r\nX-Drop: 2\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "h\xc3\xa9llo w\xc3\xb6rld, a long enough text\r\n"
        "--b\r\nContent-Type: application/octet-stream; name=x.bin\r\n\r\nxyz\r\n--b--\r\n";
    struct err e;
    struct message_opts mo = {.id = "m_1", .public_url = "http://127.0.0.1:1"};
    cJSON *m = message_to_json(raw, sizeof raw - 1, &mo, &e);
    assert_non_null(m);
    /* not present: nothing changes */
    struct config_payload off = {0};
    char *before = cJSON_PrintUnformatted(m);
    event_shape(m, &off);
    event_shape(m, NULL);
    char *after = cJSON_PrintUnformatted(m);
    assert_string_equal(before, after);
    cJSON_free(before);
    cJSON_free(after);

    int inc[] = {CONFIG_INC_TEXT, CONFIG_INC_HEADERS};
    char *names[] = {"x-keep", "Subject"};
    struct config_payload p = {.present = true, .include = inc, .include_count = 2,
                               .text_max = 2, .headers = names, .header_count = 2};
    event_shape(m, &p);
    /* "h" + the first byte of "é" fits 2 bytes: cut before the character */
    assert_string_equal(cJSON_GetObjectItem(m, "text")->valuestring, "h");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(m, "text_truncated")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "html")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "raw_url")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m, "attachments")), 0);
    cJSON *hs = cJSON_GetObjectItem(m, "headers");
    assert_int_equal(cJSON_GetArraySize(hs), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(hs, 0), "name")->valuestring, "Subject");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(hs, 1), "name")->valuestring, "X-Keep");
    assert_string_equal(cJSON_GetObjectItem(m, "subject")->valuestring, "shaped"); /* kept */
    cJSON_Delete(m);

    /* headers "none", text short enough: no text_truncated */
    m = message_to_json(raw, sizeof raw - 1, &mo, &e);
    char *none[] = {"none"};
    int all[] = {CONFIG_INC_TEXT, CONFIG_INC_HTML, CONFIG_INC_HEADERS, CONFIG_INC_ATTACHMENTS,
                 CONFIG_INC_RAW_URL};
    struct config_payload q = {.present = true, .include = all, .include_count = 5,
                               .text_max = 1000, .headers = none, .header_count = 1};
    event_shape(m, &q);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m, "headers")), 0);
    assert_null(cJSON_GetObjectItem(m, "text_truncated"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m, "attachments")), 1);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(m, "raw_url")));
    cJSON_Delete(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(spool_equals_cjson, setup, tmpstore_teardown),
        cmocka_unit_test_setup_teardown(inline_budget, setup, tmpstore_teardown),
        cmocka_unit_test_setup_teardown(missing_message, setup, tmpstore_teardown),
        cmocka_unit_test_setup_teardown(tap_failure_stops, setup, tmpstore_teardown),
        cmocka_unit_test_setup_teardown(event_types_and_account_options, setup, tmpstore_teardown),
        cmocka_unit_test(payload_shaping),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    message_global_cleanup();
    return r;
}
