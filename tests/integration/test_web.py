"""The dashboard (web/) in a real browser against a real bridge and Dovecot.

setup_module starts a throwaway Dovecot with one mailbox (a plain message,
one whose subject is markup, one with an HTML part that tries to load a
remote image and run a script, and one to delete), a webhook-receiver that
answers the first request with 500 and later ones with 2xx, a small HTTP
"trap" server standing for a remote host, and `pop3bridge run` with the API
on a free port and web_dir = web/.  It waits until the first poll has
stored every message and each delivery has been tried once (one failed).
A second account ("m365") reaches another mailbox of that Dovecot with
OAuth2 tokens (XOAUTH2, passdb oauth2 against tests/lib/oauth2_server.py);
it has no grant at start.

test_dashboard_in_chromium then runs tests/browser/dashboard.mjs (node,
playwright-core, /usr/bin/chromium headless): sign in (and a wrong token),
accounts, poll now, "Connect" of the OAuth2 account (the device code shown,
entered at the authorization server's verification page, the account
connected and polled), mailbox, preview, message, delete, deliveries, retry,
API page, narrow window; screenshots of each page go to this test's output
folder.  The later tests check the outcome from outside the browser: the
message is gone from Dovecot, the retried delivery reached the receiver,
nothing was loaded from the trap, the static files carry strict headers.

test_instances_panel_on_postgresql runs tests/browser/instances.mjs: two
instances on one real PostgreSQL (tests/lib/postgres.py) with four password
accounts of that Dovecot; the accounts page lists both instances with their
API URL, heartbeat and the accounts each polls; one is killed with kill -9
and its row goes away once its heartbeat is older than store.lease, the
survivor holding every account.

Needs: node and the npm packages of tests/browser (tests/browser/install),
chromium, PostgreSQL 15 (the instances test).  POP3BRIDGE_KEEP_SCREENSHOTS=DIR also copies the screenshots there.
"""

import http.server
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import dovecot
import harness
import mailgen
import oauth2_server
import openapi
import pki as pkimod
import postgres
from bridge import Bridge

TIMEOUT = 120
SETUP_TIMEOUT = 120
BROWSER_RUN_TIMEOUT = 300     # the node script bounds itself to 240 s
START_TIMEOUT = 20.0          # bridge and receiver start-up
FIRST_POLL_TIMEOUT = 45.0     # first poll stored everything, every delivery tried
HTTP_TIMEOUT = 15.0

BROWSER_DIR = os.path.join(harness.ROOT, "tests", "browser")
WEB_DIR = os.path.join(harness.ROOT, "web")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NODE = os.environ.get("NODE", "node")

USER = "alice"
ACCOUNT = "inbox"
OAUTH2_USER = "bob"           # a mailbox reached with OAuth2 tokens (passdb oauth2)
OAUTH2_ACCOUNT = "m365"       # its account: device code, connected through the dashboard
XSS_SUBJECT = "<img src=x onerror=alert(1)>"

S = {}   # state shared by the tests of this module


# ---- helpers ------------------------------------------------------------------

class _Trap(http.server.BaseHTTPRequestHandler):
    hits = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        _Trap.hits.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _spawn(argv, log_name, env, pipe_stdout=False):
    """Start a helper in its own process group, stopped at cleanup.  Its
    stderr (and stdout unless pipe_stdout) goes to log_name."""
    log = open(os.path.join(S["dir"], log_name), "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if pipe_stdout else log, stderr=log,
                         env=env, cwd=harness.ROOT, start_new_session=True)
    log.close()

    def stop():
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        if p.stdout:
            p.stdout.close()
    harness.register_cleanup(stop)
    return p


def _http(path, token=None, method="GET", accept="application/json"):
    """(status, headers, body bytes) of one request to the bridge."""
    req = urllib.request.Request(S["base"] + path.lstrip("/"), method=method)
    req.add_header("Accept", accept)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _api(path, method="GET"):
    status, _, body = _http("api/v1/" + path.lstrip("/"), S["token"], method)
    if status >= 300:
        raise AssertionError("%s %s: HTTP %d %r" % (method, path, status, body[:500]))
    return json.loads(body) if body else None


def _html_message(marker, text_marker, remote_url):
    boundary = "=_web_%s" % secrets.token_hex(8)
    return ("From: HTML Sender <html@example.com>\nTo: alice@example.com\n"
            "Subject: An HTML newsletter\nDate: Mon, 02 Jan 2023 10:00:00 +0000\n"
            "Message-ID: <html-%s@example.com>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/alternative; boundary=\"%s\"\n\n"
            "--%s\nContent-Type: text/plain; charset=utf-8\n\n%s in plain text\n\n"
            "--%s\nContent-Type: text/html; charset=utf-8\n\n"
            "<html><head><style>p { color: #333 }</style></head><body>\n"
            "<p style=\"font-weight:bold\">%s</p>\n"
            "<img src=\"%s\" alt=\"tracker\">\n"
            "<script>alert(3)</script>\n"
            "<a href=\"http://127.0.0.1:1/click\">a link</a>\n"
            "</body></html>\n--%s--\n"
            % (boundary, boundary, boundary, text_marker, boundary, marker, remote_url, boundary)).encode()


def _xss_message():
    return ("From: Mallory <mallory@example.com>\nTo: alice@example.com\nSubject: %s\n"
            "Date: Mon, 02 Jan 2023 09:00:00 +0000\nMessage-ID: <xss@example.com>\n"
            "Content-Type: text/plain; charset=utf-8\n\n"
            "<script>alert(2)</script> and <b>not bold</b>\n" % XSS_SUBJECT).encode()


# ---- the bridge and its surroundings ------------------------------------------------

def setup_module():
    S.clear()
    S["dir"] = tempfile.mkdtemp(prefix="p3b-web-")
    harness.register_cleanup(lambda: shutil.rmtree(S["dir"], ignore_errors=True))
    S["token"] = "web-" + secrets.token_urlsafe(24)
    S["bad_token"] = "web-" + secrets.token_urlsafe(24)
    password = "pw-" + secrets.token_hex(8)
    whsec = "whsec_" + __import__("base64").b64encode(secrets.token_bytes(32)).decode()

    # a "remote host" the HTML part points at: it must never be asked
    _Trap.hits = []
    trap = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trap)
    threading.Thread(target=trap.serve_forever, daemon=True).start()
    harness.register_cleanup(trap.shutdown)
    S["remote_marker"] = "remote-" + secrets.token_hex(6)
    remote_url = "http://127.0.0.1:%d/%s.png" % (trap.server_address[1], S["remote_marker"])

    # an authorization server for the OAuth2 account; Dovecot checks its tokens
    auth = oauth2_server.AuthServer(name="oauth2-web").start()
    harness.register_cleanup(auth.stop)
    auth.activate_as = OAUTH2_USER
    S["auth"] = auth
    dc = dovecot.Dovecot(name="dovecot-web", oauth2=auth.introspect_url).start()
    S["dc"] = dc
    dc.add_user(USER, password)
    dc.add_user(OAUTH2_USER, "pw-" + secrets.token_hex(8))   # its password is never used
    S["html_marker"] = "Rendered HTML " + secrets.token_hex(4)
    S["text_marker"] = "Plain part " + secrets.token_hex(4)
    S["sources"] = {
        "plain": mailgen.message(11, 3000, "plain"),
        "xss": _xss_message(),
        "html": _html_message(S["html_marker"], S["text_marker"], remote_url),
        "delete": mailgen.message(12, 2000, "utf8"),
    }
    for key in ("plain", "xss", "html", "delete"):
        dc.deliver(USER, S["sources"][key])

    # the receiver: first request 500, then 2xx
    S["events"] = os.path.join(S["dir"], "events")
    os.makedirs(S["events"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3BRIDGE_")}
    env["LC_ALL"] = "C"
    env["WEBHOOK_SECRET"] = whsec
    recv = _spawn([harness.tool("webhook-receiver"), "--port", "0", "--out", S["events"],
                   "--fail", "1", "--fail-status", "500"], "receiver.log", env, pipe_stdout=True)
    line = recv.stdout.readline().decode("utf-8", "replace")
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        raise AssertionError("webhook-receiver did not start: %r" % line)
    recv_port = int(m.group(1))

    api_port = dovecot.free_port()
    S["base"] = "http://127.0.0.1:%d/" % api_port
    config = {
        "state_dir": os.path.join(S["dir"], "state"),
        "log_level": "debug",
        "api": {
            "listen": "127.0.0.1:%d" % api_port,
            "tokens": [{"name": "web", "token_env": "WEB_TEST_TOKEN"}],
            "web_dir": WEB_DIR,
        },
        "webhooks": [{
            "name": "receiver",
            "url": "http://127.0.0.1:%d/hooks/mail" % recv_port,
            "secret_env": "WEB_TEST_WHSEC",
            "retry_schedule": ["1h"],     # a failed delivery waits for the Retry button
            "timeout": "10s",
        }],
        "accounts": [{
            "name": ACCOUNT,
            "host": "127.0.0.1",
            "port": dc.tls_port,
            "tls": "implicit",
            "ca_file": pkimod.get().ca,
            "username": USER,
            "password_env": "WEB_TEST_PW",
            "poll_interval": "1h",        # polls: at start, and "Poll now"
            "start": "all",
            "webhooks": ["receiver"],
        }, {
            "name": OAUTH2_ACCOUNT,
            "host": "127.0.0.1",
            "port": dc.tls_port,
            "tls": "implicit",
            "ca_file": pkimod.get().ca,
            "username": OAUTH2_USER,
            "auth": ["xoauth2"],
            "oauth2": {"provider": "custom", "flow": "device_code", "client_id": auth.client_id,
                       "token_url": auth.token_url, "device_authorization_url": auth.device_url,
                       "ca_file": auth.pki.ca, "scope": "pop"},
            "poll_interval": "1h",        # not authorized at start: polled once connected
            "start": "all",
            "webhooks": ["receiver"],
        }],
        "secrets_key_env": "WEB_TEST_SECRETS_KEY",
    }
    conf = os.path.join(S["dir"], "bridge.json")
    harness.write_config(conf, config, indent=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POP3BRIDGE_")}
    env.update(LC_ALL="C", WEB_TEST_TOKEN=S["token"], WEB_TEST_WHSEC=whsec, WEB_TEST_PW=password,
               WEB_TEST_SECRETS_KEY=secrets.token_hex(32))
    exe = harness.binary()
    if not os.access(exe, os.X_OK):
        raise AssertionError("binary under test not found: %s (run `make`)" % exe)
    S["bridge"] = _spawn([exe, "run", "--config", conf], "bridge.log", env)

    def healthy():
        if S["bridge"].poll() is not None:
            raise AssertionError("pop3bridge exited with %s: %s" % (S["bridge"].returncode, _log_tail("bridge.log")))
        try:
            return _http("healthz")[0] == 200
        except OSError:
            return False
    harness.wait_for(healthy, START_TIMEOUT, 0.1, "the bridge's /healthz")

    def first_poll_done():
        acc = [a for a in _api("accounts")["accounts"] if a["name"] == ACCOUNT]
        if not acc or not acc[0]["last_success_at"]:
            return False
        ds = _api("deliveries?account=%s&limit=100" % ACCOUNT)["deliveries"]
        if len(ds) != len(S["sources"]) or any(d["status"] == "pending" for d in ds):
            return False
        return ds
    ds = harness.wait_for(first_poll_done, FIRST_POLL_TIMEOUT, 0.25,
                          "the first poll to store 4 messages and try each delivery once")
    statuses = sorted(d["status"] for d in ds)
    harness.eq(statuses, ["delivered", "delivered", "delivered", "failed"], "delivery statuses after the first poll")

    # what Dovecot shows over POP3, and which UIDL is which message
    listing = dc.expected_listing(USER)
    by_data = {m.data: i for i, m in enumerate(dc.messages(USER))}
    S["uidl"] = {key: listing[by_data[data]][1] for key, data in S["sources"].items()}
    S["listing"] = listing
    S["browser_done"] = False


def _log_tail(name, n=3000):
    try:
        with open(os.path.join(S["dir"], name), errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return "(no log)"


def _keep_logs(dest):
    for name in ("bridge.log", "receiver.log"):
        src = os.path.join(S["dir"], name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(dest, name))


# ---- tests ---------------------------------------------------------------------

def test_static_files_have_strict_headers():
    for path, ctype in (("", "text/html"), ("index.html", "text/html"), ("app.css", "text/css"),
                        ("js/app.js", "text/javascript"), ("js/views/message.js", "text/javascript"),
                        ("vendor/js-yaml/js-yaml.esm.min.js", "text/javascript")):
        status, headers, body = _http(path, accept="*/*")
        harness.eq(status, 200, "GET /%s" % path)
        if not headers.get("Content-Type", "").startswith(ctype):
            raise AssertionError("GET /%s: Content-Type %r" % (path, headers.get("Content-Type")))
        csp = headers.get("Content-Security-Policy", "")
        for need in ("script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
            if need not in csp:
                raise AssertionError("GET /%s: CSP %r lacks %s" % (path, csp, need))
        if "unsafe-inline" in csp or "unsafe-eval" in csp:
            raise AssertionError("GET /%s: CSP allows unsafe code: %r" % (path, csp))
        harness.eq(headers.get("X-Content-Type-Options"), "nosniff", "nosniff on /%s" % path)
        with open(os.path.join(WEB_DIR, path or "index.html"), "rb") as f:
            harness.eq(body, f.read(), "/%s is the file in web/" % path)
    # the API refuses a missing or wrong token
    harness.eq(_http("api/v1/accounts")[0], 401, "no token")
    harness.eq(_http("api/v1/accounts", S["bad_token"])[0], 401, "wrong token")


def test_web_files_are_strict_csp_compatible():
    """No inline script or style, no event-handler attributes, no HTML
    sinks in our JavaScript (vendored code is checked by its pin below)."""
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
    handler_attr = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
    sinks = re.compile(r"\.innerHTML\b|\.outerHTML\b|insertAdjacentHTML|document\.write|\beval\s*\(|"
                       r"new\s+Function\b|javascript:|setTimeout\(\s*['\"]|setInterval\(\s*['\"]")
    checked = 0
    for dirpath, dirnames, files in os.walk(WEB_DIR):
        if os.path.relpath(dirpath, WEB_DIR).startswith("vendor"):
            continue
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            rel = os.path.relpath(path, harness.ROOT)
            if name.endswith(".html"):
                checked += 1
                if inline_script.search(text):
                    raise AssertionError("%s: inline <script>" % rel)
                if re.search(r"<style\b|\sstyle\s*=", text, re.I):
                    raise AssertionError("%s: inline style" % rel)
                if handler_attr.search(text):
                    raise AssertionError("%s: event-handler attribute" % rel)
                if re.search(r"\b(src|href)=\"(https?:)?//", text):
                    raise AssertionError("%s: loads something from another host" % rel)
            elif name.endswith(".js"):
                checked += 1
                m = sinks.search(text)
                if m:
                    raise AssertionError("%s: %r (content must go in as text)" % (rel, m.group(0)))
                if re.search(r"\b(import|from)\s+['\"](https?:)?//", text):
                    raise AssertionError("%s: imports from another host" % rel)
            elif name.endswith(".css"):
                checked += 1
                if re.search(r"url\(\s*['\"]?(https?:)?//|@import", text):
                    raise AssertionError("%s: loads something from another host" % rel)
    if checked < 5:
        raise AssertionError("only %d files checked in %s" % (checked, WEB_DIR))


def test_vendored_js_yaml_matches_its_pin():
    with open(os.path.join(BROWSER_DIR, "package.json")) as f:
        pkg = json.load(f)
    with open(os.path.join(BROWSER_DIR, "package-lock.json")) as f:
        lock = json.load(f)
    for name, ver in pkg["devDependencies"].items():
        if not re.fullmatch(r"\d+\.\d+\.\d+", ver):
            raise AssertionError("%s is not pinned to an exact version: %r" % (name, ver))
        harness.eq(lock["packages"]["node_modules/" + name]["version"], ver, "package-lock version of " + name)
    with open(os.path.join(WEB_DIR, "vendor", "js-yaml", "VERSION")) as f:
        harness.eq(f.read().split()[0], "js-yaml@" + pkg["devDependencies"]["js-yaml"], "web/vendor/js-yaml/VERSION")
    installed = os.path.join(BROWSER_DIR, "node_modules", "js-yaml", "dist", "browser", "js-yaml.esm.min.mjs")
    if not os.path.exists(installed):
        raise AssertionError("%s missing: run tests/browser/install" % os.path.relpath(installed, harness.ROOT))
    with open(installed, "rb") as a, open(os.path.join(WEB_DIR, "vendor", "js-yaml", "js-yaml.esm.min.js"), "rb") as b:
        if a.read() != b.read():
            raise AssertionError("web/vendor/js-yaml/js-yaml.esm.min.js differs from the pinned npm package")


@harness.timeout(BROWSER_RUN_TIMEOUT + 30)
def test_dashboard_in_chromium():
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError("%s not found (apt-get install chromium)" % CHROMIUM)
    if shutil.which(NODE) is None:
        raise AssertionError("node not found (apt-get install nodejs)")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        raise AssertionError("tests/browser/node_modules/playwright-core missing: run tests/browser/install")
    out = harness.out_dir()
    _keep_logs(out)
    plan = {
        "base_url": S["base"], "token": S["token"], "bad_token": S["bad_token"], "out_dir": out,
        "chromium": CHROMIUM, "timezone": "Asia/Tokyo", "account": ACCOUNT,
        "listing": [list(x) for x in S["listing"]],
        "xss_uidl": S["uidl"]["xss"], "xss_subject": XSS_SUBJECT,
        "html_uidl": S["uidl"]["html"], "html_marker": S["html_marker"], "text_marker": S["text_marker"],
        "remote_marker": S["remote_marker"], "delete_uidl": S["uidl"]["delete"],
        "account_deliveries": len(S["sources"]),
        "oauth2_account": OAUTH2_ACCOUNT, "oauth2_verification_uri": S["auth"].url("/activate"),
        "oauth2_ca": S["auth"].pki.ca,
        "headers": {
            S["uidl"]["xss"]: {"from": "Mallory", "subject": XSS_SUBJECT, "date": "2023-01-02T09:00:00.000Z"},
            S["uidl"]["html"]: {"from": "HTML Sender", "subject": "An HTML newsletter",
                                "date": "2023-01-02T10:00:00.000Z"},
        },
        "filter_text": "newsletter", "filter_uidl": S["uidl"]["html"],
        # 4 deliveries tried once (one answered 500), then the failed one retried
        "webhook": "receiver", "webhook_attempts": len(S["sources"]) + 1,
        "webhook_delivered": len(S["sources"]),
        "tls_name": "pop3bridge tests",
    }
    plan_path = os.path.join(S["dir"], "plan.json")   # holds the token: not in the kept outputs
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    p = subprocess.Popen([NODE, os.path.join(BROWSER_DIR, "dashboard.mjs"), plan_path], cwd=harness.ROOT,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=env, start_new_session=True)

    def kill():
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    harness.register_cleanup(kill)
    try:
        text, _ = p.communicate(timeout=BROWSER_RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill()
        text, _ = p.communicate()
        raise AssertionError("the browser run did not finish in %ss: %s" % (BROWSER_RUN_TIMEOUT, text[-2000:]))
    finally:
        harness.unregister_cleanup(kill)
    text = text.decode("utf-8", "replace")
    with open(os.path.join(out, "browser.log"), "w") as f:
        f.write(text)
    _keep_logs(out)
    keep = os.environ.get("POP3BRIDGE_KEEP_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for name in os.listdir(out):
            if name.endswith(".png"):
                shutil.copy(os.path.join(out, name), os.path.join(keep, name))
    if S["token"] in text or S["token"] in open(os.path.join(out, "requests.log")).read():
        raise AssertionError("the token appears in the browser's output or request log")
    try:
        with open(os.path.join(out, "result.json")) as f:
            result = json.load(f)
    except (OSError, ValueError) as exc:
        raise AssertionError("no result from the browser run (%s): %s" % (exc, text[-2000:]))
    failed = [s for s in result["steps"] if not s["ok"]]
    if p.returncode != 0 or not result.get("ok") or failed:
        why = failed[0]["name"] + ": " + failed[0]["detail"].splitlines()[0] if failed else text[-1500:]
        raise AssertionError("browser run failed (exit %s) at %s" % (p.returncode, why))
    shots = [n for n in os.listdir(out) if n.endswith(".png")]
    if len(shots) < 15:
        raise AssertionError("expected a screenshot of each page, got %d" % len(shots))
    S["browser_done"] = True
    S["browser_result"] = result


def _after_browser():
    if not S.get("browser_done"):
        raise AssertionError("the browser run did not complete (see test_dashboard_in_chromium)")


def test_deleted_message_is_gone_from_dovecot():
    _after_browser()
    left = [uidl for _, uidl, _ in S["dc"].expected_listing(USER)]
    want = [S["uidl"][k] for k in ("plain", "xss", "html")]
    harness.eq(sorted(left), sorted(want), "UIDLs left in Dovecot's Maildir")
    datas = [m.data for m in S["dc"].messages(USER)]
    if S["sources"]["delete"] in datas:
        raise AssertionError("the deleted message's file is still in the Maildir")


def test_retried_delivery_reached_the_receiver():
    _after_browser()
    ds = _api("deliveries?account=%s&limit=100" % ACCOUNT)["deliveries"]
    harness.eq(sorted(d["status"] for d in ds), ["delivered"] * 4, "delivery statuses after Retry")
    retried = [d for d in ds if d["attempt_count"] == 2]
    harness.eq(len(retried), 1, "one delivery took two attempts")
    detail = _api("deliveries/" + retried[0]["id"])
    harness.eq([a["http_status"] for a in detail["attempts"]][:1], [500], "first attempt answered 500")
    if not 200 <= detail["attempts"][-1]["http_status"] < 300:
        raise AssertionError("last attempt not 2xx: %r" % detail["attempts"])
    events = [n for n in os.listdir(S["events"]) if n.endswith(".json")]
    uidls = set()
    for n in events:
        with open(os.path.join(S["events"], n)) as f:
            uidls.add(json.load(f)["data"]["message"]["uidl"])
    harness.eq(sorted(uidls), sorted(S["uidl"].values()), "UIDLs of the events the receiver verified")


def test_nothing_loaded_from_the_remote_host_and_no_dialog():
    _after_browser()
    harness.eq(_Trap.hits, [], "requests that reached the remote host")
    harness.eq(S["browser_result"]["dialogs"], [], "dialogs in the browser")


def test_connected_account_in_the_browser():
    """The "Connect" walk-through in the browser ended with a stored grant:
    the authorization server saw one device authorization, approved at its
    verification page, and Dovecot let the account in with an XOAUTH2 token."""
    _after_browser()
    a = S["auth"]
    harness.eq([e["ok"] for e in a.events("device_authorization")], [True], "device authorizations")
    harness.eq([e["user"] for e in a.events("activate")], [OAUTH2_USER], "approvals at the page")
    harness.eq([e["ok"] for e in a.events("device_code") if e["ok"]], [True], "grants")
    acc = _api("accounts/" + OAUTH2_ACCOUNT)
    harness.eq((acc["state"], acc["oauth2"]["authorization"]), ("idle", "authorized"), "the account")
    if not re.search(r"Login: user=<%s>, method=XOAUTH2" % OAUTH2_USER, S["dc"].log_since(0)):
        raise AssertionError("no XOAUTH2 login of %s in Dovecot's log" % OAUTH2_USER)
    log = _log_tail("bridge.log", 10 ** 7)
    with a.lock:
        secrets_seen = [t for t in list(a._access) + list(a._refresh) + list(a._devices) if t in log]
    harness.eq(secrets_seen, [], "tokens or device codes in the bridge's log")


def test_listing_headers_come_from_top_for_mail_not_stored():
    """GET .../messages?headers=1: a message the bridge has not stored (it
    arrived after the last poll) gets From/Subject/Date from TOP n 0; the
    stored ones from the store; the answer validates against openapi.yaml."""
    _after_browser()
    late = ("From: Late Sender <late@example.com>\nTo: alice@example.com\n"
            "Subject: =?UTF-8?Q?Sp=C3=A4t?= arrival\nDate: Tue, 03 Jan 2023 08:30:00 +0100\n"
            "Message-ID: <late@example.com>\n\nlate body\n").encode()
    S["dc"].deliver(USER, late)
    got = _api("accounts/%s/messages?headers=1" % ACCOUNT)["messages"]
    fresh = [m for m in got if not m["stored"]]
    harness.eq(len(fresh), 1, "messages not stored")
    harness.eq(fresh[0]["from"], {"name": "Late Sender", "address": "late@example.com"}, "From via TOP")
    harness.eq(fresh[0]["subject"], "Sp\u00e4t arrival", "Subject via TOP (RFC 2047 decoded)")
    harness.eq(fresh[0]["date"], "2023-01-03T07:30:00Z", "Date via TOP, in UTC")
    stored = {m["uidl"]: m for m in got if m["stored"]}
    harness.eq(stored[S["uidl"]["html"]]["subject"], "An HTML newsletter", "Subject from the store")
    plain = _api("accounts/%s/messages" % ACCOUNT)["messages"]
    harness.eq(["subject" in m for m in plain], [False] * len(plain), "no headers without ?headers=1")
    status, _, _ = _http("api/v1/accounts/%s/messages?headers=2" % ACCOUNT, S["token"])
    harness.eq(status, 400, "headers=2")


def test_dashboard_endpoints_match_openapi():
    """The answers the new pages read validate against openapi.yaml, with the
    figures of this run: the account's last session (TLS, CAPA) and polls,
    the webhook's statistics and the hourly traffic."""
    _after_browser()
    spec = openapi.Spec(os.path.join(harness.ROOT, "openapi.yaml"))
    bodies = {}
    for path in ("/api/v1/accounts/%s" % ACCOUNT, "/api/v1/accounts/%s/messages?headers=1" % ACCOUNT,
                 "/api/v1/webhooks", "/api/v1/stats/hourly?hours=48"):
        status, headers, body = _http(path, S["token"])
        problems = spec.check("GET", path, status, headers.get("Content-Type"), body)
        if status != 200 or problems:
            raise AssertionError("%s: HTTP %d %s" % (path, status, "; ".join(problems[:5])))
        bodies[path.split("?")[0]] = json.loads(body)
    acc = bodies["/api/v1/accounts/%s" % ACCOUNT]
    tls = acc["last_session"]["tls"]
    harness.eq(tls["verified"], True, "the last session's certificate was verified")
    if "pop3bridge tests" not in tls["issuer"]:
        raise AssertionError("issuer %r is not the test CA" % tls["issuer"])
    if "UIDL" not in acc["last_session"]["capabilities"]:
        raise AssertionError("CAPA without UIDL: %r" % acc["last_session"]["capabilities"])
    harness.eq(acc["polls"][-1]["new_messages"], len(S["sources"]), "the first poll's new messages")
    wh = bodies["/api/v1/webhooks"]["webhooks"][0]
    harness.eq((wh["name"], wh["stats"]["attempts_last_day"], wh["stats"]["delivered_last_day"]),
               ("receiver", len(S["sources"]) + 1, len(S["sources"])), "webhook statistics")
    harness.eq(wh["stats"]["last_error"]["http_status"], 500, "the last error")
    hours = bodies["/api/v1/stats/hourly"]["hours"]
    harness.eq(len(hours), 48, "hours")
    harness.eq(sum(x["received"] for x in hours), len(S["sources"]), "messages received by hour")


INSTANCES_LEASE_S = 3         # store.lease of the instances test: a dead instance leaves the panel after it
INSTANCES_RUN_TIMEOUT = 150   # the node script bounds itself to 120 s


def _browser_ready():
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError("%s not found (apt-get install chromium)" % CHROMIUM)
    if shutil.which(NODE) is None:
        raise AssertionError("node not found (apt-get install nodejs)")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        raise AssertionError("tests/browser/node_modules/playwright-core missing: run tests/browser/install")


@harness.timeout(INSTANCES_RUN_TIMEOUT + 60)
def test_instances_panel_on_postgresql():
    """Two instances on one PostgreSQL store: the accounts page lists both
    (API URL, a recent heartbeat, the accounts each polls, every account
    once), and an account's poll history names the instance that polls it
    (the other one, if it holds any); after a kill -9 of one, its row goes away (its heartbeat older
    than store.lease) and the survivor shows every account."""
    _browser_ready()
    if not postgres.available():
        raise AssertionError("PostgreSQL 15 not found (apt-get install postgresql-15)")
    pg = postgres.Postgres().start()
    try:
        pg.create_db("web")
        names = ["inst%d" % i for i in range(4)]
        env = {"T_PG_PW": pg.password, "T_API": S["token"]}
        accounts = []
        for n in names:
            pw = "pw-" + secrets.token_hex(8)
            S["dc"].add_user(n, pw)
            env["T_PW_" + n.upper()] = pw
            accounts.append({"name": n, "host": "127.0.0.1", "port": S["dc"].tls_port,
                             "tls": "implicit", "ca_file": pkimod.get().ca, "username": n,
                             "password_env": "T_PW_" + n.upper(), "poll_interval": "1s",
                             "start": "all"})
        bs = []
        for k in range(2):
            port = dovecot.free_port()
            cfg = {"log_level": "info",
                   "store": {"url": pg.db_url("web"), "password_env": "T_PG_PW",
                             "lease": "%ds" % INSTANCES_LEASE_S},
                   "api": {"listen": "127.0.0.1:%d" % port,
                           "public_url": "http://127.0.0.1:%d" % port,
                           "tokens": [{"name": "t", "token_env": "T_API"}], "web_dir": WEB_DIR},
                   "accounts": accounts}
            bs.append(Bridge(cfg, env, name="instances-%d" % k).start())
        stays, killed = bs

        def ids():
            st, _, body = _http_at(stays, "api/v1/instances")
            return st == 200 and len(json.loads(body)["instances"]) == 2
        harness.wait_for(ids, START_TIMEOUT, 0.2, "both instances' heartbeats")

        def inst_id(b):
            return "%s:%s" % (os.uname().nodename[:50], b.config["api"]["listen"].rsplit(":", 1)[1])
        out = harness.out_dir()
        plan = {"base_url": stays.config["api"]["public_url"] + "/", "token": S["token"],
                "out_dir": out, "chromium": CHROMIUM, "accounts": names,
                "instances": [{"id": inst_id(b), "public_url": b.config["api"]["public_url"]}
                              for b in bs]}
        plan_path = os.path.join(out, "instances-plan.json")
        with open(plan_path, "w") as f:
            json.dump(plan, f)
        p = subprocess.Popen([NODE, os.path.join(BROWSER_DIR, "instances.mjs"), plan_path],
                             cwd=harness.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)

        def kill():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        harness.register_cleanup(kill)
        lines = []
        deadline = time.monotonic() + INSTANCES_RUN_TIMEOUT
        while True:
            line = p.stdout.readline().decode("utf-8", "replace")
            if not line or time.monotonic() > deadline:
                kill()
                raise AssertionError("the browser script ended before it was ready:\n" + "".join(lines))
            lines.append(line)
            if line.strip() == "ready":
                break
        killed.kill9()
        killed_at = time.monotonic()
        p.stdin.write(b"killed\n")
        p.stdin.flush()
        rest, _ = p.communicate(timeout=max(deadline - time.monotonic(), 1))
        harness.unregister_cleanup(kill)
        text = "".join(lines) + rest.decode("utf-8", "replace")
        print(text)
        if p.returncode != 0:
            raise AssertionError("instances.mjs failed (exit %d):\n%s" % (p.returncode, text))
        with open(os.path.join(out, "result.json")) as f:
            res = json.load(f)
        gone = res["steps"][-1]["detail"]["seconds"]
        print("the killed instance left the panel %.1f s after the kill (%.1f s measured here)"
              % (gone, time.monotonic() - killed_at))
        harness.eq(stays.stop(), 0, "the surviving instance's exit code")
    finally:
        pg.stop()


def _http_at(b, path):
    """(status, headers, body) of GET path on instance b, with the test token."""
    req = urllib.request.Request(b.config["api"]["public_url"] + "/" + path,
                                 headers={"Authorization": "Bearer " + S["token"]})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()
    except OSError:
        return 0, {}, b""
