/* api_oauth2 — see include/api_oauth2.h. */
#include "api_oauth2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "oauth2.h"
#include "oauth2_device.h"

#define DEVICE_BUSY_RETRY_S 1   /* Retry-After while another request starts one */
#define DEVICE_FULL_RETRY_S 30  /* Retry-After when too many are pending */

int api_oauth2_login_opts(struct store *st, const struct config_account *a, const char *rejected,
                          int64_t until_mono_ms, struct pop3_opts *o, char *tok, struct err *e)
{
    if (!oauth2_managed(a))
        return 0;
    if (!st)
        return err_set(e, ERR_INTERNAL, "account %s: no store handle for its OAuth2 token",
                       a->name);
    if (oauth2_access_token_until(st, a, rejected, tok, OAUTH2_TOKEN_BUF, until_mono_ms, e) < 0)
        return -1;
    o->oauth2_token = tok;
    return 0;
}

bool api_oauth2_refused(const struct config_account *a, const struct err *e)
{
    return oauth2_managed(a) && e->kind == ERR_AUTH && !err_is_temporary(e) &&
           e->code != ERR_CODE_NO_GRANT;
}

cJSON *api_oauth2_account_json(struct http_req *r, const struct config_account *ca)
{
    if (!oauth2_managed(ca))
        return cJSON_CreateNull();
    struct err e;
    struct oauth2_status s;
    struct store *st = api_store(r, &e);
    if (!st || oauth2_status(st, ca, &s, &e) < 0)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "provider", config_oauth2_provider_name(ca->oauth2.provider));
    cJSON_AddStringToObject(o, "flow", config_oauth2_flow_name(ca->oauth2.flow));
    cJSON_AddStringToObject(o, "authorization", oauth2_state_name(s.state));
    cJSON_AddItemToObject(o, "access_expires_at", api_json_time(s.access_expires_at));
    cJSON_AddItemToObject(o, "error", api_json_str(s.error));
    return o;
}

/* The account of the request if it can be authorized by device code;
 * NULL after answering 404 or 409. */
static const struct config_account *device_account(struct http_req *r)
{
    const struct config_account *ca = api_account(r);
    if (!ca)
        return NULL;
    if (!oauth2_managed(ca)) {
        http_problem(r, 409, "wrong-flow", "account %s does not use an OAuth2 provider",
                     ca->name);
        return NULL;
    }
    if (ca->oauth2.flow != CONFIG_FLOW_DEVICE_CODE) {
        http_problem(r, 409, "wrong-flow",
                     "account %s uses the OAuth2 flow %s: only device_code can be authorized "
                     "through the API (use `pop3bridge oauth2 login`)",
                     ca->name, config_oauth2_flow_name(ca->oauth2.flow));
        return NULL;
    }
    return ca;
}

static cJSON *device_json(const struct oauth2_device_info *i)
{
    cJSON *o = cJSON_CreateObject();
    int64_t now = clock_wall_ms();
    bool pending = i->state == OAUTH2_DEVICE_PENDING;
    cJSON_AddStringToObject(o, "account", i->account);
    cJSON_AddStringToObject(o, "state", oauth2_device_state_name(i->state));
    cJSON_AddItemToObject(o, "verification_uri", api_json_str(i->verification_uri));
    cJSON_AddItemToObject(o, "verification_uri_complete",
                          api_json_str(i->verification_uri_complete));
    cJSON_AddItemToObject(o, "user_code", api_json_str(i->user_code));
    cJSON_AddNumberToObject(o, "interval", (double)i->interval_s);
    cJSON_AddNumberToObject(o, "expires_in",
                            pending && i->expires_at > now
                                ? (double)((i->expires_at - now + 999) / 1000)
                                : 0);
    cJSON_AddItemToObject(o, "started_at", api_json_time(i->started_at));
    cJSON_AddItemToObject(o, "expires_at", api_json_time(i->expires_at));
    cJSON_AddItemToObject(o, "ended_at", api_json_time(i->ended_at));
    cJSON_AddItemToObject(o, "error", api_json_str(i->error));
    return o;
}

/* ---- POST .../oauth2/device ------------------------------------------------------------- */

struct dev_call {
    struct api_work w; /* first */
    struct oauth2_devices *devs;
    struct cfgref *hold;                 /* the request's configuration */
    const struct config_account *a;      /* in it */
    int rc;
    struct err e;
    struct oauth2_device_info info;
};

static void dev_work(struct api_work *w)
{
    struct dev_call *c = (struct dev_call *)w;
    c->rc = oauth2_devices_start(c->devs, c->hold, c->a, &c->info, &c->e);
}

static void dev_reply(struct http_req *r, struct api_work *w)
{
    struct dev_call *c = (struct dev_call *)w;
    switch (c->rc) {
    case OAUTH2_DEVICES_STARTED:
    case OAUTH2_DEVICES_EXISTING:
        http_reply_json(r, c->rc == OAUTH2_DEVICES_STARTED ? 201 : 200, device_json(&c->info));
        return;
    case OAUTH2_DEVICES_BUSY:
        http_set_retry_after(r, DEVICE_BUSY_RETRY_S);
        http_problem(r, 409, "in-progress",
                     "a device authorization for account %s is being started; try again",
                     c->a->name);
        return;
    case OAUTH2_DEVICES_FULL:
        http_set_retry_after(r, DEVICE_FULL_RETRY_S);
        http_problem(r, 429, "device-limit",
                     "%d device authorizations are pending already; try again later",
                     OAUTH2_DEVICE_PENDING_MAX);
        return;
    default:
        api_reply_err(r, "device authorization", &c->e);
        return;
    }
}

static void h_device_start(struct http_req *r)
{
    const struct config_account *ca = device_account(r);
    if (!ca)
        return;
    struct dev_call *c = calloc(1, sizeof *c);
    if (!c) {
        http_problem(r, 500, "internal", "out of memory");
        return;
    }
    c->devs = api_devices(r);
    c->hold = http_cfgref(r);
    c->a = ca;
    c->w.work = dev_work;
    c->w.reply = dev_reply;
    api_run(r, &c->w, free);
}

/* ---- GET .../oauth2/device --------------------------------------------------------------- */

static void h_device_get(struct http_req *r)
{
    const struct config_account *ca = device_account(r);
    if (!ca)
        return;
    struct oauth2_device_info *i = malloc(sizeof *i);
    if (!i) {
        http_problem(r, 500, "internal", "out of memory");
        return;
    }
    if (oauth2_devices_get(api_devices(r), ca->name, i) < 0)
        http_problem(r, 404, "not-found",
                     "no device authorization was started for account %s (POST starts one)",
                     ca->name);
    else
        http_reply_json(r, 200, device_json(i));
    free(i);
}

const struct http_route api_oauth2_routes[] = {
    {"POST", "/api/v1/accounts/{account}/oauth2/device", h_device_start, NULL, 0},
    {"GET", "/api/v1/accounts/{account}/oauth2/device", h_device_get, NULL, 0},
};
const size_t api_oauth2_nroutes = sizeof api_oauth2_routes / sizeof api_oauth2_routes[0];
