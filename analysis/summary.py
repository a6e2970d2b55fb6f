"""Per-class figures of a gap table: what `zaptrace report` prints and --json emits."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

from .gaps import CLASSES, ZAP_PATHS, gap_table
from .load import Trace
from zaptrace.vocab import OTHER_PATH

SCHEMA = "zaptrace.report/1"
PERCENTILES = (("p50", 50), ("p90", 90), ("p99", 99))


def gap_stats(values: np.ndarray) -> Dict[str, Optional[float]]:
    """min, percentiles and max of exact int64 gaps (ns), as floats for display (exact below 2**53 ns)."""
    v = np.asarray(values, dtype=np.int64)
    if len(v) == 0:
        return {"min": None, "p50": None, "p90": None, "p99": None, "max": None}
    q = np.percentile(v, [p for _, p in PERCENTILES])
    out: Dict[str, Optional[float]] = {"min": float(v.min())}
    out.update({name: float(x) for (name, _), x in zip(PERCENTILES, q)})
    out["max"] = float(v.max())
    return out


class _Cols:
    """The gap-table columns that the summary reads, as numpy arrays, taken once:
    every block is then a boolean mask over them, never a copy of the table."""

    def __init__(self, gaps: pd.DataFrame):
        self.paired = gaps["paired"].to_numpy()
        self.gap = gaps["gap_ns"].to_numpy(dtype=np.int64, na_value=0)   # read only where paired (never NA there)
        self.gap_mmu = gaps["gap_mmu_ns"].to_numpy(dtype=np.int64, na_value=0)
        self.gap_mmu_ok = gaps["gap_mmu_ns"].notna().to_numpy()
        self.path = gaps["path"].cat.codes.to_numpy()
        self.path_names = list(gaps["path"].cat.categories)
        self.cls = gaps["class"].cat.codes.to_numpy()
        self.class_names = list(gaps["class"].cat.categories)
        reason = gaps["unpaired_reason"]
        self.reason = reason.cat.codes.to_numpy()
        self.reason_names = reason.cat.categories
        self.hits = gaps["hits"].to_numpy()
        self.loss_suspect = gaps["loss_suspect"].to_numpy()
        self.nr = gaps["nr_in_call"].to_numpy()

    def path_is(self, p: str) -> np.ndarray:
        return self.path == self.path_names.index(p)

    def reasons(self, rows: np.ndarray) -> pd.Series:
        """value_counts of the unpaired_reason of ``rows``, as the categorical column gives them."""
        return pd.Series(pd.Categorical.from_codes(self.reason[rows], categories=self.reason_names)).value_counts()


def _block(c: _Cols, rows: np.ndarray) -> Dict[str, Any]:
    paired = c.paired & rows
    unpaired = ~c.paired & rows
    gap = c.gap
    reasons = c.reasons(unpaired)
    reasons = reasons[reasons > 0]          # categorical columns list every category
    hits = c.hits[rows]
    return {
        "decrements": int(rows.sum()),
        "paired": int(paired.sum()),
        "unpaired": int(unpaired.sum()),
        **{p: int((c.path_is(p) & rows).sum()) for p in ZAP_PATHS},
        "open": int((paired & (gap > 0)).sum()),
        "closed": int((paired & (gap <= 0)).sum()),
        "hits": int(hits.sum()),
        "pages_hit": int((hits > 0).sum()),
        "loss_suspect": int(c.loss_suspect[rows].sum()),
        "gap_ns": gap_stats(gap[paired]),
        "gap_mmu_ns": gap_stats(c.gap_mmu[paired & c.gap_mmu_ok]),
        "unpaired_reasons": {str(k): int(v) for k, v in reasons.items()},
        "pages_per_call": _per_call(c.nr[rows]),
    }


def _per_call(nr: np.ndarray) -> Dict[str, Optional[int]]:
    """Pages removed by one rmap call: 1 for a single PTE, n for a PTE batch of a large
    folio (6.9+), 512 for a PMD mapping (order 9 on x86-64)."""
    if len(nr) == 0:
        return {"min": None, "p50": None, "max": None}
    return {"min": int(nr.min()), "p50": int(np.median(nr)), "max": int(nr.max())}


def trace_fields(trace: Trace, flush_source: Optional[str]) -> Dict[str, Any]:
    """The summary's fields that describe the trace, not its gaps (both analysis paths, in
    this order: `--json` is compared byte for byte between them)."""
    return {
        "schema": SCHEMA,
        "file": trace.path,
        "kernel": trace.kernel,
        "machine": trace.head.get("machine"),
        "command": trace.command,
        "duration_s": trace.duration_s,
        "finished": trace.finished,
        "events": trace.event_counts(),
        "zaps_not_written": trace.zaps_not_written,
        "lost_events": trace.lost_events,
        "lost_by_kind": trace.lost_by_kind(),
        "trace_problems": trace.problems,
        "skipped_bytes": trace.skipped_bytes,
        "flush_source": flush_source,
        "probes": {p.get("event"): (p.get("attach") or None) for p in trace.head.get("probes") or []},
    }


def summarize(trace: Trace, gaps: Optional[pd.DataFrame] = None) -> Dict[str, Any]:
    if gaps is None:
        gaps = gap_table(trace)
    c = _Cols(gaps)
    zap = ~c.path_is(OTHER_PATH)
    classes = {}
    for cl in CLASSES:
        rows = zap & (c.cls == c.class_names.index(cl))
        block = _block(c, rows)
        block["by_path"] = {p: _block(c, rows & c.path_is(p)) for p in ZAP_PATHS}
        classes[cl] = block
    other = ~zap
    src = gaps["flush_source"].iloc[0] if len(gaps) else None
    return {
        **trace_fields(trace, src),
        "classes": classes,
        "other_path": {"count": int(other.sum()),
                       "reasons": {str(k): int(v) for k, v in c.reasons(other).items() if v}},
        "window_hits": int(c.hits[zap].sum()),
    }
