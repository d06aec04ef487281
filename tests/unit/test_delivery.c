/* Unit tests: the outbox worker (include/delivery.h) with a real SQLite
 * store, a configuration loaded from a file and a real HTTP receiver on
 * 127.0.0.1: leases (renewed, released, lost, expired after an outcome the
 * store refused), webhook-ids, draining.  Store failures are real SQLite
 * failures, raised by triggers added from a second connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "delivery.h"
#include "message.h"
#include "webhook.h"

#include "tmpstore.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define WAIT_LIMIT_MS 15000 /* every wait is bounded by this */
#define REQS_MAX 64

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- a receiver ------------------------------------------------------------ */

struct rcv {
    struct MHD_Daemon *d;
    unsigned port;
    pthread_mutex_t mu;
    int delay_ms;
    int fail_first;             /* answer 500 to this many requests */
    volatile int stopping;
    int n;
    char ids[REQS_MAX][WEBHOOK_ID_MAX + 1];
    int64_t at[REQS_MAX];       /* monotonic arrival */
    bool verified[REQS_MAX];
};

struct rq {
    char *buf;
    size_t len;
    int idx;
};

static enum MHD_Result rcv_handler(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version, const char *upload,
                                   size_t *upload_size, void **con_cls)
{
    (void)url;
    (void)method;
    (void)version;
    struct rcv *r = cls;
    struct rq *q = *con_cls;
    if (!q) {
        q = calloc(1, sizeof *q);
        *con_cls = q;
        return q ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        char *nb = realloc(q->buf, q->len + *upload_size + 1);
        if (!nb)
            return MHD_NO;
        q->buf = nb;
        memcpy(q->buf + q->len, upload, *upload_size);
        q->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
    const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp");
    const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature");
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t klen = 0;
    struct err e;
    bool ok = webhook_secret_decode(SECRET, key, sizeof key, &klen, &e) == 0 &&
              webhook_verify(key, klen, id, ts, q->buf ? q->buf : "", q->len, sig,
                             (int64_t)time(NULL), 300, &e) == 0;
    pthread_mutex_lock(&r->mu);
    int idx = r->n++;
    if (idx < REQS_MAX) {
        snprintf(r->ids[idx], sizeof r->ids[idx], "%s", id ? id : "");
        r->at[idx] = mono_ms();
        r->verified[idx] = ok;
    }
    int status = idx < r->fail_first ? 500 : ok ? 200 : 401;
    pthread_mutex_unlock(&r->mu);
    for (int waited = 0; waited < r->delay_ms && !r->stopping; waited += 10)
        usleep(10 * 1000);
    struct MHD_Response *resp = MHD_create_response_from_buffer(2, (void *)"ok",
                                                                MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void rcv_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                          enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct rq *q = *con_cls;
    if (q) {
        free(q->buf);
        free(q);
    }
    *con_cls = NULL;
}

static struct rcv *rcv_start(int delay_ms)
{
    struct rcv *r = calloc(1, sizeof *r);
    assert_non_null(r);
    pthread_mutex_init(&r->mu, NULL);
    r->delay_ms = delay_ms;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
                            NULL, NULL, rcv_handler, r, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, rcv_completed,
                            r, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    assert_non_null(r->d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(r->d, MHD_DAEMON_INFO_BIND_PORT);
    r->port = info->port;
    return r;
}

static int rcv_count(struct rcv *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void rcv_stop(struct rcv *r)
{
    r->stopping = 1;
    MHD_stop_daemon(r->d);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---- the fixture: a state directory, a store, a configuration ---------------- */

struct fx {
    char dir[TMPDIR_MAX];
    struct store *st;
    sqlite3 *db;          /* a second connection, for faults and inspection */
    struct cfgref *ref;
    struct rcv *rcv;
    struct delivery *d;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    if (tmpstore_open(fx->dir, sizeof fx->dir, "delivery", &fx->st) < 0)
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/pop3bridge.db", fx->dir);
    if (sqlite3_open(path, &fx->db) != SQLITE_OK)
        return -1;
    sqlite3_busy_timeout(fx->db, 10000);
    setenv("T_WHSEC", SECRET, 1);
    setenv("T_PW", "pw", 1);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    delivery_free(fx->d);
    if (fx->rcv)
        rcv_stop(fx->rcv);
    cfgref_put(fx->ref);
    sqlite3_close(fx->db);
    tmpstore_close(fx->dir, fx->st);
    free(fx);
    return 0;
}

/* A configuration with webhook "hook" at the receiver; extra is spliced
 * into the webhook object. */
static void configure(struct fx *fx, const char *extra)
{
    char path[128], text[2048];
    snprintf(path, sizeof path, "%s/config.json", fx->dir);
    snprintf(text, sizeof text,
             "{\"state_dir\": \"%s\", \"log_level\": \"error\",\n"
             " \"webhooks\": [{\"name\": \"hook\", \"url\": \"http://127.0.0.1:%u/h\",\n"
             "   \"secret_env\": \"T_WHSEC\", \"retry_schedule\": [\"1s\"]%s%s}],\n"
             " \"accounts\": [{\"name\": \"acct\", \"host\": \"127.0.0.1\", \"username\": \"u\",\n"
             "   \"password_env\": \"T_PW\", \"webhooks\": [\"hook\"]}]}\n",
             fx->dir, fx->rcv->port, extra ? ", " : "", extra ? extra : "");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    struct config_diag diag = {0};
    struct config *cfg = config_load(path, &diag);
    if (!cfg)
        fail_msg("config: %s", diag.count ? diag.lines[0] : "?");
    config_diag_free(&diag);
    cfgref_put(fx->ref);
    fx->ref = cfgref_new(cfg);
}

static int64_t store_one(struct fx *fx, const char *uidl, const char *const *hooks, size_t n)
{
    char raw[256];
    int len = snprintf(raw, sizeof raw, "Subject: %s\r\nFrom: a@example.org\r\n\r\nbody %s\r\n",
                       uidl, uidl);
    struct err e;
    struct store_msg *m = NULL;
    struct store_msg_result res;
    static const char *const one[] = {"hook"};
    assert_int_equal(store_msg_begin(fx->st, "acct", uidl, &m, &e), 0);
    assert_int_equal(store_msg_write(m, raw, (size_t)len, &e), 0);
    if (store_msg_finish(m, NULL, hooks ? hooks : one, hooks ? n : 1, wall_ms(), &res, &e) < 0)
        fail_msg("store: %s", e.msg);
    return res.id;
}

static struct delivery *new_delivery(struct fx *fx, const char *owner, int64_t lease_ms)
{
    struct err e;
    struct delivery *d = delivery_new(fx->st, owner, &e);
    if (!d)
        fail_msg("delivery_new: %s", e.msg);
    if (lease_ms)
        delivery_set_lease_ms(d, lease_ms);
    return d;
}

static void step(struct delivery *d, struct cfgref *ref)
{
    struct err e;
    if (delivery_step(d, ref, 20, &e) < 0)
        fail_msg("delivery_step: %s", e.msg);
}

/* Step until cond(fx) holds; bounded. */
static void step_until(struct fx *fx, bool (*cond)(struct fx *), const char *what)
{
    int64_t end = mono_ms() + WAIT_LIMIT_MS;
    while (!cond(fx)) {
        if (mono_ms() > end)
            fail_msg("timed out waiting for %s", what);
        step(fx->d, fx->ref);
    }
}

static int64_t sql_int(struct fx *fx, const char *sql)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(fx->db, sql, -1, &s, NULL), SQLITE_OK);
    int64_t v = -1;
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static void sql_exec(struct fx *fx, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(fx->db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

static void event_id_of(struct fx *fx, int64_t msg_id, char *out)
{
    struct store_msg_info info;
    struct err e;
    assert_int_equal(store_msg_get(fx->st, msg_id, &info, &e), 0);
    assert_int_equal(webhook_event_id(info.key, "hook", out, WEBHOOK_ID_SIZE), 0);
}

static bool idle(struct fx *fx)
{
    return delivery_in_flight(fx->d) == 0;
}

static bool one_request(struct fx *fx)
{
    return rcv_count(fx->rcv) >= 1;
}

static bool two_requests(struct fx *fx)
{
    return rcv_count(fx->rcv) >= 2;
}

static bool three_delivered(struct fx *fx)
{
    return sql_int(fx, "SELECT count(*) FROM deliveries WHERE status = 1") == 3;
}

/* ---- the tests -------------------------------------------------------------- */

static void delivers_with_event_ids(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(0);
    configure(fx, NULL);
    int64_t ids[3];
    for (int i = 0; i < 3; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "u%d", i);
        ids[i] = store_one(fx, uidl, NULL, 0);
    }
    /* a message stored before event keys existed keeps its old id */
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE messages SET event_key = NULL WHERE id = %lld",
             (long long)ids[2]);
    sql_exec(fx, sql);
    fx->d = new_delivery(fx, "A", 0);
    step_until(fx, three_delivered, "three deliveries recorded");
    assert_int_equal(rcv_count(fx->rcv), 3);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE status = 1"), 3);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL"),
                     0);
    char want[3][WEBHOOK_ID_SIZE];
    event_id_of(fx, ids[0], want[0]);
    event_id_of(fx, ids[1], want[1]);
    assert_int_equal(webhook_id("acct", "u2", "hook", want[2], WEBHOOK_ID_SIZE), 0);
    for (int i = 0; i < 3; i++) {
        assert_true(fx->rcv->verified[i]);
        bool found = false;
        for (int k = 0; k < 3; k++)
            found |= strcmp(fx->rcv->ids[i], want[k]) == 0;
        assert_true(found);
    }
    struct delivery_stats ds;
    delivery_stats(fx->d, &ds);
    assert_int_equal(ds.delivered, 3);
    assert_int_equal(ds.unrecorded, 0);
}

/* An idle step given a long wait sleeps only until its webhook is to be
 * asked again (DELIVERY_RECHECK_MS with nothing due), so the daemon can
 * give it long waits without delaying a delivery that falls due meanwhile
 * without a wakeup (a retry, another instance's message).  Before, it slept
 * the whole wait. */
static void idle_step_sleeps_until_next_check(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(0);
    configure(fx, NULL);
    fx->d = new_delivery(fx, "A", 0);
    const int wait = 4 * DELIVERY_RECHECK_MS;
    struct err e;
    int64_t t0 = mono_ms();
    assert_true(delivery_step(fx->d, fx->ref, wait, &e) >= 0);
    int64_t slept = mono_ms() - t0;
    print_message("idle step with nothing due: %lld ms (wait %d ms)\n", (long long)slept, wait);
    assert_true(slept < DELIVERY_RECHECK_MS + DELIVERY_RECHECK_MS / 2);
    /* due now, no wakeup: taken at the next check, well before wait */
    store_one(fx, "u1", NULL, 0);
    t0 = mono_ms();
    for (int i = 0; i < 8 && !one_request(fx); i++)
        assert_true(delivery_step(fx->d, fx->ref, wait, &e) >= 0);
    int64_t took = mono_ms() - t0;
    print_message("delivered %lld ms after it fell due\n", (long long)took);
    assert_int_equal(rcv_count(fx->rcv), 1);
    assert_true(took < DELIVERY_RECHECK_MS + DELIVERY_RECHECK_MS / 2);
    step_until(fx, idle, "the outcome recorded");
}

/* RFC 1939 lets a server give a new message an old message's UIDL once the
 * old one is gone: the new message gets a new webhook-id; a retry of one
 * message keeps its id. */
static void reused_uidl_new_id_retry_same(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(0);
    fx->rcv->fail_first = 1; /* the first attempt of the first message fails */
    configure(fx, NULL);
    fx->d = new_delivery(fx, "A", 0);
    int64_t first = store_one(fx, "same-uidl", NULL, 0);
    step_until(fx, two_requests, "a failed attempt and its retry");
    step_until(fx, idle, "the retry recorded");
    assert_string_equal(fx->rcv->ids[0], fx->rcv->ids[1]);
    char want[WEBHOOK_ID_SIZE];
    event_id_of(fx, first, want);
    assert_string_equal(fx->rcv->ids[0], want);
    /* the message leaves the server; its UIDL is forgotten; a new one comes */
    struct err e;
    int64_t forgotten = 0;
    assert_int_equal(store_uidls_forget_vanished(fx->st, "acct", NULL, 0, &forgotten, &e), 0);
    assert_int_equal(forgotten, 1);
    int64_t second = store_one(fx, "same-uidl", NULL, 0);
    assert_true(second != first);
    delivery_wakeup(fx->d);
    step_until(fx, idle, "");
    while (rcv_count(fx->rcv) < 3)
        step(fx->d, fx->ref);
    assert_string_not_equal(fx->rcv->ids[2], fx->rcv->ids[0]);
    event_id_of(fx, second, want);
    assert_string_equal(fx->rcv->ids[2], want);
}

static bool unrecorded(struct fx *fx)
{
    struct delivery_stats ds;
    delivery_stats(fx->d, &ds);
    return ds.unrecorded >= 1;
}

/* The store refuses the outcome and the release: the delivery stays leased
 * until its lease expires, then goes out again with the same webhook-id. */
static void unrecorded_outcome_expires(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(0);
    configure(fx, NULL);
    sql_exec(fx, "CREATE TRIGGER no_attempts BEFORE INSERT ON attempts"
                 " BEGIN SELECT RAISE(ABORT, 'injected: attempts refused'); END;"
                 "CREATE TRIGGER no_release BEFORE UPDATE OF lease_owner ON deliveries"
                 " WHEN NEW.lease_owner IS NULL AND NEW.attempts = OLD.attempts"
                 " BEGIN SELECT RAISE(ABORT, 'injected: release refused'); END;");
    const int64_t lease = 1200;
    fx->d = new_delivery(fx, "A", lease);
    int64_t leased_before = mono_ms();
    store_one(fx, "u1", NULL, 0);
    step_until(fx, unrecorded, "the refused record");
    assert_int_equal(rcv_count(fx->rcv), 1);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE lease_owner = 'A'"), 1);
    sql_exec(fx, "DROP TRIGGER no_attempts");
    /* not before the lease has expired... */
    step_until(fx, two_requests, "the delivery going out again");
    int64_t gap = fx->rcv->at[1] - leased_before;
    print_message("second attempt %lld ms after the lease was taken (lease %lld ms)\n",
                  (long long)gap, (long long)lease);
    assert_true(gap >= lease - 50);
    /* ...with the same id, and this time it is recorded */
    assert_string_equal(fx->rcv->ids[0], fx->rcv->ids[1]);
    step_until(fx, idle, "the second outcome recorded");
    assert_int_equal(sql_int(fx, "SELECT status FROM deliveries"), 1);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM attempts"), 1);
    sql_exec(fx, "DROP TRIGGER no_release");
}

/* The store refuses the outcome but takes the release: the delivery is due
 * again at once (no need to wait for the lease) and goes out with the same
 * id. */
static void unrecorded_outcome_released(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(0);
    configure(fx, NULL);
    sql_exec(fx, "CREATE TRIGGER no_attempts BEFORE INSERT ON attempts"
                 " BEGIN SELECT RAISE(ABORT, 'injected: attempts refused'); END;");
    fx->d = new_delivery(fx, "A", 0); /* 15 minutes */
    store_one(fx, "u1", NULL, 0);
    step_until(fx, unrecorded, "the refused record");
    sql_exec(fx, "DROP TRIGGER no_attempts");
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE lease_owner IS NULL"), 1);
    delivery_wakeup(fx->d);
    step_until(fx, two_requests, "the delivery going out again");
    assert_string_equal(fx->rcv->ids[0], fx->rcv->ids[1]);
    step_until(fx, idle, "the outcome recorded");
    assert_int_equal(sql_int(fx, "SELECT status FROM deliveries"), 1);
}

/* Another worker took the lease while the request was out: the late outcome
 * is history only, and counts for nothing here. */
static void lease_lost_is_history(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(600);
    configure(fx, NULL);
    fx->d = new_delivery(fx, "A", 0);
    store_one(fx, "u1", NULL, 0);
    step_until(fx, one_request, "the request at the receiver");
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE deliveries SET lease_owner = 'B', lease_until = %lld",
             (long long)(wall_ms() + 60000));
    sql_exec(fx, sql);
    step_until(fx, idle, "the outcome");
    struct delivery_stats ds;
    delivery_stats(fx->d, &ds);
    assert_int_equal(ds.lease_lost, 1);
    assert_int_equal(ds.delivered, 0);
    assert_int_equal(sql_int(fx, "SELECT status FROM deliveries"), 0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE lease_owner = 'B'"), 1);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM attempts"), 1);
}

/* A lease shorter than the request: renewed while the request is out, so no
 * other worker can take the delivery meanwhile. */
static void renewed_while_in_flight(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(2000);
    configure(fx, NULL);
    const int64_t lease = 400;
    fx->d = new_delivery(fx, "A", lease);
    store_one(fx, "u1", NULL, 0);
    step_until(fx, one_request, "the request at the receiver");
    int64_t first_until = sql_int(fx, "SELECT lease_until FROM deliveries");
    int64_t end = mono_ms() + 1200; /* three leases long */
    while (mono_ms() < end)
        step(fx->d, fx->ref);
    int64_t until = sql_int(fx, "SELECT lease_until FROM deliveries");
    assert_true(until > first_until + lease);
    assert_true(until > wall_ms());
    struct store_delivery got[2];
    size_t n = 9;
    struct err e;
    assert_int_equal(store_delivery_lease_due(fx->st, "B", NULL, wall_ms(), 1000, got, 2, &n, &e),
                     0);
    assert_int_equal(n, 0);
    step_until(fx, idle, "the outcome");
    assert_int_equal(sql_int(fx, "SELECT status FROM deliveries"), 1);
    assert_int_equal(rcv_count(fx->rcv), 1);
    struct delivery_stats ds;
    delivery_stats(fx->d, &ds);
    assert_int_equal(ds.delivered, 1);
}

/* Draining (cfg NULL): what waits in the queue is released at once, what is
 * running finishes and is recorded. */
static void drain_releases_queued(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(700);
    configure(fx, "\"max_in_flight\": 1");
    fx->d = new_delivery(fx, "A", 0);
    for (int i = 0; i < 3; i++) {
        char uidl[16];
        snprintf(uidl, sizeof uidl, "u%d", i);
        store_one(fx, uidl, NULL, 0);
    }
    step_until(fx, one_request, "the first request");
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE lease_owner = 'A'"), 3);
    assert_int_equal(delivery_in_flight(fx->d), 3);
    step(fx->d, NULL);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE lease_owner IS NULL"), 2);
    assert_int_equal(delivery_in_flight(fx->d), 1);
    int64_t end = mono_ms() + WAIT_LIMIT_MS;
    while (delivery_in_flight(fx->d) && mono_ms() < end)
        step(fx->d, NULL);
    assert_int_equal(delivery_in_flight(fx->d), 0);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE status = 1"), 1);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE status = 0"), 2);
    assert_int_equal(rcv_count(fx->rcv), 1);
}

/* delivery_free while a request is out: nothing recorded, every lease
 * released, so the next run takes the deliveries at once. */
static void free_releases_everything(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(3000);
    configure(fx, NULL);
    fx->d = new_delivery(fx, "A", 0);
    store_one(fx, "u1", NULL, 0);
    store_one(fx, "u2", NULL, 0);
    step_until(fx, two_requests, "two requests out");
    delivery_free(fx->d);
    fx->d = NULL;
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE lease_owner IS NULL"), 2);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE status = 0"), 2);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM attempts"), 0);
}

/* A delivery for a webhook that is no longer configured is recorded dead. */
static void removed_webhook_dead(void **state)
{
    struct fx *fx = *state;
    fx->rcv = rcv_start(0);
    configure(fx, NULL);
    static const char *const two[] = {"hook", "gone"};
    store_one(fx, "u1", two, 2);
    fx->d = new_delivery(fx, "A", 0);
    int64_t end = mono_ms() + WAIT_LIMIT_MS;
    while (mono_ms() < end &&
           sql_int(fx, "SELECT count(*) FROM deliveries WHERE status IN (0, 2)") > 0)
        step(fx->d, fx->ref);
    assert_int_equal(sql_int(fx, "SELECT status FROM deliveries WHERE webhook = 'hook'"), 1);
    assert_int_equal(sql_int(fx, "SELECT status FROM deliveries WHERE webhook = 'gone'"), 3);
    assert_int_equal(sql_int(fx, "SELECT count(*) FROM deliveries WHERE webhook = 'gone'"
                                 " AND last_error LIKE '%not in the configuration%'"),
                     1);
    assert_int_equal(rcv_count(fx->rcv), 1);
}

int main(void)
{
    umask(077); /* the configs and secret files written here are 0600: perms.h refuses others */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(delivers_with_event_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(idle_step_sleeps_until_next_check, setup, teardown),
        cmocka_unit_test_setup_teardown(reused_uidl_new_id_retry_same, setup, teardown),
        cmocka_unit_test_setup_teardown(unrecorded_outcome_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(unrecorded_outcome_released, setup, teardown),
        cmocka_unit_test_setup_teardown(lease_lost_is_history, setup, teardown),
        cmocka_unit_test_setup_teardown(renewed_while_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(drain_releases_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(free_releases_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(removed_webhook_dead, setup, teardown),
    };
    struct err e;
    if (webhook_global_init(&e) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    message_global_cleanup();
    webhook_global_cleanup();
    return r;
}
