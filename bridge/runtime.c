/* runtime — see include/runtime.h. */
#include "runtime.h"

#include <string.h>

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

bool runtime_stopping(const struct runtime *rt) { return rt->ops->stopping(rt->ctx); }

struct cfgref *runtime_config(const struct runtime *rt) { return rt->ops->config(rt->ctx); }

void runtime_wake_delivery(const struct runtime *rt) { rt->ops->wake_delivery(rt->ctx); }

int runtime_account(const struct runtime *rt, const char *name, struct runtime_account *out)
{
    return rt->ops->account(rt->ctx, name, out);
}

enum runtime_poll runtime_poll_now(const struct runtime *rt, const char *name,
                                   int64_t *retry_after_s)
{
    *retry_after_s = 0;
    enum runtime_poll p = rt->ops->poll_now(rt->ctx, name, retry_after_s);
    if (p == RUNTIME_POLL_BACKOFF && *retry_after_s < 1)
        *retry_after_s = 1;
    return p;
}
