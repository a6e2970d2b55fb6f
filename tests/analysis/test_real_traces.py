"""The gap rules on traces recorded in the 5.10, 6.1, 6.12 and 7.2 guests.

What the kernels do (../shared/notes, and mm/memory.c): 5.10 and 6.1 drop
the mapcount of every page before the batch's TLB flush; 6.2+ (here 6.12,
7.2) delays the rmap removal of dirty file pages until after the flush
(tlb_flush_rmaps), while anon and clean file pages stay immediate.  The PMD
path (zap_huge_pmd) is never delayed: a whole PMD mapping loses its mapcount
before the flush on every kernel; ext4 file folios are PMD-mapped only on
kernels with ext4 large folios (6.16+, here 7.2).
"""
import json

import pytest

from zaptrace import analysis
from zaptrace.analysis import gaps as G
from zaptrace.vm.build import DEFAULT_KERNELS
from zaptrace.vm.labels import version
from tests.analysis.reportdata import zt

#: The kernels `zaptrace vm build` fetches (vm/labels.py), which CI builds.
KERNELS = list(DEFAULT_KERNELS)
#: Upstream 6.2 delays the rmap removal of dirty file pages (Debian's 6.1 does not have it).
DELAYED_RMAP = (6, 2)
#: ext4 large folios (6.16+): a MAP_SHARED ext4 file can be PMD-mapped.
EXT4_LARGE_FOLIOS = (6, 16)


def empty_zap_brackets(t) -> int:
    """Written zap brackets with no other event of the task between ZAP_ENTER and ZAP_EXIT."""
    e = t.events.sort_values(["tid", "ts", "seq"], kind="stable")
    kind, tid = e["kind"].to_numpy(), e["tid"].to_numpy()
    return int(((kind[:-1] == t.code("zap_enter")) & (kind[1:] == t.code("zap_exit"))
                & (tid[:-1] == tid[1:])).sum())


def zap_rows(d, name):
    t = analysis.load(str(d / f"{name}.zt"))
    g = analysis.gap_table(t)
    return t, g[g["path"] != "other-path"]


@pytest.mark.parametrize("guest_kernel", KERNELS, indirect=True)
@pytest.mark.parametrize("workload", ["dontneed", "race"])
def test_dirty_file_pages_open_before_62_and_closed_after(guest_kernel, guest_traces, workload):
    t, g = zap_rows(guest_traces(guest_kernel), workload)
    assert t.lost_events == 0
    fd = g[g["class"] == "file-dirty"]
    assert len(fd) >= 256 * 10
    assert fd["paired"].all(), fd["unpaired_reason"].value_counts()
    if version(guest_kernel) < DELAYED_RMAP:
        assert (fd["path"] == "immediate").all()
        assert (fd["gap_ns"] > 0).all()
    else:
        assert (fd["path"] == "delayed").all()
        assert (fd["gap_ns"] <= 0).all()
    for cls in ("anon", "file-clean"):
        # PTE-mapped ones are immediate; THPs (e.g. the Python heap at exit) go by PMD
        paths = set(g.loc[g["class"] == cls, "path"].astype(str))
        assert paths <= {"immediate", "pmd"} and "immediate" in paths, (cls, paths)
    assert (g.loc[g["path"] == "pmd", "gap_ns"] > 0).fillna(False).all()     # NA (unpaired) fails too


@pytest.mark.parametrize("guest_kernel", KERNELS, indirect=True)
def test_munmap_anon_is_all_anon_and_immediate(guest_kernel, guest_traces):
    t, g = zap_rows(guest_traces(guest_kernel), "anon")
    mine = g[g["tgid"].isin(t.events.loc[t.events["kind"] == t.code("zap_enter"), "tgid"])]
    anon = mine[mine["class"] == "anon"]
    assert (anon["path"] == "immediate").sum() >= 256 * 40
    # the 1 MiB mappings are PTE-mapped; only THPs (the interpreter's heap at exit) go by PMD
    assert set(anon["path"].astype(str)) <= {"immediate", "pmd"} and anon["paired"].all()


@pytest.mark.parametrize("guest_kernel", ["6.1", "6.12", "7.2"], indirect=True)
def test_race_window_hits_on_61_and_none_on_612(guest_kernel, guest_traces):
    t, g = zap_rows(guest_traces(guest_kernel), "race")
    fd = g[g["class"] == "file-dirty"]
    hits = G.hit_table(t, g)
    if guest_kernel == "6.1":
        assert fd["hits"].sum() > 0
        h = hits[hits["class"] == "file-dirty"]
        assert len(h) > 0
        # every listed hit really overlaps its open window, on the same folio
        # (an unknown return, NA, fails as it did as NaN)
        assert ((h["mkclean_enter_ts"] < h["flush_done_ts"]) & (h["mkclean_exit_ts"] > h["dec_ts"])).fillna(False).all()
        assert (h["gap_ns"] > 0).all()
    else:
        assert fd["hits"].sum() == 0
        assert len(hits[hits["class"] == "file-dirty"]) == 0


def test_report_json_html_export_and_compare_on_real_traces(guest_kernel, guest_traces, tmp_path):
    d61, d612, d510 = guest_traces("6.1"), guest_traces("6.12"), guest_traces("5.10")
    p = zt("report", d61 / "race.zt")
    assert p.returncode == 0, p.stderr
    assert "file-dirty" in p.stdout and "window hits" in p.stdout
    p = zt("report", "--json", d612 / "race.zt")
    s = json.loads(p.stdout)
    fd = s["classes"]["file-dirty"]
    assert s["kernel"].startswith("6.12") and fd["delayed"] == fd["decrements"] > 0
    assert fd["open"] == 0 and fd["gap_ns"]["max"] <= 0 and s["lost_events"] == 0
    html = tmp_path / "r.html"
    p = zt("report", "--html", html, d61 / "race.zt")
    assert p.returncode == 0 and "data:image/png;base64," in html.read_text() and "http" not in html.read_text().split("<body")[0].lower().replace("http-equiv", "")
    out = tmp_path / "p.json"
    p = zt("export", d61 / "dontneed.zt", "--perfetto", out, "--csv", tmp_path / "g.csv")
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["traceEvents"]
    p = zt("compare", "--json", d510 / "race.zt", d61 / "race.zt", d612 / "race.zt")
    assert p.returncode == 0, p.stderr
    cmp = {t["kernel"][:4]: t["classes"]["file-dirty"] for t in json.loads(p.stdout)["traces"]}
    assert cmp["5.10"]["open_share"] == 1.0 and cmp["6.1."]["open_share"] == 1.0
    assert cmp["6.12"]["open_share"] == 0.0 and cmp["6.12"]["delayed_share"] == 1.0
    text = zt("compare", d510 / "race.zt", d61 / "race.zt", d612 / "race.zt").stdout
    assert "6.12" in text and "5.10" in text and "closed" in text and "open" in text


@pytest.mark.parametrize("guest_kernel", KERNELS, indirect=True)
def test_pmd_mappings_lose_their_mapcount_before_the_flush(guest_kernel, guest_traces):
    d = guest_traces(guest_kernel)
    assert int((d / "pmd.status").read_text()) == 0, (d / "pmd.out").read_text()
    t, g = zap_rows(d, "pmd")
    assert t.lost_events == 0
    pmd = g[g["path"] == "pmd"]
    # anonymous THPs (MADV_HUGEPAGE on a 2 MiB-aligned mapping) on every kernel
    assert (pmd["class"] == "anon").sum() >= 20, g.groupby(["class", "path"], observed=True).size()
    # one row per PMD mapping, paired with the next flush, always before it (never delayed)
    assert (pmd["nr_in_call"] == 512).all() and pmd["paired"].all() and (pmd["gap_ns"] > 0).all()
    file_pmd = pmd[pmd["class"] != "anon"]
    if version(guest_kernel) >= EXT4_LARGE_FOLIOS:
        # ext4 large folios (6.16+): the dirty shared file is PMD-mapped, its mapcount dropped
        # before the flush, and writeback's folio_mkclean lands inside those windows.
        fd = file_pmd[file_pmd["class"] == "file-dirty"]
        assert len(fd) >= 50 and fd["open"].all()
        assert fd["hits"].sum() > 0
        h = G.hit_table(t, fd)
        assert len(h) == fd["hits"].sum() and (h["path"] == "pmd").all()
        assert ((h["mkclean_enter_ts"] < h["flush_done_ts"]) & (h["mkclean_exit_ts"] > h["dec_ts"])).fillna(False).all()
    else:
        assert len(file_pmd) == 0            # no ext4 large folios before 6.16


def test_72_report_and_compare_say_pte_closed_and_pmd_open(guest_kernel, guest_traces):
    d72 = guest_traces("7.2")
    s = json.loads(zt("report", "--json", d72 / "pmd.zt").stdout)
    fd = s["classes"]["file-dirty"]
    assert fd["by_path"]["pmd"]["open"] == fd["by_path"]["pmd"]["decrements"] > 0
    assert fd["by_path"]["pmd"]["pages_per_call"] == {"min": 512, "p50": 512, "max": 512}
    text = zt("report", d72 / "pmd.zt").stdout
    verdict = text.split("Verdict: ", 1)[1].split("\n\n", 1)[0]
    assert "open on the PMD path" in verdict.splitlines()[0]
    assert any(l.strip().startswith("PMD path: mapcount dropped before the flush") for l in verdict.splitlines())
    cmp = zt("compare", d72 / "race.zt", d72 / "pmd.zt").stdout
    last = cmp.strip().splitlines()[-1]
    assert last.startswith("dirty file pages, window: ") and ": closed;" in last and "pmd open" in last


@pytest.mark.parametrize("guest_kernel", KERNELS, indirect=True)
def test_lostwrite_under_zaptrace_joins_every_loss_and_612_loses_none(guest_kernel, guest_traces, tmp_path):
    d = guest_traces(guest_kernel)
    status = int((d / "lostwrite.status").read_text())
    doc = json.loads((d / "lostwrite.json").read_text())
    assert status == (1 if doc["lost"] else 0), (d / "lostwrite.out").read_text()
    # a meaningful run, not a rate (the C engine, multi-threaded TCG, traced: about 570 page
    # visits and 7,500 zaps per second on 6.1; single-threaded TCG is slower)
    assert doc["visits"] > 200 and doc["zaps"] > 200, doc
    if guest_kernel == "6.12":
        assert doc["lost"] == []          # the delayed rmap closes the PTE window; nothing is PMD-mapped
    # The zappers mostly zap an empty range: those zaps are counted, not written (h_zap_enter),
    # and every zap that is written holds an event of its task.
    t = analysis.load(str(d / "lostwrite.zt"))
    assert t.zaps_not_written > 0
    assert empty_zap_brackets(t) == 0
    p = zt("report", "--json", "--findings", d / "lostwrite.json", d / "lostwrite.zt")
    assert p.returncode == 0, p.stderr
    lw = json.loads(p.stdout)["lost_writes"]
    assert lw["lost_writes"] == len(doc["lost"]) == lw["explained"] + lw["unexplained"]
    if guest_kernel == "6.12":
        assert json.loads(p.stdout)["classes"]["file-dirty"]["hits"] == 0
