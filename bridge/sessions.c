/* sessions — see include/sessions.h. */
#include "sessions.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "codec.h"
#include "log.h"

struct session {
    struct session *next;
    char id[SESSIONS_ID_LEN + 1];
    char account[SESSIONS_NAME_MAX + 1];
    struct pop3 *p;
    struct pop3_listing *l;
    uint8_t *marked;          /* count + 1 entries, by message number */
    struct cfgref *ref;       /* keeps the strings of the POP3 options alive */
    int64_t created_at;       /* Unix ms */
    int64_t last_used;        /* monotonic ms */
    int64_t idle_ms;
    int64_t deadline;         /* monotonic ms: the whole session's end; 0: none */
    bool opening;             /* slot reserved, still connecting: not findable */
    bool busy;                /* a request holds it */
    bool broken;              /* only abort remains */
};

struct sessions {
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* a session was released, or stop */
    struct session *head;
    bool stop;
    pthread_t reaper;
    char origin[SESSIONS_ORIGIN_HEX + 1]; /* "" or this instance's tag */
};

/* When x ends unless used again (monotonic ms): its idle time, or its
 * whole-session deadline if that comes first. */
static int64_t expiry(const struct session *x)
{
    int64_t idle_end = x->last_used + x->idle_ms;
    return x->deadline && x->deadline < idle_end ? x->deadline : idle_end;
}

static void session_destroy(struct session *x, bool quit_done)
{
    if (!x)
        return;
    if (!quit_done)
        pop3_abort(&x->p);
    pop3_listing_free(&x->l);
    free(x->marked);
    cfgref_put(x->ref);
    OPENSSL_cleanse(x->id, sizeof x->id);
    free(x);
}

/* Unlink x (lock held). */
static void unlink_locked(struct sessions *s, struct session *x)
{
    for (struct session **pp = &s->head; *pp; pp = &(*pp)->next) {
        if (*pp == x) {
            *pp = x->next;
            x->next = NULL;
            return;
        }
    }
}

static void *reaper(void *arg)
{
    struct sessions *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        int64_t now = clock_mono_ms(), wait = SESSIONS_REAP_MAX_MS;
        struct session *expired = NULL;
        for (struct session **pp = &s->head; *pp;) {
            struct session *x = *pp;
            int64_t left = expiry(x) - now;
            if (!x->opening && !x->busy && left <= 0) {
                *pp = x->next;
                x->next = expired;
                expired = x;
                continue;
            }
            if (!x->opening && !x->busy && left < wait)
                wait = left;
            pp = &x->next;
        }
        if (expired) {
            pthread_mutex_unlock(&s->mu);
            while (expired) {
                struct session *x = expired;
                expired = x->next;
                log_info("session_expired", "session=%.*s account=%s reason=%s marked_kept=yes",
                         SESSIONS_LOG_ID, x->id, x->account,
                         x->deadline && x->deadline <= now ? "session_timeout" : "idle");
                session_destroy(x, false); /* no QUIT: nothing is deleted */
            }
            pthread_mutex_lock(&s->mu);
            continue;
        }
        struct timespec ts;
        clock_deadline(&ts, wait < 10 ? 10 : wait);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct sessions *sessions_new(struct err *e)
{
    struct sessions *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, ERR_INTERNAL, "out of memory for the session table");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    int rc = clock_cond_init(&s->cv);
    if (rc != 0) {
        err_set(e, ERR_INTERNAL, "cannot make a condition variable: %s", strerror(rc));
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    rc = pthread_create(&s->reaper, NULL, reaper, s);
    if (rc != 0) {
        err_set(e, ERR_INTERNAL, "cannot start the session reaper: %s", strerror(rc));
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

void sessions_free(struct sessions **sp)
{
    if (!sp || !*sp)
        return;
    struct sessions *s = *sp;
    *sp = NULL;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->reaper, NULL);
    while (s->head) {
        struct session *x = s->head;
        s->head = x->next;
        log_info("session_aborted", "session=%.*s account=%s reason=shutdown", SESSIONS_LOG_ID,
                 x->id, x->account);
        session_destroy(x, false);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static void fill_info(const struct session *x, struct session_info *out)
{
    memset(out, 0, sizeof *out);
    memcpy(out->id, x->id, sizeof out->id);
    memcpy(out->account, x->account, sizeof out->account);
    if (x->l) {
        out->count = x->l->count;
        out->octets = x->l->octets;
        for (uint32_t n = 1; n <= x->l->count; n++) {
            if (x->marked[n]) {
                out->marked++;
                out->marked_octets += x->l->entries[n - 1].size;
            }
        }
    }
    out->created_at = x->created_at;
    out->expires_at = clock_wall_ms() + (expiry(x) - clock_mono_ms());
}

int sessions_open(struct sessions *s, const char *account, const struct pop3_opts *o,
                  struct cfgref *hold, const struct sessions_limits *lim,
                  struct session_info *out, struct err *e)
{
    if (strlen(account) > SESSIONS_NAME_MAX)
        return err_set(e, ERR_USAGE, "account name longer than %d bytes", SESSIONS_NAME_MAX);
    struct session *x = calloc(1, sizeof *x);
    if (!x)
        return err_set(e, ERR_INTERNAL, "out of memory for a session");
    unsigned char rnd[SESSIONS_ID_BYTES];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        free(x);
        return err_set(e, ERR_INTERNAL, "no random bytes for a session id");
    }
    memcpy(x->id, "s_", 2);
    codec_hex_encode(rnd, sizeof rnd, x->id + 2);
    if (s->origin[0])
        memcpy(x->id + 2, s->origin, SESSIONS_ORIGIN_HEX); /* set before any open: no lock */
    OPENSSL_cleanse(rnd, sizeof rnd);
    snprintf(x->account, sizeof x->account, "%s", account);
    x->opening = true;
    x->idle_ms = lim->idle_ms > 0 ? lim->idle_ms : SESSIONS_IDLE_DEFAULT_MS;
    if (o->session_timeout_ms > 0)
        x->deadline = clock_mono_ms() + o->session_timeout_ms;

    /* reserve a slot under the limits */
    pthread_mutex_lock(&s->mu);
    int total = 0, mine = 0;
    for (struct session *y = s->head; y; y = y->next) {
        total++;
        if (strcmp(y->account, account) == 0)
            mine++;
    }
    if (total >= lim->total || mine >= lim->per_account) {
        pthread_mutex_unlock(&s->mu);
        free(x);
        return SESSIONS_FULL;
    }
    x->next = s->head;
    s->head = x;
    pthread_mutex_unlock(&s->mu);

    x->ref = cfgref_hold(hold);
    x->p = pop3_open(o, e);
    if (x->p && pop3_listing(x->p, &x->l, e) == 0) {
        x->marked = calloc((size_t)x->l->count + 1, 1);
        if (!x->marked)
            err_set(e, ERR_INTERNAL, "out of memory for %u marks", x->l->count);
    }
    if (!x->marked) {
        pthread_mutex_lock(&s->mu);
        unlink_locked(s, x);
        pthread_mutex_unlock(&s->mu);
        session_destroy(x, false);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    x->created_at = clock_wall_ms();
    x->last_used = clock_mono_ms();
    x->opening = false;
    fill_info(x, out);
    pthread_cond_broadcast(&s->cv); /* the reaper recomputes its wait */
    pthread_mutex_unlock(&s->mu);
    log_info("session_open", "session=%.*s account=%s messages=%u", SESSIONS_LOG_ID, out->id,
             out->account, out->count);
    return 0;
}

static struct session *find_locked(struct sessions *s, const char *id)
{
    if (strlen(id) != SESSIONS_ID_LEN)
        return NULL;
    struct session *found = NULL;
    for (struct session *x = s->head; x; x = x->next)
        if (!x->opening && CRYPTO_memcmp(x->id, id, SESSIONS_ID_LEN) == 0)
            found = x;
    return found;
}

struct session *sessions_acquire(struct sessions *s, const char *id, int64_t wait_ms, int *why)
{
    struct timespec until;
    clock_deadline(&until, wait_ms);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        struct session *x = find_locked(s, id);
        if (!x) {
            *why = SESSIONS_NOTFOUND;
            break;
        }
        if (!x->busy) {
            x->busy = true;
            pthread_mutex_unlock(&s->mu);
            return x;
        }
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT) {
            *why = find_locked(s, id) ? SESSIONS_BUSY : SESSIONS_NOTFOUND;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void sessions_release(struct sessions *s, struct session *x)
{
    if (!x)
        return;
    pthread_mutex_lock(&s->mu);
    x->busy = false;
    x->last_used = clock_mono_ms();
    if (x->broken)
        unlink_locked(s, x);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (x->broken) {
        log_info("session_aborted", "session=%.*s account=%s reason=broken", SESSIONS_LOG_ID,
                 x->id, x->account);
        session_destroy(x, false);
    }
}

void sessions_info(const struct session *x, struct session_info *out) { fill_info(x, out); }

const struct pop3_listing *sessions_listing(const struct session *x) { return x->l; }

bool sessions_is_marked(const struct session *x, uint32_t number)
{
    return number >= 1 && number <= x->l->count && x->marked[number];
}

static int check_number(const struct session *x, uint32_t number)
{
    if (number < 1 || number > x->l->count)
        return SESSIONS_NOMSG;
    if (x->marked[number])
        return SESSIONS_MARKED;
    return 0;
}

/* After a failed command: anything but a -ERR reply leaves the session broken. */
static int failed(struct session *x, const struct err *e)
{
    if (e->kind != ERR_SERVER)
        x->broken = true;
    return -1;
}

int sessions_retr(struct session *x, uint32_t number, const struct pop3_sink *sink,
                  struct err *e)
{
    int c = check_number(x, number);
    if (c)
        return c;
    return pop3_retr(x->p, &number, 1, sink, e) < 0 ? failed(x, e) : 0;
}

int sessions_top(struct session *x, uint32_t number, unsigned lines,
                 const struct pop3_sink *sink, struct err *e)
{
    int c = check_number(x, number);
    if (c)
        return c;
    return pop3_top(x->p, number, lines, sink, e) < 0 ? failed(x, e) : 0;
}

int sessions_dele(struct session *x, uint32_t number, struct err *e)
{
    int c = check_number(x, number);
    if (c)
        return c;
    if (pop3_dele(x->p, &number, 1, e) < 0)
        return failed(x, e);
    x->marked[number] = 1;
    return 0;
}

int sessions_rset(struct session *x, struct err *e)
{
    if (pop3_rset(x->p, e) < 0)
        return failed(x, e);
    memset(x->marked, 0, (size_t)x->l->count + 1);
    return 0;
}

int sessions_noop(struct session *x, struct err *e)
{
    return pop3_noop(x->p, e) < 0 ? failed(x, e) : 0;
}

void sessions_uidls_free(char **uidls, size_t n)
{
    for (size_t i = 0; uidls && i < n; i++)
        free(uidls[i]);
    free(uidls);
}

int sessions_quit(struct sessions *s, struct session *x, uint32_t *deleted, char ***uidls,
                  size_t *n_uidls, struct err *e)
{
    pthread_mutex_lock(&s->mu);
    unlink_locked(s, x);
    pthread_cond_broadcast(&s->cv); /* waiters find it gone */
    pthread_mutex_unlock(&s->mu);

    uint32_t n = 0;
    for (uint32_t i = 1; i <= x->l->count; i++)
        n += x->marked[i] ? 1 : 0;
    char **v = NULL;
    size_t nv = 0;
    if (uidls && n && x->l->has_uidl) {
        v = calloc(n, sizeof *v);
        for (uint32_t i = 1; v && i <= x->l->count; i++)
            if (x->marked[i] && (v[nv] = strdup(x->l->entries[i - 1].uidl)) != NULL)
                nv++;
    }
    int rc = pop3_quit(&x->p, e);
    log_info("session_quit", "session=%.*s account=%s marked=%u committed=%s", SESSIONS_LOG_ID,
             x->id, x->account, n, rc == 0 ? "yes" : "no");
    session_destroy(x, true);
    if (rc < 0) {
        sessions_uidls_free(v, nv);
        return -1;
    }
    *deleted = n;
    if (uidls) {
        *uidls = v;
        *n_uidls = nv;
    } else {
        sessions_uidls_free(v, nv);
    }
    return 0;
}

size_t sessions_count(struct sessions *s)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (struct session *x = s->head; x; x = x->next)
        n++;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sessions_origin_tag(const char *instance_id, char out[SESSIONS_ORIGIN_HEX + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(instance_id, strlen(instance_id), md, &n, EVP_sha256(), NULL) != 1 ||
        n < SESSIONS_ORIGIN_HEX / 2)
        memset(md, 0, sizeof md);
    codec_hex_encode(md, SESSIONS_ORIGIN_HEX / 2, out);
    out[SESSIONS_ORIGIN_HEX] = '\0';
}

void sessions_set_origin(struct sessions *s, const char *instance_id)
{
    sessions_origin_tag(instance_id, s->origin);
}

bool sessions_foreign(const struct sessions *s, const char *id,
                      char tag[SESSIONS_ORIGIN_HEX + 1])
{
    if (!s->origin[0] || !id || strlen(id) != SESSIONS_ID_LEN || strncmp(id, "s_", 2) != 0 ||
        strspn(id + 2, "0123456789abcdef") != 2 * SESSIONS_ID_BYTES)
        return false;
    memcpy(tag, id + 2, SESSIONS_ORIGIN_HEX);
    tag[SESSIONS_ORIGIN_HEX] = '\0';
    return strcmp(tag, s->origin) != 0;
}
