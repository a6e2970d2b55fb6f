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

The producers are told not to wake us (BPF_RB_NO_WAKEUP); the recorder
polls on a timer, so the ring buffer must hold the events of one polling
interval (the recorder sizes it, and counts any loss on the BPF side).
"""
from __future__ import annotations

import ctypes
import mmap
from typing import Optional

import numpy as np

BUSY = np.uint32(1 << 31)
DISCARD = np.uint32(1 << 30)
HDR = 8


class RingReader:
    def __init__(self, map_fd: int, data_size: int, dtype: np.dtype):
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

    def read(self, max_bytes: Optional[int] = None) -> np.ndarray:
        """Take every committed record available now, as one array of events (one copy)."""
        cons = self._cons_pos.value
        prod = int(self._prod_pos[0])
        avail = prod - cons
        if avail <= 0:
            return self.empty
        if max_bytes is not None:
            avail = min(avail, max_bytes - max_bytes % self.slot)
        n = avail // self.slot
        start = cons & self.mask
        region = self._data[start:start + n * self.slot].view(np.uint32).reshape(n, self.slot // 4)
        lens = region[:, 0]
        busy = np.flatnonzero(lens & BUSY)
        if len(busy):
            n = int(busy[0])
            region = region[:n]
            lens = lens[:n]
        if n == 0:
            return self.empty
        if (lens & ~DISCARD != self.record_size).any():
            bad = int(np.flatnonzero(lens & ~DISCARD != self.record_size)[0])
            raise RuntimeError(f"ring buffer record of unexpected length {int(lens[bad] & ~DISCARD)} "
                               f"(expected {self.record_size})")
        keep = (lens & DISCARD) == 0
        payload = region[:, HDR // 4:HDR // 4 + self.record_size // 4]
        if not keep.all():
            self.discarded += int((~keep).sum())
            payload = payload[keep]
        out = np.ascontiguousarray(payload).view(self.dtype).reshape(-1)
        # Release the space only after the copy: a single aligned 8-byte store.
        self._cons_pos.value = cons + n * self.slot
        self.records += len(payload)
        return out

    def close(self) -> None:
        del self._cons_pos
        self._prod_pos = None
        self._data = None
        self._cons.close()
        try:
            self._prod.close()
        except BufferError:
            pass
