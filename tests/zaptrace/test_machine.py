"""What produced a trace's timings is said in every report (zaptrace/machine.py)."""
import json

from zaptrace import machine


def test_guest_mode_comes_from_the_runner(monkeypatch):
    mode = {"qemu": "QEMU emulator version 7.2.19", "accel": "tcg", "tcg": "single", "vcpus": 2,
            "host_cpus": 2, "scratch_fs": "ext4"}
    monkeypatch.setenv("ZAPTRACE_GUEST_MODE", json.dumps(mode))
    m = machine.describe_here()
    assert m["zaptrace_guest"] == mode and m["cpus"] >= 1
    line = machine.summary_line(m)
    assert line.startswith("zaptrace QEMU guest, single-threaded TCG (all vCPUs in one host thread")
    assert "2 vCPUs on a 2-CPU host (QEMU emulator version 7.2.19; scratch ext4)" in line
    assert machine.short(m) == "TCG single x2"
    multi = dict(mode, tcg="multi", vcpus=3)
    line = machine.summary_line({"zaptrace_guest": multi})
    assert "multi-threaded TCG (one host thread per vCPU: CPUs run in parallel, but every instruction" in line
    assert "more vCPUs than host CPUs" in line and "3 vCPUs on a 2-CPU host" in line
    assert "more vCPUs" not in machine.summary_line({"zaptrace_guest": dict(multi, vcpus=2)})
    assert machine.short({"zaptrace_guest": multi}) == "TCG multi x3"


def test_outside_a_zaptrace_guest(monkeypatch):
    monkeypatch.delenv("ZAPTRACE_GUEST_MODE", raising=False)
    assert "zaptrace_guest" not in machine.describe_here()
    assert machine.summary_line({"cpus": 16, "hypervisor": False}).startswith("no hypervisor flag (bare metal")
    assert machine.short({"cpus": 8, "hypervisor": True}) == "VM x8"
    assert machine.summary_line(None).startswith("unknown")
