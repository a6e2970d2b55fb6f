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
    assert "explained by a recorded open window of that page with writeback inside: 1, in 1 window\n" in text


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
