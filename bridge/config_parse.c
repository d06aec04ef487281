/* config_parse — messages' helpers, "did you mean", scalar values and parsing
 * by table; see config_impl.h.
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

/* A value quoted for a message: control characters replaced, length capped. */
const char *cfg_show(const char *s, char *buf, size_t size)
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

const char *cfg_json_type(const cJSON *v)
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
void cfg_path_key(char *out, size_t size, const char *parent, const char *key)
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

void cfg_path_index(char *out, size_t size, const char *parent, size_t i)
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
const char *cfg_closest(const char *word, const char *const *cands, size_t n)
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
    return cfg_closest(word, names, n);
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
        cfg_problem(c, path, "expected a string, got %s", cfg_json_type(v));
        return NULL;
    }
    const char *s = v->valuestring;
    size_t len = strlen(s);
    if (max <= 0)
        max = CONFIG_STRING_MAX;
    if (min > 0 && len < (size_t)min) {
        cfg_problem(c, path, "must not be empty");
        return NULL;
    }
    if (len > (size_t)max) {
        cfg_problem(c, path, "is %zu bytes long; the limit is %lld", len, (long long)max);
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) {
            cfg_problem(c, path, "contains a control character (byte %zu)", i + 1);
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
        cfg_problem(c, path, "expected an integer, got %s", cfg_json_type(v));
        return false;
    }
    double d = v->valuedouble;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || (double)(int64_t)d != d) {
        cfg_problem(c, path, "expected a whole number, got %g", d);
        return false;
    }
    int64_t x = (int64_t)d;
    if (x < min || x > max) {
        cfg_problem(c, path, "must be between %lld and %lld, got %lld", (long long)min, (long long)max,
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
        cfg_problem(c, path, "expected a duration string such as \"30s\", got %s", cfg_json_type(v));
        return false;
    }
    int64_t ms;
    if (units_parse_duration_ms(v->valuestring, &ms, why, sizeof why) < 0) {
        if (strstr(why, "too large"))
            cfg_problem(c, path, "%s is too large a duration", cfg_show(v->valuestring, sh, sizeof sh));
        else
            cfg_problem(c, path, "%s is not a duration (use ms, s, m, h or d)",
                    cfg_show(v->valuestring, sh, sizeof sh));
        return false;
    }
    if (ms < min || ms > max) {
        cfg_problem(c, path, "must be between %s and %s, got %s", units_format_duration(min, b1, sizeof b1),
                units_format_duration(max, b2, sizeof b2), cfg_show(v->valuestring, sh, sizeof sh));
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
            cfg_problem(c, path, "%s is not a size: %s", cfg_show(v->valuestring, sh, sizeof sh), why);
            return false;
        }
    } else {
        cfg_problem(c, path, "expected a size such as \"256KiB\" or a number of bytes, got %s",
                cfg_json_type(v));
        return false;
    }
    if (x < (uint64_t)min || x > (uint64_t)max) {
        cfg_problem(c, path, "must be between %s and %s, got %s",
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
    const char *near = cfg_closest(s, values, n);
    if (near)
        cfg_problem(c, path, "%s is not one of: %s (did you mean \"%s\"?)", cfg_show(s, sh, sizeof sh), list,
                near);
    else
        cfg_problem(c, path, "%s is not one of: %s", cfg_show(s, sh, sizeof sh), list);
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
        cfg_problem(c, path, "the path is longer than PATH_MAX (%d) once made absolute", PATH_MAX);
        return NULL;
    }
    normalize_path(buf);
    return strdup(buf);
}

/* ---- parsing ------------------------------------------------------------------ */


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
        cfg_problem(c, path, "give only one of %s", secret_alternatives(t, o->off, alts, sizeof alts));
        return;
    }
    char *ref = NULL;
    switch (o->src) {
    case CONFIG_SECRET_ENV:
        if (!is_env_name(s)) {
            cfg_problem(c, path, "%s is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    cfg_show(s, sh, sizeof sh));
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
        cfg_problem(c, path, "out of memory");
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
        cfg_problem(c, path, "expected an object of header names to values, got %s", cfg_json_type(v));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > o->max_items) {
        cfg_problem(c, path, "has %zu headers; the limit is %zu (CONFIG_HEADERS_MAX)", n, o->max_items);
        return;
    }
    struct config_header *h = n ? calloc(n, sizeof *h) : NULL;
    if (n && !h) {
        cfg_problem(c, path, "out of memory");
        return;
    }
    size_t k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        const char *name = it->string ? it->string : "";
        cfg_path_key(sub, sizeof sub, path, name);
        bool ok = *name != '\0' && strlen(name) <= 100;
        for (const char *p = name; *p && ok; p++)
            ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                 strchr("!#$%&'*+-.^_`|~", *p) != NULL;
        if (!ok) {
            cfg_problem(c, sub, "is not a valid HTTP header name");
            continue;
        }
        bool bad = false, any = (o->flags & F_ANY_HEADER) != 0;
        for (size_t i = 0; reserved[i] && !bad && !any; i++)
            if (strcasecmp(name, reserved[i]) == 0) {
                cfg_problem(c, sub, "is set by the bridge itself and cannot be configured");
                bad = true;
            }
        for (size_t i = 0; credentials[i] && !bad && !any; i++)
            if (strcasecmp(name, credentials[i]) == 0) {
                cfg_problem(c, sub, "would put a credential in the file; use auth (basic or "
                                "bearer) or headers_env / headers_file");
                bad = true;
            }
        for (size_t i = 0; i < k && !bad; i++)
            if (strcasecmp(name, h[i].name) == 0) {
                cfg_problem(c, sub, "is given twice");
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
            cfg_problem(c, sub, "out of memory");
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
            cfg_problem(c, path, "out of memory");
            return;
        }
        *AT(base, o->off, char **) = one;
        *AT(base, o->count_off, size_t) = 1;
        return;
    }
    if (!cJSON_IsArray(v)) {
        cfg_problem(c, path, "expected an array, got %s", cfg_json_type(v));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > o->max_items) {
        cfg_problem(c, path, "has %zu items; the limit is %zu", n, o->max_items);
        return;
    }
    size_t elem = o->type == T_ENUMLIST ? sizeof(int)
                  : o->type == T_DURLIST ? sizeof(int64_t)
                                         : sizeof(char *);
    void *arr = n ? calloc(n, elem) : NULL;
    if (n && !arr) {
        cfg_problem(c, path, "out of memory");
        return;
    }
    size_t k = 0, i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        cfg_path_index(sub, sizeof sub, path, i++);
        if (o->type == T_ENUMLIST) {
            int e;
            if (!get_enum(c, it, sub, o->values, &e))
                continue;
            int *ints = arr;
            bool dup = false;
            for (size_t j = 0; j < k && !dup; j++)
                dup = ints[j] == e;
            if (dup) {
                cfg_problem(c, sub, "\"%s\" is listed twice", o->values[e]);
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
                cfg_problem(c, sub, "%s is not a valid name ([A-Za-z0-9._-], 1 to %d characters)",
                        cfg_show(s, sh, sizeof sh), CONFIG_NAME_MAX);
                continue;
            }
            char **strs = arr;
            bool dup = false;
            for (size_t j = 0; j < k && !dup; j++)
                dup = strcmp(strs[j], s) == 0;
            if (dup) {
                cfg_problem(c, sub, "%s is listed twice", cfg_show(s, sh, sizeof sh));
                continue;
            }
            if (!(strs[k] = strdup(s))) {
                cfg_problem(c, sub, "out of memory");
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
        cfg_problem(c, path, "expected an array of objects, got %s", cfg_json_type(v));
        return;
    }
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > o->max_items) {
        cfg_problem(c, path, "has %zu entries; the limit is %zu", n, o->max_items);
        return;
    }
    char *arr = n ? calloc(n, t->size) : NULL;
    if (n && !arr) {
        cfg_problem(c, path, "out of memory");
        return;
    }
    *AT(base, o->off, void *) = arr;
    *AT(base, o->count_off, size_t) = n;
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        cfg_path_index(sub, sizeof sub, path, i);
        cfg_parse_table(c, t, arr + i * t->size, it, sub);
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
                    cfg_path_index(elem, sizeof elem, path, a);
                    cfg_path_key(sub, sizeof sub, elem, t->opts[k].name);
                    cfg_path_index(other, sizeof other, path, b);
                    cfg_problem(c, sub, "%s is already used by %s", cfg_show(na, sh, sizeof sh), other);
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
            cfg_problem(c, path, "%s is not a valid name ([A-Za-z0-9._-], 1 to %d characters)",
                    cfg_show(s, sh, sizeof sh), CONFIG_NAME_MAX);
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
            cfg_problem(c, path, "expected true or false, got %s", cfg_json_type(v));
        else
            *AT(base, o->off, bool) = cJSON_IsTrue(v);
        return;
    case T_TRIBOOL:
        if (!cJSON_IsBool(v))
            cfg_problem(c, path, "expected true or false, got %s", cfg_json_type(v));
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
        cfg_problem(c, path, "secrets are not accepted in the file itself; use %s",
                o->hint ? o->hint : secret_alternatives(t, o->off, alts, sizeof alts));
        return;
    }
    case T_OBJECT:
        if ((o->flags & F_WORD_DEFAULTS) && cJSON_IsString(v)) {
            int word;
            if (get_enum(c, v, path, o->values, &word))
                cfg_parse_table(c, o->sub, AT(base, o->off, char), NULL, path);
            return;
        }
        cfg_parse_table(c, o->sub, AT(base, o->off, char), v, path);
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
        cfg_parse_table(c, o->sub, AT(base, o->off, char), NULL, path);
        return;
    }
    if (!o->def)
        return;
    cJSON *v = cJSON_Parse(o->def);
    if (!v) {
        cfg_problem(c, path, "internal error: the built-in default does not parse");
        return;
    }
    parse_opt(c, t, o, base, v, path);
    cJSON_Delete(v);
}

/* Fill `base` from the object `obj` (NULL: only defaults) by the table. */
void cfg_parse_table(struct ctx *c, const struct table *t, void *base, const cJSON *obj,
                 const char *path)
{
    char sub[PATH_KEY_MAX];
    bool seen[64] = {false};
    bool wrong_type = obj && !cJSON_IsObject(obj);
    if (wrong_type) {
        cfg_problem(c, path, "expected an object, got %s", cfg_json_type(obj));
        obj = NULL;
    }
    const cJSON *it;
    if (obj) {
        cJSON_ArrayForEach(it, obj)
        {
            const char *key = it->string ? it->string : "";
            cfg_path_key(sub, sizeof sub, path, key);
            size_t i = 0;
            while (i < t->n && strcmp(t->opts[i].name, key) != 0)
                i++;
            if (i == t->n) {
                const char *near = closest_opt(key, t);
                if (near)
                    cfg_problem(c, sub, "unknown key (did you mean \"%s\"?)", near);
                else
                    cfg_problem(c, sub, "unknown key");
                continue;
            }
            if (seen[i]) {
                cfg_problem(c, sub, "is given twice");
                continue;
            }
            seen[i] = true;
            parse_opt(c, t, &t->opts[i], base, it, sub);
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        if (seen[i])
            continue;
        cfg_path_key(sub, sizeof sub, path, t->opts[i].name);
        if (t->opts[i].flags & F_REQUIRED) {
            if (!wrong_type)
                cfg_problem(c, sub, "is required but missing");
        }
        else
            apply_default(c, t, &t->opts[i], base, sub);
    }
    if (obj && t->present_off != NO_OFF)
        *AT(base, t->present_off, bool) = true;
    if (t->check && !wrong_type && (obj || t->present_off == NO_OFF))
        t->check(c, base, path);
}
