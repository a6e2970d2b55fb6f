"""Lost writes found by content (`zaptrace workload run lostwrite --findings F`), joined with a trace.

For each lost write (file, page offset, the pass that wrote the lost value,
the time it was found) this finds the recorded window that explains it: a
decrement of that file page (any zap path) whose open window
[decrement, covering flush completed] overlaps the pass that wrote the lost
value, with a folio_mkclean of the folio inside the window.  Pages are
matched by file position (inode number + page offset, recorded on every
decrement and mkclean), not by PFN: the page is evicted and read back.

A lost write with no such window is *unexplained*: either a path zaptrace
does not record, events lost in the recording, or another cause.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

import numpy as np
import pandas as pd

from zaptrace.lostwrite import SCHEMA
from zaptrace.vocab import OTHER_PATH

from .errors import AnalysisError
from .gaps import paths_where, window_hits
from .load import Trace

COLUMNS = ["page", "offset", "expected", "found", "written_ns", "written_end_ns", "found_ns", "explained",
           "dec_ts", "path", "class", "gap_ns", "flush_done_ts", "mkclean_enter_ts", "mkclean_exit_ts",
           "windows_of_page", "tid", "zap_ts"]
#: Times of the explaining window: int64 ns, nullable (NA when the lost write is unexplained).
WINDOW_COLUMNS = ("dec_ts", "gap_ns", "flush_done_ts", "mkclean_enter_ts", "mkclean_exit_ts", "zap_ts")


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


def join(trace: Trace, gaps: pd.DataFrame, findings: Dict[str, Any]) -> pd.DataFrame:
    """One row per lost write: the window that explains it, or explained=False."""
    if "ino" not in gaps:
        raise AnalysisError(f"{trace.path}: recorded without file positions (ino/index): "
                            "record it again with this zaptrace to join lost writes")
    lost = findings["lost"]
    ino = int(findings["ino"])
    mine = gaps[(gaps["ino"].to_numpy() == ino) & (gaps["path"].to_numpy() != OTHER_PATH)]
    whole = np.isin(mine["path"].to_numpy(), paths_where(lambda r: not r.expand))
    lo = mine["index"].to_numpy().astype(np.int64)
    hi = lo + np.where(whole, mine["nr_in_call"].to_numpy().astype(np.int64) - 1, 0)
    # The hit list is needed only to name a lost write's mkclean: with nothing lost (the usual
    # answer) it is not computed (10 s of a 25 s report on a 600 s, 19.6 M-event trace).
    hits_counts, hits = window_hits(trace, mine) if len(mine) and lost else (None, pd.DataFrame())
    rows: List[Dict[str, Any]] = []
    for item in lost:
        page = int(item["page"])
        w0, w1 = (int(x) for x in item["written_ns"])
        row = {"page": page, "offset": int(item["offset"]), "expected": int(item["expected"]),
               "found": int(item["found"]), "written_ns": w0, "written_end_ns": w1,
               "found_ns": int(item["found_ns"]), "explained": False, "path": "", "class": "", "tid": -1,
               **{c: None for c in WINDOW_COLUMNS}}
        on_page = (lo <= page) & (page <= hi)
        row["windows_of_page"] = int(on_page.sum())
        cand = mine[on_page & mine["open"].to_numpy() & (mine["hits"].to_numpy() > 0)]
        ts = cand["ts"].to_numpy(dtype=np.int64)
        done = cand["flush_done_ts"].to_numpy(dtype=np.int64)      # open rows: never missing
        overlap = (ts <= w1) & (done >= w0)
        if overlap.any():
            best = cand.iloc[int(np.flatnonzero(overlap)[0])]
            h = hits[(hits["dec_ts"].to_numpy() == best["ts"]) & (hits["folio"].to_numpy() == best["folio"])]
            row.update(explained=True, dec_ts=int(best["ts"]), path=str(best["path"]),
                       gap_ns=int(best["gap_ns"]), flush_done_ts=int(best["flush_done_ts"]),
                       tid=int(best["tid"]), zap_ts=_int_or_none(best["zap_ts"]))
            row["class"] = str(best["class"])
            if len(h):
                row["mkclean_enter_ts"] = int(h["mkclean_enter_ts"].iloc[0])
                row["mkclean_exit_ts"] = _int_or_none(h["mkclean_exit_ts"].iloc[0])
        rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    for c in WINDOW_COLUMNS:            # from Python ints: exact (a float64 column would round above 2**53)
        out[c] = pd.array([r[c] for r in rows], dtype="Int64")
    return out


def _int_or_none(v):
    return None if pd.isna(v) else int(v)


def windows(table: pd.DataFrame) -> int:
    """How many distinct recorded windows (zapping task, decrement time) explain the lost writes."""
    ex = table.loc[table["explained"], ["tid", "dec_ts"]]
    return int(len(ex.drop_duplicates()))


def summarize(table: pd.DataFrame, findings: Dict[str, Any], trace: Trace) -> Dict[str, Any]:
    watched = sorted(p.get("event") for p in trace.head.get("probes") or [] if p.get("attach"))
    return {
        "findings": {k: findings.get(k) for k in ("file", "ino", "pages", "passes", "visits", "burst", "zaps", "duration_s",
                                                  "mapping", "evict")},
        "lost_writes": int(len(table)),
        "explained": int(table["explained"].sum()),
        "unexplained": int((~table["explained"]).sum()),
        "by_path": {str(k): int(v) for k, v in table.loc[table["explained"], "path"].value_counts().items()},
        # One window can lose many pages at once (a PMD window: up to 512), so the count of
        # lost writes says little about how often a window lost data; this does.
        "windows": windows(table),
        "watched": watched,
        "lost_events": trace.lost_events,
        "rows": json.loads(table.to_json(orient="records")),
    }
