"""The workloads' option registry (zaptrace/workload_base.py) and the CLI built from it."""
import pytest
from typer.testing import CliRunner

from zaptrace import cli, workload_base as WB, workloads
from zaptrace.workload_base import Params, WorkloadError

#: Every option that existed before the registry: its flags and default stay as they were.
BEFORE = {
    "pages": (("--pages", "-n"), 256), "iterations": (("--iterations", "-i"), 200),
    "duration": (("--duration", "-d"), None), "directory": (("--dir",), None), "quiet": (("--quiet", "-q"), False),
    "report": (("--report",), None), "mapping": (("--mapping", "-m"), "default"),
    "zappers": (("--zappers",), 1), "evict": (("--evict/--no-evict",), True), "burst": (("--burst",), 16),
    "findings": (("--findings",), None), "inject": (("--inject-loss",), None),
}
#: Added for issue 24 (lostwrite only).
ADDED = {"writeback": "fsync", "fault_first": True, "time_stores": True, "control_sample": 10_000, "pin": False}


def test_every_existing_option_keeps_its_flags_and_default():
    for name, (flags, default) in BEFORE.items():
        o = WB.OPTIONS[name]
        assert (o.cli_flags(), o.default) == (flags, default), name
    for name, default in ADDED.items():
        assert WB.OPTIONS[name].default == default and WB.OPTIONS[name].workloads == ("lostwrite",), name
    lostwrite_only = {o.name for o in WB.OPTIONS.values() if o.workloads == ("lostwrite",)}
    assert lostwrite_only == {"zappers", "evict", "burst", "findings", "inject"} | set(ADDED)
    assert {o.name for o in WB.options_of("race")} == {"pages", "iterations", "duration", "directory", "quiet",
                                                      "report", "mapping"}


def test_params_hold_every_option_and_reject_unknown_names():
    p = Params(burst=1, mapping="pte")
    assert (p.burst, p.mapping, p.pages, p.writeback, p.findings) == (1, "pte", 256, "fsync", None)
    assert p.values("race") == {"pages": 256, "iterations": 200, "duration": None, "directory": None,
                                "quiet": False, "report": None, "mapping": "pte"}
    with pytest.raises(TypeError, match="unknown workload option"):
        Params(colour="blue")


def test_a_declaration_is_checked():
    with pytest.raises(ValueError, match="declared twice"):
        WB.option("burst", int, 1, "again")
    with pytest.raises(ValueError, match="--pages already taken"):
        WB.option("pages_again", int, 1, "clash", flags=("--pages",))
    with pytest.raises(ValueError, match="lower-case Python name"):
        WB.option("Bad-Name", int, 1, "x")
    assert "pages_again" not in WB.OPTIONS


@pytest.fixture
def probe(monkeypatch):
    """A made-up workload with a made-up option, declared the way a workload's module does."""
    seen = []

    def probe_workload(p):
        """A workload made up by the test."""
        seen.append(p)
        return WB.Outcome(f"colour {p.colour}, {p.pages} pages", 0, 0.0)

    monkeypatch.setitem(workloads.WORKLOADS, "probe", probe_workload)
    monkeypatch.setattr(WB, "OPTIONS", dict(WB.OPTIONS))
    WB.option("colour", str, "red", "The colour of the probe.", workloads=("probe",), choices=("red", "blue"))
    WB.option("shade", int, 3, "How dark.", workloads=("probe",),
              check=lambda v: None if v < 10 else "--shade must be below 10")
    return seen


def test_an_option_added_to_the_registry_is_on_the_command_line_and_reaches_the_workload(probe, tmp_path):
    app = cli.make_workload_app()
    r = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--colour" in r.output and "probe: the colour of the probe." in r.output
    assert "--shade" in r.output and "--burst" in r.output
    r = CliRunner().invoke(app, ["run", "probe", "--colour", "blue", "--shade", "7", "-n", "8", "--dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    (p,) = probe
    assert (p.colour, p.shade, p.pages, p.directory) == ("blue", 7, 8, str(tmp_path))
    r = CliRunner().invoke(app, ["run", "probe", "-q"])
    assert r.exit_code == 0 and (probe[1].colour, probe[1].shade) == ("red", 3)     # the defaults
    assert "probe" in CliRunner().invoke(app, ["list"]).output


@pytest.mark.parametrize("args, message", [
    (["probe", "--colour", "green"], "--colour 'green': choose from red, blue"),
    (["probe", "--shade", "12"], "--shade must be below 10"),
    (["probe", "--shade", "dark"], "--shade expects an integer, not 'dark'"),
    (["race", "--colour", "blue"], "--colour is an option of probe, not of race"),
    (["probe", "--burst", "2"], "--burst is an option of lostwrite, not of probe"),
    (["probe", "--no-evict"], "--evict is an option of lostwrite, not of probe"),
])
def test_bad_values_and_foreign_options_are_one_line_errors(probe, args, message):
    r = CliRunner().invoke(cli.make_workload_app(), ["run"] + args)
    assert r.exit_code == 2 and not probe
    assert r.stderr.strip() == f"zaptrace: error: {message}"


def test_checks_apply_to_callers_without_the_command_line():
    with pytest.raises(WorkloadError, match="--writeback 'sync': choose from fsync, fdatasync, msync"):
        workloads.run("lostwrite", Params(writeback="sync"))
    with pytest.raises(WorkloadError, match="--burst is an option of lostwrite, not of race"):
        workloads.run("race", Params(), given=["burst"])
    with pytest.raises(WorkloadError, match="--pages must be positive"):
        workloads.run("race", Params(pages=0))
