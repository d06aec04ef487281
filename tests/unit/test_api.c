/* Unit tests: the API's error mapping and its route table (include/api.h).
 * The HTTP behaviour is tested end to end in tests/integration/test_api.py;
 * the HTTP layer in test_http*.c, sessions in test_sessions.c, the mailbox
 * service in test_mailbox.c, the metrics text in test_metrics.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "api.h"
#include "http_target.h"

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

/* ---- the route table --------------------------------------------------------------------- */

#define PARAM_MAX 64

/* Route method + raw path through the API's table: >= 0 the route, an
 * HTTP_ROUTE_* code, or -400 for a malformed path; *pattern the route's. */
static int lookup(const char *method, const char *raw, char *allow, const char **pattern,
                  char *param, const char *name)
{
    size_t n;
    const struct http_route *routes = api_routes(&n);
    struct http_target t;
    struct http_params p;
    const char *why;
    if (http_target_parse(raw, &t, &why) != HTTP_TARGET_OK) {
        http_target_free(&t);
        return -400;
    }
    int k = http_route_find(routes, n, method, t.seg, t.nseg, &p, allow, HTTP_ALLOW_MAX, NULL);
    if (k >= 0 && pattern)
        *pattern = routes[k].pattern;
    if (k >= 0 && param) {
        const char *v = http_params_get(&p, name);
        snprintf(param, PARAM_MAX, "%s", v ? v : "(none)");
    }
    http_target_free(&t);
    return k;
}

static void routes(void **state)
{
    (void)state;
    char allow[HTTP_ALLOW_MAX], v[PARAM_MAX];
    const char *pat = NULL;
    assert_true(lookup("GET", "/api/v1/accounts", allow, &pat, NULL, NULL) >= 0);
    assert_string_equal(pat, "/api/v1/accounts");
    assert_true(lookup("HEAD", "/api/v1/accounts", allow, NULL, NULL, NULL) >= 0);
    assert_true(lookup("GET", "/api/v1/accounts/a/messages/x%2Fy/top", allow, &pat, v, "uidl") >=
                0);
    assert_string_equal(pat, "/api/v1/accounts/{account}/messages/{uidl}/top");
    assert_string_equal(v, "x/y");
    assert_true(lookup("DELETE", "/api/v1/sessions/s_1/messages/3", allow, NULL, v, "number") >=
                0);
    assert_string_equal(v, "3");
    assert_true(lookup("GET", "/api/v1/messages/m_1/attachments/2.1", allow, NULL, v,
                       "attachment_id") >= 0);
    assert_string_equal(v, "2.1");
    assert_int_equal(lookup("PUT", "/api/v1/accounts", allow, NULL, NULL, NULL),
                     HTTP_ROUTE_NO_METHOD);
    assert_string_equal(allow, "GET, HEAD");
    assert_int_equal(lookup("PATCH", "/api/v1/accounts/a/messages/u", allow, NULL, NULL, NULL),
                     HTTP_ROUTE_NO_METHOD);
    assert_string_equal(allow, "GET, HEAD, DELETE");
    assert_int_equal(lookup("GET", "/api/v1/accounts/a/poll", allow, NULL, NULL, NULL),
                     HTTP_ROUTE_NO_METHOD);
    assert_string_equal(allow, "POST");
    assert_int_equal(lookup("GET", "/api/v1/nothing", allow, NULL, NULL, NULL),
                     HTTP_ROUTE_NOT_FOUND);
    assert_int_equal(lookup("GET", "/api/v1/accounts/", allow, NULL, NULL, NULL),
                     HTTP_ROUTE_NOT_FOUND);
    assert_int_equal(lookup("GET", "/api/v1/accounts//messages", allow, NULL, NULL, NULL),
                     HTTP_ROUTE_NOT_FOUND);
    assert_int_equal(lookup("GET", "/api/v1/accounts/..", allow, NULL, NULL, NULL), -400);
    assert_int_equal(lookup("GET", "/api/v1/accounts/%2e", allow, NULL, NULL, NULL), -400);
    assert_int_equal(lookup("GET", "/api/v1/accounts/%zz", allow, NULL, NULL, NULL), -400);
    assert_int_equal(lookup("GET", "api/v1/accounts", allow, NULL, NULL, NULL), -400);
    assert_true(lookup("GET", "/healthz", allow, NULL, NULL, NULL) >= 0);
}

/* The table passes the HTTP layer's check; /api/v1 and /metrics need a
 * token, the health endpoints and the document do not; every route under
 * /api/v1 that names an account calls it {account}. */
static void route_table_shape(void **state)
{
    (void)state;
    size_t n, bad = 0;
    const struct http_route *r = api_routes(&n);
    assert_int_equal(n, 27);
    assert_int_equal(http_route_check(r, n, &bad), 0);
    for (size_t i = 0; i < n; i++) {
        bool pub = (r[i].flags & HTTP_ROUTE_PUBLIC) != 0;
        bool want_pub = strcmp(r[i].pattern, "/healthz") == 0 ||
                        strcmp(r[i].pattern, "/readyz") == 0 ||
                        strcmp(r[i].pattern, "/openapi.yaml") == 0;
        if (pub != want_pub)
            fail_msg("%s %s: public is %d", r[i].method, r[i].pattern, pub);
        if (strncmp(r[i].pattern, "/api/v1/accounts/", 17) == 0 &&
            strncmp(r[i].pattern + 17, "{account}", 9) != 0)
            fail_msg("%s does not name its account {account}", r[i].pattern);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_mapping),
        cmocka_unit_test(routes),
        cmocka_unit_test(route_table_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
