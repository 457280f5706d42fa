"""End to end: a 1-hour 96-cell drive analysed (read, decode, align, estimate, write), warm and
as a whole ``packbms analyze`` command (cold start with the Numba cache warm).

Workload: ``simulate_pack(SimConfig(duration_s=3600), seed=1)`` (975,600 classic frames: cell
voltages at 5 Hz, current at 100 Hz, temperatures, balancing flags) written as BLF, with the
simulator's DBC and layout; plus the bundled 25-minute ``data/drive_96s.blf``.

* warm: in one fresh process, ``analyze(log, dbc, layout, out=h5, method=M)`` once (Numba
  cache loads), then ``--repeat`` more times; best and median of those, the stages of the best
  (``Analysis.timings_s``) and the process's peak RSS (``VmHWM``). Methods: ``auto`` (the
  default: the RTS smoother over the whole drive when it fits) and ``ekf`` (streaming).
* cold: the whole command ``packbms analyze LOG --dbc --layout --out --quiet`` in a fresh
  process, ``--cold-runs`` times after one untimed run (so the Numba cache is warm), median and
  best; next to it the interpreter alone (``python -c pass``) and ``import packbms.cli``.

Usage: ``python benchmarks/bench_e2e.py [--repeat 5] [--cold-runs 5]``. Prints markdown tables
and a JSON line ``{"readme": [...]}`` for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WARM = r"""
import json, sys, time
from packbms.analysis import analyze
log, dbc, lay, out, method, repeat = sys.argv[1:7]
t = time.perf_counter()
a = analyze(log, dbc, lay, out=out, method=method)
first = time.perf_counter() - t
runs = []
for _ in range(int(repeat)):
    t = time.perf_counter()
    a = analyze(log, dbc, lay, out=out, method=method)
    runs.append((time.perf_counter() - t, dict(a.timings_s)))
peak = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        peak = int(line.split()[1]) / 1024
best = min(runs, key=lambda r: r[0])
print(json.dumps({"first_s": first, "times_s": [r[0] for r in runs], "stages": best[1],
                  "method": a.method, "rows": a.stats["rows_full_rate"], "peak_mb": peak}))
"""


def _cmd_time(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)     # untimed: cache warm
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--duration-s", type=float, default=3600.0)
    args = ap.parse_args()

    from packbms.io import write_log
    from packbms.simulate import SimConfig, make_dbc_text, make_layout_text, simulate_pack

    tmp = Path(tempfile.mkdtemp(prefix="packbms-e2e-"))
    cfg = SimConfig(duration_s=args.duration_s)
    sim = simulate_pack(cfg, seed=1)
    log = tmp / "drive.blf"
    write_log(log, sim.frames)
    dbc, lay = tmp / "pack.dbc", tmp / "pack.toml"
    dbc.write_text(make_dbc_text(cfg.cells))
    lay.write_text(make_layout_text(cfg))
    n_frames = len(sim.frames)
    hours = args.duration_s / 3600.0
    del sim

    print(f"## End to end: {args.duration_s / 60:.0f}-min {cfg.cells}-cell drive, "
          f"{n_frames:,} frames, {log.stat().st_size / 1e6:.1f} MB BLF\n")
    print("| method | best s | median s | first call s | read | decode | align | estimate "
          "| write | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    warm = {}
    for method in ("auto", "ekf"):
        p = subprocess.run([sys.executable, "-c", WARM, str(log), str(dbc), str(lay),
                            str(tmp / "out.h5"), method, str(args.repeat)],
                           capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            print(f"| {method} | failed: {(p.stderr.strip().splitlines() or ['?'])[-1]} |")
            continue
        f = json.loads(p.stdout.strip().splitlines()[-1])
        warm[method] = f
        st = f["stages"]
        print(f"| {method} ({f['method']}) | {min(f['times_s']):.2f} | "
              f"{statistics.median(f['times_s']):.2f} | {f['first_s']:.2f} | "
              + " | ".join(f"{st.get(k, 0.0):.2f}" for k in ("read", "decode", "align",
                                                            "estimate", "write"))
              + f" | {f['peak_mb']:.0f} |")
    print()

    sample = ROOT / "data" / "drive_96s.blf"
    base = [sys.executable, "-m", "packbms", "analyze"]
    cold = {
        "1-h drive": base + [str(log), "--dbc", str(dbc), "--layout", str(lay), "--out",
                             str(tmp / "cli.h5"), "--quiet"],
        "25-min sample drive": base + [str(sample), "--dbc", str(ROOT / "data" / "pack96.dbc"),
                                       "--layout", str(ROOT / "data" / "pack96.toml"),
                                       "--out", str(tmp / "sample.h5"), "--quiet"],
        "python -c pass": [sys.executable, "-c", "pass"],
        "import packbms.cli": [sys.executable, "-c", "import packbms.cli"],
        "import packbms.cli, cantools": [sys.executable, "-c", "import packbms.cli, cantools"],
    }
    print("## Whole-command cold start (fresh process, Numba cache warm)\n")
    print("| command | median s | best s |")
    print("|---|---:|---:|")
    cold_t = {}
    for name, cmd in cold.items():
        ts = _cmd_time(cmd, args.cold_runs)
        cold_t[name] = ts
        print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} |")
    print()

    rows = []
    cmd = "python benchmarks/bench_e2e.py"
    for method, f in warm.items():
        best = min(f["times_s"])
        st = f["stages"]
        rows.append({
            "what": f"end to end, warm: analyze a {hours:g}-h {cfg.cells}-cell drive "
                    f"({n_frames:,} frames; read, decode, align, estimate, write HDF5), "
                    f"method {method} ({f['method']})",
            "packbms": f"{best:.2f} s ({args.duration_s / best:,.0f}x real time; estimate "
                       f"{st.get('estimate', 0):.2f} s, write {st.get('write', 0):.2f} s, "
                       f"align {st.get('align', 0):.2f} s); peak RSS {f['peak_mb']:.0f} MB",
            "peer": "—", "ratio": "—", "command": cmd})
    for name in ("25-min sample drive", "1-h drive"):
        ts = cold_t[name]
        rows.append({
            "what": f"`packbms analyze` cold start (Numba cache warm), whole command, {name}",
            "packbms": f"{statistics.median(ts):.2f} s median (best {min(ts):.2f} s); "
                       f"`import packbms.cli, cantools` alone "
                       f"{statistics.median(cold_t['import packbms.cli, cantools']):.2f} s",
            "peer": "—", "ratio": "—", "command": cmd})
    print(json.dumps({"readme": rows}))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
