/* scheduler — when each account is polled next; see include/scheduler.h. */
#include "scheduler.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

int64_t sched_backoff_ms(const struct err *e, int fails, int64_t interval_ms,
                         long login_delay_s, enum account_state *state)
{
    int shift = fails < 1 ? 0 : fails - 1 > SCHED_SHIFT_MAX ? SCHED_SHIFT_MAX : fails - 1;
    if (e->code == ERR_CODE_LOGIN_DELAY) {
        *state = ACCOUNT_BACKOFF; /* the server's minimum between logins */
        return MAX(interval_ms, login_delay_s > 0 ? login_delay_s * 1000LL
                                                  : SCHED_LOGIN_DELAY_DEFAULT_MS);
    }
    if (e->code == ERR_CODE_NO_GRANT) {
        *state = ACCOUNT_AUTH_ERROR; /* nothing is sent until `oauth2 login`: look each interval */
        return interval_ms;
    }
    if (e->kind == ERR_AUTH && !err_is_temporary(e)) {
        *state = ACCOUNT_AUTH_ERROR; /* retrying a refused login quickly risks a lockout */
        return MIN(SCHED_AUTH_BASE_MS << shift, SCHED_AUTH_MAX_MS);
    }
    if (err_is_temporary(e) || e->kind == ERR_TLS) {
        *state = ACCOUNT_BACKOFF;
        /* the server not there (refused, reset: a restart): an account
         * polled often looks again within its own interval */
        int64_t base = e->kind == ERR_CONN
                           ? MIN(SCHED_TEMP_BASE_MS, MAX(interval_ms, SCHED_CONN_BASE_MIN_MS))
                           : SCHED_TEMP_BASE_MS;
        return MIN(base << shift, MAX(interval_ms, SCHED_TEMP_CAP_MS));
    }
    *state = ACCOUNT_ERROR;
    return MIN(SCHED_ERROR_BASE_MS << shift, SCHED_ERROR_MAX_MS);
}

int64_t sched_due(const struct sched_account *a)
{
    return a->requested ? a->not_before : a->next_at;
}

struct sched_account *sched_pick(struct sched_account *v, size_t n, int64_t now, bool once,
                                 int64_t *wait_ms)
{
    struct sched_account *best = NULL;
    *wait_ms = SCHED_WAIT_MAX_MS;
    for (size_t i = 0; i < n; i++) {
        struct sched_account *a = &v[i];
        if (a->running || (once && a->polled_once))
            continue;
        int64_t due = sched_due(a);
        if (due <= now) {
            if (!best || due < sched_due(best))
                best = a;
        } else if (due - now < *wait_ms) {
            *wait_ms = due - now;
        }
    }
    return best;
}

void sched_taken_over(struct sched_account *a, const struct store_account_state *saved,
                      int64_t now, int64_t interval_ms)
{
    if (saved && saved->last_success_at > a->last_success_at)
        a->last_success_at = saved->last_success_at;
    if (a->running)
        return;
    int64_t last = saved ? MAX(saved->last_attempt_at, saved->last_success_at) : 0;
    int64_t due = last > 0 ? MIN(last + interval_ms, now) : 0;
    if (saved && saved->backoff_until > now && saved->backoff_until > a->not_before)
        a->not_before = saved->backoff_until;
    if (a->not_before > now)
        due = MAX(due, a->not_before);
    a->next_at = due;
}

void sched_begin(struct sched_account *a, int64_t now)
{
    a->running = true;
    a->requested = false;
    a->state = ACCOUNT_POLLING;
    a->last_attempt_at = now;
}

int64_t sched_succeeded(struct sched_account *a, int64_t now, int64_t interval_ms,
                        long login_delay_s, bool more)
{
    int64_t login_delay = login_delay_s > 0 ? login_delay_s * 1000LL : 0;
    int64_t next = more ? login_delay : MAX(interval_ms, login_delay);
    a->running = false;
    a->polled_once = !more; /* --once takes everything, max_messages_per_poll at a time */
    a->fails = 0;
    a->last_success_at = now;
    a->last_error[0] = '\0';
    a->last_error_code = ACCOUNT_ERR_NONE;
    a->state = ACCOUNT_IDLE;
    a->next_at = now + next;
    a->not_before = login_delay ? now + login_delay : 0;
    return next;
}

int64_t sched_failed(struct sched_account *a, int64_t now, int64_t interval_ms,
                     long login_delay_s, const struct err *e)
{
    a->running = false;
    a->polled_once = true;
    a->fails++;
    enum account_state state;
    int64_t d = sched_backoff_ms(e, a->fails, interval_ms, login_delay_s, &state);
    a->state = state;
    err_format(e, a->last_error, sizeof a->last_error);
    a->last_error_code = account_error_of(e);
    a->next_at = now + d;
    /* without a grant nothing was sent to any server: a poll asked for
     * (after an authorization) may run at once */
    a->not_before = e->code == ERR_CODE_NO_GRANT ? 0 : a->next_at;
    return d;
}

bool sched_save_due(struct sched_account *a, int rc, bool first, int64_t now, int64_t mono_ms)
{
    bool save = a->state != a->saved_state || rc < 0 || first ||
                (rc == 0 && a->not_before > now) || /* a LOGIN-DELAY */
                a->saved_at == 0 || mono_ms - a->saved_at >= SCHED_STATE_SAVE_MS;
    if (save) {
        a->saved_state = a->state;
        a->saved_at = mono_ms;
    }
    return save;
}

int sched_request(struct sched_account *a, int64_t now, int64_t *retry_after_s)
{
    if (a->not_before > now) {
        *retry_after_s = (a->not_before - now + 999) / 1000;
        if (*retry_after_s < 1)
            *retry_after_s = 1;
        return 1;
    }
    a->requested = true;
    return 0;
}

struct sched_account *sched_find(struct sched_account *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return &v[i];
    return NULL;
}

struct sched_account *sched_find_at(struct sched_account *v, size_t n, const char *name,
                                    size_t hint)
{
    if (hint < n && strcmp(v[hint].name, name) == 0)
        return &v[hint];
    return sched_find(v, n, name);
}

size_t sched_leases_held(const struct sched_account *v, size_t n)
{
    size_t held = 0;
    for (size_t i = 0; i < n; i++)
        held += v[i].lease_until != 0;
    return held;
}
