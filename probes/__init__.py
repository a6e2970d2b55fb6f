"""BPF C sources of zaptrace, shipped as package data of ``zaptrace.probes``.

The source tree keeps them in the top-level folder ``probes/``; they install
inside the zaptrace package (see pyproject.toml).

``SOURCE`` is the BPF program, ``EVENT_HEADER`` the event layout that both the
BPF side and the Python reader (:mod:`zaptrace.layout`) use.
"""
from pathlib import Path

DIR = Path(__file__).resolve().parent
SOURCE = DIR / "zaptrace.bpf.c"
EVENT_HEADER = DIR / "zaptrace_event.h"
