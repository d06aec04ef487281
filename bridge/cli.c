/* cli — `pop3bridge probe` and `pop3bridge fetch`; see include/cli.h. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "maildir.h"
#include "perms.h"
#include "pop3.h"
#include "secrets.h"
#include "url.h"
#include "units.h"

#define SECRET_FILE_MAX 65536 /* password / token file size */
#define URL_MAX 1024

int cli_exit_code(const struct err *e)
{
    switch (e->kind) {
    case ERR_NONE: return CLI_EXIT_OK;
    case ERR_USAGE: return CLI_EXIT_USAGE;
    case ERR_CONN:
    case ERR_TIMEOUT: return CLI_EXIT_CONN;
    case ERR_TLS: return CLI_EXIT_TLS;
    case ERR_PROTO:
    case ERR_LIMIT: return CLI_EXIT_PROTO;
    case ERR_AUTH:
    case ERR_SERVER:
        if (err_is_temporary(e))
            return CLI_EXIT_TEMP;
        return e->kind == ERR_AUTH ? CLI_EXIT_AUTH : CLI_EXIT_SERVER;
    case ERR_INTERNAL: return CLI_EXIT_LOCAL;
    }
    return CLI_EXIT_LOCAL;
}

int cli_fail(const struct err *e)
{
    char line[1024];
    err_format(e, line, sizeof line);
    fprintf(stderr, "pop3bridge: %s\n", line);
    return cli_exit_code(e);
}

void cli_usage_pop3(FILE *out)
{
    fputs("pop3bridge probe [options] URL\n"
          "pop3bridge fetch [options] URL MAILDIR\n"
          "  URL:  pop3s://USER@HOST[:PORT]   implicit TLS, default port 995\n"
          "        pop3://USER@HOST[:PORT]    port 110, STLS required unless --tls none\n"
          "        (a '@' or ':' in USER is written %40 / %3A)\n"
          "  --tls implicit|starttls|none    (default from the scheme)\n"
          "  --allow-plaintext               permit plaintext credentials without TLS\n"
          "  --auth MECH[,MECH...]           user, apop, plain, login, cram-md5, scram-sha-1,\n"
          "                                  scram-sha-256, xoauth2, oauthbearer\n"
          "                                  (default: the strongest the server offers)\n"
          "  --ca-file FILE                  trust anchors (default: the system store)\n"
          "  --fingerprint sha256:HEX        pin the server certificate (replaces CA checks)\n"
          "  --timeout SECONDS               each network wait (default 30); a server that\n"
          "                                  sends less than 1 KiB within it is cut off too\n"
          "  --session-timeout SECONDS       the whole session (default: none)\n"
          "  --max-size SIZE                 largest message accepted (default 100MiB),\n"
          "                                  counted on the bytes actually received\n"
          "  --password-file FILE            else the POP3BRIDGE_PASSWORD environment variable\n"
          "  --oauth2-token-file FILE        bearer token for xoauth2/oauthbearer\n"
          "  --delete                        (fetch only) DELE what was stored, then QUIT\n"
          "  -v, --verbose                   protocol trace on stderr, credentials masked\n"
          "probe prints one JSON object (greeting, tls, capabilities, auth, stat, messages,\n"
          "login_delay, expire) and QUITs without changing anything.\n"
          "fetch stores new messages (by UIDL) durably into MAILDIR/new.\n"
          "Exit codes: 0 ok, 2 usage, 3 connection or timeout, 4 TLS, 5 authentication,\n"
          "6 protocol violation or limit exceeded, 7 server temporarily unavailable\n"
          "([IN-USE], [LOGIN-DELAY], [SYS/TEMP]), 8 other server error, 9 local error.\n",
          out);
}

/* ---- options ---------------------------------------------------------------- */

struct cli_opts {
    struct pop3_opts p;
    char host[256];
    char user[256];
    char *password;
    char *token;
    char refused[PERMS_WHY_MAX + 32]; /* a secret file other users may read (perms.h):
                                         the whole line, longer than an error's msg */
    bool do_delete;
    bool verbose;
    const char *maildir;
};

static void trace_stderr(void *ctx, char dir, const char *line, size_t len)
{
    (void)ctx;
    char clean[512];
    err_sanitize(clean, sizeof clean, line, len);
    fprintf(stderr, "%c: %s\n", dir, clean);
}

static int parse_url(const char *url, struct cli_opts *c, bool *tls_set, struct err *e)
{
    struct url_pop3 u;
    if (url_parse_pop3(url, &u, e) < 0)
        return -1;
    if (!*tls_set)
        c->p.tls = u.tls ? POP3_TLS_IMPLICIT : POP3_TLS_STARTTLS;
    _Static_assert(sizeof c->user == sizeof u.user && sizeof c->host == sizeof u.host,
                   "the URL's parts fit");
    memcpy(c->user, u.user, sizeof c->user);
    memcpy(c->host, u.host, sizeof c->host);
    if (u.port)
        c->p.port = u.port;
    c->p.host = c->host;
    c->p.username = c->user;
    OPENSSL_cleanse(&u, sizeof u);
    return 0;
}

/* First line of a file, for passwords and tokens.  A file other users may
 * read is refused as `run` refuses it (perms.h): the line in refused[],
 * e says only that. */
static char *read_secret_file(const char *path, const char *what, char *refused,
                              size_t refused_size, struct err *e)
{
    char why[PERMS_WHY_MAX];
    if (perms_check(path, PERMS_SECRET, why, sizeof why) < 0) {
        snprintf(refused, refused_size, "%s file: %s", what, why);
        err_set(e, ERR_USAGE, "%s file %s: insecure permissions", what, path);
        return NULL;
    }
    char *buf = calloc(1, SECRET_FILE_MAX + 2);
    if (!buf) {
        err_set(e, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    size_t n = 0;
    if (secrets_read_file(path, false, buf, SECRET_FILE_MAX + 1, &n) < 0) {
        err_set(e, ERR_USAGE, "cannot read %s file %s: %s", what, path, strerror(errno));
        OPENSSL_cleanse(buf, n);
        free(buf);
        return NULL;
    }
    if (n > SECRET_FILE_MAX) {
        OPENSSL_cleanse(buf, SECRET_FILE_MAX + 1);
        free(buf);
        err_set(e, ERR_USAGE, "%s file %s is larger than %d bytes", what, path, SECRET_FILE_MAX);
        return NULL;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!buf[0]) {
        free(buf);
        err_set(e, ERR_USAGE, "%s file %s is empty", what, path);
        return NULL;
    }
    return buf;
}

static void free_secret(char **s)
{
    if (*s) {
        OPENSSL_cleanse(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

enum { OPT_TLS = 256, OPT_PLAIN, OPT_AUTH, OPT_CA, OPT_FP, OPT_TIMEOUT, OPT_STIMEOUT, OPT_MAXSIZE,
       OPT_PWFILE, OPT_TOKFILE, OPT_DELETE, OPT_HELP };

/* What the options say beyond struct cli_opts: whether --tls was given and
 * where the secrets are. */
struct parsed {
    bool tls_set;
    const char *pwfile, *tokfile;
};

/* One option ch with its argument arg.  0, 1 for --help, or -1 with e. */
static int parse_option(int ch, const char *arg, bool fetch, struct cli_opts *c, struct parsed *o,
                        struct err *e)
{
    uint64_t v;
    char why[128];
    switch (ch) {
    case OPT_TLS:
        o->tls_set = true;
        if (strcmp(arg, "implicit") == 0)
            c->p.tls = POP3_TLS_IMPLICIT;
        else if (strcmp(arg, "starttls") == 0)
            c->p.tls = POP3_TLS_STARTTLS;
        else if (strcmp(arg, "none") == 0)
            c->p.tls = POP3_TLS_NONE;
        else
            return err_set(e, ERR_USAGE, "--tls takes implicit, starttls or none");
        return 0;
    case OPT_PLAIN: c->p.allow_plaintext = true; return 0;
    case OPT_AUTH: return pop3_mech_list_parse(arg, c->p.mechs, &c->p.n_mechs, e) < 0 ? -1 : 0;
    case OPT_CA: c->p.ca_file = arg; return 0;
    case OPT_FP: c->p.fingerprint = arg; return 0;
    case OPT_TIMEOUT:
    case OPT_STIMEOUT:
        if (pop3_parse_number(arg, strlen(arg), 1, 86400, &v) < 0)
            return err_set(e, ERR_USAGE, "--%s takes whole seconds from 1 to 86400",
                           ch == OPT_TIMEOUT ? "timeout" : "session-timeout");
        if (ch == OPT_TIMEOUT)
            c->p.timeout_ms = (int)v * 1000;
        else
            c->p.session_timeout_ms = (int64_t)v * 1000;
        return 0;
    case OPT_MAXSIZE:
        if (units_parse_size(arg, &v, why, sizeof why) < 0 || v == 0)
            return err_set(e, ERR_USAGE, "--max-size: %s", v == 0 ? "must be above 0" : why);
        c->p.max_message_size = v;
        return 0;
    case OPT_PWFILE: o->pwfile = arg; return 0;
    case OPT_TOKFILE: o->tokfile = arg; return 0;
    case OPT_DELETE:
        if (!fetch)
            return err_set(e, ERR_USAGE, "--delete is for fetch only");
        c->do_delete = true;
        return 0;
    case 'v': c->verbose = true; return 0;
    case OPT_HELP: return 1;
    default: return -1;
    }
}

/* The password (file, else $POP3BRIDGE_PASSWORD) and the OAuth2 token. */
static int take_credentials(struct cli_opts *c, const struct parsed *o, struct err *e)
{
    if (o->pwfile) {
        c->password = read_secret_file(o->pwfile, "password", c->refused, sizeof c->refused, e);
        if (!c->password)
            return -1;
    } else if (getenv("POP3BRIDGE_PASSWORD") && *getenv("POP3BRIDGE_PASSWORD")) {
        c->password = strdup(getenv("POP3BRIDGE_PASSWORD"));
    }
    if (o->tokfile && !(c->token = read_secret_file(o->tokfile, "OAuth2 token", c->refused,
                                                    sizeof c->refused, e)))
        return -1;
    if (!c->password && !c->token)
        return err_set(e, ERR_USAGE,
                       "no password: use --password-file FILE or set POP3BRIDGE_PASSWORD "
                       "(or --oauth2-token-file)");
    c->p.password = c->password;
    c->p.oauth2_token = c->token;
    return 0;
}

static int parse_args(int argc, char **argv, bool fetch, struct cli_opts *c, struct err *e)
{
    static const struct option longopts[] = {
        {"tls", required_argument, NULL, OPT_TLS},
        {"allow-plaintext", no_argument, NULL, OPT_PLAIN},
        {"auth", required_argument, NULL, OPT_AUTH},
        {"ca-file", required_argument, NULL, OPT_CA},
        {"fingerprint", required_argument, NULL, OPT_FP},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"session-timeout", required_argument, NULL, OPT_STIMEOUT},
        {"max-size", required_argument, NULL, OPT_MAXSIZE},
        {"password-file", required_argument, NULL, OPT_PWFILE},
        {"oauth2-token-file", required_argument, NULL, OPT_TOKFILE},
        {"delete", no_argument, NULL, OPT_DELETE},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    struct parsed o = {false, NULL, NULL};
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "+v", longopts, NULL)) != -1) {
        err_clear(e);
        int r = parse_option(ch, optarg, fetch, c, &o, e);
        if (r == 1) {
            cli_usage_pop3(stdout);
            exit(0);
        }
        if (r < 0 && e->kind == ERR_NONE)
            return err_set(e, ERR_USAGE, "unknown or incomplete option \"%s\" (see --help)",
                           argv[optind - 1]);
        if (r < 0)
            return -1;
    }
    int want = fetch ? 2 : 1;
    if (argc - optind != want)
        return err_set(e, ERR_USAGE, "%s", fetch ? "usage: pop3bridge fetch [options] URL MAILDIR"
                                               : "usage: pop3bridge probe [options] URL");
    if (strlen(argv[optind]) > URL_MAX)
        return err_set(e, ERR_USAGE, "URL longer than %d characters", URL_MAX);
    if (parse_url(argv[optind], c, &o.tls_set, e) < 0)
        return -1;
    if (fetch)
        c->maildir = argv[optind + 1];
    if (take_credentials(c, &o, e) < 0)
        return -1;
    if (c->verbose) {
        c->p.trace = trace_stderr;
        c->p.trace_ctx = NULL;
    }
    return 0;
}

static void cli_opts_free(struct cli_opts *c)
{
    free_secret(&c->password);
    free_secret(&c->token);
}

/* A failure of parse_args: the refusal of a secret file in full, else e. */
static int args_fail(const struct cli_opts *c, const struct err *e)
{
    if (!c->refused[0])
        return cli_fail(e);
    fprintf(stderr, "pop3bridge: Usage: %s\n", c->refused); /* as err_format says it */
    return CLI_EXIT_USAGE;
}

/* ---- probe ---------------------------------------------------------------------- */

static cJSON *probe_json(struct pop3 *p, const struct pop3_listing *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "greeting", pop3_greeting(p));
    const struct net_tls_info *ti = pop3_tls_info(p);
    if (ti) {
        cJSON *t = cJSON_AddObjectToObject(o, "tls");
        cJSON_AddStringToObject(t, "version", ti->version);
        cJSON_AddStringToObject(t, "cipher", ti->cipher);
        cJSON_AddBoolToObject(t, "verified", ti->verified);
        cJSON_AddStringToObject(t, "verify", ti->verify);
        cJSON_AddStringToObject(t, "peer", ti->peer);
        cJSON_AddStringToObject(t, "fingerprint", ti->fingerprint);
    } else {
        cJSON_AddNullToObject(o, "tls");
    }
    const struct pop3_capa *c = pop3_capa(p);
    cJSON *caps = cJSON_AddArrayToObject(o, "capabilities");
    for (size_t i = 0; i < c->n_lines; i++)
        cJSON_AddItemToArray(caps, cJSON_CreateString(c->lines[i]));
    cJSON_AddStringToObject(o, "auth", pop3_mech_name(pop3_mech_used(p)));
    cJSON *st = cJSON_AddObjectToObject(o, "stat");
    cJSON_AddNumberToObject(st, "count", l->count);
    cJSON_AddNumberToObject(st, "octets", (double)l->octets);
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    for (uint32_t i = 0; i < l->count; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddNumberToObject(m, "number", l->entries[i].number);
        if (l->has_uidl)
            cJSON_AddStringToObject(m, "uidl", l->entries[i].uidl);
        else
            cJSON_AddNullToObject(m, "uidl");
        cJSON_AddNumberToObject(m, "size", (double)l->entries[i].size);
        cJSON_AddItemToArray(msgs, m);
    }
    if (c->login_delay >= 0)
        cJSON_AddNumberToObject(o, "login_delay", (double)c->login_delay);
    else
        cJSON_AddNullToObject(o, "login_delay");
    if (c->expire >= 0)
        cJSON_AddNumberToObject(o, "expire", (double)c->expire);
    else if (c->expire == -2)
        cJSON_AddStringToObject(o, "expire", "NEVER");
    else
        cJSON_AddNullToObject(o, "expire");
    return o;
}

int cli_probe(int argc, char **argv)
{
    struct cli_opts c = {0};
    struct err e = {0};
    int rc;
    if (parse_args(argc, argv, false, &c, &e) < 0) {
        rc = args_fail(&c, &e);
        cli_opts_free(&c);
        return rc;
    }
    struct pop3 *p = pop3_open(&c.p, &e);
    struct pop3_listing *l = NULL;
    if (!p || pop3_listing(p, &l, &e) < 0) {
        pop3_abort(&p);
        rc = cli_fail(&e);
        cli_opts_free(&c);
        return rc;
    }
    cJSON *o = probe_json(p, l);
    pop3_listing_free(&l);
    /* probe changes nothing: RSET is not needed since nothing was marked */
    if (pop3_quit(&p, &e) < 0) {
        cJSON_Delete(o);
        rc = cli_fail(&e);
        cli_opts_free(&c);
        return rc;
    }
    char *s = cJSON_Print(o);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        cJSON_free(s);
    }
    cJSON_Delete(o);
    cli_opts_free(&c);
    return s ? CLI_EXIT_OK : CLI_EXIT_LOCAL;
}

/* ---- fetch ---------------------------------------------------------------------- */

struct fetch_ctx {
    struct maildir *md;
    char (*keys)[MAILDIR_KEY_LEN + 1]; /* per message number - 1 */
    char source[600];
    uint32_t *stored;       /* numbers stored in this run */
    size_t n_stored;
    unsigned long long bytes;
};

static int fetch_begin(void *ctx, uint32_t number, struct err *e)
{
    struct fetch_ctx *f = ctx;
    return maildir_begin(f->md, f->keys[number - 1], e);
}

static int fetch_data(void *ctx, const char *buf, size_t len, struct err *e)
{
    struct fetch_ctx *f = ctx;
    return maildir_write(f->md, buf, len, e);
}

static int fetch_end(void *ctx, uint32_t number, uint64_t octets, struct err *e)
{
    struct fetch_ctx *f = ctx;
    if (maildir_commit(f->md, e) < 0)
        return -1;
    f->stored[f->n_stored++] = number;
    f->bytes += octets;
    return 0;
}

int cli_fetch(int argc, char **argv)
{
    struct cli_opts c = {0};
    struct err e = {0};
    struct pop3 *p = NULL;
    struct pop3_listing *l = NULL;
    struct fetch_ctx f = {0};
    uint32_t *want = NULL, *dele = NULL, *too_big = NULL;
    int rc;

    if (parse_args(argc, argv, true, &c, &e) < 0)
        goto fail;
    if (!(f.md = maildir_open(c.maildir, &e)))
        goto fail;
    if (!(p = pop3_open(&c.p, &e)) || pop3_listing(p, &l, &e) < 0)
        goto fail;
    if (!l->has_uidl) {
        err_set(&e, ERR_SERVER, "server does not support UIDL; fetch needs it to skip messages "
                                "already stored");
        goto fail;
    }
    /* user and host are at most 255 bytes each (parse_url): this fits */
    if (snprintf(f.source, sizeof f.source, "%s@%s:%u", c.user, c.host, c.p.port) >=
        (int)sizeof f.source) {
        err_set(&e, ERR_INTERNAL, "mailbox name too long");
        goto fail;
    }
    f.keys = calloc((size_t)l->count + 1, sizeof *f.keys);
    want = calloc((size_t)l->count + 1, sizeof *want);
    dele = calloc((size_t)l->count + 1, sizeof *dele);
    too_big = calloc((size_t)l->count + 1, sizeof *too_big);
    f.stored = calloc((size_t)l->count + 1, sizeof *f.stored);
    if (!f.keys || !want || !dele || !too_big || !f.stored) {
        err_set(&e, ERR_INTERNAL, "out of memory");
        goto fail;
    }
    size_t n_want = 0, n_present = 0, n_dele = 0, n_big = 0;
    uint64_t max = c.p.max_message_size ? c.p.max_message_size : POP3_MAX_MESSAGE_DEFAULT;
    for (uint32_t i = 0; i < l->count; i++) {
        maildir_key(f.source, l->entries[i].uidl, f.keys[i]);
        if (maildir_has(f.md, f.keys[i])) {
            n_present++;
            dele[n_dele++] = l->entries[i].number;
        } else if (l->entries[i].size > max + POP3_LIST_SLACK(max)) {
            too_big[n_big++] = l->entries[i].number;
        } else {
            want[n_want++] = l->entries[i].number;
        }
    }
    struct pop3_sink sink = {
        .begin = fetch_begin, .data = fetch_data, .end = fetch_end, .ctx = &f, .lf = true,
    };
    if (n_want && pop3_retr(p, want, n_want, &sink, &e) < 0)
        goto fail;
    if (maildir_sync(f.md, &e) < 0)
        goto fail;
    if (c.do_delete) {
        for (size_t i = 0; i < f.n_stored; i++)
            dele[n_dele++] = f.stored[i];
        if (n_dele && pop3_dele(p, dele, n_dele, &e) < 0)
            goto fail;
    }
    if (pop3_quit(&p, &e) < 0)
        goto fail;
    printf("fetched %zu new messages (%llu bytes), %zu already present", f.n_stored, f.bytes,
           n_present);
    if (c.do_delete)
        printf(", %zu deleted", n_dele);
    printf("\n");
    fflush(stdout);
    rc = CLI_EXIT_OK;
    if (n_big) {
        char list[256] = "";
        size_t o = 0;
        for (size_t i = 0; i < n_big && o + 16 < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%u", i ? "," : "", too_big[i]);
        char sz[32];
        err_set(&e, ERR_LIMIT, "%zu message(s) larger than --max-size %s not fetched: %s%s", n_big,
                units_format_size(max, sz, sizeof sz), list, o + 16 >= sizeof list ? ",..." : "");
        rc = cli_fail(&e);
    }
    goto out;
fail:
    pop3_abort(&p);
    rc = args_fail(&c, &e);
out:
    pop3_listing_free(&l);
    maildir_close(&f.md);
    free(want);
    free(dele);
    free(too_big);
    free(f.stored);
    free(f.keys);
    cli_opts_free(&c);
    return rc;
}
