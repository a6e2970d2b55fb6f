"""Chrome trace-event JSON of a trace, for ui.perfetto.dev (or chrome://tracing).

What it shows, per thread (pid = tgid, tid = tid), ts in microseconds since
the trace's first event:

* complete ('X') slices: ``zap`` (the zap bracket), ``flush_tlb_mm_range``,
  ``tlb_flush_mmu``, ``tlb_flush_rmaps``; a call whose return was not
  recorded becomes an instant named ``<call> (no return)``;
* instants ('i'): ``rmap <class>`` per decremented page (``rmap other-path``
  for removals outside a zap) and ``mkclean`` per folio_mkclean call (args
  give its duration and return value);
* async slices ('b'/'e') on the zapping process's ``open window`` track, one
  per covering flush from its first open decrement to its completion, and
  on its ``window hit`` track, one per mkclean that hit an open window;
* metadata ('M') naming processes and threads.

The JSON is built column-wise with pandas (``to_json`` of whole frames),
never one Python call per event.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from zaptrace import __version__
from zaptrace.vocab import ANON, FILE_DIRTY, OTHER_PATH

from .export import write_atomic
from .gaps import calls, mkclean_calls
from .load import Trace
from .report import t0_of

_HEXDIGITS = np.frombuffer(b"0123456789abcdef", dtype="S1")
_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


def hex_u64(values: np.ndarray) -> np.ndarray:
    """'0x' + 16 hex digits for each uint64 (JSON numbers lose precision above 2**53)."""
    a = np.asarray(values).astype(np.uint64)
    digits = _HEXDIGITS[((a[:, None] >> _SHIFTS) & np.uint64(0xF)).astype(np.intp)]
    out = np.empty((len(a), 18), dtype="S1")
    out[:, 0], out[:, 1] = b"0", b"x"
    out[:, 2:] = digits
    return np.ascontiguousarray(out).view("S18").ravel().astype("U18")


def _lines(df: pd.DataFrame, args: Optional[pd.DataFrame] = None) -> List[str]:
    """One JSON object per row of `df`, with the row of `args` as its "args" object."""
    if df.empty:
        return []
    main = pd.Series(df.to_json(orient="records", lines=True, double_precision=3).rstrip("\n").split("\n"))
    if args is not None:
        a = args.to_json(orient="records", lines=True, double_precision=3).rstrip("\n").split("\n")
        main = main.str[:-1] + ',"args":' + pd.Series(a) + "}"
    return main.tolist()


def _us(ts, t0: int) -> np.ndarray:
    """Microseconds since t0 of int64 ns times (no missing value): the difference is taken in
    int64, exactly, and only then made a float."""
    return (np.asarray(ts, dtype=np.int64) - t0) / 1000.0


def _slices(c: pd.DataFrame, name: str, cat: str, t0: int, args: Optional[pd.DataFrame] = None) -> List[str]:
    """'X' slices for calls with a return, '<name> (no return)' instants for the others."""
    ok = c["done"].notna().to_numpy()
    ts = c["ts"].to_numpy(dtype=np.int64)
    done = c["done"].to_numpy(dtype=np.int64, na_value=0)
    start = _us(ts, t0)
    base = pd.DataFrame({"name": name, "cat": cat, "ph": "X", "ts": start, "dur": (done - ts) / 1000.0,
                         "pid": c["tgid"].to_numpy(), "tid": c["tid"].to_numpy()})
    out = _lines(base[ok], None if args is None else args[ok])
    lost = base[~ok].drop(columns="dur").assign(name=f"{name} (no return)", ph="i", s="t")
    return out + _lines(lost, None if args is None else args[~ok])


def _instants(name, cat: str, ts, pid, tid, t0: int, args: pd.DataFrame) -> List[str]:
    df = pd.DataFrame({"name": name, "cat": cat, "ph": "i", "s": "t", "ts": _us(ts, t0),
                       "pid": np.asarray(pid), "tid": np.asarray(tid)})
    return _lines(df, args)


def _async(name: str, first_id: int, start, end, pid, tid, t0: int, args: pd.DataFrame) -> List[str]:
    """Async slices [start, end] with ids first_id...; args on the begin events."""
    n = len(args)
    ids = np.arange(first_id, first_id + n)
    common = {"name": name, "cat": "window", "id": ids, "pid": np.asarray(pid), "tid": np.asarray(tid)}
    b = pd.DataFrame(dict(common, ph="b", ts=_us(start, t0)))
    e = pd.DataFrame(dict(common, ph="e", ts=_us(end, t0)))
    return _lines(b, args) + _lines(e)


def _windows(gaps: pd.DataFrame) -> pd.DataFrame:
    """Open windows grouped by covering flush: first decrement, flush completion, pages, hits."""
    g = gaps.loc[gaps["open"].to_numpy(), ["tgid", "tid", "flush_done_ts", "ts", "hits", "class"]]
    g = g.assign(anon=g["class"] == ANON, file_dirty=g["class"] == FILE_DIRTY)
    return (g.groupby(["tgid", "tid", "flush_done_ts"], sort=True)
             .agg(start=("ts", "min"), pages=("ts", "size"), anon=("anon", "sum"),
                  file_dirty=("file_dirty", "sum"), hits=("hits", "sum"))
             .reset_index())


def _names(trace: Trace, pairs: pd.DataFrame) -> List[str]:
    """process_name / thread_name metadata for the (pid, tid) pairs used."""
    pairs = pairs.drop_duplicates()
    target = (trace.head.get("target") or {}).get("child_pid")
    cmd = " ".join(trace.command) or "command"
    pids = pd.Series(pairs["pid"].unique())
    pname = "pid " + pids.astype(str)
    if target is not None:
        pname = pname.where(pids != int(target), f"{cmd} (pid {target})")
    procs = pd.DataFrame({"name": "process_name", "ph": "M", "pid": pids})
    threads = pd.DataFrame({"name": "thread_name", "ph": "M", "pid": pairs["pid"].to_numpy(),
                            "tid": pairs["tid"].to_numpy()})
    return (_lines(procs, pd.DataFrame({"name": pname}))
            + _lines(threads, pd.DataFrame({"name": "tid " + pairs["tid"].astype(str).to_numpy()})))


def chrome_trace(trace: Trace, gaps: pd.DataFrame, hits: pd.DataFrame) -> Dict[str, List[str]]:
    """The trace's events as Chrome JSON object strings, grouped by part (see module doc)."""
    ev, t0 = trace.events, t0_of(trace)
    parts: Dict[str, List[str]] = {"slices": [], "instants": [], "windows": [], "window_hits": []}
    zap = calls(ev, trace.code("zap_enter"), trace.code("zap_exit"))
    parts["slices"] += _slices(zap, "zap", "zap", t0,
                               pd.DataFrame({"mm": hex_u64(zap["mm"]), "start": hex_u64(zap["page"]),
                                             "end": hex_u64(zap["folio"])}))
    for name, en, ex in (("flush_tlb_mm_range", "flush_range_enter", "flush_range_exit"),
                         ("tlb_flush_mmu", "tlb_flush_enter", "tlb_flush_exit"),
                         ("tlb_flush_rmaps", "rmaps_enter", "rmaps_exit")):
        c = calls(ev, trace.code(en), trace.code(ex))
        parts["slices"] += _slices(c, name, "flush", t0, pd.DataFrame({"mm": hex_u64(c["mm"])}))

    g = gaps
    name = np.where(g["path"].to_numpy() == OTHER_PATH, "rmap " + OTHER_PATH,
                    "rmap " + g["class"].astype(str).to_numpy().astype(object))
    parts["instants"] += _instants(name, "rmap", g["ts"], g["tgid"], g["tid"], t0, pd.DataFrame({
        "page": hex_u64(g["page"]), "pfn": g["pfn"].to_numpy(), "class": g["class"].to_numpy(),
        "path": g["path"].to_numpy(), "gap_us": g["gap_ns"].to_numpy(dtype="float64", na_value=np.nan) / 1000.0,
        "hits": g["hits"].to_numpy()}))
    mk = mkclean_calls(trace)
    parts["instants"] += _instants("mkclean", "writeback", mk["ts"], mk["tgid"], mk["tid"], t0, pd.DataFrame({
        "folio": hex_u64(mk["folio"]), "pfn": mk["pfn"].to_numpy(),
        "took_us": (mk["done"] - mk["ts"]).to_numpy(dtype="float64", na_value=np.nan) / 1000.0,
        "ret": mk["ret"].astype("Int64").to_numpy()}))

    w = _windows(g)
    parts["windows"] = _async("open window", 1, w["start"], w["flush_done_ts"], w["tgid"], w["tid"], t0,
                              pd.DataFrame({"pages": w["pages"].to_numpy(), "anon": w["anon"].to_numpy(),
                                            "file_dirty": w["file_dirty"].to_numpy(),
                                            "hits": w["hits"].to_numpy()}))
    tgid_of = g.drop_duplicates("tid").set_index("tid")["tgid"]
    hp = tgid_of.reindex(hits["zap_tid"].to_numpy()).to_numpy()
    parts["window_hits"] = _async("window hit", 1 + len(w), hits["dec_ts"], hits["flush_done_ts"], hp,
                                  hits["zap_tid"], t0, pd.DataFrame({
                                      "page": hex_u64(hits["page"]), "class": hits["class"].to_numpy(),
                                      "mkclean_tid": hits["mkclean_tid"].to_numpy(),
                                      "mkclean_at_us": _us(hits["mkclean_enter_ts"], t0)}))
    parts["metadata"] = _names(trace, pd.DataFrame({"pid": ev["tgid"].to_numpy(), "tid": ev["tid"].to_numpy()}))
    return parts


def write_perfetto(trace: Trace, gaps: pd.DataFrame, hits: pd.DataFrame, path: str) -> Dict[str, int]:
    """Write the Chrome JSON to `path`; returns how many slices, instants, windows... it holds."""
    parts = chrome_trace(trace, gaps, hits)
    other: Dict[str, Any] = {"kernel": trace.kernel, "source": trace.path, "zaptrace": __version__,
                             "time": "microseconds since the first event"}
    tail = '\n],\n"displayTimeUnit": "ns",\n"otherData": ' + json.dumps(other) + "\n}\n"

    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write('{"traceEvents": [\n')
            f.write(",\n".join(",\n".join(part) for part in parts.values() if part))
            f.write(tail)
    write_atomic(path, w)
    # an async slice is two JSON events (begin, end)
    return {k: len(v) // 2 if k in ("windows", "window_hits") else len(v) for k, v in parts.items()}
