#!/usr/bin/env python3
"""Does attaching and detaching the probes under load wedge the guest?

Runs on the HOST: one guest boot per kernel.  Inside, `munmap-anon` runs
without end (so the probed functions are being executed on another vCPU at
the moment their first bytes are patched), and `zaptrace record -p PID -d 2`
attaches, records 2 s and detaches, CYCLES times in a row.  Each cycle is
bounded by a guest-side timeout; the guest itself panics on a soft lockup
(vm/qemu.py KERNEL_CMDLINE), so a wedge ends the boot with the stacks in the
console log instead of hanging:

    .venv/bin/python bench/wedge.py --cycles 50      # the kernels `zaptrace vm build` fetches
    ZAPTRACE_VM_TCG=single .venv/bin/python bench/wedge.py --kernels 6.1 --cycles 10

One row per kernel: cycles that ended normally, the first failure (its exit
status and the guest's last console lines), and the median cycle time.  The
guest mode (QEMU version, TCG threading, vCPUs) is printed with the table.
Exit status 1 when any kernel wedged or any cycle failed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mdtable  # noqa: E402
from zaptrace.vm.labels import DEFAULT_KERNELS  # noqa: E402

ZT = os.path.join(ROOT, ".venv", "bin", "zaptrace")

# One line per cycle in the shared directory: "cycle status milliseconds events".
GUEST_SCRIPT = r"""
set -u
log={log}
: > $log
zaptrace workload run munmap-anon --duration 100000 > /dev/null 2>&1 &
load=$!
sleep 2
i=1
while [ $i -le {cycles} ]; do
  t0=$(date +%s%N)
  zaptrace record -q -p $load -d 2 -o /tmp/wedge.zt > /tmp/wedge.out 2>&1 &
  rec=$!
  waited=0
  while kill -0 $rec 2>/dev/null && [ $waited -lt {cycle_timeout} ]; do sleep 1; waited=$((waited + 1)); done
  if kill -0 $rec 2>/dev/null; then
    # Over its limit: keep what the guest looks like before ending it (each task's state and
    # kernel stack, the kernel's last messages), so that a slow cycle and a wedge can be told apart.
    {{ echo "cycle $i: still running after {cycle_timeout} s"; ps -eo pid,stat,wchan:32,etime,args
       for p in $(pgrep -f "zaptrace record"); do echo "-- /proc/$p/stack"; cat /proc/$p/stack; done
       dmesg | tail -30; }} >> $log.err 2>&1
    kill -TERM $rec; sleep 5; kill -KILL $rec 2>/dev/null
    wait $rec 2>/dev/null
    st=124
  else
    wait $rec
    st=$?
  fi
  t1=$(date +%s%N)
  ev=$(awk '$1 == "total" {{print $2}}' /tmp/wedge.out)
  echo "$i $st $(( (t1 - t0) / 1000000 )) ${{ev:-?}}" >> $log
  if [ $st -ne 0 ]; then {{ echo "cycle $i: exit $st"; tail -5 /tmp/wedge.out; }} >> $log.err; fi
  kill -0 $load 2>/dev/null || {{ echo "load died" >> $log.err; break; }}
  i=$((i + 1))
done
kill $load 2>/dev/null
wait $load 2>/dev/null
exit 0
"""


def guest_mode() -> str:
    out = subprocess.run([ZT, "vm", "status"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    keep = [ln.strip() for ln in out.splitlines() if ln.lower().startswith(("qemu", "accelerator", "tcg"))]
    return "; ".join(keep) or "guest mode unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", default=",".join(DEFAULT_KERNELS),
                    help="comma-separated (default: %(default)s, what `zaptrace vm build` fetches)")
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--smp", type=int, default=None, help="guest vCPUs (default: zaptrace vm run's)")
    ap.add_argument("--cycle-timeout", type=int, default=240, help="seconds one record cycle may take")
    ap.add_argument("--out", default="out/wedge")
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    out = os.path.abspath(a.out)
    header = ["kernel", "cycles ok", "first failure", "cycle time p50 (min-max)", "boot wall time"]
    rows, bad = [], False
    for k in a.kernels.split(","):
        log = f"wedge-{k}.log"
        for stale in (log, log + ".err"):
            if os.path.exists(os.path.join(out, stale)):
                os.unlink(os.path.join(out, stale))
        script = GUEST_SCRIPT.format(log=log, cycles=a.cycles, cycle_timeout=a.cycle_timeout)
        argv = [ZT, "vm", "run", "--kernel", k, "--timeout", str(a.cycles * (a.cycle_timeout + 10) + 300)]
        if a.smp:
            argv += ["--smp", str(a.smp)]
        print(f"wedge: {k}: booting, {a.cycles} cycles ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        p = subprocess.run(argv + ["--", "sh", "-c", script], cwd=out)
        wall = time.monotonic() - t0
        lines = []
        if os.path.exists(os.path.join(out, log)):
            lines = [ln.split() for ln in open(os.path.join(out, log)) if ln.strip()]
        ok = [ln for ln in lines if ln[1] == "0"]
        failed = [ln for ln in lines if ln[1] != "0"]
        secs = [int(ln[2]) / 1000 for ln in lines]
        first = "-"
        if failed:
            first = f"cycle {failed[0][0]}: exit {failed[0][1]}"
        elif p.returncode != 0:
            first = f"guest ended with {p.returncode} after cycle {len(lines)} (see `zaptrace vm status`)"
        elif len(lines) < a.cycles:
            first = f"only {len(lines)} cycles ran"
        bad |= first != "-"
        spread = f"{statistics.median(secs):.1f} s ({min(secs):.1f}-{max(secs):.1f})" if secs else "-"
        rows.append([k, f"{len(ok)}/{a.cycles}", first, spread, f"{wall / 60:.1f} min"])
        print(f"wedge: {k}: {len(ok)}/{a.cycles} ok, {first}, {wall:.0f} s", file=sys.stderr, flush=True)
    print("guest: " + guest_mode() + f"; workload munmap-anon; each cycle `record -p PID -d 2`")
    mdtable.emit(header, rows, a.json)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
