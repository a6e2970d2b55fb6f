"""Kernel sources for ``zaptrace vm kernel build``, and the patches applied to them.

A source is either Debian's ``linux-source-<series>`` package of a kernel label
(the labels whose suite serves one, and the suites, come from the table in
vm/labels.py), unpacked into the cache, or a kernel tree on disk (a developer's
own git tree).

Patches are applied only to a tree the cache owns (an unpacked package): the
tree remembers which patches it holds (``.zaptrace-patches.json`` and a copy of
each), so that building another patch set reverts those first and applies the
new ones in place.  ``make`` then rebuilds only the files that changed: a
patched build after an unpatched one takes minutes, not the half hour of a
first build.  A developer's own tree is never written to: commit the patch
there instead.
"""

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, List, NamedTuple, Sequence

from . import cache, debian, labels, tools
from .errors import VMError

#: The patch state a cache-owned tree keeps at its top.
STATE = ".zaptrace-patches.json"
STATE_DIR = ".zaptrace-patches"


class Source(NamedTuple):
    """A kernel source tree and where it came from."""

    tree: Path          # the top of the tree (Makefile, Kconfig, mm/...)
    ident: str          # "linux-source-7.2 7.2.13-1 (sid)", or the tree's real path
    version: str        # `make kernelversion`: "7.2.13"
    label: str = ""     # the Debian label ("7.2") of a package; "" for a tree on disk
    owned: bool = False  # unpacked into the cache: patches are applied in place

    @property
    def slug(self) -> str:
        """A directory name for this source's build output (one per source)."""
        if self.label:
            return "debian-%s" % re.sub(r"[^A-Za-z0-9._+-]", "_", self.ident.split(" (")[0].replace(" ", "_"))
        return "tree-%s-%s" % (self.tree.name, hashlib.sha256(str(self.tree).encode()).hexdigest()[:10])


class Patch(NamedTuple):
    path: Path
    sha: str            # sha256 of the patch's diff (its message left out: rewording it rebuilds nothing)
    name: str           # file name without .patch/.diff
    subject: str        # the Subject: of a git format-patch file, else the file name
    text: bytes


def is_tree(path: Path) -> bool:
    """True for the top of a Linux source tree."""
    return all((path / p).exists() for p in ("Makefile", "Kconfig", "mm", "arch/x86", "scripts/kconfig"))


def kernelversion(tree: Path) -> str:
    """``VERSION.PATCHLEVEL.SUBLEVEL`` + ``EXTRAVERSION`` from the top Makefile."""
    fields = {}
    try:
        with open(tree / "Makefile", errors="replace") as f:
            for _ in range(20):
                m = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)", f.readline())
                if m:
                    fields[m.group(1)] = m.group(2)
    except OSError as e:
        raise VMError("cannot read %s/Makefile: %s" % (tree, e.strerror)) from None
    if not all(k in fields for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL")):
        raise VMError("%s/Makefile names no kernel version (VERSION/PATCHLEVEL/SUBLEVEL)" % tree)
    return "%s.%s.%s%s" % (fields["VERSION"], fields["PATCHLEVEL"], fields["SUBLEVEL"], fields.get("EXTRAVERSION", ""))


def package_labels() -> List[str]:
    """The labels whose Debian suite serves a ``linux-source-<label>`` package."""
    return list(labels.SOURCE_LABELS)


def resolve(spec: str, log: Callable[[str], None]) -> Source:
    """A label ("7.2": Debian's linux-source-7.2, fetched and unpacked once) or a tree's path."""
    if spec in labels.SOURCE_LABELS:
        return from_package(spec, log)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path.resolve()
        if not is_tree(path):
            raise VMError("%s is not a Linux source tree (no Makefile, Kconfig, mm/ and arch/x86/ at its top)" % spec)
        return Source(path, str(path), kernelversion(path))
    if spec in labels.BY_LABEL:
        raise VMError("Debian's %s serves no linux-source-%s that zaptrace knows of: give the path of a "
                      "kernel tree, or one of %s" % (labels.SUITES[spec], spec, labels.listed(package_labels())))
    raise VMError("unknown kernel source %r: give the path of a kernel tree, or one of %s "
                  "(Debian's linux-source-<series> packages)" % (spec, labels.listed(package_labels())))


def source_root() -> Path:
    return cache.vm_dir() / "ksrc"


def from_package(label: str, log: Callable[[str], None]) -> Source:
    """Debian's ``linux-source-<label>``: the suite's current version, unpacked once into the cache.

    When the archive cannot be reached, the newest version already unpacked is used (and said).
    """
    suite = debian.SUITES[label]
    package = "linux-source-" + label
    apt = debian.Apt(suite)
    try:
        apt.update()
        version = apt.show(package).get("Version", "")
    except VMError as e:
        have = sorted(source_root().glob("%s_*/source.json" % package))
        if not have:
            raise
        info = cache.read_json(have[-1]) or {}
        log("cannot reach the %s archive (%s): using %s %s, unpacked earlier" % (suite, e, package, info.get("version")))
        return _source(have[-1].parent, info)
    top = source_root() / ("%s_%s" % (package, version))
    info = cache.read_json(top / "source.json")
    if info and (top / "tree" / "Makefile").is_file():
        return _source(top, info)
    return _unpack(apt, package, version, label, top, log)


def _source(top: Path, info: dict) -> Source:
    return Source(top / "tree", "%s %s (%s)" % (info["package"], info["version"], info["suite"]),
                  info["kernelversion"], info["label"], True)


def _unpack(apt: "debian.Apt", package: str, version: str, label: str, top: Path,
            log: Callable[[str], None]) -> Source:
    tools.require("dpkg-deb", "tar", "xz")
    work = top.with_name("." + top.name + ".new")
    cache.remove_tree(work)
    (deb,) = apt.download([package], work / "debs")
    log("downloaded %s (%.0f MB)" % (deb.name, deb.stat().st_size / 1e6))
    tools.run(["dpkg-deb", "-x", str(deb), str(work / "deb")], "dpkg-deb -x %s" % deb.name)
    tarballs = sorted((work / "deb" / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise VMError("%s holds no /usr/src/linux-source-*.tar.*" % deb.name)
    log("unpacking %s (about 30 s)" % tarballs[0].name)
    (work / "x").mkdir()
    tools.run(["tar", "-xf", str(tarballs[0]), "-C", str(work / "x")], "tar -x %s" % tarballs[0].name)
    tops = [p for p in (work / "x").iterdir() if p.is_dir()]
    if len(tops) != 1 or not is_tree(tops[0]):
        raise VMError("%s does not unpack to one kernel tree" % tarballs[0].name)
    os.replace(tops[0], work / "tree")
    shutil.rmtree(work / "x")
    shutil.rmtree(work / "deb")
    shutil.rmtree(work / "debs")
    info = {"package": package, "version": version, "suite": debian.SUITES[label], "label": label,
            "kernelversion": kernelversion(work / "tree")}
    cache.write_json(work / "source.json", info)
    cache.remove_tree(top)
    os.replace(work, top)
    return _source(top, info)


# ----------------------------------------------------------------- patches --

def read_patch(path: str) -> Patch:
    """A patch file (unified diff or git format-patch), or a one-line VMError."""
    p = Path(path).expanduser()
    try:
        text = p.read_bytes()
    except OSError as e:
        raise VMError("cannot read patch %s: %s" % (path, e.strerror)) from None
    lines = text.decode("utf-8", "replace").splitlines()
    if not any(ln.startswith("--- ") for ln in lines) or not any(ln.startswith("+++ ") for ln in lines):
        raise VMError("%s is not a patch: it has no ---/+++ lines of a unified diff" % path)
    subject = next((ln[len("Subject:"):].strip() for ln in lines if ln.startswith("Subject:")), p.name)
    subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject)
    name = re.sub(r"\.(patch|diff)$", "", p.name)
    return Patch(p.resolve(), hashlib.sha256(diff_part(text)).hexdigest(), name, subject, text)


def diff_part(text: bytes) -> bytes:
    """The patch from its first ``diff ``/``--- `` line on: what it changes, without its message."""
    m = re.search(rb"^(diff |--- )", text, re.M)
    return text[m.start():] if m else text


def applied(tree: Path) -> List[dict]:
    """The patches a cache-owned tree holds, in the order they were applied."""
    state = cache.read_json(tree / STATE)
    return list(state) if isinstance(state, list) else []


def _patch(tree: Path, text: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-s"] + list(args),
                          cwd=str(tree), input=text, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _why(out: bytes) -> str:
    """The most telling line of patch's output (a failed hunk, else the last line)."""
    lines = [ln.strip() for ln in out.decode("utf-8", "replace").splitlines() if ln.strip()]
    for ln in lines:
        if "FAILED" in ln or "can't find file" in ln or "malformed" in ln.lower():
            return ln
    return lines[-1] if lines else "(no output)"


def apply(source: Source, patches: Sequence[Patch], log: Callable[[str], None]) -> None:
    """Make the tree hold exactly ``patches``, in order: revert what it holds that differs, then apply.

    Each patch is tried with --dry-run first: one that does not apply leaves the tree
    as it was before it (the earlier patches of the list applied) and raises VMError
    naming the first failing hunk.  Only a cache-owned tree is ever written.
    """
    if not source.owned:
        if patches:
            raise VMError("--patch applies to Debian's source packages only; %s is your own tree: "
                          "apply the patch there (git am) and build it again" % source.tree)
        return
    tools.require("patch")
    tree = source.tree
    have = applied(tree)
    want = [p.sha for p in patches]
    keep = 0
    while keep < min(len(have), len(want)) and have[keep]["sha"] == want[keep]:
        keep += 1
    for entry in reversed(have[keep:]):
        copy = tree / STATE_DIR / (entry["sha"] + ".patch")
        try:
            text = copy.read_bytes()
        except OSError:
            raise VMError("the tree %s lost its copy of patch %s: remove %s and build again"
                          % (tree, entry["name"], tree.parent)) from None
        out = _patch(tree, text, "-R")
        if out.returncode != 0:
            raise VMError("cannot revert patch %s in %s (%s): the tree was changed by hand; remove %s and build again"
                          % (entry["name"], tree, _why(out.stdout), tree.parent))
        have.pop()
        cache.write_json(tree / STATE, have)
        log("reverted %s" % entry["name"])
    for p in patches[keep:]:
        dry = _patch(tree, p.text, "--dry-run")
        if dry.returncode != 0:
            raise VMError("patch %s does not apply to %s: %s" % (p.path, source.ident, _why(dry.stdout)))
        out = _patch(tree, p.text)
        if out.returncode != 0:        # the dry run passed: only a full disk or the like gets here
            raise VMError("patch %s failed after its dry run passed: %s" % (p.path, _why(out.stdout)))
        (tree / STATE_DIR).mkdir(exist_ok=True)
        (tree / STATE_DIR / (p.sha + ".patch")).write_bytes(p.text)
        have.append({"sha": p.sha, "name": p.name, "subject": p.subject})
        cache.write_json(tree / STATE, have)
        log("applied %s: %s" % (p.name, p.subject))


def describe_patches(patches: Sequence[Patch]) -> List[dict]:
    return [{"name": p.name, "file": str(p.path), "sha256": p.sha, "subject": p.subject} for p in patches]
