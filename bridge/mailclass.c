/* mailclass — auto_reply, spam and list from header fields; see include/mailclass.h. */
#include "mailclass.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <glib.h>
#include <pcre2.h>

#define MAILCLASS_MATCH_LIMIT 100000 /* PCRE2 match steps for the subject */

/* ---- helpers -------------------------------------------------------------------- */

/* The field unfolded (CR and LF removed, tabs made spaces), trimmed, its
 * first MAILCLASS_VALUE_MAX bytes, valid UTF-8; NULL for NULL. */
static char *unfolded(const char *v)
{
    if (!v)
        return NULL;
    GString *g = g_string_new(NULL);
    for (size_t i = 0; v[i] && i < MAILCLASS_VALUE_MAX; i++) {
        if (v[i] == '\r' || v[i] == '\n')
            continue;
        g_string_append_c(g, v[i] == '\t' ? ' ' : v[i]);
    }
    char *s = g_utf8_make_valid(g_strstrip(g->str), -1);
    g_string_free(g, TRUE);
    return s;
}

static bool word_is(const char *s, const char *word)
{
    size_t n = strlen(word);
    return g_ascii_strncasecmp(s, word, n) == 0 &&
           (s[n] == '\0' || s[n] == ',' || s[n] == ';' || g_ascii_isspace(s[n]));
}

static bool add(cJSON *obj, const char *key, cJSON *item)
{
    if (!item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

/* ---- auto_reply ------------------------------------------------------------------- */

static const char *const vacation_re =
    "^\\s*(?:automatic reply|auto[- ]?reply|auto[- ]?response|autoresponse"
    "|out of (?:the )?office(?: auto ?reply| reply)?|on vacation|vacation reply"
    "|away from (?:the )?office|automatische antwort|abwesenheitsnotiz|abwesend"
    "|réponse automatique|absence du bureau|respuesta automática|fuera de la oficina"
    "|risposta automatica|fuori sede|resposta automática|automatisch antwoord|afwezig"
    "|automatiskt svar|frånvaro|automatisk svar|autosvar|fraværende|ikke på kontoret"
    "|automaattinen vastaus|poissa toimistosta|odpowiedź automatyczna|autoodpowiedź"
    "|nieobecność|自動応答|自動返信|自动回复|自動回覆|不在通知|外出中)\\s?[:：]";

static pcre2_code *vacation;
static pcre2_match_context *vacation_ctx;
static pthread_once_t vacation_once = PTHREAD_ONCE_INIT;

static void vacation_compile(void)
{
    int errcode;
    PCRE2_SIZE erroff;
    vacation = pcre2_compile((PCRE2_SPTR)vacation_re, PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &errcode, &erroff, NULL);
    vacation_ctx = pcre2_match_context_create(NULL);
    if (!vacation || !vacation_ctx)
        abort(); /* the pattern above is wrong: caught by the unit tests */
    pcre2_set_match_limit(vacation_ctx, MAILCLASS_MATCH_LIMIT);
}

static bool vacation_subject(const char *subject)
{
    if (!subject)
        return false;
    pthread_once(&vacation_once, vacation_compile);
    char *s = g_utf8_make_valid(subject, strnlen(subject, MAILCLASS_VALUE_MAX));
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!md)
        abort();
    int rc = pcre2_match(vacation, (PCRE2_SPTR)s, strlen(s), 0, PCRE2_NO_UTF_CHECK, md, vacation_ctx);
    pcre2_match_data_free(md);
    g_free(s);
    return rc >= 0;
}

/* A field that says yes: present and not "no", "false", "0" or empty. */
static bool says_yes(const char *v)
{
    char *s = unfolded(v);
    bool yes = s && *s && !word_is(s, "no") && !word_is(s, "false") && !word_is(s, "0");
    g_free(s);
    return yes;
}

const char *mailclass_auto_reply(const struct mailclass_headers *h)
{
    const char *kind = NULL;
    char *as = unfolded(h->auto_submitted);
    if (as && *as) {
        if (word_is(as, "no")) {
            g_free(as);
            return NULL;
        }
        if (word_is(as, "auto-replied"))
            kind = "auto-replied";
        else if (word_is(as, "auto-notified"))
            kind = "auto-notified";
        else
            kind = "auto-generated";
    }
    g_free(as);
    if (vacation_subject(h->subject))
        return "vacation";
    if (kind)
        return kind;
    if (says_yes(h->x_autoreply) || says_yes(h->x_autorespond))
        return "auto-replied";
    char *prec = unfolded(h->precedence);
    if (prec && word_is(prec, "auto_reply"))
        kind = "auto-replied";
    else if (prec && (word_is(prec, "bulk") || word_is(prec, "junk")))
        kind = "auto-generated";
    g_free(prec);
    if (kind)
        return kind;
    char *suppress = unfolded(h->x_auto_response_suppress);
    if (suppress && *suppress)
        kind = "auto-generated";
    g_free(suppress);
    return kind;
}

/* ---- spam ------------------------------------------------------------------------------ */

/* The value after "key=" where key starts a word of s, or NULL. */
static const char *find_key(const char *s, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = s; (p = strstr(p, key)) != NULL; p += n) {
        bool starts = p == s || p[-1] == ' ' || p[-1] == ',';
        if (starts && p[n] == '=')
            return p + n + 1;
    }
    return NULL;
}

/* A number at s, clamped; false if there is none. */
static bool number_at(const char *s, double *out)
{
    while (*s == ' ')
        s++;
    char *end;
    double v = g_ascii_strtod(s, &end);
    if (end == s || !isfinite(v))
        return false;
    if (v > MAILCLASS_SCORE_MAX)
        v = MAILCLASS_SCORE_MAX;
    if (v < -MAILCLASS_SCORE_MAX)
        v = -MAILCLASS_SCORE_MAX;
    *out = v;
    return true;
}

static bool test_char(char c)
{
    return g_ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
}

/* Adds one test name (s, n bytes) unless it is "NONE", too long, or the list
 * is full. */
static bool add_test(cJSON *tests, const char *s, size_t n)
{
    if (n == 0 || n > MAILCLASS_NAME_MAX || (n == 4 && memcmp(s, "NONE", 4) == 0) ||
        cJSON_GetArraySize(tests) >= MAILCLASS_TESTS_MAX)
        return true;
    char *name = g_strndup(s, n);
    cJSON *j = cJSON_CreateString(name);
    g_free(name);
    if (!j || !cJSON_AddItemToArray(tests, j)) {
        cJSON_Delete(j);
        return false;
    }
    return true;
}

/* "tests=A,B,\n\tC autolearn=no" (the list goes on after a comma and white
 * space) or amavis' "tests=[A=1.2, B=-0.1]". */
static bool parse_tests(const char *p, cJSON *tests)
{
    if (*p == '[') {
        const char *end = strchr(++p, ']');
        if (!end)
            end = p + strlen(p);
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ','))
                p++;
            const char *q = p;
            while (q < end && test_char(*q))
                q++;
            if (!add_test(tests, p, (size_t)(q - p)))
                return false;
            while (q < end && *q != ',')
                q++;
            p = q;
        }
        return true;
    }
    for (;;) {
        const char *q = p;
        while (test_char(*q))
            q++;
        if (!add_test(tests, p, (size_t)(q - p)))
            return false;
        if (*q != ',')
            return true;
        p = q + 1;
        while (*p == ' ')
            p++;
    }
}

cJSON *mailclass_spam_json(const struct mailclass_headers *h)
{
    if (!h->x_spam_status && !h->x_spam_score && !h->x_spam_flag)
        return cJSON_CreateNull();
    char *status = unfolded(h->x_spam_status);
    char *score_f = unfolded(h->x_spam_score);
    char *flag_f = unfolded(h->x_spam_flag);
    double score = 0;
    bool have_score = false;
    int flag = -1;
    cJSON *o = cJSON_CreateObject();
    cJSON *tests = cJSON_CreateArray();
    bool ok = o && tests;
    if (ok && status) {
        if (word_is(status, "yes"))
            flag = 1;
        else if (word_is(status, "no"))
            flag = 0;
        const char *sc = find_key(status, "score");
        if (!sc)
            sc = find_key(status, "hits");
        have_score = sc && number_at(sc, &score);
        const char *t = find_key(status, "tests");
        if (t)
            ok = parse_tests(t, tests);
    }
    if (!have_score && score_f)
        have_score = number_at(score_f, &score);
    if (flag_f && (word_is(flag_f, "yes") || word_is(flag_f, "true")))
        flag = 1;
    else if (flag_f && (word_is(flag_f, "no") || word_is(flag_f, "false")))
        flag = 0;
    g_free(status);
    g_free(score_f);
    g_free(flag_f);
    ok = ok && add(o, "score", have_score ? cJSON_CreateNumber(score) : cJSON_CreateNull()) &&
         add(o, "flag", flag < 0 ? cJSON_CreateNull() : cJSON_CreateBool(flag == 1));
    if (ok) {
        ok = add(o, "tests", tests); /* owned by o, or deleted */
        tests = NULL;
    }
    cJSON_Delete(tests);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- list -------------------------------------------------------------------------------- */

/* RFC 2369: each <uri> of the field, white space removed. */
static bool unsubscribe_uris(const char *v, cJSON *arr)
{
    char *s = unfolded(v);
    bool ok = true;
    for (const char *p = s; p && *p && ok;) {
        const char *lt = strchr(p, '<');
        if (!lt)
            break;
        const char *gt = strchr(lt + 1, '>');
        if (!gt)
            break;
        GString *u = g_string_new(NULL);
        for (const char *q = lt + 1; q < gt; q++)
            if (!g_ascii_isspace(*q))
                g_string_append_c(u, *q);
        if (u->len && u->len <= MAILCLASS_URI_MAX && cJSON_GetArraySize(arr) < MAILCLASS_URIS_MAX) {
            cJSON *j = cJSON_CreateString(u->str);
            if (!j || !cJSON_AddItemToArray(arr, j)) {
                cJSON_Delete(j);
                ok = false;
            }
        }
        g_string_free(u, TRUE);
        p = gt + 1;
    }
    g_free(s);
    return ok;
}

/* RFC 2919: the list-id between angle brackets (or the value). */
static cJSON *list_id(const char *v)
{
    char *s = unfolded(v);
    if (!s)
        return cJSON_CreateNull();
    char *lt = strrchr(s, '<');
    char *gt = lt ? strchr(lt, '>') : NULL;
    cJSON *j;
    if (lt && gt && gt > lt + 1) {
        *gt = '\0';
        j = cJSON_CreateString(g_strstrip(lt + 1));
    } else {
        j = *s ? cJSON_CreateString(s) : cJSON_CreateNull();
    }
    g_free(s);
    return j;
}

cJSON *mailclass_list_json(const struct mailclass_headers *h)
{
    if (!h->list_id && !h->list_unsubscribe && !h->list_unsubscribe_post)
        return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    cJSON *uris = cJSON_CreateArray();
    char *post = unfolded(h->list_unsubscribe_post);
    bool ok = o && uris && add(o, "id", list_id(h->list_id));
    ok = ok && (!h->list_unsubscribe || unsubscribe_uris(h->list_unsubscribe, uris));
    if (ok) {
        ok = add(o, "unsubscribe", uris); /* owned by o, or deleted */
        uris = NULL;
    }
    ok = ok && add(o, "unsubscribe_post", post && *post ? cJSON_CreateString(post) : cJSON_CreateNull());
    g_free(post);
    cJSON_Delete(uris);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
