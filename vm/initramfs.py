"""The guest's initramfs: static busybox, the few modules needed to reach the root disk
and the 9p shares, and ``vm/guest/init``.

Written as a gzip'd newc cpio archive in Python (no cpio on the host) and
cached under a hash of everything that goes into it, so it is rebuilt only
when the init script, busybox or a module changes.
"""

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import BinaryIO, Dict, List, NamedTuple, Optional, Sequence, Set

from . import cache
from .errors import VMError

GUEST_DIR = Path(__file__).resolve().parent / "guest"
INIT_SCRIPT = GUEST_DIR / "init"

#: Modules the guest cannot boot without (unless they are built in);
#: virtio_console carries the command's stdout/stderr.
REQUIRED_MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "ext4", "9p", "9pnet_virtio")
#: Loaded when the kernel has them: ext4's crc32c soft dependencies, and an RNG
#: so that early getrandom() does not stall under TCG.
OPTIONAL_MODULES = ("crc32c_generic", "libcrc32c", "virtio_rng")

#: Bumped when the archive layout changes, to invalidate cached archives.
_FORMAT = b"zaptrace-initramfs-1"


class CpioWriter:
    """Writes a "newc" (SVR4, no CRC) cpio archive, the format the kernel unpacks."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 0

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, 0o040000 | perm, nlink=2)

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, 0o100000 | perm, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, 0o020000 | perm, rdev=(major, minor))

    def finish(self) -> None:
        """Write the trailer entry; the archive is complete afterwards."""
        self._entry("TRAILER!!!", 0, ino=0)

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
               rdev=(0, 0), ino: Optional[int] = None) -> None:
        if ino is None:
            self._ino += 1
            ino = self._ino
        encoded = name.lstrip("/").encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded + _pad(len(header) + len(encoded)))
        self._out.write(data + _pad(len(data)))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def module_name(path: str) -> str:
    """``kernel/fs/9p/9p.ko.xz`` -> ``9p``; dashes normalised to underscores."""
    base = os.path.basename(path)
    base = base[: base.index(".ko")] if ".ko" in base else base
    return base.replace("-", "_")


class ModuleIndex(NamedTuple):
    """A kernel's modules.dep and modules.builtin, keyed by module name."""

    paths: Dict[str, str]  # name -> path relative to lib/modules/<kver>
    deps: Dict[str, List[str]]  # name -> names it depends on
    builtin: Set[str]


def parse_module_index(modules_dep: str, modules_builtin: str = "") -> ModuleIndex:
    """Parse the text of ``modules.dep`` and ``modules.builtin``."""
    paths: Dict[str, str] = {}
    deps: Dict[str, List[str]] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        name = module_name(path.strip())
        paths[name] = path.strip()
        deps[name] = [module_name(d) for d in rest.split()]
    builtin = {module_name(ln.strip()) for ln in modules_builtin.splitlines() if ln.strip()}
    return ModuleIndex(paths, deps, builtin)


class _TreeDeps(dict):
    """Dependencies read from each module's own ``.modinfo`` (``depends=``), on demand."""

    def __init__(self, root: Path, paths: Dict[str, str]) -> None:
        super().__init__()
        self._root = root
        self._paths = paths

    def get(self, name, default=None):  # type: ignore[override]
        if name not in self and name in self._paths:
            m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", read_module(self._root / self._paths[name]))
            self[name] = [module_name(d) for d in (m.group(1).decode().split(",") if m else []) if d]
        return super().get(name, default)


def index_from_tree(modules_dir: Path) -> ModuleIndex:
    """A module index for a ``lib/modules/<kver>`` tree that has no modules.dep.

    Debian's split kernel packages (6.19+) ship none until ``depmod`` runs, and
    a user's tree may not be writable: module paths come from the file names,
    each visited module's dependencies from its own ``depends=`` modinfo.
    """
    paths: Dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(modules_dir):
        for f in files:
            if ".ko" in f:
                rel = os.path.relpath(os.path.join(dirpath, f), modules_dir)
                paths.setdefault(module_name(f), rel)
    builtin_file = modules_dir / "modules.builtin"
    builtin = {module_name(ln.strip()) for ln in builtin_file.read_text().splitlines()
               if ln.strip()} if builtin_file.is_file() else set()
    return ModuleIndex(paths, _TreeDeps(modules_dir, paths), builtin)


def load_order(index: ModuleIndex, required: Sequence[str], optional: Sequence[str]) -> List[str]:
    """Module paths to insmod, every dependency before its users.

    Built-in modules are skipped; a required module that is neither built in
    nor a module raises VMError; a missing optional one is ignored.
    """
    order: List[str] = []
    done: Set[str] = set()

    def visit(name: str, chain: List[str]) -> None:
        if name in done or name in index.builtin:
            return
        if name in chain:
            raise VMError("module dependency loop: %s" % " -> ".join(chain + [name]))
        if name not in index.paths:
            raise VMError("module %s (needed by %s) is not in modules.dep" % (name, chain[-1]))
        for dep in index.deps.get(name, []):
            visit(dep, chain + [name])
        done.add(name)
        order.append(index.paths[name])

    for name in required:
        name = module_name(name)
        if name not in index.paths and name not in index.builtin:
            raise VMError("the kernel has no %s (neither built in nor a module)" % name)
        visit(name, [])
    for name in optional:
        name = module_name(name)
        if name in index.paths:
            visit(name, [])
    return order


def read_module(path: Path) -> bytes:
    """A module's ELF bytes, decompressing .ko.xz / .ko.gz / .ko.zst."""
    if path.name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise VMError("%s is zstd-compressed: apt-get install zstd" % path.name)
        return subprocess.run(
            ["zstd", "-dcq", str(path)], check=True, stdout=subprocess.PIPE
        ).stdout
    return path.read_bytes()


def find_busybox() -> Path:
    """The host's static busybox (package busybox-static)."""
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.path.isfile(candidate) and _is_static_elf(Path(candidate)):
            return Path(candidate)
    raise VMError("no static busybox on the host: apt-get install busybox-static")


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF without a PT_INTERP program header."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum)
    )


def ensure(modules_dir: Optional[Path]) -> Path:
    """The cached initramfs for a kernel whose modules live in ``modules_dir``.

    ``modules_dir`` is a ``lib/modules/<kver>`` tree with modules.dep, or None
    for a kernel with everything needed built in.
    """
    busybox = find_busybox()
    init = INIT_SCRIPT.read_bytes()
    modules: List[Path] = []
    if modules_dir is not None:
        dep_file = modules_dir / "modules.dep"
        builtin_file = modules_dir / "modules.builtin"
        if dep_file.is_file():
            index = parse_module_index(
                dep_file.read_text(),
                builtin_file.read_text() if builtin_file.is_file() else "",
            )
        else:
            index = index_from_tree(modules_dir)
        modules = [modules_dir / p for p in load_order(index, REQUIRED_MODULES, OPTIONAL_MODULES)]

    digest = hashlib.sha256(_FORMAT)
    for part in (init, busybox.read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    for mod in modules:
        digest.update(mod.name.encode() + b"\0" + hashlib.sha256(mod.read_bytes()).digest())
    target = cache.initramfs_dir() / ("%s.cpio.gz" % digest.hexdigest()[:24])
    if target.is_file():
        return target

    raw = io.BytesIO()
    cpio = CpioWriter(raw)
    for d in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        cpio.add_dir(d)
    cpio.add_chardev("dev/console", 5, 1)
    cpio.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.add_symlink("bin/sh", "busybox")
    cpio.add_file("init", init, 0o755)
    for i, mod in enumerate(modules):
        cpio.add_file("modules/%02d-%s.ko" % (i, module_name(mod.name)), read_module(mod))
    cpio.finish()

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".%s.%d.tmp" % (target.name, os.getpid()))
    with open(tmp, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as gz:
            gz.write(raw.getvalue())
    os.replace(tmp, target)
    _prune(keep=target)
    return target


def _prune(keep: Path, count: int = 8) -> None:
    """Keep the newest ``count`` archives (one per kernel is the normal state)."""
    archives = sorted(cache.initramfs_dir().glob("*.cpio.gz"), key=lambda p: p.stat().st_mtime)
    for old in archives[:-count]:
        if old != keep:
            old.unlink()
