"""Benchmark of the analysis on a large synthetic trace (default 10 million events).

    .venv/bin/python bench/analysis_bench.py                  # 10M events, trace cached in /tmp
    .venv/bin/python bench/analysis_bench.py -n 2000000 --style delayed
    .venv/bin/python bench/analysis_bench.py --generate-only out.zt -n 50000 --kernel 6.12.0-synthetic

The trace is generated vectorised with numpy: several tasks of two
processes on their own CPUs zap batches of 1..128 pages (anon, clean file or
dirty file pages, each dirty page preceded by its PTE-dirty marker), each
zap ending in tlb_flush_mmu { flush_tlb_mm_range } (style ``immediate``,
5.10/6.1) or with dirty pages decremented in tlb_flush_rmaps after the flush
(style ``delayed``, 6.2+); kworkers run folio_mkclean on zapped dirty pages,
some inside the open windows; kswapd removes a few pages outside any zap.
Records reach the file slightly out of timestamp order, in 64 Ki-record
chunks, as from a per-CPU ring buffer.

Timing (one process, best of --repeat runs, default 1, warm page cache): the column load
(``tracefile.read``), ``analysis.load`` (read + sort into a DataFrame),
``gap_table``, ``summarize``, and the full report (``report.analyse`` +
``render_text``: read, sort, gap table, hit table, summary, text), each also
as a ratio to the column load.  Peak memory: the peak RSS (VmHWM) of a
separate child process per phase that runs the pipeline up to and including
that phase (so each figure includes the phases before it and the imports).
The in-memory phases run under the heap policy of `zaptrace report`
(zaptrace/heap.py: freed memory kept in the process, numpy's huge-page advice
off; ``--heap system`` for glibc's and numpy's defaults), the bounded row, in a
child, under glibc's default, as the CLI runs it.  ``--heap-rounds N`` instead
times `zaptrace report --json` under glibc's default, the kept heap with
numpy's huge-page advice, and the CLI's policy, interleaved, N rounds, and
``--engine-rounds N`` with the numpy engine and the compiled kernels
(analysis/kernels.py); ``--engine numpy`` runs the phases in numpy.  ``--floor-rounds N`` times, each in a fresh process,
interleaved, the column load, a *floor* (the column load, the timestamp sort
and one write of each column of the trace's gap table: a lower bound on any
report that builds the table in memory) and the full report, each as a ratio
to the column load, first run and run again in the same process:

    .venv/bin/python bench/analysis_bench.py -n 10000000 --heap-rounds 5
    .venv/bin/python bench/analysis_bench.py -n 10000000 --engine-rounds 5
    .venv/bin/python bench/analysis_bench.py -n 10000000 --floor-rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from zaptrace import heap  # noqa: E402
from zaptrace.heap import keep_freed_memory  # noqa: E402
from zaptrace.analysis import kernels  # noqa: E402
from zaptrace.layout import layout  # noqa: E402
from zaptrace.tracefile import TraceWriter  # noqa: E402
from zaptrace.vocab import DELAYED, IMMEDIATE  # noqa: E402

VMEMMAP = 0xFFFFEA0000000000
CHUNK = 65536
STEP = 200          # ns between two pages of a zap


def _per_zap_rank(mask: np.ndarray, zap_of: np.ndarray, first_of_zap: np.ndarray) -> np.ndarray:
    """0-based rank of each True element of `mask` among the True elements of its zap."""
    c = np.cumsum(mask)
    before = c[first_of_zap] - mask[first_of_zap]
    return c - 1 - before[zap_of]


def generate(path: str, n_events: int = 10_000_000, seed: int = 1, style: str = IMMEDIATE,
             kernel: Optional[str] = None, tasks: int = 4, cpus: int = 4) -> int:
    """Write a synthetic trace of exactly n_events records; returns n_events."""
    L = layout()
    K = {k.lower(): v for k, v in L.kinds.items()}
    F = {k.lower(): v for k, v in L.flags.items()}
    rng = np.random.default_rng(seed)
    delayed = style == DELAYED

    n_pages_mean = 64.5
    zaps = int(n_events / (8 + n_pages_mean * 1.3)) + 64
    zaps -= zaps % tasks
    task = np.arange(zaps) % tasks
    tid = (1000 + task).astype(np.uint32)
    tgid = np.where(task < tasks // 2, 1000, 1000 + tasks // 2).astype(np.uint32)
    mm = np.where(tgid == 1000, 0xFFFF888000100000, 0xFFFF888000200000).astype(np.uint64)
    cpu = (task % cpus).astype(np.uint16)
    npg = rng.integers(1, 129, zaps)
    anon = rng.random(zaps) < 0.4

    # pages, one row per decremented page
    P = int(npg.sum())
    zap_of = np.repeat(np.arange(zaps), npg)
    first = np.cumsum(npg) - npg
    j = np.arange(P) - first[zap_of]
    dirty = ~anon[zap_of] & (rng.random(P) < 0.5)
    late = dirty & delayed                                  # decremented in tlb_flush_rmaps
    n_late = np.bincount(zap_of, weights=late, minlength=zaps).astype(np.int64)
    # page pools, one for anon and one for file pages: per task in the delayed style (two tasks
    # never zap the same page at once, so a mkclean held by one zap's PTE lock never lands in
    # another zap's closed window), per process in the immediate style (every window is open
    # there; kept so that the published speed figures' trace stays the same bytes)
    if tasks > 10:
        raise ValueError("at most 10 tasks (the page pools would overlap)")
    pool = task if delayed else (tgid - 1000)
    pfn = (0x40000 + pool[zap_of].astype(np.int64) * 100_000 + anon[zap_of] * 1_000_000
           + (zap_of * 37 + j) % 50_000).astype(np.uint64)

    # per-zap timeline (offsets from zap entry, ns)
    flush_dur = rng.lognormal(np.log(2000), 0.5, zaps).astype(np.int64) + 200
    t_tlb = 100 + npg * STEP + 100
    t_fr_exit = t_tlb + 50 + flush_dur
    t_rmaps_enter = t_fr_exit + 20
    t_rmaps_exit = t_rmaps_enter + 50 + n_late * 100
    t_tlb_exit = np.where(n_late > 0, t_rmaps_exit, t_fr_exit) + 50
    dur = t_tlb_exit + 100
    idle = rng.exponential(5000, zaps).astype(np.int64)
    per_task = (dur + idle).reshape(-1, tasks)
    start = (np.cumsum(per_task, axis=0) - per_task).reshape(-1) + 1_000_000 + task * 777

    rows = []

    def add(ts, kind, t_id, t_gid, m, pg=0, fo=None, pf=0, nr=0, c=0, flags=0):
        n = len(ts)
        a = np.zeros(n, dtype=L.dtype)
        a["ts"], a["kind"], a["tid"], a["tgid"], a["mm"] = ts, K[kind], t_id, t_gid, m
        a["page"], a["folio"] = pg, pg if fo is None else fo
        a["pfn"], a["nr"], a["cpu"], a["flags"] = pf, nr, c, flags
        rows.append(a)

    z = dict(t_id=tid, t_gid=tgid, m=mm, c=cpu)
    add(start, "zap_enter", pg=0x7F0000000000, fo=0x7F0000100000, **z)
    add(start + dur - 50, "zap_exit", **z)
    add(start + t_tlb, "tlb_flush_enter", **z)
    add(start + t_tlb + 50, "flush_range_enter", pg=0x7F0000000000, fo=0x7F0000100000, **z)
    add(start + t_fr_exit, "flush_range_exit", **z)
    add(start + t_tlb_exit, "tlb_flush_exit", **z)
    has_late = n_late > 0
    zl = {k: v[has_late] for k, v in z.items()}
    add((start + t_rmaps_enter)[has_late], "rmaps_enter", **zl)
    add((start + t_rmaps_exit)[has_late], "rmaps_exit", **zl)

    page = (VMEMMAP + pfn * 64).astype(np.uint64)
    zp = {k: v[zap_of] for k, v in z.items()}
    pg_ts = start[zap_of] + 100 + j * STEP
    rank = _per_zap_rank(late, zap_of, first)
    rmap_ts = np.where(late, start[zap_of] + t_rmaps_enter[zap_of] + 50 + rank * 100, pg_ts + 50)
    fl = (np.where(anon[zap_of], F["anon"], 0) | np.where(dirty, F["pgdirty"], 0) | F["in_zap"]
          | np.where(late, F["in_rmaps"], 0)).astype(np.uint8)
    add(rmap_ts, "rmap", pg=page, pf=pfn, nr=1, flags=fl, **zp)
    zd = {k: v[dirty] for k, v in zp.items()}
    add(pg_ts[dirty], "dirty", pg=page[dirty], pf=pfn[dirty], flags=F["in_zap"] | F["pgdirty"], **zd)

    # kworkers clean ~1/4 of the dirty pages, around the time they are zapped; in the delayed
    # style also a few clean file pages (dirtied by write(), not through the mapping), so that
    # its harmless open windows have hits (the immediate style draws as it always did)
    extra = (~anon[zap_of] & ~dirty & (rng.random(P) < 0.1)) if delayed else np.zeros(P, dtype=bool)
    cand = np.flatnonzero(dirty | extra)
    mk = rng.choice(cand, size=len(cand) // 4, replace=False) if len(cand) else cand
    gap = (start + t_fr_exit)[zap_of[mk]] - rmap_ts[mk]
    mk_ts = rmap_ts[mk] + (rng.random(len(mk)) * (np.abs(gap) + 6000) - 3000).astype(np.int64)
    mk = mk[np.argsort(mk_ts, kind="stable")]
    mk_ts = np.sort(mk_ts)
    mk_tid = (50 + np.arange(len(mk)) % 64).astype(np.uint32)     # kworkers take turns: none overlaps itself
    mk_cpu = rng.integers(0, cpus, len(mk)).astype(np.uint16)
    mk_end = mk_ts + rng.integers(1000, 5000, len(mk))
    # a call that begins while the zap holds the page's PTE lock (from the clear to its
    # tlb_flush_rmaps) waits for that lock, as on the kernel: it returns after the zap's flush
    zm = zap_of[mk]
    held = late[mk] & (mk_ts >= pg_ts[mk]) & (mk_ts < (start + t_tlb_exit)[zm])
    mk_end = np.where(held, np.maximum(mk_end, (start + t_tlb_exit)[zm] + 100), mk_end)
    # folio_mkclean runs under the folio lock: drop a call that would begin before an
    # earlier call on the same page returned (the analysis relies on it, as on the kernel)
    by_page = np.lexsort((mk_ts, page[mk]))
    grp = np.unique(page[mk][by_page], return_inverse=True)[1].astype(np.int64)
    span = int(mk_end.max()) + 1 if len(mk) else 1
    ran = np.maximum.accumulate(grp * span + mk_end[by_page]) - grp * span     # latest return so far, per page
    prev = np.concatenate([[-1], ran[:-1]])
    prev[np.flatnonzero(np.diff(grp, prepend=-1))] = -1                       # a page's first call
    ok = np.ones(len(mk), dtype=bool)
    ok[by_page] = mk_ts[by_page] >= prev
    mk, mk_ts, mk_end, mk_tid, mk_cpu = mk[ok], mk_ts[ok], mk_end[ok], mk_tid[ok], mk_cpu[ok]
    mkz = dict(t_id=mk_tid, t_gid=mk_tid, m=0, pg=page[mk], pf=pfn[mk], c=mk_cpu)
    add(mk_ts, "mkclean_enter", **mkz)
    add(mk_end, "mkclean_exit", nr=1, **mkz)

    # kswapd: other-path removals of some pages, outside any zap
    ks = rng.choice(P, size=P // 100, replace=False)
    add(rmap_ts[ks] + 10_000_000, "rmap", t_id=np.uint32(30), t_gid=np.uint32(30), m=mm[zap_of[ks]],
        pg=page[ks], pf=pfn[ks], nr=1, c=np.uint16(0), flags=np.where(anon[zap_of[ks]], F["anon"], 0))

    ev = np.concatenate(rows)
    rows.clear()                 # free the per-kind arrays
    ev = ev[np.argsort(ev["ts"], kind="stable")][:n_events]
    if len(ev) < n_events:
        raise SystemExit(f"generated only {len(ev)} events; raise the zap estimate")
    # per-CPU ring-buffer delivery: a little out of timestamp order
    ev = ev[np.argsort(ev["ts"] + rng.integers(0, 20_000, len(ev)).astype(np.uint64), kind="stable")]

    head = dict(L.head_fields(), format="zaptrace", command=["synthetic-bench", style],
                kernel={"release": kernel or ("6.12.0-synthetic" if delayed else "6.1.0-synthetic")},
                probes=[{"event": e, "attach": [e], "required": True}
                        for e in ("zap", "rmap", "dirty", "tlb_flush", "flush_range", "flush_rmaps", "mkclean")],
                start_ns=int(ev["ts"].min()), bench={"n": n_events, "seed": seed, "style": style})
    w = TraceWriter(path, head)
    for i in range(0, len(ev), CHUNK):
        w.events(ev[i:i + CHUNK])
    counts = np.bincount(ev["kind"], minlength=L.nkinds)
    gen = {name.lower(): int(counts[code]) for name, code in L.kinds.items()}
    w.json(b"STAT", {"time_ns": int(ev["ts"].max()), "lost": {}, "generated": gen, "delivered": gen})
    w.json(b"END ", {"generated": gen, "lost": {k: 0 for k in gen}, "delivered": gen,
                     "duration_s": float(ev["ts"].max() - ev["ts"].min()) / 1e9})
    w.close()
    return n_events


# --------------------------------------------------------------- phases --

PHASES = ("import", "read", "load", "gap_table", "summarize", "report", "bounded")
#: --max-memory of the bounded row (analysis.stream), bytes; set by main()
BOUNDED_MEMORY = 1 << 30


def run_phase(path: str, upto: str) -> Dict[str, float]:
    """Run the pipeline up to `upto`; wall time of each phase run (s)."""
    from zaptrace import analysis, tracefile
    from zaptrace.analysis import report
    from zaptrace.analysis.gaps import gap_table
    from zaptrace.analysis.summary import summarize

    out: Dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        r = fn()
        out[name] = time.perf_counter() - t
        return r

    if upto == "import":
        return out
    if upto == "read":
        timed("read", lambda: tracefile.read(path))
        return out
    if upto == "report":
        timed("report", lambda: report.render_text(report.analyse(path)))
        return out
    if upto == "floor":
        timed("floor", lambda: floor(path, FLOOR_SCHEMA))
        return out
    if upto == "bounded":
        timed("bounded", lambda: report.render_text(report.analyse(path, max_memory=BOUNDED_MEMORY)))
        return out
    trace = timed("load", lambda: analysis.load(path))
    if upto == "load":
        return out
    gaps = timed("gap_table", lambda: gap_table(trace))
    if upto == "gap_table":
        return out
    timed("summarize", lambda: summarize(trace, gaps))
    return out


#: --floor-rounds: (rows, [(column, numpy dtype str)]) of the gap table of the trace; set by main()
FLOOR_SCHEMA: Optional[Tuple[int, List[Tuple[str, str]]]] = None


def table_schema(path: str) -> Tuple[int, List[Tuple[str, str]]]:
    """Rows and column arrays of the trace's gap table, as ``gap_table`` builds it: a
    nullable column is its int64 values and a boolean mask, a categorical its codes."""
    import pandas as pd
    from zaptrace import analysis
    from zaptrace.analysis.gaps import gap_table
    g = gap_table(analysis.load(path))
    cols: List[Tuple[str, str]] = []
    for c in g.columns:
        a = g[c].array
        if isinstance(a, pd.arrays.IntegerArray):
            cols += [(c, a._data.dtype.str), (c + " (mask)", "|b1")]
        elif isinstance(a, pd.Categorical):
            cols.append((c, a.codes.dtype.str))
        else:
            cols.append((c, g[c].to_numpy().dtype.str))
    return len(g), cols


def floor(path: str, schema) -> None:
    """A lower bound on any report that builds the gap table in memory: the column load, the
    timestamp sort of the events, and one write of each column of the table (its rows and
    dtypes from ``table_schema``): no selection, pairing, hit search or summary."""
    from zaptrace import tracefile
    raw = tracefile.read(path)
    order = np.argsort(raw.events["ts"], kind="stable")
    del order
    rows, cols = schema
    kept = []
    for _, dt in cols:
        a = np.empty(rows, dtype=np.dtype(dt))
        a.fill(1)
        kept.append(a)


def floor_rounds(path: str, rounds: int) -> None:
    """The column load, the floor (``floor``) and the full report, each in a fresh process
    under the CLI's heap policy, interleaved for ``rounds`` rounds: in-process wall times,
    median (min-max), and each as a ratio to the column load of its round."""
    global FLOOR_SCHEMA
    FLOOR_SCHEMA = table_schema(path)
    os.environ["ZAPTRACE_BENCH_FLOOR"] = json.dumps(FLOOR_SCHEMA)
    os.environ["ZAPTRACE_BENCH_WARM"] = "1"
    rows, cols = FLOOR_SCHEMA
    size = sum(np.dtype(d).itemsize for _, d in cols) * rows
    print(f"{path}: {os.path.getsize(path) / 2**20:.0f} MiB; gap table: {rows:,} rows, {len(cols)} column "
          f"arrays, {size / 2**20:.0f} MiB; each child under the CLI's heap policy (zaptrace/heap.py); "
          f"gap pipeline: {kernels.status()}")
    names = ("read", "floor", "report")
    runs: Dict[str, Dict[str, List[float]]] = {w: {ph: [] for ph in names} for w in ("fresh", "warm")}
    for r in range(rounds):
        for ph in names:
            got = run_child(path, ph, "kept")
            runs["fresh"][ph].append(got["times"][ph])
            runs["warm"][ph].append(got["warm"][ph])
        done = [f"{ph} {runs['fresh'][ph][-1]:.2f} s (again {runs['warm'][ph][-1]:.2f})" for ph in names]
        print(f"  [round {r + 1}: " + ", ".join(done) + "]", flush=True)
    labels = {"read": "tracefile.read (column load)",
              "floor": "floor: column load + timestamp sort + one write of the table",
              "report": "full report (analyse+text)"}
    for w, what in (("fresh", "the first run in a fresh process (what `zaptrace report` does)"),
                    ("warm", "the same phase run again in that process, its memory already faulted in")):
        t = runs[w]
        ratio = {ph: [a / b for a, b in zip(t[ph], t["read"])] for ph in names}
        print(f"\n{rounds} interleaved rounds, {what}; median (min-max):")
        for ph in names:
            x = ratio[ph]
            print(f"{ph:<7} {np.median(t[ph]):6.2f} s ({min(t[ph]):.2f}-{max(t[ph]):.2f})   x read "
                  f"{np.median(x):5.2f} ({min(x):.2f}-{max(x):.2f})  {labels[ph]}")
        print(f"target: report <= 3.0 x read; the floor leaves {3.0 - np.median(ratio['floor']):.2f} x read "
              "(median) for everything else")


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM of /proc/self/status (ru_maxrss would include the parent's,
    inherited across vfork+exec); ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(path: str, upto: str, mem: int) -> None:
    global BOUNDED_MEMORY, FLOOR_SCHEMA
    BOUNDED_MEMORY = mem
    if upto == "floor":
        FLOOR_SCHEMA = json.loads(os.environ["ZAPTRACE_BENCH_FLOOR"])
    if upto != "bounded":                   # as the CLI: the heap policy of the in-memory path only
        keep_freed_memory()
    t = run_phase(path, upto)
    peak = peak_rss_mib()
    # ZAPTRACE_BENCH_WARM: the phase once more in the same process, its memory already faulted in
    warm = run_phase(path, upto) if os.environ.get("ZAPTRACE_BENCH_WARM") else None
    print(json.dumps({"times": t, "peak_rss_mib": peak, "warm": warm}))


def run_child(path: str, upto: str, heap: str) -> Dict[str, Any]:
    """``child`` in a fresh process (ZAPTRACE_HEAP=``heap``): its phase times and peak RSS."""
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", path, upto, str(BOUNDED_MEMORY)],
                       capture_output=True, text=True, check=True, env=dict(os.environ, ZAPTRACE_HEAP=heap))
    return json.loads(p.stdout.strip().splitlines()[-1])


def _report_child(path: str, env: Dict[str, str]):
    """``zaptrace report --json -q`` of ``path`` in a child with ``env`` added: (stdout, wall s,
    user s, system s, peak RSS MiB), the CPU times and the peak of that child alone (wait4)."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "zaptrace", "report", path, "--json", "-q"], stdout=out,
                             cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, **env))
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            raise SystemExit(f"zaptrace report ({env}) exited {p.returncode}")
        out.seek(0)
        return out.read().decode(), wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss / 1024.0


#: --heap-rounds: the heap policies (zaptrace/heap.py); --engine-rounds: the gap pipeline's
#: engines (analysis/kernels.py).  (name, label, environment of the child)
HEAP_VARIANTS = (("system", "glibc default (ZAPTRACE_HEAP=system)", {heap.ENV: "system"}),
                 ("kept+thp", "kept, numpy's THP advice on", {heap.ENV: "kept", heap.NUMPY_THP_ENV: "1"}),
                 ("kept", "freed memory kept, no THP advice (the CLI's)", {heap.ENV: "kept"}))
ENGINE_VARIANTS = (("numpy", "numpy (ZAPTRACE_KERNELS=numpy)", {"ZAPTRACE_KERNELS": "numpy"}),
                   ("c", "compiled kernels (the default)", {"ZAPTRACE_KERNELS": "c"}))


def interleaved_rounds(path: str, rounds: int, variants) -> None:
    """``zaptrace report --json`` of ``path`` under each of ``variants``, interleaved A B A B ...
    for ``rounds`` rounds: wall, user and system CPU, peak RSS per variant (median, min-max),
    and whether the outputs are identical."""
    runs: Dict[str, list] = {v: [] for v, _, _ in variants}
    outs: Dict[str, str] = {}
    for r in range(rounds):
        for v, _, env in variants:
            text, *fig = _report_child(path, env)
            runs[v].append(fig)
            outs.setdefault(v, text)
            if text != outs[v]:
                raise SystemExit(f"round {r + 1}: zaptrace report --json ({v}) differs from its first run")
            print(f"  [round {r + 1} {v}: wall {fig[0]:.2f} s, user {fig[1]:.2f} s, system {fig[2]:.2f} s, "
                  f"peak RSS {fig[3]:.0f} MiB]", flush=True)
    print(f"\nzaptrace report --json of {path}, {rounds} interleaved rounds, median (min-max):")
    print(f"{'variant':<38} {'wall s':>17} {'user s':>17} {'system s':>17} {'peak RSS MiB':>17}")
    med = {}
    for v, label, _ in variants:
        cols = list(zip(*runs[v]))
        med[v] = [float(np.median(c)) for c in cols]
        cells = [f"{np.median(c):.2f} ({min(c):.2f}-{max(c):.2f})" for c in cols[:3]]
        cells.append(f"{np.median(cols[3]):.0f} ({min(cols[3]):.0f}-{max(cols[3]):.0f})")
        print(f"{label:<38} " + " ".join(f"{c:>17}" for c in cells))
    (a, *_), (b, *_) = variants[0], variants[-1]
    same = all(o == outs[a] for o in outs.values())
    print(f"{b} / {a}: wall {med[b][0] / med[a][0]:.2f}x, user CPU {med[b][1] / max(med[a][1], 1e-9):.2f}x, "
          f"system CPU {med[b][2] / max(med[a][2], 1e-9):.2f}x, peak RSS {med[b][3] / med[a][3]:.2f}x; "
          f"outputs identical: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--events", type=int, default=10_000_000)
    ap.add_argument("--trace", default=None, help="trace file (default /tmp/zaptrace-bench-<n>-<style>.zt)")
    ap.add_argument("--style", choices=(IMMEDIATE, DELAYED), default=IMMEDIATE)
    ap.add_argument("--kernel", default=None, help="kernel release written in the header")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--regenerate", action="store_true", help="regenerate even if the trace exists")
    ap.add_argument("--generate-only", metavar="OUT", help="write the trace to OUT and exit")
    ap.add_argument("--repeat", type=int, default=1, help="time each phase this many times, keep the best")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-phase memory children")
    ap.add_argument("--max-memory", default="1G", help="--max-memory of the bounded row (default 1G)")
    ap.add_argument("--phases", default=",".join(PHASES), help="comma-separated phases to run (default: all; read, the base of the "
                         "ratios, always runs)")
    ap.add_argument("--heap", choices=("kept", "system"), default="kept",
                    help="heap policy of the in-memory phases: kept (what zaptrace report does, "
                         "zaptrace/heap.py) or system (glibc's default)")
    ap.add_argument("--heap-rounds", type=int, default=0, metavar="N",
                    help="instead of the phases: zaptrace report --json under glibc's default heap, the kept "
                         "heap with numpy's THP advice, and the CLI's policy (kept, no THP advice), "
                         "interleaved, N rounds")
    ap.add_argument("--engine", choices=kernels.ENGINES, default="c",
                    help="the gap pipeline's engine (ZAPTRACE_KERNELS): c, the compiled kernels (the default), "
                         "or numpy")
    ap.add_argument("--engine-rounds", type=int, default=0, metavar="N",
                    help="instead of the phases: zaptrace report --json with the numpy engine and with the "
                         "compiled kernels (analysis/kernels.py), interleaved, N rounds")
    ap.add_argument("--floor-rounds", type=int, default=0, metavar="N",
                    help="instead of the phases: the column load, a floor (column load + timestamp sort + one "
                         "write of the gap table's columns) and the full report, each in a fresh process, "
                         "interleaved, N rounds")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "PHASE", "MEM"), help=argparse.SUPPRESS)
    o = ap.parse_args()
    if o.child:
        child(o.child[0], o.child[1], int(o.child[2]))
        return
    global BOUNDED_MEMORY
    from zaptrace.analysis.report import parse_size
    BOUNDED_MEMORY = parse_size(o.max_memory)
    asked = [p.strip() for p in o.phases.split(",") if p.strip()]
    unknown = [p for p in asked if p not in PHASES]
    if unknown:
        ap.error(f"unknown phase {', '.join(unknown)} (phases: {', '.join(PHASES)})")
    # the column load is the base of every ratio: always timed
    phases = [p for p in PHASES if p in asked or p == "read"]
    if o.generate_only:
        generate(o.generate_only, o.events, o.seed, o.style, o.kernel)
        print(f"wrote {o.events:,} events to {o.generate_only}")
        return
    path = o.trace or f"/tmp/zaptrace-bench-{o.events}-{o.style}.zt"
    if o.regenerate or not os.path.exists(path):
        t = time.perf_counter()
        generate(path, o.events, o.seed, o.style, o.kernel)
        print(f"generated {o.events:,} events -> {path} ({os.path.getsize(path) / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t:.1f} s")
    if o.floor_rounds:
        floor_rounds(path, o.floor_rounds)
        return
    if o.heap_rounds or o.engine_rounds:
        interleaved_rounds(path, o.heap_rounds or o.engine_rounds,
                           HEAP_VARIANTS if o.heap_rounds else ENGINE_VARIANTS)
        return
    os.environ[heap.ENV] = o.heap           # for this process and the memory children
    os.environ[kernels.ENV] = o.engine
    keep_freed_memory()

    times: Dict[str, float] = {}
    for _ in range(o.repeat):
        for upto in [p for p in ("read", "summarize", "report", "bounded")
                     if p in phases or (p == "summarize" and {"load", "gap_table"} & set(phases))]:
            # the bounded path in a child of its own: the CLI never applies the heap policy there
            got = run_child(path, upto, "system")["times"] if upto == "bounded" else run_phase(path, upto)
            for ph, t in got.items():
                times[ph] = min(t, times.get(ph, t))
    rss: Dict[str, float] = {}
    if not o.no_memory:
        for ph in phases:
            rss[ph] = run_child(path, ph, o.heap)["peak_rss_mib"]

    from zaptrace.analysis import report
    same = None
    if "report" in phases and "bounded" in phases:
        # the --json of both paths on this file, each in a child (so that neither holds the other's memory)
        outs = []
        for mem in ([], ["--max-memory", str(BOUNDED_MEMORY)]):
            p = subprocess.run([sys.executable, "-m", "zaptrace", "report", path, "--json", "-q"] + mem,
                               capture_output=True, text=True, check=True, cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=ROOT))
            outs.append(p.stdout)
        same = outs[0] == outs[1]
        n_rows = sum(b["decrements"] for b in json.loads(outs[0])["classes"].values()) \
            + json.loads(outs[0])["other_path"]["count"]
    else:
        summ = report.analyse(path, max_memory=BOUNDED_MEMORY, with_hits=False).summary
        n_rows = sum(b["decrements"] for b in summ["classes"].values()) + summ["other_path"]["count"]
    base = times["read"]
    size = os.path.getsize(path)
    print(f"\ntrace: {path}: {o.events:,} events ({size / 2**20:.0f} MiB), "
          f"{n_rows:,} gap-table rows; python {sys.version.split()[0]}, "
          f"pandas {__import__('pandas').__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs; "
          f"{heap.policy()} (bounded row: glibc's default, as the CLI); gap pipeline: {kernels.status()}")
    print(f"{'phase':<12} {'wall s':>8} {'x read':>8} {'peak RSS MiB':>12}  (VmHWM of a child that runs up to this phase)")
    labels = {"import": "imports only", "read": "tracefile.read (column load)", "load": "analysis.load",
              "gap_table": "gap_table", "summarize": "summarize", "report": "full report (analyse+text)",
              "bounded": f"report --max-memory {o.max_memory} (analysis.stream)"}
    for ph in PHASES:
        t = times.get(ph)
        r = rss.get(ph)
        print(f"{ph:<12} {'-' if t is None else f'{t:8.2f}':>8} {'-' if t is None else f'{t / base:8.1f}':>8} "
              f"{'-' if r is None else f'{r:.0f}':>12}  {labels[ph]}")
    for ph in ("report", "bounded"):
        if ph in times or ph in rss:
            t, r = times.get(ph), rss.get(ph)
            print(f"{ph}: report/load {'-' if t is None else f'{t / base:.2f}'} (target <= 3.0), peak RSS/trace bytes "
                  f"{'-' if r is None else f'{r * 2**20 / size:.2f}'} (target <= 3.0)"
                  + (f", peak RSS {r / 1024:.2f} GiB" if r is not None else ""))
    if same is not None:
        print(f"--json in memory == --json --max-memory {o.max_memory}: {same}")
    print(f"\nreproduce: .venv/bin/python bench/analysis_bench.py -n {o.events} --style {o.style} "
          f"--seed {o.seed} --repeat {o.repeat} --max-memory {o.max_memory}"
          + (" --heap system" if o.heap == "system" else "") + (" --engine numpy" if o.engine == "numpy" else "")
          + (f" --trace {o.trace}" if o.trace else "") + (f" --phases {o.phases}" if o.phases != ",".join(PHASES) else ""))


if __name__ == "__main__":
    main()
