#!/usr/bin/env python3
"""Which kernel / filesystem pairs keep an open PMD window for dirty file folios?

Runs on the HOST: one guest boot per (kernel, scratch filesystem), each
recording `race --mapping pmd` (a 2 MiB-aligned MAP_SHARED file mapping with
MADV_HUGEPAGE: PMD-sized folios mapped by one PMD where the kernel and the
filesystem can) and one PTE-mapped `race` for contrast, then prints one row
per pair from `zaptrace report --json`:

    .venv/bin/python bench/pmd_matrix.py --kernels 6.1,6.12,7.2 --fs ext4,xfs --out out/pmd

Every figure is what that one recording saw; the guest mode (accelerator,
TCG threading, vCPUs) is printed with the table.  Nothing is averaged.
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
from zaptrace.vocab import DELAYED, FILE_DIRTY, IMMEDIATE, PMD  # noqa: E402
ZT = os.path.join(ROOT, ".venv", "bin", "zaptrace")

GUEST_SCRIPT = """
set -u
zaptrace record -q -o {pmd} -- zaptrace workload run race --mapping pmd --pages {pages} --iterations {iters} \
  > {pmd}.out 2>&1; echo $? > {pmd}.status
zaptrace record -q -o {pte} -- zaptrace workload run race --mapping pte --pages 256 --iterations {iters} \
  > {pte}.out 2>&1; echo $? > {pte}.status
"""


def report(path: str) -> dict:
    p = subprocess.run([ZT, "report", "--json", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"pmd_matrix: report of {path} failed: {p.stderr.strip()}")
    return json.loads(p.stdout)


def fmt_us(ns) -> str:
    return "-" if ns is None else f"{ns / 1000:+.0f} µs"


def row(kernel: str, fs: str, pmd: dict, pte: dict) -> list:
    fd = pmd["classes"][FILE_DIRTY]["by_path"][PMD]
    fdp = pte["classes"][FILE_DIRTY]
    pte_path = DELAYED if fdp[DELAYED] == fdp["decrements"] > 0 else (
        IMMEDIATE if fdp[IMMEDIATE] == fdp["decrements"] > 0 else "mixed")
    state = "-" if not fd["paired"] else ("**open**" if fd["open"] else "closed")
    return [kernel + f" ({pmd['kernel']})", fs, f"{fd['decrements']:,}", state, fmt_us(fd["gap_ns"]["p50"]),
            f"{fd['hits']:,}", f"{pte_path}, {'open' if fdp['open'] else 'closed'}, {fdp['hits']:,} hits",
            f"{pmd['lost_events'] or 0}+{pte['lost_events'] or 0}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", default="6.1,6.12,7.2")
    ap.add_argument("--fs", default="ext4,xfs")
    ap.add_argument("--pages", type=int, default=1024)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--out", default="out/pmd")
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    out = os.path.abspath(a.out)
    header = ["kernel", "fs", "dirty file PMD decrements", "PMD window", "gap p50", "mkclean hits",
              "PTE-mapped dirty file pages (path, window, hits)", "lost"]
    rows = []
    for k in a.kernels.split(","):
        for fs in a.fs.split(","):
            tag = f"{k}-{fs}"
            pmd, pte = f"pmd-{tag}.zt", f"pte-{tag}.zt"
            script = GUEST_SCRIPT.format(pmd=pmd, pte=pte, pages=a.pages, iters=a.iterations)
            t0 = time.monotonic()
            print(f"pmd_matrix: {tag}: booting ...", file=sys.stderr, flush=True)
            p = subprocess.run([ZT, "vm", "run", "--kernel", k, "--scratch-fs", fs, "--timeout", "1500",
                                "--", "sh", "-c", script], cwd=out)
            if p.returncode != 0:
                raise SystemExit(f"pmd_matrix: the {tag} guest failed ({p.returncode})")
            for name in (pmd, pte):
                st = open(os.path.join(out, name + ".status")).read().strip()
                if st != "0":
                    raise SystemExit(f"pmd_matrix: {tag}: recording {name} exited {st}: "
                                     + open(os.path.join(out, name + ".out")).read()[-500:])
            rows.append(row(k, fs, report(os.path.join(out, pmd)), report(os.path.join(out, pte))))
            print(f"pmd_matrix: {tag}: done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    mode = subprocess.run([ZT, "vm", "status"], stdout=subprocess.PIPE, text=True).stdout
    keep = [ln for ln in mode.splitlines() if ln.startswith(("qemu:", "tcg:", "accelerator"))]
    print(f"guest: {'; '.join(keep) or 'mode unknown'}; "
          f"race --mapping pmd --pages {a.pages} --iterations {a.iterations}, one recording per row")
    mdtable.emit(header, rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
