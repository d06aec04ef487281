"""pytest plumbing of the integration tests.

    tests/integration/run [FILTER...] [pytest options]
    /usr/bin/python3 -m pytest tests/integration [--filter PATTERN] [pytest options]

The test modules are plain: module-level `def test_*():` functions, optional
setup_module() / teardown_module() (once around the module's tests) and
setup_function(fn) / teardown_function(fn) (around each test; pytest passes
the test function, fn.__name__ is its name).  What this file adds:

  - tests/lib on sys.path, so a module imports `harness`, `dovecot`, ...;
  - --filter PATTERN (repeatable): keep the tests whose "module::function"
    name contains PATTERN or matches it as a shell pattern, or whose function
    name matches it (`--filter test_bridge`, `--filter 'test_api::*session*'`);
  - time limits through pytest-timeout: @harness.timeout(S) on a test, else
    the module's TIMEOUT, else harness.DEFAULT_TEST_TIMEOUT (60 s), for the
    test function; the setup phase of a test (which holds setup_module for a
    module's first test) gets the module's SETUP_TIMEOUT (default 180 s) more,
    and its teardown phase (teardown_module after a module's last test) 180 s
    more;
  - teardown_module() runs even when setup_module() failed half-way, and the
    cleanups a module registered with harness.register_cleanup() run after
    it (a module leaves nothing running);
  - the lines a test gave harness.report() are printed at the end, in a
    "reports" section, whether it passed or not;
  - harness.out_dir() is tests/out/<run>/<module>/<test>/ (<module>/ alone in
    setup_module); tests/out/<run>/ is removed when every test passed and kept
    (its path printed) otherwise;
  - a closing line "integration: N passed, N failed, N skipped", and the
    line "<passed> <failed> <skipped> integration<SUITE_TAG>" appended to
    $TEST_RESULTS when that is set (make test adds the suites up).

A failure counts every test that failed or errored in setup or teardown,
and every test module that could not be imported.  POP3BRIDGE names the
binary under test (harness.binary()).
"""

import fnmatch
import os
import shutil
import sys
import time

import pytest
from pytest_timeout import Settings as TimeoutSettings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import harness  # noqa: E402

MODULE_SETUP_TIMEOUT = 180    # setup_module (unless the module's SETUP_TIMEOUT) and teardown_module

_run = {
    "dir": None,               # tests/out/<run>
    "passed": 0, "failed": 0, "skipped": 0,
    "outcome": {},             # nodeid -> the worst outcome of its phases so far
    "ran": False,              # a session ran (not --help, --collect-only, ...)
    "exit": 0,                 # pytest's exit status
    "setup_failed": set(),     # modules whose setup_module raised
}


# ---- options, run directory ---------------------------------------------------------

def pytest_addoption(parser):
    parser.addoption("--filter", action="append", default=[], metavar="PATTERN",
                     help="keep the tests whose 'module::function' name contains PATTERN or matches "
                          "it as a shell pattern, or whose function name matches it (repeatable)")


def pytest_configure(config):
    if config.option.collectonly or getattr(config.option, "help", False):
        return
    os.chdir(ROOT)
    name = "%s-%d" % (time.strftime("%Y%m%d-%H%M%S"), os.getpid())
    _run["dir"] = os.path.join(ROOT, "tests", "out", name)
    os.makedirs(_run["dir"], exist_ok=True)
    harness.set_run_dir(_run["dir"])


# ---- collection: which tests, and their time limits ---------------------------------

def pytest_pycollect_makeitem(collector, name, obj):
    # a test_* function imported from elsewhere is not a test of this module
    if (name.startswith("test_") and callable(obj) and isinstance(collector, pytest.Module)
            and getattr(obj, "__module__", None) not in (None, collector.obj.__name__)):
        return []
    return None


def _selected(full, filters):
    if not filters:
        return True
    func = full.split("::", 1)[1]
    return any(f in full or fnmatch.fnmatchcase(full, f) or fnmatch.fnmatchcase(func, f) for f in filters)


def _limit_of(item):
    """The time limit of the test function itself, in seconds."""
    return getattr(item.function, "timeout",
                   getattr(item.module, "TIMEOUT", harness.DEFAULT_TEST_TIMEOUT))


def pytest_collection_modifyitems(session, config, items):
    filters = config.getoption("filter")
    keep, drop = [], []
    for item in items:
        full = "%s::%s" % (item.module.__name__, item.name)
        (keep if _selected(full, filters) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(_limit_of(item), func_only=True))


# ---- setup and teardown: time limits, current test, cleanups -------------------------

def _phase(item, seconds):
    """Bound a setup or teardown phase with pytest-timeout's own timer."""
    hook = item.config.hook
    hook.pytest_timeout_set_timer(item=item, settings=TimeoutSettings(seconds, "signal", False))
    return lambda: hook.pytest_timeout_cancel_timer(item=item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    cancel = _phase(item, getattr(item.module, "SETUP_TIMEOUT", MODULE_SETUP_TIMEOUT) + _limit_of(item))
    try:
        yield
    finally:
        cancel()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    cancel = _phase(item, MODULE_SETUP_TIMEOUT + _limit_of(item))
    try:
        yield
    finally:
        cancel()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    outcome = yield
    if fixturedef.argname.startswith("_xunit_setup_module_fixture_") and outcome.excinfo is not None:
        _run["setup_failed"].add(request.module.__name__)


@pytest.fixture(scope="module", autouse=True)
def _integration_module(request):
    """Set up before, and torn down after, the module's own setup_module."""
    mod = request.module
    harness.set_current(mod.__name__, None)
    yield
    harness.set_current(mod.__name__, None)
    try:
        if mod.__name__ in _run["setup_failed"] and hasattr(mod, "teardown_module"):
            mod.teardown_module()   # what a half-done setup_module started
    finally:
        harness.run_cleanups()     # whatever the module left running


@pytest.fixture(autouse=True)
def _integration_test(request):
    harness.set_current(request.module.__name__, request.function.__name__)
    yield
    harness.set_current(request.module.__name__, None)


# ---- counting and the closing lines ------------------------------------------------

def pytest_collectreport(report):
    if report.failed:       # a test module that cannot be imported
        _run["failed"] += 1


def pytest_runtest_logreport(report):
    # one outcome per test: failed if any phase (setup, call, teardown) failed,
    # else skipped if it was skipped, else passed
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    seen = _run["outcome"]
    worst = max(seen.get(report.nodeid, "passed"), report.outcome, key=rank.get)
    seen[report.nodeid] = worst
    if report.when == "teardown":
        _run[worst] += 1
        del seen[report.nodeid]


def pytest_report_teststatus(report, config):
    if report.when == "call" and report.passed:
        return "passed", ".", ("PASSED (%.1fs)" % report.duration, {"green": True})
    return None


def pytest_sessionfinish(session, exitstatus):
    _run["exit"] = int(exitstatus)
    _run["ran"] = (_run["dir"] is not None and not session.config.option.collectonly
                   and _run["exit"] != pytest.ExitCode.NO_TESTS_COLLECTED)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = harness.report_lines()
    if lines:
        terminalreporter.section("reports")
        for line in lines:
            terminalreporter.write_line(line)
    d = _run["dir"]
    if _run["ran"] and (_run["failed"] or exitstatus != pytest.ExitCode.OK):
        terminalreporter.write_line("outputs kept in %s" % os.path.relpath(d, ROOT))


def pytest_unconfigure(config):
    d = _run["dir"]
    if d is None:
        return
    harness.run_cleanups()
    ok = _run["failed"] == 0 and _run["exit"] in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    if not _run["ran"] or ok:
        shutil.rmtree(d, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(d))    # tests/out, only if empty
        except OSError:
            pass
    if not _run["ran"]:
        return
    p, f, s = _run["passed"], _run["failed"], _run["skipped"]
    print("integration: %d passed, %d failed, %d skipped" % (p, f, s), flush=True)
    results = os.environ.get("TEST_RESULTS")
    if results:
        with open(results, "a") as out:
            out.write("%d %d %d integration%s\n" % (p, f, s, os.environ.get("SUITE_TAG", "")))
