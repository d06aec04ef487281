/* config_tables — every key of every configuration object; see config_impl.h.
 * Part of the config module: its tests are in tests/unit/test_config.c. */
#include "config_impl.h"

#include "config.h"

#include "codec.h"
#include "filter.h"
#include "secretbox.h"
#include "secrets.h"

#include "units.h"
#include "url.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the tables ----------------------------------------------------------- */

const char *const cfg_type_names[] = {
    [T_STRING] = "string",   [T_NAME] = "name",           [T_PATH] = "path",
    [T_ENUM] = "enum",       [T_DURATION] = "duration",   [T_SIZE] = "size",
    [T_INT] = "int",         [T_BOOL] = "bool",           [T_TRIBOOL] = "bool",           [T_STRLIST] = "string-list",
    [T_NAMELIST] = "name-list", [T_ENUMLIST] = "enum-list", [T_DURLIST] = "duration-list",
    [T_HEADERS] = "object",  [T_SECRET] = "secret-source", [T_REFUSED] = "refused",
    [T_OBJECT] = "object",   [T_OBJARRAY] = "object-list",
};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_formats[] = {"text", "json", "journal", NULL};
static const char *const tls_modes[] = {"implicit", "starttls", "none", NULL};
static const char *const start_modes[] = {"new", "all", NULL};
static const char *const after_modes[] = {"keep", "delete", NULL};
const char *const cfg_oauth2_providers[] = {"static", "microsoft", "google", "custom", NULL};
const char *const cfg_oauth2_flows[] = {"device_code", "authorization_code",
                                           "client_credentials", NULL};
const char *const cfg_auth_names[] = {"user",        "apop",          "plain",
                                         "login",       "cram-md5",      "scram-sha-1",
                                         "scram-sha-256", "xoauth2",     "oauthbearer", NULL};


static const struct opt token_opts[] = {
    {.name = "name", .type = T_NAME, .flags = F_REQUIRED, FIELD(config_token, name)},
    {.name = "token_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV, FIELD(config_token, token)},
    {.name = "token_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE, FIELD(config_token, token)},
    {.name = "token", .type = T_REFUSED, .hint = "token_env or token_file", FIELD(config_token, token)},
};
static const struct table token_table = {"token", token_opts, COUNT(token_opts),
                                         sizeof(struct config_token), NO_OFF, cfg_check_token};

static const struct opt api_opts[] = {
    {.name = "listen", .type = T_STRING, .def = "\"127.0.0.1:8025\"", .min = 1, .max = 300,
     FIELD(config_api, listen)},
    {.name = "public_url", .type = T_STRING, .min = 1, .max = 2048, FIELD(config_api, public_url)},
    {.name = "tokens", .type = T_OBJARRAY, .sub = &token_table, .max_items = CONFIG_TOKENS_MAX,
     LIST(config_api, tokens, token_count)},
    {.name = "cors_origins", .type = T_STRLIST, .min = 1, .max = 300, .max_items = CONFIG_LIST_MAX,
     LIST(config_api, cors_origins, cors_origin_count)},
    {.name = "sessions_per_account", .type = T_INT, .def = "4", .min = 1, .max = 64,
     FIELD(config_api, sessions_per_account)},
    {.name = "sessions_total", .type = T_INT, .def = "64", .min = 1, .max = 4096,
     FIELD(config_api, sessions_total)},
    {.name = "session_idle_timeout", .type = T_DURATION, .def = "\"60s\"", .min = MS_S, .max = MS_D,
     FIELD(config_api, session_idle_timeout_ms)},
    {.name = "max_request_body", .type = T_SIZE, .def = "\"1MiB\"", .min = KIB, .max = 64 * MIB,
     FIELD(config_api, max_request_body)},
    {.name = "max_url_length", .type = T_INT, .def = "8192", .min = 256, .max = 65536,
     FIELD(config_api, max_url_length)},
    {.name = "request_timeout", .type = T_DURATION, .def = "\"30s\"", .min = MS_S, .max = MS_H,
     FIELD(config_api, request_timeout_ms)},
    {.name = "request_read_timeout", .type = T_DURATION, .def = "\"10s\"", .min = MS_S,
     .max = MS_H, FIELD(config_api, request_read_timeout_ms)},
    {.name = "max_connections", .type = T_INT, .def = "1024", .min = 1, .max = 10000,
     FIELD(config_api, max_connections)},
    {.name = "max_connections_per_client", .type = T_INT, .def = "64", .min = 1, .max = 10000,
     FIELD(config_api, max_connections_per_client)},
    {.name = "threads", .type = T_INT, .def = "4", .min = 1, .max = 64,
     FIELD(config_api, threads)},
    {.name = "mailbox_workers", .type = T_INT, .def = "16", .min = 1, .max = 256,
     FIELD(config_api, mailbox_workers)},
    {.name = "web_dir", .type = T_PATH, .min = 1, .max = PATH_MAX, FIELD(config_api, web_dir)},
};
static const struct table api_table = {"api", api_opts, COUNT(api_opts), sizeof(struct config_api),
                                       NO_OFF, cfg_check_api};

static const struct opt store_opts[] = {
    {.name = "url", .type = T_STRING, .min = 14, .max = 1024, FIELD(config_store, url)},
    {.name = "password_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV,
     FIELD(config_store, password)},
    {.name = "password_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE,
     FIELD(config_store, password)},
    {.name = "password", .type = T_REFUSED, .hint = "password_env or password_file",
     FIELD(config_store, password)},
    {.name = "pool", .type = T_INT, .def = "8", .min = 1, .max = 256, FIELD(config_store, pool)},
    {.name = "lease", .type = T_DURATION, .def = "\"30s\"", .min = MS_S, .max = MS_H,
     FIELD(config_store, lease_ms)},
    {.name = "instance_id", .type = T_STRING, .min = 1, .max = 64,
     FIELD(config_store, instance_id)},
};
static const struct table store_table = {"store", store_opts, COUNT(store_opts),
                                         sizeof(struct config_store), NO_OFF, cfg_check_store};
static const char *const store_words[] = {"sqlite", NULL};
static const struct opt webhook_basic_opts[] = {
    {.name = "username", .type = T_STRING, .flags = F_REQUIRED, .min = 1, .max = 255,
     FIELD(config_webhook_basic, username)},
    {.name = "password_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV,
     FIELD(config_webhook_basic, password)},
    {.name = "password_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE,
     FIELD(config_webhook_basic, password)},
    {.name = "password", .type = T_REFUSED, .hint = "password_env or password_file",
     FIELD(config_webhook_basic, password)},
};
static const struct table webhook_basic_table = {
    "basic", webhook_basic_opts, COUNT(webhook_basic_opts), sizeof(struct config_webhook_basic),
    offsetof(struct config_webhook_basic, present), cfg_check_webhook_basic};

static const struct opt webhook_auth_opts[] = {
    {.name = "basic", .type = T_OBJECT, .sub = &webhook_basic_table,
     FIELD(config_webhook_auth, basic)},
    {.name = "bearer_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV,
     FIELD(config_webhook_auth, bearer)},
    {.name = "bearer_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE,
     FIELD(config_webhook_auth, bearer)},
    {.name = "bearer", .type = T_REFUSED, .hint = "bearer_env or bearer_file",
     FIELD(config_webhook_auth, bearer)},
};
static const struct table webhook_auth_table = {
    "auth", webhook_auth_opts, COUNT(webhook_auth_opts), sizeof(struct config_webhook_auth),
    offsetof(struct config_webhook_auth, present), cfg_check_webhook_auth};

static const struct opt filter_opts[] = {
    {.name = "types", .type = T_ENUMLIST, .values = filter_event_types, .max_items = 8,
     LIST(config_filter, types, type_count)},
    {.name = "to", .type = T_STRLIST, .min = 1, .max = FILTER_PATTERN_MAX,
     .max_items = FILTER_PATTERNS_MAX, LIST(config_filter, to, to_count)},
    {.name = "from", .type = T_STRLIST, .min = 1, .max = FILTER_PATTERN_MAX,
     .max_items = FILTER_PATTERNS_MAX, LIST(config_filter, from, from_count)},
    {.name = "subject", .type = T_STRING, .min = 1, .max = FILTER_PATTERN_MAX,
     FIELD(config_filter, subject)},
    {.name = "headers", .type = T_HEADERS, .flags = F_ANY_HEADER, .max_items = CONFIG_HEADERS_MAX,
     .min = 1, .max = FILTER_PATTERN_MAX, LIST(config_filter, headers, header_count)},
    {.name = "has_attachments", .type = T_TRIBOOL, FIELD(config_filter, has_attachments)},
    {.name = "exclude_auto_replies", .type = T_BOOL, .def = "false",
     FIELD(config_filter, exclude_auto_replies)},
};
static const struct table filter_table = {"filter", filter_opts, COUNT(filter_opts),
                                          sizeof(struct config_filter),
                                          offsetof(struct config_filter, present), cfg_check_filter};

static const char *const include_names[] = {"text", "html", "headers", "attachments", "raw_url",
                                            NULL};
static const char *const header_words[] = {"all", "none", NULL};
static const struct opt payload_opts[] = {
    {.name = "include", .type = T_ENUMLIST, .values = include_names, .max_items = 5,
     .def = "[\"text\",\"html\",\"headers\",\"attachments\",\"raw_url\"]",
     LIST(config_payload, include, include_count)},
    {.name = "text_max", .type = T_SIZE, .def = "0", .min = 0, .max = 4 * MIB,
     FIELD(config_payload, text_max)},
    {.name = "headers", .type = T_STRLIST, .flags = F_OR_WORD, .values = header_words,
     .def = "\"all\"", .min = 1, .max = 100, .max_items = CONFIG_PAYLOAD_HEADERS_MAX,
     LIST(config_payload, headers, header_count)},
};
static const struct table payload_table = {"payload", payload_opts, COUNT(payload_opts),
                                           sizeof(struct config_payload),
                                           offsetof(struct config_payload, present), cfg_check_payload};

static const struct opt webhook_opts[] = {
    {.name = "name", .type = T_NAME, .flags = F_REQUIRED, FIELD(config_webhook, name)},
    {.name = "url", .type = T_STRING, .flags = F_REQUIRED, .min = 1, .max = 2048,
     FIELD(config_webhook, url)},
    {.name = "secret_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV, FIELD(config_webhook, secret)},
    {.name = "secret_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE, FIELD(config_webhook, secret)},
    {.name = "secret", .type = T_REFUSED, .hint = "secret_env or secret_file",
     FIELD(config_webhook, secret)},
    {.name = "timeout", .type = T_DURATION, .def = "\"15s\"", .min = MS_S, .max = 10 * MS_M,
     FIELD(config_webhook, timeout_ms)},
    {.name = "retry_schedule", .type = T_DURLIST,
     .def = "[\"5s\",\"30s\",\"2m\",\"10m\",\"30m\",\"1h\",\"2h\",\"4h\",\"8h\",\"16h\"]",
     .min = MS_S, .max = 7 * MS_D, .max_items = CONFIG_RETRY_MAX,
     LIST(config_webhook, retry_ms, retry_count)},
    {.name = "inline_attachments_max", .type = T_SIZE, .def = "\"256KiB\"", .min = 0, .max = 16 * MIB,
     FIELD(config_webhook, inline_attachments_max)},
    {.name = "inline_total_max", .type = T_SIZE, .def = "\"1MiB\"", .min = 0, .max = 64 * MIB,
     FIELD(config_webhook, inline_total_max)},
    {.name = "max_in_flight", .type = T_INT, .def = "8", .min = 1, .max = 64,
     FIELD(config_webhook, max_in_flight)},
    {.name = "headers", .type = T_HEADERS, .max_items = CONFIG_HEADERS_MAX, .min = 0, .max = 1024,
     LIST(config_webhook, headers, header_count)},
    {.name = "filter", .type = T_OBJECT, .sub = &filter_table, FIELD(config_webhook, filter)},
    {.name = "payload", .type = T_OBJECT, .sub = &payload_table, FIELD(config_webhook, payload)},
    {.name = "auth", .type = T_OBJECT, .sub = &webhook_auth_table, FIELD(config_webhook, auth)},
    {.name = "headers_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV, .flags = F_MULTILINE,
     FIELD(config_webhook, headers_secret)},
    {.name = "headers_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE, .flags = F_MULTILINE,
     FIELD(config_webhook, headers_secret)},
    {.name = "allow_plaintext_credentials", .type = T_BOOL, .def = "false",
     FIELD(config_webhook, allow_plaintext_credentials)},
    {.name = "ca_file", .type = T_PATH, .min = 1, .max = PATH_MAX, FIELD(config_webhook, ca_file)},
    {.name = "client_cert_file", .type = T_PATH, .min = 1, .max = PATH_MAX,
     FIELD(config_webhook, client_cert_file)},
    {.name = "client_key_file", .type = T_PATH, .min = 1, .max = PATH_MAX,
     FIELD(config_webhook, client_key_file)},
    {.name = "proxy", .type = T_STRING, .min = 1, .max = 2048, FIELD(config_webhook, proxy)},
};
static const struct table webhook_table = {"webhook", webhook_opts, COUNT(webhook_opts),
                                           sizeof(struct config_webhook), NO_OFF, cfg_check_webhook};

static const struct opt oauth2_opts[] = {
    {.name = "provider", .type = T_ENUM, .def = "\"static\"", .values = cfg_oauth2_providers,
     FIELD(config_oauth2, provider)},
    {.name = "token_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV, FIELD(config_oauth2, token)},
    {.name = "token_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE, FIELD(config_oauth2, token)},
    {.name = "token_command", .type = T_SECRET, .src = CONFIG_SECRET_COMMAND,
     FIELD(config_oauth2, token)},
    {.name = "token", .type = T_REFUSED, .hint = "token_env, token_file or token_command",
     FIELD(config_oauth2, token)},
    {.name = "tenant", .type = T_STRING, .min = 1, .max = 128, FIELD(config_oauth2, tenant)},
    {.name = "flow", .type = T_ENUM, .def = "\"device_code\"", .values = cfg_oauth2_flows,
     FIELD(config_oauth2, flow)},
    {.name = "client_id", .type = T_STRING, .min = 1, .max = 256, FIELD(config_oauth2, client_id)},
    {.name = "client_secret_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV,
     FIELD(config_oauth2, client_secret)},
    {.name = "client_secret_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE,
     FIELD(config_oauth2, client_secret)},
    {.name = "client_secret_command", .type = T_SECRET, .src = CONFIG_SECRET_COMMAND,
     FIELD(config_oauth2, client_secret)},
    {.name = "client_secret", .type = T_REFUSED,
     .hint = "client_secret_env, client_secret_file or client_secret_command",
     FIELD(config_oauth2, client_secret)},
    {.name = "scope", .type = T_STRING, .min = 1, .max = 1024, FIELD(config_oauth2, scope)},
    {.name = "token_url", .type = T_STRING, .min = 1, .max = 2048, FIELD(config_oauth2, token_url)},
    {.name = "device_authorization_url", .type = T_STRING, .min = 1, .max = 2048,
     FIELD(config_oauth2, device_authorization_url)},
    {.name = "authorization_url", .type = T_STRING, .min = 1, .max = 2048,
     FIELD(config_oauth2, authorization_url)},
    {.name = "ca_file", .type = T_PATH, .min = 1, .max = PATH_MAX, FIELD(config_oauth2, ca_file)},
};
static const struct table oauth2_table = {"oauth2", oauth2_opts, COUNT(oauth2_opts),
                                          sizeof(struct config_oauth2),
                                          offsetof(struct config_oauth2, present), cfg_check_oauth2};

static const char *const dedupe_by[] = {"message_id", NULL};
static const struct opt dedupe_opts[] = {
    {.name = "by", .type = T_ENUM, .def = "\"message_id\"", .values = dedupe_by,
     FIELD(config_dedupe, by)},
    {.name = "window", .type = T_DURATION, .def = "\"30d\"", .min = MS_M, .max = 3650 * MS_D,
     FIELD(config_dedupe, window_ms)},
};
static const struct table dedupe_table = {"dedupe", dedupe_opts, COUNT(dedupe_opts),
                                          sizeof(struct config_dedupe),
                                          offsetof(struct config_dedupe, present), NULL};

static const struct opt account_opts[] = {
    {.name = "name", .type = T_NAME, .flags = F_REQUIRED, FIELD(config_account, name)},
    {.name = "host", .type = T_STRING, .flags = F_REQUIRED, .min = 1, .max = 253,
     FIELD(config_account, host)},
    {.name = "port", .type = T_INT, .min = 1, .max = 65535, FIELD(config_account, port)},
    {.name = "tls", .type = T_ENUM, .def = "\"implicit\"", .values = tls_modes,
     FIELD(config_account, tls)},
    {.name = "username", .type = T_STRING, .flags = F_REQUIRED, .min = 1, .max = 255,
     FIELD(config_account, username)},
    {.name = "password_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV,
     FIELD(config_account, password)},
    {.name = "password_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE,
     FIELD(config_account, password)},
    {.name = "password_command", .type = T_SECRET, .src = CONFIG_SECRET_COMMAND,
     FIELD(config_account, password)},
    {.name = "password", .type = T_REFUSED, .hint = "password_env, password_file or password_command",
     FIELD(config_account, password)},
    {.name = "oauth2", .type = T_OBJECT, .sub = &oauth2_table, FIELD(config_account, oauth2)},
    {.name = "auth", .type = T_ENUMLIST, .values = cfg_auth_names, .max_items = CONFIG_LIST_MAX,
     LIST(config_account, auth, auth_count)},
    {.name = "ca_file", .type = T_PATH, .min = 1, .max = PATH_MAX, FIELD(config_account, ca_file)},
    {.name = "fingerprint", .type = T_STRING, .min = 1, .max = 100, FIELD(config_account, fingerprint)},
    {.name = "allow_plaintext", .type = T_BOOL, .def = "false", FIELD(config_account, allow_plaintext)},
    {.name = "timeout", .type = T_DURATION, .def = "\"60s\"", .min = MS_S, .max = 10 * MS_M,
     FIELD(config_account, timeout_ms)},
    {.name = "session_timeout", .type = T_DURATION, .def = "\"10m\"", .min = 10 * MS_S,
     .max = 7 * MS_D, FIELD(config_account, session_timeout_ms)},
    {.name = "poll_interval", .type = T_DURATION, .def = "\"60s\"", .min = MS_S, .max = 7 * MS_D,
     FIELD(config_account, poll_interval_ms)},
    {.name = "start", .type = T_ENUM, .def = "\"new\"", .values = start_modes,
     FIELD(config_account, start)},
    {.name = "after_delivery", .type = T_ENUM, .def = "\"keep\"", .values = after_modes,
     FIELD(config_account, after_delivery)},
    {.name = "delete_after", .type = T_DURATION, .min = MS_M, .max = 3650 * MS_D,
     FIELD(config_account, delete_after_ms)},
    {.name = "max_message_size", .type = T_SIZE, .def = "\"25MiB\"", .min = KIB, .max = 4 * GIB,
     FIELD(config_account, max_message_size)},
    {.name = "max_messages_per_poll", .type = T_INT, .def = "500", .min = 1, .max = 100000,
     FIELD(config_account, max_messages_per_poll)},
    {.name = "webhooks", .type = T_NAMELIST, .max_items = CONFIG_LIST_MAX,
     LIST(config_account, webhooks, webhook_count)},
    {.name = "address", .type = T_STRING, .min = 3, .max = CONFIG_ADDRESS_MAX,
     FIELD(config_account, address)},
    {.name = "trusted_authserv_ids", .type = T_STRLIST, .min = 1, .max = CONFIG_AUTHSERV_ID_MAX,
     .max_items = CONFIG_LIST_MAX, LIST(config_account, trusted_authserv_ids, trusted_authserv_id_count)},
    {.name = "dedupe", .type = T_OBJECT, .sub = &dedupe_table, FIELD(config_account, dedupe)},
};
static const struct table account_table = {"account", account_opts, COUNT(account_opts),
                                           sizeof(struct config_account), NO_OFF, cfg_check_account};

static const struct opt root_opts[] = {
    {.name = "state_dir", .type = T_PATH, .flags = F_REQUIRED, .min = 1, .max = PATH_MAX,
     FIELD(config, state_dir)},
    {.name = "log_level", .type = T_ENUM, .def = "\"info\"", .values = log_levels,
     FIELD(config, log_level)},
    {.name = "log_format", .type = T_ENUM, .def = "\"text\"", .values = log_formats,
     FIELD(config, log_format)},
    {.name = "retention", .type = T_DURATION, .def = "\"30d\"", .min = MS_M, .max = 3650 * MS_D,
     FIELD(config, retention_ms)},
    {.name = "secret_command_timeout", .type = T_DURATION, .def = "\"10s\"", .min = 100,
     .max = 5 * MS_M, FIELD(config, secret_command_timeout_ms)},
    {.name = "links_ttl", .type = T_DURATION, .def = "\"7d\"", .min = MS_M, .max = 365 * MS_D,
     FIELD(config, links_ttl_ms)},
    {.name = "secrets_key_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV,
     FIELD(config, secrets_key)},
    {.name = "secrets_key_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE,
     FIELD(config, secrets_key)},
    {.name = "secrets_key", .type = T_REFUSED, .hint = "secrets_key_env or secrets_key_file",
     FIELD(config, secrets_key)},
    {.name = "api", .type = T_OBJECT, .sub = &api_table, FIELD(config, api)},
    {.name = "store", .type = T_OBJECT, .flags = F_WORD_DEFAULTS, .values = store_words,
     .sub = &store_table, FIELD(config, store)},
    {.name = "webhooks", .type = T_OBJARRAY, .sub = &webhook_table, .max_items = CONFIG_WEBHOOKS_MAX,
     LIST(config, webhooks, webhook_count)},
    {.name = "accounts", .type = T_OBJARRAY, .sub = &account_table, .max_items = CONFIG_ACCOUNTS_MAX,
     LIST(config, accounts, account_count)},
};
const struct table cfg_root_table = {"config", root_opts, COUNT(root_opts), sizeof(struct config),
                                        NO_OFF, cfg_check_root};

const char *config_oauth2_provider_name(enum config_oauth2_provider p)
{
    return (size_t)p < COUNT(cfg_oauth2_providers) - 1 ? cfg_oauth2_providers[p] : "unknown";
}

const char *config_oauth2_flow_name(enum config_oauth2_flow f)
{
    return (size_t)f < COUNT(cfg_oauth2_flows) - 1 ? cfg_oauth2_flows[f] : "unknown";
}
