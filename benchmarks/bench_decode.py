"""Decode and encode throughput: packbms' Numba codec against cantools, in the same run.

Two workloads, both realistic BMS traffic:

* ``foxbms``: the real foxbms.dbc (../shared/realdata/foxbms-2). f_PackValuesP0 (0x233, signed
  17-bit Motorola current and voltages) at 100 Hz and f_CellVoltages (0x250, an 8-bit
  multiplexer over 54 groups, 433 signals, all Motorola) cycling through 24 groups = 96 cells
  at 10 Hz. Skipped when the real data folder is missing.
* ``pack96``: a generated 96-cell DBC: 100 Hz current/voltage message (Intel, signed) and a
  multiplexed cell-voltage message (group 0..23 selects cells 4g+1..4g+4 in V1..V4 through
  ``SG_MUL_VAL_``, 1 mV) at 10 Hz per cell.

Frames are built with ``packbms.dbc.encode`` (timed too: the simulator calls it). packbms decodes
the whole table once after a warm-up call; cantools decodes a 20,000-frame subset with
``db.decode_message(frame_id, data, decode_choices=False)`` frame by frame, extrapolated to
frames/s. Prints a markdown table, the peak RSS, and first-call (compile or cache-load) times.

Usage: ``python benchmarks/bench_decode.py [--frames N] [--cold]`` (``--cold``: empty Numba
cache, so the first calls include compilation).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--frames", type=int, default=1_000_000, help="frames per workload")
ap.add_argument("--cantools-frames", type=int, default=20_000)
ap.add_argument("--cold", action="store_true", help="use an empty Numba cache (time compile)")
args = ap.parse_args()
if args.cold:
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="packbms-numba-")

import cantools  # noqa: E402
import numpy as np  # noqa: E402

from packbms.dbc import compile_database, decode, encode  # noqa: E402
from packbms.io.frames import FrameTable  # noqa: E402

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"

PACK96 = ['VERSION ""', "BO_ 291 BMS_Pack: 8 BMS",
          ' SG_ BMS_PackCurrent : 0|16@1- (0.05,0) [-1600|1600] "A" Vector__XXX',
          ' SG_ BMS_PackVoltage : 16|16@1+ (0.01,0) [0|655.35] "V" Vector__XXX',
          ' SG_ BMS_SoC : 32|10@1+ (0.1,0) [0|100] "%" Vector__XXX',
          "BO_ 1025 BMS_CellVoltages: 8 BMS",
          ' SG_ CellGroup M : 0|8@1+ (1,0) [0|23] "" Vector__XXX']
PACK96 += [f' SG_ V{c + 1} m0 : {8 + 14 * c}|14@1+ (0.001,0) [0|16.383] "V" Vector__XXX'
           for c in range(4)]
PACK96 += [f"SG_MUL_VAL_ 1025 V{c + 1} CellGroup 0-23;" for c in range(4)]


def traffic(cdb, pack_msg, pack_values, cell_msg, cell_values, n_frames, rng):
    """100 Hz pack frames + 24 cell-group frames per 100 ms, interleaved by time."""
    seconds = n_frames / (100 + 240)
    t_pack = np.arange(0, seconds, 0.01)
    t_cell = np.arange(0, seconds, 0.1 / 24)
    n_pack, n_cell = len(t_pack), len(t_cell)
    group = np.arange(n_cell) % 24
    pv, cv = pack_values(n_pack, rng), cell_values(group, rng)
    t0 = time.perf_counter()
    pack = encode(cdb, pack_msg, t_pack, pv)
    cells = encode(cdb, cell_msg, t_cell, cv)
    t_enc = time.perf_counter() - t0
    frames = FrameTable.concat([pack, cells])
    order = np.argsort(frames.timestamp, kind="stable")
    return frames.take(order), n_pack + n_cell, t_enc


def pack96_cells(group, rng):
    vals = {"CellGroup": group}
    vals.update({f"V{c + 1}": np.round(rng.uniform(3.2, 4.1, group.size), 3) for c in range(4)})
    return vals


def foxbms_cells(group, rng):
    """foxbms has one signal per cell (CellVoltage_000.. under its own mux value), in mV."""
    vals = {"f_CellVoltages_Mux": group}
    volts = np.round(rng.uniform(3200, 4100, group.size))
    vals.update({f"CellVoltage_{g * 4 + c:03d}": volts for g in range(24) for c in range(4)})
    return vals


def measure(name, db, cdb, frames, n_enc, t_enc, n_cantools):
    t0 = time.perf_counter()
    decode(frames.take(slice(0, 1000)), cdb)
    warm = time.perf_counter() - t0
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        table = decode(frames, cdb)
        best = min(best, time.perf_counter() - t0)
    assert table.counts.decoded == len(frames)
    sub = frames.take(slice(0, n_cantools))
    ids = sub.arbitration_id.tolist()
    payloads = [bytes(row) for row in sub.data]
    t0 = time.perf_counter()
    for fid, p in zip(ids, payloads):
        db.decode_message(fid, p, decode_choices=False)
    t_ct = time.perf_counter() - t0
    # spot check against cantools
    for i in range(0, n_cantools, max(1, n_cantools // 50)):
        want = db.decode_message(ids[i], payloads[i], decode_choices=False)
        m = db.get_message_by_frame_id(ids[i]).name
        ms = table.messages[m]
        row = int(np.searchsorted(ms.timestamps, sub.timestamp[i]))
        for sig, v in want.items():
            assert ms.values[row, ms.column(sig)] == v, (m, sig)
    pk = len(frames) / best
    ct = n_cantools / t_ct
    return dict(name=name, n=len(frames), pk=pk, ct=ct, ratio=pk / ct, warm=warm,
                enc=n_enc / t_enc,
                out_mb=sum(ms.values.nbytes + ms.present.nbytes + ms.timestamps.nbytes
                           for ms in table.messages.values()) / 2**20)


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    small = compile_database(cantools.database.load_string("\n".join(PACK96) + "\n",
                                                           database_format="dbc"))
    # first calls: compilation (with --cold) or loading from Numba's cache
    t0 = time.perf_counter()
    warm = FrameTable.concat([
        encode(small, "BMS_Pack", [0.0], {"BMS_PackCurrent": 1.0}),
        encode(small, "BMS_CellVoltages", [0.1], {"CellGroup": 3, "V1": 3.7})])
    first_encode = time.perf_counter() - t0
    auto = small.msg_dense.copy()
    small.msg_dense[:] = [True, False]        # make both decode kernels run once
    t0 = time.perf_counter()
    decode(warm, small)
    first_decode = time.perf_counter() - t0
    small.msg_dense[:] = auto

    workloads = []
    db96 = small.database
    frames, n_enc, t_enc = traffic(
        small, "BMS_Pack",
        lambda n, r: {"BMS_PackCurrent": np.round(r.normal(20, 40, n), 1),
                      "BMS_PackVoltage": np.round(r.uniform(330, 390, n), 2),
                      "BMS_SoC": np.round(r.uniform(10, 90, n), 1)},
        "BMS_CellVoltages", pack96_cells, args.frames, rng)
    workloads.append(("pack96 (generated, Intel, mux 24 x V1..V4)", db96, small, frames, n_enc,
                      t_enc))

    fox_path = REALDATA / "foxbms-2" / "foxbms.dbc"
    if fox_path.exists():
        fox = compile_database(fox_path)
        frames, n_enc, t_enc = traffic(
            fox, "f_PackValuesP0",
            lambda n, r: {"Current": np.round(r.normal(20, 40, n), 2),
                          "BatteryVoltage": np.round(r.uniform(330, 390, n), 1),
                          "BusVoltage": np.round(r.uniform(330, 390, n), 1),
                          "Power": np.round(r.uniform(-50, 50, n), 2)},
            "f_CellVoltages", foxbms_cells, args.frames // 5, rng)
        workloads.append(("foxbms.dbc (real, Motorola, mux 433 signals)", fox.database, fox,
                          frames, n_enc, t_enc))
    for w in workloads:
        rows.append(measure(w[0], w[1], w[2], w[3], w[4], w[5], args.cantools_frames))

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"first calls ({'cold Numba cache' if args.cold else 'Numba cache as found'}): "
          f"encode {first_encode:.2f} s, decode {first_decode:.2f} s")
    print()
    print("| workload | frames | packbms decode (frames/s) | cantools decode_message "
          "(frames/s) | ratio | packbms encode (frames/s) | SignalTable (MB) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['n']:,} | {r['pk']:,.0f} | {r['ct']:,.0f} | "
              f"{r['ratio']:,.0f}x | {r['enc']:,.0f} | {r['out_mb']:,.0f} | {rss_mb:,.0f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
