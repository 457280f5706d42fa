"""packbms.dbc on real third-party databases and logs (../shared/realdata), against cantools."""

from __future__ import annotations

from pathlib import Path

import can
import cantools
import numpy as np
import pytest
from cantools.database.can import Database, Message, Signal
from cantools.database.conversion import BaseConversion

from packbms.dbc import compile_database, decode, encode, load_database
from packbms.errors import DatabaseError
from packbms.io.frames import FrameTable
from strategies import (assert_decodes_like_cantools, cantools_start, random_payload,
                        same_value, signal_bits)

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
DBCS = sorted(REALDATA.glob("**/*.dbc")) if REALDATA.is_dir() else []
PYCAN = REALDATA / "python-can-4.6.1-testdata"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    return path


def synth_stream(cdb, rng, per_message: int = 12):
    """Random frames for every compiled message: defined multiplexer branches mostly, some
    frames one byte short, some padded to 8 bytes (or to the width the signals need)."""
    stream = []
    for m in cdb.cantools_messages:
        carried = int(cdb.encoded_length[cdb.message_index(m)])
        for k in range(per_message):
            if k == 0 and m.length > 0:
                n = m.length - 1
            elif k % 3 == 1:
                n = max(m.length, min(carried, 64))
            else:
                n = m.length
            stream.append((m.frame_id, m.is_extended_frame, False, False,
                           random_payload(rng, m, n)))
    order = rng.permutation(len(stream))
    return [stream[i] for i in order]


def table_of(stream) -> FrameTable:
    width = 64 if any(len(p) > 8 for *_, p in stream) else 8
    ft = FrameTable.empty(len(stream), width)
    for i, (fid, ext, err, rtr, payload) in enumerate(stream):
        ft.timestamp[i] = float(i)
        ft.arbitration_id[i] = fid
        ft.is_extended[i] = ext
        ft.is_error[i] = err
        ft.is_remote[i] = rtr
        ft.dlc[i] = len(payload)
        ft.data[i, :len(payload)] = np.frombuffer(payload, np.uint8)
    return ft


# -- every real DBC ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", DBCS or [None], ids=lambda p: p.name if p else "none")
def test_real_dbc_loads_compiles_and_decodes_like_cantools(path):
    if path is None:
        pytest.skip(f"no real DBCs under {REALDATA}")
    db = load_database(path)
    cdb = compile_database(db)
    assert cdb.database is db
    keys = {(m.frame_id, m.is_extended_frame) for m in db.messages if not m.is_container}
    assert len(cdb) == len(keys) and len(set(cdb.names)) == len(cdb)
    assert cdb.sig_stop[-1] == sum(len(m.signals) for m in cdb.cantools_messages)
    stream = synth_stream(cdb, np.random.default_rng(len(path.name)))
    table = decode(table_of(stream), cdb)
    assert table.counts.decoded > 0
    assert_decodes_like_cantools(cdb, stream, table)


def test_model3_strict_load_fails_cleanly_and_non_strict_works():
    path = need(REALDATA / "model3dbc" / "Model3CAN.dbc")
    with pytest.raises(DatabaseError, match=r"Model3CAN\.dbc.*DI_lashAngle") as info:
        load_database(path, strict=True)
    assert isinstance(info.value.__cause__, cantools.database.Error)
    cdb = compile_database(path)
    assert len(cdb) == 148


def test_model3_cell_voltages_and_negative_factors():
    cdb = compile_database(need(REALDATA / "model3dbc" / "Model3CAN.dbc"))
    db = cdb.database
    rng = np.random.default_rng(3)
    cells = db.get_message_by_name("ID401CellVoltages")
    amp = db.get_message_by_name("ID132HVBattAmpVolt")
    stream = [(m.frame_id, False, False, False, random_payload(rng, m))
              for m in [cells] * 300 + [amp] * 100]
    table = decode(table_of(stream), cdb)
    assert_decodes_like_cantools(cdb, stream, table)
    # the multiplexer covers all 96 cells (3 per group)
    ms = table.messages["ID401CellVoltages"]
    mux = [s.name for s in cells.signals if s.is_multiplexer][0]
    assert set(ms.values[:, ms.column(mux)].astype(int)) >= set(range(20))
    # negative factors: encode physical values with packbms and cantools, same bytes
    values = {"BattVoltage132": [350.25, 401.5], "RawBattCurrent132": [-120.5, 35.0],
              "SmoothBattCurrent132": [-120.0, 35.1], "ChargeHoursRemaining132": [0, 12]}
    frames = encode(cdb, "ID132HVBattAmpVolt", [0.0, 0.1], values)
    for i in range(2):
        row = {s.name: 0 for s in amp.signals}
        row.update({k: v[i] for k, v in values.items()})
        assert bytes(frames.data[i, :amp.length]) == amp.encode(row, strict=False)
    back = decode(frames, cdb).messages["ID132HVBattAmpVolt"]
    np.testing.assert_allclose(back.values[:, back.column("RawBattCurrent132")], [-120.5, 35.0])
    np.testing.assert_allclose(back.values[:, back.column("SmoothBattCurrent132")],
                               [-120.0, 35.1], atol=1e-9)


def test_model3_signal_beyond_declared_length():
    cdb = compile_database(need(REALDATA / "model3dbc" / "Model3CAN.dbc"))
    m = cdb.database.get_message_by_name("ID5D5RearDItemps")
    eight = bytes([10, 20, 30, 40, 50, 0x34, 0xB2, 7])
    t = decode(table_of([(m.frame_id, False, False, False, eight),
                         (m.frame_id, False, False, False, eight[:5])]), cdb)
    ms = t.messages["ID5D5RearDItemps"]
    col = ms.column("DI_lashAngle")
    assert ms.present[:, col].tolist() == [True, False]
    lash = [s for s in m.signals if s.name == "DI_lashAngle"][0]
    assert ms.values[0, col] == pytest.approx((0x234 & 0x3FF) * lash.scale + lash.offset)


def test_leaf_mixed_byte_order_0x1db():
    cdb = compile_database(need(REALDATA / "leaf-can-bus-messages" / "EV-can_AZE0.dbc"))
    m = cdb.database.get_message_by_frame_id(0x1DB)
    orders = {s.byte_order for s in m.signals}
    assert orders == {"big_endian", "little_endian"}
    rng = np.random.default_rng(11)
    stream = [(0x1DB, False, False, False, random_payload(rng, m)) for _ in range(500)]
    table = decode(table_of(stream), cdb)
    assert_decodes_like_cantools(cdb, stream, table)
    ms = table.messages[cdb.names[cdb.message_index(m)]]
    current = ms.values[:, ms.column("LB_Current")]
    assert current.min() < 0 < current.max()      # signed 11-bit Motorola, 0.5 A/bit


def test_gnss_duplicate_definitions_keep_both_ids():
    path = need(REALDATA / "css-electronics-canedge-mf4" / "gnss.dbc")
    db = load_database(path)
    cdb = compile_database(db)
    assert len(cdb) == 18
    assert cdb.names[cdb.message_index("gnss_pos")] == "gnss_pos"
    assert cdb.frame_id[cdb.message_index("gnss_pos")] == 0x13      # what cantools' name gives
    assert cdb.frame_id[cdb.message_index("gnss_pos@0x3")] == 0x3
    assert db.get_message_by_name("gnss_pos").frame_id == 0x13
    rng = np.random.default_rng(5)
    payloads = [rng.integers(0, 256, 8, dtype=np.uint8).tobytes() for _ in range(4)]
    t = decode(table_of([(fid, False, False, False, p) for fid, p in
                         zip([0x3, 0x13, 0x3, 0x13], payloads)]), cdb)
    for name, fid, rows in (("gnss_pos@0x3", 0x3, [0, 2]), ("gnss_pos", 0x13, [1, 3])):
        ms = t.messages[name]
        for r, i in enumerate(rows):
            theirs = db.decode_message(fid, payloads[i], decode_choices=False)
            for sig, v in theirs.items():
                assert same_value(ms.values[r, ms.column(sig)], v)


# -- real logs --------------------------------------------------------------------------------
def test_foxbms_trc_log_decodes_exactly_like_cantools():
    dbc = need(REALDATA / "foxbms-2" / "foxbms.dbc")
    trc = need(REALDATA / "foxbms-2" / "can-log.trc")
    db = load_database(dbc)
    cdb = compile_database(db)
    with can.LogReader(str(trc)) as reader:
        msgs = list(reader)
    assert len(msgs) == 9
    frames = FrameTable.from_messages(msgs, source=str(trc))
    table = decode(frames, cdb)
    assert table.counts.decoded == 9 and table.source == str(trc)
    stream = [(m.arbitration_id, m.is_extended_id, m.is_error_frame, m.is_remote_frame,
               bytes(m.data)) for m in msgs]
    rows: dict[str, int] = {}
    for msg, (fid, *_rest, payload) in zip(msgs, stream):
        theirs = db.decode_message(fid, payload, decode_choices=False)
        name = db.get_message_by_frame_id(fid).name
        r = rows.get(name, 0)
        rows[name] = r + 1
        ms = table.messages[name]
        assert ms.timestamps[r] == msg.timestamp
        got = {n: v for n, v, p in zip(ms.signal_names, ms.values[r], ms.present[r]) if p}
        assert got == theirs
    cells = table.messages["f_CellVoltages"]
    volts = [cells.values[0, cells.column(f"CellVoltage_{i:03d}")] for i in range(8, 12)]
    assert volts == [1996, 2005, 2001, 1999]
    assert table.signal("f_StringValuesP0.Voltage")[1].tolist() == [63.93, 63.93]


def _auto_message(frame_id: int, extended: bool, length: int, rng, name: str) -> Message:
    """A seeded random non-overlapping layout (both byte orders, signed, scaled)."""
    total = 8 * length
    occupied: set = set()
    signals = []
    for k in range(40):
        size = int(rng.integers(1, min(total, 32) + 1))
        order = ("little_endian", "big_endian")[int(rng.integers(2))]
        start = int(rng.integers(0, total - size + 1))
        cells = signal_bits(order, start, size)
        if cells & occupied:
            continue
        occupied |= cells
        conv = BaseConversion.factory(float(rng.choice([1, 0.1, -0.05, 0.25])),
                                      float(rng.choice([0, -40, 12.5])), None, False)
        signals.append(Signal(f"{name}_S{k}", cantools_start(order, start), size, order,
                              bool(rng.integers(2)), conversion=conv))
    return Message(frame_id, name, length, signals, is_extended_frame=extended,
                   is_fd=length > 8, strict=True)


def _pycan_log_case(filename: str, extra=()):
    path = need(PYCAN / filename)
    with can.LogReader(str(path)) as reader:
        msgs = list(reader)
    rng = np.random.default_rng(len(msgs))
    shortest: dict = {}
    for m in msgs:
        if m.is_error_frame or m.is_remote_frame or m.dlc == 0:
            continue
        key = (m.arbitration_id, m.is_extended_id)
        shortest[key] = min(shortest.get(key, 64), len(m.data))
    messages = list(extra)
    taken = {(m.frame_id, m.is_extended_frame) for m in messages}
    for i, ((fid, ext), n) in enumerate(sorted(shortest.items())):
        if (fid, ext) not in taken:
            messages.append(_auto_message(fid, ext, n, rng, f"Auto{i}"))
    db = Database(messages)
    cdb = compile_database(db)
    frames = FrameTable.from_messages(msgs, source=str(path))
    table = decode(frames, cdb)
    stream = [(m.arbitration_id, m.is_extended_id, m.is_error_frame, m.is_remote_frame,
               bytes(m.data) if not m.is_remote_frame else b"") for m in msgs]
    assert_decodes_like_cantools(cdb, stream, table, timestamps=frames.timestamp)
    return msgs, cdb, table


def test_python_can_logfile_asc_fd_j1939_error_and_remote_frames():
    # J1939 TP.DT (PGN 0xEB00): byte 0 is the sequence number = a multiplexer
    seq = [Signal("Seq", 0, 8, is_multiplexer=True)]
    seq += [Signal("Packet1_Size", 8, 16, multiplexer_ids=[1], multiplexer_signal="Seq"),
            Signal("Packet1_Pgn", 39, 24, byte_order="big_endian", multiplexer_ids=[1],
                   multiplexer_signal="Seq")]
    seq += [Signal(f"Packet{n}_Data", 8, 56, is_signed=True, multiplexer_ids=[n],
                   multiplexer_signal="Seq") for n in (2, 3, 4)]
    tpdt = Message(0x18EBFF00, "TPDT", 8, seq, is_extended_frame=True)
    msgs, cdb, table = _pycan_log_case("logfile.asc", extra=[tpdt])
    c = table.counts
    errors = sum(m.is_error_frame for m in msgs)
    remotes = sum(m.is_remote_frame and not m.is_error_frame for m in msgs)
    assert c.error_or_remote == errors + remotes and errors >= 4 and remotes >= 3
    assert len(table.messages["TPDT"]) == 8
    assert table.messages["TPDT"].present.sum(axis=0).tolist() == [8, 2, 2, 2, 2, 2]
    fd = [m for m in msgs if m.is_fd and len(m.data) == 64]
    assert fd and any(len(ms) == 1 and ms.values.shape[1] > 0 for ms in table.messages.values()
                      if ms.frame_id == fd[0].arbitration_id)


@pytest.mark.parametrize("filename", ["issue_1256.asc", "issue_1905.blf",
                                      "test_CanMessage_V2_1.trc", "test_CanMessage.asc.gz"])
def test_python_can_logs_through_generated_dbc(filename):
    msgs, cdb, table = _pycan_log_case(filename)
    assert table.counts.total == len(msgs)
    assert table.counts.decoded >= 0.9 * len(msgs) - 1


def test_pack_dbc_with_masked_j1939_ids():
    """The CSS J1939 demo DBC with the source address masked matches frames from any sender."""
    db = load_database(need(REALDATA / "css-electronics-canedge-mf4" /
                            "CSS-Electronics-SAE-J1939-DEMO.dbc"))
    cdb = compile_database(db, match_mask=0x00FFFF00)
    rng = np.random.default_rng(2)
    stream = []
    for m in db.messages:
        for sa in (0x00, 0x17, 0xFE):
            fid = (m.frame_id & ~0xFF) | sa
            stream.append((fid, True, False, False, random_payload(rng, m)))
    table = decode(table_of(stream), cdb)
    assert table.counts.decoded == len(stream)
    for name, m in zip(cdb.names, cdb.cantools_messages):
        ms = table.messages[name]
        rows = [p for fid, *_x, p in stream if (fid & 0x00FFFF00) == (m.frame_id & 0x00FFFF00)]
        for r, p in enumerate(rows):
            for sig, v in m.decode(p, decode_choices=False).items():
                assert same_value(ms.values[r, ms.column(sig)], v)


# -- J1939: the real truck log, PGN matching against cantools' j1939 helpers ----------------
def test_j1939_truck_log_matches_by_pgn_like_cantools():
    from cantools import j1939

    from packbms.io import read_log

    css = REALDATA / "css-electronics-canedge-mf4"
    log = need(css / "j1939-truck_00000001.MF4")
    dbc = need(css / "CSS-Electronics-SAE-J1939-DEMO.dbc")
    frames = read_log(log)
    assert len(frames) == 150_411
    db = load_database(dbc)
    cdb = compile_database(db)                     # the DBC says ProtocolType J1939
    assert cdb.j1939.all()
    exact = decode(frames, compile_database(db, j1939=False))
    assert exact.counts.decoded == 0               # SOURCES.md: exact ids match nothing
    table = decode(frames, cdb)
    # the oracle: cantools' own PGN of every extended frame against the messages' PGNs
    by_pgn = {j1939.pgn_from_frame_id(m.frame_id): m for m in db.messages}
    rows = {m.name: [] for m in db.messages}
    ext = np.flatnonzero(frames.is_extended & ~frames.is_error & ~frames.is_remote)
    pgn = {int(f): j1939.pgn_from_frame_id(int(f)) for f in np.unique(frames.arbitration_id[ext])}
    for i in ext:
        m = by_pgn.get(pgn[int(frames.arbitration_id[i])])
        if m is not None:
            rows[m.name].append(i)
    assert table.counts.decoded == sum(len(r) for r in rows.values())
    for name, idx in rows.items():
        ms = table.messages[name]
        msg = db.get_message_by_name(name)
        assert len(ms) == len(idx) == 3993          # EEC1 from 0x00, CCVS1 from 0x00
        np.testing.assert_array_equal(ms.timestamps, frames.timestamp[idx])
        for sig in ms.signal_names:
            theirs = [msg.decode(bytes(frames.data[i, :frames.dlc[i]]),
                                 decode_choices=False)[sig] for i in idx]
            np.testing.assert_array_equal(ms.signal(sig)[1], np.array(theirs, float))
