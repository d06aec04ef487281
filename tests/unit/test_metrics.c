/* Unit tests: the Prometheus text of the bridge's counters (include/metrics.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "poller.h"

static void metrics_text(void **state)
{
    (void)state;
    metrics_reset();
    struct poller_result r = {.fetched = 3, .bytes = 1234, .too_large = 1, .deleted = 2};
    metrics_on_poll("sup\"port\\x\ny", NULL, &r);
    metrics_on_poll("sales", NULL, &r);
    struct err e;
    err_clear(&e);
    e.kind = ERR_SERVER;
    e.code = ERR_CODE_IN_USE;
    metrics_on_poll("sales", &e, NULL);
    struct store_delivery dl = {0};
    snprintf(dl.webhook, sizeof dl.webhook, "crm");
    metrics_on_delivery(NULL, &dl, "delivered", 200, 700);
    metrics_on_delivery(NULL, &dl, "delivered", 200, 70000);
    metrics_on_delivery(NULL, &dl, "retry", 503, 0);
    metrics_on_http(200);
    metrics_on_http(200);
    metrics_on_http(404);
    struct store_queue_counts q = {.pending = 4, .failed = 1, .delivered = 9, .dead = 2};
    struct metrics_gauges g = {&q, 3};
    size_t len;
    char *t = metrics_render(&g, &len, &e);
    assert_non_null(t);
    assert_int_equal(len, strlen(t));
    const char *want[] = {
        "pop3bridge_polls_total{account=\"sup\\\"port\\\\x\\ny\",result=\"ok\"} 1\n",
        "pop3bridge_polls_total{account=\"sales\",result=\"ok\"} 1\n",
        "pop3bridge_polls_total{account=\"sales\",result=\"error\"} 1\n",
        "pop3bridge_poll_errors_total{account=\"sales\",kind=\"in_use\"} 1\n",
        "pop3bridge_messages_fetched_total{account=\"sales\"} 3\n",
        "pop3bridge_bytes_fetched_total{account=\"sales\"} 1234\n",
        "pop3bridge_messages_too_large_total{account=\"sales\"} 1\n",
        "pop3bridge_messages_deleted_total{account=\"sales\"} 2\n",
        "pop3bridge_deliveries_total{webhook=\"crm\",outcome=\"delivered\"} 2\n",
        "pop3bridge_deliveries_total{webhook=\"crm\",outcome=\"retry\"} 1\n",
        "pop3bridge_http_requests_total{code=\"200\"} 2\n",
        "pop3bridge_http_requests_total{code=\"404\"} 1\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"0.5\"} 0\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"1\"} 1\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"60\"} 1\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"300\"} 2\n",
        "pop3bridge_delivery_latency_seconds_bucket{le=\"+Inf\"} 2\n",
        "pop3bridge_delivery_latency_seconds_sum 70.700\n",
        "pop3bridge_delivery_latency_seconds_count 2\n",
        "pop3bridge_delivery_queue{status=\"pending\"} 4\n",
        "pop3bridge_delivery_queue{status=\"dead\"} 2\n",
        "pop3bridge_api_sessions_open 3\n",
        "# TYPE pop3bridge_delivery_latency_seconds histogram\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(t, want[i]))
            fail_msg("metrics lack: %s\n--- got:\n%s", want[i], t);
    free(t);
    metrics_reset();
    t = metrics_render(NULL, &len, &e);
    assert_non_null(t);
    assert_null(strstr(t, "account=\"sales\""));
    assert_null(strstr(t, "pop3bridge_delivery_queue{"));
    free(t);
}

/* More label combinations than METRICS_SERIES_MAX: the excess is counted as
 * dropped, never kept, and long label values are cut. */
static void metrics_series_limit(void **state)
{
    (void)state;
    metrics_reset();
    struct err e;
    err_clear(&e);
    e.kind = ERR_CONN;
    char name[METRICS_LABEL_MAX + 64];
    for (int i = 0; i < METRICS_SERIES_MAX + 5; i++) {
        snprintf(name, sizeof name, "acct-%d", i);
        metrics_on_poll(name, &e, NULL);
    }
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    size_t len;
    char *t = metrics_render(NULL, &len, &e);
    assert_non_null(t);
    assert_non_null(strstr(t, "pop3bridge_polls_total{account=\"acct-0\",result=\"error\"} 1\n"));
    assert_null(strstr(t, "account=\"acct-4100\""));
    assert_non_null(strstr(t, "pop3bridge_metrics_series_dropped_total "));
    assert_null(strstr(t, "pop3bridge_metrics_series_dropped_total 0\n"));
    free(t);
    metrics_reset();
    metrics_on_poll(name, NULL, NULL);
    t = metrics_render(NULL, &len, &e);
    assert_non_null(t);
    char cut[METRICS_LABEL_MAX + 40];
    snprintf(cut, sizeof cut, "account=\"%.*s\"", METRICS_LABEL_MAX, name);
    assert_non_null(strstr(t, cut));
    free(t);
    metrics_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(metrics_text),
        cmocka_unit_test(metrics_series_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
