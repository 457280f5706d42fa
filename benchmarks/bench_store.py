"""Writing the HDF5 result: HDF5's own gzip filters in the caller's thread against packbms'
direct chunk path (shuffle in NumPy, deflate by zlib or libdeflate on a small thread pool).

Workload: the datasets ``packbms analyze`` streams for a 1-hour 96-cell drive stored at 10 Hz,
36,000 rows appended in 10 batches of 3,600 (what the decimator hands the writer):
``/cells/voltage``, ``/cells/soc``, ``/cells/soc_std`` float32 [T, 96], ``/cells/temperature``
float32 [T, 32], ``/cells/voltage_stale`` and ``/cells/balancing`` bool [T, 96], and eight
float64 [T] series (``/time``, ``/pack/current``, ``/pack/voltage``, ``/pack/soc`` and its
min / max / mean, ``/pack/power_w``). The values are seeded synthetic series shaped like the
real ones (voltages on a 1 mV grid, temperatures on 0.1 degC, smooth SoC with estimator noise,
rare stale flags, balancing in blocks); ``--source result.h5`` takes them from a result file
written by ``packbms analyze`` instead.

For each writer: ``append`` is the caller's time inside the 10 ``append`` calls, ``close`` the
time to finish the file (last chunks, wait for the threads, rename), ``wall`` the sum, ``CPU``
the process CPU time over the same span (all threads); median of ``--repeat`` runs after one
warm-up. Every file is read back with h5py (HDF5's own filter pipeline, as h5dump or MATLAB
would) and compared with the appended arrays bit for bit.

A second table repeats the threaded writers with ``--pause-ms`` (30) of sleep between appends,
standing for the estimation step the threads overlap with in ``packbms analyze``: the caller's
time is then mostly copying rows into chunks.

Usage: ``python benchmarks/bench_store.py [--repeat 5] [--rows 36000] [--batches 10]
[--pause-ms 30] [--source result.h5] [--json out.json]``. Prints markdown tables and a JSON line
``{"readme": [...]}`` for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from packbms import store

#: (label, ResultWriter keyword arguments)
WRITERS = [
    ("h5py gzip (HDF5 filters, caller's thread)", dict(compression="gzip", engine="h5py")),
    ("zlib, in the caller's thread", dict(compression="gzip", engine="zlib", threads=0)),
    ("zlib, 2 threads", dict(compression="gzip", engine="zlib", threads=2)),
    ("libdeflate, in the caller's thread", dict(compression="gzip", engine="libdeflate",
                                                threads=0)),
    ("libdeflate, 1 thread", dict(compression="gzip", engine="libdeflate", threads=1)),
    ("libdeflate, 2 threads (default)", dict(compression="gzip", engine="libdeflate",
                                             threads=2)),
    ("h5py lzf (caller's thread)", dict(compression="lzf")),
    ("no compression (h5py)", dict(compression=None)),
]


def synthetic(rows: int, cells: int = 96, sensors: int = 32, seed: int = 1) -> dict:
    """Series shaped like a 10 Hz result of a drive (see the module docstring)."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows) * 0.1
    current = np.convolve(rng.normal(0, 40, rows), np.ones(50) / 50, mode="same") + 20.0
    soc0 = 0.9 + rng.normal(0, 0.01, cells)
    drain = np.cumsum(current) * 0.1 / 3600 / 60.0
    soc = soc0[None, :] - drain[:, None] * (1 + rng.normal(0, 0.02, cells))[None, :]
    ocv = 3.3 + 0.9 * soc
    volt = ocv - current[:, None] * (0.0015 + rng.normal(0, 1e-4, cells))[None, :]
    volt = np.round(volt + rng.normal(0, 0.001, volt.shape), 3)         # 1 mV signal
    stale = rng.random(volt.shape) < 0.0005
    volt[stale] = np.nan
    soc_est = soc + rng.normal(0, 2e-4, soc.shape)
    soc_std = 0.01 * np.exp(-t / 600)[:, None] + 0.002 + rng.normal(0, 1e-5, soc.shape)
    temp = np.round(25 + np.cumsum(rng.normal(0, 0.002, (rows, sensors)), axis=0), 1)
    balancing = np.zeros((rows, cells), bool)
    for c in rng.choice(cells, 12, replace=False):
        a = rng.integers(0, rows - 3000)
        balancing[a:a + rng.integers(500, 3000), c] = True
    pack_soc = soc_est.mean(axis=1)
    return {
        "/time": t, "/pack/current": current, "/pack/voltage": volt.sum(axis=1),
        "/pack/soc": pack_soc, "/pack/soc_min": soc_est.min(axis=1),
        "/pack/soc_max": soc_est.max(axis=1), "/pack/soc_mean": pack_soc,
        "/pack/power_w": current * volt.sum(axis=1),
        "/cells/voltage": volt.astype(np.float32), "/cells/voltage_stale": stale,
        "/cells/soc": soc_est.astype(np.float32), "/cells/soc_std": soc_std.astype(np.float32),
        "/cells/temperature": temp.astype(np.float32), "/cells/balancing": balancing,
    }


def from_file(path: str, rows: int) -> dict:
    """The time series ([T] and [T, K]) of a result file, cut or tiled to ``rows``."""
    out = {}
    with h5py.File(path, "r") as f:
        n = f["/time"].shape[0]

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.ndim >= 1 and obj.shape[0] == n:
                a = obj[()]
                reps = -(-rows // n)
                out["/" + name] = np.concatenate([a] * reps)[:rows] if reps > 1 else a[:rows]
        f.visititems(visit)
    return out


def write_once(path: Path, data: dict, batches: int, kwargs: dict, pause_s: float = 0.0) -> dict:
    rows = len(data["/time"])
    edges = np.linspace(0, rows, batches + 1).astype(int)
    parts = [{k: v[a:b] for k, v in data.items()} for a, b in zip(edges[:-1], edges[1:])]
    c0, t0 = time.process_time(), time.perf_counter()
    w = store.ResultWriter(path, **kwargs)
    t_append = 0.0
    for part in parts:
        t = time.perf_counter()
        w.append(part)
        t_append += time.perf_counter() - t
        if pause_s:
            time.sleep(pause_s)            # the caller's next estimation step
    t = time.perf_counter()
    w.close()
    t1 = time.perf_counter()
    return {"append_s": t_append, "close_s": t1 - t, "wall_s": t1 - t0 - pause_s * batches,
            "cpu_s": time.process_time() - c0, "engine": w.engine,
            "size_mb": path.stat().st_size / 1e6}


def same_as_appended(path: Path, data: dict) -> bool:
    """h5py reads back exactly the appended arrays (dtype and bits)."""
    with h5py.File(path, "r") as f:
        for key, v in data.items():
            want = store._stored(v)
            got = f[key][()]
            if got.dtype != want.dtype or got.shape != want.shape:
                return False
            if got.view(np.uint8).tobytes() != want.view(np.uint8).tobytes():
                return False
            if key != "/time" and f[key].compression not in ("gzip", "lzf", None):
                return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=36000)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pause-ms", type=float, default=30.0,
                    help="pause between appends in the overlap table")
    ap.add_argument("--source", help="take the series from this result file")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    data = from_file(args.source, args.rows) if args.source else synthetic(args.rows)
    raw_mb = sum(store._stored(v).nbytes for v in data.values()) / 1e6
    try:
        import deflate  # noqa: F401
        writers = WRITERS
    except ImportError:
        writers = [w for w in WRITERS if w[1].get("engine") != "libdeflate"]
        print("(the optional 'deflate' package is not installed: libdeflate rows skipped)\n")

    tmp = Path(tempfile.mkdtemp(prefix="packbms-store-"))
    print(f"## HDF5 result writing: {args.rows:,} rows in {args.batches} appends, "
          f"{len(data)} datasets, {raw_mb:.1f} MB as stored "
          f"({'from ' + args.source if args.source else 'synthetic drive-like series'})\n")
    print("| writer | append s (caller) | close s | wall s | CPU s | file MB | ratio | "
          "h5py reads same arrays |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    figures = {}
    for label, kw in writers:
        path = tmp / "r.h5"
        write_once(path, data, args.batches, kw)                 # warm-up (imports, pools)
        ok = same_as_appended(path, data)
        runs = [write_once(path, data, args.batches, kw) for _ in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("append_s", "close_s", "wall_s", "cpu_s", "size_mb")}
        med["engine"] = runs[0]["engine"]
        med["same"] = ok
        figures[label] = med
        print(f"| {label} | {med['append_s']:.3f} | {med['close_s']:.3f} | "
              f"{med['wall_s']:.3f} | {med['cpu_s']:.3f} | {med['size_mb']:.1f} | "
              f"{raw_mb / med['size_mb']:.2f} | {'yes' if ok else 'NO'} |")
        path.unlink()
    print()

    pause = args.pause_ms / 1000
    print(f"With {args.pause_ms:g} ms between appends (the caller estimating the next rows; the "
          "threads compress meanwhile), caller's time only:\n")
    print("| writer | append s (caller) | close s | append + close s |")
    print("|---|---:|---:|---:|")
    overlap = {}
    for label, kw in writers[:6]:
        if kw.get("threads") == 0 or kw.get("threads") == 1 and kw.get("engine") == "zlib":
            continue
        path = tmp / "r.h5"
        runs = [write_once(path, data, args.batches, kw, pause) for _ in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("append_s", "close_s")}
        overlap[label] = med
        print(f"| {label} | {med['append_s']:.3f} | {med['close_s']:.3f} | "
              f"{med['append_s'] + med['close_s']:.3f} |")
        path.unlink()
    tmp.rmdir()
    print()

    rows = []
    old = figures[WRITERS[0][0]]
    new_label = next((lbl for lbl, kw in writers if kw.get("threads") == 2
                      and kw.get("engine") == "libdeflate"), "zlib, 2 threads")
    new = figures[new_label]
    rows.append({
        "what": f"write the HDF5 result of a 1-h 96-cell drive ({args.rows:,} rows, "
                f"{raw_mb:.0f} MB as stored, {args.batches} appends, gzip + shuffle): "
                "time in the caller",
        "packbms": f"{new['append_s'] + new['close_s']:.2f} s ({new_label}; "
                   f"append {new['append_s']:.2f} s + close {new['close_s']:.2f} s, CPU "
                   f"{new['cpu_s']:.2f} s, {new['size_mb']:.1f} MB; "
                   f"{sum(overlap.get(new_label, {}).values()):.2f} s when the caller works "
                   f"{args.pause_ms:g} ms between appends)",
        "peer": f"h5py gzip filters: {old['append_s'] + old['close_s']:.2f} s (CPU "
                f"{old['cpu_s']:.2f} s, {old['size_mb']:.1f} MB)",
        "ratio": f"{(old['append_s'] + old['close_s']) / (new['append_s'] + new['close_s']):.1f}x",
        "command": "python benchmarks/bench_store.py"})
    print(json.dumps({"readme": rows}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": args.rows, "batches": args.batches, "raw_mb": raw_mb,
                       "writers": figures, "pause_ms": args.pause_ms, "overlap": overlap},
                      f, indent=2)
    return 0 if all(f["same"] for f in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
