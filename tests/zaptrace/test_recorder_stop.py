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



def test_recursion_misses_are_read_from_each_programs_fdinfo(tmp_path, monkeypatch):
    # /proc/PID/fdinfo of a BPF program fd (v5.12+: recursion_misses); older kernels lack the line.
    info = ("pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\nprog_id:\t42\n"
            "run_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t191\nverified_insns:\t312\n")
    assert recorder.recursion_misses(info) == 191
    assert recorder.recursion_misses(info.replace("recursion_misses:\t191\n", "")) == 0

    class Fn:                        # BCC keeps its loaded programs in .funcs (name -> Function)
        def __init__(self, fd):
            self.fd = fd

    class Bpf:
        funcs = {b"kfunc__flush_tlb_batched_pending": Fn(7), b"kfunc__folio_mark_dirty": Fn(8)}
    (tmp_path / "7").write_text(info)
    (tmp_path / "8").write_text(info.replace("191", "0"))
    real_open = open

    def fdinfo_open(path, *a, **k):
        p = str(path)
        return real_open(tmp_path / p.rsplit("/", 1)[1] if p.startswith("/proc/self/fdinfo/") else path, *a, **k)
    monkeypatch.setattr("builtins.open", fdinfo_open)
    r = recorder.Recorder.__new__(recorder.Recorder)
    r.bpf = Bpf()
    assert r._probe_misses() == {"kfunc__flush_tlb_batched_pending": 191}     # nonzero only
