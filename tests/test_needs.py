"""Under CI a test cannot skip: tests/needs.py and the hook in conftest.py."""
import shutil

import pytest

from tests.needs import need, under_ci

CONFTEST = open(__file__.replace("test_needs.py", "conftest.py")).read()


def _project(pytester, body):
    """A throwaway project with this suite's conftest hook and tests/needs.py."""
    pytester.syspathinsert(str(pytester.path))
    pkg = pytester.mkpydir("tests")
    shutil.copy(__file__.replace("test_needs.py", "needs.py"), pkg / "needs.py")
    pytester.makeconftest("import pytest\n" + CONFTEST.split("def pytest_collection_modifyitems")[0]
                          .replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile(test_x="import pytest\nfrom tests.needs import need\n" + body)


def _run(pytester, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess()


@pytest.mark.parametrize("body", [
    "def test_a():\n    need(False, 'no busybox')\n",
    "def test_a():\n    pytest.skip('no busybox')\n",
    "@pytest.mark.skipif(True, reason='no busybox')\ndef test_a():\n    pass\n",
    "def test_a():\n    pytest.importorskip('no_such_module_zt')\n",
])
def test_a_skip_fails_under_ci_and_skips_otherwise(pytester, monkeypatch, body):
    _project(pytester, body)
    r = _run(pytester, monkeypatch, "true")
    assert r.ret != 0
    r.stdout.fnmatch_lines(["*skipped under CI*"] if "need(" not in body else ["*CI is set*"])
    outcomes = r.parseoutcomes()
    assert outcomes.get("skipped", 0) == 0 and outcomes.get("failed", 0) + outcomes.get("errors", 0) == 1
    r = _run(pytester, monkeypatch, None)
    assert r.ret == 0 and r.parseoutcomes() == {"skipped": 1}


def test_under_ci_values(monkeypatch):
    for value, want in (("true", True), ("1", True), ("yes", True), ("", False), ("false", False), ("0", False)):
        monkeypatch.setenv("CI", value)
        assert under_ci() is want
    monkeypatch.delenv("CI")
    assert not under_ci()
