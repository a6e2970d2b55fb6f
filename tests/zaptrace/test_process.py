"""Starting the traced command: lookup, gate, identity, exit codes."""
import os
import signal
import tempfile
import time

import pytest

from zaptrace import process


def test_resolve_command_errors(tmp_path):
    with pytest.raises(process.SpawnError, match="command not found"):
        process.resolve_command(["definitely-not-a-command-zt"])
    plain = tmp_path / "plain"
    plain.write_text("data")
    plain.chmod(0o644)
    with pytest.raises(process.SpawnError, match="not executable"):
        process.resolve_command([str(plain)])
    with pytest.raises(process.SpawnError, match="directory"):
        process.resolve_command(["/tmp"])
    assert process.resolve_command(["sh"]).endswith("/sh")


def test_gated_child_runs_only_when_released(tmp_path):
    marker = tmp_path / "ran"
    ident = process.invoking_identity({})
    ch = process.GatedChild("/bin/sh", ["sh", "-c", f"touch {marker}; exit 7"], ident, dict(os.environ))
    assert ch.poll() is None and not marker.exists()
    ch.release()
    assert ch.wait() == 7 and marker.exists()


def test_exec_failure_is_reported(tmp_path):
    script = tmp_path / "s"
    script.write_text("#!/nonexistent-interpreter\n")
    script.chmod(0o755)
    ch = process.GatedChild(str(script), [str(script)], process.invoking_identity({}), dict(os.environ))
    with pytest.raises(process.SpawnError, match="cannot run"):
        ch.release()


def test_signal_exit_codes_are_shell_style():
    ch = process.GatedChild("/bin/sh", ["sh", "-c", "kill -TERM $$"], process.invoking_identity({}), dict(os.environ))
    ch.release()
    assert ch.wait() == 128 + signal.SIGTERM


def test_sudo_identity_drops_root():
    ident = process.invoking_identity({"SUDO_UID": "65534", "SUDO_GID": "65534", "SUDO_USER": "nobody"})
    if os.geteuid() != 0:       # without root there is nothing to drop: SUDO_* are ignored
        assert not ident.drops_root and ident.uid == os.getuid()
        return
    assert ident.uid == 65534 and ident.drops_root
    d = tempfile.mkdtemp(dir="/tmp")
    os.chmod(d, 0o777)
    out = os.path.join(d, "id")
    ch = process.GatedChild("/bin/sh", ["sh", "-c", f"id -u > {out}"], ident, process.child_env(ident))
    ch.release()
    assert ch.wait() == 0
    assert open(out).read().strip() == "65534"
    assert os.stat(out).st_uid == 65534


def test_descendants_includes_children():
    assert os.getpid() in process.descendants(os.getppid())


def test_a_child_killed_before_release_is_an_error_not_a_silent_exit():
    ch = process.GatedChild("/bin/true", ["true"], process.invoking_identity({}), dict(os.environ))
    os.kill(ch.pid, signal.SIGKILL)
    time.sleep(0.2)
    with pytest.raises(process.SpawnError, match="died before it could start .killed by SIGKILL"):
        ch.release()
