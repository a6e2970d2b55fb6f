"""No import circle between the project's modules: read from the source (AST), not by importing.

Every module of zaptrace/, analysis/, probes/ and vm/ is parsed, under the name it has
once installed (analysis/gaps.py is zaptrace.analysis.gaps), and every import of a
project module counts, at the top of a module or inside a function: a circle through a
lazy import is still a circle (two modules that cannot be read, tested or moved apart).
A package's ``__init__`` importing its own submodules is not a circle (a submodule does
not import its package's ``__init__`` unless it names it).
"""
from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Optional, Set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: source folder -> the package it installs as (pyproject.toml's package-dir)
PACKAGES = {"zaptrace": "zaptrace", "analysis": "zaptrace.analysis", "probes": "zaptrace.probes",
            "vm": "zaptrace.vm"}
#: Circles known and being removed elsewhere, each as the set of its modules (none now).
KNOWN: list = []


def modules(root: str = ROOT) -> Dict[str, str]:
    """module name -> file, for every .py file of the four folders."""
    out = {}
    for folder, pkg in PACKAGES.items():
        base = os.path.join(root, folder)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), base)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join([pkg] + rel)] = os.path.join(dirpath, f)
    return out


def _is_package(name: str, path: str) -> bool:
    return os.path.basename(path) == "__init__.py"


def imports(name: str, path: str, known: Dict[str, str]) -> Set[str]:
    """The project modules that ``name`` (at ``path``) imports, wherever the import stands."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    here = name if _is_package(name, path) else name.rpartition(".")[0]
    out: Set[str] = set()

    def add(target: str) -> None:
        # the most specific project module the dotted name names
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                add(sub if sub in known else mod)
    return out


def graph(root: str = ROOT) -> Dict[str, Set[str]]:
    known = modules(root)
    return {m: imports(m, p, known) for m, p in known.items()}


def circles(g: Dict[str, Set[str]]) -> List[Set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[Set[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        work: List[tuple] = [(v, iter(sorted(g.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            nxt: Optional[str] = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(g.get(nxt, ())))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(comp)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _path(g: Dict[str, Set[str]], comp: Set[str]) -> Iterator[str]:
    """One circle inside the component, for the failure message: a -> b -> ... -> a."""
    start = min(comp)
    seen = {start: None}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(g[v] & comp):
            if w == start:
                chain = [v]
                while seen[chain[-1]] is not None:
                    chain.append(seen[chain[-1]])
                yield " -> ".join(reversed(chain)) + f" -> {start}"
                return
            if w not in seen:
                seen[w] = v
                todo.append(w)


def test_every_module_is_read():
    known = modules()
    assert len(known) > 40
    for name in ("zaptrace.cli", "zaptrace.workloads", "zaptrace.lostwrite", "zaptrace.analysis.report",
                 "zaptrace.analysis", "zaptrace.probes", "zaptrace.vm.runner"):
        assert name in known, name
    g = graph()
    # a few edges the reader must see: relative, absolute, lazy (inside a function), package-level
    assert "zaptrace.analysis.gaps" in g["zaptrace.analysis.report"]           # from .gaps import ...
    assert "zaptrace.errors" in g["zaptrace.cli"]                                # from .errors import ...
    assert "zaptrace.analysis.lostwrites" in g["zaptrace.analysis.report"]     # lazy: from . import lostwrites
    assert "zaptrace.lostwrite" in g["zaptrace.vm.runner"]                      # lazy: from zaptrace import lostwrite


def test_the_reader_finds_a_circle(tmp_path):
    """The check itself: a made-up tree with a circle through a lazy import, and one without."""
    for folder in PACKAGES:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "zaptrace" / "a.py").write_text("from . import b\n")
    (tmp_path / "zaptrace" / "b.py").write_text("def f():\n    from zaptrace.analysis.c import x\n")
    (tmp_path / "analysis" / "c.py").write_text("from zaptrace.a import y\nimport os\n")
    (tmp_path / "analysis" / "d.py").write_text("from .c import x\nfrom . import c\n")
    (tmp_path / "analysis" / "__init__.py").write_text("from .d import x\n")
    g = graph(str(tmp_path))
    assert circles(g) == [{"zaptrace.a", "zaptrace.b", "zaptrace.analysis.c"}]
    assert g["zaptrace.analysis"] == {"zaptrace.analysis.d"} and g["zaptrace.analysis.d"] == {"zaptrace.analysis.c"}
    (tmp_path / "analysis" / "c.py").write_text("import os\n")
    assert circles(graph(str(tmp_path))) == []


def test_no_import_circle():
    g = graph()
    found = circles(g)
    bad = [c for c in found if c not in KNOWN]
    assert not bad, "import circles: " + "; ".join(next(_path(g, c), str(sorted(c))) for c in bad)
