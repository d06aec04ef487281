/* notify — sd_notify(3) for Type=notify; see include/notify.h. */
#include "notify.h"

#include "clock.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool enabled;            /* NOTIFY_SOCKET is set */
static int64_t watchdog_usec;   /* 0: off */
static _Atomic int64_t last_ping_usec;
static pthread_mutex_t status_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_status[NOTIFY_STATUS_MAX + 1];

static void init(void)
{
    const char *s = getenv("NOTIFY_SOCKET");
    enabled = s && *s;
    uint64_t usec = 0;
    /* 0: keep WATCHDOG_USEC/WATCHDOG_PID for whatever else may read them */
    if (enabled && sd_watchdog_enabled(0, &usec) > 0 && usec > 0 && usec < INT64_MAX)
        watchdog_usec = (int64_t)usec;
}

static bool on(void)
{
    pthread_once(&once, init);
    return enabled;
}

bool notify_enabled(void) { return on(); }

void notify_ready(void)
{
    if (on())
        sd_notify(0, "READY=1");
}

void notify_reloading(void)
{
    if (!on())
        return;
    char msg[80];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%lld", (long long)clock_mono_us());
    sd_notify(0, msg);
}

void notify_stopping(void)
{
    if (on())
        sd_notify(0, "STOPPING=1");
}

void notify_status(const char *fmt, ...)
{
    if (!on())
        return;
    char text[NOTIFY_STATUS_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap); /* a longer text is cut */
    va_end(ap);
    if (n < 0)
        return;
    for (char *c = text; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' '; /* one line: a line break would start another assignment */
    pthread_mutex_lock(&status_lock);
    bool same = strcmp(text, last_status) == 0;
    if (!same)
        memcpy(last_status, text, sizeof last_status);
    pthread_mutex_unlock(&status_lock);
    if (same)
        return;
    char msg[NOTIFY_STATUS_MAX + 16];
    snprintf(msg, sizeof msg, "STATUS=%s", text);
    sd_notify(0, msg);
}

void notify_watchdog(void)
{
    if (!on() || watchdog_usec == 0)
        return;
    int64_t now = clock_mono_us();
    int64_t last = atomic_load(&last_ping_usec);
    if (last && now - last < watchdog_usec / 2)
        return;
    /* one thread wins the turn; the others see the new time */
    if (atomic_compare_exchange_strong(&last_ping_usec, &last, now))
        sd_notify(0, "WATCHDOG=1");
}

int64_t notify_watchdog_ms(void)
{
    on();
    return watchdog_usec / 1000;
}
