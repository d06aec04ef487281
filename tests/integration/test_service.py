"""The bridge as a service: sd_notify messages on a NOTIFY_SOCKET, JSON and
journal logs, credentials from $CREDENTIALS_DIRECTORY, SIGHUP reloads, the
SIGTERM drain, and store backup / restore / export while mail flows.

Real parts: one Dovecot for the module (implicit TLS, generated PKI), the
real webhook receiver, real SQLite files; the service manager's socket and
the journal's socket are plain AF_UNIX datagram sockets made here, read with
Python's socket module.
"""

import email
import email.policy
import fcntl
import hashlib
import json
import mailbox
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request

import harness
import dovecot
import mailgen
import bridge
from bridge import Bridge, Receiver

TIMEOUT = 120
DC = None
HOOK = "hook"


def setup_module():
    global DC
    DC = dovecot.Dovecot(name="dovecot-service").start()


def teardown_module():
    if DC:
        DC.stop()


def pop3_bytes(data):
    """A Maildir message as POP3 transfers it: LF line ends become CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Case:
    """Mailbox users, a receiver and a bridge configured for them."""

    def __init__(self, users=("acct",), receiver_args=(), **account):
        self.passwords = {}
        self.secret = bridge.new_secret()
        self.token = secrets.token_urlsafe(18)
        self.api_port = dovecot.free_port()
        self.rcv = Receiver(self.secret, args=receiver_args).start()
        self.env = {"T_WHSEC": self.secret, "T_API_TOKEN": self.token}
        self.cfg = {
            "log_level": "debug",
            "api": {"listen": "127.0.0.1:%d" % self.api_port,
                    "tokens": [{"name": "t", "token_env": "T_API_TOKEN"}]},
            "webhooks": [{"name": HOOK, "url": self.rcv.url, "secret_env": "T_WHSEC",
                          "retry_schedule": ["1s"] * 5}],
            "accounts": [self.account(u, **account) for u in users],
        }
        self.bridge = Bridge(self.cfg, self.env)

    def account(self, name, **extra):
        user = "svc-%s-%s" % (name, secrets.token_hex(3))
        pw = secrets.token_urlsafe(12)
        DC.add_user(user, pw)
        var = "T_PW_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        self.passwords[name] = (user, pw)
        if hasattr(self, "bridge"):
            self.bridge.secrets[var] = pw
        else:
            self.env[var] = pw
        a = {"name": name, "host": "127.0.0.1", "port": DC.tls_port, "tls": "implicit",
             "ca_file": DC.pki.ca, "username": user, "password_env": var, "start": "all",
             "poll_interval": "1s", "webhooks": [HOOK]}
        a.update(extra)
        return a

    def deliver(self, name, *datas):
        user = self.passwords[name][0]
        return [DC.deliver(user, d) for d in datas]

    def on_server(self, name):
        return [m.data for m in DC.messages(self.passwords[name][0])]

    def api(self, path):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.api_port, path),
                                     headers={"Authorization": "Bearer " + self.token})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()


class NotifySocket:
    """An AF_UNIX datagram socket standing in for the service manager."""

    def __init__(self, name="notify"):
        self.dir = tempfile.mkdtemp(prefix="p3b-notify-")
        self.path = os.path.join(self.dir, name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        harness.register_cleanup(self.close)

    def recv(self, timeout):
        """(monotonic time, text) of the next datagram, or None."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        return time.monotonic(), data.decode("utf-8", "replace")

    def close(self):
        harness.unregister_cleanup(self.close)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- sd_notify ---------------------------------------------------------------------

@harness.timeout(90)
def test_notify_ready_watchdog_status_reload_stopping():
    """READY=1 only once the API answers; WATCHDOG=1 at half the configured
    interval; STATUS= with the accounts and deliveries; RELOADING=1 (with
    MONOTONIC_USEC) then READY=1 around SIGHUP; STOPPING=1 on SIGTERM, exit 0."""
    c = Case()
    ns = NotifySocket()
    c.bridge.secrets.update({"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "2000000"})
    c.deliver("acct", mailgen.message(1001, 2000))
    b = c.bridge.start()
    got = ns.recv(20)
    assert got, "no notification within 20 s: %s" % b.log()[-1500:]
    harness.eq(got[1], "READY=1", "the first notification")
    # the API answers at READY: it was listening before READY was sent
    status, _ = c.api("/healthz")
    harness.eq(status, 200, "GET /healthz right after READY=1")
    msgs = [got]
    end = time.monotonic() + 7
    while time.monotonic() < end:
        m = ns.recv(end - time.monotonic())
        if m:
            msgs.append(m)
    dogs = [t for t, text in msgs if text == "WATCHDOG=1"]
    if len(dogs) < 4:
        raise AssertionError("expected about 7 WATCHDOG=1 in 7 s at WATCHDOG_USEC=2 s, got %r" % msgs)
    gaps = [b2 - a for a, b2 in zip(dogs, dogs[1:])]
    if min(gaps) < 0.9 or max(gaps) > 1.9:
        raise AssertionError("WATCHDOG=1 gaps should be about 1 s (half of 2 s), within the"
                             " interval: %r" % [round(g, 2) for g in gaps])
    statuses = [text for _, text in msgs if text.startswith("STATUS=")]
    if not statuses or not re.match(r"STATUS=1 account \((1 (idle|polling|backoff))\); "
                                    r"deliveries: \d+ pending, \d+ failed$", statuses[-1]):
        raise AssertionError("STATUS= lines: %r" % statuses)
    c.rcv.wait_events(1, 20)

    t0 = time.monotonic()
    b.send(signal.SIGHUP)
    seen = []
    while time.monotonic() - t0 < 10 and "READY=1" not in [s for _, s in seen]:
        m = ns.recv(1)
        if m and not m[1].startswith(("WATCHDOG", "STATUS")):
            seen.append(m)
    texts = [s for _, s in seen]
    if len(texts) < 2 or not re.match(r"RELOADING=1\nMONOTONIC_USEC=\d+$", texts[0]) or \
            texts[1] != "READY=1":
        raise AssertionError("around SIGHUP: %r" % texts)
    usec = int(texts[0].split("=")[-1])
    now_usec = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    if not (now_usec - 20e6 < usec <= now_usec):
        raise AssertionError("MONOTONIC_USEC=%d is not CLOCK_MONOTONIC now (%d)" % (usec, now_usec))

    b.send(signal.SIGTERM)
    stop = None
    end = time.monotonic() + 20
    while time.monotonic() < end and stop is None:
        m = ns.recv(1)
        if m and m[1] == "STOPPING=1":
            stop = m
    assert stop, "no STOPPING=1 after SIGTERM: %s" % b.log()[-1500:]
    harness.eq(b.stop(), 0, "exit code after SIGTERM")


def test_no_notify_socket_no_notifications():
    """Without NOTIFY_SOCKET the bridge runs as before (nothing to send to)."""
    c = Case()
    c.deliver("acct", mailgen.message(1002, 1500))
    r = c.bridge.run_once()
    harness.eq(r.code, 0, "run --once")
    c.rcv.wait_events(1, 20)


# ---- logs ---------------------------------------------------------------------------

@harness.timeout(60)
def test_json_log_lines_parse():
    """log_format json: every line on stderr is one JSON object with ts, level,
    event and the fields of the text form; no secret in any of it."""
    c = Case()
    c.cfg["log_format"] = "json"
    c.bridge.write_config(c.cfg)
    datas = [mailgen.message(s, 3000) for s in (1101, 1102)]
    c.deliver("acct", *datas)
    r = c.bridge.run_once()
    harness.eq(r.code, 0, "run --once: " + r.stderr[-800:])
    lines = r.stderr.splitlines()
    assert len(lines) >= 4, r.stderr
    objs = []
    for line in lines:
        try:
            o = json.loads(line)
        except ValueError as exc:
            raise AssertionError("a log line is not JSON (%s): %r" % (exc, line))
        for k in ("ts", "level", "event"):
            if not isinstance(o.get(k), str):
                raise AssertionError("%s missing in %r" % (k, line))
        if not re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", o["ts"]):
            raise AssertionError("ts %r" % o["ts"])
        if not all(isinstance(v, str) for v in o.values()):
            raise AssertionError("a value that is not a string: %r" % line)
        objs.append(o)
    done = [o for o in objs if o["event"] == "poll_done"]
    harness.eq(len(done), 1, "poll_done lines")
    harness.eq((done[0]["account"], done[0]["fetched"], done[0]["level"]), ("acct", "2", "info"),
               "poll_done's fields")
    events = [o["event"] for o in objs]
    for ev in ("started", "stopped"):
        if ev not in events:
            raise AssertionError("no %s event in %r" % (ev, events))
    c.rcv.wait_events(2, 20)


def _journal_datagrams(raw):
    """Fields of one journal native-protocol datagram (KEY=value lines, or
    KEY\\n<64-bit LE length><data>\\n for binary-safe values)."""
    fields = {}
    i = 0
    while i < len(raw):
        nl = raw.index(b"\n", i)
        line = raw[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            n = int.from_bytes(raw[nl + 1:nl + 9], "little")
            v = raw[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode("utf-8", "replace")
    return fields


@harness.timeout(60)
def test_journal_fields():
    """log_format journal: sd_journal_sendv's datagrams, caught on a socket
    mounted at /run/systemd/journal/socket in a private mount namespace, carry
    MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, EVENT and each key upper-cased."""
    if not shutil.which("unshare"):
        raise AssertionError("unshare (util-linux) is needed for this test")
    c = Case()
    c.cfg["log_format"] = "journal"
    c.bridge.write_config(c.cfg)
    c.deliver("acct", mailgen.message(1201, 2000))
    sockdir = tempfile.mkdtemp(prefix="p3b-journal-")
    harness.register_cleanup(lambda: shutil.rmtree(sockdir, ignore_errors=True))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(os.path.join(sockdir, "socket"))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    script = ('mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && '
              'mount --bind "$0" /run/systemd/journal && exec "$@"')
    env = c.bridge.env()
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, sockdir,
                        harness.binary(), "run", "--config", c.bridge.config_path, "--once"],
                       env=env, capture_output=True, timeout=90)
    harness.eq(p.returncode, 0, "run --once in the namespace: %r" % p.stderr[-800:])
    s.settimeout(0.5)
    entries = []
    while True:
        try:
            entries.append(_journal_datagrams(s.recv(1 << 20)))
        except socket.timeout:
            break
    s.close()
    if not entries:
        raise AssertionError("nothing reached the journal socket; stderr %r" % p.stderr[-800:])
    harness.eq(p.stderr.strip(), b"", "stderr while the journal takes the lines")
    for f in entries:
        for k in ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "EVENT"):
            if k not in f:
                raise AssertionError("%s missing from %r" % (k, f))
        harness.eq(f["SYSLOG_IDENTIFIER"], "pop3bridge", "SYSLOG_IDENTIFIER")
        if not f["MESSAGE"].startswith(f["EVENT"]):
            raise AssertionError("MESSAGE does not start with the event: %r" % f)
        for k in f:
            if not re.match(r"[A-Z][A-Z0-9_]*$", k):
                raise AssertionError("field name %r is not a journal field name" % k)
    done = [f for f in entries if f["EVENT"] == "poll_done"]
    harness.eq(len(done), 1, "poll_done entries")
    harness.eq((done[0]["ACCOUNT"], done[0]["FETCHED"], done[0]["PRIORITY"]), ("acct", "1", "6"),
               "poll_done's fields")
    debug = [f for f in entries if f["PRIORITY"] == "7"]
    if not debug:
        raise AssertionError("log_level debug: no PRIORITY=7 entry")
    for f in entries:
        for secret in c.bridge.secrets.values():
            if secret and any(secret in v for v in f.values()):
                raise AssertionError("a secret reached the journal")


# ---- credentials -----------------------------------------------------------------------

@harness.timeout(60)
def test_credentials_directory():
    """*_file secrets named "${CREDENTIALS_DIRECTORY}/..." are read from the
    directory systemd's LoadCredential= gives the service; without the
    variable the key names what is missing."""
    c = Case()
    creds = tempfile.mkdtemp(prefix="p3b-creds-")
    harness.register_cleanup(lambda: shutil.rmtree(creds, ignore_errors=True))
    user, pw = c.passwords["acct"]
    for name, value in (("secret_pop3.pw", pw), ("secret_hook.whsec", c.secret),
                        ("secret_api.token", c.token)):
        with open(os.path.join(creds, name), "w") as f:
            f.write(value + "\n")
        os.chmod(os.path.join(creds, name), 0o400)
    a = c.cfg["accounts"][0]
    del a["password_env"]
    a["password_file"] = "${CREDENTIALS_DIRECTORY}/secret_pop3.pw"
    del c.cfg["webhooks"][0]["secret_env"]
    c.cfg["webhooks"][0]["secret_file"] = "$CREDENTIALS_DIRECTORY/secret_hook.whsec"
    c.cfg["api"]["tokens"] = [{"name": "t", "token_file": "${CREDENTIALS_DIRECTORY}/secret_api.token"}]
    c.bridge.write_config(c.cfg)
    c.bridge.secrets = {}
    c.deliver("acct", mailgen.message(1301, 2000))

    r = harness.run_cli(["check-config", c.bridge.config_path], env={})
    harness.eq(r.code, 1, "check-config without CREDENTIALS_DIRECTORY")
    for key in ("accounts[0].password_file", "webhooks[0].secret_file", "api.tokens[0].token_file"):
        if "%s: CREDENTIALS_DIRECTORY is not set" % key not in r.stderr:
            raise AssertionError("no problem for %s: %r" % (key, r.stderr))

    r = harness.run_cli(["run", "--config", c.bridge.config_path, "--once"],
                        env={"CREDENTIALS_DIRECTORY": creds})
    harness.eq(r.code, 0, "run --once with the credentials: " + r.stderr[-800:])
    ev = c.rcv.wait_events(1, 20)
    bridge.verify_signature(ev[0], c.secret)
    for secret in (pw, c.secret, c.token):
        if secret in r.stderr or secret in r.stdout:
            raise AssertionError("a credential's content reached the output")


# ---- reload -------------------------------------------------------------------------------

@harness.timeout(150)
def test_sighup_add_remove_account_change_url_invalid_file():
    """SIGHUP: an added account is polled, a removed one no longer is, a
    changed webhook URL gets the next deliveries, and an invalid file keeps
    the bridge running on the configuration it had."""
    c = Case(users=("one",))
    two = c.account("two")               # its password is in the environment from the start
    b = c.bridge.start()
    first = mailgen.message(1401, 2000)
    c.deliver("one", first)
    c.rcv.wait_events(1, 30)

    # add account "two", and move the webhook to a second receiver
    rcv2 = Receiver(c.secret, name="receiver2").start()
    c.cfg["accounts"].append(two)
    c.cfg["webhooks"][0]["url"] = rcv2.url
    c.bridge.write_config(c.cfg)
    b.send(signal.SIGHUP)
    b.wait_log(r"event=reloaded accounts=2 webhooks=1", 15)
    m_one, m_two = mailgen.message(1402, 2000), mailgen.message(1403, 2000)
    c.deliver("one", m_one)
    c.deliver("two", m_two)
    ev2 = rcv2.wait_events(2, 30)
    harness.eq({e.message["sha256"] for e in ev2}, {sha(pop3_bytes(m_one)), sha(pop3_bytes(m_two))},
               "messages at the new URL")
    harness.eq(len(c.rcv.events()), 1, "events at the old URL after the change")

    # remove account "one": mail for it stays on the server, "two" goes on
    c.cfg["accounts"] = [a for a in c.cfg["accounts"] if a["name"] != "one"]
    c.bridge.write_config(c.cfg)
    b.send(signal.SIGHUP)
    b.wait_log(r"event=reloaded accounts=1 webhooks=1", 15)
    mark = b.log().count("event=poll_done account=two")
    left = mailgen.message(1404, 2000)
    c.deliver("one", left)
    m_two2 = mailgen.message(1405, 2000)
    c.deliver("two", m_two2)
    rcv2.wait_events(3, 30)
    b.wait_log(r"event=poll_done account=two", 15, count=mark + 3)   # several polls later
    if re.search(r"event=poll_\w+ account=one", b.log().split("accounts=1 webhooks=1")[-1]):
        raise AssertionError("the removed account was polled after the reload")
    harness.eq(len(rcv2.events()), 3, "events: nothing from the removed account")
    if left not in c.on_server("one"):
        raise AssertionError("the removed account's new message was taken from the server")

    # an invalid file: logged, and the bridge goes on with what it had
    harness.write_private(c.bridge.config_path,
                          '{ "state_dir": "%s", "accounts": [ { "name": 7 } ] }' % c.bridge.state_dir)
    b.send(signal.SIGHUP)
    b.wait_log(r"event=reload_failed", 15)
    if "accounts[0].name: expected a string" not in b.log():
        raise AssertionError("the problem is not in the log: %s" % b.log()[-1500:])
    assert b.running(), "the bridge exited on an invalid file"
    m_two3 = mailgen.message(1406, 2000)
    c.deliver("two", m_two3)
    ev = rcv2.wait_events(4, 30)
    if sha(pop3_bytes(m_two3)) not in {e.message["sha256"] for e in ev}:
        raise AssertionError("no delivery after the invalid reload")
    harness.eq(b.stop(), 0, "exit code")
    rcv2.stop()


# ---- drain ------------------------------------------------------------------------------------

@harness.timeout(180)
def test_sigterm_drains_in_flight_deliveries():
    """SIGTERM while deliveries are in flight: they finish (the receiver
    answers after 4 s), the bridge exits 0 within the 30 s drain, and nothing
    is lost: what was not yet sent goes out after a restart, with the same
    webhook-ids, and nothing left the server undelivered."""
    n = 4
    c = Case(receiver_args=["--delay-ms", 4000], after_delivery="delete")
    datas = [mailgen.message(1500 + s, 3000) for s in range(n)]
    c.deliver("acct", *datas)
    b = c.bridge.start()
    b.wait_log(r"event=poll_done account=acct listed=%d fetched=%d" % (n, n), 30)
    time.sleep(1.0)                       # the first requests wait in the receiver
    undelivered = c.bridge.query("SELECT count(*) FROM deliveries WHERE status <> 1")[0][0]
    if undelivered == 0:
        raise AssertionError("every delivery was done before SIGTERM: the test tests nothing")
    t0 = time.monotonic()
    code = b.stop(signal.SIGTERM, timeout=40)
    took = time.monotonic() - t0
    harness.eq(code, 0, "exit code after SIGTERM")
    if took > 32:
        raise AssertionError("the drain took %.1f s, more than 30 s" % took)
    if took < 2:
        raise AssertionError("exited after %.1f s: the in-flight requests (4 s) were not"
                             " waited for" % took)
    log = b.log()
    if "event=stopping" not in log or "event=stopped" not in log:
        raise AssertionError("no clean stop in the log: %s" % log[-1500:])
    # the requests that were in flight were recorded as delivered
    received = {e.message["sha256"] for e in c.rcv.events()}
    delivered = c.bridge.query("SELECT count(*) FROM deliveries WHERE status = 1")[0][0]
    if delivered == 0 or delivered > len(received):
        raise AssertionError("delivered %d, received %d" % (delivered, len(received)))
    # nothing left the server without its delivery
    for d in datas:
        if d not in c.on_server("acct") and sha(pop3_bytes(d)) not in received:
            raise AssertionError("a message left the server undelivered")
    # the rest after a restart, same ids
    b.start()
    b.wait_log(r"event=started", 20, count=2)
    want = {sha(pop3_bytes(d)) for d in datas}
    harness.wait_for(lambda: want <= {e.message["sha256"] for e in c.rcv.events()}, 90,
                     interval=0.3, what="every message delivered after the restart")
    harness.eq(b.stop(timeout=40), 0, "exit code")
    ids = {}
    for e in c.rcv.events():
        ids.setdefault(e.message["sha256"], set()).add(e.id)
    harness.eq(len(ids), n, "messages delivered")
    for h, s in ids.items():
        harness.eq(len(s), 1, "webhook-ids of one message")


def _sigterm_blocked(pid):
    """True once the process blocks SIGTERM (daemon_main's first step)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


@harness.timeout(120)
def test_sigterm_during_start_up_stops_cleanly():
    """SIGTERM at several moments of start-up: while the configuration is
    loaded (a password_command still running), and 0 to 300 ms after the
    daemon blocked its signals (the store opening, the accounts loading, the
    API starting, the first poll).  Every time: exit 0 within 20 s, no
    sanitizer or fatal line.  Afterwards the store is intact and a start that
    runs on delivers every message once.  (Before signals were blocked first,
    a SIGTERM during the configuration's load ended the process by the signal.)"""
    n = 2
    c = Case()
    datas = [mailgen.message(1700 + s, 2500) for s in range(n)]
    c.deliver("acct", *datas)
    b = c.bridge
    pw_file = os.path.join(b.dir, "pw")
    with open(pw_file, "w") as f:
        f.write(c.passwords["acct"][1])
    os.chmod(pw_file, 0o600)
    mark = os.path.join(b.dir, "command-started")
    slow = dict(c.cfg)
    slow["accounts"] = [dict(c.cfg["accounts"][0])]
    del slow["accounts"][0]["password_env"]
    slow["accounts"][0]["password_command"] = "touch '%s'; sleep 1; cat '%s'" % (mark, pw_file)
    b.write_config(slow)

    def stop_at(what, code_wanted=0):
        t0 = time.monotonic()
        code = b.stop(signal.SIGTERM, timeout=20)
        log = b.log()
        harness.eq(code, code_wanted, "exit code after SIGTERM %s" % what)
        for bad in ("AddressSanitizer", "runtime error", "Segmentation"):
            if bad in log:
                raise AssertionError("%s in the log after SIGTERM %s" % (bad, what))
        return time.monotonic() - t0

    # 1. while the configuration loads: its password_command runs (1 s)
    b.start()
    harness.wait_for(lambda: os.path.exists(mark), 10, interval=0.005,
                     what="the password_command started")
    if not b.running():
        raise AssertionError("the bridge ended before the signal: %s" % b.log()[-1500:])
    stop_at("while the configuration loads")
    if "event=started" in b.log():
        raise AssertionError("started after a SIGTERM during the configuration's load")

    # 2. at moments after the signals are blocked
    b.write_config(c.cfg)
    for delay in (0, 0.002, 0.01, 0.03, 0.06, 0.1, 0.2, 0.3):
        b.start()
        harness.wait_for(lambda: _sigterm_blocked(b.proc.pid) or not b.running(), 10,
                         interval=0.001, what="SIGTERM blocked")
        time.sleep(delay)
        stop_at("%d ms after start-up began" % (delay * 1000))

    # 3. right after it said it started (the first poll may be running)
    started = b.log().count("event=started")
    b.start()
    b.wait_log(r"event=started", 20, count=started + 1)
    stop_at("right after event=started")

    # 4. the store is whole, and a start that runs on delivers every message once
    harness.eq(b.query("PRAGMA integrity_check")[0][0], "ok", "the store's integrity check")
    started = b.log().count("event=started")
    b.start()
    # started first: every message may have gone out in an earlier run, and a
    # SIGTERM before the signals are blocked would end the process
    b.wait_log(r"event=started", 20, count=started + 1)
    want = {sha(pop3_bytes(d)) for d in datas}
    # (a poll cut short by a stop counts as failed: its 30 s backoff may come first)
    harness.wait_for(lambda: want <= {e.message["sha256"] for e in c.rcv.events()}, 70,
                     interval=0.2, what="every message delivered after the interrupted starts")
    stop_at("after delivery")
    ids = {}
    for e in c.rcv.events():
        ids.setdefault(e.message["sha256"], set()).add(e.id)
    harness.eq(set(ids), want, "messages delivered")
    for h, s in ids.items():
        harness.eq(len(s), 1, "webhook-ids of one message")


# ---- backup, restore, export ---------------------------------------------------------------

def _feeder(c, name, seeds, stop):
    """Deliver a message every 0.3 s until stop is set or seeds run out."""
    for s in seeds:
        if stop.is_set():
            return
        c.deliver(name, mailgen.message(s, 2500))
        time.sleep(0.3)


def _mbox_messages(path):
    """Messages of an mboxrd file, unquoted, with CRLF line ends again."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(b"From "), "the mbox does not start with a From_ line"
    out = []
    for part in re.split(rb"(?m)^From [^\n]*\n", data)[1:]:
        assert part.endswith(b"\n\n"), "a message does not end with an empty line"
        body = part[:-1]
        body = re.sub(rb"(?m)^>(>*From )", rb"\1", body)
        out.append(body.replace(b"\n", b"\r\n"))
    return out


@harness.timeout(240)
def test_backup_restore_export_while_mail_flows():
    """store backup twice and export (Maildir and mbox) while the bridge polls
    and delivers new mail; the backup is a consistent SQLite file (0600) whose
    messages match their SHA-256; the Maildir holds the server's bytes exactly;
    the mbox round-trips through mboxrd; restore is refused while the bridge
    runs (and while anyone holds the lock file), and puts the backup back once
    it is stopped."""
    c = Case()
    # a message whose body has lines an mbox must quote
    tricky = (b"From: a@example.com\nTo: b@example.com\nSubject: quoting\n\n"
              b"From the start\n>From one\n>>From two\nFrom\nno From here\n")
    c.deliver("acct", tricky)
    b = c.bridge.start()
    c.rcv.wait_events(1, 30)
    stop = threading.Event()
    feeder = threading.Thread(target=_feeder, args=(c, "acct", range(1600, 1640), stop))
    feeder.start()
    try:
        out = harness.out_dir("backup")
        backups = []
        for i in range(2):
            time.sleep(1.5)
            path = os.path.join(out, "state-%d.db" % i)
            r = harness.run_cli(["store", "backup", "--config", c.bridge.config_path, path])
            harness.eq(r.code, 0, "store backup: " + r.describe())
            backups.append(path)
        time.sleep(1.5)
        md = os.path.join(out, "maildir")
        r = harness.run_cli(["export", "--config", c.bridge.config_path, "acct", "--maildir", md])
        harness.eq(r.code, 0, "export --maildir: " + r.describe())
        mb = os.path.join(out, "acct.mbox")
        r2 = harness.run_cli(["export", "--config", c.bridge.config_path, "acct", "--mbox", mb])
        harness.eq(r2.code, 0, "export --mbox: " + r2.describe())
        # refused while the bridge runs
        r = harness.run_cli(["store", "restore", "--config", c.bridge.config_path, backups[0]])
        harness.eq(r.code, 1, "store restore while the bridge runs: " + r.describe())
        harness.check_failure(r, 1, r"restore: (a bridge is running|the database is open in"
                                    r" another process)")
    finally:
        stop.set()
        feeder.join()
    c.rcv.wait_events(2, 30)

    # the backups: 0600, one file, consistent, each body matches its SHA-256
    counts = []
    for path in backups:
        harness.eq(stat.S_IMODE(os.stat(path).st_mode), 0o600, "mode of " + path)
        for suffix in ("-wal", "-shm", "-journal"):
            if os.path.exists(path + suffix):
                raise AssertionError("the backup is not one file: %s exists" % (path + suffix))
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        harness.eq(con.execute("PRAGMA quick_check").fetchone()[0], "ok", "quick_check")
        harness.eq(con.execute("PRAGMA journal_mode").fetchone()[0], "delete", "journal mode")
        rows = con.execute("SELECT m.sha256, b.raw FROM messages m JOIN bodies b"
                           " ON b.message_id = m.id").fetchall()
        for h, raw in rows:
            harness.eq(sha(raw), h, "a backed-up body's SHA-256")
        # consistency: every stored message has its UIDL row and its delivery rows
        orphans = con.execute("SELECT count(*) FROM messages m WHERE NOT EXISTS"
                              " (SELECT 1 FROM uidls u WHERE u.message_id = m.id)").fetchone()[0]
        harness.eq(orphans, 0, "messages without a UIDL in the backup")
        counts.append(len(rows))
        con.close()
    if not counts[0] <= counts[1]:
        raise AssertionError("the second backup has fewer messages: %r" % counts)

    # the Maildir: exactly the stored bytes, which are what the server sent
    stored = dict(c.bridge.query("SELECT m.uidl, b.raw FROM messages m JOIN bodies b"
                                 " ON b.message_id = m.id"))
    files = sorted(os.listdir(os.path.join(md, "new")))
    exported = {}
    for name in files:
        with open(os.path.join(md, "new", name), "rb") as f:
            exported[name] = f.read()
        harness.eq(stat.S_IMODE(os.stat(os.path.join(md, "new", name)).st_mode), 0o600,
                   "mode of a Maildir file")
    if len(exported) < 2:
        raise AssertionError("the Maildir holds %d messages" % len(exported))
    stored_bytes = set(stored.values())
    for name, data in exported.items():
        if data not in stored_bytes:
            raise AssertionError("%s is not byte-identical to a stored message" % name)
    server_sent = {pop3_bytes(tricky)} | {pop3_bytes(mailgen.message(s, 2500)) for s in range(1600, 1640)}
    for data in exported.values():
        if data not in server_sent:
            raise AssertionError("a Maildir file differs from what the server sent")
    if pop3_bytes(tricky) not in exported.values():
        raise AssertionError("the first message is not in the Maildir")
    # exporting again adds only what is new
    r = harness.run_cli(["export", "--config", c.bridge.config_path, "acct", "--maildir", md])
    harness.eq(r.code, 0, "export again")
    if not re.search(r"\(%d already there" % len(exported), r.stdout):
        raise AssertionError("second export: %r" % r.stdout)

    # the mbox: mboxrd round trip gives the server's bytes back
    with open(mb, "rb") as f:
        raw_mbox = f.read()
    for line in (b"\n>From the start\n", b"\n>>From one\n", b"\n>>>From two\n", b"\nFrom\n",
                 b"\nno From here\n"):
        if line not in raw_mbox:
            raise AssertionError("the mbox lacks the line %r" % line)
    harness.eq(stat.S_IMODE(os.stat(mb).st_mode), 0o600, "mode of the mbox")
    from_mbox = _mbox_messages(mb)
    if len(from_mbox) < 2 or not set(from_mbox) <= stored_bytes:
        raise AssertionError("the mbox does not round-trip to the stored bytes")
    if pop3_bytes(tricky) not in from_mbox:
        raise AssertionError("the quoted message does not round-trip")
    parsed = list(mailbox.mbox(mb))
    harness.eq(len(parsed), len(from_mbox), "messages Python's mailbox reads")
    r = harness.run_cli(["export", "--config", c.bridge.config_path, "acct", "--mbox", mb])
    harness.check_failure(r, 2, r"exists: export writes a new mbox")

    harness.eq(b.stop(), 0, "exit code")
    final = c.bridge.query("SELECT count(*) FROM messages")[0][0]

    # restore refused while another process holds the lock file
    lock = os.path.join(c.bridge.state_dir, "pop3bridge.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = harness.run_cli(["store", "restore", "--config", c.bridge.config_path, backups[0]])
        harness.check_failure(r, 1, r"restore: another store restore or migrate holds pop3bridge\.lock in /")
    finally:
        os.close(fd)
    # a file that is not a state is refused, and changes nothing
    r = harness.run_cli(["store", "restore", "--config", c.bridge.config_path, c.bridge.config_path])
    harness.check_failure(r, 2, r"is not a pop3bridge state")
    harness.eq(c.bridge.query("SELECT count(*) FROM messages")[0][0], final, "messages after a refused restore")
    # restore: the state is the first backup again
    r = harness.run_cli(["store", "restore", "--config", c.bridge.config_path, backups[0]])
    harness.eq(r.code, 0, "store restore: " + r.describe())
    harness.eq(c.bridge.query("SELECT count(*) FROM messages")[0][0], counts[0], "messages after restore")
    harness.eq(c.bridge.query("PRAGMA user_version")[0][0], harness.schema_version(),
               "schema after restore")
    # restored into a new, empty state_dir: the database is the bridge's user's only
    fresh = os.path.join(os.path.dirname(c.bridge.state_dir), "fresh-state")
    os.mkdir(fresh, 0o700)
    fresh_cfg = dict(c.cfg, state_dir=fresh)
    fresh_path = os.path.join(os.path.dirname(c.bridge.state_dir), "fresh.json")
    harness.write_config(fresh_path, fresh_cfg)
    r = harness.run_cli(["store", "restore", "--config", fresh_path, backups[0]])
    harness.eq(r.code, 0, "store restore into an empty state_dir: " + r.describe())
    for name in os.listdir(fresh):
        mode = os.stat(os.path.join(fresh, name)).st_mode & 0o777
        harness.eq(mode & 0o077, 0, "mode %o of %s restored into an empty state_dir" % (mode, name))
    # and the bridge runs on it: what the backup did not know is fetched again
    c.cfg["accounts"][0]["poll_interval"] = "1h"
    c.bridge.write_config(c.cfg)
    r = c.bridge.run_once(timeout=120)
    harness.eq(r.code, 0, "run --once on the restored state: " + r.stderr[-800:])
    # (the mail that arrived after the last poll before the stop is stored now too)
    on_server = {sha(pop3_bytes(d)) for d in c.on_server("acct")}
    if final > len(on_server):
        raise AssertionError("%d stored before the restore, %d on the server" % (final, len(on_server)))
    stored_now = [h for (h,) in c.bridge.query("SELECT sha256 FROM messages")]
    harness.eq(sorted(stored_now), sorted(on_server), "messages stored after a poll: each on the"
               " server, once")
