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
    from ..summary import soc_summary, telemetry_summary

    d = data_dir()
    t = time.perf_counter()
    a = analyze(d / "drive_96s.blf", d / "pack96.dbc", d / "pack96.toml", out=Path(args.out))
    elapsed = time.perf_counter() - t
    print(telemetry_summary(a))
    print(soc_summary(a))
    truth = load_truth(d / "drive_96s.truth.h5")
    res = a.result
    # truth is stored on its own (decimated) time base: compare at the truth's sample times,
    # holding the stored row at or before each
    t_rel = truth.time_s - (res.dataset_attrs["/time"]["t0_unix"] - truth.t0_unix)
    inside = (t_rel >= res.time[0]) & (t_rel <= res.time[-1])
    idx = np.searchsorted(res.time, t_rel[inside], side="right") - 1
    err = res["/cells/voltage"][idx] - truth.voltage_v[inside]
    ok = np.isfinite(err)
    print(f"truth      cell voltage vs simulator truth: RMS {1000 * np.sqrt(np.mean(err[ok] ** 2)):.2f}"
          f" mV, max |err| {1000 * np.abs(err[ok]).max():.1f} mV over {ok.sum()} cell-samples")
    if "/cells/soc" in res:
        soc = res["/cells/soc"]
        soc_err = soc[idx] - truth.soc[inside]
        late = t_rel[inside] > 600.0
        rmse = np.sqrt(np.nanmean(soc_err[late] ** 2, axis=0))
        est_off = soc[-1] - soc[-1].mean()
        true_off = truth.soc[inside][-1] - truth.soc[inside][-1].mean()
        print(f"truth      SoC vs simulator truth after the first 10 min: RMSE {100 * rmse.mean():.2f}"
              f" % (worst cell #{int(np.argmax(rmse)) + 1} {100 * rmse.max():.2f} %); final "
              f"per-cell offsets within {100 * np.abs(est_off - true_off).max():.2f} points")
    print(f"time       {elapsed:.1f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in
                                             a.timings_s.items()) + ")")
    return 0
