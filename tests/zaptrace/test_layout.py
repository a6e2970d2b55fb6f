"""The event struct is declared once (probes/zaptrace_event.h) and parsed here."""
import pytest

from zaptrace.layout import Layout, layout


def test_header_parses_to_a_packed_dtype():
    L = layout()
    assert L.dtype.itemsize == 72
    assert L.dtype.names[:3] == ("ts", "mm", "page") and L.dtype.names[-2:] == ("ino", "index")
    assert L.kinds["RMAP"] == 3 and L.nkinds == 13 and "NKINDS" not in L.kinds
    assert L.flags["IN_RMAPS"] == 0x08


def test_head_fields_describe_the_records():
    h = layout().head_fields()
    assert h["kinds"]["3"] == "rmap"
    assert ["ts", "<u8"] in h["event_dtype"]


@pytest.mark.parametrize("bad", [
    "enum zt_kind { ZT_A = 1, ZT_NKINDS = 2, }; struct zt_event { __u64 ts; char name[16]; };",
    "enum zt_kind { ZT_A = 1, ZT_NKINDS = 2, }; struct zt_event { __u8 a; __u64 ts; };",
    "struct zt_event { __u64 ts; };",
])
def test_unsupported_layouts_are_refused(bad):
    with pytest.raises(ValueError):
        Layout(bad)


def test_traces_of_the_56_byte_layout_still_load():
    """Fixtures recorded before ino/index existed: the reader takes the dtype from the trace."""
    from zaptrace import analysis
    from pathlib import Path
    t = analysis.load(str(Path(__file__).resolve().parent.parent / "fixtures" / "race-6.1.zt"))
    assert "ino" not in t.events and len(t.events) > 0
    g = analysis.gap_table(t)
    assert "ino" not in g and len(g) > 0
