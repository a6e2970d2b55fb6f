"""Where a recording ran: bare metal, a VM, or zaptrace's own QEMU guest (and in which mode).

Timings under emulation are the emulator's.  With single-threaded TCG all
vCPUs share one host thread, so a flush that waits for another CPU waits
for the emulator to switch to it, and no two CPUs ever run at the same
instant.  With multi-threaded TCG the vCPUs run in parallel, but every
instruction is still emulated (a zap's decrements come about 9 us apart on
6.1, docs/guest.md "What the mode does to the figures"), and with more vCPUs
than host CPUs a flush also waits for a vCPU without a core.  Every trace
records this description (header key ``machine``) and every report and
comparison prints it.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional


def describe_here() -> Dict[str, Any]:
    """The machine this process runs on, for the trace header."""
    out: Dict[str, Any] = {"cpus": os.cpu_count(), "hypervisor": _hypervisor_flag()}
    raw = os.environ.get("ZAPTRACE_GUEST_MODE")          # set by `zaptrace vm run` (vm/runner.py)
    if raw:
        try:
            out["zaptrace_guest"] = json.loads(raw)
        except ValueError:
            out["zaptrace_guest"] = {"unparsed": raw}
    return out


def _hypervisor_flag() -> Optional[bool]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " hypervisor" in line or line.rstrip().endswith("hypervisor")
    except OSError:
        return None
    return None


def summary_line(machine: Optional[Dict[str, Any]]) -> str:
    """One line for reports: what produced the timings."""
    if not machine:
        return "unknown (recorded before zaptrace noted it)"
    g = machine.get("zaptrace_guest")
    if g:
        if g.get("accel") == "tcg":
            if g.get("tcg") == "multi":
                how = ("multi-threaded TCG (one host thread per vCPU: CPUs run in parallel, but every "
                       "instruction is emulated, so times are the emulator's")
                v, h = g.get("vcpus"), g.get("host_cpus")
                if isinstance(v, int) and isinstance(h, int) and v > h:
                    how += "; more vCPUs than host CPUs: a flush can wait for a vCPU without a core"
                how += ")"
            else:
                how = ("single-threaded TCG (all vCPUs in one host thread: timings are the emulator's, "
                       "and no two vCPUs ever run at the same instant)")
        else:
            how = str(g.get("accel", "?")).upper()
        return (f"zaptrace QEMU guest, {how}, {g.get('vcpus', '?')} vCPUs on a {g.get('host_cpus', '?')}-CPU "
                f"host ({g.get('qemu', 'QEMU ?')}; scratch {g.get('scratch_fs', 'ext4')})")
    if machine.get("hypervisor"):
        return f"a virtual machine (hypervisor CPU flag), {machine.get('cpus', '?')} CPUs"
    return f"no hypervisor flag (bare metal, as far as the CPU says), {machine.get('cpus', '?')} CPUs"


def short(machine: Optional[Dict[str, Any]]) -> str:
    """A compact label for comparison tables: 'TCG single x2', 'KVM x4', 'VM x8', 'metal x16'."""
    if not machine:
        return "unknown"
    g = machine.get("zaptrace_guest")
    if g:
        mode = f"TCG {g.get('tcg')}" if g.get("accel") == "tcg" else str(g.get("accel", "?")).upper()
        return f"{mode} x{g.get('vcpus', '?')}"
    return f"{'VM' if machine.get('hypervisor') else 'metal'} x{machine.get('cpus', '?')}"
