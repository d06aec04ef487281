/*
 * pop3-session — drive the POP3 engine step by step, for the integration
 * tests of session semantics (DELE marks, RSET unmarks, QUIT commits, abort
 * deletes nothing, TOP n k, NOOP, single LIST/UIDL).
 *
 *   pop3-session [--ca-file F] [--tls implicit|starttls|none] [--allow-plaintext]
 *                [--auth MECH] HOST PORT USER STEP...
 *   password from POP3BRIDGE_PASSWORD
 *   STEP: stat | list | uidl N | listone N | retr N | top N K | dele N | rset | noop |
 *         quit | abort
 *
 * Prints one line per step on stdout: "stat 3 1200", "retr 2 <octets> <sha256>",
 * "top 1 5 <octets> <sha256>", "dele 1 ok", "quit ok" ...; a failing step prints
 * "<step> error <kind> <code> <message>" and the tool stops there (exit 1).
 */
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pop3.h"

struct hash {
    EVP_MD_CTX *c;
    uint64_t n;
};

static int h_data(void *ctx, const char *b, size_t len, struct err *e)
{
    (void)e;
    struct hash *h = ctx;
    EVP_DigestUpdate(h->c, b, len);
    h->n += len;
    return 0;
}

static void h_hex(struct hash *h, char out[65])
{
    unsigned char md[32];
    unsigned int l = 0;
    EVP_DigestFinal_ex(h->c, md, &l);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int fail(const char *step, const struct err *e)
{
    printf("%s error %s %s %s\n", step, err_kind_name(e->kind),
           e->code_text[0] ? e->code_text : "-", e->msg);
    return 1;
}

static uint32_t num(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if ((*end && *end != ' ') || v == 0 || v > POP3_MESSAGES_MAX) {
        fprintf(stderr, "bad message number %s\n", s);
        exit(2);
    }
    return (uint32_t)v;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct pop3_opts o = {.tls = POP3_TLS_IMPLICIT, .timeout_ms = 10000};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        struct err e;
        if (strcmp(argv[i], "--ca-file") == 0 && i + 1 < argc) {
            o.ca_file = argv[++i];
        } else if (strcmp(argv[i], "--tls") == 0 && i + 1 < argc) {
            i++;
            o.tls = strcmp(argv[i], "none") == 0       ? POP3_TLS_NONE
                    : strcmp(argv[i], "starttls") == 0 ? POP3_TLS_STARTTLS
                                                       : POP3_TLS_IMPLICIT;
        } else if (strcmp(argv[i], "--allow-plaintext") == 0) {
            o.allow_plaintext = true;
        } else if (strcmp(argv[i], "--auth") == 0 && i + 1 < argc) {
            if (pop3_mech_list_parse(argv[++i], o.mechs, &o.n_mechs, &e) < 0) {
                fprintf(stderr, "%s\n", e.msg);
                return 2;
            }
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (argc - i < 3) {
        fprintf(stderr, "usage: pop3-session [options] HOST PORT USER STEP...\n");
        return 2;
    }
    o.host = argv[i];
    o.port = (unsigned)atoi(argv[i + 1]);
    o.username = argv[i + 2];
    o.password = getenv("POP3BRIDGE_PASSWORD");
    i += 3;
    struct err e;
    struct pop3 *p = pop3_open(&o, &e);
    if (!p)
        return fail("open", &e);
    printf("open ok %s\n", pop3_mech_name(pop3_mech_used(p)));
    for (; i < argc; i++) {
        const char *s = argv[i];
        char step[64];
        snprintf(step, sizeof step, "%s", s);
        char *sp = strchr(step, ' ');
        const char *arg1 = sp ? sp + 1 : NULL;
        if (sp)
            *sp = '\0';
        const char *arg2 = arg1 ? strchr(arg1, ' ') : NULL;
        if (arg2)
            arg2++;
        if (strcmp(step, "stat") == 0) {
            uint32_t c;
            uint64_t oc;
            if (pop3_stat(p, &c, &oc, &e) < 0)
                return pop3_abort(&p), fail(s, &e);
            printf("stat %u %llu\n", c, (unsigned long long)oc);
        } else if (strcmp(step, "list") == 0) {
            struct pop3_listing *l;
            if (pop3_listing(p, &l, &e) < 0)
                return pop3_abort(&p), fail(s, &e);
            printf("list %u", l->count);
            for (uint32_t k = 0; k < l->count; k++)
                printf(" %u:%s:%llu", l->entries[k].number, l->entries[k].uidl,
                       (unsigned long long)l->entries[k].size);
            printf("\n");
            pop3_listing_free(&l);
        } else if (strcmp(step, "uidl") == 0 && arg1) {
            char u[POP3_UIDL_MAX + 1];
            if (pop3_uidl_one(p, num(arg1), u, &e) < 0)
                return pop3_abort(&p), fail(s, &e);
            printf("uidl %s %s\n", arg1, u);
        } else if (strcmp(step, "listone") == 0 && arg1) {
            uint64_t sz;
            if (pop3_list_one(p, num(arg1), &sz, &e) < 0)
                return pop3_abort(&p), fail(s, &e);
            printf("listone %s %llu\n", arg1, (unsigned long long)sz);
        } else if ((strcmp(step, "retr") == 0 || strcmp(step, "top") == 0) && arg1) {
            struct hash h = {EVP_MD_CTX_new(), 0};
            EVP_DigestInit_ex(h.c, EVP_sha256(), NULL);
            struct pop3_sink sink = {.data = h_data, .ctx = &h, .lf = true};
            uint32_t n = num(arg1);
            int r = step[0] == 'r' ? pop3_retr(p, &n, 1, &sink, &e)
                                   : pop3_top(p, n, arg2 ? (unsigned)atoi(arg2) : 0, &sink, &e);
            char hex[65];
            h_hex(&h, hex);
            EVP_MD_CTX_free(h.c);
            if (r < 0)
                return pop3_abort(&p), fail(s, &e);
            printf("%s %llu %s\n", s, (unsigned long long)h.n, hex);
        } else if (strcmp(step, "dele") == 0 && arg1) {
            uint32_t n = num(arg1);
            if (pop3_dele(p, &n, 1, &e) < 0) {
                if (e.kind != ERR_SERVER)
                    return pop3_abort(&p), fail(s, &e);
                printf("%s refused %s\n", s, e.server);
                continue;
            }
            printf("%s ok\n", s);
        } else if (strcmp(step, "rset") == 0) {
            if (pop3_rset(p, &e) < 0)
                return pop3_abort(&p), fail(s, &e);
            printf("rset ok\n");
        } else if (strcmp(step, "noop") == 0) {
            if (pop3_noop(p, &e) < 0)
                return pop3_abort(&p), fail(s, &e);
            printf("noop ok\n");
        } else if (strcmp(step, "quit") == 0) {
            if (pop3_quit(&p, &e) < 0)
                return fail(s, &e);
            printf("quit ok\n");
            return 0;
        } else if (strcmp(step, "abort") == 0) {
            pop3_abort(&p);
            printf("abort ok\n");
            return 0;
        } else {
            fprintf(stderr, "unknown step \"%s\"\n", s);
            pop3_abort(&p);
            return 2;
        }
        fflush(stdout);
    }
    pop3_abort(&p);
    return 0;
}
