"""Page class and path names are declared once (enum zt_class / zt_path in
probes/zaptrace_summary.h, plus the analysis-only paths in zaptrace/vocab.py)."""
import ast
import re
from pathlib import Path

import pytest

from zaptrace import summary, vocab
from zaptrace.analysis import gaps, kernel_summary, report

ROOT = Path(__file__).resolve().parents[2]


def test_names_come_from_the_header_in_enum_order():
    assert vocab.CLASSES == ("anon", "file-clean", "file-dirty")
    assert vocab.SUMMARY_PATHS == ("immediate", "delayed")
    L = summary.layout()
    assert len(vocab.CLASSES) == L["ZT_NCLASS"] and len(vocab.SUMMARY_PATHS) == L["ZT_NPATH"]


def test_every_user_takes_them_from_vocab():
    assert gaps.CLASSES is vocab.CLASSES and summary.CLASSES is vocab.CLASSES
    assert summary.PATHS is vocab.SUMMARY_PATHS and kernel_summary.KERNEL_PATHS is vocab.SUMMARY_PATHS
    assert gaps.PATHS == (vocab.IMMEDIATE, vocab.DELAYED, vocab.PMD, vocab.PUD, vocab.OTHER_PATH)
    assert report.PATH_ROWS[1:] == vocab.SUMMARY_PATHS


@pytest.mark.parametrize("bad", [
    "enum zt_class { ZT_C_A = 1, /* \"a\" */ };",
    "enum zt_class { ZT_C_A = 0, /* \"a\" */ ZT_C_B = 2, /* \"b\" */ };",
    "enum zt_path { ZT_P_A = 0, /* \"a\" */ };",
])
def test_gaps_or_a_missing_enum_are_refused(bad):
    with pytest.raises(ValueError):
        vocab.parse_enum_names(bad, "zt_class")


def test_no_other_source_spells_a_class_or_path_name():
    # the help text's jq examples and a module docstring's JSON shape are documentation,
    # not declarations
    allowed = {("zaptrace/cli_analysis.py", """jq '.classes["file-dirty"].open'"""),
               ("zaptrace/cli_analysis.py", """jq '.verdict["file-dirty"].paths.pmd'""")}
    names = set(vocab.CLASSES[1:] + vocab.SUMMARY_PATHS + (vocab.OTHER_PATH,))   # "anon" is also a flag name
    pat = re.compile(r"[\"'](%s)[\"']" % "|".join(map(re.escape, names)))
    found = []
    for folder in ("zaptrace", "analysis", "bench"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            text = f.read_text()
            body = ast.parse(text).body
            doc_end = body[0].end_lineno if body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str) else 0
            for line in text.splitlines()[doc_end:]:
                if pat.search(line) and not any(rel == a and s in line for a, s in allowed):
                    found.append(f"{rel}: {line.strip()}")
    assert [x for x in found if not x.startswith("zaptrace/vocab.py")] == []
