#!/usr/bin/python3
"""pop3bridge many-accounts benchmark (part of `make bench`): figures, not a test.

    tests/bench/accounts.py [--help]

Issue 8, section 10 (1,000 accounts on one instance) and issue 10, section 4
(the same on PostgreSQL, with one and with several instances).
BENCH_ACCOUNTS users on a throwaway Dovecot (implicit TLS, tests/lib/dovecot.py,
long-lived login and pop3 processes; by default one login process, so the TLS
tickets it hands out are accepted on the next connection, as with any server
whose ticket keys are shared), each holding one message; one bridge
(or BENCH_ACCOUNTS_INSTANCES bridges sharing a PostgreSQL store) polls every
account every BENCH_ACCOUNTS_INTERVAL seconds for BENCH_ACCOUNTS_SECONDS, with
the default configuration otherwise (start "new", log level info, one webhook
to build/tools/webhook-receiver).

Prints (and writes to BENCH_OUT/accounts-<store>-<instances>.md, all figures
in the .json next to it):
  polls; whether every account was polled every interval (an account with
  fewer polls than 1 + (run end - its first poll - 2 s) / interval misses);
  poll lag p50/p99/max (a poll's start minus the previous poll's end plus the
  interval, from the poll_done lines; goal p99 < 2 s); the bridges' CPU time
  (user + sys from /proc/PID/stat) per poll, over the whole run and in the
  steady state after every account's first poll (goal <= 1.5 ms); peak RSS
  (VmHWM, the largest instance; goal <= 256 MiB); with PostgreSQL the
  database's CPU time (every postgres process, exited backends included) per
  poll and its size, with SQLite the state directory's size.
Exit 0 unless something is broken; a missed goal prints "MISSED".

Environment (defaults in brackets):
  BENCH_ACCOUNTS [1000]              accounts (Dovecot users)
  BENCH_ACCOUNTS_INTERVAL [60]       poll_interval in seconds
  BENCH_ACCOUNTS_SECONDS [130]       how long the bridges run
  BENCH_ACCOUNTS_STORE [sqlite]      sqlite or pg (tests/lib/postgres.py)
  BENCH_ACCOUNTS_INSTANCES [1]       bridges on one store (more than 1: pg only)
  BENCH_ACCOUNTS_LOGIN [single]      Dovecot's login processes: single, performance
                                     (two: half the TLS tickets meet the other one's
                                     keys) or secure (one per connection: none resume)
  BENCH_ACCOUNTS_PASSDB [plain]      Dovecot's passdb: plain ({PLAIN} passwords: Dovecot
                                     makes a new SCRAM salt at every login, so each poll
                                     pays the full PBKDF2 of SCRAM-SHA-256) or scram
                                     (stored SCRAM-SHA-256 credentials, as a server set up
                                     for SCRAM keeps them: a fixed salt per user, so the
                                     bridge's salted-password cache is used); the
                                     figures of make bench are plain's
  BENCH_OUT [tests/out/bench]        where results go
  POP3BRIDGE [build/pop3bridge]      the binary under test
"""

import os
import re
import sys
import time

import benchlib  # tests/lib on sys.path
import bridge
import dovecot
import harness
from bridge import Bridge, Receiver
from loadcase import dovecot_accounts, hook_config, mailbox_users, pct, _ts

GOAL_LAG_S = 2.0
GOAL_CPU_MS = 1.5
GOAL_RSS_MIB = 256
SETTLE_SLACK_S = 2.0        # an account's poll may start this late and still count
FIRST_ROUND_LIMIT_S = 120   # every account polled once within this, else the run is broken
DONE = re.compile(r"^ts=(\S+)Z level=\S+ event=poll_done account=(\S+) .* ms=(\d+)", re.M)


def env_int(name, default, low=1):
    v = int(os.environ.get(name, str(default)))
    if v < low:
        raise SystemExit("%s must be at least %d" % (name, low))
    return v


def clk():
    return float(os.sysconf("SC_CLK_TCK"))


def proc_cpu(pid, children=False):
    """user + sys seconds of pid (and of its waited-for children), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    t = int(parts[11]) + int(parts[12])
    if children:
        t += int(parts[13]) + int(parts[14])
    return t / clk()


def proc_hwm_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def group_cpu(pgid):
    """CPU seconds of every process in process group pgid, exited children included."""
    total = 0.0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(parts[2]) == pgid:   # field 5: pgrp
            total += sum(int(x) for x in parts[11:15]) / clk()
    return total


def dir_size(path):
    total = 0
    for base, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(base, f))
            except OSError:
                pass
    return total


def polls_of(bridges):
    """[(start, end, account)] from every bridge's poll_done lines, by start."""
    out = []
    for b in bridges:
        for ts, acct, ms in DONE.findall(b.log()):
            end = _ts(ts)
            out.append((end - int(ms) / 1000.0, end, acct))
    out.sort()
    return out


def analyse(polls, accounts, interval, run_end):
    by = {}
    for start, end, acct in polls:
        by.setdefault(acct, []).append((start, end))
    lags, missed = [], []
    for acct in accounts:
        ps = by.get(acct, [])
        for (s0, e0), (s1, _e1) in zip(ps, ps[1:]):
            lags.append(s1 - (e0 + interval))
        want = 1 + int(max(0.0, run_end - ps[0][0] - SETTLE_SLACK_S) // interval) if ps else 1
        if len(ps) < want:
            missed.append(acct)
    return lags, missed


def main():
    if "--help" in sys.argv[1:]:
        print(__doc__)
        return 0
    n = env_int("BENCH_ACCOUNTS", 1000)
    interval = env_int("BENCH_ACCOUNTS_INTERVAL", 60)
    seconds = env_int("BENCH_ACCOUNTS_SECONDS", 130)
    store = os.environ.get("BENCH_ACCOUNTS_STORE", "sqlite")
    instances = env_int("BENCH_ACCOUNTS_INSTANCES", 1)
    if store not in ("sqlite", "pg"):
        raise SystemExit("BENCH_ACCOUNTS_STORE must be sqlite or pg")
    if store == "sqlite" and instances != 1:
        raise SystemExit("several instances share a PostgreSQL store: BENCH_ACCOUNTS_STORE=pg")
    tag = "accounts-%s-%d" % (store, instances)
    passdb = os.environ.get("BENCH_ACCOUNTS_PASSDB", "plain")
    if passdb not in ("plain", "scram"):
        raise SystemExit("BENCH_ACCOUNTS_PASSDB must be plain or scram")
    if passdb != "plain":
        tag += "-" + passdb
    out = benchlib.out_dir(tag)
    login = os.environ.get("BENCH_ACCOUNTS_LOGIN", "single")
    if login not in ("single", "performance", "secure"):
        raise SystemExit("BENCH_ACCOUNTS_LOGIN must be single, performance or secure")
    fig = {"accounts": n, "interval_s": interval, "seconds": seconds, "store": store,
           "instances": instances, "binary": harness.binary(), "dovecot_login": login,
           "dovecot_passdb": passdb}
    pg = None
    dc = dovecot.Dovecot(name="dovecot-bench-accounts", login_processes=login,
                         passdb_scheme="SCRAM-SHA-256" if passdb == "scram" else "PLAIN").start()
    bridges, rcv = [], None
    try:
        if store == "pg":
            import postgres
            if not postgres.available():
                raise SystemExit("PostgreSQL 15 is not installed: make deps")
            pg = postgres.Postgres().start()
        secret = bridge.new_secret()
        rcv = Receiver(secret, name="receiver-accounts").start()
        users = ["acct%04d" % i for i in range(n)]
        env = dict(mailbox_users(dc, users, 2000), WHSEC=secret)
        cfg = hook_config(rcv, dovecot_accounts(dc, users, interval))
        if pg:
            env["PG_PW"] = pg.password
            cfg["store"] = {"url": pg.url, "password_env": "PG_PW"}
        for k in range(instances):
            bridges.append(Bridge(cfg, env, name="bridge-accounts-%d" % k))
        pg_cpu0 = group_cpu(pg.proc.pid) if pg else None
        t0 = time.time()
        for b in bridges:
            b.start()
        # the steady state starts once every account was polled once
        first_round = None
        deadline = t0 + seconds
        cpu_mark = None
        while time.time() < deadline:
            if any(not b.running() for b in bridges):
                raise AssertionError("a bridge exited during the run; see %s" % bridges[0].dir)
            if first_round is None:
                done = {a for _s, _e, a in polls_of(bridges)}
                if len(done) >= n:
                    first_round = time.time()
                    cpu_mark = ([proc_cpu(b.proc.pid) for b in bridges], len(polls_of(bridges)))
                elif time.time() - t0 > FIRST_ROUND_LIMIT_S:
                    raise AssertionError("only %d of %d accounts polled within %d s"
                                         % (len(done), n, FIRST_ROUND_LIMIT_S))
            time.sleep(min(1.0, max(0.0, deadline - time.time())))
        run_end = time.time()
        cpu = [proc_cpu(b.proc.pid) for b in bridges]
        fig["rss_mib"] = max(proc_hwm_mib(b.proc.pid) or 0.0 for b in bridges)
        if pg:
            fig["db_cpu_s"] = group_cpu(pg.proc.pid) - pg_cpu0
            fig["db_bytes"] = int(pg.sql("SELECT pg_database_size('%s')" % "pop3bridge")[0][0])
        polls = polls_of(bridges)
        fig["polls"] = len(polls)
        fig["cpu_s"] = sum(cpu)
        fig["cpu_ms_per_poll"] = 1000.0 * fig["cpu_s"] / max(1, len(polls))
        if cpu_mark:
            later = len(polls) - cpu_mark[1]
            fig["steady_polls"] = later
            fig["first_round_s"] = first_round - t0
            if later > 0:
                fig["steady_cpu_ms_per_poll"] = 1000.0 * (sum(cpu) - sum(cpu_mark[0])) / later
        lags, missed = analyse(polls, users, interval, run_end)
        fig["poll_lag"] = (pct(lags, 50), pct(lags, 99), max(lags) if lags else 0.0)
        fig["lagged_polls"] = len(lags)
        fig["missed_accounts"] = len(missed)
        fig["missed_examples"] = missed[:5]
        fig["failed_polls"] = sum(b.log().count("event=poll_failed") for b in bridges)
        fig["load_average"] = os.getloadavg()
        if not pg:
            fig["db_bytes"] = dir_size(bridges[0].state_dir)
    finally:
        codes = [b.stop() if b.running() else None for b in bridges]
        fig["exit"] = codes
        if rcv:
            rcv.stop()
        if pg:
            pg.stop()
        dc.stop()
        harness.run_cleanups()
    ok = benchlib.met
    steady = fig.get("steady_cpu_ms_per_poll")
    rows = [
        "| figure | value | goal |",
        "|---|---|---|",
        "| polls (%d accounts, interval %d s, %d s run, %s, %d instance%s, Dovecot login %s, "
        "passdb %s) | %d | |"
        % (n, interval, seconds, store, instances, "" if instances == 1 else "s", login,
           "stored SCRAM-SHA-256 (salt fixed)" if passdb == "scram"
           else "{PLAIN} (new SCRAM salt each login)", fig["polls"]),
        "| accounts not polled every interval | %d | 0: %s |"
        % (fig["missed_accounts"], ok(fig["missed_accounts"] == 0)),
        "| failed polls | %d | 0: %s |" % (fig["failed_polls"], ok(fig["failed_polls"] == 0)),
        "| poll lag p50 / p99 / max (%d polls) | %.3f / %.3f / %.3f s | p99 < %g s: %s |"
        % ((fig["lagged_polls"],) + tuple(fig["poll_lag"])
           + (GOAL_LAG_S, ok(fig["poll_lag"][1] < GOAL_LAG_S))),
        "| bridge CPU per poll, steady state (after %.1f s first round) | %s ms | <= %g ms: %s |"
        % (fig.get("first_round_s", 0.0), "%.3f" % steady if steady else "?", GOAL_CPU_MS,
           ok(steady is not None and steady <= GOAL_CPU_MS)),
        "| bridge CPU per poll, whole run (%.2f s CPU) | %.3f ms | |"
        % (fig["cpu_s"], fig["cpu_ms_per_poll"]),
        "| peak RSS (largest instance) | %.1f MiB | <= %d MiB: %s |"
        % (fig["rss_mib"], GOAL_RSS_MIB, ok(fig["rss_mib"] <= GOAL_RSS_MIB)),
    ]
    if pg:
        rows.append("| PostgreSQL CPU (whole run) | %.2f s, %.3f ms per poll | |"
                    % (fig["db_cpu_s"], 1000.0 * fig["db_cpu_s"] / max(1, fig["polls"])))
        rows.append("| PostgreSQL database size | %.1f MiB | |" % (fig["db_bytes"] / 1048576.0))
    else:
        rows.append("| SQLite state directory size | %.1f MiB | |" % (fig["db_bytes"] / 1048576.0))
    rows.append("| load average (1/5/15 min) at the end | %.2f / %.2f / %.2f | |"
                % tuple(fig["load_average"]))
    text = ("## %d accounts on %d instance%s, %s store%s (issue 8 section 10, issue 10 section 4)\n\n"
            % (n, instances, "" if instances == 1 else "s", store,
               ", stored SCRAM credentials" if passdb == "scram" else "")) + "\n".join(rows) + "\n"
    print(text)
    benchlib.write_figures(out, tag, text, fig)
    broken = any(c not in (0, None) for c in fig["exit"])
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
