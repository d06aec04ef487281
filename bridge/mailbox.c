/* mailbox — see include/mailbox.h. */
#include "mailbox.h"

#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "message.h"
#include "pop3cfg.h"

/* ---- one-shot operations ---------------------------------------------------------------- */

void mailbox_opts(const struct config_account *a, int64_t limit_ms, struct pop3_opts *o)
{
    pop3cfg_opts(a, o);
    if (limit_ms > 0 && (o->session_timeout_ms <= 0 || o->session_timeout_ms > limit_ms))
        o->session_timeout_ms = limit_ms;
}

/* QUIT after a read-only operation: its outcome changes nothing. */
static void quit_quietly(struct pop3 **p)
{
    struct err e;
    if (*p && pop3_quit(p, &e) < 0)
        log_debug("mailbox_quit_failed", "error=%s", log_q(e.msg));
}

static int failed(struct pop3 **p, const char *what, const char **step)
{
    pop3_abort(p);
    *step = what;
    return -1;
}

int mailbox_info(const struct pop3_opts *o, struct mailbox_info *out, const char **step,
                 struct err *e)
{
    memset(out, 0, sizeof *out);
    struct pop3 *p = pop3_open(o, e);
    if (!p) {
        *step = "POP3 login";
        return -1;
    }
    if (pop3_stat(p, &out->count, &out->octets, e) < 0)
        return failed(&p, "STAT", step);
    const struct pop3_capa *c = pop3_capa(p);
    size_t n = c ? c->n_lines : 0;
    out->capa = calloc(n + 1, sizeof *out->capa);
    for (size_t i = 0; out->capa && i < n; i++) {
        if (!(out->capa[i] = strdup(c->lines[i])))
            break;
        out->n_capa++;
    }
    if (!out->capa || out->n_capa < n) {
        mailbox_info_free(out);
        err_set(e, ERR_INTERNAL, "out of memory for %zu CAPA lines", n);
        return failed(&p, "STAT", step);
    }
    quit_quietly(&p);
    return 0;
}

void mailbox_info_free(struct mailbox_info *i)
{
    for (size_t k = 0; i->capa && k < i->n_capa; k++)
        free(i->capa[k]);
    free(i->capa);
    i->capa = NULL;
    i->n_capa = 0;
}

int mailbox_listing(const struct pop3_opts *o, struct pop3_listing **out, const char **step,
                    struct err *e)
{
    *out = NULL;
    struct pop3 *p = pop3_open(o, e);
    if (!p) {
        *step = "POP3 login";
        return -1;
    }
    if (pop3_listing(p, out, e) < 0)
        return failed(&p, "listing", step);
    quit_quietly(&p);
    return 0;
}

void mailbox_listing_free(struct pop3_listing **l) { pop3_listing_free(l); }

/* ---- summaries ------------------------------------------------------------------------- */

/* Copy a JSON string (or nothing) into a field, cut at a UTF-8 boundary. */
static void field_copy(char *dst, const cJSON *v)
{
    dst[0] = '\0';
    if (!cJSON_IsString(v) || !v->valuestring)
        return;
    size_t n = strlen(v->valuestring);
    if (n > MAILBOX_FIELD_MAX) {
        n = MAILBOX_FIELD_MAX;
        while (n > 0 && ((unsigned char)v->valuestring[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, v->valuestring, n);
    dst[n] = '\0';
}

int mailbox_summary_parse(const void *raw, size_t len, struct mailbox_summary *out,
                          struct err *e)
{
    memset(out, 0, sizeof *out);
    cJSON *t = message_top_json(raw, len, NULL, e);
    if (!t)
        return -1;
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(t, "from");
    field_copy(out->from_name, cJSON_GetObjectItemCaseSensitive(from, "name"));
    field_copy(out->from_address, cJSON_GetObjectItemCaseSensitive(from, "address"));
    field_copy(out->subject, cJSON_GetObjectItemCaseSensitive(t, "subject"));
    field_copy(out->date, cJSON_GetObjectItemCaseSensitive(t, "date"));
    out->known = true;
    cJSON_Delete(t);
    return 0;
}

struct mailbox_cache {
    pthread_mutex_t mu;
    GHashTable *map; /* "account\nuidl" -> struct mailbox_summary */
    GQueue order;    /* the keys, oldest first */
    size_t max;
};

struct mailbox_cache *mailbox_cache_new(size_t max)
{
    if (max < 1)
        return NULL;
    struct mailbox_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->map = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_queue_init(&c->order);
    c->max = max;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void mailbox_cache_free(struct mailbox_cache **cp)
{
    if (!cp || !*cp)
        return;
    struct mailbox_cache *c = *cp;
    *cp = NULL;
    g_queue_clear(&c->order); /* the keys belong to the table */
    g_hash_table_destroy(c->map);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static char *cache_key(const char *account, const char *uidl)
{
    return g_strdup_printf("%s\n%s", account, uidl);
}

bool mailbox_cache_get(struct mailbox_cache *c, const char *account, const char *uidl,
                       struct mailbox_summary *out)
{
    if (!c)
        return false;
    char *k = cache_key(account, uidl);
    pthread_mutex_lock(&c->mu);
    const struct mailbox_summary *s = g_hash_table_lookup(c->map, k);
    if (s)
        *out = *s;
    pthread_mutex_unlock(&c->mu);
    g_free(k);
    return s != NULL;
}

void mailbox_cache_put(struct mailbox_cache *c, const char *account, const char *uidl,
                       const struct mailbox_summary *s)
{
    if (!c)
        return;
    char *k = cache_key(account, uidl);
    struct mailbox_summary *v = g_memdup2(s, sizeof *s);
    pthread_mutex_lock(&c->mu);
    if (g_hash_table_contains(c->map, k)) {
        g_hash_table_insert(c->map, k, v); /* keeps the queued key, frees k */
    } else {
        while (g_hash_table_size(c->map) >= c->max && !g_queue_is_empty(&c->order))
            g_hash_table_remove(c->map, g_queue_pop_head(&c->order));
        g_hash_table_insert(c->map, k, v);
        g_queue_push_tail(&c->order, k);
    }
    pthread_mutex_unlock(&c->mu);
}

size_t mailbox_cache_count(struct mailbox_cache *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->mu);
    size_t n = g_hash_table_size(c->map);
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* A TOP reply kept up to MAILBOX_HEADER_MAX bytes; the rest is skipped. */
struct hdr_buf {
    char *p;
    size_t len;
};

static int hdr_data(void *ctx, const char *buf, size_t len, struct err *e)
{
    struct hdr_buf *b = ctx;
    size_t room = MAILBOX_HEADER_MAX - b->len;
    if (len > room)
        len = room;
    if (len) {
        if (!b->p && !(b->p = malloc(MAILBOX_HEADER_MAX)))
            return err_set(e, ERR_INTERNAL, "out of memory for a message header");
        memcpy(b->p + b->len, buf, len);
        b->len += len;
    }
    return 0;
}

int mailbox_listing_summaries(const struct pop3_opts *o, const char *account,
                              struct mailbox_cache *cache, mailbox_summary_fn lookup,
                              void *ctx, struct pop3_listing **out,
                              struct mailbox_summary **sums, const char **step,
                              struct err *e)
{
    *out = NULL;
    *sums = NULL;
    /* TOPs get at most half of the session's time: the listing must still be answered */
    int64_t top_until = o->session_timeout_ms > 0 ? clock_mono_ms() + o->session_timeout_ms / 2 : 0;
    struct pop3 *p = pop3_open(o, e);
    if (!p) {
        *step = "POP3 login";
        return -1;
    }
    if (pop3_listing(p, out, e) < 0)
        return failed(&p, "listing", step);
    struct pop3_listing *l = *out;
    struct mailbox_summary *s = calloc((size_t)l->count + 1, sizeof *s);
    if (!s) {
        err_set(e, ERR_INTERNAL, "out of memory for %u summaries", l->count);
        mailbox_listing_free(out);
        return failed(&p, "listing", step);
    }
    unsigned tops = 0;
    struct hdr_buf b = {0};
    for (uint32_t i = 0; l->has_uidl && i < l->count; i++) {
        const struct pop3_entry *en = &l->entries[i];
        if (!en->number || mailbox_cache_get(cache, account, en->uidl, &s[i]))
            continue;
        int r = lookup ? lookup(ctx, en->uidl, &s[i], e) : 1;
        if (r < 0) {
            free(s);
            free(b.p);
            mailbox_listing_free(out);
            return failed(&p, "listing", step);
        }
        if (r == 1) {
            if (!p || tops >= MAILBOX_TOP_PER_LISTING || (top_until && clock_mono_ms() >= top_until))
                continue;
            tops++;
            b.len = 0;
            struct pop3_sink k = {.data = hdr_data, .ctx = &b};
            struct err te;
            if (pop3_top(p, en->number, 0, &k, &te) < 0) {
                log_debug("mailbox_top_failed", "uidl=%s error=%s", log_q(en->uidl),
                          log_q(te.msg));
                if (te.kind != ERR_SERVER)
                    pop3_abort(&p); /* the session is not usable: no more TOPs */
                continue;
            }
            struct err pe;
            if (mailbox_summary_parse(b.p, b.len, &s[i], &pe) < 0)
                continue;
        }
        mailbox_cache_put(cache, account, en->uidl, &s[i]);
    }
    free(b.p);
    quit_quietly(&p);
    *sums = s;
    return 0;
}

/* Open a session and find the number of the message with this UIDL: 0 with
 * *pp open and *num set; MAILBOX_NOMSG (session closed); -1. */
static int open_at(const struct pop3_opts *o, const char *uidl, struct pop3 **pp, uint32_t *num,
                   const char **step, struct err *e)
{
    struct pop3_listing *l = NULL;
    *pp = pop3_open(o, e);
    if (!*pp) {
        *step = "POP3 login";
        return -1;
    }
    if (pop3_listing(*pp, &l, e) < 0)
        return failed(pp, "listing", step);
    int rc = MAILBOX_NOMSG;
    for (uint32_t i = 0; l->has_uidl && i < l->count; i++) {
        if (l->entries[i].number && strcmp(l->entries[i].uidl, uidl) == 0) {
            *num = l->entries[i].number;
            rc = 0;
            break;
        }
    }
    pop3_listing_free(&l);
    if (rc == MAILBOX_NOMSG)
        quit_quietly(pp);
    return rc;
}

int mailbox_retr(const struct pop3_opts *o, const char *uidl, const struct pop3_sink *sink,
                 const char **step, struct err *e)
{
    struct pop3 *p;
    uint32_t num;
    int rc = open_at(o, uidl, &p, &num, step, e);
    if (rc != 0)
        return rc;
    if (pop3_retr(p, &num, 1, sink, e) < 0)
        return failed(&p, "RETR", step);
    quit_quietly(&p);
    return 0;
}

int mailbox_top(const struct pop3_opts *o, const char *uidl, unsigned lines,
                const struct pop3_sink *sink, const char **step, struct err *e)
{
    struct pop3 *p;
    uint32_t num;
    int rc = open_at(o, uidl, &p, &num, step, e);
    if (rc != 0)
        return rc;
    if (pop3_top(p, num, lines, sink, e) < 0)
        return failed(&p, "TOP", step);
    quit_quietly(&p);
    return 0;
}

int mailbox_dele(const struct pop3_opts *o, const char *uidl, const char **step, struct err *e)
{
    struct pop3 *p;
    uint32_t num;
    int rc = open_at(o, uidl, &p, &num, step, e);
    if (rc != 0)
        return rc;
    if (pop3_dele(p, &num, 1, e) < 0)
        return failed(&p, "DELE", step); /* aborted: nothing deleted */
    if (pop3_quit(&p, e) < 0) {
        *step = "QUIT (nothing may be assumed deleted)";
        return -1;
    }
    return 0;
}

/* ---- the worker pool ---------------------------------------------------------------------- */

struct mailbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* a job was queued, or stop */
    pthread_cond_t idle;       /* a job ended */
    struct mailbox_job *head, *tail;
    size_t queued, queue_max, running;
    int64_t queue_wait_ms;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
};

static void *worker(void *arg)
{
    struct mailbox *m = arg;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->head && !m->stopping)
            pthread_cond_wait(&m->cv, &m->mu);
        struct mailbox_job *j = m->head;
        if (!j)
            break; /* stopping, nothing queued */
        m->head = j->next;
        if (!m->head)
            m->tail = NULL;
        m->queued--;
        bool cancelled = m->stopping || clock_mono_ms() - j->queued_at >= m->queue_wait_ms;
        m->running++;
        pthread_mutex_unlock(&m->mu);
        j->run(j, cancelled); /* may free j */
        pthread_mutex_lock(&m->mu);
        m->running--;
        pthread_cond_broadcast(&m->idle);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static void join_all(struct mailbox *m)
{
    for (unsigned i = 0; i < m->nthreads; i++)
        pthread_join(m->threads[i], NULL);
    m->nthreads = 0;
}

struct mailbox *mailbox_new(unsigned workers, size_t queue_max, int64_t queue_wait_ms,
                            struct err *e)
{
    if (workers < 1 || workers > MAILBOX_WORKERS_MAX || queue_max < 1) {
        err_set(e, ERR_USAGE, "mailbox workers must be 1..%d and the queue at least 1",
                MAILBOX_WORKERS_MAX);
        return NULL;
    }
    struct mailbox *m = calloc(1, sizeof *m);
    pthread_t *t = calloc(workers, sizeof *t);
    if (!m || !t) {
        free(m);
        free(t);
        err_set(e, ERR_INTERNAL, "out of memory for the mailbox workers");
        return NULL;
    }
    m->threads = t;
    m->queue_max = queue_max;
    m->queue_wait_ms = queue_wait_ms;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    pthread_cond_init(&m->idle, NULL);
    for (unsigned i = 0; i < workers; i++) {
        int rc = pthread_create(&m->threads[i], NULL, worker, m);
        if (rc != 0) {
            err_set(e, ERR_INTERNAL, "cannot start mailbox worker %u of %u: %s", i + 1, workers,
                    strerror(rc));
            mailbox_free(&m);
            return NULL;
        }
        m->nthreads++;
    }
    return m;
}

int mailbox_submit(struct mailbox *m, struct mailbox_job *j)
{
    pthread_mutex_lock(&m->mu);
    if (m->stopping || m->queued >= m->queue_max) {
        pthread_mutex_unlock(&m->mu);
        return MAILBOX_BUSY;
    }
    j->next = NULL;
    j->queued_at = clock_mono_ms();
    if (m->tail)
        m->tail->next = j;
    else
        m->head = j;
    m->tail = j;
    m->queued++;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

void mailbox_stop(struct mailbox *m)
{
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_broadcast(&m->cv);
    while (m->head || m->running)
        pthread_cond_wait(&m->idle, &m->mu);
    pthread_mutex_unlock(&m->mu);
}

void mailbox_free(struct mailbox **mp)
{
    if (!mp || !*mp)
        return;
    struct mailbox *m = *mp;
    *mp = NULL;
    if (m->nthreads)
        mailbox_stop(m);
    join_all(m);
    pthread_cond_destroy(&m->idle);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m->threads);
    free(m);
}

void mailbox_load(struct mailbox *m, size_t *queued, size_t *running)
{
    pthread_mutex_lock(&m->mu);
    *queued = m->queued;
    *running = m->running;
    pthread_mutex_unlock(&m->mu);
}
