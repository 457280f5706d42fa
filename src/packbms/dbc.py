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
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

from .errors import DatabaseError, closest_names
from .io.frames import FrameTable
from .kernels import codec as _codec
from .signals import DecodeCounts, MessageSignals, SignalTable

__all__ = ["load_database", "CompiledDatabase", "compile_database", "decode", "encode"]

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
        if set); a J1939 user can mask the source address.
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
        The multiplexer tree as the sparse kernel walks it (see :mod:`packbms.kernels.codec`).
    eval_signal, sig_slot, msg_slots : int64 arrays
        For the dense kernel: each message's signals with multiplexers before the signals
        under them, and a scratch column per multiplexer.
    msg_dense : bool [M]
        Which decode kernel handles each message: dense (signal by signal over all rows) when a
        frame is expected to carry at least ~30 % of the message's signals, sparse (frame by
        frame, present signals only) otherwise, e.g. foxbms' 433-signal f_CellVoltages. Both
        give identical results; the choice only affects speed.
    lookup_masks, lookup_group_first, lookup_keys, lookup_message : arrays
        Sorted ``(is_extended, id & mask)`` keys per distinct mask, for the id lookup kernel.
    """

    def __init__(self, database, cantools_messages, names, match_mask):
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

        # dense decoding (signal by signal): parents first; each multiplexer gets a scratch slot
        eval_signal = np.empty(n_sig, np.int64)
        self.sig_slot = np.full(n_sig, -1, np.int64)
        slots, dense = [], []
        for m in range(len(self.names)):
            first, stop = int(self.sig_first[m]), int(self.sig_stop[m])
            queue = deque(int(x) for x in roots[root_first[m]:root_stop[m]])
            seen: list[int] = []
            n_slots = 0
            while queue:
                sig = queue.popleft()
                seen.append(sig)
                children = sorted({int(c) for c in self.edge_child[
                    self.sig_edge_first[sig]:self.sig_edge_stop[sig]]})
                if children:
                    self.sig_slot[sig] = n_slots
                    n_slots += 1
                queue.extend(children)
            reached = set(seen)
            rest = [x for x in range(first, stop) if x not in reached]
            eval_signal[first:stop] = seen + rest
            slots.append(n_slots)
            dense.append(self._density(m, roots[root_first[m]:root_stop[m]]) >= 0.3)
        self.eval_signal = eval_signal
        self.msg_slots = np.array(slots, np.int64)
        #: which kernel decodes each message: dense (signal by signal) when a frame carries at
        #: least ~30 % of the message's signals, else sparse (frame by frame, present only)
        self.msg_dense = np.array(dense, bool)

    def _density(self, m: int, roots) -> float:
        """Expected fraction of message ``m``'s signals present in one frame."""
        first, stop = int(self.sig_first[m]), int(self.sig_stop[m])
        if stop == first:
            return 1.0
        expected = float(len(roots))
        for sig in range(first, stop):
            e0, e1 = int(self.sig_edge_first[sig]), int(self.sig_edge_stop[sig])
            if e1 > e0:
                # each selector value is equally likely: edges per distinct value
                expected += (e1 - e0) / len(set(self.edge_value[e0:e1].tolist()))
        return expected / (stop - first)

    # -- lookup ---------------------------------------------------------------------------
    def _build_lookup(self) -> None:
        masks = sorted({int(v) for v in self.match_mask}, key=lambda v: (-bin(v).count("1"), v))
        keys, owners, group_first = [], [], [0]
        for mask in masks:
            table: dict[int, int] = {}
            for i in np.flatnonzero(self.match_mask == mask):
                key = (int(self.is_extended[i]) << 32) | (int(self.frame_id[i]) & mask)
                table[key] = int(i)   # a later definition wins, as in cantools
            for key in sorted(table):
                keys.append(key)
                owners.append(table[key])
            group_first.append(len(keys))
        self.lookup_masks = np.array(masks, np.uint32)
        self.lookup_group_first = np.array(group_first, np.int64)
        self.lookup_keys = np.array(keys, np.uint64)
        self.lookup_message = np.array(owners, np.int64)

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
                     strict: bool = False) -> CompiledDatabase:
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
        ones unless the database sets one). For J1939, ``0x03FFFF00`` ignores the source
        address (and the priority bits: ``0x00FFFF00``).
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
    if match_mask is None:
        masks = [default] * len(kept)
    elif isinstance(match_mask, Mapping):
        unknown = [k for k in match_mask if k not in names]
        if unknown:
            raise DatabaseError(f"match_mask names unknown message {unknown[0]!r}; best matches "
                                f"are {closest_names(unknown[0], names)}")
        masks = [int(match_mask.get(n, default)) & _ALL_ONES for n in names]
    else:
        masks = [int(match_mask) & _ALL_ONES] * len(kept)
    return CompiledDatabase(db, kept, names, masks)


_BIG_ENDIAN_HOST = sys.byteorder != "little"


def _words(data: np.ndarray) -> np.ndarray:
    """The payload rows as little-endian uint64 words (a view on little-endian hosts)."""
    if _BIG_ENDIAN_HOST:
        return data.view("<u8").astype(np.uint64)
    return data.view(np.uint64)


def _as_compiled(cdb) -> CompiledDatabase:
    if isinstance(cdb, CompiledDatabase):
        return cdb
    return compile_database(cdb)


def decode(frames: FrameTable, cdb: CompiledDatabase, *,
           messages: Iterable[str] | None = None) -> SignalTable:
    """Decode every frame of a table into physical signal values.

    A few kernel calls: one finds each frame's message (binary search over sorted ids), then
    one decodes, signal by signal, the messages whose frames carry most of their signals and
    one, frame by frame, the sparsely multiplexed ones (see ``CompiledDatabase.msg_dense``).
    Together they handle Intel and Motorola byte order, signed, IEEE float32 and float64,
    scale and offset, simple and extended multiplexing, payloads up to 64 bytes.

    Parameters
    ----------
    frames : FrameTable
        The frames, in log order.
    cdb : CompiledDatabase
        From :func:`compile_database` (a cantools database or a path is compiled on the fly,
        which costs a little per call).
    messages : iterable of str, optional
        Decode only these messages; frames of the others count as ``unknown_id``.

    Returns
    -------
    SignalTable
        One :class:`~packbms.signals.MessageSignals` per compiled (or selected) message, with 0
        rows for messages absent from the log. ``values`` are float64 physical values (no
        value tables); where ``present`` is False (multiplexer condition not met, or a signal
        the DBC places beyond the frame's payload) the value is NaN. Raw values wider than
        2**53 lose precision in float64. ``counts`` puts every frame in one bucket:
        ``error_or_remote`` (error and remote frames, skipped), ``unknown_id`` (no message with
        that id and id kind), ``too_short`` (payload shorter than the message length; never
        guessed), ``decoded``.

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
    >>> table.messages["Pack"].values[0].tolist(), table.counts.decoded
    ([-2.0, 370.0], 2)
    """
    if not isinstance(frames, FrameTable):
        raise TypeError(f"decode() expects a FrameTable, got {type(frames).__name__}")
    cdb = _as_compiled(cdb)
    n_msg = len(cdb.names)
    enabled = np.ones(n_msg, bool)
    if messages is not None:
        if isinstance(messages, str):
            messages = [messages]
        enabled[:] = False
        for name in messages:
            enabled[cdb.message_index(name)] = True

    n = len(frames)
    frame_msg = np.empty(n, np.int64)
    frame_row = np.empty(n, np.int64)
    msg_count = np.zeros(n_msg, np.int64)
    counts = np.zeros(4, np.int64)
    data = frames.data
    _codec.lookup_frames(frames.arbitration_id, frames.is_extended, frames.is_error,
                         frames.is_remote, frames.dlc, int(data.shape[1]),
                         cdb.lookup_masks, cdb.lookup_group_first, cdb.lookup_keys,
                         cdb.lookup_message, cdb.length, enabled,
                         frame_msg, frame_row, msg_count, counts)

    k = cdb.sig_stop - cdb.sig_first
    row_offset = np.zeros(n_msg + 1, np.int64)
    np.cumsum(msg_count, out=row_offset[1:])
    value_offset = np.zeros(n_msg + 1, np.int64)
    np.cumsum(msg_count * k, out=value_offset[1:])
    ts_out = np.empty(int(row_offset[-1]), np.float64)
    values_out = np.empty(int(value_offset[-1]), np.float64)
    present_out = np.empty(int(value_offset[-1]), bool)
    if counts[0]:
        words = _words(data)
        busy = msg_count > 0
        if (busy & cdb.msg_dense).any():
            _codec.decode_dense(words, frames.dlc, frames.timestamp, frame_msg, frame_row,
                                cdb.msg_dense, cdb.sig_first, cdb.sig_stop, row_offset,
                                value_offset, cdb.msg_slots, cdb.eval_signal, cdb.sig_start,
                                cdb.sig_length, cdb.sig_big_endian, cdb.sig_signed,
                                cdb.sig_float, cdb.sig_scale, cdb.sig_offset, cdb.sig_end_byte,
                                cdb.sig_parent, cdb.sig_slot, cdb.sig_mux_first,
                                cdb.sig_mux_stop, cdb.mux_values, ts_out, values_out,
                                present_out)
        sparse = np.flatnonzero(busy & ~cdb.msg_dense)
        if sparse.size:
            for m in sparse:    # the sparse kernel writes present signals only
                values_out[value_offset[m]:value_offset[m + 1]] = np.nan
                present_out[value_offset[m]:value_offset[m + 1]] = False
            _codec.decode_sparse(words, frames.dlc, frames.timestamp, frame_msg, frame_row,
                                 cdb.msg_dense, cdb.sig_first, cdb.sig_stop, cdb.msg_root_first,
                                 cdb.msg_root_stop, cdb.root_signal, row_offset, value_offset,
                                 cdb.sig_start, cdb.sig_length, cdb.sig_big_endian,
                                 cdb.sig_signed, cdb.sig_float, cdb.sig_scale, cdb.sig_offset,
                                 cdb.sig_end_byte, cdb.sig_edge_first, cdb.sig_edge_stop,
                                 cdb.edge_value, cdb.edge_child, ts_out, values_out,
                                 present_out)

    out = {}
    for m in np.flatnonzero(enabled):
        rows, kk = int(msg_count[m]), int(k[m])
        v0, v1 = int(value_offset[m]), int(value_offset[m + 1])
        out[cdb.names[m]] = MessageSignals(
            name=cdb.names[m],
            frame_id=int(cdb.frame_id[m]),
            timestamps=ts_out[row_offset[m]:row_offset[m + 1]],
            signal_names=cdb.signal_names[m],
            values=values_out[v0:v1].reshape(rows, kk),
            present=present_out[v0:v1].reshape(rows, kk),
        )
    return SignalTable(
        messages=out,
        counts=DecodeCounts(decoded=int(counts[0]), unknown_id=int(counts[1]),
                            too_short=int(counts[2]), error_or_remote=int(counts[3])),
        source=frames.source,
    )


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
