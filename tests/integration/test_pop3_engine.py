"""The POP3 engine's session semantics against a real Dovecot, step by step
through build/tools/pop3-session: DELE only marks, QUIT commits, a session
that ends without QUIT deletes nothing, RSET unmarks, TOP n k, single LIST
and UIDL, -ERR for one message leaves the session usable.  What the engine
reports is compared with the Maildir files Dovecot holds.
"""

import hashlib
import os
import subprocess

import dovecot
import harness
import mailgen

dc = None
_n = [0]


def setup_module():
    global dc
    dc = dovecot.Dovecot(name="engine").start()


def teardown_module():
    if dc:
        dc.stop()


def new_user(count):
    _n[0] += 1
    user = "e%02d" % _n[0]
    password = "Pw-%s" % hashlib.sha256(os.urandom(8)).hexdigest()[:12]
    dc.add_user(user, password)
    msgs = mailgen.mailbox(seed=100 + _n[0], count=count, min_size=1500, max_size=9000)
    for m in msgs:
        dc.deliver(user, m, "cur")
    return user, password


def session(user, password, *steps, tls="implicit", extra=()):
    exe = harness.tool("pop3-session")
    port = dc.tls_port if tls == "implicit" else dc.port
    args = [exe, "--ca-file", dc.pki.ca, "--tls", tls] + list(extra) + ["127.0.0.1", str(port), user]
    args += list(steps)
    env = dict(os.environ, POP3BRIDGE_PASSWORD=password)
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    lines = p.stdout.splitlines()
    if p.returncode not in (0, 1) or (p.returncode == 1 and " error " not in p.stdout):
        raise AssertionError("pop3-session failed (%d): %s %s" % (p.returncode, p.stdout, p.stderr))
    return lines


def count_files(user):
    return len(dc.messages(user))


def lf_sha(data):
    return hashlib.sha256(data).hexdigest()


def by_step(lines):
    out = {}
    for line in lines:
        parts = line.split(" ")
        out.setdefault(parts[0], []).append(parts)
    return out


@harness.timeout(60)
def test_dele_then_quit_deletes():
    user, pw = new_user(5)
    before = dc.messages(user)
    lines = session(user, pw, "stat", "dele 2", "dele 4", "stat", "quit")
    steps = by_step(lines)
    harness.eq(steps["stat"][0][1:2], ["5"], "stat before")
    harness.eq(steps["stat"][1][1:2], ["3"], "stat after DELE (marked messages are not counted)")
    after = dc.messages(user)
    harness.eq(len(after), 3, "files left after QUIT")
    gone = {m.base for m in before} - {m.base for m in after}
    harness.eq(gone, {before[1].base, before[3].base}, "the deleted files are messages 2 and 4")


@harness.timeout(60)
def test_dele_then_abort_deletes_nothing():
    user, pw = new_user(4)
    session(user, pw, "dele 1", "dele 2", "dele 3", "abort")
    harness.eq(count_files(user), 4, "files after DELE without QUIT")


@harness.timeout(60)
def test_rset_undoes_dele():
    user, pw = new_user(4)
    lines = session(user, pw, "dele 1", "dele 3", "rset", "stat", "quit")
    harness.eq(by_step(lines)["stat"][0][1], "4", "stat after RSET")
    harness.eq(count_files(user), 4, "files after DELE, RSET, QUIT")


@harness.timeout(60)
def test_marked_message_is_refused_then_session_goes_on():
    user, pw = new_user(3)
    # RETR of a marked message: the server says -ERR (pop3-session stops there)
    lines = session(user, pw, "dele 1", "retr 1", "quit")
    harness.eq(lines[-1].split(" ")[:4], ["retr", "1", "error", "server"],
               "RETR of a marked message")
    lines = session(user, pw, "dele 1", "dele 1", "noop", "retr 2", "rset", "quit")
    steps = by_step(lines)
    harness.eq(steps["dele"][1][2], "refused", "second DELE of the same message")
    harness.eq(steps["noop"][0][1], "ok", "session usable after a refused DELE")
    harness.eq(count_files(user), 3, "nothing deleted (RSET before QUIT)")


@harness.timeout(60)
def test_retr_and_top_match_the_maildir():
    user, pw = new_user(3)
    msgs = dc.messages(user)
    lines = session(user, pw, "retr 1", "retr 3", "top 2 0", "top 2 4", "quit")
    steps = by_step(lines)
    retr = {int(p[1]): p for p in steps["retr"]}
    for n in (1, 3):
        data = msgs[n - 1].data
        harness.eq(int(retr[n][2]), len(data), "RETR %d octets (LF)" % n)
        harness.eq(retr[n][3], lf_sha(data), "RETR %d bytes identical to the file" % n)
    header, _, body = msgs[1].data.partition(b"\n\n")
    tops = {p[2]: p for p in steps["top"]}
    want0 = header + b"\n\n"
    harness.eq(tops["0"][4], lf_sha(want0), "TOP 2 0 is the header and the blank line")
    body_lines = body.split(b"\n")
    want4 = want0 + b"".join(l + b"\n" for l in body_lines[:4]) if len(body_lines) > 4 else msgs[1].data
    harness.eq(tops["4"][4], lf_sha(want4), "TOP 2 4 is the header and 4 body lines")


@harness.timeout(60)
def test_single_list_and_uidl_agree_with_the_listing():
    user, pw = new_user(3)
    session(user, pw, "stat", "quit")  # let Dovecot assign UIDs
    expected = dc.expected_listing(user)
    lines = session(user, pw, "list", "uidl 2", "listone 3", "quit")
    steps = by_step(lines)
    listed = steps["list"][0][2:]
    harness.eq(listed, ["%d:%s:%d" % e for e in expected], "pipelined STAT/UIDL/LIST")
    harness.eq(steps["uidl"][0][2], expected[1][1], "UIDL 2")
    harness.eq(int(steps["listone"][0][2]), expected[2][2], "LIST 3")


@harness.timeout(60)
def test_out_of_range_number_is_a_server_error():
    user, pw = new_user(2)
    lines = session(user, pw, "noop", "retr 9")
    last = lines[-1].split(" ")
    harness.eq(last[:3], ["retr", "9", "error"], "RETR 9 on a 2-message mailbox")
    harness.eq(last[3], "server", "error kind")
    harness.eq(count_files(user), 2, "files untouched")


@harness.timeout(60)
def test_stls_session_semantics():
    user, pw = new_user(3)
    session(user, pw, "dele 3", "quit", tls="starttls")
    harness.eq(count_files(user), 2, "DELE + QUIT over STLS")
