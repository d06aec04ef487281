#!/usr/bin/env python3
"""tests/bench/pg_e2e.py — the end-to-end case of tests/bench/run (part 2) on
PostgreSQL beside SQLite (issue 10, section 4): one mailbox of 2,000 small
messages, `pop3bridge run --once` with one account and one webhook, from its
start to its exit (every message fetched, stored, signed and POSTed with a
2xx answer, each event checked by the receiver).

Paired runs: each round runs the bridge on a fresh SQLite state_dir (in
/dev/shm) and then on a fresh PostgreSQL database (a throwaway PostgreSQL 15
on a Unix socket, tests/lib/postgres.py), after one warm-up run of each.
Neither flushes to disk: SQLite's state_dir is on tmpfs, and the throwaway
PostgreSQL runs with fsync=off as the tests start it.  Prints a table (the
bridge's wall and CPU time; PostgreSQL's server CPU is not in the bridge's)
and the ratio of the medians, PostgreSQL / SQLite, against the goal
(<= PG_E2E_GOAL, 1.5); also the median of the per-round ratios.  Writes
BENCH_OUT/pg_e2e.md and pg_e2e.json.  Exit 0 unless something is broken (a
wrong count, a run failing or hitting its time limit); a missed goal prints
"MISSED".

Environment (defaults in brackets):
  PG_E2E_RUNS [5]               paired rounds
  BENCH_MESSAGES [2000]         messages in the mailbox
  BENCH_SEED [42]               mailgen seed
  BENCH_OUT [tests/out/bench]   where results go
  POP3BRIDGE [build/pop3bridge] the binary under test
"""

import importlib.machinery
import importlib.util
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True

# tests/bench/run's machinery (Dovecot, receiver, verified runs)
_loader = importlib.machinery.SourceFileLoader("bench_run", os.path.join(HERE, "run"))
_spec = importlib.util.spec_from_loader("bench_run", _loader)
run = importlib.util.module_from_spec(_spec)
_loader.exec_module(run)

import harness  # noqa: E402  (on the path run set)
import postgres  # noqa: E402


GOAL = 1.5            # PostgreSQL / SQLite, end to end (issue 10, section 4)
PATH = "end to end, SQLite vs PostgreSQL"


class PgBench(run.Bench):
    def __init__(self):
        super().__init__()
        self.pg = None
        self.dbs = 0

    def bridge_config(self, user, port, hook_port, store=None):
        path = super().bridge_config(user, port, hook_port)
        if store is None:
            return path
        with open(path) as f:
            cfg = json.load(f)
        cfg["store"] = store
        harness.write_config(path, cfg, indent=1)   # 0600: the bridge refuses one others can read
        return path

    def command(self, tool, port):
        if tool != "bridge-pg":
            return super().command(tool, port)
        self.dbs += 1
        db = "e2e_%d" % self.dbs            # a fresh database each run
        url = self.pg.create_db(db)
        hook_port = self.start_receiver()
        store = {"url": url, "password_env": "P3B_PG_PASSWORD", "pool": 8}
        return [self.bin, "run", "--config",
                self.bridge_config(self.user_of(tool), port, hook_port, store), "--once"]


def main():
    t_start = time.monotonic()
    rounds = run.env_int("PG_E2E_RUNS", 5, 1, 100)
    b = PgBench()
    b.start_server()
    b.pg = postgres.Postgres().start()
    harness.register_cleanup(b.pg.stop)
    os.environ["P3B_PG_PASSWORD"] = b.pg.password   # run_one passes the environment on
    run.say("PostgreSQL 15 on a Unix socket (fsync=off); %d paired rounds" % rounds)
    b.measure(PATH, b.dc.tls_port, rounds, ("bridge", "bridge-pg"))
    b.dc.stop(keep_log_in=b.out)
    sq, pg = b.results[0], b.results[1]
    ratio = statistics.median(pg["times"]) / statistics.median(sq["times"])
    paired = statistics.median(p / s for p, s in zip(pg["times"], sq["times"]))
    lines = ["## pop3bridge end to end, SQLite vs PostgreSQL, %s" % time.strftime("%Y-%m-%d %H:%M:%S %z"),
             "", "%d messages, %.1f MB; %d paired rounds after a warm-up; %d CPUs." % (
                 b.meta["messages"], b.meta["bytes"] / 1e6, rounds, os.cpu_count()), "",
             "| store | median s | min-max s | msgs/s | bridge CPU s | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in (("SQLite", sq), ("PostgreSQL", pg)):
        t = r["times"]
        lines.append("| %s | %.3f | %.3f-%.3f | %.0f | %.3f | %.1f |" % (
            name, statistics.median(t), min(t), max(t), r["messages"] / statistics.median(t),
            statistics.median(r["cpu"]), max(r["rss_kib"]) / 1024.0))
    lines += ["", "| target | measured | goal | |", "|---|---:|---:|---|",
              "| PostgreSQL / SQLite, medians | %.2f | <= %s | %s |" % (
                  ratio, GOAL, "met" if ratio <= GOAL else "MISSED"),
              "| PostgreSQL / SQLite, median of the rounds' ratios | %.2f | - | |" % paired]
    text = "\n".join(lines) + "\n\nTotal %.0f s.\n" % (time.monotonic() - t_start)
    with open(os.path.join(b.out, "pg_e2e.md"), "w") as f:
        f.write(text)
    with open(os.path.join(b.out, "pg_e2e.json"), "w") as f:
        json.dump({"meta": b.meta, "results": b.results, "ratio": ratio, "paired": paired}, f,
                  indent=1)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(__doc__.strip())
        sys.exit(0 if sys.argv[1] in ("-h", "--help") else 2)
    try:
        code = main()
    except run.Broken as exc:
        print("bench: BROKEN: %s" % exc, file=sys.stderr, flush=True)
        code = 1
    except KeyboardInterrupt:
        code = 130
    harness.run_cleanups()
    sys.exit(code)
