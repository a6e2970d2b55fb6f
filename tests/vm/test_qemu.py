"""QEMU command line, accelerator choice and process cleanup (no guest)."""

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from zaptrace.vm import qemu
from zaptrace.vm.errors import VMError
from zaptrace.vm.kernel import GuestKernel
from tests.needs import need

GUEST = GuestKernel("6.1", "6.1.0-56-amd64", Path("/k/vmlinuz"), Path("/k/lib/modules/x"), None)


def _fake_qemu(monkeypatch, line):
    monkeypatch.setattr(qemu, "version", lambda: line)


def test_tcg_threading_choice(monkeypatch):
    monkeypatch.delenv("ZAPTRACE_VM_TCG", raising=False)
    _fake_qemu(monkeypatch, "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)")
    assert qemu.version_tuple() == (10, 0)
    # QEMU 10: multi-threaded by default, 3 vCPUs but no more than the host's CPUs, at least 2.
    assert qemu.tcg_threading() == "multi" and qemu.tcg_reason().startswith("default with QEMU >= 10.0")
    for host, vcpus in ((1, 2), (2, 2), (3, 3), (64, 3)):
        monkeypatch.setattr(os, "cpu_count", lambda host=host: host)
        assert qemu.default_vcpus() == vcpus, host
    monkeypatch.setenv("ZAPTRACE_VM_TCG", "single")
    assert qemu.tcg_threading() == "single" and qemu.default_vcpus() == 2
    assert qemu.tcg_reason() == "ZAPTRACE_VM_TCG=single"
    # QEMU 7.2 wedged multi-threaded guests: single by default, a warning if asked for multi.
    monkeypatch.delenv("ZAPTRACE_VM_TCG")
    _fake_qemu(monkeypatch, "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)")
    assert qemu.version_tuple() == (7, 2) and qemu.tcg_threading() == "single"
    assert "older than 10.0" in qemu.tcg_reason() and qemu.default_vcpus() == 2
    monkeypatch.setenv("ZAPTRACE_VM_TCG", "multi")
    assert qemu.tcg_threading() == "multi" and "WARNING" in qemu.tcg_reason()
    _fake_qemu(monkeypatch, "something else")
    assert qemu.version_tuple() == (0, 0)
    monkeypatch.setenv("ZAPTRACE_VM_TCG", "fast")
    with pytest.raises(VMError, match="ZAPTRACE_VM_TCG"):
        qemu.tcg_threading()


def test_command_line(monkeypatch):
    monkeypatch.delenv("ZAPTRACE_VM_TCG", raising=False)
    _fake_qemu(monkeypatch, "QEMU emulator version 10.0.2")
    argv = qemu.command(
        GUEST, Path("/c/initrd,1.gz"), "tcg", memory_mb=2048, smp=2, console=Path("/runs/a,b/console.log"),
        shares=[qemu.Share("zt_cwd", "/home/u/my,dir", False), qemu.Share("zt_src", "/src", True)],
        disks=[Path("/c/rootfs.img"), Path("/c/scratch.img")], outputs=(7, 9),
    )
    joined = " ".join(argv)
    for flag in ("-nodefaults", "-no-reboot", "-display none"):
        assert flag in joined
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"  # QEMU 10: see qemu.tcg_threading
    assert argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-initrd") + 1] == "/c/initrd,1.gz"  # a plain argument: no escaping
    assert "file,id=console,path=/runs/a,,b/console.log" in argv
    assert "file,id=stdout,path=/proc/self/fd/7,append=on" in argv
    assert "file,id=stderr,path=/proc/self/fd/9,append=on" in argv
    assert argv[argv.index("-serial") + 1] == "chardev:console"
    assert "virtconsole,chardev=stdout,name=zaptrace.stdout" in argv
    assert argv.index("virtconsole,chardev=stdout,name=zaptrace.stdout") < argv.index(
        "virtconsole,chardev=stderr,name=zaptrace.stderr")  # hvc0, hvc1
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives == ["file=/c/rootfs.img,if=virtio,format=raw,snapshot=on",
                      "file=/c/scratch.img,if=virtio,format=raw,snapshot=on"]
    shares = [argv[i + 1] for i, a in enumerate(argv) if a == "-virtfs"]
    assert shares[0].startswith("local,path=/home/u/my,,dir,mount_tag=zt_cwd,security_model=none")
    assert "readonly=on" not in shares[0] and shares[1].endswith(",readonly=on")
    assert argv[argv.index("-append") + 1].startswith("console=ttyS0 panic=-1")


def test_command_line_kvm():
    argv = qemu.command(GUEST, Path("/i"), "kvm", memory_mb=512, smp=1, console=Path("/c"),
                        shares=[], disks=[], outputs=None, append="zaptrace.probe=1")
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-cpu") + 1] == "host"
    assert argv[argv.index("-append") + 1].endswith(" zaptrace.probe=1")
    assert "-drive" not in argv and "-virtfs" not in argv


def test_choose_accel(monkeypatch):
    probes = []
    monkeypatch.setattr(qemu, "probe_kvm", lambda k, i: probes.append(k) or {"ok": False})
    assert qemu.choose_accel("tcg", GUEST, Path("/i")) == "tcg"
    with pytest.raises(VMError, match="--accel"):
        qemu.choose_accel("hvf", GUEST, Path("/i"))

    monkeypatch.setattr(qemu, "kvm_usable", lambda: False)
    assert qemu.choose_accel("auto", GUEST, Path("/i")) == "tcg"
    with pytest.raises(VMError, match="/dev/kvm"):
        qemu.choose_accel("kvm", GUEST, Path("/i"))
    assert probes == []

    monkeypatch.setattr(qemu, "kvm_usable", lambda: True)
    assert qemu.choose_accel("kvm", GUEST, Path("/i")) == "kvm"  # explicit: no probe
    monkeypatch.setattr(qemu, "cached_probe", lambda: {"ok": True})
    assert qemu.choose_accel("auto", GUEST, Path("/i")) == "kvm"
    monkeypatch.setattr(qemu, "cached_probe", lambda: None)
    assert qemu.choose_accel("auto", GUEST, Path("/i")) == "tcg"
    assert probes == [GUEST]


def test_stop_kills_the_process_group(tmp_path):
    need(shutil.which(qemu.QEMU) is not None, "needs qemu-system-x86_64")
    with open(tmp_path / "log", "wb") as log:
        # A stand-in for QEMU that ignores SIGTERM and has a child in its group.
        proc = qemu.start(["sh", "-c", "trap '' TERM; sleep 300 & sleep 300"], log, (), os.environ)
    time.sleep(0.3)
    started = time.monotonic()
    qemu.stop(proc, grace=0.5)
    assert time.monotonic() - started < 5
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 2  # SIGKILL is delivered asynchronously
    while live_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_members(proc.pid) == []


def live_members(pgid):
    """Processes of group ``pgid`` that are not zombies (waiting for init to reap them)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members
