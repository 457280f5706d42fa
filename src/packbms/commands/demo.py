"""``packbms demo``: analyse the bundled sample drive and compare with its ground truth."""

from __future__ import annotations

from pathlib import Path


def add_subparser(subparsers):
    p = subparsers.add_parser(
        "demo", help="analyse the bundled 96-cell sample drive and check it against truth",
        description="Run `packbms analyze` on the bundled simulated drive (data/drive_96s.blf "
                    "with pack96.dbc and pack96.toml) and compare the result with the "
                    "simulator's ground truth.")
    p.add_argument("--out", default="packbms-demo.h5",
                   help="where to write the HDF5 result (default: ./packbms-demo.h5)")
    p.set_defaults(run=run)


def run(args) -> int:
    import time

    import numpy as np

    from .._data import data_dir
    from ..analysis import analyze
    from ..simulate import load_truth
    from ..summary import telemetry_summary

    d = data_dir()
    t = time.perf_counter()
    a = analyze(d / "drive_96s.blf", d / "pack96.dbc", d / "pack96.toml", out=Path(args.out))
    elapsed = time.perf_counter() - t
    print(telemetry_summary(a))
    truth = load_truth(d / "drive_96s.truth.h5")
    tel = a.telemetry
    # truth is stored on its own (decimated) time base: compare at the truth's sample times
    t_rel = truth.time_s - (tel.t0 - truth.t0_unix)
    inside = (t_rel >= tel.time[0]) & (t_rel <= tel.time[-1])
    idx = np.searchsorted(tel.time, t_rel[inside], side="right") - 1
    est = tel.cell_voltage[idx]
    err = est - truth.voltage_v[inside]
    ok = np.isfinite(err)
    print(f"truth      cell voltage vs simulator truth: RMS {1000 * np.sqrt(np.mean(err[ok] ** 2)):.2f}"
          f" mV, max |err| {1000 * np.abs(err[ok]).max():.1f} mV over {ok.sum()} cell-samples")
    print(f"time       {elapsed:.1f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in
                                             a.timings_s.items()) + ")")
    return 0
