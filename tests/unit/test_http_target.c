/* Unit tests: strict request-target parsing (include/http_target.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "http_target.h"

static void decode_good(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } v[] = {
        {"abc", "abc"},
        {"a%2Fb%3Fc%25d", "a/b?c%d"},
        {"%2e%2E", ".."},                 /* decoding itself allows it; the path parser refuses */
        {"%C3%A9t%c3%a9", "\xc3\xa9t\xc3\xa9"},
        {"%F0%9F%93%AC", "\xf0\x9f\x93\xac"},
        {"+x~!", "+x~!"},                 /* '+' is a plus, not a space */
        {"\xc2\x80\xef\xbf\xbf", "\xc2\x80\xef\xbf\xbf"},
        {"\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"}, /* U+10FFFF */
        {"", ""},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[64];
        size_t n = 99;
        const char *why = NULL;
        assert_int_equal(http_pct_decode(v[i].in, strlen(v[i].in), out, sizeof out, &n, &why),
                         0);
        assert_string_equal(out, v[i].out);
        assert_int_equal(n, strlen(v[i].out));
    }
}

static void decode_bad(void **state)
{
    (void)state;
    static const struct {
        const char *in, *why;
    } v[] = {
        {"%", "hex"},         {"%2", "hex"},           {"a%zz", "hex"},     {"%g0", "hex"},
        {"a%00b", "control"}, {"%0d%0a", "control"}, {"%7f", "control"}, {"a b", "space"},
        {"\x01", "control"},  {"%C3%28", "UTF-8"},    {"%C0%AF", "UTF-8"}, {"%ED%A0%80", "UTF-8"},
        {"%F4%90%80%80", "UTF-8"}, {"%E2%82", "UTF-8"}, {"\xff", "UTF-8"}, {"%FE", "UTF-8"},
        {"\xc1\xbf", "UTF-8"},         /* overlong */
        {"\xe0\x9f\xbf", "UTF-8"},     /* overlong */
        {"\xf0\x8f\xbf\xbf", "UTF-8"}, /* overlong */
        {"\xed\xb0\x80", "UTF-8"},     /* surrogate */
        {"\xc3", "UTF-8"},             /* truncated */
        {"a\xe2\x82", "UTF-8"},        /* truncated */
        {"\x80", "UTF-8"},             /* lone continuation */
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[64];
        const char *why = NULL;
        if (http_pct_decode(v[i].in, strlen(v[i].in), out, sizeof out, NULL, &why) != -1)
            fail_msg("\"%s\" was accepted", v[i].in);
        assert_non_null(why);
        if (!strstr(why, v[i].why))
            fail_msg("\"%s\": reason \"%s\" does not mention %s", v[i].in, why, v[i].why);
    }
    /* an output buffer too small is an error, never a truncation */
    char small[4];
    const char *why = NULL;
    assert_int_equal(http_pct_decode("abcd", 4, small, sizeof small, NULL, &why), -1);
    assert_string_equal(why, "too long");
}

static void parse_paths(void **state)
{
    (void)state;
    struct http_target t;
    const char *why = NULL;
    assert_int_equal(http_target_parse("/", &t, &why), HTTP_TARGET_OK);
    assert_int_equal(t.nseg, 0);
    assert_int_equal(t.nq, 0);
    http_target_free(&t);

    assert_int_equal(http_target_parse("/api/v1/accounts/a%2Fb/messages/x%3Fy", &t, &why),
                     HTTP_TARGET_OK);
    assert_int_equal(t.nseg, 6);
    assert_string_equal(t.seg[0], "api");
    assert_string_equal(t.seg[3], "a/b");
    assert_string_equal(t.seg[5], "x?y");
    http_target_free(&t);
    http_target_free(&t); /* idempotent */

    /* a trailing slash and a doubled one give empty segments */
    assert_int_equal(http_target_parse("/a//b/", &t, &why), HTTP_TARGET_OK);
    assert_int_equal(t.nseg, 4);
    assert_string_equal(t.seg[1], "");
    assert_string_equal(t.seg[3], "");
    http_target_free(&t);

    static const struct {
        const char *raw, *why;
    } bad[] = {
        {"api/v1", "start"},
        {"", "start"},
        {"/a/../b", "\"..\""},
        {"/a/./b", "\".\""},
        {"/a/%2e%2E", "encoded"},
        {"/a/%2E", "encoded"},
        {"/a/%zz", "hex"},
        {"/a/\xff", "UTF-8"},
        {"/a/b c", "space"},
        {"/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17", "too many"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        if (http_target_parse(bad[i].raw, &t, &why) != HTTP_TARGET_BAD_PATH)
            fail_msg("%s was not refused as a bad path", bad[i].raw);
        if (!why || !strstr(why, bad[i].why))
            fail_msg("%s: reason \"%s\" does not mention %s", bad[i].raw, why ? why : "",
                     bad[i].why);
        http_target_free(&t);
    }
    /* exactly HTTP_SEGMENTS_MAX segments are fine */
    assert_int_equal(http_target_parse("/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", &t, &why),
                     HTTP_TARGET_OK);
    assert_int_equal(t.nseg, HTTP_SEGMENTS_MAX);
    http_target_free(&t);
}

static void parse_queries(void **state)
{
    (void)state;
    struct http_target t;
    const char *why = NULL;
    assert_int_equal(http_target_parse("/d?status=dead&limit=5&&flag&cursor=a%26b%3D", &t, &why),
                     HTTP_TARGET_OK);
    assert_int_equal(t.nq, 4);
    assert_string_equal(http_target_query(&t, "status"), "dead");
    assert_string_equal(http_target_query(&t, "limit"), "5");
    assert_string_equal(http_target_query(&t, "flag"), "");
    assert_string_equal(http_target_query(&t, "cursor"), "a&b=");
    assert_null(http_target_query(&t, "nope"));
    assert_int_equal(t.nseg, 1);
    assert_string_equal(t.seg[0], "d");
    http_target_free(&t);

    assert_int_equal(http_target_parse("/d?", &t, &why), HTTP_TARGET_OK);
    assert_int_equal(t.nq, 0);
    http_target_free(&t);

    static const struct {
        const char *raw, *why;
    } bad[] = {
        {"/d?a=1&a=2", "twice"},
        {"/d?x=%ff", "UTF-8"},
        {"/d?%zz=1", "hex"},
        {"/d?x=%00", "control"},
        {"/d?a=1&b=1&c=1&d=1&e=1&f=1&g=1&h=1&i=1&j=1&k=1&l=1&m=1&n=1&o=1&p=1&q=1",
         "too many"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        if (http_target_parse(bad[i].raw, &t, &why) != HTTP_TARGET_BAD_QUERY)
            fail_msg("%s was not refused as a bad query", bad[i].raw);
        if (!why || !strstr(why, bad[i].why))
            fail_msg("%s: reason \"%s\" does not mention %s", bad[i].raw, why ? why : "",
                     bad[i].why);
        http_target_free(&t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decode_good),
        cmocka_unit_test(decode_bad),
        cmocka_unit_test(parse_paths),
        cmocka_unit_test(parse_queries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
