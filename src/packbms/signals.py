"""Decoded signals: what :func:`packbms.dbc.decode` returns and :mod:`packbms.telemetry` consumes.

Layout
------
A :class:`MessageSignals` holds one message's frames (``timestamps``, one row per frame) and,
per signal, only the values of the rows that carry it: a signal present in every row stores
``n`` values; a multiplexed signal stores the values of the rows whose multiplexer selects it
plus those rows' numbers (shared by every signal under the same multiplexer values). Nothing is
stored for absent signals, so foxbms' 433-signal ``f_CellVoltages`` (9 signals per frame) costs
about what its 9 signals cost, not 433 columns of NaN.

Per-signal access (cheap, no copies):

* :meth:`MessageSignals.signal` -> ``(timestamps, values)`` where present;
* :meth:`MessageSignals.sparse` -> ``(rows, values)`` with ``rows`` None when every row carries
  the signal;
* :meth:`MessageSignals.rows` -> row numbers carrying the signal;
* :meth:`MessageSignals.dense` -> ``(values [n] with NaN where absent, present [n])``.

The dense ``values [n, k]`` / ``present [n, k]`` matrices of earlier versions are still
available as properties, built on first use (and cached): convenient for small tables and
tests, but they cost ``n * k`` memory, so hot paths use the per-signal accessors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DatabaseError, closest_names

__all__ = ["MessageSignals", "SignalTable", "DecodeCounts", "concat_signal_tables"]

_EMPTY_F8 = np.zeros(0, np.float64)


class MessageSignals:
    """The decoded signals of one database message, one row per received frame.

    Build it from dense matrices (``values`` [n, k] and ``present`` [n, k], the form tests and
    hand-made tables use) or, as :func:`packbms.dbc.decode` does, from flat per-signal storage
    (:meth:`from_flat`).

    Parameters
    ----------
    name : str
        Message name in the database.
    frame_id : int
        Arbitration ID as the database gives it.
    timestamps : float64 [n]
        Frame timestamps (s), in log order.
    signal_names : sequence of str
        The message's signals, in database order (``k`` of them).
    values : float64 [n, k], optional
        Physical values; ignored where ``present`` is False.
    present : bool [n, k], optional
        Where each signal is carried (default: everywhere).

    Attributes
    ----------
    name, frame_id, timestamps, signal_names
        As given (``signal_names`` a tuple).

    Examples
    --------
    >>> m = MessageSignals(name="CV", frame_id=0x200, timestamps=[0.0, 0.1],
    ...                    signal_names=("G", "V1"), values=[[0, 3.7], [1, 0.0]],
    ...                    present=[[True, True], [True, False]])
    >>> m.signal("V1")
    (array([0.]), array([3.7]))
    >>> m.dense("V1")[1].tolist(), m.sparse("G")[0] is None
    ([True, False], True)
    """

    __slots__ = ("name", "frame_id", "timestamps", "signal_names", "_values", "_value_start",
                 "_count", "_rows", "_row_start", "_dense", "_index")

    def __init__(self, name, frame_id, timestamps, signal_names, values=None, present=None):
        self.name = str(name)
        self.frame_id = int(frame_id)
        self.timestamps = np.ascontiguousarray(timestamps, dtype=np.float64)
        self.signal_names = tuple(signal_names)
        n, k = len(self.timestamps), len(self.signal_names)
        self._index = None
        self._dense = None
        vals = (np.zeros((n, k)) if values is None else
                np.asarray(values, dtype=np.float64).reshape(n, k))
        pres = (np.ones((n, k), bool) if present is None else
                np.asarray(present, dtype=bool).reshape(n, k))
        counts = pres.sum(axis=0).astype(np.int64)
        full = counts == n
        self._count = counts
        self._value_start = np.zeros(k, np.int64)
        np.cumsum(counts[:-1], out=self._value_start[1:])
        self._values = np.ascontiguousarray(vals.T[pres.T])   # column by column
        self._row_start = np.full(k, -1, np.int64)
        parts, at = [], 0
        for j in np.flatnonzero(~full):
            r = np.flatnonzero(pres[:, j])
            self._row_start[j] = at
            parts.append(r)
            at += len(r)
        self._rows = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    @classmethod
    def from_flat(cls, name, frame_id, timestamps, signal_names, values, value_start, count,
                  rows, row_start) -> "MessageSignals":
        """Wrap flat per-signal storage without copying.

        Signal ``j`` has ``count[j]`` values ``values[value_start[j]:][:count[j]]``; its rows
        are ``rows[row_start[j]:][:count[j]]``, or every row when ``row_start[j] == -1`` (then
        ``count[j] == len(timestamps)``). Rows are ascending. :func:`packbms.dbc.decode` lets
        all messages of a table share one ``values`` and one ``rows`` buffer (each message
        keeps them alive).
        """
        self = cls.__new__(cls)
        self.name = str(name)
        self.frame_id = int(frame_id)
        self.timestamps = timestamps
        self.signal_names = tuple(signal_names)
        self._values = values
        self._value_start = np.asarray(value_start, np.int64)
        self._count = np.asarray(count, np.int64)
        self._rows = rows
        self._row_start = np.asarray(row_start, np.int64)
        self._dense = None
        self._index = None
        return self

    @classmethod
    def _wrap(cls, name, frame_id, timestamps, signal_names, values, value_start, count, rows,
              row_start) -> "MessageSignals":
        """:meth:`from_flat` for callers that already hold the exact types (str, int, tuple,
        int64 arrays): no conversions, so wrapping costs well under a microsecond."""
        self = cls.__new__(cls)
        self.name = name
        self.frame_id = frame_id
        self.timestamps = timestamps
        self.signal_names = signal_names
        self._values = values
        self._value_start = value_start
        self._count = count
        self._rows = rows
        self._row_start = row_start
        self._dense = None
        self._index = None
        return self

    # -- names ----------------------------------------------------------------------------
    def column(self, signal) -> int:
        """Position of ``signal`` (a name, or already a position) in ``signal_names``.

        Raises
        ------
        DatabaseError
            The message has no such signal (near misses are suggested).
        """
        if isinstance(signal, (int, np.integer)):
            if 0 <= int(signal) < len(self.signal_names):
                return int(signal)
            raise DatabaseError(f"message {self.name!r} has {len(self.signal_names)} signals; "
                                f"no column {signal}")
        if self._index is None:
            self._index = {s: j for j, s in enumerate(self.signal_names)}
        try:
            return self._index[signal]
        except KeyError:
            raise DatabaseError(
                f"message {self.name!r} has no signal {signal!r}; "
                f"best matches are {closest_names(str(signal), self.signal_names)}") from None

    def __len__(self) -> int:
        return len(self.timestamps)

    def __repr__(self) -> str:
        return (f"MessageSignals({self.name!r}, {len(self)} frames, "
                f"{len(self.signal_names)} signals)")

    # -- per-signal access ----------------------------------------------------------------
    def count(self, signal) -> int:
        """Number of rows carrying ``signal``."""
        return int(self._count[self.column(signal)])

    def sparse(self, signal) -> tuple[np.ndarray | None, np.ndarray]:
        """``(rows, values)``: the rows carrying ``signal`` and its values there; ``rows`` is
        None when every row carries it (then ``values`` has one entry per row)."""
        j = self.column(signal)
        v0, c = int(self._value_start[j]), int(self._count[j])
        values = self._values[v0:v0 + c]
        r0 = int(self._row_start[j])
        return (None if r0 < 0 else self._rows[r0:r0 + c]), values

    def rows(self, signal) -> np.ndarray:
        """Row numbers (int64, ascending) of the frames carrying ``signal``."""
        rows, values = self.sparse(signal)
        return np.arange(len(values), dtype=np.int64) if rows is None else rows

    def signal(self, signal) -> tuple[np.ndarray, np.ndarray]:
        """``(timestamps, values)`` of the frames carrying ``signal``."""
        rows, values = self.sparse(signal)
        return (self.timestamps if rows is None else self.timestamps[rows]), values

    def dense(self, signal) -> tuple[np.ndarray, np.ndarray]:
        """``(values, present)``, one entry per row: NaN and False where ``signal`` is absent."""
        rows, values = self.sparse(signal)
        n = len(self)
        if rows is None:
            return values, np.ones(n, bool)
        out = np.full(n, np.nan)
        out[rows] = values
        present = np.zeros(n, bool)
        present[rows] = True
        return out, present

    def always_present(self, signal) -> bool:
        """True when every row carries ``signal``."""
        return bool(self._row_start[self.column(signal)] < 0)

    # -- dense matrices (compatibility; built on first use) -------------------------------
    def _matrices(self):
        if self._dense is None:
            n, k = len(self), len(self.signal_names)
            values = np.full((n, k), np.nan)
            present = np.zeros((n, k), bool)
            for j in range(k):
                rows, v = self.sparse(j)
                if rows is None:
                    values[:, j] = v
                    present[:, j] = True
                else:
                    values[rows, j] = v
                    present[rows, j] = True
            self._dense = (values, present)
        return self._dense

    @property
    def values(self) -> np.ndarray:
        """float64 [n, k] physical values, NaN where absent: a dense copy built on first use
        (n * k memory; writing to it does not change the table). Prefer :meth:`sparse` /
        :meth:`signal` for large tables."""
        return self._matrices()[0]

    @property
    def present(self) -> np.ndarray:
        """bool [n, k]: which row carries which signal (built on first use)."""
        return self._matrices()[1]

    @property
    def nbytes(self) -> int:
        """Bytes held by the timestamps and per-signal storage (not the dense matrices)."""
        sets = {(int(a), int(c)) for a, c in zip(self._row_start, self._count) if a >= 0}
        return int(self.timestamps.nbytes + 8 * self._count.sum() + 8 * sum(c for _, c in sets))

    # -- joining ----------------------------------------------------------------------------
    @classmethod
    def concat(cls, parts) -> "MessageSignals":
        """Join the same message decoded from consecutive chunks (rows renumbered)."""
        parts = list(parts)
        first = parts[0]
        if len(parts) == 1:
            return first
        k = len(first.signal_names)
        sizes = np.array([len(p) for p in parts], np.int64)
        shift = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        count = np.zeros(k, np.int64)
        row_start = np.full(k, -1, np.int64)
        value_chunks, row_chunks = [], []
        at = 0
        for j in range(k):
            pieces = [p.sparse(j) for p in parts]
            value_chunks.extend(v for _, v in pieces)
            c = sum(len(v) for _, v in pieces)
            count[j] = c
            if any(r is not None for r, _ in pieces):
                row_start[j] = at
                for (r, v), s in zip(pieces, shift):
                    row_chunks.append((np.arange(len(v), dtype=np.int64) if r is None else r)
                                      + s)
                at += c
        value_start = np.zeros(k, np.int64)
        np.cumsum(count[:-1], out=value_start[1:])
        values = np.concatenate(value_chunks) if value_chunks else _EMPTY_F8
        rows = np.concatenate(row_chunks) if row_chunks else np.zeros(0, np.int64)
        ts = np.concatenate([p.timestamps for p in parts])
        return cls.from_flat(first.name, first.frame_id, ts, first.signal_names, values,
                             value_start, count, rows, row_start)


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
        return m.signal(col)

    def names(self) -> list[str]:
        """Every decoded signal name, as ``Message.Signal``."""
        return [f"{m.name}.{s}" for m in self.messages.values() for s in m.signal_names]


def concat_signal_tables(tables) -> SignalTable:
    """Join SignalTables decoded from consecutive chunks of one log (same database).

    Examples
    --------
    >>> a = SignalTable({"M": MessageSignals("M", 1, [0.0], ("x",), [[1.0]])})
    >>> b = SignalTable({"M": MessageSignals("M", 1, [0.5], ("x",), [[2.0]])})
    >>> concat_signal_tables([a, b]).signal("x")
    (array([0. , 0.5]), array([1., 2.]))
    """
    tables = list(tables)
    if not tables:
        return SignalTable()
    if len(tables) == 1:
        return tables[0]
    out = SignalTable(source=tables[0].source)
    for t in tables:
        out.counts += t.counts
    for name in tables[0].messages:
        out.messages[name] = MessageSignals.concat(
            [t.messages[name] for t in tables if name in t.messages])
    return out
