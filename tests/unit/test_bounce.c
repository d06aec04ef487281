/* Unit tests: delivery status notifications (include/bounce.h): the RFC 3464
 * examples and the notifications of Postfix, qmail, Exim, Sendmail,
 * Exchange / Office 365 and Gmail in tests/data/bounces/ (BOUNCE_DATA
 * overrides the directory), through message_to_json(); the delivery-status
 * and text parsers alone; messages that are not notifications; the limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "bounce.h"
#include "message.h"

#define DATA_DIR "tests/data/bounces/"

static cJSON *bounce_of(const char *name, cJSON **msg)
{
    const char *dir = getenv("BOUNCE_DATA") ? getenv("BOUNCE_DATA") : DATA_DIR;
    char *path = g_strconcat(dir, "/", name, NULL);
    gchar *raw = NULL;
    gsize len = 0;
    if (!g_file_get_contents(path, &raw, &len, NULL))
        fail_msg("cannot read %s", path);
    struct err e;
    *msg = message_to_json(raw, len, NULL, &e);
    assert_non_null(*msg);
    g_free(raw);
    g_free(path);
    return cJSON_GetObjectItemCaseSensitive(*msg, "bounce");
}

static void expect_field(const char *file, const cJSON *b, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(b, key);
    if (!v)
        fail_msg("%s: bounce.%s missing", file, key);
    if (!want) {
        if (!cJSON_IsNull(v))
            fail_msg("%s: bounce.%s is \"%s\", expected null", file, key, v->valuestring);
        return;
    }
    if (!cJSON_IsString(v) || strcmp(v->valuestring, want) != 0)
        fail_msg("%s: bounce.%s is \"%s\", expected \"%s\"", file, key,
                 cJSON_IsString(v) ? v->valuestring : "(not a string)", want);
}

struct want {
    const char *file, *recipient, *action, *status, *diagnostic, *reporting_mta, *original_id;
};

static const struct want wanted[] = {
    /* RFC 3464 §10.1 and §10.2 */
    {"rfc3464-simple.eml", "louisl@larry.slip.umd.edu", "failed", "4.0.0", "426 connection timed out",
     "cs.utk.edu", "199407022110.RAA00011@CS.UTK.EDU"},
    {"rfc3464-multi-recipient.eml", "arathib@vnet.ibm.com", "failed", "5.0.0",
     "550 'arathib@vnet.IBM.COM' is not a registered gateway user", "cs.utk.edu", NULL},
    {"postfix-dsn.eml", "nobody@customer.example", "failed", "5.1.1",
     "550 5.1.1 <nobody@customer.example>: Recipient address rejected: User unknown in virtual mailbox table",
     "mx1.example.org", "8f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b@example.org"},
    {"delayed-dsn.eml", "slow@busy.example", "delayed", "4.4.1",
     "connect to mx.busy.example[203.0.113.5]:25: Connection timed out", "mx1.example.org",
     "delayed-1@example.org"},
    {"office365-dsn.eml", "billing@fabrikam.example", "failed", "5.1.10",
     "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     "AM9PR07MB7186.eurprd07.prod.outlook.com",
     "AM9PR07MB71861F2E3D4C5B6A7980ABCDEF012@AM9PR07MB7186.eurprd07.prod.outlook.com"},
    {"gmail-dsn.eml", "lost.person@example.net", "failed", "5.1.1",
     "550-5.1.1 The email account that you tried to reach does not exist. a1-20020a170906.4 - gsmtp",
     "googlemail.com", "CAH7x5ZqR1vKd0u9JxY2sL3mN4oP5qR6sT7uV8wX9yZ0aB1cD2e@mail.gmail.com"},
    /* the non-standard formats */
    {"qmail.eml", "info@closed-shop.example", "failed", "5.1.1",
     "198.51.100.44 does not like recipient. Remote host said: 550 5.1.1 <info@closed-shop.example>: "
     "Recipient address rejected: User unknown Giving up on 198.51.100.44.",
     "mail.hosting.example", "5E3C1F2A-9B7D-4C1E-8F3A-2D6B9E0C4A71@example.org"},
    {"postfix-plain-legacy.eml", "team@lists.example", "failed", "5.2.2",
     "host lists.example[192.0.2.80] said: 552 5.2.2 Mailbox full (in reply to RCPT TO command)",
     "mail.example.org", "47D79B11.3040507@example.org"},
    {"exim-plain.eml", "ghost@no-such-domain.example", "failed", "5.1.1",
     "host mx.no-such-domain.example [203.0.113.77] SMTP error from remote mail server after RCPT "
     "TO:<ghost@no-such-domain.example>: 550 5.1.1 User unknown",
     "mail.example.org", "c0ffee00-1234-4abc-9def-000000000001@example.org"},
    {"sendmail-plain.eml", "jdoe@old-company.example", "failed", "5.1.1",
     "550 5.1.1 <jdoe@old-company.example>... User unknown", "relay.example.net",
     "20240304100210.GA4711@example.org"},
    {"exchange-legacy-plain.eml", "p.miller@corp.example.com", "failed", "5.1.1",
     "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", "EXCH01.corp.example.com",
     "5B8A4C3F2E1D4A0B9C8D7E6F5A4B3C2D@EXCH01.corp.example.com"},
    {"gmail-legacy-plain.eml", "old.friend@example.net", "failed", "5.1.1",
     "Google tried to deliver your message, but it was rejected by the server for the recipient "
     "domain example.net by mx.example.net. [198.51.100.9].",
     "googlemail.com", "CAB1x2y3z4@mail.gmail.com"},
};

static void fixtures(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
        const struct want *w = &wanted[i];
        cJSON *m;
        const cJSON *b = bounce_of(w->file, &m);
        if (!cJSON_IsObject(b))
            fail_msg("%s: not taken as a bounce", w->file);
        expect_field(w->file, b, "recipient", w->recipient);
        expect_field(w->file, b, "action", w->action);
        expect_field(w->file, b, "status", w->status);
        expect_field(w->file, b, "diagnostic", w->diagnostic);
        expect_field(w->file, b, "reporting_mta", w->reporting_mta);
        expect_field(w->file, b, "original_message_id", w->original_id);
        assert_int_equal(cJSON_GetArraySize(b), 6);
        cJSON_Delete(m);
    }
}

static void not_bounces(void **state)
{
    (void)state;
    const char *files[] = {"not-a-bounce-quota.eml", "not-a-bounce-person.eml"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        cJSON *m;
        const cJSON *b = bounce_of(files[i], &m);
        if (!cJSON_IsNull(b))
            fail_msg("%s taken as a bounce", files[i]);
        cJSON_Delete(m);
    }
    /* no message, or a message without a body */
    cJSON *j = bounce_json(NULL, NULL, NULL);
    assert_true(cJSON_IsNull(j));
    cJSON_Delete(j);
    struct err e;
    const char *hdr = "From: MAILER-DAEMON@x.example\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\n";
    cJSON *m = message_to_json(hdr, strlen(hdr), NULL, &e);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "bounce")));
    cJSON_Delete(m);
}

static void status_fields(void **state)
{
    (void)state;
    struct bounce b;
    memset(&b, 0, sizeof b);
    const char *body = "Reporting-MTA: dns;\r\n mx.example.org\r\n\r\n"
                       "Original-Recipient: rfc822;a@x.example\r\nAction: relayed\r\n\r\n"
                       "Final-Recipient: RFC822; b@x.example\r\nACTION: Delayed (retrying)\r\n"
                       "Status: 4.7.1 (greylisted)\r\n\r\n";
    assert_int_equal(bounce_parse_status(body, strlen(body), &b), 2);
    assert_string_equal(b.reporting_mta, "mx.example.org");
    assert_string_equal(b.recipient, "b@x.example");
    assert_string_equal(b.action, "delayed");
    assert_string_equal(b.status, "4.7.1");
    assert_string_equal(b.diagnostic, "");
    /* fields already known are kept */
    memset(&b, 0, sizeof b);
    g_strlcpy(b.recipient, "kept@x.example", sizeof b.recipient);
    assert_int_equal(bounce_parse_status(body, strlen(body), &b), 2);
    assert_string_equal(b.recipient, "kept@x.example");
    /* nothing to read */
    memset(&b, 0, sizeof b);
    assert_int_equal(bounce_parse_status("", 0, &b), 0);
    assert_int_equal(bounce_parse_status(NULL, 0, &b), 0);
    assert_int_equal(bounce_parse_status("garbage without fields\n", 23, &b), 0);
    /* only BOUNCE_RECIPIENTS_MAX recipient blocks are looked at */
    GString *g = g_string_new("Reporting-MTA: dns; m.example\n\n");
    for (int i = 0; i < BOUNCE_RECIPIENTS_MAX + 20; i++)
        g_string_append_printf(g, "Final-Recipient: rfc822; r%d@x.example\nAction: %s\n\n", i,
                               i == BOUNCE_RECIPIENTS_MAX + 10 ? "failed" : "delivered");
    memset(&b, 0, sizeof b);
    assert_true(bounce_parse_status(g->str, g->len, &b) <= BOUNCE_RECIPIENTS_MAX + 1);
    assert_string_equal(b.recipient, "r0@x.example");
    assert_string_equal(b.action, "delivered");
    g_string_free(g, TRUE);
}

static void text_formats(void **state)
{
    (void)state;
    struct bounce b;
    memset(&b, 0, sizeof b);
    const char *gmail_delay = "Delivery to the following recipient has been delayed:\n\n     slow@x.example\n\n"
                              "Technical details of temporary failure:\nThe recipient server did not accept our "
                              "requests to connect. [x.example. 203.0.113.1: timed out]\n";
    assert_int_equal(bounce_parse_text(gmail_delay, strlen(gmail_delay), &b), 1);
    assert_string_equal(b.recipient, "slow@x.example");
    assert_string_equal(b.action, "delayed");
    assert_string_equal(b.status, "");
    /* Exim's delay warning */
    memset(&b, 0, sizeof b);
    const char *exim_delay = "This message was created automatically by mail delivery software.\n"
                             "A message that you sent has not yet been delivered to one or more of its\n"
                             "recipients after more than 24 hours on the queue on mail.example.org.\n\n"
                             "The address to which the message has not yet been delivered is:\n\n"
                             "  late@x.example\n    host mx.x.example [203.0.113.2]\n"
                             "    Delay reason: SMTP error from remote mail server after RCPT TO:<late@x.example>:\n"
                             "    451 4.7.1 Greylisted, please try again\n";
    assert_int_equal(bounce_parse_text(exim_delay, strlen(exim_delay), &b), 1);
    assert_string_equal(b.recipient, "late@x.example");
    assert_string_equal(b.action, "delayed");
    assert_string_equal(b.status, "4.7.1");
    /* nothing a bounce would say */
    memset(&b, 0, sizeof b);
    const char *plain = "Hello,\nthe meeting is at 10.\n";
    assert_int_equal(bounce_parse_text(plain, strlen(plain), &b), 0);
    assert_int_equal(bounce_parse_text(NULL, 0, &b), 0);
    /* a version number or an address is not a status code */
    memset(&b, 0, sizeof b);
    const char *nums = "Postfix 3.5.1 at 192.0.2.1 said 2.0.0.1\n";
    assert_int_equal(bounce_parse_text(nums, strlen(nums), &b), 0);
    assert_string_equal(b.status, "");
    /* a field longer than BOUNCE_FIELD_MAX is cut on a character boundary */
    memset(&b, 0, sizeof b);
    GString *g = g_string_new("<a@x.example>: ");
    for (int i = 0; i < BOUNCE_FIELD_MAX; i++)
        g_string_append(g, "\xc3\xa9");
    assert_int_equal(bounce_parse_text(g->str, g->len, &b), 1);
    assert_true(strlen(b.diagnostic) < BOUNCE_FIELD_MAX);
    assert_true(g_utf8_validate(b.diagnostic, -1, NULL));
    g_string_free(g, TRUE);
}

/* A report inside a multipart/mixed, and one with only an HTML text. */
static void nesting_and_html(void **state)
{
    (void)state;
    const char *raw =
        "From: postmaster@relay.example\r\nTo: a@example.org\r\nSubject: Undeliverable: x\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=OUT\r\n\r\n--OUT\r\n"
        "Content-Type: multipart/report; report-type=\"Delivery-Status\"; boundary=IN\r\n\r\n--IN\r\n"
        "Content-Type: text/html\r\n\r\n<p>Delivery has failed to these recipients or groups:</p>"
        "<p>x@y.example</p><p>Generating server: relay.example</p>\r\n--IN\r\n"
        "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "RmluYWwtUmVjaXBpZW50OiByZmM4MjI7IHhAeS5leGFtcGxlDQpBY3Rpb246IGZhaWxlZA0KU3RhdHVzOiA1LjQuMQ0K\r\n"
        "--IN--\r\n--OUT--\r\n";
    struct err e;
    cJSON *m = message_to_json(raw, strlen(raw), NULL, &e);
    const cJSON *b = cJSON_GetObjectItem(m, "bounce");
    assert_true(cJSON_IsObject(b));
    expect_field("nested", b, "recipient", "x@y.example");
    expect_field("nested", b, "status", "5.4.1");
    expect_field("nested", b, "action", "failed");
    expect_field("nested", b, "reporting_mta", "relay.example");
    cJSON_Delete(m);
    /* an HTML-only non-standard bounce */
    raw = "From: Mail Delivery System <MAILER-DAEMON@mx.example>\r\nSubject: Mail delivery failed\r\n"
          "Content-Type: text/html\r\n\r\n<p>The following address(es) failed:</p><p>&nbsp;&nbsp;z@q.example<br>"
          "&nbsp;&nbsp;&nbsp;&nbsp;550 5.1.1 unknown</p>\r\n";
    m = message_to_json(raw, strlen(raw), NULL, &e);
    b = cJSON_GetObjectItem(m, "bounce");
    assert_true(cJSON_IsObject(b));
    expect_field("html", b, "recipient", "z@q.example");
    expect_field("html", b, "status", "5.1.1");
    expect_field("html", b, "reporting_mta", "mx.example");
    cJSON_Delete(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixtures),    cmocka_unit_test(not_bounces),
        cmocka_unit_test(status_fields), cmocka_unit_test(text_formats),
        cmocka_unit_test(nesting_and_html),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    message_global_cleanup();
    return rc;
}
