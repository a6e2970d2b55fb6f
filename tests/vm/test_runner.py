"""The runner's host-side pieces: run-script quoting, share placement, output
delivery, exit status handling (no guest)."""

import io
import json
import subprocess
import sys

import pytest

from zaptrace.vm import runner
from zaptrace.vm.errors import BootError, VMError

AWKWARD = [
    "", " ", "two words", "'", '"', "it's \"quoted\"", "$HOME", "${PATH}", "`id`", "$(echo no)",
    "\\", "back\\slash\\n", "new\nline", "tab\there", "*", "?", "[a]", "~", "-c", "--", ";", "&&",
    "| cat", "> /dev/null", "#comment", "é ü 漢字", "trailing\\",
]


def run_script(tmp_path, argv, env):
    script = tmp_path / "cmd.sh"
    script.write_bytes(runner.command_script(argv, str(tmp_path), env))
    return subprocess.run(["env", "-i", "/bin/sh", str(script)], stdout=subprocess.PIPE, check=True)


def test_command_script_quotes_awkward_argv_and_env(tmp_path):
    probe = "import json, os, sys; print(json.dumps([sys.argv[1:], os.getcwd(), os.environ['X'], os.environ['Y']]))"
    env = {"X": "a 'b' \"c\" $d `e` \\f\ng", "Y": "", "PATH": "/usr/bin:/bin"}
    out = run_script(tmp_path, [sys.executable, "-c", probe] + AWKWARD, env)
    argv, cwd, x, y = json.loads(out.stdout)
    assert argv == AWKWARD
    assert cwd == str(tmp_path)
    assert (x, y) == (env["X"], "")


def test_command_script_exit_status_and_signal(tmp_path):
    """Run as stage2.sh runs it: the status a shell reports, 128+N for signal N."""
    script = tmp_path / "cmd.sh"
    for argv, expected in ((["sh", "-c", "exit 3"], 3), (["sh", "-c", "kill -TERM $$"], 143)):
        script.write_bytes(runner.command_script(argv, str(tmp_path), {"PATH": "/usr/bin:/bin"}))
        stage2 = subprocess.run(["/bin/sh", "-c", '/bin/sh "$1"; echo "$?"', "sh", str(script)],
                                stdout=subprocess.PIPE)
        assert int(stage2.stdout) == expected


def test_command_script_rejects_bad_input(tmp_path):
    with pytest.raises(VMError, match="no command"):
        runner.command_script([], "/", {})
    with pytest.raises(VMError, match="invalid environment variable"):
        runner.command_script(["true"], "/", {"A B": "x"})


@pytest.mark.parametrize("cwd", ["/", "/usr", "/usr/lib", "/etc/foo", "/var", "/proc/1", "/run/x", "/scratch"])
def test_check_cwd_rejects_system_dirs(cwd):
    with pytest.raises(VMError, match="cannot share"):
        runner.check_cwd(cwd)


@pytest.mark.parametrize("cwd", ["/work/main", "/tmp/pytest-1/x", "/root", "/home/u/src", "/var/tmp/x", "/usr2"])
def test_check_cwd_accepts(cwd):
    runner.check_cwd(cwd)


@pytest.mark.parametrize("checkout, cwd, expected", [
    ("/work/main", "/work/main", ""),           # the cwd share shows it
    ("/work/main", "/work", ""),                # ... also from above
    ("/work/main", "/work/main/tests", "/work/main"),
    ("/work/main", "/tmp/x", "/work/main"),
    ("/usr/lib/python3/dist-packages", "/tmp/x", ""),  # would hide the guest's packages
    ("/usr/local/lib/python3.11/site-packages", "/tmp/x", ""),
])
def test_checkout_mount_point(checkout, cwd, expected):
    assert runner.checkout_mount_point(checkout, cwd) == expected


def test_checkout_dir_holds_the_packages():
    checkout = runner.checkout_dir()
    assert (checkout / "vm" / "runner.py").is_file()
    assert (checkout / "vm" / "guest" / "stage2.sh").is_file()


def test_writer_binary_text_and_fd(tmp_path):
    binary = io.BytesIO()
    runner._writer(binary, 1)(b"abc\xff")
    assert binary.getvalue() == b"abc\xff"

    text = io.StringIO()
    write = runner._writer(text, 1)
    snowman = "\u2603".encode()
    write(b"x" + snowman[:2])  # a character split across two chunks
    write(snowman[2:] + b"y")
    assert text.getvalue() == "x\u2603y"

    with open(tmp_path / "out", "wb") as f:
        runner._writer(f, 1)(b"to the fd")
    assert (tmp_path / "out").read_bytes() == b"to the fd"


def make_rundir(tmp_path):
    (tmp_path / "ctl").mkdir()
    (tmp_path / "console.log").write_text("boot\nzaptrace: fatal: cannot mount the root disk\n")
    (tmp_path / "qemu.log").write_text("qemu-system-x86_64: some failure\n")
    return tmp_path


def test_exit_status_from_status_file(tmp_path):
    rundir = make_rundir(tmp_path)
    (rundir / "ctl" / "status").write_text("137\n")
    assert runner._exit_status(rundir, 0) == 137


def test_exit_status_guest_setup_error(tmp_path):
    rundir = make_rundir(tmp_path)
    (rundir / "ctl" / "error").write_text("cannot mount the scratch disk /dev/vdb\n")
    with pytest.raises(BootError, match="guest setup failed: cannot mount the scratch disk.*console log: "):
        runner._exit_status(rundir, 0)


def test_exit_status_missing_names_console_log(tmp_path):
    rundir = make_rundir(tmp_path)
    with pytest.raises(BootError) as e:
        runner._exit_status(rundir, 0)
    message = str(e.value)
    assert "\n" not in message
    assert "did not report an exit status" in message
    assert "cannot mount the root disk" in message
    assert message.endswith("console log: %s" % (rundir / "console.log"))
    assert e.value.exit_code == 125


def test_exit_status_qemu_failure(tmp_path):
    rundir = make_rundir(tmp_path)
    with pytest.raises(BootError, match="qemu exited with status 1 .*some failure"):
        runner._exit_status(rundir, 1)


def test_run_refuses_when_not_built(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path))
    with pytest.raises(VMError, match="guest image not built: run `zaptrace vm build`"):
        runner.run("6.1", ["true"])


STALL = "[   46.1] Kernel panic - not syncing: RCU Stall\n"


def test_stall_before_the_command_is_recognised(tmp_path):
    rundir = make_rundir(tmp_path)
    (rundir / "console.log").write_text("[ 24.8] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n" + STALL)
    assert runner._stalled_before_start(rundir) == STALL.strip()
    (rundir / "ctl" / "started").write_text("")          # the command had started: never retried
    assert runner._stalled_before_start(rundir) == ""
    (rundir / "ctl" / "started").unlink()
    (rundir / "console.log").write_text("[ 9.0] Kernel panic - not syncing: softlockup: hung tasks\n")
    assert runner._stalled_before_start(rundir) == ""


def test_a_boot_that_stalls_before_the_command_is_booted_again(tmp_path, monkeypatch, capsys):
    """runner.run's retry loop, with _boot standing in for QEMU: stall, stall, then a status."""
    boots = []

    def fake_boot(rundir, qemu_argv, timeout, stdout, stderr):
        boots.append(1)
        if len(boots) < 3:
            (rundir / "console.log").write_text(STALL)
        else:
            (rundir / "ctl" / "started").write_text("")
            (rundir / "ctl" / "status").write_text("7\n")
        return 0

    _fake_guest(monkeypatch, tmp_path)
    monkeypatch.setattr(runner, "_boot", fake_boot)
    assert runner.run("6.1", ["true"], cwd=str(tmp_path)) == 7
    assert len(boots) == 3
    err = capsys.readouterr().err
    assert err.count("never reached the command") == 2 and "attempt 3 of 3" in err
    boots.clear()
    monkeypatch.setattr(runner, "BOOT_ATTEMPTS", 2)
    with pytest.raises(BootError, match="RCU Stall"):
        runner.run("6.1", ["true"], cwd=str(tmp_path))
    assert len(boots) == 2


def _fake_guest(monkeypatch, tmp_path):
    """Everything runner.run needs before it boots, without a built guest."""
    from zaptrace.vm import cache
    from zaptrace.vm.kernel import GuestKernel
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runner.build, "ready", lambda kernel: None)
    monkeypatch.setattr(runner, "resolve_kernel", lambda k, m, h: GuestKernel(
        "6.1", "6.1.0-56-amd64", tmp_path / "vmlinuz", None, None))
    scratch = cache.scratch_image("ext4")
    scratch.parent.mkdir(parents=True, exist_ok=True)
    scratch.write_bytes(b"")
    monkeypatch.setattr(runner.initramfs, "ensure", lambda modules: tmp_path / "initrd")
    monkeypatch.setattr(runner.qemu, "choose_accel", lambda a, g, i: "tcg")
    monkeypatch.setattr(runner.qemu, "version", lambda: "QEMU emulator version 10.0.2")


ABORT = ("qemu-system-x86_64: system/physmem.c:2678: iotlb_to_section: Assertion "
         "`section_index < d->map.sections_nb' failed.\n")


def test_qemu_aborting_before_the_command_is_booted_again(tmp_path, monkeypatch, capsys):
    """QEMU's own assertion (SIGABRT, rc -6) in early boot: boot again; after the command
    started, or for any other exit of QEMU, never."""
    boots = []

    def fake_boot(rundir, qemu_argv, timeout, stdout, stderr):
        boots.append(1)
        (rundir / "console.log").write_text("[ 1.8] acpi PNP0A03:00: fail to add MMCONFIG information\n")
        if len(boots) == 1:
            (rundir / "qemu.log").write_text(ABORT)
            return -6
        (rundir / "ctl" / "started").write_text("")
        (rundir / "ctl" / "status").write_text("0\n")
        return 0

    _fake_guest(monkeypatch, tmp_path)
    monkeypatch.setattr(runner, "_boot", fake_boot)
    assert runner.run("6.1", ["true"], cwd=str(tmp_path)) == 0
    assert len(boots) == 2
    err = capsys.readouterr().err
    assert "QEMU aborted: " in err and "iotlb_to_section" in err and "attempt 2 of 3" in err

    (tmp_path / "other").mkdir()
    rundir = make_rundir(tmp_path / "other")
    (rundir / "qemu.log").write_text(ABORT)
    assert runner._qemu_aborted_before_start(rundir, -6).startswith("QEMU aborted: ")
    assert runner._qemu_aborted_before_start(rundir, 1) == ""        # not an abort
    (rundir / "ctl" / "started").write_text("")
    assert runner._qemu_aborted_before_start(rundir, -6) == ""       # the command had started
