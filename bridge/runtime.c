/* runtime — see include/runtime.h. */
#include "runtime.h"

#include <string.h>

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
    (void)e;
    rt->services = NULL; /* the HTTP API (api.h) starts here once it is built in */
    return 0;
}

void runtime_stop_services(struct runtime *rt)
{
    rt->services = NULL;
}
