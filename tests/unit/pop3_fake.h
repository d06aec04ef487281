/* pop3_fake.h — a scripted POP3 server on 127.0.0.1 for the unit tests of
 * what depends on time and misbehaviour (deadlines, slow or silent servers,
 * a wall clock that jumps), where a real Dovecot cannot be steered.  The
 * mailbox behaviour itself is tested against Dovecot in tests/integration.
 *
 * A thread per connection: greeting, CAPA (UIDL TOP USER), USER, PASS,
 * STAT, UIDL, LIST, RETR, TOP, DELE, RSET, NOOP, QUIT (deletions committed
 * only at QUIT; the listing of a session is the one at its start).  delay_ms holds every reply after the
 * greeting; `silent` accepts and never answers; cut_retr (a message index,
 * 1..FAKE_MSGS; 0 none) answers RETR of that message with +OK and half of
 * it, then drops the connection. */
#ifndef POP3_FAKE_H
#define POP3_FAKE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAKE_MSGS 3

struct fake_pop3 {
    int lfd;
    unsigned port;
    pthread_t th;
    int delay_ms;
    bool silent;
    int cut_retr;
    atomic_bool stop;
    atomic_int connections, quits, deleted, active;
    pthread_mutex_t mu;             /* gone */
    bool gone[FAKE_MSGS + 1];       /* deleted at a QUIT */
};

struct fake_conn {
    struct fake_pop3 *f;
    int fd;
};

static const char *const fake_uidl[FAKE_MSGS + 1] = {"", "uid-one", "uid-two", "uid-three"};
static const char *const fake_msg[FAKE_MSGS + 1] = {
    "",
    "Subject: one\r\nFrom: a@example.com\r\n\r\nbody one\r\n",
    "Subject: two\r\nFrom: b@example.com\r\n\r\nbody two\r\nline 2\r\n",
    "Subject: three\r\nFrom: c@example.com\r\n\r\nbody three\r\n",
};

static inline void fake_send(struct fake_pop3 *f, int fd, const char *s)
{
    if (f->delay_ms)
        usleep((useconds_t)f->delay_ms * 1000);
    size_t n = strlen(s);
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* A line into buf (without CRLF); false at EOF, error or stop. */
static inline bool fake_line(struct fake_pop3 *f, int fd, char *buf, size_t size)
{
    size_t n = 0;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        char c;
        if (recv(fd, &c, 1, 0) != 1)
            return false;
        if (c == '\n') {
            if (n && buf[n - 1] == '\r')
                n--;
            buf[n] = '\0';
            return true;
        }
        if (n + 1 < size)
            buf[n++] = c;
    }
    return false;
}

static inline int fake_count(const struct fake_pop3 *f, size_t *octets)
{
    int n = 0;
    *octets = 0;
    for (int i = 1; i <= FAKE_MSGS; i++)
        if (!f->gone[i]) {
            n++;
            *octets += strlen(fake_msg[i]);
        }
    return n;
}

/* Message numbers are the positions among the messages not yet deleted. */
static inline int fake_index(const struct fake_pop3 *f, int number)
{
    for (int i = 1, k = 0; i <= FAKE_MSGS; i++)
        if (!f->gone[i] && ++k == number)
            return i;
    return 0;
}

static inline void fake_multi(struct fake_pop3 *f, int fd, bool uidl)
{
    char out[1024] = "+OK\r\n", line[128];
    for (int i = 1, k = 0; i <= FAKE_MSGS; i++) {
        if (f->gone[i])
            continue;
        if (uidl)
            snprintf(line, sizeof line, "%d %s\r\n", ++k, fake_uidl[i]);
        else
            snprintf(line, sizeof line, "%d %zu\r\n", ++k, strlen(fake_msg[i]));
        strncat(out, line, sizeof out - strlen(out) - 1);
    }
    strncat(out, ".\r\n", sizeof out - strlen(out) - 1);
    fake_send(f, fd, out);
}

static inline void fake_body(struct fake_pop3 *f, int fd, int idx, int lines)
{
    char out[1024];
    const char *m = fake_msg[idx], *end = m + strlen(m);
    if (lines >= 0) {
        const char *p = strstr(m, "\r\n\r\n");
        end = p ? p + 4 : end;
        for (int k = 0; k < lines && end < m + strlen(m); k++) {
            const char *nl = strstr(end, "\r\n");
            end = nl ? nl + 2 : m + strlen(m);
        }
    }
    snprintf(out, sizeof out, "+OK\r\n%.*s.\r\n", (int)(end - m), m);
    fake_send(f, fd, out);
}

static inline void fake_serve(struct fake_pop3 *f, int fd)
{
    bool marked[FAKE_MSGS + 1] = {0};
    char line[256];
    struct fake_pop3 view; /* the mailbox as this session sees it */
    pthread_mutex_lock(&f->mu);
    memcpy(view.gone, f->gone, sizeof view.gone);
    pthread_mutex_unlock(&f->mu);
    view.delay_ms = f->delay_ms;
    fake_send(f, fd, "+OK fake POP3 ready\r\n");
    while (fake_line(f, fd, line, sizeof line)) {
        int n = 0, k = -1;
        size_t octets;
        char reply[128];
        if (strcmp(line, "CAPA") == 0) {
            fake_send(f, fd, "+OK\r\nUIDL\r\nTOP\r\nUSER\r\n.\r\n");
        } else if (!strncmp(line, "USER ", 5) || !strncmp(line, "PASS ", 5) ||
                   !strcmp(line, "NOOP")) {
            fake_send(f, fd, "+OK\r\n");
        } else if (strcmp(line, "STAT") == 0) {
            n = fake_count(&view, &octets);
            snprintf(reply, sizeof reply, "+OK %d %zu\r\n", n, octets);
            fake_send(f, fd, reply);
        } else if (strcmp(line, "UIDL") == 0 || strcmp(line, "LIST") == 0) {
            fake_multi(&view, fd, line[0] == 'U');
        } else if ((sscanf(line, "RETR %d", &n) == 1 || sscanf(line, "TOP %d %d", &n, &k) == 2) &&
                   fake_index(&view, n) && !marked[fake_index(&view, n)]) {
            if (k < 0 && f->cut_retr && fake_index(&view, n) == f->cut_retr) {
                char out[512];
                const char *m = fake_msg[f->cut_retr];
                snprintf(out, sizeof out, "+OK\r\n%.*s", (int)(strlen(m) / 2), m);
                fake_send(f, fd, out);
                return;
            }
            fake_body(f, fd, fake_index(&view, n), k);
        } else if (sscanf(line, "DELE %d", &n) == 1 && fake_index(&view, n) &&
                   !marked[fake_index(&view, n)]) {
            marked[fake_index(&view, n)] = true;
            fake_send(f, fd, "+OK marked\r\n");
        } else if (strcmp(line, "RSET") == 0) {
            memset(marked, 0, sizeof marked);
            fake_send(f, fd, "+OK\r\n");
        } else if (strcmp(line, "QUIT") == 0) {
            pthread_mutex_lock(&f->mu);
            for (int i = 1; i <= FAKE_MSGS; i++)
                if (marked[i] && !f->gone[i]) {
                    f->gone[i] = true;
                    atomic_fetch_add(&f->deleted, 1);
                }
            pthread_mutex_unlock(&f->mu);
            atomic_fetch_add(&f->quits, 1);
            fake_send(f, fd, "+OK bye\r\n");
            return;
        } else {
            fake_send(f, fd, "-ERR no such message or command\r\n");
        }
    }
}

static inline void *fake_conn_main(void *arg)
{
    struct fake_conn *c = arg;
    struct fake_pop3 *f = c->f;
    if (f->silent) {
        char ch;
        while (!atomic_load(&f->stop) && recv(c->fd, &ch, 1, MSG_DONTWAIT) != 0)
            usleep(20000);
    } else {
        fake_serve(f, c->fd);
    }
    close(c->fd);
    free(c);
    atomic_fetch_sub(&f->active, 1);
    return NULL;
}

static inline void *fake_main(void *arg)
{
    struct fake_pop3 *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 100) != 1)
            continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&f->connections, 1);
        struct fake_conn *c = malloc(sizeof *c);
        pthread_t t;
        atomic_fetch_add(&f->active, 1);
        if (!c || (c->f = f, c->fd = fd, pthread_create(&t, NULL, fake_conn_main, c) != 0)) {
            free(c);
            close(fd);
            atomic_fetch_sub(&f->active, 1);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

static inline void fake_start(struct fake_pop3 *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(f->lfd, 16) < 0 || getsockname(f->lfd, (struct sockaddr *)&a, &al) < 0 ||
        pthread_create(&f->th, NULL, fake_main, f) != 0) {
        fprintf(stderr, "pop3_fake: cannot start\n");
        abort();
    }
    f->port = ntohs(a.sin_port);
}

static inline void fake_stop(struct fake_pop3 *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    close(f->lfd);
    for (int i = 0; i < 500 && atomic_load(&f->active) > 0; i++)
        usleep(10000); /* each connection ends within 100 ms of stop */
    pthread_mutex_destroy(&f->mu);
}

/* Options for a plaintext USER/PASS login to f. */
static inline struct pop3_opts fake_opts(const struct fake_pop3 *f)
{
    struct pop3_opts o = {.host = "127.0.0.1", .port = f->port, .tls = POP3_TLS_NONE,
                          .username = "u", .password = "p", .allow_plaintext = true,
                          .timeout_ms = 2000};
    return o;
}

#endif
