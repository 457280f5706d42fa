"""The packbms command end to end: analyze on the bundled drive, errors, help."""

import subprocess
import sys

import numpy as np
import pytest

from packbms import store
from packbms._data import data_dir
from packbms.cli import main
from packbms.simulate import load_truth

DATA = data_dir()
ARGS = [str(DATA / "drive_96s.blf"), "--dbc", str(DATA / "pack96.dbc"), "--layout",
        str(DATA / "pack96.toml")]


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "x.h5"
    assert main(["analyze", *ARGS, "--out", str(out), "--quiet"]) == 0
    return store.load(out)


def test_analyze_writes_schema(analyzed):
    res = analyzed
    T = len(res["/time"])
    assert res["/pack/current"].shape == (T,)
    assert res["/cells/voltage"].shape == (T, 96)
    assert T >= 20 * 60 * 10 - 1                      # >= 20 min at the default 0.1 s rows
    assert np.all(np.diff(res["/time"]) > 0.05)
    assert res.attrs["source_sha256"] and res.attrs["dbc_sha256"] and "[pack]" in res.attrs["layout"]
    assert np.isfinite(res.dataset_attrs["/time"]["t0_unix"])


def test_analyze_matches_truth(analyzed):
    """Aligned cell voltages equal the simulator's truth within quantisation, noise and hold."""
    res = analyzed
    truth = load_truth(DATA / "drive_96s.truth.h5")
    t0 = res.dataset_attrs["/time"]["t0_unix"]
    t_rel = truth.time_s - (t0 - truth.t0_unix)
    ok_t = (t_rel >= 1.0) & (t_rel <= res["/time"][-1])
    idx = np.searchsorted(res["/time"], t_rel[ok_t], side="right") - 1
    err = res["/cells/voltage"][idx] - truth.voltage_v[ok_t]
    assert np.isfinite(err).mean() > 0.999
    err = err[np.isfinite(err)]
    assert np.sqrt(np.mean(err ** 2)) < 3e-3         # noise ~1-2 mV + 1 mV steps + hold delay
    # at rest the hold delay does not matter: only noise and quantisation remain
    rest = np.zeros(ok_t.sum(), bool)
    for a, b in truth.rest_windows(min_s=300):
        rest |= (truth.time_s[ok_t] > a + 60) & (truth.time_s[ok_t] < b)
    rest_err = (res["/cells/voltage"][idx] - truth.voltage_v[ok_t])[rest]
    assert rest.any() and np.abs(rest_err).max() < 10e-3
    assert np.sqrt(np.mean(rest_err ** 2)) < 2.5e-3
    # the pack current flips to discharge-positive and follows the truth
    cur_err = res["/pack/current"][idx] - truth.current_a[ok_t]
    assert np.median(np.abs(cur_err)) < 1.0


def test_analyze_soc_and_balancing(analyzed):
    """The estimation outputs are stored per DESIGN.md and agree with the simulator's truth."""
    res = analyzed
    T = len(res["/time"])
    assert res["/cells/soc"].shape == res["/cells/soc_std"].shape == (T, 96)
    assert res["/pack/soc"].shape == (T,)
    assert res["/cells/capacity_ah"].shape == res["/cells/resistance_ohm"].shape == (96,)
    assert res.attrs["method"] == "smoother"          # auto: a 25-min drive fits in memory
    bal = res.group_attrs["/balancing"]
    assert bal["recoverable_capacity_ah"] > 0 and bal["passive_duration_h"] > 0
    assert res["/balancing/passive_bleed_ah"].shape == (96,)
    truth = load_truth(DATA / "drive_96s.truth.h5")
    t0 = res.dataset_attrs["/time"]["t0_unix"]
    t_rel = truth.time_s - (t0 - truth.t0_unix)
    late = (t_rel >= 600) & (t_rel <= res["/time"][-1])
    idx = np.searchsorted(res["/time"], t_rel[late], side="right") - 1
    err = res["/cells/soc"][idx] - truth.soc[late]
    assert np.sqrt(np.mean(err ** 2, axis=0)).max() < 0.015


def test_output_dt_zero_keeps_every_sample_and_charge(tmp_path):
    from packbms.analysis import analyze
    full = analyze(ARGS[0], ARGS[2], ARGS[4], method="none", output_dt_s=0.0).result
    dec = analyze(ARGS[0], ARGS[2], ARGS[4], method="none", output_dt_s=1.0).result
    assert len(full["/time"]) >= 20 * 60 * 50
    # the stored (bin-mean) current integrates to the same charge as every sample
    from packbms.analysis import output_rows
    t = full["/time"]
    rows = output_rows(t, 1.0)
    assert len(rows) == len(dec["/time"])
    # row k stands for [first sample of its bin, first sample of the next bin)
    edges = np.concatenate((t[np.concatenate(([0], rows[:-1] + 1))], [t[-1]]))
    q_dec = np.sum(dec["/pack/current"] * np.diff(edges))
    q_full = np.sum(full["/pack/current"][:-1] * np.diff(t))
    assert q_dec == pytest.approx(q_full, rel=1e-9)
    np.testing.assert_array_equal(dec["/cells/voltage"][-1], full["/cells/voltage"][-1])


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "packbms", *args], capture_output=True, text=True,
                          timeout=300)


def test_user_error_is_one_line_exit_2(tmp_path):
    r = run_cli("analyze", str(tmp_path / "missing.blf"), "--dbc", str(DATA / "pack96.dbc"),
                "--layout", str(DATA / "pack96.toml"), "--out", str(tmp_path / "o.h5"))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "missing.blf" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.h5").exists()


def test_debug_shows_traceback(tmp_path):
    r = run_cli("--debug", "analyze", str(tmp_path / "missing.blf"), "--dbc",
                str(DATA / "pack96.dbc"), "--layout", str(DATA / "pack96.toml"))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_layout_naming_missing_signal(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text((DATA / "pack96.toml").read_text().replace('"BMS_PackCurrent"',
                                                              '"BMS_PackCurent"'))
    assert main(["analyze", ARGS[0], "--dbc", ARGS[2], "--layout", str(bad),
                 "--out", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert "BMS_PackCurent" in err and "BMS_PackCurrent" in err and str(bad) in err


def test_log_without_current_frames(tmp_path, capsys):
    from packbms.io import read_log, write_log
    frames = read_log(DATA / "drive_96s.blf")
    keep = frames.take(slice(0, 20000))
    from packbms.dbc import compile_database, load_database
    cdb = compile_database(load_database(DATA / "pack96.dbc"))
    cur_id = cdb.database.get_message_by_name(
        next(m.name for m in cdb.database.messages
             if any(s.name == "BMS_PackCurrent" for s in m.signals))).frame_id
    log = tmp_path / "nocurrent.blf"
    write_log(log, keep.take(keep.arbitration_id != cur_id))
    assert main(["analyze", str(log), "--dbc", ARGS[2], "--layout", ARGS[4],
                 "--out", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert "nocurrent.blf" in err and "no frame carries the current signal" in err


def test_bad_dbc(tmp_path, capsys):
    bad = tmp_path / "bad.dbc"
    bad.write_text("BO_ this is not a dbc\n")
    assert main(["analyze", ARGS[0], "--dbc", str(bad), "--layout", ARGS[4],
                 "--out", str(tmp_path / "o.h5")]) == 2
    assert "bad.dbc" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["analyze", "simulate", "demo"])
def test_help_everywhere(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: packbms " + cmd in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("packbms ")


def test_analyze_fit_prints_and_stores_quality(tmp_path, capsys):
    out = tmp_path / "fit.h5"
    assert main(["analyze", *ARGS, "--out", str(out), "--fit"]) == 0
    text = capsys.readouterr().out
    assert "cell 43: R0" in text and "cell 74: capacity" in text and "grade" in text
    assert "#96 " in text and "mOhm" in text                 # per-cell capacity and R0 printed
    res = store.load(out)
    truth = load_truth(DATA / "drive_96s.truth.h5")
    cap = res["/cells/capacity_ah"]
    assert np.abs(cap / truth.capacity_ah - 1).max() < 0.05
    assert np.median(np.abs(res["/cells/resistance_ohm"] / truth.r0_ohm - 1)) < 0.10
    assert "grade" in res.group_attrs["/quality"]
    assert res["/quality/flags"].shape == (96,)
    flagged = set(np.flatnonzero(res["/quality/flags"]) + 1)
    assert {43, 74} <= flagged


def test_auto_streams_the_ekf_when_the_drive_is_too_long():
    from packbms.analysis import analyze
    a = analyze(ARGS[0], ARGS[2], ARGS[4], chunk_frames=50_000, whole_drive_cell_samples=1_000_000)
    assert a.method == "ekf" and a.result.attrs["method"] == "ekf"
    b = analyze(ARGS[0], ARGS[2], ARGS[4], method="ekf", chunk_frames=50_000)
    np.testing.assert_array_equal(a.result["/cells/soc"], b.result["/cells/soc"])
