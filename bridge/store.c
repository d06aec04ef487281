/*
 * store — the one entry of include/store.h: chooses the backend
 * (store_setup) and passes each call to the handle's backend through its ops
 * table (bridge/store_impl.h).  Also what is the same on every backend: the
 * argument checks (worded the same way everywhere), the names and ids, and
 * a message on its way in (spool, SHA-256, limits) up to the backend's own
 * insert (ops->msg_store).
 */
#include "store.h"
#include "store_impl.h"

#include "codec.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
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
    if (!o->close || !o->batch_rollback || !o->spool_dir || !o->msg_store || !o->body_read ||
        !o->body_close)
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

bool store_is_shared(void)
{
    return backend == &store_pg_ops;
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

/* ---- recording outcomes --------------------------------------------------------- */

int store_delivery_record_many(struct store *st, const char *owner, struct store_record *recs,
                               size_t n, struct err *e)
{
    if (!st)
        return err_set(e, ERR_USAGE, "store: store_delivery_record_many: no store");
    if (OPS(st)->delivery_record_many)
        return OPS(st)->delivery_record_many(st, owner, recs, n, e);
    for (size_t i = 0; i < n; i++) {
        struct store_record *r = &recs[i];
        err_clear(&r->err);
        r->result = store_delivery_record(st, owner, r->id, &r->a, r->status, r->next_attempt_at,
                                          &r->err);
    }
    return 0;
}

/* ---- reading a message for its event ------------------------------------------ */

struct load_buf {
    char *p;
    size_t len, cap;
};

static int load_sink(void *ctx, const void *data, size_t len, struct err *e)
{
    struct load_buf *b = ctx;
    if (b->len + len > b->cap) {
        size_t cap = (b->len + len) * 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return err_set(e, ERR_INTERNAL, "store: out of memory reading a stored message");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

int store_msg_load(struct store *st, int64_t id, struct store_msg_info *out, size_t mem_max,
                   char **body, size_t *body_len, unsigned char link_key[STORE_LINK_KEY_LEN],
                   int64_t now, struct err *e)
{
    *body = NULL;
    *body_len = 0;
    if (!st)
        return err_set(e, ERR_USAGE, "store: store_msg_load: no store");
    if (OPS(st)->msg_load) /* in one read */
        return OPS(st)->msg_load(st, id, out, mem_max, body, body_len, link_key, now, e);
    int r = store_msg_get(st, id, out, e);
    if (r != 0 || out->body_purged_at)
        return r;
    if (link_key && store_link_key(st, link_key, NULL, now, e) < 0)
        return -1;
    if (out->size > mem_max)
        return 0;
    struct load_buf b = {0};
    r = store_msg_stream(st, id, load_sink, &b, e);
    if (r != 0) {
        free(b.p);
        return r;
    }
    if (!b.p && !(b.p = malloc(1)))
        return err_set(e, ERR_INTERNAL, "store: out of memory reading a stored message");
    *body = b.p;
    *body_len = b.len;
    return 0;
}

void store_loaded_free(struct store_loaded *l, size_t n)
{
    for (size_t i = 0; l && i < n; i++) {
        free(l[i].body);
        l[i].body = NULL;
        l[i].body_len = 0;
    }
}

int store_msg_load_many(struct store *st, struct store_loaded *l, size_t n, size_t mem_max,
                        size_t total_max, unsigned char link_key[STORE_LINK_KEY_LEN],
                        int64_t now, struct err *e)
{
    if (!st)
        return err_set(e, ERR_USAGE, "store: store_msg_load_many: no store");
    if (n > STORE_LOAD_MANY_MAX)
        return err_set(e, ERR_LIMIT, "store: %zu messages to read at once (limit %d)", n,
                       STORE_LOAD_MANY_MAX);
    for (size_t i = 0; i < n; i++)
        l[i] = (struct store_loaded){.id = l[i].id, .result = STORE_NOTFOUND};
    if (OPS(st)->msg_load_many) /* in one read */
        return OPS(st)->msg_load_many(st, l, n, mem_max, total_max, link_key, now, e);
    /* the key on its own: the first message may be one that is not read */
    if (link_key && store_link_key(st, link_key, NULL, now, e) < 0)
        return -1;
    size_t left = total_max; /* bodies read while they fit, in order */
    for (size_t i = 0; i < n; i++) {
        size_t max = left < mem_max ? left : mem_max;
        int r = store_msg_load(st, l[i].id, &l[i].info, max, &l[i].body, &l[i].body_len, NULL,
                               now, e);
        if (r < 0) {
            store_loaded_free(l, n);
            return -1;
        }
        l[i].result = r;
        if (r == 0 && !l[i].body && !l[i].info.body_purged_at && l[i].info.size <= mem_max)
            left = 0; /* it would have passed total_max: none after it either */
        left -= l[i].body_len;
    }
    return 0;
}

/* ---- a message on its way in ------------------------------------------------- */

int store_msg_begin(struct store *st, const char *account, const char *uidl,
                    struct store_msg **out, struct err *e)
{
    if (!st)
        return err_set(e, ERR_USAGE, "store: store_msg_begin: no store");
    *out = NULL;
    if (store_check_name("account", account, e) < 0 || store_check_uidl(uidl, e) < 0)
        return -1;
    struct store_msg *m = calloc(1, sizeof *m);
    if (!m)
        return err_set(e, ERR_INTERNAL, "store: out of memory");
    m->hdr.ops = OPS(st);
    m->st = st;
    memcpy(m->account, account, strlen(account) + 1);
    memcpy(m->uidl, uidl, strlen(uidl) + 1);
    spool_init(&m->sp, OPS(st)->spool_dir(st), STORE_SPOOL_MEM_MAX, 0);
    m->sha = EVP_MD_CTX_new();
    if (!m->sha || EVP_DigestInit_ex(m->sha, EVP_sha256(), NULL) != 1) {
        store_msg_abort(m);
        return err_set(e, ERR_INTERNAL, "store: cannot start SHA-256");
    }
    *out = m;
    return 0;
}

int store_msg_write(struct store_msg *m, const void *data, size_t len, struct err *e)
{
    if (m->failed)
        return err_set(e, ERR_USAGE, "store: message write after an earlier error");
    if (len == 0)
        return 0;
    if (len > STORE_MSG_MAX || m->sp.size + len > STORE_MSG_MAX) {
        m->failed = true;
        return err_set(e, ERR_LIMIT,
                       "store: message for account %s is larger than STORE_MSG_MAX (%llu bytes)",
                       m->account, (unsigned long long)STORE_MSG_MAX);
    }
    if (EVP_DigestUpdate(m->sha, data, len) != 1) {
        m->failed = true;
        return err_set(e, ERR_INTERNAL, "store: SHA-256 update failed");
    }
    if (spool_write(&m->sp, data, len, e) < 0) {
        m->failed = true;
        err_prefix(e, "store: spool");
        return -1;
    }
    return 0;
}

/* What every finish checks first; the SHA-256 in hex. */
static int finish_check(struct store_msg *m, const char *const *webhooks, size_t n_webhooks,
                        char hex[STORE_SHA256_HEX + 1], struct err *e)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (m->failed)
        return err_set(e, ERR_USAGE, "store: message finish after an earlier write error");
    if (store_check_webhooks("message", webhooks, n_webhooks, e) < 0)
        return -1;
    if (EVP_DigestFinal_ex(m->sha, md, &mdlen) != 1 || mdlen != 32)
        return err_set(e, ERR_INTERNAL, "store: SHA-256 final failed");
    codec_hex_encode(md, 32, hex);
    return 0;
}

int store_msg_finish_many(struct store *st, struct store_finish *f, size_t n, struct err *e)
{
    char (*hex)[STORE_SHA256_HEX + 1] = n ? calloc(n, sizeof *hex) : NULL;
    int rv = 0;
    if (!st)
        rv = err_set(e, ERR_USAGE, "store: store_msg_finish_many: no store");
    for (size_t i = 0; i < n; i++) {
        f[i].result = -1;
        err_clear(&f[i].err);
        memset(&f[i].res, 0, sizeof f[i].res);
        if (rv == 0 && (!hex || !OPS(st)->msg_store_many || f[i].m->st != st)) {
            /* one by one (it consumes m) */
            f[i].result = store_msg_finish(f[i].m, f[i].meta, f[i].webhooks, f[i].n_webhooks,
                                           f[i].now, &f[i].res, &f[i].err);
            f[i].m = NULL;
        } else if (rv == 0 && finish_check(f[i].m, f[i].webhooks, f[i].n_webhooks, hex[i],
                                           &f[i].err) == 0) {
            f[i].result = 1; /* to store */
        }
    }
    if (rv == 0 && hex && OPS(st)->msg_store_many)
        OPS(st)->msg_store_many(st, f, (const char(*)[STORE_SHA256_HEX + 1])hex, n);
    for (size_t i = 0; i < n; i++) {
        if (!f[i].m)
            continue;
        if (f[i].result == 1) /* the backend left it: an internal slip */
            f[i].result = err_set(&f[i].err, ERR_INTERNAL, "store: message not stored");
        if (f[i].result == 0) {
            f[i].res.size = f[i].m->sp.size;
            memcpy(f[i].res.sha256, hex[i], sizeof hex[i]);
        } else if (rv < 0) {
            f[i].err = *e;
        }
        store_msg_abort(f[i].m);
        f[i].m = NULL;
    }
    free(hex);
    return rv;
}

int store_msg_finish(struct store_msg *m, const struct store_msg_meta *meta,
                     const char *const *webhooks, size_t n_webhooks, int64_t now,
                     struct store_msg_result *res, struct err *e)
{
    int r = -1;
    char hex[STORE_SHA256_HEX + 1];
    int64_t id = 0, dup = 0;
    if (finish_check(m, webhooks, n_webhooks, hex, e) < 0)
        goto out;
    if (m->hdr.ops->msg_store(m, meta, webhooks, n_webhooks, now, hex, &id, &dup, e) < 0)
        goto out;
    if (res) {
        res->id = id;
        res->duplicate_of = dup;
        res->size = m->sp.size;
        memcpy(res->sha256, hex, sizeof hex);
    }
    r = 0;
out:
    store_msg_abort(m);
    return r;
}

uint64_t store_msg_size(const struct store_msg *m)
{
    return m ? m->sp.size : 0;
}

int store_msg_peek(struct store_msg *m, const void **mem, size_t *len, int *fd, struct err *e)
{
    if (!m)
        return err_set(e, ERR_USAGE, "store: store_msg_peek: no message");
    if (m->failed)
        return err_set(e, ERR_USAGE, "store: message peek after an earlier error");
    *mem = m->sp.fd >= 0 ? NULL : m->sp.mem;
    *len = m->sp.fd >= 0 ? (size_t)m->sp.size : m->sp.len;
    *fd = m->sp.fd;
    return 0;
}

void store_msg_abort(struct store_msg *m)
{
    if (!m)
        return;
    spool_free(&m->sp);
    EVP_MD_CTX_free(m->sha);
    free(m);
}

bool store_dedupe_since(const struct store_msg_meta *meta, int64_t now, int64_t *since)
{
    if (!meta || meta->dedupe_window_ms <= 0 || !meta->message_id || !*meta->message_id)
        return false;
    *since = now - meta->dedupe_window_ms;
    return true;
}

int store_new_event_key(char *key, struct err *e)
{
    unsigned char rnd[STORE_KEY_HEX / 2];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return err_set(e, ERR_INTERNAL, "store: no random bytes for an event key");
    codec_hex_encode(rnd, sizeof rnd, key);
    return 0;
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

/* ---- names ------------------------------------------------------------- */

static const char *const uidl_state_names[] = {"ignored", "stored", "delivered", "deleted"};
static const char *const dstatus_names[] = {"pending", "delivered", "failed", "dead", "dropped"};
#define N_DSTATUS 5

const char *store_uidl_state_name(enum store_uidl_state s)
{
    return (unsigned)s < 4 ? uidl_state_names[s] : "unknown";
}

const char *store_dstatus_name(enum store_dstatus s)
{
    return (unsigned)s < N_DSTATUS ? dstatus_names[s] : "unknown";
}

int store_dstatus_parse(const char *name, enum store_dstatus *out, struct err *e)
{
    for (int i = 0; name && i < N_DSTATUS; i++)
        if (strcmp(name, dstatus_names[i]) == 0) {
            *out = (enum store_dstatus)i;
            return 0;
        }
    return err_set(e, ERR_USAGE,
                   "store: unknown delivery status (want pending, delivered, failed, dead or dropped)");
}

/* ---- ids --------------------------------------------------------------- */

static char *id_format(const char *prefix, int64_t id, char *buf)
{
    int n = snprintf(buf, STORE_ID_MAX, "%s%" PRId64, prefix, id);
    if (n < 0 || n >= STORE_ID_MAX)
        buf[0] = '\0'; /* cannot happen: 2 + 19 digits + NUL < STORE_ID_MAX */
    return buf;
}

char *store_msg_id_format(int64_t id, char *buf)
{
    return id_format("m_", id, buf);
}

char *store_delivery_id_format(int64_t id, char *buf)
{
    return id_format("d_", id, buf);
}

/* prefix then a positive decimal without sign or leading zero. */
static int id_parse(const char *s, const char *prefix, const char *what, int64_t *id,
                    struct err *e)
{
    size_t pl = strlen(prefix);
    if (!s || strncmp(s, prefix, pl) != 0)
        return err_set(e, ERR_USAGE, "store: malformed %s", what);
    const char *d = s + pl;
    size_t n = strspn(d, "0123456789");
    if (n == 0 || n > 19 || d[n] != '\0' || d[0] == '0')
        return err_set(e, ERR_USAGE, "store: malformed %s", what);
    errno = 0;
    char *end = NULL;
    long long v = strtoll(d, &end, 10);
    if (errno == ERANGE || end != d + n || v <= 0)
        return err_set(e, ERR_USAGE, "store: %s out of range", what);
    *id = (int64_t)v;
    return 0;
}

int store_msg_id_parse(const char *s, int64_t *id, struct err *e)
{
    return id_parse(s, "m_", "message id", id, e);
}

int store_delivery_id_parse(const char *s, int64_t *id, struct err *e)
{
    return id_parse(s, "d_", "delivery id", id, e);
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

int store_check_uidls(const char *const *uidls, size_t n, struct err *e)
{
    if (n > STORE_UIDLS_MAX)
        return err_set(e, ERR_LIMIT, "store: %zu UIDLs in one call, over STORE_UIDLS_MAX (%d)", n,
                       STORE_UIDLS_MAX);
    for (size_t i = 0; i < n; i++)
        if (store_check_uidl(uidls[i], e) < 0)
            return -1;
    return 0;
}

int store_check_webhooks(const char *what, const char *const *webhooks, size_t n, struct err *e)
{
    if (n > STORE_WEBHOOKS_MAX)
        return err_set(e, ERR_LIMIT, "store: %zu webhooks for one %s, over STORE_WEBHOOKS_MAX (%d)",
                       n, what, STORE_WEBHOOKS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (store_check_name("webhook", webhooks[i], e) < 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(webhooks[i], webhooks[j]) == 0)
                return err_set(e, ERR_USAGE, "store: webhook %s is listed twice", webhooks[i]);
    }
    return 0;
}

int store_check_event(const char *account, const char *type, const char *data,
                      const char *const *webhooks, size_t n, struct err *e)
{
    if (store_check_name("account", account, e) < 0 ||
        store_check_webhooks("event", webhooks, n, e) < 0)
        return -1;
    if (!type || !*type || strlen(type) > STORE_EVENT_TYPE_MAX)
        return err_set(e, ERR_USAGE,
                       "store: an event type must be 1 to STORE_EVENT_TYPE_MAX (%d) bytes",
                       STORE_EVENT_TYPE_MAX);
    if (!data || strlen(data) > STORE_EVENT_DATA_MAX)
        return err_set(e, ERR_LIMIT,
                       "store: event data missing or over STORE_EVENT_DATA_MAX (%d bytes)",
                       STORE_EVENT_DATA_MAX);
    return 0;
}

int store_check_instance(const struct store_instance *in, struct err *e)
{
    if (store_check_owner(in->id, e) < 0)
        return -1;
    if (strnlen(in->host, sizeof in->host) > STORE_HOST_MAX ||
        strnlen(in->public_url, sizeof in->public_url) > STORE_URL_MAX)
        return err_set(e, ERR_LIMIT, "store: instance host or public_url is too long");
    return 0;
}

int store_check_sealed(const char *what, const unsigned char *p, size_t len, struct err *e)
{
    if (p && len > STORE_SEALED_MAX)
        return err_set(e, ERR_LIMIT, "store: sealed %s of %zu bytes, over STORE_SEALED_MAX (%d)",
                       what, len, STORE_SEALED_MAX);
    return 0;
}

int store_check_flow(const char *flow, struct err *e)
{
    if (!flow || !*flow)
        return err_set(e, ERR_USAGE, "store: OAuth2 flow name is empty");
    if (strlen(flow) > STORE_FLOW_MAX)
        return err_set(e, ERR_LIMIT, "store: OAuth2 flow name longer than STORE_FLOW_MAX (%d)",
                       STORE_FLOW_MAX);
    return 0;
}

int store_check_record(const char *owner, const struct store_attempt *a,
                       enum store_dstatus status, struct err *e)
{
    if (store_check_owner(owner, e) < 0)
        return -1;
    if (status != STORE_D_DELIVERED && status != STORE_D_FAILED && status != STORE_D_DEAD)
        return err_set(e, ERR_USAGE,
                       "store: record delivery: new status must be delivered, failed or dead");
    if (a->outcome && strlen(a->outcome) > STORE_OUTCOME_MAX)
        return err_set(e, ERR_LIMIT,
                       "store: record delivery: outcome longer than STORE_OUTCOME_MAX (%d bytes)",
                       STORE_OUTCOME_MAX);
    return 0;
}

int store_check_settled(const char *verb, const char *done_verb, int64_t id,
                        enum store_dstatus cur, struct err *e)
{
    char idbuf[STORE_ID_MAX];
    if (cur == STORE_D_FAILED || cur == STORE_D_DEAD)
        return 0;
    return err_set(e, ERR_USAGE, "store: %s %s: it is %s; only failed or dead can be %s", verb,
                   store_delivery_id_format(id, idbuf), store_dstatus_name(cur), done_verb);
}

int store_err_body_purged(int64_t id, struct err *e)
{
    char idbuf[STORE_ID_MAX];
    return err_set(e, ERR_USAGE, "store: retry %s: the message body was purged",
                   store_delivery_id_format(id, idbuf));
}

int store_check_retry_bulk(const char *webhook, enum store_dstatus status, size_t max,
                           struct err *e)
{
    if (status != STORE_D_FAILED && status != STORE_D_DEAD)
        return err_set(e, ERR_USAGE, "store: only failed or dead deliveries can be retried");
    if (max == 0 || max > STORE_RETRY_BULK_MAX)
        return err_set(e, ERR_LIMIT, "store: retry up to 1..STORE_RETRY_BULK_MAX (%d) at once",
                       STORE_RETRY_BULK_MAX);
    if (webhook && store_check_name("webhook", webhook, e) < 0)
        return -1;
    return 0;
}

int store_cursor_parse(const char *cursor, int64_t *before, struct err *e)
{
    if (!cursor || !*cursor) {
        *before = INT64_MAX;
        return 0;
    }
    if (id_parse(cursor, "c", "cursor", before, e) < 0)
        return err_set(e, ERR_USAGE, "store: malformed cursor");
    return 0;
}

int store_check_account_uidls(const char *account, const char *const *uidls, size_t n,
                              struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_uidls(uidls, n, e) < 0)
        return -1;
    return 0;
}

int store_check_list(const enum store_dstatus *status, const char *account, size_t limit,
                     const char *cursor, char *next_cursor, int64_t *before, struct err *e)
{
    next_cursor[0] = '\0';
    err_clear(e);
    if (limit < 1 || limit > STORE_LIST_MAX)
        return err_set(e, ERR_USAGE, "store: list limit must be 1..%d", STORE_LIST_MAX);
    if (status && (unsigned)*status > STORE_D_DROPPED)
        return err_set(e, ERR_USAGE, "store: list: unknown status");
    if (account && store_check_name("account", account, e) < 0)
        return -1;
    return store_cursor_parse(cursor, before, e);
}

int store_check_account_state(const char *account, const struct store_account_state *in,
                              size_t *state_len, struct err *e)
{
    if (store_check_name("account", account, e) < 0)
        return -1;
    size_t sl = strnlen(in->state, sizeof in->state);
    if (sl == 0)
        return err_set(e, ERR_USAGE, "store: account state name is empty");
    if (sl > STORE_STATE_MAX)
        return err_set(e, ERR_LIMIT, "store: account state name longer than STORE_STATE_MAX (%d)",
                       STORE_STATE_MAX);
    if (strnlen(in->last_error_code, sizeof in->last_error_code) > STORE_ERROR_CODE_MAX)
        return err_set(e, ERR_LIMIT,
                       "store: account last-error code longer than STORE_ERROR_CODE_MAX (%d)",
                       STORE_ERROR_CODE_MAX);
    *state_len = sl;
    return 0;
}

int store_check_lease_due(const char *owner, const char *webhook, int64_t lease_ms, size_t max,
                          struct err *e)
{
    if (store_check_owner(owner, e) < 0 || (webhook && store_check_name("webhook", webhook, e) < 0))
        return -1;
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: lease deliveries: lease_ms must be positive");
    if (max > STORE_DUE_MAX)
        return err_set(e, ERR_LIMIT, "store: lease of %zu deliveries, over STORE_DUE_MAX (%d)",
                       max, STORE_DUE_MAX);
    return 0;
}

int store_check_tokens(const char *what, const char *account, const char *flow,
                       const struct store_oauth2_tokens *t, struct err *e)
{
    if (store_check_name("account", account, e) < 0 || (flow && store_check_flow(flow, e) < 0))
        return -1;
    if (!t || !t->access || !t->access_len)
        return err_set(e, ERR_USAGE, "store: %s needs an access token", what);
    if (store_check_sealed("access token", t->access, t->access_len, e) < 0 ||
        store_check_sealed("refresh token", t->refresh, t->refresh_len, e) < 0)
        return -1;
    return 0;
}

int store_check_oauth2_lease(const char *account, const char *owner, int64_t lease_ms,
                             bool create, const char *flow, struct err *e)
{
    if (store_check_name("account", account, e) < 0 || store_check_owner(owner, e) < 0)
        return -1;
    if (lease_ms <= 0)
        return err_set(e, ERR_USAGE, "store: OAuth2 lease: lease_ms must be positive");
    if (create && store_check_flow(flow, e) < 0)
        return -1;
    return 0;
}

int store_hours_init(int64_t now, size_t hours, struct store_hour *out, int64_t *first,
                     struct err *e)
{
    if (hours < 1 || hours > STORE_STATS_HOURS_MAX)
        return err_set(e, ERR_USAGE, "store: %zu hours asked, not 1..STORE_STATS_HOURS_MAX (%d)",
                       hours, STORE_STATS_HOURS_MAX);
    *first = (now >= 0 ? now / STORE_HOUR_MS : 0) - (int64_t)hours + 1;
    memset(out, 0, hours * sizeof *out);
    for (size_t i = 0; i < hours; i++)
        out[i].start = (*first + (int64_t)i) * STORE_HOUR_MS;
    return 0;
}

int store_webhook_stats_init(const char *webhook, struct store_webhook_stats *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    out->p50_ms = out->p99_ms = -1;
    return store_check_name("webhook", webhook, e);
}
