/* Unit tests: the chunked JSON writer (include/jsonw.h) against
 * cJSON_PrintUnformatted on the same trees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonw.h"

struct out {
    char *p;
    size_t len, cap;
    size_t calls, max_piece;
    size_t fail_after; /* fail the call after this many bytes (0: never) */
};

static int sink(void *ctx, const void *data, size_t len, struct err *e)
{
    struct out *o = ctx;
    assert_true(len > 0);
    if (o->fail_after && o->len + len > o->fail_after)
        return err_set(e, ERR_CONN, "the sink stopped");
    if (o->len + len + 1 > o->cap) {
        o->cap = (o->len + len + 1) * 2;
        o->p = realloc(o->p, o->cap);
        assert_non_null(o->p);
    }
    memcpy(o->p + o->len, data, len);
    o->len += len;
    o->p[o->len] = '\0';
    o->calls++;
    if (len > o->max_piece)
        o->max_piece = len;
    return 0;
}

/* The writer's bytes equal cJSON's for the tree; returns the piece count. */
static size_t same_as_cjson(const cJSON *tree)
{
    char *want = cJSON_PrintUnformatted(tree);
    assert_non_null(want);
    struct out o = {0};
    struct err e;
    uint64_t written = 0;
    assert_int_equal(jsonw_write(tree, sink, &o, &written, &e), 0);
    assert_int_equal(written, strlen(want));
    assert_int_equal(o.len, strlen(want));
    assert_memory_equal(o.p, want, o.len);
    assert_true(o.max_piece <= JSONW_CHUNK);
    size_t calls = o.calls;
    free(o.p);
    cJSON_free(want);
    return calls;
}

static void scalars_and_escapes(void **state)
{
    (void)state;
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNullToObject(t, "null");
    cJSON_AddTrueToObject(t, "t");
    cJSON_AddFalseToObject(t, "f");
    cJSON_AddStringToObject(t, "empty", "");
    cJSON_AddStringToObject(t, "quotes", "say \"hi\" \\ back\\slash / slash");
    cJSON_AddStringToObject(t, "controls", "\b\f\n\r\t\x01\x1f\x7f end");
    cJSON_AddStringToObject(t, "utf8", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbd");
    cJSON_AddStringToObject(t, "ke\"y\n", "escaped names too");
    cJSON *raw = cJSON_CreateRaw("{\"pre\":[1,2]}");
    cJSON_AddItemToObject(t, "raw", raw);
    cJSON *null_str = cJSON_CreateString("x");
    free(null_str->valuestring);
    null_str->valuestring = NULL; /* cJSON prints "" */
    cJSON_AddItemToObject(t, "nullstr", null_str);
    same_as_cjson(t);
    cJSON_Delete(t);
}

static void numbers(void **state)
{
    (void)state;
    static const double v[] = {
        0, 1, -1, 42, 2147483647.0, -2147483648.0, 2147483648.0, 4294967296.0,
        25 * 1000 * 1000, 1e15, 1e16, 123456789012345678.0, 9007199254740993.0,
        0.5, 0.1, 1.0 / 3, -2.5e-7, 1e-300, 1.7976931348623157e308, 3.14159265358979,
        NAN, INFINITY, -INFINITY,
    };
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    same_as_cjson(a);
    cJSON_Delete(a);
}

static void nesting_and_empties(void **state)
{
    (void)state;
    cJSON *t = cJSON_CreateArray();
    cJSON_AddItemToArray(t, cJSON_CreateArray());
    cJSON_AddItemToArray(t, cJSON_CreateObject());
    cJSON *deep = t;
    for (int i = 0; i < 50; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(deep, o);
        cJSON *inner = cJSON_CreateArray();
        cJSON_AddItemToObject(o, "k", inner);
        cJSON_AddItemToArray(inner, cJSON_CreateNumber(i));
        deep = inner;
    }
    same_as_cjson(t);
    cJSON_Delete(t);
    cJSON *empty_obj = cJSON_CreateObject();
    same_as_cjson(empty_obj);
    cJSON_Delete(empty_obj);
    cJSON *s = cJSON_CreateString("alone");
    same_as_cjson(s);
    cJSON_Delete(s);
}

/* Large strings cross piece boundaries, escapes included, and arrive in
 * pieces of at most JSONW_CHUNK. */
static void large_strings_in_pieces(void **state)
{
    (void)state;
    size_t n = 3 * JSONW_CHUNK + 777;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = "ab\"c\n\xc3\xa9\\\x02z"[i % 10];
    big[n] = '\0';
    /* a UTF-8 sequence cut by the pattern is still copied byte for byte */
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "text", big);
    cJSON_AddStringToObject(t, "html", big + 5);
    size_t calls = same_as_cjson(t);
    assert_true(calls >= 4);
    cJSON_Delete(t);
    free(big);
}

static void errors(void **state)
{
    (void)state;
    struct err e;
    struct out o = {0};
    assert_int_equal(jsonw_write(NULL, sink, &o, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);

    cJSON *raw = cJSON_CreateRaw("1");
    free(raw->valuestring);
    raw->valuestring = NULL;
    assert_int_equal(jsonw_write(raw, sink, &o, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    cJSON_Delete(raw);

    /* the sink's error stops the writer and is what the caller gets */
    char *big = malloc(4 * JSONW_CHUNK);
    memset(big, 'x', 4 * JSONW_CHUNK - 1);
    big[4 * JSONW_CHUNK - 1] = '\0';
    cJSON *s = cJSON_CreateString(big);
    o.fail_after = JSONW_CHUNK + 1;
    uint64_t written = 99;
    assert_int_equal(jsonw_write(s, sink, &o, &written, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_string_equal(e.msg, "the sink stopped");
    assert_int_equal(written, 0);
    assert_int_equal(o.len, JSONW_CHUNK);
    cJSON_Delete(s);
    free(big);
    free(o.p);

    /* nesting over the limit */
    cJSON *root = cJSON_CreateArray(), *cur = root;
    for (int i = 0; i < JSONW_DEPTH_MAX + 1; i++) {
        cJSON *a = cJSON_CreateArray();
        cJSON_AddItemToArray(cur, a);
        cur = a;
    }
    struct out o2 = {0};
    assert_int_equal(jsonw_write(root, sink, &o2, NULL, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    free(o2.p);
    cJSON_Delete(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(scalars_and_escapes),
        cmocka_unit_test(numbers),
        cmocka_unit_test(nesting_and_empties),
        cmocka_unit_test(large_strings_in_pieces),
        cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
