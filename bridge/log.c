/* log — see include/log.h. */
#include "log.h"

#include "clock.h"

#include <glib.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION /* CODE_FILE= etc. would name log.c, not the caller */
#include <systemd/sd-journal.h>

#define JSON_MAX (6 * LOG_LINE_MAX + 256) /* worst case: every byte becomes \ufffd */
#define JFIELD_MAX 64                     /* journal field names (sd-journal's limit) */
#define JOURNAL_SOCKET "/run/systemd/journal/socket" /* where sd-journal sends */

static _Atomic int level = LOG_INFO;
static _Atomic int format = LOG_FORMAT_TEXT;
static const char *const names[] = {"error", "warn", "info", "debug"};
static const int priorities[] = {3, 4, 6, 7}; /* syslog LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

void log_set_level(enum log_level l) { level = (int)l; }
enum log_level log_get_level(void) { return (enum log_level)level; }
bool log_enabled(enum log_level l) { return (int)l <= level; }
static _Atomic bool journal_there;

void log_set_format(enum log_format f)
{
    /* sd-journal drops a line silently when journald is not there: look once */
    if (f == LOG_FORMAT_JOURNAL)
        journal_there = access(JOURNAL_SOCKET, W_OK) == 0;
    format = (int)f;
}
enum log_format log_get_format(void) { return (enum log_format)format; }

static void out(const char *buf, size_t len)
{
    pthread_mutex_lock(&out_lock);
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, buf, len);
        if (w <= 0)
            break; /* nowhere to report it */
        buf += w;
        len -= (size_t)w;
    }
    pthread_mutex_unlock(&out_lock);
}

/* ---- the fields, read back from "key=value key=\"quoted value\"" ---------- */

struct field {
    const char *key;
    size_t key_len;
    const char *val; /* in the caller's value buffer, unquoted */
    size_t val_len;
};

/* Split text into fields; values are copied unquoted into vals (at least
 * strlen(text) + 1 bytes).  Returns the count. */
static size_t split(const char *text, char *vals, struct field *f, size_t max)
{
    size_t n = 0, o = 0;
    const char *s = text;
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        const char *k = s;
        while (*s && *s != '=' && *s != ' ')
            s++;
        if (*s != '=') { /* a bare word: it belongs to the value before it */
            size_t len = (size_t)(s - k);
            if (n > 0 && f[n - 1].val + f[n - 1].val_len == vals + o) {
                vals[o++] = ' ';
                memcpy(vals + o, k, len);
                o += len;
                f[n - 1].val_len += len + 1;
            } else if (n < max) {
                memcpy(vals + o, k, len);
                f[n++] = (struct field){"text", 4, vals + o, len};
                o += len;
            }
            continue;
        }
        size_t key_len = (size_t)(s - k);
        s++; /* '=' */
        char *v = vals + o;
        if (*s == '"') {
            for (s++; *s && *s != '"'; s++) {
                if (*s == '\\' && s[1])
                    s++;
                vals[o++] = *s;
            }
            if (*s == '"')
                s++;
        } else {
            while (*s && *s != ' ')
                vals[o++] = *s++;
        }
        if (n < max && key_len > 0)
            f[n++] = (struct field){k, key_len, v, (size_t)(vals + o - v)};
    }
    return n;
}

/* ---- json ----------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid
 * (as GLib decides: overlong forms, surrogates and code points past U+10FFFF
 * are). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    gunichar c = g_utf8_get_char_validated((const gchar *)p, (gssize)n);
    return c == (gunichar)-1 || c == (gunichar)-2 ? 0 : (size_t)g_utf8_skip[p[0]];
}

/* Append s (len bytes) as a JSON string; the caller sized b for the worst case. */
static size_t json_str(char *b, size_t o, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    b[o++] = '"';
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            b[o++] = '\\';
            b[o++] = (char)c;
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(b + o, "\\u00", 4);
            b[o + 4] = hex[c >> 4];
            b[o + 5] = hex[c & 15];
            o += 6;
            i++;
        } else {
            size_t k = utf8_len(p + i, len - i);
            if (k == 0) {
                memcpy(b + o, "\\ufffd", 6);
                o += 6;
                i++;
            } else {
                memcpy(b + o, p + i, k);
                o += k;
                i += k;
            }
        }
    }
    b[o++] = '"';
    return o;
}

static void emit_json(const char *ts, enum log_level l, const char *event, const char *fields)
{
    char vals[LOG_LINE_MAX + 1];
    struct field f[LOG_FIELDS_MAX];
    size_t n = split(fields, vals, f, LOG_FIELDS_MAX);
    char b[JSON_MAX];
    size_t o = 0;
    o += (size_t)snprintf(b, sizeof b, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":", ts, names[l]);
    o = json_str(b, o, event, strnlen(event, 128));
    for (size_t i = 0; i < n; i++) {
        b[o++] = ',';
        o = json_str(b, o, f[i].key, f[i].key_len);
        b[o++] = ':';
        o = json_str(b, o, f[i].val, f[i].val_len);
    }
    b[o++] = '}';
    b[o++] = '\n';
    out(b, o);
}

/* ---- journal ---------------------------------------------------------------- */

/* Names journald gives a meaning of its own (systemd.journal-fields(7)). */
static bool journal_reserved(const char *k)
{
    static const char *const reserved[] = {
        "MESSAGE", "MESSAGE_ID", "PRIORITY", "ERRNO", "INVOCATION_ID", "USER_INVOCATION_ID",
        "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "SYSLOG_TIMESTAMP", "SYSLOG_RAW",
        "DOCUMENTATION", "TID", "UNIT", "USER_UNIT", "EVENT", NULL};
    for (size_t i = 0; reserved[i]; i++)
        if (strcmp(k, reserved[i]) == 0)
            return true;
    return strncmp(k, "CODE_", 5) == 0 || strncmp(k, "OBJECT_", 7) == 0 ||
           strncmp(k, "COREDUMP", 8) == 0;
}

/* "KEY=" for a field: upper case, [A-Z0-9_] only, reserved names prefixed. */
static size_t journal_key(char *b, const char *k, size_t len)
{
    char up[JFIELD_MAX + 1];
    size_t n = 0;
    for (size_t i = 0; i < len && n < JFIELD_MAX - 11; i++) {
        char c = k[i];
        up[n++] = (c >= 'a' && c <= 'z') ? (char)(c - 32)
                  : ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) ? c : '_';
    }
    up[n] = '\0';
    bool prefix = n == 0 || journal_reserved(up) || up[0] == '_' || (up[0] >= '0' && up[0] <= '9');
    int w = snprintf(b, JFIELD_MAX + 2, "%s%s=", prefix ? "POP3BRIDGE_" : "", up);
    return (size_t)w;
}

/* 0, or -1 when the journal cannot be reached. */
static int emit_journal(enum log_level l, const char *event, const char *fields)
{
    char vals[LOG_LINE_MAX + 1];
    struct field f[LOG_FIELDS_MAX];
    size_t n = split(fields, vals, f, LOG_FIELDS_MAX);
    char msg[LOG_LINE_MAX + 200], prio[16], ev[160];
    char keys[LOG_FIELDS_MAX][JFIELD_MAX + 2];
    struct iovec iov[4 + 2 * LOG_FIELDS_MAX];
    size_t k = 0;
    int m = snprintf(msg, sizeof msg, "MESSAGE=%s%s%s", event, *fields ? " " : "", fields);
    int p = snprintf(prio, sizeof prio, "PRIORITY=%d", priorities[l]);
    int e = snprintf(ev, sizeof ev, "EVENT=%s", event);
    iov[k++] = (struct iovec){msg, m < (int)sizeof msg ? (size_t)m : sizeof msg - 1};
    iov[k++] = (struct iovec){prio, (size_t)p};
    iov[k++] = (struct iovec){"SYSLOG_IDENTIFIER=pop3bridge", 28};
    iov[k++] = (struct iovec){ev, e < (int)sizeof ev ? (size_t)e : sizeof ev - 1};
    /* sd_journal_sendv wants KEY=value in one iovec: join key and value */
    char joined[LOG_FIELDS_MAX * (JFIELD_MAX + 2) + LOG_LINE_MAX + 1];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t kl = journal_key(keys[i], f[i].key, f[i].key_len);
        char *start = joined + o;
        memcpy(joined + o, keys[i], kl);
        o += kl;
        memcpy(joined + o, f[i].val, f[i].val_len);
        o += f[i].val_len;
        iov[k++] = (struct iovec){start, kl + f[i].val_len};
    }
    return sd_journal_sendv(iov, (int)k) == 0 ? 0 : -1;
}

/* ---- the entry point ------------------------------------------------------------ */

void log_event(enum log_level l, const char *event, const char *fmt, ...)
{
    if (!log_enabled(l))
        return;
    char fields[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(fields, sizeof fields, fmt, ap);
    va_end(ap);
    if (m < 0)
        fields[0] = '\0';
    bool cut = m >= (int)sizeof fields;
    size_t flen = strlen(fields);
    while (flen && fields[flen - 1] == ' ')
        fields[--flen] = '\0';

    char ts[CLOCK_RFC3339_SIZE];
    clock_rfc3339(clock_wall_ms(), 1, ts, sizeof ts);

    enum log_format f = log_get_format();
    if (f == LOG_FORMAT_JSON) {
        emit_json(ts, l, event, fields);
        return;
    }
    if (f == LOG_FORMAT_JOURNAL && journal_there && emit_journal(l, event, fields) == 0)
        return;

    char line[LOG_LINE_MAX];
    int n = snprintf(line, sizeof line, "ts=%s level=%s event=%s%s%s", ts, names[l], event,
                     flen ? " " : "", fields);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (cut || len >= sizeof line - 5) {
        len = len < sizeof line - 5 ? len : sizeof line - 5;
        memcpy(line + len, "...", 3);
        len += 3;
    }
    line[len++] = '\n';
    out(line, len);
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

bool log_limit_due(struct log_limit *l, int64_t now_ms, int64_t every_ms,
                   uint64_t *suppressed)
{
    int64_t next = atomic_load(&l->next_at);
    /* one caller wins the interval; the others count as suppressed */
    if (now_ms < next || !atomic_compare_exchange_strong(&l->next_at, &next, now_ms + every_ms)) {
        atomic_fetch_add(&l->suppressed, 1);
        return false;
    }
    uint64_t n = atomic_exchange(&l->suppressed, 0);
    if (suppressed)
        *suppressed = n;
    return true;
}
