"""Bundled workloads that make the kernel zap pages in the ways that matter.

They are plain Python over ctypes: every heavy call (memset over the
mapping, madvise, munmap, fsync) is a foreign call that releases the GIL,
so the dirtying thread, the zapping thread and the writeback process of
``race`` really run at the same time.

Files go to ``--dir``, else ``$ZAPTRACE_SCRATCH`` (the guest's block-backed
scratch filesystem), else the current directory.  Writeback, and so
folio_mkclean(), happens only on a block-backed filesystem: not on tmpfs
or 9p.

``WORKLOADS`` names every workload; lostwrite lives in zaptrace/lostwrite.py.
The options, ``Params``, the scratch files and ``Outcome`` are in
zaptrace/workload_base.py (re-exported here): a workload declares its own
options in its own module, and `zaptrace workload run` builds its command line
from them.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import os
import signal
import sys
import threading
import time
from typing import Callable, Dict, Iterable

from . import lostwrite as _lostwrite
# The shared pieces, kept importable from here as before (Params, WorkloadError, ...).
from .workload_base import (MAPPINGS, OPTIONS, PAGE, PMD_SIZE, REPORT_ENV, Outcome, Params,  # noqa: F401
                            WorkloadError, check_params, option, options_of, region_pages, scratch_dir,
                            scratch_file)

MADV_DONTNEED = 4
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MAP_FIXED = 0x10
PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE
MAP_FAILED = ctypes.c_void_p(-1).value
_LIBC = None


def libc() -> ctypes.CDLL:
    """The C library, loaded on first use (ctypes.util.find_library runs ldconfig: not at
    import, which every start of the CLI pays)."""
    global _LIBC
    if _LIBC is None:
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        lib.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        lib.madvise.restype = ctypes.c_int
        lib.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
        lib.memset.restype = ctypes.c_void_p
        lib.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                             ctypes.c_long)
        lib.mmap.restype = ctypes.c_void_p
        lib.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        lib.munmap.restype = ctypes.c_int
        lib.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
        lib.prctl.restype = ctypes.c_int
        _LIBC = lib
    return _LIBC


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise WorkloadError(f"{what} failed: {os.strerror(e)}")


def map_region(size: int, mapping: str, fd: int = -1) -> int:
    """mmap ``size`` bytes (MAP_SHARED of ``fd``, or private anonymous when fd < 0) as
    ``mapping`` asks; with "pmd" the address is 2 MiB-aligned.  Returns the address."""
    if mapping not in MAPPINGS:
        raise WorkloadError(f"unknown mapping {mapping!r}: choose from {', '.join(MAPPINGS)}")
    flags = mmap.MAP_SHARED if fd >= 0 else (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    hint = None
    if mapping == "pmd":
        # Reserve size + 2 MiB, then map at the first 2 MiB boundary inside it.
        res = libc().mmap(None, size + PMD_SIZE, 0,    # PROT_NONE
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if res in (None, MAP_FAILED):
            raise WorkloadError(f"mmap (reservation) failed: {os.strerror(ctypes.get_errno())}")
        hint = (res + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        libc().munmap(res, size + PMD_SIZE)
        flags |= MAP_FIXED
    addr = libc().mmap(hint, size, PROT_RW, flags, fd, 0)
    if addr in (None, MAP_FAILED):
        raise WorkloadError(f"mmap failed: {os.strerror(ctypes.get_errno())}")
    advice = {"pmd": MADV_HUGEPAGE, "pte": MADV_NOHUGEPAGE}.get(mapping)
    if advice is not None and libc().madvise(addr, size, advice) != 0:
        e = ctypes.get_errno()
        libc().munmap(addr, size)
        raise WorkloadError(f"madvise({'MADV_HUGEPAGE' if advice == MADV_HUGEPAGE else 'MADV_NOHUGEPAGE'}) "
                            f"failed: {os.strerror(e)} (a kernel without transparent huge pages?)")
    return addr


class SharedFile:
    """A file of N pages mapped MAP_SHARED (as Params.mapping asks); removed on close."""

    def __init__(self, p: Params, tag: str):
        self.size = region_pages(p) * PAGE
        self.addr = 0
        self.path, self.fd = scratch_file(p, tag, self.size)
        try:
            self.addr = map_region(self.size, p.mapping, self.fd)
        except (OSError, WorkloadError):
            self.close()
            raise

    def dirty(self, value: int) -> None:
        libc().memset(self.addr, value & 0xFF, self.size)

    def zap(self) -> None:
        _check(libc().madvise(self.addr, self.size, MADV_DONTNEED), "madvise(MADV_DONTNEED)")

    def close(self) -> None:
        if self.addr:
            libc().munmap(self.addr, self.size)
            self.addr = 0
        os.close(self.fd)
        try:
            os.unlink(self.path)
        except OSError:
            pass


PR_SET_PDEATHSIG = 1


class Writer:
    """A separate process that writes the file back in a loop (fsync: folio_mkclean),
    and with ``evict`` also drops the clean pages (POSIX_FADV_DONTNEED)."""

    def __init__(self, fd: int, evict: bool = False):
        # Signals stay blocked across fork until each side has its handlers.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        self.pid = os.fork()
        if self.pid == 0:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                # Never outlive the workload, however it ends.
                libc().prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
                if os.getppid() != 1:
                    while True:
                        os.fsync(fd)
                        if evict:
                            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os._exit(0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


class Clock:
    def __init__(self, p: Params):
        self.p = p
        self.t0 = time.monotonic()
        self.n = 0

    def more(self) -> bool:
        if self.p.duration is not None:
            return time.monotonic() - self.t0 < self.p.duration
        return self.n < self.p.iterations

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def dontneed_shared(p: Params) -> str:
    """Dirty MAP_SHARED file pages, zap them with MADV_DONTNEED, while a writer fsyncs."""
    f = SharedFile(p, "dontneed")
    w = Writer(f.fd)
    c = Clock(p)
    try:
        while c.more():
            f.dirty(c.n + 1)
            f.zap()
            c.n += 1
    finally:
        w.stop()
        f.close()
    return Outcome(f"{c.n} zaps of {f.size // PAGE} dirty shared file pages ({p.mapping} mapping) "
                   f"in {c.elapsed:.2f} s", c.n, c.elapsed)


def munmap_anon(p: Params) -> str:
    """Map anonymous memory, touch every page, munmap it."""
    size = region_pages(p) * PAGE
    c = Clock(p)
    while c.more():
        addr = map_region(size, p.mapping)
        libc().memset(addr, (c.n + 1) & 0xFF, size)
        _check(libc().munmap(addr, size), "munmap")
        c.n += 1
    return Outcome(f"{c.n} munmaps of {size // PAGE} anonymous pages ({p.mapping} mapping) "
                   f"in {c.elapsed:.2f} s", c.n, c.elapsed)


def race(p: Params) -> str:
    """One thread dirties shared file pages, one zaps them, another process writes back."""
    f = SharedFile(p, "race")
    w = Writer(f.fd)
    done = threading.Event()
    passes = [0]

    def dirtier():
        while not done.is_set():
            f.dirty(passes[0] + 1)
            passes[0] += 1

    t = threading.Thread(target=dirtier, daemon=True)
    t.start()
    c = Clock(p)
    try:
        while c.more():
            # Zap only pages the dirtier has touched since the last zap; its next
            # pass then runs on the other CPU while this zap is in the kernel.
            seen = passes[0]
            while passes[0] == seen and t.is_alive():
                time.sleep(0)
            f.zap()
            c.n += 1
    finally:
        done.set()
        t.join()
        w.stop()
        f.close()
    return Outcome(f"{c.n} zaps racing {passes[0]} dirtying passes over {f.size // PAGE} shared file pages "
                   f"({p.mapping} mapping) in {c.elapsed:.2f} s", c.n, c.elapsed)


def lostwrite(p: Params) -> Outcome:
    """The page's only writer checks each page's last value before writing it again, while
    zapper threads MADV_DONTNEED the range and a child writes back and evicts: a value that
    goes back is a lost write. Exit status 1 when any was lost (zaptrace/lostwrite.py)."""
    return _lostwrite.run(p)


WORKLOADS: Dict[str, Callable[[Params], Outcome]] = {
    "dontneed-shared": dontneed_shared,
    "munmap-anon": munmap_anon,
    "race": race,
    "lostwrite": lostwrite,
}
#: A workload's paragraph (and examples) in `zaptrace workload run --help`, where it has one.
HELP: Dict[str, str] = {_lostwrite.NAME: _lostwrite.CLI_HELP}


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def describe() -> Dict[str, str]:
    return {k: " ".join((v.__doc__ or "").split()) for k, v in WORKLOADS.items()}


def run(name: str, p: Params, given: Iterable[str] = ()) -> Outcome:
    """Run workload ``name`` with settings ``p``; ``given``: the options set on the command line
    (an option that ``name`` does not take is an error there)."""
    if name not in WORKLOADS:
        raise WorkloadError(f"unknown workload {name!r}; try: {', '.join(WORKLOADS)}")
    check_params(name, p, given)
    # SIGTERM unwinds like Ctrl-C, so the writer process and the file are cleaned up.
    signal.signal(signal.SIGTERM, _terminate)
    out = WORKLOADS[name](p)
    if not p.quiet:
        print(f"{name}: {out.message}", file=sys.stderr)
    report = p.report or os.environ.get(REPORT_ENV)
    if report:
        doc = dict(out.extra)
        doc.update({"workload": name, "elapsed_s": out.elapsed_s, "zaps": out.zaps,
                    "pages": region_pages(p), "mapping": p.mapping, "status": out.status})
        tmp = report + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, report)
    return out
