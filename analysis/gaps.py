"""The per-page gap table: mapcount decrement -> the TLB flush that covers it.

Rules (see README "The measure"):

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

Everything is vectorised (sorts and ``merge_asof``); events are taken in
timestamp order whatever order the ring buffer delivered them in.

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

from typing import Any, Dict, Optional, Tuple

import numpy as np
import pandas as pd

from .load import Trace
from zaptrace.vocab import ANON, CLASSES, DELAYED, FILE_CLEAN, FILE_DIRTY, IMMEDIATE, OTHER_PATH, PMD, PUD

#: How a decrement of each zap path is paired and classed: one row per path.
#:   cover:  "next" = the task's first flush for the mm that starts after the
#:           decrement; "previous" = its last flush for the mm completed before
#:           it, in the same zap.
#:   marker: where the zap's dirty marker of the folio may stand: "before" the
#:           decrement in the same zap, after the task's previous rmap call on
#:           that folio and not taken by a delayed rmap of that folio later in
#:           the zap (one marker per PTE batch; 6.2+ delays the dirty batches);
#:           "zap" = anywhere in the same zap; or
#:           "implied": the path exists only for dirty PTEs (the kernel sets
#:           delay_rmap only when pte_dirty, 5df397dec7c4), so a file page on it
#:           is file-dirty whether or not its marker was seen in this zap (on
#:           7.3, 1 % of delayed removals came one zap after their marker).
#:   expand: one row per page of a multi-page call (PTE batches), or one row
#:           for the whole mapping (a PMD/PUD maps one folio at once).
PATH_RULES: Dict[str, Dict[str, Any]] = {
    IMMEDIATE: {"cover": "next", "marker": "before", "expand": True},
    DELAYED: {"cover": "previous", "marker": "implied", "expand": True},
    PMD: {"cover": "next", "marker": "zap", "expand": False},
    PUD: {"cover": "next", "marker": "zap", "expand": False},
}
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


def _take(col: pd.Series, pos: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(int64 values, ok) of a time column at row positions ``pos`` (-1: no row)."""
    if len(col) == 0:
        return np.zeros(len(pos), dtype=np.int64), np.zeros(len(pos), dtype=bool)
    v, ok = _opt(col)
    hit = pos >= 0
    at = np.where(hit, pos, 0)
    return v[at], hit & ok[at]


def _shift(df: pd.DataFrame, by, col: str, periods: int, fill: int) -> np.ndarray:
    """int64 value of ``col`` ``periods`` rows away within each ``by`` group (in df's row
    order), ``fill`` where there is none."""
    if df.empty:
        return np.zeros(0, dtype=np.int64)
    by = list(by)
    f = pd.DataFrame({"_t": _ns(df[col]), **{b: df[b].to_numpy() for b in by}})
    return f.groupby(by, sort=False)["_t"].shift(periods, fill_value=fill).to_numpy(dtype=np.int64)


def _rows(ev: pd.DataFrame, code: int, cols) -> pd.DataFrame:
    return ev.loc[ev["kind"].to_numpy() == code, list(cols)]


def calls(ev: pd.DataFrame, enter: int, exit_: int, extra_exit=()) -> pd.DataFrame:
    """Pair entry and return events of one function per task.

    Returns one row per entry, in time order: ts (entry, int64 ns), done
    (return time, nullable Int64: NA when the return is missing), tid, mm,
    cpu, plus the ``extra_exit`` columns of the return event as ``exit_<c>``
    (nullable Int64).  A return is accepted only if it comes before the
    task's next entry.
    """
    en = _rows(ev, enter, ("ts", "tid", "tgid", "mm", "cpu", "page", "folio", "pfn", "flags"))
    ex = _rows(ev, exit_, ("ts", "tid") + tuple(extra_exit))
    en = en.sort_values("ts", kind="stable").reset_index(drop=True)
    pos = _asof(en, ex, "ts", "ts", ["tid"], "forward", True)
    done, ok = _take(ex["ts"], pos)
    ok &= done <= _shift(en, ["tid"], "ts", -1, NEVER)     # not after the task's next entry
    out = en
    out["done"] = _nullable(done, ok)
    for c in extra_exit:
        v, _ = _take(ex[c], pos)
        out["exit_" + c] = _nullable(v, ok)
    return out


def _flush_source(trace: Trace) -> Tuple[str, int, int]:
    attached = {p.get("event"): bool(p.get("attach")) for p in trace.head.get("probes") or []}
    if attached.get("flush_range", True):
        return "flush_tlb_mm_range", trace.code("flush_range_enter"), trace.code("flush_range_exit")
    return "tlb_flush_mmu", trace.code("tlb_flush_enter"), trace.code("tlb_flush_exit")


def _expand_pages(dec: pd.DataFrame, page_size: int) -> pd.DataFrame:
    """One row per page of a multi-page decrement (folio_remove_rmap_ptes nr > 1)."""
    nr_call = dec["nr"].to_numpy().astype(np.int64)
    nr_call = np.where(nr_call < 1, 1, nr_call)
    whole = ~np.isin(dec["path"].to_numpy(), [p for p, r in PATH_RULES.items() if r["expand"]]) \
        & dec["compound"].to_numpy()
    nr = np.where(whole, 1, nr_call)
    if (nr == 1).all():
        out = dec.copy()
        out["nr_in_call"] = nr_call
        return out
    idx = np.repeat(np.arange(len(dec)), nr)
    start = np.repeat(np.cumsum(nr) - nr, nr)
    off = (np.arange(len(idx)) - start).astype(np.uint64)
    out = dec.iloc[idx].reset_index(drop=True)
    out["page"] = out["page"].to_numpy() + off * np.uint64(page_size)
    pfn = out["pfn"].to_numpy()
    out["pfn"] = np.where(pfn > 0, pfn + off, pfn)
    if "index" in out:                      # the file offsets of a PTE batch are consecutive too
        ino = out["ino"].to_numpy()
        out["index"] = np.where(ino > 0, out["index"].to_numpy() + off, out["index"].to_numpy())
    out["nr_in_call"] = nr_call[idx]
    return out


def _asof(left: pd.DataFrame, right: pd.DataFrame, lon: str, ron: str, by, direction: str,
          exact: bool) -> np.ndarray:
    """merge_asof on int64 nanosecond keys: for each row of ``left`` (in its order), the
    position (iloc) in ``right`` of the matched row, -1 where none.

    Rows of ``right`` whose key is missing are ignored (merge_asof does not take
    NA keys); ``left``'s key must be non-null.  Read the matched values with
    ``_take``: merge_asof itself would turn int64 columns into float64 to hold NaN.
    """
    by = list(by)
    n = len(left)
    if n == 0 or len(right) == 0:
        return np.full(n, -1, dtype=np.int64)
    rk, rok = _opt(right[ron])
    if not rok.any():
        return np.full(n, -1, dtype=np.int64)
    l2 = pd.DataFrame({"_on": _ns(left[lon]), "_row": np.arange(n)})
    for b in by:
        l2[b] = left[b].to_numpy()
    r2 = pd.DataFrame({"_on": rk[rok], "_pos": np.flatnonzero(rok)})
    for b in by:
        r2[b] = right[b].to_numpy()[rok]
    # Inputs usually arrive in time order already (events are sorted on load):
    # sort only when needed, it is the costliest step at millions of rows.
    left_sorted = l2["_on"].is_monotonic_increasing
    if not left_sorted:
        l2 = l2.sort_values("_on", kind="stable")
    if not r2["_on"].is_monotonic_increasing:
        r2 = r2.sort_values("_on", kind="stable")
    m = pd.merge_asof(l2, r2, on="_on", by=by or None, direction=direction, allow_exact_matches=exact)
    if not left_sorted:
        m = m.sort_values("_row", kind="stable")
    # unmatched rows come back NaN (float64): a row position is < 2**53, so exact
    return m["_pos"].fillna(-1).to_numpy().astype(np.int64)


def gap_table(trace: Trace) -> pd.DataFrame:
    """One row per decremented page (and per other-path removal); see module doc."""
    ev = trace.events
    F = trace.flags
    # ino/index (file position of file pages) exist in traces recorded since format 1.1 of the event.
    file_pos = [c for c in FILE_POS if c in ev.columns]
    rmap = _rows(ev, trace.code("rmap"), ("ts", "tid", "tgid", "cpu", "mm", "page", "folio", "pfn", "nr", "flags")
                 + tuple(file_pos))
    fl = rmap["flags"].to_numpy()
    pmd = (fl & F.get("compound", 0x20)) != 0
    pud = (fl & F.get("pud", 0)) != 0
    compound = pmd | pud
    in_rmaps = (fl & F["in_rmaps"]) != 0
    in_zap = (fl & F["in_zap"]) != 0
    path = np.select([in_rmaps & ~compound, in_zap & pud, in_zap & pmd, in_zap & ~compound],
                     [DELAYED, PUD, PMD, IMMEDIATE], OTHER_PATH)
    dec = rmap.assign(path=path, compound=compound)
    # A marker belongs to one rmap call: the kernel marks the folio dirty once per PTE
    # batch (zap_present_folio_ptes), so a marker before the task's previous call on the
    # same folio (another batch of a large folio) does not class this one.
    dec["prev_call_ts"] = _shift(dec, ["tid", "folio"], "ts", 1, BEFORE_ALL)
    dec = _expand_pages(dec.reset_index(drop=True), trace.struct_page_size)
    fl = dec["flags"].to_numpy()
    dec["anon"] = (fl & F["anon"]) != 0
    dec["pg_dirty"] = (fl & F["pgdirty"]) != 0
    ts = _ns(dec["ts"])

    # The zap each event belongs to: the task's latest zap_enter before it (and its return).
    zaps = calls(ev, trace.code("zap_enter"), trace.code("zap_exit"))
    pos = _asof(dec, zaps, "ts", "ts", ["tid"], "backward", True)
    zap_ts, zap_ok = _take(zaps["ts"], pos)
    zap_done, zap_done_ok = _take(zaps["done"], pos)
    dec["zap_ts"] = _nullable(zap_ts, zap_ok)

    # The zap's dirty marker of the same folio by the same task (PATH_RULES' "marker").
    dirty = _rows(ev, trace.code("dirty"), ("ts", "tid", "folio")).rename(columns={"ts": "dirty_ts"})
    dirty_ts, dirty_ok = _take(dirty["dirty_ts"], _asof(dec, dirty, "ts", "dirty_ts", ["tid", "folio"],
                                                        "backward", True))
    p = dec["path"].to_numpy()
    # Only a decrement of a zap path has a zap whose marker can class it: a removal outside
    # any zap (migration, reclaim...) never inherits the marker of the task's last zap.
    prev_call = dec["prev_call_ts"].to_numpy()          # BEFORE_ALL: no previous call
    pte_dirty = dirty_ok & zap_ok & (dirty_ts >= zap_ts) & (p != OTHER_PATH) & (dirty_ts > prev_call)
    whole_zap = np.isin(p, [q for q, r in PATH_RULES.items() if r["marker"] == "zap"]) & zap_done_ok
    if whole_zap.any():
        sel = np.flatnonzero(whole_zap & ~pte_dirty)
        after, after_ok = _take(dirty["dirty_ts"], _asof(dec.iloc[sel], dirty, "ts", "dirty_ts",
                                                         ["tid", "folio"], "forward", True))
        pte_dirty[sel] = after_ok & (after <= zap_done[sel])
    # 6.2+: a dirty batch's marker is followed by its *delayed* rmap (tlb_flush_rmaps) later
    # in the zap; an immediate decrement of the same folio in between (a clean batch of a
    # large folio) must not take that marker.
    claim = np.flatnonzero(pte_dirty & (p == IMMEDIATE))
    delayed = dec.loc[p == DELAYED, ["ts", "tid", "folio"]].rename(columns={"ts": "d_ts"})
    if len(claim) and len(delayed):
        probe = pd.DataFrame({"at": dirty_ts[claim], "tid": dec["tid"].to_numpy()[claim],
                              "folio": dec["folio"].to_numpy()[claim]})
        taker, taker_ok = _take(delayed["d_ts"], _asof(probe, delayed, "at", "d_ts", ["tid", "folio"],
                                                       "forward", False))
        end, end_ok = zap_done[claim], zap_done_ok[claim]
        pte_dirty[claim] = ~(taker_ok & (~end_ok | (taker <= end)))
    pte_dirty |= np.isin(p, [q for q, r in PATH_RULES.items() if r["marker"] == "implied"])
    dec["pte_dirty"] = pte_dirty
    dec["class"] = np.where(dec["anon"], ANON, np.where(pte_dirty, FILE_DIRTY, FILE_CLEAN))

    src, fen, fex = _flush_source(trace)
    flushes = calls(ev, fen, fex)
    mmu = calls(ev, trace.code("tlb_flush_enter"), trace.code("tlb_flush_exit"))
    (f_enter, f_enter_ok), (f_done, f_done_ok) = _cover(dec, flushes)
    _, (mmu_done, mmu_ok) = _cover(dec, mmu)
    dec["flush_enter_ts"] = _nullable(f_enter, f_enter_ok)
    dec["flush_done_ts"] = _nullable(f_done, f_done_ok)
    dec["mmu_done_ts"] = _nullable(mmu_done, mmu_ok)
    # Exact int64 differences (nullable Int64, NA when unpaired).
    gap = f_done - ts
    dec["gap_ns"] = _nullable(gap, f_done_ok)
    # tlb_flush_mmu covers only the "next"-flush paths: a delayed decrement's own flush is
    # tlb_flush_mmu_tlbonly() (inlined), so an earlier tlb_flush_mmu says nothing about it.
    nxt = np.isin(dec["path"].to_numpy(), [q for q, r in PATH_RULES.items() if r["cover"] == "next"])
    dec["gap_mmu_ns"] = _nullable(mmu_done - ts, mmu_ok & nxt)
    dec["flush_source"] = src

    paired = f_done_ok
    dec["paired"] = paired & (p != OTHER_PATH)
    lost = (trace.lost_events or 0) > 0
    reason = np.full(len(dec), "", dtype=object)
    no_ret = ~paired & f_enter_ok
    for q, rule in PATH_RULES.items():
        reason[(p == q) & ~paired] = R_NO_FLUSH_AFTER if rule["cover"] == "next" else R_NO_FLUSH_BEFORE
    reason[no_ret & (p != OTHER_PATH)] = R_NO_RETURN
    if lost:
        reason[(p != OTHER_PATH) & ~paired] = R_LOST
    reason[p == OTHER_PATH] = R_OTHER
    reason[(p == OTHER_PATH) & dec["compound"].to_numpy()] = R_PMD
    dec["unpaired_reason"] = reason
    dec["open"] = dec["paired"].to_numpy() & (gap > 0)      # paired implies f_done_ok

    hits, _ = window_hits(trace, dec)
    dec["hits"] = hits
    dec["loss_suspect"] = _loss_suspect(trace, dec)
    for col, cats in (("class", CLASSES), ("path", PATHS), ("unpaired_reason", REASONS),
                      ("flush_source", FLUSH_SOURCES)):
        dec[col] = pd.Categorical(dec[col].to_numpy(), categories=cats)
    cols = ["ts", "tid", "tgid", "cpu", "mm", "page", "folio", "pfn", "nr_in_call", "class", "path",
            "anon", "pte_dirty", "pg_dirty", "zap_ts", "flush_enter_ts", "flush_done_ts", "gap_ns",
            "mmu_done_ts", "gap_mmu_ns", "flush_source", "paired", "unpaired_reason", "open", "hits",
            "loss_suspect"] + file_pos
    return dec[cols].reset_index(drop=True)


def _cover(dec: pd.DataFrame, fl: pd.DataFrame):
    """((flush entry, ok), (flush completion, ok)) covering each decrement: int64 ns arrays
    with their masks (ok False: no covering flush, or it has no recorded return)."""
    n = len(dec)
    enter, enter_ok = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    done, done_ok = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    if fl.empty or n == 0:
        return (enter, enter_ok), (done, done_ok)
    fl = fl[["ts", "tid", "mm", "done"]].rename(columns={"ts": "f_enter"})
    path = dec["path"].to_numpy()
    nxt = np.isin(path, [p for p, r in PATH_RULES.items() if r["cover"] == "next"])
    prev = np.isin(path, [p for p, r in PATH_RULES.items() if r["cover"] == "previous"])
    if nxt.any():
        sel = np.flatnonzero(nxt)
        pos = _asof(dec.iloc[sel], fl, "ts", "f_enter", ["tid", "mm"], "forward", False)
        enter[sel], enter_ok[sel] = _take(fl["f_enter"], pos)
        done[sel], done_ok[sel] = _take(fl["done"], pos)
    if prev.any():
        sel = np.flatnonzero(prev)
        dl = dec.iloc[sel]
        pos = _asof(dl, fl, "ts", "done", ["tid", "mm"], "backward", True)
        e, e_ok = _take(fl["f_enter"], pos)
        d, d_ok = _take(fl["done"], pos)
        z, z_ok = _opt(dl["zap_ts"])
        outside = z_ok & e_ok & (e < z)      # that flush belongs to an earlier zap
        enter[sel], enter_ok[sel] = e, e_ok & ~outside
        done[sel], done_ok[sel] = d, d_ok & ~outside
    return (enter, enter_ok), (done, done_ok)


def mkclean_calls(trace: Trace) -> pd.DataFrame:
    ev = trace.events
    mk = calls(ev, trace.code("mkclean_enter"), trace.code("mkclean_exit"), extra_exit=("nr",))
    return mk.rename(columns={"exit_nr": "ret"})


def window_hits(trace: Trace, dec: pd.DataFrame) -> Tuple[np.ndarray, pd.DataFrame]:
    """Per decrement row: how many mkcleans of its folio overlap its open window;
    and the list of hits (one row per decrement x mkclean)."""
    n = len(dec)
    counts = np.zeros(n, dtype=np.int64)
    mk = mkclean_calls(trace)
    empty = pd.DataFrame(columns=HIT_COLUMNS)
    is_open = dec["open"].to_numpy() if "open" in dec else np.zeros(n, bool)
    if mk.empty or not is_open.any():
        return counts, empty
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
    k = mk["k"].to_numpy()
    sel = np.flatnonzero(is_open)
    w = dec.iloc[sel]
    # first mkclean of the folio that ends after the decrement...
    lo_pos = _asof(w, mk, "ts", "end", ["folio"], "forward", False)
    lo_ok = lo_pos >= 0
    lo = np.where(lo_ok, k[np.maximum(lo_pos, 0)], 0)
    # ...and the first that starts at or after the flush completed (else: past the last)
    hi_pos = _asof(w, mk, "flush_done_ts", "ts", ["folio"], "forward", True)
    hi = k[np.maximum(hi_pos, 0)]
    nohi = hi_pos < 0
    if nohi.any():
        sizes = mk.groupby("folio", sort=False).size()
        hi[nohi] = sizes.reindex(w["folio"].to_numpy()[nohi]).fillna(0).to_numpy(dtype=np.int64)
    c = np.where(lo_ok, np.maximum(hi - lo, 0), 0).astype(np.int64)
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


HIT_COLUMNS = ["page", "folio", "pfn", "class", "path", "dec_ts", "flush_done_ts", "gap_ns", "zap_tid",
               "zap_cpu", "mkclean_tid", "mkclean_cpu", "mkclean_enter_ts", "mkclean_exit_ts", "mkclean_ret"]


def hit_table(trace: Trace, gaps: pd.DataFrame) -> pd.DataFrame:
    return window_hits(trace, gaps)[1]


def _loss_suspect(trace: Trace, dec: pd.DataFrame) -> np.ndarray:
    """True for rows whose window overlaps a stretch of time in which events were lost.

    The recorder writes cumulative lost counts in STAT chunks about once a
    second; rows between two STATs whose lost count grew are suspect.  When
    only the total is known, every row is suspect if anything was lost.
    """
    n = len(dec)
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
    a = _ns(dec["ts"])
    done, ok = _opt(dec["flush_done_ts"])
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
