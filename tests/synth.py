"""Build small synthetic traces with hand-chosen events, for pure-analysis tests.

Timestamps are in nanoseconds; every helper returns the builder so a test
reads like the kernel's sequence of calls.
"""
from __future__ import annotations

import random
from typing import Dict, List, Optional

import numpy as np

from zaptrace.layout import layout
from zaptrace.tracefile import TraceWriter

L = layout()
K = {k.lower(): v for k, v in L.kinds.items()}
F = {k.lower(): v for k, v in L.flags.items()}
MM = 0xFFFF888000100000
MM2 = 0xFFFF888000200000
PAGE0 = 0xFFFFEA0000400000


def page(i: int) -> int:
    return PAGE0 + 64 * i


ALL_PROBES = ("zap", "rmap", "dirty", "tlb_flush", "flush_range", "flush_rmaps", "mkclean", "zap_pmd")


class TraceBuilder:
    def __init__(self, kernel: str = "synthetic", probes=ALL_PROBES):
        self.rows: List[tuple] = []
        self.kernel = kernel
        self.probes = probes

    def ev(self, ts, kind, tid=100, tgid=None, mm=MM, page=0, folio=None, pfn=None, nr=0, cpu=0, flags=0,
           ino=0, index=0):
        folio = page if folio is None else folio
        pfn = ((page - 0xFFFFEA0000000000) // 64 if page else 0) if pfn is None else pfn
        row = (ts, mm, page, folio, pfn, tid, tgid if tgid is not None else tid, nr, cpu, K[kind], flags)
        self.rows.append(row + (ino, index)[:len(L.dtype.names) - len(row)])
        return self

    # -- kernel call shapes ------------------------------------------------
    def zap(self, ts, tid=100, mm=MM, cpu=0, exit_ts=None):
        self.ev(ts, "zap_enter", tid=tid, mm=mm, cpu=cpu, page=0x7F0000000000, folio=0x7F0000100000, pfn=0)
        if exit_ts is not None:
            self.ev(exit_ts, "zap_exit", tid=tid, mm=mm, cpu=cpu, pfn=0)
        return self

    def zap_exit(self, ts, tid=100, mm=MM, cpu=0):
        return self.ev(ts, "zap_exit", tid=tid, mm=mm, cpu=cpu, pfn=0)

    def rmap(self, ts, pg, tid=100, mm=MM, cpu=0, anon=False, pgdirty=False, delayed=False,
             in_zap=True, nr=1, compound=False, pud=False, ino=0, index=0, folio=None):
        fl = (F["anon"] if anon else 0) | (F["pgdirty"] if pgdirty else 0)
        fl |= (F["in_zap"] if in_zap else 0) | (F["in_rmaps"] if delayed else 0)
        fl |= F["compound"] if compound else 0
        fl |= F["pud"] if pud else 0
        return self.ev(ts, "rmap", tid=tid, mm=mm, page=pg, folio=folio, nr=nr, cpu=cpu, flags=fl,
                       ino=ino, index=index)

    def zap_pmd(self, ts, tid=100, mm=MM, cpu=0, addr=0x7F0000200000):
        """zap_huge_pmd() entry: the PMD is cleared after it, under its lock."""
        return self.ev(ts, "zap_pmd", tid=tid, mm=mm, cpu=cpu, page=addr, folio=0, pfn=0, flags=F["in_zap"])

    def dirty(self, ts, pg, tid=100, mm=MM, cpu=0):
        return self.ev(ts, "dirty", tid=tid, mm=mm, page=pg, cpu=cpu, flags=F["in_zap"] | F["pgdirty"])

    def flush(self, ts, done, tid=100, mm=MM, cpu=0):
        self.ev(ts, "flush_range_enter", tid=tid, mm=mm, cpu=cpu, page=0x7F0000000000, folio=0x7F0000100000, pfn=0)
        return self.ev(done, "flush_range_exit", tid=tid, mm=mm, cpu=cpu, pfn=0)

    def mmu(self, ts, done, tid=100, mm=MM, cpu=0):
        self.ev(ts, "tlb_flush_enter", tid=tid, mm=mm, cpu=cpu, pfn=0)
        return self.ev(done, "tlb_flush_exit", tid=tid, mm=mm, cpu=cpu, pfn=0)

    def rmaps(self, ts, done, tid=100, mm=MM, cpu=0):
        self.ev(ts, "rmaps_enter", tid=tid, mm=mm, cpu=cpu, pfn=0)
        return self.ev(done, "rmaps_exit", tid=tid, mm=mm, cpu=cpu, pfn=0)

    def mkclean(self, ts, done, pg, tid=999, cpu=1, ret=0, ino=0, index=0):
        self.ev(ts, "mkclean_enter", tid=tid, mm=0, page=pg, cpu=cpu, ino=ino, index=index)
        if done is not None:
            self.ev(done, "mkclean_exit", tid=tid, mm=0, page=pg, cpu=cpu, nr=ret)
        return self

    def shifted(self, by: int) -> "TraceBuilder":
        """The same events, every timestamp moved by ``by`` ns (exact: Python ints)."""
        out = TraceBuilder(self.kernel, self.probes)
        out.rows = [(row[0] + by,) + row[1:] for row in self.rows]
        return out

    # -- output --------------------------------------------------------------
    def array(self, shuffle: Optional[int] = None) -> np.ndarray:
        arr = np.array(self.rows, dtype=L.dtype) if self.rows else np.zeros(0, dtype=L.dtype)
        if shuffle is not None:
            rng = random.Random(shuffle)
            idx = list(range(len(arr)))
            rng.shuffle(idx)
            arr = arr[idx]
        return arr

    def head(self) -> Dict:
        probes = [{"event": e, "attach": [e] if e in self.probes else [], "required": True} for e in ALL_PROBES]
        return dict(L.head_fields(), format="zaptrace", kernel={"release": self.kernel},
                    command=["synthetic"], probes=probes, start_ns=0)

    def write(self, path, lost: Optional[Dict[str, int]] = None, end: bool = True, shuffle=None,
              chunk: int = 0, stats: Optional[List[tuple]] = None, end_extra: Optional[Dict] = None) -> str:
        arr = self.array(shuffle)
        w = TraceWriter(str(path), self.head())
        step = chunk or max(len(arr), 1)
        for i in range(0, len(arr), step):
            w.events(arr[i:i + step])
        lost = lost or {}
        gen = {}
        for k, v in K.items():
            gen[k] = int((arr["kind"] == v).sum()) + lost.get(k, 0)
        for t, lost_total in stats or []:
            w.json(b"STAT", {"time_ns": t, "lost": {"rmap": lost_total}, "generated": {}, "delivered": {}})
        if end:
            w.json(b"END ", {"generated": gen, "lost": {k: lost.get(k, 0) for k in K},
                             "delivered": {k: gen[k] - lost.get(k, 0) for k in K}, "duration_s": 1.0,
                             **(end_extra or {})})
        w.close()
        return str(path)
