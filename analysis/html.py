"""The HTML report: one self-contained file (figures as base64 PNG, inline CSS, no URLs).

Figures (matplotlib, drawn on Agg canvases; pyplot and the global backend
are left alone, so this is safe to call from a notebook):

1. the signed gap distribution per class, one panel per class, immediate
   and delayed decrements as separate histograms on mirrored log bins
   (symmetric-log axis: closed windows left of 0, open windows right);
2. the cumulative distribution of the signed gap per class;
3. the timeline of one representative zap, one lane per CPU and event
   kind: zap bracket, tlb_flush_mmu, flush_tlb_mm_range, tlb_flush_rmaps,
   decrements (coloured by class) with their open windows, and mkcleans of
   the zapped folios.  The zap is the one with the most window hits, else
   the one with the most decrements.

The report opens with the verdict (analysis.verdict), before the trace's facts, the
tables (the terminal report's) and the figures.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from zaptrace.vocab import ANON, DELAYED, FILE_CLEAN, FILE_DIRTY, IMMEDIATE, OTHER_PATH, PMD, PUD

from .export import write_text
from .gaps import CLASSES, calls, mkclean_calls
from .report import class_table, header_lines, hit_rows, t0_of
from .result import Analysis
from .verdict import NONE, verdict_of

COLORS = {ANON: "#1f77b4", FILE_CLEAN: "#2ca02c", FILE_DIRTY: "#d62728"}
PATH_STYLE = {IMMEDIATE: dict(color="#444444", ls="-"), DELAYED: dict(color="#ff7f0e", ls="--"),
              PMD: dict(color="#d62728", ls="-."), PUD: dict(color="#9467bd", ls=":")}
BINS_PER_DECADE = 8
CDF_POINTS = 2000


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _paired_us(gaps: pd.DataFrame) -> pd.DataFrame:
    g = gaps.loc[gaps["paired"].to_numpy(), ["class", "path", "gap_ns"]]
    # paired rows always have a gap; float only for plotting
    return g.assign(gap_us=g["gap_ns"].to_numpy(dtype="float64", na_value=np.nan) / 1000.0)


def _linthresh(us: np.ndarray) -> Tuple[float, float]:
    """Decade bounds (lo, hi) of the nonzero |gap| values in us: the symlog linear zone is |x| < lo."""
    mag = np.abs(us[us != 0])
    if len(mag) == 0:
        return 0.1, 10.0
    lo = 10.0 ** np.floor(np.log10(mag.min()))
    hi = 10.0 ** np.ceil(np.log10(mag.max()))
    return lo, max(hi, lo * 10)


def _mirrored_bins(lo: float, hi: float) -> np.ndarray:
    n = int(round(np.log10(hi / lo))) * BINS_PER_DECADE + 1
    pos = np.logspace(np.log10(lo), np.log10(hi), n)
    return np.concatenate([-pos[::-1], pos])


def fig_distribution(gaps: pd.DataFrame) -> Figure:
    """Histogram of the signed gap per class (panels), one line per zap path (immediate, delayed, pmd, pud)."""
    p = _paired_us(gaps)
    lo, hi = _linthresh(p["gap_us"].to_numpy())
    bins = _mirrored_bins(lo, hi)
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    axes = fig.subplots(len(CLASSES), 1, sharex=True)
    for ax, c in zip(axes, CLASSES):
        pc = p[p["class"] == c]
        for path, style in PATH_STYLE.items():
            v = pc.loc[pc["path"] == path, "gap_us"].to_numpy()
            if len(v):
                counts, _ = np.histogram(np.clip(v, bins[0], bins[-1]), bins=bins)
                ax.stairs(counts, bins, label=f"{path} ({len(v):,})", lw=1.8, **style)
        if pc.empty:
            ax.text(0.5, 0.5, "no paired decrements", transform=ax.transAxes, ha="center", va="center",
                    color="gray")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xscale("symlog", linthresh=lo, linscale=0.5)
        ax.set_title(f"{c}", loc="left", color=COLORS[c], fontweight="bold")
        ax.set_ylabel("pages")
        ax.grid(alpha=0.3)
        if not pc.empty:
            ax.legend(loc="best", title="decrement path")
        ax.text(0, 0.95, "  open: mapcount dropped before the flush \u2192", transform=ax.get_xaxis_transform(),
                ha="left", va="top", fontsize=8, color="dimgray")
        ax.text(0, 0.95, "\u2190 closed: flush completed first  ", transform=ax.get_xaxis_transform(),
                ha="right", va="top", fontsize=8, color="dimgray")
    axes[-1].set_xlabel(f"gap = flush completion \u2212 mapcount decrement (\u00b5s, symmetric log; "
                        f"linear within \u00b1{lo:g} \u00b5s)")
    fig.suptitle("Signed gap distribution per page class")
    return fig


def fig_cdf(gaps: pd.DataFrame) -> Figure:
    """CDF of the signed gap per class."""
    p = _paired_us(gaps)
    lo, _ = _linthresh(p["gap_us"].to_numpy())
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.subplots()
    for c in CLASSES:
        v = np.sort(p.loc[p["class"] == c, "gap_us"].to_numpy())
        if len(v) == 0:
            continue
        idx = np.unique(np.linspace(0, len(v) - 1, min(len(v), CDF_POINTS)).astype(np.int64))
        ax.step(v[idx], (idx + 1) / len(v), where="post", color=COLORS[c], lw=1.8,
                label=f"{c} ({len(v):,} paired)")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xscale("symlog", linthresh=lo, linscale=0.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("gap = flush completion \u2212 mapcount decrement (\u00b5s, symmetric log)")
    ax.set_ylabel("fraction of paired decrements \u2264 gap")
    ax.set_title("Cumulative distribution of the signed gap (right of 0: window open)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no paired decrements", transform=ax.transAxes, ha="center", color="gray")
    return fig


def pick_zap(gaps: pd.DataFrame) -> Optional[Tuple[int, int]]:
    """(tid, zap_ts) of the zap with the most window hits, else with the most decrements."""
    z = gaps.loc[(gaps["path"] != OTHER_PATH).to_numpy() & gaps["zap_ts"].notna().to_numpy(),
                 ["tid", "zap_ts", "hits"]]
    if z.empty:
        return None
    agg = z.groupby(["tid", "zap_ts"], sort=True).agg(n=("hits", "size"), hits=("hits", "sum"))
    best = agg.sort_values(["hits", "n"], ascending=False, kind="stable").index[0]
    return int(best[0]), int(best[1])


LANES = ("zap", "tlb_flush_mmu", "flush_tlb_mm_range", "tlb_flush_rmaps", "rmap", "mkclean")
LANE_COLORS = {"zap": "#999999", "tlb_flush_mmu": "#9467bd", "flush_tlb_mm_range": "#17becf",
               "tlb_flush_rmaps": "#bcbd22", "mkclean": "#8c564b"}


def _known(col: pd.Series) -> np.ndarray:
    """The non-missing values of a (nullable) int64 ns column."""
    return col.to_numpy(dtype=np.int64, na_value=0)[col.notna().to_numpy()]


def _timeline_items(a: Analysis, tid: int, zap_ts: int) -> Tuple[Dict[str, pd.DataFrame], pd.DataFrame, int, int]:
    """Calls per lane kind (ts, done, cpu) and the zap's decrements, within the zap's time span
    [start, end] (int64 ns)."""
    tr, ev = a.trace, a.trace.events
    g = a.gaps
    dec = g[(g["tid"].to_numpy() == tid) & (g["zap_ts"] == zap_ts).fillna(False).to_numpy(dtype=bool)]
    zaps = calls(ev, tr.code("zap_enter"), tr.code("zap_exit"))
    zap = zaps[(zaps["tid"] == tid) & (zaps["ts"] == zap_ts)]
    ends = np.concatenate([_known(dec["ts"]), _known(dec["flush_done_ts"]), _known(zap["done"])])
    start, end = int(zap_ts), int(ends.max())
    items: Dict[str, pd.DataFrame] = {}

    def clip(c: pd.DataFrame, own: bool) -> pd.DataFrame:
        done = c["done"].to_numpy(dtype=np.int64, na_value=end)       # still running: to the end
        keep = (c["ts"].to_numpy() <= end) & (done >= start)
        if own:
            keep &= c["tid"].to_numpy() == tid
        return pd.DataFrame({"ts": c["ts"].to_numpy()[keep], "done": done[keep], "cpu": c["cpu"].to_numpy()[keep]})

    items["zap"] = clip(zap, True)
    for name, en, ex in (("tlb_flush_mmu", "tlb_flush_enter", "tlb_flush_exit"),
                         ("flush_tlb_mm_range", "flush_range_enter", "flush_range_exit"),
                         ("tlb_flush_rmaps", "rmaps_enter", "rmaps_exit")):
        items[name] = clip(calls(ev, tr.code(en), tr.code(ex)), True)
    mk = mkclean_calls(tr)
    mk = mk[mk["folio"].isin(dec["folio"].unique())]
    items["mkclean"] = clip(mk, False)
    return items, dec, start, end


def fig_timeline(a: Analysis, pick: Optional[Tuple[int, int]] = None,
                 lost: Optional[Tuple[int, float, float]] = None) -> Figure:
    """One zap on per-CPU lanes (see module doc); ``lost`` = (page, written from, to) marks a lost write."""
    fig = Figure(figsize=(11, 5.5), layout="constrained")
    ax = fig.subplots()
    pick = pick or pick_zap(a.gaps)
    if pick is None:
        ax.text(0.5, 0.5, "no zap with decrements in this trace", transform=ax.transAxes, ha="center")
        ax.set_axis_off()
        return fig
    tid, zap_ts = pick
    items, dec, start, end = _timeline_items(a, tid, zap_ts)
    own = int(items["zap"]["cpu"].iloc[0]) if len(items["zap"]) else int(dec["cpu"].iloc[0])
    cpus = sorted(set(dec["cpu"].tolist()).union(*[set(df["cpu"].tolist()) for df in items.values()]),
                  key=lambda c: (c != own, c))
    rows: List[Tuple[int, str]] = [(c, k) for c in cpus for k in LANES
                                   if (k == "rmap" and (dec["cpu"] == c).any())
                                   or (k != "rmap" and (items[k]["cpu"] == c).any())]
    y = {r: len(rows) - 1 - i for i, r in enumerate(rows)}
    h = a.hits
    hit_mk = h.loc[(h["zap_tid"].to_numpy() == tid) & h["dec_ts"].isin(dec["ts"]).to_numpy(), "mkclean_enter_ts"]
    # int64 difference first, then float for plotting
    us = lambda t: (np.asarray(t, dtype=np.int64) - start) / 1000.0  # noqa: E731
    for (cpu, kind), yy in y.items():
        if kind == "rmap":
            d = dec[dec["cpu"] == cpu]
            op = d[d["open"].to_numpy()]
            if len(op):
                ax.barh(yy, us(op["flush_done_ts"].max()) - us(op["ts"].min()), left=us(op["ts"].min()),
                        height=0.8, color="#ffe680", alpha=0.6, label="open window (decrement \u2192 flush done)")
            hit = d[d["hits"].to_numpy() > 0]
            for c in CLASSES:
                dc = d[d["class"] == c]
                if len(dc):
                    ax.vlines(us(dc["ts"]), yy - 0.35, yy + 0.35, color=COLORS[c], lw=1,
                              label=f"decrement: {c} ({len(dc)})")
            if len(hit):
                ax.hlines(np.full(len(hit), yy), us(hit["ts"]), us(hit["flush_done_ts"]), color="red", lw=2,
                          label="open window hit by mkclean")
        else:
            c = items[kind]
            c = c[c["cpu"] == cpu]
            hit = c["ts"].isin(hit_mk).to_numpy() if kind == "mkclean" else np.zeros(len(c), bool)
            for sel, extra in ((~hit, dict(edgecolor="black", lw=0.5, label=kind)),
                               (hit, dict(edgecolor="red", lw=2, label="mkclean that hit an open window"))):
                if sel.any():
                    ax.barh(np.full(int(sel.sum()), yy), us(c["done"][sel]) - us(c["ts"][sel]),
                            left=us(c["ts"][sel]), height=0.6, color=LANE_COLORS[kind], **extra)
    if lost is not None:
        page, w0, w1 = lost
        ax.axvspan(float(us(w0)), max(float(us(w1)), float(us(w0)) + 0.002 * (end - start) / 1000.0),
                   color="red", alpha=0.25, label=f"pass that wrote the lost value (page {page})")
    for i in range(1, len(rows)):
        if rows[i][0] != rows[i - 1][0]:
            ax.axhline(len(rows) - i - 0.5, color="black", lw=0.6)
    ax.set_yticks(list(y.values()), [f"CPU {c}  {k}" for c, k in y])
    span = (end - start) / 1000.0 or 1.0
    ax.set_xlim(-0.03 * span, 1.03 * span)
    ax.set_xlabel(f"time since zap entry (\u00b5s); zap entry at "
                  f"{(zap_ts - t0_of(a.trace)) / 1e6:.3f} ms into the trace")
    ax.set_title(f"One zap by tid {tid}: {len(dec):,} decrements, {int(dec['hits'].sum())} window hits")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else "r"}">{html.escape(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _reason_rows(counts: Dict[str, int]) -> List[List[str]]:
    return [[f"{n:,}", r] for r, n in sorted(counts.items(), key=lambda kv: -kv[1])]


CSS = """body{font-family:sans-serif;margin:2em;max-width:75em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:.2em .6em;border-bottom:1px solid #ddd}
th{background:#f0f0f0;text-align:right}td.r{text-align:right;font-variant-numeric:tabular-nums}
td.l{text-align:left}pre{background:#f7f7f7;padding:.8em}figure{margin:1em 0 2em}img{max-width:100%}
figcaption{color:#555;font-size:90%}#verdict .open{color:#b00000}#verdict .harmless{color:#555}"""


def verdict_html(v: Dict) -> str:
    """The verdict (analysis.verdict) as the report's first section: the dirty file pages'
    state, a line per path with decrements (open ones marked), the harmless classes."""
    d = v[FILE_DIRTY]
    items = [f'<li class="{p["state"]}">{html.escape(p["text"])}</li>' for p in d["paths"].values()
             if p["state"] != NONE]
    items += [f'<li class="harmless">{html.escape(v[c]["text"])}</li>' for c in (ANON, FILE_CLEAN)]
    if v.get("caveat"):
        items.append(f'<li class="caveat">caveat: {html.escape(v["caveat"])}</li>')
    return (f'<section id="verdict"><h2>Verdict</h2><p class="{d["state"]}"><strong>'
            f'{html.escape(d["text"])}</strong></p><ul>{"".join(items)}</ul></section>')


def render_html(a: Analysis, max_hits: Optional[int] = 100) -> str:
    """The whole report as one self-contained HTML document."""
    s = a.summary
    figs = [("Signed gap distribution", fig_distribution(a.gaps),
             "Per class, the gap from each page's mapcount decrement to the completion of the TLB flush "
             "that covers it. Right of 0 the window was open: another CPU could still hold a stale TLB "
             "entry while the page no longer counted as mapped."),
            ("Cumulative distribution", fig_cdf(a.gaps), "The same gaps as cumulative fractions per class."),
            ("Timeline of one zap", fig_timeline(a),
             "The zap with the most window hits (else the most decrements); lanes per CPU and event.")]
    reasons: Dict[str, int] = {}
    for c in CLASSES:
        for r, n in s["classes"][c]["unpaired_reasons"].items():
            reasons[r] = reasons.get(r, 0) + n
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>zaptrace report: "
             f"{html.escape(s['file'])}</title><style>{CSS}</style></head><body>",
             f"<h1>zaptrace report: {html.escape(s['kernel'])}</h1>",
             verdict_html(verdict_of(s)),
             "<pre>" + html.escape("\n".join(header_lines(s))) + "</pre>"]
    parts.append("<h2>Decrement \u2192 covering flush completion, per class and path</h2>"
                 "<p>Gaps in signed \u00b5s: &gt; 0 the window was open that long; \u2264 0 the flush came first.</p>")
    parts.append(_table(*class_table(s), left=2))
    parts.append(f"<h3>Other-path removals (never paired): {s['other_path']['count']:,}</h3>")
    parts.append(_table(["count", "reason"], _reason_rows(s["other_path"]["reasons"])))
    parts.append(f"<h3>Unpaired decrements: {sum(reasons.values()):,}</h3>")
    parts.append(_table(["count", "reason"], _reason_rows(reasons)))
    if a.lost is not None:
        from .lostwrites import chance_line
        from .report import lost_rows
        ls = s["lost_writes"]
        parts.append(f"<h2>Lost writes: {ls['lost_writes']:,} (explained: {ls['explained']:,}, "
                     f"unexplained: {ls['unexplained']:,})</h2><p>Found by content in "
                     f"{html.escape(str(ls['findings']['file']))} (inode {ls['findings']['ino']}); each tied to "
                     "an open window of that page with a folio_mkclean inside it while the lost value was "
                     f"written.</p><p>{html.escape(chance_line(ls))}</p>")
        if len(a.lost):
            parts.append(_table(*lost_rows(a.lost, t0_of(a.trace)), left=0))
        ex = a.lost[a.lost["explained"].to_numpy()]
        if len(ex):
            r = ex.iloc[0]
            figs.append((f"Timeline of the zap behind the lost write on page {r['page']}",
                         fig_timeline(a, (int(r["tid"]), int(r["zap_ts"])),
                                      (int(r["page"]), r["written_ns"], r["written_end_ns"])),
                         "The red band is the writer's pass that wrote the value later found missing."))
    for title, fig, caption in figs:
        parts.append(f"<h2>{html.escape(title)}</h2><figure><img alt=\"{html.escape(title)}\" "
                     f"src=\"data:image/png;base64,{_png(fig)}\"><figcaption>{html.escape(caption)}"
                     "</figcaption></figure>")
    parts.append(f"<h2>Window hits: {s['window_hits']:,}</h2><p>mkclean of the folio overlapping an open "
                 "window [decrement, flush completion].</p>")
    if len(a.hits):
        header, rows = hit_rows(a.hits, t0_of(a.trace), max_hits)
        parts.append(_table(header, rows, left=0))
        if len(a.hits) > len(rows):
            parts.append(f"<p>\u2026 {len(a.hits) - len(rows):,} more not shown.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(a: Analysis, path: str, max_hits: Optional[int] = 100) -> None:
    """Render and write the HTML report atomically."""
    write_text(render_html(a, max_hits), path)

