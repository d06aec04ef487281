/* authres — Authentication-Results (RFC 8601); see include/authres.h. */
#include "authres.h"

#include <string.h>
#include <strings.h>

#include <glib.h>

#define AUTHRES_VERSION_MAX 9999 /* larger version numbers are read as this */

/* ---- the tokenizer ---------------------------------------------------------------- */

struct p {
    const char *s, *end;
    bool bad; /* comments nested too deep */
};

static bool at_end(const struct p *p)
{
    return p->s >= p->end;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* At '(': skips a comment (nested, with quoted-pairs); an unclosed one runs
 * to the end. */
static void skip_comment(struct p *p)
{
    int depth = 0;
    while (!at_end(p)) {
        char c = *p->s++;
        if (c == '\\' && !at_end(p)) {
            p->s++;
        } else if (c == '(') {
            if (++depth > AUTHRES_COMMENT_DEPTH_MAX) {
                p->bad = true;
                return;
            }
        } else if (c == ')' && --depth == 0) {
            return;
        }
    }
}

/* CFWS (RFC 5322 §3.2.2): white space, line folds and comments. */
static void skip_cfws(struct p *p)
{
    while (!at_end(p) && !p->bad) {
        if (is_ws(*p->s))
            p->s++;
        else if (*p->s == '(')
            skip_comment(p);
        else
            break;
    }
}

/* Skips to the next ';' outside comments and quoted strings. */
static void skip_to_semicolon(struct p *p)
{
    while (!at_end(p) && !p->bad && *p->s != ';') {
        if (*p->s == '(') {
            skip_comment(p);
        } else if (*p->s == '"') {
            p->s++;
            while (!at_end(p) && *p->s != '"')
                p->s += (*p->s == '\\' && p->s + 1 < p->end) ? 2 : 1;
            if (!at_end(p))
                p->s++;
        } else {
            p->s++;
        }
    }
}

/* Appends c to out (size bytes), keeping room for the NUL. */
static void put(char *out, size_t size, size_t *n, char c)
{
    if (*n + 1 < size)
        out[(*n)++] = c;
}

/* Terminates out; when put() had to cut, drops a last character left
 * incomplete. */
static void finish(char *out, size_t n, size_t size)
{
    if (n && n + 1 >= size) {
        size_t i = n - 1;
        while (i > 0 && ((unsigned char)out[i] & 0xC0) == 0x80)
            i--;
        unsigned char lead = (unsigned char)out[i];
        size_t len = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (i + len > n)
            n = i;
    }
    out[n] = '\0';
}

/* A quoted-string at '"' into out. */
static void read_quoted(struct p *p, char *out, size_t size)
{
    size_t n = 0;
    p->s++;
    while (!at_end(p) && *p->s != '"') {
        if (*p->s == '\\' && p->s + 1 < p->end)
            p->s++;
        if (*p->s != '\r' && *p->s != '\n')
            put(out, size, &n, *p->s);
        p->s++;
    }
    if (!at_end(p))
        p->s++;
    finish(out, n, size);
}

static bool is_tspecial(char c)
{
    return strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* A value (RFC 2045 token or quoted-string); false if there is none. */
static bool read_value(struct p *p, char *out, size_t size)
{
    if (at_end(p))
        return false;
    if (*p->s == '"') {
        read_quoted(p, out, size);
        return true;
    }
    size_t n = 0;
    while (!at_end(p)) {
        unsigned char c = (unsigned char)*p->s;
        if (c <= ' ' || c == 0x7F || is_tspecial((char)c))
            break;
        put(out, size, &n, (char)c);
        p->s++;
    }
    finish(out, n, size);
    return n > 0;
}

/* A Keyword (letters, digits, '-', '_'), lower-cased. */
static bool read_keyword(struct p *p, char *out, size_t size)
{
    size_t n = 0;
    while (!at_end(p) && (g_ascii_isalnum(*p->s) || *p->s == '-' || *p->s == '_')) {
        put(out, size, &n, g_ascii_tolower(*p->s));
        p->s++;
    }
    out[n < size ? n : size - 1] = '\0';
    return n > 0;
}

/* A pvalue: a quoted-string, or (leniently) anything up to white space, ';'
 * or a comment: "@example.com", "user@example.com", "gfT/i2HB". */
static bool read_pvalue(struct p *p, char *out, size_t size)
{
    if (at_end(p))
        return false;
    if (*p->s == '"') {
        read_quoted(p, out, size);
        return true;
    }
    size_t n = 0;
    while (!at_end(p) && !is_ws(*p->s) && *p->s != ';' && *p->s != '(') {
        put(out, size, &n, *p->s);
        p->s++;
    }
    finish(out, n, size);
    return n > 0;
}

static int read_number(struct p *p)
{
    int v = 0;
    while (!at_end(p) && g_ascii_isdigit(*p->s)) {
        if (v < AUTHRES_VERSION_MAX)
            v = v * 10 + (*p->s - '0');
        p->s++;
    }
    return v > AUTHRES_VERSION_MAX ? AUTHRES_VERSION_MAX : v;
}

/* ---- the parser ---------------------------------------------------------------------- */

/* The properties (and reason) after "method=result", up to the next ';'. */
static void read_props(struct p *p, struct authres_result *r)
{
    char buf[AUTHRES_TOKEN_MAX];
    for (;;) {
        skip_cfws(p);
        if (at_end(p) || p->bad || *p->s == ';')
            return;
        char key[AUTHRES_NAME_MAX];
        if (!read_keyword(p, key, sizeof key)) {
            skip_to_semicolon(p);
            return;
        }
        skip_cfws(p);
        if (!at_end(p) && *p->s == '=' && strcmp(key, "reason") == 0) {
            p->s++;
            skip_cfws(p);
            if (read_pvalue(p, buf, sizeof buf) && !r->reason)
                r->reason = g_strdup(buf);
            continue;
        }
        if (at_end(p) || *p->s != '.') {
            skip_to_semicolon(p);
            return;
        }
        p->s++;
        skip_cfws(p);
        char prop[AUTHRES_NAME_MAX];
        if (!read_keyword(p, prop, sizeof prop)) {
            skip_to_semicolon(p);
            return;
        }
        skip_cfws(p);
        if (at_end(p) || *p->s != '=') {
            skip_to_semicolon(p);
            return;
        }
        p->s++;
        skip_cfws(p);
        if (!read_pvalue(p, buf, sizeof buf))
            buf[0] = '\0';
        if (r->prop_count < AUTHRES_PROPS_MAX) {
            struct authres_prop *pr = &r->props[r->prop_count++];
            g_strlcpy(pr->ptype, key, sizeof pr->ptype);
            g_strlcpy(pr->property, prop, sizeof pr->property);
            pr->value = g_strdup(buf);
        }
    }
}

int authres_parse(const char *value, size_t len, struct authres *out)
{
    memset(out, 0, sizeof *out);
    if (!value || len > AUTHRES_VALUE_MAX)
        return -1;
    struct p p = {value, value + len, false};
    char id[AUTHRES_TOKEN_MAX];
    skip_cfws(&p);
    const char *start = p.s;
    if (p.bad || !read_value(&p, id, sizeof id) || !id[0])
        return -1;
    out->version = 1;
    skip_cfws(&p);
    bool need_semicolon = true;
    if (!at_end(&p) && *p.s == '=') {
        /* no authserv-id, a result first: as Microsoft 365 writes them */
        p.s = start;
        need_semicolon = false;
    } else {
        out->authserv_id = g_strdup(id);
    }
    if (out->authserv_id && !at_end(&p) && g_ascii_isdigit(*p.s)) {
        const char *q = p.s;
        while (q < p.end && g_ascii_isdigit(*q))
            q++;
        if (q == p.end || is_ws(*q) || *q == ';' || *q == '(') {
            out->version = read_number(&p);
            skip_cfws(&p);
        }
    }
    size_t cap = 0;
    while (!at_end(&p) && !p.bad) {
        if (need_semicolon) {
            if (*p.s != ';') {
                skip_to_semicolon(&p); /* something unreadable */
                continue;
            }
            p.s++;
        }
        need_semicolon = true;
        skip_cfws(&p);
        char method[AUTHRES_NAME_MAX], result[AUTHRES_NAME_MAX];
        if (at_end(&p) || !read_keyword(&p, method, sizeof method))
            continue;
        skip_cfws(&p);
        if (strcmp(method, "none") == 0 && (at_end(&p) || *p.s == ';')) {
            out->none = true;
            continue;
        }
        int version = 1;
        if (!at_end(&p) && *p.s == '/') {
            p.s++;
            skip_cfws(&p);
            version = read_number(&p);
            skip_cfws(&p);
        }
        if (at_end(&p) || *p.s != '=') {
            skip_to_semicolon(&p);
            continue;
        }
        p.s++;
        skip_cfws(&p);
        if (!read_keyword(&p, result, sizeof result)) {
            skip_to_semicolon(&p);
            continue;
        }
        if (out->count >= AUTHRES_RESULTS_MAX) {
            skip_to_semicolon(&p);
            continue;
        }
        if (out->count == cap) {
            cap = cap ? cap * 2 : 4;
            out->results = g_renew(struct authres_result, out->results, cap);
        }
        struct authres_result *r = &out->results[out->count++];
        memset(r, 0, sizeof *r);
        g_strlcpy(r->method, method, sizeof r->method);
        g_strlcpy(r->result, result, sizeof r->result);
        r->version = version;
        read_props(&p, r);
    }
    if (p.bad || (!out->authserv_id && !out->count)) {
        authres_free(out);
        return -1;
    }
    return 0;
}

void authres_free(struct authres *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->count; i++) {
        g_free(a->results[i].reason);
        for (size_t k = 0; k < a->results[i].prop_count; k++)
            g_free(a->results[i].props[k].value);
    }
    g_free(a->results);
    g_free(a->authserv_id);
    memset(a, 0, sizeof *a);
}

const char *authres_prop(const struct authres_result *r, const char *ptype, const char *property)
{
    for (size_t i = 0; i < r->prop_count; i++)
        if (strcmp(r->props[i].ptype, ptype) == 0 && strcmp(r->props[i].property, property) == 0)
            return r->props[i].value;
    return NULL;
}

/* ---- the message object's `authentication` ------------------------------------------------- */

/* A JSON string of valid UTF-8 (NULL gives null). */
static cJSON *jstr(const char *s)
{
    if (!s)
        return cJSON_CreateNull();
    char *v = g_utf8_make_valid(s, -1);
    cJSON *j = cJSON_CreateString(v);
    g_free(v);
    return j;
}

static bool add(cJSON *obj, const char *key, cJSON *item)
{
    if (!item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

/* The signing domain of a dkim result: header.d, else the domain of header.i. */
static char *dkim_domain(const struct authres_result *r)
{
    const char *d = authres_prop(r, "header", "d");
    if (!d || !*d) {
        const char *i = authres_prop(r, "header", "i");
        const char *at = i ? strrchr(i, '@') : NULL;
        d = at ? at + 1 : i;
    }
    return d && *d ? g_ascii_strdown(d, -1) : NULL;
}

static cJSON *build(struct authres *fields, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *dkim = cJSON_CreateArray();
    if (!o || !dkim) {
        cJSON_Delete(o);
        cJSON_Delete(dkim);
        return NULL;
    }
    const char *spf = NULL, *dmarc = NULL, *arc = NULL;
    bool ok = true;
    int ndkim = 0;
    for (size_t f = 0; f < n && ok; f++) {
        for (size_t i = 0; i < fields[f].count && ok; i++) {
            const struct authres_result *r = &fields[f].results[i];
            if (strcmp(r->method, "spf") == 0 && !spf)
                spf = r->result;
            else if (strcmp(r->method, "dmarc") == 0 && !dmarc)
                dmarc = r->result;
            else if (strcmp(r->method, "arc") == 0 && !arc)
                arc = r->result;
            else if (strcmp(r->method, "dkim") == 0 && ndkim < AUTHRES_DKIM_MAX) {
                cJSON *e = cJSON_CreateObject();
                char *d = dkim_domain(r);
                ok = e && add(e, "domain", jstr(d)) && add(e, "result", jstr(r->result)) &&
                     cJSON_AddItemToArray(dkim, e);
                if (!ok)
                    cJSON_Delete(e);
                g_free(d);
                ndkim++;
            }
        }
    }
    ok = ok && add(o, "authserv_id", jstr(fields[0].authserv_id)) && add(o, "spf", jstr(spf));
    if (ok) {
        ok = add(o, "dkim", dkim); /* owned by o, or deleted */
        dkim = NULL;
    }
    cJSON_Delete(dkim);
    ok = ok && add(o, "dmarc", jstr(dmarc)) && add(o, "arc", jstr(arc));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static bool trusted_id(const char *id, const char *const *trusted, size_t n)
{
    if (!id)
        return false;
    for (size_t i = 0; i < n; i++)
        if (trusted[i] && g_ascii_strcasecmp(id, trusted[i]) == 0)
            return true;
    return false;
}

cJSON *authres_json(const char *const *values, size_t count, const char *const *trusted,
                    size_t trusted_count)
{
    if (count > AUTHRES_FIELDS_MAX)
        count = AUTHRES_FIELDS_MAX;
    if (!values || count == 0)
        return cJSON_CreateNull();
    struct authres *fields = g_new0(struct authres, count);
    size_t n = 0;
    if (trusted_count == 0) {
        /* only the topmost field: the ones below may be forged */
        if (values[0] && authres_parse(values[0], strlen(values[0]), &fields[0]) == 0)
            n = 1;
    } else {
        const char *id = NULL;
        for (size_t i = 0; i < count; i++) {
            if (!values[i] || authres_parse(values[i], strlen(values[i]), &fields[n]) != 0)
                continue;
            const char *fid = fields[n].authserv_id;
            bool take = id ? fid && g_ascii_strcasecmp(fid, id) == 0
                           : trusted_id(fid, trusted, trusted_count);
            if (take) {
                if (!id)
                    id = fields[n].authserv_id;
                n++;
            } else {
                authres_free(&fields[n]);
            }
        }
    }
    cJSON *out = n ? build(fields, n) : cJSON_CreateNull();
    for (size_t i = 0; i < n; i++)
        authres_free(&fields[i]);
    g_free(fields);
    return out;
}
