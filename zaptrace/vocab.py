"""The names of page classes and zap paths, declared once.

The kernel summary's classes and paths are C enums in
probes/zaptrace_summary.h (``enum zt_class``, ``enum zt_path``), each member
with its name as a quoted string in its comment: the BPF state machine indexes
its slots by the enum, and everything in Python (the --summary reader, the
analysis, the report) takes the names from here, in enum order.  The analysis
has paths the kernel summary only counts (PMD/PUD mappings, other paths):
their names are declared below.  Event kinds and flags are parsed from
probes/zaptrace_event.h by :mod:`zaptrace.layout`.
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

from .probes import DIR as PROBES_DIR

SUMMARY_HEADER = PROBES_DIR / "zaptrace_summary.h"


def parse_enum_names(text: str, enum: str) -> Tuple[str, ...]:
    """Names of ``enum <enum>``'s members in value order: each member reads
    ``ZT_X = <n>, /* "<name>" ... */`` and the values run 0, 1, 2..."""
    m = re.search(r"enum\s+%s\s*\{(.*?)\};" % re.escape(enum), text, re.S)
    if not m:
        raise ValueError(f"{SUMMARY_HEADER.name}: no enum {enum}")
    found: Dict[int, str] = {}
    for value, name in re.findall(r"ZT_\w+\s*=\s*(\d+)\s*,?\s*/\*\s*\"([^\"]+)\"", m.group(1)):
        found[int(value)] = name
    if sorted(found) != list(range(len(found))) or not found:
        raise ValueError(f"{SUMMARY_HEADER.name}: enum {enum} must number its named members 0, 1, 2...")
    return tuple(found[i] for i in range(len(found)))


_TEXT = SUMMARY_HEADER.read_text()

#: Page classes, in the kernel summary's slot order.
CLASSES = parse_enum_names(_TEXT, "zt_class")
ANON, FILE_CLEAN, FILE_DIRTY = CLASSES

#: Zap paths the kernel summary pairs and histograms, in its slot order.
SUMMARY_PATHS = parse_enum_names(_TEXT, "zt_path")
IMMEDIATE, DELAYED = SUMMARY_PATHS

#: Paths of the analysis only (the kernel summary counts them, never pairs them).
PMD = "pmd"                 # a whole PMD mapping of a folio removed in a zap
PUD = "pud"                 # a whole PUD mapping
OTHER_PATH = "other-path"   # a removal outside any zap and tlb_flush_rmaps
