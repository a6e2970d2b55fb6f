"""`zaptrace report`: text, --json and --html on hand-computed traces (see reportdata.py)."""
import base64
import json
import math
from html.parser import HTMLParser

import pytest

from zaptrace import analysis
from zaptrace.analysis import report
from zaptrace.analysis.gaps import R_NO_FLUSH_AFTER, R_OTHER
from tests.analysis.reportdata import class_rows, run, trace_a, trace_b
from tests.synth import TraceBuilder, page


@pytest.fixture
def a_path(tmp_path):
    return trace_a(tmp_path / "a.zt")


def test_text_report_has_the_hand_computed_figures(a_path):
    r = run("report", a_path)
    assert r.exit_code == 0, r.stdout + r.stderr
    t = r.stdout
    rows = class_rows(t)
    #                          dec  paired unpaired delayed open closed p50    p90     p99     max     hits
    assert rows[("anon", "all")] == ["1", "1", "0", "0", "1", "0", "+0.7", "+0.7", "+0.7", "+0.7", "0"]
    assert rows[("file-clean", "all")] == ["2", "1", "1", "0", "1", "0", "+0.5", "+0.5", "+0.5", "+0.5", "0"]
    assert rows[("file-dirty", "all")] == ["2", "2", "0", "0", "2", "0", "+0.9", "+1.0", "+1.0", "+1.0", "1"]
    assert rows[("file-dirty", "immediate")] == rows[("file-dirty", "all")]
    assert rows[("file-dirty", "delayed")] == ["0", "0", "0", "0", "0", "0", "-", "-", "-", "-", "0"]
    assert "kernel:    6.1.0-test" in t
    assert "command:   synthetic" in t
    assert "events:    18 total: zap_enter 2, zap_exit 2, rmap 6, dirty 2, tlb_flush_enter 1," in t
    assert "lost:      0 events" in t
    assert "a window closes when flush_tlb_mm_range returns" in t
    assert "other-path removals (never paired): 1" in t and R_OTHER in t
    assert "unpaired decrements: 1" in t and R_NO_FLUSH_AFTER in t
    assert "window hits (mkclean of the folio inside an open window): 1" in t
    hit = [line.split() for line in t.splitlines() if "0x10000" in line]
    #            dec ms   pfn        class         path         gap     zap     mkclean  start   took   ret
    assert hit == [["0.000", "0x10000", "file-dirty", "immediate", "+1.0", "100/0", "999/1", "+0.7", "0.1", "1"]]
    assert ("Verdict: dirty file pages: the seed's race is open on the immediate (PTE) path\n"
            "  immediate (PTE) path: mapcount dropped before the flush in 2 of 2 paired decrements "
            "(gap p50 +0.9 us); writeback inside 1 window: the seed's race is open here\n") in t
    assert r.stderr == ""       # small trace: no progress lines


def test_delayed_rmap_trace_shows_closed_windows(tmp_path):
    r = run("report", trace_b(tmp_path / "b.zt"))
    rows = class_rows(r.stdout)
    assert rows[("file-dirty", "delayed")] == ["1", "1", "0", "1", "0", "1", "-0.2", "-0.2", "-0.2", "-0.2", "0"]
    assert rows[("anon", "immediate")][:7] == ["1", "1", "0", "0", "1", "0", "+0.2"]
    assert ("  delayed (PTE) path: mapcount dropped before the flush in 0 of 1 paired decrement "
            "(gap p50 -0.2 us): closed (the mapcount drops after the flush)\n") in r.stdout
    assert "window hits (mkclean of the folio inside an open window): 0" in r.stdout


def test_json_has_the_schema_keys_and_values(a_path):
    r = run("report", a_path, "--json")
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    for k in ("schema", "kernel", "events", "lost_events", "classes", "window_hits"):
        assert k in s
    assert s["schema"] == "zaptrace.report/1" and s["kernel"] == "6.1.0-test"
    assert s["lost_events"] == 0 and s["window_hits"] == 1 and s["events"]["rmap"] == 6
    fd = s["classes"]["file-dirty"]
    for k in ("decrements", "paired", "unpaired", "delayed", "open", "closed", "hits", "gap_ns"):
        assert k in fd
    assert (fd["decrements"], fd["paired"], fd["open"], fd["closed"], fd["hits"]) == (2, 2, 2, 0, 1)
    assert fd["gap_ns"] == {"min": 800.0, "p50": 900.0, "p90": 980.0, "p99": 998.0, "max": 1000.0}
    fc = s["classes"]["file-clean"]
    assert (fc["unpaired"], fc["gap_ns"]["p50"]) == (1, 500.0)
    assert s["classes"]["anon"]["gap_ns"]["max"] == 700.0
    assert s["other_path"]["count"] == 1


def test_lost_events_and_damage_are_said_clearly(tmp_path):
    path = trace_a(tmp_path / "l.zt", lost={"rmap": 3, "flush_range_exit": 1})
    with open(path, "ab") as f:
        f.write(b"ZTC1 garbage that is not a chunk")
    t = run("report", path).stdout
    assert "lost:      4 events LOST (ring buffer full): rmap 3, flush_range_exit 1" in t
    assert "PROBLEMS:  the trace is damaged or incomplete" in t and "corrupt chunk header" in t
    assert "decrements fall where events were lost" in t

    unfinished = trace_a(tmp_path / "u.zt", end=False)
    t = run("report", unfinished).stdout
    assert "(recording did not finish)" in t and "no END chunk" in t
    assert "lost:      unknown" in t


def test_hits_option_limits_the_hit_rows(tmp_path):
    tb = TraceBuilder().zap(100)
    for i in range(5):
        tb.dirty(110 + i, page(i)).rmap(120 + 10 * i, page(i)).mkclean(300, 310, page(i), tid=900 + i)
    tb.flush(400, 500).zap_exit(600)
    path = tb.write(tmp_path / "h.zt")
    t = run("report", path, "--hits", "2").stdout
    assert "window hits (mkclean of the folio inside an open window): 5" in t
    assert "... 3 more (--hits N shows more)" in t
    assert "more (--hits" not in run("report", path, "--hits", "-1").stdout


def test_progress_lines_for_large_traces(a_path, monkeypatch):
    lines = []
    monkeypatch.setattr(report, "PROGRESS_EVENTS", 0)
    report.analyse(a_path, lines.append)
    stages = [line.split("] ", 1)[1] for line in lines]
    assert stages[0].startswith("reading") and "gap table" in stages and stages[-1] == "done"
    assert all(line.startswith("zaptrace: [") and " s] " in line for line in lines)
    r = run("report", a_path, "--quiet")
    assert r.stderr == ""


def test_fmt_us():
    assert report.fmt_us(12_345) == "+12.3"
    assert report.fmt_us(-800) == "-0.8"
    assert report.fmt_us(4) == "+0.004"
    assert report.fmt_us(0) == "+0.0"
    assert report.fmt_us(None) == "-" and report.fmt_us(math.nan) == "-"


class _Doc(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.urls, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data):
        self.text.append(data)


def _parse(path):
    doc = _Doc()
    doc.feed(open(path, encoding="utf-8").read())
    doc.close()
    return doc


def test_html_is_self_contained_with_three_figures(a_path, tmp_path):
    out = tmp_path / "r.html"
    r = run("report", a_path, "--html", out)
    assert r.exit_code == 0, r.stderr
    assert "wrote" in r.stderr and "class" in r.stdout       # the text report still goes to stdout
    doc = _parse(out)
    assert doc.tags.count("img") == 3 and doc.tags.count("table") >= 4
    assert all(u.startswith("data:image/png;base64,") for u in doc.urls), doc.urls
    for u in doc.urls:
        assert base64.b64decode(u.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in "".join(doc.text) and "<link" not in open(out).read()
    text = " ".join(doc.text)
    assert "6.1.0-test" in text and "file-dirty" in text and "0x10000" in text


def test_html_of_an_empty_trace(tmp_path):
    path = TraceBuilder().write(tmp_path / "e.zt")
    out = tmp_path / "e.html"
    assert run("report", path, "--html", out).exit_code == 0
    assert _parse(out).tags.count("img") == 3


def test_json_and_html_together(a_path, tmp_path):
    r = run("report", a_path, "--json", "--html", tmp_path / "x.html")
    assert json.loads(r.stdout)["window_hits"] == 1 and (tmp_path / "x.html").exists()


def test_pick_zap_prefers_hits_then_size(a_path, tmp_path):
    from zaptrace.analysis.html import pick_zap
    t = analysis.load(a_path)
    assert pick_zap(analysis.gap_table(t)) == (100, 1000)
    tb = (TraceBuilder().zap(100).rmap(110, page(0)).flush(120, 130).zap_exit(140)
          .zap(200).rmap(210, page(1)).rmap(220, page(2)).flush(230, 240).zap_exit(250))
    t = analysis.load(tb.write(tmp_path / "p.zt"))
    assert pick_zap(analysis.gap_table(t)) == (100, 200)


def test_zaps_counted_and_not_written_are_reported(tmp_path):
    # The recorder counts zaps with nothing inside them instead of writing them (END.zaps_not_written).
    p = trace_a(tmp_path / "z.zt", end_extra={"zaps_not_written": 12345})
    assert analysis.load(p).zaps_not_written == 12345
    r = run("report", p)
    assert r.exit_code == 0, r.stderr
    assert "and 12,345 zaps with nothing inside them: counted, not written" in r.stdout
    assert json.loads(run("report", p, "--json").stdout)["zaps_not_written"] == 12345
    # a trace from before the change says nothing about it
    q = trace_a(tmp_path / "old.zt")
    assert analysis.load(q).zaps_not_written is None
    assert "zaps with nothing inside" not in run("report", q).stdout


def test_probe_hits_the_kernel_skipped_are_reported(tmp_path):
    # record reads each program's recursion_misses (END.probe_misses): events never made.
    p = trace_a(tmp_path / "m.zt", end_extra={"probe_misses": {"kfunc__folio_mark_dirty": 1636,
                                                                "kretfunc__flush_tlb_mm_range": 19}})
    r = run("report", p)
    assert r.exit_code == 0, r.stderr
    assert ("skipped:   1,655 probe hits skipped by the kernel (a BPF program already running on that CPU), "
            "their events missing: kfunc__folio_mark_dirty 1,636, kretfunc__flush_tlb_mm_range 19") in r.stdout
    assert json.loads(run("report", p, "--json").stdout)["probe_misses"]["kfunc__folio_mark_dirty"] == 1636
    q = trace_a(tmp_path / "old.zt")                 # before the count: nothing said
    assert "skipped:" not in run("report", q).stdout
    assert json.loads(run("report", q, "--json").stdout)["probe_misses"] is None
