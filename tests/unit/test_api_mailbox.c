/* Unit tests: the one-shot mailbox endpoints (bridge/api_mailbox.c) over real
 * HTTP (api_fixture.h), against the scripted POP3 server of pop3_fake.h:
 * STAT and CAPA, the listing, a message by UIDL (raw and JSON), TOP, DELETE
 * committed by QUIT, unknown UIDLs, and a server that never answers (504 at
 * the one-shot limit, api.request_timeout).  The same endpoints against
 * Dovecot are in tests/integration/test_api.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api_fixture.h"
#include "clock.h"
#include "pop3.h"
#include "pop3_fake.h"

static struct fixture F;
static struct fake_pop3 srv, mute;

static void mailbox_and_listing(void **state)
{
    (void)state;
    struct fix_resp r;
    fix_req(&F, "GET", "/api/v1/accounts/fake/mailbox", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"count\":3"));
    assert_non_null(strstr(r.body, "\"capabilities\":[\"UIDL\",\"TOP\",\"USER\"]"));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "{\"number\":2,\"uidl\":\"uid-two\",\"size\":"));
    assert_non_null(strstr(r.body, "\"stored\":false,\"delivered\":false,\"id\":null"));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/nope/messages", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    fix_resp_free(&r);
}

/* ?headers=1: a message the store has is summarised from its stored body
 * (here it differs from the server's copy, to tell them apart), the others
 * from TOP n 0; the summaries are cached; headers=2 is refused. */
static void listing_with_headers(void **state)
{
    (void)state;
    struct err e;
    struct store *st = store_open(F.state, &e);
    assert_non_null(st);
    struct store_msg *m = NULL;
    const char *stored = "From: Stored Sender <s@example.com>\r\nSubject: stored two\r\n"
                         "Date: Mon, 2 Jan 2023 10:00:00 +0000\r\n\r\nbody\r\n";
    assert_int_equal(store_msg_begin(st, "fake", "uid-two", &m, &e), 0);
    assert_int_equal(store_msg_write(m, stored, strlen(stored), &e), 0);
    assert_int_equal(store_msg_finish(m, NULL, NULL, 0, 1700000000000, NULL, &e), 0);
    store_close(st);
    struct fix_resp r;
    int before = atomic_load(&srv.connections);
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages?headers=1", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"uidl\":\"uid-one\",\"size\":"));
    assert_non_null(strstr(r.body, "\"from\":{\"name\":null,\"address\":\"a@example.com\"},"
                                   "\"subject\":\"one\",\"date\":null"));
    assert_non_null(strstr(r.body, "\"stored\":true,\"delivered\":true,\"id\":\"m_"));
    assert_non_null(strstr(r.body, "\"from\":{\"name\":\"Stored Sender\",\"address\":\"s@example.com\"},"
                                   "\"subject\":\"stored two\",\"date\":\"2023-01-02T10:00:00Z\""));
    assert_non_null(strstr(r.body, "\"subject\":\"three\""));
    fix_resp_free(&r);
    assert_int_equal(atomic_load(&srv.connections), before + 1); /* one session for all */
    /* again: the same, from the cache */
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages?headers=1", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"subject\":\"stored two\""));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages?headers=0", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "\"subject\""));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages?headers=2", FIX_AUTH, &r);
    assert_int_equal(r.status, 400);
    fix_resp_free(&r);
}

static void message_raw_json_top(void **state)
{
    (void)state;
    struct fix_resp r;
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages/uid-two",
            FIX_AUTH "Accept: message/rfc822\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_true(fix_has(&r, "Content-Type: message/rfc822"));
    assert_true(fix_has(&r, "Content-Security-Policy: sandbox"));
    assert_string_equal(r.body, fake_msg[2]);
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages/uid-two", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"subject\":\"two\""));
    assert_non_null(strstr(r.body, "\"uidl\":\"uid-two\""));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages/uid-one/top?lines=0", FIX_AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"subject\":\"one\""));
    assert_null(strstr(r.body, "body one"));
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages/uid-one/top?lines=x", FIX_AUTH, &r);
    assert_int_equal(r.status, 400);
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/fake/messages/uid-nine", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "no message with UIDL \\\"uid-nine\\\" in mailbox fake"));
    fix_resp_free(&r);
}

/* Runs last in the group: it changes the mailbox. */
static void delete_commits_at_quit(void **state)
{
    (void)state;
    struct fix_resp r;
    fix_req(&F, "DELETE", "/api/v1/accounts/fake/messages/uid-one", FIX_AUTH, &r);
    assert_int_equal(r.status, 204);
    fix_resp_free(&r);
    assert_int_equal(atomic_load(&srv.deleted), 1);
    fix_req(&F, "DELETE", "/api/v1/accounts/fake/messages/uid-one", FIX_AUTH, &r);
    assert_int_equal(r.status, 404);
    fix_resp_free(&r);
    fix_req(&F, "GET", "/api/v1/accounts/fake/mailbox", FIX_AUTH, &r);
    assert_non_null(strstr(r.body, "\"count\":2"));
    fix_resp_free(&r);
}

static void silent_server(void **state)
{
    (void)state;
    struct fix_resp r;
    int64_t t0 = clock_mono_ms();
    fix_req(&F, "GET", "/api/v1/accounts/mute/mailbox", FIX_AUTH, &r);
    int64_t took = clock_mono_ms() - t0;
    assert_int_equal(r.status, 504);
    assert_non_null(strstr(r.body, "\"type\":\"urn:pop3bridge:problem:upstream-timeout\""));
    assert_non_null(strstr(r.body, "\"kind\":\"timeout\""));
    assert_non_null(strstr(r.body, "POP3 login"));
    fix_resp_free(&r);
    if (took > 6000) /* the one-shot limit is 1 s; the account's network timeout 20 s */
        fail_msg("a call to a silent server took %lld ms", (long long)took);
}

static int setup(void **state)
{
    (void)state;
    fake_start(&srv);
    fake_start(&mute);
    mute.silent = true;
    char accounts[1024];
    snprintf(accounts, sizeof accounts,
             "{\"name\": \"fake\", \"host\": \"127.0.0.1\", \"port\": %u, \"tls\": \"none\", "
             "\"allow_plaintext\": true, \"username\": \"u\", \"password_env\": \"FIX_PW\"},"
             "{\"name\": \"mute\", \"host\": \"127.0.0.1\", \"port\": %u, \"tls\": \"none\", "
             "\"allow_plaintext\": true, \"username\": \"u\", \"password_env\": \"FIX_PW\", "
             "\"timeout\": \"20s\"}",
             srv.port, mute.port);
    return fix_start(&F, "\"request_timeout\": \"1s\"", accounts);
}

static int teardown(void **state)
{
    (void)state;
    fix_stop(&F);
    fake_stop(&srv);
    fake_stop(&mute);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mailbox_and_listing),
        cmocka_unit_test(listing_with_headers),
        cmocka_unit_test(message_raw_json_top),
        cmocka_unit_test(silent_server),
        cmocka_unit_test(delete_commits_at_quit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
