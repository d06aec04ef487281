"""scripted_server -- a fake POP3 server that follows a script, for the
misbehaviour no real server produces.

    from scripted_server import ScriptedServer, send, expect, ...
    srv = ScriptedServer([
        send(b"+OK hi\\r\\n"),
        expect(r"CAPA", b"+OK\\r\\nUSER\\r\\n.\\r\\n"),
        expect(r"USER alice", b"+OK\\r\\n"),
        close(),
    ], tls=True).start()
    ... run the client against 127.0.0.1:srv.port ...
    srv.wait()                       # bounded; the server always ends
    srv.commands                     # ["CAPA", "USER alice", ...] as received
    srv.errors                       # script mismatches ([] if it went as planned)

Steps (plain tuples, made by the functions below):
    send(data)                 send bytes
    expect(regex, reply=None)  read one command line (CRLF or LF ended), which
                               must fully match regex (str, latin-1 decoded);
                               then send reply (bytes) if given.  A mismatch is
                               recorded in errors and ends the script.
    expect_batch(regexes, within=3.0)
                               read len(regexes) lines before replying to any
                               (a client that does not pipeline never sends
                               them: recorded as an error after `within`)
    expect_alone(regex, reply=None, quiet=0.3)
                               like expect, and the client must then send
                               nothing more for `quiet` s before the reply
                               (it does not pipeline)
    respond(rules, until=None, count=None, max_lines=100)
                               a tiny POP3 responder: answer each line with the
                               reply of the first (regex, reply) rule matching,
                               until a line matches `until` (answered too) or
                               `count` lines were answered; alone=S: each
                               command must come alone (as expect_alone)
    drip(data, delay)          send one byte at a time, `delay` seconds apart;
                               stops early if the client closes
    flood(line, count)         send line count times (large blocks)
    sleep(seconds)             wait (stops early if the client closes)
    starttls()                 upgrade the connection (server side of STLS)
    close()                    close the connection now
    call(fn)                   fn(server) does its own exchange with
                               server.read_line(within) and server.write(data);
                               it may raise AssertionError (recorded in errors)

After the last step the server keeps reading what the client still sends for
up to `linger` seconds, until it closes, so `commands` shows everything,
e.g. whether QUIT came last.  The whole session is bounded by `timeout`.

port=P listens on a given port (e.g. the one an earlier server had: a client
may key what it remembers by host and port).

TLS uses the harness PKI (pki.py): the good server certificate by default.
"""

import re
import select
import socket
import ssl
import threading
import time

import harness
import pki as pkimod

LINE_MAX = 1 << 20          # longest client line the server accepts


def send(data):
    return ("send", data)


def expect(regex, reply=None):
    return ("expect", regex, reply)


def expect_batch(regexes, within=3.0):
    return ("expect_batch", list(regexes), within)


def respond(rules, until=None, count=None, max_lines=100, alone=0):
    return ("respond", list(rules), until, count, max_lines, alone)


def expect_alone(regex, reply=None, quiet=0.3):
    return ("expect_alone", regex, reply, quiet)


def drip(data, delay):
    return ("drip", data, delay)


def flood(line, count):
    return ("flood", line, count)


def sleep(seconds):
    return ("sleep", seconds)


def starttls():
    return ("starttls",)


def close():
    return ("close",)


def call(fn):
    return ("call", fn)


class _ClientClosed(Exception):
    pass


class _ScriptError(Exception):
    pass


class _ServerClosed(Exception):
    pass


class ScriptedServer:
    def __init__(self, script, tls=False, cert=None, key=None, timeout=30.0, linger=3.0, port=0):
        self.script = list(script)
        self.tls = tls                  # True: implicit TLS from the first byte
        p = pkimod.get()
        self.cert = cert or p.server_cert
        self.key = key or p.server_key
        self.timeout = timeout
        self.linger = linger
        self.port = port                # 0: an ephemeral port
        self.commands = []              # client lines, str (latin-1), without line ending
        self.raw = bytearray()          # every byte the client sent (after TLS)
        self.sent = bytearray()         # every byte the server sent
        self.errors = []                # script mismatches
        self.events = []                # ("accept"|"closed by client"|..., time)
        self.client_closed = False
        self.accepted = False
        self._buf = b""
        self._lsock = None
        self._conn = None
        self._thread = None
        self._deadline = None
        self._stop = threading.Event()

    # ---- control ------------------------------------------------------------

    def start(self):
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", self.port))
        self._lsock.listen(4)
        self.port = self._lsock.getsockname()[1]
        self._deadline = time.monotonic() + self.timeout
        self._thread = threading.Thread(target=self._run, name="scripted-pop3-%d" % self.port, daemon=True)
        self._thread.start()
        harness.register_cleanup(self.stop)
        return self

    def wait(self, timeout=None):
        """Wait for the session to end (bounded by the server's own timeout)."""
        limit = self.timeout + 5 if timeout is None else timeout
        self._thread.join(limit)
        if self._thread.is_alive():
            self.stop()
            self._thread.join(5)
            raise AssertionError("scripted server still running after %ss" % limit)
        harness.unregister_cleanup(self.stop)
        return self

    def stop(self):
        self._stop.set()
        for s in (self._conn, self._lsock):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    def check_script(self):
        if self.errors:
            raise AssertionError("scripted server: %s; commands %r" % ("; ".join(self.errors), self.commands))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self._thread is not None:
            self._thread.join(5)

    # ---- the session ------------------------------------------------------------

    def _remaining(self):
        r = self._deadline - time.monotonic()
        if r <= 0 or self._stop.is_set():
            raise _ScriptError("overall timeout (%ss) reached" % self.timeout)
        return r

    def _run(self):
        try:
            self._lsock.settimeout(self._remaining())
            try:
                conn, _ = self._lsock.accept()
            except (socket.timeout, OSError):
                self.errors.append("no client connected")
                return
            self.accepted = True
            self.events.append(("accept", time.monotonic()))
            self._conn = conn
            if self.tls:
                self._wrap_tls()
            for step in self.script:
                getattr(self, "_step_" + step[0])(*step[1:])
            self._drain(self.linger)
        except _ClientClosed:
            self._take_lines()
            self.client_closed = True
            self.events.append(("closed by client", time.monotonic()))
        except _ServerClosed:
            pass
        except _ScriptError as exc:
            self.errors.append(str(exc))
        except (ssl.SSLError, OSError) as exc:
            if self._stop.is_set():
                return
            self.client_closed = True
            self.events.append(("connection error: %s" % exc, time.monotonic()))
        finally:
            self.stop()

    def _wrap_tls(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        self._conn.settimeout(self._remaining())
        try:
            self._conn = ctx.wrap_socket(self._conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.events.append(("TLS handshake failed: %s" % exc, time.monotonic()))
            raise _ClientClosed()

    def _send(self, data):
        self._conn.settimeout(self._remaining())
        try:
            self._conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            raise _ClientClosed()
        self.sent += data

    def _fill(self, deadline):
        """Read more into the buffer; False on timeout."""
        wait = min(deadline - time.monotonic(), self._remaining())
        if wait <= 0:
            return False
        self._conn.settimeout(wait)
        try:
            data = self._conn.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError):
            raise _ClientClosed()
        if not data:
            raise _ClientClosed()
        self.raw += data
        self._buf += data
        return True

    def _line(self, within=None):
        """Next client line (str), or None if none came within `within` s."""
        deadline = time.monotonic() + (within if within is not None else self.timeout)
        while b"\n" not in self._buf:
            if len(self._buf) > LINE_MAX:
                raise _ScriptError("client line longer than %d bytes" % LINE_MAX)
            if not self._fill(deadline):
                return None
        line, self._buf = self._buf.split(b"\n", 1)
        if line.endswith(b"\r"):
            line = line[:-1]
        s = line.decode("latin-1")
        self.commands.append(s)
        return s

    def _client_gone(self, wait):
        """Wait up to `wait` s for the client; True if it closed meanwhile.
        Whatever it sends is buffered for the following steps."""
        buffered = isinstance(self._conn, ssl.SSLSocket) and self._conn.pending() > 0
        if not buffered:
            r, _, _ = select.select([self._conn], [], [], max(0.0, wait))
            if not r:
                return False
        try:
            self._conn.settimeout(1.0)
            data = self._conn.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            return True
        if not data:
            return True
        self.raw += data
        self._buf += data
        return False

    def _take_lines(self):
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self.commands.append(line.rstrip(b"\r").decode("latin-1"))

    # ---- steps --------------------------------------------------------------------

    def _step_send(self, data):
        self._send(data)

    def _step_expect(self, regex, reply):
        line = self._line()
        if line is None:
            raise _ScriptError("expected a line matching /%s/, got nothing" % regex)
        if not re.fullmatch(regex, line):
            raise _ScriptError("expected a line matching /%s/, got %r" % (regex, line))
        if reply is not None:
            self._send(reply)

    def _step_expect_batch(self, regexes, within):
        deadline = time.monotonic() + within
        for rx in regexes:
            line = self._line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise _ScriptError("expected /%s/ pipelined within %ss, nothing came (got %r)"
                                   % (rx, within, self.commands[-3:]))
            if not re.fullmatch(rx, line):
                raise _ScriptError("expected a line matching /%s/, got %r" % (rx, line))

    def _step_expect_alone(self, regex, reply, quiet):
        self._step_expect(regex, None)
        self._check_alone(quiet)
        if reply is not None:
            self._send(reply)

    def _check_alone(self, quiet):
        end = time.monotonic() + quiet
        while not self._buf and time.monotonic() < end:
            if self._client_gone(end - time.monotonic()):
                raise _ClientClosed()
        if self._buf:
            raise _ScriptError("client sent %r after %r without waiting for the reply (pipelined)"
                               % (bytes(self._buf[:80]), self.commands[-1]))

    def _step_respond(self, rules, until, count, max_lines, alone):
        for i in range(count or max_lines):
            line = self._line()
            if line is None:
                raise _ScriptError("responder: no command came")
            if alone:
                self._check_alone(alone)
            for rx, reply in rules:
                if re.fullmatch(rx, line):
                    self._send(reply)
                    break
            else:
                self._send(b"-ERR unexpected command\r\n")
                raise _ScriptError("responder: unexpected command %r" % line)
            if until is not None and re.fullmatch(until, line):
                return
        if count is None:
            raise _ScriptError("responder: more than %d commands" % max_lines)

    def _step_drip(self, data, delay):
        for i in range(len(data)):
            self._remaining()
            self._send(data[i:i + 1])
            if self._client_gone(delay):
                raise _ClientClosed()

    def _step_flood(self, line, count):
        block = line * max(1, 65536 // max(1, len(line)))
        per = 65536 // max(1, len(line)) or 1
        left = count
        while left > 0:
            n = min(left, per)
            self._send(block if n == per else line * n)
            left -= n

    def _step_sleep(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._remaining()
            if self._client_gone(min(0.2, end - time.monotonic())):
                raise _ClientClosed()

    def _step_starttls(self):
        if self._buf:
            raise _ScriptError("client sent data before the TLS handshake: %r" % self._buf[:80])
        self._wrap_tls()

    def _step_call(self, fn):
        try:
            fn(self)
        except AssertionError as exc:
            raise _ScriptError("call step: %s" % exc)

    def read_line(self, within=None):
        """For call steps: the next client line (str), or None on timeout."""
        return self._line(within)

    def write(self, data):
        """For call steps: send bytes."""
        self._send(data)

    def _step_close(self):
        try:
            self._conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._conn.close()
        self.events.append(("closed by server", time.monotonic()))
        raise _ServerClosed()  # the script ends here; not an error

    def _drain(self, linger):
        end = time.monotonic() + linger
        try:
            while time.monotonic() < end:
                if self._client_gone(min(0.2, end - time.monotonic())):
                    self.client_closed = True
                    return
        finally:
            self._take_lines()
