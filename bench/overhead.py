#!/usr/bin/env python3
"""Recording overhead: zaptrace (full and --summary) against bpftrace and no tracing.

Runs INSIDE a guest (it needs kprobes), one boot per kernel:

    zaptrace vm run --kernel 6.1 -- python3 bench/overhead.py
    zaptrace vm run --kernel 6.12 -- python3 bench/overhead.py --sizes 64,256,1024

For each workload and size, on the same boot and the same probe points
(the symbols zaptrace's catalog chose for this kernel, entry and return):

* none      the workload alone;
* zaptrace  `zaptrace record -a` (every process, like the bpftrace script), with BPF
            trampolines (fentry/fexit) where the kernel has them;
* zaptrace-kprobes  the same with `--kprobes` (the mechanism bpftrace's script uses);
* summary   `zaptrace record -a --summary` (in-kernel histograms, no events);
* bpftrace  one printf line per probe hit, to a file (`bpftrace -o`).

Figures: events generated / delivered / counted lost; the workload's own
wall time (it times itself, so tool start-up and compilation are excluded)
as a ratio to the untraced run; the tracer's CPU time per delivered event.
Only the guest's python3 and the zaptrace checkout are used (no pandas).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

SCRATCH = os.environ.get("ZAPTRACE_SCRATCH", "/tmp")
ZT = os.environ.get("ZAPTRACE_BIN", "zaptrace")


def sh(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def workload_argv(name, pages, iterations, report):
    return [ZT, "workload", "run", name, "--pages", str(pages), "--iterations", str(iterations),
            "--quiet", "--report", report]


def read_report(path):
    with open(path) as f:
        return json.load(f)


def run_none(name, pages, it):
    rep = os.path.join(SCRATCH, "w.json")
    p = sh(workload_argv(name, pages, it, rep))
    if p.returncode:
        raise SystemExit(f"workload failed: {p.stderr}")
    return {"elapsed": read_report(rep)["elapsed_s"]}


def trace_end(path):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from zaptrace import tracefile
    raw = tracefile.read(path)
    return raw


def run_zaptrace(name, pages, it, extra=()):
    rep = os.path.join(SCRATCH, "w.json")
    out = os.path.join(SCRATCH, "b.zt")
    p = sh([ZT, "record", "-a", "-q", "-o", out, *extra, "--"] + workload_argv(name, pages, it, rep))
    if p.returncode:
        raise SystemExit(f"zaptrace record failed: {p.stderr[-2000:]}")
    raw = trace_end(out)
    end = raw.end or {}
    gen = sum(end.get("generated", {}).values())
    lost = sum(end.get("lost", {}).values())
    deliv = sum(end.get("delivered", {}).values())
    res = {"elapsed": read_report(rep)["elapsed_s"], "generated": gen, "delivered": deliv, "lost": lost,
           "cpu": end.get("recorder_cpu_s"), "probes": raw.head.get("probes")}
    summ = raw.meta.get("summary") or end.get("summary")
    if summ:
        # decrements paired or counted in the kernel, all classes and paths
        res["summarised"] = sum(int(p["decrements"]) for c in summ["classes"].values()
                                for p in c["paths"].values())
    os.unlink(out)
    return res


def bpftrace_script(probes):
    """One printf per hit of every symbol zaptrace attached (entry, and return where it has one)."""
    lines = []
    for p in probes:
        for sym in p.get("attach") or []:
            ev = p["event"]
            lines.append(f'kprobe:{sym} {{ printf("%llu %d %d {ev} %llx %llx %llx\\n", '
                         f'nsecs, tid, cpu, arg0, arg1, arg2); }}')
            if p.get("ret"):
                lines.append(f'kretprobe:{sym} {{ printf("%llu %d %d {ev}_ret %lld\\n", nsecs, tid, cpu, retval); }}')
    return "\n".join(lines) + "\n"


def run_bpftrace(name, pages, it, probes):
    script = os.path.join(SCRATCH, "zt.bt")
    out = os.path.join(SCRATCH, "bt.out")
    err = os.path.join(SCRATCH, "bt.err")
    with open(script, "w") as f:
        f.write(bpftrace_script(probes))
    with open(err, "w") as e:
        bt = subprocess.Popen(["bpftrace", "-o", out, script], stdout=subprocess.DEVNULL, stderr=e)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.path.exists(out) and "Attaching" in open(out, errors="replace").read(4096):
            break
        if bt.poll() is not None:
            raise SystemExit(f"bpftrace failed: {open(err).read()[-2000:]}")
        time.sleep(0.2)
    time.sleep(0.5)
    res = run_none(name, pages, it)
    bt.send_signal(signal.SIGINT)
    _, status, ru = os.wait4(bt.pid, 0)
    text = open(out, errors="replace").read()
    lines = text.count("\n") - text.count("Attaching")
    lost = sum(int(n) for n in re.findall(r"Lost (\d+) events", text + open(err).read()))
    res.update({"generated": lines + lost, "delivered": lines, "lost": lost, "cpu": ru.ru_utime + ru.ru_stime})
    os.unlink(out)
    return res


def row(tool, r, base):
    slow = r["elapsed"] / base if base else float("nan")
    deliv = r.get("delivered")
    cpu_ev = (r["cpu"] / deliv * 1e6) if r.get("cpu") is not None and deliv else None
    gen = r.get("generated")
    return (f"  {tool:16} {r['elapsed']:9.3f} {slow:8.2f}x "
            f"{'-' if gen is None else gen:>10} {'-' if deliv is None else deliv:>10} "
            f"{'-' if r.get('lost') is None else r['lost']:>8} "
            f"{'-' if cpu_ev is None else f'{cpu_ev:.2f}':>9}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="dontneed-shared,race")
    ap.add_argument("--sizes", default="64,256,1024", help="pages per zap")
    ap.add_argument("--page-zaps", type=int, default=131072,
                    help="pages zapped per run (iterations = page-zaps / size)")
    ap.add_argument("--tools", default="none,zaptrace,zaptrace-kprobes,summary,bpftrace")
    ap.add_argument("--json", help="also write the raw figures here")
    args = ap.parse_args()
    tools = args.tools.split(",")
    results = []
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs; workload wall time as ratio to untraced; "
          f"CPU us per delivered event is the tracer's own process")
    for name in args.workloads.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            it = max(1, args.page_zaps // size)
            print(f"\n{name}, {size} pages x {it} zaps")
            print(f"  {'tool':16} {'wall s':>9} {'slowdown':>9} {'generated':>10} {'delivered':>10} "
                  f"{'lost':>8} {'cpu us/ev':>9}")
            base = None
            probes = None
            for tool in tools:
                if tool == "none":
                    # the baseline is taken twice, around the traced runs, to show the noise
                    r = run_none(name, size, it)
                    base = r["elapsed"]
                elif tool == "zaptrace":
                    r = run_zaptrace(name, size, it)
                    probes = r.pop("probes")
                elif tool == "zaptrace-kprobes":
                    r = run_zaptrace(name, size, it, extra=("--kprobes",))
                    r.pop("probes", None)
                elif tool == "summary":
                    r = run_zaptrace(name, size, it, extra=("--summary",))
                    r.pop("probes", None)
                elif tool == "bpftrace":
                    if probes is None:
                        probes = run_zaptrace(name, 8, 1)["probes"]
                    r = run_bpftrace(name, size, it, probes)
                else:
                    raise SystemExit(f"unknown tool {tool}")
                print(row(tool, r, base), flush=True)
                results.append(dict(r, tool=tool, workload=name, size=size, iterations=it,
                                    slowdown=(r["elapsed"] / base) if base else None))
            if "none" in tools:
                r = run_none(name, size, it)
                print(row("none", r, base) + "   (baseline again: the run-to-run noise)", flush=True)
                results.append(dict(r, tool="none-again", workload=name, size=size, iterations=it,
                                    slowdown=r["elapsed"] / base))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"kernel": os.uname().release, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
