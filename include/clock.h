/*
 * clock — the one place for time: monotonic milliseconds for every measured
 * interval (timeouts, idle times, deadlines), wall-clock milliseconds only
 * for what is shown or stored (Unix ms), and condition variables whose timed
 * waits follow the monotonic clock, so a wall-clock jump neither stalls nor
 * rushes a waiting thread.
 *
 * Pure wrappers of clock_gettime(2) and pthread_condattr_setclock(3);
 * thread-safe.
 */
#ifndef POP3BRIDGE_CLOCK_H
#define POP3BRIDGE_CLOCK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in milliseconds (an arbitrary origin: only differences mean
 * anything). */
int64_t clock_mono_ms(void);
/* CLOCK_MONOTONIC in microseconds (sd_notify's MONOTONIC_USEC). */
int64_t clock_mono_us(void);
/* CLOCK_REALTIME in Unix milliseconds. */
int64_t clock_wall_ms(void);

/* RFC 3339 UTC time of Unix milliseconds ms: "2026-01-31T10:00:00.123Z" with
 * milliseconds, "2026-01-31T10:00:00Z" without.  Into buf (size bytes; a
 * shorter buffer gets a cut string, always NUL-terminated); returns buf. */
#define CLOCK_RFC3339_SIZE 40
char *clock_rfc3339(int64_t ms, int with_ms, char *buf, size_t size);

/* Initialise *c for timed waits on CLOCK_MONOTONIC.  0, or the pthread error
 * number. */
int clock_cond_init(pthread_cond_t *c);
/* The absolute CLOCK_MONOTONIC time `ms` from now, for pthread_cond_timedwait
 * on a condition variable made by clock_cond_init().  ms < 0 counts as 0. */
void clock_deadline(struct timespec *ts, int64_t ms);

#endif
