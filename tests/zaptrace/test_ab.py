"""`zaptrace ab`: the boot order, the aggregates and the tables (no guest: runs are made up)."""

import pytest

from zaptrace import ab
from zaptrace import analysis
from tests.synth import TraceBuilder, page

P0, P1 = page(0), page(1)


def test_boots_interleave_a_and_b_within_each_round_and_mode():
    assert ab.schedule(2, ["untraced", "traced"]) == [
        (1, "untraced", "A"), (1, "untraced", "B"), (1, "traced", "A"), (1, "traced", "B"),
        (2, "untraced", "A"), (2, "untraced", "B"), (2, "traced", "A"), (2, "traced", "B")]


def test_the_guest_command():
    cmd = ["zaptrace", "workload", "run", "race"]
    assert ab.guest_command(cmd, "untraced", "r1-A-untraced") == cmd
    assert ab.guest_command(cmd, "traced", "r1-B-traced") == ["zaptrace", "record", "-q", "-o", "r1-B-traced.zt",
                                                              "--"] + cmd


def lostwrite_report(lost, zaps=6000, visits=3000, elapsed=3.0):
    return {"workload": "lostwrite", "zaps": zaps, "visits": visits, "elapsed_s": elapsed,
            "lost": [{"page": i} for i in range(lost)]}


def figures(open_, paired, hits, p50, lost_events=0, path="pmd", pages_hit=None):
    return {"release": "7.2.13-ztX", "events": 100, "lost_events": lost_events,
            "classes": {"file-dirty": {path: {"decrements": paired, "paired": paired, "open": open_,
                                              "closed": paired - open_, "hits": hits, "gap_p50_ns": p50}
                                       | ({} if pages_hit is None else {"pages_hit": pages_hit})}}}


def make_runs():
    runs = []
    for rnd, (la, lb) in enumerate(((604, 0), (96, 0), (1200, 0)), 1):
        runs.append(ab.Run(rnd, "A", "7.2-src", "untraced", f"r{rnd}-A-untraced", 1, 310.0,
                           workload=lostwrite_report(la)))
        runs.append(ab.Run(rnd, "B", "7.2-src+fix", "untraced", f"r{rnd}-B-untraced", 0, 305.0,
                           workload=lostwrite_report(lb, zaps=5400)))
        runs.append(ab.Run(rnd, "A", "7.2-src", "traced", f"r{rnd}-A-traced", 0, 330.0,
                           workload=lostwrite_report(0), figures=figures(10, 10, 3 * rnd, 800_000, pages_hit=rnd)))
        runs.append(ab.Run(rnd, "B", "7.2-src+fix", "traced", f"r{rnd}-B-traced", 0, 330.0,
                           workload=lostwrite_report(0), figures=figures(0, 12, 0, -20_000, pages_hit=0)))
    runs.append(ab.Run(4, "B", "7.2-src+fix", "untraced", "r4-B-untraced", error="guest timed out"))
    return runs


def test_aggregate_per_kernel_and_mode():
    agg = ab.aggregate(make_runs())
    a, b = agg["A/untraced"], agg["B/untraced"]
    assert a["lost_writes"] == (604, 96, 1200) and a["lost_writes_each"] == [604, 96, 1200]
    assert (a["runs_with_loss"], a["runs_counted"]) == (3, 3)
    assert (b["runs"], b["failed"], b["runs_with_loss"], b["runs_counted"]) == (4, 1, 0, 3)
    assert a["zaps_per_s"] == (2000, 2000, 2000) and b["zaps_per_s"] == (1800, 1800, 1800)
    assert a["visits_per_s"] == (1000, 1000, 1000)
    w = agg["A/traced"]["windows"]["file-dirty"]["pmd"]
    assert (w["open"], w["paired"], w["hits"], w["hits_each"], w["runs"]) == (30, 30, 18, [3, 6, 9], 3)
    assert w["pages_hit"] == 6
    assert w["gap_p50_ns"] == (800_000, 800_000, 800_000)
    wb = agg["B/traced"]["windows"]["file-dirty"]["pmd"]
    assert (wb["open"], wb["closed"], wb["hits"]) == (0, 36, 0)


def test_render_says_what_each_kernel_did():
    doc = {"kernels": {"A": "7.2-src", "B": "7.2-src+fix"}, "rounds": 3, "command": ["zaptrace", "workload"],
           "guest": "TCG multi", "aggregate": ab.aggregate(make_runs())}
    text = ab.render(doc)
    assert "A: 7.2-src" in text and "B: 7.2-src+fix" in text
    assert "604 (96-1,200)" in text and "3 of 3" in text and "0 of 3" in text and "3 (1 failed)" in text
    lines = ab.verdict_lines(doc)
    assert lines[0].startswith("A (7.2-src): untraced: lost writes in 3 of 3 runs (1,900 in all)")
    # the per-path part in the words of `zaptrace report`'s verdict (analysis.verdict.path_text)
    assert lines[1] == ("  dirty file pages, PMD path: mapcount dropped before the flush in 30 of 30 paired "
                        "decrements (gap p50 +800.0 us, median of 3 runs); writeback inside 6 windows: "
                        "the seed's race is open here")
    assert lines[2].startswith("B (7.2-src+fix): untraced: lost writes in 0 of 3 runs")
    assert lines[3] == ("  dirty file pages, PMD path: mapcount dropped before the flush in 0 of 36 paired "
                        "decrements (gap p50 -20.0 us, median of 3 runs): closed (the mapcount drops after "
                        "the flush)")
    assert "In short:\n  A (7.2-src): " in text and "\n    dirty file pages, PMD path: " in text


def test_verdict_lines_without_windows_hit():
    """Figures made before ``pages_hit`` was kept: the window hits are counted instead."""
    runs = [ab.Run(1, "A", "7.2-src", "traced", "r1-A-traced", 0, 330.0, workload=lostwrite_report(0),
                   figures=figures(4, 5, 2, 1_000))]
    doc = {"kernels": {"A": "7.2-src", "B": "7.2-src+fix"}, "aggregate": ab.aggregate(runs)}
    assert ab.verdict_lines(doc)[1] == (
        "  dirty file pages, PMD path: mapcount dropped before the flush in 4 of 5 paired decrements "
        "(gap p50 +1.0 us); 2 window hits: the seed's race is open here")


def test_trace_figures_of_a_real_summary(tmp_path):
    tb = (TraceBuilder().zap(100).zap_pmd(110).rmap(120, P0, compound=True, nr=512).dirty(125, P0)
          .flush(200, 260).zap_exit(300).mkclean(130, 140, P0))
    s = analysis.summarize(analysis.load(tb.write(tmp_path / "t.zt")))
    f = ab.trace_figures(s)
    assert f["lost_events"] == 0 and f["classes"]["file-dirty"] == {
        "pmd": {"decrements": 1, "paired": 1, "open": 1, "closed": 0, "hits": 1, "pages_hit": 1,
                "pages_bypassed": 0, "gap_p50_ns": 140.0}}
    assert f["classes"]["anon"] == {}


@pytest.mark.parametrize("kw, needle", [
    (dict(command=[]), "no command"),
    (dict(rounds=0), "--rounds must be at least 1"),
    (dict(modes=["both"]), "--modes: choose from untraced, traced"),
])
def test_argument_errors(kw, needle, tmp_path):
    args = dict(kernel_a="7.2", kernel_b="7.2", command=["true"], out_dir=str(tmp_path))
    args.update(kw)
    with pytest.raises(ab.ABError, match=needle):
        ab.run_ab(args.pop("kernel_a"), args.pop("kernel_b"), args.pop("command"), **args)


def test_trace_figures_keep_the_lost_writes_and_their_chance(tmp_path):
    from tests.analysis.test_lostwrites import LOST_V2, findings_v2, trace
    from zaptrace.analysis.report import analyse
    s = analyse(trace(tmp_path), None, with_hits=False, findings=findings_v2(tmp_path, LOST_V2)).summary
    lw = ab.trace_figures(s)["lost_writes"]
    assert (lw["lost_writes"], lw["explained"], lw["span"]) == (2, 1, "store")
    assert (lw["chance"]["sample"], lw["chance"]["explained"]) == (20, 3)
