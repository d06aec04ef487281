/* oauth2_cli — `pop3bridge oauth2 login|status`; see include/oauth2_cli.h. */
#include "oauth2_cli.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clock.h"
#include "config.h"
#include "daemon.h"
#include "oauth2.h"
#include "oauth2_proto.h"
#include "store.h"

#define REDIRECT_MAX 64

static void sleep_s(int64_t s)
{
    struct timespec ts = {(time_t)s, 0};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* "in 52 min", "3 h ago" */
static const char *relative(int64_t at, int64_t now, char *buf, size_t size)
{
    int64_t d = (at - now) / 1000;
    bool past = d < 0;
    if (past)
        d = -d;
    const char *unit = "s";
    if (d >= 2 * 86400) {
        d /= 86400;
        unit = "days";
    } else if (d >= 2 * 3600) {
        d /= 3600;
        unit = "h";
    } else if (d >= 120) {
        d /= 60;
        unit = "min";
    }
    snprintf(buf, size, past ? "%lld %s ago" : "in %lld %s", (long long)d, unit);
    return buf;
}

void oauth2_cli_usage(FILE *out)
{
    fputs("pop3bridge oauth2 login --config FILE [--port N] [--timeout SECONDS] ACCOUNT\n"
          "      authorize an account whose oauth2 names a provider, by its flow\n"
          "pop3bridge oauth2 status --config FILE\n"
          "      whether each oauth2 account is authorized, and its tokens' times\n",
          out);
}

__attribute__((format(printf, 1, 2))) static int usage_fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "pop3bridge: Usage: %s (see pop3bridge oauth2 --help)\n", msg);
    return CLI_EXIT_USAGE;
}

/* The configuration with its store backend set up; NULL after printing
 * every problem. */
static struct config *load(const char *path)
{
    struct config *cfg = config_load_or_print(path, false, stderr);
    struct err e;
    err_clear(&e);
    if (cfg && daemon_store_setup(cfg, &e) < 0) {
        cli_fail(&e);
        config_free(&cfg);
    }
    return cfg;
}

/* ---- the loopback redirect listener (RFC 8252 §7.3) ---------------------------- */

struct listener {
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    const char *state;                  /* expected */
    bool done;
    bool replied;                       /* the browser got its page (after done) */
    char code[OAUTH2_CODE_MAX + 1];     /* the authorization code, when done and no error */
    char error[64];                     /* the "error" the server sent back, or ours */
    char desc[200];
};

static const char page_ok[] =
    "<!doctype html><title>pop3bridge</title><p>pop3bridge: the authorization was received. "
    "You can close this page.</p>";
static const char page_err[] =
    "<!doctype html><title>pop3bridge</title><p>pop3bridge: the authorization did not "
    "succeed; see the terminal.</p>";
static const char page_bad[] =
    "<!doctype html><title>pop3bridge</title><p>pop3bridge: this is not the answer to the "
    "authorization request that is waiting.</p>";

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *page)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(page), (void *)page, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    struct listener *l = cls;
    if (strcmp(method, "GET") != 0 || strcmp(url, "/") != 0)
        return reply(c, MHD_HTTP_NOT_FOUND, page_bad);
    const char *state = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "state");
    const char *code = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "code");
    const char *error = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "error");
    const char *desc = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "error_description");
    size_t want = strlen(l->state);
    if (!state || strlen(state) != want || CRYPTO_memcmp(state, l->state, want) != 0)
        return reply(c, MHD_HTTP_BAD_REQUEST, page_bad); /* not ours: keep waiting */
    pthread_mutex_lock(&l->mu);
    bool first = !l->done;
    if (first) {
        if (error && *error) {
            err_sanitize(l->error, sizeof l->error, error, strlen(error));
            if (desc)
                err_sanitize(l->desc, sizeof l->desc, desc, strlen(desc));
        } else if (!code || !*code || strlen(code) > OAUTH2_CODE_MAX) {
            snprintf(l->error, sizeof l->error, "%s", "no usable code");
        } else {
            snprintf(l->code, sizeof l->code, "%s", code);
        }
        l->done = true;
        pthread_cond_broadcast(&l->cond);
    }
    bool ok = first && !l->error[0];
    pthread_mutex_unlock(&l->mu);
    return reply(c, ok ? MHD_HTTP_OK : MHD_HTTP_BAD_REQUEST, ok ? page_ok : page_err);
}

/* A request finished (its page sent, or the connection gone). */
static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)req_cls;
    (void)toe;
    struct listener *l = cls;
    pthread_mutex_lock(&l->mu);
    if (l->done && !l->replied) {
        l->replied = true;
        pthread_cond_broadcast(&l->cond);
    }
    pthread_mutex_unlock(&l->mu);
}

static int listener_start(struct listener *l, unsigned port, unsigned *bound, struct err *e)
{
    pthread_mutex_init(&l->mu, NULL);
    clock_cond_init(&l->cond);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    l->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL,
                            on_request, l, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
                            MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 30u,
                            MHD_OPTION_END);
    if (!l->d)
        return err_set(e, ERR_CONN, "cannot listen on 127.0.0.1:%u for the redirect%s", port,
                       port ? " (is the port in use?)" : "");
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(l->d, MHD_DAEMON_INFO_BIND_PORT);
    *bound = di ? di->port : port;
    return 0;
}

static void listener_stop(struct listener *l)
{
    if (l->d) {
        /* let the browser have its page before the listener goes away */
        struct timespec until;
        clock_deadline(&until, 2000);
        pthread_mutex_lock(&l->mu);
        int w = 0;
        while (l->done && !l->replied && w != ETIMEDOUT)
            w = pthread_cond_timedwait(&l->cond, &l->mu, &until);
        pthread_mutex_unlock(&l->mu);
        MHD_stop_daemon(l->d);
    }
    l->d = NULL;
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->mu);
    OPENSSL_cleanse(l->code, sizeof l->code);
}

/* ---- the flows ----------------------------------------------------------------------- */

static int flow_device(const struct oauth2_client *c, const char *account,
                       struct oauth2_token *t, struct err *e)
{
    struct oauth2_device *d = calloc(1, sizeof *d);
    int rc = -1;
    if (!d)
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (oauth2_proto_device_start(c, d, NULL, e) != OAUTH2_OK)
        goto out;
    printf("To authorize account \"%s\", open this page in a browser:\n  %s\n"
           "and enter the code: %s\n",
           account, d->verification_uri, d->user_code);
    if (d->verification_uri_complete[0])
        printf("(or open %s)\n", d->verification_uri_complete);
    printf("Waiting for the authorization (the code expires in %lld s)...\n",
           (long long)d->expires_in_s);
    fflush(stdout);
    int64_t deadline = clock_mono_ms() + d->expires_in_s * 1000;
    int64_t interval = d->interval_s;
    int temp = 0;
    for (;;) {
        sleep_s(interval);
        struct oauth2_reply r;
        enum oauth2_result res = oauth2_proto_device_poll(c, d->device_code, t, &r, e);
        switch (res) {
        case OAUTH2_OK:
            rc = 0;
            goto out;
        case OAUTH2_PENDING:
            temp = 0;
            break;
        case OAUTH2_SLOW_DOWN: /* RFC 8628 §3.5: 5 s more from now on */
            temp = 0;
            interval += 5;
            break;
        case OAUTH2_DENIED:
            err_set(e, ERR_AUTH, "account %s: the authorization was denied", account);
            goto out;
        case OAUTH2_EXPIRED:
        case OAUTH2_INVALID_GRANT:
            err_set(e, ERR_AUTH, "account %s: the code expired before it was approved; run "
                                 "oauth2 login again",
                    account);
            goto out;
        case OAUTH2_TEMPORARY:
            if (++temp >= OAUTH2_CLI_TEMP_FAILURES)
                goto out;
            if (r.retry_after_s > interval)
                interval = r.retry_after_s;
            break;
        case OAUTH2_REFUSED:
            goto out;
        }
        if (clock_mono_ms() + interval * 1000 > deadline) {
            err_set(e, ERR_AUTH, "account %s: the code expired before it was approved; run "
                                 "oauth2 login again",
                    account);
            goto out;
        }
    }
out:
    OPENSSL_cleanse(d, sizeof *d);
    free(d);
    return rc;
}

static int flow_code(const struct oauth2_client *c, const char *account, unsigned port,
                     int64_t wait_s, struct oauth2_token *t, struct err *e)
{
    struct listener l = {0};
    char verifier[OAUTH2_PKCE_VERIFIER_LEN + 1], challenge[OAUTH2_PKCE_CHALLENGE_LEN + 1];
    char state[33], redirect[REDIRECT_MAX];
    char *url = malloc(4 * OAUTH2_URL_MAX);
    unsigned bound = 0;
    int rc = -1;
    if (!url)
        return err_set(e, ERR_INTERNAL, "out of memory");
    if (oauth2_proto_pkce_verifier(verifier, e) < 0 ||
        oauth2_proto_pkce_challenge(verifier, challenge, e) < 0 || oauth2_proto_state(state, e) < 0)
        goto out;
    l.state = state;
    if (listener_start(&l, port, &bound, e) < 0)
        goto out;
    snprintf(redirect, sizeof redirect, "http://127.0.0.1:%u/", bound);
    if (oauth2_proto_authorize_url(c, redirect, state, challenge, url, 4 * OAUTH2_URL_MAX, e) < 0)
        goto out;
    printf("To authorize account \"%s\", open this URL in a browser on this machine:\n  %s\n"
           "Waiting for the browser to come back to %s (at most %lld s)...\n",
           account, url, redirect, (long long)wait_s);
    fflush(stdout);
    struct timespec until;
    clock_deadline(&until, wait_s * 1000);
    pthread_mutex_lock(&l.mu);
    int w = 0;
    while (!l.done && w != ETIMEDOUT)
        w = pthread_cond_timedwait(&l.cond, &l.mu, &until);
    bool done = l.done;
    pthread_mutex_unlock(&l.mu);
    if (!done) {
        err_set(e, ERR_TIMEOUT, "account %s: no answer came back to %s within %lld s", account,
                redirect, (long long)wait_s);
        goto out;
    }
    if (l.error[0]) {
        err_set(e, ERR_AUTH, "account %s: the authorization server answered %s", account,
                l.error);
        if (l.desc[0])
            err_set_server(e, l.desc, strlen(l.desc));
        goto out;
    }
    enum oauth2_result res = oauth2_proto_exchange_code(c, l.code, redirect, verifier, t, NULL, e);
    if (res == OAUTH2_OK)
        rc = 0;
out:
    listener_stop(&l);
    OPENSSL_cleanse(verifier, sizeof verifier);
    free(url);
    return rc;
}

/* What `oauth2 login` was asked. */
struct login_args {
    const char *path, *name;
    long port, wait_s;
};

/* Parse login's options into *l.  -1 to go on, else the exit code. */
static int login_args(int argc, char **argv, struct login_args *l)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *l = (struct login_args){NULL, NULL, 0, OAUTH2_CLI_WAIT_S};
    int ch;
    char *end;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': l->path = optarg; break;
        case 'p':
            errno = 0;
            l->port = strtol(optarg, &end, 10);
            if (errno || *end || l->port < 1 || l->port > 65535)
                return usage_fail("--port must be 1 to 65535, not \"%s\"", optarg);
            break;
        case 't':
            errno = 0;
            l->wait_s = strtol(optarg, &end, 10);
            if (errno || *end || l->wait_s < 1 || l->wait_s > 86400)
                return usage_fail("--timeout must be 1 to 86400 seconds, not \"%s\"", optarg);
            break;
        case 'h': oauth2_cli_usage(stdout); return 0;
        default: return usage_fail("unknown or incomplete option \"%s\"", argv[optind - 1]);
        }
    }
    if (!l->path)
        return usage_fail("oauth2 login needs --config FILE");
    if (optind + 1 != argc)
        return usage_fail("oauth2 login needs exactly one ACCOUNT");
    l->name = argv[optind];
    return -1;
}

/* Run the account's flow, keep the grant, say so.  0, or -1 with e. */
static int authorize(const struct login_args *l, const struct config_account *a, struct store *st,
                     struct oauth2_client *c, struct oauth2_token *t, struct err *e)
{
    int r;
    switch (a->oauth2.flow) {
    case CONFIG_FLOW_DEVICE_CODE: r = flow_device(c, l->name, t, e); break;
    case CONFIG_FLOW_AUTHORIZATION_CODE:
        r = flow_code(c, l->name, (unsigned)l->port, l->wait_s, t, e);
        break;
    case CONFIG_FLOW_CLIENT_CREDENTIALS:
    default:
        r = oauth2_proto_client_credentials(c, t, NULL, e) == OAUTH2_OK ? 0 : -1;
        break;
    }
    int64_t now = clock_wall_ms();
    if (r < 0 || oauth2_save_grant(st, a, t, now, e) < 0)
        return -1;
    char when[CLOCK_RFC3339_SIZE];
    printf("Account \"%s\" is authorized (%s, %s): the access token is valid until %s%s.\n",
           l->name, config_oauth2_provider_name(a->oauth2.provider),
           config_oauth2_flow_name(a->oauth2.flow),
           clock_rfc3339(now + t->expires_in_s * 1000, 0, when, sizeof when),
           t->refresh_token[0] ? "; a refresh token is kept"
           : a->oauth2.flow == CONFIG_FLOW_CLIENT_CREDENTIALS ? ""
                                                             : "; NO refresh token came (add the "
                                                               "offline_access scope?)");
    fflush(stdout);
    return 0;
}

static int login(int argc, char **argv)
{
    struct login_args l;
    int done = login_args(argc, argv, &l);
    if (done >= 0)
        return done;
    const char *path = l.path, *name = l.name;
    struct config *cfg = load(path);
    if (!cfg)
        return CLI_EXIT_USAGE;
    const struct config_account *a = NULL;
    for (size_t i = 0; i < cfg->account_count && !a; i++)
        if (strcmp(cfg->accounts[i].name, name) == 0)
            a = &cfg->accounts[i];
    int code = CLI_EXIT_USAGE;
    struct store *st = NULL;
    struct oauth2_client *c = NULL;
    struct oauth2_token *t = NULL;
    struct err e;
    err_clear(&e);
    if (!a) {
        fprintf(stderr, "pop3bridge: Usage: %s has no account named \"%s\"\n", path, name);
        goto out;
    }
    if (!oauth2_managed(a)) {
        fprintf(stderr, "pop3bridge: Usage: account %s has no oauth2 provider (microsoft, google "
                        "or custom): there is nothing to authorize\n",
                name);
        goto out;
    }
    c = malloc(sizeof *c);
    t = calloc(1, sizeof *t);
    if (!c || !t) {
        err_set(&e, ERR_INTERNAL, "out of memory");
        code = cli_fail(&e);
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        err_set(&e, ERR_INTERNAL, "curl_global_init failed");
        code = cli_fail(&e);
        goto out;
    }
    if (!(st = store_open(cfg->state_dir, &e)) || oauth2_proto_client(&a->oauth2, c, &e) < 0) {
        code = cli_fail(&e);
        goto curl_out;
    }
    code = authorize(&l, a, st, c, t, &e) < 0 ? cli_fail(&e) : 0;
curl_out:
    curl_global_cleanup();
out:
    oauth2_proto_token_wipe(t);
    free(t);
    free(c);
    store_close(st);
    config_free(&cfg);
    return code;
}

/* ---- status ------------------------------------------------------------------------------ */

static int status(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': path = optarg; break;
        case 'h': oauth2_cli_usage(stdout); return 0;
        default: return usage_fail("unknown or incomplete option \"%s\"", argv[optind - 1]);
        }
    }
    if (!path || optind != argc)
        return usage_fail("oauth2 status needs --config FILE and nothing else");
    struct config *cfg = load(path);
    if (!cfg)
        return CLI_EXIT_USAGE;
    struct err e;
    err_clear(&e);
    int code = 0;
    size_t shown = 0;
    struct store *st = store_open(cfg->state_dir, &e);
    if (!st) {
        code = cli_fail(&e);
        goto out;
    }
    int64_t now = clock_wall_ms();
    for (size_t i = 0; i < cfg->account_count; i++) {
        const struct config_account *a = &cfg->accounts[i];
        if (!a->oauth2.present)
            continue;
        shown++;
        if (!oauth2_managed(a)) {
            printf("%s: static token (from the configuration; not kept by the bridge)\n", a->name);
            continue;
        }
        struct oauth2_status s;
        if (oauth2_status(st, a, &s, &e) < 0) {
            code = cli_fail(&e);
            goto out;
        }
        const char *prov = config_oauth2_provider_name(a->oauth2.provider);
        const char *flow = config_oauth2_flow_name(a->oauth2.flow);
        char t1[CLOCK_RFC3339_SIZE], t2[32];
        switch (s.state) {
        case OAUTH2_STATE_NONE:
            if (a->oauth2.flow == CONFIG_FLOW_CLIENT_CREDENTIALS)
                printf("%s: no token yet (%s, %s): one is requested when a poll needs it\n",
                       a->name, prov, flow);
            else
                printf("%s: not authorized (%s, %s)\n  run: pop3bridge oauth2 login --config %s "
                       "%s\n",
                       a->name, prov, flow, path, a->name);
            continue;
        case OAUTH2_STATE_INVALID:
            printf("%s: %s (%s, %s)\n  run: pop3bridge oauth2 login --config %s %s\n", a->name,
                   s.error[0] ? s.error : OAUTH2_REAUTHORIZE, prov, flow, path, a->name);
            continue;
        case OAUTH2_STATE_WRONG_KEY:
            printf("%s: sealed under another secrets key (%s, %s)\n  restore that key, or run: "
                   "pop3bridge oauth2 login --config %s %s\n",
                   a->name, prov, flow, path, a->name);
            continue;
        case OAUTH2_STATE_AUTHORIZED:
            break;
        }
        printf("%s: authorized (%s, %s)\n", a->name, prov, flow);
        if (s.access_expires_at)
            printf("  access token expires:    %s (%s)\n",
                   clock_rfc3339(s.access_expires_at, 0, t1, sizeof t1),
                   relative(s.access_expires_at, now, t2, sizeof t2));
        if (s.has_refresh_token) {
            if (s.refresh_used_at)
                printf("  refresh token last used: %s (%s)\n",
                       clock_rfc3339(s.refresh_used_at, 0, t1, sizeof t1),
                       relative(s.refresh_used_at, now, t2, sizeof t2));
            else
                printf("  refresh token last used: never\n");
        }
        printf("  authorized at:           %s\n", clock_rfc3339(s.authorized_at, 0, t1, sizeof t1));
        if (s.retry_at > now)
            printf("  last refresh failed (%d in a row), next attempt %s: %s\n", s.failures,
                   relative(s.retry_at, now, t2, sizeof t2), s.error);
    }
    if (!shown)
        printf("no account in %s uses oauth2\n", path);
out:
    store_close(st);
    config_free(&cfg);
    return code;
}

int oauth2_cli_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        oauth2_cli_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "login") == 0)
        return login(argc - 1, argv + 1);
    if (strcmp(argv[1], "status") == 0)
        return status(argc - 1, argv + 1);
    return usage_fail("unknown oauth2 command \"%s\"", argv[1]);
}
