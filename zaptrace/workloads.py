"""Bundled workloads that make the kernel zap pages in the ways that matter.

They are plain Python over ctypes: every heavy call (memset over the
mapping, madvise, munmap, fsync) is a foreign call that releases the GIL,
so the dirtying thread, the zapping thread and the writeback process of
``race`` really run at the same time.

Files go to ``--dir``, else ``$ZAPTRACE_SCRATCH`` (the guest's block-backed
scratch filesystem), else the current directory.  Writeback, and so
folio_mkclean(), happens only on a block-backed filesystem: not on tmpfs
or 9p.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from .errors import ZaptraceError

PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
PMD_SIZE = 2 << 20          # x86-64: one PMD maps 2 MiB
MAP_FIXED = 0x10

#: --mapping: how the workload asks the kernel to map its memory.
#:   default  whatever the kernel does (THP "always" may give PMD mappings on 7.x)
#:   pte      MADV_NOHUGEPAGE: PTE mappings only (large folios may still be PTE-mapped)
#:   pmd      a 2 MiB-aligned mapping with MADV_HUGEPAGE: PMD-sized folios, PMD-mapped
#:            where the kernel and filesystem can (ext4 file folios: 6.16+; anon THP)
MAPPINGS = ("default", "pte", "pmd")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.madvise.restype = ctypes.c_int
_libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
_libc.memset.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.munmap.restype = ctypes.c_int
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_libc.prctl.restype = ctypes.c_int

PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE
MAP_FAILED = ctypes.c_void_p(-1).value


class WorkloadError(ZaptraceError):
    pass


@dataclass
class Params:
    pages: int = 256
    iterations: int = 200
    duration: Optional[float] = None
    directory: Optional[str] = None
    quiet: bool = False
    report: Optional[str] = None      # write {"workload", "elapsed_s", "zaps", "pages"} as JSON here
    mapping: str = "default"          # one of MAPPINGS
    # lostwrite only (zaptrace/lostwrite.py)
    zappers: int = 1                  # threads zapping the range
    burst: int = 16                   # stores per page visit (zaptrace/lostwrite.c)
    evict: bool = True                # the writeback process also evicts clean pages
    findings: Optional[str] = None    # write the lost writes found as JSON here
    inject: Optional[str] = None      # PAGE@PASS: put back an old copy of PAGE before PASS (tests)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise WorkloadError(f"{what} failed: {os.strerror(e)}")


def scratch_dir(p: Params) -> str:
    d = p.directory or os.environ.get("ZAPTRACE_SCRATCH") or os.getcwd()
    if not os.path.isdir(d):
        raise WorkloadError(f"scratch directory {d} does not exist")
    if not os.access(d, os.W_OK):
        raise WorkloadError(f"scratch directory {d} is not writable")
    return d


def scratch_file(p: Params, tag: str, size: int) -> Tuple[str, int]:
    """Create the workload's file of ``size`` bytes in its scratch directory: (path, fd)."""
    d = scratch_dir(p)
    path = os.path.join(d, f".zaptrace-{tag}-{os.getpid()}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise WorkloadError(f"cannot create the workload's file in {d}: {e.strerror}") from None
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise WorkloadError(f"cannot size the workload's file {path} to {size} bytes: {e.strerror}") from None
    return path, fd


def map_region(size: int, mapping: str, fd: int = -1) -> int:
    """mmap ``size`` bytes (MAP_SHARED of ``fd``, or private anonymous when fd < 0) as
    ``mapping`` asks; with "pmd" the address is 2 MiB-aligned.  Returns the address."""
    if mapping not in MAPPINGS:
        raise WorkloadError(f"unknown mapping {mapping!r}: choose from {', '.join(MAPPINGS)}")
    flags = mmap.MAP_SHARED if fd >= 0 else (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    hint = None
    if mapping == "pmd":
        # Reserve size + 2 MiB, then map at the first 2 MiB boundary inside it.
        res = _libc.mmap(None, size + PMD_SIZE, 0,    # PROT_NONE
                         mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if res in (None, MAP_FAILED):
            raise WorkloadError(f"mmap (reservation) failed: {os.strerror(ctypes.get_errno())}")
        hint = (res + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        _libc.munmap(res, size + PMD_SIZE)
        flags |= MAP_FIXED
    addr = _libc.mmap(hint, size, PROT_RW, flags, fd, 0)
    if addr in (None, MAP_FAILED):
        raise WorkloadError(f"mmap failed: {os.strerror(ctypes.get_errno())}")
    advice = {"pmd": MADV_HUGEPAGE, "pte": MADV_NOHUGEPAGE}.get(mapping)
    if advice is not None and _libc.madvise(addr, size, advice) != 0:
        e = ctypes.get_errno()
        _libc.munmap(addr, size)
        raise WorkloadError(f"madvise({'MADV_HUGEPAGE' if advice == MADV_HUGEPAGE else 'MADV_NOHUGEPAGE'}) "
                            f"failed: {os.strerror(e)} (a kernel without transparent huge pages?)")
    return addr


def region_pages(p: Params) -> int:
    """--pages, rounded up to whole PMDs for --mapping pmd."""
    if p.mapping == "pmd":
        per = PMD_SIZE // PAGE
        return -(-p.pages // per) * per
    return p.pages


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
        _libc.memset(self.addr, value & 0xFF, self.size)

    def zap(self) -> None:
        _check(_libc.madvise(self.addr, self.size, MADV_DONTNEED), "madvise(MADV_DONTNEED)")

    def close(self) -> None:
        if self.addr:
            _libc.munmap(self.addr, self.size)
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
                _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
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
        _libc.memset(addr, (c.n + 1) & 0xFF, size)
        _check(_libc.munmap(addr, size), "munmap")
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


@dataclass
class Outcome:
    message: str
    zaps: int
    elapsed_s: float
    status: int = 0           # the workload's exit status (lostwrite: 1 when writes were lost)
    #: further figures for the --report file (lostwrite: its whole findings document)
    extra: Dict[str, object] = field(default_factory=dict)


#: When set and --report is not given, the workload writes its --report JSON there: how
#: `zaptrace ab` collects a workload's own figures (zaps/s, visits/s, lost writes) from
#: inside a guest without changing the command it was given.
REPORT_ENV = "ZAPTRACE_WORKLOAD_REPORT"


def lostwrite(p: Params) -> Outcome:
    """The page's only writer checks each page's last value before writing it again, while
    zapper threads MADV_DONTNEED the range and a child writes back and evicts: a value that
    goes back is a lost write. Exit status 1 when any was lost (zaptrace/lostwrite.py)."""
    from .lostwrite import run as run_lostwrite
    return run_lostwrite(p)


WORKLOADS: Dict[str, Callable[[Params], Outcome]] = {
    "dontneed-shared": dontneed_shared,
    "munmap-anon": munmap_anon,
    "race": race,
    "lostwrite": lostwrite,
}


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def describe() -> Dict[str, str]:
    return {k: " ".join((v.__doc__ or "").split()) for k, v in WORKLOADS.items()}


def run(name: str, p: Params) -> Outcome:
    if name not in WORKLOADS:
        raise WorkloadError(f"unknown workload {name!r}; try: {', '.join(WORKLOADS)}")
    if p.pages <= 0:
        raise WorkloadError("--pages must be positive")
    if p.iterations < 0:
        raise WorkloadError("--iterations must not be negative")
    if p.duration is not None and not p.duration > 0:     # also NaN
        raise WorkloadError(f"--duration must be a positive number of seconds, not {p.duration}")
    if p.mapping not in MAPPINGS:
        raise WorkloadError(f"unknown mapping {p.mapping!r}: choose from {', '.join(MAPPINGS)}")
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
