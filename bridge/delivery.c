/* delivery — the outbox worker; see include/delivery.h. */
#include "delivery.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "log.h"
#include "webhook.h"

struct job {
    struct delivery *d;
    struct store_delivery dl;
    struct cfgref *cfg;             /* held while in flight */
    const struct config_webhook *wh;
    int64_t started;
};

struct delivery {
    struct store *st;
    char owner[STORE_OWNER_MAX + 1]; /* lease owner: this instance's id */
    int64_t renewed_at;              /* last lease renewal (Unix ms) */
    struct webhook_sender *sender;
    struct delivery_stats stats;
    void (*observer)(void *ctx, const struct store_delivery *dl, const char *outcome,
                     int http_status, int64_t latency_ms);
    void *observer_ctx;
    pthread_mutex_t lock;   /* guards woken, for the idle wait */
    pthread_cond_t cond;
    bool woken;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct delivery *delivery_new(struct store *st, const char *owner, struct err *e)
{
    if (!owner || !*owner || strlen(owner) > STORE_OWNER_MAX) {
        err_set(e, ERR_USAGE, "delivery: the lease owner must be 1 to %d bytes", STORE_OWNER_MAX);
        return NULL;
    }
    struct delivery *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    d->st = st;
    snprintf(d->owner, sizeof d->owner, "%s", owner);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    d->sender = webhook_sender_new(DELIVERY_IN_FLIGHT, e);
    if (!d->sender) {
        pthread_mutex_destroy(&d->lock);
        pthread_cond_destroy(&d->cond);
        free(d);
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

static void record(struct delivery *d, const struct store_delivery *dl, int64_t started,
                   int http_status, const char *error, const char *outcome,
                   enum store_dstatus status, int64_t next_at)
{
    int64_t end = now_ms();
    struct store_attempt a = {
        .started_at = started,
        .duration_ms = end - started,
        .http_status = http_status,
        .error = error && *error ? error : NULL,
        .outcome = outcome,
    };
    struct err e;
    int r = store_delivery_record(d->st, d->owner, dl->id, &a, status, next_at, &e);
    if (r < 0)
        log_error("delivery_record_failed", "delivery=%lld error=%s", (long long)dl->id,
                  log_q(e.msg));
    else if (r == STORE_LEASE_LOST)
        log_warn("delivery_lease_lost", "delivery=%lld outcome=%s", (long long)dl->id, outcome);
    int64_t latency = status == STORE_D_DELIVERED ? end - dl->created_at : 0;
    if (status == STORE_D_DELIVERED) {
        d->stats.delivered++;
        d->stats.latency_ms_sum += (uint64_t)(latency > 0 ? latency : 0);
    } else if (status == STORE_D_DEAD) {
        d->stats.dead++;
    } else {
        d->stats.retried++;
    }
    if (d->observer)
        d->observer(d->observer_ctx, dl, outcome, http_status, latency);
}

static void on_done(void *user, const struct webhook_result *r)
{
    struct job *j = user;
    struct delivery *d = j->d;
    if (r->aborted) {
        struct err e;
        store_delivery_release(d->st, d->owner, j->dl.id, NULL, &e);
        goto out;
    }
    enum webhook_outcome oc = webhook_classify(r);
    char error[600] = "";
    if (r->err.kind != ERR_NONE)
        err_format(&r->err, error, sizeof error);
    else if (oc != WEBHOOK_DELIVERED && r->response[0])
        snprintf(error, sizeof error, "HTTP %d: %.500s", r->status, r->response);
    else if (oc != WEBHOOK_DELIVERED)
        snprintf(error, sizeof error, "HTTP %d", r->status);
    const char *name = webhook_outcome_name(oc);
    if (oc == WEBHOOK_DELIVERED) {
        record(d, &j->dl, j->started, r->status, NULL, name, STORE_D_DELIVERED, 0);
        log_debug("delivered", "delivery=%lld account=%s webhook=%s status=%d ms=%lld",
                  (long long)j->dl.id, j->dl.account, j->dl.webhook, r->status,
                  (long long)r->duration_ms);
    } else if (oc == WEBHOOK_DISABLED) {
        struct err e;
        if (store_webhook_disable(d->st, j->dl.webhook, "410 Gone", now_ms(), &e) < 0)
            log_error("webhook_disable_failed", "webhook=%s error=%s", j->dl.webhook, log_q(e.msg));
        d->stats.disabled++;
        log_warn("webhook_disabled", "webhook=%s reason=%s", j->dl.webhook,
                 log_q("answered 410 Gone; re-enabled when the configuration is reloaded"));
        record(d, &j->dl, j->started, r->status, error, name, STORE_D_FAILED, now_ms());
    } else {
        int attempt = j->dl.attempts + 1;
        int64_t delay = webhook_next_delay_ms(j->wh->retry_ms, j->wh->retry_count,
                                              (unsigned)attempt, r->retry_after_s,
                                              DELIVERY_JITTER);
        if (delay < 0) {
            record(d, &j->dl, j->started, r->status, error, "dead", STORE_D_DEAD, 0);
            log_warn("delivery_dead", "delivery=%lld account=%s webhook=%s attempts=%d error=%s",
                     (long long)j->dl.id, j->dl.account, j->dl.webhook, attempt, log_q(error));
        } else {
            record(d, &j->dl, j->started, r->status, error, name, STORE_D_FAILED,
                   now_ms() + delay);
            log_info("delivery_retry", "delivery=%lld account=%s webhook=%s attempt=%d "
                     "next_in_ms=%lld error=%s",
                     (long long)j->dl.id, j->dl.account, j->dl.webhook, attempt,
                     (long long)delay, log_q(error));
        }
    }
out:
    cfgref_put(j->cfg);
    free(j);
}

/* Build and submit one leased delivery; records failures itself. */
static void submit(struct delivery *d, struct cfgref *ref, const struct store_delivery *dl)
{
    const struct config *cfg = ref->cfg;
    const struct config_webhook *wh = find_webhook(cfg, dl->webhook);
    int64_t started = now_ms();
    if (!wh) {
        char error[300];
        snprintf(error, sizeof error, "webhook \"%s\" is not in the configuration", dl->webhook);
        record(d, dl, started, 0, error, "dead", STORE_D_DEAD, 0);
        return;
    }
    struct err e;
    size_t len = 0;
    char *body = event_body(d->st, cfg->state_dir, dl->msg_id, cfg->api.public_url,
                            wh->inline_attachments_max, &len, &e);
    if (!body) {
        /* the message is gone (purged): nothing to deliver, ever */
        char error[600];
        err_format(&e, error, sizeof error);
        record(d, dl, started, 0, error, "dead", STORE_D_DEAD, 0);
        return;
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        free(body);
        store_delivery_release(d->st, d->owner, dl->id, NULL, &e);
        return;
    }
    j->d = d;
    j->dl = *dl;
    j->cfg = cfgref_hold(ref);
    j->wh = wh;
    j->started = started;
    char id[WEBHOOK_ID_SIZE];
    webhook_id(dl->account, dl->uidl, dl->webhook, id, sizeof id);
    struct webhook_header hdrs[CONFIG_HEADERS_MAX];
    for (size_t i = 0; i < wh->header_count && i < CONFIG_HEADERS_MAX; i++) {
        hdrs[i].name = wh->headers[i].name;
        hdrs[i].value = wh->headers[i].value;
    }
    struct webhook_request req = {
        .url = wh->url,
        .id = id,
        .key = wh->key,
        .key_len = wh->key_len,
        .body = body,
        .body_len = len,
        .headers = hdrs,
        .n_headers = wh->header_count,
        .timeout_ms = wh->timeout_ms,
        .done = on_done,
    };
    if (webhook_sender_submit(d->sender, &req, j, &e) < 0) {
        char error[600];
        err_format(&e, error, sizeof error);
        cfgref_put(j->cfg);
        free(j);
        record(d, dl, started, 0, error, "rejected", STORE_D_FAILED,
               now_ms() + (wh->retry_count ? wh->retry_ms[0] : 60000));
    }
}

/* Nothing in flight: sleep until woken or wait_ms passed. */
static void idle_wait(struct delivery *d, int wait_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->lock);
    while (!d->woken)
        if (pthread_cond_timedwait(&d->cond, &d->lock, &ts) != 0)
            break;
    d->woken = false;
    pthread_mutex_unlock(&d->lock);
}

int delivery_step(struct delivery *d, struct cfgref *ref, int wait_ms, struct err *e)
{
    size_t room = DELIVERY_IN_FLIGHT * 4;
    size_t inflight = webhook_sender_in_flight(d->sender);
    pthread_mutex_lock(&d->lock);
    d->woken = false;
    pthread_mutex_unlock(&d->lock);
    if (ref && inflight < room / 2) {
        struct store_delivery batch[DELIVERY_IN_FLIGHT * 4];
        size_t n = 0;
        if (store_delivery_lease_due(d->st, d->owner, NULL, now_ms(), DELIVERY_LEASE_MS, batch,
                                     room - inflight, &n, e) < 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            submit(d, ref, &batch[i]);
    }
    if (inflight && now_ms() - d->renewed_at >= DELIVERY_LEASE_MS / 4) {
        struct err re;
        if (store_delivery_renew(d->st, d->owner, now_ms(), DELIVERY_LEASE_MS, NULL, &re) < 0)
            log_error("delivery_renew_failed", "error=%s", log_q(re.msg));
        d->renewed_at = now_ms();
    }
    if (webhook_sender_in_flight(d->sender) == 0) {
        if (wait_ms > 0)
            idle_wait(d, wait_ms);
        return 0;
    }
    /* outcomes recorded by the callbacks share one durable commit; a crash
     * before it only means those events go out again, with the same ids */
    bool batch = store_batch_begin(d->st, e) == 0;
    int n = webhook_sender_run(d->sender, wait_ms, e);
    struct err ce;
    if (batch && store_batch_commit(d->st, &ce) < 0) {
        log_error("delivery_commit_failed", "error=%s", log_q(ce.msg));
        store_batch_rollback(d->st);
    }
    return n;
}

size_t delivery_in_flight(const struct delivery *d)
{
    return webhook_sender_in_flight(d->sender);
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
    webhook_sender_free(d->sender); /* aborted jobs release their leases */
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->cond);
    free(d);
}
