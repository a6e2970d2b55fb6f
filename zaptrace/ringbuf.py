"""Drain a BPF ring buffer by mmap, in bulk, with no per-event Python.

A BPF_MAP_TYPE_RINGBUF map is mmap-able: page 0 holds the consumer
position (read-write), page 1 the producer position, and the data pages
follow, mapped twice in a row so that a record that wraps around the end is
still contiguous.  Every zaptrace record has the same size (8-byte ring
header + the 72-byte event = 80 bytes), so the bytes between the consumer
and producer positions are an array of fixed-size slots: one numpy view,
one vectorised check of the headers' BUSY bits (a record reserved but not
yet committed by another CPU stops the batch there), one copy, one store of
the new consumer position.  This replaces BCC's ring_buffer_poll(), which
calls back into Python once per record.

Records are checked before the space is released: the producer position
is read twice and the smaller value kept, the headers are read again after
the copy (a header that changed was read before the producer had written
it), and every record must carry a known event kind.  The reader stops at
the first record that fails, and takes it on a later poll; one that is still
not a zaptrace record after STUCK_S seconds is dropped and counted in
`corrupt` (the recorder reports it).  This is not hypothetical: on 5.10 under
TCG, 2 of 3,863 records read from a one-page ring were stale bytes of an
earlier lap (kind 0), while the two records the kernel counted in their place
never arrived; nothing else in that run was off.

The producers are told not to wake us (BPF_RB_NO_WAKEUP); the recorder
polls on a timer, so the ring buffer must hold the events of one polling
interval (the recorder sizes it, and counts any loss on the BPF side).
"""
from __future__ import annotations

import ctypes
import mmap
import time
from typing import Optional

import numpy as np

BUSY = np.uint32(1 << 31)
DISCARD = np.uint32(1 << 30)
HDR = 8
#: Seconds a record may fail the checks before it is dropped as corrupt.
STUCK_S = 2.0


class RingReader:
    def __init__(self, map_fd: int, data_size: int, dtype: np.dtype, nkinds: int = 256,
                 clock=time.monotonic):
        record_size = dtype.itemsize
        if data_size & (data_size - 1):
            raise ValueError("ring buffer size must be a power of two")
        self.size = data_size
        self.mask = data_size - 1
        self.slot = (HDR + record_size + 7) & ~7
        self.record_size = record_size
        self.dtype = dtype
        self.empty = np.zeros(0, dtype=dtype)
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._cons_pos = ctypes.c_uint64.from_buffer(self._cons)
        # The producer page is read-only: read its position through a numpy view.
        self._prod_pos = np.frombuffer(self._prod, dtype=np.uint64, count=1, offset=0)
        self._data = np.frombuffer(self._prod, dtype=np.uint8, offset=page)
        self.records = 0
        self.discarded = 0
        self.corrupt = 0                 # slots dropped: not a zaptrace record after STUCK_S
        self.overruns = 0                # polls that found the producer more than a ring ahead
        self.held = 0                    # polls that stopped at a record failing the checks
        self.nkinds = nkinds
        self.clock = clock
        self._stuck_since: Optional[float] = None
        self._kind_off = dtype.fields["kind"][1] if dtype.fields and "kind" in dtype.fields else None

    def read(self, max_bytes: Optional[int] = None) -> np.ndarray:
        """Take every committed record available now, as one array of events (one copy)."""
        cons = self._cons_pos.value
        prod = min(int(self._prod_pos[0]), int(self._prod_pos[0]))
        avail = prod - cons
        if avail <= 0:
            return self.empty
        if avail > self.size:
            self.overruns += 1           # the producer is more than a ring ahead: unread records were overwritten
        if max_bytes is not None:
            avail = min(avail, max_bytes - max_bytes % self.slot)
        n = min(avail, self.size) // self.slot
        start = cons & self.mask
        region = self._data[start:start + n * self.slot].view(np.uint32).reshape(n, self.slot // 4)
        lens = region[:, 0].copy()
        busy = np.flatnonzero(lens & BUSY)
        if len(busy):                    # reserved, not yet committed: the batch ends there
            n = int(busy[0])
            region, lens = region[:n], lens[:n]
        if n == 0:
            return self.empty
        copy = np.ascontiguousarray(region[:, HDR // 4:HDR // 4 + self.record_size // 4])
        good = self._good(region, lens, copy)
        if not good.all():
            self.held += 1
            first = int(np.flatnonzero(~good)[0])
            if first > 0:                # take the good ones; look at the bad one next time
                n = first
                self._stuck_since = None
            else:
                now = self.clock()
                if self._stuck_since is None:
                    self._stuck_since = now
                if now - self._stuck_since < STUCK_S:
                    return self.empty
                # Give up on the bad slots in a row: drop them, counted.
                m = int(np.flatnonzero(good)[0]) if good.any() else n
                self.corrupt += m
                self._stuck_since = None
                self._cons_pos.value = cons + m * self.slot
                return self.empty
            lens, copy = lens[:n], copy[:n]
        else:
            self._stuck_since = None
        keep = (lens & DISCARD) == 0
        if not keep.all():
            self.discarded += int((~keep).sum())
        out = copy[keep].view(self.dtype).reshape(-1)
        # Release the space only after the copy and the checks: a single aligned 8-byte store.
        self._cons_pos.value = cons + n * self.slot
        self.records += len(out)
        return out

    def _good(self, region: np.ndarray, lens: np.ndarray, copy: np.ndarray) -> np.ndarray:
        """Per record: the expected length, a header that did not change during the
        copy, and a known kind."""
        good = (region[:, 0] == lens) & ((lens & ~DISCARD) == self.record_size)
        if self._kind_off is not None:
            kinds = copy.view(np.uint8).reshape(len(copy), -1)[:, self._kind_off]
            good &= ((kinds > 0) & (kinds < self.nkinds)) | ((lens & DISCARD) != 0)
        return good

    def close(self) -> None:
        del self._cons_pos
        self._prod_pos = None
        self._data = None
        self._cons.close()
        try:
            self._prod.close()
        except BufferError:
            pass
