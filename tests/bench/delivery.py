#!/usr/bin/python3
"""pop3bridge delivery benchmark (part of `make bench`): figures, not a test.

    tests/bench/delivery.py [--help]

Starts a throwaway Dovecot (tests/lib/dovecot.py) on free loopback ports and
build/tools/webhook-receiver instances that verify every signature, then:

1. wide mail, peak RSS (issue 8, sections 3 and 10): four 25 MB messages,
   each of BENCH_WIDE_ATTACHMENTS attachments (a little under 256 KiB each,
   so every one may be inlined), delivered by `pop3bridge run --once`; the
   peak RSS is the process's VmHWM, read from /proc while it runs.  Three
   configurations: the default; inline_attachments_max 256KiB as in the
   original report (the default too); and inline_total_max 16MiB, to show
   what the budget is worth.  Each run is verified: four events, their
   attachments all listed, what is inlined within the budget.
2. a slow and a fast receiver (section 5): two webhooks get the same
   BENCH_FAIR_MESSAGES messages; one receiver answers after 5 s, the other at
   once.  The time from the start of `pop3bridge run` until the fast one has
   them all (goal: 2 s), and what the slow one had by then.
3. delivery rate (section 10): BENCH_RATE_MESSAGES small messages are stored
   first (the receiver answers 410, which holds every delivery back), then a
   second `run --once` with a healthy receiver delivers them all: events per
   second between the receiver's first and last event, and the run's time.

Prints a Markdown table and writes it to BENCH_OUT/delivery.md (every run in
delivery.json).  Exit 0 unless something is broken (a wrong count, a run that
failed or hit its time limit); a missed goal prints "MISSED".

Environment (defaults in brackets):
  BENCH_WIDE_RUNS [3]            runs of each wide-mail configuration
  BENCH_WIDE_ATTACHMENTS [100]   attachments per wide message
  BENCH_FAIR_MESSAGES [200]      messages for the slow/fast pair
  BENCH_RATE_MESSAGES [2000]     messages for the delivery rate
  BENCH_OUT [tests/out/bench]    where results go
  POP3BRIDGE [build/pop3bridge]  the binary under test
"""

import base64
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.dont_write_bytecode = True

import dovecot  # noqa: E402
import harness  # noqa: E402
import mailgen  # noqa: E402


RUN_TIMEOUT = 300.0
CHILD_TIMEOUT = 10.0
RSS_POLL = 0.002
WIDE_SIZE = 25 * 1000 * 1000       # bytes of each wide message, about
WIDE_COUNT = 4
RSS_GOAL_KIB = 64 * 1024
FAIR_GOAL_S = 2.0
SLOW_DELAY_MS = 5000


class Broken(Exception):
    pass


def say(msg):
    print("bench delivery: " + msg, flush=True)


def env_int(name, default, lo, hi):
    v = os.environ.get(name, "")
    if v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        raise Broken("%s must be a whole number from %d to %d, not %r" % (name, lo, hi, v))
    return n


def vm_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def wide_message(seed, n_att):
    """About WIDE_SIZE bytes: a short text and n_att base64 attachments of
    equal size (each under 256 KiB decoded), bytes that do not compress."""
    per = min((WIDE_SIZE - 4096) // n_att * 3 // 4 * 76 // 78, 256 * 1024 - 1024)
    rnd = os.urandom(per)
    parts = ["From: Wide <wide@example.org>", "To: support@example.org",
             "Subject: %d attachments, seed %d" % (n_att, seed),
             "Message-ID: <wide.%d@example.org>" % seed, "MIME-Version: 1.0",
             "Content-Type: multipart/mixed; boundary=\"wide-b\"", "",
             "--wide-b", "Content-Type: text/plain; charset=utf-8", "", "Many files.", ""]
    head = "\n".join(parts).encode()
    chunks = [head]
    for i in range(n_att):
        data = bytes([i % 251]) + rnd[1:]
        b64 = base64.encodebytes(data)
        chunks.append(("--wide-b\nContent-Type: application/octet-stream\n"
                       "Content-Disposition: attachment; filename=\"f%03d.bin\"\n"
                       "Content-Transfer-Encoding: base64\n\n" % i).encode())
        chunks.append(b64)
    chunks.append(b"--wide-b--\n")
    return b"".join(chunks), per


class Bench:
    def __init__(self):
        self.wide_runs = env_int("BENCH_WIDE_RUNS", 3, 1, 20)
        self.wide_atts = env_int("BENCH_WIDE_ATTACHMENTS", 100, 1, 1000)
        self.fair_n = env_int("BENCH_FAIR_MESSAGES", 200, 1, 5000)
        self.rate_n = env_int("BENCH_RATE_MESSAGES", 2000, 1, 20000)
        self.out = os.path.abspath(os.environ.get("BENCH_OUT") or os.path.join(ROOT, "tests", "out", "bench"))
        self.bin = harness.binary()
        self.receiver_bin = harness.tool("webhook-receiver")
        for what, path in (("pop3bridge", self.bin), ("webhook-receiver", self.receiver_bin)):
            if not os.access(path, os.X_OK):
                raise Broken("%s not found at %s (run `make all tools`)" % (what, path))
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.work = tempfile.mkdtemp(prefix="p3b-bench-delivery-", dir=shm)
        harness.register_cleanup(lambda: shutil.rmtree(self.work, ignore_errors=True))
        self.password = "bench-" + os.urandom(12).hex()
        self.secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        self.dc = None
        self.procs = []
        self.rows = []     # (case, figure, goal, verdict)
        self.runs = {}

    # -- helpers --

    def start_dovecot(self):
        os.makedirs(self.out, exist_ok=True)
        harness.set_run_dir(self.out)
        self.dc = dovecot.Dovecot(name="bench-delivery", mechanisms="plain login").start()

    def receiver(self, name, args=()):
        d = os.path.join(self.work, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        log = open(os.path.join(self.work, name + ".log"), "ab")
        p = subprocess.Popen([self.receiver_bin, "--port", "0", "--out", d] + [str(a) for a in args],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                             env=dict(os.environ, WEBHOOK_SECRET=self.secret), start_new_session=True)
        log.close()
        self.procs.append(p)
        ready, _, _ = select.select([p.stdout], [], [], CHILD_TIMEOUT)
        line = p.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on 127.0.0.1:"):
            raise Broken("webhook-receiver did not start: %r" % line)
        return {"proc": p, "dir": d, "port": int(line.strip().rsplit(":", 1)[1])}

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(CHILD_TIMEOUT * 4)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(CHILD_TIMEOUT)
        if p.stdout:
            p.stdout.close()

    def stop_all(self):
        for p in self.procs:
            try:
                self.stop(p)
            except OSError:
                pass
        self.procs = []

    @staticmethod
    def events(rcv):
        names = [n for n in os.listdir(rcv["dir"]) if n.endswith(".json") and not n.startswith(".")]
        return sorted(names, key=lambda n: int(n[:-5]))

    def config(self, name, user, hooks, **account):
        state = os.path.join(self.work, name + "-state")
        shutil.rmtree(state, ignore_errors=True)
        acct = {"name": "bench", "host": "127.0.0.1", "port": self.dc.tls_port, "tls": "implicit",
                "ca_file": self.dc.pki.ca, "username": user, "password_env": "BENCH_POP3_PASSWORD",
                "start": "all", "webhooks": [h["name"] for h in hooks]}
        acct.update(account)
        cfg = {"state_dir": state, "log_level": "warn", "webhooks": hooks, "accounts": [acct]}
        path = os.path.join(self.work, name + ".json")
        harness.write_config(path, cfg, indent=1)   # 0600: the bridge refuses one others can read
        return path

    def hook(self, name, rcv, **extra):
        h = {"name": name, "url": "http://127.0.0.1:%d/hooks/mail" % rcv["port"],
             "secret_env": "BENCH_WEBHOOK_SECRET"}
        h.update(extra)
        return h

    def env(self):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("POP3BRIDGE_", "BENCH_"))}
        e.update(LC_ALL="C", BENCH_POP3_PASSWORD=self.password, BENCH_WEBHOOK_SECRET=self.secret)
        return e

    def run_once(self, cfg, label, watch_rss=False):
        """`run --once` to its end: (wall s, peak RSS KiB or None)."""
        errp = os.path.join(self.work, label.replace(" ", "-") + ".stderr")
        with open(errp, "wb") as err:
            t0 = time.monotonic()
            p = subprocess.Popen([self.bin, "run", "--config", cfg, "--once"], stdin=subprocess.DEVNULL,
                                 stdout=err, stderr=err, env=self.env(), start_new_session=True)
        done = {}

        def waiter():
            _, status, _ = os.wait4(p.pid, 0)
            done.update(t=time.monotonic(), status=status)

        w = threading.Thread(target=waiter, daemon=True)
        w.start()
        hwm = None
        deadline = time.monotonic() + RUN_TIMEOUT
        while w.is_alive() and time.monotonic() < deadline:
            if watch_rss:
                v = vm_hwm_kib(p.pid)
                if v is not None and (hwm is None or v > hwm):
                    hwm = v
            time.sleep(RSS_POLL if watch_rss else 0.02)
        w.join(1)
        if w.is_alive():
            os.killpg(p.pid, signal.SIGKILL)
            w.join(CHILD_TIMEOUT)
            raise Broken("%s: no result within %.0fs" % (label, RUN_TIMEOUT))
        p.returncode = os.waitstatus_to_exitcode(done["status"])
        if p.returncode != 0:
            with open(errp, errors="replace") as f:
                raise Broken("%s: exit %d: %s" % (label, p.returncode, f.read()[-800:]))
        return done["t"] - t0, hwm

    # -- 1. wide mail --

    def wide(self):
        user = "wide"
        self.dc.add_user(user, self.password)
        per = 0
        for s in range(WIDE_COUNT):
            data, per = wide_message(s, self.wide_atts)
            self.dc.deliver(user, data)
        size = sum(m.pop3_size for m in self.dc.messages(user))
        say("wide: %d messages of %.1f MB, %d attachments of %d KiB each" % (
            WIDE_COUNT, size / WIDE_COUNT / 1e6, self.wide_atts, per // 1024))
        configs = (("default configuration", {}, 1 << 20),
                   ("inline_attachments_max 256KiB", {"inline_attachments_max": "256KiB"}, 1 << 20),
                   ("inline_total_max 16MiB", {"inline_attachments_max": "256KiB",
                                               "inline_total_max": "16MiB"}, 16 << 20))
        for label, extra, budget in configs:
            peaks, times = [], []
            for r in range(self.wide_runs):
                rcv = self.receiver("wide-rcv")
                cfg = self.config("wide", user, [self.hook("receiver", rcv, timeout="120s", **extra)],
                                  timeout="120s")
                wall, hwm = self.run_once(cfg, "wide %s run %d" % (label, r + 1), watch_rss=True)
                self.stop(rcv["proc"])
                self.procs.remove(rcv["proc"])
                names = self.events(rcv)
                if len(names) != WIDE_COUNT:
                    raise Broken("wide %s: %d events, not %d" % (label, len(names), WIDE_COUNT))
                for n in names:
                    with open(os.path.join(rcv["dir"], n), "rb") as f:
                        ev = json.load(f)
                    atts = ev["data"]["message"]["attachments"]
                    inl = sum(a["size"] for a in atts if "content" in a)
                    if len(atts) != self.wide_atts or inl > budget or not inl:
                        raise Broken("wide %s: %d attachments, %d bytes inlined (budget %d)" % (
                            label, len(atts), inl, budget))
                peaks.append(hwm or 0)
                times.append(wall)
            self.runs["wide " + label] = {"peak_kib": peaks, "wall_s": times}
            peak = max(peaks)
            goal = "<= 64 MiB" if budget == 1 << 20 else "(informational)"
            verdict = ("met" if peak <= RSS_GOAL_KIB else "MISSED") if budget == 1 << 20 else ""
            self.rows.append(("4 x %.0f MB, %d attachments, %s: peak RSS" % (
                WIDE_SIZE / 1e6, self.wide_atts, label),
                "%.1f MiB (runs %s; %.1f s each, median)" % (
                    peak / 1024, ", ".join("%.1f" % (p / 1024) for p in peaks), statistics.median(times)),
                goal, verdict))
            say("wide, %s: peak RSS %.1f MiB" % (label, peak / 1024))

    # -- 2. slow and fast --

    def fair(self):
        user = "fair"
        self.dc.add_user(user, self.password)
        for m in mailgen.mailbox(11, self.fair_n, 2048, 8192):
            self.dc.deliver(user, m)
        slow = self.receiver("slow", ["--delay-ms", SLOW_DELAY_MS])
        fast = self.receiver("fast")
        cfg = self.config("fair", user, [self.hook("slow", slow), self.hook("fast", fast)])
        errp = os.path.join(self.work, "fair.stderr")
        with open(errp, "wb") as err:
            t0 = time.monotonic()
            p = subprocess.Popen([self.bin, "run", "--config", cfg], stdin=subprocess.DEVNULL,
                                 stdout=err, stderr=err, env=self.env(), start_new_session=True)
        self.procs.append(p)
        deadline = t0 + 120
        while len(self.events(fast)) < self.fair_n and time.monotonic() < deadline:
            if p.poll() is not None:
                raise Broken("fair: the bridge exited with %s" % p.returncode)
            time.sleep(0.01)
        took = time.monotonic() - t0
        got_fast, got_slow = len(self.events(fast)), len(self.events(slow))
        if got_fast < self.fair_n:
            raise Broken("fair: the fast receiver got %d of %d in 120 s" % (got_fast, self.fair_n))
        self.stop(p)
        self.procs.remove(p)
        if p.returncode != 0:
            raise Broken("fair: exit %d after SIGTERM" % p.returncode)
        self.runs["fair"] = {"fast_s": took, "slow_events_then": got_slow}
        self.rows.append(("%d messages to a fast and a 5 s receiver: the fast one has all" % self.fair_n,
                          "%.2f s (the slow one had %d)" % (took, got_slow), "<= 2 s",
                          "met" if took <= FAIR_GOAL_S else "MISSED"))
        say("fair: the fast receiver had %d in %.2f s; the slow one %d" % (got_fast, took, got_slow))
        self.stop_all()

    # -- 3. delivery rate --

    def rate(self):
        user = "rate"
        self.dc.add_user(user, self.password)
        for m in mailgen.mailbox(42, self.rate_n, 2048, 20480):
            self.dc.deliver(user, m, "cur")
        gone = self.receiver("rate-gone", ["--gone"])
        cfg = self.config("rate", user, [self.hook("receiver", gone)])
        self.run_once(cfg, "rate store")
        self.stop(gone["proc"])
        self.procs.remove(gone["proc"])
        rcv = self.receiver("rate-rcv")
        # the same state, the webhook at the healthy receiver (enabled again at start)
        with open(cfg) as f:
            c = json.load(f)
        c["webhooks"][0]["url"] = "http://127.0.0.1:%d/hooks/mail" % rcv["port"]
        harness.write_config(cfg, c, indent=1)
        wall, _ = self.run_once(cfg, "rate deliver")
        names = self.events(rcv)
        self.stop(rcv["proc"])
        self.procs.remove(rcv["proc"])
        if len(names) != self.rate_n:
            raise Broken("rate: %d events, not %d" % (len(names), self.rate_n))
        first = os.stat(os.path.join(rcv["dir"], names[0])).st_mtime
        last = os.stat(os.path.join(rcv["dir"], names[-1])).st_mtime
        span = max(last - first, 1e-3)
        self.runs["rate"] = {"events": len(names), "span_s": span, "run_s": wall}
        self.rows.append(("%d stored events to one verifying receiver" % self.rate_n,
                          "%.0f events/s (%.2f s first to last; the run %.2f s)" % (
                              len(names) / span, span, wall),
                          "several thousand/s", ""))
        say("rate: %d events in %.2f s (%.0f/s), run %.2f s" % (len(names), span, len(names) / span, wall))

    def report(self):
        lines = ["## pop3bridge delivery benchmark, %s" % time.strftime("%Y-%m-%d %H:%M:%S %z"), "",
                 "Machine: %d CPUs.  Loopback; receivers verify every signature." % os.cpu_count(), "",
                 "| case | measured | goal | |", "|---|---|---|---|"]
        for case, fig, goal, verdict in self.rows:
            lines.append("| %s | %s | %s | %s |" % (case, fig, goal, verdict))
        text = "\n".join(lines) + "\n"
        print(text)
        with open(os.path.join(self.out, "delivery.md"), "w") as f:
            f.write(text)
        with open(os.path.join(self.out, "delivery.json"), "w") as f:
            json.dump(self.runs, f, indent=1)


def main():
    if len(sys.argv) > 1:
        print(__doc__)
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    b = None
    try:
        b = Bench()
        b.start_dovecot()
        b.fair()
        b.rate()
        b.wide()
        b.report()
        return 0
    except Broken as e:
        print("bench delivery: BROKEN: %s" % e, file=sys.stderr)
        return 1
    finally:
        if b:
            b.stop_all()
            if b.dc:
                b.dc.stop()
        harness.run_cleanups()


if __name__ == "__main__":
    sys.exit(main())
