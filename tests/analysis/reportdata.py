"""Small hand-computed traces and CLI helpers shared by the test_report* tests.

Trace A (kernel "6.1.0-test", the 5.10/6.1 shape: decrements before the flush)::

    tid 100, cpu 0   zap 1000..2400
                     dirty P0 1100, rmap P0 1200        file-dirty  gap 2200-1200 = +1000 ns
                     dirty P1 1300, rmap P1 1400        file-dirty  gap +800
                     rmap P2 1500 (anon)                anon        gap +700
                     rmap P3 1700                       file-clean  gap +500
                     tlb_flush_mmu 1750..2300 { flush_tlb_mm_range 1800..2200 }
    tid 999, cpu 1   mkclean P0 1900..2000 ret 1        inside P0's window [1200, 2200]: 1 hit
    tid 100, cpu 0   zap 10000..10200, rmap P4 10100    file-clean, no flush after: unpaired
    tid 200, cpu 1   rmap P5 20000 outside any zap      other-path

Trace B (kernel "6.12.0-test", the 6.2+ shape: dirty file pages decremented after the flush)::

    tid 100, cpu 0   zap 1000..1900
                     dirty P0 1050, rmap P2 1100 (anon)              anon        gap 1300-1100 = +200
                     flush_tlb_mm_range 1200..1300
                     tlb_flush_rmaps 1400..1600 { rmap P0 1500 }     file-dirty  gap 1300-1500 = -200
                     tlb_flush_mmu 1700..1800
    tid 999, cpu 1   mkclean P0 1550..1650                           window closed: no hit
"""
import os
import subprocess
import sys

from typer.testing import CliRunner

from tests.synth import TraceBuilder, page

P = [page(i) for i in range(8)]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def trace_a(path, **write_kw) -> str:
    tb = (TraceBuilder(kernel="6.1.0-test")
          .zap(1000).dirty(1100, P[0]).rmap(1200, P[0]).dirty(1300, P[1]).rmap(1400, P[1])
          .rmap(1500, P[2], anon=True).rmap(1700, P[3])
          .ev(1750, "tlb_flush_enter").flush(1800, 2200).ev(2300, "tlb_flush_exit").zap_exit(2400)
          .mkclean(1900, 2000, P[0], tid=999, cpu=1, ret=1)
          .zap(10000, exit_ts=10200).rmap(10100, P[4])
          .rmap(20000, P[5], tid=200, cpu=1, in_zap=False))
    return tb.write(path, **write_kw)


def trace_b(path) -> str:
    tb = (TraceBuilder(kernel="6.12.0-test")
          .zap(1000).dirty(1050, P[0]).rmap(1100, P[2], anon=True).flush(1200, 1300)
          .ev(1400, "rmaps_enter").rmap(1500, P[0], delayed=True).ev(1600, "rmaps_exit")
          .mmu(1700, 1800).zap_exit(1900)
          .mkclean(1550, 1650, P[0], tid=999, cpu=1, ret=1))
    return tb.write(path)


def app():
    from zaptrace.cli import app as main_app
    return main_app


def run(*args):
    """Invoke the CLI in-process; result.stdout and result.stderr are kept apart."""
    try:
        runner = CliRunner(mix_stderr=False)      # click < 8.2
    except TypeError:
        runner = CliRunner()                      # click >= 8.2 always separates them
    return runner.invoke(app(), [str(a) for a in args], prog_name="zaptrace", env={"COLUMNS": "200"})


def zt(*args, timeout=120):
    """Run the CLI in a real process, as users do."""
    env = dict(os.environ, PYTHONPATH=ROOT, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "zaptrace", *[str(a) for a in args]], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def class_rows(text: str) -> dict:
    """{(class, path): [cells...]} parsed from the report's class table."""
    out, cls = {}, None
    for line in text.splitlines():
        cells = line.split()
        if len(cells) == 13 and cells[1] == "all":
            cls = cells[0]
            out[(cls, "all")] = cells[2:]
        elif cls and len(cells) == 12 and cells[0] in ("immediate", "delayed"):
            out[(cls, cells[0])] = cells[1:]
    return out
