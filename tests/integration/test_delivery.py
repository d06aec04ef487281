"""Delivery under load, end to end: `pop3bridge run` against a real Dovecot
and real receivers (build/tools/webhook-receiver), one of them slow.

- A slow receiver delays only its own webhook: each webhook has its own
  queue and limit, and the sender is shared fairly.
- An event inlines attachments only within its budget (inline_total_max);
  the others travel as URLs that work, and the event says which ones.

Timing goals live in `make bench`; the bounds here only prove behaviour.
"""

import base64
import email.message
import email.policy
import hashlib
import json
import os
import secrets
import time
import urllib.request

import harness
import dovecot
import mailgen
import bridge
from bridge import Bridge, Receiver

DC = None
ACCOUNT = "acct"


def setup_module():
    global DC
    DC = dovecot.Dovecot(name="dovecot-delivery").start()


def teardown_module():
    if DC:
        DC.stop()


def count_events(rcv):
    """Events the receiver verified so far (cheap: file names only)."""
    return sum(1 for n in os.listdir(rcv.out) if n.endswith(".json") and not n.startswith("."))


def setup_bridge(user, webhooks, api_port=None):
    """A mailbox user and a bridge routing the account to every webhook in
    `webhooks` [(name, receiver, extra)]; returns (bridge, env secrets)."""
    password = secrets.token_urlsafe(12)
    DC.add_user(user, password)
    env = {"T_POP3_PW": password}
    hooks = []
    for name, rcv, extra in webhooks:
        var = "T_WHSEC_" + name.upper()
        env[var] = rcv.secret
        h = {"name": name, "url": rcv.url, "secret_env": var, "retry_schedule": ["1s"]}
        h.update(extra)
        hooks.append(h)
    cfg = {
        "log_level": "info",
        "webhooks": hooks,
        "accounts": [{"name": ACCOUNT, "host": "127.0.0.1", "port": DC.tls_port, "tls": "implicit",
                      "ca_file": DC.pki.ca, "username": user, "password_env": "T_POP3_PW",
                      "start": "all", "poll_interval": "1h", "webhooks": [h["name"] for h in hooks]}],
    }
    if api_port:
        env["T_API_TOKEN"] = secrets.token_urlsafe(18)
        cfg["api"] = {"listen": "127.0.0.1:%d" % api_port, "public_url": "http://127.0.0.1:%d" % api_port,
                      "tokens": [{"name": "t", "token_env": "T_API_TOKEN"}]}
    return Bridge(cfg, env), env


@harness.timeout(150)
def test_slow_receiver_delays_only_its_own_webhook():
    """Two webhooks get the same 200 messages; one answers after 5 s, the
    other at once.  The fast one gets all 200 while the slow one has had
    only a few (first come, first served, it would have been paced by the
    slow one: 16 shared slots, 5 s a turn)."""
    n = 200
    slow = Receiver(bridge.new_secret(), name="slow", args=["--delay-ms", 5000]).start()
    fast = Receiver(bridge.new_secret(), name="fast").start()
    b, _ = setup_bridge("fairness", [("slow", slow, {}), ("fast", fast, {})])
    for m in mailgen.mailbox(77, n, 1500, 4000):
        DC.deliver("fairness", m)
    t0 = time.monotonic()
    b.start()
    harness.wait_for(lambda: count_events(fast) >= n, 90, interval=0.1,
                     what="%d events at the fast receiver" % n)
    took = time.monotonic() - t0
    slow_then = count_events(slow)
    print("fast receiver: %d events in %.1f s; the slow one had %d" % (n, took, slow_then))
    # the slow receiver takes 8 requests per 5 s turn: it has had a few turns at most
    if slow_then > 48:
        raise AssertionError("the slow receiver got %d events before the fast one got %d: "
                             "the fast one was paced by it" % (slow_then, n))
    ids = [e.id for e in fast.events()]
    harness.eq(len(set(ids)), n, "distinct webhook-ids at the fast receiver")
    for e in fast.events()[:5]:
        bridge.verify_signature(e, fast.secret)
    harness.eq(b.stop(), 0, "exit code after SIGTERM")
    # what the slow one did not get stays due: nothing was lost or marked done
    rows = b.query("SELECT webhook, status, count(*) FROM deliveries GROUP BY webhook, status")
    got = {(w, s): c for w, s, c in rows}
    harness.eq(got.get(("fast", 1)), n, "fast deliveries delivered")
    slow_done = got.get(("slow", 1), 0)
    harness.eq(slow_done + got.get(("slow", 0), 0) + got.get(("slow", 2), 0), n,
               "slow deliveries delivered or still due")
    harness.eq(b.query("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")[0][0], 0,
               "leases held after the stop")


def many_attachments(count, size):
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = "support@example.org"
    msg["Subject"] = "%d attachments" % count
    msg["Message-ID"] = "<many.%d@example.org>" % count
    msg.set_content("see the files\n")
    blobs = []
    for i in range(count):
        data = bytes([(i * 7 + k) % 251 for k in range(size)])
        blobs.append(data)
        msg.add_attachment(data, maintype="application", subtype="octet-stream",
                           filename="f%02d.bin" % i)
    return msg.as_bytes().replace(b"\r\n", b"\n"), blobs


@harness.timeout(90)
def test_inline_budget():
    """12 attachments of 200 KiB with inline_attachments_max 256KiB: five fit
    the default 1 MiB budget; the other seven travel as URLs that serve the
    same bytes, marked inline_limit "inline_total_max"."""
    rcv = Receiver(bridge.new_secret(), name="budget").start()
    api_port = dovecot.free_port()
    b, env = setup_bridge("budget", [("hook", rcv, {"inline_attachments_max": "256KiB"})],
                          api_port=api_port)
    data, blobs = many_attachments(12, 200 * 1024)
    DC.deliver("budget", data)
    b.start()
    ev = rcv.wait_events(1, 30)[0]
    bridge.verify_signature(ev, rcv.secret)
    atts = ev.message["attachments"]
    harness.eq(len(atts), 12, "attachments")
    inlined = [a for a in atts if "content" in a]
    harness.eq(len(inlined), 5, "attachments inlined within 1 MiB")
    if sum(a["size"] for a in inlined) > 1024 * 1024:
        raise AssertionError("more than 1 MiB inlined")
    for i, a in enumerate(atts):
        if i < 5:
            harness.eq(base64.b64decode(a["content"]), blobs[i], "inlined content %d" % i)
            continue
        harness.eq(a.get("inline_limit"), "inline_total_max", "inline_limit of attachment %d" % i)
        harness.eq(a.get("content"), None, "content of attachment %d" % i)
        req = urllib.request.Request(a["url"], headers={"Authorization": "Bearer " + env["T_API_TOKEN"]})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        harness.eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(blobs[i]).hexdigest(),
                   "bytes behind the url of attachment %d" % i)
        harness.eq(a["sha256"], hashlib.sha256(blobs[i]).hexdigest(), "sha256 of attachment %d" % i)
    if len(ev.body) > 1024 * 1024 * 4 // 3 + 64 * 1024:
        raise AssertionError("event of %d bytes" % len(ev.body))
    harness.eq(b.stop(), 0, "exit code after SIGTERM")
    json.loads(ev.body)
