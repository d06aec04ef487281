/* poller — one poll cycle of one account; see include/poller.h. */
#include "poller.h"

#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "committer.h"
#include "filter.h"
#include "log.h"
#include "message.h"
#include "oauth2.h"
#include "pollhist.h"
#include "pop3.h"
#include "pop3cfg.h"


int64_t poller_now_ms(void) { return clock_wall_ms(); }

/* ---- known UIDLs: a sorted array of copies ------------------------------- */

struct known {
    char **v;
    size_t n, cap;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int known_add(void *ctx, const char *uidl, enum store_uidl_state state, int64_t msg_id,
                     struct err *e)
{
    (void)state;
    (void)msg_id;
    struct known *k = ctx;
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 1024;
        char **v = realloc(k->v, cap * sizeof *v);
        if (!v)
            return err_set(e, ERR_INTERNAL, "out of memory for known UIDLs");
        k->v = v;
        k->cap = cap;
    }
    if (!(k->v[k->n] = strdup(uidl)))
        return err_set(e, ERR_INTERNAL, "out of memory for known UIDLs");
    k->n++;
    return 0;
}

static bool known_has(const struct known *k, const char *uidl)
{
    return k->n && bsearch(&uidl, k->v, k->n, sizeof *k->v, cmp_str) != NULL;
}

static void known_free(struct known *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->v[i]);
    free(k->v);
    memset(k, 0, sizeof *k);
}

/* ---- receiving messages: each one spooled whole, then handed to the
 * committer, which commits what is fully received in groups; no store
 * transaction is open while this thread reads the network ---------------- */

struct fetch {
    struct committer_session *cs;
    const struct config_account *a;
    const struct pop3_listing *l;
    const char *const *webhooks;
    size_t n_webhooks;
    bool too_large_mode;      /* these are TOP n 0 headers of too-large messages */
    struct store_msg *m;      /* message being received */
    struct poller_result *res;
    uint32_t current;         /* message number being received */
    uint64_t received;        /* bytes of the current message */
};

static int sink_begin(void *ctx, uint32_t number, struct err *e)
{
    struct fetch *f = ctx;
    f->received = 0;
    f->current = number;
    return committer_msg_begin(f->cs, f->a->name, f->l->entries[number - 1].uidl, &f->m, e);
}

static int sink_data(void *ctx, const char *buf, size_t len, struct err *e)
{
    struct fetch *f = ctx;
    f->received += len;
    if (!f->too_large_mode && f->received > f->a->max_message_size)
        return err_set(e, ERR_LIMIT, "message %u is larger than max_message_size (%llu octets)",
                       f->current, (unsigned long long)f->a->max_message_size);
    return store_msg_write(f->m, buf, len, e);
}

/* The message object the account's filters need (filter_route_needs),
 * from what the store holds before finish: the header block alone, or with
 * the MIME structure (has_attachments), and the full object only when the
 * type (a bounce or not) decides.  NULL when it cannot be parsed (pe). */
static cJSON *route_message(struct store_msg *m, unsigned needs, struct err *pe)
{
    const void *mem;
    size_t len;
    int fd;
    if (store_msg_peek(m, &mem, &len, &fd, pe) < 0)
        return NULL;
    if (needs & FILTER_NEEDS_TYPE)
        return fd >= 0 ? message_to_json_fd(fd, NULL, pe) : message_to_json(mem, len, NULL, pe);
    unsigned what = needs & FILTER_NEEDS_ATTACHMENTS ? MESSAGE_FILTER_ATTACHMENTS
                                                     : MESSAGE_FILTER_HEADER;
    return message_filter_json(fd >= 0 ? NULL : mem, len, fd, what, pe);
}

/* The account's webhooks this message goes to, by their filters (filter.h).
 * One that cannot be parsed goes wherever its type alone is wanted. */
static size_t route(struct fetch *f, struct store_msg *m, unsigned needs, const char **out)
{
    struct err pe;
    err_clear(&pe);
    bool parse = needs & (FILTER_NEEDS_HEADER | FILTER_NEEDS_ATTACHMENTS | FILTER_NEEDS_TYPE);
    cJSON *msg = parse ? route_message(m, needs, &pe) : NULL;
    if (parse && !msg)
        log_warn("filter_unparsed", "account=%s uidl=%s error=%s", f->a->name,
                 log_q(f->l->entries[f->current - 1].uidl), log_q(pe.msg));
    const char *type = filter_message_type(msg, f->too_large_mode);
    size_t n = filter_route(f->a, type, msg, out, STORE_WEBHOOKS_MAX);
    cJSON_Delete(msg);
    if (n < f->n_webhooks)
        log_debug("filter_routed", "account=%s uidl=%s type=%s webhooks=%zu of %zu", f->a->name,
                  log_q(f->l->entries[f->current - 1].uidl), type, n, f->n_webhooks);
    return n;
}

#define POLLER_DEDUPE_HEAD (64u << 10) /* header bytes searched for the Message-ID */

/* De-duplication (the account's dedupe): the message's Message-ID into buf,
 * from the first POLLER_DEDUPE_HEAD bytes the store holds; "" if none. */
static void message_id_for_dedupe(struct store_msg *m, char *buf, size_t size)
{
    const void *mem;
    size_t len;
    int fd;
    struct err pe;
    buf[0] = '\0';
    if (store_msg_peek(m, &mem, &len, &fd, &pe) < 0)
        return;
    if (fd < 0) {
        message_id_of(mem, len < POLLER_DEDUPE_HEAD ? len : POLLER_DEDUPE_HEAD, buf, size);
        return;
    }
    char *head = malloc(POLLER_DEDUPE_HEAD);
    ssize_t got = head ? pread(fd, head, POLLER_DEDUPE_HEAD, 0) : -1;
    if (got > 0)
        message_id_of(head, (size_t)got, buf, size);
    free(head);
}

static int sink_end(void *ctx, uint32_t number, uint64_t octets, struct err *e)
{
    struct fetch *f = ctx;
    struct store_msg *m = f->m;
    f->m = NULL;
    struct store_msg_meta meta = {0};
    if (f->too_large_mode) {
        meta.kind = STORE_KIND_TOO_LARGE;
        meta.declared_size = f->l->entries[number - 1].size;
    }
    char mid[STORE_META_MAX + 1];
    if (f->a->dedupe.present && !f->too_large_mode) {
        message_id_for_dedupe(m, mid, sizeof mid);
        if (mid[0]) {
            meta.message_id = mid;
            meta.dedupe_window_ms = f->a->dedupe.window_ms;
        }
    }
    const char *routed[STORE_WEBHOOKS_MAX];
    const char *const *hooks = f->webhooks;
    size_t n_hooks = f->n_webhooks;
    unsigned needs = filter_route_needs(f->a);
    if (needs) {
        n_hooks = route(f, m, needs, routed);
        hooks = routed;
    }
    if (committer_submit(f->cs, m, &meta, hooks, n_hooks, poller_now_ms(), e) < 0)
        return -1;
    if (f->too_large_mode)
        f->res->too_large++;
    else
        f->res->fetched++;
    f->res->bytes += octets;
    return 0;
}

static int sink_failed(void *ctx, uint32_t number, const struct err *why)
{
    struct fetch *f = ctx;
    store_msg_abort(f->m);
    f->m = NULL;
    f->res->failed++;
    log_warn("retr_refused", "account=%s number=%u uidl=%s server=%s", f->a->name, number,
             log_q(f->l->entries[number - 1].uidl), log_q(why->server));
    return 0; /* the others may still come */
}

/* ---- the cycle ------------------------------------------------------------ */

static int number_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int find_number(const struct pop3_listing *l, const struct pop3_entry **sorted,
                       const char *uidl)
{
    size_t lo = 0, hi = l->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(sorted[mid]->uidl, uidl);
        if (c == 0)
            return (int)sorted[mid]->number;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int cmp_entry_uidl(const void *a, const void *b)
{
    return strcmp((*(const struct pop3_entry *const *)a)->uidl,
                  (*(const struct pop3_entry *const *)b)->uidl);
}

struct del_ctx {
    const struct pop3_listing *l;
    const struct pop3_entry **sorted;
    uint32_t *nums;
    char **uidls;
    size_t n;
};

static int del_add(void *ctx, const char *uidl, enum store_uidl_state state, int64_t msg_id,
                   struct err *e)
{
    (void)state;
    (void)msg_id;
    struct del_ctx *d = ctx;
    int num = find_number(d->l, d->sorted, uidl);
    if (num <= 0 || d->n >= d->l->count)
        return 0; /* not on the server (any more) */
    if (!(d->uidls[d->n] = strdup(uidl)))
        return err_set(e, ERR_INTERNAL, "out of memory");
    d->nums[d->n++] = (uint32_t)num;
    return 0;
}

/* One POP3 session of a poll: what its steps share. */
struct session {
    struct store *st;
    const struct config_account *a;
    struct poller_result *res;
    struct pop3 *p;
    const struct pop3_capa *capa;
    struct pop3_listing *l;
    struct known k;               /* UIDLs the store knew before this poll, sorted */
    uint32_t *fetch_nums, *large_nums;
    size_t n_fetch, n_large;
    size_t known_listed;          /* known UIDLs the server still lists */
    const struct pop3_entry **sorted;
    struct del_ctx dc;
    struct fetch f;
    struct committer_session cs;
};

/* Log in and list: the capabilities, the listing (with UIDL) and what the
 * store already knows. */
static int session_open(struct session *s, const char *token, int cancel_fd, struct err *e)
{
    struct pop3_opts po;
    pop3cfg_opts(s->a, &po);
    po.cancel_fd = cancel_fd;
    if (token)
        po.oauth2_token = token; /* an oauth2 provider account's current access token */
    s->p = pop3_open(&po, e);
    if (!s->p)
        return -1;
    s->capa = pop3_capa(s->p);
    s->res->login_delay = s->capa->login_delay;
    pollhist_session(pollhist_default(), s->a->name, poller_now_ms(),
                     (const char *const *)s->capa->lines, s->capa->n_lines,
                     pop3_tls_info(s->p));
    if (pop3_listing(s->p, &s->l, e) < 0)
        return -1;
    if (!s->l->has_uidl)
        return err_set(e, ERR_SERVER, "server does not support UIDL, which the bridge needs to "
                                      "tell new messages from old");
    s->res->listed = s->l->count;
    if (store_uidls_each(s->st, s->a->name, known_add, &s->k, e) < 0)
        return -1;
    if (s->k.n) /* k.v is NULL when nothing is known yet */
        qsort(s->k.v, s->k.n, sizeof *s->k.v, cmp_str);
    return 0;
}

/* First poll with start: new — remember what is there, deliver nothing. */
static int session_ignore_all(struct session *s, struct err *e)
{
    const struct pop3_listing *l = s->l;
    const char **ignore = malloc(((size_t)l->count + 1) * sizeof *ignore);
    if (!ignore)
        return err_set(e, ERR_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < l->count; i++)
        ignore[i] = l->entries[i].uidl;
    int r = store_uidls_record_ignored(s->st, s->a->name, ignore, l->count, poller_now_ms(), e);
    free(ignore);
    if (r < 0)
        return -1;
    s->res->ignored = l->count;
    return 0;
}

/* What is new: the numbers to RETR and those too large (TOP n 0), at most
 * max_messages_per_poll of them; force_large: a UIDL to take as too large. */
static int session_select(struct session *s, bool first, const char *force_large,
                          struct err *e)
{
    const struct pop3_listing *l = s->l;
    s->fetch_nums = malloc(((size_t)l->count + 1) * sizeof *s->fetch_nums);
    s->large_nums = malloc(((size_t)l->count + 1) * sizeof *s->large_nums);
    if (!s->fetch_nums || !s->large_nums)
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (first && s->a->start == CONFIG_START_NEW && s->k.n == 0)
        return session_ignore_all(s, e);
    size_t n_new = 0;
    for (uint32_t i = 0; i < l->count; i++) {
        const struct pop3_entry *en = &l->entries[i];
        if (known_has(&s->k, en->uidl)) {
            s->known_listed++;
            continue;
        }
        if (n_new >= (size_t)s->a->max_messages_per_poll) {
            s->res->more = true;
            break;
        }
        n_new++;
        bool forced = force_large && strcmp(force_large, en->uidl) == 0;
        if (forced || en->size > s->a->max_message_size)
            s->large_nums[s->n_large++] = en->number;
        else
            s->fetch_nums[s->n_fetch++] = en->number;
    }
    return 0;
}

/* Receive what is new, each message handed to the committer; a message
 * over max_message_size while received gives its UIDL in *over_limit.
 * Everything received is durable when this returns 0. */
static int session_receive(struct session *s, char **over_limit, struct err *e)
{
    struct fetch *f = &s->f;
    f->cs = &s->cs;
    f->a = s->a;
    f->l = s->l;
    f->webhooks = (const char *const *)s->a->webhooks;
    f->n_webhooks = s->a->webhook_count;
    f->res = s->res;
    struct pop3_sink sink = {
        .begin = sink_begin, .data = sink_data, .end = sink_end, .failed = sink_failed,
        .ctx = f, .lf = false,
    };
    if (s->n_fetch && pop3_retr(s->p, s->fetch_nums, s->n_fetch, &sink, e) < 0) {
        if (e->kind == ERR_LIMIT && f->m && f->current && !*over_limit)
            *over_limit = strdup(s->l->entries[f->current - 1].uidl);
        return -1;
    }
    /* too large: only the header (TOP n 0), delivered as message.too_large */
    if (s->n_large) {
        if (!s->capa->known || s->capa->top) {
            f->too_large_mode = true;
            for (size_t i = 0; i < s->n_large; i++)
                if (pop3_top(s->p, s->large_nums[i], 0, &sink, e) < 0)
                    return -1;
        } else {
            log_warn("too_large_skipped", "account=%s count=%zu reason=%s", s->a->name,
                     s->n_large, log_q("server has no TOP"));
        }
    }
    /* everything received is durable before anything may be deleted */
    return committer_wait(&s->cs, e);
}

/* Deletions: what the policy allows, among what the server still lists,
 * DELE'd (committed by QUIT in session_close) into s->dc. */
static int session_delete(struct session *s, struct err *e)
{
    const struct config_account *a = s->a;
    const struct pop3_listing *l = s->l;
    bool del_delivered = a->after_delivery == CONFIG_AFTER_DELETE;
    if (!del_delivered && a->delete_after_ms <= 0)
        return 0;
    struct del_ctx *dc = &s->dc;
    s->sorted = malloc(((size_t)l->count + 1) * sizeof *s->sorted);
    dc->nums = malloc(((size_t)l->count + 1) * sizeof *dc->nums);
    dc->uidls = calloc((size_t)l->count + 1, sizeof *dc->uidls);
    if (!s->sorted || !dc->nums || !dc->uidls)
        return err_set(e, ERR_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < l->count; i++)
        s->sorted[i] = &l->entries[i];
    qsort(s->sorted, l->count, sizeof *s->sorted, cmp_entry_uidl);
    dc->l = l;
    dc->sorted = s->sorted;
    if (store_uidls_deletable(s->st, a->name, del_delivered, a->delete_after_ms,
                              poller_now_ms(), del_add, dc, e) < 0)
        return -1;
    if (!dc->n)
        return 0;
    qsort(dc->nums, dc->n, sizeof *dc->nums, number_cmp);
    return pop3_dele(s->p, dc->nums, dc->n, e);
}

/* QUIT (which commits the deletions), then the store follows: deleted
 * UIDLs marked, and the seen-set kept bounded by forgetting what the server
 * no longer has (a write only when a UIDL known before this poll is not
 * listed). */
static int session_close(struct session *s, struct err *e)
{
    const struct pop3_listing *l = s->l;
    if (pop3_quit(&s->p, e) < 0)
        return -1; /* nothing may be assumed deleted */
    if (s->dc.n) {
        if (store_uidls_mark_deleted(s->st, s->a->name, (const char *const *)s->dc.uidls,
                                     s->dc.n, e) < 0)
            return -1;
        s->res->deleted = s->dc.n;
    }
    if (s->known_listed == s->k.n && !s->dc.n)
        return 0;
    const char **listed = malloc(((size_t)l->count + 1) * sizeof *listed);
    if (!listed)
        return err_set(e, ERR_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < l->count; i++)
        listed[i] = l->entries[i].uidl;
    /* messages deleted just now are no longer listed either */
    int r = store_uidls_forget_vanished(s->st, s->a->name, listed, l->count, NULL, e);
    free(listed);
    return r;
}

/* The end of a session, whatever its outcome: the connection dropped
 * without QUIT if still open (nothing is deleted), what was fully received
 * committed (the webhooks it borrows must outlive it), everything freed.
 * Returns rc, or -1 when that commit failed. */
static int session_end(struct session *s, int rc, struct err *e)
{
    store_msg_abort(s->f.m);
    s->f.m = NULL;
    pop3_abort(&s->p);
    struct err ce;
    if (committer_wait(&s->cs, &ce) < 0) {
        if (rc == 0)
            *e = ce;
        else if (strcmp(ce.msg, e->msg) != 0)
            log_error("store_commit_failed", "account=%s error=%s", s->a->name, log_q(ce.msg));
        rc = -1;
    }
    for (size_t i = 0; i < s->dc.n; i++)
        free(s->dc.uidls[i]);
    free(s->dc.uidls);
    free(s->dc.nums);
    free(s->sorted);
    free(s->fetch_nums);
    free(s->large_nums);
    known_free(&s->k);
    pop3_listing_free(&s->l);
    return rc;
}

/* One session: log in, list, receive what is new, delete what the policy
 * allows, QUIT.  token: an OAuth2 access token or NULL; force_large: a UIDL
 * to take as too large; *over_limit: see session_receive. */
static int one_session(struct store *st, struct committer *cm,
                       const struct config_account *a, const char *token, bool first,
                       int cancel_fd, struct poller_result *res, const char *force_large,
                       char **over_limit, struct err *e)
{
    struct session s = {.st = st, .a = a, .res = res};
    committer_session_init(&s.cs, cm);
    int rc = -1;
    if (session_open(&s, token, cancel_fd, e) == 0 &&
        session_select(&s, first, force_large, e) == 0 &&
        session_receive(&s, over_limit, e) == 0 && session_delete(&s, e) == 0 &&
        session_close(&s, e) == 0)
        rc = 0;
    return session_end(&s, rc, e);
}

/* This instance's id, the poller of the polls it shares (poller_set_instance). */
static char poller_instance[STORE_OWNER_MAX + 1];
/* A write of the poll history to the store failed and none succeeded since. */
static atomic_bool share_failing;

void poller_set_instance(const char *id)
{
    snprintf(poller_instance, sizeof poller_instance, "%s", id ? id : "");
}

int poller_share(struct store *st, const char *account, const struct pollhist_poll *h,
                 const struct store_account_state *state, struct pollhist_session *buf)
{
    struct pollhist *ph = pollhist_default();
    struct store_poll_write w = {.instance = poller_instance, .poll = h, .state = state};
    buf->at = 0;
    switch (pollhist_session_share(ph, account, h->at, buf, &w.session_was)) {
    case POLLHIST_SHARE_FULL:
        w.session = buf;
        break;
    case POLLHIST_SHARE_AT:
        w.session_at = buf->at;
        break;
    case POLLHIST_SHARE_NONE:
        break;
    }
    struct err we;
    err_clear(&we);
    bool saved = false;
    int rc = store_poll_record(st, account, &w, &saved, &we);
    if (buf->at > 0)
        pollhist_session_shared(ph, account, buf, rc == 0 && saved);
    if (rc < 0) {
        if (!atomic_exchange(&share_failing, true))
            log_warn("poll_history_failed", "account=%s error=%s note=%s", account, log_q(we.msg),
                     log_q("the other instances show this account's older polls until a write "
                           "succeeds; polling goes on"));
    } else if (atomic_exchange(&share_failing, false)) {
        log_info("poll_history_recovered", "account=%s", account);
    }
    return rc;
}

/* The poll's line in the dashboard's history (pollhist.h), and in res->poll
 * for the store (poller_share); h->duration_ms holds the monotonic start. */
static void record_poll(const char *account, struct pollhist_poll *h,
                        struct poller_result *res, int rc, const struct err *e)
{
    h->duration_ms = clock_mono_ms() - h->duration_ms;
    h->listed = (uint32_t)res->listed;
    h->new_messages = (uint32_t)(res->fetched + res->too_large);
    h->deleted = (uint32_t)res->deleted;
    h->ok = rc == 0;
    if (!h->ok)
        err_format(e, h->error, sizeof h->error);
    pollhist_poll(pollhist_default(), account, h);
    res->poll = *h;
}

int poller_poll(struct store *st, struct committer *cm, const struct config_account *a,
                bool first, int cancel_fd, struct poller_result *res, struct err *e)
{
    memset(res, 0, sizeof *res);
    res->login_delay = -1;
    err_clear(e);
    struct pollhist_poll hist = {.at = poller_now_ms(), .duration_ms = clock_mono_ms()};
    char *over = NULL, *tok = NULL;
    if (oauth2_managed(a) && (!(tok = malloc(2 * OAUTH2_TOKEN_BUF)) ||
                              oauth2_access_token(st, a, NULL, tok, OAUTH2_TOKEN_BUF, e) < 0)) {
        if (!tok)
            err_set(e, ERR_INTERNAL, "out of memory");
        free(tok);
        record_poll(a->name, &hist, res, -1, e); /* a failed poll, with no session */
        return -1;
    }
    const char *cur = tok;
    int rc = one_session(st, cm, a, cur, first, cancel_fd, res, NULL, &over, e);
    if (rc < 0 && tok && e->kind == ERR_AUTH && !err_is_temporary(e)) {
        /* the server refused the token: refresh once more and retry once */
        log_info("oauth2_token_refused", "account=%s", a->name);
        char *again = tok + OAUTH2_TOKEN_BUF;
        if (oauth2_access_token(st, a, tok, again, OAUTH2_TOKEN_BUF, e) == 0)
            rc = one_session(st, cm, a, cur = again, first, cancel_fd, res, NULL, &over, e);
    }
    if (rc < 0 && over) {
        /* a message went over max_message_size while being received (LIST
         * understated it): poll again at once, taking only its header */
        log_warn("message_too_large", "account=%s uidl=%s limit=%llu", a->name, log_q(over),
                 (unsigned long long)a->max_message_size);
        struct poller_result again;
        memset(&again, 0, sizeof again);
        again.login_delay = -1;
        char *ignored = NULL;
        rc = one_session(st, cm, a, cur, false, cancel_fd, &again, over, &ignored, e);
        free(ignored);
        again.fetched += res->fetched;
        again.bytes += res->bytes;
        *res = again;
    }
    free(over);
    if (tok) {
        OPENSSL_cleanse(tok, 2 * OAUTH2_TOKEN_BUF);
        free(tok);
    }
    record_poll(a->name, &hist, res, rc, e);
    return rc;
}
