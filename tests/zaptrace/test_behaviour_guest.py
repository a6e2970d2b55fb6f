"""The recorder under interruption, faults, loss and sudo, in a real 6.1 guest."""
import pytest

from zaptrace import analysis
from zaptrace.analysis import kernel_summary
from zaptrace import tracefile


def st(d, name):
    return int((d / f"{name}.status").read_text())


def out(d, name):
    return (d / f"{name}.out").read_text()


def one_error_line(d, name, *needles):
    o = out(d, name)
    assert "Traceback" not in o, o
    errs = [line for line in o.splitlines() if line.startswith("zaptrace: error:")]
    assert len(errs) == 1, o
    for n in needles:
        assert n in errs[0], errs[0]


@pytest.mark.parametrize("sig,code", [("INT", 130), ("TERM", 143)])
def test_interrupt_keeps_a_valid_trace_and_ends_the_workload(guest_kernel, guest_behaviour, sig, code):
    d = guest_behaviour
    assert st(d, f"sig{sig}") == code, out(d, f"sig{sig}")
    assert (d / f"sig{sig}.workload").read_text().strip() == "gone"
    raw = tracefile.read(str(d / f"sig{sig}.zt"))
    assert raw.end is not None and raw.problems == [] and len(raw.events) > 0
    assert raw.end["stop_reason"] == f"interrupted by SIG{sig}"


def test_sigkill_of_the_recorder_leaves_a_loadable_trace(guest_kernel, guest_behaviour):
    d = guest_behaviour
    assert st(d, "kill9") == 137
    t = analysis.load(str(d / "kill9.zt"))
    assert not t.finished and len(t.events) > 0
    assert any("did not finish" in p for p in t.problems)
    g = analysis.gap_table(t)
    assert len(g) > 0


@pytest.mark.parametrize("name,code,words", [("abort", 134, "SIGABRT"), ("killed", 137, "SIGKILL"),
                                             ("orphan", 5, "status 5")])
def test_the_workloads_status_is_reported_and_returned(guest_kernel, guest_behaviour, name, code, words):
    d = guest_behaviour
    assert st(d, name) == code, out(d, name)
    assert words in out(d, name)
    assert tracefile.read(str(d / f"{name}.zt")).end["exit_status"] == code


def test_children_outliving_the_command_are_named(guest_kernel, guest_behaviour):
    o = out(guest_behaviour, "orphan")
    assert "followed processes still run" in o


def test_under_sudo_the_workload_runs_as_the_invoking_user(guest_kernel, guest_behaviour):
    d = guest_behaviour
    assert st(d, "sudo") == 0, out(d, "sudo")
    assert (d / "sudo.uid").read_text().strip() == "1000"
    assert (d / "sudo.owner").read_text().strip() == "1000"


def test_follow_a_pid_and_system_wide(guest_kernel, guest_behaviour):
    d = guest_behaviour
    for name in ("follow", "all"):
        assert st(d, name) == 0, out(d, name)
        t = analysis.load(str(d / f"{name}.zt"))
        assert t.finished and t.event_counts()["rmap"] > 0
        assert "duration of 4 s reached" in out(d, name)
    follow = analysis.load(str(d / "follow.zt")).events
    everyone = analysis.load(str(d / "all.zt")).events
    assert follow["tgid"].nunique() <= 2 < everyone["tgid"].nunique() + 1


def test_forced_loss_is_counted_exactly(guest_kernel, guest_behaviour):
    d = guest_behaviour
    assert st(d, "loss") == 0, out(d, "loss")
    raw = tracefile.read(str(d / "loss.zt"))
    lost = raw.end["lost"]
    assert sum(lost.values()) > 0
    # Exact per kind, except for ring records the reader dropped as not zaptrace
    # records (zaptrace/ringbuf.py): those are counted, reported and warned about.
    corrupt = raw.end["ring_corrupt"]
    short = {k: g - raw.end["delivered"][k] - lost[k] for k, g in raw.end["generated"].items()}
    assert all(v >= 0 for v in short.values()) and sum(short.values()) == corrupt, (short, corrupt)
    assert corrupt <= 2, corrupt
    names = {v: int(c) for c, v in raw.head["kinds"].items()}
    for k in raw.end["generated"]:
        assert int((raw.events["kind"] == names[k]).sum()) == raw.end["delivered"][k], k
    assert len(raw.events) == sum(raw.end["delivered"].values())   # no record of an unknown kind
    assert "events lost" in out(d, "loss")
    assert ("were not zaptrace records" in out(d, "loss")) == (corrupt > 0)
    t = analysis.load(str(d / "loss.zt"))
    g = analysis.gap_table(t)
    assert g["loss_suspect"].any()


def test_summary_mode_agrees_with_the_events_of_the_same_run(guest_kernel, guest_behaviour):
    d = guest_behaviour
    assert st(d, "summary") == 0, out(d, "summary")
    t = analysis.load(str(d / "summary.zt"))
    assert t.lost_events == 0
    k = t.end["summary"]
    # What the kernel should have counted, from the events of the same run (analysis/kernel_summary.py;
    # tests/probes/test_summary_differential.py compares the two exactly on replayed traces).
    a = kernel_summary.from_gaps(analysis.gap_table(t))
    assert k["other_path"] == a["other_path"]
    for cls in ("anon", "file-clean", "file-dirty"):
        for path in ("immediate", "delayed"):
            kk, aa = k["classes"][cls]["paths"][path], a["classes"][cls]["paths"][path]
            for f in ("decrements", "paired", "open", "closed"):
                assert kk[f] == aa[f], (cls, path, f)
        # The kernel sees events in the order its programs ran, the analysis in timestamp
        # order; under TCG a vCPU can be descheduled between an event's timestamp and its
        # state update, so a mkclean near a window's edge can fall on either side. Seen:
        # file-clean 40 in the kernel vs 36 from the events (6.1, single-threaded TCG).
        hits_a = a["classes"][cls]["hits"]
        assert abs(k["classes"][cls]["hits"] - hits_a) <= max(8, hits_a // 10), (cls, hits_a)
    assert "gap (ns)" in out(d, "summary") and "distribution" in out(d, "summary")


def test_disk_full_stops_cleanly_and_keeps_what_was_written(guest_kernel, guest_behaviour):
    d = guest_behaviour
    assert st(d, "full") == 2, out(d, "full")
    one_error_line(d, "full", "No space left on device", "events written before")
    t = analysis.load(str(d / "full.zt"))
    assert len(t.events) > 0


@pytest.mark.parametrize("name,needles", [
    ("unwritable", ("/nonexistent/dir", "does not exist")),
    ("notroot", ("not root", "sudo")),
    ("noheaders", ("no kernel headers", "linux-headers-")),
    ("nobcc", ("python3-bpfcc",)),
])
def test_environment_faults_are_one_line(guest_kernel, guest_behaviour, name, needles):
    d = guest_behaviour
    assert st(d, name) == 2, out(d, name)
    one_error_line(d, name, *needles)
    assert not (d / f"{name}.zt").exists()


def test_doctor_without_bcc_says_what_to_install(guest_kernel, guest_behaviour):
    d = guest_behaviour
    assert st(d, "nobcc_doctor") == 1
    assert "python3-bpfcc" in out(d, "nobcc_doctor") and "Traceback" not in out(d, "nobcc_doctor")


def test_perf_buffer_fallback_records_the_same_events(guest_kernel, guest_behaviour):
    d = guest_behaviour
    assert st(d, "perfbuf") == 0, out(d, "perfbuf")
    raw = tracefile.read(str(d / "perfbuf.zt"))
    assert raw.head["buffer"]["kind"] == "perfbuf"
    assert sum(raw.end["lost"].values()) == 0
    assert raw.end["generated"] == raw.end["delivered"]
    t = analysis.load(str(d / "perfbuf.zt"))
    g = analysis.gap_table(t)
    fd = g[g["class"] == "file-dirty"]
    assert len(fd) > 1000 and (fd["gap_ns"] > 0).fillna(False).all()      # NA (unpaired) fails too
