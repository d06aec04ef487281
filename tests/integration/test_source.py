"""Checks on the shape of the C sources themselves (no servers): a function
longer than FUNCTION_LINES_MAX lines in bridge/*.c is a review finding
(issue 9 §4), so it fails here."""

import glob
import os
import re

import harness

FUNCTION_LINES_MAX = 100
CHECKED = sorted(os.path.relpath(p, harness.ROOT)
                 for p in glob.glob(os.path.join(harness.ROOT, "bridge", "*.c")))

# a function definition starts at column 0 with its return type and ends at
# the first "}" at column 0
_DEF = re.compile(r"^(?:static\s+)?(?:inline\s+)?[A-Za-z_][\w \t\*]*?\b([A-Za-z_]\w*)\s*\(")


def functions(path):
    """(name, first line, line count) of each function defined in path."""
    out = []
    with open(path) as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        m = _DEF.match(lines[i])
        if m and not lines[i].rstrip().endswith(";"):
            j = i
            while j < len(lines) and lines[j] != "{" and not lines[j].rstrip().endswith(";"):
                if lines[j].rstrip().endswith("{") and j > i:
                    break
                j += 1
            if j < len(lines) and (lines[j] == "{" or lines[j].rstrip().endswith("{")):
                k = j + 1
                while k < len(lines) and lines[k] != "}":
                    k += 1
                out.append((m.group(1), i + 1, k - i + 1))
                i = k + 1
                continue
        i += 1
    return out


def test_the_checker_sees_functions():
    found = dict((n, c) for n, _, c in functions(os.path.join(harness.ROOT, "bridge/poller.c")))
    assert "poller_poll" in found and found["poller_poll"] > 10


def test_no_function_is_longer_than_the_limit():
    assert "bridge/daemon.c" in CHECKED and len(CHECKED) > 50
    long = []
    for rel in CHECKED:
        for name, line, count in functions(os.path.join(harness.ROOT, rel)):
            if count > FUNCTION_LINES_MAX:
                long.append("%s:%d: %s is %d lines" % (rel, line, name, count))
    assert not long, "longer than %d lines: %s" % (FUNCTION_LINES_MAX, "; ".join(long))
