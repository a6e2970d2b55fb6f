"""The answer first: is the seed's race open for dirty file pages, per zap path?

The race of the seed (Linus's "delay the rmap" mail, Oct 2022): a dirty file page's mapcount
drops while another CPU may still write through a stale TLB entry; writeback
(``folio_mkclean``) then finds no mapping to clean, and the write made through the stale
entry after it is lost.  A path is *open* where some paired decrement came before its
covering flush completed (gap > 0), *closed* where every one came after it.  The other
classes cannot lose a write that way, and the verdict says why.

``verdict(summary)`` computes it once from a ``summary.summarize`` dict (it is the
summary's ``"verdict"``); ``verdict_lines`` prints it (``report``, ``compare``, the HTML
report); ``path_text`` is the sentence of one path, shared with ``zaptrace ab``.  Pure
Python on the summary's figures: no numpy, no pandas, no other analysis module.

Shape (JSON)::

    {"file-dirty": {"state": "open", "open_paths": ["pmd"],
                    "text": "dirty file pages: the seed's race is open on the PMD path",
                    "paths": {"pmd": {"state": "open", "decrements": 320, "paired": 320,
                                      "unpaired": 0, "open": 320, "closed": 0,
                                      "gap_p50_ns": 812000.0, "windows_hit": 20, "hits": 23,
                                      "text": "PMD path: mapcount dropped before ..."},
                              "immediate": {"state": "none", ...}, ...}},
     "anon": {"state": "harmless", "paired": 10, "open": 10, "why": "...", "text": "anon: ..."},
     "file-clean": {"state": "harmless", ...},
     "caveat": null}

Path states: "open", "closed", "bypassed" (closed by the mapcount, but writeback ran between
an entry's clear and its flush without waiting for the page-table lock: ``windows_bypassed``
windows; open for the race), "unpaired" (decrements, none paired with a flush), "none" (no
decrements).  The class's state: "open" if any path is, else "closed" if any path has
pairs, else "unpaired" or "none".  ``windows_hit``: the open windows with a mkclean of the
folio inside (one window per page of a PTE path, per mapping of a PMD/PUD path);
``hits``: the (window, mkclean) pairs.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from zaptrace.vocab import ANON, DELAYED, FILE_CLEAN, FILE_DIRTY, IMMEDIATE, PMD, PUD

OPEN, CLOSED, UNPAIRED, NONE, HARMLESS = "open", "closed", "unpaired", "none", "harmless"
#: Closed by the mapcount, yet writeback did not wait for the zap (PathRule.bypass in gaps.py).
BYPASSED = "bypassed"
BYPASS_MEANING = ("writeback did not wait for the page-table lock (it ran between an entry's clear and its "
                  "flush): the seed's race is open here")
PATH_LABELS = {IMMEDIATE: "immediate (PTE) path", DELAYED: "delayed (PTE) path", PMD: "PMD path", PUD: "PUD path"}
OPEN_MEANING = "the seed's race is open here"
CLOSED_MEANING = "closed (the mapcount drops after the flush)"
#: Why a class cannot lose a write through a stale TLB entry after its mapcount dropped.
WHY_HARMLESS = {
    ANON: "anonymous pages have no writeback; a write through a stale TLB entry goes to memory "
          "the zap discards anyway",
    FILE_CLEAN: "a clean PTE/PMD cannot be written through a stale TLB entry without faulting, since the "
                "CPU must first set the dirty bit in the entry, which is already cleared",
}


def _us(ns: Optional[float]) -> str:
    """Signed microseconds, as report.fmt_us: +12.3, -0.8, +0.004; '-' when unknown."""
    if ns is None or ns != ns:
        return "-"
    us = ns / 1000.0
    return f"{us:+.3f}" if us != 0 and abs(us) < 0.1 else f"{us:+.1f}"


def _n(k: int, word: str) -> str:
    return f"{k:,} {word}" + ("" if k == 1 else "s")


def path_state(decrements: int, paired: int, open_: int, bypassed: int = 0) -> str:
    if paired:
        return OPEN if open_ else (BYPASSED if bypassed else CLOSED)
    return UNPAIRED if decrements else NONE


def path_text(path: str, decrements: int, paired: int, open_: int, gap_p50_ns: Optional[float],
              windows_hit: Optional[int], hits: int = 0, p50_of: str = "", bypassed: int = 0) -> str:
    """One path's verdict sentence, e.g. "PMD path: mapcount dropped before the flush in 320 of
    320 paired decrements (gap p50 +812.0 us); writeback inside 20 windows: the seed's race is
    open here".  ``windows_hit`` None (figures that lack it): the window hits are counted
    instead.  ``p50_of``: what the p50 is of, when not of the decrements (e.g. "median of 3
    runs")."""
    label = PATH_LABELS.get(path, f"{path} path")
    state = path_state(decrements, paired, open_, bypassed)
    if state == NONE:
        return f"{label}: no decrements"
    if state == UNPAIRED:
        return f"{label}: {_n(decrements, 'decrement')}, none paired with a flush: no verdict"
    extra = [f"gap p50 {_us(gap_p50_ns)} us" + (f", {p50_of}" if p50_of else "")]
    if decrements > paired:
        extra.append(f"{decrements - paired:,} more not paired")
    head = (f"{label}: mapcount dropped before the flush in {open_:,} of {_n(paired, 'paired decrement')} "
            f"({'; '.join(extra)})")
    if state == CLOSED:
        return f"{head}: {CLOSED_MEANING}"
    if state == BYPASSED:
        return f"{head}, but in {_n(bypassed, 'window')} {BYPASS_MEANING}"
    if windows_hit is None:
        hit, inside = hits, (_n(hits, "window hit") if hits else "no window hit")
    else:
        hit = windows_hit
        inside = f"writeback inside {_n(windows_hit, 'window')}" if windows_hit else "no writeback inside a window"
    return f"{head}; {inside}: {OPEN_MEANING}" + ("" if hit else ", not hit in this trace")


def _path(path: str, b: Dict[str, Any]) -> Dict[str, Any]:
    p50 = b["gap_ns"]["p50"]
    bypassed = b.get("pages_bypassed", 0)
    return {"state": path_state(b["decrements"], b["paired"], b["open"], bypassed),
            "decrements": b["decrements"], "paired": b["paired"], "unpaired": b["unpaired"],
            "open": b["open"], "closed": b["closed"], "gap_p50_ns": p50,
            "windows_hit": b["pages_hit"], "hits": b["hits"], "windows_bypassed": bypassed,
            "text": path_text(path, b["decrements"], b["paired"], b["open"], p50, b["pages_hit"], b["hits"],
                              bypassed=bypassed)}


def _labels(paths: List[str]) -> str:
    names = [PATH_LABELS.get(p, f"{p} path") for p in paths]
    if len(names) > 1:
        names = [n.removesuffix(" path") for n in names]
        return ", ".join(names[:-1]) + " and " + names[-1] + " paths"
    return names[0]


def _dirty(block: Dict[str, Any]) -> Dict[str, Any]:
    paths = {p: _path(p, b) for p, b in block["by_path"].items()}
    states = [v["state"] for v in paths.values()]
    open_paths = [p for p, v in paths.items() if v["state"] in (OPEN, BYPASSED)]
    if open_paths:
        state, text = OPEN, f"the seed's race is open on the {_labels(open_paths)}"
    elif CLOSED in states:
        state, text = CLOSED, "closed on every path with pairs (the mapcount drops after the flush)"
    elif UNPAIRED in states:
        state, text = UNPAIRED, f"{_n(block['decrements'], 'decrement')}, none paired with a flush: no verdict"
    else:
        state, text = NONE, "no decrements recorded: no verdict"
    return {"state": state, "open_paths": open_paths, "text": "dirty file pages: " + text, "paths": paths}


def _harmless(cls: str, b: Dict[str, Any]) -> Dict[str, Any]:
    figures = (f"{b['open']:,} of {_n(b['paired'], 'paired decrement')} before the flush" if b["paired"]
               else "no paired decrements")
    return {"state": HARMLESS, "decrements": b["decrements"], "paired": b["paired"], "open": b["open"],
            "why": WHY_HARMLESS[cls], "text": f"{cls}: harmless ({figures}): {WHY_HARMLESS[cls]}"}


def verdict(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The verdict of a summary (see the module doc for its shape)."""
    classes = summary["classes"]
    out = {FILE_DIRTY: _dirty(classes[FILE_DIRTY])}
    out.update({c: _harmless(c, classes[c]) for c in (ANON, FILE_CLEAN)})
    caveat = None
    if summary.get("lost_events"):
        suspect = classes[FILE_DIRTY]["loss_suspect"]
        caveat = (f"{summary['lost_events']:,} events were lost: "
                  + (f"{_n(suspect, 'dirty file decrement')} fall where events were lost, their gaps may be wrong"
                     if suspect else "no dirty file decrement falls where they were lost"))
    out["caveat"] = caveat
    return out


def verdict_of(summary: Dict[str, Any]) -> Dict[str, Any]:
    """The summary's verdict (computed when the summary has none)."""
    return summary.get("verdict") or verdict(summary)


def verdict_lines(v: Dict[str, Any]) -> List[str]:
    """The verdict as text: the dirty file pages' state, a line per path with decrements,
    then one line per harmless class and the caveat (lines after the first indented)."""
    d = v[FILE_DIRTY]
    lines = ["Verdict: " + d["text"]]
    lines += [f"  {p['text']}" for p in d["paths"].values() if p["state"] != NONE]
    lines += [f"  {v[c]['text']}" for c in (ANON, FILE_CLEAN)]
    if v.get("caveat"):
        lines.append(f"  caveat: {v['caveat']}")
    return lines


def cell(p: Dict[str, Any]) -> str:
    """A path's verdict in a few words, for a table: 'open: 2 of 2, p50 +0.9 us, writeback inside
    1 window', 'closed: 0 of 36, p50 -20.0 us', 'unpaired: 5', '-'."""
    if p["state"] == NONE:
        return "-"
    if p["state"] == UNPAIRED:
        return f"unpaired: {p['decrements']:,}"
    text = f"{p['state']}: {p['open']:,} of {p['paired']:,}, p50 {_us(p['gap_p50_ns'])} us"
    if p["state"] == OPEN:
        text += f", writeback inside {_n(p['windows_hit'], 'window')}" if p["windows_hit"] else ", no writeback inside"
    return text


def short(v: Dict[str, Any]) -> str:
    """The dirty file pages' state in a few words: 'open: PMD path', 'closed', 'no pairs', 'no decrements'."""
    d = v[FILE_DIRTY]
    if d["state"] == OPEN:
        return "open: " + _labels(d["open_paths"])
    return {CLOSED: "closed", UNPAIRED: "no pairs", NONE: "no decrements"}[d["state"]]
