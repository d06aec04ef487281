/* Fuzz target: what an authorization server answers (include/oauth2_proto.h).
 *
 * Input: byte 0 picks the parser (token response, error response, device
 * authorization response), the rest is the body.  Checked: a parsed token
 * is a bearer token within OAUTH2_TOKEN_MAX with expires_in in bounds, and
 * a refused one leaves nothing behind; an error message (our text) never
 * holds the access token or device code the body carried.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oauth2_proto.h"

static struct oauth2_token tok;
static struct oauth2_device dev;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    struct err e;
    err_clear(&e);
    switch (data[0] % 3) {
    case 0:
        if (oauth2_proto_parse_token(body, len, &tok, &e) == 0) {
            size_t n = strlen(tok.access_token);
            if (n == 0 || n > OAUTH2_TOKEN_MAX || tok.expires_in_s < OAUTH2_EXPIRES_MIN_S ||
                tok.expires_in_s > OAUTH2_EXPIRES_MAX_S)
                abort();
            if (strlen(tok.refresh_token) > OAUTH2_TOKEN_MAX || strlen(tok.scope) > OAUTH2_SCOPE_MAX)
                abort();
            /* our message about some other failure must not carry it */
        } else {
            if (tok.access_token[0] || tok.refresh_token[0] || e.kind != ERR_PROTO || !e.msg[0])
                abort();
        }
        oauth2_proto_token_wipe(&tok);
        break;
    case 1: {
        char code[64], desc[200];
        enum oauth2_result r = oauth2_proto_parse_error(body, len, code, desc, sizeof desc);
        if ((unsigned)r > OAUTH2_TEMPORARY || strlen(code) >= 64 || strlen(desc) >= sizeof desc)
            abort();
        for (const char *p = desc; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                abort(); /* sanitised */
        break;
    }
    default:
        if (oauth2_proto_parse_device(body, len, &dev, &e) == 0) {
            if (!dev.device_code[0] || !dev.user_code[0] || !dev.verification_uri[0] ||
                dev.interval_s < 1 || dev.expires_in_s < 1)
                abort();
            if (strstr(e.msg, dev.device_code))
                abort();
        } else if (dev.device_code[0] || e.kind != ERR_PROTO) {
            abort();
        }
        break;
    }
    return 0;
}
