/* subaddr — the +detail of the account's address; see include/subaddr.h. */
#include "subaddr.h"

#include <stdbool.h>
#include <string.h>

#include <glib.h>

/* Splits an addr-spec at its last '@': false if it is not "x@y" or too long. */
static bool split(const char *a, size_t *local_len, const char **domain)
{
    if (!a)
        return false;
    size_t n = strnlen(a, SUBADDR_ADDRESS_MAX + 1);
    if (n > SUBADDR_ADDRESS_MAX)
        return false;
    const char *at = strrchr(a, '@');
    if (!at || at == a || !at[1])
        return false;
    *local_len = (size_t)(at - a);
    *domain = at + 1;
    return true;
}

char *subaddr_detail(const char *account, const char *const *recipients, size_t count)
{
    size_t alen;
    const char *adom;
    if (!split(account, &alen, &adom))
        return NULL;
    for (size_t i = 0; recipients && i < count; i++) {
        const char *r = recipients[i];
        size_t rlen;
        const char *rdom;
        if (!split(r, &rlen, &rdom) || g_ascii_strcasecmp(rdom, adom) != 0)
            continue;
        if (rlen <= alen + 1 || r[alen] != SUBADDR_SEPARATOR ||
            g_ascii_strncasecmp(r, account, alen) != 0)
            continue;
        return g_utf8_make_valid(r + alen + 1, (gssize)(rlen - alen - 1));
    }
    return NULL;
}
