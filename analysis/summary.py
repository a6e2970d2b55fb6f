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


def _gaps(col: pd.Series, rows: np.ndarray) -> np.ndarray:
    """The known gaps (int64 ns) of a nullable gap column among ``rows``."""
    ok = rows & col.notna().to_numpy()
    return col.to_numpy(dtype=np.int64, na_value=0)[ok]


def _block(g: pd.DataFrame) -> Dict[str, Any]:
    paired = g["paired"].to_numpy()
    gap = g["gap_ns"].to_numpy(dtype=np.int64, na_value=0)      # read only where paired (never NA there)
    reasons = g.loc[~paired, "unpaired_reason"].value_counts()
    reasons = reasons[reasons > 0]          # categorical columns list every category
    return {
        "decrements": int(len(g)),
        "paired": int(paired.sum()),
        "unpaired": int((~paired).sum()),
        **{p: int((g["path"] == p).sum()) for p in ZAP_PATHS},
        "open": int((paired & (gap > 0)).sum()),
        "closed": int((paired & (gap <= 0)).sum()),
        "hits": int(g["hits"].sum()),
        "pages_hit": int((g["hits"] > 0).sum()),
        "loss_suspect": int(g["loss_suspect"].sum()),
        "gap_ns": gap_stats(_gaps(g["gap_ns"], paired)),
        "gap_mmu_ns": gap_stats(_gaps(g["gap_mmu_ns"], paired)),
        "unpaired_reasons": {str(k): int(v) for k, v in reasons.items()},
        "pages_per_call": _per_call(g["nr_in_call"].to_numpy()),
    }


def _per_call(nr: np.ndarray) -> Dict[str, Optional[int]]:
    """Pages removed by one rmap call: 1 for a single PTE, n for a PTE batch of a large
    folio (6.9+), 512 for a PMD mapping (order 9 on x86-64)."""
    if len(nr) == 0:
        return {"min": None, "p50": None, "max": None}
    return {"min": int(nr.min()), "p50": int(np.median(nr)), "max": int(nr.max())}


def summarize(trace: Trace, gaps: Optional[pd.DataFrame] = None) -> Dict[str, Any]:
    if gaps is None:
        gaps = gap_table(trace)
    zap = gaps[gaps["path"] != OTHER_PATH]
    classes = {}
    for c in CLASSES:
        g = zap[zap["class"] == c]
        block = _block(g)
        block["by_path"] = {p: _block(g[g["path"] == p]) for p in ZAP_PATHS}
        classes[c] = block
    other = gaps[gaps["path"] == OTHER_PATH]
    src = gaps["flush_source"].iloc[0] if len(gaps) else None
    return {
        "schema": SCHEMA,
        "file": trace.path,
        "kernel": trace.kernel,
        "machine": trace.head.get("machine"),
        "command": trace.command,
        "duration_s": trace.duration_s,
        "finished": trace.finished,
        "events": trace.event_counts(),
        "lost_events": trace.lost_events,
        "lost_by_kind": trace.lost_by_kind(),
        "trace_problems": trace.problems,
        "skipped_bytes": trace.skipped_bytes,
        "flush_source": src,
        "probes": {p.get("event"): (p.get("attach") or None) for p in trace.head.get("probes") or []},
        "classes": classes,
        "other_path": {"count": int(len(other)),
                       "reasons": {str(k): int(v) for k, v in other["unpaired_reason"].value_counts().items() if v}},
        "window_hits": int(zap["hits"].sum()),
    }
