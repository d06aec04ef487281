/* Unit tests: OAuth 2.0 requests and responses (include/oauth2_proto.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oauth2_proto.h"

/* ---- PKCE ------------------------------------------------------------------- */

/* RFC 7636 Appendix B */
static void pkce_rfc7636_vector(void **state)
{
    (void)state;
    char ch[OAUTH2_PKCE_CHALLENGE_LEN + 1];
    struct err e;
    assert_int_equal(
        oauth2_proto_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", ch, &e), 0);
    assert_string_equal(ch, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void pkce_verifier(void **state)
{
    (void)state;
    char v1[OAUTH2_PKCE_VERIFIER_LEN + 1], v2[OAUTH2_PKCE_VERIFIER_LEN + 1];
    char ch[OAUTH2_PKCE_CHALLENGE_LEN + 1], st[33];
    struct err e;
    assert_int_equal(oauth2_proto_pkce_verifier(v1, &e), 0);
    assert_int_equal(oauth2_proto_pkce_verifier(v2, &e), 0);
    assert_int_equal(strlen(v1), 43);
    assert_string_not_equal(v1, v2);
    assert_int_equal(strspn(v1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     43);
    assert_int_equal(oauth2_proto_pkce_challenge(v1, ch, &e), 0);
    assert_int_equal(strlen(ch), 43);
    /* bad verifiers: too short, a character outside the unreserved set */
    assert_int_equal(oauth2_proto_pkce_challenge("short", ch, &e), -1);
    assert_int_equal(oauth2_proto_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk+", ch,
                                                 &e),
                     -1);
    assert_int_equal(oauth2_proto_state(st, &e), 0);
    assert_int_equal(strlen(st), 32);
}

/* ---- providers ----------------------------------------------------------------- */

static struct config_oauth2 block(enum config_oauth2_provider p, enum config_oauth2_flow f,
                                  const char *tenant)
{
    struct config_oauth2 o = {.present = true, .provider = p, .flow = f};
    o.tenant = (char *)tenant;
    o.client_id = "cid";
    return o;
}

static void provider_defaults(void **state)
{
    (void)state;
    struct oauth2_client c;
    struct err e;
    struct config_oauth2 o = block(CONFIG_OAUTH2_MICROSOFT, CONFIG_FLOW_DEVICE_CODE, "contoso.example");
    assert_int_equal(oauth2_proto_client(&o, &c, &e), 0);
    assert_string_equal(c.token_url,
                        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token");
    assert_string_equal(c.device_url,
                        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/devicecode");
    assert_string_equal(c.authorize_url,
                        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/authorize");
    assert_string_equal(c.scope, "https://outlook.office.com/POP.AccessAsUser.All offline_access");
    assert_true(c.scope_on_refresh);
    assert_false(c.basic_auth);
    assert_false(c.offline_params);
    assert_string_equal(c.client_id, "cid");
    assert_null(c.client_secret);

    o = block(CONFIG_OAUTH2_MICROSOFT, CONFIG_FLOW_CLIENT_CREDENTIALS, "t1");
    assert_int_equal(oauth2_proto_client(&o, &c, &e), 0);
    assert_string_equal(c.scope, "https://outlook.office365.com/.default");
    assert_string_equal(c.token_url, "https://login.microsoftonline.com/t1/oauth2/v2.0/token");

    o = block(CONFIG_OAUTH2_GOOGLE, CONFIG_FLOW_AUTHORIZATION_CODE, NULL);
    o.client_secret.value = "gsecret";
    assert_int_equal(oauth2_proto_client(&o, &c, &e), 0);
    assert_string_equal(c.token_url, "https://oauth2.googleapis.com/token");
    assert_string_equal(c.device_url, "https://oauth2.googleapis.com/device/code");
    assert_string_equal(c.authorize_url, "https://accounts.google.com/o/oauth2/v2/auth");
    assert_string_equal(c.scope, "https://mail.google.com/");
    assert_true(c.offline_params);
    assert_false(c.scope_on_refresh);
    assert_string_equal(c.client_secret, "gsecret");
    /* Google has no client credentials for mailboxes */
    o = block(CONFIG_OAUTH2_GOOGLE, CONFIG_FLOW_CLIENT_CREDENTIALS, NULL);
    assert_int_equal(oauth2_proto_client(&o, &c, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);

    /* an explicit scope wins */
    o = block(CONFIG_OAUTH2_MICROSOFT, CONFIG_FLOW_DEVICE_CODE, "organizations");
    o.scope = "https://outlook.office.com/POP.AccessAsUser.All";
    assert_int_equal(oauth2_proto_client(&o, &c, &e), 0);
    assert_string_equal(c.scope, "https://outlook.office.com/POP.AccessAsUser.All");

    /* custom: everything from the block; Basic authentication */
    o = block(CONFIG_OAUTH2_CUSTOM, CONFIG_FLOW_DEVICE_CODE, NULL);
    o.token_url = "https://idp.example/token";
    o.device_authorization_url = "https://idp.example/device";
    o.scope = "pop";
    o.ca_file = "/x/ca.pem";
    assert_int_equal(oauth2_proto_client(&o, &c, &e), 0);
    assert_string_equal(c.token_url, "https://idp.example/token");
    assert_string_equal(c.device_url, "https://idp.example/device");
    assert_string_equal(c.authorize_url, "");
    assert_string_equal(c.scope, "pop");
    assert_true(c.basic_auth);
    assert_string_equal(c.ca_file, "/x/ca.pem");
    o.flow = CONFIG_FLOW_AUTHORIZATION_CODE;
    assert_int_equal(oauth2_proto_client(&o, &c, &e), -1); /* no authorization_url */
    o.token_url = NULL;
    o.flow = CONFIG_FLOW_DEVICE_CODE;
    assert_int_equal(oauth2_proto_client(&o, &c, &e), -1);
    o = block(CONFIG_OAUTH2_STATIC, CONFIG_FLOW_DEVICE_CODE, NULL);
    assert_int_equal(oauth2_proto_client(&o, &c, &e), -1);
    o = block(CONFIG_OAUTH2_GOOGLE, CONFIG_FLOW_AUTHORIZATION_CODE, NULL);
    o.client_id = NULL;
    assert_int_equal(oauth2_proto_client(&o, &c, &e), -1);
}

static void authorize_url(void **state)
{
    (void)state;
    struct oauth2_client c;
    struct err e;
    char url[4096];
    struct config_oauth2 o = block(CONFIG_OAUTH2_GOOGLE, CONFIG_FLOW_AUTHORIZATION_CODE, NULL);
    o.client_id = "123-abc.apps.googleusercontent.com";
    assert_int_equal(oauth2_proto_client(&o, &c, &e), 0);
    assert_int_equal(oauth2_proto_authorize_url(&c, "http://127.0.0.1:5555/", "st4te", "ch4llenge",
                                                url, sizeof url, &e),
                     0);
    assert_string_equal(url,
                        "https://accounts.google.com/o/oauth2/v2/auth?response_type=code"
                        "&client_id=123-abc.apps.googleusercontent.com"
                        "&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2F"
                        "&scope=https%3A%2F%2Fmail.google.com%2F&state=st4te"
                        "&code_challenge=ch4llenge&code_challenge_method=S256"
                        "&access_type=offline&prompt=consent");
    assert_int_equal(oauth2_proto_authorize_url(&c, "http://127.0.0.1:5555/", "s", "c", url, 40, &e),
                     -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    /* an authorize URL that has a query already */
    o = block(CONFIG_OAUTH2_CUSTOM, CONFIG_FLOW_AUTHORIZATION_CODE, NULL);
    o.token_url = "https://idp.example/token";
    o.authorization_url = "https://idp.example/auth?tenant=x";
    assert_int_equal(oauth2_proto_client(&o, &c, &e), 0);
    assert_int_equal(oauth2_proto_authorize_url(&c, "http://127.0.0.1:1/", "s", "c", url,
                                                sizeof url, &e),
                     0);
    assert_non_null(strstr(url, "https://idp.example/auth?tenant=x&response_type=code&client_id=cid"));
    assert_null(strstr(url, "scope="));       /* none configured: none sent */
    assert_null(strstr(url, "access_type=")); /* Google's only */
}

/* ---- token responses ------------------------------------------------------------- */

#define PARSE(json, t, e) oauth2_proto_parse_token(json, strlen(json), t, e)

static struct oauth2_token *tok(void)
{
    static struct oauth2_token t;
    return &t;
}

static void bad_token(const char *json, const char *why)
{
    struct err e;
    struct oauth2_token *t = tok();
    err_clear(&e);
    if (PARSE(json, t, &e) != -1)
        fail_msg("accepted: %s", json);
    assert_int_equal(e.kind, ERR_PROTO);
    if (!strstr(e.msg, why))
        fail_msg("%s: message \"%s\" lacks \"%s\"", json, e.msg, why);
    assert_string_equal(t->access_token, ""); /* wiped */
    assert_null(strstr(e.msg, "SECRETTOKEN"));
}

static void token_responses(void **state)
{
    (void)state;
    struct err e;
    struct oauth2_token *t = tok();
    assert_int_equal(PARSE("{\"access_token\":\"eyJ0eXAi.OiJKV1Qi.LCJhbGc-_~+/=\","
                           "\"token_type\":\"Bearer\",\"expires_in\":3599,"
                           "\"refresh_token\":\"0.AXoA-rt\",\"scope\":\"a b\"}",
                           t, &e),
                     0);
    assert_string_equal(t->access_token, "eyJ0eXAi.OiJKV1Qi.LCJhbGc-_~+/=");
    assert_string_equal(t->refresh_token, "0.AXoA-rt");
    assert_string_equal(t->scope, "a b");
    assert_int_equal(t->expires_in_s, 3599);
    /* token_type in any case; expires_in as a string; no refresh token */
    assert_int_equal(PARSE("{\"access_token\":\"x\",\"token_type\":\"bearer\",\"expires_in\":\"60\"}",
                           t, &e),
                     0);
    assert_int_equal(t->expires_in_s, 60);
    assert_string_equal(t->refresh_token, "");
    /* no expires_in: the default */
    assert_int_equal(PARSE("{\"access_token\":\"x\",\"token_type\":\"Bearer\"}", t, &e), 0);
    assert_int_equal(t->expires_in_s, OAUTH2_EXPIRES_DEFAULT_S);
    /* unknown members are ignored */
    assert_int_equal(PARSE("{\"access_token\":\"x\",\"token_type\":\"Bearer\",\"ext_expires_in\":1,"
                           "\"id_token\":null,\"refresh_token\":null}",
                           t, &e),
                     0);

    bad_token("", "empty");
    bad_token("not json", "not a JSON object");
    bad_token("[1,2]", "not a JSON object");
    bad_token("{\"access_token\":\"SECRETTOKEN\"", "not a JSON object");
    bad_token("{\"token_type\":\"Bearer\"}", "has no access_token");
    bad_token("{\"access_token\":\"\",\"token_type\":\"Bearer\"}", "access_token in the response is empty");
    bad_token("{\"access_token\":42,\"token_type\":\"Bearer\"}", "not a string");
    bad_token("{\"access_token\":\"SECRET TOKEN\",\"token_type\":\"Bearer\"}", "not a bearer token");
    bad_token("{\"access_token\":\"SECRETTOKEN\"}", "has no token_type");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"mac\"}", "not Bearer");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"expires_in\":0}",
              "outside 10..");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"expires_in\":9}",
              "outside 10..");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"expires_in\":-5}",
              "outside");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"expires_in\":1e12}",
              "outside");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"expires_in\":3.5}",
              "outside");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"expires_in\":\"1h\"}",
              "not a number of seconds");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"expires_in\":true}",
              "not a number of seconds");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"refresh_token\":7}",
              "refresh_token in the response is not a string");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\","
              "\"refresh_token\":\"a\\u0001b\"}",
              "VSCHAR");
    bad_token("{\"access_token\":\"SECRETTOKEN\",\"token_type\":\"Bearer\",\"scope\":[]}",
              "scope in the response is not a string");
    /* exactly OAUTH2_TOKEN_MAX is fine; one more is not */
    size_t n = OAUTH2_TOKEN_MAX + 64;
    char *big = malloc(n + 100);
    assert_non_null(big);
    int k = snprintf(big, n + 100, "{\"token_type\":\"Bearer\",\"access_token\":\"");
    memset(big + k, 'a', OAUTH2_TOKEN_MAX);
    snprintf(big + k + OAUTH2_TOKEN_MAX, 100, "\"}");
    assert_int_equal(PARSE(big, t, &e), 0);
    assert_int_equal(strlen(t->access_token), OAUTH2_TOKEN_MAX);
    memset(big + k, 'a', OAUTH2_TOKEN_MAX + 1);
    snprintf(big + k + OAUTH2_TOKEN_MAX + 1, 100, "\"}");
    assert_int_equal(PARSE(big, t, &e), -1);
    assert_non_null(strstr(e.msg, "longer than"));
    free(big);
    oauth2_proto_token_wipe(t);
}

static void error_responses(void **state)
{
    (void)state;
    char code[64], desc[200];
    static const struct {
        const char *json;
        enum oauth2_result r;
        const char *code;
    } cases[] = {
        {"{\"error\":\"authorization_pending\"}", OAUTH2_PENDING, "authorization_pending"},
        {"{\"error\":\"slow_down\"}", OAUTH2_SLOW_DOWN, "slow_down"},
        {"{\"error\":\"access_denied\"}", OAUTH2_DENIED, "access_denied"},
        {"{\"error\":\"expired_token\"}", OAUTH2_EXPIRED, "expired_token"},
        {"{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS70008: expired\"}",
         OAUTH2_INVALID_GRANT, "invalid_grant"},
        {"{\"error\":\"invalid_client\"}", OAUTH2_REFUSED, "invalid_client"},
        {"{\"error\":\"invalid_scope\"}", OAUTH2_REFUSED, "invalid_scope"},
        {"{\"error\":\"temporarily_unavailable\"}", OAUTH2_TEMPORARY, "temporarily_unavailable"},
        {"{\"error\":\"server_error\"}", OAUTH2_TEMPORARY, "server_error"},
        {"<html>503</html>", OAUTH2_TEMPORARY, ""},
        {"{\"message\":\"no error member\"}", OAUTH2_TEMPORARY, ""},
        {"{\"error\":5}", OAUTH2_TEMPORARY, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum oauth2_result r =
            oauth2_proto_parse_error(cases[i].json, strlen(cases[i].json), code, desc, sizeof desc);
        if (r != cases[i].r)
            fail_msg("%s: %s, not %s", cases[i].json, oauth2_result_name(r),
                     oauth2_result_name(cases[i].r));
        assert_string_equal(code, cases[i].code);
    }
    const char *j = "{\"error\":\"invalid_grant\",\"error_description\":\"line1\\nline2\\u0007\"}";
    oauth2_proto_parse_error(j, strlen(j), code, desc, sizeof desc);
    assert_string_equal(desc, "line1?line2?"); /* sanitised */
    assert_string_equal(oauth2_result_name(OAUTH2_INVALID_GRANT), "invalid_grant");
}

static void device_responses(void **state)
{
    (void)state;
    static struct oauth2_device d;
    struct err e;
    const char *ms = "{\"user_code\":\"FGH-JKL\",\"device_code\":\"DAQABAAEAAAD\","
                     "\"verification_uri\":\"https://microsoft.com/devicelogin\",\"expires_in\":900,"
                     "\"interval\":5,\"message\":\"To sign in...\"}";
    assert_int_equal(oauth2_proto_parse_device(ms, strlen(ms), &d, &e), 0);
    assert_string_equal(d.user_code, "FGH-JKL");
    assert_string_equal(d.device_code, "DAQABAAEAAAD");
    assert_string_equal(d.verification_uri, "https://microsoft.com/devicelogin");
    assert_string_equal(d.verification_uri_complete, "");
    assert_int_equal(d.expires_in_s, 900);
    assert_int_equal(d.interval_s, 5);
    /* Google says verification_url; interval missing: the RFC's 5 s */
    const char *g = "{\"device_code\":\"4/4-GMMh\",\"user_code\":\"GQVQ-JKEC\","
                    "\"verification_url\":\"https://www.google.com/device\",\"expires_in\":\"1800\","
                    "\"verification_uri_complete\":\"https://www.google.com/device?c=GQVQ-JKEC\"}";
    assert_int_equal(oauth2_proto_parse_device(g, strlen(g), &d, &e), 0);
    assert_string_equal(d.verification_uri, "https://www.google.com/device");
    assert_string_equal(d.verification_uri_complete, "https://www.google.com/device?c=GQVQ-JKEC");
    assert_int_equal(d.expires_in_s, 1800);
    assert_int_equal(d.interval_s, OAUTH2_DEVICE_INTERVAL_S);
    static const char *const bad[] = {
        "{\"user_code\":\"A\",\"verification_uri\":\"https://x\",\"expires_in\":9}",
        "{\"device_code\":\"d\",\"verification_uri\":\"https://x\",\"expires_in\":9}",
        "{\"device_code\":\"d\",\"user_code\":\"A\",\"expires_in\":9}",
        "{\"device_code\":\"d\",\"user_code\":\"A\",\"verification_uri\":\"https://x\"}",
        "{\"device_code\":\"d\",\"user_code\":\"A B\",\"verification_uri\":\"https://x\",\"expires_in\":9}",
        "{\"device_code\":\"d\",\"user_code\":\"A\",\"verification_uri\":\"javascript:x\",\"expires_in\":9}",
        "{\"device_code\":\"d\",\"user_code\":\"A\",\"verification_uri\":\"https://u:p@x\",\"expires_in\":9}",
        "{\"device_code\":\"d\",\"user_code\":\"A\",\"verification_uri\":\"https://x\",\"expires_in\":0}",
        "{\"device_code\":\"d\",\"user_code\":\"A\",\"verification_uri\":\"https://x\",\"expires_in\":9,"
        "\"interval\":0}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (oauth2_proto_parse_device(bad[i], strlen(bad[i]), &d, &e) != -1)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(e.kind, ERR_PROTO);
        assert_string_equal(d.device_code, "");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pkce_rfc7636_vector), cmocka_unit_test(pkce_verifier),
        cmocka_unit_test(provider_defaults),   cmocka_unit_test(authorize_url),
        cmocka_unit_test(token_responses),     cmocka_unit_test(error_responses),
        cmocka_unit_test(device_responses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
