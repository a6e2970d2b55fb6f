"""``zaptrace vm`` argument handling, with runner.run replaced (no guest)."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from zaptrace.vm import cli, runner
from zaptrace.vm.errors import GuestTimeout, VMError


@pytest.fixture
def calls(monkeypatch):
    recorded = []

    def fake_run(kernel, argv, **kw):
        recorded.append((kernel, argv, kw))
        return 3
    monkeypatch.setattr(runner, "run", fake_run)
    return recorded


def invoke(args):
    return CliRunner().invoke(cli.app, args)


def test_run_passes_dash_options_through(calls):
    result = invoke(["run", "--kernel", "6.1", "--", "sh", "-c", "exit 3"])
    assert result.exit_code == 3, result.output
    assert calls == [("6.1", ["sh", "-c", "exit 3"], calls[0][2])]


def test_run_without_double_dash_stops_at_the_command(calls):
    result = invoke(["run", "-k", "6.12", "--timeout", "5", "python3", "-c", "x", "--kernel", "5.10"])
    assert result.exit_code == 3, result.output
    kernel, argv, kw = calls[0]
    assert (kernel, argv) == ("6.12", ["python3", "-c", "x", "--kernel", "5.10"])
    assert kw["timeout"] == 5.0


def test_run_options(calls):
    result = invoke(["run", "--accel", "tcg", "-m", "1024", "--smp", "1", "-e", "A=1", "-e", "B=x=y",
                     "--", "true"])
    assert result.exit_code == 3, result.output
    kernel, argv, kw = calls[0]
    assert kernel == "6.1"  # the default
    assert (kw["accel"], kw["memory_mb"], kw["smp"]) == ("tcg", 1024, 1)
    assert kw["env"] == {"A": "1", "B": "x=y"}
    assert kw["modules"] is None and kw["headers"] is None


def test_run_requires_a_command(calls):
    assert invoke(["run", "--kernel", "6.1"]).exit_code == 2
    assert calls == []


@pytest.mark.parametrize("error, code", [(VMError("boom"), 2), (GuestTimeout("late"), 124)])
def test_run_errors_are_one_line(monkeypatch, error, code):
    def fail(*a, **kw):
        raise error
    monkeypatch.setattr(runner, "run", fail)
    result = invoke(["run", "--", "true"])
    assert result.exit_code == code
    assert "zaptrace: error: %s" % error in result.output
    assert "Traceback" not in result.output


def test_bad_env_is_an_error(calls):
    result = invoke(["run", "-e", "NOEQUALS", "--", "true"])
    assert result.exit_code == 2
    assert "--env expects NAME=VALUE" in result.output


def test_python_dash_m_vm(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zaptrace.vm", "--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, cwd=tmp_path)
    assert out.returncode == 0
    for command in (b"build", b"run", b"status"):
        assert command in out.stdout


def test_status_with_empty_cache(tmp_path):
    env = dict(__import__("os").environ, ZAPTRACE_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "zaptrace.vm", "status"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env)
    assert out.returncode == 0, out.stdout
    assert b"guest image: not built" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--smp", "0"], "--smp must be at least 1"),
    (["--timeout", "-5"], "--timeout must be a positive number of seconds"),
    (["--memory", "16"], "too small for the guest"),
])
def test_bad_guest_settings_fail_before_anything_boots(monkeypatch, args, message):
    # checked by runner.run itself, before it looks at the cache or starts QEMU
    monkeypatch.setattr(runner.build, "ready", lambda kernel: pytest.fail("got past the checks"))
    result = invoke(["run", *args, "--", "true"])
    assert result.exit_code == 2 and result.output.startswith("zaptrace: error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
