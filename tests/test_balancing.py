"""Balancing estimation against hand-computed cases (units: Ah, h, Wh; SoC as a fraction).

The OCV in the energy figures is a toy chemistry OCV(s) = 3 + s (V), so every integral is done
by hand: C * integral_{s1}^{s0} (3 + s) ds = C * (3 (s0 - s1) + (s0^2 - s1^2) / 2).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packbms.balancing import (BalancingPlan, balancing_duty, estimate_balancing, ocv_energy_wh,
                               plan_balancing)
from packbms.cell import Chemistry, get_chemistry
from packbms.errors import EstimationError
from packbms.soc import estimate_soc_arrays, nominal_params, pack_soc

TOY = Chemistry("toy", [0.0, 1.0], [3.0, 4.0])


def test_equal_capacities_by_hand():
    # Three 50 Ah cells at 50 %, 60 %, 55 %: charge 25, 30, 27.5 Ah.
    p = plan_balancing([0.50, 0.60, 0.55], [50.0, 50.0, 50.0], bleed_current_a=0.1,
                       chemistry=TOY, time_s=12.5)
    np.testing.assert_allclose(p.charge_ah, [25.0, 30.0, 27.5])
    np.testing.assert_allclose(p.soc_offset, [0.0, 0.10, 0.05])
    np.testing.assert_allclose(p.charge_offset_ah, [0.0, 5.0, 2.5])
    # first empty after 25 Ah (cell 1), first full after min(25, 20, 22.5) = 20 Ah (cell 2)
    assert p.dischargeable_ah == pytest.approx(25.0)
    assert p.chargeable_ah == pytest.approx(20.0)
    assert p.usable_capacity_ah == pytest.approx(45.0)
    assert p.balanced_capacity_ah == pytest.approx(50.0)
    assert p.recoverable_capacity_ah == pytest.approx(5.0)
    assert p.usable_capacity_fraction == pytest.approx(0.90)
    assert p.recoverable_capacity_fraction == pytest.approx(0.10)
    assert p.usable_soc == pytest.approx(25.0 / 45.0)
    assert p.soc_spread == pytest.approx(0.10)
    # passive: bleed cells 2 and 3 down to 25 Ah: 5 and 2.5 Ah; at 0.1 A that is 50 h and 25 h
    np.testing.assert_allclose(p.passive_bleed_ah, [0.0, 5.0, 2.5])
    np.testing.assert_allclose(p.passive_time_h, [0.0, 50.0, 25.0])
    assert p.passive_duration_h == pytest.approx(50.0)
    assert p.passive_bleed_total_ah == pytest.approx(7.5)
    # energy: cell 2 from 0.60 to 0.50: 50 * (0.3 + (0.36 - 0.25) / 2) = 17.75 Wh;
    #         cell 3 from 0.55 to 0.50: 50 * (0.15 + (0.3025 - 0.25) / 2) = 8.8125 Wh
    np.testing.assert_allclose(p.passive_energy_wh, [0.0, 17.75, 8.8125])
    assert p.passive_energy_total_wh == pytest.approx(26.5625)
    assert p.passive_usable_capacity_ah == pytest.approx(50.0)
    # active: everyone to the mean 27.5 Ah: cell 2 gives 2.5 Ah to cell 1
    np.testing.assert_allclose(p.active_transfer_ah, [2.5, -2.5, 0.0], atol=1e-12)
    assert p.active_moved_ah == pytest.approx(2.5)
    assert p.active_usable_capacity_ah == pytest.approx(50.0)
    # equal capacities: top and bottom are the passive plan
    np.testing.assert_allclose(p.top_bleed_ah, p.passive_bleed_ah)
    np.testing.assert_allclose(p.bottom_bleed_ah, p.passive_bleed_ah)
    assert p.top_moved_ah == pytest.approx(2.5) and p.bottom_moved_ah == pytest.approx(2.5)
    assert p.time_s == 12.5


def test_unequal_capacities_by_hand():
    # 40, 50, 60 Ah at 60 %, 40 %, 50 %: charge 24, 20, 30 Ah; headroom 16, 30, 30 Ah.
    p = plan_balancing([0.6, 0.4, 0.5], [40.0, 50.0, 60.0], bleed_current_a=0.1,
                       chemistry=TOY)
    np.testing.assert_allclose(p.charge_ah, [24.0, 20.0, 30.0])
    np.testing.assert_allclose(p.soc_offset, [0.2, 0.0, 0.1])
    np.testing.assert_allclose(p.charge_offset_ah, [4.0, 0.0, 10.0])
    # usable now 20 + 16 = 36 Ah of a balanced 40 Ah (the smallest cell)
    assert p.usable_capacity_ah == pytest.approx(36.0)
    assert p.balanced_capacity_ah == pytest.approx(40.0)
    assert p.recoverable_capacity_ah == pytest.approx(4.0)
    # least passive bleed: keep D = 20 Ah, so every cell needs 40 - 20 = 20 Ah headroom:
    # only cell 1 (16 Ah) bleeds 4 Ah, i.e. 40 h at 0.1 A, from 0.6 to 0.5 of 40 Ah:
    # 40 * (0.3 + (0.36 - 0.25) / 2) = 14.2 Wh
    np.testing.assert_allclose(p.passive_bleed_ah, [4.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(p.passive_time_h, [40.0, 0.0, 0.0], atol=1e-10)
    np.testing.assert_allclose(p.passive_energy_wh, [14.2, 0.0, 0.0], atol=1e-12)
    assert p.passive_usable_capacity_ah == pytest.approx(40.0)
    # bottom: everyone down to 20 Ah: bleed 4, 0, 10 Ah; cell 3 from 0.5 to 1/3 of 60 Ah:
    # 60 * (3/6 + (1/4 - 1/9) / 2) = 34.1666.. Wh; total 48.3666.. Wh; longest 100 h
    np.testing.assert_allclose(p.bottom_bleed_ah, [4.0, 0.0, 10.0], atol=1e-12)
    assert p.bottom_energy_total_wh == pytest.approx(14.2 + 60 * (0.5 + (0.25 - 1 / 9) / 2))
    assert p.bottom_duration_h == pytest.approx(100.0)
    assert p.bottom_usable_capacity_ah == pytest.approx(40.0)
    # top: every headroom up to 30 Ah: cell 1 bleeds 14 Ah
    np.testing.assert_allclose(p.top_bleed_ah, [14.0, 0.0, 0.0], atol=1e-12)
    assert p.top_usable_capacity_ah == pytest.approx(40.0)
    # active, least moved: cell 1 must drop to D and cell 2 rise to D with 24 - x <= D <= 20 + x:
    # x = 2 Ah (D = 22)
    np.testing.assert_allclose(p.active_transfer_ah, [-2.0, 2.0, 0.0], atol=1e-12)
    assert p.active_moved_ah == pytest.approx(2.0)
    assert p.active_usable_capacity_ah == pytest.approx(40.0)
    # active to the top: common headroom (150 - 74) / 3 = 25.333 Ah: cell 1 gives 9.333 Ah
    np.testing.assert_allclose(p.top_transfer_ah, [-28 / 3, 14 / 3, 14 / 3])
    assert p.top_moved_ah == pytest.approx(28 / 3)
    # active to the bottom: common charge 74 / 3 = 24.667 Ah: cell 3 gives 5.333 Ah
    np.testing.assert_allclose(p.bottom_transfer_ah, [2 / 3, 14 / 3, -16 / 3])
    assert p.bottom_moved_ah == pytest.approx(16 / 3)


def test_balanced_but_unequal_needs_nothing():
    # 40/50/60 Ah all at 50 %: usable = 20 + 20 = 40 Ah = min capacity. The least plans do
    # nothing, while naive bottom (bleed 0/5/10 Ah) and top (10/5/0 Ah) would waste charge.
    p = plan_balancing([0.5, 0.5, 0.5], [40.0, 50.0, 60.0], chemistry=TOY)
    assert p.recoverable_capacity_ah == pytest.approx(0.0)
    np.testing.assert_allclose(p.passive_bleed_ah, 0.0, atol=1e-12)
    assert p.active_moved_ah == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(p.bottom_bleed_ah, [0.0, 5.0, 10.0])
    np.testing.assert_allclose(p.top_bleed_ah, [10.0, 5.0, 0.0])


def test_energy_uses_the_ocv_table():
    nmc = get_chemistry("nmc")
    # 1 Ah bled from a 60 Ah cell around 50 %: about 1 Ah * 3.75 V
    e = float(ocv_energy_wh(nmc, 60.0, 0.5 + 1 / 120, 0.5 - 1 / 120))
    assert e == pytest.approx(3.75, abs=2e-3)
    # matches a fine numerical integral over several table segments
    s = np.linspace(0.12, 0.88, 200001)
    ref = 60.0 * np.trapezoid(nmc.ocv(s), s)
    assert float(ocv_energy_wh(nmc, 60.0, 0.88, 0.12)) == pytest.approx(ref, rel=1e-9)


def test_duty_by_hand():
    # rows at 0, 1, 2, 4 s; each flag holds until the next row (the last carries no time)
    # cell 1 bleeds over [0, 2) = 2 of 4 s; cell 2 over [1, 4) = 3 of 4 s
    t = [0.0, 1.0, 2.0, 4.0]
    flags = np.array([[1, 0], [1, 1], [0, 1], [0, 1]], bool)
    np.testing.assert_allclose(balancing_duty(t, flags), [0.5, 0.75])
    p = plan_balancing([0.5, 0.5], [50.0, 50.0], bleed_current_a=0.2, balancing_flags=flags,
                       flag_time_s=t)
    np.testing.assert_allclose(p.duty, [0.5, 0.75])
    # 3 s at 0.2 A = 0.6 As = 0.6 / 3600 Ah
    np.testing.assert_allclose(p.observed_bleed_ah, [0.4 / 3600, 0.6 / 3600])
    assert p.observed_duration_s == 4.0


def test_to_group_units_and_types():
    p = plan_balancing([0.5, 0.6, 0.55], [50.0, 50.0, 50.0], chemistry=TOY)
    arrays, attrs = p.to_group()
    assert set(arrays) >= {"soc", "soc_offset", "charge_offset_ah", "passive_bleed_ah",
                           "passive_time_h", "passive_energy_wh", "active_transfer_ah",
                           "top_bleed_ah", "bottom_bleed_ah"}
    assert "duty" not in arrays
    assert all(a.dtype == np.float64 and a.shape == (3,) for a in arrays.values())
    assert all(isinstance(v, float) for v in attrs.values())
    for name in attrs:
        assert name.endswith(("_ah", "_h", "_wh", "_a", "_s", "_fraction", "_soc", "_spread")), name
    assert attrs["passive_duration_h"] == pytest.approx(50.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n),
    st.lists(st.floats(1.0, 100.0), min_size=n, max_size=n))))
def test_plans_reach_the_balanced_capacity(case):
    soc, cap = map(np.array, case)
    p = plan_balancing(soc, cap, chemistry=TOY)
    tol = 1e-9 * cap.sum()
    assert p.usable_capacity_ah <= p.balanced_capacity_ah + tol
    for name in ("passive", "active", "top", "bottom"):
        assert getattr(p, f"{name}_usable_capacity_ah") == pytest.approx(p.balanced_capacity_ah,
                                                                         abs=tol)
    # the least plans never need more than top or bottom
    assert p.passive_bleed_total_ah <= min(p.top_bleed_total_ah, p.bottom_bleed_total_ah) + tol
    assert p.active_moved_ah <= min(p.top_moved_ah, p.bottom_moved_ah) + tol
    assert abs(p.active_transfer_ah.sum()) <= tol          # charge is conserved
    assert np.all(p.passive_bleed_ah >= 0) and np.all(p.passive_energy_wh >= 0)
    # consistent with pack_soc
    ps = pack_soc(soc, cap)
    assert float(ps.usable_capacity_ah) == pytest.approx(p.usable_capacity_ah)


def test_pack_soc_by_hand():
    # 10 Ah cells at 20, 50, 90 %: 2 Ah before the first is empty, 1 Ah before one is full
    p = pack_soc(np.array([[0.2, 0.5, 0.9], [0.5, 0.5, 0.5]]), [10.0, 10.0, 10.0])
    np.testing.assert_allclose(p.min, [0.2, 0.5])
    np.testing.assert_allclose(p.max, [0.9, 0.5])
    np.testing.assert_allclose(p.mean, [1.6 / 3, 0.5])
    np.testing.assert_allclose(p.dischargeable_ah, [2.0, 5.0])
    np.testing.assert_allclose(p.chargeable_ah, [1.0, 5.0])
    np.testing.assert_allclose(p.usable, [2 / 3, 0.5])
    # unequal capacities: 20 Ah at 50 % holds 10 Ah, 10 Ah at 50 % 5 Ah: D = 5, U = 5
    p = pack_soc([0.5, 0.5], [20.0, 10.0])
    assert float(p.usable) == pytest.approx(0.5)
    assert float(p.usable_capacity_ah) == pytest.approx(10.0)
    with pytest.raises(EstimationError):
        pack_soc([0.5, 0.5], [10.0])


def test_errors_name_the_problem():
    with pytest.raises(EstimationError, match="percent"):
        plan_balancing([50.0, 60.0], [10.0, 10.0])
    with pytest.raises(EstimationError, match="cell 2"):
        plan_balancing([0.5, np.nan], [10.0, 10.0])
    with pytest.raises(EstimationError, match="bleed_current_a"):
        plan_balancing([0.5, 0.6], [10.0, 10.0], bleed_current_a=0.0)
    with pytest.raises(EstimationError, match="must match"):
        plan_balancing([0.5, 0.6], [10.0, 10.0, 10.0])


def test_estimate_balancing_from_a_result():
    p = nominal_params(3, 50.0, "nmc")
    chem = get_chemistry("nmc")
    t = np.arange(10) * 1.0
    v = np.tile(chem.ocv(np.array([0.5, 0.6, 0.55])), (10, 1))
    res = estimate_soc_arrays(t, np.zeros(10), v, p)

    class Lay:
        bleed_current_a = 0.2

    class Tel:
        time = t
        balancing = np.zeros((10, 3), bool)

    plan = estimate_balancing(res, layout=Lay(), telemetry=Tel())
    assert isinstance(plan, BalancingPlan)
    np.testing.assert_allclose(plan.soc, [0.5, 0.6, 0.55], atol=1e-6)
    assert plan.bleed_current_a == 0.2 and plan.time_s == 9.0
    np.testing.assert_allclose(plan.passive_bleed_ah, [0.0, 5.0, 2.5], atol=1e-4)
    np.testing.assert_allclose(plan.passive_time_h, [0.0, 25.0, 12.5], atol=1e-3)
    np.testing.assert_allclose(plan.duty, 0.0)
    with pytest.raises(EstimationError, match="out of range"):
        estimate_balancing(res, at=10)
