"""dovecot -- a throwaway real Dovecot POP3 server for the integration tests.

    dc = dovecot.Dovecot().start()      # or Dovecot(cert="wrong"), Dovecot(ports=(plain, tls))
    Dovecot(oauth2=INTROSPECTION_URL)   also XOAUTH2 and OAUTHBEARER, checked by a
                                        passdb oauth2 against that RFC 7662 endpoint
                                        (https, the test CA) at every login
    dc.port, dc.tls_port                plain POP3 (STLS advertised) / implicit TLS
    dc.add_user("alice", "secret")      passwd-file, {PLAIN} so every mechanism works
                                        (users are new: no password changes)
    Dovecot(passdb_scheme="SCRAM-SHA-256")  stores SCRAM-SHA-256 credentials instead
                                        (as `doveadm pw -s SCRAM-SHA-256` makes them:
                                        a fixed salt per user, as a production server
                                        set up for SCRAM has); then only PLAIN, LOGIN
                                        and SCRAM-SHA-256 work
    dc.deliver("alice", data, "new")    write one message file (LF line endings)
    dc.messages("alice")                what Dovecot holds, in UID order
    dc.expected_listing("alice")        [(number, uidl, size)] as POP3 shows them
    dc.log_mark(); dc.log_since(mark)   Dovecot's log
    dc.restart(down=0.5)                stop (open sessions die) and start again on the
                                        same ports, users and mail, `down` s later
    dc.stop()                           SIGTERM, then SIGKILL; also at exit

Everything lives in a fresh temporary directory (world-searchable, because
Dovecot's mail processes must reach the Maildirs): its own config, base_dir,
logs, passwd-file and Maildirs; /etc/dovecot is never read.  Ports are free
ephemeral ports on 127.0.0.1 (and ::1 if the machine has it), so several
instances can run at once.  Run as
root, the mail belongs to `nobody` (Dovecot refuses uid 0 for mail access).

The master runs in the foreground (-F) in its own process group, with a
parent-death signal, so no process outlives the test run.
"""

import base64
import hashlib
import hmac
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import harness
import pki as pkimod

DOVECOT = os.environ.get("DOVECOT", "/usr/sbin/dovecot")
MECHANISMS = "plain login cram-md5 scram-sha-1 scram-sha-256 apop"
GREETING = "pop3bridge test server ready."
START_TIMEOUT = 20.0
STOP_GRACE = 2.0       # SIGTERM, then SIGKILL for the whole process group
STOP_TIMEOUT = 5.0
PASSDB_SCHEMES = ("PLAIN", "SCRAM-SHA-256")
SCRAM_ITERATIONS = 4096    # Dovecot's default for SCRAM-SHA-256 credentials


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port(ipv6=False):
    """An ephemeral port that is free on 127.0.0.1 (and ::1) right now."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not ipv6:
                return port
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


def port_answers(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_group_members(pgid):
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces/parentheses: fields after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def scram_sha256_credentials(password, salt=None, iterations=SCRAM_ITERATIONS):
    """Stored SCRAM-SHA-256 credentials (RFC 5802 section 3, RFC 7677) in
    Dovecot's passdb form, the same as `doveadm pw -s SCRAM-SHA-256` prints
    ({SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey, base64), without a
    doveadm process per user (0.4 s each)."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return "{SCRAM-SHA-256}%d,%s,%s,%s" % (iterations, b64(salt), b64(stored_key),
                                            b64(server_key))


class Message:
    """One message file of a Maildir."""

    def __init__(self, uid, base, path):
        self.uid = uid          # None if Dovecot has not assigned one yet
        self.base = base        # file name without the ":2,..." info part
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()

    @property
    def pop3_size(self):
        """The size POP3 reports: LF line endings become CRLF."""
        return len(self.data) + self.data.count(b"\n") - self.data.count(b"\r\n")


class Dovecot:
    def __init__(self, cert="server", mechanisms=MECHANISMS, name="dovecot", ports=None,
                 oauth2=None, login_processes="secure", passdb_scheme="PLAIN"):
        # "secure": one login process per connection (Dovecot's default);
        # "performance": a few long-lived login processes serve every
        # connection (for many short sessions, e.g. hundreds of accounts);
        # "single": one long-lived login process serves every connection, so
        # every connection meets the same TLS ticket keys (TLS resumption)
        self.login_processes = login_processes
        if passdb_scheme not in PASSDB_SCHEMES:
            raise ValueError("passdb_scheme must be one of %s" % ", ".join(PASSDB_SCHEMES))
        self.passdb_scheme = passdb_scheme
        self.oauth2 = oauth2        # introspection URL: XOAUTH2/OAUTHBEARER through passdb oauth2
        self.cert = cert            # "server" (good) or "wrong" (name mismatch)
        self.fixed_ports = ports    # (plain, tls) to listen on instead of free ephemeral ones
        self.mechanisms = mechanisms
        self.name = name
        self.pki = pkimod.get()
        self.dir = None
        self.proc = None
        self.port = None
        self.tls_port = None
        self.users = {}
        self._seq = 0
        # also on ::1 when the machine has it, so "localhost" works whichever
        # address it resolves to first
        self.ipv6 = has_ipv6_loopback()
        if os.geteuid() == 0:
            pw = pwd.getpwnam(os.environ.get("POP3BRIDGE_TEST_MAIL_USER", "nobody"))
            self.mail_uid, self.mail_gid = pw.pw_uid, pw.pw_gid
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()

    # ---- life cycle ---------------------------------------------------------

    def start(self):
        if not os.access(DOVECOT, os.X_OK):
            raise RuntimeError("dovecot not found at %s (install dovecot-core dovecot-pop3d)" % DOVECOT)
        if not os.path.exists("/usr/lib/dovecot/pop3"):
            raise RuntimeError("dovecot's pop3 service is missing (install dovecot-pop3d)")
        self.dir = tempfile.mkdtemp(prefix="p3b-dc-")
        os.chmod(self.dir, 0o755)
        harness.register_cleanup(self.stop)
        for sub in ("run", "state", "log", "auth", "mail"):
            os.makedirs(os.path.join(self.dir, sub))
        os.chown(os.path.join(self.dir, "mail"), self.mail_uid, self.mail_gid)
        self.log_path = os.path.join(self.dir, "log", "dovecot.log")
        self.passwd_dir = os.path.join(self.dir, "auth")
        last = None
        for _attempt in range(3):  # a port may be taken between probe and bind
            if self.fixed_ports:
                self.port, self.tls_port = self.fixed_ports
            else:
                self.port, self.tls_port = free_port(self.ipv6), free_port(self.ipv6)
            if self.port == self.tls_port:
                continue
            try:
                self._spawn()
                return self
            except RuntimeError as exc:
                last = exc
                self._kill()
                if self.ipv6:
                    self.ipv6 = False   # ::1 exists but Dovecot cannot use it: 127.0.0.1 only
                    continue
                if "in use" not in str(exc) or self.fixed_ports:
                    break
        self.stop()
        raise last

    def _config(self):
        root = os.geteuid() == 0
        if root:
            for u in ("dovecot", "dovenull"):
                pwd.getpwnam(u)  # KeyError: dovecot-core is not installed properly
            users = "default_internal_user = dovecot\ndefault_internal_group = dovecot\n" \
                    "default_login_user = dovenull\n"
            chroot = ""
        else:
            me, mygroup = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
            users = "default_internal_user = %s\ndefault_internal_group = %s\ndefault_login_user = %s\n" % (
                me, mygroup, me)
            chroot = "  chroot =\n"
        cert, key = {"server": (self.pki.server_cert, self.pki.server_key),
                     "wrong": (self.pki.wrong_cert, self.pki.wrong_key)}[self.cert]
        d = self.dir
        mechs, oauth2_passdb = self.mechanisms, ""
        if self.oauth2:
            # a token is good only while the authorization server says it is
            # active: introspection at every login, nothing cached
            ext = os.path.join(d, "oauth2.conf.ext")
            with open(ext, "w") as f:
                f.write("introspection_mode = post\n"
                        "introspection_url = %s\n"
                        "force_introspection = yes\n"
                        "username_attribute = username\n"
                        "active_attribute = active\n"
                        "active_value = true\n"
                        "tls_ca_cert_file = %s\n" % (self.oauth2, self.pki.ca))
            os.chmod(ext, 0o644)
            mechs += " xoauth2 oauthbearer"
            oauth2_passdb = ("passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                             "  args = %s\n}\n" % ext)
        return """# generated by tests/lib/dovecot.py for one test run
base_dir = {d}/run
state_dir = {d}/state
instance_name = p3btest-{inst}
protocols = pop3
listen = {listen}
log_path = {d}/log/dovecot.log
info_log_path = {d}/log/dovecot.log
debug_log_path = {d}/log/dovecot.log
login_greeting = {greeting}
{users}first_valid_uid = {uid}
first_valid_gid = {gid}
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_dh = <{dh}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = {mechs}
auth_verbose = yes
auth_debug = yes
# failed logins are part of the tests: no delay, no per-IP penalty (which
# would slow down every later login from 127.0.0.1)
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/auth/%u
}}
{oauth2_passdb}userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}
mail_location = maildir:~/Maildir
pop3_no_flag_updates = yes
pop3_uidl_format = %08Xu%08Xv
pop3_logout_format = top=%t/%p, retr=%r/%b, del=%d/%m, size=%s
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = {tls_port}
    ssl = yes
  }}
{login}{chroot}}}
{pop3_service}service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{anvil}}}
""".format(d=d, listen="127.0.0.1, ::1" if self.ipv6 else "127.0.0.1", inst=os.path.basename(d), greeting=GREETING, users=users, uid=self.mail_uid,
                  gid=self.mail_gid, cert=cert, key=key, dh=self.pki.dh, mechs=mechs,
                  oauth2_passdb=oauth2_passdb,
                  port=self.port, tls_port=self.tls_port, chroot=chroot,
                  login={"performance": "  service_count = 0\n  process_min_avail = 2\n",
                         "single": "  service_count = 0\n  process_min_avail = 1\n"
                                   "  process_limit = 1\n"}.get(self.login_processes, ""),
                  pop3_service="service pop3 {{\n  service_count = 1000\n  process_min_avail = 8\n}}\n"
                  .format() if self.login_processes in ("performance", "single") else "",
                  anvil="" if root else "  chroot =\n")

    def _spawn(self):
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(self._config())
        argv = [DOVECOT, "-F", "-c", conf]
        if shutil.which("setpriv"):
            # the master gets SIGTERM if the test runner dies, even by SIGKILL
            argv = ["setpriv", "--pdeathsig", "TERM", "--"] + argv
        self._stderr = open(os.path.join(self.dir, "log", "dovecot-stderr.log"), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=self._stderr, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("dovecot exited with %s at start-up: %s" % (
                    self.proc.returncode, self._start_failure()))
            if port_answers(self.port) and port_answers(self.tls_port) and self._greets():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError("dovecot did not answer on 127.0.0.1:%d/%d within %ss: %s" % (
                    self.port, self.tls_port, START_TIMEOUT, self._start_failure()))
            time.sleep(0.05)

    def _greets(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(512).startswith(b"+OK")
        except OSError:
            return False

    def _start_failure(self):
        text = ""
        for f in ("dovecot-stderr.log", "dovecot.log"):
            try:
                with open(os.path.join(self.dir, "log", f), errors="replace") as fh:
                    text += fh.read()[-2000:]
            except OSError:
                pass
        if "Address already in use" in text:
            text += " (address in use)"
        return text.strip() or "(no log output)"

    def _kill(self):
        """Stop the master and everything in its process group."""
        p = self.proc
        if p is None:
            return
        self.proc = None
        pgid = p.pid  # start_new_session: the group is the master's pid
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            members = _proc_group_members(pgid)
            if not members:
                break
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        try:
            p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        if self._stderr:
            self._stderr.close()
            self._stderr = None

    def stop(self, keep_log_in=None):
        """Stop Dovecot and remove its directory.  The log is copied into the
        run's output directory first (removed later if the run passes)."""
        harness.unregister_cleanup(self.stop)
        self._kill()
        if self.dir and os.path.isdir(self.dir):
            try:
                dest = keep_log_in or harness.out_dir()
                shutil.copy(self.log_path, os.path.join(dest, "%s-%d.log" % (self.name, self.port or 0)))
            except OSError:
                pass
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def restart(self, down=0.0):
        """Stop the server as stop() does (SIGTERM, then SIGKILL for what is
        left, open sessions included) and start it again after `down`
        seconds on the same ports, with the same users, mail and UIDs."""
        if self.dir is None:
            raise RuntimeError("dovecot %s was never started" % self.name)
        self._kill()
        if down > 0:
            time.sleep(down)
        last = None
        for _attempt in range(3):  # a port may still be held a moment after the kill
            try:
                self._spawn()
                return self
            except RuntimeError as exc:
                last = exc
                self._kill()
                time.sleep(0.5)
        raise last

    # ---- users and mail -----------------------------------------------------

    def _write_passwd(self, user, password):
        # one passwd-file per user: Dovecot re-reads a changed passwd-file at
        # most once a second, but a new file is read on the user's first login
        path = os.path.join(self.passwd_dir, user)
        if self.passdb_scheme == "SCRAM-SHA-256":
            cred = scram_sha256_credentials(password)
        else:
            cred = "{PLAIN}" + password
        with open(path + ".new", "w") as f:
            f.write("%s:%s\n" % (user, cred))
        os.chmod(path + ".new", 0o644)  # read by the unprivileged auth process; test passwords only
        os.rename(path + ".new", path)

    def add_user(self, user, password):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", user) or ":" in password or "\n" in password:
            raise ValueError("unsupported user name or password for passwd-file: %r" % user)
        if user in self.users:
            raise ValueError("user %s exists already" % user)
        self.users[user] = password
        self._write_passwd(user, password)
        md = self.maildir(user)
        for d in (os.path.dirname(md), md) + tuple(os.path.join(md, s) for s in ("cur", "new", "tmp")):
            if not os.path.isdir(d):
                os.mkdir(d, 0o700)
            os.chown(d, self.mail_uid, self.mail_gid)
        return user

    def maildir(self, user):
        return os.path.join(self.dir, "mail", user, "Maildir")

    def deliver(self, user, data, folder="new"):
        """Write one message (bytes) into the user's Maildir new/ or cur/.
        File names sort in delivery order, so Dovecot assigns UIDs in it."""
        if folder not in ("new", "cur"):
            raise ValueError(folder)
        self._seq += 1
        ts = 1700000000 + self._seq
        base = "%d.M%06dP%d.p3btest" % (ts, self._seq, os.getpid())
        name = base + (":2," if folder == "cur" else "")
        md = self.maildir(user)
        tmp = os.path.join(md, "tmp", base)
        with open(tmp, "wb") as f:
            f.write(data)
        os.chown(tmp, self.mail_uid, self.mail_gid)
        os.utime(tmp, (ts, ts))
        os.rename(tmp, os.path.join(md, folder, name))
        return base

    def _uidlist(self, user):
        """(uidvalidity, {base: uid}) from dovecot-uidlist, or (None, {})."""
        path = os.path.join(self.maildir(user), "dovecot-uidlist")
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return None, {}
        if not lines:
            return None, {}
        header = lines[0].split()
        if not header or header[0] != "3":
            raise RuntimeError("unsupported dovecot-uidlist version: %r" % lines[0])
        uidv = None
        for h in header[1:]:
            if h.startswith("V"):
                uidv = int(h[1:])
        uids = {}
        for line in lines[1:]:
            if not line.strip():
                continue
            head, sep, fname = line.partition(":")
            if not sep:
                continue
            uids[fname.split(":")[0]] = int(head.split()[0])
        return uidv, uids

    def messages(self, user):
        """What Dovecot holds for the user: Message objects in UID order
        (files Dovecot has not seen yet come last, in name order)."""
        _, uids = self._uidlist(user)
        out = []
        md = self.maildir(user)
        for folder in ("cur", "new"):
            for name in os.listdir(os.path.join(md, folder)):
                if name.startswith("."):
                    continue
                base = name.split(":")[0]
                out.append(Message(uids.get(base), base, os.path.join(md, folder, name)))
        big = float("inf")
        out.sort(key=lambda m: (m.uid if m.uid is not None else big, m.base))
        return out

    def uidvalidity(self, user):
        return self._uidlist(user)[0]

    def expected_listing(self, user):
        """[(number, uidl, size)] as Dovecot's POP3 presents the mailbox.  The
        mailbox must have been opened once (see pop3.sync) so UIDs exist."""
        uidv, _ = self._uidlist(user)
        msgs = self.messages(user)
        if msgs and (uidv is None or any(m.uid is None for m in msgs)):
            raise RuntimeError("mailbox of %s not synced by Dovecot yet" % user)
        # pop3_uidl_format = %08Xu%08Xv: Dovecot prints %X in lower case
        return [(i + 1, "%08x%08x" % (m.uid, uidv), m.pop3_size) for i, m in enumerate(msgs)]

    # ---- log ------------------------------------------------------------------

    def log_mark(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, mark=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_log(self, pattern, mark=0, timeout=5.0):
        """Wait until the log (after mark) matches regex pattern; returns the match."""
        rx = re.compile(pattern)
        return harness.wait_for(lambda: rx.search(self.log_since(mark)), timeout,
                                what="/%s/ in Dovecot's log" % pattern)
