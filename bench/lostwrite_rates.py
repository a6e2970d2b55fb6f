#!/usr/bin/env python3
"""Lost writes per minute and per 1,000 window hits, per kernel, mapping and guest mode.

Runs on the HOST: one guest boot per configuration, each running the
`lostwrite` detector for --seconds under `zaptrace record` (traced) or alone
(untraced), then joins the findings with the trace (`zaptrace report
--findings`) and prints one row per configuration:

    .venv/bin/python bench/lostwrite_rates.py --out out/lw \\
        --config 6.1:pte:multi:3:traced --config 7.2:pmd:multi:3:traced --seconds 300

A configuration is KERNEL:MAPPING:TCG:VCPUS:TRACED with MAPPING default|pte|pmd,
TCG single|multi and TRACED traced|untraced.  Every figure is what that one
run saw; nothing is averaged, and the guest mode is part of every row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdtable  # noqa: E402
from zaptrace.vocab import FILE_DIRTY  # noqa: E402
ZT = os.path.join(ROOT, ".venv", "bin", "zaptrace")


def parse(spec: str):
    try:
        kernel, mapping, tcg, vcpus, traced = spec.split(":")
        assert mapping in ("default", "pte", "pmd") and tcg in ("single", "multi")
        assert traced in ("traced", "untraced")
        return kernel, mapping, tcg, int(vcpus), traced == "traced"
    except (ValueError, AssertionError):
        raise SystemExit(f"lostwrite_rates: bad --config {spec!r} (KERNEL:MAPPING:TCG:VCPUS:TRACED)") from None


BURST_GAP_NS = 500_000_000


def bursts(lost: list) -> int:
    """Groups of lost values stored within BURST_GAP_NS of the previous one: the untraced stand-in
    for a window (a PMD window loses up to 512 pages in one go; a traced run counts the windows)."""
    starts = sorted(int(x["written_ns"][0]) for x in lost)
    return 1 + sum(1 for a, b in zip(starts, starts[1:]) if b - a > BURST_GAP_NS) if starts else 0


def run_one(out: str, kernel: str, mapping: str, tcg: str, vcpus: int, traced: bool, seconds: int,
            pages: int, burst: int) -> list:
    tag = f"{kernel}-{mapping}-{tcg}{vcpus}-{'traced' if traced else 'untraced'}"
    findings = f"lw-{tag}.json"
    work = (f"zaptrace workload run lostwrite --mapping {mapping} --pages {pages} --duration {seconds} "
            f"--burst {burst} --findings {findings}")
    cmd = f"zaptrace record -q -o lw-{tag}.zt -- {work}" if traced else work
    env = dict(os.environ, ZAPTRACE_VM_TCG=tcg)
    t0 = time.monotonic()
    print(f"lostwrite_rates: {tag} ...", file=sys.stderr, flush=True)
    p = subprocess.run([ZT, "vm", "run", "--kernel", kernel, "--smp", str(vcpus), "--timeout", str(seconds + 900),
                        "--", "sh", "-c", cmd + f" > lw-{tag}.out 2>&1; echo $? > lw-{tag}.status"], cwd=out, env=env)
    if p.returncode != 0:
        raise SystemExit(f"lostwrite_rates: the {tag} guest failed ({p.returncode})")
    status = open(os.path.join(out, f"lw-{tag}.status")).read().strip()
    if status not in ("0", "1"):
        raise SystemExit(f"lostwrite_rates: {tag}: exited {status}: "
                         + open(os.path.join(out, f"lw-{tag}.out")).read()[-800:])
    doc = json.load(open(os.path.join(out, findings)))
    lost = len(doc["lost"])
    minutes = doc["duration_s"] / 60
    hits = explained = "-"
    lost_events = "-"
    if traced:
        r = subprocess.run([ZT, "report", "--json", "--findings", os.path.join(out, findings),
                            os.path.join(out, f"lw-{tag}.zt")], stdout=subprocess.PIPE, text=True)
        s = json.loads(r.stdout)
        hits = s["classes"][FILE_DIRTY]["hits"]       # the windows a lost write needs
        lw = s["lost_writes"]
        explained = f"{lw['explained']}/{lost}" + (f" ({lw['windows']} windows)" if lw["explained"] else "")
        lost_events = s["lost_events"]
    # The first lost write's discovery, from the detector's start (findings without start_ns: older zaptrace).
    first = (f"{(min(x['found_ns'] for x in doc['lost']) - doc['start_ns']) / 1e9:.1f}"
             if doc["lost"] and "start_ns" in doc else "-")
    if doc["lost"]:
        lost_col = f"{lost} ({bursts(doc['lost'])} bursts)"
    else:
        lost_col = str(lost)
    per_k = "-" if not isinstance(hits, int) or not hits else f"{1000 * lost / hits:.2f}"
    print(f"lostwrite_rates: {tag}: {lost} lost in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return [kernel, mapping, f"TCG {tcg}, {vcpus} vCPUs", "traced" if traced else "untraced",
            f"{doc['duration_s']:.0f}", str(burst), f"{doc['visits']:,}", f"{doc['zaps']:,}", lost_col, first,
            f"{lost / minutes:.2f}", f"{hits:,}" if isinstance(hits, int) else hits, per_k, explained,
            str(lost_events)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", required=True, help="KERNEL:MAPPING:TCG:VCPUS:TRACED")
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--pages", type=int, default=1024)
    ap.add_argument("--burst", type=int, default=16, help="the detector's stores per page visit")
    ap.add_argument("--out", default="out/lw")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    out = os.path.abspath(a.out)
    header = ["kernel", "mapping", "guest", "zaptrace", "s", "burst", "page visits", "zaps", "lost writes", "first found, s",
              "lost/min", "dirty-file window hits", "lost per 1,000 hits", "explained", "events lost"]
    configs = [parse(c) for c in a.config]        # every spec checked before the first boot
    rows, failed = [], 0
    for c in configs:
        # One failed guest does not throw away the rows already measured: it becomes a row
        # of its own, and the table (and --json) is written after every configuration.
        try:
            rows.append(run_one(out, *c, a.seconds, a.pages, a.burst))
        except SystemExit as e:
            failed += 1
            print(e, file=sys.stderr, flush=True)
            kernel, mapping, tcg, vcpus, traced = c
            rows.append([kernel, mapping, f"TCG {tcg}, {vcpus} vCPUs", "traced" if traced else "untraced",
                         "failed: " + str(e).replace("|", "/")[-120:]] + ["-"] * (len(header) - 5))
        if a.json:
            mdtable.emit(header, rows, a.json, quiet=True)
    mdtable.emit(header, rows, a.json)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
