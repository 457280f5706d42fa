"""packbms fleet on dask.distributed: LocalCluster, an external scheduler, resume, bad logs.

One LocalCluster (two worker processes, one thread each, 127.0.0.1 only) is shared by the
module; the external-cluster test starts ``dask scheduler`` and ``dask worker`` on a free
loopback port and ends both (and their children) whatever happens.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dask.distributed")

from packbms import store  # noqa: E402
from packbms.cli import main  # noqa: E402
from packbms.errors import PackBMSError  # noqa: E402
from packbms.fleet import (SUMMARY_COLUMNS, _local_cluster, discover_logs,  # noqa: E402
                           pack_id_for, read_summary, result_name, run_fleet, summary_row)
from packbms.simulate import SimConfig, simulate_pack, write_simulation  # noqa: E402

VENV_BIN = Path(sys.executable).parent
#: Row fields that legitimately differ between two runs of the same logs.
VOLATILE = {"elapsed_s", "result", "status"}


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    """Six logs: five good ones from three packs (two share a file name in different folders)
    and one truncated BLF."""
    d = tmp_path_factory.mktemp("fleet")
    logs = d / "logs"
    specs = [("depot1/busA_0001.blf", 1, 0.0), ("depot1/busA_0002.blf", 2, 7200.0),
             ("depot1/busB_0001.blf", 3, 0.0), ("depot2/busB_0001.blf", 4, 86400.0),
             ("depot2/busC-7.asc", 5, 0.0)]
    for name, seed, dt in specs:
        cfg = SimConfig(cells=8, segments="rest:15,urban:45,rest:15", t0_unix=1.767e9 + dt)
        p = logs / name
        p.parent.mkdir(parents=True, exist_ok=True)
        write_simulation(simulate_pack(cfg, seed=seed), p, dbc_path=d / "pack.dbc",
                         layout_path=d / "pack.toml")
    good = (logs / "depot1/busA_0001.blf").read_bytes()
    (logs / "depot2/busD_0001.blf").write_bytes(good[: len(good) // 2])   # truncated
    (logs / "notes.txt").write_text("not a log")                          # ignored
    return d


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client

    cluster = _local_cluster(2)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(scope="module")
def dask_run(fleet_dir, client):
    out = fleet_dir / "out_dask"
    return run_fleet([fleet_dir / "logs"], fleet_dir / "pack.dbc", fleet_dir / "pack.toml", out,
                     client=client)


@pytest.fixture(scope="module")
def serial_run(fleet_dir):
    return run_fleet([fleet_dir / "logs"], fleet_dir / "pack.dbc", fleet_dir / "pack.toml",
                     fleet_dir / "out_serial", workers=0)


def test_cluster_is_local_with_two_processes(client):
    info = client.scheduler_info()
    workers = info["workers"]
    assert len(workers) == 2
    assert all(a.startswith("tcp://127.0.0.1:") for a in workers)
    assert info["address"].startswith("tcp://127.0.0.1:")
    assert all(w["nthreads"] == 1 for w in workers.values())
    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_five_results_and_one_error_row(dask_run, fleet_dir):
    rows = dask_run.rows
    assert len(rows) == 6
    assert [r["status"] for r in rows].count("analysed") == 5
    bad = [r for r in rows if r["status"] == "failed"]
    assert len(bad) == 1
    assert bad[0]["log"].endswith("busD_0001.blf")
    assert bad[0]["error_type"] == "LogFormatError"
    assert "busD_0001.blf" in bad[0]["error"] and "truncated" in bad[0]["error"]
    assert bad[0]["result"] == "" and math.isnan(bad[0]["soc_spread"])
    # one result per good log, named uniquely even for the two busB_0001.blf
    results = [Path(r["result"]) for r in rows if r["status"] == "analysed"]
    assert len({p.name for p in results}) == 5 and all(p.exists() for p in results)
    assert sorted(p.name for p in (fleet_dir / "out_dask").glob("*.h5")) == sorted(
        [p.name for p in results] + ["fleet_summary.h5"])
    for r in rows:
        if r["status"] == "analysed":
            res = store.load(r["result"])
            assert res.attrs["source"] == r["log"]
            assert res.attrs["source_sha256"] == store.sha256_file(r["log"])
            assert res.attrs["pack_id"] == r["pack_id"]
            assert r["n_cells"] == 8 and r["method"] == "ekf"
            assert r["duration_s"] == pytest.approx(75.0, abs=0.5)
            assert 0 < r["soc_spread"] < 0.2 and 0 < r["pack_soc_end"] < 1
            assert r["capacity_source"] == "nominal" and r["capacity_ah_mean"] == 60.0
            assert r["grade"] == "" and math.isnan(r["n_weak_cells"])
            assert summary_row(res)["soc_spread"] == r["soc_spread"]


def test_summary_row_reads_the_quality_group(dask_run):
    """What packbms.quality writes to /quality fills the row's quality fields."""
    quality = pytest.importorskip("packbms.quality")
    row0 = [r for r in dask_run.rows if r["status"] == "analysed"][0]
    res = store.load(row0["result"])
    cap = np.full(8, 60.0) + np.linspace(-0.3, 0.3, 8)
    cap[2] = 52.0                                       # a weak cell
    r0 = np.full(8, 1e-3)
    rep = quality.assess_quality(None, capacity_ah=cap, capacity_std_ah=np.full(8, 0.1),
                                 r0_ohm=r0, r0_std_ohm=np.full(8, 1e-5))
    arrays, attrs = rep.to_group()
    res.datasets.update({f"/quality/{k}": v for k, v in arrays.items()})
    res.group_attrs["/quality"] = attrs
    row = summary_row(res)
    assert row["capacity_source"] == "quality" and row["grade"] == attrs["grade"] != ""
    assert row["weak_cells"] == "3" and row["n_weak_cells"] == 1.0
    assert row["capacity_ah_min"] == 52.0
    assert row["capacity_ah_mean"] == pytest.approx(cap.mean())
    assert row["capacity_cv"] == pytest.approx(cap.std() / cap.mean())
    # identified values with gaps (NaN) still summarise; nothing identified stays NaN
    res.datasets["/quality/r0_ohm"] = np.full(8, np.nan)
    res.datasets["/quality/capacity_ah"] = np.where(np.arange(8) == 5, np.nan, cap)
    row = summary_row(res)
    assert math.isnan(row["r0_mean_ohm"]) and row["capacity_ah_min"] == 52.0


def test_pack_ids_and_start_times(dask_run):
    by_log = {Path(r["log"]).relative_to(Path(r["log"]).parents[1]).as_posix(): r
              for r in dask_run.rows}
    assert by_log["depot1/busA_0002.blf"]["pack_id"] == "busA"
    assert by_log["depot2/busC-7.asc"]["pack_id"] == "busC-7"
    assert by_log["depot2/busB_0001.blf"]["pack_id"] == "busB"
    a1, a2 = by_log["depot1/busA_0001.blf"], by_log["depot1/busA_0002.blf"]
    assert a2["start_unix"] - a1["start_unix"] == pytest.approx(7200.0, abs=0.1)
    assert a1["start"].startswith("2025-12-29T09:20:00")


def test_summary_files(dask_run, fleet_dir):
    paths = dask_run.paths
    with open(paths["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert [c[0] for c in SUMMARY_COLUMNS] == list(table[0])
    assert len(table) == 6
    assert [t["status"] for t in table] == [r["status"] for r in dask_run.rows]
    failed = [t for t in table if t["status"] == "failed"][0]
    assert failed["soc_spread"] == "" and "truncated" in failed["error"]
    ok = [t for t in table if t["status"] == "analysed"]
    assert float(ok[0]["soc_spread"]) == [r for r in dask_run.rows
                                          if r["status"] == "analysed"][0]["soc_spread"]
    s = read_summary(fleet_dir / "out_dask")
    assert s.attrs["schema"] == "packbms-fleet" and s.attrs["method"] == "ekf"
    back = s.rows("logs")
    for a, b in zip(back, dask_run.rows):
        for k, v in b.items():
            assert (a[k] == v) or (isinstance(v, float) and math.isnan(v) and math.isnan(a[k])), k
    # trends: the two busA logs two hours apart, busB's two logs, busC alone
    tr = s.rows("trends")
    assert [(t["pack_id"], t["log_index"]) for t in tr] == [
        ("busA", 0), ("busA", 1), ("busB", 0), ("busB", 1), ("busC-7", 0)]
    assert tr[1]["parked_h"] == pytest.approx((7200 - 75) / 3600, abs=0.02)
    assert s.trend_cells["self_discharge_rel_a"].shape == (5, 8)
    with open(paths["trends_csv"], newline="") as f:
        assert len(list(csv.DictReader(f))) == 5
    pd = pytest.importorskip("pandas")
    df = s.to_dataframe("logs")
    assert isinstance(df, pd.DataFrame) and len(df) == 6


def test_parquet_when_pyarrow_is_installed(dask_run):
    pq = pytest.importorskip("pyarrow.parquet")
    t = pq.read_table(dask_run.paths["parquet"])
    assert t.num_rows == 6 and t.column_names == [c[0] for c in SUMMARY_COLUMNS]
    assert t.column("status").to_pylist() == [r["status"] for r in dask_run.rows]
    assert pq.read_table(dask_run.paths["trends_parquet"]).num_rows == 5


def test_rerun_skips_finished_logs(dask_run, fleet_dir, client):
    out = fleet_dir / "out_dask"
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")
              if p.name != "fleet_summary.h5"}
    again = run_fleet([fleet_dir / "logs"], fleet_dir / "pack.dbc", fleet_dir / "pack.toml", out,
                      client=client)
    assert [r["status"] for r in again.rows] == [
        "failed" if r["status"] == "failed" else "reused" for r in dask_run.rows]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")
            if p.name != "fleet_summary.h5"} == mtimes
    for a, b in zip(again.rows, dask_run.rows):
        assert _same_row(a, b)


def _same_row(a: dict, b: dict) -> bool:
    for k in a:
        if k in VOLATILE:
            continue
        x, y = a[k], b[k]
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y:
            return False
    return True


def test_results_equal_a_serial_run(dask_run, serial_run):
    assert len(dask_run.rows) == len(serial_run.rows)
    for a, b in zip(dask_run.rows, serial_run.rows):
        assert a["log"] == b["log"] and a["status"] == b["status"]
        assert _same_row(a, b), (a, b)
        if a["status"] == "failed":
            assert a["error"] == b["error"]
            continue
        ra, rb = store.load(a["result"]), store.load(b["result"])
        assert sorted(ra.datasets) == sorted(rb.datasets)
        for k in ra.datasets:
            assert np.array_equal(ra[k], rb[k], equal_nan=ra[k].dtype.kind == "f"), k
        assert ra.group_attrs == rb.group_attrs
    assert len(dask_run.trends) == len(serial_run.trends)
    for a, b in zip(dask_run.trends, serial_run.trends):
        assert _same_row(a, b)


def test_changed_inputs_are_analysed_again(fleet_dir, tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(fleet_dir / "logs" / "depot1", logs)
    dbc, lay = fleet_dir / "pack.dbc", tmp_path / "pack.toml"
    shutil.copy(fleet_dir / "pack.toml", lay)
    out = tmp_path / "out"
    first = run_fleet([logs], dbc, lay, out, workers=0)
    assert [r["status"] for r in first.rows] == ["analysed"] * 3
    # a changed log is analysed again, the others are reused
    shutil.copy(fleet_dir / "logs" / "depot2" / "busB_0001.blf", logs / "busB_0001.blf")
    second = run_fleet([logs], dbc, lay, out, workers=0)
    assert [r["status"] for r in second.rows] == ["reused", "reused", "analysed"]
    # another method, or a changed layout, invalidates every result
    assert [r["status"] for r in run_fleet([logs], dbc, lay, out, workers=0,
                                           method="coulomb").rows] == ["analysed"] * 3
    lay.write_text(lay.read_text() + "\n# edited\n")
    assert [r["status"] for r in run_fleet([logs], dbc, lay, out, workers=0,
                                           method="coulomb").rows] == ["analysed"] * 3
    assert [r["status"] for r in run_fleet([logs], dbc, lay, out, workers=0, method="coulomb",
                                           force=True).rows] == ["analysed"] * 3


def test_unexpected_exception_is_recorded(fleet_dir, tmp_path, monkeypatch):
    import packbms.analysis

    def boom(*a, **k):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(packbms.analysis, "analyze", boom)
    run = run_fleet([fleet_dir / "logs" / "depot1" / "busA_0001.blf"], fleet_dir / "pack.dbc",
                    fleet_dir / "pack.toml", tmp_path, workers=0)
    (row,) = run.rows
    assert row["status"] == "failed" and row["error_type"] == "ZeroDivisionError"
    assert row["error"].startswith("ZeroDivisionError: simulated bug (at test_fleet.py:")


def test_progress_bar_on_stderr(fleet_dir, tmp_path, capsys):
    run_fleet([fleet_dir / "logs" / "depot2"], fleet_dir / "pack.dbc", fleet_dir / "pack.toml",
              tmp_path, workers=0, progress=True)
    err = capsys.readouterr().err
    assert "fleet" in err and "3/3" in err and "failed=1" in err and "left=0" in err
    run_fleet([fleet_dir / "logs" / "depot2"], fleet_dir / "pack.dbc", fleet_dir / "pack.toml",
              tmp_path, workers=0, progress=None)           # not a TTY under pytest: silent
    assert capsys.readouterr().err == ""


def test_naming_and_pack_id_rules(tmp_path):
    assert result_name("/a/x/drive.blf") != result_name("/a/y/drive.blf")
    assert result_name("/a/x/drive.blf").startswith("drive-")
    assert result_name("/a/x/my drive.asc.gz").startswith("my_drive-")
    assert pack_id_for("/f/VAN-12_2026-03-04T08:00:00.blf") == "VAN-12"
    assert pack_id_for("/f/VAN-12.blf") == "VAN-12"
    assert pack_id_for("/f/my_pack_0003.trc") == "my_pack"
    assert pack_id_for("/f/drive_96s.blf") == "drive_96s"
    assert pack_id_for("/f/pack3.blf") == "pack3"
    assert pack_id_for("/fleet/VIN42/d1.blf", r"/(VIN\d+)/") == "VIN42"
    assert pack_id_for("/fleet/VIN42/d1.blf", r"/(?P<pack>VIN\d+)/") == "VIN42"
    assert pack_id_for("/fleet/x/bus9_1.blf", r"/(VIN\d+)/") == "bus9"     # no match: default
    with pytest.raises(PackBMSError, match="no such file"):
        discover_logs([tmp_path / "missing"])
    with pytest.raises(PackBMSError, match="no log found"):
        discover_logs([tmp_path])


def test_layout_rule_and_bad_inputs(fleet_dir, tmp_path):
    from packbms.fleet import pack_id_rule_from_layout

    assert pack_id_rule_from_layout("[fleet]\npack_id_regex = 'depot(\\d)'\n") == "depot(\\d)"
    assert pack_id_rule_from_layout("[pack]\ncells_in_series = 2\n") is None
    logs = [fleet_dir / "logs" / "depot1" / "busA_0001.blf"]
    run = run_fleet(logs, fleet_dir / "pack.dbc", fleet_dir / "pack.toml", tmp_path, workers=0,
                    pack_id_regex=r"(depot\d)")
    assert run.rows[0]["pack_id"] == "depot1"
    with pytest.raises(PackBMSError, match="not a valid regular expression"):
        run_fleet(logs, fleet_dir / "pack.dbc", fleet_dir / "pack.toml", tmp_path, workers=0,
                  pack_id_regex="(")
    with pytest.raises(PackBMSError):
        run_fleet(logs, fleet_dir / "missing.dbc", fleet_dir / "pack.toml", tmp_path, workers=0)
    with pytest.raises(PackBMSError, match="unknown method"):
        run_fleet(logs, fleet_dir / "pack.dbc", fleet_dir / "pack.toml", tmp_path, method="ukf")


def test_missing_dask_names_the_extra(fleet_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    rc = main(["fleet", str(fleet_dir / "logs" / "depot1"), "--dbc", str(fleet_dir / "pack.dbc"),
               "--layout", str(fleet_dir / "pack.toml"), "--out", str(tmp_path)])
    assert rc == 2
    assert "pip install 'packbms[fleet]'" in capsys.readouterr().err


def test_cli_default_local_cluster(fleet_dir, tmp_path, capsys):
    rc = main(["fleet", str(fleet_dir / "logs"), "--dbc", str(fleet_dir / "pack.dbc"),
               "--layout", str(fleet_dir / "pack.toml"), "--out", str(tmp_path / "o"),
               "--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "6 logs" in out and "5 analysed" in out and "1 failed" in out
    assert "busD_0001.blf" in out and "fleet_summary.csv" in out
    assert len(list((tmp_path / "o").glob("*.h5"))) == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs) -> None:
    """Terminate the processes this test started, and their children, by pid."""
    import psutil

    for p in procs:
        try:
            kids = psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        for k in kids:
            try:
                k.wait(5)
            except psutil.TimeoutExpired:
                k.kill()
            except psutil.NoSuchProcess:
                pass


def test_external_scheduler_and_worker(fleet_dir, tmp_path):
    dask_exe = VENV_BIN / "dask"
    if not dask_exe.exists():
        pytest.skip("the dask command is not installed beside this Python")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    # every server on loopback: the scheduler's and the worker's HTTP servers default to
    # all interfaces, so they get a free loopback port too
    http = ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    procs = []
    logs = tmp_path / "sched.log"
    try:
        with open(logs, "w") as log:
            procs.append(subprocess.Popen(
                [str(dask_exe), "scheduler", "--host", "127.0.0.1", "--port", str(port), *http],
                stdout=log, stderr=subprocess.STDOUT))
            procs.append(subprocess.Popen(
                [str(dask_exe), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--nworkers", "1", *http], stdout=log, stderr=subprocess.STDOUT))
        _wait_for_worker(address, procs, logs)
        out = tmp_path / "out"
        r = subprocess.run([str(VENV_BIN / "packbms"), "fleet", str(fleet_dir / "logs"),
                            "--dbc", str(fleet_dir / "pack.dbc"), "--layout",
                            str(fleet_dir / "pack.toml"), "--out", str(out), "--scheduler",
                            address], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "5 analysed" in r.stdout and "1 failed" in r.stdout
        s = read_summary(out)
        assert sorted(s.logs["status"]) == ["analysed"] * 5 + ["failed"]
    finally:
        _stop(procs)
    assert all(p.poll() is not None for p in procs)


def _wait_for_worker(address, procs, log_path, timeout_s: float = 40.0) -> None:
    from dask.distributed import Client

    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if any(p.poll() is not None for p in procs):
            pytest.fail(f"dask scheduler/worker exited:\n{log_path.read_text()[-3000:]}")
        try:
            with Client(address, timeout="2s") as c:
                if c.scheduler_info()["workers"]:
                    return
        except (OSError, TimeoutError):
            pass
        time.sleep(0.3)
    pytest.fail(f"no dask worker after {timeout_s} s:\n{log_path.read_text()[-3000:]}")
