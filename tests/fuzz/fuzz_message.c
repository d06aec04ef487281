/* libFuzzer target: message_to_json, message_top_json and attachment
 * extraction over arbitrary input, with an account address and trusted
 * authserv-ids so that every field of the object is computed (text_reply,
 * authentication, spam, auto_reply, bounce, list, mailbox_hash).  Must not
 * crash or leak, and the printed JSON must be valid UTF-8 (checked here by a
 * validator of its own). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"

/* RFC 3629 well-formed UTF-8 (Table 3-7 of the Unicode standard). */
static bool well_formed(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf)
            len = 2;
        else if (c == 0xe0)
            len = 3, lo = 0xa0;
        else if (c == 0xed)
            len = 3, hi = 0x9f;
        else if (c >= 0xe1 && c <= 0xef)
            len = 3;
        else if (c == 0xf0)
            len = 4, lo = 0x90;
        else if (c == 0xf4)
            len = 4, hi = 0x8f;
        else if (c >= 0xf1 && c <= 0xf3)
            len = 4;
        else
            return false;
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return false;
        i += len;
    }
    return true;
}

static void check(cJSON *j)
{
    if (!j)
        abort(); /* only out of memory may give NULL */
    char *s = cJSON_PrintUnformatted(j);
    if (!s || !well_formed((const unsigned char *)s, strlen(s)))
        abort();
    cJSON *back = cJSON_Parse(s);
    if (!back)
        abort();
    cJSON_Delete(back);
    cJSON_free(s);
}

static int count_sink(void *ctx, const void *buf, size_t len)
{
    (void)buf;
    *(size_t *)ctx += len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e;
    static const char *const trusted[] = {"mx.example.com", "example.org"};
    struct message_opts o = {.id = "f1", .uidl = "u", .public_url = "http://127.0.0.1",
                             .inline_max = 64, .trusted_authserv_ids = trusted,
                             .trusted_authserv_id_count = 2, .address = "support@example.com"};
    cJSON *m = message_to_json(data, size, &o, &e);
    check(m);
    static const char *const fields[] = {"text_reply", "authentication", "spam", "auto_reply",
                                         "bounce", "list", "mailbox_hash"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!cJSON_GetObjectItemCaseSensitive(m, fields[i]))
            abort();
    /* every listed attachment extracts to exactly its size */
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(m, "attachments"))
    {
        const cJSON *id = cJSON_GetObjectItem(a, "id");
        const cJSON *sz = cJSON_GetObjectItem(a, "size");
        size_t got = 0;
        if (!cJSON_IsString(id) || !cJSON_IsNumber(sz))
            abort();
        if (message_attachment(data, size, id->valuestring, count_sink, &got, NULL, &e) != 0 ||
            (double)got != sz->valuedouble)
            abort();
    }
    cJSON_Delete(m);
    check(m = message_top_json(data, size, "u", &e));
    cJSON_Delete(m);
    return 0;
}
