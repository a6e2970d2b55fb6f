"""The zaptrace command line.

Written for typer 0.7 (Debian bookworm, what runs inside the guest) and
current typer alike: options use the ``name: T = typer.Option(...)`` form.
Every known failure ends in one line, ``zaptrace: error: ...``, and exit
status 2; never a traceback.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from . import __version__
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, ZaptraceError, clean_errors, err, info
from .vm.labels import LABELS, listed  # the kernel table (standard library only), for the ab help

CTX = {"help_option_names": ["-h", "--help"]}
CMD_CTX = dict(CTX, allow_interspersed_args=False, ignore_unknown_options=True)

app = typer.Typer(add_completion=False, no_args_is_help=True, context_settings=CTX,
                  help="zaptrace: measure, per page, how long a page's mapcount is already dropped "
                       "while a stale TLB entry for it may still exist.")


# The error policy (one line, exit codes) lives in zaptrace/errors.py.


# ------------------------------------------------------------------ record --

RECORD_HELP = """Record zap events of a command (or a process, or the whole system) to a trace file.

\b
The probes are attached before CMD starts, CMD's whole process tree is
followed, recording stops when CMD exits, and zaptrace exits with CMD's
status.  Under sudo, CMD runs as the invoking user and the trace file
belongs to that user.  Needs root and a kernel with kprobes; on a machine
without them, record inside the QEMU guest (`zaptrace vm`).

\b
Examples:
  sudo zaptrace record -- ./workload --flag       # trace a command
  sudo zaptrace record -o munmap.zt -- zaptrace workload run munmap-anon
  sudo zaptrace record -p 4242 -d 10               # a running process, 10 s
  sudo zaptrace record -a -d 5                     # every process, 5 s
  sudo zaptrace record --summary -a -d 3600        # in-kernel histograms only, for hours
  sudo zaptrace record --zap-return inferred -- ./zapper   # one probe hit per zap, not two
  zaptrace record --ebpf                           # print the BPF program only
  zaptrace vm run --kernel 6.1 -- zaptrace record -o t.zt -- zaptrace workload run race
  sudo $(command -v zaptrace) record -- ./workload # from a venv: sudo needs the full path

\b
Overhead: every probed call costs a kprobe hit (about 1 us on real hardware,
much more under QEMU TCG) and a 72-byte ring-buffer record.  The summary
counts events lost when the buffer was full; none are dropped silently.
"""


@app.command(context_settings=CMD_CTX, help=RECORD_HELP)
@clean_errors
def record(
    command: Optional[List[str]] = typer.Argument(None, metavar="[-- CMD [ARG...]]",
                                                  help="Command to run and trace."),
    output: Optional[str] = typer.Option(None, "--output", "-o",
                                         help="Trace file (default: ./zaptrace.data; an old one becomes .old)."),
    pid: Optional[int] = typer.Option(None, "--pid", "-p", help="Follow an existing process and its children."),
    all_processes: bool = typer.Option(False, "--all", "-a", help="Record every process."),
    duration: Optional[float] = typer.Option(None, "--duration", "-d", help="Stop after this many seconds."),
    buffer_pages: int = typer.Option(4096, "--buffer-pages",
                                     help="Ring buffer size in pages (power of two; 4096 = 16 MiB)."),
    perf_buffer: bool = typer.Option(False, "--perf-buffer", help="Use the perf buffer even if a ring buffer exists."),
    mkclean_all: bool = typer.Option(True, "--mkclean-all/--mkclean-followed",
                                     help="Record folio_mkclean of any task (writeback runs in kworkers), "
                                          "or only of followed tasks."),
    summary: bool = typer.Option(False, "--summary",
                                 help="Pair decrements with flushes in the kernel and keep log2 histograms "
                                      "of the gap per class; no per-event transfer (for long runs)."),
    kprobes: bool = typer.Option(False, "--kprobes",
                                 help="Attach with kprobes/kretprobes even where BPF trampolines "
                                      "(fentry/fexit, the default when the kernel has BTF) work."),
    keep_events: bool = typer.Option(False, "--keep-events",
                                     help="With --summary: record the events too (to check the in-kernel "
                                          "pairing against `zaptrace report`)."),
    zap_return: str = typer.Option("probed", "--zap-return",
                                   help="How a zap bracket ends: probed (fentry/fexit), inferred (entry only; "
                                        "the return is inferred at the task's next event from the zap's return "
                                        "address on its stack: one probe hit per zap, for hunting lost writes "
                                        "under a zapper of empty ranges), checked (both, counting where the "
                                        "inference disagrees)."),
    zap_entry: str = typer.Option("probed", "--zap-entry",
                                  help="How a zap bracket opens: probed (its entry), or inferred (at the first "
                                       "PTE table or huge PMD the zap clears, told from other page-table walks "
                                       "by its return address: a zap of an empty range fires no probe at all; "
                                       "needs --zap-return inferred, or checked to count disagreements). "
                                       "E.g. --zap-entry inferred --zap-return inferred."),
    ebpf: bool = typer.Option(False, "--ebpf", help="Print the BPF program for this kernel and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and the summary."),
):
    from . import plan as planmod
    from .recorder import RecordOptions, Recorder, RecordError, WriteFailed, summary_lines

    if keep_events and not summary:
        raise RecordError("--keep-events only makes sense with --summary")
    if zap_return not in planmod.ZAP_RETURNS:
        raise RecordError(f"--zap-return is one of {', '.join(planmod.ZAP_RETURNS)}, not {zap_return!r}")
    if zap_entry not in planmod.ZAP_ENTRIES:
        raise RecordError(f"--zap-entry is one of {', '.join(planmod.ZAP_ENTRIES)}, not {zap_entry!r}")
    if ebpf:
        p = planmod.build(ringbuf_pages=buffer_pages, force_perfbuf=perf_buffer, summary=summary,
                          kprobes_only=kprobes, zap_return=zap_return, zap_entry=zap_entry)
        sys.stdout.write(p.annotated_source())
        return
    command = list(command or [])
    if command and command[0] == "--":
        command = command[1:]
    if pid is not None and all_processes:
        raise RecordError("-p and -a exclude each other")
    if duration is not None and duration <= 0:
        raise RecordError("-d needs a positive number of seconds")
    if output is None:
        output = "zaptrace.data"
        if os.path.exists(output):
            os.replace(output, output + ".old")
    opts = RecordOptions(output=output, command=command, pid=pid, all_processes=all_processes,
                         duration=duration, ringbuf_pages=buffer_pages, perfbuf=perf_buffer,
                         mkclean_all=mkclean_all, quiet=quiet, summary=summary, keep_events=keep_events,
                         kprobes_only=kprobes, zap_return=zap_return, zap_entry=zap_entry)
    try:
        res = Recorder(opts, info).run()
    except WriteFailed as e:
        for line in summary_lines(e.result):
            info(line)
        raise
    for line in summary_lines(res):
        info(line)
    raise typer.Exit(res.status)


# ------------------------------------------------------------------ doctor --

@app.command(context_settings=CTX)
@clean_errors
def doctor():
    """Check whether `zaptrace record` can work on this kernel, and which probes it would use.

    \b
    Exit status 0 when recording can work, 1 when it cannot.
    """
    from . import catalog, plan as planmod
    from .bccload import BCCMissing, bcc_version, load_bcc

    p = planmod.build()
    print(f"zaptrace {__version__} doctor: kernel {p.release} ({os.uname().machine})")
    try:
        load_bcc()
        bcc_line = ("ok", f"BCC {bcc_version()}")
    except BCCMissing as e:
        bcc_line = ("FAIL", str(e))
    for c in p.checks:
        print(f"  {'ok' if c.ok else ('FAIL' if c.fatal else 'warn'):5} {c.name:9} {c.detail}")
    print(f"  {bcc_line[0]:5} {'bcc':9} {bcc_line[1]}")
    try:
        from .analysis import kernels
        engine = kernels.status()
    except ZaptraceError as e:
        engine = str(e)
    except ImportError as e:            # a recording-only machine (the QEMU guests have no pandas)
        engine = f"cannot run here ({e}): record here, run `zaptrace report` where it can"
    print(f"  {'ok' if engine.startswith('compiled') else 'warn':5} {'analysis':9} {engine}")
    print("probes:")
    for ch in p.choices:
        if ch.ok:
            print(f"  {ch.event:12} {', '.join(ch.attach)} ({ch.mechanism})")
            print(f"  {'':12}   {ch.verified}; {ch.why}")
        else:
            only = any(why.startswith("attached only with") for _, why in ch.tried)
            need = "REQUIRED, missing" if ch.required else ("optional, not attached" if only else "optional, missing")
            print(f"  {ch.event:12} {need}")
        for sym, why in ch.tried:
            print(f"  {'':12}   tried {sym}: {why}")
    print("struct layout (from BTF):")
    for fix, present in p.fields:
        state = "has" if present else ("lacks" if p.btf else "unknown (no BTF), assumed to lack")
        print(f"  struct {fix.struct} {state} {fix.member}: {fix.why}")
    offs = {f[2:].split("=")[0]: f.split("=")[1] for f in p.offsets}
    for struct, member, macro in catalog.FIELD_OFFSETS:
        where = f"offset {offs[macro]}" if macro in offs else "not in BTF: file positions are not recorded"
        print(f"  struct {struct}.{member}: {where}")
    reasons = p.blocking()
    if bcc_line[0] == "FAIL":
        reasons.append(bcc_line[1])
    if reasons:
        try:
            planmod.require_recordable(p)
            msg = reasons[0]
        except planmod.PlanError as e:
            msg = str(e)
        err(f"record cannot work here: {msg}")
        raise typer.Exit(1)
    print("verdict: zaptrace record can work on this kernel")


# ---------------------------------------------------------------- workload --

WORKLOAD_HELP = """Run a bundled workload (usually under `zaptrace record`).

\b
Files go to --dir, else $ZAPTRACE_SCRATCH (the guest's block-backed scratch
disk), else the current directory; writeback (and so folio_mkclean) only
happens on a block-backed filesystem, not on tmpfs or 9p.

\b
--mapping chooses how the memory is mapped: `default` (the kernel's choice),
`pte` (MADV_NOHUGEPAGE: PTE mappings only) or `pmd` (a 2 MiB-aligned mapping
with MADV_HUGEPAGE; --pages is rounded up to whole 2 MiB).  With `pmd`, a
shared ext4 file gets PMD-sized folios mapped by one PMD where the kernel can
(ext4 large folios: 6.16+, seen PMD-mapped on Debian's 7.2: FilePmdMapped in
/proc/meminfo); anonymous memory gets a THP.  Anonymous mTHP (64 KiB...) needs
a size enabled by root first, e.g.
`echo always > /sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled`.

\b
Options named after a workload ("lostwrite: ...") are that workload's own;
giving them to another workload is an error.

\b
Examples:
  zaptrace workload run dontneed-shared --pages 256 --iterations 200
  zaptrace workload run race --duration 5
  zaptrace workload run race --mapping pmd --pages 1024 --iterations 100
  sudo zaptrace record -- zaptrace workload run munmap-anon --pages 1024
"""


def make_workload_app() -> typer.Typer:
    """`zaptrace workload list|run`, with run's options built from the workloads' option
    registry (zaptrace/workload_base.py OPTIONS): a workload's new option appears here, with
    its help and checks, without a change to this file."""
    import inspect
    from . import workloads
    from .workload_base import OPTIONS, Params

    wapp = typer.Typer(add_completion=False, no_args_is_help=True, context_settings=CTX,
                       help="Bundled workloads that zap pages (run them under `zaptrace record`).")

    @wapp.command("list", context_settings=CTX)
    def workload_list():
        """List the bundled workloads."""
        for name, doc in workloads.describe().items():
            print(f"{name:16} {doc}")

    opts = list(OPTIONS.values())

    @clean_errors
    def workload_run(**kw):
        ctx = kw.pop("ctx")
        name = kw.pop("name")
        # The options set on the command line (click 8: parameter sources; an older
        # click cannot tell them from defaults, and then none counts as given).
        source = getattr(ctx, "get_parameter_source", None)
        given = [o.name for o in opts
                 if source is not None and getattr(source(o.name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")]
        out = workloads.run(name, Params(**{o.name: _typed(o, kw[o.name]) for o in opts}), given=given)
        if out.status:
            raise typer.Exit(out.status)

    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
              inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                                default=typer.Argument(..., help=", ".join(workloads.WORKLOADS) + "."))]
    for o in opts:
        # Numbers come in as text and are converted by _typed: a bad one is then a one-line
        # error like any other bad value, not click's usage box.
        cli_type = bool if o.type is bool else str
        annotation = cli_type if o.default is not None else Optional[cli_type]
        metavar = o.metavar or {int: "INTEGER", float: "FLOAT"}.get(o.type)
        extra = {"metavar": metavar} if metavar else {}
        params.append(inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation,
                                        default=typer.Option(o.default, *o.cli_flags(), help=o.cli_help(), **extra)))
    workload_run.__signature__ = inspect.Signature(params)
    workload_run.__annotations__ = {}
    help_text = WORKLOAD_HELP + "".join("\n\b\n" + text for text in workloads.HELP.values())
    wapp.command("run", context_settings=CTX, help=help_text)(workload_run)
    return wapp


def _typed(o, value):
    """A workload option's value as its type (int and float come from the command line as text)."""
    from .workload_base import WorkloadError
    if value is None or o.type in (str, bool) or isinstance(value, o.type):
        return value
    try:
        return o.type(value)
    except ValueError:
        raise WorkloadError(f"{o.flag} expects {'an integer' if o.type is int else 'a number'}, "
                            f"not {value!r}") from None


workload_app = make_workload_app()
app.add_typer(workload_app, name="workload")


AB_HELP = """Run one command on kernel A and kernel B, boots interleaved, untraced and traced.

\b
Each round boots A then B once per mode (A B A B ...), each a fresh guest
(`zaptrace vm run`): `untraced` runs the command alone (tracing slows a
zapper and can hide a race), `traced` runs it under `zaptrace record` and
analyses the trace on the host.  Per kernel it prints lost writes (median,
range, runs with any loss), the workload's throughput (zaps/s, page
visits/s: what a fix costs), and, traced, the windows open or closed and
the mkclean hits per class and path, with the gap p50; then `zaptrace
compare` of the last traced run of each.  Every run's output, workload
report and trace stay in --out, with ab.json (rewritten after each run).
A kernel is a Debian label (%s), a name from
`zaptrace vm kernel list`, a build tree or a bzImage.  The command comes
after `--`.  Exit status: 0, or 1 when a run failed (its error is in the
table and in ab.json; the other runs are kept).

\b
Examples:
  zaptrace ab 7.2-src 7.2-src+pmd-flush --rounds 3 -- \\
      zaptrace workload run lostwrite --mapping pmd --pages 512 --duration 300
  zaptrace ab 7.2-src 7.2-src+control-no-delayed-rmap --modes traced -- \\
      zaptrace workload run race --pages 256 --iterations 400
""" % listed(LABELS)


@app.command("ab", context_settings=CTX, help=AB_HELP)
@clean_errors
def ab_cmd(
    kernel_a: str = typer.Argument(..., metavar="A", help="Kernel A (the reference: unpatched)."),
    kernel_b: str = typer.Argument(..., metavar="B", help="Kernel B (the change)."),
    command: List[str] = typer.Argument(..., metavar="-- CMD [ARG...]", help="What each guest runs."),
    rounds: int = typer.Option(3, "--rounds", "-r", help="Rounds (each boots A and B once per mode)."),
    modes: str = typer.Option("untraced,traced", "--modes", help="untraced, traced, or both (comma-separated)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (default: ab-<time>)."),
    smp: Optional[int] = typer.Option(None, "--smp", help="Guest CPUs (default as `vm run`)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", "-t", help="Kill a guest after this many seconds."),
    scratch_fs: str = typer.Option("ext4", "--scratch-fs", help="ext4 or xfs."),
    as_json: bool = typer.Option(False, "--json", help="Print ab.json instead of the tables."),
):
    import json as _json
    from . import ab

    command = list(command)
    if command and command[0] == "--":
        command = command[1:]
    if "--" not in sys.argv:
        from .ab import ABError
        raise ABError("put the command after --: zaptrace ab A B [OPTIONS] -- CMD [ARG...]")
    out = out or time_stamped("ab")
    doc = ab.run_ab(kernel_a, kernel_b, command, rounds=rounds, modes=[m.strip() for m in modes.split(",") if m.strip()],
                    out_dir=out, smp=smp, timeout=timeout, scratch_fs=scratch_fs, log=info)
    if as_json:
        sys.stdout.write(_json.dumps(doc, indent=1) + "\n")
    else:
        sys.stdout.write(ab.render(doc))
        traces = ab.last_traces(doc)
        if traces:
            from .analysis.compare import render_compare
            from .analysis.report import analyse
            sys.stdout.write("\n== zaptrace compare " + " ".join(traces) + "\n")
            sys.stdout.write(render_compare([analyse(t, None, with_hits=False).summary for t in traces]))
        sys.stdout.write(f"\nrecorded in {os.path.abspath(out)} (ab.json, per run: .out, .workload.json, .zt)\n")
    ab.print_runs(doc)
    raise typer.Exit(1 if ab.failed(doc) else 0)


def time_stamped(prefix: str) -> str:
    import time as _time
    return f"{prefix}-{_time.strftime('%Y%m%d-%H%M%S')}"


def _mount_subcommands() -> None:
    from .vm.cli import app as vm_app
    from .cli_analysis import register
    app.add_typer(vm_app, name="vm")
    register(app)


_mount_subcommands()


def version_callback(value: bool):
    if value:
        print(f"zaptrace {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
):
    """zaptrace: measure, per page, how long a page's mapcount is already dropped
    while a stale TLB entry for it may still exist.

    \b
    Typical use:
      sudo zaptrace record -- ./workload      # record (needs kprobes)
      zaptrace report                         # per-page gap summary
      zaptrace vm build && zaptrace vm run --kernel 6.1 -- zaptrace record -- ...
    """


def main() -> None:
    import faulthandler
    import signal
    faulthandler.register(signal.SIGUSR1)      # `kill -USR1 PID` dumps every thread's stack
    try:
        app(prog_name="zaptrace", standalone_mode=True)
    except KeyboardInterrupt:
        err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, details on disk
        import tempfile
        import traceback
        fd, path = tempfile.mkstemp(prefix="zaptrace-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        err(f"internal error: {type(e).__name__}: {e} (traceback in {path}; please report it)")
        sys.exit(EXIT_INTERNAL)
