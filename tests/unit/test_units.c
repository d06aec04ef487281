/* Unit tests: size and duration parsing (include/units.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "units.h"

static void sizes_valid(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(units_parse_size("0", &v, NULL, 0), 0);
    assert_int_equal(v, 0);
    assert_int_equal(units_parse_size("1048576", &v, NULL, 0), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(units_parse_size("25MiB", &v, NULL, 0), 0);
    assert_int_equal(v, 25u << 20);
    assert_int_equal(units_parse_size("256KiB", &v, NULL, 0), 0);
    assert_int_equal(v, 256u << 10);
    assert_int_equal(units_parse_size("2GB", &v, NULL, 0), 0);
    assert_int_equal(v, 2000000000u);
    assert_int_equal(units_parse_size("100M", &v, NULL, 0), 0);
    assert_int_equal(v, 100u << 20);
}

static void sizes_invalid(void **state)
{
    (void)state;
    uint64_t v = 7;
    char why[128];
    const char *bad[] = {"", "MiB", "-1", " 5", "5 MiB", "1.5MiB", "5XB", "5mib",
                         "99999999999999999999", "18446744073709551615KiB", NULL};
    for (int i = 0; bad[i]; i++) {
        why[0] = '\0';
        assert_int_equal(units_parse_size(bad[i], &v, why, sizeof why), -1);
        assert_true(strlen(why) > 0);
    }
    assert_int_equal(units_parse_size(NULL, &v, why, sizeof why), -1);
    assert_int_equal(v, 7); /* untouched on error */
}

static void durations(void **state)
{
    (void)state;
    int64_t ms;
    char why[128];
    assert_int_equal(units_parse_duration_ms("30s", &ms, NULL, 0), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(units_parse_duration_ms("5m", &ms, NULL, 0), 0);
    assert_int_equal(ms, 300000);
    assert_int_equal(units_parse_duration_ms("7d", &ms, NULL, 0), 0);
    assert_int_equal(ms, 7LL * 86400000);
    assert_int_equal(units_parse_duration_ms("250ms", &ms, NULL, 0), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(units_parse_duration_ms("30", &ms, why, sizeof why), -1);
    assert_non_null(strstr(why, "unit"));
    assert_int_equal(units_parse_duration_ms("3w", &ms, why, sizeof why), -1);
    assert_int_equal(units_parse_duration_ms("s", &ms, why, sizeof why), -1);
    assert_int_equal(units_parse_duration_ms("-5s", &ms, why, sizeof why), -1);
    assert_int_equal(units_parse_duration_ms("99999999999999999d", &ms, why, sizeof why), -1);
}

static void formatting(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(units_format_size(25u << 20, buf, sizeof buf), "25MiB");
    assert_string_equal(units_format_size(1000, buf, sizeof buf), "1000B");
    assert_string_equal(units_format_duration(300000, buf, sizeof buf), "5m");
    assert_string_equal(units_format_duration(1500, buf, sizeof buf), "1500ms");
    assert_string_equal(units_format_duration(0, buf, sizeof buf), "0ms");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sizes_valid),
        cmocka_unit_test(sizes_invalid),
        cmocka_unit_test(durations),
        cmocka_unit_test(formatting),
    };
    return cmocka_run_group_tests_name("units", tests, NULL, NULL);
}
