"""Kernels built from source: the config fragment, patches, the cache key, tree detection (no build).

A real build (26 minutes on 2 cores) is not part of the suite: bench/kernel_build.py
builds Debian's 7.2 source; docs/benchmarks.md ("Kernel builds") says what it measured.
"""

import subprocess
from pathlib import Path

import pytest

from zaptrace.vm import kbuild, kconfig, kernel, ksource
from zaptrace.vm.errors import VMError
from tests.vm.test_kernel import fake_bzimage

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ config --

def test_parse_config_lines():
    got = kconfig.parse("# a comment\nCONFIG_A=y\n# CONFIG_B is not set\n\nCONFIG_C=\"x y\"\nCONFIG_N=64\n")
    assert got == {"A": "y", "B": "n", "C": '"x y"', "N": "64"}


def test_a_bad_fragment_line_is_named():
    with pytest.raises(VMError, match=r"frag line 2 is not a config line.*'CONFIG_B y'"):
        kconfig.parse("CONFIG_A=y\nCONFIG_B y\n", "frag")


def test_the_repository_fragment_has_what_the_guest_and_bcc_need():
    _, want = kconfig.read_fragment(kconfig.FRAGMENT)
    for sym in ("VIRTIO_BLK", "VIRTIO_CONSOLE", "9P_FS", "NET_9P_VIRTIO", "EXT4_FS", "XFS_FS", "DEVTMPFS",
                "BPF_SYSCALL", "BPF_JIT", "KPROBES", "FUNCTION_TRACER", "DEBUG_INFO_BTF", "IKHEADERS",
                "TRANSPARENT_HUGEPAGE", "TRANSPARENT_HUGEPAGE_ALWAYS", "MAGIC_SYSRQ"):
        assert want.get(sym) == "y", sym
    assert want["LOCALVERSION_AUTO"] == "n"


def test_mismatches_name_what_did_not_hold():
    bad = kconfig.mismatches({"A": "y", "B": "n", "C": "y"}, {"A": "y", "C": "m"})
    assert bad == ["CONFIG_C=y (the .config has m)"]
    assert kconfig.mismatches({"D": "y"}, {}) == ["CONFIG_D=y (the .config has it unset)"]


class FakeMake:
    """Stands for make O=<out>: the base targets write a .config, olddefconfig drops ``drop``."""

    def __init__(self, out: Path, drop=()):
        self.out, self.drop, self.calls = out, drop, []

    def __call__(self, targets, what):
        self.calls.append(list(targets))
        cfg = self.out / ".config"
        if targets == list(kconfig.BASE_TARGETS):
            cfg.write_text("CONFIG_BASE=y\n# CONFIG_KPROBES is not set\n")
        elif targets == ["olddefconfig"]:
            settings = kconfig.parse(cfg.read_text())        # the last assignment wins, as in kconfig
            text = "".join("CONFIG_%s=%s\n" % kv if kv[1] != "n" else "# CONFIG_%s is not set\n" % kv[0]
                           for kv in settings.items() if kv[0] not in self.drop)
            cfg.write_text(text)


def test_configure_merges_checks_and_caches(tmp_path):
    frag = tmp_path / "extra.config"
    frag.write_text("CONFIG_KPROBES=y\nCONFIG_XFS_FS=y\n")
    make = FakeMake(tmp_path)
    digest = kconfig.configure(tmp_path, [frag], make, lambda m: None)
    assert kconfig.parse((tmp_path / ".config").read_text())["KPROBES"] == "y"
    assert make.calls == [list(kconfig.BASE_TARGETS), ["olddefconfig"]]
    # the same recipe again: no make at all, the same digest
    assert kconfig.configure(tmp_path, [frag], make, lambda m: None) == digest and len(make.calls) == 2
    # a changed fragment is a new recipe
    frag.write_text("CONFIG_KPROBES=y\n")
    assert kconfig.configure(tmp_path, [frag], make, lambda m: None) != digest and len(make.calls) == 4


def test_configure_refuses_a_dropped_line(tmp_path):
    frag = tmp_path / "extra.config"
    frag.write_text("CONFIG_KPROBES=y\nCONFIG_XFS_FS=y\n")
    with pytest.raises(VMError, match=r"1 config line did not hold after olddefconfig.*CONFIG_XFS_FS=y"):
        kconfig.configure(tmp_path, [frag], FakeMake(tmp_path, drop=("XFS_FS",)), lambda m: None)
    assert not (tmp_path / ".zaptrace-config").exists()       # not cached: the next build tries again


def test_config_digest_ignores_comments_and_order():
    assert kconfig.digest("# x\nCONFIG_A=y\nCONFIG_B=m\n") == kconfig.digest("CONFIG_B=m\n# y\nCONFIG_A=y\n")
    assert kconfig.digest("CONFIG_A=y\n") != kconfig.digest("CONFIG_A=m\n")


# ------------------------------------------------------------------ source --

def fake_tree(root: Path) -> Path:
    for d in ("mm", "arch/x86", "scripts/kconfig"):
        (root / d).mkdir(parents=True)
    (root / "Makefile").write_text("# SPDX\nVERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 13\nEXTRAVERSION =\n"
                                   "include $(srctree)/arch/$(SRCARCH)/Makefile\n")
    (root / "Kconfig").write_text("")
    (root / "mm" / "huge_memory.c").write_text("one\ntwo\nthree\nfour\n")
    return root


def make_patch(tmp_path: Path, name: str, old: str, new: str, subject: str) -> Path:
    a, b = tmp_path / "pa" / "a", tmp_path / "pa" / "b"
    for d, text in ((a, old), (b, new)):
        (d / "mm").mkdir(parents=True, exist_ok=True)
        (d / "mm" / "huge_memory.c").write_text(text)
    diff = subprocess.run(["diff", "-u", "a/mm/huge_memory.c", "b/mm/huge_memory.c"], cwd=tmp_path / "pa",
                          stdout=subprocess.PIPE, text=True).stdout
    p = tmp_path / name
    p.write_text("From: someone\nSubject: [PATCH] %s\n\nWhy.\n---\n%s" % (subject, diff))
    return p


def test_kernelversion_and_tree_detection(tmp_path):
    tree = fake_tree(tmp_path / "linux")
    assert ksource.is_tree(tree) and ksource.kernelversion(tree) == "7.2.13"
    src = ksource.resolve(str(tree), print)
    assert (src.tree, src.version, src.owned, src.label) == (tree, "7.2.13", False, "")
    with pytest.raises(VMError, match="is not a Linux source tree"):
        ksource.resolve(str(tmp_path), print)
    with pytest.raises(VMError, match="unknown kernel source '9.9'.*7.2"):
        ksource.resolve("9.9", print)


def test_read_patch(tmp_path):
    p = make_patch(tmp_path, "fix.patch", "one\ntwo\n", "one\nTWO\n", "mm: fix it")
    got = ksource.read_patch(str(p))
    assert (got.name, got.subject, len(got.sha)) == ("fix", "mm: fix it", 64)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(VMError, match="notes.txt is not a patch"):
        ksource.read_patch(str(tmp_path / "notes.txt"))
    with pytest.raises(VMError, match="cannot read patch .*missing.patch"):
        ksource.read_patch(str(tmp_path / "missing.patch"))


def test_patches_switch_in_place_and_a_bad_one_is_refused(tmp_path):
    tree = fake_tree(tmp_path / "src" / "tree")
    base = "one\ntwo\nthree\nfour\n"
    src = ksource.Source(tree, "linux-source-7.2 7.2.13-1 (sid)", "7.2.13", "7.2", True)
    fix = ksource.read_patch(str(make_patch(tmp_path, "fix.patch", base, "one\nTWO\nthree\nfour\n", "fix")))
    ctl = ksource.read_patch(str(make_patch(tmp_path, "ctl.patch", base, "one\ntwo\nthree\nFOUR\n", "ctl")))
    said = []
    ksource.apply(src, [fix], said.append)
    assert (tree / "mm" / "huge_memory.c").read_text() == "one\nTWO\nthree\nfour\n"
    assert [e["name"] for e in ksource.applied(tree)] == ["fix"]
    ksource.apply(src, [ctl], said.append)          # the fix is reverted first
    assert (tree / "mm" / "huge_memory.c").read_text() == "one\ntwo\nthree\nFOUR\n"
    ksource.apply(src, [], said.append)
    assert (tree / "mm" / "huge_memory.c").read_text() == base and ksource.applied(tree) == []
    assert said == ["applied fix: fix", "reverted fix", "applied ctl: ctl", "reverted ctl"]
    bad = ksource.read_patch(str(make_patch(tmp_path, "bad.patch", "zero\n", "ZERO\n", "bad")))
    with pytest.raises(VMError, match=r"patch .*bad.patch does not apply to linux-source-7.2 7.2.13-1 \(sid\)"):
        ksource.apply(src, [fix, bad], said.append)
    # the tree holds what applied before the bad one, and says so
    assert [e["name"] for e in ksource.applied(tree)] == ["fix"]
    assert not list(tree.rglob("*.rej")) and not list(tree.rglob("*.orig"))


def test_patches_are_refused_on_a_developers_own_tree(tmp_path):
    tree = fake_tree(tmp_path / "linux")
    src = ksource.resolve(str(tree), print)
    fix = ksource.read_patch(str(make_patch(tmp_path, "fix.patch", "one\n", "ONE\n", "fix")))
    with pytest.raises(VMError, match="--patch applies to Debian's source packages only.*git am"):
        ksource.apply(src, [fix], print)
    ksource.apply(src, [], print)                   # nothing to do, nothing written
    assert not (tree / ksource.STATE).exists()


# ------------------------------------------------------------------- build --

def test_build_names():
    src = ksource.Source(Path("/x/tree"), "linux-source-7.2 7.2.13-1 (sid)", "7.2.13", "7.2", True)
    fix = ksource.Patch(Path("/p/pmd-flush.patch"), "a" * 64, "pmd-flush", "s", b"")
    assert kbuild.default_name(src, [fix]) == "7.2-src+pmd-flush"
    assert kbuild.default_name(ksource.Source(Path("/home/me/linux"), "/home/me/linux", "7.3.0"), []) == "tree-linux"
    kbuild.check_name("7.2-src+pmd-flush")
    for bad, why in (("7.2", "is a Debian kernel label"), ("../x", "use letters"), ("a b", "use letters")):
        with pytest.raises(VMError, match=why):
            kbuild.check_name(bad)


def test_build_key_covers_source_patches_and_config():
    src = ksource.Source(Path("/x"), "linux-source-7.2 7.2.13-1 (sid)", "7.2.13", "7.2", True)
    fix = ksource.Patch(Path("/p/a.patch"), "a" * 64, "a", "s", b"")
    fix2 = ksource.Patch(Path("/p/b.patch"), "b" * 64, "b", "s", b"")
    keys = {kbuild.build_key(src, [], "c1"), kbuild.build_key(src, [fix], "c1"), kbuild.build_key(src, [fix, fix2], "c1"),
            kbuild.build_key(src, [fix2, fix], "c1"), kbuild.build_key(src, [fix], "c2"),
            kbuild.build_key(src._replace(ident="linux-source-7.2 7.2.14-1 (sid)"), [fix], "c1")}
    assert len(keys) == 6


def test_failure_line_finds_the_error(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("old run error: ignored\n$ make -C x bzImage\n  CC      mm/huge_memory.o\n"
                   "mm/huge_memory.c:2551:3: error: implicit declaration of function 'tlb_flush_mmu_tlbonly'\n"
                   "make[2]: *** [scripts/Makefile.build:287: mm/huge_memory.o] Error 1\n")
    assert kbuild.failure_line(log).startswith("mm/huge_memory.c:2551:3: error: implicit declaration")


def test_missing_build_tools_are_named(monkeypatch):
    import shutil
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda n: None if n in ("flex", "pahole") else real(n))
    with pytest.raises(VMError, match=r"missing host tools flex, pahole: apt-get install dwarves flex"):
        kbuild.require_tools()


def test_the_repository_patches_are_patches():
    patches = sorted((REPO / "patches").rglob("*.patch"))
    assert patches, "patches/ holds the candidate fix and the control"
    for p in patches:
        got = ksource.read_patch(str(p))
        assert got.subject and "Signed-off-by:" in p.read_text(), p


# ------------------------------------------------------- booting by name --

def test_a_built_kernel_boots_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("ZAPTRACE_CACHE", str(tmp_path))
    d = kernel.built_root() / "7.2-src+fix"
    d.mkdir(parents=True)
    fake_bzimage(d / "bzImage", b"7.2.13-zt1234abcd (me@host) #1")
    (d / "build.json").write_text('{"name": "7.2-src+fix", "release": "7.2.13-zt1234abcd", "built": "x"}')
    g = kernel.resolve("7.2-src+fix")
    assert (g.label, g.kver, g.vmlinuz, g.modules, g.headers) == ("7.2-src+fix", "7.2.13-zt1234abcd", d / "bzImage",
                                                                 None, None)
    assert [i["name"] for i in kernel.list_built()] == ["7.2-src+fix"]
    with pytest.raises(VMError, match="do not apply to a built kernel"):
        kernel.resolve("7.2-src+fix", headers=str(tmp_path))
    with pytest.raises(VMError, match=r"unknown kernel 'nope'.*7.2-src\+fix"):
        kernel.resolve("nope")


def test_a_build_tree_boots_with_its_own_headers_or_as_headers(tmp_path):
    tree = fake_tree(tmp_path / "linux")
    with pytest.raises(VMError, match="has no arch/x86/boot/bzImage: build the kernel first"):
        kernel.resolve(str(tree))
    (tree / "arch/x86/boot").mkdir(parents=True)
    fake_bzimage(tree / "arch/x86/boot/bzImage", b"7.3.0-rc1 (me@host) #1")
    g = kernel.resolve(str(tree))
    # no CONFIG_IKHEADERS: the tree itself is BCC's headers; its Makefile's
    # "include $(srctree)/arch/$(SRCARCH)/Makefile" is not a split headers tree
    assert (g.kver, g.headers, g.headers_source) == ("7.3.0-rc1", tree.resolve(), None)
    (tree / ".config").write_text("CONFIG_X=y\nCONFIG_IKHEADERS=y\n")
    assert kernel.resolve(str(tree)).headers is None


def test_an_out_of_tree_build_finds_its_source(tmp_path):
    src = fake_tree(tmp_path / "linux")
    out = tmp_path / "out"
    (out / "arch/x86/boot").mkdir(parents=True)
    fake_bzimage(out / "arch/x86/boot/bzImage", b"7.3.0 (me@host) #1")
    (out / "Makefile").write_text("# Automatically generated by the kernel\ninclude %s/Makefile\n" % src)
    g = kernel.resolve(str(out))
    assert (g.headers, g.headers_source) == (out.resolve(), src.resolve())


def test_a_reworded_message_keeps_the_patch_key(tmp_path):
    p = make_patch(tmp_path, "fix.patch", "one\n", "ONE\n", "fix")
    before = ksource.read_patch(str(p)).sha
    p.write_text(p.read_text().replace("Why.", "Why, with the A/B figures now."))
    assert ksource.read_patch(str(p)).sha == before
    p.write_text(p.read_text().replace("+ONE", "+ONCE"))
    assert ksource.read_patch(str(p)).sha != before
