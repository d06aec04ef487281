/* Unit tests: the configuration file (include/config.h).
 *
 * Fixtures live in tests/data/config/; the tests run from the source tree's
 * top directory (as `make unit` does).  Every bad fixture asserts the exact
 * key path of each problem and a fragment of its message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "config.h"
#include "log.h"
#include "perms.h"

#define DATA "tests/data/config/"
#define SECRETS_KEY "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF"
#define WHSEC_32 "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA="

static void set_env(void)
{
    setenv("TEST_CFG_PW", "pw-from-env", 1);
    setenv("TEST_CFG_TOKEN", "token-from-env", 1);
    setenv("TEST_CFG_OAUTH", "oauth-from-env", 1);
    setenv("TEST_CFG_WHSEC", WHSEC_32, 1);
    setenv("TEST_CFG_EMPTY", "", 1);
    unsetenv("TEST_CFG_DEFINITELY_UNSET");
}

static int setup(void **state)
{
    (void)state;
    set_env();
    return 0;
}

/* Does d hold a line "FILE: path: ...fragment..."? */
static bool has_problem(const struct config_diag *d, const char *file, const char *path,
                        const char *fragment)
{
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s: %s: ", file, path);
    for (size_t i = 0; i < d->count; i++)
        if (strncmp(d->lines[i], prefix, strlen(prefix)) == 0 &&
            strstr(d->lines[i] + strlen(prefix), fragment))
            return true;
    return false;
}

static void dump(const struct config_diag *d)
{
    for (size_t i = 0; i < d->count; i++)
        print_message("  diag: %s\n", d->lines[i]);
}

#define EXPECT(d, file, path, frag)                                                                 \
    do {                                                                                            \
        if (!has_problem(d, file, path, frag)) {                                                    \
            dump(d);                                                                                \
            fail_msg("no problem \"%s: %s: ...%s...\"", file, path, frag);                          \
        }                                                                                           \
    } while (0)

/* Load a fixture that must fail; the diagnostics stay in *d. */
static void load_bad(const char *name, struct config_diag *d)
{
    char path[256];
    snprintf(path, sizeof path, DATA "%s", name);
    struct config *cfg = config_load(path, d);
    if (cfg) {
        config_free(&cfg);
        fail_msg("%s loaded but should not", name);
    }
    assert_true(d->count > 0);
}

static bool diag_contains(const struct config_diag *d, const char *s)
{
    for (size_t i = 0; i < d->count; i++)
        if (strstr(d->lines[i], s))
            return true;
    return false;
}

static char *summary_of(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_print_summary(cfg, f);
    fclose(f);
    return buf;
}

/* ---- valid files ---------------------------------------------------------- */

static void minimal_defaults(void **state)
{
    (void)state;
    struct config_diag d = {0};
    struct config *cfg = config_load(DATA "minimal.json", &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    assert_int_equal(d.count, 0);
    assert_string_equal(cfg->state_dir, "/var/lib/pop3bridge");
    assert_int_equal(cfg->log_level, CONFIG_LOG_INFO);
    assert_int_equal(cfg->retention_ms, 30LL * 86400000);
    assert_int_equal(cfg->secret_command_timeout_ms, 10000);
    assert_string_equal(cfg->api.listen, "127.0.0.1:8025");
    assert_string_equal(cfg->api.listen_host, "127.0.0.1");
    assert_int_equal(cfg->api.listen_port, 8025);
    assert_string_equal(cfg->api.public_url, "http://127.0.0.1:8025");
    assert_int_equal(cfg->api.token_count, 0);
    assert_int_equal(cfg->api.cors_origin_count, 0);
    assert_int_equal(cfg->api.sessions_per_account, 4);
    assert_int_equal(cfg->api.sessions_total, 64);
    assert_int_equal(cfg->api.session_idle_timeout_ms, 60000);
    assert_int_equal(cfg->api.max_request_body, 1 << 20);
    assert_int_equal(cfg->api.max_url_length, 8192);
    assert_int_equal(cfg->api.request_timeout_ms, 30000);
    assert_int_equal(cfg->api.max_connections, 1024);
    assert_int_equal(cfg->api.max_connections_per_client, 64);
    assert_int_equal(cfg->api.request_read_timeout_ms, 10000);
    assert_int_equal(cfg->api.threads, 4);
    assert_int_equal(cfg->api.mailbox_workers, 16);
    assert_null(cfg->api.web_dir);
    assert_int_equal(cfg->webhook_count, 0);
    assert_int_equal(cfg->account_count, 1);
    const struct config_account *a = &cfg->accounts[0];
    assert_string_equal(a->name, "a");
    assert_string_equal(a->host, "pop.example.com");
    assert_int_equal(a->port, 995);
    assert_int_equal(a->tls, CONFIG_TLS_IMPLICIT);
    assert_string_equal(a->username, "u");
    assert_int_equal(a->password.source, CONFIG_SECRET_ENV);
    assert_string_equal(a->password.ref, "TEST_CFG_PW");
    assert_string_equal(a->password.value, "pw-from-env");
    assert_int_equal(a->password.len, strlen("pw-from-env"));
    assert_false(a->oauth2.present);
    assert_int_equal(a->auth_count, 0);
    assert_null(a->ca_file);
    assert_null(a->fingerprint);
    assert_false(a->allow_plaintext);
    assert_int_equal(a->timeout_ms, 60000);
    assert_int_equal(a->poll_interval_ms, 60000);
    assert_int_equal(a->start, CONFIG_START_NEW);
    assert_int_equal(a->after_delivery, CONFIG_AFTER_KEEP);
    assert_int_equal(a->delete_after_ms, 0);
    assert_int_equal(a->max_message_size, 25u << 20);
    assert_int_equal(a->max_messages_per_poll, 500);
    assert_int_equal(a->webhook_count, 0);
    config_free(&cfg);
    assert_null(cfg);
    config_free(&cfg); /* NULL is a no-op */
    config_free(NULL);
    config_diag_free(&d);

    /* tls none: port 110 by default */
    cfg = config_load(DATA "minimal_none.json", &d);
    assert_non_null(cfg);
    assert_int_equal(cfg->accounts[0].tls, CONFIG_TLS_NONE);
    assert_int_equal(cfg->accounts[0].port, 110);
    config_free(&cfg);
    config_diag_free(&d);
}

static void full_every_key(void **state)
{
    (void)state;
    struct config_diag d = {0};
    struct config *cfg = config_load(DATA "full.json", &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    char *dir = realpath(DATA, NULL);
    assert_non_null(dir);
    char want[4096];

    assert_string_equal(cfg->dir, dir);
    snprintf(want, sizeof want, "%s/state", dir);
    assert_string_equal(cfg->state_dir, want);
    assert_int_equal(cfg->log_level, CONFIG_LOG_DEBUG);
    assert_int_equal(cfg->retention_ms, 7LL * 86400000);
    assert_int_equal(cfg->secret_command_timeout_ms, 5000);

    const struct config_api *api = &cfg->api;
    assert_string_equal(api->listen, "[::1]:9025");
    assert_string_equal(api->listen_host, "::1");
    assert_int_equal(api->listen_port, 9025);
    assert_string_equal(api->public_url, "https://bridge.example"); /* trailing / removed */
    assert_int_equal(api->token_count, 2);
    assert_string_equal(api->tokens[0].name, "admin");
    assert_string_equal(api->tokens[0].token.value, "token-from-env");
    assert_string_equal(api->tokens[1].name, "ro");
    assert_int_equal(api->tokens[1].token.source, CONFIG_SECRET_FILE);
    assert_string_equal(api->tokens[1].token.value, "file-password"); /* first line, no CR */
    assert_int_equal(api->cors_origin_count, 2);
    assert_string_equal(api->cors_origins[1], "http://localhost:3000");
    assert_int_equal(api->sessions_per_account, 2);
    assert_int_equal(api->sessions_total, 10);
    assert_int_equal(api->session_idle_timeout_ms, 90000);
    assert_int_equal(api->max_request_body, 65536);
    assert_int_equal(api->max_url_length, 4096);
    assert_int_equal(api->request_timeout_ms, 60000);
    assert_int_equal(api->max_connections, 50);
    assert_int_equal(api->max_connections_per_client, 8);
    assert_int_equal(api->request_read_timeout_ms, 5000);
    assert_int_equal(api->threads, 2);
    assert_int_equal(api->mailbox_workers, 3);
    snprintf(want, sizeof want, "%s/web", dir); /* relative: resolved against the file */
    assert_string_equal(api->web_dir, want);

    assert_int_equal(cfg->webhook_count, 2);
    const struct config_webhook *w = &cfg->webhooks[0];
    assert_string_equal(w->name, "crm");
    assert_string_equal(w->url, "https://crm.example/hooks/mail");
    assert_int_equal(w->secret.source, CONFIG_SECRET_FILE);
    snprintf(want, sizeof want, "%s/secrets/webhook.secret", dir);
    assert_string_equal(w->secret.ref, want);
    assert_string_equal(w->secret.value, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_int_equal(w->key_len, 24);
    static const unsigned char key_start[] = {0x31, 0xf2, 0x90, 0xf6, 0xbf, 0x06};
    assert_memory_equal(w->key, key_start, sizeof key_start);
    assert_int_equal(w->timeout_ms, 20000);
    assert_int_equal(w->retry_count, 3);
    assert_int_equal(w->retry_ms[0], 1000);
    assert_int_equal(w->retry_ms[2], 3600000);
    assert_int_equal(w->inline_attachments_max, 1 << 20);
    assert_int_equal(w->inline_total_max, 2 << 20);
    assert_int_equal(w->max_in_flight, 3);
    assert_int_equal(w->header_count, 2);
    assert_string_equal(w->headers[0].name, "X-Tenant");
    assert_string_equal(w->headers[0].value, "acme");
    w = &cfg->webhooks[1];
    assert_string_equal(w->name, "audit.log");
    assert_int_equal(w->retry_count, 0); /* [] given: no retries */
    assert_int_equal(w->timeout_ms, 15000);
    assert_int_equal(w->inline_attachments_max, 256 * 1024);
    assert_int_equal(w->inline_total_max, 1 << 20);
    assert_int_equal(w->max_in_flight, 8);
    assert_int_equal(w->key_len, 32);

    assert_int_equal(cfg->account_count, 3);
    const struct config_account *a = &cfg->accounts[0];
    assert_int_equal(a->tls, CONFIG_TLS_STARTTLS);
    assert_int_equal(a->port, 110);
    assert_int_equal(a->password.source, CONFIG_SECRET_COMMAND);
    assert_string_equal(a->password.value, "cmd-password");
    assert_int_equal(a->auth_count, 4);
    assert_int_equal(a->auth[0], CONFIG_AUTH_SCRAM_SHA_256);
    assert_int_equal(a->auth[3], CONFIG_AUTH_USER);
    char *parent = realpath(DATA "..", NULL);
    snprintf(want, sizeof want, "%s/ca.pem", parent);
    free(parent);
    assert_string_equal(a->ca_file, want); /* "../ca.pem", normalised */
    assert_int_equal(a->fingerprint_sha256[0], 0x00);
    assert_int_equal(a->fingerprint_sha256[10], 0xaa);
    assert_int_equal(a->fingerprint_sha256[31], 0xff);
    assert_int_equal(a->timeout_ms, 30000);
    assert_int_equal(a->poll_interval_ms, 120000);
    assert_int_equal(a->start, CONFIG_START_ALL);
    assert_int_equal(a->delete_after_ms, 14LL * 86400000);
    assert_int_equal(a->max_message_size, 10u << 20);
    assert_int_equal(a->max_messages_per_poll, 50);
    assert_int_equal(a->webhook_count, 2);
    assert_string_equal(a->webhooks[1], "audit.log");
    assert_int_equal(a->webhook_index[0], 0);
    assert_int_equal(a->webhook_index[1], 1);
    a = &cfg->accounts[1];
    assert_int_equal(a->port, 1110);
    assert_int_equal(a->tls, CONFIG_TLS_NONE);
    assert_true(a->allow_plaintext);
    assert_int_equal(a->after_delivery, CONFIG_AFTER_DELETE);
    assert_string_equal(a->password.value, "file-password");
    assert_int_equal(a->webhook_index[0], 1);
    a = &cfg->accounts[2];
    assert_true(a->oauth2.present);
    assert_int_equal(a->password.source, CONFIG_SECRET_NONE);
    assert_string_equal(a->oauth2.token.value, "oauth-from-env");
    assert_int_equal(a->auth[1], CONFIG_AUTH_OAUTHBEARER);

    /* the summary names where secrets come from, never what they are */
    char *sum = summary_of(cfg);
    assert_non_null(strstr(sum, "full.json: valid (3 accounts, 2 webhooks, 2 API tokens)"));
    assert_non_null(strstr(sum, "account support host=pop.example.com port=110 tls=starttls"));
    assert_non_null(strstr(sum, "poll_interval=2m"));
    assert_non_null(strstr(sum, "webhooks=crm,audit.log"));
    assert_non_null(strstr(sum, "webhook crm url=https://crm.example/hooks/mail"));
    assert_non_null(strstr(sum, "retry_schedule=1s,10s,1h"));
    assert_non_null(strstr(sum, "listen=[::1]:9025"));
    assert_non_null(strstr(sum, "token=env:TEST_CFG_TOKEN"));
    assert_non_null(strstr(sum, "password=command"));
    assert_null(strstr(sum, "printf")); /* the command text is not shown */
    const char *secrets[] = {"pw-from-env", "token-from-env", "oauth-from-env", "cmd-password",
                             "file-password", "MfKQ9r8GKYqr", "LaLaSwAAAA"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strstr(sum, secrets[i]))
            fail_msg("the summary shows a secret: %s", secrets[i]);
    free(sum);
    free(dir);
    config_free(&cfg);
    config_diag_free(&d);
}

static void comments_and_strings(void **state)
{
    (void)state;
    struct config_diag d = {0};
    struct config *cfg = config_load(DATA "comments.json", &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    assert_string_equal(cfg->state_dir, "/tmp/x/y");
    assert_string_equal(cfg->webhooks[0].url, "http://127.0.0.1:8026/hooks//mail?a=/*b*/");
    assert_string_equal(cfg->webhooks[0].headers[0].value, "a // b /* c */ \" d");
    assert_string_equal(cfg->accounts[0].username, "us//er/*x*/");
    config_free(&cfg);
    config_diag_free(&d);
}

/* config/example.json and config/demo.json load with the variables they name. */
static void shipped_configs(void **state)
{
    (void)state;
    struct config_diag d = {0};
    setenv("POP3BRIDGE_API_TOKEN", "t1", 1);
    setenv("POP3BRIDGE_DASHBOARD_TOKEN", "t2", 1);
    setenv("CRM_WEBHOOK_SECRET", WHSEC_32, 1);
    setenv("N8N_WEBHOOK_SECRET", WHSEC_32, 1);
    setenv("N8N_PASSWORD", "n8n-password", 1);
    setenv("SUPPORT_PW", "p", 1);
    setenv("SALES_OAUTH_TOKEN", "oauth-token-value", 1);
    setenv("POP3BRIDGE_SECRETS_KEY", SECRETS_KEY, 1);
    struct config *cfg = config_load("config/example.json", &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    assert_int_equal(cfg->account_count, 3);
    assert_string_equal(cfg->accounts[1].oauth2.token.value, "oauth-token-value");
    assert_int_equal(cfg->accounts[2].oauth2.provider, CONFIG_OAUTH2_MICROSOFT);
    assert_int_equal(cfg->webhook_count, 2);
    assert_string_equal(cfg->webhooks[1].auth.basic.password.value, "n8n-password");
    assert_string_equal(cfg->webhooks[1].proxy, "http://proxy.internal.example:3128");
    config_free(&cfg);

    setenv("DEMO_POP3_PASSWORD", "demo", 1);
    setenv("DEMO_WEBHOOK_SECRET", WHSEC_32, 1);
    setenv("DEMO_API_TOKEN", "demo-token", 1);
    cfg = config_load("config/demo.json", &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    char *top = realpath(".", NULL);
    char want[4096];
    snprintf(want, sizeof want, "%s/build/demo/state", top);
    assert_string_equal(cfg->state_dir, want);
    snprintf(want, sizeof want, "%s/build/demo/ca.pem", top);
    assert_string_equal(cfg->accounts[0].ca_file, want);
    free(top);
    assert_int_equal(cfg->accounts[0].start, CONFIG_START_ALL);
    assert_int_equal(cfg->accounts[0].poll_interval_ms, 5000);
    assert_string_equal(cfg->webhooks[0].url, "http://127.0.0.1:8026/hooks/mail");
    config_free(&cfg);
    assert_int_equal(d.count, 0);
    config_diag_free(&d);
}

/* Every key in the tables is documented in config/example.json. */
static void example_documents_every_key(void **state)
{
    (void)state;
    char *keys = NULL, *example = NULL;
    size_t klen = 0;
    FILE *f = open_memstream(&keys, &klen);
    config_print_keys(f);
    fclose(f);
    f = fopen("config/example.json", "r");
    assert_non_null(f);
    example = calloc(1, 1 << 20);
    size_t n = fread(example, 1, (1 << 20) - 1, f);
    fclose(f);
    assert_true(n > 0);
    int checked = 0;
    for (char *line = strtok(keys, "\n"); line; line = strtok(NULL, "\n")) {
        char *sp = strchr(line, ' ');
        assert_non_null(sp);
        *sp = '\0';
        char *last = strrchr(line, '.');
        const char *name = last ? last + 1 : line;
        char quoted[128];
        snprintf(quoted, sizeof quoted, "\"%s\"", name);
        if (!strstr(example, quoted))
            fail_msg("config/example.json does not mention %s", line);
        checked++;
    }
    assert_true(checked > 50);
    free(keys);
    free(example);
}

/* ---- bad files ------------------------------------------------------------ */

static void syntax_error_position(void **state)
{
    (void)state;
    struct config_diag d = {0};
    load_bad("syntax.json", &d);
    assert_int_equal(d.count, 1);
    assert_string_equal(d.lines[0],
                        DATA "syntax.json:4:3: invalid JSON near '\"log_level\": \"in'");
    config_diag_free(&d);

    load_bad("unclosed_comment.json", &d);
    assert_string_equal(d.lines[0], DATA "unclosed_comment.json:2:3: the /* comment is not closed");
    config_diag_free(&d);

    load_bad("not_object.json", &d);
    assert_string_equal(d.lines[0], DATA "not_object.json: the top level must be a JSON object, "
                                         "got an array");
    config_diag_free(&d);
}

static void unknown_keys(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "unknown_key.json";
    load_bad("unknown_key.json", &d);
    EXPECT(&d, f, "loglevel", "unknown key (did you mean \"log_level\"?)");
    EXPECT(&d, f, "frobnicate", "unknown key");
    assert_false(diag_contains(&d, "frobnicate: unknown key (did you mean"));
    EXPECT(&d, f, "accounts[0].pol_interval", "unknown key (did you mean \"poll_interval\"?)");
    assert_int_equal(d.count, 3);
    config_diag_free(&d);
}

static void wrong_types(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "wrong_types.json";
    load_bad("wrong_types.json", &d);
    EXPECT(&d, f, "state_dir", "expected a string, got a number");
    EXPECT(&d, f, "api", "expected an object, got an array");
    EXPECT(&d, f, "webhooks", "expected an array of objects, got an object");
    EXPECT(&d, f, "accounts[0].port", "expected an integer, got a string");
    EXPECT(&d, f, "accounts[0].allow_plaintext", "expected true or false");
    EXPECT(&d, f, "accounts[0].max_messages_per_poll", "expected a whole number, got 1.5");
    EXPECT(&d, f, "accounts[0].webhooks", "expected an array, got a string");
    EXPECT(&d, f, "accounts[0].tls", "\"ssl\" is not one of: implicit, starttls, none");
    EXPECT(&d, f, "accounts[0].auth[0]", "(did you mean \"scram-sha-256\"?)");
    EXPECT(&d, f, "accounts[1]", "expected an object, got a string");
    assert_int_equal(d.count, 10); /* and no follow-on noise for accounts[1] */
    config_diag_free(&d);
}

static void bad_durations_and_sizes(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "bad_units.json";
    load_bad("bad_units.json", &d);
    EXPECT(&d, f, "accounts[1].poll_interval", "\"5x\" is not a duration (use ms, s, m, h or d)");
    EXPECT(&d, f, "accounts[1].max_message_size", "\"25XB\" is not a size");
    EXPECT(&d, f, "accounts[1].port", "must be between 1 and 65535, got 70000");
    EXPECT(&d, f, "accounts[1].delete_after", "must be between 1m and 3650d, got \"10s\"");
    EXPECT(&d, f, "webhooks[0].timeout", "expected a duration string such as \"30s\", got a number");
    EXPECT(&d, f, "webhooks[0].retry_schedule[1]", "\"1w\" is not a duration");
    EXPECT(&d, f, "webhooks[0].inline_attachments_max", "\"1.5MiB\" is not a size");
    EXPECT(&d, f, "webhooks[0].max_in_flight", "must be between 1 and 64, got 0");
    EXPECT(&d, f, "webhooks[0].inline_total_max", "must be between 0B and 64MiB, got 65MiB");
    assert_int_equal(d.count, 9);
    config_diag_free(&d);
}

static void duplicate_names(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "duplicates.json";
    load_bad("duplicates.json", &d);
    EXPECT(&d, f, "api.tokens[1].name", "\"t\" is already used by api.tokens[0]");
    EXPECT(&d, f, "webhooks[1].name", "\"w\" is already used by webhooks[0]");
    EXPECT(&d, f, "accounts[2].name", "\"a\" is already used by accounts[0]");
    EXPECT(&d, f, "accounts[2].webhooks[1]", "\"w\" is listed twice");
    EXPECT(&d, f, "accounts[2].host", "is given twice");
    assert_int_equal(d.count, 5);
    config_diag_free(&d);
}

static void dangling_webhook(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "dangling.json";
    load_bad("dangling.json", &d);
    EXPECT(&d, f, "accounts[0].webhooks[1]", "no webhook is named \"crn\" (did you mean \"crm\"?)");
    EXPECT(&d, f, "accounts[0].webhooks[2]", "no webhook is named \"billing\"");
    assert_int_equal(d.count, 2);
    config_diag_free(&d);
}

static void literal_secrets_refused(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "literal_secret.json";
    load_bad("literal_secret.json", &d);
    EXPECT(&d, f, "accounts[0].password", "use password_env, password_file or password_command");
    EXPECT(&d, f, "webhooks[0].secret", "use secret_env or secret_file");
    EXPECT(&d, f, "api.tokens[0].token", "use token_env or token_file");
    EXPECT(&d, f, "accounts[1].oauth2.token", "use token_env, token_file or token_command");
    assert_false(diag_contains(&d, "LITERAL"));
    config_diag_free(&d);
}

static void missing_secrets(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "missing_env.json";
    load_bad("missing_env.json", &d);
    EXPECT(&d, f, "accounts[0].password_env",
           "environment variable TEST_CFG_DEFINITELY_UNSET is not set");
    EXPECT(&d, f, "accounts[1].password_env", "environment variable TEST_CFG_EMPTY is empty");
    EXPECT(&d, f, "accounts[2].password_env", "is not an environment variable name");
    EXPECT(&d, f, "accounts[3].password_file", "secrets/empty.pw is empty");
    EXPECT(&d, f, "accounts[4].password_file", "No such file or directory");
    config_diag_free(&d);

    /* a multi-line env var is refused (it would be cut silently otherwise) */
    setenv("TEST_CFG_PW", "line1\nline2", 1);
    load_bad("minimal.json", &d);
    EXPECT(&d, DATA "minimal.json", "accounts[0].password_env", "contains a control character");
    assert_false(diag_contains(&d, "line1"));
    config_diag_free(&d);
    set_env();
}

static void webhook_secret_format(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "bad_whsec.json";
    setenv("TEST_CFG_WHSEC_BAD64", "whsec_MfKQ9r8GKYqr$wjUPD8ILPZIo2LaLaSw", 1);
    setenv("TEST_CFG_WHSEC_NOPREFIX", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1);
    setenv("TEST_CFG_WHSEC_SHORT", "whsec_MfKQ9r8GKYqrTwjUPD8ILA==", 1);
    load_bad("bad_whsec.json", &d);
    EXPECT(&d, f, "webhooks[0].secret_env", "not valid base64");
    EXPECT(&d, f, "webhooks[1].secret_env", "does not start with \"whsec_\"");
    EXPECT(&d, f, "webhooks[2].secret_env", "decodes to 16 bytes");
    EXPECT(&d, f, "webhooks[3]", "has no signing secret");
    assert_false(diag_contains(&d, "MfKQ9r8"));
    config_diag_free(&d);

    /* base64 edge cases: bad padding, stray '=', non-canonical last bits */
    const char *bad[] = {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=",
                         "whsec_MfKQ9r8GKYqrTwjUPD8I=PZIo2LaLaSw",
                         "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAB=",
                         "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwA", NULL};
    for (int i = 0; bad[i]; i++) {
        setenv("TEST_CFG_WHSEC_BAD64", bad[i], 1);
        load_bad("bad_whsec.json", &d);
        if (!has_problem(&d, f, "webhooks[0].secret_env", "not valid base64")) {
            dump(&d);
            fail_msg("accepted %s", bad[i]);
        }
        config_diag_free(&d);
    }
}

static void secret_commands(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "command_fail.json";
    load_bad("command_fail.json", &d);
    EXPECT(&d, f, "accounts[0].password_command", "exited with status 3");
    EXPECT(&d, f, "accounts[1].password_command", "empty first line");
    EXPECT(&d, f, "accounts[2].password_command", "more than SECRETS_OUTPUT_MAX (65536) bytes");
    assert_int_equal(d.count, 3); /* accounts[3] ("cat", relative path) is fine */
    assert_false(diag_contains(&d, "leaked-PW"));
    config_diag_free(&d);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    f = DATA "command_timeout.json";
    load_bad("command_timeout.json", &d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    EXPECT(&d, f, "accounts[0].password_command", "timed out");
    EXPECT(&d, f, "accounts[1].password_command", "timed out");
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs < 10.0); /* killed, not waited for (each sleeps 30s) */
    config_diag_free(&d);
}

static void cross_key_checks(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "cross.json";
    load_bad("cross.json", &d);
    EXPECT(&d, f, "api.listen", "IPv6 goes in brackets");
    EXPECT(&d, f, "api.public_url", "must start with http:// or https://");
    EXPECT(&d, f, "api.cors_origins[0]", "without a path");
    EXPECT(&d, f, "api.sessions_total", "smaller than sessions_per_account");
    EXPECT(&d, f, "webhooks[0].name", "is not a valid name");
    EXPECT(&d, f, "webhooks[0].url", "must start with http:// or https://");
    EXPECT(&d, f, "webhooks[0].headers.Content-Type", "set by the bridge itself");
    EXPECT(&d, f, "webhooks[0].headers.Authorization", "credential");
    EXPECT(&d, f, "webhooks[0].headers.Bad Header", "not a valid HTTP header name");
    EXPECT(&d, f, "accounts[0]", "not both");
    EXPECT(&d, f, "accounts[1]", "has no credentials");
    EXPECT(&d, f, "accounts[2].fingerprint", "64 hex digits");
    EXPECT(&d, f, "accounts[2].fingerprint", "only applies with tls");
    EXPECT(&d, f, "accounts[2].auth", "set allow_plaintext: true");
    EXPECT(&d, f, "accounts[3].delete_after", "only applies with after_delivery \"keep\"");
    EXPECT(&d, f, "accounts[3].after_delivery", "no webhooks");
    EXPECT(&d, f, "accounts[4].password_file", "give only one of password_env, password_file");
    EXPECT(&d, f, "accounts[4].auth[0]", "\"xoauth2\" needs oauth2 credentials");
    EXPECT(&d, f, "accounts[5].oauth2", "has no token");
    EXPECT(&d, f, "accounts[5].fingerprint", "64 hex digits");
    EXPECT(&d, f, "accounts[6].delete_after", "no webhooks");
    assert_int_equal(d.count, 21);
    config_diag_free(&d);
}

static void oauth2_checks(void **state)
{
    (void)state;
    struct config_diag d = {0};
    const char *f = DATA "oauth2.json";
    load_bad("oauth2.json", &d);
    EXPECT(&d, f, "accounts[0].oauth2.client_id", "only applies with a provider");
    EXPECT(&d, f, "accounts[0].oauth2.client_secret_env", "only applies with a provider");
    EXPECT(&d, f, "accounts[1].oauth2.token_env", "does not go with provider \"microsoft\"");
    EXPECT(&d, f, "accounts[2].oauth2.client_id", "is required with provider \"google\"");
    EXPECT(&d, f, "accounts[3].oauth2.tenant", "only applies with provider \"microsoft\"");
    EXPECT(&d, f, "accounts[4].oauth2.tenant", "needs your own tenant");
    EXPECT(&d, f, "accounts[4].oauth2.flow", "client_credentials needs client_secret_env");
    EXPECT(&d, f, "accounts[5].oauth2.flow", "no client credentials flow");
    EXPECT(&d, f, "accounts[6].oauth2.device_authorization_url", "must start with https://");
    EXPECT(&d, f, "accounts[6].oauth2.token_url", "is required with provider \"custom\"");
    EXPECT(&d, f, "accounts[6].oauth2.authorization_url", "flow \"authorization_code\"");
    EXPECT(&d, f, "accounts[7].oauth2.tenant", "tenant id or domain");
    EXPECT(&d, f, "accounts[7].oauth2.token_url", "only applies with provider \"custom\"");
    EXPECT(&d, f, "accounts[8].oauth2.flow", "Google's device flow");
    EXPECT(&d, f, "accounts[9].oauth2.provider", "did you mean \"microsoft\"");
    EXPECT(&d, f, "accounts[9].oauth2.client_secret", "use client_secret_env");
    bool required = false;
    for (size_t i = 0; i < d.count; i++)
        required = required ||
                   strstr(d.lines[i], DATA "oauth2.json: secrets_key_env or secrets_key_file is "
                                       "required: accounts[1].oauth2 uses provider") == d.lines[i];
    if (!required) {
        dump(&d);
        fail_msg("no problem about the missing secrets key");
    }
    config_diag_free(&d);
}

static void oauth2_good(void **state)
{
    (void)state;
    struct config_diag d = {0};
    setenv("TEST_CFG_SECRETS_KEY", SECRETS_KEY, 1);
    setenv("TEST_CFG_CLIENT_SECRET", "client-secret-value", 1);
    struct config *cfg = config_load(DATA "oauth2_good.json", &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    assert_true(cfg->has_secrets_key);
    assert_int_equal(cfg->secrets_key_bytes[0], 0x00);
    assert_int_equal(cfg->secrets_key_bytes[5], 0x55);
    assert_int_equal(cfg->secrets_key_bytes[31], 0xff);
    const struct config_oauth2 *m = &cfg->accounts[0].oauth2;
    assert_int_equal(m->provider, CONFIG_OAUTH2_MICROSOFT);
    assert_int_equal(m->flow, CONFIG_FLOW_DEVICE_CODE);
    assert_string_equal(m->tenant, "organizations"); /* the default */
    assert_string_equal(m->client_secret.value, "client-secret-value");
    assert_ptr_equal(m->secrets_key, cfg->secrets_key_bytes);
    assert_int_equal(cfg->accounts[1].oauth2.flow, CONFIG_FLOW_CLIENT_CREDENTIALS);
    assert_int_equal(cfg->accounts[2].oauth2.provider, CONFIG_OAUTH2_GOOGLE);
    assert_null(cfg->accounts[2].oauth2.tenant);
    const struct config_oauth2 *c = &cfg->accounts[3].oauth2;
    assert_string_equal(c->token_url, "https://idp.example/token");
    assert_non_null(strstr(c->ca_file, "/tests/data/config/ca.pem"));
    /* a static token is not the bridge's to keep: no key pointer */
    assert_int_equal(cfg->accounts[4].oauth2.provider, CONFIG_OAUTH2_STATIC);
    assert_null(cfg->accounts[4].oauth2.secrets_key);
    assert_string_equal(config_oauth2_provider_name(CONFIG_OAUTH2_GOOGLE), "google");
    assert_string_equal(config_oauth2_flow_name(CONFIG_FLOW_CLIENT_CREDENTIALS),
                        "client_credentials");
    /* the summary names where secrets come from, never their values */
    char *out = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&out, &len);
    config_print_summary(cfg, mf);
    fclose(mf);
    assert_non_null(strstr(out, "secrets_key=env:TEST_CFG_SECRETS_KEY"));
    assert_non_null(strstr(out, "client_secret=env:TEST_CFG_CLIENT_SECRET"));
    assert_null(strstr(out, "client-secret-value"));
    assert_null(strstr(out, "00112233"));
    assert_null(strstr(out, "AABBCCDDEEFF"));
    free(out);
    config_free(&cfg);
    config_diag_free(&d);

    /* a bad key: one line naming the key and what is wrong, never the value */
    const char *bad[] = {"abc", SECRETS_KEY "00", "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"};
    const char *why[] = {"not 3 characters", "not 66 characters", "character 1 is not one"};
    for (size_t i = 0; i < 3; i++) {
        setenv("TEST_CFG_SECRETS_KEY", bad[i], 1);
        assert_null(config_load(DATA "oauth2_good.json", &d));
        assert_int_equal(d.count, 1);
        EXPECT(&d, DATA "oauth2_good.json", "secrets_key_env", why[i]);
        assert_null(strstr(d.lines[0], bad[i]));
        config_diag_free(&d);
    }
    unsetenv("TEST_CFG_SECRETS_KEY");
    assert_null(config_load(DATA "oauth2_good.json", &d));
    EXPECT(&d, DATA "oauth2_good.json", "secrets_key_env", "TEST_CFG_SECRETS_KEY is not set");
    config_diag_free(&d);
}

static void depth_cap(void **state)
{
    (void)state;
    struct config_diag d = {0};
    load_bad("deep.json", &d);
    assert_int_equal(d.count, 1);
    assert_string_equal(d.lines[0],
                        DATA "deep.json:2:30: nesting is deeper than 16 levels (CONFIG_DEPTH_MAX)");
    config_diag_free(&d);
}

static char *temp_file(const char *content, size_t len)
{
    char *path = strdup("/tmp/test_config_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, content + done, len - done);
        assert_true(w > 0);
        done += (size_t)w;
    }
    close(fd);
    return path;
}

/* "store": absent or "sqlite" is SQLite; an object names PostgreSQL, never
 * with a password in the file or the URL; the instance id follows it. */
static void store_key(void **state)
{
    (void)state;
    static const char *const ok_sqlite = "{\"state_dir\": \"/tmp/x\", \"store\": \"sqlite\"}";
    static const char *const ok_pg =
        "{\"state_dir\": \"/tmp/x\", \"api\": {\"listen\": \"127.0.0.1:9001\"},"
        " \"store\": {\"url\": \"postgresql://u@db.example/b?sslmode=verify-full\","
        " \"password_env\": \"T_STORE_PW\", \"pool\": 3, \"lease\": \"5s\"}}";
    static const char *const bad =
        "{\"state_dir\": \"/tmp/x\", \"store\": {\"url\": \"postgresql://u:hunter2@db/b\","
        " \"password\": \"x\", \"pool\": 0}}";
    static const char *const bad_word = "{\"state_dir\": \"/tmp/x\", \"store\": \"mysql\"}";
    setenv("T_STORE_PW", "pg-secret", 1);
    struct config_diag d = {0};
    char *p = temp_file(ok_sqlite, strlen(ok_sqlite));
    struct config *cfg = config_load(p, &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    assert_null(cfg->store.url);
    char id[CONFIG_INSTANCE_ID_MAX + 1], host[256];
    config_instance_id(cfg, id, sizeof id);
    assert_int_equal(gethostname(host, sizeof host), 0);
    assert_true(strncmp(id, host, strlen(id)) == 0);
    config_free(&cfg);
    unlink(p);
    free(p);
    p = temp_file(ok_pg, strlen(ok_pg));
    cfg = config_load(p, &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    assert_string_equal(cfg->store.url, "postgresql://u@db.example/b?sslmode=verify-full");
    assert_string_equal(cfg->store.password.value, "pg-secret");
    assert_int_equal(cfg->store.pool, 3);
    assert_int_equal(cfg->store.lease_ms, 5000);
    config_instance_id(cfg, id, sizeof id);
    assert_non_null(strstr(id, ":9001"));
    config_free(&cfg);
    unlink(p);
    free(p);
    p = temp_file(bad, strlen(bad));
    assert_null(config_load(p, &d));
    assert_true(has_problem(&d, p, "store.url", "holds a password"));
    assert_true(has_problem(&d, p, "store.password", "not accepted"));
    assert_true(has_problem(&d, p, "store.pool", ""));
    for (size_t i = 0; i < d.count; i++)
        assert_null(strstr(d.lines[i], "hunter2"));
    config_diag_free(&d);
    unlink(p);
    free(p);
    p = temp_file(bad_word, strlen(bad_word));
    assert_null(config_load(p, &d));
    assert_true(has_problem(&d, p, "store", "sqlite"));
    config_diag_free(&d);
    unlink(p);
    free(p);
}

static void size_cap_and_unreadable(void **state)
{
    (void)state;
    struct config_diag d = {0};
    size_t len = CONFIG_FILE_MAX + 1;
    char *big = malloc(len);
    memset(big, ' ', len);
    memcpy(big, "{\"state_dir\":\"/x\"}", 18);
    char *path = temp_file(big, len);
    assert_null(config_load(path, &d));
    assert_int_equal(d.count, 1);
    assert_non_null(strstr(d.lines[0], "larger than 1048576 bytes (CONFIG_FILE_MAX)"));
    config_diag_free(&d);
    unlink(path);
    free(path);

    /* exactly at the cap is fine */
    path = temp_file(big, CONFIG_FILE_MAX);
    struct config *cfg = config_load(path, &d);
    assert_non_null(cfg);
    config_free(&cfg);
    config_diag_free(&d);
    unlink(path);
    free(path);
    free(big);

    assert_null(config_load(DATA "no-such.json", &d));
    EXPECT(&d, DATA "no-such.json", "cannot open", "No such file or directory");
    config_diag_free(&d);
    assert_null(config_load(DATA, &d));
    assert_string_equal(d.lines[0], DATA ": not a regular file");
    config_diag_free(&d);

    /* a NUL byte, and a \u0000 escape, are refused with their position */
    path = temp_file("{\"state_dir\": \"/x\"}\n\0junk", 25);
    assert_null(config_load(path, &d));
    assert_non_null(strstr(d.lines[0], ":2:1: the file contains a NUL byte"));
    config_diag_free(&d);
    unlink(path);
    free(path);
    path = temp_file("{\"state_dir\": \"/x\\u0000y\"}", 26);
    assert_null(config_load(path, &d));
    assert_non_null(strstr(d.lines[0], ":1:18: \\u0000 is not allowed"));
    config_diag_free(&d);
    unlink(path);
    free(path);
}

/* Many problems are all collected, up to CONFIG_DIAG_MAX, the rest counted. */
static void diag_cap(void **state)
{
    (void)state;
    size_t cap = 64 + (CONFIG_DIAG_MAX + 50) * 16;
    char *text = malloc(cap);
    size_t n = (size_t)snprintf(text, cap, "{ \"state_dir\": \"/x\"");
    for (int i = 0; i < CONFIG_DIAG_MAX + 50; i++)
        n += (size_t)snprintf(text + n, cap - n, ", \"k%d\": 1", i);
    n += (size_t)snprintf(text + n, cap - n, "}");
    char *path = temp_file(text, n);
    struct config_diag d = {0};
    assert_null(config_load(path, &d));
    assert_int_equal(d.count, CONFIG_DIAG_MAX);
    assert_int_equal(d.dropped, 50);
    char *out = NULL;
    size_t olen = 0;
    FILE *f = open_memstream(&out, &olen);
    config_diag_print(&d, f);
    fclose(f);
    assert_non_null(strstr(out, "k0: unknown key\n"));
    assert_non_null(strstr(out, "... and 50 more problems not shown"));
    free(out);
    config_diag_free(&d);
    config_diag_free(&d); /* twice is harmless */
    config_diag_free(NULL);
    unlink(path);
    free(path);
    free(text);
}

/* Secrets can be read again; old values are replaced. */
static void resolve_again(void **state)
{
    (void)state;
    struct config_diag d = {0};
    struct config *cfg = config_load(DATA "minimal.json", &d);
    assert_non_null(cfg);
    setenv("TEST_CFG_PW", "rotated", 1);
    assert_int_equal(config_resolve_secrets(cfg, &d), 0);
    assert_string_equal(cfg->accounts[0].password.value, "rotated");
    unsetenv("TEST_CFG_PW");
    assert_int_equal(config_resolve_secrets(cfg, &d), 1);
    EXPECT(&d, DATA "minimal.json", "accounts[0].password_env", "is not set");
    assert_null(cfg->accounts[0].password.value);
    config_free(&cfg);
    config_diag_free(&d);
    set_env();
}

/* config_load_or_print: the configuration, or NULL with every problem printed;
 * the layout alone needs no secrets. */
static void load_or_print(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    struct config *cfg = config_load_or_print(DATA "minimal.json", false, out);
    assert_non_null(cfg);
    config_free(&cfg);
    assert_null(config_load_or_print(DATA "cross.json", false, out));
    unsetenv("TEST_CFG_PW");
    assert_null(config_load_or_print(DATA "minimal.json", false, out));
    cfg = config_load_or_print(DATA "minimal.json", true, out);
    assert_non_null(cfg);
    config_free(&cfg);
    fclose(out);
    assert_non_null(strstr(text, DATA "cross.json: "));
    assert_non_null(strstr(text, "accounts[0].password_env"));
    free(text);
    set_env();
}

static void check_main_exit_codes(void **state)
{
    (void)state;
    char *ok[] = {"check-config", DATA "minimal.json", NULL};
    char *bad[] = {"check-config", DATA "cross.json", NULL};
    char *usage[] = {"check-config", NULL};
    char *usage2[] = {"check-config", "a", "b", NULL};
    /* silence the output: stdout and stderr to /dev/null for the calls */
    fflush(stdout);
    fflush(stderr);
    int out = dup(1), err = dup(2);
    FILE *null = fopen("/dev/null", "w");
    dup2(fileno(null), 1);
    dup2(fileno(null), 2);
    int r1 = config_check_main(2, ok);
    int r2 = config_check_main(2, bad);
    int r3 = config_check_main(1, usage);
    int r4 = config_check_main(3, usage2);
    fflush(stdout);
    fflush(stderr);
    dup2(out, 1);
    dup2(err, 2);
    close(out);
    close(err);
    fclose(null);
    assert_int_equal(r1, 0);
    assert_int_equal(r2, 1);
    assert_int_equal(r3, 2);
    assert_int_equal(r4, 2);
}

/* A *_file of "${CREDENTIALS_DIRECTORY}/NAME" reads a credential systemd passes
 * with LoadCredential=; without the variable the key says what is missing. */
static void credentials_directory(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_config_creds_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char pw[sizeof dir + 8];
    snprintf(pw, sizeof pw, "%s/pw", dir);
    FILE *f = fopen(pw, "w");
    assert_non_null(f);
    fputs("from-credential\n", f);
    fclose(f);
    const char *json =
        "{ \"state_dir\": \"/var/lib/pop3bridge\", \"accounts\": ["
        " { \"name\": \"a\", \"host\": \"h\", \"username\": \"u\","
        "   \"password_file\": \"${CREDENTIALS_DIRECTORY}/pw\" },"
        " { \"name\": \"b\", \"host\": \"h\", \"username\": \"u\","
        "   \"password_file\": \"$CREDENTIALS_DIRECTORY/pw\" } ] }";
    char *path = temp_file(json, strlen(json));
    struct config_diag d = {0};

    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    struct config *cfg = config_load(path, &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(cfg->accounts[i].password.value, "from-credential");
        assert_string_equal(cfg->accounts[i].password.ref,
                            i == 0 ? "${CREDENTIALS_DIRECTORY}/pw" : "$CREDENTIALS_DIRECTORY/pw");
    }
    config_free(&cfg);
    config_diag_free(&d);

    unsetenv("CREDENTIALS_DIRECTORY");
    assert_null(config_load(path, &d));
    EXPECT(&d, path, "accounts[0].password_file", "CREDENTIALS_DIRECTORY is not set");
    EXPECT(&d, path, "accounts[1].password_file", "CREDENTIALS_DIRECTORY is not set");
    config_diag_free(&d);
    /* without reading secrets (store, export) the variable is not needed */
    cfg = config_load_layout(path, &d);
    assert_non_null(cfg);
    assert_null(cfg->accounts[0].password.value);
    assert_string_equal(cfg->state_dir, "/var/lib/pop3bridge");
    config_free(&cfg);
    config_diag_free(&d);

    setenv("CREDENTIALS_DIRECTORY", "relative/dir", 1);
    assert_null(config_load(path, &d));
    EXPECT(&d, path, "accounts[0].password_file", "not an absolute path");
    config_diag_free(&d);
    unsetenv("CREDENTIALS_DIRECTORY");

    unlink(pw);
    rmdir(dir);
    unlink(path);
    free(path);
}

/* accounts[].address (default: the username when it is an address) and
 * accounts[].trusted_authserv_ids (default []). */
static struct config *load_account(const char *extra, struct config_diag *d)
{
    char *json = g_strdup_printf("{ \"state_dir\": \"/var/lib/pop3bridge\", \"accounts\": [ { \"name\": \"a\", "
                                 "\"host\": \"pop.example.com\", \"password_env\": \"TEST_CFG_PW\", %s } ] }",
                                 extra);
    char *path = temp_file(json, strlen(json));
    struct config *cfg = config_load(path, d);
    unlink(path);
    free(path);
    g_free(json);
    return cfg;
}

static struct config *load_webhook(const char *extra, struct config_diag *d)
{
    char *json = g_strdup_printf("{ \"state_dir\": \"/var/lib/pop3bridge\", \"webhooks\": [ { "
                                 "\"name\": \"w\", \"secret_env\": \"TEST_CFG_WHSEC\", %s } ] }",
                                 extra);
    char *path = temp_file(json, strlen(json));
    struct config *cfg = config_load(path, d);
    unlink(path);
    free(path);
    g_free(json);
    return cfg;
}

static void webhook_credentials_and_rotation(void **state)
{
    (void)state;
    struct config_diag d = {0};
    setenv("TEST_CFG_HEADERS", "# comment\nX-API-Key: k-123\r\n\nX-Tenant:acme  \n", 1);
    setenv("TEST_CFG_WHSEC2", WHSEC_32 " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBBBBBBBBBBA=", 1);
    struct config *cfg = load_webhook(
        "\"url\": \"https://n8n.example/webhook/x\", \"auth\": {\"basic\": {\"username\": "
        "\"bot\", \"password_env\": \"TEST_CFG_PW\"}}, \"headers_env\": \"TEST_CFG_HEADERS\", "
        "\"proxy\": \"http://proxy.example:3128\"",
        &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    const struct config_webhook *w = &cfg->webhooks[0];
    assert_true(w->auth.present && w->auth.basic.present);
    assert_string_equal(w->auth.basic.username, "bot");
    assert_string_equal(w->auth.basic.password.value, "pw-from-env");
    assert_int_equal(w->secret_header_count, 2);
    assert_string_equal(w->secret_headers[0].name, "X-API-Key");
    assert_string_equal(w->secret_headers[0].value, "k-123");
    assert_string_equal(w->secret_headers[1].name, "X-Tenant");
    assert_string_equal(w->secret_headers[1].value, "acme");
    assert_string_equal(w->proxy, "http://proxy.example:3128");
    assert_int_equal(w->key_count, 1);
    assert_true(w->key == w->keys[0] && w->key_len == 32);
    char *sum = summary_of(cfg);
    assert_null(strstr(sum, "k-123"));
    assert_null(strstr(sum, "pw-from-env"));
    assert_non_null(strstr(sum, "headers=env:TEST_CFG_HEADERS"));
    free(sum);
    config_free(&cfg);

    /* two secrets while rotating: two keys, in order */
    cfg = load_webhook("\"url\": \"https://a.example/\", \"auth\": {\"bearer_env\": "
                       "\"TEST_CFG_TOKEN\"}, \"secret_env\": \"TEST_CFG_WHSEC2\"",
                       &d);
    /* secret_env given twice in the object: the second is a duplicate key */
    assert_null(cfg);
    assert_true(diag_contains(&d, "webhooks[0].secret_env: is given twice"));
    config_diag_free(&d);
    setenv("TEST_CFG_WHSEC", WHSEC_32 "  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBBBBBBBBBBA=", 1);
    cfg = load_webhook("\"url\": \"https://a.example/\", \"auth\": {\"bearer_env\": "
                       "\"TEST_CFG_TOKEN\"}",
                       &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    w = &cfg->webhooks[0];
    assert_int_equal(w->key_count, 2);
    assert_int_equal(w->key_lens[1], 32);
    assert_memory_not_equal(w->keys[0], w->keys[1], 32);
    assert_string_equal(w->auth.bearer.value, "token-from-env");
    config_free(&cfg);

    /* problems, each at its key path, never quoting a secret */
    setenv("TEST_CFG_WHSEC", WHSEC_32 " whsec_!!", 1);
    setenv("TEST_CFG_HEADERS", "X-API-Key: k-123\nContent-Type: text/plain\nno colon here\n"
                               "x-api-key: again\nAuthorization: Token k-456\n", 1);
    cfg = load_webhook("\"url\": \"http://a.example/\", \"auth\": {\"bearer_env\": "
                       "\"TEST_CFG_TOKEN\"}, \"headers_env\": \"TEST_CFG_HEADERS\", "
                       "\"client_cert_file\": \"/etc/c.pem\", \"proxy\": \"https://p.example:3128\"",
                       &d);
    assert_null(cfg);
    if (!diag_contains(&d, "webhooks[0].auth: credentials would be sent in clear") ||
        !diag_contains(&d, "webhooks[0].headers_env: secret headers would be sent in clear") ||
        !diag_contains(&d, "webhooks[0].client_cert_file: only applies to an https:// url") ||
        !diag_contains(&d, "webhooks[0].proxy: must be an http:// proxy") ||
        !diag_contains(&d, "webhooks[0].secret_env: secret 2 of 2: the part after") ||
        !diag_contains(&d, "webhooks[0].headers_env: line 2: Content-Type is set by the bridge") ||
        !diag_contains(&d, "webhooks[0].headers_env: line 3 is not \"Name: value\"") ||
        !diag_contains(&d, "webhooks[0].headers_env: line 4: x-api-key is given twice") ||
        !diag_contains(&d, "webhooks[0].headers_env: line 5: Authorization is already set by auth")) {
        dump(&d);
        fail_msg("diagnostics for webhook credentials");
    }
    for (size_t i = 0; i < d.count; i++)
        assert_null(strstr(d.lines[i], "k-123"));
    config_diag_free(&d);
    setenv("TEST_CFG_WHSEC", WHSEC_32, 1);
    cfg = load_webhook("\"url\": \"http://a.example/\", \"allow_plaintext_credentials\": true, "
                       "\"auth\": {\"basic\": {\"username\": \"a:b\"}}",
                       &d);
    assert_null(cfg);
    if (!diag_contains(&d, "webhooks[0].auth.basic.username: must not contain ':'") ||
        !diag_contains(&d, "webhooks[0].auth.basic: has no password")) {
        dump(&d);
        fail_msg("diagnostics for basic auth");
    }
    config_diag_free(&d);
    unsetenv("TEST_CFG_HEADERS");
    unsetenv("TEST_CFG_WHSEC2");
}

static void account_address_and_authserv_ids(void **state)
{
    (void)state;
    struct config_diag d = {0};
    struct config *cfg = load_account("\"username\": \"Support@Example.com\"", &d);
    assert_non_null(cfg);
    assert_string_equal(cfg->accounts[0].address, "Support@Example.com");
    assert_int_equal(cfg->accounts[0].trusted_authserv_id_count, 0);
    config_free(&cfg);
    cfg = load_account("\"username\": \"u12345\"", &d);
    assert_non_null(cfg);
    assert_null(cfg->accounts[0].address);
    config_free(&cfg);
    cfg = load_account("\"username\": \"u12345\", \"address\": \"help@example.com\", "
                       "\"trusted_authserv_ids\": [\"mx.example.com\", \"mx2.example.com\"]",
                       &d);
    assert_non_null(cfg);
    assert_string_equal(cfg->accounts[0].address, "help@example.com");
    assert_int_equal(cfg->accounts[0].trusted_authserv_id_count, 2);
    assert_string_equal(cfg->accounts[0].trusted_authserv_ids[1], "mx2.example.com");
    config_free(&cfg);
    assert_int_equal(d.count, 0);
    /* bad values, each named by its key path */
    cfg = load_account("\"username\": \"u\", \"address\": \"not an address\", "
                       "\"trusted_authserv_ids\": [\"mx.example.com\", \"a; b\", \"\"]",
                       &d);
    assert_null(cfg);
    if (!diag_contains(&d, "accounts[0].address: \"not an address\" is not an address") ||
        !diag_contains(&d, "accounts[0].trusted_authserv_ids[1]: \"a; b\" is not an authserv-id") ||
        !diag_contains(&d, "accounts[0].trusted_authserv_ids[2]")) {
        dump(&d);
        fail_msg("diagnostics for address / trusted_authserv_ids");
    }
    config_diag_free(&d);
    cfg = load_account("\"username\": \"u\", \"trusted_authserv_ids\": \"mx.example.com\"", &d);
    assert_null(cfg);
    config_diag_free(&d);
}
/* The loader asks perms.h about the file, the state_dir and every secret
 * file: each finding is one problem under its key, the override accepts. */
static void permissions_checked(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_config_perms_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cfgp[128], pw[128], st[128], text[512];
    snprintf(pw, sizeof pw, "%s/pw", dir);
    snprintf(st, sizeof st, "%s/state", dir);
    snprintf(cfgp, sizeof cfgp, "%s/c.json", dir);
    snprintf(text, sizeof text,
             "{\"state_dir\": \"state\", \"webhooks\": [], \"accounts\": [{\"name\": \"a\", "
             "\"host\": \"127.0.0.1\", \"username\": \"u\", \"password_file\": \"pw\"}]}");
    FILE *f = fopen(cfgp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    f = fopen(pw, "w");
    assert_non_null(f);
    fputs("very-secret-pw\n", f);
    fclose(f);
    assert_int_equal(mkdir(st, 0700), 0);
    assert_int_equal(chmod(cfgp, 0644), 0);
    assert_int_equal(chmod(pw, 0666), 0);
    assert_int_equal(chmod(st, 0755), 0);

    perms_allow_insecure(false);
    struct config_diag d = {0};
    struct config *cfg = config_load(cfgp, &d);
    assert_null(cfg);
    assert_int_equal(d.count, 3);
    EXPECT(&d, cfgp, "state_dir", "is open to every user");
    EXPECT(&d, cfgp, "accounts[0].password_file", "is writable by every user (mode 0666");
    assert_true(diag_contains(&d, "is readable by every user (mode 0644"));
    assert_false(diag_contains(&d, "very-secret-pw"));
    config_diag_free(&d);

    perms_allow_insecure(true); /* warnings instead */
    cfg = config_load(cfgp, &d);
    assert_non_null(cfg);
    assert_int_equal(d.count, 0);
    config_free(&cfg);

    perms_allow_insecure(false); /* fixed: loads */
    assert_int_equal(chmod(cfgp, 0600), 0);
    assert_int_equal(chmod(pw, 0600), 0);
    assert_int_equal(chmod(st, 0700), 0);
    cfg = config_load(cfgp, &d);
    if (!cfg)
        dump(&d);
    assert_non_null(cfg);
    assert_string_equal(cfg->accounts[0].password.value, "very-secret-pw");
    config_free(&cfg);
    config_diag_free(&d);
    perms_allow_insecure(true);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    umask(077); /* the configs and secret files written here are 0600: perms.h refuses others */
    /* the fixtures in tests/data/config/ have the checkout's modes (0644):
     * these tests are about parsing; permissions_checked() turns it off */
    perms_allow_insecure(true);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(minimal_defaults, setup),
        cmocka_unit_test_setup(full_every_key, setup),
        cmocka_unit_test_setup(comments_and_strings, setup),
        cmocka_unit_test_setup(shipped_configs, setup),
        cmocka_unit_test_setup(example_documents_every_key, setup),
        cmocka_unit_test_setup(syntax_error_position, setup),
        cmocka_unit_test_setup(unknown_keys, setup),
        cmocka_unit_test_setup(wrong_types, setup),
        cmocka_unit_test_setup(bad_durations_and_sizes, setup),
        cmocka_unit_test_setup(duplicate_names, setup),
        cmocka_unit_test_setup(dangling_webhook, setup),
        cmocka_unit_test_setup(literal_secrets_refused, setup),
        cmocka_unit_test_setup(missing_secrets, setup),
        cmocka_unit_test_setup(webhook_secret_format, setup),
        cmocka_unit_test_setup(secret_commands, setup),
        cmocka_unit_test_setup(cross_key_checks, setup),
        cmocka_unit_test_setup(oauth2_checks, setup),
        cmocka_unit_test_setup(oauth2_good, setup),
        cmocka_unit_test_setup(depth_cap, setup),
        cmocka_unit_test_setup(size_cap_and_unreadable, setup),
        cmocka_unit_test_setup(diag_cap, setup),
        cmocka_unit_test_setup(resolve_again, setup),
        cmocka_unit_test_setup(load_or_print, setup),
        cmocka_unit_test_setup(check_main_exit_codes, setup),
        cmocka_unit_test_setup(credentials_directory, setup),
        cmocka_unit_test_setup(account_address_and_authserv_ids, setup),
        cmocka_unit_test_setup(store_key, setup),
        cmocka_unit_test_setup(webhook_credentials_and_rotation, setup),
        cmocka_unit_test_setup(permissions_checked, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
