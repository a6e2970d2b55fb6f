#!/usr/bin/env python3
"""The observer effect: a workload's own throughput traced over untraced, boots interleaved.

Runs on the HOST.  Each round boots one guest per variant, in the same order every round
(untraced first), each running the same workload; a variant is a way to run it: `untraced`
(the command alone) or a `zaptrace record` command line.  From the workload's own report
(zaptrace/workloads.py, $ZAPTRACE_WORKLOAD_REPORT) it takes zaps/s and page visits/s and
prints, per variant, the ratio to the untraced run of the same round: median (min-max)
over the rounds, and the raw rates.  Nothing else should run on the host meanwhile.

    .venv/bin/python bench/observer.py --kernel 7.2 --rounds 5 --seconds 60 \\
        --variant traced="zaptrace record -q -o {tag}.zt --" \\
        --variant summary="zaptrace record --summary -q -o {tag}.zt --"

The default workload is the lost-write hunt of docs/findings.md (7.2, PTE mappings only):
`zaptrace workload run lostwrite --mapping pte --pages 1024 --duration SECONDS`.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdtable  # noqa: E402

DEFAULT_VARIANTS = (("traced", "zaptrace record -q -o {tag}.zt --"),)


def parse_variant(spec: str):
    name, sep, cmd = spec.partition("=")
    if not sep or not name or "{tag}" not in cmd and cmd.strip() != "":
        raise SystemExit(f"observer: --variant NAME=\"RECORD COMMAND ... --\" (with {{tag}} for the trace), not {spec!r}")
    return name, cmd


def spread(xs):
    if not xs:
        return "-"
    med = statistics.median(xs)
    return f"{med:.2f} ({min(xs):.2f}-{max(xs):.2f})" if len(xs) > 1 else f"{med:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default="7.2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--smp", type=int, default=3)
    ap.add_argument("--workload", default="zaptrace workload run lostwrite --mapping pte --pages 1024 --duration {seconds}")
    ap.add_argument("--variant", action="append", default=[], help='NAME="zaptrace record ... -o {tag}.zt --"')
    ap.add_argument("--out", default="out/observer")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    if a.rounds < 1 or a.seconds < 1:
        raise SystemExit("observer: --rounds and --seconds must be at least 1")
    variants = [("untraced", "")] + ([parse_variant(v) for v in a.variant] or list(DEFAULT_VARIANTS))
    from zaptrace.vm import runner
    from zaptrace.vm.errors import VMError
    from zaptrace.workloads import REPORT_ENV

    os.makedirs(a.out, exist_ok=True)
    out = os.path.realpath(a.out)
    work = shlex.split(a.workload.format(seconds=a.seconds))
    rates = {name: [] for name, _ in variants}        # per round: (zaps/s, visits/s) or None
    for rnd in range(1, a.rounds + 1):
        for name, rec in variants:
            tag = f"r{rnd}-{name}"
            report = os.path.join(out, tag + ".workload.json")
            if os.path.exists(report):
                os.unlink(report)
            argv = shlex.split(rec.format(tag=tag)) + work
            t0 = time.monotonic()
            print(f"observer: round {rnd}, {name} ...", file=sys.stderr, flush=True)
            try:
                with open(os.path.join(out, tag + ".out"), "wb") as f:
                    status = runner.run(a.kernel, argv, cwd=out, smp=a.smp, env={REPORT_ENV: report},
                                        stdout=f, stderr=f, timeout=a.seconds + 900)
            except VMError as e:
                print(f"observer: {tag}: {e}", file=sys.stderr)
                rates[name].append(None)
                continue
            try:
                with open(report) as f:
                    w = json.load(f)
                r = (w["zaps"] / w["elapsed_s"], (w.get("visits") or 0) / w["elapsed_s"])
            except (OSError, ValueError, KeyError, ZeroDivisionError):
                print(f"observer: {tag}: exit status {status}, no workload report", file=sys.stderr)
                r = None
            rates[name].append(r)
            load = os.getloadavg()[0]
            print(f"observer: {tag}: {time.monotonic() - t0:.0f} s, host load {load:.1f}, "
                  + (f"{r[0]:,.0f} zaps/s, {r[1]:,.0f} visits/s" if r else "failed"), file=sys.stderr, flush=True)
    base = rates["untraced"]
    rows = []
    for name, rec in variants:
        zr = [x[0] / b[0] for x, b in zip(rates[name], base) if x and b and b[0]]
        vr = [x[1] / b[1] for x, b in zip(rates[name], base) if x and b and b[1]]
        zs = [x[0] for x in rates[name] if x]
        vs = [x[1] for x in rates[name] if x]
        rows.append([name, rec or "-", f"{len(zs)} of {a.rounds}", spread(zr), spread(vr),
                     f"{statistics.median(zs):,.0f}" if zs else "-", f"{statistics.median(vs):,.0f}" if vs else "-"])
    print(f"kernel {a.kernel}, {a.smp} vCPUs, {a.seconds} s per run, {a.rounds} rounds interleaved; "
          f"workload: {' '.join(work)}", file=sys.stderr)
    mdtable.emit(["variant", "recording", "runs", "zaps/s ratio: median (min-max)", "visits/s ratio",
                  "zaps/s (median)", "visits/s (median)"], rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
