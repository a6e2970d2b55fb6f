"""The heap policy of the in-memory analysis commands (report, export, compare).

The in-memory analysis allocates and frees arrays of tens to hundreds of MiB
again and again: the trace's records and their sorted copy, per-kind
selections, search temporaries, gap-table columns.  glibc serves every block
above its mmap threshold (128 KiB, rising with use up to 32 MiB) with a fresh
``mmap`` and returns it to the kernel when it is freed, so the next block of
that size is faulted in again, 4 KiB at a time, zeroed by the kernel: the
same memory is paid for many times.  ``keep_freed_memory`` makes glibc serve
every block from the heap and keep freed memory for the next allocation,
until the process exits.  The process's peak memory is about the same (the
largest arrays are alive at the same time either way); what goes is the
repeated page faulting.

Measured with ``zaptrace report --json`` of the 10 M-event synthetic trace
(``bench/analysis_bench.py``), 3 interleaved runs each, on the 2-core host of
this project (a VM whose freed memory goes back to its hypervisor, so a
re-faulted page costs more than on bare metal): see bench/HISTORY.md (the
round at f0d81b6).  ``ZAPTRACE_HEAP=system`` keeps glibc's defaults (to
compare, or where freed memory must go back at once).

The same policy stops numpy from asking for transparent huge pages for its
large arrays (numpy calls madvise(MADV_HUGEPAGE) on every block of 4 MiB or
more).  Where the kernel's THP ``defrag`` setting is ``madvise`` (the kernel's
default), each such fault may compact memory first: on this project's host
the first write of 843 MiB of arrays took 1.6-2.1 s on the kept heap with
that advice and 0.3 s without, and ``zaptrace report --json`` of the 10 M
event trace spent 1.9 s in the kernel against 0.9 s, 6.3 against 5.4 s of
wall time; at 50 M events the two were within their spread (31.3 against
32.0 s: there the huge pages saved about as much user CPU as their faults
cost).  See docs/benchmarks.md, "Analysis speed".  Without the advice the
kernel's own THP setting decides.  A user who sets numpy's
``NUMPY_MADVISE_HUGEPAGE`` keeps numpy's choice.

Not for the bounded path (``--max-memory``): it frees each window's arrays so
that the next window can use the memory, and its peak is what it promises.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Freed memory kept at the top of the heap before glibc gives it back: the largest
#: value mallopt takes (an int), 2 GiB.
KEEP = 2**31 - 1

ENV = "ZAPTRACE_HEAP"
#: numpy's switch of its huge-page advice (read when numpy is imported): set, it stands
NUMPY_THP_ENV = "NUMPY_MADVISE_HUGEPAGE"

_applied = None


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap (no mmap per large block) and keep freed
    memory in the process.  True when applied (glibc, not turned off by
    ``ZAPTRACE_HEAP=system``); False otherwise, with nothing changed.  Idempotent."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "") == "system":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):         # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The trim threshold first: with it, memory freed at the top of the heap stays.
    if mallopt(M_TRIM_THRESHOLD, KEEP) != 1:
        return False
    # No mmap for large blocks: they come from the heap too, and are reused when freed.
    _applied = mallopt(M_MMAP_MAX, 0) == 1
    if _applied:
        no_hugepage_advice()
    return _applied


_thp_advice_off = False


def no_hugepage_advice() -> bool:
    """Stop numpy's madvise(MADV_HUGEPAGE) on its large arrays (see the module doc).  True
    when turned off; False when the user set NUMPY_MADVISE_HUGEPAGE (numpy's choice stands)
    or this numpy has no switch for it."""
    global _thp_advice_off
    if _thp_advice_off:
        return True
    if NUMPY_THP_ENV in os.environ:
        return False
    import importlib
    # numpy 2 moved numpy.core to numpy._core (the old name warns)
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            switch = importlib.import_module(mod)._set_madvise_hugepage
        except (ImportError, AttributeError):
            continue
        switch(False)
        _thp_advice_off = True
        return True
    return False


def policy() -> str:
    """One line for reports and benchmarks: which heap policy this process runs with."""
    if _applied:
        thp = "numpy's huge-page advice off" if _thp_advice_off else \
            f"numpy's huge-page advice as {NUMPY_THP_ENV} says" if NUMPY_THP_ENV in os.environ else \
            "numpy's huge-page advice unchanged"
        return ("heap: freed memory kept in the process (glibc mallopt), " + thp
                + " (ZAPTRACE_HEAP=system for glibc's and numpy's defaults)")
    return "heap: glibc's default"
