"""packbms.isotp: ISO-TP reassembly against a segmenter written here, and on real UDS logs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REALDATA
from packbms.dbc import compile_database, decode, load_database
from packbms.errors import PackBMSError
from packbms.io.frames import FrameTable
from packbms.isotp import (IsoTpMessages, IsoTpReassembler, find_isotp_ids, parse_pair,
                           reassemble)
from strategies import same_value

CSS = REALDATA / "css-electronics-canedge-mf4"
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- a segmenter (the sender side), written from ISO 15765-2 --------------------------------
def segment(payload: bytes, *, fd: bool = False, pad: int | None = 0xAA) -> list[bytes]:
    """Frames (payload bytes each) a sender puts on the bus for one message: classic frames
    padded to 8 bytes (``pad``) or not (``pad=None``); CAN FD frames padded to a valid CAN FD
    length (with ``pad``, or 0)."""
    size = 64 if fd else 8
    n = len(payload)
    frames = []
    if n <= (62 if fd else 7):
        frames.append(bytes([0x00, n]) + payload if n > 7 else bytes([n]) + payload)
    else:
        head = bytes([0x10 | (n >> 8), n & 0xFF]) if n <= 4095 else \
            bytes([0x10, 0x00]) + n.to_bytes(4, "big")
        first = size - len(head)
        frames.append(head + payload[:first])
        at, seq = first, 1
        while at < n:
            chunk = payload[at:at + size - 1]
            frames.append(bytes([0x20 | seq]) + chunk)
            at += len(chunk)
            seq = (seq + 1) & 15
    if fd:
        fill = bytes([0 if pad is None else pad])
        return [f + fill * (_fd_len(len(f)) - len(f)) for f in frames]
    if pad is None:
        return frames
    return [f + bytes([pad]) * (8 - len(f)) for f in frames]


def _fd_len(n: int) -> int:
    return next(v for v in (1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64) if v >= n)


def table(rows, width=None) -> FrameTable:
    """rows: (id, extended, channel, payload)."""
    width = width or (64 if any(len(p) > 8 for *_, p in rows) else 8)
    ft = FrameTable.empty(len(rows), width)
    for i, (fid, ext, ch, p) in enumerate(rows):
        ft.timestamp[i] = float(i)
        ft.arbitration_id[i] = fid
        ft.is_extended[i] = ext
        ft.channel[i] = ch
        ft.dlc[i] = len(p)
        ft.is_fd[i] = len(p) > 8
        ft.data[i, :len(p)] = np.frombuffer(p, np.uint8)
    return ft


STREAMS = [(0x7EC, False, 0), (0x7BB, False, 0), (0x7EC, False, 1), (0x18DAF110, True, 0)]


@st.composite
def traffic(draw):
    """Interleaved messages of up to four streams, with some consecutive frames dropped.

    Returns (rows, expected, broken, singles): expected = [(completion row, stream, payload)]
    of the intact messages; broken = per corrupted message, the orphans its drop causes;
    singles = intact messages sent as one single frame."""
    per_stream = {}
    singles = 0
    fd = {s: draw(st.booleans()) for s in STREAMS}
    pad = draw(st.sampled_from([None, 0xAA, 0x55]))
    for s in STREAMS[:draw(st.integers(1, len(STREAMS)))]:
        msgs = draw(st.lists(st.one_of(st.binary(min_size=1, max_size=7),
                                       st.binary(min_size=8, max_size=300),
                                       st.binary(min_size=4096, max_size=4200)),
                             min_size=1, max_size=4))
        frames, spans = [], []
        for payload in msgs:
            seg = segment(payload, fd=fd[s], pad=pad)
            drop = None
            if len(seg) > 3 and draw(st.integers(0, 4)) == 0:
                drop = draw(st.integers(1, len(seg) - 2))      # a CF, not the last
            kept = [f for k, f in enumerate(seg) if k != drop]
            orphans = len(seg) - drop - 2 if drop is not None else None
            spans.append((len(frames), len(kept), payload, orphans))
            singles += len(seg) == 1
            frames.extend(kept)
        per_stream[s] = (frames, spans)
    # interleave the streams, keeping each stream's order
    labels = [s for s, (frames, _) in per_stream.items() for _ in frames]
    order = draw(st.permutations(labels))
    rows, position = [], {s: [] for s in per_stream}
    cursor = {s: 0 for s in per_stream}
    for s in order:
        frames, _ = per_stream[s]
        position[s].append(len(rows))
        rows.append((s[0], s[1], s[2], frames[cursor[s]]))
        cursor[s] += 1
    expected, broken = [], []
    for s, (frames, spans) in per_stream.items():
        for start, count, payload, orphans in spans:
            if orphans is None:
                expected.append((position[s][start + count - 1], s, payload))
            else:
                broken.append(orphans)
    expected.sort()
    return rows, expected, broken, singles


def assert_messages(got: IsoTpMessages, expected, *, length_byte=True):
    assert len(got) == len(expected)
    for j, (row, (fid, ext, ch), payload) in enumerate(expected):
        assert got.timestamp[j] == row
        assert (got.arbitration_id[j], got.is_extended[j], got.channel[j]) == (fid, ext, ch)
        assert got.length[j] == len(payload)
        body = got.payload(j)
        if length_byte:
            assert body[0] == len(payload) & 0xFF
            body = body[1:]
        assert body == payload
        assert not got.data[j, int(got.payload_length[j]):].any()   # padding not kept
    assert got.width % 8 == 0


@SETTINGS
@given(case=traffic(), length_byte=st.booleans())
def test_reassembly_round_trip_with_interleaving_and_dropped_frames(case, length_byte):
    rows, expected, broken, singles = case
    frames = table(rows)
    ids = sorted({fid for fid, *_ in STREAMS})
    got = reassemble(frames, ids=ids, max_length=5000, length_byte=length_byte)
    assert_messages(got, expected, length_byte=length_byte)
    c = got.counts
    assert c.messages == len(expected)
    assert c.sequence_errors == len(broken)
    assert c.orphans == sum(broken)
    assert (c.aborted, c.incomplete, c.bad, c.too_long) == (0, 0, 0, 0)
    assert c.single_frame == singles


@SETTINGS
@given(case=traffic(), cuts=st.lists(st.integers(0, 200), max_size=5))
def test_chunked_feed_equals_one_shot(case, cuts):
    rows, expected, *_ = case
    frames = table(rows)
    ids = sorted({fid for fid, *_ in STREAMS})
    whole = reassemble(frames, ids=ids, max_length=5000)
    r = IsoTpReassembler(ids=ids, max_length=5000)
    bounds = sorted({0, len(frames), *[min(c, len(frames)) for c in cuts]})
    parts = [r.feed(frames.take(slice(a, b))) for a, b in zip(bounds[:-1], bounds[1:])]
    counts = r.finish()
    assert counts == whole.counts
    assert np.concatenate([p.timestamp for p in parts]).tolist() == whole.timestamp.tolist()
    assert np.concatenate([p.first_timestamp for p in parts]).tolist() == \
        whole.first_timestamp.tolist()
    got = [p.payload(j) for p in parts for j in range(len(p))]
    assert got == [whole.payload(j) for j in range(len(whole))]


def test_too_long_aborted_incomplete_flow_control_and_bad_frames():
    long_msg = bytes(range(256)) * 2                          # 512 bytes
    rows = [(0x7EC, False, 0, f) for f in segment(long_msg)]     # too long for max_length
    rows += [(0x7EC, False, 0, f) for f in segment(b"\x62\x01\x01" + bytes(20))[:2]]  # cut...
    rows += [(0x7EC, False, 0, f) for f in segment(b"\x62\x02")]  # ...by a single frame
    rows += [(0x7E4, False, 0, bytes([0x30, 0, 0, 0, 0, 0, 0, 0]))]   # flow control
    rows += [(0x7EC, False, 0, bytes([0x09, 1, 2]))]             # SF promising 9 bytes: bad
    rows += [(0x7EC, False, 0, bytes([0x10, 0x05, 1, 2, 3, 4, 5, 0]))]  # FF that fits: bad
    rows += [(0x7EC, False, 0, bytes([0x45, 0]))]                # not a PCI: bad
    rows += [(0x7EC, False, 0, f) for f in segment(bytes(30))[:-1]]   # never finished
    got = reassemble(table(rows), pairs=[(0x7E4, 0x7EC)], max_length=100)
    c = got.counts
    assert (c.too_long, c.aborted, c.flow_control, c.bad, c.incomplete) == (1, 1, 1, 3, 1)
    assert c.orphans == 0 and c.sequence_errors == 0          # the long one's CFs are skipped
    assert c.messages == 1 and got.payload(0) == b"\x02\x62\x02"


def test_escape_lengths_and_fd_single_frames():
    big = bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8))
    fd_sf = bytes(range(40))
    rows = [(0x18DAF110, True, 0, f) for f in segment(big)]
    rows += [(0x18DAF110, True, 0, f) for f in segment(fd_sf, fd=True)]
    got = reassemble(table(rows, width=64), ids=[0x18DAF110], max_length=6000)
    assert got.length.tolist() == [5000, 40]
    assert got.payload(0)[1:] == big and got.payload(0)[0] == 5000 & 0xFF
    assert got.payload(1)[1:] == fd_sf
    assert got.is_extended.all() and got.width == 5008


def test_bad_arguments():
    ft = table([(0x7EC, False, 0, bytes(8))])
    with pytest.raises(PackBMSError, match="REQUEST:RESPONSE"):
        reassemble(ft, pairs=["7E4-7EC"])
    with pytest.raises(PackBMSError, match="29 bits"):
        reassemble(ft, ids=[1 << 30])
    with pytest.raises(PackBMSError, match="max_length"):
        reassemble(ft, ids=[0x7EC], max_length=0)
    assert parse_pair("0x7e4 : 7EC") == (0x7E4, 0x7EC)


# -- real UDS logs (CSS Electronics CANedge, ../shared/realdata) ------------------------------
def _oracle(frames: FrameTable, fid: int) -> list[tuple[float, bytes]]:
    """A plain-Python reassembler: (completion time, length byte + message) per response."""
    out, buf, need, seq = [], b"", 0, 0
    for i in np.flatnonzero(frames.arbitration_id == fid):
        p = bytes(frames.data[i, :frames.dlc[i]])
        kind = p[0] >> 4
        if kind == 0:
            out.append((frames.timestamp[i], p[:1 + (p[0] & 15)]))
            need = 0
        elif kind == 1:
            need = ((p[0] & 15) << 8) | p[1]
            buf, seq = p[2:], 1
        elif kind == 2 and need:
            if p[0] & 15 != seq:
                need = 0
                continue
            buf += p[1:]
            seq = (seq + 1) & 15
            if len(buf) >= need:
                out.append((frames.timestamp[i], bytes([need & 0xFF]) + buf[:need]))
                need = 0
    return out


def _check_against_cantools(frames, dbc, fid, table):
    """Every decoded response equals cantools on the oracle's payload (truncated allowed)."""
    db = load_database(dbc)
    msg = db.get_message_by_frame_id(fid)
    ms = table.messages[msg.name]
    expect = _oracle(frames, fid)
    assert len(ms) == len(expect) > 0
    for r, (t, payload) in enumerate(expect):
        assert ms.timestamps[r] == t
        theirs = msg.decode(payload, decode_choices=False, allow_truncated=True)
        ours = {s: ms.dense(s) for s in ms.signal_names}
        assert {s for s, (_, p) in ours.items() if p[r]} == set(theirs)
        for s, v in theirs.items():
            assert same_value(ours[s][0][r], v), (s, ours[s][0][r], v)


def test_kona_uds_soc_is_50_percent():
    path = CSS / "kona-ev_uds_17BD1DB7_00000170.MF4"
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    from packbms.io import read_log

    frames = read_log(path)
    assert find_isotp_ids(frames) == [(0x7BB, False), (0x7EC, False)]
    got = reassemble(frames)                       # auto: the two response ids
    c = got.counts
    # 150 first frames on 0x7EC, 120 answered in full: 29 cut by the next poll, 1 at the end
    assert (c.messages, c.aborted, c.incomplete, c.sequence_errors) == (270, 29, 1, 0)
    table = decode(got, compile_database(CSS / "tp_uds.dbc"))
    t, soc = table.signal("M_SID_0x220101_StateOfChargeBMS")
    assert len(soc) == 120 and np.all(soc == 50.0)
    _check_against_cantools(frames, CSS / "tp_uds.dbc", 0x7EC, table)
    _check_against_cantools(frames, CSS / "tp_uds.dbc", 0x7BB, table)


def test_leaf_uds_soc_and_pack_temperatures():
    path = CSS / "leaf-2019_uds_2F6913DB_00000001.MF4"
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    from packbms.io import read_log

    frames = read_log(path)
    assert find_isotp_ids(frames) == [(0x7BB, False)]
    got = reassemble(frames, pairs=["79B:7BB"])    # requests and responses
    assert got.counts.flow_control == 26 and got.counts.single_frame == 26
    table = decode(got, compile_database(CSS / "tp_uds_nissan.dbc"))
    assert table.counts.decoded == 26 and table.counts.unknown_id == 26   # requests: no DBC
    t, soc = table.signal("SoC")
    assert len(soc) == 13 and soc[0] == pytest.approx(89.2286, abs=1e-9)
    assert np.all(np.diff(soc) < 0) and soc[-1] > 89.1                # slowly discharging
    assert len(table.signal("BatPackTemp1")[1]) == 13
    _check_against_cantools(frames, CSS / "tp_uds_nissan.dbc", 0x7BB, table)


# -- decode of reassembled payloads: presence by exact payload length --------------------------
@SETTINGS
@given(data=st.data())
def test_decode_of_isotp_payloads_matches_cantools_allow_truncated(data):
    """A reassembled payload's length is exact, so decode checks it per signal: the signals
    it carries in full, exactly as cantools' ``allow_truncated=True`` decodes them."""
    import cantools

    from strategies import can_databases, frame_payloads

    db = data.draw(can_databases(max_messages=2))
    msgs = list(db.messages)
    rows = []
    for _ in range(data.draw(st.integers(1, 8))):
        m = data.draw(st.sampled_from(msgs))
        payload = data.draw(frame_payloads(m))
        payload = payload[:data.draw(st.integers(0, len(payload)))]       # any length
        rows.append((m, payload))
    width = max(8, -(-max(len(p) for _, p in rows) // 8) * 8)
    n = len(rows)
    iso = IsoTpMessages(
        timestamp=np.arange(n, dtype=float), first_timestamp=np.arange(n, dtype=float),
        arbitration_id=np.array([m.frame_id for m, _ in rows], np.uint32),
        is_extended=np.array([m.is_extended_frame for m, _ in rows]),
        channel=np.zeros(n, np.uint8), length=np.array([len(p) for _, p in rows], np.int64),
        data=np.zeros((n, width), np.uint8), length_byte=False)
    for i, (_, p) in enumerate(rows):
        iso.data[i, :len(p)] = np.frombuffer(p, np.uint8)
    cdb = compile_database(db)
    table = decode(iso, cdb)
    assert table.counts.decoded == n and table.counts.too_short == 0
    seen = {m.name: 0 for m in msgs}
    for m, p in rows:
        r = seen[m.name]
        seen[m.name] += 1
        try:
            theirs = m.decode(p, decode_choices=False, allow_truncated=True)
        except cantools.database.DecodeError:
            continue        # a multiplexer value without a branch: cantools refuses
        ms = table.messages[cdb.names[cdb.message_index(m)]]
        present = {s for s in ms.signal_names if ms.dense(s)[1][r]}
        assert present == set(theirs), (m.name, p.hex())
        for s, v in theirs.items():
            assert same_value(ms.dense(s)[0][r], v), (s, v)
