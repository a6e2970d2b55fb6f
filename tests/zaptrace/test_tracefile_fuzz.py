"""Property test: real traces cut and corrupted anywhere still load what is intact, or fail in one line."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from zaptrace.analysis.gaps import gap_table
from zaptrace.analysis.load import from_raw
from zaptrace.analysis.summary import summarize
from zaptrace import tracefile

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRACES = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.zt"))}


def original_rows(data):
    return {r.tobytes() for r in tracefile.parse(data).events}


ORIGINAL = {name: original_rows(data) for name, data in TRACES.items()}


@pytest.mark.parametrize("name", sorted(TRACES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=6))
def test_cut_and_corrupted_traces(name, cut, flips):
    data = bytearray(TRACES[name][: int(len(TRACES[name]) * cut)])
    for where, mask in flips:
        if data:
            data[min(int(where * len(data)), len(data) - 1)] ^= mask
    try:
        raw = tracefile.parse(bytes(data), "fuzzed.zt")
    except tracefile.TraceError as e:
        msg = str(e)
        assert msg.startswith("fuzzed.zt: ") and "\n" not in msg
        return
    # whatever loads is made of intact original records, and the damage is said
    assert {r.tobytes() for r in raw.events} <= ORIGINAL[name]
    if len(data) < len(TRACES[name]) or flips:
        assert raw.problems or len(raw.events) == len(ORIGINAL[name])
    # and the whole analysis runs on it
    t = from_raw(raw)
    g = gap_table(t)
    s = summarize(t, g)
    assert s["schema"] and len(g) <= len(raw.events) * 512


def test_the_fixtures_show_the_kernels_difference():
    for name, sign in (("race-6.1.zt", 1), ("race-6.12.zt", -1)):
        t = from_raw(tracefile.parse(TRACES[name], name))
        g = gap_table(t)
        fd = g[(g["class"] == "file-dirty") & g["paired"]]
        assert len(fd) > 200
        assert (np.sign(fd["gap_ns"]) == sign).all()
