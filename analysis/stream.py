"""The report of a trace larger than memory, in bounded memory, with the in-memory results.

Design (see docs/benchmarks.md, "Bounded memory"): the events are taken in timestamp order
(the order ``load`` gives them) and cut into *windows* of about ``window``
events, always between two different timestamps.  Each window is analysed by
the in-memory code itself (``gaps.gap_columns``) on the window plus a margin of
events before and after it; only the rows of the window itself are kept.  Then
every kept row is *checked*: each lookup of the pairing rules (the task's zap,
its dirty marker, its previous rmap call, the covering flush and its return,
the zap's return) either found its match inside the analysed events, which is
then the match the whole trace gives (the events are contiguous in time), or
its answer cannot change what the row reports (e.g. a dirty marker older than
the zap does not class the page), or the trace has none (the analysed events
reach the start or the end of the trace, or an index built in a first pass
says the task never calls that function again).  A window with a row not
decided this way is analysed again with a margin twice as wide.  So the
result is exactly the in-memory one, row by row, whatever the margins.

Why this and not per-chunk pairing with carried state: the rules stay in one
place (gaps.py), so the two paths cannot drift apart; the carried state would
be a second implementation of every rule (open zaps, pending markers, flush
calls, mkclean spans) to keep equal forever.  The price: margins are analysed
twice (about 25 % more work), and a row whose match is very far away (a zap
whose return was lost, a task that never flushes again although the index
says it does) widens its window, up to the whole rest of the trace.

What is held whole: the mkclean calls of the trace (window hits pair any
task's mkclean with the folio's open windows; about 60 bytes per call, built
in the first pass), and the summary's accumulators (the paired gaps, 8 bytes
per paired page, for exact percentiles).  The file is read through mmap,
and the pages read are dropped from the resident set as soon as they are
copied (madvise DONTNEED), so the page cache does not count as ours.

Records slightly out of timestamp order (per-CPU ring buffers) are sorted
exactly as ``load`` sorts them (stable by timestamp, file order for equal
timestamps) in one streaming pass: after the n-th EVTS chunk, every buffered
record earlier than the earliest timestamp of all later chunks (known from the
first pass) is in its final place.
"""
from __future__ import annotations

import mmap
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from zaptrace import tracefile
from zaptrace.vocab import OTHER_PATH

from . import gaps as G
from .errors import AnalysisError
from .load import Trace, header
from .result import Analysis

INT64_MAX = np.iinfo(np.int64).max
#: Bytes of memory per event of a window (the window, its margins, the buffer of sorted
#: events and the in-memory analysis of them), measured on bench/analysis_bench.py traces.
BYTES_PER_WINDOW_EVENT = 700
MIN_WINDOW = 4096


class StreamTrace(Trace):
    """A Trace whose events are not held: its counts come from the first pass."""

    kind_counts: Dict[str, int]
    first_ts: Optional[int] = None
    last_ts: Optional[int] = None

    def event_counts(self) -> Dict[str, int]:
        return dict(self.kind_counts)

    @property
    def duration_s(self) -> Optional[float]:
        if self.end and "duration_s" in self.end:
            return float(self.end["duration_s"])
        if self.first_ts is not None:
            return float(self.last_ts - self.first_ts) / 1e9
        return None


class _File:
    """The trace through a read-only mmap; what was read is dropped from the resident set."""

    def __init__(self, path: str):
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise tracefile.TraceError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise tracefile.TraceError(f"{path}: is a directory, not a trace file") from None
        except OSError as e:
            raise tracefile.TraceError(f"{path}: cannot read: {e.strerror}") from None
        with f:
            if os.fstat(f.fileno()).st_size == 0:
                tracefile.parse(b"", path)          # raises the usual "empty file"
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.path = path

    def release(self, start: int, end: int) -> None:
        a = start - start % mmap.PAGESIZE
        if end > a and hasattr(self.mm, "madvise"):
            self.mm.madvise(mmap.MADV_DONTNEED, a, end - a)

    def records(self, span, dt: np.dtype) -> np.ndarray:
        start, length = span
        view = np.frombuffer(self.mm, dtype=dt, count=length // dt.itemsize, offset=start)
        out = view.copy()
        del view
        self.release(start, start + length)
        return out

    def close(self) -> None:
        self.mm.close()


def _kept(rec: np.ndarray) -> np.ndarray:
    """The records ``load`` keeps (a timestamp of 2**63 ns or more is dropped)."""
    late = rec["ts"] > np.uint64(INT64_MAX)
    return rec[~late] if late.any() else rec


class _Index:
    """What the first pass learns: counts, extreme times, the mkclean events, and per task the
    last time it entered a flush (per mm) or returned from a zap or flush."""

    def __init__(self, kinds: Dict[str, int]):
        self.kinds = kinds
        self.count = 0
        self.late = 0
        self.kind_counts = np.zeros(256, dtype=np.int64)
        self.first: Optional[int] = None
        self.last: Optional[int] = None
        self.mins: List[int] = []
        self.mk: List[np.ndarray] = []
        self.last_enter: Dict[Tuple[int, int, int], int] = {}     # (kind, tid, mm) -> last ts
        self.last_exit: Dict[Tuple[int, int], int] = {}           # (kind, tid) -> last ts

    def add(self, rec: np.ndarray) -> None:
        n0 = len(rec)
        rec = _kept(rec)
        self.late += n0 - len(rec)
        self.count += len(rec)
        if len(rec) == 0:
            self.mins.append(np.iinfo(np.uint64).max)
            return
        ts = rec["ts"]
        lo, hi = int(ts.min()), int(ts.max())
        self.mins.append(lo)
        self.first = lo if self.first is None else min(self.first, lo)
        self.last = hi if self.last is None else max(self.last, hi)
        kind = rec["kind"]
        self.kind_counts += np.bincount(kind, minlength=256)[:256]
        k = self.kinds
        mk = (kind == k["mkclean_enter"]) | (kind == k["mkclean_exit"])
        if mk.any():
            self.mk.append(rec[mk])
        for name in ("flush_range_enter", "tlb_flush_enter"):
            sel = kind == k[name]
            if sel.any():
                g = pd.DataFrame({"tid": rec["tid"][sel], "mm": rec["mm"][sel], "ts": ts[sel]}).groupby(
                    ["tid", "mm"], sort=False)["ts"].max()
                for (tid, m), t in g.items():
                    key = (k[name], int(tid), int(m))
                    self.last_enter[key] = max(self.last_enter.get(key, 0), int(t))
        for name in ("zap_exit", "flush_range_exit", "tlb_flush_exit"):
            sel = kind == k[name]
            if sel.any():
                g = pd.DataFrame({"tid": rec["tid"][sel], "ts": ts[sel]}).groupby("tid", sort=False)["ts"].max()
                for tid, t in g.items():
                    key = (k[name], int(tid))
                    self.last_exit[key] = max(self.last_exit.get(key, 0), int(t))

    def enter_after(self, kind: int, tid: np.ndarray, mm: np.ndarray, t: np.ndarray) -> np.ndarray:
        """True where task ``tid`` enters ``kind`` for ``mm`` somewhere after ``t`` in the trace."""
        last = np.array([self.last_enter.get((kind, int(a), int(b)), -1) for a, b in zip(tid, mm)], dtype=np.int64)
        return last > t

    def exit_at_or_after(self, kind: int, tid: np.ndarray, t: np.ndarray) -> np.ndarray:
        """True where task ``tid`` returns from ``kind`` at or after ``t`` somewhere in the trace."""
        last = np.array([self.last_exit.get((kind, int(a)), -1) for a in tid], dtype=np.int64)
        return last >= t


class _Sorted:
    """The kept records in ``load``'s order, as a sliding buffer over global positions."""

    def __init__(self, fh: _File, spans, dt: np.dtype, mins: List[int]):
        self.fh, self.spans, self.dt = fh, spans, dt
        suf = np.minimum.accumulate(np.array(mins[::-1] or [0], dtype=np.uint64))[::-1]
        self.release_below = list(suf[1:]) + [None]        # after span i: every ts < min of spans > i
        self.gen = self._released()
        self.buf = np.zeros(0, dtype=dt)
        self.base = 0
        self.cut = 0                # positions below this may be dropped

    def _released(self):
        pending = np.zeros(0, dtype=self.dt)
        for span, below in zip(self.spans, self.release_below):
            rec = _kept(self.fh.records(span, self.dt))
            pending = np.concatenate([pending, rec]) if len(pending) else rec
            if below is None:
                out, pending = pending, pending[:0]
            else:
                sel = pending["ts"] < below
                out, pending = pending[sel], pending[~sel]
            if len(out):
                yield out[np.argsort(out["ts"], kind="stable")]
        if len(pending):
            yield pending[np.argsort(pending["ts"], kind="stable")]

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    def cover(self, upto: int) -> None:
        """Hold every position below ``upto`` (or up to the end of the trace)."""
        new = []
        have = self.end
        while have < upto:
            try:
                a = next(self.gen)
            except StopIteration:
                break
            new.append(a)
            have += len(a)
        k = self.cut - self.base
        if new or k > 0:
            self.buf = np.concatenate([self.buf[k:]] + new)
            self.base = self.cut

    def ts(self, pos: int) -> int:
        return int(self.buf["ts"][pos - self.base])


# ----------------------------------------------------------- accumulators --

class _Agg:
    """The summary's inputs, per (class, path) block of rows: counts, and the gaps themselves."""

    def __init__(self):
        self.n = np.zeros((len(G.CLASSES), len(G.PATHS)), dtype=np.int64)
        self.paired = np.zeros_like(self.n)
        self.open = np.zeros_like(self.n)
        self.closed = np.zeros_like(self.n)
        self.hits = np.zeros_like(self.n)
        self.pages_hit = np.zeros_like(self.n)
        self.bypass = np.zeros_like(self.n)
        self.pages_bypassed = np.zeros_like(self.n)
        self.loss = np.zeros_like(self.n)
        self.reasons = np.zeros((len(G.CLASSES), len(G.PATHS), len(G.REASONS)), dtype=np.int64)
        self.nr: Dict[Tuple[int, int], Dict[int, int]] = {}
        self.gap: Dict[Tuple[int, int], List[np.ndarray]] = {}
        self.gap_mmu: Dict[Tuple[int, int], List[np.ndarray]] = {}
        self.rows = 0

    @staticmethod
    def _small(v: np.ndarray) -> np.ndarray:
        """int32 when every value fits (gaps are usually microseconds): half the memory, exact."""
        if len(v) and v.min() >= -2**31 and v.max() < 2**31:
            return v.astype(np.int32)
        return v.copy()

    def add(self, d: Dict[str, np.ndarray]) -> None:
        cls, path = d["class"].astype(np.int64), d["path"].astype(np.int64)
        self.rows += len(cls)
        key = cls * len(G.PATHS) + path
        size = self.n.size

        def count(mask):
            return np.bincount(key[mask], minlength=size).reshape(self.n.shape)
        paired = d["paired"]
        gap = d["gap_ns"]
        self.n += count(np.ones(len(key), dtype=bool))
        self.paired += count(paired)
        self.open += count(paired & (gap > 0))
        self.closed += count(paired & (gap <= 0))
        hits = d["hits"].astype(np.int64)
        self.hits += np.bincount(key, weights=hits, minlength=size).astype(np.int64).reshape(self.n.shape) \
            if hits.max(initial=0) < 2**52 else 0
        self.pages_hit += count(hits > 0)
        bypass = d["bypass"].astype(np.int64)
        self.bypass += np.bincount(key, weights=bypass, minlength=size).astype(np.int64).reshape(self.n.shape)
        self.pages_bypassed += count(bypass > 0)
        self.loss += count(d["loss_suspect"])
        un = ~paired
        self.reasons += np.bincount(key[un] * len(G.REASONS) + d["unpaired_reason"][un].astype(np.int64),
                                    minlength=self.reasons.size).reshape(self.reasons.shape)
        mmu_ok = d["gap_mmu_ok"]
        for k in np.unique(key):
            c, p = divmod(int(k), len(G.PATHS))
            rows = key == k
            vals, cnt = np.unique(d["nr_in_call"][rows], return_counts=True)
            h = self.nr.setdefault((c, p), {})
            for v, m in zip(vals.tolist(), cnt.tolist()):
                h[v] = h.get(v, 0) + m
            sel = rows & paired
            if sel.any():
                self.gap.setdefault((c, p), []).append(self._small(gap[sel]))
                sel &= mmu_ok
                if sel.any():
                    self.gap_mmu.setdefault((c, p), []).append(self._small(d["gap_mmu_ns"][sel]))


def _nr_stats(hists: List[Dict[int, int]]) -> Dict[str, Optional[int]]:
    """summary._per_call of the values counted in ``hists``: min, int(np.median), max."""
    h: Dict[int, int] = {}
    for x in hists:
        for v, m in x.items():
            h[v] = h.get(v, 0) + m
    if not h:
        return {"min": None, "p50": None, "max": None}
    vals = np.array(sorted(h), dtype=np.int64)
    cum = np.cumsum([h[v] for v in vals.tolist()])
    n = int(cum[-1])

    def nth(i):                      # the i-th smallest value (0-based)
        return vals[int(np.searchsorted(cum, i, side="right"))]
    if n % 2:
        med = float(nth(n // 2))
    else:
        med = float(np.mean(np.array([nth(n // 2 - 1), nth(n // 2)], dtype=np.int64)))
    return {"min": int(vals[0]), "p50": int(med), "max": int(vals[-1])}


def _gaps_of(parts: List[List[np.ndarray]]) -> np.ndarray:
    arrs = [a for p in parts for a in p]
    if not arrs:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([a.astype(np.int64, copy=False) for a in arrs])


def _block(agg: _Agg, keys: List[Tuple[int, int]]) -> Dict[str, Any]:
    """summary._block of the rows of the (class, path) blocks ``keys``."""
    from .summary import gap_stats

    def tot(a):
        return int(sum(int(a[c, p]) for c, p in keys))
    reasons = np.zeros(len(G.REASONS), dtype=np.int64)
    for c, p in keys:
        reasons += agg.reasons[c, p]
    unpaired = tot(agg.n) - tot(agg.paired)
    vc = pd.Series(pd.Categorical.from_codes(np.repeat(np.arange(len(G.REASONS), dtype=np.int8), reasons),
                                             categories=G.REASONS)).value_counts()
    vc = vc[vc > 0]
    g = _gaps_of([agg.gap.get(k, []) for k in keys])
    stats = gap_stats(g)
    del g
    gm = _gaps_of([agg.gap_mmu.get(k, []) for k in keys])
    mmu = gap_stats(gm)
    del gm
    return {
        "decrements": tot(agg.n),
        "paired": tot(agg.paired),
        "unpaired": unpaired,
        **{q: int(sum(int(agg.n[c, p]) for c, p in keys if G.PATHS[p] == q)) for q in G.ZAP_PATHS},
        "open": tot(agg.open),
        "closed": tot(agg.closed),
        "hits": tot(agg.hits),
        "pages_hit": tot(agg.pages_hit),
        "bypass": tot(agg.bypass),
        "pages_bypassed": tot(agg.pages_bypassed),
        "loss_suspect": tot(agg.loss),
        "gap_ns": stats,
        "gap_mmu_ns": mmu,
        "unpaired_reasons": {str(k): int(v) for k, v in vc.items()},
        "pages_per_call": _nr_stats([agg.nr.get(k, {}) for k in keys]),
    }


def _summary(trace: StreamTrace, agg: _Agg) -> Dict[str, Any]:
    """summary.summarize, from the accumulators: the same dict, key for key."""
    from .summary import assemble, trace_fields
    zap_paths = [G.PATH_CODE[p] for p in G.ZAP_PATHS]
    classes = {}
    for ci, cl in enumerate(G.CLASSES):
        block = _block(agg, [(ci, p) for p in zap_paths])
        block["by_path"] = {p: _block(agg, [(ci, G.PATH_CODE[p])]) for p in G.ZAP_PATHS}
        classes[cl] = block
    oth = G.PATH_CODE[OTHER_PATH]
    other_reasons = agg.reasons[:, oth].sum(axis=0)
    vc = pd.Series(pd.Categorical.from_codes(np.repeat(np.arange(len(G.REASONS), dtype=np.int8), other_reasons),
                                             categories=G.REASONS)).value_counts()
    src = G.flush_source(trace).name if agg.rows else None
    return assemble(trace_fields(trace, src), classes,
                    {"count": int(agg.n[:, oth].sum()), "reasons": {str(k): int(v) for k, v in vc.items() if v}},
                    int(agg.hits[:, zap_paths].sum()))


# ------------------------------------------------------------- the check --

def _undecided(d: Dict[str, np.ndarray], trace: Trace, idx: _Index, at_start: bool, at_end: bool,
               zapped_before: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(backward, forward): rows whose result may depend on events before / after the
    analysed ones.  See the module doc; each condition names the lookup it covers.  Which
    rows make which lookup comes from the rules (``gaps.PATH_RULES``), never a path's name."""
    p = d["path"]
    zap_row = G.path_mask(p, lambda r: True)
    n = len(p)
    # other-path rows pair with nothing: their row is made of their own event (and the
    # global loss marks); their zap_ts is not in the summary.
    back = np.zeros(n, dtype=bool)
    if not at_start:
        # the task's zap: found among the analysed events (then the dirty marker, the
        # previous rmap call and the backward cover, all compared with it, are decided too),
        # or the task has no zap_enter before them at all.
        back = zap_row & ~d["zap_ok"] & np.isin(d["tid"], zapped_before)
        # a row covered by an earlier flush ("previous") of a task with no zap at all takes
        # the task's last completed flush for the mm, however old: found among the analysed
        # events, or undecided
        back |= G.path_mask(p, lambda r: not r.looks_forward) & ~d["zap_ok"] & ~d["flush_done_ok"]
    fwd = np.zeros(n, dtype=bool)
    if not at_end:
        # forward-looking rows: the next flush after the decrement, or after the clear, which
        # lies in the decrement's own zap, so among the analysed events when the zap is
        nxt = G.path_mask(p, lambda r: r.looks_forward)
        ts, tid, mm = d["ts"], d["tid"], d["mm"]
        src = G.flush_source(trace)
        for enter_ok, enter, done_ok, ken, kex in (
                (d["flush_enter_ok"], d["flush_enter_ts"], d["flush_done_ok"], src.enter, src.exit),
                (d["mmu_enter_ok"], d["mmu_enter_ts"], d["mmu_done_ok"], trace.code("tlb_flush_enter"),
                 trace.code("tlb_flush_exit"))):
            # the next flush: found (then its return: found, or the task never returns from
            # that function again), or the task never enters it for that mm again
            q = np.flatnonzero(nxt & ~done_ok)
            if len(q):
                no_next = ~enter_ok[q] & ~idx.enter_after(ken, tid[q], mm[q], ts[q])
                no_ret = enter_ok[q] & ~idx.exit_at_or_after(kex, tid[q], enter[q])
                fwd[q] |= ~(no_next | no_ret)
        # the zap's return, on the rows whose class reads it: a marker anywhere in the zap
        # ("zap": searched after the decrement up to the zap's return), and a marker before
        # the decrement that a later "implied" decrement of the folio may take ("before":
        # taken up to the zap's return), on the rows it still classes dirty
        after = G.path_mask(p, lambda r: r.marker == "zap")
        taken = G.path_mask(p, lambda r: r.marker == "before") & d["pte_dirty"]
        q = np.flatnonzero((after | taken) & d["zap_ok"] & ~d["zap_done_ok"])
        if len(q):
            # a zap that never returns: a "zap" marker is then not searched after the
            # decrement (decided), while a "before" marker is taken by a later decrement
            # anywhere up to the end of the trace (undecided)
            never = ~idx.exit_at_or_after(trace.code("zap_exit"), tid[q], d["zap_ts"][q])
            fwd[q] |= ~(never & ~taken[q])
    return back, fwd


# ------------------------------------------------------------- the driver --

def _open_zap_start(src: "_Sorted", b: int, kinds: Dict[str, int]) -> int:
    """The earliest position below ``b`` of a task's last zap_enter not yet followed by
    its zap_exit (``b`` when none)."""
    reg = src.buf[:b - src.base]
    kind, tid = reg["kind"], reg["tid"]
    out = b
    enter = np.flatnonzero(kind == kinds["zap_enter"])
    if len(enter) == 0:
        return out
    exit_ = np.flatnonzero(kind == kinds["zap_exit"])
    last_en = pd.Series(enter).groupby(tid[enter]).max()
    last_ex = pd.Series(exit_).groupby(tid[exit_]).max().reindex(last_en.index).fillna(-1)
    opened = last_en[last_en.to_numpy() > last_ex.to_numpy()]
    if len(opened):
        out = min(out, src.base + int(opened.min()))
    return out


def _events(rec: np.ndarray) -> pd.DataFrame:
    cols = {name: rec[name] for name in rec.dtype.names}
    cols["ts"] = cols["ts"].view(np.int64)
    return pd.DataFrame(cols, copy=False)


_HIT_INPUT = ("ts", "folio", "page", "pfn", "tid", "cpu", "open")


def _hit_rows(wtrace: Trace, d: Dict[str, np.ndarray], mk: pd.DataFrame) -> pd.DataFrame:
    sel = np.flatnonzero(d["hits"] > 0)
    df = pd.DataFrame({c: d[c][sel] for c in _HIT_INPUT})
    df["class"] = pd.Categorical.from_codes(d["class"][sel], categories=G.CLASSES)
    df["path"] = pd.Categorical.from_codes(d["path"][sel], categories=G.PATHS)
    df["flush_done_ts"] = pd.arrays.IntegerArray(d["flush_done_ts"][sel].copy(), ~d["flush_done_ok"][sel])
    df["gap_ns"] = pd.arrays.IntegerArray(d["gap_ns"][sel].copy(), ~d["gap_ok"][sel])
    return G.window_hits(wtrace, df, mk)[1]


def analyse_bounded(path: str, max_memory: Optional[int] = None, window: Optional[int] = None,
                    margin: Optional[int] = None, with_hits: bool = True, max_hits: Optional[int] = 20,
                    progress: Optional[Callable[[str], None]] = None):
    """The report of ``path`` in bounded memory: an ``Analysis`` (analysis.result) whose summary equals
    the in-memory one (``gaps`` is empty; ``hits`` holds the first ``max_hits`` window hits
    by decrement time, all when None).  ``window``/``margin``: events per window and per
    first margin (default: from ``max_memory``, in bytes)."""
    say = progress or (lambda m: None)
    if window is None:
        budget = max_memory or (1 << 30)
        window = max(MIN_WINDOW, budget // BYTES_PER_WINDOW_EVENT)
    window = max(1, int(window))
    margin = max(1, int(margin if margin is not None else window // 8))
    fh = _File(path)
    try:
        raw = tracefile.parse(fh.mm, path, lazy=True, release=fh.release)
        head, kinds, flags = header(raw)
        dt = tracefile._dtype_from_head(raw.head, path)
        idx = _Index(kinds)
        for span in raw.event_spans:
            idx.add(fh.records(span, dt))
        problems = list(raw.problems)
        if idx.late:
            problems.append(f"{idx.late} events with a timestamp of 2**63 ns or more dropped "
                            "(not a CLOCK_MONOTONIC time)")
        common = dict(path=raw.path, head=head, kinds=kinds, flags=flags, stats=raw.stats,
                      stat_series=list(raw.stat_series), meta=raw.meta, end=raw.end, problems=problems,
                      skipped_bytes=raw.skipped_bytes, file_bytes=raw.file_bytes)
        trace = StreamTrace(events=pd.DataFrame(), **common)
        trace.kind_counts = {name: int(idx.kind_counts[code]) for name, code in kinds.items()}
        trace.first_ts, trace.last_ts = idx.first, idx.last
        # the mkclean calls of the whole trace, in load's order
        mkrec = np.concatenate(idx.mk) if idx.mk else np.zeros(0, dtype=dt)
        mkrec = mkrec[np.argsort(mkrec["ts"], kind="stable")]
        idx.mk = []
        mk = G.mkclean_spans(Trace(events=_events(mkrec), **common))
        del mkrec
        say(f"zaptrace: bounded memory: {idx.count:,} events in windows of {window:,} "
            f"(margins from {margin:,}), {len(mk):,} mkclean calls held")
        agg = _Agg()
        hits: List[pd.DataFrame] = []
        n_hits = 0
        N = idx.count
        src = _Sorted(fh, raw.event_spans, dt, idx.mins)
        zapped = np.zeros(0, dtype=np.uint32)       # tids with a zap_enter before the buffer
        zap_code = kinds["zap_enter"]
        a = 0
        windows = widened = 0
        while a < N:
            src.cover(a + window + 1)
            b = min(a + window, N)
            while b < N:                          # cut between two different timestamps
                src.cover(b + 1)
                if b >= src.end or src.ts(b) != src.ts(b - 1):
                    break
                b += 1
            back, ahead = margin, margin
            while True:
                s0 = max(src.base, a - back)
                while s0 < a and s0 > src.base and src.ts(s0) == src.ts(s0 - 1):
                    s0 += 1
                s1 = min(b + ahead, N)
                src.cover(s1 + 1)
                while s1 < N and s1 < src.end and src.ts(s1) == src.ts(s1 - 1):
                    s1 += 1
                    src.cover(s1 + 1)
                rec = src.buf[s0 - src.base:s1 - src.base]
                before = src.buf[:s0 - src.base]
                zapped_before = np.union1d(zapped, before["tid"][before["kind"] == zap_code])
                wtrace = Trace(events=_events(rec), **common)
                d, _ = G.gap_columns(wtrace, mk)
                lo = src.ts(a)
                own = d["ts"] >= lo
                if b < N:
                    own &= d["ts"] < src.ts(b)
                own = np.flatnonzero(own)
                d = {k: v[own] for k, v in d.items()}
                bk, fw = _undecided(d, wtrace, idx, s0 == 0, s1 == N, zapped_before)
                if not bk.any() and not fw.any():
                    break
                widened += 1
                if bk.any():
                    if s0 == src.base:
                        raise AnalysisError(
                            f"{path}: bounded memory: {int(bk.sum())} decrements near "
                            f"{(lo - (idx.first or 0)) / 1e9:.3f} s belong to a zap that began more than "
                            f"{a - src.base:,} events earlier; analyse it in memory (without --max-memory)")
                    back *= 2
                if fw.any():
                    ahead *= 2
            agg.add(d)
            if with_hits and (d["hits"] > 0).any():
                h = _hit_rows(wtrace, d, mk)
                n_hits += len(h)
                hits.append(h)
                if max_hits is not None:
                    cat = pd.concat(hits, ignore_index=True) if len(hits) > 1 else hits[0]
                    hits = [cat.sort_values(["dec_ts", "mkclean_enter_ts"], kind="stable").head(max_hits)]
            del d, wtrace, rec, before
            windows += 1
            # keep 4 margins before the next window to widen into, and the zaps still open
            # (their later decrements need the zap_enter), up to 4 windows (at least 64 Ki events) back
            keep = max(src.base, min(b - 4 * margin, _open_zap_start(src, b, kinds)), b - max(4 * window, 1 << 16))
            while keep > src.base and src.ts(keep) == src.ts(keep - 1):     # whole timestamps only
                keep -= 1
            dropped = src.buf[:keep - src.base]
            zapped = np.union1d(zapped, dropped["tid"][dropped["kind"] == zap_code])
            del dropped
            src.cut = keep
            a = b
        say(f"zaptrace: bounded memory: {windows:,} windows, {widened:,} widened")
        summary = _summary(trace, agg)
        del agg
        hit_df = (pd.concat(hits, ignore_index=True) if hits else pd.DataFrame(columns=G.HIT_COLUMNS))
        if max_hits is not None and len(hit_df):
            hit_df = hit_df.sort_values(["dec_ts", "mkclean_enter_ts"], kind="stable").head(max_hits)
        trace.t0 = idx.first or 0
        mode = (f"bounded memory ({windows:,} windows of about {window:,} events, "
                f"{widened:,} analysed again with wider margins)")
        return Analysis(trace=trace, gaps=pd.DataFrame(columns=G.GAP_COLUMNS), hits=hit_df, summary=summary,
                        hits_total=n_hits if with_hits else 0, mode=mode)
    finally:
        src = None
        try:
            fh.close()
        except BufferError:          # a view still refers to it: the mapping goes with it
            pass
