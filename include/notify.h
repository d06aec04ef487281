/*
 * notify — the service manager's notification protocol (sd_notify(3),
 * through libsystemd): what `Type=notify` in pop3bridge.service waits for.
 *
 *   notify_ready()       READY=1: the store is open, the API listens and the
 *                        first schedule is set (once, at start-up; again
 *                        after each reload, see notify_reloading)
 *   notify_status(...)   STATUS=<one line>, what `systemctl status` shows;
 *                        sent only when the text changed
 *   notify_watchdog()    WATCHDOG=1, at most every WatchdogSec/2
 *                        (sd_watchdog_enabled(3): WATCHDOG_USEC, and
 *                        WATCHDOG_PID when set, must name this process)
 *   notify_reloading()   RELOADING=1 with MONOTONIC_USEC=<CLOCK_MONOTONIC in
 *                        µs> (systemd 253+ wants it; older ones ignore it),
 *                        before a SIGHUP reload; READY=1 follows when it
 *                        is done, whether the new file was taken or not
 *   notify_stopping()    STOPPING=1: draining after SIGTERM/SIGINT
 *
 * Without NOTIFY_SOCKET in the environment (not started by systemd, or a
 * unit whose type is not notify) every call does nothing; so does a failed
 * send (the daemon never stops over a notification).  Thread-safe: any
 * thread may call any of them.  Nothing here reads the configuration, the
 * store or the runtime: the daemon says what to send.
 */
#ifndef POP3BRIDGE_NOTIFY_H
#define POP3BRIDGE_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#define NOTIFY_STATUS_MAX 256 /* bytes of a STATUS= text; longer ones are cut */

/* NOTIFY_SOCKET is set: worth composing a STATUS= text. */
bool notify_enabled(void);

void notify_ready(void);
void notify_reloading(void);
void notify_stopping(void);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Send WATCHDOG=1 if the watchdog is on and half its interval has passed
 * since the last one.  Cheap when there is nothing to send: call it from
 * every turn of a loop that turns at least every notify_watchdog_ms()/2. */
void notify_watchdog(void);
/* The watchdog interval in milliseconds, 0 when it is off. */
int64_t notify_watchdog_ms(void);

#endif
