/* Unit tests: the mailbox service (include/mailbox.h): one-shot operations
 * at a UIDL, QUIT as the only commit, the whole-session limit, and the
 * worker pool (every job runs exactly once; a full queue, a long wait and a
 * stop cancel; workers run side by side).  The server is
 * tests/unit/pop3_fake.h; the same operations against Dovecot are in
 * tests/integration/test_api.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"
#include "mailbox.h"
#include "pop3.h"
#include "pop3_fake.h"

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

/* ---- one-shot operations ---------------------------------------------------------------- */

#define QUIT_WAIT_MS 5000 /* how long the fake server may take to read a QUIT */

/* The QUITs the fake server has read once it has read `want` of them or
 * QUIT_WAIT_MS went by: a QUIT without DELE is not awaited by the client
 * (pop3_quit), so the server may read it after the call returned. */
static int quits_seen(struct fake_pop3 *f, int want)
{
    for (int waited = 0; atomic_load(&f->quits) < want && waited < QUIT_WAIT_MS; waited += 10)
        usleep(10000);
    return atomic_load(&f->quits);
}

static void oneshots(void **state)
{
    (void)state;
    struct fake_pop3 f;
    fake_start(&f);
    struct pop3_opts o = fake_opts(&f);
    struct err e;
    const char *step = NULL;

    struct mailbox_info info;
    assert_int_equal(mailbox_info(&o, &info, &step, &e), 0);
    assert_int_equal(info.count, 3);
    assert_int_equal(info.n_capa, 3);
    assert_string_equal(info.capa[0], "UIDL");
    mailbox_info_free(&info);
    mailbox_info_free(&info); /* idempotent */

    struct pop3_listing *l = NULL;
    assert_int_equal(mailbox_listing(&o, &l, &step, &e), 0);
    assert_int_equal(l->count, 3);
    assert_string_equal(l->entries[2].uidl, "uid-three");
    mailbox_listing_free(&l);
    assert_null(l);

    struct mem m = {0};
    struct pop3_sink k = {.data = mem_data, .ctx = &m};
    assert_int_equal(mailbox_retr(&o, "uid-two", &k, &step, &e), 0);
    assert_non_null(strstr(m.buf, "Subject: two"));
    assert_non_null(strstr(m.buf, "line 2"));
    memset(&m, 0, sizeof m);
    assert_int_equal(mailbox_top(&o, "uid-one", 0, &k, &step, &e), 0);
    assert_non_null(strstr(m.buf, "Subject: one"));
    assert_null(strstr(m.buf, "body one"));
    assert_int_equal(mailbox_retr(&o, "uid-none", &k, &step, &e), MAILBOX_NOMSG);
    assert_int_equal(mailbox_dele(&o, "uid-none", &step, &e), MAILBOX_NOMSG);

    /* DELE by UIDL commits at QUIT: the message is gone afterwards */
    assert_int_equal(atomic_load(&f.deleted), 0);
    assert_int_equal(mailbox_dele(&o, "uid-one", &step, &e), 0);
    assert_int_equal(atomic_load(&f.deleted), 1);
    assert_int_equal(mailbox_dele(&o, "uid-one", &step, &e), MAILBOX_NOMSG);
    memset(&m, 0, sizeof m);
    assert_int_equal(mailbox_retr(&o, "uid-three", &k, &step, &e), 0); /* now number 2 */
    assert_non_null(strstr(m.buf, "Subject: three"));
    /* every session ended with QUIT */
    assert_int_equal(quits_seen(&f, atomic_load(&f.connections)), atomic_load(&f.connections));
    fake_stop(&f);
}

/* ---- the listing with summaries --------------------------------------------------------- */

struct lookup_ctx {
    int calls;
    bool fail;
};

/* The "store" knows uid-two only. */
static int lookup_two(void *ctx, const char *uidl, struct mailbox_summary *out, struct err *e)
{
    struct lookup_ctx *lc = ctx;
    lc->calls++;
    if (lc->fail)
        return err_set(e, ERR_INTERNAL, "store failed");
    if (strcmp(uidl, "uid-two") != 0)
        return 1;
    memset(out, 0, sizeof *out);
    out->known = true;
    snprintf(out->subject, sizeof out->subject, "from the store");
    return 0;
}

static void listing_summaries(void **state)
{
    (void)state;
    struct fake_pop3 f;
    fake_start(&f);
    struct pop3_opts o = fake_opts(&f);
    struct err e;
    const char *step = NULL;
    struct mailbox_cache *c = mailbox_cache_new(16);
    struct lookup_ctx lc = {0};
    struct pop3_listing *l = NULL;
    struct mailbox_summary *s = NULL;
    assert_int_equal(mailbox_listing_summaries(&o, "acc", c, lookup_two, &lc, &l, &s, &step, &e),
                     0);
    assert_int_equal(l->count, 3);
    assert_int_equal(lc.calls, 3);
    assert_true(s[0].known);
    assert_string_equal(s[0].subject, "one");          /* TOP n 0 */
    assert_string_equal(s[0].from_address, "a@example.com");
    assert_string_equal(s[1].subject, "from the store"); /* the lookup */
    assert_string_equal(s[2].subject, "three");
    assert_int_equal(mailbox_cache_count(c), 3);
    mailbox_listing_free(&l);
    free(s);
    /* again: everything from the cache, no lookup */
    assert_int_equal(mailbox_listing_summaries(&o, "acc", c, lookup_two, &lc, &l, &s, &step, &e),
                     0);
    assert_int_equal(lc.calls, 3);
    assert_string_equal(s[2].subject, "three");
    mailbox_listing_free(&l);
    free(s);
    /* another account has its own entries; a failing lookup fails the listing */
    lc.fail = true;
    assert_int_equal(mailbox_listing_summaries(&o, "other", c, lookup_two, &lc, &l, &s, &step, &e),
                     -1);
    assert_int_equal(e.kind, ERR_INTERNAL);
    assert_null(l);
    assert_null(s);
    assert_int_equal(quits_seen(&f, atomic_load(&f.connections) - 1) + 1,
                     atomic_load(&f.connections)); /* aborted one */
    mailbox_cache_free(&c);
    assert_null(c);
    fake_stop(&f);
}

/* TOPs stop at half of the session's limit: a slow server still gets its
 * listing answered, without the summaries it had no time for. */
static void summaries_time_budget(void **state)
{
    (void)state;
    struct fake_pop3 f;
    fake_start(&f);
    f.delay_ms = 100; /* every reply: the login and listing take >= 600 ms */
    struct pop3_opts o = fake_opts(&f);
    o.session_timeout_ms = 1400; /* TOPs only in the first 700 ms */
    struct err e;
    const char *step = NULL;
    struct pop3_listing *l = NULL;
    struct mailbox_summary *s = NULL;
    int64_t t0 = clock_mono_ms();
    assert_int_equal(mailbox_listing_summaries(&o, "acc", NULL, NULL, NULL, &l, &s, &step, &e), 0);
    assert_true(clock_mono_ms() - t0 < 1400);
    assert_int_equal(l->count, 3);
    int known = 0;
    for (uint32_t i = 0; i < l->count; i++)
        known += s[i].known;
    assert_true(known <= 1); /* at most the one TOP that began before 700 ms */
    mailbox_listing_free(&l);
    free(s);
    fake_stop(&f);
}

/* The cache holds at most its size, the oldest entry giving way. */
static void summary_cache(void **state)
{
    (void)state;
    assert_null(mailbox_cache_new(0));
    struct mailbox_cache *c = mailbox_cache_new(2);
    struct mailbox_summary a = {.known = true, .subject = "A"}, b = a, x = a, out;
    snprintf(b.subject, sizeof b.subject, "B");
    snprintf(x.subject, sizeof x.subject, "X");
    mailbox_cache_put(c, "acc", "1", &a);
    mailbox_cache_put(c, "acc", "2", &b);
    mailbox_cache_put(c, "acc", "2", &x); /* replaced, not added */
    assert_int_equal(mailbox_cache_count(c), 2);
    assert_true(mailbox_cache_get(c, "acc", "2", &out));
    assert_string_equal(out.subject, "X");
    assert_false(mailbox_cache_get(c, "other", "2", &out));
    mailbox_cache_put(c, "acc", "3", &a);
    assert_int_equal(mailbox_cache_count(c), 2);
    assert_false(mailbox_cache_get(c, "acc", "1", &out));
    assert_true(mailbox_cache_get(c, "acc", "3", &out));
    mailbox_cache_free(&c);
    /* parsing: RFC 2047 subject, display name, date in UTC */
    const char *hdr = "From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.org>\r\n"
                      "Subject: =?UTF-8?B?w5xiZXJzaWNodA==?=\r\n"
                      "Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n\r\n";
    struct mailbox_summary m;
    assert_int_equal(mailbox_summary_parse(hdr, strlen(hdr), &m, &(struct err){0}), 0);
    assert_string_equal(m.from_name, "J\xc3\xbcrgen");
    assert_string_equal(m.from_address, "j@example.org");
    assert_string_equal(m.subject, "\xc3\x9c" "bersicht");
    assert_string_equal(m.date, "2026-12-01T09:00:00Z");
}

/* A server that accepts and never answers: the call ends at the whole
 * session's limit (mailbox_opts), not at the longer network timeout. */
static void session_limit(void **state)
{
    (void)state;
    struct fake_pop3 f;
    fake_start(&f);
    f.silent = true;
    struct config_account a = {.name = "a", .host = "127.0.0.1", .port = (int)f.port,
                               .tls = CONFIG_TLS_NONE, .username = "u",
                               .allow_plaintext = true, .timeout_ms = 20000};
    struct pop3_opts o;
    mailbox_opts(&a, 800, &o);
    assert_int_equal(o.session_timeout_ms, 800);
    assert_int_equal(o.timeout_ms, 20000);
    struct err e;
    const char *step = NULL;
    struct mailbox_info info;
    int64_t t0 = clock_mono_ms();
    assert_int_equal(mailbox_info(&o, &info, &step, &e), -1);
    int64_t took = clock_mono_ms() - t0;
    assert_int_equal(e.kind, ERR_TIMEOUT);
    assert_string_equal(step, "POP3 login");
    if (took > 5000)
        fail_msg("a call limited to 800 ms took %lld ms", (long long)took);
    /* asked for no limit, and the account has none: none is set */
    o.session_timeout_ms = 0;
    mailbox_opts(&a, 0, &o);
    assert_int_equal(o.session_timeout_ms, 0);
    fake_stop(&f);
}

/* ---- the worker pool ---------------------------------------------------------------------- */

struct tjob {
    struct mailbox_job j;
    int runs;
    bool cancelled;
    int sleep_ms;
    atomic_int *concurrent, *peak;
};

static void tjob_run(struct mailbox_job *j, bool cancelled)
{
    struct tjob *t = (struct tjob *)j;
    t->runs++;
    t->cancelled = cancelled;
    if (cancelled)
        return;
    if (t->concurrent) {
        int now = atomic_fetch_add(t->concurrent, 1) + 1;
        int peak = atomic_load(t->peak);
        while (now > peak && !atomic_compare_exchange_weak(t->peak, &peak, now))
            ;
    }
    usleep((useconds_t)t->sleep_ms * 1000);
    if (t->concurrent)
        atomic_fetch_sub(t->concurrent, 1);
}

static void wait_idle(struct mailbox *m)
{
    for (int i = 0; i < 500; i++) {
        size_t q, r;
        mailbox_load(m, &q, &r);
        if (!q && !r)
            return;
        usleep(10000);
    }
    fail_msg("the pool did not finish its jobs");
}

static void pool_runs_each_once(void **state)
{
    (void)state;
    struct err e;
    assert_null(mailbox_new(0, 4, 1000, &e));
    assert_int_equal(e.kind, ERR_USAGE);
    assert_null(mailbox_new(MAILBOX_WORKERS_MAX + 1, 4, 1000, &e));
    struct mailbox *m = mailbox_new(3, 64, 10000, &e);
    assert_non_null(m);
    atomic_int concurrent = 0, peak = 0;
    struct tjob jobs[12];
    for (int i = 0; i < 12; i++) {
        jobs[i] = (struct tjob){.j.run = tjob_run, .sleep_ms = 100, .concurrent = &concurrent,
                                .peak = &peak};
        assert_int_equal(mailbox_submit(m, &jobs[i].j), 0);
    }
    wait_idle(m);
    for (int i = 0; i < 12; i++) {
        assert_int_equal(jobs[i].runs, 1);
        assert_false(jobs[i].cancelled);
    }
    assert_int_equal(atomic_load(&peak), 3); /* three workers side by side, never more */
    mailbox_free(&m);
    assert_null(m);
    mailbox_free(&m);
}

static void pool_bounds(void **state)
{
    (void)state;
    struct err e;
    struct mailbox *m = mailbox_new(1, 2, 150, &e);
    assert_non_null(m);
    struct tjob slow = {.j.run = tjob_run, .sleep_ms = 400};
    struct tjob a = {.j.run = tjob_run}, b = {.j.run = tjob_run}, c = {.j.run = tjob_run};
    assert_int_equal(mailbox_submit(m, &slow.j), 0);
    usleep(50000); /* the worker took it */
    assert_int_equal(mailbox_submit(m, &a.j), 0);
    assert_int_equal(mailbox_submit(m, &b.j), 0);
    assert_int_equal(mailbox_submit(m, &c.j), MAILBOX_BUSY); /* the queue holds two */
    wait_idle(m);
    assert_int_equal(slow.runs, 1);
    assert_false(slow.cancelled);
    /* a and b waited ~350 ms for the only worker, more than 150 ms: cancelled */
    assert_int_equal(a.runs, 1);
    assert_true(a.cancelled);
    assert_int_equal(b.runs, 1);
    assert_true(b.cancelled);
    assert_int_equal(c.runs, 0);
    mailbox_free(&m);
}

/* Stopping runs what is queued, cancelled, waits for what runs, and takes
 * nothing more. */
static void pool_stop(void **state)
{
    (void)state;
    struct err e;
    struct mailbox *m = mailbox_new(1, 8, 60000, &e);
    struct tjob slow = {.j.run = tjob_run, .sleep_ms = 300};
    struct tjob queued = {.j.run = tjob_run}, late = {.j.run = tjob_run};
    assert_int_equal(mailbox_submit(m, &slow.j), 0);
    usleep(50000);
    assert_int_equal(mailbox_submit(m, &queued.j), 0);
    mailbox_stop(m);
    assert_int_equal(slow.runs, 1);
    assert_false(slow.cancelled);
    assert_int_equal(queued.runs, 1);
    assert_true(queued.cancelled);
    assert_int_equal(mailbox_submit(m, &late.j), MAILBOX_BUSY);
    mailbox_stop(m); /* idempotent */
    mailbox_free(&m);
    assert_int_equal(late.runs, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(oneshots),
        cmocka_unit_test(listing_summaries),
        cmocka_unit_test(summary_cache),
        cmocka_unit_test(summaries_time_budget),
        cmocka_unit_test(session_limit),
        cmocka_unit_test(pool_runs_each_once),
        cmocka_unit_test(pool_bounds),
        cmocka_unit_test(pool_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
