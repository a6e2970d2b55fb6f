"""The in-kernel --summary state machine against the analysis, on the same events.

probes/summary.bpf.h is compiled on the host with gcc (tests/probes/hostbuild.py)
and fed recorded and synthetic traces in trace order; its counters and
histograms must be those the analysis computes from the gap table
(analysis/kernel_summary.py, the same figures the guest test compares on a
``--summary --keep-events`` recording).  Where the two differ by design, the
difference is modelled here, named and commented, never absorbed by a tolerance:

* hits: the kernel keeps one window per folio and cannot know that a window
  will never close (``kernel_hits`` below);
* runs beyond ZT_PENDING are merged and timed at their midpoint (counted in
  ``approximate``): only those pages may change bucket;
* the analysis's batch rules for large folios (a marker classes only the PTE
  batch it precedes, and not one a delayed batch takes) are not in the kernel:
  ``test_large_folio_batches_are_classed_by_any_marker_of_the_zap`` pins it;
* a task whose pending runs are for another mm drops the decrement from
  pairing (``mixed_mm``): no trace here does that, and it is asserted.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

from tests.needs import need
from tests.probes import hostbuild
from tests.synth import MM, MM2, TraceBuilder, page
from zaptrace import analysis
from zaptrace.analysis import gaps as G
from zaptrace.analysis.kernel_summary import KERNEL_PATHS, from_gaps
from zaptrace.layout import layout
from zaptrace.summary import CLASSES, layout as summary_layout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    need(bool(hostbuild.gcc()), "gcc is missing: it builds probes/summary.bpf.h on the host (scripts/setup installs it)")
    return hostbuild.build(tmp_path_factory.mktemp("summary-host"))


def events_of(trace: analysis.Trace) -> np.ndarray:
    """The trace's events as struct zt_event records, in the analysis's (time) order.

    Events of the same nanosecond come in ring-buffer order, which the analysis
    ignores; it reads a return (of a flush, of a mkclean) at the same time as
    another event as coming first (a mkclean that returns when a decrement is
    made does not overlap its window; a flush completed at a delayed decrement
    covers it).  The replay takes them in that order too.
    """
    ev = trace.events
    out = np.zeros(len(ev), dtype=layout().dtype)
    for name in out.dtype.names:
        if name in ev.columns:          # ino/index: absent from traces older than the event's format 1.1
            out[name] = ev[name].to_numpy()
    exits = [v for k, v in layout().kinds.items() if k.endswith("_EXIT")]
    returns_first = ~np.isin(out["kind"], exits)
    return out[np.lexsort((returns_first, out["ts"]))]


def kernel_hits(trace: analysis.Trace, gaps: pd.DataFrame) -> dict:
    """Window hits per class as the kernel counts them, from the analysis's windows.

    By design, the kernel (1) keeps one window per folio, its latest immediate
    decrement's (open_folios), so a mkclean entering several open windows of a
    folio counts once, for the latest decrement, and not at all when that one's
    window has closed; a mkclean already running counts at the decrement, once
    per rmap call (not per page of a batch); (2) cannot know that a window
    will never close: an immediate decrement whose task flushes no more stays
    open to the end there, while the analysis leaves it unpaired, never open.
    """
    g = gaps.copy()
    imm = (g["path"] == "immediate").to_numpy()
    never_closed = imm & ~g["paired"].to_numpy()
    g["open"] = g["open"].to_numpy() | never_closed
    done, ok = G._opt(g["flush_done_ts"])
    g["flush_done_ts"] = pd.array(np.where(never_closed, G.NEVER, done), dtype="Int64")
    g.loc[~(ok | never_closed), "flush_done_ts"] = pd.NA
    _, hits = G.window_hits(trace, g)
    out = {c: 0 for c in CLASSES}
    if hits.empty:
        return out
    hits = hits.drop_duplicates(["folio", "dec_ts", "zap_tid", "mkclean_enter_ts"])     # one per rmap call
    running = hits["mkclean_enter_ts"].to_numpy() <= hits["dec_ts"].to_numpy()
    # the folio's latest immediate decrement before the mkclean entered
    dec = g.loc[imm, ["ts", "folio"]].sort_values("ts", kind="stable")
    probe = pd.DataFrame({"at": hits["mkclean_enter_ts"].to_numpy(), "folio": hits["folio"].to_numpy(),
                          "row": np.arange(len(hits))}).sort_values("at", kind="stable")
    latest = pd.merge_asof(probe, dec.rename(columns={"ts": "latest"}), left_on="at", right_on="latest",
                           by="folio", direction="backward", allow_exact_matches=False).sort_values("row")
    is_latest = latest["latest"].to_numpy() == hits["dec_ts"].to_numpy()
    kept = hits[running | is_latest]
    for c, n in kept["class"].astype(str).value_counts().items():
        out[c] = int(n)
    return out


def assert_agree(k: dict, trace: analysis.Trace, gaps: pd.DataFrame, approximate: int = 0) -> None:
    a = from_gaps(gaps)
    assert k["mixed_mm"] == 0, "a task's pending runs changed mm: that rule is not modelled here"
    assert k["approximate"] == approximate
    assert k["other_path"] == a["other_path"]
    assert k["huge_mappings"] == a["huge_mappings"]
    for c in CLASSES:
        for p in KERNEL_PATHS:
            kk, aa = k["classes"][c]["paths"][p], a["classes"][c]["paths"][p]
            for f in ("decrements", "paired", "unpaired", "open", "closed"):
                assert kk[f] == aa[f], (c, p, f, kk[f], aa[f])
            for h in ("hist_pos", "hist_neg"):
                moved = int(np.abs(np.array(kk[h]) - np.array(aa[h])).sum())
                # Merged runs (ZT_S_APPROX) keep class and sign (counts above are exact) but are
                # timed at the run's midpoint: each such page may sit in another bucket, no other.
                assert moved <= 2 * k["approximate"], (c, p, h, kk[h], aa[h])
    assert {c: k["classes"][c]["hits"] for c in CLASSES} == kernel_hits(trace, gaps)


def check(lib, trace: analysis.Trace, approximate: int = 0) -> dict:
    k = hostbuild.replay(lib, events_of(trace), trace.head)
    assert_agree(k, trace, analysis.gap_table(trace), approximate)
    return k


@pytest.mark.parametrize("name", ["race-6.1", "race-6.12"])
def test_recorded_fixtures(lib, name):
    t = analysis.load(os.path.join(FIXTURES, name + ".zt"))
    k = check(lib, t)
    fd = k["classes"]["file-dirty"]
    if name == "race-6.1":          # the fixture's README: 256 open immediate, 235 window hits
        assert fd["paths"]["immediate"]["open"] == 256 and fd["hits"] == 235
    else:                           # 236 delayed, all closed, no hit
        assert fd["paths"]["delayed"]["closed"] == 236 and fd["hits"] == 0


def _bench():
    spec = importlib.util.spec_from_file_location("analysis_bench", os.path.join(ROOT, "bench", "analysis_bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("style", ["immediate", "delayed"])
def test_generated_traces(lib, tmp_path, style):
    """Four tasks of two processes, 1..128-page zaps, kworkers cleaning pages in and near the
    windows; pages of one process's pool are reused across its tasks, so windows of one
    folio overlap (the one-window-per-folio rule of kernel_hits matters here)."""
    path = str(tmp_path / "g.zt")
    _bench().generate(path, 40_000, seed=3, style=style)
    k = check(lib, analysis.load(path))
    assert k["classes"]["file-dirty"]["paths"][style]["decrements"] > 1000
    assert k["classes"]["anon"]["paths"]["immediate"]["paired"] > 1000


def test_every_path_and_class_in_one_trace(lib, tmp_path):
    P = [page(i) for i in range(8)]
    tb = (TraceBuilder()
          .zap(100)
          .rmap(110, P[0], anon=True).dirty(115, P[1]).rmap(120, P[1]).rmap(130, P[2])
          .rmap(140, P[3], nr=4)                                   # a 4-page PTE batch, clean
          .rmap(150, page(512), compound=True)                     # PMD in the zap: counted, not paired
          .mkclean(160, 170, P[1])                                 # inside P[1]'s open window
          .flush(200, 300)
          .mkclean(310, 320, P[2])                                 # after the flush: no hit
          .dirty(330, P[4]).ev(340, "rmaps_enter").rmap(350, P[4], delayed=True).ev(360, "rmaps_exit")
          .zap_exit(400)
          .rmap(500, P[5], in_zap=False)                           # other path (reclaim, migration)
          .rmap(510, page(1024), in_zap=False, compound=True)      # PMD outside a zap: other path
          .zap(600, tid=101, mm=MM2).rmap(610, P[6], tid=101, mm=MM2)   # never flushed: unpaired
          .mkclean(620, 630, P[6]))                                # the kernel calls that a hit
    k = check(lib, analysis.load(tb.write(tmp_path / "t.zt")))
    assert k["huge_mappings"] == 1 and k["other_path"] == 2
    assert k["classes"]["file-dirty"]["hits"] == 1 and k["classes"]["file-clean"]["hits"] == 1
    assert k["classes"]["file-clean"]["paths"]["immediate"]["unpaired"] == 1


def test_runs_beyond_zt_pending_are_merged_and_counted_approximate(lib, tmp_path):
    n = summary_layout()["ZT_PENDING"] + 40
    tb = TraceBuilder().zap(100)
    for i in range(n):
        tb.rmap(1_000 + 10 * i, page(i), anon=i % 2 == 0)
    tb.flush(1_000_000, 1_000_500).zap_exit(1_001_000)
    k = check(lib, analysis.load(tb.write(tmp_path / "t.zt")), approximate=40)
    assert k["classes"]["anon"]["paths"]["immediate"]["paired"] + \
        k["classes"]["file-clean"]["paths"]["immediate"]["paired"] == n


def test_without_the_arch_flush_tlb_flush_mmu_covers(lib, tmp_path):
    probes = tuple(p for p in ("zap", "rmap", "dirty", "tlb_flush", "flush_rmaps", "mkclean"))
    tb = (TraceBuilder(probes=probes).zap(100).dirty(105, page(0)).rmap(110, page(0)).rmap(120, page(1), anon=True)
          .mmu(200, 350).zap_exit(400))
    k = check(lib, analysis.load(tb.write(tmp_path / "t.zt")))
    assert k["classes"]["file-dirty"]["paths"]["immediate"]["hist_pos"][7] == 1     # 350 - 110 = 240 ns


def test_large_folio_batches_are_classed_by_any_marker_of_the_zap(lib, tmp_path):
    """By design the kernel summary has no batch rules: any marker of the folio earlier in the
    zap makes a decrement file-dirty.  The analysis classes the second batch of a large folio,
    which its marker did not precede, file-clean (tests/analysis/test_gaps.py)."""
    F = page(0)
    tb = (TraceBuilder().zap(100).dirty(110, F).rmap(120, F, nr=16).rmap(130, page(16), folio=F, nr=16)
          .flush(200, 300).zap_exit(400))
    t = analysis.load(tb.write(tmp_path / "t.zt"))
    k = hostbuild.replay(lib, events_of(t), t.head)
    a = from_gaps(analysis.gap_table(t))
    assert k["classes"]["file-dirty"]["paths"]["immediate"]["decrements"] == 32
    assert a["classes"]["file-dirty"]["paths"]["immediate"]["decrements"] == 16
    assert a["classes"]["file-clean"]["paths"]["immediate"]["decrements"] == 16


def test_bucket_is_floor_log2_as_bcc_bpf_log2l_minus_one(lib, tmp_path):
    """Gaps at the bucket edges land where zaptrace/summary.py labels them: b holds [2^b, 2^(b+1))."""
    tb = TraceBuilder()
    gaps = (1, 2, 3, 4, 1023, 1024, 1 << 40)
    t0 = 1000
    for i, gap in enumerate(gaps):
        tb.zap(t0).rmap(t0 + 10, page(i), anon=True).flush(t0 + 11, t0 + 10 + gap).zap_exit(t0 + 20 + gap)
        t0 += 100 + gap
    k = check(lib, analysis.load(tb.write(tmp_path / "t.zt")))
    h = k["classes"]["anon"]["paths"]["immediate"]["hist_pos"]
    assert {b: v for b, v in enumerate(h) if v} == {0: 1, 1: 2, 2: 1, 9: 1, 10: 1, 40: 1}


def test_the_shims_bpf_log2l_is_bccs(lib, tmp_path):
    """The host shim stands in for BCC's bpf_log2l (helpers.h); the bucket rule rests on it."""
    path = hostbuild.libbcc()
    need(bool(path), "libbcc is missing (python3-bpfcc, installed by scripts/setup)")
    bcc = hostbuild.bcc_log2l(path, tmp_path)
    values = {0, 1, (1 << 64) - 1} | {v for k in range(1, 64) for v in ((1 << k) - 1, 1 << k, (1 << k) + 1)}
    values |= set(np.random.default_rng(1).integers(0, 1 << 63, 2000, dtype=np.uint64).tolist())
    assert [lib.zh_log2l(v) for v in sorted(values)] == [bcc.bcc_bpf_log2l(v) for v in sorted(values)]
