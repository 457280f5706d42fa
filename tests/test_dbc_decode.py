"""packbms.dbc decode/encode against cantools, on generated databases and hand-built cases."""

from __future__ import annotations

import math

import cantools
import numpy as np
import pytest
from cantools.database.can import Database, Message, Signal
from cantools.database.conversion import BaseConversion
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packbms.dbc import CompiledDatabase, compile_database, decode, encode, load_database
from packbms.errors import DatabaseError, PackBMSError
from packbms.io.frames import FrameTable
from strategies import (_mux_fields, assert_decodes_like_cantools, can_databases,
                        frame_streams, frames_to_table, random_payload, same_value,
                        set_raw_bits)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- decode property --------------------------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_decode_matches_cantools_on_generated_databases(data):
    db = data.draw(can_databases())
    stream = data.draw(frame_streams(db))
    wide = data.draw(st.booleans())
    cdb = compile_database(db)
    table = decode(frames_to_table(stream, width=64 if wide else None), cdb)
    assert set(table.messages) == {m.name for m in db.messages}
    assert_decodes_like_cantools(cdb, stream, table)


# -- encode properties ------------------------------------------------------------------------
def _raw_range(s: Signal) -> tuple[int, int]:
    if s.is_signed:
        return -(1 << (s.length - 1)), (1 << (s.length - 1)) - 1
    return 0, (1 << s.length) - 1


def draw_row(data, msg: Message) -> dict:
    """Physical values of one frame: in-range raw values, multiplexers set to defined
    branches, NaN for the signals the branch leaves out (they must be ignored)."""
    muxes = {s.name: values for s, values in _mux_fields(msg)}
    by_name = {s.name: s for s in msg.signals}
    row = {}

    def active(s: Signal) -> bool:
        while s.multiplexer_signal is not None:
            p = by_name[s.multiplexer_signal]
            if p.name not in row or not math.isfinite(row[p.name]) or \
                    int(row[p.name]) not in s.multiplexer_ids:
                return False
            s = p
        return True

    # multiplexers first (parents before nested ones), so `active` can see their values
    for s in [s for s, _ in _mux_fields(msg)] + [s for s in msg.signals
                                                   if not s.is_multiplexer]:
        if not active(s):
            row[s.name] = math.nan
            continue
        if muxes.get(s.name):
            row[s.name] = float(data.draw(st.sampled_from(muxes[s.name])))
        elif s.is_float:
            f = data.draw(st.floats(allow_nan=False, allow_infinity=False, width=s.length))
            row[s.name] = f * s.scale + s.offset
        else:
            lo, hi = _raw_range(s)
            small = st.integers(max(lo, -(1 << 52)), min(hi, 1 << 52))
            raw = data.draw(st.one_of(st.integers(lo, hi), small, st.sampled_from([lo, hi, 0])))
            row[s.name] = float(raw) * s.scale + s.offset
    return row


@SETTINGS
@given(data=st.data())
def test_encode_matches_cantools_encode_message(data):
    db = data.draw(can_databases(max_messages=1))
    msg = db.messages[0]
    cdb = compile_database(db)
    rows = [draw_row(data, msg) for _ in range(data.draw(st.integers(1, 4)))]
    expected = []
    for r in rows:
        try:
            expected.append(msg.encode(r, strict=False))
        except Exception:  # noqa: BLE001 - bitstruct/cantools raise several types out of range
            expected.append(None)
    values = {s.name: np.array([r[s.name] for r in rows]) for s in msg.signals}
    if any(e is None for e in expected):
        bad = expected.index(None)
        with pytest.raises(DatabaseError, match="signal"):
            encode(cdb, msg.name, [0.0], {k: v[bad:bad + 1] for k, v in values.items()})
        return
    frames = encode(cdb, msg.name, np.arange(len(rows), dtype=float), values, channel=3)
    assert len(frames) == len(rows)
    assert np.all(frames.arbitration_id == msg.frame_id)
    assert np.all(frames.is_extended == msg.is_extended_frame)
    assert np.all(frames.dlc >= msg.length) and np.all(frames.channel == 3)
    assert np.all(frames.is_fd == (msg.is_fd or frames.dlc > 8))
    for i, e in enumerate(expected):
        assert bytes(frames.data[i, :msg.length]) == e, (i, rows[i])
        assert not frames.data[i, msg.length:].any()


@SETTINGS
@given(data=st.data())
def test_decode_encode_round_trip_in_raw_space(data):
    # integer fields up to 40 bits: raw -> physical -> raw is then exact in float64
    db = data.draw(can_databases(max_length=40))
    stream = data.draw(frame_streams(db))
    cdb = compile_database(db)
    table = decode(frames_to_table(stream), cdb)
    for mi, name in enumerate(cdb.names):
        ms = table.messages[name]
        if not len(ms):
            continue
        values = {s: ms.values[:, j] for j, s in enumerate(ms.signal_names)}
        frames = encode(cdb, name, ms.timestamps, values)
        again = decode(frames, cdb).messages[name]
        np.testing.assert_array_equal(again.present, ms.present)
        np.testing.assert_array_equal(again.timestamps, ms.timestamps)
        first = cdb.sig_first[mi]
        for j in range(len(ms.signal_names)):
            s = first + j
            a, b = ms.values[:, j], again.values[:, j]
            exact = (not cdb.sig_float[s]) or (cdb.sig_scale[s] == 1 and cdb.sig_offset[s] == 0)
            if exact:
                np.testing.assert_array_equal(b, a)
            else:
                eps = 2.0 ** -23 if cdb.sig_length[s] == 32 else 2.0 ** -50
                tol = eps * (np.abs(a) + abs(cdb.sig_offset[s])) + 1e-38 * abs(cdb.sig_scale[s])
                ok = (a == b) | (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= tol)
                assert ok.all(), (ms.signal_names[j], a[~ok], b[~ok])
        # and the bytes of the re-encoded frames are a fixed point
        frames2 = encode(cdb, name, again.timestamps,
                         {s: again.values[:, j] for j, s in enumerate(again.signal_names)})
        exact_msg = not cdb.sig_float[first:cdb.sig_stop[mi]].any()
        if exact_msg:
            np.testing.assert_array_equal(frames2.data, frames.data)


# -- exhaustive layout sweep ------------------------------------------------------------------
def test_every_length_byte_order_sign_and_bit_offset_against_cantools():
    """All 64 lengths x 2 byte orders x signedness x 8 bit offsets (9-byte fields included),
    with random payloads and small raw values (float64 shows every bit of those), in one
    decode call; then encode of the same raw values against cantools' encoder."""
    rng = np.random.default_rng(20240611)
    messages, frames, raws = [], [], []
    fid = 0
    for length in range(1, 65):
        for order in ("little_endian", "big_endian"):
            for signed in (False, True):
                for off in range(8):
                    norm = 8 * int(rng.integers(0, 4)) + off
                    start = norm if order == "little_endian" else 8 * (norm // 8) + 7 - off
                    msg = Message(fid, f"L{length}{order[0]}{int(signed)}o{off}", 16,
                                  [Signal("X", start, length, byte_order=order,
                                          is_signed=signed)], is_fd=True)
                    messages.append(msg)
                    lo, hi = _raw_range(msg.signals[0])
                    picks = [int(rng.integers(max(lo, -1000), min(hi, 1000) + 1)),
                             lo, hi, int(rng.integers(max(lo, -2**52), min(hi, 2**52) + 1))]
                    raws.append(picks)
                    for raw in picks:
                        p = bytearray(rng.integers(0, 256, 16, dtype=np.uint8).tobytes())
                        set_raw_bits(p, order, norm, length, raw)
                        frames.append((fid, False, False, False, bytes(p)))
                    frames.append((fid, False, False, False, b"\xff" * 16))
                    fid += 1
    db = Database(messages)
    cdb = compile_database(db)
    table = decode(frames_to_table(frames), cdb)
    assert table.counts.decoded == len(frames)
    assert_decodes_like_cantools(cdb, frames, table)
    for msg, picks in zip(messages, raws):
        small = [r for r in picks if abs(r) <= 2**52]
        got = encode(cdb, msg.name, np.zeros(len(small)), {"X": np.array(small, float)})
        for i, r in enumerate(small):
            assert bytes(got.data[i, :16]) == msg.encode({"X": r}, strict=False), (msg.name, r)
        back = decode(got, cdb, messages=[msg.name]).messages[msg.name].values[:, 0]
        assert back.tolist() == [float(r) for r in small]


# -- hand-built cases -------------------------------------------------------------------------
BMS_DBC = '''VERSION ""
BO_ 801 Pack: 4 BMS
 SG_ Current : 7|16@0- (0.01,0) [-300|300] "A" Vector__XXX
 SG_ Voltage : 23|16@0+ (0.01,0) [0|600] "V" Vector__XXX
BO_ 2147484449 PackExt: 2 BMS
 SG_ Counter : 0|16@1+ (1,0) [0|65535] "" Vector__XXX
BO_ 1024 Cells: 8 BMS
 SG_ Group M : 0|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ V0 m0 : 8|16@1+ (0.0001,0) [0|6.5535] "V" Vector__XXX
 SG_ V1 m0 : 24|16@1+ (0.0001,0) [0|6.5535] "V" Vector__XXX
 SG_ V2 m1 : 8|16@1+ (0.0001,0) [0|6.5535] "V" Vector__XXX
 SG_ T m1 : 24|8@1- (1,-40) [-168|87] "degC" Vector__XXX
BO_ 1536 Fd: 64 BMS
 SG_ Head : 0|32@1+ (1,0) [0|0] "" Vector__XXX
 SG_ Tail : 503|16@0- (0.5,1) [0|0] "" Vector__XXX
 SG_ Wide : 70|64@0+ (1,0) [0|0] "" Vector__XXX
 SG_ WideLE : 140|64@1- (2,0) [0|0] "" Vector__XXX
 SG_ F32 : 256|32@1- (1,0) [0|0] "" Vector__XXX
 SG_ F64 : 327|64@0- (-0.5,3) [0|0] "" Vector__XXX
SIG_VALTYPE_ 1536 F32 : 1;
SIG_VALTYPE_ 1536 F64 : 2;
'''


@pytest.fixture(scope="module")
def bms():
    db = cantools.database.load_string(BMS_DBC, database_format="dbc")
    return db, compile_database(db)


def _table(rows, width=8) -> FrameTable:
    """rows: (id, extended, payload bytes, is_error, is_remote)."""
    ft = FrameTable.empty(len(rows), width)
    for i, (fid, ext, payload, err, rtr) in enumerate(rows):
        ft.timestamp[i] = 10.0 + i
        ft.arbitration_id[i] = fid
        ft.is_extended[i] = ext
        ft.is_error[i] = err
        ft.is_remote[i] = rtr
        ft.dlc[i] = len(payload)
        ft.is_fd[i] = len(payload) > 8
        ft.data[i, :len(payload)] = np.frombuffer(payload, np.uint8)
    return ft


def test_counts_short_error_remote_unknown(bms):
    db, cdb = bms
    ft = _table([
        (801, False, bytes.fromhex("ff389088"), False, False),   # decoded
        (801, False, bytes.fromhex("ff3890"), False, False),     # too short
        (801, False, b"", False, True),                          # remote
        (0, False, b"", True, False),                            # error frame
        (801, True, bytes.fromhex("ff389088"), False, False),    # 29-bit 801: PackExt
        (802, True, bytes.fromhex("ff389088"), False, False),    # 29-bit 802: unknown
        (0x7FF, False, bytes(8), False, False),                  # unknown
        (801, False, bytes.fromhex("0064908800"), False, False),  # longer than needed: fine
    ])
    t = decode(ft, cdb)
    c = t.counts
    assert (c.decoded, c.too_short, c.error_or_remote, c.unknown_id) == (3, 1, 2, 2)
    assert c.total == len(ft)
    pack = t.messages["Pack"]
    np.testing.assert_array_equal(pack.timestamps, [10.0, 17.0])
    assert t.messages["PackExt"].values.tolist() == [[0x38FF]]
    np.testing.assert_array_equal(pack.values, [[-2.0, 370.0], [1.0, 370.0]])
    assert pack.present.all()
    # every database message is in the table, 0 rows when absent from the log
    assert set(t.messages) == {"Pack", "PackExt", "Cells", "Fd"}
    assert len(t.messages["Cells"]) == 0 and t.messages["Cells"].values.shape == (0, 5)
    assert t.signal("Pack.Voltage")[1].tolist() == [370.0, 370.0]


def test_standard_and_extended_same_number_are_different_messages():
    a = Message(0x123, "Std", 2, [Signal("A", 0, 16)], is_extended_frame=False)
    b = Message(0x123, "Ext", 2, [Signal("B", 0, 16, is_signed=True)], is_extended_frame=True)
    cdb = compile_database(Database([a, b]))
    t = decode(_table([(0x123, False, b"\xff\xff", False, False),
                       (0x123, True, b"\xff\xff", False, False),
                       (0x123, True, b"\x01\x00", False, False)]), cdb)
    assert t.messages["Std"].values.tolist() == [[65535.0]]
    assert t.messages["Ext"].values.tolist() == [[-1.0], [1.0]]


def test_multiplexed_present_mask(bms):
    db, cdb = bms
    rows = [(1024, False, bytes([0, 0x10, 0x27, 0x20, 0x4E, 0, 0, 0]), False, False),
            (1024, False, bytes([1, 0x30, 0x75, 0x41, 0, 0, 0, 0]), False, False),
            (1024, False, bytes([7, 1, 2, 3, 4, 5, 6, 7]), False, False)]
    ms = decode(_table(rows), cdb).messages["Cells"]
    assert ms.signal_names == ("Group", "V0", "V2", "V1", "T")
    np.testing.assert_array_equal(ms.present, [[1, 1, 0, 1, 0], [1, 0, 1, 0, 1], [1, 0, 0, 0, 0]])
    assert ms.values[0, 1] == pytest.approx(1.0) and ms.values[0, 3] == pytest.approx(2.0)
    assert ms.values[1, 2] == pytest.approx(3.0) and ms.values[1, 4] == 65 - 40
    assert np.isnan(ms.values[2, 1:]).all()
    for r, (_, _, payload, _, _) in enumerate(rows[:2]):
        theirs = db.decode_message(1024, payload, decode_choices=False)
        for name, v in theirs.items():
            assert ms.values[r, ms.column(name)] == v


def test_fd_64_byte_message_and_nine_byte_field(bms):
    db, cdb = bms
    rng = np.random.default_rng(7)
    payloads = [rng.integers(0, 256, 64, dtype=np.uint8).tobytes() for _ in range(20)]
    t = decode(_table([(1536, False, p, False, False) for p in payloads]
                      + [(1536, False, bytes(12), False, False)], width=64), cdb)
    assert t.counts.too_short == 1
    ms = t.messages["Fd"]
    for r, p in enumerate(payloads):
        theirs = db.decode_message(1536, p, decode_choices=False)
        for name, v in theirs.items():
            assert same_value(ms.values[r, ms.column(name)], v), name


@pytest.mark.parametrize("wide", [False, True])
def test_database_without_messages_counts_every_frame_unknown(bms, wide):
    """An empty DBC (or one of container messages only, or compile_database(messages=[]))
    decodes nothing and says so; it must not fail."""
    db, _ = bms
    rows = [(801, False, bytes(4), False, False), (0x18FEF100, True, bytes(8), False, False),
            (0, False, b"", True, False)]
    if wide:
        rows.append((0x123, False, bytes(16), False, False))
    ft = _table(rows, 64 if wide else 8)
    for cdb in (compile_database(cantools.database.load_string('VERSION ""\n',
                                                               database_format="dbc")),
                compile_database(db, messages=[])):
        t = decode(ft, cdb)
        assert t.messages == {} and t.counts.decoded == 0
        assert (t.counts.unknown_id, t.counts.error_or_remote) == (len(rows) - 1, 1)


def test_messages_selection(bms):
    db, cdb = bms
    ft = _table([(801, False, bytes(4), False, False), (1024, False, bytes(8), False, False)])
    t = decode(ft, cdb, messages=["Cells"])
    assert list(t.messages) == ["Cells"]
    assert (t.counts.decoded, t.counts.unknown_id) == (1, 1)
    with pytest.raises(DatabaseError, match="Pakc|Pack"):
        decode(ft, cdb, messages=["Pakc"])
    sub = compile_database(db, messages=["Pack"])
    assert sub.names == ("Pack",)
    with pytest.raises(DatabaseError, match="Cells"):
        compile_database(db, messages=["Cels"])


def test_compiled_arrays(bms):
    db, cdb = bms
    assert isinstance(cdb, CompiledDatabase) and cdb.database is db
    i = cdb.message_index("PackExt")
    assert cdb.frame_id[i] == 801 and cdb.is_extended[i]
    s = cdb.signal_index("Pack", "Current")
    assert cdb.sig_big_endian[s] and cdb.sig_signed[s] and cdb.sig_start[s] == 0
    assert cdb.sig_length[s] == 16 and cdb.sig_scale[s] == 0.01
    v2 = cdb.signal_index("Cells", "V2")
    assert cdb.sig_parent[v2] == cdb.signal_index("Cells", "Group")
    assert cdb.mux_values[cdb.sig_mux_first[v2]:cdb.sig_mux_stop[v2]].tolist() == [1]
    assert cdb.sig_parent[cdb.signal_index("Cells", "Group")] == -1
    assert (cdb.match_mask == 0xFFFFFFFF).all()
    with pytest.raises(DatabaseError, match="Voltage"):
        cdb.signal_index("Pack", "Voltag")


def test_extended_multiplexing_chain():
    conv = BaseConversion.factory(1, 0, None, False)
    sigs = [
        Signal("Svc", 0, 8, is_multiplexer=True, conversion=conv),
        Signal("Did", 8, 8, is_multiplexer=True, multiplexer_ids=[0x62], multiplexer_signal="Svc"),
        Signal("Soc", 16, 16, conversion=BaseConversion.factory(0.01, 0, None, False),
               multiplexer_ids=[1, 2], multiplexer_signal="Did"),
        Signal("Temp", 16, 8, is_signed=True, multiplexer_ids=[3], multiplexer_signal="Did"),
        Signal("Err", 8, 16, multiplexer_ids=[0x7F], multiplexer_signal="Svc"),
    ]
    msg = Message(0x7BB, "Uds", 4, sigs, strict=True)
    cdb = compile_database(Database([msg]))
    payloads = [bytes([0x62, 1, 0x10, 0x27]), bytes([0x62, 3, 0xF6, 0]),
                bytes([0x7F, 0x22, 0x31, 0]), bytes([0x62, 2, 0xFF, 0xFF]),
                bytes([0x50, 1, 2, 3]), bytes([0x62, 9, 2, 3])]
    stream = [(0x7BB, False, False, False, p) for p in payloads]
    table = decode(frames_to_table(stream), cdb)
    # unknown Svc 0x50 / Did 9: cantools raises; we keep the selectors only
    assert_decodes_like_cantools(cdb, stream, table)
    ms = table.messages["Uds"]
    assert ms.present[4].tolist() == [n == "Svc" for n in ms.signal_names]
    assert ms.present[5].tolist() == [n in ("Svc", "Did") for n in ms.signal_names]
    assert ms.values[0, ms.column("Soc")] == pytest.approx(100.0)
    assert ms.values[1, ms.column("Temp")] == -10


def test_j1939_match_mask_ignores_source_address():
    msg = Message(0x18FEF1FE, "CCVS", 8,
                  [Signal("Speed", 8, 16, conversion=BaseConversion.factory(1 / 256, 0, None,
                                                                             False))],
                  is_extended_frame=True)
    db = Database([msg])
    rows = [(0x18FEF100, True, bytes([0, 0, 0x32, 0, 0, 0, 0, 0]), False, False),
            (0x18FEF1FE, True, bytes([0, 0, 0x64, 0, 0, 0, 0, 0]), False, False),
            (0x18FEF200, True, bytes(8), False, False)]
    exact = decode(_table(rows), compile_database(db))
    assert exact.counts.decoded == 1 and exact.counts.unknown_id == 2
    masked = decode(_table(rows), compile_database(db, match_mask=0x03FFFF00))
    assert masked.counts.decoded == 2
    assert masked.messages["CCVS"].values[:, 0].tolist() == [50.0, 100.0]
    by_name = compile_database(db, match_mask={"CCVS": 0x00FFFF00})
    assert by_name.match_mask.tolist() == [0x00FFFF00]
    with pytest.raises(DatabaseError):
        compile_database(db, match_mask={"CCSV": 0x00FFFF00})


def test_signal_beyond_message_length_is_decoded_when_carried():
    # Model3CAN.dbc style: the DBC says 5 bytes but places a signal in bytes 5..6
    msg = Message(0x5D5, "Temps", 5, [Signal("A", 0, 8), Signal("Late", 40, 10)], strict=False)
    cdb = compile_database(Database([msg], strict=False))
    t = decode(_table([(0x5D5, False, bytes([1, 0, 0, 0, 0, 0xFF, 0x03, 0]), False, False),
                       (0x5D5, False, bytes([2, 0, 0, 0, 0]), False, False),
                       (0x5D5, False, bytes([3, 0, 0, 0]), False, False)]), cdb)
    ms = t.messages["Temps"]
    assert t.counts.decoded == 2 and t.counts.too_short == 1
    assert ms.values[0].tolist() == [1.0, 1023.0]
    assert ms.present.tolist() == [[True, True], [True, False]]
    frames = encode(cdb, "Temps", [0.0], {"A": 5, "Late": 7})
    assert frames.dlc[0] == 7 and bytes(frames.data[0, :7]) == bytes([5, 0, 0, 0, 0, 7, 0])


# -- encode errors and conventions ------------------------------------------------------------
def test_encode_rejects_out_of_range_and_names_signal(bms):
    _, cdb = bms
    with pytest.raises(DatabaseError, match=r"'Voltage'.*700.*row 1"):
        encode(cdb, "Pack", [0, 1], {"Current": 0.0, "Voltage": [10.0, 700.0]})
    with pytest.raises(DatabaseError, match=r"'Current'.*nan"):
        encode(cdb, "Pack", [0], {"Current": np.nan, "Voltage": 1.0})
    with pytest.raises(DatabaseError, match="Voltage"):
        encode(cdb, "Pack", [0], {"Voltag": 1.0})
    with pytest.raises(DatabaseError, match="3 timestamps"):
        encode(cdb, "Pack", [0, 1, 2], {"Current": [1.0, 2.0]})
    with pytest.raises(DatabaseError, match="Pack"):
        encode(cdb, "Pak", [0], {})
    with pytest.raises(DatabaseError, match="'Group'"):
        encode(cdb, "Cells", [0], {"V0": 1.0})
    assert issubclass(DatabaseError, PackBMSError)


def test_encode_conventions(bms):
    db, cdb = bms
    # missing signals are raw 0; rounding is half to even like cantools' round()
    f = encode(cdb, "Pack", [0, 1, 2], {"Current": [0.005, 0.015, -0.025]})
    cur = [db.get_message_by_name("Pack").encode({"Current": c, "Voltage": 0.0}, strict=False)
           for c in (0.005, 0.015, -0.025)]
    assert [bytes(f.data[i, :4]) for i in range(3)] == cur
    # multiplexed rows: only the selected branch is written, NaN elsewhere is ignored
    g = encode(cdb, "Cells", [0, 1], {"Group": [0, 1], "V0": [3.2, np.nan],
                                      "V2": [np.nan, 3.3], "T": [np.nan, 25.0]})
    back = decode(g, cdb).messages["Cells"]
    assert back.values[0, back.column("V0")] == pytest.approx(3.2)
    assert back.values[1, back.column("V2")] == pytest.approx(3.3)
    assert back.values[1, back.column("T")] == 25.0
    # FD output
    fd = encode(cdb, "Fd", np.zeros(2), {"Head": 7})
    assert fd.width == 64 and fd.is_fd.all() and (fd.dlc == 64).all()
    # extended id survives
    e = encode(cdb, "PackExt", [0.0], {"Counter": 513})
    assert e.is_extended[0] and e.arbitration_id[0] == 801 and e.dlc[0] == 2


def test_encode_large_batch_round_trip(bms):
    _, cdb = bms
    rng = np.random.default_rng(1)
    n = 100_000
    group = rng.integers(0, 2, n)
    v = np.round(rng.uniform(2.5, 4.2, n), 4)
    t = rng.integers(-40, 80, n).astype(float)
    frames = encode(cdb, "Cells", np.arange(n) * 1e-3,
                    {"Group": group, "V0": v, "V1": v, "V2": v, "T": t})
    ms = decode(frames, cdb).messages["Cells"]
    assert len(ms) == n
    sel = group == 1
    np.testing.assert_allclose(ms.values[sel, ms.column("V2")], v[sel], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ms.values[sel, ms.column("T")], t[sel])
    np.testing.assert_allclose(ms.values[~sel, ms.column("V1")], v[~sel], rtol=0, atol=1e-9)


# -- compile / load errors --------------------------------------------------------------------
def test_load_database_errors(tmp_path):
    bad = tmp_path / "broken_pack.dbc"
    bad.write_text('VERSION ""\nBO_ 12 Foo: 8 X\n SG_ Bar : 0|8@1+ (1,0) [0|1] "" X Y Z !!\n')
    with pytest.raises(DatabaseError, match="broken_pack.dbc") as info:
        load_database(bad)
    assert info.value.__cause__ is not None
    with pytest.raises(DatabaseError, match="missing.dbc"):
        load_database(tmp_path / "missing.dbc")
    with pytest.raises(DatabaseError, match="missing.dbc"):
        compile_database(tmp_path / "missing.dbc")
    good = tmp_path / "ok.dbc"
    good.write_text(BMS_DBC)
    assert compile_database(good).names == ("Pack", "PackExt", "Cells", "Fd")


@pytest.mark.parametrize("suffix", [".kcd", ".sym"])
def test_other_database_formats_load_and_decode_alike(tmp_path, bms, suffix):
    db, cdb = bms
    path = tmp_path / f"pack{suffix}"
    cantools.database.dump_file(db, str(path))
    other = compile_database(path)
    rng = np.random.default_rng(4)
    rows = [(801, False, rng.integers(0, 256, 4, dtype=np.uint8).tobytes(), False, False),
            (1024, False, bytes([1]) + rng.integers(0, 256, 7, dtype=np.uint8).tobytes(),
             False, False)]
    a, b = decode(_table(rows), cdb), decode(_table(rows), other)
    for name in ("Pack", "Cells"):
        ma, mb = a.messages[name], b.messages[name]
        for sig in ma.signal_names:
            ca, cb = ma.column(sig), mb.column(sig)
            np.testing.assert_array_equal(ma.present[:, ca], mb.present[:, cb])
            np.testing.assert_array_equal(ma.values[:, ca], mb.values[:, cb])


def test_unsupported_signals_raise():
    wide = Message(1, "Wide", 16, [Signal("Huge", 0, 70)], strict=False)
    with pytest.raises(DatabaseError, match="Huge"):
        compile_database(Database([wide], strict=False))
    half = Message(2, "Half", 8, [Signal("H", 0, 16, conversion=BaseConversion.factory(
        1, 0, None, True))], strict=False)
    with pytest.raises(DatabaseError, match="float"):
        compile_database(Database([half], strict=False))


# -- J1939 PGN matching -------------------------------------------------------------------
J1939_DBC = '''VERSION ""
BO_ 2566844926 CCVS: 8 Vector__XXX
 SG_ Speed : 8|16@1+ (0.00390625,0) [0|250.996] "km/h" Vector__XXX
BO_ 2566844672 CCVS_Engine: 8 Vector__XXX
 SG_ EngineSpeedOfCCVS : 8|16@1+ (0.00390625,0) [0|250.996] "km/h" Vector__XXX
BO_ 2565472510 Request: 3 Vector__XXX
 SG_ PGN : 0|24@1+ (1,0) [0|16777215] "" Vector__XXX
BO_ 801 Plain: 2 Vector__XXX
 SG_ Word : 0|16@1+ (1,0) [0|65535] "" Vector__XXX
BA_DEF_  "ProtocolType" STRING ;
BA_DEF_DEF_  "ProtocolType" "";
BA_ "ProtocolType" "J1939";
'''


def test_j1939_pgn_matching_pdu1_pdu2_and_exact_precedence():
    from cantools import j1939

    db = cantools.database.load_string(J1939_DBC, database_format="dbc")
    cdb = compile_database(db)                              # automatic: ProtocolType J1939
    assert cdb.j1939.tolist() == [True, True, True, False]   # 11-bit Plain is not J1939
    assert [hex(x) for x in cdb.match_mask] == ["0x3ffff00", "0x3ffff00", "0x3ff0000",
                                                "0xffffffff"]
    rows = [
        (0x18FEF1FE, True, bytes([0, 0, 1, 0, 0, 0, 0, 0]), False, False),   # CCVS itself
        (0x0CFEF117, True, bytes([0, 0, 2, 0, 0, 0, 0, 0]), False, False),   # other SA, prio
        (0x18FEF100, True, bytes([0, 0, 3, 0, 0, 0, 0, 0]), False, False),   # exact: engine's
        (0x18EA17F9, True, bytes([0xF1, 0xFE, 0x00]), False, False),         # PDU1, DA 0x17
        (0x18EB17F9, True, bytes(8), False, False),                          # other PGN
        (0x18FEF1FE, False, bytes(8), False, False),                         # 11-bit: no
        (0x321, False, bytes([7, 0]), False, False),
    ]
    t = decode(_table(rows), cdb)
    assert (t.counts.decoded, t.counts.unknown_id) == (5, 2)
    # an exact id picks its own definition; another sender's frame goes to the PGN's later
    # definition (as cantools keeps the later of two definitions of one id)
    assert t.signal("CCVS.Speed")[1].tolist() == [1.0]
    assert t.signal("EngineSpeedOfCCVS")[1].tolist() == [2.0, 3.0]
    assert t.signal("PGN")[1].tolist() == [0xFEF1]
    # the same PGN that cantools computes
    for fid, name in ((0x0CFEF117, "CCVS"), (0x18EA17F9, "Request")):
        assert j1939.pgn_from_frame_id(fid) == \
            j1939.pgn_from_frame_id(db.get_message_by_name(name).frame_id)
    off = decode(_table(rows), compile_database(db, j1939=False))
    assert off.counts.decoded == 3                            # exact ids only
    # match_mask overrides the J1939 mask of the messages it names
    over = compile_database(db, match_mask={"Request": 0x03FFFF00})
    assert decode(_table(rows), over).counts.decoded == 4
    plain = cantools.database.load_string(J1939_DBC.split("BA_DEF_")[0], database_format="dbc")
    assert not compile_database(plain).j1939.any()
    assert compile_database(plain, j1939=True).j1939.tolist() == [True, True, True, False]


# -- the lookup paths: vectorised few-key, 11-bit table + id cache; sparse gathering --------
def _same_tables(a, b) -> None:
    assert a.counts == b.counts
    assert list(a.messages) == list(b.messages)
    for name, ma in a.messages.items():
        mb = b.messages[name]
        np.testing.assert_array_equal(ma.timestamps, mb.timestamps)
        for j in range(len(ma.signal_names)):
            ra, va = ma.sparse(j)
            rb, vb = mb.sparse(j)
            assert (ra is None) == (rb is None), (name, j)
            if ra is not None:
                np.testing.assert_array_equal(ra, rb)
            np.testing.assert_array_equal(va.view(np.uint64), vb.view(np.uint64))


def _decode_both_ways(db, frames, messages=None, **kw):
    """Decode with the vectorised few-key lookup allowed (any number of keys) and with it
    disabled (11-bit table and id cache); returns both tables and whether the first took the
    few-key path."""
    from unittest import mock

    import packbms.dbc as dbc_mod

    with mock.patch.object(dbc_mod, "FEW_KEYS", 10**6):
        cdb = compile_database(db, **kw)
        few = decode(frames, cdb, messages=messages)
        took_few = cdb._decode_plan(messages, frames.data.shape[1], False).few is not None
    with mock.patch.object(dbc_mod, "FEW_KEYS", -1):
        cdb = compile_database(db, **kw)
        assert cdb._decode_plan(messages, frames.data.shape[1], False).few is None
        table = decode(frames, cdb, messages=messages)
    return few, table, took_few


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_lookup_paths_agree_and_match_cantools(data):
    db = data.draw(can_databases())
    stream = data.draw(frame_streams(db, max_frames=40))
    names = [m.name for m in db.messages]
    messages = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(names), min_size=1,
                                                        unique=True)))
    frames = frames_to_table(stream)
    few, table, took_few = _decode_both_ways(db, frames, messages)
    assert took_few
    _same_tables(few, table)
    if messages is None:
        assert_decodes_like_cantools(compile_database(db), stream, table)


def test_j1939_selection_keeps_exact_ids_of_unselected_messages_apart():
    # CCVS_Engine answers its PGN; CCVS's own id is CCVS's even when CCVS is not decoded
    db = cantools.database.load_string(J1939_DBC, database_format="dbc")
    rows = [
        (0x18FEF1FE, True, bytes([0, 0, 1, 0, 0, 0, 0, 0]), False, False),   # CCVS's id
        (0x0CFEF117, True, bytes([0, 0, 2, 0, 0, 0, 0, 0]), False, False),   # PGN: Engine
        (0x18FEF100, True, bytes([0, 0, 3, 0, 0, 0, 0, 0]), False, False),   # Engine's id
        (0x0CFEF117, True, bytes([0, 0, 4]), False, False),                  # too short
        (0x0CFEF117, True, bytes(8), True, False),                           # error frame
        (0x321, False, bytes([7, 0]), False, False),                         # Plain
    ]
    few, table, took_few = _decode_both_ways(db, _table(rows), ["CCVS_Engine"])
    assert took_few
    _same_tables(few, table)
    c = few.counts
    assert (c.decoded, c.unknown_id, c.too_short, c.error_or_remote) == (2, 2, 1, 1)
    assert few.signal("EngineSpeedOfCCVS")[1].tolist() == [2.0, 3.0]
    assert list(few.messages) == ["CCVS_Engine"]
    # every message: the exact id picks CCVS, the rest go to the PGN's later definition
    few, table, took_few = _decode_both_ways(db, _table(rows))
    _same_tables(few, table)
    assert few.signal("CCVS.Speed")[1].tolist() == [1.0]
    assert few.signal("Word")[1].tolist() == [7.0]


def test_sparse_log_gathers_only_decoded_frames(bms):
    # a log of mostly other ids (a vehicle bus, a few BMS frames): the gather lists the
    # decoded frames' positions first; the values must not change
    db, _ = bms
    rng = np.random.default_rng(11)
    pack = db.get_message_by_name("Pack")
    stream = []
    for i in range(5000):
        if rng.random() < 0.03:
            stream.append((801, False, False, False, random_payload(rng, pack)))
        else:
            stream.append((int(rng.integers(0x400, 0x7FF)), False, False, False,
                           rng.integers(0, 256, 8, dtype=np.uint8).tobytes()))
    stream[4999] = (801, False, False, False, random_payload(rng, pack))   # the last one
    frames = frames_to_table(stream)
    few, table, _ = _decode_both_ways(db, frames)
    _same_tables(few, table)
    assert 0 < table.counts.decoded < len(frames) / 4
    assert_decodes_like_cantools(compile_database(db), stream, table)
    assert table.messages["Pack"].timestamps[-1] == 4999.0


def test_ids_with_bit_31_fall_back_to_the_id_cache():
    # no CAN id has bit 31; the few-key path folds the id kind into it, so such a table is
    # handed to the general lookup, which keeps such frames unknown
    a = Message(0x123, "A", 2, [Signal("X", 0, 16)])
    frames = _table([(0x123, False, b"\x01\x00", False, False),
                     (0x80000123, False, b"\x02\x00", False, False),
                     (0x80000123, True, b"\x03\x00", False, False)])
    few, table, took_few = _decode_both_ways(Database([a]), frames)
    assert took_few
    _same_tables(few, table)
    assert table.signal("X")[1].tolist() == [1.0]
    assert table.counts.unknown_id == 2


def test_masked_11bit_messages_through_the_table():
    # 11-bit frames read their message from a 2048-entry table built with the masks; an
    # out-of-range 11-bit id (a malformed log) still goes through the keys
    msgs = [Message(0x120, "Group", 1, [Signal("G", 0, 8)]),
            Message(0x125, "Exact", 1, [Signal("E", 0, 8)]),
            Message(0x300, "Other", 2, [Signal("O", 0, 16)])]
    rows = [(fid, False, bytes([fid & 0xFF, 1]), False, False)
            for fid in (0x120, 0x121, 0x125, 0x12F, 0x130, 0x300, 0x301, 0x800, 0x920)]
    frames = _table(rows)
    few, table, _ = _decode_both_ways(Database(msgs), frames,
                                      match_mask={"Group": 0x7F0, "Exact": 0x7FF,
                                                  "Other": 0x7FF})
    _same_tables(few, table)
    # 0x920 is no 11-bit id, but its masked bits are Group's
    assert table.signal("G")[1].tolist() == [0x20, 0x21, 0x2F, 0x20]
    assert table.signal("E")[1].tolist() == [0x25]
    assert table.signal("O")[1].tolist() == [256.0]
    assert table.counts.unknown_id == 3
    # Group's mask covers 0x125 and 0x300 too, but their exact definitions come first, and
    # stay unknown when only Group is decoded
    wide = compile_database(Database(msgs), match_mask={"Group": 0x0F0})
    t = decode(frames, wide, messages=["Group"])
    assert t.signal("G")[1].tolist() == [0x20, 0x21, 0x2F, 0x20]
    assert t.counts.unknown_id == 5


def test_decode_plan_is_reused_and_selection_forms_agree(bms):
    db, _ = bms
    cdb = compile_database(db)
    frames = _table([(801, False, bytes.fromhex("ff389088"), False, False)])
    a = decode(frames, cdb, messages=["Pack"])
    b = decode(frames, cdb, messages="Pack")
    c = decode(frames, cdb, messages={"Pack"})
    _same_tables(a, b)
    _same_tables(a, c)
    assert len(cdb._plans) == 1             # one plan for the three spellings
    with pytest.raises(DatabaseError, match="Pak"):
        decode(frames, cdb, messages=["Pak"])


def test_selection_as_generator_and_objects(bms):
    db, _ = bms
    cdb = compile_database(db)
    frames = _table([(801, False, bytes.fromhex("ff389088"), False, False),
                     (1024, False, bytes(8), False, False)])
    a = decode(frames, cdb, messages=(name for name in ["Pack"]))
    assert list(a.messages) == ["Pack"] and a.counts.decoded == 1
    b = decode(frames, cdb, messages=[db.get_message_by_name("Pack")])
    _same_tables(a, b)
