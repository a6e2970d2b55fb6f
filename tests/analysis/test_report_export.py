"""`zaptrace export`: Perfetto JSON, CSV and Parquet of the hand-computed trace A (reportdata.py)."""
import importlib.util
import json
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, strategies as st

from zaptrace import analysis
from zaptrace.analysis.perfetto import hex_u64
from tests.analysis.reportdata import P, run, trace_a
from tests.needs import need


@pytest.fixture
def a_path(tmp_path):
    return trace_a(tmp_path / "a.zt")


def _perfetto(a_path, tmp_path):
    out = tmp_path / "a.json"
    r = run("export", a_path, "--perfetto", out)
    assert r.exit_code == 0, r.stderr
    return r, json.load(open(out))


def test_perfetto_has_the_expected_slices_instants_and_windows(a_path, tmp_path):
    r, doc = _perfetto(a_path, tmp_path)
    ev = doc["traceEvents"]
    by = Counter((e["ph"], e["name"]) for e in ev)
    assert by[("X", "zap")] == 2 and by[("X", "flush_tlb_mm_range")] == 1 and by[("X", "tlb_flush_mmu")] == 1
    assert sum(n for (ph, _), n in by.items() if ph == "X") == 4
    assert by[("i", "rmap file-dirty")] == 2 and by[("i", "rmap file-clean")] == 2
    assert by[("i", "rmap anon")] == 1 and by[("i", "rmap other-path")] == 1 and by[("i", "mkclean")] == 1
    # all four open decrements share one covering flush: one window; one mkclean hit it
    assert by[("b", "open window")] == by[("e", "open window")] == 1
    assert by[("b", "window hit")] == by[("e", "window hit")] == 1
    assert by[("M", "process_name")] == 3 and by[("M", "thread_name")] == 3      # tids 100, 999, 200
    assert "4 slices, 7 instants, 1 open windows, 1 window hits" in r.stderr

    zap = next(e for e in ev if e["name"] == "zap" and e["ts"] == 0)       # us since the first event
    assert (zap["dur"], zap["pid"], zap["tid"]) == (1.4, 100, 100)
    d0 = next(e for e in ev if e["ph"] == "i" and e.get("args", {}).get("page") == "0xffffea0000400000"
              and e["name"].startswith("rmap"))
    assert (d0["ts"], d0["s"], d0["args"]["gap_us"], d0["args"]["hits"]) == (0.2, "t", 1.0, 1)
    w = next(e for e in ev if e["ph"] == "b" and e["name"] == "open window")
    w_end = next(e for e in ev if e["ph"] == "e" and e["id"] == w["id"])
    assert (w["ts"], w_end["ts"], w["args"]["pages"], w["args"]["file_dirty"], w["args"]["hits"]) == (0.2, 1.2, 4, 2, 1)
    mk = next(e for e in ev if e["name"] == "mkclean")
    assert (mk["ts"], mk["tid"], mk["args"]["took_us"], mk["args"]["ret"]) == (0.9, 999, 0.1, 1)
    assert doc["otherData"]["kernel"] == "6.1.0-test"


def test_perfetto_slices_nest_per_thread_and_async_ids_pair(a_path, tmp_path):
    _, doc = _perfetto(a_path, tmp_path)
    per_tid = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            per_tid[e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
    for spans in per_tid.values():
        for a0, a1 in spans:
            for b0, b1 in spans:
                assert a1 <= b0 or b1 <= a0 or (a0 <= b0 and b1 <= a1) or (b0 <= a0 and a1 <= b1)
    begins = {(e["cat"], e["id"]) for e in doc["traceEvents"] if e["ph"] == "b"}
    ends = {(e["cat"], e["id"]) for e in doc["traceEvents"] if e["ph"] == "e"}
    assert begins == ends and len(begins) == 2
    for e in doc["traceEvents"]:
        assert {"name", "ph", "pid"} <= e.keys()
        assert e["ph"] == "M" or isinstance(e["ts"], (int, float))


def test_missing_return_becomes_a_no_return_instant(tmp_path):
    from tests.synth import TraceBuilder
    path = TraceBuilder().zap(100).rmap(200, P[0]).ev(300, "flush_range_enter").write(tmp_path / "n.zt")
    out = tmp_path / "n.json"
    assert run("export", path, "--perfetto", out).exit_code == 0
    names = Counter((e["ph"], e["name"]) for e in json.load(open(out))["traceEvents"])
    assert names[("i", "zap (no return)")] == 1 and names[("i", "flush_tlb_mm_range (no return)")] == 1


def test_csv_and_parquet_round_trip(a_path, tmp_path):
    # pyarrow comes with the venv (pyproject); a bare system Python may lack it
    need(importlib.util.find_spec("pyarrow") is not None, "needs pyarrow for --parquet")
    r = run("export", a_path, "--csv", tmp_path / "g.csv", "--parquet", tmp_path / "g.parquet")
    assert r.exit_code == 0, r.stderr
    g = analysis.gap_table(analysis.load(a_path))
    pq = pd.read_parquet(tmp_path / "g.parquet")
    times = ("zap_ts", "flush_enter_ts", "flush_done_ts", "gap_ns", "mmu_done_ts", "gap_mmu_ns", "clear_ts")
    cs = pd.read_csv(tmp_path / "g.csv", keep_default_na=False, na_values={c: [""] for c in times},
                     dtype={c: "Int64" for c in times})
    # the CSV carries the times as exact integers (empty when missing), never as floats
    raw = pd.read_csv(tmp_path / "g.csv", dtype=str, keep_default_na=False)
    for c in times + ("ts",):
        assert raw[c].str.fullmatch(r"-?[0-9]*").all(), c
    for back in (pq, cs):
        assert list(back.columns) == list(g.columns) and len(back) == len(g) == 6
        for c in g.columns:
            if c in times:          # nullable Int64: exact, NA where missing
                assert str(g[c].dtype) == "Int64" and back[c].astype("Int64").equals(g[c]), c
                continue
            want, got = g[c].to_numpy(), back[c].to_numpy()
            if want.dtype.kind == "f":
                np.testing.assert_array_equal(want, got.astype("float64"))
            else:
                assert [str(x) for x in want] == [str(x) for x in got], c
    assert g["gap_ns"].isna().sum() == 2          # P4 (no flush after) and P5 (other-path)
    assert pq["page"].dtype == np.uint64 and int(pq["page"].iloc[0]) == P[0]


def test_export_needs_an_output(a_path):
    r = run("export", a_path)
    assert r.exit_code == 2
    assert r.stderr.strip() == ("zaptrace: error: export: give at least one of --perfetto OUT.json, "
                                "--parquet OUT, --csv OUT")


@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=20))
def test_hex_u64(values):
    got = list(hex_u64(np.array(values, dtype=np.uint64)))
    assert got == [f"{v:#018x}" for v in values]


def test_empty_trace_exports_valid_empty_outputs(tmp_path):
    from tests.synth import TraceBuilder
    path = TraceBuilder().write(tmp_path / "e.zt")
    r = run("export", path, "--perfetto", tmp_path / "e.json", "--csv", tmp_path / "e.csv")
    assert r.exit_code == 0, r.stderr
    assert json.load(open(tmp_path / "e.json"))["traceEvents"] == []
    assert list(pd.read_csv(tmp_path / "e.csv").columns)[:3] == ["ts", "tid", "tgid"]
