"""OAuth2 built in (issue 11) with real parts: an authorization server
started here on loopback over TLS (tests/lib/oauth2_server.py: token
endpoint with refresh-token rotation, device authorization, an authorization
endpoint for PKCE, introspection, revocation), a real Dovecot whose XOAUTH2
and OAUTHBEARER logins are checked by `passdb oauth2` against that server's
introspection endpoint (a login succeeds only with a currently valid
token), the real webhook receiver, and `pop3bridge` itself: `oauth2 login`,
`oauth2 status`, `check-config` and `run`.

Every test ends by checking that no token the authorization server issued,
and no client secret or secrets key, appears in anything the bridge printed,
logged or answered.
"""

import hashlib
import http.client
import json
import os
import re
import secrets
import select
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import bridge
import dovecot
import harness
import mailgen
import oauth2_server
import openapi
from bridge import Bridge, Receiver

TIMEOUT = 90
ACCOUNT = "acct"
HOOK = "hook"
CLIENT_SECRET = "cs-" + secrets.token_urlsafe(16)
REAUTH = "re-authorize: the refresh token was revoked or has expired"
SPEC = openapi.Spec(os.path.join(harness.ROOT, "openapi.yaml"))

AS = None      # the authorization server of the module (1 h tokens)
DC = None      # Dovecot checking tokens against AS


def setup_module():
    global AS, DC
    AS = oauth2_server.AuthServer(name="oauth2-main").start()
    DC = dovecot.Dovecot(name="dovecot-oauth2", oauth2=AS.introspect_url).start()


def teardown_module():
    if DC:
        DC.stop()
    if AS:
        AS.stop()


# ---- setup ---------------------------------------------------------------------

class Case:
    """A mailbox user, a receiver, and a bridge whose account logs in with
    tokens from authorization server `a`."""

    def __init__(self, user, a=None, dc=None, flow="device_code", poll="1h", **oauth2):
        self.a = a or AS
        self.dc = dc or DC
        self.user = user
        self.dc.add_user(user, secrets.token_urlsafe(12))  # its password is never used
        self.key = secrets.token_hex(32)
        self.whsec = bridge.new_secret()
        self.api_token = secrets.token_urlsafe(18)
        self.rcv = Receiver(self.whsec).start()
        o = {"provider": "custom", "flow": flow, "client_id": self.a.client_id,
             "token_url": self.a.token_url, "device_authorization_url": self.a.device_url,
             "authorization_url": self.a.authorize_url, "ca_file": self.a.pki.ca, "scope": "pop"}
        o.update(oauth2)
        self.acct = {"name": ACCOUNT, "host": "127.0.0.1", "port": self.dc.tls_port,
                     "ca_file": self.dc.pki.ca, "username": user, "oauth2": o,
                     "start": "all", "poll_interval": poll, "webhooks": [HOOK]}
        self.cfg = {"log_level": "debug", "secrets_key_env": "T_SECRETS_KEY",
                    "webhooks": [{"name": HOOK, "url": self.rcv.url, "secret_env": "T_WHSEC",
                                  "retry_schedule": ["1s"] * 5}],
                    "accounts": [self.acct]}
        # always an API port of its own: the default one may be taken
        self.api_port = dovecot.free_port()
        self.cfg["api"] = {"listen": "127.0.0.1:%d" % self.api_port,
                           "tokens": [{"name": "t", "token_env": "T_API_TOKEN"}]}
        env = {"T_SECRETS_KEY": self.key, "T_WHSEC": self.whsec, "T_API_TOKEN": self.api_token}
        if "client_secret_env" in o:
            env[o["client_secret_env"]] = CLIENT_SECRET
        self.bridge = Bridge(self.cfg, env)
        self.outputs = []   # everything the bridge printed, for the secret check

    def deliver(self, *seeds):
        return [self.dc.deliver(self.user, mailgen.message(s, 2000)) for s in seeds]

    def cli(self, *args, env=None, timeout=60):
        r = harness.run_cli(list(args), env=dict(self.bridge.secrets, **(env or {})),
                            timeout=timeout)
        self.outputs += [r.stdout, r.stderr]
        return r

    def status(self):
        r = self.cli("oauth2", "status", "--config", self.bridge.config_path)
        harness.check_ok(r)
        return r.stdout

    def once(self, expect=0):
        r = self.bridge.run_once()
        self.outputs += [r.stdout, r.stderr]
        if r.code != expect:
            raise AssertionError("run --once: expected exit %d: %s" % (expect, r.describe()))
        return r

    def login_device(self, approve_as=None, deny=False, approve_after=0):
        """`oauth2 login` by device code, the person approving (or denying)
        the printed code at the server (after approve_after seconds).
        Returns (exit code, stdout, stderr)."""
        p = subprocess.Popen([harness.binary(), "oauth2", "login", "--config",
                              self.bridge.config_path, ACCOUNT],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.bridge.env(), cwd=harness.ROOT,
                             start_new_session=True)

        def kill():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        harness.register_cleanup(kill)
        out = b""
        deadline = time.monotonic() + 20
        while b"Waiting for the authorization" not in out:
            left = deadline - time.monotonic()
            r, _, _ = select.select([p.stdout], [], [], max(left, 0))
            chunk = os.read(p.stdout.fileno(), 4096) if r else b""
            if not chunk:
                kill()
                raise AssertionError("oauth2 login printed no code: %r %r" % (out, p.stderr.read()))
            out += chunk
        text = out.decode()
        m = re.search(r"open this page in a browser:\n  (\S+)\nand enter the code: (\S+)\n", text)
        if not m:
            kill()
            raise AssertionError("no URL and code in %r" % text)
        harness.eq(m.group(1), self.a.url("/activate"), "verification URL")
        if approve_after:
            time.sleep(approve_after)
        if deny:
            self.a.deny(m.group(2))
        else:
            self.a.approve(m.group(2), approve_as or self.user)
        rest, err = p.communicate(timeout=40)
        harness.unregister_cleanup(kill)
        stdout, stderr = text + rest.decode(), err.decode()
        self.outputs += [stdout, stderr]
        return p.returncode, stdout, stderr

    def api(self, path, method="GET", timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=timeout)
        c.request(method, path, headers={"Authorization": "Bearer " + self.api_token})
        r = c.getresponse()
        raw = r.read()
        body = raw.decode()
        c.close()
        self.outputs.append(body)
        problems = SPEC.check(method, path, r.status, r.getheader("Content-Type", ""), raw)
        if problems:
            raise AssertionError("%s %s: the answer does not match openapi.yaml: %s"
                                 % (method, path, "; ".join(problems[:5])))
        return r.status, json.loads(body) if body else None

    def start_api(self):
        """Start the bridge and wait until its API answers."""
        self.bridge.start()

        def up():
            if not self.bridge.running():
                raise AssertionError("the bridge exited: %s" % self.bridge.log()[-2000:])
            try:
                return self.api("/healthz")[0] == 200
            except OSError:
                return False
        harness.wait_for(up, 15, 0.1, "the bridge's API")

    def no_secrets_anywhere(self, *more):
        """No token the authorization servers issued, no client secret, no
        secrets key in anything printed, logged or answered."""
        texts = self.outputs + [self.bridge.log()] + list(more)
        for path in self.bridge.log_paths:
            texts.append(open(path, errors="replace").read())
        tokens = set()
        for a in {id(self.a): self.a, id(AS): AS}.values():
            with a.lock:
                tokens |= set(a._access) | set(a._refresh) | set(a._devices) | set(a._codes)
        tokens |= {CLIENT_SECRET, self.key}
        for t in tokens:
            for text in texts:
                if t and t in text:
                    raise AssertionError("a secret (%s...) appears in the bridge's output" % t[:6])


def poll_events(log, name):
    return len(re.findall(r"event=%s\b" % name, log))


# ---- configuration ---------------------------------------------------------------

def test_check_config_needs_the_key_and_shows_no_secret():
    c = Case("cfg1", client_secret_env="T_CLIENT_SECRET")
    r = c.cli("check-config", c.bridge.config_path)
    harness.check_ok(r)
    assert "secrets_key=env:T_SECRETS_KEY" in r.stdout, r.stdout
    assert "client_secret=env:T_CLIENT_SECRET" in r.stdout, r.stdout
    assert "provider=custom" in r.stdout and "flow=device_code" in r.stdout, r.stdout
    # without the key: one line naming the file and both keys
    cfg = dict(c.cfg)
    del cfg["secrets_key_env"]
    c.bridge.write_config(cfg)
    r = c.cli("check-config", c.bridge.config_path)
    harness.eq(r.code, 1, "exit code")
    harness.eq(r.stderr.splitlines()[0],
               "%s: secrets_key_env or secrets_key_file is required: accounts[0].oauth2 uses "
               "provider \"custom\", whose tokens are kept in the store encrypted under that key "
               "(64 hex digits: openssl rand -hex 32)" % c.bridge.config_path, "the problem")
    # a key that is not 64 hex digits: says so, without the value
    c.bridge.write_config(c.cfg)
    for bad, why in (("abc123", "not 6 characters"), ("x" * 64, "character 1 is not one")):
        r = c.cli("check-config", c.bridge.config_path, env={"T_SECRETS_KEY": bad})
        harness.eq(r.code, 1, "exit code")
        line = r.stderr.splitlines()[0]
        harness.eq(line, "%s: secrets_key_env: the secrets key must be 64 hex digits%s" % (
            c.bridge.config_path, (" (32 bytes, as `openssl rand -hex 32` prints them), " + why)
            if "characters" in why else "; " + why), "the problem")
        assert bad not in r.stderr
    c.no_secrets_anywhere()


# ---- authorizing -------------------------------------------------------------------

def test_device_code_login_then_poll():
    """oauth2 login by device code through the CLI: the printed URL and
    code, the approval at the server, the grant stored; then a poll logs in
    with XOAUTH2 (checked by Dovecot against the server) and delivers."""
    c = Case("dev1", poll="3s")   # a failed poll is tried again after one interval
    c.acct["auth"] = ["xoauth2"]
    c.bridge.write_config(c.cfg)
    assert "acct: not authorized (custom, device_code)" in c.status()
    # before login: the poll fails at once, nothing sent to the token endpoint
    n_token = len(AS.events("refresh_token"))
    r = c.once(expect=1)
    assert re.search(r"event=poll_failed account=acct state=auth_error retry_in_s=\d+ "
                     r"error=\"Authentication: account acct: not authorized yet: run "
                     r"`pop3bridge oauth2 login`\"", r.stderr), r.stderr
    harness.eq(len(AS.events("refresh_token")), n_token, "token requests before login")
    code, out, err = c.login_device()
    harness.eq(code, 0, "exit code (stderr %r)" % err)
    assert re.search(r'Account "acct" is authorized \(custom, device_code\): the access token is '
                     r'valid until \S+Z; a refresh token is kept\.', out), out
    assert "(or open %s" % AS.url("/activate?user_code=") in out, out
    ev = [e for e in AS.events("device_code") if e.get("user") == "dev1"]
    harness.eq([e["ok"] for e in ev][-1], True, "device grant")
    st = c.status()
    assert re.search(r"^acct: authorized \(custom, device_code\)\n  access token expires:    "
                     r"\S+Z \(in (59|60) min\)\n  refresh token last used: never\n", st, re.M), st
    datas = [mailgen.message(s, 2000) for s in (1101, 1102)]
    for d in datas:
        DC.deliver("dev1", d)
    c.once()
    evs = c.rcv.wait_events(2, 30)
    harness.eq(sorted(e.json["data"]["message"]["sha256"] for e in evs),
               sorted(hashlib.sha256(d.replace(b"\n", b"\r\n")).hexdigest() for d in datas),
               "the messages delivered")
    log = DC.log_since(0)
    assert re.search(r"Login: user=<dev1>, method=XOAUTH2", log), "no XOAUTH2 login in Dovecot's log"
    c.no_secrets_anywhere()


def test_device_code_denied_and_slow_down():
    c = Case("dev2")
    code, out, err = c.login_device(deny=True)
    harness.eq(code, 5, "exit code")
    harness.eq(err.strip(), "pop3bridge: Authentication: account acct: the authorization was denied",
               "stderr")
    assert "acct: not authorized" in c.status()
    # polled faster than the server wants (it announced 1 s, wants 3 s):
    # slow_down, after which the CLI polls 5 s less often
    a = oauth2_server.AuthServer(name="oauth2-slow", device_interval=1,
                                 device_min_interval=3).start()
    c2 = Case("dev3", a=a)
    t0 = time.monotonic()
    code, out, err = c2.login_device(approve_after=3)
    harness.eq(code, 0, "exit code (stderr %r)" % err)
    ev = a.events("device_code")
    kinds = [e["error"] if not e["ok"] else "ok" for e in ev]
    harness.eq(kinds, ["authorization_pending", "slow_down", "ok"], "device polls")
    assert ev[2]["t"] - ev[1]["t"] >= 5.5, "the CLI did not add 5 s after slow_down"
    assert time.monotonic() - t0 >= 7
    c.no_secrets_anywhere()
    c2.no_secrets_anywhere()
    a.stop()


def test_token_endpoint_tls_is_verified():
    """The authorization server's certificate is verified: signed by a CA
    the account does not trust, nothing is sent."""
    c = Case("tls1", ca_file=AS.pki.other_ca)
    n = len(AS.events())
    r = c.cli("oauth2", "login", "--config", c.bridge.config_path, ACCOUNT)
    harness.check_failure(r, 4, r"^pop3bridge: TLS: oauth2: device authorization endpoint: ")
    harness.eq(len(AS.events()), n, "requests that reached the server")
    c.no_secrets_anywhere()


def _follow(url):
    """A browser: GET url at the authorization server, follow its redirect to
    the loopback listener; (status, page) of the listener."""
    ctx = ssl.create_default_context(cafile=AS.pki.ca)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(url, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _login_code(c, **kw):
    p = subprocess.Popen([harness.binary(), "oauth2", "login", "--config", c.bridge.config_path,
                          "--timeout", "30", ACCOUNT], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=c.bridge.env(),
                         cwd=harness.ROOT, start_new_session=True)
    harness.register_cleanup(lambda: p.poll() is None and os.killpg(p.pid, signal.SIGKILL))
    line = b""
    deadline = time.monotonic() + 20
    out = b""
    while b"Waiting for the browser" not in out and time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 1)
        if r:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    text = out.decode()
    m = re.search(r"in a browser on this machine:\n  (\S+)\n", text)
    assert m, "no URL printed: %r" % text
    line = m.group(1)
    status, page = _follow(line)
    rest, err = p.communicate(timeout=40)
    c.outputs += [text + rest.decode(), err.decode(), page]
    return p.returncode, text + rest.decode(), err.decode(), line, status, page


def test_authorization_code_pkce_loopback():
    """The PKCE flow: the printed URL at the authorization server, which
    redirects the browser to the CLI's listener on 127.0.0.1; the code is
    exchanged with the verifier (the server checks S256)."""
    c = Case("code1", flow="authorization_code")
    AS.authorize_as = "code1"
    code, out, err, url, status, page = _login_code(c)
    harness.eq(code, 0, "exit code (stderr %r)" % err)
    harness.eq(status, 200, "the listener's answer")
    assert "authorization was received" in page, page
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    harness.eq(q["code_challenge_method"], "S256", "challenge method")
    harness.eq(len(q["code_challenge"]), 43, "challenge length")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", q["redirect_uri"]), q["redirect_uri"]
    harness.eq(q["scope"], "pop", "scope")
    ev = AS.events("authorization_code")[-1]
    harness.eq((ev["ok"], ev["user"]), (True, "code1"), "code exchange")
    c.deliver(1201)
    c.once()
    c.rcv.wait_events(1, 30)
    # the user says no: the CLI says so
    AS.authorize_as = None
    code, out, err, url, status, page = _login_code(c)
    harness.eq(code, 5, "exit code")
    harness.eq(status, 400, "the listener's answer")
    assert "the authorization server answered access_denied" in err, err
    assert 'server said "the user said no"' in err, err
    c.no_secrets_anywhere()


def test_client_credentials_basic_auth():
    """Client credentials: no login needed (a token is requested when a poll
    needs one), the client authenticates by HTTP Basic to a custom server,
    and `oauth2 login` checks that a token can be had."""
    a = oauth2_server.AuthServer(name="oauth2-cc", client_secret=CLIENT_SECRET,
                                 user_for_clients="cc1").start()
    dc = dovecot.Dovecot(name="dovecot-cc", oauth2=a.introspect_url).start()
    try:
        c = Case("cc1", a=a, dc=dc, flow="client_credentials", client_secret_env="T_CLIENT_SECRET")
        assert "acct: no token yet (custom, client_credentials)" in c.status()
        c.deliver(1301)
        c.once()
        c.rcv.wait_events(1, 30)
        ev = a.events("client_credentials")
        harness.eq([(e["ok"], e["auth"]) for e in ev], [(True, "basic")], "token requests")
        assert re.search(r"^acct: authorized \(custom, client_credentials\)\n  access token "
                         r"expires: ", c.status(), re.M)
        r = c.cli("oauth2", "login", "--config", c.bridge.config_path, ACCOUNT)
        harness.check_ok(r)
        assert 'Account "acct" is authorized (custom, client_credentials)' in r.stdout, r.stdout
        harness.eq(len(a.events("client_credentials")), 2, "token requests")
        # a wrong client secret: one clear line, exit 5
        r = c.cli("oauth2", "login", "--config", c.bridge.config_path, ACCOUNT,
                  env={"T_CLIENT_SECRET": "wrong"})
        harness.check_failure(r, 5, r"^pop3bridge: Authentication: oauth2: the token endpoint "
                                    r"answered 401 invalid_client$")
        c.no_secrets_anywhere()
    finally:
        dc.stop()
        a.stop()


# ---- staying authorized --------------------------------------------------------------

@harness.timeout(200)
def test_short_tokens_refreshed_once_each():
    """Access tokens of 20 s, the bridge polling every 2 s for 90 s: no poll
    fails, each token is refreshed once (by the newest refresh token, never
    twice), the rotated refresh token is what the next refresh uses (so it
    was persisted), and mail keeps flowing."""
    a = oauth2_server.AuthServer(name="oauth2-short", access_lifetime=20).start()
    dc = dovecot.Dovecot(name="dovecot-short", oauth2=a.introspect_url).start()
    try:
        c = Case("short1", a=a, dc=dc, poll="2s")
        code, _, err = c.login_device()
        harness.eq(code, 0, "login (stderr %r)" % err)
        c.bridge.start()
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < 90:
            c.deliver(1400 + sent)
            sent += 1
            time.sleep(6)
        c.rcv.wait_events(sent, 30)
        status, acct = c.api("/api/v1/accounts/" + ACCOUNT)
        assert status == 200 and acct["state"] in ("idle", "polling"), acct
        harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
        log = c.bridge.log()
        harness.eq(poll_events(log, "poll_failed"), 0, "failed polls")
        assert poll_events(log, "poll_done") >= 20, "only %d polls in 90 s" % poll_events(log, "poll_done")
        refs = a.events("refresh_token")
        assert all(e["ok"] and not e["reuse"] for e in refs), refs
        # each refresh token used once, in order: 1, 2, 3...
        harness.eq([e["n"] for e in refs], list(range(1, len(refs) + 1)), "refresh tokens used")
        # once per token: ~90 s / (20 s / 2); never two for one token
        assert 5 <= len(refs) <= 12, "%d refreshes in 90 s" % len(refs)
        gaps = [b["t"] - a_["t"] for a_, b in zip(refs, refs[1:])]
        assert min(gaps) >= 8, "two refreshes %.1f s apart" % min(gaps)
        harness.eq(poll_events(log, "oauth2_refreshed"), len(refs), "refreshes the bridge logged")
        # every introspection of a token the bridge used said active
        st = c.status()
        assert re.search(r"refresh token last used: \S+Z \(\d+ s ago\)", st), st
        # the next refresh, after a restart, uses the newest refresh token:
        # the rotated one was persisted
        newest, n = a.current_refresh("short1")
        c.bridge.start()
        harness.wait_for(lambda: len(a.events("refresh_token")) > len(refs), 30,
                         what="a refresh after the restart")
        harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
        last = a.events("refresh_token")[len(refs)]
        harness.eq((last["ok"], last["n"], last["reuse"]), (True, n, False),
                   "the refresh after the restart")
        c.no_secrets_anywhere()
    finally:
        dc.stop()
        a.stop()


@harness.timeout(200)
def test_kill9_in_the_middle_of_a_refresh():
    """kill -9 while the token endpoint is answering a refresh: nothing is
    lost — after a restart the grant still works, every message is
    delivered, and no refresh is refused."""
    a = oauth2_server.AuthServer(name="oauth2-kill", access_lifetime=20).start()
    dc = dovecot.Dovecot(name="dovecot-kill", oauth2=a.introspect_url).start()
    try:
        c = Case("kill1", a=a, dc=dc, poll="2s")
        code, _, err = c.login_device()
        harness.eq(code, 0, "login (stderr %r)" % err)
        c.deliver(1501, 1502)
        c.bridge.start()
        c.rcv.wait_events(2, 30)
        a.token_delay = 4.0
        a.refresh_started.clear()
        assert a.refresh_started.wait(40), "no refresh began"
        time.sleep(1.0)           # the request is at the server, the answer not sent yet
        c.bridge.kill9()
        a.token_delay = 0
        c.deliver(1503, 1504)
        restart = time.time()
        c.bridge.start()
        c.rcv.wait_events(4, 90)
        # a refresh after the restart succeeds with the refresh token the
        # bridge had saved (the one of the interrupted request: still valid)
        harness.wait_for(lambda: any(e["ok"] and e["t"] > restart
                                     for e in a.events("refresh_token")), 60,
                         what="a refresh after the restart")
        c.deliver(1505)
        c.rcv.wait_events(5, 60)
        harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
        refs = a.events("refresh_token")
        bad = [e for e in refs if not e["ok"]]
        harness.eq(bad, [], "refused refreshes")
        assert any(e["reuse"] for e in refs), "the interrupted refresh was not repeated: %s" % refs
        log = c.bridge.log()
        assert "oauth2_reauthorize" not in log
        ids = {e.id for e in c.rcv.events()}
        harness.eq(len(ids), 5, "distinct webhook-ids")
        c.no_secrets_anywhere()
    finally:
        dc.stop()
        a.stop()


@harness.timeout(150)
def test_revocation_auth_error_then_login_resumes():
    """The grant revoked at the server: the account goes to auth_error with
    "re-authorize: ...", logged once, with no further token request; after
    `oauth2 login` polling resumes."""
    a = oauth2_server.AuthServer(name="oauth2-rev", access_lifetime=3600).start()
    dc = dovecot.Dovecot(name="dovecot-rev", oauth2=a.introspect_url).start()
    try:
        c = Case("rev1", a=a, dc=dc, poll="2s")
        code, _, err = c.login_device()
        harness.eq(code, 0, "login (stderr %r)" % err)
        c.deliver(1601)
        c.bridge.start()
        c.rcv.wait_events(1, 30)
        a.revoke_user("rev1")
        # Dovecot refuses the access token at the next poll; the bridge
        # refreshes once more, gets invalid_grant, and stops asking
        c.bridge.wait_log(r"event=oauth2_reauthorize", 30)
        status, acct = c.api("/api/v1/accounts/" + ACCOUNT)
        harness.eq(status, 200, "status")
        harness.eq(acct["state"], "auth_error", "state")
        assert REAUTH in acct["last_error"], acct
        n = len(a.events("refresh_token"))
        harness.eq(a.events("refresh_token")[-1]["error"], "invalid_grant", "last refresh")
        time.sleep(12)   # six poll intervals
        harness.eq(len(a.events("refresh_token")), n, "token requests after invalid_grant")
        log = c.bridge.log()
        harness.eq(poll_events(log, "oauth2_reauthorize"), 1, "oauth2_reauthorize lines")
        assert poll_events(log, "poll_failed") >= 3, "the account was not looked at each interval"
        line = [l for l in log.splitlines() if "event=oauth2_reauthorize" in l][0]
        assert "level=error" in line and REAUTH in line, line
        st = c.status()
        assert ("acct: %s (custom, device_code)" % REAUTH) in st, st
        # authorize again: polling resumes within a few intervals
        code, _, err = c.login_device()
        harness.eq(code, 0, "login again (stderr %r)" % err)
        c.deliver(1602)
        c.rcv.wait_events(2, 30)
        harness.wait_for(lambda: c.api("/api/v1/accounts/" + ACCOUNT)[1]["state"] in
                         ("idle", "polling"), 20, what="the account back to idle")
        harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
        c.no_secrets_anywhere()
    finally:
        dc.stop()
        a.stop()


def test_wrong_secrets_key_is_one_clear_error():
    c = Case("key1", poll="3s")
    code, _, err = c.login_device()
    harness.eq(code, 0, "login (stderr %r)" % err)
    other = secrets.token_hex(32)
    r = c.cli("oauth2", "status", "--config", c.bridge.config_path, env={"T_SECRETS_KEY": other})
    harness.check_ok(r)
    assert "acct: sealed under another secrets key (custom, device_code)" in r.stdout, r.stdout
    c.bridge.secrets["T_SECRETS_KEY"] = other
    r = c.once(expect=1)
    lines = [l for l in r.stderr.splitlines() if "event=poll_failed" in l]
    harness.eq(len(lines), 1, "poll_failed lines")
    assert re.search(r'error="Authentication: account acct: its OAuth2 tokens were sealed under another '
                     r'secrets key \(id [0-9a-f]{8}; the configured key\'s id is [0-9a-f]{8}\): '
                     r'restore that key, or authorize again with `pop3bridge oauth2 login`"',
                     lines[0]), lines[0]
    # losing the key means authorizing again, never a crash
    code, _, err = c.login_device()
    harness.eq(code, 0, "login with the new key (stderr %r)" % err)
    c.deliver(1701)
    c.once()
    c.rcv.wait_events(1, 30)
    c.no_secrets_anywhere()


@harness.timeout(120)
def test_token_endpoint_unavailable_retry_after():
    """A 503 with Retry-After: the current token is used while it lasts, no
    request is made before Retry-After, and the failure is shared by every
    poll (no retry storm)."""
    a = oauth2_server.AuthServer(name="oauth2-503", access_lifetime=20).start()
    dc = dovecot.Dovecot(name="dovecot-503", oauth2=a.introspect_url).start()
    try:
        c = Case("busy1", a=a, dc=dc, poll="2s")
        code, _, err = c.login_device()
        harness.eq(code, 0, "login (stderr %r)" % err)
        a.fail_next = [(503, {"error": "temporarily_unavailable"}, [("Retry-After", "45")])]
        c.bridge.start()
        c.bridge.wait_log(r"event=oauth2_refresh_failed", 30)
        failed_at = time.monotonic()
        line = [l for l in c.bridge.log().splitlines() if "event=oauth2_refresh_failed" in l][0]
        assert "http_status=503" in line and re.search(r"retry_in_s=4[45]\b", line), line
        assert "using=current_token" in line, line
        time.sleep(20)    # the token expires; polls go on failing, without asking
        harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
        after = [e for e in a.events() if e["kind"] == "refresh_token"]
        harness.eq(len(after), 1, "token requests (only the refused one)")
        log = c.bridge.log()
        assert re.search(r"event=poll_failed .*the token endpoint failed; next attempt in \d+ s",
                         log), log[-2000:]
        # before the token expired, polls still worked with it
        done_after = [l for l in log.splitlines()
                      if "event=poll_done" in l]
        assert len(done_after) >= 3, "no poll worked with the current token"
        assert time.monotonic() - failed_at < 45
        c.no_secrets_anywhere()
    finally:
        dc.stop()
        a.stop()


def test_failed_token_request_is_in_the_poll_history():
    """A poll that fails before any POP3 session because the token endpoint
    failed is one failed poll in the account's history (the API's polls,
    the dashboard's list), with the error and no secret."""
    a = oauth2_server.AuthServer(name="oauth2-hist", client_secret=CLIENT_SECRET).start()
    try:
        c = Case("hist1", a=a, flow="client_credentials", client_secret_env="T_CLIENT_SECRET")
        a.fail_next = [(503, {"error": "temporarily_unavailable"}, [("Retry-After", "60")])]
        c.start_api()
        c.bridge.wait_log(r"event=poll_failed", 30)
        status, acct = c.api("/api/v1/accounts/" + ACCOUNT)
        harness.eq(status, 200, "status")
        polls = acct["polls"]
        harness.eq([(p["outcome"], p["listed"], p["new_messages"]) for p in polls],
                   [("failed", 0, 0)], "polls")
        assert "token endpoint" in polls[0]["error"], polls[0]
        harness.eq(polls[0]["error"], acct["last_error"], "the poll's error")
        harness.eq(acct["last_session"], None, "last_session (no POP3 session)")
        harness.eq(len(a.events("client_credentials")), 1, "token requests")
        harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
        c.no_secrets_anywhere()
    finally:
        a.stop()


# ---- the REST API: device-code authorization, mailbox and sessions with tokens --------

DEVICE = "/api/v1/accounts/%s/oauth2/device"


def _forget_access_tokens(a, user):
    with a.lock:
        for t in [t for t, v in a._access.items() if a._grants[v["grant"]]["user"] == user]:
            del a._access[t]


def _device_end(c, what):
    def ended():
        st, d = c.api(DEVICE % ACCOUNT)
        return st == 200 and d["state"] != "pending" and d
    return harness.wait_for(ended, 15, 0.3, what)


@harness.timeout(90)
def test_api_device_flow_then_mailbox_and_session():
    """POST .../oauth2/device starts a device authorization (the URL and code
    to show, nothing secret), GET follows it while the token endpoint is
    polled in the background; once the person approved, the grant is
    stored, the account is polled, and the API's one-shot mailbox calls and
    explicit sessions log in to Dovecot (passdb oauth2) with the account's
    token.  A refusal ends as "denied"; accounts of other flows get 409."""
    c = Case("apidev1", poll="1h")
    c.acct["auth"] = ["xoauth2"]
    other = dict(c.acct, name="code", oauth2=dict(c.acct["oauth2"], flow="authorization_code"))
    c.cfg["accounts"].append(other)
    c.bridge.write_config(c.cfg)
    c.start_api()
    st, acct = c.api("/api/v1/accounts/" + ACCOUNT)
    harness.eq(st, 200, "GET account")
    harness.eq((acct["oauth2"]["flow"], acct["oauth2"]["authorization"]), ("device_code", "none"),
               "oauth2 before authorizing")
    # not authorized: the mailbox says why, and nothing reaches Dovecot
    st, prob = c.api("/api/v1/accounts/%s/messages" % ACCOUNT)
    harness.eq(st, 502, "mailbox before authorizing")
    assert "not authorized yet" in prob["detail"], prob
    harness.eq(c.api(DEVICE % ACCOUNT)[0], 404, "GET before any start")
    harness.eq(c.api(DEVICE % "nosuch", "POST")[0], 404, "unknown account")
    st, prob = c.api(DEVICE % "code", "POST")
    harness.eq(st, 409, "an authorization_code account")
    assert "authorization_code" in prob["detail"], prob
    n_dev = len(AS.events("device_authorization"))

    st, d = c.api(DEVICE % ACCOUNT, "POST", timeout=30)
    harness.eq(st, 201, "POST device (%r)" % d)
    harness.eq((d["state"], d["verification_uri"], d["interval"]),
               ("pending", AS.url("/activate"), 1), "the authorization")
    assert re.fullmatch(r"[0-9A-F]{4}-[0-9A-F]{4}", d["user_code"]), d
    assert 590 <= d["expires_in"] <= 600, d
    assert not any("device_code" in k for k in d), d
    # a second POST while pending: the same code, no new request upstream
    st, d2 = c.api(DEVICE % ACCOUNT, "POST")
    harness.eq((st, d2["user_code"]), (200, d["user_code"]), "POST while pending")
    harness.eq(len(AS.events("device_authorization")), n_dev + 1, "device authorization requests")
    time.sleep(2.5)
    harness.eq(c.api(DEVICE % ACCOUNT)[1]["state"], "pending", "state before approval")
    assert any(e.get("error") == "authorization_pending" for e in AS.events("device_code"))

    c.deliver(1801)
    AS.approve(d["user_code"], "apidev1")
    got = _device_end(c, "the authorization to end")
    harness.eq((got["state"], got["error"], got["expires_in"]), ("authorized", None, 0), "ended")
    harness.eq(c.api("/api/v1/accounts/" + ACCOUNT)[1]["oauth2"]["authorization"], "authorized",
               "oauth2 after approval")
    # the grant works: the requested poll delivers, the mailbox lists
    c.rcv.wait_events(1, 30)
    st, lst = c.api("/api/v1/accounts/%s/messages" % ACCOUNT, timeout=30)
    harness.eq((st, len(lst["messages"])), (200, 1), "mailbox listing")
    st, sess = c.api("/api/v1/accounts/%s/sessions" % ACCOUNT, "POST", timeout=30)
    harness.eq((st, sess["count"]), (201, 1), "session open")
    harness.eq(c.api("/api/v1/sessions/" + sess["id"], "DELETE")[0], 200, "session quit")
    logins = re.findall(r"Login: user=<apidev1>, method=XOAUTH2", DC.log_since(0))
    assert len(logins) >= 3, "XOAUTH2 logins of the poll, the listing and the session: %d" % len(logins)
    # the server forgets the account's access tokens (as after a password
    # change): the listing's login is refused, the bridge refreshes once and
    # tries again; so does a session's
    for what, method, path, want in (
            ("listing", "GET", "/api/v1/accounts/%s/messages" % ACCOUNT, 200),
            ("session", "POST", "/api/v1/accounts/%s/sessions" % ACCOUNT, 201)):
        _forget_access_tokens(AS, "apidev1")
        n_ref = len(AS.events("refresh_token"))
        st, body = c.api(path, method, timeout=30)
        harness.eq(st, want, "%s with a refused token (%r)" % (what, body))
        harness.eq([e["ok"] for e in AS.events("refresh_token")[n_ref:]], [True],
                   "refreshes for the %s" % what)
        if what == "session":
            harness.eq(c.api("/api/v1/sessions/" + body["id"], "DELETE")[0], 200, "quit")

    # a new authorization, refused by the person
    st, d3 = c.api(DEVICE % ACCOUNT, "POST", timeout=30)
    harness.eq(st, 201, "POST after the last one ended")
    assert d3["user_code"] != d["user_code"]
    AS.deny(d3["user_code"])
    got = _device_end(c, "the refusal")
    harness.eq((got["state"], got["error"]), ("denied", "the authorization was denied"), "refused")
    # the stored grant is untouched by a refused new one
    harness.eq(c.api("/api/v1/accounts/%s/messages" % ACCOUNT, timeout=30)[0], 200, "listing")
    harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
    log = c.bridge.log()
    assert "event=oauth2_device_authorized account=acct" in log
    assert d["user_code"] not in log, "the user code is not logged"
    c.no_secrets_anywhere()


@harness.timeout(90)
def test_idle_grant_refreshed_by_the_keeper():
    """Microsoft refresh tokens expire after 90 days unused: an account that
    is not polled (here: polled once an hour, with a valid access token)
    still has its refresh token used once it is 30 days old.  The grant's
    times are moved 31 days back in the store while the bridge runs; the
    keeper (first look 10 s after start) refreshes it, once, without a poll,
    and the store records the refresh token's use."""
    a = oauth2_server.AuthServer(name="oauth2-idle", access_lifetime=3600).start()
    dc = dovecot.Dovecot(name="dovecot-idle", oauth2=a.introspect_url).start()
    try:
        c = Case("idle1", a=a, dc=dc, poll="1h")
        code, _, err = c.login_device()
        harness.eq(code, 0, "login (stderr %r)" % err)
        c.start_api()
        c.bridge.wait_log(r"event=poll_done account=acct", 20)
        harness.eq(len(a.events("refresh_token")), 0, "refreshes of a fresh grant")
        month = 31 * 86400 * 1000
        path = os.path.join(c.bridge.state_dir, "pop3bridge.db")
        con = __import__("sqlite3").connect(path, timeout=10)
        with con:
            n = con.execute("UPDATE oauth2_tokens SET authorized_at = authorized_at - ?, "
                            "refresh_used_at = 0 WHERE account = ?", (month, ACCOUNT)).rowcount
        con.close()
        harness.eq(n, 1, "grant rows moved back")
        c.bridge.wait_log(r"event=oauth2_refreshed account=acct", 30)
        time.sleep(1)
        harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
        refs = a.events("refresh_token")
        harness.eq([(e["ok"], e["n"]) for e in refs], [(True, 1)], "one keep-alive refresh")
        log = c.bridge.log()
        harness.eq(poll_events(log, "oauth2_keepalive"), 1, "oauth2_keepalive lines")
        harness.eq(poll_events(log, "poll_done"), 1, "polls (the keeper refreshed, not a poll)")
        st = c.status()
        assert re.search(r"refresh token last used: \S+Z \(\d+ s ago\)", st), st
        c.no_secrets_anywhere()
    finally:
        dc.stop()
        a.stop()


@harness.timeout(60)
def test_api_device_code_expires():
    """Nobody approves: the background polling stops at the code's expiry
    (state expired, no request after it), and a new POST asks for a new
    code."""
    a = oauth2_server.AuthServer(name="oauth2-expiry", device_lifetime=4).start()
    try:
        c = Case("apiexp1", a=a, poll="1h")
        c.start_api()
        st, d = c.api(DEVICE % ACCOUNT, "POST", timeout=30)
        harness.eq((st, d["state"], d["expires_in"]), (201, "pending", 4), "POST device")
        got = _device_end(c, "the code to expire")
        harness.eq((got["state"], got["error"]),
                   ("expired", "the code expired before it was approved: start again"), "ended")
        n = len(a.events("device_code"))
        assert 2 <= n <= 4, "token requests while pending: %d" % n
        time.sleep(2)
        harness.eq(len(a.events("device_code")), n, "token requests after the expiry")
        st, d2 = c.api(DEVICE % ACCOUNT, "POST", timeout=30)
        harness.eq((st, d2["state"]), (201, "pending"), "a new start")
        assert d2["user_code"] != d["user_code"]
        harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
        log = c.bridge.log()
        assert "event=oauth2_device_ended account=acct state=expired" in log
        # the pending one ends with the bridge, and says so
        assert re.search(r'event=oauth2_device_ended account=acct state=error '
                         r'error="the bridge stopped before the code was approved"', log)
        c.no_secrets_anywhere()
    finally:
        a.stop()


@harness.timeout(60)
def test_login_while_stopped_polls_at_restart():
    """An account that failed for want of a grant is polled as soon as the
    bridge starts again after `oauth2 login`, not one poll interval (1 h
    here) after the failure."""
    c = Case("restart1", poll="1h")
    c.start_api()
    c.bridge.wait_log(r"event=poll_failed account=acct state=auth_error", 20)
    harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
    code, _, err = c.login_device()
    harness.eq(code, 0, "login (stderr %r)" % err)
    c.deliver(1901)
    c.start_api()
    c.rcv.wait_events(1, 30)
    harness.eq(c.api("/api/v1/accounts/" + ACCOUNT)[1]["state"], "idle", "state after the restart")
    harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
    c.no_secrets_anywhere()


@harness.timeout(60)
def test_api_device_authorizations_are_bounded():
    """At most 8 device authorizations are polled at once: the ninth account
    gets 429 with Retry-After, and asks nothing of the authorization server."""
    c = Case("bound1", poll="1h")
    names = ["acct%d" % i for i in range(9)]
    c.cfg["accounts"] = [dict(c.acct, name=n) for n in names]
    c.bridge.write_config(c.cfg)
    c.start_api()
    n_dev = len(AS.events("device_authorization"))
    for n in names[:8]:
        st, d = c.api(DEVICE % n, "POST", timeout=30)
        harness.eq((st, d["state"]), (201, "pending"), "POST for %s" % n)
    conn = http.client.HTTPConnection("127.0.0.1", c.api_port, timeout=30)
    conn.request("POST", DEVICE % names[8], headers={"Authorization": "Bearer " + c.api_token})
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    harness.eq((r.status, body["type"], r.getheader("Retry-After")),
               (429, "urn:pop3bridge:problem:device-limit", "30"), "the ninth")
    harness.eq(len(AS.events("device_authorization")), n_dev + 8, "device authorization requests")
    harness.eq(c.bridge.stop(), 0, "the bridge's exit code")
    c.no_secrets_anywhere()
