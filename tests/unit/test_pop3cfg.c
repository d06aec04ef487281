/* Unit tests: the mapping from an account's configuration to the POP3
 * engine's options (include/pop3cfg.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pop3cfg.h"

static void mapping(void **state)
{
    (void)state;
    enum config_auth auth[] = {CONFIG_AUTH_SCRAM_SHA_256, CONFIG_AUTH_USER, CONFIG_AUTH_XOAUTH2};
    struct config_account a = {
        .name = "a", .host = "pop.example", .port = 995, .tls = CONFIG_TLS_IMPLICIT,
        .username = "u", .password = {.value = "pw"}, .auth = auth, .auth_count = 3,
        .ca_file = "/etc/ca.pem", .fingerprint = "sha256:00", .allow_plaintext = false,
        .timeout_ms = 45000, .max_message_size = 1u << 20,
    };
    struct pop3_opts o;
    pop3cfg_opts(&a, &o);
    assert_string_equal(o.host, "pop.example");
    assert_int_equal(o.port, 995);
    assert_int_equal(o.tls, POP3_TLS_IMPLICIT);
    assert_string_equal(o.username, "u");
    assert_string_equal(o.password, "pw");
    assert_null(o.oauth2_token);
    assert_string_equal(o.ca_file, "/etc/ca.pem");
    assert_string_equal(o.fingerprint, "sha256:00");
    assert_int_equal(o.n_mechs, 3);
    assert_int_equal(o.mechs[0], POP3_MECH_SCRAM_SHA_256);
    assert_int_equal(o.mechs[1], POP3_MECH_USER);
    assert_int_equal(o.mechs[2], POP3_MECH_XOAUTH2);
    assert_int_equal(o.timeout_ms, 45000);
    assert_int_equal(o.max_message_size, (1u << 20) + POP3_LIST_SLACK(1u << 20));
    assert_null(o.trace);

    a.tls = CONFIG_TLS_STARTTLS;
    a.timeout_ms = 0; /* out of range: the default */
    a.oauth2.present = true;
    a.oauth2.token.value = "bearer";
    a.auth_count = 0;
    pop3cfg_opts(&a, &o);
    assert_int_equal(o.tls, POP3_TLS_STARTTLS);
    assert_int_equal(o.timeout_ms, POP3CFG_TIMEOUT_DEFAULT_MS);
    assert_string_equal(o.oauth2_token, "bearer");
    assert_int_equal(o.n_mechs, 0);
    a.tls = CONFIG_TLS_NONE;
    a.allow_plaintext = true;
    pop3cfg_opts(&a, &o);
    assert_int_equal(o.tls, POP3_TLS_NONE);
    assert_true(o.allow_plaintext);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
