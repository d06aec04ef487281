/* webhook_sender — the sender: requests queued by name, sent with libcurl's
 * multi interface, bodies streamed and signed as they go; one module with
 * webhook.c (include/webhook.h), tested in tests/unit/test_webhook.c. */
#include "webhook.h"
#include "clock.h"
#include "codec.h"
#include "url.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#ifndef POP3BRIDGE_VERSION
#error "POP3BRIDGE_VERSION must be defined (the Makefile does)"
#endif

/* ---- sender ------------------------------------------------------------ */

struct xfer {
    struct xfer *prev, *next;     /* its queue's pending list, or the active list */
    struct webhook_sender *s;
    size_t q;                     /* index of its queue */
    CURL *easy;
    struct curl_slist *hdrs;      /* custom headers, then ours at start */
    char *body;                   /* a body in memory, or NULL ... */
    size_t body_len;
    int (*prepare)(void *user, struct webhook_signer *sig, int *fd, uint64_t *len,
                   struct err *e); /* ... one written just before the start */
    int fd;                       /* the prepared body's file, -1 */
    uint64_t file_len, file_off;
    char id[WEBHOOK_ID_MAX + 1];
    unsigned char keys[WEBHOOK_KEYS_MAX][WEBHOOK_KEY_MAX];
    size_t key_lens[WEBHOOK_KEYS_MAX];
    size_t n_keys;
    int64_t fixed_ts;             /* 0: now, at start */
    int64_t started_ms;
    void (*done)(void *user, const struct webhook_result *r);
    void *user;
    size_t keep_len;
    char keep[WEBHOOK_RESPONSE_KEEP];
    char retry_after[WEBHOOK_RETRY_AFTER_RAW_MAX];
    bool retry_after_bad;          /* present but too long to keep */
    char errbuf[CURL_ERROR_SIZE];
    struct webhook_result res;
};

struct list {
    struct xfer *head, *tail;
    size_t n;
};

/* One queue: its requests wait in order; at most `limit` of them run. */
struct queue {
    bool used;
    char name[WEBHOOK_QUEUE_NAME_MAX + 1];
    struct list pending;
    size_t active;
    size_t limit;
};

struct webhook_sender {
    CURLM *multi;
    size_t max_in_flight;
    struct queue queues[WEBHOOK_QUEUES_MAX];
    size_t turn;                  /* the queue asked first for the next free slot */
    size_t pending;               /* requests waiting, in all queues */
    struct list active;
    bool closing;                 /* in webhook_sender_free: submit refused */
    bool running;                 /* in webhook_sender_run: no nesting */
};

static void list_push(struct list *l, struct xfer *x)
{
    x->next = NULL;
    x->prev = l->tail;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
    l->n++;
}

static void list_remove(struct list *l, struct xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        l->tail = x->prev;
    x->prev = x->next = NULL;
    l->n--;
}

/* Header lines may hold credentials: wiped before they are freed. */
static void headers_free(struct curl_slist *l)
{
    for (struct curl_slist *i = l; i; i = i->next)
        if (i->data)
            OPENSSL_cleanse(i->data, strlen(i->data));
    curl_slist_free_all(l);
}

static void xfer_free(struct xfer *x)
{
    if (!x)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    headers_free(x->hdrs);
    free(x->body);
    if (x->fd >= 0)
        close(x->fd);
    OPENSSL_cleanse(x->keys, sizeof x->keys);
    free(x);
}

/* A queue with nothing waiting and nothing running is forgotten. */
static void queue_gc(struct queue *q)
{
    if (q->used && q->pending.n == 0 && q->active == 0)
        q->used = false;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * nmemb;
    size_t room = sizeof x->keep - x->keep_len;
    size_t take = len < room ? len : room;
    memcpy(x->keep + x->keep_len, p, take);
    x->keep_len += take;
    x->res.response_bytes += len; /* the rest is read and dropped */
    return len;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    static const char ra[] = "Retry-After:";
    struct xfer *x = ud;
    size_t len = size * nmemb;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* a new response (after a 1xx): forget the previous one's headers */
        x->retry_after[0] = '\0';
        x->retry_after_bad = false;
    } else if (len >= sizeof ra - 1 && strncasecmp(p, ra, sizeof ra - 1) == 0) {
        const char *v = p + sizeof ra - 1;
        size_t vlen = len - (sizeof ra - 1);
        while (vlen && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ' ||
                        v[vlen - 1] == '\t'))
            vlen--;
        if (vlen >= sizeof x->retry_after) {
            x->retry_after[0] = '\0';
            x->retry_after_bad = true;
        } else {
            memcpy(x->retry_after, v, vlen);
            x->retry_after[vlen] = '\0';
            x->retry_after_bad = false;
        }
    }
    return len;
}

/* The prepared body, read from its file at the transfer's own offset. */
static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct xfer *x = ud;
    size_t want = size * nitems;
    if (x->file_off >= x->file_len)
        return 0;
    if (want > x->file_len - x->file_off)
        want = (size_t)(x->file_len - x->file_off);
    ssize_t n;
    do
        n = pread(x->fd, buf, want, (off_t)x->file_off);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        err_set(&x->res.err, ERR_INTERNAL, "reading the request body from its file: %s",
                n < 0 ? strerror(errno) : "it ended early");
        return CURL_READFUNC_ABORT;
    }
    x->file_off += (uint64_t)n;
    return (size_t)n;
}

/* curl rewinds when it sends the body again (a reused connection closed). */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
    struct xfer *x = ud;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > x->file_len)
        return CURL_SEEKFUNC_CANTSEEK;
    x->file_off = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static enum err_kind curl_kind(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return ERR_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return ERR_CONN;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
        return ERR_TLS;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return ERR_USAGE;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_BAD_CONTENT_ENCODING:
        return ERR_PROTO;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FAILED_INIT:
        return ERR_INTERNAL;
    default:
        return ERR_CONN;
    }
}

/* Fill x->res and call done.  rc is curl's result; own_err, if set, wins. */
static void complete(struct xfer *x, CURLcode rc)
{
    struct webhook_result *r = &x->res;
    long code = 0;
    if (x->easy && x->started_ms &&
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK)
        r->status = (code > 0 && code < 1000) ? (int)code : 0;
    if (r->err.kind == ERR_NONE && rc != CURLE_OK) {
        char text[ERR_MSG_MAX - 32];
        const char *src = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
        err_sanitize(text, sizeof text, src, strlen(src));
        err_set(&r->err, curl_kind(rc), "%s (curl error %d)", text, (int)rc);
    }
    r->retry_after_s = -1;
    if ((r->status == 429 || r->status == 503) && x->retry_after[0] && !x->retry_after_bad)
        r->retry_after_s = webhook_parse_retry_after(x->retry_after, (int64_t)time(NULL));
    r->duration_ms = x->started_ms ? clock_mono_ms() - x->started_ms : 0;
    size_t keep = x->keep_len;
    while (keep && (x->keep[keep - 1] == '\n' || x->keep[keep - 1] == '\r' ||
                    x->keep[keep - 1] == ' ' || x->keep[keep - 1] == '\t'))
        keep--; /* a body's closing line break is not part of its text */
    err_sanitize(r->response, sizeof r->response, x->keep, keep);
    if (r->response_bytes > x->keep_len && x->keep_len == sizeof x->keep) {
        size_t l = strlen(r->response);
        if (l + 4 <= sizeof r->response)
            memcpy(r->response + l, "...", 4);
    }
    x->done(x->user, r);
}

static int append_header(struct curl_slist **l, const char *line)
{
    struct curl_slist *n = curl_slist_append(*l, line);
    if (!n)
        return -1;
    *l = n;
    return 0;
}

/* The body is signed as it is written: from memory, or by the request's
 * prepare callback into a file.  *sig gets the signature.  -1 with
 * x->res.err set. */
static int xfer_sign(struct xfer *x, int64_t ts, char *sig, size_t sig_size)
{
    struct webhook_key keys[WEBHOOK_KEYS_MAX];
    for (size_t i = 0; i < x->n_keys; i++)
        keys[i] = (struct webhook_key){x->keys[i], x->key_lens[i]};
    struct webhook_signer *g = webhook_signer_new_keys(keys, x->n_keys, x->id, ts);
    OPENSSL_cleanse(x->keys, sizeof x->keys);
    x->n_keys = 0;
    if (!g)
        return err_set(&x->res.err, ERR_INTERNAL, "signing the request failed");
    int r = 0;
    if (x->prepare) {
        int fd = -1;
        uint64_t len = 0;
        struct err pe;
        err_clear(&pe);
        if (x->prepare(x->user, g, &fd, &len, &pe) < 0) {
            if (fd >= 0)
                close(fd);
            x->res.prepare_failed = true;
            x->res.err = pe;
            if (pe.kind == ERR_NONE)
                err_set(&x->res.err, ERR_INTERNAL, "the request body could not be written");
            r = -1;
        } else if (fd < 0 || webhook_signer_bytes(g) != len) {
            if (fd >= 0)
                close(fd);
            x->res.prepare_failed = true;
            r = err_set(&x->res.err, ERR_INTERNAL,
                        "the request body written (%llu bytes) is not the body signed "
                        "(%llu bytes)",
                        (unsigned long long)len, (unsigned long long)webhook_signer_bytes(g));
        } else {
            x->fd = fd;
            x->file_len = len;
            x->file_off = 0;
            if (curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) !=
                CURLE_OK)
                r = err_set(&x->res.err, ERR_INTERNAL, "setting up curl failed");
        }
    } else if (webhook_signer_update(g, x->body, x->body_len) < 0) {
        r = err_set(&x->res.err, ERR_INTERNAL, "signing the request failed");
    }
    if (r == 0 && webhook_signer_final(g, sig, sig_size) < 0)
        r = err_set(&x->res.err, ERR_INTERNAL, "signing the request failed");
    webhook_signer_free(g);
    return r;
}

/* Sign now and hand the transfer to curl.  -1 with x->res.err set. */
static int xfer_start(struct webhook_sender *s, struct xfer *x)
{
    char sig[WEBHOOK_SIGS_SIZE];
    char line[WEBHOOK_ID_MAX + WEBHOOK_SIGS_SIZE + 32];
    int64_t ts = x->fixed_ts > 0 ? x->fixed_ts : (int64_t)time(NULL);
    x->res.timestamp = ts;
    if (xfer_sign(x, ts, sig, sizeof sig) < 0)
        return -1;
    int n1 = snprintf(line, sizeof line, "webhook-id: %s", x->id);
    if (n1 < 0 || (size_t)n1 >= sizeof line || append_header(&x->hdrs, line) < 0)
        return err_set(&x->res.err, ERR_INTERNAL, "out of memory building headers");
    int n2 = snprintf(line, sizeof line, "webhook-timestamp: %lld", (long long)ts);
    if (n2 < 0 || (size_t)n2 >= sizeof line || append_header(&x->hdrs, line) < 0)
        return err_set(&x->res.err, ERR_INTERNAL, "out of memory building headers");
    int n3 = snprintf(line, sizeof line, "webhook-signature: %s", sig);
    if (n3 < 0 || (size_t)n3 >= sizeof line || append_header(&x->hdrs, line) < 0)
        return err_set(&x->res.err, ERR_INTERNAL, "out of memory building headers");
    if (append_header(&x->hdrs, "Content-Type: application/json") < 0 ||
        append_header(&x->hdrs, "Expect:") < 0 ||
        curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs) != CURLE_OK)
        return err_set(&x->res.err, ERR_INTERNAL, "out of memory building headers");
    x->started_ms = clock_mono_ms();
    CURLMcode mc = curl_multi_add_handle(s->multi, x->easy);
    if (mc != CURLM_OK) {
        x->started_ms = 0;
        return err_set(&x->res.err, ERR_INTERNAL, "curl_multi_add_handle: %s",
                       curl_multi_strerror(mc));
    }
    list_push(&s->active, x);
    s->queues[x->q].active++;
    return 0;
}

/* The queue that gets the next free slot, or NULL.  Queues take turns; a
 * queue running fewer than its fair share of the sender (max_in_flight over
 * the queues that have work, rounded up) goes before one running more, so
 * a queue whose receiver is slow can only hold the slots nobody else wants. */
static struct queue *pick(struct webhook_sender *s)
{
    size_t busy = 0;
    for (size_t i = 0; i < WEBHOOK_QUEUES_MAX; i++)
        if (s->queues[i].used)
            busy++;
    if (!busy)
        return NULL;
    size_t share = (s->max_in_flight + busy - 1) / busy;
    for (int pass = 0; pass < 2; pass++)
        for (size_t k = 0; k < WEBHOOK_QUEUES_MAX; k++) {
            size_t i = (s->turn + k) % WEBHOOK_QUEUES_MAX;
            struct queue *q = &s->queues[i];
            if (!q->used || !q->pending.n || q->active >= q->limit ||
                (pass == 0 && q->active >= share))
                continue;
            s->turn = (i + 1) % WEBHOOK_QUEUES_MAX;
            return q;
        }
    return NULL;
}

/* Start waiting transfers while slots are free; failures complete at once. */
static int start_queued(struct webhook_sender *s)
{
    int finished = 0;
    struct queue *q;
    while (s->active.n < s->max_in_flight && (q = pick(s))) {
        struct xfer *x = q->pending.head;
        list_remove(&q->pending, x);
        s->pending--;
        if (xfer_start(s, x) < 0) {
            complete(x, CURLE_OK);
            xfer_free(x);
            queue_gc(q);
            finished++;
        }
    }
    return finished;
}

static int collect(struct webhook_sender *s)
{
    int finished = 0;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(s->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;
        struct xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(s->multi, easy); /* m is invalid from here */
        if (!x)
            continue;
        struct queue *q = &s->queues[x->q];
        list_remove(&s->active, x);
        q->active--;
        complete(x, rc);
        xfer_free(x);
        queue_gc(q);
        finished++;
    }
    return finished;
}

struct webhook_sender *webhook_sender_new(int max_in_flight, struct err *e)
{
    if (max_in_flight < 1 || max_in_flight > WEBHOOK_IN_FLIGHT_MAX) {
        err_set(e, ERR_USAGE, "webhook sender: max_in_flight %d not in 1..%d", max_in_flight,
                WEBHOOK_IN_FLIGHT_MAX);
        return NULL;
    }
    struct webhook_sender *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, ERR_INTERNAL, "webhook sender: out of memory");
        return NULL;
    }
    s->multi = curl_multi_init();
    if (!s->multi) {
        free(s);
        err_set(e, ERR_INTERNAL, "webhook sender: curl_multi_init failed");
        return NULL;
    }
    s->max_in_flight = (size_t)max_in_flight;
    curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)max_in_flight);
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)max_in_flight);
    return s;
}

static bool url_ok(const char *url)
{
    return strlen(url) <= WEBHOOK_URL_MAX && url_http_problem(url, 0) == NULL;
}

static bool id_ok(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > WEBHOOK_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c <= 0x20 || c >= 0x7f)
            return false;
    }
    return true;
}

/* The queue named `name` (made if new) with its limit set; NULL with e. */
static struct queue *queue_get(struct webhook_sender *s, const char *name, int limit,
                               struct err *e)
{
    struct queue *q = NULL, *free_slot = NULL;
    for (size_t i = 0; i < WEBHOOK_QUEUES_MAX && !q; i++) {
        if (s->queues[i].used && strcmp(s->queues[i].name, name) == 0)
            q = &s->queues[i];
        else if (!s->queues[i].used && !free_slot)
            free_slot = &s->queues[i];
    }
    if (!q) {
        if (!free_slot) {
            err_set(e, ERR_LIMIT, "webhook submit: %d queues already have requests",
                    WEBHOOK_QUEUES_MAX);
            return NULL;
        }
        q = free_slot;
        memset(q, 0, sizeof *q);
        q->used = true;
        memcpy(q->name, name, strlen(name) + 1);
    }
    q->limit = (size_t)limit;
    return q;
}

static bool credential_ok(const char *v)
{
    size_t len = strlen(v);
    if (len > WEBHOOK_CREDENTIAL_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
            return false;
    return true;
}

/* The request's credentials: well-formed, and over https:// unless allowed.
 * The messages name what is wrong, never a value. */
static int credentials_check(const struct webhook_request *req, struct err *e)
{
    bool any = req->basic_user || req->basic_password || req->bearer || req->n_secret_headers;
    if ((req->basic_user || req->basic_password) && req->bearer)
        return err_set(e, ERR_USAGE, "webhook submit: both basic and bearer credentials");
    if (req->basic_password && !req->basic_user)
        return err_set(e, ERR_USAGE, "webhook submit: a basic password without a user name");
    if (req->basic_user && strchr(req->basic_user, ':'))
        return err_set(e, ERR_USAGE, "webhook submit: a basic user name must not contain ':'");
    const char *const vals[] = {req->basic_user, req->basic_password, req->bearer};
    const char *const what[] = {"basic user name", "basic password", "bearer token"};
    for (size_t i = 0; i < 3; i++)
        if (vals[i] && !credential_ok(vals[i]))
            return err_set(e, ERR_USAGE,
                           "webhook submit: the %s is over %d bytes or has a control character",
                           what[i], WEBHOOK_CREDENTIAL_MAX);
    if (req->n_secret_headers > WEBHOOK_HEADERS_MAX ||
        req->n_headers + req->n_secret_headers > WEBHOOK_HEADERS_MAX ||
        (req->n_secret_headers && !req->secret_headers))
        return err_set(e, ERR_USAGE, "webhook submit: more than %d custom headers",
                       WEBHOOK_HEADERS_MAX);
    for (size_t i = 0; i < req->n_secret_headers; i++)
        if (webhook_header_check(req->secret_headers[i].name, req->secret_headers[i].value, e) <
            0)
            return -1;
    if (any && !req->allow_plaintext_credentials && strncasecmp(req->url, "https://", 8) != 0)
        return err_set(e, ERR_USAGE,
                       "webhook submit: credentials are sent only to https:// URLs (unless "
                       "allow_plaintext_credentials)");
    return 0;
}

/* The request's signing keys: its array, or its one key in *one. */
static const struct webhook_key *req_keys(const struct webhook_request *req,
                                          struct webhook_key *one, size_t *n)
{
    one->key = req->key;
    one->len = req->key_len;
    *n = req->n_keys ? req->n_keys : 1;
    return req->n_keys ? req->keys : one;
}

static const char *req_queue(const struct webhook_request *req, int *limit)
{
    *limit = req->queue_max_in_flight ? req->queue_max_in_flight : WEBHOOK_IN_FLIGHT_DEFAULT;
    return req->queue ? req->queue : "";
}

/* Step 1: the request checked: what it must have, its URL, id, keys,
 * credentials, queue and headers, and room for it.  0, or -1 with e. */
static int request_check(const struct webhook_sender *s, const struct webhook_request *req,
                         struct err *e)
{
    if (s->closing)
        return err_set(e, ERR_USAGE, "webhook submit: sender is shutting down");
    if (!req->done || !req->url || !req->id || (!req->key && !req->n_keys) ||
        (!req->body && req->body_len) || (req->body && req->prepare))
        return err_set(e, ERR_USAGE,
                       "webhook submit: request lacks url, id, key or done, or has both a "
                       "body and a prepare callback");
    if (!url_ok(req->url))
        return err_set(e, ERR_USAGE,
                       "webhook submit: URL must be http:// or https://, without spaces, "
                       "control characters or user information, at most %d bytes",
                       WEBHOOK_URL_MAX);
    if (!id_ok(req->id))
        return err_set(e, ERR_USAGE,
                       "webhook submit: webhook-id must be 1..%d printable characters",
                       WEBHOOK_ID_MAX);
    struct webhook_key one;
    size_t n_keys;
    const struct webhook_key *keys = req_keys(req, &one, &n_keys);
    if (!keys || n_keys > WEBHOOK_KEYS_MAX)
        return err_set(e, ERR_USAGE, "webhook submit: %zu signing keys, must be 1..%d", n_keys,
                       WEBHOOK_KEYS_MAX);
    for (size_t i = 0; i < n_keys; i++)
        if (!keys[i].key || keys[i].len < 1 || keys[i].len > WEBHOOK_KEY_MAX)
            return err_set(e, ERR_USAGE, "webhook submit: key %zu is %zu bytes, must be 1..%d",
                           i + 1, keys[i].key ? keys[i].len : 0, WEBHOOK_KEY_MAX);
    if (credentials_check(req, e) < 0)
        return -1;
    int qlimit;
    const char *qname = req_queue(req, &qlimit);
    if (strlen(qname) > WEBHOOK_QUEUE_NAME_MAX || qlimit < 1 || qlimit > WEBHOOK_IN_FLIGHT_MAX)
        return err_set(e, ERR_USAGE,
                       "webhook submit: queue name over %d bytes, or its max_in_flight %d "
                       "not in 1..%d",
                       WEBHOOK_QUEUE_NAME_MAX, qlimit, WEBHOOK_IN_FLIGHT_MAX);
    if (req->n_headers > WEBHOOK_HEADERS_MAX || (req->n_headers && !req->headers))
        return err_set(e, ERR_USAGE, "webhook submit: more than %d custom headers",
                       WEBHOOK_HEADERS_MAX);
    for (size_t i = 0; i < req->n_headers; i++)
        if (webhook_header_check(req->headers[i].name, req->headers[i].value, e) < 0)
            return -1;
    if (s->pending + s->active.n >= WEBHOOK_QUEUE_MAX)
        return err_set(e, ERR_LIMIT, "webhook submit: %d requests already pending",
                       WEBHOOK_QUEUE_MAX);
    return 0;
}

/* Step 2: the transfer, which takes *body over (*body set to NULL): the
 * id, keys, callbacks and custom headers copied.  NULL with e (*body
 * still the caller's when the transfer could not even be allocated). */
static struct xfer *xfer_new(struct webhook_sender *s, const struct webhook_request *req,
                             char **body, void *user, struct err *e)
{
    struct xfer *x = calloc(1, sizeof *x);
    if (!x) {
        err_set(e, ERR_INTERNAL, "webhook submit: out of memory");
        return NULL;
    }
    x->s = s;
    x->fd = -1;
    x->body = *body;
    *body = NULL;
    x->body_len = req->body_len;
    x->prepare = req->prepare;
    if (!x->body && !x->prepare && !(x->body = calloc(1, 1)))
        goto oom;
    memcpy(x->id, req->id, strlen(req->id) + 1);
    struct webhook_key one;
    const struct webhook_key *keys = req_keys(req, &one, &x->n_keys);
    for (size_t i = 0; i < x->n_keys; i++) {
        memcpy(x->keys[i], keys[i].key, keys[i].len);
        x->key_lens[i] = keys[i].len;
    }
    x->fixed_ts = req->timestamp;
    x->done = req->done;
    x->user = user;
    x->res.retry_after_s = -1;

    for (size_t i = 0; i < req->n_headers + req->n_secret_headers; i++) {
        char line[WEBHOOK_HEADER_NAME_MAX + WEBHOOK_HEADER_VALUE_MAX + 4];
        const struct webhook_header *h = i < req->n_headers
                                             ? &req->headers[i]
                                             : &req->secret_headers[i - req->n_headers];
        /* "Name;" is curl's way to send a header with an empty value */
        int n = h->value[0] ? snprintf(line, sizeof line, "%s: %s", h->name, h->value)
                            : snprintf(line, sizeof line, "%s;", h->name);
        int r = n < 0 || (size_t)n >= sizeof line ? -1 : append_header(&x->hdrs, line);
        OPENSSL_cleanse(line, sizeof line);
        if (r < 0)
            goto oom;
    }
    return x;
oom:
    xfer_free(x);
    err_set(e, ERR_INTERNAL, "webhook submit: out of memory");
    return NULL;
}

#define SETOPT(x, opt, val)                                                  \
    do {                                                                     \
        if (curl_easy_setopt((x)->easy, opt, val) != CURLE_OK)               \
            goto setopt_failed;                                              \
    } while (0)

/* Step 3: the transfer's curl handle: the body (in memory, or read from
 * the prepared file), timeouts, TLS, proxy, credentials and callbacks.
 * 0, or -1 with e. */
static int xfer_easy(struct xfer *x, const struct webhook_request *req, struct err *e)
{
    int64_t total = req->timeout_ms > 0 ? req->timeout_ms : WEBHOOK_TIMEOUT_DEFAULT_MS;
    int64_t conn = req->connect_timeout_ms > 0 ? req->connect_timeout_ms
                                               : WEBHOOK_CONNECT_TIMEOUT_DEFAULT_MS;
    if (total > LONG_MAX)
        total = LONG_MAX;
    if (conn > total)
        conn = total;

    x->easy = curl_easy_init();
    if (!x->easy)
        return err_set(e, ERR_INTERNAL, "webhook submit: curl_easy_init failed");
    SETOPT(x, CURLOPT_PRIVATE, (char *)x);
    SETOPT(x, CURLOPT_URL, req->url);
    SETOPT(x, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(x, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(x, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(x, CURLOPT_NOSIGNAL, 1L);
    if (x->prepare) {
        /* the length is set once the body exists, at the start */
        SETOPT(x, CURLOPT_POST, 1L);
        SETOPT(x, CURLOPT_READFUNCTION, on_read);
        SETOPT(x, CURLOPT_READDATA, x);
        SETOPT(x, CURLOPT_SEEKFUNCTION, on_seek);
        SETOPT(x, CURLOPT_SEEKDATA, x);
    } else {
        SETOPT(x, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
        SETOPT(x, CURLOPT_POSTFIELDS, x->body);
    }
    SETOPT(x, CURLOPT_TIMEOUT_MS, (long)total);
    SETOPT(x, CURLOPT_CONNECTTIMEOUT_MS, (long)conn);
    SETOPT(x, CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(x, CURLOPT_SSL_VERIFYHOST, 2L);
    SETOPT(x, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (req->ca_file)
        SETOPT(x, CURLOPT_CAINFO, req->ca_file);
    if (req->client_cert) {
        SETOPT(x, CURLOPT_SSLCERT, req->client_cert);
        SETOPT(x, CURLOPT_SSLCERTTYPE, "PEM");
        SETOPT(x, CURLOPT_SSLKEY, req->client_key ? req->client_key : req->client_cert);
        SETOPT(x, CURLOPT_SSLKEYTYPE, "PEM");
    }
    SETOPT(x, CURLOPT_PROXY, req->proxy ? req->proxy : ""); /* "": ignore *_proxy env */
    SETOPT(x, CURLOPT_NOPROXY, "");                         /* and NO_PROXY too */
    if (req->proxy) {
        SETOPT(x, CURLOPT_PROXYTYPE, (long)CURLPROXY_HTTP);
        SETOPT(x, CURLOPT_HTTPPROXYTUNNEL, 1L); /* CONNECT, also for http:// */
    }
    if (req->basic_user) {
        SETOPT(x, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SETOPT(x, CURLOPT_USERNAME, req->basic_user);
        SETOPT(x, CURLOPT_PASSWORD, req->basic_password ? req->basic_password : "");
    } else if (req->bearer) {
        SETOPT(x, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        SETOPT(x, CURLOPT_XOAUTH2_BEARER, req->bearer);
    }
    SETOPT(x, CURLOPT_USERAGENT, "pop3bridge/" POP3BRIDGE_VERSION);
    SETOPT(x, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(x, CURLOPT_WRITEDATA, x);
    SETOPT(x, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(x, CURLOPT_HEADERDATA, x);
    SETOPT(x, CURLOPT_ERRORBUFFER, x->errbuf);
    return 0;

setopt_failed:
    return err_set(e, ERR_INTERNAL, "webhook submit: setting up curl failed");
}

/* Step 4: the transfer at the end of its queue's pending list.  0, or -1
 * with e (no queue left). */
static int xfer_enqueue(struct webhook_sender *s, struct xfer *x,
                        const struct webhook_request *req, struct err *e)
{
    int qlimit;
    const char *qname = req_queue(req, &qlimit);
    struct queue *q = queue_get(s, qname, qlimit, e);
    if (!q)
        return -1;
    x->q = (size_t)(q - s->queues);
    list_push(&q->pending, x);
    s->pending++;
    return 0;
}

/* The body is this function's from its first line: given to the transfer
 * (xfer_new), which is queued or freed with it; freed here otherwise. */
int webhook_sender_submit(struct webhook_sender *s, const struct webhook_request *req,
                          void *user, struct err *e)
{
    char *body = req ? req->body : NULL;
    struct xfer *x = NULL;
    int rc = -1;
    if (!s || !req)
        err_set(e, ERR_USAGE, "webhook submit: no sender or request");
    else if (request_check(s, req, e) == 0 && (x = xfer_new(s, req, &body, user, e)) &&
             xfer_easy(x, req, e) == 0 && xfer_enqueue(s, x, req, e) == 0) {
        x = NULL; /* its queue's now */
        rc = 0;
    }
    xfer_free(x);
    free(body);
    return rc;
}

static int run_once(struct webhook_sender *s, int timeout_ms, struct err *e)
{
    int running = 0;
    int finished = start_queued(s);
    CURLMcode mc = curl_multi_perform(s->multi, &running);
    if (mc != CURLM_OK)
        return err_set(e, ERR_INTERNAL, "curl_multi_perform: %s", curl_multi_strerror(mc));
    finished += collect(s);
    finished += start_queued(s);
    if (finished > 0 || timeout_ms <= 0)
        return finished;
    mc = curl_multi_poll(s->multi, NULL, 0, timeout_ms, NULL);
    if (mc != CURLM_OK)
        return err_set(e, ERR_INTERNAL, "curl_multi_poll: %s", curl_multi_strerror(mc));
    mc = curl_multi_perform(s->multi, &running);
    if (mc != CURLM_OK)
        return err_set(e, ERR_INTERNAL, "curl_multi_perform: %s", curl_multi_strerror(mc));
    finished += collect(s);
    finished += start_queued(s);
    return finished;
}

int webhook_sender_run(struct webhook_sender *s, int timeout_ms, struct err *e)
{
    if (!s)
        return err_set(e, ERR_USAGE, "webhook run: no sender");
    if (s->running)
        return err_set(e, ERR_USAGE, "webhook run: called from a done callback");
    s->running = true;
    int r = run_once(s, timeout_ms, e);
    s->running = false;
    return r;
}

void webhook_sender_wakeup(struct webhook_sender *s)
{
    if (s)
        curl_multi_wakeup(s->multi);
}

size_t webhook_sender_in_flight(const struct webhook_sender *s)
{
    return s ? s->pending + s->active.n : 0;
}

size_t webhook_sender_active(const struct webhook_sender *s)
{
    return s ? s->active.n : 0;
}

/* Complete every request still waiting in a queue, aborted. */
static int drop_pending(struct webhook_sender *s, const char *why)
{
    int n = 0;
    for (size_t i = 0; i < WEBHOOK_QUEUES_MAX; i++) {
        struct queue *q = &s->queues[i];
        struct xfer *x;
        while (q->used && (x = q->pending.head)) {
            list_remove(&q->pending, x);
            s->pending--;
            x->res.aborted = true;
            err_set(&x->res.err, ERR_INTERNAL, "%s", why);
            complete(x, CURLE_OK);
            xfer_free(x);
            n++;
        }
        queue_gc(q);
    }
    return n;
}

int webhook_sender_drop_queued(struct webhook_sender *s, struct err *e)
{
    if (!s)
        return err_set(e, ERR_USAGE, "webhook drop: no sender");
    if (s->running)
        return err_set(e, ERR_USAGE, "webhook drop: called from a done callback");
    s->running = true;
    int n = drop_pending(s, "dropped: the request had not started");
    s->running = false;
    return n;
}

void webhook_sender_free(struct webhook_sender *s)
{
    if (!s)
        return;
    s->closing = true;
    struct xfer *x;
    while ((x = s->active.head)) {
        list_remove(&s->active, x);
        s->queues[x->q].active--;
        curl_multi_remove_handle(s->multi, x->easy);
        x->res.aborted = true;
        err_set(&x->res.err, ERR_INTERNAL, "aborted: the sender was shut down");
        complete(x, CURLE_OK);
        xfer_free(x);
    }
    drop_pending(s, "aborted: the sender was shut down");
    curl_multi_cleanup(s->multi);
    free(s);
}
