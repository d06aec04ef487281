"""`run --once` and a backoff saved by an earlier run (issue: --once did not
finish while an account's saved backoff had not passed).

--once polls every account now, whatever backoff an earlier run left,
except the server's LOGIN-DELAY and the backoff after a refused login
(auth_error): such an account is skipped, with a poll_skipped line giving
the time it may be polled, and the run exits 7 (none failed, one skipped).
"""

import re
import secrets
import sqlite3
import os
import time

import bridge
import dovecot
import harness
import mailgen
from bridge import Bridge, Receiver
from scripted_server import ScriptedServer, respond, send

DC = None
HOUR_MS = 3600 * 1000
EXIT_SKIPPED = 7


def setup_module():
    global DC
    DC = dovecot.Dovecot(name="dovecot-once").start()


def teardown_module():
    if DC:
        DC.stop()


def make(name):
    user = "once-" + name
    pw = secrets.token_urlsafe(12)
    DC.add_user(user, pw)
    secret = bridge.new_secret()
    rcv = Receiver(secret, name="rcv-" + name).start()
    harness.register_cleanup(rcv.stop)
    cfg = {"log_level": "debug",
           "accounts": [{"name": "a", "host": "127.0.0.1", "port": DC.tls_port, "tls": "implicit",
                         "ca_file": DC.pki.ca, "username": user, "password_env": "T_PW",
                         "start": "all", "poll_interval": "1h", "webhooks": ["hook"]}],
           "webhooks": [{"name": "hook", "url": rcv.url, "secret_env": "T_WHSEC"}]}
    b = Bridge(cfg, {"T_PW": pw, "T_WHSEC": secret}, name="bridge-once-" + name)
    r = b.run_once(timeout=40)          # the account's row exists from here on
    assert r.code == 0, r.describe()
    return user, b, rcv


def set_state(b, state, last_error, until_ms, code=""):
    con = sqlite3.connect(os.path.join(b.state_dir, "pop3bridge.db"), timeout=10)
    con.execute("UPDATE accounts SET state = ?, last_error = ?, backoff_until = ?,"
                " last_error_code = ?", (state, last_error, until_ms, code))
    con.commit()
    con.close()


@harness.timeout(60)
def test_once_polls_through_a_temporary_backoff():
    user, b, rcv = make("temp")
    DC.deliver(user, mailgen.message(7101, 2000))
    set_state(b, "backoff", "Connection: connect to 127.0.0.1: Connection refused",
              int(time.time() * 1000) + HOUR_MS)
    t0 = time.monotonic()
    r = b.run_once(timeout=40)
    assert r.code == 0, r.describe()
    assert time.monotonic() - t0 < 30, "run --once waited for the saved backoff"
    assert "event=poll_done" in r.stderr and "poll_skipped" not in r.stderr, r.describe()
    assert len(rcv.events()) == 1, rcv.log()


def _skipped(b, rcv, user, state, last_error, reason, code=""):
    DC.deliver(user, mailgen.message(7102, 2000))
    until = int(time.time() * 1000) + HOUR_MS
    set_state(b, state, last_error, until, code)
    r = b.run_once(timeout=40)
    assert r.code == EXIT_SKIPPED, r.describe()
    m = re.search(r"event=poll_skipped account=a reason=\"?%s\"? not_before=(\S+) retry_in_s=(\d+)"
                  % re.escape(reason), r.stderr)
    assert m, r.describe()
    assert 3500 <= int(m.group(2)) <= 3600, m.group(0)
    assert "event=poll_start" not in r.stderr, "the skipped account was polled: " + r.describe()
    assert rcv.events() == [], rcv.log()
    # the saved state is left as it was
    harness.eq(b.query("SELECT state, backoff_until FROM accounts"), [(state, until)], "state")


@harness.timeout(60)
def test_once_skips_an_auth_error_backoff():
    user, b, rcv = make("auth")
    _skipped(b, rcv, user, "auth_error", "Authentication: login refused", "auth_error")


@harness.timeout(60)
def test_once_skips_a_login_delay_refusal():
    """What counts is the saved code (last_error_code), not the text for
    people, whatever it says."""
    user, b, rcv = make("ld")
    _skipped(b, rcv, user, "backoff", "Server: login: please wait a while", "LOGIN-DELAY",
             code="login_delay")


@harness.timeout(60)
def test_once_reads_the_code_not_the_text():
    """A temporary backoff whose text quotes "[LOGIN-DELAY]" but whose code
    says network: --once polls through it."""
    user, b, rcv = make("ldtext")
    DC.deliver(user, mailgen.message(7103, 2000))
    set_state(b, "backoff", 'Connection: reset after the server said "[LOGIN-DELAY] x"',
              int(time.time() * 1000) + HOUR_MS, "network")
    r = b.run_once(timeout=40)
    assert r.code == 0, r.describe()
    assert "event=poll_done" in r.stderr and "poll_skipped" not in r.stderr, r.describe()
    assert len(rcv.events()) == 1, rcv.log()
    harness.eq(b.query("SELECT state, last_error, last_error_code FROM accounts"),
               [("idle", "", "")], "state after the poll")


def _scripted_once(rules, until, name):
    """One account on a scripted server answering by rules (USER/PASS, no
    TLS) and one `run --once`; the server (stopped), the bridge and the
    run's result."""
    srv = ScriptedServer([send(b"+OK ready\r\n"), respond(rules, until=until)],
                         timeout=30).start()
    secret = bridge.new_secret()
    rcv = Receiver(secret, name="rcv-" + name).start()
    harness.register_cleanup(rcv.stop)
    cfg = {"log_level": "debug",
           "accounts": [{"name": "a", "host": "127.0.0.1", "port": srv.port, "tls": "none",
                         "allow_plaintext": True, "auth": ["user"], "username": "u",
                         "password_env": "T_PW", "poll_interval": "1h", "webhooks": ["hook"]}],
           "webhooks": [{"name": "hook", "url": rcv.url, "secret_env": "T_WHSEC"}]}
    b = Bridge(cfg, {"T_PW": "pw", "T_WHSEC": secret}, name="bridge-once-" + name)
    r = b.run_once(timeout=40)
    srv.wait()
    srv.stop()
    return srv, b, r


@harness.timeout(60)
def test_once_saves_a_login_delay_refusal_and_skips_it():
    """A server that refuses the login with [LOGIN-DELAY]: the run saves the
    code login_delay beside the text; the next --once skips the account
    without connecting (the server is gone: a connection would fail)."""
    rules = [(r"CAPA", b"+OK\r\nUSER\r\nUIDL\r\nRESP-CODES\r\n.\r\n"),
             (r"USER .*", b"+OK\r\n"),
             (r"PASS .*", b"-ERR [LOGIN-DELAY] wait before logging in again\r\n"),
             (r"QUIT", b"+OK bye\r\n")]
    srv, b, r = _scripted_once(rules, r"QUIT|PASS", "ld-refused")
    assert r.code != 0 and "event=poll_failed" in r.stderr, r.describe()
    [(state, text, code, until)] = b.query(
        "SELECT state, last_error, last_error_code, backoff_until FROM accounts")
    harness.eq((state, code), ("backoff", "login_delay"), "saved state and code")
    assert "[LOGIN-DELAY]" in text and until > time.time() * 1000, (text, until)
    r = b.run_once(timeout=40)
    assert r.code == EXIT_SKIPPED, r.describe()
    assert re.search(r"event=poll_skipped account=a reason=\"?LOGIN-DELAY", r.stderr), r.describe()
    assert "event=poll_start" not in r.stderr, r.describe()


@harness.timeout(60)
def test_once_honours_the_login_delay_of_a_successful_poll():
    """A server that advertises LOGIN-DELAY 600: the first --once polls it;
    a second one right after does not log in again (the server is gone:
    a login would fail) but skips the account, exit 7."""
    rules = [(r"CAPA", b"+OK\r\nUSER\r\nUIDL\r\nLOGIN-DELAY 600\r\n.\r\n"),
             (r"USER .*", b"+OK\r\n"), (r"PASS .*", b"+OK logged in\r\n"),
             (r"STAT", b"+OK 0 0\r\n"), (r"UIDL", b"+OK\r\n.\r\n"), (r"LIST", b"+OK\r\n.\r\n"),
             (r"QUIT", b"+OK bye\r\n")]
    srv, b, r = _scripted_once(rules, r"QUIT", "ld-ok")
    assert r.code == 0, r.describe()
    assert srv.commands[-1] == "QUIT", srv.commands
    until = b.query("SELECT backoff_until FROM accounts")[0][0]
    now = int(time.time() * 1000)
    assert now + 500 * 1000 < until <= now + 600 * 1000, (until, now)
    r = b.run_once(timeout=40)
    assert r.code == EXIT_SKIPPED, r.describe()
    assert re.search(r"event=poll_skipped account=a reason=\"?LOGIN-DELAY", r.stderr), r.describe()
