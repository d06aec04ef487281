/* Unit tests: the group commit of received messages (include/committer.h),
 * on a real SQLite store in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "committer.h"
#include "store.h"
#include "tmpstore.h"

struct fx {
    char dir[TMPDIR_MAX];
    struct committer *c;
    struct store *other; /* a second handle: what other threads see */
    int notified;
};

static void on_commit(void *ctx) { ((struct fx *)ctx)->notified++; }

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    if (tmpdir_make(fx->dir, sizeof fx->dir, "committer") < 0)
        return -1;
    struct err e;
    if (!(fx->c = committer_start(fx->dir, on_commit, fx, &e)) ||
        !(fx->other = store_open(fx->dir, &e)))
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    committer_stop(&fx->c);
    committer_stop(&fx->c); /* NULL: no-op */
    tmpstore_close(fx->dir, fx->other);
    free(fx);
    return 0;
}

static const char *const HOOKS[] = {"hook"};

/* Receive one message of `size` bytes for account/uidl and hand it over. */
static int submit(struct committer_session *s, const char *account, const char *uidl,
                  size_t size, struct err *e)
{
    struct store_msg *m;
    if (committer_msg_begin(s, account, uidl, &m, e) < 0)
        return -1;
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    for (size_t left = size; left;) {
        size_t n = left < sizeof buf ? left : sizeof buf;
        if (store_msg_write(m, buf, n, e) < 0) {
            store_msg_abort(m);
            return -1;
        }
        left -= n;
    }
    assert_int_equal(store_msg_size(m), size);
    return committer_submit(s, m, NULL, HOOKS, 1, clock_wall_ms(), e);
}

static void committed_and_visible(void **state)
{
    struct fx *fx = *state;
    struct committer_session s;
    committer_session_init(&s, fx->c);
    struct err e;
    for (int i = 0; i < 10; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "u%d", i);
        assert_int_equal(submit(&s, "a", uidl, 100 + (size_t)i, &e), 0);
    }
    assert_int_equal(committer_wait(&s, &e), 0);
    assert_int_equal(s.submitted, 10);
    assert_int_equal(s.done, 10);
    assert_int_equal(s.stored, 10);
    assert_true(fx->notified >= 1);
    for (int i = 0; i < 10; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "u%d", i);
        enum store_uidl_state st;
        int64_t id = 0;
        assert_int_equal(store_uidl_get(fx->other, "a", uidl, &st, &id, &e), 0);
        assert_int_equal(st, STORE_UIDL_STORED);
        assert_true(id > 0);
    }
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(fx->other, &q, &e), 0);
    assert_int_equal(q.pending, 10);
}

static void one_refused_message_fails_only_itself(void **state)
{
    struct fx *fx = *state;
    struct committer_session s;
    committer_session_init(&s, fx->c);
    struct err e;
    assert_int_equal(submit(&s, "a", "dup", 10, &e), 0);
    assert_int_equal(committer_wait(&s, &e), 0);
    committer_session_init(&s, fx->c);
    assert_int_equal(submit(&s, "a", "dup", 10, &e), 0); /* refused at commit */
    assert_int_equal(committer_wait(&s, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    assert_true(s.failed);
    /* after a failure the session takes nothing more */
    assert_int_equal(submit(&s, "a", "later", 10, &e), -1);
    assert_int_equal(e.kind, ERR_USAGE);
    enum store_uidl_state st;
    assert_int_equal(store_uidl_get(fx->other, "a", "later", &st, NULL, &e), STORE_NOTFOUND);
    /* another session is not affected */
    struct committer_session s2;
    committer_session_init(&s2, fx->c);
    assert_int_equal(submit(&s2, "b", "x", 10, &e), 0);
    assert_int_equal(committer_wait(&s2, &e), 0);
}

/* A message half received holds no lock: another handle writes at once. */
static void receiving_holds_no_lock(void **state)
{
    struct fx *fx = *state;
    struct committer_session s;
    committer_session_init(&s, fx->c);
    struct err e;
    assert_int_equal(submit(&s, "a", "done", 10, &e), 0);
    struct store_msg *m;
    assert_int_equal(committer_msg_begin(&s, "a", "half", &m, &e), 0);
    assert_int_equal(store_msg_write(m, "abc", 3, &e), 0);
    assert_int_equal(committer_wait(&s, &e), 0); /* the finished one is durable */
    int64_t t0 = clock_mono_ms();
    struct store_account_state as = {.state = "idle"};
    assert_int_equal(store_account_set(fx->other, "other", &as, &e), 0);
    assert_true(clock_mono_ms() - t0 < 1000);
    enum store_uidl_state st;
    assert_int_equal(store_uidl_get(fx->other, "a", "done", &st, NULL, &e), 0);
    store_msg_abort(m);
}

/* More than the queue holds, large ones among them: the submitter waits for
 * room, and everything ends up committed. */
static void bounded_queue(void **state)
{
    struct fx *fx = *state;
    struct committer_session s;
    committer_session_init(&s, fx->c);
    struct err e;
    size_t n = COMMITTER_QUEUE_MAX * 2 + 3;
    for (size_t i = 0; i < n; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "q%zu", i);
        size_t size = i % 50 == 0 ? STORE_SPOOL_MEM_MAX + 10 : 200;
        assert_int_equal(submit(&s, "a", uidl, size, &e), 0);
    }
    assert_int_equal(committer_wait(&s, &e), 0);
    assert_int_equal(s.stored, n);
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(fx->other, &q, &e), 0);
    assert_int_equal(q.pending, (int64_t)n);
}

/* Two threads' sessions at once. */
struct worker {
    struct committer *c;
    char account[16];
    int rc;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    struct committer_session s;
    committer_session_init(&s, w->c);
    struct err e;
    w->rc = 0;
    for (int i = 0; i < 50 && w->rc == 0; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "t%d", i);
        w->rc = submit(&s, w->account, uidl, 300, &e);
    }
    if (committer_wait(&s, &e) < 0)
        w->rc = -1;
    return NULL;
}

static void sessions_side_by_side(void **state)
{
    struct fx *fx = *state;
    struct worker w[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        w[i].c = fx->c;
        snprintf(w[i].account, sizeof w[i].account, "w%d", i);
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].rc, 0);
    }
    struct err e;
    struct store_queue_counts q;
    assert_int_equal(store_delivery_counts(fx->other, &q, &e), 0);
    assert_int_equal(q.pending, 150);
}

static void start_fails_cleanly(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    assert_null(committer_start("/proc/no/such/dir", NULL, NULL, &e));
    assert_int_equal(e.kind, ERR_INTERNAL);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(committed_and_visible),
        T(one_refused_message_fails_only_itself),
        T(receiving_holds_no_lock),
        T(bounded_queue),
        T(sessions_side_by_side),
        cmocka_unit_test(start_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
