"""`zaptrace workload run lostwrite`: does this kernel lose writes to shared file pages?

A content check that needs no BPF (usable on its own on real hardware).  The
racing is done by a small C program, zaptrace/lostwrite.c (built here with
the system's C compiler on first use, see `engine`):

* the **writer** is the only writer of every page of a MAP_SHARED file.  It
  visits the pages in order; each visit checks that the page's first 8-byte
  word still holds the value it stored last, then stores the next value
  (``--burst`` times in a row, then the next page);
* **zappers** (threads of the same process: the stale TLB entry must belong
  to the zapped mm) unmap the range with MADV_DONTNEED in a loop;
* a **writeback** child process writes the file back (``--writeback``: fsync,
  fdatasync, or msync(MS_SYNC) of a second mapping of the file: each ends in
  folio_mkclean) and evicts the clean pages (POSIX_FADV_DONTNEED) in a loop.

Nobody else writes the file, so a page that shows an older value than the
writer's last one lost a write: it landed on a page that writeback had
already cleaned (through a stale TLB entry if the seed mail's race is the
cause), which was then evicted as clean and read back from disk without it.

Each lost write is printed and, with ``--findings``, written as JSON with the
file's device and inode, the page offset, the values and the times of the
visit that stored the lost value (``written_ns``), of that store alone
(``store_ns``, with ``--time-stores``: the visit's faults are taken before it
by ``--fault-first``) and of its discovery on CLOCK_MONOTONIC (the clock of
zaptrace's traces), so that `zaptrace report --findings` can join them with a
recording.  With ``--control-sample N`` the findings also hold a uniform
random sample of N visits that lost nothing (``control``): the report applies
the same join to them, which tells how often a visit is "explained" by chance.
Exit status: 0 no lost write, 1 lost writes found, 2 error.  Ctrl-C ends the
run early and still writes the findings.

The options are declared below (`option`, zaptrace/workload_base.py): the
command line, its help and the findings' ``settings`` come from them.

History: the first engine was Python (numpy stores, GIL-paced zapper
threads).  It made about 800 page visits per second in a 6.1 TCG guest and
found no lost write in 300 s (6.1, untraced and traced) or 600 s (7.2 PMD),
where an independent C detector of this design found 1 in 150 s on 6.1.
Issue 24: that detector also lost writes on 7.2 with PTE mappings only,
where this one lost none; its design runs here as
``--mapping pte --burst 1 --writeback msync --no-fault-first --no-time-stores``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .workload_base import (PAGE, Outcome, Params, WorkloadError, check_params, option, region_pages,
                            scratch_file)

NAME = "lostwrite"
SCHEMA = "zaptrace.lostwrite/1"
#: The workload's exit status when it found lost writes (0: none, 2: an error).
LOST_STATUS = 1
SOURCE = Path(__file__).with_name("lostwrite.c")
#: Linked -static where possible (see `engine`), so that an engine built on the host
#: runs in any guest userspace.
CFLAGS = ("-O2", "-pthread", "-Wall")
#: Set to a prebuilt engine to use it instead of building one.
ENGINE_ENV = "ZAPTRACE_LOSTWRITE_ENGINE"
WRITEBACKS = ("fsync", "fdatasync", "msync")
#: The columns of the findings' "control" rows (store_*: with --time-stores).
CONTROL_COLUMNS = ("page", "visit_from_ns", "visit_to_ns", "store_from_ns", "store_to_ns")


def parse_inject(spec: Optional[str]) -> Optional[Tuple[int, int]]:
    """--inject-loss PAGE@PASS -> (page, pass)."""
    if not spec:
        return None
    try:
        page, _, npass = spec.partition("@")
        out = (int(page), int(npass))
    except ValueError:
        raise WorkloadError(f"--inject-loss expects PAGE@PASS (e.g. 3@10), not {spec!r}") from None
    if out[0] < 0 or out[1] < 2:
        raise WorkloadError("--inject-loss: PAGE must be >= 0 and PASS >= 2")
    return out


def _inject_problem(spec: str) -> Optional[str]:
    try:
        parse_inject(spec)
    except WorkloadError as e:
        return str(e)
    return None


# -- the options (zaptrace/workload_base.py: the CLI and the findings' "settings" read them) --

MINE = (NAME,)
option("zappers", int, 1, "Threads zapping the range.", workloads=MINE,
       check=lambda v: None if v >= 0 else "--zappers must not be negative")
option("evict", bool, True, "Also evict clean pages after writeback.", workloads=MINE)
option("burst", int, 16, "Checked stores per page visit before the next page (1: one store per visit).",
       workloads=MINE, check=lambda v: None if v > 0 else "--burst must be positive")
option("writeback", str, "fsync", "How the child writes the file back: fsync, fdatasync, or msync "
       "(msync(MS_SYNC) of a second mapping of the file that the child makes and never touches).",
       workloads=MINE, choices=WRITEBACKS)
option("fault_first", bool, True, "Take each visit's faults with an idempotent store (the value just read, "
       "stored back) before the check, so that the timed store is the store alone; the same faults, in "
       "the same order (see zaptrace/lostwrite.c).", workloads=MINE)
option("time_stores", bool, True, "Time each visit's last store on its own (the narrow span that "
       "`report --findings` joins), beside the visit.", workloads=MINE)
option("control_sample", int, 10_000, "Keep a uniform random sample of this many visits that lost nothing, "
       "for the report's chance baseline (0: none).", workloads=MINE, metavar="N",
       check=lambda v: None if v >= 0 else "--control-sample must not be negative")
option("pin", bool, False, "Pin the writer, each zapper and the writeback child to CPUs of their own "
       "(round robin over the allowed CPUs).", workloads=MINE)
option("findings", str, None, "Write the lost writes (and the control sample) as JSON here.", workloads=MINE)
option("inject", str, None, "Put back an old copy of PAGE before pass PASS (to test the detector).",
       flags=("--inject-loss",), workloads=MINE, metavar="PAGE@PASS", check=_inject_problem)

CLI_HELP = """lostwrite: does this kernel lose writes?  The only writer of every page of a
shared file checks each page's last value before each store (--burst stores
per page visit), while --zappers threads MADV_DONTNEED the range in a loop
and a child process writes back (--writeback: fsync, fdatasync or msync of a
mapping of its own) and evicts clean pages (off with --no-evict).  Each lost
write is printed (page, expected and found values, CLOCK_MONOTONIC times of
the visit and of the store alone); exit status 1 when any write was lost, 0
when none, 2 on errors.  --findings also keeps a random sample of visits that
lost nothing (--control-sample), so that `report --findings` can say how
often its join explains a visit by chance.  Needs no BPF; its engine is a
small C program (zaptrace/lostwrite.c) built with the system's cc on first use:
  zaptrace workload run lostwrite --duration 300 --pages 1024 --findings lost.json
  sudo zaptrace record -o lw.zt -- zaptrace workload run lostwrite -d 300 --findings lw.json
  zaptrace report --findings lw.json lw.zt
  # the independent detector's design (issue 24): one store per visit, msync
  zaptrace workload run lostwrite -m pte -n 1024 -d 420 --burst 1 --writeback msync \\
      --no-fault-first --no-time-stores
"""


@dataclass
class Lost:
    page: int
    expected: int
    found: int
    written_ns: Tuple[int, int]      # the visit that stored `expected`: [start, end] on CLOCK_MONOTONIC
    found_ns: int
    store_ns: Optional[Tuple[int, int]] = None    # that store alone (--time-stores)

    def to_json(self) -> dict:
        out = {"page": self.page, "offset": self.page * PAGE, "expected": self.expected,
               "found": self.found, "written_ns": list(self.written_ns), "found_ns": self.found_ns}
        if self.store_ns is not None:
            out["store_ns"] = list(self.store_ns)
        return out


@dataclass
class Counters:
    passes: int = 0
    visits: int = 0
    zaps: int = 0
    elapsed_ns: int = 0
    lost: List[Lost] = field(default_factory=list)
    control: List[List[int]] = field(default_factory=list)   # rows of CONTROL_COLUMNS (store_*: when timed)
    control_seen: Optional[int] = None      # the visits the sample was drawn from
    ended: bool = False          # the engine's "end" line came (kept here: a signal can cut _read short)


# -- the engine -------------------------------------------------------------

def engine_dirs() -> List[Path]:
    """Where an engine is looked for and built (zaptrace/cbuild.py: the source tree's build/,
    shared with the QEMU guests, which have no compiler, then the user's cache)."""
    from . import cbuild
    return cbuild.build_dirs(SOURCE)


def engine(build: bool = True) -> str:
    """The path of the engine built from this lostwrite.c; built on first use."""
    from . import cbuild          # here, not at import: every start of the CLI reads this module's options
    env = os.environ.get(ENGINE_ENV)
    if env:
        if not os.access(env, os.X_OK):
            raise WorkloadError(f"${ENGINE_ENV}={env} is not an executable file")
        return env
    name = f"lostwrite-{cbuild.digest(SOURCE, CFLAGS)}"
    dirs = engine_dirs()
    found = cbuild.find(name, dirs)
    if found and os.access(found, os.X_OK):
        return found
    if not build or cbuild.compiler() is None:
        raise WorkloadError(f"lostwrite needs its engine built from {SOURCE} and there is no C compiler "
                            f"here: apt-get install gcc, or build it elsewhere and set ${ENGINE_ENV}")
    try:
        # -static where the C library allows it (Debian: libc6-dev has libc.a).
        return cbuild.build(SOURCE, name, CFLAGS, variants=(("-static",), ()), dirs=dirs)
    except cbuild.BuildError as e:
        raise WorkloadError(f"the lostwrite engine: {e}") from None


def engine_argv(exe: str, path: str, npages: int, p: Params, inject: Optional[Tuple[int, int]]) -> List[str]:
    """The engine's command line (zaptrace/lostwrite.c: ten positions, then KEY=VALUE)."""
    return [exe, path, str(npages), p.mapping, str(p.zappers), str(int(p.evict)), str(p.burst),
            str(p.duration if p.duration is not None else 0), str(p.iterations),
            str(inject[0] if inject else 0), str(inject[1] if inject else 0),
            f"writeback={p.writeback}", f"fault_first={int(p.fault_first)}",
            f"time_stores={int(p.time_stores)}", f"control={p.control_sample}", f"pin={int(p.pin)}"]


# -- the run ----------------------------------------------------------------

def _report_line(path: str, lost: Lost) -> str:
    store = "" if lost.store_ns is None else \
        f" (the store: {lost.store_ns[0] / 1e9:.6f}-{lost.store_ns[1] / 1e9:.6f} s)"
    return (f"lostwrite: LOST WRITE in {path} page {lost.page} (offset {lost.page * PAGE:#x}): "
            f"expected {lost.expected}, found {lost.found}; written at {lost.written_ns[0] / 1e9:.6f}-"
            f"{lost.written_ns[1] / 1e9:.6f} s{store}, found at {lost.found_ns / 1e9:.6f} s (CLOCK_MONOTONIC)")


def _read(proc: subprocess.Popen, c: Counters, path: str) -> bool:
    """Read the engine's protocol lines into ``c``; True when its "end" line came (now or
    in an earlier call that a Ctrl-C or SIGTERM interrupted after reading it)."""
    for line in proc.stdout:
        f = line.split()
        if f[:1] == ["lost"] and len(f) in (7, 9):
            page, expected, found, w0, w1, t = map(int, f[1:7])
            store = (int(f[7]), int(f[8])) if len(f) == 9 else None
            lost = Lost(page, expected, found, (w0, w1), t, store)
            c.lost.append(lost)
            print(_report_line(path, lost), file=sys.stderr, flush=True)
        elif f[:1] == ["ctl"] and len(f) in (4, 6):
            c.control.append([int(x) for x in f[1:]])
        elif f[:1] == ["end"] and len(f) in (5, 6):
            c.passes, c.visits, c.zaps, c.elapsed_ns = map(int, f[1:5])
            c.control_seen = int(f[5]) if len(f) == 6 else None
            c.ended = True
        elif line.strip():
            print(f"lostwrite: engine: {line.rstrip()}", file=sys.stderr)
    return c.ended


def write_findings(path: str, doc: Dict[str, Any]) -> None:
    """The findings as JSON (atomically): one key per line, the control rows one per line."""
    rest = {k: v for k, v in doc.items() if k != "control"}
    text = json.dumps(rest, indent=1)
    if "control" in doc:
        rows = ",\n  ".join(json.dumps(r) for r in doc["control"])
        text = text[:-2] + ',\n "control": [' + ("\n  " + rows + "\n " if rows else "") + "]\n}"
    tmp = path + ".tmp"
    with open(tmp, "w") as out:
        out.write(text + "\n")
    os.replace(tmp, path)


def run(p: Params) -> Outcome:
    """The detector; its Outcome.status is LOST_STATUS when anything was lost."""
    check_params(NAME, p)
    inject = parse_inject(p.inject)
    npages = region_pages(p)
    if inject and inject[0] >= npages:
        raise WorkloadError(f"--inject-loss: page {inject[0]} is beyond the file's {npages} pages")
    exe = engine()
    path, fd = scratch_file(p, NAME, npages * PAGE)
    c = Counters()
    interrupted: Optional[BaseException] = None
    try:
        st = os.fstat(fd)
        argv = engine_argv(exe, path, npages, p, inject)
        start_ns = time.monotonic_ns()        # CLOCK_MONOTONIC on Linux: the clock of the findings and the trace
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        except OSError as e:
            raise WorkloadError(f"cannot run the lostwrite engine {exe}: {e.strerror}") from None
        try:
            ended = _read(proc, c, path)
        except (KeyboardInterrupt, SystemExit) as e:
            # Ctrl-C or SIGTERM: the engine ends its run (it got SIGINT too, or gets
            # SIGTERM now) and prints what it counted; nothing found is dropped.
            interrupted = e
            proc.send_signal(signal.SIGTERM)
            ended = _read(proc, c, path)
        rc = proc.wait()
        if rc != 0 or not ended:
            raise WorkloadError(f"the lostwrite engine {exe} failed (exit status {rc})"
                                + ("" if ended else ", without its totals"))
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass
    elapsed = c.elapsed_ns / 1e9
    msg = (f"{len(c.lost)} lost writes in {c.passes} passes over {npages} shared file pages "
           f"({p.mapping} mapping, {c.visits} page visits, burst {p.burst}), {c.zaps} zaps by "
           f"{p.zappers} zapper(s), writeback {'with' if p.evict else 'without'} eviction ({p.writeback}), "
           f"{elapsed:.1f} s")
    settings = {k: v for k, v in p.values(NAME).items() if k not in ("quiet", "report", "findings")}
    doc = {"schema": SCHEMA, "file": path, "dev": st.st_dev, "ino": st.st_ino, "page_size": PAGE,
           "pages": npages, "mapping": p.mapping, "clock": "CLOCK_MONOTONIC", "passes": c.passes,
           "visits": c.visits, "burst": p.burst, "zaps": c.zaps, "zappers": p.zappers, "evict": p.evict,
           "writeback": p.writeback, "fault_first": p.fault_first, "time_stores": p.time_stores, "pin": p.pin,
           "start_ns": start_ns, "duration_s": elapsed, "interrupted": interrupted is not None,
           "injected": list(inject) if inject else None, "settings": settings,
           "lost": [x.to_json() for x in c.lost]}
    if p.control_sample:
        doc.update(control_sample=p.control_sample, control_seen=c.control_seen,
                   control_columns=list(CONTROL_COLUMNS[:5 if p.time_stores else 3]), control=c.control)
    if p.findings:
        write_findings(p.findings, doc)
    if interrupted is not None:
        print(f"lostwrite: interrupted: {msg}", file=sys.stderr)
        raise interrupted
    return Outcome(msg, c.zaps, elapsed, status=LOST_STATUS if c.lost else 0, extra=doc)
