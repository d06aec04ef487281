/* oauth2_proto — OAuth 2.0 requests and responses; see include/oauth2_proto.h. */
#include "oauth2_proto.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "codec.h"
#include "url.h"

#ifndef POP3BRIDGE_VERSION
#define POP3BRIDGE_VERSION "0"
#endif

#define BODY_MAX (3 * OAUTH2_TOKEN_MAX + 4096) /* a request body, form-encoded */
#define DESC_MAX 200                           /* error_description kept */

/* ---- providers --------------------------------------------------------------- */

struct provider {
    const char *token, *device, *authorize; /* "{tenant}" is replaced */
    const char *scope_user;                 /* delegated: device and authorization code */
    const char *scope_app;                  /* client credentials; NULL: no such flow */
    bool scope_on_refresh, offline_params;
};

static const struct provider providers[] = {
    [CONFIG_OAUTH2_MICROSOFT] =
        {
            .token = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
            .device = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode",
            .authorize = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
            .scope_user = "https://outlook.office.com/POP.AccessAsUser.All offline_access",
            .scope_app = "https://outlook.office365.com/.default",
            .scope_on_refresh = true,
        },
    [CONFIG_OAUTH2_GOOGLE] =
        {
            .token = "https://oauth2.googleapis.com/token",
            .device = "https://oauth2.googleapis.com/device/code",
            .authorize = "https://accounts.google.com/o/oauth2/v2/auth",
            .scope_user = "https://mail.google.com/",
            .offline_params = true,
        },
};

/* Copy template into out, replacing "{tenant}" by tenant. */
static int expand(const char *tmpl, const char *tenant, char *out, size_t size, struct err *e)
{
    const char *at = strstr(tmpl, "{tenant}");
    int n = at ? snprintf(out, size, "%.*s%s%s", (int)(at - tmpl), tmpl, tenant ? tenant : "",
                          at + 8)
               : snprintf(out, size, "%s", tmpl);
    if (n < 0 || (size_t)n >= size)
        return err_set(e, ERR_LIMIT, "oauth2: an endpoint URL is longer than OAUTH2_URL_MAX (%d)",
                       OAUTH2_URL_MAX);
    return 0;
}

static int copy_str(const char *what, const char *s, char *out, size_t size, struct err *e)
{
    int n = snprintf(out, size, "%s", s ? s : "");
    if (n < 0 || (size_t)n >= size)
        return err_set(e, ERR_LIMIT, "oauth2: %s is longer than %zu bytes", what, size - 1);
    return 0;
}

int oauth2_proto_client(const struct config_oauth2 *o, struct oauth2_client *c, struct err *e)
{
    memset(c, 0, sizeof *c);
    if (!o || o->provider == CONFIG_OAUTH2_STATIC)
        return err_set(e, ERR_USAGE, "oauth2: the account has no OAuth2 provider");
    if (!o->client_id || !*o->client_id)
        return err_set(e, ERR_USAGE, "oauth2: the account has no client_id");
    c->provider = o->provider;
    c->flow = o->flow;
    c->client_id = o->client_id;
    c->client_secret = o->client_secret.value;
    c->ca_file = o->ca_file;
    const char *scope = o->scope;
    if (o->provider == CONFIG_OAUTH2_CUSTOM) {
        c->basic_auth = true;
        if (copy_str("token_url", o->token_url, c->token_url, sizeof c->token_url, e) < 0 ||
            copy_str("device_authorization_url", o->device_authorization_url, c->device_url,
                     sizeof c->device_url, e) < 0 ||
            copy_str("authorization_url", o->authorization_url, c->authorize_url,
                     sizeof c->authorize_url, e) < 0)
            return -1;
        if (!c->token_url[0])
            return err_set(e, ERR_USAGE, "oauth2: provider custom needs token_url");
    } else {
        const struct provider *p = &providers[o->provider];
        if (expand(p->token, o->tenant, c->token_url, sizeof c->token_url, e) < 0 ||
            expand(p->device, o->tenant, c->device_url, sizeof c->device_url, e) < 0 ||
            expand(p->authorize, o->tenant, c->authorize_url, sizeof c->authorize_url, e) < 0)
            return -1;
        c->scope_on_refresh = p->scope_on_refresh;
        c->offline_params = p->offline_params;
        if (!scope) {
            scope = o->flow == CONFIG_FLOW_CLIENT_CREDENTIALS ? p->scope_app : p->scope_user;
            if (!scope)
                return err_set(e, ERR_USAGE, "oauth2: this provider has no client credentials "
                                             "flow for mailboxes");
        }
    }
    if (copy_str("scope", scope, c->scope, sizeof c->scope, e) < 0)
        return -1;
    if (o->flow == CONFIG_FLOW_DEVICE_CODE && !c->device_url[0])
        return err_set(e, ERR_USAGE, "oauth2: flow device_code needs device_authorization_url");
    if (o->flow == CONFIG_FLOW_AUTHORIZATION_CODE && !c->authorize_url[0])
        return err_set(e, ERR_USAGE, "oauth2: flow authorization_code needs authorization_url");
    return 0;
}

/* ---- results ------------------------------------------------------------------- */

const char *oauth2_result_name(enum oauth2_result r)
{
    static const char *const names[] = {
        [OAUTH2_OK] = "ok",
        [OAUTH2_PENDING] = "authorization_pending",
        [OAUTH2_SLOW_DOWN] = "slow_down",
        [OAUTH2_DENIED] = "access_denied",
        [OAUTH2_EXPIRED] = "expired_token",
        [OAUTH2_INVALID_GRANT] = "invalid_grant",
        [OAUTH2_REFUSED] = "refused",
        [OAUTH2_TEMPORARY] = "temporary",
    };
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "unknown";
}

void oauth2_proto_token_wipe(struct oauth2_token *t)
{
    if (t)
        OPENSSL_cleanse(t, sizeof *t);
}

/* ---- parsing ------------------------------------------------------------------- */


static cJSON *parse_object(const char *body, size_t len, struct err *e, const char *what)
{
    if (!body || len == 0) {
        err_set(e, ERR_PROTO, "oauth2: the %s is empty", what);
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        err_set(e, ERR_PROTO, "oauth2: the %s is not a JSON object", what);
        return NULL;
    }
    return j;
}

/* A string member into out (size bytes): 1 copied, 0 absent, -1 wrong type,
 * empty (when required) or too long (*e says which). */
static int get_str(const cJSON *j, const char *name, bool required, char *out, size_t size,
                   struct err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    out[0] = '\0';
    if (!v || cJSON_IsNull(v)) {
        if (required)
            return err_set(e, ERR_PROTO, "oauth2: the response has no %s", name);
        return 0;
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return err_set(e, ERR_PROTO, "oauth2: %s in the response is not a string", name);
    size_t n = strlen(v->valuestring);
    if (n == 0 && required)
        return err_set(e, ERR_PROTO, "oauth2: %s in the response is empty", name);
    if (n >= size)
        return err_set(e, ERR_PROTO, "oauth2: %s in the response is longer than %zu bytes", name,
                       size - 1);
    memcpy(out, v->valuestring, n + 1);
    return 1;
}

/* A whole number of seconds, given as a number or a string of digits
 * (some servers quote it).  1 set, 0 absent, -1 invalid or out of bounds. */
static int get_seconds(const cJSON *j, const char *name, int64_t min, int64_t max, int64_t *out,
                       struct err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!v || cJSON_IsNull(v))
        return 0;
    double d;
    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;
    } else if (cJSON_IsString(v) && v->valuestring && *v->valuestring &&
               strlen(v->valuestring) <= 15 &&
               strspn(v->valuestring, "0123456789") == strlen(v->valuestring)) {
        char *end;
        d = (double)strtoll(v->valuestring, &end, 10);
    } else {
        return err_set(e, ERR_PROTO, "oauth2: %s in the response is not a number of seconds",
                       name);
    }
    if (!(d >= (double)min && d <= (double)max) || (double)(int64_t)d != d)
        return err_set(e, ERR_PROTO,
                       "oauth2: %s in the response is %.0f s, outside %lld..%lld s", name, d,
                       (long long)min, (long long)max);
    *out = (int64_t)d;
    return 1;
}

int oauth2_proto_parse_token(const char *body, size_t len, struct oauth2_token *t, struct err *e)
{
    memset(t, 0, sizeof *t);
    cJSON *j = parse_object(body, len, e, "token response");
    if (!j)
        return -1;
    char type[32];
    int rc = -1;
    if (get_str(j, "access_token", true, t->access_token, sizeof t->access_token, e) < 0)
        goto out;
    if (!codec_is_b64token(t->access_token)) {
        err_set(e, ERR_PROTO, "oauth2: access_token in the response is not a bearer token "
                              "(RFC 6750 b64token)");
        goto out;
    }
    if (get_str(j, "token_type", true, type, sizeof type, e) < 0)
        goto out;
    if (strcasecmp(type, "Bearer") != 0) {
        char clean[40];
        err_sanitize(clean, sizeof clean, type, strlen(type));
        err_set(e, ERR_PROTO, "oauth2: token_type is \"%s\", not Bearer", clean);
        goto out;
    }
    t->expires_in_s = OAUTH2_EXPIRES_DEFAULT_S;
    if (get_seconds(j, "expires_in", OAUTH2_EXPIRES_MIN_S, OAUTH2_EXPIRES_MAX_S, &t->expires_in_s,
                    e) < 0)
        goto out;
    if (get_str(j, "refresh_token", false, t->refresh_token, sizeof t->refresh_token, e) < 0)
        goto out;
    for (const char *p = t->refresh_token; *p; p++) /* RFC 6749 Appendix A.17: VSCHAR */
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) {
            err_set(e, ERR_PROTO, "oauth2: refresh_token in the response has characters outside "
                                  "RFC 6749's VSCHAR");
            goto out;
        }
    if (get_str(j, "scope", false, t->scope, sizeof t->scope, e) < 0)
        goto out;
    rc = 0;
out:
    cJSON_Delete(j);
    if (rc < 0)
        oauth2_proto_token_wipe(t);
    return rc;
}

static enum oauth2_result result_of(const char *code)
{
    static const struct {
        const char *code;
        enum oauth2_result r;
    } map[] = {
        {"authorization_pending", OAUTH2_PENDING}, {"slow_down", OAUTH2_SLOW_DOWN},
        {"access_denied", OAUTH2_DENIED},          {"expired_token", OAUTH2_EXPIRED},
        {"invalid_grant", OAUTH2_INVALID_GRANT},   {"temporarily_unavailable", OAUTH2_TEMPORARY},
        {"server_error", OAUTH2_TEMPORARY},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(code, map[i].code) == 0)
            return map[i].r;
    return OAUTH2_REFUSED;
}

enum oauth2_result oauth2_proto_parse_error(const char *body, size_t len, char code[64],
                                            char *desc, size_t desc_size)
{
    code[0] = '\0';
    if (desc_size)
        desc[0] = '\0';
    struct err ignored;
    cJSON *j = parse_object(body, len, &ignored, "error response");
    if (!j)
        return OAUTH2_TEMPORARY;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "error_description");
    enum oauth2_result r = OAUTH2_TEMPORARY;
    if (cJSON_IsString(c) && c->valuestring && *c->valuestring) {
        err_sanitize(code, 64, c->valuestring, strlen(c->valuestring));
        r = result_of(code);
    }
    if (desc_size && cJSON_IsString(d) && d->valuestring)
        err_sanitize(desc, desc_size < DESC_MAX ? desc_size : DESC_MAX, d->valuestring,
                     strlen(d->valuestring));
    cJSON_Delete(j);
    return r;
}

int oauth2_proto_parse_device(const char *body, size_t len, struct oauth2_device *d,
                              struct err *e)
{
    memset(d, 0, sizeof *d);
    cJSON *j = parse_object(body, len, e, "device authorization response");
    if (!j)
        return -1;
    int rc = -1, r;
    if (get_str(j, "device_code", true, d->device_code, sizeof d->device_code, e) < 0 ||
        get_str(j, "user_code", true, d->user_code, sizeof d->user_code, e) < 0)
        goto out;
    r = get_str(j, "verification_uri", false, d->verification_uri, sizeof d->verification_uri, e);
    if (r == 0) /* Google's name for it */
        r = get_str(j, "verification_url", true, d->verification_uri,
                    sizeof d->verification_uri, e);
    if (r < 0)
        goto out;
    if (get_str(j, "verification_uri_complete", false, d->verification_uri_complete,
                sizeof d->verification_uri_complete, e) < 0)
        goto out;
    r = get_seconds(j, "expires_in", 1, 86400, &d->expires_in_s, e);
    if (r == 0)
        err_set(e, ERR_PROTO, "oauth2: the response has no expires_in");
    if (r <= 0)
        goto out;
    d->interval_s = OAUTH2_DEVICE_INTERVAL_S;
    if (get_seconds(j, "interval", 1, 3600, &d->interval_s, e) < 0)
        goto out;
    /* shown to a person: printable ASCII only */
    for (const char *p = d->user_code; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
            err_set(e, ERR_PROTO, "oauth2: user_code has characters that cannot be shown");
            goto out;
        }
    for (const char *p = d->verification_uri; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
            err_set(e, ERR_PROTO, "oauth2: verification_uri is not a plain URL");
            goto out;
        }
    if (url_http_problem(d->verification_uri, 0)) {
        err_set(e, ERR_PROTO, "oauth2: verification_uri is not an http(s) URL");
        goto out;
    }
    rc = 0;
out:
    cJSON_Delete(j);
    if (rc < 0)
        OPENSSL_cleanse(d, sizeof *d);
    return rc;
}

/* ---- HTTP ------------------------------------------------------------------------- */

struct body {
    char *p;
    size_t len;
    bool over;
};

static size_t on_data(char *data, size_t size, size_t n, void *ctx)
{
    struct body *b = ctx;
    size_t len = size * n;
    if (b->len + len > OAUTH2_RESPONSE_MAX) {
        b->over = true;
        return 0; /* aborts the transfer */
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return len;
}

/* Append "&name=value" (form-urlencoded) to the body. */
static int form_add(CURL *h, char *body, size_t *used, const char *name, const char *value,
                    struct err *e)
{
    char *esc = curl_easy_escape(h, value, 0);
    if (!esc)
        return err_set(e, ERR_INTERNAL, "oauth2: out of memory");
    int n = snprintf(body + *used, BODY_MAX - *used, "%s%s=%s", *used ? "&" : "", name, esc);
    OPENSSL_cleanse(esc, strlen(esc));
    curl_free(esc);
    if (n < 0 || (size_t)n >= BODY_MAX - *used)
        return err_set(e, ERR_LIMIT, "oauth2: the request is larger than %d bytes", BODY_MAX);
    *used += (size_t)n;
    return 0;
}

struct param {
    const char *name, *value;
};

/* The client authentication parameters and curl options. */
static int client_auth(CURL *h, const struct oauth2_client *c, char *body, size_t *used,
                       char *userpwd, size_t userpwd_size, struct err *e)
{
    bool secret = c->client_secret && *c->client_secret;
    if (c->basic_auth && secret) {
        /* RFC 6749 §2.3.1: both form-urlencoded, then Basic */
        char *id = curl_easy_escape(h, c->client_id, 0), *pw = curl_easy_escape(h, c->client_secret, 0);
        int n = id && pw ? snprintf(userpwd, userpwd_size, "%s:%s", id, pw) : -1;
        if (pw) {
            OPENSSL_cleanse(pw, strlen(pw));
            curl_free(pw);
        }
        curl_free(id);
        if (n < 0 || (size_t)n >= userpwd_size)
            return err_set(e, ERR_LIMIT, "oauth2: client_id and client_secret are too long");
        if (curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC) != CURLE_OK ||
            curl_easy_setopt(h, CURLOPT_USERPWD, userpwd) != CURLE_OK)
            return err_set(e, ERR_INTERNAL, "oauth2: cannot set HTTP Basic authentication");
        return 0;
    }
    if (form_add(h, body, used, "client_id", c->client_id, e) < 0)
        return -1;
    if (secret && form_add(h, body, used, "client_secret", c->client_secret, e) < 0)
        return -1;
    return 0;
}

static enum oauth2_result transport_error(CURLcode rc, const char *url_what, struct err *e)
{
    enum err_kind k = ERR_CONN;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: k = ERR_TIMEOUT; break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        k = ERR_TLS;
        break;
    case CURLE_WRITE_ERROR: k = ERR_LIMIT; break;
    default: break;
    }
    if (k == ERR_LIMIT)
        err_set(e, ERR_LIMIT, "oauth2: the %s answered more than %d bytes", url_what,
                OAUTH2_RESPONSE_MAX);
    else
        err_set(e, k, "oauth2: %s: %s", url_what, curl_easy_strerror(rc));
    return OAUTH2_TEMPORARY;
}

/* POST params (plus client authentication) to url.  On 200 the body is
 * handed to parse (token or device response). */
typedef int (*parse_fn)(const char *body, size_t len, void *out, struct err *e);

/* The request's options: HTTPS only, verified, no redirects or environment
 * proxies, bounded in time.  false when libcurl refuses one. */
static bool setup_request(CURL *h, const struct oauth2_client *c, const char *url,
                          struct curl_slist *hdrs, const char *form, size_t used, struct body *b)
{
    return curl_easy_setopt(h, CURLOPT_URL, url) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_PROXY, "") == CURLE_OK && /* environment proxies ignored */
           curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) == CURLE_OK &&
           (!c->ca_file || curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file) == CURLE_OK) &&
           curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)OAUTH2_CONNECT_TIMEOUT_MS) ==
               CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)OAUTH2_TIMEOUT_MS) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_USERAGENT, "pop3bridge/" POP3BRIDGE_VERSION) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_POSTFIELDS, form) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)used) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data) == CURLE_OK &&
           curl_easy_setopt(h, CURLOPT_WRITEDATA, b) == CURLE_OK;
}

/* An answer other than 200: the RFC 6749 §5.2 error, classified. */
static enum oauth2_result refused(long status, const struct body *b, const char *what,
                                  struct oauth2_reply *r, struct err *e)
{
    char desc[DESC_MAX];
    enum oauth2_result res = oauth2_proto_parse_error(b->p, b->len, r->error, desc, sizeof desc);
    if (status == 429 || status >= 500)
        res = OAUTH2_TEMPORARY;
    else if (res == OAUTH2_TEMPORARY && status >= 300) /* no error object: a wrong URL? */
        res = OAUTH2_REFUSED;
    if (r->error[0])
        err_set(e, res == OAUTH2_TEMPORARY ? ERR_SERVER : ERR_AUTH, "oauth2: the %s answered %ld %s",
                what, status, r->error);
    else
        err_set(e, res == OAUTH2_TEMPORARY ? ERR_SERVER : ERR_AUTH, "oauth2: the %s answered HTTP %ld",
                what, status);
    if (desc[0])
        err_set_server(e, desc, strlen(desc));
    return res;
}

static enum oauth2_result post(const struct oauth2_client *c, const char *url, const char *what,
                               const struct param *params, size_t n_params, parse_fn parse,
                               void *out, struct oauth2_reply *r, struct err *e)
{
    struct oauth2_reply dummy;
    if (!r)
        r = &dummy;
    memset(r, 0, sizeof *r);
    r->retry_after_s = -1;
    enum oauth2_result res = OAUTH2_TEMPORARY;
    char *form = malloc(BODY_MAX);
    char userpwd[1024];
    struct body b = {.p = malloc(OAUTH2_RESPONSE_MAX + 1)};
    struct curl_slist *hdrs = NULL;
    size_t used = 0;
    CURL *h = curl_easy_init();
    userpwd[0] = '\0';
    if (!form || !b.p || !h) {
        err_set(e, ERR_INTERNAL, "oauth2: out of memory");
        goto out;
    }
    form[0] = '\0';
    for (size_t i = 0; i < n_params; i++)
        if (params[i].value && form_add(h, form, &used, params[i].name, params[i].value, e) < 0)
            goto out;
    if (client_auth(h, c, form, &used, userpwd, sizeof userpwd, e) < 0)
        goto out;
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (!hdrs) {
        err_set(e, ERR_INTERNAL, "oauth2: out of memory");
        goto out;
    }
    if (!setup_request(h, c, url, hdrs, form, used, &b)) {
        err_set(e, ERR_INTERNAL, "oauth2: cannot set up the request");
        goto out;
    }
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    r->http_status = (int)status;
    curl_off_t ra = -1;
    if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
        r->retry_after_s = ra > 86400 ? 86400 : (long)ra;
    if (rc != CURLE_OK) {
        if (b.over)
            rc = CURLE_WRITE_ERROR;
        res = transport_error(rc, what, e);
        goto out;
    }
    b.p[b.len] = '\0';
    if (status == 200) {
        if (parse(b.p, b.len, out, e) < 0) {
            err_prefix(e, "%s", what);
            res = OAUTH2_TEMPORARY;
            goto out;
        }
        res = OAUTH2_OK;
        goto out;
    }
    res = refused(status, &b, what, r, e);
out:
    curl_slist_free_all(hdrs);
    if (h)
        curl_easy_cleanup(h);
    OPENSSL_cleanse(userpwd, sizeof userpwd);
    if (form) {
        OPENSSL_cleanse(form, used);
        free(form);
    }
    if (b.p) {
        OPENSSL_cleanse(b.p, b.len);
        free(b.p);
    }
    return res;
}

static int parse_token_cb(const char *body, size_t len, void *out, struct err *e)
{
    return oauth2_proto_parse_token(body, len, out, e);
}

static int parse_device_cb(const char *body, size_t len, void *out, struct err *e)
{
    return oauth2_proto_parse_device(body, len, out, e);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

enum oauth2_result oauth2_proto_refresh(const struct oauth2_client *c, const char *refresh_token,
                                        struct oauth2_token *t, struct oauth2_reply *r,
                                        struct err *e)
{
    const struct param p[] = {
        {"grant_type", "refresh_token"},
        {"refresh_token", refresh_token},
        {"scope", c->scope_on_refresh && c->scope[0] ? c->scope : NULL},
    };
    return post(c, c->token_url, "token endpoint", p, N(p), parse_token_cb, t, r, e);
}

enum oauth2_result oauth2_proto_client_credentials(const struct oauth2_client *c,
                                                   struct oauth2_token *t,
                                                   struct oauth2_reply *r, struct err *e)
{
    const struct param p[] = {
        {"grant_type", "client_credentials"},
        {"scope", c->scope[0] ? c->scope : NULL},
    };
    return post(c, c->token_url, "token endpoint", p, N(p), parse_token_cb, t, r, e);
}

enum oauth2_result oauth2_proto_device_poll(const struct oauth2_client *c, const char *device_code,
                                            struct oauth2_token *t, struct oauth2_reply *r,
                                            struct err *e)
{
    const struct param p[] = {
        {"grant_type", "urn:ietf:params:oauth:grant-type:device_code"},
        {"device_code", device_code},
    };
    return post(c, c->token_url, "token endpoint", p, N(p), parse_token_cb, t, r, e);
}

enum oauth2_result oauth2_proto_exchange_code(const struct oauth2_client *c, const char *code,
                                              const char *redirect_uri, const char *verifier,
                                              struct oauth2_token *t, struct oauth2_reply *r,
                                              struct err *e)
{
    const struct param p[] = {
        {"grant_type", "authorization_code"},
        {"code", code},
        {"redirect_uri", redirect_uri},
        {"code_verifier", verifier},
    };
    return post(c, c->token_url, "token endpoint", p, N(p), parse_token_cb, t, r, e);
}

enum oauth2_result oauth2_proto_device_start(const struct oauth2_client *c,
                                             struct oauth2_device *d, struct oauth2_reply *r,
                                             struct err *e)
{
    if (!c->device_url[0]) {
        err_set(e, ERR_USAGE, "oauth2: no device authorization endpoint");
        return OAUTH2_REFUSED;
    }
    /* RFC 8628 §3.1: client_id and scope; a confidential client authenticates too */
    const struct param p[] = {
        {"scope", c->scope[0] ? c->scope : NULL},
    };
    return post(c, c->device_url, "device authorization endpoint", p, N(p), parse_device_cb, d,
                r, e);
}

/* ---- PKCE, state, the authorization URL ---------------------------------------- */

/* base64url without padding (RFC 4648 §5) of n bytes into out. */
static int b64url(const unsigned char *in, size_t n, char *out, size_t size, struct err *e)
{
    char *b = codec_b64_encode(in, n);
    if (!b)
        return err_set(e, ERR_INTERNAL, "oauth2: out of memory");
    size_t k = 0;
    for (const char *p = b; *p && *p != '=' && k + 1 < size; p++)
        out[k++] = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    out[k] = '\0';
    OPENSSL_cleanse(b, strlen(b));
    free(b);
    return 0;
}

int oauth2_proto_pkce_verifier(char *out, struct err *e)
{
    unsigned char rnd[32];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return err_set(e, ERR_INTERNAL, "oauth2: no randomness for the PKCE verifier");
    int r = b64url(rnd, sizeof rnd, out, OAUTH2_PKCE_VERIFIER_LEN + 1, e);
    OPENSSL_cleanse(rnd, sizeof rnd);
    return r;
}

int oauth2_proto_pkce_challenge(const char *verifier, char *out, struct err *e)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    size_t len = strlen(verifier);
    /* RFC 7636 §4.1: 43..128 characters of [A-Za-z0-9-._~] */
    if (len < 43 || len > 128 ||
        strspn(verifier, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~") !=
            len)
        return err_set(e, ERR_USAGE, "oauth2: a PKCE verifier is 43 to 128 unreserved characters");
    if (EVP_Digest(verifier, len, md, &n, EVP_sha256(), NULL) != 1)
        return err_set(e, ERR_INTERNAL, "oauth2: SHA-256 failed");
    return b64url(md, n, out, OAUTH2_PKCE_CHALLENGE_LEN + 1, e);
}

int oauth2_proto_state(char *out, struct err *e)
{
    unsigned char rnd[24];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return err_set(e, ERR_INTERNAL, "oauth2: no randomness for the state");
    return b64url(rnd, sizeof rnd, out, 33, e);
}

int oauth2_proto_authorize_url(const struct oauth2_client *c, const char *redirect_uri,
                               const char *state, const char *challenge, char *out, size_t size,
                               struct err *e)
{
    if (!c->authorize_url[0])
        return err_set(e, ERR_USAGE, "oauth2: no authorization endpoint");
    const struct param p[] = {
        {"response_type", "code"},
        {"client_id", c->client_id},
        {"redirect_uri", redirect_uri},
        {"scope", c->scope[0] ? c->scope : NULL},
        {"state", state},
        {"code_challenge", challenge},
        {"code_challenge_method", "S256"},
        {"access_type", c->offline_params ? "offline" : NULL},
        {"prompt", c->offline_params ? "consent" : NULL},
    };
    int n = snprintf(out, size, "%s", c->authorize_url);
    if (n < 0 || (size_t)n >= size)
        return err_set(e, ERR_LIMIT, "oauth2: the authorization URL is too long");
    size_t used = (size_t)n;
    char sep = strchr(c->authorize_url, '?') ? '&' : '?';
    for (size_t i = 0; i < N(p); i++) {
        if (!p[i].value)
            continue;
        char *esc = curl_easy_escape(NULL, p[i].value, 0);
        if (!esc)
            return err_set(e, ERR_INTERNAL, "oauth2: out of memory");
        n = snprintf(out + used, size - used, "%c%s=%s", sep, p[i].name, esc);
        curl_free(esc);
        if (n < 0 || (size_t)n >= size - used)
            return err_set(e, ERR_LIMIT, "oauth2: the authorization URL is too long");
        used += (size_t)n;
        sep = '&';
    }
    return 0;
}
