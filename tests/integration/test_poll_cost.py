"""What a poll that finds nothing new costs the bridge (issue 8, section 10).

A real Dovecot (implicit TLS, one long-lived login process) and a bridge
polling ACCOUNTS accounts every second (so DAEMON_POLL_WORKERS poll
workers), each mailbox holding one message already known: the bridge's
threads together switch out (voluntary context switches, from
/proc/PID/task/*/status) at most MAX_SWITCHES_PER_POLL times per poll.
A poll itself waits on its server about a dozen times (TCP connect, TLS,
greeting, CAPA, three SCRAM steps, CAPA, the listing, QUIT).

Before: every idle worker woke at the end of every poll (a broadcast) and
at each account's due time, only to find nothing for it, and the main
thread woke every 50 ms: about 35 switches per poll with 16 workers (10
after).

The same polls make at most MAX_READS_PER_POLL read-type system calls
(/proc/PID/io syscr: every read() of a socket or file, SQLite's included).
Before: a TLS connection was read until the socket said EAGAIN after every
reply, and asked once more right after each request, before the answer
could have come back: about 21 per poll (9 after).

And at most MAX_WRITES_PER_POLL write-type ones (syscw: the TLS records
sent, the poll_done log line).  Before: QUIT (said without awaiting its
answer when nothing was deleted) and the TLS close_notify went out in two
writes: 10.0 per poll (9.0 after, net_finish).
"""

import os
import re
import time

import bridge
import dovecot
import mailgen
from bridge import Bridge, Receiver

ACCOUNTS = 16
WINDOW_S = 6.0
MAX_SWITCHES_PER_POLL = 20
MAX_READS_PER_POLL = 13
MAX_WRITES_PER_POLL = 9.5


def switches(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                m = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", f.read(), re.M)
        except OSError:
            continue
        total += int(m.group(1)) if m else 0
    return total


def io_counts(pid):
    """(read-type, write-type) system calls of the whole process, from /proc/PID/io."""
    with open("/proc/%d/io" % pid) as f:
        v = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    return int(v["syscr"]), int(v["syscw"])


def test_idle_polls_do_not_wake_every_worker():
    dc = dovecot.Dovecot(name="dovecot-cost", login_processes="single").start()
    secret = bridge.new_secret()
    rcv = Receiver(secret, name="receiver-cost").start()
    env = {"T_WHSEC": secret}
    accts = []
    for i in range(ACCOUNTS):
        u = "cost-%02d" % i
        dc.add_user(u, "pw-" + u)
        dc.deliver(u, mailgen.message(400 + i, size=1000))
        env["T_PW_%d" % i] = "pw-" + u
        accts.append({"name": u, "host": "127.0.0.1", "port": dc.tls_port, "tls": "implicit",
                      "ca_file": dc.pki.ca, "username": u, "password_env": "T_PW_%d" % i,
                      "poll_interval": "1s", "webhooks": ["hook"]})
    cfg = {"log_level": "info", "accounts": accts,
           "webhooks": [{"name": "hook", "url": rcv.url, "secret_env": "T_WHSEC"}]}
    b = Bridge(cfg, env, name="bridge-cost")
    b.start()
    try:
        # every account's first poll (start "new": nothing delivered) and one more
        b.wait_log(r"event=poll_done", 30, count=2 * ACCOUNTS)
        polls0 = len(re.findall(r"event=poll_done", b.log()))
        sw0 = switches(b.proc.pid)
        io0 = io_counts(b.proc.pid)
        time.sleep(WINDOW_S)
        sw1 = switches(b.proc.pid)
        io1 = io_counts(b.proc.pid)
        polls1 = len(re.findall(r"event=poll_done", b.log()))
    finally:
        code = bridge.stop_all(b, rcv, dc)
    b.assert_polled_cleanly(code)
    polls = polls1 - polls0
    assert polls >= ACCOUNTS, (polls, "polls in %g s" % WINDOW_S)
    per_poll = (sw1 - sw0) / float(polls)
    assert per_poll <= MAX_SWITCHES_PER_POLL, \
        "%.1f voluntary context switches per poll (%d polls)" % (per_poll, polls)
    reads, writes = ((io1[i] - io0[i]) / float(polls) for i in (0, 1))
    print("per poll: %.1f switches, %.1f read and %.1f write system calls" %
          (per_poll, reads, writes))
    assert reads <= MAX_READS_PER_POLL, \
        "%.1f read system calls per poll (%d polls)" % (reads, polls)
    assert writes <= MAX_WRITES_PER_POLL, \
        "%.1f write system calls per poll (%d polls)" % (writes, polls)
