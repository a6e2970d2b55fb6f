"""Real guest boots (``zaptrace vm build`` first).  Each test boots one guest
through the CLI, as users and CI do, with its output captured by pipes."""

import io
import os
import subprocess
import sys
import time

import pytest

from zaptrace.vm import runner
from zaptrace.vm.build import DEFAULT_KERNELS
from zaptrace.vm.labels import version

pytestmark = pytest.mark.guest

#: Generous: a TCG boot is ~8 s, a BCC compile ~3 s more.
TIMEOUT = 480


def vm_run(kernel, *command, cwd=None, options=(), env=None):
    """``python -m zaptrace.vm run --kernel K OPTIONS -- COMMAND``; returns the CompletedProcess."""
    argv = [sys.executable, "-m", "zaptrace.vm", "run", "--kernel", kernel] + list(options) + ["--"] + list(command)
    return subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=TIMEOUT)


def qemu_processes_using(path):
    """PIDs of live processes whose command line mentions ``path``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read()
            with open("/proc/%s/stat" % entry) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if path.encode() in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


def test_exit_status(guest_kernel, tmp_path):
    result = vm_run(guest_kernel, "sh", "-c", "exit 3", cwd=tmp_path)
    assert result.returncode == 3, result.stderr


def test_exit_by_signal_is_128_plus_n(guest_kernel, tmp_path):
    out = io.BytesIO()
    status = runner.run(guest_kernel, ["sh", "-c", "echo before; kill -TERM $$"], cwd=str(tmp_path),
                        stdout=out, stderr=io.BytesIO())
    assert status == 128 + 15
    assert out.getvalue() == b"before\n"


def test_stdout_and_stderr_come_back_separately_and_live(guest_kernel, tmp_path):
    script = "echo first; echo oops >&2; sleep 4; seq 1 20000; printf 'no newline'"
    argv = [sys.executable, "-m", "zaptrace.vm", "run", "--kernel", guest_kernel, "--", "sh", "-c", script]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        seen_at = time.monotonic()
        rest, err = proc.communicate(timeout=TIMEOUT)
        ended_at = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert first == b"first\n"
    assert ended_at - seen_at > 3, "the first line arrived only at the end"
    expected = "".join("%d\n" % i for i in range(1, 20001)) + "no newline"
    assert rest.decode() == expected  # no lost bytes, no \r\n translation
    assert err == b"oops\n"


def test_cwd_round_trip(guest_kernel, tmp_path):
    (tmp_path / "in.txt").write_text("from the host\n")
    result = vm_run(guest_kernel, "sh", "-c", "pwd; tr a-z A-Z < in.txt > out.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == str(tmp_path)
    out = tmp_path / "out.txt"
    assert out.read_text() == "FROM THE HOST\n"
    assert out.stat().st_uid == os.getuid()


def test_guest_environment(guest_kernel, tmp_path):
    env = dict(os.environ, CI="guest-ci-value")
    script = ('echo "$ZAPTRACE_GUEST $ZAPTRACE_KERNEL $ZAPTRACE_SCRATCH $CI $EXTRA";'
              'findmnt -no FSTYPE,SOURCE "$ZAPTRACE_SCRATCH"; test -b /dev/vdb && echo block;'
              'sudo -u zt id -u; command -v zaptrace')
    result = vm_run(guest_kernel, "sh", "-c", script, cwd=tmp_path, env=env,
                    options=["--env", "EXTRA=a b"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "1 %s /scratch guest-ci-value a b" % guest_kernel
    assert lines[1].split() == ["ext4", "/dev/vdb"]
    assert lines[2:] == ["block", "1000", "/opt/zaptrace/bin/zaptrace"]


def test_vm_cli_works_with_the_guests_typer(guest_kernel, tmp_path):
    """The guest has Debian's typer 0.7: the vm sub-app must parse there too."""
    check = (
        "import sys, zaptrace.vm.runner as r\n"
        "r.run = lambda kernel, argv, **kw: print(kernel, argv) or 3\n"
        "from typer.testing import CliRunner\n"
        "from zaptrace.vm.cli import app\n"
        "res = CliRunner().invoke(app, ['run', '--kernel', '6.12', '--', 'sh', '-c', 'exit 3'])\n"
        "print(res.exit_code, res.output.strip())\n"
    )
    result = vm_run(guest_kernel, "env", "PYTHONPATH=/opt/zaptrace/lib", "python3", "-P", "-c", check,
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "3 6.12 ['sh', '-c', 'exit 3']"


def test_timeout_kills_the_guest(guest_kernel, tmp_path):
    started = time.monotonic()
    result = vm_run(guest_kernel, "sleep", "600", cwd=tmp_path, options=["--timeout", "10"])
    elapsed = time.monotonic() - started
    assert result.returncode == 124
    message = result.stderr.decode().strip()
    assert message.startswith("zaptrace: error: guest timed out after 10 s; console log: ")
    assert elapsed < 25
    rundir = os.path.dirname(message.rsplit("console log: ", 1)[1])
    assert qemu_processes_using(rundir) == []


@pytest.mark.parametrize("guest_kernel", DEFAULT_KERNELS, indirect=True)
def test_bcc_kprobe_on_the_zap_bracket(guest_kernel, tmp_path):
    # unmap_page_range() was inlined into __zap_vma_range() in v7.1 (3a31d08d242a)
    symbol = "__zap_vma_range" if version(guest_kernel) >= (7, 1) else "unmap_page_range"
    program = (
        "import bcc\n"
        "b = bcc.BPF(text='int kprobe__%s(void *ctx) { return 0; }')\n"
        "print('kprobes', b.num_open_kprobes())\n" % symbol
    )
    result = vm_run(guest_kernel, "python3", "-c", program, cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().strip() == "kprobes 1"


@pytest.mark.parametrize("guest_kernel", ["6.1", "7.2"], indirect=True)
def test_scratch_disk_can_be_xfs(guest_kernel, tmp_path):
    """XFS has had large folios since 5.18 (ext4 since 6.16): the PMD path needs them."""
    result = vm_run(guest_kernel, "sh", "-c", 'stat -f -c %T "$ZAPTRACE_SCRATCH"; touch "$ZAPTRACE_SCRATCH/x"',
                    cwd=tmp_path, options=["--scratch-fs", "xfs"])
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().strip() == "xfs"


def test_unknown_scratch_filesystem_is_a_one_line_error(tmp_path):
    result = vm_run("6.1", "true", cwd=tmp_path, options=["--scratch-fs", "btrfs"])
    assert result.returncode == 2
    assert result.stderr.decode().strip() == \
        "zaptrace: error: unknown scratch filesystem 'btrfs': choose from ext4, xfs"
