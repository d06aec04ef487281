"""pop3bridge against a scripted POP3 server: the misbehaviour no real server
produces, and the exact bytes the client sends."""

import base64
import json
import os
import re
import time

import harness
import pki
from scripted_server import (ScriptedServer, call, close, drip, expect, expect_alone, expect_batch, flood,
                             respond, send, starttls)

TIMEOUT = 60
USER = "alice"
PW = "Scripted-secret-7Qx"
TOKEN = "ya29.scripted-bearer-token-Zk3"
GREETING = b"+OK scripted POP3 ready\r\n"
BASE_CAPA = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER"]


# ---- building blocks ---------------------------------------------------------

def capa(lines):
    return b"+OK Capability list follows\r\n" + b"".join(x.encode() + b"\r\n" for x in lines) + b".\r\n"


def login_user(pre=BASE_CAPA, post=BASE_CAPA):
    return [expect(r"CAPA", capa(pre)),
            expect(r"USER %s" % USER, b"+OK\r\n"),
            expect(r"PASS %s" % re.escape(PW), b"+OK Logged in.\r\n"),
            expect(r"CAPA", capa(post))]


def wire(msg):
    """A stored message (LF) as RETR sends it: CRLF, dot-stuffed, terminated."""
    assert msg.endswith(b"\n")
    lines = msg[:-1].split(b"\n")
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


def pop3_size(msg):
    return len(msg) + msg.count(b"\n")


def listing_rules(uidls, sizes, stat=None):
    count = len(uidls) if stat is None else stat[0]
    octets = sum(sizes) if stat is None else stat[1]
    return [(r"STAT", b"+OK %d %d\r\n" % (count, octets)),
            (r"UIDL", b"+OK\r\n" + b"".join(b"%d %s\r\n" % (i + 1, u.encode("latin-1"))
                                            for i, u in enumerate(uidls)) + b".\r\n"),
            (r"LIST", b"+OK\r\n" + b"".join(b"%d %d\r\n" % (i + 1, s) for i, s in enumerate(sizes)) + b".\r\n"),
            (r"QUIT", b"+OK bye\r\n")]


def listing(uidls, sizes, stat=None):
    """STAT, UIDL and LIST in whichever order the client sends them."""
    return respond(listing_rules(uidls, sizes, stat), count=3)


def raw_listing(stat_line, uidl_body, list_body):
    return respond([(r"STAT", stat_line), (r"UIDL", b"+OK\r\n" + uidl_body + b".\r\n"),
                    (r"LIST", b"+OK\r\n" + list_body + b".\r\n"), (r"QUIT", b"+OK\r\n")], count=3)


def run(script, cmd="probe", extra=(), tls=True, maildir=None, user=USER, password=PW, cli_timeout=30,
        server_timeout=30, net_timeout="10", port=0):
    """Start the scripted server, run pop3bridge against it, wait for both."""
    srv = ScriptedServer(script, tls=tls, timeout=server_timeout, port=port).start()
    url = "%s://%s@127.0.0.1:%d" % ("pop3s" if tls else "pop3", user, srv.port)
    args = [cmd, "--ca-file", pki.get().ca, "--timeout", net_timeout] + list(extra) + [url]
    if maildir:
        args.append(maildir)
    try:
        r = harness.run_cli(args, password=password, timeout=cli_timeout)
    except BaseException:
        srv.stop()
        raise
    if not srv.accepted:
        # the client is gone; if it never connected, do not wait for the server's timeout
        try:
            harness.wait_for(lambda: srv.accepted, 0.5, what="a connection")
        except AssertionError:
            srv.stop()
    srv.wait()
    return r, srv


def no_credentials(srv):
    sent = [c for c in srv.commands if re.match(r"(?i)(USER|PASS|APOP|AUTH)\b", c)]
    if sent:
        raise AssertionError("credentials were sent: %r" % sent)


def only_quit_after(commands, prefix):
    """commands == prefix, optionally followed by one QUIT."""
    if commands[:len(prefix)] != prefix or commands[len(prefix):] not in ([], ["QUIT"]):
        raise AssertionError("commands %r, expected %r (+ QUIT)" % (commands, prefix))


def b64(b):
    return base64.b64encode(b).decode()


def token_file():
    path = os.path.join(harness.out_dir(), "token")
    harness.write_private(path, TOKEN)  # probe/fetch refuse a token others may read
    return path


def new_maildir():
    return os.path.join(harness.out_dir(), "Maildir")


def stored(md):
    d = os.path.join(md, "new")
    if not os.path.isdir(d):
        return []
    out = []
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            out.append(f.read())
    return out


MSGS = [b"Subject: one\nFrom: a@example.com\n\nline\n.\n..\n.foo\nFrom the start\n",
        b"Subject: two\n\n...three dots\n\n",
        b"Subject: three\n\nlast line is a dot\n.\n"]
UIDLS = ["uid-one", "uid-two", "uid-three"]


# ---- line and reply limits ---------------------------------------------------------

def test_overlong_reply_line():
    r, srv = run([send(b"+OK " + b"x" * 9000 + b"\r\n")])
    harness.check_failure(r, 6, r"^pop3bridge: Limit: .*8192")
    no_credentials(srv)
    # in a multi-line reply too
    r, srv = run([send(GREETING), expect(r"CAPA", b"+OK\r\nTOP\r\n" + b"X" * 9000 + b"\r\n.\r\n")])
    harness.check_failure(r, 6, r"^pop3bridge: (Limit|Protocol): ")
    no_credentials(srv)


def test_long_line_under_the_limit_is_accepted():
    r, srv = run([send(b"+OK " + b"g" * 4000 + b"\r\n")] + login_user() + [listing([], []),
                                                                         expect(r"QUIT", b"+OK\r\n")])
    harness.check_ok(r)
    assert r.json()["greeting"].startswith("+OK gggg") or r.json()["greeting"].startswith("gggg"), r.stdout[:200]
    srv.check_script()


def test_greeting_garbage():
    r, srv = run([send(b"HELLO\r\n")])
    harness.check_failure(r, 6, r"^pop3bridge: Protocol: ")
    only_quit_after(srv.commands, [])
    r, srv = run([send(b"\x16\x03\x01garbage\r\n")], tls=False, extra=["--tls", "starttls"])
    harness.check_failure(r, 6, r"^pop3bridge: Protocol: ")
    no_credentials(srv)


def test_greeting_err():
    r, srv = run([send(b"-ERR [SYS/TEMP] maintenance, come back later\r\n")])
    harness.check_failure(r, 7, r"^pop3bridge: .*maintenance, come back later")
    no_credentials(srv)
    r, srv = run([send(b"-ERR go away\r\n")])
    harness.check_failure(r, 8, r"^pop3bridge: Server: .*go away")


def test_multiline_reply_without_terminator_then_close():
    r, srv = run([send(GREETING), expect(r"CAPA", b"+OK\r\nTOP\r\nUIDL\r\n"), close()])
    harness.check_failure(r, (3, 6), r"^pop3bridge: ")
    assert r.elapsed < 5, "took %.1fs after the server closed" % r.elapsed
    no_credentials(srv)
    # the same in the middle of a listing
    r, srv = run([send(GREETING)] + login_user() + [
        respond([(r"STAT", b"+OK 2 20\r\n"), (r"LIST", b"+OK\r\n1 10\r\n"), (r"UIDL", b"+OK\r\n1 a\r\n")],
                count=1), close()])
    harness.check_failure(r, (3, 6), r"^pop3bridge: ")
    assert r.elapsed < 5, "took %.1fs after the server closed" % r.elapsed


def test_capa_flood():
    t0 = time.monotonic()
    r, srv = run([send(GREETING), expect(r"CAPA", b"+OK\r\n"), flood(b"X-FLOOD-CAPABILITY\r\n", 100000),
                  send(b".\r\n")])
    harness.check_failure(r, 6, r"^pop3bridge: (Limit|Protocol): .*(?i:capa)")
    assert time.monotonic() - t0 < 15, "took %.1fs" % (time.monotonic() - t0)
    no_credentials(srv)


# ---- listings ----------------------------------------------------------------------------

def _bad_listing(stat_line, uidl_body, list_body, what):
    r, srv = run([send(GREETING)] + login_user() + [raw_listing(stat_line, uidl_body, list_body)])
    try:
        harness.check_failure(r, 6, r"^pop3bridge: Protocol: ")
    except AssertionError as exc:
        raise AssertionError("%s: %s" % (what, exc))
    assert "RETR" not in " ".join(srv.commands), srv.commands
    return r


def test_duplicate_uidls():
    r = _bad_listing(b"+OK 2 20\r\n", b"1 same\r\n2 same\r\n", b"1 10\r\n2 10\r\n", "duplicate UIDL")
    assert re.search(r"(?i)uidl", r.stderr), r.stderr
    _bad_listing(b"+OK 2 20\r\n", b"1 a\r\n1 b\r\n", b"1 10\r\n2 10\r\n", "duplicate number in UIDL")
    _bad_listing(b"+OK 2 20\r\n", b"1 a\r\n2 b\r\n", b"1 10\r\n1 10\r\n", "duplicate number in LIST")


def test_invalid_uidls():
    cases = [(b"1 abc def\r\n", "a space"), (b"1 " + b"u" * 71 + b"\r\n", "71 characters"),
             (b"1 abc\x7fdef\r\n", "0x7F"), (b"1 abc\x01\r\n", "a control character"),
             (b"1 \xc3\xa9t\xc3\xa9\r\n", "8-bit bytes"), (b"1 \r\n", "an empty UIDL"), (b"1\r\n", "no UIDL")]
    for body, what in cases:
        _bad_listing(b"+OK 1 10\r\n", body, b"1 10\r\n", "UIDL with " + what)


def test_uidl_at_the_limits_is_accepted():
    longest = "".join(chr(c) for c in range(0x21, 0x7F))[:70]      # 70 characters, 0x21..0x7E
    shortest = "~"
    sizes = [10, 20]
    r, srv = run([send(GREETING)] + login_user() + [listing([longest, shortest], sizes),
                                                    expect(r"QUIT", b"+OK\r\n")])
    j = harness.check_ok(r).json()
    harness.eq(j["messages"], [{"number": 1, "uidl": longest, "size": 10}, {"number": 2, "uidl": shortest, "size": 20}],
               "messages")
    harness.eq(j["stat"], {"count": 2, "octets": 30}, "stat")
    srv.check_script()


def test_bad_message_numbers():
    cases = [(b"99999999999999999999 a\r\n", b"1 10\r\n", "UIDL number overflowing 64 bits"),
             (b"4294967297 a\r\n", b"1 10\r\n", "UIDL number overflowing 32 bits"),
             (b"0 a\r\n", b"1 10\r\n", "UIDL number 0"),
             (b"2 a\r\n", b"1 10\r\n", "UIDL number beyond STAT"),
             (b"-1 a\r\n", b"1 10\r\n", "negative UIDL number"),
             (b"+1 a\r\n", b"1 10\r\n", "UIDL number with a sign"),
             (b"1x a\r\n", b"1 10\r\n", "UIDL number with junk"),
             (b"1 a\r\n", b"99999999999999999999 10\r\n", "LIST number overflowing"),
             (b"1 a\r\n", b"0 10\r\n", "LIST number 0"),
             (b"1 a\r\n", b"1 99999999999999999999\r\n", "LIST size overflowing"),
             (b"1 a\r\n", b"1 ten\r\n", "LIST size not a number")]
    for uidl_body, list_body, what in cases:
        _bad_listing(b"+OK 1 10\r\n", uidl_body, list_body, what)
    _bad_listing(b"+OK 99999999999999999999 10\r\n", b"1 a\r\n", b"1 10\r\n", "STAT count overflowing")
    _bad_listing(b"+OK many 10\r\n", b"1 a\r\n", b"1 10\r\n", "STAT count not a number")


def test_uidl_count_differs_from_stat():
    _bad_listing(b"+OK 3 30\r\n", b"1 a\r\n2 b\r\n", b"1 10\r\n2 10\r\n3 10\r\n", "UIDL lists fewer than STAT")
    _bad_listing(b"+OK 1 10\r\n", b"1 a\r\n2 b\r\n", b"1 10\r\n", "UIDL lists more than STAT")
    _bad_listing(b"+OK 2 20\r\n", b"1 a\r\n2 b\r\n", b"1 10\r\n", "LIST lists fewer than STAT")


# ---- sizes and time -------------------------------------------------------------------------

def test_retr_larger_than_max_size():
    body = (b"Subject: big\n\n" + b"0123456789abcdef" * 4 + b"\n") * 1600   # ~105 KiB
    md = new_maildir()
    r, srv = run([send(GREETING)] + login_user() + [
        listing(["big-1"], [1000]),          # LIST understates: the limit counts what arrives
        respond([(r"RETR 1", b"+OK\r\n" + wire(body)), (r"QUIT", b"+OK\r\n")], count=1)],
        cmd="fetch", extra=["--max-size", "64KiB", "--delete"], maildir=md)
    harness.check_failure(r, 6, r"^pop3bridge: Limit: .*(65536|64 ?KiB)")
    harness.eq(stored(md), [], "stored messages")
    assert not any(c.startswith("DELE") for c in srv.commands), srv.commands


def test_retr_under_max_size_is_stored():
    body = (b"Subject: fits\n\n" + b"0123456789abcdef" * 4 + b"\n") * 700    # ~55 KiB
    assert 50000 < len(body) < pop3_size(body) < 64 * 1024
    md = new_maildir()
    r, srv = run([send(GREETING)] + login_user() + [
        listing(["fits-1"], [pop3_size(body)]),
        expect(r"RETR 1", b"+OK\r\n" + wire(body)), expect(r"QUIT", b"+OK\r\n")],
        cmd="fetch", extra=["--max-size", "64KiB"], maildir=md)
    harness.check_ok(r)
    harness.eq(stored(md), [body], "stored message")
    srv.check_script()


def test_server_dripping_bytes_is_cut_off():
    t0 = time.monotonic()
    r, srv = run([drip(b"+OK " + b"z" * 60 + b"\r\n", 1.0)], net_timeout="2", cli_timeout=30)
    harness.check_failure(r, 3, r"^pop3bridge: Timeout: ")
    assert 1.5 <= r.elapsed <= 10, "cut off after %.1fs" % r.elapsed
    assert time.monotonic() - t0 < 20
    no_credentials(srv)


def test_body_dripping_is_cut_off():
    body = b"Subject: slow\n\n" + b"s" * 200 + b"\n"
    md = new_maildir()
    r, srv = run([send(GREETING)] + login_user() + [
        listing(["slow-1"], [pop3_size(body)]),
        expect(r"RETR 1", b"+OK\r\n"), drip(wire(body), 0.5)],
        cmd="fetch", extra=["--delete"], maildir=md, net_timeout="2")
    harness.check_failure(r, 3, r"^pop3bridge: Timeout: ")
    assert r.elapsed <= 10, "cut off after %.1fs" % r.elapsed
    harness.eq(stored(md), [], "stored messages")
    assert not any(c.startswith("DELE") for c in srv.commands), srv.commands


def test_silent_server_times_out():
    r, srv = run([send(GREETING), expect(r"CAPA")], net_timeout="2")
    harness.check_failure(r, 3, r"^pop3bridge: Timeout: ")
    assert 1.5 <= r.elapsed <= 10, "gave up after %.1fs" % r.elapsed


# ---- server answers ------------------------------------------------------------------------------

def _pass_err(reply):
    return run([send(GREETING), expect(r"CAPA", capa(BASE_CAPA)), expect(r"USER %s" % USER, b"+OK\r\n"),
                expect(r"PASS .*", reply)])


def test_in_use_at_pass():
    r, srv = _pass_err(b"-ERR [IN-USE] Mailbox is locked by another session\r\n")
    harness.check_failure(r, 7, r"^pop3bridge: Server: .*locked by another session")
    harness.check_no_secret(r, PW)
    only_quit_after(srv.commands, ["CAPA", "USER alice", "PASS " + PW])


def test_login_delay_and_sys_temp():
    r, _ = _pass_err(b"-ERR [LOGIN-DELAY] Minimum time between logins not reached\r\n")
    harness.check_failure(r, 7, r"^pop3bridge: Server: .*Minimum time between logins")
    r, _ = _pass_err(b"-ERR [SYS/TEMP] Disk quota service unavailable\r\n")
    harness.check_failure(r, 7, r"^pop3bridge: Server: .*quota service unavailable")


def test_authentication_refused():
    for reply in (b"-ERR [AUTH] Invalid credentials\r\n", b"-ERR no\r\n"):
        r, _ = _pass_err(reply)
        harness.check_failure(r, 5, r"^pop3bridge: Authentication: ")
        harness.check_no_secret(r, PW)


def test_other_server_error():
    r, srv = run([send(GREETING)] + login_user() + [
        respond([(r"STAT", b"-ERR mailbox index is corrupt (code 42)\r\n"), (r"UIDL", b"+OK\r\n.\r\n"),
                 (r"LIST", b"+OK\r\n.\r\n"), (r"QUIT", b"+OK\r\n")], count=3)])
    harness.check_failure(r, 8, r"^pop3bridge: Server: .*mailbox index is corrupt \(code 42\)")


def test_server_text_is_sanitised():
    r, _ = _pass_err(b"-ERR [IN-USE] locked \x1b[31mred\x07 \xff\r\n")
    line = harness.check_failure(r, 7, r"^pop3bridge: ")
    assert "\x1b" not in line and "\x07" not in line, repr(line)


# ---- transcripts ------------------------------------------------------------------------------

def _login_prefix():
    return ["CAPA", "USER " + USER, "PASS " + PW, "CAPA"]


def _check_listing_then(commands, rest, what):
    pre = _login_prefix()
    got_pre, got_list, got_rest = commands[:4], commands[4:7], commands[7:]
    if got_pre != pre or sorted(got_list) != ["LIST", "STAT", "UIDL"] or got_rest != rest:
        raise AssertionError("%s: commands %r, expected %r + STAT/UIDL/LIST (any order) + %r"
                             % (what, commands, pre, rest))


def test_pipelined_fetch_transcript():
    sizes = [pop3_size(m) for m in MSGS]
    md = new_maildir()
    r, srv = run([send(GREETING)] + login_user() + [
        listing(UIDLS, sizes),
        expect_batch([r"RETR 1", r"RETR 2", r"RETR 3"], within=3),
        send(b"".join(b"+OK %d octets\r\n" % s + wire(m) for m, s in zip(MSGS, sizes))),
        expect(r"QUIT", b"+OK bye\r\n")], cmd="fetch", maildir=md)
    harness.check_ok(r)
    srv.check_script()
    _check_listing_then(srv.commands, ["RETR 1", "RETR 2", "RETR 3", "QUIT"], "pipelined fetch")
    harness.eq(sorted(stored(md)), sorted(MSGS), "stored messages (dot-unstuffed, LF)")
    harness.eq(r.stdout.strip(), "fetched 3 new messages (%d bytes), 0 already present" % sum(map(len, MSGS)),
               "summary")
    # the same mailbox (same port) again: nothing is retrieved
    r, srv = run([send(GREETING)] + login_user() + [listing(UIDLS, sizes), expect(r"QUIT", b"+OK\r\n")],
                 cmd="fetch", maildir=md, port=srv.port)
    harness.check_ok(r)
    srv.check_script()
    _check_listing_then(srv.commands, ["QUIT"], "second fetch")
    harness.eq(r.stdout.strip(), "fetched 0 new messages (0 bytes), 3 already present", "summary")
    harness.eq(len(stored(md)), 3, "messages stored after the second fetch")


def test_fetch_delete_transcript():
    sizes = [pop3_size(m) for m in MSGS]
    md = new_maildir()
    r, srv = run([send(GREETING)] + login_user() + [
        listing(UIDLS, sizes),
        respond([(r"RETR %d" % (i + 1), b"+OK\r\n" + wire(m)) for i, m in enumerate(MSGS)], count=3),
        respond([(r"DELE [123]", b"+OK marked\r\n")], count=3),
        expect(r"QUIT", b"+OK 3 deleted\r\n")], cmd="fetch", extra=["--delete"], maildir=md)
    harness.check_ok(r)
    srv.check_script()
    _check_listing_then(srv.commands, ["RETR 1", "RETR 2", "RETR 3", "DELE 1", "DELE 2", "DELE 3", "QUIT"],
                        "fetch --delete")
    harness.eq(r.stdout.strip(), "fetched 3 new messages (%d bytes), 0 already present, 3 deleted"
               % sum(map(len, MSGS)), "summary")


def test_no_pipelining_without_the_capability():
    plain = [c for c in BASE_CAPA if c != "PIPELINING"]
    sizes = [pop3_size(m) for m in MSGS[:2]]
    md = new_maildir()
    r, srv = run([send(GREETING), expect_alone(r"CAPA", capa(plain)),
                  expect_alone(r"USER %s" % USER, b"+OK\r\n"), expect_alone(r"PASS .*", b"+OK\r\n"),
                  expect_alone(r"CAPA", capa(plain)),
                  respond(listing_rules(UIDLS[:2], sizes), count=3, alone=0.3),
                  expect_alone(r"RETR 1", b"+OK\r\n" + wire(MSGS[0])),
                  expect_alone(r"RETR 2", b"+OK\r\n" + wire(MSGS[1])),
                  expect(r"QUIT", b"+OK\r\n")], cmd="fetch", maildir=md)
    harness.check_ok(r)
    srv.check_script()
    harness.eq(sorted(stored(md)), sorted(MSGS[:2]), "stored messages")


def test_probe_reports_what_the_server_said():
    pre = BASE_CAPA + ["SASL PLAIN", "IMPLEMENTATION Scripted-1"]
    post = ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "LOGIN-DELAY 900", "EXPIRE 30", "IMPLEMENTATION Scripted-1"]
    r, srv = run([send(GREETING), expect(r"CAPA", capa(pre)),
                  expect(r"AUTH PLAIN.*", None), call(_plain_exchange),
                  expect(r"CAPA", capa(post)), listing(["m-1", "m-2"], [123, 4567]),
                  expect(r"QUIT", b"+OK\r\n")], extra=["--auth", "plain"])
    j = harness.check_ok(r).json()
    srv.check_script()
    assert "scripted POP3 ready" in j["greeting"], j["greeting"]
    harness.eq(j["capabilities"], post, "capabilities after login")
    harness.eq(j["login_delay"], 900, "login_delay")
    harness.eq(j["expire"], 30, "expire")
    harness.eq(j["auth"], "plain", "auth")
    harness.eq(j["stat"], {"count": 2, "octets": 123 + 4567}, "stat")
    harness.eq(j["messages"], [{"number": 1, "uidl": "m-1", "size": 123}, {"number": 2, "uidl": "m-2", "size": 4567}],
               "messages")
    assert j["tls"]["verified"] is True and "localhost" in str(j["tls"]["peer"]), j["tls"]
    assert not any(re.match(r"(RETR|DELE|TOP|RSET)", c) for c in srv.commands), srv.commands
    harness.eq(srv.commands[-1], "QUIT", "last command")


def _plain_exchange(srv):
    """AUTH PLAIN with or without an initial response; checks the bytes."""
    first = srv.commands[-1]
    want = b64(b"\0" + USER.encode() + b"\0" + PW.encode())
    if first == "AUTH PLAIN":
        srv.write(b"+ \r\n")
        data = srv.read_line(10)
    else:
        data = first[len("AUTH PLAIN "):]
    assert data == want, "AUTH PLAIN data %r, expected %r" % (data, want)
    srv.write(b"+OK Logged in.\r\n")


def test_apop_digest():
    # RFC 1939's example: timestamp, user mrose, secret tanstaaf
    greeting = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"
    r, srv = run([send(greeting), expect(r"CAPA", capa(BASE_CAPA)),
                  expect(r"APOP mrose c4c9334bac560ecc979e58001b3e22fb", b"+OK maildrop has 0 messages\r\n"),
                  expect(r"CAPA", capa(BASE_CAPA)), listing([], []), expect(r"QUIT", b"+OK\r\n")],
                 extra=["--auth", "apop"], user="mrose", password="tanstaaf")
    harness.check_ok(r)
    srv.check_script()
    harness.eq(r.json()["auth"], "apop", "auth")
    # no timestamp in the greeting: APOP is impossible
    r, srv = run([send(GREETING), expect(r"CAPA", capa(BASE_CAPA))], extra=["--auth", "apop"])
    harness.check_failure(r, 5, r"^pop3bridge: Authentication: ")
    no_credentials(srv)


# ---- STLS ----------------------------------------------------------------------------------

def test_stls_upgrade_then_capa_again():
    pre = BASE_CAPA + ["STLS"]
    r, srv = run([send(GREETING), expect(r"CAPA", capa(pre)), expect_alone(r"STLS", b"+OK Begin TLS\r\n"),
                  starttls()] + login_user() + [listing([], []),
                                                                        expect(r"QUIT", b"+OK\r\n")],
                 tls=False)
    j = harness.check_ok(r).json()
    srv.check_script()
    assert j["tls"] and j["tls"]["verified"] is True, j["tls"]
    harness.eq(srv.commands[:3], ["CAPA", "STLS", "CAPA"], "commands around STLS")


def test_stls_not_offered_or_refused():
    r, srv = run([send(GREETING), expect(r"CAPA", capa(BASE_CAPA))], tls=False)
    harness.check_failure(r, (4, 6), r"^pop3bridge: (TLS|Protocol): .*(?i:stls|tls)")
    no_credentials(srv)
    r, srv = run([send(GREETING), expect(r"CAPA", capa(BASE_CAPA + ["STLS"])),
                  expect(r"STLS", b"-ERR TLS not available today\r\n")], tls=False)
    harness.check_failure(r, (4, 8), r"^pop3bridge: ")
    no_credentials(srv)


def test_bearer_tokens_need_tls():
    for mech in ("xoauth2", "oauthbearer"):
        r, srv = run([send(GREETING), expect(r"CAPA", capa(BASE_CAPA + ["SASL XOAUTH2 OAUTHBEARER"]))],
                     tls=False, extra=["--tls", "none", "--auth", mech, "--oauth2-token-file", token_file()])
        harness.check_failure(r, (2, 5), r"(?i)plain ?text|tls|unencrypted")
        no_credentials(srv)
        harness.check_no_secret(r, TOKEN)


# ---- bearer tokens ----------------------------------------------------------------------------

XOAUTH2 = b64(("user=%s\x01auth=Bearer %s\x01\x01" % (USER, TOKEN)).encode())
ERROR_JSON = b64(json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.example.com/"}).encode())


def test_xoauth2_two_step():
    pre = BASE_CAPA + ["SASL XOAUTH2"]
    r, srv = run([send(GREETING), expect(r"CAPA", capa(pre)), expect(r"AUTH XOAUTH2", b"+ \r\n"),
                  expect(re.escape(XOAUTH2), b"+OK Welcome.\r\n"), expect(r"CAPA", capa(BASE_CAPA)),
                  listing([], []), expect(r"QUIT", b"+OK\r\n")],
                 extra=["--auth", "xoauth2", "--oauth2-token-file", token_file()], password=None)
    j = harness.check_ok(r).json()
    srv.check_script()
    harness.eq(j["auth"], "xoauth2", "auth")
    assert bytes(srv.raw).startswith(b"CAPA\r\nAUTH XOAUTH2\r\n" + XOAUTH2.encode() + b"\r\nCAPA\r\n"), bytes(srv.raw)[:300]
    harness.check_no_secret(r, TOKEN, XOAUTH2)


def test_xoauth2_error_challenge():
    pre = BASE_CAPA + ["SASL XOAUTH2"]
    r, srv = run([send(GREETING), expect(r"CAPA", capa(pre)), expect(r"AUTH XOAUTH2", b"+ \r\n"),
                  expect(re.escape(XOAUTH2), b"+ " + ERROR_JSON.encode() + b"\r\n"),
                  expect(r"", b"-ERR [AUTH] Invalid credentials\r\n")],
                 extra=["--auth", "xoauth2", "--oauth2-token-file", token_file()], password=None)
    harness.check_failure(r, 5, r"^pop3bridge: Authentication: ")
    srv.check_script()
    only_quit_after(srv.commands, ["CAPA", "AUTH XOAUTH2", XOAUTH2, ""])
    assert bytes(srv.raw).startswith(b"CAPA\r\nAUTH XOAUTH2\r\n" + XOAUTH2.encode() + b"\r\n\r\n"), bytes(srv.raw)[:300]
    harness.check_no_secret(r, TOKEN, XOAUTH2)


def _oauthbearer_payload(port):
    def check(data):
        try:
            raw = base64.b64decode(data, validate=True).decode()
        except ValueError as exc:
            raise AssertionError("OAUTHBEARER data is not base64: %r (%s)" % (data, exc))
        gs2 = "n,a=%s," % USER
        assert raw.startswith(gs2 + "\x01") and raw.endswith("\x01\x01"), "OAUTHBEARER framing: %r" % raw
        pairs = raw[len(gs2) + 1:-2].split("\x01")
        kv = dict(p.split("=", 1) for p in pairs)
        assert len(kv) == len(pairs), "repeated keys: %r" % raw
        assert kv.get("auth") == "Bearer " + TOKEN, "auth pair: %r" % raw
        assert set(kv) <= {"auth", "host", "port"}, "unexpected pairs: %r" % raw
        assert kv.get("host", "127.0.0.1") == "127.0.0.1" and kv.get("port", str(port)) == str(port), raw
    return check


def _oauthbearer_server(error):
    def exchange(srv):
        first = srv.commands[-1]
        if first == "AUTH OAUTHBEARER":
            srv.write(b"+ \r\n")
            data = srv.read_line(10)
        else:
            data = first[len("AUTH OAUTHBEARER "):]
        _oauthbearer_payload(srv.port)(data)
        if not error:
            srv.write(b"+OK Welcome.\r\n")
            return
        srv.write(b"+ " + ERROR_JSON.encode() + b"\r\n")
        answer = srv.read_line(10)
        # RFC 7628 3.2.3: the client answers the error with a single %x01
        assert answer == b64(b"\x01"), "answer to the error challenge: %r" % answer
        srv.write(b"-ERR [AUTH] Invalid token\r\n")
    return exchange


def test_oauthbearer():
    pre = BASE_CAPA + ["SASL OAUTHBEARER"]
    r, srv = run([send(GREETING), expect(r"CAPA", capa(pre)), expect(r"AUTH OAUTHBEARER( \S+)?"),
                  call(_oauthbearer_server(False)), expect(r"CAPA", capa(BASE_CAPA)),
                  listing([], []), expect(r"QUIT", b"+OK\r\n")],
                 extra=["--auth", "oauthbearer", "--oauth2-token-file", token_file()], password=None)
    j = harness.check_ok(r).json()
    srv.check_script()
    harness.eq(j["auth"], "oauthbearer", "auth")
    harness.check_no_secret(r, TOKEN)
    # the error path
    r, srv = run([send(GREETING), expect(r"CAPA", capa(pre)), expect(r"AUTH OAUTHBEARER( \S+)?"),
                  call(_oauthbearer_server(True))],
                 extra=["--auth", "oauthbearer", "--oauth2-token-file", token_file()], password=None)
    harness.check_failure(r, 5, r"^pop3bridge: Authentication: ")
    srv.check_script()
    harness.check_no_secret(r, TOKEN)


def test_verbose_trace_masks_tokens_and_sasl_data():
    pre = BASE_CAPA + ["SASL XOAUTH2"]
    r, srv = run([send(GREETING), expect(r"CAPA", capa(pre)), expect(r"AUTH XOAUTH2", b"+ \r\n"),
                  expect(re.escape(XOAUTH2), b"+OK\r\n"), expect(r"CAPA", capa(BASE_CAPA)),
                  listing([], []), expect(r"QUIT", b"+OK\r\n")],
                 extra=["-v", "--auth", "xoauth2", "--oauth2-token-file", token_file()], password=None)
    harness.check_ok(r)
    assert "C: AUTH XOAUTH2" in r.stderr, r.stderr[:1000]
    harness.check_no_secret(r, TOKEN, XOAUTH2, XOAUTH2[:24])
    r, srv = run([send(GREETING)] + login_user() + [listing([], []), expect(r"QUIT", b"+OK\r\n")],
                 extra=["-v", "--auth", "user"])
    harness.check_ok(r)
    assert "C: PASS ********" in r.stderr.splitlines(), r.stderr[:1000]
    harness.check_no_secret(r, PW)


def test_commands_in_order_for_many_messages():
    # 40 messages: the RETR window and reply matching across many replies
    msgs = [b"Subject: m%d\n\nbody %d\n.\n" % (i, i) for i in range(40)]
    uidls = ["id-%03d" % i for i in range(40)]
    md = new_maildir()
    r, srv = run([send(GREETING)] + login_user() + [
        listing(uidls, [pop3_size(m) for m in msgs]),
        respond([(r"RETR %d" % (i + 1), b"+OK\r\n" + wire(m)) for i, m in enumerate(msgs)], count=40),
        expect(r"QUIT", b"+OK\r\n")], cmd="fetch", maildir=md)
    harness.check_ok(r)
    srv.check_script()
    _check_listing_then(srv.commands, ["RETR %d" % (i + 1) for i in range(40)] + ["QUIT"], "40 messages")
    harness.eq(sorted(stored(md)), sorted(msgs), "stored messages")

