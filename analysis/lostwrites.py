"""Lost writes found by content (`zaptrace workload run lostwrite --findings F`), joined with a trace.

For each lost write (file, page offset, the pass that wrote the lost value,
the time it was found) this finds the recorded window that explains it: a
decrement of that file page (any zap path) whose open window
[decrement, covering flush completed] overlaps the span of the store that
wrote the lost value, with a folio_mkclean of the folio inside the window;
or whose closed window was bypassed (gaps.PathRule.bypass: a folio_mkclean
ran between the entry's clear and the flush without waiting for the
page-table lock), with the window [clear, covering flush completed].
Pages are matched by file position (inode number + page offset, recorded on
every decrement and mkclean), not by PFN: the page is evicted and read back.

The span: the store alone (``store_ns``, recorded by the detector since
``--time-stores``; its faults are taken before it) where the findings have
it, else the whole visit that stored the value (``written_ns``: with the
faults before the store, milliseconds under TCG).  Both are joined where
both exist; ``explained`` uses the narrower.

A lost write with no such window is *unexplained*: either a path zaptrace
does not record, events lost in the recording, or another cause.

Chance: open windows with writeback inside are frequent, and a visit lasts,
so a window can overlap a store by coincidence.  The findings' ``control``
rows are a uniform random sample of visits that lost nothing; the very same
join (same page match, same overlap test, same span) applied to them tells
how often it "explains" a visit that lost nothing: the baseline that an
explained count is read against ("explained: 1 of 1; chance: 9 % of 10,000
random visits").
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from zaptrace.lostwrite import SCHEMA
from zaptrace.vocab import OTHER_PATH

from .errors import AnalysisError
from .gaps import NEVER, mkclean_spans, paths_where, window_hits
from .load import Trace

COLUMNS = ["page", "offset", "expected", "found", "written_ns", "written_end_ns", "store_ns", "store_end_ns",
           "found_ns", "span", "explained", "explained_visit", "dec_ts", "path", "window", "class", "gap_ns",
           "flush_done_ts",
           "mkclean_enter_ts", "mkclean_exit_ts", "windows_of_page", "tid", "zap_ts"]
#: Times of the explaining window: int64 ns, nullable (NA when the lost write is unexplained).
WINDOW_COLUMNS = ("dec_ts", "gap_ns", "flush_done_ts", "mkclean_enter_ts", "mkclean_exit_ts", "zap_ts")
#: The store's own span: NA in findings from before --time-stores.
STORE_COLUMNS = ("store_ns", "store_end_ns")
#: The spans, narrowest first: a findings file has "store" where its detector timed stores.
SPANS = ("store", "visit")
#: control rows: the columns of each span (lostwrite.CONTROL_COLUMNS)
CONTROL_SPANS = {"visit": ("visit_from_ns", "visit_to_ns"), "store": ("store_from_ns", "store_to_ns")}
NO_CONTROL = "not measured (no control sample in the findings)"


def load_findings(path: str) -> Dict[str, Any]:
    """The detector's JSON, checked (one-line AnalysisError otherwise)."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise AnalysisError(f"cannot read findings {path}: {e.strerror}") from None
    except ValueError as e:
        raise AnalysisError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise AnalysisError(f"{path}: not a lostwrite findings file (schema {SCHEMA} expected)")
    for key in ("ino", "page_size", "lost"):
        if key not in doc:
            raise AnalysisError(f"{path}: findings without '{key}'")
    return doc


def overlap(lo, hi, ts, done, page, w0, w1):
    """The one test, for lost writes and control visits alike: the page within the window's pages
    [lo, hi], and the window [decrement ts, flush done] overlapping the span [w0, w1]."""
    return (lo <= page) & (page <= hi) & (ts <= w1) & (done >= w0)


class Windows:
    """The windows a lost write can be explained by: the file's decrements (any zap path) whose
    window was open with a folio_mkclean inside, as page ranges [lo, hi] and times [ts, done]."""

    def __init__(self, trace: Trace, gaps: pd.DataFrame, ino: int):
        if "ino" not in gaps:
            raise AnalysisError(f"{trace.path}: recorded without file positions (ino/index): "
                                "record it again with this zaptrace to join lost writes")
        mine = gaps[(gaps["ino"].to_numpy() == ino) & (gaps["path"].to_numpy() != OTHER_PATH)]
        whole = np.isin(mine["path"].to_numpy(), paths_where(lambda r: not r.expand))
        lo = mine["index"].to_numpy().astype(np.int64)
        hi = lo + np.where(whole, mine["nr_in_call"].to_numpy().astype(np.int64) - 1, 0)
        self.mine, self.all_lo, self.all_hi = mine, lo, hi
        is_open = mine["open"].to_numpy() & (mine["hits"].to_numpy() > 0)
        # a closed window that writeback bypassed (gaps.PathRule.bypass): from the entry's clear
        bypassed = mine["bypass"].to_numpy() > 0 if "bypass" in mine else np.zeros(len(mine), dtype=bool)
        keep = is_open | bypassed
        self.rows = np.flatnonzero(keep)                 # positions in ``mine``
        self.lo, self.hi = lo[keep], hi[keep]
        start = mine["ts"].to_numpy(dtype=np.int64)
        if bypassed.any():
            clear = mine["clear_ts"].to_numpy(dtype=np.int64, na_value=0)
            start = np.where(bypassed & ~is_open, clear, start)
        self.ts = start[keep]
        self.done = mine["flush_done_ts"].to_numpy(dtype=np.int64, na_value=0)[keep]   # paired rows: never missing
        self.kind = np.where(is_open[keep], "open", "bypass")

    def first(self, page: int, w0: int, w1: int) -> Optional[int]:
        """The position in ``mine`` of the first window that explains a store to ``page`` in
        [w0, w1], or None."""
        hit = np.flatnonzero(self._overlap(page, w0, w1))
        return int(self.rows[hit[0]]) if len(hit) else None

    def kind_of(self, pos: int) -> str:
        """"open" (the mapcount dropped before the flush) or "bypass" (a closed window that
        writeback did not wait for) of the window at position ``pos`` of ``mine``."""
        return str(self.kind[int(np.searchsorted(self.rows, pos))])

    def _overlap(self, page, w0, w1):
        return overlap(self.lo, self.hi, self.ts, self.done, page, w0, w1)

    def explains(self, pages: np.ndarray, w0: np.ndarray, w1: np.ndarray, chunk_pairs: int = 1 << 22) -> np.ndarray:
        """For each (page, span [w0, w1]), whether some window explains it: the test of ``first``,
        applied to the windows that can overlap the span (those that start from the longest
        window's length before w0 up to w1; windows sorted by start), ``chunk_pairs`` at a time."""
        n = len(pages)
        out = np.zeros(n, dtype=bool)
        if not len(self.rows) or not n:
            return out
        order = np.argsort(self.ts, kind="stable")
        lo, hi, ts, done = self.lo[order], self.hi[order], self.ts[order], self.done[order]
        longest = int((done - ts).max())
        first = np.searchsorted(ts, w0 - longest, side="left")
        stop = np.searchsorted(ts, w1, side="right")
        count = np.maximum(stop - first, 0)
        upto = np.concatenate(([0], np.cumsum(count)))      # pairs of the items before each
        i = 0
        while i < n:
            # as many items as fit in chunk_pairs (pairs of an item and a window), at least one
            j = max(i + 1, int(np.searchsorted(upto, upto[i] + chunk_pairs, side="right")) - 1)
            c = count[i:j]
            item = np.repeat(np.arange(i, j), c)
            win = np.repeat(first[i:j] - np.cumsum(c) + c, c) + np.arange(int(c.sum()))
            ok = overlap(lo[win], hi[win], ts[win], done[win], pages[item], w0[item], w1[item])
            out[np.unique(item[ok])] = True
            i = j
        return out


def span_of(findings: Dict[str, Any]) -> str:
    """The span ``explained`` uses: "store" where the detector timed its stores, else "visit"."""
    return "store" if findings.get("time_stores") or any("store_ns" in x for x in findings["lost"]) else "visit"


def join(trace: Trace, gaps: pd.DataFrame, findings: Dict[str, Any]) -> pd.DataFrame:
    """One row per lost write: the window that explains it, or explained=False."""
    win = Windows(trace, gaps, int(findings["ino"]))
    lost = findings["lost"]
    mine = win.mine
    # The hit list is needed only to name a lost write's mkclean: with nothing lost (the usual
    # answer) it is not computed (10 s of a 25 s report on a 600 s, 19.6 M-event trace).
    hits_counts, hits = window_hits(trace, mine) if len(mine) and lost else (None, pd.DataFrame())
    rows: List[Dict[str, Any]] = []
    for item in lost:
        page = int(item["page"])
        w0, w1 = (int(x) for x in item["written_ns"])
        s0, s1 = (int(x) for x in item["store_ns"]) if "store_ns" in item else (None, None)
        span = "store" if s0 is not None else "visit"
        row = {"page": page, "offset": int(item["offset"]), "expected": int(item["expected"]),
               "found": int(item["found"]), "written_ns": w0, "written_end_ns": w1, "store_ns": s0,
               "store_end_ns": s1, "found_ns": int(item["found_ns"]), "span": span, "explained": False,
               "explained_visit": False, "path": "", "window": "", "class": "", "tid": -1,
               **{c: None for c in WINDOW_COLUMNS}}
        row["windows_of_page"] = int(((win.all_lo <= page) & (page <= win.all_hi)).sum())
        by_visit = win.first(page, w0, w1)
        best = win.first(page, s0, s1) if span == "store" else by_visit
        row["explained_visit"] = by_visit is not None
        if best is not None:
            b = mine.iloc[best]
            h = hits[(hits["dec_ts"].to_numpy() == b["ts"]) & (hits["folio"].to_numpy() == b["folio"])]
            row.update(explained=True, dec_ts=int(b["ts"]), path=str(b["path"]), window=win.kind_of(best),
                       gap_ns=int(b["gap_ns"]), flush_done_ts=int(b["flush_done_ts"]),
                       tid=int(b["tid"]), zap_ts=_int_or_none(b["zap_ts"]))
            row["class"] = str(b["class"])
            if row["window"] == "bypass":        # the mkclean that did not wait: inside (clear, flush done)
                h = _bypass_mkclean(trace, b)
            if len(h):
                row["mkclean_enter_ts"] = int(h["mkclean_enter_ts"].iloc[0])
                row["mkclean_exit_ts"] = _int_or_none(h["mkclean_exit_ts"].iloc[0])
        rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    for c in WINDOW_COLUMNS + STORE_COLUMNS:    # from Python ints: exact (a float64 column would round above 2**53)
        out[c] = pd.array([r[c] for r in rows], dtype="Int64")
    out["explained"] = out["explained"].astype(bool)
    out["explained_visit"] = out["explained_visit"].astype(bool)
    return out


def _bypass_mkclean(trace: Trace, b: pd.Series) -> pd.DataFrame:
    """The mkclean calls of the row's folio inside (clear, flush done), as the hit list's columns."""
    mk = mkclean_spans(trace)
    if mk.empty:
        return pd.DataFrame(columns=["mkclean_enter_ts", "mkclean_exit_ts"])
    sel = mk[(mk["folio"].to_numpy() == b["folio"]) & (mk["ts"].to_numpy(dtype=np.int64) > int(b["clear_ts"]))
             & (mk["end"].to_numpy(dtype=np.int64) < int(b["flush_done_ts"]))]
    end = sel["end"].to_numpy(dtype=np.int64)
    return pd.DataFrame({"mkclean_enter_ts": sel["ts"].to_numpy(dtype=np.int64),
                         "mkclean_exit_ts": pd.array(np.where(end == NEVER, 0, end), dtype="Int64")})


def control_rows(findings: Dict[str, Any]) -> Optional[Dict[str, np.ndarray]]:
    """The findings' control sample as columns (lostwrite.CONTROL_COLUMNS), or None without one."""
    rows = findings.get("control")
    if rows is None:
        return None
    cols = findings.get("control_columns") or ["page", "visit_from_ns", "visit_to_ns"]
    arr = np.array(rows, dtype=np.int64).reshape(len(rows), len(cols))
    return {c: arr[:, i] for i, c in enumerate(cols)}


def chance(trace: Trace, gaps: pd.DataFrame, findings: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The join applied to the control sample: per span, how many of the sample's visits it
    "explains".  None when the findings have no control sample."""
    ctl = control_rows(findings)
    if ctl is None:
        return None
    win = Windows(trace, gaps, int(findings["ino"]))
    n = len(ctl["page"])
    by_span = {}
    for span in SPANS:
        a, b = CONTROL_SPANS[span]
        if a in ctl:
            k = int(win.explains(ctl["page"], ctl[a], ctl[b]).sum())
            by_span[span] = {"explained": k, "share": k / n if n else None}
    primary = span_of(findings) if span_of(findings) in by_span else next(iter(by_span))
    return {"sample": n, "population": findings.get("control_seen"), "span": primary, **by_span[primary],
            "by_span": by_span}


def _int_or_none(v):
    return None if pd.isna(v) else int(v)


def windows(table: pd.DataFrame) -> int:
    """How many distinct recorded windows (zapping task, decrement time) explain the lost writes."""
    ex = table.loc[table["explained"], ["tid", "dec_ts"]]
    return int(len(ex.drop_duplicates()))


def summarize(table: pd.DataFrame, findings: Dict[str, Any], trace: Trace,
              chance_doc: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The "lost_writes" block of the report's summary; ``chance_doc``: ``chance()``."""
    watched = sorted(p.get("event") for p in trace.head.get("probes") or [] if p.get("attach"))
    span = span_of(findings)
    by_span = {"visit": int(table["explained_visit"].sum())}
    if span == "store":
        by_span = {"store": int(table["explained"].sum()), **by_span}
    return {
        "findings": {k: findings.get(k) for k in ("file", "ino", "pages", "passes", "visits", "burst", "zaps", "duration_s",
                                                  "mapping", "evict", "writeback", "fault_first", "time_stores",
                                                  "control_sample", "control_seen")},
        "lost_writes": int(len(table)),
        "explained": int(table["explained"].sum()),
        "unexplained": int((~table["explained"]).sum()),
        # the span "explained" used (the store's where the detector timed it), and the count per span
        "span": span,
        "explained_by_span": by_span,
        "by_path": {str(k): int(v) for k, v in table.loc[table["explained"], "path"].value_counts().items()},
        # "open": the mapcount dropped before the flush; "bypass": a closed window that writeback
        # did not wait for (gaps.PathRule.bypass)
        "by_window": {str(k): int(v) for k, v in table.loc[table["explained"], "window"].value_counts().items()},
        # One window can lose many pages at once (a PMD window: up to 512), so the count of
        # lost writes says little about how often a window lost data; this does.
        "windows": windows(table),
        # the same join on visits that lost nothing (None: the findings have no control sample)
        "chance": chance_doc,
        "watched": watched,
        "lost_events": trace.lost_events,
        "rows": json.loads(table.to_json(orient="records")),
    }


def _share(k: int, n: int) -> str:
    x = 100.0 * k / n
    return f"{x:.2g} %" if 0 < x < 0.1 else f"{x:.1f} %"


def chance_line(s: Dict[str, Any]) -> str:
    """The line beside the explained count: "explained: 1 of 1 (the store's span); chance: 9.0 % of
    10,000 random visits that lost nothing (900; the visit's span: 31.2 %)".  ``s``: summarize()."""
    parts = []
    if s["lost_writes"]:
        parts.append(f"explained: {s['explained']:,} of {s['lost_writes']:,} (the {s['span']}'s span"
                     + "".join(f"; the {k}'s: {v:,}" for k, v in s["explained_by_span"].items() if k != s["span"])
                     + ")")
    c = s.get("chance")
    if c is None:
        parts.append("chance: " + NO_CONTROL)
    elif not c["sample"]:
        parts.append("chance: not measured (the control sample is empty)")
    else:
        pop = f" of {c['population']:,}" if c.get("population") else ""
        others = "".join(f"; the {k}'s span: {_share(v['explained'], c['sample'])} ({v['explained']:,})"
                         for k, v in c["by_span"].items() if k != c["span"])
        parts.append(f"chance: {_share(c['explained'], c['sample'])} of {c['sample']:,} random visits{pop} that "
                     f"lost nothing ({c['explained']:,}; the {c['span']}'s span{others})")
    return "; ".join(parts)
