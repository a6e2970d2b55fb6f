"""Which kernel a guest boots: a fetched Debian kernel by label, a kernel built from source
by name (``zaptrace vm kernel build``), a kernel build tree, or a user's bzImage."""

import struct
from pathlib import Path
from typing import List, NamedTuple, Optional

from . import cache, debian
from .errors import VMError


class GuestKernel(NamedTuple):
    """Everything the runner needs to know about the kernel it boots."""

    label: str  # "6.1", or the kernel release for a user's bzImage
    kver: str  # uname -r in the guest
    vmlinuz: Path
    modules: Optional[Path]  # host lib/modules/<kver> tree (initramfs + guest modprobe)
    headers: Optional[Path]  # host headers tree to share as /lib/modules/<kver>/build
    headers_source: Optional[Path] = None  # Debian's split "-common" tree, shared as .../source


def is_label(kernel: str) -> bool:
    """True for a Debian kernel label of vm/labels.py, "6.1" (as opposed to a name or a path)."""
    return kernel in debian.SUITES


def fetched(label: str) -> Optional[dict]:
    """The kernel.json of a fetched Debian kernel whose files are all present, else None."""
    info = cache.read_json(cache.kernel_dir(label) / "kernel.json")
    if not info:
        return None
    kdir = cache.kernel_dir(label)
    if not (kdir / "vmlinuz").is_file() or not (kdir / "lib" / "modules" / info["kver"] / "modules.dep").is_file():
        return None
    return info


def built_root() -> Path:
    """Where ``zaptrace vm kernel build`` keeps what it built: ``built/<name>/``."""
    return cache.vm_dir() / "built"


def built(name: str) -> Optional[dict]:
    """The build.json of a kernel built from source, by name, whose image is present; else None."""
    if not name or "/" in name or name in (".", ".."):
        return None
    info = cache.read_json(built_root() / name / "build.json")
    if not info or not (built_root() / name / "bzImage").is_file():
        return None
    return info


def list_built() -> List[dict]:
    """Every kernel built from source, oldest first."""
    if not built_root().is_dir():
        return []
    infos = [built(p.name) for p in built_root().iterdir() if p.is_dir()]
    return sorted((i for i in infos if i), key=lambda i: i.get("built", ""))


#: Where a kernel build tree (in-tree or make O=) holds its image.
TREE_IMAGE = "arch/x86/boot/bzImage"


def known_names() -> str:
    """The labels and built names a --kernel may take, for error messages."""
    names = list(debian.SUITES) + [i["name"] for i in list_built()]
    return ", ".join(names)


def resolve(kernel: str, modules: Optional[str] = None, headers: Optional[str] = None) -> GuestKernel:
    """Turn the ``kernel`` argument of run() into a GuestKernel, or raise VMError.

    ``kernel`` is, first match wins: a Debian label ("7.2"), the name of a kernel built
    by ``vm kernel build``, a kernel build tree (its arch/x86/boot/bzImage; BCC gets the
    tree as headers unless the kernel carries its own, CONFIG_IKHEADERS), or a bzImage.
    """
    info = None if is_label(kernel) else built(kernel)
    if info is not None:
        if modules or headers:
            raise VMError("--modules/--headers do not apply to a built kernel (%s carries its headers)" % kernel)
        return GuestKernel(kernel, info["release"], built_root() / kernel / "bzImage", None, None)
    tree = Path(kernel).expanduser()
    if not is_label(kernel) and tree.is_dir():
        if not (tree / TREE_IMAGE).is_file():
            raise VMError("%s has no %s: build the kernel first (make bzImage, or zaptrace vm kernel build %s)"
                          % (kernel, TREE_IMAGE, kernel))
        if headers is None and not _has_ikheaders(tree / ".config"):
            headers = str(tree)
        kernel = str(tree / TREE_IMAGE)
    if is_label(kernel):
        if modules or headers:
            raise VMError("--modules/--headers apply only to a kernel given as a path")
        info = fetched(kernel)
        if info is None:
            raise VMError("kernel %s not built: run `zaptrace vm build --kernel %s`" % (kernel, kernel))
        kdir = cache.kernel_dir(kernel)
        return GuestKernel(kernel, info["kver"], kdir / "vmlinuz", kdir / "lib" / "modules" / info["kver"], None)

    image = Path(kernel).expanduser()
    # Since 6.19 Debian installs the image as /usr/lib/modules/<release>/vmlinuz: its
    # modules and (through the "build" link) its headers are found beside it.
    if image.name == "vmlinuz" and image.parent.parent.name == "modules":
        if modules is None:
            modules = str(image.parent)
        build_link = image.parent / "build"
        if headers is None and (build_link / "include").is_dir():
            headers = str(build_link)
    if not image.is_file():
        raise VMError("unknown kernel %r: choose one of %s, or give a kernel build tree or a bzImage"
                      % (kernel, known_names()))
    mod_dir = Path(modules).expanduser().resolve() if modules else None
    if mod_dir is not None and not mod_dir.is_dir():
        raise VMError("--modules %s is not a directory" % modules)
    hdr_dir = Path(headers).expanduser().resolve() if headers else None
    if hdr_dir is not None and not hdr_dir.is_dir():
        raise VMError("--headers %s is not a directory" % headers)

    kver = bzimage_version(image)
    if mod_dir is not None:
        if kver is None:
            kver = mod_dir.name
        elif kver != mod_dir.name:
            raise VMError("%s is kernel %s but --modules is for %s" % (image, kver, mod_dir.name))
    if kver is None:
        raise VMError("cannot read the kernel release from %s: pass --modules .../lib/modules/<release>" % image)
    return GuestKernel(kver, kver, image.resolve(), mod_dir, hdr_dir, split_headers_source(hdr_dir))


def split_headers_source(headers: Optional[Path]) -> Optional[Path]:
    """The ``-common`` tree that a Debian ``-amd64`` headers tree builds against.

    Debian splits headers in two: ``linux-headers-R`` (generated files, its
    Makefile says ``include /usr/src/linux-headers-X-common/Makefile``) and the
    architecture-independent ``-common`` tree, which BCC finds through
    ``/lib/modules/R/source``.  None when the tree is self-contained.
    """
    if headers is None:
        return None
    try:
        text = (headers / "Makefile").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        words = line.split()
        # Only a literal path: a kernel tree's own Makefile includes "$(srctree)/arch/$(SRCARCH)/Makefile".
        if len(words) == 2 and words[0] == "include" and words[1].endswith("/Makefile") and "$" not in words[1]:
            common = Path(words[1]).parent
            # The path is the one the package installs; look beside the tree too.
            for candidate in (common, headers.parent / common.name):
                if candidate.is_dir() and candidate.resolve() != headers.resolve():
                    return candidate.resolve()
            raise VMError("%s builds against %s, which is not there: install or unpack it beside %s"
                          % (headers, common, headers))
    return None


def _has_ikheaders(config: Path) -> bool:
    """True when a build tree's .config builds the kernel's headers in (CONFIG_IKHEADERS=y)."""
    try:
        return "\nCONFIG_IKHEADERS=y\n" in "\n" + config.read_text(errors="replace")
    except OSError:
        return False


def bzimage_version(path: Path) -> Optional[str]:
    """The release string of an x86 bzImage (what `file` prints as "version").

    The setup header at 0x202 holds "HdrS"; the 16-bit field at 0x20e points
    (relative to 0x200) at a NUL-terminated "6.8.0-rc1 (user@host) #1 ..." string.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(0x8000)
    except OSError:
        return None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    offset = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    if offset >= len(head):
        return None
    text = head[offset:].split(b"\0", 1)[0].decode("ascii", "replace").split()
    return text[0] if text else None
