/* Unit tests: one poll of one account (include/poller.h) against the
 * scripted POP3 peer (pop3_fake.h), on a real SQLite store and committer in
 * a temporary directory. */
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
#include "config.h"
#include "poller.h"
#include "pollhist.h"
#include "pop3.h"
#include "store.h"
#include "pop3_fake.h"
#include "tmpstore.h"

#define ACCOUNT "acct-unit"
#define CANCEL_AFTER_MS 300   /* the cancel fd becomes readable this long into a poll */
#define CANCEL_SLOW_MS 200    /* each reply of the slow peer in the cancel test */
#define CANCEL_MAX_MS 1500    /* a cancelled poll ends within this */

struct fx {
    char dir[TMPDIR_MAX];
    struct fake_pop3 f;
    struct store *st;
    struct committer *cm;
    struct config_account a;
    char *hooks[1];
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    if (tmpstore_open(fx->dir, sizeof fx->dir, "poller", &fx->st) < 0)
        return -1;
    struct err e;
    if (!(fx->cm = committer_start(fx->dir, NULL, NULL, &e)))
        return -1;
    fake_start(&fx->f);
    fx->hooks[0] = "hook";
    fx->a = (struct config_account){
        .name = ACCOUNT, .host = "127.0.0.1", .port = (int)fx->f.port, .tls = CONFIG_TLS_NONE,
        .username = "u", .password = {.value = "p", .len = 1}, .allow_plaintext = true,
        .timeout_ms = 2000, .session_timeout_ms = 10000, .poll_interval_ms = 60000,
        .start = CONFIG_START_ALL, .after_delivery = CONFIG_AFTER_KEEP,
        .max_message_size = 1 << 20, .max_messages_per_poll = 500, .webhooks = fx->hooks,
        .webhook_count = 1};
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    fake_stop(&fx->f);
    committer_stop(&fx->cm);
    tmpstore_close(fx->dir, fx->st);
    free(fx);
    return 0;
}

/* Messages arrive at or vanish from the peer's mailbox (between sessions). */
static void set_gone(struct fx *fx, int idx, bool gone)
{
    pthread_mutex_lock(&fx->f.mu);
    fx->f.gone[idx] = gone;
    pthread_mutex_unlock(&fx->f.mu);
}

/* The UIDL's state, or -1 when the store does not know it. */
static int uidl_state(struct fx *fx, const char *uidl)
{
    enum store_uidl_state s;
    struct err e;
    int r = store_uidl_get(fx->st, ACCOUNT, uidl, &s, NULL, &e);
    if (r == STORE_NOTFOUND)
        return -1;
    assert_int_equal(r, 0);
    return (int)s;
}

static int count_cb(void *ctx, const char *uidl, enum store_uidl_state state, int64_t msg_id,
                    struct err *e)
{
    (void)uidl;
    (void)state;
    (void)msg_id;
    (void)e;
    ++*(int *)ctx;
    return 0;
}

static int uidl_count(struct fx *fx)
{
    int n = 0;
    struct err e;
    assert_int_equal(store_uidls_each(fx->st, ACCOUNT, count_cb, &n, &e), 0);
    return n;
}

static int poll_ok(struct fx *fx, bool first, struct poller_result *res)
{
    struct err e;
    int rc = poller_poll(fx->st, fx->cm, &fx->a, first, 0, res, &e);
    if (rc != 0)
        fail_msg("poll failed: %s", e.msg);
    return rc;
}

/* New messages are stored once; the next poll fetches nothing again. */
static void new_stored_once(void **state)
{
    struct fx *fx = *state;
    struct poller_result res;
    poll_ok(fx, true, &res);
    assert_int_equal(res.listed, FAKE_MSGS);
    assert_int_equal(res.fetched, FAKE_MSGS);
    assert_int_equal(res.ignored, 0);
    size_t octets = 0;
    for (int i = 1; i <= FAKE_MSGS; i++) {
        octets += strlen(fake_msg[i]);
        assert_int_equal(uidl_state(fx, fake_uidl[i]), STORE_UIDL_STORED);
    }
    assert_int_equal(res.bytes, octets);
    assert_int_equal(uidl_count(fx), FAKE_MSGS);
    struct store_queue_counts qc;
    struct err e;
    assert_int_equal(store_delivery_counts(fx->st, &qc, &e), 0);
    assert_int_equal(qc.pending, FAKE_MSGS); /* one delivery each to its one webhook */

    poll_ok(fx, false, &res);
    assert_int_equal(res.listed, FAKE_MSGS);
    assert_int_equal(res.fetched, 0);
    assert_int_equal(res.bytes, 0);
    assert_int_equal(uidl_count(fx), FAKE_MSGS);
    assert_int_equal(store_delivery_counts(fx->st, &qc, &e), 0);
    assert_int_equal(qc.pending, FAKE_MSGS);
    assert_int_equal(atomic_load(&fx->f.deleted), 0); /* after_delivery: keep */
}

/* start: new records what is there at the first poll without delivering
 * it; what arrives afterwards is fetched. */
static void start_new_ignores_first(void **state)
{
    struct fx *fx = *state;
    fx->a.start = CONFIG_START_NEW;
    set_gone(fx, 3, true); /* not arrived yet */
    struct poller_result res;
    poll_ok(fx, true, &res);
    assert_int_equal(res.listed, 2);
    assert_int_equal(res.ignored, 2);
    assert_int_equal(res.fetched, 0);
    assert_int_equal(uidl_state(fx, "uid-one"), STORE_UIDL_IGNORED);
    assert_int_equal(uidl_state(fx, "uid-two"), STORE_UIDL_IGNORED);
    struct store_queue_counts qc;
    struct err e;
    assert_int_equal(store_delivery_counts(fx->st, &qc, &e), 0);
    assert_int_equal(qc.pending, 0);

    set_gone(fx, 3, false); /* arrives */
    poll_ok(fx, false, &res);
    assert_int_equal(res.listed, 3);
    assert_int_equal(res.ignored, 0);
    assert_int_equal(res.fetched, 1);
    assert_int_equal(uidl_state(fx, "uid-three"), STORE_UIDL_STORED);
    assert_int_equal(uidl_state(fx, "uid-one"), STORE_UIDL_IGNORED);
}

/* A UIDL the store already knows is not retrieved again. */
static void known_not_refetched(void **state)
{
    struct fx *fx = *state;
    struct store_msg *m = NULL;
    struct err e;
    const char *wh[] = {"hook"};
    assert_int_equal(store_msg_begin(fx->st, ACCOUNT, "uid-two", &m, &e), 0);
    assert_int_equal(store_msg_write(m, "Subject: x\r\n\r\nx\r\n", 17, &e), 0);
    assert_int_equal(store_msg_finish(m, NULL, wh, 1, poller_now_ms(), NULL, &e), 0);
    struct poller_result res;
    poll_ok(fx, true, &res);
    assert_int_equal(res.listed, FAKE_MSGS);
    assert_int_equal(res.fetched, FAKE_MSGS - 1);
    assert_int_equal(res.bytes, strlen(fake_msg[1]) + strlen(fake_msg[3]));
    struct store_queue_counts qc;
    assert_int_equal(store_delivery_counts(fx->st, &qc, &e), 0);
    assert_int_equal(qc.pending, FAKE_MSGS); /* uid-two's own, and not a second one */
}

/* A UIDL the server no longer lists is forgotten (it had nothing left to
 * deliver); the others stay. */
static void vanished_forgotten(void **state)
{
    struct fx *fx = *state;
    fx->a.start = CONFIG_START_NEW;
    struct poller_result res;
    poll_ok(fx, true, &res);
    assert_int_equal(uidl_count(fx), FAKE_MSGS);
    set_gone(fx, 2, true); /* taken away by another client */
    poll_ok(fx, false, &res);
    assert_int_equal(res.listed, 2);
    assert_int_equal(uidl_state(fx, "uid-two"), -1);
    assert_int_equal(uidl_state(fx, "uid-one"), STORE_UIDL_IGNORED);
    assert_int_equal(uidl_state(fx, "uid-three"), STORE_UIDL_IGNORED);
    assert_int_equal(uidl_count(fx), 2);
}

/* after_delivery: delete removes from the server only what was delivered. */
static void delete_only_delivered(void **state)
{
    struct fx *fx = *state;
    fx->a.after_delivery = CONFIG_AFTER_DELETE;
    struct poller_result res;
    poll_ok(fx, true, &res);
    assert_int_equal(res.fetched, FAKE_MSGS);
    assert_int_equal(res.deleted, 0); /* nothing delivered yet */
    assert_int_equal(atomic_load(&fx->f.deleted), 0);

    /* deliver uid-two only */
    struct store_delivery d[FAKE_MSGS + 1];
    size_t n = 0;
    struct err e;
    int64_t now = poller_now_ms();
    assert_int_equal(store_delivery_lease_due(fx->st, "t", "hook", now, 60000, d,
                                              FAKE_MSGS + 1, &n, &e), 0);
    assert_int_equal(n, FAKE_MSGS);
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(d[i].uidl, "uid-two") != 0)
            continue;
        struct store_attempt at = {.started_at = now, .duration_ms = 1, .http_status = 200,
                                   .outcome = "delivered"};
        assert_int_equal(store_delivery_record(fx->st, "t", d[i].id, &at, STORE_D_DELIVERED, 0,
                                               &e), 0);
        done++;
    }
    assert_int_equal(done, 1);

    poll_ok(fx, false, &res);
    assert_int_equal(res.deleted, 1);
    assert_int_equal(atomic_load(&fx->f.deleted), 1);
    assert_true(fx->f.gone[2]);
    assert_false(fx->f.gone[1]);
    assert_false(fx->f.gone[3]);
    assert_int_equal(uidl_state(fx, "uid-two"), STORE_UIDL_DELETED);
    assert_int_equal(uidl_state(fx, "uid-one"), STORE_UIDL_STORED);
}

/* The connection drops in the middle of a RETR: nothing of that message is
 * stored, what came whole before it is, nothing is deleted, and the error
 * is reported for the account. */
static void cut_mid_retr(void **state)
{
    struct fx *fx = *state;
    fx->a.after_delivery = CONFIG_AFTER_DELETE;
    fx->f.cut_retr = 2;
    struct poller_result res;
    struct err e;
    assert_int_equal(poller_poll(fx->st, fx->cm, &fx->a, true, 0, &res, &e), -1);
    assert_true(e.kind == ERR_CONN || e.kind == ERR_PROTO);
    assert_non_null(strstr(e.msg, "message 2")); /* what and where */
    assert_int_equal(uidl_state(fx, "uid-two"), -1);
    assert_int_equal(uidl_state(fx, "uid-three"), -1);
    assert_int_equal(uidl_state(fx, "uid-one"), STORE_UIDL_STORED);
    assert_int_equal(res.fetched, 1);
    assert_int_equal(res.bytes, strlen(fake_msg[1]));
    assert_int_equal(atomic_load(&fx->f.deleted), 0);
    assert_int_equal(atomic_load(&fx->f.quits), 0);
    struct store_queue_counts qc;
    assert_int_equal(store_delivery_counts(fx->st, &qc, &e), 0);
    assert_int_equal(qc.pending, 1);
    /* the poll's history line names the account and carries the error */
    struct pollhist_poll h[1];
    size_t n = 0;
    assert_int_equal(pollhist_get(pollhist_default(), ACCOUNT, NULL, h, 1, &n), 0);
    assert_int_equal(n, 1);
    assert_false(h[0].ok);
    assert_non_null(strstr(h[0].error, e.msg));

    /* the next poll, the server behaving, takes the rest */
    fx->f.cut_retr = 0;
    poll_ok(fx, false, &res);
    assert_int_equal(res.fetched, 2);
    assert_int_equal(uidl_count(fx), FAKE_MSGS);
}

struct canceller {
    int fd;
};

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    usleep(CANCEL_AFTER_MS * 1000);
    if (write(c->fd, "x", 1) != 1)
        perror("cancel write");
    return NULL;
}

/* The cancel fd ends a poll at once: ERR_TIMEOUT, no QUIT, nothing deleted. */
static void cancel_cuts_short(void **state)
{
    struct fx *fx = *state;
    fx->a.after_delivery = CONFIG_AFTER_DELETE;
    fx->f.delay_ms = CANCEL_SLOW_MS; /* a whole session: well over 2 s */
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct canceller c = {.fd = p[1]};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_later, &c), 0);
    struct poller_result res;
    struct err e;
    int64_t t0 = clock_mono_ms();
    int rc = poller_poll(fx->st, fx->cm, &fx->a, true, p[0], &res, &e);
    int64_t took = clock_mono_ms() - t0;
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
    assert_int_equal(rc, -1);
    assert_int_equal(e.kind, ERR_TIMEOUT);
    if (took < CANCEL_AFTER_MS || took > CANCEL_MAX_MS)
        fail_msg("a poll cancelled after %d ms took %lld ms", CANCEL_AFTER_MS, (long long)took);
    assert_int_equal(atomic_load(&fx->f.quits), 0);
    assert_int_equal(atomic_load(&fx->f.deleted), 0);
    assert_int_equal(res.fetched, 0);
    assert_int_equal(uidl_count(fx), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(new_stored_once, setup, teardown),
        cmocka_unit_test_setup_teardown(start_new_ignores_first, setup, teardown),
        cmocka_unit_test_setup_teardown(known_not_refetched, setup, teardown),
        cmocka_unit_test_setup_teardown(vanished_forgotten, setup, teardown),
        cmocka_unit_test_setup_teardown(delete_only_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(cut_mid_retr, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_cuts_short, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
