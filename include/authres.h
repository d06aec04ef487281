/*
 * authres — the Authentication-Results header field (RFC 8601) and the
 * message object's `authentication` built from it:
 *
 *   {authserv_id, spf, dkim: [{domain, result}], dmarc, arc}
 *
 * Anyone can write an Authentication-Results field into a message.  Only the
 * receiving side's own fields can be believed: RFC 8601 §5 has an MTA delete
 * fields bearing its authserv-id from arriving mail before it adds its own,
 * and it adds them at the top.  So:
 *   - with a list of trusted authserv-ids (the account's
 *     `trusted_authserv_ids`), the topmost field whose authserv-id is in the
 *     list names the authserv_id, and the results are read from every field
 *     with that same authserv-id (a server may write one field per method);
 *   - with an empty list, only the topmost Authentication-Results field is
 *     read, whatever its authserv-id: the fields below it may be forged.
 * spf, dmarc and arc are the first such result (lower case: "pass", "fail",
 * "softfail", "neutral", "none", "temperror", "permerror", "policy", ...), or
 * null when the field has none; dkim lists every dkim result with the
 * signing domain from header.d (or the domain of header.i), null if neither.
 * A field of "none" (no results) gives its authserv_id with the others null.
 * A field without an authserv-id (Microsoft 365 writes "spf=pass ...; dkim=
 * ..." alone) gives a null authserv_id and is never a trusted one.  The
 * object is null when there is no usable field.
 *
 * The parser follows RFC 8601 §2.2: authserv-id (token or quoted-string), an
 * optional version, then "; none" or resinfo items ("; method[/version] =
 * result [reason=value] ptype.property=pvalue ..."), with comments (nested,
 * with quoted-pairs) and folding white space anywhere between tokens.  It is
 * lenient where real MTAs are not strict: a trailing ';', pvalues that are
 * not tokens (header.b=gfT/i2HB, header.i=@example.com) and a resinfo it
 * cannot read (skipped up to the next ';').  Names (method, result, ptype,
 * property) are compared and returned in lower case.
 *
 * Limits: AUTHRES_FIELDS_MAX fields from the top are looked at; a field
 * longer than AUTHRES_VALUE_MAX bytes is not read; at most AUTHRES_RESULTS_MAX
 * results per field, AUTHRES_PROPS_MAX properties per result and
 * AUTHRES_DKIM_MAX dkim entries are kept; comments nest at most
 * AUTHRES_COMMENT_DEPTH_MAX deep (deeper: the field is not read); a value is
 * cut at AUTHRES_TOKEN_MAX bytes.  Pure functions, thread-safe.
 */
#ifndef POP3BRIDGE_AUTHRES_H
#define POP3BRIDGE_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#define AUTHRES_FIELDS_MAX 50          /* Authentication-Results fields looked at */
#define AUTHRES_VALUE_MAX (16 * 1024)  /* bytes of one field read */
#define AUTHRES_RESULTS_MAX 64         /* results kept per field */
#define AUTHRES_PROPS_MAX 16           /* properties kept per result */
#define AUTHRES_DKIM_MAX 32            /* entries in `dkim` */
#define AUTHRES_COMMENT_DEPTH_MAX 8    /* nesting of comments */
#define AUTHRES_TOKEN_MAX 256          /* bytes of a name or value kept */
#define AUTHRES_NAME_MAX 64            /* bytes of a method, result, ptype, property */

struct authres_prop {
    char ptype[AUTHRES_NAME_MAX];    /* "smtp", "header", "body", "policy" */
    char property[AUTHRES_NAME_MAX]; /* "mailfrom", "d", "i", "from" ... */
    char *value;                     /* as written, quotes removed */
};

struct authres_result {
    char method[AUTHRES_NAME_MAX];   /* "spf", "dkim", "dmarc", "arc" ... */
    int version;                     /* method-version, 1 when absent */
    char result[AUTHRES_NAME_MAX];   /* "pass", "fail" ... */
    char *reason;                    /* reason=value, or NULL */
    struct authres_prop props[AUTHRES_PROPS_MAX];
    size_t prop_count;
};

struct authres {
    char *authserv_id;               /* NULL when the field begins with a result
                                        (Microsoft 365 writes them so) */
    int version;                     /* authres-version, 1 when absent */
    bool none;                       /* "; none": no authentication done */
    struct authres_result *results;
    size_t count;
};

/*
 * Parses the value of one field (what follows "Authentication-Results:",
 * folded or not; `len` bytes, any content).  Returns 0 with `out` filled (the
 * caller releases it with authres_free), or -1 when it has neither an
 * authserv-id nor a result, or is longer than AUTHRES_VALUE_MAX, or its
 * comments nest too deep
 * (`out` is then empty and needs no release).
 */
int authres_parse(const char *value, size_t len, struct authres *out);

/* Releases what authres_parse() put in `a` and zeroes it; NULL is a no-op. */
void authres_free(struct authres *a);

/* The value of property "ptype.property" of a result, or NULL. */
const char *authres_prop(const struct authres_result *r, const char *ptype, const char *property);

/*
 * The message object's `authentication` from the values of a message's
 * Authentication-Results fields, `values[0]` the topmost, and the trusted
 * authserv-ids (compared without regard to ASCII case).  Every string in it
 * is valid UTF-8.  Returns a new cJSON object, or a cJSON null when no field
 * applies; NULL only when out of memory.
 */
cJSON *authres_json(const char *const *values, size_t count, const char *const *trusted,
                    size_t trusted_count);

#endif
