"""Signed links: the raw_url and attachment urls of an event work without an
API token while valid, and are refused (403, problem+json saying why) once
altered, expired or revoked by POST /api/v1/links/rotate.

`pop3bridge run` against a real Dovecot and a real receiver
(build/tools/webhook-receiver); every answer is validated against
openapi.yaml.  The signature is also recomputed here from the key the store
holds (sqlite3, read-only), which proves the documented format and lets the
test make an expired link without waiting for links_ttl.
"""

import email.message
import email.policy
import hashlib
import hmac
import http.client
import json
import os
import secrets
import time
import urllib.parse

import bridge
import dovecot
import harness
import openapi
from bridge import Bridge, Receiver

DC = None
SPEC = openapi.Spec(os.path.join(harness.ROOT, "openapi.yaml"))


def setup_module():
    global DC
    DC = dovecot.Dovecot(name="dovecot-links").start()


def teardown_module():
    if DC:
        DC.stop()


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(port, method, target, token=None):
    """One request; the answer is checked against openapi.yaml."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        c.request(method, target, headers={"Authorization": "Bearer " + token} if token else {})
        r = c.getresponse()
        a = Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        c.close()
    path = urllib.parse.urlsplit(target).path
    problems = [] if method == "HEAD" else SPEC.check(method, path, a.status,
                                                     a.headers.get("content-type", ""), a.body)
    if problems:
        raise AssertionError("%s %s: %s" % (method, target, "; ".join(problems[:5])))
    return a


def local(url):
    """The path and query of a URL under api.public_url."""
    u = urllib.parse.urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


def sign(key, path, exp):
    msg = b"pop3bridge-link-v1\n" + path.encode() + b"\n" + str(exp).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def refused(a, fragment, what):
    harness.eq(a.status, 403, what + ": status")
    harness.eq(a.headers.get("content-type", "").split(";")[0], "application/problem+json",
               what + ": content type")
    if fragment not in a.json().get("detail", ""):
        raise AssertionError("%s: detail %r does not say %r" % (what, a.json().get("detail"), fragment))


@harness.timeout(60)
def test_signed_links_work_without_token_until_altered_expired_or_rotated():
    password = secrets.token_urlsafe(12)
    DC.add_user("links", password)
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = "support@example.org"
    msg["Subject"] = "signed links"
    msg["Message-ID"] = "<links.1@example.org>"
    msg.set_content("see the file\n")
    blob = os.urandom(5000)
    msg.add_attachment(blob, maintype="application", subtype="octet-stream", filename="f.bin")
    DC.deliver("links", msg.as_bytes().replace(b"\r\n", b"\n"))
    rcv = Receiver(bridge.new_secret(), name="links-rcv").start()
    port = dovecot.free_port()
    env = {"T_POP3_PW": password, "T_WHSEC": rcv.secret, "T_API_TOKEN": secrets.token_urlsafe(18)}
    token = env["T_API_TOKEN"]
    cfg = {
        "links_ttl": "2h",
        "api": {"listen": "127.0.0.1:%d" % port, "public_url": "http://127.0.0.1:%d" % port,
                "tokens": [{"name": "t", "token_env": "T_API_TOKEN"}]},
        "webhooks": [{"name": "w", "url": rcv.url, "secret_env": "T_WHSEC",
                      "inline_attachments_max": 0}],
        "accounts": [{"name": "acct", "host": "127.0.0.1", "port": DC.tls_port, "tls": "implicit",
                      "ca_file": DC.pki.ca, "username": "links", "password_env": "T_POP3_PW",
                      "start": "all", "poll_interval": "1h", "webhooks": ["w"]}],
    }
    b = Bridge(cfg, env).start()
    m = rcv.wait_events(1, 30)[0].message
    harness.wait_for(lambda: _up(port), 10, what="the API listening")
    raw, att = local(m["raw_url"]), local(m["attachments"][0]["url"])
    now = time.time()
    exp = int(urllib.parse.parse_qs(urllib.parse.urlsplit(raw).query)["exp"][0])
    if not now + 7200 - 120 <= exp <= now + 7200 + 5:
        raise AssertionError("exp %d is not now + links_ttl (2h)" % exp)

    # valid: no token needed, GET and HEAD
    a = call(port, "GET", raw)
    harness.eq(a.status, 200, "raw_url without a token")
    harness.eq(hashlib.sha256(a.body).hexdigest(), m["sha256"], "raw bytes")
    harness.eq(call(port, "HEAD", raw).status, 200, "HEAD raw_url without a token")
    a = call(port, "GET", att)
    harness.eq((a.status, a.body), (200, blob), "attachment url without a token")
    # no signature: the token is required as before
    harness.eq(call(port, "GET", urllib.parse.urlsplit(raw).path).status, 401, "raw without sig or token")
    harness.eq(call(port, "GET", "/api/v1/messages/%s" % m["id"] + raw[raw.index("?"):]).status, 401,
               "a route that takes no signed links")

    # altered: the signature, the expiry, the path
    path, _, query = raw.partition("?")
    q = urllib.parse.parse_qs(query)
    sig = q["sig"][0]
    bad_sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    refused(call(port, "GET", "%s?exp=%s&sig=%s" % (path, exp, bad_sig)), "does not match", "altered sig")
    refused(call(port, "GET", "%s?exp=%d&sig=%s" % (path, exp + 3600, sig)), "does not match", "later exp")
    other = path.replace("/raw", "/attachments/2")
    refused(call(port, "GET", "%s?exp=%d&sig=%s" % (other, exp, sig)), "does not match", "another path")
    refused(call(port, "GET", "%s?exp=soon&sig=%s" % (path, sig)), "malformed", "malformed exp")

    # the store's key signs exactly as documented: a link made here works,
    # and one whose time has passed is refused as expired
    key = b.query("SELECT key FROM link_key WHERE id = 1")[0][0]
    harness.eq(sign(key, path, exp), sig, "signature recomputed from the store's key")
    past = int(time.time()) - 10
    refused(call(port, "GET", "%s?exp=%d&sig=%s" % (path, past, sign(key, path, past))), "expired",
            "expired link")
    harness.eq(call(port, "GET", "%s?exp=%d&sig=%s" % (path, past + 100, sign(key, path, past + 100))).status,
               200, "a link signed here")

    # rotation revokes every link; the API hands out new ones
    harness.eq(call(port, "POST", "/api/v1/links/rotate").status, 401, "rotate without a token")
    a = call(port, "POST", "/api/v1/links/rotate", token=token)
    harness.eq(a.status, 200, "rotate")
    refused(call(port, "GET", raw), "rotated", "raw_url after the rotation")
    refused(call(port, "GET", att), "rotated", "attachment url after the rotation")
    fresh = call(port, "GET", "/api/v1/messages/%s" % m["id"], token=token).json()
    harness.eq(call(port, "GET", local(fresh["raw_url"])).status, 200, "a raw_url made after the rotation")
    if b.query("SELECT key FROM link_key WHERE id = 1")[0][0] == key:
        raise AssertionError("the link key did not change")
    harness.eq(b.stop(), 0, "exit code")
    log = b.log()
    if key.hex() in log or sig in log:
        raise AssertionError("the link key or a signature appears in the log")


def _up(port):
    try:
        return call(port, "GET", "/healthz").status == 200
    except OSError:
        return False


@harness.timeout(20)
def test_links_ttl_is_checked():
    b = Bridge({"links_ttl": "10s", "webhooks": [], "accounts": []}, {}, name="ttl")
    r = harness.run_cli(["check-config", b.config_path])
    if r.code != 1 or "links_ttl: must be between 1m and 365d" not in r.stderr:
        raise AssertionError("links_ttl 10s: " + r.describe())
