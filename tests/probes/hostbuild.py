"""The --summary state machine (probes/summary.bpf.h) built on the host with gcc, and a replay.

tests/probes/summary_host.c gives the header plain C tables for maps; gcc
builds it into a shared library in a temporary folder, loaded with ctypes.
``replay(trace)`` feeds a trace's events in trace order through the same calls
the BPF handlers make and returns the summary in the shape the recorder stores
(zaptrace.summary.from_slots).
"""
from __future__ import annotations

import ctypes
import glob
import shutil
import subprocess
from pathlib import Path

import numpy as np

from zaptrace import summary as ksummary
from zaptrace.layout import layout
from zaptrace.probes import DIR as PROBES_DIR

SHIM = Path(__file__).resolve().parent / "summary_host.c"
# As strict as we can: the header must stay valid plain C, not only BPF-clang C.
CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared"]


def gcc() -> str:
    return shutil.which("gcc") or ""


def build(outdir: Path) -> ctypes.CDLL:
    so = Path(outdir) / "zt_summary_host.so"
    cmd = [gcc(), *CFLAGS, "-I", str(PROBES_DIR), "-o", str(so), str(SHIM)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise AssertionError(f"gcc failed ({' '.join(cmd)}):\n{r.stderr}")
    lib = ctypes.CDLL(str(so))
    for name in ("zh_event_size", "zh_hist_slots", "zh_sum_slots", "zh_full"):
        getattr(lib, name).restype = ctypes.c_ulong
    lib.zh_hist.restype = lib.zh_sums.restype = ctypes.POINTER(ctypes.c_uint64)
    lib.zh_pending.restype = ctypes.c_uint64
    lib.zh_pending.argtypes = [ctypes.c_uint32]
    lib.zh_replay.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_uint]
    lib.zh_log2l.restype = ctypes.c_uint
    lib.zh_log2l.argtypes = [ctypes.c_ulong]
    return lib


def libbcc() -> str:
    """The installed libbcc (python3-bpfcc's dependency), or ""."""
    for pat in ("/usr/lib/*/libbcc.so.0", "/usr/lib64/libbcc.so.0", "/usr/lib/libbcc.so.0"):
        found = sorted(glob.glob(pat))
        if found:
            return found[0]
    return ""


def bcc_log2l(lib_path: str, outdir: Path) -> ctypes.CDLL:
    """BCC's own bpf_log2l, as libbcc embeds it in its helpers.h, built with gcc: to hold the
    shim's stand-in to the contract the BPF program gets.  Taken from the installed
    library at test time, never kept in this repository."""
    data = Path(lib_path).read_bytes()
    start = data.find(b"unsigned int bpf_log2(unsigned int v)")
    end = data.find(b"}", data.find(b"return bpf_log2(v) + 1;", start))
    if start < 0 or end < 0:
        raise AssertionError(f"bpf_log2/bpf_log2l not found in {lib_path}'s helpers.h")
    src = Path(outdir) / "bcc_log2l.c"
    src.write_bytes(b"static inline " + data[start:end + 1]
                    + b"\nunsigned int bcc_bpf_log2l(unsigned long v) { return bpf_log2l(v); }\n")
    so = Path(outdir) / "bcc_log2l.so"
    r = subprocess.run([gcc(), "-std=gnu11", "-O2", "-fPIC", "-shared", "-o", str(so), str(src)],
                       capture_output=True, text=True)
    if r.returncode:
        raise AssertionError(f"gcc failed on BCC's bpf_log2l:\n{r.stderr}")
    lib = ctypes.CDLL(str(so))
    lib.bcc_bpf_log2l.restype = ctypes.c_uint
    lib.bcc_bpf_log2l.argtypes = [ctypes.c_ulong]
    return lib


def covering_flush_exit(head: dict) -> str:
    """The kind whose return completes a covering flush, as the BPF program is compiled:
    flush_tlb_mm_range's when it was attached (ZT_HAVE_FLUSHRANGE), else tlb_flush_mmu's.
    The analysis decides the same way (analysis.gaps.flush_source)."""
    attached = {p.get("event"): bool(p.get("attach")) for p in head.get("probes") or []}
    return "FLUSH_RANGE_EXIT" if attached.get("flush_range", True) else "TLB_FLUSH_EXIT"


def replay(lib: ctypes.CDLL, events: np.ndarray, head: dict) -> dict:
    """The in-kernel summary of these events (a trace's, in its time order)."""
    L = layout()
    if lib.zh_event_size() != L.dtype.itemsize:
        raise AssertionError(f"struct zt_event is {lib.zh_event_size()} bytes in C, {L.dtype.itemsize} in the dtype")
    ev = np.ascontiguousarray(events, dtype=L.dtype)
    lib.zh_reset()
    lib.zh_replay(ev.ctypes.data, len(ev), L.kinds[covering_flush_exit(head)])
    if lib.zh_full():
        raise AssertionError("a host table filled up: the kernel's LRU maps would have evicted; use a smaller trace")
    nh, ns = lib.zh_hist_slots(), lib.zh_sum_slots()
    hist = np.ctypeslib.as_array(lib.zh_hist(), shape=(nh,)).astype(np.int64)
    sums = np.ctypeslib.as_array(lib.zh_sums(), shape=(ns,)).astype(np.int64)
    leftover = np.array([lib.zh_pending(c) for c in range(len(ksummary.CLASSES))], dtype=np.int64)
    return ksummary.from_slots(hist, sums, leftover)
