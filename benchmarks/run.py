"""Run every packbms benchmark and print the README's benchmark table in one piece.

Every ``benchmarks/bench_*.py`` runs as its own subprocess (so one crash or one import cannot
disturb the others), then this script measures what no single benchmark covers: ``packbms
analyze`` end to end on the bundled 25-minute drive (time, real-time factor, peak memory) and
``packbms fleet`` scaling from one to two Dask workers on the same logs.

Convention for benchmark scripts (``bench_*.py``):

- they print markdown tables (lines starting with ``|``, a header row then a ``|---|`` row); the
  tables of the scripts known here are turned into README rows by the extractors below, and
  every table is reprinted under "Details";
- a lone ``|`` line (no header, no separator) is a README row as it stands:
  ``| what | packbms | peer | ratio | command |`` (cells between ``ratio`` and the last one are
  appended to the ``packbms`` cell);
- a script may also print JSON lines; a line ``{"readme": [{"what": ..., "packbms": ...,
  "peer": ..., "ratio": ..., "command": ...}, ...]}`` gives README rows verbatim (the way for
  a new benchmark, e.g. ``bench_identify.py`` or ``bench_live.py``, to appear in the table
  without a change here);
- ``--quick`` is passed to a script whose ``--help`` lists it; the scripts known here get the
  small arguments of :data:`QUICK_ARGS` instead.

A script that fails is reported (exit code and last error line) and the run goes on.

Usage: ``python benchmarks/run.py [--quick] [--only NAME ...] [--skip NAME ...] [--no-fleet]
[--no-e2e] [--fleet-logs N] [--json FILE] [--table-only]`` (``--only decode fleet`` runs
``bench_decode.py`` and the fleet scaling). Progress goes to stderr; the table (and the
details) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Small arguments for ``--quick`` (a whole quick run takes a couple of minutes on 2 cores).
QUICK_ARGS = {
    "bench_io": ["--duration-s", "900", "--pc-frames", "20000", "--repeat", "2"],
    "bench_e2e": ["--duration-s", "900", "--repeat", "2", "--cold-runs", "2"],
    "bench_store": ["--repeat", "2"],
    "bench_decode": ["--cantools-frames", "5000", "--only", "pack96-1h", "foxbms"],
    "bench_simulate": ["--duration-s", "900", "--repeat", "1"],
    "bench_estimate": ["--duration-s", "900", "--repeat", "1", "--baseline-rows", "5000"],
    "bench_memory": ["--hours", "1"],
}
TIMEOUT_S = 1800


# ------------------------------------------------------------------------------------------------
# running and parsing
# ------------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def discover() -> list[Path]:
    return sorted(HERE.glob("bench_*.py"))


def script_args(path: Path, quick: bool) -> list[str]:
    if not quick:
        return []
    if path.stem in QUICK_ARGS:
        return QUICK_ARGS[path.stem]
    try:
        h = subprocess.run([sys.executable, str(path), "--help"], capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return []
    return ["--quick"] if "--quick" in h.stdout else []


def run_script(path: Path, args: list[str]) -> dict:
    cmd = [sys.executable, str(path), *args]
    log(f"running {path.name} {' '.join(args)}")
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = -1, e.stdout or "", f"timed out after {TIMEOUT_S} s"
        out = out.decode() if isinstance(out, bytes) else out
    wall = time.perf_counter() - t
    last_err = next((ln for ln in reversed(err.strip().splitlines()) if ln.strip()), "")
    log(f"  {path.name}: exit {rc} in {wall:.1f} s" + (f" ({last_err})" if rc else ""))
    return {"name": path.stem, "command": "python benchmarks/" + path.name +
            (" " + " ".join(args) if args else ""), "rc": rc, "stdout": out, "error": last_err,
            "wall_s": wall, "tables": parse_tables(out), "json": parse_json(out)}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_tables(text: str) -> list[dict]:
    """Markdown tables in ``text``: ``[{"header": [...], "rows": [[...], ...]}]``; a block of
    ``|`` lines without a separator row has ``header`` None (README rows as they stand)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            block.append(line.strip())
            continue
        if len(block) >= 2 and re.fullmatch(r"\|[\s:|-]+\|?", block[1]):
            cells = [_cells(b) for b in block]
            tables.append({"header": cells[0], "rows": cells[2:], "text": "\n".join(block)})
        elif block:
            tables.append({"header": None, "rows": [_cells(b) for b in block],
                           "text": "\n".join(block)})
        block = []
    return tables


def lone_rows(res: dict) -> list[dict]:
    rows = []
    for t in res["tables"]:
        if t["header"] is not None:
            continue
        for c in t["rows"]:
            if len(c) < 2:
                continue
            mid = c[1:-1] + ["—"] * max(0, 3 - len(c[1:-1]))
            packbms = "; ".join([mid[0]] + mid[3:])
            rows.append(dict(what=c[0], packbms=packbms, peer=mid[1], ratio=mid[2],
                             command=c[-1].strip("`")))
    return rows


def parse_json(text: str) -> list:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def number(s: str) -> float:
    """``"1,234,567"``, ``"32.5 M"``, ``"12x"`` -> float (NaN when not a number)."""
    s = s.replace(",", "").replace("x", "").strip()
    mult = 1.0
    if s.endswith("M"):
        s, mult = s[:-1], 1e6
    elif s.endswith("k"):
        s, mult = s[:-1], 1e3
    try:
        return float(s) * mult
    except ValueError:
        return float("nan")


def rate(v: float, unit: str) -> str:
    if v != v:
        return "—"
    for div, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if v >= div:
            return f"{v / div:.3g}{suffix} {unit}"
    return f"{v:.3g} {unit}"


def find_table(res: dict, *needles: str) -> dict | None:
    for t in res["tables"]:
        if t["header"] is None:
            continue
        head = " | ".join(t["header"]).lower()
        if all(n.lower() in head for n in needles):
            return t
    return None


def column(table: dict, name: str) -> int:
    for i, h in enumerate(table["header"]):
        if name.lower() in h.lower():
            return i
    raise KeyError(name)


def row_where(table: dict, *needles: str) -> list | None:
    for r in table["rows"]:
        if all(n.lower() in r[0].lower() for n in needles):
            return r
    return None


# ------------------------------------------------------------------------------------------------
# README rows from the known benchmarks
# ------------------------------------------------------------------------------------------------
def readme_io(res: dict) -> list[dict]:
    """bench_io: one row per format (frames/s against python-can's reader, peak RSS), the BLF
    reader against the inflate-only floor, and the BLF writer against python-can's."""
    rows = []
    t = find_table(res, "format", "python-can frames/s", "packbms frames/s")
    if t is not None:
        cp, cn = column(t, "python-can frames/s"), column(t, "packbms frames/s")
        mem = column(t, "packbms peak RSS")
        for r in t["rows"]:
            a, b = number(r[cn]), number(r[cp])
            rows.append(dict(what=f"read {r[0].upper()} (frames/s)",
                             packbms=f"{rate(a, 'frames/s')}; peak RSS {r[mem]} MB",
                             peer=f"python-can {rate(b, 'frames/s')}",
                             ratio=f"{a / b:,.0f}x", command=res["command"]))
    f = find_table(res, "inflater", "% of floor")
    if f is not None:
        ci, ct, cf = column(f, "inflater"), column(f, "threads"), column(f, "% of floor")
        for r in f["rows"]:
            if r[ct] == "2":
                rows.append(dict(what=f"read BLF against the inflate-only floor ({r[ci]}, "
                                      f"2 threads; floor: 1 thread)", packbms=r[cf],
                                 peer="inflate only", ratio="—", command=res["command"]))
    w = find_table(res, "writer", "frames/s")
    if w is not None:
        c = column(w, "frames/s")
        ours, peer = row_where(w, "packbms write_log"), row_where(w, "BLFWriter")
        if ours and peer:
            a, b = number(ours[c]), number(peer[c])
            rows.append(dict(what="write BLF (frames/s)", packbms=rate(a, "frames/s"),
                             peer=f"python-can BLFWriter {rate(b, 'frames/s')}",
                             ratio=f"{a / b:,.0f}x", command=res["command"]))
    return rows


def readme_decode(res: dict) -> list[dict]:
    t = find_table(res, "packbms decode", "cantools")
    if t is None:
        return []
    cp, cc = column(t, "packbms decode"), column(t, "cantools")
    rows = []
    for r in t["rows"]:
        a, b = number(r[cp]), number(r[cc])
        rows.append(dict(what=f"decode, {r[0]} (frames/s)", packbms=rate(a, "frames/s"),
                         peer=f"cantools decode_message {rate(b, 'frames/s')}",
                         ratio=f"{a / b:,.0f}x", command=res["command"]))
    mem = column(t, "peak RSS") if any("peak rss" in h.lower() for h in t["header"]) else None
    if mem is not None and t["rows"]:
        res["peak_rss_mb"] = number(t["rows"][0][mem])
    return rows


def readme_estimate(res: dict) -> list[dict]:
    t = find_table(res, "what", "threads", "cell-steps/s")
    b = find_table(res, "baseline", "cell-steps/s")
    rows = []
    if t is not None:
        cs, ct = column(t, "cell-steps/s"), column(t, "threads")
        kern = row_where(t, "ekf kernel only")
        full = [r for r in t["rows"] if r[0].startswith("ekf (estimate_soc)")]
        full = max(full, key=lambda r: number(r[cs])) if full else None
        if kern is not None and b is not None:
            bc = column(b, "cell-steps/s")
            for br in b["rows"]:
                v = number(br[bc])
                if v == v:
                    k = number(kern[cs])
                    rows.append(dict(what="EKF, one thread (cell-steps/s)",
                                     packbms=rate(k, "cell-steps/s"),
                                     peer=f"{br[0]} {rate(v, 'cell-steps/s')}",
                                     ratio=f"{k / v:,.0f}x", command=res["command"]))
        if full is not None:
            rows.append(dict(what=f"SoC estimation, EKF with rest detection and pack SoC, "
                                  f"{full[ct]} threads (cell-steps/s)",
                             packbms=rate(number(full[cs]), "cell-steps/s"), peer="—",
                             ratio="—", command=res["command"]))
    m = re.search(r"peak RSS (\d+) MB", res["stdout"])
    if m:
        res["peak_rss_mb"] = float(m.group(1))
    return rows


def readme_simulate(res: dict) -> list[dict]:
    m = re.search(r"best simulate\+write of (\S+) s x (\d+) cells as (\w+): ([\d.]+) s",
                  res["stdout"])
    if not m:
        return []
    dur, cells, fmt, sec = float(m.group(1)), m.group(2), m.group(3), float(m.group(4))
    return [dict(what=f"simulate + write {fmt.upper()}, {cells} cells",
                 packbms=f"{dur / 60:g} min of driving in {sec:.1f} s ({dur / sec:,.0f}x real "
                         f"time)", peer="—", ratio="—", command=res["command"])]


EXTRACTORS = {"bench_io": readme_io, "bench_decode": readme_decode,
              "bench_estimate": readme_estimate, "bench_simulate": readme_simulate}


def readme_rows(res: dict) -> list[dict]:
    rows = []
    for obj in res["json"]:
        if isinstance(obj, dict) and isinstance(obj.get("readme"), list):
            rows += [dict(dict(what="?", packbms="—", peer="—", ratio="—",
                               command=res["command"]), **r) for r in obj["readme"]]
    rows += lone_rows(res)
    if res["name"] in EXTRACTORS:
        try:
            rows += EXTRACTORS[res["name"]](res)
        except (KeyError, IndexError, ValueError, ZeroDivisionError) as e:
            log(f"  could not read the tables of {res['name']}: {e!r}")
    if res["rc"] != 0:
        rows.append(dict(what=f"{res['name']}", packbms=f"failed: {res['error'][:80]}",
                         peer="—", ratio="—", command=res["command"]))
    elif not rows:
        rows.append(dict(what=res["name"], packbms="see details", peer="—", ratio="—",
                         command=res["command"]))
    return rows


# ------------------------------------------------------------------------------------------------
# measured here: end to end, fleet scaling
# ------------------------------------------------------------------------------------------------
E2E_SCRIPT = r"""
import json, resource, shutil, sys, tempfile, time
from pathlib import Path
from packbms._data import data_dir
from packbms.analysis import analyze
from packbms.io import iter_log
d = data_dir()
scratch = tempfile.mkdtemp(prefix="packbms-bench-e2e-")
out = Path(scratch) / "drive.h5"
args = (d / "drive_96s.blf", d / "pack96.dbc", d / "pack96.toml")
t = time.perf_counter(); analyze(*args, out=out); first = time.perf_counter() - t
best = None
for _ in range(int(sys.argv[1])):
    t = time.perf_counter(); a = analyze(*args, out=out); dt = time.perf_counter() - t
    best = dt if best is None or dt < best else best
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
res = a.result
frames = sum(len(f) for f in iter_log(args[0]))
print(json.dumps({"first_s": first, "best_s": best, "frames": frames,
                  "duration_s": float(res["/time"][-1] - res["/time"][0]),
                  "cells": int(res["/cells/voltage"].shape[1]), "peak_rss_mb": peak}))
shutil.rmtree(scratch, ignore_errors=True)
"""


def end_to_end(quick: bool) -> tuple[list[dict], dict]:
    log("running end to end (packbms analyze on data/drive_96s.blf)")
    p = subprocess.run([sys.executable, "-c", E2E_SCRIPT, "1" if quick else "3"],
                       capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    cmd = "analyze(data/drive_96s.blf) in benchmarks/run.py"
    figs = parse_json(p.stdout)
    if p.returncode != 0 or not figs:
        err = (p.stderr.strip().splitlines() or ["?"])[-1]
        log(f"  end to end failed: {err}")
        return [dict(what="end to end", packbms=f"failed: {err[:80]}", peer="—", ratio="—",
                     command=cmd)], {}
    f = figs[-1]
    rows = [dict(what=f"end to end: analyze a {f['duration_s'] / 60:.0f}-min drive, "
                      f"{f['cells']} cells, {f['frames']:,} frames (read, decode, align, EKF, "
                      f"balancing, HDF5)",
                 packbms=f"{f['best_s']:.2f} s ({f['duration_s'] / f['best_s']:,.0f}x real time, "
                         f"{rate(f['frames'] / f['best_s'], 'frames/s')}); first call in a "
                         f"fresh process {f['first_s']:.2f} s",
                 peer="—", ratio="—", command=cmd),
            dict(what="memory: peak RSS of that analysis process",
                 packbms=f"{f['peak_rss_mb']:.0f} MB", peer="—", ratio="—", command=cmd)]
    log(f"  end to end: {f['best_s']:.2f} s")
    return rows, f


def fleet_scaling(n_logs: int, quick: bool) -> tuple[list[dict], dict]:
    try:
        from dask.distributed import Client
    except ImportError:
        return [dict(what="fleet scaling", packbms="skipped: dask.distributed not installed "
                     "(pip install 'packbms[fleet]')", peer="—", ratio="—",
                     command="benchmarks/run.py")], {}
    from packbms import store
    from packbms.fleet import _local_cluster, _text_sha256, process_log, run_fleet
    from packbms.layout import load_layout
    from packbms.simulate import SimConfig, simulate_pack, write_simulation

    try:                                   # the summary writer's first import, not timed
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        pass
    duration = 600.0 if quick else 1200.0
    log(f"fleet: simulating {n_logs} logs of {duration / 60:g} min, 96 cells")
    tmp = Path(tempfile.mkdtemp(prefix="packbms-bench-fleet-"))
    logs = tmp / "logs"
    logs.mkdir()
    for k in range(n_logs):
        cfg = SimConfig(cells=96, duration_s=duration, rest_s=120.0, t0_unix=1.767e9 + k * 86400)
        write_simulation(simulate_pack(cfg, seed=100 + k), logs / f"pack{k % 3}_{k:04d}.blf",
                         dbc_path=tmp / "pack.dbc", layout_path=tmp / "pack.toml")
    figs = {"logs": n_logs, "log_minutes": duration / 60}
    rows = []
    for workers in (1, 2):
        cluster = _local_cluster(workers, numba_threads=1)   # scaling by processes only
        client = Client(cluster)
        try:
            # warm every worker (imports, Numba cache loads) on one log, outside the timing
            warm = dict(log=str(logs / f"pack0_{0:04d}.blf"), result=str(tmp / "warm.h5"),
                        pack_id="w", dbc=str((tmp / "pack.dbc").resolve()),
                        dbc_sha256=store.sha256_file(tmp / "pack.dbc"),
                        layout=str((tmp / "pack.toml").resolve()),
                        layout_sha256=_text_sha256(load_layout(tmp / "pack.toml").text),
                        method="ekf", output_dt_s=0.1, force=True)
            client.run(process_log, warm)
            log(f"fleet: {workers} worker(s)")
            wall = None
            for _ in range(2):                       # best of two
                t = time.perf_counter()
                run = run_fleet([logs], tmp / "pack.dbc", tmp / "pack.toml",
                                tmp / f"out{workers}", client=client, force=True,
                                progress=False)
                dt = time.perf_counter() - t
                wall = dt if wall is None else min(wall, dt)
        finally:
            client.close()
            cluster.close()
        failed = run.count("failed")
        figs[f"workers_{workers}"] = {"wall_s": wall, "logs_per_s": n_logs / wall,
                                      "failed": failed}
        log(f"  {workers} worker(s): {wall:.1f} s, {n_logs / wall:.2f} logs/s, {failed} failed")
    one, two = figs["workers_1"], figs["workers_2"]
    cmd = "benchmarks/run.py (packbms.fleet.run_fleet, LocalCluster)"
    what = (f"fleet: {n_logs} logs of {duration / 60:g} min x 96 cells on a LocalCluster "
            f"(one Numba thread per worker)")
    rows.append(dict(what=what + ", 2 workers vs 1 (logs/s)",
                     packbms=f"2 workers: {two['logs_per_s']:.2f} logs/s ({two['wall_s']:.1f} s)",
                     peer=f"1 worker: {one['logs_per_s']:.2f} logs/s ({one['wall_s']:.1f} s)",
                     ratio=f"{two['logs_per_s'] / one['logs_per_s']:.2f}x", command=cmd))
    shutil.rmtree(tmp, ignore_errors=True)
    return rows, figs


# ------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    import numba
    import numpy
    from packbms import __version__
    return (f"{cpu}, {cores} cores; Python {platform.python_version()}, NumPy "
            f"{numpy.__version__}, Numba {numba.__version__}, packbms {__version__}; "
            f"{time.strftime('%Y-%m-%d')}")


def render(rows: list[dict], quick: bool) -> str:
    lines = [f"Measured on {machine()}" + (" (quick run: small workloads)" if quick else "") +
             "; each row compares packbms to the tool a user would otherwise use, measured "
             "in the same run.", "",
             "| what | packbms | peer | ratio | command |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [str(r.get(k, "—")).replace("|", "/") for k in
                 ("what", "packbms", "peer", "ratio")]
        lines.append("| " + " | ".join(cells) + f" | `{r.get('command', '')}` |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small workloads (a few minutes)")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="run only these: bench_* scripts (with or without the prefix), 'e2e', "
                         "'fleet'")
    ap.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="skip these scripts")
    ap.add_argument("--no-fleet", action="store_true", help="skip the fleet scaling run")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run")
    ap.add_argument("--fleet-logs", type=int, help="logs in the fleet run (default 4 quick, 8)")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    ap.add_argument("--table-only", action="store_true", help="print only the README table")
    args = ap.parse_args(argv)

    def wanted(p: Path) -> bool:
        names = {p.stem, p.stem.removeprefix("bench_"), p.name}
        if args.only and not names & set(args.only):
            return False
        return not names & set(args.skip)

    results = [run_script(p, script_args(p, args.quick)) for p in discover() if wanted(p)]
    rows = []
    for res in results:
        rows += readme_rows(res)
    extra = {}
    if not args.no_e2e and (not args.only or "e2e" in args.only):
        r, extra["end_to_end"] = end_to_end(args.quick)
        rows += r
    if not args.no_fleet and (not args.only or "fleet" in args.only):
        r, extra["fleet"] = fleet_scaling(args.fleet_logs or (4 if args.quick else 8), args.quick)
        rows += r
    for res in results:
        if "peak_rss_mb" in res:
            rows.append(dict(what=f"memory: peak RSS of {res['name']}",
                             packbms=f"{res['peak_rss_mb']:.0f} MB", peer="—", ratio="—",
                             command=res["command"]))
    print(render(rows, args.quick))
    if not args.table_only:
        print("\n### Details\n")
        for res in results:
            print(f"#### {res['name']} (`{res['command']}`, exit {res['rc']}, "
                  f"{res['wall_s']:.0f} s)\n")
            for t in res["tables"]:
                print(t["text"] + "\n")
            if not res["tables"]:
                print("```\n" + (res["stdout"].strip() or res["error"]) + "\n```\n")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "scripts": [
            {k: v for k, v in r.items() if k != "stdout"} for r in results], **extra},
            indent=2, default=str))
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
