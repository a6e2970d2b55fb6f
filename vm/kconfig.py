"""The guest kernel's .config: ``defconfig`` + ``kvm_guest.config`` + vm/guest.config, checked.

As virtme-ng and drgn's vmtest do, the config is a small fragment kept in the
repository (``vm/guest.config``) on top of the architecture's defconfig and the
kernel's own ``kvm_guest.config``.  After ``make olddefconfig`` every line of
every fragment must hold in the resulting .config: a symbol that a missing
dependency dropped is an error naming it, never a silent difference.
"""

import hashlib
import re
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

from .errors import VMError

#: The repository's fragment for every guest kernel.
FRAGMENT = Path(__file__).resolve().with_name("guest.config")
#: make targets that make the base config, in order.
BASE_TARGETS = ("defconfig", "kvm_guest.config")

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")


def parse(text: str, where: str = "config") -> Dict[str, str]:
    """``{symbol: value}`` of a .config or fragment ("n" for ``# CONFIG_X is not set``).

    Other comments and blank lines are skipped; any other line is a VMError naming it.
    """
    out: Dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = _SET.match(line)
        if m:
            out[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            out[m.group(1)] = "n"
            continue
        if line and not line.startswith("#"):
            raise VMError("%s line %d is not a config line (CONFIG_X=y or # CONFIG_X is not set): %r"
                          % (where, n, raw))
    return out


def read_fragment(path: Path) -> Tuple[str, Dict[str, str]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise VMError("cannot read config fragment %s: %s" % (path, e.strerror)) from None
    return text, parse(text, str(path))


def mismatches(wanted: Dict[str, str], got: Dict[str, str]) -> List[str]:
    """The fragment lines that did not hold in the final .config."""
    out = []
    for sym, value in wanted.items():
        have = got.get(sym, "n")
        if have != value:
            out.append("CONFIG_%s=%s (the .config has %s)" % (sym, value, "it unset" if have == "n" else have))
    return out


def recipe(fragments: Sequence[Path]) -> str:
    """A digest of what the config is made from (base targets and the fragments' text)."""
    h = hashlib.sha256(" ".join(BASE_TARGETS).encode())
    for f in fragments:
        h.update(b"\0" + read_fragment(f)[0].encode())
    return h.hexdigest()


def digest(config_text: str) -> str:
    """A digest of a .config's settings (its comments and their dates left out)."""
    settings = sorted("%s=%s" % kv for kv in parse(config_text).items() if kv[1] != "n")
    return hashlib.sha256("\n".join(settings).encode()).hexdigest()


def configure(out_dir: Path, fragments: Sequence[Path], make: Callable[[List[str], str], None],
              log: Callable[[str], None]) -> str:
    """Write ``out_dir/.config`` from the base targets and ``fragments``; return its digest.

    ``make(targets, what)`` runs make in the tree with ``O=out_dir``.  Skipped when the
    .config there was made from the same recipe (``out_dir/.zaptrace-config``).
    """
    stamp = out_dir / ".zaptrace-config"
    config = out_dir / ".config"
    want = recipe(fragments)
    if config.is_file() and stamp.is_file() and stamp.read_text().strip() == want:
        return digest(config.read_text())
    log("configuring: make %s, then %s" % (" ".join(BASE_TARGETS), ", ".join(f.name for f in fragments)))
    make(list(BASE_TARGETS), "make %s" % " ".join(BASE_TARGETS))
    wanted: Dict[str, str] = {}
    text = config.read_text()
    for f in fragments:
        body, settings = read_fragment(f)
        wanted.update(settings)
        text += "\n# zaptrace: %s\n%s" % (f.name, body)
    config.write_text(text)
    make(["olddefconfig"], "make olddefconfig")
    final = config.read_text()
    bad = mismatches(wanted, parse(final))
    if bad:
        raise VMError("%d config line%s did not hold after olddefconfig (a missing dependency?): %s%s"
                      % (len(bad), "" if len(bad) == 1 else "s", "; ".join(bad[:3]),
                         "; ..." if len(bad) > 3 else ""))
    stamp.write_text(want + "\n")
    return digest(final)
