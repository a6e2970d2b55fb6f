"""Which kernel a guest boots: a fetched Debian kernel by label, or a user's bzImage."""

import struct
from pathlib import Path
from typing import NamedTuple, Optional

from vm import cache, debian
from vm.errors import VMError


class GuestKernel(NamedTuple):
    """Everything the runner needs to know about the kernel it boots."""

    label: str  # "6.1", or the kernel release for a user's bzImage
    kver: str  # uname -r in the guest
    vmlinuz: Path
    modules: Optional[Path]  # host lib/modules/<kver> tree (initramfs + guest modprobe)
    headers: Optional[Path]  # host headers tree to share as /lib/modules/<kver>/build


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
    return GuestKernel(kver, kver, image.resolve(), mod_dir, hdr_dir)


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
