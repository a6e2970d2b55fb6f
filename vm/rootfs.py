"""The guest's userspace: a bookworm debootstrap tree, turned into an ext4 image.

The tree is kept in the cache so that fetching another kernel only means
adding its headers and re-running mkfs (no second debootstrap).  Kernel
headers are placed under /usr/src with /usr/lib/modules/<kver>/{build,source}
links, never installed as packages (they would pull in gcc and kbuild).
"""

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict

from . import cache, debian, tools
from .errors import VMError

#: Packages on top of debootstrap's minbase.  Changing this list means a new
#: debootstrap on the next build.
INCLUDE = (
    "python3-bpfcc",
    "python3-numpy",
    "python3-typer",
    "bpftrace",
    "kmod",
    "procps",
    "util-linux",
    "e2fsprogs",
    "sudo",
    "xz-utils",         # BCC unpacks /sys/kernel/kheaders.tar.xz of a kernel with its own headers (vm kernel build)
)

#: The unprivileged guest user (uid, gid) for privilege tests.
USER, UID, GID = "zt", 1000, 1000

SCRATCH_SIZE = 1 << 30
_MIN_IMAGE_SIZE = 2 << 30
#: Initialise inode tables and journal on the host: otherwise the guest kernel
#: zeroes them in the background (ext4lazyinit), which is slow under TCG.
_MKFS_OPTIONS = ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]


def tree_dir() -> Path:
    return cache.rootfs_dir() / "tree"


def image_path() -> Path:
    return cache.rootfs_dir() / "rootfs.img"


def _tree_recipe() -> Dict[str, object]:
    return {"suite": debian.USERSPACE_SUITE, "mirror": debian.MIRROR, "include": list(INCLUDE)}


def tree_ready() -> bool:
    """True if the debootstrap tree exists and was built with the current recipe."""
    stamp = cache.read_json(cache.rootfs_dir() / "tree.json")
    return bool(stamp) and stamp.get("recipe") == _tree_recipe() and tree_dir().is_dir()


def _require_root(what: str) -> None:
    """debootstrap creates root-owned files, and mkfs.ext4 -d must read all of them."""
    if os.geteuid() != 0:
        raise VMError("%s needs root: run `zaptrace vm build` as root" % what)


def debootstrap(log: Callable[[str], None]) -> None:
    """Create the tree from scratch (about a minute and 100+ MB of downloads)."""
    _require_root("building the guest userspace (debootstrap)")
    tools.require("debootstrap")
    base = cache.rootfs_dir()
    base.mkdir(parents=True, exist_ok=True)
    work = base / ".tree.new"
    cache.remove_tree(work)
    logfile = base / "debootstrap.log"
    argv = [
        "debootstrap",
        "--variant=minbase",
        "--components=main",
        "--include=" + ",".join(INCLUDE),
        debian.USERSPACE_SUITE,
        str(work),
        debian.MIRROR,
    ]
    with open(logfile, "wb") as out:
        rc = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        raise VMError(
            "debootstrap failed (%s); log: %s"
            % (tools.last_line(logfile.read_bytes()), logfile)
        )
    _customize(work)
    log("debootstrap tree: %.0f MB" % (cache.tree_size(work) / 1e6))
    cache.remove_tree(tree_dir())
    os.replace(work, tree_dir())
    cache.write_json(base / "tree.json", {"recipe": _tree_recipe(), "created": time.time()})


def _customize(root: Path) -> None:
    """Hostname, the zt user, and no leftovers from the package manager."""
    etc = root / "etc"
    (etc / "hostname").write_text("zaptrace-guest\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost zaptrace-guest\n::1\tlocalhost ip6-localhost\n")
    (etc / "fstab").write_text("# filesystems are mounted by zaptrace's stage2.sh\n")
    _append(etc / "passwd", "%s:x:%d:%d:zaptrace test user:/home/%s:/bin/bash\n" % (USER, UID, GID, USER))
    _append(etc / "group", "%s:x:%d:\n" % (USER, GID))
    _append(etc / "shadow", "%s:*:19000:0:99999:7:::\n" % USER)
    _append(etc / "gshadow", "%s:!::\n" % USER)
    home = root / "home" / USER
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, UID, GID)
    # root may sudo without a password already; say so explicitly for the tests.
    sudoers = etc / "sudoers.d" / "zaptrace"
    sudoers.write_text("root ALL=(ALL:ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / junk).glob("*"):
            if p.is_file():
                p.unlink()
    for p in (root / "var" / "cache" / "apt").glob("*.bin"):
        p.unlink()


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line)


def image_ready(kernels: Dict[str, str]) -> bool:
    """True if the image exists and holds the headers of exactly ``kernels`` (label -> kver)."""
    stamp = cache.read_json(cache.rootfs_dir() / "rootfs.json")
    tree = cache.read_json(cache.rootfs_dir() / "tree.json")
    return (
        bool(stamp) and bool(tree) and image_path().is_file()
        and stamp.get("kernels") == kernels and stamp.get("tree") == tree.get("created")
    )


def image_kernels() -> Dict[str, str]:
    """label -> kver of the kernels whose headers the current image holds."""
    stamp = cache.read_json(cache.rootfs_dir() / "rootfs.json")
    return dict(stamp.get("kernels", {})) if stamp and image_path().is_file() else {}


def build_image(kernels: Dict[str, Dict[str, str]], log: Callable[[str], None]) -> None:
    """Put the headers of ``kernels`` (label -> kernel.json) into the tree and mkfs the image."""
    _require_root("building the guest image")
    tools.require("mkfs.ext4")
    tree = tree_dir()
    src = tree / "usr" / "src"
    mods = tree / "usr" / "lib" / "modules"
    for old in list(src.glob("linux-headers-*")) + (list(mods.iterdir()) if mods.is_dir() else []):
        cache.remove_tree(old)
    mods.mkdir(parents=True, exist_ok=True)
    for label, info in sorted(kernels.items()):
        kver, abi = info["kver"], info["abi"]
        for headers in debian.headers_dirs(label):
            shutil.copytree(headers, src / headers.name, symlinks=True, copy_function=_link_or_copy)
        (mods / kver).mkdir()
        os.symlink("/usr/src/linux-headers-" + kver, mods / kver / "build")
        os.symlink("/usr/src/linux-headers-%s-common" % abi, mods / kver / "source")

    used = cache.tree_size(tree)
    size = max(_MIN_IMAGE_SIZE, _round_up(int(used * 1.3) + (512 << 20), 256 << 20))
    image = image_path()
    tmp = image.with_name(".rootfs.img.new")
    cache.remove_tree(tmp)
    with open(tmp, "wb") as f:
        f.truncate(size)
    tools.run(
        ["mkfs.ext4"] + _MKFS_OPTIONS + ["-L", "zt-root", "-i", "8192", "-d", str(tree), str(tmp)],
        "mkfs.ext4 -d (guest image)",
    )
    os.replace(tmp, image)
    tree_stamp = cache.read_json(cache.rootfs_dir() / "tree.json") or {}
    cache.write_json(
        cache.rootfs_dir() / "rootfs.json",
        {
            "kernels": {label: info["kver"] for label, info in kernels.items()},
            "tree": tree_stamp.get("created"),
            "size": size,
            "used": used,
        },
    )
    log("image %s: %.0f MB used of %.1f GB" % (image, used / 1e6, size / 2**30))


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link (same filesystem, instant) or else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


#: Filesystems the scratch disk can have, and how to make each (the guest mounts it by type).
#: XFS has had large folios since 5.18, ext4 since 6.16: PMD-mapped file folios need them.
SCRATCH_FILESYSTEMS = {
    "ext4": (["mkfs.ext4"] + _MKFS_OPTIONS + ["-L", "zt-scratch"], "e2fsprogs"),
    "xfs": (["mkfs.xfs", "-q", "-f", "-L", "zt-scratch"], "xfsprogs"),
}


def build_scratch(fs: str = "ext4") -> None:
    """The sparse template of the guest's /scratch disk, with filesystem ``fs``."""
    if fs not in SCRATCH_FILESYSTEMS:
        raise VMError("unknown scratch filesystem %r: choose from %s" % (fs, ", ".join(SCRATCH_FILESYSTEMS)))
    argv, package = SCRATCH_FILESYSTEMS[fs]
    if shutil.which(argv[0]) is None:
        raise VMError("%s not found: apt-get install %s" % (argv[0], package))
    path = cache.scratch_image(fs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".%s.new" % path.name)
    cache.remove_tree(tmp)
    with open(tmp, "wb") as f:
        f.truncate(SCRATCH_SIZE)
    tools.run(argv + [str(tmp)], "%s (scratch disk)" % argv[0])
    os.replace(tmp, path)
