"""gaps._asof (numpy searchsorted) gives what pandas merge_asof gives, to the row.

Random small tables with many equal keys and group values, right keys missing
(ok False), unsorted sides, and times at 0, 2**53 + 1 and 2**62 (exact int64).
"""
import numpy as np
import pandas as pd
import pytest

from zaptrace.analysis.gaps import _asof


def merge_asof_pos(lt, lby, rt, rok, rby, direction, exact):
    """The reference: position of the matched right row by pandas merge_asof, -1 where none."""
    n = len(lt)
    if n == 0 or len(rt) == 0 or not rok.any():
        return np.full(n, -1, dtype=np.int64)
    left = pd.DataFrame({"on": lt, "row": np.arange(n), **{f"b{i}": b for i, b in enumerate(lby)}})
    right = pd.DataFrame({"on": rt[rok], "pos": np.flatnonzero(rok), **{f"b{i}": b[rok] for i, b in enumerate(rby)}})
    m = pd.merge_asof(left.sort_values("on", kind="stable"), right.sort_values("on", kind="stable"), on="on",
                      by=[f"b{i}" for i in range(len(lby))] or None, direction=direction,
                      allow_exact_matches=exact)
    return m.sort_values("row", kind="stable")["pos"].fillna(-1).to_numpy().astype(np.int64)


def asof_cases(base, iterations=60, size=40, first_key=(np.uint32,)):
    """Random _asof inputs (it, lt, lby, rt, rok, rby): many equal times and keys, sides sorted
    or not, right rows masked; no group, one tid-like key (of a ``first_key`` dtype, in turn),
    or it and a pointer-like uint64 (folio, mm)."""
    rng = np.random.default_rng(abs(base) % 1000)
    for it in range(iterations):
        n, m = int(rng.integers(0, size)), int(rng.integers(0, size))
        lt = base + rng.integers(0, 30, n)
        rt = base + rng.integers(0, 30, m)
        if it % 2:
            lt.sort()
        if it % 4 < 2:
            rt.sort()
        nb = it % 3
        kinds = [first_key[it % len(first_key)], np.uint64]
        lby = [rng.integers(0, 3, n).astype(kinds[min(i, 1)]) * (2**40 if i else 1) for i in range(nb)]
        rby = [rng.integers(0, 3, m).astype(kinds[min(i, 1)]) * (2**40 if i else 1) for i in range(nb)]
        rok = rng.random(m) < 0.8 if it % 5 else np.ones(m, bool)
        yield it, lt, lby, rt, rok, rby


@pytest.mark.parametrize("base", [0, 2**53 + 1, 2**62])
def test_asof_matches_merge_asof(base):
    for it, lt, lby, rt, rok, rby in asof_cases(base):
        for direction in ("backward", "forward"):
            for exact in (True, False):
                got = _asof(lt, lby, rt, rok, rby, direction, exact)
                want = merge_asof_pos(lt, lby, rt, rok, rby, direction, exact)
                assert (got == want).all(), (it, direction, exact)


@pytest.mark.parametrize("base", [0, 2**62])
def test_asof_packed_search_matches_merge_asof(base, monkeypatch):
    # the same with every group count taking the packed (group, rank) search
    from zaptrace.analysis import gaps
    monkeypatch.setattr(gaps, "LOOP_GROUPS", 0)
    test_asof_matches_merge_asof(base)


def test_search_runs_is_searchsorted_in_each_range():
    from zaptrace.analysis.gaps import _search_runs
    rng = np.random.default_rng(7)
    vals = np.concatenate([np.sort(2**62 + rng.integers(0, 20, int(rng.integers(0, 9)))) for _ in range(50)])
    first = rng.integers(0, len(vals) + 1, 300)
    stop = first.copy()
    for i, f in enumerate(first):          # ranges inside which vals rise: its sorted run
        while stop[i] < len(vals) and (stop[i] == f or vals[stop[i]] >= vals[stop[i] - 1]):
            stop[i] += 1
    stop = np.minimum(stop, first + rng.integers(0, 6, 300))
    q = 2**62 + rng.integers(-1, 22, 300)
    for side in ("left", "right"):
        got = _search_runs(vals, first, stop, q, side)
        want = [f + np.searchsorted(vals[f:s], x, side=side) for f, s, x in zip(first, stop, q)]
        assert (got == np.array(want, dtype=np.int64)).all()


@pytest.mark.parametrize("rising", [True, False])
def test_hit_ranges_run_search_matches_asof(rising):
    # mkclean spans sorted by folio then time; ends rising within each folio (the run search)
    # or not (the fallback): both give what the _asof searches give
    from zaptrace.analysis.gaps import _hit_ranges, _hit_ranges_asof
    rng = np.random.default_rng(3 if rising else 4)
    base = 2**62
    m = 200
    folio = np.sort(rng.integers(1, 30, m).astype(np.uint64) * np.uint64(2**40))
    ts = base + rng.integers(0, 1000, m)
    order = np.lexsort((ts, folio))
    folio, ts = folio[order], ts[order]
    end = ts + rng.integers(0, 50, m)
    if rising:
        new = np.r_[True, folio[1:] != folio[:-1]]
        for s, e in zip(np.flatnonzero(new), np.r_[np.flatnonzero(new)[1:], m]):
            end[s:e] = np.maximum.accumulate(end[s:e])
    else:
        end[5] = base + 2000                 # overlaps its folio's next call
    end[rng.random(m) < 0.1] = np.iinfo(np.int64).max
    mk = pd.DataFrame({"folio": folio, "ts": ts, "end": end})
    mk["k"] = mk.groupby("folio", sort=False).cumcount().to_numpy(dtype=np.int64)
    n = 2000
    dts = base + rng.integers(0, 1100, n)
    dfolio = rng.integers(0, 32, n).astype(np.uint64) * np.uint64(2**40)
    done = dts + rng.integers(-20, 200, n)
    lo, c = _hit_ranges(mk, dts, dfolio, done)
    lo_ref, c_ref = _hit_ranges_asof(mk, dts, dfolio, done)
    assert (c == c_ref).all() and c.sum() > 0
    assert (lo[c > 0] == lo_ref[c > 0]).all()
