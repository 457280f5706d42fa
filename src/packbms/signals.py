"""Decoded signals: what :func:`packbms.dbc.decode` returns and :mod:`packbms.telemetry` consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DatabaseError, closest_names

__all__ = ["MessageSignals", "SignalTable", "DecodeCounts"]


@dataclass
class MessageSignals:
    """All decoded signals of one database message, one row per received frame.

    Attributes
    ----------
    name : str
        Message name in the database.
    frame_id : int
        Arbitration ID as the database gives it.
    timestamps : float64 [n]
        Frame timestamps (s), in log order.
    signal_names : tuple of str
        Column names of ``values``.
    values : float64 [n, k]
        Physical values (scale and offset applied; no value tables/choices).
    present : bool [n, k]
        True where the signal is in the frame (always, unless a multiplexer condition excludes it).
    """

    name: str
    frame_id: int
    timestamps: np.ndarray
    signal_names: tuple
    values: np.ndarray
    present: np.ndarray

    def column(self, signal: str) -> int:
        """Column index of ``signal`` in ``values``."""
        try:
            return self.signal_names.index(signal)
        except ValueError:
            raise DatabaseError(
                f"message {self.name!r} has no signal {signal!r}; "
                f"best matches are {closest_names(signal, self.signal_names)}") from None

    def __len__(self) -> int:
        return len(self.timestamps)


@dataclass
class DecodeCounts:
    """What the decoder did with each frame (every frame lands in exactly one bucket)."""

    decoded: int = 0
    unknown_id: int = 0
    too_short: int = 0
    error_or_remote: int = 0

    @property
    def total(self) -> int:
        return self.decoded + self.unknown_id + self.too_short + self.error_or_remote

    def __iadd__(self, other: "DecodeCounts") -> "DecodeCounts":
        self.decoded += other.decoded
        self.unknown_id += other.unknown_id
        self.too_short += other.too_short
        self.error_or_remote += other.error_or_remote
        return self


@dataclass
class SignalTable:
    """Decoded signals of a log, grouped by message.

    ``table.signal("BMS_PackCurrent")`` (or ``"Message.Signal"`` when a name is not unique)
    returns ``(timestamps, values)`` of the frames where the signal is present.
    """

    messages: dict = field(default_factory=dict)   # name -> MessageSignals
    counts: DecodeCounts = field(default_factory=DecodeCounts)
    source: str | None = None

    def _index(self) -> dict:
        idx: dict[str, list] = {}
        for m in self.messages.values():
            for s in m.signal_names:
                idx.setdefault(s, []).append(m.name)
        return idx

    def locate(self, name: str) -> tuple[MessageSignals, int]:
        """Find the message and column of ``name`` (``"Signal"`` or ``"Message.Signal"``).

        Raises
        ------
        DatabaseError
            When no decoded message carries the signal, or a bare name is ambiguous.
        """
        if "." in name:
            msg, sig = name.split(".", 1)
            if msg in self.messages:
                m = self.messages[msg]
                return m, m.column(sig)
        idx = self._index()
        owners = idx.get(name, [])
        if len(owners) == 1:
            m = self.messages[owners[0]]
            return m, m.column(name)
        if len(owners) > 1:
            raise DatabaseError(f"signal {name!r} exists in several messages {owners}; "
                                f"write it as 'Message.{name}'")
        raise DatabaseError(f"no decoded message carries signal {name!r}; best matches are "
                            f"{closest_names(name, idx)}")

    def signal(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Timestamps and physical values of ``name`` where it is present."""
        m, col = self.locate(name)
        keep = m.present[:, col]
        return m.timestamps[keep], m.values[keep, col]

    def names(self) -> list[str]:
        """Every decoded signal name, as ``Message.Signal``."""
        return [f"{m.name}.{s}" for m in self.messages.values() for s in m.signal_names]


def concat_signal_tables(tables) -> SignalTable:
    """Join SignalTables decoded from consecutive chunks of one log (same database)."""
    tables = list(tables)
    if not tables:
        return SignalTable()
    if len(tables) == 1:
        return tables[0]
    out = SignalTable(source=tables[0].source)
    for t in tables:
        out.counts += t.counts
    for name, first in tables[0].messages.items():
        parts = [t.messages[name] for t in tables if name in t.messages]
        out.messages[name] = MessageSignals(
            name=name, frame_id=first.frame_id,
            timestamps=np.concatenate([p.timestamps for p in parts]),
            signal_names=first.signal_names,
            values=np.concatenate([p.values for p in parts]),
            present=np.concatenate([p.present for p in parts]))
    return out
