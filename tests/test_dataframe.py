"""Result -> pandas DataFrame (packbms.dataframes.to_dataframe; pandas optional)."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from packbms import store  # noqa: E402
from packbms.analysis import analyze  # noqa: E402
from packbms.dataframes import to_dataframe  # noqa: E402
from packbms.errors import PackBMSError  # noqa: E402
from packbms.simulate import SimConfig, simulate_pack, write_simulation  # noqa: E402


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("df")
    sim = simulate_pack(SimConfig(cells=6, segments="rest:10,urban:30"), seed=2)
    write_simulation(sim, d / "d.blf", dbc_path=d / "p.dbc", layout_path=d / "p.toml")
    analyze(d / "d.blf", d / "p.dbc", d / "p.toml", out=d / "d.h5")
    return store.load(d / "d.h5")


def test_pack_table(result):
    df = to_dataframe(result, "pack")
    assert df.index.name == "time_s"
    assert np.array_equal(df.index.to_numpy(), result["/time"])
    assert {"current", "voltage", "soc", "soc_min", "soc_max", "soc_mean"} <= set(df.columns)
    assert np.array_equal(df["current"].to_numpy(), result["/pack/current"])
    assert df.attrs["units"]["current"] == "A" and df.attrs["units"]["soc"] == "1"
    assert df.attrs["source"] == result.path


def test_cell_series_wide_and_long(result):
    soc = result["/cells/soc"]
    wide = to_dataframe(result, "cells/soc")
    assert list(wide.columns) == [f"cell_{i}" for i in range(1, 7)]
    assert np.array_equal(wide.to_numpy(), soc)
    long = to_dataframe(result, "/cells/soc", long=True)
    assert list(long.columns) == ["time_s", "cell", "soc"] and len(long) == soc.size
    back = long.pivot(index="time_s", columns="cell", values="soc")
    assert np.array_equal(back.to_numpy(), soc)
    temps = to_dataframe(result, "cells/temperature")
    assert temps.columns[0] == "sensor_1" and temps.shape == result["/cells/temperature"].shape


def test_absolute_time(result):
    df = to_dataframe(result, "pack", absolute_time=True)
    assert isinstance(df.index, pd.DatetimeIndex) and str(df.index.tz) == "UTC"
    t0 = result.dataset_attrs["/time"]["t0_unix"]
    assert df.index[0].timestamp() == pytest.approx(t0 + result["/time"][0], abs=1e-6)
    # resampling works as pandas users expect
    per_10s = to_dataframe(result, "cells/voltage", absolute_time=True).resample("10s").mean()
    assert len(per_10s) in (4, 5)
    no_abs = store.Result(dict(result.datasets), dict(result.attrs), dict(result.group_attrs),
                          {"/time": {"t0_unix": float("nan")}})
    with pytest.raises(PackBMSError, match="no absolute time"):
        to_dataframe(no_abs, "pack", absolute_time=True)


def test_per_cell_groups(result):
    cells = to_dataframe(result, "cells")
    assert cells.index.name == "cell" and list(cells.index) == list(range(1, 7))
    assert np.array_equal(cells["capacity_ah"].to_numpy(), result["/cells/capacity_ah"])
    assert cells.attrs["units"]["capacity_ah"] == "A.h"
    assert "soc" not in cells.columns                 # the [T, S] series are not per-cell rows
    bal = to_dataframe(result, "balancing")
    assert np.array_equal(bal["passive_bleed_ah"].to_numpy(),
                          result["/balancing/passive_bleed_ah"])
    assert bal.attrs["soc_spread"] == result.group_attrs["/balancing"]["soc_spread"]


def test_from_path_and_errors(result):
    df = to_dataframe(result.path, "cells/voltage")
    assert df.shape == result["/cells/voltage"].shape
    with pytest.raises(PackBMSError, match="cells/soc_std"):
        to_dataframe(result, "cells/socc")
    with pytest.raises(PackBMSError, match="no per-cell arrays under /quality"):
        to_dataframe(result, "quality")


def test_result_method_when_available(result):
    if not hasattr(store.Result, "to_dataframe"):
        pytest.skip("store.Result.to_dataframe is not wired in yet")
    a = result.to_dataframe("cells/soc")
    assert a.equals(to_dataframe(result, "cells/soc"))
