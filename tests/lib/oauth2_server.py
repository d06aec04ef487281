"""oauth2_server -- a real OAuth 2.0 authorization server for the tests, on
127.0.0.1 over TLS (the test PKI's server certificate), in a thread of the
test process.

    a = AuthServer(access_lifetime=20).start()
    a.token_url, a.device_url, a.authorize_url, a.introspect_url, a.revoke_url
    a.approve(user_code, user) / a.deny(user_code)      the person at the browser
    a.authorize_as = "alice"                            who approves /authorize
    a.activate_as = "bob"                               who approves a user code entered
                                                        at the verification page (GET
                                                        /activate?user_code=...)
    a.issue(user) -> (access, refresh)                  a grant made directly
    a.revoke_user(user)                                 every token of the user
    a.active(token)                                     what introspection says
    a.events()                                          every token request, in order
    a.token_delay = 3.0; a.refresh_started.wait()       a slow refresh, observed
    a.stop()

What it implements:
  RFC 6749   token endpoint: refresh_token (rotation), client_credentials,
             authorization_code; error responses; client authentication by
             HTTP Basic or in the body (client_secret required when set)
  RFC 8628   device authorization endpoint and polling: authorization_pending,
             slow_down (polled sooner than the interval), access_denied,
             expired_token
  RFC 7636   PKCE S256 checked at the code exchange
  RFC 7662   introspection (POST token=...): active, username, scope, exp
  RFC 7009   revocation (POST token=...)

Refresh-token rotation: each refresh returns a new refresh token.  The one
used stays valid until its successor is first used (a client that crashed
before saving the successor can repeat the refresh: nothing is lost), then
it is revoked; a refresh token used after its successor was used is
refused with invalid_grant.  A revoked grant refuses every token of it.

Python 3 standard library only.
"""

import base64
import hashlib
import json
import os
import secrets
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import harness
import pki as pkimod


def _token(prefix):
    return prefix + "." + secrets.token_urlsafe(24)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def finish_request(self, request, client_address):
        # the TLS handshake in the request's own thread, bounded in time
        request.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # a client that went away (e.g. a bridge killed mid-request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        self.server.owner._log("%s %s" % (self.address_string(), fmt % args))

    def _send(self, status, obj=None, headers=(), body=None):
        data = body if body is not None else json.dumps(obj or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body is None else "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _form(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode() if n else ""
        if self.headers.get("Content-Type", "").split(";")[0].strip() != \
                "application/x-www-form-urlencoded":
            return None
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

    def do_POST(self):
        a = self.server.owner
        form = self._form()
        path = self.path.split("?")[0]
        if form is None:
            return self._send(400, {"error": "invalid_request",
                                    "error_description": "not a form"})
        handler = {"/token": a._token_endpoint, "/device": a._device_endpoint,
                   "/introspect": a._introspect, "/revoke": a._revoke}.get(path)
        if not handler:
            return self._send(404, {"error": "not_found"})
        status, obj, headers = handler(form, self.headers)
        self._send(status, obj, headers)

    def do_GET(self):
        a = self.server.owner
        u = urllib.parse.urlsplit(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
        if u.path == "/activate":
            status, text = a._activate(q)
            return self._send(status, body=text.encode())
        if u.path != "/authorize":
            return self._send(404, {"error": "not_found"})
        status, location, text = a._authorize(q)
        if location:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(status, body=text.encode())


class AuthServer:
    def __init__(self, access_lifetime=3600, client_id="pop3bridge-test", client_secret=None,
                 device_interval=1, device_min_interval=None, device_lifetime=600,
                 user_for_clients="app-user", name="oauth2"):
        self.access_lifetime = access_lifetime
        self.client_id = client_id
        self.client_secret = client_secret
        self.device_interval = device_interval          # the interval announced
        self.device_min_interval = device_min_interval  # the one enforced (default: the same)
        self.device_lifetime = device_lifetime
        self.user_for_clients = user_for_clients  # the mailbox client-credentials tokens open
        self.name = name
        self.authorize_as = None                  # /authorize approves as this user (None: denies)
        self.activate_as = None                   # /activate approves as this user (None: refuses)
        self.token_delay = 0.0                    # seconds every refresh_token request waits
        self.refresh_started = threading.Event()  # set when a refresh_token request arrives
        self.refresh_started_at = 0.0
        self.fail_next = []                       # [(status, body dict, headers)] for token requests
        self.pki = pkimod.get()
        self.lock = threading.Lock()
        self._events = []
        self._grants = {}      # id -> {"user", "scope", "revoked"}
        self._access = {}      # token -> {"grant", "exp"}
        self._refresh = {}     # token -> {"grant", "n", "state", "successor", "uses"}
        self._devices = {}     # device_code -> {...}
        self._codes = {}       # code -> {...}
        self.httpd = None
        self.port = None
        self.log_path = None

    # ---- life cycle ------------------------------------------------------------

    def start(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.ctx = ctx
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.log_path = os.path.join(harness.out_dir(), "%s-%d.log" % (self.name, self.port))
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        harness.register_cleanup(self.stop)
        return self

    def stop(self):
        harness.unregister_cleanup(self.stop)
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def url(self, path):
        return "https://127.0.0.1:%d%s" % (self.port, path)

    @property
    def token_url(self):
        return self.url("/token")

    @property
    def device_url(self):
        return self.url("/device")

    @property
    def authorize_url(self):
        return self.url("/authorize")

    @property
    def introspect_url(self):
        return self.url("/introspect")

    @property
    def revoke_url(self):
        return self.url("/revoke")

    def _log(self, line):
        try:
            with open(self.log_path, "a") as f:
                f.write("%.3f %s\n" % (time.time(), line))
        except OSError:
            pass

    def _event(self, **kw):
        kw["t"] = time.time()
        self._events.append(kw)
        self._log("event %s" % json.dumps({k: v for k, v in kw.items() if k != "t"}))

    def events(self, kind=None):
        with self.lock:
            return [dict(e) for e in self._events if kind is None or e["kind"] == kind]

    # ---- grants and tokens --------------------------------------------------------

    def _new_grant(self, user, scope):
        gid = "g%d" % (len(self._grants) + 1)
        self._grants[gid] = {"user": user, "scope": scope, "revoked": False, "rt_count": 0}
        return gid

    def _issue(self, gid, with_refresh=True):
        g = self._grants[gid]
        access = _token("at")
        self._access[access] = {"grant": gid, "exp": time.time() + self.access_lifetime}
        out = {"access_token": access, "token_type": "Bearer", "expires_in": self.access_lifetime,
               "scope": g["scope"]}
        if with_refresh:
            g["rt_count"] += 1
            rt = _token("rt%d" % g["rt_count"])
            self._refresh[rt] = {"grant": gid, "n": g["rt_count"], "state": "current",
                                 "successor": None, "uses": 0, "previous": None}
            out["refresh_token"] = rt
        return out

    def issue(self, user, scope="pop"):
        """A grant made directly (as if authorized): (access, refresh)."""
        with self.lock:
            gid = self._new_grant(user, scope)
            out = self._issue(gid)
            return out["access_token"], out["refresh_token"]

    def revoke_user(self, user):
        with self.lock:
            for g in self._grants.values():
                if g["user"] == user:
                    g["revoked"] = True
            self._log("revoked every grant of %s" % user)

    def active(self, token):
        with self.lock:
            return self._active(token) is not None

    def _active(self, token):
        a = self._access.get(token)
        if not a or a["exp"] <= time.time() or self._grants[a["grant"]]["revoked"]:
            return None
        return a

    def current_refresh(self, user):
        """The newest refresh token of the user's newest live grant, its number."""
        with self.lock:
            best = None
            for rt, r in self._refresh.items():
                g = self._grants[r["grant"]]
                if g["user"] == user and not g["revoked"]:
                    key = (int(r["grant"][1:]), r["n"])
                    if best is None or key > best[0]:
                        best = (key, rt, r["n"])
            return (best[1], best[2]) if best else (None, 0)

    # ---- endpoints ------------------------------------------------------------------

    def _client_auth(self, form, headers):
        """(client_id, method) if the client authenticated, else None."""
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                raw = base64.b64decode(auth[6:]).decode()
            except ValueError:
                return None
            cid, _, sec = raw.partition(":")
            cid, sec = urllib.parse.unquote_plus(cid), urllib.parse.unquote_plus(sec)
            if cid != self.client_id or (self.client_secret and sec != self.client_secret):
                return None
            return cid, "basic"
        cid = form.get("client_id")
        if cid != self.client_id:
            return None
        if self.client_secret and form.get("client_secret") != self.client_secret:
            return None
        return cid, "post" if "client_secret" in form else "public"

    def _token_endpoint(self, form, headers):
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            self.refresh_started_at = time.time()
            self.refresh_started.set()
            if self.token_delay:
                time.sleep(self.token_delay)
        with self.lock:
            if self.fail_next:
                status, body, hdrs = self.fail_next.pop(0)
                self._event(kind=grant or "none", ok=False, error="scripted %d" % status)
                return status, body, hdrs
            client = self._client_auth(form, headers)
            if not client:
                self._event(kind=grant or "none", ok=False, error="invalid_client")
                return 401, {"error": "invalid_client"}, [("WWW-Authenticate", "Basic")]
            method = client[1]
            if grant == "refresh_token":
                return self._grant_refresh(form, method)
            if grant == "client_credentials":
                gid = self._new_grant(self.user_for_clients, form.get("scope", ""))
                self._event(kind=grant, ok=True, auth=method, grant=gid)
                return 200, self._issue(gid, with_refresh=False), []
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                return self._grant_device(form, method)
            if grant == "authorization_code":
                return self._grant_code(form, method)
            self._event(kind=grant or "none", ok=False, error="unsupported_grant_type")
            return 400, {"error": "unsupported_grant_type"}, []

    def _grant_refresh(self, form, method):
        rt = form.get("refresh_token", "")
        r = self._refresh.get(rt)
        ev = dict(kind="refresh_token", auth=method, scope=form.get("scope"))
        if not r:
            self._event(ok=False, error="invalid_grant", why="unknown", **ev)
            return 400, {"error": "invalid_grant", "error_description": "unknown refresh token"}, []
        g = self._grants[r["grant"]]
        ev.update(grant=r["grant"], n=r["n"], user=g["user"])
        if g["revoked"]:
            self._event(ok=False, error="invalid_grant", why="revoked", **ev)
            return 400, {"error": "invalid_grant",
                         "error_description": "AADSTS70008: the refresh token was revoked"}, []
        if r["state"] == "revoked":
            self._event(ok=False, error="invalid_grant", why="used up", **ev)
            return 400, {"error": "invalid_grant", "error_description": "refresh token used up"}, []
        r["uses"] += 1
        # using it retires its predecessor for good
        if r["previous"] and self._refresh[r["previous"]]["state"] != "revoked":
            self._refresh[r["previous"]]["state"] = "revoked"
        reuse = r["successor"] is not None
        out = self._issue(r["grant"])
        new = self._refresh[out["refresh_token"]]
        new["previous"] = rt
        if r["successor"]:  # a repeat: the unused successor is replaced by this one
            self._refresh[r["successor"]]["state"] = "revoked"
        r["successor"] = out["refresh_token"]
        r["state"] = "rotated"
        self._event(ok=True, reuse=reuse, issued=new["n"], **ev)
        return 200, out, []

    def _grant_device(self, form, method):
        d = self._devices.get(form.get("device_code", ""))
        if not d:
            self._event(kind="device_code", ok=False, error="invalid_grant")
            return 400, {"error": "invalid_grant"}, []
        now = time.time()
        if now >= d["exp"]:
            self._event(kind="device_code", ok=False, error="expired_token")
            return 400, {"error": "expired_token"}, []
        early = d["last_poll"] and now - d["last_poll"] < d["min_interval"] - 0.2
        d["last_poll"] = now
        if d["status"] == "denied":
            self._event(kind="device_code", ok=False, error="access_denied")
            return 400, {"error": "access_denied"}, []
        if early:
            # RFC 8628 §3.5: the client adds 5 s to its interval from now on
            d["interval"] += 5
            d["min_interval"] = d["interval"]
            self._event(kind="device_code", ok=False, error="slow_down")
            return 400, {"error": "slow_down"}, []
        if d["status"] == "pending":
            self._event(kind="device_code", ok=False, error="authorization_pending")
            return 400, {"error": "authorization_pending"}, []
        if d["status"] == "used":
            self._event(kind="device_code", ok=False, error="invalid_grant")
            return 400, {"error": "invalid_grant"}, []
        d["status"] = "used"
        gid = self._new_grant(d["user"], d["scope"])
        self._event(kind="device_code", ok=True, auth=method, grant=gid, user=d["user"])
        return 200, self._issue(gid), []

    def _grant_code(self, form, method):
        c = self._codes.pop(form.get("code", ""), None)
        if not c or c["exp"] <= time.time() or c["redirect_uri"] != form.get("redirect_uri"):
            self._event(kind="authorization_code", ok=False, error="invalid_grant")
            return 400, {"error": "invalid_grant"}, []
        verifier = form.get("code_verifier", "")
        want = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if want != c["challenge"]:
            self._event(kind="authorization_code", ok=False, error="invalid_grant", why="pkce")
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}, []
        gid = self._new_grant(c["user"], c["scope"])
        self._event(kind="authorization_code", ok=True, auth=method, grant=gid, user=c["user"])
        return 200, self._issue(gid), []

    def _device_endpoint(self, form, headers):
        with self.lock:
            if form.get("client_id") != self.client_id and not self._client_auth(form, headers):
                return 401, {"error": "invalid_client"}, []
            code = secrets.token_urlsafe(32)
            user_code = "%s-%s" % (secrets.token_hex(2).upper(), secrets.token_hex(2).upper())
            self._devices[code] = {"user_code": user_code, "scope": form.get("scope", ""),
                                   "exp": time.time() + self.device_lifetime, "status": "pending",
                                   "user": None, "interval": self.device_interval,
                                   "min_interval": self.device_min_interval or self.device_interval,
                                   "last_poll": 0}
            self._event(kind="device_authorization", ok=True, scope=form.get("scope"))
            return 200, {"device_code": code, "user_code": user_code,
                         "verification_uri": self.url("/activate"),
                         "verification_uri_complete": self.url("/activate?user_code=" + user_code),
                         "expires_in": self.device_lifetime,
                         "interval": self.device_interval}, []

    def _find_device(self, user_code):
        for d in self._devices.values():
            if d["user_code"] == user_code:
                return d
        raise KeyError("no device authorization with user code %r" % user_code)

    def approve(self, user_code, user):
        with self.lock:
            d = self._find_device(user_code)
            d["status"], d["user"] = "approved", user

    def _activate(self, q):
        """The verification page: the person entered user_code and signed in
        as activate_as."""
        if not self.activate_as:
            return 403, "nobody signs in here"
        try:
            self.approve(q.get("user_code", ""), self.activate_as)
        except KeyError:
            return 400, "unknown code"
        with self.lock:
            self._event(kind="activate", ok=True, user=self.activate_as)
        return 200, "approved"

    def deny(self, user_code):
        with self.lock:
            self._find_device(user_code)["status"] = "denied"

    def _authorize(self, q):
        with self.lock:
            redirect = q.get("redirect_uri", "")
            u = urllib.parse.urlsplit(redirect)
            if q.get("client_id") != self.client_id or u.scheme != "http" or \
                    u.hostname != "127.0.0.1":
                return 400, None, "bad client or redirect_uri (RFC 8252: loopback only)"
            if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" or \
                    not q.get("code_challenge") or not q.get("state"):
                return 400, None, "PKCE S256, state and response_type=code are required"
            params = {"state": q["state"]}
            if self.authorize_as:
                code = secrets.token_urlsafe(24)
                self._codes[code] = {"redirect_uri": redirect, "challenge": q["code_challenge"],
                                     "user": self.authorize_as, "scope": q.get("scope", ""),
                                     "exp": time.time() + 120}
                params["code"] = code
            else:
                params["error"] = "access_denied"
                params["error_description"] = "the user said no"
            self._event(kind="authorize", ok=bool(self.authorize_as))
            return 302, redirect + "?" + urllib.parse.urlencode(params), ""

    def _introspect(self, form, headers):
        with self.lock:
            tok = form.get("token", "")
            a = self._active(tok)
            self._event(kind="introspect", active=a is not None)
            if not a:
                return 200, {"active": False}, []
            g = self._grants[a["grant"]]
            return 200, {"active": True, "username": g["user"], "scope": g["scope"],
                         "exp": int(a["exp"]), "client_id": self.client_id,
                         "token_type": "Bearer"}, []

    def _revoke(self, form, headers):
        with self.lock:
            tok = form.get("token", "")
            r = self._refresh.get(tok) or self._access.get(tok)
            if r:
                self._grants[r["grant"]]["revoked"] = True
            return 200, {}, []

