"""`zaptrace ab`: one workload on two kernels, boots interleaved, untraced and traced.

A fix is evidence only against the same kernel without it, on the same
workload, in the same guest mode, on the same host at the same time.  So each
round boots kernel A, then kernel B, once per mode (A B A B ...), and every
run is a fresh guest:

* ``untraced``: the command alone.  Tracing slows a zapper (every zap costs
  probe hits) and can hide a race: lost writes are counted untraced too;
* ``traced``: the command under ``zaptrace record``; the trace is analysed
  on the host (``zaptrace report``, with the lost writes joined when the
  workload found any).

What a run measures comes from the workload itself: the bundled workloads
write their figures (zaps, page visits, lost writes, elapsed time) to
``$ZAPTRACE_WORKLOAD_REPORT`` (zaptrace/workloads.py), so the command is run
exactly as given.  Any other command is timed and its exit status kept.

Everything lands in the output directory: per run its output, workload
report and trace; ``ab.json`` (every run, and the aggregates printed) is
rewritten after every run, so that an interrupted A/B keeps what it measured.
"""
from __future__ import annotations

import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import ZaptraceError
from .vocab import CLASSES, FILE_DIRTY
from .workloads import REPORT_ENV

SCHEMA = "zaptrace.ab/1"
MODES = ("untraced", "traced")
SIDES = ("A", "B")
#: The workload's exit statuses that are results, not failures (lostwrite: 1 = writes were lost).
OK_STATUSES = (0, 1)


class ABError(ZaptraceError):
    pass


@dataclass
class Run:
    round: int
    side: str                 # "A" or "B"
    kernel: str
    mode: str                 # "untraced" or "traced"
    tag: str                  # file prefix in the output directory
    status: Optional[int] = None
    wall_s: Optional[float] = None
    error: Optional[str] = None
    workload: Optional[Dict[str, Any]] = None     # the workload's own report
    trace: Optional[str] = None
    figures: Optional[Dict[str, Any]] = None      # trace_figures() of the analysed trace
    #: the host's load average (1, 5, 15 min) when the guest ended: a guest of 3 vCPUs keeps a
    #: 2-CPU host near 2-3; more means something else ran beside it (say so with the figures)
    host_load: Optional[Tuple[float, float, float]] = None


def schedule(rounds: int, modes: Sequence[str]) -> List[Tuple[int, str, str]]:
    """(round, mode, side) in boot order: per round and mode, A then B."""
    return [(r, m, s) for r in range(1, rounds + 1) for m in modes for s in SIDES]


def guest_command(command: Sequence[str], mode: str, tag: str) -> List[str]:
    """What the guest runs for one run (its cwd is the output directory)."""
    if mode == "traced":
        return ["zaptrace", "record", "-q", "-o", tag + ".zt", "--"] + list(command)
    return list(command)


def trace_figures(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The figures of a report summary that an A/B compares: per class and path, the
    decrements, paired, open, closed, window hits, windows hit (``pages_hit``: open windows
    with writeback inside) and gap p50; events and losses."""
    classes = {}
    for c in CLASSES:
        block = summary["classes"][c]
        classes[c] = {p: {k: b.get(k, 0) for k in ("decrements", "paired", "open", "closed", "hits", "pages_hit",
                                                   "pages_bypassed")}
                      | {"gap_p50_ns": b["gap_ns"]["p50"]}
                      for p, b in block["by_path"].items() if b["decrements"]}
    out = {"release": summary["kernel"], "events": sum(summary["events"].values()),
           "lost_events": summary["lost_events"], "classes": classes}
    lw = summary.get("lost_writes")
    if lw:
        out["lost_writes"] = {k: lw.get(k) for k in ("lost_writes", "explained", "unexplained", "windows", "by_path",
                                                     "span", "chance")}
    return out


def _spread(values: List[float]) -> Optional[Tuple[float, float, float]]:
    """(median, min, max), or None without values."""
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def aggregate(runs: Sequence[Run]) -> Dict[str, Any]:
    """Per side and mode: lost writes, throughput and (traced) the windows, over the rounds."""
    out: Dict[str, Any] = {}
    for side in SIDES:
        for mode in MODES:
            rs = [r for r in runs if r.side == side and r.mode == mode]
            if not rs:
                continue
            ok = [r for r in rs if r.error is None]
            wl = [r.workload for r in ok if r.workload]
            lost = [len(w["lost"]) for w in wl if isinstance(w.get("lost"), list)]
            rate = {}
            for what in ("zaps", "visits"):
                vals = [w[what] / w["elapsed_s"] for w in wl if w.get(what) is not None and w.get("elapsed_s")]
                rate[what + "_per_s"] = _spread(vals)
            agg: Dict[str, Any] = {
                "kernel": rs[0].kernel, "runs": len(rs), "failed": len(rs) - len(ok),
                "lost_writes": _spread([float(x) for x in lost]), "lost_writes_each": lost,
                "runs_with_loss": sum(1 for x in lost if x), "runs_counted": len(lost), **rate,
                "wall_s": _spread([r.wall_s for r in ok if r.wall_s is not None]),
                "host_load_5min": _spread([r.host_load[1] for r in ok if r.host_load]),
            }
            figs = [r.figures for r in ok if r.figures]
            if figs:
                agg["releases"] = sorted({f["release"] for f in figs})
                agg["events_lost"] = [f["lost_events"] for f in figs]
                windows: Dict[str, Dict[str, Any]] = {}
                for c in CLASSES:
                    for p in sorted({p for f in figs for p in f["classes"].get(c, {})}):
                        per = [f["classes"].get(c, {}).get(p) for f in figs]
                        per = [x for x in per if x]
                        windows.setdefault(c, {})[p] = {
                            "decrements": sum(x["decrements"] for x in per),
                            "paired": sum(x["paired"] for x in per),
                            "open": sum(x["open"] for x in per),
                            "closed": sum(x["closed"] for x in per),
                            "hits": sum(x["hits"] for x in per),
                            "hits_each": [x["hits"] for x in per],
                            # None when a run's figures lack it (made before it was kept)
                            "pages_hit": (sum(x["pages_hit"] for x in per)
                                          if all("pages_hit" in x for x in per) else None),
                            "pages_bypassed": sum(x.get("pages_bypassed", 0) for x in per),
                            "gap_p50_ns": _spread([x["gap_p50_ns"] for x in per if x["gap_p50_ns"] is not None]),
                            "runs": len(per),
                        }
                agg["windows"] = windows
                ex = [f["lost_writes"] for f in figs if "lost_writes" in f]
                if ex:
                    agg["explained"] = sum(x["explained"] for x in ex)
                    agg["unexplained"] = sum(x["unexplained"] for x in ex)
            out[f"{side}/{mode}"] = agg
    return out


# ------------------------------------------------------------------ text --

def _num(x: Optional[Tuple[float, float, float]], fmt: str = "{:,.0f}") -> str:
    if x is None:
        return "-"
    med, lo, hi = x
    return f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})" if lo != hi else fmt.format(med)


def _us(x: Optional[Tuple[float, float, float]]) -> str:
    if x is None:
        return "-"
    return _num(tuple(v / 1000 for v in x), "{:+,.1f}") + " us"


def render(doc: Dict[str, Any]) -> str:
    """The A/B's tables: per mode, the workload's figures per kernel; then the windows."""
    agg, k = doc["aggregate"], doc["kernels"]
    from .analysis.report import format_table
    lines = [f"A/B: A = {k['A']}, B = {k['B']}; {doc['rounds']} rounds, boots interleaved (A B A B ...); "
             f"command: {shlex.join(doc['command'])}",
             f"guest: {doc['guest']}"]
    header = ["mode", "kernel", "runs", "lost writes: median (min-max)", "runs with loss", "zaps/s", "page visits/s",
              "guest wall s", "host load (5 min)"]
    rows = []
    for mode in MODES:
        for side in SIDES:
            a = agg.get(f"{side}/{mode}")
            if not a:
                continue
            runs = f"{a['runs'] - a['failed']}" + (f" ({a['failed']} failed)" if a["failed"] else "")
            lost = _num(a["lost_writes"]) if a["runs_counted"] else "-"
            with_loss = f"{a['runs_with_loss']} of {a['runs_counted']}" if a["runs_counted"] else "-"
            rows.append([mode, f"{side}: {a['kernel']}", runs, lost, with_loss, _num(a["zaps_per_s"]),
                         _num(a["visits_per_s"]), _num(a["wall_s"], "{:,.1f}"),
                         _num(a.get("host_load_5min"), "{:.1f}")])
    lines += [""] + format_table(header, rows, left=2)
    trows = []
    for side in SIDES:
        a = agg.get(f"{side}/traced")
        if not a or "windows" not in a:
            continue
        for c in CLASSES:
            for p, w in a["windows"].get(c, {}).items():
                state = "-" if not w["paired"] else \
                    ("open" if w["open"] else ("bypassed" if w.get("pages_bypassed") else "closed"))
                trows.append([f"{side}: {a['kernel']}", c, p, f"{w['decrements']:,}",
                              f"{w['open']:,} of {w['paired']:,}", state, f"{w['hits']:,}",
                              ", ".join(f"{h:,}" for h in w["hits_each"]), _us(w["gap_p50_ns"])])
        lost = a.get("events_lost") or []
        trows.append([f"{side}: {a['kernel']}", "(recorder)", "", "", "", "", "", "",
                      "events lost: " + ", ".join(f"{x:,}" if x is not None else "?" for x in lost)])
    if trows:
        lines += ["", "Traced runs, summed over the rounds (gap p50: median and range of the per-run p50s):"]
        lines += format_table(["kernel", "class", "path", "decrements", "open of paired", "window", "window hits",
                               "hits per run", "gap p50"], trows, left=2)
    lines += ["", "In short:"] + [f"  {x}" for x in verdict_lines(doc)]
    return "\n".join(lines) + "\n"


def verdict_lines(doc: Dict[str, Any]) -> List[str]:
    """Per kernel: lost writes untraced and traced; then, indented, the verdict on dirty file
    pages per path over the traced runs, in the words of `zaptrace report`'s verdict
    (analysis.verdict.path_text; the gap p50 is the median of the runs' p50s)."""
    from .analysis.verdict import path_text
    out = []
    agg = doc["aggregate"]
    for side in SIDES:
        parts = []
        for mode in MODES:
            a = agg.get(f"{side}/{mode}")
            if a and a["runs_counted"]:
                parts.append(f"{mode}: lost writes in {a['runs_with_loss']} of {a['runs_counted']} runs "
                             f"({sum(a['lost_writes_each']):,} in all)")
        out.append(f"{side} ({doc['kernels'][side]}): " + ("; ".join(parts) if parts
                                                             else "lost writes: none counted (the workload reports none)"))
        a = agg.get(f"{side}/traced")
        if a and "windows" in a:
            for p, w in a["windows"].get(FILE_DIRTY, {}).items():
                if w["decrements"]:
                    p50 = w["gap_p50_ns"][0] if w["gap_p50_ns"] else None
                    runs = f"median of {w['runs']} runs" if w["runs"] > 1 else ""
                    out.append("  dirty file pages, " + path_text(p, w["decrements"], w["paired"], w["open"], p50,
                                                                  w.get("pages_hit"), w["hits"], p50_of=runs,
                                                                  bypassed=w.get("pages_bypassed", 0)))
    return out


# ------------------------------------------------------------------- run --

def run_ab(kernel_a: str, kernel_b: str, command: Sequence[str], *, rounds: int = 3,
           modes: Sequence[str] = MODES, out_dir: str = "ab", smp: Optional[int] = None,
           timeout: Optional[float] = None, scratch_fs: str = "ext4", memory_mb: int = 2048,
           log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the A/B; return (and write to out_dir/ab.json) every run and the aggregates."""
    from .vm import build as vm_build
    from .vm import qemu, runner
    from .vm.errors import VMError

    if not command:
        raise ABError("no command: zaptrace ab A B -- CMD [ARGS...]")
    if rounds < 1:
        raise ABError("--rounds must be at least 1")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ABError(f"--modes: choose from {', '.join(MODES)}, not {', '.join(bad) or 'nothing'}")
    for k in (kernel_a, kernel_b):
        reason = vm_build.ready(k)
        if reason:
            raise ABError(f"kernel {k}: {reason}")
    os.makedirs(out_dir, exist_ok=True)
    out_dir = os.path.realpath(out_dir)
    if smp is None:
        smp = qemu.default_vcpus()
    kernels = {"A": kernel_a, "B": kernel_b}
    guest = f"QEMU {qemu.version()}, TCG {qemu.tcg_threading()}-threaded, {smp} vCPUs, {memory_mb} MiB, " \
            f"scratch {scratch_fs}; host {os.cpu_count()} CPUs"
    doc: Dict[str, Any] = {"schema": SCHEMA, "kernels": kernels, "command": list(command), "rounds": rounds,
                           "modes": list(modes), "guest": guest, "started": _now(), "runs": []}
    runs: List[Run] = []
    plan = schedule(rounds, modes)
    for i, (rnd, mode, side) in enumerate(plan, 1):
        kernel = kernels[side]
        tag = f"r{rnd}-{side}-{mode}"
        run = Run(rnd, side, kernel, mode, tag)
        log(f"zaptrace ab: [{i}/{len(plan)}] round {rnd}, {mode}, {side} = {kernel} ...")
        report = os.path.join(out_dir, tag + ".workload.json")
        for stale in (report, os.path.join(out_dir, tag + ".zt")):
            if os.path.exists(stale):
                os.unlink(stale)
        t0 = time.monotonic()
        try:
            with open(os.path.join(out_dir, tag + ".out"), "wb") as out:
                run.status = runner.run(kernel, guest_command(command, mode, tag), cwd=out_dir, timeout=timeout,
                                        smp=smp, memory_mb=memory_mb, scratch_fs=scratch_fs,
                                        env={REPORT_ENV: report}, stdout=out, stderr=out)
        except VMError as e:
            run.error = str(e)
        run.wall_s = round(time.monotonic() - t0, 1)
        run.host_load = tuple(round(x, 2) for x in os.getloadavg())
        if run.error is None and run.status not in OK_STATUSES:
            run.error = f"the command exited with status {run.status}: {_tail(os.path.join(out_dir, tag + '.out'))}"
        if os.path.exists(report):
            try:
                with open(report) as f:
                    # ab.json keeps the figures, not lostwrite's control sample (10,000 rows a run,
                    # rewritten after every run): the report file keeps it, and is the findings
                    # the trace is analysed with
                    wl = json.load(f)
                run.workload = {k: v for k, v in wl.items() if k != "control"} if isinstance(wl, dict) else wl
            except ValueError as e:
                run.error = run.error or f"unreadable workload report {report}: {e}"
        if mode == "traced" and run.error is None:
            run.trace = os.path.join(out_dir, tag + ".zt")
            try:
                run.figures = _analyse(run.trace, report if run.workload and "lost" in run.workload else None)
            except ZaptraceError as e:
                run.error = f"analysis of {run.trace}: {e}"
        runs.append(run)
        log(f"zaptrace ab: [{i}/{len(plan)}] {tag}: {_one_line(run)}")
        doc["runs"] = [asdict(r) for r in runs]
        doc["aggregate"] = aggregate(runs)
        _write(out_dir, doc)
        if len(runs) == 2 and all(r.error for r in runs):
            doc["stopped"] = "the first run failed on both kernels: nothing more was booted"
            log(f"zaptrace ab: {doc['stopped']}")
            break
    doc["finished"] = _now()
    _write(out_dir, doc)
    return doc


def _analyse(trace: str, findings: Optional[str]) -> Dict[str, Any]:
    from .analysis.report import analyse
    return trace_figures(analyse(trace, None, with_hits=False, findings=findings).summary)


def _one_line(run: Run) -> str:
    if run.error:
        return "FAILED: " + run.error
    parts = [f"status {run.status}, {run.wall_s:.0f} s, host load {run.host_load[0]:.1f}" if run.host_load
             else f"status {run.status}, {run.wall_s:.0f} s"]
    w = run.workload or {}
    if isinstance(w.get("lost"), list):
        parts.append(f"{len(w['lost'])} lost writes")
    if w.get("elapsed_s"):
        parts.append(f"{w['zaps'] / w['elapsed_s']:,.0f} zaps/s")
        if w.get("visits") is not None:
            parts.append(f"{w['visits'] / w['elapsed_s']:,.0f} visits/s")
    f = run.figures
    if f:
        fd = f["classes"].get(FILE_DIRTY, {})
        parts.append("dirty file: " + (", ".join(f"{p} {b['open']:,}/{b['paired']:,} open, {b['hits']:,} hits"
                                                 for p, b in fd.items()) or "none"))
        parts.append(f"{f['lost_events']} events lost")
    return "; ".join(parts)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            lines = [ln.strip() for ln in f.read()[-4000:].decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return "(no output)"
    return lines[-1] if lines else "(no output)"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write(out_dir: str, doc: Dict[str, Any]) -> None:
    tmp = os.path.join(out_dir, ".ab.json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "ab.json"))


def last_traces(doc: Dict[str, Any]) -> List[str]:
    """The last traced run's trace of A and of B (for `zaptrace compare`), where both exist."""
    out = []
    for side in SIDES:
        ts = [r["trace"] for r in doc["runs"] if r["side"] == side and r["mode"] == "traced" and r.get("trace")
              and not r.get("error")]
        if ts:
            out.append(ts[-1])
    return out if len(out) == 2 else []


def failed(doc: Dict[str, Any]) -> int:
    return sum(1 for r in doc["runs"] if r.get("error"))


def print_runs(doc: Dict[str, Any], stream=None) -> None:
    stream = stream or sys.stderr
    for r in doc["runs"]:
        if r.get("error"):
            print(f"zaptrace ab: {r['tag']} FAILED: {r['error']}", file=stream)

