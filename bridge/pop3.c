/*
 * pop3 — the POP3 client engine: session state machine, login, pipelined
 * batches, streaming bodies.  See include/pop3.h for the RFCs and contracts.
 *
 * One file of about 1,200 lines, on purpose: every command goes through the
 * same static I/O helpers (queue, flush, read_status, broken), which keeps
 * the session's state changes in one place.  What needs no session (status
 * lines, numbers, UIDLs, CAPA lines, mechanism lists, the dot decoder) lives
 * in pop3_proto.c.
 */
#include "pop3.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "clock.h"
#include "sasl.h"

#define CMD_MAX 600 /* one command line we send (RFC 2449: AUTH <= 255 + framing) */
#define AUTH_INITIAL_MAX 255 /* RFC 5034 §4: initial response fits in 255 octets */

enum pop3_state {
    ST_CONNECTED = 0, /* greeting read, not authenticated */
    ST_TRANSACTION,   /* logged in */
    ST_BROKEN,        /* a fatal error happened; only abort remains */
};

static const char *const state_names[] = {"authorization", "transaction", "broken"};

struct pop3 {
    struct net *net;
    struct pop3_opts o;
    enum pop3_state state;
    char greeting[POP3_GREETING_MAX];
    char apop_ts[260];
    struct pop3_capa capa;
    enum pop3_mech mech;
    uint64_t max_message;
    struct pop3_dot dot; /* body decoder, reused for every message */
    bool marked;         /* a DELE was sent in this session: QUIT's answer matters */
    bool capa_queued;    /* CAPA went out with the last login line; its reply is next */
    bool capa_early;     /* the login's mechanism ends with +OK or -ERR after its last
                            line (not XOAUTH2/OAUTHBEARER: an error challenge may come) */
};

/* ---- mechanisms ----------------------------------------------------------- */

static const struct {
    enum pop3_mech mech;
    const char *name;  /* as --auth takes it */
    const char *sasl;  /* IANA SASL name, NULL if not SASL */
    bool plaintext;    /* reveals the secret to an eavesdropper */
    bool token;        /* needs an OAuth2 token, not a password */
} mechs[] = {
    {POP3_MECH_OAUTHBEARER, "oauthbearer", "OAUTHBEARER", true, true},
    {POP3_MECH_XOAUTH2, "xoauth2", "XOAUTH2", true, true},
    {POP3_MECH_SCRAM_SHA_256, "scram-sha-256", "SCRAM-SHA-256", false, false},
    {POP3_MECH_SCRAM_SHA_1, "scram-sha-1", "SCRAM-SHA-1", false, false},
    {POP3_MECH_CRAM_MD5, "cram-md5", "CRAM-MD5", false, false},
    {POP3_MECH_APOP, "apop", NULL, false, false},
    {POP3_MECH_PLAIN, "plain", "PLAIN", true, false},
    {POP3_MECH_LOGIN, "login", "LOGIN", true, false},
    {POP3_MECH_USER, "user", NULL, true, false},
};
#define N_MECHS (sizeof mechs / sizeof mechs[0])

static size_t mech_index(enum pop3_mech m)
{
    for (size_t i = 0; i < N_MECHS; i++)
        if (mechs[i].mech == m)
            return i;
    return N_MECHS;
}

const char *pop3_mech_name(enum pop3_mech m)
{
    size_t i = mech_index(m);
    return i < N_MECHS ? mechs[i].name : "none";
}

enum pop3_mech pop3_mech_parse(const char *name)
{
    for (size_t i = 0; i < N_MECHS; i++)
        if (strcasecmp(name, mechs[i].name) == 0)
            return mechs[i].mech;
    return POP3_MECH_NONE;
}

/* ---- trace ----------------------------------------------------------------- */

static void trace(struct pop3 *p, char dir, const char *line, size_t len)
{
    if (p->o.trace)
        p->o.trace(p->o.trace_ctx, dir, line, len);
}

static void tracef(struct pop3 *p, char dir, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void tracef(struct pop3 *p, char dir, const char *fmt, ...)
{
    if (!p->o.trace)
        return;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    p->o.trace(p->o.trace_ctx, dir, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* ---- low-level I/O ----------------------------------------------------------- */

static int broken(struct pop3 *p)
{
    p->state = ST_BROKEN;
    return -1;
}

/* Queue one command line.  `shown` is what the trace shows (secrets masked);
 * NULL shows the command itself. */
static int queue_cmd(struct pop3 *p, const char *cmd, size_t len, const char *shown,
                     struct err *e)
{
    if (len >= CMD_MAX) /* callers build commands in CMD_MAX buffers */
        return err_set(e, ERR_USAGE, "command longer than %d octets", CMD_MAX - 1);
    trace(p, 'C', shown ? shown : cmd, shown ? strlen(shown) : len);
    if (net_queue(p->net, cmd, len, e) < 0 || net_queue(p->net, "\r\n", 2, e) < 0)
        return broken(p);
    return 0;
}

static int queue_cmdf(struct pop3 *p, struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int queue_cmdf(struct pop3 *p, struct err *e, const char *fmt, ...)
{
    char buf[CMD_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return err_set(e, ERR_USAGE, "command too long");
    return queue_cmd(p, buf, (size_t)n, NULL, e);
}

static int flush(struct pop3 *p, struct err *e)
{
    if (net_flush(p->net, e) < 0)
        return broken(p);
    return 0;
}

/* Read one line (cap max).  Any failure breaks the session. */
static int read_line(struct pop3 *p, size_t max, const char **line, size_t *len,
                     const char *what, struct err *e)
{
    if (net_read_line(p->net, max, line, len, e) < 0) {
        if (e->kind == ERR_LIMIT)
            err_prefix(e, "%s", what);
        else if (e->kind == ERR_CONN || e->kind == ERR_TIMEOUT || e->kind == ERR_PROTO)
            err_prefix(e, "waiting for %s", what);
        return broken(p);
    }
    return 0;
}

/* Read a status line.  Returns the status (OK/ERR/CONT) with text, or -1 on
 * an I/O error or garbage (ERR_PROTO). */
static int read_status(struct pop3 *p, const char *what, const char **text, size_t *tlen,
                       struct err *e)
{
    const char *line;
    size_t len;
    net_wait_begin(p->net);
    if (read_line(p, POP3_LINE_MAX, &line, &len, what, e) < 0)
        return -1;
    trace(p, 'S', line, len);
    enum pop3_status st = pop3_parse_status(line, len, text, tlen);
    if (st == POP3_ST_BAD) {
        char shown[80];
        err_sanitize(shown, sizeof shown, line, len);
        err_set(e, ERR_PROTO, "unexpected reply to %s: \"%s\"", what, shown);
        return broken(p);
    }
    return (int)st;
}

/* A -ERR reply becomes ERR_SERVER with the server's text and code. */
static int server_error(struct err *e, const char *what, const char *text, size_t tlen)
{
    err_set(e, ERR_SERVER, "%s failed", what);
    err_set_server(e, text, tlen);
    return -1;
}

/* A single-line command's reply: 0 on +OK, -1 with ERR_SERVER on -ERR
 * (session intact), -1 otherwise (session broken). */
static int expect_ok(struct pop3 *p, const char *what, const char **text, size_t *tlen,
                     struct err *e)
{
    const char *t;
    size_t tl;
    int st = read_status(p, what, &t, &tl, e);
    if (st < 0)
        return -1;
    if (st == POP3_ST_ERR)
        return server_error(e, what, t, tl);
    if (st == POP3_ST_CONT) {
        err_set(e, ERR_PROTO, "unexpected continuation \"+\" in reply to %s", what);
        return broken(p);
    }
    if (text) {
        *text = t;
        *tlen = tl;
    }
    return 0;
}

/* Multi-line listing line reader: returns 1 for a line (unstuffed), 0 at the
 * terminating ".", -1 on error. */
static int read_list_line(struct pop3 *p, size_t max, const char *what, const char **line,
                          size_t *len, struct err *e)
{
    if (read_line(p, max, line, len, what, e) < 0)
        return -1;
    if (*len >= 1 && (*line)[0] == '.') {
        if (*len == 1)
            return 0;
        (*line)++; /* dot-unstuffing */
        (*len)--;
    }
    return 1;
}

/* ---- CAPA ------------------------------------------------------------------ */

static void capa_reset(struct pop3_capa *c)
{
    for (size_t i = 0; i < c->n_lines; i++)
        free(c->lines[i]);
    free(c->lines);
    memset(c, 0, sizeof *c);
    c->login_delay = -1;
    c->expire = -1;
}

static int do_capa(struct pop3 *p, struct err *e)
{
    bool queued = p->capa_queued;
    p->capa_queued = false;
    capa_reset(&p->capa);
    if (!queued && (queue_cmd(p, "CAPA", 4, NULL, e) < 0 || flush(p, e) < 0))
        return -1;
    const char *t;
    size_t tl;
    int st = read_status(p, "CAPA", &t, &tl, e);
    if (st < 0)
        return -1;
    if (st != POP3_ST_OK)
        return 0; /* no CAPA: an RFC 1939-only server */
    p->capa.known = true;
    p->capa.lines = calloc(POP3_CAPA_LINES_MAX, sizeof *p->capa.lines);
    if (!p->capa.lines) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return broken(p);
    }
    for (;;) {
        const char *line;
        size_t len;
        int r = read_list_line(p, POP3_CAPA_LINE_MAX, "CAPA line", &line, &len, e);
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        trace(p, 'S', line, len);
        if (p->capa.n_lines >= POP3_CAPA_LINES_MAX) {
            err_set(e, ERR_LIMIT, "CAPA reply has more than %d lines", POP3_CAPA_LINES_MAX);
            return broken(p);
        }
        char *copy = malloc(len + 1);
        if (!copy) {
            err_set(e, ERR_INTERNAL, "out of memory");
            return broken(p);
        }
        err_sanitize(copy, len + 1, line, len);
        p->capa.lines[p->capa.n_lines++] = copy;
        pop3_capa_parse_line(&p->capa, line, len);
    }
    return 0;
}

static bool capa_has_sasl(const struct pop3_capa *c, const char *mech)
{
    size_t ml = strlen(mech);
    const char *s = c->sasl;
    while (*s) {
        while (*s == ' ')
            s++;
        const char *t = s;
        while (*s && *s != ' ')
            s++;
        if ((size_t)(s - t) == ml && strncasecmp(t, mech, ml) == 0)
            return true;
    }
    return false;
}

/* ---- connect ------------------------------------------------------------------ */

struct pop3 *pop3_connect(const struct pop3_opts *o, struct err *e)
{
    err_clear(e);
    if (!o->host || !*o->host) {
        err_set(e, ERR_USAGE, "no server host given");
        return NULL;
    }
    struct pop3 *p = calloc(1, sizeof *p);
    if (!p) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    p->o = *o;
    if (!p->o.port)
        p->o.port = o->tls == POP3_TLS_IMPLICIT ? 995 : 110;
    if (p->o.timeout_ms <= 0)
        p->o.timeout_ms = 30000;
    p->max_message = o->max_message_size ? o->max_message_size : POP3_MAX_MESSAGE_DEFAULT;
    capa_reset(&p->capa);

    struct net_opts no = {
        .host = p->o.host,
        .port = p->o.port,
        .tls = o->tls == POP3_TLS_IMPLICIT,
        .ca_file = o->ca_file,
        .fingerprint = o->fingerprint,
        .timeout_ms = p->o.timeout_ms,
        .session_deadline = o->session_timeout_ms > 0 ? clock_mono_ms() + o->session_timeout_ms : 0,
        .cancel_fd = o->cancel_fd,
        /* TLS sessions are resumed per account (server, trust settings, user) */
        .session_tag = o->username ? o->username : "",
    };
    p->net = net_connect(&no, e);
    if (!p->net) {
        free(p);
        return NULL;
    }

    const char *t;
    size_t tl;
    int st = read_status(p, "the greeting", &t, &tl, e);
    if (st == POP3_ST_ERR) {
        server_error(e, "server refused the session in its greeting", t, tl);
        goto fail;
    }
    if (st != POP3_ST_OK) {
        if (st >= 0)
            err_set(e, ERR_PROTO, "greeting is not +OK");
        goto fail;
    }
    err_sanitize(p->greeting, sizeof p->greeting, t, tl);
    const char *ts;
    size_t tsl;
    if (pop3_apop_timestamp(t, tl, &ts, &tsl) == 0 && tsl < sizeof p->apop_ts) {
        memcpy(p->apop_ts, ts, tsl);
        p->apop_ts[tsl] = '\0';
    }
    if (do_capa(p, e) < 0)
        goto fail;

    if (o->tls == POP3_TLS_STARTTLS) {
        /* RFC 2595: STLS before login; never fall back to plaintext */
        if (p->capa.known && !p->capa.stls) {
            err_set(e, ERR_TLS, "server does not offer STLS (host %s); use --tls implicit, "
                                "or --tls none to go without TLS", p->o.host);
            goto fail;
        }
        if (queue_cmd(p, "STLS", 4, NULL, e) < 0 || flush(p, e) < 0)
            goto fail;
        if (expect_ok(p, "STLS", NULL, NULL, e) < 0) {
            if (e->kind == ERR_SERVER)
                e->kind = ERR_TLS;
            goto fail;
        }
        if (net_start_tls(p->net, e) < 0)
            goto fail;
        /* RFC 2595 §4: discard what was learnt before TLS */
        if (do_capa(p, e) < 0)
            goto fail;
    }
    p->state = ST_CONNECTED;
    return p;
fail:
    pop3_abort(&p);
    return NULL;
}

/* ---- login ------------------------------------------------------------------ */

/* Why a mechanism can't be used now, or NULL if it can. */
static const char *mech_unusable(const struct pop3 *p, size_t i)
{
    const struct pop3_capa *c = &p->capa;
    if (mechs[i].token ? !p->o.oauth2_token : !p->o.password)
        return mechs[i].token ? "no OAuth2 token given" : "no password given";
    if (mechs[i].plaintext && !net_is_tls(p->net) && !p->o.allow_plaintext)
        return "refusing to send a plaintext credential over an unencrypted connection "
               "(use TLS, or allow plaintext explicitly)";
    if (mechs[i].sasl)
        return capa_has_sasl(c, mechs[i].sasl) ? NULL : "not offered by the server";
    if (mechs[i].mech == POP3_MECH_APOP)
        return p->apop_ts[0] ? NULL : "not offered by the server (no timestamp in greeting)";
    /* USER: RFC 2449 servers say USER in CAPA; older ones have no CAPA */
    return (!c->known || c->user) ? NULL : "not offered by the server";
}

static int auth_failed(struct pop3 *p, const char *mechname, const char *text, size_t tl,
                       struct err *e)
{
    server_error(e, mechname, text, tl);
    /* temporary conditions keep their kind; the rest is an authentication failure */
    if (e->code != ERR_CODE_IN_USE && e->code != ERR_CODE_LOGIN_DELAY &&
        e->code != ERR_CODE_SYS_TEMP)
        e->kind = ERR_AUTH;
    snprintf(e->msg, sizeof e->msg, "%s login as \"%.64s\" refused", mechname, p->o.username);
    return -1;
}

static int login_user(struct pop3 *p, struct err *e)
{
    char cmd[CMD_MAX];
    if (strlen(p->o.username) > 255 || strlen(p->o.password) > 255 ||
        strpbrk(p->o.username, "\r\n") || strpbrk(p->o.password, "\r\n"))
        return err_set(e, ERR_USAGE, "user name or password too long or has a line break");
    int n = snprintf(cmd, sizeof cmd, "USER %s", p->o.username);
    if (n < 0 || (size_t)n >= sizeof cmd || queue_cmd(p, cmd, (size_t)n, NULL, e) < 0)
        return -1;
    bool pipe = p->capa.pipelining;
    if (!pipe) {
        if (flush(p, e) < 0)
            return -1;
        const char *t;
        size_t tl;
        int st = read_status(p, "USER", &t, &tl, e);
        if (st < 0)
            return -1;
        if (st != POP3_ST_OK)
            return auth_failed(p, "USER", t, tl, e);
    }
    n = snprintf(cmd, sizeof cmd, "PASS %s", p->o.password);
    if (n < 0 || (size_t)n >= sizeof cmd)
        return err_set(e, ERR_USAGE, "password too long");
    int r = queue_cmd(p, cmd, (size_t)n, "PASS ********", e);
    OPENSSL_cleanse(cmd, sizeof cmd);
    if (r < 0 || flush(p, e) < 0)
        return -1;
    const char *t;
    size_t tl;
    if (pipe) {
        int st = read_status(p, "USER", &t, &tl, e);
        if (st < 0)
            return -1;
        if (st != POP3_ST_OK) {
            /* PASS will be refused too; read that reply to stay in step */
            struct err ignore;
            read_status(p, "PASS", NULL, NULL, &ignore);
            return auth_failed(p, "USER", t, tl, e);
        }
    }
    int st = read_status(p, "PASS", &t, &tl, e);
    if (st < 0)
        return -1;
    if (st != POP3_ST_OK)
        return auth_failed(p, "PASS", t, tl, e);
    return 0;
}

static int login_apop(struct pop3 *p, struct err *e)
{
    char digest[33];
    if (sasl_apop_digest(p->apop_ts, strlen(p->apop_ts), p->o.password, digest, e) < 0)
        return -1;
    if (strlen(p->o.username) > 255 || strpbrk(p->o.username, "\r\n "))
        return err_set(e, ERR_USAGE, "user name too long or has a space or line break");
    char cmd[CMD_MAX], shown[300];
    int n = snprintf(cmd, sizeof cmd, "APOP %s %s", p->o.username, digest);
    if (snprintf(shown, sizeof shown, "APOP %s ********", p->o.username) >= (int)sizeof shown)
        shown[sizeof shown - 1] = '\0';
    if (n < 0 || (size_t)n >= sizeof cmd)
        return err_set(e, ERR_USAGE, "user name too long");
    if (queue_cmd(p, cmd, (size_t)n, shown, e) < 0 || flush(p, e) < 0)
        return -1;
    const char *t;
    size_t tl;
    int st = read_status(p, "APOP", &t, &tl, e);
    if (st < 0)
        return -1;
    if (st != POP3_ST_OK)
        return auth_failed(p, "APOP", t, tl, e);
    return 0;
}

/* Send one SASL response line (masked in the trace).  last: the mechanism
 * has nothing more to say; when the server's next line then ends the
 * exchange (+OK or -ERR: capa_early) and it has PIPELINING (RFC 2449
 * §6.6), the CAPA that follows a login (pop3_login) goes in the same
 * write, a round trip less. */
static int send_sasl_line(struct pop3 *p, const char *resp, bool last, struct err *e)
{
    size_t len = strlen(resp);
    if (len + 2 > POP3_SASL_MAX)
        return err_set(e, ERR_LIMIT, "AUTH response longer than %d octets", POP3_SASL_MAX);
    trace(p, 'C', len ? "********" : "", len ? 8 : 0);
    if (net_queue(p->net, resp, len, e) < 0 || net_queue(p->net, "\r\n", 2, e) < 0)
        return broken(p);
    if (last && p->capa_early && p->capa.known && p->capa.pipelining) {
        if (queue_cmd(p, "CAPA", 4, NULL, e) < 0)
            return -1;
        p->capa_queued = true;
    }
    return flush(p, e);
}

#define SASL_ROUNDS_MAX 8 /* challenges one AUTH exchange may take */

/* Send "AUTH mech", with the first response of a client-first mechanism
 * when it fits in 255 octets (not XOAUTH2); a first response that does not
 * go with the command is left in *held for the server's "+". */
static int sasl_begin(struct pop3 *p, struct sasl *s, size_t mi, char **held, int *last,
                      struct err *e)
{
    const char *name = mechs[mi].sasl;
    char cmd[CMD_MAX];
    bool sent = false;
    if (sasl_mech_client_first(name)) {
        char *first;
        if ((*last = sasl_step(s, NULL, &first, e)) < 0)
            return -1;
        size_t fl = strlen(first);
        if (mechs[mi].mech != POP3_MECH_XOAUTH2 && strlen(name) + fl + 6 <= AUTH_INITIAL_MAX) {
            int n = snprintf(cmd, sizeof cmd, "AUTH %s %s", name, fl ? first : "=");
            char shown[64];
            snprintf(shown, sizeof shown, "AUTH %s ********", name);
            int q = n < 0 ? -1 : queue_cmd(p, cmd, (size_t)n, shown, e);
            OPENSSL_cleanse(cmd, sizeof cmd);
            if (q < 0)
                return -1;
            sent = true;
        } else {
            *held = first;
        }
    }
    if (!sent && queue_cmdf(p, e, "AUTH %s", name) < 0)
        return -1;
    return flush(p, e);
}

/* Answer the server's challenge t (tl octets) with the mechanism's next
 * response; when the mechanism fails, cancel with "*" (RFC 5034 §4: the
 * server answers -ERR). */
static int sasl_answer(struct pop3 *p, struct sasl *s, const char *what, const char *t, size_t tl,
                       int *last, struct err *e)
{
    if (tl > POP3_SASL_MAX) {
        err_set(e, ERR_LIMIT, "%s challenge longer than %d octets", what, POP3_SASL_MAX);
        return broken(p);
    }
    char *challenge = strndup(t, tl);
    if (!challenge) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return broken(p);
    }
    char *resp;
    *last = sasl_step(s, challenge, &resp, e);
    free(challenge);
    if (*last < 0) {
        struct err ignore;
        if (send_sasl_line(p, "*", false, &ignore) == 0)
            read_status(p, what, &t, &tl, &ignore);
        err_prefix(e, "%s", what);
        return -1;
    }
    return send_sasl_line(p, resp, *last == SASL_DONE, e);
}

/* RFC 5034 AUTH exchange.  Client-first mechanisms send their first response
 * with the command when it fits in 255 octets, otherwise after the server's
 * empty "+"; XOAUTH2 always goes in two steps (AUTH XOAUTH2, "+", token), the
 * form Microsoft 365 requires. */
static int login_sasl(struct pop3 *p, size_t mi, struct err *e)
{
    const char *name = mechs[mi].sasl;
    struct sasl_creds creds = {
        .username = p->o.username,
        .password = p->o.password,
        .oauth2_token = p->o.oauth2_token,
        .host = p->o.host,
        .port = p->o.port,
    };
    char what[48];
    snprintf(what, sizeof what, "AUTH %s", name);
    struct sasl *s = sasl_new(name, &creds, e);
    if (!s)
        return -1;
    p->capa_early = !mechs[mi].token;
    int rc = -1;
    char *held = NULL;    /* a first response waiting for the server's "+" */
    int last = SASL_MORE; /* what the mechanism said last */
    if (sasl_begin(p, s, mi, &held, &last, e) < 0)
        goto out;
    for (int rounds = 0;; rounds++) {
        const char *t;
        size_t tl;
        int st = read_status(p, what, &t, &tl, e);
        if (st < 0)
            goto out;
        if (st == POP3_ST_OK) {
            if (last != SASL_DONE) {
                /* SCRAM is mutual: a server that accepts without proving it
                 * knows the password is not the one we meant to talk to */
                err_set(e, ERR_AUTH, "%s: the server accepted the login before the mechanism "
                                     "finished (no server proof); refusing the session", what);
                broken(p);
                goto out;
            }
            rc = 0;
            break;
        }
        if (st == POP3_ST_ERR) {
            auth_failed(p, what, t, tl, e);
            const char *detail = sasl_error_detail(s);
            if (detail && *detail && !e->server[0])
                err_sanitize(e->server, sizeof e->server, detail, strlen(detail));
            goto out;
        }
        if (rounds >= SASL_ROUNDS_MAX) {
            err_set(e, ERR_PROTO, "%s: more than %d challenges", what, SASL_ROUNDS_MAX);
            broken(p);
            goto out;
        }
        const char *r = held;
        held = NULL;
        if ((r ? send_sasl_line(p, r, last == SASL_DONE, e)
               : sasl_answer(p, s, what, t, tl, &last, e)) < 0)
            goto out;
    }
out:
    if (rc < 0 && p->capa_queued) {
        p->capa_queued = false;
        broken(p); /* a CAPA reply is still to come: out of step */
    }
    sasl_free(&s);
    return rc;
}

int pop3_login(struct pop3 *p, struct err *e)
{
    err_clear(e);
    if (p->state != ST_CONNECTED)
        return err_set(e, ERR_USAGE, "login in state %s", state_names[p->state]);
    if (!p->o.username || !*p->o.username)
        return err_set(e, ERR_USAGE, "no user name given");

    enum pop3_mech order[POP3_MECHS_MAX];
    size_t n = 0;
    bool explicit = p->o.n_mechs > 0;
    if (explicit) {
        n = p->o.n_mechs;
        memcpy(order, p->o.mechs, n * sizeof order[0]);
    } else {
        for (size_t i = 0; i < N_MECHS; i++)
            order[n++] = mechs[i].mech;
    }
    size_t chosen = N_MECHS;
    const char *why_first = NULL;
    enum pop3_mech why_mech = POP3_MECH_NONE;
    for (size_t k = 0; k < n && chosen == N_MECHS; k++) {
        size_t i = mech_index(order[k]);
        if (i == N_MECHS)
            continue;
        const char *why = mech_unusable(p, i);
        if (!why)
            chosen = i;
        else if (!why_first || (strstr(why, "plaintext") && !strstr(why_first, "plaintext"))) {
            why_first = why;
            why_mech = order[k];
        }
    }
    if (chosen == N_MECHS) {
        if (why_first && strstr(why_first, "plaintext"))
            return err_set(e, ERR_AUTH, "%s: %s", pop3_mech_name(why_mech), why_first);
        if (explicit && n == 1)
            return err_set(e, ERR_AUTH, "cannot use %s: %s", pop3_mech_name(order[0]),
                           why_first ? why_first : "unknown");
        return err_set(e, ERR_AUTH,
                       "no usable authentication mechanism (server offers: %s%s%s%s)",
                       p->capa.sasl[0] ? p->capa.sasl : "", p->capa.user ? " USER" : "",
                       p->apop_ts[0] ? " APOP" : "",
                       p->o.password || p->o.oauth2_token ? "" : "; no password given");
    }
    int r;
    switch (mechs[chosen].mech) {
    case POP3_MECH_USER: r = login_user(p, e); break;
    case POP3_MECH_APOP: r = login_apop(p, e); break;
    default: r = login_sasl(p, chosen, e); break;
    }
    if (r < 0)
        return -1;
    p->mech = mechs[chosen].mech;
    p->state = ST_TRANSACTION;
    /* the credentials are not kept past login: the caller may wipe them now */
    p->o.password = NULL;
    p->o.oauth2_token = NULL;
    tracef(p, 'S', "[logged in with %s]", pop3_mech_name(p->mech));
    /* capabilities may differ after login (RFC 2449 §5) */
    struct pop3_capa before = p->capa;
    memset(&p->capa, 0, sizeof p->capa);
    if (do_capa(p, e) < 0) {
        capa_reset(&before);
        return -1;
    }
    if (!p->capa.known) {
        capa_reset(&p->capa);
        p->capa = before;
    } else {
        capa_reset(&before);
    }
    return 0;
}

struct pop3 *pop3_open(const struct pop3_opts *o, struct err *e)
{
    struct pop3 *p = pop3_connect(o, e);
    if (!p)
        return NULL;
    if (pop3_login(p, e) < 0) {
        pop3_abort(&p);
        return NULL;
    }
    return p;
}

const char *pop3_greeting(const struct pop3 *p) { return p->greeting; }
const struct pop3_capa *pop3_capa(const struct pop3 *p) { return &p->capa; }
const struct net_tls_info *pop3_tls_info(const struct pop3 *p) { return net_tls_info(p->net); }
enum pop3_mech pop3_mech_used(const struct pop3 *p) { return p->mech; }
bool pop3_pipelining(const struct pop3 *p) { return p->capa.pipelining; }

static int need_transaction(struct pop3 *p, const char *what, struct err *e)
{
    err_clear(e);
    if (p->state != ST_TRANSACTION)
        return err_set(e, ERR_USAGE, "%s in state %s", what, state_names[p->state]);
    return 0;
}

/* ---- simple commands -------------------------------------------------------- */

static int parse_stat(const char *t, size_t tl, uint32_t *count, uint64_t *octets, struct err *e)
{
    const char *sp = memchr(t, ' ', tl);
    uint64_t c, o;
    const char *ostart = sp ? sp + 1 : NULL;
    size_t olen = 0;
    if (ostart) {
        const char *oend = memchr(ostart, ' ', (size_t)(t + tl - ostart));
        olen = (size_t)((oend ? oend : t + tl) - ostart);
    }
    if (!sp || pop3_parse_number(t, (size_t)(sp - t), 0, UINT64_MAX, &c) < 0 ||
        pop3_parse_number(ostart, olen, 0, UINT64_MAX, &o) < 0) {
        char shown[80];
        err_sanitize(shown, sizeof shown, t, tl);
        return err_set(e, ERR_PROTO, "malformed STAT reply \"%s\"", shown);
    }
    if (c > POP3_MESSAGES_MAX)
        return err_set(e, ERR_LIMIT, "mailbox has %llu messages, more than the limit of %u",
                       (unsigned long long)c, POP3_MESSAGES_MAX);
    *count = (uint32_t)c;
    *octets = o;
    return 0;
}

int pop3_stat(struct pop3 *p, uint32_t *count, uint64_t *octets, struct err *e)
{
    if (need_transaction(p, "STAT", e) < 0)
        return -1;
    const char *t;
    size_t tl;
    if (queue_cmd(p, "STAT", 4, NULL, e) < 0 || flush(p, e) < 0 ||
        expect_ok(p, "STAT", &t, &tl, e) < 0)
        return -1;
    if (parse_stat(t, tl, count, octets, e) < 0)
        return broken(p);
    return 0;
}

/* "n rest": message number, then the rest after one space. */
static int split_numbered(const char *line, size_t len, uint64_t maxnum, uint64_t *num,
                          const char **rest, size_t *rlen)
{
    const char *sp = memchr(line, ' ', len);
    if (!sp)
        return -1;
    if (pop3_parse_number(line, (size_t)(sp - line), 1, maxnum, num) < 0)
        return -1;
    const char *r = sp + 1;
    size_t rl = (size_t)(line + len - r);
    while (rl && (r[rl - 1] == ' ' || r[rl - 1] == '\t'))
        rl--; /* trailing blanks some servers add */
    *rest = r;
    *rlen = rl;
    return 0;
}

static int parse_list_value(const char *r, size_t rl, uint64_t *size)
{
    const char *sp = memchr(r, ' ', rl); /* RFC 1939 allows more after the size */
    return pop3_parse_number(r, sp ? (size_t)(sp - r) : rl, 0, UINT64_MAX, size);
}

int pop3_list_one(struct pop3 *p, uint32_t n, uint64_t *size, struct err *e)
{
    if (need_transaction(p, "LIST", e) < 0)
        return -1;
    const char *t, *r;
    size_t tl, rl;
    uint64_t num;
    if (queue_cmdf(p, e, "LIST %u", n) < 0 || flush(p, e) < 0 || expect_ok(p, "LIST", &t, &tl, e) < 0)
        return -1;
    if (split_numbered(t, tl, POP3_MESSAGES_MAX, &num, &r, &rl) < 0 || num != n ||
        parse_list_value(r, rl, size) < 0) {
        err_set(e, ERR_PROTO, "malformed reply to LIST %u", n);
        return broken(p);
    }
    return 0;
}

int pop3_uidl_one(struct pop3 *p, uint32_t n, char uidl[POP3_UIDL_MAX + 1], struct err *e)
{
    if (need_transaction(p, "UIDL", e) < 0)
        return -1;
    const char *t, *r;
    size_t tl, rl;
    uint64_t num;
    if (queue_cmdf(p, e, "UIDL %u", n) < 0 || flush(p, e) < 0 || expect_ok(p, "UIDL", &t, &tl, e) < 0)
        return -1;
    if (split_numbered(t, tl, POP3_MESSAGES_MAX, &num, &r, &rl) < 0 || num != n ||
        !pop3_uidl_valid(r, rl)) {
        err_set(e, ERR_PROTO, "malformed or invalid reply to UIDL %u", n);
        return broken(p);
    }
    memcpy(uidl, r, rl);
    uidl[rl] = '\0';
    return 0;
}

int pop3_rset(struct pop3 *p, struct err *e)
{
    if (need_transaction(p, "RSET", e) < 0)
        return -1;
    if (queue_cmd(p, "RSET", 4, NULL, e) < 0 || flush(p, e) < 0)
        return -1;
    return expect_ok(p, "RSET", NULL, NULL, e);
}

int pop3_noop(struct pop3 *p, struct err *e)
{
    if (need_transaction(p, "NOOP", e) < 0)
        return -1;
    if (queue_cmd(p, "NOOP", 4, NULL, e) < 0 || flush(p, e) < 0)
        return -1;
    return expect_ok(p, "NOOP", NULL, NULL, e);
}

/* ---- listing ------------------------------------------------------------------- */

static int cmp_uidl(const void *a, const void *b)
{
    const struct pop3_entry *x = *(const struct pop3_entry *const *)a;
    const struct pop3_entry *y = *(const struct pop3_entry *const *)b;
    return strcmp(x->uidl, y->uidl);
}

/* Read a UIDL or LIST multi-line body into l.  `seen` marks numbers seen. */
static int read_listing_body(struct pop3 *p, struct pop3_listing *l, bool uidl, uint8_t *seen,
                             struct err *e)
{
    const char *what = uidl ? "UIDL listing" : "LIST listing";
    uint32_t got = 0;
    for (;;) {
        const char *line, *r;
        size_t len, rl;
        uint64_t num;
        int k = read_list_line(p, POP3_LINE_MAX, what, &line, &len, e);
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        if (p->o.trace)
            trace(p, 'S', line, len);
        char shown[96];
        if (split_numbered(line, len, UINT64_MAX, &num, &r, &rl) < 0) {
            err_sanitize(shown, sizeof shown, line, len);
            err_set(e, ERR_PROTO, "malformed %s line \"%s\"", what, shown);
            return broken(p);
        }
        if (num > l->count) {
            err_set(e, ERR_PROTO, "%s names message %llu but STAT said %u messages", what,
                    (unsigned long long)num, l->count);
            return broken(p);
        }
        if (seen[num] & (uidl ? 1 : 2)) {
            err_set(e, ERR_PROTO, "%s lists message %llu twice", what, (unsigned long long)num);
            return broken(p);
        }
        seen[num] |= uidl ? 1 : 2;
        struct pop3_entry *en = &l->entries[num - 1];
        en->number = (uint32_t)num;
        if (uidl) {
            if (!pop3_uidl_valid(r, rl)) {
                err_sanitize(shown, sizeof shown, r, rl);
                err_set(e, ERR_PROTO,
                        "invalid UIDL \"%s\" for message %llu (must be 1-%d characters 0x21-0x7E)",
                        shown, (unsigned long long)num, POP3_UIDL_MAX);
                return broken(p);
            }
            memcpy(en->uidl, r, rl);
            en->uidl[rl] = '\0';
        } else if (parse_list_value(r, rl, &en->size) < 0) {
            err_sanitize(shown, sizeof shown, line, len);
            err_set(e, ERR_PROTO, "malformed LIST line \"%s\"", shown);
            return broken(p);
        }
        got++;
    }
    if (got != l->count) {
        err_set(e, ERR_PROTO, "%s has %u entries but STAT said %u messages", what, got, l->count);
        return broken(p);
    }
    return 0;
}

/* STAT (with UIDL and LIST queued behind it when pipelining), and room for
 * its count of entries. */
static int listing_stat(struct pop3 *p, struct pop3_listing *l, bool pipe, bool want_uidl,
                        uint8_t **seen, struct err *e)
{
    const char *t;
    size_t tl;
    if (queue_cmd(p, "STAT", 4, NULL, e) < 0)
        return -1;
    if (pipe && ((want_uidl && queue_cmd(p, "UIDL", 4, NULL, e) < 0) ||
                 queue_cmd(p, "LIST", 4, NULL, e) < 0))
        return -1;
    if (flush(p, e) < 0)
        return -1;
    int stat_rc = expect_ok(p, "STAT", &t, &tl, e);
    if (stat_rc == 0 && parse_stat(t, tl, &l->count, &l->octets, e) < 0)
        return broken(p);
    if (stat_rc < 0 && (!pipe || p->state == ST_BROKEN))
        return -1;
    l->entries = calloc((size_t)l->count + 1, sizeof *l->entries);
    *seen = calloc((size_t)l->count + 1, 1);
    if (!l->entries || !*seen) {
        err_set(e, ERR_INTERNAL, "out of memory for %u listing entries", l->count);
        return broken(p);
    }
    /* pipelined UIDL/LIST replies must still be read to stay in step; a
     * failed STAT leaves us nothing to check them against: give up */
    return stat_rc < 0 ? broken(p) : 0;
}

/* UIDL.  0, -1, or 1 when the server refused it although it advertised it
 * (e set; a pipelined LIST reply is still to be read). */
static int listing_uidl(struct pop3 *p, struct pop3_listing *l, bool pipe, uint8_t *seen,
                        struct err *e)
{
    const char *t;
    size_t tl;
    if (!pipe && (queue_cmd(p, "UIDL", 4, NULL, e) < 0 || flush(p, e) < 0))
        return -1;
    int st = read_status(p, "UIDL", &t, &tl, e);
    if (st < 0)
        return -1;
    if (st == POP3_ST_OK) {
        if (read_listing_body(p, l, true, seen, e) < 0)
            return -1;
        l->has_uidl = true;
    } else if (st == POP3_ST_CONT) {
        err_set(e, ERR_PROTO, "unexpected \"+\" reply to UIDL");
        return broken(p);
    } else if (p->capa.uidl) {
        server_error(e, "UIDL", t, tl);
        return 1;
    }
    return 0;
}

static int listing_list(struct pop3 *p, struct pop3_listing *l, bool pipe, uint8_t *seen,
                        struct err *e)
{
    const char *t;
    size_t tl;
    if (!pipe && (queue_cmd(p, "LIST", 4, NULL, e) < 0 || flush(p, e) < 0))
        return -1;
    int st = read_status(p, "LIST", &t, &tl, e);
    if (st < 0)
        return -1;
    if (st == POP3_ST_ERR) {
        server_error(e, "LIST", t, tl);
        return -1;
    }
    if (st != POP3_ST_OK) {
        err_set(e, ERR_PROTO, "unexpected \"+\" reply to LIST");
        return broken(p);
    }
    return read_listing_body(p, l, false, seen, e);
}

/* No UIDL used by two messages (mpop's pop3_uidl check). */
static int listing_unique(const struct pop3_listing *l, struct err *e)
{
    if (!l->has_uidl || l->count < 2)
        return 0;
    struct pop3_entry **v = malloc((size_t)l->count * sizeof *v);
    if (!v)
        return err_set(e, ERR_INTERNAL, "out of memory");
    for (uint32_t i = 0; i < l->count; i++)
        v[i] = &l->entries[i];
    qsort(v, l->count, sizeof *v, cmp_uidl);
    int rc = 0;
    for (uint32_t i = 1; i < l->count && rc == 0; i++)
        if (strcmp(v[i - 1]->uidl, v[i]->uidl) == 0)
            rc = err_set(e, ERR_PROTO, "UIDL \"%s\" is used by messages %u and %u", v[i]->uidl,
                         v[i - 1]->number, v[i]->number);
    free(v);
    return rc;
}

int pop3_listing(struct pop3 *p, struct pop3_listing **out, struct err *e)
{
    *out = NULL;
    if (need_transaction(p, "listing", e) < 0)
        return -1;
    bool pipe = p->capa.pipelining;
    bool want_uidl = !p->capa.known || p->capa.uidl;
    struct pop3_listing *l = calloc(1, sizeof *l);
    uint8_t *seen = NULL;
    if (!l)
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (listing_stat(p, l, pipe, want_uidl, &seen, e) < 0)
        goto fail;
    int u = want_uidl ? listing_uidl(p, l, pipe, seen, e) : 0;
    if (u < 0)
        goto fail;
    if (u > 0) {
        if (pipe) { /* stay in step: read the LIST reply already asked for */
            const char *t;
            size_t tl;
            struct err ignore;
            int st = read_status(p, "LIST", &t, &tl, &ignore);
            if (st == POP3_ST_OK && read_listing_body(p, l, false, seen, &ignore) < 0)
                broken(p);
        }
        goto fail;
    }
    if (listing_list(p, l, pipe, seen, e) < 0 || listing_unique(l, e) < 0)
        goto fail;
    free(seen);
    *out = l;
    return 0;
fail:
    free(seen);
    pop3_listing_free(&l);
    return -1;
}

void pop3_listing_free(struct pop3_listing **l)
{
    if (!l || !*l)
        return;
    free((*l)->entries);
    free(*l);
    *l = NULL;
}

/* ---- pipelined batches ------------------------------------------------------------ */

enum batch_kind { BATCH_RETR, BATCH_TOP, BATCH_DELE };

struct body_ctx {
    const struct pop3_sink *sink;
};

static int body_out(void *ctx, const char *buf, size_t len, struct err *e)
{
    struct body_ctx *b = ctx;
    return b->sink->data(b->sink->ctx, buf, len, e);
}

/* Read one multi-line body into the sink. */
static int read_body(struct pop3 *p, uint32_t num, const struct pop3_sink *s, struct err *e)
{
    struct body_ctx bc = {s};
    struct pop3_dot *d = &p->dot;
    pop3_dot_init(d, s->lf, p->max_message, body_out, &bc);
    for (;;) {
        size_t avail;
        const char *data = net_data(p->net, &avail);
        if (avail) {
            long used = pop3_dot_feed(d, data, avail, e);
            if (used < 0) {
                if (e->kind == ERR_LIMIT)
                    snprintf(e->msg, sizeof e->msg,
                             "message %u is larger than the limit of %llu octets", num,
                             (unsigned long long)p->max_message);
                return broken(p);
            }
            net_consume(p->net, (size_t)used);
            if (d->done)
                break;
        }
        if (net_fill(p->net, e) < 0) {
            err_prefix(e, "reading message %u", num);
            return broken(p);
        }
    }
    tracef(p, 'S', "[message %u: %llu octets]", num, (unsigned long long)d->octets);
    if (s->end && s->end(s->ctx, num, d->octets, e) < 0)
        return broken(p);
    return 0;
}

static int queue_batch_cmd(struct pop3 *p, enum batch_kind k, uint32_t num, unsigned lines,
                           struct err *e)
{
    switch (k) {
    case BATCH_RETR: return queue_cmdf(p, e, "RETR %u", num);
    case BATCH_TOP: return queue_cmdf(p, e, "TOP %u %u", num, lines);
    case BATCH_DELE: return queue_cmdf(p, e, "DELE %u", num);
    }
    return -1;
}

static const char *batch_name(enum batch_kind k)
{
    return k == BATCH_RETR ? "RETR" : k == BATCH_TOP ? "TOP" : "DELE";
}

static int run_batch(struct pop3 *p, enum batch_kind kind, const uint32_t *nums, size_t n,
                     unsigned lines, const struct pop3_sink *s, struct err *e)
{
    if (need_transaction(p, batch_name(kind), e) < 0)
        return -1;
    size_t window = p->capa.pipelining ? POP3_WINDOW : 1;
    size_t low = window > 1 ? window / 2 : 0;
    size_t sent = 0, done = 0;
    struct err first_fail = {0};
    bool stop = false;
    while (done < n && !(stop && done == sent)) {
        if (!stop && sent < n && sent - done <= low) {
            while (sent < n && sent - done < window)
                if (queue_batch_cmd(p, kind, nums[sent++], lines, e) < 0)
                    return -1;
            /* no flush: net_fill writes queued commands while it waits for
             * replies, so neither side can block the other */
        }
        char what[32];
        snprintf(what, sizeof what, "%s %u", batch_name(kind), nums[done]);
        const char *t;
        size_t tl;
        int st = read_status(p, what, &t, &tl, e);
        if (st < 0)
            return -1;
        if (st == POP3_ST_CONT) {
            err_set(e, ERR_PROTO, "unexpected \"+\" reply to %s", what);
            return broken(p);
        }
        if (st == POP3_ST_ERR) {
            struct err why;
            err_clear(&why);
            server_error(&why, what, t, tl);
            if (!first_fail.kind)
                first_fail = why;
            if (s && s->failed && s->failed(s->ctx, nums[done], &why) < 0)
                stop = true;
            done++;
            continue;
        }
        if (kind != BATCH_DELE) {
            if (s->begin && s->begin(s->ctx, nums[done], e) < 0)
                return broken(p);
            if (read_body(p, nums[done], s, e) < 0)
                return -1;
        }
        done++;
    }
    if (first_fail.kind && (!s || !s->failed || stop)) {
        *e = first_fail;
        return -1;
    }
    return 0;
}

int pop3_retr(struct pop3 *p, const uint32_t *nums, size_t n, const struct pop3_sink *s,
              struct err *e)
{
    return run_batch(p, BATCH_RETR, nums, n, 0, s, e);
}

int pop3_top(struct pop3 *p, uint32_t num, unsigned lines, const struct pop3_sink *s,
             struct err *e)
{
    return run_batch(p, BATCH_TOP, &num, 1, lines, s, e);
}

int pop3_dele(struct pop3 *p, const uint32_t *nums, size_t n, struct err *e)
{
    if (n && p && p->state == ST_TRANSACTION)
        p->marked = true;
    return run_batch(p, BATCH_DELE, nums, n, 0, NULL, e);
}

/* ---- ending a session ---------------------------------------------------------------- */

static void destroy(struct pop3 *p)
{
    net_close(&p->net);
    capa_reset(&p->capa);
    free(p);
}

int pop3_quit(struct pop3 **pp, struct err *e)
{
    err_clear(e);
    if (!pp || !*pp)
        return 0;
    struct pop3 *p = *pp;
    *pp = NULL;
    int rc = -1;
    if (p->state == ST_BROKEN) {
        err_set(e, ERR_USAGE, "session is broken; closed without QUIT (nothing deleted)");
    } else if (p->state == ST_TRANSACTION && !p->marked) {
        /* RFC 1939 §6: without DELE the UPDATE state has nothing to commit,
         * so QUIT is said but its answer not awaited (one round trip less
         * per poll) */
        if (queue_cmd(p, "QUIT", 4, NULL, e) == 0 && net_finish(p->net, e) == 0)
            rc = 0;
    } else if (queue_cmd(p, "QUIT", 4, NULL, e) == 0 && flush(p, e) == 0 &&
               expect_ok(p, "QUIT", NULL, NULL, e) == 0) {
        rc = 0;
    } else if (e->kind == ERR_SERVER) {
        err_prefix(e, "deletions not committed");
    }
    destroy(p);
    return rc;
}

void pop3_abort(struct pop3 **pp)
{
    if (!pp || !*pp)
        return;
    destroy(*pp);
    *pp = NULL;
}
