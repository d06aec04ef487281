/* Unit tests: explicit POP3 sessions (include/sessions.h): commands, marks
 * and QUIT, the idle timeout and the whole-session deadline, a bounded wait
 * for a busy session, and timing that follows the monotonic clock whatever
 * the wall clock does.  The server is tests/unit/pop3_fake.h (time and
 * misbehaviour); the same sessions against Dovecot are in
 * tests/integration/test_api.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "pop3.h"
#include "pop3_fake.h"
#include "sessions.h"

/* The wall clock as this process sees it: CLOCK_REALTIME shifted by
 * wall_shift seconds (every clock_gettime() of the bridge's code linked into
 * this binary comes here); the monotonic clock is left alone. */
static atomic_llong wall_shift;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int rc = (int)syscall(SYS_clock_gettime, id, ts);
    if (rc == 0 && id == CLOCK_REALTIME)
        ts->tv_sec += (time_t)atomic_load(&wall_shift);
    return rc;
}

static int64_t mono_now(void) { return clock_mono_ms(); }

struct mem {
    char buf[4096];
    size_t len;
};

static int mem_data(void *ctx, const char *buf, size_t len, struct err *e)
{
    (void)e;
    struct mem *m = ctx;
    if (m->len + len >= sizeof m->buf)
        return -1;
    memcpy(m->buf + m->len, buf, len);
    m->len += len;
    m->buf[m->len] = '\0';
    return 0;
}

/* Wait (bounded) until the table is empty, without touching the session
 * (using it would keep it alive); the milliseconds it took, or -1. */
static int64_t wait_gone(struct sessions *s, int64_t max_ms)
{
    int64_t t0 = mono_now();
    while (mono_now() - t0 < max_ms) {
        if (sessions_count(s) == 0)
            return mono_now() - t0;
        usleep(50000);
    }
    return -1;
}

/* ---- sessions without a server -------------------------------------------------------------- */

static void no_server(void **state)
{
    (void)state;
    struct err e;
    struct sessions *s = sessions_new(&e);
    assert_non_null(s);
    /* a port that refuses: the open fails and gives its slot back */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd); /* bound then closed: nothing listens there now */
    struct pop3_opts o = {.host = "127.0.0.1", .port = ntohs(a.sin_port), .tls = POP3_TLS_NONE,
                          .username = "u", .password = "p", .allow_plaintext = true,
                          .timeout_ms = 2000};
    struct sessions_limits lim = {1, 1, 60000};
    struct session_info info;
    assert_int_equal(sessions_open(s, "acct", &o, NULL, &lim, &info, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_int_equal(sessions_count(s), 0);
    /* the slot is free again: a second try fails the same way, not with FULL */
    assert_int_equal(sessions_open(s, "acct", &o, NULL, &lim, &info, &e), -1);
    int why = 0;
    assert_null(sessions_acquire(s, "s_00000000000000000000000000000000", 10, &why));
    assert_int_equal(why, SESSIONS_NOTFOUND);
    assert_null(sessions_acquire(s, "short", 0, &why));
    assert_int_equal(why, SESSIONS_NOTFOUND);
    sessions_free(&s);
    assert_null(s);
    sessions_free(&s); /* NULL-safe */
}

static void commands_and_quit(void **state)
{
    (void)state;
    struct fake_pop3 f;
    fake_start(&f);
    struct err e;
    struct sessions *s = sessions_new(&e);
    assert_non_null(s);
    struct pop3_opts o = fake_opts(&f);
    struct sessions_limits lim = {2, 4, 60000};
    struct session_info info;
    assert_int_equal(sessions_open(s, "acct", &o, NULL, &lim, &info, &e), 0);
    assert_int_equal(info.count, 3);
    assert_int_equal(strlen(info.id), SESSIONS_ID_LEN);
    assert_int_equal(sessions_count(s), 1);
    int why = 0;
    struct session *x = sessions_acquire(s, info.id, 0, &why);
    assert_non_null(x);
    assert_string_equal(sessions_listing(x)->entries[1].uidl, "uid-two");
    struct mem m = {0};
    struct pop3_sink k = {.data = mem_data, .ctx = &m};
    assert_int_equal(sessions_retr(x, 2, &k, &e), 0);
    assert_non_null(strstr(m.buf, "Subject: two"));
    assert_int_equal(sessions_dele(x, 2, &e), 0);
    assert_true(sessions_is_marked(x, 2));
    assert_int_equal(sessions_dele(x, 2, &e), SESSIONS_MARKED);
    assert_int_equal(sessions_retr(x, 2, &k, &e), SESSIONS_MARKED);
    assert_int_equal(sessions_retr(x, 4, &k, &e), SESSIONS_NOMSG);
    assert_int_equal(sessions_rset(x, &e), 0);
    assert_false(sessions_is_marked(x, 2));
    assert_int_equal(sessions_dele(x, 3, &e), 0);
    sessions_info(x, &info);
    assert_int_equal(info.marked, 1);
    assert_int_equal(atomic_load(&f.deleted), 0); /* nothing deleted before QUIT */
    uint32_t deleted = 0;
    char **uidls = NULL;
    size_t nu = 0;
    assert_int_equal(sessions_quit(s, x, &deleted, &uidls, &nu, &e), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(nu, 1);
    assert_string_equal(uidls[0], "uid-three");
    sessions_uidls_free(uidls, nu);
    assert_int_equal(atomic_load(&f.deleted), 1);
    assert_int_equal(sessions_count(s), 0);
    assert_null(sessions_acquire(s, info.id, 0, &why));
    assert_int_equal(why, SESSIONS_NOTFOUND);
    sessions_free(&s);
    fake_stop(&f);
}

/* Used again and again, a session still ends at its whole-session deadline
 * (aborted, nothing deleted); its expires_at says so from the start. */
static void whole_session_deadline(void **state)
{
    (void)state;
    struct fake_pop3 f;
    fake_start(&f);
    struct err e;
    struct sessions *s = sessions_new(&e);
    struct pop3_opts o = fake_opts(&f);
    o.session_timeout_ms = 1200;
    struct sessions_limits lim = {2, 4, 60000};
    struct session_info info;
    int64_t t0 = mono_now();
    assert_int_equal(sessions_open(s, "acct", &o, NULL, &lim, &info, &e), 0);
    assert_true(info.expires_at - info.created_at <= 1200 + 50);
    int64_t gone = -1;
    while (mono_now() - t0 < 6000) {
        int why = 0;
        struct session *x = sessions_acquire(s, info.id, 0, &why);
        if (!x) {
            assert_int_equal(why, SESSIONS_NOTFOUND);
            gone = mono_now() - t0;
            break;
        }
        sessions_noop(x, &e); /* may fail with ERR_TIMEOUT at the deadline */
        sessions_release(s, x);
        usleep(100000);
    }
    if (gone < 1000 || gone > 4000)
        fail_msg("the session ended after %lld ms, not at its 1200 ms deadline",
                 (long long)gone);
    assert_int_equal(atomic_load(&f.deleted), 0); /* aborted without QUIT */
    sessions_free(&s);
    fake_stop(&f);
}

/* The idle timeout counts on the monotonic clock: a wall clock that jumps
 * two hours forward expires nothing, one that jumps back prolongs nothing. */
static void wall_clock_jumps(void **state)
{
    (void)state;
    struct fake_pop3 f;
    fake_start(&f);
    struct err e;
    struct sessions *s = sessions_new(&e);
    struct pop3_opts o = fake_opts(&f);
    struct sessions_limits lim = {2, 4, 1500};
    struct session_info info;
    assert_int_equal(sessions_open(s, "acct", &o, NULL, &lim, &info, &e), 0);
    atomic_store(&wall_shift, 7200);
    usleep(1100000); /* the reaper looks at least every SESSIONS_REAP_MAX_MS */
    int why = 0;
    struct session *x = sessions_acquire(s, info.id, 0, &why);
    if (!x)
        fail_msg("a session idle for 1.1 s of its 1.5 s expired when the wall clock jumped");
    sessions_release(s, x);
    atomic_store(&wall_shift, -7200);
    int64_t took = wait_gone(s, 6000);
    atomic_store(&wall_shift, 0);
    if (took < 1000 || took > 4000)
        fail_msg("with the wall clock set back, the idle session ended after %lld ms, not 1.5 s",
                 (long long)took);
    sessions_free(&s);
    fake_stop(&f);
}

/* Waiting for a session another request holds ends after wait_ms, also when
 * the wall clock jumps forward meanwhile. */
static void busy_wait_bounded(void **state)
{
    (void)state;
    struct fake_pop3 f;
    fake_start(&f);
    struct err e;
    struct sessions *s = sessions_new(&e);
    struct pop3_opts o = fake_opts(&f);
    struct sessions_limits lim = {2, 4, 60000};
    struct session_info info;
    assert_int_equal(sessions_open(s, "acct", &o, NULL, &lim, &info, &e), 0);
    int why = 0;
    struct session *x = sessions_acquire(s, info.id, 0, &why);
    assert_non_null(x);
    atomic_store(&wall_shift, 7200);
    alarm(30); /* a wait on the wall clock would last two hours */
    int64_t t0 = mono_now();
    assert_null(sessions_acquire(s, info.id, 300, &why));
    int64_t took = mono_now() - t0;
    alarm(0);
    atomic_store(&wall_shift, 0);
    assert_int_equal(why, SESSIONS_BUSY);
    if (took < 250 || took > 3000)
        fail_msg("a 300 ms wait for a busy session took %lld ms", (long long)took);
    sessions_release(s, x);
    sessions_free(&s);
    fake_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_server),
        cmocka_unit_test(commands_and_quit),
        cmocka_unit_test(whole_session_deadline),
        cmocka_unit_test(wall_clock_jumps),
        cmocka_unit_test(busy_wait_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
