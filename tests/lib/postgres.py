"""postgres -- a throwaway real PostgreSQL 15 for the tests.

    pg = postgres.Postgres().start()
    pg.url                  postgresql://pop3bridge@/pop3bridge?host=SOCKDIR&port=PORT
                            (no password in it; the password is pg.password)
    pg.env()                {"PGPASSWORD": ...} for psql
    pg.sql("SELECT 1")      run SQL through psql, return the rows as lists of strings
    pg.create_db("name")    a new empty database; returns its URL
    pg.stop()               SIGTERM (fast shutdown), then SIGKILL; also at exit

    python3 tests/lib/postgres.py serve      start one, print its URL and
                                             password on stdout (two lines), run
                                             until stdin closes (tests/run-unit)

Debian's postgresql-15 binaries (/usr/lib/postgresql/15/bin): initdb into a
fresh temporary directory, a server listening on a Unix socket in that
directory only (listen_addresses is empty: no TCP at all), on a free port
number (which names the socket).  Run as root, the cluster belongs to
`nobody` (PostgreSQL refuses to run as root) and is started through
runuser.  Logins need a password (scram-sha-256), so the bridge's
password_env / password_file are really used.  fsync is off: the tests
check the bridge's semantics, not the disk's.  The server runs in its own
process group with a parent-death signal, so nothing outlives the run.
"""

import atexit
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
USER = "pop3bridge"
DB = "pop3bridge"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def available():
    return os.access(os.path.join(PG_BIN, "initdb"), os.X_OK)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self):
        self.dir = None
        self.proc = None
        self.port = None
        self.password = secrets.token_hex(16)
        self.url = None
        self._as = []           # runuser prefix when root

    def _run_as(self, argv, **kw):
        return subprocess.run(self._as + argv, check=True, capture_output=True, text=True, **kw)

    def start(self):
        if not available():
            raise RuntimeError("PostgreSQL 15 is not installed (%s/initdb); run make deps" % PG_BIN)
        self.dir = tempfile.mkdtemp(prefix="pop3bridge-pg-")
        os.chmod(self.dir, 0o700)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._as = ["runuser", "-u", "nobody", "--"]
        data = os.path.join(self.dir, "data")
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        os.chmod(pwfile, 0o600)
        if self._as:
            os.chown(pwfile, pwd.getpwnam("nobody").pw_uid, -1)
        self._run_as([os.path.join(PG_BIN, "initdb"), "-D", data, "-U", USER, "-E", "UTF8",
                      "--locale=C", "--auth=scram-sha-256", "--pwfile=" + pwfile, "--no-sync"],
                     cwd=self.dir)
        os.unlink(pwfile)
        for attempt in range(5):
            self.port = _free_port()
            argv = self._as + [os.path.join(PG_BIN, "postgres"), "-D", data,
                               "-k", self.dir, "-p", str(self.port),
                               "-c", "listen_addresses=", "-c", "fsync=off",
                               "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                               "-c", "max_connections=200", "-c", "shared_buffers=64MB",
                               "-c", "logging_collector=off", "-c", "log_min_messages=warning"]
            if shutil.which("setpriv"):
                argv = ["setpriv", "--pdeathsig", "TERM", "--"] + argv
            self._log = open(os.path.join(self.dir, "postgres.log"), "ab")
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=self._log, start_new_session=True, cwd=self.dir)
            atexit.register(self.stop)
            deadline = time.monotonic() + START_TIMEOUT
            ready = False
            while time.monotonic() < deadline and not ready:
                if self.proc.poll() is not None:
                    break
                if os.path.exists(os.path.join(self.dir, ".s.PGSQL.%d" % self.port)):
                    try:
                        self.sql("SELECT 1", db="postgres")
                        ready = True
                        break
                    except subprocess.CalledProcessError:
                        pass
                time.sleep(0.05)
            if ready:
                break
            if self.proc.poll() is None:
                raise RuntimeError("postgres did not answer within %ss: %s"
                                   % (START_TIMEOUT, self.log()[-2000:]))
            self._log.close()
            if attempt == 4:
                raise RuntimeError("postgres did not start: %s" % self.log()[-2000:])
        self.sql("CREATE DATABASE %s" % DB, db="postgres")
        self.url = self.db_url(DB)
        return self

    def db_url(self, db):
        return "postgresql://%s@/%s?host=%s&port=%d" % (USER, db, self.dir, self.port)

    def create_db(self, name):
        self.sql("CREATE DATABASE %s" % name, db="postgres")
        return self.db_url(name)

    def env(self):
        e = dict(os.environ)
        e["PGPASSWORD"] = self.password
        return e

    def sql(self, text, db=DB):
        """Rows of text's last statement, each a list of strings."""
        r = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-F", "\x1f",
                            "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", str(self.port),
                            "-U", USER, "-d", db, "-c", text],
                           check=True, capture_output=True, text=True, env=self.env(), timeout=60)
        return [line.split("\x1f") for line in r.stdout.splitlines() if line != ""]

    def log(self):
        try:
            with open(os.path.join(self.dir, "postgres.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        p, self.proc = self.proc, None
        if p is not None:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT)   # fast shutdown
                    p.wait(STOP_TIMEOUT)
                except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    p.wait(STOP_TIMEOUT)
            self._log.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _serve():
    pg = Postgres().start()
    signal.signal(signal.SIGTERM, lambda *_: (pg.stop(), sys.exit(0)))
    print(pg.url, flush=True)
    print(pg.password, flush=True)
    try:
        sys.stdin.read()
    finally:
        pg.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        _serve()
    else:
        sys.exit("usage: postgres.py serve")
