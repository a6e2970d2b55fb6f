"""Which kernel a guest boots: a fetched Debian kernel by label, or a user's bzImage."""

import struct
from pathlib import Path
from typing import NamedTuple, Optional

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
    """True for "5.10", "6.1", "6.12" (as opposed to a path to a bzImage)."""
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


def resolve(kernel: str, modules: Optional[str] = None, headers: Optional[str] = None) -> GuestKernel:
    """Turn the ``kernel`` argument of run() into a GuestKernel, or raise VMError."""
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
        raise VMError(
            "unknown kernel %r: choose one of %s or give the path of a bzImage"
            % (kernel, ", ".join(debian.SUITES))
        )
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
        if len(words) == 2 and words[0] == "include" and words[1].endswith("/Makefile"):
            common = Path(words[1]).parent
            # The path is the one the package installs; look beside the tree too.
            for candidate in (common, headers.parent / common.name):
                if candidate.is_dir() and candidate.resolve() != headers.resolve():
                    return candidate.resolve()
            raise VMError("%s builds against %s, which is not there: install or unpack it beside %s"
                          % (headers, common, headers))
    return None


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
