/* delivery — the outbox worker; see include/delivery.h. */
#include "delivery.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "event.h"
#include "log.h"
#include "webhook.h"

#define SWEEP_PAGE 500         /* deliveries read per step while sweeping */
#define SWEEP_NAMES 16         /* removed webhooks handled per sweep */
#define SWEEP_LEASES 100       /* lease calls per removed webhook per sweep */
#define UNRECORDED_RETRY_MS 1000

/* One webhook's bookkeeping, by name. */
struct hook {
    char name[STORE_NAME_MAX + 1];
    bool configured;     /* in the configuration last seen */
    bool gone;           /* answered 410 since that configuration was seen */
    size_t held;         /* its deliveries in the sender: waiting or running */
    int64_t check_at;    /* (monotonic) ask the store for due ones from then on */
    bool exhausted;      /* its last lease found fewer than asked for */
};

struct job {
    struct delivery *d;
    struct job *next;               /* in the list of outcomes to record */
    struct store_delivery dl;
    struct cfgref *cfg;             /* held while the job lives (NULL: sweep) */
    const struct config_webhook *wh;
    int64_t started_at;             /* Unix ms: the attempt began (its event written) */
    int64_t started_mono;
    /* the outcome, recorded in the next group commit */
    bool release;                   /* not attempted: give the lease back */
    bool disable;                   /* 410: disable the webhook first */
    enum store_dstatus status;
    int64_t next_at;
    int http_status;
    int64_t duration_ms;
    const char *outcome;
    char error[600];
    int result;                     /* what the store said */
    /* the message as read with its lease (store_msg_load_many) */
    bool preloaded;
    struct store_loaded pre;
    int64_t pre_at;                 /* monotonic: when it was read */
    size_t pre_bytes;               /* its body's share of the delivery's pre_bytes */
    bool pre_keyed;                 /* pre_key holds the link key */
    unsigned char pre_key[STORE_LINK_KEY_LEN];
};

struct sweep {
    bool active;
    int phase;                      /* 0: pending deliveries, 1: failed ones */
    char cursor[STORE_CURSOR_MAX];
    char names[SWEEP_NAMES][STORE_NAME_MAX + 1];
    size_t n;
    int64_t next_at;                /* monotonic */
};

struct delivery {
    struct store *st;
    char owner[STORE_OWNER_MAX + 1]; /* lease owner: this instance's id */
    int64_t lease_ms;
    int64_t renewed_at;              /* monotonic: last lease renewal */
    struct webhook_sender *sender;
    struct delivery_stats stats;
    void (*observer)(void *ctx, const struct store_delivery *dl, const char *outcome,
                     int http_status, int64_t latency_ms);
    void *observer_ctx;
    pthread_mutex_t lock;            /* guards woken, for the idle wait */
    pthread_cond_t cond;             /* on CLOCK_MONOTONIC */
    bool woken;
    struct cfgref *seen;             /* the configuration hooks[] follows (held) */
    struct hook *hooks;
    size_t n_hooks, cap_hooks;
    size_t turn;                     /* the hook asked first for more */
    struct job *done_head, *done_tail; /* outcomes waiting for their commit */
    size_t n_done;
    int64_t first_done_at;           /* monotonic */
    int64_t *unrecorded;             /* ids whose leases are to be released */
    size_t n_unrecorded;
    int64_t unrecorded_retry_at;     /* monotonic */
    struct sweep sweep;
    struct store_delivery *batch;    /* DELIVERY_LEASE_BATCH rows */
    struct store_loaded *loads;      /* their messages (DELIVERY_LEASE_BATCH) */
    size_t pre_bytes;                /* bodies read ahead, held by jobs */
};

/* ---- set-up ------------------------------------------------------------------------ */

struct delivery *delivery_new(struct store *st, const char *owner, struct err *e)
{
    if (!owner || !*owner || strlen(owner) > STORE_OWNER_MAX) {
        err_set(e, ERR_USAGE, "delivery: the lease owner must be 1 to %d bytes", STORE_OWNER_MAX);
        return NULL;
    }
    struct delivery *d = calloc(1, sizeof *d);
    if (!d || !(d->batch = calloc(DELIVERY_LEASE_BATCH, sizeof *d->batch)) ||
        !(d->loads = calloc(DELIVERY_LEASE_BATCH, sizeof *d->loads)) ||
        !(d->unrecorded = calloc(DELIVERY_UNRECORDED_MAX, sizeof *d->unrecorded))) {
        if (d) {
            free(d->batch);
            free(d->loads);
        }
        free(d);
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    d->st = st;
    snprintf(d->owner, sizeof d->owner, "%s", owner);
    d->lease_ms = DELIVERY_LEASE_MS;
    d->renewed_at = clock_mono_ms();
    pthread_mutex_init(&d->lock, NULL);
    clock_cond_init(&d->cond);
    d->sender = webhook_sender_new(DELIVERY_IN_FLIGHT, e);
    if (!d->sender) {
        delivery_free(d);
        return NULL;
    }
    int64_t released = 0;
    if (store_delivery_release(st, d->owner, 0, &released, e) < 0) {
        delivery_free(d);
        return NULL;
    }
    if (released)
        log_info("delivery_leases_released", "count=%lld", (long long)released);
    return d;
}

void delivery_set_lease_ms(struct delivery *d, int64_t lease_ms)
{
    d->lease_ms = lease_ms < 100 ? 100 : lease_ms;
}

void delivery_set_observer(struct delivery *d,
                           void (*fn)(void *ctx, const struct store_delivery *dl,
                                      const char *outcome, int http_status, int64_t latency_ms),
                           void *ctx)
{
    d->observer = fn;
    d->observer_ctx = ctx;
}

static const struct config_webhook *find_webhook(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->webhook_count; i++)
        if (strcmp(cfg->webhooks[i].name, name) == 0)
            return &cfg->webhooks[i];
    return NULL;
}

static struct hook *find_hook(struct delivery *d, const char *name)
{
    for (size_t i = 0; i < d->n_hooks; i++)
        if (strcmp(d->hooks[i].name, name) == 0)
            return &d->hooks[i];
    return NULL;
}

/* A new configuration: one hook per webhook (kept with its counts when the
 * name is known), plus the unconfigured ones still holding deliveries. */
static void hooks_follow(struct delivery *d, struct cfgref *ref)
{
    if (d->seen == ref)
        return;
    const struct config *cfg = ref->cfg;
    size_t keep = 0;
    for (size_t i = 0; i < d->n_hooks; i++)
        if (d->hooks[i].held || find_webhook(cfg, d->hooks[i].name))
            d->hooks[keep++] = d->hooks[i];
    d->n_hooks = keep;
    for (size_t i = 0; i < d->n_hooks; i++) {
        d->hooks[i].configured = find_webhook(cfg, d->hooks[i].name) != NULL;
        d->hooks[i].gone = false; /* a reload enables every webhook again */
        d->hooks[i].check_at = 0;
        d->hooks[i].exhausted = false;
    }
    for (size_t i = 0; i < cfg->webhook_count; i++) {
        if (find_hook(d, cfg->webhooks[i].name))
            continue;
        if (d->n_hooks == d->cap_hooks) {
            size_t cap = d->cap_hooks ? 2 * d->cap_hooks : 8;
            struct hook *h = realloc(d->hooks, cap * sizeof *h);
            if (!h) {
                log_error("delivery_oom", "what=%s", log_q("webhook table"));
                break;
            }
            d->hooks = h;
            d->cap_hooks = cap;
        }
        struct hook *h = &d->hooks[d->n_hooks++];
        memset(h, 0, sizeof *h);
        snprintf(h->name, sizeof h->name, "%s", cfg->webhooks[i].name);
        h->configured = true;
    }
    cfgref_put(d->seen);
    d->seen = cfgref_hold(ref);
    d->sweep.active = false;
    d->sweep.next_at = 0; /* look for deliveries of removed webhooks now */
}

/* ---- outcomes ---------------------------------------------------------------------- */

static void add_unrecorded(struct delivery *d, int64_t id)
{
    for (size_t i = 0; i < d->n_unrecorded; i++)
        if (d->unrecorded[i] == id)
            return;
    if (d->n_unrecorded < DELIVERY_UNRECORDED_MAX)
        d->unrecorded[d->n_unrecorded++] = id;
}

static void drop_unrecorded(struct delivery *d, int64_t id)
{
    for (size_t i = 0; i < d->n_unrecorded; i++)
        if (d->unrecorded[i] == id) {
            d->unrecorded[i] = d->unrecorded[--d->n_unrecorded];
            return;
        }
}

/* Release the leases of outcomes the store did not take, once it takes
 * writes again (the deliveries go out again, with the same ids). */
static void release_unrecorded(struct delivery *d, bool now)
{
    if (!d->n_unrecorded || (!now && clock_mono_ms() < d->unrecorded_retry_at))
        return;
    size_t keep = 0;
    for (size_t i = 0; i < d->n_unrecorded; i++) {
        struct err e;
        if (store_delivery_release(d->st, d->owner, d->unrecorded[i], NULL, &e) < 0) {
            d->unrecorded[keep++] = d->unrecorded[i];
            if (keep == 1)
                log_warn("delivery_release_failed", "delivery=%lld error=%s",
                         (long long)d->unrecorded[i], log_q(e.msg));
        }
    }
    if (keep < d->n_unrecorded)
        log_info("delivery_leases_released", "count=%zu reason=%s", d->n_unrecorded - keep,
                 log_q("outcome not recorded"));
    d->n_unrecorded = keep;
    d->unrecorded_retry_at = clock_mono_ms() + UNRECORDED_RETRY_MS;
}

/* Let go of what j read ahead (used, stale or never needed). */
static void preload_drop(struct delivery *d, struct job *j)
{
    if (!j->preloaded)
        return;
    d->pre_bytes -= j->pre_bytes;
    j->pre_bytes = 0;
    store_loaded_free(&j->pre, 1);
    OPENSSL_cleanse(j->pre_key, sizeof j->pre_key);
    j->preloaded = j->pre_keyed = false;
}

static void job_free(struct delivery *d, struct job *j)
{
    preload_drop(d, j);
    cfgref_put(j->cfg);
    free(j);
}

static void queue_done(struct delivery *d, struct job *j)
{
    j->next = NULL;
    if (d->done_tail)
        d->done_tail->next = j;
    else
        d->done_head = j;
    d->done_tail = j;
    if (d->n_done++ == 0)
        d->first_done_at = clock_mono_ms();
}

/* What a recorded outcome means here: counters, the observer, the log. */
static void account_for(struct delivery *d, const struct job *j, int64_t end)
{
    const struct store_delivery *dl = &j->dl;
    int64_t latency = 0;
    if (j->status == STORE_D_DELIVERED) {
        latency = end - dl->created_at;
        if (latency < 0)
            latency = 0;
        d->stats.delivered++;
        d->stats.latency_ms_sum += (uint64_t)latency;
        log_debug("delivered", "delivery=%lld account=%s webhook=%s status=%d ms=%lld",
                  (long long)dl->id, dl->account, dl->webhook, j->http_status,
                  (long long)j->duration_ms);
    } else if (j->status == STORE_D_DEAD) {
        d->stats.dead++;
        log_warn("delivery_dead", "delivery=%lld account=%s webhook=%s attempts=%d error=%s",
                 (long long)dl->id, dl->account, dl->webhook, dl->attempts + 1,
                 log_q(j->error));
    } else {
        d->stats.retried++;
        if (!j->disable)
            log_info("delivery_retry",
                     "delivery=%lld account=%s webhook=%s attempt=%d next_in_ms=%lld error=%s",
                     (long long)dl->id, dl->account, dl->webhook, dl->attempts + 1,
                     (long long)(j->next_at - end), log_q(j->error));
    }
    if (d->observer)
        d->observer(d->observer_ctx, dl, j->outcome, j->http_status, latency);
}

/* Record every finished outcome in one short transaction: no transfer is
 * waited on while it is open. */
static void flush(struct delivery *d)
{
    if (!d->n_done)
        return;
    struct err e;
    bool batch = store_batch_begin(d->st, &e) == 0;
    /* the outcomes go to the store together (on PostgreSQL several in one
     * round trip), after the webhooks to disable and the leases to give back */
    struct store_record *recs = calloc(d->n_done, sizeof *recs);
    size_t n_recs = 0;
    for (struct job *j = d->done_head; j; j = j->next) {
        if (j->disable && store_webhook_disable(d->st, j->dl.webhook, "410 Gone", clock_wall_ms(),
                                                &e) < 0)
            log_error("webhook_disable_failed", "webhook=%s error=%s", j->dl.webhook,
                      log_q(e.msg));
        struct store_attempt a = {
            .started_at = j->started_at,
            .duration_ms = j->duration_ms,
            .http_status = j->http_status,
            .error = j->error[0] ? j->error : NULL,
            .outcome = j->outcome,
        };
        if (j->release)
            j->result = store_delivery_release(d->st, d->owner, j->dl.id, NULL, &e);
        else if (recs)
            recs[n_recs++] = (struct store_record){.id = j->dl.id, .a = a, .status = j->status,
                                                   .next_attempt_at = j->next_at};
        else /* no memory for the list: one by one */
            j->result =
                store_delivery_record(d->st, d->owner, j->dl.id, &a, j->status, j->next_at, &e);
        if ((j->release || !recs) && j->result < 0)
            log_error(j->release ? "delivery_release_failed" : "delivery_record_failed",
                      "delivery=%lld error=%s", (long long)j->dl.id, log_q(e.msg));
    }
    if (recs) {
        if (store_delivery_record_many(d->st, d->owner, recs, n_recs, &e) < 0) {
            for (size_t i = 0; i < n_recs; i++) {
                recs[i].result = -1;
                recs[i].err = e;
            }
        }
        size_t k = 0;
        for (struct job *j = d->done_head; j; j = j->next) {
            if (j->release)
                continue;
            j->result = recs[k].result;
            if (j->result < 0)
                log_error("delivery_record_failed", "delivery=%lld error=%s",
                          (long long)j->dl.id, log_q(recs[k].err.msg));
            k++;
        }
        free(recs);
    }
    bool committed = true;
    if (batch && store_batch_commit(d->st, &e) < 0) {
        log_error("delivery_commit_failed", "outcomes=%zu error=%s", d->n_done, log_q(e.msg));
        store_batch_rollback(d->st);
        committed = false;
    }
    int64_t end = clock_wall_ms();
    struct job *j = d->done_head;
    while (j) {
        struct job *next = j->next;
        if (!committed || j->result < 0) {
            /* its lease is released later, or expires: it goes out again */
            add_unrecorded(d, j->dl.id);
            if (!j->release)
                d->stats.unrecorded++;
        } else if (j->result == STORE_LEASE_LOST) {
            d->stats.lease_lost++;
            log_warn("delivery_lease_lost", "delivery=%lld outcome=%s note=%s",
                     (long long)j->dl.id, j->outcome,
                     log_q("another worker holds it now; kept as history only"));
        } else if (j->result == 0 && !j->release) {
            if (j->disable) {
                d->stats.disabled++;
                log_warn("webhook_disabled", "webhook=%s reason=%s", j->dl.webhook,
                         log_q("answered 410 Gone; re-enabled when the configuration is "
                               "reloaded"));
            }
            account_for(d, j, end);
        }
        job_free(d, j);
        j = next;
    }
    d->done_head = d->done_tail = NULL;
    d->n_done = 0;
    release_unrecorded(d, false);
}

static bool flush_due(const struct delivery *d)
{
    return d->n_done &&
           (d->n_done >= DELIVERY_FLUSH_MAX || webhook_sender_in_flight(d->sender) == 0 ||
            clock_mono_ms() - d->first_done_at >= DELIVERY_FLUSH_MS);
}

/* The outcome of a failed attempt: retried per the schedule, or dead. */
static void set_failed(struct job *j, const char *outcome, int64_t retry_after_s)
{
    int64_t delay = webhook_next_delay_ms(j->wh->retry_ms, j->wh->retry_count,
                                          (unsigned)j->dl.attempts + 1, retry_after_s,
                                          DELIVERY_JITTER);
    if (delay < 0) {
        j->status = STORE_D_DEAD;
        j->outcome = "dead";
    } else {
        j->status = STORE_D_FAILED;
        j->next_at = clock_wall_ms() + delay;
        j->outcome = outcome;
    }
}

/* ---- one delivery ------------------------------------------------------------------- */

static int sign_tap(void *ctx, const void *data, size_t len)
{
    return webhook_signer_update(ctx, data, len);
}

/* The sender is about to start the transfer: write and sign the event now. */
static int job_prepare(void *user, struct webhook_signer *sig, int *fd, uint64_t *len,
                       struct err *e)
{
    struct job *j = user;
    struct delivery *d = j->d;
    struct hook *h = find_hook(d, j->dl.webhook);
    if (h && h->gone) {
        j->release = true; /* disabled meanwhile: not attempted */
        return err_set(e, ERR_USAGE, "the webhook answered 410 Gone meanwhile");
    }
    const struct config *cfg = j->cfg->cfg;
    j->started_at = clock_wall_ms();
    j->started_mono = clock_mono_ms();
    struct event_opts o = {
        .public_url = cfg->api.public_url,
        .inline_max = j->wh->inline_total_max ? j->wh->inline_attachments_max : 0,
        .inline_total_max = j->wh->inline_total_max ? j->wh->inline_total_max : 1,
        .now_ms = j->started_at,
        .payload = &j->wh->payload,
        .links_ttl_ms = cfg->links_ttl_ms,
    };
    if (j->dl.event_id > 0) /* an account event, not a message */
        return event_spool_stored(d->st, cfg->state_dir, j->dl.event_id, j->started_at, sign_tap,
                                  sig, fd, len, e);
    event_opts_account(&o, config_account_find(cfg, j->dl.account));
    if (j->preloaded && j->started_mono - j->pre_at <= DELIVERY_PRELOAD_TTL_MS) {
        o.loaded = &j->pre;
        o.loaded_key = j->pre_keyed ? j->pre_key : NULL;
    }
    int rc = event_spool(d->st, cfg->state_dir, j->dl.msg_id, &o, sign_tap, sig, fd, len, e);
    preload_drop(d, j);
    return rc;
}

static void on_done(void *user, const struct webhook_result *r)
{
    struct job *j = user;
    struct delivery *d = j->d;
    struct hook *h = find_hook(d, j->dl.webhook);
    if (h && h->held)
        h->held--;
    if (r->aborted || j->release) {
        j->release = true;
        queue_done(d, j);
        return;
    }
    j->duration_ms = j->started_mono ? clock_mono_ms() - j->started_mono : 0;
    j->http_status = r->status;
    if (r->prepare_failed) {
        char text[500];
        err_format(&r->err, text, sizeof text);
        snprintf(j->error, sizeof j->error, "the event could not be written: %s", text);
        if (r->err.kind == ERR_USAGE) { /* the message is gone: nothing to deliver, ever */
            j->status = STORE_D_DEAD;
            j->outcome = "dead";
        } else {
            set_failed(j, "error", -1);
        }
        queue_done(d, j);
        return;
    }
    enum webhook_outcome oc = webhook_classify(r);
    if (r->err.kind != ERR_NONE)
        err_format(&r->err, j->error, sizeof j->error);
    else if (oc != WEBHOOK_DELIVERED && r->response[0])
        snprintf(j->error, sizeof j->error, "HTTP %d: %.500s", r->status, r->response);
    else if (oc != WEBHOOK_DELIVERED)
        snprintf(j->error, sizeof j->error, "HTTP %d", r->status);
    j->outcome = webhook_outcome_name(oc);
    if (oc == WEBHOOK_DELIVERED) {
        j->status = STORE_D_DELIVERED;
    } else if (oc == WEBHOOK_DISABLED) {
        /* due again at once, but not handed out until a reload enables it */
        j->disable = true;
        j->status = STORE_D_FAILED;
        j->next_at = clock_wall_ms();
        if (h)
            h->gone = true;
    } else {
        set_failed(j, j->outcome, r->retry_after_s);
    }
    queue_done(d, j);
}

/* Queue one leased delivery in its webhook's queue. */
static void submit(struct delivery *d, struct cfgref *ref, struct hook *h,
                   const struct store_delivery *dl, struct store_loaded *pre,
                   const unsigned char *key)
{
    const struct config_webhook *wh = find_webhook(ref->cfg, dl->webhook);
    struct job *j = calloc(1, sizeof *j);
    if (!j || !wh) {
        struct err e;
        free(j);
        if (store_delivery_release(d->st, d->owner, dl->id, NULL, &e) < 0)
            add_unrecorded(d, dl->id);
        return;
    }
    drop_unrecorded(d, dl->id); /* leased again: ours, live */
    j->d = d;
    j->dl = *dl;
    j->cfg = cfgref_hold(ref);
    j->wh = wh;
    if (pre) { /* taken over: its body is the job's now */
        j->preloaded = true;
        j->pre = *pre;
        j->pre_at = clock_mono_ms();
        j->pre_bytes = pre->body_len;
        d->pre_bytes += pre->body_len;
        pre->body = NULL;
        if (key) {
            memcpy(j->pre_key, key, sizeof j->pre_key);
            j->pre_keyed = true;
        }
    }
    char id[WEBHOOK_ID_SIZE];
    int idr = dl->msg_key[0] ? webhook_event_id(dl->msg_key, dl->webhook, id, sizeof id)
                             : webhook_id(dl->account, dl->uidl, dl->webhook, id, sizeof id);
    struct webhook_header hdrs[CONFIG_HEADERS_MAX];
    size_t nh = wh->header_count < CONFIG_HEADERS_MAX ? wh->header_count : CONFIG_HEADERS_MAX;
    for (size_t i = 0; i < nh; i++) {
        hdrs[i].name = wh->headers[i].name;
        hdrs[i].value = wh->headers[i].value;
    }
    struct webhook_key keys[CONFIG_WEBHOOK_SECRETS_MAX];
    size_t nk = wh->key_count < CONFIG_WEBHOOK_SECRETS_MAX ? wh->key_count : 0;
    for (size_t i = 0; i < nk; i++)
        keys[i] = (struct webhook_key){wh->keys[i], wh->key_lens[i]};
    struct webhook_header shdrs[CONFIG_HEADERS_MAX];
    size_t ns = wh->secret_header_count < CONFIG_HEADERS_MAX ? wh->secret_header_count : 0;
    for (size_t i = 0; i < ns; i++) {
        shdrs[i].name = wh->secret_headers[i].name;
        shdrs[i].value = wh->secret_headers[i].value;
    }
    const struct config_webhook_auth *au = &wh->auth;
    struct webhook_request req = {
        .url = wh->url,
        .id = id,
        .key = wh->key,
        .key_len = wh->key_len,
        .keys = keys,
        .n_keys = nk,
        .ca_file = wh->ca_file,
        .client_cert = wh->client_cert_file,
        .client_key = wh->client_key_file,
        .proxy = wh->proxy,
        .basic_user = au->present && au->basic.present ? au->basic.username : NULL,
        .basic_password = au->present && au->basic.present ? au->basic.password.value : NULL,
        .bearer = au->present && !au->basic.present ? au->bearer.value : NULL,
        .secret_headers = shdrs,
        .n_secret_headers = ns,
        .allow_plaintext_credentials = wh->allow_plaintext_credentials,
        .prepare = job_prepare,
        .queue = wh->name,
        .queue_max_in_flight = wh->max_in_flight,
        .headers = hdrs,
        .n_headers = nh,
        .timeout_ms = wh->timeout_ms,
        .done = on_done,
    };
    struct err e;
    if (idr < 0)
        err_set(&e, ERR_INTERNAL, "the webhook-id could not be computed");
    if (idr < 0 || webhook_sender_submit(d->sender, &req, j, &e) < 0) {
        j->started_at = clock_wall_ms();
        err_format(&e, j->error, sizeof j->error);
        set_failed(j, "rejected", -1);
        queue_done(d, j);
        return;
    }
    h->held++;
}

/* The messages of d->batch[0..n) read at once into d->loads, within what
 * may be held (DELIVERY_PRELOAD_BYTES); the link key too when links are
 * signed.  false when nothing was read (each job reads its own). */
static bool preload(struct delivery *d, const struct config *cfg, size_t n,
                    unsigned char key[STORE_LINK_KEY_LEN], bool *keyed)
{
    size_t msgs = 0;
    for (size_t i = 0; i < n; i++) {
        d->loads[i].id = d->batch[i].event_id > 0 ? 0 : d->batch[i].msg_id;
        msgs += d->loads[i].id > 0;
    }
    if (msgs == 0)
        return false;
    bool signed_links = cfg->api.public_url && cfg->links_ttl_ms > 0;
    size_t budget = d->pre_bytes < DELIVERY_PRELOAD_BYTES ? DELIVERY_PRELOAD_BYTES - d->pre_bytes : 0;
    struct err e;
    if (store_msg_load_many(d->st, d->loads, n, DELIVERY_PRELOAD_BODY_MAX, budget,
                            signed_links ? key : NULL, clock_wall_ms() / 1000, &e) < 0) {
        log_warn("delivery_preload_failed", "deliveries=%zu error=%s", n, log_q(e.msg));
        return false;
    }
    *keyed = signed_links;
    return true;
}

/* Lease more for every webhook whose queue runs low, taking turns. */
static int lease_more(struct delivery *d, struct cfgref *ref, struct err *e)
{
    int64_t now = clock_mono_ms();
    int64_t due_at = -1; /* when the next delivery falls due: asked once, when it matters */
    for (size_t k = 0; k < d->n_hooks; k++) {
        struct hook *h = &d->hooks[(d->turn + k) % d->n_hooks];
        const struct config_webhook *wh = find_webhook(ref->cfg, h->name);
        if (!h->configured || !wh || h->gone || now < h->check_at)
            continue;
        size_t ahead = 4 * (size_t)wh->max_in_flight;
        if (ahead < DELIVERY_AHEAD_MIN)
            ahead = DELIVERY_AHEAD_MIN;
        if (h->held > ahead / 2)
            continue;
        if (h->exhausted) {
            /* its last lease came back short: anything due since? */
            if (due_at < 0 && store_delivery_next_due(d->st, clock_wall_ms(), &due_at, e) < 0)
                return -1;
            int64_t wait = due_at ? due_at - clock_wall_ms() : DELIVERY_RECHECK_MS;
            if (wait > 0) {
                h->check_at = now + (wait < DELIVERY_RECHECK_MS ? wait : DELIVERY_RECHECK_MS);
                continue;
            }
        }
        size_t held = webhook_sender_in_flight(d->sender);
        size_t want = ahead - h->held, n = 0;
        if (want > DELIVERY_LEASE_BATCH)
            want = DELIVERY_LEASE_BATCH;
        if (held + want > DELIVERY_HELD_MAX)
            want = held < DELIVERY_HELD_MAX ? DELIVERY_HELD_MAX - held : 0;
        if (want == 0)
            break;
        if (store_delivery_lease_due(d->st, d->owner, h->name, clock_wall_ms(), d->lease_ms, d->batch,
                                     want, &n, e) < 0)
            return -1;
        unsigned char key[STORE_LINK_KEY_LEN];
        bool keyed = false;
        bool pre = preload(d, ref->cfg, n, key, &keyed);
        for (size_t i = 0; i < n; i++)
            submit(d, ref, h, &d->batch[i], pre ? &d->loads[i] : NULL, keyed ? key : NULL);
        if (pre)
            store_loaded_free(d->loads, n); /* what no job took */
        OPENSSL_cleanse(key, sizeof key);
        h->exhausted = n < want;
        h->check_at = h->exhausted ? now + DELIVERY_RECHECK_MS : 0;
    }
    if (d->n_hooks)
        d->turn = (d->turn + 1) % d->n_hooks;
    return 0;
}

/* ---- deliveries of webhooks no longer configured ---------------------------------------- */

struct sweep_ctx {
    struct delivery *d;
    const struct config *cfg;
};

static int sweep_row(void *ctx, const struct store_delivery *dl, struct err *e)
{
    (void)e;
    struct sweep_ctx *c = ctx;
    struct sweep *s = &c->d->sweep;
    if (find_webhook(c->cfg, dl->webhook))
        return 0;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->names[i], dl->webhook) == 0)
            return 0;
    if (s->n < SWEEP_NAMES)
        snprintf(s->names[s->n++], sizeof s->names[0], "%s", dl->webhook);
    return 0;
}

/* Record dead, one page of the outbox per step, what no configured webhook
 * will ever take. */
static void sweep_step(struct delivery *d, struct cfgref *ref)
{
    struct sweep *s = &d->sweep;
    if (!s->active) {
        if (clock_mono_ms() < s->next_at)
            return;
        memset(s, 0, sizeof *s);
        s->active = true;
    }
    static const enum store_dstatus phases[] = {STORE_D_PENDING, STORE_D_FAILED};
    struct sweep_ctx c = {d, ref->cfg};
    char next[STORE_CURSOR_MAX] = "";
    struct err e;
    if (store_delivery_list(d->st, &phases[s->phase], NULL, SWEEP_PAGE, s->cursor, sweep_row, &c,
                            next, &e) < 0) {
        log_error("delivery_sweep_failed", "error=%s", log_q(e.msg));
        s->active = false;
        s->next_at = clock_mono_ms() + DELIVERY_RECHECK_MS * 60;
        return;
    }
    if (next[0]) {
        memcpy(s->cursor, next, sizeof s->cursor);
        return;
    }
    if (s->phase == 0) {
        s->phase = 1;
        s->cursor[0] = '\0';
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        for (int round = 0; round < SWEEP_LEASES; round++) {
            size_t n = 0;
            if (store_delivery_lease_due(d->st, d->owner, s->names[i], clock_wall_ms(), d->lease_ms,
                                         d->batch, DELIVERY_LEASE_BATCH, &n, &e) < 0) {
                log_error("delivery_sweep_failed", "error=%s", log_q(e.msg));
                break;
            }
            for (size_t k = 0; k < n; k++) {
                struct job *j = calloc(1, sizeof *j);
                if (!j) {
                    add_unrecorded(d, d->batch[k].id);
                    continue;
                }
                drop_unrecorded(d, d->batch[k].id);
                j->d = d;
                j->dl = d->batch[k];
                j->started_at = clock_wall_ms();
                j->status = STORE_D_DEAD;
                j->outcome = "dead";
                snprintf(j->error, sizeof j->error,
                         "webhook \"%s\" is not in the configuration", s->names[i]);
                queue_done(d, j);
            }
            flush(d);
            if (n < DELIVERY_LEASE_BATCH)
                break;
        }
    }
    s->active = false;
    s->next_at = clock_mono_ms() + DELIVERY_SWEEP_MS;
}

/* ---- the step ----------------------------------------------------------------------- */

/* Nothing in flight: sleep until woken or wait_ms passed. */
static void idle_wait(struct delivery *d, int wait_ms)
{
    struct timespec ts;
    clock_deadline(&ts, wait_ms);
    pthread_mutex_lock(&d->lock);
    while (!d->woken)
        if (pthread_cond_timedwait(&d->cond, &d->lock, &ts) != 0)
            break;
    pthread_mutex_unlock(&d->lock);
}

/* How long an idle step sleeps: wait_ms, cut to the soonest time a
 * configured webhook is to be asked again, and to DELIVERY_BUSY_WAIT_MS
 * while a sweep or lease releases are under way or a webhook may be asked
 * at once. */
static int idle_ms(const struct delivery *d, const struct cfgref *ref, int wait_ms)
{
    int64_t now = clock_mono_ms(), until = now + wait_ms;
    bool busy = !ref || d->sweep.active || d->n_unrecorded > 0;
    for (size_t i = 0; i < d->n_hooks && !busy; i++) {
        const struct hook *h = &d->hooks[i];
        if (!h->configured || h->gone)
            continue;
        if (h->check_at <= now)
            busy = true;
        else if (h->check_at < until)
            until = h->check_at;
    }
    if (busy && wait_ms > DELIVERY_BUSY_WAIT_MS)
        return DELIVERY_BUSY_WAIT_MS;
    int64_t left = until - now;
    return left < 1 ? 1 : (int)left;
}

static void renew(struct delivery *d)
{
    if (webhook_sender_in_flight(d->sender) == 0 && d->n_done == 0)
        return;
    if (clock_mono_ms() - d->renewed_at < d->lease_ms / 4)
        return;
    struct err e;
    if (store_delivery_renew(d->st, d->owner, clock_wall_ms(), d->lease_ms, NULL, &e) < 0)
        log_error("delivery_renew_failed", "error=%s", log_q(e.msg));
    d->renewed_at = clock_mono_ms();
}

int delivery_step(struct delivery *d, struct cfgref *ref, int wait_ms, struct err *e)
{
    pthread_mutex_lock(&d->lock);
    bool woken = d->woken;
    d->woken = false;
    pthread_mutex_unlock(&d->lock);
    if (!ref) {
        /* draining: what has not started goes back to the store */
        if (webhook_sender_drop_queued(d->sender, e) < 0)
            return -1;
        flush(d);
    } else {
        hooks_follow(d, ref);
        if (woken)
            for (size_t i = 0; i < d->n_hooks; i++) {
                d->hooks[i].check_at = 0;
                d->hooks[i].exhausted = false;
            }
        int r = lease_more(d, ref, e);
        sweep_step(d, ref);
        if (r < 0)
            return -1;
    }
    release_unrecorded(d, false);
    renew(d);
    if (webhook_sender_in_flight(d->sender) == 0) {
        flush(d);
        if (wait_ms > 0 && !woken)
            idle_wait(d, idle_ms(d, ref, wait_ms));
        return 0;
    }
    if (wait_ms > DELIVERY_BUSY_WAIT_MS)
        wait_ms = DELIVERY_BUSY_WAIT_MS;
    if (d->n_done) {
        int64_t left = DELIVERY_FLUSH_MS - (clock_mono_ms() - d->first_done_at);
        if (left < wait_ms)
            wait_ms = left > 0 ? (int)left : 0;
    }
    int n = webhook_sender_run(d->sender, wait_ms, e);
    if (flush_due(d))
        flush(d);
    return n;
}

size_t delivery_in_flight(const struct delivery *d)
{
    return webhook_sender_in_flight(d->sender) + d->n_done;
}

void delivery_wakeup(struct delivery *d)
{
    pthread_mutex_lock(&d->lock);
    d->woken = true;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
    webhook_sender_wakeup(d->sender);
}

void delivery_stats(const struct delivery *d, struct delivery_stats *out)
{
    *out = d->stats;
}

void delivery_free(struct delivery *d)
{
    if (!d)
        return;
    webhook_sender_free(d->sender); /* aborted jobs come back to be released */
    d->sender = NULL;
    flush(d);
    release_unrecorded(d, true);
    struct err e;
    int64_t released = 0;
    if (d->st && store_delivery_release(d->st, d->owner, 0, &released, &e) < 0)
        log_error("delivery_release_failed", "error=%s", log_q(e.msg));
    cfgref_put(d->seen);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d->hooks);
    free(d->unrecorded);
    free(d->batch);
    free(d->loads);
    free(d);
}
