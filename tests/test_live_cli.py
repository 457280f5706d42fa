"""``packbms monitor`` and ``packbms replay`` end to end, in one process on a shared virtual
channel (python-can's virtual interface does not cross processes; nothing leaves this
process), plus the live view's rendering and the commands' errors."""

from __future__ import annotations

import io
import threading
import time
import uuid

import numpy as np
import pytest
from can.interfaces.virtual import channels

from packbms import store
from packbms.analysis import analyze
from packbms.cli import main
from packbms.commands.monitor import _Screen, render
from packbms.io import write_log
from packbms.live import PackMonitor, load_checkpoint, make_publish_dbc_text, \
    make_publish_layout_text
from packbms.simulate import SimConfig, simulate_pack

CELLS = 16


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    d = tmp_path_factory.mktemp("livecli")
    sim = simulate_pack(SimConfig(cells=CELLS, segments=(("rest", 30.0), ("urban", 120.0),
                                                         ("rest", 60.0))), seed=21)
    write_log(d / "drive.blf", sim.frames)
    (d / "pack.dbc").write_text(sim.dbc_text)
    (d / "publish.dbc").write_text(make_publish_dbc_text(CELLS))
    (d / "pack.toml").write_text(sim.layout_text + "\n" + make_publish_layout_text("publish.dbc"))
    return {"dir": d, "log": d / "drive.blf", "dbc": d / "pack.dbc", "layout": d / "pack.toml",
            "n_frames": len(sim.frames)}


def _run_pair(drive, ch: str, monitor_args: list[str], speed: str = "0"):
    """Run ``packbms monitor`` in a thread, then ``packbms replay`` onto the same virtual
    channel once the monitor listens; returns both exit codes."""
    codes = {}

    def monitor():
        codes["monitor"] = main(["monitor", "--interface", "virtual", "--channel", ch,
                                 "--dbc", str(drive["dbc"]), "--layout", str(drive["layout"]),
                                 "--exit-when-idle", "0.7", "--duration", "60",
                                 "--refresh", "0.2", *monitor_args])

    th = threading.Thread(target=monitor)
    th.start()
    t = time.monotonic()
    while ch not in channels and th.is_alive() and time.monotonic() - t < 30:
        time.sleep(0.005)
    codes["replay"] = main(["replay", str(drive["log"]), "--interface", "virtual",
                            "--channel", ch, "--speed", speed])
    th.join(60)
    assert not th.is_alive()
    return codes


def test_monitor_and_replay_end_to_end(drive, tmp_path, capsys):
    ch = f"packbms-cli-{uuid.uuid4().hex[:8]}"
    rec, ck = tmp_path / "live.h5", tmp_path / "soc.npz"
    before = set(threading.enumerate())
    codes = _run_pair(drive, ch, ["--publish", "--record", str(rec), "--checkpoint", str(ck)])
    out = capsys.readouterr().out
    assert codes == {"monitor": 0, "replay": 0}
    assert f"replayed {drive['n_frames']} frames" in out and "as fast as possible" in out
    # not a terminal: plain periodic lines, then the final view
    assert "t=" in out and "update=" in out and "\x1b[" not in out
    final = out[out.index("final:"):]
    assert "pack SoC" in final and f"{CELLS:4d} " in final
    assert "no stale cells" in final and "published" in final
    assert f"checkpoint: {ck} (new;" in final and f"recording: {rec}" in final
    # the recording's last row is the offline analysis of the same log (within 0.2 points)
    offline = analyze(drive["log"], drive["dbc"], drive["layout"], output_dt_s=0)
    res = store.load(rec)
    assert np.abs(res["/cells/soc"][-1] - offline.result["/cells/soc"][-1]).max() < 0.002
    saved = load_checkpoint(ck)
    assert saved.n_cells == CELLS
    # a second run on the same checkpoint: the replayed log restarts the bus clock, so the
    # SoC is resumed on a new time base; the recording grows
    rows = res["/cells/soc"].shape[0]
    codes = _run_pair(drive, ch, ["--record", str(rec), "--checkpoint", str(ck), "--quiet"],
                      speed="0")
    out = capsys.readouterr().out
    assert codes == {"monitor": 0, "replay": 0}
    assert "t=" not in out                       # --quiet: only the summary
    assert f"checkpoint: {ck} (rebased;" in out
    assert store.load(rec)["/cells/soc"].shape[0] > rows
    time.sleep(0.05)
    assert set(threading.enumerate()) <= before
    assert ch not in channels                    # every bus was shut down


def test_replay_paces_by_the_log(drive, capsys):
    """--speed 40 plays the 210 s drive in about 5 s; the monitor sees every frame."""
    ch = f"packbms-cli-{uuid.uuid4().hex[:8]}"
    t = time.monotonic()
    codes = _run_pair(drive, ch, ["--quiet", "--max-updates", "100000"], speed="40")
    wall = time.monotonic() - t
    out = capsys.readouterr().out
    assert codes == {"monitor": 0, "replay": 0}
    assert "speed 40" in out
    assert 210 / 40 * 0.95 < wall < 210 / 40 + 8
    assert f"frames {drive['n_frames']}" in out


def test_live_view_redraws_in_place(drive):
    mon = PackMonitor(None, drive["dbc"], drive["layout"])
    from packbms.io import read_log
    snap = mon.process(read_log(drive["log"]).take(slice(0, 3000)))
    lines = render(snap, mon.status(), columns=8, elapsed_s=3.0)
    assert len(lines) == 2 + CELLS // 8 + 1
    assert lines[1].startswith("pack SoC ")
    assert lines[2].split()[0] == "1" and "±" in lines[2]
    buf = io.StringIO()
    screen = _Screen(buf)
    screen.draw(lines)
    first = buf.getvalue()
    screen.draw(lines)
    second = buf.getvalue()[len(first):]
    assert not first.startswith("\x1b[")
    assert second.startswith(f"\x1b[{len(lines)}F") and second.endswith("\x1b[J")
    assert second.count("\x1b[K\n") == len(lines)


def test_command_errors_are_one_line(drive, capsys):
    args = ["--dbc", str(drive["dbc"]), "--layout", str(drive["layout"]), "--duration", "1"]
    assert main(["monitor", "--interface", "no_such_interface", "--channel", "x", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open CAN interface 'no_such_interface' channel 'x'")
    assert err.count("\n") == 1
    assert main(["replay", str(drive["dir"] / "missing.blf"), "--interface", "virtual",
                 "--channel", "x"]) == 2
    assert "missing.blf: log file not found" in capsys.readouterr().err
    assert main(["replay", str(drive["log"]), "--interface", "virtual", "--channel", "x",
                 "--speed", "-1"]) == 2
    assert "--speed must be >= 0" in capsys.readouterr().err
    assert main(["monitor", "--interface", "virtual", "--channel", "x", "--bus-option",
                 "bitrate", *args]) == 2
    assert "must look like KEY=VALUE" in capsys.readouterr().err
    bad = drive["dir"] / "bad.toml"
    bad.write_text(drive["layout"].read_text().replace('name = "PBMS_PackSoc"',
                                                       'name = "PBMS_PackSok"'))
    assert main(["monitor", "--interface", "virtual", "--channel", "x", "--dbc",
                 str(drive["dbc"]), "--layout", str(bad), "--publish", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "[publish] message 'PBMS_PackSok' is not in the publish database" in err
    assert "x" not in channels
    for cmd in ("monitor", "replay"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
    assert "--publish" in capsys.readouterr().out
