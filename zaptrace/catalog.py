"""The probe catalog: logical events and the kernel functions that implement them.

This table is data.  Each logical event lists alternatives in order of
preference; each alternative names a kernel function, the roles of its
parameters (which argument register holds the page, the folio, the mm...),
and the kernel change that made the alternative necessary.  At run time
:func:`resolve` picks, per logical event, the first alternative that the
running kernel really has (``/proc/kallsyms``), that kprobes accept (not on
the kprobe blacklist) and whose parameters BTF confirms.  Nothing here is
chosen from a version number.

The BPF side (probes/zaptrace.bpf.c) has one handler per logical event; the
chosen alternative's parameter positions reach it as ``-DZT_<EVENT>_<ROLE>=n``
compile-time constants (0 = the function has no such parameter).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from .kernel import Symbols


@dataclass(frozen=True)
class Alternative:
    symbol: str
    params: Tuple[str, ...]            # parameter names in order, as BTF names them
    roles: Dict[str, str]              # role -> parameter name
    why: str                           # kernel commit/release that made this alternative exist
    clones: bool = False               # also accept GCC clones (.isra.N, .constprop.N)

    def position(self, role: str) -> int:
        name = self.roles.get(role)
        return self.params.index(name) + 1 if name in self.params else 0


@dataclass(frozen=True)
class LogicalEvent:
    name: str
    macro: str                         # BPF handler family: ZT_<macro>_*
    description: str
    alternatives: Tuple[Alternative, ...]
    #: BPF handlers h_<entry>() and h_<ret>() in probes/zaptrace.bpf.c (ret: None without a
    #: return probe).  plan.py generates their kprobe (zt_<h>) and fentry/fexit entry points.
    handlers: Tuple[str, Optional[str]] = ("", None)
    ret: bool = False                  # also attach a return probe
    required: bool = True              # record refuses to start without it
    roles: Tuple[str, ...] = ()


def _alt(symbol, params, roles, why, clones=False):
    return Alternative(symbol, tuple(params), dict(roles), why, clones)


CATALOG: Tuple[LogicalEvent, ...] = (
    LogicalEvent(
        "zap", "ZAP", "zap bracket: the PTE-clearing loop of one range (munmap, MADV_DONTNEED, exit)",
        (
            # zap_pte_range() is static; GCC inlines it into zap_pmd_range() and
            # unmap_page_range() on Debian's 5.10, 6.1 and 6.12 builds, and emits it
            # as a real symbol (sometimes an IPA-SRA clone) on others.  A clone's
            # argument registers are not trustworthy, so roles are read only from
            # the plain symbol.
            _alt("zap_pte_range", ("tlb", "vma", "pmd", "addr", "end", "details"),
                 {"tlb": "tlb", "vma": "vma", "start": "addr", "end": "end"},
                 "static in mm/memory.c since 2.6.12; probe-able only where the compiler did not inline it",
                 clones=True),
            # unmap_page_range() is global (called from unmap_single_vma and
            # oom_reaper) and never inlined: its entry/return bracket the zap.
            _alt("unmap_page_range", ("tlb", "vma", "addr", "end", "details"),
                 {"tlb": "tlb", "vma": "vma", "start": "addr", "end": "end"},
                 "global since 2.6.12 (mm/memory.c); brackets the inlined zap_p*_range loops"),
            # v7.1: 19e48cb98b80 "mm/memory: rename unmap_single_vma() to __zap_vma_range()",
            # b6c0384a0426 (final (tlb, vma, start, end, details) signature) and
            # 3a31d08d242a "mm/memory: inline unmap_page_range() into __zap_vma_range()",
            # which removed unmap_page_range().  Static, but in kallsyms and BTF on
            # Debian's 7.2/7.3; every zap (unmap_vmas, zap_vma_range[_batched], the OOM
            # reaper's zap_vma_for_reaping) goes through it.
            _alt("__zap_vma_range", ("tlb", "vma", "start", "end", "details"),
                 {"tlb": "tlb", "vma": "vma", "start": "start", "end": "end"},
                 "v7.1: 3a31d08d242a mm/memory: inline unmap_page_range() into __zap_vma_range()"),
        ),
        ret=True, roles=("tlb", "vma", "start", "end"),
        handlers=("zap_enter", "zap_exit"),
    ),
    LogicalEvent(
        "rmap", "RMAP", "mapcount decrement of a PTE-mapped page",
        (
            # v6.8, b06dc281aa99 "mm/rmap: introduce folio_remove_rmap_[pte|ptes|pmd]()";
            # page_remove_rmap() went away in the same series (v6.8, "mm/rmap: remove
            # page_remove_rmap()").  folio_remove_rmap_pte() is a macro over _ptes.
            _alt("folio_remove_rmap_ptes", ("folio", "page", "nr_pages", "vma"),
                 {"folio": "folio", "page": "page", "nr": "nr_pages", "vma": "vma"},
                 "v6.8: b06dc281aa99 mm/rmap: introduce folio_remove_rmap_[pte|ptes|pmd]()"),
            # v5.18, cea86fe246b6 "mm/munlock: rmap call mlock_vma_page() munlock_vma_page()"
            # added the vma parameter.
            _alt("page_remove_rmap", ("page", "vma", "compound"),
                 {"page": "page", "vma": "vma", "compound": "compound"},
                 "v5.18: cea86fe246b6 mm/munlock: rmap call mlock_vma_page() munlock_vma_page() (adds vma)"),
            # v4.5, d281ee614518 "rmap: add argument to charge compound page" (compound flag).
            _alt("page_remove_rmap", ("page", "compound"),
                 {"page": "page", "compound": "compound"},
                 "v4.5: d281ee614518 rmap: add argument to charge compound page"),
        ),
        roles=("folio", "page", "nr", "compound", "vma"),
        handlers=("rmap", None),
    ),
    LogicalEvent(
        "zap_pmd", "ZAPPMD", "a huge PMD about to be cleared (zap_huge_pmd entry: lock, clear, rmap, unlock)",
        (
            # Global in mm/huge_memory.c since the transparent hugepage core (v2.6.38), with
            # (tlb, vma, pmd, addr) on every kernel zaptrace reads (int before v6.x, bool since).
            # The PMD is cleared under its lock after this entry and before its mapcount drops:
            # the entry bounds the clear from below, so that the pairing rule of the pmd path
            # can take the first flush *after the clear*, wherever the kernel puts it (a flush
            # before folio_remove_rmap_pmd() closes the window).  Without it (older traces) the
            # decrement stands for the clear.
            _alt("zap_huge_pmd", ("tlb", "vma", "pmd", "addr"),
                 {"tlb": "tlb", "vma": "vma", "addr": "addr"},
                 "v2.6.38: transparent hugepages (mm/huge_memory.c); the clear of a PMD mapping"),
        ),
        required=False, roles=("tlb", "vma", "addr"),
        handlers=("zap_pmd", None),
    ),
    LogicalEvent(
        "zap_table", "ZAPTABLE", "a zap walks a PTE table (record --zap-entry inferred: where its bracket opens)",
        (
            # v4.13, 3ea277194daa "mm, mprotect: flush TLB if potentially racing with a
            # parallel reclaim leaving stale TLB entries": zap_pte_range() calls it once per
            # PTE table it walks, under the table's lock, before clearing anything; so do
            # mprotect, mremap and MADV_FREE/COLD walks, which the BPF side tells apart by
            # the call's return address (inside the zap bracket's function: the zap_p*_range
            # loops are inlined there).  A zap of an empty range, whose tables PT_RECLAIM
            # freed, never calls it.  Not the PTE table's lock (pte_offset_map_lock(), which
            # has the address): page faults call that, and a fault's BPF program preempted
            # on a CPU made the kernel skip 191 zap hits in 20 s (fdinfo recursion_misses,
            # 7.2, measured), leaving those zaps unbracketed.
            _alt("flush_tlb_batched_pending", ("mm",), {"mm": "mm"},
                 "v4.13: 3ea277194daa mm, mprotect: flush TLB if potentially racing with a parallel reclaim"),
        ),
        required=False, roles=("mm",),
        handlers=("zap_table", None),
    ),
    LogicalEvent(
        "rmap_pmd", "RMAPPMD", "mapcount decrement of a whole PMD mapping (zap_huge_pmd)",
        (
            # v6.8, b06dc281aa99 (above); a8e61d584eda "mm/huge_memory: page_remove_rmap() ->
            # folio_remove_rmap_pmd()".  Before v6.8 the PMD path is page_remove_rmap(page,
            # [vma,] compound=true), seen by the rmap event with ZT_F_COMPOUND.
            _alt("folio_remove_rmap_pmd", ("folio", "page", "vma"),
                 {"folio": "folio", "page": "page", "vma": "vma"},
                 "v6.8: b06dc281aa99 mm/rmap: introduce folio_remove_rmap_[pte|ptes|pmd]()"),
        ),
        required=False, roles=("folio", "page", "vma"),
        handlers=("rmap_pmd", None),
    ),
    LogicalEvent(
        "rmap_pud", "RMAPPUD", "mapcount decrement of a whole PUD mapping (zap_huge_pud)",
        (
            # 349994cf61e6 "mm/rmap: add support for PUD sized mappings to rmap" (v6.15,
            # the DAX folio series; release inferred, not checked against a tag).
            _alt("folio_remove_rmap_pud", ("folio", "page", "vma"),
                 {"folio": "folio", "page": "page", "vma": "vma"},
                 "v6.15: 349994cf61e6 mm/rmap: add support for PUD sized mappings to rmap"),
        ),
        required=False, roles=("folio", "page", "vma"),
        handlers=("rmap_pud", None),
    ),
    LogicalEvent(
        "pt_free", "PTFREE", "a PTE table freed by the zap (PT_RECLAIM: MADV_DONTNEED frees the tables it empties)",
        (
            # x86's free of a page-table page through the mmu_gather (arch/x86/mm/pgtable.c):
            # every PTE table a zap frees goes through it.  Since v6.14, 6375e95f381e "mm:
            # pgtable: reclaim empty PTE page in madvise(MADV_DONTNEED)" (CONFIG_PT_RECLAIM),
            # MADV_DONTNEED frees the tables it empties, and its direct path clears the PMD
            # before the zap's TLB flush: folio_mkclean()'s page-table walk then skips the
            # table without taking its lock (see analysis/gaps.py, PathRule.bypass).
            _alt("___pte_free_tlb", ("tlb", "pte"), {"tlb": "tlb", "pte": "pte"},
                 "x86 (arch/x86/mm/pgtable.c); freed by MADV_DONTNEED since v6.14: 6375e95f381e"),
        ),
        required=False, roles=("tlb", "pte"),
        handlers=("pt_free", None),
    ),
    LogicalEvent(
        "dirty", "DIRTY", "PTE-dirty marker: the zap marks a file page dirty because its PTE was dirty",
        (
            # v5.16, b5e84594caa0 "mm/writeback: Add folio_mark_dirty()"; zap_pte_range
            # calls it directly from v6.5 (folio conversion), through set_page_dirty() before.
            _alt("folio_mark_dirty", ("folio",), {"folio": "folio"},
                 "v5.16: b5e84594caa0 mm/writeback: Add folio_mark_dirty()"),
            _alt("set_page_dirty", ("page",), {"page": "page"},
                 "before v5.16 the zap calls set_page_dirty() (mm/page-writeback.c)"),
        ),
        roles=("folio", "page"),
        handlers=("dirty", None),
    ),
    LogicalEvent(
        "tlb_flush", "TLBFLUSH", "batch TLB flush and page freeing of an mmu_gather (tlb_flush_mmu)",
        (
            _alt("tlb_flush_mmu", ("tlb",), {"tlb": "tlb"},
                 "global since v4.10 (mm/mmu_gather.c since v5.0, 196d9d8bb7d1)"),
        ),
        ret=True, roles=("tlb",),
        handlers=("tlb_flush_enter", "tlb_flush_exit"),
    ),
    LogicalEvent(
        "flush_range", "FLUSHRANGE", "architecture TLB invalidation of an mm range (x86 flush_tlb_mm_range)",
        (
            # v4.19, 016c4d92cd16 "x86/mm/tlb: Add freed_tables argument to flush_tlb_mm_range"
            _alt("flush_tlb_mm_range", ("mm", "start", "end", "stride_shift", "freed_tables"),
                 {"mm": "mm", "start": "start", "end": "end"},
                 "x86, v4.19: 016c4d92cd16 x86/mm/tlb: Add freed_tables argument to flush_tlb_mm_range"),
        ),
        ret=True, required=False, roles=("mm", "start", "end"),
        handlers=("flush_range_enter", "flush_range_exit"),
    ),
    LogicalEvent(
        "flush_rmaps", "RMAPS", "delayed rmap removal after the flush (tlb_flush_rmaps)",
        (
            # v6.2, 5df397dec7c4 "mm: delay page_remove_rmap() until after the TLB has been flushed"
            _alt("tlb_flush_rmaps", ("tlb", "vma"), {"tlb": "tlb", "vma": "vma"},
                 "v6.2: 5df397dec7c4 mm: delay page_remove_rmap() until after the TLB has been flushed"),
        ),
        ret=True, required=False, roles=("tlb", "vma"),
        handlers=("rmaps_enter", "rmaps_exit"),
    ),
    LogicalEvent(
        "mkclean", "MKCLEAN", "writeback write-protects the page's mappings (folio_mkclean)",
        (
            # v5.16, d9c08e2232fb "mm/writeback: Add folio_mkclean()"; page_mkclean()
            # became an inline wrapper and then disappeared.
            _alt("folio_mkclean", ("folio",), {"folio": "folio"},
                 "v5.16: d9c08e2232fb mm/writeback: Add folio_mkclean()"),
            _alt("page_mkclean", ("page",), {"page": "page"},
                 "before v5.16: page_mkclean() in mm/rmap.c"),
        ),
        ret=True, roles=("folio", "page"),
        handlers=("mkclean_enter", "mkclean_exit"),
    ),
)


@dataclass(frozen=True)
class FieldFix:
    """A kernel struct member that moved: the BPF side is compiled for the shape BTF shows.

    When ``struct`` has ``member`` in the running kernel's BTF, ``-D<macro>=1``
    reaches the BPF program (probes/core_fixes.h holds the code for both shapes).
    """
    struct: str
    member: str
    macro: str
    why: str


FIELD_FIXES: Tuple[FieldFix, ...] = (
    # struct page's compound_head (tail pages: head | 1) became compound_info, which
    # with HugeTLB vmemmap optimisation holds a mask instead (Debian's 7.2 has both).
    FieldFix("page", "compound_info", "ZT_PAGE_COMPOUND_INFO",
             "v7.1: d50569612c29 mm: rename the 'compound_head' field in the 'struct page' to 'compound_info'; 8c846c879e22 (mask with HVO)"),
    # page->index became page->__folio_index (struct folio keeps "index" in the same place).
    FieldFix("page", "__folio_index", "ZT_PAGE_FOLIO_INDEX",
             "v6.16: acc53a0b4c15 mm: rename page->index to page->__folio_index"),
)


def field_flags(fields: Optional[Dict[str, Dict[str, int]]]) -> List[Tuple[FieldFix, bool]]:
    """Each FIELD_FIXES row with whether this kernel's BTF has the member (False without BTF)."""
    return [(f, bool(fields) and f.member in fields.get(f.struct, ())) for f in FIELD_FIXES]


#: Members whose byte offset the BPF program takes from BTF instead of from a header:
#: the headers that declare them (<linux/fs.h>) do not compile for the BPF target on
#: 7.2 (a static_assert on sizeof(struct filename) fails under clang -target bpf).
#: (struct, member, macro): -D<macro>=<offset> when BTF has it; the BPF side records
#: no file position without them.
FIELD_OFFSETS: Tuple[Tuple[str, str, str], ...] = (
    ("address_space", "host", "ZT_OFF_MAPPING_HOST"),
    ("inode", "i_ino", "ZT_OFF_INODE_INO"),
)


def offset_flags(fields: Optional[Dict[str, Dict[str, int]]]) -> List[str]:
    out = []
    for struct, member, macro in FIELD_OFFSETS:
        off = (fields or {}).get(struct, {}).get(member)
        if off is not None:
            out.append(f"-D{macro}={off}")
    return out


@dataclass
class Choice:
    """How one logical event is attached on this kernel (or why it is not)."""

    event: str
    symbol: Optional[str] = None           # the alternative's symbol
    attach: List[str] = field(default_factory=list)   # real symbols to probe (clones included)
    positions: Dict[str, int] = field(default_factory=dict)
    why: str = ""
    verified: str = ""                      # how the signature was confirmed
    tried: List[Tuple[str, str]] = field(default_factory=list)   # (symbol, reason it was not used)
    required: bool = True
    ret: bool = False
    entry: bool = True                      # the entry probe is attached (record --zap-entry inferred: not the zap's)
    trampoline: bool = False               # fentry/fexit (BPF trampoline) instead of kprobes
    nargs: int = 0                          # parameters of the function (fexit's return value follows)

    @property
    def mechanism(self) -> str:
        if not self.ok:
            return "-"
        if not self.entry and not self.ret:
            return "inferred (not attached)"
        return ("fentry" + ("/fexit" if self.ret else "")) if self.trampoline else \
            ("kprobe" + ("/kretprobe" if self.ret else ""))

    @property
    def ok(self) -> bool:
        return bool(self.attach)

    def to_json(self) -> dict:
        return asdict(self)


def symbols_of_interest() -> List[str]:
    return sorted({a.symbol for ev in CATALOG for a in ev.alternatives})


def resolve(syms: Symbols, btf: Optional[Dict[str, List[str]]], blacklist=None) -> List[Choice]:
    """Pick one alternative per logical event for the running kernel."""
    out: List[Choice] = []
    for ev in CATALOG:
        ch = Choice(ev.name, required=ev.required, ret=ev.ret)
        for alt in ev.alternatives:
            plain = syms.has(alt.symbol)
            clones = syms.clones_of(alt.symbol) if alt.clones else []
            if not plain and not clones:
                ch.tried.append((alt.symbol, "not in /proc/kallsyms (inlined by the compiler, renamed, or not built)"))
                continue
            targets = ([alt.symbol] if plain else []) + sorted(set(clones))
            if blacklist is not None:
                bad = [t for t in targets if t in blacklist]
                targets = [t for t in targets if t not in blacklist]
                if not targets:
                    ch.tried.append((alt.symbol, "on the kprobe blacklist (" + ", ".join(bad) + ")"))
                    continue
            positions = {r: alt.position(r) for r in ev.roles}
            if not plain:
                # Only clones: IPA-SRA may have dropped or reordered parameters.
                positions = {r: 0 for r in ev.roles}
                verified = "GCC clone: arguments not read (IPA-SRA may have changed them)"
            elif btf is None:
                verified = "unverified: no BTF; parameters as in the catalog"
            elif alt.symbol not in btf:
                verified = "unverified: function not described in BTF; parameters as in the catalog"
            else:
                have = tuple(btf[alt.symbol])
                if have != alt.params:
                    ch.tried.append((alt.symbol, "signature differs: BTF has (%s), this alternative expects (%s)"
                                     % (", ".join(have), ", ".join(alt.params))))
                    continue
                verified = "BTF: (%s)" % ", ".join(have)
            ch.symbol = alt.symbol
            ch.attach = targets
            ch.nargs = len(alt.params)
            ch.positions = positions
            ch.why = alt.why
            ch.verified = verified
            break
        out.append(ch)
    return out


def cflags(choices: List[Choice]) -> List[str]:
    """Compile-time constants that select and parameterise the BPF handlers."""
    flags = []
    for ev, ch in zip(CATALOG, choices):
        if not ch.ok:
            continue
        flags.append(f"-DZT_HAVE_{ev.macro}=1")
        flags.append(f"-DZT_{ev.macro}_TRAMP={1 if ch.trampoline else 0}")
        flags.append(f"-DZT_{ev.macro}_NARGS={ch.nargs}")
        for role in ev.roles:
            flags.append(f"-DZT_{ev.macro}_{role.upper()}={ch.positions.get(role, 0)}")
    return flags


def use_trampolines(choices: List[Choice], btf: Optional[Dict[str, List[str]]]) -> None:
    """Mark the events that can use BPF trampolines (fentry/fexit) on this kernel.

    A trampoline needs the function in BTF (so not a GCC clone); it is entered
    by a direct call instead of a kprobe's int3 exception.  (A kretprobe
    teardown that crashed Debian's 6.1 guest once, and a trampoline detach
    that wedged it, most likely both came from multi-threaded TCG: see
    vm/qemu.py.)
    """
    for ch in choices:
        if ch.ok and btf is not None and ch.attach == [ch.symbol] and ch.symbol in btf:
            ch.trampoline = True
            ch.nargs = len(btf[ch.symbol])


def event(name: str) -> LogicalEvent:
    for ev in CATALOG:
        if ev.name == name:
            return ev
    raise KeyError(name)
