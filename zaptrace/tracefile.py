"""The zaptrace trace file: self-describing, chunked, crash-tolerant.

Layout::

    file header   8s magic "ZAPTRACE", u16 major, u16 minor, u32 reserved
    chunk*        32-byte chunk header + payload

    chunk header  4s sync "ZTC1", 4s type, u64 payload length, u32 record count,
                  u32 crc32(payload), u32 crc32(first 24 header bytes), u32 reserved

Chunk types:

    HEAD  JSON: format, kernel, probe map, clock, host, command line, start time,
          and the event dtype (so a trace stays readable if the layout changes)
    EVTS  raw event records (count x record size), straight from the ring buffer
    STAT  JSON: cumulative generated/lost counters at the time it was written
    META  JSON: facts learnt while recording (e.g. vmemmap_base's value)
    END   JSON: end time, exit status, final counters

Every chunk is complete on disk before the next one starts, so a recorder
killed with SIGKILL leaves a file that loads up to its last whole chunk.  The
reader validates both CRCs, skips a chunk whose payload is corrupt, resyncs
on the next "ZTC1" after a corrupt header, and reports what it skipped.
This module needs only numpy: the recorder runs it on the traced machine.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Dict, List, Optional

import numpy as np

from .errors import ZaptraceError

MAGIC = b"ZAPTRACE"
MAJOR, MINOR = 1, 0
FILE_HEADER = struct.Struct("<8sHHI")
SYNC = b"ZTC1"
CHUNK_HEADER = struct.Struct("<4s4sQIIII")
TYPES = (b"HEAD", b"EVTS", b"STAT", b"META", b"END ")
# A chunk larger than this is taken as a corrupt length field.
MAX_CHUNK = 1 << 31


class TraceError(ZaptraceError):
    """A trace file cannot be read at all (the message names file and problem)."""


def _header_bytes(ctype: bytes, payload: bytes, count: int) -> bytes:
    first = struct.pack("<4s4sQII", SYNC, ctype, len(payload), count, zlib.crc32(payload))
    return first + struct.pack("<II", zlib.crc32(first), 0)


class TraceWriter:
    """Appends chunks; each write is one complete chunk, flushed to the OS."""

    def __init__(self, path: str, head: Dict[str, Any], fileobj: Optional[IO[bytes]] = None):
        self.path = path
        self.f = fileobj if fileobj is not None else open(path, "wb")
        self.bytes = 0
        self.f.write(FILE_HEADER.pack(MAGIC, MAJOR, MINOR, 0))
        self.bytes += FILE_HEADER.size
        self.json(b"HEAD", head)

    def chunk(self, ctype: bytes, payload, count: int = 0) -> None:
        """Append one chunk; payload is bytes or any buffer (written without a copy)."""
        assert ctype in TYPES
        payload = memoryview(payload).cast("B")
        hdr = _header_bytes(ctype, payload, count)
        # One gathered write per chunk: no copy, and a kill leaves at worst a
        # truncated last chunk, which the reader reports and drops.
        self.f.flush()
        fd = self.f.fileno()
        todo = [hdr, payload]
        try:
            while todo:
                n = os.writev(fd, todo)
                while todo and n >= len(todo[0]):
                    n -= len(todo[0])
                    todo.pop(0)
                if todo and n:
                    todo[0] = memoryview(todo[0])[n:]
        except OSError:
            # Take the partial chunk back, so that the file ends on a whole chunk
            # and a smaller chunk can still follow (disk full: see the recorder).
            try:
                os.ftruncate(fd, self.bytes)
                os.lseek(fd, self.bytes, os.SEEK_SET)
            except OSError:
                pass
            raise
        self.bytes += len(hdr) + len(payload)

    def events(self, records: np.ndarray) -> None:
        """Append an EVTS chunk of event records (a structured numpy array)."""
        if len(records):
            self.chunk(b"EVTS", np.ascontiguousarray(records).view(np.uint8), len(records))

    def json(self, ctype: bytes, obj: Dict[str, Any]) -> None:
        self.chunk(ctype, json.dumps(obj, sort_keys=True).encode())

    def sync(self) -> None:
        self.f.flush()
        try:
            os.fsync(self.f.fileno())
        except OSError:
            pass

    def close(self) -> None:
        if not self.f.closed:
            self.f.flush()
            self.f.close()


@dataclass
class RawTrace:
    """What a trace file holds, as numpy and dicts (no pandas)."""

    path: str
    version: str
    head: Dict[str, Any]
    events: np.ndarray
    stats: Optional[Dict[str, Any]] = None       # the last STAT chunk
    stat_series: List[Any] = field(default_factory=list)   # (time_ns, total lost) of every STAT
    meta: Dict[str, Any] = field(default_factory=dict)   # merged META chunks
    end: Optional[Dict[str, Any]] = None         # the END chunk, None if the recorder did not finish
    chunks: int = 0
    problems: List[str] = field(default_factory=list)   # what was skipped, in words
    #: (offset, bytes) of each intact EVTS payload, in file order: set by ``parse(..., lazy=True)``,
    #: which leaves ``events`` empty (``analysis.stream`` reads them chunk by chunk).
    event_spans: List[Any] = field(default_factory=list)
    skipped_bytes: int = 0
    file_bytes: int = 0

    @property
    def complete(self) -> bool:
        return self.end is not None and not self.problems


def _dtype_from_head(head: Dict[str, Any], path: str) -> np.dtype:
    try:
        return np.dtype([(str(n), str(t)) for n, t in head["event_dtype"]])
    except (KeyError, TypeError, ValueError) as e:
        raise TraceError(f"{path}: header has no valid event_dtype ({e})") from None


def read(path: str) -> RawTrace:
    """Read a whole trace; intact chunks of a damaged file still load."""
    try:
        with open(path, "rb") as f:
            raw = _read_intact(f, path)
            if raw is not None:
                return raw
            f.seek(0)
            data = f.read()
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, not a trace file") from None
    except OSError as e:
        raise TraceError(f"{path}: cannot read: {e.strerror}") from None
    return parse(data, path)


class _JsonChunks:
    """The HEAD, STAT, META and END chunks of a trace, as they come (the first HEAD counts)."""

    def __init__(self) -> None:
        self.head: Optional[Dict[str, Any]] = None
        self.stats: Optional[Dict[str, Any]] = None
        self.stat_series: List[Any] = []     # (time_ns, total lost) of every STAT
        self.meta: Dict[str, Any] = {}
        self.end: Optional[Dict[str, Any]] = None

    def take(self, ctype: bytes, obj: Dict[str, Any]) -> bool:
        """Keep one JSON chunk; True when it is the first HEAD."""
        if ctype == b"HEAD":
            if self.head is None:
                self.head = obj
                return True
        elif ctype == b"STAT":
            self.stats = obj
            self.stat_series.append((int(obj.get("time_ns", 0)), int(sum((obj.get("lost") or {}).values()))))
        elif ctype == b"META":
            self.meta.update(obj)
        else:
            self.end = obj
        return False


def _read_intact(f, path: str) -> Optional[RawTrace]:
    """``parse(f.read(), path)`` of an intact, finished trace, with the EVTS payloads read
    straight into one array of the events (the file is never held whole: one copy of the
    events instead of two).  None when the file is not one: then ``parse`` reads it all
    and says what is wrong (this is only the fast path of the common case).

    Pass 1 reads the chunk headers only (seeking over the payloads); pass 2 reads each
    payload (EVTS into its place in the array) and checks its CRC."""
    n = os.fstat(f.fileno()).st_size
    first = f.read(FILE_HEADER.size)
    if len(first) < FILE_HEADER.size or first[:8] != MAGIC:
        return None
    _m, major, minor, _r = FILE_HEADER.unpack(first)
    if major != MAJOR:
        return None
    hsize = CHUNK_HEADER.size
    chunks = []                                   # (type, payload offset, length, crc)
    pos = FILE_HEADER.size
    while pos < n:
        if n - pos < hsize:
            return None
        f.seek(pos)
        hdr = f.read(hsize)
        if len(hdr) < hsize:
            return None
        sync, ctype, length, _count, pcrc, hcrc, _r = CHUNK_HEADER.unpack(hdr)
        if sync != SYNC or zlib.crc32(hdr[:24]) != hcrc or ctype not in TYPES or length > MAX_CHUNK:
            return None
        if pos + hsize + length > n:
            return None
        chunks.append((ctype, pos + hsize, length, pcrc))
        pos += hsize + length
    if not chunks or chunks[0][0] != b"HEAD":
        return None
    j = _JsonChunks()
    dt = None
    events = None
    filled = 0
    for ctype, start, length, pcrc in chunks:
        f.seek(start)
        if ctype == b"EVTS":
            if dt is None or length % dt.itemsize:
                return None
            if events is None:
                total = sum(c[2] for c in chunks if c[0] == b"EVTS")
                events = np.empty(total // dt.itemsize, dtype=dt)
                buf = memoryview(events.view(np.uint8))
            part = buf[filled:filled + length]
            if f.readinto(part) != length or zlib.crc32(part) != pcrc:
                return None
            filled += length
            continue
        payload = f.read(length)
        if len(payload) != length or zlib.crc32(payload) != pcrc:
            return None
        try:
            obj = json.loads(payload)
        except ValueError:
            return None
        if j.take(ctype, obj):
            try:
                dt = _dtype_from_head(j.head, path)
            except TraceError:
                return None
    if j.end is None or j.head is None or dt is None:
        return None
    if events is None:
        events = np.zeros(0, dtype=dt)
    return RawTrace(path=path, version=f"{major}.{minor}", head=j.head, events=events, stats=j.stats,
                    stat_series=j.stat_series, meta=j.meta, end=j.end, chunks=len(chunks), problems=[],
                    skipped_bytes=0, file_bytes=n, event_spans=[])


def parse(data, path: str = "<bytes>", lazy: bool = False, release=None) -> RawTrace:
    """Parse a whole trace held in ``data`` (bytes, or an mmap).

    lazy: check every chunk but do not build the event array; ``event_spans`` lists where
    the intact EVTS payloads are.  release(start, end): called after each chunk's bytes
    have been read (an mmap reader drops those pages from its resident set there)."""
    n = len(data)
    if n == 0:
        raise TraceError(f"{path}: empty file, not a zaptrace trace")
    if n < FILE_HEADER.size or data[:8] != MAGIC:
        if data[:8] == MAGIC[: min(8, n)]:
            raise TraceError(f"{path}: truncated before the end of the file header ({n} bytes)")
        raise TraceError(f"{path}: not a zaptrace trace (bad magic)")
    _m, major, minor, _r = FILE_HEADER.unpack_from(data, 0)
    if major > MAJOR:
        raise TraceError(f"{path}: trace format {major}.{minor} is newer than this zaptrace reads "
                         f"({MAJOR}.x): upgrade zaptrace")
    if major < 1:
        raise TraceError(f"{path}: unknown trace format {major}.{minor}")

    problems: List[str] = []
    skipped = 0
    j = _JsonChunks()
    payloads: List[memoryview] = []
    chunks = 0
    pos = FILE_HEADER.size
    hsize = CHUNK_HEADER.size
    view = memoryview(data)           # payload slices without copies
    while pos < n:
        if n - pos < hsize:
            problems.append(f"truncated chunk header at byte {pos} ({n - pos} bytes dropped)")
            skipped += n - pos
            break
        sync, ctype, length, count, pcrc, hcrc, _r = CHUNK_HEADER.unpack_from(data, pos)
        if sync != SYNC or zlib.crc32(data[pos:pos + 24]) != hcrc or ctype not in TYPES or length > MAX_CHUNK:
            nxt = _resync(data, pos + 1)
            problems.append(f"corrupt chunk header at byte {pos}: skipped {nxt - pos} bytes")
            skipped += nxt - pos
            pos = nxt
            continue
        start = pos + hsize
        if start + length > n:
            problems.append(f"truncated {ctype.decode().strip()} chunk at byte {pos} "
                            f"({n - start} of {length} payload bytes present)")
            skipped += n - pos
            break
        payload = view[start:start + length]
        pos = start + length
        bad = zlib.crc32(payload) != pcrc
        if release is not None:
            release(start - hsize, pos)
        if bad:
            problems.append(f"corrupt {ctype.decode().strip()} chunk at byte {start - hsize}: "
                            f"checksum mismatch, {length} bytes skipped")
            skipped += hsize + length
            continue
        chunks += 1
        if ctype == b"EVTS":
            payloads.append((start, length) if lazy else payload)
        else:
            try:
                obj = json.loads(bytes(payload))
            except ValueError:
                problems.append(f"unreadable {ctype.decode().strip()} chunk at byte {start - hsize}")
                continue
            j.take(ctype, obj)
    head, end = j.head, j.end
    if head is None:
        raise TraceError(f"{path}: the header chunk is missing or corrupt; nothing can be read")
    dt = _dtype_from_head(head, path)
    good = []
    for p in payloads:
        size = p[1] if lazy else len(p)
        if size % dt.itemsize:
            problems.append(f"event chunk of {size} bytes is not a whole number of {dt.itemsize}-byte records")
            skipped += size
            continue
        good.append(p if lazy else np.frombuffer(p, dtype=dt))
    spans = good if lazy else []
    if lazy:
        events = np.zeros(0, dtype=dt)
    else:
        events = np.concatenate(good) if good else np.zeros(0, dtype=dt)
    if end is None and not any(p.startswith("truncated") for p in problems):
        problems.append("no END chunk: the recorder did not finish (killed?); loaded what was written")
    elif end is None:
        problems.append("no END chunk: the recorder did not finish")
    return RawTrace(path=path, version=f"{major}.{minor}", head=head, events=events, stats=j.stats,
                    stat_series=j.stat_series, meta=j.meta, end=end, chunks=chunks, problems=problems, skipped_bytes=skipped,
                    file_bytes=n, event_spans=spans)


def _resync(data: bytes, start: int) -> int:
    """Offset of the next chunk header whose own CRC is valid, or len(data)."""
    pos = start
    while True:
        pos = data.find(SYNC, pos)
        if pos < 0 or pos + CHUNK_HEADER.size > len(data):
            return len(data)
        if zlib.crc32(data[pos:pos + 24]) == struct.unpack_from("<I", data, pos + 24)[0]:
            return pos
        pos += 1
