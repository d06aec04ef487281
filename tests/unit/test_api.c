/* Unit tests: the API's pure pieces (include/api.h), the metrics text
 * (include/metrics.h) and the session table without a server
 * (include/sessions.h).  The HTTP behaviour is tested end to end in
 * tests/integration/test_api.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "cfgref.h"
#include "metrics.h"
#include "sessions.h"

/* ---- the one status mapping ------------------------------------------------------------ */

static int status_of(enum err_kind k, enum err_code c, int *ra)
{
    struct err e;
    err_clear(&e);
    e.kind = k;
    e.code = c;
    return api_http_status(&e, ra);
}

static void error_mapping(void **state)
{
    (void)state;
    int ra;
    assert_int_equal(status_of(ERR_AUTH, ERR_CODE_NONE, &ra), 502);
    assert_int_equal(ra, 0);
    assert_int_equal(status_of(ERR_SERVER, ERR_CODE_AUTH, &ra), 502);
    assert_int_equal(status_of(ERR_SERVER, ERR_CODE_IN_USE, &ra), 409);
    assert_int_equal(ra, 0);
    assert_int_equal(status_of(ERR_SERVER, ERR_CODE_LOGIN_DELAY, &ra), 429);
    assert_int_equal(ra, API_LOGIN_DELAY_RETRY_S);
    assert_int_equal(status_of(ERR_SERVER, ERR_CODE_SYS_TEMP, &ra), 503);
    assert_int_equal(ra, API_RETRY_AFTER_S);
    assert_int_equal(status_of(ERR_SERVER, ERR_CODE_SYS_PERM, &ra), 502);
    assert_int_equal(status_of(ERR_SERVER, ERR_CODE_NONE, &ra), 502);
    assert_int_equal(status_of(ERR_CONN, ERR_CODE_NONE, &ra), 502);
    assert_int_equal(status_of(ERR_TLS, ERR_CODE_NONE, &ra), 502);
    assert_int_equal(status_of(ERR_PROTO, ERR_CODE_NONE, &ra), 502);
    assert_int_equal(status_of(ERR_LIMIT, ERR_CODE_NONE, &ra), 502);
    assert_int_equal(status_of(ERR_TIMEOUT, ERR_CODE_NONE, &ra), 504);
    assert_int_equal(ra, 0);
    assert_int_equal(status_of(ERR_INTERNAL, ERR_CODE_NONE, &ra), 500);
    assert_int_equal(status_of(ERR_USAGE, ERR_CODE_NONE, &ra), 500);
}

/* ---- percent-decoding and UTF-8 ------------------------------------------------------- */

static void decode_good(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } v[] = {
        {"abc", "abc"},
        {"a%2Fb%3Fc%25d", "a/b?c%d"},
        {"%2e%2E", ".."},                 /* decoding itself allows it; the router refuses */
        {"%C3%A9t%c3%a9", "\xc3\xa9t\xc3\xa9"},
        {"%F0%9F%93%AC", "\xf0\x9f\x93\xac"},
        {"+x~!", "+x~!"},                 /* '+' is a plus, not a space */
        {"", ""},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[64];
        size_t n = 99;
        const char *why = NULL;
        assert_int_equal(api_pct_decode(v[i].in, strlen(v[i].in), out, sizeof out, &n, &why), 0);
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
        {"%", "hex"},       {"%2", "hex"},           {"a%zz", "hex"},     {"%g0", "hex"},
        {"a%00b", "control"}, {"%0d%0a", "control"}, {"%7f", "control"}, {"a b", "space"},
        {"\x01", "control"}, {"%C3%28", "UTF-8"},    {"%C0%AF", "UTF-8"}, {"%ED%A0%80", "UTF-8"},
        {"%F4%90%80%80", "UTF-8"}, {"%E2%82", "UTF-8"}, {"\xff", "UTF-8"}, {"%FE", "UTF-8"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[64];
        const char *why = NULL;
        if (api_pct_decode(v[i].in, strlen(v[i].in), out, sizeof out, NULL, &why) != -1)
            fail_msg("\"%s\" was accepted", v[i].in);
        assert_non_null(why);
        if (!strstr(why, v[i].why))
            fail_msg("\"%s\": reason \"%s\" does not mention %s", v[i].in, why, v[i].why);
    }
    /* output buffer too small is an error, never a truncation */
    char small[4];
    const char *why = NULL;
    assert_int_equal(api_pct_decode("abcd", 4, small, sizeof small, NULL, &why), -1);
    assert_string_equal(why, "too long");
}

static void utf8(void **state)
{
    (void)state;
    assert_true(api_utf8_valid("", 0));
    assert_true(api_utf8_valid("plain ascii", 11));
    assert_true(api_utf8_valid("\xc2\x80", 2));
    assert_true(api_utf8_valid("\xef\xbf\xbf", 3));
    assert_true(api_utf8_valid("\xf4\x8f\xbf\xbf", 4));     /* U+10FFFF */
    assert_false(api_utf8_valid("\xc1\xbf", 2));            /* overlong */
    assert_false(api_utf8_valid("\xe0\x9f\xbf", 3));        /* overlong */
    assert_false(api_utf8_valid("\xf0\x8f\xbf\xbf", 4));    /* overlong */
    assert_false(api_utf8_valid("\xed\xb0\x80", 3));        /* surrogate */
    assert_false(api_utf8_valid("\xf4\x90\x80\x80", 4));    /* > U+10FFFF */
    assert_false(api_utf8_valid("\xc3", 1));                /* truncated */
    assert_false(api_utf8_valid("a\xe2\x82", 3));           /* truncated */
    assert_false(api_utf8_valid("\x80", 1));                /* lone continuation */
    assert_false(api_utf8_valid("\xc3\x28", 2));
}

/* ---- routes and static types ------------------------------------------------------------ */

static void routes(void **state)
{
    (void)state;
    char allow[96];
    assert_true(api_route_lookup("GET", "/api/v1/accounts", allow, sizeof allow) >= 0);
    assert_true(api_route_lookup("HEAD", "/api/v1/accounts", allow, sizeof allow) >= 0);
    assert_true(api_route_lookup("GET", "/api/v1/accounts/a/messages/x%2Fy/top", allow,
                                 sizeof allow) >= 0);
    assert_true(api_route_lookup("DELETE", "/api/v1/sessions/s_1/messages/3", allow,
                                 sizeof allow) >= 0);
    assert_int_equal(api_route_lookup("PUT", "/api/v1/accounts", allow, sizeof allow), -405);
    assert_string_equal(allow, "GET, HEAD");
    assert_int_equal(api_route_lookup("PATCH", "/api/v1/accounts/a/messages/u", allow,
                                      sizeof allow), -405);
    assert_string_equal(allow, "GET, HEAD, DELETE");
    assert_int_equal(api_route_lookup("GET", "/api/v1/accounts/a/poll", allow, sizeof allow),
                     -405);
    assert_string_equal(allow, "POST");
    assert_int_equal(api_route_lookup("GET", "/api/v1/nothing", allow, sizeof allow), -404);
    assert_int_equal(api_route_lookup("GET", "/api/v1/accounts/", allow, sizeof allow), -404);
    assert_int_equal(api_route_lookup("GET", "/api/v1/accounts//messages", allow, sizeof allow),
                     -404);
    assert_int_equal(api_route_lookup("GET", "/api/v1/accounts/..", allow, sizeof allow), -400);
    assert_int_equal(api_route_lookup("GET", "/api/v1/accounts/%2e", allow, sizeof allow), -400);
    assert_int_equal(api_route_lookup("GET", "/api/v1/accounts/%zz", allow, sizeof allow), -400);
    assert_int_equal(api_route_lookup("GET", "api/v1/accounts", allow, sizeof allow), -400);
    assert_int_equal(api_route_lookup("GET", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q", allow,
                                      sizeof allow), -400);
    assert_true(api_route_lookup("GET", "/healthz", allow, sizeof allow) >= 0);
}

static void static_types(void **state)
{
    (void)state;
    assert_string_equal(api_static_type("index.html"), "text/html; charset=utf-8");
    assert_string_equal(api_static_type("assets/app.js"), "text/javascript; charset=utf-8");
    assert_string_equal(api_static_type("a.woff2"), "font/woff2");
    assert_null(api_static_type("notes.php"));
    assert_null(api_static_type("Makefile"));
    assert_null(api_static_type(".html"));
    assert_null(api_static_type("x.HTML"));
    assert_null(api_static_type("x.html.bak"));
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void metrics_text(void **state)
{
    (void)state;
    metrics_reset();
    struct poller_result r = {.fetched = 3, .bytes = 1234, .too_large = 1, .deleted = 2};
    metrics_on_poll("sup\"port\\x\ny", NULL, &r);
    metrics_on_poll("sales", NULL, &r);
    struct err e;
    err_clear(&e);
    e.kind = ERR_SERVER;
    e.code = ERR_CODE_IN_USE;
    metrics_on_poll("sales", &e, NULL);
    struct store_delivery dl = {0};
    snprintf(dl.webhook, sizeof dl.webhook, "crm");
    metrics_on_delivery(NULL, &dl, "delivered", 200, 700);
    metrics_on_delivery(NULL, &dl, "delivered", 200, 70000);
    metrics_on_delivery(NULL, &dl, "retry", 503, 0);
    metrics_on_http(200);
    metrics_on_http(200);
    metrics_on_http(404);
    struct store_queue_counts q = {.pending = 4, .failed = 1, .delivered = 9, .dead = 2};
    struct metrics_gauges g = {&q, 3};
    size_t len;
    char *t = metrics_render(&g, &len, &e);
    assert_non_null(t);
    assert_int_equal(len, strlen(t));
    const char *want[] = {
        "pop3bridge_polls_total{account=\"sup\\\"port\\\\x\\ny\",result=\"ok\"} 1\n",
        "pop3bridge_polls_total{account=\"sales\",result=\"ok\"} 1\n",
        "pop3bridge_polls_total{account=\"sales\",result=\"error\"} 1\n",
        "pop3bridge_poll_errors_total{account=\"sales\",kind=\"in_use\"} 1\n",
        "pop3bridge_messages_fetched_total{account=\"sales\"} 3\n",
        "pop3bridge_bytes_fetched_total{account=\"sales\"} 1234\n",
        "pop3bridge_messages_too_large_total{account=\"sales\"} 1\n",
        "pop3bridge_messages_deleted_total{account=\"sales\"} 2\n",
        "pop3bridge_deliveries_total{webhook=\"crm\",outcome=\"delivered\"} 2\n",
        "pop3bridge_deliveries_total{webhook=\"crm\",outcome=\"retry\"} 1\n",
        "pop3bridge_http_requests_total{code=\"200\"} 2\n",
        "pop3bridge_http_requests_total{code=\"404\"} 1\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"0.5\"} 0\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"1\"} 1\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"60\"} 1\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"300\"} 2\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"+Inf\"} 2\n",
        "pop3bridge_delivery_latency_seconds_sum 70.700\n",
        "pop3bridge_delivery_latency_seconds_count 2\n",
        "pop3bridge_delivery_queue{status=\"pending\"} 4\n",
        "pop3bridge_delivery_queue{status=\"dead\"} 2\n",
        "pop3bridge_api_sessions_open 3\n",
        "# TYPE pop3bridge_delivery_latency_seconds histogram\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(t, want[i]))
            fail_msg("metrics lack: %s\n--- got:\n%s", want[i], t);
    free(t);
    metrics_reset();
    t = metrics_render(NULL, &len, &e);
    assert_non_null(t);
    assert_null(strstr(t, "account=\"sales\""));
    assert_null(strstr(t, "pop3bridge_delivery_queue{"));
    free(t);
}

/* ---- sessions without a server -------------------------------------------------------------- */

static void sessions_no_server(void **state)
{
    (void)state;
    struct err e;
    struct sessions *s = sessions_new(&e);
    assert_non_null(s);
    /* a port that refuses: the open fails and gives its slot back */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd); /* bound then closed: nothing listens there now */
    struct pop3_opts o = {.host = "127.0.0.1", .port = ntohs(a.sin_port), .tls = POP3_TLS_NONE,
                          .username = "u", .password = "p", .allow_plaintext = true,
                          .timeout_ms = 2000};
    struct sessions_limits lim = {1, 1, 60000};
    struct session_info info;
    assert_int_equal(sessions_open(s, "acct", &o, NULL, &lim, &info, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_int_equal(sessions_count(s), 0);
    /* the slot is free again: a second try fails the same way, not with FULL */
    assert_int_equal(sessions_open(s, "acct", &o, NULL, &lim, &info, &e), -1);
    int why = 0;
    assert_null(sessions_acquire(s, "s_00000000000000000000000000000000", 10, &why));
    assert_int_equal(why, SESSIONS_NOTFOUND);
    assert_null(sessions_acquire(s, "short", 0, &why));
    assert_int_equal(why, SESSIONS_NOTFOUND);
    sessions_free(&s);
    assert_null(s);
    sessions_free(&s); /* NULL-safe */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_mapping),   cmocka_unit_test(decode_good),
        cmocka_unit_test(decode_bad),      cmocka_unit_test(utf8),
        cmocka_unit_test(routes),          cmocka_unit_test(static_types),
        cmocka_unit_test(metrics_text),    cmocka_unit_test(sessions_no_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
