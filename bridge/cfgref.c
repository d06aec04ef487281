/* cfgref — see include/cfgref.h. */
#include "cfgref.h"

#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

struct cfgref *cfgref_new(struct config *cfg)
{
    struct cfgref *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = cfg;
    r->refs = 1;
    return r;
}

struct cfgref *cfgref_get(struct cfgref *const *slot)
{
    pthread_mutex_lock(&lock);
    struct cfgref *r = *slot;
    if (r)
        r->refs++;
    pthread_mutex_unlock(&lock);
    return r;
}

struct cfgref *cfgref_hold(struct cfgref *r)
{
    if (!r)
        return NULL;
    pthread_mutex_lock(&lock);
    r->refs++;
    pthread_mutex_unlock(&lock);
    return r;
}

void cfgref_put(struct cfgref *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&lock);
    int left = --r->refs;
    pthread_mutex_unlock(&lock);
    if (left == 0) {
        config_free(&r->cfg);
        free(r);
    }
}

void cfgref_swap(struct cfgref **slot, struct cfgref *r)
{
    pthread_mutex_lock(&lock);
    struct cfgref *old = *slot;
    *slot = r;
    pthread_mutex_unlock(&lock);
    cfgref_put(old);
}
