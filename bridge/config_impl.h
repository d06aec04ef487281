/*
 * config_impl — what the files of the configuration module share (private
 * to bridge/config*.c; not a public header; the module's interface is
 * include/config.h).
 *
 *   config.c          loading (config_load: read, parse, check, resolve),
 *                     diagnostics, config_free, the summary, check-config
 *   config_tables.c   the tables: every key of every object, with its type,
 *                     field, default and bounds
 *   config_parse.c    messages' helpers, "did you mean", scalar values, and
 *                     parsing a JSON object by its table
 *   config_check.c    the checks across keys, one per table (api, store,
 *                     webhooks, accounts, oauth2, the file)
 *   config_secrets.c  secrets resolved (env, file, command), webhook keys,
 *                     credentials and secret headers decoded
 *
 * One module: its unit tests stay in tests/unit/test_config.c.
 */
#ifndef POP3BRIDGE_CONFIG_IMPL_H
#define POP3BRIDGE_CONFIG_IMPL_H

#include "config.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SHOW_MAX 48          /* characters of a value quoted in a message */
#define PATH_KEY_MAX 256     /* a key path such as accounts[12].oauth2.token_env */
#define SUGGEST_DIST_MAX 2   /* edit distance for "did you mean" */
#define NAME_KEY_MAX 64      /* longest key name in the tables, for suggestions */
#define WEBHOOK_HEADER_NAME_MAX_CFG 100 /* a header name in headers / headers_file */

enum opt_type {
    T_STRING,   /* char *                                                   */
    T_NAME,     /* char *, [A-Za-z0-9._-]{1,64}, unique among its siblings   */
    T_PATH,     /* char *, resolved against the file's directory            */
    T_ENUM,     /* int (an enum), one of `values`                           */
    T_DURATION, /* int64_t milliseconds, "30s"                              */
    T_SIZE,     /* uint64_t bytes, "256KiB" or an integer                   */
    T_INT,      /* int                                                      */
    T_BOOL,     /* bool                                                     */
    T_TRIBOOL,  /* int (enum config_tristate): true, false or left out      */
    T_STRLIST,  /* char ** + size_t count                                   */
    T_NAMELIST, /* char ** + size_t count, each a name                      */
    T_ENUMLIST, /* int * + size_t count                                     */
    T_DURLIST,  /* int64_t * + size_t count                                 */
    T_HEADERS,  /* struct config_header * + size_t count, from an object    */
    T_SECRET,   /* struct config_secret: where the secret comes from        */
    T_REFUSED,  /* a literal secret: always an error                        */
    T_OBJECT,   /* an embedded struct described by `sub`                    */
    T_OBJARRAY, /* an array of structs described by `sub` + size_t count    */
};


#define F_REQUIRED 1u
#define F_WORD_DEFAULTS 4u /* T_OBJECT: one of `values` as a string also means "all defaults" */
#define F_MULTILINE 2u  /* T_SECRET: every line is kept, not only the first */
#define F_ANY_HEADER 4u /* T_HEADERS: any field name (a filter), none reserved */
#define F_OR_WORD 8u    /* T_STRLIST: or one of `values` alone, as a string */
#define NO_OFF ((size_t)-1)

struct ctx;
struct table;

struct opt {
    const char *name;
    enum opt_type type;
    unsigned flags;
    size_t off;                     /* the field */
    size_t count_off;               /* lists: the size_t count */
    const char *def;                /* default as JSON text; NULL = none */
    int64_t min, max;               /* int, duration (ms), size, string length */
    size_t max_items;               /* lists */
    const char *const *values;      /* T_ENUM, T_ENUMLIST; NULL-terminated */
    enum config_secret_source src;  /* T_SECRET */
    const char *hint;               /* T_REFUSED: what to write instead */
    const struct table *sub;        /* T_OBJECT, T_OBJARRAY */
};

struct table {
    const char *label;              /* how the summary names one */
    const struct opt *opts;
    size_t n;
    size_t size;                    /* element size (T_OBJARRAY) */
    size_t present_off;             /* bool set when given (T_OBJECT), or NO_OFF */
    void (*check)(struct ctx *c, void *obj, const char *path);
};

#define MS_S 1000LL
#define MS_M (60 * MS_S)
#define MS_H (60 * MS_M)
#define MS_D (24 * MS_H)
#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define FIELD(s, f) .off = offsetof(struct s, f)
#define LIST(s, f, c) .off = offsetof(struct s, f), .count_off = offsetof(struct s, c)

struct ctx {
    struct config_diag *d;
    const char *file;   /* as the user named it */
    const char *dir;    /* absolute directory of the file */
    struct config *cfg;
    size_t errors;
};

#define AT(base, off, type) ((type *)(void *)((char *)(base) + (off)))

/* cfg_walk() calls one of these for every option of every object */
typedef void (*visit_fn)(struct ctx *c, const struct opt *o, void *field, const char *path);

/* config.c */
/* "FILE: path: message" (path may be "") into the diagnostics; counts an error. */
__attribute__((format(printf, 3, 4))) void cfg_problem(struct ctx *c, const char *path,
                                                   const char *fmt, ...);


/* config_check.c */
void cfg_check_account(struct ctx *c, void *obj, const char *path);
void cfg_check_api(struct ctx *c, void *obj, const char *path);
void cfg_check_filter(struct ctx *c, void *obj, const char *path);
void cfg_check_oauth2(struct ctx *c, void *obj, const char *path);
void cfg_check_payload(struct ctx *c, void *obj, const char *path);
void cfg_check_root(struct ctx *c, void *obj, const char *path);
void cfg_check_store(struct ctx *c, void *obj, const char *path);
void cfg_check_token(struct ctx *c, void *obj, const char *path);
void cfg_check_webhook(struct ctx *c, void *obj, const char *path);
void cfg_check_webhook_auth(struct ctx *c, void *obj, const char *path);
void cfg_check_webhook_basic(struct ctx *c, void *obj, const char *path);
const char *cfg_secret_suffix(enum config_secret_source s);

/* config_parse.c */
const char *cfg_closest(const char *word, const char *const *cands, size_t n);
const char *cfg_json_type(const cJSON *v);
void cfg_parse_table(struct ctx *c, const struct table *t, void *base, const cJSON *obj,
                 const char *path);
void cfg_path_index(char *out, size_t size, const char *parent, size_t i);
void cfg_path_key(char *out, size_t size, const char *parent, const char *key);
const char *cfg_show(const char *s, char *buf, size_t size);

/* config_secrets.c */
int cfg_resolve_all(struct ctx *c);
void cfg_secret_headers_wipe(struct config_webhook *w);
void cfg_secret_wipe(struct config_secret *s);
void cfg_walk(struct ctx *c, const struct table *t, void *base, const char *path, visit_fn fn);
void cfg_webhook_keys_wipe(struct config_webhook *w);

/* config_tables.c */
extern const char *const cfg_auth_names[];
extern const char *const cfg_oauth2_flows[];
extern const char *const cfg_oauth2_providers[];
extern const struct table cfg_root_table;
extern const char *const cfg_type_names[];

#endif
