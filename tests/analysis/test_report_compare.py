"""`zaptrace compare`: traces of different kernels side by side."""
import importlib.util
import json
import os
import re

import pytest

from tests.analysis.reportdata import ROOT, run, trace_a, trace_b


def test_compare_shows_both_kernels_open_and_closed(tmp_path):
    a, b = trace_a(tmp_path / "a.zt"), trace_b(tmp_path / "b.zt")
    r = run("compare", a, b)
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["class", "metric"])
    assert header.split()[2:] == ["6.1.0-test", "6.12.0-test"]
    rows, cls = {}, None
    for line in lines[2:-2]:
        cells = re.split(r"\s{2,}", line.strip())     # cells may hold single spaces: "2 (100%)"
        if cells[0] in ("anon", "file-clean", "file-dirty"):
            cls, cells = cells[0], cells[1:]
        if cls:
            rows[(cls, cells[0])] = cells[1:]
    assert rows[("file-dirty", "decrements")] == ["2", "1"]
    assert rows[("file-dirty", "delayed share")] == ["0%", "100%"]
    assert rows[("file-dirty", "open")] == ["2 (100%)", "0 (0%)"]
    assert rows[("file-dirty", "closed")] == ["0", "1"]
    assert rows[("file-dirty", "gap p50 us")] == ["+0.9", "-0.2"]
    assert rows[("file-dirty", "gap p99 us")] == ["+1.0", "-0.2"]
    assert rows[("file-dirty", "window hits")] == ["1", "0"]
    assert rows[("file-dirty", "window")] == ["open", "closed"]
    assert rows[("anon", "window")] == ["open", "open"]
    assert lines[-1] == "dirty file pages, window: 6.1.0-test: open; 6.12.0-test: closed"


def test_compare_json(tmp_path):
    r = run("compare", trace_a(tmp_path / "a.zt"), trace_b(tmp_path / "b.zt"), "--json")
    doc = json.loads(r.stdout)
    assert doc["schema"] == "zaptrace.compare/1"
    ta, tb = doc["traces"]
    assert (ta["label"], tb["label"]) == ("6.1.0-test", "6.12.0-test")
    fa, fb = ta["classes"]["file-dirty"], tb["classes"]["file-dirty"]
    assert (fa["open"], fa["closed"], fa["gap_p50_ns"], fa["window"]) == (2, 0, 900.0, "open")
    assert (fb["open"], fb["closed"], fb["gap_p50_ns"], fb["delayed_share"], fb["window"]) == (0, 1, -200.0, 1.0, "closed")


def test_same_kernel_twice_is_told_apart_by_file(tmp_path):
    r = run("compare", trace_a(tmp_path / "x.zt"), trace_a(tmp_path / "y.zt"), "--json")
    assert [t["label"] for t in json.loads(r.stdout)["traces"]] == ["6.1.0-test (x.zt)", "6.1.0-test (y.zt)"]


def test_compare_needs_two_traces(tmp_path):
    r = run("compare", trace_a(tmp_path / "a.zt"))
    assert r.exit_code == 2 and r.stderr.strip() == "zaptrace: error: compare needs at least two trace files"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("analysis_bench", os.path.join(ROOT, "bench", "analysis_bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_kernels_compare_as_the_kernels_behave(tmp_path, bench):
    """The bench generator's 5.10/6.1 shape opens windows on dirty file pages; its 6.2+ shape closes them."""
    paths = []
    for kernel, style in (("5.10.0-32-amd64", "immediate"), ("6.1.0-56-amd64", "immediate"),
                          ("6.12.57+deb13-amd64", "delayed")):
        paths.append(str(tmp_path / f"{kernel}.zt"))
        bench.generate(paths[-1], 20_000, seed=len(paths), style=style, kernel=kernel)
    doc = json.loads(run("compare", *paths, "--json").stdout)
    fd = [t["classes"]["file-dirty"] for t in doc["traces"]]
    assert [f["window"] for f in fd] == ["open", "open", "closed"]
    assert fd[0]["hits"] > 0 and fd[2]["hits"] == 0 and fd[2]["delayed_share"] == 1.0
    assert all(t["classes"]["anon"]["window"] == "open" for t in doc["traces"])
