/* Unit tests: the pure POP3 protocol parts (status lines, numbers, UIDLs,
 * CAPA, APOP timestamp, the streaming dot decoder). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pop3.h"

/* ---- status lines ---- */

static void status_lines(void **state)
{
    (void)state;
    const char *t;
    size_t tl;
    assert_int_equal(pop3_parse_status("+OK 2 320", 9, &t, &tl), POP3_ST_OK);
    assert_int_equal(tl, 5);
    assert_memory_equal(t, "2 320", 5);
    assert_int_equal(pop3_parse_status("+OK", 3, &t, &tl), POP3_ST_OK);
    assert_int_equal(tl, 0);
    assert_int_equal(pop3_parse_status("-ERR [IN-USE] locked", 20, &t, &tl), POP3_ST_ERR);
    assert_memory_equal(t, "[IN-USE] locked", 15);
    assert_int_equal(pop3_parse_status("+ abc=", 6, &t, &tl), POP3_ST_CONT);
    assert_memory_equal(t, "abc=", 4);
    assert_int_equal(pop3_parse_status("+", 1, &t, &tl), POP3_ST_CONT);
    assert_int_equal(tl, 0);
    assert_int_equal(pop3_parse_status("+OKAY", 5, &t, &tl), POP3_ST_BAD);
    assert_int_equal(pop3_parse_status("-ERROR", 6, &t, &tl), POP3_ST_BAD);
    assert_int_equal(pop3_parse_status("HELLO", 5, &t, &tl), POP3_ST_BAD);
    assert_int_equal(pop3_parse_status("", 0, &t, &tl), POP3_ST_BAD);
    assert_int_equal(pop3_parse_status("+ok", 3, &t, &tl), POP3_ST_BAD);
    assert_int_equal(pop3_parse_status("+x", 2, &t, &tl), POP3_ST_BAD);
}

static void numbers(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(pop3_parse_number("42", 2, 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(pop3_parse_number("18446744073709551615", 20, 0, UINT64_MAX, &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(pop3_parse_number("18446744073709551616", 20, 0, UINT64_MAX, &v), -1);
    assert_int_equal(pop3_parse_number("99999999999999999999", 20, 0, UINT64_MAX, &v), -1);
    assert_int_equal(pop3_parse_number("0", 1, 1, 10, &v), -1);
    assert_int_equal(pop3_parse_number("11", 2, 1, 10, &v), -1);
    assert_int_equal(pop3_parse_number("", 0, 0, 10, &v), -1);
    assert_int_equal(pop3_parse_number("-1", 2, 0, 10, &v), -1);
    assert_int_equal(pop3_parse_number("1a", 2, 0, 10, &v), -1);
    assert_int_equal(pop3_parse_number(" 1", 2, 0, 10, &v), -1);
}

static void uidls(void **state)
{
    (void)state;
    char s[80];
    assert_true(pop3_uidl_valid("000000016553f12a", 16));
    assert_true(pop3_uidl_valid("!", 1));
    assert_true(pop3_uidl_valid("~/%?", 4));
    assert_false(pop3_uidl_valid("", 0));
    assert_false(pop3_uidl_valid("a b", 3));
    assert_false(pop3_uidl_valid("a\x7f", 2));
    assert_false(pop3_uidl_valid("a\x80", 2));
    assert_false(pop3_uidl_valid("a\tb", 3));
    memset(s, 'x', sizeof s);
    assert_true(pop3_uidl_valid(s, 70));
    assert_false(pop3_uidl_valid(s, 71));
}

static void capa(void **state)
{
    (void)state;
    struct pop3_capa c;
    memset(&c, 0, sizeof c);
    c.login_delay = -1;
    c.expire = -1;
    const char *lines[] = {
        "TOP", "uidl", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
        "SASL PLAIN SCRAM-SHA-256 CRAM-MD5", "LOGIN-DELAY 900", "EXPIRE NEVER",
        "IMPLEMENTATION Dovecot\tready", "STLS", "UTF8 USER", "X-UNKNOWN 1 2 3", "",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        pop3_capa_parse_line(&c, lines[i], strlen(lines[i]));
    assert_true(c.top && c.uidl && c.user && c.resp_codes && c.auth_resp_code && c.pipelining);
    assert_true(c.stls && c.utf8);
    assert_string_equal(c.sasl, "PLAIN SCRAM-SHA-256 CRAM-MD5");
    assert_int_equal(c.login_delay, 900);
    assert_int_equal(c.expire, -2);
    assert_string_equal(c.implementation, "Dovecot?ready"); /* control chars masked */

    struct pop3_capa d;
    memset(&d, 0, sizeof d);
    d.login_delay = -1;
    d.expire = -1;
    pop3_capa_parse_line(&d, "EXPIRE 31 USER", 14);
    pop3_capa_parse_line(&d, "LOGIN-DELAY abc", 15);
    assert_int_equal(d.expire, 31);
    assert_int_equal(d.login_delay, -1);
    pop3_capa_parse_line(&d, "LOGIN-DELAY 99999999999999999999", 32);
    assert_int_equal(d.login_delay, -1);
    assert_false(d.pipelining);
}

static void apop_timestamp(void **state)
{
    (void)state;
    const char *g = "POP3 server ready <1896.697170952@dbc.mtview.ca.us>";
    const char *ts;
    size_t n;
    assert_int_equal(pop3_apop_timestamp(g, strlen(g), &ts, &n), 0);
    assert_int_equal(n, strlen("<1896.697170952@dbc.mtview.ca.us>"));
    assert_memory_equal(ts, "<1896.697170952@dbc.mtview.ca.us>", n);
    assert_int_equal(pop3_apop_timestamp("Dovecot ready.", 14, &ts, &n), -1);
    assert_int_equal(pop3_apop_timestamp("a <no-at> b", 11, &ts, &n), -1);
    assert_int_equal(pop3_apop_timestamp("a <x@y", 6, &ts, &n), -1);
    assert_int_equal(pop3_apop_timestamp("a <x @y>", 8, &ts, &n), -1);
}

/* ---- dot decoder ---- */

struct out {
    char *buf;
    size_t len, cap;
    int calls;
    int fail_after; /* fail on this call number, 0 = never */
};

static int out_cb(void *ctx, const char *b, size_t n, struct err *e)
{
    struct out *o = ctx;
    if (o->fail_after && ++o->calls >= o->fail_after)
        return err_set(e, ERR_INTERNAL, "sink failed");
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2 + 16;
        o->buf = realloc(o->buf, o->cap);
    }
    memcpy(o->buf + o->len, b, n);
    o->len += n;
    return 0;
}

/* Feed `in` in pieces split at `cut` (and then byte by byte if bytewise). */
static long decode(const char *in, size_t len, bool lf, size_t cut, bool bytewise, struct out *o,
                   struct pop3_dot *d)
{
    struct err e;
    pop3_dot_init(d, lf, 0, out_cb, o);
    size_t pos = 0;
    while (pos < len && !d->done) {
        size_t piece = bytewise ? 1 : (pos < cut ? cut - pos : len - pos);
        if (piece == 0)
            piece = len - pos;
        long used = pop3_dot_feed(d, in + pos, piece, &e);
        if (used < 0)
            return -1;
        pos += (size_t)used;
        if ((size_t)used < piece) /* stopped at the terminator */
            break;
    }
    return (long)pos;
}

static void dot_every_split(void **state)
{
    (void)state;
    /* stuffed lines, a lone "..", a line ".\r" lookalike, bare LF, CR inside */
    const char wire[] = "Subject: x\r\n\r\n..\r\n...and so on\r\n.foo\r\nFrom me\r\n"
                        "a\rb\r\nlast\r\n.\r\nNEXT";
    const char want_crlf[] = "Subject: x\r\n\r\n.\r\n..and so on\r\nfoo\r\nFrom me\r\n"
                             "a\rb\r\nlast\r\n";
    const char want_lf[] = "Subject: x\n\n.\n..and so on\nfoo\nFrom me\na\rb\nlast\n";
    size_t wl = strlen(wire);
    size_t body_end = wl - 4; /* "NEXT" must stay unread */
    for (int lf = 0; lf <= 1; lf++) {
        const char *want = lf ? want_lf : want_crlf;
        for (size_t cut = 0; cut <= wl; cut++) {
            struct out o = {0};
            struct pop3_dot d;
            long used = decode(wire, wl, lf, cut, false, &o, &d);
            assert_int_equal(used, (long)body_end);
            assert_true(d.done);
            assert_int_equal(o.len, strlen(want));
            assert_memory_equal(o.buf, want, o.len);
            assert_int_equal(d.octets, strlen(want));
            free(o.buf);
        }
        struct out o = {0};
        struct pop3_dot d;
        assert_int_equal(decode(wire, wl, lf, 0, true, &o, &d), (long)body_end);
        assert_int_equal(o.len, strlen(want));
        assert_memory_equal(o.buf, want, o.len);
        free(o.buf);
    }
}

static void dot_terminators(void **state)
{
    (void)state;
    struct out o = {0};
    struct pop3_dot d;
    /* empty body */
    assert_int_equal(decode(".\r\n", 3, false, 0, false, &o, &d), 3);
    assert_true(d.done);
    assert_int_equal(o.len, 0);
    /* bare-LF terminator tolerated */
    assert_int_equal(decode("a\n.\nrest", 8, false, 0, false, &o, &d), 4);
    assert_true(d.done);
    assert_memory_equal(o.buf, "a\n", 2);
    free(o.buf);
    /* no terminator: not done, everything consumed */
    struct out o2 = {0};
    assert_int_equal(decode("abc\r\n.x\r\n", 9, false, 0, false, &o2, &d), 9);
    assert_false(d.done);
    /* a line that is just "." then "\r" then other stuff */
    struct out o3 = {0};
    assert_int_equal(decode(".\rX\r\n.\r\n", 8, false, 0, false, &o3, &d), 8);
    assert_true(d.done);
    assert_int_equal(o3.len, 4);
    assert_memory_equal(o3.buf, "\rX\r\n", 4);
    free(o2.buf);
    free(o3.buf);
}

static void dot_limit_and_sink_error(void **state)
{
    (void)state;
    struct err e;
    struct out o = {0};
    struct pop3_dot d;
    pop3_dot_init(&d, false, 10, out_cb, &o);
    long r = pop3_dot_feed(&d, "0123456789\r\nmore\r\n.\r\n", 21, &e);
    assert_int_equal(r, -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_non_null(strstr(e.msg, "10 octets"));
    free(o.buf);

    /* exactly at the limit passes */
    struct out o2 = {0};
    pop3_dot_init(&d, true, 4, out_cb, &o2);
    assert_int_equal(pop3_dot_feed(&d, "abc\r\n.\r\n", 8, &e), 8);
    assert_true(d.done);
    free(o2.buf);

    /* a failing sink stops the decoder with its error */
    struct out o3 = {.fail_after = 1};
    pop3_dot_init(&d, false, 0, out_cb, &o3);
    assert_int_equal(pop3_dot_feed(&d, "abc\r\n.\r\n", 8, &e), -1);
    assert_string_equal(e.msg, "sink failed");
    free(o3.buf);
}

static void dot_large_body(void **state)
{
    (void)state;
    /* 1 MiB of lines, many starting with '.', through the 64 KiB buffer */
    size_t lines = 20000;
    size_t cap = lines * 60 + 16;
    char *wire = malloc(cap), *want = malloc(cap);
    size_t wl = 0, ol = 0;
    for (size_t i = 0; i < lines; i++) {
        int stuffed = i % 3 == 0;
        int n = snprintf(wire + wl, cap - wl, "%sline %zu of the body, some text\r\n",
                         stuffed ? ".." : "", i);
        wl += (size_t)n;
        n = snprintf(want + ol, cap - ol, "%sline %zu of the body, some text\n",
                     stuffed ? "." : "", i);
        ol += (size_t)n;
    }
    memcpy(wire + wl, ".\r\n", 3);
    wl += 3;
    for (size_t cut = 1; cut < 200000; cut = cut * 3 + 7) {
        struct out o = {0};
        struct pop3_dot d;
        struct err e;
        pop3_dot_init(&d, true, 0, out_cb, &o);
        size_t pos = 0;
        while (!d.done) {
            size_t piece = wl - pos < cut ? wl - pos : cut;
            long used = pop3_dot_feed(&d, wire + pos, piece, &e);
            assert_true(used >= 0);
            pos += (size_t)used;
        }
        assert_int_equal(pos, wl);
        assert_int_equal(o.len, ol);
        assert_memory_equal(o.buf, want, ol);
        free(o.buf);
    }
    free(wire);
    free(want);
}

static void mech_lists(void **state)
{
    (void)state;
    enum pop3_mech m[POP3_MECHS_MAX];
    size_t n;
    struct err e;
    assert_int_equal(pop3_mech_list_parse("scram-sha-256,CRAM-MD5,apop,user", m, &n, &e), 0);
    assert_int_equal(n, 4);
    assert_int_equal(m[0], POP3_MECH_SCRAM_SHA_256);
    assert_int_equal(m[1], POP3_MECH_CRAM_MD5);
    assert_int_equal(m[3], POP3_MECH_USER);
    assert_int_equal(pop3_mech_list_parse("plain,kerberos", m, &n, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_non_null(strstr(e.msg, "kerberos"));
    assert_int_equal(pop3_mech_list_parse("plain,,login", m, &n, &e), -1);
    assert_int_equal(pop3_mech_list_parse("", m, &n, &e), -1);
    assert_string_equal(pop3_mech_name(POP3_MECH_SCRAM_SHA_1), "scram-sha-1");
    assert_int_equal(pop3_mech_parse("xoauth2"), POP3_MECH_XOAUTH2);
}

static void errors(void **state)
{
    (void)state;
    struct err e;
    err_set(&e, ERR_SERVER, "PASS failed");
    err_set_server(&e, "[SYS/TEMP/DISK] try later\x01", 26);
    assert_int_equal(e.code, ERR_CODE_SYS_TEMP);
    assert_string_equal(e.code_text, "SYS/TEMP/DISK");
    assert_string_equal(e.server, "[SYS/TEMP/DISK] try later?");
    assert_true(err_is_temporary(&e));
    err_set_server(&e, "[AUTH] bad", 10);
    assert_int_equal(e.code, ERR_CODE_AUTH);
    assert_false(err_is_temporary(&e));
    err_set_server(&e, "[IN-USE", 7);
    assert_int_equal(e.code, ERR_CODE_NONE);
    char line[300];
    err_set(&e, ERR_TLS, "certificate verify failed: x (host h)");
    err_format(&e, line, sizeof line);
    assert_string_equal(line, "TLS: certificate verify failed: x (host h)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(status_lines),   cmocka_unit_test(numbers),
        cmocka_unit_test(uidls),          cmocka_unit_test(capa),
        cmocka_unit_test(apop_timestamp), cmocka_unit_test(dot_every_split),
        cmocka_unit_test(dot_terminators), cmocka_unit_test(dot_limit_and_sink_error),
        cmocka_unit_test(dot_large_body), cmocka_unit_test(mech_lists),
        cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests_name("pop3_proto", tests, NULL, NULL);
}
