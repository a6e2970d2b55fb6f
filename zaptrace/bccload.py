"""Find BCC's Python bindings.

BCC is not on PyPI: its bindings come from the distro (Debian/Ubuntu
``python3-bpfcc``, Fedora ``python3-bcc``) and live in the system Python's
dist-packages, which a virtualenv does not see.  The bindings are pure
Python over ctypes (libbcc.so), so the venv's interpreter can import them
from there; only the ``bcc`` package directory is loaded, never the whole
dist-packages (which would shadow the venv's numpy/pandas).
"""
from __future__ import annotations

import glob
import importlib
import importlib.util
import sys
from types import ModuleType

INSTALL_HINT = ("BCC's Python bindings are missing: install the distro package "
                "(Debian/Ubuntu: apt install python3-bpfcc; Fedora: dnf install python3-bcc)")


from .errors import ZaptraceError


class BCCMissing(ZaptraceError):
    pass


def _candidates():
    pats = ["/usr/lib/python3/dist-packages/bcc/__init__.py",
            "/usr/lib/python3*/site-packages/bcc/__init__.py",
            "/usr/lib64/python3*/site-packages/bcc/__init__.py",
            "/usr/local/lib/python3*/dist-packages/bcc/__init__.py",
            "/usr/share/bcc/python/bcc/__init__.py"]
    for p in pats:
        yield from sorted(glob.glob(p), reverse=True)


def load_bcc() -> ModuleType:
    """Import ``bcc`` from the environment or from the system Python."""
    if "bcc" in sys.modules:
        return sys.modules["bcc"]
    try:
        return importlib.import_module("bcc")
    except ImportError:
        pass
    except OSError as e:   # libbcc.so missing or broken
        raise BCCMissing(f"BCC's bindings are installed but libbcc cannot be loaded ({e})") from None
    for init in _candidates():
        pkgdir = init[: -len("/__init__.py")]
        spec = importlib.util.spec_from_file_location("bcc", init, submodule_search_locations=[pkgdir])
        if spec is None or spec.loader is None:
            continue
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bcc"] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:  # noqa: BLE001 - any failure means "not usable"
            del sys.modules["bcc"]
            raise BCCMissing(f"BCC's bindings at {pkgdir} failed to load: {e}") from None
        return mod
    raise BCCMissing(INSTALL_HINT)


def bcc_version() -> str:
    try:
        mod = load_bcc()
    except BCCMissing:
        return ""
    return getattr(mod, "__version__", "unknown")
