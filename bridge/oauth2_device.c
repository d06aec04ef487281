/* oauth2_device — device-code authorizations polled in the background; see
 * include/oauth2_device.h. */
#include "oauth2_device.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "oauth2.h"

#define DENIED_MSG "the authorization was denied"
#define EXPIRED_MSG "the code expired before it was approved: start again"

/* One authorization: what may be shown, and what may not. */
struct dev {
    bool used;
    struct oauth2_device_info info;
    /* while starting or pending: */
    char device_code[OAUTH2_CODE_MAX + 1];
    struct oauth2_client client;
    struct cfgref *ref;
    const struct config_account *a;
    int64_t deadline_mono;
    pthread_t thread;
    bool has_thread;
    struct oauth2_devices *owner;
};

struct oauth2_devices {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* stop */
    bool stopping;
    char *state_dir;
    oauth2_devices_authorized_fn fn;
    void *ctx;
    struct dev devs[OAUTH2_DEVICE_MAX];
};

const char *oauth2_device_state_name(enum oauth2_device_state s)
{
    switch (s) {
    case OAUTH2_DEVICE_STARTING: return "starting";
    case OAUTH2_DEVICE_PENDING: return "pending";
    case OAUTH2_DEVICE_AUTHORIZED: return "authorized";
    case OAUTH2_DEVICE_DENIED: return "denied";
    case OAUTH2_DEVICE_EXPIRED: return "expired";
    case OAUTH2_DEVICE_ERROR: return "error";
    }
    return "unknown";
}

static bool ended(const struct dev *x)
{
    return x->info.state != OAUTH2_DEVICE_STARTING && x->info.state != OAUTH2_DEVICE_PENDING;
}

struct oauth2_devices *oauth2_devices_new(const char *state_dir, oauth2_devices_authorized_fn fn,
                                          void *ctx, struct err *e)
{
    struct oauth2_devices *d = calloc(1, sizeof *d);
    if (!d || !(d->state_dir = strdup(state_dir))) {
        free(d);
        err_set(e, ERR_INTERNAL, "out of memory for the device authorizations");
        return NULL;
    }
    if (clock_cond_init(&d->cv) != 0) {
        free(d->state_dir);
        free(d);
        err_set(e, ERR_INTERNAL, "device authorizations: cannot make a condition variable");
        return NULL;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->fn = fn;
    d->ctx = ctx;
    return d;
}

/* Forget a slot's secrets and configuration (lock held or no thread left). */
static void dev_clear_secrets(struct dev *x)
{
    OPENSSL_cleanse(x->device_code, sizeof x->device_code);
    memset(&x->client, 0, sizeof x->client);
    x->a = NULL;
}

void oauth2_devices_free(struct oauth2_devices **dp)
{
    if (!dp || !*dp)
        return;
    struct oauth2_devices *d = *dp;
    *dp = NULL;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    for (size_t i = 0; i < OAUTH2_DEVICE_MAX; i++) {
        struct dev *x = &d->devs[i];
        if (x->has_thread)
            pthread_join(x->thread, NULL);
        dev_clear_secrets(x);
        cfgref_put(x->ref);
    }
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d->state_dir);
    free(d);
}

/* End x in state s (lock held): keeps the reason, drops the secrets. */
static void end_locked(struct dev *x, enum oauth2_device_state s, const char *why)
{
    x->info.state = s;
    x->info.ended_at = clock_wall_ms();
    snprintf(x->info.error, sizeof x->info.error, "%s", why ? why : "");
    dev_clear_secrets(x);
}

/* Wait up to ms, or until stopping: true when stopping. */
static bool nap(struct oauth2_devices *d, int64_t ms)
{
    struct timespec until;
    clock_deadline(&until, ms);
    pthread_mutex_lock(&d->mu);
    while (!d->stopping && pthread_cond_timedwait(&d->cv, &d->mu, &until) == 0)
        ;
    bool stop = d->stopping;
    pthread_mutex_unlock(&d->mu);
    return stop;
}

/* Store the approved grant; 0, or -1 with *e. */
static int save(struct oauth2_devices *d, struct dev *x, const struct oauth2_token *t,
                struct err *e)
{
    struct store *st = store_open(d->state_dir, e);
    if (!st)
        return -1;
    int rc = oauth2_save_grant(st, x->a, t, clock_wall_ms(), e);
    store_close(st);
    return rc;
}

static void *poll_main(void *arg)
{
    struct dev *x = arg;
    struct oauth2_devices *d = x->owner;
    struct oauth2_token *t = calloc(1, sizeof *t);
    char account[STORE_NAME_MAX + 1];
    snprintf(account, sizeof account, "%s", x->info.account);
    int64_t interval = x->info.interval_s;
    int temp = 0;
    enum oauth2_device_state end = OAUTH2_DEVICE_ERROR;
    char why[OAUTH2_DEVICE_ERROR_MAX] = "";
    struct err e;
    err_clear(&e);
    if (!t) {
        snprintf(why, sizeof why, "out of memory");
        goto out;
    }
    for (;;) {
        if (clock_mono_ms() + interval * 1000 > x->deadline_mono) {
            end = OAUTH2_DEVICE_EXPIRED;
            snprintf(why, sizeof why, "%s", EXPIRED_MSG);
            goto out;
        }
        if (nap(d, interval * 1000)) {
            snprintf(why, sizeof why, "the bridge stopped before the code was approved");
            goto out;
        }
        struct oauth2_reply r;
        enum oauth2_result res = oauth2_proto_device_poll(&x->client, x->device_code, t, &r, &e);
        switch (res) {
        case OAUTH2_OK:
            if (save(d, x, t, &e) < 0) {
                err_format(&e, why, sizeof why);
                goto out;
            }
            end = OAUTH2_DEVICE_AUTHORIZED;
            goto out;
        case OAUTH2_PENDING: temp = 0; break;
        case OAUTH2_SLOW_DOWN: /* RFC 8628 §3.5: 5 s more from now on */
            temp = 0;
            interval += 5;
            pthread_mutex_lock(&d->mu);
            x->info.interval_s = interval;
            pthread_mutex_unlock(&d->mu);
            break;
        case OAUTH2_DENIED:
            end = OAUTH2_DEVICE_DENIED;
            snprintf(why, sizeof why, "%s", DENIED_MSG);
            goto out;
        case OAUTH2_EXPIRED:
        case OAUTH2_INVALID_GRANT:
            end = OAUTH2_DEVICE_EXPIRED;
            snprintf(why, sizeof why, "%s", EXPIRED_MSG);
            goto out;
        case OAUTH2_TEMPORARY:
            if (++temp >= OAUTH2_DEVICE_TEMP_FAILURES) {
                err_format(&e, why, sizeof why);
                goto out;
            }
            if (r.retry_after_s > interval)
                interval = r.retry_after_s > OAUTH2_DEVICE_LIFETIME_MAX_S
                               ? OAUTH2_DEVICE_LIFETIME_MAX_S
                               : r.retry_after_s;
            log_warn("oauth2_device_poll_failed", "account=%s failures=%d error=%s", account,
                     temp, log_q(e.msg));
            break;
        case OAUTH2_REFUSED:
            err_format(&e, why, sizeof why);
            goto out;
        }
    }
out:
    if (t) {
        oauth2_proto_token_wipe(t);
        free(t);
    }
    pthread_mutex_lock(&d->mu);
    struct cfgref *ref = x->ref;
    x->ref = NULL;
    end_locked(x, end, end == OAUTH2_DEVICE_AUTHORIZED ? NULL : why);
    pthread_mutex_unlock(&d->mu);
    cfgref_put(ref);
    if (end == OAUTH2_DEVICE_AUTHORIZED) {
        log_info("oauth2_device_authorized", "account=%s", account);
        if (d->fn)
            d->fn(d->ctx, account);
    } else {
        log_warn("oauth2_device_ended", "account=%s state=%s error=%s", account,
                 oauth2_device_state_name(end), log_q(why));
    }
    return NULL;
}

/* The slot of account (lock held), or NULL. */
static struct dev *find_locked(struct oauth2_devices *d, const char *account)
{
    for (size_t i = 0; i < OAUTH2_DEVICE_MAX; i++)
        if (d->devs[i].used && strcmp(d->devs[i].info.account, account) == 0)
            return &d->devs[i];
    return NULL;
}

/* A slot for a new authorization (lock held): the account's ended one, a
 * free one, or the one that ended longest ago; NULL when every slot is
 * starting or pending. */
static struct dev *slot_locked(struct oauth2_devices *d, struct dev *mine)
{
    if (mine)
        return mine;
    struct dev *oldest = NULL;
    for (size_t i = 0; i < OAUTH2_DEVICE_MAX; i++) {
        struct dev *x = &d->devs[i];
        if (!x->used)
            return x;
        if (ended(x) && (!oldest || x->info.ended_at < oldest->info.ended_at))
            oldest = x;
    }
    return oldest;
}

/* Step 1 (takes the lock and gives it back): a slot for the account,
 * marked starting.  The slot, or NULL with *code: OAUTH2_DEVICES_EXISTING
 * (with *out), _BUSY or _FULL. */
static struct dev *claim_slot(struct oauth2_devices *d, struct cfgref *hold,
                              const struct config_account *a, struct oauth2_device_info *out,
                              int *code)
{
    pthread_mutex_lock(&d->mu);
    struct dev *x = find_locked(d, a->name);
    if (x && x->info.state == OAUTH2_DEVICE_PENDING) {
        *out = x->info;
        pthread_mutex_unlock(&d->mu);
        *code = OAUTH2_DEVICES_EXISTING;
        return NULL;
    }
    if (x && x->info.state == OAUTH2_DEVICE_STARTING) {
        pthread_mutex_unlock(&d->mu);
        *code = OAUTH2_DEVICES_BUSY;
        return NULL;
    }
    int pending = 0;
    for (size_t i = 0; i < OAUTH2_DEVICE_MAX; i++)
        pending += d->devs[i].used && !ended(&d->devs[i]);
    x = pending < OAUTH2_DEVICE_PENDING_MAX ? slot_locked(d, x) : NULL;
    if (!x || d->stopping) {
        pthread_mutex_unlock(&d->mu);
        *code = OAUTH2_DEVICES_FULL;
        return NULL;
    }
    if (x->has_thread) { /* it ended: its thread is returning, never waits for the lock */
        pthread_join(x->thread, NULL);
        x->has_thread = false;
    }
    memset(x, 0, sizeof *x);
    x->used = true;
    x->owner = d;
    snprintf(x->info.account, sizeof x->info.account, "%s", a->name);
    x->info.state = OAUTH2_DEVICE_STARTING;
    x->info.started_at = clock_wall_ms();
    x->ref = cfgref_hold(hold);
    x->a = a;
    pthread_mutex_unlock(&d->mu);
    return x;
}

/* Step 3 (lock held): what the provider answered into the slot, now
 * pending, and its polling thread started.  0, or -1 with e. */
static int publish_locked(struct dev *x, const struct oauth2_device *dv, struct err *e)
{
    int64_t life = dv->expires_in_s;
    if (life > OAUTH2_DEVICE_LIFETIME_MAX_S)
        life = OAUTH2_DEVICE_LIFETIME_MAX_S;
    snprintf(x->device_code, sizeof x->device_code, "%s", dv->device_code);
    snprintf(x->info.user_code, sizeof x->info.user_code, "%s", dv->user_code);
    snprintf(x->info.verification_uri, sizeof x->info.verification_uri, "%s",
             dv->verification_uri);
    snprintf(x->info.verification_uri_complete, sizeof x->info.verification_uri_complete, "%s",
             dv->verification_uri_complete);
    x->info.interval_s = dv->interval_s > 0 ? dv->interval_s : OAUTH2_DEVICE_INTERVAL_S;
    x->info.expires_at = clock_wall_ms() + life * 1000;
    x->deadline_mono = clock_mono_ms() + life * 1000;
    x->info.state = OAUTH2_DEVICE_PENDING;
    if (pthread_create(&x->thread, NULL, poll_main, x) != 0)
        return err_set(e, ERR_INTERNAL, "cannot start a thread to poll the token endpoint");
    x->has_thread = true;
    return 0;
}

int oauth2_devices_start(struct oauth2_devices *d, struct cfgref *hold,
                         const struct config_account *a, struct oauth2_device_info *out,
                         struct err *e)
{
    err_clear(e);
    if (!oauth2_managed(a) || a->oauth2.flow != CONFIG_FLOW_DEVICE_CODE || !a->oauth2.secrets_key)
        return err_set(e, ERR_USAGE, "account %s: not an OAuth2 device-code account with a "
                                     "secrets key",
                       a ? a->name : "?");
    if (strlen(a->name) > STORE_NAME_MAX)
        return err_set(e, ERR_USAGE, "account name longer than %d bytes", STORE_NAME_MAX);
    int code = -1;
    struct dev *x = claim_slot(d, hold, a, out, &code);
    if (!x)
        return code;

    /* Step 2: the request, outside the lock */
    struct oauth2_device *dv = calloc(1, sizeof *dv);
    int rc = -1;
    if (!dv)
        err_set(e, ERR_INTERNAL, "out of memory");
    else if (oauth2_proto_client(&a->oauth2, &x->client, e) == 0 &&
             oauth2_proto_device_start(&x->client, dv, NULL, e) == OAUTH2_OK)
        rc = 0;

    pthread_mutex_lock(&d->mu);
    if (rc == 0 && d->stopping) {
        rc = -1;
        err_set(e, ERR_INTERNAL, "the bridge is stopping");
    }
    if (rc == 0)
        rc = publish_locked(x, dv, e);
    struct cfgref *drop = NULL;
    if (rc < 0) {
        char why[OAUTH2_DEVICE_ERROR_MAX];
        err_format(e, why, sizeof why);
        end_locked(x, OAUTH2_DEVICE_ERROR, why);
        drop = x->ref;
        x->ref = NULL;
    }
    *out = x->info;
    pthread_mutex_unlock(&d->mu);
    cfgref_put(drop);
    if (dv) {
        OPENSSL_cleanse(dv, sizeof *dv);
        free(dv);
    }
    if (rc < 0) {
        log_warn("oauth2_device_ended", "account=%s state=error error=%s", a->name,
                 log_q(out->error));
        return -1;
    }
    log_info("oauth2_device_started", "account=%s expires_in_s=%lld interval_s=%lld", a->name,
             (long long)((out->expires_at - out->started_at) / 1000),
             (long long)out->interval_s);
    return OAUTH2_DEVICES_STARTED;
}

int oauth2_devices_get(struct oauth2_devices *d, const char *account,
                       struct oauth2_device_info *out)
{
    pthread_mutex_lock(&d->mu);
    struct dev *x = find_locked(d, account);
    if (x)
        *out = x->info;
    pthread_mutex_unlock(&d->mu);
    return x ? 0 : -1;
}
