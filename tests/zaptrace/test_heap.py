"""zaptrace/heap.py: the in-memory analysis keeps freed memory; the bounded path does not."""
import os
import subprocess
import sys

from typer.testing import CliRunner

from zaptrace import heap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "race-6.1.zt")

# Allocates 64 MiB (above glibc's largest dynamic mmap threshold, 32 MiB), touches it,
# frees it and prints the growth of VmRSS that remains.
PROBE = r"""
import sys
import numpy as np
from zaptrace import heap

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

try:
    from numpy._core.multiarray import _get_madvise_hugepage
except ImportError:                      # numpy 1.x
    from numpy.core.multiarray import _get_madvise_hugepage
thp_before = _get_madvise_hugepage()
applied = heap.keep_freed_memory()
base = rss_kib()
a = np.ones(8 << 20, dtype=np.uint64)
del a
print(applied, rss_kib() - base, thp_before, _get_madvise_hugepage(), heap.policy())
"""


def _probe(env_heap, numpy_thp=None):
    """(applied, KiB kept after the free, numpy's huge-page advice before and after, policy line)"""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop(heap.ENV, None)
    env.pop(heap.NUMPY_THP_ENV, None)
    if env_heap is not None:
        env[heap.ENV] = env_heap
    if numpy_thp is not None:
        env[heap.NUMPY_THP_ENV] = numpy_thp
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env,
                         cwd=ROOT).stdout.split(maxsplit=4)
    return out[0] == "True", int(out[1]), out[2] == "True", out[3] == "True", out[4].strip()


def test_freed_memory_stays_in_the_process_only_under_the_policy():
    applied, kept_kib, _, thp_after, line = _probe(None)
    assert applied and "kept" in line
    assert kept_kib >= 60 << 10                 # the 64 MiB block was not given back
    assert not thp_after and "huge-page advice off" in line
    applied, kept_kib, thp_before, thp_after, line = _probe("system")
    assert not applied and line == "heap: glibc's default"
    assert kept_kib < 16 << 10                  # glibc unmapped it at once
    assert thp_after == thp_before              # numpy's default untouched


def test_numpy_huge_page_advice_set_by_the_user_stands():
    applied, _, thp_before, thp_after, line = _probe(None, numpy_thp="1")
    assert applied and thp_before and thp_after
    assert "as NUMPY_MADVISE_HUGEPAGE says" in line


def test_report_applies_it_in_memory_and_not_bounded(monkeypatch):
    from zaptrace.cli import app
    calls = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(1) or True)
    r = CliRunner().invoke(app, ["report", FIXTURE, "--json", "-q"])
    assert r.exit_code == 0, r.output
    assert calls == [1]
    r = CliRunner().invoke(app, ["report", FIXTURE, "--json", "-q", "--max-memory", "64M"])
    assert r.exit_code == 0, r.output
    assert calls == [1]                         # not again: the bounded path frees what it uses
