"""The gap rules on small synthetic traces with hand-computed answers."""
import numpy as np
import pandas as pd
import pytest

from zaptrace import analysis
from zaptrace.analysis import gaps as G
from tests.synth import MM, MM2, TraceBuilder, page

P0, P1, P2, P3 = page(0), page(1), page(2), page(3)


def table(tmp_path, tb, **kw):
    t = analysis.load(tb.write(tmp_path / "t.zt", **kw))
    return t, analysis.gap_table(t)


def row(g, pg, path=None):
    sel = g[g["page"] == pg]
    if path:
        sel = sel[sel["path"] == path]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_immediate_decrements_before_the_flush(tmp_path):
    # 5.10/6.1 shape: rmap x2 -> flush_tlb_mm_range -> tlb_flush_mmu
    tb = (TraceBuilder().zap(1000).dirty(1100, P0).rmap(1200, P0).dirty(1300, P1).rmap(1400, P1)
          .flush(1500, 1600).mmu(1700, 1800).zap_exit(1900))
    _, g = table(tmp_path, tb)
    r0, r1 = row(g, P0), row(g, P1)
    assert (r0["class"], r0["path"], r0["gap_ns"], r0["gap_mmu_ns"]) == ("file-dirty", "immediate", 400, 600)
    assert (r1["gap_ns"], r1["gap_mmu_ns"]) == (200, 400)
    assert r0["open"] and r1["open"] and r0["paired"]
    assert r0["flush_enter_ts"] == 1500 and r0["flush_done_ts"] == 1600


def test_delayed_decrements_after_the_flush(tmp_path):
    # 6.12 shape: dirty -> flush_tlb_mm_range -> tlb_flush_rmaps{rmap x2} -> tlb_flush_mmu
    tb = (TraceBuilder().zap(1000).dirty(1100, P0).flush(1200, 1300)
          .ev(1400, "rmaps_enter").rmap(1500, P0, delayed=True).rmap(1600, P1, delayed=True)
          .ev(1700, "rmaps_exit").mmu(1800, 1900).zap_exit(2000))
    _, g = table(tmp_path, tb)
    r0, r1 = row(g, P0), row(g, P1)
    assert (r0["class"], r0["path"], r0["gap_ns"]) == ("file-dirty", "delayed", -200)
    # no marker for P1, but the kernel delays only dirty PTEs: file-dirty all the same
    assert (r1["class"], r1["path"], r1["gap_ns"]) == ("file-dirty", "delayed", -300)
    assert not r0["open"] and r0["paired"]
    # no tlb_flush_mmu completed before them in that zap
    assert r0["gap_mmu_ns"] is pd.NA


def test_unpaired_immediate_and_delayed(tmp_path):
    tb = (TraceBuilder()
          .zap(100).flush(200, 300).zap_exit(350)           # an earlier zap's flush
          .zap(400).ev(450, "rmaps_enter").rmap(500, P0, delayed=True).ev(550, "rmaps_exit").zap_exit(600)
          .zap(700).rmap(800, P1).zap_exit(900))           # trace ends: no flush after
    _, g = table(tmp_path, tb)
    r0, r1 = row(g, P0), row(g, P1)
    assert not r0["paired"] and r0["unpaired_reason"] == G.R_NO_FLUSH_BEFORE
    assert not r1["paired"] and r1["unpaired_reason"] == G.R_NO_FLUSH_AFTER
    assert r0["gap_ns"] is pd.NA and r1["gap_ns"] is pd.NA


def test_several_batches_in_one_zap(tmp_path):
    tb = (TraceBuilder().zap(1000).rmap(1100, P0).rmap(1200, P1).flush(1300, 1400)
          .rmap(1500, P2).flush(1600, 1700).zap_exit(1800))
    _, g = table(tmp_path, tb)
    assert [row(g, p)["gap_ns"] for p in (P0, P1, P2)] == [300, 200, 200]


def test_interleaved_tasks_cpus_and_mms(tmp_path):
    tb = (TraceBuilder()
          .zap(50, tid=1, mm=MM, cpu=0).zap(60, tid=2, mm=MM2, cpu=1).zap(70, tid=3, mm=MM, cpu=1)
          .rmap(100, P0, tid=1, mm=MM, cpu=0)
          .rmap(150, P1, tid=2, mm=MM2, cpu=1)
          .rmap(160, P2, tid=3, mm=MM, cpu=1)       # a thread of the same mm
          .flush(170, 180, tid=3, mm=MM, cpu=1)     # covers only tid 3's decrement
          .flush(200, 250, tid=2, mm=MM2, cpu=1)
          .flush(260, 270, tid=1, mm=MM2, cpu=0)    # tid 1 flushing another mm: not its cover
          .flush(300, 400, tid=1, mm=MM, cpu=0))
    _, g = table(tmp_path, tb)
    assert row(g, P0)["gap_ns"] == 300
    assert row(g, P1)["gap_ns"] == 100
    assert row(g, P2)["gap_ns"] == 20


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_out_of_order_records_and_chunks_give_the_same_answer(tmp_path, seed):
    def build():
        return (TraceBuilder().zap(1000, cpu=0).dirty(1100, P0).rmap(1200, P0).rmap(1250, P1, cpu=1)
                .flush(1500, 1600).mkclean(1300, 1350, P0, cpu=1).zap_exit(1700))
    _, ordered = table(tmp_path, build())
    t2 = analysis.load(build().write(tmp_path / "s.zt", shuffle=seed, chunk=3))
    shuffled = analysis.gap_table(t2)
    cols = ["page", "class", "path", "gap_ns", "hits"]
    assert ordered[cols].sort_values("page").to_dict("records") == shuffled[cols].sort_values("page").to_dict("records")
    assert row(shuffled, P0)["hits"] == 1


def test_other_path_decrements_are_counted_never_paired(tmp_path):
    tb = (TraceBuilder().rmap(100, P0, in_zap=False).flush(200, 300)
          .rmap(350, P1, in_zap=False, compound=True, nr=512).flush(360, 370))
    _, g = table(tmp_path, tb)
    r0, r1 = row(g, P0), row(g, P1)
    assert r0["path"] == "other-path" and not r0["paired"] and r0["unpaired_reason"] == G.R_OTHER
    assert r1["path"] == "other-path" and not r1["paired"] and r1["unpaired_reason"] == G.R_PMD
    assert r1["nr_in_call"] == 512      # one row for the whole mapping, never 512
    assert len(g) == 2


def test_pmd_decrement_paired_with_the_next_flush_marker_after_it(tmp_path):
    # 7.2 zap_huge_pmd shape: folio_remove_rmap_pmd -> folio_mark_dirty -> (unlock) -> flush
    tb = (TraceBuilder().zap(400).rmap(450, P1, compound=True, nr=512).dirty(460, P1)
          .rmap(470, P2, compound=True, nr=512)                    # clean: no marker in this zap
          .flush(500, 600).zap_exit(700)
          .zap(800).dirty(850, P2).zap_exit(900)                    # P2's marker in a later zap
          .zap(1000).rmap(1100, P3, compound=True, nr=512, anon=True).flush(1200, 1300).zap_exit(1400)
          .mkclean(520, 530, P1))                                   # writeback inside P1's window
    _, g = table(tmp_path, tb)
    r1, r2, r3 = row(g, P1), row(g, P2), row(g, P3)
    assert (r1["path"], r1["class"], r1["gap_ns"], r1["nr_in_call"]) == ("pmd", "file-dirty", 150, 512)
    assert r1["open"] and r1["paired"] and r1["hits"] == 1
    assert (r2["path"], r2["class"], r2["gap_ns"]) == ("pmd", "file-clean", 130)
    assert (r3["path"], r3["class"], r3["gap_ns"]) == ("pmd", "anon", 200)
    assert len(g) == 3


def test_pmd_window_follows_the_kernels_order_with_the_clear_event(tmp_path):
    # Unpatched 7.2: zap_huge_pmd{clear, rmap, mark dirty} -> ... -> flush: open.  With a flush
    # between the clear and the rmap (a fix that flushes under the PMD lock) the covering
    # flush is that one, completed before the decrement: closed, gap < 0, no hit; the
    # earlier flush of the zap (before the clear) never covers the PMD.
    tb = (TraceBuilder()
          .zap(100).zap_pmd(110).rmap(120, P0, compound=True, nr=512).dirty(125, P0)
          .flush(200, 260).zap_exit(300)                                     # unpatched: +140
          .zap(1000).flush(1005, 1008)                                       # a flush before the clear
          .zap_pmd(1010).flush(1020, 1040).rmap(1050, P1, compound=True, nr=512).dirty(1055, P1)
          .zap_pmd(1100).rmap(1110, P2, compound=True, nr=512, anon=True)   # anon: no flush first
          .flush(1200, 1300).mmu(1310, 1320).zap_exit(1400)
          .mkclean(130, 140, P0).mkclean(1045, 1060, P1))                   # P1's mkclean after its flush
    _, g = table(tmp_path, tb)
    r0, r1, r2 = row(g, P0), row(g, P1), row(g, P2)
    assert (r0["class"], r0["gap_ns"], r0["flush_enter_ts"], r0["open"], r0["hits"]) == ("file-dirty", 140, 200, True, 1)
    assert (r1["class"], r1["gap_ns"], r1["flush_enter_ts"]) == ("file-dirty", -10, 1020)
    assert not r1["open"] and r1["paired"] and r1["hits"] == 0
    assert pd.isna(r1["gap_mmu_ns"])          # its flush is not a tlb_flush_mmu's: no mmu gap
    assert (r2["class"], r2["gap_ns"], r2["flush_enter_ts"], r2["gap_mmu_ns"]) == ("anon", 190, 1200, 210)


def test_pmd_without_the_clear_event_pairs_with_the_next_flush(tmp_path):
    # A trace recorded before the zap_pmd event existed (or without its probe): the decrement
    # stands for the clear, as the rule was before.
    probes = tuple(p for p in TraceBuilder().probes if p != "zap_pmd")
    tb = (TraceBuilder(probes=probes).zap(1000).flush(1020, 1040).rmap(1050, P1, compound=True, nr=512)
          .dirty(1055, P1).flush(1200, 1300).zap_exit(1400))
    _, g = table(tmp_path, tb)
    r1 = row(g, P1)
    assert (r1["gap_ns"], r1["flush_enter_ts"], r1["open"]) == (250, 1200, True)


def test_a_clear_of_an_earlier_zap_does_not_count(tmp_path):
    tb = (TraceBuilder().zap(100).zap_pmd(110).flush(120, 130).zap_exit(140)
          .zap(200).rmap(250, P1, compound=True, nr=512).flush(300, 400).zap_exit(500))
    _, g = table(tmp_path, tb)
    assert row(g, P1)["gap_ns"] == 150


def test_pud_decrement_and_unpaired_pmd(tmp_path):
    tb = (TraceBuilder().zap(100).rmap(150, P0, pud=True, nr=262144).flush(200, 250).zap_exit(300)
          .zap(400).rmap(450, P1, compound=True, nr=512).zap_exit(500))     # trace ends: no flush
    _, g = table(tmp_path, tb)
    r0, r1 = row(g, P0), row(g, P1)
    assert (r0["path"], r0["gap_ns"], r0["nr_in_call"]) == ("pud", 100, 262144)
    assert r1["path"] == "pmd" and not r1["paired"] and r1["unpaired_reason"] == G.R_NO_FLUSH_AFTER


def test_window_hits_and_near_misses(tmp_path):
    tb = (TraceBuilder()
          .zap(900)
          .dirty(950, P0).rmap(1000, P0)         # window 1000..2000
          .dirty(1050, P1).rmap(1100, P1)        # window 1100..2000
          .dirty(1150, P2).rmap(1200, P2)        # window 1200..2000
          .flush(1900, 2000).zap_exit(2100)
          .mkclean(1500, 1600, P0, ret=0)        # inside P0's window: a hit
          .mkclean(900, 1100, P1)                # ends exactly at P1's decrement: a near miss
          .mkclean(2000, 2100, P2)               # starts exactly at the flush completion: a near miss
          .mkclean(1500, 1600, P3, tid=998))     # a page nobody zapped
    t, g = table(tmp_path, tb)
    assert [row(g, p)["hits"] for p in (P0, P1, P2)] == [1, 0, 0]
    hits = G.hit_table(t, g)
    assert len(hits) == 1
    h = hits.iloc[0]
    assert (h["page"], h["dec_ts"], h["flush_done_ts"], h["mkclean_enter_ts"], h["mkclean_exit_ts"]) == (P0, 1000, 2000, 1500, 1600)
    assert (h["zap_tid"], h["mkclean_tid"], h["zap_cpu"], h["mkclean_cpu"], h["mkclean_ret"]) == (100, 999, 0, 1, 0)


def test_closed_window_has_no_hit_and_open_ended_mkclean_counts(tmp_path):
    tb = (TraceBuilder().zap(1000).dirty(1100, P0).flush(1200, 1300)
          .ev(1400, "rmaps_enter").rmap(1500, P0, delayed=True).ev(1600, "rmaps_exit").zap_exit(1700)
          .mkclean(1250, 1550, P0)                          # overlaps, but the window is closed
          .zap(2000).dirty(2050, P1).rmap(2100, P1).flush(2200, 2300).zap_exit(2400)
          .mkclean(2150, None, P1))                         # never returned before the trace ended
    _, g = table(tmp_path, tb)
    assert row(g, P0)["hits"] == 0
    assert row(g, P1)["hits"] == 1


def test_multi_page_decrement_is_expanded_per_page(tmp_path):
    tb = TraceBuilder().zap(100).rmap(200, P0, nr=4).flush(300, 400).zap_exit(500)
    _, g = table(tmp_path, tb)
    assert list(g["page"]) == [P0, P0 + 64, P0 + 128, P0 + 192]
    assert list(g["pfn"] - g["pfn"].iloc[0]) == [0, 1, 2, 3]
    assert set(g["gap_ns"]) == {200}


def test_pg_dirty_is_not_the_criterion_and_old_markers_do_not_count(tmp_path):
    tb = (TraceBuilder()
          .zap(100).dirty(150, P1).rmap(160, P1).flush(170, 180).zap_exit(190)   # zap 1 marks P1
          .zap(200).rmap(250, P0, pgdirty=True)       # PG_dirty from earlier writes, PTE clean
          .rmap(260, P1)                              # marker from the previous zap only
          .rmap(270, P2, anon=True).dirty(265, P2)    # anon stays anon
          .flush(300, 400).zap_exit(500))
    _, g = table(tmp_path, tb)
    r0 = row(g, P0)
    assert r0["class"] == "file-clean" and r0["pg_dirty"]
    p1 = g[(g["page"] == P1)].sort_values("ts")
    assert list(p1["class"]) == ["file-dirty", "file-clean"]
    assert row(g, P2)["class"] == "anon"


def test_lost_events_mark_unpaired_reason_and_suspects(tmp_path):
    tb = (TraceBuilder().zap(100).rmap(200, P1).flush(300, 400).zap_exit(500)      # before any loss
          .zap(5_000_000).rmap(5_000_100, P0).zap_exit(5_000_400))                 # its flush was lost
    # cumulative lost count per STAT chunk: nothing by 1 ms, 2 by 9 ms
    t, g = table(tmp_path, tb, lost={"flush_range_exit": 2}, stats=[(1_000_000, 0), (9_000_000, 2)])
    assert t.lost_events == 2
    r0, r1 = row(g, P0), row(g, P1)
    assert not r0["paired"] and r0["unpaired_reason"] == G.R_LOST and r0["loss_suspect"]
    assert r1["paired"] and not r1["loss_suspect"]


def test_falls_back_to_tlb_flush_mmu_without_the_arch_flush(tmp_path):
    probes = ("zap", "rmap", "dirty", "tlb_flush", "flush_rmaps", "mkclean")
    tb = TraceBuilder(probes=probes).zap(100).rmap(200, P0).mmu(300, 450).zap_exit(500)
    _, g = table(tmp_path, tb)
    r = row(g, P0)
    assert r["flush_source"] == "tlb_flush_mmu" and r["gap_ns"] == 250


def test_missing_flush_return_is_not_taken_from_the_next_call(tmp_path):
    tb = (TraceBuilder().zap(100).rmap(200, P0)
          .ev(300, "flush_range_enter")                 # its return was lost
          .ev(400, "flush_range_enter").ev(500, "flush_range_exit").zap_exit(600))
    _, g = table(tmp_path, tb)
    r = row(g, P0)
    assert not r["paired"] and r["unpaired_reason"] == G.R_NO_RETURN


def test_empty_trace(tmp_path):
    _, g = table(tmp_path, TraceBuilder())
    assert len(g) == 0 and "gap_ns" in g.columns


def test_mkclean_without_return_ends_before_the_folios_next_mkclean(tmp_path):
    # window [250, 400]; the first mkclean's return was lost: it ended by 260 at the latest
    tb = (TraceBuilder().mkclean(100, None, P0, tid=900)
          .zap(150).dirty(200, P0).rmap(250, P0).flush(300, 400).zap_exit(450)
          .mkclean(260, 300, P0, tid=901))
    _, g = table(tmp_path, tb)
    assert row(g, P0)["hits"] == 2


def test_a_removal_outside_any_zap_never_inherits_the_last_zaps_marker(tmp_path):
    tb = (TraceBuilder().zap(100).dirty(150, P0).rmap(200, P0).flush(300, 400).zap_exit(500)
          .rmap(600, P0, in_zap=False))                          # e.g. migration of the same folio later
    _, g = table(tmp_path, tb)
    inside, outside = row(g, P0, "immediate"), row(g, P0, "other-path")
    assert inside["class"] == "file-dirty"
    assert outside["class"] == "file-clean" and not outside["pte_dirty"]


def test_a_mkclean_without_return_ends_when_its_task_starts_another(tmp_path):
    # tid 999's mkclean of P0 at 100 has no return; the same task starts a mkclean of P1
    # at 150, so the first had ended by then: P0's window [200, 400] is not hit.
    tb = (TraceBuilder().mkclean(100, None, P0).mkclean(150, 160, P1)
          .zap(180).dirty(190, P0).rmap(200, P0).flush(300, 400).zap_exit(500))
    _, g = table(tmp_path, tb)
    assert row(g, P0)["open"] and row(g, P0)["hits"] == 0
    # without the second call it runs to the end of the trace: a hit
    tb = (TraceBuilder().mkclean(100, None, P0)
          .zap(180).dirty(190, P0).rmap(200, P0).flush(300, 400).zap_exit(500))
    _, g = table(tmp_path, tb)
    assert row(g, P0)["hits"] == 1


def test_gap_mmu_is_only_defined_where_tlb_flush_mmu_covers_the_row(tmp_path):
    # 6.12: an earlier tlb_flush_mmu in the same zap does not cover a delayed decrement
    tb = (TraceBuilder().zap(1000).mmu(1010, 1020).dirty(1100, P0).flush(1200, 1300)
          .ev(1400, "rmaps_enter").rmap(1500, P0, delayed=True).ev(1700, "rmaps_exit").zap_exit(2000))
    _, g = table(tmp_path, tb)
    r = row(g, P0)
    assert r["path"] == "delayed" and r["gap_ns"] == -200 and r["gap_mmu_ns"] is pd.NA


def test_a_marker_classes_only_the_batch_it_precedes(tmp_path):
    # 6.12+ large folio mapped by PTEs across two batches (e.g. two page tables): the first
    # batch was dirty (marker, delayed would follow on a real kernel), the second was clean.
    F = page(0)
    tb = (TraceBuilder().zap(100).dirty(110, F).rmap(120, F, nr=16).rmap(130, page(16), folio=F, nr=16)
          .flush(200, 300).zap_exit(400))
    _, g = table(tmp_path, tb)
    first, second = g[g["ts"] == 120], g[g["ts"] == 130]
    assert len(first) == 16 and (first["class"] == "file-dirty").all()
    assert len(second) == 16 and (second["class"] == "file-clean").all()


def test_a_marker_taken_by_a_delayed_batch_does_not_class_a_clean_immediate_one(tmp_path):
    # Measured on 6.12 with an XFS large folio: dirty 1-page batch (marker, rmap delayed),
    # then a clean 5-page batch of the same folio decremented at once.
    F = page(0)
    tb = (TraceBuilder().zap(100).dirty(110, F).rmap(120, page(1), folio=F, nr=5)
          .flush(200, 300).ev(310, "rmaps_enter").rmap(320, F, delayed=True).ev(330, "rmaps_exit")
          .zap_exit(400))
    _, g = table(tmp_path, tb)
    clean, dirty = g[g["ts"] == 120], g[g["ts"] == 320]
    assert len(clean) == 5 and (clean["class"] == "file-clean").all() and (clean["path"] == "immediate").all()
    assert (dirty["class"] == "file-dirty").all() and (dirty["path"] == "delayed").all()


def test_a_closed_window_bypassed_by_writeback(tmp_path):
    # 7.2 PT_RECLAIM shape: the zap clears a dirty PTE (marker), detaches the empty table,
    # then flushes and drops the delayed rmap.  A folio_mkclean that starts after the clear
    # and returns before the flush completed did not wait for the PTE lock: a bypass.  One
    # that waited (returns after the flush) or began before the clear is none; the window
    # is still closed by the mapcount (gap < 0).
    tb = (TraceBuilder().zap(1000).dirty(1100, P0).dirty(1150, P1).dirty(1160, P2)
          .flush(1300, 1400).rmaps(1410, 1500)
          .rmap(1420, P0, delayed=True).rmap(1430, P1, delayed=True).rmap(1440, P2, delayed=True).zap_exit(1600)
          .mkclean(1200, 1250, P0)            # inside (clear, flush done): bypass
          .mkclean(1100, 1250, P1)            # began at the clear's bound itself: not after it
          .mkclean(1300, 1450, P2))           # returned after the flush: it waited
    _, g = table(tmp_path, tb)
    r0, r1, r2 = row(g, P0), row(g, P1), row(g, P2)
    assert (r0["path"], r0["gap_ns"], r0["open"], r0["hits"], r0["clear_ts"], r0["bypass"]) == \
        ("delayed", -20, False, 0, 1100, 1)
    assert (r1["clear_ts"], r1["bypass"]) == (1150, 0)
    assert (r2["clear_ts"], r2["bypass"]) == (1160, 0)


def test_a_patched_pmd_window_bypassed(tmp_path):
    # A closed PMD window (flush under the lock) with writeback inside (clear, flush done).
    tb = (TraceBuilder().zap(1000).zap_pmd(1010).flush(1020, 1040).rmap(1050, P1, compound=True, nr=512)
          .dirty(1055, P1).zap_exit(1100).mkclean(1015, 1030, P1))
    _, g = table(tmp_path, tb)
    r1 = row(g, P1)
    assert (r1["gap_ns"], r1["clear_ts"], r1["bypass"]) == (-10, 1010, 1)


def test_no_bypass_search_without_a_clear_bound(tmp_path):
    # a delayed decrement whose marker was in an earlier zap: no bound, no bypass counted
    tb = (TraceBuilder().zap(100).dirty(110, P0).zap_exit(120)
          .zap(1000).flush(1300, 1400).rmaps(1410, 1500).rmap(1420, P0, delayed=True).zap_exit(1600)
          .mkclean(1200, 1250, P0))
    _, g = table(tmp_path, tb)
    r0 = row(g, P0)
    assert pd.isna(r0["clear_ts"]) and r0["bypass"] == 0
