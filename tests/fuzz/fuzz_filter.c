/* libFuzzer target: routing filters (filter.h) over arbitrary input.  The
 * first line is a subject and header pattern (PCRE2, compiled as the
 * configuration would), the second an address glob, the rest a message
 * parsed by message.h and matched with and without the explanation.  A bad
 * pattern must be refused with a key and a message; a match must stay within
 * the named limits (no hang, no crash, no leak). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"
#include "message.h"

#define PART_MAX 2048 /* bytes of the pattern and the glob taken from the input */

static const char *line(const uint8_t **p, const uint8_t *end, char *buf)
{
    const uint8_t *nl = memchr(*p, '\n', (size_t)(end - *p));
    size_t n = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
    if (n >= PART_MAX)
        n = PART_MAX - 1;
    memcpy(buf, *p, n);
    buf[n] = '\0';
    *p = nl ? nl + 1 : end;
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    char pattern[PART_MAX], glob[PART_MAX];
    line(&p, end, pattern);
    line(&p, end, glob);
    if (!pattern[0] || strlen(pattern) > FILTER_PATTERN_MAX)
        return 0; /* config.c refuses these before filter_compile */
    (void)filter_glob(glob, pattern);
    char *to[] = {glob};
    struct config_header hdr = {.name = "X-Test", .value = pattern};
    struct config_filter spec = {
        .present = true, .to = strchr(glob, '@') ? to : NULL, .to_count = strchr(glob, '@') ? 1 : 0,
        .subject = pattern, .headers = &hdr, .header_count = 1,
        .has_attachments = CONFIG_UNSET, .exclude_auto_replies = true,
    };
    struct filter_error fe;
    struct filter *f = filter_compile(&spec, &fe);
    if (!f) {
        if (!fe.msg[0])
            abort(); /* a refusal always says why */
        return 0;
    }
    struct err e;
    cJSON *msg = message_to_json(p, (size_t)(end - p), NULL, &e);
    if (msg) {
        struct config_webhook w = {.name = "w", .filter = spec};
        w.filter.compiled = f;
        const char *type = filter_message_type(msg, false);
        cJSON *why = cJSON_CreateArray();
        bool a = filter_match(&w, type, msg, why);
        bool b = filter_match(&w, type, msg, NULL);
        if (a != b)
            abort(); /* the explanation never changes the verdict */
        cJSON_Delete(why);
        cJSON_Delete(msg);
    }
    filter_free(f);
    return 0;
}
