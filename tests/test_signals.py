"""packbms.signals: the per-signal (sparse) SignalTable layout and its compatibility views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packbms.dbc import compile_database, decode
from packbms.errors import DatabaseError
from packbms.signals import DecodeCounts, MessageSignals, SignalTable, concat_signal_tables
from strategies import can_databases, frame_streams, frames_to_table

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_dense_constructor_and_accessors():
    values = np.array([[0, 3.7, 9.0], [1, 0.0, 9.5], [0, 3.8, 9.9]])
    present = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], bool)
    m = MessageSignals(name="CV", frame_id=0x200, timestamps=[1.0, 2.0, 3.0],
                       signal_names=("G", "V1", "T"), values=values, present=present)
    assert len(m) == 3 and m.count("V1") == 2 and m.always_present("G")
    rows, v = m.sparse("V1")
    assert rows.tolist() == [0, 2] and v.tolist() == [3.7, 3.8]
    assert m.sparse("T")[0] is None and m.rows("T").tolist() == [0, 1, 2]
    t, v = m.signal("V1")
    assert t.tolist() == [1.0, 3.0] and v.tolist() == [3.7, 3.8]
    dv, dp = m.dense("V1")
    assert dp.tolist() == [True, False, True] and np.isnan(dv[1]) and dv[2] == 3.8
    # the dense matrices: NaN where absent, the mask as given
    np.testing.assert_array_equal(m.present, present)
    np.testing.assert_array_equal(m.values[present], values[present])
    assert np.isnan(m.values[1, 1])
    assert m.column(2) == 2 and m.signal(1)[1].tolist() == [3.7, 3.8]
    with pytest.raises(DatabaseError, match="no signal 'V2'"):
        m.column("V2")
    with pytest.raises(DatabaseError):
        m.column(7)
    empty = MessageSignals("E", 1, [], ("a", "b"))
    assert len(empty) == 0 and empty.values.shape == (0, 2) and empty.signal("a")[1].size == 0


def test_signal_table_lookup_and_concat():
    a = SignalTable({"P": MessageSignals("P", 1, [0.0, 1.0], ("I", "U"), [[1, 2], [3, 4]]),
                     "Q": MessageSignals("Q", 2, [0.5], ("I", "X"), [[7, 8]],
                                         [[True, False]])},
                    counts=DecodeCounts(decoded=3), source="a.blf")
    b = SignalTable({"P": MessageSignals("P", 1, [2.0], ("I", "U"), [[5, 6]]),
                     "Q": MessageSignals("Q", 2, [2.5, 3.5], ("I", "X"), [[9, 10], [11, 12]],
                                         [[True, True], [False, True]])},
                    counts=DecodeCounts(decoded=3, unknown_id=1))
    with pytest.raises(DatabaseError, match="several messages"):
        a.signal("I")
    assert a.signal("P.I")[1].tolist() == [1, 3] and a.names()[0] == "P.I"
    j = concat_signal_tables([a, b])
    assert j.counts == DecodeCounts(decoded=6, unknown_id=1) and j.source == "a.blf"
    assert j.signal("U")[1].tolist() == [2, 4, 6]
    q = j.messages["Q"]
    assert q.rows("X").tolist() == [1, 2] and q.signal("X")[0].tolist() == [2.5, 3.5]
    assert q.rows("I").tolist() == [0, 1] and q.signal("I")[1].tolist() == [7, 9]
    assert j.messages["P"].sparse("I")[0] is None           # every row, still implicit
    with pytest.raises(DatabaseError, match="best matches"):
        j.signal("Uu")


@SETTINGS
@given(data=st.data())
def test_chunked_decode_concat_equals_whole(data):
    db = data.draw(can_databases())
    stream = data.draw(frame_streams(db, max_frames=20))
    frames = frames_to_table(stream, width=64)
    cdb = compile_database(db)
    whole = decode(frames, cdb)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(frames)), max_size=4))))
    bounds = [0, *cuts, len(frames)]
    parts = [decode(frames.take(slice(a, b)), cdb) for a, b in zip(bounds[:-1], bounds[1:])]
    joined = concat_signal_tables(parts)
    assert joined.counts == whole.counts
    for name, m in whole.messages.items():
        j = joined.messages[name]
        np.testing.assert_array_equal(j.timestamps, m.timestamps)
        for s in m.signal_names:
            np.testing.assert_array_equal(j.rows(s), m.rows(s))
            np.testing.assert_array_equal(j.sparse(s)[1], m.sparse(s)[1])
        np.testing.assert_array_equal(j.present, m.present)


def test_wide_multiplexed_message_stores_present_values_only():
    """foxbms-like: 64 groups x 4 signals under one multiplexer; a frame carries 5 of 257."""
    import cantools

    from packbms.dbc import encode

    lines = ['VERSION ""', "BO_ 592 Cells: 8 BMS", ' SG_ Mux M : 0|8@1+ (1,0) [0|63] "" X']
    for g in range(64):
        for c in range(4):
            lines.append(f' SG_ V{g}_{c} m{g} : {8 + 13 * c}|13@1+ (1,0) [0|8191] "mV" X')
    db = cantools.database.load_string("\n".join(lines) + "\n", database_format="dbc")
    cdb = compile_database(db)
    n = 64 * 500
    group = np.arange(n) % 64
    volts = 3000 + np.arange(n) % 1000
    values = {"Mux": group}
    values.update({f"V{g}_{c}": volts for g in range(64) for c in range(4)})
    frames = encode(cdb, "Cells", np.arange(n) * 1e-3, values)
    m = decode(frames, cdb).messages["Cells"]
    assert m.count("V5_2") == 500 and m.rows("V5_2")[:3].tolist() == [5, 69, 133]
    np.testing.assert_array_equal(m.signal("V5_2")[1], volts[group == 5])
    dense_bytes = n * 257 * 9
    assert m.nbytes < dense_bytes / 20      # values + shared rows, not 257 NaN columns
    # the four signals of one multiplexer value share one row array
    assert m.sparse("V7_0")[0].base is m.sparse("V7_3")[0].base
