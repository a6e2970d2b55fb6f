"""What a wheel installs: the ``zaptrace`` package only, with its BPF sources
and guest files, and it works; and the checkout also runs uninstalled, as the
QEMU guest runs it (vm/guest/stage2.sh).

The source tree keeps analysis/, probes/ and vm/ at its top; pyproject.toml
installs them as zaptrace.analysis, zaptrace.probes and zaptrace.vm, so that
no generic top-level name (``analysis``, ``vm``...) lands in site-packages.
"""
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.needs import need
from tests.wheel import build_wheel, clean_env, run

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "race-6.1.zt"
MOVED = ("analysis", "probes", "vm")        # top-level folders that install inside zaptrace/
#: The guest runs ``python3 -P`` (3.11+: the cwd is not put on sys.path).
NO_CWD = ["-P"] if sys.version_info >= (3, 11) else []


def source_tree_report():
    """``zaptrace report --json`` of the fixture, run from the checkout (as tests/analysis do)."""
    p = run([sys.executable, "-m", "zaptrace", "report", "--json", FIXTURE], ROOT,
            env=clean_env(PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr
    return p.stdout


def site_dirs():
    """The running interpreter's site directories (pandas, typer, numpy...)."""
    dirs = site.getsitepackages() + [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _pip_version():
    from importlib.metadata import version
    return tuple(int(x) for x in version("pip").split(".")[:2] if x.isdigit())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """A fresh venv with only the wheel installed (--no-deps); the dependencies come from this
    interpreter's site directories through a .pth (offline; their .pth files are not run, so no
    editable install of the checkout leaks in).  Returns the venv's bin directory."""
    need(_pip_version() >= (22, 3), "pip >= 22.3 is needed for `pip --python` (scripts/setup upgrades pip)")
    venv = tmp_path_factory.mktemp("venv") / "v"
    p = run([sys.executable, "-m", "venv", "--without-pip", venv], venv.parent)
    assert p.returncode == 0, p.stderr
    python = venv / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv).stdout.strip()
    Path(purelib, "zz_zaptrace_test_deps.pth").write_text("".join(d + "\n" for d in site_dirs()))
    p = run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
            venv.parent, env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"))
    assert p.returncode == 0, p.stdout + p.stderr
    return venv / "bin"


def test_wheel_holds_only_the_zaptrace_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert all(t == "zaptrace" or (t.startswith("zaptrace-") and t.endswith(".dist-info")) for t in tops), tops
    # everything the source tree's packages hold, under zaptrace/ (C sources and guest scripts included)
    for pkg, patterns in (("zaptrace", ["*.py", "*.c"]), ("analysis", ["*.py"]),
                          ("probes", ["*.py", "*.c", "*.h"]), ("vm", ["*.py", "guest/*", "*.config"])):
        files = [f for pat in patterns for f in (ROOT / pkg).glob(pat) if f.is_file()]
        assert files, (pkg, patterns)
        prefix = "zaptrace/" if pkg == "zaptrace" else "zaptrace/%s/" % pkg
        missing = [str(f.relative_to(ROOT)) for f in files if prefix + str(f.relative_to(ROOT / pkg)) not in names]
        assert not missing, missing
    assert "zaptrace/probes/zaptrace.bpf.c" in names and "zaptrace/vm/guest/stage2.sh" in names
    assert "zaptrace/lostwrite.c" in names           # the lostwrite engine, built on first use
    assert "zaptrace/analysis/kernels.c" in names    # the analysis kernels, built on first use


def test_installed_wheel_has_no_generic_top_level_names(installed, tmp_path):
    for name in MOVED:
        p = run([installed / "python", "-c", "import %s" % name], tmp_path)
        assert p.returncode != 0 and "No module named '%s'" % name in p.stderr, (name, p.stdout, p.stderr)
    code = ("import zaptrace, zaptrace.analysis, zaptrace.probes, zaptrace.vm.cli, zaptrace.vm.initramfs as i\n"
            "print(zaptrace.__file__); print(zaptrace.probes.SOURCE.is_file(), (i.GUEST_DIR / 'stage2.sh').is_file())")
    p = run([installed / "python", "-c", code], tmp_path)
    assert p.returncode == 0, p.stderr
    where, files = p.stdout.splitlines()
    assert where.startswith(str(installed.parent)), where      # the wheel's copy, not the checkout
    assert files == "True True"
    p = run([installed / "python", "-m", "zaptrace.vm", "--help"], tmp_path)
    assert p.returncode == 0 and "python -m zaptrace.vm" in p.stdout, p.stdout + p.stderr


def test_installed_report_matches_the_source_tree(installed, tmp_path):
    # the wheel's analysis/kernels.c built on first use into the user's cache (no tree here)
    p = run([installed / "zaptrace", "report", FIXTURE, "--json"], tmp_path,
            env=clean_env(XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert p.returncode == 0, p.stderr
    assert "analysis kernels in numpy" not in p.stderr, p.stderr
    assert list((tmp_path / "cache" / "zaptrace" / "bin").glob("kernels-*.so")), p.stderr
    assert p.stdout == source_tree_report()


def test_checkout_runs_uninstalled_as_in_the_guest(tmp_path):
    """The guest's layout: a lib directory holding only a symlink ``zaptrace`` to the
    checkout's package, run with ``python3 -P``; -S keeps this venv's .pth files (the
    editable install's finder) out, so zaptrace/__init__.py alone maps the rest."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "zaptrace").symlink_to(ROOT / "zaptrace")
    env = clean_env(PYTHONPATH=os.pathsep.join([str(lib)] + site_dirs()))
    code = ("import zaptrace.analysis as a, zaptrace.probes as p, zaptrace.vm.runner as r\n"
            "print(a.__file__, p.DIR, r.checkout_dir())")
    p = run([sys.executable, "-S", *NO_CWD, "-c", code], tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(ROOT / "analysis" / "__init__.py"), str(ROOT / "probes"), str(ROOT)]
    p = run([sys.executable, "-S", *NO_CWD, "-c", "import analysis"], tmp_path, env=env)
    assert p.returncode != 0 and "No module named 'analysis'" in p.stderr, p.stderr
    p = run([sys.executable, "-S", *NO_CWD, "-m", "zaptrace", "report", "--json", FIXTURE], tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == source_tree_report()
