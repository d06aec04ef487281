"""connect_proxy -- a real HTTP CONNECT proxy (RFC 9110 section 9.3.6) for
tests, in the test process.

    p = ConnectProxy().start()
    p.url                 "http://127.0.0.1:PORT"
    p.tunnels             [Tunnel]: target ("127.0.0.1:443"), up/down byte counts,
                          saw_plain_post (the client sent "POST " in clear inside)
    p.refused             requests that were not CONNECT, or to a non-loopback target
    p.stop()

It reads the request head (at most HEAD_MAX bytes), answers CONNECT to a
127.0.0.0/8 target with 200 and then relays bytes both ways until either side
closes or IDLE_S passes without traffic; anything else gets 405 or 403.  Each
tunnel runs in its own thread.  Python 3 standard library only.
"""

import ipaddress
import select
import socket
import threading

import harness

HEAD_MAX = 8192
IDLE_S = 30.0
CHUNK = 65536


class Tunnel:
    def __init__(self, target):
        self.target = target
        self.up = 0
        self.down = 0
        self.saw_plain_post = False


class ConnectProxy:
    def __init__(self):
        self.sock = None
        self.port = None
        self.tunnels = []
        self.refused = []
        self.lock = threading.Lock()
        self.stopping = False

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        harness.register_cleanup(self.stop)
        return self

    def stop(self):
        harness.unregister_cleanup(self.stop)
        self.stopping = True
        if self.sock:
            self.sock.close()
            self.sock = None

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _refuse(self, c, code, why):
        with self.lock:
            self.refused.append(why)
        c.sendall(b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (
            code, b"Forbidden" if code == 403 else b"Method Not Allowed"))
        c.close()

    def _serve(self, c):
        c.settimeout(IDLE_S)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                d = c.recv(1024)
                if not d or len(head) + len(d) > HEAD_MAX:
                    c.close()
                    return
                head += d
        except OSError:
            c.close()
            return
        head, _, rest = head.partition(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "CONNECT":
            return self._refuse(c, 405, "not CONNECT: %s" % parts[0])
        host, _, port = parts[1].rpartition(":")
        try:
            if not ipaddress.ip_address(host.strip("[]")).is_loopback:
                raise ValueError
            port = int(port)
        except ValueError:
            return self._refuse(c, 403, "target not on loopback: %s" % parts[1])
        try:
            up = socket.create_connection((host.strip("[]"), port), timeout=10)
        except OSError:
            c.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            c.close()
            return
        t = Tunnel(parts[1])
        with self.lock:
            self.tunnels.append(t)
        c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            up.sendall(rest)
            t.up += len(rest)
        self._relay(c, up, t)

    def _relay(self, c, up, t):
        socks = [c, up]
        try:
            while not self.stopping:
                r, _, _ = select.select(socks, [], [], IDLE_S)
                if not r:
                    break
                done = False
                for s in r:
                    d = s.recv(CHUNK)
                    if not d:
                        done = True
                        break
                    if s is c:
                        if d.startswith(b"POST ") or b"\r\nPOST " in d:
                            t.saw_plain_post = True
                        up.sendall(d)
                        t.up += len(d)
                    else:
                        c.sendall(d)
                        t.down += len(d)
                if done:
                    break
        except OSError:
            pass
        finally:
            c.close()
            up.close()
