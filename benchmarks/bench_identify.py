"""Identification and smoothing throughput on a one-hour 96-cell drive.

Workload: a simulated one-hour drive of 96 NMC cells designed for identification (an initial
rest, highway, rest, 1 C charge, rest, highway, rest; ``tests/strategies.py`` ``ID_SEGMENTS``
stretched to the duration) through the real pipeline (CAN frames -> decode -> telemetry), so
the figures are for what ``packbms analyze --fit`` runs: 100 Hz current rows, cell voltages
refreshed at 5 Hz and held (360,000 rows x 96 cells = 34.6 M cell-samples).

Reported, warm (after a first call), best of ``--repeat``: seconds and cell-samples/s of
``identify`` (R0 pairs, relaxation fits over a 49-point tau grid, rest OCVs, capacity and
self-discharge fits), of ``estimate_soc(method="smoother")`` (EKF forward with records + RTS
backward) next to ``method="ekf"`` on the same drive, of ``assess_quality``; the smoother's
record memory; the peak RSS of the process; the accuracy against the simulator's truth; and with
``--cold`` the first calls in a fresh process with an empty Numba cache (compile) and with the
on-disk cache.

Usage: ``python benchmarks/bench_identify.py [--cells 96] [--duration-s 3600] [--repeat 3]
[--cold] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--cells", type=int, default=96)
ap.add_argument("--duration-s", type=float, default=3600.0)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--repeat", type=int, default=3)
ap.add_argument("--cold", action="store_true",
                help="also time first calls in a fresh process with an empty Numba cache")
ap.add_argument("--json", help="write the figures to this file")
args = ap.parse_args()

import numba  # noqa: E402
import numpy as np  # noqa: E402

#: The identification drive of tests/strategies.py, as fractions of the duration.
PLAN = (("rest", 60), ("highway", 900), ("rest", 480), ("charge", 600), ("rest", 480),
        ("highway", 600), ("rest", 480))

COLD_SCRIPT = r"""
import json, time
import numpy as np
t0 = time.perf_counter()
from packbms.identify import identify_arrays
from packbms.soc import estimate_soc_arrays, nominal_params
out = {"import_s": time.perf_counter() - t0}
t = np.arange(0, 400.0, 0.1)
i = np.where((t > 20) & (t < 200), 60.0, 0.0)
v = np.tile(3.7 - 0.001 * i, (4, 1)).T.copy()
v[::2] = np.nan
p = nominal_params(4, 60.0)
t0 = time.perf_counter()
identify_arrays(t, i, v, nominal=p)
out["first_identify_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
estimate_soc_arrays(t, i, v, p, method="smoother")
out["first_smoother_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
identify_arrays(t, i, v, nominal=p)
estimate_soc_arrays(t, i, v, p, method="smoother")
out["second_calls_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def first_calls(cache_dir):
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", COLD_SCRIPT], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_drive(cells, duration_s, seed):
    from packbms.dbc import compile_database, decode
    from packbms.layout import parse_layout
    from packbms.simulate import SimConfig, simulate_pack
    from packbms.telemetry import build_telemetry

    scale = duration_s / sum(s for _, s in PLAN)
    segs = tuple((k, round(s * scale, 1)) for k, s in PLAN)
    sim = simulate_pack(SimConfig(cells=cells, segments=segs, initial_soc=0.9,
                                  charge_c_rate=1.0, truth_rate_hz=1.0,
                                  current_offset_a=0.5, current_noise_a=0.5), seed=seed)
    db = sim.database()
    layout = parse_layout(sim.layout_text)
    layout.validate(db)
    tel = build_telemetry(decode(sim.frames, compile_database(db)), layout, db)
    return sim.truth, tel, layout


def best_of(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    from packbms.identify import identify
    from packbms.quality import assess_quality
    from packbms.soc import estimate_soc

    figures = {"cells": args.cells, "duration_s": args.duration_s,
               "threads": numba.get_num_threads()}
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="packbms-numba-") as d:
            figures["cold"] = first_calls(d)
        figures["warm_cache"] = first_calls(None)
    t0 = time.perf_counter()
    truth, tel, layout = make_drive(args.cells, args.duration_s, args.seed)
    figures["setup_s"] = round(time.perf_counter() - t0, 2)
    n_t, n_s = tel.cell_voltage.shape
    samples = n_t * n_s
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    identify(tel, layout=layout)                               # warm
    t_id, ident = best_of(lambda: identify(tel, layout=layout), args.repeat)
    t_q, rep = best_of(lambda: assess_quality(ident), args.repeat)
    res = {}
    times = {}
    for method in ("ekf", "smoother"):
        estimate_soc(tel, params=ident.params, method=method)
        times[method], res[method] = best_of(
            lambda m=method: estimate_soc(tel, params=ident.params, method=m), args.repeat)
    sm = res["smoother"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # accuracy against the truth
    tp = truth.params
    tel_t = tel.time + (tel.t0 - truth.t0_unix)
    idx = np.searchsorted(tel_t, truth.time_s, side="right") - 1
    ok = idx >= 0
    acc = {"capacity_max_err": float(np.nanmax(np.abs(ident.capacity_ah / tp.capacity_ah - 1))),
           "r0_max_err": float(np.max(np.abs(ident.r0_ohm / tp.r0_ohm - 1))),
           "tau_s": [round(float(x), 2) for x in ident.rc_tau_s]}
    for m in ("ekf", "smoother"):
        err = res[m].soc[idx[ok]] - truth.soc[ok]
        acc[f"soc_rmse_{m}"] = float(np.sqrt(np.mean(err ** 2)))
    figures.update({
        "rows": n_t, "cell_samples": samples,
        "identify_s": round(t_id, 3), "identify_cell_samples_per_s": round(samples / t_id),
        "quality_s": round(t_q, 4),
        "ekf_s": round(times["ekf"], 3), "ekf_cell_samples_per_s": round(samples / times["ekf"]),
        "smoother_s": round(times["smoother"], 3),
        "smoother_cell_samples_per_s": round(samples / times["smoother"]),
        "smoother_backward_s": round(sm.info["smoother_backward_s"], 3),
        "smoother_records": sm.info["smoother_records"],
        "smoother_record_mb": round(sm.info["smoother_memory_bytes"] / 1e6, 1),
        "soc_output_mb": round(2 * sm.soc.nbytes / 1e6, 1),
        "rss_after_setup_mb": round(rss0), "peak_rss_mb": round(rss),
        "accuracy": acc, "grade": rep.grade})

    print(f"# Identification and smoothing: {n_s} cells x {n_t} rows "
          f"({args.duration_s / 3600:.2f} h at {(n_t - 1) / (tel.time[-1] - tel.time[0]):.0f} Hz)"
          f" = {samples / 1e6:.1f} M cell-samples, {figures['threads']} threads\n")
    print("| what | time (s) | cell-samples/s |")
    print("| --- | ---: | ---: |")
    print(f"| identify (R0, RC, rest OCV, capacity, self-discharge) | {t_id:.2f} | "
          f"{samples / t_id / 1e6:.1f} M |")
    print(f"| estimate_soc ekf (identified params) | {times['ekf']:.2f} | "
          f"{samples / times['ekf'] / 1e6:.1f} M |")
    print(f"| estimate_soc smoother (forward + RTS backward) | {times['smoother']:.2f} | "
          f"{samples / times['smoother'] / 1e6:.1f} M |")
    print(f"| assess_quality | {t_q:.4f} | |")
    print(f"\nSmoother records: {figures['smoother_records']:,} updates, "
          f"{figures['smoother_record_mb']} MB (the [T, S] SoC and std outputs: "
          f"{figures['soc_output_mb']} MB); backward pass {figures['smoother_backward_s']:.2f} s.")
    print(f"Peak RSS {figures['peak_rss_mb']} MB ({figures['rss_after_setup_mb']} MB after "
          f"simulating and decoding the drive); setup {figures['setup_s']} s.")
    print(f"Accuracy: capacity within {acc['capacity_max_err'] * 100:.2f} %, R0 within "
          f"{acc['r0_max_err'] * 100:.1f} %, tau {acc['tau_s']} s; SoC RMSE EKF "
          f"{acc['soc_rmse_ekf'] * 100:.2f} %, smoother {acc['soc_rmse_smoother'] * 100:.2f} %;"
          f" grade {rep.grade}.")
    if args.cold:
        c, w = figures["cold"], figures["warm_cache"]
        print(f"\nFirst calls in a fresh process, empty Numba cache (compile): identify "
              f"{c['first_identify_s']:.1f} s, smoother {c['first_smoother_s']:.1f} s; with the "
              f"on-disk cache: identify {w['first_identify_s']:.2f} s, smoother "
              f"{w['first_smoother_s']:.2f} s (import {w['import_s']:.2f} s).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
