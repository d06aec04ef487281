/* pop3cfg — see include/pop3cfg.h. */
#include "pop3cfg.h"

#include <string.h>

void pop3cfg_opts(const struct config_account *a, struct pop3_opts *o)
{
    static const enum pop3_mech map[] = {
        [CONFIG_AUTH_USER] = POP3_MECH_USER,
        [CONFIG_AUTH_APOP] = POP3_MECH_APOP,
        [CONFIG_AUTH_PLAIN] = POP3_MECH_PLAIN,
        [CONFIG_AUTH_LOGIN] = POP3_MECH_LOGIN,
        [CONFIG_AUTH_CRAM_MD5] = POP3_MECH_CRAM_MD5,
        [CONFIG_AUTH_SCRAM_SHA_1] = POP3_MECH_SCRAM_SHA_1,
        [CONFIG_AUTH_SCRAM_SHA_256] = POP3_MECH_SCRAM_SHA_256,
        [CONFIG_AUTH_XOAUTH2] = POP3_MECH_XOAUTH2,
        [CONFIG_AUTH_OAUTHBEARER] = POP3_MECH_OAUTHBEARER,
    };
    memset(o, 0, sizeof *o);
    o->host = a->host;
    o->port = (unsigned)a->port;
    o->tls = a->tls == CONFIG_TLS_IMPLICIT   ? POP3_TLS_IMPLICIT
             : a->tls == CONFIG_TLS_STARTTLS ? POP3_TLS_STARTTLS
                                             : POP3_TLS_NONE;
    o->ca_file = a->ca_file;
    o->fingerprint = a->fingerprint;
    o->username = a->username;
    o->password = a->password.value;
    o->oauth2_token = a->oauth2.present ? a->oauth2.token.value : NULL;
    for (size_t i = 0; i < a->auth_count && i < POP3_MECHS_MAX; i++)
        o->mechs[o->n_mechs++] = map[a->auth[i]];
    o->allow_plaintext = a->allow_plaintext;
    o->timeout_ms = (int)(a->timeout_ms > 0 && a->timeout_ms < 86400000
                              ? a->timeout_ms
                              : POP3CFG_TIMEOUT_DEFAULT_MS);
    o->session_timeout_ms = a->session_timeout_ms;
    o->max_message_size = a->max_message_size + POP3_LIST_SLACK(a->max_message_size);
}
