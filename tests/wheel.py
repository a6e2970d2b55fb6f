"""Build a zaptrace wheel from the checkout, offline (tests/test_packaging.py, and the guest's wheel step)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.needs import need

ROOT = Path(__file__).resolve().parent.parent
MOVED = ("analysis", "probes", "vm")        # top-level folders that install inside zaptrace/


def clean_env(**extra):
    """The caller's environment without PYTHON* variables (no PYTHONPATH to the checkout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(COLUMNS="200", **extra)
    return env


def run(argv, cwd, env=None, timeout=300):
    return subprocess.run([str(a) for a in argv], cwd=str(cwd), env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


#: The setuptools that builds this wheel by itself: bdist_wheel is built in from 70.1, and
#: pyproject.toml's license, an SPDX expression, needs 77 (as its [build-system] says).
SETUPTOOLS = (77,)


def _can_build_wheels_offline():
    """This venv's setuptools builds the wheel by itself (SETUPTOOLS or later)."""
    try:
        import setuptools
        import setuptools.command.bdist_wheel  # noqa: F401
    except ImportError:
        return False
    have = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
    return have >= SETUPTOOLS


def build_wheel(work: Path) -> Path:
    """A wheel built offline in ``work`` from a copy of the source tree (the build writes
    build/ and *.egg-info where it runs, and the checkout may be in use by a guest)."""
    need(_can_build_wheels_offline(),
         "this venv's setuptools cannot build a wheel without build isolation "
         "(needs setuptools>=%s: scripts/setup installs it with the test extra)"
         % ".".join(map(str, SETUPTOOLS)))
    tree = work / "tree"
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    for pkg in ("zaptrace",) + MOVED:
        shutil.copytree(ROOT / pkg, tree / pkg, ignore=ignore)
    out = work / "dist"
    p = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
             "-w", out, tree], work, env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"), timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    wheels = list(out.glob("zaptrace-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]
