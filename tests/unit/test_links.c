/* Unit tests: signed links (include/links.h).  The vector was computed
 * independently (Python hmac over "pop3bridge-link-v1\n<path>\n<exp>"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "links.h"

#define PATH "/api/v1/messages/m_17/raw"
#define EXP 1800000000
#define SIG "212a36ac9f4a11c266d53fa15220bd2b2d469cd91407a4befd6aa2f5d7fbb5f7"

static void key_of(unsigned char *k)
{
    for (int i = 0; i < LINKS_KEY_LEN; i++)
        k[i] = (unsigned char)i;
}

static void query_vector(void **state)
{
    (void)state;
    unsigned char k[LINKS_KEY_LEN];
    char q[LINKS_QUERY_MAX];
    key_of(k);
    assert_int_equal(links_query(k, sizeof k, PATH, EXP, q, sizeof q), 0);
    assert_string_equal(q, "?exp=1800000000&sig=" SIG);
    /* too small a buffer: refused, not cut */
    char small[40];
    assert_int_equal(links_query(k, sizeof k, PATH, EXP, small, sizeof small), -1);
    assert_string_equal(small, "");
    assert_int_equal(links_query(NULL, 0, PATH, EXP, q, sizeof q), -1);
    assert_int_equal(links_query(k, sizeof k, PATH, -1, q, sizeof q), -1);
    char longpath[LINKS_PATH_MAX + 2];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    assert_int_equal(links_query(k, sizeof k, longpath, EXP, q, sizeof q), -1);
}

static void verify_verdicts(void **state)
{
    (void)state;
    unsigned char k[LINKS_KEY_LEN], other[LINKS_KEY_LEN];
    key_of(k);
    memset(other, 7, sizeof other);
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000000", SIG, EXP), LINKS_OK);
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000000", SIG, EXP - 100), LINKS_OK);
    /* upper-case hex is the same signature */
    char upper[] = SIG;
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000000", upper, EXP), LINKS_OK);
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000000", SIG, EXP + 1), LINKS_EXPIRED);
    /* altered: exp, path, signature, key (a rotation) */
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000001", SIG, EXP), LINKS_BAD_SIGNATURE);
    assert_int_equal(links_verify(k, sizeof k, "/api/v1/messages/m_18/raw", "1800000000", SIG, EXP),
                     LINKS_BAD_SIGNATURE);
    char flipped[] = SIG;
    flipped[10] = flipped[10] == '0' ? '1' : '0';
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000000", flipped, EXP),
                     LINKS_BAD_SIGNATURE);
    assert_int_equal(links_verify(other, sizeof other, PATH, "1800000000", SIG, EXP),
                     LINKS_BAD_SIGNATURE);
    /* an expired link that was altered says altered, not expired */
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000001", SIG, EXP + 10),
                     LINKS_BAD_SIGNATURE);
    /* malformed */
    const char *bad_exp[] = {NULL, "", "-1", "01800000000", "18e8", "99999999999999999999",
                             "1800000000 "};
    for (size_t i = 0; i < sizeof bad_exp / sizeof bad_exp[0]; i++)
        assert_int_equal(links_verify(k, sizeof k, PATH, bad_exp[i], SIG, EXP), LINKS_MALFORMED);
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000000", NULL, EXP), LINKS_MALFORMED);
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000000", "abc", EXP), LINKS_MALFORMED);
    char nothex[] = SIG;
    nothex[0] = 'g';
    assert_int_equal(links_verify(k, sizeof k, PATH, "1800000000", nothex, EXP), LINKS_MALFORMED);
    assert_non_null(strstr(links_verdict_text(LINKS_EXPIRED), "expired"));
    assert_non_null(strstr(links_verdict_text(LINKS_BAD_SIGNATURE), "rotated"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(query_vector),
        cmocka_unit_test(verify_verdicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
