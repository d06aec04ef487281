/* message_json — prints the event's message object for a stored message file.
 *   message_json FILE [INLINE_MAX [PUBLIC_URL]]     the message object (fd parser)
 *   message_json --top FILE                          the TOP view
 *   message_json --attachment ID FILE                the attachment's decoded bytes
 * Used by tests and by hand; exit 0 on success. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "message.h"

static int to_stdout(void *ctx, const void *buf, size_t len)
{
    (void)ctx;
    return fwrite(buf, 1, len, stdout) == len ? 0 : -1;
}

static int open_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fprintf(stderr, "message_json: %s: %s\n", path, strerror(errno));
    return fd;
}

int main(int argc, char **argv)
{
    struct err e;
    err_clear(&e);
    char line[512];
    int rc = 1;
    if (argc == 3 && strcmp(argv[1], "--top") == 0) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) {
            fprintf(stderr, "message_json: %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        cJSON *t = message_top_json(buf, n, "top-uidl", &e);
        if (t) {
            char *s = cJSON_Print(t);
            if (s)
                puts(s);
            cJSON_free(s);
            cJSON_Delete(t);
            rc = 0;
        }
    } else if (argc == 4 && strcmp(argv[1], "--attachment") == 0) {
        int fd = open_file(argv[3]);
        if (fd < 0)
            return 1;
        struct message_attachment_info info;
        rc = message_attachment_fd(fd, argv[2], to_stdout, NULL, &info, &e) == 0 ? 0 : 1;
        if (rc == 0)
            fprintf(stderr, "content_type=%s filename=%s size=%" PRIu64 "\n", info.content_type,
                    info.filename, info.size);
        close(fd);
    } else if (argc >= 2 && argc <= 4 && argv[1][0] != '-') {
        int fd = open_file(argv[1]);
        if (fd < 0)
            return 1;
        struct message_opts o = {.id = "42",
                                 .uidl = "uidl-1",
                                 .received_at = "2023-11-14T10:00:00Z",
                                 .public_url = argc > 3 ? argv[3] : "http://127.0.0.1:8025",
                                 .inline_max = argc > 2 ? strtoull(argv[2], NULL, 10) : 262144};
        cJSON *m = message_to_json_fd(fd, &o, &e);
        close(fd);
        if (m) {
            char *s = cJSON_Print(m);
            if (s)
                puts(s);
            cJSON_free(s);
            cJSON_Delete(m);
            rc = 0;
        }
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            fprintf(stderr, "peak_rss_kib=%ld\n", ru.ru_maxrss);
    } else {
        fprintf(stderr, "usage: message_json FILE [INLINE_MAX [PUBLIC_URL]]\n"
                        "       message_json --top FILE\n"
                        "       message_json --attachment ID FILE\n");
        return 2;
    }
    if (rc != 0) {
        err_format(&e, line, sizeof line);
        fprintf(stderr, "message_json: %s\n", line);
    }
    message_global_cleanup();
    return rc;
}
