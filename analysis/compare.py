"""`zaptrace compare`: the per-class figures of several traces side by side.

Columns are traces, labelled by kernel release (plus the file name when two
traces share a release).  It opens with the traces' verdicts side by side
(analysis.verdict: dirty file pages per zap path), then rows of class /
metric.  Built from summarize() dicts only, so it compares traces of any
size once each is summarised.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from zaptrace.machine import short as machine_short, summary_line as machine_line
from zaptrace.vocab import ANON, DELAYED, FILE_CLEAN, FILE_DIRTY, IMMEDIATE

from .gaps import CLASSES, ZAP_PATHS
from .report import Table, fmt_count, fmt_us, format_table
from .verdict import NONE, PATH_LABELS, WHY_HARMLESS, cell, short, verdict_of

SCHEMA = "zaptrace.compare/1"


def labels_of(summaries: Sequence[Dict[str, Any]]) -> List[str]:
    """Kernel release per trace; ' (file)' added where releases repeat."""
    kernels = [s["kernel"] for s in summaries]
    return [k if kernels.count(k) == 1 else f"{k} ({os.path.basename(s['file'])})"
            for k, s in zip(kernels, summaries)]


def _share(n: int, of: int) -> Optional[float]:
    return None if not of else n / of


def class_figures(block: Dict[str, Any]) -> Dict[str, Any]:
    """The compared figures of one class block of a summary (gaps in ns, shares as fractions)."""
    return {
        "decrements": block["decrements"], "paired": block["paired"], DELAYED: block[DELAYED],
        "delayed_share": _share(block[DELAYED], block["decrements"]),
        "open": block["open"], "closed": block["closed"],
        "open_share": _share(block["open"], block["paired"]),
        "gap_p50_ns": block["gap_ns"]["p50"], "gap_p99_ns": block["gap_ns"]["p99"],
        "hits": block["hits"],
        "bypass": block.get("bypass", 0),
    }


def window_state(block: Dict[str, Any]) -> str:
    """'open' if any paired decrement preceded its flush, 'bypassed' if none did but writeback
    did not wait for the zap in some window (gaps.PathRule.bypass), 'closed' otherwise, '-'
    without pairs."""
    if not block["paired"]:
        return "-"
    return "open" if block["open"] else ("bypassed" if block.get("pages_bypassed") else "closed")


def path_states(block: Dict[str, Any]) -> Dict[str, str]:
    """window_state of each zap path that has paired decrements."""
    return {p: window_state(block["by_path"][p]) for p in ZAP_PATHS if block["by_path"][p]["paired"]}


def path_state_text(block: Dict[str, Any]) -> str:
    """'open', 'closed', or per path 'delayed closed, pmd open' when a class has pairs on a
    PMD/PUD path or on several paths."""
    states = path_states(block)
    if set(states) <= {IMMEDIATE, DELAYED} and len(states) <= 1:
        return window_state(block)
    return ", ".join(f"{p} {st}" for p, st in states.items())


def compare_json(summaries: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """What `zaptrace compare --json` prints."""
    return {"schema": SCHEMA, "traces": [
        {"label": lab, "file": s["file"], "kernel": s["kernel"], "machine": s.get("machine"),
         "events": sum(s["events"].values()),
         "lost_events": s["lost_events"], "flush_source": s["flush_source"],
         "verdict": verdict_of(s),
         "classes": {c: dict(class_figures(s["classes"][c]), window=window_state(s["classes"][c]),
                             window_by_path=path_states(s["classes"][c]))
                     for c in CLASSES}}
        for lab, s in zip(labels_of(summaries), summaries)]}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def compare_table(summaries: Sequence[Dict[str, Any]]) -> Table:
    """Rows: trace facts, then per class the compared metrics; one column per trace."""
    header = ["class", "metric"] + labels_of(summaries)
    rows: List[List[str]] = [
        ["trace", "file"] + [os.path.basename(s["file"]) for s in summaries],
        ["", "events"] + [fmt_count(sum(s["events"].values())) for s in summaries],
        ["", "lost events"] + [fmt_count(s["lost_events"]) for s in summaries],
        ["", "flush source"] + [s["flush_source"] or "-" for s in summaries],
        ["", "machine"] + [machine_short(s.get("machine")) for s in summaries],
    ]
    for c in CLASSES:
        f = [class_figures(s["classes"][c]) for s in summaries]
        rows += [
            [c, "decrements"] + [fmt_count(x["decrements"]) for x in f],
            ["", "delayed share"] + [_pct(x["delayed_share"]) for x in f],
            ["", "open"] + [f"{x['open']:,} ({_pct(x['open_share'])})" if x["paired"] else "0" for x in f],
            ["", "closed"] + [fmt_count(x["closed"]) for x in f],
            ["", "gap p50 us"] + [fmt_us(x["gap_p50_ns"]) for x in f],
            ["", "gap p99 us"] + [fmt_us(x["gap_p99_ns"]) for x in f],
            ["", "window hits"] + [fmt_count(x["hits"]) for x in f],
            ["", "bypasses"] + [fmt_count(x["bypass"]) for x in f],
            ["", "window"] + [window_state(s["classes"][c]) for s in summaries],
        ]
        if any(set(path_states(s["classes"][c])) - {IMMEDIATE, DELAYED} for s in summaries):
            rows.append(["", "window by path"] + [path_state_text(s["classes"][c]) or "-" for s in summaries])
    return header, rows


def verdict_table(summaries: Sequence[Dict[str, Any]]) -> Table:
    """The verdicts side by side: per zap path with dirty file decrements in some trace, each
    trace's cell (open: how many of the paired decrements dropped the mapcount before the flush,
    gap p50, windows with writeback inside; closed...); then the verdict in a few words."""
    vs = [verdict_of(s) for s in summaries]
    rows = [[PATH_LABELS.get(p, p)] + [cell(v[FILE_DIRTY]["paths"][p]) for v in vs]
            for p in ZAP_PATHS if any(v[FILE_DIRTY]["paths"][p]["state"] != NONE for v in vs)]
    rows.append(["dirty file pages"] + [short(v) for v in vs])
    return ["dirty file path"] + labels_of(summaries), rows


def verdict_block(summaries: Sequence[Dict[str, Any]]) -> List[str]:
    """What `compare` opens with: the verdict table, the harmless classes, any caveat per trace."""
    lines = ["Verdict per trace: dirty file pages, per zap path (mapcount dropped before the flush in how many "
             "of the paired decrements):"]
    header, rows = verdict_table(summaries)
    lines += format_table(header, rows, left=len(header))
    lines += [f"  {c}: harmless in every trace: {WHY_HARMLESS[c]}" for c in (ANON, FILE_CLEAN)]
    for lab, s in zip(labels_of(summaries), summaries):
        caveat = verdict_of(s).get("caveat")
        if caveat:
            lines.append(f"  caveat, {lab}: {caveat}")
    return lines


def render_compare(summaries: Sequence[Dict[str, Any]]) -> str:
    """The text comparison: the verdicts first (``verdict_block``), then the figures, ending with
    one line on dirty file pages per trace."""
    lines = verdict_block(summaries) + [""]
    lines += ["Per-class gap figures (gap = flush completion - decrement, signed us; open = decrement "
              "before the flush):"]
    lines += format_table(*compare_table(summaries), left=2)
    lines += [""] + [f"{lab}: recorded on {machine_line(s.get('machine'))}"
                     for lab, s in zip(labels_of(summaries), summaries)]
    states = [f"{lab}: {path_state_text(s['classes'][FILE_DIRTY])}"
              for lab, s in zip(labels_of(summaries), summaries)]
    lines += ["", "dirty file pages, window: " + "; ".join(states)]
    return "\n".join(lines) + "\n"
