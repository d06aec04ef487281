/* Unit tests: http(s) and POP3 URLs through libcurl's URL API (include/url.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "url.h"

static void expect_problem(const char *u, unsigned flags, const char *want)
{
    const char *why = url_http_problem(u, flags);
    if (!want && why)
        fail_msg("%s: unexpected \"%s\"", u, why);
    if (want && (!why || !strstr(why, want)))
        fail_msg("%s: \"%s\", not \"%s\"", u, why ? why : "(fine)", want);
}

static void http(void **state)
{
    (void)state;
    expect_problem("http://127.0.0.1:8025", 0, NULL);
    expect_problem("HTTPS://hooks.example/in?x=1#f", 0, NULL);
    expect_problem("http://[::1]:9000/path", 0, NULL);
    expect_problem(NULL, 0, "must start with http:// or https://");
    expect_problem("ftp://example.com/", 0, "must start with http:// or https://");
    expect_problem("http:/example.com", 0, "must start with http:// or https://");
    expect_problem("http:///path", 0, "has no host after the scheme");
    expect_problem("http://exa mple.com/", 0, "must not contain spaces");
    expect_problem("http://example.com/\x01", 0, "control characters");
    expect_problem("http://user:pw@example.com/", 0, "user information");
    expect_problem("http://user@example.com/", 0, "user information");
    expect_problem("http://example.com:99999/", 0, "bad port");
    expect_problem("http://exa_mple..com^/", 0, "host");
    /* origins */
    expect_problem("http://localhost:3000", URL_ORIGIN_ONLY, NULL);
    expect_problem("http://localhost:3000/", URL_ORIGIN_ONLY, "without a path");
    expect_problem("http://localhost:3000?x", URL_ORIGIN_ONLY, "without a path");
    /* authorization servers */
    expect_problem("https://login.example/token", URL_HTTPS_ONLY, NULL);
    expect_problem("http://login.example/token", URL_HTTPS_ONLY, "must start with https://");
}

static void pop3_ok(void **state)
{
    (void)state;
    struct url_pop3 u;
    struct err e;
    err_clear(&e);
    assert_int_equal(url_parse_pop3("pop3s://alice@mail.example:995", &u, &e), 0);
    assert_true(u.tls);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.host, "mail.example");
    assert_int_equal(u.port, 995);
    assert_int_equal(url_parse_pop3("pop3://bob@127.0.0.1/", &u, &e), 0);
    assert_false(u.tls);
    assert_int_equal(u.port, 0); /* none given: the caller's default */
    /* an address as user name, unencoded or encoded; a ':' belongs to it */
    assert_int_equal(url_parse_pop3("pop3s://me@example.com@mail.example", &u, &e), 0);
    assert_string_equal(u.user, "me@example.com");
    assert_string_equal(u.host, "mail.example");
    assert_int_equal(url_parse_pop3("pop3s://me%40example.com@mail.example", &u, &e), 0);
    assert_string_equal(u.user, "me@example.com");
    assert_int_equal(url_parse_pop3("pop3s://a:b%20c@h", &u, &e), 0);
    assert_string_equal(u.user, "a:b c");
    /* IPv6 without brackets */
    assert_int_equal(url_parse_pop3("pop3s://u@[::1]:1995", &u, &e), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 1995);
}

static void pop3_bad(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"http://u@h", "must start with pop3s:// or pop3://"},
        {"pop3s://127.0.0.1", "needs a user name"},
        {"pop3s://@127.0.0.1", "needs a user name"},
        {"pop3s://u@127.0.0.1:99999", "bad port"},
        {"pop3s://u@127.0.0.1:0", "bad port"},
        {"pop3s://u@h/INBOX", "ends after HOST[:PORT]"},
        {"pop3s://u@h?x", "ends after HOST[:PORT]"},
        {"pop3s://u%0d%0a@h", "bad user name"},
        {"pop3s://u@h x", "spaces"},
        {"pop3s://u@", "host"},
        {NULL, NULL},
    };
    for (int i = 0; bad[i][0]; i++) {
        struct url_pop3 u;
        struct err e;
        err_clear(&e);
        if (url_parse_pop3(bad[i][0], &u, &e) != -1)
            fail_msg("%s: accepted", bad[i][0]);
        assert_int_equal(e.kind, ERR_USAGE);
        if (!strstr(e.msg, bad[i][1]))
            fail_msg("%s: \"%s\", not \"%s\"", bad[i][0], e.msg, bad[i][1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(http),
        cmocka_unit_test(pop3_ok),
        cmocka_unit_test(pop3_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
