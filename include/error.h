/*
 * error — the typed errors every layer below the bridge reports.
 *
 * A few categories, kept apart (connection, timeout, TLS, protocol violation,
 * server -ERR, authentication, limit exceeded, internal).  Our own description
 * (`msg`) is kept apart from the server's text (`server`), which is sanitised
 * (control characters replaced, length capped) before it is stored, so it can
 * be logged or returned over HTTP safely.  Neither ever holds a secret.
 *
 * A struct err is plain data owned by the caller; no call allocates.
 */
#ifndef POP3BRIDGE_ERROR_H
#define POP3BRIDGE_ERROR_H

#include <stdbool.h>
#include <stddef.h>

enum err_kind {
    ERR_NONE = 0,
    ERR_CONN,     /* connect, DNS, read/write failure, peer closed */
    ERR_TIMEOUT,  /* a deadline passed: connect, a wait, the whole session */
    ERR_TLS,      /* handshake, certificate chain, host name, fingerprint pin */
    ERR_PROTO,    /* the server broke the protocol (garbage, bad number...) */
    ERR_SERVER,   /* the server answered -ERR (see code / server text) */
    ERR_AUTH,     /* authentication refused, or no usable mechanism */
    ERR_LIMIT,    /* a named limit was exceeded (line length, message size...) */
    ERR_INTERNAL, /* out of memory, local I/O, bug */
    ERR_USAGE,    /* caller asked for something impossible (bad option...) */
};

/* RFC 2449 / RFC 3206 extended response codes we give meaning to. */
enum err_code {
    ERR_CODE_NONE = 0,
    ERR_CODE_IN_USE,      /* [IN-USE]      mailbox locked by another session */
    ERR_CODE_LOGIN_DELAY, /* [LOGIN-DELAY] logged in too soon */
    ERR_CODE_SYS_TEMP,    /* [SYS/TEMP]    temporary server problem */
    ERR_CODE_SYS_PERM,    /* [SYS/PERM]    permanent server problem */
    ERR_CODE_AUTH,        /* [AUTH]        credentials were wrong */
    ERR_CODE_OTHER,       /* some other bracketed code (see code_text) */
    ERR_CODE_NO_GRANT,    /* ours, with ERR_AUTH: the account has no usable OAuth2 grant
                             (never authorized, revoked/expired, or sealed under another
                             secrets key); nothing is sent anywhere until
                             `pop3bridge oauth2 login` stores one (or the key is back) */
    ERR_CODE_REFRESH_WAIT, /* ours, with ERR_TIMEOUT: the caller's deadline passed while
                              another thread or instance refreshed the account's OAuth2
                              token (oauth2_access_token_until); nothing was sent */
};

#define ERR_MSG_MAX 256
#define ERR_SERVER_MAX 256
#define ERR_CODE_TEXT_MAX 48

struct err {
    enum err_kind kind;
    enum err_code code;
    char code_text[ERR_CODE_TEXT_MAX]; /* e.g. "SYS/TEMP", "" if none */
    char msg[ERR_MSG_MAX];             /* our description: what and where */
    char server[ERR_SERVER_MAX];       /* the server's own text, sanitised */
};

/* Reset to ERR_NONE. */
void err_clear(struct err *e);

/* Set kind and our description (printf-style).  Clears code and server text.
 * Always returns -1 so callers can `return err_set(...)`. */
int err_set(struct err *e, enum err_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Attach the server's text (len bytes, not NUL-terminated) and its response
 * code, parsed from a leading "[CODE]" if present.  The text is sanitised. */
void err_set_server(struct err *e, const char *text, size_t len);

/* Prefix our description with "prefix: " (for adding context on the way up). */
void err_prefix(struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *err_kind_name(enum err_kind kind);  /* "connection", "TLS", ... */
const char *err_code_name(enum err_code code);  /* "IN-USE", ... or "" */

/* A temporary failure worth retrying later: connection, timeout, and the
 * server's [IN-USE], [LOGIN-DELAY], [SYS/TEMP]. */
bool err_is_temporary(const struct err *e);

/* One line for a person: "<Kind>: <msg>[: server said "<text>"]". */
void err_format(const struct err *e, char *buf, size_t size);

/* Copy `len` bytes of untrusted text into dst (size bytes), replacing control
 * and non-printable bytes by '?', truncating with "..." if needed. */
void err_sanitize(char *dst, size_t size, const char *src, size_t len);

#endif
