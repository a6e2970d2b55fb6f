"""Cache location, run directories, readiness and the idempotent build."""

import os
import time

import pytest

from zaptrace.vm import build, cache


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("ZAPTRACE_CACHE")
    assert cache.cache_root() == tmp_path / "xdg" / "zaptrace"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "zaptrace"


def test_kvm_probe_outlives_a_fresh_cache(monkeypatch, tmp_path):
    """The KVM probe is a fact about the machine: a new cache does not pay it again."""
    from zaptrace.vm import qemu
    monkeypatch.setenv("ZAPTRACE_STATE", str(tmp_path / "state"))
    assert cache.state_root() == tmp_path / "state"
    monkeypatch.setattr(qemu, "version", lambda: "QEMU emulator version 10.0.2")
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path / "cache1"))
    assert qemu.cached_probe() is None
    cache.write_json(cache.kvm_probe_file(), {qemu._probe_key(): {"ok": False, "detail": "timed out"}})
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path / "cache2"))
    assert qemu.cached_probe() == {"ok": False, "detail": "timed out"}
    monkeypatch.setattr(qemu, "version", lambda: "QEMU emulator version 10.1.0")
    assert qemu.cached_probe() is None  # another QEMU is probed again
    monkeypatch.delenv("ZAPTRACE_STATE")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert cache.kvm_probe_file() == tmp_path / "xdg" / "zaptrace" / "kvm-probe.json"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.state_root() == tmp_path / "home" / ".local" / "state" / "zaptrace"


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
