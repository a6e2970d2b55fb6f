"""Exact integer time: the gap table and window hits are the same at any uptime.

float64 holds every nanosecond only below 2**53 ns (104 days of uptime); these
traces are based at 0, 2**53 (+1) and 2**62, with odd and even offsets and
1 ns gaps, and every answer is an exact Python-int difference.
"""
import random

import numpy as np
import pandas as pd
import pytest

from zaptrace import analysis
from zaptrace.analysis import gaps as G
from tests.synth import MM, MM2, TraceBuilder, page

P = [page(i) for i in range(16)]
BASES = [0, 2**53 + 1, 2**62]
GAP_TIMES = ("zap_ts", "flush_enter_ts", "flush_done_ts", "gap_ns", "mmu_done_ts", "gap_mmu_ns")
HIT_TIMES = ("flush_done_ts", "gap_ns", "mkclean_exit_ts")


def load(tmp_path, tb, name="t.zt", **kw):
    t = analysis.load(tb.write(tmp_path / name, **kw))
    return t, analysis.gap_table(t)


def only(g, pg):
    sel = g[g["page"] == pg]
    assert len(sel) == 1, sel
    return sel.iloc[0]


@pytest.mark.parametrize("base", BASES + [2**53, 2**62 + 1])
def test_every_gap_is_the_exact_int64_difference(tmp_path, base):
    B = base
    tb = (TraceBuilder()
          # immediate: rmaps at odd and even offsets, a zero-length flush one ns after the last
          .zap(B + 1).dirty(B + 2, P[0]).rmap(B + 3, P[0]).rmap(B + 5, P[1]).rmap(B + 6, P[2], anon=True)
          .rmap(B + 8, P[3]).flush(B + 9, B + 9).mmu(B + 10, B + 11)
          # a second batch with a long odd gap
          .rmap(B + 21, P[4]).flush(B + 22, B + 1_000_023)
          # 6.2+ delayed: after the flush, 1 and 2 ns
          .dirty(B + 1_000_030, P[5]).flush(B + 1_000_031, B + 1_000_033)
          .rmaps(B + 1_000_033, B + 1_000_040).rmap(B + 1_000_034, P[5], delayed=True)
          .rmap(B + 1_000_035, P[6], delayed=True).zap_exit(B + 1_000_041)
          # unpaired: no flush after it
          .zap(B + 2_000_001).rmap(B + 2_000_003, P[7]).zap_exit(B + 2_000_005))
    _, g = load(tmp_path, tb)
    # page: (decrement, flush entry, flush completion, tlb_flush_mmu completion or None)
    want = {P[0]: (B + 3, B + 9, B + 9, B + 11), P[1]: (B + 5, B + 9, B + 9, B + 11),
            P[2]: (B + 6, B + 9, B + 9, B + 11), P[3]: (B + 8, B + 9, B + 9, B + 11),
            P[4]: (B + 21, B + 22, B + 1_000_023, None),
            P[5]: (B + 1_000_034, B + 1_000_031, B + 1_000_033, None),
            P[6]: (B + 1_000_035, B + 1_000_031, B + 1_000_033, None)}
    for pg, (dec, enter, done, mmu) in want.items():
        r = only(g, pg)
        assert (r["ts"], r["zap_ts"], r["flush_enter_ts"], r["flush_done_ts"]) == (dec, B + 1, enter, done)
        assert r["gap_ns"] == done - dec and r["paired"]
        if mmu is None:
            assert r["gap_mmu_ns"] is pd.NA
        else:
            assert (r["mmu_done_ts"], r["gap_mmu_ns"]) == (mmu, mmu - dec)
    gaps = [only(g, pg)["gap_ns"] for pg in P[:7]]
    assert gaps == [6, 4, 3, 1, 1_000_002, -1, -2]
    assert [only(g, pg)["open"] for pg in P[:7]] == [True] * 5 + [False] * 2
    r = only(g, P[7])
    assert r["ts"] == B + 2_000_003 and r["zap_ts"] == B + 2_000_001 and not r["paired"]
    assert all(r[c] is pd.NA for c in ("flush_enter_ts", "flush_done_ts", "gap_ns", "mmu_done_ts", "gap_mmu_ns"))
    # the representation: int64 where never missing, nullable Int64 where it may be
    assert g["ts"].dtype == np.int64
    assert all(str(g[c].dtype) == "Int64" for c in GAP_TIMES)
    s = analysis.summarize(analysis.load(tmp_path / "t.zt"), g)
    assert s["classes"]["file-dirty"]["gap_ns"]["min"] == -2.0
    assert s["classes"]["file-clean"]["gap_ns"]["max"] == 1_000_002.0


@pytest.mark.parametrize("base", [0, 2**53, 2**53 + 1, 2**62 + 1])
def test_window_edges_to_the_nanosecond(tmp_path, base):
    # Window = [decrement, flush completion]: a mkclean is a hit when it ends after the
    # decrement and starts before the completion ("the first that starts at or after the
    # flush completed" ends the window).  Completions at odd and at even offsets.
    B = base
    tb = (TraceBuilder()
          .zap(B + 1).dirty(B + 2, P[0]).rmap(B + 3, P[0]).dirty(B + 4, P[1]).rmap(B + 5, P[1])
          .dirty(B + 6, P[2]).rmap(B + 7, P[2]).dirty(B + 8, P[3]).rmap(B + 9, P[3])
          .flush(B + 1000, B + 2001).zap_exit(B + 3000)
          .mkclean(B + 2000, B + 2500, P[0], tid=900)     # starts 1 ns before completion: hit
          .mkclean(B + 2001, B + 2500, P[1], tid=901)     # starts at completion: no hit
          .mkclean(B + 1, B + 7, P[2], tid=902)           # ends exactly at the decrement: no hit
          .mkclean(B + 1, B + 10, P[3], tid=903)          # ends 1 ns after it: hit
          .zap(B + 4000).dirty(B + 4001, P[4]).rmap(B + 4003, P[4]).dirty(B + 4004, P[5]).rmap(B + 4005, P[5])
          .flush(B + 4006, B + 6002).zap_exit(B + 7000)
          .mkclean(B + 6001, B + 6003, P[4], tid=904)     # even completion, 1 ns before: hit
          .mkclean(B + 6002, B + 6003, P[5], tid=905))    # at it: no hit
    t, g = load(tmp_path, tb)
    assert [only(g, pg)["hits"] for pg in P[:6]] == [1, 0, 0, 1, 1, 0]
    h = G.hit_table(t, g).sort_values("dec_ts")
    assert h["dec_ts"].tolist() == [B + 3, B + 9, B + 4003]
    assert h["mkclean_enter_ts"].tolist() == [B + 2000, B + 1, B + 6001]
    assert h["mkclean_exit_ts"].tolist() == [B + 2500, B + 10, B + 6003]
    assert h["flush_done_ts"].tolist() == [B + 2001, B + 2001, B + 6002]
    assert h["gap_ns"].tolist() == [1998, 1992, 1999]
    assert h["dec_ts"].dtype == np.int64 and h["mkclean_enter_ts"].dtype == np.int64
    assert all(str(h[c].dtype) == "Int64" for c in HIT_TIMES)


@pytest.mark.parametrize("base", [2**53, 2**53 + 1, 2**62 + 1])
def test_a_mkclean_without_return_is_bounded_to_the_nanosecond(tmp_path, base):
    # One zap, windows [B+101, B+301] ... [B+109, B+301]; each mkclean on P0..P3 starts at
    # B+11 and its return is missing: it ended when its task (P0, P1) or its folio
    # (P2, P3) started the next mkclean, exactly at the decrement or 1 ns after it.
    B = base
    tb = (TraceBuilder()
          .zap(B + 1)
          .dirty(B + 100, P[0]).rmap(B + 101, P[0]).dirty(B + 102, P[1]).rmap(B + 103, P[1])
          .dirty(B + 104, P[2]).rmap(B + 105, P[2]).dirty(B + 106, P[3]).rmap(B + 107, P[3])
          .dirty(B + 108, P[6]).rmap(B + 109, P[6])
          .flush(B + 200, B + 301).zap_exit(B + 400)
          # task bound: tid 900's next mkclean (another folio) starts at P0's decrement: no hit
          .mkclean(B + 11, None, P[0], tid=900).mkclean(B + 101, B + 102, P[8], tid=900)
          # ... tid 901's starts 1 ns after P1's decrement: a hit, ended at B+104 at the latest
          .mkclean(B + 11, None, P[1], tid=901).mkclean(B + 104, B + 106, P[9], tid=901)
          # folio bound: P2's next mkclean (another task) starts at P2's decrement
          .mkclean(B + 11, None, P[2], tid=902).mkclean(B + 105, B + 150, P[2], tid=903)
          # ... P3's starts 1 ns after its decrement: both overlap the window
          .mkclean(B + 11, None, P[3], tid=904).mkclean(B + 108, B + 150, P[3], tid=905)
          # no bound at all: runs to the end of the trace
          .mkclean(B + 11, None, P[6], tid=906))
    t, g = load(tmp_path, tb)
    assert [only(g, pg)["hits"] for pg in (P[0], P[1], P[2], P[3], P[6])] == [0, 1, 1, 2, 1]
    h = G.hit_table(t, g).sort_values(["dec_ts", "mkclean_enter_ts"])
    got = list(zip(h["dec_ts"], h["mkclean_tid"], h["mkclean_enter_ts"], h["mkclean_exit_ts"]))
    assert got == [(B + 103, 901, B + 11, B + 104),
                   (B + 105, 903, B + 105, B + 150),
                   (B + 107, 904, B + 11, B + 108), (B + 107, 905, B + 108, B + 150),
                   (B + 109, 906, B + 11, pd.NA)]
    assert h["mkclean_ret"].isna().tolist() == [True, False, True, False, True]      # no return, no value


def busy_trace(seed: int) -> TraceBuilder:
    """Zaps of three tasks on two mms in every shape (immediate, delayed, PMD, a lost flush
    return, other-path removals) and mkcleans around their windows, some without a return,
    at random odd and even nanosecond offsets from 0."""
    rng = random.Random(seed)
    tb = TraceBuilder()
    t = [1000]

    def at(lo=1, hi=9):
        t[0] += rng.randint(lo, hi)
        return t[0]

    mk_tid = iter(range(900, 10_000))
    for _ in range(60):
        tid, mm = rng.choice((100, 101, 102)), rng.choice((MM, MM2))
        shape = rng.choice(("immediate", "immediate", "delayed", "pmd", "lost", "other"))
        pgs = rng.sample(P[:15], 3)
        tb.zap(at(), tid=tid, mm=mm)
        decs = []
        if shape == "other":
            tb.rmap(at(), pgs[0], tid=tid, mm=mm, in_zap=False)
        elif shape == "pmd":
            decs.append(at())
            tb.rmap(decs[-1], pgs[0], tid=tid, mm=mm, compound=True, nr=512)
            if rng.random() < 0.5:
                tb.dirty(at(), pgs[0], tid=tid, mm=mm)
            tb.flush(at(), at(1, 60), tid=tid, mm=mm)
        elif shape == "delayed":
            tb.dirty(at(), pgs[0], tid=tid, mm=mm).rmap(at(), pgs[1], tid=tid, mm=mm, anon=True)
            decs.append(t[0])
            tb.flush(at(), at(1, 60), tid=tid, mm=mm).ev(at(), "rmaps_enter", tid=tid, mm=mm)
            tb.rmap(at(), pgs[0], tid=tid, mm=mm, delayed=True).ev(at(), "rmaps_exit", tid=tid, mm=mm)
        else:
            for pg in pgs:
                if rng.random() < 0.6:
                    tb.dirty(at(), pg, tid=tid, mm=mm)
                decs.append(at())
                tb.rmap(decs[-1], pg, tid=tid, mm=mm, anon=rng.random() < 0.2, nr=rng.choice((1, 1, 4)))
            if shape == "lost":
                tb.ev(at(), "flush_range_enter", tid=tid, mm=mm)
            else:
                tb.flush(at(), at(1, 60), tid=tid, mm=mm)
        if rng.random() < 0.5:
            tb.mmu(at(), at(), tid=tid, mm=mm)
        end = t[0]
        tb.zap_exit(at(), tid=tid, mm=mm)
        for d in decs:          # writeback around the window, on the zapped folios
            if rng.random() < 0.7:
                start = d + rng.randint(-30, end - d + 3)
                tb.mkclean(start, None if rng.random() < 0.15 else start + rng.randint(1, 40),
                           rng.choice(pgs), tid=next(mk_tid), cpu=1, ret=rng.randint(0, 1))
        t[0] += rng.randint(0, 200)
    # and a writeback that never returned, inside the last open window
    tb.zap(at()).dirty(at(), P[15]).rmap(at(), P[15]).mkclean(at(), None, P[15], tid=next(mk_tid))
    return tb.flush(at(), at()).zap_exit(at())


def assert_shifted(a: pd.DataFrame, b: pd.DataFrame, shifted, by: int):
    """b is a with the `shifted` time columns moved by exactly `by`; all else identical."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for c in a.columns:
        assert a[c].dtype == b[c].dtype, c
        want = a[c] + by if c in shifted else a[c]
        pd.testing.assert_series_equal(b[c], want, check_exact=True, obj=c)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("by", [2**53, 2**53 + 1, 2**62])
def test_a_trace_shifted_in_time_gives_the_same_gaps_and_hits(tmp_path, seed, by):
    tb = busy_trace(seed)
    kw = dict(lost={"flush_range_exit": 1})
    t0, g0 = load(tmp_path, tb, "a.zt", stats=[(1000 + 5_000, 0), (1000 + 9_000, 1)], **kw)
    t1, g1 = load(tmp_path, tb.shifted(by), "b.zt", stats=[(by + 1000 + 5_000, 0), (by + 1000 + 9_000, 1)], **kw)
    # the trace has all it should: every path, gaps of both signs, unpaired rows, hits, suspects
    assert set(g0["path"]) == {"immediate", "delayed", "pmd", "other-path"}
    assert (g0["gap_ns"] > 0).any() and (g0["gap_ns"] <= 0).any() and g0["gap_ns"].isna().any()
    assert g0["hits"].sum() > 10 and g0["loss_suspect"].any() and not g0["loss_suspect"].all()
    assert_shifted(g0, g1, ("ts", "zap_ts", "flush_enter_ts", "flush_done_ts", "mmu_done_ts", "clear_ts"), by)
    h0, h1 = G.hit_table(t0, g0), G.hit_table(t1, g1)
    assert h0["mkclean_exit_ts"].isna().any()
    assert_shifted(h0, h1, ("dec_ts", "flush_done_ts", "mkclean_enter_ts", "mkclean_exit_ts"), by)
    s0, s1 = analysis.summarize(t0, g0), analysis.summarize(t1, g1)
    assert s0["classes"] == s1["classes"] and s0["window_hits"] == s1["window_hits"]


def test_timestamps_load_as_int64_and_beyond_int64_are_dropped_and_said(tmp_path):
    B = 2**63 - 100
    tb = TraceBuilder().zap(B).rmap(B + 10, P[0]).flush(B + 20, B + 99).rmap(B + 100, P[1])     # 2**63: too late
    t, g = load(tmp_path, tb)
    assert t.events["ts"].dtype == np.int64 and t.events["ts"].tolist() == [B, B + 10, B + 20, B + 99]
    assert t.problems == ["1 events with a timestamp of 2**63 ns or more dropped (not a CLOCK_MONOTONIC time)"]
    assert only(g, P[0])["gap_ns"] == 89 and len(g) == 1
