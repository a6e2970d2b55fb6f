"""``zaptrace vm kernel build``: guest kernels built from source, with patches, cached.

One build is: a source (:mod:`.ksource`: Debian's ``linux-source-<series>``
or a tree on disk), the patches applied to it, and the config
(:mod:`.kconfig`: defconfig + kvm_guest.config + vm/guest.config).  Its key
is a digest of the three; its release is ``<kernelversion>-zt<key[:8]>``, so
that ``uname -r`` in the guest, and every trace recorded there, says which
build booted.

Layout under ``cache.vm_dir()``::

    ksrc/linux-source-7.2_7.2.13-1/tree/   the unpacked package (patched in place)
    kbuild/<source slug>/                  make's O= directory, one per source tree
    kbuild/<source slug>/build.log         the last make's output
    built/<name>/bzImage, config, build.json

Every patch set of one source shares its O= directory: make rebuilds only what
the patches changed (one mm file: about 2 minutes on 2 cores, against 26 for
the first build).  A build whose key is already in ``built/<name>`` is not
made again (``--force`` makes it anyway); a tree on disk is always handed to
make, which knows what changed there.
"""

import contextlib
import hashlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from . import cache, kconfig, ksource, tools
from .errors import VMError
from .kernel import TREE_IMAGE, built, built_root, bzimage_version, is_label, list_built
from .progress import Progress

#: Host tools a kernel build needs (tools.PACKAGES names their packages).
BUILD_TOOLS = ("make", "gcc", "flex", "bison", "bc", "pahole", "perl", "tar", "xz")
#: Host headers a kernel build needs: a header -> the Debian package that has it.
BUILD_HEADERS = {"/usr/include/gelf.h": "libelf-dev", "/usr/include/openssl/opensslv.h": "libssl-dev"}
#: Seconds between progress lines while make runs.
PROGRESS_EVERY = 30.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_STEP = re.compile(r"^\s{2}([A-Z][A-Z0-9_]*)\s+(\S+)")


def build_root() -> Path:
    return cache.vm_dir() / "kbuild"


def image(name: str) -> Path:
    return built_root() / name / "bzImage"


def build_key(source: ksource.Source, patches: Sequence[ksource.Patch], config_digest: str) -> str:
    """What makes one build: the source, the patches in order, the config's settings."""
    text = "\0".join([source.ident] + [p.sha for p in patches] + [config_digest])
    return hashlib.sha256(text.encode()).hexdigest()


def require_tools() -> None:
    """One line naming the packages to install when a build tool or header is missing."""
    tools.require(*BUILD_TOOLS)
    missing = sorted({pkg for header, pkg in BUILD_HEADERS.items() if not os.path.isfile(header)})
    if missing:
        raise VMError("missing headers for the kernel build: apt-get install %s" % " ".join(missing))


def default_name(source: ksource.Source, patches: Sequence[ksource.Patch]) -> str:
    base = ("%s-src" % source.label) if source.label else "tree-%s" % source.tree.name
    return base + "".join("+" + p.name for p in patches)


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise VMError("kernel name %r: use letters, digits and . _ + - (starting with a letter or digit)" % name)
    if is_label(name):
        raise VMError("kernel name %r is a Debian kernel label (vm build); choose another --name" % name)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Make:
    """make in one source tree with O=<out>, its output in <out>/build.log."""

    def __init__(self, source: ksource.Source, out: Path, jobs: int, progress: Progress) -> None:
        self.source, self.out, self.jobs, self.progress = source, out, jobs, progress
        self.log = out / "build.log"

    def argv(self, targets: Sequence[str], extra: Sequence[str] = ()) -> List[str]:
        return ["make", "-C", str(self.source.tree), "O=%s" % self.out, "-j%d" % self.jobs] + list(extra) + list(targets)

    def quick(self, targets: List[str], what: str) -> None:
        """A short make (config targets): output to the log, one line on failure."""
        with open(self.log, "ab") as log:
            rc = subprocess.call(self.argv(targets), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            raise VMError("%s failed: %s; log: %s" % (what, failure_line(self.log), self.log))

    def build(self, targets: Sequence[str], extra: Sequence[str], expected: int) -> int:
        """The long make, with a progress line every PROGRESS_EVERY seconds; returns its step count."""
        steps, last, started = 0, "", time.monotonic()
        next_say = started + PROGRESS_EVERY
        with open(self.log, "ab") as log:
            log.write(("\n$ %s\n" % " ".join(self.argv(targets, extra))).encode())
            proc = subprocess.Popen(self.argv(targets, extra), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    log.write(raw)
                    m = _STEP.match(raw.decode("utf-8", "replace"))
                    if m:
                        steps += 1
                        last = "%s %s" % (m.group(1), m.group(2))
                    now = time.monotonic()
                    if now >= next_say:
                        next_say = now + PROGRESS_EVERY
                        share = " of about %d (%d %%)" % (expected, min(99, 100 * steps // expected)) if expected else ""
                        self.progress.say("make: %d steps%s, %.0f s; now %s" % (steps, share, now - started, last))
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if rc != 0:
            raise VMError("kernel build failed: %s; log: %s" % (failure_line(self.log), self.log))
        return steps


def failure_line(log: Path) -> str:
    """The first compiler or make error of a build log's last run, else its last line."""
    try:
        text = log.read_bytes().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    run = text.rsplit("\n$ make ", 1)[-1]
    lines = [ln.strip() for ln in run.splitlines() if ln.strip()]
    for pattern in (r"\berror:", r"\*\*\*", r"Error \d+"):
        for ln in lines:
            if re.search(pattern, ln):
                return ln
    return lines[-1] if lines else "(empty log)"


def build(spec: str, patch_files: Sequence[str] = (), name: Optional[str] = None, jobs: Optional[int] = None,
          fragments: Sequence[str] = (), force: bool = False, log: Callable[[str], None] = print) -> Dict:
    """Build (or find already built) a guest kernel; return its build.json."""
    progress = Progress(log)
    require_tools()
    patches = [ksource.read_patch(p) for p in patch_files]          # every patch read before any work
    frags = [kconfig.FRAGMENT] + [Path(f).expanduser().resolve() for f in fragments]
    for f in frags:
        kconfig.read_fragment(f)
    if name is not None:
        check_name(name)
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise VMError("--jobs must be at least 1")
    source = ksource.resolve(spec, progress.say)
    if patches and not source.owned:
        ksource.apply(source, patches, progress.say)              # raises: not a cache-owned tree
    name = name or default_name(source, patches)
    check_name(name)
    out = build_root() / source.slug
    with _locked(out):
        ksource.apply(source, patches, progress.say)
        make = _Make(source, out, jobs, progress)
        make.log.write_bytes(b"")
        config_digest = kconfig.configure(out, frags, make.quick, progress.say)
        key = build_key(source, patches, config_digest)
        old = built(name)
        if old and old.get("key") == key and source.owned and not force:
            progress.say("%s is already built: %s (%s), built %s in %.0f s"
                         % (name, old["release"], image(name), old["built"], old["build_seconds"]))
            return old
        release = "%s-zt%s" % (source.version, key[:8])
        # A share of the steps only for a first build: an incremental one makes a few dozen.
        first = not (out / "vmlinux").exists()
        expected = int((cache.read_json(out / ".zaptrace-steps.json") or {}).get("steps", 0)) if first else 0
        progress.say("building %s (%s%s) with make -j%d; log: %s%s" % (
            name, source.ident, "".join(" + " + p.name for p in patches), jobs, make.log,
            "; a first build takes about 25 minutes on 2 cores" if first else "; incremental"))
        started = time.monotonic()
        steps = make.build(["bzImage"], ["LOCALVERSION=-zt%s" % key[:8]], expected)
        seconds = time.monotonic() - started
        if steps > expected:
            cache.write_json(out / ".zaptrace-steps.json", {"steps": steps})
        got = bzimage_version(out / TREE_IMAGE)
        if got != release:
            raise VMError("the build made %s, but its release is %s, not %s; log: %s"
                          % (out / TREE_IMAGE, got, release, make.log))
        info = {
            "name": name, "release": release, "key": key,
            "source": {"ident": source.ident, "version": source.version, "label": source.label,
                       "tree": str(source.tree)},
            "patches": ksource.describe_patches(patches),
            "fragments": [str(f) for f in frags], "config_digest": config_digest,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "build_seconds": round(seconds, 1),
            "make_steps": steps, "jobs": jobs, "host_cpus": os.cpu_count(),
        }
        dest = built_root() / name
        work = dest.with_name("." + name + ".new")
        cache.remove_tree(work)
        work.mkdir(parents=True)
        shutil.copy2(out / TREE_IMAGE, work / "bzImage")
        shutil.copy2(out / ".config", work / "config")
        cache.write_json(work / "build.json", info)
        cache.remove_tree(dest)
        os.replace(work, dest)
    progress.say("built %s: %s in %.0f s (%d make steps), %s" % (name, release, seconds, steps, image(name)))
    progress.say("boot it: zaptrace vm run --kernel %s -- zaptrace doctor" % name)
    return info


def describe() -> List[str]:
    """One line per built kernel, for ``zaptrace vm kernel list`` and ``vm status``."""
    lines = []
    for info in list_built():
        patches = ", ".join(p["name"] for p in info.get("patches", [])) or "no patches"
        lines.append("%-28s %-26s %s + %s; built %s in %.0f s" % (
            info["name"], info["release"], info["source"]["ident"], patches, info["built"], info["build_seconds"]))
    return lines
