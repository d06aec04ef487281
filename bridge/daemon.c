/* daemon — `pop3bridge run`; see include/daemon.h. */
#include "daemon.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cfgref.h"
#include "cli.h"
#include "config.h"
#include "delivery.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "notify.h"
#include "oauth2.h"
#include "poller.h"
#include "runtime.h"
#include "store.h"
#include "webhook.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

int64_t daemon_backoff_ms(const struct err *e, int fails, int64_t interval_ms,
                          long login_delay_s, enum account_state *state)
{
    int shift = fails < 1 ? 0 : fails - 1 > 10 ? 10 : fails - 1;
    int64_t d;
    if (e->code == ERR_CODE_LOGIN_DELAY) {
        *state = ACCOUNT_BACKOFF; /* the server's minimum between logins */
        d = MAX(interval_ms, login_delay_s > 0 ? login_delay_s * 1000 : 300000);
    } else if (e->code == ERR_CODE_NO_GRANT) {
        *state = ACCOUNT_AUTH_ERROR; /* nothing is sent until `oauth2 login`: look each interval */
        d = interval_ms;
    } else if (e->kind == ERR_AUTH && !err_is_temporary(e)) {
        *state = ACCOUNT_AUTH_ERROR; /* retrying a refused login quickly risks a lockout */
        d = MIN((int64_t)15 * 60000 << shift, (int64_t)6 * 3600000);
    } else if (err_is_temporary(e) || e->kind == ERR_TLS) {
        *state = ACCOUNT_BACKOFF;
        d = MIN((int64_t)30000 << shift, MAX(interval_ms, (int64_t)15 * 60000));
    } else {
        *state = ACCOUNT_ERROR;
        d = MIN((int64_t)60000 << shift, (int64_t)3600000);
    }
    return d;
}

/* ---- accounts in memory --------------------------------------------------- */

static int64_t now_ms(void) { return poller_now_ms(); }

struct rt_account {
    char name[CONFIG_NAME_MAX + 1];
    enum account_state state;
    char last_error[STORE_ERROR_MAX + 1]; /* "" if the last poll succeeded */
    int64_t last_attempt_at;  /* Unix ms, 0 = never */
    int64_t last_success_at;
    int64_t next_at;          /* next poll due (Unix ms) */
    int64_t not_before;       /* no poll before (Unix ms): backoff or LOGIN-DELAY, even
                                 when one is requested */
    int fails;                /* failed polls in a row */
    bool running;             /* a worker is polling it now */
    bool requested;           /* "poll now" was asked */
    bool polled_once;         /* for --once */
};

/* What the daemon's threads share, guarded by `lock`; `cond` is signalled
 * when an account's state or a request changes. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct cfgref *cfg;       /* current snapshot: take it with cfgref_get(&rt.cfg) */
    char config_path[4096];
    struct rt_account *accounts;
    size_t n_accounts;
    struct delivery *delivery;
    bool once, stopping, delivery_done;
    uint64_t polls_ok, polls_failed;
    /* several instances on one store (PostgreSQL): account leases */
    bool shared;
    char owner[STORE_OWNER_MAX + 1]; /* this instance's id */
    int64_t lease_ms;
    /* the API's metrics hook, when the API runs; called with lock held */
    void (*on_poll)(const char *account, const struct err *e, const struct poller_result *r);
} rt;

static struct rt_account *find_acct(const char *name)
{
    for (size_t i = 0; i < rt.n_accounts; i++)
        if (strcmp(rt.accounts[i].name, name) == 0)
            return &rt.accounts[i];
    return NULL;
}

static const struct config_account *cfg_account(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->account_count; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            return &cfg->accounts[i];
    return NULL;
}

/* (Re)build the account table from cfg, keeping state of accounts that stay.
 * Called with rt.lock held. */
static int sync_accounts(const struct config *cfg, struct store *st)
{
    struct rt_account *v = calloc(cfg->account_count + 1, sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < cfg->account_count; i++) {
        const struct config_account *a = &cfg->accounts[i];
        struct rt_account *old = find_acct(a->name);
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
                if (s.backoff_until > now_ms())
                    v[i].next_at = v[i].not_before = s.backoff_until;
                enum account_state saved;
                if (account_state_parse(s.state, &saved) == 0 && saved != ACCOUNT_POLLING)
                    v[i].state = saved;
            }
        }
    }
    free(rt.accounts);
    rt.accounts = v;
    rt.n_accounts = cfg->account_count;
    return 0;
}

static void save_state(struct store *st, const struct rt_account *a)
{
    struct store_account_state s = {0};
    snprintf(s.state, sizeof s.state, "%s", account_state_name(a->state));
    snprintf(s.last_error, sizeof s.last_error, "%s", a->last_error);
    s.last_attempt_at = a->last_attempt_at;
    s.last_success_at = a->last_success_at;
    s.backoff_until = a->state == ACCOUNT_IDLE ? 0 : a->next_at;
    struct err e;
    if (store_account_set(st, a->name, &s, &e) < 0)
        log_error("store_failed", "op=account_set account=%s error=%s", a->name, log_q(e.msg));
}

/* ---- poll workers ------------------------------------------------------------ */

static void notify_delivery(void *ctx)
{
    (void)ctx;
    if (rt.delivery)
        delivery_wakeup(rt.delivery);
}

/* Pick the next due account (lock held); NULL if none.  *wait_ms gets the
 * time until the next one is due. */
static struct rt_account *next_due(int64_t now, int64_t *wait_ms)
{
    struct rt_account *best = NULL;
    *wait_ms = 1000;
    for (size_t i = 0; i < rt.n_accounts; i++) {
        struct rt_account *a = &rt.accounts[i];
        if (a->running || (rt.once && a->polled_once))
            continue;
        int64_t due = a->requested ? a->not_before : a->next_at;
        if (due <= now) {
            if (!best || due < (best->requested ? best->not_before : best->next_at))
                best = a;
        } else if (due - now < *wait_ms) {
            *wait_ms = due - now;
        }
    }
    return best;
}

static bool once_polls_done(void)
{
    for (size_t i = 0; i < rt.n_accounts; i++)
        if (!rt.accounts[i].polled_once || rt.accounts[i].running)
            return false;
    return true;
}

/* Shared store: take the account's lease before polling it (rt.lock held,
 * a->running set; the lock is dropped meanwhile).  The account, refreshed
 * from what the last poller (maybe another instance) saved, or NULL when
 * the lease was not taken: then it is scheduled again when the lease
 * expires or the account falls due, with a little jitter. */
static struct rt_account *lease_account(struct store *st, struct rt_account *a, const char *name,
                                        unsigned *seed)
{
    bool forced = a->requested;
    pthread_mutex_unlock(&rt.lock);
    struct err e;
    int64_t next = 0;
    struct store_account_state s;
    bool have = false;
    int lr = store_account_lease(st, name, rt.owner, now_ms(), rt.lease_ms, forced, &next, &e);
    if (lr == 0)
        have = store_account_get(st, name, &s, &e) == 0;
    else if (lr < 0)
        log_warn("account_lease_failed", "account=%s error=%s", name, log_q(e.msg));
    pthread_mutex_lock(&rt.lock);
    a = find_acct(name);
    if (!a) { /* removed by a reload meanwhile */
        if (lr == 0) {
            pthread_mutex_unlock(&rt.lock);
            store_account_release(st, name, rt.owner, -1, &e);
            pthread_mutex_lock(&rt.lock);
        }
        return NULL;
    }
    if (lr != 0) {
        int64_t now = now_ms();
        a->running = false;
        a->requested = false;
        a->next_at = (lr == STORE_LEASE_LOST ? MAX(next, now + 100)
                                             : now + DAEMON_LEASE_ERROR_RETRY_MS) +
                     rand_r(seed) % DAEMON_LEASE_JITTER_MS;
        if (rt.once)
            a->polled_once = true; /* another instance polls it */
        pthread_cond_broadcast(&rt.cond);
        return NULL;
    }
    if (have && s.last_success_at > a->last_success_at) {
        /* polled by another instance since: not a first poll */
        a->last_success_at = s.last_success_at;
        a->fails = 0;
    }
    return a;
}

static void *poll_worker(void *arg)
{
    (void)arg;
    struct err e;
    unsigned seed = (unsigned)now_ms() ^ (unsigned)(uintptr_t)&e;
    struct cfgref *ref = cfgref_get(&rt.cfg);
    struct store *st = store_open(ref->cfg->state_dir, &e);
    cfgref_put(ref);
    if (!st) {
        log_error("store_open_failed", "error=%s", log_q(e.msg));
        return NULL;
    }
    pthread_mutex_lock(&rt.lock);
    while (!rt.stopping) {
        int64_t wait;
        struct rt_account *a = next_due(now_ms(), &wait);
        if (!a) {
            if (rt.once && once_polls_done())
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&rt.cond, &rt.lock, &ts);
            continue;
        }
        char name[sizeof a->name];
        snprintf(name, sizeof name, "%s", a->name);
        a->running = true;
        if (rt.shared && !(a = lease_account(st, a, name, &seed)))
            continue; /* another instance has it, or it is not due in the store */
        a->requested = false;
        bool first = a->last_success_at == 0;
        a->state = ACCOUNT_POLLING;
        a->last_attempt_at = now_ms();
        struct rt_account snapshot = *a;
        pthread_mutex_unlock(&rt.lock);

        save_state(st, &snapshot);
        ref = cfgref_get(&rt.cfg);
        const struct config_account *ca = cfg_account(ref->cfg, name);
        struct poller_result res;
        int rc = -1;
        if (ca) {
            log_debug("poll_start", "account=%s", name);
            rc = poller_poll(st, ca, first, notify_delivery, NULL, &res, &e);
        }
        int64_t interval = ca ? ca->poll_interval_ms : 60000;

        pthread_mutex_lock(&rt.lock);
        a = find_acct(name);
        if (a && ca) {
            a->running = false;
            /* --once takes everything new, max_messages_per_poll at a time */
            a->polled_once = !(rc == 0 && res.more);
            int64_t now = now_ms();
            if (rc == 0) {
                a->fails = 0;
                a->last_success_at = now;
                a->last_error[0] = '\0';
                a->state = ACCOUNT_IDLE;
                int64_t next = interval;
                if (res.login_delay > 0 && res.login_delay * 1000 > next)
                    next = res.login_delay * 1000; /* the server's minimum */
                if (res.more)
                    next = MIN(next, 1000); /* max_messages_per_poll left some */
                a->next_at = now + next;
                a->not_before = res.login_delay > 0 ? now + res.login_delay * 1000 : 0;
                rt.polls_ok++;
                log_info("poll_done",
                         "account=%s listed=%zu fetched=%zu bytes=%llu too_large=%zu ignored=%zu "
                         "deleted=%zu refused=%zu",
                         name, res.listed, res.fetched, (unsigned long long)res.bytes,
                         res.too_large, res.ignored, res.deleted, res.failed);
            } else {
                a->fails++;
                enum account_state state;
                int64_t d = daemon_backoff_ms(&e, a->fails, interval, res.login_delay, &state);
                a->state = state;
                err_format(&e, a->last_error, sizeof a->last_error);
                a->next_at = a->not_before = now + d;
                rt.polls_failed++;
                log_warn("poll_failed", "account=%s state=%s retry_in_s=%lld error=%s", name,
                         account_state_name(state), (long long)(d / 1000),
                         log_q(a->last_error));
            }
            if (rt.on_poll)
                rt.on_poll(name, rc == 0 ? NULL : &e, rc == 0 ? &res : NULL);
            snapshot = *a;
            pthread_mutex_unlock(&rt.lock);
            save_state(st, &snapshot);
            pthread_mutex_lock(&rt.lock);
        } else if (a) {
            a->running = false;
        }
        if (rt.shared) {
            /* the lease goes back with when the account is due next (a
             * reload may have rebuilt the table meanwhile: look it up again) */
            const struct rt_account *cur = find_acct(name);
            int64_t due = cur ? cur->next_at : -1;
            pthread_mutex_unlock(&rt.lock);
            if (store_account_release(st, name, rt.owner, due, &e) < 0)
                log_warn("account_release_failed", "account=%s error=%s", name, log_q(e.msg));
            pthread_mutex_lock(&rt.lock);
        }
        cfgref_put(ref);
        pthread_cond_broadcast(&rt.cond);
    }
    pthread_mutex_unlock(&rt.lock);
    store_close(st);
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
        pthread_mutex_lock(&rt.lock);
        bool stopping = rt.stopping;
        bool once_done = rt.once && once_polls_done();
        pthread_mutex_unlock(&rt.lock);
        if (stopping && !stop_deadline)
            stop_deadline = now_ms() + DAEMON_DRAIN_MS;
        if (stopping && (delivery_in_flight(rt.delivery) == 0 || now_ms() > stop_deadline))
            break;
        struct cfgref *ref = stopping ? NULL : cfgref_get(&rt.cfg); /* draining: no new work */
        if (delivery_step(rt.delivery, ref, 200, &e) < 0)
            log_error("delivery_failed", "error=%s", log_q(e.msg));
        if (ref && now_ms() - last_purge > DAEMON_PURGE_EVERY_MS) {
            int64_t purged = 0;
            last_purge = now_ms();
            if (store_purge_bodies(st, ref->cfg->retention_ms, last_purge, 1000, &purged, &e) < 0)
                log_error("purge_failed", "error=%s", log_q(e.msg));
            else if (purged)
                log_info("purged", "bodies=%lld", (long long)purged);
        }
        cfgref_put(ref);
        if (once_done && delivery_in_flight(rt.delivery) == 0) {
            int64_t next = 0;
            if (store_delivery_next_due(st, now_ms(), &next, &e) < 0 || next == 0 ||
                next > now_ms() + DAEMON_ONCE_WAIT_MS)
                break;
        }
    }
    pthread_mutex_lock(&rt.lock);
    rt.delivery_done = true;
    pthread_cond_broadcast(&rt.cond);
    pthread_mutex_unlock(&rt.lock);
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
    pthread_mutex_lock(&rt.lock);
    if (strcmp(rt.cfg->cfg->state_dir, cfg->state_dir) != 0)
        log_warn("reload_state_dir", "note=%s",
                 log_q("state_dir changed: takes effect at the next start"));
    sync_accounts(cfg, st);
    log_set_level((enum log_level)cfg->log_level);
    log_set_format((enum log_format)cfg->log_format);
    pthread_mutex_unlock(&rt.lock);
    cfgref_swap(&rt.cfg, r);
    struct err e;
    if (store_webhooks_enable_all(st, &e) < 0)
        log_error("store_failed", "op=webhooks_enable_all error=%s", log_q(e.msg));
    pthread_cond_broadcast(&rt.cond);
    delivery_wakeup(rt.delivery);
    log_info("reloaded", "accounts=%zu webhooks=%zu", cfg->account_count, cfg->webhook_count);
}

/* STATUS= for the service manager: the accounts' states and the deliveries
 * waiting, at most every 2 s (a count of the outbox is a query). */
static void report_status(struct store *st)
{
    static int64_t last;
    if (!notify_enabled() || now_ms() - last < 2000)
        return;
    last = now_ms();
    size_t by_state[ACCOUNT_STATES] = {0}, total;
    pthread_mutex_lock(&rt.lock);
    total = rt.n_accounts;
    for (size_t i = 0; i < rt.n_accounts; i++)
        if ((unsigned)rt.accounts[i].state < ACCOUNT_STATES)
            by_state[rt.accounts[i].state]++;
    pthread_mutex_unlock(&rt.lock);
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
    int64_t now = now_ms();
    if (!force && now - last < rt.lease_ms / 4)
        return;
    last = now;
    struct store_instance in = {.started_at = started_at, .heartbeat_at = now};
    snprintf(in.id, sizeof in.id, "%s", rt.owner);
    host_name(in.host, sizeof in.host);
    struct cfgref *ref = cfgref_get(&rt.cfg);
    snprintf(in.public_url, sizeof in.public_url, "%s",
             ref->cfg->api.public_url ? ref->cfg->api.public_url : "");
    cfgref_put(ref);
    struct err e;
    int64_t renewed = 0;
    if (store_instance_beat(st, &in, &e) < 0 ||
        (rt.shared && store_account_renew(st, rt.owner, now, rt.lease_ms, &renewed, &e) < 0))
        log_warn("heartbeat_failed", "error=%s", log_q(e.msg));
}

/* ---- the runtime interface, for the HTTP API ------------------------------------------ */

static bool rt_stopping(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&rt.lock);
    bool stopping = rt.stopping;
    pthread_mutex_unlock(&rt.lock);
    return stopping;
}

static struct cfgref *rt_config(void *ctx)
{
    (void)ctx;
    return cfgref_get(&rt.cfg);
}

static void rt_wake_delivery(void *ctx)
{
    (void)ctx;
    if (rt.delivery)
        delivery_wakeup(rt.delivery);
}

static int rt_account(void *ctx, const char *name, struct runtime_account *out)
{
    (void)ctx;
    pthread_mutex_lock(&rt.lock);
    const struct rt_account *a = find_acct(name);
    if (a) {
        out->state = a->state;
        snprintf(out->last_error, sizeof out->last_error, "%s", a->last_error);
        out->last_attempt_at = a->last_attempt_at;
        out->last_success_at = a->last_success_at;
        out->next_at = a->next_at;
    }
    pthread_mutex_unlock(&rt.lock);
    return a ? 0 : -1;
}

/* A poll now, unless the account's backoff or the server's LOGIN-DELAY
 * forbids one yet. */
static enum runtime_poll rt_poll_now(void *ctx, const char *name, int64_t *retry_after_s)
{
    (void)ctx;
    enum runtime_poll r = RUNTIME_POLL_UNKNOWN;
    pthread_mutex_lock(&rt.lock);
    struct rt_account *a = find_acct(name);
    int64_t now = now_ms();
    if (a && a->not_before > now) {
        *retry_after_s = (a->not_before - now + 999) / 1000;
        r = RUNTIME_POLL_BACKOFF;
    } else if (a) {
        a->requested = true;
        r = RUNTIME_POLL_QUEUED;
        pthread_cond_broadcast(&rt.cond);
    }
    pthread_mutex_unlock(&rt.lock);
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
    pthread_mutex_lock(&rt.lock);
    rt.on_poll = metrics_on_poll;
    pthread_mutex_unlock(&rt.lock);
    delivery_set_observer(rt.delivery, metrics_on_delivery, NULL);
    struct api *a = api_start(&rt_iface, e);
    if (!a) {
        pthread_mutex_lock(&rt.lock);
        rt.on_poll = NULL;
        pthread_mutex_unlock(&rt.lock);
        delivery_set_observer(rt.delivery, NULL, NULL);
    }
    return a;
}

static void stop_api(struct api **a)
{
    if (!*a)
        return;
    api_stop(a);
    pthread_mutex_lock(&rt.lock);
    rt.on_poll = NULL;
    pthread_mutex_unlock(&rt.lock);
    delivery_set_observer(rt.delivery, NULL, NULL);
}

/* ---- main ----------------------------------------------------------------------------- */

/* Everything daemon_main() set up before the threads, released. */
static void release(struct store *st, struct store *dst)
{
    delivery_free(rt.delivery);
    rt.delivery = NULL;
    store_close(dst);
    store_close(st);
    store_teardown();
    cfgref_put(rt.cfg);
    rt.cfg = NULL;
    free(rt.accounts);
    rt.accounts = NULL;
    message_global_cleanup();
    webhook_global_cleanup();
}

static void usage(FILE *out)
{
    fputs("usage: pop3bridge run --config FILE [--once]\n"
          "  runs until SIGTERM/SIGINT; SIGHUP reloads the configuration\n"
          "  --once   poll every account once, deliver what is due, exit\n",
          out);
}

int daemon_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"once", no_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool once = false;
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 'o': once = true; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "pop3bridge: Usage: unknown or incomplete option \"%s\"\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        usage(stderr);
        return 2;
    }

    struct config_diag d = {0};
    struct config *cfg = config_load(path, &d);
    if (!cfg) {
        config_diag_print(&d, stderr);
        config_diag_free(&d);
        return 2;
    }
    config_diag_free(&d);
    log_set_level((enum log_level)cfg->log_level);
    log_set_format((enum log_format)cfg->log_format);

    /* signals go to the main thread only: block them before threads exist */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    struct err e;
    if (webhook_global_init(&e) < 0) {
        fprintf(stderr, "pop3bridge: Internal: %s\n", e.msg);
        config_free(&cfg);
        return 9;
    }
    if (daemon_store_setup(cfg, &e) < 0) {
        char line[600];
        err_format(&e, line, sizeof line);
        fprintf(stderr, "pop3bridge: %s\n", line);
        config_free(&cfg);
        webhook_global_cleanup();
        return 9;
    }
    struct store *st = store_open(cfg->state_dir, &e);
    struct store *dst = st ? store_open(cfg->state_dir, &e) : NULL;
    if (!st || !dst) {
        char line[600];
        err_format(&e, line, sizeof line);
        fprintf(stderr, "pop3bridge: %s\n", line);
        store_close(st);
        store_teardown();
        config_free(&cfg);
        webhook_global_cleanup();
        return 9;
    }
    pthread_mutex_init(&rt.lock, NULL);
    pthread_cond_init(&rt.cond, NULL);
    rt.once = once;
    rt.cfg = cfgref_new(cfg);
    snprintf(rt.config_path, sizeof rt.config_path, "%s", path);
    sync_accounts(cfg, st);
    if (store_webhooks_enable_all(st, &e) < 0)
        log_error("store_failed", "op=webhooks_enable_all error=%s", log_q(e.msg));
    config_instance_id(cfg, rt.owner, sizeof rt.owner);
    rt.shared = cfg->store.url != NULL;
    rt.lease_ms = cfg->store.lease_ms;
    rt.delivery = delivery_new(dst, rt.owner, &e);
    if (!rt.delivery) {
        fprintf(stderr, "pop3bridge: Internal: %s\n", e.msg);
        return 9;
    }
    int64_t started_at = now_ms();
    heartbeat(st, started_at, true);
    if (rt.shared) {
        delivery_set_lease_ms(rt.delivery, rt.lease_ms);
        /* what a previous run under this id held is free at once */
        if (store_account_release(st, NULL, rt.owner, -1, &e) < 0)
            log_error("store_failed", "op=account_release error=%s", log_q(e.msg));
        log_info("store_shared", "backend=%s target=%s instance=%s lease_s=%lld",
                 store_backend(), log_q(store_target_name()), log_q(rt.owner),
                 (long long)(rt.lease_ms / 1000));
    }
    struct api *api = NULL;
    if (!once && !(api = start_api(&e))) {
        char line[600];
        err_format(&e, line, sizeof line);
        fprintf(stderr, "pop3bridge: %s\n", line);
        release(st, dst);
        return e.kind == ERR_CONN ? CLI_EXIT_CONN : CLI_EXIT_LOCAL;
    }
    log_info("started", "version=%s accounts=%zu webhooks=%zu once=%s", POP3BRIDGE_VERSION,
             cfg->account_count, cfg->webhook_count, once ? "yes" : "no");
    notify_ready(); /* the store is open, the API listens, every account is scheduled */

    struct oauth2_keeper *keeper = once ? NULL : oauth2_keeper_start(&rt.cfg, &e);
    if (!once && !keeper)
        log_error("oauth2_keeper_failed", "error=%s", log_q(e.msg));
    size_t nworkers = MIN((size_t)DAEMON_POLL_WORKERS, MAX(cfg->account_count, (size_t)1));
    pthread_t workers[DAEMON_POLL_WORKERS], dthread;
    for (size_t i = 0; i < nworkers; i++)
        pthread_create(&workers[i], NULL, poll_worker, NULL);
    pthread_create(&dthread, NULL, delivery_thread, dst);

    struct timespec tick = {0, 50 * 1000000L};
    for (;;) {
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig == SIGHUP) {
            log_info("reload", "config=%s", log_q(path));
            notify_reloading();
            reload(path, st);
            notify_ready();
        } else if (sig == SIGTERM || sig == SIGINT) {
            log_info("stopping", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
            break;
        }
        pthread_mutex_lock(&rt.lock);
        bool done = rt.once && rt.delivery_done;
        pthread_mutex_unlock(&rt.lock);
        notify_watchdog(); /* this loop turns every 50 ms while the scheduler's lock is free */
        report_status(st);
        heartbeat(st, started_at, false);
        if (done)
            break;
    }
    notify_stopping();
    pthread_mutex_lock(&rt.lock);
    rt.stopping = true;
    pthread_cond_broadcast(&rt.cond);
    pthread_mutex_unlock(&rt.lock);
    delivery_wakeup(rt.delivery);
    for (size_t i = 0; i < nworkers; i++)
        pthread_join(workers[i], NULL);
    pthread_join(dthread, NULL);
    oauth2_keeper_stop(&keeper);
    stop_api(&api);
    if ((rt.shared && store_account_release(st, NULL, rt.owner, -1, &e) < 0) ||
        store_instance_remove(st, rt.owner, &e) < 0)
        log_warn("store_failed", "op=instance_stop error=%s", log_q(e.msg));

    struct delivery_stats ds;
    delivery_stats(rt.delivery, &ds);
    log_info("stopped", "polls_ok=%llu polls_failed=%llu delivered=%llu retried=%llu dead=%llu",
             (unsigned long long)rt.polls_ok, (unsigned long long)rt.polls_failed,
             (unsigned long long)ds.delivered, (unsigned long long)ds.retried,
             (unsigned long long)ds.dead);
    int rc = rt.once && rt.polls_failed ? 1 : 0;
    release(st, dst);
    return rc;
}
