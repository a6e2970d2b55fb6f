"""Cache location, run directories, readiness and the idempotent build."""

import os
import time

import pytest

from vm import build, cache


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("ZAPTRACE_CACHE")
    assert cache.cache_root() == tmp_path / "xdg" / "zaptrace"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "zaptrace"


def test_run_dirs_are_pruned(monkeypatch, tmp_path):
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path))
    for i in range(cache.KEEP_RUNS + 5):
        d = cache.new_run_dir()
        assert d.is_dir() and "-%d" % os.getpid() in d.name
        os.utime(d, (1000 + i, 1000 + i))
    assert len(list(cache.runs_dir().iterdir())) == cache.KEEP_RUNS
    assert cache.latest_run_dir() == d


def test_ready_reasons(monkeypatch, tmp_path):
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path))
    assert build.ready("6.1") == "guest image not built: run `zaptrace vm build`"
    assert build.ready("/no/such/bzImage") == "guest image not built: run `zaptrace vm build`"


def test_build_rejects_unknown_kernels():
    with pytest.raises(build.VMError, match="unknown kernel '4.19'"):
        build.build(["4.19"])


def test_rebuild_is_instant(guest_kernel):
    lines = []
    started = time.monotonic()
    build.build(log=lines.append)
    assert time.monotonic() - started < 2
    assert "everything already built" in lines[-1]
