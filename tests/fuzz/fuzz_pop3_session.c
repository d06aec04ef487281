/* libFuzzer target: a whole POP3 session against a server whose every byte
 * is the fuzz input.  A loopback listener accepts the engine's connection,
 * writes the input, drains what the client sends, and closes.  The engine
 * must end in a typed error or success — never crash, hang, leak or read
 * out of bounds — through greeting, CAPA, login, the listing, RETR, TOP and
 * DELE, whatever the server says. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pop3.h"

static int listen_fd = -1;
static unsigned port;

struct serve {
    const uint8_t *data;
    size_t size;
};

static void *server(void *arg)
{
    struct serve *s = arg;
    int c = accept(listen_fd, NULL, NULL);
    if (c < 0)
        return NULL;
    size_t off = 0;
    while (off < s->size) {
        ssize_t w = send(c, s->data + off, s->size - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    shutdown(c, SHUT_WR);
    char buf[4096];
    struct timeval tv = {1, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (recv(c, buf, sizeof buf, 0) > 0)
        ;
    close(c);
    return NULL;
}

static int sink_data(void *ctx, const char *b, size_t n, struct err *e)
{
    (void)e;
    *(size_t *)ctx += n;
    (void)b;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(listen_fd, 8) < 0)
        abort();
    socklen_t len = sizeof a;
    getsockname(listen_fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct serve s = {data, size};
    pthread_t t;
    pthread_create(&t, NULL, server, &s);
    struct pop3_opts o = {
        .host = "127.0.0.1",
        .port = port,
        .tls = POP3_TLS_NONE,
        .username = "fuzz",
        .password = "secret",
        .allow_plaintext = true,
        .timeout_ms = 1000,
        .max_message_size = 1 << 20,
    };
    struct err e;
    struct pop3 *p = pop3_open(&o, &e);
    if (p) {
        struct pop3_listing *l = NULL;
        size_t got = 0;
        struct pop3_sink sink = {.data = sink_data, .ctx = &got, .lf = (size & 1) != 0};
        if (pop3_listing(p, &l, &e) == 0 && l->count) {
            uint32_t nums[4];
            size_t n = l->count < 4 ? l->count : 4;
            for (size_t i = 0; i < n; i++)
                nums[i] = l->entries[i].number;
            if (pop3_retr(p, nums, n, &sink, &e) == 0 && pop3_top(p, nums[0], 2, &sink, &e) == 0)
                pop3_dele(p, nums, n, &e);
        }
        pop3_listing_free(&l);
        if (pop3_quit(&p, &e) < 0 && e.kind == ERR_NONE)
            abort(); /* a failure must say why */
    } else if (e.kind == ERR_NONE) {
        abort();
    }
    pthread_join(t, NULL);
    return 0;
}
