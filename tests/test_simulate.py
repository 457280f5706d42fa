"""The pack simulator: profile, cell spread, truth, the encoded CAN log, files and the CLI."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import segment_plans

from packbms import PackBMSError, StorageError
from packbms.dbc import compile_database, decode
from packbms.layout import parse_layout
from packbms.simulate import (DEFAULT_T0_UNIX, SEGMENT_KINDS, SimConfig, default_segments,
                              draw_cells, load_truth, make_dbc_text, make_layout_text,
                              make_profile, parse_segments, simulate_pack, write_simulation,
                              write_truth)

DATA = Path(__file__).resolve().parents[1] / "data"
PLAN = "rest:20,urban:30,highway:30,rest:15,charge:15,urban:10"   # 120 s


@pytest.fixture(scope="module")
def sim():
    cfg = SimConfig(cells=12, segments=PLAN, self_discharge_cells=(4,),
                    outlier_self_discharge_a=5.0, high_resistance_cells=(7,), weak_cells=(2,))
    return simulate_pack(cfg, seed=11)


@pytest.fixture(scope="module")
def decoded(sim):
    return decode(sim.frames, compile_database(sim.database()))


# -- profile ---------------------------------------------------------------------------------------
def test_default_plan_has_rests_charge_and_drives():
    plan = default_segments(1500, 600, 60)
    kinds = [k for k, _ in plan]
    assert kinds == ["rest", "urban", "highway", "rest", "charge", "urban"]
    assert sum(s for _, s in plan) == pytest.approx(1500)
    assert plan[0] == ("rest", 60.0) and plan[3] == ("rest", 600.0)
    with pytest.raises(PackBMSError, match="need >= 20 s"):
        default_segments(600, 600, 60)


def test_profile_segments_and_c_rates():
    cap = 60.0
    p = make_profile(duration_s=1800, rest_s=600, initial_rest_s=60, capacity_ah=cap,
                     seed=3)
    assert p.current_a.shape == (180000,)
    assert [s.kind for s in p.segments] == ["rest", "urban", "highway", "rest", "charge",
                                            "urban"]
    codes = p.segment_codes()
    i = p.current_a
    for seg in p.segments:
        a, b = int(seg.start_s / p.dt_s), int(seg.end_s / p.dt_s)
        part = i[a:b]
        assert (codes[a:b] == SEGMENT_KINDS.index(seg.kind)).all()
        if seg.kind == "rest":
            assert np.all(part == 0.0)
            assert seg.duration_s in (60.0, 600.0)
        elif seg.kind == "charge":
            mid = part[int(0.1 * part.size):int(0.9 * part.size)]
            np.testing.assert_allclose(mid, -0.5 * cap)
        elif seg.kind == "urban":
            assert part.max() > 0.3 * cap and part.max() <= 1.0 * cap      # bursts
            assert part.min() < -0.2 * cap and part.min() >= -1.0 * cap    # regen
            assert (part <= 0.02 * cap).mean() > 0.15                       # stop and go
        else:
            assert -1.0 * cap <= part.min() and part.max() <= 1.5 * cap
            assert 0.4 * cap < np.median(part) < 1.2 * cap
    # continuous: no steps larger than a fast ramp over one 10 ms step
    assert np.abs(np.diff(i)).max() < 0.2 * cap * 0.01 / 0.1
    # seeded
    np.testing.assert_array_equal(
        p.current_a, make_profile(duration_s=1800, rest_s=600, initial_rest_s=60,
                                  capacity_ah=cap, seed=3).current_a)
    assert not np.array_equal(p.current_a, make_profile(duration_s=1800, rest_s=600,
                                                        initial_rest_s=60, seed=4).current_a)


@settings(max_examples=40, deadline=None)
@given(plan=segment_plans(), seed=st.integers(0, 2**32 - 1), cap=st.floats(5.0, 200.0))
def test_any_plan_gives_a_bounded_continuous_profile(plan, seed, cap):
    p = make_profile(plan, capacity_ah=cap, dt_s=0.01, seed=seed)
    assert p.current_a.size == sum(int(round(s / 0.01)) for _, s in plan)
    assert [g.kind for g in p.segments] == [k for k, _ in plan]
    assert p.segments[-1].end_s == pytest.approx(p.duration_s)
    i = p.current_a
    assert np.isfinite(i).all()
    assert i.min() >= -1.0 * cap - 1e-9 and i.max() <= 1.5 * cap + 1e-9
    codes = p.segment_codes()
    assert np.all(i[codes == SEGMENT_KINDS.index("rest")] == 0.0)
    assert np.all(i[codes == SEGMENT_KINDS.index("charge")] <= 0.0)
    # continuous: segments start and end at 0 A, and inside them the current changes by at
    # most the full swing (2.5 C) per second
    assert np.abs(np.diff(i)).max() <= 2.5 * cap * 0.01 + 1e-9


def test_parse_segments_errors():
    assert parse_segments([("REST", 5), ("charge", "7")]) == (("rest", 5.0), ("charge", 7.0))
    with pytest.raises(PackBMSError, match=r"best matches: \['highway'\]"):
        parse_segments("highwya:30")
    with pytest.raises(PackBMSError, match="kind:seconds"):
        parse_segments("rest")
    with pytest.raises(PackBMSError, match="> 0"):
        parse_segments("rest:-3")
    with pytest.raises(PackBMSError, match="not a number"):
        parse_segments("rest:abc")


# -- cell spread -----------------------------------------------------------------------------------
def test_spreads_have_requested_statistics():
    cfg = SimConfig(cells=765, capacity_sigma=0.012, r0_sigma=0.05, initial_soc=0.6,
                    initial_soc_sigma=0.02, self_discharge_cells=(3, 9), high_resistance_cells=(5,),
                    weak_cells=(7,))
    params, soc0, amb = draw_cells(cfg, seed=5)
    normal = np.setdiff1d(np.arange(765), [3, 5, 7, 9])
    cap = params.capacity_ah[normal] / 60.0 - 1
    r0 = params.r0_ohm[normal] / 1e-3 - 1
    # 765 draws: the sample sigma is within ~10 % of the requested one
    assert cap.std() == pytest.approx(0.012, rel=0.1) and abs(cap.mean()) < 0.002
    assert r0.std() == pytest.approx(0.05, rel=0.1) and abs(r0.mean()) < 0.008
    assert np.abs(cap).max() <= 3 * 0.012 + 1e-12 and np.abs(r0).max() <= 0.15 + 1e-12
    assert soc0.std() == pytest.approx(0.02, rel=0.1) and soc0.mean() == pytest.approx(0.6,
                                                                                       abs=0.003)
    assert params.self_discharge_a[[3, 9]].tolist() == [0.2, 0.2]
    assert params.self_discharge_a[normal].max() <= 0.003
    assert params.r0_ohm[5] > 1.3e-3 and params.capacity_ah[7] < 57.0
    assert amb.std() == pytest.approx(0.5, rel=0.15)
    p2, s2, _ = draw_cells(cfg, seed=5)
    assert p2 == params and np.array_equal(s2, soc0)


# -- truth -----------------------------------------------------------------------------------------
def test_truth_soc_is_the_coulomb_integral(sim):
    tr, prof = sim.truth, sim.profile
    cfg = sim.config
    dt = prof.dt_s
    decim = int(round(1 / (cfg.truth_rate_hz * dt)))
    i = prof.current_a
    # bleed current per step from the per-second balancing decisions (constant over a second)
    flags = np.repeat(tr.balancing, decim, axis=0)[: i.size]
    cell_i = i[:, None] + cfg.bleed_current_a * flags
    eff = np.where(cell_i < 0, tr.params.coulombic_efficiency * cell_i, cell_i)
    dq = (eff + tr.params.self_discharge_a) * dt / 3600.0
    q = np.concatenate([np.zeros((1, cfg.cells)), np.cumsum(dq, axis=0)])
    steps = np.round(tr.time_s / dt).astype(int)
    expect = tr.initial_soc - q[steps] / tr.params.capacity_ah
    np.testing.assert_allclose(tr.soc, expect, atol=1e-9)
    np.testing.assert_allclose(tr.charge_ah, np.concatenate([[0], np.cumsum(i * dt / 3600)])[
        steps], atol=1e-9)
    # the self-discharge outlier (5 A) has drifted well below the others
    drift = tr.soc[0] - tr.soc[-1]
    assert drift[4] - np.delete(drift, 4).max() > 0.8 * 5.0 * 120 / 3600 / 60


def test_truth_voltage_is_consistent(sim):
    tr = sim.truth
    ocv = tr.params.chemistry.ocv(tr.soc)
    rest = tr.segment == SEGMENT_KINDS.index("rest")
    first = tr.time_s < 20
    # fully relaxed at the start: terminal = OCV (plus the entropic term of a warm/cold cell)
    np.testing.assert_allclose(tr.voltage_v[first & rest], ocv[first & rest], atol=2e-3)
    # under discharge the voltage sags below OCV, under charge it rises above
    dis = tr.current_a > 30
    chg = tr.current_a < -20
    assert (tr.voltage_v[dis] < ocv[dis]).all() and (tr.voltage_v[chg] > ocv[chg]).all()
    np.testing.assert_allclose(tr.pack_voltage_v, tr.voltage_v.sum(axis=1), rtol=1e-12)
    # the high-resistance cell sags most under load
    sag = (ocv - tr.voltage_v)[dis].mean(axis=0)
    assert sag.argmax() == 7
    assert tr.rest_windows(15.0) == [(0.0, 20.0), (80.0, 95.0)]


def test_balancing_flags_follow_the_rule(sim):
    tr = sim.truth
    # flags only in seconds that start parked or charging
    sec = np.floor(tr.time_s).astype(int)
    start_code = tr.segment[np.searchsorted(tr.time_s, sec)]
    parked = np.isin(start_code, [SEGMENT_KINDS.index("rest"), SEGMENT_KINDS.index("charge")])
    assert tr.balancing[parked].any()
    assert not tr.balancing[~parked].any()
    # and only cells that were more than the threshold above the lowest a second before
    rows = np.flatnonzero(parked & (tr.time_s >= 1) & (tr.time_s % 1 == 0))
    for r in rows:
        before = tr.voltage_v[r - 1]    # 0.1 s before the decision: the voltage then
        above = before - before.min()
        assert not tr.balancing[r][above < 0.009].any()
        assert tr.balancing[r][above > 0.011].all()


# -- the CAN log -----------------------------------------------------------------------------------
def test_frames_sorted_and_absolute(sim):
    ts = sim.frames.timestamp
    assert np.all(np.diff(ts) >= 0)
    assert DEFAULT_T0_UNIX <= ts[0] < DEFAULT_T0_UNIX + 0.01
    assert ts[-1] < DEFAULT_T0_UNIX + 120.0
    ids = set(np.unique(sim.frames.arbitration_id).tolist())
    assert ids == {0x100, 0x200, 0x18FF50E5, 0x300, 0x310}
    assert sim.frames.is_extended[sim.frames.arbitration_id == 0x18FF50E5].all()
    assert not sim.frames.is_extended[sim.frames.arbitration_id != 0x18FF50E5].any()


def test_refresh_rates(sim, decoded):
    t0 = sim.config.t0_unix

    def period(name, mux=None, value=None):
        m = decoded.messages[name]
        t = m.timestamps - t0
        if mux is not None:
            t = t[m.values[:, m.column(mux)] == value]
        d = np.diff(t)
        return d.mean(), d.min(), d.max()

    mean, lo, hi = period("BMS_PackStatus")
    assert mean == pytest.approx(0.01, abs=1e-6) and lo > 0.0094 and hi < 0.0106
    for g in range(4):
        mean, lo, hi = period("BMS_CellVoltages", "CellGroup", g)
        assert mean == pytest.approx(0.2, abs=1e-4) and 0.199 < lo and hi < 0.201   # 5 Hz/cell
    mean, _, _ = period("BMS_CellTemperatures", "TempGroup", 0)
    assert mean == pytest.approx(1.0, abs=1e-3)
    mean, _, _ = period("BMS_Balancing", "BalGroup", 0)
    assert mean == pytest.approx(1.0, abs=1e-3)
    assert len(decoded.messages["BMS_PackStatus"]) == 12000
    assert len(decoded.messages["BMS_CellVoltages"]) == 120 * 5 * 4
    # timestamp jitter is there (about 100 us), not zero
    d = np.diff(decoded.messages["BMS_PackStatus"].timestamps)
    assert 3e-5 < d.std() < 3e-4


def test_cell_voltages_decode_to_truth_within_noise(sim, decoded):
    m = decoded.messages["BMS_CellVoltages"]
    t_true, v_true = sim.sensor_truth["BMS_CellVoltages"]
    np.testing.assert_allclose(m.timestamps - sim.config.t0_unix, t_true, atol=6e-4)
    v = m.values[:, [m.column("V1"), m.column("V2"), m.column("V3")]]
    err = v - v_true
    sigma = sim.config.voltage_noise_v
    assert np.abs(err).max() < 5.5 * sigma + 0.0005
    assert err.std() == pytest.approx(math.sqrt(sigma ** 2 + 0.001 ** 2 / 12), rel=0.05)
    # quantised to 1 mV
    np.testing.assert_allclose(v * 1000, np.round(v * 1000), atol=1e-6)
    # mux group g carries cells 3g..3g+2: where a frame's sampling step is a truth row, its
    # true values are exactly the truth file's voltages of those cells
    g = m.values[:, m.column("CellGroup")].astype(int)
    tr = sim.truth
    step = np.round((t_true - 0.001) / tr.dt_s).astype(int)
    decim = int(round(1 / (sim.config.truth_rate_hz * tr.dt_s)))
    idx = np.flatnonzero(step % decim == 0)
    assert idx.size > 100
    for slot in range(3):
        np.testing.assert_array_equal(v_true[idx, slot],
                                      tr.voltage_v[step[idx] // decim, 3 * g[idx] + slot])


def test_current_sign_offset_and_noise(sim, decoded):
    m = decoded.messages["BMS_PackStatus"]
    bus = m.values[:, m.column("BMS_PackCurrent")]
    _, true = sim.sensor_truth["BMS_PackStatus"]
    meas = -bus                                       # the bus is charge-positive
    err = meas - true[:, 0]
    n = err.size
    assert err.mean() == pytest.approx(sim.config.current_offset_a, abs=4 * 0.1 / math.sqrt(n))
    assert err.std() == pytest.approx(sim.config.current_noise_a, rel=0.05)
    v = m.values[:, m.column("BMS_PackVoltage")]
    assert np.abs(v - true[:, 1]).max() < 6 * sim.config.pack_voltage_noise_v
    counter = m.values[:, m.column("BMS_PackCounter")]
    np.testing.assert_array_equal(counter, np.arange(n) % 16)
    # a layout with positive = "charge" turns the bus value back into discharge-positive
    lay = parse_layout(sim.layout_text)
    assert lay.current_sign == -1.0


def test_temperatures_balancing_and_summary(sim, decoded):
    m = decoded.messages["BMS_CellTemperatures"]
    t_true, temp_true = sim.sensor_truth["BMS_CellTemperatures"]
    temps = m.values[:, [m.column(f"T{j}") for j in range(1, 5)]]
    # sampled on the second from the sensor's cell, sent half a second later
    sec = np.floor(t_true).astype(int)
    np.testing.assert_allclose(t_true - sec, 0.5, atol=1e-9)
    cells = sim.truth.sensor_cells
    np.testing.assert_array_equal(temp_true, sim.truth.temperature_c[sec * 10][:, cells])
    assert np.abs(temps - temp_true).max() < 0.25 + 5 * sim.config.temperature_noise_c
    np.testing.assert_allclose(temps * 2, np.round(temps * 2))
    b = decoded.messages["BMS_Balancing"]
    flags = b.values[:, [b.column(f"Bal{j}") for j in range(1, 13)]]
    sec = np.floor(b.timestamps - sim.config.t0_unix).astype(int)
    rows = sec * int(sim.config.truth_rate_hz)
    np.testing.assert_array_equal(flags.astype(bool), sim.truth.balancing[rows])
    s = decoded.messages["BMS_CellSummary"]
    vmax = s.values[:, s.column("BMS_MaxCellVoltage")]
    vmin = s.values[:, s.column("BMS_MinCellVoltage")]
    rows = np.floor(s.timestamps - sim.config.t0_unix).astype(int) * 10   # sampled on the second
    true_v = sim.truth.voltage_v[rows]
    noise = 5 * sim.config.voltage_noise_v + 0.0005
    assert np.abs(vmax - true_v.max(axis=1)).max() < noise
    assert np.abs(vmin - true_v.min(axis=1)).max() < noise
    imin = s.values[:, s.column("BMS_MinCellIndex")].astype(int) - 1    # 1-based on the bus
    assert np.abs(true_v[np.arange(rows.size), imin] - true_v.min(axis=1)).max() < 2 * noise
    state = s.values[:, s.column("BMS_State")]
    seg = sim.truth.segment[rows]
    np.testing.assert_array_equal(state == 2, seg == SEGMENT_KINDS.index("charge"))
    np.testing.assert_array_equal(state == 0, seg == SEGMENT_KINDS.index("rest"))


def test_cantools_agrees_on_a_sample_of_frames(sim, decoded):
    db = sim.database()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(sim.frames), 300, replace=False)
    # index of each frame within its message in the decoded table
    for k in pick:
        fid = int(sim.frames.arbitration_id[k])
        msg = db.get_message_by_frame_id(fid)
        data = bytes(sim.frames.data[k, : sim.frames.dlc[k]])
        expect = msg.decode(data, decode_choices=False)
        ours = decoded.messages[msg.name]
        row = np.flatnonzero(ours.timestamps == sim.frames.timestamp[k])
        assert row.size == 1
        for name, value in expect.items():
            col = ours.column(name)
            assert ours.present[row[0], col]
            assert ours.values[row[0], col] == pytest.approx(value, abs=1e-9), (msg.name, name)


def test_deterministic_per_seed():
    cfg = SimConfig(cells=6, segments="rest:5,urban:10,charge:5")
    a = simulate_pack(cfg, seed=1)
    b = simulate_pack(cfg, seed=1)
    c = simulate_pack(cfg, seed=2)
    for col in ("timestamp", "arbitration_id", "dlc", "data", "is_extended"):
        np.testing.assert_array_equal(getattr(a.frames, col), getattr(b.frames, col))
    np.testing.assert_array_equal(a.truth.soc, b.truth.soc)
    np.testing.assert_array_equal(a.truth.voltage_v, b.truth.voltage_v)
    assert not np.array_equal(a.truth.soc, c.truth.soc)
    assert not np.array_equal(a.frames.timestamp, c.frames.timestamp)
    # a different noise level leaves the drive and the cells unchanged (independent streams)
    d = simulate_pack(SimConfig(cells=6, segments="rest:5,urban:10,charge:5",
                                voltage_noise_v=0.003), seed=1)
    np.testing.assert_array_equal(a.truth.soc, d.truth.soc)


def test_lfp_one_rc_and_no_thermal():
    cfg = SimConfig(cells=4, chemistry="lfp", n_rc=1, thermal=False, capacity_ah=100.0,
                    segments="rest:2,highway:20", truth_rate_hz=5)
    r = simulate_pack(cfg, seed=0)
    assert r.truth.params.n_rc == 1 and r.truth.params.chemistry.name == "lfp"
    np.testing.assert_array_equal(r.truth.temperature_c, np.broadcast_to(
        r.truth.ambient_c, r.truth.temperature_c.shape))
    assert r.truth.time_s[1] == pytest.approx(0.2)
    assert 3.0 < r.truth.voltage_v.min() and r.truth.voltage_v.max() < 3.45


@pytest.mark.parametrize("kw, match", [
    (dict(cells=0), "cells"),
    (dict(n_rc=3), "n_rc"),
    (dict(truth_rate_hz=3.0), "truth_rate_hz"),
    (dict(truth_rate_hz=0.5), "truth_rate_hz"),
    (dict(truth_rate_hz=5.0, temperature_period_s=0.1), "temperature_period_s"),
    (dict(self_discharge_cells=(12,)), "0-based"),
    (dict(initial_soc=1.5), "initial_soc"),
    (dict(chemistry="nmx"), "unknown chemistry"),
    (dict(segments="rest:10,cruise:5"), "unknown profile segment"),
    (dict(jitter_s=0.01), "jitter_s"),
    (dict(rc_r_ohm=(1e-3,), rc_tau_s=(1.0,)), "need 2 values"),
])
def test_config_errors(kw, match):
    with pytest.raises(PackBMSError, match=match):
        simulate_pack(SimConfig(cells=kw.pop("cells", 12), **kw), seed=0)


def test_config_dict_roundtrip():
    cfg = SimConfig(cells=5, segments=(("rest", 3.0), ("urban", 4.0)), weak_cells=(1, 2))
    assert SimConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(PackBMSError, match="best matches"):
        SimConfig.from_dict({"cels": 3})


# -- database and layout ---------------------------------------------------------------------------
def test_layout_and_database_agree_for_any_size():
    import cantools

    for cells in (12, 96, 100):
        db = cantools.database.load_string(make_dbc_text(cells), database_format="dbc",
                                           strict=True)
        lay = parse_layout(make_layout_text(SimConfig(cells=cells))).validate(db)
        assert lay.mux_cell_count(lay.cell_voltage, db) >= cells
        assert lay.mux_cell_count(lay.balancing_flags, db) >= cells
        assert lay.mux_cell_count(lay.cell_temperature, db) >= lay.cell_temperature.count


def test_bundled_database_and_layout_match_the_generators():
    assert (DATA / "pack96.dbc").read_text() == make_dbc_text(96)
    assert (DATA / "pack96.toml").read_text() == make_layout_text(SimConfig())
    import cantools

    db = cantools.database.load_file(DATA / "pack96.dbc", strict=True)
    cur = db.get_message_by_name("BMS_PackStatus").get_signal_by_name("BMS_PackCurrent")
    assert cur.byte_order == "big_endian" and cur.is_signed and cur.length == 17
    assert cur.minimum <= -600 and cur.maximum >= 600
    lay = parse_layout((DATA / "pack96.toml").read_text()).validate(db)
    assert lay.current_positive == "charge" and lay.cell_temperature.count == 32


# -- files -----------------------------------------------------------------------------------------
def test_truth_file_roundtrip(sim, tmp_path):
    p = write_truth(tmp_path / "t.h5", sim)
    assert [f.name for f in tmp_path.iterdir()] == ["t.h5"]
    tr = load_truth(p)
    ref = sim.truth
    np.testing.assert_array_equal(tr.time_s, ref.time_s)
    np.testing.assert_array_equal(tr.soc, ref.soc.astype(np.float32))
    np.testing.assert_array_equal(tr.voltage_v, ref.voltage_v.astype(np.float32))
    np.testing.assert_array_equal(tr.balancing, ref.balancing)
    np.testing.assert_array_equal(tr.charge_ah, ref.charge_ah)
    assert tr.params == ref.params
    assert tr.segments == ref.segments and tr.seed == 11
    assert SimConfig.from_dict(tr.config) == sim.config
    np.testing.assert_array_equal(tr.sensor_cells, ref.sensor_cells)
    # stable bytes: writing twice gives the same file
    q = write_truth(tmp_path / "u.h5", sim)
    assert p.read_bytes() == q.read_bytes()


def test_load_truth_errors(tmp_path):
    with pytest.raises(StorageError, match="not found"):
        load_truth(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(StorageError, match="not an HDF5 file"):
        load_truth(tmp_path / "junk.h5")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["schema"] = "something.else"
    with pytest.raises(StorageError, match="not a packbms truth file"):
        load_truth(tmp_path / "other.h5")


@pytest.mark.parametrize("suffix", ["blf", "asc", "log", "trc", "csv", "mf4"])
def test_write_simulation_formats_read_back(suffix, tmp_path):
    import can

    if suffix == "mf4":
        pytest.importorskip("asammdf")

    r = simulate_pack(SimConfig(cells=6, segments="rest:1,urban:2"), seed=9)
    paths = write_simulation(r, tmp_path / f"drive.{suffix}", tmp_path / "drive.h5",
                             dbc_path=tmp_path / "p.dbc", layout_path=tmp_path / "p.toml")
    assert paths["log"].exists() and paths["truth"].exists()
    msgs = list(can.LogReader(str(paths["log"])))
    assert len(msgs) == len(r.frames)
    ids = np.array([m.arbitration_id for m in msgs])
    np.testing.assert_array_equal(ids, r.frames.arbitration_id)
    data = [bytes(m.data) for m in msgs]
    assert data == [bytes(r.frames.data[k, : r.frames.dlc[k]]) for k in range(len(r.frames))]
    ts = np.array([m.timestamp for m in msgs])
    if suffix in ("blf", "log", "mf4"):   # absolute time to 1 us or better
        np.testing.assert_allclose(ts, r.frames.timestamp, atol=2e-6)
    elif suffix == "asc":                 # python-can reads ASC times relative to the start
        np.testing.assert_allclose(ts - ts[0], r.frames.timestamp - r.frames.timestamp[0],
                                   atol=2e-6)
    assert (tmp_path / "p.dbc").read_text() == r.dbc_text


# -- CLI -------------------------------------------------------------------------------------------
def _parse(argv):
    from packbms.commands import simulate as cmd

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cmd.add_subparser(sub)
    return parser.parse_args(["simulate", *argv])


def test_cli_run_writes_log_and_truth(tmp_path, capsys):
    out, truth = tmp_path / "d.blf", tmp_path / "d.h5"
    args = _parse(["--out", str(out), "--truth", str(truth), "--cells", "6", "--profile",
                   "rest:2,urban:3", "--seed", "4", "--outlier-cells", "2,6", "--weak-cells",
                   "1", "--t0", "2026-03-01T00:00:00Z", "--layout-out",
                   str(tmp_path / "l.toml")])
    assert args.run(args) == 0
    text = capsys.readouterr().out
    assert "simulated 6 cells" in text and "wrote log" in text
    tr = load_truth(truth)
    assert tr.params.self_discharge_a[[1, 5]].tolist() == [0.2, 0.2]
    assert tr.params.capacity_ah[0] < 0.95 * 60
    assert tr.t0_unix == 1772323200.0
    parse_layout((tmp_path / "l.toml").read_text())


@pytest.mark.parametrize("argv, match", [
    (["--outlier-cells", "0"], "start at 1"),
    (["--outlier-cells", "x"], "not a cell number"),
    (["--t0", "yesterday"], "ISO time"),
])
def test_cli_bad_option_values_are_usage_errors(tmp_path, argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(["--out", str(tmp_path / "x.blf"), "--cells", "12", *argv])
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_unwritable_outputs_fail_before_simulating(tmp_path):
    r_cfg = ["--cells", "3", "--profile", "rest:1"]
    for argv, match in (
            (["--out", str(tmp_path / "x.mp4")], "x.mp4"),
            (["--out", str(tmp_path / "nope" / "x.blf")], "does not exist"),
            (["--out", str(tmp_path / "x.blf"), "--truth", str(tmp_path / "no" / "t.h5")],
             "does not exist")):
        args = _parse([*argv, *r_cfg])
        with pytest.raises(PackBMSError, match=match):
            args.run(args)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, match", [
    (["--weak-cells", "13"], r"--weak-cells: cell 13 is beyond --cells 12"),
    (["--profile", "park:10"], "unknown profile segment"),
    (["--initial-soc", "80"], "fraction"),
])
def test_cli_user_errors(tmp_path, argv, match):
    args = _parse(["--out", str(tmp_path / "x.blf"), "--cells", "12", *argv])
    with pytest.raises(PackBMSError, match=match):
        args.run(args)
    assert not (tmp_path / "x.blf").exists()
