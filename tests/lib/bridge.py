"""bridge -- run `pop3bridge run` and the webhook receiver in integration tests.

    rc = Receiver(secret, name="rcv").start()      # build/tools/webhook-receiver --out DIR
    rc.port, rc.url, rc.events(), rc.wait_events(n, timeout), rc.log(), rc.stop()
    b = Bridge(config_dict, secrets={"PW": "..."}, name="bridge")
    b.run_once(timeout)           Result of `pop3bridge run --config F --once`
    b.start(); b.stop(); b.kill9()  the daemon, stderr in a file (b.log())
    b.db()                        the store, opened read-only with sqlite3
    b.webhook_id(account, uidl, webhook)  the id the stored message's events must carry
    new_secret(), event_id(key, webhook), expected_id(account, uidl, webhook),
    verify_signature(event, secret)

Every run of the bridge is checked afterwards: none of the secrets it was
given appears on its stdout or stderr.  Every process started here is
stopped at the end of the test (harness cleanups), even after a failure.
Python 3 standard library only.
"""

import base64
import hashlib
import hmac
import json
import os
import select
import signal
import sqlite3
import subprocess
import time

import dovecot
import harness

STOP_TIMEOUT = 40.0    # the bridge drains in-flight work for up to 30 s


def new_secret(nbytes=32):
    """A fresh Standard Webhooks secret, "whsec_" + base64."""
    return "whsec_" + base64.b64encode(os.urandom(nbytes)).decode()


def event_id(key, webhook):
    """The webhook-id the bridge must send for a stored message, computed
    independently: "msg_" + the first 32 hex digits of SHA-256(the message's
    event key NUL webhook)."""
    h = hashlib.sha256(key.encode() + b"\0" + webhook.encode())
    return "msg_" + h.hexdigest()[:32]


def expected_id(account, uidl, webhook):
    """The webhook-id of a message stored before event keys existed:
    "msg_" + the first 32 hex digits of SHA-256(account NUL uidl NUL webhook)."""
    h = hashlib.sha256(account.encode() + b"\0" + uidl.encode() + b"\0" + webhook.encode())
    return "msg_" + h.hexdigest()[:32]


def verify_signature(ev, secret, tolerance=300):
    """Check an event's Standard Webhooks signature in Python (hmac/hashlib)."""
    key = base64.b64decode(secret[len("whsec_"):])
    wid, ts, sig = ev.headers.get("webhook-id"), ev.headers.get("webhook-timestamp"), \
        ev.headers.get("webhook-signature")
    if not (wid and ts and sig):
        raise AssertionError("event %d lacks webhook-id/-timestamp/-signature: %r" % (ev.n, ev.headers))
    signed = wid.encode() + b"." + ts.encode() + b"." + ev.body
    mac = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if ("v1," + mac) not in sig.split(" "):
        raise AssertionError("event %d: signature %r does not verify (expected v1,%s)" % (ev.n, sig, mac))
    if abs(int(ts) - time.time()) > tolerance:
        raise AssertionError("event %d: webhook-timestamp %s is not now" % (ev.n, ts))


class Event:
    """One event the receiver accepted: n (arrival order), headers (names in
    lower case), body (bytes), json (parsed)."""

    def __init__(self, n, headers, body):
        self.n = n
        self.headers = headers
        self.body = body
        self.json = json.loads(body)

    @property
    def id(self):
        return self.headers.get("webhook-id")

    @property
    def message(self):
        return self.json["data"]["message"]


class Receiver:
    """build/tools/webhook-receiver on 127.0.0.1, saving verified events."""

    def __init__(self, secret, port=0, args=(), name="receiver", out=None):
        self.secret = secret
        self.port = port
        self.args = [str(a) for a in args]
        self.name = name
        self.out = out or harness.out_dir(name + "-events")
        self.proc = None
        self.log_path = os.path.join(harness.out_dir(), name + ".log")

    @property
    def url(self):
        return "http://127.0.0.1:%d/hooks/mail" % self.port

    def start(self, timeout=10.0):
        exe = harness.tool("webhook-receiver")
        if not os.access(exe, os.X_OK):
            raise AssertionError("%s not built (run `make tools`)" % exe)
        self._log = open(self.log_path, "ab")
        argv = [exe, "--port", str(self.port), "--out", self.out] + self.args
        env = dict(os.environ, WEBHOOK_SECRET=self.secret)   # not on the command line
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, start_new_session=True)
        harness.register_cleanup(self.stop)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on 127.0.0.1:"):
            self.stop()
            raise AssertionError("receiver did not start: %r; log %r" % (line, self.log()))
        self.port = int(line.strip().rsplit(":", 1)[1])
        return self

    def stop(self):
        harness.unregister_cleanup(self.stop)
        p, self.proc = self.proc, None
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        p.stdout.close()
        self._log.close()
        return p.returncode

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def events(self):
        """Every saved event, in arrival order."""
        out = []
        for name in os.listdir(self.out):
            if not name.endswith(".json") or name.startswith("."):
                continue
            n = int(name[:-5])
            with open(os.path.join(self.out, "%d.headers" % n), "rb") as f:
                headers = {}
                for line in f.read().decode("utf-8", "replace").splitlines():
                    k, _, v = line.partition(": ")
                    headers[k.lower()] = v
            with open(os.path.join(self.out, name), "rb") as f:
                out.append(Event(n, headers, f.read()))
        out.sort(key=lambda e: e.n)
        return out

    def wait_events(self, count, timeout, what=None):
        harness.wait_for(lambda: len(self.events()) >= count, timeout, interval=0.1,
                         what=what or "%d events at %s (have %d)" % (count, self.name, len(self.events())))
        return self.events()


class Bridge:
    """pop3bridge run with a configuration written from a dict."""

    def __init__(self, config, secrets, name="bridge"):
        self.name = name
        self.dir = harness.out_dir(name)
        self.secrets = dict(secrets)          # env var -> value
        self.state_dir = config.get("state_dir") or os.path.join(self.dir, "state")
        self.config_path = os.path.join(self.dir, "config.json")
        self.write_config(config)
        self.proc = None
        self.runs = 0
        self.log_paths = []

    def write_config(self, config):
        """(Re)write the file; state_dir defaults to this bridge's own."""
        config = dict(config)
        config.setdefault("state_dir", self.state_dir)
        if "api" not in config:
            # never the default port: other bridges (tests, a demo) may hold it
            config["api"] = {"listen": "127.0.0.1:%d" % dovecot.free_port()}
        self.config = config
        harness.write_config(self.config_path + ".new", config, indent=2)
        os.rename(self.config_path + ".new", self.config_path)

    def env(self):
        e = {k: v for k, v in os.environ.items() if not k.startswith("POP3BRIDGE_")}
        e["LC_ALL"] = "C"
        e.update(self.secrets)
        return e

    def check_no_secrets(self, *texts):
        for text in texts:
            for var, value in self.secrets.items():
                if value and value in text:
                    raise AssertionError("the secret in %s appears in the bridge's output" % var)

    def run_once(self, timeout=90, args=()):
        r = harness.run_cli(["run", "--config", self.config_path, "--once"] + list(args),
                            env=self.secrets, timeout=timeout)
        self.check_no_secrets(r.stdout, r.stderr)
        return r

    def start(self):
        self.runs += 1
        path = os.path.join(self.dir, "run-%d.log" % self.runs)
        self.log_paths.append(path)
        self._log = open(path, "wb")
        self.proc = subprocess.Popen([harness.binary(), "run", "--config", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     env=self.env(), cwd=harness.ROOT, start_new_session=True)
        harness.register_cleanup(self.kill9)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig):
        self.proc.send_signal(sig)

    def _reap(self):
        harness.unregister_cleanup(self.kill9)
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        self.check_no_secrets(self.log())
        return code

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Signal the daemon, wait for it; its exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            self._reap()
            raise AssertionError("the bridge did not stop within %ss of signal %d" % (timeout, sig))
        return self._reap()

    def assert_polled_cleanly(self, code):
        """code (what stop() gave) is 0 and no poll failed; else the log's tail."""
        assert code == 0, self.log()[-2000:]
        assert "poll_failed" not in self.log(), self.log()[-2000:]

    def kill9(self):
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        return self._reap()

    def log(self):
        text = ""
        for p in self.log_paths:
            try:
                with open(p, errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def wait_log(self, pattern, timeout, count=1):
        import re
        rx = re.compile(pattern)
        return harness.wait_for(lambda: len(rx.findall(self.log())) >= count, timeout, interval=0.1,
                                what="%d x /%s/ in the bridge's log" % (count, pattern))

    def db(self):
        """A read-only connection to the store (sqlite3)."""
        path = os.path.join(self.state_dir, "pop3bridge.db")
        return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)

    def webhook_id(self, account, uidl, webhook):
        """The webhook-id of the latest message stored for account/uidl."""
        rows = self.query("SELECT event_key FROM messages WHERE account = ? AND uidl = ?"
                          " ORDER BY id DESC LIMIT 1", account, uidl)
        if not rows:
            raise AssertionError("no stored message %s/%s" % (account, uidl))
        key = rows[0][0]
        return event_id(key, webhook) if key else expected_id(account, uidl, webhook)

    def query(self, sql, *args):
        con = self.db()
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()


def stop_all(b, *servers):
    """Stop bridge b, then each of servers (receivers, Dovecot...), each one
    whatever the ones before did (a test's `finally`); b's exit code."""
    try:
        return b.stop()
    finally:
        _stop_each(servers)


def _stop_each(servers):
    if servers:
        try:
            servers[0].stop()
        finally:
            _stop_each(servers[1:])
