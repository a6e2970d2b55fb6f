"""Per-class figures of a gap table: what `zaptrace report` prints and --json emits."""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

from .gaps import CLASSES, ZAP_PATHS, gap_table
from .load import Trace
from .verdict import verdict
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
    """The gap-table columns that the summary reads, as numpy arrays, taken once and
    gathered once in (class, path) order: every block is then a slice of them, never a
    mask over the whole table.  Zap rows come first, by class then path (row order kept
    inside a block); the other-path rows last.  A block's figures depend only on the
    multiset of its rows' values (counts, sums, min/max, percentiles, value counts), so
    the order of its rows does not change them."""

    def __init__(self, gaps: pd.DataFrame):
        path = gaps["path"].cat.codes.to_numpy()
        self.path_names = list(gaps["path"].cat.categories)
        cls = gaps["class"].cat.codes.to_numpy()
        self.class_names = list(gaps["class"].cat.categories)
        reason = gaps["unpaired_reason"]
        self.reason_names = reason.cat.categories
        n_path, n_class = len(self.path_names), len(self.class_names)
        self.n_path = n_path
        # key = class * n_path + path for a zap row, n_class * n_path for an other-path row
        other_key = n_class * n_path
        key = cls.astype(np.uint16)
        key *= n_path
        key += path.astype(np.uint16)
        if OTHER_PATH in self.path_names:
            key[path == self.path_names.index(OTHER_PATH)] = other_key
        order = np.argsort(key, kind="stable")           # radix sort of small integers: O(n)
        self.bounds = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=other_key + 1))])
        del key
        self.paired = gaps["paired"].to_numpy()[order]
        self.gap = gaps["gap_ns"].to_numpy(dtype=np.int64, na_value=0)[order]   # read only where paired
        self.gap_mmu = gaps["gap_mmu_ns"].to_numpy(dtype=np.int64, na_value=0)[order]
        self.gap_mmu_ok = gaps["gap_mmu_ns"].notna().to_numpy()[order]
        self.reason = reason.cat.codes.to_numpy()[order]
        self.hits = gaps["hits"].to_numpy()[order]
        self.bypass = gaps["bypass"].to_numpy()[order]
        self.loss_suspect = gaps["loss_suspect"].to_numpy()[order]
        self.nr = gaps["nr_in_call"].to_numpy()[order]

    def span(self, cl: str, p: Optional[str] = None) -> slice:
        """The rows of class ``cl`` (all its zap paths), or of its path ``p``."""
        k = self.class_names.index(cl) * self.n_path
        if p is None:
            return slice(int(self.bounds[k]), int(self.bounds[k + self.n_path]))
        k += self.path_names.index(p)
        return slice(int(self.bounds[k]), int(self.bounds[k + 1]))

    @property
    def zap(self) -> slice:
        return slice(0, int(self.bounds[-2]))

    @property
    def other(self) -> slice:
        return slice(int(self.bounds[-2]), int(self.bounds[-1]))

    def path_count(self, rows: slice, p: str) -> int:
        """Rows of path ``p`` in ``rows`` (a class or a (class, path) span)."""
        if p not in self.path_names:
            return 0
        k = self.path_names.index(p)
        n = 0
        for ci in range(len(self.class_names)):
            lo, hi = self.bounds[ci * self.n_path + k], self.bounds[ci * self.n_path + k + 1]
            n += max(0, min(hi, rows.stop) - max(lo, rows.start))
        return int(n)

    def reasons(self, codes: np.ndarray) -> pd.Series:
        """value_counts of unpaired_reason codes, as the categorical column gives them."""
        return pd.Series(pd.Categorical.from_codes(codes, categories=self.reason_names)).value_counts()


def _block(c: _Cols, rows: slice) -> Dict[str, Any]:
    paired_rows = c.paired[rows]
    n = rows.stop - rows.start
    n_paired = int(np.count_nonzero(paired_rows))
    gap = c.gap[rows][paired_rows]
    reasons = c.reasons(c.reason[rows][~paired_rows])
    reasons = reasons[reasons > 0]          # categorical columns list every category
    hits = c.hits[rows]
    return {
        "decrements": int(n),
        "paired": n_paired,
        "unpaired": int(n - n_paired),
        **{p: c.path_count(rows, p) for p in ZAP_PATHS},
        "open": int(np.count_nonzero(gap > 0)),
        "closed": int(np.count_nonzero(gap <= 0)),
        "hits": int(hits.sum()),
        "pages_hit": int((hits > 0).sum()),
        "bypass": int(c.bypass[rows].sum()),
        "pages_bypassed": int((c.bypass[rows] > 0).sum()),
        "loss_suspect": int(c.loss_suspect[rows].sum()),
        "gap_ns": gap_stats(gap),
        "gap_mmu_ns": gap_stats(c.gap_mmu[rows][paired_rows & c.gap_mmu_ok[rows]]),
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
        "probe_misses": (trace.end or {}).get("probe_misses"),
        "probes": {p.get("event"): (p.get("attach") or None) for p in trace.head.get("probes") or []
                   if p.get("attach") or not _by_choice(p)},
    }


def _by_choice(probe: Dict[str, Any]) -> bool:
    """A probe left out by the recording's options (record --zap-entry inferred's opener), not
    missing from the kernel."""
    return any(str(why).startswith("attached only with") for _, why in probe.get("tried") or [])


def summarize(trace: Trace, gaps: Optional[pd.DataFrame] = None) -> Dict[str, Any]:
    if gaps is None:
        gaps = gap_table(trace)
    c = _Cols(gaps)
    classes = {}
    for cl in CLASSES:
        rows = c.span(cl)
        by_path = {p: _block(c, c.span(cl, p)) for p in ZAP_PATHS}
        only = [p for p in ZAP_PATHS if c.span(cl, p) == rows]
        # a class whose rows are all on one path has that path's figures (same rows)
        block = copy.deepcopy(by_path[only[0]]) if only and rows.stop > rows.start else _block(c, rows)
        block["by_path"] = by_path
        classes[cl] = block
    other = c.other
    src = gaps["flush_source"].iloc[0] if len(gaps) else None
    return assemble(trace_fields(trace, src), classes,
                    {"count": int(other.stop - other.start),
                     "reasons": {str(k): int(v) for k, v in c.reasons(c.reason[other]).items() if v}},
                    int(c.hits[c.zap].sum()))


def assemble(fields: Dict[str, Any], classes: Dict[str, Any], other_path: Dict[str, Any],
             window_hits: int) -> Dict[str, Any]:
    """The summary dict, its keys in order (both analysis paths build it here: `--json` is
    compared byte for byte between them): the trace's fields, the verdict (computed from the
    figures, see analysis.verdict), the classes, the other-path removals, the window hits."""
    rest = {"classes": classes, "other_path": other_path, "window_hits": window_hits}
    return {**fields, "verdict": verdict({**fields, **rest}), **rest}
