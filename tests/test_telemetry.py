"""Alignment of decoded signals onto the current's time base."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from packbms.errors import TelemetryError
from packbms.layout import parse_layout
from packbms.signals import MessageSignals, SignalTable
from packbms.telemetry import build_telemetry

LAYOUT_MUX = '''
[pack]
cells_in_series = 6
capacity_ah = 10
chemistry = "nmc"
[current]
signal = "I"
positive = "charge"
[pack_voltage]
signal = "U"
[cell_voltage]
message = "CV"
mux = "G"
signals = ["V1", "V2", "V3"]
'''


def msg(name, t, cols: dict, present=None):
    names = tuple(cols)
    values = np.column_stack([np.asarray(cols[n], float) for n in names]) if len(t) else \
        np.zeros((0, len(names)))
    pres = np.ones(values.shape, bool) if present is None else present
    return MessageSignals(name=name, frame_id=0, timestamps=np.asarray(t, float),
                          signal_names=names, values=values, present=pres)


def naive_zoh(target, ev_t, ev_v):
    out = np.full(len(target), np.nan)
    for i, t in enumerate(target):
        seen = [v for tt, v in zip(ev_t, ev_v) if tt <= t]
        if seen:
            out[i] = seen[-1]
    return out


def make_table(n_cur=100, dt=0.01, rng=None):
    rng = rng or np.random.default_rng(0)
    t_cur = 1000.0 + np.arange(n_cur) * dt
    cur = rng.normal(0, 10, n_cur)
    rows_t, g, v = [], [], []
    for r in range(40):
        rows_t.append(1000.0 + 0.025 * r)
        g.append(r % 2)
        v.append(3.6 + 0.01 * np.arange(3) + 0.001 * r)
    v = np.array(v)
    table = SignalTable(messages={
        "P": msg("P", t_cur, {"I": cur, "U": 350 + cur}),
        "CV": msg("CV", rows_t, {"G": g, "V1": v[:, 0], "V2": v[:, 1], "V3": v[:, 2]}),
    }, source="test.blf")
    return table, t_cur, cur, np.array(rows_t), np.array(g), v


def test_mux_scatter_matches_naive_zoh():
    table, t_cur, cur, rows_t, g, v = make_table()
    lay = parse_layout(LAYOUT_MUX)
    tel = build_telemetry(table, lay)
    assert tel.t0 == 1000.0
    np.testing.assert_allclose(tel.time, t_cur - 1000.0)
    np.testing.assert_array_equal(tel.current, -cur)          # positive = charge flipped
    np.testing.assert_array_equal(tel.pack_voltage, 350 + cur)
    for cell in range(6):
        grp, slot = divmod(cell, 3)
        sel = g == grp
        expect = naive_zoh(t_cur, rows_t[sel], v[sel, slot])
        # before the first frame of its group, a cell is stale (NaN)
        np.testing.assert_array_equal(tel.cell_voltage[:, cell], expect)
        np.testing.assert_array_equal(tel.cell_voltage_stale[:, cell], np.isnan(expect))


def test_stale_after_gap_is_masked_not_filled():
    table, t_cur, *_ = make_table(n_cur=500)     # cell frames stop after ~1 s; current goes to 5 s
    tel = build_telemetry(table, parse_layout(LAYOUT_MUX))
    limit = tel.notes["stale_after_s"]["cell_voltage"]
    assert limit == pytest.approx(1.0)           # 5 x 0.05 s interval < 1 s floor
    late = tel.time > 1.0 + 0.975 + 1e-9 + 0.05
    assert tel.cell_voltage_stale[late].all() and np.isnan(tel.cell_voltage[late]).all()
    assert not tel.cell_voltage_stale[(tel.time > 0.06) & (tel.time < 1.5)].any()


def test_backwards_time_sorted_and_counted():
    table, t_cur, cur, *_ = make_table()
    m = table.messages["P"]
    perm = np.arange(len(t_cur))
    perm[[10, 11]] = perm[[11, 10]]
    perm[[50, 52]] = perm[[52, 50]]
    table.messages["P"] = msg("P", m.timestamps[perm], {"I": m.values[perm, 0],
                                                         "U": m.values[perm, 1]})
    tel = build_telemetry(table, parse_layout(LAYOUT_MUX))
    assert tel.notes["time_backwards"]["current"] == 3   # 11>10, 52>51>50
    assert np.all(np.diff(tel.time) >= 0)
    np.testing.assert_array_equal(tel.current, -cur)


def test_no_current_frames_is_an_error():
    table, *_ = make_table()
    table.messages["P"] = msg("P", [], {"I": [], "U": []})
    with pytest.raises(TelemetryError, match="test.blf.*no frame carries the current signal 'I'"):
        build_telemetry(table, parse_layout(LAYOUT_MUX))


def test_cell_never_seen_is_named():
    table, *_ = make_table()
    m = table.messages["CV"]
    keep = m.values[:, 0] == 0
    table.messages["CV"] = msg("CV", m.timestamps[keep],
                               {n: m.values[keep, i] for i, n in enumerate(m.signal_names)})
    with pytest.raises(TelemetryError, match=r"cell 4 \(CV.V1 with G=1\)"):
        build_telemetry(table, parse_layout(LAYOUT_MUX))


def test_nan_current_dropped_and_counted():
    table, t_cur, cur, *_ = make_table()
    cur = cur.copy()
    cur[5] = np.nan
    table.messages["P"] = msg("P", t_cur, {"I": cur, "U": 350 + cur})
    tel = build_telemetry(table, parse_layout(LAYOUT_MUX))
    assert tel.notes["current_not_finite"] == 1 and len(tel) == len(t_cur) - 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.integers(0, 3), st.floats(2, 4)), min_size=1,
                max_size=60),
       st.lists(st.floats(0, 10), min_size=1, max_size=40, unique=True))
def test_pattern_zoh_property(events, target):
    """Pattern form: each cell equals a naive ZOH of its own events (ties: later event wins)."""
    target = np.sort(np.array(target))
    cols = {}
    msgs = {"P": msg("P", target, {"I": np.zeros(len(target))})}
    for c in range(4):
        ev = [(t, v) for t, k, v in events if k == c] or [(0.0, 3.0)]
        msgs[f"M{c}"] = msg(f"M{c}", [e[0] for e in ev], {f"C{c + 1}": [e[1] for e in ev]})
        cols[c] = ev
    lay = parse_layout(LAYOUT_MUX.replace('message = "CV"\nmux = "G"\nsignals = ["V1", "V2", "V3"]',
                                          'pattern = "C{index}"\nstale_after_s = 100.0')
                       .replace("cells_in_series = 6", "cells_in_series = 4")
                       .replace('[pack_voltage]\nsignal = "U"\n', ""))
    tel = build_telemetry(SignalTable(messages=msgs), lay)
    for c in range(4):
        order = np.argsort([e[0] for e in cols[c]], kind="stable")
        ev_t = np.array([cols[c][i][0] for i in order])
        ev_v = np.array([cols[c][i][1] for i in order])
        np.testing.assert_array_equal(tel.cell_voltage[:, c], naive_zoh(target, ev_t, ev_v))


def split_table(table, edges):
    """Cut every message of a SignalTable at the same time edges (as chunked reading does)."""
    out = []
    bounds = [-np.inf, *edges, np.inf]
    for a, b in zip(bounds[:-1], bounds[1:]):
        msgs = {}
        for name, m in table.messages.items():
            sel = (m.timestamps > a) & (m.timestamps <= b)
            msgs[name] = msg(name, m.timestamps[sel],
                             {n: m.values[sel, i] for i, n in enumerate(m.signal_names)},
                             present=m.present[sel])
        out.append(SignalTable(messages=msgs, source=table.source))
    return out


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(1000.0, 1005.0), min_size=1, max_size=6, unique=True),
       st.sampled_from([None, 0.2]))
def test_aligner_chunks_equal_whole(edges, stale_after):
    from packbms.telemetry import TelemetryAligner
    table, *_ = make_table(n_cur=500)
    text = LAYOUT_MUX if stale_after is None else LAYOUT_MUX + f"stale_after_s = {stale_after}\n"
    lay = parse_layout(text)
    whole = build_telemetry(table, lay)
    al = TelemetryAligner(lay)
    parts = [al.push(t) for t in split_table(table, sorted(edges))]
    al.finish()
    time = np.concatenate([p.time for p in parts])
    np.testing.assert_array_equal(time, whole.time)
    np.testing.assert_array_equal(np.concatenate([p.current for p in parts]), whole.current)
    cv = np.concatenate([p.cell_voltage for p in parts])
    if stale_after is None:
        # the default threshold settles once every cell has 10 refreshes (0.5 s here); after
        # that, chunks and whole agree exactly
        late = whole.time > 0.6
        np.testing.assert_array_equal(cv[late], whole.cell_voltage[late])
    else:
        np.testing.assert_array_equal(cv, whole.cell_voltage)
        np.testing.assert_array_equal(np.concatenate([p.cell_voltage_stale for p in parts]),
                                      whole.cell_voltage_stale)
