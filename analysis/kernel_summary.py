"""What `zaptrace record --summary` counts in the kernel, computed from a gap table.

The in-kernel summary (probes/summary.bpf.h, read by zaptrace/summary.py)
keeps per class x path counters and log2 histograms of the signed gap.  This
gives the same figures from the analysis's gap table, in the same shape, so
that the two can be compared: in a guest on one recording made with
``--summary --keep-events``, and on the host by replaying recorded events
through the state machine compiled with gcc (tests/probes).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import pandas as pd

from zaptrace.vocab import OTHER_PATH, PMD, PUD, SUMMARY_PATHS

from .gaps import CLASSES

#: The paths the kernel summary pairs; pmd/pud are only counted there ("huge_mappings").
KERNEL_PATHS = SUMMARY_PATHS
HBUCKETS = 64
# bucket b >= 1 holds [2^b, 2^(b+1)); b = 0 holds 0 and 1: b = number of thresholds 2^1..2^63 <= |gap|
_THRESHOLDS = np.array([1 << k for k in range(1, HBUCKETS)], dtype=np.uint64)


def log2_buckets(gaps: np.ndarray) -> np.ndarray:
    """Histogram (HBUCKETS counts) of floor(log2 |gap|), exact on int64 ns (no float)."""
    g = np.asarray(gaps, dtype=np.int64)
    mag = np.where(g < 0, -(g + 1), g).astype(np.uint64) + (g < 0).astype(np.uint64)   # |g|, int64 min included
    b = np.searchsorted(_THRESHOLDS, mag, side="right")
    return np.bincount(b, minlength=HBUCKETS).astype(np.int64)


def from_gaps(gaps: pd.DataFrame) -> Dict[str, Any]:
    """The kernel summary's counters and histograms as the gap table gives them.

    Keys as in zaptrace.summary.read(): classes -> {paths -> {decrements, paired,
    unpaired, open, closed, hist_pos, hist_neg}, hits}, other_path, huge_mappings.
    A gap <= 0 goes to hist_neg (the kernel's sign rule: closed windows).
    """
    path = gaps["path"].astype(str).to_numpy()
    cls = gaps["class"].astype(str).to_numpy()
    paired = gaps["paired"].to_numpy(dtype=bool)
    gap = gaps["gap_ns"].to_numpy(dtype=np.int64, na_value=0)
    hits = gaps["hits"].to_numpy(dtype=np.int64)
    classes: Dict[str, Any] = {}
    for c in CLASSES:
        paths = {}
        for p in KERNEL_PATHS:
            rows = (cls == c) & (path == p)
            pr = rows & paired
            paths[p] = {
                "decrements": int(rows.sum()), "paired": int(pr.sum()), "unpaired": int((rows & ~paired).sum()),
                "open": int((pr & (gap > 0)).sum()), "closed": int((pr & (gap <= 0)).sum()),
                "hist_pos": log2_buckets(gap[pr & (gap > 0)]).tolist(),
                "hist_neg": log2_buckets(gap[pr & (gap <= 0)]).tolist(),
            }
        zap = (cls == c) & np.isin(path, KERNEL_PATHS)
        classes[c] = {"paths": paths, "hits": int(hits[zap].sum())}
    return {"classes": classes, "other_path": int((path == OTHER_PATH).sum()),
            "huge_mappings": int(np.isin(path, (PMD, PUD)).sum())}
