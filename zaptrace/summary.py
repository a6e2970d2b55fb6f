"""--summary mode: read the in-kernel histograms and counters, print them BCC-style.

The layout (class/path/sign/bucket slots, counter slots) is declared once in
probes/zaptrace_summary.h and parsed here.  No pandas: this runs on the
traced machine.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Dict, List

import numpy as np

from .probes import DIR as PROBES_DIR
from . import vocab

CLASSES = vocab.CLASSES
PATHS = vocab.SUMMARY_PATHS


@lru_cache(maxsize=None)
def layout() -> Dict[str, int]:
    text = (PROBES_DIR / "zaptrace_summary.h").read_text()
    out = {k: int(v) for k, v in re.findall(r"#define\s+(ZT_\w+)\s+(\d+)\b", text)}
    body = re.search(r"enum\s+zt_sum\s*\{(.*?)\};", text, re.S).group(1)
    out.update({k: int(v) for k, v in re.findall(r"(ZT_S_\w+)\s*=\s*(\d+)", body)})
    out["ZT_HIST_SLOTS"] = out["ZT_NCLASS"] * out["ZT_NPATH"] * 2 * out["ZT_HBUCKETS"]
    return out


def _percpu_sum(table, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        out[i] = sum(table.getvalue(table.Key(i)))
    return out


def read(bpf) -> dict:
    """The kernel-side summary as a JSON-able dict (stored in the trace's END chunk)."""
    L = layout()
    leftover = np.zeros(len(CLASSES), dtype=np.int64)
    # Tasks still alive with pending decrements: never flushed before the end.
    for _tid, st in bpf["sumtask"].items():
        for c in range(len(CLASSES)):
            leftover[c] += st.pending[c]
    return from_slots(_percpu_sum(bpf["hist"], L["ZT_HIST_SLOTS"]), _percpu_sum(bpf["sums"], L["ZT_S_SLOTS"]),
                      leftover)


def from_slots(hist_slots: np.ndarray, sums: np.ndarray, leftover: np.ndarray) -> dict:
    """The summary dict from the summed "hist" and "sums" slots and the pending pages per
    class of the tasks still alive (the host replay in tests/probes builds it the same way)."""
    L = layout()
    nb, npath = L["ZT_HBUCKETS"], L["ZT_NPATH"]
    hist = np.asarray(hist_slots, dtype=np.int64).reshape(len(CLASSES), npath, 2, nb)
    sums = np.asarray(sums, dtype=np.int64)

    def per(base: int, c: int, p: int) -> int:
        return int(sums[base + c * npath + p])

    classes = {}
    for c, cname in enumerate(CLASSES):
        paths = {}
        for p, pname in enumerate(PATHS):
            unpaired = per(L["ZT_S_UNPAIRED"], c, p) + (int(leftover[c]) if p == 0 else 0)
            paths[pname] = {
                "decrements": per(L["ZT_S_DEC"], c, p), "paired": per(L["ZT_S_PAIRED"], c, p),
                "unpaired": unpaired, "open": per(L["ZT_S_OPEN"], c, p), "closed": per(L["ZT_S_CLOSED"], c, p),
                "hist_pos": hist[c, p, 0].tolist(), "hist_neg": hist[c, p, 1].tolist(),
            }
        classes[cname] = {"paths": paths, "hits": int(sums[L["ZT_S_HITS"] + c])}
    return {"mode": "in-kernel", "bucket": "log2 of |gap| in ns: bucket b holds [2^b, 2^(b+1)), b=0 holds 0..1",
            "classes": classes, "other_path": int(sums[L["ZT_S_OTHER"]]),
            "approximate": int(sums[L["ZT_S_APPROX"]]), "mixed_mm": int(sums[L["ZT_S_MIXED_MM"]]),
            "huge_mappings": int(sums[L["ZT_S_HUGE"]])}


def _stars(n: int, peak: int, width: int = 30) -> str:
    return "*" * (int(round(n / peak * width)) if peak else 0)


def histogram_lines(summary: dict) -> List[str]:
    """The histograms in the style of BCC's tools (funclatency, biolatency)."""
    lines = []
    for cname, cls in summary["classes"].items():
        for pname, p in cls["paths"].items():
            if not p["decrements"]:
                continue
            lines.append(f"\n{cname}, {pname}: {p['decrements']} decrements, {p['paired']} paired, "
                         f"{p['open']} open, {p['closed']} closed, {p['unpaired']} unpaired"
                         + (f", {cls['hits']} window hits" if pname == vocab.IMMEDIATE else ""))
            rows = []
            for sign, key in (("-", "hist_neg"), ("+", "hist_pos")):
                h = p[key]
                idx = [i for i, v in enumerate(h) if v]
                if not idx:
                    continue
                order = range(max(idx), min(idx) - 1, -1) if sign == "-" else range(min(idx), max(idx) + 1)
                for b in order:
                    lo, hi = (0 if b == 0 else 1 << b), (1 << (b + 1)) - 1
                    rows.append((f"{sign}{lo} -> {sign}{hi}", h[b]))
            peak = max((v for _, v in rows), default=0)
            lines.append(f"     {'gap (ns)':>32} : count    distribution")
            for label, v in rows:
                lines.append(f"     {label:>32} : {v:<8} |{_stars(v, peak):<30}|")
    if summary.get("huge_mappings"):
        lines.append(f"\nPMD/PUD mappings removed in zaps: {summary['huge_mappings']} "
                     "(not paired in the kernel: record without --summary to see their windows)")
    if summary.get("other_path"):
        lines.append(f"\nother-path removals (not paired): {summary['other_path']}")
    if summary.get("approximate"):
        lines.append(f"approximate buckets: {summary['approximate']} pages beyond {layout()['ZT_PENDING']} "
                     "pending runs per task were timed at their run's midpoint")
    return lines
