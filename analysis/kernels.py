"""The gap pipeline's compiled kernels (analysis/kernels.c), loaded with ctypes.

``asof``, ``shift`` and ``hit_ranges`` compute exactly what their numpy twins in
analysis/gaps.py compute (``_asof``, ``_shift_np`` with periods +-1, ``_hit_ranges``),
in one sweep over time-ordered rows with a hash map instead of sorts and binary
searches.  Each returns None when it cannot take the call (no library, an input it
does not handle); gaps.py then runs its numpy version.  The rules of the measure are
not here: only joins by key and time.

The library is built from kernels.c with the system's C compiler on first use
(zaptrace/cbuild.py: the tree's build/ or ~/.cache/zaptrace/bin).  Without a
compiler the analysis runs in numpy, slower, with the same results, and says so
once on stderr.  ``ZAPTRACE_KERNELS=numpy`` forces numpy (``=c`` makes a failed
build an error instead of a fallback).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from zaptrace import cbuild

from .errors import AnalysisError

SOURCE = Path(__file__).with_name("kernels.c")
CFLAGS = ("-O2", "-std=c99", "-Wall", "-shared", "-fPIC")
ENV = "ZAPTRACE_KERNELS"
ENGINES = ("c", "numpy")

_lib: Optional[ctypes.CDLL] = None
_why: Optional[str] = None           # why the C kernels are not used (None: they are, or not tried yet)
_tried = False
_forced: Optional[str] = None        # set by ``engine_forced``


class KernelError(AnalysisError):
    """ZAPTRACE_KERNELS=c and the library could not be built or loaded."""


_P = ctypes.c_void_p
_I = ctypes.c_int64


def _load() -> ctypes.CDLL:
    path = cbuild.build(SOURCE, f"kernels-{cbuild.digest(SOURCE, CFLAGS)}.so", CFLAGS)
    lib = ctypes.CDLL(path)
    lib.zt_asof.argtypes = [_I, _P, _P, _P, _P, _I, _P, _P, _P, _P, ctypes.c_int, ctypes.c_int, _P]
    lib.zt_shift.argtypes = [_I, _P, _P, _P, ctypes.c_int, _I, _P]
    lib.zt_hit_ranges.argtypes = [_I, _P, _P, _P, _I, _P, _P, _P, _P, _P]
    for f in (lib.zt_asof, lib.zt_shift, lib.zt_hit_ranges):
        f.restype = ctypes.c_int
    return lib


def wanted() -> str:
    """The engine asked for: ``engine_forced``, else $ZAPTRACE_KERNELS, else "c"."""
    if _forced:
        return _forced
    e = os.environ.get(ENV, "c").strip().lower() or "c"
    if e not in ENGINES:
        raise KernelError(f"${ENV}={e}: expected one of {', '.join(ENGINES)}")
    return e


def _try() -> Optional[ctypes.CDLL]:
    """Build and load the library once per process; None (and ``_why``) when that failed."""
    global _lib, _why, _tried
    if not _tried:
        _tried = True
        try:
            _lib = _load()
        except (cbuild.BuildError, OSError) as err:
            _why = str(err)
            if os.environ.get(ENV, "").strip().lower() == "c":
                _tried = False
                raise KernelError(f"${ENV}=c: {err}") from None
            print(f"zaptrace: analysis kernels in numpy (slower, same results): {err}", file=sys.stderr)
    return _lib


def lib() -> Optional[ctypes.CDLL]:
    """The loaded library, or None: numpy asked for, or no build (said once on stderr)."""
    return None if wanted() == "numpy" else _try()


def status() -> str:
    """One line: which engine the gap pipeline uses and why (``zaptrace doctor``)."""
    if wanted() == "numpy":
        return f"numpy (${ENV}=numpy)"
    got = _try()
    return f"compiled kernels ({got._name})" if got is not None else f"numpy, slower ({_why})"


@contextlib.contextmanager
def engine_forced(name: str) -> Iterator[None]:
    """Run the block with the given engine ("c" or "numpy"): tests and benchmarks."""
    global _forced
    if name not in ENGINES:
        raise ValueError(name)
    old, _forced = _forced, name
    try:
        yield
    finally:
        _forced = old


def _ptr(a: Optional[np.ndarray]) -> Optional[int]:
    return None if a is None else a.ctypes.data


def _keys(by: Sequence[np.ndarray]) -> Optional[List[np.ndarray]]:
    """One or two key columns as contiguous uint64 (equal values stay equal), else None."""
    if not 1 <= len(by) <= 2:
        return None
    out = []
    for b in by:
        b = np.asarray(b)
        if b.dtype.kind not in "iub":
            return None
        out.append(np.ascontiguousarray(b, dtype=np.uint64) if b.dtype.kind != "i"
                   else np.ascontiguousarray(b.astype(np.int64, copy=False).view(np.uint64)))
    return out


def _time_order(t: np.ndarray) -> Optional[np.ndarray]:
    """None when ``t`` is already nondecreasing, else its stable sort order."""
    if len(t) < 2 or (t[1:] >= t[:-1]).all():
        return None
    return np.ascontiguousarray(np.argsort(t, kind="stable"), dtype=np.int64)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise MemoryError(f"analysis kernel {what}: out of memory")


def asof(lt: np.ndarray, lby, rt: np.ndarray, rok: np.ndarray, rby, direction: str,
         exact: bool) -> Optional[np.ndarray]:
    """``gaps._asof`` (same arguments, same result), or None when not taken."""
    L = lib()
    if L is None or not lby:
        return None
    lk, rk = _keys(lby), _keys(rby)
    if lk is None or rk is None or len(lk) != len(rk):
        return None
    n = len(lt)
    lt = np.ascontiguousarray(lt, dtype=np.int64)
    rpos = None
    if not rok.all():                       # only the valid right rows, as _asof
        rpos = np.flatnonzero(rok)
        rt, rk = rt[rpos], [k[rpos] for k in rk]
    rt = np.ascontiguousarray(rt, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    lo, ro = _time_order(lt), _time_order(rt)
    _check(L.zt_asof(n, _ptr(lt), _ptr(lk[0]), _ptr(lk[1] if len(lk) > 1 else None), _ptr(lo),
                     len(rt), _ptr(rt), _ptr(rk[0]), _ptr(rk[1] if len(rk) > 1 else None), _ptr(ro),
                     int(direction == "backward"), int(bool(exact)), _ptr(out)), "asof")
    if rpos is not None:
        hit = out >= 0
        out[hit] = rpos[out[hit]]
    return out


def shift(t: np.ndarray, by, periods: int, fill: int) -> Optional[np.ndarray]:
    """``gaps._shift_np`` for periods 1 and -1, or None when not taken."""
    L = lib()
    if L is None or periods not in (1, -1):
        return None
    k = _keys(by)
    if k is None:
        return None
    t = np.ascontiguousarray(t, dtype=np.int64)
    out = np.empty(len(t), dtype=np.int64)
    _check(L.zt_shift(len(t), _ptr(t), _ptr(k[0]), _ptr(k[1] if len(k) > 1 else None), int(periods), int(fill),
                      _ptr(out)), "shift")
    return out


def hit_ranges(m_folio: np.ndarray, m_ts: np.ndarray, m_end: np.ndarray, ts: np.ndarray, folio: np.ndarray,
               f_done: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``gaps._hit_ranges`` on mkclean calls sorted by folio whose starts and ends rise in
    each folio's run (the caller checks), or None when not taken."""
    L = lib()
    if L is None:
        return None
    mk, q = _keys([m_folio]), _keys([folio])
    if mk is None or q is None:
        return None
    m_ts = np.ascontiguousarray(m_ts, dtype=np.int64)
    m_end = np.ascontiguousarray(m_end, dtype=np.int64)
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    f_done = np.ascontiguousarray(f_done, dtype=np.int64)
    n = len(ts)
    lo, count = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    _check(L.zt_hit_ranges(len(m_ts), _ptr(mk[0]), _ptr(m_ts), _ptr(m_end), n, _ptr(ts), _ptr(q[0]), _ptr(f_done),
                           _ptr(lo), _ptr(count)), "hit_ranges")
    return lo, count

