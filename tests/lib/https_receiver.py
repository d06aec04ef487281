"""https_receiver -- a webhook receiver as automation tools run them, in the
test process: HTTPS with a private CA, optional mutual TLS, and the
credentials n8n, Node-RED, Zapier or Pipedream triggers ask for.

    r = HttpsReceiver(secrets=[whsec...], pki=pki.get(), basic=("user", "pw"),
                      bearer="tok", headers={"X-API-Key": "k"}, client_ca=p.ca,
                      tls=True).start()
    r.url, r.port, r.requests (list of Request), r.refused (list of str),
    r.wait(n, timeout), r.stop()

A request is accepted (200) only when every credential it was given to
expect is there and right, and, with secrets, when its Standard Webhooks
signature verifies against at least one of them (timestamp within 5 minutes);
otherwise 401, and the reason (never a value) is added to `refused`.  Each
accepted request records which of the secrets verified it.  Every wait is
bounded.  Python 3 standard library only; started and stopped by the test
(harness cleanup), on 127.0.0.1 only.
"""

import base64
import hashlib
import hmac
import http.server
import ssl
import threading
import time

import harness

BODY_MAX = 64 << 20        # a larger request is refused
TOLERANCE_S = 300          # webhook-timestamp window


class Request:
    def __init__(self, path, headers, body, verified_by, peer_cert):
        self.path = path
        self.headers = headers          # names in lower case
        self.body = body
        self.verified_by = verified_by  # indexes of the secrets that verify it
        self.peer_cert = peer_cert      # the client certificate's subject, or None


def signatures_ok(secrets, headers, body):
    """The indexes of the secrets whose v1 signature is in webhook-signature."""
    wid, ts, sig = headers.get("webhook-id"), headers.get("webhook-timestamp"), \
        headers.get("webhook-signature")
    if not (wid and ts and sig) or not ts.isdigit() or abs(int(ts) - time.time()) > TOLERANCE_S:
        return []
    sent = sig.split(" ")
    ok = []
    for i, s in enumerate(secrets):
        key = base64.b64decode(s[len("whsec_"):])
        mac = base64.b64encode(hmac.new(key, wid.encode() + b"." + ts.encode() + b"." + body,
                                        hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest("v1," + mac, x) for x in sent):
            ok.append(i)
    return ok


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _answer(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        rcv = self.server.rcv
        n = int(self.headers.get("Content-Length") or "0")
        if n > BODY_MAX:
            self.close_connection = True
            return self._answer(413, "too large")
        body = self.rfile.read(n)
        headers = {k.lower(): v for k, v in self.headers.items()}
        why = rcv.check(headers, body)
        if why:
            with rcv.lock:
                rcv.refused.append(why)
            return self._answer(401, why)
        peer = None
        try:
            c = self.connection.getpeercert()
            if c:
                peer = dict(x[0] for x in c.get("subject", ()))
        except (AttributeError, ValueError):
            pass
        verified = signatures_ok(rcv.secrets, headers, body) if rcv.secrets else []
        with rcv.lock:
            rcv.requests.append(Request(self.path, headers, body, verified, peer))
        self._answer(200, "ok")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass   # a client that fails the handshake (no client certificate) is expected


class HttpsReceiver:
    def __init__(self, secrets=(), pki=None, tls=True, basic=None, bearer=None, headers=None,
                 client_ca=None, name="https-receiver"):
        self.secrets = list(secrets)
        self.pki = pki
        self.tls = tls
        self.basic = basic
        self.bearer = bearer
        self.want_headers = dict(headers or {})
        self.client_ca = client_ca
        self.name = name
        self.requests = []
        self.refused = []
        self.lock = threading.Lock()
        self.server = None
        self.port = None

    @property
    def url(self):
        return "%s://127.0.0.1:%d/webhook/%s" % ("https" if self.tls else "http", self.port, self.name)

    def check(self, headers, body):
        """None when the request carries what it must, else why not."""
        auth = headers.get("authorization", "")
        if self.basic:
            want = "Basic " + base64.b64encode(("%s:%s" % self.basic).encode()).decode()
            if not hmac.compare_digest(auth, want):
                return "basic credentials missing or wrong"
        if self.bearer and not hmac.compare_digest(auth, "Bearer " + self.bearer):
            return "bearer token missing or wrong"
        for k, v in self.want_headers.items():
            if not hmac.compare_digest(headers.get(k.lower(), ""), v):
                return "header %s missing or wrong" % k
        if self.secrets and not signatures_ok(self.secrets, headers, body):
            return "no signature verifies"
        return None

    def start(self):
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.rcv = self
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
            if self.client_ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(self.client_ca)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        t = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                             daemon=True)
        t.start()
        harness.register_cleanup(self.stop)
        return self

    def wait(self, count, timeout):
        harness.wait_for(lambda: len(self.requests) >= count, timeout, interval=0.05,
                         what="%d requests at %s (have %d, refused %r)" % (
                             count, self.name, len(self.requests), self.refused))
        return list(self.requests)

    def stop(self):
        harness.unregister_cleanup(self.stop)
        s, self.server = self.server, None
        if s:
            s.shutdown()
            s.server_close()
