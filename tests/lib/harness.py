"""harness -- shared state and helpers of the integration tests.

The integration tests run on pytest; tests/integration/conftest.py sets the
run directory and the current test, and turns the time limits into
pytest-timeout's.  Tests use:

    harness.ROOT, harness.binary(), harness.tool(name)
    harness.out_dir()             tests/out/<run>/<module>/<test>/ (created)
    harness.timeout(seconds)      decorator: this test's time limit (else the
                                  module's TIMEOUT, else DEFAULT_TEST_TIMEOUT)
    harness.run_cli(args, ...)    run build/pop3bridge, bounded in time
    harness.write_private(path, text)   a configuration or secret file, mode 0600
    harness.write_config(path, cfg)     the dict cfg as JSON, mode 0600
    harness.check_failure(r, code, prefix)   exit code + the one stderr line
    harness.register_cleanup(fn)  called when the module's tests are done (and
                                  at exit), also after a failure or a timeout
    harness.report(line)          a line printed at the end of the run, also when
                                  the test passes (a soak's or a bench's summary)

Everything here is Python 3 standard library only.
"""

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def schema_version():
    """The newest store schema this build knows (STORE_SCHEMA_VERSION in include/store.h)."""
    with open(os.path.join(ROOT, "include", "store.h")) as f:
        m = re.search(r"#define STORE_SCHEMA_VERSION (\d+)", f.read())
    if not m:
        raise AssertionError("no STORE_SCHEMA_VERSION in include/store.h")
    return int(m.group(1))

DEFAULT_TEST_TIMEOUT = 60     # seconds, per test, unless @timeout(...) says otherwise
DEFAULT_CLI_TIMEOUT = 60      # seconds, one pop3bridge run

_state = {"run_dir": None, "module": None, "test": None}


def set_run_dir(path):
    _state["run_dir"] = path


def run_dir():
    if _state["run_dir"] is None:
        # used outside the runner (e.g. an interactive check)
        _state["run_dir"] = os.path.join(ROOT, "tests", "out", "adhoc-%d" % os.getpid())
    os.makedirs(_state["run_dir"], exist_ok=True)
    return _state["run_dir"]


def write_private(path, data):
    """Write a configuration or secret file (str or bytes) readable by its
    owner only, 0600 whatever the umask: the bridge refuses one that other
    users can read (include/perms.h)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def write_config(path, cfg, indent=None):
    """The configuration dict cfg as a JSON file of mode 0600."""
    write_private(path, json.dumps(cfg, indent=indent))


def set_current(module, test):
    _state["module"] = module
    _state["test"] = test


def out_dir(*sub):
    """A directory for the current test's outputs (removed when the whole run
    passes, kept for inspection otherwise)."""
    parts = [run_dir(), _state["module"] or "misc"]
    if _state["test"]:
        parts.append(_state["test"])
    parts.extend(sub)
    d = os.path.join(*parts)
    os.makedirs(d, exist_ok=True)
    return d


def timeout(seconds):
    """Decorator: the test is stopped after `seconds` (pytest-timeout raises
    pytest's Failed in it, a BaseException that a test's own
    `except Exception` cannot swallow)."""
    def mark(fn):
        fn.timeout = seconds
        return fn
    return mark


# ---- lines for the end of the run -----------------------------------------------

_report = []


def report(line):
    """Keep `line` for the end of the run's output (conftest prints it, passed
    or not) and print it now (shown with the test's output on a failure)."""
    _report.append(line)
    print(line, flush=True)


def report_lines():
    return list(_report)


# ---- cleanup that survives failures, timeouts and signals -------------------

_cleanups = []


def register_cleanup(fn):
    _cleanups.append(fn)
    return fn


def unregister_cleanup(fn):
    try:
        _cleanups.remove(fn)
    except ValueError:
        pass


def run_cleanups():
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except BaseException as exc:  # cleanup must go on with the rest
            print("cleanup %r failed: %s" % (fn, exc), file=sys.stderr)


atexit.register(run_cleanups)


def _terminate(signum, _frame):
    # turn SIGTERM/SIGHUP into a normal exit so atexit handlers run
    raise SystemExit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        signal.signal(_sig, _terminate)
    except (ValueError, OSError):  # not the main thread
        pass


# ---- binaries under test -----------------------------------------------------

def binary():
    b = os.environ.get("POP3BRIDGE") or os.path.join(ROOT, "build", "pop3bridge")
    return os.path.abspath(b)


def tool(name):
    return os.path.join(ROOT, "build", "tools", name)


class Result:
    """Outcome of one pop3bridge run."""

    def __init__(self, args, code, stdout, stderr, elapsed):
        self.args = args
        self.code = code
        self.stdout = stdout        # str (UTF-8, invalid bytes replaced)
        self.stderr = stderr
        self.elapsed = elapsed      # seconds

    def describe(self):
        def clip(s, n=1500):
            return s if len(s) <= n else s[:n] + "...[%d more chars]" % (len(s) - n)
        return "exit %s after %.1fs; args %s; stdout %r; stderr %r" % (
            self.code, self.elapsed, self.args, clip(self.stdout), clip(self.stderr))

    def json(self):
        import json
        try:
            return json.loads(self.stdout)
        except ValueError as exc:
            raise AssertionError("stdout is not one JSON object (%s): %s" % (exc, self.describe()))


def run_cli(args, password=None, env=None, timeout=DEFAULT_CLI_TIMEOUT, stdin_data=None):
    """Run pop3bridge with args (list).  password goes into POP3BRIDGE_PASSWORD
    (unless None).  Never raises on a non-zero exit; raises AssertionError if
    the binary is missing or does not finish within timeout (it is killed)."""
    exe = binary()
    if not os.access(exe, os.X_OK):
        raise AssertionError("binary under test not found: %s (run `make`, or set POP3BRIDGE)" % exe)
    e = {k: v for k, v in os.environ.items() if not k.startswith("POP3BRIDGE_")}
    e["LC_ALL"] = "C"
    if password is not None:
        e["POP3BRIDGE_PASSWORD"] = password
    if env:
        e.update(env)
    argv = [exe] + [str(a) for a in args]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=ROOT,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=stdin_data, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p)
        out, err = p.communicate()
        raise AssertionError("pop3bridge did not finish within %ss: %s; stderr %r" % (
            timeout, argv, err.decode("utf-8", "replace")[-1500:]))
    except BaseException:
        _kill_group(p)
        p.communicate()
        raise
    elapsed = time.monotonic() - t0
    r = Result(argv[1:], p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
               elapsed)
    _log_run(r)
    return r


def _kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.kill()
    except ProcessLookupError:
        pass


def _log_run(r):
    try:
        with open(os.path.join(out_dir(), "cli.log"), "a", encoding="utf-8") as f:
            f.write("$ pop3bridge %s\n[exit %s, %.2fs]\n--- stdout\n%s\n--- stderr\n%s\n\n" % (
                " ".join(r.args), r.code, r.elapsed, r.stdout, r.stderr))
    except OSError:
        pass


# ---- assertions ---------------------------------------------------------------

def check_ok(r):
    if r.code != 0:
        raise AssertionError("expected exit 0: " + r.describe())
    return r


def check_failure(r, codes, pattern=None):
    """A failed run: exit code in codes (int or tuple), exactly one line on
    stderr, starting 'pop3bridge: ', matching regex pattern (searched, case
    sensitive) if given.  Returns that line."""
    if isinstance(codes, int):
        codes = (codes,)
    if r.code not in codes:
        raise AssertionError("expected exit %s: %s" % (" or ".join(map(str, codes)), r.describe()))
    lines = r.stderr.splitlines()
    if len(lines) != 1:
        raise AssertionError("expected exactly one line on stderr, got %d: %s" % (len(lines), r.describe()))
    line = lines[0]
    if not line.startswith("pop3bridge: "):
        raise AssertionError("stderr line does not start with 'pop3bridge: ': %r" % line)
    if pattern is not None and not re.search(pattern, line):
        raise AssertionError("stderr line %r does not match /%s/" % (line, pattern))
    return line


def check_no_secret(r, *secrets):
    """None of the secrets (str or bytes forms) appear on stdout or stderr."""
    for s in secrets:
        if not s:
            continue
        for name, text in (("stdout", r.stdout), ("stderr", r.stderr)):
            if s in text:
                raise AssertionError("secret %r appears on %s: %s" % (s[:4] + "...", name, r.describe()))


def eq(actual, expected, what):
    if actual != expected:
        raise AssertionError("%s: expected %r, got %r" % (what, expected, actual))


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)
