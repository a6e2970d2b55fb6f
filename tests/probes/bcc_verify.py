"""Compile probes/zaptrace.bpf.c with BCC and load its programs through this host's verifier.

A developer's check, not a test (it needs root, BCC and a guest kernel's headers):

    sudo PYTHONPATH=. .venv/bin/python -m tests.probes.bcc_verify --kernel 6.1 --summary

The headers are those ``zaptrace vm build`` cached for the guest kernel (Debian
splits them into -common and -<arch> packages; BCC wants one tree, so they are
merged with symlinks in a temporary folder).  The probe choices (which symbol
each logical event attaches to, argument positions) are those recorded in the
fixture trace of that kernel, as kprobes.  Nothing is attached: BCC compiles,
then each handler is loaded (verified) and released.  The host's verifier is
not the guest kernel's, so this is a check of the C and of the BPF the
compiler makes, not a substitute for recording in a guest.  The sched
tracepoint handlers get kprobe-style stand-ins: BCC builds their argument
structs from tracefs, which a host without kprobes may not have.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from zaptrace import analysis, bccload, catalog
from zaptrace.probes import DIR as PROBES_DIR, SOURCE
from zaptrace.vm import cache

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = {"6.1": "race-6.1.zt", "6.12": "race-6.12.zt"}
STANDINS = ("zt_fork_standin", "zt_exit_standin")


def merged_headers(label: str, into: Path) -> Path:
    src = cache.kernel_dir(label) / "usr" / "src"
    common = sorted(src.glob("linux-headers-*-common"))
    arch = sorted(p for p in src.glob("linux-headers-*") if not p.name.endswith("-common"))
    if not common or not arch:
        raise SystemExit(f"no headers for kernel {label} under {src}: run zaptrace vm build")
    for tree in (common[-1], arch[-1]):          # the arch package's generated files win
        for f in tree.rglob("*"):
            dest = into / f.relative_to(tree)
            if f.is_dir() and not f.is_symlink():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_symlink() or dest.exists():
                    dest.unlink()
                dest.symlink_to(f.resolve() if f.is_symlink() else f)
    return into


def attached(label: str) -> list:
    """(catalog event, its probe entry) for every event the fixture trace of ``label`` attached."""
    head = analysis.load(str(ROOT / "tests" / "fixtures" / FIXTURE[label])).head
    out = []
    for ev in catalog.CATALOG:
        p = next((p for p in head.get("probes") or [] if p["event"] == ev.name), None)
        if p and p.get("attach"):
            out.append((ev, p))
    return out


def wrappers(label: str) -> list:
    """The kprobe entry points zaptrace/plan.py would generate for those events: (name, C line)."""
    out = []
    for ev, p in attached(label):
        entry, ret = ev.handlers
        for h in (entry, ret if p.get("ret", ev.ret) else None):
            if h:
                out.append(("zt_" + h, f"int zt_{h}(struct pt_regs *ctx) {{ return h_{h}(ctx); }}"))
    return out


def cflags(label: str, extra) -> list:
    flags = ["-w", "-I" + str(PROBES_DIR)]
    for ev, p in attached(label):
        pos = p.get("positions") or {}
        flags += [f"-DZT_HAVE_{ev.macro}=1", f"-DZT_{ev.macro}_TRAMP=0",
                  f"-DZT_{ev.macro}_NARGS={max(list(pos.values()) + [1])}"]
        flags += [f"-DZT_{ev.macro}_{r.upper()}={pos.get(r, 0)}" for r in ev.roles]
    return flags + ["-DZT_RINGBUF_PAGES=64", "-DZT_RB_FLAGS=BPF_RB_NO_WAKEUP"] + list(extra)


def standins(text: str) -> str:
    text = text.replace("TRACEPOINT_PROBE(sched, sched_process_fork)", "int zt_fork_standin(struct pt_regs *ctx)")
    text = text.replace("args->child_pid", "(__u32)PT_REGS_PARM1(ctx)")
    return text.replace("TRACEPOINT_PROBE(sched, sched_process_exit)", "int zt_exit_standin(struct pt_regs *ctx)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", choices=sorted(FIXTURE), default="6.1")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--keep-events", action="store_true")
    ap.add_argument("--perf-buffer", action="store_true", help="the perf-buffer build (record --perf-buffer)")
    a = ap.parse_args()
    extra = (["-DZT_SUMMARY=1"] if a.summary else []) + (["-DZT_KEEP_EVENTS=1"] if a.keep_events else []) \
        + (["-DZT_PERFBUF=1"] if a.perf_buffer else [])
    bcc = bccload.load_bcc()
    tmp = Path(tempfile.mkdtemp(prefix="zt-kheaders-"))
    try:
        os.environ["BCC_KERNEL_SOURCE"] = str(merged_headers(a.kernel, tmp))
        stubs = wrappers(a.kernel)
        text = standins(SOURCE.read_text()) + "\n" + "\n".join(line for _, line in stubs) + "\n"
        b = bcc.BPF(text=text, cflags=cflags(a.kernel, extra))
        bad = 0
        for fn in [name for name, _ in stubs] + list(STANDINS):
            try:
                b.load_func(fn, bcc.BPF.KPROBE)
                print(f"verified {fn}")
            except Exception as e:          # noqa: BLE001 - a handler absent on this kernel, or refused
                absent = "not found" in str(e).lower() or "unknown" in str(e).lower()
                print(f"{'absent' if absent else 'REFUSED'} {fn}: {str(e)[-200:]}")
                bad += not absent
        b.cleanup()
        return 1 if bad else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
