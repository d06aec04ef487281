/* Unit tests: the API's error mapping, its route table and its operations
 * endpoints (bridge/api.c: /healthz, /readyz, /metrics, /openapi.yaml) over
 * real HTTP with a runtime of the test's own (api_fixture.h).  The resources'
 * handlers are in test_api_accounts.c, test_api_mailbox.c,
 * test_api_sessions.c and test_api_store.c; the HTTP layer in test_http*.c;
 * the whole bridge in tests/integration/test_api.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "api.h"
#include "api_fixture.h"
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
    assert_int_equal(status_of(ERR_TIMEOUT, ERR_CODE_REFRESH_WAIT, &ra), 503);
    assert_int_equal(ra, API_REFRESH_WAIT_RETRY_S);
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
    /* the bulk retry is its own route beside a delivery's {id} */
    assert_true(lookup("POST", "/api/v1/deliveries/retry", allow, NULL, NULL, NULL) >= 0);
    assert_true(lookup("DELETE", "/api/v1/deliveries/d_1", allow, NULL, NULL, NULL) >= 0);
    assert_int_equal(lookup("PUT", "/api/v1/deliveries/d_1", allow, NULL, NULL, NULL),
                     HTTP_ROUTE_NO_METHOD);
    assert_string_equal(allow, "GET, HEAD, DELETE");
    assert_true(lookup("POST", "/api/v1/webhooks/crm/match", allow, NULL, v, "name") >= 0);
    assert_string_equal(v, "crm");
    assert_true(lookup("GET", "/api/v1/webhooks", allow, &pat, NULL, NULL) >= 0);
    assert_true(lookup("GET", "/api/v1/stats/hourly", allow, &pat, NULL, NULL) >= 0);
    assert_string_equal(pat, "/api/v1/stats/hourly");
}

/* The table passes the HTTP layer's check; /api/v1 and /metrics need a
 * token, the health endpoints and the document do not, the raw message and
 * attachments also take a signed link; every route under
 * /api/v1 that names an account calls it {account}. */
static void route_table_shape(void **state)
{
    (void)state;
    size_t n, bad = 0;
    const struct http_route *r = api_routes(&n);
    assert_int_equal(n, 36);
    assert_int_equal(http_route_check(r, n, &bad), 0);
    for (size_t i = 0; i < n; i++) {
        bool pub = (r[i].flags & HTTP_ROUTE_PUBLIC) != 0;
        bool want_pub = strcmp(r[i].pattern, "/healthz") == 0 ||
                        strcmp(r[i].pattern, "/readyz") == 0 ||
                        strcmp(r[i].pattern, "/openapi.yaml") == 0;
        if (pub != want_pub)
            fail_msg("%s %s: public is %d", r[i].method, r[i].pattern, pub);
        /* only the two link targets take signed links instead of a token */
        bool sig = (r[i].flags & HTTP_ROUTE_SIGNED) != 0;
        bool want_sig = strcmp(r[i].pattern, "/api/v1/messages/{id}/raw") == 0 ||
                        strcmp(r[i].pattern, "/api/v1/messages/{id}/attachments/{attachment_id}") == 0;
        if (sig != want_sig)
            fail_msg("%s %s: signed is %d", r[i].method, r[i].pattern, sig);
        if (strncmp(r[i].pattern, "/api/v1/accounts/", 17) == 0 &&
            strncmp(r[i].pattern + 17, "{account}", 9) != 0)
            fail_msg("%s does not name its account {account}", r[i].pattern);
    }
}

/* ---- the operations endpoints ------------------------------------------------------------ */

static const char *const ONE_ACCOUNT =
    "{\"name\": \"a\", \"host\": \"127.0.0.1\", \"username\": \"u\", \"password_env\": "
    "\"FIX_PW\"}";

/* /readyz needs no token; only a client with one learns why it is not
 * ready (the store's error names files). */
static void readyz(void **state)
{
    (void)state;
    struct fixture f = {0};
    assert_int_equal(fix_start(&f, "", ONE_ACCOUNT), 0);
    /* the store cannot be opened: a file where its directory should be */
    FILE *fp = fopen(f.state, "w");
    assert_non_null(fp);
    fclose(fp);
    struct fix_resp r;
    fix_req(&f, "GET", "/readyz", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"detail\":\"not ready\""));
    assert_null(strstr(r.body, f.dir));
    assert_null(strstr(r.body, "store"));
    fix_resp_free(&r);
    fix_req(&f, "GET", "/readyz", "Authorization: Bearer wrong\r\n", &r);
    assert_int_equal(r.status, 503);
    assert_null(strstr(r.body, f.dir));
    fix_resp_free(&r);
    fix_req(&f, "GET", "/readyz", FIX_AUTH, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "the store is not usable"));
    assert_non_null(strstr(r.body, f.dir));
    fix_resp_free(&r);
    unlink(f.state);
    fix_req(&f, "GET", "/readyz", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ready\"}");
    fix_resp_free(&r);
    f.stopping = true;
    fix_req(&f, "GET", "/readyz", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"detail\":\"not ready\""));
    fix_resp_free(&r);
    fix_req(&f, "GET", "/readyz", FIX_AUTH, &r);
    assert_non_null(strstr(r.body, "shutting down"));
    fix_resp_free(&r);
    fix_stop(&f);
}

static void health_metrics_document(void **state)
{
    (void)state;
    struct fixture f = {0};
    assert_int_equal(fix_start(&f, "", ONE_ACCOUNT), 0);
    struct fix_resp r;
    fix_req(&f, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    fix_resp_free(&r);
    fix_req(&f, "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 401);
    fix_resp_free(&r);
    fix_req(&f, "GET", "/metrics", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_true(fix_has(&r, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "pop3bridge_api_sessions_open 0\n"));
    assert_non_null(strstr(r.body, "pop3bridge_delivery_queue{status=\"pending\"} 0\n"));
    assert_non_null(strstr(r.body, "pop3bridge_http_requests_total{code=\"401\"}"));
    fix_resp_free(&r);
    /* the binary runs from build/tests: the document is the tree's */
    fix_req(&f, "GET", "/openapi.yaml", NULL, &r);
    if (r.status == 200) {
        assert_non_null(strstr(r.body, "openapi: 3.1.0"));
        assert_true(fix_has(&r, "Cache-Control: no-cache"));
    } else {
        assert_int_equal(r.status, 404); /* a variant's build directory */
    }
    fix_resp_free(&r);
    fix_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_mapping),
        cmocka_unit_test(routes),
        cmocka_unit_test(route_table_shape),
        cmocka_unit_test(readyz),
        cmocka_unit_test(health_metrics_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
