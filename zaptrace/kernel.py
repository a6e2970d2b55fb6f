"""What the running kernel offers: symbols, kprobes, BPF, BTF, headers.

Everything here is feature detection on the live system (``/proc/kallsyms``,
tracefs, ``/sys/kernel/btf/vmlinux``), never a guess from the version number.
The probe catalog (:mod:`zaptrace.catalog`) asks this module which of its
alternatives exist; ``zaptrace doctor`` prints what it finds.
"""
from __future__ import annotations

import bisect
import os
import platform
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

# Suffixes GCC gives to clones of a static function.  ".cold" parts are not
# entry points and are never probed.
_CLONE_RE = re.compile(r"^(?P<base>[A-Za-z_][\w]*?)(?P<suffix>(\.(isra|constprop|part|lto_priv)\.\d+)+)$")

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


@dataclass
class Symbols:
    """Text symbols of the running kernel, from /proc/kallsyms."""

    text: Set[str] = field(default_factory=set)
    clones: Dict[str, List[str]] = field(default_factory=dict)   # base name -> clone names
    addresses: Dict[str, int] = field(default_factory=dict)      # selected data symbols
    readable: bool = True
    addresses_visible: bool = False

    def has(self, name: str) -> bool:
        return name in self.text

    def clones_of(self, name: str) -> List[str]:
        return self.clones.get(name, [])


_DATA_SYMBOLS = ("vmemmap_base", "page_offset_base")


def read_kallsyms(path: str = "/proc/kallsyms") -> Symbols:
    syms = Symbols()
    try:
        with open(path, "r", errors="replace") as f:
            data = f.read()
    except OSError:
        syms.readable = False
        return syms
    text = syms.text
    for line in data.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 3:
            continue
        kind = parts[1]
        name = parts[2]
        if kind in "tT":                 # module symbols ("[mod]" 4th column) count too
            text.add(name)
            if "." in name:
                m = _CLONE_RE.match(name)
                if m:
                    syms.clones.setdefault(m.group("base"), []).append(name)
        elif name in _DATA_SYMBOLS:
            addr = int(parts[0], 16)
            syms.addresses[name] = addr
            if addr:
                syms.addresses_visible = True
    return syms


def text_ranges(names, path: str = "/proc/kallsyms") -> Dict[str, Tuple[int, int]]:
    """[start, end) of each kernel text symbol of ``names`` found once in vmlinux: its address
    and the next text symbol's (on 6.2+ kernels the next function's ``__pfx_`` padding).
    Absent: not in kallsyms, not unique, or addresses hidden (kptr_restrict: not root)."""
    want = set(names)
    addrs: List[int] = []
    found: Dict[str, int] = {}
    dup: Set[str] = set()
    try:
        with open(path, "r", errors="replace") as f:
            for line in f:
                parts = line.split(None, 3)
                if len(parts) != 3 or parts[1] not in "tT":
                    continue                     # vmlinux text only: modules ("[mod]") sit elsewhere
                a = int(parts[0], 16)
                addrs.append(a)
                if parts[2] in want:
                    if parts[2] in found:
                        dup.add(parts[2])
                    found[parts[2]] = a
    except (OSError, ValueError):
        return {}
    addrs.sort()
    out = {}
    for name, a in found.items():
        if not a or name in dup:
            continue
        i = bisect.bisect_right(addrs, a)
        if i < len(addrs):
            out[name] = (a, addrs[i])
    return out


def tracefs() -> Optional[Path]:
    for p in TRACEFS_CANDIDATES:
        if os.path.exists(os.path.join(p, "kprobe_events")) or os.path.exists(os.path.join(p, "available_events")):
            return Path(p)
    return None


def kprobe_blacklist() -> Optional[Set[str]]:
    """Functions kprobes refuse (debugfs), or None when it cannot be read."""
    p = Path("/sys/kernel/debug/kprobes/blacklist")
    try:
        text = p.read_text()
    except OSError:
        return None
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.add(parts[1])
    return out


# ---------------------------------------------------------------- BTF ----

_BTF_MAGIC = 0xEB9F
_KIND_STRUCT = 4
_KIND_UNION = 5
_KIND_FUNC = 12
_KIND_FUNC_PROTO = 13
# Extra bytes after the 12-byte btf_type header, per kind (vlen-scaled where noted).
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


def btf_func_params(names: Iterable[str], path: str = "/sys/kernel/btf/vmlinux") -> Optional[Dict[str, List[str]]]:
    """Parameter names of the given kernel functions from vmlinux BTF.

    Returns None when BTF is not available; functions absent from BTF are
    absent from the result.
    """
    scan = btf_scan(names, (), path)
    return None if scan is None else scan[0]


def btf_scan(funcs: Iterable[str], structs: Iterable[str], path: str = "/sys/kernel/btf/vmlinux"
             ) -> Optional[Tuple[Dict[str, List[str]], Dict[str, Dict[str, int]]]]:
    """One pass over vmlinux BTF: parameter names of ``funcs``, and the members of
    ``structs`` with their byte offsets.

    Members of anonymous structs and unions nested in a struct count as its
    own (``struct page`` keeps most of its fields in such unions), at their
    offset from the outer struct.  None when BTF is not available; names
    absent from BTF are absent from the result.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data, 0)
    if magic != _BTF_MAGIC:
        return None
    t0 = hdr_len + type_off
    s0 = hdr_len + str_off
    strings = data[s0:s0 + str_len]

    def name_at(off: int) -> str:
        end = strings.index(b"\0", off)
        return strings[off:end].decode()

    # Pre-encode the wanted names so the scan compares bytes, not decoded str.
    wanted_f = {n.encode() for n in funcs}
    wanted_s = {n.encode() for n in structs}
    offsets = [0]          # type id -> byte offset (ids start at 1)
    found_f: Dict[str, int] = {}
    found_s: Dict[str, int] = {}
    unpack = struct.unpack_from
    pos, end = t0, t0 + type_len
    while pos < end:
        name_off, info, size_type = unpack("<III", data, pos)
        offsets.append(pos)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        if name_off and kind in (_KIND_FUNC, _KIND_STRUCT):
            nend = strings.index(b"\0", name_off)
            nm = strings[name_off:nend]
            if kind == _KIND_FUNC and nm in wanted_f:
                found_f[nm.decode()] = size_type
            elif kind == _KIND_STRUCT and nm in wanted_s and nm.decode() not in found_s:
                found_s[nm.decode()] = len(offsets) - 1
        pos += 12 + _FIXED.get(kind, 0) + _PER_VLEN.get(kind, 0) * vlen
    out: Dict[str, List[str]] = {}
    for fname, proto_id in found_f.items():
        if proto_id >= len(offsets):
            continue
        ppos = offsets[proto_id]
        _n, info, _r = unpack("<III", data, ppos)
        if ((info >> 24) & 0x1F) != _KIND_FUNC_PROTO:
            continue
        vlen = info & 0xFFFF
        params = []
        for i in range(vlen):
            pn, _pt = unpack("<II", data, ppos + 12 + 8 * i)
            params.append(name_at(pn) if pn else "")
        out[fname] = params

    def members(type_id: int, into: Dict[str, int], base: int, depth: int = 0) -> None:
        if type_id >= len(offsets) or depth > 8:
            return
        tpos = offsets[type_id]
        _n, info, _r = unpack("<III", data, tpos)
        if ((info >> 24) & 0x1F) not in (_KIND_STRUCT, _KIND_UNION):
            return
        bitfields = bool(info >> 31)          # kind_flag: offset = bitfield size << 24 | bit offset
        for i in range(info & 0xFFFF):
            mn, mt, off = unpack("<III", data, tpos + 12 + 12 * i)
            bits = (off & 0xFFFFFF) if bitfields else off
            if mn:
                into.setdefault(name_at(mn), base + bits // 8)
            else:
                members(mt, into, base + bits // 8, depth + 1)

    fields: Dict[str, Dict[str, int]] = {}
    for sname, tid in found_s.items():
        fields[sname] = {}
        members(tid, fields[sname], 0)
    return out, fields


# ------------------------------------------------------------ features ----


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fatal: bool = True     # record cannot work when a fatal check fails


def kernel_release() -> str:
    return platform.release()


def headers_dir(release: Optional[str] = None) -> Optional[Path]:
    release = release or kernel_release()
    # Where BCC looks: /lib/modules/R/build (Debian's "source" link alone is not enough).
    p = Path(f"/lib/modules/{release}/build")
    return p if (p / "include").is_dir() else None


def feature_checks(syms: Symbols) -> List[Check]:
    """The kernel features that recording needs, each with a verdict."""
    checks: List[Check] = []
    root = os.geteuid() == 0
    checks.append(Check("root", root, "running as root" if root else
                        "not root: loading BPF programs and kprobes needs root (run with sudo)"))
    if not syms.readable:
        checks.append(Check("kallsyms", False, "/proc/kallsyms is not readable"))
        return checks
    kprobes = syms.has("register_kprobe")
    checks.append(Check(
        "kprobes", kprobes,
        "CONFIG_KPROBES=y (register_kprobe is in /proc/kallsyms)" if kprobes else
        "this kernel has no kprobes (CONFIG_KPROBES is off: register_kprobe is not in /proc/kallsyms)"))
    bpf = syms.has("bpf_prog_load") or syms.has("__sys_bpf") or syms.has("__x64_sys_bpf")
    checks.append(Check("bpf", bpf, "bpf() syscall present" if bpf else "no bpf() syscall (CONFIG_BPF_SYSCALL off)"))
    ringbuf = syms.has("bpf_ringbuf_output")
    checks.append(Check("ringbuf", True,
                        "BPF ring buffer available (5.8+)" if ringbuf else
                        "no BPF ring buffer: falling back to the perf buffer", fatal=False))
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    checks.append(Check("btf", btf, "/sys/kernel/btf/vmlinux present: probe signatures are verified" if btf else
                        "no vmlinux BTF: probe signatures are taken from the catalog unverified", fatal=False))
    hd = headers_dir()
    kheaders = os.path.exists("/sys/kernel/kheaders.tar.xz")
    if hd:
        checks.append(Check("headers", True, f"kernel headers at {hd}"))
    elif kheaders and shutil.which("xz"):
        checks.append(Check("headers", True, "no headers tree, but CONFIG_IKHEADERS (BCC unpacks /sys/kernel/kheaders.tar.xz)"))
    elif kheaders:
        checks.append(Check("headers", False,
                            "no headers tree, and BCC cannot unpack the kernel's own (/sys/kernel/kheaders.tar.xz) "
                            "without xz: apt-get install xz-utils"))
    else:
        checks.append(Check("headers", False,
                            f"no kernel headers for {kernel_release()}: install linux-headers-{kernel_release()} "
                            f"(BCC compiles against /lib/modules/{kernel_release()}/build)"))
    tfs = tracefs()
    checks.append(Check("tracefs", tfs is not None, f"tracefs at {tfs}" if tfs else
                        "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)", fatal=False))
    vm = "vmemmap_base" in syms.addresses
    checks.append(Check("vmemmap", True, "vmemmap_base found: PFNs are exact" if vm and syms.addresses_visible else
                        ("vmemmap_base address hidden (kptr_restrict; run as root)" if vm else
                         "no vmemmap_base symbol: assuming the default x86-64 VMEMMAP_START"), fatal=False))
    return checks
