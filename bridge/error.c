/* error — typed errors; see include/error.h. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void err_clear(struct err *e)
{
    if (!e)
        return;
    memset(e, 0, sizeof *e);
}

int err_set(struct err *e, enum err_kind kind, const char *fmt, ...)
{
    if (!e)
        return -1;
    err_clear(e);
    e->kind = kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void err_sanitize(char *dst, size_t size, const char *src, size_t len)
{
    if (size == 0)
        return;
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < size; i++) {
        unsigned char c = (unsigned char)src[i];
        /* UTF-8 continuation/lead bytes pass; C0 controls and DEL do not */
        dst[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[o] = '\0';
    if (o < len && size > 4) {
        size_t at = o < size - 4 ? o : size - 4;
        memcpy(dst + at, "...", 4);
    }
}

static enum err_code code_from_text(const char *t)
{
    static const struct {
        const char *name;
        enum err_code code;
    } codes[] = {
        {"IN-USE", ERR_CODE_IN_USE},     {"LOGIN-DELAY", ERR_CODE_LOGIN_DELAY},
        {"SYS/TEMP", ERR_CODE_SYS_TEMP}, {"SYS/PERM", ERR_CODE_SYS_PERM},
        {"AUTH", ERR_CODE_AUTH},
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        size_t n = strlen(codes[i].name);
        /* codes are hierarchical: "SYS/TEMP/DISK" is a SYS/TEMP */
        if (strncmp(t, codes[i].name, n) == 0 && (t[n] == '\0' || t[n] == '/'))
            return codes[i].code;
    }
    return ERR_CODE_OTHER;
}

void err_set_server(struct err *e, const char *text, size_t len)
{
    if (!e)
        return;
    e->code = ERR_CODE_NONE;
    e->code_text[0] = '\0';
    size_t i = 0;
    while (i < len && text[i] == ' ')
        i++;
    if (i < len && text[i] == '[') {
        size_t j = i + 1;
        while (j < len && text[j] != ']' && j - i <= ERR_CODE_TEXT_MAX)
            j++;
        if (j < len && text[j] == ']' && j > i + 1 && j - i - 1 < ERR_CODE_TEXT_MAX) {
            err_sanitize(e->code_text, sizeof e->code_text, text + i + 1, j - i - 1);
            e->code = code_from_text(e->code_text);
        }
    }
    err_sanitize(e->server, sizeof e->server, text, len);
}

void err_prefix(struct err *e, const char *fmt, ...)
{
    if (!e)
        return;
    char pre[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    char old[ERR_MSG_MAX];
    memcpy(old, e->msg, sizeof old);
    if (snprintf(e->msg, sizeof e->msg, "%s: %s", pre, old) >= (int)sizeof e->msg)
        memcpy(e->msg + sizeof e->msg - 4, "...", 4); /* keep the truncation visible */
}

const char *err_kind_name(enum err_kind kind)
{
    switch (kind) {
    case ERR_NONE: return "ok";
    case ERR_CONN: return "connection";
    case ERR_TIMEOUT: return "timeout";
    case ERR_TLS: return "TLS";
    case ERR_PROTO: return "protocol";
    case ERR_SERVER: return "server";
    case ERR_AUTH: return "authentication";
    case ERR_LIMIT: return "limit";
    case ERR_INTERNAL: return "internal";
    case ERR_USAGE: return "usage";
    }
    return "unknown";
}

const char *err_code_name(enum err_code code)
{
    switch (code) {
    case ERR_CODE_NONE: return "";
    case ERR_CODE_IN_USE: return "IN-USE";
    case ERR_CODE_LOGIN_DELAY: return "LOGIN-DELAY";
    case ERR_CODE_SYS_TEMP: return "SYS/TEMP";
    case ERR_CODE_SYS_PERM: return "SYS/PERM";
    case ERR_CODE_AUTH: return "AUTH";
    case ERR_CODE_OTHER: return "other";
    case ERR_CODE_NO_GRANT: return "NO-GRANT";
    case ERR_CODE_REFRESH_WAIT: return "REFRESH-WAIT";
    }
    return "";
}

bool err_is_temporary(const struct err *e)
{
    if (!e)
        return false;
    switch (e->kind) {
    case ERR_CONN:
    case ERR_TIMEOUT:
        return true;
    case ERR_SERVER:
    case ERR_AUTH:
        return e->code == ERR_CODE_IN_USE || e->code == ERR_CODE_LOGIN_DELAY ||
               e->code == ERR_CODE_SYS_TEMP;
    default:
        return false;
    }
}

void err_format(const struct err *e, char *buf, size_t size)
{
    if (!size)
        return;
    const char *k = err_kind_name(e->kind);
    int n = e->server[0]
                ? snprintf(buf, size, "%s: %s: server said \"%s\"", k, e->msg, e->server)
                : snprintf(buf, size, "%s: %s", k, e->msg);
    if (n >= (int)size && size > 4)
        memcpy(buf + size - 4, "...", 4);
    /* "TLS: ..." reads better than "tls: ..."; other kinds are capitalised */
    if (buf[0] >= 'a' && buf[0] <= 'z')
        buf[0] = (char)(buf[0] - 'a' + 'A');
}
