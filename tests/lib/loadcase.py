"""loadcase -- many accounts on one bridge, one of them slow (issue 8, section 1).

    from loadcase import run_case
    fig = run_case(dc, accounts=100, interval_s=5, slow_bytes=25_000_000, slow_seconds=25)

ACCOUNTS - 1 users on a running Dovecot `dc` (made here) and one account on a
scripted TLS server whose second message (`slow_bytes`) trickles in over
`slow_seconds`.  `pop3bridge run` polls them all every `interval_s` with one
webhook to build/tools/webhook-receiver.  While the slow message trickles,
every Dovecot account gets a new message; the case waits for all of them,
then for the slow message, and stops the bridge.

Returns the figures (a dict): polls, poll_lag p50/p99/max (how late each poll
of the fast accounts started: its start minus the previous poll's end plus
the interval, from the bridge's debug log), delivery_lag p50/p99/max (event
received minus message placed in the Maildir), whether the new mail all came
while the slow message was still trickling, the slow account's events,
"database is locked" and store_commit_failed counts in the log, the bridge's
peak RSS (VmHWM) and its CPU seconds, and the exit code.  Used by
tests/integration/test_load.py (asserts) and tests/bench/load.py (prints).

Its set-up, shared with tests/bench/accounts.py: mailbox_users (Dovecot
users with a message each), dovecot_accounts (their accounts in the
configuration), hook_config (the configuration around them).
"""

import os
import re
import time

import bridge
import harness
import mailgen
from bridge import Bridge, Receiver
from scripted_server import ScriptedServer, send, expect, respond, call

TS = re.compile(r"^ts=(\S+)Z level=\S+ event=(poll_start|poll_done) account=(\S+)", re.M)


def _ts(text):
    t = time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    return time.mktime(t) - time.timezone + float("0" + text[19:])


def poll_lags(log, interval, skip=()):
    """Per poll after the first of each account: how late it started, in s."""
    last_done, lags = {}, []
    for ts, ev, acct in TS.findall(log):
        if acct in skip:
            continue
        t = _ts(ts)
        if ev == "poll_done":
            last_done[acct] = t
        elif acct in last_done:
            lags.append(t - (last_done.pop(acct) + interval))
    return lags


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))] if v else 0.0


def stuffed(data):
    """Maildir bytes as a POP3 server sends them: CRLF, dot-stuffed."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


def slow_message(size):
    head = (b"From: Slow Sender <slow@example.com>\r\nTo: user@example.com\r\n"
            b"Subject: the slow one\r\nMessage-ID: <slow-1@example.com>\r\n"
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-Type: text/plain\r\n\r\n")
    line = b"slow trickle of bytes, one line after another, to fill the message.\r\n"
    return head + line * ((size - len(head)) // len(line))


def slow_server(first, big, seconds):
    """POP3 over TLS, two messages; RETR 2 trickles over `seconds`."""
    sizes = (len(first), len(big))
    common = [
        (r"CAPA", b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n"),
        (r"USER .*", b"+OK\r\n"),
        (r"PASS .*", b"+OK logged in\r\n"),
        (r"STAT", b"+OK 2 %d\r\n" % sum(sizes)),
        (r"UIDL", b"+OK\r\n1 slow-1\r\n2 slow-2\r\n.\r\n"),
        (r"LIST", b"+OK\r\n1 %d\r\n2 %d\r\n.\r\n" % sizes),
        (r"RETR 1", b"+OK\r\n" + first + b".\r\n"),
        (r"NOOP", b"+OK\r\n"),
    ]
    state = {"started": None, "ended": None}

    def trickle(srv):
        srv.write(b"+OK %d octets\r\n" % len(big))
        state["started"] = time.monotonic()
        chunk = 256 * 1024
        steps = (len(big) + chunk - 1) // chunk
        for i in range(steps):
            srv.write(big[i * chunk:(i + 1) * chunk])
            time.sleep(seconds / steps)
        srv.write(b".\r\n")
        state["ended"] = time.monotonic()

    srv = ScriptedServer([
        send(b"+OK slow server ready\r\n"),
        respond(common, until=r"RETR 1"),
        expect(r"RETR 2"),
        call(trickle),
        respond(common + [(r"QUIT", b"+OK bye\r\n")], until=r"QUIT"),
    ], tls=True, timeout=seconds + 60, linger=1.0)
    return srv, state


def _proc_figures(pid):
    rss = cpu = None
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1]) / 1024.0
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
            cpu = (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        pass
    return rss, cpu


def mailbox_users(dc, users, size, first=1000):
    """Each of `users` a user of Dovecot dc (password "pw-" + name) holding
    one message (mailgen.message(first + its index, size)); the environment
    with their passwords (PW_<NAME>, as dovecot_accounts names them)."""
    env = {}
    for i, u in enumerate(users):
        dc.add_user(u, "pw-" + u)
        dc.deliver(u, mailgen.message(first + i, size=size))
        env["PW_" + u.upper()] = "pw-" + u
    return env


def dovecot_accounts(dc, users, interval_s, **extra):
    """The configuration's accounts of users on dc: implicit TLS, password in
    PW_<NAME>, polled every interval_s, webhook "hook"; `extra` keys added
    (or put instead: port=... for another server with dc's certificate)."""
    return [dict({"name": u, "host": "127.0.0.1", "port": dc.tls_port, "tls": "implicit",
                  "ca_file": dc.pki.ca, "username": u, "password_env": "PW_" + u.upper(),
                  "poll_interval": "%ds" % interval_s, "webhooks": ["hook"]}, **extra)
            for u in users]


def hook_config(rcv, accounts, **top):
    """A bridge configuration: webhook "hook" to receiver rcv (secret in
    WHSEC), `accounts`, and `top` keys."""
    return dict(top, webhooks=[{"name": "hook", "url": rcv.url, "secret_env": "WHSEC"}],
                accounts=accounts)


def account_of(ev):
    return ev.json["data"].get("account")


def run_case(dc, accounts=100, interval_s=5, slow_bytes=25 * 1000 * 1000, slow_seconds=25.0,
             new_mail_within=None, prefix="load"):
    t0 = time.monotonic()
    fig = {"accounts": accounts, "interval_s": interval_s, "slow_bytes": slow_bytes,
           "slow_seconds": slow_seconds}
    secret = bridge.new_secret()
    rcv = Receiver(secret, name="receiver-" + prefix).start()
    users = ["%s%03d" % (prefix, i) for i in range(accounts - 1)]
    env = mailbox_users(dc, users, 3000)
    first = stuffed(mailgen.message(7, size=4000))
    srv, state = slow_server(first, slow_message(slow_bytes), slow_seconds)
    srv.start()
    accts = dovecot_accounts(dc, users, interval_s, start="all")
    accts += dovecot_accounts(dc, ["slow"], interval_s, start="all", port=srv.port)
    env.update({"PW_SLOW": "slow-pw", "WHSEC": secret})
    cfg = hook_config(rcv, accts, log_level="debug")
    b = Bridge(cfg, env, name="bridge-" + prefix)
    b.start()
    code = None
    try:
        rcv.wait_events(accounts, 60, what="the first message of every account")
        harness.wait_for(lambda: state["started"] is not None, 30,
                         what="the slow message starts to trickle")
        fig["trickling_before_new_mail"] = state["ended"] is None
        time.sleep(interval_s)
        sent_at = {}
        for i, u in enumerate(users):
            dc.deliver(u, mailgen.message(5000 + i, size=3000))
            sent_at[u] = time.time()
        within = new_mail_within or interval_s + 4
        try:
            rcv.wait_events(2 * (accounts - 1) + 1, within,
                            what="the new mail of the others while the slow message trickles")
        except AssertionError:
            pass
        fig["new_mail_while_trickling"] = state["ended"] is None
        got = {}
        for ev in rcv.events():
            a = account_of(ev)
            if a in sent_at:
                got.setdefault(a, []).append(
                    os.stat(os.path.join(rcv.out, "%d.json" % ev.n)).st_mtime)
        lags = [max(ts) - sent_at[a] for a, ts in got.items() if len(ts) == 2]
        fig["new_mail_delivered"] = len(lags)
        fig["delivery_lag"] = (pct(lags, 50), pct(lags, 99), max(lags) if lags else 0.0)
        harness.wait_for(lambda: state["ended"] is not None, slow_seconds + 30,
                         what="the slow message to end")
        try:
            rcv.wait_events(2 * accounts, 30, what="the slow message's event")
        except AssertionError:
            pass
        fig["slow_events"] = sum(1 for ev in rcv.events() if account_of(ev) == "slow")
        fig["rss_mib"], fig["cpu_s"] = _proc_figures(b.proc.pid)
    finally:
        srv.stop()
        if b.running():
            code = b.stop()
        rcv.stop()
    log = b.log()
    fig["exit"] = code
    fig["database_locked"] = log.count("database is locked")
    fig["commit_failed"] = log.count("store_commit_failed")
    lags = poll_lags(log, interval_s, skip=("slow",))
    fig["polls"] = len(lags) + len(TS.findall(log)) // 2 - len(lags)
    fig["poll_lag"] = (pct(lags, 50), pct(lags, 99), max(lags) if lags else 0.0)
    fig["lagged_polls"] = len(lags)
    fig["elapsed_s"] = time.monotonic() - t0
    if fig["cpu_s"] is not None and fig["polls"]:
        fig["cpu_ms_per_poll"] = 1000.0 * fig["cpu_s"] / fig["polls"]
    return fig


def describe(fig):
    return ("%(accounts)d accounts, interval %(interval_s)ds, one slow (%(slow_bytes)d bytes over "
            "%(slow_seconds).0fs): polls %(polls)d; poll lag p50 %(pl50).3fs p99 %(pl99).3fs max "
            "%(plmax).3fs; new mail delivered %(new_mail_delivered)d, delivery lag p50 %(dl50).3fs "
            "p99 %(dl99).3fs max %(dlmax).3fs; slow events %(slow_events)d; database is locked "
            "%(database_locked)d; peak RSS %(rss)s MiB; CPU %(cpu)s ms/poll; %(elapsed_s).1fs"
            % dict(fig, pl50=fig["poll_lag"][0], pl99=fig["poll_lag"][1], plmax=fig["poll_lag"][2],
                   dl50=fig["delivery_lag"][0], dl99=fig["delivery_lag"][1],
                   dlmax=fig["delivery_lag"][2],
                   rss="%.1f" % fig["rss_mib"] if fig.get("rss_mib") else "?",
                   cpu="%.2f" % fig["cpu_ms_per_poll"] if fig.get("cpu_ms_per_poll") else "?"))
