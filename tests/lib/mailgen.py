"""mailgen -- deterministic generator of realistic test messages.

    mailgen.message(seed, size=4096, kind=None) -> bytes
    mailgen.mailbox(seed, count, min_size=1024, max_size=20000) -> [bytes]
    mailgen.KINDS

The same seed always gives the same bytes.  Messages have LF line endings
(as in a Maildir), end with a newline, contain no CR or NUL, and carry what
trips POP3 clients: lines starting with "." (a lone ".", "..", ".foo"),
lines starting with "From ", RFC 2047 encoded subjects and names, long
folded headers, 8-bit UTF-8 bodies, quoted-printable and base64 parts.
`size` is a target: the result is within a few hundred bytes of it (never
smaller than the headers need).
"""

import base64
import quopri
import random

KINDS = ("plain", "utf8", "alternative", "mixed")

WORDS = ("the of and to in is that for it as was with be by on not this are or from at which but have an "
         "they you were there been one all we their has would when if so will more about can up out into "
         "time only some could new other than then now people made over invoice meeting schedule report "
         "quarterly budget server deploy release ticket customer support attachment please review approve "
         "thanks regards update status pipeline latency mailbox message delivery webhook retry queue").split()
UTF8_SNIPPETS = ("Grüße aus München – schöne Woche!", "Café crème, naïve façade, déjà vu.",
                 "Привет, как дела? Всё хорошо.", "こんにちは、会議の資料を送ります。",
                 "Zażółć gęślą jaźń.", "数据同步已完成 ✔", "Emoji 📬📎✅")
SUBJECTS = ("Quarterly report {n}", "Re: deployment schedule {n}", "Invoice 2024-{n:05d}",
            "Grüße aus München – Rechnung {n}", "Отчёт за квартал №{n}", "会議の議事録 {n}",
            "📬 New message waiting ({n})",
            "Ünïcödé sübject with a long tail that needs several encoded words to fit {n}")
NAMES = (("Alice Example", "alice@example.com"), ("Bob Müller", "bob@example.de"),
         ("Søren Kierkegaard", "soren@example.dk"), ("张伟", "zhang.wei@example.cn"),
         ("Ops Robot", "noreply@alerts.example.net"), ("Иван Петров", "ivan@example.ru"))
# lines a POP3 server must dot-stuff, and mbox-style "From " lines
TRICKY_LINES = (".", "..", ".foo", "...and so on", ". leading dot and space", "From the desk of the editor",
                "From: not a header, a body line", ">From quoted")


def _encoded_words(text, rng):
    """RFC 2047 encoded-words of at most 75 characters each, B or Q."""
    mode = rng.choice("BQ")

    def enc(s):
        raw = s.encode("utf-8")
        if mode == "B":
            return "=?UTF-8?B?%s?=" % base64.b64encode(raw).decode()
        q = "".join("_" if b == 32 else chr(b) if (chr(b).isalnum() and b < 128) else "=%02X" % b
                    for b in raw)
        return "=?UTF-8?Q?%s?=" % q

    words, cur = [], ""
    for ch in text:
        if cur and len(enc(cur + ch)) > 75:
            words.append(enc(cur))
            cur = ch
        else:
            cur += ch
    if cur:
        words.append(enc(cur))
    return words


def _fold(name, tokens):
    """Fold a header of tokens onto continuation lines of at most 78 columns."""
    lines, cur = [], name + ":"
    for t in tokens:
        if len(cur) + 1 + len(t) > 78 and cur != name + ":":
            lines.append(cur)
            cur = (" " if len(lines) % 2 else "\t") + t
        else:
            cur += " " + t
    lines.append(cur)
    return "\n".join(lines)


def _address(rng, pair=None):
    name, mail = pair or rng.choice(NAMES)
    if all(ord(c) < 128 for c in name):
        return '"%s" <%s>' % (name, mail)
    return "%s <%s>" % (" ".join(_encoded_words(name, rng)), mail)


def _headers(rng, n, ctype):
    subject = rng.choice(SUBJECTS).format(n=n)
    if all(ord(c) < 128 for c in subject):
        subj = "Subject: " + subject
    else:
        subj = _fold("Subject", _encoded_words(subject, rng))
    day = 1 + n % 28
    h = ["Return-Path: <bounce-%d@example.net>" % n,
         "Received: from mx%d.example.net (mx%d.example.net [192.0.2.%d])\n\tby mail.example.org with ESMTPS "
         "id %08x\n\tfor <user@example.org>; Mon, %d Jan 2024 10:%02d:%02d +0000" % (
             n % 7, n % 7, 1 + n % 250, rng.getrandbits(32), day, n % 60, rng.randrange(60)),
         "From: " + _address(rng),
         "To: " + _address(rng, ("Test User", "user@example.org")),
         subj,
         "Date: Mon, %d Jan 2024 10:%02d:%02d +0000" % (day, n % 60, rng.randrange(60)),
         "Message-ID: <%d.%016x@example.net>" % (n, rng.getrandbits(64)),
         _fold("References", ["<%016x.%d@example.net>" % (rng.getrandbits(64), k) for k in range(rng.randint(3, 9))]),
         _fold("X-Long-Header", ["token-%d-%s" % (k, rng.choice(WORDS)) for k in range(rng.randint(12, 30))]),
         "MIME-Version: 1.0"]
    return "\n".join(h) + "\n" + ctype + "\n"


def _text(rng, target, utf8, tricky):
    """Wrapped paragraphs of about `target` bytes, with tricky lines mixed in."""
    out, size = [], 0
    if tricky:
        out.extend(TRICKY_LINES[:3])   # a lone ".", "..", ".foo" in every text part
        size += 8
    while size < target:
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 60))]
        if utf8 or rng.random() < 0.1:
            words.insert(rng.randrange(len(words)), rng.choice(UTF8_SNIPPETS))
        line = ""
        for w in words:
            if line and len(line) + 1 + len(w) > 72:
                out.append(line)
                size += len(line.encode()) + 1
                line = w
            else:
                line = line + " " + w if line else w
        out.append(line)
        out.append("")
        size += len(line.encode()) + 2
        if tricky and rng.random() < 0.3:
            t = rng.choice(TRICKY_LINES)
            out.append(t)
            size += len(t) + 1
    return "\n".join(out) + "\n"


def _qp(text):
    return quopri.encodestring(text.encode("utf-8")).decode("ascii").replace("\r\n", "\n")


def _b64(raw):
    enc = base64.encodebytes(raw).decode("ascii")   # 76-column lines, LF
    return enc if enc.endswith("\n") else enc + "\n"


def message(seed, size=4096, kind=None):
    """One message of about `size` bytes."""
    rng = random.Random("mailgen-%d" % seed)
    kind = kind or KINDS[seed % len(KINDS)]
    if kind not in KINDS:
        raise ValueError("unknown kind %r" % kind)
    boundary = "=_b%016x" % rng.getrandbits(64)
    if kind in ("plain", "utf8"):
        head = _headers(rng, seed, "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n")
        body = _text(rng, max(64, size - len(head.encode())), kind == "utf8", True)
        if seed % 5 == 0:
            body += ".\n"        # the body's last line is a lone dot
    elif kind == "alternative":
        head = _headers(rng, seed, 'Content-Type: multipart/alternative; boundary="%s"\n' % boundary)
        text = _text(rng, max(64, (size - len(head.encode())) * 0.4), True, True)
        html = "<html><body>\n<p>" + text.replace("&", "&amp;").replace("<", "&lt;").replace(
            "\n\n", "</p>\n<p>") + "</p>\n</body></html>\n"
        body = ("This is a multi-part message in MIME format.\n\n--{b}\n"
                "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n{t}\n"
                "--{b}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
                "{h}\n--{b}--\n").format(b=boundary, t=_qp(text), h=_qp(html))
    else:  # mixed: text plus base64 attachments
        head = _headers(rng, seed, 'Content-Type: multipart/mixed; boundary="%s"\n' % boundary)
        text = _text(rng, 300 + rng.randrange(600), False, True)
        parts = ["--%s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s"
                 % (boundary, text)]
        left = max(64, size - len(head.encode()) - len(text.encode()) - 400)
        names = ("report-%d.pdf" % seed, "Foto_Überblick_%d.jpg" % seed, "data-%d.bin" % seed)
        nattach = 1 + seed % 2
        for k in range(nattach):
            raw = rng.randbytes(max(16, int(left / nattach * 57 / 77)))
            fname = names[(seed + k) % len(names)]
            if all(ord(c) < 128 for c in fname):
                disp = 'attachment; filename="%s"' % fname
            else:
                disp = "attachment;\n filename*=UTF-8''%s" % "".join(
                    c if c.isalnum() and ord(c) < 128 else "".join("%%%02X" % b for b in c.encode())
                    for c in fname)
            parts.append("--%s\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
                         "Content-Disposition: %s\n\n%s" % (boundary, disp, _b64(raw)))
        body = "This is a multi-part message in MIME format.\n\n" + "\n".join(parts) + "--%s--\n" % boundary
    data = (head + "\n" + body).encode("utf-8")
    assert b"\r" not in data and b"\0" not in data and data.endswith(b"\n")
    return data


def mailbox(seed, count, min_size=1024, max_size=20000):
    """count messages of every kind, sizes log-uniform in [min_size, max_size]."""
    rng = random.Random("mailbox-%d" % seed)
    out = []
    for i in range(count):
        size = int(min_size * (max_size / min_size) ** rng.random())
        out.append(message(seed * 100003 + i, size))
    return out
