"""Trace file: chunks survive truncation, corruption and a killed writer."""
import os
import struct

import numpy as np
import pytest

from tests.synth import TraceBuilder, page
from zaptrace import tracefile
from zaptrace.layout import layout


def sample(tmp_path, n=50, chunk=10, end=True):
    tb = TraceBuilder()
    for i in range(n):
        tb.rmap(1000 + i, page(i))
    return tb.write(tmp_path / "t.zt", chunk=chunk, end=end)


def test_round_trip(tmp_path):
    raw = tracefile.read(sample(tmp_path))
    assert len(raw.events) == 50 and raw.chunks == 5 + 2   # HEAD + 5 EVTS + END
    assert raw.end is not None and raw.problems == []
    assert list(raw.events["ts"][:3]) == [1000, 1001, 1002]


@pytest.mark.parametrize("cut", [1, 7, 33, 100, 500])
def test_truncated_file_loads_every_whole_chunk(tmp_path, cut):
    path = sample(tmp_path)
    data = open(path, "rb").read()
    raw = tracefile.parse(data[: len(data) - cut], "cut.zt")
    assert len(raw.events) in (40, 50)  # the END chunk or the last EVTS chunk is gone
    assert any("truncated" in p or "END" in p for p in raw.problems)


def test_unfinished_recording_is_reported(tmp_path):
    raw = tracefile.read(sample(tmp_path, end=False))
    assert len(raw.events) == 50
    assert raw.end is None and any("did not finish" in p for p in raw.problems)


def test_corrupt_payload_skips_only_that_chunk(tmp_path):
    path = sample(tmp_path)
    data = bytearray(open(path, "rb").read())
    # flip a byte in the payload of the second EVTS chunk
    first = data.find(b"EVTS")
    second = data.find(b"EVTS", first + 4)
    data[second + 40] ^= 0xFF
    raw = tracefile.parse(bytes(data), "c.zt")
    assert len(raw.events) == 40
    assert any("checksum" in p for p in raw.problems)


def test_corrupt_chunk_header_resyncs_on_the_next_chunk(tmp_path):
    path = sample(tmp_path)
    data = bytearray(open(path, "rb").read())
    first = data.find(b"EVTS")
    data[first + 6] ^= 0x55          # length field of the first EVTS chunk
    raw = tracefile.parse(bytes(data), "h.zt")
    assert len(raw.events) == 40
    assert any("corrupt chunk header" in p for p in raw.problems)


@pytest.mark.parametrize("data,msg", [
    (b"", "empty file"),
    (b"ZAPTR", "truncated before the end of the file header"),
    (b"PK\x03\x04 something else entirely", "not a zaptrace trace"),
    (struct.pack("<8sHHI", b"ZAPTRACE", 9, 0, 0), "newer than this zaptrace reads"),
    (struct.pack("<8sHHI", b"ZAPTRACE", 1, 0, 0), "header chunk is missing"),
])
def test_unreadable_files_raise_one_line(data, msg):
    with pytest.raises(tracefile.TraceError) as e:
        tracefile.parse(data, "x.zt")
    assert msg in str(e.value) and "\n" not in str(e.value) and "x.zt" in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(tracefile.TraceError, match="no such file"):
        tracefile.read(str(tmp_path / "nope"))
    with pytest.raises(tracefile.TraceError, match="directory"):
        tracefile.read(str(tmp_path))


def test_writer_killed_mid_run_leaves_a_loadable_file(tmp_path):
    """A real SIGKILL of a process that is writing chunks."""
    path = tmp_path / "k.zt"
    L = layout()
    rec = np.zeros(1000, dtype=L.dtype)
    rec["ts"] = np.arange(1000)
    rec["kind"] = 3
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        tw = tracefile.TraceWriter(str(path), TraceBuilder().head())
        for i in range(10_000_000):
            tw.events(rec)
            if i == 20:
                os.write(w, b"x")
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raw = tracefile.read(str(path))
    assert len(raw.events) >= 21000 and len(raw.events) % 1000 == 0
    assert raw.end is None


def test_disk_full_leaves_whole_chunks_only(tmp_path):
    """On ENOSPC the partial chunk is taken back: the file still ends on a whole chunk."""
    import subprocess
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    assert os.geteuid() == 0, "this test mounts a tmpfs: run the suite as root (CI does)"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    w = None
    try:
        L = layout()
        rec = np.zeros(100, dtype=L.dtype)
        rec["kind"] = 3
        w = tracefile.TraceWriter(str(mnt / "t.zt"), TraceBuilder().head())
        written = 0
        with pytest.raises(OSError):
            for _ in range(1000):
                w.events(rec)
                written += 100
        # smaller chunks still fit in what is left
        try:
            while True:
                w.events(rec[:1])
                written += 1
        except OSError:
            pass
        w.close()
        raw = tracefile.read(str(mnt / "t.zt"))
        assert len(raw.events) == written and written > 100
        assert not any("truncated" in p or "corrupt" in p for p in raw.problems)
    finally:
        if w is not None:
            w.close()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
