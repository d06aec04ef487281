/* api_accounts — see include/api_accounts.h. */
#include "api_accounts.h"

#include <limits.h>
#include <string.h>

#include "api.h"
#include "api_oauth2.h"
#include "clock.h"
#include "log.h"
#include "pollhist.h"

/* A shared store (PostgreSQL): an account this instance does not hold is
 * answered from what its holder saves after each poll (daemon.c), so every
 * instance gives the same state, times and error.  true with *ra filled
 * (*live: anything was saved), false when the store could not say (then
 * this instance's own view stands). */
static bool saved_account(struct store *st, const char *name, struct runtime_account *ra,
                          bool *live)
{
    struct store_account_state s;
    struct err e;
    err_clear(&e);
    int rc = store_account_get(st, name, &s, &e);
    if (rc == STORE_NOTFOUND) {
        *live = false; /* never polled by anyone */
        return true;
    }
    if (rc < 0) {
        log_warn("account_state_unread", "account=%s error=%s", name, log_q(e.msg));
        return false;
    }
    if (account_state_parse(s.state, &ra->state) < 0)
        ra->state = ACCOUNT_IDLE;
    snprintf(ra->last_error, sizeof ra->last_error, "%s", s.last_error);
    if (account_error_parse(s.last_error_code, &ra->last_error_code) < 0)
        ra->last_error_code = ACCOUNT_ERR_NONE;
    ra->last_attempt_at = s.last_attempt_at;
    ra->last_success_at = s.last_success_at;
    *live = true;
    return true;
}

static cJSON *account_json(struct http_req *r, const struct config_account *ca)
{
    struct runtime_account ra;
    bool live = runtime_account(api_runtime(r), ca->name, &ra) == 0;
    struct store_account_counts cnt = {0};
    struct err e;
    struct store *st = api_store(r, &e);
    if (!st || store_account_counts(st, ca->name, &cnt, &e) < 0)
        return NULL;
    if (store_is_shared() && !(live && ra.held)) {
        struct runtime_account saved = live ? ra : (struct runtime_account){0};
        bool saved_live = false;
        if (saved_account(st, ca->name, &saved, &saved_live))
            ra = saved, live = saved_live;
    }
    cJSON *oauth2 = api_oauth2_account_json(r, ca);
    if (!oauth2)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", ca->name);
    cJSON_AddStringToObject(o, "state", account_state_name(live ? ra.state : ACCOUNT_IDLE));
    cJSON_AddItemToObject(o, "last_attempt_at", api_json_time(live ? ra.last_attempt_at : 0));
    cJSON_AddItemToObject(o, "last_success_at", api_json_time(live ? ra.last_success_at : 0));
    cJSON_AddItemToObject(o, "last_error", api_json_str(live ? ra.last_error : NULL));
    cJSON_AddItemToObject(o, "last_error_code",
                          api_json_str(live ? account_error_name(ra.last_error_code) : NULL));
    cJSON_AddNumberToObject(o, "stored", (double)cnt.stored);
    cJSON_AddNumberToObject(o, "pending_deliveries", (double)cnt.pending_deliveries);
    cJSON_AddItemToObject(o, "oauth2", oauth2);
    return o;
}

static void h_accounts(struct http_req *r)
{
    const struct config *cfg = http_cfg(r);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "accounts");
    for (size_t i = 0; i < cfg->account_count; i++) {
        cJSON *a = account_json(r, &cfg->accounts[i]);
        if (!a) {
            cJSON_Delete(root);
            http_problem(r, 500, "internal", "the store could not be read");
            return;
        }
        cJSON_AddItemToArray(arr, a);
    }
    http_reply_json(r, 200, root);
}

/* poll_history_unread (the store could not be read for an account's
 * history: every request falls back) at most once per this long */
#define API_HISTORY_UNREAD_LOG_MS 60000

/* The account's history into s and polls[] (*n of them): on PostgreSQL the
 * store's, shared by every instance (store_poll_history); on SQLite, or when
 * the store cannot be read, what the poller recorded in this process
 * (pollhist.h).  Whether anything is known (s->at == 0: no session yet). */
static bool read_history(struct http_req *r, const char *account, struct pollhist_session *s,
                         struct store_poll *polls, size_t *n)
{
    *n = 0;
    if (store_is_shared()) {
        struct err e;
        err_clear(&e);
        struct store *st = api_store(r, &e);
        if (st && store_poll_history(st, account, s, polls, POLLHIST_POLLS, n, &e) == 0)
            return true;
        static struct log_limit unread;
        uint64_t more = 0;
        if (log_limit_due(&unread, clock_mono_ms(), API_HISTORY_UNREAD_LOG_MS, &more))
            log_warn("poll_history_unread", "account=%s error=%s not_logged=%llu note=%s",
                     account, log_q(e.msg), (unsigned long long)more,
                     log_q("answered with this instance's own record; logged at most once "
                           "a minute"));
    }
    struct pollhist_poll mine[POLLHIST_POLLS];
    bool known = pollhist_get(pollhist_default(), account, s, mine, POLLHIST_POLLS, n) == 0;
    for (size_t i = 0; i < *n; i++)
        polls[i] = (struct store_poll){.p = mine[i]};
    return known;
}

/* The account's last POP3 session and recent polls: last_session null
 * before the first. */
static void add_history(struct http_req *r, cJSON *o, const char *account)
{
    struct pollhist_session s;
    struct store_poll polls[POLLHIST_POLLS];
    size_t n = 0;
    bool known = read_history(r, account, &s, polls, &n);
    if (known && s.at > 0) {
        cJSON *ls = cJSON_AddObjectToObject(o, "last_session");
        cJSON_AddItemToObject(ls, "at", api_json_time(s.at));
        cJSON *caps = cJSON_AddArrayToObject(ls, "capabilities");
        for (size_t i = 0; i < s.n_capa; i++)
            cJSON_AddItemToArray(caps, cJSON_CreateString(s.capa[i]));
        if (s.tls) {
            cJSON *t = cJSON_AddObjectToObject(ls, "tls");
            cJSON_AddStringToObject(t, "version", s.tls_info.version);
            cJSON_AddStringToObject(t, "cipher", s.tls_info.cipher);
            cJSON_AddBoolToObject(t, "verified", s.tls_info.verified);
            cJSON_AddStringToObject(t, "verify", s.tls_info.verify);
            cJSON_AddStringToObject(t, "subject", s.tls_info.peer);
            cJSON_AddStringToObject(t, "issuer", s.tls_info.issuer);
            cJSON_AddItemToObject(t, "not_after", api_json_time(s.tls_info.not_after));
            cJSON_AddStringToObject(t, "fingerprint", s.tls_info.fingerprint);
        } else {
            cJSON_AddNullToObject(ls, "tls");
        }
    } else {
        cJSON_AddNullToObject(o, "last_session");
    }
    cJSON *arr = cJSON_AddArrayToObject(o, "polls");
    for (size_t i = 0; i < n; i++) {
        const struct pollhist_poll *h = &polls[i].p;
        cJSON *p = cJSON_CreateObject();
        cJSON_AddItemToObject(p, "at", api_json_time(h->at));
        cJSON_AddNumberToObject(p, "duration_ms", (double)h->duration_ms);
        cJSON_AddNumberToObject(p, "listed", h->listed);
        cJSON_AddNumberToObject(p, "new_messages", h->new_messages);
        cJSON_AddNumberToObject(p, "deleted", h->deleted);
        cJSON_AddStringToObject(p, "outcome", h->ok ? "ok" : "failed");
        cJSON_AddItemToObject(p, "error", api_json_str(h->error));
        if (polls[i].instance[0]) /* PostgreSQL: who polled; SQLite: this process */
            cJSON_AddStringToObject(p, "instance", polls[i].instance);
        cJSON_AddItemToArray(arr, p);
    }
}

static void h_account(struct http_req *r)
{
    const struct config_account *ca = api_account(r);
    if (!ca)
        return;
    cJSON *a = account_json(r, ca);
    if (!a) {
        http_problem(r, 500, "internal", "the store could not be read");
        return;
    }
    add_history(r, a, ca->name);
    http_reply_json(r, 200, a);
}

static void h_poll(struct http_req *r)
{
    const struct config_account *ca = api_account(r);
    if (!ca)
        return;
    int64_t retry_after = 0;
    switch (runtime_poll_now(api_runtime(r), ca->name, &retry_after)) {
    case RUNTIME_POLL_QUEUED: {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "account", ca->name);
        cJSON_AddTrueToObject(o, "poll_requested");
        http_reply_json(r, 202, o);
        return;
    }
    case RUNTIME_POLL_BACKOFF:
        http_set_retry_after(r, retry_after > INT_MAX ? INT_MAX : (int)retry_after);
        http_problem(r, 429, "backoff",
                     "account %s is backing off after a failure or the server's LOGIN-DELAY: "
                     "a poll is allowed again in %lld s",
                     ca->name, (long long)retry_after);
        return;
    case RUNTIME_POLL_UNKNOWN:
    default:
        http_problem(r, 404, "not-found", "no account named \"%s\" is polled", ca->name);
        return;
    }
}

const struct http_route api_accounts_routes[] = {
    {"GET", "/api/v1/accounts", h_accounts, NULL, 0},
    {"GET", "/api/v1/accounts/{account}", h_account, NULL, 0},
    {"POST", "/api/v1/accounts/{account}/poll", h_poll, NULL, 0},
};
const size_t api_accounts_nroutes = sizeof api_accounts_routes / sizeof api_accounts_routes[0];
