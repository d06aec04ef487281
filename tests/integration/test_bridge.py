"""The bridge end to end: `pop3bridge run` against a real Dovecot (implicit
TLS, generated PKI) and the real webhook receiver (build/tools/webhook-receiver).

One Dovecot serves the module; every test has its own mailbox user, state
directory, receiver (own port) and API port.  What each event must contain
is computed here, independently, from the generated message bytes with
Python's email package; signatures are checked with hmac/hashlib.
"""

import base64
import email
import email.policy
import email.utils
import hashlib
import json
import os
import re
import secrets
import signal
import time

import harness
import dovecot
import mailgen
import bridge
from bridge import Bridge, Receiver

TIMEOUT = 90
DC = None
ACCOUNT = "acct"
HOOK = "hook"



def signed_link(url, where):
    """A signed link (?exp=<unix s>&sig=<64 hex>, valid for links_ttl) without its query."""
    base, _, q = url.partition("?")
    if not re.fullmatch(r"exp=\d+&sig=[0-9a-f]{64}", q):
        raise AssertionError("%s: %r is not a signed link" % (where, url))
    return base

def setup_module():
    global DC
    DC = dovecot.Dovecot(name="dovecot-bridge").start()


def teardown_module():
    if DC:
        DC.stop()


# ---- test setup -----------------------------------------------------------------

class Case:
    """A mailbox user, a receiver, and a bridge configured for them."""

    def __init__(self, user, receiver_args=(), start_receiver=True, receiver_port=0, **account):
        self.user = user
        self.password = secrets.token_urlsafe(12)
        DC.add_user(user, self.password)
        self.secret = bridge.new_secret()
        self.token = secrets.token_urlsafe(18)
        self.api_port = dovecot.free_port()
        if not start_receiver and not receiver_port:
            receiver_port = dovecot.free_port()
        self.rcv = Receiver(self.secret, port=receiver_port, args=receiver_args)
        if start_receiver:
            self.rcv.start()
        acct = {"name": ACCOUNT, "host": "127.0.0.1", "port": DC.tls_port, "tls": "implicit",
                "ca_file": DC.pki.ca, "username": user, "password_env": "T_POP3_PW",
                "start": "all", "poll_interval": "1h", "webhooks": [HOOK]}
        acct.update(account)
        self.cfg = {
            "log_level": "debug",
            "api": {"listen": "127.0.0.1:%d" % self.api_port,
                    "tokens": [{"name": "t", "token_env": "T_API_TOKEN"}]},
            "webhooks": [self.webhook(HOOK, self.rcv.url, "T_WHSEC")],
            "accounts": [acct],
        }
        self.bridge = Bridge(self.cfg, {"T_POP3_PW": self.password, "T_WHSEC": self.secret,
                                        "T_API_TOKEN": self.token})

    @staticmethod
    def webhook(name, url, secret_env, retry=("1s", "1s", "1s", "1s", "1s")):
        return {"name": name, "url": url, "secret_env": secret_env, "retry_schedule": list(retry)}

    @property
    def public_url(self):
        return "http://127.0.0.1:%d" % self.api_port

    def deliver(self, *datas):
        return [DC.deliver(self.user, d) for d in datas]

    def on_server(self):
        """Raw bytes of the messages Dovecot holds for the user (Maildir)."""
        return [m.data for m in DC.messages(self.user)]

    def listing(self):
        """{raw bytes: uidl} as Dovecot's POP3 shows them (after a session)."""
        msgs = DC.messages(self.user)
        return {m.data: uidl for m, (_, uidl, _) in zip(msgs, DC.expected_listing(self.user))}

    def once(self, expect=0):
        r = self.bridge.run_once()
        if r.code != expect:
            raise AssertionError("run --once: expected exit %d: %s" % (expect, r.describe()))
        return r


def pop3_bytes(data):
    """A Maildir message as POP3 transfers it: LF line ends become CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def by_uidl(events):
    out = {}
    for ev in events:
        out.setdefault(ev.message["uidl"], []).append(ev)
    return out


# ---- what an event must say, computed from the message bytes ------------------------

def _addr(a):
    return {"name": a.display_name or None, "address": a.addr_spec}


def _addrs(msg, name):
    h = msg[name]
    return [_addr(a) for a in h.addresses] if h is not None else []


def _ids(value):
    return re.findall(r"<([^>]*)>", value or "")


def _unfold(value):
    return re.sub(r"\r?\n", "", value).strip()


def expected_message(data):
    """The fields of data.message for Maildir bytes `data`, by Python's email."""
    raw = pop3_bytes(data)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    exp = {
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "subject": str(msg["subject"]) if msg["subject"] is not None else None,
        "message_id": (_ids(msg["message-id"]) or [None])[0],
        "in_reply_to": (_ids(msg["in-reply-to"]) or [None])[0],
        "references": _ids(msg["references"]),
        "from": _addrs(msg, "from")[0] if msg["from"] is not None else None,
        "to": _addrs(msg, "to"),
        "cc": _addrs(msg, "cc"),
        "reply_to": _addrs(msg, "reply-to"),
        "date": email.utils.parsedate_to_datetime(msg["date"]).astimezone(
            __import__("datetime").timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if msg["date"] else None,
        "header_names": [k for k, _ in msg.raw_items()],
        "plain_headers": {},
        "text": None, "html": None, "attachments": [],
    }
    for k, v in email.message_from_bytes(data, policy=email.policy.compat32).items():
        if "=?" not in v and k not in exp["plain_headers"]:
            exp["plain_headers"][k] = _unfold(v)

    def leaves(part, number):
        if part.is_multipart():
            for i, sub in enumerate(part.iter_parts()):
                yield from leaves(sub, (number + "." if number else "") + str(i + 1))
        else:
            yield number or "1", part

    for number, part in leaves(msg, ""):
        ctype = part.get_content_type()
        is_att = part.get_filename() is not None or part.get_content_disposition() == "attachment"
        if ctype == "text/plain" and not is_att and exp["text"] is None:
            exp["text"] = part.get_content()
        elif ctype == "text/html" and not is_att and exp["html"] is None:
            exp["html"] = part.get_content()
        else:
            body = part.get_payload(decode=True)
            exp["attachments"].append({
                "id": number, "filename": part.get_filename(), "content_type": ctype,
                "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                "disposition": part.get_content_disposition() or "inline"})
    return exp


def check_event(ev, data, case, uidl, webhook=HOOK, inline_max=256 * 1024):
    """Every field of one event against the message it carries."""
    where = "event %d (uidl %s)" % (ev.n, uidl)
    bridge.verify_signature(ev, case.secret)
    harness.eq(ev.id, case.bridge.webhook_id(ACCOUNT, uidl, webhook), where + " webhook-id")
    harness.eq(ev.headers.get("content-type"), "application/json", where + " Content-Type")
    if not ev.headers.get("user-agent", "").startswith("pop3bridge/"):
        raise AssertionError("%s User-Agent %r" % (where, ev.headers.get("user-agent")))
    harness.eq(ev.json["type"], "message.received", where + " type")
    harness.eq(ev.json["data"]["account"], ACCOUNT, where + " account")
    m = ev.message
    exp = expected_message(data)
    harness.eq(m["uidl"], uidl, where + " uidl")
    for k in ("size", "sha256", "subject", "message_id", "in_reply_to", "references", "from", "to",
              "cc", "reply_to", "date"):
        harness.eq(m[k], exp[k], "%s %s" % (where, k))
    harness.eq([h["name"] for h in m["headers"]], exp["header_names"], where + " header names")
    for h in m["headers"]:
        if h["name"] in exp["plain_headers"]:
            harness.eq(h["value"], exp["plain_headers"].pop(h["name"]), where + " header " + h["name"])
    for k in ("text", "html"):
        got = m[k].replace("\r\n", "\n") if m[k] is not None else None
        harness.eq(got, exp[k], "%s %s" % (where, k))
    harness.eq(len(m["attachments"]), len(exp["attachments"]), where + " attachment count")
    for a, x in zip(m["attachments"], exp["attachments"]):
        for k in ("id", "filename", "content_type", "size", "sha256", "disposition"):
            harness.eq(a[k], x[k], "%s attachment %s %s" % (where, x["id"], k))
        if x["size"] <= inline_max:
            content = base64.b64decode(a["content"], validate=True)
            harness.eq(hashlib.sha256(content).hexdigest(), x["sha256"], where + " inline content")
            if "url" in a and a["url"] is not None:
                raise AssertionError("%s: inlined attachment also has a url" % where)
        else:
            harness.eq(a.get("content"), None, where + " content of a large attachment")
            harness.eq(signed_link(a["url"], where), "%s/api/v1/messages/%s/attachments/%s" % (
                case.public_url, m["id"], x["id"]), where + " attachment url")
    harness.eq(signed_link(m["raw_url"], where), "%s/api/v1/messages/%s/raw" % (case.public_url, m["id"]),
               where + " raw_url")
    harness.eq(m["parse_errors"], [], where + " parse_errors")
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", m["received_at"] or ""):
        raise AssertionError("%s received_at %r is not RFC 3339 UTC" % (where, m["received_at"]))


RFC2047_MESSAGE = (
    "From: =?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>\n"
    "To: \"Keld J\\\"rn\" <keld@dkuug.dk>, nobody@example.org\n"
    "Cc: =?UTF-8?B?w5xiZXI=?= Gruppe <ueber@example.com>\n"
    "Reply-To: replies@example.com\n"
    "Subject: =?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\n"
    "  =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=\n"
    "Date: Tue, 2 Jan 2024 23:30:00 -0130\n"
    "Message-ID: <rfc2047.1@example.org>\n"
    "In-Reply-To: <parent.1@example.org>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
    "\n"
    "--outer\n"
    "Content-Type: text/plain; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Caf=E9 cr=E8me, na=EFve fa=E7ade.\n"
    ".a line with a leading dot\n"
    "--outer\n"
    "Content-Type: image/png\n"
    "Content-Transfer-Encoding: base64\n"
    "Content-ID: <logo@example.org>\n"
    "Content-Disposition: inline; filename=\"=?UTF-8?Q?l=C3=B6go.png?=\"\n"
    "\n"
    + base64.encodebytes(bytes(range(256)) * 3).decode() +
    "--outer--\n").encode("latin-1")


# ---- the tests ----------------------------------------------------------------------

@harness.timeout(120)
def test_events_match_messages():
    """N messages of every kind -> N verified events whose fields match."""
    c = Case("fields")
    datas = mailgen.mailbox(31, 11, 1500, 60000) + [RFC2047_MESSAGE]
    c.deliver(*datas)
    c.once()
    listing = c.listing()
    events = c.rcv.wait_events(len(datas), 30)
    harness.eq(len(events), len(datas), "events")
    got = by_uidl(events)
    harness.eq(sorted(got), sorted(listing.values()), "uidls of the events")
    for data, uidl in listing.items():
        harness.eq(len(got[uidl]), 1, "events for uidl " + uidl)
        check_event(got[uidl][0], data, c, uidl)
    # the RFC 2047 example, spelled out
    m = got[listing[RFC2047_MESSAGE]][0].message
    harness.eq(m["subject"], "If you can read this you understand the example.", "RFC 2047 subject")
    harness.eq(m["from"], {"name": "André Pirard", "address": "PIRARD@vm1.ulg.ac.be"}, "from")
    harness.eq(m["cc"], [{"name": "Über Gruppe", "address": "ueber@example.com"}], "cc")
    harness.eq(m["text"].replace("\r\n", "\n"), "Café crème, naïve façade.\n.a line with a leading dot",
               "latin-1 text")
    harness.eq(m["date"], "2024-01-03T01:00:00Z", "date in UTC")
    att = m["attachments"][0]
    harness.eq((att["filename"], att["content_id"], att["disposition"], att["size"]),
               ("lögo.png", "logo@example.org", "inline", 768), "inline image")
    # ids are distinct per message
    harness.eq(len({e.id for e in events}), len(datas), "distinct webhook-ids")
    # a second run finds nothing new: no duplicate events
    c.once()
    time.sleep(0.5)
    harness.eq(len(c.rcv.events()), len(datas), "events after a second --once")
    rows = c.bridge.query("SELECT status, attempts FROM deliveries")
    harness.eq(sorted(set(rows)), [(1, 1)], "every delivery delivered at the first attempt")


@harness.timeout(90)
def test_receiver_fails_then_accepts():
    """The receiver fails K times (503): retried, then delivered, same id."""
    k = 3
    c = Case("retries", receiver_args=["--fail", k, "--fail-status", 503])
    datas = [mailgen.message(s, 3000) for s in (101, 102)]
    c.deliver(*datas)
    c.once()
    listing = c.listing()
    events = c.rcv.wait_events(2, 30)
    harness.eq(len(events), 2, "events")
    got = by_uidl(events)
    for data, uidl in listing.items():
        check_event(got[uidl][0], data, c, uidl)
    failed_ids = re.findall(r"failing on purpose with 503 .*\(webhook-id (\S+)\)", c.rcv.log())
    harness.eq(len(failed_ids), k, "requests failed on purpose")
    ok_ids = {e.id for e in events}
    if not set(failed_ids) <= ok_ids:
        raise AssertionError("failed attempts carried ids %s, delivered ones %s" % (failed_ids, ok_ids))
    rows = c.bridge.query("SELECT d.id, d.status, d.attempts, d.last_http_status FROM deliveries d")
    harness.eq(sum(r[2] for r in rows), k + 2, "attempts recorded in all")
    harness.eq({(r[1], r[3]) for r in rows}, {(1, 200)}, "final status and HTTP status")
    statuses = [r[0] for r in c.bridge.query("SELECT http_status FROM attempts ORDER BY id")]
    harness.eq(sorted(statuses), sorted([503] * k + [200, 200]), "HTTP status of every attempt")


@harness.timeout(90)
def test_receiver_down_during_poll():
    """Receiver down while the bridge polls: stored, delivered once it is up."""
    c = Case("down", start_receiver=False)
    datas = [mailgen.message(s, 4000) for s in (201, 202, 203)]
    c.deliver(*datas)
    b = c.bridge.start()
    b.wait_log(r"event=poll_done account=acct listed=3 fetched=3", 20)
    b.wait_log(r"event=delivery_retry", 20, count=3)
    harness.eq(c.bridge.query("SELECT count(*) FROM messages")[0][0], 3, "messages stored")
    rows = c.bridge.query("SELECT status, attempts, last_http_status FROM deliveries")
    if any(r[0] != 2 or r[1] < 1 or r[2] != 0 for r in rows) or len(rows) != 3:
        raise AssertionError("deliveries while the receiver is down: %r" % rows)
    harness.eq(len(c.on_server()), 3, "messages still on the server")
    c.rcv.start()                       # the same port, now answering
    events = c.rcv.wait_events(3, 20)
    harness.eq(b.stop(), 0, "exit code after SIGTERM")
    listing = c.listing()
    got = by_uidl(events)
    for data, uidl in listing.items():
        harness.eq(len(got.get(uidl, [])), 1, "events for " + uidl)
        check_event(got[uidl][0], data, c, uidl)
    harness.eq(sorted(set(c.bridge.query("SELECT status FROM deliveries"))), [(1,)], "all delivered")
    if "event=stopping signal=TERM" not in b.log() or "event=stopped" not in b.log():
        raise AssertionError("no clean stop in the log: %s" % b.log()[-1500:])


@harness.timeout(150)
def test_kill9_during_delivery_then_restart():
    """kill -9 while deliveries are in flight; restart: all delivered, same ids,
    nothing deleted from Dovecot before its delivery."""
    n = 8
    c = Case("kill9", receiver_args=["--delay-ms", 1500], after_delivery="delete",
             poll_interval="1s")
    datas = [mailgen.message(300 + s, 5000) for s in range(n)]
    c.deliver(*datas)
    b = c.bridge.start()
    b.wait_log(r"event=poll_done account=acct listed=%d fetched=%d" % (n, n), 20)
    time.sleep(0.7)                     # requests are now waiting in the receiver
    b.kill9()
    undelivered = c.bridge.query("SELECT count(*) FROM deliveries WHERE status <> 1")[0][0]
    if undelivered == 0:
        raise AssertionError("the kill came after every delivery was recorded: it tests nothing")
    listing_before = {pop3_bytes(d) for d in c.on_server()}
    # whatever left the server had been received
    received = {e.message["sha256"] for e in c.rcv.events()}
    for d in datas:
        if pop3_bytes(d) not in listing_before and hashlib.sha256(pop3_bytes(d)).hexdigest() not in received:
            raise AssertionError("a message was deleted from the server before its delivery")
    harness.eq(len(c.on_server()), n, "messages on the server right after the kill")
    time.sleep(2)                       # the receiver finishes what it had
    b.start()
    want = {hashlib.sha256(pop3_bytes(d)).hexdigest() for d in datas}
    harness.wait_for(lambda: want <= {e.message["sha256"] for e in c.rcv.events()}, 60, interval=0.2,
                     what="every message delivered after the restart")
    # delete after delivery: the next polls empty the mailbox
    harness.wait_for(lambda: not c.on_server(), 30, interval=0.2, what="the mailbox emptied after delivery")
    harness.eq(b.stop(), 0, "exit code after SIGTERM")
    events = c.rcv.events()
    for uidl, evs in by_uidl(events).items():
        ids = {e.id for e in evs}
        harness.eq(ids, {c.bridge.webhook_id(ACCOUNT, uidl, HOOK)}, "ids of the events for " + uidl)
        for e in evs:
            bridge.verify_signature(e, c.secret)
    harness.eq(len(by_uidl(events)), n, "distinct messages delivered")
    harness.eq(sorted(set(c.bridge.query("SELECT status FROM deliveries"))), [(1,)], "all delivered")
    harness.eq(c.bridge.query("SELECT count(*) FROM uidls WHERE state = 1")[0][0], 0, "UIDLs left pending")


@harness.timeout(60)
def test_after_delivery_keep():
    c = Case("keep", after_delivery="keep")
    datas = [mailgen.message(s, 2000) for s in (401, 402)]
    c.deliver(*datas)
    c.once()
    c.rcv.wait_events(2, 10)
    c.once()
    harness.eq(sorted(c.on_server()), sorted(datas), "messages kept on the server")
    harness.eq(len(c.rcv.events()), 2, "events after two runs")


@harness.timeout(60)
def test_after_delivery_delete():
    c = Case("delete", after_delivery="delete")
    datas = [mailgen.message(s, 2000) for s in (411, 412, 413)]
    c.deliver(*datas)
    c.once()
    c.rcv.wait_events(3, 10)
    # deletion happens in a later session, after delivery: still there now
    harness.eq(sorted(c.on_server()), sorted(datas), "messages on the server after the first run")
    mark = DC.log_mark()
    c.once()
    harness.eq(c.on_server(), [], "messages on the server (Maildir) after the second run")
    DC.wait_log(r"del=3/3", mark)
    harness.eq(len(c.rcv.events()), 3, "events after two runs")
    rows = c.bridge.query("SELECT state FROM uidls")
    if any(r[0] != 3 for r in rows):   # deleted, or forgotten once no longer listed
        raise AssertionError("UIDL states after deletion: %r" % rows)


@harness.timeout(60)
def test_after_delivery_delete_refuses_undelivered():
    """after_delivery delete with a receiver that keeps failing: nothing is deleted."""
    c = Case("delete_failing", receiver_args=["--fail", 1000], after_delivery="delete")
    c.cfg["webhooks"][0]["retry_schedule"] = ["1s"]
    c.bridge.write_config(c.cfg)
    datas = [mailgen.message(s, 2000) for s in (421, 422)]
    c.deliver(*datas)
    c.once()
    c.once()
    harness.eq(sorted(c.on_server()), sorted(datas), "undelivered messages on the server")
    rows = c.bridge.query("SELECT status FROM deliveries")
    harness.eq(sorted(rows), [(3,), (3,)], "deliveries dead after the last retry")


@harness.timeout(120)
def test_delete_after():
    """keep + delete_after 1m: delivered messages older than that are deleted,
    younger ones stay."""
    c = Case("delete_after", after_delivery="keep", delete_after="1m")
    old = [mailgen.message(s, 2000) for s in (431, 432)]
    c.deliver(*old)
    c.once()
    c.rcv.wait_events(2, 10)
    stored = time.time()
    c.once()
    harness.eq(sorted(c.on_server()), sorted(old), "messages on the server before delete_after")
    new = mailgen.message(433, 2000)
    c.deliver(new)
    time.sleep(max(0, stored + 61 - time.time()))
    c.once()
    c.rcv.wait_events(3, 10)
    harness.eq(c.on_server(), [new], "messages on the server after delete_after")


@harness.timeout(60)
def test_start_new():
    """start: new -- what is in the mailbox at the first poll is not delivered."""
    c = Case("start_new", start="new")
    c.deliver(*[mailgen.message(s, 2000) for s in (501, 502, 503)])
    r = c.once()
    if "ignored=3" not in r.stderr:
        raise AssertionError("first poll did not record 3 ignored: %s" % r.describe())
    time.sleep(0.5)
    harness.eq(len(c.rcv.events()), 0, "events after the first poll")
    new = [mailgen.message(s, 2000) for s in (504, 505)]
    c.deliver(*new)
    c.once()
    events = c.rcv.wait_events(2, 10)
    harness.eq(len(events), 2, "events")
    listing = c.listing()
    for d in new:
        check_event(by_uidl(events)[listing[d]][0], d, c, listing[d])


@harness.timeout(60)
def test_too_large():
    """Over max_message_size: not retrieved; a message.too_large event with its
    headers and its real size."""
    c = Case("too_large", max_message_size="16KiB")
    small = mailgen.message(601, 3000)
    big = mailgen.message(602, 60000, "mixed")
    c.deliver(small, big)
    mark = DC.log_mark()
    c.once()
    events = c.rcv.wait_events(2, 10)
    listing = c.listing()
    ev_big = by_uidl(events)[listing[big]][0]
    check_event(by_uidl(events)[listing[small]][0], small, c, listing[small])
    bridge.verify_signature(ev_big, c.secret)
    harness.eq(ev_big.id, c.bridge.webhook_id(ACCOUNT, listing[big], HOOK), "webhook-id")
    harness.eq(ev_big.json["type"], "message.too_large", "type")
    m = ev_big.message
    exp = expected_message(big)
    harness.eq(m["size"], len(pop3_bytes(big)), "the real size")
    harness.eq(m.get("too_large"), True, "too_large flag")
    harness.eq(m["sha256"], None, "sha256 of a message not retrieved")
    harness.eq(m["raw_url"], None, "raw_url of a message not retrieved")
    for k in ("subject", "from", "to", "message_id", "date"):
        harness.eq(m[k], exp[k], "too_large " + k)
    harness.eq([h["name"] for h in m["headers"]], exp["header_names"], "header names")
    # Dovecot's logout line: one TOP, one RETR (the small one)
    line = DC.wait_log(r"top=(\d+)/\d+, retr=(\d+)/(\d+)", mark)
    harness.eq((line.group(1), line.group(2)), ("1", "1"), "TOP and RETR counts")
    if int(line.group(3)) >= len(big):
        raise AssertionError("the large message was retrieved: %s" % line.group(0))


@harness.timeout(60)
def test_malformed_mime():
    """A malformed message still gives an event, with parse_errors."""
    c = Case("malformed")
    bad = (b"From: Broken <broken@example.org>\nSubject: broken boundary\n"
           b"Date: not a date at all\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=\"never-appears\"\n\n"
           b"Some text without the boundary.\n"
           b"--other\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
           b"!!!not base64 at all@@@\n")
    c.deliver(bad)
    c.once()
    ev = c.rcv.wait_events(1, 10)[0]
    bridge.verify_signature(ev, c.secret)
    m = ev.message
    harness.eq(ev.json["type"], "message.received", "type")
    harness.eq(m["subject"], "broken boundary", "subject")
    harness.eq(m["from"], {"name": "Broken", "address": "broken@example.org"}, "from")
    harness.eq(m["date"], None, "date")
    harness.eq(m["sha256"], hashlib.sha256(pop3_bytes(bad)).hexdigest(), "sha256")
    if not m["parse_errors"] or not all(isinstance(p, str) and p for p in m["parse_errors"]):
        raise AssertionError("parse_errors: %r" % m["parse_errors"])
    if "Some text without the boundary." not in (m["text"] or ""):
        raise AssertionError("text of the broken multipart: %r" % m["text"])


def _data(*parts):
    with open(os.path.join(harness.ROOT, "tests", "data", *parts), "rb") as f:
        return f.read()


def test_event_reads_replies_bounces_lists():
    """The fields read out of a message reach the receiver: text_reply,
    authentication, bounce, list, spam, auto_reply."""
    c = Case("readouts", address="readouts@example.com",
             trusted_authserv_ids=["mx1.example.com"])
    reply = _data("replies", "en-gmail-inline.eml")
    outlook = _data("replies", "de-outlook-desktop.eml")
    dsn = _data("bounces", "postfix-dsn.eml")
    news = (b"From: Shop <news@shop.example>\nTo: readouts+deals@example.com\nSubject: Deals\n"
            b"Date: Mon, 4 Mar 2024 10:00:00 +0000\nMessage-ID: <news-1@shop.example>\n"
            b"X-Spam-Status: No, score=1.2 required=5.0 tests=HTML_MESSAGE,MIME_QP_LONG_LINE\n"
            b"Precedence: bulk\nList-Id: Shop news <news.shop.example>\n"
            b"List-Unsubscribe: <mailto:leave@shop.example>, <https://shop.example/u/1>\n"
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n\nBuy now.\n")
    datas = [reply, outlook, dsn, news]
    c.deliver(*datas)
    c.once()
    listing = c.listing()
    got = by_uidl(c.rcv.wait_events(len(datas), 30))
    m = {d: got[listing[d]][0].message for d in datas}
    types = {d: got[listing[d]][0].json["type"] for d in datas}
    harness.eq(types[dsn], "message.bounce", "type of the bounce's event")
    for d in (reply, outlook, news):
        harness.eq(types[d], "message.received", "type of an ordinary message's event")
    for d in (reply, outlook, dsn):
        harness.eq(m[d]["mailbox_hash"], None, "mailbox_hash without a +tag")
    harness.eq(m[news]["mailbox_hash"], "deals", "mailbox_hash of readouts+deals@")
    for d, name in ((reply, "en-gmail-inline"), (outlook, "de-outlook-desktop")):
        want = _data("replies", name + ".expected").decode().strip()
        harness.eq(m[d]["text_reply"], want, name + " text_reply")
    auth = m[reply]["authentication"]
    harness.eq((auth["authserv_id"], auth["spf"], auth["dmarc"]), ("mx1.example.com", "pass", "pass"),
               "authentication of the reply")
    harness.eq(m[dsn]["bounce"], {"recipient": "nobody@customer.example", "action": "failed", "status": "5.1.1",
                                  "diagnostic": "550 5.1.1 <nobody@customer.example>: Recipient address rejected: "
                                                "User unknown in virtual mailbox table",
                                  "reporting_mta": "mx1.example.org",
                                  "original_message_id": "8f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b@example.org"},
               "bounce")
    harness.eq(m[dsn]["auto_reply"], "auto-replied", "auto_reply of the bounce")
    harness.eq(m[news]["list"], {"id": "news.shop.example",
                                 "unsubscribe": ["mailto:leave@shop.example", "https://shop.example/u/1"],
                                 "unsubscribe_post": "List-Unsubscribe=One-Click"}, "list")
    harness.eq(m[news]["spam"], {"score": 1.2, "flag": False, "tests": ["HTML_MESSAGE", "MIME_QP_LONG_LINE"]},
               "spam")
    harness.eq(m[news]["auto_reply"], "auto-generated", "auto_reply of a bulk message")
    for d in (reply, outlook, news):
        harness.eq(m[d]["bounce"], None, "bounce of a message that is not one")
    harness.eq(m[reply]["list"], None, "list of a reply")


@harness.timeout(240)
def test_25mb_message():
    """A 25 MB message: delivered, its attachment as a url."""
    c = Case("big", timeout="120s")
    c.cfg["webhooks"][0]["timeout"] = "120s"
    c.bridge.write_config(c.cfg)
    data = mailgen.message(700, 25 * 1000 * 1000, "mixed")
    if not 24e6 < len(pop3_bytes(data)) <= 25 * 1024 * 1024:
        raise AssertionError("generated %d bytes" % len(pop3_bytes(data)))
    c.deliver(data)
    c.once()
    ev = c.rcv.wait_events(1, 30)[0]
    uidl = c.listing()[data]
    check_event(ev, data, c, uidl)
    att = ev.message["attachments"]
    harness.eq(len(att), 1, "attachments")
    if att[0]["size"] < 18e6 or "url" not in att[0]:
        raise AssertionError("attachment: %r" % {k: v for k, v in att[0].items() if k != "content"})
    if len(ev.body) > 2 * 1024 * 1024:
        raise AssertionError("event body is %d bytes: the attachment travelled inline?" % len(ev.body))


@harness.timeout(90)
def test_sighup_adds_webhook():
    """SIGHUP reload: a webhook added to the file gets the mail that arrives after."""
    c = Case("reload", poll_interval="1s")
    secret2 = bridge.new_secret()
    rcv2 = Receiver(secret2, name="receiver2").start()
    c.bridge.secrets["T_WHSEC2"] = secret2     # in the environment from the start
    first = mailgen.message(801, 2000)
    c.deliver(first)
    b = c.bridge.start()
    c.rcv.wait_events(1, 20)
    c.cfg["webhooks"].append(Case.webhook("second", rcv2.url, "T_WHSEC2"))
    c.cfg["accounts"][0]["webhooks"] = [HOOK, "second"]
    c.bridge.write_config(c.cfg)
    b.send(signal.SIGHUP)
    b.wait_log(r"event=reloaded accounts=1 webhooks=2", 10)
    second = mailgen.message(802, 2000)
    c.deliver(second)
    ev2 = rcv2.wait_events(1, 20)
    c.rcv.wait_events(2, 20)
    harness.eq(b.stop(), 0, "exit code")
    listing = c.listing()
    harness.eq(len(ev2), 1, "events at the added webhook")
    harness.eq(ev2[0].message["uidl"], listing[second], "the added webhook got the new message")
    bridge.verify_signature(ev2[0], secret2)
    harness.eq(ev2[0].id, c.bridge.webhook_id(ACCOUNT, listing[second], "second"), "its webhook-id")
    harness.eq(sorted(e.message["uidl"] for e in c.rcv.events()), sorted(listing.values()),
               "the first webhook got both")
    # an invalid file on SIGHUP: the old configuration stays, the problem is logged
    b.start()
    b.wait_log(r"event=started", 10, count=2)
    harness.write_private(c.bridge.config_path, "{ \"state_dir\": 7 }")
    b.send(signal.SIGHUP)
    b.wait_log(r"event=reload_failed", 10)
    if "state_dir: expected a string, got a number" not in b.log():
        raise AssertionError("reload problem not logged: %s" % b.log()[-1500:])
    if not b.running():
        raise AssertionError("the bridge exited on a bad reload")
    harness.eq(b.stop(), 0, "exit code")
    rcv2.stop()


@harness.timeout(90)
def test_410_disables_webhook_until_sighup():
    c = Case("gone", receiver_args=["--gone"], poll_interval="1s")
    c.deliver(mailgen.message(901, 2000))
    b = c.bridge.start()
    b.wait_log(r"event=webhook_disabled webhook=hook", 20)
    harness.eq([r[0] for r in c.bridge.query("SELECT name FROM webhooks_disabled")], [HOOK], "disabled")
    c.deliver(mailgen.message(902, 2000))
    b.wait_log(r"event=poll_done account=acct listed=2 fetched=1", 20)
    time.sleep(3)                      # retries would be due within 1 s
    gone = re.findall(r"answering 410 Gone", c.rcv.log())
    harness.eq(len(gone), 1, "requests after the 410")
    harness.eq(c.rcv.events(), [], "events")
    # the receiver is back (same port, answering 200); SIGHUP re-enables
    port = c.rcv.port
    c.rcv.stop()
    c.rcv = Receiver(c.secret, port=port, name="receiver-back").start()
    time.sleep(2)
    harness.eq(c.rcv.events(), [], "events before SIGHUP")
    b.send(signal.SIGHUP)
    events = c.rcv.wait_events(2, 20)
    harness.eq(b.stop(), 0, "exit code")
    harness.eq(len(by_uidl(events)), 2, "messages delivered after SIGHUP")
    harness.eq(c.bridge.query("SELECT count(*) FROM webhooks_disabled")[0][0], 0, "disabled marks")


# ---- check-config -----------------------------------------------------------------

def _check_config(path, env=None):
    return harness.run_cli(["check-config", path], env=env or {})


def test_check_config_errors():
    d = harness.out_dir("configs")
    good_env = {"T_PW": "pw-" + secrets.token_hex(8), "T_WHSEC": bridge.new_secret()}
    cases = {
        "unknown.json": ('{"state_dir": "s", "accounts": [{"name": "a", "host": "h", "username": "u",'
                         ' "password_env": "T_PW", "poll_intervall": "5s"}]}',
                         ["accounts[0].poll_intervall: unknown key (did you mean \"poll_interval\"?)"]),
        "dangling.json": ('{"state_dir": "s", "webhooks": [{"name": "crm", "url": "http://127.0.0.1:1/",'
                          ' "secret_env": "T_WHSEC"}], "accounts": [{"name": "a", "host": "h",'
                          ' "username": "u", "password_env": "T_PW", "webhooks": ["crm", "billing"]}]}',
                          ["accounts[0].webhooks[1]: no webhook is named \"billing\""]),
        "literal.json": ('{"state_dir": "s", "accounts": [{"name": "a", "host": "h", "username": "u",'
                         ' "password": "hunter2"}]}',
                         ["accounts[0].password: secrets are not accepted in the file itself; use "
                          "password_env, password_file or password_command",
                          "accounts[0]: has no credentials: set password_env, password_file, "
                          "password_command or oauth2"]),
        "units.json": ('{"state_dir": "s", "accounts": [{"name": "a", "host": "h", "username": "u",'
                       ' "password_env": "T_PW", "poll_interval": "5x", "max_message_size": "25XB",'
                       ' "start": "old", "port": 0}]}',
                       ["accounts[0].poll_interval: \"5x\" is not a duration (use ms, s, m, h or d)",
                        "accounts[0].max_message_size: \"25XB\" is not a size: unknown size unit "
                        "(use B, KiB, MiB, GiB, KB, MB or GB)",
                        "accounts[0].start: \"old\" is not one of: new, all",
                        "accounts[0].port: must be between 1 and 65535, got 0"]),
        "delete.json": ('{"state_dir": "s", "accounts": [{"name": "a", "host": "h", "username": "u",'
                        ' "password_env": "T_PW", "after_delivery": "delete"}]}',
                        ["accounts[0].after_delivery: \"delete\" with no webhooks would delete mail "
                         "nobody received"]),
        "noenv.json": ('{"state_dir": "s", "accounts": [{"name": "a", "host": "h", "username": "u",'
                       ' "password_env": "T_UNSET_FOR_SURE"}]}',
                       ["accounts[0].password_env: environment variable T_UNSET_FOR_SURE is not set"]),
        "nostate.json": ('{"accounts": []}', ["state_dir: is required but missing"]),
    }
    for name, (text, lines) in cases.items():
        path = os.path.join(d, name)
        harness.write_private(path, text)
        r = _check_config(path, good_env)
        if r.code == 0:
            raise AssertionError("%s: accepted: %s" % (name, r.describe()))
        out = [ln for ln in (r.stdout + r.stderr).splitlines() if ln]
        want = ["%s: %s" % (path, ln) for ln in lines]
        want.append("%s: %d problem%s" % (path, len(lines), "" if len(lines) == 1 else "s"))
        harness.eq(out, want, name + " output")
        # `run` refuses it too, with the same lines
        r2 = harness.run_cli(["run", "--config", path, "--once"], env=good_env)
        if r2.code == 0 or want[0] not in r2.stderr:
            raise AssertionError("run with %s: %s" % (name, r2.describe()))
    # a syntax error names the line and column
    path = os.path.join(d, "syntax.json")
    harness.write_private(path, '// comment\n{\n  "state_dir": "s"\n  "log_level": "info"\n}\n')
    r = _check_config(path)
    if r.code == 0 or not re.search(re.escape(path) + r":4:3: ", r.stdout + r.stderr):
        raise AssertionError("syntax error: %s" % r.describe())
    # a missing file
    r = _check_config(os.path.join(d, "missing.json"))
    if r.code == 0 or "missing.json" not in r.stdout + r.stderr:
        raise AssertionError("missing file: %s" % r.describe())


def test_check_config_valid_summary():
    d = harness.out_dir("configs")
    env = {"T_PW": "pw-" + secrets.token_hex(8), "T_WHSEC": bridge.new_secret(),
           "T_TOKEN": secrets.token_urlsafe(16)}
    path = os.path.join(d, "good.json")
    harness.write_private(path, """// a comment
{ "state_dir": "state", /* relative: next to this file */
  "api": { "listen": "127.0.0.1:18025", "tokens": [ { "name": "admin", "token_env": "T_TOKEN" } ] },
  "webhooks": [ { "name": "crm", "url": "http://127.0.0.1:1/h", "secret_env": "T_WHSEC",
                  "retry_schedule": ["1s", "5m"], "inline_attachments_max": "1MiB" } ],
  "accounts": [ { "name": "support", "host": "127.0.0.1", "username": "u", "password_env": "T_PW",
                  "poll_interval": "30s", "start": "all", "after_delivery": "delete",
                  "max_message_size": "10MiB", "webhooks": ["crm"] } ] }
""")
    r = _check_config(path, env)
    harness.check_ok(r)
    harness.check_no_secret(r, *env.values())
    lines = r.stdout.splitlines()
    harness.eq(lines[0], "%s: valid (1 account, 1 webhook, 1 API token)" % path, "summary line")
    text = r.stdout
    for want in ("state_dir=%s/state" % d, "retry_schedule=1s,5m", "inline_attachments_max=1MiB",
                 "poll_interval=30s", "start=all", "after_delivery=delete", "max_message_size=10MiB",
                 "password=env:T_PW", "secret=env:T_WHSEC", "token=env:T_TOKEN", "webhooks=crm"):
        if want not in text:
            raise AssertionError("summary lacks %r: %s" % (want, r.describe()))


# ---- secrets --------------------------------------------------------------------

@harness.timeout(60)
def test_secrets_never_logged():
    """Password, API token and webhook secret never appear on the bridge's
    stderr -- at debug level, with a wrong password, and with a receiver that
    rejects the signature (401)."""
    c = Case("secrets")
    c.deliver(mailgen.message(1001, 2000))
    # the receiver knows another secret: every delivery is refused with 401
    c.rcv.stop()
    c.rcv = Receiver(bridge.new_secret(), port=c.rcv.port, name="receiver-wrong").start()
    c.cfg["webhooks"][0]["retry_schedule"] = ["1s"]
    c.bridge.write_config(c.cfg)
    r = c.once()
    if "rejected with 401" not in c.rcv.log():
        raise AssertionError("receiver did not reject: %s" % c.rcv.log())
    if "HTTP 401" not in r.stderr:
        raise AssertionError("the 401 is not in the log: %s" % r.describe())
    # the daemon, stopped by SIGINT
    b = c.bridge.start()
    b.wait_log(r"event=poll_done", 20)
    harness.eq(b.stop(signal.SIGINT), 0, "exit code after SIGINT")
    text = b.log()
    for s in (c.password, c.secret, c.secret[len("whsec_"):], c.token):
        if s in text:
            raise AssertionError("a secret appears in the daemon's log")
    # a wrong password: exit 1, an auth error, still no secret
    c.bridge.secrets["T_POP3_PW"] = "wrong-" + secrets.token_urlsafe(10)
    r = c.once(expect=1)
    if "state=auth_error" not in r.stderr:
        raise AssertionError("no auth_error: %s" % r.describe())
    for s in (c.password, c.bridge.secrets["T_POP3_PW"], c.secret, c.secret[len("whsec_"):], c.token):
        harness.check_no_secret(r, s)
    harness.eq(c.bridge.query("SELECT state FROM accounts"), [("auth_error",)], "account state")
