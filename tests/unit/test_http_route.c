/* Unit tests: the route table with named parameters (include/http_route.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "http_route.h"
#include "http_target.h"

static void h_a(struct http_req *r) { (void)r; }
static void h_b(struct http_req *r) { (void)r; }

static const struct http_route table[] = {
    {"GET", "/things", h_a, "limit,cursor", 0},
    {"GET", "/things/{thing}", h_a, NULL, 0},
    {"DELETE", "/things/{thing}", h_b, NULL, 0},
    {"GET", "/things/{thing}/parts/{part}", h_a, NULL, 0},
    {"POST", "/things/{thing}/poke", h_b, NULL, 0},
    {"GET", "/health", h_a, NULL, HTTP_ROUTE_PUBLIC},
    {"GET", "/", h_a, NULL, HTTP_ROUTE_PUBLIC},
};
#define N (sizeof table / sizeof table[0])

/* Route a raw path: the index or an HTTP_ROUTE_* code; -400 if malformed. */
static int find(const char *method, const char *raw, struct http_params *p, char *allow,
                bool *pub)
{
    struct http_target t;
    const char *why;
    int k = -400;
    if (http_target_parse(raw, &t, &why) == HTTP_TARGET_OK)
        k = http_route_find(table, N, method, t.seg, t.nseg, p, allow, HTTP_ALLOW_MAX, pub);
    /* the bound values point into t.buf: copy what the tests look at */
    static char keep[2][64];
    for (size_t i = 0; k >= 0 && i < p->n && i < 2; i++) {
        snprintf(keep[i], sizeof keep[i], "%s", p->value[i]);
        p->value[i] = keep[i];
    }
    http_target_free(&t);
    return k;
}

static void match_and_bind(void **state)
{
    (void)state;
    struct http_params p;
    char allow[HTTP_ALLOW_MAX];
    bool pub = true;
    assert_int_equal(find("GET", "/things", &p, allow, &pub), 0);
    assert_false(pub);
    assert_int_equal(p.n, 0);
    assert_int_equal(find("GET", "/things/a%2Fb/parts/7", &p, allow, &pub), 3);
    assert_string_equal(http_params_get(&p, "thing"), "a/b");
    assert_string_equal(http_params_get(&p, "part"), "7");
    assert_null(http_params_get(&p, "thin"));
    assert_null(http_params_get(&p, "things"));
    assert_int_equal(find("HEAD", "/things/x", &p, allow, &pub), 1); /* HEAD as GET */
    assert_int_equal(find("DELETE", "/things/x", &p, allow, &pub), 2);
    assert_string_equal(http_params_get(&p, "thing"), "x");
    assert_int_equal(find("GET", "/health", &p, allow, &pub), 5);
    assert_true(pub);
    assert_int_equal(find("GET", "/", &p, allow, &pub), 6);
}

static void not_found_and_not_allowed(void **state)
{
    (void)state;
    struct http_params p;
    char allow[HTTP_ALLOW_MAX];
    bool pub = true;
    assert_int_equal(find("PUT", "/things", &p, allow, &pub), HTTP_ROUTE_NO_METHOD);
    assert_string_equal(allow, "GET, HEAD");
    assert_false(pub);
    assert_int_equal(find("PATCH", "/things/x", &p, allow, &pub), HTTP_ROUTE_NO_METHOD);
    assert_string_equal(allow, "GET, HEAD, DELETE");
    assert_int_equal(find("GET", "/things/x/poke", &p, allow, &pub), HTTP_ROUTE_NO_METHOD);
    assert_string_equal(allow, "POST");
    assert_int_equal(find("POST", "/health", &p, allow, &pub), HTTP_ROUTE_NO_METHOD);
    assert_true(pub); /* every route of that path is public */
    assert_int_equal(find("GET", "/nothing", &p, allow, &pub), HTTP_ROUTE_NOT_FOUND);
    assert_false(pub);
    assert_int_equal(find("GET", "/things/", &p, allow, &pub), HTTP_ROUTE_NOT_FOUND);
    assert_int_equal(find("GET", "/things//parts/1", &p, allow, &pub), HTTP_ROUTE_NOT_FOUND);
    assert_int_equal(find("GET", "/things/x/parts", &p, allow, &pub), HTTP_ROUTE_NOT_FOUND);
    assert_int_equal(find("GET", "/things/x/parts/1/more", &p, allow, &pub),
                     HTTP_ROUTE_NOT_FOUND);
    assert_int_equal(find("GET", "/things/..", &p, allow, &pub), -400);
}

static void query_params(void **state)
{
    (void)state;
    assert_true(http_route_query_ok(&table[0], "limit"));
    assert_true(http_route_query_ok(&table[0], "cursor"));
    assert_false(http_route_query_ok(&table[0], "limi"));
    assert_false(http_route_query_ok(&table[0], "limit,cursor"));
    assert_false(http_route_query_ok(&table[1], "limit"));
}

static void table_check(void **state)
{
    (void)state;
    size_t bad = 99;
    assert_int_equal(http_route_check(table, N, &bad), 0);
    static const char *const wrong[] = {
        "things",              /* no leading slash */
        "/a//b",               /* empty part */
        "/a/",                 /* trailing slash */
        "/a/{x",               /* not closed */
        "/a/{}",               /* no name */
        "/a/{X}",              /* not [a-z_] */
        "/a/{x}/{x}",          /* repeated */
        "/a/b{x}",             /* a brace in a literal part */
        "/{a}/{b}/{c}/{d}/{e}", /* more than HTTP_PARAMS_MAX */
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        struct http_route t[2] = {table[0], {"GET", wrong[i], h_a, NULL, 0}};
        bad = 99;
        if (http_route_check(t, 2, &bad) != -1 || bad != 1)
            fail_msg("pattern \"%s\" passed the check", wrong[i]);
    }
    struct http_route dup[2] = {table[1], table[1]};
    assert_int_equal(http_route_check(dup, 2, &bad), -1);
    assert_int_equal(bad, 1);
    struct http_route nofn[1] = {{"GET", "/x", NULL, NULL, 0}};
    assert_int_equal(http_route_check(nofn, 1, &bad), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(match_and_bind),
        cmocka_unit_test(not_found_and_not_allowed),
        cmocka_unit_test(query_params),
        cmocka_unit_test(table_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
