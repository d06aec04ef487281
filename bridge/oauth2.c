/* oauth2 — the bridge's OAuth2 grants and access tokens; see include/oauth2.h. */
#include "oauth2.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "codec.h"
#include "log.h"
#include "secretbox.h"

#define SEALED_BUF (OAUTH2_TOKEN_MAX + SECRETBOX_OVERHEAD)
#define KEEPER_FIRST_MS 10000 /* the keeper's first look after start */
#define AAD_MAX (STORE_NAME_MAX + 16)

_Static_assert(SEALED_BUF <= STORE_SEALED_MAX, "a sealed token fits in the store");

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* The lease owner: this host, process and thread (one refresher per thread
 * of one process; a thread of the same process waits like any other). */
static void owner_id(char out[STORE_OWNER_MAX + 1])
{
    char host[256];
    if (gethostname(host, sizeof host) < 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(out, STORE_OWNER_MAX + 1, "%.40s:%ld:%ld", host, (long)getpid(), (long)gettid());
}

/* ---- rules -------------------------------------------------------------------- */

bool oauth2_managed(const struct config_account *a)
{
    return a && a->oauth2.present && a->oauth2.provider != CONFIG_OAUTH2_STATIC;
}

bool oauth2_refresh_due(int64_t issued_at, int64_t expires_at, int64_t now)
{
    if (expires_at <= 0)
        return true;
    int64_t left = expires_at - now;
    int64_t life = expires_at - issued_at;
    if (issued_at > 0 && life > 0 && life < OAUTH2_SHORT_LIFETIME_MS)
        return left < life / 2;
    return left < OAUTH2_REFRESH_BEFORE_MS;
}

bool oauth2_keepalive_due(const struct store_oauth2 *row, int64_t now)
{
    if (!row || row->status != STORE_OAUTH2_OK || row->refresh_len == 0)
        return false;
    int64_t last = row->refresh_used_at > row->authorized_at ? row->refresh_used_at
                                                             : row->authorized_at;
    return now - last >= OAUTH2_KEEPALIVE_MS;
}

int64_t oauth2_backoff_ms(int failures, long retry_after_s)
{
    int shift = failures < 1 ? 0 : failures - 1 > 20 ? 20 : failures - 1;
    int64_t d = OAUTH2_BACKOFF_MIN_MS << shift;
    if (d > OAUTH2_BACKOFF_MAX_MS)
        d = OAUTH2_BACKOFF_MAX_MS;
    if (retry_after_s > 0) {
        int64_t ra = (retry_after_s > 86400 ? 86400 : retry_after_s) * 1000LL;
        if (ra > d)
            d = ra;
    }
    return d;
}

const char *oauth2_state_name(enum oauth2_state s)
{
    switch (s) {
    case OAUTH2_STATE_NONE: return "none";
    case OAUTH2_STATE_AUTHORIZED: return "authorized";
    case OAUTH2_STATE_INVALID: return "invalid";
    case OAUTH2_STATE_WRONG_KEY: return "wrong_key";
    }
    return "unknown";
}

/* Whether the row's access token may still be handed out at now: at least
 * OAUTH2_MIN_LEFT_MS left, or a quarter of its lifetime when that is less
 * (a 20 s token is refreshed with 10 s left and still usable meanwhile). */
static bool still_usable(const struct store_oauth2 *r, int64_t now)
{
    int64_t life = r->access_expires_at - r->access_issued_at;
    int64_t min_left = OAUTH2_MIN_LEFT_MS;
    if (life > 0 && life / 4 < min_left)
        min_left = life / 4;
    return r->access_expires_at - now >= min_left;
}

/* ---- sealing -------------------------------------------------------------------- */

static size_t aad_of(const char *account, const char *field, char *out)
{
    size_t a = strlen(account), f = strlen(field);
    memcpy(out, account, a);
    out[a] = '\0';
    memcpy(out + a + 1, field, f);
    return a + 1 + f;
}

static int seal(const struct config_account *a, const char *field, const char *token,
                unsigned char *out, size_t *out_len, struct err *e)
{
    char aad[AAD_MAX];
    size_t n = aad_of(a->name, field, aad);
    return secretbox_seal(a->oauth2.secrets_key, aad, n, token, strlen(token), out, SEALED_BUF,
                          out_len, e);
}

/* Open a sealed token into out (OAUTH2_TOKEN_BUF bytes). */
static int unseal(const struct config_account *a, const char *field, const unsigned char *sealed,
                  size_t len, char *out, struct err *e)
{
    char aad[AAD_MAX];
    size_t n = aad_of(a->name, field, aad), got = 0;
    struct err why;
    err_clear(&why);
    int r = secretbox_open(a->oauth2.secrets_key, aad, n, sealed, len, (unsigned char *)out,
                           OAUTH2_TOKEN_BUF, &got, &why);
    if (r == SECRETBOX_WRONG_KEY) {
        char mine[9], theirs[9] = "?";
        secretbox_key_id(a->oauth2.secrets_key, mine);
        if (len >= 1 + SECRETBOX_KEY_ID_LEN)
            codec_hex_encode(sealed + 1, SECRETBOX_KEY_ID_LEN, theirs);
        /* no usable grant under this key: like a missing one, nothing is sent */
        err_set(e, ERR_AUTH,
                "account %s: its OAuth2 tokens were sealed under another secrets key (id %s; "
                "the configured key's id is %s): restore that key, or authorize again with "
                "`pop3bridge oauth2 login`",
                a->name, theirs, mine);
        e->code = ERR_CODE_NO_GRANT;
        return -1;
    }
    if (r < 0)
        return err_set(e, ERR_INTERNAL, "account %s: the stored OAuth2 %s token cannot be opened: %s",
                       a->name, field, why.msg);
    return 0;
}

static int no_grant(struct err *e, const char *fmt, const char *account, const char *why)
{
    err_set(e, ERR_AUTH, fmt, account, why);
    e->code = ERR_CODE_NO_GRANT;
    return -1;
}

/* ---- saving a grant (oauth2 login) ----------------------------------------------- */

int oauth2_save_grant(struct store *st, const struct config_account *a,
                      const struct oauth2_token *t, int64_t now, struct err *e)
{
    if (!oauth2_managed(a) || !a->oauth2.secrets_key)
        return err_set(e, ERR_USAGE, "account %s: no OAuth2 provider or no secrets key",
                       a ? a->name : "?");
    unsigned char *sa = malloc(SEALED_BUF), *sr = malloc(SEALED_BUF);
    size_t la = 0, lr = 0;
    int rc = -1;
    if (!sa || !sr) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (seal(a, "access", t->access_token, sa, &la, e) < 0 ||
        (t->refresh_token[0] && seal(a, "refresh", t->refresh_token, sr, &lr, e) < 0))
        goto out;
    struct store_oauth2_tokens tk = {
        .access = sa,
        .access_len = la,
        .refresh = lr ? sr : NULL,
        .refresh_len = lr,
        .issued_at = now,
        .expires_at = now + t->expires_in_s * 1000,
    };
    rc = store_oauth2_grant(st, a->name, config_oauth2_flow_name(a->oauth2.flow), &tk, now, e);
out:
    free(sa);
    free(sr);
    return rc;
}

/* ---- status -------------------------------------------------------------------------- */

int oauth2_status(struct store *st, const struct config_account *a, struct oauth2_status *out,
                  struct err *e)
{
    memset(out, 0, sizeof *out);
    struct store_oauth2 *row = malloc(sizeof *row);
    if (!row)
        return err_set(e, ERR_INTERNAL, "out of memory");
    int r = store_oauth2_get(st, a->name, row, e);
    if (r < 0) {
        free(row);
        return -1;
    }
    if (r == STORE_NOTFOUND) {
        out->state = OAUTH2_STATE_NONE;
    } else {
        out->state = row->status == STORE_OAUTH2_INVALID ? OAUTH2_STATE_INVALID
                                                         : OAUTH2_STATE_AUTHORIZED;
        const unsigned char *s = row->access_len ? row->access : row->refresh;
        size_t sl = row->access_len ? row->access_len : row->refresh_len;
        if (sl && a->oauth2.secrets_key && secretbox_key_matches(a->oauth2.secrets_key, s, sl) != 1)
            out->state = OAUTH2_STATE_WRONG_KEY;
        if (row->access_len == 0 && row->refresh_len == 0 && out->state == OAUTH2_STATE_AUTHORIZED)
            out->state = OAUTH2_STATE_NONE; /* a client-credentials row not filled yet */
        snprintf(out->flow, sizeof out->flow, "%s", row->flow);
        snprintf(out->error, sizeof out->error, "%s", row->error);
        out->has_refresh_token = row->refresh_len > 0;
        out->access_expires_at = row->access_len ? row->access_expires_at : 0;
        out->authorized_at = row->authorized_at;
        out->refresh_used_at = row->refresh_used_at;
        out->retry_at = row->retry_at;
        out->failures = row->failures;
    }
    free(row);
    return 0;
}

/* ---- the access token ------------------------------------------------------------------- */

struct work {
    struct store *st;
    const struct config_account *a;
    struct oauth2_client client;
    char owner[STORE_OWNER_MAX + 1];
    struct store_oauth2 row;
    char token[OAUTH2_TOKEN_BUF];   /* the row's access token in clear, when have */
    bool have;
    char refresh[OAUTH2_TOKEN_BUF];
    struct oauth2_token fresh;
    unsigned char sealed_a[SEALED_BUF], sealed_r[SEALED_BUF];
};

static void work_free(struct work *w)
{
    if (!w)
        return;
    OPENSSL_cleanse(w, sizeof *w);
    free(w);
}

/* Open the row's access token into w->token (w->have). */
static int load_access(struct work *w, struct err *e)
{
    w->have = false;
    w->token[0] = '\0';
    if (!w->row.access_len)
        return 0;
    if (unseal(w->a, "access", w->row.access, w->row.access_len, w->token, e) < 0)
        return -1;
    w->have = true;
    return 0;
}

/* Ask the token endpoint under the lease and save the outcome.  Returns 0
 * (w->token holds a token to use), STORE_LEASE_LOST (a newer result was
 * saved meanwhile: look again), or -1 with *e. */
static int refresh(struct work *w, bool usable, struct err *e)
{
    const struct config_account *a = w->a;
    bool cc = a->oauth2.flow == CONFIG_FLOW_CLIENT_CREDENTIALS;
    struct oauth2_reply rep;
    enum oauth2_result res;
    int64_t asked = clock_wall_ms(); /* the token's life is counted from the request */
    if (!cc) {
        if (!w->row.refresh_len) {
            int r = store_oauth2_failed(w->st, a->name, w->row.version, true,
                                        "re-authorize: the grant has no refresh token", 0, e);
            if (r < 0 || r == STORE_LEASE_LOST || r == STORE_NOTFOUND)
                return r < 0 ? -1 : STORE_LEASE_LOST;
            return no_grant(e, "account %s: %s", a->name,
                            "re-authorize: the grant has no refresh token");
        }
        if (unseal(a, "refresh", w->row.refresh, w->row.refresh_len, w->refresh, e) < 0) {
            store_oauth2_release(w->st, a->name, w->owner, NULL);
            return -1;
        }
        res = oauth2_proto_refresh(&w->client, w->refresh, &w->fresh, &rep, e);
    } else {
        res = oauth2_proto_client_credentials(&w->client, &w->fresh, &rep, e);
    }
    int64_t now = clock_wall_ms();
    if (res == OAUTH2_OK) {
        size_t la = 0, lr = 0;
        if (seal(a, "access", w->fresh.access_token, w->sealed_a, &la, e) < 0 ||
            (w->fresh.refresh_token[0] &&
             seal(a, "refresh", w->fresh.refresh_token, w->sealed_r, &lr, e) < 0)) {
            store_oauth2_release(w->st, a->name, w->owner, NULL);
            return -1;
        }
        bool rotated = lr && strcmp(w->fresh.refresh_token, w->refresh) != 0;
        struct store_oauth2_tokens tk = {
            .access = w->sealed_a,
            .access_len = la,
            .refresh = lr ? w->sealed_r : NULL,
            .refresh_len = lr,
            .issued_at = asked,
            .expires_at = asked + w->fresh.expires_in_s * 1000,
        };
        int r = store_oauth2_refreshed(w->st, a->name, w->row.version, &tk, now, e);
        if (r < 0)
            return -1;
        if (r != 0) {
            log_info("oauth2_refresh_superseded", "account=%s", a->name);
            return STORE_LEASE_LOST;
        }
        snprintf(w->token, sizeof w->token, "%s", w->fresh.access_token);
        log_info("oauth2_refreshed", "account=%s grant=%s expires_in_s=%lld rotated=%s",
                 a->name, cc ? "client_credentials" : "refresh_token",
                 (long long)w->fresh.expires_in_s, rotated ? "yes" : "no");
        return 0;
    }
    char line[STORE_ERROR_MAX];
    if (res == OAUTH2_INVALID_GRANT) {
        int r = store_oauth2_failed(w->st, a->name, w->row.version, true, OAUTH2_REAUTHORIZE, 0,
                                    NULL);
        if (r == STORE_LEASE_LOST)
            return STORE_LEASE_LOST; /* a new grant arrived meanwhile */
        log_error("oauth2_reauthorize", "account=%s error=%s server=%s", a->name,
                  log_q(OAUTH2_REAUTHORIZE), log_q(e->server));
        return no_grant(e, "account %s: %s", a->name, OAUTH2_REAUTHORIZE);
    }
    err_format(e, line, sizeof line);
    int64_t wait = oauth2_backoff_ms(w->row.failures + 1, rep.retry_after_s);
    int r = store_oauth2_failed(w->st, a->name, w->row.version, false, line, now + wait, NULL);
    if (r == STORE_LEASE_LOST)
        return STORE_LEASE_LOST;
    log_warn("oauth2_refresh_failed", "account=%s http_status=%d retry_in_s=%lld using=%s error=%s",
             a->name, rep.http_status, (long long)(wait / 1000),
             usable ? "current_token" : "none", log_q(line));
    if (usable) {
        err_clear(e);
        return 0; /* w->token is still valid: keep using it */
    }
    return -1;
}

/* Whether the token must be refreshed now: none, the one the server
 * rejected, or due (*usable: the current one still serves meanwhile). */
static bool refresh_wanted(const struct work *w, const char *rejected, int64_t now, bool *usable)
{
    bool force = rejected && w->have && strcmp(w->token, rejected) == 0;
    *usable = w->have && !force && still_usable(&w->row, now);
    return !w->have || force ||
           oauth2_refresh_due(w->row.access_issued_at, w->row.access_expires_at, now) ||
           oauth2_keepalive_due(&w->row, now);
}

/* One round of oauth2_access_token's loop ends in one of these. */
enum step {
    STEP_DONE,   /* w->token is the token to use */
    STEP_FAILED, /* e says why */
    STEP_AGAIN,  /* look at the row again */
    STEP_ON,     /* go on to the round's next step */
};

/* Step 1: the row as the store has it; whether a refresh is wanted and
 * allowed (not backing off after a failure). */
static enum step read_row(struct work *w, bool cc, const char *rejected, int64_t now,
                          bool *usable, struct err *e)
{
    const struct config_account *a = w->a;
    int r = store_oauth2_get(w->st, a->name, &w->row, e);
    if (r < 0)
        return STEP_FAILED;
    if (r == STORE_NOTFOUND && !cc) {
        no_grant(e, "account %s: %s", a->name, "not authorized yet: run `pop3bridge oauth2 login`");
        return STEP_FAILED;
    }
    if (r == STORE_NOTFOUND)
        memset(&w->row, 0, sizeof w->row);
    if (w->row.status == STORE_OAUTH2_INVALID) {
        no_grant(e, "account %s: %s", a->name, w->row.error[0] ? w->row.error : OAUTH2_REAUTHORIZE);
        return STEP_FAILED;
    }
    if (load_access(w, e) < 0)
        return STEP_FAILED;
    if (!refresh_wanted(w, rejected, now, usable))
        return STEP_DONE;
    if (w->row.retry_at > now) { /* backing off after a failure */
        if (*usable)
            return STEP_DONE;
        err_set(e, ERR_CONN, "account %s: the token endpoint failed; next attempt in %lld s",
                a->name, (long long)((w->row.retry_at - now + 999) / 1000));
        if (w->row.error[0])
            err_set_server(e, w->row.error, strlen(w->row.error));
        return STEP_FAILED;
    }
    return STEP_ON;
}

/* How long a caller waits while another refresh holds the row's lease: the
 * lease's life and a little more, or less when the caller's own deadline
 * comes first.  One monotonic deadline (clock.h); the wall clock's `now`
 * only compares with the row's stored times. */
struct wait_until {
    int64_t mono_ms; /* clock_mono_ms() time the wait ends */
    bool callers;    /* it is the caller's deadline (an API request's) */
};
#define OAUTH2_WAIT_MAX_MS (OAUTH2_LEASE_MS + 5000)

/* Step 2: the row's refresh lease, waited for (in OAUTH2_WAIT_STEP_MS
 * steps, until the deadline) while another refresh holds it. */
static enum step lease_row(struct work *w, bool cc, int64_t now, const struct wait_until *until,
                           bool usable, struct err *e)
{
    const struct config_account *a = w->a;
    int r = store_oauth2_lease(w->st, a->name, w->owner, now, OAUTH2_LEASE_MS, cc,
                               config_oauth2_flow_name(a->oauth2.flow), &w->row, e);
    if (r < 0)
        return STEP_FAILED;
    if (r == STORE_NOTFOUND)
        return STEP_AGAIN; /* the row went away: says so next time round */
    if (r != STORE_OAUTH2_BUSY)
        return STEP_ON;
    if (usable)
        return STEP_DONE;
    int64_t left = until->mono_ms - clock_mono_ms();
    if (left <= 0 && !until->callers) {
        err_set(e, ERR_TIMEOUT, "account %s: another refresh of its token did not finish "
                                "within %lld s",
                a->name, (long long)(OAUTH2_WAIT_MAX_MS / 1000));
        return STEP_FAILED;
    }
    if (left <= 0) {
        err_set(e, ERR_TIMEOUT,
                "account %s: another refresh of its OAuth2 token is still running "
                "(its lease runs for %lld s more); try again shortly",
                a->name, (long long)((w->row.lease_until - now + 999) / 1000));
        e->code = ERR_CODE_REFRESH_WAIT;
        return STEP_FAILED;
    }
    sleep_ms(left < OAUTH2_WAIT_STEP_MS ? left : OAUTH2_WAIT_STEP_MS);
    return STEP_AGAIN;
}

/* Step 3: with the lease, the row looked at again (it may have changed
 * before the lease was ours), then the refresh. */
static enum step refresh_leased(struct work *w, const char *rejected, int64_t now,
                                int *superseded, struct err *e)
{
    const struct config_account *a = w->a;
    /* the lease is ours, and w->row is the row as it is now */
    if (w->row.status == STORE_OAUTH2_INVALID || w->row.retry_at > now) {
        store_oauth2_release(w->st, a->name, w->owner, NULL);
        return STEP_AGAIN;
    }
    if (load_access(w, e) < 0) {
        store_oauth2_release(w->st, a->name, w->owner, NULL);
        return STEP_FAILED;
    }
    bool usable;
    if (!refresh_wanted(w, rejected, now, &usable)) { /* someone else refreshed just before */
        store_oauth2_release(w->st, a->name, w->owner, NULL);
        return STEP_DONE;
    }
    int r = refresh(w, usable, e);
    if (r == STORE_LEASE_LOST && ++*superseded < 10)
        return STEP_AGAIN;
    if (r == STORE_LEASE_LOST) {
        err_set(e, ERR_INTERNAL, "account %s: its tokens keep changing under a refresh", a->name);
        return STEP_FAILED;
    }
    return r < 0 ? STEP_FAILED : STEP_DONE;
}

int oauth2_access_token(struct store *st, const struct config_account *a, const char *rejected,
                        char *buf, size_t size, struct err *e)
{
    return oauth2_access_token_until(st, a, rejected, buf, size, 0, e);
}

int oauth2_access_token_until(struct store *st, const struct config_account *a,
                              const char *rejected, char *buf, size_t size,
                              int64_t until_mono_ms, struct err *e)
{
    if (!oauth2_managed(a))
        return err_set(e, ERR_USAGE, "account %s: its oauth2 names no provider",
                       a ? a->name : "?");
    if (!a->oauth2.secrets_key)
        return err_set(e, ERR_USAGE, "account %s: no secrets key is configured", a->name);
    if (!buf || size < OAUTH2_TOKEN_BUF)
        return err_set(e, ERR_USAGE, "oauth2: the token buffer is smaller than OAUTH2_TOKEN_BUF");
    struct work *w = calloc(1, sizeof *w);
    if (!w)
        return err_set(e, ERR_INTERNAL, "out of memory");
    w->st = st;
    w->a = a;
    owner_id(w->owner);
    enum step s = STEP_FAILED;
    if (oauth2_proto_client(&a->oauth2, &w->client, e) == 0)
        s = STEP_AGAIN;
    bool cc = a->oauth2.flow == CONFIG_FLOW_CLIENT_CREDENTIALS;
    struct wait_until until = {clock_mono_ms() + OAUTH2_WAIT_MAX_MS, false};
    if (until_mono_ms > 0 && until_mono_ms <= until.mono_ms)
        until = (struct wait_until){until_mono_ms, true};
    int superseded = 0;
    while (s == STEP_AGAIN) {
        int64_t now = clock_wall_ms();
        bool usable = false;
        s = read_row(w, cc, rejected, now, &usable, e);
        if (s == STEP_ON)
            s = lease_row(w, cc, now, &until, usable, e);
        if (s == STEP_ON)
            s = refresh_leased(w, rejected, now, &superseded, e);
    }
    if (s == STEP_DONE)
        snprintf(buf, size, "%s", w->token);
    work_free(w);
    return s == STEP_DONE ? 0 : -1;
}

/* ---- the keeper ---------------------------------------------------------------------------- */

struct oauth2_keeper {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    struct cfgref *const *cfg;
    struct store *st;
};

static void keep_alive(struct oauth2_keeper *k, const struct config *cfg)
{
    char *buf = malloc(OAUTH2_TOKEN_BUF);
    struct store_oauth2 *row = malloc(sizeof *row);
    for (size_t i = 0; buf && row && i < cfg->account_count; i++) {
        const struct config_account *a = &cfg->accounts[i];
        struct err e;
        err_clear(&e);
        if (!oauth2_managed(a) || a->oauth2.flow == CONFIG_FLOW_CLIENT_CREDENTIALS ||
            !a->oauth2.secrets_key)
            continue;
        pthread_mutex_lock(&k->mu);
        bool stop = k->stop;
        pthread_mutex_unlock(&k->mu);
        if (stop)
            break;
        if (store_oauth2_get(k->st, a->name, row, &e) != 0 ||
            !oauth2_keepalive_due(row, clock_wall_ms()))
            continue;
        log_info("oauth2_keepalive", "account=%s", a->name);
        if (oauth2_access_token(k->st, a, NULL, buf, OAUTH2_TOKEN_BUF, &e) < 0) {
            char line[STORE_ERROR_MAX];
            err_format(&e, line, sizeof line);
            log_warn("oauth2_keepalive_failed", "account=%s error=%s", a->name, log_q(line));
        }
        OPENSSL_cleanse(buf, OAUTH2_TOKEN_BUF);
    }
    if (row)
        OPENSSL_cleanse(row, sizeof *row);
    free(row);
    free(buf);
}

static void *keeper_main(void *arg)
{
    struct oauth2_keeper *k = arg;
    int64_t next = clock_mono_ms() + KEEPER_FIRST_MS;
    pthread_mutex_lock(&k->mu);
    while (!k->stop) {
        int64_t now = clock_mono_ms();
        if (now < next) {
            struct timespec ts;
            clock_deadline(&ts, next - now);
            pthread_cond_timedwait(&k->cond, &k->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&k->mu);
        struct cfgref *ref = cfgref_get(k->cfg);
        if (ref) {
            keep_alive(k, ref->cfg);
            cfgref_put(ref);
        }
        next = clock_mono_ms() + OAUTH2_KEEPER_PERIOD_MS;
        pthread_mutex_lock(&k->mu);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

struct oauth2_keeper *oauth2_keeper_start(struct cfgref *const *cfg, struct err *e)
{
    struct oauth2_keeper *k = calloc(1, sizeof *k);
    if (!k) {
        err_set(e, ERR_INTERNAL, "oauth2 keeper: out of memory");
        return NULL;
    }
    k->cfg = cfg;
    struct cfgref *ref = cfgref_get(cfg);
    k->st = ref ? store_open(ref->cfg->state_dir, e) : NULL;
    cfgref_put(ref);
    if (!k->st) {
        if (!ref)
            err_set(e, ERR_USAGE, "oauth2 keeper: no configuration");
        free(k);
        return NULL;
    }
    pthread_mutex_init(&k->mu, NULL);
    clock_cond_init(&k->cond);
    if (pthread_create(&k->thread, NULL, keeper_main, k) != 0) {
        err_set(e, ERR_INTERNAL, "oauth2 keeper: cannot start its thread");
        pthread_cond_destroy(&k->cond);
        pthread_mutex_destroy(&k->mu);
        store_close(k->st);
        free(k);
        return NULL;
    }
    return k;
}

void oauth2_keeper_stop(struct oauth2_keeper **kp)
{
    if (!kp || !*kp)
        return;
    struct oauth2_keeper *k = *kp;
    pthread_mutex_lock(&k->mu);
    k->stop = true;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->mu);
    store_close(k->st);
    free(k);
    *kp = NULL;
}
