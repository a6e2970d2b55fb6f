"""The Debian kernels zaptrace knows by label: one table, the rest derived from it.

A label ("6.12") names the kernel series that one Debian suite's
``linux-image-amd64`` provides.  ``zaptrace vm build`` fetches a label's image
and headers from its suite (vm/debian.py), ``zaptrace vm kernel build <label>``
builds one from the suite's ``linux-source-<label>`` (vm/ksource.py), and
``zaptrace vm run --kernel <label>`` boots it.  The suites apt is pointed at,
the build defaults, the help texts of those commands and the tests' kernel
parametrisations are views of :data:`KERNELS`: adding a kernel is one row here
(plus, for a guest test that checks per-kernel facts, that kernel's
expectations there).

Standard library only: zaptrace/cli.py and vm/cli.py format their help from
this module at import time, in the guest too (bookworm: Python 3.11, typer 0.7).
"""

from dataclasses import dataclass
from typing import Dict, Iterable, Tuple


@dataclass(frozen=True)
class DebianKernel:
    """One kernel label and the Debian suite that provides it."""

    label: str      # the series, "6.12": the ABI the suite resolves to must match it (debian.resolve)
    suite: str      # the suite whose linux-image-amd64 provides it
    default: bool   # `zaptrace vm build` fetches it when no --kernel is given
    security: bool  # the suite has a <suite>-security companion (kernel updates land there first)
    source: bool    # the suite serves linux-source-<label>: `zaptrace vm kernel build <label>`
    note: str = ""  # what sets it apart, for readers of this table

    @property
    def version(self) -> Tuple[int, ...]:
        """The label as numbers, (6, 12): for comparisons such as ``version >= (6, 2)``."""
        return tuple(int(part) for part in self.label.split("."))


#: Oldest first.  sid and experimental move on: the resolved ABI is checked
#: against the label (vm/debian.py, resolve), so "7.2" never silently becomes 7.3.
KERNELS: Tuple[DebianKernel, ...] = (
    DebianKernel(
        "5.10", "bullseye", default=True, security=True, source=True,
        note="Debian 11. Mapcounts drop before the flush (page_remove_rmap, page_mkclean). "
             "linux-source-5.10 is in the bullseye and bullseye-security indices, but no "
             "`vm kernel build 5.10` has been tried (vm/guest.config was written against 7.2)."),
    DebianKernel(
        "6.1", "bookworm", default=True, security=True, source=True,
        note="Debian 12, also the guest's userspace. No delayed rmap (upstream 6.2+): dirty "
             "file pages drop their mapcount before the flush."),
    DebianKernel(
        "6.12", "trixie", default=True, security=True, source=True,
        note="Debian 13. Delayed rmap (tlb_flush_rmaps): dirty file pages drop after the flush. "
             "linux-source-6.12 is in bookworm-backports too."),
    DebianKernel(
        "7.2", "sid", default=True, security=False, source=True,
        note="Today's kernel: split packages (6.19+), the zap is __zap_vma_range (7.1+), ext4 "
             "large folios PMD-mapped (6.16+), PT_RECLAIM (6.14+); loses writes on both paths. The "
             "patches in patches/7.2 apply to it."),
    DebianKernel(
        "7.3", "experimental", default=False, security=False, source=False,
        note="Release candidates, with headers; fetched on request (--kernel 7.3). Whether "
             "experimental serves linux-source-7.3 was never checked: `vm kernel build` does not "
             "offer it until someone does."),
)

#: Every label, in table order.
LABELS: Tuple[str, ...] = tuple(k.label for k in KERNELS)

#: Label -> the row.
BY_LABEL: Dict[str, DebianKernel] = {k.label: k for k in KERNELS}

#: Label -> suite (vm/debian.py's SUITES).
SUITES: Dict[str, str] = {k.label: k.suite for k in KERNELS}

#: Suites that have a -security companion (vm/debian.py's SECURITY_SUITES).
SECURITY_SUITES: Tuple[str, ...] = tuple(k.suite for k in KERNELS if k.security)

#: What `zaptrace vm build` fetches without --kernel (vm/build.py's DEFAULT_KERNELS).
DEFAULT_KERNELS: Tuple[str, ...] = tuple(k.label for k in KERNELS if k.default)

#: Labels `zaptrace vm kernel build` builds from Debian's linux-source-<label>.
SOURCE_LABELS: Tuple[str, ...] = tuple(k.label for k in KERNELS if k.source)


def listed(labels: Iterable[str]) -> str:
    """"5.10, 6.1, 6.12": a list of labels for help texts and messages."""
    return ", ".join(labels)


def with_suites(labels: Iterable[str]) -> str:
    """"6.1: bookworm, 6.12: trixie": labels with their suites, for help texts."""
    return ", ".join("%s: %s" % (label, SUITES[label]) for label in labels)


def version(label: str) -> Tuple[int, ...]:
    """The version of a table label, (6, 12); KeyError for a label not in the table."""
    return BY_LABEL[label].version
