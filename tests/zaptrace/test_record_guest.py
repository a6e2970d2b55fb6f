"""Real recordings in the QEMU guest (BCC kprobes on a Debian kernel)."""
import json
import re

import numpy as np
import pytest

from zaptrace import analysis
from zaptrace import tracefile
from zaptrace.vm.build import DEFAULT_KERNELS

#: The kernels `zaptrace vm build` fetches (vm/labels.py), which CI builds.
KERNELS = list(DEFAULT_KERNELS)

#: Per kernel, the symbols its probes attach to (checked in the guest); a new
#: default kernel needs its row, seen in its guest (`zaptrace doctor` lists them).
EXPECTED_PROBES = {
    "5.10": {"zap": ["unmap_page_range"], "rmap": ["page_remove_rmap"], "rmap_pmd": [],  # compound page_remove_rmap()
             "mkclean": ["page_mkclean"], "dirty": ["set_page_dirty"], "flush_rmaps": []},
    "6.1": {"zap": ["unmap_page_range"], "rmap": ["page_remove_rmap"], "rmap_pmd": [],
            "mkclean": ["folio_mkclean"], "dirty": ["folio_mark_dirty"], "flush_rmaps": []},
    "6.12": {"zap": ["unmap_page_range"], "rmap": ["folio_remove_rmap_ptes"], "mkclean": ["folio_mkclean"],
             "dirty": ["folio_mark_dirty"], "flush_rmaps": ["tlb_flush_rmaps"],
             "rmap_pmd": ["folio_remove_rmap_pmd"]},
    "7.2": {"zap": ["__zap_vma_range"], "rmap": ["folio_remove_rmap_ptes"],
            "rmap_pmd": ["folio_remove_rmap_pmd"], "rmap_pud": ["folio_remove_rmap_pud"],
            "mkclean": ["folio_mkclean"], "dirty": ["folio_mark_dirty"], "flush_rmaps": ["tlb_flush_rmaps"]},
}


def status(d, step):
    return int((d / f"{step}.status").read_text())


def out(d, step):
    return (d / f"{step}.out").read_text()


def test_smoke_61_dontneed_shared_pages_match_and_nothing_is_lost(guest_kernel, guest_traces):
    """The issue's smoke test: 6.1, dontneed-shared, matching page pointers, zero loss."""
    d = guest_traces("6.1")
    assert status(d, "dontneed") == 0, out(d, "dontneed")
    t = analysis.load(str(d / "dontneed.zt"))
    assert t.finished and t.problems == [] and t.lost_events == 0
    ev = t.events
    rmap = ev[ev.kind == t.code("rmap")]
    mk = ev[ev.kind == t.code("mkclean_enter")]
    dirty = ev[ev.kind == t.code("dirty")]
    flushes = ev[ev.kind == t.code("flush_range_exit")]
    assert len(rmap) and len(mk) and len(dirty) and len(flushes)
    shared = set(rmap.page) & set(mk.folio) & set(dirty.folio)
    assert len(shared) >= 256, len(shared)        # the workload's 256 file pages
    # PFNs agree with the pointers (vmemmap_base read by the BPF side)
    base, size = t.meta["vmemmap_base"], t.meta["struct_page_size"]
    r = rmap.iloc[:100]
    assert (((r.page.to_numpy() - np.uint64(base)) // np.uint64(size)) == r.pfn.to_numpy()).all()
    # file pages carry their file position: one inode, offsets 0..255, the same on mkclean
    files = rmap[rmap.ino > 0]
    mine = files[files.ino == files.ino.mode()[0]]
    assert set(mine["index"]) == set(range(256)), sorted(set(mine["index"]))[:10]
    assert set(mk[mk.ino == mine.ino.iloc[0]]["index"]) <= set(range(256))
    assert (rmap.loc[(rmap["flags"] & t.flag("anon")) != 0, "ino"] == 0).all()
    # the summary printed by record matches the file
    summary = out(d, "dontneed")
    assert "command exited" in summary and f"{len(rmap):>10}" in summary


@pytest.mark.parametrize("guest_kernel", KERNELS, indirect=True)
def test_each_kernel_records_with_its_own_symbols(guest_kernel, guest_traces):
    d = guest_traces(guest_kernel)
    for step in ("dontneed", "race", "anon"):
        assert status(d, step) == 0, out(d, step)
    raw = tracefile.read(str(d / "dontneed.zt"))
    probes = {p["event"]: p["attach"] for p in raw.head["probes"]}
    assert guest_kernel in EXPECTED_PROBES, "no EXPECTED_PROBES row for kernel %s" % guest_kernel
    # on every kernel: the clear of a huge PMD and x86's page-table free through the mmu_gather
    expect = dict(EXPECTED_PROBES[guest_kernel], zap_pmd=["zap_huge_pmd"], pt_free=["___pte_free_tlb"])
    for event, syms in expect.items():
        assert probes[event] == syms, (event, probes[event])
    assert raw.head["kernel"]["release"] == (d / "uname.txt").read_text().strip()
    assert raw.end["lost"] and sum(raw.end["lost"].values()) == 0
    # delivered + lost == generated, per kind
    for k, g in raw.end["generated"].items():
        assert raw.end["delivered"][k] + raw.end["lost"][k] == g, k


@pytest.mark.parametrize("guest_kernel", KERNELS, indirect=True)
def test_any_binary_is_followed_and_its_status_returned(guest_kernel, guest_traces):
    d = guest_traces(guest_kernel)
    assert status(d, "binary") == 3, out(d, "binary")
    t = analysis.load(str(d / "binary.zt"))
    counts = t.event_counts()
    assert counts["zap_enter"] > 0 and counts["rmap"] > 0
    # head and cat were children of sh: the process tree was followed
    assert t.events.tgid.nunique() >= 3


@pytest.mark.parametrize("guest_kernel", ["6.1", "7.2"], indirect=True)
def test_doctor_in_the_guest_says_record_can_work(guest_kernel, guest_traces):
    d = guest_traces(guest_kernel)
    assert status(d, "doctor") == 0, out(d, "doctor")
    assert "verdict: zaptrace record can work" in out(d, "doctor")
    assert "#define ZT_HAVE_RMAP 1" in (d / "ebpf.c").read_text()


@pytest.mark.parametrize("guest_kernel", ["7.2"], indirect=True)
def test_a_wheel_built_from_the_tree_records_in_the_guest(guest_kernel, guest_traces):
    """tests/conftest.py unpacks the wheel in the guest, as pip would install it, and
    records with it alone (the checkout is not on its path; `import analysis` fails)."""
    d = guest_traces(guest_kernel)
    assert status(d, "wheel") == 0, out(d, "wheel")
    assert out(d, "wheel").splitlines()[0] == "/tmp/whl/zaptrace/__init__.py"
    t = analysis.load(str(d / "wheel.zt"))
    assert t.finished and t.lost_events == 0
    assert t.event_counts()["rmap"] >= 64 * 10


@pytest.mark.parametrize("guest_kernel", KERNELS, indirect=True)
def test_an_inferred_zap_return_agrees_with_the_probed_one(guest_kernel, guest_traces):
    """record --zap-return checked: the zap's return inferred from its return address on the
    stack (probes/zaptrace.bpf.c, zap_running()) against its probe, at every event of a task
    that zapped; --zap-return inferred: one exit per written zap, flagged as inferred."""
    d = guest_traces(guest_kernel)
    if guest_kernel == "5.10":        # BPF trampolines without bpf_get_func_ip (v5.15)
        assert status(d, "zapcheck") != 0 and "add --kprobes" in out(d, "zapcheck"), out(d, "zapcheck")
        return
    assert status(d, "zapcheck") == 0, out(d, "zapcheck")
    m = re.search(r"zap returns probed and inferred: (\d+) of (\d+) inferences disagreed", out(d, "zapcheck"))
    assert m and int(m.group(1)) == 0 and int(m.group(2)) >= 1000, out(d, "zapcheck")
    assert status(d, "zapinfer") == 0, out(d, "zapinfer")
    t = analysis.load(str(d / "zapinfer.zt"))
    assert t.finished and t.lost_events == 0 and t.head["zap_return"] == "inferred"
    ev = t.events
    enter, exit_ = ev[ev.kind == t.code("zap_enter")], ev[ev.kind == t.code("zap_exit")]
    assert len(enter) >= 50 and len(exit_) == len(enter)
    assert ((exit_["flags"].to_numpy() & t.flag("inferred")) != 0).all()
    g = analysis.gap_table(t)
    assert g["zap_ts"].notna().sum() >= 1000
    # attached as a plain recording attaches it (a refused trampoline falls back to kprobes)
    mech = {f: [p["trampoline"] for p in analysis.load(str(d / f)).head["probes"] if p["event"] == "zap"]
            for f in ("race.zt", "zapcheck.zt")}
    assert [p["trampoline"] for p in t.head["probes"] if p["event"] == "zap"] == mech["race.zt"] == mech["zapcheck.zt"]


@pytest.mark.parametrize("guest_kernel", KERNELS, indirect=True)
def test_an_inferred_zap_bracket_agrees_with_the_probed_one(guest_kernel, guest_traces):
    """record --zap-entry inferred: the zap bracket opened at the zap's first PTE table
    (flush_tlb_batched_pending called from the bracket's function) and closed by inference
    (probes/zaptrace.bpf.c, zap_open_lazy()).  checked: every event of a task placed inside or
    outside its zap as both probes place it (but 1 in 10,000), and no zap's bracket split in two (joins of
    consecutive zaps are the documented limit); inferred: the zap's entry probe not attached,
    one inferred exit per written zap, and the gap table's decrements inside zaps."""
    d = guest_traces(guest_kernel)
    if guest_kernel == "5.10":        # BPF trampolines without bpf_get_func_ip (v5.15)
        assert status(d, "lazycheck") != 0 and "add --kprobes" in out(d, "lazycheck"), out(d, "lazycheck")
        return
    assert status(d, "lazycheck") == 0, out(d, "lazycheck")
    # at most 1 in 10,000 events placed otherwise than the probes place them (6.1, 2026-12-07:
    # 2 of 77,091 once, 0 in other runs; a stale return address below a slot that a local
    # overwrote reads as the zap still running: docs/measure.md)
    m = re.search(r"zap brackets probed and inferred: (\d+) of (\d+) inferences disagreed", out(d, "lazycheck"))
    assert m and int(m.group(1)) * 10_000 <= int(m.group(2)) and int(m.group(2)) >= 1000, out(d, "lazycheck")
    m = re.search(r"(\d+) of (\d+) openers inside a zap joined .*, (\d+) split", out(d, "lazycheck"))
    assert m and int(m.group(2)) >= 50 and int(m.group(3)) == 0, out(d, "lazycheck")
    assert status(d, "lazyinfer") == 0, out(d, "lazyinfer")
    t = analysis.load(str(d / "lazyinfer.zt"))
    assert t.finished and t.lost_events == 0 and t.head["zap_entry"] == "inferred"
    zap = next(p for p in t.head["probes"] if p["event"] == "zap")
    assert not zap["entry"] and not zap["ret"]
    assert any(p["event"] == "zap_table" and p["attach"] for p in t.head["probes"])
    ev = t.events
    enter, exit_ = ev[ev.kind == t.code("zap_enter")], ev[ev.kind == t.code("zap_exit")]
    assert len(enter) >= 5 and len(exit_) == len(enter)
    assert ((enter["flags"].to_numpy() & t.flag("inferred")) != 0).all()
    assert ((exit_["flags"].to_numpy() & t.flag("inferred")) != 0).all()
    g = analysis.gap_table(t)
    assert g["zap_ts"].notna().sum() >= 1000
