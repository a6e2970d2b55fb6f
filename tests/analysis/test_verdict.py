"""The verdict (analysis/verdict.py): `report` and `compare` open with it, in text, --json and HTML.

Trace V (kernel "7.2.0-test": an open PMD window hit by writeback, a closed delayed window)::

    tid 100, cpu 0   zap 100..400 us
                     zap_pmd 110, rmap P0 120 (PMD, 512 pages), dirty P0 125   file-dirty pmd   gap 260-120 = +140 us
                     rmap P1 130 (anon)                                         anon immediate   gap +130 us
                     rmap P2 135                                                file-clean       gap +125 us
                     dirty P3 140
                     flush_tlb_mm_range 200..260
                     tlb_flush_rmaps 270..300 { rmap P3 280 }                   file-dirty delayed  gap -20 us
    tid 999, cpu 1   mkclean P0 150..170                                        inside P0's window: 1 hit
"""
import json
import os

import pytest

from zaptrace.analysis import verdict as V
from tests.analysis.reportdata import run, trace_a, trace_b
from tests.analysis.test_report import _parse
from tests.synth import TraceBuilder, page

P = [page(i) for i in range(4)]
US = 1000

PMD_OPEN = ("PMD path: mapcount dropped before the flush in 1 of 1 paired decrement (gap p50 +140.0 us); "
            "writeback inside 1 window: the seed's race is open here")
DELAYED_CLOSED = ("delayed (PTE) path: mapcount dropped before the flush in 0 of 1 paired decrement "
                  "(gap p50 -20.0 us): closed (the mapcount drops after the flush)")
HEADLINE = "dirty file pages: the seed's race is open on the PMD path"


def trace_v(path, **kw) -> str:
    tb = (TraceBuilder(kernel="7.2.0-test")
          .zap(100 * US).zap_pmd(110 * US).rmap(120 * US, P[0], compound=True, nr=512).dirty(125 * US, P[0])
          .rmap(130 * US, P[1], anon=True).rmap(135 * US, P[2]).dirty(140 * US, P[3])
          .flush(200 * US, 260 * US)
          .rmaps(270 * US, 300 * US).rmap(280 * US, P[3], delayed=True)
          .zap_exit(400 * US)
          .mkclean(150 * US, 170 * US, P[0], tid=999, cpu=1, ret=1))
    return tb.write(path, **kw)


@pytest.fixture
def v_path(tmp_path):
    return trace_v(tmp_path / "v.zt")


def test_text_opens_with_the_verdict_per_path(v_path):
    r = run("report", v_path)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("file:") and lines[1] == "kernel:    7.2.0-test" and lines[2] == ""
    assert lines[3:8] == [
        "Verdict: " + HEADLINE,
        "  " + DELAYED_CLOSED,
        "  " + PMD_OPEN,
        "  anon: harmless (1 of 1 paired decrement before the flush): " + V.WHY_HARMLESS["anon"],
        "  file-clean: harmless (1 of 1 paired decrement before the flush): " + V.WHY_HARMLESS["file-clean"],
    ]
    assert lines[8] == "" and lines[9].startswith("machine:")
    # before any table; the old closing summary is gone
    assert r.stdout.index("Verdict:") < r.stdout.index("Decrement -> covering flush completion")
    assert "In short" not in r.stdout
    assert "immediate (PTE) path:" not in r.stdout       # no dirty file decrement there: not shown


def test_json_verdict_key(v_path):
    s = json.loads(run("report", v_path, "--json").stdout)
    for k in ("schema", "file", "kernel", "classes", "other_path", "window_hits"):   # every key kept
        assert k in s
    keys = list(s)
    assert keys.index("verdict") < keys.index("classes")
    v = s["verdict"]
    assert set(v) == {"file-dirty", "anon", "file-clean", "caveat"} and v["caveat"] is None
    d = v["file-dirty"]
    assert (d["state"], d["open_paths"], d["text"]) == ("open", ["pmd"], HEADLINE)
    assert list(d["paths"]) == ["immediate", "delayed", "pmd", "pud"]
    assert d["paths"]["pmd"] == {"state": "open", "decrements": 1, "paired": 1, "unpaired": 0, "open": 1,
                                 "closed": 0, "gap_p50_ns": 140000.0, "windows_hit": 1, "hits": 1,
                                 "windows_bypassed": 0, "text": PMD_OPEN}
    assert d["paths"]["delayed"] == {"state": "closed", "decrements": 1, "paired": 1, "unpaired": 0, "open": 0,
                                     "closed": 1, "gap_p50_ns": -20000.0, "windows_hit": 0, "hits": 0,
                                     "windows_bypassed": 0, "text": DELAYED_CLOSED}
    assert d["paths"]["immediate"]["state"] == d["paths"]["pud"]["state"] == "none"
    assert d["paths"]["pud"]["text"] == "PUD path: no decrements"
    for c in ("anon", "file-clean"):
        assert v[c]["state"] == "harmless" and v[c]["why"] == V.WHY_HARMLESS[c] and v[c]["open"] == 1


def test_bounded_json_has_the_same_verdict(v_path):
    a = run("report", v_path, "--json", "-q")
    b = run("report", v_path, "--json", "-q", "--max-memory", "64k")
    assert a.exit_code == 0 and a.stdout == b.stdout and '"verdict"' in a.stdout


def test_html_opens_with_the_verdict(v_path, tmp_path):
    out = tmp_path / "v.html"
    assert run("report", v_path, "--html", out).exit_code == 0
    page_ = out.read_text()
    start = page_.index('<section id="verdict">')
    assert start < page_.index("<table") and start < page_.index("<img") and start < page_.index("<pre>")
    text = " ".join(_parse(out).text)
    for needle in (HEADLINE, PMD_OPEN, DELAYED_CLOSED, V.WHY_HARMLESS["anon"], V.WHY_HARMLESS["file-clean"]):
        assert needle in text
    assert '<li class="open">PMD path:' in page_ and '<li class="closed">delayed (PTE) path:' in page_


def test_compare_opens_with_the_verdicts_side_by_side(v_path, tmp_path):
    a = trace_a(tmp_path / "a.zt")
    r = run("compare", a, v_path)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Verdict per trace: dirty file pages, per zap path")
    table = lines[1:lines.index("")]
    assert table[0].split() == ["dirty", "file", "path", "6.1.0-test", "7.2.0-test"]
    cells = {ln[:22].strip(): [c.strip() for c in ln[22:].split("  ") if c.strip()] for ln in table[1:]}
    assert cells["immediate (PTE) path"] == ["open: 2 of 2, p50 +0.9 us, writeback inside 1 window", "-"]
    assert cells["delayed (PTE) path"] == ["-", "closed: 0 of 1, p50 -20.0 us"]
    assert cells["PMD path"] == ["-", "open: 1 of 1, p50 +140.0 us, writeback inside 1 window"]
    assert cells["dirty file pages"] == ["open: immediate (PTE) path", "open: PMD path"]
    assert table[-2].startswith("  anon: harmless in every trace: ")
    assert table[-1].startswith("  file-clean: harmless in every trace: ")
    assert r.stdout.index("Verdict per trace") < r.stdout.index("Per-class gap figures")

    doc = json.loads(run("compare", a, v_path, "--json").stdout)
    rep = json.loads(run("report", v_path, "--json").stdout)
    assert doc["traces"][1]["verdict"] == rep["verdict"]
    assert doc["traces"][0]["verdict"]["file-dirty"]["open_paths"] == ["immediate"]


def test_closed_everywhere_and_caveat(tmp_path):
    t = run("compare", trace_a(tmp_path / "a.zt"), trace_b(tmp_path / "b.zt")).stdout
    row = next(ln for ln in t.splitlines() if ln.startswith("  dirty file pages"))
    assert row.split()[-1] == "closed"
    s = json.loads(run("report", trace_b(tmp_path / "b2.zt"), "--json").stdout)
    assert s["verdict"]["file-dirty"]["state"] == "closed"
    assert s["verdict"]["file-dirty"]["text"] == ("dirty file pages: closed on every path with pairs "
                                                  "(the mapcount drops after the flush)")
    lost = trace_a(tmp_path / "l.zt", lost={"rmap": 3})
    t = run("report", lost).stdout
    assert "  caveat: 3 events were lost: 2 dirty file decrements fall where events were lost" in t


def _block(dec=0, paired=0, open_=0, hits=0, pages_hit=0, p50=None):
    return {"decrements": dec, "paired": paired, "unpaired": dec - paired, "open": open_, "closed": paired - open_,
            "hits": hits, "pages_hit": pages_hit, "loss_suspect": 0, "gap_ns": {"p50": p50}}


def test_states_none_unpaired_and_open_without_writeback():
    by_path = {"immediate": _block(5, 4, 3, p50=1500.0), "delayed": _block(), "pmd": _block(2), "pud": _block()}
    summary = {"lost_events": 0, "classes": {"file-dirty": dict(_block(7, 4, 3), by_path=by_path),
                                             "anon": _block(), "file-clean": _block()}}
    v = V.verdict(summary)
    d = v["file-dirty"]
    assert [p["state"] for p in d["paths"].values()] == ["open", "none", "unpaired", "none"]
    assert d["paths"]["immediate"]["text"] == (
        "immediate (PTE) path: mapcount dropped before the flush in 3 of 4 paired decrements (gap p50 +1.5 us; "
        "1 more not paired); no writeback inside a window: the seed's race is open here, not hit in this trace")
    assert d["paths"]["pmd"]["text"] == "PMD path: 2 decrements, none paired with a flush: no verdict"
    assert V.verdict_lines(v)[:3] == ["Verdict: dirty file pages: the seed's race is open on the immediate (PTE) path",
                                      "  " + d["paths"]["immediate"]["text"], "  " + d["paths"]["pmd"]["text"]]
    assert v["anon"]["text"] == "anon: harmless (no paired decrements): " + V.WHY_HARMLESS["anon"]
    by_path["immediate"] = _block()
    d = V.verdict(summary)["file-dirty"]
    assert (d["state"], d["text"]) == ("unpaired", "dirty file pages: 7 decrements, none paired with a flush: no verdict")
    by_path["pmd"] = _block()
    assert V.verdict(summary)["file-dirty"]["state"] == "none"


def test_verdict_module_stays_light():
    """verdict.py needs neither numpy nor pandas nor another analysis module (zaptrace ab reuses it)."""
    src = open(os.path.join(os.path.dirname(V.__file__), "verdict.py"), encoding="utf-8").read()
    imports = [ln for ln in src.splitlines() if ln.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations", "from typing import Any, Dict, List, Optional",
                       "from zaptrace.vocab import ANON, DELAYED, FILE_CLEAN, FILE_DIRTY, IMMEDIATE, PMD, PUD"]


def test_a_bypassed_path_is_open_for_the_race(tmp_path):
    from tests.synth import TraceBuilder, page
    import json as _json
    from zaptrace import analysis
    P0 = page(0)
    tb = (TraceBuilder().zap(1000).dirty(1100, P0).flush(1300, 1400).rmaps(1410, 1500)
          .rmap(1420, P0, delayed=True).zap_exit(1600).mkclean(1200, 1250, P0))
    s = analysis.summarize(analysis.load(tb.write(tmp_path / "t.zt")))
    v = s["verdict"]["file-dirty"]
    assert v["state"] == "open" and v["open_paths"] == ["delayed"]
    d = v["paths"]["delayed"]
    assert (d["state"], d["windows_bypassed"], d["open"]) == ("bypassed", 1, 0)
    assert "did not wait for the page-table lock" in d["text"] and "1 window" in d["text"]
    _json.dumps(s)
