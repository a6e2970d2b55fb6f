#!/usr/bin/env python3
"""Single-threaded against multi-threaded TCG: what the guest mode does to the figures.

Runs on the HOST.  Boots the guest once per (round, mode), the modes
interleaved (single multi single multi ...), and in each boot records the
bundled `race` workload once; per boot it keeps the BPF compile time that
`record` printed, the boot's wall time, the dirty-file-page gap p50 and the
p50 of the window hits from `zaptrace report --json`, and the dirty-file gap split in two (from the gap
table): decrement to the covering flush's entry (the rest of the zap batch,
emulated page by page) and the covering `flush_tlb_mm_range` call itself (where
the wait for the other vCPUs' flush IPIs is):

    .venv/bin/python bench/guest_mode.py --kernel 6.1 --rounds 5
    .venv/bin/python bench/guest_mode.py --kernel 7.2 --rounds 5 --modes single:2,multi:3
    .venv/bin/python bench/guest_mode.py --out out/guest-mode --json out/guest-mode/r.json --reanalyse

Each mode is THREADING:VCPUS.  Printed per mode: median and spread (min-max)
over the rounds, and the ratio of medians against the first mode.  Nothing
is averaged across modes; every figure is from these boots, one after the
other on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdtable  # noqa: E402
from zaptrace.vocab import FILE_DIRTY  # noqa: E402

ZT = os.path.join(ROOT, ".venv", "bin", "zaptrace")

GUEST_SCRIPT = """
zaptrace record -o {trace} -- zaptrace workload run race --pages {pages} --iterations {iters} > {trace}.out 2>&1
echo $? > {trace}.status
"""


def one(out: str, kernel: str, tcg: str, vcpus: int, tag: str, pages: int, iters: int) -> dict:
    trace = f"race-{tag}.zt"
    env = dict(os.environ, ZAPTRACE_VM_TCG=tcg)
    t0 = time.monotonic()
    p = subprocess.run([ZT, "vm", "run", "--kernel", kernel, "--smp", str(vcpus), "--timeout", "1200", "--",
                        "sh", "-c", GUEST_SCRIPT.format(trace=trace, pages=pages, iters=iters)], cwd=out, env=env)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"guest_mode: the {tag} guest failed ({p.returncode})")
    text = open(os.path.join(out, trace + ".out")).read()
    if open(os.path.join(out, trace + ".status")).read().strip() != "0":
        raise SystemExit(f"guest_mode: {tag}: record failed: {text[-500:]}")
    m = re.search(r"compiled in ([0-9.]+) s", text)
    return dict(analyse(os.path.join(out, trace)), compile_s=float(m.group(1)) if m else None, wall_s=wall)


def analyse(path: str) -> dict:
    """The trace-derived figures of one boot."""
    rep = subprocess.run([ZT, "report", "--json", path], stdout=subprocess.PIPE, text=True)
    doc = json.loads(rep.stdout)
    fd = doc["classes"][FILE_DIRTY]
    to_enter, call, spacing = split_gap(path)
    return {"trace": os.path.basename(path), "gap_p50_us": fd["gap_ns"]["p50"] / 1000
            if fd["gap_ns"]["p50"] is not None else None, "to_flush_p50_us": to_enter, "flush_call_p50_us": call,
            "spacing_p50_us": spacing,
            "hits": fd["hits"], "decrements": fd["decrements"], "lost": doc["lost_events"] or 0,
            "machine": doc.get("machine")}


def split_gap(path: str):
    """p50 over paired dirty-file rows of decrement -> covering flush entry, p50 over the
    distinct covering flush calls of their duration (entry -> return), and p50 of the time
    between consecutive decrements of one task inside one zap (how fast the emulated zap
    loop goes), in µs."""
    from zaptrace import analysis
    g = analysis.gap_table(analysis.load(path))
    z = g[g["zap_ts"].notna()].sort_values(["tid", "ts"], kind="stable")
    same = (z["tid"].to_numpy()[1:] == z["tid"].to_numpy()[:-1]) & \
        (z["zap_ts"].to_numpy()[1:] == z["zap_ts"].to_numpy()[:-1])
    steps = (z["ts"].to_numpy()[1:] - z["ts"].to_numpy()[:-1])[same]
    spacing = float(np.median(steps)) / 1000 if len(steps) else None
    g = g[(g["class"] == FILE_DIRTY) & g["paired"] & g["flush_enter_ts"].notna()]
    if g.empty:
        return None, None, spacing
    to_enter = (g["flush_enter_ts"] - g["ts"]).astype("int64")
    calls = g.drop_duplicates(["tid", "flush_enter_ts"])
    dur = (calls["flush_done_ts"] - calls["flush_enter_ts"]).dropna().astype("int64")
    return float(to_enter.median()) / 1000, float(dur.median()) / 1000 if len(dur) else None, spacing


def spread(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.median(xs):,.1f} ({min(xs):,.1f} to {max(xs):,.1f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="6.1")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default="single:2,multi:3", help="THREADING:VCPUS,... (default: %(default)s)")
    ap.add_argument("--pages", type=int, default=256)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--out", default="out/guest-mode")
    ap.add_argument("--json", help="also write every boot's figures as JSON here")
    ap.add_argument("--reanalyse", action="store_true",
                    help="boot nothing: re-read the traces of an earlier run (its --json and --out) and print the table")
    a = ap.parse_args()
    modes = []
    for m in a.modes.split(","):
        tcg, _, n = m.partition(":")
        if tcg not in ("single", "multi") or not n.isdigit():
            raise SystemExit(f"guest_mode: a mode is THREADING:VCPUS (single:2, multi:3), not {m!r}")
        modes.append((tcg, int(n)))
    os.makedirs(a.out, exist_ok=True)
    out = os.path.abspath(a.out)
    runs = {m: [] for m in modes}
    if a.reanalyse:
        if not a.json or not os.path.exists(a.json):
            raise SystemExit("guest_mode: --reanalyse needs the --json file of the earlier run")
        old = json.load(open(a.json))
        modes = [(k.split(":")[0], int(k.split(":")[1])) for k in old]
        runs = {m: [] for m in modes}
        for k, rs in old.items():
            m = (k.split(":")[0], int(k.split(":")[1]))
            for i, x in enumerate(rs):
                tag = f"{a.kernel}-{m[0]}{m[1]}-{i}"
                path = os.path.join(out, x.get("trace") or f"race-{tag}.zt")
                print(f"guest_mode: re-reading {path} ...", file=sys.stderr, flush=True)
                runs[m].append(dict(x, **analyse(path)))
        a.rounds = max(len(v) for v in runs.values())
    for r in range(0 if a.reanalyse else a.rounds):
        for tcg, n in modes:
            tag = f"{a.kernel}-{tcg}{n}-{r}"
            print(f"guest_mode: round {r + 1}/{a.rounds}: {tcg}-threaded, {n} vCPUs ...", file=sys.stderr, flush=True)
            res = one(out, a.kernel, tcg, n, tag, a.pages, a.iterations)
            print(f"guest_mode:   {json.dumps({k: v for k, v in res.items() if k != 'machine'})}",
                  file=sys.stderr, flush=True)
            runs[(tcg, n)].append(res)
    base = modes[0]

    def ratio(m, key):
        b = statistics.median([x[key] for x in runs[base] if x[key] is not None] or [float("nan")])
        v = statistics.median([x[key] for x in runs[m] if x[key] is not None] or [float("nan")])
        return f"{v / b:.2f}x" if b else "-"

    header = ["mode", "BPF compile s", "boot wall s", "dirty-file gap p50 µs", "gap ratio",
              "decrement to flush entry p50 µs", "flush call p50 µs", "decrement spacing p50 µs", "hits", "decrements", "events lost"]
    rows = []
    for m in modes:
        rs = runs[m]
        rows.append([f"{m[0]}-threaded TCG, {m[1]} vCPUs", spread([x["compile_s"] for x in rs]),
                     spread([x["wall_s"] for x in rs]), spread([x["gap_p50_us"] for x in rs]),
                     ratio(m, "gap_p50_us"), spread([x.get("to_flush_p50_us") for x in rs]),
                     spread([x.get("flush_call_p50_us") for x in rs]), spread([x.get("spacing_p50_us") for x in rs]),
                     spread([x["hits"] for x in rs]), spread([x["decrements"] for x in rs]),
                     spread([x["lost"] for x in rs])])
    mach = (runs[modes[-1]][0]["machine"] or {}).get("zaptrace_guest") or {}
    print(f"kernel {a.kernel}; race --pages {a.pages} --iterations {a.iterations}; {a.rounds} rounds, modes "
          f"interleaved; median (min to max); QEMU: {mach.get('qemu', '?')}; host CPUs: {mach.get('host_cpus', '?')}")
    mdtable.emit(header, rows, None)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{t}:{n}": runs[(t, n)] for t, n in modes}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
