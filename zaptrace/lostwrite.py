"""`zaptrace workload run lostwrite`: does this kernel lose writes to shared file pages?

A content check that needs no BPF (usable on its own on real hardware):

* the **writer** (the main thread) is the only writer of every page of a
  MAP_SHARED file.  Each pass it walks the pages WRITE_CHUNK at a time: it
  checks that each page still holds the value it wrote in the previous pass,
  then writes the pass number into it (one 8-byte word per page).  Checks and
  stores are spread over the whole pass, so stores keep landing while a zap
  runs: a store through a stale TLB entry needs exactly that;
* **zappers** (threads of the same process: the stale entry must belong to
  the zapped mm) unmap the range with MADV_DONTNEED each time the writer has
  written a chunk since their last zap, so every zap finds mapped, dirty
  pages;
* a **writeback** child process writes the file back (fsync: folio_mkclean)
  and evicts the clean pages (POSIX_FADV_DONTNEED) in a loop.

Nobody else writes the file, so a page that shows an older value than the
writer's last one lost a write: it landed on a page that writeback had
already cleaned (through a stale TLB entry if the seed mail's race is the
cause), which was then evicted as clean and read back from disk without it.

Each lost write is printed and, with ``--findings``, written as JSON with
the file's device and inode, the page offset, the values and the times of
the lost write and of its discovery on CLOCK_MONOTONIC (the clock of
zaptrace's traces), so that `zaptrace report --findings` can join them with
a recording.  Exit status: 0 no lost write, 1 lost writes found, 2 error.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from . import workloads as W

SCHEMA = "zaptrace.lostwrite/1"
#: Pages checked and written between two looks at the clock and the zappers.
#: A whole-range check then a whole-range write (the first design) put every
#: store after the pass's reads had refaulted the range, long after the zap
#: that those reads waited for: 0 lost writes in 300 s on 6.1 with 128,340
#: mkclean calls inside open windows.  Chunks have not found one either yet
#: (6.1 untraced 300 s, 7.2 PMD traced 600 s; README "Does it lose data?").
WRITE_CHUNK = 16
#: GIL switch interval: a zapper needs the GIL between two madvise() calls and
#: the writer holds it while it runs; Python's default (5 ms) would pace the zaps.
SWITCH_INTERVAL = 0.0002
#: The workload's exit status when it found lost writes (0: none, 2: an error).
LOST_STATUS = 1


@dataclass
class Lost:
    page: int
    expected: int
    found: int
    written_ns: Tuple[int, int]      # the pass that wrote `expected`: [start, end] on CLOCK_MONOTONIC
    found_ns: int

    def to_json(self) -> dict:
        return {"page": self.page, "offset": self.page * W.PAGE, "expected": self.expected,
                "found": self.found, "written_ns": list(self.written_ns), "found_ns": self.found_ns}


@dataclass
class Counters:
    passes: int = 0
    chunks: int = 0          # chunks written: a zapper waits for a new one
    zaps: int = 0
    lost: List[Lost] = field(default_factory=list)


def parse_inject(spec: Optional[str]) -> Optional[Tuple[int, int]]:
    """--inject-loss PAGE@PASS -> (page, pass)."""
    if not spec:
        return None
    try:
        page, _, npass = spec.partition("@")
        out = (int(page), int(npass))
    except ValueError:
        raise W.WorkloadError(f"--inject-loss expects PAGE@PASS (e.g. 3@10), not {spec!r}") from None
    if out[0] < 0 or out[1] < 2:
        raise W.WorkloadError("--inject-loss: PAGE must be >= 0 and PASS >= 2")
    return out


def _report_line(path: str, lost: Lost) -> str:
    return (f"lostwrite: LOST WRITE in {path} page {lost.page} (offset {lost.page * W.PAGE:#x}): "
            f"expected {lost.expected}, found {lost.found}; written at {lost.written_ns[0] / 1e9:.6f}-"
            f"{lost.written_ns[1] / 1e9:.6f} s, found at {lost.found_ns / 1e9:.6f} s (CLOCK_MONOTONIC)")


def run(p: W.Params) -> W.Outcome:
    """The detector; its Outcome.status is LOST_STATUS when anything was lost."""
    inject = parse_inject(p.inject)
    if p.zappers < 0:
        raise W.WorkloadError("--zappers must not be negative")
    f = W.SharedFile(p, "lostwrite")
    npages = f.size // W.PAGE
    if inject and inject[0] >= npages:
        f.close()
        raise W.WorkloadError(f"--inject-loss: page {inject[0]} is beyond the file's {npages} pages")
    st = os.fstat(f.fd)
    words = np.ctypeslib.as_array((ctypes.c_uint64 * (f.size // 8)).from_address(f.addr))
    heads = words[:: W.PAGE // 8]                 # one 8-byte word at the start of each page
    c = Counters()
    pass_times: List[Tuple[int, int]] = [(0, 0)]  # pass k wrote value k between these times
    done = threading.Event()

    def zapper():
        seen = -1
        while not done.is_set():
            if c.chunks == seen:
                time.sleep(0)
                continue
            seen = c.chunks
            W._check(W._libc.madvise(f.addr, f.size, W.MADV_DONTNEED), "madvise(MADV_DONTNEED)")
            c.zaps += 1

    wb = W.Writer(f.fd, evict=p.evict)
    threads = [threading.Thread(target=zapper, daemon=True) for _ in range(p.zappers)]
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    for t in threads:
        t.start()
    clock = W.Clock(p)
    try:
        while clock.more():
            k = c.passes + 1
            if inject and k == inject[1]:
                # A deterministic "loss" for tests: put back an older copy of the page
                # behind the writer's back, write it back and evict it.
                os.pwrite(f.fd, int(k - 2).to_bytes(8, "little"), inject[0] * W.PAGE)
                os.fsync(f.fd)
                if p.evict:
                    os.posix_fadvise(f.fd, 0, 0, os.POSIX_FADV_DONTNEED)
            start = time.monotonic_ns()
            for a in range(0, npages, WRITE_CHUNK):
                seg = heads[a:a + WRITE_CHUNK]
                bad = np.flatnonzero(seg != k - 1)
                if len(bad):
                    now = time.monotonic_ns()
                    found = seg[bad].copy()
                    for i, v in zip(bad.tolist(), found.tolist()):
                        lost = Lost(a + i, k - 1, v, pass_times[k - 1], now)
                        c.lost.append(lost)
                        print(_report_line(f.path, lost), file=sys.stderr, flush=True)
                seg[:] = k
                c.chunks += 1
            pass_times.append((start, time.monotonic_ns()))
            c.passes = k
            clock.n = k
    finally:
        done.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(old_switch)
        wb.stop()
        path = f.path
        f.close()
    elapsed = clock.elapsed
    msg = (f"{len(c.lost)} lost writes in {c.passes} passes over {npages} shared file pages "
           f"({p.mapping} mapping), {c.zaps} zaps by {p.zappers} zapper(s), writeback "
           f"{'with' if p.evict else 'without'} eviction, {elapsed:.1f} s")
    if p.findings:
        doc = {"schema": SCHEMA, "file": path, "dev": st.st_dev, "ino": st.st_ino, "page_size": W.PAGE,
               "pages": npages, "mapping": p.mapping, "clock": "CLOCK_MONOTONIC", "passes": c.passes,
               "zaps": c.zaps, "zappers": p.zappers, "evict": p.evict, "duration_s": elapsed,
               "injected": list(inject) if inject else None, "lost": [x.to_json() for x in c.lost]}
        tmp = p.findings + ".tmp"
        with open(tmp, "w") as out:
            json.dump(doc, out, indent=1)
        os.replace(tmp, p.findings)
    return W.Outcome(msg, c.zaps, elapsed, status=LOST_STATUS if c.lost else 0)
