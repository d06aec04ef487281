/* config_check — what one key cannot say alone: the checks across keys, one
 * per table; see config_impl.h.
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

void cfg_check_store(struct ctx *c, void *obj, const char *path)
{
    struct config_store *s = obj;
    char sub[PATH_KEY_MAX];
    cfg_path_key(sub, sizeof sub, path, "url");
    if (!s->url) {
        if (s->password.source != CONFIG_SECRET_NONE)
            cfg_problem(c, sub, "password_env / password_file need a PostgreSQL url");
        return;
    }
    const char *rest = NULL;
    if (strncmp(s->url, "postgresql://", 13) == 0)
        rest = s->url + 13;
    else if (strncmp(s->url, "postgres://", 11) == 0)
        rest = s->url + 11;
    if (!rest) {
        cfg_problem(c, sub, "expected a postgresql:// URL");
        return;
    }
    /* user:password@ in the URL: the password would sit in the file */
    size_t auth = strcspn(rest, "/?");
    const char *at = memchr(rest, '@', auth);
    if (at && memchr(rest, ':', (size_t)(at - rest)))
        cfg_problem(c, sub, "the URL holds a password; use store.password_env or"
                        " store.password_file");
}

void cfg_check_api(struct ctx *c, void *obj, const char *path)
{
    struct config_api *a = obj;
    char sub[PATH_KEY_MAX], sh[SHOW_MAX + 8];
    cfg_path_key(sub, sizeof sub, path, "listen");
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
                cfg_problem(c, sub, "%s is not [IPv6]:port", cfg_show(s, sh, sizeof sh));
                ok = false;
            } else {
                memcpy(host, s + 1, hl);
                host[hl] = '\0';
                unsigned char addr[16];
                if (inet_pton(AF_INET6, host, addr) != 1) {
                    cfg_problem(c, sub, "%s is not an IPv6 address", cfg_show(host, sh, sizeof sh));
                    ok = false;
                }
            }
        } else {
            colon = strrchr(s, ':');
            hl = colon ? (size_t)(colon - s) : 0;
            if (!colon || hl == 0 || hl >= sizeof host) {
                cfg_problem(c, sub, "%s is not host:port (e.g. \"127.0.0.1:8025\", \"[::1]:8025\")",
                        cfg_show(s, sh, sizeof sh));
                ok = false;
            } else {
                memcpy(host, s, hl);
                host[hl] = '\0';
                for (const char *p = host; *p && ok; p++)
                    ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                         (*p >= '0' && *p <= '9') || *p == '.' || *p == '-';
                if (!ok)
                    cfg_problem(c, sub, "%s: the host is not a name or IPv4 address (IPv6 goes in "
                                    "brackets: \"[::1]:8025\")",
                            cfg_show(s, sh, sizeof sh));
            }
        }
        if (ok) {
            a->listen_port = parse_port(colon + 1);
            if (a->listen_port < 0) {
                cfg_problem(c, sub, "the port in %s must be 1 to 65535", cfg_show(s, sh, sizeof sh));
            } else {
                free(a->listen_host);
                a->listen_host = strdup(host);
            }
        }
    }
    cfg_path_key(sub, sizeof sub, path, "public_url");
    if (a->public_url) {
        const char *why = url_http_problem(a->public_url, 0);
        if (why)
            cfg_problem(c, sub, "%s", why);
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
        cfg_path_key(sub, sizeof sub, path, "cors_origins");
        cfg_path_index(item, sizeof item, sub, i);
        if (strcmp(o, "*") == 0)
            continue;
        const char *why = url_http_problem(o, URL_ORIGIN_ONLY);
        if (why)
            cfg_problem(c, item, "%s %s", cfg_show(o, sh, sizeof sh), why);
    }
    if (a->sessions_total < a->sessions_per_account) {
        cfg_path_key(sub, sizeof sub, path, "sessions_total");
        cfg_problem(c, sub, "(%d) is smaller than sessions_per_account (%d)", a->sessions_total,
                a->sessions_per_account);
    }
}

void cfg_check_token(struct ctx *c, void *obj, const char *path)
{
    struct config_token *t = obj;
    if (t->token.source == CONFIG_SECRET_NONE)
        cfg_problem(c, path, "has no token: set token_env or token_file");
}

const char *cfg_secret_suffix(enum config_secret_source s)
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

/* An oauth2 key that names something only a provider uses, and where it is. */
struct oauth2_key {
    const char *name;
    char **field;
};

/* Without a provider: a static token, and none of a provider's keys. */
static void check_oauth2_static(struct ctx *c, struct config_oauth2 *o, const char *path)
{
    char sub[PATH_KEY_MAX], key[48];
    const struct oauth2_key provider_keys[] = {
        {"tenant", &o->tenant},
        {"client_id", &o->client_id},
        {"scope", &o->scope},
        {"token_url", &o->token_url},
        {"device_authorization_url", &o->device_authorization_url},
        {"authorization_url", &o->authorization_url},
        {"ca_file", &o->ca_file},
    };
    if (o->token.source == CONFIG_SECRET_NONE)
        cfg_problem(c, path, "has no token: set provider (microsoft, google or custom) with "
                         "client_id, or token_env, token_file or token_command");
    for (size_t i = 0; i < COUNT(provider_keys); i++)
        if (*provider_keys[i].field) {
            cfg_path_key(sub, sizeof sub, path, provider_keys[i].name);
            cfg_problem(c, sub, "only applies with a provider (microsoft, google or custom)");
        }
    if (o->client_secret.source != CONFIG_SECRET_NONE) {
        snprintf(key, sizeof key, "client_secret_%s", cfg_secret_suffix(o->client_secret.source));
        cfg_path_key(sub, sizeof sub, path, key);
        cfg_problem(c, sub, "only applies with a provider (microsoft, google or custom)");
    }
}

/* "tenant": Microsoft's only, "organizations" by default, one's own for
 * client_credentials. */
static void check_oauth2_tenant(struct ctx *c, struct config_oauth2 *o, const char *path)
{
    char sub[PATH_KEY_MAX];
    cfg_path_key(sub, sizeof sub, path, "tenant");
    if (o->provider != CONFIG_OAUTH2_MICROSOFT) {
        if (o->tenant)
            cfg_problem(c, sub, "only applies with provider \"microsoft\"");
        return;
    }
    if (!o->tenant && !(o->tenant = strdup("organizations")))
        cfg_problem(c, sub, "out of memory");
    if (o->tenant && !is_tenant(o->tenant))
        cfg_problem(c, sub, "must be a tenant id or domain name ([A-Za-z0-9.-])");
    else if (o->tenant && o->flow == CONFIG_FLOW_CLIENT_CREDENTIALS &&
             (strcasecmp(o->tenant, "organizations") == 0 ||
              strcasecmp(o->tenant, "common") == 0 || strcasecmp(o->tenant, "consumers") == 0))
        cfg_problem(c, sub, "flow client_credentials needs your own tenant (its id or domain, "
                        "e.g. \"contoso.onmicrosoft.com\"), not \"%s\"",
                o->tenant);
}

/* "flow": what the provider offers, and a client secret for client_credentials. */
static void check_oauth2_flow(struct ctx *c, struct config_oauth2 *o, const char *path)
{
    char sub[PATH_KEY_MAX];
    cfg_path_key(sub, sizeof sub, path, "flow");
    if (o->flow == CONFIG_FLOW_DEVICE_CODE && o->provider == CONFIG_OAUTH2_GOOGLE && !o->scope)
        cfg_problem(c, sub, "Google's device flow does not grant Gmail's scope "
                        "(https://mail.google.com/): set \"flow\": \"authorization_code\" with a "
                        "\"Desktop app\" OAuth client");
    if (o->flow == CONFIG_FLOW_CLIENT_CREDENTIALS) {
        if (o->provider == CONFIG_OAUTH2_GOOGLE)
            cfg_problem(c, sub, "Gmail mailboxes have no client credentials flow; use device_code or "
                            "authorization_code");
        else if (o->client_secret.source == CONFIG_SECRET_NONE)
            cfg_problem(c, sub, "client_credentials needs client_secret_env, client_secret_file or "
                            "client_secret_command");
    }
}

/* The endpoints: https:// URLs, given only with (and as needed by) provider "custom". */
static void check_oauth2_endpoints(struct ctx *c, struct config_oauth2 *o, const char *path)
{
    char sub[PATH_KEY_MAX];
    const char *pname = cfg_oauth2_providers[o->provider];
    const struct oauth2_key endpoints[] = {
        {"token_url", &o->token_url},
        {"device_authorization_url", &o->device_authorization_url},
        {"authorization_url", &o->authorization_url},
    };
    for (size_t i = 0; i < COUNT(endpoints); i++) {
        const char *u = *endpoints[i].field;
        cfg_path_key(sub, sizeof sub, path, endpoints[i].name);
        if (u && o->provider != CONFIG_OAUTH2_CUSTOM) {
            cfg_problem(c, sub, "only applies with provider \"custom\" (\"%s\" has its own)", pname);
            continue;
        }
        const char *why = u ? url_http_problem(u, URL_HTTPS_ONLY) : NULL;
        if (why)
            cfg_problem(c, sub, "%s", why);
    }
    if (o->provider != CONFIG_OAUTH2_CUSTOM)
        return;
    if (!o->token_url) {
        cfg_path_key(sub, sizeof sub, path, "token_url");
        cfg_problem(c, sub, "is required with provider \"custom\"");
    }
    if (o->flow == CONFIG_FLOW_DEVICE_CODE && !o->device_authorization_url) {
        cfg_path_key(sub, sizeof sub, path, "device_authorization_url");
        cfg_problem(c, sub, "is required with provider \"custom\" and flow \"device_code\"");
    }
    if (o->flow == CONFIG_FLOW_AUTHORIZATION_CODE && !o->authorization_url) {
        cfg_path_key(sub, sizeof sub, path, "authorization_url");
        cfg_problem(c, sub, "is required with provider \"custom\" and flow "
                        "\"authorization_code\"");
    }
}

/* An account's "oauth2": a static token, or a provider with what it needs. */
void cfg_check_oauth2(struct ctx *c, void *obj, const char *path)
{
    struct config_oauth2 *o = obj;
    if (o->provider == CONFIG_OAUTH2_STATIC) {
        check_oauth2_static(c, o, path);
        return;
    }
    char sub[PATH_KEY_MAX], key[48];
    const char *pname = cfg_oauth2_providers[o->provider];
    if (o->token.source != CONFIG_SECRET_NONE) {
        snprintf(key, sizeof key, "token_%s", cfg_secret_suffix(o->token.source));
        cfg_path_key(sub, sizeof sub, path, key);
        cfg_problem(c, sub, "a static token does not go with provider \"%s\", whose tokens the "
                        "bridge obtains and refreshes itself",
                pname);
    }
    if (!o->client_id) {
        cfg_path_key(sub, sizeof sub, path, "client_id");
        cfg_problem(c, sub, "is required with provider \"%s\" (the application's id from its "
                        "registration)",
                pname);
    }
    check_oauth2_tenant(c, o, path);
    check_oauth2_flow(c, o, path);
    check_oauth2_endpoints(c, o, path);
}

/* "auth": exactly one of basic or bearer. */
void cfg_check_webhook_auth(struct ctx *c, void *obj, const char *path)
{
    struct config_webhook_auth *a = obj;
    bool bearer = a->bearer.source != CONFIG_SECRET_NONE;
    if (a->basic.present && bearer)
        cfg_problem(c, path, "give either basic or bearer_env/bearer_file, not both");
    else if (!a->basic.present && !bearer)
        cfg_problem(c, path, "needs basic or bearer_env/bearer_file");
}

void cfg_check_webhook_basic(struct ctx *c, void *obj, const char *path)
{
    struct config_webhook_basic *b = obj;
    char sub[PATH_KEY_MAX];
    if (b->username && strchr(b->username, ':')) {
        cfg_path_key(sub, sizeof sub, path, "username");
        cfg_problem(c, sub, "must not contain ':' (RFC 7617)");
    }
    if (b->password.source == CONFIG_SECRET_NONE)
        cfg_problem(c, path, "has no password: set password_env or password_file");
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
            cfg_path_key(sub, sizeof sub, path, "auth");
            cfg_problem(c, sub, "credentials would be sent in clear to an http:// url; use https:// "
                            "or set allow_plaintext_credentials: true");
        }
        if (w->headers_secret.source != CONFIG_SECRET_NONE) {
            cfg_path_key(sub, sizeof sub, path,
                     w->headers_secret.source == CONFIG_SECRET_ENV ? "headers_env"
                                                                   : "headers_file");
            cfg_problem(c, sub, "secret headers would be sent in clear to an http:// url; use "
                            "https:// or set allow_plaintext_credentials: true");
        }
    }
    const char *const tls_keys[] = {"ca_file", "client_cert_file", "client_key_file"};
    const char *const tls_vals[] = {w->ca_file, w->client_cert_file, w->client_key_file};
    for (size_t i = 0; w->url && !https && i < COUNT(tls_keys); i++)
        if (tls_vals[i]) {
            cfg_path_key(sub, sizeof sub, path, tls_keys[i]);
            cfg_problem(c, sub, "only applies to an https:// url");
        }
    if (w->client_key_file && !w->client_cert_file) {
        cfg_path_key(sub, sizeof sub, path, "client_key_file");
        cfg_problem(c, sub, "needs client_cert_file");
    }
    if (w->proxy) {
        cfg_path_key(sub, sizeof sub, path, "proxy");
        const char *why = url_http_problem(w->proxy, URL_ORIGIN_ONLY);
        if (why)
            cfg_problem(c, sub, "%s", why);
        else if (!starts_with_ci(w->proxy, "http://"))
            cfg_problem(c, sub, "must be an http:// proxy (the bridge tunnels through it with "
                            "CONNECT)");
    }
}

void cfg_check_webhook(struct ctx *c, void *obj, const char *path)
{
    struct config_webhook *w = obj;
    char sub[PATH_KEY_MAX];
    if (w->url) {
        const char *why = url_http_problem(w->url, 0);
        cfg_path_key(sub, sizeof sub, path, "url");
        if (why)
            cfg_problem(c, sub, "%s", why);
    }
    if (w->secret.source == CONFIG_SECRET_NONE)
        cfg_problem(c, path, "has no signing secret: set secret_env or secret_file");
    check_webhook_transport(c, w, path);
}

/* A webhook's filter: its patterns compiled once, here (filter.h). */
void cfg_check_filter(struct ctx *c, void *obj, const char *path)
{
    struct config_filter *f = obj;
    struct filter_error fe;
    char sub[PATH_KEY_MAX];
    if (!(f->compiled = filter_compile(f, &fe))) {
        cfg_path_key(sub, sizeof sub, path, fe.key);
        cfg_problem(c, *fe.key ? sub : path, "%s", fe.msg);
    }
}

/* A webhook's payload: "all" and "none" stand alone; names are header names. */
void cfg_check_payload(struct ctx *c, void *obj, const char *path)
{
    struct config_payload *p = obj;
    char sub[PATH_KEY_MAX], item[PATH_KEY_MAX];
    cfg_path_key(sub, sizeof sub, path, "headers");
    for (size_t i = 0; i < p->header_count; i++) {
        const char *n = p->headers[i];
        cfg_path_index(item, sizeof item, sub, i);
        bool word = strcmp(n, "all") == 0 || strcmp(n, "none") == 0;
        if (word && p->header_count > 1) {
            cfg_problem(c, item, "\"%s\" stands alone: \"headers\": \"%s\"", n, n);
            continue;
        }
        bool ok = *n != '\0';
        for (const char *q = n; *q && ok; q++)
            ok = (*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') ||
                 strchr("!#$%&'*+-.^_`|~", *q) != NULL;
        if (!ok)
            cfg_problem(c, item, "is not a header name");
    }
}

static bool is_plaintext_auth(enum config_auth m)
{
    return m == CONFIG_AUTH_USER || m == CONFIG_AUTH_PLAIN || m == CONFIG_AUTH_LOGIN ||
           m == CONFIG_AUTH_XOAUTH2 || m == CONFIG_AUTH_OAUTHBEARER;
}

void cfg_check_account(struct ctx *c, void *obj, const char *path)
{
    struct config_account *a = obj;
    char sub[PATH_KEY_MAX], item[PATH_KEY_MAX];
    bool has_pw = a->password.source != CONFIG_SECRET_NONE;
    bool has_oauth = a->oauth2.present;

    if (a->port == 0)
        a->port = a->tls == CONFIG_TLS_IMPLICIT ? 995 : 110;
    if (has_pw && has_oauth)
        cfg_problem(c, path, "give either a password (password_env, password_file or password_command) "
                         "or oauth2, not both");
    else if (!has_pw && !has_oauth)
        cfg_problem(c, path, "has no credentials: set password_env, password_file, password_command "
                         "or oauth2");
    cfg_path_key(sub, sizeof sub, path, "auth");
    bool all_plain = a->auth_count > 0;
    for (size_t i = 0; i < a->auth_count; i++) {
        enum config_auth m = a->auth[i];
        bool oauth_mech = m == CONFIG_AUTH_XOAUTH2 || m == CONFIG_AUTH_OAUTHBEARER;
        cfg_path_index(item, sizeof item, sub, i);
        if (oauth_mech && has_pw && !has_oauth)
            cfg_problem(c, item, "\"%s\" needs oauth2 credentials", cfg_auth_names[m]);
        if (!oauth_mech && has_oauth && !has_pw)
            cfg_problem(c, item, "\"%s\" needs a password", cfg_auth_names[m]);
        all_plain = all_plain && is_plaintext_auth(m);
    }
    if (a->fingerprint) {
        cfg_path_key(sub, sizeof sub, path, "fingerprint");
        bool ok = codec_pin_parse(a->fingerprint, a->fingerprint_sha256) == 0;
        if (!ok)
            cfg_problem(c, sub, "must be \"sha256:\" followed by 64 hex digits, optionally in "
                            "':'-separated pairs (the SHA-256 of the server certificate)");
    }
    if (a->tls == CONFIG_TLS_NONE) {
        if (a->fingerprint) {
            cfg_path_key(sub, sizeof sub, path, "fingerprint");
            cfg_problem(c, sub, "only applies with tls \"implicit\" or \"starttls\"");
        }
        if (a->ca_file) {
            cfg_path_key(sub, sizeof sub, path, "ca_file");
            cfg_problem(c, sub, "only applies with tls \"implicit\" or \"starttls\"");
        }
        if (!a->allow_plaintext && all_plain) {
            cfg_path_key(sub, sizeof sub, path, "auth");
            cfg_problem(c, sub, "every method listed sends the credentials in clear over tls \"none\"; "
                            "set allow_plaintext: true to allow that");
        }
    }
    if (a->delete_after_ms && a->after_delivery != CONFIG_AFTER_KEEP) {
        cfg_path_key(sub, sizeof sub, path, "delete_after");
        cfg_problem(c, sub, "only applies with after_delivery \"keep\"");
    }
    if (a->delete_after_ms && a->after_delivery == CONFIG_AFTER_KEEP && a->webhook_count == 0) {
        cfg_path_key(sub, sizeof sub, path, "delete_after");
        cfg_problem(c, sub, "with no webhooks would delete mail nobody received");
    }
    if (a->after_delivery == CONFIG_AFTER_DELETE && a->webhook_count == 0) {
        cfg_path_key(sub, sizeof sub, path, "after_delivery");
        cfg_problem(c, sub, "\"delete\" with no webhooks would delete mail nobody received");
    }
    if (a->address) {
        const char *at = strrchr(a->address, '@');
        bool spaces = strpbrk(a->address, " \t\r\n<>,;") != NULL;
        if (!at || at == a->address || !at[1] || spaces) {
            cfg_path_key(sub, sizeof sub, path, "address");
            cfg_problem(c, sub, "\"%s\" is not an address (local-part@domain)", a->address);
        }
    } else if (a->username && strchr(a->username, '@') && !strpbrk(a->username, " \t\r\n<>,;")) {
        a->address = strdup(a->username); /* the default: the username, when it is an address */
        if (!a->address)
            cfg_problem(c, path, "out of memory");
    }
    cfg_path_key(sub, sizeof sub, path, "trusted_authserv_ids");
    for (size_t i = 0; i < a->trusted_authserv_id_count; i++) {
        const char *id = a->trusted_authserv_ids[i];
        for (const char *q = id; *q; q++)
            if ((unsigned char)*q <= ' ' || strchr(";()\"", *q)) {
                cfg_path_index(item, sizeof item, sub, i);
                cfg_problem(c, item, "\"%s\" is not an authserv-id (a host name such as mx.example.com)", id);
                break;
            }
    }
}

/* After everything: an account's webhooks name configured webhooks. */
void cfg_check_root(struct ctx *c, void *obj, const char *path)
{
    struct config *cfg = obj;
    char sub[PATH_KEY_MAX], item[PATH_KEY_MAX], sh[SHOW_MAX + 8];
    for (size_t i = 0; i < cfg->account_count; i++) {
        const struct config_oauth2 *o = &cfg->accounts[i].oauth2;
        if (!o->present || o->provider == CONFIG_OAUTH2_STATIC ||
            cfg->secrets_key.source != CONFIG_SECRET_NONE)
            continue;
        cfg_path_index(sub, sizeof sub, "accounts", i);
        cfg_problem(c, "", "secrets_key_env or secrets_key_file is required: %s.oauth2 uses provider "
                       "\"%s\", whose tokens are kept in the store encrypted under that key "
                       "(64 hex digits: openssl rand -hex 32)",
                sub, cfg_oauth2_providers[o->provider]);
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
            cfg_problem(c, path, "out of memory");
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
            cfg_path_index(elem, sizeof elem, "accounts", i);
            cfg_path_key(sub, sizeof sub, elem, "webhooks");
            cfg_path_index(item, sizeof item, sub, k);
            const char *near = cfg_closest(a->webhooks[k], names, nn);
            if (near)
                cfg_problem(c, item, "no webhook is named %s (did you mean \"%s\"?)",
                        cfg_show(a->webhooks[k], sh, sizeof sh), near);
            else
                cfg_problem(c, item, "no webhook is named %s", cfg_show(a->webhooks[k], sh, sizeof sh));
        }
    }
}
