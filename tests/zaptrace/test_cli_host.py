"""The CLI on this machine: fail fast, one line, no traceback, right exit status."""
import os
import subprocess
import sys

import pytest

from zaptrace import kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAS_KPROBES = kernel.read_kallsyms().has("register_kprobe")


def zt(*args, cwd=None, env=None, timeout=60):
    e = dict(os.environ, PYTHONPATH=ROOT, COLUMNS="200")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "zaptrace", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=e, timeout=timeout)


def assert_one_line_error(p, code=2, *needles):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    errs = [line for line in p.stderr.splitlines() if line.startswith("zaptrace: error:")]
    assert len(errs) == 1, p.stderr
    for n in needles:
        assert n in errs[0], errs[0]


def test_doctor_verdict_matches_the_kernel():
    p = zt("doctor")
    assert "Traceback" not in p.stderr
    if not HAS_KPROBES:
        assert_one_line_error(p, 1, "no kprobes", "zaptrace vm")
    assert "probes:" in p.stdout and "rmap" in p.stdout


def test_record_fails_fast_without_kprobes(tmp_path):
    p = zt("record", "-o", str(tmp_path / "t.zt"), "--", "true")
    if not HAS_KPROBES:
        assert_one_line_error(p, 2, "no kprobes", "zaptrace vm run")
        assert not (tmp_path / "t.zt").exists()     # nothing half-written


def test_record_checks_the_command_before_anything_else(tmp_path):
    p = zt("record", "-o", str(tmp_path / "t.zt"), "--", "no-such-command-zt")
    assert_one_line_error(p, 2, "command not found: no-such-command-zt")


@pytest.mark.parametrize("args,needle", [
    (["record"], "nothing to record"),
    (["record", "-p", "1", "-a"], "exclude each other"),
    (["record", "-d", "0", "--", "true"], "positive"),
])
def test_record_argument_errors(args, needle):
    assert_one_line_error(zt(*args), 2, needle)


def test_ebpf_prints_the_program_without_root_or_bcc():
    p = zt("record", "--ebpf")
    assert p.returncode == 0, p.stderr
    assert "#define ZT_HAVE_RMAP 1" in p.stdout and "struct zt_event" in p.stdout
    # the entry points are generated for this kernel: BPF trampolines where it has BTF ...
    assert "int zt_rmap(struct pt_regs *ctx)" in p.stdout or "int kfunc__" in p.stdout
    # ... kprobe wrappers with --kprobes, one per handler of an attached event, each calling it
    p = zt("record", "--ebpf", "--kprobes")
    assert p.returncode == 0, p.stderr
    assert "int zt_rmap(struct pt_regs *ctx) { return h_rmap(ctx); }" in p.stdout
    assert "int zt_zap_exit(struct pt_regs *ctx) { return h_zap_exit(ctx); }" in p.stdout
    assert "int kfunc__" not in p.stdout


def test_help_has_worked_examples():
    p = zt("record", "--help")
    assert p.returncode == 0 and "Examples:" in p.stdout and "zaptrace vm run" in p.stdout
    p = zt("workload", "list")
    assert {"dontneed-shared", "munmap-anon", "race"} <= {line.split()[0] for line in p.stdout.splitlines()}


def test_workload_errors_are_one_line(tmp_path):
    assert_one_line_error(zt("workload", "run", "nope"), 2, "unknown workload")
    assert_one_line_error(zt("workload", "run", "race", "--dir", str(tmp_path / "missing")), 2, "does not exist")
    for name in ("race", "lostwrite"):     # a directory that takes no files (no traceback)
        assert_one_line_error(zt("workload", "run", name, "--iterations", "1", "--dir", "/proc"), 2,
                              "cannot create the workload's file in /proc")
    for name in ("race", "lostwrite"):     # not a run of 0 s, nor (lostwrite) a run by passes
        assert_one_line_error(zt("workload", "run", name, "--duration", "-1", "--dir", str(tmp_path)), 2,
                              "--duration must be a positive number of seconds")


def test_workload_runs_on_the_host(tmp_path):
    p = zt("workload", "run", "dontneed-shared", "--pages", "8", "--iterations", "5", "--dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "5 zaps of 8 dirty shared file pages" in p.stderr
    assert os.listdir(tmp_path) == []            # cleaned up
