/* Unit tests: the in-memory poll history (include/pollhist.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "pollhist.h"

static struct pollhist_poll poll_at(int64_t at, bool ok)
{
    struct pollhist_poll p = {.at = at, .duration_ms = 10, .listed = 3, .new_messages = 1,
                              .ok = ok};
    if (!ok)
        snprintf(p.error, sizeof p.error, "connection refused at %lld", (long long)at);
    return p;
}

/* The ring keeps the last POLLHIST_POLLS polls, newest first. */
static void ring_newest_first(void **state)
{
    (void)state;
    struct pollhist *h = pollhist_new(4);
    assert_non_null(h);
    struct pollhist_poll out[POLLHIST_POLLS + 5];
    size_t n = 9;
    assert_int_equal(pollhist_get(h, "a", NULL, out, 5, &n), -1);
    assert_int_equal(n, 0);
    for (int i = 1; i <= POLLHIST_POLLS + 3; i++) {
        struct pollhist_poll p = poll_at(i, i % 2 == 0);
        pollhist_poll(h, "a", &p);
    }
    assert_int_equal(pollhist_get(h, "a", NULL, out, POLLHIST_POLLS + 5, &n), 0);
    assert_int_equal(n, POLLHIST_POLLS);
    assert_int_equal(out[0].at, POLLHIST_POLLS + 3);
    assert_int_equal(out[POLLHIST_POLLS - 1].at, 4);
    assert_false(out[0].ok);
    assert_string_equal(out[0].error, "connection refused at 23");
    assert_true(out[1].ok);
    assert_string_equal(out[1].error, "");
    /* fewer asked for */
    assert_int_equal(pollhist_get(h, "a", NULL, out, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(out[1].at, POLLHIST_POLLS + 2);
    pollhist_free(&h);
    assert_null(h);
    pollhist_free(&h);
}

/* The last session's CAPA and TLS details; capped lines and count. */
static void session_details(void **state)
{
    (void)state;
    struct pollhist *h = pollhist_new(2);
    struct net_tls_info ti = {.version = "TLSv1.3", .verified = true, .not_after = 1893456000000};
    snprintf(ti.peer, sizeof ti.peer, "CN=localhost");
    snprintf(ti.issuer, sizeof ti.issuer, "CN=Test CA");
    char longline[400];
    memset(longline, 'x', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    const char *capa[POLLHIST_CAPA_MAX + 4];
    capa[0] = "TOP";
    capa[1] = "UIDL";
    capa[2] = longline;
    capa[3] = "bad\x01line";
    for (size_t i = 4; i < POLLHIST_CAPA_MAX + 4; i++)
        capa[i] = "X-MORE";
    pollhist_session(h, "acc", 1000, capa, POLLHIST_CAPA_MAX + 4, &ti);
    struct pollhist_session s;
    size_t n = 1;
    assert_int_equal(pollhist_get(h, "acc", &s, NULL, 0, &n), 0);
    assert_int_equal(n, 0); /* a session, no poll yet */
    assert_int_equal(s.at, 1000);
    assert_true(s.tls);
    assert_string_equal(s.tls_info.version, "TLSv1.3");
    assert_string_equal(s.tls_info.issuer, "CN=Test CA");
    assert_int_equal(s.tls_info.not_after, 1893456000000);
    assert_int_equal(s.n_capa, POLLHIST_CAPA_MAX);
    assert_string_equal(s.capa[0], "TOP");
    assert_int_equal(strlen(s.capa[2]), POLLHIST_CAPA_LINE_MAX);
    assert_null(strchr(s.capa[3], '\x01'));
    /* a plaintext session replaces it */
    pollhist_session(h, "acc", 2000, capa, 1, NULL);
    assert_int_equal(pollhist_get(h, "acc", &s, NULL, 0, NULL), 0);
    assert_false(s.tls);
    assert_string_equal(s.tls_info.version, "");
    assert_int_equal(s.n_capa, 1);
    pollhist_free(&h);
}

/* Bounded in accounts: the least recently updated one gives way. */
static void bounded_accounts(void **state)
{
    (void)state;
    struct pollhist *h = pollhist_new(2);
    struct pollhist_poll p = poll_at(1, true);
    pollhist_poll(h, "a", &p);
    pollhist_poll(h, "b", &p);
    pollhist_poll(h, "a", &p); /* b is now the oldest */
    pollhist_poll(h, "c", &p);
    assert_int_equal(pollhist_get(h, "a", NULL, NULL, 0, NULL), 0);
    assert_int_equal(pollhist_get(h, "b", NULL, NULL, 0, NULL), -1);
    assert_int_equal(pollhist_get(h, "c", NULL, NULL, 0, NULL), 0);
    char big[POLLHIST_NAME_MAX + 2];
    memset(big, 'n', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    pollhist_poll(h, big, &p); /* not recorded */
    assert_int_equal(pollhist_get(h, big, NULL, NULL, 0, NULL), -1);
    assert_int_equal(pollhist_get(h, "a", NULL, NULL, 0, NULL), 0);
    assert_null(pollhist_new(0));
    /* NULL history: nothing recorded, nothing found */
    pollhist_poll(NULL, "a", &p);
    assert_int_equal(pollhist_get(NULL, "a", NULL, NULL, 0, NULL), -1);
    pollhist_free(&h);
    assert_non_null(pollhist_default());
    assert_ptr_equal(pollhist_default(), pollhist_default());
}

struct writer {
    struct pollhist *h;
    char name[16];
};

#define THREADS 4
#define PER_THREAD 2000

static void *write_many(void *arg)
{
    struct writer *w = arg;
    for (int i = 1; i <= PER_THREAD; i++) {
        struct pollhist_poll p = poll_at(i, true);
        pollhist_poll(w->h, w->name, &p);
        pollhist_session(w->h, w->name, i, NULL, 0, NULL);
        struct pollhist_poll out[POLLHIST_POLLS];
        size_t n;
        pollhist_get(w->h, "t0", NULL, out, POLLHIST_POLLS, &n);
    }
    return NULL;
}

/* Writers and readers on several threads (run under TSan/ASan too). */
static void threads(void **state)
{
    (void)state;
    struct pollhist *h = pollhist_new(THREADS);
    pthread_t t[THREADS];
    struct writer w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].h = h;
        snprintf(w[i].name, sizeof w[i].name, "t%d", i);
        assert_int_equal(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        struct pollhist_poll out[1];
        struct pollhist_session s;
        size_t n;
        assert_int_equal(pollhist_get(h, w[i].name, &s, out, 1, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(out[0].at, PER_THREAD);
        assert_int_equal(s.at, PER_THREAD);
    }
    pollhist_free(&h);
}

/* What the store needs of a session: in full when its details are new (or
 * none was saved, or the save failed), else only its time; nothing when no
 * session began in the poll. */
static void session_share(void **state)
{
    (void)state;
    struct pollhist *h = pollhist_new(2);
    assert_non_null(h);
    struct pollhist_session out;
    int64_t was = -1;
    assert_int_equal(pollhist_session_share(h, "a", 0, &out, &was), POLLHIST_SHARE_NONE);
    const char *capa[] = {"USER", "UIDL"};
    struct net_tls_info t = {.version = "TLSv1.3", .cipher = "TLS_AES_128_GCM_SHA256"};
    pollhist_session(h, "a", 100, capa, 2, &t);
    assert_int_equal(pollhist_session_share(h, "a", 90, &out, &was), POLLHIST_SHARE_FULL);
    assert_int_equal(out.at, 100);
    assert_int_equal(out.n_capa, 2);
    /* a session older than the poll: none began in it */
    assert_int_equal(pollhist_session_share(h, "a", 101, &out, &was), POLLHIST_SHARE_NONE);
    pollhist_session_shared(h, "a", &out, true);
    /* the same details again (a resumed TLS session is no new detail): only the time */
    t.resumed = true;
    pollhist_session(h, "a", 200, capa, 2, &t);
    memset(&out, 0, sizeof out);
    assert_int_equal(pollhist_session_share(h, "a", 150, &out, &was), POLLHIST_SHARE_AT);
    assert_int_equal(out.at, 200);
    assert_int_equal(was, 100);
    pollhist_session_shared(h, "a", &out, true);
    pollhist_session(h, "a", 300, capa, 2, &t);
    assert_int_equal(pollhist_session_share(h, "a", 250, &out, &was), POLLHIST_SHARE_AT);
    assert_int_equal(was, 200);
    /* the store did not move it (another session was saved): in full next */
    pollhist_session_shared(h, "a", &out, false);
    pollhist_session(h, "a", 400, capa, 2, &t);
    assert_int_equal(pollhist_session_share(h, "a", 350, &out, &was), POLLHIST_SHARE_FULL);
    pollhist_session_shared(h, "a", &out, true);
    /* a changed CAPA line, a changed cipher: in full */
    const char *capa2[] = {"USER", "UIDL", "PIPELINING"};
    pollhist_session(h, "a", 500, capa2, 3, &t);
    assert_int_equal(pollhist_session_share(h, "a", 450, &out, &was), POLLHIST_SHARE_FULL);
    assert_int_equal(out.n_capa, 3);
    pollhist_session_shared(h, "a", &out, true);
    snprintf(t.cipher, sizeof t.cipher, "TLS_AES_256_GCM_SHA384");
    pollhist_session(h, "a", 600, capa2, 3, &t);
    assert_int_equal(pollhist_session_share(h, "a", 550, &out, &was), POLLHIST_SHARE_FULL);
    /* saved, but a newer session came meanwhile: that one is not marked */
    pollhist_session(h, "a", 700, capa2, 3, NULL);
    pollhist_session_shared(h, "a", &out, true);
    assert_int_equal(pollhist_session_share(h, "a", 650, &out, &was), POLLHIST_SHARE_FULL);
    assert_false(out.tls);
    pollhist_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ring_newest_first),
        cmocka_unit_test(session_details),
        cmocka_unit_test(bounded_accounts),
        cmocka_unit_test(threads),
        cmocka_unit_test(session_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
