"""Peak memory of `packbms analyze` on a long generated log versus the log's decoded size.

Builds an N-hour 96-cell drive by repeating a simulated 1-hour drive back to back (time
shifted), writes it as one BLF, then runs `packbms analyze` in a fresh process and reads its
peak RSS (its own ``VmHWM``, read by the child as it exits: ``ru_maxrss`` of a child on Linux
also carries the peak of the parent it was spawned from, here the process that built the log). The decoded size is what holding the whole log would take:
the frames as a FrameTable plus the full-rate aligned telemetry [T, S] (voltage, stale mask,
SoC, sigma).

    python benchmarks/bench_memory.py --hours 8
    python benchmarks/bench_memory.py --hours 48 --compression-level 0   # a 2.2 GB log file

``--compression-level 0`` writes the BLF's containers stored (not deflated), so the file is as
big as the log it stands for (46.8 MB per hour): the multi-GB case. ``--method`` is passed to
``packbms analyze`` (default ``auto``: the streaming smoother for the first ~2.9 h, then the
streaming EKF).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from packbms.io import write_log
from packbms.io.frames import FrameTable
from packbms.simulate import SimConfig, make_dbc_text, make_layout_text, simulate_pack


#: ``packbms analyze`` (its CLI entry point) in a process that writes its own peak RSS (kB)
CHILD = """
import sys
from packbms.cli import main
try:
    rc = main(sys.argv[2:])
finally:
    with open("/proc/self/status") as f:
        hwm = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    with open(sys.argv[1], "w") as f:
        f.write(hwm)
sys.exit(rc)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=8)
    ap.add_argument("--chunk-frames", type=int, default=100_000)
    ap.add_argument("--compression-level", type=int, default=1)
    ap.add_argument("--method", default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="packbms-mem-"))
    cfg = SimConfig(duration_s=3600.0)
    one = simulate_pack(cfg, seed=1).frames
    span = float(one.timestamp[-1] - one.timestamp[0]) + 0.01
    parts = []
    for h in range(args.hours):
        p = one.take(slice(None))
        p.timestamp = one.timestamp + h * span
        parts.append(p)
    frames = FrameTable.concat(parts)
    del parts
    log = tmp / "long.blf"
    write_log(log, frames, compression_level=args.compression_level)
    (tmp / "pack.dbc").write_text(make_dbc_text(96))
    (tmp / "pack.toml").write_text(make_layout_text(cfg))
    n = len(frames)
    frame_bytes = sum(getattr(frames, c).nbytes for c in (
        "timestamp", "arbitration_id", "is_extended", "is_fd", "is_error", "is_remote", "dlc",
        "channel", "data"))
    T = int(round(args.hours * 3600 * 100))              # current at 100 Hz
    telemetry_bytes = T * 96 * (8 + 1 + 8 + 8)           # voltage, stale, soc, soc_std
    del frames
    argv = ["analyze", str(log), "--dbc", str(tmp / "pack.dbc"), "--layout",
            str(tmp / "pack.toml"), "--out", str(tmp / "long.h5"), "--quiet",
            "--chunk-frames", str(args.chunk_frames), "--method", args.method]
    hwm = tmp / "vmhwm"
    cmd = [sys.executable, "-c", CHILD, str(hwm), *argv]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    peak_mb = int(hwm.read_text()) / 1024
    decoded_mb = (frame_bytes + telemetry_bytes) / 1e6
    extra = (f" --compression-level {args.compression_level}"
             if args.compression_level != 1 else "")
    extra += f" --method {args.method}" if args.method != "auto" else ""
    print(f"| analyze {args.hours} h x 96 cells ({n / 1e6:.1f} M frames, "
          f"{log.stat().st_size / 1e6:,.0f} MB BLF) | peak RSS {peak_mb:.0f} MB | decoded size "
          f"{decoded_mb:,.0f} MB | {decoded_mb / peak_mb:.1f}x | {wall:.1f} s wall, "
          f"{n / wall / 1e6:.2f} M frames/s | `python benchmarks/bench_memory.py --hours "
          f"{args.hours}{extra}` |")
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
