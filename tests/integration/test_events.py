"""Which events go where (issue 12 §1, §7; issue 11 §3), end to end: a real
Dovecot, `pop3bridge run` and real receivers (build/tools/webhook-receiver).

- Routing filters: each webhook gets only the messages its filter matches;
  the store keeps them all; POST /api/v1/webhooks/{name}/match says why.
- A bad pattern is reported by check-config with its key path and offset.
- account.auth_error: a refused login sends one signed event to the webhook
  that lists the type, and no more while the account keeps failing.
- Dead deliveries: DELETE drops one (kept as "dropped"), POST
  /api/v1/deliveries/retry retries the others in bulk.
Every API answer is validated against openapi.yaml.
"""

import json
import os
import secrets
import sqlite3
import urllib.error
import urllib.request

import bridge
import dovecot
import harness
import openapi
from bridge import Bridge, Receiver

DC = None
SPEC = openapi.Spec(os.path.join(harness.ROOT, "openapi.yaml"))


def setup_module():
    global DC
    DC = dovecot.Dovecot(name="dovecot-events").start()


def teardown_module():
    if DC:
        DC.stop()


def mail(frm, to, subject, extra="", body="hello\r\n"):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@test>\r\n%s\r\n%s"
            % (frm, to, subject, secrets.token_hex(6), extra, body)).encode()


def api(port, token, method, path, body=None):
    """(status, json) of one API call, validated against openapi.yaml."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method,
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, ctype, raw = r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        status, ctype, raw = e.code, e.headers.get("Content-Type"), e.read()
    problems = SPEC.check(method, path, status, ctype, raw)
    if problems:
        raise AssertionError("%s %s: answer does not match openapi.yaml: %s"
                             % (method, path, "; ".join(problems[:5])))
    return status, json.loads(raw)


def make_bridge(name, user, password, hooks, env, account_extra=None):
    """A bridge with one account `acct` (user/password on DC) routed to every
    webhook in hooks, and the API on a free port."""
    port = dovecot.free_port()
    token = secrets.token_urlsafe(18)
    env = dict(env, T_POP3_PW=password, T_API_TOKEN=token)
    acct = {"name": "acct", "host": "127.0.0.1", "port": DC.tls_port, "tls": "implicit",
            "ca_file": DC.pki.ca, "username": user, "password_env": "T_POP3_PW",
            "start": "all", "poll_interval": "1h", "webhooks": [h["name"] for h in hooks]}
    acct.update(account_extra or {})
    cfg = {"log_level": "debug", "webhooks": hooks, "accounts": [acct],
           "api": {"listen": "127.0.0.1:%d" % port, "public_url": "http://127.0.0.1:%d" % port,
                   "tokens": [{"name": "t", "token_env": "T_API_TOKEN"}]}}
    return Bridge(cfg, env, name=name), port, token


def count(b, sql):
    """A count from the store, or -1 while the bridge has not created it yet."""
    try:
        return b.query(sql)[0][0]
    except sqlite3.OperationalError:
        return -1


def hook(name, rcv, var, **extra):
    h = {"name": name, "url": rcv.url, "secret_env": var, "retry_schedule": ["1s"]}
    h.update(extra)
    return h


@harness.timeout(60)
def test_filters_route_messages_and_match_explains():
    every = Receiver(bridge.new_secret(), name="ev-every").start()
    inv = Receiver(bridge.new_secret(), name="ev-invoices").start()
    human = Receiver(bridge.new_secret(), name="ev-human").start()
    env = {"T_WH_EVERY": every.secret, "T_WH_INV": inv.secret, "T_WH_HUMAN": human.secret}
    hooks = [hook("every", every, "T_WH_EVERY"),
             hook("invoices", inv, "T_WH_INV",
                  filter={"to": ["*@support.example.com"], "subject": "(?i)\\binvoice\\b",
                          "headers": {"X-Priority": "^1"}}),
             hook("human", human, "T_WH_HUMAN", filter={"exclude_auto_replies": True,
                                                        "from": ["*@customer.example"]})]
    pw = secrets.token_urlsafe(12)
    DC.add_user("evfilter", pw)
    DC.deliver("evfilter", mail("Ann <ann@customer.example>", "Help <help@support.example.com>",
                                "Your INVOICE 12", "X-Priority: 1 (Highest)\r\n"))
    DC.deliver("evfilter", mail("ann@customer.example", "other@example.com",
                                "Invoice for other", "X-Priority: 1\r\n"))
    DC.deliver("evfilter", mail("bob@customer.example", "help@support.example.com",
                                "Out of office", "Auto-Submitted: auto-replied\r\n"))
    b, port, token = make_bridge("ev-filter", "evfilter", pw, hooks, env)
    b.start()
    try:
        harness.wait_for(lambda: dovecot.port_answers(port), 20, what="the API")
        every.wait_events(3, 30)
        inv.wait_events(1, 30)
        human.wait_events(2, 30)
        harness.wait_for(lambda: count(b, "SELECT count(*) FROM deliveries WHERE status <> 1") == 0,
                         20, what="every delivery done")
        harness.eq(len(every.events()), 3, "events at the webhook without a filter")
        harness.eq([e.message["subject"] for e in inv.events()], ["Your INVOICE 12"],
                   "the invoices webhook's events")
        harness.eq(sorted(e.message["subject"] for e in human.events()),
                   ["Invoice for other", "Your INVOICE 12"], "the human webhook's events")
        for rcv in (every, inv, human):
            for ev in rcv.events():
                bridge.verify_signature(ev, rcv.secret)
        # the store keeps all three; deliveries exist only where a filter matched
        harness.eq(b.query("SELECT count(*) FROM messages")[0][0], 3, "messages stored")
        rows = dict(b.query("SELECT webhook, count(*) FROM deliveries GROUP BY webhook"))
        harness.eq(rows, {"every": 3, "invoices": 1, "human": 2}, "deliveries by webhook")

        # the dry run explains, for the message that went only to `every`
        ids = {e.message["subject"]: e.message["id"] for e in every.events()}
        st, ans = api(port, token, "POST", "/api/v1/webhooks/human/match",
                      {"message_id": ids["Out of office"]})
        harness.eq(st, 200, "match status")
        harness.eq(ans["matches"], False, "the auto-reply matches the human webhook")
        failed = [c["condition"] for c in ans["conditions"] if not c["passed"]]
        harness.eq(failed, ["exclude_auto_replies"], "failed conditions")
        st, ans = api(port, token, "POST", "/api/v1/webhooks/every/match",
                      {"message_id": ids["Out of office"]})
        harness.eq((st, ans["matches"], ans["has_filter"]), (200, True, False), "no filter matches")
        st, ans = api(port, token, "POST", "/api/v1/webhooks/invoices/match",
                      {"message_id": ids["Invoice for other"]})
        by = {c["condition"]: c for c in ans["conditions"]}
        harness.eq((by["to"]["passed"], by["subject"]["passed"], by["headers.X-Priority"]["passed"]),
                   (False, True, True), "to fails, subject and header pass")
        # the webhooks list shows each filter as configured
        st, lst = api(port, token, "GET", "/api/v1/webhooks")
        by_name = {w["name"]: w for w in lst["webhooks"]}
        harness.eq(by_name["invoices"]["filter"]["subject"], "(?i)\\binvoice\\b", "filter shown")
        harness.eq("filter" in by_name["every"], False, "no filter shown for the plain webhook")
        # errors: unknown webhook, bad body, unknown message
        harness.eq(api(port, token, "POST", "/api/v1/webhooks/nope/match", {"message_id": "m_1"})[0],
                   404, "unknown webhook")
        harness.eq(api(port, token, "POST", "/api/v1/webhooks/every/match", {"id": 1})[0], 400,
                   "a body without message_id")
        harness.eq(api(port, token, "POST", "/api/v1/webhooks/every/match",
                       {"message_id": "m_999999"})[0], 404, "unknown message")
    finally:
        harness.eq(b.stop(), 0, "exit code after SIGTERM")


def test_check_config_names_a_bad_pattern():
    cfg_dir = harness.out_dir("ev-badpattern")
    path = os.path.join(cfg_dir, "bad.json")
    harness.write_config(path, {"state_dir": os.path.join(cfg_dir, "state"),
                                "webhooks": [{"name": "a", "url": "http://127.0.0.1:9/x", "secret_env": "T_WH"},
                                             {"name": "b", "url": "http://127.0.0.1:9/y", "secret_env": "T_WH",
                                              "filter": {"subject": "inv(oice"}}]})
    r = harness.run_cli(["check-config", path], env={"T_WH": bridge.new_secret()})
    harness.eq(r.code, 1, "check-config exit code")
    want = "webhooks[1].filter.subject: PCRE2 error at offset 8: missing closing parenthesis"
    if want not in r.stderr:
        raise AssertionError("check-config did not say %r: %r" % (want, r.stderr))


@harness.timeout(60)
def test_auth_error_event_once_per_fall():
    ops = Receiver(bridge.new_secret(), name="ev-ops").start()
    mailrcv = Receiver(bridge.new_secret(), name="ev-mail").start()
    env = {"T_WH_OPS": ops.secret, "T_WH_MAIL": mailrcv.secret}
    DC.add_user("evauth", secrets.token_urlsafe(12))
    # ops is listed by no account: account events go wherever their type is asked for
    hooks = [hook("mail", mailrcv, "T_WH_MAIL"),
             hook("ops", ops, "T_WH_OPS", filter={"types": ["account.auth_error"]})]
    b, _, _ = make_bridge("ev-auth", "evauth", "not-the-password", hooks, env)
    b.config["accounts"][0]["webhooks"] = ["mail"]
    b.write_config(b.config)
    for i in range(3):   # three failing polls: one event
        if i:
            # the 15 min backoff after a refused login has passed
            con = sqlite3.connect(os.path.join(b.state_dir, "pop3bridge.db"), timeout=10)
            con.execute("UPDATE accounts SET backoff_until = 0")
            con.commit()
            con.close()
        r = b.run_once(timeout=40)
        if "state=auth_error" not in r.stderr:
            raise AssertionError("run %d: no auth_error in %r" % (i, r.stderr[-2000:]))
    evs = ops.wait_events(1, 20)
    harness.eq(len(evs), 1, "auth_error events after three failing polls")
    ev = evs[0]
    bridge.verify_signature(ev, ops.secret)
    harness.eq(ev.json["type"], "account.auth_error", "type")
    harness.eq((ev.json["data"]["account"], ev.json["data"]["state"]), ("acct", "auth_error"), "data")
    if "not-the-password" in ev.body.decode():
        raise AssertionError("the password appears in the event")
    problems = openapi.validate({"$ref": "#/components/schemas/AccountEvent"}, ev.json, SPEC.doc)
    if problems:
        raise AssertionError("event does not match openapi.yaml: %s" % problems)
    harness.eq(len(mailrcv.events()), 0, "events at the mail webhook")
    harness.eq(b.query("SELECT count(*), sum(status = 1) FROM deliveries WHERE event_id IS NOT NULL")[0],
               (1, 1), "the event's delivery, delivered")


@harness.timeout(60)
def test_dead_deliveries_dropped_and_retried_in_bulk():
    closed = dovecot.free_port()     # nothing listens there: every attempt fails
    late = Receiver(bridge.new_secret(), name="ev-late").start()
    env = {"T_WH_DEAD": bridge.new_secret(), "T_WH_LATE": late.secret}
    pw = secrets.token_urlsafe(12)
    DC.add_user("evdead", pw)
    for i in range(3):
        DC.deliver("evdead", mail("a@example.org", "b@example.org", "dead %d" % i))
    hooks = [{"name": "dead", "url": "http://127.0.0.1:%d/x" % closed, "secret_env": "T_WH_DEAD",
              "retry_schedule": ["1s"]}]
    b, port, token = make_bridge("ev-dead", "evdead", pw, hooks, env)
    b.start()
    try:
        harness.wait_for(lambda: dovecot.port_answers(port), 20, what="the API")
        harness.wait_for(lambda: count(b, "SELECT count(*) FROM deliveries WHERE status = 3") == 3,
                         30, interval=0.2, what="three dead deliveries")
        ids = [r[0] for r in b.query("SELECT id FROM deliveries ORDER BY id")]
        st, d = api(port, token, "DELETE", "/api/v1/deliveries/d_%d" % ids[0])
        harness.eq((st, d["status"]), (200, "dropped"), "DELETE answer")
        st, _ = api(port, token, "DELETE", "/api/v1/deliveries/d_%d" % ids[0])
        harness.eq(st, 409, "dropping a dropped delivery")
        harness.eq(api(port, token, "DELETE", "/api/v1/deliveries/d_999999")[0], 404, "unknown id")
        st, d = api(port, token, "GET", "/api/v1/deliveries/d_%d" % ids[0])
        harness.eq((d["status"], len(d["attempts"])), ("dropped", 2), "dropped, history kept")
        st, page = api(port, token, "GET", "/api/v1/deliveries?status=dropped")
        harness.eq(st, 200, "list of dropped: %r" % page)
        harness.eq([x["id"] for x in page["deliveries"]], ["d_%d" % ids[0]], "listed as dropped")
        # bad bulk requests
        harness.eq(api(port, token, "POST", "/api/v1/deliveries/retry", {"status": "pending"})[0], 400,
                   "bulk retry of pending")
        harness.eq(api(port, token, "POST", "/api/v1/deliveries/retry", {"limit": 1001})[0], 400,
                   "bulk retry over the limit")
        harness.eq(api(port, token, "POST", "/api/v1/deliveries/retry", {"webhook": "nope"})[0], 404,
                   "bulk retry of an unknown webhook")
    finally:
        harness.eq(b.stop(), 0, "exit code after SIGTERM")
    # the receiver is back (the webhook now points at it): retry the rest in bulk
    b.config["webhooks"][0]["url"] = late.url
    b.secrets["T_WH_DEAD"] = late.secret
    b.write_config(b.config)
    b.start()
    try:
        harness.wait_for(lambda: dovecot.port_answers(port), 20, what="the API after a restart")
        st, ans = api(port, token, "POST", "/api/v1/deliveries/retry",
                      {"webhook": "dead", "status": "dead", "limit": 1})
        harness.eq((st, ans["retried"], ans["more"]), (202, 1, True), "bulk retry, limited to 1")
        st, ans = api(port, token, "POST", "/api/v1/deliveries/retry", {"webhook": "dead"})
        harness.eq((st, ans["retried"], ans["more"]), (202, 1, False), "bulk retry of the rest")
        late.wait_events(2, 20)
        harness.wait_for(lambda: count(b, "SELECT count(*) FROM deliveries WHERE status = 1") == 2,
                         20, what="two delivered")
        harness.eq(len(late.events()), 2, "events after the bulk retry (the dropped one is not sent)")
        harness.eq(b.query("SELECT status FROM deliveries WHERE id = ?", ids[0])[0][0], 4,
                   "the dropped one stays dropped")
    finally:
        harness.eq(b.stop(), 0, "exit code after SIGTERM")


@harness.timeout(60)
def test_dedupe_by_message_id():
    rcv = Receiver(bridge.new_secret(), name="ev-dedupe").start()
    pw = secrets.token_urlsafe(12)
    DC.add_user("evdedupe", pw)
    same = ("From: a@example.org\r\nTo: b@example.org\r\nSubject: %s\r\n"
            "Message-ID: <same-%s@example.org>\r\n\r\nbody\r\n")
    tag = secrets.token_hex(4)
    DC.deliver("evdedupe", (same % ("first", tag)).encode())
    DC.deliver("evdedupe", (same % ("again, re-listed", tag)).encode())
    DC.deliver("evdedupe", mail("a@example.org", "b@example.org", "other"))
    b, _, _ = make_bridge("ev-dedupe", "evdedupe", pw, [hook("h", rcv, "T_WH_H")],
                          {"T_WH_H": rcv.secret},
                          account_extra={"dedupe": {"by": "message_id", "window": "30d"}})
    r = b.run_once(timeout=40)
    harness.eq(r.code, 0, "run --once exit code")
    harness.eq(sorted(e.message["subject"] for e in rcv.events()), ["first", "other"],
               "events (the re-listed copy is not delivered)")
    rows = b.query("SELECT uidl, duplicate_of FROM messages ORDER BY id")
    harness.eq(len(rows), 3, "messages stored")
    harness.eq([d is not None for _, d in rows].count(True), 1, "duplicates recorded")
    if "event=duplicate" not in r.stderr:
        raise AssertionError("no duplicate in the log: %r" % r.stderr[-1500:])


@harness.timeout(60)
def test_payload_shaping():
    small = Receiver(bridge.new_secret(), name="ev-small").start()
    full = Receiver(bridge.new_secret(), name="ev-full").start()
    pw = secrets.token_urlsafe(12)
    DC.add_user("evshape", pw)
    DC.deliver("evshape", mail("a@example.org", "b@example.org", "shaped", "X-Ticket: 42\r\n",
                               body="0123456789" * 50 + "\r\n"))
    hooks = [hook("small", small, "T_WH_SMALL",
                  payload={"include": ["text", "headers"], "text_max": 100,
                           "headers": ["subject", "X-Ticket"]}),
             hook("full", full, "T_WH_FULL")]
    b, _, _ = make_bridge("ev-shape", "evshape", pw, hooks,
                          {"T_WH_SMALL": small.secret, "T_WH_FULL": full.secret})
    harness.eq(b.run_once(timeout=40).code, 0, "run --once exit code")
    s, f = small.events()[0], full.events()[0]
    for ev, rcv in ((s, small), (f, full)):
        bridge.verify_signature(ev, rcv.secret)
        problems = openapi.validate({"$ref": "#/components/schemas/Event"}, ev.json, SPEC.doc)
        if problems:
            raise AssertionError("event does not match openapi.yaml: %s" % problems)
    m = s.message
    harness.eq((len(m["text"]), m["text_truncated"]), (100, True), "text cut")
    harness.eq([h["name"] for h in m["headers"]], ["Subject", "X-Ticket"], "headers kept")
    harness.eq((m["html"], m["raw_url"], m["attachments"]), (None, None, []), "left out")
    harness.eq(m["subject"], "shaped", "subject")
    if "text_truncated" in f.message or len(f.message["text"]) <= 100 or not f.message["raw_url"]:
        raise AssertionError("the other webhook's event was shaped too: %r" % f.message)
    if len(s.body) >= len(f.body):
        raise AssertionError("the shaped event (%d bytes) is not smaller than the full one (%d)"
                             % (len(s.body), len(f.body)))
