"""What an analysis of one trace yields (``Analysis``), whichever way it was made.

Its own module so that the two ways of making one, ``report.analyse`` (in memory) and
``stream.analyse_bounded`` (window by window), and what renders it (``report``, ``html``),
all import it from here: ``report`` calls ``stream``, never the reverse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import pandas as pd

from .load import Trace


@dataclass
class Analysis:
    """Everything a report shows about one trace."""

    trace: Trace
    gaps: pd.DataFrame        # gaps.gap_table
    hits: pd.DataFrame        # gaps.hit_table
    summary: Dict[str, Any]   # summary.summarize (+ "lost_writes" with findings)
    lost: Optional[pd.DataFrame] = None   # lostwrites.join, with findings
    #: window hits in all (``hits`` may hold only the first ones: the bounded path keeps those shown)
    hits_total: Optional[int] = None
    #: how the trace was analysed: None in memory, else a line for the report (see analysis.stream)
    mode: Optional[str] = None
