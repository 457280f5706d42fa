"""Time the pack simulator: one hour of a 96-cell pack, simulated and written as BLF.

Run ``python benchmarks/bench_simulate.py [--duration-s 3600] [--cells 96] [--repeat 3]``.
Compilation is done (or loaded from Numba's cache) by a short warm-up run first, so the figures
are steady-state. Prints the time of each stage and the best total.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from packbms.simulate import SimConfig, simulate_pack, write_simulation, write_truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--cells", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--format", default="blf", help="log suffix (blf, asc, log, trc, csv, mf4)")
    args = ap.parse_args(argv)

    warm = simulate_pack(SimConfig(cells=6, segments="rest:2,urban:2,highway:2,charge:2"),
                         seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        write_simulation(warm, Path(tmp) / f"warm.{args.format}")
        cfg = SimConfig(cells=args.cells, duration_s=args.duration_s)
        best = None
        for k in range(args.repeat):
            t0 = time.perf_counter()
            result = simulate_pack(cfg, seed=k)
            t1 = time.perf_counter()
            log = Path(tmp) / f"drive.{args.format}"
            write_simulation(result, log)
            t2 = time.perf_counter()
            write_truth(Path(tmp) / "drive.truth.h5", result)
            t3 = time.perf_counter()
            total = t2 - t0
            best = total if best is None else min(best, total)
            print(f"run {k}: simulate {t1 - t0:.2f} s, write {args.format} {t2 - t1:.2f} s "
                  f"({len(result.frames)} frames, {log.stat().st_size / 1e6:.1f} MB), "
                  f"truth {t3 - t2:.2f} s; simulate+write {total:.2f} s")
    print(f"best simulate+write of {args.duration_s:g} s x {args.cells} cells as "
          f"{args.format}: {best:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
