"""TLS session resumption and SCRAM work kept between polls (issue 8, section 10).

A real Dovecot (implicit TLS, SCRAM-SHA-256 offered, one long-lived login
process so every connection meets the same TLS ticket keys) and a bridge
polling two accounts every second:

- after each account's first poll (a full handshake), its later polls offer
  the TLS session the server handed out on the previous one, and Dovecot
  accepts it: pop3bridge_tls_sessions_resumed_total counts them, and every
  poll still succeeds with mail delivered;
- offered and resumed agree: Dovecot accepted every session offered.
(Keying -- never across accounts, hosts, ports, SNI, CA files or pins --
and expiry are in tests/unit/test_net.c.)

The same against a Dovecot that stores SCRAM-SHA-256 credentials (a fixed
salt per user, as a server set up for SCRAM keeps them, unlike the {PLAIN}
passdb, where Dovecot makes a new salt at every login): after each
account's first login, the salted password is reused, not computed again
(pop3bridge_scram_salted_password_reused_total); with {PLAIN} never.

Before: every poll made a new TLS context, loaded the CA file and did a full
handshake (chain verified again).
"""

import re
import secrets
import urllib.request

import bridge
import dovecot
import mailgen
from bridge import Bridge, Receiver

POLLS = 4      # per account
ACCOUNTS = 2


def metric(text, name):
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, "%s missing from /metrics" % name
    return int(m.group(1))


def run_polls(passdb_scheme="PLAIN"):
    """ACCOUNTS accounts polled every second, POLLS times each: (/metrics
    text, poll_done lines when it was read, the bridge's log)."""
    dc = dovecot.Dovecot(name="dovecot-resume", login_processes="single",
                         passdb_scheme=passdb_scheme).start()
    secret = bridge.new_secret()
    rcv = Receiver(secret, name="receiver-resume").start()
    users = ["resume-%d" % i for i in range(ACCOUNTS)]
    env = {"T_WHSEC": secret, "T_API": secrets.token_urlsafe(16)}
    accts = []
    for i, u in enumerate(users):
        dc.add_user(u, "pw-" + u)
        dc.deliver(u, mailgen.message(300 + i, size=2000))
        env["T_PW_%d" % i] = "pw-" + u
        accts.append({"name": u, "host": "127.0.0.1", "port": dc.tls_port, "tls": "implicit",
                      "ca_file": dc.pki.ca, "username": u, "password_env": "T_PW_%d" % i,
                      "start": "all", "poll_interval": "1s", "webhooks": ["hook"]})
    port = dovecot.free_port()
    cfg = {"log_level": "info", "accounts": accts,
           "api": {"listen": "127.0.0.1:%d" % port, "tokens": [{"name": "t", "token_env": "T_API"}]},
           "webhooks": [{"name": "hook", "url": rcv.url, "secret_env": "T_WHSEC"}]}
    b = Bridge(cfg, env, name="bridge-resume")
    b.start()
    try:
        b.wait_log(r"event=poll_done", 20, count=POLLS * len(users))
        rcv.wait_events(len(users), 20)
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" % port,
                                     headers={"Authorization": "Bearer " + env["T_API"]})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
        # polls finished before the scrape, the polls of the scrape's moment included
        polls = len(re.findall(r"event=poll_done", b.log()))
        events = rcv.events()
    finally:
        code = bridge.stop_all(b, rcv, dc)
    b.assert_polled_cleanly(code)
    assert len(events) == len(users), events
    return text, polls, b.log()


def test_later_polls_resume_the_tls_session():
    text, polls, _log = run_polls()
    offered = metric(text, "pop3bridge_tls_sessions_offered_total")
    resumed = metric(text, "pop3bridge_tls_sessions_resumed_total")
    # every poll after each account's first offered its session, and Dovecot took it
    assert resumed >= (POLLS - 1) * ACCOUNTS, (offered, resumed, polls)
    assert resumed == offered, (offered, resumed)
    assert offered <= polls, (offered, polls)
    # {PLAIN}: Dovecot makes a new SCRAM salt at every login, nothing to reuse
    reused = metric(text, "pop3bridge_scram_salted_password_reused_total")
    assert reused == 0, reused


def test_stored_scram_credentials_reuse_the_salted_password():
    text, polls, _log = run_polls("SCRAM-SHA-256")
    reused = metric(text, "pop3bridge_scram_salted_password_reused_total")
    # every login after each account's first reused its salted password
    assert reused >= (POLLS - 1) * ACCOUNTS, (reused, polls)
    assert reused <= polls, (reused, polls)
