/*
 * log — one line per event on stderr, "key=value" fields:
 *
 *   ts=2026-11-27T07:40:00.123Z level=info event=poll_done account=support new=3
 *
 * The caller writes the fields after the event name with printf formatting;
 * string values that may hold spaces or quotes go through log_q(), which
 * quotes and escapes them (and replaces control characters).  Levels are
 * checked before anything is formatted.  Never pass a secret.
 * Thread-safe: each line is written with one write(2).
 */
#ifndef POP3BRIDGE_LOG_H
#define POP3BRIDGE_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

#define LOG_LINE_MAX 2048 /* longer lines are cut, ending in "..." */

void log_set_level(enum log_level l);
enum log_level log_get_level(void);
bool log_enabled(enum log_level l);

void log_event(enum log_level l, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(ev, ...) log_event(LOG_ERROR, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_event(LOG_WARN, ev, __VA_ARGS__)
#define log_info(ev, ...) log_event(LOG_INFO, ev, __VA_ARGS__)
#define log_debug(ev, ...)                                                                     \
    do {                                                                                       \
        if (log_enabled(LOG_DEBUG))                                                            \
            log_event(LOG_DEBUG, ev, __VA_ARGS__);                                             \
    } while (0)

/* A quoted, escaped copy of s for a log value: "a b" -> "\"a b\"".  Returns a
 * pointer into one of LOG_Q_SLOTS rotating thread-local buffers, so several
 * log_q() calls can appear in one log line. */
#define LOG_Q_SLOTS 4
#define LOG_Q_MAX 512
const char *log_q(const char *s);

#endif
