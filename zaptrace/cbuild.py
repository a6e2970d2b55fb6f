"""C sources of zaptrace built with the system's C compiler on first use.

Two are: the lostwrite detector's engine (zaptrace/lostwrite.c, an executable)
and the analysis kernels (analysis/kernels.c, a shared library loaded with
ctypes).  Each build is named after a digest of its source and flags, so an
edited source is rebuilt and never mixed up with an older build, and written
atomically (built under a temporary name, then renamed), so two processes
building at once both end with a whole file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence


class BuildError(Exception):
    """The source could not be built (no compiler, or the compiler failed)."""


def compiler() -> Optional[str]:
    """$CC, else cc, gcc or clang: the first found on PATH."""
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def digest(source: Path, flags: Sequence[str]) -> str:
    h = hashlib.sha256(source.read_bytes())
    h.update(" ".join(flags).encode())
    return h.hexdigest()[:12]


def build_dirs(source: Path) -> List[Path]:
    """Where builds are looked for and made, in order: the source tree's build/ (shared
    with the QEMU guests, which have no compiler: `vm run` builds there first), then the
    user's cache.  ``source``: a file of the tree (or of the installed package)."""
    dirs = []
    tree = source.resolve().parent.parent
    if (tree / "pyproject.toml").is_file() and (tree / "vm").is_dir():
        dirs.append(tree / "build")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    dirs.append(Path(cache) / "zaptrace" / "bin")
    return dirs


def find(name: str, dirs: Sequence[Path]) -> Optional[str]:
    """A build called ``name`` already made in one of ``dirs``, or None."""
    for d in dirs:
        if (d / name).is_file():
            return str(d / name)
    return None


def build(source: Path, name: str, flags: Sequence[str], variants: Sequence[Sequence[str]] = ((),),
          dirs: Optional[Sequence[Path]] = None) -> str:
    """The path of ``name`` built from ``source`` with ``flags`` (the first of ``variants``
    of extra flags that builds) in the first of ``dirs`` (default ``build_dirs``) that
    takes it, made on first use; raises BuildError with one line."""
    dirs = build_dirs(source) if dirs is None else list(dirs)
    got = find(name, dirs)
    if got:
        return got
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler here: apt-get install gcc")
    errors = []
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            errors.append(f"{d}: {e.strerror}")
            continue
        tmp = d / f".{name}.{os.getpid()}"
        for extra in variants:
            r = subprocess.run([cc, *flags, *extra, "-o", str(tmp), str(source)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode == 0:
                os.replace(tmp, d / name)
                return str(d / name)
        try:
            tmp.unlink()
        except OSError:
            pass
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        errors.append(f"{cc}: {last}")
        if "No such file" not in r.stderr and "Permission" not in r.stderr:
            break
    raise BuildError(f"could not build {source}: {'; '.join(errors)}")
