"""The initramfs: newc cpio writer, module load order, archive contents (no guest)."""

import gzip
import io
import lzma
import os
import shutil
import subprocess

import pytest

from zaptrace.vm import initramfs
from zaptrace.vm.errors import VMError
from tests.needs import need


def parse_newc(data: bytes):
    """A minimal newc reader: name -> (mode, rdev, payload)."""
    entries = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701", "bad magic at %d" % pos
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rdevmajor, rdevminor, namesize = (
            fields[1], fields[6], fields[9], fields[10], fields[11])
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        assert data[name_start + namesize - 1] == 0
        body = name_start + namesize + (-(110 + namesize) % 4)
        payload = data[body:body + filesize]
        pos = body + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            assert pos == len(data)
            return entries
        entries[name] = (mode, (rdevmajor, rdevminor), payload)


def sample_archive() -> bytes:
    out = io.BytesIO()
    w = initramfs.CpioWriter(out)
    w.add_dir("bin")
    w.add_file("bin/tool", b"\x7fELF" + bytes(range(256)), 0o755)
    w.add_file("odd-length", b"abc")
    w.add_file("empty", b"")
    w.add_symlink("bin/sh", "tool")
    w.add_chardev("dev/console", 5, 1)
    w.finish()
    return out.getvalue()


def test_cpio_round_trip():
    data = sample_archive()
    assert len(data) % 4 == 0
    entries = parse_newc(data)
    assert set(entries) == {"bin", "bin/tool", "odd-length", "empty", "bin/sh", "dev/console"}
    assert entries["bin"][0] == 0o040755
    assert entries["bin/tool"] == (0o100755, (0, 0), b"\x7fELF" + bytes(range(256)))
    assert entries["odd-length"][2] == b"abc"
    assert entries["empty"][2] == b""
    assert entries["bin/sh"] == (0o120777, (0, 0), b"tool")
    assert entries["dev/console"][:2] == (0o020600, (5, 1))


def test_cpio_readable_by_busybox(tmp_path):
    need(shutil.which("busybox") is not None, "needs busybox (busybox-static)")
    data = sample_archive()
    listing = subprocess.run(["busybox", "cpio", "-t"], input=data, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, check=True).stdout.decode().split()
    assert listing == ["bin", "bin/tool", "odd-length", "empty", "bin/sh", "dev/console"]
    # Extract the regular files and the symlink (not the device node).
    subprocess.run(["busybox", "cpio", "-id", "bin/tool", "odd-length", "bin/sh"], input=data,
                   cwd=tmp_path, check=True, stderr=subprocess.PIPE)
    assert (tmp_path / "bin" / "tool").read_bytes() == b"\x7fELF" + bytes(range(256))
    assert (tmp_path / "odd-length").read_bytes() == b"abc"
    assert os.readlink(str(tmp_path / "bin" / "sh")) == "tool"


def test_module_name():
    assert initramfs.module_name("kernel/fs/9p/9p.ko") == "9p"
    assert initramfs.module_name("kernel/net/9p/9pnet_virtio.ko.xz") == "9pnet_virtio"
    assert initramfs.module_name("kernel/drivers/virtio/virtio-pci.ko.zst") == "virtio_pci"
    assert initramfs.module_name("virtio_blk") == "virtio_blk"


MODULES_DEP = """\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/fs/netfs/netfs.ko.xz:
kernel/net/9p/9pnet.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/char/virtio_console.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
"""
MODULES_BUILTIN = "kernel/drivers/virtio/virtio_pci.ko\n"


def test_load_order_puts_dependencies_first():
    index = initramfs.parse_module_index(MODULES_DEP, MODULES_BUILTIN)
    order = [initramfs.module_name(p) for p in initramfs.load_order(
        index, initramfs.REQUIRED_MODULES, initramfs.OPTIONAL_MODULES)]
    assert "virtio_pci" not in order  # built in
    assert "libcrc32c" not in order and "virtio_rng" not in order  # optional, absent
    assert len(order) == len(set(order))
    assert set(order) == {"virtio_ring", "virtio", "virtio_blk", "virtio_console", "crc16", "mbcache", "jbd2", "ext4",
                          "9pnet", "netfs", "9p", "9pnet_virtio", "crc32c_generic"}
    for line in MODULES_DEP.splitlines():
        path, deps = line.split(":", 1)
        user = initramfs.module_name(path)
        if user in order:
            for dep in deps.split():
                assert order.index(initramfs.module_name(dep)) < order.index(user), (dep, user)


def test_load_order_missing_required_module():
    index = initramfs.parse_module_index(MODULES_DEP.replace("kernel/fs/ext4/ext4.ko.xz", "x.ko"), "")
    with pytest.raises(VMError, match="ext4"):
        initramfs.load_order(index, ["ext4"], [])


def test_load_order_dependency_loop():
    index = initramfs.parse_module_index("a.ko: b.ko\nb.ko: a.ko\n", "")
    with pytest.raises(VMError, match="loop"):
        initramfs.load_order(index, ["a"], [])


def test_read_module_decompresses(tmp_path):
    (tmp_path / "a.ko.xz").write_bytes(lzma.compress(b"module-a", format=lzma.FORMAT_XZ))
    (tmp_path / "b.ko.gz").write_bytes(gzip.compress(b"module-b"))
    (tmp_path / "c.ko").write_bytes(b"module-c")
    assert initramfs.read_module(tmp_path / "a.ko.xz") == b"module-a"
    assert initramfs.read_module(tmp_path / "b.ko.gz") == b"module-b"
    assert initramfs.read_module(tmp_path / "c.ko") == b"module-c"


def _static_busybox() -> bool:
    try:
        initramfs.find_busybox()
    except VMError:
        return False
    return True


def _fake_modules(root, builtin=MODULES_BUILTIN):
    root.mkdir()
    (root / "modules.dep").write_text(MODULES_DEP)
    (root / "modules.builtin").write_text(builtin)
    for line in MODULES_DEP.splitlines():
        path = root / line.split(":", 1)[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(b"ELF:" + path.name.encode(), format=lzma.FORMAT_XZ))
    return root


def test_ensure_builds_once_and_caches(tmp_path, monkeypatch):
    need(_static_busybox(), "needs a static busybox (busybox-static)")
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path / "cache"))
    mods = _fake_modules(tmp_path / "modules")
    first = initramfs.ensure(mods)
    entries = parse_newc(gzip.decompress(first.read_bytes()))
    assert entries["init"][2] == initramfs.INIT_SCRIPT.read_bytes()
    assert entries["init"][0] == 0o100755
    assert entries["bin/busybox"][2][:4] == b"\x7fELF"
    assert entries["dev/console"][1] == (5, 1)
    loaded = sorted(n for n in entries if n.startswith("modules/") and n.endswith(".ko"))
    assert loaded[0] == "modules/00-virtio_ring.ko"
    assert entries["modules/00-virtio_ring.ko"][2] == b"ELF:virtio_ring.ko.xz"  # decompressed
    mtime = first.stat().st_mtime_ns
    assert initramfs.ensure(mods) == first and first.stat().st_mtime_ns == mtime
    # A changed module means a new archive.
    (mods / "kernel/fs/mbcache.ko.xz").write_bytes(lzma.compress(b"ELF:new", format=lzma.FORMAT_XZ))
    assert initramfs.ensure(mods) != first


def test_ensure_without_modules(tmp_path, monkeypatch):
    need(_static_busybox(), "needs a static busybox (busybox-static)")
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path / "cache"))
    entries = parse_newc(gzip.decompress(initramfs.ensure(None).read_bytes()))
    assert not [n for n in entries if n.startswith("modules/") and n != "modules"]


def test_modules_without_modules_dep_use_each_modules_modinfo(tmp_path):
    """Debian's split 6.19+ packages ship no modules.dep: dependencies come from modinfo."""
    tree = tmp_path / "7.2.13+deb14-amd64"
    (tree / "kernel" / "fs" / "9p").mkdir(parents=True)
    (tree / "kernel" / "net" / "9p").mkdir(parents=True)
    (tree / "kernel" / "fs" / "9p" / "9p.ko.xz").write_bytes(
        lzma.compress(b"\x7fELF....\0license=GPL\0depends=9pnet,netfs\0vermagic=7.2\0"))
    (tree / "kernel" / "net" / "9p" / "9pnet.ko").write_bytes(b"\x7fELF\0depends=\0name=9pnet\0")
    (tree / "kernel" / "net" / "9p" / "netfs-x.ko").write_bytes(b"\x7fELF\0name=netfs_x\0")
    (tree / "modules.builtin").write_text("kernel/fs/netfs/netfs.ko\n")
    index = initramfs.index_from_tree(tree)
    order = initramfs.load_order(index, ["9p"], ["netfs_x", "absent"])
    assert order == ["kernel/net/9p/9pnet.ko", "kernel/fs/9p/9p.ko.xz", "kernel/net/9p/netfs-x.ko"]
    assert "netfs" in index.builtin
