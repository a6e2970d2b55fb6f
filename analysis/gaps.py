"""The per-page gap table: mapcount decrement -> the TLB flush that covers it.

Rules (written out exactly, with every inequality, in docs/measure.md):

* A *decrement* is an rmap event made inside a zap bracket of the same task
  (``immediate`` for a PTE-mapped page, ``pmd``/``pud`` for a whole
  PMD/PUD mapping of a folio) or inside ``tlb_flush_rmaps`` (``delayed``,
  6.2+).  Other rmap events are ``other-path``: kept in the table, never
  paired.  How each path is paired and classed is one row of PATH_RULES.
* The *covering flush* of an immediate decrement by task T on mm M is the
  first flush T issues for M after it; of a delayed decrement, the last
  flush T completed for M before it in the same zap.  A flush completes when
  ``flush_tlb_mm_range`` returns (``tlb_flush_mmu`` when the arch flush was
  not recorded).  ``gap_mmu_ns`` applies the same rule to ``tlb_flush_mmu``.
* ``gap_ns`` = flush completion - decrement, signed.  > 0: the window was
  open that long; <= 0: the flush came first.
* Class ``anon`` / ``file-dirty`` / ``file-clean``: file-dirty when the zap's
  own dirty marker (folio_mark_dirty/set_page_dirty of that folio by the same
  task in the same zap) exists: before the decrement on the PTE paths, before
  or after it on the PMD/PUD paths (``zap_huge_pmd`` drops the mapcount first
  and marks the folio dirty afterwards); one marker per PTE batch; every
  delayed file decrement (the kernel delays only dirty PTEs).  PG_dirty at
  the decrement is kept as ``pg_dirty`` but is not the criterion.
* A *window hit* is a mkclean of the same folio, by any task, overlapping
  the open window [decrement, flush completion].

Public interface: ``gap_table`` (the DataFrame), ``window_hits`` / ``hit_table``,
``calls`` / ``mkclean_calls``; the rules as data (``PathRule``, ``PATH_RULES``,
``paths_where``, ``ZAP_PATHS``, ``PATHS``, the ``R_*`` reasons); and for a caller that
works on the column arrays, as ``analysis.stream`` does: ``gap_columns`` (the table before
it becomes a DataFrame, with the masks and the pairing's own columns), ``path_mask`` (the
rows whose path's rule passes a test), ``flush_source`` (which function completes a flush
in a trace), ``mkclean_spans`` (the trace's mkclean calls, computed once and passed to
``gap_columns`` and ``window_hits``) and the category codes (``PATH_CODE``, ``CLASS_CODE``,
``REASON_CODE``: positions in ``PATHS``, ``CLASSES``, ``REASONS``).  Names with a leading
underscore are this module's own: no other module of the analysis uses them (tests do).

Everything is vectorised (sorts and ``searchsorted``, an exact numpy
``merge_asof``: see ``_asof``); events are taken in timestamp order whatever
order the ring buffer delivered them in.  Inside, tables are dicts of numpy
arrays and categorical columns small integer codes; the DataFrame with its
nullable and categorical columns is built once, at the end.

Time is exact integer nanoseconds end to end.  Timestamps are int64 ns
(CLOCK_MONOTONIC; ``load`` turns the trace's uint64 into int64), and every
comparison and subtraction of times is made in int64: float64 is exact only
below 2**53 ns (104 days of uptime).  Inside the computations a time that may
be missing is a pair (int64 array, boolean ``ok`` mask; the values where
``ok`` is False are meaningless and never read), except where a sentinel is
named (``NEVER``, ``BEFORE_ALL``).  Output time columns that may be missing
(``zap_ts``, ``flush_enter_ts``, ``flush_done_ts``, ``mmu_done_ts``,
``gap_ns``, ``gap_mmu_ns``; in the hit table ``flush_done_ts``, ``gap_ns``,
``mkclean_exit_ts``) are pandas nullable ``Int64`` (``pd.NA`` when missing);
``ts``, ``dec_ts`` and ``mkclean_enter_ts`` are never missing: int64.  Floats
appear only where times are displayed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import pandas as pd

from . import kernels
from .load import Trace
from zaptrace.vocab import ANON, CLASSES, DELAYED, FILE_CLEAN, FILE_DIRTY, IMMEDIATE, OTHER_PATH, PMD, PUD

@dataclass(frozen=True)
class PathRule:
    """How a decrement of one zap path is paired with its covering flush and classed.

    cover:  "next": the task's first flush for the mm that starts after the decrement;
            "after_clear": the task's first flush for the mm that starts after the entry
            was *cleared*, which the ``clear`` event bounds from below (the task's latest
            one in the same zap, before the decrement): a flush the kernel makes between
            the clear and the decrement (under the same lock) covers the entry, and its
            window is closed (gap <= 0).  Where the trace has no such event (recorded
            before it existed, or the probe was not attached) the decrement stands for
            the clear, as "next";
            "previous": the task's last flush for the mm completed before the decrement,
            in the same zap (the delayed rmap: the flush came first).
    marker: where the zap's dirty marker of the folio may stand: "before" the decrement
            in the same zap, after the task's previous rmap call on that folio and not
            taken by a later decrement of that folio on an "implied" path (the delayed
            rmap) before the zap returns (one marker per PTE batch; 6.2+ delays the dirty
            batches; a zap without a recorded return: up to the end of the trace); "zap":
            anywhere in the same zap (after the decrement: up to the zap's return, not
            searched when the zap has none)
            (zap_huge_pmd() drops the mapcount first, then marks the folio dirty); or
            "implied": the path exists only for dirty PTEs (the kernel sets delay_rmap
            only when pte_dirty, 5df397dec7c4), so a file page on it is file-dirty whether
            or not its marker was seen in this zap (on 7.3, 1 % of delayed removals came
            one zap after their marker).
    expand: one row per page of a multi-page call (PTE batches), or one row for the
            whole mapping (a PMD/PUD maps one folio at once).
    clear:  the event kind that bounds the clear from below ("after_clear" only).
    bypass: where the *bypass* search of a closed window starts (``_bypass_counts``): at a
            time no earlier than the entry's clear: "marker" (the zap marks the folio dirty
            right after clearing a dirty PTE: the row's dirty marker, a bound from above,
            so the count is conservative), "clear" (the ``clear`` event, just before the
            clear), or None (the path has no closed windows to check).  A window closed by
            the mapcount measure (the mapcount drops after the flush) is safe only while
            writeback serializes with the zap through the page-table lock; a
            ``folio_mkclean`` that starts after the clear and returns before the covering
            flush completed did not wait for that lock (since Linux 6.14, PT_RECLAIM can
            detach the page table before the flush: page_vma_mapped_walk() then skips it),
            and the race is open again.
    """

    cover: str
    marker: str
    expand: bool
    clear: Optional[str] = None
    bypass: Optional[str] = None

    @property
    def looks_forward(self) -> bool:
        """The covering flush comes after the decrement or after the clear: searched forward."""
        return self.cover != "previous"


#: One row per zap path (the measure's rules, written out in docs/measure.md).
PATH_RULES: Dict[str, PathRule] = {
    IMMEDIATE: PathRule(cover="next", marker="before", expand=True),
    DELAYED: PathRule(cover="previous", marker="implied", expand=True, bypass="marker"),
    PMD: PathRule(cover="after_clear", marker="zap", expand=False, clear="zap_pmd", bypass="clear"),
    PUD: PathRule(cover="next", marker="zap", expand=False),
}


def paths_where(test: Callable[[PathRule], bool]) -> List[str]:
    """The zap paths whose rule passes ``test`` (e.g. ``lambda r: r.expand``)."""
    return [p for p, r in PATH_RULES.items() if test(r)]


ZAP_PATHS = tuple(PATH_RULES)
PATHS = ZAP_PATHS + (OTHER_PATH,)

R_LOST = "lost events: the covering flush may not have been recorded"
R_NO_FLUSH_AFTER = "no later flush by the task for this mm (trace ended or task exited)"
R_NO_FLUSH_BEFORE = "no flush completed by the task for this mm earlier in the same zap"
R_NO_RETURN = "the covering flush has no recorded return"
R_OTHER = "other-path: not in a zap nor in tlb_flush_rmaps (migration, reclaim, COW...)"
R_PMD = "other-path: PMD/PUD-level removal outside a zap (split, migration, reclaim...)"

REASONS = ("", R_LOST, R_NO_FLUSH_AFTER, R_NO_FLUSH_BEFORE, R_NO_RETURN, R_OTHER, R_PMD)
FLUSH_SOURCES = ("flush_tlb_mm_range", "tlb_flush_mmu")
#: File position of file pages (inode number, page offset): gap-table columns when the trace has them.
FILE_POS = ("ino", "index")

#: Sentinel time "never" (a call that never returned, no next call): later than any timestamp.
NEVER = np.iinfo(np.int64).max
#: Sentinel time "no previous call": earlier than any timestamp.
BEFORE_ALL = np.iinfo(np.int64).min


#: Category codes of the gap table's categorical columns: the computation works on these
#: small integers (uint8) and builds the Categoricals once, at the end.  Strings in the
#: hot path cost more than the pairing itself (pandas 3 stores them as Arrow strings).
PATH_CODE = {p: i for i, p in enumerate(PATHS)}
CLASS_CODE = {c: i for i, c in enumerate(CLASSES)}
REASON_CODE = {r: i for i, r in enumerate(REASONS)}
#: Column arrays: the computation holds tables as dicts of numpy arrays, not DataFrames,
#: so that selecting and adding columns never copies the others.
Cols = Dict[str, np.ndarray]


def _ns(col) -> np.ndarray:
    """int64 nanoseconds of a time column that has no missing value (raises on NA)."""
    if isinstance(col, (pd.Series, pd.Index)):
        return col.to_numpy(dtype=np.int64)
    return np.asarray(col).astype(np.int64, copy=False)


def _opt(col: pd.Series) -> Tuple[np.ndarray, np.ndarray]:
    """(int64 values, ok) of a time column that may be missing (nullable Int64 or NaN)."""
    ok = col.notna().to_numpy()
    return col.to_numpy(dtype=np.int64, na_value=0), ok


def _nullable(values: np.ndarray, ok: np.ndarray) -> pd.arrays.IntegerArray:
    """A nullable Int64 column: values where ok, NA elsewhere."""
    return pd.arrays.IntegerArray(np.array(values, dtype=np.int64), ~np.array(ok, dtype=bool))


def _pick(v: np.ndarray, ok: np.ndarray, pos: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(values, ok) of a (values, ok) time column at row positions ``pos`` (-1: no row)."""
    if len(v) == 0:
        return np.zeros(len(pos), dtype=np.int64), np.zeros(len(pos), dtype=bool)
    hit = pos >= 0
    at = np.where(hit, pos, 0)
    return v[at], hit & ok[at]


def _take(col: pd.Series, pos: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(int64 values, ok) of a time column at row positions ``pos`` (-1: no row)."""
    v, ok = _opt(col) if len(col) else (np.zeros(0, np.int64), np.zeros(0, bool))
    return _pick(v, ok, pos)


def _shift_np(t: np.ndarray, by, periods: int, fill: int) -> np.ndarray:
    """int64 value of ``t`` ``periods`` rows away within each group of the ``by`` arrays
    (in row order), ``fill`` where there is none.

    In numpy (pandas' groupby shift was a tenth of gap_table): the rows sorted stably by
    their by-tuple (np.lexsort), so that each group is a run in row order; a row's value
    is that of the row ``periods`` places before it in the run."""
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    got = kernels.shift(t, by, periods, fill)        # compiled: one sweep (analysis/kernels.c)
    if got is not None:
        return got
    by = [np.asarray(b) for b in by]
    o = np.argsort(by[0], kind="stable") if len(by) == 1 else np.lexsort(by[::-1])
    k = abs(int(periods))
    out = np.full(n, fill, dtype=np.int64)
    if k == 0:
        out[:] = t
        return out
    if k >= n:
        return out
    # same[i]: sorted rows i and i + k are in the same group
    same = np.ones(n - k, dtype=bool)
    for b in by:
        bs = b[o]
        same &= bs[k:] == bs[:-k]
        del bs
    ts = np.asarray(t, dtype=np.int64)[o]
    res = np.full(n, fill, dtype=np.int64)
    if periods > 0:         # the value of the row k places earlier in the group
        np.copyto(res[k:], ts[:-k], where=same)
    else:                   # k places later
        np.copyto(res[:-k], ts[k:], where=same)
    del ts, same
    out[o] = res
    return out


def _shift(df: pd.DataFrame, by, col: str, periods: int, fill: int) -> np.ndarray:
    """int64 value of ``col`` ``periods`` rows away within each ``by`` group (in df's row
    order), ``fill`` where there is none."""
    return _shift_np(_ns(df[col]) if len(df) else np.zeros(0, np.int64), [df[b].to_numpy() for b in by],
                     periods, fill)


def _select(ev: pd.DataFrame, code: int, cols) -> Cols:
    """The columns ``cols`` of the events of one kind, as numpy arrays, in time order.

    The columns of ``load``'s events are strided views of the sorted records: a whole-column
    gather streams every record's cache lines from memory, once per column.  Gathered
    SELECT_BLOCK rows at a time instead, the records of a block are read from memory by the
    first column and from the cache by the others."""
    sel = np.flatnonzero(ev["kind"].to_numpy() == code)
    src = {c: ev[c].to_numpy() for c in cols}
    if len(sel) <= SELECT_BLOCK:
        return {c: v[sel] for c, v in src.items()}
    out = {c: np.empty(len(sel), dtype=v.dtype) for c, v in src.items()}
    for a in range(0, len(sel), SELECT_BLOCK):
        rows = sel[a:a + SELECT_BLOCK]
        for c, v in src.items():
            out[c][a:a + SELECT_BLOCK] = v[rows]
    return out


#: Rows per block of ``_select``: the records they span (72 bytes each, more where other
#: kinds lie between) stay within the 1-2 MiB of a core's L2 cache.
SELECT_BLOCK = 4096


def _rows(ev: pd.DataFrame, code: int, cols) -> pd.DataFrame:
    return pd.DataFrame(_select(ev, code, cols), copy=False)


def _calls(ev: pd.DataFrame, enter: int, exit_: int, extra_exit=()) -> Cols:
    """``calls`` as column arrays: ``done`` (int64) with its mask ``done_ok``, ``exit_<c>``
    likewise (``exit_<c>_ok``)."""
    en = _select(ev, enter, ("ts", "tid", "tgid", "mm", "cpu", "page", "folio", "pfn", "flags"))
    ex = _select(ev, exit_, ("ts", "tid") + tuple(extra_exit))
    ts = en["ts"]
    if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():
        order = np.argsort(ts, kind="stable")
        en = {c: v[order] for c, v in en.items()}
    ex_ok = np.ones(len(ex["ts"]), dtype=bool)
    pos = _asof(en["ts"], [en["tid"]], ex["ts"], ex_ok, [ex["tid"]], "forward", True)
    done, ok = _pick(ex["ts"], ex_ok, pos)
    ok &= done <= _shift_np(en["ts"], [en["tid"]], -1, NEVER)     # not after the task's next entry
    en["done"], en["done_ok"] = done, ok
    for c in extra_exit:
        v, _ = _pick(ex[c].astype(np.int64), ex_ok, pos)
        en["exit_" + c], en[f"exit_{c}_ok"] = v, ok
    return en


def calls(ev: pd.DataFrame, enter: int, exit_: int, extra_exit=()) -> pd.DataFrame:
    """Pair entry and return events of one function per task.

    Returns one row per entry, in time order: ts (entry, int64 ns), done
    (return time, nullable Int64: NA when the return is missing), tid, mm,
    cpu, plus the ``extra_exit`` columns of the return event as ``exit_<c>``
    (nullable Int64).  A return is accepted only if it comes before the
    task's next entry.
    """
    c = _calls(ev, enter, exit_, extra_exit)
    out = {k: v for k, v in c.items() if k not in ("done", "done_ok") and not k.startswith("exit_")}
    out["done"] = _nullable(c["done"], c["done_ok"])
    for x in extra_exit:
        out["exit_" + x] = _nullable(c["exit_" + x], c[f"exit_{x}_ok"])
    return pd.DataFrame(out, copy=False)


class FlushSource(NamedTuple):
    """The function whose return completes a flush (see the module doc), and its event codes."""

    name: str       # one of FLUSH_SOURCES
    enter: int      # the trace's event code of its entry (``Trace.code``)
    exit: int       # ... and of its return


def flush_source(trace: Trace) -> FlushSource:
    """Which function's return completes a flush in this trace: ``flush_tlb_mm_range``, or
    ``tlb_flush_mmu`` when the arch flush's probe was not attached."""
    attached = {p.get("event"): bool(p.get("attach")) for p in trace.head.get("probes") or []}
    if attached.get("flush_range", True):
        return FlushSource("flush_tlb_mm_range", trace.code("flush_range_enter"), trace.code("flush_range_exit"))
    return FlushSource("tlb_flush_mmu", trace.code("tlb_flush_enter"), trace.code("tlb_flush_exit"))


def _codes_in(codes: np.ndarray, names, table: Dict[str, int]) -> np.ndarray:
    """Rows whose category code is one of ``names``."""
    want = [table[n] for n in names]
    if codes.dtype == np.uint8:         # a 256-entry lookup table: one pass, no sort (np.isin sorts)
        lut = np.zeros(256, dtype=bool)
        lut[want] = True
        return lut[codes]
    return np.isin(codes, np.array(want, dtype=codes.dtype))


def path_mask(path_codes: np.ndarray, test: Callable[[PathRule], bool]) -> np.ndarray:
    """Rows whose path (category codes, as ``gap_columns`` gives them) is a zap path whose rule
    passes ``test``: e.g. ``path_mask(d["path"], lambda r: r.looks_forward)``.  Other-path
    rows have no rule: never selected (``lambda r: True`` selects every zap row)."""
    return _codes_in(path_codes, paths_where(test), PATH_CODE)


def _expand_pages(dec: Cols, page_size: int) -> Cols:
    """One row per page of a multi-page decrement (folio_remove_rmap_ptes nr > 1)."""
    nr_call = dec["nr"].astype(np.int64)
    nr_call = np.where(nr_call < 1, 1, nr_call)
    whole = ~_codes_in(dec["path"], paths_where(lambda r: r.expand), PATH_CODE) \
        & dec["compound"]
    nr = np.where(whole, 1, nr_call)
    if (nr == 1).all():
        out = dict(dec)
        out["nr_in_call"] = nr_call
        return out
    idx = np.repeat(np.arange(len(nr)), nr)
    start = np.repeat(np.cumsum(nr) - nr, nr)
    off = (np.arange(len(idx)) - start).astype(np.uint64)
    out = {c: v[idx] for c, v in dec.items()}
    out["page"] = out["page"] + off * np.uint64(page_size)
    pfn = out["pfn"]
    out["pfn"] = np.where(pfn > 0, pfn + off, pfn)
    if "index" in out:                      # the file offsets of a PTE batch are consecutive too
        out["index"] = np.where(out["ino"] > 0, out["index"] + off, out["index"])
    out["nr_in_call"] = nr_call[idx]
    return out


def _position_in(uniq: np.ndarray, values) -> np.ndarray:
    """Position of each of ``values`` in ``uniq`` (sorted, distinct), -1 where it is absent."""
    values = np.asarray(values)
    if values.dtype == uniq.dtype and values.dtype.kind in "iu":
        # a hash lookup: a binary search of millions of folios in random order misses the
        # cache at every step (6 times slower)
        return pd.Index(uniq, copy=False).get_indexer(values)
    pos = np.searchsorted(uniq, values)
    # in place, one temporary at a time: on the folio groups the values are millions of rows
    absent = np.take(uniq, pos, mode="clip") == values
    absent &= pos < len(uniq)
    np.logical_not(absent, out=absent)
    pos[absent] = -1
    return pos


def _group_ids(lby, rby, stride: int) -> Tuple[np.ndarray, np.ndarray]:
    """Ids of the by-tuples of the left and right rows (equal tuples, equal ids; a left
    tuple that no right row has gets an id no right row has), small enough that
    id * stride fits int64.

    Ids come from the right rows' distinct values (np.unique), and a left value finds
    its id by binary search among them: the right side is the small one (calls,
    markers), and this costs less than hashing both sides."""
    nr = len(rby[0])
    lg: Optional[np.ndarray] = None               # None: all zeros (no column seen yet)
    rg = np.zeros(nr, dtype=np.int64)
    size = 1
    for lb, rb in zip(lby, rby):
        uniq, rc = np.unique(rb, return_inverse=True)
        k = len(uniq) + 1                                 # + 1: the id of "not on the right"
        lc = _position_in(uniq, lb)
        lc[lc < 0] = len(uniq)
        if lg is None:
            lg, rg = lc.astype(np.int64, copy=False), rc.astype(np.int64).reshape(-1)
            size = k
            continue
        if size * k * stride >= 2**62:                    # re-number the tuples seen so far
            u, inv = np.unique(rg, return_inverse=True)
            at = np.minimum(np.searchsorted(u, lg), len(u) - 1)
            lg = np.where(u[at] == lg, at, len(u))
            rg, size = inv.astype(np.int64).reshape(-1), len(u) + 1
        lg *= k
        lg += lc
        del lc
        rg = rg * k + rc.astype(np.int64).reshape(-1)
        size *= k
    return lg, rg


def _asof(lt: np.ndarray, lby, rt: np.ndarray, rok: np.ndarray, rby, direction: str,
          exact: bool) -> np.ndarray:
    """merge_asof on int64 nanosecond keys, on column arrays: for each left row (key
    ``lt``, groups ``lby``), the position in the right rows (keys ``rt``, valid where
    ``rok``, groups ``rby``) of the matched row, -1 where none.  "backward": the last
    right row of its group at or before it (before it when not ``exact``); "forward":
    the first at or after it.  Of right rows with equal keys, the last (backward) or
    first (forward) in row order, as merge_asof.

    Why not merge_asof: it was most of gap_table's time.  Here, in numpy: the right
    rows in time order get a rank (0..m-1, ties in row order); a left key becomes the
    rank it would have (searchsorted on the times); then one more searchsorted finds it
    among the right rows sorted by (group, rank), packed exactly into one int64
    ``group * (m + 1) + rank``.  Times are only compared, never packed: exact at any
    uptime.  Read the matched values with ``_pick``.
    """
    n = len(lt)
    if n == 0 or len(rt) == 0 or not rok.any():
        return np.full(n, -1, dtype=np.int64)
    got = kernels.asof(lt, lby, rt, rok, rby, direction, exact)     # compiled: one sweep (analysis/kernels.c)
    if got is not None:
        return got
    lt = np.asarray(lt, dtype=np.int64)
    ident = bool(rok.all())                  # rpos[i] == i (until sorted below)
    if ident:
        rpos = np.arange(len(rt))
    else:
        rpos = np.flatnonzero(rok)
        rt, rby = rt[rpos], [b[rpos] for b in rby]
    rt = np.asarray(rt, dtype=np.int64)
    if len(rt) > 1 and not (rt[1:] >= rt[:-1]).all():
        o = np.argsort(rt, kind="stable")
        rt, rpos, rby = rt[o], rpos[o], [b[o] for b in rby]
        ident = False
    m = len(rt)
    stride = m + 1
    if lby:
        lg, rg = _group_ids(lby, rby, stride)
        if rg.max() < LOOP_GROUPS:
            return _asof_per_group(lt, lg, rt, rg, rpos, direction, exact)
    if direction == "backward":
        q = np.searchsorted(rt, lt, side="right" if exact else "left") - 1     # -1: none before
    else:
        q = np.searchsorted(rt, lt, side="left" if exact else "right")         # m: none after
    if not lby:
        hit = (q >= 0) & (q < m)
        return np.where(hit, rpos[np.clip(q, 0, m - 1)], -1)
    kr = rg * stride + np.arange(m)
    o = np.argsort(kr)                       # keys are unique: any sort is stable
    ks = kr[o]
    del kr
    # The left side can be millions of rows: computed in place, temporaries freed early.
    kq = lg * stride
    kq += q                                  # q = -1 / m fall between two groups' keys
    del q
    if direction == "backward":
        p = np.searchsorted(ks, kq, side="right")
        p -= 1
    else:
        p = np.searchsorted(ks, kq, side="left")
    del kq
    hit = p >= 0
    hit &= p < m
    np.clip(p, 0, m - 1, out=p)
    g = ks[p]
    g //= stride
    hit &= g == lg
    del g, lg
    out = o[p]
    del p
    if not ident:
        out = rpos[out]
    out[~hit] = -1
    return out


#: Below this many groups (tasks, task x mm) _asof searches group by group: one binary
#: search per left row among its own group's right rows, the queries in time order, stays in
#: cache; the packed (group, rank) search misses it at every step, most of gap_table's time
#: at 10 M events.  Folios (hundreds of thousands of groups) take the packed search.
LOOP_GROUPS = 1024


def _asof_per_group(lt: np.ndarray, lg: np.ndarray, rt: np.ndarray, rg: np.ndarray, rpos: np.ndarray,
                    direction: str, exact: bool) -> np.ndarray:
    """_asof for few groups (ids < LOOP_GROUPS): right rows ``rt`` in time order."""
    n, k = len(lt), int(rg.max()) + 1
    lk = np.empty(n, dtype=np.uint16)
    np.minimum(lg, k, out=lk, casting="unsafe")           # ids <= k < LOOP_GROUPS fit
    lo_ = np.argsort(lk, kind="stable")                     # radix: O(n)
    ro = np.argsort(rg.astype(np.uint16), kind="stable")                     # time order kept per group
    lb = np.concatenate([[0], np.cumsum(np.bincount(lk, minlength=k + 1))])
    del lk
    rb = np.concatenate([[0], np.cumsum(np.bincount(rg, minlength=k))])
    out = np.full(n, -1, dtype=np.int64)
    for g in range(k):
        if lb[g] == lb[g + 1] or rb[g] == rb[g + 1]:
            continue
        rows = lo_[lb[g]:lb[g + 1]]
        right = ro[rb[g]:rb[g + 1]]
        times = rt[right]
        if direction == "backward":
            j = np.searchsorted(times, lt[rows], side="right" if exact else "left") - 1
            ok = j >= 0
        else:
            j = np.searchsorted(times, lt[rows], side="left" if exact else "right")
            ok = j < len(times)
        out[rows[ok]] = rpos[right[j[ok]]]
    return out


def gap_columns(trace: Trace, mk: Optional[pd.DataFrame] = None, release=None) -> Tuple[Cols, list]:
    """The gap table as column arrays, and the names of its file-position columns.

    Part of the public interface (see the module doc): ``gap_table`` builds its DataFrame
    from these arrays; ``analysis.stream`` analyses a trace window by window with them.
    One array per ``GAP_COLUMNS`` column, in row order, the categorical ones as their codes
    (``path``: PATH_CODE, ``class``: CLASS_CODE, ``unpaired_reason``: REASON_CODE,
    ``flush_source``: the position in FLUSH_SOURCES); each time column that may be missing
    as int64 with its mask (``zap_ok``, ``flush_enter_ok``, ``flush_done_ok``, ``gap_ok``,
    ``mmu_done_ok``, ``gap_mmu_ok``: False where missing, the value then meaningless); and
    what a caller checks the pairing with, not in the table: ``compound``,
    ``zap_done_ok`` (the row's zap has a recorded return), ``mmu_enter_ts`` with
    ``mmu_enter_ok`` (the ``tlb_flush_mmu`` call searched for the row).

    ``mk``: the trace's ``mkclean_spans`` when already known (the bounded path computes them
    once for the whole trace and analyses the events window by window).  ``release()``:
    called once every event this needs has been selected, before the table is built
    (``report.analyse`` frees the sorted events there)."""
    ev = trace.events
    if release is not None and mk is None:
        mk = mkclean_spans(trace)
    F = trace.flags
    # ino/index (file position of file pages) exist in traces recorded since format 1.1 of the event.
    file_pos = [c for c in FILE_POS if c in ev.columns]
    rmap = _select(ev, trace.code("rmap"), ("ts", "tid", "tgid", "cpu", "mm", "page", "folio", "pfn", "nr",
                                             "flags") + tuple(file_pos))
    # Every other selection from the events, before the table grows (see ``release``).
    zaps = _calls(ev, trace.code("zap_enter"), trace.code("zap_exit"))
    dirty = _select(ev, trace.code("dirty"), ("ts", "tid", "folio"))
    clears = {r.clear: _select(ev, trace.code(r.clear), ("ts", "tid"))
              for r in PATH_RULES.values() if r.cover == "after_clear"}
    src, fen, fex = flush_source(trace)
    flush_calls = _calls(ev, fen, fex)
    mmu_calls = _calls(ev, trace.code("tlb_flush_enter"), trace.code("tlb_flush_exit"))
    if release is not None:
        del ev
        release()
    fl = rmap["flags"]
    pmd = (fl & F.get("compound", 0x20)) != 0
    pud = (fl & F.get("pud", 0)) != 0
    compound = pmd | pud
    in_rmaps = (fl & F["in_rmaps"]) != 0
    in_zap = (fl & F["in_zap"]) != 0
    path = np.select([in_rmaps & ~compound, in_zap & pud, in_zap & pmd, in_zap & ~compound],
                     [PATH_CODE[q] for q in (DELAYED, PUD, PMD, IMMEDIATE)],
                     PATH_CODE[OTHER_PATH]).astype(np.uint8)
    rmap["path"], rmap["compound"] = path, compound
    # A marker belongs to one rmap call: the kernel marks the folio dirty once per PTE
    # batch (zap_present_folio_ptes), so a marker before the task's previous call on the
    # same folio (another batch of a large folio) does not class this one.
    rmap["prev_call_ts"] = _shift_np(rmap["ts"].astype(np.int64), [rmap["tid"], rmap["folio"]], 1, BEFORE_ALL)
    dec = _expand_pages(rmap, trace.struct_page_size)
    del rmap
    del dec["nr"]                     # kept as nr_in_call; the raw flags go once classed
    fl = dec.pop("flags")
    dec["anon"] = (fl & F["anon"]) != 0
    dec["pg_dirty"] = (fl & F["pgdirty"]) != 0
    ts = dec["ts"] = dec["ts"].astype(np.int64, copy=False)
    p = dec["path"]
    other = p == PATH_CODE[OTHER_PATH]

    # The zap each event belongs to: the task's latest zap_enter before it (and its return).
    pos = _asof(ts, [dec["tid"]], zaps["ts"], np.ones(len(zaps["ts"]), bool), [zaps["tid"]], "backward", True)
    zap_ts, zap_ok = _pick(zaps["ts"], np.ones(len(zaps["ts"]), bool), pos)
    zap_done, zap_done_ok = _pick(zaps["done"], zaps["done_ok"], pos)
    del zaps, pos
    dec["zap_ts"], dec["zap_ok"] = zap_ts, zap_ok
    dec["zap_done_ok"] = zap_done_ok            # not a gap-table column: the bounded path's check

    # The zap's dirty marker of the same folio by the same task (PATH_RULES' "marker").
    d_t = dirty["ts"].astype(np.int64)
    d_ok = np.ones(len(d_t), dtype=bool)
    dirty_ts, dirty_ok = _pick(d_t, d_ok, _asof(ts, [dec["tid"], dec["folio"]], d_t, d_ok,
                                                [dirty["tid"], dirty["folio"]], "backward", True))
    # Only a decrement of a zap path has a zap whose marker can class it: a removal outside
    # any zap (migration, reclaim...) never inherits the marker of the task's last zap.
    prev_call = dec.pop("prev_call_ts")          # BEFORE_ALL: no previous call
    marker_ok = dirty_ok & zap_ok & (dirty_ts >= zap_ts) & ~other
    pte_dirty = marker_ok & (dirty_ts > prev_call)
    del prev_call
    # The entry's clear from below, for the bypass search of a closed window (PathRule.bypass):
    # the marker of this call, not one before the task's previous call on the folio (an
    # earlier zap's, when an inferred bracket joined two zaps: record --zap-entry inferred).
    by_marker = path_mask(p, lambda r: r.bypass == "marker") & pte_dirty
    dec["clear_ts"] = np.where(by_marker, dirty_ts, 0)
    dec["clear_ok"] = by_marker
    del marker_ok, by_marker
    whole_zap = _codes_in(p, paths_where(lambda r: r.marker == "zap"), PATH_CODE) & zap_done_ok
    if whole_zap.any():
        sel = np.flatnonzero(whole_zap & ~pte_dirty)
        after, after_ok = _pick(d_t, d_ok, _asof(ts[sel], [dec["tid"][sel], dec["folio"][sel]], d_t, d_ok,
                                                 [dirty["tid"], dirty["folio"]], "forward", True))
        pte_dirty[sel] = after_ok & (after <= zap_done[sel])
    del dirty, d_t, d_ok
    # 6.2+: a dirty batch's marker is followed by its *delayed* rmap (tlb_flush_rmaps) later
    # in the zap; an immediate decrement of the same folio in between (a clean batch of a
    # large folio) must not take that marker.  In PATH_RULES' terms: a "before" marker is
    # taken by the first later decrement of the folio on an "implied" path, up to the zap's
    # return (to the end of the trace when the zap has none).
    claim = np.flatnonzero(pte_dirty & path_mask(p, lambda r: r.marker == "before"))
    dl = np.flatnonzero(path_mask(p, lambda r: r.marker == "implied"))
    if len(claim) and len(dl):
        dl_ts, dl_ok = ts[dl], np.ones(len(dl), dtype=bool)
        taker, taker_ok = _pick(dl_ts, dl_ok, _asof(dirty_ts[claim], [dec["tid"][claim], dec["folio"][claim]],
                                                    dl_ts, dl_ok, [dec["tid"][dl], dec["folio"][dl]],
                                                    "forward", False))
        end, end_ok = zap_done[claim], zap_done_ok[claim]
        pte_dirty[claim] = ~(taker_ok & (~end_ok | (taker <= end)))
    del dirty_ts, dirty_ok, zap_done
    pte_dirty |= _codes_in(p, paths_where(lambda r: r.marker == "implied"), PATH_CODE)
    dec["pte_dirty"] = pte_dirty
    dec["class"] = np.where(dec["anon"], CLASS_CODE[ANON],
                            np.where(pte_dirty, CLASS_CODE[FILE_DIRTY], CLASS_CODE[FILE_CLEAN])).astype(np.uint8)

    dec["cover_from"] = _cover_from(dec, clears)
    del clears
    by_clear = path_mask(p, lambda r: r.bypass == "clear") & (dec["cover_from"] < ts)
    dec["clear_ts"][by_clear] = dec["cover_from"][by_clear]
    dec["clear_ok"] |= by_clear
    del by_clear
    (f_enter, f_enter_ok), (f_done, f_done_ok) = _cover(dec, flush_calls)
    del flush_calls
    dec["flush_enter_ts"], dec["flush_enter_ok"] = f_enter, f_enter_ok
    dec["flush_done_ts"], dec["flush_done_ok"] = f_done, f_done_ok
    paired = f_done_ok
    dec["paired"] = paired & ~other
    # open: paired and gap_ns = f_done - ts > 0 (exact: both are timestamps below 2**63)
    dec["open"] = dec["paired"] & (f_done > ts)
    # The window hits before the remaining columns exist: their search is the peak of memory.
    if mk is None and (dec["open"].any() or dec["clear_ok"].any()):
        mk = mkclean_spans(trace)           # once, for the hits and the bypasses
    dec["hits"] = _hit_counts(trace, dec, mk)
    dec["bypass"] = _bypass_counts(trace, dec, mk)
    (mmu_enter, mmu_enter_ok), (mmu_done, mmu_ok) = _cover(
        dec, mmu_calls)
    del mmu_calls
    dec["mmu_enter_ts"], dec["mmu_enter_ok"] = mmu_enter, mmu_enter_ok      # the bounded path's check
    # tlb_flush_mmu covers the decrements whose covering flush came after them: a delayed
    # decrement's own flush is tlb_flush_mmu_tlbonly() (inlined), and so is a flush between
    # a PMD's clear and its decrement, so a tlb_flush_mmu says nothing about those.
    nxt = _codes_in(p, paths_where(lambda r: r.cover == "next"), PATH_CODE)
    nxt |= _codes_in(p, paths_where(lambda r: r.cover == "after_clear"), PATH_CODE) & f_enter_ok & (f_enter > ts)
    del dec["cover_from"]
    dec["mmu_done_ts"], dec["mmu_done_ok"] = mmu_done, mmu_ok
    # Exact int64 differences (ok False where unpaired).
    dec["gap_ns"], dec["gap_ok"] = f_done - ts, f_done_ok
    dec["gap_mmu_ns"], dec["gap_mmu_ok"] = mmu_done - ts, mmu_ok & nxt
    dec["flush_source"] = np.full(len(ts), FLUSH_SOURCES.index(src), dtype=np.uint8)

    lost = (trace.lost_events or 0) > 0
    reason = np.zeros(len(ts), dtype=np.uint8)          # "": paired
    no_ret = ~paired & f_enter_ok
    for q, rule in PATH_RULES.items():
        reason[(p == PATH_CODE[q]) & ~paired] = REASON_CODE[R_NO_FLUSH_AFTER if rule.looks_forward
                                                            else R_NO_FLUSH_BEFORE]
    reason[no_ret & ~other] = REASON_CODE[R_NO_RETURN]
    if lost:
        reason[~other & ~paired] = REASON_CODE[R_LOST]
    reason[other] = REASON_CODE[R_OTHER]
    reason[other & dec["compound"]] = REASON_CODE[R_PMD]
    dec["unpaired_reason"] = reason
    dec["loss_suspect"] = _loss_suspect_np(trace, ts, f_done, f_done_ok)
    return dec, file_pos


GAP_COLUMNS = ["ts", "tid", "tgid", "cpu", "mm", "page", "folio", "pfn", "nr_in_call", "class", "path",
               "anon", "pte_dirty", "pg_dirty", "zap_ts", "flush_enter_ts", "flush_done_ts", "gap_ns",
               "mmu_done_ts", "gap_mmu_ns", "flush_source", "paired", "unpaired_reason", "open", "hits",
               "clear_ts", "bypass", "loss_suspect"]
#: Time columns that may be missing: (column, its ok mask) -> nullable Int64 in the table.
_OPTIONAL = {"zap_ts": "zap_ok", "flush_enter_ts": "flush_enter_ok", "flush_done_ts": "flush_done_ok",
             "gap_ns": "gap_ok", "mmu_done_ts": "mmu_done_ok", "gap_mmu_ns": "gap_mmu_ok",
             "clear_ts": "clear_ok"}
_CATEGORIES = {"class": CLASSES, "path": PATHS, "unpaired_reason": REASONS, "flush_source": FLUSH_SOURCES}


def gap_table(trace: Trace, mk: Optional[pd.DataFrame] = None, release=None) -> pd.DataFrame:
    """One row per decremented page (and per other-path removal); see module doc.  ``mk``:
    the trace's ``mkclean_spans`` when already known; ``release``: see ``gap_columns``."""
    dec, file_pos = gap_columns(trace, mk, release)
    out: Dict[str, Any] = {}
    for c in GAP_COLUMNS + file_pos:
        if c in _OPTIONAL:
            # the masks are consumed as they go, so that the table is never held twice
            out[c] = pd.arrays.IntegerArray(dec.pop(c), ~dec.pop(_OPTIONAL[c]))
        elif c in _CATEGORIES:
            out[c] = pd.Categorical.from_codes(dec.pop(c), categories=_CATEGORIES[c])
        else:
            out[c] = dec.pop(c)
    del dec
    return pd.DataFrame(out, copy=False)


def _asof_rows(mask: np.ndarray, lt: np.ndarray, lby, rt: np.ndarray, rok: np.ndarray, rby,
               direction: str, exact: bool) -> np.ndarray:
    """``_asof`` of the left rows where ``mask`` (-1 elsewhere), full length.  A row's match
    depends on the right rows only: when most rows are asked, all are searched and the others
    masked, which holds no gathered copy of the left columns."""
    if np.count_nonzero(mask) * 2 >= len(mask):
        pos = _asof(lt, lby, rt, rok, rby, direction, exact)
        pos[~mask] = -1
        return pos
    sel = np.flatnonzero(mask)
    pos = np.full(len(lt), -1, dtype=np.int64)
    pos[sel] = _asof(lt[sel], [b[sel] for b in lby], rt, rok, rby, direction, exact)
    return pos


def _cover_from(dec: Cols, clears: Dict[str, Cols]) -> np.ndarray:
    """Per decrement, the time after which its covering flush is searched forward: the
    decrement itself, or on an "after_clear" path the task's latest ``clear`` event at or
    before it in the same zap (the entry was cleared after that event, before the decrement),
    the decrement where there is none."""
    ts = dec["ts"]
    out = ts.copy()
    for q, rule in PATH_RULES.items():
        if rule.cover != "after_clear":
            continue
        ev = clears[rule.clear]
        rows = np.flatnonzero(dec["path"] == PATH_CODE[q])
        if len(rows) == 0 or len(ev["ts"]) == 0:
            continue
        c_t = ev["ts"].astype(np.int64)
        c_ok = np.ones(len(c_t), dtype=bool)
        t, ok = _pick(c_t, c_ok, _asof(ts[rows], [dec["tid"][rows]], c_t, c_ok, [ev["tid"]], "backward", True))
        ok &= dec["zap_ok"][rows] & (t >= dec["zap_ts"][rows])        # in the decrement's own zap
        out[rows[ok]] = t[ok]
    return out


def _cover(dec: Cols, fl: Cols):
    """((flush entry, ok), (flush completion, ok)) covering each decrement: int64 ns arrays
    with their masks (ok False: no covering flush, or it has no recorded return).  The rows
    of a forward-looking path search from ``dec["cover_from"]`` (``_cover_from``)."""
    ts = dec["ts"]
    n = len(ts)
    if len(fl["ts"]) == 0 or n == 0:
        return (np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)), (np.zeros(n, dtype=np.int64),
                                                                         np.zeros(n, dtype=bool))
    f_enter = fl["ts"].astype(np.int64)
    f_ok = np.ones(len(f_enter), dtype=bool)
    path = dec["path"]
    nxt = _codes_in(path, paths_where(lambda r: r.looks_forward), PATH_CODE)
    prev = _codes_in(path, paths_where(lambda r: not r.looks_forward), PATH_CODE)
    by, f_by = [dec["tid"], dec["mm"]], [fl["tid"], fl["mm"]]
    # Rows outside a branch keep 0 and ok False (pos -1 there: _pick gives ok False).
    if nxt.any():
        pos = _asof_rows(nxt, dec["cover_from"], by, f_enter, f_ok, f_by, "forward", False)
        enter, enter_ok = _pick(f_enter, f_ok, pos)          # fresh arrays
        done, done_ok = _pick(fl["done"], fl["done_ok"], pos)
        del pos
        np.logical_not(nxt, out=nxt)
        enter[nxt] = 0
        done[nxt] = 0
    else:
        enter, enter_ok = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        done, done_ok = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    if prev.any():
        pos = _asof_rows(prev, ts, by, fl["done"], fl["done_ok"], f_by, "backward", True)
        e, e_ok = _pick(f_enter, f_ok, pos)
        d, d_ok = _pick(fl["done"], fl["done_ok"], pos)
        del pos
        outside = dec["zap_ok"] & e_ok & (e < dec["zap_ts"])     # that flush belongs to an earlier zap
        np.logical_not(outside, out=outside)
        np.copyto(enter, e, where=prev)
        enter_ok |= e_ok & outside
        np.copyto(done, d, where=prev)
        done_ok |= d_ok & outside
    return (enter, enter_ok), (done, done_ok)


def mkclean_calls(trace: Trace) -> pd.DataFrame:
    ev = trace.events
    mk = calls(ev, trace.code("mkclean_enter"), trace.code("mkclean_exit"), extra_exit=("nr",))
    return mk.rename(columns={"exit_nr": "ret"})


def mkclean_spans(trace: Trace) -> pd.DataFrame:
    """The mkclean calls by folio then time, with ``end`` (int64: the return, else the
    bound on it, NEVER when none) and ``k`` (the call's rank among its folio's calls)."""
    mk = mkclean_calls(trace)
    if mk.empty:
        return mk
    mk = mk.sort_values(["folio", "ts"], kind="stable").reset_index(drop=True)
    # mkclean runs under the folio lock: calls on one folio never overlap.  A call
    # whose return is missing ended before the folio's next call began, or runs
    # to the end of the trace (NEVER) when it is the last.  So "end" rises with "k".
    next_enter = _shift(mk, ["folio"], "ts", -1, NEVER)
    # ...and before the same task's next mkclean began (a task runs one at a time).
    by_task = mk.sort_values("ts", kind="stable")
    task_next = pd.Series(_shift(by_task, ["tid"], "ts", -1, NEVER), index=by_task.index)
    bound = np.minimum(next_enter, task_next.reindex(mk.index).to_numpy(dtype=np.int64))
    done, done_ok = _opt(mk["done"])
    mk["end"] = np.where(done_ok, done, bound)
    mk["k"] = mk.groupby("folio", sort=False).cumcount().to_numpy(dtype=np.int64)
    return mk


def _hit_ranges(mk: pd.DataFrame, ts: np.ndarray, folio: np.ndarray, f_done: np.ndarray):
    """For open windows [ts, f_done] of ``folio``: (lo_pos, count) of the overlapping
    mkclean calls, which are the rows lo_pos, lo_pos + 1... of ``mk`` (lo_pos -1: none).

    ``mk`` is sorted by folio then time, so a folio's calls are one run of rows in which
    the starts rise and, calls on one folio never overlapping, so do the ends: both
    searches are binary searches inside the window's own run (``_search_runs``), a few
    steps (runs are short) instead of the generic ``_asof``.  A trace whose ends do not
    rise within a folio takes ``_asof``, which orders the calls by their ends."""
    m_folio = mk["folio"].to_numpy()
    m_end = mk["end"].to_numpy(dtype=np.int64)
    m_ts = _ns(mk["ts"])
    start = _run_starts(m_folio)
    if start is None or not _rising_in_runs(m_end, start):
        return _hit_ranges_asof(mk, ts, folio, f_done)
    got = kernels.hit_ranges(m_folio, m_ts, m_end, ts, folio, f_done)    # compiled (analysis/kernels.c)
    if got is not None:
        return got
    first, stop = _runs_of(m_folio, start, folio)
    # first mkclean of the folio that ends after the decrement...
    lo = _search_runs(m_end, first, stop, np.asarray(ts, dtype=np.int64), "right")
    del first
    # ...and the first that starts at or after the flush completed (stop: past the last),
    # searched from lo on: the count max(hi - lo, 0) is the same, and a window with no call
    # ending after its decrement (lo = stop) has nothing to search
    hi = _search_runs(m_ts, lo, stop, np.asarray(f_done, dtype=np.int64), "left")
    lo_ok = lo < stop
    c = hi
    c -= lo
    np.maximum(c, 0, out=c)
    c[~lo_ok] = 0
    lo[~lo_ok] = -1
    return lo, c


def _run_starts(keys: np.ndarray) -> Optional[np.ndarray]:
    """Row positions where each run of equal ``keys`` starts, followed by len(keys); None
    when the keys are not sorted (nondecreasing)."""
    if len(keys) > 1 and not (keys[1:] >= keys[:-1]).all():
        return None
    new = np.ones(len(keys), dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    return np.append(np.flatnonzero(new), len(keys))


def _rising_in_runs(vals: np.ndarray, start: np.ndarray) -> bool:
    """Whether ``vals`` is nondecreasing within every run (``start``: ``_run_starts``)."""
    if len(vals) < 2:
        return True
    down = vals[1:] < vals[:-1]
    down[start[1:-1] - 1] = False             # a run's first row after the last of the previous run
    return not down.any()


def _runs_of(keys: np.ndarray, start: np.ndarray, want: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(first, stop): the rows [first, stop) of ``keys`` (sorted; runs at ``start``) equal to
    each ``want`` value, an empty range where there is none."""
    uniq = keys[start[:-1]]
    run = _position_in(uniq, want)
    run[run < 0] = len(uniq)                   # start[len(uniq)] = len(keys): an empty range
    first = start[run]
    np.minimum(run + 1, len(uniq), out=run)
    return first, start[run]


def _search_runs(vals: np.ndarray, first: np.ndarray, stop: np.ndarray, q: np.ndarray, side: str) -> np.ndarray:
    """Per query i: the first position p in [first[i], stop[i]) with vals[p] > q[i] (side
    "right") or >= q[i] ("left"), stop[i] when none; ``vals`` nondecreasing in each range.

    All the binary searches at once: each step halves every range still open, in one
    pass over those queries; as many steps as the longest range has bits."""
    lo = first.astype(np.int64, copy=True)
    hi = stop.astype(np.int64, copy=True)
    act = np.flatnonzero(lo < hi)
    while len(act):
        a, b = lo[act], hi[act]
        mid = a + b
        mid >>= 1
        v = vals[mid]
        right = v <= q[act] if side == "right" else v < q[act]     # the answer is after mid
        del v
        a = np.where(right, mid + 1, a)
        b = np.where(right, b, mid)
        lo[act], hi[act] = a, b
        act = act[a < b]
    return lo


def _hit_ranges_asof(mk: pd.DataFrame, ts: np.ndarray, folio: np.ndarray, f_done: np.ndarray):
    """``_hit_ranges`` by ``_asof``, for any mkclean spans."""
    k = mk["k"].to_numpy()
    m_folio = mk["folio"].to_numpy()
    m_end = mk["end"].to_numpy(dtype=np.int64)
    m_ts = _ns(mk["ts"])
    ok = np.ones(len(mk), dtype=bool)
    # first mkclean of the folio that ends after the decrement...
    lo_pos = _asof(ts, [folio], m_end, ok, [m_folio], "forward", False)
    # ...and the first that starts at or after the flush completed (else: past the last)
    hi_pos = _asof(f_done, [folio], m_ts, ok, [m_folio], "forward", True)
    nohi = hi_pos < 0
    hi = k[np.maximum(hi_pos, 0)]
    del hi_pos
    if nohi.any():
        sizes = mk.groupby("folio", sort=False).size()
        hi[nohi] = sizes.reindex(folio[nohi]).fillna(0).to_numpy(dtype=np.int64)
    del nohi
    # c = where(lo_ok, max(hi - lo, 0), 0), in place
    c = hi.astype(np.int64, copy=False)
    c -= k[np.maximum(lo_pos, 0)]            # lo: read only where lo_ok
    lo_ok = lo_pos >= 0
    np.maximum(c, 0, out=c)
    c[~lo_ok] = 0
    return lo_pos, c


def _hit_counts(trace: Trace, dec: Cols, mk: Optional[pd.DataFrame] = None) -> np.ndarray:
    """Per decrement row: how many mkcleans of its folio overlap its open window."""
    n = len(dec["ts"])
    is_open = dec["open"]
    n_open = int(np.count_nonzero(is_open))
    if n_open == 0:
        return np.zeros(n, dtype=np.int64)
    if mk is None:
        mk = mkclean_spans(trace)
    if mk.empty:
        return np.zeros(n, dtype=np.int64)
    # A row's count depends on its own columns and the mkcleans only: the rows are searched
    # HIT_BLOCK at a time, so that the search's temporaries (a dozen arrays of the rows'
    # length) stay small beside the table; this is the peak of gap_table's memory.
    if n_open * 2 >= n:
        # search every row (a closed row's flush_done_ts may be meaningless), zero the closed
        # ones; no gathered copies.
        counts = np.empty(n, dtype=np.int64)
        for a in range(0, n, HIT_BLOCK):
            b = min(n, a + HIT_BLOCK)
            counts[a:b] = _hit_ranges(mk, dec["ts"][a:b], dec["folio"][a:b], dec["flush_done_ts"][a:b])[1]
        counts[~is_open] = 0
        return counts
    counts = np.zeros(n, dtype=np.int64)
    sel = np.flatnonzero(is_open)
    for a in range(0, len(sel), HIT_BLOCK):
        s = sel[a:a + HIT_BLOCK]
        counts[s] = _hit_ranges(mk, dec["ts"][s], dec["folio"][s], dec["flush_done_ts"][s])[1]
    return counts


#: Rows per block of the window-hit count search (see _hit_counts): each block finds the
#: runs of the mkcleans again (one pass over them, a sort only on _asof's fallback).
HIT_BLOCK = 1 << 21


def _bypass_counts(trace: Trace, dec: Cols, mk: Optional[pd.DataFrame] = None) -> np.ndarray:
    """Per decrement row whose window is closed and whose clear is bounded (``clear_ok``):
    how many mkcleans of its folio start after the clear bound and return before its
    covering flush completed (strictly on both sides): writeback that did not wait for
    the zap's page-table lock (PathRule.bypass).  0 on every other row."""
    n = len(dec["ts"])
    counts = np.zeros(n, dtype=np.int64)
    rows = np.flatnonzero(dec["paired"] & ~dec["open"] & dec["clear_ok"])
    if len(rows) == 0:
        return counts
    if mk is None:
        mk = mkclean_spans(trace)
    if mk.empty:
        return counts
    lo = dec["clear_ts"][rows]
    hi = dec["flush_done_ts"][rows]
    folio = dec["folio"][rows]
    m_folio = mk["folio"].to_numpy()
    m_ts = _ns(mk["ts"])
    m_end = mk["end"].to_numpy(dtype=np.int64)
    start = _run_starts(m_folio)
    if start is not None and _rising_in_runs(m_end, start):
        first, stop = _runs_of(m_folio, start, folio)
        after = _search_runs(m_ts, first, stop, lo, "right")       # first call starting after the clear
        ended = _search_runs(m_end, first, stop, hi, "left")       # first call ending at or after the flush
        counts[rows] = np.maximum(ended - after, 0)
        return counts
    # calls with inferred ends that do not rise (a missing return): one folio at a time
    by_folio = {f: g for f, g in mk.groupby("folio", sort=False)}
    for i, r in enumerate(rows):
        g = by_folio.get(folio[i])
        if g is not None:
            gt, ge = _ns(g["ts"]), g["end"].to_numpy(dtype=np.int64)
            counts[r] = int(np.count_nonzero((gt > lo[i]) & (ge < hi[i])))
    return counts


def window_hits(trace: Trace, dec: pd.DataFrame, mk: Optional[pd.DataFrame] = None
                ) -> Tuple[np.ndarray, pd.DataFrame]:
    """Per decrement row: how many mkcleans of its folio overlap its open window;
    and the list of hits (one row per decrement x mkclean).  ``mk``: ``mkclean_spans``
    of the trace, when already known."""
    n = len(dec)
    counts = np.zeros(n, dtype=np.int64)
    empty = pd.DataFrame(columns=HIT_COLUMNS)
    is_open = dec["open"].to_numpy() if "open" in dec else np.zeros(n, bool)
    if not is_open.any():
        return counts, empty
    if mk is None:
        mk = mkclean_spans(trace)
    if mk.empty:
        return counts, empty
    sel = np.flatnonzero(is_open)
    w = dec.iloc[sel]
    lo_pos, c = _hit_ranges(mk, _ns(w["ts"]), w["folio"].to_numpy(), _ns(w["flush_done_ts"]))
    counts[sel] = c
    if not c.any():
        return counts, empty
    rows = np.repeat(sel, c)
    # the calls of one folio are consecutive rows of mk, k rising by one: hits are rows lo_pos, lo_pos + 1...
    step = np.arange(len(rows)) - np.repeat(np.cumsum(c) - c, c)
    d = dec.iloc[rows].reset_index(drop=True)
    mkr = mk.iloc[np.repeat(lo_pos, c) + step].reset_index(drop=True)
    end = mkr["end"].to_numpy()
    hits = pd.DataFrame({
        "page": d["page"].to_numpy(), "folio": d["folio"].to_numpy(), "pfn": d["pfn"].to_numpy(),
        "class": d["class"].to_numpy(), "path": d["path"].to_numpy(),
        "dec_ts": _ns(d["ts"]), "flush_done_ts": d["flush_done_ts"].astype("Int64").array,
        "gap_ns": d["gap_ns"].astype("Int64").array,
        "zap_tid": d["tid"].to_numpy(), "zap_cpu": d["cpu"].to_numpy(),
        "mkclean_tid": mkr["tid"].to_numpy(), "mkclean_cpu": mkr["cpu"].to_numpy(),
        "mkclean_enter_ts": _ns(mkr["ts"]), "mkclean_exit_ts": _nullable(end, end != NEVER),
        "mkclean_ret": mkr["ret"].astype("Int64").array,
    })
    return counts, hits


#: The gap-table columns ``window_hits`` reads: select these before the rows, so that
#: the rows with hits are not copied with the whole table.
HIT_INPUT = ["ts", "folio", "page", "pfn", "tid", "cpu", "open", "class", "path", "flush_done_ts", "gap_ns"]
HIT_COLUMNS = ["page", "folio", "pfn", "class", "path", "dec_ts", "flush_done_ts", "gap_ns", "zap_tid",
               "zap_cpu", "mkclean_tid", "mkclean_cpu", "mkclean_enter_ts", "mkclean_exit_ts", "mkclean_ret"]


def hit_table(trace: Trace, gaps: pd.DataFrame) -> pd.DataFrame:
    return window_hits(trace, gaps)[1]


def _loss_suspect(trace: Trace, dec: pd.DataFrame) -> np.ndarray:
    """``_loss_suspect_np`` of a gap table."""
    done, ok = _opt(dec["flush_done_ts"])
    return _loss_suspect_np(trace, _ns(dec["ts"]), done, ok)


def _loss_suspect_np(trace: Trace, a: np.ndarray, done: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """True for rows whose window overlaps a stretch of time in which events were lost.

    The recorder writes cumulative lost counts in STAT chunks about once a
    second; rows between two STATs whose lost count grew are suspect.  When
    only the total is known, every row is suspect if anything was lost.
    """
    n = len(a)
    if not (trace.lost_events or 0):
        return np.zeros(n, dtype=bool)
    marks: Optional[np.ndarray] = None
    series = trace.stat_series
    if series:
        t = np.array([s[0] for s in series], dtype=np.int64)
        lost = np.array([s[1] for s in series], dtype=np.int64)
        grew = np.flatnonzero(np.diff(np.concatenate([[0], lost])) > 0)
        if len(grew):
            # from the STAT before the growth (the start of time for the first STAT) to the STAT that saw it
            lo = np.where(grew > 0, t[np.maximum(grew - 1, 0)], BEFORE_ALL)
            marks = np.stack([lo, t[grew]], axis=1)
    if marks is None:
        return np.ones(n, dtype=bool)
    b = np.where(ok, done, a)
    out = np.zeros(n, dtype=bool)
    for lo, hi in marks:
        out |= (b >= lo) & (a <= hi)
    return out


def class_path_counts(gaps: pd.DataFrame) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for (c, p), n in gaps.groupby(["class", "path"]).size().items():
        out.setdefault(c, {})[p] = int(n)
    return out
