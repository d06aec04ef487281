/* Unit tests: the explicit-session endpoints (bridge/api_sessions.c) over
 * real HTTP (api_fixture.h), against the scripted POP3 server of
 * pop3_fake.h: open (201 with Location), the listing with marks, RETR and
 * TOP by number, DELE that only marks (409 on a marked message), RSET,
 * NOOP, QUIT that commits, the session limit (429), unknown ids and bad
 * numbers.  The same against Dovecot is in tests/integration/test_api.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api_fixture.h"
#include "pop3.h"
#include "pop3_fake.h"

static struct fixture F;
static struct fake_pop3 srv;

/* POST .../sessions: the new session's path ("/api/v1/sessions/<id>")
 * from the Location header. */
static void open_session(char *path, size_t size)
{
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "POST", NULL, &r, "/api/v1/accounts/fake/sessions"), 201);
    const char *loc = strcasestr(r.head, "Location: /api/v1/sessions/");
    assert_non_null(loc);
    snprintf(path, size, "%.51s", loc + strlen("Location: "));
    assert_int_equal(strlen(path), strlen("/api/v1/sessions/") + 34);
    assert_non_null(strstr(r.body, "\"account\":\"fake\",\"count\":"));
    fix_resp_free(&r);
}

static void commands_and_quit(void **state)
{
    (void)state;
    char s[64], t[FIX_TARGET_MAX];
    open_session(s, sizeof s);
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "%s/messages", s), 200);
    assert_non_null(strstr(r.body, "{\"number\":3,\"uidl\":\"uid-three\""));
    assert_null(strstr(r.body, "\"marked\":true"));
    fix_resp_free(&r);
    assert_int_equal(fix_call(&F, "GET", "Accept: message/rfc822\r\n", &r, "%s/messages/1", s),
                     200);
    assert_string_equal(r.body, fake_msg[1]);
    fix_resp_free(&r);
    fix_expect(&F, "GET", fix_path(t, "%s/messages/2", s), 200, "\"subject\":\"two\"",
               "\"uidl\":\"uid-two\"", NULL);
    fix_expect(&F, "GET", fix_path(t, "%s/messages/3/top?lines=1", s), 200, "body three", NULL);
    fix_expect(&F, "DELETE", fix_path(t, "%s/messages/2", s), 204, NULL);
    fix_expect(&F, "DELETE", fix_path(t, "%s/messages/2", s), 409, "marked-deleted", NULL);
    fix_expect(&F, "GET", fix_path(t, "%s/messages/2", s), 409, NULL);
    fix_expect(&F, "GET", fix_path(t, "%s/messages/9", s), 404, NULL);
    fix_expect(&F, "GET", fix_path(t, "%s/messages/0", s), 400, NULL);
    fix_expect(&F, "GET", fix_path(t, "%s/messages/07", s), 400, NULL);
    fix_expect(&F, "POST", fix_path(t, "%s/reset", s), 200, "\"marked\":0", NULL);
    fix_expect(&F, "DELETE", fix_path(t, "%s/messages/3", s), 204, NULL);
    fix_expect(&F, "POST", fix_path(t, "%s/noop", s), 200, "\"marked\":1", NULL);
    fix_expect(&F, "GET", s, 200, "\"expires_at\":\"", NULL);
    assert_int_equal(atomic_load(&srv.deleted), 0); /* nothing before QUIT */
    assert_int_equal(fix_call(&F, "DELETE", NULL, &r, "%s", s), 200);
    assert_string_equal(r.body, "{\"deleted\":1}");
    fix_resp_free(&r);
    assert_int_equal(atomic_load(&srv.deleted), 1);
    fix_expect(&F, "GET", s, 404, NULL);
    fix_expect(&F, "DELETE", s, 404, NULL);
}

static void limits_and_unknown(void **state)
{
    (void)state;
    char a[64], b[64];
    open_session(a, sizeof a);
    open_session(b, sizeof b);
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "POST", NULL, &r, "/api/v1/accounts/fake/sessions"), 429);
    assert_true(fix_has(&r, "Retry-After: "));
    assert_non_null(strstr(r.body, "session limit reached (2 per account"));
    fix_resp_free(&r);
    fix_expect(&F, "GET", "/api/v1/sessions/s_00000000000000000000000000000000", 404, NULL);
    fix_expect(&F, "POST", "/api/v1/sessions/nonsense/noop", 404, NULL);
    fix_expect(&F, "POST", "/api/v1/accounts/nope/sessions", 404, NULL);
    fix_expect(&F, "DELETE", a, 200, NULL);
    fix_expect(&F, "DELETE", b, 200, NULL);
}

static int setup(void **state)
{
    *state = &F;
    fake_start(&srv);
    char accounts[512];
    snprintf(accounts, sizeof accounts,
             FIX_ACCOUNT("fake", ", \"port\": %u, \"tls\": \"none\", \"allow_plaintext\": true"),
             srv.port);
    return fix_start(&F, "\"sessions_per_account\": 2, \"session_idle_timeout\": \"30s\"",
                     accounts);
}

static int teardown(void **state)
{
    fix_teardown(state);
    fake_stop(&srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(commands_and_quit),
        cmocka_unit_test(limits_and_unknown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
