"""Where the vm package keeps what it builds, and small helpers to write it safely.

Layout under ``cache_root()/vm``::

    apt/<suite>/            private apt state (sources.list, lists, caches)
    kernels/<label>/        vmlinuz, lib/modules/<kver>/, usr/src/ headers, kernel.json
    rootfs/tree/            the debootstrap tree (kept to rebuild the image)
    rootfs/tree.json        what the tree was built with
    rootfs/rootfs.img       ext4 image of the tree plus every fetched kernel's headers
    rootfs/rootfs.json      which kernels' headers the image holds
    scratch.img             sparse ext4 template for the guest's block-backed /scratch
    scratch-xfs.img         the same as XFS (made on first use of --scratch-fs xfs)
    initramfs/<hash>.cpio.gz
    build.lock
    runs/<time>-<pid>/      one per guest run: console.log, qemu.log, ctl/ (shared with the guest)

What belongs to the machine rather than to one cache lives under
``state_root()`` (``${XDG_STATE_HOME:-~/.local/state}/zaptrace``)::

    kvm-probe.json          per host kernel + QEMU version: does KVM boot a Debian kernel, and why not
"""

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Optional

#: How many per-run directories to keep under runs/.
KEEP_RUNS = 20


def cache_root() -> Path:
    """``$ZAPTRACE_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/zaptrace``."""
    explicit = os.environ.get("ZAPTRACE_CACHE")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg).absolute() / "zaptrace"


def vm_dir() -> Path:
    """The directory holding everything this package builds."""
    return cache_root() / "vm"


def apt_dir(suite: str) -> Path:
    return vm_dir() / "apt" / suite


def kernel_dir(label: str) -> Path:
    return vm_dir() / "kernels" / label


def rootfs_dir() -> Path:
    return vm_dir() / "rootfs"


def scratch_image(fs: str = "ext4") -> Path:
    """The scratch disk template: ``scratch.img`` (ext4) or ``scratch-<fs>.img``."""
    return vm_dir() / ("scratch.img" if fs == "ext4" else "scratch-%s.img" % fs)


def initramfs_dir() -> Path:
    return vm_dir() / "initramfs"


def state_root() -> Path:
    """``$ZAPTRACE_STATE``, else ``${XDG_STATE_HOME:-~/.local/state}/zaptrace``.

    Facts about the machine (the KVM probe) live here, not in the cache: a
    fresh cache (a clean CI clone with its own ZAPTRACE_CACHE, ``rm -rf``)
    does not pay the probe again.
    """
    explicit = os.environ.get("ZAPTRACE_STATE")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg).absolute() / "zaptrace"


def kvm_probe_file() -> Path:
    return state_root() / "kvm-probe.json"


def runs_dir() -> Path:
    return vm_dir() / "runs"


def read_json(path: Path) -> Optional[Any]:
    """The JSON document at ``path``, or None if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON, atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def remove_tree(path: Path) -> None:
    """Delete a file, symlink or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def tree_size(path: Path) -> int:
    """Bytes allocated by the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Hold an exclusive lock so that two builds never interleave."""
    vm_dir().mkdir(parents=True, exist_ok=True)
    with open(vm_dir() / "build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def new_run_dir() -> Path:
    """Create ``runs/<time>-<pid>/`` and prune all but the newest ``KEEP_RUNS`` runs."""
    base = runs_dir()
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / ("%s-%d" % (stamp, os.getpid()))
    suffix = 0
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:
            suffix += 1
            path = base / ("%s-%d.%d" % (stamp, os.getpid(), suffix))
    old = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for stale in old[:-KEEP_RUNS]:
        shutil.rmtree(stale, ignore_errors=True)
    return path


def latest_run_dir() -> Optional[Path]:
    """The most recently created run directory, if any."""
    base = runs_dir()
    if not base.is_dir():
        return None
    runs = [p for p in base.iterdir() if p.is_dir()]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None
