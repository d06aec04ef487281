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

static const char *const error_names[ACCOUNT_ERRORS] = {
    [ACCOUNT_ERR_NONE] = "",
    [ACCOUNT_ERR_LOGIN_DELAY] = "login_delay",
    [ACCOUNT_ERR_IN_USE] = "in_use",
    [ACCOUNT_ERR_SYS_TEMP] = "sys_temp",
    [ACCOUNT_ERR_SYS_PERM] = "sys_perm",
    [ACCOUNT_ERR_AUTH] = "auth",
    [ACCOUNT_ERR_NO_GRANT] = "no_grant",
    [ACCOUNT_ERR_NETWORK] = "network",
    [ACCOUNT_ERR_TIMEOUT] = "timeout",
    [ACCOUNT_ERR_TLS] = "tls",
    [ACCOUNT_ERR_PROTOCOL] = "protocol",
    [ACCOUNT_ERR_SERVER] = "server",
    [ACCOUNT_ERR_LIMIT] = "limit",
    [ACCOUNT_ERR_INTERNAL] = "internal",
};
_Static_assert(ACCOUNT_ERR_INTERNAL + 1 == ACCOUNT_ERRORS, "a name per account error");

const char *account_error_name(enum account_error c)
{
    return (unsigned)c < ACCOUNT_ERRORS ? error_names[c] : "";
}

int account_error_parse(const char *name, enum account_error *out)
{
    for (int i = 0; name && i < ACCOUNT_ERRORS; i++)
        if (strcmp(name, error_names[i]) == 0) {
            *out = (enum account_error)i;
            return 0;
        }
    return -1;
}

enum account_error account_error_of(const struct err *e)
{
    switch (e->code) { /* the server's own word first */
    case ERR_CODE_LOGIN_DELAY: return ACCOUNT_ERR_LOGIN_DELAY;
    case ERR_CODE_IN_USE: return ACCOUNT_ERR_IN_USE;
    case ERR_CODE_SYS_TEMP: return ACCOUNT_ERR_SYS_TEMP;
    case ERR_CODE_SYS_PERM: return ACCOUNT_ERR_SYS_PERM;
    case ERR_CODE_AUTH: return ACCOUNT_ERR_AUTH;
    case ERR_CODE_NO_GRANT: return ACCOUNT_ERR_NO_GRANT;
    case ERR_CODE_NONE:
    case ERR_CODE_OTHER:
    case ERR_CODE_REFRESH_WAIT: break;
    }
    switch (e->kind) {
    case ERR_NONE: return ACCOUNT_ERR_NONE;
    case ERR_CONN: return ACCOUNT_ERR_NETWORK;
    case ERR_TIMEOUT: return ACCOUNT_ERR_TIMEOUT;
    case ERR_TLS: return ACCOUNT_ERR_TLS;
    case ERR_PROTO: return ACCOUNT_ERR_PROTOCOL;
    case ERR_SERVER: return ACCOUNT_ERR_SERVER;
    case ERR_AUTH: return ACCOUNT_ERR_AUTH;
    case ERR_LIMIT: return ACCOUNT_ERR_LIMIT;
    case ERR_INTERNAL:
    case ERR_USAGE: return ACCOUNT_ERR_INTERNAL;
    }
    return ACCOUNT_ERR_INTERNAL;
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
