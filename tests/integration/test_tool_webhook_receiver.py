"""The test tool tests/tools/webhook-receiver (build/tools/webhook-receiver):
the receiver the other integration tests and `make demo` rely on.  If it
accepted a bad signature, or failed when told to differently than asked, a
bridge test using it would prove nothing.

Requests are signed here in Python (hmac, Standard Webhooks: HMAC-SHA256 over
"{id}.{timestamp}.{body}", "v1,<base64>"), independently of the bridge's own
signer; the signer is checked first against the published test vector.
"""

import base64
import hashlib
import hmac
import http.client
import os
import select
import subprocess
import time

import harness
from bridge import Receiver

TIMEOUT = 30

# The Standard Webhooks published test vector.
VEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VEC_TS = 1614265330
VEC_BODY = b'{"test": 2432232314}'
VEC_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

EVENT_ID = "msg_5386ace5417989c2b8f74a0438bf1a18"
EVENT = (b'{"type":"message.received","data":{"account":"support","message":{"subject":"Hello there",'
         b'"from":{"name":"Ann","address":"ann@example.org"}}}}')
OTHER_SECRET = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"


def sign(secret, wid, ts, body):
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, b"%s.%d.%s" % (wid.encode(), ts, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def post(port, body, secret=None, wid=EVENT_ID, ts=None, signature=None, method="POST", headers=None):
    """One request; (status, headers with lower-case names, body)."""
    ts = int(time.time()) if ts is None else ts
    h = {"Content-Type": "application/json", "webhook-id": wid, "webhook-timestamp": str(ts)}
    if signature is not None:
        h["webhook-signature"] = signature
    elif secret is not None:
        h["webhook-signature"] = sign(secret, wid, ts, body)
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, "/hooks/mail", body=body, headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def read_line(proc, timeout=10):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode() if ready else ""


def files(d):
    return sorted(n for n in os.listdir(d) if not n.startswith("."))


def test_the_python_signer_reproduces_the_published_vector():
    harness.eq(sign(VEC_SECRET, VEC_ID, VEC_TS, VEC_BODY), VEC_SIG, "signature of the test vector")


def test_verified_event_is_saved_and_printed():
    rc = Receiver(VEC_SECRET, args=["--print"]).start()
    status, _, _ = post(rc.port, EVENT, VEC_SECRET)
    harness.eq(status, 200, "a correctly signed event")
    harness.eq(read_line(rc.proc).rstrip("\n"),
               '%s type=message.received account=support from="Ann <ann@example.org>" subject="Hello there"'
               % EVENT_ID, "the --print line")
    # another secret: refused, and nothing is written or printed
    status, _, _ = post(rc.port, EVENT, OTHER_SECRET)
    harness.eq(status, 401, "signed with another secret")
    harness.eq(rc.stop(), 0, "exit status after SIGTERM")
    harness.eq(files(rc.out), ["1.headers", "1.json"], "files written")
    with open(os.path.join(rc.out, "1.json"), "rb") as f:
        harness.eq(f.read(), EVENT, "the saved body, byte for byte")
    [ev] = rc.events()
    harness.eq((ev.id, ev.headers.get("webhook-signature", "")[:3]), (EVENT_ID, "v1,"), "saved headers")
    assert VEC_SECRET[6:] not in rc.log(), "the secret reached the log"
    assert "401" in rc.log(), rc.log()


def test_bad_signatures_are_refused():
    rc = Receiver(VEC_SECRET).start()
    now = int(time.time())
    cases = [
        ("no signature", dict(signature="")),
        ("signature over another body", dict(signature=sign(VEC_SECRET, EVENT_ID, now, b"{}"), ts=now)),
        ("signature for another id", dict(signature=sign(VEC_SECRET, "msg_other", now, EVENT), ts=now)),
        ("the published vector, 2021's timestamp", dict(signature=VEC_SIG, wid=VEC_ID, ts=VEC_TS)),
        ("timestamp 10 minutes ahead", dict(secret=VEC_SECRET, ts=now + 600)),
        ("timestamp 10 minutes old", dict(secret=VEC_SECRET, ts=now - 600)),
        ("not base64", dict(signature="v1,!!!!", ts=now)),
    ]
    for what, kw in cases:
        body = VEC_BODY if kw.get("wid") == VEC_ID else EVENT
        status, _, _ = post(rc.port, body, **kw)
        harness.eq(status, 401, what)
    # several signatures, one of them right (a key rotation): accepted
    good = sign(VEC_SECRET, EVENT_ID, now, EVENT)
    status, _, _ = post(rc.port, EVENT, signature="v1,AAAA " + sign(OTHER_SECRET, EVENT_ID, now, EVENT)
                        + " " + good, ts=now)
    harness.eq(status, 200, "several signatures, the last one right")
    # only POST
    status, headers, _ = post(rc.port, None, method="GET")
    harness.eq((status, headers.get("allow")), (405, "POST"), "GET")
    harness.eq(rc.stop(), 0, "exit status")
    harness.eq(len(rc.events()), 1, "events saved")


def test_failing_on_purpose():
    rc = Receiver(VEC_SECRET, args=["--fail", "2", "--fail-status", "503", "--retry-after", "9"]).start()
    status, headers, _ = post(rc.port, b"{}", VEC_SECRET)
    harness.eq((status, headers.get("retry-after")), (503, "9"), "first request")
    status, _, _ = post(rc.port, b"{}", VEC_SECRET)
    harness.eq(status, 503, "second request")
    status, headers, _ = post(rc.port, b"{}", VEC_SECRET)
    harness.eq((status, headers.get("retry-after")), (200, None), "third request")
    harness.eq(rc.stop(), 0, "exit status")
    harness.eq(len(rc.events()), 1, "events saved")

    rc = Receiver("", args=["--gone"], name="gone").start()
    status, _, _ = post(rc.port, b"{}")
    harness.eq(status, 410, "--gone")
    harness.eq(rc.stop(), 0, "exit status")
    harness.eq(rc.events(), [], "events saved by --gone")


def test_body_limit():
    rc = Receiver("", args=["--max-body", "100"], name="capped").start()
    status, _, _ = post(rc.port, b"a" * 101)
    harness.eq(status, 413, "101 bytes over --max-body 100")
    status, _, _ = post(rc.port, b"{" + b" " * 98 + b"}")
    harness.eq(status, 200, "exactly 100 bytes")
    harness.eq(rc.stop(), 0, "exit status")
    harness.eq([len(e.body) for e in rc.events()], [100], "saved bodies")


def test_bad_arguments_are_refused():
    exe = harness.tool("webhook-receiver")
    for args, pattern in [(["--port", "70000"], "--port wants an integer"),
                          (["--secret", "whsec_short"], ""),
                          (["--out", "/nonexistent/dir"], "not a directory"),
                          (["--max-body", "2GiB"], "over 1GiB"),
                          (["--bogus"], "usage")]:
        p = subprocess.run([exe] + args, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        harness.eq(p.returncode, 2, "exit status of %s" % args)
        err = p.stderr.decode()
        assert err.startswith(("webhook-receiver: ", "usage: ")) and pattern in err, (args, err)
