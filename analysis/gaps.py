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
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import pandas as pd

from .load import Trace

CLASSES = ("anon", "file-clean", "file-dirty")

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
    "immediate": {"cover": "next", "marker": "before", "expand": True},
    "delayed": {"cover": "previous", "marker": "implied", "expand": True},
    "pmd": {"cover": "next", "marker": "zap", "expand": False},
    "pud": {"cover": "next", "marker": "zap", "expand": False},
}
ZAP_PATHS = tuple(PATH_RULES)
PATHS = ZAP_PATHS + ("other-path",)

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

_INF = 1 << 62          # "never returned": later than any timestamp, still exact in float64


def _rows(ev: pd.DataFrame, code: int, cols) -> pd.DataFrame:
    return ev.loc[ev["kind"].to_numpy() == code, list(cols)]


def calls(ev: pd.DataFrame, enter: int, exit_: int, extra_exit=()) -> pd.DataFrame:
    """Pair entry and return events of one function per task.

    Returns one row per entry: ts (entry), done (return time, NaN when the
    return is missing), tid, mm, cpu, plus columns of the return event.
    A return is accepted only if it comes before the task's next entry.
    """
    en = _rows(ev, enter, ("ts", "tid", "tgid", "mm", "cpu", "page", "folio", "pfn", "flags"))
    ex = _rows(ev, exit_, ("ts", "tid") + tuple(extra_exit)).rename(
        columns={"ts": "done", **{c: "exit_" + c for c in extra_exit}})
    if en.empty:
        out = en.copy()
        out["done"] = pd.Series(dtype="float64")
        for c in extra_exit:
            out["exit_" + c] = pd.Series(dtype="float64")
        return out.reset_index(drop=True)
    en = en.sort_values("ts", kind="stable")
    nxt = en.groupby("tid", sort=False)["ts"].shift(-1)
    m = pd.merge_asof(en, ex.sort_values("done", kind="stable"), left_on="ts", right_on="done",
                      by="tid", direction="forward", allow_exact_matches=True)
    done = m["done"].astype("float64")
    nx = nxt.to_numpy(dtype="float64")
    bad = ~np.isnan(nx) & (done.to_numpy() > nx)
    done[bad] = np.nan
    m["done"] = done
    for c in extra_exit:
        col = m["exit_" + c].astype("float64")
        col[bad] = np.nan
        m["exit_" + c] = col
    return m.reset_index(drop=True)


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
          exact: bool, take) -> pd.DataFrame:
    """merge_asof on integer nanosecond keys, keeping left's row order.

    Rows of ``right`` whose key is NaN are ignored; ``left``'s key must be
    non-null.  Returns the ``take`` columns of the matched right rows (NaN
    where none), indexed like ``left``.
    """
    by = list(by)
    if left.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in take}, index=left.index)
    l2 = pd.DataFrame({"_on": left[lon].to_numpy().astype(np.int64), "_row": np.arange(len(left))})
    for b in by:
        l2[b] = left[b].to_numpy()
    rk = right[ron].to_numpy(dtype="float64")
    keep = ~np.isnan(rk)
    r2 = pd.DataFrame({"_on": rk[keep].astype(np.int64)})
    for b in by:
        r2[b] = right[b].to_numpy()[keep]
    for c in take:
        r2["_t_" + c] = right[c].to_numpy()[keep]
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
    return pd.DataFrame({c: m["_t_" + c].to_numpy() for c in take}, index=left.index)


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
                     ["delayed", "pud", "pmd", "immediate"], "other-path")
    dec = rmap.assign(path=path, compound=compound)
    # A marker belongs to one rmap call: the kernel marks the folio dirty once per PTE
    # batch (zap_present_folio_ptes), so a marker before the task's previous call on the
    # same folio (another batch of a large folio) does not class this one.
    dec["prev_call_ts"] = dec.groupby(["tid", "folio"], sort=False)["ts"].shift(1).astype("float64")
    dec = _expand_pages(dec.reset_index(drop=True), trace.struct_page_size)
    fl = dec["flags"].to_numpy()
    dec["anon"] = (fl & F["anon"]) != 0
    dec["pg_dirty"] = (fl & F["pgdirty"]) != 0

    # The zap each event belongs to: the task's latest zap_enter before it (and its return).
    zaps = calls(ev, trace.code("zap_enter"), trace.code("zap_exit"))[["ts", "tid", "done"]].rename(
        columns={"ts": "zap_ts", "done": "zap_done"})
    zaps["zap_ts"] = zaps["zap_ts"].astype(np.int64)
    m = _asof(dec, zaps, "ts", "zap_ts", ["tid"], "backward", True, ["zap_ts", "zap_done"])
    dec["zap_ts"] = m["zap_ts"]
    zap_done = m["zap_done"].to_numpy(dtype="float64")

    # The zap's dirty marker of the same folio by the same task (PATH_RULES' "marker").
    dirty = _rows(ev, trace.code("dirty"), ("ts", "tid", "folio")).rename(columns={"ts": "dirty_ts"})
    m = _asof(dec, dirty, "ts", "dirty_ts", ["tid", "folio"], "backward", True, ["dirty_ts"])
    dirty_ts = m["dirty_ts"].to_numpy(dtype="float64")
    zap_ts = dec["zap_ts"].to_numpy(dtype="float64")
    p = dec["path"].to_numpy()
    # Only a decrement of a zap path has a zap whose marker can class it: a removal outside
    # any zap (migration, reclaim...) never inherits the marker of the task's last zap.
    prev_call = dec["prev_call_ts"].to_numpy(dtype="float64")
    pte_dirty = ~np.isnan(dirty_ts) & ~np.isnan(zap_ts) & (dirty_ts >= zap_ts) & (p != "other-path") \
        & (np.isnan(prev_call) | (dirty_ts > prev_call))
    whole_zap = np.isin(p, [q for q, r in PATH_RULES.items() if r["marker"] == "zap"]) & ~np.isnan(zap_done)
    if whole_zap.any():
        sel = np.flatnonzero(whole_zap & ~pte_dirty)
        after = _asof(dec.iloc[sel], dirty, "ts", "dirty_ts", ["tid", "folio"], "forward", True,
                      ["dirty_ts"])["dirty_ts"].to_numpy(dtype="float64")
        pte_dirty[sel] = ~np.isnan(after) & (after <= zap_done[sel])
    # 6.2+: a dirty batch's marker is followed by its *delayed* rmap (tlb_flush_rmaps) later
    # in the zap; an immediate decrement of the same folio in between (a clean batch of a
    # large folio) must not take that marker.
    claim = np.flatnonzero(pte_dirty & (p == "immediate"))
    delayed = dec.loc[p == "delayed", ["ts", "tid", "folio"]].rename(columns={"ts": "d_ts"})
    if len(claim) and len(delayed):
        probe = pd.DataFrame({"at": dirty_ts[claim].astype(np.int64), "tid": dec["tid"].to_numpy()[claim],
                              "folio": dec["folio"].to_numpy()[claim]})
        taker = _asof(probe, delayed, "at", "d_ts", ["tid", "folio"], "forward", False,
                      ["d_ts"])["d_ts"].to_numpy(dtype="float64")
        end = zap_done[claim]
        pte_dirty[claim] = ~(~np.isnan(taker) & (np.isnan(end) | (taker <= end)))
    pte_dirty |= np.isin(p, [q for q, r in PATH_RULES.items() if r["marker"] == "implied"])
    dec["pte_dirty"] = pte_dirty
    dec["class"] = np.where(dec["anon"], "anon", np.where(pte_dirty, "file-dirty", "file-clean"))

    src, fen, fex = _flush_source(trace)
    flushes = calls(ev, fen, fex)
    mmu = calls(ev, trace.code("tlb_flush_enter"), trace.code("tlb_flush_exit"))
    flush_enter, flush_done = _cover(dec, flushes)
    mmu_enter, mmu_done = _cover(dec, mmu)
    dec["flush_enter_ts"] = flush_enter
    dec["flush_done_ts"] = flush_done
    dec["mmu_done_ts"] = mmu_done
    ts = dec["ts"].to_numpy(dtype="float64")
    dec["gap_ns"] = flush_done - ts
    # tlb_flush_mmu covers only the "next"-flush paths: a delayed decrement's own flush is
    # tlb_flush_mmu_tlbonly() (inlined), so an earlier tlb_flush_mmu says nothing about it.
    nxt = np.isin(dec["path"].to_numpy(), [q for q, r in PATH_RULES.items() if r["cover"] == "next"])
    dec["gap_mmu_ns"] = np.where(nxt, mmu_done - ts, np.nan)
    dec["flush_source"] = src

    paired = ~np.isnan(flush_done)
    dec["paired"] = paired & (p != "other-path")
    lost = (trace.lost_events or 0) > 0
    reason = np.full(len(dec), "", dtype=object)
    no_ret = ~paired & ~np.isnan(flush_enter)
    for q, rule in PATH_RULES.items():
        reason[(p == q) & ~paired] = R_NO_FLUSH_AFTER if rule["cover"] == "next" else R_NO_FLUSH_BEFORE
    reason[no_ret & (p != "other-path")] = R_NO_RETURN
    if lost:
        reason[(p != "other-path") & ~paired] = R_LOST
    reason[p == "other-path"] = R_OTHER
    reason[(p == "other-path") & dec["compound"].to_numpy()] = R_PMD
    dec["unpaired_reason"] = reason
    gap = dec["gap_ns"].to_numpy()
    dec["open"] = dec["paired"].to_numpy() & (gap > 0)

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


def _cover(dec: pd.DataFrame, fl: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
    """(flush entry, flush completion) covering each decrement, NaN when none."""
    n = len(dec)
    enter = np.full(n, np.nan)
    done = np.full(n, np.nan)
    if fl.empty or n == 0:
        return enter, done
    fl = fl[["ts", "tid", "mm", "done"]].rename(columns={"ts": "f_enter"})
    path = dec["path"].to_numpy()
    nxt = np.isin(path, [p for p, r in PATH_RULES.items() if r["cover"] == "next"])
    prev = np.isin(path, [p for p, r in PATH_RULES.items() if r["cover"] == "previous"])
    imm = dec.loc[nxt]
    if len(imm):
        m = _asof(imm, fl, "ts", "f_enter", ["tid", "mm"], "forward", False, ["f_enter", "done"])
        sel = np.flatnonzero(nxt)
        enter[sel] = m["f_enter"].to_numpy(dtype="float64")
        done[sel] = m["done"].to_numpy(dtype="float64")
    dl = dec.loc[prev]
    if len(dl):
        m = _asof(dl, fl, "ts", "done", ["tid", "mm"], "backward", True, ["f_enter", "done"])
        sel = np.flatnonzero(prev)
        e = m["f_enter"].to_numpy(dtype="float64", copy=True)
        d = m["done"].to_numpy(dtype="float64", copy=True)
        z = dl["zap_ts"].to_numpy(dtype="float64")
        outside = ~np.isnan(z) & ~np.isnan(e) & (e < z)      # that flush belongs to an earlier zap
        e[outside] = np.nan
        d[outside] = np.nan
        enter[sel] = e
        done[sel] = d
    return enter, done


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
    # to the end of the trace when it is the last.  So "done" rises with "k".
    next_enter = mk.groupby("folio", sort=False)["ts"].shift(-1).astype("float64")
    # ...and before the same task's next mkclean began (a task runs one at a time).
    by_task = mk.sort_values("ts", kind="stable")
    task_next = by_task.groupby("tid", sort=False)["ts"].shift(-1).astype("float64").reindex(mk.index)
    bound = np.fmin(next_enter.to_numpy(), task_next.to_numpy())
    mk["done"] = mk["done"].fillna(pd.Series(bound, index=mk.index)).fillna(float(_INF))
    mk["k"] = mk.groupby("folio", sort=False).cumcount()
    w = dec.loc[is_open, ["ts", "flush_done_ts", "folio"]]
    # first mkclean of the folio that ends after the decrement...
    lo = _asof(w, mk, "ts", "done", ["folio"], "forward", False, ["k"])["k"].to_numpy(dtype="float64")
    # ...and the first that starts at or after the flush completed (else: past the last)
    hi = _asof(w, mk, "flush_done_ts", "ts", ["folio"], "forward", True, ["k"])["k"].to_numpy(dtype="float64",
                                                                                          copy=True)
    nohi = np.isnan(hi)
    if nohi.any():
        sizes = mk.groupby("folio", sort=False).size()
        hi[nohi] = sizes.reindex(w["folio"].to_numpy()[nohi]).fillna(0).to_numpy(dtype="float64")
    c = np.where(np.isnan(lo), 0, np.maximum(hi - np.nan_to_num(lo), 0)).astype(np.int64)
    counts[np.flatnonzero(is_open)] = c
    if not c.any():
        return counts, empty
    rows = np.repeat(np.flatnonzero(is_open), c)
    first = np.repeat(lo[c > 0].astype(np.int64), c[c > 0])
    step = np.arange(len(rows)) - np.repeat(np.cumsum(c[c > 0]) - c[c > 0], c[c > 0])
    d = dec.iloc[rows].reset_index(drop=True)
    key = pd.DataFrame({"folio": d["folio"].to_numpy(), "k": first + step})
    mkr = key.merge(mk, on=["folio", "k"], how="left")
    done = mkr["done"].to_numpy(dtype="float64", copy=True)
    done[done >= float(_INF)] = np.nan
    hits = pd.DataFrame({
        "page": d["page"].to_numpy(), "folio": d["folio"].to_numpy(), "pfn": d["pfn"].to_numpy(),
        "class": d["class"].to_numpy(), "path": d["path"].to_numpy(),
        "dec_ts": d["ts"].to_numpy(), "flush_done_ts": d["flush_done_ts"].to_numpy(),
        "gap_ns": d["gap_ns"].to_numpy(),
        "zap_tid": d["tid"].to_numpy(), "zap_cpu": d["cpu"].to_numpy(),
        "mkclean_tid": mkr["tid"].to_numpy(), "mkclean_cpu": mkr["cpu"].to_numpy(),
        "mkclean_enter_ts": mkr["ts"].to_numpy(), "mkclean_exit_ts": done,
        "mkclean_ret": mkr["ret"].to_numpy(),
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
        t = np.array([s[0] for s in series], dtype="float64")
        lost = np.array([s[1] for s in series], dtype="float64")
        grew = np.flatnonzero(np.diff(np.concatenate([[0.0], lost])) > 0)
        if len(grew):
            lo = np.where(grew > 0, t[np.maximum(grew - 1, 0)], -np.inf)
            lo[grew == 0] = -np.inf
            hi = t[grew]
            marks = np.stack([lo, hi], axis=1)
    if marks is None:
        return np.ones(n, dtype=bool)
    a = dec["ts"].to_numpy(dtype="float64")
    b = np.where(np.isnan(dec["flush_done_ts"].to_numpy(dtype="float64")), a,
                 dec["flush_done_ts"].to_numpy(dtype="float64"))
    out = np.zeros(n, dtype=bool)
    for lo, hi in marks:
        out |= (b >= lo) & (a <= hi)
    return out


def class_path_counts(gaps: pd.DataFrame) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for (c, p), n in gaps.groupby(["class", "path"]).size().items():
        out.setdefault(c, {})[p] = int(n)
    return out
