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
