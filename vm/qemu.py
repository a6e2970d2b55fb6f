"""QEMU: choosing the accelerator, building the command line, and owning the process.

KVM is used only where it really boots a Debian kernel.  Some hosts expose a
/dev/kvm that does not (PVM-based sandboxes abort with "failed to set MSR
0x10a" or hang after "Probing EDD"), so the first ``--accel auto`` run on a
host boots a probe guest once, bounded by ``PROBE_TIMEOUT``, and remembers
the answer per host kernel release and QEMU version.
"""

import ctypes
import functools
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from . import cache, tools
from .errors import VMError
from .kernel import GuestKernel

QEMU = "qemu-system-x86_64"
ACCELS = ("auto", "kvm", "tcg")
PROBE_TIMEOUT = 25.0
PROBE_MARKER = b"ZAPTRACE-PROBE-OK"

#: "quiet-ish": warnings and worse (with their stack traces) reach the console
#: log, boot chatter does not.  A soft lockup or hung task panics the guest and
#: panic=-1 with QEMU's -no-reboot ends the run at once, instead of leaving a
#: wedged guest to run into --timeout: the console log then holds the stacks.
#: An RCU stall panics too (sysctl.* on the command line: 5.8+): seen with QEMU 10's
#: multi-threaded TCG, 3 vCPUs on a 2-core host, about once in a few dozen boots: a vCPU
#: halted early in boot was never woken by its timer ("rcu_preempt kthread timer wakeup
#: didn't happen ... Possible timer handling issue on cpu=2"), and the boot hung for good.
#: vm/runner.py boots such a guest again when the stall came before the command started.
KERNEL_CMDLINE = (
    "console=ttyS0 panic=-1 loglevel=5 softlockup_panic=1 softlockup_all_cpu_backtrace=1"
    " sysctl.kernel.panic_on_rcu_stall=1"
)


#: Guest vCPUs when ``vm run --smp`` is not given, single-threaded TCG: 2 (a third vCPU
#: in the same host thread adds round-robin time, not parallelism).
SINGLE_TCG_VCPUS = 2

#: Multi-threaded TCG: 3 vCPUs (a zapper, a writer and writeback at the same instant),
#: but never more than the host has CPUs, and at least 2.  Measured on a 2-CPU host
#: (bench/guest_mode.py, 6.1 `race`, QEMU 10.0.2, 2026-11-27, 5 interleaved rounds): 3 vCPU
#: threads on 2 cores made boots slower than 2 (wall p50 117.6 against 84.7 s) and the
#: covering flush 8.5 times longer (it waits for a vCPU without a host core); the one RCU
#: stall seen (a halted vCPU that its timer never woke) was with 3 vCPUs on 2 cores.
MULTI_TCG_MAX_VCPUS = 3

#: The oldest QEMU on which multi-threaded TCG survived probes attached and detached under
#: load (bench/wedge.py: 50 of 50 cycles on each of 5.10, 6.1, 6.12 and 7.2; an earlier
#: 7.2 run had one cycle over its time limit on an overloaded host; docs/guest.md "Guest mode");
#: QEMU 7.2 wedged (see tcg_threading).
MULTI_TCG_MIN_QEMU = (10, 0)


def default_vcpus() -> int:
    if tcg_threading() == "single":
        return SINGLE_TCG_VCPUS
    return max(2, min(MULTI_TCG_MAX_VCPUS, os.cpu_count() or 2))


def tcg_threading() -> str:
    """``multi`` or ``single``: QEMU's TCG threading for the guest.

    ``thread=multi`` (one host thread per vCPU) is what makes races that need
    two CPUs at the same instant possible: with ``thread=single`` the vCPUs run
    round-robin in one host thread, a TLB-flush IPI waits for the emulator to
    switch to the target vCPU, and two CPUs never touch a page at the same
    instant.  A window that stays open across such a switch is another matter:
    the 7.2 PMD window (milliseconds) lost writes single-threaded too (docs/findings.md
    "Does it lose data?"): the writer's vCPU gets turns, and stores through its
    stale TLB entry, between the mapcount drop and the zapping vCPU's flush.

    Default: ``multi`` when QEMU is at least MULTI_TCG_MIN_QEMU, else ``single``;
    ``ZAPTRACE_VM_TCG=single|multi`` overrides.  Why the version matters:
    QEMU 7.2 (Debian 12's own) wedged the 6.1 guest for good when BPF
    trampolines or kprobes were attached or detached while another vCPU ran the
    patched function (both vCPUs at page_remove_rmap+0x0, one in the int3
    handler after text_poke_bp(); our reading: a stale translation of the
    int3).  With QEMU 10.0 (bookworm-backports, installed by scripts/setup),
    bench/wedge.py's attach/detach cycles under load ran through (docs/guest.md
    "Guest mode" has the counts per kernel).  Multi-threaded boots on QEMU 10
    have two known failure modes in early boot, both retried by vm/runner.py
    before the command starts: QEMU aborting (``iotlb_to_section`` assertion)
    and an RCU stall of a vCPU that was never woken.
    """
    mode = os.environ.get("ZAPTRACE_VM_TCG")
    if mode is None:
        return "multi" if version_tuple() >= MULTI_TCG_MIN_QEMU else "single"
    if mode not in ("single", "multi"):
        raise VMError("ZAPTRACE_VM_TCG must be 'single' or 'multi', not %r" % mode)
    return mode


def tcg_reason() -> str:
    """Why tcg_threading() chose what it did, for ``vm status``."""
    need = ".".join(map(str, MULTI_TCG_MIN_QEMU))
    if os.environ.get("ZAPTRACE_VM_TCG"):
        why = "ZAPTRACE_VM_TCG=%s" % os.environ["ZAPTRACE_VM_TCG"]
        if tcg_threading() == "multi" and version_tuple() < MULTI_TCG_MIN_QEMU:
            why += "; WARNING: QEMU older than %s wedged multi-threaded guests while probes attach" % need
        return why
    if tcg_threading() == "multi":
        return "default with QEMU >= %s; ZAPTRACE_VM_TCG=single runs all vCPUs in one host thread" % need
    return ("default: QEMU older than %s wedged multi-threaded guests while probes attach "
            "(scripts/setup installs a newer one on Debian 12)" % need)


class Share(NamedTuple):
    """A host directory exported to the guest over virtio-9p."""

    tag: str
    path: str
    readonly: bool


@functools.lru_cache(maxsize=None)
def version() -> str:
    """The first line of ``qemu-system-x86_64 --version``."""
    tools.require(QEMU)
    return tools.run([QEMU, "--version"], "%s --version" % QEMU).splitlines()[0].strip()


def version_tuple() -> Tuple[int, int]:
    """(major, minor) of QEMU, from ``version()``; (0, 0) if it does not parse."""
    m = re.search(r"version (\d+)\.(\d+)", version())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def kvm_usable() -> bool:
    """True if /dev/kvm exists and this user may open it."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


def _probe_key() -> str:
    return "%s | %s" % (os.uname().release, version())


def cached_probe() -> Optional[Dict[str, object]]:
    """The remembered KVM probe result for this host, if any."""
    results = cache.read_json(cache.kvm_probe_file()) or {}
    return results.get(_probe_key())


def choose_accel(requested: str, kernel: GuestKernel, initrd: Path) -> str:
    """Resolve ``--accel`` (auto|kvm|tcg) to "kvm" or "tcg"."""
    if requested not in ACCELS:
        raise VMError("--accel must be one of %s, not %r" % ("|".join(ACCELS), requested))
    if requested == "tcg":
        return "tcg"
    if requested == "kvm":
        if not kvm_usable():
            raise VMError("--accel kvm: /dev/kvm is missing or not accessible")
        return "kvm"
    if not kvm_usable():
        return "tcg"
    result = cached_probe()
    if result is None:
        result = probe_kvm(kernel, initrd)
    return "kvm" if result["ok"] else "tcg"


def probe_kvm(kernel: GuestKernel, initrd: Path) -> Dict[str, object]:
    """Boot ``kernel`` under KVM to its initramfs and back; remember and return the outcome."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zaptrace-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        argv = command(
            kernel, initrd, "kvm", memory_mb=512, smp=1, console=console,
            shares=[], disks=[], outputs=None, append="zaptrace.probe=1",
        )
        with open(Path(tmp) / "qemu.log", "wb") as qlog:
            proc = start(argv, qlog, pass_fds=(), env=dict(os.environ, TMPDIR=tmp))
            try:
                proc.wait(timeout=PROBE_TIMEOUT)
                how = "exited with status %d" % proc.returncode
            except subprocess.TimeoutExpired:
                how = "timed out after %.0f s" % PROBE_TIMEOUT
            finally:
                stop(proc)
        ok = PROBE_MARKER in console.read_bytes()
        if not ok:
            detail = tools.last_line((Path(tmp) / "qemu.log").read_bytes() + b"\n" + console.read_bytes())
            how = "%s: %s" % (how, detail)
    result = {
        "ok": ok,
        "detail": "boots" if ok else how,
        "kernel": kernel.kver,
        "seconds": round(time.monotonic() - started, 1),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results = cache.read_json(cache.kvm_probe_file()) or {}
    results[_probe_key()] = result
    cache.write_json(cache.kvm_probe_file(), results)
    return result


def _escape(value: str) -> str:
    """Quote a value for QEMU's comma-separated option syntax."""
    return value.replace(",", ",,")


def command(
    kernel: GuestKernel,
    initrd: Path,
    accel: str,
    *,
    memory_mb: int,
    smp: int,
    console: Path,
    shares: Sequence[Share],
    disks: Sequence[Path],
    outputs: Optional[Tuple[int, int]],
    append: str = "",
) -> List[str]:
    """The QEMU argv.

    ``disks`` become /dev/vda, /dev/vdb, ... (all ``snapshot=on``: the images
    are never written).  ``outputs`` are the host fds (inherited by QEMU) that
    receive the guest's hvc0 and hvc1: virtio consoles, about ten times the
    throughput of an emulated 16550 UART under TCG, and the guest's writes
    block until QEMU has taken the data, so nothing is lost at poweroff.
    """
    argv = [QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    if accel == "kvm":
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        argv += ["-accel", "tcg,thread=%s" % tcg_threading()]
    argv += ["-m", str(memory_mb), "-smp", str(smp)]
    argv += ["-kernel", str(kernel.vmlinuz), "-initrd", str(initrd)]
    argv += ["-append", (KERNEL_CMDLINE + " " + append).strip()]
    argv += ["-chardev", "file,id=console,path=%s" % _escape(str(console)), "-serial", "chardev:console"]
    if outputs is not None:
        argv += ["-device", "virtio-serial-pci"]
        for name, fd in zip(("stdout", "stderr"), outputs):
            argv += [
                "-chardev", "file,id=%s,path=/proc/self/fd/%d,append=on" % (name, fd),
                "-device", "virtconsole,chardev=%s,name=zaptrace.%s" % (name, name),
            ]
    for disk in disks:
        argv += ["-drive", "file=%s,if=virtio,format=raw,snapshot=on" % _escape(str(disk))]
    for share in shares:
        argv += [
            "-virtfs",
            "local,path=%s,mount_tag=%s,security_model=none,multidevs=remap%s"
            % (_escape(share.path), share.tag, ",readonly=on" if share.readonly else ""),
        ]
    argv += ["-device", "virtio-rng-pci"]
    return argv


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL QEMU if the process that started it dies first."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start(argv: List[str], log, pass_fds: Sequence[int], env: Mapping[str, str]) -> subprocess.Popen:
    """Start QEMU in its own process group, its own output going to ``log``."""
    tools.require(QEMU)
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=tuple(pass_fds),
        env=dict(env),
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Make sure QEMU's process group is gone: SIGTERM, then SIGKILL after ``grace`` s.

    SIGTERM first lets QEMU delete its snapshot=on overlay files.  The group is
    signalled only while QEMU is unreaped, so its id cannot have been reused.
    """
    if proc.returncode is not None:
        return
    _killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not _exited(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _exited(pid: int) -> bool:
    """True once ``pid`` has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
