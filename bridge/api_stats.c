/* api_stats — see include/api_stats.h. */
#include "api_stats.h"

#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "filter.h"
#include "clock.h"

/* One webhook's object; NULL with e on a store error. */
static cJSON *webhook_json(struct store *st, const struct config *cfg,
                           const struct config_webhook *w, int64_t now, struct err *e)
{
    struct store_webhook_stats s;
    bool disabled = false;
    int64_t since = 0;
    if (store_webhook_stats(st, w->name, now, &s, e) < 0 ||
        store_webhook_disabled(st, w->name, &disabled, &since, e) < 0)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", w->name);
    cJSON *accts = cJSON_AddArrayToObject(o, "accounts");
    for (size_t i = 0; i < cfg->account_count; i++)
        for (size_t k = 0; k < cfg->accounts[i].webhook_count; k++)
            if (strcmp(cfg->accounts[i].webhooks[k], w->name) == 0)
                cJSON_AddItemToArray(accts, cJSON_CreateString(cfg->accounts[i].name));
    cJSON_AddBoolToObject(o, "disabled", disabled);
    cJSON_AddItemToObject(o, "disabled_since", api_json_time(since));
    cJSON *filter = filter_to_json(w);
    if (filter)
        cJSON_AddItemToObject(o, "filter", filter);
    cJSON *t = cJSON_AddObjectToObject(o, "stats");
    cJSON_AddNumberToObject(t, "attempts_last_hour", (double)s.attempts_hour);
    cJSON_AddNumberToObject(t, "attempts_last_day", (double)s.attempts_day);
    cJSON_AddNumberToObject(t, "delivered_last_hour", (double)s.delivered_hour);
    cJSON_AddNumberToObject(t, "delivered_last_day", (double)s.delivered_day);
    if (s.attempts_day > 0)
        cJSON_AddNumberToObject(t, "success_rate",
                                (double)s.delivered_day / (double)s.attempts_day);
    else
        cJSON_AddNullToObject(t, "success_rate");
    if (s.p50_ms >= 0) {
        cJSON_AddNumberToObject(t, "p50_ms", (double)s.p50_ms);
        cJSON_AddNumberToObject(t, "p99_ms", (double)s.p99_ms);
    } else {
        cJSON_AddNullToObject(t, "p50_ms");
        cJSON_AddNullToObject(t, "p99_ms");
    }
    if (s.last_error_at > 0) {
        cJSON *le = cJSON_AddObjectToObject(t, "last_error");
        cJSON_AddItemToObject(le, "at", api_json_time(s.last_error_at));
        if (s.last_error_status)
            cJSON_AddNumberToObject(le, "http_status", s.last_error_status);
        else
            cJSON_AddNullToObject(le, "http_status");
        cJSON_AddItemToObject(le, "error", api_json_str(s.last_error));
    } else {
        cJSON_AddNullToObject(t, "last_error");
    }
    return o;
}

static void h_webhooks(struct http_req *r)
{
    const struct config *cfg = http_cfg(r);
    struct err e;
    struct store *st = api_store(r, &e);
    if (!st) {
        http_problem(r, 500, "internal", "the store could not be opened: %s", e.msg);
        return;
    }
    int64_t now = clock_wall_ms();
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "now", api_json_time(now));
    cJSON *arr = cJSON_AddArrayToObject(root, "webhooks");
    for (size_t i = 0; i < cfg->webhook_count; i++) {
        cJSON *w = webhook_json(st, cfg, &cfg->webhooks[i], now, &e);
        if (!w) {
            cJSON_Delete(root);
            http_problem(r, 500, "internal", "the store could not be read: %s", e.msg);
            return;
        }
        cJSON_AddItemToArray(arr, w);
    }
    http_reply_json(r, 200, root);
}

static void h_hourly(struct http_req *r)
{
    uint64_t hours = API_STATS_HOURS_DEFAULT;
    const char *v = http_query(r, "hours");
    if (v && api_parse_u64(v, 1, STORE_STATS_HOURS_MAX, &hours) < 0) {
        http_problem(r, 400, "bad-request", "hours must be a whole number from 1 to %d",
                     STORE_STATS_HOURS_MAX);
        return;
    }
    struct err e;
    struct store *st = api_store(r, &e);
    struct store_hour h[STORE_STATS_HOURS_MAX];
    int64_t now = clock_wall_ms();
    if (!st || store_stats_hourly(st, now, (size_t)hours, h, &e) < 0) {
        http_problem(r, 500, "internal", "the store could not be read: %s", e.msg);
        return;
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "now", api_json_time(now));
    cJSON *arr = cJSON_AddArrayToObject(root, "hours");
    for (size_t i = 0; i < hours; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "start", api_json_time(h[i].start));
        cJSON_AddNumberToObject(o, "received", (double)h[i].received);
        cJSON_AddNumberToObject(o, "attempts", (double)h[i].attempts);
        cJSON_AddNumberToObject(o, "delivered", (double)h[i].delivered);
        cJSON_AddItemToArray(arr, o);
    }
    http_reply_json(r, 200, root);
}

const struct http_route api_stats_routes[] = {
    {"GET", "/api/v1/webhooks", h_webhooks, NULL, 0},
    {"GET", "/api/v1/stats/hourly", h_hourly, "hours", 0},
};
const size_t api_stats_nroutes = sizeof api_stats_routes / sizeof api_stats_routes[0];
