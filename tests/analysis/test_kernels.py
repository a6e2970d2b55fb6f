"""The compiled kernels (analysis/kernels.c) give exactly what their numpy twins give.

Each kernel against its numpy version on random inputs with many equal keys and
times, masked right rows, unsorted sides and times near both ends of int64; then
whole gap tables, hit lists and reports of fixtures, generated and random traces
under both engines, to the row; then the fallback when there is no compiler.
"""
import json
import os

import numpy as np
import pandas as pd
import pytest

from tests.needs import need
from zaptrace import cbuild
from zaptrace.analysis import gaps, kernels, report

from .test_asof import asof_cases
from .test_stream import FIXTURES, _bench, random_trace

INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


@pytest.fixture(autouse=True)
def compiled():
    need(bool(cbuild.compiler()), "no C compiler: it builds analysis/kernels.c (scripts/setup installs gcc)")
    with kernels.engine_forced("c"):
        assert kernels.lib() is not None, kernels.status()
        yield


def both(fn, *args):
    with kernels.engine_forced("numpy"):
        want = fn(*args)
    got = fn(*args)
    return got, want


def _keys(rng, n, nb, dtypes):
    return [rng.integers(0, 4, n).astype(dtypes[i]) * (2**40 if i else 1) for i in range(nb)]


@pytest.mark.parametrize("base", [INT64_MIN + 5, -7, 0, 2**53 + 1, INT64_MAX - 40])
def test_asof_kernel_is_the_numpy_asof(base):
    seen = 0
    for it, lt, lby, rt, rok, rby in asof_cases(base, 150, 60, (np.uint32, np.int64, np.uint16)):
        for direction in ("backward", "forward"):
            for exact in (True, False):
                got, want = both(gaps._asof, lt, lby, rt, rok, rby, direction, exact)
                assert got.dtype == np.int64 and (got == want).all(), (it, direction, exact)
                seen += int((got >= 0).sum())
    assert seen > 1000


@pytest.mark.parametrize("periods", [1, -1])
def test_shift_kernel_is_the_numpy_shift(periods):
    rng = np.random.default_rng(5)
    for it in range(100):
        n = int(rng.integers(0, 80))
        t = rng.integers(INT64_MIN, INT64_MAX, n)
        by = _keys(rng, n, 1 + it % 2, [np.uint32, np.uint64])
        fill = (INT64_MIN, INT64_MAX)[it % 2]
        got, want = both(gaps._shift_np, t, by, periods, fill)
        assert (got == want).all(), it


def test_hit_ranges_kernel_is_the_numpy_search():
    rng = np.random.default_rng(11)
    for it in range(40):
        m = int(rng.integers(1, 120))
        folio = np.sort(rng.integers(1, 12, m).astype(np.uint64) * np.uint64(2**40))
        ts = 2**62 + rng.integers(0, 500, m)
        order = np.lexsort((ts, folio))
        folio, ts = folio[order], ts[order]
        end = ts + rng.integers(0, 30, m)
        new = np.r_[True, folio[1:] != folio[:-1]]
        for s, e in zip(np.flatnonzero(new), np.r_[np.flatnonzero(new)[1:], m]):
            end[s:e] = np.maximum.accumulate(end[s:e])
        end[rng.random(m) < 0.1] = INT64_MAX
        mk = pd.DataFrame({"folio": folio, "ts": ts, "end": end})
        mk["k"] = mk.groupby("folio", sort=False).cumcount().to_numpy(dtype=np.int64)
        n = 500
        dts = 2**62 + rng.integers(0, 520, n)
        dfolio = rng.integers(0, 14, n).astype(np.uint64) * np.uint64(2**40)
        done = dts + rng.integers(-20, 100, n)
        (lo, c), (lo_w, c_w) = both(gaps._hit_ranges, mk, dts, dfolio, done)
        assert (c == c_w).all() and (lo == lo_w).all(), it


def _same_tables(path):
    """gap table, hit list and report text of ``path`` under both engines: equal."""
    with kernels.engine_forced("numpy"):
        a = report.analyse(path, keep_events=True)
    b = report.analyse(path, keep_events=True)
    pd.testing.assert_frame_equal(b.gaps, a.gaps, check_exact=True)
    pd.testing.assert_frame_equal(b.hits, a.hits, check_exact=True)
    assert json.dumps(b.summary) == json.dumps(a.summary)
    assert report.render_text(b) == report.render_text(a)
    return b


@pytest.mark.parametrize("name", ["race-6.1", "race-6.12"])
def test_fixture_reports_are_the_same_under_both_engines(name):
    a = _same_tables(os.path.join(FIXTURES, name + ".zt"))
    assert len(a.gaps) > 0


@pytest.mark.parametrize("style", ["immediate", "delayed"])
def test_generated_traces_are_the_same_under_both_engines(tmp_path, style):
    path = str(tmp_path / "b.zt")
    _bench().generate(path, 60000, seed=5, style=style)
    a = _same_tables(path)
    assert a.summary["window_hits"] > 0


@pytest.mark.parametrize("seed", range(12))
def test_random_traces_are_the_same_under_both_engines(tmp_path, seed):
    path = random_trace(seed, n_zaps=60).write(tmp_path / "r.zt", shuffle=seed, chunk=13,
                                               lost={"rmap": 3} if seed % 4 == 0 else None,
                                               stats=[(2000, 0), (9000, 3)] if seed % 4 == 0 else None)
    _same_tables(str(path))


def test_without_a_compiler_numpy_runs_and_says_so_once(tmp_path, monkeypatch, capsys):
    (tmp_path / "kernels.c").write_text(kernels.SOURCE.read_text() + "\n/* never built */\n")
    monkeypatch.setattr(kernels, "SOURCE", tmp_path / "kernels.c")   # a fresh digest: nothing built to find
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "_lib", None)
    with kernels.engine_forced("c"):
        assert kernels.lib() is None and kernels.lib() is None
        assert kernels.asof(np.zeros(1, np.int64), [np.zeros(1, np.uint32)], np.zeros(1, np.int64),
                            np.ones(1, bool), [np.zeros(1, np.uint32)], "backward", True) is None
        assert "numpy" in kernels.status() and "no C compiler" in kernels.status()
    err = capsys.readouterr().err
    assert err.count("analysis kernels in numpy (slower, same results): no C compiler here") == 1
    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setenv(kernels.ENV, "c")            # asked for explicitly: an error, not a fallback
    with pytest.raises(kernels.KernelError, match=r"ZAPTRACE_KERNELS=c: no C compiler here"):
        kernels.lib()
    monkeypatch.setenv(kernels.ENV, "fortran")
    monkeypatch.setattr(kernels, "_forced", None)
    with pytest.raises(kernels.KernelError, match="expected one of c, numpy"):
        kernels.wanted()


def test_numpy_asked_for_is_numpy(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "numpy")
    with kernels.engine_forced("numpy"):
        assert kernels.lib() is None and kernels.status().startswith("numpy")

