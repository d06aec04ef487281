"""The harness checks itself with Python's poplib and ssl: if these fail, a
failing pop3bridge test says nothing about pop3bridge."""

import email
import email.policy
import hashlib
import os
import poplib
import re
import socket
import ssl
import time

import dovecot
import harness
import mailgen
import pki
import popref
from scripted_server import (ScriptedServer, close, drip, expect, expect_alone, expect_batch, flood, respond,
                             send, sleep)

TIMEOUT = 60
dc = None
PW = "harness-Pw.1"


def setup_module():
    global dc
    dc = dovecot.Dovecot(name="harness").start()


def teardown_module():
    if dc:
        dc.stop()


def _user(name):
    return dc.add_user(name, PW)


def test_tls_ports_verify_with_the_test_ca():
    _user("h_tls")
    c = popref.connect(dc, "implicit")
    try:
        # auth_mechanisms = apop makes Dovecot put an RFC 1939 timestamp in the greeting
        assert re.fullmatch(rb"\+OK %s <[^<>@ ]+@[^<>@ ]+>" % re.escape(dovecot.GREETING.encode()),
                            c.getwelcome()), c.getwelcome()
        harness.eq(c.sock.version() in ("TLSv1.2", "TLSv1.3"), True, "TLS version " + c.sock.version())
        der = c.sock.getpeercert(binary_form=True)
        harness.eq("sha256:" + hashlib.sha256(der).hexdigest(), dc.pki.fingerprint(), "server fingerprint")
        popref.login(c, "h_tls", PW)
    finally:
        c.quit()
    c = poplib.POP3("127.0.0.1", dc.port, timeout=10)
    try:
        pre = popref.capa_lines(c)
        assert "STLS" in pre, pre
        c.stls(context=ssl.create_default_context(cafile=dc.pki.ca))
        popref.login(c, "h_tls", PW)
        post = popref.capa_lines(c)
        assert "STLS" not in post and not any(x.startswith("SASL") for x in post), post
    finally:
        c.quit()
    # TLS 1.1 and older are refused by the server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(dc.pki.ca)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        with socket.create_connection(("127.0.0.1", dc.tls_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                raise AssertionError("a TLS 1.1 handshake succeeded")
    except (ssl.SSLError, ConnectionResetError):
        pass


def test_unknown_ca_and_wrong_name_fail_verification():
    try:
        popref.connect(dc, "implicit", ca=dc.pki.other_ca).quit()
        raise AssertionError("verified against the unrelated CA")
    except ssl.SSLCertVerificationError as exc:
        assert "unable to get local issuer certificate" in str(exc), exc
    wrong = dovecot.Dovecot(cert="wrong", name="wrongname").start()
    try:
        try:
            popref.connect(wrong, "implicit").quit()
            raise AssertionError("the wrong-name certificate verified for 127.0.0.1")
        except ssl.SSLCertVerificationError as exc:
            assert "mismatch" in str(exc) or "match" in str(exc), exc
        # same CA, so only the name is wrong
        ctx = ssl.create_default_context(cafile=wrong.pki.ca)
        with socket.create_connection(("127.0.0.1", wrong.tls_port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="wrong.invalid") as t:
                harness.eq(t.recv(3), b"+OK", "greeting under the right name")
    finally:
        wrong.stop()
    harness.eq(wrong.running(), False, "second instance stopped")


def test_every_mechanism_logs_in():
    _user("h_mech")
    mark = dc.log_mark()
    expected = {"user": "PLAIN", "apop": "APOP", "plain": "PLAIN", "login": "LOGIN", "cram-md5": "CRAM-MD5",
                "scram-sha-1": "SCRAM-SHA-1", "scram-sha-256": "SCRAM-SHA-256"}
    for mech, logged in expected.items():
        m = dc.log_mark()
        c = popref.connect(dc, "implicit")
        try:
            popref.login(c, "h_mech", PW, mech)
            c.stat()
        finally:
            c.quit()
        dc.wait_log(r"Login: user=<h_mech>, method=%s," % logged, m)
    # and a wrong password is refused for each
    for mech in expected:
        c = popref.connect(dc, "implicit")
        try:
            popref.login(c, "h_mech", PW + "x", mech)
            raise AssertionError("%s accepted a wrong password" % mech)
        except poplib.error_proto:
            pass
        finally:
            c.close()
    assert "apop" in dc.mechanisms
    assert PW not in dc.log_since(mark), "Dovecot logged the password"


def test_maildir_view_matches_pop3():
    _user("h_view")
    msgs = mailgen.mailbox(3, 30)
    for i, m in enumerate(msgs):
        dc.deliver("h_view", m, "cur" if i % 3 == 0 else "new")
    count, octets, entries, _ = popref.listing(dc, "h_view", PW)
    expected = dc.expected_listing("h_view")
    harness.eq(count, 30, "STAT count")
    harness.eq(octets, sum(s for _, _, s in expected), "STAT octets")
    harness.eq(entries, expected, "UIDL/LIST vs Maildir")
    harness.eq([m.data for m in dc.messages("h_view")], msgs, "Maildir holds what was delivered, in order")
    harness.eq(popref.retr_all(dc, "h_view", PW), msgs, "RETR unstuffed == files")


def test_log_shows_a_plaintext_login_attempt():
    # test_pop3_cli relies on this: a USER/PASS attempt names the user in the log
    _user("h_plain")
    mark = dc.log_mark()
    c = popref.connect(dc, "none")
    try:
        c.user("h_plain")
        try:
            c.pass_("not-the-password")
        except poplib.error_proto:
            pass
    finally:
        c.close()
    dc.wait_log(r"Disconnected.*user=<h_plain>", mark)   # the last line about that connection
    mark = dc.log_mark()
    c = popref.connect(dc, "none")
    c.quit()
    dc.wait_log(r"no auth attempts", mark)
    assert "h_plain" not in dc.log_since(mark)


def test_scripted_server_records_the_transcript():
    srv = ScriptedServer([
        send(b"+OK ready\r\n"),
        expect(r"CAPA", b"+OK\r\nUSER\r\n.\r\n"),
        respond([(r"STAT", b"+OK 0 0\r\n"), (r"NOOP", b"+OK\r\n"), (r"QUIT", b"+OK bye\r\n")], until=r"QUIT"),
    ], timeout=10, linger=1).start()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    f = s.makefile("rb")
    assert f.readline() == b"+OK ready\r\n"
    s.sendall(b"CAPA\r\nNOOP\r\nSTAT\r\nQUIT\r\n")   # pipelined
    got = b"".join(f.readline() for _ in range(6))
    harness.eq(got, b"+OK\r\nUSER\r\n.\r\n+OK\r\n+OK 0 0\r\n+OK bye\r\n", "replies")
    s.close()
    srv.wait()
    srv.check_script()
    harness.eq(srv.commands, ["CAPA", "NOOP", "STAT", "QUIT"], "commands")
    # a mismatch is an error, and the server still ends
    srv = ScriptedServer([send(b"+OK\r\n"), expect(r"USER x")], timeout=10).start()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.recv(10)
        s.sendall(b"USER y\r\n")
        srv.wait()
    assert srv.errors and "USER y" in srv.errors[0], srv.errors


def test_scripted_server_tls_drip_flood_and_bounds():
    srv = ScriptedServer([send(b"+OK tls\r\n"), expect(r"QUIT", b"+OK\r\n")], tls=True, timeout=10).start()
    c = poplib.POP3_SSL("127.0.0.1", srv.port, context=ssl.create_default_context(cafile=pki.get().ca),
                        timeout=5)
    harness.eq(c.getwelcome(), b"+OK tls", "greeting over TLS")
    c.quit()
    srv.wait()
    srv.check_script()
    # drip: one byte per 0.5 s; the server notices the client leaving
    srv = ScriptedServer([drip(b"+OK " + b"x" * 100 + b"\r\n", 0.5)], timeout=20).start()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        got = s.recv(10)
        time.sleep(1.2)
    srv.wait()
    assert time.monotonic() - t0 < 5, "drip did not stop when the client left"
    assert srv.client_closed and got.startswith(b"+"), (srv.events, got)
    # flood: the count is exact
    srv = ScriptedServer([send(b"+OK\r\n"), flood(b"X-LINE\r\n", 100000), send(b".\r\n")], timeout=20).start()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        data = b""
        while not data.endswith(b"\r\n.\r\n"):
            chunk = s.recv(1 << 16)
            assert chunk, "closed early"
            data += chunk
    srv.wait()
    harness.eq(data.count(b"X-LINE\r\n"), 100000, "flood lines")
    # expect_batch fails for a client that waits for each reply
    srv = ScriptedServer([send(b"+OK\r\n"), expect_batch([r"RETR 1", r"RETR 2"], within=1)], timeout=10).start()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.recv(10)
        s.sendall(b"RETR 1\r\n")
        srv.wait()
    assert srv.errors and "pipelined" in srv.errors[0], srv.errors
    # expect_alone fails for a client that pipelines, passes for one that waits
    srv = ScriptedServer([send(b"+OK\r\n"), expect_alone(r"STAT", b"+OK 0 0\r\n")], timeout=10).start()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.recv(10)
        s.sendall(b"STAT\r\nQUIT\r\n")
        srv.wait()
    assert srv.errors and "pipelined" in srv.errors[0], srv.errors
    srv = ScriptedServer([send(b"+OK\r\n"), expect_alone(r"STAT", b"+OK 0 0\r\n"),
                          expect(r"QUIT", b"+OK\r\n")], timeout=10, linger=0.5).start()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"STAT\r\n")
        harness.eq(f.readline(), b"+OK 0 0\r\n", "reply after waiting")
        s.sendall(b"QUIT\r\n")
        f.readline()
    srv.wait()
    harness.eq((srv.errors, srv.commands), ([], ["STAT", "QUIT"]), "expect_alone with a patient client")
    # nobody connects: the server ends by its own timeout
    t0 = time.monotonic()
    srv = ScriptedServer([send(b"+OK\r\n"), sleep(60)], timeout=1.5).start()
    srv.wait()
    assert srv.errors == ["no client connected"] and time.monotonic() - t0 < 4, srv.errors
    # the server closes when told
    srv = ScriptedServer([send(b"+OK\r\n"), close()], timeout=10).start()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.settimeout(5)
        data = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
    srv.wait()
    harness.eq((data, srv.errors), (b"+OK\r\n", []), "close step")


def test_dovecot_stop_leaves_no_process():
    d = dovecot.Dovecot(name="stoptest").start()
    pgid, path = d.proc.pid, d.dir
    assert dovecot._proc_group_members(pgid), "no dovecot processes?"
    d.stop()
    harness.eq(dovecot._proc_group_members(pgid), [], "processes left in the group")
    harness.eq(os.path.exists(path), False, "instance directory removed")
    harness.eq(dovecot.port_answers(d.tls_port), False, "port still answers")


def test_mailgen_is_deterministic_and_tricky():
    box = mailgen.mailbox(9, 40)
    harness.eq(box, mailgen.mailbox(9, 40), "same seed, same bytes")
    assert box != mailgen.mailbox(10, 40)
    joined = b"\n".join(box)
    for needle in (b"\n.\n", b"\n..\n", b"\n.foo\n", b"\nFrom ", b"=?UTF-8?", b"\n\t", b"base64",
                   b"quoted-printable", "ü".encode()):
        assert needle in joined, "no %r in the generated mail" % needle
    kinds = set()
    for m in box:
        assert m.endswith(b"\n") and b"\r" not in m
        msg = email.message_from_bytes(m, policy=email.policy.default)
        kinds.add(msg.get_content_type())
        assert msg["Subject"] and msg["Message-ID"]
        for part in msg.walk():
            if not part.is_multipart():
                part.get_content()   # decodes (base64 / QP / 8bit) without error
    harness.eq(kinds, {"text/plain", "multipart/alternative", "multipart/mixed"}, "content types")
    big = mailgen.message(4, 2 * 1024 * 1024, "mixed")
    assert abs(len(big) - 2 * 1024 * 1024) < 16384, len(big)
