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
    fix_expect(&F, "GET", "/api/v1/accounts/fake/mailbox", 200, "\"count\":3",
               "\"capabilities\":[\"UIDL\",\"TOP\",\"USER\"]", NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/fake/messages", 200,
               "{\"number\":2,\"uidl\":\"uid-two\",\"size\":",
               "\"stored\":false,\"delivered\":false,\"id\":null", NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/nope/messages", 404, NULL);
}

/* ?headers=1: a message the store has is summarised from its stored body
 * (here it differs from the server's copy, to tell them apart), the others
 * from TOP n 0; the summaries are cached; headers=2 is refused. */
static void listing_with_headers(void **state)
{
    (void)state;
    const char *stored = "From: Stored Sender <s@example.com>\r\nSubject: stored two\r\n"
                         "Date: Mon, 2 Jan 2023 10:00:00 +0000\r\n\r\nbody\r\n";
    assert_true(fix_stored(&F, "fake", "uid-two", stored, strlen(stored), NULL, 0, NULL,
                           1700000000000) > 0);
    int before = atomic_load(&srv.connections);
    fix_expect(&F, "GET", "/api/v1/accounts/fake/messages?headers=1", 200,
               "\"uidl\":\"uid-one\",\"size\":",
               "\"from\":{\"name\":null,\"address\":\"a@example.com\"},"
               "\"subject\":\"one\",\"date\":null",
               "\"stored\":true,\"delivered\":true,\"id\":\"m_",
               "\"from\":{\"name\":\"Stored Sender\",\"address\":\"s@example.com\"},"
               "\"subject\":\"stored two\",\"date\":\"2023-01-02T10:00:00Z\"",
               "\"subject\":\"three\"", NULL);
    assert_int_equal(atomic_load(&srv.connections), before + 1); /* one session for all */
    /* again: the same, from the cache */
    fix_expect(&F, "GET", "/api/v1/accounts/fake/messages?headers=1", 200,
               "\"subject\":\"stored two\"", NULL);
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/accounts/fake/messages?headers=0"), 200);
    assert_null(strstr(r.body, "\"subject\""));
    fix_resp_free(&r);
    fix_expect(&F, "GET", "/api/v1/accounts/fake/messages?headers=2", 400, NULL);
}

static void message_raw_json_top(void **state)
{
    (void)state;
    struct fix_resp r;
    assert_int_equal(fix_call(&F, "GET", "Accept: message/rfc822\r\n", &r,
                              "/api/v1/accounts/fake/messages/uid-two"),
                     200);
    assert_true(fix_has(&r, "Content-Type: message/rfc822"));
    assert_true(fix_has(&r, "Content-Security-Policy: sandbox"));
    assert_string_equal(r.body, fake_msg[2]);
    fix_resp_free(&r);
    fix_expect(&F, "GET", "/api/v1/accounts/fake/messages/uid-two", 200, "\"subject\":\"two\"",
               "\"uidl\":\"uid-two\"", NULL);
    assert_int_equal(fix_call(&F, "GET", NULL, &r, "/api/v1/accounts/fake/messages/uid-one/top?lines=0"),
                     200);
    assert_non_null(strstr(r.body, "\"subject\":\"one\""));
    assert_null(strstr(r.body, "body one"));
    fix_resp_free(&r);
    fix_expect(&F, "GET", "/api/v1/accounts/fake/messages/uid-one/top?lines=x", 400, NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/fake/messages/uid-nine", 404,
               "no message with UIDL \\\"uid-nine\\\" in mailbox fake", NULL);
}

/* Runs last in the group: it changes the mailbox. */
static void delete_commits_at_quit(void **state)
{
    (void)state;
    fix_expect(&F, "DELETE", "/api/v1/accounts/fake/messages/uid-one", 204, NULL);
    assert_int_equal(atomic_load(&srv.deleted), 1);
    fix_expect(&F, "DELETE", "/api/v1/accounts/fake/messages/uid-one", 404, NULL);
    fix_expect(&F, "GET", "/api/v1/accounts/fake/mailbox", 200, "\"count\":2", NULL);
}

static void silent_server(void **state)
{
    (void)state;
    int64_t t0 = clock_mono_ms();
    fix_expect(&F, "GET", "/api/v1/accounts/mute/mailbox", 504,
               "\"type\":\"urn:pop3bridge:problem:upstream-timeout\"", "\"kind\":\"timeout\"",
               "POP3 login", NULL);
    int64_t took = clock_mono_ms() - t0;
    if (took > 6000) /* the one-shot limit is 1 s; the account's network timeout 20 s */
        fail_msg("a call to a silent server took %lld ms", (long long)took);
}

static int setup(void **state)
{
    *state = &F;
    fake_start(&srv);
    fake_start(&mute);
    mute.silent = true;
    char accounts[1024];
    snprintf(accounts, sizeof accounts,
             FIX_ACCOUNT("fake", ", \"port\": %u, \"tls\": \"none\", \"allow_plaintext\": true")
             "," FIX_ACCOUNT("mute", ", \"port\": %u, \"tls\": \"none\", \"allow_plaintext\": true, "
                                     "\"timeout\": \"20s\""),
             srv.port, mute.port);
    return fix_start(&F, "\"request_timeout\": \"1s\"", accounts);
}

static int teardown(void **state)
{
    fix_teardown(state);
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
