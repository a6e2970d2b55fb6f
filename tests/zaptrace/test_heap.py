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

applied = heap.keep_freed_memory()
base = rss_kib()
a = np.ones(8 << 20, dtype=np.uint64)
del a
print(applied, rss_kib() - base, heap.policy())
"""


def _probe(env_heap):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop(heap.ENV, None)
    if env_heap is not None:
        env[heap.ENV] = env_heap
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env,
                         cwd=ROOT).stdout.split(maxsplit=2)
    return out[0] == "True", int(out[1]), out[2].strip()


def test_freed_memory_stays_in_the_process_only_under_the_policy():
    applied, kept_kib, line = _probe(None)
    assert applied and "kept" in line
    assert kept_kib >= 60 << 10                 # the 64 MiB block was not given back
    applied, kept_kib, line = _probe("system")
    assert not applied and line == "heap: glibc's default"
    assert kept_kib < 16 << 10                  # glibc unmapped it at once


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
