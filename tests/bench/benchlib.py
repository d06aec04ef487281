"""What the benchmark scripts of tests/bench share: importing this module
puts tests/lib on sys.path (no bytecode written); out_dir() is where a
script's results and its run's files go; met() and write_figures() report.

    import benchlib
    out = benchlib.out_dir("load")      # BENCH_OUT [tests/out/bench], made
    ...
    benchlib.write_figures(out, "load", text, fig)
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LIB = os.path.join(ROOT, "tests", "lib")
if LIB not in sys.path:
    sys.path.insert(0, LIB)
sys.dont_write_bytecode = True

import harness  # noqa: E402


def out_dir(run):
    """BENCH_OUT (default tests/out/bench), made; the run's files (bridges,
    Dovecot, receiver) go into its folder `run` (harness.set_run_dir)."""
    out = os.environ.get("BENCH_OUT") or os.path.join(ROOT, "tests", "out", "bench")
    os.makedirs(out, exist_ok=True)
    harness.set_run_dir(os.path.join(out, run))
    return out


def met(ok):
    """A goal's column: "met" or "MISSED"."""
    return "met" if ok else "MISSED"


def write_figures(out, tag, text, fig):
    """The table as out/<tag>.md, every figure as out/<tag>.json."""
    with open(os.path.join(out, tag + ".md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, tag + ".json"), "w") as f:
        json.dump(fig, f, indent=1)
