/* pollhist — see include/pollhist.h. */
#include "pollhist.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

struct slot {
    char name[POLLHIST_NAME_MAX + 1];
    uint64_t touched;                       /* h->clock at the last update */
    struct pollhist_session session;
    uint64_t session_gen;                   /* +1 when the session's details change */
    uint64_t shared_gen;                    /* session_gen last saved in full; 0: none */
    int64_t shared_at;                      /* the session time then saved (or moved to) */
    struct pollhist_poll polls[POLLHIST_POLLS]; /* ring */
    size_t next, count;
};

struct pollhist {
    pthread_mutex_t mu;
    struct slot **slots; /* max of them, allocated when first used */
    uint32_t *hashes;    /* name_hash() of each slot's name, side by side: a
                            look-up compares these and reads only the slot
                            that matches, not every account's (1,000 cache
                            misses and name comparisons a poll, twice) */
    size_t max, used;
    uint64_t clock;
};

struct pollhist *pollhist_new(size_t max_accounts)
{
    if (max_accounts < 1)
        return NULL;
    struct pollhist *h = calloc(1, sizeof *h);
    if (!h || !(h->slots = calloc(max_accounts, sizeof *h->slots)) ||
        !(h->hashes = calloc(max_accounts, sizeof *h->hashes))) {
        if (h)
            free(h->slots);
        free(h);
        return NULL;
    }
    h->max = max_accounts;
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

void pollhist_free(struct pollhist **hp)
{
    if (!hp || !*hp)
        return;
    struct pollhist *h = *hp;
    *hp = NULL;
    for (size_t i = 0; i < h->used; i++)
        free(h->slots[i]);
    free(h->slots);
    free(h->hashes);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static struct pollhist *the_default;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_make(void) { the_default = pollhist_new(POLLHIST_ACCOUNTS_MAX); }

struct pollhist *pollhist_default(void)
{
    pthread_once(&default_once, default_make);
    return the_default;
}

/* The account's slot, made (or taken over from the least recently updated
 * account) when `make`; NULL.  Called with h->mu held. */
/* FNV-1a over the name */
static uint32_t name_hash(const char *name)
{
    uint32_t x = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        x = (x ^ *p) * 16777619u;
    return x;
}

static struct slot *find(struct pollhist *h, const char *account, bool make)
{
    if (!account || strlen(account) > POLLHIST_NAME_MAX)
        return NULL;
    uint32_t hash = name_hash(account);
    for (size_t i = 0; i < h->used; i++)
        if (h->hashes[i] == hash && strcmp(h->slots[i]->name, account) == 0)
            return h->slots[i];
    if (!make)
        return NULL;
    struct slot *s;
    size_t at = 0;
    if (h->used < h->max) {
        if (!(s = malloc(sizeof *s)))
            return NULL;
        at = h->used;
        h->slots[h->used++] = s;
    } else {
        for (size_t i = 1; i < h->used; i++)
            if (h->slots[i]->touched < h->slots[at]->touched)
                at = i;
        s = h->slots[at];
    }
    h->hashes[at] = hash;
    memset(s, 0, sizeof *s);
    memcpy(s->name, account, strlen(account) + 1);
    return s;
}

/* Whether two sessions show the same details: all but their time and
 * whether TLS was resumed (neither is a detail of the server's). */
static bool same_details(const struct pollhist_session *a, const struct pollhist_session *b)
{
    const struct net_tls_info *x = &a->tls_info, *y = &b->tls_info;
    if (a->tls != b->tls || a->n_capa != b->n_capa)
        return false;
    for (size_t i = 0; i < a->n_capa; i++)
        if (strcmp(a->capa[i], b->capa[i]) != 0)
            return false;
    return !a->tls ||
           (strcmp(x->version, y->version) == 0 && strcmp(x->cipher, y->cipher) == 0 &&
            x->verified == y->verified && strcmp(x->verify, y->verify) == 0 &&
            strcmp(x->peer, y->peer) == 0 && strcmp(x->issuer, y->issuer) == 0 &&
            x->not_after == y->not_after && strcmp(x->fingerprint, y->fingerprint) == 0);
}

void pollhist_session(struct pollhist *h, const char *account, int64_t at,
                      const char *const *capa, size_t n, const struct net_tls_info *tls)
{
    if (!h)
        return;
    struct pollhist_session ss = {.at = at}; /* ~4.6 KiB on the poller's stack */
    if (tls) {
        ss.tls = true;
        ss.tls_info = *tls;
    }
    for (size_t i = 0; capa && i < n && ss.n_capa < POLLHIST_CAPA_MAX; i++) {
        if (!capa[i])
            continue;
        err_sanitize(ss.capa[ss.n_capa], sizeof ss.capa[0], capa[i], strlen(capa[i]));
        ss.n_capa++;
    }
    pthread_mutex_lock(&h->mu);
    struct slot *s = find(h, account, true);
    if (s) {
        if (s->session.at == 0 || !same_details(&s->session, &ss))
            s->session_gen++;
        s->session = ss;
        s->touched = ++h->clock;
    }
    pthread_mutex_unlock(&h->mu);
}

void pollhist_poll(struct pollhist *h, const char *account, const struct pollhist_poll *p)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    struct slot *s = find(h, account, true);
    if (s) {
        struct pollhist_poll *d = &s->polls[s->next];
        *d = *p;
        d->error[POLLHIST_ERROR_MAX] = '\0';
        s->next = (s->next + 1) % POLLHIST_POLLS;
        if (s->count < POLLHIST_POLLS)
            s->count++;
        s->touched = ++h->clock;
    }
    pthread_mutex_unlock(&h->mu);
}

enum pollhist_share pollhist_session_share(struct pollhist *h, const char *account,
                                           int64_t since, struct pollhist_session *out,
                                           int64_t *shared_at)
{
    enum pollhist_share r = POLLHIST_SHARE_NONE;
    if (!h)
        return r;
    pthread_mutex_lock(&h->mu);
    struct slot *s = find(h, account, false);
    if (s && s->session.at > 0 && s->session.at >= since) {
        if (s->shared_gen == s->session_gen && s->shared_at > 0) {
            r = POLLHIST_SHARE_AT;
            out->at = s->session.at;
            *shared_at = s->shared_at;
        } else {
            r = POLLHIST_SHARE_FULL;
            *out = s->session;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return r;
}

void pollhist_session_shared(struct pollhist *h, const char *account,
                             const struct pollhist_session *s, bool saved)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    struct slot *sl = find(h, account, false);
    if (sl) {
        bool current = sl->session.at == s->at;
        sl->shared_gen = saved && current ? sl->session_gen : 0;
        sl->shared_at = saved && current ? s->at : 0;
    }
    pthread_mutex_unlock(&h->mu);
}

int pollhist_get(struct pollhist *h, const char *account, struct pollhist_session *ss,
                 struct pollhist_poll *out, size_t max, size_t *n)
{
    if (n)
        *n = 0;
    if (!h)
        return -1;
    pthread_mutex_lock(&h->mu);
    struct slot *s = find(h, account, false);
    if (s) {
        if (ss)
            *ss = s->session;
        size_t k = 0;
        for (; out && k < max && k < s->count; k++)
            out[k] = s->polls[(s->next + POLLHIST_POLLS - 1 - k) % POLLHIST_POLLS];
        if (n)
            *n = k;
    }
    pthread_mutex_unlock(&h->mu);
    return s ? 0 : -1;
}
