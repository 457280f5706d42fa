"""HDF5 result store: schema, round trip, atomic writes, refusing what it cannot read."""

import h5py
import numpy as np
import pytest

from packbms import store
from packbms.errors import StorageError


def sample_result(T=3000, S=5):
    rng = np.random.default_rng(1)
    return store.Result(
        datasets={"/time": np.arange(T) * 0.01, "/pack/current": rng.normal(size=T),
                  "/cells/voltage": 3.7 + rng.normal(0, 0.01, (T, S)),
                  "/cells/voltage_stale": rng.random((T, S)) < 0.1,
                  "/cells/capacity_ah": np.full(S, 60.0)},
        attrs={"source": "x.blf", "layout": "[pack]\n", "method": "ekf", "notes": {"a": 1}},
        group_attrs={"/balancing": {"usable_capacity_ah": 58.5}},
        dataset_attrs={"/time": {"t0_unix": 1.7e9}})


def test_round_trip(tmp_path):
    r = sample_result()
    path = store.save(r, tmp_path / "r.h5")
    back = store.load(path)
    for k, v in r.datasets.items():
        if v.ndim == 2 and v.dtype == np.float64:      # per-cell series are stored as float32
            assert back[k].dtype == np.float32
            np.testing.assert_allclose(back[k], v, rtol=1e-7)
        else:
            np.testing.assert_array_equal(back[k], v)
            assert back[k].dtype == v.dtype
    assert back.attrs["method"] == "ekf" and back.attrs["notes"] == {"a": 1}
    assert back.attrs["schema"] == store.SCHEMA
    assert back.group_attrs["/balancing"]["usable_capacity_ah"] == 58.5
    assert back.dataset_attrs["/time"]["t0_unix"] == 1.7e9
    with h5py.File(path) as f:
        assert f["/cells/voltage"].compression == "gzip"
        assert f["/cells/voltage"].chunks is not None
        assert f["/pack/current"].attrs["units"] == "A"
    assert list(tmp_path.iterdir()) == [path]        # no temporary left behind


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    r = sample_result()
    r.datasets["/bad"] = np.array([object()], dtype=object)   # h5py cannot store this
    with pytest.raises(Exception):
        store.save(r, tmp_path / "r.h5")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_failed_overwrite(tmp_path):
    path = store.save(sample_result(), tmp_path / "r.h5")
    bad = sample_result()
    bad.datasets["/bad"] = np.array([object()], dtype=object)
    with pytest.raises(Exception):
        store.save(bad, path)
    assert "/bad" not in store.load(path)


def test_refuses_foreign_and_newer_files(tmp_path):
    with pytest.raises(StorageError, match="not found"):
        store.load(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(StorageError, match="not an HDF5 file"):
        store.load(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(StorageError, match="not a packbms result"):
        store.load(tmp_path / "other.h5")
    path = store.save(sample_result(), tmp_path / "new.h5")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = store.SCHEMA_VERSION + 1
    with pytest.raises(StorageError, match="newer"):
        store.load(path)


def test_missing_dataset_message(tmp_path):
    back = store.load(store.save(sample_result(), tmp_path / "r.h5"))
    with pytest.raises(StorageError, match="/cells/soc"):
        back["/cells/soc"]


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_streamed_writer_equals_save(tmp_path, compression):
    r = sample_result()
    with store.ResultWriter(tmp_path / "s.h5", compression) as w:
        for a in range(0, 3000, 700):
            w.append({k: v[a:a + 700] for k, v in r.datasets.items() if len(v) == 3000})
        w.put("/cells/capacity_ah", r.datasets["/cells/capacity_ah"])
        w.attrs(r.attrs)
        w.attrs(r.group_attrs["/balancing"], "/balancing")
    a = store.load(tmp_path / "s.h5")
    b = store.load(store.save(r, tmp_path / "b.h5", compression))
    assert set(a.datasets) == set(b.datasets)
    for k in a.datasets:
        np.testing.assert_array_equal(a[k], b[k])
    assert a.group_attrs == b.group_attrs


def test_writer_aborts_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with store.ResultWriter(tmp_path / "s.h5") as w:
            w.append({"/time": np.arange(10.0)})
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        store.save(sample_result(), tmp_path / "no" / "r.h5")
