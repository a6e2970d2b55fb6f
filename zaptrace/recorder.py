"""zaptrace record: attach the probes, run the workload, stream events to a trace.

The flow is one way: probes (BPF, in the kernel) -> ring buffer -> raw
records appended to a chunk buffer -> EVTS chunks in the trace file.  No
event is decoded or formatted on the recording path; the per-kind delivered
counts come from one vectorised bincount per chunk.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import platform
import resource
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from . import catalog, machine, __version__, plan as planmod, process, summary as ksummary
from .bccload import load_bcc
from .layout import layout
from .errors import ZaptraceError
from . import ringbuf
from .ringbuf import RingReader
from .tracefile import TraceWriter


class RecordError(ZaptraceError):
    """Recording failed before or while starting (one line, with what to do)."""


class WriteFailed(RecordError):
    """The trace could not be written (disk full...): what was written stays loadable."""

    def __init__(self, result: "Result", message: str):
        super().__init__(message)
        self.result = result


@dataclass
class RecordOptions:
    output: str
    command: List[str] = field(default_factory=list)
    pid: Optional[int] = None
    all_processes: bool = False
    duration: Optional[float] = None
    ringbuf_pages: int = 4096
    chunk_bytes: int = 4 << 20
    flush_interval: float = 1.0
    poll_ms: int = 20
    mkclean_all: bool = True
    perfbuf: bool = False
    quiet: bool = False
    summary: bool = False         # pair and histogram in the kernel; no events transferred
    keep_events: bool = False     # with summary: transfer the events as well
    kprobes_only: bool = False    # never BPF trampolines
    zap_return: str = "probed"    # plan.ZAP_RETURNS: how the zap bracket ends
    zap_entry: str = "probed"     # plan.ZAP_ENTRIES: how it opens


#: Seconds the stop waits for BPF programs already past the stop check.
STOP_WAIT_S = 10.0


@dataclass
class Result:
    path: str
    status: int                         # the workload's exit code (or 130/143 when interrupted)
    duration: float
    generated: Dict[str, int]
    delivered: Dict[str, int]
    lost: Dict[str, int]
    bytes: int
    stop_reason: str
    attached: List[str]
    missing: List[str]
    summary: Optional[dict] = None
    still_running: List[int] = field(default_factory=list)
    command_status: Optional[int] = None
    ring_corrupt: int = 0               # ring records dropped as not zaptrace records (ringbuf.py)
    zaps_not_written: int = 0           # zap brackets with nothing inside: counted, not written
    zap_return: Optional[dict] = None   # --zap-return inferred/checked: mode, entry, inferences, disagreed
    probe_misses: Dict[str, int] = field(default_factory=dict)   # BPF program -> hits the kernel skipped


class Recorder:
    def __init__(self, opts: RecordOptions, log: Callable[[str], None]):
        self.opts = opts
        self.log = log if not opts.quiet else (lambda s: None)
        self.L = layout()
        self.rec_size = self.L.dtype.itemsize
        self.pending: List[np.ndarray] = []       # event arrays not yet written
        self.pending_n = 0
        self.delivered = np.zeros(256, dtype=np.int64)
        self.unwritten = 0                        # received but not written (disk full)
        self.stop_signal = 0
        self.bpf = None
        self.writer: Optional[TraceWriter] = None
        self.child: Optional[process.GatedChild] = None
        self.ident = process.invoking_identity()
        self.attached: List[str] = []
        self.missing: List[str] = []

    # -------------------------------------------------------------- setup --
    def _open_output(self) -> None:
        path = self.opts.output
        d = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(d):
            raise RecordError(f"cannot write {path}: directory {d} does not exist")
        try:
            f = open(path, "wb")
        except OSError as e:
            raise RecordError(f"cannot write {path}: {e.strerror}") from None
        self._outfile = f
        process.chown_to(path, self.ident)

    def _compile(self, plan: planmod.Plan) -> planmod.Plan:
        """Compile (and attach the trampoline programs); fall back to kprobes if those fail."""
        bcc = load_bcc()
        t0 = time.monotonic()
        n = sum(len(c.attach) * (int(c.entry) + int(c.ret)) for c in plan.choices if c.ok)
        tramp = any(c.trampoline for c in plan.choices)
        self.log(f"zaptrace: compiling the BPF program for {plan.release} ({n} probes"
                 + (", BPF trampolines" if tramp else ", kprobes") + ")...")
        try:
            self.bpf = bcc.BPF(text=plan.source(), cflags=plan.cflags)
        except Exception as e:  # noqa: BLE001 - BCC raises bare Exception on compile errors
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if tramp and ("kfunc__" in last or "kretfunc__" in last):
                self.log(f"zaptrace: BPF trampolines refused ({last}); using kprobes")
                for c in plan.choices:
                    c.trampoline = False
                return self._compile(plan)
            raise RecordError(f"BPF compilation failed: {last} (rerun with --ebpf to see the program)") from None
        self.log(f"zaptrace: compiled in {time.monotonic() - t0:.1f} s")
        return plan

    def _load(self, plan: planmod.Plan) -> None:
        """Load (verify) every handler before attaching any: a rejected program is our bug,
        never a reason to record with an event missing."""
        bcc = load_bcc()
        for ch in plan.choices:
            if not ch.ok:
                continue
            if ch.trampoline:
                continue            # fentry/fexit programs were loaded and attached with the object
            entry, ret = catalog.event(ch.event).handlers
            for fn in (entry if ch.entry else None, ret if ch.ret else None):
                if fn is None:
                    continue
                try:
                    self.bpf.load_func("zt_" + fn, bcc.BPF.KPROBE)
                except Exception as e:  # noqa: BLE001 - BCC raises bare Exception
                    raise RecordError(f"the kernel's verifier rejected {fn} ({str(e).strip()}); "
                                      "this is a zaptrace bug: please report it with `zaptrace record --ebpf`") from None

    def _attach(self, plan: planmod.Plan) -> None:
        self._load(plan)
        t0 = time.monotonic()
        for ch in plan.choices:
            if not ch.ok:
                if not ch.required:
                    self.missing.append(f"{ch.event}: " + "; ".join(f"{s}: {w}" for s, w in ch.tried))
                continue
            entry, ret = ("zt_" + h if h else None for h in catalog.event(ch.event).handlers)
            if ch.trampoline:
                self.attached += (([ch.symbol + " (fentry)"] if ch.entry else [])
                                  + ([ch.symbol + " (fexit)"] if ch.ret else []))
                continue
            failures = []
            for sym in ch.attach:
                try:
                    if ch.entry:
                        self.bpf.attach_kprobe(event=sym, fn_name=entry)
                        self.attached.append(sym + " (kprobe)")
                    if ch.ret and ret:
                        # Default maxactive: a non-zero one makes BCC fall back to
                        # kprobe_events, which costs ~1 s per probe under TCG.
                        self.bpf.attach_kretprobe(event=sym, fn_name=ret)
                        self.attached.append(sym + " (kretprobe)")
                except Exception as e:  # noqa: BLE001
                    failures.append(f"{sym}: {str(e).strip() or type(e).__name__}")
            if failures:
                msg = f"{ch.event}: attaching failed ({'; '.join(failures)})"
                if ch.required:
                    raise RecordError(msg)
                self.missing.append(msg)
        self.log(f"zaptrace: attached {len(self.attached)} probes in {time.monotonic() - t0:.1f} s")

    def _configure(self, plan: planmod.Plan, pids) -> None:
        cfg = self.bpf["config"]
        c = cfg[ctypes.c_int(0)]
        c.follow_all = 1 if self.opts.all_processes else 0
        c.mkclean_all = 1 if self.opts.mkclean_all else 0
        c.vmemmap_addr = planmod.vmemmap_addr(plan)
        cfg[ctypes.c_int(0)] = c
        self._follow(pids)

    def _stop_bpf(self) -> None:
        """From now on the BPF side emits and counts nothing: final counts are exact."""
        cfg = self.bpf["config"]
        c = cfg[ctypes.c_int(0)]
        c.stopped = 1
        cfg[ctypes.c_int(0)] = c
        # Wait for programs already past the stop check (see "busy" in zaptrace.bpf.c):
        # after this no record is counted or committed, so the drain below is final.
        busy = self.bpf["busy"]
        t0 = time.monotonic()
        while True:
            left = sum(busy.getvalue(busy.Key(0)))
            if left <= 0 or time.monotonic() - t0 > STOP_WAIT_S:
                break
            time.sleep(0.005)
        self.stop_info = {"busy_wait_s": round(time.monotonic() - t0, 4), "busy_left": int(left)}
        if left > 0:
            self.log(f"zaptrace: WARNING: {int(left)} BPF program(s) still inside emit() "
                     f"{STOP_WAIT_S:g} s after the stop; "
                     f"the final counts may be off by as many (END.stop.busy_left)")

    def _follow(self, pids) -> None:
        tg = self.bpf["tgids"]
        for p in pids:
            tg[tg.Key(p)] = tg.Leaf(1)

    # ---------------------------------------------------------- streaming --
    def _on_perf_event(self, cpu, data, size) -> None:
        # One Python call per event is the perf buffer's price: keep it to a copy.
        self.perf_raw += ctypes.string_at(data, self.rec_size)
        self.pending_n += 1

    def _open_buffer(self, plan: planmod.Plan) -> Callable[[int], None]:
        """A poll(timeout_ms) function that appends raw records to self.pending."""
        events = self.bpf["events"]
        if plan.ringbuf:
            self.ring = RingReader(events.map_fd, plan.ringbuf_pages * mmap.PAGESIZE, self.L.dtype,
                                   nkinds=self.L.nkinds)

            def poll(timeout_ms: int) -> None:
                arr = self.ring.read()
                if len(arr):
                    self.pending.append(arr)
                    self.pending_n += len(arr)
                elif timeout_ms:
                    time.sleep(timeout_ms / 1000.0)
            return poll
        self.perf_lost = 0
        self.perf_raw = bytearray()

        def lost(n):
            self.perf_lost += n

        def poll(timeout_ms: int) -> None:
            self.bpf.perf_buffer_poll(timeout_ms)
            if self.perf_raw:
                self.pending.append(np.frombuffer(bytes(self.perf_raw), dtype=self.L.dtype))
                self.perf_raw = bytearray()
        events.open_perf_buffer(self._on_perf_event, page_cnt=plan.ringbuf_pages, lost_cb=lost)
        return poll

    def _flush_events(self) -> None:
        if not self.pending_n:
            return
        arr = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        self.pending = []
        self.pending_n = 0
        # On a write error (disk full), keep writing ever smaller chunks until not
        # even one record fits: the file keeps every event there was room for.
        size = len(arr)
        while len(arr):
            part = arr[:size]
            try:
                self.writer.events(part)
            except OSError:
                if size == 1:
                    self.unwritten += len(arr)
                    raise
                size = max(1, size // 2)
                continue
            self.delivered += np.bincount(part["kind"], minlength=256)[:256]
            arr = arr[size:]

    def counters(self) -> Dict[str, Dict[str, int]]:
        counts = self.bpf["counts"]
        slot = self.L.count_slots            # the ZT_COUNT_* slots of probes/zaptrace_event.h

        def total(i: int) -> int:            # summed over CPUs
            return int(sum(counts.getvalue(counts.Key(i))))

        gen = {name.lower(): total(slot["GENERATED"] + k) for k, name in self.L.kind_names.items()}
        lost = {name.lower(): total(slot["LOST"] + k) for k, name in self.L.kind_names.items()}
        deliv = {name.lower(): int(self.delivered[k]) for k, name in self.L.kind_names.items()}
        # zap brackets with no event of their task inside, counted and not written (h_zap_enter)
        empty = total(slot["EMPTY_ZAPS"])
        out = {"generated": gen, "lost": lost, "delivered": deliv, "zaps_not_written": empty}
        if self.opts.zap_return != "probed":       # the inferences of the zap's return (zap_running())
            out["zap_return"] = {"mode": self.opts.zap_return, "entry": self.opts.zap_entry,
                                 "inferences": total(slot["ZAP_CHECKS"]),
                                 "disagreed": total(slot["ZAP_WRONG"])}
            if self.opts.zap_entry == "inferred" and self.opts.zap_return == "checked":
                out["zap_return"].update(opens=total(slot["ZAP_OPENS"]), joined=total(slot["ZAP_JOINED"]),
                                         split=total(slot["ZAP_SPLIT"]))
        return out

    def _stat(self) -> dict:
        c = self.counters()
        c["time_ns"] = time.monotonic_ns()
        return c

    # ---------------------------------------------------------------- run --
    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    def run(self) -> Result:
        opts = self.opts
        if not opts.command and opts.pid is None and not opts.all_processes:
            raise RecordError("nothing to record: give a command after --, or -p PID, or -a")
        child_path = None
        env = process.child_env(self.ident)
        if opts.command:
            try:
                child_path = process.resolve_command(opts.command, env)
            except process.SpawnError as e:
                raise RecordError(str(e)) from None
        if opts.pid is not None and not process.alive(opts.pid):
            raise RecordError(f"no process with pid {opts.pid}")
        try:
            plan = planmod.build(ringbuf_pages=opts.ringbuf_pages, force_perfbuf=opts.perfbuf,
                                 summary=opts.summary, keep_events=opts.keep_events,
                                 kprobes_only=opts.kprobes_only, zap_return=opts.zap_return,
                                 zap_entry=opts.zap_entry)
            planmod.require_recordable(plan)
        except planmod.PlanError as e:
            raise RecordError(str(e)) from None
        self._open_output()
        # The header goes out first: from here on the file is always a loadable trace.
        self.writer = TraceWriter(opts.output, self._head(plan), fileobj=self._outfile)
        try:
            plan = self._compile(plan)
            self._attach(plan)
        except BaseException:
            # Nothing was recorded: leave no trace file behind.
            self.writer.close()
            os.unlink(opts.output)
            raise

        self.child = None
        if opts.command:
            self.child = process.GatedChild(child_path, opts.command, self.ident, env)
        pids = []
        if self.child:
            pids.append(self.child.pid)
        if opts.pid is not None:
            pids.extend(process.descendants(opts.pid))
        self._configure(plan, pids)
        poll = self._open_buffer(plan)
        self.writer.json(b"META", {"probes": plan.probe_map(),
                                   "child_pid": self.child.pid if self.child else None,
                                   "followed_at_start": sorted(pids), "start_ns": time.monotonic_ns(),
                                   "start_wall_ns": time.time_ns()})

        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        t_start = time.monotonic()
        cpu_start = _cpu_seconds()
        status = 0
        stop_reason = ""
        self.write_error: Optional[str] = None
        try:
            if self.child:
                try:
                    self.child.release()
                except process.SpawnError as e:
                    self.writer.close()
                    raise RecordError(f"{e}; {opts.output} holds no events") from None
            self.log("zaptrace: recording" + (f" {' '.join(opts.command)}" if opts.command else "")
                     + "; Ctrl-C to stop")
            last_flush = time.monotonic()
            while True:
                poll(opts.poll_ms)
                now = time.monotonic()
                if self.pending_n * self.rec_size >= opts.chunk_bytes or now - last_flush >= opts.flush_interval:
                    if not self._write(lambda: (self._flush_events(), self.writer.json(b"STAT", self._stat()))):
                        stop_reason = f"writing {opts.output} failed: {self.write_error}"
                        break
                    last_flush = now
                if self.stop_signal:
                    stop_reason = f"interrupted by {signal.Signals(self.stop_signal).name}"
                    break
                if self.child and self.child.poll() is not None:
                    stop_reason = "command exited"
                    break
                if opts.pid is not None and not self.child and not process.alive(opts.pid):
                    stop_reason = f"process {opts.pid} exited"
                    break
                if opts.duration is not None and now - t_start >= opts.duration:
                    stop_reason = f"duration of {opts.duration:g} s reached"
                    break
            status = self._end_workload(stop_reason)
            self._stop_bpf()
            self._final_drain(poll)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        duration = time.monotonic() - t_start
        recorder_cpu = _cpu_seconds() - cpu_start
        counters = self.counters()
        kernel_summary = ksummary.read(self.bpf) if opts.summary else None
        orphans = self._still_running()
        end = dict(counters, end_wall_ns=time.time_ns(), end_ns=time.monotonic_ns(), duration_s=duration,
                   stop_reason=stop_reason, exit_status=status, attached=self.attached,
                   not_attached=self.missing, perf_lost=getattr(self, "perf_lost", None),
                   recorder_cpu_s=recorder_cpu, summary=kernel_summary, still_running=orphans,
                   in_flight=getattr(self, "in_flight", 0), stop=getattr(self, "stop_info", None),
                   ring_corrupt=self._corrupt(),
                   ring_checks=self._ring_checks(), probe_misses=self._probe_misses())
        vm = self._vmemmap()
        if not self.write_error:
            self._write(lambda: (self.writer.json(b"META", vm) if vm else None,
                                 self.writer.json(b"END ", end), self.writer.sync()))
        nbytes = self.writer.bytes
        try:
            self.writer.close()
        except OSError:
            pass
        if getattr(self, "ring", None) is not None:
            self.ring.close()
        self.bpf.cleanup()
        res = Result(opts.output, status, duration, counters["generated"], counters["delivered"],
                     counters["lost"], nbytes, stop_reason, self.attached, self.missing, kernel_summary,
                     orphans, self.child.status if self.child else None, self._corrupt(),
                     counters["zaps_not_written"], counters.get("zap_return"), end["probe_misses"])
        if self.write_error:
            raise WriteFailed(res, f"writing {opts.output} failed: {self.write_error}; recording stopped, "
                                   f"the file keeps the {int(self.delivered.sum())} events written before"
                                   + (f", {self.unwritten} more had no room" if self.unwritten else "")
                                   + " (free space, or record elsewhere with -o)")
        return res

    def _balance(self) -> int:
        """generated - lost - (delivered + read but not yet written), over all kinds."""
        c = self.counters()
        return sum(c["generated"].values()) - sum(c["lost"].values()) - \
            (int(self.delivered.sum()) + sum(int(a.size) for a in self.pending)) - self._corrupt()

    def _probe_misses(self) -> Dict[str, int]:
        """Probe hits the kernel skipped without running the program, per BPF program (nonzero
        only): ``recursion_misses`` of its fdinfo (v5.12: 9ed9e9ba2337 "bpf: Count the number
        of times recursion was prevented").  A tracing program runs at most once per CPU at a
        time; preempted inside it (PREEMPT_LAZY, Debian's 7.x), another task's hit on that CPU
        is skipped, and so is its event.  Read before the programs are released."""
        out: Dict[str, int] = {}
        for name, fn in list(getattr(self.bpf, "funcs", {}).items()):
            try:
                with open(f"/proc/self/fdinfo/{fn.fd}") as f:
                    text = f.read()
            except (OSError, AttributeError):
                continue
            n = recursion_misses(text)
            if n:
                out[name.decode() if isinstance(name, bytes) else str(name)] = n
        return out

    def _ring_checks(self) -> Optional[dict]:
        """What the ring reader's record checks saw (zaptrace/ringbuf.py), for END."""
        ring = getattr(self, "ring", None)
        if ring is None:
            return None
        return {"held": ring.held, "overruns": ring.overruns, "corrupt": ring.corrupt}

    def _corrupt(self) -> int:
        checks = self._ring_checks()
        return checks["corrupt"] if checks else 0

    def _final_drain(self, poll) -> None:
        """Drain and write, then check the counters once more: should anything have
        been counted after the drain balanced, drain again rather than end the file
        with a count that does not add up (a safety net: the one case seen, on 5.10,
        was kind-0 records read from the ring, which ringbuf.py now refuses). The
        rounds taken are kept in END.stop."""
        rounds = 0
        while True:
            rounds += 1
            self._drain(poll)
            if not self.write_error:
                self._write(self._flush_events)
            if self.write_error or (self.opts.summary and not self.opts.keep_events) \
                    or self._balance() <= 0 or rounds >= 3:
                break
            time.sleep(0.1)
        self.stop_info["drain_rounds"] = rounds

    def _drain(self, poll) -> None:
        """Take what the kernel still holds, until delivered + lost = generated.

        _stop_bpf() has waited for the programs that passed the stop check, so
        what is left is the buffer itself; poll until the counters balance (10 s
        at most; an imbalance left is reported as in flight, never hidden).
        """
        if self.opts.summary and not self.opts.keep_events:
            return
        end = time.monotonic() + 10
        while True:
            before = -1
            while self.pending_n != before:
                before = self.pending_n
                poll(0)
            missing = self._balance()
            if missing <= 0 or time.monotonic() > end:
                self.in_flight = max(missing, 0)
                return
            time.sleep(0.02)

    def _write(self, fn) -> bool:
        """Run a trace write; on failure remember why and stop writing (never lose what is on disk)."""
        try:
            fn()
            return True
        except OSError as e:
            self.write_error = e.strerror or str(e)
            return False

    def _still_running(self) -> List[int]:
        """Followed processes that outlive the recording (CMD's children, say): not waited for."""
        try:
            tg = self.bpf["tgids"]
            pids = [int(k.value) for k in tg.keys()]
        except Exception:  # noqa: BLE001 - informative only
            return []
        return sorted(p for p in pids if p != os.getpid() and process.alive(p) and not process.is_zombie(p))

    def _end_workload(self, reason: str) -> int:
        """Stop the workload if it still runs; return the exit status zaptrace reports.

        The command's own status when it exited by itself; 128+N when
        zaptrace was interrupted by signal N; 0 when -d ended the recording.
        """
        sig = self.stop_signal
        ch = self.child
        if ch is not None and ch.poll() is None:
            # Ctrl-C reaches the whole foreground group: give the workload a moment
            # to exit on its own, then ask it to, then insist.
            if sig != signal.SIGINT:
                ch.signal(signal.SIGTERM)
            if not self._wait_child(2.0):
                ch.signal(signal.SIGTERM)
                if not self._wait_child(2.0):
                    ch.signal(signal.SIGKILL)
                    ch.wait()
        if ch is not None and (sig or reason.startswith("duration") or self.write_error):
            # We stopped the command early: end the rest of the tree it started too
            # (never processes followed with -p: those are not ours).
            self._end_tree()
        if sig:
            return 128 + sig
        if reason == "command exited" and ch is not None:
            return ch.status or 0
        return 0

    def _end_tree(self) -> None:
        rest = self._still_running()
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0)):
            if not rest:
                return
            for pid in rest:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            end = time.monotonic() + wait
            while time.monotonic() < end and any(process.alive(p) for p in rest):
                time.sleep(0.05)
            rest = [p for p in rest if process.alive(p)]

    def _wait_child(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.child.poll() is not None:
                return True
            time.sleep(0.05)
        return self.child.poll() is not None

    def _vmemmap(self) -> dict:
        c = self.bpf["config"][ctypes.c_int(0)]
        if not c.vmemmap_val:
            return {}
        return {"vmemmap_base": int(c.vmemmap_val), "struct_page_size": int(c.page_size)}

    def _head(self, plan: planmod.Plan) -> dict:
        L = self.L
        return {
            "format": "zaptrace",
            "zaptrace_version": __version__,
            "kernel": {"release": plan.release, "version": platform.version(), "machine": platform.machine()},
            "host": socket.gethostname(),
            "command": self.opts.command,
            "argv": sys.argv,
            "target": {"pid": self.opts.pid, "all": self.opts.all_processes,
                       "uid": self.ident.uid if self.opts.command else None},
            "clock": "CLOCK_MONOTONIC (bpf_ktime_get_ns)",
            "start_ns": time.monotonic_ns(),
            "start_wall_ns": time.time_ns(),
            **L.head_fields(),
            "probes": plan.probe_map(),
            "buffer": {"kind": "ringbuf" if plan.ringbuf else "perfbuf", "pages": plan.ringbuf_pages},
            "vmemmap_base_addr": planmod.vmemmap_addr(plan),
            "btf": plan.btf,
            "mkclean_all": self.opts.mkclean_all,
            "mode": ("summary+events" if self.opts.keep_events else "summary") if self.opts.summary else "events",
            "zap_return": self.opts.zap_return,
            "zap_entry": self.opts.zap_entry,
            "cpus": os.cpu_count(),
            "machine": machine.describe_here(),
        }


def recursion_misses(fdinfo: str) -> int:
    """The ``recursion_misses`` of a BPF program's /proc/PID/fdinfo text (0 when absent: before v5.12)."""
    for line in fdinfo.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "recursion_misses" and val.strip().isdigit():
            return int(val)
    return 0


def _cpu_seconds() -> float:
    """CPU time of the recorder itself (not its children)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def summary_lines(res: Result) -> List[str]:
    L = layout()
    lines = [f"zaptrace: {res.stop_reason}; recorded for {res.duration:.2f} s to {res.path} ({res.bytes / 1024:.0f} KiB)"]
    if res.summary is not None:
        lines.extend(ksummary.histogram_lines(res.summary))
    if res.summary is not None and not sum(res.delivered.values()):
        lines.append(f"\n  {'event':<20} {'probe hits':>10}")
        for k, name in sorted(L.kind_names.items()):
            lines.append(f"  {name.lower():<20} {res.generated.get(name.lower(), 0):>10}")
        return lines + _status_lines(res)
    lines.append(f"  {'event':<20} {'delivered':>10} {'lost':>8}")
    td = tl = 0
    for k, name in sorted(L.kind_names.items()):
        n = name.lower()
        d, lo = res.delivered.get(n, 0), res.lost.get(n, 0)
        td += d
        tl += lo
        lines.append(f"  {n:<20} {d:>10} {lo:>8}")
    lines.append(f"  {'total':<20} {td:>10} {tl:>8}")
    if res.zaps_not_written:
        lines.append(f"  ({res.zaps_not_written} zaps with nothing inside them were counted, not written)")
    zr = res.zap_return
    if zr and zr["mode"] == "inferred":
        what = "zap entries and returns" if zr.get("entry") == "inferred" else "zap returns"
        lines.append(f"  ({what} inferred, not probed: {zr['inferences']} inferences, check them with "
                     f"--zap-return checked; a zap's entry time is its first event's, and zaps with "
                     f"nothing inside are not counted)")
    elif zr:
        if "opens" in zr:
            lines.append(f"  (zap brackets probed and inferred: {zr['joined']} of {zr['opens']} openers inside a "
                         f"zap joined it to an earlier zap's bracket, {zr['split']} split their zap's bracket)")
        what = "zap brackets" if zr.get("entry") == "inferred" else "zap returns"
        lines.append(f"  ({what} probed and inferred: {zr['disagreed']} of {zr['inferences']} "
                     f"inferences disagreed with the probe)")
    if tl:
        lines.append(f"zaptrace: WARNING: {tl} events lost (ring buffer full): enlarge it with --buffer-pages")
    if res.probe_misses:
        lines.append(f"zaptrace: WARNING: the kernel skipped {sum(res.probe_misses.values())} probe hits "
                     f"(a BPF program already running on that CPU: preempted, or nested), their events are "
                     f"missing: " + ", ".join(f"{k} {v}" for k, v in sorted(res.probe_misses.items()))
                     + " (END.probe_misses)")
    if res.ring_corrupt:
        lines.append(f"zaptrace: WARNING: {res.ring_corrupt} ring buffer records were not zaptrace records "
                     f"after {ringbuf.STUCK_S:g} s and were dropped (counted in END.ring_corrupt)")
    for m in res.missing:
        lines.append(f"zaptrace: not attached (optional): {m}")
    lines.extend(_status_lines(res))
    return lines


def _status_lines(res: Result) -> List[str]:
    out = []
    st = res.command_status
    if st is not None:
        if st > 128 and st - 128 in signal.Signals._value2member_map_:
            out.append(f"zaptrace: the command was killed by {signal.Signals(st - 128).name} (status {st})")
        elif st:
            out.append(f"zaptrace: the command exited with status {st}")
    if res.still_running:
        shown = ", ".join(map(str, res.still_running[:8])) + (" ..." if len(res.still_running) > 8 else "")
        out.append(f"zaptrace: {len(res.still_running)} followed processes still run and were not recorded "
                   f"after the recording ended (pids {shown})")
    return out
