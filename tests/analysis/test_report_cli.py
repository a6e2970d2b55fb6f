"""Bad input and bad output paths: one line `zaptrace: error: ...`, exit 2, never a traceback."""
import sys

import pytest

from tests.analysis.reportdata import app, run, trace_a, zt


def one_line_error(r, *needles):
    stderr = r.stderr
    code = getattr(r, "exit_code", getattr(r, "returncode", None))
    assert code == 2, (code, r.stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zaptrace: error: "), stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert r.stdout == ""


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "empty.zt").write_bytes(b"")
    (tmp_path / "junk.zt").write_bytes(b"\x00garbage that is no trace" * 10)
    (tmp_path / "short.zt").write_bytes(b"ZAPTR")
    (tmp_path / "dir.zt").mkdir()
    return {
        "missing": (str(tmp_path / "nope.zt"), "no such file"),
        "empty": (str(tmp_path / "empty.zt"), "empty file"),
        "junk": (str(tmp_path / "junk.zt"), "not a zaptrace trace"),
        "short": (str(tmp_path / "short.zt"), "truncated"),
        "dir": (str(tmp_path / "dir.zt"), "is a directory"),
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "junk", "short", "dir"])
@pytest.mark.parametrize("cmd", [["report"], ["report", "--json"], ["export", "--csv", "OUT"]])
def test_bad_trace_files(bad_files, kind, cmd, tmp_path):
    path, needle = bad_files[kind]
    args = [str(tmp_path / "o.csv") if a == "OUT" else a for a in cmd[1:]]
    one_line_error(run(cmd[0], path, *args), f"{path}: ", needle)
    assert not (tmp_path / "o.csv").exists()


def test_compare_names_the_bad_file(bad_files, tmp_path):
    good = trace_a(tmp_path / "a.zt")
    path, needle = bad_files["junk"]
    one_line_error(run("compare", good, path), path, needle)


def test_default_file_is_zaptrace_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(run("report"), "zaptrace.data: no such file")
    trace_a(tmp_path / "zaptrace.data")
    assert run("report").exit_code == 0


@pytest.mark.parametrize("opt", ["--perfetto", "--csv", "--parquet"])
def test_unwritable_export_paths_fail_before_analysis(tmp_path, opt):
    a = trace_a(tmp_path / "a.zt")
    (tmp_path / "afile").write_text("x")
    for out, needle in ((tmp_path / "no" / "such" / "dir" / "o", "does not exist"),
                        (tmp_path, "is a directory"),
                        (tmp_path / "afile" / "o", "does not exist")):
        one_line_error(run("export", a, opt, out), str(out), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zt", "afile"]     # nothing half-written


def test_parquet_without_pyarrow_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)        # import pyarrow -> ImportError
    one_line_error(run("export", trace_a(tmp_path / "a.zt"), "--parquet", tmp_path / "g.parquet"),
                   "g.parquet: Parquet output needs pyarrow")


def test_unwritable_html_path(tmp_path):
    one_line_error(run("report", trace_a(tmp_path / "a.zt"), "--html", tmp_path / "x" / "r.html"),
                   "r.html: cannot write: directory", "does not exist")


def test_real_process_exit_status_and_single_line(bad_files, tmp_path):
    path, needle = bad_files["junk"]
    one_line_error(zt("report", path), needle)
    one_line_error(zt("export", trace_a(tmp_path / "a.zt"), "--csv", tmp_path / "nodir" / "g.csv"), "does not exist")
    ok = zt("report", trace_a(tmp_path / "b.zt"), "--json")
    assert ok.returncode == 0 and '"schema": "zaptrace.report/1"' in ok.stdout


def test_register_twice_is_harmless():
    from zaptrace.cli_analysis import register
    main = app()
    n = len(main.registered_commands)
    register(main)
    assert len(main.registered_commands) == n
    names = [c.name for c in main.registered_commands]
    assert names.count("report") == 1 and "export" in names and "compare" in names


def test_help_texts_have_examples():
    for cmd in ("report", "export", "compare"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "Examples:" in r.stdout and f"zaptrace {cmd} " in r.stdout
