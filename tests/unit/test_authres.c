/* Unit tests: Authentication-Results (include/authres.h): the examples of
 * RFC 8601 Appendix B, comments and quoted strings, real MTAs' fields, the
 * trusted-id and topmost-only rules, and the limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "authres.h"
#include "message.h"

static struct authres parse_ok(const char *v)
{
    struct authres a;
    if (authres_parse(v, strlen(v), &a) != 0)
        fail_msg("not parsed: %s", v);
    return a;
}

static void rfc8601_b2_b3(void **state)
{
    (void)state;
    /* B.2: service provided, but no authentication done */
    struct authres a = parse_ok(" example.org 1; none");
    assert_string_equal(a.authserv_id, "example.org");
    assert_int_equal(a.version, 1);
    assert_true(a.none);
    assert_int_equal(a.count, 0);
    authres_free(&a);
    /* B.3: service provided, authentication done */
    a = parse_ok(" example.com;\r\n          spf=pass smtp.mailfrom=example.net");
    assert_string_equal(a.authserv_id, "example.com");
    assert_false(a.none);
    assert_int_equal(a.count, 1);
    assert_string_equal(a.results[0].method, "spf");
    assert_string_equal(a.results[0].result, "pass");
    assert_string_equal(authres_prop(&a.results[0], "smtp", "mailfrom"), "example.net");
    authres_free(&a);
}

static void rfc8601_b4_b5(void **state)
{
    (void)state;
    /* B.4: several authentications, single MTA; the comment (cram-md5) */
    struct authres a = parse_ok(" example.com;\r\n          auth=pass (cram-md5) smtp.auth=sender@example.net;\r\n"
                                "          spf=pass smtp.mailfrom=example.net");
    assert_int_equal(a.count, 2);
    assert_string_equal(a.results[0].method, "auth");
    assert_string_equal(authres_prop(&a.results[0], "smtp", "auth"), "sender@example.net");
    assert_string_equal(a.results[1].method, "spf");
    authres_free(&a);
    a = parse_ok(" example.com; iprev=pass\r\n          policy.iprev=192.0.2.200");
    assert_string_equal(a.results[0].method, "iprev");
    assert_string_equal(authres_prop(&a.results[0], "policy", "iprev"), "192.0.2.200");
    authres_free(&a);
    /* B.5: several authentications, different MTAs */
    a = parse_ok(" example.com;\r\n          dkim=pass (good signature) header.d=example.com");
    assert_string_equal(a.results[0].method, "dkim");
    assert_string_equal(authres_prop(&a.results[0], "header", "d"), "example.com");
    authres_free(&a);
    a = parse_ok(" example.com;\r\n          auth=pass (cram-md5) smtp.auth=sender@example.com;\r\n"
                 "          spf=fail smtp.mailfrom=example.com");
    assert_string_equal(a.results[1].result, "fail");
    authres_free(&a);
}

static void rfc8601_b6_b7(void **state)
{
    (void)state;
    /* B.6: multi-tiered; reason as a quoted string, header.i with '@' */
    struct authres a = parse_ok(" example.com;\r\n      dkim=pass reason=\"good signature\"\r\n"
                                "        header.i=@mail-router.example.net;\r\n      dkim=fail reason=\"bad signature\"\r\n"
                                "        header.i=@newyork.example.com");
    assert_int_equal(a.count, 2);
    assert_string_equal(a.results[0].reason, "good signature");
    assert_string_equal(authres_prop(&a.results[0], "header", "i"), "@mail-router.example.net");
    assert_string_equal(a.results[1].result, "fail");
    assert_string_equal(a.results[1].reason, "bad signature");
    authres_free(&a);
    /* B.7: comment-heavy */
    a = parse_ok(" foo.example.net (foobar) 1 (baz);\r\n    dkim (Because I like it) / 1 (One yay) = (wait for it) fail\r\n"
                 "      policy (A dot can go here) . (like that) expired\r\n"
                 "      (this surprised me) = (as I wasn't expecting it) 1362471462");
    assert_string_equal(a.authserv_id, "foo.example.net");
    assert_int_equal(a.version, 1);
    assert_int_equal(a.count, 1);
    assert_string_equal(a.results[0].method, "dkim");
    assert_int_equal(a.results[0].version, 1);
    assert_string_equal(a.results[0].result, "fail");
    assert_string_equal(authres_prop(&a.results[0], "policy", "expired"), "1362471462");
    authres_free(&a);
}

static void real_fields(void **state)
{
    (void)state;
    /* Gmail's, folded, with comments holding ';' and '=' */
    struct authres a = parse_ok(
        " mx.google.com;\r\n       dkim=pass header.i=@example.org header.s=s1 header.b=\"gfT/i2HB\";\r\n"
        "       arc=pass (i=1 spf=pass spfdomain=example.org; dkim=pass dkdomain=example.org);\r\n"
        "       spf=pass (google.com: domain of a@example.org designates 203.0.113.9 as permitted sender) "
        "smtp.mailfrom=a@example.org;\r\n       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.org");
    assert_int_equal(a.count, 4);
    assert_string_equal(authres_prop(&a.results[0], "header", "b"), "gfT/i2HB");
    assert_string_equal(a.results[1].method, "arc");
    assert_string_equal(a.results[2].method, "spf");
    assert_string_equal(authres_prop(&a.results[2], "smtp", "mailfrom"), "a@example.org");
    assert_string_equal(a.results[3].method, "dmarc");
    authres_free(&a);
    /* Microsoft 365: no authserv-id, "action=none", compauth */
    a = parse_ok(" spf=pass (sender IP is 40.107.1.2) smtp.mailfrom=example.org; dkim=pass (signature was "
                 "verified) header.d=example.org;dmarc=pass action=none header.from=example.org;compauth=pass reason=100");
    assert_null(a.authserv_id);
    assert_int_equal(a.count, 4);
    assert_string_equal(a.results[0].method, "spf");
    assert_string_equal(a.results[2].method, "dmarc");
    assert_string_equal(a.results[3].reason, "100");
    authres_free(&a);
    /* a quoted authserv-id, upper case names, unquoted pvalue with '/' and a trailing ';' */
    a = parse_ok("\"Example.ORG\"; DKIM=PASS Header.D=Example.COM header.b=ab/c+d=;");
    assert_string_equal(a.authserv_id, "Example.ORG");
    assert_string_equal(a.results[0].method, "dkim");
    assert_string_equal(a.results[0].result, "pass");
    assert_string_equal(authres_prop(&a.results[0], "header", "d"), "Example.COM");
    assert_string_equal(authres_prop(&a.results[0], "header", "b"), "ab/c+d=");
    authres_free(&a);
    /* something unreadable is skipped up to the next ';' */
    a = parse_ok("mx.example.net; @@garbage@@; spf=fail smtp.mailfrom=x.example; dkim; dmarc=fail");
    assert_int_equal(a.count, 2);
    assert_string_equal(a.results[0].method, "spf");
    assert_string_equal(a.results[1].method, "dmarc");
    authres_free(&a);
    /* the method-version, and no results at all */
    a = parse_ok("mx.example.net; dkim/2=pass header.d=x");
    assert_int_equal(a.results[0].version, 2);
    authres_free(&a);
    a = parse_ok("mx.example.net");
    assert_int_equal(a.count, 0);
    assert_false(a.none);
    authres_free(&a);
}

static void not_parsed(void **state)
{
    (void)state;
    struct authres a;
    assert_int_equal(authres_parse("", 0, &a), -1);
    assert_int_equal(authres_parse("  (only a comment)  ", 20, &a), -1);
    assert_int_equal(authres_parse("; spf=pass", 10, &a), -1);
    assert_int_equal(authres_parse(NULL, 0, &a), -1);
    GString *g = g_string_new("x.example; spf=pass ");
    for (int i = 0; i < AUTHRES_COMMENT_DEPTH_MAX + 1; i++)
        g_string_append_c(g, '(');
    assert_int_equal(authres_parse(g->str, g->len, &a), -1);
    g_string_truncate(g, 0);
    g_string_append(g, "x.example; spf=pass smtp.mailfrom=");
    while (g->len <= AUTHRES_VALUE_MAX)
        g_string_append_c(g, 'a');
    assert_int_equal(authres_parse(g->str, g->len, &a), -1);
    g_string_free(g, TRUE);
    authres_free(NULL);
}

static void limits_kept(void **state)
{
    (void)state;
    GString *g = g_string_new("x.example");
    for (int i = 0; i < AUTHRES_RESULTS_MAX + 10; i++)
        g_string_append_printf(g, "; dkim=pass header.d=d%d.example", i);
    struct authres a = parse_ok(g->str);
    assert_int_equal(a.count, AUTHRES_RESULTS_MAX);
    authres_free(&a);
    g_string_truncate(g, 0);
    g_string_append(g, "x.example; spf=pass");
    for (int i = 0; i < AUTHRES_PROPS_MAX + 5; i++)
        g_string_append_printf(g, " smtp.p%d=v", i);
    g_string_append(g, "; dmarc=pass");
    a = parse_ok(g->str);
    assert_int_equal(a.results[0].prop_count, AUTHRES_PROPS_MAX);
    assert_string_equal(a.results[1].method, "dmarc");
    authres_free(&a);
    /* a long value is cut, on a character boundary */
    g_string_truncate(g, 0);
    g_string_append(g, "x.example; spf=pass smtp.mailfrom=");
    for (int i = 0; i < AUTHRES_TOKEN_MAX; i++)
        g_string_append(g, "\xc3\xa9");
    a = parse_ok(g->str);
    const char *v = authres_prop(&a.results[0], "smtp", "mailfrom");
    assert_true(strlen(v) < AUTHRES_TOKEN_MAX);
    assert_true(g_utf8_validate(v, -1, NULL));
    authres_free(&a);
    g_string_free(g, TRUE);
}

/* ---- the object ------------------------------------------------------------------------- */

static char *json_of(const char *const *v, size_t n, const char *const *t, size_t nt)
{
    cJSON *j = authres_json(v, n, t, nt);
    assert_non_null(j);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char *out = g_strdup(s);
    cJSON_free(s);
    return out;
}

#define JSON_IS(v, n, t, nt, want)                                                                 \
    do {                                                                                           \
        char *got_ = json_of(v, n, t, nt);                                                         \
        assert_string_equal(got_, want);                                                           \
        g_free(got_);                                                                              \
    } while (0)

static void object(void **state)
{
    (void)state;
    const char *gmail[] = {
        " mx.google.com;\r\n dkim=pass header.i=@example.org header.s=s1 header.b=abc;\r\n dkim=fail "
        "(bad signature) header.d=Other.Example;\r\n arc=pass (i=1);\r\n spf=softfail smtp.mailfrom=x@example.org;\r\n"
        " dmarc=pass (p=NONE) header.from=example.org"};
    JSON_IS(gmail, 1, NULL, 0,
            "{\"authserv_id\":\"mx.google.com\",\"spf\":\"softfail\",\"dkim\":[{\"domain\":\"example.org\","
            "\"result\":\"pass\"},{\"domain\":\"other.example\",\"result\":\"fail\"}],\"dmarc\":\"pass\",\"arc\":\"pass\"}");
    /* nothing usable */
    JSON_IS(NULL, 0, NULL, 0, "null");
    const char *bad[] = {"; spf=pass"};
    JSON_IS(bad, 1, NULL, 0, "null");
    /* Microsoft 365's field has no id */
    const char *ms[] = {"spf=pass (sender IP is 40.107.1.2) smtp.mailfrom=example.org; dkim=pass header.d=example.org"};
    JSON_IS(ms, 1, NULL, 0,
            "{\"authserv_id\":null,\"spf\":\"pass\",\"dkim\":[{\"domain\":\"example.org\",\"result\":\"pass\"}],"
            "\"dmarc\":null,\"arc\":null}");
    /* "none": the id, nothing else */
    const char *none[] = {"example.org 1; none"};
    JSON_IS(none, 1, NULL, 0,
            "{\"authserv_id\":\"example.org\",\"spf\":null,\"dkim\":[],\"dmarc\":null,\"arc\":null}");
    /* a dkim result without a domain */
    const char *nodom[] = {"example.org; dkim=none"};
    JSON_IS(nodom, 1, NULL, 0,
            "{\"authserv_id\":\"example.org\",\"spf\":null,\"dkim\":[{\"domain\":null,\"result\":\"none\"}],"
            "\"dmarc\":null,\"arc\":null}");
}

static void topmost_only(void **state)
{
    (void)state;
    /* the sender wrote a passing field below the receiver's: not believed */
    const char *v[] = {"mx.receiver.example; spf=fail smtp.mailfrom=bank.example; dmarc=fail",
                       "mx.receiver.example; dkim=pass header.d=bank.example; spf=pass; dmarc=pass"};
    JSON_IS(v, 2, NULL, 0,
            "{\"authserv_id\":\"mx.receiver.example\",\"spf\":\"fail\",\"dkim\":[],\"dmarc\":\"fail\",\"arc\":null}");
    /* the topmost field unreadable: nothing, not the one below */
    const char *w[] = {"(((", "mx.receiver.example; spf=pass"};
    JSON_IS(w, 2, NULL, 0, "null");
}

static void trusted_ids(void **state)
{
    (void)state;
    const char *trusted[] = {"mx.receiver.example", "filter.receiver.example"};
    /* a forged field on top with another id; the trusted ones below it, one per
       method as OpenDKIM/OpenDMARC write them; a forged one with a trusted id
       cannot exist (the MTA deletes those), another trusted id is not merged */
    const char *v[] = {"forger.example; dkim=pass header.d=bank.example; spf=pass; dmarc=pass",
                       "MX.Receiver.Example; spf=fail smtp.mailfrom=bank.example",
                       "other.example; dkim=pass header.d=bank.example",
                       "mx.receiver.example; dkim=fail header.d=bank.example",
                       "filter.receiver.example; dmarc=pass",
                       "mx.receiver.example; dmarc=fail header.from=bank.example"};
    JSON_IS(v, 6, trusted, 2,
            "{\"authserv_id\":\"MX.Receiver.Example\",\"spf\":\"fail\",\"dkim\":[{\"domain\":\"bank.example\","
            "\"result\":\"fail\"}],\"dmarc\":\"fail\",\"arc\":null}");
    /* no trusted id anywhere: null, even though fields exist */
    const char *only_forged[] = {"forger.example; spf=pass"};
    JSON_IS(only_forged, 1, trusted, 2, "null");
    /* with the list empty the forged topmost field would be read */
    JSON_IS(only_forged, 1, NULL, 0,
            "{\"authserv_id\":\"forger.example\",\"spf\":\"pass\",\"dkim\":[],\"dmarc\":null,\"arc\":null}");
}

static void object_limits(void **state)
{
    (void)state;
    GString *g = g_string_new("x.example");
    for (int i = 0; i < AUTHRES_DKIM_MAX + 5; i++)
        g_string_append_printf(g, "; dkim=pass header.d=d%d.example", i);
    const char *v[] = {g->str};
    cJSON *j = authres_json(v, 1, NULL, 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "dkim")), AUTHRES_DKIM_MAX);
    cJSON_Delete(j);
    g_string_free(g, TRUE);
    /* only AUTHRES_FIELDS_MAX fields from the top are looked at */
    const char *many[AUTHRES_FIELDS_MAX + 1];
    for (int i = 0; i < AUTHRES_FIELDS_MAX; i++)
        many[i] = "other.example; spf=pass";
    many[AUTHRES_FIELDS_MAX] = "trusted.example; spf=fail";
    const char *trusted[] = {"trusted.example"};
    JSON_IS(many, AUTHRES_FIELDS_MAX + 1, trusted, 1, "null");
    /* invalid UTF-8 comes out valid */
    const char *bin[] = {"\xff\xfe.example; dkim=pass header.d=\xc3"};
    j = authres_json(bin, 1, NULL, 0);
    char *s = cJSON_PrintUnformatted(j);
    assert_true(g_utf8_validate(s, -1, NULL));
    cJSON_free(s);
    cJSON_Delete(j);
}

/* Through the message object: the fields in their order, the account's ids. */
static void in_message(void **state)
{
    (void)state;
    const char *raw = "Authentication-Results: mx.receiver.example;\r\n\tspf=pass smtp.mailfrom=shop.example\r\n"
                      "Authentication-Results: mx.receiver.example; dkim=pass header.d=shop.example\r\n"
                      "Received: from mail.shop.example by mx.receiver.example\r\n"
                      "Authentication-Results: forged.example; dmarc=pass\r\n"
                      "From: shop@shop.example\r\nSubject: x\r\n\r\nbody\r\n";
    const char *trusted[] = {"mx.receiver.example"};
    struct message_opts o = {.trusted_authserv_ids = trusted, .trusted_authserv_id_count = 1};
    struct err e;
    cJSON *m = message_to_json(raw, strlen(raw), &o, &e);
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(m, "authentication"));
    assert_string_equal(s, "{\"authserv_id\":\"mx.receiver.example\",\"spf\":\"pass\",\"dkim\":[{\"domain\":"
                           "\"shop.example\",\"result\":\"pass\"}],\"dmarc\":null,\"arc\":null}");
    cJSON_free(s);
    cJSON_Delete(m);
    /* without the list: the topmost field alone */
    m = message_to_json(raw, strlen(raw), NULL, &e);
    s = cJSON_PrintUnformatted(cJSON_GetObjectItem(m, "authentication"));
    assert_string_equal(s, "{\"authserv_id\":\"mx.receiver.example\",\"spf\":\"pass\",\"dkim\":[],"
                           "\"dmarc\":null,\"arc\":null}");
    cJSON_free(s);
    cJSON_Delete(m);
    /* no field: null */
    m = message_to_json("From: a@b.example\r\n\r\nx", 22, NULL, &e);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "authentication")));
    cJSON_Delete(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc8601_b2_b3), cmocka_unit_test(rfc8601_b4_b5),
        cmocka_unit_test(rfc8601_b6_b7), cmocka_unit_test(real_fields),
        cmocka_unit_test(not_parsed),    cmocka_unit_test(limits_kept),
        cmocka_unit_test(object),        cmocka_unit_test(topmost_only),
        cmocka_unit_test(trusted_ids),   cmocka_unit_test(object_limits),
        cmocka_unit_test(in_message),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    message_global_cleanup();
    return rc;
}
