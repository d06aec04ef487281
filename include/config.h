/*
 * config — loads and validates the bridge's configuration file into plain
 * structs.
 *
 * The file is JSON (RFC 8259) with two additions: `// line` and
 * `/ * block * /` comments.  config/example.json documents every key; the
 * keys, their types, defaults and bounds live in one table per kind of
 * object in bridge/config.c, which drives parsing, validation messages, the
 * summary and config_print_keys().
 *
 *  - Durations are strings with a unit ("500ms", "30s", "5m", "2h", "7d");
 *    sizes are strings ("256KiB", "25MiB") or integers (bytes); see units.h.
 *  - Relative paths (state_dir, ca_file, *_file) are resolved against the
 *    directory that holds the configuration file, not the current directory.
 *    *_command secrets run with that directory as their working directory.
 *  - Unknown keys, keys given twice, wrong types and out-of-range values are
 *    errors.  Every problem is collected, not just the first, each as one
 *    line "FILE: key.path: what is wrong" (or "FILE:LINE:COL: ..." for JSON
 *    syntax errors), e.g.
 *      demo.json: accounts[1].poll_interval: "5x" is not a duration (use ms, s, m, h or d)
 *  - Secrets (POP3 passwords, OAuth2 tokens and client secrets, the secrets
 *    key, webhook secrets, API tokens)
 *    come only from environment variables (*_env), files (*_file) or
 *    commands (*_command, run with /bin/sh -c; the first line of stdout).
 *    A secret written into the JSON itself is refused.  Secrets are read
 *    when the file is loaded, so a missing variable is reported then; they
 *    never appear in a diagnostic or in the summary, and the memory holding
 *    them is wiped (OPENSSL_cleanse) by config_free().
 *  - Webhook secrets follow Standard Webhooks: "whsec_" + base64 of a
 *    24..64-byte key; the decoded key is kept in config_webhook.key.  While
 *    a secret is rotated, secret_env / secret_file may hold up to
 *    CONFIG_WEBHOOK_SECRETS_MAX of them separated by spaces (config_webhook.
 *    keys: each request is signed with every one).
 *  - A webhook's credentials for its receiver (auth.basic, auth.bearer_*,
 *    headers_env / headers_file: "Name: value" lines) are secrets too, and
 *    only allowed with an https:// url unless allow_plaintext_credentials;
 *    ca_file and client_cert_file / client_key_file (mutual TLS) apply to
 *    https:// urls only, proxy (http://host:port, CONNECT) to both.
 *  - An account's "oauth2" either names a static bearer token (token_env,
 *    token_file, token_command) or a provider (microsoft, google, custom)
 *    with client_id, flow and friends; then its tokens are kept in the
 *    store, sealed under the top-level secrets key (secrets_key_env or
 *    secrets_key_file: 64 hex digits, `openssl rand -hex 32`), which is then
 *    required.  Token endpoints are https:// only.
 *
 * A *_command runs in a child process (fork + /bin/sh -c, stdin /dev/null,
 * its own process group, killed with SIGKILL at secret_command_timeout), so
 * the caller must not set SIGCHLD to SIG_IGN.
 *
 * Ownership: config_load() returns a struct config that the caller owns and
 * releases with config_free(); every pointer inside it stays valid until
 * then.  A config is read-only once loaded and may be shared by threads.
 * The diagnostics are owned by the caller's struct config_diag (start it
 * zeroed: `struct config_diag d = {0};`) and released with
 * config_diag_free().
 */
#ifndef POP3BRIDGE_CONFIG_H
#define POP3BRIDGE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- limits (exceeding one is a diagnostic that names it) --------------- */
#define CONFIG_FILE_MAX (1024 * 1024)        /* bytes in the configuration file */
#define CONFIG_DEPTH_MAX 16                  /* nesting of objects and arrays */
#define CONFIG_DIAG_MAX 100                  /* lines kept; the rest are counted */
#define CONFIG_DIAG_LINE_MAX 2048            /* one diagnostic line (room for three paths) */
#define CONFIG_NAME_MAX 64                   /* account/webhook/token names */
#define CONFIG_STRING_MAX 4096               /* any other string value */
#define CONFIG_ACCOUNTS_MAX 1000
#define CONFIG_WEBHOOKS_MAX 100
#define CONFIG_TOKENS_MAX 100
#define CONFIG_LIST_MAX 64                   /* items in auth, cors_origins, account webhooks */
#define CONFIG_RETRY_MAX 32                  /* items in retry_schedule */
#define CONFIG_HEADERS_MAX 32                /* extra headers on a webhook */
#define CONFIG_ADDRESS_MAX 320               /* bytes of an account's address */
#define CONFIG_AUTHSERV_ID_MAX 255           /* bytes of one trusted authserv-id */
#define CONFIG_WHSEC_MIN_BYTES 24            /* Standard Webhooks key length bounds */
#define CONFIG_WHSEC_MAX_BYTES 64
#define CONFIG_WEBHOOK_SECRETS_MAX 4         /* "whsec_" secrets in one secret_env/_file,
                                                space-separated (rotation); = WEBHOOK_KEYS_MAX */

/* ---- values ----------------------------------------------------------- */
enum config_log_level { CONFIG_LOG_ERROR, CONFIG_LOG_WARN, CONFIG_LOG_INFO, CONFIG_LOG_DEBUG };
/* the same order as enum log_format (log.h) */
enum config_log_format { CONFIG_LOG_TEXT, CONFIG_LOG_JSON, CONFIG_LOG_JOURNAL };
enum config_tls { CONFIG_TLS_IMPLICIT, CONFIG_TLS_STARTTLS, CONFIG_TLS_NONE };
enum config_start { CONFIG_START_NEW, CONFIG_START_ALL };
enum config_after { CONFIG_AFTER_KEEP, CONFIG_AFTER_DELETE };

/* POP3 authentication methods, in the order the names appear in the file. */
enum config_auth {
    CONFIG_AUTH_USER,          /* USER/PASS (RFC 1939) */
    CONFIG_AUTH_APOP,          /* APOP (RFC 1939) */
    CONFIG_AUTH_PLAIN,         /* SASL PLAIN (RFC 4616) */
    CONFIG_AUTH_LOGIN,         /* SASL LOGIN */
    CONFIG_AUTH_CRAM_MD5,      /* SASL CRAM-MD5 (RFC 2195) */
    CONFIG_AUTH_SCRAM_SHA_1,   /* SASL SCRAM-SHA-1 (RFC 5802) */
    CONFIG_AUTH_SCRAM_SHA_256, /* SASL SCRAM-SHA-256 (RFC 7677) */
    CONFIG_AUTH_XOAUTH2,       /* SASL XOAUTH2 (needs oauth2) */
    CONFIG_AUTH_OAUTHBEARER,   /* SASL OAUTHBEARER (RFC 7628, needs oauth2) */
};

enum config_secret_source {
    CONFIG_SECRET_NONE,
    CONFIG_SECRET_ENV,     /* ref = variable name */
    CONFIG_SECRET_FILE,    /* ref = absolute path; first line, trailing CR/LF removed */
    CONFIG_SECRET_COMMAND, /* ref = shell command; first line of its stdout */
};

struct config_secret {
    enum config_secret_source source;
    char *ref;    /* where it comes from (not secret); NULL when source is NONE */
    char *value;  /* the secret, NUL-terminated; NULL until resolved; wiped on free */
    size_t len;
};

struct config_header {
    char *name;
    char *value;
};

/* Event types a webhook's filter may list (filter.h filter_event_types). */
enum config_event_type {
    CONFIG_EV_MESSAGE_RECEIVED,
    CONFIG_EV_MESSAGE_BOUNCE,
    CONFIG_EV_MESSAGE_TOO_LARGE,
    CONFIG_EV_ACCOUNT_AUTH_ERROR,
};

/* A boolean that may be left out. */
enum config_tristate { CONFIG_UNSET, CONFIG_FALSE, CONFIG_TRUE };

struct filter; /* filter.h: a compiled filter */

/* A webhook's routing filter (filter.h says what each condition means). */
struct config_filter {
    bool present;                 /* "filter" was given */
    int *types;                   /* enum config_event_type; none: message.* events */
    size_t type_count;
    char **to;                    /* address globs: To, Cc, Delivered-To */
    size_t to_count;
    char **from;                  /* address globs: From */
    size_t from_count;
    char *subject;                /* PCRE2 pattern, or NULL */
    struct config_header *headers; /* header name -> PCRE2 pattern of its value */
    size_t header_count;
    int has_attachments;          /* enum config_tristate */
    bool exclude_auto_replies;    /* default false */
    struct filter *compiled;      /* compiled at load when present; freed by config_free */
};

/* What a webhook's events carry (issue 12 §3): payload.include names. */
enum config_include {
    CONFIG_INC_TEXT,
    CONFIG_INC_HTML,
    CONFIG_INC_HEADERS,
    CONFIG_INC_ATTACHMENTS,
    CONFIG_INC_RAW_URL,
};
#define CONFIG_PAYLOAD_HEADERS_MAX 64 /* names in payload.headers */

struct config_payload {
    bool present;                 /* "payload" was given; else everything, uncut */
    int *include;                 /* enum config_include; default all five */
    size_t include_count;
    uint64_t text_max;            /* text and html cut to this many bytes; 0: not cut */
    char **headers;               /* ["all"] (default), ["none"], or header names */
    size_t header_count;
};

/* A webhook's credentials for its receiver ("auth"): HTTP Basic or a bearer token. */
struct config_webhook_basic {
    bool present;                 /* "basic" was given */
    char *username;               /* required; no ':' */
    struct config_secret password; /* password_env / password_file; required */
};

struct config_webhook_auth {
    bool present;                 /* "auth" was given: exactly one of basic or bearer */
    struct config_webhook_basic basic;
    struct config_secret bearer;  /* bearer_env / bearer_file */
};

struct config_webhook {
    char *name;                   /* [A-Za-z0-9._-]{1,64}, unique */
    char *url;                    /* http:// or https:// */
    struct config_secret secret;  /* "whsec_..." as given; during a rotation several,
                                     space-separated (at most CONFIG_WEBHOOK_SECRETS_MAX) */
    unsigned char *key;           /* the first secret's key: keys[0] */
    size_t key_len;
    unsigned char *keys[CONFIG_WEBHOOK_SECRETS_MAX]; /* every secret's base64-decoded key, */
    size_t key_lens[CONFIG_WEBHOOK_SECRETS_MAX];     /* in the order given; wiped on free */
    size_t key_count;             /* each request carries one signature per key */
    struct config_webhook_auth auth;
    struct config_secret headers_secret; /* headers_env / headers_file: "Name: value" lines */
    struct config_header *secret_headers; /* parsed from it; values wiped on free */
    size_t secret_header_count;
    bool allow_plaintext_credentials; /* default false: credentials only over https:// */
    char *ca_file;                /* trust anchors for the receiver; NULL: system store */
    char *client_cert_file;       /* PEM client certificate (mutual TLS), or NULL */
    char *client_key_file;        /* its key; NULL: in client_cert_file */
    char *proxy;                  /* "http://host:port" tunnelled with CONNECT; NULL: none */
    int64_t timeout_ms;           /* default 15s */
    int64_t *retry_ms;            /* delays before retry 1, 2, ...; default 5s 30s 2m 10m 30m 1h 2h 4h 8h 16h */
    size_t retry_count;
    uint64_t inline_attachments_max; /* default 256KiB */
    uint64_t inline_total_max;    /* inlined bytes per event, all attachments; default 1MiB
                                     (0: nothing inlined) */
    int max_in_flight;            /* requests to this webhook at once; default 8 */
    struct config_header *headers;   /* extra request headers */
    size_t header_count;
    struct config_filter filter;  /* which events it gets (filter.h) */
    struct config_payload payload; /* what they carry (event.h) */
};

/* Where an account's OAuth2 access tokens come from. */
enum config_oauth2_provider {
    CONFIG_OAUTH2_STATIC,      /* a bearer token from token_env/_file/_command, renewed by
                                  someone else */
    CONFIG_OAUTH2_MICROSOFT,   /* Microsoft identity platform (Microsoft 365, Outlook.com) */
    CONFIG_OAUTH2_GOOGLE,      /* Google (Gmail) */
    CONFIG_OAUTH2_CUSTOM,      /* any RFC 6749 server: token_url and friends given */
};

/* How the grant is obtained (`pop3bridge oauth2 login`). */
enum config_oauth2_flow {
    CONFIG_FLOW_DEVICE_CODE,        /* RFC 8628 device authorization */
    CONFIG_FLOW_AUTHORIZATION_CODE, /* RFC 6749 §4.1 + PKCE (RFC 7636), loopback redirect */
    CONFIG_FLOW_CLIENT_CREDENTIALS, /* RFC 6749 §4.4: app-only, no refresh token */
};

#define CONFIG_SECRETS_KEY_LEN 32    /* bytes of secrets_key (64 hex digits) */

struct config_oauth2 {
    bool present;                 /* "oauth2" was given */
    enum config_oauth2_provider provider; /* default static */
    struct config_secret token;   /* static: token_env / token_file / token_command */
    /* provider-based (microsoft, google, custom): tokens live in the store,
     * sealed with the configuration's secrets key (include/oauth2.h) */
    char *tenant;                 /* microsoft only; default "organizations" */
    enum config_oauth2_flow flow; /* default device_code */
    char *client_id;              /* required with a provider */
    struct config_secret client_secret; /* client_secret_env / _file / _command; optional */
    char *scope;                  /* NULL: the provider's default for the flow */
    char *token_url;              /* custom only (required there); https:// */
    char *device_authorization_url; /* custom only; required for device_code */
    char *authorization_url;      /* custom only; required for authorization_code */
    char *ca_file;                /* trust anchors for the token endpoint; NULL: system */
    const unsigned char *secrets_key; /* with a provider: config.secrets_key_bytes, else NULL */
};

/* De-duplication of an account's messages (issue 12 §6). */
enum config_dedupe_by { CONFIG_DEDUPE_MESSAGE_ID };
struct config_dedupe {
    bool present;                 /* "dedupe" was given */
    enum config_dedupe_by by;     /* default message_id */
    int64_t window_ms;            /* default 30d */
};

struct config_account {
    char *name;                   /* [A-Za-z0-9._-]{1,64}, unique */
    char *host;
    int port;                     /* default 995 with tls implicit, else 110 */
    enum config_tls tls;          /* default implicit */
    char *username;
    struct config_secret password; /* password_env / password_file / password_command */
    struct config_oauth2 oauth2;   /* exactly one of password or oauth2 */
    enum config_auth *auth;        /* allowed methods in preference order; */
    size_t auth_count;             /*   0 = strongest the server offers */
    char *ca_file;                 /* NULL = system CA store */
    char *fingerprint;             /* "sha256:<64 hex>" as given, or NULL */
    unsigned char fingerprint_sha256[32]; /* decoded, valid when fingerprint != NULL */
    bool allow_plaintext;          /* default false */
    int64_t timeout_ms;            /* per network read/write; default 60s */
    int64_t session_timeout_ms;    /* a whole POP3 session (a poll, an API call or
                                      session); default 10m */
    int64_t poll_interval_ms;      /* default 60s */
    enum config_start start;       /* default new */
    enum config_after after_delivery; /* default keep */
    int64_t delete_after_ms;       /* 0 = not set (only with keep) */
    uint64_t max_message_size;     /* default 25MiB */
    int max_messages_per_poll;     /* default 500 */
    char **webhooks;               /* names of the webhooks messages go to */
    size_t webhook_count;
    size_t *webhook_index;         /* the same, as indexes into config.webhooks */
    const struct config_webhook **webhook_cfg; /* the same, as the webhooks themselves */
    char *address;                 /* the mailbox's address (mailbox_hash); default:
                                      the username when it is one, else NULL */
    char **trusted_authserv_ids;   /* Authentication-Results written by these are */
    size_t trusted_authserv_id_count; /* believed; default []: only the topmost one */
    struct config_dedupe dedupe;   /* a Message-ID stored within the window again: recorded
                                      as a duplicate, not delivered */
};

struct config_token {
    char *name;                    /* [A-Za-z0-9._-]{1,64}, unique */
    struct config_secret token;    /* token_env / token_file */
};

struct config_api {
    char *listen;                  /* "host:port", "[v6]:port"; default 127.0.0.1:8025 */
    char *listen_host;             /* host part without brackets */
    int listen_port;
    char *public_url;              /* default "http://" + listen; no trailing '/' */
    struct config_token *tokens;
    size_t token_count;
    char **cors_origins;           /* default none: CORS off */
    size_t cors_origin_count;
    int sessions_per_account;      /* default 4 */
    int sessions_total;            /* default 64 */
    int64_t session_idle_timeout_ms; /* default 60s */
    uint64_t max_request_body;     /* default 1MiB */
    int max_url_length;            /* default 8192 */
    int64_t request_timeout_ms;    /* default 30s: a one-shot POP3 call, a silent connection */
    int64_t request_read_timeout_ms; /* default 10s: a whole request (head and body) */
    int max_connections;           /* default 1024 */
    int max_connections_per_client; /* default 64: from one client address */
    int threads;                   /* default 4: HTTP threads */
    int mailbox_workers;           /* default 16: the API's POP3 operations at once */
    char *web_dir;                 /* the dashboard's files; NULL: found next to the
                                      binary (see api.h); absolute */
};

/* "store": where the state lives.  Absent, or the string "sqlite": SQLite
 * under state_dir (url NULL).  An object: PostgreSQL, shared by several
 * instances (see include/store.h). */
struct config_store {
    char *url;                     /* "postgresql://user@host:port/db?..." without a
                                      password; NULL: SQLite */
    struct config_secret password; /* password_env / password_file; optional (libpq's
                                      PGPASSFILE also works) */
    int pool;                      /* connections per instance; default 8 */
    int64_t lease_ms;              /* accounts and deliveries an instance took stay its
                                      own this long without renewal; default 30s
                                      (PostgreSQL only) */
    char *instance_id;             /* this instance's lease owner name; default: the
                                      host name, and ":<api port>" after it with
                                      PostgreSQL */
};

struct config {
    char *path;                    /* the file as given to config_load */
    char *dir;                     /* its directory, absolute */
    char *state_dir;               /* required; absolute */
    enum config_log_level log_level; /* default info */
    enum config_log_format log_format; /* default text */
    int64_t retention_ms;          /* raw messages kept this long after delivery; default 30d */
    int64_t secret_command_timeout_ms; /* limit for each *_command; default 10s */
    int64_t links_ttl_ms;          /* signed links (raw_url, attachment url) stay valid this
                                      long; default 7d */
    struct config_secret secrets_key; /* secrets_key_env / secrets_key_file: 64 hex digits,
                                         required once an account uses an oauth2 provider */
    unsigned char secrets_key_bytes[CONFIG_SECRETS_KEY_LEN]; /* decoded; wiped on free */
    bool has_secrets_key;
    struct config_api api;
    struct config_store store;
    struct config_webhook *webhooks;
    size_t webhook_count;
    struct config_account *accounts;
    size_t account_count;
};

/* Collected diagnostics: one formatted line each (no trailing newline). */
struct config_diag {
    char **lines;
    size_t count;
    size_t dropped;                /* lines not kept beyond CONFIG_DIAG_MAX */
};

/* Load, validate and resolve the secrets of the file at `path`.  Returns the
 * configuration, or NULL if there was any problem; every problem is appended
 * to `d` (which may be NULL to discard them).  Problems: the file cannot be
 * read or is larger than CONFIG_FILE_MAX; a comment is not closed; nesting
 * deeper than CONFIG_DEPTH_MAX; a JSON syntax error (with line and column);
 * unknown or repeated keys; wrong types; bad values; inconsistent keys;
 * a secret that cannot be resolved (see config_resolve_secrets). */
struct config *config_load(const char *path, struct config_diag *d);

/* The same, without reading any secret (every config_secret's value stays
 * NULL, webhook keys undecoded): for commands that need only where things
 * are, such as the state directory (`store`, `export`), run where the
 * service's secrets are not at hand. */
struct config *config_load_layout(const char *path, struct config_diag *d);

/* (Re)read every secret of `cfg` from its env var, file or command, wiping
 * the previous values, and decode the webhook keys.  Returns the number of
 * problems appended to `d`: variable not set or empty, file unreadable,
 * empty or larger than SECRETS_MAX, command failing (non-zero exit,
 * killed, over secret_command_timeout, more than SECRETS_OUTPUT_MAX
 * bytes, empty), webhook secret not "whsec_" + valid base64 of the right
 * length.  config_load() calls it; call it again to refresh tokens. */
int config_resolve_secrets(struct config *cfg, struct config_diag *d);

#define CONFIG_INSTANCE_ID_MAX 64  /* bytes of an instance id */
/* This instance's id, the owner of its leases, into out (at most
 * CONFIG_INSTANCE_ID_MAX bytes + NUL): store.instance_id, else the host name,
 * with ":<api port>" after it when the store is PostgreSQL (instances on one
 * host differ).  Stable across restarts, so a restarted instance takes its
 * own leases back at once. */
void config_instance_id(const struct config *cfg, char *out, size_t size);

/* Resolve only store.password (after config_load_layout: the commands that
 * open a PostgreSQL store).  The number of problems appended to `d`. */
int config_resolve_store_secret(struct config *cfg, struct config_diag *d);

/* Release everything, wiping secrets; sets *cfg to NULL.  NULL is a no-op. */
void config_free(struct config **cfg);

/* The account / webhook of that name in cfg, or NULL.  Borrowed from cfg. */
const struct config_account *config_account_find(const struct config *cfg, const char *name);
const struct config_webhook *config_webhook_find(const struct config *cfg, const char *name);

/* A human summary without secrets (secrets are shown as env:NAME, file:PATH
 * or "command"): what `pop3bridge check-config FILE` prints. */
void config_print_summary(const struct config *cfg, FILE *out);

/* Every key the file may hold, one per line with its type and default
 * ("accounts[].poll_interval duration \"60s\""), from the tables. */
void config_print_keys(FILE *out);

/* The names the file uses: "static", "microsoft"...; "device_code"... */
const char *config_oauth2_provider_name(enum config_oauth2_provider p);
const char *config_oauth2_flow_name(enum config_oauth2_flow f);

/* Diagnostics: print one per line; release (d itself is not freed). */
void config_diag_print(const struct config_diag *d, FILE *out);
void config_diag_free(struct config_diag *d);

/* config_load() (or, with layout_only, config_load_layout()) for a command:
 * the configuration, or NULL after printing every problem to out. */
struct config *config_load_or_print(const char *path, bool layout_only, FILE *out);

/* `pop3bridge check-config FILE`: argv[0] is "check-config".  Prints the
 * summary to stdout and returns CONFIG_EXIT_OK when valid; prints every
 * problem to stderr and returns CONFIG_EXIT_INVALID when not;
 * CONFIG_EXIT_USAGE on a usage error (the same number as CLI_EXIT_USAGE). */
#define CONFIG_EXIT_OK 0
#define CONFIG_EXIT_INVALID 1
#define CONFIG_EXIT_USAGE 2
int config_check_main(int argc, char **argv);

#endif
