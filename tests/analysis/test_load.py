"""analysis/load.py: events sorted by time, in the raw array itself when they are nearly in order."""
import importlib
import os

import numpy as np
import pandas as pd

from zaptrace import tracefile
from zaptrace.layout import layout

loadmod = importlib.import_module("zaptrace.analysis.load")     # the package exports the function load

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = [os.path.join(ROOT, "tests", "fixtures", f) for f in ("race-6.1.zt", "race-6.12.zt")]


def _records(n, jitter, seed=1):
    """n records of the trace dtype, timestamps out of order by up to ``jitter`` ns (1 ns apart
    before the jitter, so a record moves up to about ``jitter`` rows), ties included."""
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, dtype=layout().dtype)
    arr["ts"] = (np.arange(n) // 2 * 2 + rng.integers(0, jitter + 1, n)).astype(np.uint64)   # pairs tie
    arr["tid"] = np.arange(n) % 7
    arr["page"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    return arr


def test_sort_in_place_equals_the_gather():
    b = loadmod.SORT_BLOCK
    for n, jitter in ((3 * b + 123, 5000), (b + 1, 2 * b // 3), (5 * b, 0)):
        arr = _records(n, jitter)
        order = np.argsort(arr["ts"], kind="stable")
        want = arr[order]
        assert loadmod._sort_in_place(arr, order)
        assert arr.tobytes() == want.tobytes()


def test_sort_in_place_refuses_a_far_move_and_leaves_the_array():
    b = loadmod.SORT_BLOCK
    arr = _records(3 * b, 0)
    arr["ts"][5] = 2 * b + 9                   # a record that belongs 2 blocks further on
    before = arr.copy()
    order = np.argsort(arr["ts"], kind="stable")
    assert int((np.arange(len(arr)) - order).max()) > b
    assert not loadmod._sort_in_place(arr, order)
    assert arr.tobytes() == before.tobytes()
    small = _records(b // 2, 100)              # one block: the gather is as cheap
    assert not loadmod._sort_in_place(small, np.argsort(small["ts"], kind="stable"))


def test_from_raw_same_events_either_way(monkeypatch):
    """The fixtures (recorded in guests, out of order where CPUs interleave) load to the same
    events, seq included, whether sorted in place (small blocks) or gathered."""
    real = loadmod._sort_in_place
    monkeypatch.setattr(loadmod, "SORT_BLOCK", 64)
    for path in FIXTURES:
        raw = tracefile.read(path)
        assert (np.diff(raw.events["ts"].astype(np.int64)) < 0).any()    # really out of order
        moved = []
        monkeypatch.setattr(loadmod, "_sort_in_place", lambda a, o: moved.append(real(a, o)) or moved[-1])
        a = loadmod.from_raw(raw)
        assert moved == [True]
        assert (np.diff(raw.events["ts"].astype(np.int64)) >= 0).all()   # raw.events itself sorted
        monkeypatch.setattr(loadmod, "_sort_in_place", lambda a, o: False)
        b = loadmod.from_raw(tracefile.read(path))
        pd.testing.assert_frame_equal(a.events, b.events)
        assert list(a.events["seq"]) != sorted(a.events["seq"])          # file order kept in seq
