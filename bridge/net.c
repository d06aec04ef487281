/* net — one buffered client connection, plain TCP or TLS; see include/net.h. */
#include "net.h"

#include "clock.h"
#include "codec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define NET_DEFAULT_TIMEOUT_MS 30000
#define NET_HOST_MAX 253            /* longest DNS name (RFC 1035) */
#define NET_HOSTPORT_MAX (NET_HOST_MAX + 10)
#define NET_PIN_LEN 32              /* SHA-256 */
#define NET_OUT_MIN_ALLOC (16 * 1024)
#define NET_OUT_KEEP (256 * 1024)   /* larger empty queues are given back */
#define NET_TLS_READ_BUF (64 * 1024) /* OpenSSL read-ahead buffer */
#define NET_TLS_SHORT_READ (NET_TLS_READ_BUF / 2) /* less taken from the socket at once: drained */
#define NET_SESS_KEY_LEN 32         /* SHA-256 naming a session cache slot */

struct net {
    int fd;
    char host[NET_HOST_MAX + 1];
    char hostport[NET_HOSTPORT_MAX]; /* "host:port" or "[v6]:port", for messages */
    bool host_is_ip;
    int timeout_ms;
    int64_t session_deadline;
    int cancel_fd;    /* > 0: readable means give up (net_opts.cancel_fd) */
    bool cancelled;   /* it was: the session is over */

    /* TLS */
    SSL_CTX *ctx;
    SSL *ssl;
    bool tls_up;      /* handshake done and checked */
    bool tls_broken;  /* fatal TLS error: no close_notify */
    bool shut_sent;   /* close_notify sent by net_finish: net_close sends none */
    bool read_wants_write;
    bool write_wants_read;
    bool awaiting;   /* a request went out and nothing came back since: wait before reading */
    bool has_pin;
    unsigned char pin[NET_PIN_LEN];
    struct net_tls_info info;
    char *ca_file;    /* copy of opts.ca_file, or NULL (system store) */
    char *session_tag; /* copy of opts.session_tag, or NULL */
    unsigned port;
    bool resume;      /* opts.session_tag given: sessions are kept and offered */
    unsigned char sess_key[NET_SESS_KEY_LEN]; /* host, port, SNI, CA identity, pin, tag */
    SSL_SESSION *pending; /* a session handed out before the peer was checked */

    /* input: data is in[in_start, in_end) */
    char *in;
    size_t in_start, in_end;
    size_t scanned; /* bytes from in_start known to hold no '\n' */
    bool eof;

    /* output queue: data is out[out_start, out_end) */
    char *out;
    size_t out_start, out_end, out_cap;

    /* wait deadline (see net_wait_begin) */
    int64_t deadline;
    uint64_t wait_base_in;     /* bytes_in at net_wait_begin */
    uint64_t progress_base_in; /* bytes_in when the deadline was last pushed */

    uint64_t bytes_in, bytes_out;
};

/* ---- small helpers ------------------------------------------------------ */

/* "30 s" or "300 ms" */
static const char *fmt_ms(int ms, char *buf, size_t size)
{
    int r = (ms % 1000 == 0) ? snprintf(buf, size, "%d s", ms / 1000)
                             : snprintf(buf, size, "%d ms", ms);
    if (r < 0 || (size_t)r >= size)
        snprintf(buf, size, "?");
    return buf;
}

/* The earlier of a wait deadline and the session deadline. */
static int64_t cap_session(const struct net *n, int64_t deadline)
{
    if (n->session_deadline > 0 && n->session_deadline < deadline)
        return n->session_deadline;
    return deadline;
}

static bool session_over(const struct net *n, int64_t now)
{
    return n->session_deadline > 0 && now >= n->session_deadline;
}

static int session_error(const struct net *n, struct err *e)
{
    if (n->cancelled)
        return err_set(e, ERR_TIMEOUT, "session cancelled (%s)", n->hostport);
    return err_set(e, ERR_TIMEOUT, "session time limit reached (%s)", n->hostport);
}

/* The most specific OpenSSL reason in the thread's error queue, then clear it. */
static void ssl_reason(char *buf, size_t size)
{
    unsigned long code = ERR_peek_error();
    if (code == 0) {
        snprintf(buf, size, "unknown error");
    } else {
        const char *r = ERR_reason_error_string(code);
        if (r)
            snprintf(buf, size, "%s", r);
        else
            ERR_error_string_n(code, buf, size);
    }
    ERR_clear_error();
}

/* Wait for events on the socket until `deadline` (absolute ms).  Returns 1
 * when the socket is ready (or has an error/hangup to report), 0 when the
 * deadline passed, -1 with e set on a poll failure. */
static int wait_fd(struct net *n, short events, int64_t deadline, struct err *e)
{
    for (;;) {
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p[2] = {{.fd = n->fd, .events = events},
                              {.fd = n->cancel_fd, .events = POLLIN}};
        int r = poll(p, n->cancel_fd > 0 ? 2 : 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0 && n->cancel_fd > 0 && p[1].revents) {
            n->cancelled = true;   /* the session is over: every wait ends at once */
            n->session_deadline = 1;
            return 0;
        }
        if (r > 0)
            return 1;
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return err_set(e, ERR_INTERNAL, "poll on connection to %s: %s", n->hostport,
                           strerror(errno));
    }
}

/* ---- fingerprint ---------------------------------------------------------- */

/* "sha256:" + 64 hex digits, either contiguous or as 32 pairs separated by
 * single ':'; case-insensitive. */
static int parse_fingerprint(const char *s, unsigned char pin[NET_PIN_LEN], struct err *e)
{
    static const char prefix[] = "sha256:";
    char shown[96];
    err_sanitize(shown, sizeof shown, s, strlen(s));
    if (strncasecmp(s, prefix, sizeof prefix - 1) != 0)
        return err_set(e, ERR_USAGE, "bad fingerprint \"%s\": must start with sha256:", shown);
    if (codec_pin_parse(s, pin) < 0)
        return err_set(e, ERR_USAGE,
                       "bad fingerprint \"%s\": expected sha256: and 64 hex digits "
                       "(optionally in ':'-separated pairs)",
                       shown);
    return 0;
}

static void format_fingerprint(const unsigned char *md, char *buf, size_t size)
{
    char hex[2 * NET_PIN_LEN + 1];
    codec_hex_encode(md, NET_PIN_LEN, hex);
    snprintf(buf, size, "sha256:%s", hex);
}

/* ---- connect ---------------------------------------------------------------- */

static int connect_one(struct net *n, const struct addrinfo *ai, int64_t deadline,
                       int *err_no, bool *timed_out, struct err *e)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0) {
        *err_no = errno;
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        n->fd = fd;
        return 0;
    }
    if (errno != EINPROGRESS) {
        *err_no = errno;
        close(fd);
        return -1;
    }
    n->fd = fd;
    int r = wait_fd(n, POLLOUT, deadline, e);
    n->fd = -1;
    if (r <= 0) {
        close(fd);
        if (r == 0)
            *timed_out = true;
        return r < 0 ? -2 : -1;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
        soerr = errno;
    if (soerr != 0) {
        *err_no = soerr;
        close(fd);
        return -1;
    }
    n->fd = fd;
    return 0;
}

static int tcp_connect(struct net *n, unsigned port, struct err *e)
{
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(n->host, portstr, &hints, &res);
    if (g != 0)
        return err_set(e, ERR_CONN, "cannot resolve %s: %s", n->host,
                       g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));

    int64_t start = clock_mono_ms();
    int64_t deadline = cap_session(n, start + n->timeout_ms);
    int last_errno = 0, tried = 0;
    bool timed_out = false;
    int rc = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (clock_mono_ms() >= deadline) {
            timed_out = true;
            break;
        }
        tried++;
        int r = connect_one(n, ai, deadline, &last_errno, &timed_out, e);
        if (r == 0) {
            rc = 0;
            break;
        }
        if (r == -2) {
            freeaddrinfo(res);
            return -1;
        }
        if (timed_out)
            break;
    }
    freeaddrinfo(res);
    if (rc == 0) {
        int one = 1;
        (void)setsockopt(n->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return 0;
    }
    if (timed_out) {
        char t[32];
        if (session_over(n, clock_mono_ms()))
            return err_set(e, ERR_TIMEOUT, "connect to %s: session time limit reached",
                           n->hostport);
        return err_set(e, ERR_TIMEOUT, "connect to %s: timed out after %s", n->hostport,
                       fmt_ms(n->timeout_ms, t, sizeof t));
    }
    if (tried > 1)
        return err_set(e, ERR_CONN, "connect to %s: %s (tried %d addresses)", n->hostport,
                       strerror(last_errno), tried);
    return err_set(e, ERR_CONN, "connect to %s: %s", n->hostport, strerror(last_errno));
}

/* ---- TLS -------------------------------------------------------------------- */

static int verify_accept_all(int ok, X509_STORE_CTX *store)
{
    (void)ok;
    (void)store;
    return 1; /* the pin is checked after the handshake */
}

/* ---- shared TLS contexts and kept sessions -------------------------------- */

struct ctx_ent {
    char *ca_file;        /* NULL: the system store */
    bool pin;
    struct stat st;       /* the CA file's identity when loaded */
    SSL_CTX *ctx;         /* one reference held by the cache */
    uint64_t used;
};

/* A leaf certificate's printed details, by its SHA-256: a server shows the
 * same certificate at every poll (a resumed session carries it too), so its
 * names and expiry are printed once, not at each connection. */
struct cert_ent {
    unsigned char md[NET_PIN_LEN];
    char peer[sizeof ((struct net_tls_info *)0)->peer];
    char issuer[sizeof ((struct net_tls_info *)0)->issuer];
    int64_t not_after;
    uint64_t used;
};

struct sess_ent {
    unsigned char key[NET_SESS_KEY_LEN];
    SSL_SESSION *sess;    /* one reference held by the cache */
    uint64_t used;
};

static pthread_mutex_t g_tls_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ctx_ent g_ctx[NET_CTX_CACHE_MAX];
static size_t g_ctx_n;
static struct sess_ent *g_sess; /* NET_SESSION_CACHE_MAX, allocated on first use */
static size_t g_sess_n;
static uint64_t g_tls_tick;
static struct net_tls_cache_stats g_tls_stats;
static struct cert_ent g_cert[NET_CERT_CACHE_MAX];
static size_t g_cert_n;

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static bool same_ca(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* A kept context for (ca_file with identity st, pin), with a reference for
 * the caller; NULL if none. */
static SSL_CTX *ctx_get(const char *ca_file, const struct stat *st, bool pin)
{
    SSL_CTX *ctx = NULL;
    pthread_mutex_lock(&g_tls_lock);
    for (size_t i = 0; i < g_ctx_n; i++) {
        struct ctx_ent *c = &g_ctx[i];
        if (c->pin == pin && same_ca(c->ca_file, ca_file) && (!ca_file || same_file(&c->st, st))) {
            if (SSL_CTX_up_ref(c->ctx)) {
                ctx = c->ctx;
                c->used = ++g_tls_tick;
            }
            break;
        }
    }
    pthread_mutex_unlock(&g_tls_lock);
    return ctx;
}

static void ctx_ent_drop(struct ctx_ent *c)
{
    SSL_CTX_free(c->ctx);
    free(c->ca_file);
    memset(c, 0, sizeof *c);
}

/* Keep ctx (a new reference is taken) for (ca_file, st, pin), replacing the
 * entry of an older version of the same file. */
static void ctx_put(const char *ca_file, const struct stat *st, bool pin, SSL_CTX *ctx)
{
    char *copy = ca_file ? strdup(ca_file) : NULL;
    if ((ca_file && !copy) || !SSL_CTX_up_ref(ctx)) {
        free(copy);
        return;
    }
    pthread_mutex_lock(&g_tls_lock);
    struct ctx_ent *slot = NULL;
    for (size_t i = 0; i < g_ctx_n && !slot; i++)
        if (g_ctx[i].pin == pin && same_ca(g_ctx[i].ca_file, ca_file))
            slot = &g_ctx[i];
    if (!slot && g_ctx_n < NET_CTX_CACHE_MAX)
        slot = &g_ctx[g_ctx_n++];
    if (!slot) {
        slot = &g_ctx[0];
        for (size_t i = 1; i < g_ctx_n; i++)
            if (g_ctx[i].used < slot->used)
                slot = &g_ctx[i];
    }
    if (slot->ctx)
        ctx_ent_drop(slot);
    slot->ca_file = copy;
    slot->pin = pin;
    if (st)
        slot->st = *st;
    slot->ctx = ctx;
    slot->used = ++g_tls_tick;
    pthread_mutex_unlock(&g_tls_lock);
}

static void sess_ent_drop(struct sess_ent *s)
{
    SSL_SESSION_free(s->sess);
    *s = g_sess[--g_sess_n]; /* the last one fills the hole */
    memset(&g_sess[g_sess_n], 0, sizeof g_sess[g_sess_n]);
}

/* Whether a session may still be offered. */
static bool sess_fresh(const SSL_SESSION *sess)
{
    long age = (long)time(NULL) - SSL_SESSION_get_time(sess);
    long life = SSL_SESSION_get_timeout(sess);
    unsigned long hint = SSL_SESSION_get_ticket_lifetime_hint(sess); /* 0: none given */
    if (hint > 0 && hint < (unsigned long)life)
        life = (long)hint;
    if (life > NET_SESSION_MAX_AGE_S)
        life = NET_SESSION_MAX_AGE_S;
    return SSL_SESSION_is_resumable(sess) && age >= 0 && age < life;
}

/* Take the session kept under key (the caller owns the reference); NULL if none. */
static SSL_SESSION *sess_take(const unsigned char key[NET_SESS_KEY_LEN])
{
    SSL_SESSION *sess = NULL;
    pthread_mutex_lock(&g_tls_lock);
    for (size_t i = 0; i < g_sess_n; i++) {
        if (memcmp(g_sess[i].key, key, NET_SESS_KEY_LEN) != 0)
            continue;
        if (sess_fresh(g_sess[i].sess)) {
            sess = g_sess[i].sess;
            g_sess[i].sess = NULL;
        } else {
            g_tls_stats.expired++;
        }
        sess_ent_drop(&g_sess[i]);
        break;
    }
    pthread_mutex_unlock(&g_tls_lock);
    return sess;
}

/* Keep sess under key (takes the caller's reference). */
static void sess_put(const unsigned char key[NET_SESS_KEY_LEN], SSL_SESSION *sess)
{
    if (!sess_fresh(sess)) {
        SSL_SESSION_free(sess);
        return;
    }
    pthread_mutex_lock(&g_tls_lock);
    if (!g_sess)
        g_sess = calloc(NET_SESSION_CACHE_MAX, sizeof *g_sess);
    if (!g_sess) {
        pthread_mutex_unlock(&g_tls_lock);
        SSL_SESSION_free(sess);
        return;
    }
    struct sess_ent *slot = NULL;
    for (size_t i = 0; i < g_sess_n && !slot; i++)
        if (memcmp(g_sess[i].key, key, NET_SESS_KEY_LEN) == 0)
            slot = &g_sess[i];
    if (slot) {
        SSL_SESSION_free(slot->sess); /* the newer ticket replaces the older */
    } else if (g_sess_n < NET_SESSION_CACHE_MAX) {
        slot = &g_sess[g_sess_n++];
    } else {
        slot = &g_sess[0];
        for (size_t i = 1; i < g_sess_n; i++)
            if (g_sess[i].used < slot->used)
                slot = &g_sess[i];
        SSL_SESSION_free(slot->sess);
        g_tls_stats.evicted++;
    }
    memcpy(slot->key, key, NET_SESS_KEY_LEN);
    slot->sess = sess;
    slot->used = ++g_tls_tick;
    g_tls_stats.stored++;
    pthread_mutex_unlock(&g_tls_lock);
}

struct net_tls_cache_stats net_tls_cache_stats(void)
{
    pthread_mutex_lock(&g_tls_lock);
    struct net_tls_cache_stats st = g_tls_stats;
    st.sessions = g_sess_n;
    st.contexts = g_ctx_n;
    pthread_mutex_unlock(&g_tls_lock);
    return st;
}

void net_tls_cache_clear(void)
{
    pthread_mutex_lock(&g_tls_lock);
    while (g_sess_n > 0)
        sess_ent_drop(&g_sess[g_sess_n - 1]);
    free(g_sess);
    g_sess = NULL;
    for (size_t i = 0; i < g_ctx_n; i++)
        ctx_ent_drop(&g_ctx[i]);
    g_ctx_n = 0;
    memset(g_cert, 0, sizeof g_cert);
    g_cert_n = 0;
    memset(&g_tls_stats, 0, sizeof g_tls_stats);
    pthread_mutex_unlock(&g_tls_lock);
}

/* OpenSSL hands out a session (a TLS 1.3 ticket may come after the
 * handshake).  Kept only once the peer's certificate checks passed. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct net *n = SSL_get_app_data(ssl);
    if (!n || !n->resume || n->tls_broken)
        return 0; /* OpenSSL frees it */
    if (!n->tls_up) {
        SSL_SESSION_free(n->pending);
        n->pending = sess;
    } else {
        sess_put(n->sess_key, sess);
    }
    return 1; /* the reference is ours */
}

/* SHA-256 over the parts, each followed by a NUL. */
static bool sess_key(unsigned char out[NET_SESS_KEY_LEN], const char *const *parts, size_t count)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (size_t i = 0; ok && i < count; i++)
        ok = EVP_DigestUpdate(md, parts[i], strlen(parts[i]) + 1);
    unsigned len = 0;
    ok = ok && EVP_DigestFinal_ex(md, out, &len) && len == NET_SESS_KEY_LEN;
    EVP_MD_CTX_free(md);
    if (!ok)
        ERR_clear_error();
    return ok;
}

/* The key of this connection's kept sessions: host, port, SNI, trust store
 * (file name and identity), pin, tag.  false: do not resume. */
static bool make_sess_key(struct net *n, unsigned port, const struct stat *st, const char *tag)
{
    char portbuf[16], ident[128], pin[2 * NET_PIN_LEN + 1];
    snprintf(portbuf, sizeof portbuf, "%u", port);
    if (n->ca_file)
        snprintf(ident, sizeof ident, "%llu:%llu:%lld:%lld.%09ld", (unsigned long long)st->st_dev,
                 (unsigned long long)st->st_ino, (long long)st->st_size,
                 (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
    else
        snprintf(ident, sizeof ident, "system");
    if (n->has_pin)
        codec_hex_encode(n->pin, NET_PIN_LEN, pin);
    else
        snprintf(pin, sizeof pin, "-");
    const char *parts[] = {n->host, portbuf, n->host_is_ip ? "" : n->host,
                           n->ca_file ? n->ca_file : "", ident, pin, tag};
    return sess_key(n->sess_key, parts, sizeof parts / sizeof parts[0]);
}

static int tls_new_ctx(struct net *n, const char *ca_file, SSL_CTX **out, struct err *e)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return err_set(e, ERR_INTERNAL, "cannot create TLS context");
    char why[160];
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        ssl_reason(why, sizeof why);
        SSL_CTX_free(ctx);
        return err_set(e, ERR_INTERNAL, "cannot set TLS minimum version: %s", why);
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A POP3 server that closes without close_notify after QUIT is normal;
     * the protocol has its own framing, so treat that as a plain EOF. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, NET_TLS_READ_BUF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, n->has_pin ? verify_accept_all : NULL);
    /* sessions go to our own cache (keyed per connection), never OpenSSL's */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        ssl_reason(why, sizeof why);
        SSL_CTX_free(ctx);
        if (ca_file) {
            char shown[128];
            err_sanitize(shown, sizeof shown, ca_file, strlen(ca_file));
            return err_set(e, ERR_USAGE, "cannot load CA file %s: %s", shown, why);
        }
        return err_set(e, ERR_TLS, "cannot load the system CA store: %s", why);
    }
    ERR_clear_error();
    *out = ctx;
    return 0;
}

/* The shared context for this connection's trust store and pin mode (made
 * and kept on first use), and the session key when sessions are resumed. */
static int tls_make_ctx(struct net *n, unsigned port, const char *tag, struct err *e)
{
    struct stat st;
    memset(&st, 0, sizeof st);
    bool known = !n->ca_file || stat(n->ca_file, &st) == 0;
    SSL_CTX *ctx = known ? ctx_get(n->ca_file, &st, n->has_pin) : NULL;
    if (!ctx) {
        if (tls_new_ctx(n, n->ca_file, &ctx, e) < 0)
            return -1;
        if (known)
            ctx_put(n->ca_file, &st, n->has_pin, ctx);
    }
    n->ctx = ctx;
    n->resume = tag && known && make_sess_key(n, port, &st, tag);
    return 0;
}

static int tls_handshake_error(struct net *n, int ssl_err, struct err *e)
{
    char why[160];
    n->tls_broken = true;
    if (ssl_err == SSL_ERROR_SSL) {
        long vr = SSL_get_verify_result(n->ssl);
        if (!n->has_pin && vr != X509_V_OK) {
            ERR_clear_error();
            return err_set(e, ERR_TLS, "certificate verify failed: %s (host %s)",
                           X509_verify_cert_error_string(vr), n->host);
        }
        ssl_reason(why, sizeof why);
        return err_set(e, ERR_TLS, "TLS handshake with %s failed: %s", n->hostport, why);
    }
    int en = errno;
    ERR_clear_error();
    if (ssl_err == SSL_ERROR_SYSCALL && en != 0)
        return err_set(e, ERR_TLS, "TLS handshake with %s failed: %s", n->hostport,
                       strerror(en));
    return err_set(e, ERR_TLS, "TLS handshake with %s failed: connection closed by server",
                   n->hostport);
}

/* A certificate name on one line (RFC 2253), sanitised; "" when it cannot be printed. */
static void name_line(const X509_NAME *name, char *buf, size_t size)
{
    buf[0] = '\0';
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio)
        return;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        char *p = NULL;
        long len = BIO_get_mem_data(bio, &p);
        if (p && len > 0)
            err_sanitize(buf, size, p, (size_t)len);
    }
    BIO_free(bio);
}

/* The kept details of the certificate with digest md into ti; false if none. */
static bool cert_get(const unsigned char *md, struct net_tls_info *ti)
{
    bool hit = false;
    pthread_mutex_lock(&g_tls_lock);
    for (size_t i = 0; i < g_cert_n && !hit; i++) {
        struct cert_ent *c = &g_cert[i];
        if (memcmp(c->md, md, NET_PIN_LEN) == 0) {
            memcpy(ti->peer, c->peer, sizeof ti->peer);
            memcpy(ti->issuer, c->issuer, sizeof ti->issuer);
            ti->not_after = c->not_after;
            c->used = ++g_tls_tick;
            g_tls_stats.cert_reused++;
            hit = true;
        }
    }
    pthread_mutex_unlock(&g_tls_lock);
    return hit;
}

/* Keep ti's certificate details under md (the least recently used out). */
static void cert_put(const unsigned char *md, const struct net_tls_info *ti)
{
    pthread_mutex_lock(&g_tls_lock);
    bool full = g_cert_n == NET_CERT_CACHE_MAX;
    struct cert_ent *c = full ? &g_cert[0] : &g_cert[g_cert_n++];
    for (size_t i = 1; full && i < g_cert_n; i++)
        if (g_cert[i].used < c->used)
            c = &g_cert[i];
    memcpy(c->md, md, NET_PIN_LEN);
    memcpy(c->peer, ti->peer, sizeof c->peer);
    memcpy(c->issuer, ti->issuer, sizeof c->issuer);
    c->not_after = ti->not_after;
    c->used = ++g_tls_tick;
    pthread_mutex_unlock(&g_tls_lock);
}

static int tls_check_peer(struct net *n, struct err *e)
{
    X509 *cert = SSL_get0_peer_certificate(n->ssl);
    if (!cert)
        return err_set(e, ERR_TLS, "server sent no certificate (host %s)", n->host);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!X509_digest(cert, EVP_sha256(), md, &mdlen) || mdlen != NET_PIN_LEN) {
        ERR_clear_error();
        return err_set(e, ERR_INTERNAL, "cannot hash the server certificate");
    }
    struct net_tls_info *ti = &n->info;
    memset(ti, 0, sizeof *ti);
    format_fingerprint(md, ti->fingerprint, sizeof ti->fingerprint);
    if (n->has_pin) {
        if (CRYPTO_memcmp(md, n->pin, NET_PIN_LEN) != 0)
            return err_set(e, ERR_TLS, "certificate fingerprint mismatch: got %s (host %s)",
                           ti->fingerprint, n->host);
        snprintf(ti->verify, sizeof ti->verify, "fingerprint");
    } else {
        long vr = SSL_get_verify_result(n->ssl);
        if (vr != X509_V_OK) /* not reached with SSL_VERIFY_PEER; kept as a guard */
            return err_set(e, ERR_TLS, "certificate verify failed: %s (host %s)",
                           X509_verify_cert_error_string(vr), n->host);
        snprintf(ti->verify, sizeof ti->verify, "chain");
    }
    ti->verified = true;
    snprintf(ti->version, sizeof ti->version, "%s", SSL_get_version(n->ssl));
    const SSL_CIPHER *c = SSL_get_current_cipher(n->ssl);
    snprintf(ti->cipher, sizeof ti->cipher, "%s", c ? SSL_CIPHER_get_name(c) : "");
    if (cert_get(md, ti))
        return 0;
    name_line(X509_get_subject_name(cert), ti->peer, sizeof ti->peer);
    name_line(X509_get_issuer_name(cert), ti->issuer, sizeof ti->issuer);
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1)
        ti->not_after = (int64_t)timegm(&tm) * 1000;
    ERR_clear_error();
    cert_put(md, ti);
    return 0;
}

/* Handshake over the connected socket, then check the peer. */
static int tls_start(struct net *n, struct err *e)
{
    n->ssl = SSL_new(n->ctx);
    if (!n->ssl || !SSL_set_fd(n->ssl, n->fd) || !SSL_set_app_data(n->ssl, n)) {
        ERR_clear_error();
        return err_set(e, ERR_INTERNAL, "cannot create TLS connection");
    }
    bool offered = false;
    if (n->resume) {
        SSL_SESSION *kept = sess_take(n->sess_key);
        if (kept) {
            offered = SSL_set_session(n->ssl, kept) == 1;
            SSL_SESSION_free(kept); /* SSL_set_session took its own reference */
            ERR_clear_error();
        }
    }
    if (!n->has_pin) {
        int ok = 1;
        if (n->host_is_ip) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(n->ssl), n->host);
        } else {
            SSL_set_hostflags(n->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = SSL_set1_host(n->ssl, n->host);
        }
        if (!ok) {
            ERR_clear_error();
            return err_set(e, ERR_USAGE, "cannot check certificates for host %s", n->host);
        }
    }
    if (!n->host_is_ip && !SSL_set_tlsext_host_name(n->ssl, n->host)) {
        ERR_clear_error();
        return err_set(e, ERR_USAGE, "host name %s cannot be sent as SNI", n->host);
    }
    int64_t deadline = cap_session(n, clock_mono_ms() + n->timeout_ms);
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(n->ssl);
        if (r == 1)
            break;
        int se = SSL_get_error(n->ssl, r);
        short ev;
        if (se == SSL_ERROR_WANT_READ)
            ev = POLLIN;
        else if (se == SSL_ERROR_WANT_WRITE)
            ev = POLLOUT;
        else
            return tls_handshake_error(n, se, e);
        int w = wait_fd(n, ev, deadline, e);
        if (w < 0)
            return -1;
        if (w == 0) {
            n->tls_broken = true;
            if (session_over(n, clock_mono_ms()))
                return session_error(n, e);
            char t[32];
            return err_set(e, ERR_TIMEOUT, "TLS handshake with %s: timed out after %s",
                           n->hostport, fmt_ms(n->timeout_ms, t, sizeof t));
        }
    }
    if (tls_check_peer(n, e) < 0) {
        n->tls_broken = true; /* do not say goodbye to an untrusted peer */
        return -1;
    }
    n->tls_up = true;
    n->awaiting = true; /* the server speaks next; it has our Finished only now */
    n->info.resumed = SSL_session_reused(n->ssl) == 1;
    if (offered) {
        pthread_mutex_lock(&g_tls_lock);
        g_tls_stats.offered++;
        g_tls_stats.resumed += n->info.resumed;
        pthread_mutex_unlock(&g_tls_lock);
    }
    if (n->pending) {
        sess_put(n->sess_key, n->pending);
        n->pending = NULL;
    } else if (n->resume && n->info.resumed && SSL_version(n->ssl) < TLS1_3_VERSION) {
        /* TLS 1.2: the resumed session stays valid for later connections */
        SSL_SESSION *again = SSL_get1_session(n->ssl);
        if (again)
            sess_put(n->sess_key, again);
    }
    return 0;
}

/* ---- raw I/O -------------------------------------------------------------- */

/* Write as much queued output as the socket takes now.  0 (possibly with
 * output still queued), or -1 with e set. */
static int try_write(struct net *n, struct err *e)
{
    while (n->out_end > n->out_start) {
        size_t len = n->out_end - n->out_start;
        const char *p = n->out + n->out_start;
        ssize_t w;
        if (n->ssl) {
            n->write_wants_read = false;
            ERR_clear_error();
            int r = SSL_write(n->ssl, p, (int)len); /* len <= NET_OUT_MAX */
            if (r <= 0) {
                int se = SSL_get_error(n->ssl, r);
                if (se == SSL_ERROR_WANT_WRITE)
                    return 0;
                if (se == SSL_ERROR_WANT_READ) {
                    n->write_wants_read = true;
                    return 0;
                }
                n->tls_broken = true;
                if (se == SSL_ERROR_SSL) {
                    char why[160];
                    ssl_reason(why, sizeof why);
                    return err_set(e, ERR_TLS, "TLS error writing to %s: %s", n->hostport, why);
                }
                int en = errno;
                ERR_clear_error();
                return err_set(e, ERR_CONN, "write to %s: %s", n->hostport,
                               en ? strerror(en) : "connection closed");
            }
            w = r;
        } else {
            w = send(n->fd, p, len, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                if (errno == EINTR)
                    continue;
                return err_set(e, ERR_CONN, "write to %s: %s", n->hostport, strerror(errno));
            }
        }
        n->out_start += (size_t)w;
        n->bytes_out += (uint64_t)w;
    }
    n->out_start = n->out_end = 0;
    if (n->out_cap > NET_OUT_KEEP) {
        free(n->out);
        n->out = NULL;
        n->out_cap = 0;
    }
    return 0;
}

/* Make room at the end of the input buffer. */
static void in_compact(struct net *n)
{
    if (n->in_start == n->in_end) {
        n->in_start = n->in_end = 0;
    } else if (n->in_start > 0 && NET_IN_BUF - n->in_end < NET_IN_BUF / 2) {
        memmove(n->in, n->in + n->in_start, n->in_end - n->in_start);
        n->in_end -= n->in_start;
        n->in_start = 0;
    }
}

/* Read what the connection has now into the free buffer space.  Returns the
 * number of bytes read (0 if none: would block, buffer full, or EOF, which
 * sets n->eof), or -1 with e set. */
static long try_read(struct net *n, struct err *e)
{
    long got = 0;
    BIO *rbio = n->ssl ? SSL_get_rbio(n->ssl) : NULL;
    uint64_t wire0 = rbio ? BIO_number_read(rbio) : 0;
    while (!n->eof && n->in_end < NET_IN_BUF) {
        size_t room = NET_IN_BUF - n->in_end;
        char *p = n->in + n->in_end;
        ssize_t r;
        if (n->ssl) {
            n->read_wants_write = false;
            ERR_clear_error();
            int s = SSL_read(n->ssl, p, (int)room); /* room <= NET_IN_BUF */
            if (s <= 0) {
                int se = SSL_get_error(n->ssl, s);
                if (se == SSL_ERROR_WANT_READ)
                    break;
                if (se == SSL_ERROR_WANT_WRITE) {
                    n->read_wants_write = true;
                    break;
                }
                if (se == SSL_ERROR_ZERO_RETURN) {
                    n->eof = true;
                    break;
                }
                n->tls_broken = true;
                if (se == SSL_ERROR_SSL) {
                    char why[160];
                    ssl_reason(why, sizeof why);
                    return err_set(e, ERR_TLS, "TLS error reading from %s: %s", n->hostport,
                                   why);
                }
                int en = errno;
                ERR_clear_error();
                if (en == 0) {
                    n->eof = true;
                    break;
                }
                return err_set(e, ERR_CONN, "read from %s: %s", n->hostport, strerror(en));
            }
            r = s;
        } else {
            r = recv(n->fd, p, room, 0);
            if (r < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                if (errno == EINTR)
                    continue;
                return err_set(e, ERR_CONN, "read from %s: %s", n->hostport, strerror(errno));
            }
            if (r == 0) {
                n->eof = true;
                break;
            }
        }
        n->in_end += (size_t)r;
        n->bytes_in += (uint64_t)r;
        got += r;
        if (!n->ssl && (size_t)r < room)
            break; /* the kernel buffer is drained; don't ask again now */
        /* TLS: nothing left in OpenSSL's buffer, and what it took from the
         * socket in this call was a short read (less than its read-ahead
         * buffer takes): the kernel buffer is drained too, so asking again
         * now only costs a read() that says EAGAIN */
        if (n->ssl && !SSL_has_pending(n->ssl) && rbio &&
            BIO_number_read(rbio) - wire0 < NET_TLS_SHORT_READ)
            break;
    }
    return got;
}

/* Input arrived: push the wait deadline forward per NET_MIN_PROGRESS bytes. */
static void note_input(struct net *n, int64_t now)
{
    if (n->bytes_in - n->progress_base_in >= NET_MIN_PROGRESS) {
        n->progress_base_in = n->bytes_in;
        n->deadline = now + n->timeout_ms;
    }
}

static int closed_error(const struct net *n, struct err *e)
{
    return err_set(e, ERR_CONN, "connection closed by server (%s)", n->hostport);
}

/* ---- public ----------------------------------------------------------------- */

struct net *net_connect(const struct net_opts *opts, struct err *e)
{
    if (!opts || !opts->host || !opts->host[0]) {
        err_set(e, ERR_USAGE, "no host to connect to");
        return NULL;
    }
    size_t hl = strlen(opts->host);
    if (hl > NET_HOST_MAX) {
        err_set(e, ERR_USAGE, "host name longer than %d octets", NET_HOST_MAX);
        return NULL;
    }
    if (opts->port == 0 || opts->port > 65535) {
        err_set(e, ERR_USAGE, "bad port %u for host %s", opts->port, opts->host);
        return NULL;
    }
    struct net *n = calloc(1, sizeof *n);
    if (!n) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    n->fd = -1;
    memcpy(n->host, opts->host, hl + 1);
    unsigned char ipbuf[sizeof(struct in6_addr)];
    bool v6 = inet_pton(AF_INET6, n->host, ipbuf) == 1;
    n->host_is_ip = v6 || inet_pton(AF_INET, n->host, ipbuf) == 1;
    int r = snprintf(n->hostport, sizeof n->hostport, v6 ? "[%s]:%u" : "%s:%u", n->host,
                     opts->port);
    if (r < 0 || (size_t)r >= sizeof n->hostport) {
        err_set(e, ERR_USAGE, "host name too long");
        goto fail;
    }
    n->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : NET_DEFAULT_TIMEOUT_MS;
    n->session_deadline = opts->session_deadline;
    n->cancel_fd = opts->cancel_fd;
    if (opts->fingerprint) {
        if (parse_fingerprint(opts->fingerprint, n->pin, e) < 0)
            goto fail;
        n->has_pin = true;
    }
    n->in = malloc(NET_IN_BUF);
    if (!n->in) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    /* The trust store is loaded up front so a bad CA file fails before any
     * traffic, also for a later STARTTLS. */
    if (opts->ca_file && !(n->ca_file = strdup(opts->ca_file))) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    n->port = opts->port;
    n->session_tag = opts->session_tag ? strdup(opts->session_tag) : NULL;
    if (opts->session_tag && !n->session_tag) {
        err_set(e, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    if ((opts->tls || opts->ca_file) && tls_make_ctx(n, n->port, n->session_tag, e) < 0)
        goto fail;
    if (session_over(n, clock_mono_ms())) {
        session_error(n, e);
        goto fail;
    }
    if (tcp_connect(n, opts->port, e) < 0)
        goto fail;
    if (opts->tls && tls_start(n, e) < 0)
        goto fail;
    net_wait_begin(n);
    return n;
fail:
    net_close(&n);
    return NULL;
}

int net_start_tls(struct net *n, struct err *e)
{
    if (!n)
        return err_set(e, ERR_USAGE, "no connection");
    if (n->ssl)
        return err_set(e, ERR_USAGE, "connection to %s already uses TLS", n->hostport);
    if (n->in_end > n->in_start)
        return err_set(e, ERR_PROTO, "data before TLS handshake (%zu octets from %s)",
                       n->in_end - n->in_start, n->hostport);
    if (n->out_end > n->out_start)
        return err_set(e, ERR_USAGE, "output still queued before TLS handshake with %s",
                       n->hostport);
    if (n->eof)
        return closed_error(n, e);
    if (!n->ctx && tls_make_ctx(n, n->port, n->session_tag, e) < 0)
        return -1;
    if (tls_start(n, e) < 0)
        return -1;
    net_wait_begin(n);
    return 0;
}

bool net_is_tls(const struct net *n)
{
    return n && n->tls_up;
}

const struct net_tls_info *net_tls_info(const struct net *n)
{
    return (n && n->tls_up) ? &n->info : NULL;
}

void net_close(struct net **np)
{
    if (!np || !*np)
        return;
    struct net *n = *np;
    if (n->ssl) {
        if (n->tls_up && !n->tls_broken && !n->shut_sent) {
            ERR_clear_error();
            (void)SSL_shutdown(n->ssl); /* queue close_notify; do not wait */
        }
        ERR_clear_error();
        SSL_set_app_data(n->ssl, NULL);
        SSL_free(n->ssl);
    }
    SSL_SESSION_free(n->pending);
    SSL_CTX_free(n->ctx);
    free(n->ca_file);
    free(n->session_tag);
    if (n->fd >= 0)
        close(n->fd);
    free(n->in);
    free(n->out);
    free(n);
    *np = NULL;
}

void net_wait_begin(struct net *n)
{
    if (!n)
        return;
    n->deadline = clock_mono_ms() + n->timeout_ms;
    n->wait_base_in = n->bytes_in;
    n->progress_base_in = n->bytes_in;
}

int net_queue(struct net *n, const void *data, size_t len, struct err *e)
{
    size_t pending = n->out_end - n->out_start;
    if (len > NET_OUT_MAX - pending)
        return err_set(e, ERR_LIMIT,
                       "output queue for %s would exceed %d octets (%zu queued, %zu more)",
                       n->hostport, NET_OUT_MAX, pending, len);
    if (len == 0)
        return 0;
    if (n->out_cap - n->out_end < len) {
        if (n->out_start > 0) { /* moving is fine: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER */
            memmove(n->out, n->out + n->out_start, pending);
            n->out_start = 0;
            n->out_end = pending;
        }
        if (n->out_cap - n->out_end < len) {
            size_t cap = n->out_cap ? n->out_cap : NET_OUT_MIN_ALLOC;
            while (cap < pending + len)
                cap *= 2;
            if (cap > NET_OUT_MAX)
                cap = NET_OUT_MAX;
            char *p = realloc(n->out, cap);
            if (!p)
                return err_set(e, ERR_INTERNAL, "out of memory");
            n->out = p;
            n->out_cap = cap;
        }
    }
    memcpy(n->out + n->out_end, data, len);
    n->out_end += len;
    return 0;
}

size_t net_pending_out(const struct net *n)
{
    return n ? n->out_end - n->out_start : 0;
}

/* Send out (len octets, the TLS records net_finish made) in as few writes
 * as the socket takes, within the connection's timeout. */
static int send_all(struct net *n, const char *out, size_t len, struct err *e)
{
    int64_t deadline = clock_mono_ms() + n->timeout_ms;
    size_t off = 0;
    while (off < len) {
        /* write(), as OpenSSL's socket BIO does (SIGPIPE is ignored) */
        ssize_t w = write(n->fd, out + off, len - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return err_set(e, ERR_CONN, "write to %s: %s", n->hostport,
                           w == 0 ? "connection closed" : strerror(errno));
        int r = wait_fd(n, POLLOUT, cap_session(n, deadline), e);
        if (r < 0)
            return -1;
        if (r == 0)
            return err_set(e, ERR_TIMEOUT, "could not send to %s before closing", n->hostport);
    }
    return 0;
}

int net_finish(struct net *n, struct err *e)
{
    if (!n)
        return err_set(e, ERR_USAGE, "no connection");
    if (!n->ssl || !n->tls_up || n->tls_broken || n->shut_sent)
        return net_flush(n, e);
    /* the records go to memory first (the socket's BIO stays the one read
     * from), then to the socket in one write: the queued data and the
     * close_notify that net_close would have sent in a write of its own */
    BIO *mem = BIO_new(BIO_s_mem());
    if (!mem)
        return net_flush(n, e);
    SSL_set0_wbio(n->ssl, mem); /* the SSL owns it; the socket BIO's write reference goes */
    n->shut_sent = true;        /* whatever happens now, net_close writes nothing more */
    if (try_write(n, e) < 0)
        return -1;
    if (n->out_end > n->out_start) /* a memory BIO takes everything: not reached */
        return err_set(e, ERR_INTERNAL, "TLS records for %s not made", n->hostport);
    ERR_clear_error();
    (void)SSL_shutdown(n->ssl);
    ERR_clear_error();
    char *out = NULL;
    long len = BIO_get_mem_data(mem, &out);
    return len > 0 && out ? send_all(n, out, (size_t)len, e) : 0;
}

int net_flush(struct net *n, struct err *e)
{
    int64_t deadline = clock_mono_ms() + n->timeout_ms;
    uint64_t base = n->bytes_out, progress = n->bytes_out;
    for (;;) {
        if (try_write(n, e) < 0)
            return -1;
        if (n->out_end == n->out_start) {
            n->awaiting = n->bytes_out != base || n->awaiting;
            return 0;
        }
        /* Take input into the free tail while waiting, so a server that
         * writes before it reads cannot stall us while there is room.  The
         * buffered data is not moved: pointers from net_data() and
         * net_read_line() stay valid across a flush. */
        long got = 0;
        if (n->in_end < NET_IN_BUF && !n->eof && (got = try_read(n, e)) < 0)
            return -1;
        int64_t now = clock_mono_ms();
        if (got > 0)
            note_input(n, now);
        if (n->bytes_out - progress >= NET_MIN_PROGRESS) {
            progress = n->bytes_out;
            deadline = now + n->timeout_ms;
        }
        if (session_over(n, now))
            return session_error(n, e);
        if (now >= deadline) {
            char t[32];
            fmt_ms(n->timeout_ms, t, sizeof t);
            if (n->bytes_out == base)
                return err_set(e, ERR_TIMEOUT, "could not send to %s within %s", n->hostport,
                               t);
            return err_set(e, ERR_TIMEOUT, "server accepted fewer than %d bytes in %s (%s)",
                           NET_MIN_PROGRESS, t, n->hostport);
        }
        short ev = n->write_wants_read ? POLLIN : POLLOUT;
        if (n->read_wants_write)
            ev |= POLLOUT;
        else if (n->in_end < NET_IN_BUF && !n->eof)
            ev |= POLLIN;
        if (wait_fd(n, ev, cap_session(n, deadline), e) < 0)
            return -1;
    }
}

int net_fill(struct net *n, struct err *e)
{
    if (n->eof)
        return closed_error(n, e);
    in_compact(n);
    if (n->in_end - n->in_start >= NET_IN_BUF)
        return err_set(e, ERR_LIMIT, "input buffer full (%d octets unconsumed from %s)",
                       NET_IN_BUF, n->hostport);
    /* Just after a request, the answer is still on its way (a round trip
     * away): wait for it first rather than ask the socket, which would
     * only say EAGAIN.  Anything OpenSSL holds already is read at once. */
    if (n->awaiting && !(n->ssl && SSL_has_pending(n->ssl)) && !n->read_wants_write) {
        short ev = POLLIN;
        if (n->out_end > n->out_start)
            ev |= n->write_wants_read ? 0 : POLLOUT;
        /* only a poll() failure ends here: at the deadline, the session's
         * limit or a cancel wait_fd returns 0 and the loop below first
         * tries once to write what is pending and to read without
         * blocking (input that came meanwhile is returned; a read error or
         * a closed connection is reported as such), then reports the cancel
         * or the limit, then the timeout */
        if (wait_fd(n, ev, cap_session(n, n->deadline), e) < 0)
            return -1;
    }
    n->awaiting = false;
    for (;;) {
        if (n->out_end > n->out_start && try_write(n, e) < 0)
            return -1;
        long got = try_read(n, e);
        if (got < 0)
            return -1;
        int64_t now = clock_mono_ms();
        if (got > 0) {
            note_input(n, now);
            return (int)got;
        }
        if (n->eof)
            return closed_error(n, e);
        if (session_over(n, now))
            return session_error(n, e);
        if (now >= n->deadline) {
            char t[32];
            fmt_ms(n->timeout_ms, t, sizeof t);
            if (n->bytes_in == n->wait_base_in)
                return err_set(e, ERR_TIMEOUT, "no reply from %s within %s", n->hostport, t);
            return err_set(e, ERR_TIMEOUT, "server sent fewer than %d bytes in %s (%s)",
                           NET_MIN_PROGRESS, t, n->hostport);
        }
        short ev = n->read_wants_write ? POLLOUT : POLLIN;
        if (n->out_end > n->out_start)
            ev |= n->write_wants_read ? POLLIN : POLLOUT;
        if (wait_fd(n, ev, cap_session(n, n->deadline), e) < 0)
            return -1;
    }
}

const char *net_data(const struct net *n, size_t *len)
{
    *len = n->in_end - n->in_start;
    return n->in + n->in_start;
}

void net_consume(struct net *n, size_t count)
{
    size_t avail = n->in_end - n->in_start;
    if (count > avail)
        count = avail;
    n->in_start += count;
    n->scanned = 0;
    if (n->in_start == n->in_end)
        n->in_start = n->in_end = 0;
}

int net_read_line(struct net *n, size_t max, const char **line, size_t *len, struct err *e)
{
    if (max > NET_IN_BUF - 2)
        max = NET_IN_BUF - 2; /* the line and its CRLF must fit the buffer */
    for (;;) {
        const char *buf = n->in + n->in_start;
        size_t avail = n->in_end - n->in_start;
        const char *nl = avail > n->scanned
                             ? memchr(buf + n->scanned, '\n', avail - n->scanned)
                             : NULL;
        if (nl) {
            size_t l = (size_t)(nl - buf);
            size_t total = l + 1;
            if (l > 0 && buf[l - 1] == '\r')
                l--;
            if (l > max)
                return err_set(e, ERR_LIMIT, "reply line longer than %zu octets", max);
            if (memchr(buf, '\0', l))
                return err_set(e, ERR_PROTO, "NUL byte in a line from %s", n->hostport);
            *line = buf;
            *len = l;
            n->in_start += total;
            n->scanned = 0;
            return 0;
        }
        n->scanned = avail;
        /* No ending yet: a CR may still be the start of the CRLF. */
        if (avail > max + 1 || (avail == max + 1 && buf[max] != '\r'))
            return err_set(e, ERR_LIMIT, "reply line longer than %zu octets", max);
        if (net_fill(n, e) < 0) {
            if (e && e->kind == ERR_CONN && n->eof && avail > 0)
                err_set(e, ERR_CONN, "connection closed by server in the middle of a line (%s)",
                        n->hostport);
            return -1;
        }
    }
}

uint64_t net_bytes_in(const struct net *n)
{
    return n ? n->bytes_in : 0;
}

uint64_t net_bytes_out(const struct net *n)
{
    return n ? n->bytes_out : 0;
}
