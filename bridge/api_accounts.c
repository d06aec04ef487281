/* api_accounts — see include/api_accounts.h. */
#include "api_accounts.h"

#include <limits.h>
#include <string.h>

#include "api.h"
#include "api_oauth2.h"

static cJSON *account_json(struct http_req *r, const struct config_account *ca)
{
    struct runtime_account ra;
    bool live = runtime_account(api_runtime(r), ca->name, &ra) == 0;
    struct store_account_counts cnt = {0};
    struct err e;
    struct store *st = api_store(r, &e);
    if (!st || store_account_counts(st, ca->name, &cnt, &e) < 0)
        return NULL;
    cJSON *oauth2 = api_oauth2_account_json(r, ca);
    if (!oauth2)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", ca->name);
    cJSON_AddStringToObject(o, "state", account_state_name(live ? ra.state : ACCOUNT_IDLE));
    cJSON_AddItemToObject(o, "last_attempt_at", api_json_time(live ? ra.last_attempt_at : 0));
    cJSON_AddItemToObject(o, "last_success_at", api_json_time(live ? ra.last_success_at : 0));
    cJSON_AddItemToObject(o, "last_error", api_json_str(live ? ra.last_error : NULL));
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
