"""``packbms decode``: signals exported to HDF5 (and Parquet), checked against cantools."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

from conftest import REALDATA
from packbms._data import data_dir
from packbms.cli import main
from packbms.dbc import load_database
from packbms.io import read_log

DATA = data_dir()
BLF = DATA / "drive_96s.blf"
DBC = DATA / "pack96.dbc"
CSS = REALDATA / "css-electronics-canedge-mf4"


def need(path):
    if not path.exists():
        pytest.skip(f"real data not found: {path}")
    return path


def rows_of(frames, frame_id):
    """Row of each frame within its message's datasets (log order)."""
    idx = np.flatnonzero(frames.arbitration_id == frame_id)
    return {int(i): r for r, i in enumerate(idx)}


@pytest.fixture(scope="module")
def drive_h5(tmp_path_factory):
    out = tmp_path_factory.mktemp("decode") / "signals.h5"
    assert main(["decode", str(BLF), "--dbc", str(DBC), "--out", str(out), "--quiet",
                 "--chunk-frames", "150000"]) == 0
    return out


def test_decode_drive_matches_cantools(drive_h5):
    frames = read_log(BLF)
    db = load_database(DBC)
    with h5py.File(drive_h5) as f:
        assert f.attrs["schema"] == "packbms-signals" and f.attrs["schema_version"] == 1
        assert f.attrs["frames_decoded"] == len(frames)
        assert set(f["signals"]) == {m.name for m in db.messages}
        for m in db.messages:
            g = f["signals"][m.name]
            assert g.attrs["frame_id"] == m.frame_id
            n = int((frames.arbitration_id == m.frame_id).sum())
            assert g["timestamps"].shape == (n,) and g["timestamps"].compression == "gzip"
            for s in m.signals:
                assert g[s.name].shape == (n,)
                assert g[s.name].attrs["unit"] == (s.unit or "")
        assert f["signals/BMS_PackStatus/BMS_PackCurrent"].attrs["unit"] == "A"
        assert f["signals/BMS_CellVoltages/V1"].attrs["multiplexed"]
        # a seeded sample of frames, decoded by cantools one by one
        rng = np.random.default_rng(5)
        rows = {m.frame_id: rows_of(frames, m.frame_id) for m in db.messages}
        for i in rng.choice(len(frames), 300, replace=False):
            fid = int(frames.arbitration_id[i])
            msg = db.get_message_by_frame_id(fid)
            g = f["signals"][msg.name]
            r = rows[fid][int(i)]
            assert g["timestamps"][r] == frames.timestamp[i]
            theirs = msg.decode(bytes(frames.data[i, :frames.dlc[i]]), decode_choices=False)
            for s in msg.signals:
                v = g[s.name][r]
                if s.name in theirs:
                    assert v == theirs[s.name], (msg.name, s.name)
                else:
                    assert np.isnan(v)


def test_chunking_does_not_change_the_file(drive_h5, tmp_path):
    one = tmp_path / "one.h5"
    assert main(["decode", str(BLF), "--dbc", str(DBC), "--out", str(one), "--quiet",
                 "--compression", "lzf", "--messages", "BMS_CellVoltages",
                 "BMS_PackStatus"]) == 0
    with h5py.File(drive_h5) as a, h5py.File(one) as b:
        assert set(b["signals"]) == {"BMS_CellVoltages", "BMS_PackStatus"}
        assert b["signals/BMS_PackStatus/timestamps"].compression == "lzf"
        for name in b["signals"]:
            for ds in b["signals"][name]:
                np.testing.assert_array_equal(a["signals"][name][ds][:],
                                              b["signals"][name][ds][:])


def test_decode_uds_isotp_kona(tmp_path, capsys):
    log = need(CSS / "kona-ev_uds_17BD1DB7_00000170.MF4")
    out = tmp_path / "kona.h5"
    assert main(["decode", str(log), "--dbc", str(CSS / "tp_uds.dbc"), "--out", str(out),
                 "--isotp", "auto", "--chunk-frames", "500"]) == 0
    assert "270 messages reassembled" in capsys.readouterr().out
    with h5py.File(out) as f:
        soc = f["signals/Battery/M_SID_0x220101_StateOfChargeBMS"][:]
        assert f["signals/Battery"].attrs["isotp"]
        assert soc.shape == (120,) and np.all(soc == 50.0)
        assert f.attrs["isotp_messages"] == 270 and f.attrs["isotp_aborted"] == 29
    # explicit pairs (the requests are not in this log) give the same answer
    out2 = tmp_path / "kona2.h5"
    assert main(["decode", str(log), "--dbc", str(CSS / "tp_uds.dbc"), "--out", str(out2),
                 "--isotp", "7E4:7EC", "--isotp", "7B3:7BB", "--quiet"]) == 0
    with h5py.File(out2) as f:
        np.testing.assert_array_equal(
            f["signals/Battery/M_SID_0x220101_StateOfChargeBMS"][:], soc)


def test_decode_j1939_truck(tmp_path):
    from cantools import j1939

    log = need(CSS / "j1939-truck_00000001.MF4")
    dbc = CSS / "CSS-Electronics-SAE-J1939-DEMO.dbc"
    out = tmp_path / "truck.h5"
    assert main(["decode", str(log), "--dbc", str(dbc), "--out", str(out), "--quiet"]) == 0
    frames = read_log(log)
    db = load_database(dbc)
    eec1 = db.get_message_by_name("EEC1")
    pgn = j1939.pgn_from_frame_id(eec1.frame_id)
    ext = np.flatnonzero(frames.is_extended)
    ids = [f for f in np.unique(frames.arbitration_id[ext])
           if j1939.pgn_from_frame_id(int(f)) == pgn]
    idx = ext[np.isin(frames.arbitration_id[ext], ids)]
    with h5py.File(out) as f:
        g = f["signals/EEC1"]
        assert g.attrs["j1939"] and g["EngineSpeed"].shape == (len(idx),)
        for r in range(0, len(idx), 97):
            i = idx[r]
            theirs = eec1.decode(bytes(frames.data[i, :8]), decode_choices=False)
            assert g["EngineSpeed"][r] == theirs["EngineSpeed"]
    # --no-j1939: exact ids only, nothing matches
    assert main(["decode", str(log), "--dbc", str(dbc), "--out", str(out), "--quiet",
                 "--no-j1939"]) == 0
    with h5py.File(out) as f:
        assert f["signals/EEC1/EngineSpeed"].shape == (0,)
        assert f.attrs["frames_unknown_id"] == len(frames)


def test_parquet_output(drive_h5, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "signals.parquet"
    assert main(["decode", str(BLF), "--dbc", str(DBC), "--out", str(out), "--quiet",
                 "--chunk-frames", "150000"]) == 0
    t = pq.read_table(out)
    msg = t.column("message").to_numpy(zero_copy_only=False).astype(str)
    ts = t.column("timestamp").to_numpy()
    with h5py.File(drive_h5) as f:
        for name in f["signals"]:
            sel = msg == name
            np.testing.assert_array_equal(np.sort(ts[sel]),
                                          np.sort(f["signals"][name]["timestamps"][:]))
            for sig in f["signals"][name]:
                if sig == "timestamps":
                    continue
                col = t.column(f"{name}.{sig}").to_numpy(zero_copy_only=False)
                want = f["signals"][name][sig][:]
                order = np.argsort(ts[sel], kind="stable")
                np.testing.assert_array_equal(col[sel][order],
                                              want[np.argsort(f["signals"][name]["timestamps"]
                                                              [:], kind="stable")])
            assert t.column(f"{name}.{next(iter(f['signals'][name]))}").null_count >= 0


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "signals.parquet"
    assert main(["decode", str(BLF), "--dbc", str(DBC), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pip install pyarrow" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_user_errors_exit_2_and_leave_no_file(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert main(["decode", str(BLF), "--dbc", str(DBC), "--out", str(out)]) == 2
    assert "unknown output format" in capsys.readouterr().err
    out = tmp_path / "x.h5"
    assert main(["decode", str(BLF), "--dbc", str(DBC), "--out", str(out),
                 "--messages", "BMS_PackStatuss"]) == 2
    assert "BMS_PackStatus" in capsys.readouterr().err
    assert main(["decode", str(BLF), "--dbc", str(DBC), "--out", str(out),
                 "--isotp", "7E4"]) == 2
    assert "REQUEST:RESPONSE" in capsys.readouterr().err
    # a log that breaks half way: no output under the final name, no temporary left behind
    cut = tmp_path / "cut.blf"
    cut.write_bytes(BLF.read_bytes()[:len(BLF.read_bytes()) // 2])
    assert main(["decode", str(cut), "--dbc", str(DBC), "--out", str(out)]) == 2
    assert "cut.blf" in capsys.readouterr().err
    assert list(tmp_path.glob("*x.h5*")) == []


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["decode", "--help"])
    assert e.value.code == 0 and "--isotp" in capsys.readouterr().out
