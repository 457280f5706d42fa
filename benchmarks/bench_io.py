"""Log I/O throughput: packbms' native BLF writer against python-can's BLFWriter, and reading.

Workload: a 1-hour-drive-like table of classic frames (default 1,000,000), 40 identifiers, 8-byte
payloads of slowly varying signals, Unix timestamps. Measured in the same run:

* ``write_log(.blf)``: packbms' vectorised writer (zlib level 1, the default; and level 6);
* ``can.BLFWriter``: python-can's writer fed ``Message`` objects, on a subset (``--pc-frames``),
  extrapolated to frames/s, without and with building the Messages from the FrameTable;
* ``can.BLFReader``: python-can iterating the file packbms wrote (its raw reading speed);
* ``read_log(.blf)``: packbms' reader on that file (python-can underneath + batched conversion).

Prints a markdown table and the file size. Usage:
``python benchmarks/bench_io.py [--frames N] [--pc-frames M]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import can
import numpy as np

from packbms.io import FrameTable, read_log, write_log

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--frames", type=int, default=1_000_000)
ap.add_argument("--pc-frames", type=int, default=100_000,
                help="frames for python-can's writer (it is slow; extrapolated)")
args = ap.parse_args()


def drive(n: int, seed: int = 0) -> FrameTable:
    rng = np.random.default_rng(seed)
    ft = FrameTable.empty(n)
    ft.timestamp[:] = 1.7e9 + np.cumsum(rng.exponential(3.6e-3, n))
    ids = rng.integers(0x100, 0x700, 40)
    ft.arbitration_id[:] = ids[rng.integers(0, 40, n)]
    ft.dlc[:] = 8
    walk = np.cumsum(rng.integers(-2, 3, (n, 4)), axis=0).astype(np.int64) & 0xFFFF
    ft.data[:, 0::2] = (walk & 0xFF).astype(np.uint8)
    ft.data[:, 1::2] = (walk >> 8).astype(np.uint8)
    return ft


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t, out


ft = drive(args.frames)
n = len(ft)
rows = []
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "drive.blf")
    dt1, _ = timed(write_log, path, ft)
    size1 = os.path.getsize(path)
    rows.append(("packbms write_log .blf (zlib 1)", n, dt1))
    path6 = os.path.join(tmp, "drive6.blf")
    dt6, _ = timed(write_log, path6, ft, compression_level=6)
    rows.append(("packbms write_log .blf (zlib 6)", n, dt6))

    sub = ft.take(slice(0, min(args.pc_frames, n)))
    dtm, msgs = timed(sub.to_messages)

    def pc_write():
        with can.BLFWriter(os.path.join(tmp, "pc.blf")) as w:
            for m in msgs:
                w.on_message_received(m)

    dtp, _ = timed(pc_write)
    rows.append(("python-can BLFWriter (Message objects ready)", len(sub), dtp))
    rows.append(("python-can BLFWriter incl. FrameTable.to_messages()", len(sub), dtp + dtm))

    dtr, count = timed(lambda: sum(1 for _ in can.BLFReader(path)))
    assert count == n
    rows.append(("python-can BLFReader (iterate Messages)", n, dtr))
    dtl, back = timed(read_log, path)
    assert len(back) == n and np.array_equal(back.timestamp, ft.timestamp)
    rows.append(("packbms read_log .blf (python-can underneath)", n, dtl))

print(f"| workload ({n:,} classic frames) | frames | seconds | frames/s |")
print("|---|---:|---:|---:|")
for name, frames, sec in rows:
    print(f"| {name} | {frames:,} | {sec:.2f} | {frames / sec:,.0f} |")
print(f"\nBLF size: {size1 / 1e6:.1f} MB at zlib 1 ({size1 / n:.1f} bytes/frame); native writer "
      f"{(n / dt1) / (len(sub) / (dtp + dtm)):.0f}x python-can's writer fed from a FrameTable.")
