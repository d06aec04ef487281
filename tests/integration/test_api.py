"""The REST API (issue 4) against a real Dovecot, a real bridge and a real
webhook receiver.

One bridge (`build/pop3bridge run`) serves every test, with accounts made
for them: `main` (mail with attachments and a too-large message, delivered
to the receiver), `deadacct` (its webhook is a closed port: dead
deliveries), `sess` and `sess2` (explicit sessions), `del` (one-shot
DELETE), `c1`..`c8` (concurrency), `badpw`, `down`, `slow` and `locked`
(error mappings; `locked` lives on a second Dovecot with
pop3_lock_session), `ldelay` (a scripted server that asks for a
LOGIN-DELAY, which Dovecot does not).  What the API says is compared with what Dovecot holds
(Maildir files, and Python's poplib through popref), and every response is
validated against openapi.yaml (tests/lib/openapi.py).
"""

import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import dovecot
import harness
import mailgen
import openapi
import popref
from scripted_server import ScriptedServer, respond, send

TIMEOUT = 90
TOKEN = "tok-" + hashlib.sha256(os.urandom(16)).hexdigest()[:24]
ORIGIN_OK = "http://allowed.example"
IDLE_S = 2
MAX_BODY = 2048

S = {}            # module state
SPEC = openapi.Spec(os.path.join(harness.ROOT, "openapi.yaml"))
CHECKED = [0]
_lock = threading.Lock()


class LockedDovecot(dovecot.Dovecot):
    """A Dovecot that keeps the mailbox locked for a whole POP3 session, so a
    second login answers [IN-USE]."""

    def _config(self):
        return super()._config() + "pop3_lock_session = yes\nmail_max_lock_timeout = 1s\n"


# ---- HTTP helpers --------------------------------------------------------------

class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "HTTP %d %s %r" % (self.status, self.headers.get("content-type"), self.body[:300])


def call(method, path, token=TOKEN, headers=None, body=None, check=True, chunked=False):
    """One request on a fresh connection; the response is checked against
    openapi.yaml and for the headers every response must carry."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    c = http.client.HTTPConnection("127.0.0.1", S["port"], timeout=40)
    try:
        c.request(method, path, body=body, headers=h, encode_chunked=chunked)
        r = c.getresponse()
        data = r.read()
        resp = Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        c.close()
    common_headers(resp)
    if check:
        validate(method, path, resp)
    return resp


def raw_request(data):
    """Send raw bytes; (status, headers, body) of the reply."""
    with socket.create_connection(("127.0.0.1", S["port"]), timeout=20) as s:
        s.sendall(data)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Resp(status, headers, body)


def common_headers(r):
    if r.headers.get("x-content-type-options") != "nosniff":
        raise AssertionError("no X-Content-Type-Options: nosniff on %r" % r)
    if "content-security-policy" not in r.headers:
        raise AssertionError("no Content-Security-Policy on %r" % r)


def validate(method, path, r):
    if SPEC.find(path) is None:
        # a path the API does not have: only an error, as a problem, fits
        if not (400 <= r.status < 500 and r.headers.get("content-type") == "application/problem+json"):
            raise AssertionError("unknown path %s answered %r" % (path, r))
        problems = openapi.validate({"$ref": "#/components/schemas/Problem"}, r.json(), SPEC.doc)
    else:
        problems = SPEC.check(method, path, r.status, r.headers.get("content-type"), r.body)
    if problems:
        raise AssertionError("response does not match openapi.yaml: %s" % "; ".join(problems[:5]))
    if r.headers.get("content-type", "").startswith("application/problem+json"):
        p = r.json()
        if p["status"] != r.status:
            raise AssertionError("problem status %s != HTTP %s" % (p["status"], r.status))
    with _lock:
        CHECKED[0] += 1


def expect(r, status, what=""):
    if r.status != status:
        raise AssertionError("%s: expected HTTP %d, got %r" % (what, status, r))
    return r


def q(s):
    return urllib.parse.quote(s, safe="")


# ---- fixtures ---------------------------------------------------------------------

def attach_message(n, payload):
    b64 = base64.encodebytes(payload).decode()
    return ("From: Attach Test <attach@example.com>\nTo: rcpt@example.com\n"
            "Subject: attachment %d\nDate: Mon, 20 Nov 2023 10:00:00 +0000\n"
            "Message-ID: <attach-%d@example.com>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=\"XX\"\n\n--XX\nContent-Type: text/plain\n\n"
            "see the file\n--XX\nContent-Type: application/octet-stream\n"
            "Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"blob-%d.bin\"\n\n"
            "%s--XX--\n" % (n, n, n, b64)).encode()


def simple_message(tag, i):
    return ("From: Sender %s <s-%s@example.com>\nTo: r@example.com\nSubject: %s message %d\n"
            "Message-ID: <%s-%d@example.com>\nDate: Tue, 21 Nov 2023 10:00:%02d +0000\n\n"
            "Body of %s number %d.\n.leading dot line\n" % (tag, tag, tag, i, tag, i, i % 60, tag, i)
            ).encode()


def add_user(dc, name, messages):
    password = "pw-%s-%s" % (name, hashlib.sha256(os.urandom(8)).hexdigest()[:12])
    dc.add_user(name, password)
    for m in messages:
        dc.deliver(name, m)
    S.setdefault("pw", {})[name] = password
    return password


def crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def setup_module():
    out = harness.out_dir("bridge")
    dc = S["dc"] = dovecot.Dovecot(name="api").start()
    S["locked_dc"] = LockedDovecot(name="locked").start()

    S["attach_payload"] = os.urandom(40000)
    S["main_msgs"] = mailgen.mailbox(4, 5, 2000, 20000) + [
        attach_message(1, S["attach_payload"]),
        simple_message("big", 1) + b"x" * 100 + (b"filler line for a large message\n" * 3300)]
    add_user(dc, "main", S["main_msgs"])
    add_user(dc, "deadacct", [simple_message("dead", i) for i in range(2)])
    add_user(dc, "sess", [simple_message("sess", i) for i in range(5)])
    add_user(dc, "sess2", [simple_message("sesstwo", i) for i in range(2)])
    add_user(dc, "idle", [simple_message("idle", i) for i in range(3)])
    add_user(dc, "del", [simple_message("del", i) for i in range(3)])
    for k in range(1, 9):
        add_user(dc, "c%d" % k, [simple_message("conc%d" % k, i) for i in range(5)])
    add_user(dc, "badpw", [simple_message("badpw", 0)])
    add_user(S["locked_dc"], "locked", [simple_message("locked", 0)])

    # a port nobody listens on, and one that accepts but never answers
    S["closed_port"] = dovecot.free_port()
    slow = S["slow_sock"] = socket.socket()
    slow.bind(("127.0.0.1", 0))
    slow.listen(64)
    harness.register_cleanup(slow.close)
    # one poll, after which the server asks for 15 minutes between logins
    S["ldelay"] = ScriptedServer([
        send(b"+OK scripted\r\n"),
        respond([(r"CAPA", b"+OK\r\nUSER\r\nUIDL\r\nLOGIN-DELAY 900\r\n.\r\n"),
                 (r"USER .*|PASS .*", b"+OK\r\n"), (r"STAT", b"+OK 0 0\r\n"),
                 (r"UIDL|LIST", b"+OK\r\n.\r\n"), (r"QUIT", b"+OK bye\r\n")], until=r"QUIT"),
    ], timeout=120, linger=1).start()
    harness.register_cleanup(S["ldelay"].stop)

    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    S["events_dir"] = os.path.join(out, "events")
    os.makedirs(S["events_dir"])
    rport = dovecot.free_port()
    S["receiver"] = subprocess.Popen(
        [harness.tool("webhook-receiver"), "--port", str(rport), "--secret", secret, "--out",
         S["events_dir"]], stdout=subprocess.PIPE, stderr=open(os.path.join(out, "receiver.log"), "wb"),
        start_new_session=True)
    harness.register_cleanup(lambda: _stop(S["receiver"]))
    S["receiver"].stdout.readline()  # "listening on ..."

    web = S["web"] = os.path.join(out, "web")
    os.makedirs(os.path.join(web, "assets"))
    with open(os.path.join(web, "index.html"), "w") as f:
        f.write("<!doctype html><title>pop3bridge</title><script src=\"assets/app.js\"></script>\n")
    with open(os.path.join(web, "assets", "app.js"), "w") as f:
        f.write("console.log('dashboard');\n")
    with open(os.path.join(web, "notes.php"), "w") as f:
        f.write("<?php echo 1; ?>\n")
    with open(os.path.join(web, ".hidden.txt"), "w") as f:
        f.write("hidden\n")
    os.symlink("/etc/passwd", os.path.join(web, "passwd.txt"))

    S["port"] = dovecot.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3BRIDGE_")}
    env.update({"API_TOKEN": TOKEN, "HOOK_SECRET": secret, "WRONG_PW": "not-the-password"})

    def acct(name, **kw):
        a = {"name": name, "host": "127.0.0.1", "port": dc.port, "tls": "none", "allow_plaintext": True,
             "username": name, "password_env": "PW_" + name.upper(), "poll_interval": "1h",
             "timeout": "20s", "start": "new"}
        env["PW_" + name.upper()] = S["pw"].get(name, "x")
        a.update(kw)
        return a

    accounts = [
        acct("main", tls="implicit", port=dc.tls_port, ca_file=dc.pki.ca, allow_plaintext=False,
             start="all", webhooks=["hook"], max_message_size="64KiB"),
        acct("deadacct", start="all", webhooks=["void"]),
        acct("sess"), acct("sess2"), acct("idle"), acct("del"),
    ] + [acct("c%d" % k) for k in range(1, 9)] + [
        acct("badpw", password_env="WRONG_PW"),
        acct("down", port=S["closed_port"]),
        acct("slow", port=slow.getsockname()[1], timeout="1s"),
        acct("locked", port=S["locked_dc"].port),
        acct("ldelay", port=S["ldelay"].port),
    ]
    cfg = {
        "state_dir": os.path.join(out, "state"),
        "log_level": "debug",
        "api": {"listen": "127.0.0.1:%d" % S["port"], "tokens": [{"name": "t", "token_env": "API_TOKEN"}],
                "cors_origins": [ORIGIN_OK], "sessions_per_account": 2, "sessions_total": 8,
                "session_idle_timeout": "%ds" % IDLE_S, "max_request_body": MAX_BODY,
                "request_timeout": "30s", "web_dir": web},
        "webhooks": [
            {"name": "hook", "url": "http://127.0.0.1:%d/hook" % rport, "secret_env": "HOOK_SECRET",
             "inline_attachments_max": "1KiB", "retry_schedule": ["1s"]},
            {"name": "void", "url": "http://127.0.0.1:%d/void" % S["closed_port"],
             "secret_env": "HOOK_SECRET", "retry_schedule": []},
        ],
        "accounts": accounts,
    }
    S["config"] = os.path.join(out, "bridge.json")
    harness.write_config(S["config"], cfg, indent=1)
    S["log"] = os.path.join(out, "bridge.log")
    S["bridge"] = subprocess.Popen([harness.binary(), "run", "--config", S["config"]], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=open(S["log"], "wb"), start_new_session=True, cwd=harness.ROOT)
    harness.register_cleanup(lambda: _stop(S["bridge"]))
    harness.wait_for(_healthy, 15, what="the bridge's /healthz")

    # every account polled once; main's messages delivered, deadacct's dead
    def settled():
        accts = call("GET", "/api/v1/accounts").json()["accounts"]
        if any(a["last_attempt_at"] is None or a["state"] == "polling" for a in accts):
            return False
        d = call("GET", "/api/v1/deliveries?limit=1000").json()["deliveries"]
        main = [x for x in d if x["account"] == "main"]
        dead = [x for x in d if x["account"] == "deadacct"]
        return (len(main) == len(S["main_msgs"]) and all(x["status"] == "delivered" for x in main)
                and len(dead) == 2 and all(x["status"] == "dead" for x in dead))
    harness.wait_for(settled, 40, interval=0.3, what="first polls and deliveries")
    S["events"] = load_events()


def _healthy():
    if S["bridge"].poll() is not None:
        with open(S["log"], errors="replace") as f:
            raise AssertionError("the bridge exited with %s: %s" % (S["bridge"].returncode, f.read()[-2000:]))
    try:
        return call("GET", "/healthz", token=None).status == 200
    except OSError:
        return False


def _stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def teardown_module():
    if "bridge" in S:
        _stop(S["bridge"])
        with open(S["log"], errors="replace") as f:
            log = f.read()
        for secret in [TOKEN] + list(S.get("pw", {}).values()):
            if secret in log:
                raise AssertionError("a secret appears in the bridge's log")
    if "receiver" in S:
        _stop(S["receiver"])
    for k in ("dc", "locked_dc"):
        if k in S:
            S[k].stop()


def load_events():
    evs = []
    for name in sorted(os.listdir(S["events_dir"])):
        if name.endswith(".json"):
            with open(os.path.join(S["events_dir"], name), "rb") as f:
                evs.append(json.loads(f.read()))
    return evs


def listing(user, dc=None):
    dc = dc or S["dc"]
    _, _, entries, _ = popref.listing(dc, user, S["pw"][user])
    return entries


# ---- the contract -----------------------------------------------------------------

def test_openapi_lint_and_served():
    problems = SPEC.lint()
    assert not problems, "openapi.yaml lint: %s" % "; ".join(problems)
    r = expect(call("GET", "/openapi.yaml", token=None), 200)
    with open(SPEC.path, "rb") as f:
        assert r.body == f.read(), "/openapi.yaml is not the repository's file"
    # every route of the table is in the document, and the reverse
    ops = {(m.upper(), p) for p, item in SPEC.doc["paths"].items() for m in item if m in openapi.HTTP_METHODS}
    table = set()
    for name in sorted(os.listdir(os.path.join(harness.ROOT, "bridge"))):
        if name.startswith("api") and name.endswith(".c"):  # api.c and the resources' api_*.c
            with open(os.path.join(harness.ROOT, "bridge", name)) as f:
                table |= set(re.findall(r'\{"(GET|POST|DELETE)", "([^"]+)", h_', f.read()))
    assert len(table) >= 27, "only %d routes found in bridge/api*.c" % len(table)
    assert table - ops == set(), "routes missing from openapi.yaml: %s" % sorted(table - ops)
    assert ops - table - {("GET", "/")} == set(), "openapi.yaml paths without a route: %s" % sorted(ops - table)


def test_webhook_events_match_schema():
    evs = S["events"]
    assert len(evs) == len(S["main_msgs"]), "expected %d events, got %d" % (len(S["main_msgs"]), len(evs))
    schema = {"$ref": "#/components/schemas/Event"}
    for ev in evs:
        problems = openapi.validate(schema, ev, SPEC.doc)
        assert not problems, "event does not match components.schemas.Event: %s" % problems[:3]
    assert sum(1 for e in evs if e["type"] == "message.too_large") == 1


# ---- accounts -----------------------------------------------------------------------

def test_accounts():
    r = expect(call("GET", "/api/v1/accounts"), 200).json()
    names = [a["name"] for a in r["accounts"]]
    assert names[:2] == ["main", "deadacct"] and "locked" in names, names
    main = expect(call("GET", "/api/v1/accounts/main"), 200).json()
    assert main["state"] == "idle" and main["last_error"] is None and main["last_success_at"], main
    assert main["last_error_code"] is None, main
    assert main["stored"] == len(S["main_msgs"]) and main["pending_deliveries"] == 0, main
    bad = expect(call("GET", "/api/v1/accounts/badpw"), 200).json()
    assert bad["state"] == "auth_error" and bad["last_error"], bad
    assert bad["last_error_code"] == "auth", bad  # for programs: the kind, not the text
    assert S["pw"]["badpw"] not in json.dumps(bad) and "not-the-password" not in json.dumps(bad)
    dead = expect(call("GET", "/api/v1/accounts/deadacct"), 200).json()
    assert dead["stored"] == 2 and dead["pending_deliveries"] == 0, dead  # dead ones are not pending
    expect(call("GET", "/api/v1/accounts/nope"), 404)
    before = main["last_attempt_at"]
    r = expect(call("POST", "/api/v1/accounts/main/poll"), 202).json()
    assert r == {"account": "main", "poll_requested": True}
    harness.wait_for(lambda: call("GET", "/api/v1/accounts/main").json()["last_attempt_at"] != before
                     and call("GET", "/api/v1/accounts/main").json()["state"] == "idle", 10,
                     what="the requested poll")
    expect(call("POST", "/api/v1/accounts/nope/poll"), 404)


def test_poll_respects_backoff_and_login_delay():
    # badpw's login was refused: it backs off (15 min at first) and a poll
    # request must not log in again meanwhile (a provider may lock it)
    before = expect(call("GET", "/api/v1/accounts/badpw"), 200).json()
    assert before["state"] == "auth_error", before
    r = expect(call("POST", "/api/v1/accounts/badpw/poll"), 429)
    assert 60 < int(r.headers["retry-after"]) <= 15 * 60, r.headers
    p = r.json()
    assert p["type"].endswith(":backoff") and "badpw" in p["detail"], p
    # the server asked for LOGIN-DELAY 900 after ldelay's first poll
    r = expect(call("POST", "/api/v1/accounts/ldelay/poll"), 429)
    assert 800 < int(r.headers["retry-after"]) <= 900, r.headers
    time.sleep(1.5)  # a poll, had one been queued, would have started by now
    after = expect(call("GET", "/api/v1/accounts/badpw"), 200).json()
    assert after["last_attempt_at"] == before["last_attempt_at"] and after["state"] == "auth_error", after
    assert expect(call("GET", "/api/v1/accounts/ldelay"), 200).json()["state"] == "idle"
    assert S["ldelay"].commands.count("PASS x") == 1, S["ldelay"].commands


# ---- one-shot mailbox operations --------------------------------------------------------

def test_mailbox_and_listing_match_dovecot():
    entries = listing("main")
    mb = expect(call("GET", "/api/v1/accounts/main/mailbox"), 200).json()
    assert mb["count"] == len(entries) == len(S["main_msgs"])
    assert mb["octets"] == sum(e[2] for e in entries)
    assert "UIDL" in mb["capabilities"] and "TOP" in mb["capabilities"], mb["capabilities"]
    msgs = expect(call("GET", "/api/v1/accounts/main/messages"), 200).json()["messages"]
    assert [(m["number"], m["uidl"], m["size"]) for m in msgs] == entries
    assert all(m["stored"] and m["delivered"] and m["id"].startswith("m_") for m in msgs), msgs
    files = [m.pop3_size for m in S["dc"].messages("main")]
    assert [m["size"] for m in msgs] == files
    other = expect(call("GET", "/api/v1/accounts/sess2/messages"), 200).json()["messages"]
    assert all(not m["stored"] and not m["delivered"] and m["id"] is None for m in other), other


def test_retrieve_json_raw_and_top():
    entries = listing("main")
    files = S["dc"].messages("main")
    by_uidl = {e["data"]["message"]["uidl"]: e["data"]["message"] for e in S["events"]}
    for (num, uidl, size), f in zip(entries, files):
        raw = expect(call("GET", "/api/v1/accounts/main/messages/%s" % q(uidl),
                          headers={"Accept": "message/rfc822"}), 200)
        assert raw.headers["content-type"] == "message/rfc822"
        assert raw.body == crlf(f.data), "raw RETR of %s differs from the Maildir file" % uidl
        assert "sandbox" in raw.headers["content-security-policy"]
        m = expect(call("GET", "/api/v1/accounts/main/messages/%s" % q(uidl)), 200).json()
        ev = by_uidl[uidl]
        if ev.get("too_large"):
            assert m["size"] == len(raw.body) and m["sha256"] == hashlib.sha256(raw.body).hexdigest()
            continue
        for k in ("uidl", "sha256", "size", "subject", "from", "to", "message_id", "text", "html", "date", "id"):
            assert m[k] == ev[k], "%s: %s differs from the webhook event (%r vs %r)" % (uidl, k, m[k], ev[k])
        assert m["sha256"] == hashlib.sha256(crlf(f.data)).hexdigest()
        top = expect(call("GET", "/api/v1/accounts/main/messages/%s/top?lines=2" % q(uidl)), 200).json()
        assert top["uidl"] == uidl and top["subject"] == ev["subject"] and top["from"] == ev["from"]
        body = crlf(f.data).split(b"\r\n\r\n", 1)[1]
        want = b"\r\n".join(body.split(b"\r\n")[:2])
        assert top["body"].replace("\r\n", "\n").rstrip("\n") == want.decode("utf-8", "replace").replace(
            "\r\n", "\n").rstrip("\n"), "TOP 2 body of %s" % uidl
    top0 = expect(call("GET", "/api/v1/accounts/main/messages/%s/top" % q(entries[0][1])), 200).json()
    assert top0["body"] == "" and top0["headers"], top0
    expect(call("GET", "/api/v1/accounts/main/messages/%s/top?lines=-1" % q(entries[0][1])), 400)
    expect(call("GET", "/api/v1/accounts/main/messages/%s/top?lines=1&lines=2" % q(entries[0][1])), 400)
    expect(call("GET", "/api/v1/accounts/main/messages/%s/top?line=1" % q(entries[0][1])), 400)
    # UIDLs may hold "/", "?" and "%": they arrive percent-encoded and decoded strictly
    r = expect(call("GET", "/api/v1/accounts/main/messages/%s" % q("a/b?c%d")), 404).json()
    assert 'a/b?c%d' in r["detail"], r


def test_oneshot_delete_commits():
    before = listing("del")
    victim = before[1][1]
    expect(call("DELETE", "/api/v1/accounts/del/messages/%s" % q(victim)), 204)
    after = listing("del")
    assert [u for _, u, _ in after] == [u for _, u, _ in before if u != victim]
    assert len(S["dc"].messages("del")) == len(before) - 1
    expect(call("DELETE", "/api/v1/accounts/del/messages/%s" % q(victim)), 404)
    expect(call("DELETE", "/api/v1/accounts/nope/messages/x"), 404)


# ---- explicit sessions ----------------------------------------------------------------

def test_session_mark_reset_quit():
    before = listing("sess")
    r = expect(call("POST", "/api/v1/accounts/sess/sessions"), 201)
    s = r.json()
    sid = s["id"]
    assert re.fullmatch(r"s_[0-9a-f]{32}", sid) and r.headers["location"] == "/api/v1/sessions/" + sid
    assert s["count"] == len(before) and s["octets"] == sum(e[2] for e in before) and s["marked"] == 0
    got = expect(call("GET", "/api/v1/sessions/%s/messages" % sid), 200).json()["messages"]
    assert [(m["number"], m["uidl"], m["size"]) for m in got] == before and not any(m["marked"] for m in got)
    files = S["dc"].messages("sess")
    raw = expect(call("GET", "/api/v1/sessions/%s/messages/1" % sid, headers={"Accept": "message/rfc822"}), 200)
    assert raw.body == crlf(files[0].data)
    m = expect(call("GET", "/api/v1/sessions/%s/messages/2" % sid), 200).json()
    assert m["uidl"] == before[1][1] and m["subject"] == "sess message 1", m["subject"]
    top = expect(call("GET", "/api/v1/sessions/%s/messages/3/top?lines=1" % sid), 200).json()
    assert top["uidl"] == before[2][1] and top["body"].startswith("Body of sess number 2."), top
    expect(call("DELETE", "/api/v1/sessions/%s/messages/1" % sid), 204)
    got = expect(call("GET", "/api/v1/sessions/%s/messages" % sid), 200).json()["messages"]
    assert [m["marked"] for m in got] == [True] + [False] * (len(before) - 1)
    expect(call("GET", "/api/v1/sessions/%s/messages/1" % sid), 409)   # marked
    expect(call("DELETE", "/api/v1/sessions/%s/messages/1" % sid), 409)
    expect(call("GET", "/api/v1/sessions/%s/messages/99" % sid), 404)
    expect(call("GET", "/api/v1/sessions/%s/messages/0" % sid), 400)
    expect(call("GET", "/api/v1/sessions/%s/messages/x1" % sid), 400)
    st = expect(call("POST", "/api/v1/sessions/%s/reset" % sid), 200).json()
    assert st["marked"] == 0
    expect(call("GET", "/api/v1/sessions/%s/messages/1" % sid), 200)  # unmarked again
    expect(call("DELETE", "/api/v1/sessions/%s/messages/2" % sid), 204)
    expect(call("DELETE", "/api/v1/sessions/%s/messages/4" % sid), 204)
    assert expect(call("POST", "/api/v1/sessions/%s/noop" % sid), 200).json()["marked"] == 2
    # nothing is deleted before QUIT
    assert len(S["dc"].messages("sess")) == len(before)
    assert expect(call("DELETE", "/api/v1/sessions/%s" % sid), 200).json() == {"deleted": 2}
    after = listing("sess")
    assert [u for _, u, _ in after] == [before[0][1], before[2][1], before[4][1]]
    expect(call("GET", "/api/v1/sessions/%s" % sid), 404)
    expect(call("DELETE", "/api/v1/sessions/%s" % sid), 404)


def test_session_idle_timeout_deletes_nothing():
    before = listing("idle")
    sid = expect(call("POST", "/api/v1/accounts/idle/sessions"), 201).json()["id"]
    expect(call("DELETE", "/api/v1/sessions/%s/messages/1" % sid), 204)
    expect(call("DELETE", "/api/v1/sessions/%s/messages/2" % sid), 204)
    info = expect(call("GET", "/api/v1/sessions/%s" % sid), 200).json()
    assert info["marked"] == 2
    # any request on the session keeps it alive: watch the log, not the API
    def expired():
        with open(S["log"], errors="replace") as f:
            return "event=session_expired session=%s" % sid[:10] in f.read()
    harness.wait_for(expired, IDLE_S + 5, what="the idle session to be aborted")
    expect(call("GET", "/api/v1/sessions/%s" % sid), 404)
    assert listing("idle") == before, "an idle-aborted session deleted messages"
    assert len(S["dc"].messages("idle")) == len(before)
    with open(S["log"], errors="replace") as f:
        log = f.read()
    assert "event=session_expired session=%s" % sid[:10] in log, "no session_expired log line"
    assert sid not in log, "the full session id appears in the log"


def test_session_limits_and_unknown():
    a = expect(call("POST", "/api/v1/accounts/sess2/sessions"), 201).json()["id"]
    b = expect(call("POST", "/api/v1/accounts/sess2/sessions"), 201).json()["id"]
    r = expect(call("POST", "/api/v1/accounts/sess2/sessions"), 429)
    assert "retry-after" in r.headers and "limit" in r.json()["detail"]
    for sid in (a, b):
        assert expect(call("DELETE", "/api/v1/sessions/%s" % sid), 200).json() == {"deleted": 0}
    expect(call("GET", "/api/v1/sessions/s_" + "0" * 32), 404)
    expect(call("GET", "/api/v1/sessions/not-a-session"), 404)
    expect(call("POST", "/api/v1/sessions/s_%s/noop" % ("ab" * 16)), 404)
    expect(call("POST", "/api/v1/accounts/nope/sessions"), 404)
    assert len(listing("sess2")) == 2


# ---- stored messages and deliveries --------------------------------------------------

def unsign(v):
    """v with the ?exp=&sig= of every signed link (raw_url, url) cut off."""
    if isinstance(v, list):
        return [unsign(x) for x in v]
    if isinstance(v, dict):
        return {k: (x.split("?exp=")[0] if k in ("url", "raw_url") and isinstance(x, str) else unsign(x))
                for k, x in v.items()}
    if isinstance(v, str) and "?exp=" in v:
        return v.split("?exp=")[0]
    return v


def test_stored_messages_and_attachments():
    evs = S["events"]
    seen_url = 0
    for ev in evs:
        m = ev["data"]["message"]
        got = expect(call("GET", "/api/v1/messages/%s" % m["id"]), 200).json()
        for k in ("id", "uidl", "size", "sha256", "subject", "attachments", "raw_url", "text"):
            # signed links carry the time they were made: compared without their query
            assert unsign(got[k]) == unsign(m[k]), "stored %s: %s differs from its event" % (m["id"], k)
        raw = call("GET", "/api/v1/messages/%s/raw" % m["id"])
        if m.get("too_large"):
            assert ev["type"] == "message.too_large" and m["sha256"] is None and m["raw_url"] is None
            expect(raw, 404)
            continue
        expect(raw, 200)
        assert hashlib.sha256(raw.body).hexdigest() == m["sha256"] and len(raw.body) == m["size"]
        assert urllib.parse.urlsplit(m["raw_url"]).path.endswith("/api/v1/messages/%s/raw" % m["id"])
        assert re.fullmatch(r"exp=\d+&sig=[0-9a-f]{64}", urllib.parse.urlsplit(m["raw_url"]).query), m["raw_url"]
        for att in m["attachments"]:
            if "url" not in att:
                continue
            path = urllib.parse.urlsplit(att["url"]).path
            r = expect(call("GET", path), 200)
            assert hashlib.sha256(r.body).hexdigest() == att["sha256"] and len(r.body) == att["size"]
            assert r.headers["content-disposition"].startswith("attachment")
            seen_url += 1
            if att["filename"] == "blob-1.bin":
                assert r.body == S["attach_payload"]
    assert seen_url >= 2, "too few attachments went by URL"
    expect(call("GET", "/api/v1/messages/m_999999"), 404)
    expect(call("GET", "/api/v1/messages/m_0"), 404)
    expect(call("GET", "/api/v1/messages/x"), 404)
    mid = evs[0]["data"]["message"]["id"]
    expect(call("GET", "/api/v1/messages/%s/attachments/77" % mid), 404)
    expect(call("GET", "/api/v1/messages/%s/attachments/1..2" % mid), 404)


def test_deliveries_list_get_retry():
    full = expect(call("GET", "/api/v1/deliveries?limit=1000"), 200).json()
    assert full["next_cursor"] is None
    ids = [d["id"] for d in full["deliveries"]]
    assert ids == sorted(ids, key=lambda s: -int(s[2:])), "not newest first"
    paged, cursor, pages = [], None, 0
    while True:
        r = expect(call("GET", "/api/v1/deliveries?limit=2" + ("&cursor=" + q(cursor) if cursor else "")),
                   200).json()
        paged += [d["id"] for d in r["deliveries"]]
        pages += 1
        cursor = r["next_cursor"]
        if not cursor or pages > 50:
            break
    assert paged == ids, "paging lost or repeated deliveries"
    main = expect(call("GET", "/api/v1/deliveries?account=main&status=delivered"), 200).json()["deliveries"]
    assert len(main) == len(S["main_msgs"]) and all(d["webhook"] == "hook" for d in main)
    assert {d["message_id"] for d in main} == {e["data"]["message"]["id"] for e in S["events"]}
    dead = expect(call("GET", "/api/v1/deliveries?status=dead"), 200).json()["deliveries"]
    assert len(dead) == 2 and all(d["account"] == "deadacct" and d["last_error"] for d in dead), dead
    one = expect(call("GET", "/api/v1/deliveries/%s" % main[0]["id"]), 200).json()
    assert one["status"] == "delivered" and one["attempts"] and one["attempts"][-1]["http_status"] // 100 == 2
    expect(call("POST", "/api/v1/deliveries/%s/retry" % main[0]["id"]), 409)  # delivered
    r = expect(call("POST", "/api/v1/deliveries/%s/retry" % dead[0]["id"]), 202).json()
    assert r["status"] in ("pending", "dead") and r["id"] == dead[0]["id"]
    harness.wait_for(lambda: call("GET", "/api/v1/deliveries/%s" % dead[0]["id"]).json()["attempt_count"]
                     > dead[0]["attempt_count"], 10, what="the retried delivery's new attempt")
    for bad in ("status=nope", "limit=0", "limit=1001", "limit=abc", "cursor=zzz", "foo=1", "status=dead&status=dead"):
        expect(call("GET", "/api/v1/deliveries?" + bad), 400, bad)
    expect(call("GET", "/api/v1/deliveries/d_999999"), 404)
    expect(call("GET", "/api/v1/deliveries/nope"), 404)
    expect(call("POST", "/api/v1/deliveries/d_999999/retry"), 404)


# ---- operations endpoints ------------------------------------------------------------

def test_health_ready_metrics():
    assert expect(call("GET", "/healthz", token=None), 200).json() == {"status": "ok"}
    assert expect(call("GET", "/readyz", token=None), 200).json() == {"status": "ready"}
    expect(call("GET", "/metrics", token=None), 401)
    text = expect(call("GET", "/metrics"), 200).body.decode()
    assert re.search(r'^pop3bridge_polls_total\{account="main",result="ok"\} [1-9]', text, re.M), text[:500]
    assert re.search(r'^pop3bridge_poll_errors_total\{account="badpw",kind="auth"\} 1', text, re.M)
    n = len(S["main_msgs"])
    assert re.search(r'^pop3bridge_deliveries_total\{webhook="hook",outcome="delivered"\} %d$' % n, text, re.M)
    assert re.search(r'^pop3bridge_delivery_latency_seconds_count %d$' % n, text, re.M)
    assert re.search(r'^pop3bridge_messages_too_large_total\{account="main"\} 1$', text, re.M)
    assert re.search(r'^pop3bridge_delivery_queue\{status="dead"\} \d+$', text, re.M)
    assert re.search(r'^pop3bridge_api_sessions_open \d+$', text, re.M)
    assert re.search(r'^pop3bridge_http_requests_total\{code="200"\} \d+$', text, re.M)


def test_static_files():
    r = expect(call("GET", "/", token=None), 200)
    assert r.body.startswith(b"<!doctype html>") and r.headers["content-type"].startswith("text/html")
    r = call("GET", "/assets/app.js", token=None, check=False)
    assert r.status == 200 and r.headers["content-type"].startswith("text/javascript")
    for bad in ("/notes.php", "/.hidden.txt", "/passwd.txt", "/assets/../index.html", "/nothere.html",
                "/assets/%2e%2e/index.html", "/..%2fetc/passwd.txt"):
        r = call("GET", bad, token=None, check=False)
        assert r.status in (400, 404), "%s: %r" % (bad, r)
        assert b"root:" not in r.body
    r = call("POST", "/", token=None)
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD"


# ---- errors ---------------------------------------------------------------------------

def test_tokens():
    for tok in (None, "wrong", TOKEN + "x", TOKEN[:-1], ""):
        r = expect(call("GET", "/api/v1/accounts", token=tok), 401, "token %r" % tok)
        assert r.headers.get("www-authenticate", "").startswith("Bearer")
    r = call("GET", "/api/v1/accounts", token=None, headers={"Authorization": "Basic " + TOKEN})
    expect(r, 401)
    expect(call("GET", "/api/v1/nothing", token=None), 401)  # no route enumeration without a token
    expect(call("GET", "/api/v1/accounts", token=None, headers={"Authorization": "bearer " + TOKEN}), 200)


def test_method_not_allowed_and_not_found():
    r = expect(call("PUT", "/api/v1/accounts"), 405)
    assert r.headers["allow"] == "GET, HEAD"
    r = expect(call("DELETE", "/api/v1/accounts/main/messages/x/top"), 405)
    assert r.headers["allow"] == "GET, HEAD"
    r = expect(call("PATCH", "/api/v1/accounts/main/messages/x"), 405)
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    r = expect(call("GET", "/api/v1/accounts/main/poll"), 405)
    assert r.headers["allow"] == "POST"
    r = call("GET", "/api/v1/nothing/here")
    assert r.status == 404 and r.headers["content-type"] == "application/problem+json"


def test_body_too_large():
    expect(call("POST", "/api/v1/accounts/main/poll", body=b"x" * (MAX_BODY + 1)), 413)
    expect(call("POST", "/api/v1/accounts/main/poll", body=iter([b"y" * 1500, b"y" * 1500]), chunked=True), 413)
    expect(call("POST", "/api/v1/accounts/main/poll", body=b"{}"), 202)


def test_upstream_errors():
    r = expect(call("GET", "/api/v1/accounts/badpw/mailbox"), 502).json()
    assert r["kind"] == "authentication" and r["type"].endswith("upstream-auth"), r
    assert S["pw"]["badpw"] not in json.dumps(r) and "not-the-password" not in json.dumps(r)
    r = expect(call("GET", "/api/v1/accounts/down/messages"), 502).json()
    assert r["kind"] == "connection", r
    t0 = time.monotonic()
    r = expect(call("GET", "/api/v1/accounts/slow/mailbox"), 504).json()
    assert r["kind"] == "timeout" and time.monotonic() - t0 < 10, r
    expect(call("POST", "/api/v1/accounts/down/sessions"), 502)


@harness.timeout(60)
def test_in_use():
    sid = expect(call("POST", "/api/v1/accounts/locked/sessions"), 201).json()["id"]
    stop, noops = threading.Event(), []

    def keep_alive():
        # the session is used meanwhile (its idle timeout is short), and its
        # NOOPs are answered while the one-shot request waits for Dovecot
        while not stop.wait(0.3):
            noops.append(call("POST", "/api/v1/sessions/%s/noop" % sid).status)
    t = threading.Thread(target=keep_alive)
    t.start()
    try:
        r = expect(call("GET", "/api/v1/accounts/locked/mailbox"), 409).json()
        assert r["code"] == "IN-USE" and r["kind"] == "server" and r["server_text"], r
    finally:
        stop.set()
        t.join()
    assert noops and all(n == 200 for n in noops), noops
    expect(call("DELETE", "/api/v1/sessions/%s" % sid), 200)
    expect(call("GET", "/api/v1/accounts/locked/mailbox"), 200)


def test_hostile_paths():
    cases = [
        "/api/v1/accounts/main/messages/..",
        "/api/v1/accounts/main/messages/%2e%2e",
        "/api/v1/accounts/main/messages/%2E",
        "/api/v1/accounts/../accounts",
        "/api/v1/accounts/main/messages/%2",
        "/api/v1/accounts/main/messages/%zz",
        "/api/v1/accounts/main/messages/a%00b",
        "/api/v1/accounts/main/messages/%C3%28",
        "/api/v1/accounts/main/messages/%ED%A0%80",      # a UTF-16 surrogate
        "/api/v1/accounts/main/messages/%C0%AF",         # overlong "/"
        "/api/v1/accounts/main/messages/%0d%0aX:1",
        "/api/v1/accounts?x=%ff",
        "/api/v1/accounts?%zz=1",
    ]
    for path in cases:
        r = call("GET", path)
        assert r.status == 400, "%s: %r" % (path, r)
        assert r.headers["content-type"] == "application/problem+json"
    r = raw_request(b"GET /api/v1/accounts/main/messages/\xff\xfe HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Bearer " + TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")
    assert r.status == 400, r
    long_path = "/api/v1/accounts/main/messages/" + "a" * 9000
    r = call("GET", long_path)
    assert r.status == 414 and r.json()["status"] == 414, r
    r = expect(call("GET", "/api/v1/accounts?unknown=1"), 400).json()
    assert "unknown" in r["detail"]


def test_cors():
    r = call("GET", "/api/v1/accounts", headers={"Origin": ORIGIN_OK})
    assert r.status == 200 and r.headers.get("access-control-allow-origin") == ORIGIN_OK
    r = call("GET", "/api/v1/accounts", headers={"Origin": "http://evil.example"})
    assert r.status == 200 and "access-control-allow-origin" not in r.headers
    pre = {"Origin": ORIGIN_OK, "Access-Control-Request-Method": "DELETE",
           "Access-Control-Request-Headers": "authorization"}
    r = call("OPTIONS", "/api/v1/sessions/s_" + "a" * 32, token=None, headers=pre, check=False)
    assert r.status == 204 and "DELETE" in r.headers["access-control-allow-methods"], r
    assert "Authorization" in r.headers["access-control-allow-headers"]
    pre["Origin"] = "http://evil.example"
    r = call("OPTIONS", "/api/v1/accounts", token=None, headers=pre, check=False)
    assert r.status in (401, 405) and "access-control-allow-origin" not in r.headers, r


@harness.timeout(60)
def test_readyz_says_why_only_with_a_token():
    """/readyz needs no token, so without one it must not say why the store
    is unusable: the reason names files.  A second bridge whose state_dir is
    replaced by a plain file after start (its open handles keep working; a
    new one cannot be opened)."""
    out = harness.out_dir()
    with open(S["config"]) as f:
        cfg = json.load(f)
    state = os.path.join(out, "state-ready")
    cfg["state_dir"] = state
    port = dovecot.free_port()
    cfg["api"]["listen"] = "127.0.0.1:%d" % port
    cfg["accounts"] = [a for a in cfg["accounts"] if a["name"] == "down"]
    path = os.path.join(out, "ready.json")
    harness.write_config(path, cfg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3BRIDGE_")}
    env.update({"API_TOKEN": TOKEN, "HOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 32).decode(),
                "PW_DOWN": "x"})
    log = open(os.path.join(out, "bridge.log"), "wb")
    p = subprocess.Popen([harness.binary(), "run", "--config", path], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, cwd=harness.ROOT)
    harness.register_cleanup(lambda: _stop(p))

    def get(token):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        h = {"Authorization": "Bearer " + token} if token else {}
        c.request("GET", "/readyz", headers=h)
        r = c.getresponse()
        resp = Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        c.close()
        validate("GET", "/readyz", resp)
        return resp

    def up():
        try:  # /healthz: no store handle is opened (and pooled) before the swap
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            ok = c.getresponse().status == 200
            c.close()
            return ok
        except OSError:
            return False
    harness.wait_for(up, 15, what="the second bridge's /healthz")
    os.rename(state, state + ".moved")
    with open(state, "w") as f:
        f.write("not a directory\n")
    try:
        r = expect(get(None), 503)
        assert r.json()["detail"] == "not ready", r
        assert state.encode() not in r.body and b"store" not in r.body, r
        r = expect(get(TOKEN), 503)
        assert "store" in r.json()["detail"] and state in r.json()["detail"], r
    finally:
        _stop(p)
        os.unlink(state)
        os.rename(state + ".moved", state)


def test_port_taken_is_one_clear_line():
    with open(S["config"]) as f:
        cfg = json.load(f)
    cfg["state_dir"] = os.path.join(harness.out_dir(), "state2")
    path = os.path.join(harness.out_dir(), "second.json")
    harness.write_config(path, cfg)
    env = {"API_TOKEN": TOKEN, "HOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 32).decode(),
           "WRONG_PW": "x"}
    env.update({"PW_" + a["name"].upper(): "x" for a in cfg["accounts"]})
    r = harness.run_cli(["run", "--config", path], env=env, timeout=20)
    line = harness.check_failure(r, 3, r"cannot listen on 127\.0\.0\.1:%d .*in use" % S["port"])
    assert TOKEN not in line


# ---- load -----------------------------------------------------------------------------

@harness.timeout(90)
def test_concurrent_clients():
    expected = {}
    for k in range(1, 9):
        name = "c%d" % k
        entries = listing(name)
        files = S["dc"].messages(name)
        expected[name] = [(u, s, f.data) for (_, u, s), f in zip(entries, files)]

    def client(i):
        name = "c%d" % (i % 8 + 1)
        exp = expected[name]
        got = call("GET", "/api/v1/accounts/%s/messages" % name)
        assert got.status == 200, "%s: %r" % (name, got)
        lst = got.json()["messages"]
        assert [(m["uidl"], m["size"]) for m in lst] == [(u, s) for u, s, _ in exp], "%s listing mixed up" % name
        u, _, data = exp[i % len(exp)]
        raw = call("GET", "/api/v1/accounts/%s/messages/%s" % (name, q(u)), headers={"Accept": "message/rfc822"})
        assert raw.status == 200 and raw.body == crlf(data), "%s %s: wrong message" % (name, u)
        m = call("GET", "/api/v1/accounts/%s/messages/%s" % (name, q(u))).json()
        assert m["subject"] == "conc%d message %d" % (i % 8 + 1, i % len(exp)), m["subject"]
        d = call("GET", "/api/v1/deliveries?limit=5")
        assert d.status == 200
        return name

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        done = list(pool.map(client, range(50)))
    assert len(done) == 50
    took = time.monotonic() - t0
    print("50 concurrent clients, 200 requests: %.1fs" % took)
    for k in range(1, 9):  # nothing was deleted by reading
        assert len(S["dc"].messages("c%d" % k)) == 5


def test_zz_every_response_validated():
    # runs last (file order): the responses of this module were all checked
    assert CHECKED[0] >= 200, "only %d responses validated against openapi.yaml" % CHECKED[0]
    shutil.rmtree(os.path.join(S["web"], "assets"), ignore_errors=True)
