"""One error type and one exit-code policy for every command; no import cycle."""

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from zaptrace import errors
from zaptrace.vm.errors import GuestTimeout


def test_every_project_error_is_a_zaptrace_error():
    from zaptrace.analysis.errors import AnalysisError
    from zaptrace.vm.errors import BootError, VMError
    from zaptrace.bccload import BCCMissing
    from zaptrace.plan import PlanError
    from zaptrace.process import SpawnError
    from zaptrace.recorder import RecordError, WriteFailed
    from zaptrace.tracefile import TraceError
    from zaptrace.workloads import WorkloadError
    for cls in (AnalysisError, VMError, BCCMissing, PlanError, SpawnError, RecordError, WriteFailed,
                TraceError, WorkloadError):
        assert issubclass(cls, errors.ZaptraceError) and cls.exit_code == errors.EXIT_ERROR, cls
    assert (GuestTimeout.exit_code, BootError.exit_code) == (124, 125)


@pytest.mark.parametrize("exc, status, line", [
    (errors.ZaptraceError("no such trace: x.zt"), 2, "zaptrace: error: no such trace: x.zt"),
    (GuestTimeout("guest timed out after 5 s"), 124,
     "zaptrace: error: guest timed out after 5 s"),
    (KeyboardInterrupt(), 130, "zaptrace: error: interrupted"),
])
def test_clean_errors_policy(exc, status, line):
    app = typer.Typer()

    @app.command()
    @errors.clean_errors
    def boom():
        raise exc

    @app.command()
    def other():
        pass

    r = CliRunner().invoke(app, ["boom"])
    assert r.exit_code == status
    assert r.stderr.strip() == line


def test_no_import_cycle_between_the_command_modules():
    """cli_analysis and zaptrace.vm.cli import the error policy, not zaptrace.cli."""
    code = ("import sys, typer; import zaptrace.cli_analysis as c, zaptrace.vm.cli; "
            "c.register(typer.Typer()); print('zaptrace.cli' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
