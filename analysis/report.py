"""`zaptrace report`: one trace, analysed and printed as a terminal summary.

``analyse(path)`` runs the whole pipeline (read -> sort -> gap table ->
window hits -> summary) and reports progress for large traces;
``render_text`` turns the result into the terminal report, which opens with
the verdict (analysis.verdict) right after the file and kernel.  The table
builders (``class_table``, ``hit_rows``) return plain strings so the HTML
report shows exactly the same figures.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from zaptrace import tracefile
from zaptrace.machine import summary_line as machine_line
from zaptrace.layout import layout
from zaptrace.vocab import DELAYED, IMMEDIATE

from .gaps import CLASSES, HIT_COLUMNS, HIT_INPUT, ZAP_PATHS, gap_table, mkclean_spans, window_hits
from .load import KIND_NAMES, Trace, from_raw
from .result import Analysis
from .summary import summarize
from .verdict import verdict_lines, verdict_of

# Above this many events (estimated from the file size) progress lines go to stderr.
PROGRESS_EVENTS = 1_000_000
#: Paths always shown in the class table; the others (pmd, pud) only where they occur.
PATH_ROWS = ("all", IMMEDIATE, DELAYED)
Table = Tuple[List[str], List[List[str]]]


class Stages:
    """Prints `zaptrace: [elapsed] stage` lines when given a sink (else silent)."""

    def __init__(self, sink: Optional[Callable[[str], None]]):
        self.sink = sink
        self.t0 = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.sink is not None:
            self.sink(f"zaptrace: [{time.perf_counter() - self.t0:6.1f} s] {name}")


def _estimated_events(path: str) -> int:
    try:
        return os.path.getsize(path) // layout().dtype.itemsize
    except OSError:
        return 0          # tracefile.read reports the problem


def parse_size(text: str) -> int:
    """Bytes of '1G', '512M', '300k', '2GiB' or a plain number."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        n = float(t[:-1] if t[-1:] in "KMGT" else t) * mult
    except ValueError:
        n = -1
    if n <= 0:
        from .errors import AnalysisError
        raise AnalysisError(f"--max-memory {text}: not a size (e.g. 1G, 512M)")
    return int(n)


def analyse(path: str, progress: Optional[Callable[[str], None]] = None, with_hits: bool = True,
            findings: Optional[str] = None, max_memory: Optional[int] = None,
            max_hits: Optional[int] = 20, keep_events: bool = False) -> Analysis:
    """Load and analyse one trace; `progress` gets stage lines for traces above PROGRESS_EVENTS.

    with_hits=False skips the window-hit list (``Analysis.hits`` is then empty;
    the per-page ``hits`` counts in the gap table are always there).  ``findings``:
    a lostwrite findings file whose lost writes are joined with the trace.
    keep_events: keep every column of ``Analysis.trace.events`` (``--html`` and the Perfetto
    export read them); otherwise, once the gap table is built, the events keep only ``ts`` and
    ``kind`` (what the summary and the text report read): the sorted records (72 bytes per
    event) are then freed before the hit list and the summary.
    """
    if max_memory is not None:
        if findings:
            from .errors import AnalysisError
            raise AnalysisError("--findings needs the in-memory analysis: drop --max-memory")
        from .stream import analyse_bounded
        return analyse_bounded(path, max_memory=max_memory, with_hits=with_hits, max_hits=max_hits,
                               progress=progress)
    doc = None
    if findings:
        from .lostwrites import load_findings
        doc = load_findings(findings)     # a bad findings file fails before the (long) analysis
    stage = Stages(progress if _estimated_events(path) > PROGRESS_EVENTS else None)
    stage(f"reading {path}")
    raw = tracefile.read(path)
    stage(f"sorting {len(raw.events):,} events")
    trace = from_raw(raw)
    del raw
    stage("gap table")
    mk = mkclean_spans(trace)          # once: the gap table's hit counts and the hit list both use them
    # Unless asked to keep them, the sorted events are slimmed as soon as the gap table has
    # selected what it needs (the lost-write join reads the mkclean events).
    slim = not keep_events and doc is None
    gaps = gap_table(trace, mk, release=(lambda: _slim_events(trace)) if slim else None)
    if with_hits:
        stage(f"window hits of {len(gaps):,} pages")
        # only rows with hits > 0 have hit rows: the full hit_table would redo window_hits on every open row
        hits = window_hits(trace, gaps[HIT_INPUT][gaps["hits"].to_numpy() > 0], mk)[1]
    else:
        hits = pd.DataFrame(columns=HIT_COLUMNS)
    stage("summary")
    summary = summarize(trace, gaps)
    lost = None
    if doc is not None:
        from . import lostwrites
        stage("lost writes")
        lost = lostwrites.join(trace, gaps, doc)
        summary["lost_writes"] = lostwrites.summarize(lost, doc, trace, lostwrites.chance(trace, gaps, doc))
    del mk
    stage("done")
    return Analysis(trace=trace, gaps=gaps, hits=hits, summary=summary, lost=lost)


def _slim_events(trace: Trace) -> None:
    """Keep only the ``ts`` and ``kind`` columns of the trace's events (contiguous copies), so
    that the sorted records they were views of are freed."""
    ev = trace.events
    trace.events = pd.DataFrame({"ts": np.array(ev["ts"].to_numpy(), dtype=np.int64),
                                 "kind": np.ascontiguousarray(ev["kind"].to_numpy())}, copy=False)


LOST_HEADER = ["page", "written ms", "store ms", "found ms", "expected/found", "explained by", "decrement ms",
               "gap us", "mkclean ms", "flush done ms"]


def lost_rows(lost: pd.DataFrame, t0: int) -> Table:
    """One row per lost write: when it was written (the visit; the store alone where the detector
    timed it) and found, and the window that explains it."""
    def ms(v) -> str:        # v: int ns (exact difference with t0), or missing
        return "-" if v is None or pd.isna(v) else f"{(v - t0) / 1e6:.3f}"
    rows = []
    for r in lost.to_dict("records"):
        rows.append([str(r["page"]), ms(r["written_ns"]), ms(r.get("store_ns")), ms(r["found_ns"]),
                     f"{r['expected']}/{r['found']}",
                     (f"{r['path']} {r['class']}" + (" (bypass)" if r.get("window") == "bypass" else ""))
                     if r["explained"] else "UNEXPLAINED",
                     ms(r["dec_ts"]), fmt_us(r["gap_ns"]), ms(r["mkclean_enter_ts"]), ms(r["flush_done_ts"])])
    return LOST_HEADER, rows


def lost_lines(a: "Analysis") -> List[str]:
    from .lostwrites import chance_line
    s = a.summary["lost_writes"]
    f = s["findings"]
    head = f"lost writes (found by content in {f['file']}, inode {f['ino']}): "
    if not s["lost_writes"]:
        visits = f.get("visits")
        return ["", head + "none" + (f" in {visits:,} page visits" if visits is not None else ""),
                "  " + chance_line(s)]
    lines = ["", head + f"{s['lost_writes']:,}; explained by a recorded window of that page with "
             f"writeback inside (open, or bypassed): {s['explained']:,}"
             + (f", in {s['windows']:,} window{'s' if s['windows'] != 1 else ''}" if s["explained"] else ""),
             "  " + chance_line(s)]
    lines += format_table(*lost_rows(a.lost, t0_of(a.trace)), left=0)
    if s["unexplained"]:
        lines.append(f"  {s['unexplained']:,} UNEXPLAINED: no recorded decrement of that page had an open window "
                     f"with a folio_mkclean inside it while the lost value was written.  Watched: "
                     f"{', '.join(s['watched'])}; events lost: {s['lost_events']}.  Either a path zaptrace does "
                     "not record (hugetlb, a removal outside any zap), lost events, or another cause.")
    return lines


# ------------------------------------------------------------- formatting --

def fmt_us(ns: Any) -> str:
    """Signed microseconds from nanoseconds: +12.3, -0.8, +0.004; '-' when unknown (None, NaN, NA)."""
    if ns is None or pd.isna(ns):
        return "-"
    us = ns / 1000.0
    if us != 0 and abs(us) < 0.1:
        return f"{us:+.3f}"
    return f"{us:+.1f}"


def fmt_count(n: Optional[int]) -> str:
    return "-" if n is None else f"{n:,}"


def t0_of(trace: Trace) -> int:
    """The first event's timestamp (the origin of relative times), 0 for an empty trace."""
    if getattr(trace, "t0", None) is not None:      # analysis.stream: events not held
        return int(trace.t0)
    ev = trace.events
    return int(ev["ts"].iloc[0]) if len(ev) else 0


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1,
                 indent: str = "  ") -> List[str]:
    """Text table: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        out = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return (indent + "  ".join(out)).rstrip()
    return [line(header)] + [line(r) for r in rows]


CLASS_HEADER = ["class", "path", "decrements", "paired", "unpaired", DELAYED, "open", "closed",
                "p50 us", "p90 us", "p99 us", "max us", "hits"]


def class_table(summary: Dict[str, Any]) -> Table:
    """Per class, the class total ('all') and its immediate / delayed rows; gaps in signed us."""
    rows = []
    shown = list(PATH_ROWS) + [p for p in ZAP_PATHS if p not in PATH_ROWS
                               and any(summary["classes"][c]["by_path"][p]["decrements"] for c in CLASSES)]
    for c in CLASSES:
        block = summary["classes"][c]
        for p in shown:
            b = block if p == "all" else block["by_path"][p]
            g = b["gap_ns"]
            rows.append([c if p == "all" else "", p, fmt_count(b["decrements"]), fmt_count(b["paired"]),
                         fmt_count(b["unpaired"]), fmt_count(b[DELAYED]), fmt_count(b["open"]),
                         fmt_count(b["closed"]), fmt_us(g["p50"]), fmt_us(g["p90"]), fmt_us(g["p99"]),
                         fmt_us(g["max"]), fmt_count(b["hits"])])
    if not any(summary["classes"][c].get("bypass") for c in CLASSES):
        return CLASS_HEADER, rows
    # writeback that did not wait for the page-table lock in a closed window (gaps.PathRule.bypass)
    k = 0
    for c in CLASSES:
        for p in shown:
            b = summary["classes"][c] if p == "all" else summary["classes"][c]["by_path"][p]
            rows[k].append(fmt_count(b.get("bypass", 0)))
            k += 1
    return CLASS_HEADER + ["bypass"], rows


HIT_HEADER = ["decrement ms", "pfn", "class", "path", "gap us", "zap tid/cpu", "mkclean tid/cpu",
              "mkclean start us", "mkclean took us", "ret"]


def hit_rows(hits: pd.DataFrame, t0: int, limit: Optional[int]) -> Table:
    """The first `limit` window hits (all when None), by decrement time.

    Times: decrement in ms since the first event; mkclean start relative
    to the decrement (signed us); how long the mkclean ran ('running'
    when its return was not recorded).
    """
    h = hits.sort_values(["dec_ts", "mkclean_enter_ts"], kind="stable")
    if limit is not None:
        h = h.head(limit)
    # times stay int64 ns (Python ints, NA when missing) until formatted: differences are exact
    dec = h["dec_ts"].astype("int64").tolist()
    start = h["mkclean_enter_ts"].astype("int64").tolist()
    took = (h["mkclean_exit_ts"].astype("Int64") - h["mkclean_enter_ts"].astype("int64")).tolist()
    cols = zip(dec, h["pfn"].to_numpy(), h["class"].to_numpy(), h["path"].to_numpy(),
               h["gap_ns"].astype("Int64").tolist(), h["zap_tid"].to_numpy(), h["zap_cpu"].to_numpy(),
               h["mkclean_tid"].to_numpy(), h["mkclean_cpu"].to_numpy(), start, took,
               h["mkclean_ret"].astype("Int64").tolist())
    rows = [[f"{(d - t0) / 1e6:.3f}", f"{int(pfn):#x}", str(c), str(p), fmt_us(g), f"{zt}/{zc}",
             f"{mt}/{mc}", fmt_us(s - d), "running" if pd.isna(k) else fmt_us(k).lstrip("+"),
             "-" if pd.isna(r) else str(int(r))]
            for d, pfn, c, p, g, zt, zc, mt, mc, s, k, r in cols]
    return HIT_HEADER, rows


PER_CALL_HEADER = ["class", "path", "decrements", "pages/call min", "p50", "max"]


def per_call_table(summary: Dict[str, Any]) -> Table:
    """Pages per rmap call, per class and path: PTE batches of large folios (6.9+), whole PMDs."""
    rows = []
    for c in CLASSES:
        for p in ZAP_PATHS:
            b = summary["classes"][c]["by_path"][p]
            if b["decrements"]:
                n = b["pages_per_call"]
                rows.append([c, p, fmt_count(b["decrements"]), str(n["min"]), str(n["p50"]), str(n["max"])])
    return PER_CALL_HEADER, rows


def _by_kind(counts: Dict[str, int]) -> str:
    """'zap_enter 2, rmap 6, ...': the nonzero counts in event-kind order."""
    order = {k: i for i, k in enumerate(KIND_NAMES)}
    items = sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order)))
    return ", ".join(f"{k} {v:,}" for k, v in items if v)


def identity_lines(summary: Dict[str, Any]) -> List[str]:
    """File and kernel: what the report is about (the verdict follows them)."""
    return [f"file:      {summary['file']}", f"kernel:    {summary['kernel']}"]


def header_lines(summary: Dict[str, Any]) -> List[str]:
    """File, kernel, command, duration, events per kind, losses, problems, probes, flush source."""
    return identity_lines(summary) + fact_lines(summary)


def fact_lines(summary: Dict[str, Any]) -> List[str]:
    """The header after file and kernel: machine, command, duration, events, losses, problems,
    probes, flush source."""
    s = summary
    dur = "-" if s["duration_s"] is None else f"{s['duration_s']:.3f} s"
    lines = [f"machine:   {machine_line(s.get('machine'))}",
             f"command:   {' '.join(s['command']) or '-'}",
             f"duration:  {dur}" + ("" if s["finished"] else " (recording did not finish)")]
    ev = _by_kind(s["events"])
    lines.append(f"events:    {sum(s['events'].values()):,} total" + (": " if ev else "") + ev)
    if s.get("zaps_not_written"):
        lines.append(f"           and {s['zaps_not_written']:,} zaps with nothing inside them: counted, not written")
    if s["lost_events"] is None:
        lines.append("lost:      unknown (no END or STAT chunk with counters)")
    elif s["lost_events"]:
        lines.append(f"lost:      {s['lost_events']:,} events LOST (ring buffer full): {_by_kind(s['lost_by_kind'])}")
    else:
        lines.append("lost:      0 events")
    if s.get("probe_misses"):
        m = s["probe_misses"]
        lines.append(f"skipped:   {sum(m.values()):,} probe hits skipped by the kernel (a BPF program already "
                     f"running on that CPU), their events missing: {', '.join(f'{k} {v:,}' for k, v in sorted(m.items()))}")
    if s["trace_problems"]:
        lines.append(f"PROBLEMS:  the trace is damaged or incomplete ({s['skipped_bytes']:,} bytes skipped):")
        lines += [f"  - {p}" for p in s["trace_problems"]]
    missing = [k for k, v in s["probes"].items() if not v]
    if missing:
        lines.append(f"probes:    not attached: {', '.join(missing)}")
    src = s["flush_source"] or "-"
    note = " (the arch flush was not recorded)" if src == "tlb_flush_mmu" else ""
    lines.append(f"flush:     a window closes when {src} returns{note}")
    return lines


def render_text(a: Analysis, max_hits: int = 20) -> str:
    """The terminal report of one analysed trace."""
    s = a.summary
    lines = identity_lines(s) + [""] + verdict_lines(verdict_of(s)) + [""] + fact_lines(s)
    if a.mode:
        lines.append(f"analysis:  {a.mode}")
    lines += ["", "Decrement -> covering flush completion (gap > 0: the window was open that long):"]
    lines += format_table(*class_table(s), left=2)
    header, rows = per_call_table(s)
    if any(r[5] != "1" for r in rows):
        lines += ["", "Pages per rmap call (PTE batches of large folios; a PMD mapping is 512, order 9):"]
        lines += format_table(header, rows, left=2)
    other = s["other_path"]
    lines += ["", f"other-path removals (never paired): {other['count']:,}"]
    lines += [f"  {n:>10,}  {r}" for r, n in other["reasons"].items()]
    reasons: Dict[str, int] = {}
    for c in CLASSES:
        for r, n in s["classes"][c]["unpaired_reasons"].items():
            reasons[r] = reasons.get(r, 0) + n
    lines += ["", f"unpaired decrements: {sum(reasons.values()):,}"]
    lines += [f"  {n:>10,}  {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
    suspects = sum(s["classes"][c]["loss_suspect"] for c in CLASSES)
    if suspects:
        lines.append(f"  {suspects:,} decrements fall where events were lost: their gaps may be wrong")
    lines += ["", f"window hits (mkclean of the folio inside an open window): {s['window_hits']:,}"]
    bypass = sum(s["classes"][c].get("bypass", 0) for c in CLASSES)
    if bypass:
        lines.append(f"bypasses (mkclean of the folio between an entry's clear and its flush, in a closed "
                     f"window: writeback did not wait for the page-table lock): {bypass:,}")
    if len(a.hits):
        header, rows = hit_rows(a.hits, t0_of(a.trace), max_hits)
        lines += format_table(header, rows, left=0)
        total = len(a.hits) if a.hits_total is None else a.hits_total
        if total > len(rows):
            lines.append(f"  ... {total - len(rows):,} more (--hits N shows more)")
    if "lost_writes" in s:
        lines += lost_lines(a)
    return "\n".join(lines) + "\n"
