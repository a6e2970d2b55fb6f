"""The analysis commands of the zaptrace CLI: report, export, compare.

``register(app)`` adds them to the main typer app (zaptrace/cli.py calls it
once; calling it again is harmless).  Written for typer 0.7 and current
typer alike (``name: T = typer.Option(default, "--flag", help=...)``).
pandas and matplotlib are imported only when a command runs.
"""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

CTX = {"help_option_names": ["-h", "--help"]}
DEFAULT_TRACE = "zaptrace.data"

REPORT_HELP = """Summarise a trace: per page, the gap from mapcount decrement to the covering TLB flush.

\b
Opens with the verdict: for dirty file pages, per zap path, whether the
mapcount dropped before the covering flush (the seed's race open, and how
many open windows had writeback inside) or after it (closed); anon and
clean file pages are said harmless, and why (--json: the "verdict" key).
Then the trace's facts (kernel, command, events per kind, lost events,
damage), and per class (anon, file-clean, file-dirty) and path (immediate:
a PTE decremented before the flush, as on 5.10/6.1; delayed: in
tlb_flush_rmaps after it, 6.2+; pmd/pud: a whole PMD/PUD mapping, shown
where present) the decrement counts, how many windows were open (gap > 0)
or closed, gap percentiles in signed microseconds, and the window hits
(folio_mkclean of the page while its window was open).  With --findings,
each lost write found by `zaptrace workload run lostwrite` is tied to the
recorded window that explains it (or counted as unexplained), and the same
join on the findings' random sample of visits that lost nothing is printed
beside it: how often it explains a visit by chance.

\b
Examples:
  zaptrace report                               # ./zaptrace.data
  zaptrace report t.zt --hits 50                # show 50 window-hit rows
  zaptrace report t.zt --json | jq '.classes["file-dirty"].open'
  zaptrace report t.zt --json | jq '.verdict["file-dirty"].paths.pmd'
  zaptrace report t.zt --html t.html            # HTML report with figures
  zaptrace report lw.zt --findings lw.json      # explain each lost write
  zaptrace report big.zt --max-memory 1G        # a trace larger than memory

\b
--max-memory SIZE analyses the trace window by window (analysis/stream.py):
the same figures and the same --json as in memory, in about SIZE plus 8
bytes per paired page and 60 per mkclean call; the text report says
"analysis: bounded memory (...)".  Not with --html or --findings.
Without it the whole trace is loaded (about 2.5 bytes of RAM per trace
byte), and memory freed along the way stays in the process for the next
arrays instead of being faulted in again (zaptrace/heap.py;
ZAPTRACE_HEAP=system keeps glibc's default).  The gap table's joins run as
compiled kernels (analysis/kernels.c, built with the system's C compiler on
first use; `zaptrace doctor` names the engine); without a compiler the same
analysis runs in numpy, slower (ZAPTRACE_KERNELS=numpy forces it).
"""

EXPORT_HELP = """Export a trace for other tools: Perfetto timeline, per-page gap table as Parquet or CSV.

\b
--perfetto writes Chrome trace-event JSON: open it at ui.perfetto.dev
(zaps and flushes as slices per thread, decrements and mkcleans as instants,
open windows and window hits as async slices; times in us since the first
event).  --parquet / --csv write the per-page gap table, one row per
decremented page (columns as zaptrace.analysis.gap_table).  Give one or more.

\b
Examples:
  zaptrace export t.zt --perfetto t.json
  zaptrace export t.zt --csv gaps.csv --parquet gaps.parquet
  python3 -c "import pandas as pd; print(pd.read_csv('gaps.csv').head())"
"""

COMPARE_HELP = """Compare traces (e.g. from different kernels) side by side, one column per trace.

\b
Opens with the traces' verdicts side by side (dirty file pages per zap
path: open or closed, how many decrements came before the flush, gap p50,
windows with writeback inside), then rows per class: decrements, delayed
share, open and closed windows, gap p50/p99 (signed us), window hits.
Columns are labelled by kernel release; --json has each trace's "verdict".

\b
Examples:
  zaptrace compare bullseye.zt bookworm.zt trixie.zt
  zaptrace compare a.zt b.zt --json > cmp.json
"""


def _already(app: typer.Typer, name: str) -> bool:
    return any((c.name or getattr(c.callback, "__name__", None)) == name for c in app.registered_commands)


def register(app: typer.Typer) -> None:
    """Add `report`, `export` and `compare` to `app` (once)."""
    if _already(app, "report"):
        return
    from .errors import clean_errors, info
    from . import heap

    @app.command("report", context_settings=CTX, help=REPORT_HELP)
    @clean_errors
    def report(
        file: str = typer.Argument(DEFAULT_TRACE, help="Trace file."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (schema zaptrace.report/1)."),
        html_out: Optional[str] = typer.Option(None, "--html", metavar="OUT",
                                               help="Also write a self-contained HTML report with figures."),
        hits: int = typer.Option(20, "--hits", metavar="N",
                                 help="Window-hit rows to show in the text and HTML reports (-1: all)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines for large traces."),
        findings: Optional[str] = typer.Option(None, "--findings", metavar="F.json",
                                               help="Lost writes found by `workload run lostwrite --findings`: "
                                                    "each is tied to the recorded window that explains it."),
        max_memory: Optional[str] = typer.Option(None, "--max-memory", metavar="SIZE",
                                                 help="Analyse in bounded memory, window by window (e.g. 1G): "
                                                      "same figures and --json as in memory."),
    ):
        from .analysis.export import check_writable
        from .analysis.report import analyse, parse_size, render_text

        limit = None if hits < 0 else hits
        mem = parse_size(max_memory) if max_memory else None
        if mem is not None and html_out:
            from .analysis.errors import AnalysisError
            raise AnalysisError("--html needs the in-memory analysis: drop --max-memory")
        if html_out:
            check_writable(html_out)
        if mem is None:
            heap.keep_freed_memory()
        a = analyse(file, None if quiet else info, findings=findings, max_memory=mem, max_hits=limit,
                    keep_events=bool(html_out))
        if as_json:
            sys.stdout.write(json.dumps(a.summary, indent=2) + "\n")
        else:
            sys.stdout.write(render_text(a, limit))
        if html_out:
            from .analysis.html import write_html
            write_html(a, html_out, limit)
            if not quiet:
                info(f"zaptrace: wrote {html_out}")

    @app.command("export", context_settings=CTX, help=EXPORT_HELP)
    @clean_errors
    def export(
        file: str = typer.Argument(DEFAULT_TRACE, help="Trace file."),
        perfetto: Optional[str] = typer.Option(None, "--perfetto", metavar="OUT.json",
                                               help="Chrome trace-event JSON for ui.perfetto.dev."),
        parquet: Optional[str] = typer.Option(None, "--parquet", metavar="OUT",
                                              help="The per-page gap table as Parquet (needs pyarrow)."),
        csv: Optional[str] = typer.Option(None, "--csv", metavar="OUT", help="The per-page gap table as CSV."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or 'wrote' lines."),
    ):
        from .analysis.errors import AnalysisError
        from .analysis import export as ex
        from .analysis.report import analyse

        outs = [p for p in (perfetto, parquet, csv) if p]
        if not outs:
            raise AnalysisError("export: give at least one of --perfetto OUT.json, --parquet OUT, --csv OUT")
        for p in outs:
            ex.check_writable(p)
        if parquet:
            ex.require_parquet(parquet)
        say = (lambda m: None) if quiet else info
        heap.keep_freed_memory()
        a = analyse(file, say, with_hits=bool(perfetto), keep_events=bool(perfetto))
        if perfetto:
            from .analysis.perfetto import write_perfetto
            n = write_perfetto(a.trace, a.gaps, a.hits, perfetto)
            say(f"zaptrace: wrote {perfetto}: {n['slices']:,} slices, {n['instants']:,} instants, "
                f"{n['windows']:,} open windows, {n['window_hits']:,} window hits (open it at ui.perfetto.dev)")
        for path, write in ((parquet, ex.write_parquet), (csv, ex.write_csv)):
            if path:
                write(a.gaps, path)
                say(f"zaptrace: wrote {path}: {len(a.gaps):,} pages")

    @app.command("compare", context_settings=CTX, help=COMPARE_HELP)
    @clean_errors
    def compare(
        files: List[str] = typer.Argument(..., metavar="TRACE", help="Two or more trace files (A B [C...])."),
        as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON (zaptrace.compare/1)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines for large traces."),
    ):
        from .analysis.compare import compare_json, render_compare
        from .analysis.errors import AnalysisError
        from .analysis.report import analyse

        if len(files) < 2:
            raise AnalysisError("compare needs at least two trace files")
        heap.keep_freed_memory()
        summaries = [analyse(f, None if quiet else info, with_hits=False).summary for f in files]
        if as_json:
            sys.stdout.write(json.dumps(compare_json(summaries), indent=2) + "\n")
        else:
            sys.stdout.write(render_compare(summaries))
