"""SoC estimator throughput: packbms' Numba EKF and coulomb counter, against baselines.

Workload: a simulated 1-hour drive of 96 NMC cells (rest, urban, highway, a 10-minute rest,
charge, urban) through the real pipeline (CAN frames -> decode -> telemetry), so the estimators
see what ``packbms analyze`` gives them: 100 Hz current rows, each cell voltage refreshed at 5 Hz
and held in between (360,000 rows x 96 cells = 34.6 M cell-steps).

Reported, warm (after a first call): cell-steps/s of ``estimate_soc_arrays`` (the whole public
call: kernel, rest detection, pack SoC) and of the EKF kernel alone, on one thread and on all;
first-call times with an empty Numba cache (compile) when ``--cold``; and the same EKF (same
model, noise, data) on a subset with baselines a user would otherwise write:

* ``naive``: the plain NumPy EKF of ``tests/naive.py`` (one cell at a time, 2x2 matrices);
* ``filterpy``: ``filterpy.kalman.ExtendedKalmanFilter`` (Joseph-form update, like packbms),
  when filterpy is importable (``pip install filterpy``; benchmark-only, not a packbms
  dependency). Its SoC is checked against the kernel's on the subset.

Usage: ``python benchmarks/bench_estimate.py [--cells 96] [--duration-s 3600] [--cold]
[--baseline-cells 2] [--baseline-rows 30000] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--cells", type=int, default=96)
ap.add_argument("--duration-s", type=float, default=3600.0)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--repeat", type=int, default=3, help="timed runs (best is reported)")
ap.add_argument("--baseline-cells", type=int, default=2)
ap.add_argument("--baseline-rows", type=int, default=30_000)
ap.add_argument("--cold", action="store_true",
                help="also time first calls with an empty Numba cache (a subprocess)")
ap.add_argument("--json", type=Path, help="write the figures here")
args = ap.parse_args()

import numba  # noqa: E402
import numpy as np  # noqa: E402

from packbms import soc as S  # noqa: E402
from packbms.kernels.ekf import block_width, ekf_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from naive import ekf_noise, naive_ekf  # noqa: E402

COLD_SCRIPT = r"""
import json, time, numpy as np
t0 = time.perf_counter()
from packbms import soc as S
t_import = time.perf_counter() - t0
p = S.nominal_params(4, 60.0)
t = np.arange(50) * 0.01
v = np.full((50, 4), 3.8)
out = {"import_s": t_import}
for method in ("ekf", "coulomb"):
    t0 = time.perf_counter()
    S.estimate_soc_arrays(t, np.full(50, 10.0), v, p, method=method)
    out[f"first_call_{method}_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    S.estimate_soc_arrays(t, np.full(50, 10.0), v, p, method=method)
    out[f"second_call_{method}_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def first_calls(cache_dir: str | None) -> dict:
    """First-call times in a fresh process (``cache_dir``: an empty Numba cache -> compile)."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", COLD_SCRIPT], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_drive(cells: int, duration_s: float, seed: int):
    from packbms.dbc import compile_database, decode
    from packbms.layout import parse_layout
    from packbms.simulate import SimConfig, default_segments, simulate_pack
    from packbms.telemetry import build_telemetry

    segs = default_segments(duration_s, min(600.0, duration_s / 4), min(60.0, duration_s / 20))
    sim = simulate_pack(SimConfig(cells=cells, segments=segs, truth_rate_hz=1.0), seed=seed)
    db = sim.database()
    layout = parse_layout(sim.layout_text)
    layout.validate(db)
    tel = build_telemetry(decode(sim.frames, compile_database(db)), layout, db)
    return tel, layout


def best_of(fn, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def kernel_call(tel, params, cfg):
    """A closure running only the EKF kernel on the whole drive (fresh state each time)."""
    n_t, n_s = tel.cell_voltage.shape
    r1, tau1 = S._one_rc(params)
    s0, inv_h, grid = S.uniform_ocv_grid(params.chemistry)
    ts, tv, _ = params.chemistry.tables()
    prior = np.full(n_s, 0.5)
    rf = np.ones(n_t)
    out_soc = np.empty((n_t, n_s))
    out_std = np.empty((n_t, n_s))
    out_at = np.arange(n_t, dtype=np.int64)        # every row an output row

    def run():
        st = S.SocState.empty("ekf", n_s)
        pack_state = np.full(3, np.nan)
        ekf_run(tel.time, tel.current, tel.cell_voltage, params.capacity_ah, params.r0_ohm, r1,
                tau1, params.coulombic_efficiency, s0, inv_h, grid, ts, tv, cfg.max_hold_s,
                cfg.current_noise_a ** 2, cfg.current_offset_a ** 2, cfg.capacity_error ** 2,
                cfg.resistance_error ** 2,
                cfg.voltage_noise_v ** 2 + cfg.voltage_resolution_v ** 2 / 12.0,
                cfg.resistance_error ** 2, cfg.polarisation_memory_s, cfg.update_on_change, rf,
                1, cfg.rest_threshold_a(params.capacity_ah), prior,
                cfg.initial_soc_std ** 2, cfg.ocv_init_soc_std ** 2,
                cfg.initial_rc_voltage_std_v ** 2, st.x, st.P, st.v_last, st.init_kind,
                pack_state, out_at, out_soc, out_std, st.updates,
                block_width(n_s, numba.get_num_threads()))
    return run


def filterpy_ekf(t, i, v, params, cfg):
    """The same EKF with filterpy's ExtendedKalmanFilter (given start, no temperature)."""
    from filterpy.kalman import ExtendedKalmanFilter

    r1_all, tau_all = S._one_rc(params)
    ts, tv, _ = params.chemistry.tables()
    noise = ekf_noise(cfg, cfg.rest_threshold_a(params.capacity_ah), params.n_cells)
    n_t, n_s = v.shape
    out = np.empty((n_t, n_s))

    def ocv(s):
        j = int(np.clip(np.searchsorted(ts, s, side="right") - 1, 0, len(ts) - 2))
        sl = (tv[j + 1] - tv[j]) / (ts[j + 1] - ts[j])
        return tv[j] + sl * (s - ts[j]), sl

    for c in range(n_s):
        cap, r0, r1, tau = params.capacity_ah[c], params.r0_ohm[c], r1_all[c], tau_all[c]
        eta = params.coulombic_efficiency[c]
        q_as = 1.0 / (3600.0 * cap)
        ekf = ExtendedKalmanFilter(dim_x=2, dim_z=1, dim_u=1)
        ekf.x = np.array([[noise["prior"][c]], [0.0]])
        ekf.P = np.diag([noise["prior_var"], noise["rc_var"]])
        vl = np.nan
        t_upd = np.nan                  # the last measurement update (correlated OCV error)
        load = abs(i[0])
        for k in range(n_t):
            dt = t[k] - t[k - 1] if k else 0.0
            h = min(dt, noise["max_hold_s"])
            ip = i[k - 1] if k else 0.0
            w = math.exp(-dt / noise["load_tau_s"])
            load = w * load + (1 - w) * abs(ip)
            if dt > 0:
                a = math.exp(-dt / tau)
                b = math.exp(-(dt - h) / tau)
                g_per_a = r1 * (b - a)
                ekf.F = np.array([[1.0, 0.0], [0.0, a]])
                ekf.B = np.array([[-(eta if ip < 0 else 1.0) * h * q_as], [g_per_a]])
                ekf.Q = np.diag([(h * q_as) ** 2 * (noise["q_noise_a2"]
                                                    + noise["q_cap_rel2"] * ip * ip)
                                 + noise["q_offset_a2"] * dt / (3600.0 * cap * cap),
                                 noise["q_rc_rel2"] * (g_per_a * ip) ** 2])
                ekf.predict(u=np.array([[ip]]))
            z = v[k, c]
            if np.isfinite(z) and z != vl:
                ik = i[k]
                r = noise["r_meas_v2"] + noise["r_res_rel2"] * ((r0 * ik) ** 2 + (r1 * load) ** 2)
                since = t[k] - t_upd         # the OCV table's error, shared within its time
                if np.isfinite(since) and since < noise["ocv_err_time_s"]:
                    r += noise["ocv_err_v2"] * noise["ocv_err_time_s"] / max(since, 1e-3)
                else:
                    r += noise["ocv_err_v2"]
                ekf.R = np.array([[r]])
                ekf.update(np.array([[z]]),
                           HJacobian=lambda x: np.array([[ocv(x[0, 0])[1], -1.0]]),
                           Hx=lambda x, ik=ik: np.array([[ocv(x[0, 0])[0] - r0 * ik - x[1, 0]]]))
                vl = z
                t_upd = t[k]
            out[k, c] = min(1.0, max(0.0, ekf.x[0, 0]))
    return out


def main():
    figures: dict = {"cells": args.cells, "duration_s": args.duration_s,
                     "threads_available": numba.config.NUMBA_NUM_THREADS}
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="packbms-numba-") as d:
            figures["cold"] = first_calls(d)
        figures["warm_cache"] = first_calls(None)

    t0 = time.perf_counter()
    tel, layout = make_drive(args.cells, args.duration_s, args.seed)
    figures["setup_s"] = time.perf_counter() - t0
    n_t, n_s = tel.cell_voltage.shape
    steps = n_t * n_s
    figures["rows"], figures["cell_steps"] = n_t, steps
    params = S.nominal_params(n_s, layout.capacity_ah, layout.chemistry)
    cfg = S.EKFConfig()

    rows = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        for name, fn in (
                ("ekf (estimate_soc)", lambda: S.estimate_soc(tel, params, method="ekf")),
                ("ekf kernel only", kernel_call(tel, params, cfg)),
                ("coulomb (estimate_soc)",
                 lambda: S.estimate_soc(tel, params, method="coulomb"))):
            fn()                                             # warm: compile or cache load
            dt = best_of(fn, args.repeat)
            rows.append((name, threads, dt, steps / dt))
    figures["throughput"] = [dict(what=w, threads=th, seconds=round(dt, 4),
                                  cell_steps_per_s=round(r)) for w, th, dt, r in rows]

    # baselines on a subset (same model, same noise, same data; given start)
    numba.set_num_threads(1)
    bc, br = min(args.baseline_cells, n_s), min(args.baseline_rows, n_t)
    sub_t = np.ascontiguousarray(tel.time[:br])
    sub_i = np.ascontiguousarray(tel.current[:br])
    sub_v = np.ascontiguousarray(tel.cell_voltage[:br, :bc])
    sub_p = params.take(slice(0, bc))
    gcfg = S.EKFConfig(init="given", use_temperature=False)
    ours = S.estimate_soc_arrays(sub_t, sub_i, sub_v, sub_p, config=gcfg)
    kernel_rate = next(r for w, th, dt, r in rows if w == "ekf kernel only" and th == 1)
    base = {}
    r1, tau1 = S._one_rc(sub_p)
    ts, tv, _ = sub_p.chemistry.tables()
    t0 = time.perf_counter()
    soc_naive, *_ = naive_ekf(sub_t, sub_i, sub_v, sub_p.capacity_ah, sub_p.r0_ohm, r1, tau1,
                              sub_p.coulombic_efficiency, ts, tv,
                              ekf_noise(gcfg, gcfg.rest_threshold_a(sub_p.capacity_ah), bc))
    dt = time.perf_counter() - t0
    base["naive NumPy EKF (tests/naive.py)"] = (br * bc / dt,
                                                float(np.abs(soc_naive - ours.soc).max()))
    try:
        import filterpy  # noqa: F401
    except ImportError:
        base["filterpy ExtendedKalmanFilter"] = None
    else:
        t0 = time.perf_counter()
        soc_fp = filterpy_ekf(sub_t, sub_i, sub_v, sub_p, gcfg)
        dt = time.perf_counter() - t0
        base["filterpy ExtendedKalmanFilter"] = (br * bc / dt,
                                                 float(np.abs(soc_fp - ours.soc).max()))
    figures["baselines"] = {k: None if val is None else dict(
        cell_steps_per_s=round(val[0]), kernel_ratio=round(kernel_rate / val[0]),
        max_soc_difference=val[1]) for k, val in base.items()}
    figures["baseline_subset"] = {"cells": bc, "rows": br}
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    print(f"# SoC estimators: {n_s} cells x {n_t} rows ({args.duration_s / 3600:.2f} h at "
          f"{(n_t - 1) / (tel.time[-1] - tel.time[0]):.0f} Hz) = {steps / 1e6:.1f} M cell-steps\n")
    print("| what | threads | time (s) | cell-steps/s |")
    print("| --- | ---: | ---: | ---: |")
    for w, th, dt, r in rows:
        print(f"| {w} | {th} | {dt:.3f} | {r / 1e6:.1f} M |")
    print(f"\nBaselines (same EKF, {bc} cells x {br} rows, one thread; ratio = packbms EKF "
          f"kernel on one thread / baseline):\n")
    print("| baseline | cell-steps/s | packbms / baseline | max SoC difference |")
    print("| --- | ---: | ---: | ---: |")
    for k, val in base.items():
        if val is None:
            print(f"| {k} | not installed (pip install filterpy) | | |")
        else:
            print(f"| {k} | {val[0]:,.0f} | {kernel_rate / val[0]:,.0f}x | {val[1]:.1e} |")
    if args.cold:
        c, w = figures["cold"], figures["warm_cache"]
        print(f"\nFirst call in a fresh process, empty Numba cache (compile): EKF "
              f"{c['first_call_ekf_s']:.2f} s, coulomb {c['first_call_coulomb_s']:.2f} s; "
              f"with the on-disk cache: EKF {w['first_call_ekf_s']:.2f} s, coulomb "
              f"{w['first_call_coulomb_s']:.2f} s (import {w['import_s']:.2f} s).")
    print(f"\nSetup (simulate + encode + decode + align) {figures['setup_s']:.1f} s; "
          f"peak RSS {figures['peak_rss_mb']} MB.")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
