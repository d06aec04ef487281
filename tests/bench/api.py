#!/usr/bin/python3
"""API benchmark: GET /api/v1/deliveries (store only) with wrk, and
GET /api/v1/accounts/{a}/messages on a 500-message mailbox (POP3 UIDL+LIST
through a real Dovecot on loopback) for latency percentiles and throughput.

    tests/bench/api.py [--seconds N] [--connections N]

Prints one line per figure.  Needs wrk, Dovecot and a built tree (make all tools).
"""

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.dont_write_bytecode = True

import dovecot  # noqa: E402
import harness  # noqa: E402
import mailgen  # noqa: E402


N_MESSAGES = 500
TOKEN = "bench-" + base64.b16encode(os.urandom(12)).decode().lower()


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def wrk(port, path, seconds, conns, threads=2):
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds, "--latency",
                          "-H", "Authorization: Bearer " + TOKEN, "http://127.0.0.1:%d%s" % (port, path)],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat, int(non2xx.group(1)) if non2xx else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", default="8,32", help="wrk connection counts, comma-separated")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("api bench: wrk is not installed (make deps)")
    harness.set_run_dir(os.path.join(ROOT, "tests", "out", "bench-api-%d" % os.getpid()))
    out = harness.out_dir()
    dc = dovecot.Dovecot(name="bench").start()
    dc.add_user("bench", "bench-pw")
    for m in mailgen.mailbox(7, N_MESSAGES, 1000, 6000):
        dc.deliver("bench", m)
    rport = dovecot.free_port()
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    recv = subprocess.Popen([harness.tool("webhook-receiver"), "--port", str(rport), "--secret", secret],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    port = dovecot.free_port()
    cfg = {"state_dir": os.path.join(out, "state"), "log_level": "warn",
           "api": {"listen": "127.0.0.1:%d" % port, "tokens": [{"name": "b", "token_env": "BENCH_TOKEN"}]},
           "webhooks": [{"name": "w", "url": "http://127.0.0.1:%d/" % rport, "secret_env": "BENCH_SECRET"}],
           "accounts": [{"name": "bench", "host": "127.0.0.1", "port": dc.port, "tls": "none",
                         "allow_plaintext": True, "username": "bench", "password_env": "BENCH_PW",
                         "start": "all", "poll_interval": "1h", "webhooks": ["w"]}]}
    path = os.path.join(out, "bench.json")
    harness.write_config(path, cfg)   # 0600: the bridge refuses one others can read
    env = dict(os.environ, BENCH_TOKEN=TOKEN, BENCH_SECRET=secret, BENCH_PW="bench-pw")
    bridge = subprocess.Popen([harness.binary(), "run", "--config", path], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "bridge.log"), "wb"),
                              start_new_session=True)
    try:
        def delivered():
            st, body = get(port, "/api/v1/deliveries?status=delivered&limit=1000")
            return st == 200 and len(json.loads(body)["deliveries"]) == N_MESSAGES
        harness.wait_for(lambda: bridge.poll() is None and _up(port) and delivered(), 120, interval=0.5,
                         what="%d deliveries" % N_MESSAGES)

        for conns in [int(c) for c in args.connections.split(",")]:
            rps, lat, bad = wrk(port, "/api/v1/deliveries", args.seconds, conns)
            print("GET /api/v1/deliveries (50 per page): %.0f req/s, p50 %s, p99 %s, non-2xx %d "
                  "(wrk -t2 -c%d -d%ds)" % (rps, lat.get("50"), lat.get("99"), bad, conns, args.seconds))

        times = []
        for _ in range(60):
            t0 = time.perf_counter()
            st, body = get(port, "/api/v1/accounts/bench/messages")
            times.append(time.perf_counter() - t0)
            assert st == 200 and len(json.loads(body)["messages"]) == N_MESSAGES
        times.sort()
        pct = lambda p: times[min(len(times) - 1, int(round(p / 100.0 * (len(times) - 1))))] * 1000  # noqa: E731
        print("GET /api/v1/accounts/{a}/messages, %d messages, sequential: p50 %.1f ms, p99 %.1f ms"
              % (N_MESSAGES, pct(50), pct(99)))
        rps, lat, bad = wrk(port, "/api/v1/accounts/bench/messages", min(args.seconds, 5), 4)
        print("GET /api/v1/accounts/{a}/messages, %d messages: %.0f req/s, p50 %s, p99 %s, non-2xx %d "
              "(wrk -t2 -c4)" % (N_MESSAGES, rps, lat.get("50"), lat.get("99"), bad))
    finally:
        for p in (bridge, recv):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        dc.stop()
        shutil.rmtree(harness.run_dir(), ignore_errors=True)


def _up(port):
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
