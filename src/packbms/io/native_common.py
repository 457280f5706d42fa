"""What the native readers share: the output arrays the scanning kernels write into.

A :class:`FrameSink` owns FrameTable columns with a capacity; a kernel writes rows from
``sink.k`` on and returns when the capacity is reached, so a reader either hands the full table
out (``iter_log``: every chunk has exactly ``chunk_frames`` rows) or grows the sink (``read_log``:
one table, no final concatenation). Allocation is sized by the caller's chunk size or by a capacity
derived from the file size, never by a count a file declares.
"""

from __future__ import annotations

import os

import numpy as np

from .._cpus import usable_cpus
from .frames import FrameTable

#: Most reading threads by default, whatever the core count.
MAX_DEFAULT_THREADS = 4
#: Most reading threads whatever ``$PACKBMS_READ_THREADS`` asks for.
MAX_THREADS = 32


def read_threads(size, min_bytes: int) -> int:
    """Threads a native reader uses: ``$PACKBMS_READ_THREADS`` if set (capped at
    :data:`MAX_THREADS`), else one per usable core up to :data:`MAX_DEFAULT_THREADS` for files of
    at least ``min_bytes`` (``size`` None, a compressed stream, counts as big) on a multi-core
    machine, else 0."""
    env = os.environ.get("PACKBMS_READ_THREADS", "")
    if env.isdigit():
        return min(int(env), MAX_THREADS)
    cores = usable_cpus()
    if cores < 2 or (size is not None and size < min_bytes):
        return 0
    return min(cores, MAX_DEFAULT_THREADS)

#: Rows of the event tables the kernels fill (bad records, slow timestamps, ...).
EVENT_ROWS = 256


class FrameSink:
    """FrameTable columns being filled by a kernel.

    Parameters
    ----------
    capacity
        Rows allocated.
    width
        Payload columns (8, or 64 once a frame needs more).
    source
        The file, given to the tables handed out.
    """

    __slots__ = ("ts", "aid", "flags", "dc", "data", "k", "source")

    def __init__(self, capacity: int, width: int = 8, source: str | None = None):
        capacity = max(int(capacity), 1)
        self.ts = np.empty(capacity, np.float64)
        self.aid = np.empty(capacity, np.uint32)
        self.flags = np.empty((4, capacity), np.bool_)   # is_extended, is_fd, is_error, is_remote
        self.dc = np.empty((2, capacity), np.uint8)      # dlc, channel
        self.data = np.zeros((capacity, width), np.uint8)
        self.k = 0
        self.source = source

    @property
    def capacity(self) -> int:
        return self.ts.shape[0]

    @property
    def width(self) -> int:
        return self.data.shape[1]

    @property
    def full(self) -> bool:
        return self.k >= self.capacity

    def widen(self) -> None:
        """Give the payload 64 columns (a CAN FD frame with more than 8 bytes arrived)."""
        if self.width == 64:
            return
        data = np.zeros((self.capacity, 64), np.uint8)
        data[: self.k, : self.width] = self.data[: self.k]
        self.data = data

    def grow(self, capacity: int | None = None) -> None:
        """Reallocate with ``capacity`` rows (default: twice as many), keeping the rows filled so
        far."""
        new = max(int(capacity or 2 * self.capacity), self.k + 1)
        k = self.k
        for name in ("ts", "aid"):
            old = getattr(self, name)
            arr = np.empty(new, old.dtype)
            arr[:k] = old[:k]
            setattr(self, name, arr)
        for name in ("flags", "dc"):
            old = getattr(self, name)
            arr = np.empty((old.shape[0], new), old.dtype)
            arr[:, :k] = old[:, :k]
            setattr(self, name, arr)
        data = np.zeros((new, self.width), np.uint8)
        data[:k] = self.data[:k]
        self.data = data

    def drop(self, rows) -> None:
        """Remove rows (indexes below ``k``), keeping the order of the others."""
        keep = np.ones(self.k, bool)
        keep[np.asarray(rows, np.int64)] = False
        m = int(keep.sum())
        self.ts[:m] = self.ts[: self.k][keep]
        self.aid[:m] = self.aid[: self.k][keep]
        self.flags[:, :m] = self.flags[:, : self.k][:, keep]
        self.dc[:, :m] = self.dc[:, : self.k][:, keep]
        self.data[:m] = self.data[: self.k][keep]
        self.data[m: self.k] = 0
        self.k = m

    def table(self) -> FrameTable:
        """The rows filled so far as a FrameTable (views, no copy)."""
        k = self.k
        return FrameTable(timestamp=self.ts[:k], arbitration_id=self.aid[:k],
                          is_extended=self.flags[0, :k], is_fd=self.flags[1, :k],
                          is_error=self.flags[2, :k], is_remote=self.flags[3, :k],
                          dlc=self.dc[0, :k], channel=self.dc[1, :k], data=self.data[:k],
                          source=self.source)


def new_events() -> np.ndarray:
    """An empty event table for a scanning kernel."""
    return np.zeros((EVENT_ROWS, 4), np.int64)
