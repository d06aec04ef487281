/* Unit tests: buffered plain/TLS connections (include/net.h), against real
 * servers on 127.0.0.1 run in threads, with a test PKI made at run time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "net.h"

#define SRV_IO_TIMEOUT_S 20   /* every server-side socket wait */
#define ACCEPT_TIMEOUT_MS 20000
#define BIG (8u * 1024 * 1024) /* deadlock test volume, each direction */

/* ---- test PKI ------------------------------------------------------------- */

static char pki_dir[64];
static char ca1_path[128], ca2_path[128];
static EVP_PKEY *ca1_key, *ca2_key, *leaf_key;
static X509 *ca1, *ca2, *leaf, *wrong_leaf;
static char leaf_fp[80];  /* sha256:<hex> of leaf */
static char wrong_fp[80]; /* sha256:<hex> of wrong_leaf */

static void add_ext(X509 *x, X509V3_CTX *c, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, c, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/* A certificate for key, signed by issuer (NULL: self-signed CA). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san)
{
    static long serial = 1;
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_ASC, (const unsigned char *)"pop3bridge test",
                               -1, -1, 0);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : nm);
    X509V3_CTX c;
    X509V3_set_ctx_nodb(&c);
    X509V3_set_ctx(&c, issuer ? issuer : x, x, NULL, NULL, 0);
    if (!issuer) {
        add_ext(x, &c, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, &c, NID_key_usage, "critical,keyCertSign,cRLSign");
        add_ext(x, &c, NID_subject_key_identifier, "hash");
    } else {
        add_ext(x, &c, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x, &c, NID_key_usage, "critical,digitalSignature");
        add_ext(x, &c, NID_ext_key_usage, "serverAuth");
        add_ext(x, &c, NID_subject_key_identifier, "hash");
        add_ext(x, &c, NID_authority_key_identifier, "keyid:always");
        add_ext(x, &c, NID_subject_alt_name, san);
    }
    assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

static void write_pem(const char *path, X509 *x)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    assert_int_equal(fclose(f), 0);
}

static void fingerprint_of(X509 *x, char *buf, size_t size)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    assert_int_equal(X509_digest(x, EVP_sha256(), md, &len), 1);
    int o = snprintf(buf, size, "sha256:");
    for (unsigned i = 0; i < len; i++)
        o += snprintf(buf + o, size - (size_t)o, "%02x", md[i]);
}

static int pki_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    snprintf(pki_dir, sizeof pki_dir, "/tmp/test_net.XXXXXX");
    if (!mkdtemp(pki_dir))
        return -1;
    snprintf(ca1_path, sizeof ca1_path, "%s/ca1.pem", pki_dir);
    snprintf(ca2_path, sizeof ca2_path, "%s/ca2.pem", pki_dir);
    ca1_key = EVP_EC_gen("P-256");
    ca2_key = EVP_EC_gen("P-256");
    leaf_key = EVP_EC_gen("P-256");
    if (!ca1_key || !ca2_key || !leaf_key)
        return -1;
    ca1 = make_cert(ca1_key, "Test CA one", NULL, NULL, NULL);
    ca2 = make_cert(ca2_key, "Test CA two", NULL, NULL, NULL);
    leaf = make_cert(leaf_key, "localhost", ca1, ca1_key, "DNS:localhost,IP:127.0.0.1");
    wrong_leaf = make_cert(leaf_key, "wrong.example", ca1, ca1_key, "DNS:wrong.example");
    write_pem(ca1_path, ca1);
    write_pem(ca2_path, ca2);
    fingerprint_of(leaf, leaf_fp, sizeof leaf_fp);
    fingerprint_of(wrong_leaf, wrong_fp, sizeof wrong_fp);
    return 0;
}

static int pki_teardown(void **state)
{
    (void)state;
    unlink(ca1_path);
    unlink(ca2_path);
    rmdir(pki_dir);
    X509_free(ca1);
    X509_free(ca2);
    X509_free(leaf);
    X509_free(wrong_leaf);
    EVP_PKEY_free(ca1_key);
    EVP_PKEY_free(ca2_key);
    EVP_PKEY_free(leaf_key);
    return 0;
}

/* ---- test servers ------------------------------------------------------- */

struct srv;
typedef void (*srv_fn)(struct srv *s, int fd);

struct srv {
    int lfd;
    unsigned port;
    pthread_t th;
    srv_fn fn;
    SSL_CTX *ctx;  /* for TLS scripts */
    /* results, read after srv_join */
    char sni[64];
    bool sni_seen;
    bool close_notify;
    uint64_t sent, received;
    bool data_ok;
    char got[128];
};

static SSL_CTX *server_ctx(X509 *cert, int min_version, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    if (min_version == TLS1_1_VERSION) {
        SSL_CTX_set_security_level(ctx, 0);
        assert_int_equal(SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0"), 1);
    }
    assert_int_equal(SSL_CTX_set_min_proto_version(ctx, min_version), 1);
    assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
    assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, leaf_key), 1);
    return ctx;
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    struct pollfd p = {.fd = s->lfd, .events = POLLIN};
    if (poll(&p, 1, ACCEPT_TIMEOUT_MS) == 1) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd >= 0) {
            struct timeval tv = {.tv_sec = SRV_IO_TIMEOUT_S};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            s->fn(s, fd);
            close(fd);
        }
    }
    return NULL;
}

static int listen_local(unsigned *port, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    if (backlog >= 0)
        assert_int_equal(listen(fd, backlog), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void srv_start(struct srv *s, srv_fn fn, SSL_CTX *ctx)
{
    memset(s, 0, sizeof *s);
    s->fn = fn;
    s->ctx = ctx;
    s->lfd = listen_local(&s->port, 8);
    assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_join(struct srv *s)
{
    pthread_join(s->th, NULL);
    close(s->lfd);
    SSL_CTX_free(s->ctx);
    s->ctx = NULL;
}

static struct net_opts opts_for(const struct srv *s)
{
    struct net_opts o = {.host = "127.0.0.1", .port = s->port, .timeout_ms = 10000};
    return o;
}

static bool send_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len) {
        ssize_t w = send(fd, c, len, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        c += w;
        len -= (size_t)w;
    }
    return true;
}

static bool send_str(int fd, const char *s)
{
    return send_all(fd, s, strlen(s));
}

/* Read one line ending in "\n" (byte at a time; test servers only). */
static bool recv_line(int fd, char *buf, size_t size)
{
    size_t o = 0;
    while (o + 1 < size) {
        char c;
        if (recv(fd, &c, 1, 0) != 1)
            return false;
        buf[o++] = c;
        if (c == '\n')
            break;
    }
    buf[o] = '\0';
    return true;
}

/* Wait until the client closes (or the I/O timeout passes). */
static void wait_client_close(int fd)
{
    char buf[4096];
    while (recv(fd, buf, sizeof buf, 0) > 0)
        ;
}

static SSL *srv_tls_accept(struct srv *s, int fd)
{
    SSL *ssl = SSL_new(s->ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sni) {
        s->sni_seen = true;
        snprintf(s->sni, sizeof s->sni, "%s", sni);
    }
    return ssl;
}

static bool ssl_write_all(SSL *ssl, const void *p, size_t len)
{
    size_t w = 0;
    return SSL_write_ex(ssl, p, len, &w) == 1 && w == len;
}

/* Read until the client's close_notify (or an error). */
static void ssl_wait_close(struct srv *s, SSL *ssl)
{
    char buf[4096];
    for (;;) {
        int r = SSL_read(ssl, buf, sizeof buf);
        if (r > 0)
            continue;
        s->close_notify = SSL_get_error(ssl, r) == SSL_ERROR_ZERO_RETURN;
        break;
    }
    ERR_clear_error();
}

/* ---- plain connections ----------------------------------------------------- */

static void script_lines(struct srv *s, int fd)
{
    static const char *first = "+OK hello\r\nsecond\n\r\n\na\rb\r\n";
    static const char *split = "this line arrives one byte at a time\r\n";
    bool ok = send_str(fd, first);
    s->sent += strlen(first);
    for (const char *p = split; ok && *p; p++) {
        ok = send_all(fd, p, 1);
        s->sent++;
        usleep(2000);
    }
    if (ok && recv_line(fd, s->got, sizeof s->got)) {
        s->received = strlen(s->got);
        ok = send_str(fd, "+OK pong\r\nno ending");
        s->sent += 19;
    }
    s->data_ok = ok;
}

static void expect_line(struct net *n, const char *want)
{
    struct err e = {0};
    const char *line;
    size_t len;
    int r = net_read_line(n, 512, &line, &len, &e);
    if (r < 0)
        fail_msg("read_line: %s", e.msg);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(line, want, len);
}

static void plain_lines(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_lines, NULL);
    struct net_opts o = opts_for(&s);
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    assert_false(net_is_tls(n));
    assert_null(net_tls_info(n));
    expect_line(n, "+OK hello");
    expect_line(n, "second");
    expect_line(n, "");
    expect_line(n, "");
    expect_line(n, "a\rb");
    expect_line(n, "this line arrives one byte at a time");
    assert_int_equal(net_queue(n, "PING", 4, &e), 0);
    assert_int_equal(net_queue(n, "\r\n", 2, &e), 0);
    assert_int_equal(net_pending_out(n), 6);
    assert_int_equal(net_flush(n, &e), 0);
    assert_int_equal(net_pending_out(n), 0);
    expect_line(n, "+OK pong");
    /* the server closes after a partial line */
    const char *line;
    size_t len;
    assert_int_equal(net_read_line(n, 512, &line, &len, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_non_null(strstr(e.msg, "closed by server"));
    assert_non_null(strstr(e.msg, "middle of a line"));
    srv_join(&s);
    assert_true(s.data_ok);
    assert_string_equal(s.got, "PING\r\n");
    assert_int_equal(net_bytes_out(n), 6);
    assert_int_equal(net_bytes_in(n), s.sent);
    /* EOF is sticky */
    assert_int_equal(net_fill(n, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    net_close(&n);
    assert_null(n);
    net_close(&n);  /* NULL-safe */
    net_close(NULL);
}

static void script_close_after_line(struct srv *s, int fd)
{
    s->data_ok = send_str(fd, "+OK bye\r\n");
}

static void eof_at_line_boundary(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_close_after_line, NULL);
    struct net_opts o = opts_for(&s);
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    expect_line(n, "+OK bye");
    const char *line;
    size_t len;
    assert_int_equal(net_read_line(n, 512, &line, &len, &e), -1);
    assert_int_equal(e.kind, ERR_CONN);
    assert_non_null(strstr(e.msg, "connection closed by server"));
    assert_null(strstr(e.msg, "middle"));
    net_close(&n);
    srv_join(&s);
}

static void refused(void **state)
{
    (void)state;
    unsigned port;
    int fd = listen_local(&port, -1); /* bound, not listening: the port answers RST */
    struct net_opts o = {.host = "127.0.0.1", .port = port, .timeout_ms = 5000};
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_null(n);
    assert_int_equal(e.kind, ERR_CONN);
    char want[64];
    snprintf(want, sizeof want, "connect to 127.0.0.1:%u: Connection refused", port);
    assert_string_equal(e.msg, want);
    close(fd);
}

static void bad_options(void **state)
{
    (void)state;
    struct err e = {0};
    struct net_opts o = {.host = "127.0.0.1", .port = 0};
    assert_null(net_connect(&o, &e));
    assert_int_equal(e.kind, ERR_USAGE);
    o.port = 70000;
    assert_null(net_connect(&o, &e));
    assert_int_equal(e.kind, ERR_USAGE);
    o.host = "";
    o.port = 110;
    assert_null(net_connect(&o, &e));
    assert_int_equal(e.kind, ERR_USAGE);
    o.host = "no-such-host.invalid";
    assert_null(net_connect(&o, &e));
    assert_int_equal(e.kind, ERR_CONN);
    assert_non_null(strstr(e.msg, "no-such-host.invalid"));
    /* an unreadable CA file is found before connecting */
    char path[160];
    snprintf(path, sizeof path, "%s/missing.pem", pki_dir);
    o.host = "127.0.0.1";
    o.port = 1;
    o.tls = true;
    o.ca_file = path;
    assert_null(net_connect(&o, &e));
    assert_int_equal(e.kind, ERR_USAGE);
    assert_non_null(strstr(e.msg, "missing.pem"));
}

/* A listener with a full accept queue drops further SYNs, so a connect to it
 * never completes. */
static void connect_timeout(void **state)
{
    (void)state;
    unsigned port;
    int lfd = listen_local(&port, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fillers[16];
    int nf = 0;
    bool full = false;
    while (nf < 16 && !full) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(c >= 0);
        fillers[nf++] = c;
        if (connect(c, (struct sockaddr *)&a, sizeof a) == 0)
            continue;
        assert_int_equal(errno, EINPROGRESS);
        struct pollfd p = {.fd = c, .events = POLLOUT};
        full = poll(&p, 1, 300) == 0; /* no SYN-ACK: the queue is full */
    }
    assert_true(full);
    struct net_opts o = {.host = "127.0.0.1", .port = port, .timeout_ms = 400};
    struct err e = {0};
    int64_t t0 = clock_mono_ms();
    struct net *n = net_connect(&o, &e);
    int64_t took = clock_mono_ms() - t0;
    assert_null(n);
    assert_int_equal(e.kind, ERR_TIMEOUT);
    char want[80];
    snprintf(want, sizeof want, "connect to 127.0.0.1:%u: timed out after 400 ms", port);
    assert_string_equal(e.msg, want);
    assert_true(took >= 350 && took < 5000);
    for (int i = 0; i < nf; i++)
        close(fillers[i]);
    close(lfd);
}

static void script_silent(struct srv *s, int fd)
{
    (void)s;
    wait_client_close(fd);
}

static void wait_timeout(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_silent, NULL);
    struct net_opts o = opts_for(&s);
    o.timeout_ms = 300;
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    net_wait_begin(n);
    int64_t t0 = clock_mono_ms();
    assert_int_equal(net_fill(n, &e), -1);
    int64_t took = clock_mono_ms() - t0;
    assert_int_equal(e.kind, ERR_TIMEOUT);
    char want[80];
    snprintf(want, sizeof want, "no reply from 127.0.0.1:%u within 300 ms", s.port);
    assert_string_equal(e.msg, want);
    assert_true(took >= 250 && took < 5000);
    net_close(&n);
    srv_join(&s);
}

static void script_drip(struct srv *s, int fd)
{
    /* one byte per 100 ms, for at most 10 s; stops when the client leaves */
    for (int i = 0; i < 100; i++) {
        if (!send_all(fd, "x", 1))
            break;
        s->sent++;
        usleep(100000);
    }
}

static void drip_timeout(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_drip, NULL);
    struct net_opts o = opts_for(&s);
    o.timeout_ms = 300;
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    net_wait_begin(n);
    const char *line;
    size_t len;
    int64_t t0 = clock_mono_ms();
    assert_int_equal(net_read_line(n, NET_IN_BUF, &line, &len, &e), -1);
    int64_t took = clock_mono_ms() - t0;
    assert_int_equal(e.kind, ERR_TIMEOUT);
    char want[96];
    snprintf(want, sizeof want, "server sent fewer than 1024 bytes in 300 ms (127.0.0.1:%u)",
             s.port);
    assert_string_equal(e.msg, want);
    assert_true(took < 3000);
    assert_true(net_bytes_in(n) > 0 && net_bytes_in(n) < 100);
    net_close(&n);
    srv_join(&s);
}

static void script_stream(struct srv *s, int fd)
{
    /* 4 KiB every 50 ms: plenty of progress, for at most 10 s */
    char buf[4096];
    memset(buf, 'y', sizeof buf);
    for (int i = 0; i < 200; i++) {
        if (!send_all(fd, buf, sizeof buf))
            break;
        s->sent += sizeof buf;
        usleep(50000);
    }
}

static void session_deadline(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_stream, NULL);
    struct net_opts o = opts_for(&s);
    o.timeout_ms = 400; /* each 400 ms window sees ~32 KiB: the wait never times out */
    o.session_deadline = clock_mono_ms() + 1500;
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    net_wait_begin(n);
    int64_t t0 = clock_mono_ms();
    int r = 0, rounds = 0;
    while (rounds++ < 1000 && (r = net_fill(n, &e)) > 0) {
        size_t len;
        net_data(n, &len);
        net_consume(n, len);
    }
    int64_t took = clock_mono_ms() - t0;
    assert_int_equal(r, -1);
    assert_int_equal(e.kind, ERR_TIMEOUT);
    assert_non_null(strstr(e.msg, "session time limit"));
    assert_true(net_bytes_in(n) >= 4 * 4096); /* the per-wait deadline kept moving */
    assert_true(took >= 800 && took < 6000);
    net_close(&n);
    srv_join(&s);
}

static void script_lines_limits(struct srv *s, int fd)
{
    char buf[300];
    memset(buf, 'a', sizeof buf);
    memcpy(buf + 100, "\r\n", 2);  /* exactly 100 octets + CRLF */
    memcpy(buf + 203, "\r\n", 2);  /* 101 octets + CRLF */
    bool ok = send_all(fd, buf, 205);
    ok = ok && send_all(fd, "+OK a\0b\r\n", 9);
    s->data_ok = ok;
    wait_client_close(fd);
}

static void line_limits(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_lines_limits, NULL);
    struct net_opts o = opts_for(&s);
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    const char *line;
    size_t len;
    assert_int_equal(net_read_line(n, 100, &line, &len, &e), 0);
    assert_int_equal(len, 100);
    assert_int_equal(net_read_line(n, 100, &line, &len, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_string_equal(e.msg, "reply line longer than 100 octets");
    /* the over-long line was not consumed; skip it by hand */
    size_t avail;
    const char *d = net_data(n, &avail);
    while (avail < 103 || !memchr(d, '\n', avail)) {
        assert_true(net_fill(n, &e) > 0);
        d = net_data(n, &avail);
    }
    net_consume(n, 103);
    /* a NUL inside a line */
    assert_int_equal(net_read_line(n, 100, &line, &len, &e), -1);
    assert_int_equal(e.kind, ERR_PROTO);
    assert_non_null(strstr(e.msg, "NUL"));
    net_close(&n);
    srv_join(&s);
    assert_true(s.data_ok);
}

static void script_flood(struct srv *s, int fd)
{
    /* NET_IN_BUF + 4 KiB without a line ending */
    char buf[4096];
    memset(buf, 'z', sizeof buf);
    bool ok = true;
    for (size_t i = 0; ok && i < NET_IN_BUF / sizeof buf + 1; i++)
        ok = send_all(fd, buf, sizeof buf);
    s->data_ok = ok;
    wait_client_close(fd);
}

static void unterminated_flood(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_flood, NULL);
    struct net_opts o = opts_for(&s);
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    const char *line;
    size_t len;
    /* max larger than the buffer is capped */
    assert_int_equal(net_read_line(n, NET_IN_BUF, &line, &len, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_non_null(strstr(e.msg, "reply line longer than"));
    /* a caller that never consumes fills the buffer */
    int r, rounds = 0;
    while (rounds++ < 10000 && (r = net_fill(n, &e)) > 0)
        ;
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_non_null(strstr(e.msg, "input buffer full"));
    net_data(n, &len);
    assert_int_equal(len, NET_IN_BUF);
    net_close(&n);
    srv_join(&s);
    assert_true(s.data_ok);
}

static void queue_limit(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_silent, NULL);
    struct net_opts o = opts_for(&s);
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    char *big = calloc(1, NET_OUT_MAX);
    assert_non_null(big);
    assert_int_equal(net_queue(n, big, NET_OUT_MAX - 10, &e), 0);
    assert_int_equal(net_queue(n, big, 10, &e), 0);
    assert_int_equal(net_queue(n, big, 1, &e), -1);
    assert_int_equal(e.kind, ERR_LIMIT);
    assert_non_null(strstr(e.msg, "4194304"));
    assert_int_equal(net_pending_out(n), NET_OUT_MAX);
    free(big);
    net_close(&n); /* frees unsent output */
    srv_join(&s);
}

/* ---- deadlock avoidance ---------------------------------------------------- */

static unsigned char pattern(uint64_t i)
{
    return (unsigned char)(i % 251);
}

static void fill_pattern(unsigned char *buf, size_t len, uint64_t off)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern(off + i);
}

static bool check_pattern(const unsigned char *buf, size_t len, uint64_t off)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != pattern(off + i))
            return false;
    return true;
}

/* Writes BIG bytes before reading anything, then reads BIG, then answers. */
static void big_exchange(struct srv *s, int fd, SSL *ssl)
{
    static unsigned char buf[65536];
    bool ok = true;
    if (ssl) /* the client's SSL_read must answer this while it is writing */
        ok = SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) == 1;
    while (ok && s->sent < BIG) {
        size_t len = BIG - s->sent < sizeof buf ? BIG - s->sent : sizeof buf;
        fill_pattern(buf, len, s->sent);
        ok = ssl ? ssl_write_all(ssl, buf, len) : send_all(fd, buf, len);
        s->sent += len;
    }
    bool data_ok = ok;
    while (ok && s->received < BIG) {
        size_t want = BIG - s->received < sizeof buf ? BIG - s->received : sizeof buf;
        long r = ssl ? SSL_read(ssl, buf, (int)want) : recv(fd, buf, want, 0);
        if (r <= 0) {
            ok = false;
            break;
        }
        data_ok = data_ok && check_pattern(buf, (size_t)r, s->received);
        s->received += (uint64_t)r;
    }
    s->data_ok = ok && data_ok;
    if (ok) {
        const char *done = "DONE\r\n";
        if (ssl)
            ssl_write_all(ssl, done, 6);
        else
            send_str(fd, done);
    }
}

static void script_big_plain(struct srv *s, int fd)
{
    big_exchange(s, fd, NULL);
    wait_client_close(fd);
}

static void script_big_tls(struct srv *s, int fd)
{
    SSL *ssl = srv_tls_accept(s, fd);
    if (!ssl)
        return;
    big_exchange(s, fd, ssl);
    ssl_wait_close(s, ssl);
    SSL_free(ssl);
}

/* Queue BIG bytes while taking BIG bytes in; output moves only through
 * net_fill until all input has arrived, then through net_flush. */
static void client_big(struct net *n)
{
    struct err e = {0};
    static unsigned char chunk[65536];
    uint64_t queued = 0, received = 0;
    int64_t give_up = clock_mono_ms() + 120000;
    net_wait_begin(n);
    while (received < BIG) {
        assert_true(clock_mono_ms() < give_up);
        while (queued < BIG && net_pending_out(n) + sizeof chunk <= NET_OUT_MAX) {
            fill_pattern(chunk, sizeof chunk, queued);
            assert_int_equal(net_queue(n, chunk, sizeof chunk, &e), 0);
            queued += sizeof chunk;
        }
        if (net_fill(n, &e) < 0)
            fail_msg("net_fill: %s", e.msg);
        size_t len;
        const char *d = net_data(n, &len);
        if (len > BIG - received)
            len = BIG - received;
        assert_true(check_pattern((const unsigned char *)d, len, received));
        net_consume(n, len);
        received += len;
    }
    /* the server has not read a byte yet, but its socket took what net_fill wrote */
    assert_true(net_bytes_out(n) > 0);
    assert_int_equal(net_bytes_out(n) + net_pending_out(n), queued);
    while (queued < BIG || net_pending_out(n) > 0) {
        assert_true(clock_mono_ms() < give_up);
        while (queued < BIG && net_pending_out(n) + sizeof chunk <= NET_OUT_MAX) {
            fill_pattern(chunk, sizeof chunk, queued);
            assert_int_equal(net_queue(n, chunk, sizeof chunk, &e), 0);
            queued += sizeof chunk;
        }
        if (net_flush(n, &e) < 0)
            fail_msg("net_flush: %s", e.msg);
    }
    net_wait_begin(n);
    expect_line(n, "DONE");
    assert_int_equal(net_bytes_out(n), BIG);
    assert_int_equal(net_bytes_in(n), BIG + 6);
}

static void deadlock_plain(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_big_plain, NULL);
    struct net_opts o = opts_for(&s);
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    client_big(n);
    net_close(&n);
    srv_join(&s);
    assert_true(s.data_ok);
    assert_int_equal(s.received, BIG);
}

static void deadlock_tls(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_big_tls, server_ctx(leaf, TLS1_3_VERSION, TLS1_3_VERSION));
    struct net_opts o = opts_for(&s);
    o.tls = true;
    o.ca_file = ca1_path;
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    if (!n)
        fail_msg("connect: %s", e.msg);
    client_big(n);
    net_close(&n);
    srv_join(&s);
    assert_true(s.data_ok);
    assert_int_equal(s.received, BIG);
    assert_true(s.close_notify);
}

/* ---- TLS ------------------------------------------------------------------- */

static void script_tls_hello(struct srv *s, int fd)
{
    SSL *ssl = srv_tls_accept(s, fd);
    if (!ssl)
        return;
    bool ok = ssl_write_all(ssl, "+OK tls\r\n", 9);
    char buf[64];
    int r = ok ? SSL_read(ssl, buf, sizeof buf - 1) : -1;
    if (r > 0) {
        buf[r] = '\0';
        snprintf(s->got, sizeof s->got, "%s", buf);
        s->data_ok = true;
    }
    ssl_wait_close(s, ssl);
    SSL_free(ssl);
}

/* Connect with TLS; on success exchange a line and close. */
static struct net *tls_client(struct srv *s, const char *host, const char *ca_file,
                              const char *fingerprint, struct err *e)
{
    struct net_opts o = opts_for(s);
    o.host = host;
    o.tls = true;
    o.ca_file = ca_file;
    o.fingerprint = fingerprint;
    return net_connect(&o, e);
}

static void tls_hello(struct net *n)
{
    struct err e = {0};
    expect_line(n, "+OK tls");
    assert_int_equal(net_queue(n, "QUIT\r\n", 6, &e), 0);
    assert_int_equal(net_flush(n, &e), 0);
}

/* A TLS client connected to a script_tls_hello server with the leaf
 * certificate (TLS versions min..max), verified against ca1, for host. */
static struct net *tls_connect_ok(struct srv *s, const char *host, int min, int max)
{
    srv_start(s, script_tls_hello, server_ctx(leaf, min, max));
    struct err e = {0};
    struct net *n = tls_client(s, host, ca1_path, NULL, &e);
    if (!n)
        fail_msg("connect: %s", e.msg);
    return n;
}

static void tls_verified_ip(void **state)
{
    (void)state;
    struct srv s;
    struct net *n = tls_connect_ok(&s, "127.0.0.1", TLS1_2_VERSION, TLS1_3_VERSION);
    assert_true(net_is_tls(n));
    const struct net_tls_info *ti = net_tls_info(n);
    assert_non_null(ti);
    assert_true(ti->verified);
    assert_string_equal(ti->verify, "chain");
    assert_string_equal(ti->version, "TLSv1.3");
    assert_true(strlen(ti->cipher) > 0);
    assert_string_equal(ti->peer, "CN=localhost,O=pop3bridge test");
    assert_string_equal(ti->fingerprint, leaf_fp);
    tls_hello(n);
    net_close(&n);
    srv_join(&s);
    assert_true(s.data_ok);
    assert_string_equal(s.got, "QUIT\r\n");
    assert_false(s.sni_seen); /* no SNI for an IP address */
    assert_true(s.close_notify);
}

/* write-type system calls of this process so far (/proc/self/io syscw) */
static long long write_calls(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    assert_non_null(f);
    char line[128];
    long long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "syscw: %lld", &v) == 1)
            break;
    fclose(f);
    assert_true(v >= 0);
    return v;
}

/* net_finish: the last command and the close_notify leave in one write,
 * and net_close writes nothing more (net_flush then net_close: two). */
static void tls_finish_one_write(void **state)
{
    (void)state;
    struct srv s;
    struct net *n = tls_connect_ok(&s, "127.0.0.1", TLS1_2_VERSION, TLS1_3_VERSION);
    struct err e = {0};
    expect_line(n, "+OK tls"); /* the server now only reads */
    long long w0 = write_calls();
    assert_int_equal(net_queue(n, "QUIT\r\n", 6, &e), 0);
    assert_int_equal(net_finish(n, &e), 0);
    long long w1 = write_calls();
    net_close(&n);
    long long w2 = write_calls();
    srv_join(&s);
    assert_true(s.data_ok);
    assert_string_equal(s.got, "QUIT\r\n");
    assert_true(s.close_notify);
    assert_int_equal(w1 - w0, 1);
    assert_int_equal(w2 - w1, 0);
}

static void tls_verified_name_tls12(void **state)
{
    (void)state;
    struct srv s;
    struct net *n = tls_connect_ok(&s, "localhost", TLS1_2_VERSION, TLS1_2_VERSION);
    assert_string_equal(net_tls_info(n)->version, "TLSv1.2");
    assert_true(net_tls_info(n)->verified);
    tls_hello(n);
    net_close(&n);
    srv_join(&s);
    assert_true(s.sni_seen);
    assert_string_equal(s.sni, "localhost");
}

static void script_tls_any(struct srv *s, int fd)
{
    SSL *ssl = srv_tls_accept(s, fd);
    if (ssl) {
        s->data_ok = true;
        ssl_wait_close(s, ssl);
        SSL_free(ssl);
    }
}

static void tls_fail(X509 *cert, int minv, int maxv, const char *host, const char *ca,
                     const char *fp, enum err_kind kind, const char *want)
{
    struct srv s;
    srv_start(&s, fp && kind == ERR_NONE ? script_tls_hello : script_tls_any,
              server_ctx(cert, minv, maxv));
    struct err e = {0};
    struct net *n = tls_client(&s, host, ca, fp, &e);
    if (kind == ERR_NONE) {
        if (!n)
            fail_msg("connect: %s", e.msg);
        tls_hello(n);
        net_close(&n);
    } else {
        assert_null(n);
        assert_int_equal(e.kind, kind);
        if (!strstr(e.msg, want))
            fail_msg("\"%s\" not in \"%s\"", want, e.msg);
    }
    srv_join(&s);
}

static void tls_unknown_ca(void **state)
{
    (void)state;
    tls_fail(leaf, TLS1_2_VERSION, TLS1_3_VERSION, "127.0.0.1", ca2_path, NULL, ERR_TLS,
             "certificate verify failed: unable to get local issuer certificate "
             "(host 127.0.0.1)");
    /* the system store does not know the test CA either */
    tls_fail(leaf, TLS1_2_VERSION, TLS1_3_VERSION, "localhost", NULL, NULL, ERR_TLS,
             "certificate verify failed");
}

/* ---- TLS session resumption ------------------------------------------------ */

/* One server context for every server below (its ticket keys with it), so
 * the server itself would accept any session it issued: only the client's
 * keying decides what is resumed. */
static SSL_CTX *resume_srv_ctx;

static SSL_CTX *shared_srv_ctx(void)
{
    assert_int_equal(SSL_CTX_up_ref(resume_srv_ctx), 1); /* srv_join frees one reference */
    return resume_srv_ctx;
}

/* One TLS connection to a fresh server; whether it resumed (-1: failed). */
static int resume_try(const char *host, const char *ca, const char *fp, const char *tag,
                      unsigned *port_out)
{
    struct srv s;
    srv_start(&s, script_tls_hello, shared_srv_ctx());
    struct net_opts o = opts_for(&s);
    o.host = host;
    o.tls = true;
    o.ca_file = ca;
    o.fingerprint = fp;
    o.session_tag = tag;
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    int r = -1;
    if (n) {
        const struct net_tls_info *ti = net_tls_info(n);
        assert_true(ti->verified);
        assert_string_equal(ti->fingerprint, leaf_fp); /* the same peer, resumed or not */
        assert_string_equal(ti->verify, fp ? "fingerprint" : "chain");
        r = ti->resumed;
        tls_hello(n); /* reads the line: the server's tickets come before it */
        net_close(&n);
    }
    srv_join(&s);
    if (port_out)
        *port_out = s.port;
    return r;
}

static void tls_resume_keying(void **state)
{
    (void)state;
    net_tls_cache_clear();
    resume_srv_ctx = server_ctx(leaf, TLS1_2_VERSION, TLS1_3_VERSION);
    /* no tag: full handshakes, nothing kept */
    assert_int_equal(resume_try("127.0.0.1", ca1_path, NULL, NULL, NULL), 0);
    assert_int_equal(resume_try("127.0.0.1", ca1_path, NULL, NULL, NULL), 0);
    assert_int_equal(net_tls_cache_stats().sessions, 0);
    assert_int_equal(net_tls_cache_stats().contexts, 1); /* the context is shared all the same */

    /* every server below listens on its own port, so a session kept for one
     * port is never offered to the next: full handshakes */
    assert_int_equal(resume_try("127.0.0.1", ca1_path, NULL, "alice", NULL), 0);
    assert_true(net_tls_cache_stats().stored >= 1);
    assert_int_equal(resume_try("127.0.0.1", ca1_path, NULL, "alice", NULL), 0);
    assert_int_equal(net_tls_cache_stats().offered, 0);
    net_tls_cache_clear();
    SSL_CTX_free(resume_srv_ctx);
}

/* The same port again: a listener kept across connections. */
struct multi {
    int lfd;
    unsigned port;
    pthread_t th;
    SSL_CTX *ctx;
    int conns;
};

static void *multi_main(void *arg)
{
    struct multi *m = arg;
    for (int i = 0; i < m->conns; i++) {
        struct srv s;
        memset(&s, 0, sizeof s);
        s.ctx = m->ctx;
        struct pollfd p = {.fd = m->lfd, .events = POLLIN};
        if (poll(&p, 1, ACCEPT_TIMEOUT_MS) != 1)
            break;
        int fd = accept(m->lfd, NULL, NULL);
        if (fd < 0)
            break;
        struct timeval tv = {.tv_sec = SRV_IO_TIMEOUT_S};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        SSL *ssl = srv_tls_accept(&s, fd);
        if (ssl) {
            /* the client may end at once (a failed check): no hello then */
            if (ssl_write_all(ssl, "+OK tls\r\n", 9)) {
                char buf[64];
                (void)SSL_read(ssl, buf, sizeof buf);
            }
            SSL_free(ssl);
        }
        ERR_clear_error();
        close(fd);
    }
    return NULL;
}

static int multi_try(struct multi *m, const char *host, const char *ca, const char *fp,
                     const char *tag, struct err *e)
{
    struct net_opts o = {.host = host, .port = m->port, .timeout_ms = 10000, .tls = true,
                         .ca_file = ca, .fingerprint = fp, .session_tag = tag};
    struct net *n = net_connect(&o, e);
    if (!n)
        return -1;
    int r = net_tls_info(n)->resumed;
    assert_string_equal(net_tls_info(n)->fingerprint, leaf_fp);
    /* printed at the first connection, known by the fingerprint after */
    assert_string_equal(net_tls_info(n)->peer, "CN=localhost,O=pop3bridge test");
    assert_true(net_tls_info(n)->issuer[0] != '\0');
    assert_true(net_tls_info(n)->not_after > 0);
    tls_hello(n);
    net_close(&n);
    return r;
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, k, out), k);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static void tls_resume_same_server(int version)
{
    net_tls_cache_clear();
    struct multi m = {.conns = 15};
    m.ctx = server_ctx(leaf, version, version);
    SSL_CTX_set_timeout(m.ctx, 2); /* the sessions' (and tickets') lifetime, s */
    m.lfd = listen_local(&m.port, 16);
    assert_int_equal(pthread_create(&m.th, NULL, multi_main, &m), 0);
    struct err e = {0};
    char ca_copy[160];
    snprintf(ca_copy, sizeof ca_copy, "%s/ca1-copy.pem", pki_dir);
    copy_file(ca1_path, ca_copy);

    /* 1: full; 2: resumed, the same verified peer; 3: resumed again */
    assert_int_equal(multi_try(&m, "127.0.0.1", ca1_path, NULL, "alice", &e), 0);
    assert_int_equal(multi_try(&m, "127.0.0.1", ca1_path, NULL, "alice", &e), 1);
    assert_int_equal(multi_try(&m, "127.0.0.1", ca1_path, NULL, "alice", &e), 1);
    /* 4: another tag (account) has no session of its own yet */
    assert_int_equal(multi_try(&m, "127.0.0.1", ca1_path, NULL, "bob", &e), 0);
    /* 5: another host name for the same server (and SNI) */
    assert_int_equal(multi_try(&m, "localhost", ca1_path, NULL, "alice", &e), 0);
    /* 6: the same trust anchors in another file */
    assert_int_equal(multi_try(&m, "127.0.0.1", ca_copy, NULL, "alice", &e), 0);
    /* 7: a pin instead of the chain */
    assert_int_equal(multi_try(&m, "127.0.0.1", NULL, leaf_fp, "alice", &e), 0);
    /* 8: a failed check keeps nothing: the wrong CA for "carol" */
    unsigned long stored = net_tls_cache_stats().stored;
    assert_int_equal(multi_try(&m, "127.0.0.1", ca2_path, NULL, "carol", &e), -1);
    assert_int_equal(e.kind, ERR_TLS);
    assert_int_equal(net_tls_cache_stats().stored, stored);
    /* 9: the CA file changed (rewritten, new modification time): full */
    struct timespec later[2] = {{.tv_nsec = UTIME_NOW}, {.tv_sec = time(NULL) + 10}};
    assert_int_equal(utimensat(AT_FDCWD, ca_copy, later, 0), 0);
    assert_int_equal(multi_try(&m, "127.0.0.1", ca_copy, NULL, "alice", &e), 0);
    /* 10: and resumed under its new identity */
    assert_int_equal(multi_try(&m, "127.0.0.1", ca_copy, NULL, "alice", &e), 1);
    /* 11: "alice" with ca1 still has its own session (unless more than its 2 s
     * lifetime went by on a slow machine since it was kept); then surely one */
    int r11 = multi_try(&m, "127.0.0.1", ca1_path, NULL, "alice", &e);
    assert_true(r11 == 0 || r11 == 1);
    assert_int_equal(multi_try(&m, "127.0.0.1", ca1_path, NULL, "alice", &e), 1);
    /* 12: expired (2 s lifetime, the ticket's hint): not offered, full handshake */
    usleep(3100 * 1000);
    unsigned long expired = net_tls_cache_stats().expired;
    assert_int_equal(multi_try(&m, "127.0.0.1", ca1_path, NULL, "alice", &e), 0);
    assert_int_equal(net_tls_cache_stats().expired, expired + 1);
    assert_int_equal(multi_try(&m, "127.0.0.1", ca1_path, NULL, "alice", &e), 1);
    struct net_tls_cache_stats st = net_tls_cache_stats();
    assert_int_equal(st.resumed, 5 + r11);
    assert_int_equal(st.offered, st.resumed); /* the server took every session offered */
    /* one leaf certificate: its details printed once (net_tls_cache_clear
     * above), then taken from the cache at every later connection */
    assert_true(st.cert_reused >= 10);
    assert_true(st.sessions <= NET_SESSION_CACHE_MAX);
    /* 13: no tag, no resumption */
    assert_int_equal(multi_try(&m, "127.0.0.1", ca1_path, NULL, NULL, &e), 0);
    pthread_join(m.th, NULL);
    close(m.lfd);
    SSL_CTX_free(m.ctx);
    unlink(ca_copy);
    net_tls_cache_clear();
    assert_int_equal(net_tls_cache_stats().sessions, 0);
}

static void tls_resume_tls13(void **state)
{
    (void)state;
    tls_resume_same_server(TLS1_3_VERSION);
}

static void tls_resume_tls12(void **state)
{
    (void)state;
    tls_resume_same_server(TLS1_2_VERSION);
}

static void tls_name_mismatch(void **state)
{
    (void)state;
    tls_fail(wrong_leaf, TLS1_2_VERSION, TLS1_3_VERSION, "localhost", ca1_path, NULL, ERR_TLS,
             "certificate verify failed: hostname mismatch (host localhost)");
    tls_fail(wrong_leaf, TLS1_2_VERSION, TLS1_3_VERSION, "127.0.0.1", ca1_path, NULL, ERR_TLS,
             "certificate verify failed: IP address mismatch (host 127.0.0.1)");
}

static void tls_fingerprint(void **state)
{
    (void)state;
    /* the pin replaces chain and name checks: an unknown CA and a wrong name pass */
    struct srv s;
    srv_start(&s, script_tls_hello, server_ctx(wrong_leaf, TLS1_2_VERSION, TLS1_3_VERSION));
    struct err e = {0};
    /* upper case, with ':' separators */
    char fp[128];
    int o = snprintf(fp, sizeof fp, "SHA256:");
    for (int i = 0; i < 32; i++)
        o += snprintf(fp + o, sizeof fp - (size_t)o, "%s%c%c", i ? ":" : "",
                      wrong_fp[7 + 2 * i] >= 'a' ? wrong_fp[7 + 2 * i] - 32 : wrong_fp[7 + 2 * i],
                      wrong_fp[8 + 2 * i] >= 'a' ? wrong_fp[8 + 2 * i] - 32 : wrong_fp[8 + 2 * i]);
    struct net *n = tls_client(&s, "localhost", ca2_path, fp, &e);
    if (!n)
        fail_msg("connect: %s", e.msg);
    const struct net_tls_info *ti = net_tls_info(n);
    assert_true(ti->verified);
    assert_string_equal(ti->verify, "fingerprint");
    assert_string_equal(ti->fingerprint, wrong_fp);
    tls_hello(n);
    net_close(&n);
    srv_join(&s);
    assert_true(s.data_ok);

    /* plain lower-case form against the right leaf */
    tls_fail(leaf, TLS1_2_VERSION, TLS1_3_VERSION, "127.0.0.1", ca2_path, leaf_fp, ERR_NONE,
             NULL);
    /* mismatch: names what was seen */
    char want[160];
    snprintf(want, sizeof want, "certificate fingerprint mismatch: got %s (host 127.0.0.1)",
             leaf_fp);
    tls_fail(leaf, TLS1_2_VERSION, TLS1_3_VERSION, "127.0.0.1", ca1_path, wrong_fp, ERR_TLS,
             want);
}

static void fingerprint_syntax(void **state)
{
    (void)state;
    const char *hex = leaf_fp + 7; /* 64 lower-case hex digits */
    char c[13][200];
    int k = 0;
    snprintf(c[k++], sizeof c[0], "%s", "");
    snprintf(c[k++], sizeof c[0], "%s", "sha256");
    snprintf(c[k++], sizeof c[0], "%s", "sha256:");
    snprintf(c[k++], sizeof c[0], "sha1:%.40s", hex);
    snprintf(c[k++], sizeof c[0], "%s", hex);                /* no prefix */
    snprintf(c[k++], sizeof c[0], "sha256:%.63s", hex);      /* too short */
    snprintf(c[k++], sizeof c[0], "sha256:%sa", hex);        /* too long */
    snprintf(c[k++], sizeof c[0], "sha256:%.63sg", hex);     /* not hex */
    snprintf(c[k++], sizeof c[0], "sha512:%s", hex);
    snprintf(c[k++], sizeof c[0], " sha256:%s", hex);
    snprintf(c[k++], sizeof c[0], "sha256::%.63s", hex + 1); /* leading ':' */
    /* separators not between every pair: one doubled, one trailing */
    int o = snprintf(c[k], sizeof c[0], "sha256:");
    for (int i = 0; i < 32; i++)
        o += snprintf(c[k] + o, sizeof c[0] - (size_t)o, "%s%.2s", i == 5 ? "::" : i ? ":" : "",
                      hex + 2 * i);
    k++;
    o = snprintf(c[k], sizeof c[0], "sha256:");
    for (int i = 0; i < 32; i++)
        o += snprintf(c[k] + o, sizeof c[0] - (size_t)o, "%.2s:", hex + 2 * i);
    k++;
    assert_int_equal(k, 13);
    for (int i = 0; i < k; i++) {
        struct net_opts opt = {.host = "127.0.0.1", .port = 1, .tls = true, .fingerprint = c[i]};
        struct err e = {0};
        struct net *n = net_connect(&opt, &e);
        if (n || e.kind != ERR_USAGE)
            fail_msg("fingerprint \"%s\" accepted (%s)", c[i], e.msg);
        assert_non_null(strstr(e.msg, "fingerprint"));
    }
}

static void tls_old_protocol(void **state)
{
    (void)state;
    tls_fail(leaf, TLS1_1_VERSION, TLS1_1_VERSION, "127.0.0.1", ca1_path, NULL, ERR_TLS,
             "protocol");
}

/* ---- STARTTLS ------------------------------------------------------------ */

static void script_stls(struct srv *s, int fd)
{
    char line[64];
    if (!send_str(fd, "+OK ready\r\n") || !recv_line(fd, line, sizeof line))
        return;
    if (strcmp(line, "STLS\r\n") != 0 || !send_str(fd, "+OK begin TLS\r\n"))
        return;
    SSL *ssl = srv_tls_accept(s, fd);
    if (!ssl)
        return;
    s->data_ok = ssl_write_all(ssl, "+OK tls\r\n", 9);
    ssl_wait_close(s, ssl);
    SSL_free(ssl);
}

static void starttls(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_stls, server_ctx(leaf, TLS1_2_VERSION, TLS1_3_VERSION));
    struct net_opts o = opts_for(&s);
    o.ca_file = ca1_path;
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    expect_line(n, "+OK ready");
    assert_false(net_is_tls(n));
    assert_int_equal(net_queue(n, "STLS\r\n", 6, &e), 0);
    assert_int_equal(net_flush(n, &e), 0);
    expect_line(n, "+OK begin TLS");
    if (net_start_tls(n, &e) < 0)
        fail_msg("start_tls: %s", e.msg);
    assert_true(net_is_tls(n));
    assert_string_equal(net_tls_info(n)->verify, "chain");
    expect_line(n, "+OK tls");
    assert_int_equal(net_start_tls(n, &e), -1); /* once only */
    assert_int_equal(e.kind, ERR_USAGE);
    net_close(&n);
    srv_join(&s);
    assert_true(s.data_ok);
    assert_true(s.close_notify);
}

static void script_stls_inject(struct srv *s, int fd)
{
    char line[64];
    if (!send_str(fd, "+OK ready\r\n") || !recv_line(fd, line, sizeof line))
        return;
    s->data_ok = send_str(fd, "+OK begin TLS\r\n+OK injected\r\n");
    wait_client_close(fd);
}

static void starttls_injection(void **state)
{
    (void)state;
    struct srv s;
    srv_start(&s, script_stls_inject, NULL);
    struct net_opts o = opts_for(&s);
    struct err e = {0};
    struct net *n = net_connect(&o, &e);
    assert_non_null(n);
    expect_line(n, "+OK ready");
    assert_int_equal(net_queue(n, "STLS\r\n", 6, &e), 0);
    assert_int_equal(net_flush(n, &e), 0);
    expect_line(n, "+OK begin TLS");
    size_t avail;
    net_data(n, &avail);
    if (avail == 0) /* the second line came in a later segment */
        assert_true(net_fill(n, &e) > 0);
    assert_int_equal(net_start_tls(n, &e), -1);
    assert_int_equal(e.kind, ERR_PROTO);
    assert_non_null(strstr(e.msg, "data before TLS handshake"));
    assert_false(net_is_tls(n));
    net_close(&n);
    srv_join(&s);
    assert_true(s.data_ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_lines),
        cmocka_unit_test(eof_at_line_boundary),
        cmocka_unit_test(refused),
        cmocka_unit_test(bad_options),
        cmocka_unit_test(connect_timeout),
        cmocka_unit_test(wait_timeout),
        cmocka_unit_test(drip_timeout),
        cmocka_unit_test(session_deadline),
        cmocka_unit_test(line_limits),
        cmocka_unit_test(unterminated_flood),
        cmocka_unit_test(queue_limit),
        cmocka_unit_test(deadlock_plain),
        cmocka_unit_test(deadlock_tls),
        cmocka_unit_test(tls_verified_ip),
        cmocka_unit_test(tls_finish_one_write),
        cmocka_unit_test(tls_verified_name_tls12),
        cmocka_unit_test(tls_unknown_ca),
        cmocka_unit_test(tls_name_mismatch),
        cmocka_unit_test(tls_resume_keying),
        cmocka_unit_test(tls_resume_tls13),
        cmocka_unit_test(tls_resume_tls12),
        cmocka_unit_test(tls_fingerprint),
        cmocka_unit_test(fingerprint_syntax),
        cmocka_unit_test(tls_old_protocol),
        cmocka_unit_test(starttls),
        cmocka_unit_test(starttls_injection),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
