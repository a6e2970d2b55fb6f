"""analysis.stream (the bounded-memory report) gives exactly the in-memory summary.

Tiny windows force many windows, widened margins and carried zaps; the traces
are the recorded fixtures, the benchmark's generator and random traces that
mix every rule (tests/synth.py), written in small chunks slightly out of order.
"""
import json
import os
import random

import pytest

from zaptrace.analysis import report, stream
from tests.synth import MM, MM2, TraceBuilder, page

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")


def both(path, window, margin=None, max_hits=20):
    mem = report.analyse(path)
    bnd = stream.analyse_bounded(path, window=window, margin=margin, max_hits=max_hits)
    return mem, bnd


def assert_same(path, window, margin=None):
    mem, bnd = both(path, window, margin)
    assert json.dumps(bnd.summary, indent=2) == json.dumps(mem.summary, indent=2)
    text = report.render_text(bnd).replace(f"analysis:  {bnd.mode}\n", "")
    assert text == report.render_text(mem)
    return mem, bnd


@pytest.mark.parametrize("name", ["race-6.1", "race-6.12"])
@pytest.mark.parametrize("window", [37, 100000])
def test_fixtures(name, window):
    assert_same(os.path.join(FIXTURES, name + ".zt"), window)


def _bench():
    import importlib.util
    spec = importlib.util.spec_from_file_location("analysis_bench", os.path.join(
        os.path.dirname(os.path.dirname(HERE)), "bench", "analysis_bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("style", ["immediate", "delayed"])
def test_generated_traces(tmp_path, style):
    path = str(tmp_path / "b.zt")
    _bench().generate(path, 30000, seed=3, style=style)
    mem, bnd = assert_same(path, 700, margin=16)
    assert mem.summary["window_hits"] > 0


def random_trace(seed: int, n_zaps: int = 40) -> TraceBuilder:
    """Zaps of several tasks on two mms mixing every rule: immediate, delayed, pmd, pud and
    other-path removals, PTE batches, dirty markers before and after, flushes with and without
    returns, zaps without returns, mkcleans (some without return) in and out of windows."""
    r = random.Random(seed)
    tb = TraceBuilder()
    t = {tid: 1000 + 333 * i for i, tid in enumerate((100, 101, 102))}
    mms = {100: MM, 101: MM, 102: MM2}
    pages = [page(i) for i in range(24)]
    for _ in range(n_zaps):
        tid = r.choice(list(t))
        mm = mms[tid]
        now = t[tid]
        tb.zap(now, tid=tid, mm=mm, cpu=tid - 100)
        now += r.randint(1, 60)
        for _ in range(r.randint(1, 6)):
            pg = r.choice(pages)
            kind = r.random()
            if r.random() < 0.5:
                tb.dirty(now, pg, tid=tid, mm=mm)
                now += r.randint(0, 30)
            if kind < 0.6:
                tb.rmap(now, pg, tid=tid, mm=mm, anon=r.random() < 0.3, nr=r.choice([1, 1, 2, 4]))
            elif kind < 0.7:
                tb.rmap(now, pg, tid=tid, mm=mm, compound=True, nr=512)
            elif kind < 0.75:
                tb.rmap(now, pg, tid=tid, mm=mm, compound=True, pud=True, nr=1)
            else:
                tb.rmap(now, pg, tid=tid, mm=mm, in_zap=False)
            if r.random() < 0.2:
                tb.dirty(now + 5, pg, tid=tid, mm=mm)
            if r.random() < 0.3:
                s = now + r.randint(-40, 80)
                tb.mkclean(s, None if r.random() < 0.2 else s + r.randint(1, 200), pg, tid=900 + r.randint(0, 3))
            now += r.randint(1, 50)
        if r.random() < 0.9:
            tb.mmu(now, now + r.randint(50, 300), tid=tid, mm=mm)
            done = None if r.random() < 0.1 else now + r.randint(10, 200)
            tb.ev(now + 5, "flush_range_enter", tid=tid, mm=mm, pfn=0)
            if done is not None:
                tb.ev(done, "flush_range_exit", tid=tid, mm=mm, pfn=0)
            now += 310
        if r.random() < 0.4:                      # 6.2+: the dirty PTEs after the flush
            tb.rmaps(now, now + 100, tid=tid, mm=mm)
            for _ in range(r.randint(1, 3)):
                pg = r.choice(pages)
                tb.rmap(now + r.randint(1, 99), pg, tid=tid, mm=mm, delayed=True)
            now += 110
        if r.random() < 0.9:
            tb.zap_exit(now, tid=tid, mm=mm)
        t[tid] = now + r.randint(1, 400)
    return tb


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("window", [2, 9])
def test_random_traces_every_rule_many_windows(tmp_path, seed, window):
    tb = random_trace(seed)
    path = tb.write(tmp_path / "t.zt", shuffle=seed, chunk=17,
                    lost={"rmap": 3} if seed % 4 == 0 else None,
                    stats=[(2000, 0), (9000, 3)] if seed % 4 == 0 else None)
    assert_same(path, window, margin=1)


def test_straddling_zap_flush_and_mkclean_at_every_cut(tmp_path):
    """One zap whose decrements, flush call and mkclean span cross every window boundary."""
    P0, P1, P2 = page(0), page(1), page(2)
    tb = (TraceBuilder().zap(1000).dirty(1100, P0).rmap(1200, P0).mkclean(1250, 1700, P0)
          .dirty(1300, P1).rmap(1400, P1).flush(1500, 1600).rmaps(1650, 1750)
          .rmap(1660, P2, delayed=True).mkclean(1670, None, P2).mmu(1800, 1900).zap_exit(2000)
          .zap(2100, tid=101).rmap(2200, P2, tid=101).mkclean(2300, 2400, P2).flush(2500, 2600, tid=101))
    path = tb.write(tmp_path / "t.zt", shuffle=1, chunk=3)
    for w in range(1, 8):
        assert_same(path, w, margin=1)


def test_the_check_is_what_makes_it_exact(tmp_path, monkeypatch):
    """With the per-row check switched off, tiny windows give wrong figures: the tests above
    would see it."""
    path = random_trace(5).write(tmp_path / "t.zt", chunk=17)
    monkeypatch.setattr(stream, "_undecided", lambda d, *a: (d["ts"] < 0, d["ts"] < 0))
    mem, bnd = both(path, 2, margin=1)
    assert bnd.summary != mem.summary


def test_hits_shown_and_counted(tmp_path):
    path = str(tmp_path / "b.zt")
    _bench().generate(path, 20000, seed=2, style="immediate")
    mem = report.analyse(path)
    for limit in (3, None):
        bnd = stream.analyse_bounded(path, window=500, max_hits=limit)
        assert bnd.hits_total == len(mem.hits)
        assert report.render_text(bnd, limit).replace(f"analysis:  {bnd.mode}\n", "") == \
            report.render_text(mem, limit)


def test_cli_max_memory_json_identical(tmp_path):
    from tests.analysis.reportdata import run
    path = os.path.join(FIXTURES, "race-6.12.zt")
    a = run("report", path, "--json", "-q")
    b = run("report", path, "--json", "-q", "--max-memory", "64k")
    assert a.exit_code == 0 and a.stdout == b.stdout
    t = run("report", path, "-q", "--max-memory", "1M")
    assert "analysis:  bounded memory" in t.stdout
