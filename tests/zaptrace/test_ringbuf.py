"""The ring buffer reader against a file laid out like a BPF ring buffer map.

A BPF_MAP_TYPE_RINGBUF mmap is: page 0 the consumer position, page 1 the
producer position, then the data pages twice in a row.  A plain file with the
same layout (the test writes both copies of the data) stands in for the map,
so each producer state can be set up by hand: committed, busy, wrapped
around the end, and a slot the producer position covers while it still holds
bytes of an earlier lap (what a 5.10 guest once delivered as kind-0 records).
"""
from __future__ import annotations

import mmap
import os
import struct

import numpy as np
import pytest

from zaptrace import ringbuf
from zaptrace.layout import layout

PAGE = mmap.PAGESIZE
DATA = PAGE                      # one data page, as `record --buffer-pages 1`


class FakeRing:
    def __init__(self, path):
        self.L = layout()
        self.rec = self.L.dtype.itemsize
        self.slot = (ringbuf.HDR + self.rec + 7) & ~7
        self.fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self.fd, 2 * PAGE + 2 * DATA)
        self.prod = 0
        self.now = 0.0
        self.reader = ringbuf.RingReader(self.fd, DATA, self.L.dtype, nkinds=self.L.nkinds,
                                         clock=lambda: self.now)

    def _write_data(self, pos: int, data: bytes) -> None:
        off = pos % DATA
        head, tail = data[:DATA - off], data[DATA - off:]   # tail: the part past the end, at the start
        for copy in (2 * PAGE, 2 * PAGE + DATA):       # both copies, as the double mapping shows them
            os.pwrite(self.fd, head, copy + off)
            if tail:
                os.pwrite(self.fd, tail, copy)

    def record(self, kind: int, ts: int) -> bytes:
        e = np.zeros(1, dtype=self.L.dtype)
        e["kind"], e["ts"] = kind, ts
        return e.tobytes()

    def reserve(self, kind: int, ts: int, busy: bool = False, payload: bytes = None) -> int:
        """Reserve a slot at the producer position and (unless busy) commit it."""
        pos = self.prod
        hdr = struct.pack("<II", self.rec | (int(ringbuf.BUSY) if busy else 0), 0)
        self._write_data(pos, hdr + (payload if payload is not None else self.record(kind, ts)))
        self.prod += self.slot
        os.pwrite(self.fd, struct.pack("<Q", self.prod), PAGE)
        return pos

    def commit(self, pos: int, kind: int, ts: int) -> None:
        self._write_data(pos, struct.pack("<II", self.rec, 0) + self.record(kind, ts))

    def consumer(self) -> int:
        return struct.unpack("<Q", os.pread(self.fd, 8, 0))[0]


@pytest.fixture
def ring(tmp_path):
    r = FakeRing(tmp_path / "ring")
    yield r
    r.reader.close()
    os.close(r.fd)


def test_committed_records_are_read_and_released(ring):
    for i in range(5):
        ring.reserve(3, 100 + i)
    out = ring.reader.read()
    assert out["ts"].tolist() == [100, 101, 102, 103, 104]
    assert ring.consumer() == 5 * ring.slot
    assert len(ring.reader.read()) == 0


def test_a_busy_record_stops_the_batch_until_committed(ring):
    ring.reserve(3, 1)
    pos = ring.reserve(3, 2, busy=True)
    ring.reserve(3, 3)
    assert ring.reader.read()["ts"].tolist() == [1]
    assert len(ring.reader.read()) == 0
    ring.commit(pos, 3, 2)
    assert ring.reader.read()["ts"].tolist() == [2, 3]


def test_records_wrapping_around_the_end_are_whole(ring):
    n = DATA // ring.slot + 3                      # more than one lap: some record straddles the end
    got = []
    for i in range(n):
        ring.reserve(5, 1000 + i)
        got += ring.reader.read()["ts"].tolist()
    assert got == list(range(1000, 1000 + n))
    assert ring.reader.corrupt == 0


def test_stale_bytes_under_the_producer_position_are_not_delivered(ring):
    ring.reserve(3, 1)
    # The producer position covers a slot that still holds stale bytes (kind 0)
    # with a committed-looking header: wait for it rather than deliver garbage.
    pos = ring.reserve(0, 0, payload=b"\0" * ring.rec)
    assert ring.reader.read()["ts"].tolist() == [1]
    ring.now += 1.0
    assert len(ring.reader.read()) == 0
    ring.commit(pos, 7, 2)                         # the real record arrives
    ring.reserve(3, 3)
    assert ring.reader.read()["ts"].tolist() == [2, 3]
    assert ring.reader.corrupt == 0


def test_a_slot_that_never_becomes_a_record_is_dropped_and_counted(ring):
    ring.reserve(0, 0, payload=b"\xff" * ring.rec)  # kind 255: not a zaptrace kind
    ring.reserve(3, 9)
    assert len(ring.reader.read()) == 0
    ring.now += ringbuf.STUCK_S / 2
    assert len(ring.reader.read()) == 0
    ring.now += ringbuf.STUCK_S
    out = ring.reader.read()                       # the bad slot is dropped, the rest follows
    out = np.concatenate([out, ring.reader.read()])
    assert out["ts"].tolist() == [9]
    assert ring.reader.corrupt == 1
    assert ring.consumer() == 2 * ring.slot


def test_a_slot_overwritten_mid_lap_is_dropped_not_raised(ring):
    # A header that is not a zaptrace record length (the slot holds bytes of
    # records written at other offsets) once made the reader raise.
    ring.reserve(0, 0, payload=b"\x11" * ring.rec)
    os.pwrite(ring.fd, struct.pack("<II", 12345, 0), 2 * PAGE)
    os.pwrite(ring.fd, struct.pack("<II", 12345, 0), 2 * PAGE + DATA)
    ring.reserve(3, 5)
    assert len(ring.reader.read()) == 0
    ring.now += ringbuf.STUCK_S
    assert len(ring.reader.read()) == 0            # dropped now...
    assert ring.reader.read()["ts"].tolist() == [5]   # ...and the next record follows
    assert ring.reader.corrupt == 1
