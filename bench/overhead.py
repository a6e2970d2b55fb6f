#!/usr/bin/env python3
"""Recording overhead: zaptrace (full and --summary) against bpftrace and no tracing.

Runs INSIDE a guest (it needs kprobes), one boot per kernel:

    zaptrace vm run --kernel 6.1 -- python3 bench/overhead.py
    zaptrace vm run --kernel 6.12 -- python3 bench/overhead.py --sizes 64,256,1024 --rounds 7

For each workload and size, on the same boot and the same probe points
(the symbols zaptrace's catalog chose for this kernel, entry and return),
the tools run interleaved, A B C A B C ..., for --rounds rounds (default 5),
because under TCG one pair of runs is noise (three untraced runs of one
workload in one boot took 7.3, 2.9 and 4.0 s); each tool's figure is the
median of its rounds, printed with the min-max and the spread:

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
import statistics
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
            raise ToolFailed(f"bpftrace exited {bt.returncode} before attaching: "
                             f"{' '.join(open(err).read().split())[-300:]}")
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


def _median(xs):
    return statistics.median(xs) if xs else None


def _spread(xs):
    """min-max of the runs as a percentage of their median, or None."""
    if len(xs) < 2:
        return None
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m * 100 if m else None


class ToolFailed(Exception):
    """A tool that cannot run on this kernel: named in the table with its reason, not fatal."""


def run_tool(tool, name, size, it, state):
    if tool == "none":
        return run_none(name, size, it)
    if tool == "zaptrace":
        r = run_zaptrace(name, size, it)
        state["probes"] = r.pop("probes")
        return r
    if tool in ("zaptrace-kprobes", "summary"):
        r = run_zaptrace(name, size, it, extra=("--kprobes",) if tool == "zaptrace-kprobes" else ("--summary",))
        r.pop("probes", None)
        return r
    if tool == "bpftrace":
        if state.get("probes") is None:
            state["probes"] = run_zaptrace(name, 8, 1)["probes"]
        return run_bpftrace(name, size, it, state["probes"])
    raise SystemExit(f"unknown tool {tool}")


def summarise(tool, runs, base):
    el = [r["elapsed"] for r in runs]
    cpu_ev = [r["cpu"] / r["delivered"] * 1e6 for r in runs if r.get("cpu") is not None and r.get("delivered")]
    gen = [r["generated"] for r in runs if r.get("generated") is not None]
    lost = [r["lost"] for r in runs if r.get("lost") is not None]
    deliv = [r["delivered"] for r in runs if r.get("delivered") is not None]
    med = _median(el)
    return {"tool": tool, "runs": len(runs), "elapsed_median": med, "elapsed_min": min(el), "elapsed_max": max(el),
            "spread_pct": _spread(el), "slowdown": (med / base) if base else None,
            "generated": sum(gen) if gen else None, "delivered": sum(deliv) if deliv else None,
            "lost": sum(lost) if lost else None, "cpu_us_per_event": _median(cpu_ev)}


def line(s):
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    return (f"  {s['tool']:16} {s['runs']:>4} {s['elapsed_median']:9.3f} "
            f"{s['elapsed_min']:7.3f}-{s['elapsed_max']:<7.3f} {f(s['spread_pct'], '.0f'):>5}% "
            f"{f(s['slowdown'], '.2f'):>7}x {f(s['generated'], 'd'):>10} {f(s['delivered'], 'd'):>10} "
            f"{f(s['lost'], 'd'):>8} {f(s['cpu_us_per_event'], '.2f'):>9}")


def save(path, rounds, medians, raw):
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump({"kernel": os.uname().release, "cpus": os.cpu_count(), "rounds": rounds,
                       "medians": medians, "runs": raw}, f, indent=1)
        os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="dontneed-shared,race")
    ap.add_argument("--sizes", default="256", help="pages per zap, comma-separated (default 256)")
    ap.add_argument("--page-zaps", type=int, default=131072,
                    help="pages zapped per run (iterations = page-zaps / size)")
    ap.add_argument("--tools", default="none,zaptrace,zaptrace-kprobes,summary,bpftrace",
                    help="run in this order in every round (A B C A B C ...)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of all tools, interleaved (default 5)")
    ap.add_argument("--json", help="also write the raw figures (every run) and the medians here")
    args = ap.parse_args()
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    tools = args.tools.split(",")
    raw, medians = [], []
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs; {args.rounds} interleaved rounds of "
          f"{', '.join(tools)}; workload wall time (it times itself: tool start-up and BPF compilation "
          f"excluded) as median, min-max and spread (max-min over median), slowdown = median traced / "
          f"median untraced; events summed over the rounds; CPU us per delivered event (median) is the "
          f"tracer's own process", flush=True)
    for name in args.workloads.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            it = max(1, args.page_zaps // size)
            runs = {t: [] for t in tools}
            state = {}
            t_start = time.monotonic()
            failed = {}
            for rnd in range(args.rounds):
                for tool in tools:
                    if tool in failed:
                        continue
                    try:
                        r = run_tool(tool, name, size, it, state)
                    except ToolFailed as e:
                        failed[tool] = str(e)
                        print(f"  {tool}: {e}", file=sys.stderr, flush=True)
                        continue
                    runs[tool].append(r)
                    raw.append(dict(r, tool=tool, workload=name, size=size, iterations=it, round=rnd))
                    # every run as it ends, and the JSON so far: a run cut short keeps what it measured
                    print(f"  [{name} {size} round {rnd + 1} {tool}: {r['elapsed']:.3f} s, "
                          f"generated {r.get('generated', '-')}, lost {r.get('lost', '-')}]",
                          file=sys.stderr, flush=True)
                    save(args.json, args.rounds, medians, raw)
                print(f"  [{name} {size}: round {rnd + 1}/{args.rounds} done, "
                      f"{time.monotonic() - t_start:.0f} s]", file=sys.stderr, flush=True)
            print(f"\n{name}, {size} pages x {it} zaps")
            print(f"  {'tool':16} {'runs':>4} {'median s':>9} {'min-max s':>15} {'sprd':>6} {'slowdown':>8} "
                  f"{'generated':>10} {'delivered':>10} {'lost':>8} {'cpu us/ev':>9}")
            base = _median([r["elapsed"] for r in runs["none"]]) if "none" in tools else None
            for tool in tools:
                if tool in failed:
                    print(f"  {tool:16} failed, not measured: {failed[tool]}")
                    medians.append({"tool": tool, "workload": name, "size": size, "failed": failed[tool]})
                    continue
                s = summarise(tool, runs[tool], base)
                print(line(s), flush=True)
                medians.append(dict(s, workload=name, size=size, iterations=it))
    save(args.json, args.rounds, medians, raw)


if __name__ == "__main__":
    main()
