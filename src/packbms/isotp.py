"""ISO-TP (ISO 15765-2) reassembly, so UDS/OBD-polled data decodes with its DBC.

Diagnostic requests (UDS ``0x22`` read data by identifier, or Nissan's ``0x21``) are answered
with messages longer than a CAN frame, split into a first frame and consecutive frames.
:func:`reassemble` joins them back, per stream (channel, id kind and arbitration id), and
returns an :class:`IsoTpMessages` table that :func:`packbms.dbc.decode` decodes like frames::

    frames = read_log("kona.MF4")
    messages = reassemble(frames, pairs=[(0x7E4, 0x7EC)])     # or pairs=None: auto-detect
    table = decode(messages, compile_database("tp_uds.dbc"))

Payload convention
------------------
``data[j, 0]`` is the low byte of the message length and the message follows from
``data[j, 1]``: the layout CSS Electronics' UDS DBCs (``tp_uds.dbc``) assume — byte 0 is the
length byte of the first frame (or the PCI byte of a single frame, whose high nibble is 0),
byte 1 the service id. ``length_byte=False`` drops that byte (``data[j, 0]`` = service id).
Padding bytes after the message are not kept: ``data`` is zero beyond ``payload_length``.
Because the length of a reassembled message is exact, :func:`~packbms.dbc.decode` checks it per
signal (a signal is present when the payload carries all its bytes) instead of requiring the
DBC's message length, which UDS DBCs often set to a guess.

The width of ``data`` is the longest message (plus the length byte) rounded up to 8 bytes. A
message longer than ``max_length`` bytes (default 4095, the classic ISO-TP limit; the 32-bit
escape of ISO 15765-2:2016 is understood) is skipped and counted as ``too_long``, so one
runaway length cannot size the table.
"""

from __future__ import annotations

from collections.abc import Iterable
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import PackBMSError
from .io.frames import FrameTable
from .kernels import isotp as _k

__all__ = ["IsoTpMessages", "IsoTpCounts", "IsoTpReassembler", "reassemble", "find_isotp_ids",
           "parse_pair"]

#: classic ISO-TP limit (12-bit first-frame length)
MAX_CLASSIC_LENGTH = 4095


@dataclass
class IsoTpCounts:
    """What :func:`reassemble` saw, per kind of event (frames of the selected streams only).

    Attributes
    ----------
    messages : int
        Messages completed (single-frame ones included).
    single_frame : int
        Of those, messages carried by one single frame.
    sequence_errors : int
        Messages abandoned because a consecutive frame had the wrong sequence number.
    aborted : int
        Messages abandoned because a new single or first frame arrived on their stream.
    orphans : int
        Consecutive frames with no message in progress.
    too_long : int
        Messages longer than ``max_length``, skipped.
    incomplete : int
        Messages still missing frames at the end of the table.
    bad : int
        Frames whose protocol byte is not ISO-TP or promises more bytes than the frame has.
    flow_control : int
        Flow-control frames (ignored).
    """

    messages: int = 0
    single_frame: int = 0
    sequence_errors: int = 0
    aborted: int = 0
    orphans: int = 0
    too_long: int = 0
    incomplete: int = 0
    bad: int = 0
    flow_control: int = 0


@dataclass
class IsoTpMessages:
    """Reassembled ISO-TP messages, one row each, in completion order.

    Attributes
    ----------
    timestamp : float64 [M]
        Time of the frame that completed the message (s).
    first_timestamp : float64 [M]
        Time of its first (or single) frame.
    arbitration_id : uint32 [M]
    is_extended : bool [M]
    channel : uint8 [M]
    length : int64 [M]
        Message length in bytes (without the length byte).
    data : uint8 [M, W]
        ``W`` a multiple of 8; see the module docstring for the layout.
    length_byte : bool
        Whether ``data[:, 0]`` is the length byte.
    counts : IsoTpCounts
    source : str or None
    """

    timestamp: np.ndarray
    first_timestamp: np.ndarray
    arbitration_id: np.ndarray
    is_extended: np.ndarray
    channel: np.ndarray
    length: np.ndarray
    data: np.ndarray
    length_byte: bool = True
    counts: IsoTpCounts = field(default_factory=IsoTpCounts)
    source: str | None = None

    def __len__(self) -> int:
        return len(self.timestamp)

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def payload_length(self) -> np.ndarray:
        """Bytes of ``data`` each row uses: the message, plus the length byte if kept."""
        return self.length + (1 if self.length_byte else 0)

    @property
    def is_error(self) -> np.ndarray:
        return np.zeros(len(self), bool)

    @property
    def is_remote(self) -> np.ndarray:
        return np.zeros(len(self), bool)

    def payload(self, j: int) -> bytes:
        """Row ``j``'s payload bytes (length byte included when kept)."""
        return bytes(self.data[j, :int(self.payload_length[j])])


def parse_pair(text: str) -> tuple[int, int]:
    """Parse ``"REQ:RESP"`` (hex, with or without ``0x``) into two ids.

    Raises
    ------
    PackBMSError
        Not two hexadecimal ids separated by a colon.

    Examples
    --------
    >>> parse_pair("7E4:7EC"), parse_pair("0x18DA10F1:0x18DAF110")
    ((2020, 2028), (416944369, 417001744))
    """
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        req, resp = (int(p.strip(), 16) for p in parts)
    except ValueError:
        raise PackBMSError(f"ISO-TP pair {text!r}: expected REQUEST:RESPONSE in hex, "
                           f"e.g. 7E4:7EC") from None
    for v in (req, resp):
        if not 0 <= v < 1 << 29:
            raise PackBMSError(f"ISO-TP pair {text!r}: id {v:#x} is not a CAN id (29 bits)")
    return req, resp


def _valid_pci(frames: FrameTable) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: is the first byte a plausible ISO-TP PCI, and its kind (0..3, or -1)."""
    n_bytes = np.minimum(frames.dlc.astype(np.int64), frames.width)
    b0 = frames.data[:, 0].astype(np.int64)
    b1 = frames.data[:, 1].astype(np.int64)
    kind = np.where(n_bytes > 0, b0 >> 4, -1)
    sf_len = np.where((n_bytes > 8) & (b0 == 0), b1, b0 & 15)
    sf_off = np.where((n_bytes > 8) & (b0 == 0), 2, 1)
    ff_len = ((b0 & 15) << 8) | b1
    ok = ((kind == 0) & (sf_len > 0) & (sf_off + sf_len <= n_bytes)) | \
         ((kind == 1) & (n_bytes >= 8) & ((ff_len == 0) | (ff_len > n_bytes - 2))) | \
         ((kind == 2) & (n_bytes >= 2)) | \
         ((kind == 3) & ((b0 & 15) <= 2))
    return ok & ~frames.is_error & ~frames.is_remote, np.where(ok, kind, -1)


def find_isotp_ids(frames: FrameTable, *, min_valid: float = 0.9) -> list[tuple[int, bool]]:
    """Guess which ids carry ISO-TP responses.

    An id (with its kind) qualifies when at least ``min_valid`` of its frames start with a valid
    ISO-TP protocol byte and it carries either a multi-frame message (a first frame followed,
    on that id, by consecutive frame 1) or mostly single frames of two or more bytes answering
    one service (the same first data byte, a diagnostic response 0x41..0x7F: positive
    response service ids and 0x7F, negative response) on at least half of its frames and
    twice or more. Requests (service ids below 0x40) and ordinary periodic frames do not qualify
    (a random payload starts with a valid protocol byte about one time in six).

    Returns
    -------
    list of (arbitration_id, is_extended)

    Examples
    --------
    >>> find_isotp_ids(read_log("kona.MF4"))             # doctest: +SKIP
    [(1979, False), (2028, False)]
    """
    n = len(frames)
    if n == 0:
        return []
    ok, kind = _valid_pci(frames)
    key = frames.arbitration_id.astype(np.int64) | (frames.is_extended.astype(np.int64) << 32)
    order = np.argsort(key, kind="stable")
    k_sorted = key[order]
    uniq, start, total = np.unique(k_sorted, return_index=True, return_counts=True)
    valid = np.add.reduceat(ok[order].astype(np.int64), start)
    kind_s = kind[order]
    b1_s = frames.data[order, 1]
    same_next = np.zeros(n, bool)
    same_next[:-1] = k_sorted[1:] == k_sorted[:-1]
    nxt = np.zeros(n, np.int64) - 1
    nxt[:-1] = np.where(same_next[:-1], frames.data[order[1:], 0], -1)
    multi = (kind_s == 1) & (nxt == 0x21)
    sf_len = frames.data[order, 0].astype(np.int64) & 15
    response_sf = (kind_s == 0) & (sf_len >= 2) & (b1_s >= 0x41) & (b1_s <= 0x7F)
    n_multi = np.add.reduceat(multi.astype(np.int64), start)
    # single-frame responses: one service id (the most frequent) on most of the id's frames
    group = np.repeat(np.arange(len(uniq)), total)
    pair = group[response_sf] * 256 + b1_s[response_sf].astype(np.int64)
    pairs, n_pair = np.unique(pair, return_counts=True)
    top = np.zeros(len(uniq), np.int64)
    np.maximum.at(top, pairs // 256, n_pair)
    pick = (valid >= min_valid * total) & ((n_multi > 0) | ((top >= 2) & (2 * top >= total)))
    return [(int(u & 0xFFFFFFFF), bool(u >> 32)) for u in uniq[pick]]


class IsoTpReassembler:
    """Reassemble ISO-TP messages from a log read chunk by chunk (messages may straddle chunks).

    Parameters are those of :func:`reassemble`. Call :meth:`feed` with each chunk, in log
    order, then :meth:`finish`; :attr:`counts` accumulates what happened. With neither
    ``pairs`` nor ``ids``, the ids :func:`find_isotp_ids` finds in each chunk join the set (a
    message on an id before its first detection is not recovered).

    Examples
    --------
    >>> r = IsoTpReassembler(pairs=["7E4:7EC"])
    >>> parts = [r.feed(chunk) for chunk in iter_log("drive.MF4")]   # doctest: +SKIP
    >>> r.finish().incomplete                                          # doctest: +SKIP
    0
    """

    def __init__(self, pairs: Iterable | None = None, *, ids: Iterable[int] | None = None,
                 max_length: int = MAX_CLASSIC_LENGTH, length_byte: bool = True):
        max_length = int(max_length)
        if not 1 <= max_length < 1 << 32:
            raise PackBMSError(f"max_length must be 1 .. 2**32 - 1 bytes, got {max_length}")
        wanted: list[int] = []
        for p in pairs or ():
            req, resp = parse_pair(p) if isinstance(p, str) else (int(p[0]), int(p[1]))
            wanted += [req, resp]
        for i in ids or ():
            if not 0 <= int(i) < 1 << 29:
                raise PackBMSError(f"ISO-TP id {int(i):#x} is not a CAN id (29 bits)")
            wanted.append(int(i))
        self.ids = sorted(set(wanted))
        self.auto = not self.ids
        self.max_length = max_length
        self.length_byte = bool(length_byte)
        self.counts = IsoTpCounts()
        self._auto_keys: set[int] = set()
        self._streams: dict[int, int] = {}       # (channel << 33 | ext << 32 | id) -> stream
        self._keys = np.zeros(0, np.int64)
        self._expect = np.zeros(0, np.int64)
        self._got = np.zeros(0, np.int64)
        self._seq = np.zeros(0, np.int64)
        self._skipping = np.zeros(0, bool)
        self._first_ts = np.zeros(0, np.float64)
        self._buf = np.zeros((0, 8), np.uint8)

    def _streams_of(self, keys: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(keys, return_inverse=True)
        new = [int(u) for u in uniq if int(u) not in self._streams]
        if new:
            for u in new:
                self._streams[u] = len(self._streams)
            grow = len(new)
            self._keys = np.concatenate([self._keys, np.array(new, np.int64)])
            self._expect = np.concatenate([self._expect, np.zeros(grow, np.int64)])
            self._got = np.concatenate([self._got, np.zeros(grow, np.int64)])
            self._seq = np.concatenate([self._seq, np.zeros(grow, np.int64)])
            self._skipping = np.concatenate([self._skipping, np.zeros(grow, bool)])
            self._first_ts = np.concatenate([self._first_ts, np.zeros(grow)])
            self._buf = np.concatenate([self._buf, np.zeros((grow, self._buf.shape[1]),
                                                            np.uint8)])
        index = np.array([self._streams[int(u)] for u in uniq], np.int64)
        return index[inverse]

    def feed(self, frames: FrameTable) -> IsoTpMessages:
        """Reassemble one chunk; returns the messages completed in it."""
        if not isinstance(frames, FrameTable):
            raise TypeError(f"feed() expects a FrameTable, got {type(frames).__name__}")
        key = (frames.arbitration_id.astype(np.int64)
               | (frames.is_extended.astype(np.int64) << 32)
               | (frames.channel.astype(np.int64) << 33))
        if self.auto:
            self._auto_keys.update(i | (int(e) << 32) for i, e in find_isotp_ids(frames))
            sel = np.isin(key & ((1 << 33) - 1), np.array(sorted(self._auto_keys), np.int64))
        else:
            sel = np.isin(frames.arbitration_id, np.array(self.ids, np.uint32))
        sel &= ~frames.is_error & ~frames.is_remote
        stream = np.full(len(frames), -1, np.int64)
        if sel.any():
            stream[sel] = self._streams_of(key[sel])

        state = (self._expect, self._got, self._seq, self._skipping, self._first_ts)
        counts = np.zeros(_k.N_COUNTS, np.int64)
        none_u8 = np.zeros((1, 1), np.uint8)
        none_i8 = np.zeros(1, np.int64)
        none_f8 = np.zeros(1, np.float64)
        _k.reassemble(frames.data, frames.dlc, frames.timestamp, stream, self.max_length,
                      self.length_byte, False, *[a.copy() for a in state], none_u8,
                      none_u8, none_i8, none_i8, none_f8, none_f8, counts)
        m = int(counts[_k.MESSAGES])
        need = int(counts[_k.MAX_STARTED])
        if need > self._buf.shape[1]:      # room for the longest message started so far
            bigger = np.zeros((self._buf.shape[0], need), np.uint8)
            bigger[:, :self._buf.shape[1]] = self._buf
            self._buf = bigger
        pre = 1 if self.length_byte else 0
        width = max(8, -(-(int(counts[_k.MAX_LENGTH]) + pre) // 8) * 8)
        out_data = np.zeros((m, width), np.uint8)
        out_length = np.zeros(m, np.int64)
        out_stream = np.zeros(m, np.int64)
        out_first = np.zeros(m, np.float64)
        out_ts = np.zeros(m, np.float64)
        counts[:] = 0
        _k.reassemble(frames.data, frames.dlc, frames.timestamp, stream, self.max_length,
                      self.length_byte, True, *state, self._buf, out_data, out_length,
                      out_stream, out_first, out_ts, counts)
        c = self.counts
        c.messages += int(counts[_k.MESSAGES])
        c.single_frame += int(counts[_k.SINGLE])
        c.sequence_errors += int(counts[_k.SEQUENCE_ERRORS])
        c.aborted += int(counts[_k.ABORTED])
        c.orphans += int(counts[_k.ORPHANS])
        c.too_long += int(counts[_k.TOO_LONG])
        c.bad += int(counts[_k.BAD])
        c.flow_control += int(counts[_k.FLOW_CONTROL])
        skey = self._keys[out_stream] if m else np.zeros(0, np.int64)
        return IsoTpMessages(
            timestamp=out_ts, first_timestamp=out_first,
            arbitration_id=(skey & 0xFFFFFFFF).astype(np.uint32),
            is_extended=((skey >> 32) & 1).astype(bool),
            channel=(skey >> 33).astype(np.uint8),
            length=out_length, data=out_data, length_byte=self.length_byte,
            counts=dataclasses.replace(c), source=frames.source)

    def finish(self) -> IsoTpCounts:
        """End of the log: messages still in progress count as ``incomplete``; returns the
        accumulated counts."""
        self.counts.incomplete += int((self._expect > 0).sum())
        self._expect[:] = 0
        self._skipping[:] = False
        return self.counts


def reassemble(frames: FrameTable, pairs: Iterable | None = None, *,
               ids: Iterable[int] | None = None, max_length: int = MAX_CLASSIC_LENGTH,
               length_byte: bool = True) -> IsoTpMessages:
    """Reassemble the ISO-TP messages of a frame table.

    Parameters
    ----------
    frames : FrameTable
        Frames in log order (one stream per channel, id kind and id: the same id on two
        channels is two streams).
    pairs : iterable of (request_id, response_id) or "REQ:RESP" strings, optional
        Diagnostic pairs; both ids of each pair are reassembled (requests usually fit single
        frames; flow-control frames are ignored). ``None`` together with ``ids=None``: the ids
        :func:`find_isotp_ids` finds.
    ids : iterable of int, optional
        More ids to reassemble (e.g. only the responses).
    max_length : int
        Longest message kept, in bytes (1 .. 2**32 - 1); longer ones are counted as
        ``too_long`` and skipped.
    length_byte : bool
        Keep the length byte before each message (``data[:, 0]``; the CSS convention), else
        ``data[:, 0]`` is the first message byte (the service id).

    Returns
    -------
    IsoTpMessages
        With :class:`IsoTpCounts` of what happened (sequence errors, aborted and incomplete
        messages, orphan consecutive frames, ...). For a log read in chunks, use
        :class:`IsoTpReassembler`.

    Raises
    ------
    PackBMSError
        A bad pair or id, or ``max_length`` out of range.

    Examples
    --------
    >>> from packbms.io.frames import FrameTable
    >>> ft = FrameTable.empty(3)
    >>> ft.arbitration_id[:] = 0x7EC
    >>> ft.dlc[:] = 8
    >>> ft.data[0] = [0x10, 0x09, 0x62, 0x01, 0x01, 0xAA, 0xBB, 0xCC]   # first frame, 9 bytes
    >>> ft.data[1] = [0x30, 0, 0, 0, 0, 0, 0, 0]                         # flow control: ignored
    >>> ft.data[2] = [0x21, 0xDD, 0xEE, 0xFF, 0x55, 0x55, 0x55, 0x55]   # consecutive frame 1
    >>> m = reassemble(ft, ids=[0x7EC])
    >>> m.payload(0).hex(), m.counts.messages, m.counts.flow_control
    ('09620101aabbccddeeff', 1, 1)
    """
    r = IsoTpReassembler(pairs, ids=ids, max_length=max_length, length_byte=length_byte)
    out = r.feed(frames)
    out.counts = dataclasses.replace(r.finish())
    return out
