/* libFuzzer target: Authentication-Results (authres_parse, authres_json)
 * over arbitrary input: the whole input as one field, and split at line
 * feeds into several fields read with and without trusted authserv-ids.
 * Must not crash or leak; the object must print as valid UTF-8. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "authres.h"

static void check(cJSON *j)
{
    if (!j)
        abort(); /* only out of memory may give NULL */
    char *s = cJSON_PrintUnformatted(j);
    if (!s || !g_utf8_validate(s, -1, NULL))
        abort();
    cJSON_free(s);
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct authres a;
    if (authres_parse((const char *)data, size, &a) == 0) {
        if (a.count > AUTHRES_RESULTS_MAX)
            abort();
        for (size_t i = 0; i < a.count; i++)
            if (a.results[i].prop_count > AUTHRES_PROPS_MAX)
                abort();
        authres_free(&a);
    }
    char *s = g_strndup((const char *)data, size);
    gchar **fields = g_strsplit(s, "\n", AUTHRES_FIELDS_MAX + 2);
    size_t n = g_strv_length(fields);
    const char *trusted[] = {"mx.example.com", "example.org", ""};
    check(authres_json((const char *const *)fields, n, NULL, 0));
    check(authres_json((const char *const *)fields, n, trusted, 3));
    g_strfreev(fields);
    g_free(s);
    return 0;
}
