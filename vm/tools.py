"""Running the host tools the build needs, with one-line errors instead of tracebacks."""

import shutil
import subprocess
from typing import Dict, List, Mapping, Optional, Sequence

from .errors import VMError

#: Host tool -> the Debian package that provides it.
PACKAGES: Dict[str, str] = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "debootstrap": "debootstrap",
    "depmod": "kmod",
    "mkfs.ext4": "e2fsprogs",
    "qemu-system-x86_64": "qemu-system-x86",
    # zaptrace vm kernel build
    "make": "make",
    "gcc": "gcc",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "pahole": "dwarves",
    "perl": "perl",
    "patch": "patch",
    "tar": "tar",
    "xz": "xz-utils",
}


def require(*names: str) -> None:
    """Raise VMError naming the apt packages to install if any tool is missing."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pkgs = sorted({PACKAGES.get(n, n) for n in missing})
        raise VMError(
            "missing host tool%s %s: apt-get install %s"
            % ("s" if len(missing) > 1 else "", ", ".join(missing), " ".join(pkgs))
        )


def run(
    argv: Sequence[str],
    what: str,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
) -> str:
    """Run ``argv`` to completion and return its stdout.

    On failure raise VMError("<what> failed: <last line of stderr>").
    """
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as e:
        raise VMError("%s failed: %s" % (what, e)) from None
    if proc.returncode != 0:
        raise VMError("%s failed: %s" % (what, last_line(proc.stderr or proc.stdout)))
    return proc.stdout.decode("utf-8", "replace")


def last_line(output: bytes) -> str:
    """The last non-empty line of a tool's output (or a placeholder)."""
    lines: List[str] = [
        ln.strip() for ln in output.decode("utf-8", "replace").splitlines() if ln.strip()
    ]
    return lines[-1] if lines else "(no output)"
