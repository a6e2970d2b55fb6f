"""Lost writes joined with a trace by file position: small hand-made traces + findings."""
import json

import pytest

from zaptrace import analysis
from zaptrace.analysis import lostwrites as LW
from zaptrace.analysis.errors import AnalysisError
from zaptrace.analysis.report import analyse, render_text
from tests.synth import TraceBuilder, page

INO = 4242


def findings(tmp_path, lost, ino=INO):
    doc = {"schema": "zaptrace.lostwrite/1", "file": "/scratch/f", "dev": 1, "ino": ino, "page_size": 4096,
           "pages": 8, "passes": 10, "visits": 80, "zaps": 9, "duration_s": 1.0, "mapping": "default", "evict": True,
           "lost": [{"page": pg, "offset": pg * 4096, "expected": 7, "found": 6, "written_ns": [w0, w1],
                     "found_ns": f} for pg, w0, w1, f in lost]}
    p = tmp_path / "f.json"
    p.write_text(json.dumps(doc))
    return str(p)


def trace(tmp_path):
    F0, F1 = page(0), page(8)          # two folios: file pages 3 (order 0) and 16..23 (a PTE batch)
    tb = (TraceBuilder()
          .zap(1000).dirty(1050, F0).rmap(1100, F0, ino=INO, index=3).flush(1500, 2000).zap_exit(2100)
          .mkclean(1200, 1300, F0, ino=INO, index=3)                       # inside [1100, 2000]: a hit
          .zap(3000).dirty(3050, F1).rmap(3100, F1, nr=8, ino=INO, index=16).flush(3200, 3400).zap_exit(3500)
          .mkclean(3300, 3350, F1, ino=INO, index=16)                      # inside [3100, 3400]
          .zap(5000).dirty(5050, page(16)).rmap(5100, page(16), ino=INO, index=5).flush(5200, 5300)
          .zap_exit(5400))                                                 # open, but no mkclean inside
    return tb.write(tmp_path / "t.zt")


def test_each_lost_write_is_tied_to_its_window_or_counted_unexplained(tmp_path):
    t = analysis.load(trace(tmp_path))
    g = analysis.gap_table(t)
    assert sorted(g["index"].tolist()) == [3, 5] + list(range(16, 24))   # the batch's pages expanded
    f = LW.load_findings(findings(tmp_path, [
        (3, 1700, 1800, 9000),        # written inside page 3's window [1100, 2000]: explained
        (19, 3250, 3260, 9000),       # page 19 of the batch, inside [3100, 3400]: explained
        (5, 5150, 5160, 9000),        # open window but no writeback inside: unexplained
        (3, 2500, 2600, 9000),        # page 3 written after its window closed: unexplained
        (6, 1700, 1800, 9000),        # a page with no recorded decrement: unexplained
    ]))
    j = LW.join(t, g, f)
    assert j["explained"].tolist() == [True, True, False, False, False]
    r0, r1 = j.iloc[0], j.iloc[1]
    assert (r0["path"], r0["class"], r0["dec_ts"], r0["gap_ns"], r0["mkclean_enter_ts"], r0["flush_done_ts"]) == \
        ("immediate", "file-dirty", 1100, 900, 1200, 2000)
    assert (r1["dec_ts"], r1["mkclean_enter_ts"]) == (3100, 3300)
    assert all(str(j[c].dtype) == "Int64" for c in LW.WINDOW_COLUMNS)      # exact, NA when unexplained
    assert j["dec_ts"].isna().tolist() == [False, False, True, True, True]
    assert j["windows_of_page"].tolist() == [1, 1, 1, 1, 0]
    s = LW.summarize(j, f, t)
    assert (s["lost_writes"], s["explained"], s["unexplained"], s["by_path"]) == (5, 2, 3, {"immediate": 2})
    assert s["windows"] == 2                # pages 3 and 19: two decrements, two windows


def test_a_pmd_decrement_covers_its_512_pages(tmp_path):
    tb = (TraceBuilder().zap(100).rmap(150, page(0), compound=True, nr=512, ino=INO, index=512)
          .dirty(160, page(0)).flush(300, 400).zap_exit(500).mkclean(200, 250, page(0), ino=INO, index=512))
    t = analysis.load(tb.write(tmp_path / "t.zt"))
    f = LW.load_findings(findings(tmp_path, [(700, 180, 190, 900), (1100, 180, 190, 900)]))
    j = LW.join(t, analysis.gap_table(t), f)
    assert j["explained"].tolist() == [True, False]        # 512..1023 covered, 1100 not
    j2 = LW.join(t, analysis.gap_table(t), LW.load_findings(findings(tmp_path, [(p, 180, 190, 900) for p in (600, 700, 1000)])))
    assert j2["explained"].all() and LW.windows(j2) == 1    # three pages lost through one PMD window
    assert j.iloc[0]["path"] == "pmd" and j.iloc[0]["class"] == "file-dirty"


def test_another_files_windows_explain_nothing(tmp_path):
    t = analysis.load(trace(tmp_path))
    j = LW.join(t, analysis.gap_table(t), LW.load_findings(findings(tmp_path, [(3, 1700, 1800, 9000)], ino=7)))
    assert not j["explained"].any()


def test_report_text_and_json_with_findings(tmp_path):
    a = analyse(trace(tmp_path), findings=findings(tmp_path, [(3, 1700, 1800, 9000), (6, 1700, 1800, 9000)]))
    text = render_text(a)
    assert "lost writes (found by content in /scratch/f, inode 4242): 2; explained by" in text
    assert "immediate file-dirty" in text and "UNEXPLAINED" in text
    assert a.summary["lost_writes"]["explained"] == 1
    assert "explained by a recorded window of that page with writeback inside (open, or bypassed): 1, in 1 window\n" in text


def test_nothing_lost_is_an_empty_table_and_a_plain_line(tmp_path):
    a = analyse(trace(tmp_path), findings=findings(tmp_path, []))
    s = a.summary["lost_writes"]
    assert (s["lost_writes"], s["explained"], s["unexplained"], s["windows"], s["rows"]) == (0, 0, 0, 0, [])
    assert list(a.lost.columns) == LW.COLUMNS
    assert "lost writes (found by content in /scratch/f, inode 4242): none in 80 page visits\n" in render_text(a)


@pytest.mark.parametrize("content, message", [
    ("{", "not JSON"), ('{"schema": "other"}', "not a lostwrite findings file"),
    ('{"schema": "zaptrace.lostwrite/1"}', "findings without 'ino'"),
])
def test_bad_findings_are_one_line_errors(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(AnalysisError, match=message):
        LW.load_findings(str(p))
    with pytest.raises(AnalysisError, match="cannot read findings"):
        LW.load_findings(str(tmp_path / "missing.json"))


def test_old_traces_without_file_positions_say_so(tmp_path):
    from tests.analysis.reportdata import trace_a
    from zaptrace.analysis.report import analyse as an
    with pytest.raises(AnalysisError, match="recorded without file positions"):
        import numpy as np
        t = analysis.load(trace_a(tmp_path / "a.zt"))
        g = analysis.gap_table(t).drop(columns=["ino", "index"])
        LW.join(t, g, LW.load_findings(findings(tmp_path, [])))


def test_html_report_marks_the_lost_write(tmp_path):
    from zaptrace.analysis.html import render_html
    a = analyse(trace(tmp_path), findings=findings(tmp_path, [(3, 1700, 1800, 9000)]))
    page = render_html(a)
    assert "Lost writes: 1 (explained: 1, unexplained: 0)" in page
    assert "Timeline of the zap behind the lost write on page 3" in page


# -- the store's own span and the chance baseline (issue 24, item 3) -----------------------------

#: 20 control visits that lost nothing: (page, visit from, visit to, store from, store to), against
#: trace(): page 3's window [1100, 2000] and pages 16..23's [3100, 3400] have a mkclean inside;
#: page 5's [5100, 5300] is open with no mkclean.
CONTROL = [
    (3, 1000, 1200, 1150, 1200),     # store inside page 3's window: explained by both spans
    (3, 1900, 2100, 2000, 2100),     # store starts as the flush completes (2000): both
    (20, 3000, 3200, 3150, 3200),    # page 20 of the batch: both
    (3, 500, 1150, 600, 700),        # the visit reaches into the window, its store does not: visit only
    (17, 3350, 3600, 3500, 3600),    # the same, at the batch's end: visit only
    (5, 5000, 5400, 5150, 5200),     # page 5: an open window without writeback inside: neither
    (4, 1000, 2000, 1500, 1600),     # a page without any window: neither
    (3, 2500, 2600, 2550, 2600),     # page 3 after its window closed: neither
    (24, 3000, 3400, 3200, 3300),    # one page past the batch: neither
] + [(6, t, t + 100, t + 50, t + 100) for t in range(1000, 12000, 1000)]    # 11 more: neither


def findings_v2(tmp_path, lost, control=CONTROL, seen=300, time_stores=True):
    """Findings as the detector writes them since --time-stores and --control-sample."""
    doc = json.loads(open(findings(tmp_path, [])).read())
    doc.update(time_stores=time_stores, fault_first=True, writeback="msync", control_sample=len(control),
               control_seen=seen, lost=[{"page": pg, "offset": pg * 4096, "expected": 7, "found": 6,
                                         "written_ns": [w0, w1], "store_ns": [s0, s1], "found_ns": 9000}
                                        for pg, w0, w1, s0, s1 in lost])
    if time_stores:
        doc.update(control_columns=["page", "visit_from_ns", "visit_to_ns", "store_from_ns", "store_to_ns"],
                   control=[list(c) for c in control])
    else:
        doc.update(control_columns=["page", "visit_from_ns", "visit_to_ns"], control=[list(c[:3]) for c in control])
        for x in doc["lost"]:
            del x["store_ns"]
    p = tmp_path / "f2.json"
    p.write_text(json.dumps(doc))
    return str(p)


LOST_V2 = [(3, 500, 1150, 600, 700),       # the visit overlaps page 3's window, the store does not
           (19, 3200, 3300, 3250, 3260)]   # the store inside the batch's window


def test_the_same_join_on_the_control_sample_gives_the_chance_baseline(tmp_path):
    t = analysis.load(trace(tmp_path))
    g = analysis.gap_table(t)
    f = LW.load_findings(findings_v2(tmp_path, LOST_V2))
    win = LW.Windows(t, g, INO)
    ctl = LW.control_rows(f)
    assert win.explains(ctl["page"], ctl["store_from_ns"], ctl["store_to_ns"]).tolist() == [True] * 3 + [False] * 17
    assert win.explains(ctl["page"], ctl["visit_from_ns"], ctl["visit_to_ns"]).tolist() == [True] * 5 + [False] * 15
    # chunked: the same answer one visit at a time
    assert win.explains(ctl["page"], ctl["visit_from_ns"], ctl["visit_to_ns"], chunk_pairs=1).sum() == 5
    c = LW.chance(t, g, f)
    assert c == {"sample": 20, "population": 300, "span": "store", "explained": 3, "share": 0.15,
                 "by_span": {"store": {"explained": 3, "share": 0.15}, "visit": {"explained": 5, "share": 0.25}}}
    j = LW.join(t, g, f)
    assert j["span"].tolist() == ["store", "store"]
    assert j["explained"].tolist() == [False, True] and j["explained_visit"].tolist() == [True, True]
    assert (j["store_ns"].tolist(), j["store_end_ns"].tolist()) == ([600, 3250], [700, 3260])


def test_the_report_prints_the_chance_beside_the_explained_count(tmp_path):
    a = analyse(trace(tmp_path), findings=findings_v2(tmp_path, LOST_V2))
    text = render_text(a)
    assert ("  explained: 1 of 2 (the store's span; the visit's: 2); chance: 15.0 % of 20 random visits of 300 "
            "that lost nothing (3; the store's span; the visit's span: 25.0 % (5))\n") in text
    s = a.summary["lost_writes"]
    assert (s["explained"], s["span"], s["explained_by_span"]) == (1, "store", {"store": 1, "visit": 2})
    assert s["chance"]["share"] == 0.15 and s["chance"]["span"] == "store" and s["chance"]["sample"] == 20
    assert s["findings"]["writeback"] == "msync" and s["findings"]["control_seen"] == 300
    # nothing lost: the baseline still says how often the join explains a visit by chance
    text = render_text(analyse(trace(tmp_path), findings=findings_v2(tmp_path, [])))
    assert ("none in 80 page visits\n  chance: 15.0 % of 20 random visits of 300 that lost nothing (3; the "
            "store's span; the visit's span: 25.0 % (5))\n") in text


def test_without_the_store_span_the_visit_span_is_joined(tmp_path):
    a = analyse(trace(tmp_path), findings=findings_v2(tmp_path, LOST_V2, time_stores=False))
    s = a.summary["lost_writes"]
    assert (s["explained"], s["span"], s["explained_by_span"]) == (2, "visit", {"visit": 2})
    assert s["chance"] == {"sample": 20, "population": 300, "span": "visit", "explained": 5, "share": 0.25,
                           "by_span": {"visit": {"explained": 5, "share": 0.25}}}
    assert ("explained: 2 of 2 (the visit's span); chance: 25.0 % of 20 random visits of 300 that lost nothing "
            "(5; the visit's span)\n") in render_text(a)
    assert a.lost["store_ns"].isna().all()


def test_an_old_findings_file_says_the_chance_was_not_measured(tmp_path):
    a = analyse(trace(tmp_path), findings=findings(tmp_path, [(3, 1700, 1800, 9000), (6, 1700, 1800, 9000)]))
    s = a.summary["lost_writes"]
    assert s["chance"] is None and s["span"] == "visit" and s["explained"] == 1
    text = render_text(a)
    assert ("  explained: 1 of 2 (the visit's span); chance: not measured (no control sample in the findings)\n"
            in text)
    assert "chance: not measured (no control sample in the findings)" in render_text(
        analyse(trace(tmp_path), findings=findings(tmp_path, [])))
    empty = findings_v2(tmp_path, [], control=[])
    assert "chance: not measured (the control sample is empty)" in render_text(analyse(trace(tmp_path), findings=empty))


def test_report_json_has_the_chance(tmp_path):
    from tests.analysis.reportdata import run as run_cli
    r = run_cli("report", "--json", "--findings", findings_v2(tmp_path, LOST_V2), trace(tmp_path))
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)["lost_writes"]
    assert s["chance"]["explained"] == 3 and s["chance"]["by_span"]["visit"]["share"] == 0.25
    assert [row["store_ns"] for row in s["rows"]] == [600, 3250]


def test_the_control_join_is_the_lost_write_join_on_random_inputs():
    """Windows.explains (sorted windows, pairs in chunks) answers as Windows.first, one visit at a time."""
    import numpy as np
    rng = np.random.default_rng(24)
    for _ in range(20):
        w = LW.Windows.__new__(LW.Windows)
        nw = int(rng.integers(1, 40))
        w.lo = rng.integers(0, 30, nw)
        w.hi = w.lo + rng.integers(0, 8, nw)
        w.ts = rng.integers(0, 10_000, nw)
        w.done = w.ts + rng.integers(0, rng.choice([50, 3_000]), nw)
        w.rows = np.arange(nw)
        n = 300
        pages, a = rng.integers(0, 40, n), rng.integers(-500, 11_000, n)
        b = a + rng.integers(0, 400, n)
        want = [w.first(int(p), int(x), int(y)) is not None for p, x, y in zip(pages, a, b)]
        for chunk in (1, 7, 1 << 22):
            assert w.explains(pages, a, b, chunk_pairs=chunk).tolist() == want


def test_a_lost_write_explained_by_a_bypassed_window(tmp_path):
    # 7.2, PTE mappings, PT_RECLAIM: the delayed rmap closes the window (gap < 0), but a mkclean
    # ran between the PTE's clear (the dirty marker) and the flush: a store in [clear, flush
    # done] is explained by that bypass; the same store outside it is not.
    from tests.synth import TraceBuilder, page
    P0 = page(0)
    ino = 77
    tb = (TraceBuilder().zap(1000).dirty(1100, P0).flush(1300, 1400).rmaps(1410, 1500)
          .rmap(1420, P0, delayed=True, ino=ino, index=5).zap_exit(1600)
          .mkclean(1200, 1250, P0, ino=ino, index=5))
    t = analysis.load(tb.write(tmp_path / "t.zt"))
    g = analysis.gap_table(t)
    doc = {"schema": "zaptrace.lostwrite/1", "ino": ino, "page_size": 4096, "time_stores": True, "lost": [
        {"page": 5, "offset": 5 * 4096, "expected": 9, "found": 8, "written_ns": [900, 1350],
         "store_ns": [1320, 1330], "found_ns": 5000},
        {"page": 5, "offset": 5 * 4096, "expected": 12, "found": 11, "written_ns": [1500, 1700],
         "store_ns": [1600, 1610], "found_ns": 6000}]}
    table = LW.join(t, g, doc)
    assert table["explained"].tolist() == [True, False]
    r = table.iloc[0]
    assert (r["path"], r["window"], r["class"], r["gap_ns"], r["mkclean_enter_ts"]) == \
        ("delayed", "bypass", "file-dirty", -20, 1200)
    s = LW.summarize(table, doc, t)
    assert s["by_window"] == {"bypass": 1} and s["by_path"] == {"delayed": 1}
