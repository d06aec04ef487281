/* committer — the group commit of received messages; see include/committer.h. */
#include "committer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

struct job {
    struct job *next;
    struct committer_session *s;
    struct store_msg *m;
    struct store_msg_meta meta;
    char message_id[STORE_META_MAX + 1];          /* meta.message_id, copied */
    const char *webhooks[STORE_WEBHOOKS_MAX];     /* the names stay borrowed */
    size_t n_webhooks;
    int64_t now;
    uint64_t size;    /* octets of the message */
    uint64_t in_mem;  /* of which the store keeps in memory */
    bool failed;      /* store_msg_finish refused it */
};

struct committer {
    struct store *st;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* the queue changed, or a group was committed */
    struct job *head, *tail;
    size_t queued;
    uint64_t queued_mem;
    bool stop;
    committer_notify_fn notify;
    void *notify_ctx;
};

static uint64_t mem_part(uint64_t size)
{
    return size < STORE_SPOOL_MEM_MAX ? size : STORE_SPOOL_MEM_MAX;
}

/* Take the next group off the queue (lock held); NULL when empty. */
static struct job *take_group(struct committer *c)
{
    struct job *first = c->head, *last = NULL;
    size_t n = 0;
    uint64_t bytes = 0;
    for (struct job *j = c->head; j; j = j->next) {
        if (n && (n >= COMMITTER_GROUP_MAX || bytes + j->size > COMMITTER_GROUP_BYTES))
            break;
        n++;
        bytes += j->size;
        c->queued--;
        c->queued_mem -= j->in_mem;
        last = j;
    }
    if (!last)
        return NULL;
    c->head = last->next;
    if (!c->head)
        c->tail = NULL;
    last->next = NULL;
    return first;
}

static void fail_job(struct job *j, const struct err *why)
{
    if (!j->s->failed) {
        j->s->failed = true;
        j->s->error = *why;
    }
}

/* Write one group in one batch (no lock held); results go to the jobs'
 * sessions under the lock, then the jobs are freed. */
static void commit_group(struct committer *c, struct job *group)
{
    struct err e, ce;
    err_clear(&ce);
    bool batch = store_batch_begin(c->st, &ce) == 0;
    size_t ok = 0, n = 0;
    for (struct job *j = group; j; j = j->next)
        n++;
    /* the group's messages go to the store together (on PostgreSQL several
     * in one round trip); without memory for the list, one by one */
    struct store_finish *f = calloc(n, sizeof *f);
    size_t i = 0;
    for (struct job *j = group; j; j = j->next, i++) {
        if (f) {
            f[i] = (struct store_finish){.m = j->m, .meta = &j->meta, .webhooks = j->webhooks,
                                         .n_webhooks = j->n_webhooks, .now = j->now};
            j->m = NULL;
        }
    }
    if (f)
        (void)store_msg_finish_many(c->st, f, n, &e); /* each one's outcome is in f[i] */
    i = 0;
    for (struct job *j = group; j; j = j->next, i++) {
        err_clear(&e);
        struct store_msg_result res = {0};
        int r;
        if (f) {
            r = f[i].result;
            res = f[i].res;
            e = f[i].err;
        } else {
            r = store_msg_finish(j->m, &j->meta, j->webhooks, j->n_webhooks, j->now, &res, &e);
            j->m = NULL;
        }
        if (r == 0 && res.duplicate_of)
            log_info("duplicate", "message=m_%lld duplicate_of=m_%lld", (long long)res.id,
                     (long long)res.duplicate_of);
        if (r < 0) {
            j->failed = true;
            pthread_mutex_lock(&c->lock);
            fail_job(j, &e);
            pthread_mutex_unlock(&c->lock);
        } else {
            ok++;
        }
    }
    free(f);
    bool lost = false;
    if (batch && store_batch_commit(c->st, &ce) < 0) {
        store_batch_rollback(c->st);
        lost = true;
        log_error("store_commit_failed", "messages=%zu error=%s", ok, log_q(ce.msg));
    }
    /* deliveries are due: say so before the sessions learn their messages
     * are durable */
    if (ok && !lost && c->notify)
        c->notify(c->notify_ctx);
    pthread_mutex_lock(&c->lock);
    for (struct job *j = group; j;) {
        struct job *next = j->next;
        if (lost && !j->failed)
            fail_job(j, &ce);
        else if (!j->failed)
            j->s->stored++;
        j->s->done++;
        free(j);
        j = next;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void *run(void *arg)
{
    struct committer *c = arg;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        struct job *g = take_group(c);
        if (!g) {
            if (c->stop)
                break;
            pthread_cond_wait(&c->cond, &c->lock);
            continue;
        }
        pthread_cond_broadcast(&c->cond); /* room in the queue */
        pthread_mutex_unlock(&c->lock);
        commit_group(c, g);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

struct committer *committer_start(const char *state_dir, committer_notify_fn notify,
                                  void *notify_ctx, struct err *e)
{
    struct committer *c = calloc(1, sizeof *c);
    if (!c) {
        err_set(e, ERR_INTERNAL, "committer: out of memory");
        return NULL;
    }
    c->notify = notify;
    c->notify_ctx = notify_ctx;
    if (!(c->st = store_open(state_dir, e))) {
        free(c);
        return NULL;
    }
    int rc = pthread_mutex_init(&c->lock, NULL);
    if (rc == 0 && (rc = clock_cond_init(&c->cond)) != 0)
        pthread_mutex_destroy(&c->lock);
    if (rc == 0 && (rc = pthread_create(&c->thread, NULL, run, c)) != 0) {
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->lock);
    }
    if (rc != 0) {
        err_set(e, ERR_INTERNAL, "committer: cannot start its thread: %s", strerror(rc));
        store_close(c->st);
        free(c);
        return NULL;
    }
    return c;
}

void committer_stop(struct committer **cp)
{
    struct committer *c = cp ? *cp : NULL;
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    store_close(c->st);
    free(c);
    *cp = NULL;
}

void committer_session_init(struct committer_session *s, struct committer *c)
{
    memset(s, 0, sizeof *s);
    s->c = c;
}

int committer_msg_begin(struct committer_session *s, const char *account, const char *uidl,
                        struct store_msg **out, struct err *e)
{
    return store_msg_begin(s->c->st, account, uidl, out, e);
}

int committer_submit(struct committer_session *s, struct store_msg *m,
                     const struct store_msg_meta *meta, const char *const *webhooks,
                     size_t n_webhooks, int64_t now, struct err *e)
{
    struct committer *c = s->c;
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        store_msg_abort(m);
        return err_set(e, ERR_INTERNAL, "committer: out of memory");
    }
    j->s = s;
    j->m = m;
    if (meta)
        j->meta = *meta;
    if (meta && meta->message_id) {
        snprintf(j->message_id, sizeof j->message_id, "%s", meta->message_id);
        j->meta.message_id = j->message_id;
    }
    if (n_webhooks > STORE_WEBHOOKS_MAX) {
        store_msg_abort(m);
        free(j);
        return err_set(e, ERR_LIMIT, "committer: %zu webhooks for one message, at most %d",
                       n_webhooks, STORE_WEBHOOKS_MAX);
    }
    for (size_t i = 0; i < n_webhooks; i++)
        j->webhooks[i] = webhooks[i];
    j->n_webhooks = n_webhooks;
    j->now = now;
    j->size = store_msg_size(m);
    j->in_mem = mem_part(j->size);
    pthread_mutex_lock(&c->lock);
    while (!s->failed && c->queued &&
           (c->queued >= COMMITTER_QUEUE_MAX ||
            c->queued_mem + j->in_mem > COMMITTER_QUEUE_BYTES))
        pthread_cond_wait(&c->cond, &c->lock);
    if (s->failed) {
        *e = s->error;
        pthread_mutex_unlock(&c->lock);
        store_msg_abort(m);
        free(j);
        return -1;
    }
    if (c->tail)
        c->tail->next = j;
    else
        c->head = j;
    c->tail = j;
    c->queued++;
    c->queued_mem += j->in_mem;
    s->submitted++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int committer_wait(struct committer_session *s, struct err *e)
{
    struct committer *c = s->c;
    pthread_mutex_lock(&c->lock);
    while (s->done < s->submitted)
        pthread_cond_wait(&c->cond, &c->lock);
    bool failed = s->failed;
    if (failed)
        *e = s->error;
    pthread_mutex_unlock(&c->lock);
    return failed ? -1 : 0;
}
