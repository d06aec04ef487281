/* metrics — see include/metrics.h. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"
#include "poller.h"
#include "sasl.h"

#define LABELS_MAX 2

struct series {
    char v[LABELS_MAX][METRICS_LABEL_MAX + 1];
    uint64_t n;
};

struct family {
    const char *name;
    const char *help;
    const char *labels[LABELS_MAX]; /* NULL-terminated when fewer */
    struct series *s;
    size_t count, cap;
};

enum fam {
    F_POLLS,
    F_POLL_ERRORS,
    F_FETCHED,
    F_BYTES,
    F_TOO_LARGE,
    F_DELETED,
    F_DELIVERIES,
    F_HTTP,
    F_COUNT_
};

static struct family fams[F_COUNT_] = {
    [F_POLLS] = {"pop3bridge_polls_total", "Polls finished, by account and result.",
                 {"account", "result"}, NULL, 0, 0},
    [F_POLL_ERRORS] = {"pop3bridge_poll_errors_total", "Failed polls, by account and error kind.",
                       {"account", "kind"}, NULL, 0, 0},
    [F_FETCHED] = {"pop3bridge_messages_fetched_total", "Messages stored by polls.",
                   {"account", NULL}, NULL, 0, 0},
    [F_BYTES] = {"pop3bridge_bytes_fetched_total", "Octets of messages stored by polls.",
                 {"account", NULL}, NULL, 0, 0},
    [F_TOO_LARGE] = {"pop3bridge_messages_too_large_total",
                     "Messages over max_message_size (header stored only).", {"account", NULL},
                     NULL, 0, 0},
    [F_DELETED] = {"pop3bridge_messages_deleted_total",
                   "Messages deleted from the server by polls (QUIT answered +OK).",
                   {"account", NULL}, NULL, 0, 0},
    [F_DELIVERIES] = {"pop3bridge_deliveries_total",
                      "Finished delivery attempts, by webhook and outcome.",
                      {"webhook", "outcome"}, NULL, 0, 0},
    [F_HTTP] = {"pop3bridge_http_requests_total", "API responses, by HTTP status.", {"code", NULL},
                NULL, 0, 0},
};

/* delivery latency histogram: upper bounds in seconds */
static const double bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600};
#define NBOUNDS (sizeof bounds / sizeof bounds[0])

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t hist[NBOUNDS + 1];
static uint64_t hist_count;
static double hist_sum;
static uint64_t dropped;

/* Add d to the series with these label values (lock held). */
static void add(enum fam f, const char *v0, const char *v1, uint64_t d)
{
    struct family *fm = &fams[f];
    const char *v[LABELS_MAX] = {v0 ? v0 : "", v1 ? v1 : ""};
    for (size_t i = 0; i < fm->count; i++) {
        struct series *s = &fm->s[i];
        if (strncmp(s->v[0], v[0], METRICS_LABEL_MAX) == 0 &&
            strncmp(s->v[1], v[1], METRICS_LABEL_MAX) == 0) {
            s->n += d;
            return;
        }
    }
    if (fm->count == fm->cap) {
        size_t cap = fm->cap ? fm->cap * 2 : 16;
        if (fm->count >= METRICS_SERIES_MAX) {
            dropped++;
            return;
        }
        struct series *ns = realloc(fm->s, cap * sizeof *ns);
        if (!ns) {
            dropped++;
            return;
        }
        fm->s = ns;
        fm->cap = cap;
    }
    struct series *s = &fm->s[fm->count++];
    memset(s, 0, sizeof *s);
    for (int i = 0; i < LABELS_MAX; i++) {
        size_t n = strlen(v[i]);
        if (n > METRICS_LABEL_MAX)
            n = METRICS_LABEL_MAX;
        memcpy(s->v[i], v[i], n);
        s->v[i][n] = '\0';
    }
    s->n = d;
}

static const char *kind_label(const struct err *e)
{
    switch (e->kind) {
    case ERR_CONN: return "connection";
    case ERR_TIMEOUT: return "timeout";
    case ERR_TLS: return "tls";
    case ERR_PROTO: return "protocol";
    case ERR_AUTH: return "auth";
    case ERR_LIMIT: return "limit";
    case ERR_USAGE: return "usage";
    case ERR_SERVER:
        switch (e->code) {
        case ERR_CODE_IN_USE: return "in_use";
        case ERR_CODE_LOGIN_DELAY: return "login_delay";
        case ERR_CODE_SYS_TEMP: return "sys_temp";
        case ERR_CODE_SYS_PERM: return "sys_perm";
        case ERR_CODE_AUTH: return "auth";
        default: return "server";
        }
    case ERR_NONE:
    case ERR_INTERNAL:
    default: return "internal";
    }
}

void metrics_on_poll(const char *account, const struct err *e, const struct poller_result *r)
{
    pthread_mutex_lock(&lock);
    add(F_POLLS, account, e ? "error" : "ok", 1);
    if (e)
        add(F_POLL_ERRORS, account, kind_label(e), 1);
    if (r) {
        add(F_FETCHED, account, NULL, r->fetched);
        add(F_BYTES, account, NULL, r->bytes);
        add(F_TOO_LARGE, account, NULL, r->too_large);
        add(F_DELETED, account, NULL, r->deleted);
    }
    pthread_mutex_unlock(&lock);
}

void metrics_on_delivery(void *ctx, const struct store_delivery *dl, const char *outcome,
                         int http_status, int64_t latency_ms)
{
    (void)ctx;
    (void)http_status;
    pthread_mutex_lock(&lock);
    add(F_DELIVERIES, dl ? dl->webhook : "", outcome ? outcome : "", 1);
    if (outcome && strcmp(outcome, "delivered") == 0) {
        double s = latency_ms > 0 ? (double)latency_ms / 1000.0 : 0.0;
        size_t i = 0;
        while (i < NBOUNDS && s > bounds[i])
            i++;
        hist[i]++;
        hist_count++;
        hist_sum += s;
    }
    pthread_mutex_unlock(&lock);
}

void metrics_on_http(int status)
{
    char code[8];
    snprintf(code, sizeof code, "%d", status >= 100 && status <= 999 ? status : 0);
    pthread_mutex_lock(&lock);
    add(F_HTTP, code, NULL, 1);
    pthread_mutex_unlock(&lock);
}

void metrics_reset(void)
{
    pthread_mutex_lock(&lock);
    for (int f = 0; f < F_COUNT_; f++) {
        free(fams[f].s);
        fams[f].s = NULL;
        fams[f].count = fams[f].cap = 0;
    }
    memset(hist, 0, sizeof hist);
    hist_count = 0;
    hist_sum = 0;
    dropped = 0;
    pthread_mutex_unlock(&lock);
}

/* ---- rendering ----------------------------------------------------------------------- */

struct out {
    char *p;
    size_t len, cap;
    bool failed, too_big;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n + 1 > METRICS_TEXT_MAX) {
        o->failed = o->too_big = true;
        return;
    }
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->failed = true;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        o->failed = true; /* our own formats are short: a bug */
        return;
    }
    put(o, buf, (size_t)n);
}

/* A label value, escaped per the exposition format. */
static void put_label(struct out *o, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            put(o, "\\\\", 2);
        else if (*p == '"')
            put(o, "\\\"", 2);
        else if (*p == '\n')
            put(o, "\\n", 2);
        else
            put(o, p, 1);
    }
}

static void put_family(struct out *o, const struct family *fm)
{
    putf(o, "# HELP %s %s\n# TYPE %s counter\n", fm->name, fm->help, fm->name);
    for (size_t i = 0; i < fm->count; i++) {
        put(o, fm->name, strlen(fm->name));
        put(o, "{", 1);
        for (int l = 0; l < LABELS_MAX && fm->labels[l]; l++) {
            if (l)
                put(o, ",", 1);
            putf(o, "%s=\"", fm->labels[l]);
            put_label(o, fm->s[i].v[l]);
            put(o, "\"", 1);
        }
        putf(o, "} %llu\n", (unsigned long long)fm->s[i].n);
    }
}

char *metrics_render(const struct metrics_gauges *g, size_t *len, struct err *e)
{
    struct out o = {0};
    pthread_mutex_lock(&lock);
    for (int f = 0; f < F_COUNT_; f++)
        put_family(&o, &fams[f]);
    const char *h = "pop3bridge_delivery_latency_seconds";
    putf(&o, "# HELP %s Time from a message being stored to its delivery answering 2xx.\n"
             "# TYPE %s histogram\n",
         h, h);
    uint64_t cum = 0;
    for (size_t i = 0; i < NBOUNDS; i++) {
        cum += hist[i];
        putf(&o, "%s_bucket{le=\"%g\"} %llu\n", h, bounds[i], (unsigned long long)cum);
    }
    cum += hist[NBOUNDS];
    putf(&o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.3f\n%s_count %llu\n", h,
         (unsigned long long)cum, h, hist_sum, h, (unsigned long long)hist_count);
    putf(&o, "# HELP pop3bridge_metrics_series_dropped_total Counter updates lost because a "
             "family reached its series limit.\n"
             "# TYPE pop3bridge_metrics_series_dropped_total counter\n"
             "pop3bridge_metrics_series_dropped_total %llu\n",
         (unsigned long long)dropped);
    pthread_mutex_unlock(&lock);

    if (g && g->queue) {
        putf(&o, "# HELP pop3bridge_delivery_queue Deliveries by status.\n"
                 "# TYPE pop3bridge_delivery_queue gauge\n"
                 "pop3bridge_delivery_queue{status=\"pending\"} %lld\n"
                 "pop3bridge_delivery_queue{status=\"failed\"} %lld\n"
                 "pop3bridge_delivery_queue{status=\"dead\"} %lld\n"
                 "pop3bridge_delivery_queue{status=\"delivered\"} %lld\n",
             (long long)g->queue->pending, (long long)g->queue->failed,
             (long long)g->queue->dead, (long long)g->queue->delivered);
    }
    putf(&o, "# HELP pop3bridge_api_sessions_open Explicit POP3 sessions open.\n"
             "# TYPE pop3bridge_api_sessions_open gauge\n"
             "pop3bridge_api_sessions_open %lld\n",
         (long long)(g ? g->sessions_open : 0));
    struct net_tls_cache_stats ts = net_tls_cache_stats();
    putf(&o, "# HELP pop3bridge_tls_sessions_offered_total POP3 TLS handshakes that offered a "
             "session kept from an earlier connection of the account.\n"
             "# TYPE pop3bridge_tls_sessions_offered_total counter\n"
             "pop3bridge_tls_sessions_offered_total %lu\n"
             "# HELP pop3bridge_tls_sessions_resumed_total POP3 TLS handshakes abbreviated by "
             "resuming a kept session.\n"
             "# TYPE pop3bridge_tls_sessions_resumed_total counter\n"
             "pop3bridge_tls_sessions_resumed_total %lu\n",
         ts.offered, ts.resumed);
    struct sasl_scram_stats ss = sasl_scram_cache_stats();
    putf(&o, "# HELP pop3bridge_scram_salted_password_reused_total SCRAM logins that reused a "
             "remembered salted password instead of computing it.\n"
             "# TYPE pop3bridge_scram_salted_password_reused_total counter\n"
             "pop3bridge_scram_salted_password_reused_total %lu\n",
         ss.hits);
    if (o.failed) {
        free(o.p);
        if (o.too_big)
            err_set(e, ERR_LIMIT, "metrics text over METRICS_TEXT_MAX (%u bytes)",
                    METRICS_TEXT_MAX);
        else
            err_set(e, ERR_INTERNAL, "out of memory rendering metrics");
        return NULL;
    }
    *len = o.len;
    return o.p;
}
