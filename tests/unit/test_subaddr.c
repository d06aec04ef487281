/* Unit tests: mailbox_hash (include/subaddr.h), alone and through
 * message_to_json() with the account's address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "message.h"
#include "subaddr.h"

#define DETAIL_IS(account, want, ...)                                                              \
    do {                                                                                           \
        const char *r_[] = {__VA_ARGS__};                                                          \
        char *got_ = subaddr_detail(account, r_, sizeof r_ / sizeof r_[0]);                        \
        if (want) {                                                                                \
            assert_non_null(got_);                                                                 \
            assert_string_equal(got_, (const char *)(want));                                       \
        } else {                                                                                   \
            assert_null(got_);                                                                     \
        }                                                                                          \
        g_free(got_);                                                                              \
    } while (0)

static void details(void **state)
{
    (void)state;
    DETAIL_IS("support@example.com", "billing", "support+billing@example.com");
    /* the first match, in the order given; others and the plain address skipped */
    DETAIL_IS("support@example.com", "urgent", "someone@else.example", "support@example.com",
              "support+urgent@example.com", "support+later@example.com");
    /* case: domain and local part compared without case, the detail kept as written */
    DETAIL_IS("Support@Example.COM", "Order-4711", "SUPPORT+Order-4711@example.com");
    /* not ours */
    DETAIL_IS("support@example.com", NULL, "support+x@example.org", "supporter+x@example.com",
              "xsupport+x@example.com", "support+@example.com", "support-x@example.com");
    /* a detail that holds '+' or '@'-free text in UTF-8 */
    DETAIL_IS("a@example.com", "x+y", "a+x+y@example.com");
    DETAIL_IS("a@example.com", "caf\xc3\xa9", "a+caf\xc3\xa9@example.com");
    DETAIL_IS("a@example.com", "\xef\xbf\xbd", "a+\xff@example.com");
    /* the account is not an address */
    DETAIL_IS("username", NULL, "username+x@example.com");
    DETAIL_IS(NULL, NULL, "a+x@example.com");
    DETAIL_IS("@example.com", NULL, "+x@example.com");
    assert_null(subaddr_detail("a@example.com", NULL, 0));
    /* an address longer than SUBADDR_ADDRESS_MAX is not looked at */
    GString *g = g_string_new("a+");
    while (g->len <= SUBADDR_ADDRESS_MAX)
        g_string_append_c(g, 'x');
    g_string_append(g, "@example.com");
    DETAIL_IS("a@example.com", NULL, g->str);
    g_string_free(g, TRUE);
}

static char *hash_of(const char *raw, const char *address)
{
    struct message_opts o = {.address = address};
    struct err e;
    cJSON *m = message_to_json(raw, strlen(raw), &o, &e);
    assert_non_null(m);
    const cJSON *h = cJSON_GetObjectItem(m, "mailbox_hash");
    assert_non_null(h);
    char *out = cJSON_IsString(h) ? g_strdup(h->valuestring) : NULL;
    if (!out)
        assert_true(cJSON_IsNull(h));
    cJSON_Delete(m);
    return out;
}

static void in_message(void **state)
{
    (void)state;
    /* the envelope (Delivered-To) before To: a Bcc'd tag shows only there */
    const char *raw = "Delivered-To: help+vip@example.com\r\nFrom: c@customer.example\r\n"
                      "To: \"Help\" <help+general@example.com>, other@example.com\r\nSubject: hi\r\n\r\nx\r\n";
    char *h = hash_of(raw, "help@example.com");
    assert_string_equal(h, "vip");
    g_free(h);
    /* To, then Cc; groups are looked into */
    raw = "From: c@customer.example\r\nTo: Team: a@x.example, help+team@example.com;\r\n"
          "Cc: help+cc@example.com\r\nSubject: hi\r\n\r\nx\r\n";
    h = hash_of(raw, "help@example.com");
    assert_string_equal(h, "team");
    g_free(h);
    /* no address configured, or no tag: null */
    assert_null(hash_of(raw, NULL));
    assert_null(hash_of("To: help@example.com\r\n\r\nx\r\n", "help@example.com"));
    assert_null(hash_of("", "help@example.com"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(details),
        cmocka_unit_test(in_message),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    message_global_cleanup();
    return rc;
}
