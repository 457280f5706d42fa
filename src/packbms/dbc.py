"""CAN databases: load with cantools, compile to flat arrays, decode and encode with kernels.

cantools parses the database (DBC, KCD, SYM, ARXML, ...); :func:`compile_database` turns its
messages into flat NumPy arrays once, and :func:`decode` / :func:`encode` run Numba kernels
(:mod:`packbms.kernels.codec`) over whole frame tables. cantools never decodes frame by frame on
the hot path; it is the oracle the tests compare against.

Conventions
-----------
* Values are physical (``raw * scale + offset``) float64; value tables (choices) are not applied.
  Raw integers are exact up to 64 bits, but float64 holds integers exactly only up to 2**53:
  a wider raw value (say a 64-bit counter) comes out rounded to the nearest float64.
* A frame is matched by ``(arbitration_id, is_extended)``: the 11-bit id 0x123 and the 29-bit id
  0x123 are different messages (cantools' own ``decode_message`` does not tell them apart).
  J1939 messages are matched by parameter group number (see :func:`compile_database`).
* Decoded values are stored per signal, only for the frames that carry the signal
  (:class:`~packbms.signals.MessageSignals`): a wide multiplexed message costs what its
  present signals cost.
* Reassembled ISO-TP messages (:mod:`packbms.isotp`) decode like frames, with their exact
  payload length checked per signal instead of the DBC's message length.
* Multiplexing, simple and extended (``SG_MUL_VAL_`` chains), follows cantools' signal tree; the
  multiplexer's *raw* value selects the branch (cantools uses ``int(physical)``, the same thing
  for the usual unscaled multiplexer).
* Differences from cantools, on purpose: a frame whose multiplexer value has no branch still
  yields its other signals (cantools raises); a signal the DBC places beyond the message length
  (Model3CAN.dbc ``DI_lashAngle``) is decoded from frames long enough to carry it (cantools
  fails on every frame of such a message); overlapping signals are each read on their own.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

from .errors import DatabaseError, closest_names
from .io.frames import FrameTable
from .isotp import IsoTpMessages
from .kernels import codec as _codec
from .signals import DecodeCounts, MessageSignals, SignalTable

__all__ = ["load_database", "CompiledDatabase", "compile_database", "decode", "encode",
           "j1939_mask"]

_FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)
_ALL_ONES = 0xFFFFFFFF


def load_database(path, *, strict: bool = False):
    """Load a CAN database with cantools (any format it reads: dbc, kcd, sym, arxml, ...).

    Parameters
    ----------
    path : str or os.PathLike
        The database file.
    strict : bool
        Passed to cantools. Off by default because real DBCs often break cantools' strict
        checks (Model3CAN.dbc places a signal beyond its message's length).

    Returns
    -------
    cantools.database.can.Database

    Raises
    ------
    DatabaseError
        The file is missing, cannot be parsed, or is not a CAN database; the message names the
        file and cantools' reason.

    Examples
    --------
    >>> load_database("no/such/file.dbc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packbms.errors.DatabaseError: no/such/file.dbc: cannot load CAN database: ...
    """
    import cantools

    try:
        db = cantools.database.load_file(os.fspath(path), strict=strict)
    except Exception as e:  # cantools raises many types (OSError, ParseError, UnicodeError...)
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DatabaseError(f"{os.fspath(path)}: cannot load CAN database: {reason}") from e
    if not isinstance(db, cantools.database.can.Database):
        raise DatabaseError(f"{os.fspath(path)}: is a {type(db).__name__}, not a CAN database "
                            f"with messages and signals")
    return db


class CompiledDatabase:
    """A cantools database flattened into arrays the codec kernels read.

    Build it with :func:`compile_database`. Message ``m`` owns signals
    ``sig_first[m]:sig_stop[m]`` (in cantools' order for that message, which is also the column
    order of its decoded values).

    Attributes
    ----------
    database : cantools.database.can.Database
        The parsed database.
    cantools_messages : tuple of cantools Message
        The compiled messages, index-aligned with the arrays.
    names : tuple of str
        Message names. When the database defines one name twice with different ids (gnss.dbc),
        the definition cantools returns for that name keeps the name and the other becomes
        ``"name@0x3"`` (its frame id), so both stay decodable.
    signal_names : tuple of tuple of str
        Signal names per message.
    frame_id : uint32 [M]
    is_extended, is_fd : bool [M]
    length : int64 [M]
        Message length in bytes (a shorter frame is skipped as too short).
    encoded_length : int64 [M]
        Payload length :func:`encode` writes: the message length, widened to cover every
        signal, rounded up to a valid CAN FD length above 8.
    sig_first, sig_stop : int64 [M]
    match_mask : uint32 [M]
        A frame matches message ``m`` when ``id & match_mask[m] == frame_id[m] & match_mask[m]``
        (and the id kinds agree). All ones by default (cantools' database ``frame_id_mask``
        if set); J1939 masks the source address (see :func:`compile_database`). A frame
        whose exact id is a masked message's own id goes to that message first.
    sig_start : int64 [S]
        Normalised start bit: the LSB's sequential bit number for little-endian (Intel)
        signals, the MSB's network bit number (cantools ``utils.start_bit``) for big-endian.
    sig_length : int64 [S]
        Bits (1..64).
    sig_big_endian, sig_signed, sig_float : bool [S]
    sig_scale, sig_offset : float64 [S]
    sig_parent : int64 [S]
        Global index of the signal's multiplexer, -1 at the root (never-present signals, which
        cantools would never decode, point at themselves with no allowed value).
    sig_is_multiplexer : bool [S]
    sig_mux_first, sig_mux_stop : int64 [S]
        Slice of ``mux_values`` (sorted raw values of the parent selecting the signal).
    mux_values : int64 [V]
    sig_end_byte : int64 [S]
        Bytes a frame needs to carry the signal.
    root_signal, msg_root_first, msg_root_stop, sig_edge_first, sig_edge_stop, edge_value,
    edge_child : int64 arrays
        The multiplexer tree as the encoder walks it (see :mod:`packbms.kernels.codec`).
    eval_signal, sig_group, msg_root_group, sig_bucket_first, sig_bucket_stop, bucket_value,
    sig_group_first, sig_group_stop, group_bucket_first, group_bucket_stop, group_bucket,
    sig_msg, msg_end_byte, msg_rowsets : int64 arrays
        The same tree as the column-wise decoder uses it: each message's signals with every
        multiplexer before the signals under it, and the children of each multiplexer grouped
        by the set of values that selects them (one rowset per group, see
        :func:`packbms.kernels.codec.plan_rowsets`).
    value_order : int64 [S]
        The order :func:`decode` hands signals to the value kernel (per message, the signals
        of one rowset group and payload word next to each other, so they are decoded
        together).
    float_signals : int64
        IEEE float signals.
    j1939 : bool [M]
        Messages matched by J1939 parameter group number (see :func:`compile_database`).
    lookup_masks, lookup_group_first, lookup_keys, lookup_message : arrays
        Sorted ``(is_extended, id & mask)`` keys per distinct mask, for the id lookup kernel.
    """

    def __init__(self, database, cantools_messages, names, match_mask, j1939=None):
        self.database = database
        self.cantools_messages = tuple(cantools_messages)
        self.names = tuple(names)
        self._index = {n: i for i, n in enumerate(self.names)}
        msgs = self.cantools_messages
        n_msg = len(msgs)
        self.frame_id = np.array([m.frame_id for m in msgs], np.uint32)
        self.is_extended = np.array([bool(m.is_extended_frame) for m in msgs], bool)
        self.is_fd = np.array([bool(m.is_fd) for m in msgs], bool)
        self.length = np.array([int(m.length) for m in msgs], np.int64)
        self.match_mask = np.asarray(match_mask, np.uint32).reshape(n_msg)
        self.j1939 = (np.zeros(n_msg, bool) if j1939 is None else
                      np.asarray(j1939, bool).reshape(n_msg))

        sig_cols = {k: [] for k in ("start", "length", "big_endian", "signed", "float", "scale",
                                    "offset", "parent", "is_multiplexer", "mux_first",
                                    "mux_stop")}
        mux_values: list[int] = []
        first, stop, signal_names = [], [], []
        for m in msgs:
            base = len(sig_cols["start"])
            first.append(base)
            sigs = list(m.signals)
            signal_names.append(tuple(s.name for s in sigs))
            local = {s.name: j for j, s in enumerate(sigs)}
            reach = _reachable(sigs, local)
            for j, s in enumerate(sigs):
                _check_signal(m, s)
                big = s.byte_order == "big_endian"
                start = 8 * (s.start // 8) + (7 - s.start % 8) if big else s.start
                sig_cols["start"].append(start)
                sig_cols["length"].append(int(s.length))
                sig_cols["big_endian"].append(big)
                sig_cols["signed"].append(bool(s.is_signed) and not s.is_float)
                sig_cols["float"].append(bool(s.is_float))
                sig_cols["scale"].append(float(s.scale))
                sig_cols["offset"].append(float(s.offset))
                sig_cols["is_multiplexer"].append(bool(s.is_multiplexer))
                sig_cols["mux_first"].append(len(mux_values))
                if s.multiplexer_signal is None:
                    sig_cols["parent"].append(-1)
                elif reach[j]:
                    sig_cols["parent"].append(base + local[s.multiplexer_signal])
                    # int64 two's complement, as the kernels compare (a 64-bit unsigned
                    # multiplexer value above 2**63 wraps the same way on both sides)
                    mux_values.extend(sorted({_wrap64(int(v)) for v in s.multiplexer_ids}))
                else:
                    sig_cols["parent"].append(base + j)   # never present, as in cantools
                sig_cols["mux_stop"].append(len(mux_values))
            stop.append(len(sig_cols["start"]))
        self.signal_names = tuple(signal_names)
        self.sig_first = np.array(first, np.int64)
        self.sig_stop = np.array(stop, np.int64)
        self.sig_start = np.array(sig_cols["start"], np.int64)
        self.sig_length = np.array(sig_cols["length"], np.int64)
        self.sig_big_endian = np.array(sig_cols["big_endian"], bool)
        self.sig_signed = np.array(sig_cols["signed"], bool)
        self.sig_float = np.array(sig_cols["float"], bool)
        self.sig_scale = np.array(sig_cols["scale"], np.float64)
        self.sig_offset = np.array(sig_cols["offset"], np.float64)
        self.sig_parent = np.array(sig_cols["parent"], np.int64)
        self.sig_is_multiplexer = np.array(sig_cols["is_multiplexer"], bool)
        self.sig_mux_first = np.array(sig_cols["mux_first"], np.int64)
        self.sig_mux_stop = np.array(sig_cols["mux_stop"], np.int64)
        self.mux_values = np.array(mux_values, np.int64)

        self.sig_end_byte = (self.sig_start + self.sig_length + 7) // 8

        need = np.array([max([int(self.length[i])] +
                             [int(e) for e in self.sig_end_byte[first[i]:stop[i]]])
                         for i in range(n_msg)], np.int64)
        enc = []
        for i, n_bytes in enumerate(need):
            fit = [v for v in _FD_LENGTHS if v >= n_bytes]
            enc.append(fit[0] if fit else -1)  # -1: cannot be sent, encode() refuses it
        self.encoded_length = np.array(enc, np.int64)
        self._build_tree()
        self._build_lookup()
        self._plans: dict = {}

    # -- multiplexer tree, as the kernels walk it -------------------------------------------
    def _build_tree(self) -> None:
        roots, root_first, root_stop = [], [], []
        edges: list[tuple[int, int, int]] = []
        for m in range(len(self.names)):
            root_first.append(len(roots))
            for s in range(int(self.sig_first[m]), int(self.sig_stop[m])):
                p = int(self.sig_parent[s])
                if p < 0:
                    roots.append(s)
                elif p != s:
                    for v in self.mux_values[self.sig_mux_first[s]:self.sig_mux_stop[s]]:
                        edges.append((p, int(v), s))
            root_stop.append(len(roots))
        edges.sort()
        n_sig = len(self.sig_start)
        self.root_signal = np.array(roots, np.int64)
        self.msg_root_first = np.array(root_first, np.int64)
        self.msg_root_stop = np.array(root_stop, np.int64)
        self.edge_value = np.array([e[1] for e in edges], np.int64)
        self.edge_child = np.array([e[2] for e in edges], np.int64)
        parents = np.array([e[0] for e in edges], np.int64)
        self.sig_edge_first = np.searchsorted(parents, np.arange(n_sig), "left").astype(np.int64)
        self.sig_edge_stop = np.searchsorted(parents, np.arange(n_sig), "right").astype(np.int64)

        # column-wise decoding visits multiplexers before the signals under them (BFS), and
        # groups the children of each multiplexer by the set of values selecting them: one
        # rowset per group, one bucket per distinct value (see kernels.codec.plan_rowsets)
        eval_signal = np.empty(n_sig, np.int64)
        sig_group = np.full(n_sig, -1, np.int64)
        sig_bucket_first = np.zeros(n_sig, np.int64)
        sig_bucket_stop = np.zeros(n_sig, np.int64)
        sig_group_first = np.zeros(n_sig, np.int64)
        sig_group_stop = np.zeros(n_sig, np.int64)
        bucket_value: list[int] = []
        group_buckets: list[list[int]] = []
        root_group = []
        for m in range(len(self.names)):
            first, stop = int(self.sig_first[m]), int(self.sig_stop[m])
            g_root = len(group_buckets)
            group_buckets.append([])
            root_group.append(g_root)
            queue = deque(int(x) for x in roots[root_first[m]:root_stop[m]])
            for x in queue:
                sig_group[x] = g_root
            seen: list[int] = []
            while queue:
                sig = queue.popleft()
                seen.append(sig)
                e0, e1 = int(self.sig_edge_first[sig]), int(self.sig_edge_stop[sig])
                if e1 == e0:
                    continue
                values = sorted({int(v) for v in self.edge_value[e0:e1]})
                b0 = len(bucket_value)
                bucket_value.extend(values)
                sig_bucket_first[sig], sig_bucket_stop[sig] = b0, len(bucket_value)
                bucket = {v: b0 + i for i, v in enumerate(values)}
                children = sorted({int(c) for c in self.edge_child[e0:e1]})
                keys: dict[tuple, int] = {}
                sig_group_first[sig] = len(group_buckets)
                for c in children:
                    key = tuple(sorted({int(v) for v in
                                        self.mux_values[self.sig_mux_first[c]:
                                                        self.sig_mux_stop[c]]}))
                    if key not in keys:
                        keys[key] = len(group_buckets)
                        group_buckets.append([bucket[v] for v in key])
                    sig_group[c] = keys[key]
                sig_group_stop[sig] = len(group_buckets)
                queue.extend(children)
            reached = set(seen)
            rest = [x for x in range(first, stop) if x not in reached]
            eval_signal[first:stop] = seen + rest
        #: each message's signals, every multiplexer before the signals under it
        self.eval_signal = eval_signal
        #: rowset group of each signal (-1: never present); ``msg_root_group[m]`` = every row
        self.sig_group = sig_group
        self.msg_root_group = np.array(root_group, np.int64)
        #: a multiplexer's buckets (sorted raw values its children need) and its groups
        self.sig_bucket_first, self.sig_bucket_stop = sig_bucket_first, sig_bucket_stop
        self.bucket_value = np.array(bucket_value, np.int64)
        self.sig_group_first, self.sig_group_stop = sig_group_first, sig_group_stop
        sizes = np.array([len(b) for b in group_buckets], np.int64)
        self.group_bucket_first = np.zeros(len(group_buckets), np.int64)
        np.cumsum(sizes[:-1], out=self.group_bucket_first[1:])
        self.group_bucket_stop = self.group_bucket_first + sizes
        self.group_bucket = np.array([b for bs in group_buckets for b in bs], np.int64)
        self.sig_msg = np.repeat(np.arange(len(self.names), dtype=np.int64),
                                 self.sig_stop - self.sig_first)
        #: rowsets a message may write per row: one per multiplexer (its single-value
        #: groups' buckets) plus one per multi-value group
        is_mux = self.sig_bucket_stop > self.sig_bucket_first
        multi = np.zeros(n_sig, np.int64)
        for sig in np.flatnonzero(is_mux):
            multi[sig] = int(((self.group_bucket_stop - self.group_bucket_first)
                              [self.sig_group_first[sig]:self.sig_group_stop[sig]] > 1).sum())
        self.msg_rowsets = np.bincount(self.sig_msg, weights=is_mux + multi,
                                       minlength=len(self.names)).astype(np.int64)
        #: payload bytes each message's signals reach (at least 1)
        self.msg_end_byte = np.array(
            [max([1] + [int(e) for e in self.sig_end_byte[self.sig_first[m]:self.sig_stop[m]]])
             for m in range(len(self.names))], np.int64)
        #: the order :func:`decode` hands signals to the value kernel: per message, the
        #: signals of one rowset group and payload word next to each other (decoded together)
        self.value_order = np.lexsort((self.sig_start >> 6, self.sig_group,
                                       self.sig_msg)).astype(np.int64)
        #: IEEE float signals (their bits are turned into values outside the kernel)
        self.float_signals = np.flatnonzero(self.sig_float).astype(np.int64)

    # -- lookup ---------------------------------------------------------------------------
    def _build_lookup(self) -> None:
        # a masked message also answers to its exact id, tried first: with two definitions of
        # one J1939 PGN from different senders, the exact source address picks the message
        entries = [(int(m), int(self.match_mask[m])) for m in range(len(self.names))]
        entries += [(int(m), _ALL_ONES) for m in range(len(self.names))
                    if int(self.match_mask[m]) != _ALL_ONES]
        masks = sorted({mask for _, mask in entries}, key=lambda v: (-bin(v).count("1"), v))
        keys, owners, group_first = [], [], [0]
        for mask in masks:
            table: dict[int, int] = {}
            for i, _ in ((i, mk) for i, mk in entries if mk == mask):
                key = (int(self.is_extended[i]) << 32) | (int(self.frame_id[i]) & mask)
                if mask == _ALL_ONES and int(self.match_mask[i]) != _ALL_ONES and key in table \
                        and int(self.match_mask[table[key]]) == _ALL_ONES:
                    continue    # an exact definition keeps its id
                table[key] = int(i)   # a later definition wins, as in cantools
            for key in sorted(table):
                keys.append(key)
                owners.append(table[key])
            group_first.append(len(keys))
        self.lookup_masks = np.array(masks, np.uint32)
        self.lookup_group_first = np.array(group_first, np.int64)
        self.lookup_keys = np.array(keys, np.uint64)
        self.lookup_message = np.array(owners, np.int64)

    # -- what decode() needs per selection, computed once -------------------------------
    def _decode_plan(self, messages, width: int, reassembled: bool) -> "_DecodePlan":
        if messages is not None:
            messages = (messages,) if isinstance(messages, str) else tuple(messages)
        key = (messages, width, reassembled)
        try:
            hash(key)
        except TypeError:       # an unhashable selection: plan without caching
            return _DecodePlan(self, messages, width, reassembled)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 64:
                self._plans.clear()
            plan = self._plans[key] = _DecodePlan(self, messages, width, reassembled)
        return plan

    # -- names ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"CompiledDatabase({len(self.names)} messages, {len(self.sig_start)} signals, "
                f"{int((self.sig_parent >= 0).sum())} multiplexed)")

    def message_index(self, message) -> int:
        """Index of a message given by name, index, or cantools ``Message``.

        Raises
        ------
        DatabaseError
            No such compiled message (the message suggests near misses).
        """
        if isinstance(message, (int, np.integer)):
            if 0 <= int(message) < len(self.names):
                return int(message)
            raise DatabaseError(f"message index {message} is outside 0..{len(self.names) - 1}")
        if not isinstance(message, str):
            for i, m in enumerate(self.cantools_messages):
                if m is message:
                    return i
            message = getattr(message, "name", str(message))
        try:
            return self._index[message]
        except KeyError:
            raise DatabaseError(
                f"the compiled database has no message {message!r}; best matches are "
                f"{closest_names(message, self.names)}") from None

    def signal_index(self, message, signal: str) -> int:
        """Global signal index of ``signal`` in ``message``.

        Raises
        ------
        DatabaseError
            No such message or signal.
        """
        m = self.message_index(message)
        names = self.signal_names[m]
        if signal not in names:
            raise DatabaseError(f"message {self.names[m]!r} has no signal {signal!r}; best "
                                f"matches are {closest_names(signal, names)}")
        return int(self.sig_first[m]) + names.index(signal)


def _wrap64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _check_signal(message, signal) -> None:
    if not 1 <= signal.length <= 64:
        raise DatabaseError(f"message {message.name!r} signal {signal.name!r} is "
                            f"{signal.length} bits long; packbms decodes 1..64-bit signals")
    if signal.is_float and signal.length not in (32, 64):
        raise DatabaseError(f"message {message.name!r} signal {signal.name!r} is a "
                            f"{signal.length}-bit float; only IEEE float32 and float64 are "
                            f"supported")
    if signal.scale == 0:
        raise DatabaseError(f"message {message.name!r} signal {signal.name!r} has scale 0; "
                            f"physical values could not be encoded")


def _reachable(signals, local) -> list[bool]:
    """Which multiplexed signals cantools' signal tree reaches from the root.

    A signal under a multiplexer is decoded only when that multiplexer is itself reachable and
    flagged as a multiplexer, and the signal lists multiplexer ids; anything else (a dangling
    or cyclic reference) is never decoded by cantools, so never present here either.
    """
    reach = [s.multiplexer_signal is None for s in signals]
    changed = True
    while changed:
        changed = False
        for j, s in enumerate(signals):
            if reach[j] or s.multiplexer_signal is None or not s.multiplexer_ids:
                continue
            p = local.get(s.multiplexer_signal)
            if p is not None and reach[p] and signals[p].is_multiplexer:
                reach[j] = True
                changed = True
    return reach


def compile_database(db_or_path, messages: Iterable | None = None, *,
                     match_mask: int | Mapping[str, int] | None = None,
                     j1939: bool | None = None, strict: bool = False) -> CompiledDatabase:
    """Flatten a cantools database (or a database file) for the codec kernels.

    Parameters
    ----------
    db_or_path : cantools Database, str or os.PathLike
        A loaded database, or a file for :func:`load_database`.
    messages : iterable of str or cantools Message, optional
        Compile only these messages (by name); default every message. Container messages
        (AUTOSAR PDU containers) are never compiled.
    match_mask : int or mapping of message name to int, optional
        Identifier bits that must match (see :attr:`CompiledDatabase.match_mask`): one mask for
        every message, or per message name. Default: the database's ``frame_id_mask`` (all
        ones unless the database sets one), or the J1939 masks below. A mask given here
        overrides the J1939 mask of the messages it covers.
    j1939 : bool, optional
        Match J1939 messages by parameter group number (PGN), as cantools'
        ``j1939.pgn_from_frame_id`` defines it: priority and source address are ignored, and
        for PDU1 messages (PDU format < 240) the destination address byte too. Masks:
        ``0x03FFFF00`` (PDU2) and ``0x03FF0000`` (PDU1). A frame whose exact id is a message's
        own id still goes to that message first (two definitions of one PGN from different
        senders stay apart). ``None`` (default) decides from the database: every extended
        message when its ``ProtocolType`` attribute is ``"J1939"``, otherwise the messages
        cantools marks ``protocol == "j1939"`` (``VFrameFormat`` J1939PG). ``True``: every
        extended message; ``False``: exact ids only.
    strict : bool
        Passed to :func:`load_database` when given a path.

    Returns
    -------
    CompiledDatabase

    Raises
    ------
    DatabaseError
        The file cannot be loaded, a requested message does not exist, or a signal cannot be
        handled (longer than 64 bits, a float that is not 32 or 64 bits, scale 0).

    Examples
    --------
    >>> import cantools
    >>> db = cantools.database.load_string('''VERSION ""
    ... BO_ 801 Pack: 4 BMS
    ...  SG_ Current : 7|16@0- (0.01,0) [-300|300] "A" Vector__XXX
    ...  SG_ Voltage : 23|16@0+ (0.01,0) [0|600] "V" Vector__XXX
    ... ''', database_format="dbc")
    >>> cdb = compile_database(db)
    >>> cdb.names, cdb.signal_names
    (('Pack',), (('Current', 'Voltage'),))
    """
    import cantools

    if isinstance(db_or_path, (str, os.PathLike)):
        db = load_database(db_or_path, strict=strict)
    elif isinstance(db_or_path, cantools.database.can.Database):
        db = db_or_path
    else:
        raise DatabaseError(f"expected a cantools CAN Database or a path, got "
                            f"{type(db_or_path).__name__}")

    # Every definition cantools decodes by frame id; a repeated (id, kind) keeps the later one.
    by_key: dict[tuple[int, bool], object] = {}
    for m in db.messages:
        if m.is_container:
            continue
        by_key[(int(m.frame_id), bool(m.is_extended_frame))] = m
    kept = [m for m in db.messages if by_key.get((int(m.frame_id), bool(m.is_extended_frame)))
            is m]

    names = []
    taken = set()
    for m in kept:
        try:
            owner = db.get_message_by_name(m.name)
        except KeyError:
            owner = None
        name = m.name
        if owner is not m:
            name = f"{m.name}@{m.frame_id:#x}" + ("x" if m.is_extended_frame else "")
        while name in taken:   # paranoia: never two messages under one key
            name += "_"
        taken.add(name)
        names.append(name)

    if messages is not None:
        wanted = []
        for want in messages:
            key = want if isinstance(want, str) else getattr(want, "name", str(want))
            hits = [i for i, (n, m) in enumerate(zip(names, kept)) if n == key or
                    (m is want)]
            if not hits:
                hits = [i for i, n in enumerate(names) if n == key]
            if not hits:
                raise DatabaseError(
                    f"the database has no message {key!r}; best matches are "
                    f"{closest_names(key, names)}")
            wanted.extend(h for h in hits if h not in wanted)
        wanted.sort()
        kept = [kept[i] for i in wanted]
        names = [names[i] for i in wanted]

    default = int(getattr(db, "_frame_id_mask", _ALL_ONES) or _ALL_ONES) & _ALL_ONES
    pgn = [bool(m.is_extended_frame) and _is_j1939(db, m, j1939) for m in kept]
    masks = [j1939_mask(int(m.frame_id)) if p else default for m, p in zip(kept, pgn)]
    if isinstance(match_mask, Mapping):
        unknown = [k for k in match_mask if k not in names]
        if unknown:
            raise DatabaseError(f"match_mask names unknown message {unknown[0]!r}; best matches "
                                f"are {closest_names(unknown[0], names)}")
        masks = [int(match_mask[n]) & _ALL_ONES if n in match_mask else mk
                 for n, mk in zip(names, masks)]
    elif match_mask is not None:
        masks = [int(match_mask) & _ALL_ONES] * len(kept)
    return CompiledDatabase(db, kept, names, masks, j1939=pgn)


#: J1939 identifier bits that make the PGN: reserved, data page, PDU format, PDU specific
J1939_PDU2_MASK = 0x03FFFF00
#: ... and for PDU1 formats (PDU format < 240), where PDU specific is a destination address
J1939_PDU1_MASK = 0x03FF0000


def j1939_mask(frame_id: int) -> int:
    """The identifier mask that matches ``frame_id``'s J1939 PGN (priority, source address and,
    for PDU1 formats, destination address ignored).

    Examples
    --------
    >>> hex(j1939_mask(0x18FEF1FE)), hex(j1939_mask(0x18EA00FE))
    ('0x3ffff00', '0x3ff0000')
    """
    return J1939_PDU1_MASK if ((int(frame_id) >> 16) & 0xFF) < 240 else J1939_PDU2_MASK


def _is_j1939(db, message, flag: bool | None) -> bool:
    if flag is not None:
        return bool(flag)
    if getattr(message, "protocol", None) == "j1939":
        return True
    attrs = getattr(getattr(db, "dbc", None), "attributes", None) or {}
    proto = attrs.get("ProtocolType")
    return str(getattr(proto, "value", proto) or "").strip().upper() == "J1939"


_BIG_ENDIAN_HOST = sys.byteorder != "little"


def _words(data: np.ndarray) -> np.ndarray:
    """The payload rows as little-endian uint64 words (a view on little-endian hosts)."""
    if _BIG_ENDIAN_HOST:
        return data.view("<u8").astype(np.uint64)
    return data.view(np.uint64)


class _Scratch(threading.local):
    """Per-thread work buffers of :func:`decode` (kept between calls: re-faulting fresh pages
    for every chunk costs as much as a decoding pass). Only arrays that never leave
    ``decode`` live here."""

    def __init__(self):
        self.buffers: dict = {}

    #: buffers above this size (bytes) are not kept
    KEEP_BYTES = 64 << 20

    def get(self, key: str, n: int, dtype) -> np.ndarray:
        buf = self.buffers.get(key)
        if buf is not None and buf.shape[0] >= n:
            return buf[:n]
        buf = np.empty(max(n, 1024), dtype)
        if buf.nbytes <= self.KEEP_BYTES:
            self.buffers[key] = buf
        return buf[:n]


_SCRATCH = _Scratch()


def _scratch() -> _Scratch:
    return _SCRATCH


def _as_compiled(cdb) -> CompiledDatabase:
    if isinstance(cdb, CompiledDatabase):
        return cdb
    return compile_database(cdb)


#: databases of at most this many lookup keys (after leaving out messages not decoded) use
#: the vectorised :func:`packbms.kernels.codec.lookup_few`; above it, the id cache of
#: :func:`packbms.kernels.codec.lookup_frames` is faster (about 0.1 ns per frame and key
#: against 1.5 to 2 ns per frame, measured on the decode benchmark's logs)
FEW_KEYS = 4


class _DecodePlan:
    """Everything :func:`decode` derives from the database, the selected messages, the payload
    width and the input kind: computed once per combination and kept on the database."""

    def __init__(self, cdb: CompiledDatabase, messages, width: int, reassembled: bool):
        n_msg = len(cdb.names)
        enabled = np.ones(n_msg, bool)
        if messages is not None:
            enabled[:] = False
            for name in messages:
                enabled[cdb.message_index(name)] = True
        self.enabled = enabled
        # reassembled payloads have exact lengths: checked per signal, not per message
        self.msg_length = np.zeros(n_msg, np.int64) if reassembled else cdb.length
        self.msg_words = np.minimum((cdb.msg_end_byte + 7) // 8, width // 8).astype(np.int64)
        #: messages whose decoded frames may still miss signals (beyond the message length)
        self.partial = cdb.msg_end_byte > self.msg_length
        self.few = self._few_keys(cdb)
        self.standard = self._standard_table(cdb)
        k_max = int((cdb.sig_stop - cdb.sig_first).max()) if n_msg else 0
        none, zero = np.full(k_max, -1, np.int64), np.zeros(k_max, np.int64)
        none.flags.writeable = zero.flags.writeable = False
        self.messages = []
        for m in np.flatnonzero(enabled):
            a, b = int(cdb.sig_first[m]), int(cdb.sig_stop[m])
            self.messages.append((int(m), a, b, cdb.names[m], int(cdb.frame_id[m]),
                                  cdb.signal_names[m], none[:b - a], zero[:b - a]))

    def _standard_table(self, cdb: CompiledDatabase):
        """(message, minimum length) of each 11-bit id, as the lookup keys give it, for
        :func:`~packbms.kernels.codec.lookup_frames`."""
        ids = np.arange(2048, dtype=np.uint64)
        msg = np.full(2048, -1, np.int64)
        todo = np.ones(2048, bool)
        for g in range(len(cdb.lookup_masks)):      # most specific mask first
            a, b = int(cdb.lookup_group_first[g]), int(cdb.lookup_group_first[g + 1])
            if b == a:
                continue
            keys = cdb.lookup_keys[a:b]
            key = ids & np.uint64(int(cdb.lookup_masks[g]))
            at = np.minimum(np.searchsorted(keys, key), b - a - 1)
            hit = todo & (keys[at] == key)
            msg[hit] = cdb.lookup_message[a:b][at[hit]]
            todo &= ~hit
        if not len(self.enabled):                   # a database without messages
            return msg.astype(np.int32), np.zeros(2048, np.int64)
        found = msg >= 0
        msg[found & ~self.enabled[np.maximum(msg, 0)]] = -1
        length = np.where(msg >= 0, self.msg_length[np.maximum(msg, 0)], 0).astype(np.int64)
        return msg.astype(np.int32), length

    def _few_keys(self, cdb: CompiledDatabase):
        """The lookup keys as :func:`~packbms.kernels.codec.lookup_few` takes them, in
        priority order, or None when there are more than :data:`FEW_KEYS`. A key of a message
        not decoded matters only where it can hide a key of a later (less specific) group."""
        groups = cdb.lookup_group_first
        owner = cdb.lookup_message
        on = self.enabled[owner]
        if not on.any():
            return None
        last = int(np.searchsorted(groups, np.flatnonzero(on)[-1], "right")) - 1
        keep = on | (np.arange(len(owner)) < groups[last])
        if int(keep.sum()) > 2 * FEW_KEYS:      # what the pruning below leaves out, at most
            return None
        group = np.searchsorted(groups, np.arange(len(owner)), "right") - 1
        masks = cdb.lookup_masks.astype(np.int64)
        keys = cdb.lookup_keys.astype(np.int64)
        ext_bit = 1 << 32

        def first_match(key: int, skip: int) -> int:
            for j in np.flatnonzero(keep):
                if j != skip and (key & (ext_bit | int(masks[group[j]]))) == int(keys[j]):
                    return int(j)
            return -1

        # a key that only repeats what a later key of the same message answers (a J1939
        # message's own id, under its PGN key) is left out
        for j in np.flatnonzero(keep):
            if masks[group[j]] != _ALL_ONES:
                continue        # a masked key answers many ids: always kept
            alt = first_match(int(keys[j]), j)
            if alt > j and owner[alt] == owner[j] and on[alt] == on[j]:
                keep[j] = False
        if int(keep.sum()) > FEW_KEYS:
            return None
        idx = np.flatnonzero(keep)
        group = group[idx]
        key = cdb.lookup_keys[idx]
        target = np.where(on[idx], owner[idx], -1).astype(np.int32)
        return (cdb.lookup_masks[group].astype(np.uint32),
                (key & np.uint64(0xFFFFFFFF)).astype(np.uint32),
                (key >> np.uint64(32)).astype(np.uint8), target,
                np.where(target >= 0, self.msg_length[owner[idx]], 0).astype(np.int64))


def decode(frames: FrameTable, cdb: CompiledDatabase, *,
           messages: Iterable[str] | None = None) -> SignalTable:
    """Decode every frame of a table into physical signal values.

    Four kernel calls (:mod:`packbms.kernels.codec`): find each frame's message, group the
    frames by message, work out which rows carry each multiplexed signal, then decode signal
    by signal over those rows only. Intel and Motorola byte order, signed, IEEE float32 and
    float64, scale and offset (negative too), simple and extended multiplexing, payloads up to
    64 bytes, standard and extended ids, J1939 PGN matching (see :func:`compile_database`).

    Parameters
    ----------
    frames : FrameTable or IsoTpMessages
        The frames, in log order, or ISO-TP messages from :func:`packbms.isotp.reassemble`
        (whose exact payload lengths are checked per signal: a signal is present when the
        payload carries all its bytes, whatever length the DBC gives the message).
    cdb : CompiledDatabase
        From :func:`compile_database` (a cantools database or a path is compiled on the fly,
        which costs a little per call).
    messages : iterable of str, optional
        Decode only these messages; frames of the others count as ``unknown_id`` and cost only
        the id lookup.

    Returns
    -------
    SignalTable
        One :class:`~packbms.signals.MessageSignals` per compiled (or selected) message, with 0
        rows for messages absent from the log; rows in log order. Each signal holds float64
        physical values (no value tables) for the rows that carry it: a multiplexed signal
        only where its multiplexer selects it, a signal the DBC places beyond the frame's
        payload only in frames long enough. Raw values wider than 2**53 lose precision in
        float64. ``counts`` puts every frame in one bucket: ``error_or_remote`` (error and
        remote frames, skipped), ``unknown_id`` (no message with that id and id kind),
        ``too_short`` (payload shorter than the message length; never guessed), ``decoded``.

    Raises
    ------
    DatabaseError
        ``messages`` names a message the compiled database does not have.

    Examples
    --------
    >>> import cantools
    >>> db = cantools.database.load_string('''VERSION ""
    ... BO_ 801 Pack: 4 BMS
    ...  SG_ Current : 7|16@0- (0.01,0) [-300|300] "A" Vector__XXX
    ...  SG_ Voltage : 23|16@0+ (0.01,0) [0|600] "V" Vector__XXX
    ... ''', database_format="dbc")
    >>> cdb = compile_database(db)
    >>> frames = FrameTable.empty(2)
    >>> frames.arbitration_id[:] = 801
    >>> frames.dlc[:] = 4
    >>> frames.data[0, :4] = [0xFF, 0x38, 0x90, 0x88]   # -2.00 A, 370.00 V
    >>> table = decode(frames, cdb)
    >>> table.signal("Current")[1].tolist(), table.counts.decoded
    ([-2.0, 0.0], 2)
    """
    if isinstance(frames, FrameTable):
        lengths, reassembled = frames.dlc, False
    elif isinstance(frames, IsoTpMessages):
        lengths, reassembled = frames.payload_length, True
    else:
        raise TypeError(f"decode() expects a FrameTable or IsoTpMessages, got "
                        f"{type(frames).__name__}")
    cdb = _as_compiled(cdb)
    data = frames.data
    width = int(data.shape[1])
    plan = cdb._decode_plan(messages, width, reassembled)
    n = len(frames)
    scratch = _scratch()
    counts = np.zeros(4, np.int64)
    msg_count = np.zeros(len(cdb.names), np.int64)
    frame_msg = scratch.get("frame_msg", n, np.int32)
    args = (frames.arbitration_id, frames.is_extended, frames.is_error, frames.is_remote,
            lengths, width)
    if plan.few is None or not _codec.lookup_few(*args, *plan.few, frame_msg, msg_count,
                                                  counts):
        msg_count[:] = 0
        _codec.lookup_frames(*args, *plan.standard, cdb.lookup_masks, cdb.lookup_group_first,
                             cdb.lookup_keys, cdb.lookup_message, plan.msg_length,
                             plan.enabled, frame_msg, msg_count, counts)
    # work buffers: exactly the words of the frames found (each message's words per frame)
    gathered = scratch.get("words", max(1, int(msg_count @ plan.msg_words)), np.uint64)
    avail = scratch.get("avail", n, np.uint16)
    row_offset, word_offset, min_avail, keep_avail, ts_out = _codec.group_frames(
        _words(data), lengths, frames.timestamp, frame_msg, msg_count, plan.msg_words,
        plan.partial, cdb.msg_end_byte, width, gathered, avail)
    rows, sig_row_start, sig_count, value_start, n_values = _codec.plan_rowsets(
        gathered, word_offset, plan.msg_words, avail, row_offset, min_avail, keep_avail,
        msg_count, cdb.msg_rowsets, cdb.sig_first, cdb.sig_stop, cdb.eval_signal,
        cdb.msg_root_group, cdb.sig_msg, cdb.sig_start, cdb.sig_length, cdb.sig_big_endian,
        cdb.sig_signed, cdb.sig_float, cdb.sig_end_byte, cdb.sig_group, cdb.sig_bucket_first,
        cdb.sig_bucket_stop, cdb.bucket_value, cdb.sig_group_first, cdb.sig_group_stop,
        cdb.group_bucket_first, cdb.group_bucket_stop, cdb.group_bucket)
    values = _codec.decode_values(
        gathered, word_offset, plan.msg_words, cdb.value_order, cdb.sig_msg, cdb.sig_start,
        cdb.sig_length, cdb.sig_big_endian, cdb.sig_signed, cdb.sig_float, cdb.sig_scale,
        cdb.sig_offset, sig_row_start, sig_count, rows, value_start, n_values)
    floats = cdb.float_signals
    if len(floats) and sig_count[floats].any():
        for s in floats:
            if not sig_count[s]:
                continue
            # the kernel left IEEE bits; few signals, so NumPy does the casts
            v = values[value_start[s]:value_start[s] + sig_count[s]]
            if cdb.sig_length[s] == 32:
                # a signalling NaN's bits would set the "invalid" flag in the widening cast
                with np.errstate(invalid="ignore"):
                    v[:] = v.view(np.uint64).astype(np.uint32).view(np.float32)
            if cdb.sig_scale[s] != 1.0 or cdb.sig_offset[s] != 0.0:
                v *= cdb.sig_scale[s]
                v += cdb.sig_offset[s]

    out = {}
    wrap = MessageSignals._wrap
    bounds = row_offset.tolist()
    for m, a, b, name, frame_id, signal_names, none, zero in plan.messages:
        r0, r1 = bounds[m], bounds[m + 1]
        if r1 == r0:        # nothing decoded: shared empty arrays
            out[name] = wrap(name, frame_id, _NO_TIMES, signal_names, _NO_VALUES, zero, zero,
                             _NO_ROWS, none)
        else:
            out[name] = wrap(name, frame_id, ts_out[r0:r1], signal_names, values,
                             value_start[a:b], sig_count[a:b], rows, sig_row_start[a:b])
    return SignalTable(
        messages=out,
        counts=DecodeCounts(decoded=int(counts[0]), unknown_id=int(counts[1]),
                            too_short=int(counts[2]), error_or_remote=int(counts[3])),
        source=frames.source,
    )


#: shared by the messages a table has no frames of (being empty, nothing can be written
#: to them)
_NO_ROWS = np.zeros(0, np.int64)
_NO_VALUES = np.zeros(0, np.float64)
_NO_TIMES = np.zeros(0, np.float64)


_ENC_REASON = {
    _codec.ENC_NOT_FINITE: "is not finite",
    _codec.ENC_FLOAT32_OVERFLOW: "overflows IEEE float32",
}


def encode(cdb: CompiledDatabase, message, timestamps, values: Mapping[str, object], *,
           channel: int = 0) -> FrameTable:
    """Encode N frames of one message from physical signal values (vectorised).

    Parameters
    ----------
    cdb : CompiledDatabase
        From :func:`compile_database`.
    message : str, int or cantools Message
        The message (name as in ``cdb.names``, or its index).
    timestamps : array-like of float, shape (N,)
        One timestamp per frame (s).
    values : mapping of signal name to array-like
        Physical values, one array of length N per signal, or a scalar for all rows. A signal
        left out is written as raw 0. A multiplexed message needs its multiplexer's values
        (raising otherwise when signals under it are given); on each row only the signals
        whose multiplexer condition holds are written, so the others may hold anything (NaN).
    channel : int
        Channel index stored in the table (kept to 8 bits, as FrameTable does).

    Returns
    -------
    FrameTable
        N frames with the message's id and id kind, ``dlc`` = the message length (widened to
        cover a signal the DBC places beyond it, rounded up to a valid CAN FD length above 8
        bytes: ``cdb.encoded_length``), ``is_fd`` when the database says so or the payload
        exceeds 8 bytes, width 64 above 8 bytes. Unused bits are 0.

    Raises
    ------
    DatabaseError
        Unknown message or signal name (with near misses); a value array of the wrong length;
        a value that does not fit the signal: an integer signal's raw value ``round((value -
        offset) / scale)`` (half to even, as cantools' ``round``) outside its raw range, a
        non-finite value for an integer signal, or a float32 overflow. Values are never wrapped
        or clipped silently; min/max of the database are not checked.

    Examples
    --------
    >>> import cantools
    >>> db = cantools.database.load_string('''VERSION ""
    ... BO_ 801 Pack: 4 BMS
    ...  SG_ Current : 7|16@0- (0.01,0) [-300|300] "A" Vector__XXX
    ...  SG_ Voltage : 23|16@0+ (0.01,0) [0|600] "V" Vector__XXX
    ... ''', database_format="dbc")
    >>> cdb = compile_database(db)
    >>> frames = encode(cdb, "Pack", [0.0, 0.1], {"Current": [-2.0, 1.5], "Voltage": 370.0})
    >>> bytes(frames.data[0, :4]).hex(), bytes(frames.data[1, :4]).hex()
    ('ff389088', '00969088')
    """
    m = cdb.message_index(message)
    name = cdb.names[m]
    n_bytes = int(cdb.encoded_length[m])
    if n_bytes < 0:
        raise DatabaseError(f"message {name!r} has signals beyond 64 bytes; it cannot be sent "
                            f"as a CAN frame")
    ts = np.ascontiguousarray(np.asarray(timestamps, np.float64).reshape(-1))
    n = ts.shape[0]
    first, stop = int(cdb.sig_first[m]), int(cdb.sig_stop[m])
    k = stop - first
    names = cdb.signal_names[m]
    unknown = [s for s in values if s not in names]
    if unknown:
        raise DatabaseError(f"message {name!r} has no signal {unknown[0]!r}; best matches are "
                            f"{closest_names(str(unknown[0]), names)}")
    given = [j for j, sig in enumerate(names) if sig in values]
    phys = np.empty((len(given), n), np.float64)
    column = np.full(k, -1, np.int64)
    for c, j in enumerate(given):
        sig = names[j]
        v = np.asarray(values[sig], dtype=np.float64)
        if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != n):
            got = v.shape[0] if v.ndim == 1 else v.shape
            raise DatabaseError(f"message {name!r} signal {sig!r}: got {got} values for {n} "
                                f"timestamps; give one per frame or a scalar")
        phys[c] = v
        column[j] = c
    for j, sig in enumerate(names):
        s = first + j
        if cdb.sig_is_multiplexer[s] and sig not in values:
            under = [names[c - first] for c in range(first, stop)
                     if cdb.sig_parent[c] == s and c != s and names[c - first] in values]
            if under:
                raise DatabaseError(
                    f"message {name!r}: values given for {under[:3]} but not for their "
                    f"multiplexer {sig!r}; give the multiplexer value of every frame")

    width = 64 if n_bytes > 8 else 8
    data = np.zeros((n, width), np.uint8)
    error = np.zeros(3, np.int64)
    if n and k:
        words = data.view(np.uint64)   # native little-endian: written in place
        if _BIG_ENDIAN_HOST:
            words = np.zeros_like(words)
        _codec.encode_frames(phys, column, first, k, int(cdb.msg_root_first[m]),
                             int(cdb.msg_root_stop[m]), cdb.root_signal, cdb.sig_start,
                             cdb.sig_length, cdb.sig_big_endian,
                             cdb.sig_signed, cdb.sig_float, cdb.sig_scale, cdb.sig_offset,
                             cdb.sig_edge_first, cdb.sig_edge_stop, cdb.edge_value,
                             cdb.edge_child, words, error)
        if _BIG_ENDIAN_HOST:
            data[:] = words.astype("<u8").view(np.uint8).reshape(data.shape)
    if error[2] != _codec.ENC_OK:
        row, j, code = (int(x) for x in error)
        s = first + j
        x = float(phys[column[j], row])
        length = int(cdb.sig_length[s])
        if code == _codec.ENC_OUT_OF_RANGE:
            if cdb.sig_signed[s]:
                lo, hi = -(1 << (length - 1)), (1 << (length - 1)) - 1
            else:
                lo, hi = 0, (1 << length) - 1
            scale, offset = float(cdb.sig_scale[s]), float(cdb.sig_offset[s])
            why = (f"gives raw value {np.rint((x - offset) / scale):.17g} outside the "
                   f"{'signed' if cdb.sig_signed[s] else 'unsigned'} {length}-bit range "
                   f"[{lo}, {hi}] (physical [{_phys_range(lo, hi, scale, offset)}])")
        else:
            why = _ENC_REASON[code]
        raise DatabaseError(f"message {name!r} signal {names[j]!r}: value {x!r} at row {row} "
                            f"{why}")
    is_fd = bool(cdb.is_fd[m]) or n_bytes > 8
    return FrameTable(
        timestamp=ts,
        arbitration_id=np.full(n, cdb.frame_id[m], np.uint32),
        is_extended=np.full(n, cdb.is_extended[m], bool),
        is_fd=np.full(n, is_fd, bool),
        is_error=np.zeros(n, bool),
        dlc=np.full(n, n_bytes, np.uint8),
        channel=np.full(n, int(channel) & 0xFF, np.uint8),
        data=data,
        is_remote=np.zeros(n, bool),
    )


def _phys_range(lo: int, hi: int, scale: float, offset: float) -> str:
    a, b = lo * scale + offset, hi * scale + offset
    a, b = min(a, b), max(a, b)
    return f"{a:.6g}, {b:.6g}"
