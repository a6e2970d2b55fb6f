"""The kernel table (vm/labels.py) and everything derived from it (no network, no guest).

Adding a kernel is one row of the table: these tests check that the views
(suites, -security suites, build defaults, linux-source labels) and every
kernel list in the command line's help come from it, so that a list written
by hand somewhere fails here instead of going stale.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
import typer.main

from zaptrace import cli as zcli
from zaptrace.vm import build, debian, ksource, labels
from zaptrace.vm.errors import VMError

KERNELS = labels.KERNELS


def test_labels_are_unique_series_oldest_first():
    assert len(set(labels.LABELS)) == len(labels.LABELS)
    for k in KERNELS:
        assert re.fullmatch(r"\d+\.\d+", k.label), k.label
        assert k.version == tuple(int(p) for p in k.label.split(".")) == labels.version(k.label)
        assert k.note, "say what sets %s apart" % k.label
    assert [k.version for k in KERNELS] == sorted(k.version for k in KERNELS)


def test_one_suite_serves_one_label():
    # a suite's linux-image-amd64 resolves to one series (debian.resolve checks it)
    suites = [k.suite for k in KERNELS]
    assert len(set(suites)) == len(suites)


def test_the_views_are_the_table():
    assert debian.SUITES == {k.label: k.suite for k in KERNELS}
    assert list(debian.SUITES) == list(labels.LABELS)
    assert set(debian.SECURITY_SUITES) == {k.suite for k in KERNELS if k.security}
    assert build.DEFAULT_KERNELS == tuple(k.label for k in KERNELS if k.default)
    assert build.DEFAULT_KERNELS and set(build.DEFAULT_KERNELS) <= set(labels.LABELS)
    assert ksource.package_labels() == [k.label for k in KERNELS if k.source]
    assert labels.BY_LABEL == {k.label: k for k in KERNELS}


def test_a_row_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        KERNELS[0].suite = "buster"


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.label)
def test_sources_list_has_a_security_line_where_the_table_says(monkeypatch, tmp_path, kernel):
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path))
    monkeypatch.setattr(debian.Apt, "_apt", lambda self, argv, what, cwd=None: "")
    apt = debian.Apt(kernel.suite)
    apt.update()
    lines = (apt.root / "sources.list").read_text().splitlines()
    security = [kernel.suite + "-security"] if kernel.security else []
    assert [ln.split()[-2] for ln in lines] == [kernel.suite] + security


@pytest.mark.parametrize("kernel", [k for k in KERNELS if not k.source], ids=lambda k: k.label)
def test_kernel_build_refuses_a_label_without_linux_source(kernel, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(VMError, match="serves no linux-source-%s" % re.escape(kernel.label)):
        ksource.resolve(kernel.label, print)


# ------------------------------------------------------------ help texts --

def _help_texts():
    """(where, text) for every command's help and every parameter's help of `zaptrace`."""
    out = []

    def walk(cmd, path):
        if cmd.help:
            out.append((path, cmd.help))
        for p in cmd.params:
            if getattr(p, "help", None):
                out.append(("%s %s" % (path, p.name), p.help))
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, "%s %s" % (path, name))

    walk(typer.main.get_command(zcli.app), "zaptrace")
    return out


#: Two or more labels in a row ("5.10, 6.1" or "6.1: bookworm, 6.12: trixie"), across line breaks.
_ITEM = r"\d+\.\d+(?::\s*[a-z]+(?:-[a-z]+)*)?"
_LIST = re.compile(r"(?<![\w.])%s(?:,\s+%s)+(?!\w|\.\d)" % (_ITEM, _ITEM))


def _lists(text):
    found = []
    for m in _LIST.finditer(text):
        items = [re.sub(r"\s+", " ", item.strip()) for item in m.group(0).split(",")]
        found.append([tuple(item.split(": ")) if ": " in item else (item,) for item in items])
    return found


def test_every_kernel_list_in_the_help_is_a_view_of_the_table():
    views = {
        "every label": [(k,) for k in labels.LABELS],
        "the build defaults": [(k,) for k in labels.DEFAULT_KERNELS],
        "the linux-source labels": [(k,) for k in labels.SOURCE_LABELS],
        "the linux-source labels with their suites": [(k, labels.SUITES[k]) for k in labels.SOURCE_LABELS],
    }
    seen = {name: [] for name in views}
    for where, text in _help_texts():
        for found in _lists(text):
            names = [name for name, view in views.items() if view == found]
            assert names, "%s lists kernels %s, which is no view of vm/labels.py's table" % (where, found)
            for name in names:          # the views can coincide (today: defaults and linux-source)
                seen[name].append(where)
    # the places that list them (a place may list more than one view)
    assert "zaptrace vm build kernel" in seen["every label"]
    assert "zaptrace vm build kernel" in seen["the build defaults"]
    assert "zaptrace vm run kernel" in seen["every label"]
    assert "zaptrace ab" in seen["every label"]
    assert "zaptrace vm kernel build source" in seen["the linux-source labels"]
    assert "zaptrace vm kernel build" in seen["the linux-source labels with their suites"]


def test_the_help_of_vm_build_lists_exactly_the_table():
    """What a user reads: every label, the defaults, the linux-source labels with their suites."""
    texts = dict(_help_texts())
    assert "Kernel to fetch (%s);" % ", ".join(labels.LABELS) in texts["zaptrace vm build kernel"]
    assert "Default: %s." % ", ".join(labels.DEFAULT_KERNELS) in texts["zaptrace vm build kernel"]
    assert texts["zaptrace vm run kernel"].startswith(", ".join(labels.LABELS) + " (Debian's)")
    suites = ", ".join("%s: %s" % (k.label, k.suite) for k in KERNELS if k.source)
    assert "(%s)" % suites in re.sub(r"\s+", " ", texts["zaptrace vm kernel build"])


#: Run in a fresh interpreter: vm/labels.py with one more row, then every help text.
_TRIAL = r"""
import json, sys, types
import typer.main
import zaptrace.vm
path = zaptrace.vm.__path__[0] + "/labels.py"
source = open(path).read()
marker = "\n#: Every label, in table order."
assert marker in source, "vm/labels.py: the marker this test splits at is gone"
head, tail = source.split(marker, 1)
row = "\nKERNELS = KERNELS + (DebianKernel('9.9', 'trial', default=True, security=True, source=True, note='x'),)\n"
module = types.ModuleType("zaptrace.vm.labels")
module.__file__ = path
sys.modules[module.__name__] = module
exec(compile(head + row + marker + tail, path, "exec"), module.__dict__)
zaptrace.vm.labels = module
from zaptrace import cli
texts = []
def walk(cmd, where):
    if cmd.help:
        texts.append((where, cmd.help))
    for p in cmd.params:
        if getattr(p, "help", None):
            texts.append((where + " " + p.name, p.help))
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        walk(sub, where + " " + name)
walk(typer.main.get_command(cli.app), "zaptrace")
from zaptrace.vm import build, debian, ksource
print(json.dumps({"texts": texts, "defaults": list(build.DEFAULT_KERNELS), "suites": debian.SUITES,
                  "security": list(debian.SECURITY_SUITES), "source": ksource.package_labels()}))
"""


def test_a_new_row_reaches_every_view_and_every_help_list():
    """A table with one more row (9.9, trial): every derived view and every kernel list in the
    help has it, so no list is written by hand (today's lists could equal the table by chance)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run([sys.executable, "-c", _TRIAL], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    assert doc["defaults"][-1] == doc["source"][-1] == "9.9"
    assert doc["suites"]["9.9"] == "trial" and "trial" in doc["security"]
    lists = [(where, found) for where, text in doc["texts"] for found in _lists(text)]
    assert len(lists) >= 6, lists
    for where, found in lists:
        assert found[-1][0] == "9.9", "%s lists kernels %s without the new row" % (where, found)
        if len(found[-1]) == 2:
            assert found[-1][1] == "trial", (where, found)


def test_the_list_finder_finds_lists_and_only_lists():
    assert _lists("Kernel to fetch (5.10, 6.1,\n6.12); Default: 6.1.") == [[("5.10",), ("6.1",), ("6.12",)]]
    assert _lists("(7.2: sid, 6.12: trixie)") == [[("7.2", "sid"), ("6.12", "trixie")]]
    assert _lists("6.16+, seen on 7.2; 2.6.12, 3.1.4; 4.1, 5") == []
    assert _lists("Default: 6.1, 7.2.") == [[("6.1",), ("7.2",)]]
