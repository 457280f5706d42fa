"""packbms report: PNG plots and the self-contained HTML page, for a result and a fleet run."""

from __future__ import annotations

import base64
import re
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from packbms import store  # noqa: E402
from packbms.analysis import analyze  # noqa: E402
from packbms.cli import main  # noqa: E402
from packbms.errors import PackBMSError  # noqa: E402
from packbms.fleet import run_fleet  # noqa: E402
from packbms.report import (FLEET_PLOTS, REPORT_PLOTS, render_fleet_report,  # noqa: E402
                            render_report)
from packbms.simulate import SimConfig, simulate_pack, write_simulation  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    cfg = SimConfig(cells=12, segments="rest:30,urban:90,rest:30,charge:30",
                    weak_cells=(3,), high_resistance_cells=(8,))
    sim = simulate_pack(cfg, seed=7)
    write_simulation(sim, d / "drive_1.blf", dbc_path=d / "pack.dbc",
                     layout_path=d / "pack.toml")
    a = analyze(d / "drive_1.blf", d / "pack.dbc", d / "pack.toml", out=d / "drive_1.h5")
    return d, sim, a


def _embedded(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _pixels(path):
    from matplotlib.image import imread
    return imread(path)


def test_report_files_and_embedding(drive, tmp_path):
    d, _, _ = drive
    rep = render_report(d / "drive_1.h5", tmp_path / "rep")
    assert set(rep.plots) == set(REPORT_PLOTS)
    html = rep.html.read_text(encoding="utf-8")
    images = _embedded(html)
    # every plot is embedded, byte for byte, in page order, and nothing is referenced outside
    assert images == [rep.plots[k].read_bytes() for k in REPORT_PLOTS]
    assert not re.search(r'(src|href)="(?!data:)', html)
    for name, path in rep.plots.items():
        w, h = _png_size(path.read_bytes())
        assert 700 <= w <= 1300 and 400 <= h <= 1000, (name, w, h)
        px = _pixels(path)
        assert px[..., :3].std() > 0.05                  # not a blank canvas
    assert "drive_1.blf" in html and "nominal" in html
    assert rep.notes and "no /quality group" in rep.notes[0]


def test_report_facts_match_the_result(drive, tmp_path):
    d, _, a = drive
    rep = render_report(a.result, tmp_path)
    html = rep.html.read_text(encoding="utf-8")
    spread = 100 * a.result.group_attrs["/balancing"]["soc_spread"]
    assert f"{spread:.2f} points" in html
    assert f"{a.result['/time'][-1] / 60:.1f} min" in html
    assert "<th>cells in series</th><td>12</td>" in html


def test_heatmap_colours_follow_the_soc(drive, tmp_path):
    """The heat map's top panel is darker (viridis: low) where a cell's SoC is lower."""
    d, _, a = drive
    rep = render_report(a.result, tmp_path)
    px = _pixels(rep.plots["soc_heatmap.png"])[..., :3]
    soc_end = a.result["/cells/soc"][-1]
    lo, hi = int(np.argmin(soc_end)), int(np.argmax(soc_end))
    # locate the top image: the rows of the figure's upper half that are mostly non-white
    h, w = px.shape[:2]
    top = px[: h // 2]
    rows = np.flatnonzero((top.sum(axis=2) < 2.7).mean(axis=1) > 0.6)
    cols = np.flatnonzero((top[rows].sum(axis=2) < 2.7).mean(axis=0) > 0.9)
    r0, r1, c1 = rows[0], rows[-1], cols[cols < 0.85 * w][-1]
    n = a.result.n_cells

    def brightness(cell):
        y = int(r0 + (cell + 0.5) * (r1 - r0) / n)
        return top[y, c1 - 3].sum()

    assert brightness(hi) > brightness(lo) + 0.3


def test_quality_group_is_used(drive, tmp_path):
    d, sim, a = drive
    res = store.load(d / "drive_1.h5")
    res.datasets["/quality/capacity_ah"] = sim.truth.capacity_ah
    res.datasets["/quality/r0_ohm"] = sim.truth.r0_ohm
    res.datasets["/quality/outlier"] = np.isin(np.arange(12), [3, 8])
    res.group_attrs["/quality"] = {"grade": "C"}
    rep = render_report(res, tmp_path)
    html = rep.html.read_text(encoding="utf-8")
    assert "<th>grade</th><td>C</td>" in html and "<th>weak cells</th><td>4 9</td>" in html
    assert "(quality)" in html and not rep.notes
    cap = sim.truth.capacity_ah
    assert f"{cap.min():.2f} Ah" in html


def test_result_without_soc_still_renders(drive, tmp_path):
    d, _, _ = drive
    a = analyze(d / "drive_1.blf", d / "pack.dbc", d / "pack.toml", method="none")
    rep = render_report(a.result, tmp_path)
    assert len(_embedded(rep.html.read_text(encoding="utf-8"))) == len(REPORT_PLOTS)
    assert any("method 'none'" in n for n in rep.notes)


def test_cli_report(drive, tmp_path, capsys, monkeypatch):
    d, _, _ = drive
    assert main(["report", str(d / "drive_1.h5"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").exists()
    assert "4 plots embedded" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(d / "drive_1.h5"), "--quiet"]) == 0
    assert (tmp_path / "drive_1_report" / "pack.png").exists()
    assert main(["report"]) == 2
    assert "either a RESULT.h5 or --fleet" in capsys.readouterr().err
    assert main(["report", str(d / "pack.toml")]) == 2
    assert "pack.toml" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(drive, tmp_path, monkeypatch, capsys):
    d, _, _ = drive
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(d / "drive_1.h5"), "--out", str(tmp_path)]) == 2
    assert "pip install 'packbms[plot]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(PackBMSError, match=r"packbms\[plot\]"):
        render_report(d / "drive_1.h5", tmp_path)


def test_fleet_report(drive, tmp_path, capsys):
    d, _, _ = drive
    logs = tmp_path / "logs"
    logs.mkdir()
    for k in range(3):
        cfg = SimConfig(cells=12, segments="rest:20,urban:40,rest:20", t0_unix=1.767e9 + k * 3600)
        write_simulation(simulate_pack(cfg, seed=20 + k), logs / f"van1_{k:03d}.blf")
    (logs / "van2_000.blf").write_bytes(b"LOGG" + bytes(100))
    run_fleet([logs], d / "pack.dbc", d / "pack.toml", tmp_path / "out", workers=0)
    rep = render_fleet_report(tmp_path / "out" / "fleet_summary.h5", tmp_path / "fr")
    assert set(rep.plots) == set(FLEET_PLOTS)
    html = rep.html.read_text(encoding="utf-8")
    assert _embedded(html) == [rep.plots[k].read_bytes() for k in FLEET_PLOTS]
    assert "Failed logs (1)" in html and "van2_000.blf" in html
    assert "<th>analysed / reused / failed</th><td>3 / 0 / 1</td>" in html
    assert main(["report", "--fleet", str(tmp_path / "out"), "--out", str(tmp_path / "f2")]) == 0
    assert (tmp_path / "f2" / "fleet_report.html").exists()
    with pytest.raises(PackBMSError, match="not a packbms fleet summary"):
        render_fleet_report(d / "drive_1.h5", tmp_path / "x")
