"""Shared hypothesis strategies for packbms tests (append your section; do not rewrite others')."""

from __future__ import annotations


# ---------------------------------------------------------------------------------------------
# CAN database layouts and frames (packbms.dbc codec tests)
# ---------------------------------------------------------------------------------------------
# Databases are built from cantools Message/Signal objects (strict=True, so cantools itself
# vouches that the layout is valid); frames are raw payloads with multiplexer fields set to a
# defined branch most of the time, so that muxed signals actually get exercised.

import numpy as _np
from hypothesis import strategies as _st

FD_LENGTHS = (12, 16, 20, 24, 32, 48, 64)
_SCALES = (1.0, 1.0, 0.1, 0.01, 0.001, 1e-5, 0.5, 2.0, 3.3, 10.0, -1.0, -0.05, -0.1, 0.0625)
_OFFSETS = (0.0, 0.0, 0.0, -40.0, 500.0, 0.5, -1000.0, 1e6, -273.15, 12.0)


def signal_bits(byte_order: str, norm_start: int, length: int) -> set:
    """Physical (byte, bit) cells of a field; ``norm_start`` as in packbms.dbc (Intel: LSB's
    sequential bit; Motorola: MSB's network bit)."""
    if byte_order == "little_endian":
        return {((norm_start + i) // 8, (norm_start + i) % 8) for i in range(length)}
    return {((norm_start + i) // 8, 7 - (norm_start + i) % 8) for i in range(length)}


def cantools_start(byte_order: str, norm_start: int) -> int:
    """DBC start bit (sawtooth numbering for Motorola) from a normalised start."""
    if byte_order == "little_endian":
        return norm_start
    return 8 * (norm_start // 8) + 7 - norm_start % 8


def set_raw_bits(payload: bytearray, byte_order: str, norm_start: int, length: int,
                 raw: int) -> None:
    """Write ``raw`` (two's complement allowed) into a field of ``payload`` (plain Python)."""
    nbits = 8 * len(payload)
    raw &= (1 << length) - 1
    if byte_order == "little_endian":
        v = int.from_bytes(payload, "little")
        mask = ((1 << length) - 1) << norm_start
        v = (v & ~mask) | (raw << norm_start)
        payload[:] = v.to_bytes(len(payload), "little")
    else:
        shift = nbits - norm_start - length
        v = int.from_bytes(payload, "big")
        mask = ((1 << length) - 1) << shift
        v = (v & ~mask) | (raw << shift)
        payload[:] = v.to_bytes(len(payload), "big")


@_st.composite
def _field(draw, total_bits: int, occupied: set, *, kind=None, max_length: int = 64,
           allow_float: bool = True, max_mux_length: int = 8):
    """Draw one field that fits in ``total_bits`` and avoids ``occupied``; None if it does not."""
    if kind is None:
        kinds = ["int", "int", "int"] + (["f32", "f64"] if allow_float else [])
        kind = draw(_st.sampled_from(kinds))
    if kind == "f32":
        length = 32
    elif kind == "f64":
        length = 64
    elif kind == "mux":
        length = draw(_st.integers(1, max_mux_length))
    elif kind == "wide":
        kind = "int"
        length = min(draw(_st.integers(53, 64)), max_length)
    else:
        length = draw(_st.one_of(_st.integers(1, 16), _st.integers(1, max_length),
                                 _st.sampled_from([8, 16, 32, 53, 54, 63, 64])))
        length = min(length, max_length)
    if length > total_bits:
        return None
    order = draw(_st.sampled_from(["little_endian", "big_endian"]))
    start = draw(_st.integers(0, total_bits - length))
    cells = signal_bits(order, start, length)
    if cells & occupied:
        return None
    return kind, order, start, length, cells


@_st.composite
def can_messages(draw, frame_id: int, is_extended: bool, name: str, *, allow_fd: bool = True,
                 allow_mux: bool = True, allow_float: bool = True, max_length: int = 64,
                 max_signals: int = 6):
    """A cantools Message with a random layout.

    Random byte order, start, length (1..``max_length``), signedness, IEEE float32/float64,
    scale (negative and non-integer too) and offset; optionally a multiplexer with signals
    under one or two of its values, and an extended (nested) multiplexer under one branch.
    """
    import cantools
    from cantools.database.conversion import BaseConversion

    if allow_fd and draw(_st.integers(0, 3)) == 0:
        n_bytes = draw(_st.sampled_from(FD_LENGTHS))
    else:
        n_bytes = draw(_st.integers(1, 8))
    total = 8 * n_bytes
    signals = []
    counter = [0]

    def make(kind, order, start, length, *, mux_of=None, mux_ids=None, is_mux=False):
        counter[0] += 1
        sname = f"S{counter[0]}"
        if kind in ("mux", "nestedmux"):
            signed = draw(_st.integers(0, 5)) == 0 and length > 1
            conv = BaseConversion.factory(1, 0, None, False)
        else:
            is_float = kind in ("f32", "f64")
            signed = (not is_float) and draw(_st.booleans())
            scale = draw(_st.sampled_from(_SCALES))
            offset = draw(_st.sampled_from(_OFFSETS))
            conv = BaseConversion.factory(scale, offset, None, is_float)
        signals.append(cantools.database.can.Signal(
            name=sname, start=cantools_start(order, start), length=length, byte_order=order,
            is_signed=signed, conversion=conv, is_multiplexer=is_mux,
            multiplexer_ids=mux_ids, multiplexer_signal=mux_of))
        return signals[-1]

    root = set()
    mux = None
    if allow_mux and draw(_st.booleans()):
        f = draw(_field(total, root, kind="mux"))
        if f is not None:
            _, order, start, length, cells = f
            root |= cells
            mux = make("mux", order, start, length, is_mux=True)
    for i in range(draw(_st.integers(0, max_signals))):
        # a wide integer first, now and then: it needs room, and float64 output only shows its
        # low bits when the frame holds a small value (see frame_payloads)
        wide = i == 0 and draw(_st.integers(0, 3)) == 0
        f = draw(_field(total, root, kind="wide" if wide else None, max_length=max_length,
                        allow_float=allow_float))
        if f is not None:
            kind, order, start, length, cells = f
            root |= cells
            make(kind, order, start, length)
    if mux is not None:
        lo, hi = (-(1 << (mux.length - 1)), (1 << (mux.length - 1)) - 1) if mux.is_signed \
            else (0, (1 << mux.length) - 1)
        values = draw(_st.lists(_st.integers(lo, hi), min_size=1, max_size=4, unique=True))
        branch = {v: set(root) for v in values}
        nested = None
        for _ in range(draw(_st.integers(1, max_signals))):
            ids = draw(_st.lists(_st.sampled_from(values), min_size=1, max_size=2, unique=True))
            occupied = set().union(*(branch[v] for v in ids))
            make_nested = nested is None and len(ids) == 1 and draw(_st.integers(0, 3)) == 0
            f = draw(_field(total, occupied, kind="mux" if make_nested else None,
                            max_length=max_length, allow_float=allow_float))
            if f is None:
                continue
            kind, order, start, length, cells = f
            for v in ids:
                branch[v] |= cells
            if make_nested:
                nested = (make("nestedmux", order, start, length, mux_of=mux.name,
                               mux_ids=sorted(ids), is_mux=True), ids[0])
            else:
                make(kind, order, start, length, mux_of=mux.name, mux_ids=sorted(ids))
        if nested is not None:
            nmux, v = nested
            nlo, nhi = (-(1 << (nmux.length - 1)), (1 << (nmux.length - 1)) - 1) \
                if nmux.is_signed else (0, (1 << nmux.length) - 1)
            nvalues = draw(_st.lists(_st.integers(nlo, nhi), min_size=1, max_size=3,
                                     unique=True))
            nbranch = {w: set(branch[v]) for w in nvalues}
            for _ in range(draw(_st.integers(1, 4))):
                ids = draw(_st.lists(_st.sampled_from(nvalues), min_size=1, max_size=2,
                                     unique=True))
                occupied = set().union(*(nbranch[w] for w in ids))
                f = draw(_field(total, occupied, max_length=max_length, allow_float=allow_float))
                if f is None:
                    continue
                kind, order, start, length, cells = f
                for w in ids:
                    nbranch[w] |= cells
                make(kind, order, start, length, mux_of=nmux.name, mux_ids=sorted(ids))
    is_fd = n_bytes > 8 or draw(_st.integers(0, 5)) == 0
    return cantools.database.can.Message(
        frame_id=frame_id, name=name, length=n_bytes, signals=signals,
        is_extended_frame=is_extended, is_fd=is_fd, strict=True)


@_st.composite
def can_databases(draw, *, max_messages: int = 4, **message_kw):
    """A cantools Database of 1..``max_messages`` random messages (unique (id, kind) pairs;
    an 11-bit and a 29-bit message may share the same number)."""
    import cantools

    n = draw(_st.integers(1, max_messages))
    keys = draw(_st.lists(
        _st.one_of(_st.tuples(_st.integers(0, 0x7FF), _st.just(False)),
                   _st.tuples(_st.integers(0, 0x1FFFFFFF), _st.just(True)),
                   _st.tuples(_st.integers(0x120, 0x124), _st.booleans())),
        min_size=n, max_size=n, unique=True))
    messages = [draw(can_messages(fid, ext, f"M{i}", **message_kw))
                for i, (fid, ext) in enumerate(keys)]
    return cantools.database.can.Database(messages=messages, strict=True)


def _mux_fields(message):
    """(signal, allowed values) of every multiplexer in a message, parents first."""
    by_name = {s.name: s for s in message.signals}
    out = []
    for s in message.signals:
        if s.is_multiplexer:
            children = set()
            for c in message.signals:
                if c.multiplexer_signal == s.name and c.multiplexer_ids:
                    children.update(c.multiplexer_ids)
            depth = 0
            p = s
            while p.multiplexer_signal is not None:
                p = by_name[p.multiplexer_signal]
                depth += 1
            out.append((depth, s, sorted(children)))
    return [(s, v) for _, s, v in sorted(out, key=lambda t: t[0])]


def _norm_start(signal) -> int:
    if signal.byte_order == "little_endian":
        return signal.start
    return 8 * (signal.start // 8) + 7 - signal.start % 8


@_st.composite
def frame_payloads(draw, message, *, width: int = 64):
    """A payload for ``message``: random bytes, mostly of the message length (sometimes
    shorter or longer), multiplexer fields mostly set to a value that selects a branch."""
    choice = draw(_st.integers(0, 9))
    if choice == 0 and message.length > 0:
        n = draw(_st.integers(0, message.length - 1))
    elif choice == 1:
        n = draw(_st.integers(message.length, min(width, max(message.length, 8))))
    else:
        n = message.length
    payload = bytearray(draw(_st.binary(min_size=n, max_size=n)))
    # float64 cannot show the low bits of a random >53-bit raw value; often write a small one
    # so that an error in the low bits of a wide field is visible in the decoded value
    for s in message.signals:
        if s.length > 53 and not s.is_float and _norm_start(s) + s.length <= 8 * n \
                and draw(_st.booleans()):
            lo = -(1 << 52) if s.is_signed else 0
            set_raw_bits(payload, s.byte_order, _norm_start(s), s.length,
                         draw(_st.integers(lo, 1 << 52)))
    for s, values in _mux_fields(message):
        if values and draw(_st.integers(0, 4)) > 0 and _norm_start(s) + s.length <= 8 * n:
            set_raw_bits(payload, s.byte_order, _norm_start(s), s.length,
                         draw(_st.sampled_from(values)))
    return bytes(payload)


@_st.composite
def frame_streams(draw, db, *, max_frames: int = 12):
    """python-can-like frame tuples ``(arbitration_id, is_extended, is_error, is_remote,
    payload)`` for messages of ``db``, plus unknown ids, error and remote frames."""
    msgs = list(db.messages)
    width = 64 if any(m.length > 8 for m in msgs) else 8
    out = []
    for _ in range(draw(_st.integers(0, max_frames))):
        what = draw(_st.integers(0, 9))
        if what == 0:
            ext = draw(_st.booleans())
            fid = draw(_st.integers(0, 0x1FFFFFFF if ext else 0x7FF))
            out.append((fid, ext, False, False, draw(_st.binary(max_size=8))))
        elif what == 1:
            m = draw(_st.sampled_from(msgs))
            err = draw(_st.booleans())
            out.append((m.frame_id, m.is_extended_frame, err, not err, b""))
        else:
            m = draw(_st.sampled_from(msgs))
            out.append((m.frame_id, m.is_extended_frame, False, False,
                        draw(frame_payloads(m, width=width))))
    return out


def frames_to_table(stream, *, width: int | None = None):
    """A packbms FrameTable from ``frame_streams`` tuples (timestamps 0, 1, 2, ...)."""
    from packbms.io.frames import FrameTable

    if width is None:
        width = 64 if any(len(p) > 8 for *_, p in stream) else 8
    ft = FrameTable.empty(len(stream), width)
    for i, (fid, ext, err, rtr, payload) in enumerate(stream):
        ft.timestamp[i] = float(i)
        ft.arbitration_id[i] = fid
        ft.is_extended[i] = ext
        ft.is_error[i] = err
        ft.is_remote[i] = rtr
        ft.is_fd[i] = len(payload) > 8
        ft.dlc[i] = len(payload)
        ft.data[i, :len(payload)] = _np.frombuffer(payload, _np.uint8)
    return ft


def random_payload(rng, message, n_bytes: int | None = None) -> bytes:
    """Seeded counterpart of :func:`frame_payloads` for real databases: random bytes of the
    message length (or ``n_bytes``), each multiplexer set to a defined branch 4 times in 5."""
    n = message.length if n_bytes is None else n_bytes
    payload = bytearray(rng.integers(0, 256, n, dtype=_np.uint8).tobytes())
    for s, values in _mux_fields(message):
        if values and rng.random() < 0.8 and _norm_start(s) + s.length <= 8 * n:
            set_raw_bits(payload, s.byte_order, _norm_start(s), s.length,
                         int(values[rng.integers(len(values))]))
    return bytes(payload)


# -- the cantools oracle ----------------------------------------------------------------------
def cantools_decode(message, payload: bytes) -> dict:
    """``message.decode(payload, decode_choices=False)``, extended the two ways packbms.dbc
    documents: a multiplexer value without a branch yields the other signals (cantools
    raises: we re-run cantools with that value declared as a branch-less choice), and a signal
    the DBC places beyond the message length is decoded when the payload carries it (we re-run
    cantools on the message widened to cover it, with ``allow_truncated``)."""
    import copy

    import cantools
    from cantools.database.conversion import BaseConversion

    try:
        return message.decode(payload, decode_choices=False)
    except cantools.database.DecodeError as e:
        reason = str(e)
    patched = copy.deepcopy(message)
    if "multiplexer" in reason:
        for s in patched.signals:
            if not s.is_multiplexer:
                continue
            solo = cantools.database.can.Message(
                0, "solo", message.length,
                [cantools.database.can.Signal(s.name, s.start, s.length, s.byte_order,
                                              s.is_signed)], strict=False)
            try:
                raw = int(solo.decode(payload[:message.length], decode_choices=False)[s.name])
            except cantools.database.DecodeError:
                continue
            choices = dict(s.conversion.choices or {})
            choices.setdefault(raw, "unlisted")
            s.conversion = BaseConversion.factory(s.scale, s.offset, choices, s.is_float)
    else:
        need = max([message.length] + [(_norm_start(s) + s.length + 7) // 8
                                        for s in message.signals])
        if need == message.length:
            raise AssertionError(f"cantools cannot decode {message.name}: {reason}")
        patched.length = need
    patched.refresh()
    return patched.decode(payload, decode_choices=False, allow_truncated=True)


def same_value(ours: float, theirs) -> bool:
    """cantools' value (int or float) equals ours; integers wider than float64's 53 bits may
    differ by float64 rounding (cantools scales them in exact integer arithmetic)."""
    import math

    t = float(theirs)
    if math.isnan(t):
        return math.isnan(ours)
    if ours == t:
        return True
    return abs(t) > 2.0 ** 53 and math.isclose(ours, t, rel_tol=1e-12)


def assert_decodes_like_cantools(cdb, stream, table, timestamps=None) -> None:
    """Every frame of ``stream`` (``frame_streams`` tuples; timestamps = ``timestamps``, or the
    frame's position when None) lands in the
    right :class:`~packbms.signals.DecodeCounts` bucket, and each decoded frame's present
    signals and values in ``table`` are exactly what :func:`cantools_decode` gives."""
    import math

    import cantools

    by_key = {(int(m.frame_id), bool(m.is_extended_frame)): (name, m)
              for name, m in zip(cdb.names, cdb.cantools_messages)}
    rows = {name: 0 for name in cdb.names}
    expect = dict(decoded=0, unknown_id=0, too_short=0, error_or_remote=0)
    for i, (fid, ext, err, rtr, payload) in enumerate(stream):
        if err or rtr:
            expect["error_or_remote"] += 1
            continue
        if (fid, ext) not in by_key:
            expect["unknown_id"] += 1
            continue
        name, msg = by_key[(fid, ext)]
        if len(payload) < msg.length:
            expect["too_short"] += 1
            try:
                msg.decode(payload, decode_choices=False)
            except cantools.database.DecodeError:
                pass
            else:
                raise AssertionError(f"cantools decodes a too-short {name} frame")
            continue
        expect["decoded"] += 1
        ms = table.messages[name]
        r = rows[name]
        rows[name] += 1
        assert ms.timestamps[r] == (float(i) if timestamps is None else timestamps[i])
        theirs = cantools_decode(msg, payload)
        ours = dict(zip(ms.signal_names, ms.values[r]))
        present = {n for n, p in zip(ms.signal_names, ms.present[r]) if p}
        assert present == set(theirs), (name, payload.hex(), present ^ set(theirs))
        for sig, value in theirs.items():
            assert same_value(ours[sig], value), (name, sig, ours[sig], value, payload.hex())
        for sig in set(ms.signal_names) - present:
            assert math.isnan(ours[sig])
    for name in cdb.names:
        if name in table.messages:
            assert len(table.messages[name]) == rows[name]
    got = table.counts
    assert (got.decoded, got.unknown_id, got.too_short, got.error_or_remote) == (
        expect["decoded"], expect["unknown_id"], expect["too_short"],
        expect["error_or_remote"])
    assert got.total == len(stream)


# ---------------------------------------------------------------------------------------------
# FrameTables (packbms.io readers and writers round trips)
# ---------------------------------------------------------------------------------------------
# Frames of every kind the writers handle: classic data, remote, error and CAN FD frames, standard
# and extended identifiers, small channel numbers, strictly increasing timestamps on a microsecond
# grid (so every format's time resolution keeps the order), starting near 0 (relative logs) or at
# a Unix time (absolute logs).

CAN_FD_PAYLOAD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)


@_st.composite
def frame_tables(draw, *, min_size: int = 0, max_size: int = 40, fd: bool = True,
                 error: bool = True, remote: bool = True, max_channel: int = 3,
                 absolute: bool | None = None, fd_min_length: int = 0):
    """A :class:`packbms.io.frames.FrameTable` (payload zero beyond dlc, remote payload zero,
    error frames classic with dlc <= 8, CAN FD frames never remote)."""
    from packbms.io.frames import FrameTable

    kinds = ["data"] + (["remote"] if remote else []) + (["error"] if error else []) \
        + (["fd"] if fd else [])
    n = draw(_st.integers(min_size, max_size))
    if absolute is None:
        absolute = draw(_st.booleans())
    t0_us = draw(_st.integers(1_500_000_000, 1_800_000_000)) * 1_000_000 \
        + draw(_st.integers(0, 999_999)) if absolute else draw(_st.integers(0, 100_000_000))
    gaps = draw(_st.lists(_st.integers(1, 2_000_000), min_size=n, max_size=n))
    ts_us = t0_us + _np.cumsum(_np.array(gaps, dtype=_np.int64))
    fd_lengths = [x for x in CAN_FD_PAYLOAD_LENGTHS if x >= fd_min_length]
    any_wide = False
    rows = []
    for _ in range(n):
        kind = draw(_st.sampled_from(kinds))
        ext = draw(_st.booleans())
        aid = draw(_st.integers(0, 0x1FFFFFFF if ext else 0x7FF))
        dlc = draw(_st.sampled_from(fd_lengths)) if kind == "fd" else draw(_st.integers(0, 8))
        payload = b"" if kind == "remote" else draw(_st.binary(min_size=dlc, max_size=dlc))
        any_wide |= dlc > 8
        rows.append((kind, ext, aid, dlc, payload, draw(_st.integers(0, max_channel))))
    ft = FrameTable.empty(n, 64 if any_wide else 8)
    ft.timestamp[:] = ts_us * 1e-6
    for i, (kind, ext, aid, dlc, payload, chan) in enumerate(rows):
        ft.arbitration_id[i] = aid
        ft.is_extended[i] = ext
        ft.is_fd[i] = kind == "fd"
        ft.is_error[i] = kind == "error"
        ft.is_remote[i] = kind == "remote"
        ft.dlc[i] = dlc
        ft.channel[i] = chan
        if payload:
            ft.data[i, :dlc] = _np.frombuffer(payload, _np.uint8)
    return ft


# ---------------------------------------------------------------------------------------------
# Pack drives for the SoC estimators (packbms.soc kernel tests)
# ---------------------------------------------------------------------------------------------
# Arrays are generated by a NumPy generator seeded from a drawn integer (element-wise drawing of
# thousands of samples would be slow and shrink poorly); the drawn shape parameters (cells, rows,
# sampling, gaps, stale fraction) shrink normally.

@_st.composite
def soc_drives(draw, *, max_cells: int = 5, max_rows: int = 400):
    """``(time_s, current_a, cell_voltage_v, capacity_ah)`` of a small random drive.

    Current: rests (exactly 0 or sensor noise), constant and random-walk stretches, charge;
    time: regular (10 ms or 0.1 s) or jittered steps, sometimes a gap of seconds; voltages: an
    NMC-like OCV minus an ohmic drop, 1 mV quantised, zero-order held over 1-4 rows, with NaN
    (stale) stretches.
    """
    seed = draw(_st.integers(0, 2**32 - 1))
    n_s = draw(_st.integers(1, max_cells))
    n_t = draw(_st.integers(2, max_rows))
    dt = draw(_st.sampled_from([0.01, 0.1, 1.0]))
    jitter = draw(_st.booleans())
    gap = draw(_st.booleans())
    stale = draw(_st.sampled_from([0.0, 0.0, 0.05, 0.5]))
    rng = _np.random.default_rng(seed)
    steps = _np.full(n_t - 1, dt)
    if jitter:
        steps = steps * rng.uniform(0.5, 1.5, n_t - 1)
    if gap and n_t > 3:
        steps[rng.integers(0, n_t - 1)] = rng.uniform(2.0, 30.0)
    time_s = _np.concatenate(([rng.uniform(0, 100)], steps)).cumsum()
    cap = rng.uniform(2.0, 80.0, n_s)
    kinds = rng.integers(0, 4, size=max(1, n_t // 50 + 1))
    cur = _np.empty(n_t)
    for j, k in enumerate(_np.array_split(_np.arange(n_t), len(kinds))):
        kind = kinds[j]
        c_ref = cap.mean()
        if kind == 0:
            cur[k] = 0.0 if rng.random() < 0.5 else rng.normal(0, 0.05 * c_ref / 50, k.size)
        elif kind == 1:
            cur[k] = rng.uniform(-1.0, 2.0) * c_ref
        elif kind == 2:
            cur[k] = _np.cumsum(rng.normal(0, 0.1 * c_ref, k.size))
        else:
            cur[k] = -rng.uniform(0.1, 1.0) * c_ref
    soc_true = rng.uniform(0.1, 0.9, n_s)
    v = 3.0 + 1.2 * soc_true[None, :] + 0.05 * _np.sin(7 * soc_true)[None, :] \
        - (0.06 / cap)[None, :] * cur[:, None] + rng.normal(0, 0.002, (n_t, n_s))
    v = _np.round(v, 3)
    hold = rng.integers(1, 5)
    held = (_np.arange(n_t) // hold) * hold
    v = v[held]
    if stale > 0:
        v[rng.random((n_t, n_s)) < stale] = _np.nan
    return time_s, cur, _np.ascontiguousarray(v), cap


# ---------------------------------------------------------------------------------------------
# Current profiles (packbms.simulate)
# ---------------------------------------------------------------------------------------------
# A segment plan is what make_profile / SimConfig(segments=...) take: (kind, seconds) pairs.
# Durations are whole tenths of a second so they fall on the simulation grid at any dt_s that
# divides 0.1 s.
def segment_plans(*, max_segments: int = 6, max_seconds: float = 60.0):
    """Lists of ``(kind, seconds)`` with kinds from ``packbms.simulate.SEGMENT_KINDS``."""
    from hypothesis import strategies as _st

    from packbms.simulate import SEGMENT_KINDS

    seg = _st.tuples(_st.sampled_from(SEGMENT_KINDS),
                     _st.integers(1, int(max_seconds * 10)).map(lambda n: n / 10.0))
    return _st.lists(seg, min_size=1, max_size=max_segments)


# ---------------------------------------------------------------------------------------------
# Raw BLF objects and byte mutations (packbms.io native readers: oracle and fuzz tests)
# ---------------------------------------------------------------------------------------------
# ``blf_objects`` draws the frame objects python-can's BLFReader reads (CAN_MESSAGE,
# CAN_MESSAGE2, CAN_ERROR_EXT, CAN_FD_MESSAGE, CAN_FD_MESSAGE_64) and objects it skips, with object
# header versions 1 and 2, both timestamp units and offsets past 2**53 units; ``blf_bytes``
# packs them into log containers cut at arbitrary points, so objects straddle containers.
# ``byte_mutations`` flips, inserts and deletes bytes and may cut the file.

BLF_FRAME_TYPES = (1, 86, 73, 100, 101)


def _blf_object(otype: int, body: bytes, *, hver: int, tflags: int, ts: int) -> bytes:
    import struct

    if hver == 1:
        head = struct.pack("<LHHQ", tflags, 0, 0, ts)
    else:
        head = struct.pack("<LBxHQQ", tflags, 0, 0, ts, 0)
    hsize = 16 + len(head)
    size = hsize + len(body)
    obj = struct.pack("<4sHHLL", b"LOBJ", hsize, hver, size, otype) + head + body
    return obj + b"\x00" * (size % 4)


@_st.composite
def blf_objects(draw, *, max_objects: int = 12, bad: bool = False):
    """A list of raw BLF objects (bytes). ``bad=True`` also draws DLCs over 64 and FD payload
    lengths over 64 (records packbms refuses)."""
    import struct

    objs = []
    for _ in range(draw(_st.integers(0, max_objects))):
        otype = draw(_st.sampled_from(BLF_FRAME_TYPES + (96, 65, 999)))
        hver = draw(_st.sampled_from((1, 1, 2)))
        tflags = draw(_st.sampled_from((1, 2, 2, 0)))
        ts = draw(_st.one_of(_st.integers(0, 10 ** 12), _st.integers(0, 2 ** 64 - 1)))
        chan = draw(_st.integers(0, 5))
        can_id = draw(_st.integers(0, 0x7FF)) | (draw(_st.sampled_from((0, 0x80000000)))
                                                | (draw(_st.integers(0, 0x1FFFFFFF))
                                                   if draw(_st.booleans()) else 0))
        data = draw(_st.binary(min_size=64, max_size=64))
        dlc_max = 255 if bad else 15
        if otype in (1, 86):
            dlc = draw(_st.integers(0, dlc_max if bad else 15))
            flags = draw(_st.sampled_from((0, 0x80, 0x01)))
            body = struct.pack("<HBBL8s", chan, flags, dlc, can_id, data[:8])
            if otype == 86:
                body += bytes(8)
        elif otype == 73:
            dlc = draw(_st.integers(0, dlc_max if bad else 8))
            body = struct.pack("<HHLBBBxLLH2x8s", chan, 0, 0, 0, 0, dlc, 0, can_id, 0, data[:8])
        elif otype == 100:
            dlc = draw(_st.integers(0, 20))
            valid = draw(_st.integers(0, 80))
            fdflags = draw(_st.integers(0, 7))
            flags = draw(_st.sampled_from((0, 0x80)))
            body = struct.pack("<HBBLLBBB5x64s", chan, flags, dlc, can_id, 0, 0, fdflags, valid,
                               data) + bytes(4)
        elif otype == 101:
            dlc = draw(_st.integers(0, 15))
            valid = draw(_st.integers(0, 80 if bad else 64))
            stored = draw(_st.integers(0, 64))
            fdflags = draw(_st.sampled_from((0, 0x1000, 0x1010, 0x3000, 0x0010)))
            ext = draw(_st.sampled_from((0, 0, 0, 40 + 32 + stored)))
            body = struct.pack("<BBBBLLLLLLLHBBL", chan, dlc, valid, 0, can_id, 0, fdflags, 0,
                               0, 0, 0, 0, 0, ext, 0) + data[:stored]
        else:
            body = draw(_st.binary(max_size=40))
        objs.append(_blf_object(otype, body, hver=hver, tflags=tflags, ts=ts))
    return objs


@_st.composite
def blf_bytes(draw, *, max_objects: int = 12, bad: bool = False):
    """A whole BLF file (bytes) holding ``blf_objects`` in zlib or stored containers cut at
    drawn points (objects straddle containers), with a drawn start time in the header."""
    import struct
    import zlib

    objs = draw(blf_objects(max_objects=max_objects, bad=bad))
    stream = b"".join(objs)
    cuts = sorted(set(draw(_st.lists(_st.integers(0, len(stream)), max_size=4))))
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)]) if b > a]
    body = b""
    for piece in pieces:
        method = draw(_st.sampled_from((0, 2)))
        packed = zlib.compress(piece) if method == 2 else piece
        size = 32 + len(packed)
        body += (struct.pack("<4sHHLL", b"LOBJ", 16, 1, size, 10)
                 + struct.pack("<H6xL4x", method, len(piece)) + packed + b"\x00" * (size % 4))
    start = draw(_st.sampled_from(((0,) * 8, (2024, 5, 3, 9, 13, 45, 7, 123),
                                   (2024, 13, 0, 1, 0, 0, 0, 0))))
    header = struct.pack("<4sLBBBBBBBBQQLL8H8H", b"LOGG", 144, 5, 0, 0, 0, 2, 6, 8, 1,
                         144 + len(body), 0, len(objs), 0, *start, *start)
    return header + b"\x00" * (144 - len(header)) + body


@_st.composite
def byte_mutations(draw, raw: bytes, *, max_edits: int = 4, ascii_only: bool = False):
    """``raw`` with 1..max_edits edits (overwrite, insert or delete a few bytes) and maybe cut."""
    out = bytearray(raw)
    alphabet = (_st.binary(min_size=1, max_size=4) if not ascii_only else
                _st.text(alphabet=[chr(c) for c in range(9, 127)], min_size=1, max_size=4)
                .map(lambda s: s.encode("ascii")))
    # positions from a drawn Random: integers() would cluster the edits near the file start
    rnd = draw(_st.randoms(use_true_random=False))
    for _ in range(draw(_st.integers(1, max_edits))):
        at = rnd.randrange(len(out) + 1)
        kind = draw(_st.sampled_from(("set", "insert", "delete")))
        if kind == "set" and at < len(out):
            new = draw(alphabet)
            out[at:at + len(new)] = new
        elif kind == "insert":
            out[at:at] = draw(alphabet)
        else:
            del out[at:at + draw(_st.integers(1, 8))]
    if draw(_st.integers(0, 9)) == 0:
        out = out[:rnd.randrange(len(out) + 1)]
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Identification drives (packbms.identify, packbms.quality, the smoother)
# ---------------------------------------------------------------------------------------------
# A one-hour drive designed for identification: an initial rest, a long highway discharge, a
# rest, a 1 C charge, a rest, another discharge and a last rest (four OCV readings whose charge
# and time are not collinear), 24 cells, with the estimators' handicaps: a 0.5 A current offset
# and 0.5 A noise, two true RC pairs, Arrhenius resistances with a thermal model, balancing.
ID_SEGMENTS = "rest:60,highway:900,rest:480,charge:600,rest:480,highway:600,rest:480"
ID_SENSOR = dict(current_offset_a=0.5, current_noise_a=0.5)


def id_config(**overrides):
    """The :class:`packbms.simulate.SimConfig` of the identification drive."""
    from packbms.simulate import SimConfig
    kw = dict(cells=24, segments=ID_SEGMENTS, initial_soc=0.9, charge_c_rate=1.0, **ID_SENSOR)
    kw.update(overrides)
    return SimConfig(**kw)


_DRIVES: dict = {}


def simulated_drive(config, seed: int):
    """``(truth, telemetry, layout)`` of a simulated drive through the real pipeline (CAN
    encode -> decode -> telemetry), cached per (config, seed) for the test session."""
    key = (repr(config), int(seed))
    if key not in _DRIVES:
        from packbms.dbc import compile_database, decode
        from packbms.layout import parse_layout
        from packbms.simulate import simulate_pack
        from packbms.telemetry import build_telemetry
        sim = simulate_pack(config, seed=seed)
        db = sim.database()
        layout = parse_layout(sim.layout_text)
        layout.validate(db)
        tel = build_telemetry(decode(sim.frames, compile_database(db)), layout, db)
        _DRIVES[key] = (sim.truth, tel, layout)
    return _DRIVES[key]


def at_truth_times(truth, tel, result):
    """``(t, soc, soc_std, soc_true)`` of an estimate at the truth's sample times (the last
    telemetry row at or before each)."""
    tel_t = tel.time + (tel.t0 - truth.t0_unix)
    idx = _np.searchsorted(tel_t, truth.time_s, side="right") - 1
    ok = idx >= 0
    return truth.time_s[ok], result.soc[idx[ok]], result.soc_std[idx[ok]], truth.soc[ok]
