"""SoC estimator kernels against the plain NumPy reference (tests/naive.py) and their properties:
SoC in range, covariance symmetric positive definite at every step, chunked equals whole,
state round trip, rest detection, input errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive import ekf_noise, naive_coulomb, naive_ekf
from strategies import soc_drives

from packbms.cell import CellParams, Chemistry, get_chemistry
from packbms.errors import EstimationError, PackBMSError
from packbms.kernels.ekf import grid_ocv, grid_slope
from packbms.kernels.rest import rest_age
from packbms.soc import (CoulombConfig, EKFConfig, SocState, estimate_soc_arrays, nominal_params,
                         uniform_ocv_grid)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _params(cap, rng=None, chemistry="nmc"):
    """Per-cell estimator parameters with some spread (so per-cell indexing is exercised)."""
    n = len(cap)
    rng = rng or np.random.default_rng(0)
    return CellParams(capacity_ah=cap, r0_ohm=0.06 / cap * rng.uniform(0.8, 1.2, n),
                      rc_r_ohm=(0.03 / cap * rng.uniform(0.8, 1.2, n))[:, None],
                      rc_tau_s=rng.uniform(5.0, 60.0, n)[:, None],
                      coulombic_efficiency=rng.uniform(0.98, 1.0, n), chemistry=chemistry)


# -- the uniform OCV grid ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nmc", "lfp"])
def test_uniform_grid_reproduces_builtin_tables(name):
    chem = get_chemistry(name)
    s0, inv_h, grid = uniform_ocv_grid(chem)
    assert grid.size <= 201
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.uniform(-0.05, 1.05, 2000), chem.soc])
    got = np.array([grid_ocv(x, s0, inv_h, grid) for x in s])
    np.testing.assert_allclose(got, chem.ocv(s), rtol=0, atol=1e-12)
    inside = s[(s > 0.001) & (s < 0.999)]
    got_slope = np.array([grid_slope(x, s0, inv_h, grid) for x in inside])
    np.testing.assert_allclose(got_slope, chem.docv_dsoc(inside), rtol=1e-9, atol=1e-9)


def test_uniform_grid_resamples_irregular_table():
    chem = Chemistry("odd", [0.0, 0.1234567, 0.5, 0.777777, 1.0], [3.0, 3.5, 3.7, 3.9, 4.2])
    s0, inv_h, grid = uniform_ocv_grid(chem)
    assert grid.size == 2049
    s = np.linspace(0, 1, 5001)
    got = np.array([grid_ocv(x, s0, inv_h, grid) for x in s])
    # error only next to a kink: |slope change| * h / 4 = (4.05 - 1.6) / 2048 / 4 ~ 0.3 mV
    assert np.max(np.abs(got - chem.ocv(s))) < 0.5e-3


# -- EKF kernel against the naive reference ------------------------------------------------------
def _run_naive(t, i, v, p, cfg, r_factor=None):
    from packbms.soc import _one_rc
    r1, tau1 = _one_rc(p)
    ts, tv, _ = p.chemistry.tables()
    noise = ekf_noise(cfg, cfg.rest_threshold_a(p.capacity_ah), p.n_cells)
    return naive_ekf(t, i, v, p.capacity_ah, p.r0_ohm, r1, tau1, p.coulombic_efficiency, ts, tv,
                     noise, r_factor=r_factor)


def _compare(res, naive):
    soc, std, x, P = naive
    np.testing.assert_allclose(res.soc, soc, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.soc_std, std, rtol=1e-9, atol=1e-12)
    started = res.state.init_kind != 0
    assert np.array_equal(started, np.isfinite(x[:, 0]))
    np.testing.assert_allclose(res.state.x[started], x[started], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.state.P[started], P[started], rtol=1e-7, atol=1e-15)


@SETTINGS
@given(drive=soc_drives(), update_on_change=st.booleans(),
       init=st.sampled_from(["auto", "given", "ocv"]))
def test_ekf_kernel_matches_naive(drive, update_on_change, init):
    t, i, v, cap = drive
    p = _params(cap)
    cfg = EKFConfig(init=init, initial_soc=0.3, update_on_change=update_on_change,
                    current_noise_a=0.2, voltage_noise_v=1.5e-3)
    res = estimate_soc_arrays(t, i, v, p, config=cfg)
    _compare(res, _run_naive(t, i, v, p, cfg))


def test_ekf_kernel_matches_naive_with_temperature_and_lfp():
    rng = np.random.default_rng(7)
    n_t, n_s = 600, 4
    t = np.arange(n_t) * 0.1
    i = np.where(np.arange(n_t) < 200, 0.0, 30.0 * np.sin(np.arange(n_t) / 20.0))
    v = np.round(3.30 - 0.001 * i[:, None] + rng.normal(0, 0.002, (n_t, n_s)), 3)
    temp = np.column_stack([np.linspace(5.0, 15.0, n_t), np.full(n_t, np.nan)])
    temp[100:150, 0] = np.nan
    p = _params(np.full(n_s, 50.0), rng, chemistry="lfp")
    cfg = EKFConfig(init="given", initial_soc=0.6)
    res = estimate_soc_arrays(t, i, v, p, config=cfg, temperature_c=temp)
    # the factor estimate_soc_arrays derives: mean of the finite sensors, held over NaN rows
    mean_t = temp[:, 0].copy()
    for k in range(1, n_t):
        if np.isnan(mean_t[k]):
            mean_t[k] = mean_t[k - 1]
    f = p.chemistry.resistance_factor(mean_t + 273.15)
    assert f[0] > 1.5          # 5 °C: resistances well above their 25 °C value
    _compare(res, _run_naive(t, i, v, p, cfg, r_factor=f))


def test_two_rc_params_are_lumped():
    p2 = CellParams.build(2, rc_r_ohm=[2e-4, 6e-4], rc_tau_s=[10.0, 250.0])
    from packbms.soc import _one_rc
    r, tau = _one_rc(p2)
    np.testing.assert_allclose(r, 8e-4)
    np.testing.assert_allclose(tau, (2e-4 * 10 + 6e-4 * 250) / 8e-4)


# -- coulomb counting ----------------------------------------------------------------------------
def test_coulomb_counts_charge_exactly():
    # 6 A for one hour out of 60 Ah is 0.1 of SoC; then 12 A of charge for 30 min at
    # efficiency 0.99 stores 6 Ah * 0.99 = 5.94 Ah = 0.099 of SoC.
    t = np.arange(0, 5401.0, 1.0)
    i = np.where(t < 3600, 6.0, -12.0)
    v = np.full((t.size, 2), np.nan)
    p = CellParams.build(2, capacity_ah=60.0, coulombic_efficiency=0.99)
    res = estimate_soc_arrays(t, i, v, p, method="coulomb",
                              config=CoulombConfig(init="given", initial_soc=0.8))
    k1 = np.searchsorted(t, 3600.0)
    np.testing.assert_allclose(res.soc[k1], 0.7, atol=1e-12)
    np.testing.assert_allclose(res.soc[-1], 0.7 + 0.099, atol=1e-12)
    np.testing.assert_allclose(res.soc, naive_coulomb(t, i, p.capacity_ah,
                                                      p.coulombic_efficiency, [0.8, 0.8]),
                               atol=1e-12)


def test_coulomb_corrects_from_ocv_after_long_rest_only():
    chem = get_chemistry("nmc")
    p = CellParams.build(3, capacity_ah=60.0)
    t = np.arange(0, 2000.0, 0.5)
    i = np.where(t < 500, 30.0, 0.0)          # 500 s of load, then rest from t = 500
    true0 = np.array([0.9, 0.8, 0.7])
    soc_true = true0[None, :] - (np.minimum(t, 500.0) * 30.0 / 3600.0 / 60.0)[:, None]
    v = chem.ocv(soc_true) - 0.001 * i[:, None]
    cfg = CoulombConfig(init="given", initial_soc=0.5, rest_min_s=300.0)
    res = estimate_soc_arrays(t, i, v, p, method="coulomb", config=cfg)
    before = t < 800.0 - 1e-9
    # until the rest is 300 s old: the wrong start (0.5) minus the counted charge
    counted = (soc_true[0, 0] - soc_true[before, 0])[:, None] * np.ones(3)
    np.testing.assert_allclose(res.soc[before], 0.5 - counted, atol=1e-12)
    # after: the OCV reading (exact here), for every cell
    np.testing.assert_allclose(res.soc[t >= 800.0], soc_true[t >= 800.0], atol=1e-9)
    assert res.info["corrections"].tolist() == [1, 1, 1]
    assert len(res.info["rest_periods"]) == 1
    a, b = res.info["rest_periods"][0]
    assert a == 500.0 and b == t[-1]
    # std: from the initial sigma before, from the OCV error after
    assert np.all(res.soc_std[before] >= 0.3)
    slope = chem.docv_dsoc(soc_true[-1])
    np.testing.assert_allclose(res.soc_std[-1], 3e-3 / slope, rtol=1e-9)


def test_coulomb_rest_survives_noise_excursions():
    # a rest with a few samples above the threshold (shorter than the debounce) still corrects
    p = CellParams.build(1, capacity_ah=60.0)
    t = np.arange(0, 700.0, 0.1)
    i = np.zeros(t.size)
    i[::500] = 3.0                            # one 0.1 s spike every 50 s
    v = np.full((t.size, 1), float(get_chemistry("nmc").ocv(0.6)))
    res = estimate_soc_arrays(t, i, v, p, method="coulomb",
                              config=CoulombConfig(init="given", initial_soc=0.2,
                                                   current_noise_a=0.1))
    assert res.info["corrections"][0] == 1
    assert abs(res.soc[-1, 0] - 0.6) < 1e-3
    # with no debounce every spike restarts the rest and nothing is corrected
    res0 = estimate_soc_arrays(t, i, v, p, method="coulomb",
                               config=CoulombConfig(init="given", initial_soc=0.2,
                                                    current_noise_a=0.1, rest_debounce_s=0.0))
    assert res0.info["corrections"][0] == 0


# -- rest detection ------------------------------------------------------------------------------
def test_rest_age_by_hand():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    i = np.array([5.0, 0.1, 0.2, 2.0, 0.0, 2.0, 2.0, 0.0])
    age = np.empty(8)
    quiet = np.empty(8, np.bool_)
    state = np.array([np.nan, np.nan])
    rest_age(t, i, 1.0, 1.0, state, age, quiet)
    # rest from t=1; the excursion at t=3 is shorter than the 1 s debounce; the one from t=5
    # reaches it at t=6 and ends the rest; a new rest starts at t=7
    np.testing.assert_array_equal(age, [-1, 0, 1, 2, 3, 4, -1, 0])
    np.testing.assert_array_equal(quiet, [False, True, True, False, True, False, False, True])
    assert state[0] == 7.0 and np.isnan(state[1])


# -- properties ----------------------------------------------------------------------------------
@SETTINGS
@given(drive=soc_drives(max_rows=150))
def test_ekf_soc_in_range_and_covariance_spd_every_step(drive):
    t, i, v, cap = drive
    p = _params(cap)
    cfg = EKFConfig(init="given", initial_soc=0.5)
    state = None
    for k in range(len(t)):            # one row at a time: the covariance after every step
        r = estimate_soc_arrays(t[k:k + 1], i[k:k + 1], v[k:k + 1], p, config=cfg, state=state)
        state = r.state
        P = state.P
        assert np.all(P[:, 0, 1] == P[:, 1, 0])
        assert np.all(P[:, 0, 0] > 0) and np.all(P[:, 1, 1] > 0)
        det = P[:, 0, 0] * P[:, 1, 1] - P[:, 0, 1] ** 2
        assert np.all(det > 0), det
        assert np.all((r.soc >= 0) & (r.soc <= 1))
        assert np.all(np.isfinite(r.soc_std) & (r.soc_std > 0))


@SETTINGS
@given(drive=soc_drives(), method=st.sampled_from(["ekf", "coulomb"]),
       cuts=st.lists(st.floats(0, 1), max_size=4))
def test_chunked_equals_whole(drive, method, cuts):
    t, i, v, cap = drive
    p = _params(cap)
    cfg = (EKFConfig(init="auto", initial_soc=0.4) if method == "ekf"
           else CoulombConfig(init="auto", initial_soc=0.4, rest_min_s=0.5))
    whole = estimate_soc_arrays(t, i, v, p, method=method, config=cfg)
    edges = sorted({0, len(t), *(int(c * len(t)) for c in cuts)})
    state = None
    socs, stds = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        r = estimate_soc_arrays(t[a:b], i[a:b], v[a:b], p, method=method, config=cfg,
                                state=state)
        # the checkpoint path: every chunk resumes from a serialised state
        state = SocState.from_dict(r.state.to_dict())
        socs.append(r.soc)
        stds.append(r.soc_std)
    np.testing.assert_allclose(np.concatenate(socs), whole.soc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.concatenate(stds), whole.soc_std, rtol=1e-12, atol=0)
    np.testing.assert_allclose(state.x, whole.state.x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.P, whole.state.P, rtol=1e-12, atol=0)


@SETTINGS
@given(drive=soc_drives(), method=st.sampled_from(["ekf", "smoother", "coulomb"]),
       picks=st.lists(st.floats(0, 1), min_size=0, max_size=12))
def test_kept_rows_equal_every_row_indexed(drive, method, picks):
    """rows= keeps exactly those rows of the full output (the EKF and smoother skip the work
    of the others; the state after the last row is the same)."""
    t, i, v, cap = drive
    p = _params(cap)
    cfg = (CoulombConfig(init="auto", initial_soc=0.4, rest_min_s=0.5) if method == "coulomb"
           else EKFConfig(init="auto", initial_soc=0.4))
    full = estimate_soc_arrays(t, i, v, p, method=method, config=cfg)
    rows = np.unique(np.array([int(x * (len(t) - 1)) for x in picks], dtype=np.int64))
    kept = estimate_soc_arrays(t, i, v, p, method=method, config=cfg, rows=rows)
    np.testing.assert_array_equal(kept.rows, rows)
    np.testing.assert_array_equal(kept.time_s, t[rows])
    np.testing.assert_array_equal(kept.soc, full.soc[rows])
    np.testing.assert_array_equal(kept.soc_std, full.soc_std[rows])
    np.testing.assert_array_equal(kept.pack.usable, full.pack.usable[rows])
    np.testing.assert_array_equal(kept.state.x, full.state.x)
    np.testing.assert_array_equal(kept.state.P, full.state.P)


@pytest.mark.parametrize("rows", [[2, 1], [0, 0], [-1], [10**6], [0.5]])
def test_kept_rows_must_be_increasing_indices(rows):
    p = nominal_params(2, 60.0)
    with pytest.raises(EstimationError, match="rows"):
        estimate_soc_arrays(np.arange(5.0), np.zeros(5), np.full((5, 2), 3.75), p,
                            rows=np.array(rows))


def test_state_round_trip_through_npz(tmp_path):
    p = nominal_params(3, 60.0)
    t = np.arange(100) * 0.1
    r = estimate_soc_arrays(t, np.full(100, 10.0), np.full((100, 3), 3.8), p)
    np.savez(tmp_path / "ck.npz", **r.state.to_dict())
    back = SocState.from_dict(np.load(tmp_path / "ck.npz"))
    for k, val in r.state.to_dict().items():
        np.testing.assert_array_equal(np.asarray(back.to_dict()[k]), np.asarray(val))
    assert back.method == "ekf" and back.n_cells == 3
    with pytest.raises(EstimationError, match="missing key"):
        SocState.from_dict({"method": "ekf"})


def test_state_is_not_modified_by_a_call():
    p = nominal_params(2, 60.0)
    t = np.arange(50) * 0.1
    r1 = estimate_soc_arrays(t, np.full(50, 20.0), np.full((50, 2), 3.8), p)
    before = r1.state.to_dict()
    estimate_soc_arrays(t + 5.0, np.full(50, 20.0), np.full((50, 2), 3.8), p, state=r1.state)
    for k, val in before.items():
        np.testing.assert_array_equal(np.asarray(r1.state.to_dict()[k]), np.asarray(val))


def test_auto_init_from_ocv_at_rest_else_given():
    chem = get_chemistry("nmc")
    p = nominal_params(2, 60.0)
    v0 = chem.ocv(np.array([0.42, 0.81]))
    t = np.arange(3) * 0.1
    r = estimate_soc_arrays(t, np.zeros(3), np.tile(v0, (3, 1)), p)
    assert r.info["init"] == ["ocv", "ocv"]
    np.testing.assert_allclose(r.soc[0], [0.42, 0.81], atol=1e-9)
    r = estimate_soc_arrays(t, np.full(3, 50.0), np.tile(v0, (3, 1)), p,
                            config=EKFConfig(initial_soc=0.3))
    assert r.info["init"] == ["given", "given"]
    # a cell whose first voltage comes later starts then (from its OCV: the pack rests), and
    # shows the prior until then; a cell without any voltage stays pending
    v = np.tile(v0, (3, 1))
    v[:2, 1] = np.nan
    v[:, 0] = np.nan
    for method in ("ekf", "coulomb"):
        r = estimate_soc_arrays(t, np.zeros(3), v, p, method=method)
        assert r.info["init"] == ["pending", "ocv"]
        np.testing.assert_allclose(r.soc[:, 0], 0.5)
        np.testing.assert_allclose(r.soc[:2, 1], 0.5)
        assert abs(r.soc[2, 1] - 0.81) < 1e-9
        np.testing.assert_allclose(r.soc_std[:2, 1], 0.3)


# -- errors --------------------------------------------------------------------------------------
def test_input_errors_are_estimation_errors():
    p = nominal_params(2, 60.0)
    t = np.arange(4.0)
    v = np.full((4, 2), 3.8)
    i = np.zeros(4)
    with pytest.raises(EstimationError, match="best matches"):
        estimate_soc_arrays(t, i, v, p, method="ekff")
    with pytest.raises(EstimationError, match="same number of rows"):
        estimate_soc_arrays(t[:3], i, v, p)
    with pytest.raises(EstimationError, match="params describe 3"):
        estimate_soc_arrays(t, i, v, nominal_params(3, 60.0))
    with pytest.raises(EstimationError, match="row 2 goes back"):
        estimate_soc_arrays(np.array([0.0, 1.0, 0.5, 2.0]), i, v, p)
    with pytest.raises(EstimationError, match="takes a CoulombConfig"):
        estimate_soc_arrays(t, i, v, p, method="coulomb", config=EKFConfig())
    with pytest.raises(EstimationError, match="initial_soc"):
        estimate_soc_arrays(t, i, v, p, config=EKFConfig(initial_soc=50.0))
    r = estimate_soc_arrays(t, i, v, p)
    with pytest.raises(EstimationError, match="before the state's last row"):
        estimate_soc_arrays(t, i, v, p, state=r.state)
    with pytest.raises(EstimationError, match="method 'ekf'"):
        estimate_soc_arrays(t + 10, i, v, p, method="coulomb", state=r.state)
    assert issubclass(EstimationError, PackBMSError)


def test_config_type_errors_and_datasets():
    p = nominal_params(2, 60.0)
    t = np.arange(4.0)
    v = np.full((4, 2), 3.8)
    with pytest.raises(EstimationError, match="max_hold_s"):
        estimate_soc_arrays(t, np.zeros(4), v, p, config=EKFConfig(max_hold_s="1"))
    with pytest.raises(EstimationError, match="rest_min_s"):
        estimate_soc_arrays(t, np.zeros(4), v, p, method="coulomb",
                            config=CoulombConfig(rest_min_s=-1.0))
    r = estimate_soc_arrays(t, np.zeros(4), v, p, method="coulomb",
                            config=CoulombConfig(initial_soc=[0.2, 0.3]))
    datasets, attrs = r.to_datasets()
    assert datasets["/cells/soc"].shape == (4, 2) and datasets["/pack/soc"].shape == (4,)
    import json
    assert attrs["method"] == "coulomb"
    assert json.loads(attrs["soc_config"])["initial_soc"] == [0.2, 0.3]
