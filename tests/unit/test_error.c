/* Unit tests: typed errors (include/error.h): kinds and RFC 2449 / RFC 3206
 * codes, sanitised server text, prefixes, one-line formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "error.h"

static void set_and_prefix(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    assert_int_equal(e.kind, ERR_NONE);
    err_set_server(&e, "[IN-USE] locked", 15);
    assert_int_equal(err_set(&e, ERR_CONN, "connect to %s:%d", "h", 995), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_string_equal(e.msg, "connect to h:995");
    /* err_set starts afresh: no server text or code left over */
    assert_int_equal(e.code, ERR_CODE_NONE);
    assert_string_equal(e.server, "");
    err_prefix(&e, "account %s", "a1");
    assert_string_equal(e.msg, "account a1: connect to h:995");
    /* a prefix that overflows keeps the cut visible */
    char longp[ERR_MSG_MAX];
    memset(longp, 'p', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    err_prefix(&e, "%s", longp);
    assert_int_equal(strlen(e.msg), ERR_MSG_MAX - 1);
    assert_string_equal(e.msg + ERR_MSG_MAX - 4, "...");
    /* NULL is tolerated */
    assert_int_equal(err_set(NULL, ERR_USAGE, "x"), -1);
    err_prefix(NULL, "x");
    err_clear(NULL);
}

static void server_codes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        enum err_code code;
        const char *code_text;
    } v[] = {
        {"[IN-USE] Mailbox locked", ERR_CODE_IN_USE, "IN-USE"},
        {"  [LOGIN-DELAY] wait", ERR_CODE_LOGIN_DELAY, "LOGIN-DELAY"},
        {"[SYS/TEMP/DISK] full", ERR_CODE_SYS_TEMP, "SYS/TEMP/DISK"}, /* hierarchical */
        {"[SYS/PERM] gone", ERR_CODE_SYS_PERM, "SYS/PERM"},
        {"[AUTH] wrong password", ERR_CODE_AUTH, "AUTH"},
        {"[X-VENDOR] hm", ERR_CODE_OTHER, "X-VENDOR"},
        {"[AUTHX] not AUTH", ERR_CODE_OTHER, "AUTHX"},
        {"[] empty", ERR_CODE_NONE, ""},
        {"[unterminated", ERR_CODE_NONE, ""},
        {"no code", ERR_CODE_NONE, ""},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        struct err e;
        err_set(&e, ERR_SERVER, "RETR 1");
        err_set_server(&e, v[i].text, strlen(v[i].text));
        assert_int_equal(e.code, v[i].code);
        assert_string_equal(e.code_text, v[i].code_text);
        assert_string_equal(e.server, v[i].text);
    }
    assert_string_equal(err_code_name(ERR_CODE_SYS_TEMP), "SYS/TEMP");
    assert_string_equal(err_code_name(ERR_CODE_NO_GRANT), "NO-GRANT");
    assert_string_equal(err_code_name(ERR_CODE_NONE), "");
    assert_string_equal(err_kind_name(ERR_TLS), "TLS");
    assert_string_equal(err_kind_name(ERR_AUTH), "authentication");
    assert_string_equal(err_kind_name((enum err_kind)99), "unknown");
}

static void temporary(void **state)
{
    (void)state;
    struct err e;
    err_set(&e, ERR_TIMEOUT, "t");
    assert_true(err_is_temporary(&e));
    err_set(&e, ERR_CONN, "c");
    assert_true(err_is_temporary(&e));
    err_set(&e, ERR_AUTH, "a");
    assert_false(err_is_temporary(&e));
    err_set_server(&e, "[LOGIN-DELAY] later", 19);
    assert_true(err_is_temporary(&e));
    err_set(&e, ERR_SERVER, "s");
    err_set_server(&e, "[SYS/PERM] no", 13);
    assert_false(err_is_temporary(&e));
    err_set_server(&e, "[SYS/TEMP] soon", 15);
    assert_true(err_is_temporary(&e));
    err_set(&e, ERR_PROTO, "p");
    assert_false(err_is_temporary(&e));
    assert_false(err_is_temporary(NULL));
}

static void sanitize_and_format(void **state)
{
    (void)state;
    char out[16];
    err_sanitize(out, sizeof out, "a\r\nb\x7f\x1b" "c", 7);
    assert_string_equal(out, "a??b??c");
    err_sanitize(out, sizeof out, "caf\xc3\xa9", 5); /* UTF-8 passes */
    assert_string_equal(out, "caf\xc3\xa9");
    err_sanitize(out, sizeof out, "0123456789abcdefghij", 20);
    assert_string_equal(out, "0123456789ab...");
    err_sanitize(out, 0, "x", 1); /* no room: nothing written, no crash */

    struct err e;
    char line[128];
    err_set(&e, ERR_TLS, "certificate of %s not trusted", "h");
    err_format(&e, line, sizeof line);
    assert_string_equal(line, "TLS: certificate of h not trusted");
    err_set(&e, ERR_SERVER, "DELE 3");
    err_set_server(&e, "no such\tmessage", 15);
    err_format(&e, line, sizeof line);
    assert_string_equal(line, "Server: DELE 3: server said \"no such?message\"");
    char tiny[12];
    err_format(&e, tiny, sizeof tiny);
    assert_string_equal(tiny, "Server: ...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(set_and_prefix),
        cmocka_unit_test(server_codes),
        cmocka_unit_test(temporary),
        cmocka_unit_test(sanitize_and_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
