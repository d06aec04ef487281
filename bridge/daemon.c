/* daemon — `pop3bridge run`; see include/daemon.h. */
#include "daemon.h"
#include "daemon_impl.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cfgref.h"
#include "cli.h"
#include "clock.h"
#include "committer.h"
#include "config.h"
#include "delivery.h"
#include "event.h"
#include "filter.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "notify.h"
#include "oauth2.h"
#include "poller.h"
#include "runtime.h"
#include "scheduler.h"
#include "share.h"
#include "store.h"
#include "util.h"
#include "webhook.h"

/* What the daemon's threads share, guarded by `lock`; `cond` is signalled
 * when an account's state or a request changes.  The lease keeper
 * (daemon_keeper.c) sees only a part of it, through `keeper`. */
static struct daemon_rt {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct cfgref *cfg;       /* current snapshot: take it with cfgref_get(&rt.cfg) */
    char config_path[4096];
    struct sched_account *accounts;
    size_t n_accounts;
    struct delivery *delivery;
    struct committer *committer;
    char owner[STORE_OWNER_MAX + 1]; /* this instance's id: the owner of its leases */
    int cancel_fd;            /* an eventfd written at stop: polls in progress end */
    bool once, stopping, delivery_done;
    uint64_t polls_ok, polls_failed, polls_skipped;
    /* several instances on one store: store_is_shared() once the store is
     * set up (kept here to be read under lock with the rest) */
    bool shared;
    int64_t lease_ms;         /* accounts' and (shared) deliveries' lease */
    size_t share_limit;       /* the most account leases this instance takes (share.h);
                                 0: no limit (one instance, or not yet counted) */
    /* the API's metrics hook, when the API runs; called with lock held */
    void (*on_poll)(const char *account, const struct err *e, const struct poller_result *r);
} daemon_rt;

static struct daemon_keeper keeper; /* daemon_rt as the lease keeper sees it */

/* ---- accounts in memory --------------------------------------------------- */

int64_t daemon_now_ms(void) { return poller_now_ms(); }

static bool rt_stopping(void *ctx);

/* the account of that name in daemon_rt.accounts, or NULL (lock held) */
static struct sched_account *daemon_find_acct(const char *name)
{
    return sched_find(daemon_rt.accounts, daemon_rt.n_accounts, name);
}

/* the account of that name in cfg, looked for first at index hint (the
 * account table follows the configuration's order: sync_accounts) */
static const struct config_account *cfg_account_at(const struct config *cfg, const char *name,
                                                   size_t hint)
{
    if (hint < cfg->account_count && strcmp(cfg->accounts[hint].name, name) == 0)
        return &cfg->accounts[hint];
    for (size_t i = 0; i < cfg->account_count; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            return &cfg->accounts[i];
    return NULL;
}

/* --once and an account whose saved backoff (s->backoff_until) has not
 * passed: true to poll it now all the same; false when the wait is the
 * server's LOGIN-DELAY or a refused login's (auth_error): then the account
 * is skipped (done for --once), said in a poll_skipped line with the time
 * it may be polled. */
static bool once_ignores_backoff(struct sched_account *a, const struct store_account_state *s)
{
    const char *reason = NULL;
    if (a->state == ACCOUNT_AUTH_ERROR)
        reason = "auth_error";
    else if (a->state == ACCOUNT_IDLE || a->last_error_code == ACCOUNT_ERR_LOGIN_DELAY)
        reason = "LOGIN-DELAY"; /* idle with a wait: the LOGIN-DELAY after a success */
    if (!reason)
        return true;
    char when[40];
    a->polled_once = true;
    daemon_rt.polls_skipped++;
    log_warn("poll_skipped", "account=%s reason=%s not_before=%s retry_in_s=%lld", a->name,
             log_q(reason), clock_rfc3339(s->backoff_until, 0, when, sizeof when),
             (long long)((s->backoff_until - daemon_now_ms() + 999) / 1000));
    return false;
}

/* (Re)build the account table from cfg, keeping state of accounts that stay.
 * Called with daemon_rt.lock held. */
static int sync_accounts(const struct config *cfg, struct store *st)
{
    struct sched_account *v = calloc(cfg->account_count + 1, sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < cfg->account_count; i++) {
        const struct config_account *a = &cfg->accounts[i];
        struct sched_account *old = daemon_find_acct(a->name);
        if (old) {
            v[i] = *old;
        } else {
            snprintf(v[i].name, sizeof v[i].name, "%s", a->name);
            v[i].state = ACCOUNT_IDLE;
            struct store_account_state s;
            struct err e;
            if (st && store_account_get(st, a->name, &s, &e) == 0) {
                v[i].last_attempt_at = s.last_attempt_at;
                v[i].last_success_at = s.last_success_at;
                snprintf(v[i].last_error, sizeof v[i].last_error, "%s", s.last_error);
                if (account_error_parse(s.last_error_code, &v[i].last_error_code) < 0)
                    v[i].last_error_code = ACCOUNT_ERR_NONE; /* a newer build's code */
                enum account_state saved;
                if (account_state_parse(s.state, &saved) == 0 && saved != ACCOUNT_POLLING)
                    v[i].state = saved;
                if (s.backoff_until > daemon_now_ms() && !(daemon_rt.once && once_ignores_backoff(&v[i], &s)))
                    v[i].next_at = v[i].not_before = s.backoff_until;
            }
        }
    }
    free(daemon_rt.accounts);
    daemon_rt.accounts = v;
    daemon_rt.n_accounts = cfg->account_count;
    return 0;
}

/* What is saved of an account's state. */
static void state_of(const struct sched_account *a, struct store_account_state *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->state, sizeof s->state, "%s", account_state_name(a->state));
    snprintf(s->last_error, sizeof s->last_error, "%s", a->last_error);
    snprintf(s->last_error_code, sizeof s->last_error_code, "%s",
             account_error_name(a->last_error_code));
    s->last_attempt_at = a->last_attempt_at;
    s->last_success_at = a->last_success_at;
    /* what forbids a poll (not_before): a backoff, or the server's
     * LOGIN-DELAY after a success (state idle); after a poll that failed for
     * want of an OAuth2 grant, nothing, so a restart after `oauth2 login`
     * polls at once */
    s->backoff_until = a->not_before;
}

static void save_state(struct store *st, const struct sched_account *a)
{
    struct store_account_state s;
    state_of(a, &s);
    struct err e;
    if (store_account_set(st, a->name, &s, &e) < 0)
        log_error("store_failed", "op=account_set account=%s error=%s", a->name, log_q(e.msg));
}

static void notify_delivery(void *ctx);

/* An account that went into auth_error: one "account.auth_error" event to
 * every webhook whose filter lists that type, once until a poll works again
 * (store_account_event_once), through the outbox like any event. */
static void auth_error_event(struct store *st, const struct config *cfg, const char *name,
                             const struct err *why, int64_t since)
{
    static const char type[] = "account.auth_error";
    const char *hooks[STORE_WEBHOOKS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < cfg->webhook_count && n < STORE_WEBHOOKS_MAX; i++)
        if (filter_wants_type(&cfg->webhooks[i], type))
            hooks[n++] = cfg->webhooks[i].name;
    if (n == 0)
        return;
    char when[40], error[STORE_ERROR_MAX + 1];
    err_format(why, error, sizeof error); /* as the account's last_error says it */
    /* the same shape as a message event's data: account is the name */
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "account", name);
    cJSON_AddStringToObject(d, "state", account_state_name(ACCOUNT_AUTH_ERROR));
    cJSON_AddStringToObject(d, "error", error);
    cJSON_AddStringToObject(d, "since", clock_rfc3339(since, 1, when, sizeof when));
    char *text = d ? cJSON_PrintUnformatted(d) : NULL;
    cJSON_Delete(d);
    struct err e;
    int64_t id = 0;
    if (!text)
        log_error("event_failed", "account=%s type=%s error=\"out of memory\"", name, type);
    else if (store_account_event_once(st, name, type, text, hooks, n, daemon_now_ms(), &id, &e) < 0)
        log_error("event_failed", "account=%s type=%s error=%s", name, type, log_q(e.msg));
    else if (id > 0) {
        log_info("account_event", "account=%s type=%s event=%lld webhooks=%zu", name, type,
                 (long long)id, n);
        notify_delivery(NULL);
    }
    cJSON_free(text);
}

/* ---- poll workers ------------------------------------------------------------ */

static void notify_delivery(void *ctx)
{
    (void)ctx;
    if (daemon_rt.delivery)
        delivery_wakeup(daemon_rt.delivery);
}

static bool once_polls_done(void)
{
    for (size_t i = 0; i < daemon_rt.n_accounts; i++)
        if (!daemon_rt.accounts[i].polled_once || daemon_rt.accounts[i].running)
            return false;
    return true;
}

/* Make sure this instance holds the account's lease before polling it
 * (lock not held on entry).  True: go on polling, lock not held.  False:
 * the account was put back (another instance holds it, or the store
 * failed), lock held. */
static bool take_lease(struct store *st, struct sched_account *a, size_t slot,
                       const struct sched_account *snapshot, enum account_state before,
                       int64_t attempt_before, bool *first)
{
    int64_t now = daemon_now_ms();
    if (snapshot->lease_until - now > daemon_rt.lease_ms / 2)
        return true; /* held, and renewed by the keeper */
    struct err e;
    err_clear(&e);
    /* a new lease only within this instance's share (share.h); one it holds
     * is renewed whatever the share */
    pthread_mutex_lock(&daemon_rt.lock);
    bool may = snapshot->lease_until != 0 || !daemon_rt.share_limit ||
               share_may_take_account(sched_leases_held(daemon_rt.accounts, daemon_rt.n_accounts),
                                      daemon_rt.share_limit, snapshot->free_turns);
    pthread_mutex_unlock(&daemon_rt.lock);
    int r = STORE_LEASE_LOST;
    struct store_account_state saved;
    bool have = false;
    if (may) {
        r = store_account_lease(st, snapshot->name, daemon_rt.owner, now, daemon_rt.lease_ms, &e);
        /* taken over from another instance: what it saved says whether this is
         * the account's first poll ("start": "new" must not ignore new mail) */
        have = r == 0 && store_account_get(st, snapshot->name, &saved, &e) == 0;
    }
    pthread_mutex_lock(&daemon_rt.lock);
    a = sched_find_at(daemon_rt.accounts, daemon_rt.n_accounts, snapshot->name, slot);
    if (r == 0) {
        if (a)
            a->lease_until = now + daemon_rt.lease_ms;
        if (have && saved.last_success_at > 0) {
            *first = false;
            if (a && saved.last_success_at > a->last_success_at)
                a->last_success_at = saved.last_success_at;
        }
        pthread_mutex_unlock(&daemon_rt.lock);
        return true;
    }
    if (r == STORE_LEASE_LOST)
        log_debug("account_leased_elsewhere", "account=%s share=%zu", snapshot->name,
                  daemon_rt.share_limit);
    else
        log_error("store_failed", "op=account_lease account=%s error=%s", snapshot->name,
                  log_q(e.msg));
    if (a) {
        struct cfgref *ref = cfgref_get(&daemon_rt.cfg);
        const struct config_account *ca = cfg_account_at(ref->cfg, snapshot->name, slot);
        a->running = false;
        a->lease_until = 0;
        a->polled_once = true; /* --once: not ours to poll */
        a->state = before;
        a->last_attempt_at = attempt_before; /* no poll was tried: not an attempt */
        a->next_at = now + (ca ? ca->poll_interval_ms : DAEMON_INTERVAL_UNKNOWN_MS);
        cfgref_put(ref);
    }
    pthread_cond_broadcast(&daemon_rt.cond);
    return false;
}

enum daemon_poll_outcome daemon_poll_outcome(int rc, bool stopping)
{
    return rc == 0 ? DAEMON_POLL_OK : stopping ? DAEMON_POLL_CANCELLED : DAEMON_POLL_FAILED;
}

int daemon_exit_code(bool thread_failed, bool once, uint64_t polls_failed,
                     uint64_t polls_skipped)
{
    return thread_failed               ? CLI_EXIT_LOCAL
           : once && polls_failed      ? DAEMON_EXIT_POLLS_FAILED
           : once && polls_skipped     ? DAEMON_EXIT_POLLS_SKIPPED
                                       : CLI_EXIT_OK;
}

/* After a poll of `name` (lock held on entry and on return): the account's
 * schedule, counters and log line from the result (rc, res, e), and its
 * state saved when a restart needs it (a shared store: with the poll, every
 * time; sess: the worker's room for the poll's session).  A poll cancelled by a stop changes
 * nothing but ends the account's run. */
static void after_poll(struct store *st, const char *name, size_t slot,
                       const struct config_account *ca, int rc, const struct poller_result *res,
                       struct err *e, bool first, enum account_state before, int64_t took_ms,
                       struct pollhist_session *sess)
{
    struct sched_account *a = sched_find_at(daemon_rt.accounts, daemon_rt.n_accounts, name, slot);
    struct sched_account snapshot;
    if (a && ca) {
        int64_t now = daemon_now_ms();
        int64_t interval = ca->poll_interval_ms;
        enum daemon_poll_outcome out = daemon_poll_outcome(rc, daemon_rt.stopping);
        if (out == DAEMON_POLL_OK) {
            sched_succeeded(a, now, interval, res->login_delay, res->more);
            daemon_rt.polls_ok++;
            log_info("poll_done",
                     "account=%s listed=%zu fetched=%zu bytes=%llu too_large=%zu ignored=%zu "
                     "deleted=%zu refused=%zu ms=%lld",
                     name, res->listed, res->fetched, (unsigned long long)res->bytes,
                     res->too_large, res->ignored, res->deleted, res->failed, (long long)took_ms);
        } else if (out == DAEMON_POLL_CANCELLED) {
            /* cancelled by a stop: no failure, no backoff, no state saved:
             * the next start polls it on schedule (the poll is in the
             * history all the same) */
            a->running = false;
            a->state = before;
            log_info("poll_cancelled", "account=%s ms=%lld error=%s", name,
                     (long long)took_ms, log_q(e->msg));
            if (daemon_rt.shared) {
                pthread_mutex_unlock(&daemon_rt.lock);
                (void)poller_share(st, name, &res->poll, NULL, sess);
                pthread_mutex_lock(&daemon_rt.lock);
            }
            return;
        } else {
            int64_t d = sched_failed(a, now, interval, res->login_delay, e);
            daemon_rt.polls_failed++;
            log_warn("poll_failed", "account=%s state=%s retry_in_s=%lld error=%s", name,
                     account_state_name(a->state), (long long)(d / 1000),
                     log_q(a->last_error));
        }
        if (daemon_rt.on_poll)
            daemon_rt.on_poll(name, rc == 0 ? NULL : e, rc == 0 ? res : NULL);
        /* a write only when something a restart needs changed, or
         * now and then for the times shown */
        bool save = sched_save_due(a, rc, first, now, clock_mono_ms());
        snapshot = *a;
        pthread_mutex_unlock(&daemon_rt.lock);
        if (daemon_rt.shared) {
            /* the other instances answer for the account from what is saved
             * (api_accounts.c): every poll's outcome, in the statement that
             * records the poll; alone only when that one failed */
            struct store_account_state s;
            state_of(&snapshot, &s);
            if (poller_share(st, name, &res->poll, &s, sess) < 0)
                save_state(st, &snapshot);
        } else if (save) {
            save_state(st, &snapshot);
        }
        pthread_mutex_lock(&daemon_rt.lock);
    } else if (a) {
        a->running = false;
    }
}

/* Idle poll workers: one of them (timer_held) sleeps on daemon_rt.cond
 * until the next account falls due or something changes; the others sleep
 * on workers_idle until that one takes an account and hands the turn on.
 * Before, every idle worker woke at each due time and at the end of every
 * poll only to find nothing for it: 2 x DAEMON_POLL_WORKERS wake-ups a
 * poll.  Both guarded by daemon_rt.lock. */
static pthread_cond_t workers_idle = PTHREAD_COND_INITIALIZER;
static bool timer_held;

static void *poll_worker(void *arg)
{
    (void)arg;
    struct err e;
    struct cfgref *ref = cfgref_get(&daemon_rt.cfg);
    struct store *st = store_open(ref->cfg->state_dir, &e);
    cfgref_put(ref);
    /* the room for a poll's session written to a shared store, once per worker */
    struct pollhist_session *sess = malloc(sizeof *sess);
    if (!st || !sess) {
        log_error("store_open_failed", "error=%s", log_q(st ? "out of memory" : e.msg));
        store_close(st);
        free(sess);
        return NULL;
    }
    pthread_mutex_lock(&daemon_rt.lock);
    while (!daemon_rt.stopping) {
        int64_t wait;
        struct sched_account *a = sched_pick(daemon_rt.accounts, daemon_rt.n_accounts, daemon_now_ms(), daemon_rt.once, &wait);
        if (!a) {
            if (daemon_rt.once && once_polls_done())
                break;
            if (timer_held) {
                pthread_cond_wait(&workers_idle, &daemon_rt.lock);
                continue;
            }
            timer_held = true;
            struct timespec ts;
            clock_deadline(&ts, wait); /* daemon_rt.cond follows CLOCK_MONOTONIC */
            pthread_cond_timedwait(&daemon_rt.cond, &daemon_rt.lock, &ts);
            timer_held = false;
            continue;
        }
        char name[sizeof a->name];
        snprintf(name, sizeof name, "%s", a->name);
        size_t slot = (size_t)(a - daemon_rt.accounts); /* where to look for it first */
        bool first = a->last_success_at == 0;
        enum account_state before = a->state;
        int64_t attempt_before = a->last_attempt_at;
        sched_begin(a, daemon_now_ms());
        struct sched_account snapshot = *a;
        pthread_mutex_unlock(&daemon_rt.lock);
        /* another idle worker waits for the next one; woken after the
         * unlock, it does not at once block on the lock this one holds
         * (one futex wait, wake and context switch less a poll) */
        pthread_cond_signal(&workers_idle);

        /* "polling" lives in memory only: a restart never resumes it */
        if (!take_lease(st, a, slot, &snapshot, before, attempt_before, &first))
            continue; /* another instance polls it; lock held again */
        ref = cfgref_get(&daemon_rt.cfg);
        const struct config_account *ca = cfg_account_at(ref->cfg, name, slot);
        struct poller_result res;
        int rc = -1;
        int64_t started = clock_mono_ms();
        if (ca) {
            log_debug("poll_start", "account=%s", name);
            rc = poller_poll(st, daemon_rt.committer, ca, first, daemon_rt.cancel_fd, &res, &e);
        }
        int64_t interval = ca ? ca->poll_interval_ms : DAEMON_INTERVAL_UNKNOWN_MS;
        int64_t took_ms = clock_mono_ms() - started;
        if (rc != 0 && ca && !rt_stopping(NULL)) {
            /* durable before the poll counts as done (run --once then delivers it) */
            enum account_state next;
            (void)sched_backoff_ms(&e, 1, interval, res.login_delay, &next);
            if (next == ACCOUNT_AUTH_ERROR)
                auth_error_event(st, ref->cfg, name, &e, snapshot.last_attempt_at);
        }

        pthread_mutex_lock(&daemon_rt.lock);
        after_poll(st, name, slot, ca, rc, &res, &e, first, before, took_ms, sess);
        cfgref_put(ref);
        /* this worker picks the next account itself; nobody else waits for a
         * poll's end, but --once for the last one */
        if (daemon_rt.once)
            pthread_cond_broadcast(&daemon_rt.cond);
    }
    /* stopping, or --once done: the idle workers end too */
    pthread_cond_broadcast(&workers_idle);
    pthread_cond_broadcast(&daemon_rt.cond);
    pthread_mutex_unlock(&daemon_rt.lock);
    store_close(st);
    free(sess);
    return NULL;
}

/* ---- delivery thread ------------------------------------------------------------ */

static void *delivery_thread(void *arg)
{
    struct store *st = arg;
    struct err e;
    int64_t last_purge = 0;
    int64_t stop_deadline = 0;
    for (;;) {
        pthread_mutex_lock(&daemon_rt.lock);
        bool stopping = daemon_rt.stopping;
        bool once_done = daemon_rt.once && once_polls_done();
        pthread_mutex_unlock(&daemon_rt.lock);
        if (stopping && !stop_deadline)
            stop_deadline = daemon_now_ms() + DAEMON_DRAIN_MS;
        if (stopping && (delivery_in_flight(daemon_rt.delivery) == 0 || daemon_now_ms() > stop_deadline))
            break;
        struct cfgref *ref = stopping ? NULL : cfgref_get(&daemon_rt.cfg); /* draining: no new work */
        /* idle, the step sleeps until a webhook's next check (at most
         * DELIVERY_RECHECK_MS) unless woken; --once keeps its short turns,
         * which notice when the polls are over */
        int wait = daemon_rt.once ? DELIVERY_BUSY_WAIT_MS : DELIVERY_RECHECK_MS;
        if (delivery_step(daemon_rt.delivery, ref, wait, &e) < 0)
            log_error("delivery_failed", "error=%s", log_q(e.msg));
        if (ref && daemon_now_ms() - last_purge > DAEMON_PURGE_EVERY_MS) {
            int64_t purged = 0;
            last_purge = daemon_now_ms();
            if (store_purge_bodies(st, ref->cfg->retention_ms, last_purge, DAEMON_PURGE_MAX,
                                   &purged, &e) < 0)
                log_error("purge_failed", "error=%s", log_q(e.msg));
            else if (purged)
                log_info("purged", "bodies=%lld", (long long)purged);
            if (store_purge_events(st, ref->cfg->retention_ms, last_purge, DAEMON_PURGE_MAX,
                                   &purged, &e) < 0)
                log_error("purge_failed", "error=%s", log_q(e.msg));
            else if (purged)
                log_info("purged", "events=%lld", (long long)purged);
        }
        cfgref_put(ref);
        if (once_done && delivery_in_flight(daemon_rt.delivery) == 0) {
            int64_t next = 0;
            if (store_delivery_next_due(st, daemon_now_ms(), &next, &e) < 0 || next == 0 ||
                next > daemon_now_ms() + DAEMON_ONCE_WAIT_MS)
                break;
        }
    }
    pthread_mutex_lock(&daemon_rt.lock);
    daemon_rt.delivery_done = true;
    pthread_cond_broadcast(&daemon_rt.cond);
    pthread_mutex_unlock(&daemon_rt.lock);
    return NULL;
}

/* ---- reload ------------------------------------------------------------------------ */

static void reload(const char *path, struct store *st)
{
    struct config_diag d = {0};
    struct config *cfg = config_load(path, &d);
    if (!cfg) {
        for (size_t i = 0; i < d.count; i++)
            log_error("config_invalid", "problem=%s", log_q(d.lines[i]));
        log_error("reload_failed", "config=%s keeping=%s", log_q(path),
                  log_q("the configuration loaded before"));
        config_diag_free(&d);
        return;
    }
    config_diag_free(&d);
    struct cfgref *r = cfgref_new(cfg);
    if (!r) {
        config_free(&cfg);
        return;
    }
    pthread_mutex_lock(&daemon_rt.lock);
    if (strcmp(daemon_rt.cfg->cfg->state_dir, cfg->state_dir) != 0)
        log_warn("reload_state_dir", "note=%s",
                 log_q("state_dir changed: takes effect at the next start"));
    sync_accounts(cfg, st);
    log_set_level((enum log_level)cfg->log_level);
    log_set_format((enum log_format)cfg->log_format);
    pthread_mutex_unlock(&daemon_rt.lock);
    cfgref_swap(&daemon_rt.cfg, r);
    struct err e;
    if (store_webhooks_enable_all(st, &e) < 0)
        log_error("store_failed", "op=webhooks_enable_all error=%s", log_q(e.msg));
    pthread_cond_broadcast(&daemon_rt.cond);
    delivery_wakeup(daemon_rt.delivery);
    log_info("reloaded", "accounts=%zu webhooks=%zu", cfg->account_count, cfg->webhook_count);
}

/* STATUS= for the service manager: the accounts' states and the deliveries
 * waiting, at most every 2 s (a count of the outbox is a query). */
static void report_status(struct store *st)
{
    static int64_t last;
    if (!notify_enabled() || daemon_now_ms() - last < 2000)
        return;
    last = daemon_now_ms();
    size_t by_state[ACCOUNT_STATES] = {0}, total;
    pthread_mutex_lock(&daemon_rt.lock);
    total = daemon_rt.n_accounts;
    for (size_t i = 0; i < daemon_rt.n_accounts; i++)
        if ((unsigned)daemon_rt.accounts[i].state < ACCOUNT_STATES)
            by_state[daemon_rt.accounts[i].state]++;
    pthread_mutex_unlock(&daemon_rt.lock);
    char states[160] = "";
    size_t o = 0;
    for (int i = 0; i < ACCOUNT_STATES; i++) {
        int n = by_state[i] ? snprintf(states + o, sizeof states - o, "%s%zu %s", o ? ", " : "",
                                       by_state[i], account_state_name((enum account_state)i))
                            : 0;
        if (n > 0 && (size_t)n < sizeof states - o)
            o += (size_t)n;
    }
    struct store_queue_counts q = {0};
    struct err e;
    if (store_delivery_counts(st, &q, &e) < 0)
        q.pending = q.failed = -1;
    notify_status("%zu account%s%s%s%s; deliveries: %lld pending, %lld failed", total,
                  total == 1 ? "" : "s", o ? " (" : "", states, o ? ")" : "",
                  (long long)q.pending, (long long)q.failed);
}

static void host_name(char *host, size_t size)
{
    if (gethostname(host, size) < 0 || !host[0])
        snprintf(host, size, "localhost");
    host[size - 1] = '\0';
}

int daemon_store_setup(const struct config *cfg, struct err *e)
{
    struct store_target t = {
        .url = cfg->store.url,
        .password = cfg->store.password.value,
        .pool = (unsigned)cfg->store.pool,
    };
    return store_setup(&t, e);
}

/* The heartbeat of a shared store: this instance's row, and its account
 * leases renewed.  Every quarter of the lease (main thread). */
static void heartbeat(struct store *st, int64_t started_at, bool force)
{
    static int64_t last;
    int64_t now = daemon_now_ms();
    if (!force && now - last < daemon_rt.lease_ms / 4)
        return;
    last = now;
    struct store_instance in = {.started_at = started_at, .heartbeat_at = now};
    snprintf(in.id, sizeof in.id, "%s", daemon_rt.owner);
    host_name(in.host, sizeof in.host);
    struct cfgref *ref = cfgref_get(&daemon_rt.cfg);
    snprintf(in.public_url, sizeof in.public_url, "%s",
             ref->cfg->api.public_url ? ref->cfg->api.public_url : "");
    cfgref_put(ref);
    struct err e;
    if (store_instance_beat(st, &in, &e) < 0)
        log_warn("heartbeat_failed", "error=%s", log_q(e.msg));
}

/* ---- the runtime interface, for the HTTP API ------------------------------------------ */

static bool rt_stopping(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&daemon_rt.lock);
    bool stopping = daemon_rt.stopping;
    pthread_mutex_unlock(&daemon_rt.lock);
    return stopping;
}

static struct cfgref *rt_config(void *ctx)
{
    (void)ctx;
    return cfgref_get(&daemon_rt.cfg);
}

static void rt_wake_delivery(void *ctx)
{
    (void)ctx;
    if (daemon_rt.delivery)
        delivery_wakeup(daemon_rt.delivery);
}

static int rt_account(void *ctx, const char *name, struct runtime_account *out)
{
    (void)ctx;
    pthread_mutex_lock(&daemon_rt.lock);
    const struct sched_account *a = daemon_find_acct(name);
    if (a) {
        out->state = a->state;
        snprintf(out->last_error, sizeof out->last_error, "%s", a->last_error);
        out->last_error_code = a->last_error_code;
        out->last_attempt_at = a->last_attempt_at;
        out->last_success_at = a->last_success_at;
        out->next_at = a->next_at;
        out->held = a->lease_until > daemon_now_ms();
    }
    pthread_mutex_unlock(&daemon_rt.lock);
    return a ? 0 : -1;
}

/* A poll now, unless the account's backoff or the server's LOGIN-DELAY
 * forbids one yet. */
static enum runtime_poll rt_poll_now(void *ctx, const char *name, int64_t *retry_after_s)
{
    (void)ctx;
    enum runtime_poll r = RUNTIME_POLL_UNKNOWN;
    pthread_mutex_lock(&daemon_rt.lock);
    struct sched_account *a = daemon_find_acct(name);
    if (a && sched_request(a, daemon_now_ms(), retry_after_s) != 0) {
        r = RUNTIME_POLL_BACKOFF;
    } else if (a) {
        r = RUNTIME_POLL_QUEUED;
        pthread_cond_broadcast(&daemon_rt.cond);
    }
    pthread_mutex_unlock(&daemon_rt.lock);
    return r;
}

static const struct runtime_ops rt_ops = {
    .stopping = rt_stopping,
    .config = rt_config,
    .wake_delivery = rt_wake_delivery,
    .account = rt_account,
    .poll_now = rt_poll_now,
};
static const struct runtime rt_iface = {&rt_ops, NULL};

/* Start the HTTP API with its metrics hooks; NULL with e. */
static struct api *start_api(struct err *e)
{
    pthread_mutex_lock(&daemon_rt.lock);
    daemon_rt.on_poll = metrics_on_poll;
    pthread_mutex_unlock(&daemon_rt.lock);
    delivery_set_observer(daemon_rt.delivery, metrics_on_delivery, NULL);
    struct api *a = api_start(&rt_iface, e);
    if (!a) {
        pthread_mutex_lock(&daemon_rt.lock);
        daemon_rt.on_poll = NULL;
        pthread_mutex_unlock(&daemon_rt.lock);
        delivery_set_observer(daemon_rt.delivery, NULL, NULL);
    }
    return a;
}

static void stop_api(struct api **a)
{
    if (!*a)
        return;
    api_stop(a);
    pthread_mutex_lock(&daemon_rt.lock);
    daemon_rt.on_poll = NULL;
    pthread_mutex_unlock(&daemon_rt.lock);
    delivery_set_observer(daemon_rt.delivery, NULL, NULL);
}

/* ---- main ----------------------------------------------------------------------------- */

/* What daemon_main() holds from its start-up to its stop. */
struct run {
    const char *path;
    bool once;
    sigset_t signals;          /* TERM, INT, HUP: blocked from the first line on */
    struct store *st;          /* the main thread's handle */
    struct store *dst;         /* the delivery thread's */
    struct store *kst;         /* the lease keeper's */
    struct api *api;
    struct oauth2_keeper *keeper;
    pthread_t workers[DAEMON_POLL_WORKERS], dthread, kthread;
    size_t nworkers;
    bool dstarted, kstarted;
    bool stop_now;             /* SIGTERM/SIGINT came during start-up */
    int terr;                  /* a thread that could not be started */
    int64_t started_at;
};

/* Everything daemon_main() set up before the threads, released. */
static void release(struct store *st, struct store *dst)
{
    if (daemon_rt.cancel_fd > 0)
        close(daemon_rt.cancel_fd);
    daemon_rt.cancel_fd = 0;
    committer_stop(&daemon_rt.committer);
    delivery_free(daemon_rt.delivery);
    daemon_rt.delivery = NULL;
    store_close(dst);
    store_close(st);
    store_teardown();
    cfgref_put(daemon_rt.cfg);
    daemon_rt.cfg = NULL;
    free(daemon_rt.accounts);
    daemon_rt.accounts = NULL;
    message_global_cleanup();
    webhook_global_cleanup();
}

static void usage(FILE *out)
{
    fputs("usage: pop3bridge run --config FILE [--once]\n"
          "  runs until SIGTERM/SIGINT; SIGHUP reloads the configuration\n"
          "  --once   poll every account once, deliver what is due, exit\n"
          "  --allow-insecure-permissions   warn about, instead of refusing, a configuration,\n"
          "           secret file or state_dir that other users may read (pop3bridge(8))\n",
          out);
}

/* The command line into r.  -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, struct run *r)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"once", no_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': r->path = optarg; break;
        case 'o': r->once = true; break;
        case 'h': usage(stdout); return CLI_EXIT_OK;
        default:
            fprintf(stderr, "pop3bridge: Usage: unknown or incomplete option \"%s\"\n",
                    argv[optind - 1]);
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (!r->path || optind != argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    return -1;
}

/* Signals go to the main thread only, taken by sigtimedwait: blocked before
 * anything else, so that one sent during start-up waits instead of ending
 * the process half-way (threads, libraries' included, inherit the mask). */
static void block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

/* A SIGTERM or SIGINT waiting since start-up began: taken, logged, true.
 * A SIGHUP stays pending for the main loop. */
static bool stop_requested(void)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    struct timespec zero = {0, 0};
    int sig = sigtimedwait(&stop, NULL, &zero);
    if (sig != SIGTERM && sig != SIGINT)
        return false;
    log_info("stopping", "signal=%s during=start-up", sig == SIGTERM ? "TERM" : "INT");
    return true;
}

static void print_err(const struct err *e)
{
    char line[600];
    err_format(e, line, sizeof line);
    fprintf(stderr, "pop3bridge: %s\n", line);
}

/* Step 1: the libraries, the store backend and two handles (the main
 * thread's and the delivery thread's).  -1, or the exit code with cfg freed. */
static int open_stores(struct run *r, struct config **cfg)
{
    struct err e;
    if (webhook_global_init(&e) < 0) {
        fprintf(stderr, "pop3bridge: Internal: %s\n", e.msg);
        config_free(cfg);
        return CLI_EXIT_LOCAL;
    }
    if (daemon_store_setup(*cfg, &e) < 0) {
        print_err(&e);
        config_free(cfg);
        webhook_global_cleanup();
        return CLI_EXIT_LOCAL;
    }
    r->st = store_open((*cfg)->state_dir, &e);
    r->dst = r->st ? store_open((*cfg)->state_dir, &e) : NULL;
    if (!r->st || !r->dst) {
        print_err(&e);
        store_close(r->st);
        store_teardown();
        config_free(cfg);
        webhook_global_cleanup();
        return CLI_EXIT_LOCAL;
    }
    return -1;
}

/* Step 2: the shared state (rt), which takes cfg over: the account table,
 * webhooks enabled, this instance's id and lease, the cancel eventfd, the
 * leases a previous run under this id held given back. */
static void init_runtime(struct run *r, struct config *cfg)
{
    struct err e;
    pthread_mutex_init(&daemon_rt.lock, NULL);
    clock_cond_init(&daemon_rt.cond);
    daemon_rt.once = r->once;
    daemon_rt.cfg = cfgref_new(cfg);
    snprintf(daemon_rt.config_path, sizeof daemon_rt.config_path, "%s", r->path);
    sync_accounts(cfg, r->st);
    if (store_webhooks_enable_all(r->st, &e) < 0)
        log_error("store_failed", "op=webhooks_enable_all error=%s", log_q(e.msg));
    config_instance_id(cfg, daemon_rt.owner, sizeof daemon_rt.owner);
    poller_set_instance(daemon_rt.owner);
    daemon_rt.shared = store_is_shared(); /* store_setup chose it */
    /* with PostgreSQL the failover time is the configuration's store.lease */
    daemon_rt.lease_ms = daemon_rt.shared ? cfg->store.lease_ms : DAEMON_ACCOUNT_LEASE_MS;
    daemon_rt.cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (daemon_rt.cancel_fd < 0) {
        log_warn("eventfd_failed", "error=%s note=%s", log_q(strerror(errno)),
                 log_q("polls in progress finish before a stop"));
        daemon_rt.cancel_fd = 0;
    }
    keeper = (struct daemon_keeper){
        .lock = &daemon_rt.lock,
        .cond = &daemon_rt.cond,
        .cfg = &daemon_rt.cfg,
        .accounts = &daemon_rt.accounts,
        .n_accounts = &daemon_rt.n_accounts,
        .share_limit = &daemon_rt.share_limit,
        .stopping = &daemon_rt.stopping,
        .owner = daemon_rt.owner,
        .lease_ms = daemon_rt.lease_ms,
        .share = daemon_rt.shared && !daemon_rt.once,
    };
    int64_t released = 0;
    if (store_account_release(r->st, daemon_rt.owner, &released, &e) < 0)
        log_error("store_failed", "op=account_release error=%s", log_q(e.msg));
    else if (released)
        log_info("account_leases_released", "count=%lld", (long long)released);
}

/* Step 3: the delivery worker, the lease keeper's store handle, the
 * committer, the first heartbeat.  -1, or the exit code with everything
 * released. */
static int start_delivery(struct run *r, const struct config *cfg)
{
    struct err e;
    daemon_rt.delivery = delivery_new(r->dst, daemon_rt.owner, &e);
    r->kst = daemon_rt.delivery ? store_open(cfg->state_dir, &e) : NULL;
    keeper.st = r->kst;
    if (!daemon_rt.delivery || !r->kst) {
        fprintf(stderr, "pop3bridge: Internal: %s\n", e.msg);
        release(r->st, r->dst);
        return CLI_EXIT_LOCAL;
    }
    daemon_rt.committer = committer_start(cfg->state_dir, notify_delivery, NULL, &e);
    if (!daemon_rt.committer) {
        fprintf(stderr, "pop3bridge: Internal: %s\n", e.msg);
        release(r->st, r->dst);
        store_close(r->kst);
        return CLI_EXIT_LOCAL;
    }
    r->started_at = daemon_now_ms();
    heartbeat(r->st, r->started_at, true);
    if (keeper.share) {
        int64_t ignored; /* this instance's share before its first poll */
        (void)daemon_share_turn(&keeper, r->st, &ignored);
    }
    if (daemon_rt.shared) {
        delivery_set_lease_ms(daemon_rt.delivery, daemon_rt.lease_ms);
        log_info("store_shared", "backend=%s target=%s instance=%s lease_s=%lld",
                 store_backend(), log_q(store_target_name()), log_q(daemon_rt.owner),
                 (long long)(daemon_rt.lease_ms / 1000));
    }
    return -1;
}

/* Step 4 (not with --once): the HTTP API.  -1, or the exit code with
 * everything released. */
static int start_service_api(struct run *r)
{
    struct err e;
    if (r->once || (r->api = start_api(&e)))
        return -1;
    print_err(&e);
    release(r->st, r->dst);
    store_close(r->kst);
    return e.kind == ERR_CONN ? CLI_EXIT_CONN : CLI_EXIT_LOCAL;
}

/* Step 5: the OAuth2 keeper (not with --once), the poll workers, the
 * delivery thread, the lease keeper.  A thread that cannot start leaves
 * r->terr set: the bridge stops. */
static void start_threads(struct run *r, size_t account_count)
{
    struct err e;
    r->keeper = r->once ? NULL : oauth2_keeper_start(&daemon_rt.cfg, &e);
    if (!r->once && !r->keeper)
        log_error("oauth2_keeper_failed", "error=%s", log_q(e.msg));
    size_t want = MIN((size_t)DAEMON_POLL_WORKERS, MAX(account_count, (size_t)1));
    while (r->nworkers < want &&
           (r->terr = pthread_create(&r->workers[r->nworkers], NULL, poll_worker, NULL)) == 0)
        r->nworkers++;
    if (r->terr == 0 && (r->terr = pthread_create(&r->dthread, NULL, delivery_thread, r->dst)) == 0)
        r->dstarted = true;
    if (r->terr == 0 && (r->terr = pthread_create(&r->kthread, NULL, daemon_lease_keeper, &keeper)) == 0)
        r->kstarted = true;
    if (r->terr != 0)
        log_error("thread_failed", "error=%s note=%s", log_q(strerror(r->terr)),
                  log_q("cannot start the bridge's threads: stopping"));
}

/* How long the main loop sleeps between turns when no signal comes: short
 * with --once (it ends as soon as the work is done), else DAEMON_TICK_MS,
 * or a quarter of the watchdog period or of the heartbeat's (a quarter of
 * the lease) when that is shorter. */
static struct timespec main_tick(bool once)
{
    int64_t ms = once ? DAEMON_ONCE_TICK_MS : DAEMON_TICK_MS;
    int64_t wd = notify_watchdog_ms();
    if (wd > 0 && wd / 4 < ms)
        ms = wd / 4;
    if (daemon_rt.lease_ms > 0 && daemon_rt.lease_ms / 16 < ms)
        ms = daemon_rt.lease_ms / 16;
    if (ms < 1)
        ms = 1;
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    return t;
}

/* Step 6: signals, the watchdog, the status line and the heartbeat every
 * turn (main_tick), until SIGTERM/SIGINT, or --once is done. */
static void main_loop(struct run *r)
{
    struct timespec tick = main_tick(daemon_rt.once);
    while (r->terr == 0 && !r->stop_now) {
        int sig = sigtimedwait(&r->signals, NULL, &tick);
        if (sig == SIGHUP) {
            log_info("reload", "config=%s", log_q(r->path));
            notify_reloading();
            reload(r->path, r->st);
            notify_ready();
        } else if (sig == SIGTERM || sig == SIGINT) {
            log_info("stopping", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
            break;
        }
        pthread_mutex_lock(&daemon_rt.lock);
        bool done = daemon_rt.once && daemon_rt.delivery_done;
        pthread_mutex_unlock(&daemon_rt.lock);
        notify_watchdog(); /* this loop turns every tick while the scheduler's lock is free */
        report_status(r->st);
        heartbeat(r->st, r->started_at, false);
        if (done)
            break;
    }
}

/* Step 7: polls in progress cancelled, the threads joined, the leases and
 * the heartbeat row given back, the API stopped, everything released.  The
 * exit code. */
static int shut_down(struct run *r)
{
    struct err e;
    notify_stopping();
    /* stopping first: a poll that ends for the cancel below is known as cancelled */
    pthread_mutex_lock(&daemon_rt.lock);
    daemon_rt.stopping = true;
    pthread_cond_broadcast(&daemon_rt.cond);
    pthread_mutex_unlock(&daemon_rt.lock);
    if (daemon_rt.cancel_fd > 0) {
        uint64_t one = 1; /* every poll still waiting on its server ends now */
        if (write(daemon_rt.cancel_fd, &one, sizeof one) < 0)
            log_warn("cancel_failed", "error=%s", log_q(strerror(errno)));
    }
    delivery_wakeup(daemon_rt.delivery);
    for (size_t i = 0; i < r->nworkers; i++)
        pthread_join(r->workers[i], NULL);
    if (r->dstarted)
        pthread_join(r->dthread, NULL);
    if (r->kstarted)
        pthread_join(r->kthread, NULL);
    int64_t released = 0;
    if (store_account_release(r->st, daemon_rt.owner, &released, &e) < 0)
        log_error("store_failed", "op=account_release error=%s", log_q(e.msg));
    oauth2_keeper_stop(&r->keeper);
    stop_api(&r->api);
    if (store_instance_remove(r->st, daemon_rt.owner, &e) < 0)
        log_warn("store_failed", "op=instance_stop error=%s", log_q(e.msg));

    struct delivery_stats ds;
    delivery_stats(daemon_rt.delivery, &ds);
    log_info("stopped",
             "polls_ok=%llu polls_failed=%llu polls_skipped=%llu delivered=%llu retried=%llu "
             "dead=%llu",
             (unsigned long long)daemon_rt.polls_ok, (unsigned long long)daemon_rt.polls_failed,
             (unsigned long long)daemon_rt.polls_skipped,
             (unsigned long long)ds.delivered, (unsigned long long)ds.retried,
             (unsigned long long)ds.dead);
    int rc = daemon_exit_code(r->terr != 0, daemon_rt.once, daemon_rt.polls_failed, daemon_rt.polls_skipped);
    release(r->st, r->dst);
    store_close(r->kst);
    return rc;
}

/* A SIGTERM or SIGINT during start-up: taken between the steps, it ends
 * start-up there; once the store is open it takes the same stop as later
 * (shut_down), so nothing is left half-written and the exit code is 0. */
int daemon_main(int argc, char **argv)
{
    struct run r = {0};
    int rc = parse_args(argc, argv, &r);
    if (rc >= 0)
        return rc;
    block_signals(&r.signals);
    /* whatever the bridge creates (the database, its WAL, spool files) is
     * for its own user only, even in a state_dir that exists with 0755 */
    umask(077);
    struct config *cfg = config_load_or_print(r.path, false, stderr);
    if (!cfg)
        return CLI_EXIT_USAGE;
    log_set_level((enum log_level)cfg->log_level);
    log_set_format((enum log_format)cfg->log_format);
    if (stop_requested()) {
        config_free(&cfg);
        return CLI_EXIT_OK;
    }
    if ((rc = open_stores(&r, &cfg)) >= 0)
        return rc;
    init_runtime(&r, cfg); /* daemon_rt.cfg owns cfg from here on */
    if ((rc = start_delivery(&r, cfg)) >= 0)
        return rc;
    r.stop_now = stop_requested();
    if (!r.stop_now && (rc = start_service_api(&r)) >= 0)
        return rc;
    if (!r.stop_now) {
        log_info("started", "version=%s accounts=%zu webhooks=%zu once=%s", POP3BRIDGE_VERSION,
                 cfg->account_count, cfg->webhook_count, r.once ? "yes" : "no");
        notify_ready(); /* the store is open, the API listens, every account is scheduled */
        r.stop_now = stop_requested();
    }
    if (!r.stop_now)
        start_threads(&r, cfg->account_count);
    main_loop(&r);
    return shut_down(&r);
}
