#!/usr/bin/env python3
"""Fault injection: record the race workload and kill something at a random moment, N times.

Step 1, inside a guest (needs kprobes):

    zaptrace vm run --kernel 6.1 --timeout 7200 -- python3 bench/fault_injection.py run --count 100 --out fi

Each run starts `zaptrace record -o fi/NNN.zt -- zaptrace workload run race --duration 30`,
waits a random 1-35 s (so some kills land while BCC compiles, most while
recording) and sends SIGKILL, SIGTERM or SIGINT to the recorder, the
workload (waiting for it to start if the recorder is still compiling), or both.  fi/runs.json keeps what was done and what came back.

Step 2, on the host (needs pandas):

    python bench/fault_injection.py check fi

loads every trace, runs the full analysis (gap table and summary) and
`zaptrace report` on it, and prints the tally: loadable / finished /
damaged traces, report crashes (must be 0), exit statuses seen.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def run(args):
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    runs = []
    for i in range(args.count):
        path = os.path.join(args.out, f"{i:03d}.zt")
        target = rng.choice(["recorder", "workload", "both"])
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
        delay = rng.uniform(1, 35)
        log = open(os.path.join(args.out, f"{i:03d}.log"), "w")
        rec = subprocess.Popen(["zaptrace", "record", "-q", "-o", path, "--", "zaptrace", "workload", "run",
                                "race", "--duration", "30"], stdout=log, stderr=log)
        t0 = time.monotonic()
        time.sleep(delay)
        workload = children(rec.pid)
        # the workload starts only once the probes are attached: wait for it if needed
        while target != "recorder" and not workload and rec.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.2)
            workload = children(rec.pid)
        killed = []
        if target in ("recorder", "both") and rec.poll() is None:
            os.kill(rec.pid, sig)
            killed.append("recorder")
        if target in ("workload", "both"):
            for w in workload:
                if alive(w):
                    os.kill(w, sig)
                    killed.append(f"workload {w}")
        try:
            status = rec.wait(timeout=120)
        except subprocess.TimeoutExpired:
            rec.kill()
            status = rec.wait()
            killed.append("recorder hung: SIGKILL after 120 s")
        # whatever the recorder left behind (it was killed) is ended here
        subprocess.run(["pkill", "-KILL", "-f", "workload run race"], check=False)
        log.close()
        r = {"run": i, "target": target, "signal": signal.Signals(sig).name, "delay_s": round(delay, 2),
             "killed": killed, "recorder_status": status, "elapsed_s": round(time.monotonic() - t0, 2),
             "file": os.path.basename(path), "exists": os.path.exists(path),
             "bytes": os.path.getsize(path) if os.path.exists(path) else 0}
        runs.append(r)
        print(json.dumps(r), flush=True)
        with open(os.path.join(args.out, "runs.json"), "w") as f:
            json.dump(runs, f, indent=1)


def check(args):
    sys.path.insert(0, ROOT)
    from zaptrace import analysis, tracefile
    runs = json.load(open(os.path.join(args.dir, "runs.json")))
    tally = collections.Counter()
    statuses = collections.Counter()
    problems = collections.Counter()
    for r in runs:
        path = os.path.join(args.dir, r["file"])
        statuses[f"{r['target']}/{r['signal']} -> {r['recorder_status']}"] += 1
        if not r["exists"]:
            tally["no file (killed before the output was opened, or nothing recorded)"] += 1
            continue
        try:
            t = analysis.load(path)
        except tracefile.TraceError as e:
            tally["UNLOADABLE"] += 1
            print(f"unloadable: {e}")
            continue
        tally["loadable"] += 1
        tally["finished" if t.finished else "unfinished (recorder killed)"] += 1
        tally["with events" if len(t.events) else "header only (killed before recording)"] += 1
        for p in t.problems:
            problems[p.split(" at byte")[0].split(":")[0]] += 1
        try:
            g = analysis.gap_table(t)
            analysis.summarize(t, g)
        except Exception as e:  # noqa: BLE001 - counted, that is the point
            tally["ANALYSIS CRASH"] += 1
            print(f"analysis crash on {path}: {type(e).__name__}: {e}")
        p = subprocess.run([sys.executable, "-m", "zaptrace", "report", path], capture_output=True, text=True,
                           cwd=ROOT)
        if p.returncode != 0 or "Traceback" in p.stderr:
            tally["REPORT FAILED"] += 1
            print(f"report failed on {path}: {p.stderr.strip()[-300:]}")
    print(f"{len(runs)} runs")
    for k, v in sorted(tally.items()):
        print(f"  {v:4}  {k}")
    print("recorder exit status by what was killed:")
    for k, v in sorted(statuses.items()):
        print(f"  {v:4}  {k}")
    print("problems the loader reported:")
    for k, v in sorted(problems.items()):
        print(f"  {v:4}  {k}")
    bad = tally["UNLOADABLE"] + tally["ANALYSIS CRASH"] + tally["REPORT FAILED"]
    sys.exit(1 if bad else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--count", type=int, default=100)
    r.add_argument("--out", default="fi")
    r.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("dir")
    args = ap.parse_args()
    (run if args.cmd == "run" else check)(args)


if __name__ == "__main__":
    main()
