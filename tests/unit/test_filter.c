/* Unit tests: routing filters (include/filter.h), loaded through the
 * configuration (include/config.h) as the bridge loads them, matched against
 * message objects made by message.h from real RFC 5322 text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "filter.h"
#include "message.h"

#define WHSEC_32 "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA="

static char dir[] = "/tmp/test_filter_XXXXXX";
static char path[256];

static int setup(void **state)
{
    (void)state;
    setenv("TEST_FILTER_WHSEC", WHSEC_32, 1);
    setenv("TEST_FILTER_PW", "pw", 1);
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/c.json", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir);
    return 0;
}

/* A configuration with webhooks "plain" (no filter) and "f" whose filter is
 * `filter` (JSON text), both listed by account "a". */
static struct config *load(const char *filter, struct config_diag *d)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"state_dir\": \"%s/state\",\n"
            " \"webhooks\": [\n"
            "  {\"name\": \"plain\", \"url\": \"http://127.0.0.1:9/a\", \"secret_env\": \"TEST_FILTER_WHSEC\"},\n"
            "  {\"name\": \"f\", \"url\": \"http://127.0.0.1:9/b\", \"secret_env\": \"TEST_FILTER_WHSEC\",\n"
            "   \"filter\": %s}],\n"
            " \"accounts\": [{\"name\": \"a\", \"host\": \"127.0.0.1\", \"username\": \"u\",\n"
            "   \"password_env\": \"TEST_FILTER_PW\", \"webhooks\": [\"plain\", \"f\"]}]}\n",
            dir, filter);
    fclose(f);
    return config_load(path, d);
}

static struct config *load_ok(const char *filter)
{
    struct config_diag d = {0};
    struct config *cfg = load(filter, &d);
    if (!cfg) {
        config_diag_print(&d, stderr);
        fail_msg("filter %s did not load", filter);
    }
    config_diag_free(&d);
    return cfg;
}

/* The one problem loading `filter` gives must contain `frag`. */
static void load_bad(const char *filter, const char *frag)
{
    struct config_diag d = {0};
    struct config *cfg = load(filter, &d);
    if (cfg) {
        config_free(&cfg);
        fail_msg("filter %s loaded but should not", filter);
    }
    bool found = false;
    for (size_t i = 0; i < d.count; i++)
        found = found || strstr(d.lines[i], frag) != NULL;
    if (!found) {
        config_diag_print(&d, stderr);
        fail_msg("no problem containing \"%s\"", frag);
    }
    config_diag_free(&d);
}

static cJSON *msg_of(const char *raw)
{
    struct err e;
    cJSON *m = message_to_json(raw, strlen(raw), NULL, &e);
    assert_non_null(m);
    return m;
}

static const char MAIL[] =
    "From: Alice Buyer <alice@vip.example>\r\n"
    "To: Support <support@support.example.com>\r\n"
    "Cc: other@else.example\r\n"
    "Delivered-To: sales+eu@example.com\r\n"
    "Subject: Your INVOICE 42\r\n"
    "X-Priority: 1 (Highest)\r\n"
    "Message-ID: <m1@vip.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=b\r\n"
    "\r\n"
    "--b\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "hello\r\n"
    "--b\r\n"
    "Content-Type: application/pdf; name=i.pdf\r\n"
    "Content-Disposition: attachment; filename=i.pdf\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERg==\r\n"
    "--b--\r\n";

static const char VACATION[] = "From: bob@vip.example\r\n"
                               "To: support@support.example.com\r\n"
                               "Subject: Out of office\r\n"
                               "Auto-Submitted: auto-replied\r\n"
                               "\r\n"
                               "away\r\n";

static void glob(void **state)
{
    (void)state;
    assert_true(filter_glob("*@support.example.com", "a@support.example.com"));
    assert_true(filter_glob("*@support.example.com", "A@SUPPORT.Example.COM"));
    assert_false(filter_glob("*@support.example.com", "a@support.example.com.evil"));
    assert_true(filter_glob("sales+*@example.com", "sales+eu@example.com"));
    assert_false(filter_glob("sales+*@example.com", "sales@example.com"));
    assert_true(filter_glob("?@x.y", "a@x.y"));
    assert_false(filter_glob("?@x.y", "ab@x.y"));
    assert_true(filter_glob("*", ""));
    assert_true(filter_glob("a*b*c*d*e*f*g", "aXbXcXdXeXfXg"));
    /* the worst case stays bounded: a long subject and many stars */
    char s[4097];
    memset(s, 'a', sizeof s - 1);
    s[sizeof s - 1] = '\0';
    assert_false(filter_glob("*a*a*a*a*a*a*a*a*a*a*b", s));
}

static const struct config_webhook *hook(const struct config *cfg, const char *name)
{
    const struct config_webhook *w = config_webhook_find(cfg, name);
    assert_non_null(w);
    return w;
}

static void matches_every_condition(void **state)
{
    (void)state;
    struct config *cfg = load_ok(
        "{\"types\": [\"message.received\", \"message.bounce\"],"
        " \"to\": [\"*@support.example.com\", \"nobody@x.y\"], \"from\": [\"*@vip.example\"],"
        " \"subject\": \"(?i)invoice\", \"headers\": {\"X-Priority\": \"^1\\\\b\"},"
        " \"has_attachments\": true, \"exclude_auto_replies\": true}");
    const struct config_webhook *f = hook(cfg, "f");
    assert_non_null(f->filter.compiled);
    cJSON *m = msg_of(MAIL);
    cJSON *why = cJSON_CreateArray();
    assert_true(filter_match(f, "message.received", m, why));
    /* one entry per condition, all passed */
    assert_int_equal(cJSON_GetArraySize(why), 7);
    const cJSON *it;
    cJSON_ArrayForEach(it, why)
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(it, "passed")));
    cJSON_Delete(why);
    /* as the API shows it */
    cJSON *shown = filter_to_json(f);
    char *txt = cJSON_PrintUnformatted(shown);
    assert_non_null(strstr(txt, "\"subject\":\"(?i)invoice\""));
    assert_non_null(strstr(txt, "\"headers\":{\"X-Priority\":"));
    assert_non_null(strstr(txt, "\"types\":[\"message.received\",\"message.bounce\"]"));
    cJSON_free(txt);
    cJSON_Delete(shown);
    assert_null(filter_to_json(hook(cfg, "plain")));
    /* a type not listed */
    assert_false(filter_match(f, "message.too_large", m, NULL));
    assert_false(filter_match(f, "account.auth_error", NULL, NULL));
    cJSON_Delete(m);

    /* the auto-reply fails exclude_auto_replies, has_attachments, subject, headers */
    m = msg_of(VACATION);
    why = cJSON_CreateArray();
    assert_false(filter_match(f, "message.received", m, why));
    size_t failed = 0;
    char names[256] = "";
    cJSON_ArrayForEach(it, why)
    if (!cJSON_IsTrue(cJSON_GetObjectItem(it, "passed"))) {
        failed++;
        strncat(names, cJSON_GetObjectItem(it, "condition")->valuestring,
                sizeof names - strlen(names) - 2);
        strcat(names, " ");
    }
    assert_string_equal(names, "subject headers.X-Priority has_attachments exclude_auto_replies ");
    assert_int_equal(failed, 4);
    cJSON_Delete(why);
    cJSON_Delete(m);
    config_free(&cfg);
}

static void to_looks_at_cc_and_delivered_to(void **state)
{
    (void)state;
    struct config *cfg = load_ok("{\"to\": [\"SALES+*@example.com\"]}");
    cJSON *m = msg_of(MAIL);
    cJSON *why = cJSON_CreateArray();
    assert_true(filter_match(hook(cfg, "f"), "message.received", m, why));
    char *s = cJSON_PrintUnformatted(why);
    assert_non_null(strstr(s, "Delivered-To sales+eu@example.com matches"));
    cJSON_free(s);
    cJSON_Delete(why);
    config_free(&cfg);
    cfg = load_ok("{\"to\": [\"other@*.example\"]}");
    assert_true(filter_match(hook(cfg, "f"), "message.received", m, NULL));
    config_free(&cfg);
    cfg = load_ok("{\"to\": [\"alice@vip.example\"]}"); /* From is not a recipient */
    assert_false(filter_match(hook(cfg, "f"), "message.received", m, NULL));
    config_free(&cfg);
    cJSON_Delete(m);
}

static void types_default_and_routing(void **state)
{
    (void)state;
    struct config *cfg = load_ok("{\"types\": [\"account.auth_error\"]}");
    const struct config_webhook *plain = hook(cfg, "plain"), *f = hook(cfg, "f");
    /* without types: every message event, no account event */
    assert_true(filter_wants_type(plain, "message.received"));
    assert_true(filter_wants_type(plain, "message.bounce"));
    assert_true(filter_wants_type(plain, "message.too_large"));
    assert_false(filter_wants_type(plain, "account.auth_error"));
    assert_false(filter_wants_type(f, "message.received"));
    assert_true(filter_wants_type(f, "account.auth_error"));
    assert_true(filter_match(f, "account.auth_error", NULL, NULL));

    const struct config_account *a = config_account_find(cfg, "a");
    assert_true(filter_route_needs_message(a));
    const char *names[8];
    assert_int_equal(filter_route(a, "message.received", NULL, names, 8), 1);
    assert_string_equal(names[0], "plain");
    assert_int_equal(filter_route(a, "account.auth_error", NULL, names, 8), 1);
    assert_string_equal(names[0], "f");
    config_free(&cfg);

    cfg = load_ok("{\"exclude_auto_replies\": false}");
    assert_false(filter_route_needs_message(config_account_find(cfg, "a")));
    config_free(&cfg);
}

static void bounce_type(void **state)
{
    (void)state;
    static const char dsn[] =
        "From: MAILER-DAEMON@mx.example\r\n"
        "To: support@support.example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n"
        "\r\n"
        "--r\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "failed\r\n"
        "--r\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example\r\n"
        "\r\n"
        "Final-Recipient: rfc822; gone@else.example\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "\r\n"
        "--r--\r\n";
    cJSON *m = msg_of(dsn);
    assert_string_equal(filter_message_type(m, false), "message.bounce");
    assert_string_equal(filter_message_type(m, true), "message.too_large");
    cJSON_Delete(m);
    m = msg_of(MAIL);
    assert_string_equal(filter_message_type(m, false), "message.received");
    assert_string_equal(filter_message_type(NULL, false), "message.received");
    cJSON_Delete(m);
}

static void bad_patterns_name_their_key(void **state)
{
    (void)state;
    load_bad("{\"subject\": \"(ab\"}",
             "webhooks[1].filter.subject: PCRE2 error at offset 3: missing closing parenthesis");
    load_bad("{\"headers\": {\"X-Priority\": \"a[\"}}",
             "webhooks[1].filter.headers.X-Priority: PCRE2 error at offset 2:");
    load_bad("{\"to\": [\"support\"]}", "webhooks[1].filter.to[0]: an address pattern needs an @");
    load_bad("{\"types\": [\"message.sent\"]}", "webhooks[1].filter.types[0]");
    load_bad("{\"has_attachments\": \"yes\"}", "webhooks[1].filter.has_attachments: expected true or false");
    load_bad("{\"subjet\": \"x\"}", "webhooks[1].filter.subjet: unknown key (did you mean \"subject\"?)");
    /* a filter may name headers a webhook could not set */
    struct config *cfg = load_ok("{\"headers\": {\"Content-Type\": \"^multipart/report\"}}");
    config_free(&cfg);
}

static void match_limit_is_a_no_match(void **state)
{
    (void)state;
    /* catastrophic backtracking hits FILTER_MATCH_LIMIT instead of hanging */
    struct config *cfg = load_ok("{\"subject\": \"^(a+)+$\"}");
    char raw[256];
    snprintf(raw, sizeof raw, "Subject: %s!\r\nFrom: a@b.c\r\n\r\nx\r\n",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    cJSON *m = msg_of(raw);
    cJSON *why = cJSON_CreateArray();
    assert_false(filter_match(hook(cfg, "f"), "message.received", m, why));
    char *s = cJSON_PrintUnformatted(why);
    assert_non_null(strstr(s, "_LIMIT"));
    cJSON_free(s);
    cJSON_Delete(why);
    cJSON_Delete(m);
    config_free(&cfg);
}

/* What routing must read of a message, by the account's filters. */
static void route_needs_by_condition(void **state)
{
    (void)state;
    static const struct {
        const char *filter;
        unsigned needs;
    } cases[] = {
        {"{\"subject\": \"^x\"}", FILTER_NEEDS_HEADER},
        {"{\"headers\": {\"X-Prio\": \"1\"}}", FILTER_NEEDS_HEADER},
        {"{\"to\": [\"*@x\"], \"from\": [\"*@y\"]}", FILTER_NEEDS_HEADER},
        {"{\"exclude_auto_replies\": true}", FILTER_NEEDS_HEADER},
        {"{\"exclude_auto_replies\": false}", 0},
        {"{\"has_attachments\": true}", FILTER_NEEDS_HEADER | FILTER_NEEDS_ATTACHMENTS},
        {"{\"types\": [\"account.auth_error\"]}", FILTER_NEEDS_ROUTE},
        {"{\"types\": [\"message.received\", \"message.bounce\"], \"subject\": \"x\"}",
         FILTER_NEEDS_ROUTE | FILTER_NEEDS_HEADER},
        {"{\"types\": [\"message.bounce\"]}", FILTER_NEEDS_ROUTE | FILTER_NEEDS_TYPE},
        {"{\"types\": [\"message.received\", \"message.too_large\"]}",
         FILTER_NEEDS_ROUTE | FILTER_NEEDS_TYPE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config *cfg = load_ok(cases[i].filter);
        unsigned got = filter_route_needs(config_account_find(cfg, "a"));
        if (got != cases[i].needs)
            fail_msg("%s: needs %#x, expected %#x", cases[i].filter, got, cases[i].needs);
        assert_int_equal(got != 0, filter_route_needs_message(config_account_find(cfg, "a")));
        config_free(&cfg);
    }
}

int main(void)
{
    umask(077); /* the configs and secret files written here are 0600: perms.h refuses others */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(glob),
        cmocka_unit_test(matches_every_condition),
        cmocka_unit_test(to_looks_at_cc_and_delivered_to),
        cmocka_unit_test(types_default_and_routing),
        cmocka_unit_test(route_needs_by_condition),
        cmocka_unit_test(bounce_type),
        cmocka_unit_test(bad_patterns_name_their_key),
        cmocka_unit_test(match_limit_is_a_no_match),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
