/* filter-bench — the CPU a webhook filter's routing costs per stored
 * message (poller.c route()): the full message object (message_to_json_fd,
 * what routing parsed before) against what the filter needs
 * (message_filter_json: the header block alone for subject/from/to/headers/
 * exclude_auto_replies; the MIME structure for has_attachments).
 *   filter-bench [COUNT [MB]]     default 200 messages of 5 MB
 * One message file (a text part and a base64 attachment making MB
 * megabytes) is written under $TMPDIR and routed COUNT times by each way;
 * prints process CPU seconds and the ratio.  Exit 0 unless something fails
 * (including a routing decision that differs between the ways). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "message.h"

#define BENCH_COUNT_MAX 100000
#define BENCH_MB_MAX 100
#define BENCH_LINE 76 /* base64 line length */

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int write_message(FILE *f, size_t bytes)
{
    fputs("From: Ann Example <ann@example.com>\r\nTo: support@example.com\r\n"
          "Subject: [ticket 42] invoice attached\r\nMessage-ID: <bench@example.com>\r\n"
          "Date: Mon, 2 Jan 2023 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
          "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
          "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find it attached.\r\n"
          "--b1\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\n"
          "Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n"
          "Content-Transfer-Encoding: base64\r\n\r\n",
          f);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char line[BENCH_LINE + 2];
    for (size_t i = 0; i < BENCH_LINE; i++)
        line[i] = b64[(i * 7) % 64];
    line[BENCH_LINE] = '\r';
    line[BENCH_LINE + 1] = '\n';
    for (size_t n = 0; n < bytes; n += sizeof line)
        if (fwrite(line, 1, sizeof line, f) != sizeof line)
            return -1;
    fputs("--b1--\r\n", f);
    return fflush(f) == 0 ? 0 : -1;
}

static bool subject_matches(const cJSON *m)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(m, "subject");
    return cJSON_IsString(s) && strstr(s->valuestring, "[ticket") != NULL;
}

static bool has_attachment(const cJSON *m)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(m, "attachments"))
    {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(it, "disposition");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(it, "filename");
        if ((cJSON_IsString(d) && strcmp(d->valuestring, "attachment") == 0) || cJSON_IsString(fn))
            return true;
    }
    return false;
}

/* COUNT routings one way: -1 full object, else message_filter_json(what);
 * *decided: what the filter said (subject and has_attachments). */
static double run(int fd, long count, int way, bool *subj, bool *att)
{
    double t0 = cpu_s();
    for (long i = 0; i < count; i++) {
        struct err e;
        cJSON *m = way < 0 ? message_to_json_fd(fd, NULL, &e)
                           : message_filter_json(NULL, 0, fd, (unsigned)way, &e);
        if (!m) {
            fprintf(stderr, "filter-bench: %s\n", e.msg);
            exit(1);
        }
        *subj = subject_matches(m);
        *att = has_attachment(m);
        cJSON_Delete(m);
    }
    return cpu_s() - t0;
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? strtol(argv[1], NULL, 10) : 200;
    long mb = argc > 2 ? strtol(argv[2], NULL, 10) : 5;
    if (count < 1 || count > BENCH_COUNT_MAX || mb < 1 || mb > BENCH_MB_MAX) {
        fprintf(stderr, "usage: filter-bench [COUNT (1..%d) [MB (1..%d)]]\n", BENCH_COUNT_MAX,
                BENCH_MB_MAX);
        return 2;
    }
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/filter-bench.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w+") : NULL;
    if (!f || write_message(f, (size_t)mb * 1000000u) < 0) {
        fprintf(stderr, "filter-bench: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    unlink(path);
    bool s_full, a_full, s_head, a_head, s_mime, a_mime;
    printf("routing %ld messages of %ld MB (one file, page-cached), process CPU:\n", count, mb);
    double full = run(fd, count, -1, &s_full, &a_full);
    printf("  full message object (before)          %8.3f s  %7.2f ms/message\n", full,
           full * 1000 / (double)count);
    double head = run(fd, count, (int)MESSAGE_FILTER_HEADER, &s_head, &a_head);
    printf("  header block (subject filter)         %8.3f s  %7.2f ms/message  %6.0fx less\n",
           head, head * 1000 / (double)count, head > 0 ? full / head : 0.0);
    double mime = run(fd, count, (int)MESSAGE_FILTER_ATTACHMENTS, &s_mime, &a_mime);
    printf("  MIME structure (has_attachments)      %8.3f s  %7.2f ms/message  %6.1fx less\n",
           mime, mime * 1000 / (double)count, mime > 0 ? full / mime : 0.0);
    fclose(f);
    message_global_cleanup();
    if (!s_full || s_head != s_full || s_mime != s_full || !a_full || a_mime != a_full) {
        fprintf(stderr, "filter-bench: the ways decide differently\n");
        return 1;
    }
    return 0;
}
