"""Load a trace file into pandas: one call, vectorised, no per-event Python.

The events come back sorted by timestamp (ring-buffer records from different
CPUs arrive out of order); the file order is kept as column ``seq`` so that
equal timestamps keep their recorded order.

``ts`` is int64 nanoseconds (CLOCK_MONOTONIC; the file stores uint64): the
analysis subtracts times, so they must be signed, and compares them exactly,
so they are never floats (float64 is exact only below 2**53 ns, 104 days of
uptime).  A record whose timestamp does not fit int64 (2**63 ns, 292 years)
cannot come from CLOCK_MONOTONIC: it is dropped and reported in ``problems``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from zaptrace import tracefile

from zaptrace.layout import layout

# Kind names as the trace header spells them, so that analysis code refers to kinds by
# name whatever their numeric codes are.  Every trace has the REQUIRED_KINDS (the format
# has had them from the start); a kind added since (probes/zaptrace_event.h) may be absent
# from an older trace's header: ``Trace.code`` then gives ABSENT, which no event has.
REQUIRED_KINDS = ("zap_enter", "zap_exit", "rmap", "dirty", "tlb_flush_enter", "tlb_flush_exit",
                  "flush_range_enter", "flush_range_exit", "rmaps_enter", "rmaps_exit",
                  "mkclean_enter", "mkclean_exit")
#: Every kind this zaptrace knows, in the header's order.
KIND_NAMES = tuple(name.lower() for name, _ in sorted(layout().kinds.items(), key=lambda kv: kv[1]))
#: The code of a kind the trace does not have (kind codes are one byte, below ZT_NKINDS).
ABSENT = 255


@dataclass
class Trace:
    path: str
    head: Dict[str, Any]
    events: pd.DataFrame
    kinds: Dict[str, int]                 # kind name -> code, from the header
    flags: Dict[str, int]                 # flag name -> bit, from the header
    stats: Optional[Dict[str, Any]] = None
    stat_series: List[Any] = field(default_factory=list)    # (time_ns, cumulative lost) per STAT chunk
    meta: Dict[str, Any] = field(default_factory=dict)
    end: Optional[Dict[str, Any]] = None
    problems: List[str] = field(default_factory=list)
    skipped_bytes: int = 0
    file_bytes: int = 0

    @property
    def kernel(self) -> str:
        return str(self.head.get("kernel", {}).get("release", "unknown"))

    @property
    def command(self) -> List[str]:
        return list(self.head.get("command") or [])

    @property
    def finished(self) -> bool:
        return self.end is not None

    def counters(self) -> Optional[Dict[str, Dict[str, int]]]:
        """generated/lost/delivered per kind from END (or the last STAT), None if none."""
        src = self.end or self.stats
        if not src:
            return None
        return {k: dict(src.get(k, {})) for k in ("generated", "lost", "delivered")}

    @property
    def zaps_not_written(self) -> Optional[int]:
        """Zap brackets in which no event of their task fired: the recorder counts them and
        does not write them (probes/zaptrace.bpf.c, h_zap_enter); None for traces from
        before that, which wrote every zap."""
        src = self.end or self.stats
        v = src.get("zaps_not_written") if src else None
        return None if v is None else int(v)

    @property
    def lost_events(self) -> Optional[int]:
        c = self.counters()
        return None if c is None else int(sum(c["lost"].values()))

    def lost_by_kind(self) -> Dict[str, int]:
        c = self.counters()
        return {} if c is None else {k: int(v) for k, v in c["lost"].items()}

    def event_counts(self) -> Dict[str, int]:
        codes = self.events["kind"].to_numpy()
        # one comparison per kind over the 1-byte codes: np.bincount would first widen them to
        # 8 bytes each (80 MB at 10 M events)
        return {name: int(np.count_nonzero(codes == code)) for name, code in self.kinds.items()}

    @property
    def duration_s(self) -> Optional[float]:
        if self.end and "duration_s" in self.end:
            return float(self.end["duration_s"])
        ev = self.events
        if len(ev):
            return float(ev["ts"].iloc[-1] - ev["ts"].iloc[0]) / 1e9
        return None

    @property
    def struct_page_size(self) -> int:
        return int(self.meta.get("struct_page_size") or 64)

    def code(self, name: str) -> int:
        """The code of kind ``name``; ABSENT (no event has it) for a kind newer than the trace."""
        if name in self.kinds:
            return self.kinds[name]
        if name in KIND_NAMES:
            return ABSENT
        raise KeyError(name)

    def has_kind(self, name: str) -> bool:
        return name in self.kinds

    def flag(self, name: str) -> int:
        return self.flags[name]


def _gather(arr: np.ndarray, order: np.ndarray) -> np.ndarray:
    """arr[order] for a structured array; rows of 8-byte words when the record size
    allows: numpy copies those as plain rows, 2-3 times faster than void records.
    np.take(..., axis=0) and not words[order]: the same rows, but take copies each row as
    one block while fancy indexing walks it word by word (2-3 times slower again)."""
    size = arr.dtype.itemsize
    if size % 8 or not arr.flags.c_contiguous or len(arr) == 0:
        return arr[order]
    words = arr.view(np.uint64).reshape(-1, size // 8)
    return np.take(words, order, axis=0).view(arr.dtype).reshape(-1)


#: Rows per block of ``_sort_in_place``: its two buffers (4.5 MiB each for 72-byte records)
#: are the only copy of the records it makes; a record may move at most this many rows
#: towards the end of the array.
SORT_BLOCK = 1 << 16


def _sort_in_place(arr: np.ndarray, order: np.ndarray) -> bool:
    """``arr[:] = arr[order]`` without a second copy of the records, when it can: True then;
    False, with ``arr`` untouched, when a record would move more than SORT_BLOCK rows towards
    the end of the array (order[i] < i - SORT_BLOCK: its row would be overwritten before it
    is read), or ``arr`` is not a writable array of whole 8-byte words, or is one block or less.

    The ring buffer delivers records nearly in time order (a record is out of place by the
    few records of other CPUs reserved beside it), so the sorted array is built block by
    block in the array itself: block k is gathered into a buffer while block k-1, gathered
    before, is written back.  What block k reads was never overwritten: the writes so far
    end at the start of block k-1, and no record of block k comes from more than
    SORT_BLOCK rows before it.  Against the gather into a new array (``_gather``): one copy of the
    records less at the peak (720 MB at 10 M events), and no fresh memory to fault in."""
    n = len(arr)
    size = arr.dtype.itemsize
    if (len(order) != n or n <= SORT_BLOCK or size % 8 or not arr.flags.c_contiguous
            or not arr.flags.writeable):
        return False
    # the largest move towards the end, i - order[i], block by block (no n-sized temporaries)
    for a in range(0, n, SORT_BLOCK):
        o = order[a:a + SORT_BLOCK]
        if int((np.arange(a, a + len(o)) - o).max()) > SORT_BLOCK:
            return False
    words = arr.view(np.uint64).reshape(n, size // 8)
    bufs = [np.empty((SORT_BLOCK, size // 8), dtype=np.uint64) for _ in range(2)]
    pending: Optional[Tuple[int, np.ndarray]] = None      # (first row, block) gathered, not yet written
    for k, a in enumerate(range(0, n, SORT_BLOCK)):
        o = order[a:a + SORT_BLOCK]
        buf = bufs[k % 2][:len(o)]
        # mode "clip": the indices are valid, and take buffers ``out`` under the default "raise"
        np.take(words, o, axis=0, out=buf, mode="clip")
        if pending is not None:
            words[pending[0]:pending[0] + len(pending[1])] = pending[1]
        pending = (a, buf)
    if pending is not None:
        words[pending[0]:pending[0] + len(pending[1])] = pending[1]
    return True


def header(raw: tracefile.RawTrace) -> Tuple[Dict[str, Any], Dict[str, int], Dict[str, int]]:
    """The trace's header (with the probe map as finally attached, e.g. after a fallback), its
    event kinds by name and its flags by name; a header without every kind is an error."""
    head = dict(raw.head)
    if "probes" in raw.meta:
        head["probes"] = raw.meta["probes"]
    kinds = {str(v): int(k) for k, v in (head.get("kinds") or {}).items()}
    missing = [k for k in REQUIRED_KINDS if k not in kinds]
    if missing:
        raise tracefile.TraceError(f"{raw.path}: header lacks event kinds {', '.join(missing)}")
    flags = {str(k): int(v) for k, v in (head.get("flags") or {}).items()}
    return head, kinds, flags


def from_raw(raw: tracefile.RawTrace) -> Trace:
    """The trace of ``raw``, its events sorted by time; ``raw.events`` may be sorted in place
    (``_sort_in_place``): its records stay the same, in time order."""
    head, kinds, flags = header(raw)
    arr = raw.events
    problems = list(raw.problems)
    too_late = arr["ts"] > np.uint64(np.iinfo(np.int64).max)
    if too_late.any():
        problems.append(f"{int(too_late.sum())} events with a timestamp of 2**63 ns or more dropped "
                        "(not a CLOCK_MONOTONIC time)")
    if too_late.any():
        keep = np.flatnonzero(~too_late)
        order = keep[np.argsort(arr["ts"][keep], kind="stable")]
    else:
        order = np.argsort(arr["ts"], kind="stable")
    # One gather of whole records, not one per column: a record is one cache line, so
    # this reads each once (a per-column gather from the interleaved records reads
    # every line once per column).  The columns are then strided views of it, no copies.
    # In the raw array itself when the records are nearly in order (as the ring buffer
    # delivers them): ``raw.events`` is then sorted too.
    rec = arr if not too_late.any() and _sort_in_place(arr, order) else _gather(arr, order)
    cols = {name: rec[name] for name in arr.dtype.names}
    cols["ts"] = cols["ts"].view(np.int64)      # exact: every ts kept is < 2**63
    # kind alone is contiguous (1 byte per event): the analysis selects by kind a dozen times,
    # and a comparison on the strided view reads every record's cache line each time.
    cols["kind"] = np.ascontiguousarray(cols["kind"])
    cols["seq"] = order.astype(np.int64, copy=False)      # argsort gives int64 already: no copy
    df = pd.DataFrame(cols, copy=False)
    return Trace(path=raw.path, head=head, events=df, kinds=kinds, flags=flags, stats=raw.stats,
                 stat_series=list(raw.stat_series),
                 meta=raw.meta, end=raw.end, problems=problems, skipped_bytes=raw.skipped_bytes,
                 file_bytes=raw.file_bytes)


def load(path: str) -> Trace:
    """Load a trace file (intact chunks of a damaged file still load; see .problems)."""
    return from_raw(tracefile.read(path))
