"""Receivers as automation tools run them: `pop3bridge run --once` against a
real Dovecot and real receivers started here (tests/lib/https_receiver.py:
HTTPS with a private CA, mutual TLS, HTTP Basic, bearer tokens, API-key
headers) and a real CONNECT proxy (tests/lib/connect_proxy.py).

- Each kind of credential reaches its receiver, over TLS verified against the
  webhook's own CA; wrong credentials are refused by the receiver and the
  refusal is recorded without the credential.
- Mutual TLS: with the client certificate the receiver accepts; without it
  the handshake fails.
- The proxy really tunnels (the receiver gets the event, the proxy carried
  the bytes and saw no clear text); the environment's proxy variables are
  ignored, with and without a proxy configured.
- Secret rotation: two secrets, two signatures; a receiver knowing only the
  old one and one knowing only the new one both verify.
- check-config refuses credentials over http:// (naming the key), accepts
  them with allow_plaintext_credentials, and prints no secret.
"""

import os
import secrets

import bridge
import connect_proxy
import dovecot
import harness
import mailgen
import pki
from bridge import Bridge, Receiver
from https_receiver import HttpsReceiver

DC = None
ACCOUNT = "acct"


def setup_module():
    global DC
    DC = dovecot.Dovecot(name="dovecot-webhook-auth").start()


def teardown_module():
    if DC:
        DC.stop()


def secret_file(name, text):
    path = os.path.join(harness.out_dir("secrets"), name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def bridge_for(user, hooks, env, messages=1):
    """A mailbox with `messages` messages and a bridge routing it to every
    webhook in `hooks` (config dicts); env holds every secret (checked
    absent from the bridge's output by Bridge)."""
    password = secrets.token_urlsafe(12)
    DC.add_user(user, password)
    for m in mailgen.mailbox(hash(user) & 0xffff, messages, 1500, 3000):
        DC.deliver(user, m)
    env = dict(env, T_POP3_PW=password)
    cfg = {
        "log_level": "debug",
        "webhooks": hooks,
        "accounts": [{"name": ACCOUNT, "host": "127.0.0.1", "port": DC.tls_port, "tls": "implicit",
                      "ca_file": DC.pki.ca, "username": user, "password_env": "T_POP3_PW",
                      "start": "all", "poll_interval": "1h",
                      "webhooks": [h["name"] for h in hooks]}],
    }
    return Bridge(cfg, env)


def check_config_fails(r, want):
    """check-config exit 1 with `want` (a plain substring) on stderr."""
    if r.code != 1 or want not in r.stderr:
        raise AssertionError("expected exit 1 and %r on stderr: %s" % (want, r.describe()))


def statuses(b):
    return {w: (s, code, err) for w, s, code, err in
            b.query("SELECT webhook, status, last_http_status, last_error FROM deliveries")}


@harness.timeout(60)
def test_credentials_tls_and_proxy_reach_real_receivers():
    p = pki.get()
    whsec = bridge.new_secret()
    old, new = bridge.new_secret(), bridge.new_secret()
    pw, tok, apikey = secrets.token_urlsafe(16), secrets.token_urlsafe(24), secrets.token_hex(16)
    basic = HttpsReceiver([whsec], p, basic=("n8n", pw), name="basic").start()
    bearer = HttpsReceiver([whsec], p, bearer=tok, name="bearer").start()
    keyed = HttpsReceiver([whsec], p, headers={"X-API-Key": apikey, "X-Tenant": "acme"},
                          name="keyed").start()
    mtls = HttpsReceiver([whsec], p, client_ca=p.ca, name="mtls").start()
    proxied = HttpsReceiver([whsec], p, bearer=tok, name="proxied").start()
    plain_proxied = HttpsReceiver([whsec], tls=False, name="plainproxied").start()
    only_old = HttpsReceiver([old], p, name="onlyold").start()
    only_new = HttpsReceiver([new], p, name="onlynew").start()
    proxy = connect_proxy.ConnectProxy().start()
    trap = connect_proxy.ConnectProxy().start()       # what the environment points at
    headers_path = secret_file("keyed.headers", "# API key for the CRM trigger\n"
                               "X-API-Key: %s\r\n\nX-Tenant:acme\n" % apikey)
    pw_path = secret_file("basic.pw", pw + "\n")
    env = {"T_WHSEC": whsec, "T_ROTATING": old + " " + new, "T_BEARER": tok, "T_PW": pw,
           "T_APIKEY": apikey,
           # ignored: no webhook may go through these
           "HTTPS_PROXY": trap.url, "https_proxy": trap.url, "http_proxy": trap.url,
           "ALL_PROXY": trap.url, "all_proxy": trap.url, "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}
    ca = {"ca_file": p.ca}
    hooks = [
        dict(ca, name="basic", url=basic.url, secret_env="T_WHSEC",
             auth={"basic": {"username": "n8n", "password_file": pw_path}}),
        dict(ca, name="bearer", url=bearer.url, secret_env="T_WHSEC", auth={"bearer_env": "T_BEARER"}),
        dict(ca, name="keyed", url=keyed.url, secret_env="T_WHSEC", headers_file=headers_path),
        dict(ca, name="mtls", url=mtls.url, secret_env="T_WHSEC", client_cert_file=p.client_cert,
             client_key_file=p.client_key),
        dict(ca, name="proxied", url=proxied.url, secret_env="T_WHSEC", auth={"bearer_env": "T_BEARER"},
             proxy=proxy.url),
        dict(name="plainproxied", url=plain_proxied.url, secret_env="T_WHSEC", proxy=proxy.url),
        dict(ca, name="rotating-old", url=only_old.url, secret_env="T_ROTATING"),
        dict(ca, name="rotating-new", url=only_new.url, secret_env="T_ROTATING"),
    ]
    b = bridge_for("authok", hooks, env)
    harness.check_ok(b.run_once(timeout=50))
    for r in (basic, bearer, keyed, mtls, proxied, plain_proxied, only_old, only_new):
        got = r.wait(1, 10)
        harness.eq(len(got), 1, "requests accepted by %s" % r.name)
        harness.eq(r.refused, [], "requests refused by %s" % r.name)
    harness.eq(mtls.requests[0].peer_cert.get("commonName"), "pop3bridge test client",
               "client certificate the mTLS receiver saw")
    # rotation: two signatures, each receiver verified with the one secret it knows
    sig = only_old.requests[0].headers["webhook-signature"].split(" ")
    harness.eq(len(sig), 2, "signatures in webhook-signature while rotating")
    harness.eq(only_old.requests[0].verified_by, [0], "old secret verifies")
    harness.eq(only_new.requests[0].verified_by, [0], "new secret verifies")
    harness.eq(len(basic.requests[0].headers["webhook-signature"].split(" ")), 1,
               "signatures with one secret")
    # the proxy tunnelled exactly the two proxied webhooks, and saw no clear text for https
    targets = sorted(t.target for t in proxy.tunnels)
    harness.eq(targets, sorted(["127.0.0.1:%d" % proxied.port, "127.0.0.1:%d" % plain_proxied.port]),
               "CONNECT targets")
    for t in proxy.tunnels:
        if t.up == 0 or t.down == 0:
            raise AssertionError("tunnel to %s carried %d/%d bytes" % (t.target, t.up, t.down))
        want_plain = t.target.endswith(":%d" % plain_proxied.port)
        harness.eq(t.saw_plain_post, want_plain, "clear-text POST seen in the tunnel to %s" % t.target)
    harness.eq(proxy.refused, [], "requests the proxy refused")
    harness.eq((len(trap.tunnels), trap.refused), (0, []), "traffic through the environment's proxy")
    st = statuses(b)
    for h in hooks:
        harness.eq(st[h["name"]][0], 1, "delivery status of %s" % h["name"])
    b.check_no_secrets(b.query("SELECT group_concat(last_error, ' ') FROM deliveries")[0][0] or "")


@harness.timeout(60)
def test_rotation_with_the_stock_receiver():
    """tests/tools/webhook-receiver, which verifies as Standard Webhooks
    consumers do (any matching v1 signature), accepts the events with the
    old secret and with the new one while the bridge holds both; one that
    knows neither refuses them."""
    old, new = bridge.new_secret(), bridge.new_secret()
    with_old = Receiver(old, name="stock-old").start()
    with_new = Receiver(new, name="stock-new").start()
    stranger = Receiver(bridge.new_secret(), name="stock-none").start()
    env = {"T_ROTATING": "%s %s" % (new, old)}
    hooks = [{"name": r.name, "url": r.url, "secret_env": "T_ROTATING", "retry_schedule": ["1h"]}
             for r in (with_old, with_new, stranger)]
    b = bridge_for("rotation", hooks, env, messages=2)
    b.run_once(timeout=50)
    for r in (with_old, with_new):
        evs = r.wait_events(2, 10)
        for e in evs:
            bridge.verify_signature(e, r.secret)
            harness.eq(len(e.headers["webhook-signature"].split(" ")), 2, "signatures per request")
    harness.eq(len(stranger.events()), 0, "events a receiver with neither secret accepted")
    st = b.query("SELECT webhook, status, last_http_status FROM deliveries")
    harness.eq(sorted((w, s, c) for w, s, c in st if w == "stock-none"),
               [("stock-none", 2, 401)] * 2, "deliveries to the receiver with neither secret")


@harness.timeout(60)
def test_wrong_or_missing_credentials_fail_without_leaking():
    p = pki.get()
    whsec = bridge.new_secret()
    wrong_pw, wrong_tok = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
    basic = HttpsReceiver([whsec], p, basic=("n8n", "the-right-one"), name="basic").start()
    bearer = HttpsReceiver([whsec], p, bearer="the-right-token", name="bearer").start()
    mtls = HttpsReceiver([whsec], p, client_ca=p.ca, name="mtls").start()
    other_ca = HttpsReceiver([whsec], p, name="otherca").start()
    env = {"T_WHSEC": whsec, "T_PW": wrong_pw, "T_BEARER": wrong_tok}
    hooks = [
        {"name": "basic", "url": basic.url, "secret_env": "T_WHSEC", "ca_file": p.ca,
         "retry_schedule": ["1h"], "auth": {"basic": {"username": "n8n", "password_env": "T_PW"}}},
        {"name": "bearer", "url": bearer.url, "secret_env": "T_WHSEC", "ca_file": p.ca,
         "retry_schedule": ["1h"], "auth": {"bearer_env": "T_BEARER"}},
        {"name": "mtls", "url": mtls.url, "secret_env": "T_WHSEC", "ca_file": p.ca,
         "retry_schedule": ["1h"]},
        # the receiver's certificate is not from this CA: verification fails
        {"name": "otherca", "url": other_ca.url, "secret_env": "T_WHSEC", "ca_file": p.other_ca,
         "retry_schedule": ["1h"]},
    ]
    b = bridge_for("authbad", hooks, env)
    b.run_once(timeout=50)
    harness.wait_for(lambda: all(s[0] in (2, 3) for s in statuses(b).values()) and len(statuses(b)) == 4,
                     10, what="four failed deliveries")
    st = statuses(b)
    harness.eq((st["basic"][1], len(basic.refused)), (401, 1), "basic: HTTP status, refusals")
    harness.eq((st["bearer"][1], len(bearer.refused)), (401, 1), "bearer: HTTP status, refusals")
    harness.eq(len(basic.requests) + len(bearer.requests) + len(mtls.requests) + len(other_ca.requests),
               0, "requests accepted")
    for name in ("mtls", "otherca"):
        harness.eq(st[name][1], 0, "%s: no HTTP status (the handshake failed)" % name)
        if not st[name][2]:
            raise AssertionError("%s: no error recorded" % name)
    # with TLS 1.3 the client learns of a refused client certificate only when
    # the server drops the connection; an unknown CA is a TLS error at once
    if "SSL" not in st["otherca"][2] and "certificate" not in st["otherca"][2]:
        raise AssertionError("otherca: the error does not say TLS: %r" % st["otherca"][2])
    b.check_no_secrets(" ".join(s[2] for s in st.values()))


@harness.timeout(30)
def test_check_config_refuses_credentials_over_http_and_shows_no_secret():
    p = pki.get()
    whsec, tok = bridge.new_secret(), secrets.token_urlsafe(20)
    headers_path = secret_file("api.headers", "X-API-Key: %s\n" % tok)
    env = {"T_WHSEC": whsec + " " + bridge.new_secret(), "T_BEARER": tok}
    base = {"name": "n8n", "url": "http://127.0.0.1:9/webhook", "secret_env": "T_WHSEC"}
    cases = [
        (dict(base, auth={"bearer_env": "T_BEARER"}), "webhooks[0].auth: credentials would be sent in clear"),
        (dict(base, headers_file=headers_path), "webhooks[0].headers_file: secret headers would be sent in clear"),
        (dict(base, ca_file=p.ca), "webhooks[0].ca_file: only applies to an https:// url"),
        (dict(base, url="https://127.0.0.1:9/", auth={}), "webhooks[0].auth: needs basic or bearer_env/bearer_file"),
        (dict(base, url="https://127.0.0.1:9/", auth={"bearer_env": "T_BEARER",
                                                      "basic": {"username": "u", "password_env": "T_BEARER"}}),
         "webhooks[0].auth: give either basic or bearer_env/bearer_file, not both"),
        (dict(base, url="https://127.0.0.1:9/", auth={"basic": {"username": "a:b", "password": "x"}}),
         "webhooks[0].auth.basic.password: secrets are not accepted in the file itself"),
        (dict(base, url="https://127.0.0.1:9/", proxy="http://user:pw@127.0.0.1:3128"),
         "webhooks[0].proxy: must not carry user information"),
        (dict(base, url="https://127.0.0.1:9/", proxy="socks5://127.0.0.1:1080"),
         "webhooks[0].proxy: must start with http://"),
        (dict(base, url="https://127.0.0.1:9/", client_key_file=p.client_key),
         "webhooks[0].client_key_file: needs client_cert_file"),
        (dict(base, url="https://127.0.0.1:9/", ca_file="/nonexistent/ca.pem"),
         "webhooks[0].ca_file: cannot read /nonexistent/ca.pem"),
    ]
    for i, (hook, want) in enumerate(cases):
        b = Bridge({"webhooks": [hook], "accounts": []}, env, name="cc%d" % i)
        r = harness.run_cli(["check-config", b.config_path], env=env)
        check_config_fails(r, want)
        b.check_no_secrets(r.stdout, r.stderr)
    # with allow_plaintext_credentials (and a proxy), valid; the summary shows no secret
    hook = dict(base, auth={"bearer_env": "T_BEARER"}, headers_file=headers_path,
                allow_plaintext_credentials=True, proxy="http://127.0.0.1:3128")
    b = Bridge({"webhooks": [hook], "accounts": []}, env, name="ccok")
    r = harness.run_cli(["check-config", b.config_path], env=env)
    harness.check_ok(r)
    for want in ("bearer=env:T_BEARER", "headers=file:" + headers_path, "proxy=http://127.0.0.1:3128"):
        if want not in r.stdout:
            raise AssertionError("%r not in the summary: %s" % (want, r.stdout))
    b.check_no_secrets(r.stdout, r.stderr)
    # five secrets in one variable: over the named limit
    env5 = dict(env, T_WHSEC=" ".join(bridge.new_secret() for _ in range(5)))
    b = Bridge({"webhooks": [base], "accounts": []}, env5, name="cc5")
    r = harness.run_cli(["check-config", b.config_path], env=env5)
    check_config_fails(r, "webhooks[0].secret_env: holds 5 secrets; the limit is 4")
    b.check_no_secrets(r.stdout, r.stderr)
