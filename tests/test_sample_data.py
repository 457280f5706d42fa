"""The bundled sample drive: it is what data/README.md says, and its command reproduces it."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
import pytest

from packbms.simulate import SEGMENT_KINDS, SimConfig, load_truth

DATA = Path(__file__).resolve().parents[1] / "data"
LOG = DATA / "drive_96s.blf"
TRUTH = DATA / "drive_96s.truth.h5"


def _readme_command() -> list[str]:
    """The regeneration command exactly as data/README.md prints it."""
    lines = [ln.strip() for ln in (DATA / "README.md").read_text().splitlines()]
    cmds = [ln for ln in lines if ln.startswith("packbms simulate ")]
    assert len(cmds) == 1, cmds
    return shlex.split(cmds[0])[2:]


def _run_cli(argv: list[str]) -> int:
    from packbms.commands import simulate as cmd

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cmd.add_subparser(sub)
    args = parser.parse_args(["simulate", *argv])
    return args.run(args)


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    argv = _readme_command()
    # write into the temporary folder instead of data/
    for opt, name in (("--out", "drive_96s.blf"), ("--truth", "drive_96s.truth.h5")):
        i = argv.index(opt)
        assert Path(argv[i + 1]).name == name
        argv[i + 1] = str(out / name)
    assert _run_cli([*argv, "--quiet"]) == 0
    return out / "drive_96s.blf", out / "drive_96s.truth.h5"


def test_sample_files_exist_and_are_small():
    assert LOG.stat().st_size < 10e6
    assert TRUTH.stat().st_size < 4e6


def test_sample_log_is_reproduced(regenerated):
    from packbms.io import read_log

    log, _ = regenerated
    a = read_log(LOG)
    b = read_log(log)
    assert len(a) == len(b) > 400_000
    for col in ("timestamp", "arbitration_id", "is_extended", "is_fd", "is_error", "dlc",
                "channel", "data"):
        np.testing.assert_array_equal(getattr(a, col), getattr(b, col), err_msg=col)
    # the BLF writer is deterministic too: the very same bytes
    assert LOG.read_bytes() == log.read_bytes()


def test_sample_truth_is_reproduced(regenerated):
    _, truth = regenerated
    a, b = load_truth(TRUTH), load_truth(truth)
    for name in ("time_s", "soc", "voltage_v", "temperature_c", "balancing", "current_a",
                 "pack_voltage_v", "charge_ah", "segment", "initial_soc", "sensor_cells"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.params == b.params and a.config == b.config and a.seed == b.seed


def test_sample_is_what_the_readme_describes():
    tr = load_truth(TRUTH)
    cfg = SimConfig.from_dict(tr.config)
    assert tr.n_cells == 96 and tr.params.chemistry.name == "nmc"
    assert tr.time_s[-1] >= 20 * 60
    rests = tr.rest_windows()
    assert rests[0][0] == 0.0 and rests[0][1] >= 30.0                 # starts at rest: OCV init
    assert any(b - a >= 600.0 for a, b in rests[1:])                    # a 10-minute rest
    assert SEGMENT_KINDS.index("charge") in tr.segment
    assert cfg.self_discharge_cells == (17,) and cfg.high_resistance_cells == (42,)
    assert cfg.weak_cells == (73,)
    assert tr.params.self_discharge_a[17] == 0.2
    assert tr.params.r0_ohm[42] == tr.params.r0_ohm.max()
    assert tr.params.capacity_ah[73] == tr.params.capacity_ah.min()
    assert tr.t0_unix == 1767254400.0


def test_sample_decodes_with_the_bundled_database_and_layout():
    from packbms.dbc import compile_database, decode, load_database
    from packbms.io import read_log
    from packbms.layout import load_layout

    db = load_database(DATA / "pack96.dbc")
    lay = load_layout(DATA / "pack96.toml", db)
    frames = read_log(LOG)
    st = decode(frames, compile_database(db))
    assert st.counts.decoded == len(frames)
    tr = load_truth(TRUTH)
    # spot check: the first cell-voltage frame of each group, during the initial rest,
    # reads the truth within noise and quantisation
    m = st.messages["BMS_CellVoltages"]
    g = m.values[:, m.column("CellGroup")].astype(int)
    t_rel = m.timestamps - tr.t0_unix
    for group in range(32):
        k = np.flatnonzero((g == group) & (t_rel > 10))[0]
        row = np.searchsorted(tr.time_s, t_rel[k]) - 1
        for slot in range(3):
            v = m.values[k, m.column(f"V{slot + 1}")]
            assert abs(v - tr.voltage_v[row, 3 * group + slot]) < 0.009
    t, cur = st.signal("BMS_PackCurrent")
    assert (lay.current_sign * cur).max() > 30 and (lay.current_sign * cur).min() < -25
