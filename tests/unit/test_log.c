/* Unit tests: the log line in its text and json forms (include/log.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "log.h"

/* Run one log call with stderr sent to a file; its output, NUL-terminated. */
static char captured[16384];
#define CAPTURE(call)                                                                           \
    do {                                                                                        \
        char tmpl[] = "/tmp/test_log.XXXXXX";                                                   \
        int fd = mkstemp(tmpl);                                                                 \
        assert_true(fd >= 0);                                                                   \
        unlink(tmpl);                                                                           \
        int saved = dup(STDERR_FILENO);                                                         \
        dup2(fd, STDERR_FILENO);                                                                \
        call;                                                                                   \
        dup2(saved, STDERR_FILENO);                                                             \
        close(saved);                                                                           \
        ssize_t n = pread(fd, captured, sizeof captured - 1, 0);                                \
        close(fd);                                                                              \
        captured[n > 0 ? n : 0] = '\0';                                                         \
    } while (0)

static int setup(void **state)
{
    (void)state;
    log_set_level(LOG_DEBUG);
    log_set_format(LOG_FORMAT_TEXT);
    return 0;
}

static void text_form(void **state)
{
    (void)state;
    CAPTURE(log_info("poll_done", "account=%s new=%d error=%s", "support", 3, log_q("a \"b\"")));
    const char *p = strstr(captured, " level=info event=poll_done account=support new=3 "
                                     "error=\"a \\\"b\\\"\"\n");
    assert_non_null(p);
    assert_memory_equal(captured, "ts=", 3);
    assert_int_equal(captured[strlen(captured) - 1], '\n');
    /* below the level: nothing at all */
    log_set_level(LOG_WARN);
    CAPTURE(log_info("quiet", "x=1"));
    assert_string_equal(captured, "");
}

static cJSON *one_json(void)
{
    size_t n = strlen(captured);
    assert_true(n > 0 && captured[n - 1] == '\n');
    assert_null(memchr(captured, '\n', n - 1)); /* one line */
    cJSON *j = cJSON_Parse(captured);
    assert_non_null(j);
    return j;
}

static const char *str(cJSON *j, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    assert_non_null(v);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static void json_form(void **state)
{
    (void)state;
    log_set_format(LOG_FORMAT_JSON);
    CAPTURE(log_warn("poll_failed", "account=%s state=%s retry_in_s=%d error=%s", "acct", "backoff",
                     30, log_q("connect: \\ refused \"x\"\x01")));
    cJSON *j = one_json();
    assert_string_equal(str(j, "level"), "warn");
    assert_string_equal(str(j, "event"), "poll_failed");
    assert_int_equal(strlen(str(j, "ts")), 24);
    assert_string_equal(str(j, "account"), "acct");
    assert_string_equal(str(j, "state"), "backoff");
    assert_string_equal(str(j, "retry_in_s"), "30"); /* every value a string */
    assert_string_equal(str(j, "error"), "connect: \\ refused \"x\"?");
    assert_int_equal(cJSON_GetArraySize(j), 7);
    cJSON_Delete(j);
}

static void json_odd_values(void **state)
{
    (void)state;
    log_set_format(LOG_FORMAT_JSON);
    /* a bare word joins the value before it; bytes that are not UTF-8 become U+FFFD;
     * valid UTF-8 passes through; an empty quoted value stays empty */
    CAPTURE(log_info("odd", "note=two words name=%s bad=%s empty=\"\"", "\xc3\xa9t\xc3\xa9",
                     "a\xff\xc3"));
    cJSON *j = one_json();
    assert_string_equal(str(j, "note"), "two words");
    assert_string_equal(str(j, "name"), "\xc3\xa9t\xc3\xa9");
    assert_string_equal(str(j, "bad"), "a\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(str(j, "empty"), "");
    cJSON_Delete(j);
    /* no fields at all */
    CAPTURE(log_info("bare", " "));
    j = one_json();
    assert_int_equal(cJSON_GetArraySize(j), 3);
    cJSON_Delete(j);
}

static void json_long_line_stays_json(void **state)
{
    (void)state;
    log_set_format(LOG_FORMAT_JSON);
    char big[LOG_Q_MAX * 2];
    memset(big, '"', sizeof big - 1); /* each escaped twice over */
    big[sizeof big - 1] = '\0';
    char *many = malloc(3 * LOG_LINE_MAX);
    assert_non_null(many);
    memset(many, 'x', 3 * LOG_LINE_MAX - 1);
    many[3 * LOG_LINE_MAX - 1] = '\0';
    CAPTURE(log_info("long", "a=%s b=%s e=%s", log_q(big), log_q(big), many));
    cJSON *j = one_json();
    assert_int_equal(strlen(str(j, "a")), 256); /* log_q cut it (LOG_Q_MAX) */
    assert_memory_equal(str(j, "a") + 253, "...", 3);
    assert_true(strlen(str(j, "e")) > 100 && strlen(str(j, "e")) < LOG_LINE_MAX);
    cJSON_Delete(j);
    /* the text form of the same is cut at LOG_LINE_MAX and ends in "..." */
    log_set_format(LOG_FORMAT_TEXT);
    CAPTURE(log_info("long", "e=%s", many));
    assert_int_equal(strlen(captured), LOG_LINE_MAX - 1);
    assert_memory_equal(captured + LOG_LINE_MAX - 5, "...\n", 4);
    free(many);
}

static void journal_falls_back_to_text(void **state)
{
    (void)state;
    /* no journald here: the line still reaches stderr, in the text form.  (With a
     * journal socket the fields are checked by tests/integration/test_service.py.) */
    if (access("/run/systemd/journal/socket", F_OK) == 0)
        skip();
    log_set_format(LOG_FORMAT_JOURNAL);
    CAPTURE(log_error("store_failed", "op=%s error=%s", "x", log_q("y z")));
    assert_non_null(strstr(captured, " level=error event=store_failed op=x error=\"y z\"\n"));
}

/* A limited line: the first call logs, the next within the interval do
 * not (counted), the first after it logs again with that count. */
static void limit_once_per_interval(void **state)
{
    (void)state;
    static struct log_limit l;
    uint64_t n = 99;
    assert_true(log_limit_due(&l, 1000, 60000, &n));
    assert_int_equal(n, 0);
    assert_false(log_limit_due(&l, 1001, 60000, &n));
    assert_false(log_limit_due(&l, 60999, 60000, &n));
    assert_true(log_limit_due(&l, 61000, 60000, &n));
    assert_int_equal(n, 2);
    assert_false(log_limit_due(&l, 61000, 60000, NULL));
    assert_true(log_limit_due(&l, 200000, 60000, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(text_form, setup),
        cmocka_unit_test_setup(json_form, setup),
        cmocka_unit_test_setup(json_odd_values, setup),
        cmocka_unit_test_setup(json_long_line_stays_json, setup),
        cmocka_unit_test_setup(journal_falls_back_to_text, setup),
        cmocka_unit_test(limit_once_per_interval),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
