#!/usr/bin/python3
"""pop3bridge load benchmark (part of `make bench`): figures, not a test.

    tests/bench/load.py [--help]

Issue 8, sections 1 and 10: 100 accounts on one bridge, one of them slow.
99 users on a throwaway Dovecot (implicit TLS, tests/lib/dovecot.py, login
and pop3 processes kept alive between sessions) and one account on a scripted
TLS server whose second message, 25 MB, trickles in over BENCH_SLOW_SECONDS;
every account polled every BENCH_LOAD_INTERVAL seconds, one webhook to
build/tools/webhook-receiver (every signature verified).  While the slow
message trickles, each of the 99 gets a new message (tests/lib/loadcase.py).

Prints (and writes to BENCH_OUT/load.md, all figures in load.json): polls,
how late polls of the 99 started (p50, p99, max; goal p99 < 2 s), the delivery
lag of their new mail (message placed -> event received), the slow account's
events, "database is locked" in the log (goal 0), the bridge's peak RSS and
CPU time per poll.  Exit 0 unless something is broken; a missed goal prints
"MISSED".

Environment (defaults in brackets):
  BENCH_LOAD_ACCOUNTS [100]     accounts, the slow one included
  BENCH_LOAD_INTERVAL [8]       poll_interval in seconds
  BENCH_SLOW_SECONDS [30]       how long the 25 MB message takes to arrive
  BENCH_OUT [tests/out/bench]   where results go
  POP3BRIDGE [build/pop3bridge] the binary under test
"""

import os
import sys

import benchlib  # tests/lib on sys.path
import dovecot
import harness
from loadcase import run_case, describe


def main():
    if "--help" in sys.argv[1:]:
        print(__doc__)
        return 0
    out = benchlib.out_dir("load")
    accounts = int(os.environ.get("BENCH_LOAD_ACCOUNTS", "100"))
    interval = int(os.environ.get("BENCH_LOAD_INTERVAL", "8"))
    slow = float(os.environ.get("BENCH_SLOW_SECONDS", "30"))
    dc = dovecot.Dovecot(name="dovecot-bench-load", login_processes="performance").start()
    try:
        fig = run_case(dc, accounts=accounts, interval_s=interval, slow_seconds=slow,
                       new_mail_within=interval + 10)
    finally:
        dc.stop()
        harness.run_cleanups()
    ok = benchlib.met
    rows = [
        "| figure | value | goal |",
        "|---|---|---|",
        "| polls of the %d fast accounts (interval %d s, %.0f s slow message) | %d | |"
        % (accounts - 1, interval, slow, fig["lagged_polls"]),
        "| poll lag p50 / p99 / max | %.3f / %.3f / %.3f s | p99 < 2 s: %s |"
        % (fig["poll_lag"] + (ok(fig["poll_lag"][1] < 2.0),)),
        "| new mail delivered while the slow one trickles | %d of %d | all: %s |"
        % (fig["new_mail_delivered"], accounts - 1,
           ok(fig["new_mail_delivered"] == accounts - 1 and fig["new_mail_while_trickling"])),
        "| delivery lag p50 / p99 / max (placed -> received) | %.3f / %.3f / %.3f s | |"
        % fig["delivery_lag"],
        "| \"database is locked\" in the log | %d | 0: %s |"
        % (fig["database_locked"], ok(fig["database_locked"] == 0)),
        "| slow account's events | %d | 2: %s |" % (fig["slow_events"], ok(fig["slow_events"] == 2)),
        "| peak RSS | %s MiB | |" % ("%.1f" % fig["rss_mib"] if fig.get("rss_mib") else "?"),
        "| CPU per poll (bridge, whole run incl. the 25 MB event) | %s ms | |"
        % ("%.2f" % fig["cpu_ms_per_poll"] if fig.get("cpu_ms_per_poll") else "?"),
    ]
    text = "## 100 accounts, one slow (issue 8, section 1)\n\n" + "\n".join(rows) + "\n"
    print(text)
    print(describe(fig))
    benchlib.write_figures(out, "load", text, fig)
    broken = fig["exit"] not in (0, None) or fig["slow_events"] != 2
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
