/* pop3-limit — the pipelined reference POP3 client of the benchmark (tests/bench/run).
 *
 *   POP3BRIDGE_PASSWORD=... pop3-limit [--ca-file FILE] [--user USER] [--expect N]
 *                                      [--timeout SECONDS] HOST PORT
 *
 * Implicit TLS (RFC 8314; TLS >= 1.2, the chain verified against FILE or the system store,
 * the host name or IP address checked), then the least a client can do to read a whole
 * mailbox (RFC 1939, RFC 2449): CAPA; USER, PASS, STAT and UIDL in one write; then RETR 1..N
 * in one write; QUIT once the last message has arrived.  (QUIT waits for the last message
 * because Dovecot ends the session as soon as it has processed QUIT, and then sometimes
 * drops the end of the output its TLS layer had not sent yet: the last message is cut off.)
 * Replies are parsed line by line just enough to find each message's
 * end, counted and dropped.  Reading and writing are interleaved on a non-blocking socket,
 * so the big command write can never deadlock against the replies.  It stores nothing: its
 * time is what the server and the network allow, the "limit" a real client is measured
 * against.
 *
 * Prints one JSON line on stdout: messages, octets (STAT), body_octets (un-stuffed, CRLF
 * lines), login_seconds (connect to the UIDL listing), seconds (total).  Exit 0 when every
 * message arrived (and their count is N with --expect), 1 on any failure (one line on
 * stderr), 2 on bad usage.  The password never appears in any output. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LIMIT_BUF_SIZE (1u << 20)        /* input buffer; also the longest line accepted */
#define LIMIT_READ_CHUNK (256u * 1024u)  /* bytes asked of SSL_read at a time */
#define LIMIT_CMD_MAX 1024               /* one command line (USER, PASS) */
#define LIMIT_RETR_CMD_MAX 24            /* "RETR 4294967295\r\n" and some */
#define LIMIT_MESSAGES_MAX 10000000L     /* STAT count accepted */
#define LIMIT_CAPA_LINES_MAX 1000
#define LIMIT_LABEL_MAX 32               /* "RETR n" in messages */
#define LIMIT_TIMEOUT_DEFAULT 60L        /* seconds per network wait */
#define LIMIT_TIMEOUT_MAX 3600L

struct conn {
    SSL *ssl;
    int fd;
    int timeout_ms;
    char *in;                  /* in[pos..len) is unread */
    size_t pos, len;
    char *out;                 /* out[out_off..out_len) still to send */
    size_t out_off, out_len;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
    va_list ap;
    fputs("pop3-limit: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    unsigned long ssl_err = ERR_get_error();
    if (ssl_err) {
        char buf[256];
        ERR_error_string_n(ssl_err, buf, sizeof buf);
        fprintf(stderr, " (%s)", buf);
    }
    fputc('\n', stderr);
    exit(1);
}

static long parse_long(const char *s, long lo, long hi, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "pop3-limit: %s must be a number from %ld to %ld, not '%s'\n", what, lo, hi, s);
        exit(2);
    }
    return v;
}

/* One poll for whatever the TLS layer waits on; fails after the timeout. */
static void wait_io(struct conn *c, bool want_write)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN | (want_write ? POLLOUT : 0)};
    int n;
    do
        n = poll(&p, 1, c->timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        fail("poll: %s", strerror(errno));
    if (n == 0)
        fail("no progress within %d ms", c->timeout_ms);
}

/* Send what is pending, as far as the socket takes it; true if all of it went out. */
static bool try_send(struct conn *c)
{
    while (c->out_off < c->out_len) {
        size_t left = c->out_len - c->out_off;
        int w = SSL_write(c->ssl, c->out + c->out_off, left > INT32_MAX ? INT32_MAX : (int)left);
        if (w > 0) {
            c->out_off += (size_t)w;
            continue;
        }
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
            return false;
        fail("TLS write failed");
    }
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = 0;
    return true;
}

/* Queue a command batch (taken over); the event loop sends it while reading replies. */
static void queue(struct conn *c, char *cmds, size_t n)
{
    if (c->out)
        fail("internal: a command batch is still being sent");
    c->out = cmds;
    c->out_len = n;
    c->out_off = 0;
    try_send(c);
}

/* Read more input, sending pending commands meanwhile.  Keeps in[pos..len). */
static void fill(struct conn *c)
{
    if (c->pos > 0) {
        memmove(c->in, c->in + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    if (c->len == LIMIT_BUF_SIZE)
        fail("a line is longer than %u bytes", LIMIT_BUF_SIZE);
    for (;;) {
        bool sent = c->out == NULL || try_send(c);
        size_t room = LIMIT_BUF_SIZE - c->len;
        int r = SSL_read(c->ssl, c->in + c->len, (int)(room < LIMIT_READ_CHUNK ? room : LIMIT_READ_CHUNK));
        if (r > 0) {
            c->len += (size_t)r;
            return;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            wait_io(c, !sent || e == SSL_ERROR_WANT_WRITE);
            continue;
        }
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && r == 0))
            fail("the server closed the connection");
        fail("TLS read failed");
    }
}

/* The next line without its CRLF (NUL-terminated in place); *n is its length. */
static char *read_line(struct conn *c, size_t *n)
{
    size_t scanned = 0;
    for (;;) {
        char *start = c->in + c->pos;
        size_t avail = c->len - c->pos;
        char *lf = scanned < avail ? memchr(start + scanned, '\n', avail - scanned) : NULL;
        if (lf) {
            size_t l = (size_t)(lf - start);
            if (l == 0 || start[l - 1] != '\r')
                fail("a line does not end in CRLF");
            start[l - 1] = '\0';
            c->pos += l + 1;
            *n = l - 1;
            return start;
        }
        scanned = avail;
        fill(c);
    }
}

/* A status line; fails unless it is +OK.  Returns the text after "+OK". */
static char *status(struct conn *c, const char *what)
{
    size_t n;
    char *line = read_line(c, &n);
    if (n < 3 || memcmp(line, "+OK", 3) != 0)
        fail("%s: the server answered '%.60s'", what, line);
    return line + 3;
}

/* The rest of a multi-line reply up to its "." line; returns the number of lines (at most
 * max_lines), adds the un-stuffed octets (with CRLF) to *octets. */
static unsigned long long body(struct conn *c, unsigned long long *octets, unsigned long long max_lines,
                               const char *what)
{
    unsigned long long lines = 0;
    for (;;) {
        size_t n;
        char *line = read_line(c, &n);
        if (line[0] == '.') {
            if (n == 1)
                return lines;
            n--; /* a dot-stuffed line */
        }
        if (++lines > max_lines)
            fail("%s: more than %llu lines", what, max_lines);
        *octets += n + 2;
    }
}

static void tls_connect(struct conn *c, const char *host, const char *port, const char *ca)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0)
        fail("%s: %s", host, gai_strerror(rc));
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0)
        fail("connect to %s port %s: %s", host, port, strerror(errno));
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0)
        fail("fcntl: %s", strerror(errno));

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        fail("TLS context");
    if (ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 : SSL_CTX_set_default_verify_paths(ctx) != 1)
        fail("cannot load the trust anchors %s", ca ? ca : "of the system");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    c->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL keeps its own reference */
    if (!c->ssl)
        fail("TLS session");
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1)
            fail("TLS: cannot check the address %s", host);
    } else if (SSL_set_tlsext_host_name(c->ssl, host) != 1 || SSL_set1_host(c->ssl, host) != 1) {
        fail("TLS: cannot check the host name %s", host);
    }
    SSL_set_fd(c->ssl, c->fd);
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            wait_io(c, e == SSL_ERROR_WANT_WRITE);
            continue;
        }
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK)
            fail("TLS: certificate verify failed: %s", X509_verify_cert_error_string(v));
        fail("TLS handshake with %s failed", host);
    }
}

static char *dup_or_die(const char *s, size_t n)
{
    char *p = malloc(n);
    if (!p)
        fail("out of memory");
    memcpy(p, s, n);
    return p;
}

int main(int argc, char **argv)
{
    const char *ca = NULL, *user = NULL;
    long expect = -1, timeout = LIMIT_TIMEOUT_DEFAULT;
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--ca-file") == 0)
            ca = argv[i + 1];
        else if (strcmp(argv[i], "--user") == 0)
            user = argv[i + 1];
        else if (strcmp(argv[i], "--expect") == 0)
            expect = parse_long(argv[i + 1], 0, LIMIT_MESSAGES_MAX, "--expect");
        else if (strcmp(argv[i], "--timeout") == 0)
            timeout = parse_long(argv[i + 1], 1, LIMIT_TIMEOUT_MAX, "--timeout");
        else
            break;
    }
    const char *pass = getenv("POP3BRIDGE_PASSWORD");
    if (argc - i != 2 || !user || !pass) {
        fprintf(stderr, "usage: POP3BRIDGE_PASSWORD=... pop3-limit [--ca-file FILE] --user USER "
                        "[--expect N] [--timeout SECONDS] HOST PORT\n");
        return 2;
    }
    const char *host = argv[i], *port = argv[i + 1];

    double t0 = now();
    struct conn c = {.fd = -1, .timeout_ms = (int)(timeout * 1000)};
    if (!(c.in = malloc(LIMIT_BUF_SIZE + 1)))
        fail("out of memory");
    tls_connect(&c, host, port, ca);

    status(&c, "greeting");
    queue(&c, dup_or_die("CAPA\r\n", 6), 6);
    status(&c, "CAPA");
    bool pipelining = false;
    for (unsigned n_capa = 0;; n_capa++) {
        size_t n;
        char *line = read_line(&c, &n);
        if (n == 1 && line[0] == '.')
            break;
        if (n_capa >= LIMIT_CAPA_LINES_MAX)
            fail("CAPA: more than %d lines", LIMIT_CAPA_LINES_MAX);
        if (strcmp(line, "PIPELINING") == 0)
            pipelining = true;
    }
    if (!pipelining)
        fail("the server does not advertise PIPELINING");

    char cmd[LIMIT_CMD_MAX];
    int n = snprintf(cmd, sizeof cmd, "USER %s\r\nPASS %s\r\nSTAT\r\nUIDL\r\n", user, pass);
    if (n < 0 || (size_t)n >= sizeof cmd)
        fail("the user name or password is longer than %d bytes", LIMIT_CMD_MAX / 2);
    queue(&c, dup_or_die(cmd, (size_t)n), (size_t)n);
    explicit_bzero(cmd, sizeof cmd);
    status(&c, "USER");
    status(&c, "PASS");
    char *stat = status(&c, "STAT");
    char *end;
    errno = 0;
    long count = strtol(stat, &end, 10);
    if (errno || end == stat || count < 0 || count > LIMIT_MESSAGES_MAX || *end != ' ')
        fail("STAT: cannot read the message count");
    unsigned long long octets = strtoull(end + 1, &end, 10);
    status(&c, "UIDL");
    unsigned long long uidl_octets = 0;
    unsigned long long uidls = body(&c, &uidl_octets, (unsigned long long)count, "UIDL");
    if (uidls != (unsigned long long)count)
        fail("UIDL lists %llu messages, STAT %ld", uidls, count);
    double t_login = now();

    size_t cap = (size_t)count * LIMIT_RETR_CMD_MAX + 1, len = 0;
    char *batch = malloc(cap);
    if (!batch)
        fail("out of memory");
    for (long k = 1; k <= count; k++) {
        n = snprintf(batch + len, cap - len, "RETR %ld\r\n", k);
        if (n < 0 || (size_t)n >= cap - len)
            fail("internal: RETR batch overflow");
        len += (size_t)n;
    }
    if (len > 0)
        queue(&c, batch, len);
    else
        free(batch);

    unsigned long long body_octets = 0;
    long got = 0;
    for (long k = 1; k <= count; k++) {
        char what[LIMIT_LABEL_MAX];
        n = snprintf(what, sizeof what, "RETR %ld", k);
        if (n < 0 || (size_t)n >= sizeof what)
            fail("internal: label of RETR %ld too long", k);
        status(&c, what);
        body(&c, &body_octets, ULLONG_MAX, what);
        got++;
    }
    queue(&c, dup_or_die("QUIT\r\n", 6), 6);
    status(&c, "QUIT");
    double t1 = now();
    SSL_free(c.ssl);
    close(c.fd);
    free(c.in);
    free(c.out);

    printf("{\"messages\": %ld, \"octets\": %llu, \"body_octets\": %llu, \"login_seconds\": %.4f, "
           "\"seconds\": %.4f}\n", got, octets, body_octets, t_login - t0, t1 - t0);
    if (expect >= 0 && got != expect)
        fail("%ld messages, expected %ld", got, expect);
    return 0;
}
