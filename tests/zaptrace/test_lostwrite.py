"""The lost-write detector on the host (no BPF): its positive path is made deterministic by
putting back an old copy of a page behind the writer's back (--inject-loss)."""
import json
import subprocess
import sys

import pytest

ZT = [sys.executable, "-m", "zaptrace"]


def run(tmp_path, *args):
    return subprocess.run(ZT + ["workload", "run", "lostwrite", "--dir", str(tmp_path)] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)


def test_an_injected_loss_is_found_reported_and_sets_the_exit_status(tmp_path):
    out = tmp_path / "lost.json"
    r = run(tmp_path, "--pages", "16", "--iterations", "50", "--burst", "1", "--inject-loss", "5@20", "--findings", str(out))
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "LOST WRITE" in ln]
    assert len(lines) == 1 and "page 5 (offset 0x5000): expected 19, found 18" in lines[0]
    assert "CLOCK_MONOTONIC" in lines[0]
    assert "lostwrite: 1 lost writes in 50 passes over 16 shared file pages" in r.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "zaptrace.lostwrite/1" and doc["pages"] == 16 and doc["passes"] == 50
    (lost,) = doc["lost"]
    assert (lost["page"], lost["offset"], lost["expected"], lost["found"]) == (5, 5 * 4096, 19, 18)
    w0, w1 = lost["written_ns"]
    assert 0 < doc["start_ns"] < w0 <= w1 < lost["found_ns"]   # after the start; written in pass 19, found in pass 20
    assert doc["ino"] > 0 and doc["clock"] == "CLOCK_MONOTONIC" and doc["injected"] == [5, 20]


def test_without_eviction_and_with_two_zappers(tmp_path):
    r = run(tmp_path, "--pages", "8", "--iterations", "30", "--inject-loss", "0@2", "--no-evict", "--zappers", "2")
    assert r.returncode == 1, r.stderr
    # the default burst: 16 stores per visit, so pass 1 left 16 and the injected copy holds 15
    assert "expected 16, found 15" in r.stderr and "2 zapper(s), writeback without eviction" in r.stderr
    assert list(tmp_path.iterdir()) == []              # the file is removed


@pytest.mark.parametrize("args, message", [
    (["--inject-loss", "x"], "--inject-loss expects PAGE@PASS"),
    (["--inject-loss", "99@5", "--pages", "4"], "beyond the file's 4 pages"),
    (["--inject-loss", "1@1"], "PASS >= 2"),
    (["--zappers", "-1"], "--zappers must not be negative"),
])
def test_bad_settings_are_one_line_errors(tmp_path, args, message):
    r = run(tmp_path, "--iterations", "1", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _lostwrite_in_its_own_group(tmp_path, out, sigint):
    import signal
    # A terminal's foreground job has SIGINT at its default; a job started with `&` by a shell
    # without job control (nohup, CI launchers) inherits it ignored.  Set it explicitly, so the
    # test does not depend on how pytest itself was started.
    return subprocess.Popen(ZT + ["workload", "run", "lostwrite", "--dir", str(tmp_path), "--pages", "8",
                                  "--duration", "60", "--findings", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def test_ctrl_c_ends_the_run_and_still_writes_the_findings(tmp_path):
    import os
    import signal
    import time
    out = tmp_path / "lost.json"
    p = _lostwrite_in_its_own_group(tmp_path, out, signal.SIG_DFL)
    _engine_of(p)
    time.sleep(1)
    os.killpg(p.pid, signal.SIGINT)                    # what a terminal's Ctrl-C does
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "lostwrite: interrupted: 0 lost writes in" in err and "Traceback" not in err
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True and doc["lost"] == [] and doc["visits"] > 0
    assert list(tmp_path.iterdir()) == [out]           # the file is removed, the findings kept


def test_an_ignored_sigint_is_ignored_by_the_engine_too_and_sigterm_ends_the_run(tmp_path):
    import os
    import signal
    import time
    out = tmp_path / "lost.json"
    p = _lostwrite_in_its_own_group(tmp_path, out, signal.SIG_IGN)
    engine = _engine_of(p)                             # the C engine, once it runs (not a fixed sleep)
    os.killpg(p.pid, signal.SIGINT)                    # ignored by Python: the engine must go on as well
    time.sleep(1)
    assert p.poll() is None, p.communicate()[1]
    assert os.path.exists(f"/proc/{engine}"), "the engine ended on the ignored SIGINT"
    os.killpg(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "lostwrite: interrupted: 0 lost writes in" in err and "Traceback" not in err
    doc = json.loads(out.read_text())
    # the engine ran from before the SIGINT to the SIGTERM, at least 1 s later
    assert doc["interrupted"] is True and doc["visits"] > 0 and doc["duration_s"] >= 1.0


def _engine_of(p, limit=60.0):
    """pid of the lostwrite engine, the child process of ``p`` (waits until it has started)."""
    import time
    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert p.poll() is None, p.communicate()[1]
        try:
            with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                kids = f.read().split()
        except OSError:
            kids = []
        if kids:
            time.sleep(0.2)                            # past its own setup
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("the lostwrite engine did not start within %.0f s" % limit)


def test_the_engine_is_built_once_per_source_and_a_missing_compiler_is_one_line(tmp_path, monkeypatch):
    from zaptrace import lostwrite, workloads
    monkeypatch.delenv(lostwrite.ENGINE_ENV, raising=False)
    monkeypatch.setattr(lostwrite, "engine_dirs", lambda: [tmp_path / "bin"])
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path))        # no cc, gcc or clang
    with pytest.raises(workloads.WorkloadError, match="no C compiler here: apt-get install gcc"):
        lostwrite.engine()
    monkeypatch.undo()
    monkeypatch.setattr(lostwrite, "engine_dirs", lambda: [tmp_path / "bin"])
    exe = lostwrite.engine()
    assert exe.startswith(str(tmp_path / "bin" / "lostwrite-")) and os_access_x(exe)
    assert lostwrite.engine(build=False) == exe        # found, not built again
    monkeypatch.setenv(lostwrite.ENGINE_ENV, str(tmp_path / "nothing"))
    with pytest.raises(workloads.WorkloadError, match="is not an executable file"):
        lostwrite.engine()


def os_access_x(path):
    import os
    return os.access(path, os.X_OK)


def test_an_engine_that_cannot_run_is_a_one_line_error(tmp_path):
    import os
    bad = tmp_path / "engine"
    bad.write_text("not a program\n")
    os.chmod(bad, 0o755)
    p = subprocess.run(ZT + ["workload", "run", "lostwrite", "--dir", str(tmp_path), "--iterations", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60,
                       env=dict(os.environ, ZAPTRACE_LOSTWRITE_ENGINE=str(bad)))
    assert p.returncode == 2 and "cannot run the lostwrite engine" in p.stderr and "Traceback" not in p.stderr
    assert [f.name for f in tmp_path.iterdir()] == ["engine"]     # the scratch file is removed
