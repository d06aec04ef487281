/*
 * cfgref — a reference-counted configuration snapshot, so a reload (SIGHUP)
 * can swap the configuration while pollers, deliveries and API requests
 * still use the one they started with.
 */
#ifndef POP3BRIDGE_CFGREF_H
#define POP3BRIDGE_CFGREF_H

#include "config.h"

struct cfgref {
    struct config *cfg; /* read-only while referenced */
    int refs;           /* guarded by the holder's lock (see cfgref_*) */
};

/* Wrap a loaded config (takes ownership); one reference. NULL on OOM. */
struct cfgref *cfgref_new(struct config *cfg);
/* The current snapshot of *slot, with a new reference.  Thread-safe. */
struct cfgref *cfgref_get(struct cfgref *const *slot);
/* Add a reference to r (NULL-safe). */
struct cfgref *cfgref_hold(struct cfgref *r);
/* Drop a reference; the last one frees the config.  NULL-safe. */
void cfgref_put(struct cfgref *r);
/* Replace *slot by r (taking r's reference), dropping the old one. */
void cfgref_swap(struct cfgref **slot, struct cfgref *r);

#endif
