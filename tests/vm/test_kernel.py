"""Kernel resolution: labels, bzImage version strings, user kernels (no guest)."""

import struct

import pytest

from zaptrace.vm import kernel
from zaptrace.vm.build import DEFAULT_KERNELS
from zaptrace.vm.errors import VMError
from tests.needs import need


def fake_bzimage(path, version: bytes):
    data = bytearray(0x3000)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x1000 - 0x200)
    data[0x1000:0x1000 + len(version) + 1] = version + b"\0"
    path.write_bytes(bytes(data))
    return path


def test_bzimage_version(tmp_path):
    img = fake_bzimage(tmp_path / "bzImage", b"6.8.0-rc1-zt+ (me@host) #3 SMP PREEMPT_DYNAMIC Mon")
    assert kernel.bzimage_version(img) == "6.8.0-rc1-zt+"


def test_bzimage_version_not_a_kernel(tmp_path):
    (tmp_path / "x").write_bytes(b"\0" * 4096)
    assert kernel.bzimage_version(tmp_path / "x") is None


@pytest.mark.parametrize("label", DEFAULT_KERNELS)
def test_bzimage_version_of_fetched_debian_kernels(label):
    info = kernel.fetched(label)
    need(info is not None, "kernel %s not fetched (zaptrace vm build)" % label)
    assert kernel.bzimage_version(kernel.resolve(label).vmlinuz) == info["kver"]


def test_resolve_user_kernel(tmp_path):
    img = fake_bzimage(tmp_path / "bzImage", b"6.9.1 (x@y) #1")
    mods = tmp_path / "lib" / "modules" / "6.9.1"
    mods.mkdir(parents=True)
    guest = kernel.resolve(str(img), modules=str(mods), headers=str(tmp_path))
    assert (guest.label, guest.kver, guest.modules, guest.headers) == ("6.9.1", "6.9.1", mods, tmp_path)


def test_resolve_user_kernel_release_from_modules_dir(tmp_path):
    (tmp_path / "vmlinux").write_bytes(b"\0" * 100)
    mods = tmp_path / "6.9.2-custom"
    mods.mkdir()
    assert kernel.resolve(str(tmp_path / "vmlinux"), modules=str(mods)).kver == "6.9.2-custom"


def test_resolve_user_kernel_mismatched_modules(tmp_path):
    img = fake_bzimage(tmp_path / "bzImage", b"6.9.1 (x@y) #1")
    (tmp_path / "6.9.2").mkdir()
    with pytest.raises(VMError, match="6.9.1.*6.9.2"):
        kernel.resolve(str(img), modules=str(tmp_path / "6.9.2"))


def test_resolve_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path))
    with pytest.raises(VMError, match="unknown kernel"):
        kernel.resolve("7.0")
    with pytest.raises(VMError, match="zaptrace vm build --kernel 6.12"):
        kernel.resolve("6.12")
    with pytest.raises(VMError, match="only to a kernel given as a path"):
        kernel.resolve("6.1", modules="/tmp")


def debian_split_layout(root, release="7.2.13+deb14-amd64", abi="7.2.13+deb14"):
    """/usr/lib/modules/R/vmlinuz + its "build" link into Debian's split headers (6.19+)."""
    mods = root / "usr" / "lib" / "modules" / release
    mods.mkdir(parents=True)
    fake_bzimage(mods / "vmlinuz", release.encode() + b" (debian-kernel@lists.debian.org) #1 SMP")
    arch = root / "usr" / "src" / ("linux-headers-" + release)
    common = root / "usr" / "src" / ("linux-headers-%s-common" % abi)
    (arch / "include").mkdir(parents=True)
    (common / "include").mkdir(parents=True)
    (arch / "Makefile").write_text("KBUILD_OUTPUT=/usr/src/linux-headers-%s\n"
                                   "include /usr/src/linux-headers-%s-common/Makefile\n" % (release, abi))
    (mods / "build").symlink_to("../../../src/linux-headers-" + release)
    return mods, arch, common


def test_a_kernel_laid_out_the_6_19_way_needs_no_other_argument(tmp_path):
    mods, arch, common = debian_split_layout(tmp_path)
    g = kernel.resolve(str(mods / "vmlinuz"))
    assert g.kver == "7.2.13+deb14-amd64" and g.modules == mods.resolve()
    assert g.headers == (mods / "build").resolve() == arch.resolve()
    assert g.headers_source == common.resolve()        # found beside the tree, not at /usr/src


def test_split_headers_whose_common_tree_is_missing_say_so(tmp_path):
    mods, arch, common = debian_split_layout(tmp_path)
    common.rename(tmp_path / "elsewhere")
    with pytest.raises(VMError, match="-common/Makefile?, which is not there|which is not there"):
        kernel.resolve(str(mods / "vmlinuz"))


def test_self_contained_headers_have_no_source_tree(tmp_path):
    (tmp_path / "include").mkdir()
    (tmp_path / "Makefile").write_text("VERSION = 7\nPATCHLEVEL = 2\n")
    assert kernel.split_headers_source(tmp_path) is None
