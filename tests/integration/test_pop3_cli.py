"""`pop3bridge probe` and `pop3bridge fetch` against a real Dovecot.

Every test has its own user (and mailbox) on one Dovecot instance, so the
tests run in any order and alone (tests/integration/run FILTER).  What the
CLI reports is compared with the Maildir files and with Python's poplib.
"""

import base64
import collections
import hashlib
import os
import re
import time

import dovecot
import harness
import mailgen
import popref

TIMEOUT = 90
dc = None
_n = [0]

MECH_LOGGED = {"user": "PLAIN", "apop": "APOP", "plain": "PLAIN", "login": "LOGIN", "cram-md5": "CRAM-MD5",
               "scram-sha-1": "SCRAM-SHA-1", "scram-sha-256": "SCRAM-SHA-256"}
SUMMARY = re.compile(r"fetched (\d+) new messages \((\d+) bytes\), (\d+) already present(?:, (\d+) deleted)?")


def setup_module():
    global dc
    dc = dovecot.Dovecot(name="cli").start()


def teardown_module():
    if dc:
        dc.stop()


# ---- helpers ---------------------------------------------------------------

def new_user(messages=(), folder_of=lambda i: "new" if i % 2 else "cur"):
    """A fresh user with a password of its own, holding `messages` (bytes)."""
    _n[0] += 1
    user = "u%02d" % _n[0]
    password = "Pw-%s-%d" % (hashlib.sha256(os.urandom(16)).hexdigest()[:16], _n[0])
    dc.add_user(user, password)
    for i, m in enumerate(messages):
        dc.deliver(user, m, folder_of(i))
    return user, password


def pop3s(user, host="127.0.0.1", port=None):
    return "pop3s://%s@%s:%d" % (user, host, port or dc.tls_port)


def pop3(user, port=None):
    return "pop3://%s@127.0.0.1:%d" % (user, port or dc.port)


def common(ca=True):
    return (["--ca-file", dc.pki.ca] if ca else []) + ["--timeout", "20"]


def probe(user, password, *extra, url=None, ca=True):
    return harness.run_cli(["probe"] + common(ca) + list(extra) + [url or pop3s(user)], password=password)


def fetch(user, password, maildir, *extra, url=None, timeout=harness.DEFAULT_CLI_TIMEOUT):
    return harness.run_cli(["fetch"] + common() + list(extra) + [url or pop3s(user), maildir],
                           password=password, timeout=timeout)


def secret_forms(user, password):
    """The password as it could leak: raw, and base64 inside SASL data."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return [password, b64(password.encode()), b64(b"\0" + user.encode() + b"\0" + password.encode()),
            b64(user.encode() + b"\0" + user.encode() + b"\0" + password.encode())]


def mentions(log, user):
    """Dovecot's log names the user: user=<u> (login process), passwd-file(u,...) (auth)."""
    return re.search(r"[<(]%s[>,]" % re.escape(user), log) is not None


def check_listing(j, user):
    """probe's stat/messages against the Maildir (Dovecot must have synced)."""
    expected = dc.expected_listing(user)
    harness.eq(j["stat"], {"count": len(expected), "octets": sum(s for _, _, s in expected)}, "stat")
    harness.eq(j["messages"], [{"number": n, "uidl": u, "size": s} for n, u, s in expected], "messages")


def maildir_files(md):
    """{subdir: [bytes...]} of a Maildir written by fetch."""
    out = {}
    for sub in ("tmp", "new", "cur"):
        p = os.path.join(md, sub)
        if not os.path.isdir(p):
            raise AssertionError("%s/ missing in %s" % (sub, md))
        out[sub] = []
        for name in sorted(os.listdir(p)):
            with open(os.path.join(p, name), "rb") as f:
                out[sub].append(f.read())
    return out


def check_stored(md, expected, what):
    """new/ holds exactly the messages `expected` (any order), tmp/ is empty."""
    files = maildir_files(md)
    harness.eq(len(files["tmp"]), 0, what + ": files left in tmp/")
    harness.eq(len(files["cur"]), 0, what + ": files in cur/")
    got = collections.Counter(hashlib.sha256(b).hexdigest() for b in files["new"])
    want = collections.Counter(hashlib.sha256(b).hexdigest() for b in expected)
    if got != want:
        raise AssertionError("%s: new/ holds %d files, %d of them not byte-identical to Dovecot's; %d of "
                             "Dovecot's missing" % (what, len(files["new"]), sum((got - want).values()),
                                                    sum((want - got).values())))
    for name in os.listdir(os.path.join(md, "new")):
        if name.startswith(".") or "/" in name or ":" in name:
            raise AssertionError("%s: odd file name in new/: %r" % (what, name))


def check_summary(r, new, present, deleted=None, nbytes=None):
    m = SUMMARY.fullmatch(r.stdout.strip())
    if not m:
        raise AssertionError("summary line not as specified: " + r.describe())
    harness.eq(int(m.group(1)), new, "new messages in the summary")
    harness.eq(int(m.group(3)), present, "already present in the summary")
    if deleted is not None:
        harness.eq(int(m.group(4) or -1), deleted, "deleted in the summary")
    elif m.group(4) is not None:
        raise AssertionError("summary reports deletions without --delete: " + r.stdout)
    if nbytes is not None and int(m.group(2)) not in nbytes:
        raise AssertionError("summary says %s bytes, expected one of %s" % (m.group(2), sorted(set(nbytes))))


def byte_counts(msgs):
    """What "M bytes" may count: bytes stored (LF) or octets on the wire (CRLF)."""
    return (sum(len(m) for m in msgs), sum(len(m) + m.count(b"\n") for m in msgs))


# ---- probe -----------------------------------------------------------------------

def test_probe_implicit_tls():
    msgs = mailgen.mailbox(101, 12)
    user, pw = new_user(msgs)
    mark = dc.log_mark()
    r = harness.check_ok(probe(user, pw))
    j = r.json()
    assert isinstance(j, dict), j
    for key in ("greeting", "tls", "capabilities", "auth", "stat", "messages", "login_delay", "expire"):
        assert key in j, "probe JSON lacks %r: %s" % (key, r.stdout)
    assert dovecot.GREETING in j["greeting"], j["greeting"]
    tls = j["tls"]
    assert isinstance(tls, dict), tls
    assert tls["version"] in ("TLSv1.2", "TLSv1.3"), tls
    assert isinstance(tls["cipher"], str) and tls["cipher"], tls
    harness.eq(tls["verified"], True, "tls.verified")
    assert tls["peer"], tls
    harness.eq(j["auth"], "scram-sha-256", "default mechanism (strongest Dovecot offers)")
    _, _, entries, capa_after = popref.listing(dc, user, pw)
    harness.eq(j["capabilities"], capa_after, "capabilities (as after login)")
    assert "STLS" not in j["capabilities"] and not any(c.startswith("SASL") for c in j["capabilities"]), \
        "capabilities are the pre-login ones: %r" % j["capabilities"]
    check_listing(j, user)
    harness.eq([(m["number"], m["uidl"], m["size"]) for m in j["messages"]], entries, "messages vs poplib")
    harness.eq(j["login_delay"], None, "login_delay (not advertised)")
    harness.eq(j["expire"], None, "expire (not advertised)")
    dc.wait_log(r"Login: user=<%s>, method=SCRAM-SHA-256, .*TLS" % user, mark)
    harness.check_no_secret(r, *secret_forms(user, pw))


def test_probe_starttls():
    msgs = mailgen.mailbox(102, 5)
    user, pw = new_user(msgs)
    mark = dc.log_mark()
    r = harness.check_ok(probe(user, pw, url=pop3(user)))
    j = r.json()
    assert isinstance(j["tls"], dict) and j["tls"]["verified"] is True, j["tls"]
    assert j["tls"]["version"] in ("TLSv1.2", "TLSv1.3"), j["tls"]
    _, _, _, capa_after = popref.listing(dc, user, pw, tls="stls")
    harness.eq(j["capabilities"], capa_after, "capabilities (as after login)")
    check_listing(j, user)
    # logged in on the plain port, after STLS
    login = dc.wait_log(r"Login: user=<%s>, method=[A-Z0-9-]+, rip=127\.0\.0\.1, lip=[0-9.]+, mpid=\d+, ([^,]+)," % user,
                        mark)
    harness.eq(login.group(1), "TLS", "Dovecot saw the login over TLS")


def test_probe_empty_mailbox():
    user, pw = new_user()
    j = harness.check_ok(probe(user, pw)).json()
    harness.eq(j["stat"], {"count": 0, "octets": 0}, "stat of an empty mailbox")
    harness.eq(j["messages"], [], "messages of an empty mailbox")


@harness.timeout(180)
def test_every_mechanism():
    user, pw = new_user(mailgen.mailbox(103, 2))
    for mech, logged in MECH_LOGGED.items():
        mark = dc.log_mark()
        r = probe(user, pw, "--auth", mech)
        harness.check_ok(r)
        harness.eq(r.json()["auth"], mech, "mechanism used for --auth " + mech)
        harness.eq(r.json()["stat"]["count"], 2, "stat after --auth " + mech)
        dc.wait_log(r"Login: user=<%s>, method=%s," % (user, logged), mark)
        harness.check_no_secret(r, *secret_forms(user, pw))


def test_mechanism_list_order_and_unavailable():
    user, pw = new_user()
    r = harness.check_ok(probe(user, pw, "--auth", "cram-md5,plain"))
    harness.eq(r.json()["auth"], "cram-md5", "first listed mechanism the server offers")
    r = harness.check_ok(probe(user, pw, "--auth", "xoauth2,login"))
    harness.eq(r.json()["auth"], "login", "skips a mechanism the server does not offer")
    # nothing usable: Dovecot offers no XOAUTH2
    token = dc.dir + "/token"
    harness.write_private(token, "tok-abc123")
    r = harness.run_cli(["probe"] + common() + ["--auth", "xoauth2", "--oauth2-token-file", token, pop3s(user)],
                        password=pw)
    harness.check_failure(r, 5, r"^pop3bridge: Authentication:")


def test_wrong_password():
    user, pw = new_user()
    bad = pw + "-wrong"
    for mech in ("user", "plain", "scram-sha-256"):
        mark = dc.log_mark()
        r = probe(user, bad, "--auth", mech)
        harness.check_failure(r, 5, r"^pop3bridge: Authentication:")
        harness.check_no_secret(r, *(secret_forms(user, bad) + secret_forms(user, pw)))
        harness.eq(r.stdout, "", "stdout of a failed probe")
        dc.wait_log(r"user=<%s>" % user, mark)
    # and with the trace on, the secrets stay out of it as well
    r = probe(user, bad, "-v", "--auth", "plain")
    harness.eq(r.code, 5, "exit code with -v")
    harness.check_no_secret(r, *(secret_forms(user, bad) + secret_forms(user, pw)))


def test_password_file():
    user, pw = new_user(mailgen.mailbox(104, 1))
    path = os.path.join(harness.out_dir(), "password")
    harness.write_private(path, pw)
    r = harness.run_cli(["probe"] + common() + ["--password-file", path, pop3s(user)])
    harness.eq(harness.check_ok(r).json()["stat"]["count"], 1, "stat with --password-file")
    harness.check_no_secret(r, *secret_forms(user, pw))
    # no password at all: an error, not a hang or a prompt
    r = harness.run_cli(["probe"] + common() + [pop3s(user)], timeout=20)
    harness.check_failure(r, (2, 5), None)


# ---- TLS verification --------------------------------------------------------------

def test_unknown_ca():
    user, pw = new_user()
    r = probe(user, pw, "--ca-file", dc.pki.other_ca, ca=False)
    line = harness.check_failure(r, 4, r"^pop3bridge: TLS: .*certificate verify failed")
    assert "127.0.0.1" in line, "the host is not named: %r" % line
    # the system trust store does not know the test CA either
    harness.check_failure(probe(user, pw, ca=False), 4, r"^pop3bridge: TLS: .*certificate verify failed")
    # STLS verifies too
    harness.check_failure(probe(user, pw, "--ca-file", dc.pki.other_ca, url=pop3(user), ca=False), 4,
                          r"^pop3bridge: TLS: .*certificate verify failed")


def test_host_name_mismatch():
    wrong = dovecot.Dovecot(cert="wrong", name="wrongname").start()
    try:
        wrong.add_user("mm", "mm-password-1")
        r = harness.run_cli(["probe"] + common() + [pop3s("mm", port=wrong.tls_port)], password="mm-password-1")
        harness.check_failure(r, 4, r"^pop3bridge: TLS: .*(?i:host|name|match)")
        r = harness.run_cli(["probe"] + common() + [pop3s("mm", host="localhost", port=wrong.tls_port)],
                            password="mm-password-1")
        harness.check_failure(r, 4, r"^pop3bridge: TLS: .*(?i:host|name|match)")
    finally:
        wrong.stop()


def test_fingerprint_pin():
    user, pw = new_user(mailgen.mailbox(105, 3))
    fp = dc.pki.fingerprint()
    # the pin replaces CA verification: an unrelated CA file does not matter
    r = harness.check_ok(probe(user, pw, "--ca-file", dc.pki.other_ca, "--fingerprint", fp, ca=False))
    harness.eq(r.json()["stat"]["count"], 3, "stat with a pinned certificate")
    harness.check_ok(probe(user, pw, "--fingerprint", fp, ca=False))
    # a wrong pin fails even though the chain verifies
    bad = fp[:-1] + ("0" if fp[-1] != "0" else "1")
    mark = dc.log_mark()
    r = probe(user, pw, "--fingerprint", bad)
    harness.check_failure(r, 4, r"^pop3bridge: TLS: .*(?i:fingerprint)")
    time.sleep(0.3)
    assert not mentions(dc.log_since(mark), user), "credentials were sent despite the pin mismatch"
    # the pin of another certificate
    r = probe(user, pw, "--fingerprint", dc.pki.fingerprint(dc.pki.other_cert), url=pop3(user))
    harness.check_failure(r, 4, r"^pop3bridge: TLS: .*(?i:fingerprint)")


# ---- plaintext -----------------------------------------------------------------------

def test_plaintext_refused_without_allow():
    user, pw = new_user(mailgen.mailbox(106, 1))
    for mech in ("user", "plain", "login"):
        mark = dc.log_mark()
        r = harness.run_cli(["probe", "--tls", "none", "--auth", mech, "--timeout", "20", pop3(user)], password=pw)
        harness.check_failure(r, (2, 5), r"(?i)plain ?text")
        harness.check_no_secret(r, *secret_forms(user, pw))
        time.sleep(0.5)   # whatever Dovecot would log about this connection
        log = dc.log_since(mark)
        assert not mentions(log, user), "Dovecot saw a login attempt (--auth %s): %s" % (mech, log[-600:])


def test_plaintext_allowed_with_flag():
    user, pw = new_user(mailgen.mailbox(107, 2))
    mark = dc.log_mark()
    r = harness.run_cli(["probe", "--tls", "none", "--allow-plaintext", "--auth", "user", "--timeout", "20",
                         pop3(user)], password=pw)
    j = harness.check_ok(r).json()
    harness.eq(j["tls"], None, "tls without TLS")
    harness.eq(j["auth"], "user", "mechanism")
    harness.eq(j["stat"]["count"], 2, "stat")
    login = dc.wait_log(r"Login: user=<%s>, method=PLAIN, rip=127\.0\.0\.1, lip=[0-9.]+, mpid=\d+, ([^,]+)," % user,
                        mark)
    assert login.group(1) != "TLS", "this login was over TLS"


# ---- trace -----------------------------------------------------------------------------

def test_verbose_trace_masks_secrets():
    user, pw = new_user(mailgen.mailbox(108, 1))
    r = harness.check_ok(probe(user, pw, "-v", "--auth", "user"))
    lines = r.stderr.splitlines()
    assert "C: USER %s" % user in lines, "no USER in the trace: " + r.stderr[:2000]
    assert "C: PASS ********" in lines, "PASS not masked as specified: " + r.stderr[:2000]
    assert any(ln.startswith("S: +OK") for ln in lines), r.stderr[:2000]
    assert any(ln == "C: QUIT" for ln in lines), "no QUIT in the trace"
    harness.check_no_secret(r, *secret_forms(user, pw))
    json_ok = r.json()   # the trace goes to stderr only
    harness.eq(json_ok["auth"], "user", "mechanism")
    for mech in ("plain", "login", "cram-md5", "scram-sha-256", "apop"):
        r = harness.check_ok(probe(user, pw, "-v", "--auth", mech))
        harness.check_no_secret(r, *secret_forms(user, pw))
        cmd = "APOP" if mech == "apop" else "AUTH " + mech.upper()
        assert any(ln.startswith("C: " + cmd) for ln in r.stderr.splitlines()), \
            "no %s in the trace: %s" % (cmd, r.stderr[:1500])


# ---- fetch -------------------------------------------------------------------------------

@harness.timeout(300)
def test_fetch_500_messages_byte_identical():
    msgs = mailgen.mailbox(200, 500)
    user, pw = new_user(msgs)
    md = os.path.join(harness.out_dir(), "Maildir")
    r = harness.check_ok(fetch(user, pw, md, timeout=240))
    held = [m.data for m in dc.messages(user)]
    harness.eq(len(held), 500, "Dovecot still holds every message")
    check_summary(r, 500, 0, nbytes=byte_counts(held))
    check_stored(md, held, "first fetch")
    harness.eq(sorted(held), sorted(msgs), "Dovecot holds what was delivered")
    # again: nothing new
    r = harness.check_ok(fetch(user, pw, md, timeout=240))
    check_summary(r, 0, 500, nbytes=(0,))
    check_stored(md, held, "second fetch")
    # three more arrive: only those are fetched
    more = [mailgen.message(9000 + i, 3000) for i in range(3)]
    for m in more:
        dc.deliver(user, m, "new")
    r = harness.check_ok(fetch(user, pw, md, timeout=240))
    check_summary(r, 3, 500, nbytes=byte_counts(more))
    check_stored(md, held + more, "third fetch")


def test_fetch_creates_maildir_and_keeps_mail_on_server():
    msgs = mailgen.mailbox(201, 8)
    user, pw = new_user(msgs)
    md = os.path.join(harness.out_dir(), "a", "b", "Maildir")
    os.makedirs(os.path.dirname(md))
    before = [(m.base, m.data) for m in dc.messages(user)]
    r = harness.check_ok(fetch(user, pw, md))
    check_summary(r, 8, 0, nbytes=byte_counts(msgs))
    check_stored(md, msgs, "fetch")
    harness.eq([(m.base, m.data) for m in dc.messages(user)], before, "Dovecot's mailbox after fetch")


def test_fetch_delete_empties_mailbox():
    msgs = mailgen.mailbox(202, 20)
    user, pw = new_user(msgs)
    md = os.path.join(harness.out_dir(), "Maildir")
    mark = dc.log_mark()
    r = harness.check_ok(fetch(user, pw, md, "--delete"))
    check_summary(r, 20, 0, deleted=20, nbytes=byte_counts(msgs))
    check_stored(md, msgs, "fetch --delete")
    harness.eq(dc.messages(user), [], "Dovecot's mailbox after fetch --delete")
    dc.wait_log(r"pop3\(%s\).*Logged out .*del=20/20" % user, mark)
    count, _, _, _ = popref.listing(dc, user, pw)
    harness.eq(count, 0, "STAT after fetch --delete")
    r = harness.check_ok(fetch(user, pw, md, "--delete"))
    m = SUMMARY.fullmatch(r.stdout.strip())
    assert m and m.group(1) == "0" and m.group(4) in (None, "0"), r.describe()


def test_probe_never_deletes():
    msgs = mailgen.mailbox(203, 6)
    user, pw = new_user(msgs)
    j1 = harness.check_ok(probe(user, pw)).json()
    before = [(m.base, m.data) for m in dc.messages(user)]
    mark = dc.log_mark()
    j2 = harness.check_ok(probe(user, pw, "--auth", "user")).json()
    harness.eq(j2["messages"], j1["messages"], "second probe's listing")
    harness.eq(j2["stat"], {"count": 6, "octets": sum(len(m) + m.count(b"\n") for m in msgs)}, "stat")
    harness.eq([(m.base, m.data) for m in dc.messages(user)], before, "Dovecot's mailbox after two probes")
    dc.wait_log(r"pop3\(%s\).*Logged out .*del=0/6" % user, mark)
    assert not re.search(r"pop3\(%s\).*retr=[1-9]" % user, dc.log_since(mark)), "probe retrieved messages"


@harness.timeout(120)
def test_fetch_2mb_message():
    big = mailgen.message(204, 2 * 1024 * 1024, "mixed")
    small = mailgen.message(205, 1500, "plain")
    user, pw = new_user([big, small])
    j = harness.check_ok(probe(user, pw)).json()
    harness.eq(sorted(m["size"] for m in j["messages"]),
               sorted(len(x) + x.count(b"\n") for x in (big, small)), "sizes")
    md = os.path.join(harness.out_dir(), "Maildir")
    r = harness.check_ok(fetch(user, pw, md))
    check_summary(r, 2, 0, nbytes=byte_counts([big, small]))
    check_stored(md, [big, small], "fetch of a 2 MB message")


def test_fetch_max_size_refuses_big_message():
    big = mailgen.message(206, 300 * 1024, "mixed")
    user, pw = new_user([big])
    md = os.path.join(harness.out_dir(), "Maildir")
    r = fetch(user, pw, md, "--max-size", "64KiB", "--delete")
    harness.check_failure(r, 6, r"^pop3bridge: Limit:")
    if os.path.isdir(os.path.join(md, "new")):
        harness.eq(os.listdir(os.path.join(md, "new")), [], "stored part of a message over the limit")
    harness.eq(len(dc.messages(user)), 1, "the message is still on the server")


def test_fetch_local_error():
    msgs = mailgen.mailbox(207, 2)
    user, pw = new_user(msgs)
    blocker = os.path.join(harness.out_dir(), "not-a-directory")
    with open(blocker, "w") as f:
        f.write("x")
    r = fetch(user, pw, os.path.join(blocker, "Maildir"), "--delete")
    harness.check_failure(r, 9, r"^pop3bridge: ")
    harness.eq(len(dc.messages(user)), 2, "messages on the server after a local error with --delete")


# ---- usage and connection ------------------------------------------------------------------

def test_usage_errors():
    user, pw = new_user()
    md = os.path.join(harness.out_dir(), "Maildir")
    # no arguments at all: the usage text (several lines) and exit 2
    r = harness.run_cli([], password=pw, timeout=20)
    harness.eq(r.code, 2, "exit code without arguments")
    cases = [["probe"], ["fetch", pop3s(user)], ["bogus-command", pop3s(user)],
             ["probe", "http://%s@127.0.0.1:%d" % (user, dc.tls_port)], ["probe", "pop3s://127.0.0.1"],
             ["probe", "--tls", "sometimes", pop3s(user)], ["probe", "--auth", "md4", pop3s(user)],
             ["probe", "--timeout", "soon", pop3s(user)], ["probe", "--no-such-option", pop3s(user)],
             ["fetch", "--max-size", "lots", pop3s(user), md], ["probe", "--delete", pop3s(user)],
             ["probe", "pop3s://%s@127.0.0.1:99999" % user]]
    mark = dc.log_mark()
    for args in cases:
        r = harness.run_cli(args, password=pw, timeout=20)
        try:
            harness.check_failure(r, 2, r"^pop3bridge: ")
        except AssertionError as exc:
            raise AssertionError("pop3bridge %s: %s" % (" ".join(args), exc))
    time.sleep(0.3)
    assert not mentions(dc.log_since(mark), user), "a usage error still logged in"


def test_connection_refused():
    port = dovecot.free_port()
    r = harness.run_cli(["probe"] + common() + ["pop3s://nobody@127.0.0.1:%d" % port], password="x", timeout=20)
    harness.check_failure(r, 3, r"^pop3bridge: ")
    assert r.elapsed < 10, "took %.1fs" % r.elapsed
