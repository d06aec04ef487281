/*
 * config — the configuration file; see include/config.h.
 *
 * One table per kind of object (the file, "api", an API token, a webhook, an
 * account, an account's "oauth2") lists every key with its type, the field it
 * fills, its default (as JSON text, parsed by the same code as the file) and
 * its bounds.  The same tables drive parsing, the messages, the summary,
 * config_print_keys(), secret resolution and config_free().  What one key
 * cannot say alone (port depends on tls, names must be unique, an account's
 * webhooks must exist...) is checked by the table's `check` function.
 *
 * This file loads (config_load: read, parse, check, resolve), frees and
 * prints; the tables, the parsing, the checks and the secrets are in
 * config_*.c, whose shared parts config_impl.h declares.
 */
#include "config.h"
#include "config_impl.h"

#include "codec.h"
#include "filter.h"
#include "secretbox.h"
#include "secrets.h"

#include "units.h"
#include "url.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(enum config_log_level) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_log_format) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_tls) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_start) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_after) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_auth) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_oauth2_provider) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_oauth2_flow) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_event_type) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_tristate) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_dedupe_by) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum config_include) == sizeof(int), "enum stored as int");

/* ---- diagnostics ------------------------------------------------------------ */

static void diag_push(struct config_diag *d, const char *line)
{
    if (!d)
        return;
    if (d->count >= CONFIG_DIAG_MAX) {
        d->dropped++;
        return;
    }
    char **n = realloc(d->lines, (d->count + 1) * sizeof *n);
    char *copy = strdup(line);
    if (!n || !copy) {
        free(copy);
        if (n)
            d->lines = n;
        d->dropped++;
        return;
    }
    d->lines = n;
    d->lines[d->count++] = copy;
}

/* "FILE: path: message" (path may be ""). */
void cfg_problem(struct ctx *c, const char *path, const char *fmt, ...)
{
    char msg[CONFIG_DIAG_LINE_MAX], line[CONFIG_DIAG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(msg, sizeof msg, "(message could not be formatted)");
    else if ((size_t)n >= sizeof msg)
        memcpy(msg + sizeof msg - 4, "...", 4);
    n = snprintf(line, sizeof line, "%s: %s%s%s", c->file, path, *path ? ": " : "", msg);
    if (n >= 0 && (size_t)n >= sizeof line)
        memcpy(line + sizeof line - 4, "...", 4);
    c->errors++;
    diag_push(c->d, line);
}

void config_diag_print(const struct config_diag *d, FILE *out)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->count; i++)
        fprintf(out, "%s\n", d->lines[i]);
    if (d->dropped)
        fprintf(out, "... and %zu more problems not shown (limit CONFIG_DIAG_MAX=%d)\n", d->dropped,
                CONFIG_DIAG_MAX);
}

void config_diag_free(struct config_diag *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->count; i++)
        free(d->lines[i]);
    free(d->lines);
    d->lines = NULL;
    d->count = 0;
    d->dropped = 0;
}

struct config *config_load_or_print(const char *path, bool layout_only, FILE *out)
{
    struct config_diag d = {0};
    struct config *cfg = layout_only ? config_load_layout(path, &d) : config_load(path, &d);
    if (!cfg)
        config_diag_print(&d, out);
    config_diag_free(&d);
    return cfg;
}

/* ---- reading the file ---------------------------------------------------------------- */

static void offset_to_pos(const char *buf, size_t off, size_t *line, size_t *col)
{
    size_t l = 1, start = 0;
    for (size_t i = 0; i < off; i++)
        if (buf[i] == '\n') {
            l++;
            start = i + 1;
        }
    *line = l;
    *col = off - start + 1;
}

__attribute__((format(printf, 4, 5))) static void problem_at(struct ctx *c, const char *buf,
                                                             size_t off, const char *fmt, ...)
{
    char msg[CONFIG_DIAG_LINE_MAX], where[64];
    size_t line, col;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    offset_to_pos(buf, off, &line, &col);
    n = snprintf(where, sizeof where, "%zu:%zu", line, col);
    if (n < 0 || (size_t)n >= sizeof where)
        where[0] = '\0';
    /* cfg_problem() prints "FILE: path: msg"; here the position joins the file name */
    char line_buf[CONFIG_DIAG_LINE_MAX];
    n = snprintf(line_buf, sizeof line_buf, "%s:%s: %s", c->file, where, msg);
    if (n >= 0 && (size_t)n >= sizeof line_buf)
        memcpy(line_buf + sizeof line_buf - 4, "...", 4);
    c->errors++;
    diag_push(c->d, line_buf);
}

/* Blank out comments (keeping newlines, so positions stay true), refuse
 * \u0000 in strings and nesting deeper than CONFIG_DEPTH_MAX.  0 or -1. */
static int strip_comments(struct ctx *c, char *buf, size_t len)
{
    size_t depth = 0;
    const char *nul = memchr(buf, '\0', len);
    if (nul) {
        problem_at(c, buf, (size_t)(nul - buf), "the file contains a NUL byte");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (ch == '"') {
            size_t start = i;
            for (i++; i < len && buf[i] != '"'; i++) {
                if (buf[i] == '\\' && i + 1 < len) {
                    if (buf[i + 1] == 'u' && i + 5 < len && memcmp(buf + i + 2, "0000", 4) == 0) {
                        problem_at(c, buf, i, "\\u0000 is not allowed in a string");
                        return -1;
                    }
                    i++;
                }
            }
            if (i >= len) {
                problem_at(c, buf, start, "invalid JSON: the string is not closed");
                return -1;
            }
        } else if (ch == '/' && i + 1 < len && buf[i + 1] == '/') {
            for (; i < len && buf[i] != '\n'; i++)
                buf[i] = ' ';
        } else if (ch == '/' && i + 1 < len && buf[i + 1] == '*') {
            size_t start = i;
            buf[i] = buf[i + 1] = ' ';
            for (i += 2; i < len && !(buf[i] == '*' && i + 1 < len && buf[i + 1] == '/'); i++)
                if (buf[i] != '\n')
                    buf[i] = ' ';
            if (i >= len) {
                problem_at(c, buf, start, "the /* comment is not closed");
                return -1;
            }
            buf[i] = buf[i + 1] = ' ';
            i++;
        } else if (ch == '{' || ch == '[') {
            if (++depth > CONFIG_DEPTH_MAX) {
                problem_at(c, buf, i, "nesting is deeper than %d levels (CONFIG_DEPTH_MAX)",
                           CONFIG_DEPTH_MAX);
                return -1;
            }
        } else if ((ch == '}' || ch == ']') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

/* Read the whole file, at most CONFIG_FILE_MAX bytes. */
static char *read_file(struct ctx *c, const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        cfg_problem(c, "", "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        cfg_problem(c, "", "not a regular file");
        close(fd);
        return NULL;
    }
    char *buf = malloc(CONFIG_FILE_MAX + 1);
    size_t n = 0;
    if (!buf) {
        cfg_problem(c, "", "out of memory");
        close(fd);
        return NULL;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, CONFIG_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            cfg_problem(c, "", "cannot read: %s", strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > CONFIG_FILE_MAX) {
            cfg_problem(c, "", "the file is larger than %d bytes (CONFIG_FILE_MAX)", CONFIG_FILE_MAX);
            free(buf);
            close(fd);
            return NULL;
        }
    }
    close(fd);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static char *dir_of(const char *path)
{
    char *tmp = strdup(path);
    if (!tmp)
        return NULL;
    char *real = realpath(dirname(tmp), NULL);
    free(tmp);
    return real;
}

void config_instance_id(const struct config *cfg, char *out, size_t size)
{
    char host[256], id[CONFIG_INSTANCE_ID_MAX + 1];
    if (gethostname(host, sizeof host) < 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    if (cfg->store.instance_id)
        snprintf(id, sizeof id, "%.64s", cfg->store.instance_id);
    else if (cfg->store.url)
        snprintf(id, sizeof id, "%.50s:%d", host, cfg->api.listen_port);
    else
        snprintf(id, sizeof id, "%.64s", host); /* a longer name is cut */
    snprintf(out, size, "%s", id);
}

/* ---- free --------------------------------------------------------------------------------- */

static void visit_free(struct ctx *c, const struct opt *o, void *base, const char *path)
{
    (void)c;
    (void)path;
    switch (o->type) {
    case T_STRING:
    case T_NAME:
    case T_PATH:
        free(*AT(base, o->off, char *));
        *AT(base, o->off, char *) = NULL;
        break;
    case T_STRLIST:
    case T_NAMELIST: {
        char **l = *AT(base, o->off, char **);
        for (size_t i = 0; l && i < *AT(base, o->count_off, size_t); i++)
            free(l[i]);
        free(l);
        *AT(base, o->off, char **) = NULL;
        break;
    }
    case T_ENUMLIST:
    case T_DURLIST:
        free(*AT(base, o->off, void *));
        *AT(base, o->off, void *) = NULL;
        break;
    case T_HEADERS: {
        struct config_header *h = *AT(base, o->off, struct config_header *);
        for (size_t i = 0; h && i < *AT(base, o->count_off, size_t); i++) {
            free(h[i].name);
            free(h[i].value);
        }
        free(h);
        *AT(base, o->off, void *) = NULL;
        break;
    }
    case T_SECRET: {
        struct config_secret *s = AT(base, o->off, struct config_secret);
        if (s->source == o->src) {
            cfg_secret_wipe(s);
            free(s->ref);
            s->ref = NULL;
        }
        break;
    }
    case T_OBJARRAY:
        /* the elements were visited first (walk recurses before visiting) */
        free(*AT(base, o->off, void *));
        *AT(base, o->off, void *) = NULL;
        break;
    case T_ENUM:
    case T_DURATION:
    case T_SIZE:
    case T_INT:
    case T_BOOL:
    case T_TRIBOOL:
    case T_REFUSED:
    case T_OBJECT:
        break;
    }
}

const struct config_account *config_account_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->account_count; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            return &cfg->accounts[i];
    return NULL;
}

const struct config_webhook *config_webhook_find(const struct config *cfg, const char *name)
{
    for (size_t i = 0; cfg && name && i < cfg->webhook_count; i++)
        if (strcmp(cfg->webhooks[i].name, name) == 0)
            return &cfg->webhooks[i];
    return NULL;
}

void config_free(struct config **pcfg)
{
    if (!pcfg || !*pcfg)
        return;
    struct config *cfg = *pcfg;
    for (size_t i = 0; cfg->webhooks && i < cfg->webhook_count; i++) {
        struct config_webhook *w = &cfg->webhooks[i];
        filter_free(w->filter.compiled);
        w->filter.compiled = NULL;
        cfg_webhook_keys_wipe(&cfg->webhooks[i]);
        cfg_secret_headers_wipe(&cfg->webhooks[i]);
    }
    for (size_t i = 0; cfg->accounts && i < cfg->account_count; i++) {
        free(cfg->accounts[i].webhook_index);
        free(cfg->accounts[i].webhook_cfg);
    }
    OPENSSL_cleanse(cfg->secrets_key_bytes, sizeof cfg->secrets_key_bytes);
    free(cfg->api.listen_host);
    struct ctx c = {.cfg = cfg};
    cfg_walk(&c, &cfg_root_table, cfg, "", visit_free);
    free(cfg->path);
    free(cfg->dir);
    free(cfg);
    *pcfg = NULL;
}

/* ---- load ---------------------------------------------------------------------------------- */

static struct config *load(const char *path, struct config_diag *d, bool secrets);

struct config *config_load(const char *path, struct config_diag *d)
{
    return load(path, d, true);
}

struct config *config_load_layout(const char *path, struct config_diag *d)
{
    return load(path, d, false);
}

static struct config *load(const char *path, struct config_diag *d, bool secrets)
{
    struct ctx c = {.d = d, .file = path ? path : "(null)"};
    if (!path) {
        cfg_problem(&c, "", "no configuration file given");
        return NULL;
    }
    size_t len;
    char *text = read_file(&c, path, &len);
    if (!text)
        return NULL;
    if (strip_comments(&c, text, len) < 0) {
        OPENSSL_cleanse(text, len);
        free(text);
        return NULL;
    }
    const char *end = NULL;
    /* len + 1: cJSON's "require_null_terminated" wants the NUL inside the
     * length; strip_comments() refused NUL bytes in the text itself. */
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (!root) {
        size_t off = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
        char near[32], sh[SHOW_MAX + 8];
        size_t k = 0;
        while (k < 16 && off + k < len && text[off + k] != '\n' && text[off + k] != '\r') {
            near[k] = text[off + k];
            k++;
        }
        near[k] = '\0';
        if (off >= len || text[off] == '\0' || k == 0)
            problem_at(&c, text, off, "invalid JSON near the end of the file");
        else
        {
            cfg_show(near, sh, sizeof sh);
            size_t sl = strlen(sh);
            sh[0] = sh[sl - 1] = '\'';
            problem_at(&c, text, off, "invalid JSON near %s", sh);
        }
        OPENSSL_cleanse(text, len);
        free(text);
        return NULL;
    }
    OPENSSL_cleanse(text, len); /* a refused literal secret may be in it */
    free(text);

    struct config *cfg = calloc(1, sizeof *cfg);
    char *dir = dir_of(path);
    if (!cfg || !dir || !(cfg->path = strdup(path))) {
        cfg_problem(&c, "", "cannot resolve the file's directory: %s", strerror(errno));
        free(cfg);
        free(dir);
        cJSON_Delete(root);
        return NULL;
    }
    cfg->dir = dir;
    c.dir = dir;
    c.cfg = cfg;
    if (!cJSON_IsObject(root))
        cfg_problem(&c, "", "the top level must be a JSON object, got %s", cfg_json_type(root));
    else
        cfg_parse_table(&c, &cfg_root_table, cfg, root, "");
    cJSON_Delete(root);
    if (secrets)
        cfg_resolve_all(&c);
    if (c.errors) {
        config_free(&cfg);
        return NULL;
    }
    return cfg;
}

/* ---- summary ------------------------------------------------------------------------------ */

static void print_value(FILE *out, const struct opt *o, void *base)
{
    char b[48];
    switch (o->type) {
    case T_STRING:
    case T_NAME:
    case T_PATH: {
        const char *s = *AT(base, o->off, char *);
        fprintf(out, "%s", s ? s : "-");
        break;
    }
    case T_ENUM:
        fprintf(out, "%s", o->values[*AT(base, o->off, int)]);
        break;
    case T_DURATION: {
        int64_t v = *AT(base, o->off, int64_t);
        fprintf(out, "%s", v ? units_format_duration(v, b, sizeof b) : "-");
        break;
    }
    case T_SIZE:
        fprintf(out, "%s", units_format_size(*AT(base, o->off, uint64_t), b, sizeof b));
        break;
    case T_INT:
        fprintf(out, "%d", *AT(base, o->off, int));
        break;
    case T_BOOL:
        fprintf(out, "%s", *AT(base, o->off, bool) ? "true" : "false");
        break;
    case T_TRIBOOL: {
        int t = *AT(base, o->off, int);
        fprintf(out, "%s", t == CONFIG_TRUE ? "true" : t == CONFIG_FALSE ? "false" : "-");
        break;
    }
    case T_STRLIST:
    case T_NAMELIST:
    case T_ENUMLIST:
    case T_DURLIST:
    case T_HEADERS: {
        size_t n = *AT(base, o->count_off, size_t);
        if (!n)
            fprintf(out, "-");
        for (size_t i = 0; i < n; i++) {
            if (i)
                fputc(',', out);
            if (o->type == T_ENUMLIST)
                fprintf(out, "%s", o->values[(*AT(base, o->off, int *))[i]]);
            else if (o->type == T_DURLIST)
                fprintf(out, "%s",
                        units_format_duration((*AT(base, o->off, int64_t *))[i], b, sizeof b));
            else if (o->type == T_HEADERS) /* names only: values may be private */
                fprintf(out, "%s", (*AT(base, o->off, struct config_header *))[i].name);
            else
                fprintf(out, "%s", (*AT(base, o->off, char **))[i]);
        }
        break;
    }
    default:
        break;
    }
}

static void print_object(FILE *out, const struct table *t, void *base, int indent)
{
    fprintf(out, "%*s%s", indent, "", t->label);
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        if (o->type == T_NAME) {
            fprintf(out, " %s", *AT(base, o->off, char *));
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        if (o->type == T_NAME || o->type == T_REFUSED || o->type == T_OBJECT ||
            o->type == T_OBJARRAY)
            continue;
        if (o->type == T_SECRET) {
            const struct config_secret *s = AT(base, o->off, struct config_secret);
            if (s->source != o->src)
                continue;
            /* the key name without its _env/_file/_command suffix */
            size_t klen = strlen(o->name) - strlen(cfg_secret_suffix(s->source)) - 1;
            fprintf(out, " %.*s=%s%s", (int)klen, o->name,
                    s->source == CONFIG_SECRET_ENV    ? "env:"
                    : s->source == CONFIG_SECRET_FILE ? "file:"
                                                      : "command",
                    s->source == CONFIG_SECRET_COMMAND ? "" : s->ref);
            continue;
        }
        if (o->values == cfg_auth_names && *AT(base, o->count_off, size_t) == 0) {
            fprintf(out, " %s=strongest-offered", o->name);
            continue;
        }
        fprintf(out, " %s=", o->name);
        print_value(out, o, base);
    }
    fputc('\n', out);
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        if (o->type == T_OBJECT) {
            void *sub = AT(base, o->off, char);
            if (o->sub->present_off == NO_OFF || *AT(sub, o->sub->present_off, bool))
                print_object(out, o->sub, sub, indent + 2);
        } else if (o->type == T_OBJARRAY) {
            char *arr = *AT(base, o->off, char *);
            size_t n = *AT(base, o->count_off, size_t);
            for (size_t k = 0; k < n; k++)
                print_object(out, o->sub, arr + k * o->sub->size, indent + 2);
        }
    }
}

void config_print_summary(const struct config *cfg, FILE *out)
{
    if (!cfg)
        return;
    fprintf(out, "%s: valid (%zu account%s, %zu webhook%s, %zu API token%s)\n", cfg->path,
            cfg->account_count, cfg->account_count == 1 ? "" : "s", cfg->webhook_count,
            cfg->webhook_count == 1 ? "" : "s", cfg->api.token_count,
            cfg->api.token_count == 1 ? "" : "s");
    print_object(out, &cfg_root_table, (void *)cfg, 0);
}

static void print_keys(FILE *out, const struct table *t, const char *prefix)
{
    char sub[PATH_KEY_MAX];
    for (size_t i = 0; i < t->n; i++) {
        const struct opt *o = &t->opts[i];
        cfg_path_key(sub, sizeof sub, prefix, o->name);
        fprintf(out, "%s %s%s%s%s\n", sub, cfg_type_names[o->type],
                (o->flags & F_REQUIRED) ? " required" : "", o->def ? " default " : "",
                o->def ? o->def : "");
        if (o->type == T_OBJECT) {
            print_keys(out, o->sub, sub);
        } else if (o->type == T_OBJARRAY) {
            int r = snprintf(sub, sizeof sub, "%s%s%s[]", prefix, *prefix ? "." : "", o->name);
            if (r > 0 && (size_t)r < sizeof sub)
                print_keys(out, o->sub, sub);
        }
    }
}

void config_print_keys(FILE *out)
{
    print_keys(out, &cfg_root_table, "");
}

/* ---- check-config ------------------------------------------------------------------------------ */

int config_check_main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        if (argc == 2 && (strcmp(argv[1], "--keys") == 0)) {
            config_print_keys(stdout);
            return CONFIG_EXIT_OK;
        }
        fprintf(stderr, "usage: pop3bridge check-config FILE\n"
                        "       pop3bridge check-config --keys   (list every key)\n");
        return CONFIG_EXIT_USAGE;
    }
    struct config_diag d = {0};
    struct config *cfg = config_load(argv[1], &d);
    if (!cfg) {
        config_diag_print(&d, stderr);
        fprintf(stderr, "%s: %zu problem%s\n", argv[1], d.count + d.dropped,
                d.count + d.dropped == 1 ? "" : "s");
        config_diag_free(&d);
        return CONFIG_EXIT_INVALID;
    }
    config_print_summary(cfg, stdout);
    config_free(&cfg);
    config_diag_free(&d);
    return CONFIG_EXIT_OK;
}
