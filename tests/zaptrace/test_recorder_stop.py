"""The end of a recording on the host: the stop waits for BPF programs past the
stop check (zaptrace.bpf.c's per-CPU "busy" count) and says when it gave up.
The guest tests check the same end to end (test_forced_loss_is_counted_exactly)."""
from __future__ import annotations

from zaptrace import recorder


class _Busy:
    def __init__(self, vals):
        self.vals = vals

    def Key(self, k):
        return k

    def getvalue(self, k):
        return self.vals


class _Config:
    class Leaf:
        stopped = 0

    def __init__(self):
        self.leaf = self.Leaf()

    def __getitem__(self, k):
        return self.leaf

    def __setitem__(self, k, v):
        self.leaf = v


def _recorder(busy):
    r = recorder.Recorder.__new__(recorder.Recorder)
    r.logged = []
    r.log = r.logged.append
    r.bpf = {"config": _Config(), "busy": _Busy(busy)}
    return r


def test_stop_sets_stopped_and_waits_for_nothing_when_idle():
    r = _recorder([0, 0, 0])
    r._stop_bpf()
    assert r.bpf["config"].leaf.stopped == 1
    assert r.stop_info["busy_left"] == 0 and not r.logged


def test_a_migrated_program_nets_out_across_cpus():
    r = _recorder([1, -1])             # entered on one CPU, left on another
    r._stop_bpf()
    assert r.stop_info["busy_left"] == 0 and not r.logged


def test_a_program_that_never_leaves_is_reported(monkeypatch):
    monkeypatch.setattr(recorder, "STOP_WAIT_S", 0.05)
    r = _recorder([0, 1])
    r._stop_bpf()
    assert r.stop_info["busy_left"] == 1
    assert len(r.logged) == 1 and "still inside emit()" in r.logged[0] and "WARNING" in r.logged[0]
