/*
 * store — the one entry of include/store.h: chooses the backend
 * (store_setup) and passes each call to the handle's backend through its ops
 * table (bridge/store_impl.h).  Also the argument checks every backend words
 * the same way.
 */
#include "store.h"
#include "store_impl.h"

#include <string.h>

static const struct store_ops *backend = &store_sqlite_ops;

#define OPS(h) (((const struct store_hdr *)(const void *)(h))->ops)

/* A backend whose table has a hole is refused, naming the call. */
static int ops_complete(const struct store_ops *o, struct err *e)
{
#define CHECK_OP(ret, name, params, args)                                                      \
    if (!o->name)                                                                              \
        return err_set(e, ERR_INTERNAL, "store: the %s backend does not implement store_%s",   \
                       o->backend, #name);
    STORE_CALLS(CHECK_OP)
#undef CHECK_OP
    if (!o->close || !o->batch_rollback || !o->msg_write || !o->msg_finish || !o->msg_abort ||
        !o->msg_size || !o->msg_peek ||
        !o->body_read || !o->body_close)
        return err_set(e, ERR_INTERNAL, "store: the %s backend misses a message or body call",
                       o->backend);
    return 0;
}

int store_setup(const struct store_target *t, struct err *e)
{
    store_teardown();
    if (!t || !t->url || !*t->url) {
        backend = &store_sqlite_ops;
        return ops_complete(backend, e);
    }
    if (ops_complete(&store_pg_ops, e) < 0 || store_pg_setup(t, e) < 0)
        return -1;
    backend = &store_pg_ops;
    return 0;
}

void store_teardown(void)
{
    if (backend == &store_pg_ops)
        store_pg_teardown();
    backend = &store_sqlite_ops;
}

const char *store_backend(void)
{
    return backend->backend;
}

const char *store_target_name(void)
{
    return backend == &store_pg_ops ? store_pg_target_name() : "";
}

struct store *store_open(const char *state_dir, struct err *e)
{
    return backend == &store_pg_ops ? store_pg_open(state_dir, e)
                                    : store_sqlite_open(state_dir, e);
}

void store_close(struct store *st)
{
    if (st)
        OPS(st)->close(st);
}

void store_batch_rollback(struct store *st)
{
    if (st)
        OPS(st)->batch_rollback(st);
}

#define DISPATCH(ret, name, params, args)                                                      \
    ret store_##name params                                                                    \
    {                                                                                          \
        if (!st)                                                                               \
            return err_set(e, ERR_USAGE, "store: store_%s: no store", #name);                  \
        return OPS(st)->name args;                                                             \
    }
STORE_CALLS(DISPATCH)
#undef DISPATCH

int store_msg_write(struct store_msg *m, const void *data, size_t len, struct err *e)
{
    return OPS(m)->msg_write(m, data, len, e);
}

int store_msg_finish(struct store_msg *m, const struct store_msg_meta *meta,
                     const char *const *webhooks, size_t n_webhooks, int64_t now,
                     struct store_msg_result *res, struct err *e)
{
    return OPS(m)->msg_finish(m, meta, webhooks, n_webhooks, now, res, e);
}

uint64_t store_msg_size(const struct store_msg *m)
{
    return m ? OPS(m)->msg_size(m) : 0;
}

int store_msg_peek(struct store_msg *m, const void **mem, size_t *len, int *fd, struct err *e)
{
    if (!m)
        return err_set(e, ERR_USAGE, "store: store_msg_peek: no message");
    return OPS(m)->msg_peek(m, mem, len, fd, e);
}

void store_msg_abort(struct store_msg *m)
{
    if (m)
        OPS(m)->msg_abort(m);
}

int store_body_read(struct store_body *b, uint64_t offset, void *buf, size_t len, size_t *got,
                    struct err *e)
{
    return OPS(b)->body_read(b, offset, buf, len, got, e);
}

void store_body_close(struct store_body *b)
{
    if (b)
        OPS(b)->body_close(b);
}

/* ---- shared checks ------------------------------------------------------------ */

int store_check_name(const char *what, const char *v, struct err *e)
{
    if (!v || !*v)
        return err_set(e, ERR_USAGE, "store: %s name is empty", what);
    if (strlen(v) > STORE_NAME_MAX)
        return err_set(e, ERR_LIMIT, "store: %s name is longer than STORE_NAME_MAX (%d bytes)",
                       what, STORE_NAME_MAX);
    return 0;
}

int store_check_uidl(const char *v, struct err *e)
{
    if (!v || !*v)
        return err_set(e, ERR_USAGE, "store: UIDL is empty");
    if (strlen(v) > STORE_UIDL_MAX)
        return err_set(e, ERR_LIMIT, "store: UIDL is longer than STORE_UIDL_MAX (%d bytes)",
                       STORE_UIDL_MAX);
    return 0;
}

int store_check_owner(const char *owner, struct err *e)
{
    if (!owner || !*owner)
        return err_set(e, ERR_USAGE, "store: lease owner is empty");
    if (strlen(owner) > STORE_OWNER_MAX)
        return err_set(e, ERR_LIMIT, "store: lease owner is longer than STORE_OWNER_MAX (%d bytes)",
                       STORE_OWNER_MAX);
    return 0;
}

int store_cb_stop(struct err *e)
{
    if (e && e->kind == ERR_NONE)
        err_set(e, ERR_USAGE, "store: stopped by the caller's callback");
    return -1;
}
