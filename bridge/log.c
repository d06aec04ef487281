/* log — see include/log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int level = LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level l) { level = (int)l; }
enum log_level log_get_level(void) { return (enum log_level)level; }
bool log_enabled(enum log_level l) { return (int)l <= level; }

void log_event(enum log_level l, const char *event, const char *fmt, ...)
{
    if (!log_enabled(l))
        return;
    char line[LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[l], event);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + len, sizeof line - len, fmt, ap);
    va_end(ap);
    if (m > 0)
        len += (size_t)m < sizeof line - len ? (size_t)m : sizeof line - len - 1;
    while (len && line[len - 1] == ' ')
        len--;
    if (len >= sizeof line - 5) {
        len = sizeof line - 5;
        memcpy(line + len, "...", 3);
        len += 3;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

const char *log_q(const char *s)
{
    static _Thread_local char bufs[LOG_Q_SLOTS][LOG_Q_MAX];
    static _Thread_local unsigned slot;
    char *b = bufs[slot++ % LOG_Q_SLOTS];
    size_t o = 0;
    if (!s)
        s = "";
    b[o++] = '"';
    for (; *s && o + 6 < LOG_Q_MAX; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            b[o++] = '\\';
            b[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            b[o++] = '?';
        } else {
            b[o++] = (char)c;
        }
    }
    if (*s) {
        memcpy(b + o, "...", 3);
        o += 3;
    }
    b[o++] = '"';
    b[o] = '\0';
    return b;
}
