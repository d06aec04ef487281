/* api_fixture.h — the REST API (api_start) in the test process, over real
 * loopback HTTP, with a runtime of the test's own instead of the daemon, a
 * real store in a temporary state directory, and a configuration loaded
 * from a file written here.  For the unit tests of the resource handlers
 * (test_api_*.c); the whole bridge is tested in tests/integration.
 *
 * Include it after <cmocka.h>: the request helpers below check answers
 * with cmocka's assertions.  A test file's group setup starts its fixture
 * (fix_start, fix_start_top) and sets *state to it; fix_teardown stops it.
 * Requests: fix_call (authorized, printf-style target, the status back),
 * fix_expect (status and body fragments checked, the answer freed),
 * fix_path (a target for fix_expect from a format);
 * stored messages: fix_stored; accounts in the configuration: FIX_ACCOUNT. */
#ifndef API_FIXTURE_H
#define API_FIXTURE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdarg.h>

#include "api.h"
#include "cfgref.h"
#include "config.h"
#include "runtime.h"
#include "store.h"
#include "tmpstore.h"

#define FIX_TOKEN "api-unit-test-token-42"
#define FIX_AUTH "Authorization: Bearer " FIX_TOKEN "\r\n"
#define FIX_ACCOUNTS_MAX 4
#define FIX_TARGET_MAX 512   /* a request target built by fix_call/fix_expect */
#define FIX_HEADERS_MAX 1024 /* the request headers fix_call adds FIX_AUTH to */

/* An account of the configuration (a JSON object for fix_start's list):
 * name, on 127.0.0.1, user "u" with FIX_PW, plus `extra` members (a
 * string literal starting with ", ", or ""). */
#define FIX_ACCOUNT(name, extra)                                                          \
    "{\"name\": \"" name "\", \"host\": \"127.0.0.1\", \"username\": \"u\", "             \
    "\"password_env\": \"FIX_PW\"" extra "}"

/* The test's side of the runtime: accounts by name, with a state and a
 * backoff; what the API asked for is counted. */
struct fix_account {
    const char *name;
    enum account_state state;
    int64_t backoff_s;    /* > 0: poll_now answers RUNTIME_POLL_BACKOFF */
    int polls;            /* polls queued */
};

struct fixture {
    char dir[TMPDIR_MAX];
    char state[96];
    struct cfgref *ref;
    struct runtime rt;
    struct api *api;
    int port;
    bool stopping;
    int wakes;
    struct fix_account acc[FIX_ACCOUNTS_MAX];
    size_t nacc;
};

static inline struct fix_account *fix_find(struct fixture *f, const char *name)
{
    for (size_t i = 0; i < f->nacc; i++)
        if (strcmp(f->acc[i].name, name) == 0)
            return &f->acc[i];
    return NULL;
}

static inline bool fix_stopping(void *ctx) { return ((struct fixture *)ctx)->stopping; }
static inline struct cfgref *fix_config(void *ctx)
{
    return cfgref_hold(((struct fixture *)ctx)->ref);
}
static inline void fix_wake(void *ctx) { ((struct fixture *)ctx)->wakes++; }

static inline int fix_account(void *ctx, const char *name, struct runtime_account *out)
{
    struct fix_account *a = fix_find(ctx, name);
    if (!a)
        return -1;
    memset(out, 0, sizeof *out);
    out->state = a->state;
    if (a->state != ACCOUNT_IDLE)
        snprintf(out->last_error, sizeof out->last_error, "Authentication: refused");
    out->last_attempt_at = 1700000000000;
    return 0;
}

static inline enum runtime_poll fix_poll(void *ctx, const char *name,
                                         int64_t *retry_after_s)
{
    struct fix_account *a = fix_find(ctx, name);
    if (!a)
        return RUNTIME_POLL_UNKNOWN;
    if (a->backoff_s > 0) {
        *retry_after_s = a->backoff_s;
        return RUNTIME_POLL_BACKOFF;
    }
    a->polls++;
    return RUNTIME_POLL_QUEUED;
}

static const struct runtime_ops fix_ops = {fix_stopping, fix_config, fix_wake, fix_account,
                                           fix_poll};

static inline int fix_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

/* Start the API with `api_extra` (JSON members added to "api", may be ""),
 * `accounts` (the JSON array's members) and `top_extra` (top-level members,
 * may be "").  0, or -1. */
static inline int fix_start_top(struct fixture *f, const char *api_extra, const char *accounts,
                                const char *top_extra)
{
    if (tmpdir_make(f->dir, sizeof f->dir, "api") < 0)
        return -1;
    snprintf(f->state, sizeof f->state, "%s/state", f->dir);
    f->port = fix_free_port();
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", f->dir);
    FILE *fp = fopen(path, "w");
    if (!fp)
        return -1;
    fprintf(fp,
            "{\"state_dir\": \"%s\",\n"
            " \"api\": {\"listen\": \"127.0.0.1:%d\", \"threads\": 2, \"mailbox_workers\": 2,\n"
            "         \"tokens\": [{\"name\": \"t\", \"token_env\": \"FIX_TOKEN\"}]%s%s},\n"
            " \"webhooks\": [{\"name\": \"hook\", \"url\": \"http://127.0.0.1:9/\",\n"
            "                \"secret_env\": \"FIX_SECRET\", \"inline_attachments_max\": 16}],\n"
            " \"accounts\": [%s]%s%s}\n",
            f->state, f->port, api_extra[0] ? ", " : "", api_extra, accounts,
            top_extra[0] ? ",\n " : "", top_extra);
    fclose(fp);
    chmod(path, 0600);
    setenv("FIX_TOKEN", FIX_TOKEN, 1);
    setenv("FIX_PW", "p", 1);
    setenv("FIX_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1);
    struct config_diag d = {0};
    struct config *cfg = config_load(path, &d);
    for (size_t i = 0; i < d.count; i++)
        fprintf(stderr, "%s\n", d.lines[i]);
    config_diag_free(&d);
    unlink(path);
    if (!cfg || !(f->ref = cfgref_new(cfg)))
        return -1;
    f->rt = (struct runtime){&fix_ops, f};
    struct err e;
    f->api = api_start(&f->rt, &e);
    if (!f->api)
        fprintf(stderr, "api_start: %s\n", e.msg);
    return f->api ? 0 : -1;
}

static inline int fix_start(struct fixture *f, const char *api_extra, const char *accounts)
{
    return fix_start_top(f, api_extra, accounts, "");
}

static inline void fix_stop(struct fixture *f)
{
    api_stop(&f->api);
    cfgref_put(f->ref);
    f->ref = NULL;
    tmpdir_remove(f->dir);
}

/* ---- a small HTTP client --------------------------------------------------------------- */

struct fix_resp {
    int status;
    char head[4096];
    char *body;   /* malloc'd, NUL-terminated */
    size_t len;
};

static inline void fix_resp_free(struct fix_resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* One request ("Connection: close"), answered within 30 s. */
static inline void fix_req(struct fixture *f, const char *method, const char *target,
                    const char *headers, struct fix_resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        abort();
    char req[2048];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n",
                     method, target, headers ? headers : "");
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        abort();
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (buf && poll(&p, 1, 30000) == 1) {
        if (len == cap && !(buf = realloc(buf, (cap *= 2) + 1)))
            break;
        ssize_t k = recv(fd, buf + len, cap - len, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    close(fd);
    if (!buf)
        abort();
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (sep && sscanf(buf, "HTTP/1.1 %d", &r->status) == 1) {
        snprintf(r->head, sizeof r->head, "%.*s", (int)(sep - buf), buf);
        r->len = len - (size_t)(sep + 4 - buf);
        r->body = malloc(r->len + 1);
        memcpy(r->body, sep + 4, r->len);
        r->body[r->len] = '\0';
    }
    free(buf);
}

static inline bool fix_has(const struct fix_resp *r, const char *s)
{
    return strcasestr(r->head, s) != NULL;
}

static inline void fix_vcall(struct fixture *f, const char *method, const char *headers,
                             struct fix_resp *r, const char *fmt, va_list ap)
{
    char target[FIX_TARGET_MAX], h[FIX_HEADERS_MAX];
    int n = vsnprintf(target, sizeof target, fmt, ap);
    if (n < 0 || (size_t)n >= sizeof target)
        fail_msg("request target longer than %d bytes", FIX_TARGET_MAX - 1);
    n = snprintf(h, sizeof h, FIX_AUTH "%s", headers ? headers : "");
    if (n < 0 || (size_t)n >= sizeof h)
        fail_msg("request headers longer than %d bytes", FIX_HEADERS_MAX - 1);
    fix_req(f, method, target, h, r);
}

/* One authorized request (FIX_AUTH, then `headers` if not NULL) to the
 * target made from fmt; the answer in *r (the caller frees it), its status
 * returned. */
__attribute__((format(printf, 5, 6))) static inline int
fix_call(struct fixture *f, const char *method, const char *headers, struct fix_resp *r,
         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fix_vcall(f, method, headers, r, fmt, ap);
    va_end(ap);
    return r->status;
}

/* A request target made from fmt into buf (FIX_TARGET_MAX bytes), for
 * fix_expect; returns buf. */
__attribute__((format(printf, 2, 3))) static inline const char *fix_path(char *buf,
                                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, FIX_TARGET_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= FIX_TARGET_MAX)
        fail_msg("request target longer than %d bytes", FIX_TARGET_MAX - 1);
    return buf;
}

/* One authorized request to `target` that must answer `status` with a body
 * holding each of the NULL-terminated fragments that follow; the answer is
 * freed.  A mismatch fails the test, saying what and where. */
static inline void fix_expect(struct fixture *f, const char *method, const char *target,
                              int status, ...)
{
    struct fix_resp r;
    fix_call(f, method, NULL, &r, "%s", target);
    if (r.status != status) {
        print_error("%s %s: body %s\n", method, target, r.body ? r.body : "(none)");
        fix_resp_free(&r);
        fail_msg("%s %s answered %d, expected %d", method, target, r.status, status);
    }
    va_list ap;
    va_start(ap, status);
    for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;) {
        if (!r.body || !strstr(r.body, frag)) {
            print_error("%s %s: body %s\n", method, target, r.body ? r.body : "(none)");
            va_end(ap);
            fix_resp_free(&r);
            fail_msg("%s %s: the body has no %s", method, target, frag);
        }
    }
    va_end(ap);
    fix_resp_free(&r);
}

/* The group teardown: stops the fixture the setup put in *state. */
static inline int fix_teardown(void **state)
{
    fix_stop(*state);
    return 0;
}

/* A message of `len` bytes at raw stored for account/uidl in the
 * fixture's store (its own handle, closed again), for the webhooks listed,
 * received at `at`; its id, or -1 (said on stderr). */
static inline int64_t fix_stored(struct fixture *f, const char *account, const char *uidl,
                                 const char *raw, size_t len, const char *const *hooks,
                                 size_t n_hooks, const struct store_msg_meta *meta, int64_t at)
{
    struct err e;
    struct store *st = store_open(f->state, &e);
    struct store_msg *m = NULL;
    struct store_msg_result res;
    if (!st || store_msg_begin(st, account, uidl, &m, &e) < 0 ||
        store_msg_write(m, raw, len, &e) < 0 ||
        store_msg_finish(m, meta, hooks, n_hooks, at, &res, &e) < 0) {
        fprintf(stderr, "store (%s/%s): %s\n", account, uidl, e.msg);
        store_close(st);
        return -1;
    }
    store_close(st);
    return res.id;
}

#endif
