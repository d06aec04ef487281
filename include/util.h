/*
 * util — the few helpers too small for a module of their own, used by
 * several: MIN and MAX.  Header only.
 *
 * MIN and MAX are macros over any arithmetic type: each argument may be
 * evaluated twice (no side effects in them), and both should have the same
 * signedness.
 */
#ifndef POP3BRIDGE_UTIL_H
#define POP3BRIDGE_UTIL_H

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

#endif
