"""The event struct is declared once (probes/zaptrace_event.h) and parsed here."""
import pytest

from zaptrace.layout import Layout, layout


def test_header_parses_to_a_packed_dtype():
    L = layout()
    assert L.dtype.itemsize == 72
    assert L.dtype.names[:3] == ("ts", "mm", "page") and L.dtype.names[-2:] == ("ino", "index")
    assert L.kinds["RMAP"] == 3 and L.nkinds == max(L.kinds.values()) + 1 and "NKINDS" not in L.kinds
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


def test_counter_slots_are_what_the_c_compiler_computes(tmp_path):
    """layout.count_slots (read by the recorder) against the values gcc gives the same defines."""
    import shutil
    import subprocess
    from tests.needs import need
    from zaptrace.probes import EVENT_HEADER
    L = layout()
    assert L.count_slots["GENERATED"] == 0 and L.count_slots["LOST"] == L.nkinds
    assert L.count_slots["EMPTY_ZAPS"] == 2 * L.nkinds and L.count_slots["SLOTS"] == 2 * L.nkinds + 6
    assert (L.count_slots["ZAP_CHECKS"], L.count_slots["ZAP_WRONG"]) == (2 * L.nkinds + 1, 2 * L.nkinds + 2)
    assert [L.count_slots[k] for k in ("ZAP_OPENS", "ZAP_JOINED", "ZAP_SPLIT")] == [2 * L.nkinds + i for i in (3, 4, 5)]
    gcc = shutil.which("gcc")
    need(bool(gcc), "gcc is missing (scripts/setup installs it)")
    src = tmp_path / "slots.c"
    src.write_text("#include <stdio.h>\n#include <stdint.h>\n"
                   "typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32;\n"
                   "typedef uint64_t __u64; typedef int32_t __s32;\n"
                   f'#include "{EVENT_HEADER}"\n'
                   "int main(void) {\n"
                   + "".join(f'\tprintf("{n} %d\\n", (int)ZT_COUNT_{n});\n' for n in L.count_slots)
                   + "\treturn 0;\n}\n")
    subprocess.run([gcc, "-Wall", "-Werror", "-o", str(tmp_path / "slots"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "slots")], capture_output=True, text=True, check=True).stdout
    assert {n: int(v) for n, v in (line.split() for line in out.splitlines())} == L.count_slots


@pytest.mark.parametrize("bad", ["#define ZT_COUNT_X (ZT_NKINDS + 1)", "#define ZT_COUNT_X 3"])
def test_counter_slots_of_another_form_are_refused(bad):
    with pytest.raises(ValueError, match="counter slot"):
        Layout("enum zt_kind { ZT_A = 1, ZT_NKINDS = 2, }; struct zt_event { __u64 ts; };\n" + bad + "\n")
