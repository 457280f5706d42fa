"""Cross-log trends (packbms.trends): hand-computed cases and parked self-discharge vs truth.

The truth case simulates one pack over several hours, cuts the CAN log into drives and drops
the parked hours between them (the car is off, nothing is logged), so consecutive logs of the
pack continue each other exactly as in a real fleet; the simulator knows every cell's
self-discharge current.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from packbms.fleet import cell_record, run_fleet
from packbms.simulate import SimConfig, simulate_pack, write_simulation
from packbms.trends import compute_trends, parked_self_discharge

DRIVE = "rest:30,urban:120,highway:30,rest:60"
DRIVE_S = 240.0


def _rec(soc_start, soc_end, t_start, t_end, std=1e-3, cap=50.0):
    n = len(soc_start)
    return dict(t_start_unix=t_start, t_end_unix=t_end, soc_start=np.asarray(soc_start, float),
                soc_end=np.asarray(soc_end, float), soc_start_std=np.full(n, std),
                soc_end_std=np.full(n, std), capacity_ah=np.full(n, cap),
                r0_ohm=np.full(n, 1e-3))


# ------------------------------------------------------------------------------------------------
# hand-computed
# ------------------------------------------------------------------------------------------------
def test_parked_self_discharge_hand_computed():
    # 5 cells of 50 Ah parked 20 h. Every cell loses 1 point (0.5 Ah: 25 mA common drain);
    # cell 2 loses 3 points more (1.5 Ah over 20 h = 75 mA more than the others)
    before = _rec([0.6] * 5, [0.6] * 5, 0.0, 1000.0)
    after = _rec([0.59, 0.56, 0.59, 0.59, 0.59], [0.5] * 5, 1000.0 + 20 * 3600, 1e6)
    d = parked_self_discharge(before, after)
    assert d.parked_h == pytest.approx(20.0)
    mean_d = (4 * -0.01 - 0.04) / 5
    assert d.soc_change.tolist() == pytest.approx([-0.01, -0.04, -0.01, -0.01, -0.01])
    assert d.pack_a == pytest.approx(-mean_d * 50 / 20)
    expected = [-(x - mean_d) * 50 / 20 for x in (-0.01, -0.04, -0.01, -0.01, -0.01)]
    assert d.rel_a.tolist() == pytest.approx(expected)
    assert d.rel_a[1] - d.rel_a[0] == pytest.approx(0.075)
    assert d.sigma_a == pytest.approx(np.full(5, math.hypot(1e-3, 1e-3) * 50 / 20))
    assert d.flagged.tolist() == [False, True, False, False, False]


def test_parked_self_discharge_uncertainty_and_bad_inputs():
    before = _rec([0.6] * 5, [0.6] * 5, 0.0, 1000.0)
    after = _rec([0.59, 0.56, 0.59, 0.59, 0.59], [0.5] * 5, 1000.0 + 3600, 1e6)
    assert parked_self_discharge(before, after).flagged[1]
    # the same change with SoC sigmas of 2 points is not evidence of anything
    vague = _rec([0.59, 0.56, 0.59, 0.59, 0.59], [0.5] * 5, 1000.0 + 3600, 1e6, std=0.02)
    assert not parked_self_discharge(before, vague).flagged.any()
    # unknown absolute time, overlapping logs, different packs, NaN SoC: no measurement
    assert parked_self_discharge(before, _rec([0.6] * 5, [0.6] * 5, math.nan, 1e6)) is None
    assert parked_self_discharge(before, _rec([0.6] * 5, [0.6] * 5, 500.0, 1e6)) is None
    assert parked_self_discharge(before, _rec([0.6] * 4, [0.6] * 4, 5000.0, 1e6)) is None
    assert parked_self_discharge(before, _rec([0.6, math.nan, 0.6, 0.6, 0.6], [0.6] * 5,
                                              5000.0, 1e6)) is None


def _row(pack, log, start, cap, r0, status="analysed"):
    return dict(pack_id=pack, log=log, start_unix=start, status=status, capacity_ah_mean=cap,
                r0_mean_ohm=r0, capacity_source="quality")


def test_compute_trends_orders_groups_and_fades():
    day = 86400.0
    rows = [_row("B", "b0", 5 * day, 40.0, 2e-3),
            _row("A", "a2", 20 * day, 54.0, 1.3e-3),
            _row("A", "a0", 0.0, 60.0, 1.0e-3),
            _row("A", "bad", 3 * day, math.nan, math.nan, status="failed"),
            _row("A", "a1", 10 * day, 57.0, 1.1e-3)]
    recs = [_rec([0.5] * 3, [0.4] * 3, r["start_unix"], r["start_unix"] + 600)
            for r in rows]
    recs[3] = None
    table, cells = compute_trends(rows, recs)
    assert [(t["pack_id"], t["log"]) for t in table] == [("A", "a0"), ("A", "a1"), ("A", "a2"),
                                                         ("B", "b0")]
    a = table[:3]
    assert [t["log_index"] for t in a] == [0, 1, 2] and all(t["n_logs"] == 3 for t in a)
    assert [t["days_since_first"] for t in a] == pytest.approx([0, 10, 20])
    assert [t["capacity_fade_fraction"] for t in a] == pytest.approx([0.0, 0.05, 0.10])
    assert [t["resistance_growth_fraction"] for t in a] == pytest.approx([0.0, 0.1, 0.3])
    assert math.isnan(a[0]["parked_h"])
    assert a[1]["parked_h"] == pytest.approx((10 * day - 600) / 3600)
    # every cell went 0.4 -> 0.5 while parked: common change +10 points, nothing relative
    assert a[1]["pack_soc_change_parked"] == pytest.approx(0.1)
    assert a[1]["self_discharge_rel_max_a"] == pytest.approx(0.0, abs=1e-12)
    assert a[1]["self_discharge_flagged"] == ""
    assert table[3]["n_logs"] == 1 and table[3]["capacity_fade_fraction"] == 0.0
    assert len(cells["self_discharge_rel_a"]) == 4
    assert np.isnan(cells["self_discharge_rel_a"][0]).all()
    assert table[0]["start"] == "1970-01-01T00:00:00.000Z"


# ------------------------------------------------------------------------------------------------
# against the simulator's truth
# ------------------------------------------------------------------------------------------------
def _chained_logs(folder, *, cells, n_logs, park_s, seed, **cfg):
    """One simulated pack, cut into ``n_logs`` drives separated by unlogged parks."""
    from packbms.io import write_log

    segs = f",rest:{park_s:g},".join([DRIVE] * n_logs)
    config = SimConfig(cells=cells, segments=segs, bleed_current_a=0.0, **cfg)
    sim = simulate_pack(config, seed=seed)
    write_simulation(sim, folder / "full.blf", dbc_path=folder / "pack.dbc",
                     layout_path=folder / "pack.toml")
    (folder / "full.blf").unlink()
    t = sim.frames.timestamp - config.t0_unix
    logs = []
    for k in range(n_logs):
        a = k * (DRIVE_S + park_s)
        keep = np.flatnonzero((t >= a) & (t < a + DRIVE_S))
        path = folder / "logs" / f"car7_{k:03d}.blf"
        path.parent.mkdir(exist_ok=True)
        write_log(path, sim.frames.take(keep))
        logs.append(path)
    return sim, logs


@pytest.fixture(scope="module")
def parked_outlier(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    sim, logs = _chained_logs(d, cells=12, n_logs=3, park_s=3 * 3600.0, seed=11,
                              self_discharge_cells=(4,), outlier_self_discharge_a=1.5)
    run = run_fleet(logs, d / "pack.dbc", d / "pack.toml", d / "out", workers=0)
    return sim, run


def test_parked_self_discharge_finds_the_leaking_cell(parked_outlier):
    sim, run = parked_outlier
    assert [r["status"] for r in run.rows] == ["analysed"] * 3
    assert {r["pack_id"] for r in run.rows} == {"car7"}
    sd = sim.truth.params.self_discharge_a
    true_rel = sd - sd.mean()
    trends = run.trends
    assert [t["log_index"] for t in trends] == [0, 1, 2]
    for t in trends[1:]:
        # from the last row of one log to the end of the next one's initial 30 s rest
        assert t["parked_h"] == pytest.approx(3.0 + 30 / 3600, abs=0.003)
        assert t["self_discharge_flagged"] == "5"
        assert t["self_discharge_rel_max_cell"] == 5
        assert t["self_discharge_rel_max_a"] == pytest.approx(true_rel[4], abs=0.15)
        # the common drain: the mean cell's self-discharge (no balancing, no BMS load simulated)
        assert t["self_discharge_pack_a"] == pytest.approx(sd.mean(), abs=0.1)


def test_start_and_end_soc_follow_truth(parked_outlier):
    from packbms import store

    sim, run = parked_outlier
    tr = sim.truth
    for row in run.rows:
        rec = cell_record(store.load(row["result"]))
        for when in ("start", "end"):
            t_rel = rec[f"t_{when}_unix"] - tr.t0_unix
            j = int(np.argmin(np.abs(tr.time_s - t_rel)))
            assert abs(tr.time_s[j] - t_rel) < 0.11
            err = rec[f"soc_{when}"] - tr.soc[j]
            assert np.abs(err).max() < 0.004, (row["log"], when, err)


def test_homogeneous_pack_flags_nothing(tmp_path):
    sim, logs = _chained_logs(tmp_path, cells=12, n_logs=2, park_s=3600.0, seed=5)
    run = run_fleet(logs, tmp_path / "pack.dbc", tmp_path / "pack.toml", tmp_path / "out",
                    workers=0)
    t = run.trends[1]
    assert math.isfinite(t["self_discharge_rel_max_a"])
    assert t["self_discharge_flagged"] == ""
    assert abs(t["self_discharge_rel_max_a"]) < 0.15
