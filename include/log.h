/*
 * log — one line per event, with named fields, in one of three forms
 * (log_set_format; the configuration's log_format):
 *
 *   text (default), on stderr:
 *     ts=2026-11-27T07:40:00.123Z level=info event=poll_done account=support new=3
 *   json, on stderr: one JSON object (RFC 8259) per line, the same keys:
 *     {"ts":"2026-11-27T07:40:00.123Z","level":"info","event":"poll_done","account":"support","new":"3"}
 *     Every value is a JSON string, whatever it looks like, so a key keeps
 *     one type; bytes that are not UTF-8 become U+FFFD.
 *   journal, through sd-journal (sd_journal_sendv(3)): MESSAGE= the event and
 *     its fields as in the text form, PRIORITY= (3 error, 4 warn, 6 info,
 *     7 debug), SYSLOG_IDENTIFIER=pop3bridge, EVENT=, and each field under
 *     its key upper-cased (ACCOUNT=support); a key that journald defines
 *     itself (message, priority, errno, code_*...) is prefixed POP3BRIDGE_
 *     (POP3BRIDGE_MESSAGE=).  When the journal cannot be reached, the line
 *     goes to stderr in the text form.
 *
 * The caller writes the fields after the event name with printf formatting,
 * "key=value key=value"; string values that may hold spaces or quotes go
 * through log_q(), which quotes and escapes them (and replaces control
 * characters).  The json and journal forms read the fields back from that
 * text: a quoted value is unquoted, a bare word without '=' joins the value
 * before it.  Levels are checked before anything is formatted.  Never pass
 * a secret.  Thread-safe: each line is written with one write(2) under a
 * lock, so lines from different threads never mix.
 */
#ifndef POP3BRIDGE_LOG_H
#define POP3BRIDGE_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON, LOG_FORMAT_JOURNAL };

#define LOG_LINE_MAX 2048 /* the fields' text; longer lines are cut, ending in "..." */
#define LOG_FIELDS_MAX 64 /* fields read back for json/journal (the journal's MESSAGE keeps all) */

void log_set_level(enum log_level l);
enum log_level log_get_level(void);
bool log_enabled(enum log_level l);

void log_set_format(enum log_format f);
enum log_format log_get_format(void);

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

/* A line that could come with every request (a store that cannot be read,
 * each API call falling back) written at most once per interval: declare
 * one `static struct log_limit` per line (zero-initialised) and log only
 * when log_limit_due is true; *suppressed (may be NULL) then gets how many
 * calls were not logged since the last that was.  Thread-safe. */
struct log_limit {
    _Atomic int64_t next_at;     /* clock_mono_ms before which nothing is logged */
    _Atomic uint64_t suppressed; /* calls not logged since */
};
bool log_limit_due(struct log_limit *l, int64_t now_ms, int64_t every_ms,
                   uint64_t *suppressed);

/* A quoted, escaped copy of s for a log value: "a b" -> "\"a b\"".  Returns a
 * pointer into one of LOG_Q_SLOTS rotating thread-local buffers, so several
 * log_q() calls can appear in one log line. */
#define LOG_Q_SLOTS 4
#define LOG_Q_MAX 512
const char *log_q(const char *s);

#endif
