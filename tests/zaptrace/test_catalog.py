"""Probe catalog resolution against synthetic kernels (symbols + BTF)."""
from zaptrace import catalog
from zaptrace.kernel import Symbols

BASE = {"unmap_page_range", "tlb_flush_mmu", "flush_tlb_mm_range", "register_kprobe"}


def syms(*names, clones=None):
    s = Symbols(text=set(BASE) | set(names))
    s.clones = clones or {}
    return s


def pick(choices, event):
    return next(c for c in choices if c.event == event)


BTF_510 = {"page_remove_rmap": ["page", "compound"], "set_page_dirty": ["page"], "page_mkclean": ["page"],
           "unmap_page_range": ["tlb", "vma", "addr", "end", "details"], "tlb_flush_mmu": ["tlb"],
           "flush_tlb_mm_range": ["mm", "start", "end", "stride_shift", "freed_tables"]}
BTF_61 = dict(BTF_510, page_remove_rmap=["page", "vma", "compound"], folio_mark_dirty=["folio"],
              folio_mkclean=["folio"])
BTF_612 = dict(BTF_61, folio_remove_rmap_ptes=["folio", "page", "nr_pages", "vma"], tlb_flush_rmaps=["tlb", "vma"])


def test_510_uses_the_two_argument_page_remove_rmap():
    ch = catalog.resolve(syms("page_remove_rmap", "set_page_dirty", "page_mkclean"), BTF_510)
    r = pick(ch, "rmap")
    assert r.attach == ["page_remove_rmap"] and r.positions == {"folio": 0, "page": 1, "nr": 0, "compound": 2, "vma": 0}
    assert any("signature differs" in why for _, why in r.tried)          # the 5.18+ form was refused
    assert pick(ch, "dirty").attach == ["set_page_dirty"]
    assert pick(ch, "mkclean").attach == ["page_mkclean"]
    assert not pick(ch, "flush_rmaps").ok and not pick(ch, "flush_rmaps").required


def test_61_uses_the_vma_form_and_folio_functions():
    ch = catalog.resolve(syms("page_remove_rmap", "set_page_dirty", "folio_mark_dirty", "folio_mkclean"), BTF_61)
    assert pick(ch, "rmap").positions["compound"] == 3 and pick(ch, "rmap").positions["vma"] == 2
    assert pick(ch, "dirty").attach == ["folio_mark_dirty"]
    assert pick(ch, "mkclean").attach == ["folio_mkclean"]
    flags = catalog.cflags(ch)
    assert "-DZT_HAVE_RMAP=1" in flags and "-DZT_RMAP_COMPOUND=3" in flags and "-DZT_HAVE_RMAPS=1" not in flags


def test_612_uses_folio_remove_rmap_ptes_and_tlb_flush_rmaps():
    ch = catalog.resolve(syms("folio_remove_rmap_ptes", "folio_mark_dirty", "folio_mkclean", "tlb_flush_rmaps"), BTF_612)
    r = pick(ch, "rmap")
    assert r.attach == ["folio_remove_rmap_ptes"] and r.positions["nr"] == 3 and r.positions["folio"] == 1
    assert pick(ch, "flush_rmaps").ok and "5df397dec7c4" in pick(ch, "flush_rmaps").why


def test_zap_pte_range_preferred_and_clones_read_no_arguments():
    ch = catalog.resolve(syms("zap_pte_range"), {"zap_pte_range": ["tlb", "vma", "pmd", "addr", "end", "details"]})
    z = pick(ch, "zap")
    assert z.attach == ["zap_pte_range"] and z.positions["start"] == 4
    ch = catalog.resolve(syms(clones={"zap_pte_range": ["zap_pte_range.isra.0"]}), None)
    z = pick(ch, "zap")
    assert z.attach == ["zap_pte_range.isra.0"] and set(z.positions.values()) == {0}
    assert "clone" in z.verified


def test_missing_required_event_names_every_symbol_tried():
    ch = catalog.resolve(syms(), BTF_61)
    r = pick(ch, "rmap")
    assert not r.ok and r.required
    assert [s for s, _ in r.tried] == ["folio_remove_rmap_ptes", "page_remove_rmap", "page_remove_rmap"]


def test_blacklisted_symbols_are_not_used():
    ch = catalog.resolve(syms("page_remove_rmap"), BTF_510, blacklist={"page_remove_rmap"})
    assert not pick(ch, "rmap").ok
    assert "blacklist" in pick(ch, "rmap").tried[-1][1]


def test_without_btf_the_catalog_order_decides_and_says_so():
    ch = catalog.resolve(syms("page_remove_rmap"), None)
    r = pick(ch, "rmap")
    assert r.ok and "unverified" in r.verified


def test_a_kernel_missing_a_required_event_cannot_record_and_says_why():
    from zaptrace import kernel, plan
    syms = syms_ = Symbols(text=set(BASE) | {"folio_mark_dirty", "folio_mkclean"})
    choices = catalog.resolve(syms_, BTF_61)
    checks = [kernel.Check("kprobes", True, "ok")]
    p = plan.Plan(release="test", symbols=syms, checks=checks, choices=choices, ringbuf=True,
                  ringbuf_pages=4096, btf=True)
    try:
        plan.require_recordable(p)
    except plan.PlanError as e:
        msg = str(e)
    else:
        raise AssertionError("recordable without an rmap probe")
    assert "logical event 'rmap'" in msg and "page_remove_rmap" in msg and "folio_remove_rmap_ptes" in msg
    assert "\n" not in msg


# 7.2 (Debian sid, measured): no unmap_page_range; __zap_vma_range brackets the zap,
# folio_remove_rmap_pmd/pud remove whole PMD/PUD mappings.
BTF_72 = {k: v for k, v in BTF_612.items() if k != "unmap_page_range"}
BTF_72.update(__zap_vma_range=["tlb", "vma", "start", "end", "details"],
              folio_remove_rmap_pmd=["folio", "page", "vma"], folio_remove_rmap_pud=["folio", "page", "vma"])


def test_72_zaps_through___zap_vma_range_and_records_pmd_and_pud_removals():
    s = Symbols(text=(set(BASE) - {"unmap_page_range"}) | set(BTF_72))
    ch = catalog.resolve(s, BTF_72)
    z = pick(ch, "zap")
    assert z.attach == ["__zap_vma_range"] and z.positions == {"tlb": 1, "vma": 2, "start": 3, "end": 4}
    assert "3a31d08d242a" in z.why
    assert [sym for sym, _ in z.tried] == ["zap_pte_range", "unmap_page_range"]
    pmd, pud = pick(ch, "rmap_pmd"), pick(ch, "rmap_pud")
    assert pmd.attach == ["folio_remove_rmap_pmd"] and pmd.positions == {"folio": 1, "page": 2, "vma": 3}
    assert pud.attach == ["folio_remove_rmap_pud"] and not pud.required
    flags = catalog.cflags(ch)
    assert "-DZT_HAVE_RMAPPMD=1" in flags and "-DZT_RMAPPMD_FOLIO=1" in flags and "-DZT_HAVE_RMAPPUD=1" in flags


def test_pmd_events_are_optional_on_older_kernels():
    ch = catalog.resolve(syms("page_remove_rmap", "folio_mark_dirty", "folio_mkclean"), BTF_61)
    assert not pick(ch, "rmap_pmd").ok and not pick(ch, "rmap_pmd").required
    assert "-DZT_HAVE_RMAPPMD=1" not in catalog.cflags(ch)


def test_field_fixes_follow_btf():
    new = catalog.field_flags({"page": {"flags", "compound_info", "mapping"}})
    old = catalog.field_flags({"page": {"flags", "compound_head", "mapping"}})
    assert [(f.macro, present) for f, present in new] == [("ZT_PAGE_COMPOUND_INFO", True), ("ZT_PAGE_FOLIO_INDEX", False)]
    assert [present for _, present in old] == [False, False]
    assert [present for _, present in catalog.field_flags(None)] == [False, False]
    assert all(f.why.startswith("v") and len(f.why.split(":")[1].split()[0]) == 12 for f in catalog.FIELD_FIXES)


def test_btf_scan_finds_members_of_anonymous_unions(tmp_path):
    """A hand-made BTF blob: struct page { union { struct { long compound_info; }; }; long flags; }."""
    import struct as st
    from zaptrace.kernel import btf_scan
    strings = b"\0page\0flags\0compound_info\0long\0f\0"
    off = {n: strings.index(n.encode() + b"\0") for n in ("page", "flags", "compound_info", "long")}
    types = b""
    types += st.pack("<III", off["long"], 1 << 24, 8) + st.pack("<I", 64)            # 1: INT long
    types += st.pack("<III", 0, (4 << 24) | 1, 8) + st.pack("<III", off["compound_info"], 1, 0)  # 2: anon struct
    types += st.pack("<III", 0, (5 << 24) | 1, 8) + st.pack("<III", 0, 2, 0)          # 3: anon union
    types += st.pack("<III", off["page"], (4 << 24) | 2, 16) + st.pack("<III", 0, 3, 0) \
        + st.pack("<III", off["flags"], 1, 64)                                         # 4: struct page
    hdr = st.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    p = tmp_path / "vmlinux"
    p.write_bytes(hdr + types + strings)
    funcs, fields = btf_scan([], ["page"], str(p))
    assert funcs == {} and fields == {"page": {"compound_info": 0, "flags": 8}}   # byte offsets


def test_file_position_offsets_come_from_btf():
    fields = {"address_space": {"host": 0, "i_pages": 8}, "inode": {"i_mode": 0, "i_ino": 64}}
    assert catalog.offset_flags(fields) == ["-DZT_OFF_MAPPING_HOST=0", "-DZT_OFF_INODE_INO=64"]
    assert catalog.offset_flags({"inode": {"i_ino": 64}}) == ["-DZT_OFF_INODE_INO=64"]
    assert catalog.offset_flags(None) == []


def _lazy_plan(zap_entry, zap_return, ranges=None, trampolines=True):
    from zaptrace import plan
    btf = dict(BTF_72, flush_tlb_batched_pending=["mm"])
    s = Symbols(text=(set(BASE) - {"unmap_page_range"}) | set(btf) | {"bpf_get_func_ip_tracing"})
    ch = catalog.resolve(s, btf)
    if trampolines:
        catalog.use_trampolines(ch, btf)
    if ranges is None:
        ranges = {"__zap_vma_range": (0xffffffff81566800, 0xffffffff815684f0),
                  "arch_rethook_trampoline": (0xffffffff81100000, 0xffffffff81100040)}
    flags = plan.zap_return_flags(ch, s, zap_return, False, zap_entry, text_ranges=lambda names: ranges)
    return ch, flags


def test_an_inferred_zap_entry_attaches_the_opener_and_not_the_zap():
    ch, flags = _lazy_plan("inferred", "inferred")
    z, table = pick(ch, "zap"), pick(ch, "zap_table")
    assert not z.entry and not z.ret and z.mechanism == "inferred (not attached)"
    assert table.attach == ["flush_tlb_batched_pending"] and "3ea277194daa" in table.why
    assert flags == ["-DZT_ZAP_INFER=1", "-DZT_ZAP_LAZY=1", "-DZT_ZAP_LO=0xffffffff81566800ULL",
                     "-DZT_ZAP_HI=0xffffffff815684f0ULL", "-DZT_KRET_TRAMP=0xffffffff81100000ULL"]
    # checked: both zap probes stay, the same inference runs beside them
    ch, flags = _lazy_plan("inferred", "checked")
    assert pick(ch, "zap").entry and pick(ch, "zap").ret and "-DZT_ZAP_INFER=2" in flags


def test_the_opener_is_attached_only_with_an_inferred_zap_entry():
    from zaptrace import plan
    for ret in ("probed", "inferred"):
        ch, flags = _lazy_plan("probed", ret)
        table = pick(ch, "zap_table")
        assert not table.ok and table.tried[-1] == ("flush_tlb_batched_pending", "attached only with --zap-entry inferred")
        assert not any("LAZY" in f for f in flags)
    import pytest
    with pytest.raises(plan.PlanError, match="--zap-entry inferred needs --zap-return inferred"):
        _lazy_plan("inferred", "probed")
    with pytest.raises(plan.PlanError, match="--zap-entry is one of probed, inferred, not 'maybe'"):
        _lazy_plan("maybe", "inferred")
    with pytest.raises(plan.PlanError, match="address range of __zap_vma_range .*kptr_restrict"):
        _lazy_plan("inferred", "inferred", ranges={})
