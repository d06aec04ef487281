/*
 * pop3 — the POP3 client protocol engine.
 *
 * RFC 1939 (POP3: USER, PASS, APOP, STAT, LIST, RETR, DELE, NOOP, RSET, TOP,
 * UIDL, QUIT), RFC 2449 (CAPA, PIPELINING, extended response codes), RFC 3206
 * ([SYS/TEMP], [SYS/PERM], [AUTH]), RFC 2595 (STLS), RFC 8314 (implicit TLS),
 * RFC 5034 (AUTH with SASL: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256,
 * XOAUTH2, OAUTHBEARER; see sasl.h).
 *
 * The engine knows nothing of HTTP, JSON or the store.  Message bodies are
 * dot-unstuffed and streamed to the caller's sink; the engine never holds a
 * whole message.  When the server advertises PIPELINING, batches of commands
 * (the listing, RETR, TOP, DELE) go out in a bounded window and replies are
 * matched in order; otherwise the same code path runs with a window of 1.
 *
 * Session semantics: DELE only marks; pop3_quit() sends QUIT and reports
 * whether the server answered +OK (deletions committed; without a DELE it
 * does not wait for the answer); pop3_abort() closes without QUIT (nothing
 * is deleted).
 *
 * Errors (struct err, error.h): ERR_CONN, ERR_TIMEOUT, ERR_TLS from the
 * connection; ERR_PROTO when the server breaks the protocol (garbage, bad
 * numbers, invalid or duplicate UIDLs, counts that disagree); ERR_SERVER for a
 * -ERR reply (e->server holds its text, e->code its [CODE]); ERR_AUTH when
 * login fails or no mechanism can be used; ERR_LIMIT when a named limit below
 * is exceeded; ERR_USAGE for bad options.  After any error other than
 * ERR_SERVER from a single command, the session is broken: only pop3_abort()
 * remains.
 *
 * Not thread-safe: one thread uses one session at a time.
 */
#ifndef POP3BRIDGE_POP3_H
#define POP3BRIDGE_POP3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "net.h"

#define POP3_LINE_MAX 8192          /* any reply line (RFC 1939: 512; real servers exceed it) */
#define POP3_CAPA_LINE_MAX 1024     /* one CAPA line */
#define POP3_CAPA_LINES_MAX 256     /* lines in a CAPA reply */
#define POP3_UIDL_MAX 70            /* RFC 1939: 1..70 characters 0x21..0x7E */
#define POP3_MESSAGES_MAX 10000000u /* messages in one mailbox */
#define POP3_GREETING_MAX 512       /* kept part of the greeting */
#define POP3_WINDOW 512             /* commands outstanding when pipelining */
#define POP3_SASL_MAX 16384         /* one SASL challenge line */
#define POP3_MAX_MESSAGE_DEFAULT (100ULL * 1024 * 1024) /* max_message_size 0 */
/* LIST counts CRLF line ends and dot-stuffing, and servers count differently:
 * how far above a limit a LIST size may be before it is taken at its word. */
#define POP3_LIST_SLACK(max) ((max) / 8 + 65536)

enum pop3_tls {
    POP3_TLS_IMPLICIT = 0, /* TLS from the first byte (pop3s, port 995) */
    POP3_TLS_STARTTLS,     /* plain connect, then STLS; refuses to go on without it */
    POP3_TLS_NONE,         /* no TLS at all */
};

/* Authentication mechanisms, strongest first in automatic choice order. */
enum pop3_mech {
    POP3_MECH_NONE = 0,
    POP3_MECH_OAUTHBEARER,
    POP3_MECH_XOAUTH2,
    POP3_MECH_SCRAM_SHA_256,
    POP3_MECH_SCRAM_SHA_1,
    POP3_MECH_CRAM_MD5,
    POP3_MECH_APOP,
    POP3_MECH_PLAIN,
    POP3_MECH_LOGIN,
    POP3_MECH_USER,
    POP3_MECH_COUNT_
};
#define POP3_MECHS_MAX 16

/* "scram-sha-256" etc. (as --auth takes it) <-> enum; POP3_MECH_NONE if unknown. */
const char *pop3_mech_name(enum pop3_mech m);
enum pop3_mech pop3_mech_parse(const char *name);
/* Parse "scram-sha-256,cram-md5,user" into out (max POP3_MECHS_MAX).  -1 with
 * ERR_USAGE naming the unknown item. */
int pop3_mech_list_parse(const char *list, enum pop3_mech *out, size_t *n, struct err *e);

/* Called for each protocol line: dir 'C' (sent) or 'S' (received).  Secrets
 * are already masked ("PASS ********").  Message bodies are not traced; a
 * summary line is. */
typedef void (*pop3_trace_fn)(void *ctx, char dir, const char *line, size_t len);

struct pop3_opts {
    const char *host;
    unsigned port;                 /* 0: 995 for implicit TLS, else 110 */
    enum pop3_tls tls;
    const char *ca_file;           /* NULL: system trust store */
    const char *fingerprint;       /* "sha256:<hex>": pin, replaces CA checks */
    const char *username;
    const char *password;          /* NULL if none; only read until login ends */
    const char *oauth2_token;      /* NULL if none; only read until login ends */
    enum pop3_mech mechs[POP3_MECHS_MAX]; /* explicit order; n_mechs 0 = automatic */
    size_t n_mechs;
    bool allow_plaintext;          /* permit USER/PASS, PLAIN, LOGIN, bearer tokens without TLS */
    int timeout_ms;                /* each network wait; <= 0: 30000 */
    int64_t session_timeout_ms;    /* whole session; 0 = none */
    int cancel_fd;                 /* > 0: readable cancels the session (net_opts) */
    uint64_t max_message_size;     /* octets received per message; 0 = 100 MiB */
    pop3_trace_fn trace;           /* NULL: no trace */
    void *trace_ctx;
};
/* All strings in opts are borrowed: they must outlive the session. */

struct pop3_capa {
    bool known;                    /* the server answered CAPA */
    bool top, uidl, user, resp_codes, auth_resp_code, pipelining, stls, utf8;
    char sasl[512];                /* "PLAIN LOGIN ..." as advertised, "" if none */
    long login_delay;              /* seconds; -1 if not advertised */
    long expire;                   /* days; -1 not advertised, -2 NEVER */
    char implementation[128];
    size_t n_lines;
    char **lines;                  /* the CAPA lines, sanitised; owned by the session */
};

struct pop3_entry {
    uint32_t number;
    uint64_t size;                 /* octets as LIST says (CRLF, stuffed) */
    char uidl[POP3_UIDL_MAX + 1];  /* "" if the server has no UIDL */
};

struct pop3_listing {
    uint32_t count;                /* STAT */
    uint64_t octets;               /* STAT */
    bool has_uidl;
    struct pop3_entry *entries;    /* count entries, ordered by number */
};

/* Streams message bodies.  begin/end may be NULL.  Returning -1 (with e set)
 * from any callback aborts the batch and breaks the session.  failed (may be
 * NULL) is called when the server answers -ERR for one message: return 0 to
 * go on with the batch, -1 to stop; when failed is NULL the batch is finished
 * (replies drained, session usable) and then fails with ERR_SERVER. */
struct pop3_sink {
    int (*begin)(void *ctx, uint32_t number, struct err *e);
    int (*data)(void *ctx, const char *buf, size_t len, struct err *e);
    int (*end)(void *ctx, uint32_t number, uint64_t octets, struct err *e);
    int (*failed)(void *ctx, uint32_t number, const struct err *why);
    void *ctx;
    bool lf;                       /* convert CRLF line endings to LF */
};

struct pop3;

/* Connect, TLS (implicit or STLS), greeting, CAPA.  Does not log in. */
struct pop3 *pop3_connect(const struct pop3_opts *o, struct err *e);
/* Choose a mechanism (explicit list, else the strongest the server offers that
 * the credentials and the transport allow), authenticate once, then CAPA
 * again.  ERR_AUTH if refused ("[AUTH]" or plain -ERR), ERR_SERVER with code
 * IN-USE / LOGIN-DELAY / SYS/TEMP if the server gave one of those. */
int pop3_login(struct pop3 *p, struct err *e);
/* pop3_connect + pop3_login; NULL on failure (session already closed). */
struct pop3 *pop3_open(const struct pop3_opts *o, struct err *e);

const char *pop3_greeting(const struct pop3 *p);
const struct pop3_capa *pop3_capa(const struct pop3 *p);
const struct net_tls_info *pop3_tls_info(const struct pop3 *p); /* NULL without TLS */
enum pop3_mech pop3_mech_used(const struct pop3 *p);
bool pop3_pipelining(const struct pop3 *p);

int pop3_stat(struct pop3 *p, uint32_t *count, uint64_t *octets, struct err *e);
int pop3_list_one(struct pop3 *p, uint32_t n, uint64_t *size, struct err *e);
int pop3_uidl_one(struct pop3 *p, uint32_t n, char uidl[POP3_UIDL_MAX + 1], struct err *e);
/* STAT + UIDL + LIST (pipelined when possible), validated: numbers in range
 * and unique, UIDLs valid and unique, counts equal to STAT's.  *out is
 * malloc'd; free with pop3_listing_free().  Without UIDL support has_uidl is
 * false and uidl fields are "". */
int pop3_listing(struct pop3 *p, struct pop3_listing **out, struct err *e);
void pop3_listing_free(struct pop3_listing **l);

/* RETR each of nums[0..n) to the sink, pipelined. */
int pop3_retr(struct pop3 *p, const uint32_t *nums, size_t n, const struct pop3_sink *s,
              struct err *e);
/* TOP num lines. */
int pop3_top(struct pop3 *p, uint32_t num, unsigned lines, const struct pop3_sink *s,
             struct err *e);
/* DELE each of nums[0..n) (marks only), pipelined. */
int pop3_dele(struct pop3 *p, const uint32_t *nums, size_t n, struct err *e);
int pop3_rset(struct pop3 *p, struct err *e);
int pop3_noop(struct pop3 *p, struct err *e);

/* Send QUIT, wait for the reply, close and free (*p = NULL).  0 if the server
 * answered +OK (marked messages are deleted), -1 otherwise with e set: nothing
 * may be assumed deleted.  After login, when no DELE was sent in the
 * session, QUIT is sent but its reply not awaited (RFC 1939 §6: the UPDATE
 * state has nothing to commit): 0 once it is written.  NULL-safe. */
int pop3_quit(struct pop3 **p, struct err *e);
/* Close without QUIT: nothing is deleted.  NULL-safe; *p = NULL. */
void pop3_abort(struct pop3 **p);

/* ---- pure protocol helpers, exposed for tests and fuzzing ---------------- */

enum pop3_status { POP3_ST_OK, POP3_ST_ERR, POP3_ST_CONT, POP3_ST_BAD };
/* Classify a status line ("+OK ...", "-ERR ...", "+ ..."); *text points at
 * the text after the status word and its space. */
enum pop3_status pop3_parse_status(const char *line, size_t len, const char **text,
                                   size_t *text_len);
/* 1..70 characters in 0x21..0x7E. */
bool pop3_uidl_valid(const char *s, size_t len);
/* Strict decimal in [min, max]; -1 otherwise. */
int pop3_parse_number(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out);
/* Fold one CAPA line into c (not counting or storing the raw line). */
void pop3_capa_parse_line(struct pop3_capa *c, const char *line, size_t len);
/* APOP timestamp "<...>" in a greeting; 0 with ts and ts_len set, -1 if none. */
int pop3_apop_timestamp(const char *greeting, size_t len, const char **ts, size_t *ts_len);

/* Streaming multi-line body decoder: dot-unstuffing and end-of-body detection
 * that survive any chunk boundary; optional CRLF -> LF.  Output goes through
 * an internal buffer to out() in large pieces. */
#define POP3_DOT_OBUF 65536
struct pop3_dot {
    int state;
    bool lf;
    bool done;
    uint64_t octets;  /* bytes produced so far */
    uint64_t max;     /* limit on octets; 0 = none */
    size_t olen;
    int (*out)(void *ctx, const char *buf, size_t len, struct err *e);
    void *ctx;
    char obuf[POP3_DOT_OBUF];
};
void pop3_dot_init(struct pop3_dot *d, bool lf, uint64_t max,
                   int (*out)(void *ctx, const char *buf, size_t len, struct err *e),
                   void *ctx);
/* Feed input; returns bytes consumed (stops right after the terminator, with
 * d->done set and all output flushed), or -1 with e set (ERR_LIMIT when more
 * than max octets, or the out() error). */
long pop3_dot_feed(struct pop3_dot *d, const char *in, size_t len, struct err *e);

#endif
