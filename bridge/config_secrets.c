/* config_secrets — secrets resolved from env, file or command; webhook keys,
 * credentials and secret headers decoded; see config_impl.h.
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

/* ---- secrets --------------------------------------------------------------------------- */

void cfg_secret_wipe(struct config_secret *s)
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
    cfg_secret_wipe(s);
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
        cfg_problem(c, path, "%s", why);
}


/* Call fn for every option of every object reachable from base. */
void cfg_walk(struct ctx *c, const struct table *t, void *base, const char *path, visit_fn fn)
{
    char sub[PATH_KEY_MAX], item[PATH_KEY_MAX];
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        cfg_path_key(sub, sizeof sub, path, o->name);
        if (o->type == T_OBJECT) {
            cfg_walk(c, o->sub, AT(base, o->off, char), sub, fn);
        } else if (o->type == T_OBJARRAY) {
            char *arr = *AT(base, o->off, char *);
            size_t n = *AT(base, o->count_off, size_t);
            for (size_t k = 0; arr && k < n; k++) {
                cfg_path_index(item, sizeof item, sub, k);
                cfg_walk(c, o->sub, arr + k * o->sub->size, item, fn);
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

void cfg_webhook_keys_wipe(struct config_webhook *w)
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
        cfg_problem(c, sub, "%sthe secret does not start with \"whsec_\" (Standard Webhooks)", nth);
        return false;
    }
    unsigned char key[CONFIG_WHSEC_MAX_BYTES + 3];
    const char *b64 = s + 6;
    size_t n = 0;
    bool ok = false;
    int rc = len > 6 ? codec_b64_decode(b64, len - 6, key, sizeof key, &n, NULL) : -1;
    if (rc == -1) {
        cfg_problem(c, sub, "%sthe part after \"whsec_\" is not valid base64", nth);
    } else if (rc == -2 || n < CONFIG_WHSEC_MIN_BYTES || n > CONFIG_WHSEC_MAX_BYTES) {
        cfg_problem(c, sub, "%sthe secret decodes to %s%zu bytes; Standard Webhooks keys are %d to %d",
                nth, rc == -2 ? "more than " : "", rc == -2 ? sizeof key : n,
                CONFIG_WHSEC_MIN_BYTES, CONFIG_WHSEC_MAX_BYTES);
    } else if ((w->keys[w->key_count] = malloc(n))) {
        memcpy(w->keys[w->key_count], key, n);
        w->key_lens[w->key_count++] = n;
        ok = true;
    } else {
        cfg_problem(c, sub, "out of memory");
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
        cfg_webhook_keys_wipe(w);
        if (!w->secret.value)
            continue;
        cfg_path_index(path, sizeof path, "webhooks", i);
        cfg_path_key(sub, sizeof sub, path,
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
            cfg_problem(c, sub, "the secret does not start with \"whsec_\" (Standard Webhooks)");
            continue;
        }
        if (total > CONFIG_WEBHOOK_SECRETS_MAX) {
            cfg_problem(c, sub, "holds %zu secrets; the limit is %d (CONFIG_WEBHOOK_SECRETS_MAX)",
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
            cfg_webhook_keys_wipe(w);
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
        cfg_problem(c, sub, "out of memory");
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
            cfg_problem(c, sub, "line %zu is not \"Name: value\" with a valid header name", lineno);
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
            cfg_problem(c, sub, "line %zu: %s is set by the bridge itself and cannot be configured",
                    lineno, name);
        } else if (w->auth.present && strcasecmp(name, "authorization") == 0) {
            cfg_problem(c, sub, "line %zu: Authorization is already set by auth", lineno);
            bad = true;
        } else if (vlen > 1024) {
            cfg_problem(c, sub, "line %zu: the value of %s is longer than 1024 bytes", lineno, name);
            bad = true;
        }
        for (size_t i = 0; i < w->header_count && !bad; i++)
            if (strcasecmp(name, w->headers[i].name) == 0) {
                cfg_problem(c, sub, "line %zu: %s is also in headers", lineno, name);
                bad = true;
            }
        for (size_t i = 0; i < k && !bad; i++)
            if (strcasecmp(name, h[i].name) == 0) {
                cfg_problem(c, sub, "line %zu: %s is given twice", lineno, name);
                bad = true;
            }
        if (!bad && k + w->header_count >= CONFIG_HEADERS_MAX) {
            cfg_problem(c, sub, "line %zu: more than %d headers with those in headers "
                            "(CONFIG_HEADERS_MAX)", lineno, CONFIG_HEADERS_MAX);
            bad = true;
        }
        if (!bad) {
            h[k].name = strdup(name);
            h[k].value = strndup(val, vlen);
            if (!h[k].name || !h[k].value) {
                free(h[k].name);
                free(h[k].value);
                cfg_problem(c, sub, "out of memory");
            } else {
                k++;
            }
        }
        p = next;
    }
    if (k == 0 && c->errors == before)
        cfg_problem(c, sub, "holds no header (one \"Name: value\" per line)");
    w->secret_headers = h;
    w->secret_header_count = k;
}

void cfg_secret_headers_wipe(struct config_webhook *w)
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
        cfg_secret_headers_wipe(w);
        cfg_path_index(path, sizeof path, "webhooks", i);
        if (w->headers_secret.value) {
            cfg_path_key(sub, sizeof sub, path,
                     w->headers_secret.source == CONFIG_SECRET_ENV ? "headers_env"
                                                                   : "headers_file");
            parse_secret_headers(c, w, sub);
        }
        const char *const keys[] = {"ca_file", "client_cert_file", "client_key_file"};
        const char *const vals[] = {w->ca_file, w->client_cert_file, w->client_key_file};
        for (size_t k = 0; k < COUNT(keys); k++) {
            if (!vals[k] || access(vals[k], R_OK) == 0)
                continue;
            cfg_path_key(sub, sizeof sub, path, keys[k]);
            cfg_problem(c, sub, "cannot read %s: %s", vals[k], strerror(errno));
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
            cfg_problem(c, s->source == CONFIG_SECRET_ENV ? "secrets_key_env" : "secrets_key_file",
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

int cfg_resolve_all(struct ctx *c)
{
    size_t before = c->errors;
    cfg_walk(c, &cfg_root_table, c->cfg, "", visit_resolve);
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
    return cfg_resolve_all(&c);
}

int config_resolve_store_secret(struct config *cfg, struct config_diag *d)
{
    if (!cfg || cfg->store.password.source == CONFIG_SECRET_NONE)
        return 0;
    struct ctx c = {.d = d, .file = cfg->path, .dir = cfg->dir, .cfg = cfg};
    resolve_one(&c, &cfg->store.password, "store.password", false);
    return (int)c.errors;
}
