/* Unit tests: the POP3 engine (include/pop3.h) against a scripted server on
 * 127.0.0.1 that checks the exact command transcript: login, the listing with
 * and without PIPELINING, its checks, and SASL's initial response.  The
 * mailbox behaviour itself is tested against Dovecot in tests/integration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pop3.h"

#define SCRIPT_TIMEOUT_MS 5000 /* every network wait of the client under test */

/* A script: "C:..." is a line the client must send next, "S:..." a line the
 * server sends; NULL ends it (the server then closes). */
struct scripted {
    int lfd;
    unsigned port;
    const char *const *script;
    pthread_t th;
    char mismatch[2400]; /* "" when the client said what the script expected */
};

static int read_line(int fd, char *buf, size_t size)
{
    size_t n = 0;
    while (n + 1 < size) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r <= 0)
            return -1;
        if (c == '\n') {
            if (n && buf[n - 1] == '\r')
                n--;
            buf[n] = '\0';
            return 0;
        }
        buf[n++] = c;
    }
    return -1;
}

static void *serve(void *arg)
{
    struct scripted *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) {
        snprintf(s->mismatch, sizeof s->mismatch, "accept failed");
        return NULL;
    }
    for (size_t i = 0; s->script[i]; i++) {
        const char *step = s->script[i];
        if (step[0] == 'S') {
            char line[1024];
            int n = snprintf(line, sizeof line, "%s\r\n", step + 2);
            if (write(fd, line, (size_t)n) != n)
                break;
            continue;
        }
        char got[1024];
        if (read_line(fd, got, sizeof got) < 0) {
            snprintf(s->mismatch, sizeof s->mismatch, "step %zu: wanted \"%s\", got EOF", i,
                     step + 2);
            break;
        }
        if (strcmp(got, step + 2) != 0) {
            snprintf(s->mismatch, sizeof s->mismatch, "step %zu: wanted \"%s\", got \"%s\"", i,
                     step + 2, got);
            break;
        }
    }
    close(fd);
    return NULL;
}

static void start(struct scripted *s, const char *const *script)
{
    memset(s, 0, sizeof *s);
    s->script = script;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 1), 0);
    socklen_t l = sizeof a;
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &l), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, serve, s), 0);
}

static void finish(struct scripted *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
    if (s->mismatch[0])
        fail_msg("transcript: %s", s->mismatch);
}

static struct pop3_opts opts(const struct scripted *s, enum pop3_mech mech)
{
    struct pop3_opts o = {
        .host = "127.0.0.1",
        .port = s->port,
        .tls = POP3_TLS_NONE,
        .username = "user",
        .password = "pw",
        .allow_plaintext = true,
        .timeout_ms = SCRIPT_TIMEOUT_MS,
    };
    o.mechs[0] = mech;
    o.n_mechs = 1;
    return o;
}

/* Start the script and open a session on it with mech; NULL with e. */
static struct pop3 *open_on(struct scripted *s, const char *const *script, enum pop3_mech mech,
                            struct err *e)
{
    start(s, script);
    struct pop3_opts o = opts(s, mech);
    err_clear(e);
    return pop3_open(&o, e);
}

#define LOGIN_USER(capa)                                                                        \
    "S:+OK ready", "C:CAPA", "S:+OK", "S:USER", "S:UIDL", capa, "S:.", "C:USER user", "S:+OK", \
        "C:PASS pw", "S:+OK logged in", "C:CAPA", "S:+OK", "S:USER", "S:UIDL", capa, "S:."

static const char *const sequential[] = {
    LOGIN_USER("S:TOP"),
    "C:STAT", "S:+OK 2 300",
    "C:UIDL", "S:+OK", "S:1 aaa", "S:2 bbb", "S:.",
    "C:LIST", "S:+OK", "S:1 100", "S:2 200", "S:.",
    "C:QUIT", "S:+OK bye",
    NULL,
};

static void listing_sequential(void **state)
{
    (void)state;
    struct scripted s;
    struct err e;
    struct pop3 *p = open_on(&s, sequential, POP3_MECH_USER, &e);
    if (!p)
        fail_msg("open: %s", e.msg);
    assert_false(pop3_pipelining(p));
    struct pop3_listing *l;
    assert_int_equal(pop3_listing(p, &l, &e), 0);
    assert_int_equal(l->count, 2);
    assert_int_equal(l->octets, 300);
    assert_true(l->has_uidl);
    assert_string_equal(l->entries[0].uidl, "aaa");
    assert_int_equal(l->entries[1].size, 200);
    pop3_listing_free(&l);
    assert_int_equal(pop3_quit(&p, &e), 0);
    finish(&s);
}

/* With PIPELINING the server answers only once STAT, UIDL and LIST are all
 * in: a client that waited for STAT's reply would time out here. */
static const char *const pipelined[] = {
    LOGIN_USER("S:PIPELINING"),
    "C:STAT", "C:UIDL", "C:LIST",
    "S:+OK 1 50", "S:+OK", "S:1 only", "S:.", "S:+OK", "S:1 50", "S:.",
    "C:QUIT", "S:+OK",
    NULL,
};

static void listing_pipelined(void **state)
{
    (void)state;
    struct scripted s;
    struct err e;
    struct pop3 *p = open_on(&s, pipelined, POP3_MECH_USER, &e);
    if (!p)
        fail_msg("open: %s", e.msg);
    assert_true(pop3_pipelining(p));
    struct pop3_listing *l;
    if (pop3_listing(p, &l, &e) < 0)
        fail_msg("listing: %s", e.msg);
    assert_int_equal(l->count, 1);
    assert_string_equal(l->entries[0].uidl, "only");
    pop3_listing_free(&l);
    assert_int_equal(pop3_quit(&p, &e), 0);
    finish(&s);
}

/* QUIT without a DELE before it: said, its answer not awaited (RFC 1939
 * §6: nothing to commit), so a server that closes without answering costs
 * nothing; after a DELE the answer is what says the deletions happened. */
static const char *const quit_unanswered[] = {
    LOGIN_USER("S:TOP"),
    "C:QUIT",
    NULL,
};

static const char *const quit_unanswered_after_dele[] = {
    LOGIN_USER("S:TOP"),
    "C:DELE 1", "S:+OK marked",
    "C:QUIT",
    NULL,
};

static void quit_waits_only_after_dele(void **state)
{
    (void)state;
    struct scripted s;
    struct err e;
    struct pop3 *p = open_on(&s, quit_unanswered, POP3_MECH_USER, &e);
    if (!p)
        fail_msg("open: %s", e.msg);
    assert_int_equal(pop3_quit(&p, &e), 0);
    assert_null(p);
    finish(&s); /* the script saw the QUIT */
    p = open_on(&s, quit_unanswered_after_dele, POP3_MECH_USER, &e);
    if (!p)
        fail_msg("open: %s", e.msg);
    uint32_t one = 1;
    assert_int_equal(pop3_dele(p, &one, 1, &e), 0);
    assert_int_equal(pop3_quit(&p, &e), -1); /* closed without +OK: nothing assumed deleted */
    assert_null(p);
    finish(&s);
}

static const char *const duplicate[] = {
    LOGIN_USER("S:TOP"),
    "C:STAT", "S:+OK 2 20",
    "C:UIDL", "S:+OK", "S:1 same", "S:2 same", "S:.",
    "C:LIST", "S:+OK", "S:1 10", "S:2 10", "S:.",
    NULL,
};

static void listing_duplicate_uidl(void **state)
{
    (void)state;
    struct scripted s;
    struct err e;
    struct pop3 *p = open_on(&s, duplicate, POP3_MECH_USER, &e);
    assert_non_null(p);
    struct pop3_listing *l = NULL;
    assert_int_equal(pop3_listing(p, &l, &e), -1);
    assert_null(l);
    assert_int_equal(e.kind, ERR_PROTO);
    assert_non_null(strstr(e.msg, "UIDL \"same\" is used by messages 1 and 2"));
    pop3_abort(&p);
    finish(&s);
}

/* UIDL advertised but refused: a server error, and the pipelined LIST reply
 * is still read so the session stays in step for QUIT. */
static const char *const uidl_refused[] = {
    LOGIN_USER("S:PIPELINING"),
    "C:STAT", "C:UIDL", "C:LIST",
    "S:+OK 1 50", "S:-ERR [SYS/TEMP] not now", "S:+OK", "S:1 50", "S:.",
    "C:QUIT", "S:+OK",
    NULL,
};

static void listing_uidl_refused(void **state)
{
    (void)state;
    struct scripted s;
    struct err e;
    struct pop3 *p = open_on(&s, uidl_refused, POP3_MECH_USER, &e);
    assert_non_null(p);
    struct pop3_listing *l = NULL;
    assert_int_equal(pop3_listing(p, &l, &e), -1);
    assert_int_equal(e.kind, ERR_SERVER);
    assert_int_equal(e.code, ERR_CODE_SYS_TEMP);
    struct err q;
    err_clear(&q);
    if (pop3_quit(&p, &q) < 0)
        fail_msg("quit after a refused UIDL: %s", q.msg);
    finish(&s);
}

/* AUTH PLAIN sends its initial response with the command (RFC 5034). */
static const char *const plain[] = {
    "S:+OK ready", "C:CAPA", "S:+OK", "S:SASL PLAIN", "S:.",
    "C:AUTH PLAIN AHVzZXIAcHc=", "S:+OK welcome",
    "C:CAPA", "S:+OK", "S:SASL PLAIN", "S:.",
    "C:QUIT", "S:+OK",
    NULL,
};

static void sasl_plain_initial_response(void **state)
{
    (void)state;
    struct scripted s;
    struct err e;
    struct pop3 *p = open_on(&s, plain, POP3_MECH_PLAIN, &e);
    if (!p)
        fail_msg("open: %s", e.msg);
    assert_int_equal(pop3_mech_used(p), POP3_MECH_PLAIN);
    assert_int_equal(pop3_quit(&p, &e), 0);
    finish(&s);
}

/* A challenge after the mechanism finished is cancelled with "*" (RFC 5034
 * §4), and the login fails with the mechanism's reason. */
static const char *const late_challenge[] = {
    "S:+OK ready", "C:CAPA", "S:+OK", "S:SASL LOGIN", "S:.",
    "C:AUTH LOGIN", "S:+ VXNlcm5hbWU6", "C:dXNlcg==", "S:+ UGFzc3dvcmQ6", "C:cHc=",
    "S:+ bW9yZQ==", "C:*", "S:-ERR cancelled",
    NULL,
};

static void sasl_late_challenge_cancelled(void **state)
{
    (void)state;
    struct scripted s;
    struct err e;
    struct pop3 *p = open_on(&s, late_challenge, POP3_MECH_LOGIN, &e);
    assert_null(p);
    if (!strstr(e.msg, "AUTH LOGIN: ") || !strstr(e.msg, "after the exchange completed"))
        fail_msg("unexpected: %s", e.msg);
    finish(&s);
}

/* With PIPELINING, the CAPA after login goes out with the mechanism's last
 * line (RFC 2449 §6.6): this server answers the login only once both are
 * in, so a client that waited for +OK before its CAPA would time out. */
static const char *const login_capa_pipelined[] = {
    "S:+OK ready", "C:CAPA", "S:+OK", "S:SASL LOGIN", "S:PIPELINING", "S:UIDL", "S:.",
    "C:AUTH LOGIN", "S:+ VXNlcm5hbWU6", "C:dXNlcg==", "S:+ UGFzc3dvcmQ6", "C:cHc=", "C:CAPA",
    "S:+OK welcome", "S:+OK", "S:PIPELINING", "S:UIDL", "S:LOGIN-DELAY 900", "S:.",
    "C:QUIT",
    NULL,
};

/* ...and when that login is refused, the session is closed (a CAPA reply
 * would still be coming): nothing else can be sent on it. */
static const char *const login_capa_pipelined_refused[] = {
    "S:+OK ready", "C:CAPA", "S:+OK", "S:SASL LOGIN", "S:PIPELINING", "S:.",
    "C:AUTH LOGIN", "S:+ VXNlcm5hbWU6", "C:dXNlcg==", "S:+ UGFzc3dvcmQ6", "C:cHc=", "C:CAPA",
    "S:-ERR [AUTH] wrong password", "S:+OK", "S:SASL LOGIN", "S:PIPELINING", "S:.",
    NULL,
};

static void sasl_capa_pipelined_after_login(void **state)
{
    (void)state;
    struct scripted s;
    struct err e;
    struct pop3 *p = open_on(&s, login_capa_pipelined, POP3_MECH_LOGIN, &e);
    if (!p)
        fail_msg("open: %s", e.msg);
    assert_int_equal(pop3_capa(p)->login_delay, 900); /* the CAPA after login */
    assert_int_equal(pop3_quit(&p, &e), 0);
    finish(&s);
    struct pop3_opts o;
    start(&s, login_capa_pipelined_refused);
    o = opts(&s, POP3_MECH_LOGIN);
    p = pop3_connect(&o, &e);
    if (!p)
        fail_msg("connect: %s", e.msg);
    assert_int_equal(pop3_login(p, &e), -1);
    assert_int_equal(e.kind, ERR_AUTH);
    struct err q;
    assert_int_equal(pop3_stat(p, &(uint32_t){0}, &(uint64_t){0}, &q), -1);
    pop3_abort(&p);
    finish(&s);
}

int main(void)
{
    /* a script may still be writing when the client under test has closed */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(listing_sequential),
        cmocka_unit_test(listing_pipelined),
        cmocka_unit_test(quit_waits_only_after_dele),
        cmocka_unit_test(listing_duplicate_uidl),
        cmocka_unit_test(listing_uidl_refused),
        cmocka_unit_test(sasl_plain_initial_response),
        cmocka_unit_test(sasl_late_challenge_cancelled),
        cmocka_unit_test(sasl_capa_pipelined_after_login),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
