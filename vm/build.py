"""``zaptrace vm build``: everything a guest needs, built once and cached.

Steps (each skipped when its result is already in the cache):

1. per kernel: resolve the suite's current ABI, download the image and
   headers debs, unpack them, depmod;
2. debootstrap the bookworm userspace tree;
3. mkfs the guest image from the tree plus every fetched kernel's headers;
4. the scratch disk template;
5. per kernel: the initramfs;
6. once per host: the KVM probe (only if /dev/kvm is usable).
"""

import concurrent.futures
import os
import shutil
from typing import Callable, List, Optional, Sequence

from . import cache, debian, initramfs, qemu, rootfs, tools
from .errors import VMError
from .kernel import built, fetched, is_label, known_names, list_built, resolve
from .labels import DEFAULT_KERNELS, listed  # DEFAULT_KERNELS: what `vm build` fetches without --kernel
from .progress import Progress

_NOT_BUILT = "guest image not built: run `zaptrace vm build`"


def _labels(requested: Sequence[str]) -> List[str]:
    labels: List[str] = []
    for label in requested:
        if label not in debian.SUITES:
            raise VMError("unknown kernel %r: choose from %s" % (label, listed(debian.SUITES)))
        if label not in labels:
            labels.append(label)
    if not labels:
        raise VMError("no kernel to build")
    return labels


def build(kernels: Sequence[str] = DEFAULT_KERNELS, force: bool = False, log: Callable[[str], None] = print) -> None:
    """Build (or bring up to date) the guest for the given kernel labels.

    Idempotent: what is in the cache is reused unless ``force``, which fetches
    the kernels again and redoes debootstrap, image and scratch disk.
    """
    labels = _labels(kernels)
    progress = Progress(log)
    # Fail early, before any download.
    tools.require("apt-get", "apt-cache", "dpkg-deb", "depmod", "debootstrap", "mkfs.ext4", qemu.QEMU)
    initramfs.find_busybox()
    with cache.build_lock():
        # The kernels download and unpack while debootstrap runs: each is mostly waiting for
        # the network or the disk, and neither needs the other until the image is made.
        todo = [label for label in labels if force or fetched(label) is None]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            fetches = [pool.submit(_fetch, label, progress) for label in todo]
            if force or not rootfs.tree_ready():
                with progress.step("debootstrap %s userspace" % debian.USERSPACE_SUITE):
                    rootfs.debootstrap(progress.say)
            for f in fetches:
                f.result()              # the first failure, as its one-line VMError

        infos = {label: fetched(label) for label in debian.SUITES}
        present = {label: info for label, info in infos.items() if info is not None}
        if force or not rootfs.image_ready({label: info["kver"] for label, info in present.items()}):
            with progress.step("guest image (headers of %s)" % ", ".join(sorted(present))):
                rootfs.build_image(present, progress.say)

        if force or not cache.scratch_image().is_file():
            with progress.step("scratch disk template"):
                rootfs.build_scratch()

        for label in labels:
            before = set(cache.initramfs_dir().glob("*.cpio.gz"))
            initrd = initramfs.ensure(resolve(label).modules)
            if initrd not in before:
                progress.worked = True
                progress.say("initramfs %s: %s (%.1f MB)" % (label, initrd.name, initrd.stat().st_size / 1e6))

        if qemu.kvm_usable() and (force or qemu.cached_probe() is None):
            guest = resolve(labels[0])
            with progress.step("KVM probe (boots %s under KVM, at most %.0f s)" % (labels[0], qemu.PROBE_TIMEOUT)):
                result = qemu.probe_kvm(guest, initramfs.ensure(guest.modules))
                progress.say("KVM %s: %s" % ("usable" if result["ok"] else "not usable, using TCG", result["detail"]))

    summary = ", ".join("%s (%s)" % (label, present[label]["kver"]) for label in labels)
    if progress.worked:
        progress.say("guest ready: %s" % summary)
    else:
        progress.say("everything already built: %s" % summary)


def _fetch(label: str, progress: Progress) -> None:
    """Resolve and fetch one Debian kernel (run beside debootstrap, in a thread of its own)."""
    with progress.step("kernel %s: resolve the %s ABI" % (label, debian.SUITES[label])):
        pkgs = debian.resolve(label)
        progress.say("kernel %s is %s (%s)" % (label, pkgs.kver, pkgs.version))
    with progress.step("kernel %s: download and unpack" % label):
        debian.fetch_kernel(label, pkgs, progress.say)


def ready(kernel: str) -> Optional[str]:
    """None if a guest with ``kernel`` (a label or a bzImage path) can boot now,
    else a one-line reason saying what to do."""
    if shutil.which(qemu.QEMU) is None:
        return "%s not found: apt-get install qemu-system-x86" % qemu.QEMU
    try:
        initramfs.find_busybox()
    except VMError as e:
        return str(e)
    if not rootfs.image_path().is_file() or not cache.scratch_image().is_file():
        return _NOT_BUILT
    if is_label(kernel):
        info = fetched(kernel)
        if info is None or rootfs.image_kernels().get(kernel) != info["kver"]:
            return "kernel %s not built: run `zaptrace vm build --kernel %s`" % (kernel, kernel)
        return None
    if built(kernel) is None and not os.path.exists(kernel):
        return "unknown kernel %r: choose one of %s, or give a kernel build tree or a bzImage" % (
            kernel, known_names())
    return None


def describe() -> List[str]:
    """Human-readable state of the cache, for ``zaptrace vm status``."""
    lines = ["cache: %s" % cache.vm_dir()]
    image = rootfs.image_path()
    if image.is_file():
        lines.append("guest image: %s (%.0f MB allocated)" % (image, image.stat().st_blocks * 512 / 1e6))
    else:
        lines.append("guest image: not built")
    for label, suite in debian.SUITES.items():
        info = fetched(label)
        what = "%s %s" % (info["kver"], info["version"]) if info else "not fetched"
        lines.append("kernel %-5s %-9s %s: %s" % (label, suite, what, ready(label) or "ready"))
    for info in list_built():
        patches = ", ".join(p["name"] for p in info.get("patches", [])) or "no patches"
        lines.append("kernel %s: %s, built from %s + %s" % (info["name"], info["release"], info["source"]["ident"], patches))
    if shutil.which(qemu.QEMU) is None:
        lines.append("qemu: %s not found (scripts/setup installs it)" % qemu.QEMU)
    else:
        lines.append("qemu: %s" % qemu.version())
        lines.append("tcg: thread=%s (%s); %d vCPUs unless --smp" % (
            qemu.tcg_threading(), qemu.tcg_reason(), qemu.default_vcpus()))
    if not qemu.kvm_usable():
        lines.append("accelerator: TCG (/dev/kvm not usable)")
    else:
        probe = qemu.cached_probe()
        if probe is None:
            lines.append("accelerator: not probed yet (the first run boots a KVM probe)")
        else:
            lines.append("accelerator: %s (KVM probe %s: %s)" % (
                "KVM" if probe["ok"] else "TCG", probe["when"], probe["detail"]))
    last = cache.latest_run_dir()
    if last is not None:
        status = last / "ctl" / "status"
        timing = last / "ctl" / "timing"
        elapsed = last / "elapsed"
        lines.append("last run: %s (exit status %s, %s s, guest %s)" % (
            last,
            status.read_text().strip() if status.is_file() else "none",
            elapsed.read_text().strip() if elapsed.is_file() else "?",
            timing.read_text().strip() if timing.is_file() else "no timing",
        ))
    return lines


def main(argv: Sequence[str]) -> int:
    """``python3 -m vm.build LABEL...`` from the checkout: the guest built with the standard
    library alone, before any venv exists (``scripts/setup --guest``); progress on stderr,
    a failure as one line."""
    import sys
    try:
        build(list(argv), log=lambda line: print(line, file=sys.stderr, flush=True))
    except VMError as e:
        print("vm build: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
