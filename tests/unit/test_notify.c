/* Unit tests: sd_notify messages (include/notify.h), received on a real
 * AF_UNIX datagram socket named by NOTIFY_SOCKET. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"

static int sock = -1;
static char path[108];

/* The next datagram within 1 s, or "" when none came. */
static const char *next(int ms)
{
    static char buf[512];
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(sock, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static int64_t mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void messages(void **state)
{
    (void)state;
    notify_ready();
    assert_string_equal(next(1000), "READY=1");
    notify_status("3 accounts (%d idle)", 3);
    assert_string_equal(next(1000), "STATUS=3 accounts (3 idle)");
    notify_status("3 accounts (%d idle)", 3); /* unchanged: not sent again */
    notify_status("two\nlines");              /* one line: no second assignment */
    assert_string_equal(next(1000), "STATUS=two lines");
    int64_t before = mono_usec();
    notify_reloading();
    const char *r = next(1000);
    assert_memory_equal(r, "RELOADING=1\nMONOTONIC_USEC=", 27);
    long long usec = strtoll(r + 27, NULL, 10);
    assert_true(usec >= before && usec <= mono_usec());
    notify_stopping();
    assert_string_equal(next(1000), "STOPPING=1");
}

static void watchdog(void **state)
{
    (void)state;
    assert_int_equal(notify_watchdog_ms(), 2000);
    notify_watchdog();
    assert_string_equal(next(1000), "WATCHDOG=1");
    notify_watchdog(); /* within half the interval: nothing */
    notify_watchdog();
    assert_string_equal(next(200), "");
    usleep(1050 * 1000);
    notify_watchdog();
    assert_string_equal(next(1000), "WATCHDOG=1");
}

int main(void)
{
    snprintf(path, sizeof path, "/tmp/test_notify.%d", (int)getpid());
    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    unlink(path);
    if (sock < 0 || bind(sock, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("test_notify: socket");
        return 1;
    }
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "2000000", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(messages),
        cmocka_unit_test(watchdog),
    };
    int rc = cmocka_run_group_tests_name("notify", tests, NULL, NULL);
    unlink(path);
    close(sock);
    return rc;
}
