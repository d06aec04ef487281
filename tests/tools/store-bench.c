/*
 * store-bench — how fast the store takes messages (make bench).
 *
 *   build/tools/store-bench [DIR]
 *
 * Stores 2,000 messages of 2 to 20 KB, each with two pending deliveries,
 * into a fresh store under DIR (default /tmp), once with one durable commit
 * per message and once in batches of 64, then leases the 4,000 deliveries
 * 64 at a time and records each delivered (the outbox's bookkeeping, without
 * HTTP), and prints one line per way with the wall time and the rate.
 * With POP3BRIDGE_BENCH_PG_URL (and _PASSWORD) set, the same again on that
 * PostgreSQL database (its messages are kept: give it a throwaway one).  A figure,
 * not a test: exit 0 unless the store failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define MESSAGES 2000
#define PER_BATCH 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(const char *base, const char *what, int per_batch)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/store-bench-XXXXXX", base) >= (int)sizeof dir ||
        !mkdtemp(dir)) {
        perror("store-bench: mkdtemp");
        return -1;
    }
    struct err e;
    struct store *st = store_open(dir, &e);
    if (!st) {
        fprintf(stderr, "store-bench: %s\n", e.msg);
        return -1;
    }
    static unsigned char body[20480];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (unsigned char)('a' + i % 26);
    const char *wh[] = {"crm", "audit"};
    char account[64]; /* a database may be reused: each run its own account */
    snprintf(account, sizeof account, "bench-%ld-%d", (long)getpid(), per_batch);
    size_t bytes = 0;
    double t0 = now_s();
    int rc = 0;
    for (int i = 0; i < MESSAGES && rc == 0; i++) {
        if (per_batch > 1 && i % per_batch == 0 && store_batch_begin(st, &e) < 0)
            rc = -1;
        char uidl[32];
        snprintf(uidl, sizeof uidl, "uidl-%05d", i);
        size_t len = 2048 + (size_t)(i * 7919) % (sizeof body - 2048);
        struct store_msg *m = NULL;
        if (rc == 0 && (store_msg_begin(st, account, uidl, &m, &e) < 0 ||
                        store_msg_write(m, body, len, &e) < 0 ||
                        store_msg_finish(m, NULL, wh, 2, 1700000000000LL, NULL, &e) < 0))
            rc = -1;
        m = NULL;
        bytes += len;
        if (rc == 0 && per_batch > 1 && (i % per_batch == per_batch - 1 || i == MESSAGES - 1) &&
            store_batch_commit(st, &e) < 0)
            rc = -1;
    }
    double t = now_s() - t0;
    if (rc < 0)
        fprintf(stderr, "store-bench: %s\n", e.msg);
    else
        printf("  store (%s): %d messages (%.1f MiB, 2 deliveries each), %s: %.0f ms, %.0f msgs/s\n",
               store_backend(), MESSAGES, (double)bytes / 1048576.0, what, t * 1000, MESSAGES / t);
    if (rc == 0 && per_batch > 1) {
        /* the outbox: lease 64 due deliveries, record each delivered */
        static struct store_delivery d[PER_BATCH];
        size_t n = 0, done = 0;
        t0 = now_s();
        for (int guard = 0; rc == 0 && guard < 4 * MESSAGES; guard++) {
            if (store_delivery_lease_due(st, "bench", NULL, 1700000001000LL, 60000, d, PER_BATCH,
                                         &n, &e) < 0)
                rc = -1;
            if (n == 0)
                break;
            for (size_t k = 0; k < n && rc == 0; k++) {
                struct store_attempt a = {.started_at = 1700000001000LL, .duration_ms = 5,
                                          .http_status = 200, .outcome = "delivered"};
                if (store_delivery_record(st, "bench", d[k].id, &a, STORE_D_DELIVERED, 0, &e) < 0)
                    rc = -1;
                done++;
            }
        }
        t = now_s() - t0;
        if (rc < 0)
            fprintf(stderr, "store-bench: %s\n", e.msg);
        else
            printf("  store (%s): %zu deliveries leased 64 at a time and recorded: %.0f ms,"
                   " %.0f deliveries/s\n", store_backend(), done, t * 1000, (double)done / t);
    }
    store_close(st);
    static const char *const files[] = {STORE_DB_FILE, STORE_DB_FILE "-wal",
                                        STORE_DB_FILE "-shm"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    if (rmdir(dir) < 0)
        fprintf(stderr, "store-bench: could not remove %s\n", dir);
    return rc;
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "/tmp";
    if (run(base, "one commit per message", 1) < 0 ||
        run(base, "64 per commit", PER_BATCH) < 0)
        return 1;
    const char *url = getenv("POP3BRIDGE_BENCH_PG_URL");
    if (url && *url) {
        struct err e;
        struct store_target t = {.url = url, .password = getenv("POP3BRIDGE_BENCH_PG_PASSWORD"),
                                 .pool = 4};
        if (store_setup(&t, &e) < 0) {
            fprintf(stderr, "store-bench: %s\n", e.msg);
            return 1;
        }
        if (run(base, "one commit per message", 1) < 0 || run(base, "64 per commit", PER_BATCH) < 0)
            return 1;
        store_teardown();
    }
    return 0;
}
