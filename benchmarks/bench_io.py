"""Log reading throughput: packbms' native readers against python-can's, format by format.

Workload: a simulated 1-hour drive of a 96-cell pack (``simulate_pack(SimConfig(duration_s=3600),
seed=1)``, about 976,000 classic frames: cell voltages, temperatures, pack current, ...) written
with ``packbms.io.write_log`` as BLF (packbms' writer), ASC, candump ``.log``, TRC and MF4
(python-can's writers). Measured in the same run, each in a fresh subprocess so that its peak RSS
is its own:

* python-can: iterating ``can.LogReader(path)`` over the first ``--pc-frames`` frames (python-can
  is slow; its rate is steady, so a subset gives its frames/s);
* packbms: ``read_log(path)`` (native engine) over the whole file, best of ``--repeat`` after a
  warm-up call (Numba cache warm);
* BLF only: the inflate-only floor, i.e. the time to inflate every container with the same
  inflater and nothing else, in one thread (best of ``--repeat``), for each inflater installed
  (stdlib zlib, python-isal, libdeflate), against ``read_log`` with 0, 1 or 2 worker threads
  (``PACKBMS_READ_THREADS``); and the same inflation on 2 threads, for reference;
* ``iter_log`` over BLF in chunks of 100,000 frames: peak RSS while streaming;
* writing BLF: packbms' vectorised writer (whole table) against python-can's ``BLFWriter`` fed
  ``Message`` objects built from the table (``--pc-frames`` frames);
* with ``--compile``: the first-call time of each native reader with an empty Numba cache (what
  a cold CLI start pays once).

Peak RSS is the subprocess's ``VmHWM`` (Linux), reset (``/proc/self/clear_refs``) just before the
measured read; "over start" subtracts the RSS at that moment (interpreter, NumPy, Numba,
python-can or asammdf, the compiled kernels, and for packbms the warm-up call's leftovers).

Usage: ``python benchmarks/bench_io.py [--duration-s 3600] [--pc-frames 200000] [--repeat 5]
[--compile] [--formats blf,asc,log,trc,mf4]``. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--duration-s", type=float, default=3600.0)
ap.add_argument("--pc-frames", type=int, default=200_000,
                help="frames python-can's readers iterate (timed; their rate is steady)")
ap.add_argument("--repeat", type=int, default=5)
ap.add_argument("--formats", default="blf,asc,log,trc,mf4")
ap.add_argument("--compile", action="store_true",
                help="also time each reader's first call with an empty Numba cache")
args = ap.parse_args()

CHILD_PRELUDE = """
import json, os, sys, time
def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
def start_peak():
    # the RSS now; and restart the peak-RSS counter (Linux: clear_refs 5 resets VmHWM)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS:")
def rss_mb():
    return _status("VmHWM:")
def best(fn, k):
    b = float("inf")
    out = None
    for _ in range(k):
        out = None                     # the previous result is not kept alive meanwhile
        t = time.perf_counter(); out = fn(); b = min(b, time.perf_counter() - t)
    return b, out
"""


def child(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object on its last line."""
    full = CHILD_PRELUDE + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", full], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def python_can_rate(path: str, frames: int) -> dict:
    return child(f"""
        import itertools, can
        import packbms.io                      # same imports as the packbms child
        start = start_peak()
        t = time.perf_counter()
        n = sum(1 for _ in itertools.islice(can.LogReader({path!r}), {frames}))
        dt = time.perf_counter() - t
        print(json.dumps({{"frames": n, "seconds": dt, "rss": rss_mb(), "start": start}}))
    """)


def native_rate(path: str, repeat: int, env: dict | None = None) -> dict:
    return child(f"""
        from packbms.io import read_log
        read_log({path!r})                     # warm-up: kernels from the Numba cache
        start = start_peak()
        dt, ft = best(lambda: read_log({path!r}), {repeat})
        print(json.dumps({{"frames": len(ft), "seconds": dt, "rss": rss_mb(), "start": start}}))
    """, env)


def inflate_floor(path: str, name: str, repeat: int, threads: int = 0) -> dict:
    return child(f"""
        from packbms.io.native_blf import inflate_all
        inflate_all({path!r}, {name!r}, {threads})
        dt, total = best(lambda: inflate_all({path!r}, {name!r}, {threads}), {repeat})
        print(json.dumps({{"seconds": dt, "bytes": total}}))
    """)


def streaming_rss(path: str, chunk: int) -> dict:
    return child(f"""
        from packbms.io import iter_log
        for _ in iter_log({path!r}, chunk_frames={chunk}):
            break
        start = start_peak()
        t = time.perf_counter()
        n = sum(len(c) for c in iter_log({path!r}, chunk_frames={chunk}))
        dt = time.perf_counter() - t
        print(json.dumps({{"frames": n, "seconds": dt, "rss": rss_mb(), "start": start}}))
    """)


def cold_compile(path: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        return child(f"""
            t = time.perf_counter()
            from packbms.io import read_log
            imported = time.perf_counter() - t
            t = time.perf_counter()
            read_log({path!r})
            first = time.perf_counter() - t
            t = time.perf_counter()
            read_log({path!r})
            second = time.perf_counter() - t
            print(json.dumps({{"import": imported, "first": first, "second": second}}))
        """, {"NUMBA_CACHE_DIR": cache})


def main() -> None:
    import numpy as np

    from packbms.io import write_log
    from packbms.io.native_blf import available_inflaters
    from packbms.simulate import SimConfig, simulate_pack

    formats = [f".{s.strip().lstrip('.')}" for s in args.formats.split(",") if s.strip()]
    t = time.perf_counter()
    frames = simulate_pack(SimConfig(duration_s=args.duration_s), seed=1).frames
    print(f"simulated {len(frames):,} frames ({args.duration_s:g} s, 96 cells) in "
          f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        write_times = {}
        for suffix in formats:
            path = os.path.join(tmp, f"drive{suffix}")
            t = time.perf_counter()
            write_log(path, frames)
            write_times[suffix] = time.perf_counter() - t
            paths[suffix] = path
            print(f"wrote {suffix} ({os.path.getsize(path) / 1e6:.1f} MB) in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
        for suffix in formats:
            path = paths[suffix]
            pc = python_can_rate(path, args.pc_frames)
            nat = native_rate(path, args.repeat)
            one = native_rate(path, args.repeat, {"PACKBMS_READ_THREADS": "0"})
            assert nat["frames"] == one["frames"] == len(frames), (suffix, nat["frames"])
            rows.append((suffix, os.path.getsize(path), pc, nat, one))
            print(f"measured {suffix}", file=sys.stderr)

        print(f"\n### Reading a {args.duration_s / 3600:g}-hour 96-cell drive "
              f"({len(frames):,} frames)\n")
        print("| format | file MB | python-can frames/s | packbms frames/s | ratio | "
              "packbms 1 thread frames/s | ratio | packbms peak RSS MB (over start) | "
              "python-can peak RSS MB (over start) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for suffix, size, pc, nat, one in rows:
            pc_rate = pc["frames"] / pc["seconds"]
            nat_rate = nat["frames"] / nat["seconds"]
            one_rate = one["frames"] / one["seconds"]
            print(f"| {suffix[1:]} | {size / 1e6:.1f} | {pc_rate:,.0f} | {nat_rate:,.0f} | "
                  f"{nat_rate / pc_rate:.0f}x | {one_rate:,.0f} | {one_rate / pc_rate:.0f}x | "
                  f"{nat['rss']:.0f} ({nat['rss'] - nat['start']:+.0f})"
                  f" | {pc['rss']:.0f} ({pc['rss'] - pc['start']:+.0f}) |")
        decoded = len(frames) * (8 + 4 + 4 + 2 + frames.width) / 1e6
        print(f"\npython-can timed on the first {args.pc_frames:,} frames of each file; packbms "
              f"on all of them, best of {args.repeat}: default threads (BLF: one worker per "
              "core up to 4, each inflating and parsing batches of containers; text: each 4 MiB "
              "block cut at newlines into one slice per thread, up to 4, the next block read "
              f"meanwhile) and PACKBMS_READ_THREADS=0. The decoded table is "
              f"{decoded:.0f} MB.")

        if ".blf" in paths:
            path = paths[".blf"]
            print("\n### BLF: native reader against the inflate-only floor (same inflater)\n")
            print("| inflater | threads | inflate-only floor ms | packbms read_log ms | "
                  "% of floor | packbms frames/s |")
            print("|---|---:|---:|---:|---:|---:|")
            floors2 = {}
            for name in available_inflaters():
                floor = inflate_floor(path, name, args.repeat)
                floors2[name] = inflate_floor(path, name, args.repeat, threads=2)
                for threads in ("0", "1", "2"):
                    nat = native_rate(path, args.repeat, {"PACKBMS_INFLATER": name,
                                                          "PACKBMS_READ_THREADS": threads})
                    print(f"| {name} | {threads} | {floor['seconds'] * 1e3:.1f} | "
                          f"{nat['seconds'] * 1e3:.1f} | "
                          f"{100 * floor['seconds'] / nat['seconds']:.0f} % | "
                          f"{nat['frames'] / nat['seconds']:,.0f} |")
            print(f"\n{floor['bytes'] / 1e6:.1f} MB inflated. The floor inflates in one thread; "
                  "% of floor = floor time / read_log time. packbms with threads=1 inflates on a "
                  "worker thread while the caller's thread parses; with threads=N >= 2 each of "
                  "the N workers inflates a batch of containers and parses it in file order "
                  "(the default is one per core up to 4, 0 on one core). Inflating alone on 2 "
                  "threads: " + ", ".join(f"{name} {fl['seconds'] * 1e3:.1f} ms"
                                          for name, fl in floors2.items()) + ".")
            s = streaming_rss(path, 100_000)
            print(f"\n`iter_log(blf, chunk_frames=100_000)`: {s['frames']:,} frames in "
                  f"{s['seconds']:.2f} s, peak RSS {s['rss']:.0f} MB "
                  f"({s['rss'] - s['start']:+.0f} MB over start; the whole table is "
                  f"{decoded:.0f} MB).")

        if ".blf" in paths:
            import can

            sub = frames.take(slice(0, min(args.pc_frames, len(frames))))
            t = time.perf_counter()
            with can.BLFWriter(os.path.join(tmp, "pc.blf")) as w:
                for m in sub.to_messages():
                    w.on_message_received(m)
            pc_write = len(sub) / (time.perf_counter() - t)
            nat_write = len(frames) / write_times[".blf"]
            print("\n### Writing BLF\n")
            print("| writer | frames/s |\n|---|---:|")
            print(f"| packbms write_log (zlib level 1, 2 threads) | {nat_write:,.0f} |")
            print(f"| python-can BLFWriter incl. FrameTable.to_messages() ({len(sub):,} frames) "
                  f"| {pc_write:,.0f} |")
            print(f"\nratio {nat_write / pc_write:.0f}x")

        if args.compile:
            print("\n### First call with an empty Numba cache (compile once, then cached)\n")
            print("| format | import packbms.io s | first read_log s | second read_log s |")
            print("|---|---:|---:|---:|")
            small = frames.take(np.arange(min(len(frames), 2000)))
            for suffix in formats:
                path = os.path.join(tmp, f"small{suffix}")
                write_log(path, small)
                c = cold_compile(path)
                print(f"| {suffix[1:]} | {c['import']:.2f} | {c['first']:.2f} | "
                      f"{c['second']:.3f} |")


if __name__ == "__main__":
    main()
