/*
 * net — one buffered client connection, plain TCP or TLS (OpenSSL).
 *
 * Follows RFC 8314 (implicit TLS), RFC 2595 (STARTTLS upgrade is done by the
 * caller's protocol, then net_start_tls()), RFC 6125 (host name checks).
 *
 * Security defaults: TLS >= 1.2, certificate chain verified against the
 * system store (or opts.ca_file), host name (or IP address) verified, SNI
 * sent for host names.  With opts.fingerprint set, the pin replaces chain and
 * name verification (as mpop's tls_fingerprint): the leaf certificate's
 * SHA-256 must match, nothing else is trusted.
 *
 * Deadlines: the TCP connect must finish within timeout_ms (all addresses
 * together), and so must the TLS handshake.  Every wait for input has a
 * deadline of timeout_ms from net_wait_begin(), pushed forward by timeout_ms
 * each time NET_MIN_PROGRESS more bytes arrive, so a peer that drips bytes
 * cannot hold a connection open.  net_flush() has its own deadline of the same
 * shape, counting bytes sent.  The optional session deadline (absolute,
 * monotonic ms) bounds everything.  Name resolution (getaddrinfo) cannot be
 * bounded.
 *
 * I/O model: the socket is non-blocking.  Output is queued (net_queue) and
 * written whenever the socket is writable, including while waiting for input
 * in net_fill(), so pipelined commands and replies can never deadlock with
 * both sides' buffers full.
 *
 * The process must ignore SIGPIPE (main does): plain writes use MSG_NOSIGNAL,
 * but OpenSSL writes to the socket with plain send().
 * Not thread-safe; one thread uses one struct net at a time.
 */
#ifndef POP3BRIDGE_NET_H
#define POP3BRIDGE_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define NET_MIN_PROGRESS 1024          /* bytes per timeout window while waiting */
#define NET_IN_BUF (256 * 1024)        /* input buffer; also the longest line */
#define NET_OUT_MAX (4 * 1024 * 1024)  /* queued output cap -> ERR_LIMIT */
#define NET_CTX_CACHE_MAX 64           /* TLS contexts kept, one per trust store (and pin mode) */
#define NET_SESSION_CACHE_MAX 4096     /* TLS sessions kept for resumption (least recently used out) */
#define NET_CERT_CACHE_MAX 32          /* leaf certificates whose printed details are kept */
#define NET_SESSION_MAX_AGE_S 3600     /* a session is resumed at most this long after its full handshake */

struct net_opts {
    const char *host;           /* DNS name or literal IPv4/IPv6 address */
    unsigned port;
    bool tls;                   /* TLS handshake right after connect (implicit TLS) */
    const char *ca_file;        /* PEM trust anchors; NULL = system default store */
    const char *fingerprint;    /* NULL, or "sha256:<64 hex>" (':' separators allowed) */
    int timeout_ms;             /* connect and each wait; <= 0 means 30000 */
    int64_t session_deadline;   /* absolute clock_mono_ms() value; 0 = none */
    int cancel_fd;              /* > 0: a descriptor (e.g. an eventfd) that becomes
                                   readable to cancel: every wait then ends at once
                                   with ERR_TIMEOUT "session cancelled"; 0 = none */
    const char *session_tag;    /* non-NULL: resume TLS sessions (see below) among
                                   connections with the same tag (e.g. the account's
                                   user name); NULL: always a full handshake */
};

struct net_tls_info {
    char version[16];     /* "TLSv1.3" */
    char cipher[64];      /* "TLS_AES_256_GCM_SHA384" */
    bool verified;        /* chain+name verified, or pin matched */
    char verify[16];      /* "chain" or "fingerprint" */
    char peer[256];       /* leaf subject, one line (RFC 2253) */
    char issuer[256];     /* leaf issuer, one line (RFC 2253) */
    int64_t not_after;    /* leaf expiry, Unix ms; 0 if unreadable */
    char fingerprint[72]; /* "sha256:<64 lowercase hex>" of the leaf certificate */
    bool resumed;         /* abbreviated handshake: a session of an earlier connection */
};

/*
 * TLS contexts and sessions (process-wide, thread-safe).
 * A TLS context (trust store loaded, settings applied) is made once per CA
 * file (or the system store) and pin mode, and shared; a CA file whose
 * device, inode, size or modification time changed gets a new one.
 * With opts.session_tag, the sessions (TLS 1.3 tickets, TLS 1.2 sessions) a
 * server hands out on a connection whose certificate checks passed are kept,
 * and the next connection with the same host, port, SNI, trust store (file
 * identity included), pin and tag offers one: an abbreviated handshake, no
 * certificate chain to verify again.  The peer certificate and verification
 * result are the session's, from the full handshake that checked them under
 * the same key; a session is never offered to another host, port, SNI, CA or
 * pin.  A session is used once (taken out of the cache when offered, as
 * RFC 8446 appendix C.4 advises for tickets); the server's new tickets take
 * its place.  At most NET_SESSION_CACHE_MAX are kept; each for at most
 * NET_SESSION_MAX_AGE_S and never past the server's lifetime hint.
 */
struct net_tls_cache_stats {
    unsigned long offered;   /* connections that offered a kept session */
    unsigned long resumed;   /* ... and had it accepted */
    unsigned long stored;    /* sessions kept */
    unsigned long expired;   /* dropped as too old or not resumable */
    unsigned long evicted;   /* dropped to stay within NET_SESSION_CACHE_MAX */
    size_t sessions;         /* kept now */
    size_t contexts;         /* TLS contexts kept now */
    unsigned long cert_reused; /* connections whose leaf's subject, issuer and expiry were
                                  known by its fingerprint (not printed again) */
};
struct net_tls_cache_stats net_tls_cache_stats(void);
/* Drop every kept context and session (tests; a process exiting). */
void net_tls_cache_clear(void);

struct net;

/* Resolve, connect (trying every address, each within the remaining connect
 * deadline), and with opts->tls do the TLS handshake and verification.  The
 * wait deadline is armed on return (as by net_wait_begin).  opts's strings
 * are copied.  A CA file is loaded here even without opts->tls, so a bad one
 * is reported before a later STARTTLS.
 * Returns NULL with e set: ERR_CONN (DNS, refused, unreachable:
 * "connect to H:P: Connection refused"), ERR_TIMEOUT ("connect to H:P: timed
 * out after 30 s", session limit), ERR_TLS (handshake "TLS handshake with H:P
 * failed: <OpenSSL reason>", "certificate verify failed: <reason> (host H)",
 * "certificate fingerprint mismatch: got sha256:... (host H)"), ERR_USAGE (bad
 * host/port, bad fingerprint syntax, unreadable CA file), ERR_INTERNAL. */
struct net *net_connect(const struct net_opts *opts, struct err *e);

/* Upgrade an established plain connection to TLS (after the protocol's
 * STARTTLS command was accepted), with the same verification as above.  Any
 * input already buffered is a protocol error (ERR_PROTO: data before TLS
 * handshake), which defeats STARTTLS command injection.  Output still queued,
 * or a connection already using TLS: ERR_USAGE.  Otherwise as net_connect.
 * Re-arms the wait deadline. */
int net_start_tls(struct net *n, struct err *e);

bool net_is_tls(const struct net *n);
/* NULL without TLS.  Owned by n. */
const struct net_tls_info *net_tls_info(const struct net *n);

/* Send TLS close_notify (best effort, without waiting; not after a TLS
 * failure), close, free (queued output is dropped), *n=NULL.  NULL-safe. */
void net_close(struct net **n);

/* Arm the wait deadline: now + timeout_ms, progress counter reset.  Called by
 * the protocol layer when it starts waiting for a reply. */
void net_wait_begin(struct net *n);

/* Append to the output queue (nothing is written yet).  ERR_LIMIT if the queue
 * would exceed NET_OUT_MAX. */
int net_queue(struct net *n, const void *data, size_t len, struct err *e);
/* Write queued output until none is left.  Its deadline is timeout_ms from
 * the call, pushed forward per NET_MIN_PROGRESS bytes sent.  While it waits it
 * also reads into the input buffer's free space (never moving buffered data,
 * so pointers from net_data/net_read_line stay valid).  ERR_CONN (write
 * failed), ERR_TLS, ERR_TIMEOUT ("could not send to H:P within 30 s",
 * "server accepted fewer than 1024 bytes in 30 s (H:P)", session limit). */
int net_flush(struct net *n, struct err *e);
/* The last thing sent before net_close: what is queued and, on a TLS
 * connection, the close_notify, together in one write (one system call
 * and one TCP segment instead of two); nothing is read.  Nothing may be
 * queued or read after it but net_close.  0, or -1 with e. */
int net_finish(struct net *n, struct err *e);
/* Bytes still queued. */
size_t net_pending_out(const struct net *n);

/* Wait until more input arrives, writing queued output meanwhile when the
 * socket is writable.  Returns the number of new bytes (> 0), or -1 with e set:
 * ERR_CONN "connection closed by server (H:P)" on EOF (also a TLS EOF without
 * close_notify; every later call gives it again) or a read/write failure,
 * ERR_TIMEOUT ("no reply from H:P within 30 s", "server sent fewer than 1024
 * bytes in 30 s (H:P)", "session time limit reached (H:P)"), ERR_TLS, ERR_LIMIT
 * if the input buffer is full (the caller did not consume). */
int net_fill(struct net *n, struct err *e);

/* Unconsumed input, valid until the next net_fill/net_consume/net_read_line. */
const char *net_data(const struct net *n, size_t *len);
/* Drop count bytes (at most what is buffered) from the front of the input. */
void net_consume(struct net *n, size_t count);

/* Next line from the input, calling net_fill as needed.  *line points into the
 * buffer (valid until the next input call), *len excludes the line ending
 * ("\r\n" or a bare "\n").  The line is consumed.  A line longer than `max`
 * octets (max <= NET_IN_BUF) without an ending: ERR_LIMIT "reply line longer
 * than <max> octets"; max is capped at NET_IN_BUF - 2 so the line and its CRLF
 * fit the buffer.  On ERR_LIMIT nothing is consumed.  A NUL byte in the line:
 * ERR_PROTO.  EOF after part of a line: ERR_CONN "connection closed by server
 * in the middle of a line (H:P)".  Otherwise as net_fill. */
int net_read_line(struct net *n, size_t max, const char **line, size_t *len,
                  struct err *e);

/* Total bytes received / sent on this connection (after TLS decryption). */
uint64_t net_bytes_in(const struct net *n);
uint64_t net_bytes_out(const struct net *n);

#endif
