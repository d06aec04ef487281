"""yamlsub -- a reader for the plain subset of YAML 1.2 that openapi.yaml uses.

    yamlsub.load(text) -> dict / list / scalar

Supported: block mappings ("key: value", "key:" + an indented block), block
sequences ("- item", "- key: value" starting a mapping), comments ("# ..."
at line start or after a space), plain scalars (null, ~, true, false,
integers, floats, strings), single- and double-quoted scalars (keys too),
flow sequences of scalars ("[a, 'b', 1]", which may span lines), empty
flow collections ("[]", "{}"), and folded/literal block scalars (">", ">-",
"|", "|-").  Anything else (anchors, tags, flow mappings with content,
documents) raises ValueError with the line number, so the file cannot
silently drift out of the subset.  Python 3 standard library only.
"""

import json
import re

_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")


class _Line:
    __slots__ = ("no", "indent", "text")

    def __init__(self, no, indent, text):
        self.no, self.indent, self.text = no, indent, text


def _strip_comment(s):
    out, q, i = [], None, 0
    while i < len(s):
        c = s[i]
        if q:
            out.append(c)
            if q == "'" and c == "'":
                if i + 1 < len(s) and s[i + 1] == "'":
                    out.append("'")
                    i += 1
                else:
                    q = None
            elif q == '"' and c == "\\":
                if i + 1 < len(s):
                    out.append(s[i + 1])
                    i += 1
            elif q == '"' and c == '"':
                q = None
        else:
            if c == "#" and (i == 0 or s[i - 1] in " \t"):
                break
            if c in "'\"" and (i == 0 or s[i - 1] in " [,:-"):
                q = c
            out.append(c)
        i += 1
    return "".join(out).rstrip()


def _scalar(tok, no):
    t = tok.strip()
    if t == "":
        return None
    if t[0] == '"':
        if not t.endswith('"') or len(t) < 2:
            raise ValueError("line %d: unterminated double-quoted scalar" % no)
        return json.loads(t)
    if t[0] == "'":
        if not t.endswith("'") or len(t) < 2:
            raise ValueError("line %d: unterminated single-quoted scalar" % no)
        return t[1:-1].replace("''", "'")
    if t[0] in "&*!|>%@`{":
        if t == "{}":
            return {}
        raise ValueError("line %d: unsupported YAML construct %r" % (no, t))
    if t == "[]":
        return []
    if t[0] == "[":
        return _flow_seq(t, no)
    if t in ("null", "~", "Null", "NULL"):
        return None
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    if ": " in t or t.endswith(":"):
        raise ValueError("line %d: a plain scalar holding \": \" (quote it): %r" % (no, t))
    return t


def _flow_seq(t, no):
    if not t.endswith("]"):
        raise ValueError("line %d: flow sequence not closed" % no)
    inner = t[1:-1]
    items, cur, q = [], "", None
    for c in inner:
        if q:
            cur += c
            if c == q:
                q = None
        elif c in "'\"":
            q = c
            cur += c
        elif c == ",":
            items.append(cur)
            cur = ""
        elif c in "[]{}":
            raise ValueError("line %d: nested flow collections are not supported" % no)
        else:
            cur += c
    if cur.strip() or items:
        items.append(cur)
    return [_scalar(i, no) for i in items if i.strip() != "" or False]


def _split_key(text, no):
    """'key: rest' -> (key, rest) or None if the line is not a mapping entry."""
    if text[0] in "'\"":
        q = text[0]
        i = 1
        while i < len(text):
            if text[i] == q:
                if q == "'" and i + 1 < len(text) and text[i + 1] == "'":
                    i += 2
                    continue
                break
            if q == '"' and text[i] == "\\":
                i += 1
            i += 1
        key = _scalar(text[: i + 1], no)
        rest = text[i + 1:]
        if not rest.startswith(":"):
            return None
        rest = rest[1:]
        if rest and rest[0] != " ":
            return None
        return str(key), rest.strip()
    m = re.match(r"^([^\s:#][^:]*?):(\s+(.*))?$", text)
    if not m:
        return None
    return m.group(1), (m.group(3) or "").strip()


class _Parser:
    def __init__(self, text):
        self.lines = []
        raw = text.split("\n")
        self.raw = raw
        for no, line in enumerate(raw, 1):
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise ValueError("line %d: tab in indentation" % no)
            s = _strip_comment(line)
            if not s.strip():
                self.lines.append(_Line(no, -1, ""))
                continue
            if s.strip() in ("---", "..."):
                raise ValueError("line %d: document markers are not supported" % no)
            self.lines.append(_Line(no, len(s) - len(s.lstrip(" ")), s.strip()))
        self.i = 0

    def _skip_blank(self):
        while self.i < len(self.lines) and self.lines[self.i].indent < 0:
            self.i += 1

    def _peek(self):
        self._skip_blank()
        return self.lines[self.i] if self.i < len(self.lines) else None

    def parse(self):
        first = self._peek()
        if first is None:
            return None
        v = self._block(first.indent)
        if self._peek() is not None:
            ln = self._peek()
            raise ValueError("line %d: unexpected indentation" % ln.no)
        return v

    def _block(self, indent):
        ln = self._peek()
        if ln.text.startswith("- ") or ln.text == "-":
            return self._seq(indent)
        return self._map(indent)

    def _value(self, rest, ln, indent):
        """The value after "key:" or "- " whose line is ln (already consumed)."""
        if rest in (">", ">-", "|", "|-", ">+", "|+"):
            return self._block_scalar(rest, indent)
        if rest.startswith("[") and not rest.endswith("]"):
            parts = [rest]
            while True:
                if self.i >= len(self.lines):
                    raise ValueError("line %d: flow sequence not closed" % ln.no)
                nxt = self.lines[self.i]
                self.i += 1
                if nxt.indent < 0:
                    continue
                parts.append(nxt.text)
                if nxt.text.endswith("]"):
                    break
            return _scalar(" ".join(parts), ln.no)
        if rest == "":
            nxt = self._peek()
            if nxt is None or nxt.indent < indent or (nxt.indent == indent and not nxt.text.startswith("- ")):
                return None
            if nxt.indent == indent:  # "key:\n- item" at the same indentation
                return self._seq(indent)
            return self._block(nxt.indent)
        return _scalar(rest, ln.no)

    def _block_scalar(self, style, indent):
        body, block_indent = [], None
        while self.i < len(self.lines):
            ln = self.lines[self.i]
            raw = self.raw[ln.no - 1]
            if ln.indent >= 0 and ln.indent <= indent:
                break
            if ln.indent < 0 and not raw.strip():
                body.append("")
                self.i += 1
                continue
            ind = len(raw) - len(raw.lstrip(" "))
            if block_indent is None:
                block_indent = ind
            body.append(raw[block_indent:])
            self.i += 1
        while body and body[-1] == "":
            body.pop()
        if style[0] == "|":
            text = "\n".join(body)
        else:
            paras, cur = [], []
            for b in body:
                if b == "":
                    paras.append(" ".join(cur))
                    cur = []
                else:
                    cur.append(b.strip())
            paras.append(" ".join(cur))
            text = "\n".join(paras)
        if not style.endswith("-"):
            text += "\n"
        return text

    def _seq(self, indent):
        out = []
        while True:
            ln = self._peek()
            if ln is None or ln.indent < indent:
                return out
            if ln.indent > indent:
                raise ValueError("line %d: unexpected indentation" % ln.no)
            if not (ln.text.startswith("- ") or ln.text == "-"):
                return out
            self.i += 1
            rest = ln.text[1:].strip()
            kv = _split_key(rest, ln.no) if rest else None
            if kv and not rest.startswith("["):
                # "- key: value" starts a mapping whose keys sit at indent + 2
                item_indent = indent + 2
                m = {}
                key, val = kv
                m[key] = self._value(val, ln, item_indent)
                self._map_into(m, item_indent)
                out.append(m)
            else:
                out.append(self._value(rest, ln, indent + 1))

    def _map(self, indent):
        m = {}
        self._map_into(m, indent)
        return m

    def _map_into(self, m, indent):
        while True:
            ln = self._peek()
            if ln is None or ln.indent < indent:
                return
            if ln.indent > indent:
                raise ValueError("line %d: unexpected indentation" % ln.no)
            if ln.text.startswith("- "):
                return
            kv = _split_key(ln.text, ln.no)
            if not kv:
                raise ValueError("line %d: expected \"key: value\", got %r" % (ln.no, ln.text))
            key, rest = kv
            if key in m:
                raise ValueError("line %d: key %r given twice" % (ln.no, key))
            self.i += 1
            m[key] = self._value(rest, ln, indent)


def load(text):
    return _Parser(text).parse()


def load_file(path):
    with open(path, encoding="utf-8") as f:
        return load(f.read())
