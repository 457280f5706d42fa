"""The columnar frame container every reader yields and every decoder consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["FrameTable"]

_DLC_TO_LEN = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64], dtype=np.uint8)


@dataclass
class FrameTable:
    """Columnar CAN frames (see DESIGN.md).

    Attributes
    ----------
    timestamp : float64 [N]
        Seconds; absolute (Unix) when the log says so, else relative to the log's start.
    arbitration_id : uint32 [N]
    is_extended, is_fd, is_error, is_remote : bool [N]
    dlc : uint8 [N]
        Payload length in bytes (0..8, or up to 64 for CAN FD), as python-can's ``Message.dlc``.
    channel : uint8 [N]
        Channel index as the log gives it (0 when the log has none).
    data : uint8 [N, W]
        Payload, zero-padded to W = 8, or 64 when any frame is CAN FD with more than 8 bytes.
    source : str or None
        The file the frames came from, for error messages.

    Examples
    --------
    >>> ft = FrameTable.empty(3)
    >>> len(ft), ft.data.shape
    (3, (3, 8))
    """

    timestamp: np.ndarray
    arbitration_id: np.ndarray
    is_extended: np.ndarray
    is_fd: np.ndarray
    is_error: np.ndarray
    dlc: np.ndarray
    channel: np.ndarray
    data: np.ndarray
    is_remote: np.ndarray = None  # type: ignore[assignment]
    source: str | None = field(default=None, compare=False)

    def __post_init__(self):
        n = len(self.timestamp)
        if self.is_remote is None:
            self.is_remote = np.zeros(n, dtype=bool)
        self.timestamp = np.ascontiguousarray(self.timestamp, dtype=np.float64)
        self.arbitration_id = np.ascontiguousarray(self.arbitration_id, dtype=np.uint32)
        for name in ("is_extended", "is_fd", "is_error", "is_remote"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=bool))
        self.dlc = np.ascontiguousarray(self.dlc, dtype=np.uint8)
        self.channel = np.ascontiguousarray(self.channel, dtype=np.uint8)
        self.data = np.ascontiguousarray(self.data, dtype=np.uint8)
        if self.data.ndim != 2 or self.data.shape[1] not in (8, 64):
            raise ValueError(f"data must be (N, 8) or (N, 64), got {self.data.shape}")
        for name in ("arbitration_id", "is_extended", "is_fd", "is_error", "is_remote", "dlc",
                     "channel", "data"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, expected {n}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, n: int = 0, width: int = 8, source: str | None = None) -> "FrameTable":
        """Allocate a zeroed table of ``n`` frames with payload width ``width`` (8 or 64)."""
        return cls(
            timestamp=np.zeros(n, np.float64),
            arbitration_id=np.zeros(n, np.uint32),
            is_extended=np.zeros(n, bool),
            is_fd=np.zeros(n, bool),
            is_error=np.zeros(n, bool),
            dlc=np.zeros(n, np.uint8),
            channel=np.zeros(n, np.uint8),
            data=np.zeros((n, width), np.uint8),
            is_remote=np.zeros(n, bool),
            source=source,
        )

    @classmethod
    def concat(cls, tables: Sequence["FrameTable"]) -> "FrameTable":
        """Concatenate tables (payload widened to the widest)."""
        tables = [t for t in tables]
        if not tables:
            return cls.empty(0)
        width = max(t.width for t in tables)
        data = np.concatenate([t.widened(width).data for t in tables]) if tables else None
        return cls(
            timestamp=np.concatenate([t.timestamp for t in tables]),
            arbitration_id=np.concatenate([t.arbitration_id for t in tables]),
            is_extended=np.concatenate([t.is_extended for t in tables]),
            is_fd=np.concatenate([t.is_fd for t in tables]),
            is_error=np.concatenate([t.is_error for t in tables]),
            dlc=np.concatenate([t.dlc for t in tables]),
            channel=np.concatenate([t.channel for t in tables]),
            data=data,
            is_remote=np.concatenate([t.is_remote for t in tables]),
            source=tables[0].source,
        )

    @classmethod
    def from_messages(cls, messages: Iterable, source: str | None = None) -> "FrameTable":
        """Build a table from python-can ``Message`` objects (slow path; used by the fallback
        reader and tests)."""
        msgs = list(messages)
        n = len(msgs)
        width = 64 if any(len(m.data) > 8 for m in msgs) else 8
        ft = cls.empty(n, width, source)
        for i, m in enumerate(msgs):
            ft.timestamp[i] = m.timestamp
            ft.arbitration_id[i] = m.arbitration_id
            ft.is_extended[i] = m.is_extended_id
            ft.is_fd[i] = m.is_fd
            ft.is_error[i] = m.is_error_frame
            ft.is_remote[i] = m.is_remote_frame
            ft.dlc[i] = m.dlc
            ft.channel[i] = _channel_index(m.channel)
            payload = bytes(m.data)
            if payload:
                ft.data[i, : len(payload)] = np.frombuffer(payload, np.uint8)
        return ft

    # -- views --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.timestamp)

    @property
    def width(self) -> int:
        """Payload column count (8 or 64)."""
        return self.data.shape[1]

    def widened(self, width: int) -> "FrameTable":
        """This table with its payload zero-padded to ``width`` columns."""
        if width == self.width:
            return self
        data = np.zeros((len(self), width), np.uint8)
        data[:, : self.width] = self.data
        return self.take(slice(None), data=data)

    def take(self, index, data=None) -> "FrameTable":
        """Rows selected by a slice, boolean mask or integer index array."""
        return FrameTable(
            timestamp=self.timestamp[index],
            arbitration_id=self.arbitration_id[index],
            is_extended=self.is_extended[index],
            is_fd=self.is_fd[index],
            is_error=self.is_error[index],
            dlc=self.dlc[index],
            channel=self.channel[index],
            data=self.data[index] if data is None else data,
            is_remote=self.is_remote[index],
            source=self.source,
        )

    def to_messages(self) -> list:
        """Convert to python-can ``Message`` objects (slow path, for python-can writers/tests)."""
        import can

        out = []
        for i in range(len(self)):
            n = int(self.dlc[i])
            out.append(can.Message(
                timestamp=float(self.timestamp[i]),
                arbitration_id=int(self.arbitration_id[i]),
                is_extended_id=bool(self.is_extended[i]),
                is_fd=bool(self.is_fd[i]),
                is_error_frame=bool(self.is_error[i]),
                is_remote_frame=bool(self.is_remote[i]),
                dlc=n,
                channel=int(self.channel[i]),
                data=bytes(self.data[i, :n]) if not self.is_remote[i] else None,
                check=False,
            ))
        return out

    def __repr__(self) -> str:
        span = ""
        if len(self):
            span = f", t={self.timestamp[0]:.3f}..{self.timestamp[-1]:.3f} s"
        return f"FrameTable({len(self)} frames, width {self.width}{span}, source={self.source!r})"


def _channel_index(channel) -> int:
    """python-can channels are ints, strings ('can0', '1') or None; keep a small integer."""
    if channel is None:
        return 0
    if isinstance(channel, (int, np.integer)):
        return int(channel) & 0xFF
    digits = "".join(ch for ch in str(channel) if ch.isdigit())
    return int(digits) & 0xFF if digits else 0
