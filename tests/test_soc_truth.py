"""SoC estimators against simulator ground truth.

Every drive goes through the full pipeline: the simulator encodes CAN frames, packbms decodes
them and aligns the telemetry, the estimator runs on that. The estimator is handicapped the way
DESIGN.md asks: its initial SoC is 20 points off, the current sensor has an offset and noise,
the truth cells have two RC pairs (8 s and 250 s) and a parameter spread while the estimator
uses one nominal RC pair (:func:`packbms.soc.nominal_params`).

Targets (issue 3): EKF per-cell SoC RMSE <= 1.5 % after the first 10 minutes; final per-cell SoC
offsets from the pack mean (``soc_i - mean_j soc_j``, per cell) within 1 point of the true
offsets; coulomb counting within the bound its documentation states.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packbms.dbc import compile_database, decode
from packbms.layout import parse_layout
from packbms.simulate import SimConfig, load_truth, simulate_pack
from packbms.soc import CoulombConfig, EKFConfig, SocState, estimate_soc
from packbms.telemetry import build_telemetry

DATA = Path(__file__).resolve().parents[1] / "data"
SEEDS = (1, 2, 3)
#: The handicaps: current sensor offset and noise well above the simulator's defaults.
SENSOR = dict(current_offset_a=0.5, current_noise_a=0.5)
SKIP_S = 600.0


def _pipeline(sim):
    db = sim.database()
    layout = parse_layout(sim.layout_text)
    layout.validate(db)
    tel = build_telemetry(decode(sim.frames, compile_database(db)), layout, db)
    return tel, layout


@pytest.fixture(scope="module")
def drives():
    """Three seeded 25-minute drives of 24 cells (rest, urban, highway, 10-min rest, charge,
    urban) through CAN encode -> decode -> telemetry."""
    out = {}
    for seed in SEEDS:
        sim = simulate_pack(SimConfig(cells=24, **SENSOR), seed=seed)
        tel, layout = _pipeline(sim)
        out[seed] = (sim.truth, tel, layout)
    return out


def _at_truth_times(truth, tel, res):
    """Estimates at the truth's sample times (the last telemetry row at or before each)."""
    tel_t = tel.time + (tel.t0 - truth.t0_unix)
    idx = np.searchsorted(tel_t, truth.time_s, side="right") - 1
    ok = idx >= 0
    return (truth.time_s[ok], res.soc[idx[ok]], res.soc_std[idx[ok]], truth.soc[ok],
            truth.voltage_v[ok])


def _wrong_start(truth, sign):
    """A uniform initial SoC 20 points from the pack's true mean (inside 0..1)."""
    m = float(truth.initial_soc.mean())
    return m + 0.20 * sign if 0.0 <= m + 0.20 * sign <= 1.0 else m - 0.20 * sign


def _check_ekf(truth, tel, layout, sign):
    init = _wrong_start(truth, sign)
    res = estimate_soc(tel, layout=layout, config=EKFConfig(init="given", initial_soc=init))
    assert np.all(np.abs(init - truth.initial_soc) > 0.15)   # the start really is wrong
    t, est, std, true, _ = _at_truth_times(truth, tel, res)
    late = t >= SKIP_S
    err = est[late] - true[late]
    rmse = np.sqrt(np.mean(err ** 2, axis=0))
    assert rmse.max() <= 0.015, f"worst cell {rmse.argmax() + 1}: RMSE {rmse.max():.4f}"
    final_est = est[-1] - est[-1].mean()
    final_true = true[-1] - true[-1].mean()
    off_err = np.abs(final_est - final_true)
    assert off_err.max() <= 0.01, f"cell {off_err.argmax() + 1}: offset error {off_err.max()}"
    # the reported sigma is honest once converged: errors beyond 3 sigma are rare
    assert np.mean(np.abs(err) > 3 * std[late]) < 0.02
    return rmse, off_err, res


@pytest.mark.parametrize("seed", SEEDS)
def test_ekf_recovers_from_20_points_low(drives, seed):
    truth, tel, layout = drives[seed]
    rmse, off_err, res = _check_ekf(truth, tel, layout, -1)
    assert res.info["init"] == ["given"] * 24
    # and it converges fast: within 2 points after 60 s (the start of the drive rests)
    t, est, _, true, _ = _at_truth_times(truth, tel, res)
    assert np.abs(est[t >= 60.0] - true[t >= 60.0]).max() < 0.02


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_ekf_recovers_from_20_points_high(drives, seed):
    truth, tel, layout = drives[seed]
    _check_ekf(truth, tel, layout, +1)


def test_ekf_converges_under_load_without_a_starting_rest():
    # the log starts mid-drive: no relaxed voltage to lean on, the start is 20 points high
    sim = simulate_pack(SimConfig(cells=24, segments="urban:400,highway:200,rest:400,charge:150,"
                                  "urban:150", **SENSOR), seed=11)
    tel, layout = _pipeline(sim)
    rmse, off_err, res = _check_ekf(sim.truth, tel, layout, +1)
    t, est, _, true, _ = _at_truth_times(sim.truth, tel, res)
    assert np.abs(est[t >= 120.0] - true[t >= 120.0]).max() < 0.02


def test_ekf_auto_start_is_good_from_the_first_minute(drives):
    truth, tel, layout = drives[1]
    res = estimate_soc(tel, layout=layout)
    assert res.info["init"] == ["ocv"] * 24                 # the log starts at rest
    t, est, _, true, _ = _at_truth_times(truth, tel, res)
    # each cell starts at its first voltage (all within the first 0.2 s: 8 mux groups)
    t, est, true = t[t >= 0.25], est[t >= 0.25], true[t >= 0.25]
    assert np.abs(est - true).max() < 0.02
    assert np.sqrt(np.mean((est - true) ** 2)) < 0.006


def test_ekf_chunked_on_real_telemetry_equals_whole(drives):
    truth, tel, layout = drives[2]
    whole = estimate_soc(tel, layout=layout)
    state, parts = None, []
    for a, b in ((0, 20_000), (20_000, 20_001), (20_001, 90_000), (90_000, len(tel))):
        r = estimate_soc(_rows(tel, a, b), layout=layout, state=state)
        state = SocState.from_dict(r.state.to_dict())
        parts.append(r.soc)
    np.testing.assert_allclose(np.concatenate(parts), whole.soc, rtol=0, atol=1e-12)


def _rows(tel, a, b):
    import dataclasses
    return dataclasses.replace(
        tel, time=tel.time[a:b], current=tel.current[a:b], cell_voltage=tel.cell_voltage[a:b],
        cell_voltage_stale=tel.cell_voltage_stale[a:b],
        cell_temperature=None if tel.cell_temperature is None else tel.cell_temperature[a:b],
        balancing=None if tel.balancing is None else tel.balancing[a:b])


# -- coulomb counting and its stated bound -------------------------------------------------------
def _coulomb_bound(truth, t, soc_true, v_true, rest, cfg, capacity_nom, current_offset_a,
                   current_noise_a, dt_s, threshold_a):
    """The bound of :class:`packbms.soc.CoulombConfig`, with the drive's true error sources.

    ``ocv_err`` is what the averaged rest voltage really differed from the OCV: the true
    polarisation (OCV(true SoC) - true voltage) over the averaging window before the reading,
    plus 1 mV for the sensor (1.5 mV noise averaged over ~150 samples, 0.5 mV quantisation).
    Only rows the estimator can have read count: the current below the rest threshold.
    """
    chem = truth.params.chemistry
    rest_start, rest_end = rest
    quiet = np.abs(truth.current_a[:len(t)]) < threshold_a
    pol = np.where(quiet[:, None], np.abs(chem.ocv(soc_true) - v_true), 0.0)
    rest_end = min(rest_end, float(t[quiet & (t <= rest_end)][-1]))
    cap_true = truth.params.capacity_ah
    b = abs(current_offset_a) + truth.params.self_discharge_a
    bound = np.full(soc_true.shape, np.inf)
    t_first = rest_start + cfg.rest_min_s
    for k in np.flatnonzero(t >= t_first):
        t_c = min(t[k], rest_end)                       # the last correction
        win = (t >= t_c - 3 * cfg.ocv_average_s) & (t <= t_c)
        kc = int(np.flatnonzero(t <= t_c)[-1])
        slope = chem.docv_dsoc(soc_true[kc])
        e_ocv = (pol[win].max(axis=0) + 1e-3) / slope
        since = t[k] - t_c
        # charge moved since t_c (Ah) from the truth's exact integral of the current
        dq = abs(truth.charge_ah[k] - truth.charge_ah[kc])
        bound[k] = (e_ocv + b * since / (3600.0 * capacity_nom)
                    + np.abs(1.0 / capacity_nom - 1.0 / cap_true) * dq
                    + 4 * current_noise_a * np.sqrt(dt_s * since) / (3600.0 * capacity_nom))
    return bound


@pytest.mark.parametrize("seed", SEEDS)
def test_coulomb_within_its_stated_bound(drives, seed):
    truth, tel, layout = drives[seed]
    cfg = CoulombConfig(init="given", initial_soc=_wrong_start(truth, -1))
    res = estimate_soc(tel, layout=layout, method="coulomb", config=cfg)
    assert res.info["corrections"].tolist() == [1] * 24
    (rest,) = res.info["rest_periods"]
    # the segments taper in and out; the rest ends after the 1 s debounce
    assert abs(rest[0] - 480.0) < 2.0 and abs(rest[1] - 1080.0) < 2.0
    t, est, std, true, v_true = _at_truth_times(truth, tel, res)
    err = np.abs(est - true)
    # before the first 5-minute rest: the wrong start stays (coulomb counting cannot see it)
    before = t < rest[0] + cfg.rest_min_s - 1.0
    assert np.all(err[before] > 0.15)
    bound = _coulomb_bound(truth, t, true, v_true, rest, cfg, layout.capacity_ah,
                           SENSOR["current_offset_a"], SENSOR["current_noise_a"], 0.01,
                           res.info["rest_threshold_a"])
    after = np.isfinite(bound[:, 0])
    assert after.sum() > 0.4 * len(t)
    assert np.all(err[after] <= bound[after]), float((err - bound)[after].max())
    # the bound is not vacuous: well under a point here
    assert bound[after].max() < 0.012
    # and the reported 1-sigma covers the error at 3 sigma everywhere, before and after
    assert np.all(err <= 3 * std)


def test_coulomb_auto_start_from_ocv(drives):
    truth, tel, layout = drives[3]
    res = estimate_soc(tel, layout=layout, method="coulomb")
    assert res.info["init"] == ["ocv"] * 24
    t, est, std, true, _ = _at_truth_times(truth, tel, res)
    # until its first voltage a cell shows the prior (0.5, sigma 0.3)
    assert np.all(np.abs(est - true) <= 3 * std)
    t, est, std, true = t[t >= 0.25], est[t >= 0.25], std[t >= 0.25], true[t >= 0.25]
    assert np.abs(est - true).max() < 0.012
    assert np.all(np.abs(est - true) <= 3 * std)


# -- the bundled sample drive --------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample():
    log, truth_file = DATA / "drive_96s.blf", DATA / "drive_96s.truth.h5"
    if not (log.exists() and truth_file.exists()):
        pytest.skip("the bundled sample drive is missing")
    from packbms.analysis import load_telemetry
    tel, layout = load_telemetry(log, DATA / "pack96.dbc", DATA / "pack96.toml")
    return load_truth(truth_file), tel, layout


def test_sample_drive_ekf_from_20_points_off(sample):
    truth, tel, layout = sample
    rmse, off_err, res = _check_ekf(truth, tel, layout, -1)
    # the abnormal cells (1-based 18: self-discharge, 43: 1.5x resistance, 74: 90 % capacity)
    # are tracked too
    assert rmse[[17, 42, 73]].max() <= 0.015


def test_sample_drive_coulomb_auto(sample):
    truth, tel, layout = sample
    res = estimate_soc(tel, layout=layout, method="coulomb")
    assert set(res.info["init"]) == {"ocv"}
    t, est, std, true, _ = _at_truth_times(truth, tel, res)
    assert np.all(np.abs(est - true) <= 3 * std)
    late = t >= 0.25
    assert np.abs(est[late] - true[late]).max() < 0.012
