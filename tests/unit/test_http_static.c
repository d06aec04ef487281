/* Unit tests: static files (include/http_static.h): the type whitelist and
 * the share directory.  Serving them is tested in test_http.c and
 * tests/integration/test_api.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_static.h"

static void static_types(void **state)
{
    (void)state;
    assert_string_equal(http_static_type("index.html"), "text/html; charset=utf-8");
    assert_string_equal(http_static_type("assets/app.js"), "text/javascript; charset=utf-8");
    assert_string_equal(http_static_type("a.woff2"), "font/woff2");
    assert_string_equal(http_static_type("app.webmanifest"), "application/manifest+json");
    assert_null(http_static_type("notes.php"));
    assert_null(http_static_type("Makefile"));
    assert_null(http_static_type(".html"));
    assert_null(http_static_type("assets/.html"));
    assert_null(http_static_type("x.HTML"));
    assert_null(http_static_type("x.html.bak"));
    assert_null(http_static_type("x."));
}

/* Run from the source tree (build/tests/test_http_static) the share directory
 * is the tree's top, two levels up; from a variant's build directory
 * (build/asan/tests/...) none of the candidates holds openapi.yaml. */
static void share_dir(void **state)
{
    (void)state;
    char exe[PATH_MAX], up[PATH_MAX + 32], want[PATH_MAX], dir[HTTP_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    assert_true(n > 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(up, sizeof up, "%s/../../openapi.yaml", exe);
    bool in_tree = access(up, R_OK) == 0;
    snprintf(up, sizeof up, "%s/../..", exe);
    int rc = http_static_share_dir(dir, sizeof dir);
    if (!in_tree) {
        assert_int_equal(rc, -1);
        return;
    }
    assert_int_equal(rc, 0);
    assert_non_null(realpath(up, want));
    assert_string_equal(dir, want);
    char tiny[4];
    assert_int_equal(http_static_share_dir(tiny, sizeof tiny), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(static_types),
        cmocka_unit_test(share_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
