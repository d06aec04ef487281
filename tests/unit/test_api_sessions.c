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

/* POST .../sessions: the new session's id from the Location header. */
static void open_session(char *id, size_t size)
{
    struct fix_resp r;
    fix_req(&F, "POST", "/api/v1/accounts/fake/sessions", FIX_AUTH, &r);
    assert_int_equal(r.status, 201);
    const char *loc = strcasestr(r.head, "Location: /api/v1/sessions/");
    assert_non_null(loc);
    snprintf(id, size, "%.34s", loc + strlen("Location: /api/v1/sessions/"));
    assert_int_equal(strlen(id), 34);
    assert_non_null(strstr(r.body, "\"account\":\"fake\",\"count\":"));
    fix_resp_free(&r);
}

static int req(const char *method, const char *id, const char *rest, const char *headers,
               struct fix_resp *r)
{
    char target[256], h[256];
    snprintf(target, sizeof target, "/api/v1/sessions/%s%s", id, rest);
    snprintf(h, sizeof h, FIX_AUTH "%s", headers ? headers : "");
    fix_req(&F, method, target, h, r);
    return r->status;
}

static void commands_and_quit(void **state)
{
    (void)state;
    char id[40];
    open_session(id, sizeof id);
    struct fix_resp r;
    assert_int_equal(req("GET", id, "/messages", NULL, &r), 200);
    assert_non_null(strstr(r.body, "{\"number\":3,\"uidl\":\"uid-three\""));
    assert_null(strstr(r.body, "\"marked\":true"));
    fix_resp_free(&r);
    assert_int_equal(req("GET", id, "/messages/1", "Accept: message/rfc822\r\n", &r), 200);
    assert_string_equal(r.body, fake_msg[1]);
    fix_resp_free(&r);
    assert_int_equal(req("GET", id, "/messages/2", NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"subject\":\"two\""));
    assert_non_null(strstr(r.body, "\"uidl\":\"uid-two\""));
    fix_resp_free(&r);
    assert_int_equal(req("GET", id, "/messages/3/top?lines=1", NULL, &r), 200);
    assert_non_null(strstr(r.body, "body three"));
    fix_resp_free(&r);
    assert_int_equal(req("DELETE", id, "/messages/2", NULL, &r), 204);
    fix_resp_free(&r);
    assert_int_equal(req("DELETE", id, "/messages/2", NULL, &r), 409);
    assert_non_null(strstr(r.body, "marked-deleted"));
    fix_resp_free(&r);
    assert_int_equal(req("GET", id, "/messages/2", NULL, &r), 409);
    fix_resp_free(&r);
    assert_int_equal(req("GET", id, "/messages/9", NULL, &r), 404);
    fix_resp_free(&r);
    assert_int_equal(req("GET", id, "/messages/0", NULL, &r), 400);
    fix_resp_free(&r);
    assert_int_equal(req("GET", id, "/messages/07", NULL, &r), 400);
    fix_resp_free(&r);
    assert_int_equal(req("POST", id, "/reset", NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"marked\":0"));
    fix_resp_free(&r);
    assert_int_equal(req("DELETE", id, "/messages/3", NULL, &r), 204);
    fix_resp_free(&r);
    assert_int_equal(req("POST", id, "/noop", NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"marked\":1"));
    fix_resp_free(&r);
    assert_int_equal(req("GET", id, "", NULL, &r), 200);
    assert_non_null(strstr(r.body, "\"expires_at\":\""));
    fix_resp_free(&r);
    assert_int_equal(atomic_load(&srv.deleted), 0); /* nothing before QUIT */
    assert_int_equal(req("DELETE", id, "", NULL, &r), 200);
    assert_string_equal(r.body, "{\"deleted\":1}");
    fix_resp_free(&r);
    assert_int_equal(atomic_load(&srv.deleted), 1);
    assert_int_equal(req("GET", id, "", NULL, &r), 404);
    fix_resp_free(&r);
    assert_int_equal(req("DELETE", id, "", NULL, &r), 404);
    fix_resp_free(&r);
}

static void limits_and_unknown(void **state)
{
    (void)state;
    char a[40], b[40];
    open_session(a, sizeof a);
    open_session(b, sizeof b);
    struct fix_resp r;
    fix_req(&F, "POST", "/api/v1/accounts/fake/sessions", FIX_AUTH, &r);
    assert_int_equal(r.status, 429);
    assert_true(fix_has(&r, "Retry-After: "));
    assert_non_null(strstr(r.body, "session limit reached (2 per account"));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/sessions/s_00000000000000000000000000000000", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    fix_resp_free(&r);
    fix_req(&F, "POST", "/api/v1/sessions/nonsense/noop", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    fix_resp_free(&r);
    fix_req(&F, "POST", "/api/v1/accounts/nope/sessions", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    fix_resp_free(&r);
    assert_int_equal(req("DELETE", a, "", NULL, &r), 200);
    fix_resp_free(&r);
    assert_int_equal(req("DELETE", b, "", NULL, &r), 200);
    fix_resp_free(&r);
}

static int setup(void **state)
{
    (void)state;
    fake_start(&srv);
    char accounts[512];
    snprintf(accounts, sizeof accounts,
             "{\"name\": \"fake\", \"host\": \"127.0.0.1\", \"port\": %u, \"tls\": \"none\", "
             "\"allow_plaintext\": true, \"username\": \"u\", \"password_env\": \"FIX_PW\"}",
             srv.port);
    return fix_start(&F, "\"sessions_per_account\": 2, \"session_idle_timeout\": \"30s\"",
                     accounts);
}

static int teardown(void **state)
{
    (void)state;
    fix_stop(&F);
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
