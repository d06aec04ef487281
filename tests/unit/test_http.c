/* Unit tests: the HTTP server (include/http.h) with a small route table of
 * its own, over real loopback connections: tokens before routes, 404 vs 405,
 * named parameters, the limits (413, 414, bad targets), problem+json, a
 * deferred answer that does not hold the only HTTP thread, the read
 * deadline (total time, not inactivity) and the per-client connection
 * limit.  The bridge's own API over the same layer is tested in
 * tests/integration/test_api.py and test_api_load.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfgref.h"
#include "clock.h"
#include "config.h"
#include "http.h"

#define TOKEN "unit-test-token-0123456789"
#define ORIGIN "http://ok.example"

static struct cfgref *cfg_ref;
static char tmp_dir[] = "/tmp/test_http.XXXXXX";

static struct cfgref *get_config(void *app)
{
    (void)app;
    return cfgref_hold(cfg_ref);
}

/* ---- handlers ----------------------------------------------------------------------------- */

static void h_ok(struct http_req *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddTrueToObject(o, "ok");
    http_reply_json(r, 200, o);
}

static void h_item(struct http_req *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "item", http_param(r, "item"));
    const char *q = http_query(r, "q");
    cJSON_AddStringToObject(o, "q", q ? q : "");
    http_reply_json(r, 200, o);
}

static void h_fail(struct http_req *r)
{
    http_set_retry_after(r, 7);
    http_problem(r, 503, "busy", "try again in %d s", 7);
}

static void slow_then(struct http_req *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddTrueToObject(o, "slow");
    http_reply_json(r, 200, o);
}

static void *resume_later(void *arg)
{
    usleep(600000);
    http_resume(arg);
    return NULL;
}

/* Answers after 600 ms without holding an HTTP thread. */
static void h_slow(struct http_req *r)
{
    http_defer(r, slow_then);
    pthread_t t;
    if (pthread_create(&t, NULL, resume_later, r) != 0) {
        http_resume(r);
        return;
    }
    pthread_detach(t);
}

/* Defers and resumes at once (what a handler does when no worker takes the
 * work): the continuation still answers. */
static void h_now(struct http_req *r)
{
    http_defer(r, slow_then);
    http_resume(r);
}

/* Neither answers nor defers: the layer answers 500 itself. */
static void h_mute(struct http_req *r) { (void)r; }

static void h_static(struct http_req *r) { http_reply_empty(r, 204); }

static const struct http_route routes[] = {
    {"GET", "/ok", h_ok, NULL, HTTP_ROUTE_PUBLIC},
    {"GET", "/private", h_ok, NULL, 0},
    {"GET", "/items/{item}", h_item, "q", 0},
    {"DELETE", "/items/{item}", h_item, NULL, 0},
    {"GET", "/fail", h_fail, NULL, HTTP_ROUTE_PUBLIC},
    {"GET", "/slow", h_slow, NULL, HTTP_ROUTE_PUBLIC},
    {"GET", "/now", h_now, NULL, HTTP_ROUTE_PUBLIC},
    {"GET", "/mute", h_mute, NULL, HTTP_ROUTE_PUBLIC},
};

static struct http_server *start(unsigned per_client, int64_t read_timeout_ms)
{
    struct http_options o = {
        .listen_host = "127.0.0.1",
        .listen_port = 0,
        .threads = 1, /* one thread: a held thread would show at once */
        .max_connections = 64,
        .max_per_client = per_client,
        .read_timeout_ms = read_timeout_ms,
        .idle_timeout_ms = 30000,
        .max_body = 1024,
        .max_url = 256,
        .routes = routes,
        .nroutes = sizeof routes / sizeof routes[0],
        .fallback = h_static,
        .config = get_config,
    };
    struct err e;
    struct http_server *s = http_start(&o, &e);
    if (!s)
        fail_msg("http_start: %s", e.msg);
    return s;
}

/* ---- a small client ------------------------------------------------------------------------- */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

struct resp {
    int status;
    char head[4096];
    char body[8192];
};

/* Read until the server closes (at most 10 s). */
static void read_resp(int fd, struct resp *r)
{
    static char buf[16384];
    size_t n = 0;
    memset(r, 0, sizeof *r);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (n + 1 < sizeof buf && poll(&p, 1, 10000) == 1) {
        ssize_t k = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    buf[n] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.1 %d", &r->status) != 1 || !sep)
        return;
    snprintf(r->head, sizeof r->head, "%.*s", (int)(sep - buf), buf);
    snprintf(r->body, sizeof r->body, "%s", sep + 4);
}

/* One request on its own connection ("Connection: close"). */
static void request(int port, const char *method, const char *target, const char *headers,
                    struct resp *r)
{
    char req[2048];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s\r\n",
             method, target, headers ? headers : "");
    int fd = dial(port);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    read_resp(fd, r);
    close(fd);
}

static bool has(const struct resp *r, const char *s) { return strcasestr(r->head, s) != NULL; }

#define AUTH "Authorization: Bearer " TOKEN "\r\n"

/* ---- tests ----------------------------------------------------------------------------------- */

static void routing_and_tokens(void **state)
{
    (void)state;
    struct http_server *s = start(16, 5000);
    int port = http_port(s);
    struct resp r;
    request(port, "GET", "/ok", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"ok\":true}");
    assert_true(has(&r, "X-Content-Type-Options: nosniff"));
    assert_true(has(&r, "Content-Security-Policy: default-src 'self'"));
    assert_true(has(&r, "Cache-Control: no-store"));
    request(port, "GET", "/private", NULL, &r);
    assert_int_equal(r.status, 401);
    assert_true(has(&r, "WWW-Authenticate: Bearer"));
    assert_true(has(&r, "Content-Type: application/problem+json"));
    assert_non_null(strstr(r.body, "\"type\":\"urn:pop3bridge:problem:unauthorized\""));
    request(port, "GET", "/private", "Authorization: Bearer wrong\r\n", &r);
    assert_int_equal(r.status, 401);
    request(port, "GET", "/private", AUTH, &r);
    assert_int_equal(r.status, 200);
    /* no route enumeration without a token, under /api */
    request(port, "GET", "/api/nothing", NULL, &r);
    assert_int_equal(r.status, 401);
    request(port, "GET", "/api/nothing", AUTH, &r);
    assert_int_equal(r.status, 404);
    request(port, "POST", "/private", NULL, &r);
    assert_int_equal(r.status, 401);
    request(port, "POST", "/private", AUTH, &r);
    assert_int_equal(r.status, 405);
    assert_true(has(&r, "Allow: GET, HEAD"));
    request(port, "PUT", "/items/x", AUTH, &r);
    assert_int_equal(r.status, 405);
    assert_true(has(&r, "Allow: GET, HEAD, DELETE"));
    request(port, "GET", "/items/a%2Fb?q=%C3%A9", AUTH, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"item\":\"a/b\",\"q\":\"\xc3\xa9\"}");
    request(port, "GET", "/items/a?z=1", AUTH, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "unknown query parameter"));
    request(port, "GET", "/items/%2e%2e", AUTH, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "bad-path"));
    request(port, "GET", "/fail", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_true(has(&r, "Retry-After: 7"));
    assert_non_null(strstr(r.body, "\"status\":503"));
    assert_non_null(strstr(r.body, "\"detail\":\"try again in 7 s\""));
    /* the fallback: GET/HEAD of other paths, public; other methods 405 */
    request(port, "GET", "/index.html", NULL, &r);
    assert_int_equal(r.status, 204);
    request(port, "POST", "/index.html", NULL, &r);
    assert_int_equal(r.status, 405);
    request(port, "GET", "/index.html?x=1", NULL, &r);
    assert_int_equal(r.status, 400);
    http_stop(&s);
    assert_null(s);
    http_stop(&s);
}

static void limits_and_cors(void **state)
{
    (void)state;
    struct http_server *s = start(16, 5000);
    int port = http_port(s);
    struct resp r;
    char target[400];
    memset(target, 'a', sizeof target - 1);
    target[0] = '/';
    target[sizeof target - 1] = '\0';
    request(port, "GET", target, NULL, &r);
    assert_int_equal(r.status, 414);
    request(port, "GET", "/private", AUTH "Content-Length: 5000\r\n", &r);
    assert_int_equal(r.status, 413);
    request(port, "GET", "/ok", "Origin: " ORIGIN "\r\n", &r);
    assert_true(has(&r, "Access-Control-Allow-Origin: " ORIGIN));
    request(port, "GET", "/ok", "Origin: http://evil.example\r\n", &r);
    assert_false(has(&r, "Access-Control-Allow-Origin"));
    request(port, "OPTIONS", "/items/x",
            "Origin: " ORIGIN "\r\nAccess-Control-Request-Method: DELETE\r\n", &r);
    assert_int_equal(r.status, 204);
    assert_true(has(&r, "Access-Control-Allow-Methods: GET, HEAD, DELETE"));
    http_stop(&s);
}

struct bg {
    int port;
    struct resp r;
    int64_t took;
};

static void *slow_client(void *arg)
{
    struct bg *b = arg;
    int64_t t0 = clock_mono_ms();
    request(b->port, "GET", "/slow", NULL, &b->r);
    b->took = clock_mono_ms() - t0;
    return NULL;
}

/* With one HTTP thread, a deferred request does not hold it: other requests
 * are answered while it waits. */
static void deferred_does_not_hold_a_thread(void **state)
{
    (void)state;
    struct http_server *s = start(16, 5000);
    struct bg b[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        b[i].port = http_port(s);
        assert_int_equal(pthread_create(&t[i], NULL, slow_client, &b[i]), 0);
    }
    usleep(150000); /* the slow ones are deferred by now */
    int64_t t0 = clock_mono_ms();
    struct resp r;
    for (int i = 0; i < 5; i++) {
        request(http_port(s), "GET", "/ok", NULL, &r);
        assert_int_equal(r.status, 200);
    }
    int64_t took = clock_mono_ms() - t0;
    request(http_port(s), "GET", "/now", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"slow\":true}");
    request(http_port(s), "GET", "/mute", NULL, &r);
    assert_int_equal(r.status, 500);
    assert_non_null(strstr(r.body, "not answered"));
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(b[i].r.status, 200);
        assert_string_equal(b[i].r.body, "{\"slow\":true}");
        assert_true(b[i].took >= 550);
    }
    if (took >= 450)
        fail_msg("5 quick requests took %lld ms beside 3 deferred ones", (long long)took);
    http_stop(&s);
}

/* Wait (at most max_ms) for the server to close fd, sending one byte of a
 * request head every 200 ms; the milliseconds until it closed, or -1. */
static int64_t trickle_until_closed(int fd, int64_t max_ms)
{
    static const char head[] = "GET /ok HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int64_t t0 = clock_mono_ms();
    for (size_t i = 0; clock_mono_ms() - t0 < max_ms; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) == 1) {
            char c;
            if (recv(fd, &c, 1, 0) <= 0)
                return clock_mono_ms() - t0;
        }
        if (send(fd, head + i % (sizeof head - 1), 1, MSG_NOSIGNAL) < 0 && errno == EPIPE)
            return clock_mono_ms() - t0;
    }
    return -1;
}

/* A request head sent a byte every 200 ms never completes: the connection
 * is closed at the read deadline (1 s), although it is never idle. */
static void read_deadline(void **state)
{
    (void)state;
    struct http_server *s = start(16, 1000);
    int fd = dial(http_port(s));
    int64_t took = trickle_until_closed(fd, 6000);
    close(fd);
    if (took < 800 || took > 3500)
        fail_msg("a trickling request head was cut after %lld ms, not at its 1 s deadline",
                 (long long)took);
    struct resp r;
    request(http_port(s), "GET", "/ok", NULL, &r); /* the server itself is fine */
    assert_int_equal(r.status, 200);
    http_stop(&s);
}

static bool closed_soon(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return false;
    char c;
    return recv(fd, &c, 1, MSG_DONTWAIT) == 0;
}

/* Four connections from one address are kept, the fifth is closed at once;
 * when one of the four goes, a new one is taken again. */
static void per_client_limit(void **state)
{
    (void)state;
    struct http_server *s = start(4, 10000);
    int fds[5];
    for (int i = 0; i < 5; i++)
        fds[i] = dial(http_port(s));
    assert_true(closed_soon(fds[4], 2000));
    for (int i = 0; i < 4; i++)
        assert_false(closed_soon(fds[i], 100));
    close(fds[4]);
    close(fds[0]);
    usleep(200000);
    int again = dial(http_port(s));
    assert_false(closed_soon(again, 300));
    for (int i = 1; i < 4; i++)
        close(fds[i]);
    struct resp r;
    char req[] = "GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_int_equal(send(again, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)(sizeof req - 1));
    read_resp(again, &r);
    assert_int_equal(r.status, 200);
    close(again);
    http_stop(&s);
}

static void taken_port(void **state)
{
    (void)state;
    struct http_server *a = start(4, 1000);
    struct http_options o = {.listen_host = "127.0.0.1", .listen_port = http_port(a),
                             .threads = 1, .max_connections = 4, .max_per_client = 4,
                             .read_timeout_ms = 1000, .idle_timeout_ms = 1000,
                             .routes = routes, .nroutes = 1, .config = get_config};
    struct err e;
    assert_null(http_start(&o, &e));
    assert_int_equal(e.kind, ERR_CONN);
    assert_non_null(strstr(e.msg, "cannot listen on 127.0.0.1:"));
    struct http_route bad[1] = {{"GET", "/x/{", h_ok, NULL, 0}};
    o.listen_port = 0;
    o.routes = bad;
    assert_null(http_start(&o, &e));
    assert_int_equal(e.kind, ERR_INTERNAL);
    http_stop(&a);
}

/* ---- setup ------------------------------------------------------------------------------------ */

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmp_dir))
        return -1;
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", tmp_dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "{\"state_dir\": \"%s/state\",\n"
            " \"api\": {\"tokens\": [{\"name\": \"t\", \"token_env\": \"TEST_HTTP_TOKEN\"}],\n"
            "         \"cors_origins\": [\"" ORIGIN "\"]},\n"
            " \"accounts\": [{\"name\": \"a\", \"host\": \"127.0.0.1\", \"username\": \"u\",\n"
            "                \"password_env\": \"TEST_HTTP_PW\"}]}\n",
            tmp_dir);
    fclose(f);
    chmod(path, 0600);
    setenv("TEST_HTTP_TOKEN", TOKEN, 1);
    setenv("TEST_HTTP_PW", "pw", 1);
    struct config_diag d = {0};
    struct config *cfg = config_load(path, &d);
    for (size_t i = 0; i < d.count; i++)
        fprintf(stderr, "%s\n", d.lines[i]);
    config_diag_free(&d);
    unlink(path);
    cfg_ref = cfg ? cfgref_new(cfg) : NULL;
    return cfg_ref ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cfgref_put(cfg_ref);
    rmdir(tmp_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routing_and_tokens),
        cmocka_unit_test(limits_and_cors),
        cmocka_unit_test(deferred_does_not_hold_a_thread),
        cmocka_unit_test(read_deadline),
        cmocka_unit_test(per_client_limit),
        cmocka_unit_test(taken_port),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
