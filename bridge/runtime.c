/* runtime — see include/runtime.h. */
#include "runtime.h"

#include <string.h>

#include "api.h"
#include "metrics.h"

static const char *const state_names[ACCOUNT_STATES] = {
    [ACCOUNT_IDLE] = "idle",
    [ACCOUNT_POLLING] = "polling",
    [ACCOUNT_BACKOFF] = "backoff",
    [ACCOUNT_AUTH_ERROR] = "auth_error",
    [ACCOUNT_ERROR] = "error",
};

const char *account_state_name(enum account_state s)
{
    return (unsigned)s < ACCOUNT_STATES ? state_names[s] : "unknown";
}

int account_state_parse(const char *name, enum account_state *out)
{
    for (int i = 0; name && i < ACCOUNT_STATES; i++)
        if (strcmp(name, state_names[i]) == 0) {
            *out = (enum account_state)i;
            return 0;
        }
    return -1;
}

int runtime_poll_now(struct runtime *rt, const char *account)
{
    int rc = -1;
    pthread_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->n_accounts; i++) {
        if (strcmp(rt->accounts[i].name, account) == 0) {
            rt->accounts[i].requested = true;
            rc = 0;
            break;
        }
    }
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

int runtime_account(struct runtime *rt, const char *account, struct rt_account *out)
{
    int rc = -1;
    pthread_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->n_accounts; i++) {
        if (strcmp(rt->accounts[i].name, account) == 0) {
            *out = rt->accounts[i];
            rc = 0;
            break;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

int runtime_start_services(struct runtime *rt, struct err *e)
{
    rt->on_poll = metrics_on_poll;
    if (rt->delivery)
        delivery_set_observer(rt->delivery, metrics_on_delivery, NULL);
    rt->services = api_start(rt, e);
    if (!rt->services) {
        rt->on_poll = NULL;
        if (rt->delivery)
            delivery_set_observer(rt->delivery, NULL, NULL);
        return -1;
    }
    return 0;
}

void runtime_stop_services(struct runtime *rt)
{
    struct api *a = rt->services;
    api_stop(&a);
    rt->services = NULL;
    rt->on_poll = NULL;
    if (rt->delivery)
        delivery_set_observer(rt->delivery, NULL, NULL);
}
