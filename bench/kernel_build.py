#!/usr/bin/env python3
"""How long `zaptrace vm kernel build` takes: a first build, one mm file touched, the patches.

Runs on the HOST, one step after the other (nothing else should run: a kernel build
takes both cores):

    .venv/bin/python bench/kernel_build.py --cache /tmp/ztk     # an empty cache: as on a fresh clone

1. ``vm kernel build 7.2``: download and unpack linux-source-7.2, configure (defconfig +
   kvm_guest.config + vm/guest.config), make bzImage;
2. the same with mm/huge_memory.c touched (``--force``): the incremental rebuild;
3. ``--patch patches/7.2/pmd-flush.patch``: the candidate fix (reverts nothing, patches
   one mm file);
4. ``--patch patches/7.2/control-no-delayed-rmap.patch``: reverts the fix, patches another;
5. ``vm kernel build 7.2`` again: cached, no make.

Each step's wall time is the whole command's, as a user sees it (download, configure and
link included).  Prints a table (and --json); one run is one sample, not a distribution.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdtable  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help="ZAPTRACE_CACHE for the run (default: the user's cache)")
    ap.add_argument("--label", default="7.2")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    if a.cache:
        os.environ["ZAPTRACE_CACHE"] = os.path.abspath(a.cache)
    from zaptrace.vm import kbuild, ksource

    patches = os.path.join(ROOT, "patches", a.label)
    fix = os.path.join(patches, "pmd-flush.patch")
    ctl = os.path.join(patches, "control-no-delayed-rmap.patch")

    def log(msg: str) -> None:
        print("kernel_build: " + msg, file=sys.stderr, flush=True)

    rows = []

    def step(what: str, patch_files=(), force=False, touch=None) -> None:
        if touch:
            src = ksource.resolve(a.label, log)
            os.utime(src.tree / touch)
        t0 = time.monotonic()
        info = kbuild.build(a.label, list(patch_files), jobs=a.jobs, force=force, log=log)
        wall = time.monotonic() - t0
        rows.append([what, info["name"], info["release"], f"{wall:,.0f}", f"{info['make_steps']:,}"
                     if info.get("build_seconds") and wall > 30 else "cached"])
        mdtable.emit(["step", "name", "release", "wall s", "make steps"], rows, a.json, quiet=True)

    step(f"first build of {a.label} (download, unpack, configure, make)")
    step("mm/huge_memory.c touched, --force", force=True, touch="mm/huge_memory.c")
    step("with the PMD fix (patches mm/huge_memory.c)", [fix])
    step("with the control instead (reverts the fix, patches mm/memory.c)", [ctl])
    step(f"{a.label} again (cached)")
    print(f"host: {os.cpu_count()} CPUs; load average now {os.getloadavg()[0]:.2f}", file=sys.stderr)
    mdtable.emit(["step", "name", "release", "wall s", "make steps"], rows, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
