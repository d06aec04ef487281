/* Unit tests: auto_reply, spam and list (include/mailclass.h), each source,
 * the formats of SpamAssassin and amavis, RFC 2369/2919/8058 list fields,
 * and the same through message_to_json(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "mailclass.h"
#include "message.h"

static char *printed(cJSON *j)
{
    assert_non_null(j);
    char *s = cJSON_PrintUnformatted(j);
    char *out = g_strdup(s);
    cJSON_free(s);
    cJSON_Delete(j);
    return out;
}

#define SPAM_IS(h, want)                                                                           \
    do {                                                                                           \
        char *got_ = printed(mailclass_spam_json(h));                                              \
        assert_string_equal(got_, want);                                                           \
        g_free(got_);                                                                              \
    } while (0)

#define LIST_IS(h, want)                                                                           \
    do {                                                                                           \
        char *got_ = printed(mailclass_list_json(h));                                              \
        assert_string_equal(got_, want);                                                           \
        g_free(got_);                                                                              \
    } while (0)

static void auto_reply_sources(void **state)
{
    (void)state;
    struct mailclass_headers h = {0};
    assert_null(mailclass_auto_reply(&h));
    /* RFC 3834 Auto-Submitted, with parameters, any case */
    h.auto_submitted = " auto-replied; owner-email=\"a@example.org\"";
    assert_string_equal(mailclass_auto_reply(&h), "auto-replied");
    h.auto_submitted = "Auto-Generated";
    assert_string_equal(mailclass_auto_reply(&h), "auto-generated");
    h.auto_submitted = "auto-notified";
    assert_string_equal(mailclass_auto_reply(&h), "auto-notified");
    h.auto_submitted = "auto-something-new";
    assert_string_equal(mailclass_auto_reply(&h), "auto-generated");
    /* "no": a person wrote it, whatever else says otherwise */
    h.auto_submitted = "no";
    h.precedence = "bulk";
    h.subject = "Automatic reply: hello";
    assert_null(mailclass_auto_reply(&h));
    memset(&h, 0, sizeof h);
    h.x_autoreply = "yes";
    assert_string_equal(mailclass_auto_reply(&h), "auto-replied");
    h.x_autoreply = "no";
    assert_null(mailclass_auto_reply(&h));
    h.x_autoreply = NULL;
    h.x_autorespond = "1";
    assert_string_equal(mailclass_auto_reply(&h), "auto-replied");
    h.x_autorespond = NULL;
    h.precedence = "auto_reply";
    assert_string_equal(mailclass_auto_reply(&h), "auto-replied");
    h.precedence = "\r\n bulk";
    assert_string_equal(mailclass_auto_reply(&h), "auto-generated");
    h.precedence = "junk";
    assert_string_equal(mailclass_auto_reply(&h), "auto-generated");
    h.precedence = "list";
    assert_null(mailclass_auto_reply(&h));
    h.precedence = NULL;
    h.x_auto_response_suppress = "DR, RN, NRN, OOF, AutoReply";
    assert_string_equal(mailclass_auto_reply(&h), "auto-generated");
    h.x_auto_response_suppress = "";
    assert_null(mailclass_auto_reply(&h));
    /* Exchange's out-of-office reply: vacation wins over the headers */
    h.auto_submitted = "auto-generated";
    h.x_auto_response_suppress = "All";
    h.subject = "Automatic reply: Quarterly report";
    assert_string_equal(mailclass_auto_reply(&h), "vacation");
}

static void vacation_subjects(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "Automatic reply: Meeting", "Auto-Reply: x", "AutoReply: x", "Out of Office: x", "OUT OF OFFICE: x",
        "Out of Office AutoReply: x", "Automatische Antwort: Angebot", "Abwesenheitsnotiz: Angebot",
        "R\xc3\xa9ponse automatique : R\xc3\xa9union", "Respuesta autom\xc3\xa1tica: Pedido",
        "Risposta automatica: Fattura", "Resposta autom\xc3\xa1tica: Contrato", "Automatisch antwoord: Planning",
        "Automatiskt svar: Inbjudan", "Automatisk svar: \xc3\x86ndring", "Automaattinen vastaus: Tarjous",
        "Odpowied\xc5\xba automatyczna: Harmonogram", "\xe8\x87\xaa\xe5\x8b\x95\xe5\xbf\x9c\xe7\xad\x94: \xe8\xa6\x8b\xe7\xa9\x8d",
        "\xe8\x87\xaa\xe5\x8a\xa8\xe5\x9b\x9e\xe5\xa4\x8d\xef\xbc\x9a\xe5\x9f\xb9\xe8\xae\xad",
    };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        struct mailclass_headers h = {.subject = yes[i]};
        const char *k = mailclass_auto_reply(&h);
        if (!k || strcmp(k, "vacation") != 0)
            fail_msg("subject %zu \"%s\" not taken as a vacation reply", i, yes[i]);
    }
    static const char *const no[] = {
        "Re: Automatic reply settings", "Out of office schedule for next week", "Automatic replies are annoying",
        "Fwd: the vacation photos", "", "\xff\xfe",
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        struct mailclass_headers h = {.subject = no[i]};
        if (mailclass_auto_reply(&h))
            fail_msg("subject %zu \"%s\" taken as automatic", i, no[i]);
    }
}

static void spam(void **state)
{
    (void)state;
    struct mailclass_headers h = {0};
    SPAM_IS(&h, "null");
    /* SpamAssassin 3.4, folded after commas */
    h.x_spam_status = "Yes, score=7.3 required=5.0 tests=BAYES_99,HTML_MESSAGE,\r\n\tRDNS_NONE,URIBL_BLOCKED "
                      "autolearn=no autolearn_force=no version=3.4.6";
    SPAM_IS(&h, "{\"score\":7.3,\"flag\":true,\"tests\":[\"BAYES_99\",\"HTML_MESSAGE\",\"RDNS_NONE\",\"URIBL_BLOCKED\"]}");
    /* older SpamAssassin: hits=, and tests=NONE */
    h.x_spam_status = "No, hits=-2.6 required=5.0 tests=NONE autolearn=ham version=3.2.5";
    SPAM_IS(&h, "{\"score\":-2.6,\"flag\":false,\"tests\":[]}");
    /* amavis */
    h.x_spam_status = "No, score=-1.9 tagged_above=-999 required=6.31\n tests=[BAYES_00=-1.9, DKIM_SIGNED=0.1,\n"
                      " DKIM_VALID=-0.1, SPF_PASS=-0.001] autolearn=ham autolearn_force=no";
    SPAM_IS(&h, "{\"score\":-1.9,\"flag\":false,\"tests\":[\"BAYES_00\",\"DKIM_SIGNED\",\"DKIM_VALID\",\"SPF_PASS\"]}");
    /* X-Spam-Flag overrides, X-Spam-Score when Status has no score */
    h.x_spam_status = "Yes, required=5.0 tests=FOO";
    h.x_spam_score = " 12.5";
    h.x_spam_flag = "NO";
    SPAM_IS(&h, "{\"score\":12.5,\"flag\":false,\"tests\":[\"FOO\"]}");
    /* only some of them */
    memset(&h, 0, sizeof h);
    h.x_spam_flag = "YES";
    SPAM_IS(&h, "{\"score\":null,\"flag\":true,\"tests\":[]}");
    memset(&h, 0, sizeof h);
    h.x_spam_score = "-0.1";
    SPAM_IS(&h, "{\"score\":-0.1,\"flag\":null,\"tests\":[]}");
    /* nonsense is left out */
    h.x_spam_score = "high";
    h.x_spam_status = "maybe, score=nan tests=";
    SPAM_IS(&h, "{\"score\":null,\"flag\":null,\"tests\":[]}");
    h.x_spam_score = "1e300";
    h.x_spam_status = NULL;
    SPAM_IS(&h, "{\"score\":1000000,\"flag\":null,\"tests\":[]}");
    /* a name that is not a score key: "prescore=" */
    h.x_spam_score = NULL;
    h.x_spam_status = "No, prescore=99 score=1.5";
    SPAM_IS(&h, "{\"score\":1.5,\"flag\":false,\"tests\":[]}");
    /* limits: tests kept, long names left out */
    GString *g = g_string_new("Yes, score=1 tests=");
    for (int i = 0; i < MAILCLASS_TESTS_MAX + 10; i++)
        g_string_append_printf(g, "%sT%d", i ? "," : "", i);
    g_string_append(g, ",");
    for (int i = 0; i <= MAILCLASS_NAME_MAX; i++)
        g_string_append_c(g, 'L');
    h.x_spam_status = g->str;
    cJSON *j = mailclass_spam_json(&h);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "tests")), MAILCLASS_TESTS_MAX);
    cJSON_Delete(j);
    g_string_free(g, TRUE);
}

static void list(void **state)
{
    (void)state;
    struct mailclass_headers h = {0};
    LIST_IS(&h, "null");
    h.list_id = "Announcements <announce.lists.example.org>";
    h.list_unsubscribe = "<mailto:leave-announce@lists.example.org?subject=unsubscribe>,\r\n <https://lists.example.org/u/\r\n"
                         " abc?x=1>, (a comment) <https://example.org/one-click>";
    h.list_unsubscribe_post = " List-Unsubscribe=One-Click ";
    LIST_IS(&h, "{\"id\":\"announce.lists.example.org\",\"unsubscribe\":[\"mailto:leave-announce@lists.example.org"
                "?subject=unsubscribe\",\"https://lists.example.org/u/abc?x=1\",\"https://example.org/one-click\"],"
                "\"unsubscribe_post\":\"List-Unsubscribe=One-Click\"}");
    /* a newsletter: only List-Unsubscribe */
    memset(&h, 0, sizeof h);
    h.list_unsubscribe = "<https://news.example/unsub?u=7>";
    LIST_IS(&h, "{\"id\":null,\"unsubscribe\":[\"https://news.example/unsub?u=7\"],\"unsubscribe_post\":null}");
    /* a List-Id without brackets, an unclosed URI */
    memset(&h, 0, sizeof h);
    h.list_id = "  team.example.org ";
    h.list_unsubscribe = "<mailto:x@example.org";
    LIST_IS(&h, "{\"id\":\"team.example.org\",\"unsubscribe\":[],\"unsubscribe_post\":null}");
    /* limits */
    GString *g = g_string_new(NULL);
    for (int i = 0; i < MAILCLASS_URIS_MAX + 3; i++)
        g_string_append_printf(g, "<https://e.example/%d>, ", i);
    g_string_append(g, "<https://e.example/");
    for (int i = 0; i < MAILCLASS_URI_MAX; i++)
        g_string_append_c(g, 'x');
    g_string_append(g, ">");
    memset(&h, 0, sizeof h);
    h.list_unsubscribe = g->str;
    cJSON *j = mailclass_list_json(&h);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "unsubscribe")), MAILCLASS_URIS_MAX);
    cJSON_Delete(j);
    g_string_free(g, TRUE);
}

/* The fields through the message object: the first of each field counts. */
static void in_message(void **state)
{
    (void)state;
    const char *raw = "X-Spam-Status: Yes, score=9.1 required=5.0 tests=A,B\r\n"
                      "X-Spam-Flag: YES\r\n"
                      "From: Newsletter <news@shop.example>\r\nTo: a@example.org\r\n"
                      "Subject: Deals\r\nPrecedence: bulk\r\nList-Id: Shop news <news.shop.example>\r\n"
                      "List-Unsubscribe: <https://shop.example/u/1>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                      "X-Spam-Status: No, score=-5.0 tests=FORGED_BY_SENDER\r\n\r\nBuy now.\r\n";
    struct err e;
    cJSON *m = message_to_json(raw, strlen(raw), NULL, &e);
    assert_non_null(m);
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(m, "spam"));
    assert_string_equal(s, "{\"score\":9.1,\"flag\":true,\"tests\":[\"A\",\"B\"]}");
    cJSON_free(s);
    assert_string_equal(cJSON_GetObjectItem(m, "auto_reply")->valuestring, "auto-generated");
    s = cJSON_PrintUnformatted(cJSON_GetObjectItem(m, "list"));
    assert_string_equal(s, "{\"id\":\"news.shop.example\",\"unsubscribe\":[\"https://shop.example/u/1\"],"
                           "\"unsubscribe_post\":\"List-Unsubscribe=One-Click\"}");
    cJSON_free(s);
    cJSON_Delete(m);
    /* a plain message: all null */
    raw = "From: a@example.org\r\nSubject: =?UTF-8?Q?Automatische_Antwort:_Angebot?=\r\n\r\nweg\r\n";
    m = message_to_json(raw, strlen(raw), NULL, &e);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "spam")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "list")));
    assert_string_equal(cJSON_GetObjectItem(m, "auto_reply")->valuestring, "vacation");
    cJSON_Delete(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auto_reply_sources), cmocka_unit_test(vacation_subjects),
        cmocka_unit_test(spam),               cmocka_unit_test(list),
        cmocka_unit_test(in_message),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    message_global_cleanup();
    return rc;
}
