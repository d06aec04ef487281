"""Soak: the faults of issue 8 at once, for SOAK_SECONDS (`make soak`: 600 s;
`make test` runs this file with the default, 60 s).

Twenty accounts on one real Dovecot (plain, STLS and implicit TLS; five
delete after delivery, five keep with delete_after 1m), mail arriving all
the time (small messages of every mailgen kind, messages of several MB, and
messages of dozens of attachments), two webhooks: `healthy`
(build/tools/webhook-receiver, which checks every signature) and `flappy`, a
receiver in this file that checks every signature too and switches at random
between answering 200, answering 503, holding the request past the webhook's
timeout, and refusing connections (its socket closed).  One account reaches
Dovecot through a slow link that, during the chaos, stalls for 25 s in the
middle of a large message (issue 8 §1: longer than the store's busy
timeout).  Meanwhile Dovecot restarts, a slow client holds API connections
open with half-sent request heads while a prober asks the API with a valid
token, and the bridge is killed with kill -9 at random moments and started
again (a kill that falls in a stall's first STALL_BEFORE_KILL_S waits for
that mark, so that what a stall holds up shows).  Every random choice comes
from SOAK_SEED (printed; random when unset), one stream per actor, so a
schedule can be replayed (thread timing aside).

The run: chaos for SOAK_SECONDS minus 25 to 60 s, then the drain (no new
mail, no faults, `flappy` healthy, the slow link without stalls) until every
message reached both receivers, bounded by the rest of SOAK_SECONDS plus the
30 s an account backs off after meeting a stopped Dovecot; then SIGTERM.
Then it checks:

  - no "database is locked" in any log of the bridge;
  - every message put into a mailbox reached each webhook (same SHA-256 as
    the bytes POP3 serves), each with exactly one webhook-id per webhook (a
    repeat of the same id after a kill -9 is at-least-once delivery and is
    only counted);
  - no event for a message nobody put there;
  - nothing was deleted from the server before both webhooks had answered
    2xx for it (the Maildirs are scanned every DELETE_SCAN_S, a receiver
    notes a message before it answers), and nothing was deleted from an
    account that keeps its mail;
  - the peak RSS (VmHWM) of every incarnation of the bridge stayed under
    64 MiB (sampled every RSS_EVERY_S and just before each kill);
  - the bridge never exited by itself and exited 0 on the final SIGTERM;
  - every API request with a valid token to a running bridge was answered
    200 within PROBE_LIMIT_S;
  - neither receiver saw a bad signature.

A summary (messages, deliveries, kills, restarts, peak RSS, duplicates by id)
is printed at the end of the run; the chaos log is soak.log in the test's
output directory (kept when it fails).  Every loop is bounded in count and
time; everything talks to 127.0.0.1.
"""

import base64
import collections
import email.message
import email.policy
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness
import dovecot
import mailgen
import bridge
from bridge import Bridge, Receiver

SOAK_SECONDS = max(30, int(os.environ.get("SOAK_SECONDS") or 60))
SEED = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1, 1 << 31))
# A poll that meets a stopped Dovecot backs its account off 30 s (daemon_backoff_ms),
# and with polls every 2 s a restart meets nearly every account: the drain's
# budget has that on top of the time the backlog takes.
BACKOFF_S = 30
CHAOS_SECONDS = SOAK_SECONDS - max(25, min(60, SOAK_SECONDS // 10))
DRAIN_SECONDS = SOAK_SECONDS - CHAOS_SECONDS + BACKOFF_S      # the drain's budget
TIMEOUT = SOAK_SECONDS + BACKOFF_S + 150   # the test: the run, the final stop (up to 40 s), the checks

ACCOUNTS = 20
POLL_INTERVAL = "2s"
RSS_LIMIT_KIB = 64 * 1024
RSS_EVERY_S = 0.2
LOCKED = "database is locked"
PROBE_EVERY_S = 1.0
PROBE_LIMIT_S = 5.0               # an API request with a valid token is answered within this
SLOW_CONNECTIONS = 40             # held by the slow client, below api.max_connections_per_client (64)
SLOW_BYTE_EVERY_S = 2.0           # one more byte of the request head on each, this often
SLOW_OPEN_MAX = 100000
HEALTHY_TIMEOUT = "10s"
FLAPPY_TIMEOUT = "2s"             # flappy's "timeout" mode holds a request longer
FLAP_HOLD_S = 3.0
FLAP_MODES = (("ok", 3), ("503", 3), ("timeout", 2), ("refused", 2))    # (mode, weight)
FLAP_PERIOD_S = (1.0, 4.0)
FLAP_BODY_MAX = 64 << 20
RETRIES = ["1s", "1s", "2s", "2s"] + ["3s"] * 28                         # 32, the most allowed
KILL_EVERY_S = (3.0, 15.0)        # the bridge's uptime before the next kill -9
RESTART_AFTER_S = (0.0, 1.0)
MAX_KILLS = SOAK_SECONDS
# Dovecot restarts: in a short run once, at 45 to 60 % of the chaos (the
# accounts work under every other fault before it, and the backlog it leaves
# is drained under them); in a long run every 90 to 150 s, the first after 20
# to 60 s; none in the chaos's last DOVECOT_QUIET_S.
DOVECOT_SHORT_AT = (0.45, 0.6)
DOVECOT_FIRST_S = (20.0, 60.0)
DOVECOT_EVERY_S = (90.0, 150.0)
DOVECOT_QUIET_S = 8
DOVECOT_DOWN_S = (0.2, 1.5)
MAIL_PER_S = 8.0                  # small messages, Poisson arrivals
SMALL_SIZE = (800, 40000)
LARGE_EVERY_S = (6.0, 14.0)
LARGE_SIZE = (2 << 20, 6 << 20)
MANY_EVERY_S = (8.0, 16.0)
MANY_ATTACHMENTS = (30, 80)
MANY_ATTACHMENT_SIZE = (8 << 10, 48 << 10)
MAX_MESSAGES = SOAK_SECONDS * 20
# One account reaches Dovecot through a slow link: the server's bytes at
# SLOW_LINK_BPS, and during the chaos a connection that has passed
# SLOW_STALL_AFTER bytes (in a large message) stalls SLOW_STALL_S once, much
# longer than the store's busy timeout (STORE_BUSY_TIMEOUT_MS, 10 s), as in
# issue 8 §1.  Every other large message goes to that account, after a small one.
SLOW_LINK_BPS = 2 << 20
SLOW_STALL_AFTER = 1 << 20
SLOW_STALL_S = 25.0
SLOW_LINK_CONNS = 16
# a kill -9 that falls in the first seconds of a stall waits until the stall
# has outlasted the busy timeout, so that what the stall holds up shows
STALL_BEFORE_KILL_S = 12.0
SLOW_ACCOUNT_TIMEOUT = "60s"
DELETE_SCAN_S = 0.1
TICK_S = 0.1
JOIN_S = 15.0

DC = None


def setup_module():
    global DC
    DC = dovecot.Dovecot(name="dovecot-soak").start()


def teardown_module():
    if DC:
        DC.stop()


def pop3_bytes(data):
    """A Maildir message as POP3 transfers it: LF line ends become CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class Clock:
    """Seconds since the start of the run, and the chaos log (soak.log)."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.path = os.path.join(harness.out_dir(), "soak.log")
        self.lock = threading.Lock()

    def now(self):
        return time.monotonic() - self.t0

    def log(self, fmt, *args):
        line = "%7.2f %s" % (self.now(), fmt % args if args else fmt)
        with self.lock, open(self.path, "a") as f:
            f.write(line + "\n")


# ---- what went into the mailboxes, and what left them --------------------------------

class Mail:
    """Every message put into a mailbox: by SHA-256 of its POP3 bytes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_sha = {}      # sha -> {"account", "base", "kind", "size", "t"}
        self.by_base = {}     # Maildir base name -> sha
        self.bytes = 0
        self.kinds = collections.Counter()

    def add(self, account, base, data, kind):
        sha = hashlib.sha256(pop3_bytes(data)).hexdigest()
        with self.lock:
            if sha in self.by_sha:
                raise AssertionError("the generator made the same message twice (%s)" % sha)
            self.by_sha[sha] = {"account": account, "base": base, "kind": kind, "size": len(data),
                                "t": time.time()}
            self.by_base[base] = sha
            self.bytes += len(data)
            self.kinds[kind] += 1

    def snapshot(self):
        with self.lock:
            return dict(self.by_sha), dict(self.by_base)


def many_attachments(rng, n):
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = "support@example.org"
    count = rng.randint(*MANY_ATTACHMENTS)
    msg["Subject"] = "%d attachments (%d)" % (count, n)
    msg["Message-ID"] = "<soak.many.%d.%d@example.org>" % (SEED, n)
    msg.set_content("the files of batch %d\n" % n)
    for i in range(count):
        msg.add_attachment(rng.randbytes(rng.randint(*MANY_ATTACHMENT_SIZE)), maintype="application",
                           subtype="octet-stream", filename="batch%d-f%02d.bin" % (n, i))
    return msg.as_bytes().replace(b"\r\n", b"\n")


class MailThread(threading.Thread):
    """Puts mail into random mailboxes until stopped: small messages at
    MAIL_PER_S, a large one every LARGE_EVERY_S, one of many attachments every
    MANY_EVERY_S.  The only thread that calls DC.deliver()."""

    def __init__(self, clock, mail, users, slow_user, stop):
        super().__init__(name="soak-mail", daemon=True)
        self.clock, self.mail, self.users, self.stop_ev = clock, mail, users, stop
        self.slow_user = slow_user
        self.rng = random.Random("%d-mail" % SEED)
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as exc:     # reported by the test
            self.error = "%s: %s" % (type(exc).__name__, exc)

    def _run(self):
        rng = self.rng
        now = self.clock.now()
        next_small = now
        next_large = now + rng.uniform(*LARGE_EVERY_S) / 2
        next_many = now + rng.uniform(*MANY_EVERY_S) / 2
        n = large = 0
        deadline = time.monotonic() + TIMEOUT
        while not self.stop_ev.is_set() and n < MAX_MESSAGES and time.monotonic() < deadline:
            now = self.clock.now()
            if now >= next_large:
                kind, data = "large", mailgen.message(SEED * 1000 + n, rng.randint(*LARGE_SIZE), "mixed")
                next_large = now + rng.uniform(*LARGE_EVERY_S)
            elif now >= next_many:
                kind, data = "many-attachments", many_attachments(rng, n)
                next_many = now + rng.uniform(*MANY_EVERY_S)
            elif now >= next_small:
                lo, hi = SMALL_SIZE
                size = int(lo * (hi / lo) ** rng.random())
                kind, data = "small", mailgen.message(SEED * 1000 + n, size)
                next_small += rng.expovariate(MAIL_PER_S)
            else:
                self.stop_ev.wait(min(next_small, next_large, next_many) - now)
                continue
            user = self.users[rng.randrange(len(self.users))]
            if kind == "large":
                large += 1
                if large % 2:
                    # a small message first: the poll stores it, then stalls in the large one
                    user = self.slow_user
                    first = mailgen.message(SEED * 1000 + n, SMALL_SIZE[0] * 2)
                    self.mail.add(user, DC.deliver(user, first), first, "small")
                    n += 1
            # base is known only after deliver(); the watcher ignores a base it cannot place yet
            base = DC.deliver(user, data)
            self.mail.add(user, base, data, kind)
            if kind != "small":
                self.clock.log("mail %s %s %d bytes -> %s", kind, base, len(data), user)
            n += 1


class DeleteWatcher(threading.Thread):
    """Scans every Maildir (new/ then cur/, the way Dovecot moves files)
    every DELETE_SCAN_S and notes when each message file disappears."""

    def __init__(self, users, stop):
        super().__init__(name="soak-watch", daemon=True)
        self.users, self.stop_ev = users, stop
        self.present = {}      # base -> user
        self.gone = {}         # base -> (user, wall time first seen gone)
        self.scans = 0
        self.error = None

    def scan(self):
        seen = {}
        for user in self.users:
            md = DC.maildir(user)
            for folder in ("new", "cur"):
                for name in os.listdir(os.path.join(md, folder)):
                    if not name.startswith("."):
                        seen[name.split(":")[0]] = user
        t = time.time()
        for base, user in self.present.items():
            if base not in seen and base not in self.gone:
                self.gone[base] = (user, t)
        self.present.update(seen)
        self.scans += 1

    def run(self):
        try:
            deadline = time.monotonic() + TIMEOUT
            while not self.stop_ev.is_set() and time.monotonic() < deadline:
                self.scan()
                self.stop_ev.wait(DELETE_SCAN_S)
        except Exception as exc:
            self.error = "%s: %s" % (type(exc).__name__, exc)


class SlowLink(threading.Thread):
    """A TCP proxy on 127.0.0.1 in front of Dovecot's plain port (STLS goes
    through it): the server's bytes reach the client at SLOW_LINK_BPS; while
    `stall` is set, a connection that has passed SLOW_STALL_AFTER bytes
    forwards nothing for SLOW_STALL_S, once, as a congested link does."""

    def __init__(self, upstream_port, clock, stop):
        super().__init__(name="soak-slowlink", daemon=True)
        self.upstream, self.clock, self.stop_ev = upstream_port, clock, stop
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.stall = True
        self.lock = threading.Lock()
        self.active = self.conns = self.stalls = self.refused = 0
        self.stalled_since = None    # time.monotonic() when the running stall began
        self.error = None

    def run(self):
        try:
            deadline = time.monotonic() + TIMEOUT
            while not self.stop_ev.is_set() and time.monotonic() < deadline:
                try:
                    c, _ = self.lsock.accept()
                except socket.timeout:
                    continue
                with self.lock:
                    busy = self.active >= SLOW_LINK_CONNS
                    if not busy:
                        self.active += 1
                        self.conns += 1
                    else:
                        self.refused += 1
                if busy:
                    c.close()
                    continue
                threading.Thread(target=self._serve, args=(c,), name="soak-slowlink-conn",
                                 daemon=True).start()
        except Exception as exc:
            self.error = "%s: %s" % (type(exc).__name__, exc)
        finally:
            self.lsock.close()

    def _stall_over(self, since):
        with self.lock:
            if self.stalled_since == since:
                self.stalled_since = None

    def _serve(self, c):
        u = mine = None     # mine: when this connection's running stall began
        try:
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                return                      # Dovecot is restarting: the client sees a close
            c.settimeout(30)
            u.settimeout(30)
            t0 = time.monotonic()
            sent, stalled, stall_total, stalled_until = 0, False, 0.0, 0.0
            while not self.stop_ev.is_set() and time.monotonic() - t0 < TIMEOUT:
                now = time.monotonic()
                if stalled_until > now and not self.stall:
                    stall_total -= stalled_until - now       # the drain ends a stall
                    stalled_until = now
                if mine is not None and now >= stalled_until:
                    self._stall_over(mine)
                    mine = None
                rlist = [c]
                if now >= stalled_until and sent <= (now - t0 - stall_total) * SLOW_LINK_BPS:
                    rlist.append(u)
                r, _, _ = select.select(rlist, [], [], 0.02)
                if c in r:
                    data = c.recv(65536)
                    if not data:
                        break
                    u.sendall(data)
                if u in r:
                    data = u.recv(16384)
                    if not data:
                        break
                    c.sendall(data)
                    sent += len(data)
                    if self.stall and not stalled and sent >= SLOW_STALL_AFTER:
                        stalled, stalled_until = True, time.monotonic() + SLOW_STALL_S
                        stall_total += SLOW_STALL_S
                        mine = time.monotonic()
                        with self.lock:
                            self.stalls += 1
                            self.stalled_since = mine
                        self.clock.log("slow link: stall after %d bytes", sent)
        except OSError:
            pass
        finally:
            c.close()
            if u is not None:
                u.close()
            if mine is not None:
                self._stall_over(mine)
            with self.lock:
                self.active -= 1

    def stall_age(self):
        """Seconds since the running stall began, or None."""
        since = self.stalled_since
        return None if since is None else time.monotonic() - since


# ---- the receivers' records -------------------------------------------------------------

class Tally:
    """What one receiver accepted: per message SHA-256 the webhook-ids seen and
    the wall time of the first 2xx."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.ids = collections.defaultdict(set)
        self.count = collections.Counter()     # (sha, id) -> times accepted
        self.first = {}
        self.events = 0
        self.strange = []                       # events that name no message we sent

    def add(self, t, wid, body):
        try:
            ev = json.loads(body)
            msg = ev["data"]["message"]
            sha = msg["sha256"]
            kind = ev["type"]
        except (ValueError, KeyError, TypeError) as exc:
            with self.lock:
                self.strange.append("unreadable event %s: %s" % (wid, exc))
            return
        with self.lock:
            self.events += 1
            if kind != "message.received" or not sha:
                self.strange.append("event %s of type %s (sha256 %s)" % (wid, kind, sha))
                return
            self.ids[sha].add(wid)
            self.count[(sha, wid)] += 1
            if sha not in self.first or t < self.first[sha]:
                self.first[sha] = t


class HealthyReader:
    """Reads the events build/tools/webhook-receiver saved (DIR/<n>.headers,
    then DIR/<n>.json, both written before it answers) into a Tally; the .json
    file's mtime is when it was accepted."""

    def __init__(self, rcv, tally):
        self.rcv, self.tally = rcv, tally
        self.done = set()

    def update(self):
        for name in os.listdir(self.rcv.out):
            if not name.endswith(".json") or name.startswith("."):
                continue
            n = int(name[:-5])
            if n in self.done:
                continue
            path = os.path.join(self.rcv.out, name)
            with open(os.path.join(self.rcv.out, "%d.headers" % n), "rb") as f:
                headers = {}
                for line in f.read().decode("utf-8", "replace").splitlines():
                    k, _, v = line.partition(": ")
                    headers[k.lower()] = v
            with open(path, "rb") as f:
                body = f.read()
            self.tally.add(os.stat(path).st_mtime, headers.get("webhook-id"), body)
            self.done.add(n)


class Flappy:
    """A webhook receiver that checks every Standard Webhooks signature and
    answers as its mode says: ok (200, recorded before the answer), 503,
    timeout (reads the request, holds it FLAP_HOLD_S, closes without an
    answer), refused (its listening socket closed: connections are refused).
    """

    def __init__(self, secret, clock):
        self.secret, self.clock = secret, clock
        self.key = base64.b64decode(secret[len("whsec_"):])
        self.port = dovecot.free_port()
        self.mode = "ok"
        self.tally = Tally("flappy")
        self.answers = collections.Counter()    # mode -> requests met in it
        self.bad = []                            # signature failures
        self.server = None
        self.thread = None
        self.lock = threading.Lock()

    @property
    def url(self):
        return "http://127.0.0.1:%d/hooks/mail" % self.port

    def _listen(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def do_POST(self):
                outer._handle(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, _request, _address):
                # the bridge killed or timed out mid-request: counted, not printed
                outer.answers["connection lost"] += 1

        last = None
        for _attempt in range(20):
            try:
                srv = Server(("127.0.0.1", self.port), Handler)
                break
            except OSError as exc:
                last = exc
                time.sleep(0.1)
        else:
            raise AssertionError("flappy cannot listen again on 127.0.0.1:%d: %s" % (self.port, last))
        srv.daemon_threads = True
        self.server = srv
        self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="soak-flappy", daemon=True)
        self.thread.start()

    def _close(self):
        srv, self.server = self.server, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
            self.thread.join(JOIN_S)

    def start(self):
        self._listen()
        harness.register_cleanup(self.stop)
        return self

    def stop(self):
        harness.unregister_cleanup(self.stop)
        with self.lock:
            self._close()

    def set_mode(self, mode):
        with self.lock:
            if mode == "refused":
                self._close()
            elif self.server is None:
                self._listen()
            self.mode = mode

    def _handle(self, h):
        mode = self.mode
        self.answers[mode] += 1
        try:
            n = int(h.headers.get("Content-Length") or "0")
        except ValueError:
            n = -1
        if n < 0 or n > FLAP_BODY_MAX:
            h.send_error(413)
            return
        body = h.rfile.read(n)
        if len(body) != n:
            self.answers["cut off"] += 1     # the bridge killed mid-request
            h.close_connection = True
            return
        wid, ts, sig = (h.headers.get("webhook-id"), h.headers.get("webhook-timestamp"),
                        h.headers.get("webhook-signature"))
        mac = base64.b64encode(hmac.new(self.key, ("%s.%s." % (wid, ts)).encode() + body,
                                        hashlib.sha256).digest()).decode()
        if not (wid and ts and sig and ts.isdigit()) or ("v1," + mac) not in sig.split(" ") \
                or abs(int(ts) - time.time()) > 300:
            self.bad.append("%s (%d bytes, timestamp %s, mode %s)" % (wid, n, ts, mode))
            h.send_error(401)
            return
        if mode in ("timeout", "refused"):
            # refused: a request taken just before the socket closed
            if mode == "timeout":
                time.sleep(FLAP_HOLD_S)
            h.close_connection = True
            return
        if mode == "503":
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        self.tally.add(time.time(), wid, body)
        h.send_response(200)
        h.send_header("Content-Length", "0")
        h.end_headers()


# ---- the API's side: a slow client and a prober ----------------------------------------

class SlowClient(threading.Thread):
    """Holds SLOW_CONNECTIONS connections to the API, each with half a
    request head, one more byte every SLOW_BYTE_EVERY_S; opens new ones as
    the bridge closes them (its request_read_timeout) or dies."""

    HEAD = b"GET /api/v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "

    def __init__(self, port, stop):
        super().__init__(name="soak-slow", daemon=True)
        self.port, self.stop_ev = port, stop
        self.opened = self.closed_by_bridge = self.answered = 0
        self.error = None

    def run(self):
        socks = []
        try:
            deadline = time.monotonic() + TIMEOUT
            while not self.stop_ev.is_set() and time.monotonic() < deadline:
                while len(socks) < SLOW_CONNECTIONS and self.opened < SLOW_OPEN_MAX:
                    try:
                        s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
                        s.sendall(self.HEAD)
                    except OSError:
                        break           # the bridge is down or starting
                    s.setblocking(False)
                    socks.append(s)
                    self.opened += 1
                readable, _, _ = select.select(socks, [], [], 0) if socks else ([], [], [])
                for s in socks[:]:
                    gone = False
                    if s in readable:
                        try:
                            data = s.recv(4096)
                        except OSError:
                            data = b""
                        if data:
                            self.answered += 1
                        gone = True
                    else:
                        try:
                            s.send(b"a")
                        except OSError:
                            gone = True
                    if gone:
                        self.closed_by_bridge += 1
                        socks.remove(s)
                        s.close()
                self.stop_ev.wait(SLOW_BYTE_EVERY_S)
        except Exception as exc:
            self.error = "%s: %s" % (type(exc).__name__, exc)
        finally:
            for s in socks:
                s.close()


class Prober(threading.Thread):
    """GET /api/v1/accounts with a valid token every PROBE_EVERY_S.  A probe
    counts when the bridge was up and not killed during it (epoch unchanged);
    a refused connection (the bridge starting) does not count."""

    def __init__(self, port, token, state, stop):
        super().__init__(name="soak-probe", daemon=True)
        self.port, self.token, self.state, self.stop_ev = port, token, state, stop
        self.latencies = []
        self.failures = []
        self.error = None

    def probe(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_LIMIT_S * 2)
        try:
            c.request("GET", "/api/v1/accounts", headers={"Authorization": "Bearer " + self.token})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def run(self):
        try:
            deadline = time.monotonic() + TIMEOUT
            while not self.stop_ev.is_set() and time.monotonic() < deadline:
                epoch = self.state["epoch"]
                if self.state["up"]:
                    t = time.monotonic()
                    try:
                        status, err = self.probe(), None
                    except ConnectionRefusedError:
                        status, err = None, "refused"
                    except (OSError, http.client.HTTPException) as exc:
                        status, err = None, "%s: %s" % (type(exc).__name__, exc)
                    took = time.monotonic() - t
                    if self.state["up"] and self.state["epoch"] == epoch and err != "refused":
                        self.latencies.append(took)
                        if status != 200 or took > PROBE_LIMIT_S:
                            self.failures.append("%s after %.2f s" % (err or "status %s" % status, took))
                self.stop_ev.wait(PROBE_EVERY_S)
        except Exception as exc:
            self.error = "%s: %s" % (type(exc).__name__, exc)


class RssSampler(threading.Thread):
    """VmHWM (the peak RSS) of the bridge's current process, every RSS_EVERY_S."""

    def __init__(self, state, stop):
        super().__init__(name="soak-rss", daemon=True)
        self.state, self.stop_ev = state, stop
        self.lock = threading.Lock()
        self.peak = {}          # pid -> VmHWM in KiB

    def sample(self, pid=None):
        pid = pid or self.state["pid"]
        if not pid:
            return
        try:
            with open("/proc/%d/status" % pid) as f:
                m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
        except OSError:
            return
        if m:
            with self.lock:
                self.peak[pid] = max(self.peak.get(pid, 0), int(m.group(1)))

    def run(self):
        deadline = time.monotonic() + TIMEOUT
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            self.sample()
            self.stop_ev.wait(RSS_EVERY_S)


# ---- the test -------------------------------------------------------------------------------

def make_bridge(users, healthy, flappy, slow_link):
    env = {"T_WHSEC_HEALTHY": healthy.secret, "T_WHSEC_FLAPPY": flappy.secret,
           "T_API_TOKEN": base64.urlsafe_b64encode(os.urandom(18)).decode()}
    accounts = []
    for i, user in enumerate(users):
        env["T_PW_%d" % i] = DC.users[user]
        a = {"name": user, "host": "127.0.0.1", "username": user, "password_env": "T_PW_%d" % i,
             "start": "all", "poll_interval": POLL_INTERVAL,
             "webhooks": ["healthy", "flappy"]}
        if i % 3 == 0:
            a.update(tls="implicit", port=DC.tls_port, ca_file=DC.pki.ca)
        elif i % 3 == 1:
            a.update(tls="starttls", port=DC.port, ca_file=DC.pki.ca)
        else:
            a.update(tls="none", port=DC.port, allow_plaintext=True)
        if user == users[-1]:
            a.update(tls="starttls", port=slow_link.port, ca_file=DC.pki.ca, timeout=SLOW_ACCOUNT_TIMEOUT)
        if i % 4 == 0:
            a["after_delivery"] = "delete"
        elif i % 4 == 1:
            a["delete_after"] = "1m"
        accounts.append(a)
    port = dovecot.free_port()
    cfg = {
        "log_level": "info",
        "api": {"listen": "127.0.0.1:%d" % port, "public_url": "http://127.0.0.1:%d" % port,
                "tokens": [{"name": "soak", "token_env": "T_API_TOKEN"}]},
        "webhooks": [
            {"name": "healthy", "url": healthy.url, "secret_env": "T_WHSEC_HEALTHY",
             "timeout": HEALTHY_TIMEOUT, "retry_schedule": RETRIES},
            {"name": "flappy", "url": flappy.url, "secret_env": "T_WHSEC_FLAPPY",
             "timeout": FLAPPY_TIMEOUT, "retry_schedule": RETRIES},
        ],
        "accounts": accounts,
    }
    return Bridge(cfg, env, name="bridge-soak"), port, env["T_API_TOKEN"]


def deleting(i):
    return i % 4 in (0, 1)


@harness.timeout(TIMEOUT)
def test_soak():
    clock = Clock()
    rng_kill = random.Random("%d-kill" % SEED)
    rng_dc = random.Random("%d-dovecot" % SEED)
    rng_flap = random.Random("%d-flap" % SEED)
    harness.report("soak: SOAK_SEED=%d SOAK_SECONDS=%d (chaos %d s, drain up to %d s)" % (
        SEED, SOAK_SECONDS, CHAOS_SECONDS, DRAIN_SECONDS))
    clock.log("seed %d", SEED)

    users = ["soak%02d" % i for i in range(ACCOUNTS)]
    for u in users:
        DC.add_user(u, base64.urlsafe_b64encode(os.urandom(12)).decode())
    healthy_rcv = Receiver(bridge.new_secret(), name="healthy").start()
    healthy = HealthyReader(healthy_rcv, Tally("healthy"))
    flappy = Flappy(bridge.new_secret(), clock).start()
    stop_chaos, stop_all = threading.Event(), threading.Event()
    slow_link = SlowLink(DC.port, clock, stop_all)
    b, api_port, token = make_bridge(users, healthy_rcv, flappy, slow_link)

    state = {"up": False, "epoch": 0, "pid": None}
    mail = Mail()
    mailer = MailThread(clock, mail, users, users[-1], stop_chaos)
    watcher = DeleteWatcher(users, stop_all)
    slow = SlowClient(api_port, stop_all)
    prober = Prober(api_port, token, state, stop_all)
    rss = RssSampler(state, stop_all)
    threads = [mailer, watcher, slow, prober, rss, slow_link]

    problems = []
    stats = collections.Counter()
    flap_modes = collections.Counter()
    exit_code = None

    def start_bridge():
        b.start()
        state["pid"] = b.proc.pid
        state["up"] = True
        stats["starts"] += 1
        clock.log("bridge started, pid %d", b.proc.pid)

    def kill_bridge():
        pid = state["pid"]
        state["up"] = False
        state["epoch"] += 1
        rss.sample(pid)
        code = b.kill9()
        state["pid"] = None
        return code

    try:
        for t in threads:
            t.start()
        start_bridge()
        chaos_end = CHAOS_SECONDS
        next_kill = clock.now() + rng_kill.uniform(*KILL_EVERY_S)
        restart_at = None
        if CHAOS_SECONDS <= 2 * DOVECOT_FIRST_S[1]:
            next_dc = CHAOS_SECONDS * rng_dc.uniform(*DOVECOT_SHORT_AT)
        else:
            next_dc = rng_dc.uniform(*DOVECOT_FIRST_S)
        next_flap = rng_flap.uniform(*FLAP_PERIOD_S)
        ticks = 0
        while clock.now() < chaos_end and ticks < chaos_end / TICK_S * 2:
            ticks += 1
            now = clock.now()
            if state["up"] and not b.running():
                code = kill_bridge()
                problems.append("the bridge exited by itself (code %s) at %.1f s" % (code, now))
                clock.log("bridge exited by itself, code %s", code)
                restart_at = now
            elif state["up"] and now >= next_kill and stats["kills"] < MAX_KILLS \
                    and (slow_link.stall_age() or STALL_BEFORE_KILL_S) >= STALL_BEFORE_KILL_S:
                kill_bridge()
                stats["kills"] += 1
                restart_at = now + rng_kill.uniform(*RESTART_AFTER_S)
                clock.log("kill -9 #%d", stats["kills"])
            elif not state["up"] and restart_at is not None and now >= restart_at:
                start_bridge()
                restart_at = None
                next_kill = clock.now() + rng_kill.uniform(*KILL_EVERY_S)
            if now >= next_dc:
                if now <= chaos_end - DOVECOT_QUIET_S:
                    down = rng_dc.uniform(*DOVECOT_DOWN_S)
                    clock.log("dovecot restart, down %.2f s", down)
                    DC.restart(down)
                    stats["dovecot_restarts"] += 1
                    clock.log("dovecot up again")
                next_dc = now + rng_dc.uniform(*DOVECOT_EVERY_S)
            if now >= next_flap:
                mode = rng_flap.choices([m for m, _ in FLAP_MODES], [w for _, w in FLAP_MODES])[0]
                flappy.set_mode(mode)
                flap_modes[mode] += 1
                clock.log("flappy: %s", mode)
                next_flap = now + rng_flap.uniform(*FLAP_PERIOD_S)
            time.sleep(TICK_S)

        # ---- drain: no new mail, no faults, flappy healthy
        stop_chaos.set()
        mailer.join(JOIN_S)
        flappy.set_mode("ok")
        slow_link.stall = False
        if not state["up"]:
            start_bridge()
        clock.log("drain: %d messages put in", len(mail.by_sha))
        drain_t0 = time.monotonic()
        want, _ = mail.snapshot()
        missing = None
        for _ in range(int(DRAIN_SECONDS / 0.5) + 1):
            healthy.update()
            missing = [s for s in want if s not in healthy.tally.first or s not in flappy.tally.first]
            if not missing or time.monotonic() - drain_t0 > DRAIN_SECONDS:
                break
            if state["up"] and not b.running():
                code = kill_bridge()
                problems.append("the bridge exited by itself (code %s) in the drain" % code)
                start_bridge()
            time.sleep(0.5)
        stats["drain_s"] = round(time.monotonic() - drain_t0, 1)
        clock.log("drain over after %.1f s, %d messages missing somewhere", stats["drain_s"], len(missing))

        # ---- the end: SIGTERM, everything stopped, the last records read
        rss.sample()
        state["up"] = False
        try:
            exit_code = b.stop()
        except AssertionError as exc:
            problems.append(str(exc))
        state["pid"] = None
    finally:
        stop_chaos.set()
        stop_all.set()
        for t in threads:
            t.join(JOIN_S)
        flappy.stop()
        healthy_rcv.stop()

    watcher.scan()
    healthy.update()
    want, by_base = mail.snapshot()
    rcv_log = healthy_rcv.log()
    log = b.log()

    # ---- checks
    for t in threads:
        if t.is_alive():
            problems.append("thread %s did not stop within %s s" % (t.name, JOIN_S))
        if getattr(t, "error", None):
            problems.append("thread %s failed: %s" % (t.name, t.error))
    if exit_code not in (0, None):
        problems.append("exit code %s after the final SIGTERM" % exit_code)

    dup_ids = {}
    for tally in (healthy.tally, flappy.tally):
        missing = [s for s in want if s not in tally.ids]
        if missing:
            problems.append("%d of %d messages never reached %s, e.g. %s" % (
                len(missing), len(want), tally.name,
                ", ".join("%s/%s (%s, %d bytes)" % (want[s]["account"], want[s]["base"], want[s]["kind"],
                                                     want[s]["size"]) for s in missing[:5])))
        multi = {s: ids for s, ids in tally.ids.items() if len(ids) > 1}
        if multi:
            problems.append("%d messages reached %s under more than one webhook-id, e.g. %s" % (
                len(multi), tally.name, "; ".join("%s: %s" % (want.get(s, {}).get("base", s), sorted(ids))
                                                  for s, ids in list(multi.items())[:3])))
        unknown = [s for s in tally.ids if s not in want]
        if unknown:
            problems.append("%s got %d messages nobody put in a mailbox (sha256 %s)" % (
                tally.name, len(unknown), ", ".join(unknown[:3])))
        if tally.strange:
            problems.append("%s: %d odd events, e.g. %s" % (tally.name, len(tally.strange), tally.strange[:3]))
        dup_ids[tally.name] = sum(c - 1 for c in tally.count.values())

    early, kept_deleted = [], []
    for base, (user, t_gone) in watcher.gone.items():
        sha = by_base.get(base)
        if sha is None:
            continue
        if not deleting(users.index(user)):
            kept_deleted.append("%s/%s" % (user, base))
        late = ["%s %s" % (tally.name, "never" if tally.first.get(sha) is None
                           else "%.3f s later" % (tally.first[sha] - t_gone))
                for tally in (healthy.tally, flappy.tally)
                if tally.first.get(sha) is None or tally.first[sha] > t_gone]
        if late:
            early.append("%s/%s (%s)" % (user, base, ", ".join(late)))
    if early:
        problems.append("%d messages deleted from the server before both webhooks answered 2xx: %s" % (
            len(early), "; ".join(early[:5])))
    if kept_deleted:
        problems.append("%d messages deleted from accounts that keep their mail: %s" % (
            len(kept_deleted), ", ".join(kept_deleted[:5])))

    peak = max(rss.peak.values(), default=0)
    if not rss.peak:
        problems.append("no RSS sample of the bridge was taken")
    over = sorted(((p, k) for p, k in rss.peak.items() if k >= RSS_LIMIT_KIB), key=lambda x: -x[1])
    if over:
        problems.append("peak RSS of %.0f MiB or more in %d of %d incarnations: %s" % (
            RSS_LIMIT_KIB / 1024, len(over), len(rss.peak), ", ".join("pid %d %.1f MiB" % (p, k / 1024) for p, k in over[:5])))

    locked = [line for line in log.splitlines() if LOCKED in line]
    if locked:
        problems.insert(0, '%d lines with "%s" in the bridge\'s logs, e.g. %s' % (
            len(locked), LOCKED, " | ".join(line[:240] for line in locked[:3])))
    if prober.failures:
        problems.append("%d of %d API requests with a valid token failed or took over %.0f s: %s" % (
            len(prober.failures), len(prober.latencies), PROBE_LIMIT_S, "; ".join(prober.failures[:5])))
    if not prober.latencies:
        problems.append("no API request with a valid token was answered")
    if flappy.bad or "rejected with 401" in rcv_log:
        problems.append("bad signatures: %d at flappy (%s), %d at healthy" % (
            len(flappy.bad), "; ".join(flappy.bad[:3]) or "-", rcv_log.count("rejected with 401")))

    lat = sorted(prober.latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    deleted = sum(1 for base in watcher.gone if base in by_base)
    errors = collections.Counter(m.group(1) for m in re.finditer(r"level=error event=(\S+)", log))
    summary = [
        "soak: seed %d, %d s (chaos %d s, drain %.1f s)" % (SEED, SOAK_SECONDS, CHAOS_SECONDS,
                                                            stats["drain_s"]),
        "  messages: %d put in %d mailboxes (%s), %.1f MB; %d deleted by the bridge" % (
            len(want), ACCOUNTS, ", ".join("%d %s" % (n, k) for k, n in sorted(mail.kinds.items())),
            mail.bytes / 1e6, deleted),
        "  deliveries: healthy %d events for %d messages, flappy %d for %d; duplicates by id: "
        "healthy %d, flappy %d; messages with 2+ ids: %d" % (
            healthy.tally.events, len(healthy.tally.ids), flappy.tally.events, len(flappy.tally.ids),
            dup_ids["healthy"], dup_ids["flappy"],
            sum(1 for t in (healthy.tally, flappy.tally) for ids in t.ids.values() if len(ids) > 1)),
        "  flappy requests by mode: %s (mode switches %s)" % (
            dict(flappy.answers), dict(flap_modes)),
        "  faults: %d kill -9, %d bridge starts, %d Dovecot restarts, %d stalls of %.0f s on the "
        "slow link (%d connections)" % (
            stats["kills"], stats["starts"], stats["dovecot_restarts"], slow_link.stalls, SLOW_STALL_S,
            slow_link.conns),
        "  peak RSS (VmHWM): %.1f MiB max over %d incarnations (limit %.0f MiB)" % (
            peak / 1024, len(rss.peak), RSS_LIMIT_KIB / 1024),
        "  API: %d probes with a valid token, p99 %.3f s, max %.3f s, %d failed; slow client: %d "
        "connections opened, %d closed by the bridge (%d with an answer)" % (
            len(lat), p99, lat[-1] if lat else float("nan"), len(prober.failures), slow.opened,
            slow.closed_by_bridge, slow.answered),
        '  "%s": %d lines; error events in the log: %s' % (LOCKED, len(locked), dict(errors)),
    ]
    for line in summary:
        harness.report(line)
    clock.log("\n".join(summary))
    if problems:
        raise AssertionError("soak (SOAK_SEED=%d) failed:\n  - %s" % (SEED, "\n  - ".join(problems)))
