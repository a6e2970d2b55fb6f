"""BPF C sources of zaptrace, shipped as package data.

``SOURCE`` is the BPF program, ``EVENT_HEADER`` the event layout that both the
BPF side and the Python reader (:mod:`zaptrace.layout`) use.
"""
from pathlib import Path

DIR = Path(__file__).resolve().parent
SOURCE = DIR / "zaptrace.bpf.c"
EVENT_HEADER = DIR / "zaptrace_event.h"
