"""popref -- a reference POP3 client (Python's poplib and ssl) for checking
the harness and for independent views of what a server holds.

    c = popref.connect(dc, tls="implicit"|"stls"|"none", ca=None)
    popref.login(c, user, password, mech)   mech: user apop plain login cram-md5
                                            scram-sha-1 scram-sha-256
    popref.listing(dc, user, password) -> (count, octets, [(number, uidl, size)], capa_after_login)
    popref.retr_all(dc, user, password) -> [bytes] as stored (LF, unstuffed)

SASL is implemented here from the RFCs (4616 PLAIN, 2195 CRAM-MD5, 5802 /
7677 SCRAM), independent of the code under test.
"""

import base64
import hashlib
import hmac
import os
import poplib
import ssl

TIMEOUT = 20


def _ctx(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(dc, tls="implicit", ca=None, host="127.0.0.1"):
    ca = ca or dc.pki.ca
    if tls == "implicit":
        return poplib.POP3_SSL(host, dc.tls_port, context=_ctx(ca), timeout=TIMEOUT)
    c = poplib.POP3(host, dc.port, timeout=TIMEOUT)
    if tls == "stls":
        c.stls(context=_ctx(ca))
    return c


def capa_lines(c):
    """The raw CAPA lines (poplib's capa() loses their order)."""
    resp, lines, _ = c._longcmd("CAPA")
    return [ln.decode("latin-1") for ln in lines]


def _b64(b):
    return base64.b64encode(b).decode("ascii")


def _auth(c, mech, first=None):
    line = "AUTH " + mech + ((" " + first) if first is not None else "")
    c._putcmd(line)
    return c._getline()[0].decode("latin-1")


def _cont(resp):
    if not resp.startswith("+ ") and resp != "+":
        raise poplib.error_proto(resp)
    return base64.b64decode(resp[2:]) if len(resp) > 2 else b""


def _done(c, resp):
    if not resp.startswith("+OK"):
        raise poplib.error_proto(resp)
    return resp


def _scram(c, user, password, hname):
    h = getattr(hashlib, hname)
    nonce = _b64(os.urandom(18))
    bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), nonce)
    server_first = _cont(_auth(c, "SCRAM-" + hname.upper().replace("SHA", "SHA-"),
                               _b64(("n,," + bare).encode()))).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    if not attrs["r"].startswith(nonce):
        raise poplib.error_proto("SCRAM: server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(hname, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored = h(client_key).digest()
    without_proof = "c=biws,r=" + attrs["r"]
    auth_msg = ",".join((bare, server_first, without_proof)).encode()
    sig = hmac.new(stored, auth_msg, h).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    final = _cont(_send(c, _b64((without_proof + ",p=" + _b64(proof)).encode()))).decode()
    server_key = hmac.new(salted, b"Server Key", h).digest()
    expect = "v=" + _b64(hmac.new(server_key, auth_msg, h).digest())
    if final != expect:
        raise poplib.error_proto("SCRAM: bad server signature")
    return _done(c, _send(c, ""))


def _send(c, line):
    c._putcmd(line)
    return c._getline()[0].decode("latin-1")


def login(c, user, password, mech="user"):
    mech = mech.lower()
    if mech == "user":
        c.user(user)
        return c.pass_(password)
    if mech == "apop":
        return c.apop(user, password)
    if mech == "plain":
        return _done(c, _auth(c, "PLAIN", _b64(b"\0" + user.encode() + b"\0" + password.encode())))
    if mech == "login":
        _cont(_auth(c, "LOGIN"))
        _cont(_send(c, _b64(user.encode())))
        return _done(c, _send(c, _b64(password.encode())))
    if mech == "cram-md5":
        challenge = _cont(_auth(c, "CRAM-MD5"))
        digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
        return _done(c, _send(c, _b64(("%s %s" % (user, digest)).encode())))
    if mech in ("scram-sha-1", "scram-sha-256"):
        return _scram(c, user, password, {"scram-sha-1": "sha1", "scram-sha-256": "sha256"}[mech])
    raise ValueError("unknown mechanism %r" % mech)


def listing(dc, user, password, tls="implicit"):
    """STAT, UIDL and LIST through poplib; also syncs Dovecot's view."""
    c = connect(dc, tls)
    try:
        login(c, user, password)
        capa = capa_lines(c)
        count, octets = c.stat()
        uidl = [ln.decode().split(" ", 1) for ln in c.uidl()[1]]
        sizes = [ln.decode().split(" ", 1) for ln in c.list()[1]]
        entries = [(int(n), u, int(s)) for (n, u), (n2, s) in zip(uidl, sizes) if n == n2]
        if len(entries) != count or len(sizes) != count:
            raise AssertionError("poplib: UIDL/LIST disagree with STAT")
    finally:
        c.quit()
    return count, octets, entries, capa


def retr_all(dc, user, password):
    """Every message as it would be stored: dot-unstuffed, LF line endings."""
    c = connect(dc)
    try:
        login(c, user, password)
        count, _ = c.stat()
        out = []
        for n in range(1, count + 1):
            lines = c.retr(n)[1]   # poplib unstuffs and splits on CRLF
            out.append(b"".join(ln + b"\n" for ln in lines))
    finally:
        c.quit()
    return out
