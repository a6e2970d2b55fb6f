"""What every bundled workload shares: its options, its settings, its files, its outcome.

The workloads themselves live in zaptrace/workloads.py (dontneed-shared,
munmap-anon, race) and zaptrace/lostwrite.py (lostwrite); both import this
module and nothing imports them back, so there is no import circle.  This
module imports nothing heavy (no ctypes): `zaptrace workload run` builds its
command line from the registry below at every start of the CLI.

Options: each workload declares its own, in its own module, with `option()`;
`zaptrace workload run` (zaptrace/cli.py) builds its flags, types, defaults,
help and checks from ``OPTIONS`` alone, and the workload reads the value as an
attribute of its ``Params``.  Adding an option touches the workload's module
and nothing else::

    # zaptrace/lostwrite.py
    option("writeback", str, "fsync", "How the child writes the file back: fsync, fdatasync or msync.",
           workloads=(NAME,), choices=("fsync", "fdatasync", "msync"))
    ...
    def run(p: Params) -> Outcome:
        ... p.writeback ...

Options without ``workloads`` are taken by every workload (--pages, --duration,
...: declared below).  Giving a workload an option that it does not take is a
one-line error.
"""
from __future__ import annotations

import math
import mmap
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import ZaptraceError

PAGE = mmap.PAGESIZE
PMD_SIZE = 2 << 20          # x86-64: one PMD maps 2 MiB

#: --mapping: how the workload asks the kernel to map its memory.
#:   default  whatever the kernel does (THP "always" may give PMD mappings on 7.x)
#:   pte      MADV_NOHUGEPAGE: PTE mappings only (large folios may still be PTE-mapped)
#:   pmd      a 2 MiB-aligned mapping with MADV_HUGEPAGE: PMD-sized folios, PMD-mapped
#:            where the kernel and filesystem can (ext4 file folios: 6.16+; anon THP)
MAPPINGS = ("default", "pte", "pmd")

#: When set and --report is not given, the workload writes its --report JSON there: how
#: `zaptrace ab` collects a workload's own figures (zaps/s, visits/s, lost writes) from
#: inside a guest without changing the command it was given.
REPORT_ENV = "ZAPTRACE_WORKLOAD_REPORT"


class WorkloadError(ZaptraceError):
    pass


# -- the option registry ------------------------------------------------------

#: A check of an option's value: None when the value is fine, else the one-line error.
Check = Callable[[Any], Optional[str]]
_TYPES = (int, float, str, bool)


@dataclass(frozen=True)
class Option:
    """One option of one or more workloads (see the module doc)."""

    name: str                       # the Params attribute and the CLI parameter: "burst"
    type: type                      # int, float, str or bool
    default: Any                    # None: the option is optional (no value unless given)
    help: str
    flags: Tuple[str, ...] = ()     # CLI spellings; default --name (bool: --name/--no-name)
    workloads: Optional[Tuple[str, ...]] = None     # the workloads that take it; None: all
    metavar: Optional[str] = None
    choices: Tuple[str, ...] = ()   # the values allowed (any, when empty)
    check: Optional[Check] = None   # further checks of a given value

    @property
    def flag(self) -> str:
        """The long spelling, as error messages name the option: --burst."""
        return self.cli_flags()[0].split("/")[0]

    def cli_flags(self) -> Tuple[str, ...]:
        if self.flags:
            return self.flags
        long = "--" + self.name.replace("_", "-")
        return (f"{long}/--no-{long[2:]}",) if self.type is bool else (long,)

    def cli_help(self) -> str:
        """The help, after the workloads that take the option: "lostwrite: threads zapping ..."."""
        if self.workloads is None:
            return self.help
        text = self.help
        if text[:1].isupper() and not text[1:2].isupper():
            text = text[0].lower() + text[1:]
        return ", ".join(self.workloads) + ": " + text

    def takes(self, workload: str) -> bool:
        return self.workloads is None or workload in self.workloads

    def problem(self, value: Any) -> Optional[str]:
        """None when ``value`` is fine, else the one-line error."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"{self.flag} {value!r}: choose from {', '.join(self.choices)}"
        return self.check(value) if self.check else None


#: name -> Option, in the order the CLI lists them.
OPTIONS: Dict[str, Option] = {}


def option(name: str, type: type, default: Any, help: str, *, flags: Sequence[str] = (),
           workloads: Optional[Iterable[str]] = None, metavar: Optional[str] = None,
           choices: Sequence[str] = (), check: Optional[Check] = None) -> Option:
    """Declare an option (at import time of the workload's module); returns it."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"workload option {name!r}: a lower-case Python name")
    if type not in _TYPES:
        raise ValueError(f"workload option {name!r}: type must be one of int, float, str, bool")
    if type is bool and default is None:
        raise ValueError(f"workload option {name!r}: a flag needs a default, True or False")
    o = Option(name, type, default, help, tuple(flags), None if workloads is None else tuple(workloads),
               metavar, tuple(choices), check)
    if name in OPTIONS:
        raise ValueError(f"workload option {name!r} is declared twice")
    taken = {s for other in OPTIONS.values() for f in other.cli_flags() for s in f.split("/")}
    clash = taken.intersection(s for f in o.cli_flags() for s in f.split("/"))
    if clash:
        raise ValueError(f"workload option {name!r}: {', '.join(sorted(clash))} already taken")
    OPTIONS[name] = o
    return o


def options_of(workload: str) -> List[Option]:
    """The options ``workload`` takes, in registry order."""
    return [o for o in OPTIONS.values() if o.takes(workload)]


class Params:
    """A workload's settings: one attribute per registered option, its default unless given."""

    def __init__(self, **given: Any):
        unknown = sorted(set(given) - set(OPTIONS))
        if unknown:
            raise TypeError(f"unknown workload option(s): {', '.join(unknown)}")
        for name, o in OPTIONS.items():
            setattr(self, name, given.get(name, o.default))

    def values(self, workload: Optional[str] = None) -> Dict[str, Any]:
        """{name: value} of every option (of ``workload``'s options only, when given)."""
        return {o.name: getattr(self, o.name, o.default) for o in OPTIONS.values()
                if workload is None or o.takes(workload)}

    def __repr__(self) -> str:
        return "Params(" + ", ".join(f"{k}={v!r}" for k, v in self.values().items()) + ")"


def check_params(workload: str, p: Params, given: Iterable[str] = ()) -> None:
    """One-line WorkloadError for an option given to a workload that does not take it
    (``given``: the names set on the command line), or for a bad value of one it takes."""
    for name in given:
        o = OPTIONS[name]
        if not o.takes(workload):
            raise WorkloadError(f"{o.flag} is an option of {', '.join(o.workloads or ())}, not of {workload}")
    for o in options_of(workload):
        msg = o.problem(getattr(p, o.name, o.default))
        if msg:
            raise WorkloadError(msg)


def _positive(flag: str) -> Check:
    return lambda v: None if v > 0 else f"{flag} must be positive"


def _not_negative(flag: str) -> Check:
    return lambda v: None if v >= 0 else f"{flag} must not be negative"


# -- the options every workload takes -------------------------------------------

option("pages", int, 256, "Pages per zap (lostwrite: pages of the file).", flags=("--pages", "-n"),
       check=_positive("--pages"))
option("iterations", int, 200, "Zaps to do (lostwrite: writer passes).", flags=("--iterations", "-i"),
       check=_not_negative("--iterations"))
option("duration", float, None, "Run for this long (seconds) instead.", flags=("--duration", "-d"),
       check=lambda v: None if 0 < v < math.inf else f"--duration must be a positive number of seconds, not {v}")
option("directory", str, None, "Where the workload's file lives.", flags=("--dir",))
option("quiet", bool, False, "No summary line.", flags=("--quiet", "-q"))
option("report", str, None, "Also write elapsed time and zap count as JSON here (lostwrite: its whole "
       "findings document too).")
option("mapping", str, "default", "default, pte (MADV_NOHUGEPAGE) or pmd (2 MiB-aligned, MADV_HUGEPAGE).",
       flags=("--mapping", "-m"), check=lambda v: None if v in MAPPINGS else
       f"unknown mapping {v!r}: choose from {', '.join(MAPPINGS)}")


# -- files and results ------------------------------------------------------------

def scratch_dir(p: Params) -> str:
    d = p.directory or os.environ.get("ZAPTRACE_SCRATCH") or os.getcwd()
    if not os.path.isdir(d):
        raise WorkloadError(f"scratch directory {d} does not exist")
    if not os.access(d, os.W_OK):
        raise WorkloadError(f"scratch directory {d} is not writable")
    return d


def scratch_file(p: Params, tag: str, size: int) -> Tuple[str, int]:
    """Create the workload's file of ``size`` bytes in its scratch directory: (path, fd)."""
    d = scratch_dir(p)
    path = os.path.join(d, f".zaptrace-{tag}-{os.getpid()}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise WorkloadError(f"cannot create the workload's file in {d}: {e.strerror}") from None
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise WorkloadError(f"cannot size the workload's file {path} to {size} bytes: {e.strerror}") from None
    return path, fd


def region_pages(p: Params) -> int:
    """--pages, rounded up to whole PMDs for --mapping pmd."""
    if p.mapping == "pmd":
        per = PMD_SIZE // PAGE
        return -(-p.pages // per) * per
    return p.pages


@dataclass
class Outcome:
    message: str
    zaps: int
    elapsed_s: float
    status: int = 0           # the workload's exit status (lostwrite: 1 when writes were lost)
    #: further figures for the --report file (lostwrite: its whole findings document)
    extra: Dict[str, object] = field(default_factory=dict)
