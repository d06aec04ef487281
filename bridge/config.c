/*
 * config — the configuration file; see include/config.h.
 *
 * One table per kind of object (the file, "api", an API token, a webhook, an
 * account, an account's "oauth2") lists every key with its type, the field it
 * fills, its default (as JSON text, parsed by the same code as the file) and
 * its bounds.  The same tables drive parsing, the messages, the summary,
 * config_print_keys(), secret resolution and config_free().  What one key
 * cannot say alone (port depends on tls, names must be unique, an account's
 * webhooks must exist...) is checked by the table's `check` function.
 */
#include "config.h"

#include "codec.h"
#include "filter.h"
#include "perms.h"
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

extern char **environ;

#define SHOW_MAX 48          /* characters of a value quoted in a message */
#define PATH_KEY_MAX 256     /* a key path such as accounts[12].oauth2.token_env */
#define SUGGEST_DIST_MAX 2   /* edit distance for "did you mean" */
#define NAME_KEY_MAX 64      /* longest key name in the tables, for suggestions */
#define WEBHOOK_HEADER_NAME_MAX_CFG 100 /* a header name in headers / headers_file */

_Static_assert(sizeof(enum config_log_level) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_log_format) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_tls) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_start) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_after) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_auth) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_oauth2_provider) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_oauth2_flow) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_event_type) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_tristate) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_dedupe_by) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_include) == sizeof(int), "enum stored as int");

/* ---- the tables ----------------------------------------------------------- */

enum opt_type {
    T_STRING,   /* char *                                                   */
    T_NAME,     /* char *, [A-Za-z0-9._-]{1,64}, unique among its siblings   */
    T_PATH,     /* char *, resolved against the file's directory            */
    T_ENUM,     /* int (an enum), one of `values`                           */
    T_DURATION, /* int64_t milliseconds, "30s"                              */
    T_SIZE,     /* uint64_t bytes, "256KiB" or an integer                   */
    T_INT,      /* int                                                      */
    T_BOOL,     /* bool                                                     */
    T_TRIBOOL,  /* int (enum config_tristate): true, false or left out      */
    T_STRLIST,  /* char ** + size_t count                                   */
    T_NAMELIST, /* char ** + size_t count, each a name                      */
    T_ENUMLIST, /* int * + size_t count                                     */
    T_DURLIST,  /* int64_t * + size_t count                                 */
    T_HEADERS,  /* struct config_header * + size_t count, from an object    */
    T_SECRET,   /* struct config_secret: where the secret comes from        */
    T_REFUSED,  /* a literal secret: always an error                        */
    T_OBJECT,   /* an embedded struct described by `sub`                    */
    T_OBJARRAY, /* an array of structs described by `sub` + size_t count    */
};

static const char *const type_names[] = {
    [T_STRING] = "string",   [T_NAME] = "name",           [T_PATH] = "path",
    [T_ENUM] = "enum",       [T_DURATION] = "duration",   [T_SIZE] = "size",
    [T_INT] = "int",         [T_BOOL] = "bool",           [T_TRIBOOL] = "bool",           [T_STRLIST] = "string-list",
    [T_NAMELIST] = "name-list", [T_ENUMLIST] = "enum-list", [T_DURLIST] = "duration-list",
    [T_HEADERS] = "object",  [T_SECRET] = "secret-source", [T_REFUSED] = "refused",
    [T_OBJECT] = "object",   [T_OBJARRAY] = "object-list",
};

#define F_REQUIRED 1u
#define F_WORD_DEFAULTS 4u /* T_OBJECT: one of `values` as a string also means "all defaults" */
#define F_MULTILINE 2u  /* T_SECRET: every line is kept, not only the first */
#define F_ANY_HEADER 4u /* T_HEADERS: any field name (a filter), none reserved */
#define F_OR_WORD 8u    /* T_STRLIST: or one of `values` alone, as a string */
#define NO_OFF ((size_t)-1)

struct ctx;
struct table;

struct opt {
    const char *name;
    enum opt_type type;
    unsigned flags;
    size_t off;                     /* the field */
    size_t count_off;               /* lists: the size_t count */
    const char *def;                /* default as JSON text; NULL = none */
    int64_t min, max;               /* int, duration (ms), size, string length */
    size_t max_items;               /* lists */
    const char *const *values;      /* T_ENUM, T_ENUMLIST; NULL-terminated */
    enum config_secret_source src;  /* T_SECRET */
    const char *hint;               /* T_REFUSED: what to write instead */
    const struct table *sub;        /* T_OBJECT, T_OBJARRAY */
};

struct table {
    const char *label;              /* how the summary names one */
    const struct opt *opts;
    size_t n;
    size_t size;                    /* element size (T_OBJARRAY) */
    size_t present_off;             /* bool set when given (T_OBJECT), or NO_OFF */
    void (*check)(struct ctx *c, void *obj, const char *path);
};

#define MS_S 1000LL
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)
#define MS_D (24 * MS_H)
#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_formats[] = {"text", "json", "journal", NULL};
static const char *const tls_modes[] = {"implicit", "starttls", "none", NULL};
static const char *const start_modes[] = {"new", "all", NULL};
static const char *const after_modes[] = {"keep", "delete", NULL};
static const char *const oauth2_providers[] = {"static", "microsoft", "google", "custom", NULL};
static const char *const oauth2_flows[] = {"device_code", "authorization_code",
                                           "client_credentials", NULL};
static const char *const auth_names[] = {"user",        "apop",          "plain",
                                         "login",       "cram-md5",      "scram-sha-1",
                                         "scram-sha-256", "xoauth2",     "oauthbearer", NULL};

static void check_root(struct ctx *c, void *obj, const char *path);
static void check_api(struct ctx *c, void *obj, const char *path);
static void check_store(struct ctx *c, void *obj, const char *path);
static void check_token(struct ctx *c, void *obj, const char *path);
static void check_webhook(struct ctx *c, void *obj, const char *path);
static void check_filter(struct ctx *c, void *obj, const char *path);
static void check_payload(struct ctx *c, void *obj, const char *path);
static void check_webhook_auth(struct ctx *c, void *obj, const char *path);
static void check_webhook_basic(struct ctx *c, void *obj, const char *path);
static void check_account(struct ctx *c, void *obj, const char *path);
static void check_oauth2(struct ctx *c, void *obj, const char *path);

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define FIELD(s, f) .off = offsetof(struct s, f)
#define LIST(s, f, c) .off = offsetof(struct s, f), .count_off = offsetof(struct s, c)

static const struct opt token_opts[] = {
    {.name = "name", .type = T_NAME, .flags = F_REQUIRED, FIELD(config_token, name)},
    {.name = "token_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV, FIELD(config_token, token)},
    {.name = "token_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE, FIELD(config_token, token)},
    {.name = "token", .type = T_REFUSED, .hint = "token_env or token_file", FIELD(config_token, token)},
};
static const struct table token_table = {"token", token_opts, COUNT(token_opts),
                                         sizeof(struct config_token), NO_OFF, check_token};

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
                                       NO_OFF, check_api};

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
                                         sizeof(struct config_store), NO_OFF, check_store};
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
    offsetof(struct config_webhook_basic, present), check_webhook_basic};

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
    offsetof(struct config_webhook_auth, present), check_webhook_auth};

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
                                          offsetof(struct config_filter, present), check_filter};

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
                                           offsetof(struct config_payload, present), check_payload};

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
                                           sizeof(struct config_webhook), NO_OFF, check_webhook};

static const struct opt oauth2_opts[] = {
    {.name = "provider", .type = T_ENUM, .def = "\"static\"", .values = oauth2_providers,
     FIELD(config_oauth2, provider)},
    {.name = "token_env", .type = T_SECRET, .src = CONFIG_SECRET_ENV, FIELD(config_oauth2, token)},
    {.name = "token_file", .type = T_SECRET, .src = CONFIG_SECRET_FILE, FIELD(config_oauth2, token)},
    {.name = "token_command", .type = T_SECRET, .src = CONFIG_SECRET_COMMAND,
     FIELD(config_oauth2, token)},
    {.name = "token", .type = T_REFUSED, .hint = "token_env, token_file or token_command",
     FIELD(config_oauth2, token)},
    {.name = "tenant", .type = T_STRING, .min = 1, .max = 128, FIELD(config_oauth2, tenant)},
    {.name = "flow", .type = T_ENUM, .def = "\"device_code\"", .values = oauth2_flows,
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
                                          offsetof(struct config_oauth2, present), check_oauth2};

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
    {.name = "auth", .type = T_ENUMLIST, .values = auth_names, .max_items = CONFIG_LIST_MAX,
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
                                           sizeof(struct config_account), NO_OFF, check_account};

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
static const struct table root_table = {"config", root_opts, COUNT(root_opts), sizeof(struct config),
                                        NO_OFF, check_root};

/* ---- diagnostics ------------------------------------------------------------ */

struct ctx {
    struct config_diag *d;
    const char *file;   /* as the user named it */
    const char *dir;    /* absolute directory of the file */
    struct config *cfg;
    size_t errors;
};

#define AT(base, off, type) ((type *)(void *)((char *)(base) + (off)))

static void diag_push(struct config_diag *d, const char *line)
{
    if (!d)
        return;
    if (d->count >= CONFIG_DIAG_MAX) {
        d->dropped++;
        return;
    }
    char **n = realloc(d->lines, (d->count + 1) * sizeof *n);
    char *copy = strdup(line);
    if (!n || !copy) {
        free(copy);
        if (n)
            d->lines = n;
        d->dropped++;
        return;
    }
    d->lines = n;
    d->lines[d->count++] = copy;
}

/* "FILE: path: message" (path may be ""). */
__attribute__((format(printf, 3, 4))) static void problem(struct ctx *c, const char *path,
                                                          const char *fmt, ...)
{
    char msg[CONFIG_DIAG_LINE_MAX], line[CONFIG_DIAG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(msg, sizeof msg, "(message could not be formatted)");
    else if ((size_t)n >= sizeof msg)
        memcpy(msg + sizeof msg - 4, "...", 4);
    n = snprintf(line, sizeof line, "%s: %s%s%s", c->file, path, *path ? ": " : "", msg);
    if (n >= 0 && (size_t)n >= sizeof line)
        memcpy(line + sizeof line - 4, "...", 4);
    c->errors++;
    diag_push(c->d, line);
}

void config_diag_print(const struct config_diag *d, FILE *out)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->count; i++)
        fprintf(out, "%s\n", d->lines[i]);
    if (d->dropped)
        fprintf(out, "... and %zu more problems not shown (limit CONFIG_DIAG_MAX=%d)\n", d->dropped,
                CONFIG_DIAG_MAX);
}

void config_diag_free(struct config_diag *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->count; i++)
        free(d->lines[i]);
    free(d->lines);
    d->lines = NULL;
    d->count = 0;
    d->dropped = 0;
}

struct config *config_load_or_print(const char *path, bool layout_only, FILE *out)
{
    struct config_diag d = {0};
    struct config *cfg = layout_only ? config_load_layout(path, &d) : config_load(path, &d);
    if (!cfg)
        config_diag_print(&d, out);
    config_diag_free(&d);
    return cfg;
}

/* A value quoted for a message: control characters replaced, length capped. */
static const char *show(const char *s, char *buf, size_t size)
{
    size_t n = 0, i = 0;
    if (size < 8)
        return "";
    buf[n++] = '"';
    for (; s[i] && n + 5 < size && i < SHOW_MAX; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (s[i]) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}

static const char *json_type(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "something else";
}

/* Join a key path: "accounts[1]" + "poll_interval".  Key names from the file
 * are sanitised and capped so a hostile key cannot garble the message. */
static void path_key(char *out, size_t size, const char *parent, const char *key)
{
    char clean[SHOW_MAX + 4];
    size_t n = 0, i = 0;
    for (; key[i] && n < SHOW_MAX; i++) {
        unsigned char ch = (unsigned char)key[i];
        clean[n++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (key[i]) {
        memcpy(clean + n, "...", 3);
        n += 3;
    }
    clean[n] = '\0';
    int r = snprintf(out, size, "%s%s%s", parent, *parent ? "." : "", clean);
    if (r < 0 || (size_t)r >= size)
        snprintf(out, size, "%s", "(key path too long)");
}

static void path_index(char *out, size_t size, const char *parent, size_t i)
{
    int r = snprintf(out, size, "%s[%zu]", parent, i);
    if (r < 0 || (size_t)r >= size)
        snprintf(out, size, "%s", "(key path too long)");
}

/* ---- "did you mean" ------------------------------------------------------ */

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > NAME_KEY_MAX || lb > NAME_KEY_MAX)
        return SIZE_MAX;
    size_t row[NAME_KEY_MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = (a[i - 1] == b[j - 1]) ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

/* The closest candidate within SUGGEST_DIST_MAX (or equal ignoring case). */
static const char *closest(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_d = SUGGEST_DIST_MAX + 1;
    size_t wl = strlen(word);
    for (size_t i = 0; i < n; i++) {
        if (!cands[i])
            continue;
        size_t d = strcasecmp(word, cands[i]) == 0 ? 0 : edit_distance(word, cands[i]);
        size_t limit = wl <= 3 ? 1 : SUGGEST_DIST_MAX;
        if (d <= limit && d < best_d) {
            best = cands[i];
            best_d = d;
        }
    }
    return best;
}

static const char *closest_opt(const char *word, const struct table *t)
{
    const char *names[64];
    size_t n = 0;
    for (size_t i = 0; i < t->n && n < COUNT(names); i++)
        if (t->opts[i].type != T_REFUSED)
            names[n++] = t->opts[i].name;
    return closest(word, names, n);
}

static size_t count_values(const char *const *values)
{
    size_t n = 0;
    while (values[n])
        n++;
    return n;
}

/* ---- scalar values ----------------------------------------------------------- */

static bool is_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > CONFIG_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static bool is_env_name(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9') || strlen(s) > 255)
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_'))
            return false;
    }
    return true;
}

/* A string value within [min, max] bytes without control characters.
 * max 0 means CONFIG_STRING_MAX. */
static const char *get_string(struct ctx *c, const cJSON *v, const char *path, int64_t min,
                              int64_t max)
{
    if (!cJSON_IsString(v) || !v->valuestring) {
        problem(c, path, "expected a string, got %s", json_type(v));
        return NULL;
    }
    const char *s = v->valuestring;
    size_t len = strlen(s);
    if (max <= 0)
        max = CONFIG_STRING_MAX;
    if (min > 0 && len < (size_t)min) {
        problem(c, path, "must not be empty");
        return NULL;
    }
    if (len > (size_t)max) {
        problem(c, path, "is %zu bytes long; the limit is %lld", len, (long long)max);
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) {
            problem(c, path, "contains a control character (byte %zu)", i + 1);
            return NULL;
        }
    }
    return s;
}

/* A JSON number that is a whole number within [min, max]. */
static bool get_integer(struct ctx *c, const cJSON *v, const char *path, int64_t min, int64_t max,
                        int64_t *out)
{
    if (!cJSON_IsNumber(v)) {
        problem(c, path, "expected an integer, got %s", json_type(v));
        return false;
    }
    double d = v->valuedouble;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || (double)(int64_t)d != d) {
        problem(c, path, "expected a whole number, got %g", d);
        return false;
    }
    int64_t x = (int64_t)d;
    if (x < min || x > max) {
        problem(c, path, "must be between %lld and %lld, got %lld", (long long)min, (long long)max,
                (long long)x);
        return false;
    }
    *out = x;
    return true;
}

static bool get_duration(struct ctx *c, const cJSON *v, const char *path, int64_t min, int64_t max,
                         int64_t *out)
{
    char why[128], b1[32], b2[32], sh[SHOW_MAX + 8];
    if (!cJSON_IsString(v) || !v->valuestring) {
        problem(c, path, "expected a duration string such as \"30s\", got %s", json_type(v));
        return false;
    }
    int64_t ms;
    if (units_parse_duration_ms(v->valuestring, &ms, why, sizeof why) < 0) {
        if (strstr(why, "too large"))
            problem(c, path, "%s is too large a duration", show(v->valuestring, sh, sizeof sh));
        else
            problem(c, path, "%s is not a duration (use ms, s, m, h or d)",
                    show(v->valuestring, sh, sizeof sh));
        return false;
    }
    if (ms < min || ms > max) {
        problem(c, path, "must be between %s and %s, got %s", units_format_duration(min, b1, sizeof b1),
                units_format_duration(max, b2, sizeof b2), show(v->valuestring, sh, sizeof sh));
        return false;
    }
    *out = ms;
    return true;
}

static bool get_size(struct ctx *c, const cJSON *v, const char *path, int64_t min, int64_t max,
                     uint64_t *out)
{
    char why[128], b1[32], b2[32], b3[32], sh[SHOW_MAX + 8];
    uint64_t x;
    if (cJSON_IsNumber(v)) {
        int64_t i;
        if (!get_integer(c, v, path, 0, INT64_MAX, &i))
            return false;
        x = (uint64_t)i;
    } else if (cJSON_IsString(v) && v->valuestring) {
        if (units_parse_size(v->valuestring, &x, why, sizeof why) < 0) {
            problem(c, path, "%s is not a size: %s", show(v->valuestring, sh, sizeof sh), why);
            return false;
        }
    } else {
        problem(c, path, "expected a size such as \"256KiB\" or a number of bytes, got %s",
                json_type(v));
        return false;
    }
    if (x < (uint64_t)min || x > (uint64_t)max) {
        problem(c, path, "must be between %s and %s, got %s",
                units_format_size((uint64_t)min, b1, sizeof b1),
                units_format_size((uint64_t)max, b2, sizeof b2), units_format_size(x, b3, sizeof b3));
        return false;
    }
    *out = x;
    return true;
}

static bool get_enum(struct ctx *c, const cJSON *v, const char *path, const char *const *values,
                     int *out)
{
    char sh[SHOW_MAX + 8], list[256];
    const char *s = get_string(c, v, path, 0, 0);
    if (!s)
        return false;
    size_t n = count_values(values);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, values[i]) == 0) {
            *out = (int)i;
            return true;
        }
    }
    size_t used = 0;
    list[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int r = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", values[i]);
        if (r < 0 || (size_t)r >= sizeof list - used)
            break;
        used += (size_t)r;
    }
    const char *near = closest(s, values, n);
    if (near)
        problem(c, path, "%s is not one of: %s (did you mean \"%s\"?)", show(s, sh, sizeof sh), list,
                near);
    else
        problem(c, path, "%s is not one of: %s", show(s, sh, sizeof sh), list);
    return false;
}

/* Remove "." and ".." components and repeated slashes of an absolute path,
 * in place, without touching the file system ("/.." stays "/"). */
static void normalize_path(char *p)
{
    char *out = p + 1, *in = p + 1;
    while (*in) {
        size_t n = strcspn(in, "/");
        if (n == 0 || (n == 1 && in[0] == '.')) {
            /* skip */
        } else if (n == 2 && in[0] == '.' && in[1] == '.') {
            if (out > p + 1) {
                out--; /* the '/' ending the previous component */
                while (out > p + 1 && out[-1] != '/')
                    out--;
            }
        } else {
            memmove(out, in, n);
            out += n;
            if (in[n])
                *out++ = '/';
        }
        in += n;
        if (*in)
            in++;
    }
    if (out > p + 1 && out[-1] == '/')
        out--;
    *out = '\0';
}

/* Resolve a path against the configuration file's directory. */
static char *resolve_path(struct ctx *c, const char *p, const char *path)
{
    char buf[PATH_MAX];
    int r = snprintf(buf, sizeof buf, "%s%s%s", p[0] == '/' ? "" : c->dir, p[0] == '/' ? "" : "/", p);
    if (r < 0 || (size_t)r >= sizeof buf) {
        problem(c, path, "the path is longer than PATH_MAX (%d) once made absolute", PATH_MAX);
        return NULL;
    }
    normalize_path(buf);
    return strdup(buf);
}

/* ---- parsing ------------------------------------------------------------------ */

static void parse_table(struct ctx *c, const struct table *t, void *base, const cJSON *obj,
                        const char *path);

static void set_string(char **field, const char *s)
{
    free(*field);
    *field = s ? strdup(s) : NULL;
}

static const char *secret_alternatives(const struct table *t, size_t off, char *buf, size_t size)
{
    size_t used = 0, k = 0, total = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < t->n; i++)
        if (t->opts[i].type == T_SECRET && t->opts[i].off == off)
            total++;
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        if (o->type != T_SECRET || o->off != off)
            continue;
        k++;
        const char *sep = k == 1 ? "" : (k == total ? " or " : ", ");
        int r = snprintf(buf + used, size - used, "%s%s", sep, o->name);
        if (r < 0 || (size_t)r >= size - used)
            break;
        used += (size_t)r;
    }
    return buf;
}

static void parse_secret(struct ctx *c, const struct table *t, const struct opt *o, void *base,
                         const cJSON *v, const char *path)
{
    struct config_secret *sec = AT(base, o->off, struct config_secret);
    char alts[128], sh[SHOW_MAX + 8];
    const char *s = get_string(c, v, path, 1, o->src == CONFIG_SECRET_FILE ? PATH_MAX : 0);
    if (!s)
        return;
    if (sec->source != CONFIG_SECRET_NONE) {
        problem(c, path, "give only one of %s", secret_alternatives(t, o->off, alts, sizeof alts));
        return;
    }
    char *ref = NULL;
    switch (o->src) {
    case CONFIG_SECRET_ENV:
        if (!is_env_name(s)) {
            problem(c, path, "%s is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    show(s, sh, sizeof sh));
            return;
        }
        ref = strdup(s);
        break;
    case CONFIG_SECRET_FILE:
        ref = secrets_credential_prefix(s) ? strdup(s) : resolve_path(c, s, path);
        if (!ref)
            return;
        break;
    case CONFIG_SECRET_COMMAND:
    case CONFIG_SECRET_NONE:
        ref = strdup(s);
        break;
    }
    if (!ref) {
        problem(c, path, "out of memory");
        return;
    }
    sec->source = o->src;
    sec->ref = ref;
}

static void parse_headers(struct ctx *c, const struct opt *o, void *base, const cJSON *v,
                          const char *path)
{
    static const char *const reserved[] = {"content-type", "content-length", "host", "user-agent",
                                           "webhook-id", "webhook-timestamp", "webhook-signature",
                                           "transfer-encoding", "connection", "expect", NULL};
    static const char *const credentials[] = {"authorization", "proxy-authorization", "cookie", NULL};
    char sub[PATH_KEY_MAX];
    if (!cJSON_IsObject(v)) {
        problem(c, path, "expected an object of header names to values, got %s", json_type(v));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > o->max_items) {
        problem(c, path, "has %zu headers; the limit is %zu (CONFIG_HEADERS_MAX)", n, o->max_items);
        return;
    }
    struct config_header *h = n ? calloc(n, sizeof *h) : NULL;
    if (n && !h) {
        problem(c, path, "out of memory");
        return;
    }
    size_t k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        const char *name = it->string ? it->string : "";
        path_key(sub, sizeof sub, path, name);
        bool ok = *name != '\0' && strlen(name) <= 100;
        for (const char *p = name; *p && ok; p++)
            ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                 strchr("!#$%&'*+-.^_`|~", *p) != NULL;
        if (!ok) {
            problem(c, sub, "is not a valid HTTP header name");
            continue;
        }
        bool bad = false, any = (o->flags & F_ANY_HEADER) != 0;
        for (size_t i = 0; reserved[i] && !bad && !any; i++)
            if (strcasecmp(name, reserved[i]) == 0) {
                problem(c, sub, "is set by the bridge itself and cannot be configured");
                bad = true;
            }
        for (size_t i = 0; credentials[i] && !bad && !any; i++)
            if (strcasecmp(name, credentials[i]) == 0) {
                problem(c, sub, "would put a credential in the file; use auth (basic or "
                                "bearer) or headers_env / headers_file");
                bad = true;
            }
        for (size_t i = 0; i < k && !bad; i++)
            if (strcasecmp(name, h[i].name) == 0) {
                problem(c, sub, "is given twice");
                bad = true;
            }
        const char *val = get_string(c, it, sub, o->min, o->max);
        if (bad || !val)
            continue;
        h[k].name = strdup(name);
        h[k].value = strdup(val);
        if (!h[k].name || !h[k].value) {
            free(h[k].name);
            free(h[k].value);
            problem(c, sub, "out of memory");
            continue;
        }
        k++;
    }
    *AT(base, o->off, struct config_header *) = h;
    *AT(base, o->count_off, size_t) = k;
}

/* Lists of strings, names, enum values or durations. */
static void parse_list(struct ctx *c, const struct opt *o, void *base, const cJSON *v,
                       const char *path)
{
    char sub[PATH_KEY_MAX], sh[SHOW_MAX + 8];
    if ((o->flags & F_OR_WORD) && cJSON_IsString(v)) {
        int w;
        if (!get_enum(c, v, path, o->values, &w))
            return;
        char **one = calloc(1, sizeof *one);
        if (!one || !(one[0] = strdup(o->values[w]))) {
            free(one);
            problem(c, path, "out of memory");
            return;
        }
        *AT(base, o->off, char **) = one;
        *AT(base, o->count_off, size_t) = 1;
        return;
    }
    if (!cJSON_IsArray(v)) {
        problem(c, path, "expected an array, got %s", json_type(v));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > o->max_items) {
        problem(c, path, "has %zu items; the limit is %zu", n, o->max_items);
        return;
    }
    size_t elem = o->type == T_ENUMLIST ? sizeof(int)
                  : o->type == T_DURLIST ? sizeof(int64_t)
                                         : sizeof(char *);
    void *arr = n ? calloc(n, elem) : NULL;
    if (n && !arr) {
        problem(c, path, "out of memory");
        return;
    }
    size_t k = 0, i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        path_index(sub, sizeof sub, path, i++);
        if (o->type == T_ENUMLIST) {
            int e;
            if (!get_enum(c, it, sub, o->values, &e))
                continue;
            int *ints = arr;
            bool dup = false;
            for (size_t j = 0; j < k && !dup; j++)
                dup = ints[j] == e;
            if (dup) {
                problem(c, sub, "\"%s\" is listed twice", o->values[e]);
                continue;
            }
            ints[k++] = e;
        } else if (o->type == T_DURLIST) {
            int64_t ms;
            if (get_duration(c, it, sub, o->min, o->max, &ms))
                ((int64_t *)arr)[k++] = ms;
        } else {
            const char *s = get_string(c, it, sub, o->type == T_NAMELIST ? 1 : o->min, o->max);
            if (!s)
                continue;
            if (o->type == T_NAMELIST && !is_name(s)) {
                problem(c, sub, "%s is not a valid name ([A-Za-z0-9._-], 1 to %d characters)",
                        show(s, sh, sizeof sh), CONFIG_NAME_MAX);
                continue;
            }
            char **strs = arr;
            bool dup = false;
            for (size_t j = 0; j < k && !dup; j++)
                dup = strcmp(strs[j], s) == 0;
            if (dup) {
                problem(c, sub, "%s is listed twice", show(s, sh, sizeof sh));
                continue;
            }
            if (!(strs[k] = strdup(s))) {
                problem(c, sub, "out of memory");
                continue;
            }
            k++;
        }
    }
    *AT(base, o->off, void *) = arr;
    *AT(base, o->count_off, size_t) = k;
}

static void parse_objarray(struct ctx *c, const struct opt *o, void *base, const cJSON *v,
                           const char *path)
{
    char sub[PATH_KEY_MAX], other[PATH_KEY_MAX], sh[SHOW_MAX + 8];
    const struct table *t = o->sub;
    if (!cJSON_IsArray(v)) {
        problem(c, path, "expected an array of objects, got %s", json_type(v));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > o->max_items) {
        problem(c, path, "has %zu entries; the limit is %zu", n, o->max_items);
        return;
    }
    char *arr = n ? calloc(n, t->size) : NULL;
    if (n && !arr) {
        problem(c, path, "out of memory");
        return;
    }
    *AT(base, o->off, void *) = arr;
    *AT(base, o->count_off, size_t) = n;
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        path_index(sub, sizeof sub, path, i);
        parse_table(c, t, arr + i * t->size, it, sub);
        i++;
    }
    /* names unique among the entries */
    for (size_t k = 0; k < t->n; k++) {
        if (t->opts[k].type != T_NAME)
            continue;
        for (size_t a = 1; a < n; a++) {
            const char *na = *AT(arr + a * t->size, t->opts[k].off, char *);
            for (size_t b = 0; na && b < a; b++) {
                const char *nb = *AT(arr + b * t->size, t->opts[k].off, char *);
                if (nb && strcmp(na, nb) == 0) {
                    char elem[PATH_KEY_MAX];
                    path_index(elem, sizeof elem, path, a);
                    path_key(sub, sizeof sub, elem, t->opts[k].name);
                    path_index(other, sizeof other, path, b);
                    problem(c, sub, "%s is already used by %s", show(na, sh, sizeof sh), other);
                    break;
                }
            }
        }
    }
}

static void parse_opt(struct ctx *c, const struct table *t, const struct opt *o, void *base,
                      const cJSON *v, const char *path)
{
    char sh[SHOW_MAX + 8];
    switch (o->type) {
    case T_STRING:
    case T_NAME:
    case T_PATH: {
        const char *s = get_string(c, v, path, o->type == T_NAME ? 1 : o->min, o->max);
        if (!s)
            return;
        if (o->type == T_NAME && !is_name(s)) {
            problem(c, path, "%s is not a valid name ([A-Za-z0-9._-], 1 to %d characters)",
                    show(s, sh, sizeof sh), CONFIG_NAME_MAX);
            return;
        }
        char **field = AT(base, o->off, char *);
        if (o->type == T_PATH) {
            free(*field);
            *field = resolve_path(c, s, path);
        } else {
            set_string(field, s);
        }
        return;
    }
    case T_ENUM: {
        int e;
        if (get_enum(c, v, path, o->values, &e))
            *AT(base, o->off, int) = e;
        return;
    }
    case T_DURATION:
        get_duration(c, v, path, o->min, o->max, AT(base, o->off, int64_t));
        return;
    case T_SIZE:
        get_size(c, v, path, o->min, o->max, AT(base, o->off, uint64_t));
        return;
    case T_INT: {
        int64_t x;
        if (get_integer(c, v, path, o->min, o->max, &x))
            *AT(base, o->off, int) = (int)x;
        return;
    }
    case T_BOOL:
        if (!cJSON_IsBool(v))
            problem(c, path, "expected true or false, got %s", json_type(v));
        else
            *AT(base, o->off, bool) = cJSON_IsTrue(v);
        return;
    case T_TRIBOOL:
        if (!cJSON_IsBool(v))
            problem(c, path, "expected true or false, got %s", json_type(v));
        else
            *AT(base, o->off, int) = cJSON_IsTrue(v) ? CONFIG_TRUE : CONFIG_FALSE;
        return;
    case T_STRLIST:
    case T_NAMELIST:
    case T_ENUMLIST:
    case T_DURLIST:
        parse_list(c, o, base, v, path);
        return;
    case T_HEADERS:
        parse_headers(c, o, base, v, path);
        return;
    case T_SECRET:
        parse_secret(c, t, o, base, v, path);
        return;
    case T_REFUSED: {
        char alts[128];
        problem(c, path, "secrets are not accepted in the file itself; use %s",
                o->hint ? o->hint : secret_alternatives(t, o->off, alts, sizeof alts));
        return;
    }
    case T_OBJECT:
        if ((o->flags & F_WORD_DEFAULTS) && cJSON_IsString(v)) {
            int word;
            if (get_enum(c, v, path, o->values, &word))
                parse_table(c, o->sub, AT(base, o->off, char), NULL, path);
            return;
        }
        parse_table(c, o->sub, AT(base, o->off, char), v, path);
        return;
    case T_OBJARRAY:
        parse_objarray(c, o, base, v, path);
        return;
    }
}

static void apply_default(struct ctx *c, const struct table *t, const struct opt *o, void *base,
                          const char *path)
{
    if (o->type == T_OBJECT && o->sub->present_off == NO_OFF) {
        parse_table(c, o->sub, AT(base, o->off, char), NULL, path);
        return;
    }
    if (!o->def)
        return;
    cJSON *v = cJSON_Parse(o->def);
    if (!v) {
        problem(c, path, "internal error: the built-in default does not parse");
        return;
    }
    parse_opt(c, t, o, base, v, path);
    cJSON_Delete(v);
}

/* Fill `base` from the object `obj` (NULL: only defaults) by the table. */
static void parse_table(struct ctx *c, const struct table *t, void *base, const cJSON *obj,
                        const char *path)
{
    char sub[PATH_KEY_MAX];
    bool seen[64] = {false};
    bool wrong_type = obj && !cJSON_IsObject(obj);
    if (wrong_type) {
        problem(c, path, "expected an object, got %s", json_type(obj));
        obj = NULL;
    }
    const cJSON *it;
    if (obj) {
        cJSON_ArrayForEach(it, obj)
        {
            const char *key = it->string ? it->string : "";
            path_key(sub, sizeof sub, path, key);
            size_t i = 0;
            while (i < t->n && strcmp(t->opts[i].name, key) != 0)
                i++;
            if (i == t->n) {
                const char *near = closest_opt(key, t);
                if (near)
                    problem(c, sub, "unknown key (did you mean \"%s\"?)", near);
                else
                    problem(c, sub, "unknown key");
                continue;
            }
            if (seen[i]) {
                problem(c, sub, "is given twice");
                continue;
            }
            seen[i] = true;
            parse_opt(c, t, &t->opts[i], base, it, sub);
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        if (seen[i])
            continue;
        path_key(sub, sizeof sub, path, t->opts[i].name);
        if (t->opts[i].flags & F_REQUIRED) {
            if (!wrong_type)
                problem(c, sub, "is required but missing");
        }
        else
            apply_default(c, t, &t->opts[i], base, sub);
    }
    if (obj && t->present_off != NO_OFF)
        *AT(base, t->present_off, bool) = true;
    if (t->check && !wrong_type && (obj || t->present_off == NO_OFF))
        t->check(c, base, path);
}

/* ---- checks across keys ------------------------------------------------------------ */

static int parse_port(const char *s)
{
    if (!*s || strlen(s) > 5)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > 65535 || *s < '0' || *s > '9')
        return -1;
    return (int)v;
}

static void check_store(struct ctx *c, void *obj, const char *path)
{
    struct config_store *s = obj;
    char sub[PATH_KEY_MAX];
    path_key(sub, sizeof sub, path, "url");
    if (!s->url) {
        if (s->password.source != CONFIG_SECRET_NONE)
            problem(c, sub, "password_env / password_file need a PostgreSQL url");
        return;
    }
    const char *rest = NULL;
    if (strncmp(s->url, "postgresql://", 13) == 0)
        rest = s->url + 13;
    else if (strncmp(s->url, "postgres://", 11) == 0)
        rest = s->url + 11;
    if (!rest) {
        problem(c, sub, "expected a postgresql:// URL");
        return;
    }
    /* user:password@ in the URL: the password would sit in the file */
    size_t auth = strcspn(rest, "/?");
    const char *at = memchr(rest, '@', auth);
    if (at && memchr(rest, ':', (size_t)(at - rest)))
        problem(c, sub, "the URL holds a password; use store.password_env or"
                        " store.password_file");
}

static void check_api(struct ctx *c, void *obj, const char *path)
{
    struct config_api *a = obj;
    char sub[PATH_KEY_MAX], sh[SHOW_MAX + 8];
    path_key(sub, sizeof sub, path, "listen");
    if (a->listen) {
        const char *s = a->listen, *colon;
        char host[256];
        size_t hl;
        bool ok = true;
        if (s[0] == '[') {
            const char *close = strchr(s, ']');
            colon = close ? close + 1 : NULL;
            hl = close ? (size_t)(close - s - 1) : 0;
            if (!close || *colon != ':' || hl == 0 || hl >= sizeof host) {
                problem(c, sub, "%s is not [IPv6]:port", show(s, sh, sizeof sh));
                ok = false;
            } else {
                memcpy(host, s + 1, hl);
                host[hl] = '\0';
                unsigned char addr[16];
                if (inet_pton(AF_INET6, host, addr) != 1) {
                    problem(c, sub, "%s is not an IPv6 address", show(host, sh, sizeof sh));
                    ok = false;
                }
            }
        } else {
            colon = strrchr(s, ':');
            hl = colon ? (size_t)(colon - s) : 0;
            if (!colon || hl == 0 || hl >= sizeof host) {
                problem(c, sub, "%s is not host:port (e.g. \"127.0.0.1:8025\", \"[::1]:8025\")",
                        show(s, sh, sizeof sh));
                ok = false;
            } else {
                memcpy(host, s, hl);
                host[hl] = '\0';
                for (const char *p = host; *p && ok; p++)
                    ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                         (*p >= '0' && *p <= '9') || *p == '.' || *p == '-';
                if (!ok)
                    problem(c, sub, "%s: the host is not a name or IPv4 address (IPv6 goes in "
                                    "brackets: \"[::1]:8025\")",
                            show(s, sh, sizeof sh));
            }
        }
        if (ok) {
            a->listen_port = parse_port(colon + 1);
            if (a->listen_port < 0) {
                problem(c, sub, "the port in %s must be 1 to 65535", show(s, sh, sizeof sh));
            } else {
                free(a->listen_host);
                a->listen_host = strdup(host);
            }
        }
    }
    path_key(sub, sizeof sub, path, "public_url");
    if (a->public_url) {
        const char *why = url_http_problem(a->public_url, 0);
        if (why)
            problem(c, sub, "%s", why);
        size_t n = strlen(a->public_url);
        while (n > 0 && a->public_url[n - 1] == '/')
            a->public_url[--n] = '\0';
    } else if (a->listen) {
        size_t n = strlen(a->listen) + 8;
        a->public_url = malloc(n);
        if (a->public_url)
            snprintf(a->public_url, n, "http://%s", a->listen);
    }
    for (size_t i = 0; i < a->cors_origin_count; i++) {
        const char *o = a->cors_origins[i];
        char item[PATH_KEY_MAX];
        path_key(sub, sizeof sub, path, "cors_origins");
        path_index(item, sizeof item, sub, i);
        if (strcmp(o, "*") == 0)
            continue;
        const char *why = url_http_problem(o, URL_ORIGIN_ONLY);
        if (why)
            problem(c, item, "%s %s", show(o, sh, sizeof sh), why);
    }
    if (a->sessions_total < a->sessions_per_account) {
        path_key(sub, sizeof sub, path, "sessions_total");
        problem(c, sub, "(%d) is smaller than sessions_per_account (%d)", a->sessions_total,
                a->sessions_per_account);
    }
}

static void check_token(struct ctx *c, void *obj, const char *path)
{
    struct config_token *t = obj;
    if (t->token.source == CONFIG_SECRET_NONE)
        problem(c, path, "has no token: set token_env or token_file");
}

static const char *secret_suffix(enum config_secret_source s)
{
    return s == CONFIG_SECRET_ENV ? "env" : s == CONFIG_SECRET_FILE ? "file" : "command";
}


static bool is_tenant(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-'))
            return false;
    return true;
}

static void check_oauth2(struct ctx *c, void *obj, const char *path)
{
    struct config_oauth2 *o = obj;
    char sub[PATH_KEY_MAX], key[48];
    const struct {
        const char *name;
        char **field;
    } provider_keys[] = {
        {"tenant", &o->tenant},
        {"client_id", &o->client_id},
        {"scope", &o->scope},
        {"token_url", &o->token_url},
        {"device_authorization_url", &o->device_authorization_url},
        {"authorization_url", &o->authorization_url},
        {"ca_file", &o->ca_file},
    };
    bool has_token = o->token.source != CONFIG_SECRET_NONE;
    bool has_secret = o->client_secret.source != CONFIG_SECRET_NONE;

    if (o->provider == CONFIG_OAUTH2_STATIC) {
        if (!has_token)
            problem(c, path, "has no token: set provider (microsoft, google or custom) with "
                             "client_id, or token_env, token_file or token_command");
        for (size_t i = 0; i < COUNT(provider_keys); i++)
            if (*provider_keys[i].field) {
                path_key(sub, sizeof sub, path, provider_keys[i].name);
                problem(c, sub, "only applies with a provider (microsoft, google or custom)");
            }
        if (has_secret) {
            snprintf(key, sizeof key, "client_secret_%s", secret_suffix(o->client_secret.source));
            path_key(sub, sizeof sub, path, key);
            problem(c, sub, "only applies with a provider (microsoft, google or custom)");
        }
        return;
    }
    const char *pname = oauth2_providers[o->provider];
    if (has_token) {
        snprintf(key, sizeof key, "token_%s", secret_suffix(o->token.source));
        path_key(sub, sizeof sub, path, key);
        problem(c, sub, "a static token does not go with provider \"%s\", whose tokens the "
                        "bridge obtains and refreshes itself",
                pname);
    }
    if (!o->client_id) {
        path_key(sub, sizeof sub, path, "client_id");
        problem(c, sub, "is required with provider \"%s\" (the application's id from its "
                        "registration)",
                pname);
    }
    path_key(sub, sizeof sub, path, "tenant");
    if (o->provider != CONFIG_OAUTH2_MICROSOFT) {
        if (o->tenant)
            problem(c, sub, "only applies with provider \"microsoft\"");
    } else {
        if (!o->tenant && !(o->tenant = strdup("organizations")))
            problem(c, sub, "out of memory");
        if (o->tenant && !is_tenant(o->tenant))
            problem(c, sub, "must be a tenant id or domain name ([A-Za-z0-9.-])");
        else if (o->tenant && o->flow == CONFIG_FLOW_CLIENT_CREDENTIALS &&
                 (strcasecmp(o->tenant, "organizations") == 0 ||
                  strcasecmp(o->tenant, "common") == 0 || strcasecmp(o->tenant, "consumers") == 0))
            problem(c, sub, "flow client_credentials needs your own tenant (its id or domain, "
                            "e.g. \"contoso.onmicrosoft.com\"), not \"%s\"",
                    o->tenant);
    }
    path_key(sub, sizeof sub, path, "flow");
    if (o->flow == CONFIG_FLOW_DEVICE_CODE && o->provider == CONFIG_OAUTH2_GOOGLE && !o->scope)
        problem(c, sub, "Google's device flow does not grant Gmail's scope "
                        "(https://mail.google.com/): set \"flow\": \"authorization_code\" with a "
                        "\"Desktop app\" OAuth client");
    if (o->flow == CONFIG_FLOW_CLIENT_CREDENTIALS) {
        if (o->provider == CONFIG_OAUTH2_GOOGLE)
            problem(c, sub, "Gmail mailboxes have no client credentials flow; use device_code or "
                            "authorization_code");
        else if (!has_secret)
            problem(c, sub, "client_credentials needs client_secret_env, client_secret_file or "
                            "client_secret_command");
    }
    for (size_t i = 3; i < 6; i++) { /* the endpoints */
        const char *u = *provider_keys[i].field;
        path_key(sub, sizeof sub, path, provider_keys[i].name);
        if (u && o->provider != CONFIG_OAUTH2_CUSTOM) {
            problem(c, sub, "only applies with provider \"custom\" (\"%s\" has its own)", pname);
            continue;
        }
        const char *why = u ? url_http_problem(u, URL_HTTPS_ONLY) : NULL;
        if (why)
            problem(c, sub, "%s", why);
    }
    if (o->provider == CONFIG_OAUTH2_CUSTOM) {
        if (!o->token_url) {
            path_key(sub, sizeof sub, path, "token_url");
            problem(c, sub, "is required with provider \"custom\"");
        }
        if (o->flow == CONFIG_FLOW_DEVICE_CODE && !o->device_authorization_url) {
            path_key(sub, sizeof sub, path, "device_authorization_url");
            problem(c, sub, "is required with provider \"custom\" and flow \"device_code\"");
        }
        if (o->flow == CONFIG_FLOW_AUTHORIZATION_CODE && !o->authorization_url) {
            path_key(sub, sizeof sub, path, "authorization_url");
            problem(c, sub, "is required with provider \"custom\" and flow "
                            "\"authorization_code\"");
        }
    }
}

/* "auth": exactly one of basic or bearer. */
static void check_webhook_auth(struct ctx *c, void *obj, const char *path)
{
    struct config_webhook_auth *a = obj;
    bool bearer = a->bearer.source != CONFIG_SECRET_NONE;
    if (a->basic.present && bearer)
        problem(c, path, "give either basic or bearer_env/bearer_file, not both");
    else if (!a->basic.present && !bearer)
        problem(c, path, "needs basic or bearer_env/bearer_file");
}

static void check_webhook_basic(struct ctx *c, void *obj, const char *path)
{
    struct config_webhook_basic *b = obj;
    char sub[PATH_KEY_MAX];
    if (b->username && strchr(b->username, ':')) {
        path_key(sub, sizeof sub, path, "username");
        problem(c, sub, "must not contain ':' (RFC 7617)");
    }
    if (b->password.source == CONFIG_SECRET_NONE)
        problem(c, path, "has no password: set password_env or password_file");
}

static bool starts_with_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Credentials, TLS files and the proxy of a webhook, against its URL. */
static void check_webhook_transport(struct ctx *c, struct config_webhook *w, const char *path)
{
    char sub[PATH_KEY_MAX];
    bool https = w->url && starts_with_ci(w->url, "https://");
    if (w->url && !https && !w->allow_plaintext_credentials) {
        if (w->auth.present) {
            path_key(sub, sizeof sub, path, "auth");
            problem(c, sub, "credentials would be sent in clear to an http:// url; use https:// "
                            "or set allow_plaintext_credentials: true");
        }
        if (w->headers_secret.source != CONFIG_SECRET_NONE) {
            path_key(sub, sizeof sub, path,
                     w->headers_secret.source == CONFIG_SECRET_ENV ? "headers_env"
                                                                   : "headers_file");
            problem(c, sub, "secret headers would be sent in clear to an http:// url; use "
                            "https:// or set allow_plaintext_credentials: true");
        }
    }
    const char *const tls_keys[] = {"ca_file", "client_cert_file", "client_key_file"};
    const char *const tls_vals[] = {w->ca_file, w->client_cert_file, w->client_key_file};
    for (size_t i = 0; w->url && !https && i < COUNT(tls_keys); i++)
        if (tls_vals[i]) {
            path_key(sub, sizeof sub, path, tls_keys[i]);
            problem(c, sub, "only applies to an https:// url");
        }
    if (w->client_key_file && !w->client_cert_file) {
        path_key(sub, sizeof sub, path, "client_key_file");
        problem(c, sub, "needs client_cert_file");
    }
    if (w->proxy) {
        path_key(sub, sizeof sub, path, "proxy");
        const char *why = url_http_problem(w->proxy, URL_ORIGIN_ONLY);
        if (why)
            problem(c, sub, "%s", why);
        else if (!starts_with_ci(w->proxy, "http://"))
            problem(c, sub, "must be an http:// proxy (the bridge tunnels through it with "
                            "CONNECT)");
    }
}

static void check_webhook(struct ctx *c, void *obj, const char *path)
{
    struct config_webhook *w = obj;
    char sub[PATH_KEY_MAX];
    if (w->url) {
        const char *why = url_http_problem(w->url, 0);
        path_key(sub, sizeof sub, path, "url");
        if (why)
            problem(c, sub, "%s", why);
    }
    if (w->secret.source == CONFIG_SECRET_NONE)
        problem(c, path, "has no signing secret: set secret_env or secret_file");
    check_webhook_transport(c, w, path);
}

/* A webhook's filter: its patterns compiled once, here (filter.h). */
static void check_filter(struct ctx *c, void *obj, const char *path)
{
    struct config_filter *f = obj;
    struct filter_error fe;
    char sub[PATH_KEY_MAX];
    if (!(f->compiled = filter_compile(f, &fe))) {
        path_key(sub, sizeof sub, path, fe.key);
        problem(c, *fe.key ? sub : path, "%s", fe.msg);
    }
}

/* A webhook's payload: "all" and "none" stand alone; names are header names. */
static void check_payload(struct ctx *c, void *obj, const char *path)
{
    struct config_payload *p = obj;
    char sub[PATH_KEY_MAX], item[PATH_KEY_MAX];
    path_key(sub, sizeof sub, path, "headers");
    for (size_t i = 0; i < p->header_count; i++) {
        const char *n = p->headers[i];
        path_index(item, sizeof item, sub, i);
        bool word = strcmp(n, "all") == 0 || strcmp(n, "none") == 0;
        if (word && p->header_count > 1) {
            problem(c, item, "\"%s\" stands alone: \"headers\": \"%s\"", n, n);
            continue;
        }
        bool ok = *n != '\0';
        for (const char *q = n; *q && ok; q++)
            ok = (*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') ||
                 strchr("!#$%&'*+-.^_`|~", *q) != NULL;
        if (!ok)
            problem(c, item, "is not a header name");
    }
}

static bool is_plaintext_auth(enum config_auth m)
{
    return m == CONFIG_AUTH_USER || m == CONFIG_AUTH_PLAIN || m == CONFIG_AUTH_LOGIN ||
           m == CONFIG_AUTH_XOAUTH2 || m == CONFIG_AUTH_OAUTHBEARER;
}

static void check_account(struct ctx *c, void *obj, const char *path)
{
    struct config_account *a = obj;
    char sub[PATH_KEY_MAX], item[PATH_KEY_MAX];
    bool has_pw = a->password.source != CONFIG_SECRET_NONE;
    bool has_oauth = a->oauth2.present;

    if (a->port == 0)
        a->port = a->tls == CONFIG_TLS_IMPLICIT ? 995 : 110;
    if (has_pw && has_oauth)
        problem(c, path, "give either a password (password_env, password_file or password_command) "
                         "or oauth2, not both");
    else if (!has_pw && !has_oauth)
        problem(c, path, "has no credentials: set password_env, password_file, password_command "
                         "or oauth2");
    path_key(sub, sizeof sub, path, "auth");
    bool all_plain = a->auth_count > 0;
    for (size_t i = 0; i < a->auth_count; i++) {
        enum config_auth m = a->auth[i];
        bool oauth_mech = m == CONFIG_AUTH_XOAUTH2 || m == CONFIG_AUTH_OAUTHBEARER;
        path_index(item, sizeof item, sub, i);
        if (oauth_mech && has_pw && !has_oauth)
            problem(c, item, "\"%s\" needs oauth2 credentials", auth_names[m]);
        if (!oauth_mech && has_oauth && !has_pw)
            problem(c, item, "\"%s\" needs a password", auth_names[m]);
        all_plain = all_plain && is_plaintext_auth(m);
    }
    if (a->fingerprint) {
        path_key(sub, sizeof sub, path, "fingerprint");
        bool ok = codec_pin_parse(a->fingerprint, a->fingerprint_sha256) == 0;
        if (!ok)
            problem(c, sub, "must be \"sha256:\" followed by 64 hex digits, optionally in "
                            "':'-separated pairs (the SHA-256 of the server certificate)");
    }
    if (a->tls == CONFIG_TLS_NONE) {
        if (a->fingerprint) {
            path_key(sub, sizeof sub, path, "fingerprint");
            problem(c, sub, "only applies with tls \"implicit\" or \"starttls\"");
        }
        if (a->ca_file) {
            path_key(sub, sizeof sub, path, "ca_file");
            problem(c, sub, "only applies with tls \"implicit\" or \"starttls\"");
        }
        if (!a->allow_plaintext && all_plain) {
            path_key(sub, sizeof sub, path, "auth");
            problem(c, sub, "every method listed sends the credentials in clear over tls \"none\"; "
                            "set allow_plaintext: true to allow that");
        }
    }
    if (a->delete_after_ms && a->after_delivery != CONFIG_AFTER_KEEP) {
        path_key(sub, sizeof sub, path, "delete_after");
        problem(c, sub, "only applies with after_delivery \"keep\"");
    }
    if (a->delete_after_ms && a->after_delivery == CONFIG_AFTER_KEEP && a->webhook_count == 0) {
        path_key(sub, sizeof sub, path, "delete_after");
        problem(c, sub, "with no webhooks would delete mail nobody received");
    }
    if (a->after_delivery == CONFIG_AFTER_DELETE && a->webhook_count == 0) {
        path_key(sub, sizeof sub, path, "after_delivery");
        problem(c, sub, "\"delete\" with no webhooks would delete mail nobody received");
    }
    if (a->address) {
        const char *at = strrchr(a->address, '@');
        bool spaces = strpbrk(a->address, " \t\r\n<>,;") != NULL;
        if (!at || at == a->address || !at[1] || spaces) {
            path_key(sub, sizeof sub, path, "address");
            problem(c, sub, "\"%s\" is not an address (local-part@domain)", a->address);
        }
    } else if (a->username && strchr(a->username, '@') && !strpbrk(a->username, " \t\r\n<>,;")) {
        a->address = strdup(a->username); /* the default: the username, when it is an address */
        if (!a->address)
            problem(c, path, "out of memory");
    }
    path_key(sub, sizeof sub, path, "trusted_authserv_ids");
    for (size_t i = 0; i < a->trusted_authserv_id_count; i++) {
        const char *id = a->trusted_authserv_ids[i];
        for (const char *q = id; *q; q++)
            if ((unsigned char)*q <= ' ' || strchr(";()\"", *q)) {
                path_index(item, sizeof item, sub, i);
                problem(c, item, "\"%s\" is not an authserv-id (a host name such as mx.example.com)", id);
                break;
            }
    }
}

/* After everything: an account's webhooks name configured webhooks. */
static void check_root(struct ctx *c, void *obj, const char *path)
{
    struct config *cfg = obj;
    char sub[PATH_KEY_MAX], item[PATH_KEY_MAX], sh[SHOW_MAX + 8];
    for (size_t i = 0; i < cfg->account_count; i++) {
        const struct config_oauth2 *o = &cfg->accounts[i].oauth2;
        if (!o->present || o->provider == CONFIG_OAUTH2_STATIC ||
            cfg->secrets_key.source != CONFIG_SECRET_NONE)
            continue;
        path_index(sub, sizeof sub, "accounts", i);
        problem(c, "", "secrets_key_env or secrets_key_file is required: %s.oauth2 uses provider "
                       "\"%s\", whose tokens are kept in the store encrypted under that key "
                       "(64 hex digits: openssl rand -hex 32)",
                sub, oauth2_providers[o->provider]);
        break;
    }
    const char *names[CONFIG_WEBHOOKS_MAX];
    size_t nn = 0;
    for (size_t w = 0; w < cfg->webhook_count && nn < COUNT(names); w++)
        if (cfg->webhooks[w].name)
            names[nn++] = cfg->webhooks[w].name;
    for (size_t i = 0; i < cfg->account_count; i++) {
        struct config_account *a = &cfg->accounts[i];
        if (!a->webhook_count)
            continue;
        a->webhook_index = calloc(a->webhook_count, sizeof *a->webhook_index);
        a->webhook_cfg = calloc(a->webhook_count, sizeof *a->webhook_cfg);
        if (!a->webhook_index || !a->webhook_cfg) {
            problem(c, path, "out of memory");
            return;
        }
        for (size_t k = 0; k < a->webhook_count; k++) {
            size_t w = 0;
            while (w < cfg->webhook_count &&
                   !(cfg->webhooks[w].name && strcmp(cfg->webhooks[w].name, a->webhooks[k]) == 0))
                w++;
            a->webhook_index[k] = w;
            a->webhook_cfg[k] = w < cfg->webhook_count ? &cfg->webhooks[w] : NULL;
            if (w < cfg->webhook_count)
                continue;
            char elem[PATH_KEY_MAX];
            path_index(elem, sizeof elem, "accounts", i);
            path_key(sub, sizeof sub, elem, "webhooks");
            path_index(item, sizeof item, sub, k);
            const char *near = closest(a->webhooks[k], names, nn);
            if (near)
                problem(c, item, "no webhook is named %s (did you mean \"%s\"?)",
                        show(a->webhooks[k], sh, sizeof sh), near);
            else
                problem(c, item, "no webhook is named %s", show(a->webhooks[k], sh, sizeof sh));
        }
    }
}

/* ---- reading the file ---------------------------------------------------------------- */

static void offset_to_pos(const char *buf, size_t off, size_t *line, size_t *col)
{
    size_t l = 1, start = 0;
    for (size_t i = 0; i < off; i++)
        if (buf[i] == '\n') {
            l++;
            start = i + 1;
        }
    *line = l;
    *col = off - start + 1;
}

__attribute__((format(printf, 4, 5))) static void problem_at(struct ctx *c, const char *buf,
                                                             size_t off, const char *fmt, ...)
{
    char msg[CONFIG_DIAG_LINE_MAX], where[64];
    size_t line, col;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    offset_to_pos(buf, off, &line, &col);
    n = snprintf(where, sizeof where, "%zu:%zu", line, col);
    if (n < 0 || (size_t)n >= sizeof where)
        where[0] = '\0';
    /* problem() prints "FILE: path: msg"; here the position joins the file name */
    char line_buf[CONFIG_DIAG_LINE_MAX];
    n = snprintf(line_buf, sizeof line_buf, "%s:%s: %s", c->file, where, msg);
    if (n >= 0 && (size_t)n >= sizeof line_buf)
        memcpy(line_buf + sizeof line_buf - 4, "...", 4);
    c->errors++;
    diag_push(c->d, line_buf);
}

/* Blank out comments (keeping newlines, so positions stay true), refuse
 * \u0000 in strings and nesting deeper than CONFIG_DEPTH_MAX.  0 or -1. */
static int strip_comments(struct ctx *c, char *buf, size_t len)
{
    size_t depth = 0;
    const char *nul = memchr(buf, '\0', len);
    if (nul) {
        problem_at(c, buf, (size_t)(nul - buf), "the file contains a NUL byte");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (ch == '"') {
            size_t start = i;
            for (i++; i < len && buf[i] != '"'; i++) {
                if (buf[i] == '\\' && i + 1 < len) {
                    if (buf[i + 1] == 'u' && i + 5 < len && memcmp(buf + i + 2, "0000", 4) == 0) {
                        problem_at(c, buf, i, "\\u0000 is not allowed in a string");
                        return -1;
                    }
                    i++;
                }
            }
            if (i >= len) {
                problem_at(c, buf, start, "invalid JSON: the string is not closed");
                return -1;
            }
        } else if (ch == '/' && i + 1 < len && buf[i + 1] == '/') {
            for (; i < len && buf[i] != '\n'; i++)
                buf[i] = ' ';
        } else if (ch == '/' && i + 1 < len && buf[i + 1] == '*') {
            size_t start = i;
            buf[i] = buf[i + 1] = ' ';
            for (i += 2; i < len && !(buf[i] == '*' && i + 1 < len && buf[i + 1] == '/'); i++)
                if (buf[i] != '\n')
                    buf[i] = ' ';
            if (i >= len) {
                problem_at(c, buf, start, "the /* comment is not closed");
                return -1;
            }
            buf[i] = buf[i + 1] = ' ';
            i++;
        } else if (ch == '{' || ch == '[') {
            if (++depth > CONFIG_DEPTH_MAX) {
                problem_at(c, buf, i, "nesting is deeper than %d levels (CONFIG_DEPTH_MAX)",
                           CONFIG_DEPTH_MAX);
                return -1;
            }
        } else if ((ch == '}' || ch == ']') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

/* Read the whole file, at most CONFIG_FILE_MAX bytes. */
static char *read_file(struct ctx *c, const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        problem(c, "", "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        problem(c, "", "not a regular file");
        close(fd);
        return NULL;
    }
    char *buf = malloc(CONFIG_FILE_MAX + 1);
    size_t n = 0;
    if (!buf) {
        problem(c, "", "out of memory");
        close(fd);
        return NULL;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, CONFIG_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            problem(c, "", "cannot read: %s", strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > CONFIG_FILE_MAX) {
            problem(c, "", "the file is larger than %d bytes (CONFIG_FILE_MAX)", CONFIG_FILE_MAX);
            free(buf);
            close(fd);
            return NULL;
        }
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static char *dir_of(const char *path)
{
    char *tmp = strdup(path);
    if (!tmp)
        return NULL;
    char *real = realpath(dirname(tmp), NULL);
    free(tmp);
    return real;
}

/* ---- secrets --------------------------------------------------------------------------- */

static void secret_wipe(struct config_secret *s)
{
    if (s->value) {
        OPENSSL_cleanse(s->value, s->len);
        free(s->value);
    }
    s->value = NULL;
    s->len = 0;
}

static void resolve_one(struct ctx *c, struct config_secret *s, const char *path, bool multiline)
{
    static const enum secrets_source from[] = {
        [CONFIG_SECRET_ENV] = SECRETS_ENV,
        [CONFIG_SECRET_FILE] = SECRETS_FILE,
        [CONFIG_SECRET_COMMAND] = SECRETS_COMMAND,
    };
    secret_wipe(s);
    if (s->source == CONFIG_SECRET_NONE)
        return;
    struct secrets_req q = {
        .source = from[s->source],
        .ref = s->ref,
        .cwd = c->dir,
        .timeout_ms = c->cfg->secret_command_timeout_ms,
        .multiline = multiline,
    };
    char why[SECRETS_WHY_MAX];
    if (secrets_read(&q, &s->value, &s->len, why, sizeof why) < 0)
        problem(c, path, "%s", why);
}

typedef void (*visit_fn)(struct ctx *c, const struct opt *o, void *field, const char *path);

/* Call fn for every option of every object reachable from base. */
static void walk(struct ctx *c, const struct table *t, void *base, const char *path, visit_fn fn)
{
    char sub[PATH_KEY_MAX], item[PATH_KEY_MAX];
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        path_key(sub, sizeof sub, path, o->name);
        if (o->type == T_OBJECT) {
            walk(c, o->sub, AT(base, o->off, char), sub, fn);
        } else if (o->type == T_OBJARRAY) {
            char *arr = *AT(base, o->off, char *);
            size_t n = *AT(base, o->count_off, size_t);
            for (size_t k = 0; arr && k < n; k++) {
                path_index(item, sizeof item, sub, k);
                walk(c, o->sub, arr + k * o->sub->size, item, fn);
            }
        }
        fn(c, o, base, sub);
    }
}

static void visit_resolve(struct ctx *c, const struct opt *o, void *base, const char *path)
{
    if (o->type != T_SECRET)
        return;
    struct config_secret *s = AT(base, o->off, struct config_secret);
    if (s->source == o->src)
        resolve_one(c, s, path, (o->flags & F_MULTILINE) != 0);
}

static void webhook_keys_wipe(struct config_webhook *w)
{
    for (size_t k = 0; k < w->key_count; k++) {
        OPENSSL_cleanse(w->keys[k], w->key_lens[k]);
        free(w->keys[k]);
        w->keys[k] = NULL;
        w->key_lens[k] = 0;
    }
    w->key_count = 0;
    w->key = NULL;
    w->key_len = 0;
}

/* One "whsec_" secret of len bytes at s into the webhook's next key.  `nth`
 * is "" or "secret 2 of 3: " for the messages, which never quote it. */
static bool decode_one_whsec(struct ctx *c, struct config_webhook *w, const char *s, size_t len,
                             const char *sub, const char *nth)
{
    if (len < 6 || strncmp(s, "whsec_", 6) != 0) {
        problem(c, sub, "%sthe secret does not start with \"whsec_\" (Standard Webhooks)", nth);
        return false;
    }
    unsigned char key[CONFIG_WHSEC_MAX_BYTES + 3];
    const char *b64 = s + 6;
    size_t n = 0;
    bool ok = false;
    int rc = len > 6 ? codec_b64_decode(b64, len - 6, key, sizeof key, &n, NULL) : -1;
    if (rc == -1) {
        problem(c, sub, "%sthe part after \"whsec_\" is not valid base64", nth);
    } else if (rc == -2 || n < CONFIG_WHSEC_MIN_BYTES || n > CONFIG_WHSEC_MAX_BYTES) {
        problem(c, sub, "%sthe secret decodes to %s%zu bytes; Standard Webhooks keys are %d to %d",
                nth, rc == -2 ? "more than " : "", rc == -2 ? sizeof key : n,
                CONFIG_WHSEC_MIN_BYTES, CONFIG_WHSEC_MAX_BYTES);
    } else if ((w->keys[w->key_count] = malloc(n))) {
        memcpy(w->keys[w->key_count], key, n);
        w->key_lens[w->key_count++] = n;
        ok = true;
    } else {
        problem(c, sub, "out of memory");
    }
    OPENSSL_cleanse(key, sizeof key);
    return ok;
}

/* secret_env / secret_file: one "whsec_" secret, or several separated by
 * spaces while a secret is rotated; each request is signed with all. */
static void decode_webhook_keys(struct ctx *c, struct config *cfg)
{
    char path[PATH_KEY_MAX], sub[PATH_KEY_MAX], nth[48];
    for (size_t i = 0; i < cfg->webhook_count; i++) {
        struct config_webhook *w = &cfg->webhooks[i];
        webhook_keys_wipe(w);
        if (!w->secret.value)
            continue;
        path_index(path, sizeof path, "webhooks", i);
        path_key(sub, sizeof sub, path,
                 w->secret.source == CONFIG_SECRET_ENV ? "secret_env" : "secret_file");
        const char *v = w->secret.value;
        size_t total = 0;
        for (const char *p = v; *p;) {
            p += strspn(p, " ");
            if (*p)
                total++;
            p += strcspn(p, " ");
        }
        if (total == 0) {
            problem(c, sub, "the secret does not start with \"whsec_\" (Standard Webhooks)");
            continue;
        }
        if (total > CONFIG_WEBHOOK_SECRETS_MAX) {
            problem(c, sub, "holds %zu secrets; the limit is %d (CONFIG_WEBHOOK_SECRETS_MAX)",
                    total, CONFIG_WEBHOOK_SECRETS_MAX);
            continue;
        }
        bool ok = true;
        size_t k = 0;
        for (const char *p = v; *p;) {
            p += strspn(p, " ");
            size_t len = strcspn(p, " ");
            if (!len)
                break;
            k++;
            if (total > 1)
                snprintf(nth, sizeof nth, "secret %zu of %zu: ", k, total);
            else
                nth[0] = '\0';
            ok = decode_one_whsec(c, w, p, len, sub, nth) && ok;
            p += len;
        }
        if (!ok) {
            webhook_keys_wipe(w);
            continue;
        }
        w->key = w->keys[0];
        w->key_len = w->key_lens[0];
    }
}

/* The "Name: value" lines of headers_env / headers_file into
 * secret_headers.  Blank lines and lines starting with '#' are skipped.
 * Messages give the line number, never a value. */
static void parse_secret_headers(struct ctx *c, struct config_webhook *w, const char *sub)
{
    static const char *const reserved[] = {"content-type", "content-length", "host", "user-agent",
                                           "transfer-encoding", "connection", "expect",
                                           "proxy-authorization", NULL};
    const char *v = w->headers_secret.value;
    size_t cap = CONFIG_HEADERS_MAX, lineno = 0;
    struct config_header *h = calloc(cap, sizeof *h);
    size_t k = 0, before = c->errors;
    if (!h) {
        problem(c, sub, "out of memory");
        return;
    }
    for (const char *p = v; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        const char *next = eol ? eol + 1 : p + len;
        lineno++;
        if (len && p[len - 1] == '\r')
            len--;
        size_t lead = 0;
        while (lead < len && (p[lead] == ' ' || p[lead] == '\t'))
            lead++;
        if (lead == len || p[lead] == '#') {
            p = next;
            continue;
        }
        const char *colon = memchr(p, ':', len);
        size_t nlen = colon ? (size_t)(colon - p) : 0;
        bool ok = nlen > 0 && nlen <= WEBHOOK_HEADER_NAME_MAX_CFG;
        for (size_t i = 0; ok && i < nlen; i++)
            ok = (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z') ||
                 (p[i] >= '0' && p[i] <= '9') || strchr("!#$%&'*+-.^_`|~", p[i]) != NULL;
        if (!ok) {
            problem(c, sub, "line %zu is not \"Name: value\" with a valid header name", lineno);
            p = next;
            continue;
        }
        char name[WEBHOOK_HEADER_NAME_MAX_CFG + 1];
        memcpy(name, p, nlen);
        name[nlen] = '\0';
        const char *val = colon + 1;
        size_t vlen = len - nlen - 1;
        while (vlen && (*val == ' ' || *val == '\t')) {
            val++;
            vlen--;
        }
        while (vlen && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
            vlen--;
        bool bad = strncasecmp(name, "webhook-", 8) == 0;
        for (size_t i = 0; reserved[i] && !bad; i++)
            bad = strcasecmp(name, reserved[i]) == 0;
        if (bad) {
            problem(c, sub, "line %zu: %s is set by the bridge itself and cannot be configured",
                    lineno, name);
        } else if (w->auth.present && strcasecmp(name, "authorization") == 0) {
            problem(c, sub, "line %zu: Authorization is already set by auth", lineno);
            bad = true;
        } else if (vlen > 1024) {
            problem(c, sub, "line %zu: the value of %s is longer than 1024 bytes", lineno, name);
            bad = true;
        }
        for (size_t i = 0; i < w->header_count && !bad; i++)
            if (strcasecmp(name, w->headers[i].name) == 0) {
                problem(c, sub, "line %zu: %s is also in headers", lineno, name);
                bad = true;
            }
        for (size_t i = 0; i < k && !bad; i++)
            if (strcasecmp(name, h[i].name) == 0) {
                problem(c, sub, "line %zu: %s is given twice", lineno, name);
                bad = true;
            }
        if (!bad && k + w->header_count >= CONFIG_HEADERS_MAX) {
            problem(c, sub, "line %zu: more than %d headers with those in headers "
                            "(CONFIG_HEADERS_MAX)", lineno, CONFIG_HEADERS_MAX);
            bad = true;
        }
        if (!bad) {
            h[k].name = strdup(name);
            h[k].value = strndup(val, vlen);
            if (!h[k].name || !h[k].value) {
                free(h[k].name);
                free(h[k].value);
                problem(c, sub, "out of memory");
            } else {
                k++;
            }
        }
        p = next;
    }
    if (k == 0 && c->errors == before)
        problem(c, sub, "holds no header (one \"Name: value\" per line)");
    w->secret_headers = h;
    w->secret_header_count = k;
}

static void secret_headers_wipe(struct config_webhook *w)
{
    for (size_t i = 0; w->secret_headers && i < w->secret_header_count; i++) {
        free(w->secret_headers[i].name);
        if (w->secret_headers[i].value) {
            OPENSSL_cleanse(w->secret_headers[i].value, strlen(w->secret_headers[i].value));
            free(w->secret_headers[i].value);
        }
    }
    free(w->secret_headers);
    w->secret_headers = NULL;
    w->secret_header_count = 0;
}

/* After the secrets are read: the secret headers parsed, and the TLS files
 * readable (so check-config finds a wrong path before a delivery does). */
static void decode_webhook_credentials(struct ctx *c, struct config *cfg)
{
    char path[PATH_KEY_MAX], sub[PATH_KEY_MAX];
    for (size_t i = 0; i < cfg->webhook_count; i++) {
        struct config_webhook *w = &cfg->webhooks[i];
        secret_headers_wipe(w);
        path_index(path, sizeof path, "webhooks", i);
        if (w->headers_secret.value) {
            path_key(sub, sizeof sub, path,
                     w->headers_secret.source == CONFIG_SECRET_ENV ? "headers_env"
                                                                   : "headers_file");
            parse_secret_headers(c, w, sub);
        }
        const char *const keys[] = {"ca_file", "client_cert_file", "client_key_file"};
        const char *const vals[] = {w->ca_file, w->client_cert_file, w->client_key_file};
        for (size_t k = 0; k < COUNT(keys); k++) {
            if (!vals[k] || access(vals[k], R_OK) == 0)
                continue;
            path_key(sub, sizeof sub, path, keys[k]);
            problem(c, sub, "cannot read %s: %s", vals[k], strerror(errno));
        }
    }
}

/* secrets_key: 64 hex digits into secrets_key_bytes; the provider-based
 * oauth2 blocks point at it. */
static void decode_secrets_key(struct ctx *c, struct config *cfg)
{
    OPENSSL_cleanse(cfg->secrets_key_bytes, sizeof cfg->secrets_key_bytes);
    cfg->has_secrets_key = false;
    const struct config_secret *s = &cfg->secrets_key;
    if (s->value) {
        struct err e;
        if (secretbox_key_parse(s->value, s->len, cfg->secrets_key_bytes, &e) < 0)
            problem(c, s->source == CONFIG_SECRET_ENV ? "secrets_key_env" : "secrets_key_file",
                    "%s", e.msg);
        else
            cfg->has_secrets_key = true;
    }
    for (size_t i = 0; cfg->accounts && i < cfg->account_count; i++) {
        struct config_oauth2 *o = &cfg->accounts[i].oauth2;
        o->secrets_key = o->present && o->provider != CONFIG_OAUTH2_STATIC && cfg->has_secrets_key
                             ? cfg->secrets_key_bytes
                             : NULL;
    }
}

static int resolve_all(struct ctx *c)
{
    size_t before = c->errors;
    walk(c, &root_table, c->cfg, "", visit_resolve);
    decode_webhook_keys(c, c->cfg);
    decode_webhook_credentials(c, c->cfg);
    decode_secrets_key(c, c->cfg);
    return (int)(c->errors - before);
}

int config_resolve_secrets(struct config *cfg, struct config_diag *d)
{
    if (!cfg)
        return 0;
    struct ctx c = {.d = d, .file = cfg->path, .dir = cfg->dir, .cfg = cfg};
    return resolve_all(&c);
}

void config_instance_id(const struct config *cfg, char *out, size_t size)
{
    char host[256], id[CONFIG_INSTANCE_ID_MAX + 1];
    if (gethostname(host, sizeof host) < 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    if (cfg->store.instance_id)
        snprintf(id, sizeof id, "%.64s", cfg->store.instance_id);
    else if (cfg->store.url)
        snprintf(id, sizeof id, "%.50s:%d", host, cfg->api.listen_port);
    else
        snprintf(id, sizeof id, "%.64s", host); /* a longer name is cut */
    snprintf(out, size, "%s", id);
}

int config_resolve_store_secret(struct config *cfg, struct config_diag *d)
{
    if (!cfg || cfg->store.password.source == CONFIG_SECRET_NONE)
        return 0;
    struct ctx c = {.d = d, .file = cfg->path, .dir = cfg->dir, .cfg = cfg};
    resolve_one(&c, &cfg->store.password, "store.password", false);
    return (int)c.errors;
}

/* ---- free --------------------------------------------------------------------------------- */

static void visit_free(struct ctx *c, const struct opt *o, void *base, const char *path)
{
    (void)c;
    (void)path;
    switch (o->type) {
    case T_STRING:
    case T_NAME:
    case T_PATH:
        free(*AT(base, o->off, char *));
        *AT(base, o->off, char *) = NULL;
        break;
    case T_STRLIST:
    case T_NAMELIST: {
        char **l = *AT(base, o->off, char **);
        for (size_t i = 0; l && i < *AT(base, o->count_off, size_t); i++)
            free(l[i]);
        free(l);
        *AT(base, o->off, char **) = NULL;
        break;
    }
    case T_ENUMLIST:
    case T_DURLIST:
        free(*AT(base, o->off, void *));
        *AT(base, o->off, void *) = NULL;
        break;
    case T_HEADERS: {
        struct config_header *h = *AT(base, o->off, struct config_header *);
        for (size_t i = 0; h && i < *AT(base, o->count_off, size_t); i++) {
            free(h[i].name);
            free(h[i].value);
        }
        free(h);
        *AT(base, o->off, void *) = NULL;
        break;
    }
    case T_SECRET: {
        struct config_secret *s = AT(base, o->off, struct config_secret);
        if (s->source == o->src) {
            secret_wipe(s);
            free(s->ref);
            s->ref = NULL;
        }
        break;
    }
    case T_OBJARRAY:
        /* the elements were visited first (walk recurses before visiting) */
        free(*AT(base, o->off, void *));
        *AT(base, o->off, void *) = NULL;
        break;
    case T_ENUM:
    case T_DURATION:
    case T_SIZE:
    case T_INT:
    case T_BOOL:
    case T_TRIBOOL:
    case T_REFUSED:
    case T_OBJECT:
        break;
    }
}

const struct config_account *config_account_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->account_count; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            return &cfg->accounts[i];
    return NULL;
}

const struct config_webhook *config_webhook_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->webhook_count; i++)
        if (strcmp(cfg->webhooks[i].name, name) == 0)
            return &cfg->webhooks[i];
    return NULL;
}

void config_free(struct config **pcfg)
{
    if (!pcfg || !*pcfg)
        return;
    struct config *cfg = *pcfg;
    for (size_t i = 0; cfg->webhooks && i < cfg->webhook_count; i++) {
        struct config_webhook *w = &cfg->webhooks[i];
        filter_free(w->filter.compiled);
        w->filter.compiled = NULL;
        webhook_keys_wipe(&cfg->webhooks[i]);
        secret_headers_wipe(&cfg->webhooks[i]);
    }
    for (size_t i = 0; cfg->accounts && i < cfg->account_count; i++) {
        free(cfg->accounts[i].webhook_index);
        free(cfg->accounts[i].webhook_cfg);
    }
    OPENSSL_cleanse(cfg->secrets_key_bytes, sizeof cfg->secrets_key_bytes);
    free(cfg->api.listen_host);
    struct ctx c = {.cfg = cfg};
    walk(&c, &root_table, cfg, "", visit_free);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
    *pcfg = NULL;
}

/* ---- load ---------------------------------------------------------------------------------- */

static struct config *load(const char *path, struct config_diag *d, bool secrets);

struct config *config_load(const char *path, struct config_diag *d)
{
    return load(path, d, true);
}

struct config *config_load_layout(const char *path, struct config_diag *d)
{
    return load(path, d, false);
}

static struct config *load(const char *path, struct config_diag *d, bool secrets)
{
    struct ctx c = {.d = d, .file = path ? path : "(null)"};
    if (!path) {
        problem(&c, "", "no configuration file given");
        return NULL;
    }
    size_t len;
    char *text = read_file(&c, path, &len);
    if (!text)
        return NULL;
    if (strip_comments(&c, text, len) < 0) {
        OPENSSL_cleanse(text, len);
        free(text);
        return NULL;
    }
    const char *end = NULL;
    /* len + 1: cJSON's "require_null_terminated" wants the NUL inside the
     * length; strip_comments() refused NUL bytes in the text itself. */
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (!root) {
        size_t off = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
        char near[32], sh[SHOW_MAX + 8];
        size_t k = 0;
        while (k < 16 && off + k < len && text[off + k] != '\n' && text[off + k] != '\r') {
            near[k] = text[off + k];
            k++;
        }
        near[k] = '\0';
        if (off >= len || text[off] == '\0' || k == 0)
            problem_at(&c, text, off, "invalid JSON near the end of the file");
        else
        {
            show(near, sh, sizeof sh);
            size_t sl = strlen(sh);
            sh[0] = sh[sl - 1] = '\'';
            problem_at(&c, text, off, "invalid JSON near %s", sh);
        }
        OPENSSL_cleanse(text, len);
        free(text);
        return NULL;
    }
    OPENSSL_cleanse(text, len); /* a refused literal secret may be in it */
    free(text);

    struct config *cfg = calloc(1, sizeof *cfg);
    char *dir = dir_of(path);
    if (!cfg || !dir || !(cfg->path = strdup(path))) {
        problem(&c, "", "cannot resolve the file's directory: %s", strerror(errno));
        free(cfg);
        free(dir);
        cJSON_Delete(root);
        return NULL;
    }
    cfg->dir = dir;
    c.dir = dir;
    c.cfg = cfg;
    if (!cJSON_IsObject(root))
        problem(&c, "", "the top level must be a JSON object, got %s", json_type(root));
    else
        parse_table(&c, &root_table, cfg, root, "");
    cJSON_Delete(root);
    char why[PERMS_WHY_MAX], key[PATH_KEY_MAX]; /* perms.h: who else may read these files */
    if (perms_check(path, PERMS_CONFIG, why, sizeof why) < 0)
        problem(&c, "", "%s", why);
    if (cfg->state_dir && perms_check(cfg->state_dir, PERMS_STATE_DIR, why, sizeof why) < 0)
        problem(&c, "state_dir", "%s", why);
    for (size_t i = 0; secrets && cfg->webhooks && i < cfg->webhook_count; i++) {
        const struct config_webhook *w = &cfg->webhooks[i]; /* the cert file holds the key */
        const char *k = w->client_key_file ? w->client_key_file : w->client_cert_file;
        snprintf(key, sizeof key, "webhooks[%zu].%s", i, w->client_key_file ? "client_key_file"
                                                                             : "client_cert_file");
        if (k && perms_check(k, PERMS_SECRET, why, sizeof why) < 0)
            problem(&c, key, "%s", why);
    }
    if (secrets)
        resolve_all(&c);
    if (c.errors) {
        config_free(&cfg);
        return NULL;
    }
    return cfg;
}

/* ---- summary ------------------------------------------------------------------------------ */

static void print_value(FILE *out, const struct opt *o, void *base)
{
    char b[48];
    switch (o->type) {
    case T_STRING:
    case T_NAME:
    case T_PATH: {
        const char *s = *AT(base, o->off, char *);
        fprintf(out, "%s", s ? s : "-");
        break;
    }
    case T_ENUM:
        fprintf(out, "%s", o->values[*AT(base, o->off, int)]);
        break;
    case T_DURATION: {
        int64_t v = *AT(base, o->off, int64_t);
        fprintf(out, "%s", v ? units_format_duration(v, b, sizeof b) : "-");
        break;
    }
    case T_SIZE:
        fprintf(out, "%s", units_format_size(*AT(base, o->off, uint64_t), b, sizeof b));
        break;
    case T_INT:
        fprintf(out, "%d", *AT(base, o->off, int));
        break;
    case T_BOOL:
        fprintf(out, "%s", *AT(base, o->off, bool) ? "true" : "false");
        break;
    case T_TRIBOOL: {
        int t = *AT(base, o->off, int);
        fprintf(out, "%s", t == CONFIG_TRUE ? "true" : t == CONFIG_FALSE ? "false" : "-");
        break;
    }
    case T_STRLIST:
    case T_NAMELIST:
    case T_ENUMLIST:
    case T_DURLIST:
    case T_HEADERS: {
        size_t n = *AT(base, o->count_off, size_t);
        if (!n)
            fprintf(out, "-");
        for (size_t i = 0; i < n; i++) {
            if (i)
                fputc(',', out);
            if (o->type == T_ENUMLIST)
                fprintf(out, "%s", o->values[(*AT(base, o->off, int *))[i]]);
            else if (o->type == T_DURLIST)
                fprintf(out, "%s",
                        units_format_duration((*AT(base, o->off, int64_t *))[i], b, sizeof b));
            else if (o->type == T_HEADERS) /* names only: values may be private */
                fprintf(out, "%s", (*AT(base, o->off, struct config_header *))[i].name);
            else
                fprintf(out, "%s", (*AT(base, o->off, char **))[i]);
        }
        break;
    }
    default:
        break;
    }
}

static void print_object(FILE *out, const struct table *t, void *base, int indent)
{
    fprintf(out, "%*s%s", indent, "", t->label);
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        if (o->type == T_NAME) {
            fprintf(out, " %s", *AT(base, o->off, char *));
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        if (o->type == T_NAME || o->type == T_REFUSED || o->type == T_OBJECT ||
            o->type == T_OBJARRAY)
            continue;
        if (o->type == T_SECRET) {
            const struct config_secret *s = AT(base, o->off, struct config_secret);
            if (s->source != o->src)
                continue;
            /* the key name without its _env/_file/_command suffix */
            size_t klen = strlen(o->name) - strlen(secret_suffix(s->source)) - 1;
            fprintf(out, " %.*s=%s%s", (int)klen, o->name,
                    s->source == CONFIG_SECRET_ENV    ? "env:"
                    : s->source == CONFIG_SECRET_FILE ? "file:"
                                                      : "command",
                    s->source == CONFIG_SECRET_COMMAND ? "" : s->ref);
            continue;
        }
        if (o->values == auth_names && *AT(base, o->count_off, size_t) == 0) {
            fprintf(out, " %s=strongest-offered", o->name);
            continue;
        }
        fprintf(out, " %s=", o->name);
        print_value(out, o, base);
    }
    fputc('\n', out);
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        if (o->type == T_OBJECT) {
            void *sub = AT(base, o->off, char);
            if (o->sub->present_off == NO_OFF || *AT(sub, o->sub->present_off, bool))
                print_object(out, o->sub, sub, indent + 2);
        } else if (o->type == T_OBJARRAY) {
            char *arr = *AT(base, o->off, char *);
            size_t n = *AT(base, o->count_off, size_t);
            for (size_t k = 0; k < n; k++)
                print_object(out, o->sub, arr + k * o->sub->size, indent + 2);
        }
    }
}

void config_print_summary(const struct config *cfg, FILE *out)
{
    if (!cfg)
        return;
    fprintf(out, "%s: valid (%zu account%s, %zu webhook%s, %zu API token%s)\n", cfg->path,
            cfg->account_count, cfg->account_count == 1 ? "" : "s", cfg->webhook_count,
            cfg->webhook_count == 1 ? "" : "s", cfg->api.token_count,
            cfg->api.token_count == 1 ? "" : "s");
    print_object(out, &root_table, (void *)cfg, 0);
}

static void print_keys(FILE *out, const struct table *t, const char *prefix)
{
    char sub[PATH_KEY_MAX];
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        path_key(sub, sizeof sub, prefix, o->name);
        fprintf(out, "%s %s%s%s%s\n", sub, type_names[o->type],
                (o->flags & F_REQUIRED) ? " required" : "", o->def ? " default " : "",
                o->def ? o->def : "");
        if (o->type == T_OBJECT) {
            print_keys(out, o->sub, sub);
        } else if (o->type == T_OBJARRAY) {
            int r = snprintf(sub, sizeof sub, "%s%s%s[]", prefix, *prefix ? "." : "", o->name);
            if (r > 0 && (size_t)r < sizeof sub)
                print_keys(out, o->sub, sub);
        }
    }
}

void config_print_keys(FILE *out)
{
    print_keys(out, &root_table, "");
}

const char *config_oauth2_provider_name(enum config_oauth2_provider p)
{
    return (size_t)p < COUNT(oauth2_providers) - 1 ? oauth2_providers[p] : "unknown";
}

const char *config_oauth2_flow_name(enum config_oauth2_flow f)
{
    return (size_t)f < COUNT(oauth2_flows) - 1 ? oauth2_flows[f] : "unknown";
}

/* ---- check-config ------------------------------------------------------------------------------ */

int config_check_main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        if (argc == 2 && (strcmp(argv[1], "--keys") == 0)) {
            config_print_keys(stdout);
            return CONFIG_EXIT_OK;
        }
        fprintf(stderr, "usage: pop3bridge check-config FILE\n"
                        "       pop3bridge check-config --keys   (list every key)\n");
        return CONFIG_EXIT_USAGE;
    }
    struct config_diag d = {0};
    struct config *cfg = config_load(argv[1], &d);
    if (!cfg) {
        config_diag_print(&d, stderr);
        fprintf(stderr, "%s: %zu problem%s\n", argv[1], d.count + d.dropped,
                d.count + d.dropped == 1 ? "" : "s");
        config_diag_free(&d);
        return CONFIG_EXIT_INVALID;
    }
    config_print_summary(cfg, stdout);
    config_free(&cfg);
    config_diag_free(&d);
    return CONFIG_EXIT_OK;
}
