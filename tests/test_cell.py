"""Cell models: OCV tables, CSV chemistries, CellParams, and the ECM kernel vs analytic solutions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packbms import PackBMSError
from packbms.cell import (CHEMISTRIES, T_REF_K, CellModelError, CellParams, Chemistry,
                          get_chemistry)
from packbms.kernels import ocv as kocv
from packbms.kernels._jit import kernel
from packbms.kernels.ecm import resistance_factor_scalar, simulate_ecm


# -- OCV tables ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CHEMISTRIES))
def test_builtin_tables_are_monotone_and_span_soc(name):
    chem = CHEMISTRIES[name]
    assert chem.soc[0] == 0.0 and chem.soc[-1] == 1.0
    assert np.all(np.diff(chem.soc) > 0)
    assert np.all(np.diff(chem.ocv_v) > 0)
    s = np.linspace(0, 1, 1001)
    assert np.all(np.diff(chem.ocv(s)) > 0)
    assert np.all(chem.docv_dsoc(s) > 0)
    assert not chem.soc.flags.writeable


def test_nmc_shape():
    nmc = get_chemistry("nmc")
    assert nmc.ocv(0.0) == pytest.approx(3.0, abs=0.02)
    assert nmc.ocv(1.0) == pytest.approx(4.19, abs=0.01)
    assert 3.6 < nmc.ocv(0.5) < 3.85
    # steep knee when nearly empty, gentle in the middle
    assert nmc.docv_dsoc(0.02) > 5 * nmc.docv_dsoc(0.5)


def test_lfp_plateau():
    lfp = get_chemistry("lfp")
    assert lfp.ocv(0.0) == pytest.approx(2.5, abs=0.02)
    assert lfp.ocv(1.0) == pytest.approx(3.6, abs=0.02)
    mid = lfp.ocv(np.linspace(0.25, 0.9, 50))
    assert mid.min() > 3.27 and mid.max() < 3.345
    # the plateau is at least 5x flatter than NMC's middle
    assert lfp.docv_dsoc(0.5) * 5 < get_chemistry("nmc").docv_dsoc(0.5)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0))
def test_interp_matches_numpy_inside(s):
    for chem in CHEMISTRIES.values():
        assert chem.ocv(s) == pytest.approx(np.interp(s, chem.soc, chem.ocv_v), abs=1e-12)
        assert chem.soc_from_ocv(chem.ocv(s)) == pytest.approx(s, abs=1e-9)


def test_extrapolation_uses_end_slopes():
    nmc = get_chemistry("nmc")
    lo = (nmc.ocv_v[1] - nmc.ocv_v[0]) / (nmc.soc[1] - nmc.soc[0])
    hi = (nmc.ocv_v[-1] - nmc.ocv_v[-2]) / (nmc.soc[-1] - nmc.soc[-2])
    assert nmc.ocv(-0.01) == pytest.approx(nmc.ocv_v[0] - 0.01 * lo)
    assert nmc.ocv(1.02) == pytest.approx(nmc.ocv_v[-1] + 0.02 * hi)
    assert nmc.docv_dsoc(-0.5) == pytest.approx(lo)
    assert nmc.docv_dsoc(1.5) == pytest.approx(hi)
    assert math.isnan(nmc.ocv(float("nan")))


@settings(max_examples=100, deadline=None)
@given(st.floats(0.001, 0.999))
def test_slope_matches_finite_difference(s):
    chem = get_chemistry("nmc")
    h = 1e-7
    # away from knots the one-sided difference equals the segment slope
    if np.min(np.abs(chem.soc - s)) < 2 * h:
        return
    fd = (chem.ocv(s + h) - chem.ocv(s - h)) / (2 * h)
    assert chem.docv_dsoc(s) == pytest.approx(fd, rel=1e-5)


def test_array_kernels_keep_shape():
    chem = get_chemistry("nmc")
    soc = np.linspace(0, 1, 12).reshape(3, 4)
    assert chem.ocv(soc).shape == (3, 4)
    assert chem.docv_dsoc(soc).shape == (3, 4)
    assert chem.soc_from_ocv(chem.ocv(soc)).shape == (3, 4)
    np.testing.assert_allclose(kocv.ocv_interp(soc, chem.soc, chem.ocv_v), chem.ocv(soc))


@kernel
def _ekf_like_use(soc, table_soc, table_ocv):
    """A kernel calling the scalar OCV kernels, as an estimator does."""
    out = np.empty((soc.shape[0], 3))
    for k in range(soc.shape[0]):
        out[k, 0] = kocv.ocv_scalar(soc[k], table_soc, table_ocv)
        out[k, 1] = kocv.ocv_slope_scalar(soc[k], table_soc, table_ocv)
        out[k, 2] = kocv.soc_from_ocv_scalar(out[k, 0], table_soc, table_ocv)
    return out


def test_scalar_kernels_callable_from_kernels():
    chem = get_chemistry("lfp")
    soc = np.linspace(-0.05, 1.05, 57)
    out = _ekf_like_use(soc, chem.soc, chem.ocv_v)
    np.testing.assert_allclose(out[:, 0], chem.ocv(soc))
    np.testing.assert_allclose(out[:, 1], chem.docv_dsoc(soc))
    np.testing.assert_allclose(out[:, 2], soc, atol=1e-12)


# -- temperature ---------------------------------------------------------------------------------
def test_entropic_term_and_arrhenius():
    nmc = get_chemistry("nmc")
    s = 0.1
    ent = np.interp(s, nmc.soc, nmc.entropic_v_per_k)
    assert ent < 0
    assert nmc.ocv(s, T_REF_K + 10) == pytest.approx(nmc.ocv(s) + 10 * ent)
    assert nmc.ocv(s, T_REF_K) == pytest.approx(nmc.ocv(s))
    v = nmc.ocv(s, T_REF_K - 15)
    assert nmc.soc_from_ocv(v, T_REF_K - 15) == pytest.approx(s, abs=1e-6)
    assert kocv.ocv_temp_scalar(s, T_REF_K + 10, nmc.soc, nmc.ocv_v, nmc.entropic_v_per_k,
                                T_REF_K) == pytest.approx(nmc.ocv(s, T_REF_K + 10))
    # colder -> higher resistance; the factor follows exp(Ea/R (1/T - 1/Tref))
    f0 = nmc.resistance_factor(273.15)
    assert f0 == pytest.approx(math.exp(3500 * (1 / 273.15 - 1 / 298.15)))
    assert f0 > 2.5
    assert resistance_factor_scalar(273.15, 3500.0, 298.15) == pytest.approx(f0)
    assert resistance_factor_scalar(250.0, 0.0, 298.15) == 1.0
    p = CellParams.build(2, r0_ohm=[1e-3, 2e-3])
    np.testing.assert_allclose(p.r0_at(273.15), [f0 * 1e-3, f0 * 2e-3])
    with pytest.raises(CellModelError, match="temperature_k"):
        nmc.resistance_factor(-3.0)


# -- CSV chemistries -----------------------------------------------------------------------------
def test_csv_table_roundtrip(tmp_path):
    p = tmp_path / "cell.csv"
    p.write_text("# my cell\nsoc,ocv_v,comment\n0,3.1,a\n0.5,3.6,b\n1,4.1,c\n")
    chem = get_chemistry(p)
    assert chem.name == "cell.csv"
    assert chem.ocv(0.25) == pytest.approx(3.35)
    assert not chem.has_entropic
    assert get_chemistry(str(p)) == chem


@pytest.mark.parametrize("body, match", [
    ("soc,volts\n0,3\n1,4\n", r"no column 'ocv_v'"),
    ("soc,ocv_v\n0,3\nx,4\n", r"line 3: column 'soc' is not a number"),
    ("soc,ocv_v\n0,3\n0.5,3.6\n0.4,3.7\n", r"strictly increasing.*line 4"),
    ("soc,ocv_v\n0,3\n0.5,3.6\n1,3.5\n", r"ocv_v must be strictly increasing.*line 4"),
    ("soc,ocv_v\n0,3\n50,3.6\n100,4\n", r"percent"),
    ("soc,ocv_v\n0,3000\n1,4000\n", r"millivolts"),
    ("soc,ocv_v\n0,3\n", r"at least 2 rows"),
    ("", r"empty"),
    ("soc,ocv_v\n0,3\n1\n", r"line 3: expected 2 columns"),
])
def test_csv_table_errors_name_file_and_line(tmp_path, body, match):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(CellModelError, match=match) as e:
        get_chemistry(p)
    assert "bad.csv" in str(e.value)
    assert isinstance(e.value, PackBMSError)


def test_unknown_chemistry_suggests():
    with pytest.raises(CellModelError, match=r"best matches are \['nmc'\]"):
        get_chemistry("nmcc")
    with pytest.raises(CellModelError, match="not found"):
        get_chemistry("/nonexistent/ocv.csv")


def test_chemistry_validation():
    with pytest.raises(CellModelError, match="equal length"):
        Chemistry("x", [0, 1], [3, 3.5, 4])
    with pytest.raises(CellModelError, match="strictly increasing"):
        Chemistry("x", [0, 0.5, 1], [3, 3, 4])
    with pytest.raises(CellModelError, match="not finite"):
        Chemistry("x", [0, 1], [3, float("nan")])
    with pytest.raises(CellModelError, match="entropic"):
        Chemistry("x", [0, 1], [3, 4], [0.0, 0.0, 0.0])
    assert Chemistry("x", [0, 1], [3, 4]) == Chemistry("x", [0, 1], [3, 4])
    assert Chemistry("x", [0, 1], [3, 4]) != Chemistry("x", [0, 1], [3, 4.1])


# -- CellParams ----------------------------------------------------------------------------------
def test_cellparams_broadcast_and_take():
    p = CellParams.build(5, capacity_ah=[60, 61, 62, 63, 64], rc_r_ohm=[1e-4, 2e-4],
                         rc_tau_s=[5.0, 100.0], self_discharge_a=0.001)
    assert p.n_cells == 5 and p.n_rc == 2
    assert p.rc_r_ohm.shape == (5, 2) and p.rc_tau_s[3, 1] == 100.0
    np.testing.assert_array_equal(p.self_discharge_a, np.full(5, 0.001))
    sub = p.take([1, 3])
    np.testing.assert_array_equal(sub.capacity_ah, [61, 63])
    assert sub.chemistry is p.chemistry
    q = CellParams(capacity_ah=[1.0, 2.0], r0_ohm=1e-3, rc_r_ohm=1e-3, rc_tau_s=10.0)
    assert q.rc_r_ohm.shape == (2, 1) and q.chemistry.name == "nmc"
    assert p == CellParams.build(5, capacity_ah=[60, 61, 62, 63, 64], rc_r_ohm=[1e-4, 2e-4],
                                 rc_tau_s=[5.0, 100.0], self_discharge_a=0.001)
    assert p.rc_r_at(np.full(5, 273.15)).shape == (5, 2)


@pytest.mark.parametrize("kw, match", [
    (dict(capacity_ah=[60, 0, 60]), r"capacity_ah\[1\] must be finite and > 0"),
    (dict(r0_ohm=-1e-3), r"r0_ohm\[0\]"),
    (dict(rc_tau_s=[1.0, 0.0], rc_r_ohm=[1e-3, 1e-3]), r"rc_tau_s\[\(0, 1\)\]"),
    (dict(coulombic_efficiency=1.2), "coulombic_efficiency"),
    (dict(self_discharge_a=-0.1), "self_discharge_a"),
    (dict(rc_r_ohm=[1e-3] * 3, rc_tau_s=[1.0] * 3), "1 or 2 RC pairs"),
    (dict(capacity_ah=[60, 60]), "disagree"),
    (dict(chemistry="unobtainium"), "unknown chemistry"),
])
def test_cellparams_validation(kw, match):
    with pytest.raises(CellModelError, match=match):
        CellParams.build(3, **kw)


# -- ECM kernel vs analytic solutions ------------------------------------------------------------
def _run_kernel(current, params, soc0, *, dt=0.01, decim=1, thermal=False, bleed=0.0,
                temp_c=25.0, table=None):
    s = params.n_cells
    n = current.shape[0]
    ts, to, te = table if table is not None else params.chemistry.tables()
    nd = (n + decim - 1) // decim
    nb = (n + 99) // 100
    out = dict(pv=np.empty(n), soc=np.empty((nd, s)), v=np.empty((nd, s)),
               t=np.empty((nd, s)), bal=np.empty((nb, s), np.uint8), req=np.zeros((0, 3)),
               ch=np.empty(n))
    empty = np.zeros(0, np.int64)
    simulate_ecm(np.ascontiguousarray(current, dtype=np.float64), dt, 100, decim,
                 np.asarray(soc0, float), params.capacity_ah, params.r0_ohm, params.rc_r_ohm,
                 np.exp(-dt / params.rc_tau_s), params.coulombic_efficiency,
                 params.self_discharge_a, ts, to, te, False, params.chemistry.t_ref_k,
                 params.chemistry.r_activation_k, np.full(s, temp_c), np.full(s, temp_c), 3.0,
                 1100.0, thermal, bleed, 0.01, np.ones(nb, np.uint8), empty, empty, empty,
                 out["pv"], out["soc"], out["v"], out["t"], out["bal"], out["req"], out["ch"])
    return out


def test_constant_current_one_rc_matches_analytic():
    chem = Chemistry("linear", [0.0, 1.0], [3.0, 4.2])
    p = CellParams.build(1, capacity_ah=50.0, r0_ohm=1.2e-3, rc_r_ohm=8e-4, rc_tau_s=20.0,
                         chemistry=chem)
    dt, i = 0.01, 40.0
    n = 6000
    out = _run_kernel(np.full(n, i), p, [0.9], dt=dt)
    t = np.arange(n) * dt
    soc = 0.9 - i * t / 3600 / 50.0
    v = chem.ocv(soc) - i * 1.2e-3 - i * 8e-4 * (1 - np.exp(-t / 20.0))
    np.testing.assert_allclose(out["soc"][:, 0], soc, atol=1e-12)
    np.testing.assert_allclose(out["v"][:, 0], v, atol=1e-10)
    np.testing.assert_allclose(out["pv"], v, atol=1e-10)
    np.testing.assert_allclose(out["ch"], i * t / 3600, atol=1e-12)


def test_two_rc_relaxation_after_pulse_matches_analytic():
    chem = Chemistry("linear", [0.0, 1.0], [3.0, 4.2])
    r, tau = np.array([3e-4, 5e-4]), np.array([8.0, 250.0])
    p = CellParams.build(1, r0_ohm=1e-3, rc_r_ohm=r, rc_tau_s=tau, chemistry=chem)
    dt, i, n_on, n = 0.01, -30.0, 3000, 9000   # 30 s charge pulse at eta = 0.999, then rest
    cur = np.zeros(n)
    cur[:n_on] = i
    out = _run_kernel(cur, p, [0.5], dt=dt)
    t = np.arange(n) * dt
    t_on = n_on * dt
    vp = np.where(t[:, None] < t_on,
                  i * r * (1 - np.exp(-t[:, None] / tau)),
                  i * r * (1 - np.exp(-t_on / tau)) * np.exp(-(t[:, None] - t_on) / tau))
    soc = 0.5 - 0.999 * i * np.minimum(t, t_on) / 3600 / 60.0
    v = chem.ocv(soc) - np.where(t < t_on, i, 0.0) * 1e-3 - vp.sum(axis=1)
    np.testing.assert_allclose(out["v"][:, 0], v, atol=1e-10)
    np.testing.assert_allclose(out["soc"][:, 0], soc, atol=1e-12)


def test_self_discharge_and_bleed_drift():
    p = CellParams.build(3, capacity_ah=10.0, self_discharge_a=[0.0, 0.5, 0.0])
    n = 36000   # one hour at 0.1 s
    out = _run_kernel(np.zeros(n), p, [0.6, 0.6, 0.6], dt=0.1)
    soc_end = out["soc"][-1]
    drop = 0.5 * (n - 1) * 0.1 / 3600 / 10.0
    assert soc_end[0] == pytest.approx(0.6, abs=1e-12)
    assert soc_end[1] == pytest.approx(0.6 - drop, abs=1e-12)
    # passive balancing bleeds the cell that ends up highest
    out = _run_kernel(np.zeros(6000), p.take([0, 2]), [0.6, 0.65], dt=0.01, bleed=1.0)
    assert out["bal"][1:, 1].all() and not out["bal"][:, 0].any()
    assert out["soc"][-1, 1] == pytest.approx(0.65 - (5999 - 100) * 0.01 / 3600 / 10.0,
                                              abs=1e-12)


def test_thermal_model_heats_under_load_and_cools_back():
    p = CellParams.build(1, chemistry="nmc")
    cur = np.concatenate([np.full(60000, 120.0), np.zeros(60000)])   # 10 min 2C, 10 min rest
    out = _run_kernel(cur, p, [0.9], dt=0.01, decim=100, thermal=True)
    temp = out["t"][:, 0]
    peak = temp.argmax()
    assert 590 <= peak <= 620          # the RC pairs still dissipate briefly after the load
    assert temp[peak] - 25.0 > 2.0          # I^2 R = 14 W for 600 s into 1100 J/K, minus losses
    assert temp[-1] < temp[peak] - 0.5
    # the warm cell's resistance is lower (Arrhenius), so its voltage sag is smaller
    cold = _run_kernel(np.full(100, 120.0), p, [0.9], dt=0.01, temp_c=0.0)["v"][0, 0]
    warm = _run_kernel(np.full(100, 120.0), p, [0.9], dt=0.01, temp_c=40.0)["v"][0, 0]
    assert cold < warm
