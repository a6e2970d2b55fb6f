"""Writing analysis outputs: the per-page gap table as CSV or Parquet, and any file atomically.

Every writer checks its destination first (``check_writable``) so a bad
path fails before minutes of analysis, and writes through a temporary
file in the same directory, so an interrupted run never leaves half a
file under the requested name.  Problems become one-line AnalysisErrors.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable

import pandas as pd

from .errors import AnalysisError


def check_writable(path: str) -> None:
    """Raise AnalysisError unless `path` can be created or replaced."""
    if os.path.isdir(path):
        raise AnalysisError(f"{path}: is a directory, not an output file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise AnalysisError(f"{path}: cannot write: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise AnalysisError(f"{path}: cannot write: permission denied")


def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary file next to `path`, then rename it to `path`."""
    check_writable(path)
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise AnalysisError(f"{path}: cannot write: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(gaps: pd.DataFrame, path: str) -> None:
    """The gap table as CSV (pointers as unsigned integers, times as exact integer ns, missing
    values as empty fields: read them back exactly with ``dtype="Int64"`` for those columns)."""
    write_atomic(path, lambda tmp: gaps.to_csv(tmp, index=False))


def require_parquet(path: str) -> None:
    """Raise AnalysisError when pyarrow (needed to write `path` as Parquet) is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise AnalysisError(f"{path}: Parquet output needs pyarrow (pip install pyarrow); "
                            "--csv needs nothing extra") from None


def write_parquet(gaps: pd.DataFrame, path: str) -> None:
    """The gap table as Parquet (needs pyarrow)."""
    require_parquet(path)
    write_atomic(path, lambda tmp: gaps.to_parquet(tmp, index=False, engine="pyarrow"))


def write_text(text: str, path: str) -> None:
    """A text file (HTML, JSON) written atomically."""
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    write_atomic(path, w)
