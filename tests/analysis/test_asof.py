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


@pytest.mark.parametrize("base", [0, 2**53 + 1, 2**62])
def test_asof_matches_merge_asof(base):
    rng = np.random.default_rng(base % 1000)
    for it in range(60):
        n, m = int(rng.integers(0, 40)), int(rng.integers(0, 40))
        lt = base + rng.integers(0, 30, n)
        rt = base + rng.integers(0, 30, m)
        if it % 2:
            lt.sort()
        if it % 4 < 2:
            rt.sort()
        # no group, tid-like (uint32), and tid + a pointer-like uint64 (folio, mm)
        nb = it % 3
        kinds = [np.uint32, np.uint64]
        lby = [rng.integers(0, 3, n).astype(kinds[min(i, 1)]) * (2**40 if i else 1) for i in range(nb)]
        rby = [rng.integers(0, 3, m).astype(kinds[min(i, 1)]) * (2**40 if i else 1) for i in range(nb)]
        rok = rng.random(m) < 0.8 if it % 5 else np.ones(m, bool)
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
