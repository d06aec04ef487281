"""Whole-session deadlines and stopping (issue 8, section 7).

A scripted POP3 server that answers RETR with a little data every half
second, forever as far as the client can tell (well above NET_MIN_PROGRESS
per timeout window, so no per-read timeout ever fires):

- with `session_timeout: "10s"` the poll ends after about 10 s with
  "session time limit reached", nothing deleted (no QUIT);
- SIGTERM during such a poll (default session_timeout of 10m) stops the
  bridge at once: the poll is cancelled, not waited for.

Before: no session deadline at all (the poll held its worker, and a stop,
for as long as the server kept dripping).
"""

import time

import harness
import bridge
from bridge import Bridge, Receiver
from scripted_server import ScriptedServer, send, respond, expect, call

DRIP_SECONDS = 45.0


def dripping_server():
    common = [
        (r"CAPA", b"+OK\r\nUSER\r\nUIDL\r\n.\r\n"),
        (r"USER .*", b"+OK\r\n"),
        (r"PASS .*", b"+OK logged in\r\n"),
        (r"STAT", b"+OK 1 1000000\r\n"),
        (r"UIDL", b"+OK\r\n1 drip-1\r\n.\r\n"),
        (r"LIST", b"+OK\r\n1 1000000\r\n.\r\n"),
    ]
    state = {"retr": None}

    def drip(srv):
        state["retr"] = time.monotonic()
        srv.write(b"+OK\r\nSubject: drip\r\n\r\n")
        end = time.monotonic() + DRIP_SECONDS
        while time.monotonic() < end:
            srv.write(b"x" * 2047 + b"\n")
            time.sleep(0.5)
        srv.write(b".\r\n")

    srv = ScriptedServer([send(b"+OK dripping server\r\n"), respond(common, until=r"LIST"),
                          expect(r"RETR 1"), call(drip)],
                         timeout=DRIP_SECONDS + 20, linger=1.0)
    return srv.start(), state


def config(srv, rcv, **extra):
    acct = {"name": "drip", "host": "127.0.0.1", "port": srv.port, "tls": "none",
            "allow_plaintext": True, "auth": ["user"], "username": "u",
            "password_env": "T_PW", "start": "all", "timeout": "2s", "webhooks": ["hook"]}
    acct.update(extra)
    return {"log_level": "debug", "accounts": [acct],
            "webhooks": [{"name": "hook", "url": rcv.url, "secret_env": "T_WHSEC"}]}


def test_session_timeout_ends_a_dripping_poll():
    srv, state = dripping_server()
    secret = bridge.new_secret()
    rcv = Receiver(secret, name="receiver-deadline").start()
    b = Bridge(config(srv, rcv, session_timeout="10s"), {"T_PW": "pw", "T_WHSEC": secret},
               name="bridge-deadline")
    t0 = time.monotonic()
    r = b.run_once(timeout=40)
    took = time.monotonic() - t0
    srv.stop()
    rcv.stop()
    assert state["retr"] is not None, "the poll never reached RETR: %s" % r.describe()
    assert r.code == 1, r.describe()                 # the poll failed
    assert "session time limit reached" in r.stdout + r.stderr, r.describe()
    assert 9.0 <= took < 25.0, "the poll ended after %.1f s" % took
    assert "QUIT" not in srv.commands and not any(c.startswith("DELE") for c in srv.commands), \
        srv.commands


def test_sigterm_cancels_a_poll_in_progress():
    srv, state = dripping_server()
    secret = bridge.new_secret()
    rcv = Receiver(secret, name="receiver-cancel").start()
    b = Bridge(config(srv, rcv), {"T_PW": "pw", "T_WHSEC": secret}, name="bridge-cancel")
    b.start()
    try:
        harness.wait_for(lambda: state["retr"] is not None, 15, what="the poll to reach RETR")
        time.sleep(1.0)
        t0 = time.monotonic()
        code = b.stop(timeout=20)
        took = time.monotonic() - t0
    finally:
        b.kill9()
        srv.stop()
        rcv.stop()
    assert code == 0, b.log()[-2000:]
    assert took < 5.0, "the bridge took %.1f s to stop" % took
    assert "session cancelled" in b.log(), b.log()[-2000:]
    # cancelled, not failed: no backoff saved, the next start polls on schedule
    assert "event=poll_cancelled account=drip" in b.log(), b.log()[-2000:]
    assert "event=poll_failed" not in b.log(), b.log()[-2000:]
    rows = b.query("SELECT state, backoff_until FROM accounts")
    assert all(st != "backoff" and until == 0 for st, until in rows), rows
    assert "QUIT" not in srv.commands and not any(c.startswith("DELE") for c in srv.commands), \
        srv.commands


def test_files_in_an_open_state_dir_are_private():
    """A state_dir that exists with mode 0755 is refused; accepted with
    --allow-insecure-permissions, the database and its WAL are still 0600
    (umask 077 at start), not readable by every local user."""
    import os
    import stat
    import dovecot
    secret = bridge.new_secret()
    rcv = Receiver(secret, name="receiver-umask").start()
    srv_port = dovecot.free_port()  # nothing listens: the poll fails, the store is made
    b = Bridge({"log_level": "debug",
                "accounts": [{"name": "a", "host": "127.0.0.1", "port": srv_port, "tls": "none",
                              "allow_plaintext": True, "auth": ["user"], "username": "u",
                              "password_env": "T_PW", "webhooks": ["hook"]}],
                "webhooks": [{"name": "hook", "url": rcv.url, "secret_env": "T_WHSEC"}]},
               {"T_PW": "pw", "T_WHSEC": secret}, name="bridge-umask")
    os.makedirs(b.state_dir, exist_ok=True)
    os.chmod(b.state_dir, 0o755)
    r = b.run_once(timeout=30)
    assert r.code == 2 and "state_dir: %s is open to every user" % b.state_dir in r.stderr, \
        r.describe()
    assert not os.path.exists(os.path.join(b.state_dir, "pop3bridge.db")), "refused, yet opened"
    r = b.run_once(timeout=30, args=["--allow-insecure-permissions"])
    rcv.stop()
    assert "event=insecure_permissions" in r.stderr, r.describe()
    assert r.code == 1, r.describe()
    made = [n for n in os.listdir(b.state_dir) if n.startswith("pop3bridge.db")]
    assert "pop3bridge.db" in made, made
    for n in made:
        mode = stat.S_IMODE(os.stat(os.path.join(b.state_dir, n)).st_mode)
        assert mode & 0o077 == 0, "%s has mode %o" % (n, mode)
