/* api_instances — see include/api_instances.h. */
#include "api_instances.h"

#include <string.h>

#include "api.h"
#include "clock.h"

struct listing {
    cJSON *arr;
    size_t n;
};

static int add_instance(void *ctx, const struct store_instance *i, struct err *e)
{
    struct listing *l = ctx;
    if (l->n >= API_INSTANCES_MAX)
        return 0;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return err_set(e, ERR_INTERNAL, "out of memory");
    cJSON_AddStringToObject(o, "id", i->id);
    cJSON_AddStringToObject(o, "host", i->host);
    cJSON_AddItemToObject(o, "public_url", api_json_str(i->public_url[0] ? i->public_url : NULL));
    cJSON_AddItemToObject(o, "started_at", api_json_time(i->started_at));
    cJSON_AddItemToObject(o, "heartbeat_at", api_json_time(i->heartbeat_at));
    cJSON_AddArrayToObject(o, "accounts");
    cJSON_AddItemToArray(l->arr, o);
    l->n++;
    return 0;
}

/* An account lease: its name goes to its holder's "accounts". */
static int add_lease(void *ctx, const char *account, const char *owner, int64_t until,
                     struct err *e)
{
    (void)until;
    (void)e;
    struct listing *l = ctx;
    cJSON *o;
    cJSON_ArrayForEach(o, l->arr)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        if (cJSON_IsString(id) && strcmp(id->valuestring, owner) == 0) {
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(o, "accounts"),
                                 cJSON_CreateString(account));
            break;
        }
    }
    return 0;
}

static void h_instances(struct http_req *r)
{
    const struct config *cfg = http_cfg(r);
    struct err e;
    err_clear(&e);
    struct store *st = api_store(r, &e);
    int64_t now = clock_wall_ms();
    cJSON *root = cJSON_CreateObject();
    struct listing l = {cJSON_AddArrayToObject(root, "instances"), 0};
    if (!st || store_instances_each(st, now - cfg->store.lease_ms, now - API_INSTANCES_FORGET_MS,
                                    add_instance, &l, &e) < 0 ||
        store_account_leases_each(st, now, add_lease, &l, &e) < 0) {
        cJSON_Delete(root);
        http_problem(r, 500, "internal", "the store could not be read");
        return;
    }
    cJSON_AddStringToObject(root, "store", store_backend());
    http_reply_json(r, 200, root);
}

const struct http_route api_instances_routes[] = {
    {"GET", "/api/v1/instances", h_instances, NULL, 0},
};
const size_t api_instances_nroutes = sizeof api_instances_routes / sizeof api_instances_routes[0];
