"""Fetching Debian kernels with a private apt state, without touching the host's apt.

Each suite (plus its -security suite) gets its own sources.list, lists and
caches under the zaptrace cache; ``apt-get`` and ``apt-cache`` are pointed at them with ``-o`` options,
so the host's sources, pinning and dpkg status play no part.

The archive signatures are checked against the host's debian-archive-keyring.
Bookworm's keyring (2023.3+deb12u1 and later) already carries the trixie
signing keys, so no suite needs ``[trusted=yes]``; an older keyring fails with
a clear message instead of silently downgrading to unsigned indices.
"""

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import cache, labels, tools
from .errors import VMError

MIRROR = "http://deb.debian.org/debian"
#: Kernel security updates reach <suite>-security weeks before a point release
#: moves them into the suite itself; apt picks the newer of the two.
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

#: Kernel label -> the Debian suite whose ``linux-image-amd64`` provides it, and
#: the suites that have a -security companion: views of the table in
#: vm/labels.py.  sid and experimental move on: the resolved ABI is checked
#: against the label (see :func:`resolve`), so "7.2" never silently becomes 7.3.
SUITES: Dict[str, str] = labels.SUITES
SECURITY_SUITES: Tuple[str, ...] = labels.SECURITY_SUITES

#: The userspace suite of the guest image.
USERSPACE_SUITE = "bookworm"


class KernelPackages(NamedTuple):
    """What to download for one Debian kernel ABI."""

    abi: str  # e.g. "6.1.0-56"
    kver: str  # uname -r, e.g. "6.1.0-56-amd64"
    version: str  # Debian package version, e.g. "6.1.192-1"
    image: str  # the package holding vmlinuz (linux-binary-* on split kernels)
    headers: List[str]
    parts: Tuple[str, ...] = ()  # further packages of a split kernel (modules, base)

    def matches(self, label: str) -> bool:
        """True if this ABI is the kernel series ``label`` ("7.2" -> 7.2.x, 7.2-rcN, 7.2-amd64)."""
        return re.match(re.escape(label) + r"($|[.~+-])", self.abi) is not None


def parse_stanzas(text: str) -> List[Dict[str, str]]:
    """Parse deb822 paragraphs (a Packages file, ``apt-cache show`` output).

    Field names keep their case; continuation lines are joined with newlines.
    """
    stanzas: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                current[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


_IMAGE_DEP = re.compile(r"^linux-image-(?P<abi>\S+?)-amd64$")


def kernel_packages(metapackage: Dict[str, str]) -> KernelPackages:
    """Resolve the ABI a ``linux-image-amd64`` stanza points at, and the debs to fetch.

    The metapackage depends on exactly one versioned image package, e.g.
    ``linux-image-6.12.117+deb13-amd64 (= 6.12.117-1)``.
    """
    if metapackage.get("Package") != "linux-image-amd64":
        raise VMError("not a linux-image-amd64 stanza: %r" % metapackage.get("Package"))
    for clause in metapackage.get("Depends", "").split(","):
        for alternative in clause.split("|"):
            name = alternative.strip().split(" ", 1)[0].split(":", 1)[0]
            m = _IMAGE_DEP.match(name)
            if m and not m.group("abi").endswith("-unsigned"):
                abi = m.group("abi")
                kver = abi + "-amd64"
                return KernelPackages(
                    abi=abi,
                    kver=kver,
                    version=metapackage.get("Version", ""),
                    image="linux-image-" + kver,
                    headers=["linux-headers-" + kver, "linux-headers-%s-common" % abi],
                )
    raise VMError("linux-image-amd64 %s depends on no kernel image" % metapackage.get("Version", "?"))


class Apt:
    """apt-get/apt-cache on a private state directory for one suite."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.root = cache.apt_dir(suite)

    def _options(self) -> List[str]:
        r = self.root
        return [
            "-o", "Dir::Etc::SourceList=%s" % (r / "sources.list"),
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", "Dir::Etc::PreferencesParts=/nonexistent",
            "-o", "Dir::State=%s" % (r / "state"),
            "-o", "Dir::State::Lists=%s" % (r / "lists"),
            "-o", "Dir::State::status=%s" % (r / "status"),
            "-o", "Dir::Cache=%s" % (r / "cache"),
            "-o", "APT::Architecture=amd64",
            "-o", "APT::Architectures=amd64",
            # The state lives in the user's cache: download as the invoking user
            # instead of dropping to _apt (which could not write there).
            "-o", "APT::Sandbox::User=%s" % _user_name(),
            "-o", "Acquire::Languages=none",
        ]

    def update(self) -> None:
        """Write the private sources.list and fetch the suite's indices."""
        for sub in ("lists/partial", "cache/archives/partial", "state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        lines = "deb [signed-by=%s] %s %s main\n" % (KEYRING, MIRROR, self.suite)
        if self.suite in SECURITY_SUITES:
            lines += "deb [signed-by=%s] %s %s-security main\n" % (KEYRING, SECURITY_MIRROR, self.suite)
        (self.root / "sources.list").write_text(lines)
        self._apt(["apt-get", "update"], "apt-get update (%s)" % self.suite)

    def show(self, package: str) -> Dict[str, str]:
        """The candidate stanza of ``package`` in this suite."""
        out = self._apt(
            ["apt-cache", "show", "--no-all-versions", package],
            "apt-cache show %s (%s)" % (package, self.suite),
        )
        stanzas = parse_stanzas(out)
        if not stanzas:
            raise VMError("package %s not found in %s" % (package, self.suite))
        return stanzas[0]

    def download(self, packages: Sequence[str], dest: Path) -> List[Path]:
        """``apt-get download`` the packages into ``dest``; return the .deb paths."""
        dest.mkdir(parents=True, exist_ok=True)
        self._apt(
            ["apt-get", "download"] + list(packages),
            "apt-get download (%s)" % self.suite,
            cwd=str(dest),
        )
        debs = []
        for pkg in packages:
            found = sorted(dest.glob("%s_*.deb" % pkg))
            if not found:
                raise VMError("apt-get download left no .deb for %s" % pkg)
            debs.append(found[-1])
        return debs

    def _apt(self, argv: List[str], what: str, cwd: Optional[str] = None) -> str:
        tools.require(argv[0])
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(
            argv[:1] + self._options() + argv[1:],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        errors = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            if "NO_PUBKEY" in errors or "not signed" in errors:
                raise VMError(
                    "cannot verify the %s archive with %s: upgrade debian-archive-keyring"
                    % (self.suite, KEYRING)
                )
            raise VMError("%s failed: %s" % (what, tools.last_line(proc.stderr)))
        return proc.stdout.decode("utf-8", "replace")


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "root"


def resolve(label: str) -> KernelPackages:
    """Refresh the suite's indices and resolve its current kernel ABI and package set."""
    apt = Apt(SUITES[label])
    apt.update()
    pkgs = kernel_packages(apt.show("linux-image-amd64"))
    if not pkgs.matches(label):
        raise VMError("Debian %s now ships kernel %s, not %s: give that kernel as a path "
                      "(--kernel .../vmlinuz --modules ... --headers ...) "
                      "or update the kernel table (zaptrace.vm.labels)"
                      % (SUITES[label], pkgs.kver, label))
    return split_packages(pkgs, apt.show(pkgs.image))


def split_packages(pkgs: KernelPackages, image_stanza: Dict[str, str]) -> KernelPackages:
    """The packages that really hold a kernel's files.

    Since 6.19 Debian splits a kernel: ``linux-image-<kver>`` is an empty
    package depending on ``linux-binary-<kver>`` (``/usr/lib/modules/<kver>/vmlinuz``),
    ``linux-modules-<kver>`` and ``linux-base-<kver>`` (config, modules.order and
    modules.builtin, which depmod needs).  Where the image package depends on
    them, download those instead of the image; older kernels keep the one image.
    """
    deps = set()
    for clause in image_stanza.get("Depends", "").split(","):
        for alternative in clause.split("|"):
            deps.add(alternative.strip().split(" ", 1)[0].split(":", 1)[0])
    split = ["linux-%s-%s" % (part, pkgs.kver) for part in ("binary", "modules", "base")]
    if all(name in deps for name in split):
        return pkgs._replace(image=split[0], parts=tuple(split[1:]))
    return pkgs


def fetch_kernel(label: str, pkgs: KernelPackages, log: Callable[[str], None]) -> int:
    """Download and unpack one kernel into ``cache.kernel_dir(label)``.

    Produces ``vmlinuz``, ``config``, ``lib/modules/<kver>/`` (with depmod's
    indices) and ``usr/src/linux-headers-*`` (not installed anywhere), and
    writes ``kernel.json`` last.  Returns the number of bytes downloaded.
    """
    tools.require("dpkg-deb", "depmod")
    final = cache.kernel_dir(label)
    work = final.with_name(".%s.new" % label)
    cache.remove_tree(work)
    debs = Apt(SUITES[label]).download([pkgs.image] + list(pkgs.parts) + pkgs.headers, work / "debs")
    size = sum(d.stat().st_size for d in debs)
    log("downloaded %s: %.1f MB" % (", ".join(d.name for d in debs), size / 1e6))

    unpacked = work / "unpacked"
    for deb in debs:
        tools.run(["dpkg-deb", "-x", str(deb), str(unpacked)], "dpkg-deb -x %s" % deb.name)
    modules = _find_modules(unpacked, pkgs.kver)
    # /boot/vmlinuz-<kver> up to 6.18; /usr/lib/modules/<kver>/vmlinuz in the split
    # packages of 6.19+ (config moved beside it, System.map there is a stub).
    for name, places in (("vmlinuz", ("boot/vmlinuz-" + pkgs.kver, "vmlinuz")),
                         ("config", ("boot/config-" + pkgs.kver, "config"))):
        found = [p for p in (unpacked / places[0], modules / places[1]) if p.is_file()]
        if found:
            os.replace(found[0], work / name)
        elif name == "vmlinuz":
            raise VMError("%s has no /boot/vmlinuz-%s nor /usr/lib/modules/%s/vmlinuz"
                          % (pkgs.image, pkgs.kver, pkgs.kver))
    for link in ("build", "source"):   # the headers package's links: recreated in the guest image
        if (modules / link).is_symlink():
            (modules / link).unlink()
    (work / "lib" / "modules").mkdir(parents=True)
    os.replace(modules, work / "lib" / "modules" / pkgs.kver)
    # Only the trees under /usr/src: the debs' /lib/modules/<kver>/{build,source}
    # links are recreated in the guest image.
    os.replace(unpacked / "usr" / "src", work / "usr-src")
    shutil.rmtree(unpacked)
    shutil.rmtree(work / "debs")
    (work / "usr").mkdir()
    os.replace(work / "usr-src", work / "usr" / "src")
    tools.run(["depmod", "-a", "-b", str(work), pkgs.kver], "depmod -b (%s)" % pkgs.kver)

    cache.write_json(
        work / "kernel.json",
        {
            "label": label,
            "suite": SUITES[label],
            "abi": pkgs.abi,
            "kver": pkgs.kver,
            "version": pkgs.version,
            "packages": [d.name for d in debs],
            "download_bytes": size,
        },
    )
    cache.remove_tree(final)
    os.replace(work, final)
    return size


def _find_modules(unpacked: Path, kver: str) -> Path:
    for candidate in (unpacked / "lib" / "modules" / kver, unpacked / "usr" / "lib" / "modules" / kver):
        if candidate.is_dir() and not candidate.is_symlink():
            return candidate
    raise VMError("no lib/modules/%s in the kernel image package" % kver)


def headers_dirs(label: str) -> List[Path]:
    """The fetched ``usr/src/linux-headers-*`` trees of a kernel."""
    src = cache.kernel_dir(label) / "usr" / "src"
    return sorted(p for p in src.iterdir() if p.is_dir()) if src.is_dir() else []
