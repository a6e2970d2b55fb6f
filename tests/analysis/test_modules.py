"""The analysis package's modules use gaps.py through its public interface (stream.py included:
it checks the pairing rules' lookups row by row).  No import circle anywhere:
tests/test_import_cycles.py."""
import ast
import os

import pytest

from tests.analysis.reportdata import ROOT

PKG = os.path.join(ROOT, "analysis")
MODULES = sorted(f[:-3] for f in os.listdir(PKG) if f.endswith(".py") and f != "__init__.py")


def _tree(name):
    with open(os.path.join(PKG, name + ".py"), encoding="utf-8") as f:
        return ast.parse(f.read(), name + ".py")


def imported_modules(name):
    """The analysis modules that module ``name`` imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:                       # from .x import ... / from . import x
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.level == 0 and (node.module or "").startswith("zaptrace.analysis."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names if a.name.startswith("zaptrace.analysis."))
    return out & set(MODULES)


def gaps_names_used(name):
    """The names module ``name`` takes from gaps.py: ``from .gaps import x`` and ``G.x`` where
    ``G`` is the gaps module imported under some name."""
    tree = _tree(name)
    aliases, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module == "gaps":
                names.update(a.name for a in node.names)
            elif node.module is None:
                aliases.update(a.asname or a.name for a in node.names if a.name == "gaps")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.add(node.attr)
    return names


@pytest.mark.parametrize("name", [m for m in MODULES if m != "gaps"])
def test_no_module_uses_private_names_of_gaps(name):
    from zaptrace.analysis import gaps
    used = gaps_names_used(name)
    assert not {n for n in used if n.startswith("_")}, used
    assert all(hasattr(gaps, n) for n in used), used


def test_stream_uses_the_public_interface_and_no_path_name():
    used = gaps_names_used("stream")
    assert {"gap_columns", "path_mask", "flush_source", "mkclean_spans"} <= used
    src = open(os.path.join(PKG, "stream.py"), encoding="utf-8").read()
    und = src[src.index("def _undecided("):src.index("# ------------------------------------------------------------- the driver")]
    for word in ("PATH_CODE", "IMMEDIATE", "DELAYED", "PMD", "PUD", '"immediate"', '"delayed"', '"pmd"', '"pud"'):
        assert word not in und, word
