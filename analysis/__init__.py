"""zaptrace analysis: trace file -> DataFrames -> per-page gap table -> report.

The source tree keeps this package in the top-level folder ``analysis/``; it
installs as ``zaptrace.analysis`` (see pyproject.toml).

Notebook API::

    from zaptrace import analysis
    t = analysis.load("zaptrace.data")      # events as a DataFrame: t.events
    g = analysis.gap_table(t)               # one row per decremented page
    s = analysis.summarize(t, g)            # per-class figures (what `zaptrace report --json` prints)
"""
from .errors import AnalysisError
from .load import Trace, load

__all__ = ["AnalysisError", "Trace", "load", "gap_table", "summarize"]


def gap_table(trace):
    from .gaps import gap_table as _g
    return _g(trace)


def summarize(trace, gaps=None):
    from .summary import summarize as _s
    return _s(trace, gaps)
