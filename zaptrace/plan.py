"""The probe plan for the running kernel: catalog choices + BPF source + cflags.

``zaptrace doctor``, ``zaptrace record`` and ``zaptrace record --ebpf`` all
start here, so they always agree on what would be attached and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import probes

from . import catalog, kernel


class PlanError(Exception):
    """Recording cannot work on this kernel (one line, with what to do)."""


NO_KPROBES_HINT = ("record inside a guest that has them, e.g. "
                   "`zaptrace vm run --kernel 6.1 -- zaptrace record -- CMD`")


@dataclass
class Plan:
    release: str
    symbols: kernel.Symbols
    checks: List[kernel.Check]
    choices: List[catalog.Choice]
    ringbuf: bool
    ringbuf_pages: int
    btf: bool
    extra_cflags: List[str] = field(default_factory=list)

    @property
    def cflags(self) -> List[str]:
        # -w: the kernel headers draw clang warnings (6.12) that say nothing about our program.
        flags = ["-w", "-I" + str(probes.DIR)] + catalog.cflags(self.choices)
        if self.ringbuf:
            # The recorder drains the ring by mmap on a timer: no wakeups needed.
            flags.append(f"-DZT_RINGBUF_PAGES={self.ringbuf_pages}")
            flags.append("-DZT_RB_FLAGS=BPF_RB_NO_WAKEUP")
        else:
            flags.append("-DZT_PERFBUF=1")
        return flags + self.extra_cflags

    def source(self) -> str:
        return probes.SOURCE.read_text()

    def annotated_source(self) -> str:
        """What --ebpf prints: the program with the plan's defines in front."""
        lines = ["// zaptrace BPF program for kernel " + self.release,
                 "// compiled by BCC with: " + " ".join(self.cflags)]
        for ch in self.choices:
            state = ("probes " + ", ".join(ch.attach)) if ch.ok else "not attached"
            lines.append(f"//   {ch.event:12s} {state}")
        for f in self.cflags:
            if f.startswith("-D"):
                name, _, val = f[2:].partition("=")
                lines.append(f"#define {name} {val or 1}")
        src = self.source().replace('#include "zaptrace_event.h"',
                                    "/* zaptrace_event.h, inlined */\n" + probes.EVENT_HEADER.read_text())
        src = src.replace('#include "zaptrace_summary.h"',
                          "/* zaptrace_summary.h, inlined */\n" + (probes.DIR / "zaptrace_summary.h").read_text())
        return "\n".join(lines) + "\n\n" + src

    def blocking(self) -> List[str]:
        """Reasons record cannot start, one line each (empty when it can)."""
        out = [c.detail for c in self.checks if c.fatal and not c.ok]
        for ch in self.choices:
            if ch.required and not ch.ok:
                out.append(missing_event_message(ch))
        return out

    def probe_map(self) -> List[dict]:
        return [ch.to_json() for ch in self.choices]


def missing_event_message(ch: catalog.Choice) -> str:
    tried = "; ".join(f"{s}: {why}" for s, why in ch.tried) or "no alternative"
    return f"no probe-able symbol for logical event '{ch.event}' (tried {tried})"


def build(skip: Tuple[str, ...] = (), ringbuf_pages: int = 4096, force_perfbuf: bool = False,
          summary: bool = False, keep_events: bool = False) -> Plan:
    syms = kernel.read_kallsyms()
    checks = kernel.feature_checks(syms)
    btf = kernel.btf_func_params(catalog.symbols_of_interest())
    blacklist = kernel.kprobe_blacklist()
    choices = catalog.resolve(syms, btf, blacklist, skip=skip)
    ringbuf = syms.has("bpf_ringbuf_output") and not force_perfbuf
    if ringbuf_pages <= 0 or ringbuf_pages & (ringbuf_pages - 1):
        raise PlanError(f"ring buffer size must be a power of two pages, not {ringbuf_pages}")
    return Plan(release=kernel.kernel_release(), symbols=syms, checks=checks, choices=choices,
                ringbuf=ringbuf, ringbuf_pages=ringbuf_pages, btf=btf is not None,
                extra_cflags=(["-DZT_SUMMARY=1"] if summary else [])
                + (["-DZT_KEEP_EVENTS=1"] if summary and keep_events else []))


def require_recordable(plan: Plan) -> None:
    """Raise PlanError with the first blocking reason (and a hint for it)."""
    reasons = plan.blocking()
    if not reasons:
        return
    first = reasons[0]
    kp = next((c for c in plan.checks if c.name == "kprobes"), None)
    if kp is not None and not kp.ok:
        raise PlanError(f"{kp.detail}; {NO_KPROBES_HINT}")
    raise PlanError(first)


def vmemmap_addr(plan: Plan) -> int:
    return plan.symbols.addresses.get("vmemmap_base", 0) if plan.symbols.addresses_visible else 0

