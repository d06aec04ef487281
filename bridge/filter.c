/* filter — see include/filter.h. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "filter.h"

#include <ctype.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "message.h"

#define SHOWN_MAX 60 /* bytes of a message's value quoted in a reason */
#define REASON_MAX 320

const char *const filter_event_types[] = {"message.received", "message.bounce",
                                          "message.too_large", "account.auth_error", NULL};

struct filter {
    pcre2_code *subject;
    pcre2_code **headers; /* one per spec->headers[i] */
    size_t header_count;
    pcre2_match_context *mctx;
};

/* ---- compiling ---------------------------------------------------------------------- */

static pcre2_code *compile_one(const char *pattern, const char *key, struct filter_error *fe)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR text[FILTER_ERROR_MAX - 64]; /* room for the offset before it */
        if (pcre2_get_error_message(code, text, sizeof text) < 0)
            snprintf((char *)text, sizeof text, "error %d", code);
        snprintf(fe->key, sizeof fe->key, "%s", key);
        int n = snprintf(fe->msg, sizeof fe->msg, "PCRE2 error at offset %zu: %s", (size_t)off,
                         (const char *)text);
        (void)n; /* a long library message is cut: the offset comes first */
        return NULL;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: the interpreter remains */
    return re;
}

static bool glob_ok(char **pats, size_t n, const char *name, struct filter_error *fe)
{
    for (size_t i = 0; i < n; i++) {
        if (!strchr(pats[i], '@') && strcmp(pats[i], "*") != 0) {
            snprintf(fe->key, sizeof fe->key, "%s[%zu]", name, i);
            snprintf(fe->msg, sizeof fe->msg,
                     "an address pattern needs an @ (\"*@example.com\", \"sales+*@*\") or is \"*\"");
            return false;
        }
    }
    return true;
}

struct filter *filter_compile(const struct config_filter *spec, struct filter_error *fe)
{
    memset(fe, 0, sizeof *fe);
    if (!glob_ok(spec->to, spec->to_count, "to", fe) ||
        !glob_ok(spec->from, spec->from_count, "from", fe))
        return NULL;
    struct filter *f = calloc(1, sizeof *f);
    if (!f || !(f->mctx = pcre2_match_context_create(NULL))) {
        snprintf(fe->msg, sizeof fe->msg, "out of memory");
        filter_free(f);
        return NULL;
    }
    pcre2_set_match_limit(f->mctx, FILTER_MATCH_LIMIT);
    pcre2_set_depth_limit(f->mctx, FILTER_DEPTH_LIMIT);
    pcre2_set_heap_limit(f->mctx, FILTER_HEAP_LIMIT_KIB);
    if (spec->subject && !(f->subject = compile_one(spec->subject, "subject", fe))) {
        filter_free(f);
        return NULL;
    }
    if (spec->header_count) {
        f->headers = calloc(spec->header_count, sizeof *f->headers);
        if (!f->headers) {
            snprintf(fe->msg, sizeof fe->msg, "out of memory");
            filter_free(f);
            return NULL;
        }
        f->header_count = spec->header_count;
        for (size_t i = 0; i < spec->header_count; i++) {
            char key[FILTER_KEY_MAX];
            int n = snprintf(key, sizeof key, "headers.%s", spec->headers[i].name);
            (void)n; /* names are at most 100 bytes (config.c) */
            if (!(f->headers[i] = compile_one(spec->headers[i].value, key, fe))) {
                filter_free(f);
                return NULL;
            }
        }
    }
    return f;
}

void filter_free(struct filter *f)
{
    if (!f)
        return;
    pcre2_code_free(f->subject);
    for (size_t i = 0; f->headers && i < f->header_count; i++)
        pcre2_code_free(f->headers[i]);
    free(f->headers);
    pcre2_match_context_free(f->mctx);
    free(f);
}

/* ---- small matchers ----------------------------------------------------------------- */

bool filter_glob(const char *p, const char *s)
{
    /* iterative with one backtrack point: linear in practice, O(|p|*|s|) at worst */
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p && (*p == '?' || tolower((unsigned char)*p) == tolower((unsigned char)*s))) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

/* 1 match, 0 no match, -1 a limit was hit (*why says which). */
static int re_match(const struct filter *f, const pcre2_code *re, const char *s,
                    const char **why)
{
    size_t n = strlen(s);
    if (n > FILTER_VALUE_MAX)
        n = FILTER_VALUE_MAX; /* at most FILTER_VALUE_MAX bytes are looked at */
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--; /* never cut a UTF-8 sequence */
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) {
        *why = "out of memory";
        return -1;
    }
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK, md, f->mctx);
    pcre2_match_data_free(md);
    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    *why = rc == PCRE2_ERROR_MATCHLIMIT   ? "FILTER_MATCH_LIMIT was reached"
           : rc == PCRE2_ERROR_DEPTHLIMIT ? "FILTER_DEPTH_LIMIT was reached"
           : rc == PCRE2_ERROR_HEAPLIMIT  ? "FILTER_HEAP_LIMIT_KIB was reached"
                                          : "the match failed";
    return -1;
}

static const char *str_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* "a short prefix" of a value for a reason, quotes and controls replaced. */
static const char *shown(const char *s, char *buf, size_t size)
{
    size_t n = 0, i = 0;
    for (; s[i] && n + 4 < size && i < SHOWN_MAX; i++)
        buf[n++] = ((unsigned char)s[i] < 0x20 || s[i] == '"') ? '?' : s[i];
    while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0xC0)
        n--; /* a sequence cut at its start */
    if (s[i]) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* The address inside "Name <a@b>" or "<a@b>" or "a@b", into buf. */
static const char *bare_address(const char *v, char *buf, size_t size)
{
    const char *lt = strrchr(v, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    const char *b = lt && gt ? lt + 1 : v, *e = lt && gt ? gt : v + strlen(v);
    while (b < e && (*b == ' ' || *b == '\t'))
        b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    int n = snprintf(buf, size, "%.*s", (int)(e - b), b);
    (void)n; /* longer than an address can be: cut, and it will not match */
    return buf;
}

static bool any_glob(char **pats, size_t n, const char *addr)
{
    for (size_t i = 0; i < n; i++)
        if (filter_glob(pats[i], addr))
            return true;
    return false;
}

/* ---- the conditions ------------------------------------------------------------------ */

struct verdict {
    cJSON *why;
    bool all;
};

static void note(struct verdict *v, const char *cond, bool passed, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void note(struct verdict *v, const char *cond, bool passed, const char *fmt, ...)
{
    if (!passed)
        v->all = false;
    if (!v->why)
        return;
    char reason[REASON_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return;
    cJSON_AddStringToObject(o, "condition", cond);
    cJSON_AddBoolToObject(o, "passed", passed);
    cJSON_AddStringToObject(o, "reason", reason);
    cJSON_AddItemToArray(v->why, o);
}

static bool list_has_type(const struct config_filter *s, const char *type)
{
    for (size_t i = 0; i < s->type_count; i++)
        if (strcmp(filter_event_types[s->types[i]], type) == 0)
            return true;
    return false;
}

bool filter_wants_type(const struct config_webhook *w, const char *type)
{
    const struct config_filter *s = &w->filter;
    if (s->present && s->type_count)
        return list_has_type(s, type);
    return strncmp(type, "message.", 8) == 0;
}

bool filter_needs_message(const struct config_webhook *w)
{
    const struct config_filter *s = &w->filter;
    return s->present && (s->to_count || s->from_count || s->subject || s->header_count ||
                          s->has_attachments != CONFIG_UNSET || s->exclude_auto_replies);
}

const char *filter_message_type(const cJSON *msg, bool too_large)
{
    if (too_large)
        return "message.too_large";
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(msg, "bounce");
    return b && cJSON_IsObject(b) ? "message.bounce" : "message.received";
}

static void cond_to(const struct config_filter *s, const cJSON *msg, struct verdict *v)
{
    char buf[CONFIG_ADDRESS_MAX + 1], sh[SHOWN_MAX + 8];
    static const char *const fields[] = {"to", "cc"};
    size_t seen = 0;
    for (size_t f = 0; f < 2; f++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(msg, fields[f]);
        const cJSON *it;
        size_t k = 0;
        cJSON_ArrayForEach(it, arr)
        {
            if (k++ >= FILTER_ADDRESSES_MAX)
                break;
            const char *a = str_of(it, "address");
            if (!a)
                continue;
            seen++;
            if (any_glob(s->to, s->to_count, a)) {
                note(v, "to", true, "%s address %s matches", f ? "Cc" : "To", shown(a, sh, sizeof sh));
                return;
            }
        }
    }
    const cJSON *it;
    size_t k = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(msg, "headers"))
    {
        if (k++ >= MESSAGE_HEADERS_MAX)
            break;
        const char *name = str_of(it, "name"), *val = str_of(it, "value");
        if (!name || !val || strcasecmp(name, "Delivered-To") != 0)
            continue;
        seen++;
        const char *a = bare_address(val, buf, sizeof buf);
        if (any_glob(s->to, s->to_count, a)) {
            note(v, "to", true, "Delivered-To %s matches", shown(a, sh, sizeof sh));
            return;
        }
    }
    note(v, "to", false, seen ? "none of the %zu addresses in To, Cc and Delivered-To matches"
                              : "the message has no To, Cc or Delivered-To address", seen);
}

static void cond_from(const struct config_filter *s, const cJSON *msg, struct verdict *v)
{
    char sh[SHOWN_MAX + 8];
    const char *a = str_of(cJSON_GetObjectItemCaseSensitive(msg, "from"), "address");
    if (!a)
        note(v, "from", false, "the message has no From address");
    else if (any_glob(s->from, s->from_count, a))
        note(v, "from", true, "From %s matches", shown(a, sh, sizeof sh));
    else
        note(v, "from", false, "From %s matches none of the patterns", shown(a, sh, sizeof sh));
}

static void cond_subject(const struct filter *f, const cJSON *msg, struct verdict *v)
{
    char sh[SHOWN_MAX + 8];
    const char *subj = str_of(msg, "subject"), *lim = NULL;
    int r = re_match(f, f->subject, subj ? subj : "", &lim);
    if (r < 0)
        note(v, "subject", false, "not matched: %s", lim);
    else
        note(v, "subject", r == 1, "subject \"%s\" %s the pattern", shown(subj ? subj : "", sh, sizeof sh),
             r == 1 ? "matches" : "does not match");
}

static void cond_headers(const struct config_filter *s, const struct filter *f, const cJSON *msg,
                         struct verdict *v)
{
    char sh[SHOWN_MAX + 8], cond[FILTER_KEY_MAX];
    const cJSON *hdrs = cJSON_GetObjectItemCaseSensitive(msg, "headers");
    for (size_t i = 0; i < s->header_count; i++) {
        int n = snprintf(cond, sizeof cond, "headers.%s", s->headers[i].name);
        (void)n; /* names are at most 100 bytes (config.c) */
        const char *lim = NULL, *last = NULL;
        bool found = false, ok = false;
        const cJSON *it;
        size_t k = 0;
        cJSON_ArrayForEach(it, hdrs)
        {
            if (k++ >= MESSAGE_HEADERS_MAX)
                break;
            const char *name = str_of(it, "name"), *val = str_of(it, "value");
            if (!name || !val || strcasecmp(name, s->headers[i].name) != 0)
                continue;
            found = true;
            last = val;
            int r = re_match(f, f->headers[i], val, &lim);
            if (r == 1) {
                ok = true;
                break;
            }
        }
        if (ok)
            note(v, cond, true, "value \"%s\" matches", shown(last, sh, sizeof sh));
        else if (!found)
            note(v, cond, false, "the message has no %s field", s->headers[i].name);
        else if (lim)
            note(v, cond, false, "not matched: %s", lim);
        else
            note(v, cond, false, "no %s value matches (last: \"%s\")", s->headers[i].name,
                 shown(last, sh, sizeof sh));
        if (!v->all && !v->why)
            return;
    }
}

static void cond_attachments(const struct config_filter *s, const cJSON *msg, struct verdict *v)
{
    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(msg, "attachments"))
    {
        const char *d = str_of(it, "disposition");
        if ((d && strcmp(d, "attachment") == 0) || str_of(it, "filename"))
            n++;
    }
    bool want = s->has_attachments == CONFIG_TRUE;
    note(v, "has_attachments", want == (n > 0), "the message has %zu attachment%s", n,
         n == 1 ? "" : "s");
}

static void cond_auto_reply(const cJSON *msg, struct verdict *v)
{
    const char *kind = str_of(msg, "auto_reply");
    if (kind)
        note(v, "exclude_auto_replies", false, "the message is an automatic reply (%s)", kind);
    else
        note(v, "exclude_auto_replies", true, "the message is not an automatic reply");
}

bool filter_match(const struct config_webhook *w, const char *type, const cJSON *msg, cJSON *why)
{
    const struct config_filter *s = &w->filter;
    struct verdict v = {.why = why, .all = true};
    bool typed = s->present && s->type_count;
    note(&v, "types", filter_wants_type(w, type), "%s is %s", type,
         filter_wants_type(w, type) ? (typed ? "listed" : "a message event (the default)")
                                    : (typed ? "not listed" : "not a message event; list it in types"));
    if (!s->present || strncmp(type, "message.", 8) != 0 || !msg || !s->compiled)
        return v.all;
#define GO_ON() \
    if (!v.all && !v.why) \
        return false
    GO_ON();
    if (s->to_count) {
        cond_to(s, msg, &v);
        GO_ON();
    }
    if (s->from_count) {
        cond_from(s, msg, &v);
        GO_ON();
    }
    if (s->subject) {
        cond_subject(s->compiled, msg, &v);
        GO_ON();
    }
    if (s->header_count) {
        cond_headers(s, s->compiled, msg, &v);
        GO_ON();
    }
    if (s->has_attachments != CONFIG_UNSET) {
        cond_attachments(s, msg, &v);
        GO_ON();
    }
    if (s->exclude_auto_replies)
        cond_auto_reply(msg, &v);
#undef GO_ON
    return v.all;
}

/* ---- routing ------------------------------------------------------------------------- */

bool filter_route_needs_message(const struct config_account *a)
{
    for (size_t i = 0; a->webhook_cfg && i < a->webhook_count; i++) {
        const struct config_webhook *w = a->webhook_cfg[i];
        if (w && w->filter.present && (w->filter.type_count || filter_needs_message(w)))
            return true;
    }
    return false;
}

unsigned filter_route_needs(const struct config_account *a)
{
    unsigned needs = 0;
    for (size_t i = 0; a->webhook_cfg && i < a->webhook_count; i++) {
        const struct config_webhook *w = a->webhook_cfg[i];
        if (!w || !w->filter.present)
            continue;
        const struct config_filter *s = &w->filter;
        if (s->type_count)
            needs |= FILTER_NEEDS_ROUTE;
        /* the type decides only when one of received and bounce is listed
         * without the other; then the bounce must be known */
        if (s->type_count &&
            list_has_type(s, "message.received") != list_has_type(s, "message.bounce"))
            needs |= FILTER_NEEDS_TYPE;
        if (s->has_attachments != CONFIG_UNSET)
            needs |= FILTER_NEEDS_ATTACHMENTS;
        if (filter_needs_message(w))
            needs |= FILTER_NEEDS_HEADER;
    }
    return needs;
}

size_t filter_route(const struct config_account *a, const char *type, const cJSON *msg,
                    const char **names, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < a->webhook_count && n < max; i++) {
        const struct config_webhook *w = a->webhook_cfg ? a->webhook_cfg[i] : NULL;
        if (!w) {
            names[n++] = a->webhooks[i];
            continue;
        }
        if (msg ? filter_match(w, type, msg, NULL) : filter_wants_type(w, type))
            names[n++] = a->webhooks[i];
    }
    return n;
}

cJSON *filter_to_json(const struct config_webhook *w)
{
    const struct config_filter *s = &w->filter;
    if (!s->present)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    if (s->type_count) {
        cJSON *a = cJSON_AddArrayToObject(o, "types");
        for (size_t i = 0; a && i < s->type_count; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(filter_event_types[s->types[i]]));
    }
    if (s->to_count)
        cJSON_AddItemToObject(o, "to", cJSON_CreateStringArray((const char *const *)s->to,
                                                               (int)s->to_count));
    if (s->from_count)
        cJSON_AddItemToObject(o, "from", cJSON_CreateStringArray((const char *const *)s->from,
                                                                 (int)s->from_count));
    if (s->subject)
        cJSON_AddStringToObject(o, "subject", s->subject);
    if (s->header_count) {
        cJSON *h = cJSON_AddObjectToObject(o, "headers");
        for (size_t i = 0; h && i < s->header_count; i++)
            cJSON_AddStringToObject(h, s->headers[i].name, s->headers[i].value);
    }
    if (s->has_attachments != CONFIG_UNSET)
        cJSON_AddBoolToObject(o, "has_attachments", s->has_attachments == CONFIG_TRUE);
    if (s->exclude_auto_replies)
        cJSON_AddBoolToObject(o, "exclude_auto_replies", true);
    return o;
}
