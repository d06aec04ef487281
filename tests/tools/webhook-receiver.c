/*
 * webhook-receiver — a real HTTP server on 127.0.0.1 that receives the
 * bridge's webhooks, for tests and the demo.
 *
 * With a secret it verifies each request as a Standard Webhooks consumer
 * must (signature over "{id}.{timestamp}.{body}", constant-time compare,
 * several signatures allowed, timestamp within 5 minutes; a failure is a 401,
 * logged); without one it accepts every POST.  It can misbehave on request:
 * fail the first N requests (500, or --fail-status, with --retry-after),
 * answer 410, answer slowly, refuse bodies over --max-body with 413.
 *
 *   webhook-receiver [--port N] [--secret whsec_...] [--out DIR] [--print]
 *                    [--fail N] [--fail-status CODE] [--retry-after S]
 *                    [--gone] [--delay-ms MS] [--max-body SIZE]
 *
 * On start it prints "listening on 127.0.0.1:PORT" on stdout.  With --out,
 * each verified event is written atomically as DIR/<n>.json (the body, byte
 * for byte) and DIR/<n>.headers ("name: value" lines), n counting from 1;
 * the .headers file is in place before the .json appears.  With --print, one
 * line per verified event on stdout:
 *   <webhook-id> type=... account=... from="Name <addr>" subject="..."
 * Rejections and forced failures are logged on stderr, never the secret.
 * SIGTERM or SIGINT: stop accepting, finish, exit 0.
 */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "units.h"
#include "webhook.h"

#define BODY_MAX_DEFAULT (64ULL << 20) /* --max-body default */
#define BODY_MAX_LIMIT (1ULL << 30)    /* largest --max-body */
#define DELAY_MAX_MS 600000            /* largest --delay-ms */
#define PRINT_FIELD_MAX 200            /* subject/from shown by --print */
#define HEADERS_FILE_MAX (256 * 1024)  /* request headers written per event */
#define CONN_LIMIT 256
#define CONN_TIMEOUT_S 60
#define PATH_MAX_LEN 4096

static struct {
    unsigned port;
    bool have_key;
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t key_len;
    const char *out_dir;
    bool print;
    long fail;
    int fail_status;
    long retry_after; /* -1: none */
    bool gone;
    long delay_ms;
    uint64_t max_body;
} opt = {.fail_status = 500, .retry_after = -1, .max_body = BODY_MAX_DEFAULT};

static atomic_long fail_left;
static atomic_long requests_seen;
static atomic_long events_seen;
static atomic_int stopping;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

struct rq {
    char *buf;
    size_t len, cap;
    bool too_big;
};

static void logx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logx(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&out_mu);
    fprintf(stderr, "webhook-receiver: %s\n", line);
    pthread_mutex_unlock(&out_mu);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: webhook-receiver [--port N] [--secret whsec_...] [--out DIR] [--print]\n"
            "                        [--fail N] [--fail-status CODE] [--retry-after S]\n"
            "                        [--gone] [--delay-ms MS] [--max-body SIZE]\n"
            "The secret may also come from $WEBHOOK_SECRET.\n");
    exit(2);
}

static long num_arg(const char *name, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || errno || *end || x < lo || x > hi) {
        fprintf(stderr, "webhook-receiver: %s wants an integer in %ld..%ld\n", name, lo, hi);
        exit(2);
    }
    return x;
}

/* ---- output ------------------------------------------------------------ */

/* Write data to dir/name via a temporary file, fsync and rename. */
static int write_atomic(const char *dir, const char *name, const char *data, size_t len)
{
    char tmp[PATH_MAX_LEN], dst[PATH_MAX_LEN];
    int n1 = snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    int n2 = snprintf(dst, sizeof dst, "%s/%s", dir, name);
    if (n1 < 0 || (size_t)n1 >= sizeof tmp || n2 < 0 || (size_t)n2 >= sizeof dst) {
        logx("output path too long in %s", dir);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        logx("cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            logx("cannot write %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, dst) < 0) {
        logx("cannot finish %s: %s", dst, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

struct hbuf {
    char *p;
    size_t len;
    bool overflow;
};

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    (void)kind;
    struct hbuf *h = cls;
    size_t need = strlen(key) + strlen(value ? value : "") + 3;
    if (h->overflow || h->len + need >= HEADERS_FILE_MAX) {
        h->overflow = true;
        return MHD_YES;
    }
    int n = snprintf(h->p + h->len, HEADERS_FILE_MAX - h->len, "%s: %s\n", key,
                     value ? value : "");
    if (n < 0 || (size_t)n >= HEADERS_FILE_MAX - h->len)
        h->overflow = true;
    else
        h->len += (size_t)n;
    return MHD_YES;
}

/* Printable copy of a JSON string field; "" if absent. */
static void field(char *dst, size_t size, const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    const char *s = cJSON_IsString(v) && v->valuestring ? v->valuestring : "";
    size_t o = 0;
    for (size_t i = 0; s[i] && o + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[o++] = (c < 0x20 || c == 0x7f || c == '"') ? '?' : (char)c;
    }
    dst[o] = '\0';
}

static void print_event(const char *id, const char *body, size_t len)
{
    char subject[PRINT_FIELD_MAX], name[PRINT_FIELD_MAX], addr[PRINT_FIELD_MAX],
        type[PRINT_FIELD_MAX], account[PRINT_FIELD_MAX];
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(data, "message");
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(msg, "from");
    field(type, sizeof type, root, "type");
    field(account, sizeof account, data, "account");
    field(subject, sizeof subject, msg, "subject");
    field(name, sizeof name, from, "name");
    field(addr, sizeof addr, from, "address");
    cJSON_Delete(root);
    pthread_mutex_lock(&out_mu);
    if (!root)
        printf("%s (body is not JSON, %zu bytes)\n", id, len);
    else
        printf("%s type=%s account=%s from=\"%s%s%s%s\" subject=\"%s\"\n", id,
               type[0] ? type : "?", account[0] ? account : "?", name, name[0] ? " <" : "",
               addr, name[0] ? ">" : "", subject);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

/* ---- HTTP -------------------------------------------------------------- */

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *text,
                              bool retry_after)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    char ra[32];
    int n = snprintf(ra, sizeof ra, "%ld", opt.retry_after);
    if (retry_after && opt.retry_after >= 0 && n > 0 && (size_t)n < sizeof ra)
        MHD_add_response_header(r, "Retry-After", ra);
    MHD_add_response_header(r, "Content-Type", "text/plain");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle_event(struct MHD_Connection *c, struct rq *q)
{
    long seq = atomic_fetch_add(&requests_seen, 1) + 1;
    for (long waited = 0; waited < opt.delay_ms && !atomic_load(&stopping); waited += 10) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (q->too_big) {
        logx("request %ld: body over %llu bytes: 413", seq, (unsigned long long)opt.max_body);
        return answer(c, MHD_HTTP_CONTENT_TOO_LARGE, "body too large\n", false);
    }
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
    char shown_id[WEBHOOK_ID_MAX + 4];
    err_sanitize(shown_id, sizeof shown_id, id ? id : "-", strlen(id ? id : "-"));
    long left = atomic_load(&fail_left);
    while (left > 0 && !atomic_compare_exchange_weak(&fail_left, &left, left - 1))
        ;
    if (left > 0) {
        logx("request %ld: failing on purpose with %d (%ld more) (webhook-id %s)", seq,
             opt.fail_status, left - 1, shown_id);
        return answer(c, (unsigned)opt.fail_status, "failing on purpose\n", true);
    }
    if (opt.gone) {
        logx("request %ld: answering 410 Gone (webhook-id %s)", seq, shown_id);
        return answer(c, MHD_HTTP_GONE, "gone\n", false);
    }
    if (opt.have_key) {
        struct err e;
        const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp");
        const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature");
        if (webhook_verify(opt.key, opt.key_len, id, ts, q->buf ? q->buf : "", q->len, sig,
                           (int64_t)time(NULL), WEBHOOK_TOLERANCE_S, &e) < 0) {
            logx("request %ld: rejected with 401: %s (webhook-id %s)", seq, e.msg, shown_id);
            return answer(c, MHD_HTTP_UNAUTHORIZED, "signature verification failed\n", false);
        }
    }
    long n = atomic_fetch_add(&events_seen, 1) + 1;
    if (opt.out_dir) {
        struct hbuf h = {malloc(HEADERS_FILE_MAX), 0, false};
        char name[64];
        if (!h.p)
            return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", false);
        MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, &h);
        int ok = snprintf(name, sizeof name, "%ld.headers", n) < (int)sizeof name &&
                 write_atomic(opt.out_dir, name, h.p, h.len) == 0 &&
                 snprintf(name, sizeof name, "%ld.json", n) < (int)sizeof name &&
                 write_atomic(opt.out_dir, name, q->buf ? q->buf : "", q->len) == 0;
        free(h.p);
        if (!ok)
            return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot store the event\n", false);
    }
    if (opt.print)
        print_event(shown_id, q->buf ? q->buf : "", q->len);
    return answer(c, MHD_HTTP_OK, "ok\n", false);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    struct rq *q = *con_cls;
    if (!q) {
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
            struct MHD_Response *r = MHD_create_response_from_buffer(
                strlen("POST only\n"), (void *)"POST only\n", MHD_RESPMEM_PERSISTENT);
            if (!r)
                return MHD_NO;
            MHD_add_response_header(r, "Allow", "POST");
            enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, r);
            MHD_destroy_response(r);
            return ret;
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || *end || end == cl || v > opt.max_body) {
                logx("Content-Length %s over the %llu byte limit: 413",
                     errno || *end ? "(bad)" : cl, (unsigned long long)opt.max_body);
                return answer(c, MHD_HTTP_CONTENT_TOO_LARGE, "body too large\n", false);
            }
        }
        q = calloc(1, sizeof *q);
        if (!q)
            return MHD_NO;
        *con_cls = q;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (q->too_big || q->len + n > opt.max_body) {
            q->too_big = true; /* read and drop the rest, answer 413 at the end */
            return MHD_YES;
        }
        if (q->len + n + 1 > q->cap) {
            size_t cap = q->cap ? q->cap : 4096;
            while (cap < q->len + n + 1)
                cap *= 2;
            char *nb = realloc(q->buf, cap);
            if (!nb)
                return MHD_NO;
            q->buf = nb;
            q->cap = cap;
        }
        memcpy(q->buf + q->len, upload, n);
        q->len += n;
        q->buf[q->len] = '\0';
        return MHD_YES;
    }
    return handle_event(c, q);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct rq *q = *con_cls;
    if (q) {
        free(q->buf);
        free(q);
        *con_cls = NULL;
    }
}

int main(int argc, char **argv)
{
    const char *secret = getenv("WEBHOOK_SECRET");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--port")) {
            opt.port = (unsigned)num_arg(a, v, 0, 65535);
            i++;
        } else if (!strcmp(a, "--secret")) {
            if (!v)
                usage();
            secret = v;
            i++;
        } else if (!strcmp(a, "--out")) {
            if (!v)
                usage();
            opt.out_dir = v;
            i++;
        } else if (!strcmp(a, "--fail")) {
            opt.fail = num_arg(a, v, 0, LONG_MAX);
            i++;
        } else if (!strcmp(a, "--fail-status")) {
            opt.fail_status = (int)num_arg(a, v, 100, 599);
            i++;
        } else if (!strcmp(a, "--retry-after")) {
            opt.retry_after = num_arg(a, v, 0, 86400);
            i++;
        } else if (!strcmp(a, "--delay-ms")) {
            opt.delay_ms = num_arg(a, v, 0, DELAY_MAX_MS);
            i++;
        } else if (!strcmp(a, "--max-body")) {
            char why[128];
            if (!v || units_parse_size(v, &opt.max_body, why, sizeof why) < 0 ||
                opt.max_body > BODY_MAX_LIMIT) {
                fprintf(stderr, "webhook-receiver: --max-body: %s\n",
                        v ? (opt.max_body > BODY_MAX_LIMIT ? "over 1GiB" : why) : "missing");
                exit(2);
            }
            i++;
        } else if (!strcmp(a, "--gone")) {
            opt.gone = true;
        } else if (!strcmp(a, "--print")) {
            opt.print = true;
        } else {
            usage();
        }
    }
    if (secret && *secret) {
        struct err e;
        if (webhook_secret_decode(secret, opt.key, sizeof opt.key, &opt.key_len, &e) < 0) {
            fprintf(stderr, "webhook-receiver: %s\n", e.msg);
            return 2;
        }
        opt.have_key = true;
    }
    if (opt.out_dir) {
        struct stat st;
        if (stat(opt.out_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
            fprintf(stderr, "webhook-receiver: --out %s: not a directory\n", opt.out_dir);
            return 2;
        }
    }
    atomic_store(&fail_left, opt.fail);

    /* signals are taken by sigwait below; every thread inherits the mask */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)opt.port);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)CONN_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT_S,
        MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "webhook-receiver: cannot listen on 127.0.0.1:%u\n", opt.port);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("listening on 127.0.0.1:%u\n", info ? info->port : opt.port);
    fflush(stdout);

    int sig = 0;
    sigwait(&set, &sig);
    atomic_store(&stopping, 1);
    MHD_stop_daemon(d);
    logx("stopped by signal %d after %ld requests, %ld events", sig,
         atomic_load(&requests_seen), atomic_load(&events_seen));
    OPENSSL_cleanse(opt.key, sizeof opt.key);
    return 0;
}
