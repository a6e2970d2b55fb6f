"""The event layout, as declared (once) in the header probes/zaptrace_event.h.

The header is the single source of truth: this module parses its
``struct zt_event``, ``enum zt_kind``, ``ZT_F_*`` and ``ZT_COUNT_*`` defines into
a numpy dtype, kind names, flag bits and the slots of the BPF program's counters.  The parser accepts only the restricted
syntax that the header promises (one fixed-width member per line).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Dict, List, Tuple

import numpy as np

from .probes import EVENT_HEADER

_CTYPES = {
    "__u64": "<u8", "__s64": "<i8", "__u32": "<u4", "__s32": "<i4",
    "__u16": "<u2", "__s16": "<i2", "__u8": "u1", "__s8": "i1",
}


class Layout:
    """Everything the reader needs to know about the event records."""

    def __init__(self, text: str):
        self.text = text
        self.dtype = self._struct(text)
        self.kinds = self._enum(text)                    # name -> value, e.g. "ZAP_ENTER" -> 1
        self.kind_names = {v: k for k, v in self.kinds.items()}
        self.nkinds = self.kinds.pop("NKINDS")
        del self.kind_names[self.nkinds]
        self.flags = self._flags(text)                   # name -> bit, e.g. "ANON" -> 1
        # name -> slot of the per-CPU "counts" array, e.g. "LOST" -> 13 (add the kind to it)
        self.count_slots = self._count_slots(text, self.nkinds)

    def head_fields(self) -> dict:
        """The trace header entries that make a trace self-describing."""
        return {
            "event_dtype": [[n, self.dtype.fields[n][0].str] for n in self.dtype.names],
            "kinds": {str(v): k.lower() for k, v in self.kinds.items()},
            "flags": {k.lower(): v for k, v in self.flags.items()},
        }

    @staticmethod
    def _struct(text: str) -> np.dtype:
        m = re.search(r"struct\s+zt_event\s*\{(.*?)\};", text, re.S)
        if not m:
            raise ValueError("zaptrace_event.h: no struct zt_event")
        fields: List[Tuple[str, str]] = []
        for line in m.group(1).splitlines():
            line = re.sub(r"/\*.*?\*/", "", line).strip()
            if not line:
                continue
            mm = re.fullmatch(r"(\w+)\s+(\w+)\s*;", line)
            if not mm or mm.group(1) not in _CTYPES:
                raise ValueError(f"zaptrace_event.h: unsupported member {line!r}")
            fields.append((mm.group(2), _CTYPES[mm.group(1)]))
        dt = np.dtype(fields)
        offset = 0
        for name in dt.names:  # the C compiler must agree: no implicit padding
            f = dt.fields[name][0]
            if offset % f.itemsize:
                raise ValueError(f"zaptrace_event.h: member {name} is not naturally aligned")
            offset += f.itemsize
        if dt.itemsize % 8:
            raise ValueError("zaptrace_event.h: struct size must be a multiple of 8")
        return dt

    @staticmethod
    def _enum(text: str) -> Dict[str, int]:
        m = re.search(r"enum\s+zt_kind\s*\{(.*?)\};", text, re.S)
        if not m:
            raise ValueError("zaptrace_event.h: no enum zt_kind")
        body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
        return {k: int(v) for k, v in re.findall(r"ZT_(\w+)\s*=\s*(\d+)", body)}

    @staticmethod
    def _flags(text: str) -> Dict[str, int]:
        return {k: int(v, 16) for k, v in re.findall(r"#define\s+ZT_F_(\w+)\s+(0x[0-9a-fA-F]+)", text)}

    @staticmethod
    def _count_slots(text: str, nkinds: int) -> Dict[str, int]:
        """``#define ZT_COUNT_X (A * ZT_NKINDS [+ B])``, the only form the header uses."""
        slots = {}
        for line in re.findall(r"#define\s+ZT_COUNT_\w+.*", text):
            m = re.fullmatch(r"#define\s+ZT_COUNT_(\w+)\s+\(\s*(\d+)\s*\*\s*ZT_NKINDS\s*"
                             r"(?:\+\s*(\d+)\s*)?\)\s*", line)
            if not m:
                raise ValueError(f"zaptrace_event.h: unsupported counter slot {line.strip()!r}")
            slots[m.group(1)] = int(m.group(2)) * nkinds + int(m.group(3) or 0)
        return slots


@lru_cache(maxsize=None)
def layout() -> Layout:
    return Layout(EVENT_HEADER.read_text())
