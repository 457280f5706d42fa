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


# -- the gzip writer: chunks compressed off the caller's thread, written directly ---------------

import threading  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DTYPES = ["?", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8",
          ">f8", ">i4", ">f4"]
HAVE_LIBDEFLATE = store._libdeflate() is not None
ENGINES = ["zlib"] + (["libdeflate"] if HAVE_LIBDEFLATE else [])


def random_rows(rng, dtype, shape):
    """Values of every bit pattern (NaN payloads, infinities, subnormals), valid booleans."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.3
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def stored_bytes(arr):
    """What the file must give back: the stored dtype (native order), bit for bit."""
    with np.errstate(over="ignore"):                # float64 bit patterns beyond float32
        want = store._stored(arr)
    return want.astype(want.dtype.newbyteorder("="), copy=False)


def assert_reads_back(path, data):
    with h5py.File(path, "r") as f:
        for key, arr in data.items():
            want = stored_bytes(arr)
            got = f[key][()]
            assert got.dtype == want.dtype and got.shape == want.shape, key
            assert got.tobytes() == want.tobytes(), key


def writer_threads():
    return [t for t in threading.enumerate() if t.name.startswith("packbms-store")]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtypes=st.lists(st.sampled_from(DTYPES), min_size=1, max_size=3),
       width=st.sampled_from([None, 1, 3, 7]), rows=st.integers(0, 60),
       cuts=st.lists(st.integers(0, 60), max_size=6), chunk=st.integers(1, 9),
       engine=st.sampled_from(ENGINES), threads=st.sampled_from([0, 1, 2]),
       seed=st.integers(0, 2**32 - 1))
def test_direct_chunks_round_trip(tmp_path_factory, dtypes, width, rows, cuts, chunk, engine,
                                  threads, seed):
    rng = np.random.default_rng(seed)
    shape = (rows,) if width is None else (rows, width)
    data = {f"/g/d{i}_{np.dtype(d).str[1:]}": random_rows(rng, d, shape)
            for i, d in enumerate(dtypes)}
    edges = [0] + sorted(min(c, rows) for c in cuts) + [rows]
    path = tmp_path_factory.mktemp("direct") / "r.h5"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "_chunk_rows", lambda row_elems: chunk)
        with np.errstate(over="ignore"), store.ResultWriter(path, engine=engine, threads=threads,
                                max_pending_bytes=64) as w:
            assert w.engine == engine
            for a, b in zip(edges[:-1], edges[1:]):
                w.append({k: v[a:b] for k, v in data.items()})
                assert w._pending_bytes <= max(64, chunk * 8 * (width or 1))
    assert_reads_back(path, data)
    with h5py.File(path, "r") as f:
        for key in data:
            ds = f[key]
            assert ds.compression == "gzip" and ds.shuffle and ds.compression_opts == 1
            assert ds.chunks[0] == chunk
            assert ds.id.get_num_chunks() == -(-rows // chunk)      # each chunk written once


def test_chunks_are_standard_shuffle_deflate(tmp_path):
    """Every stored chunk is the zlib stream of the byte-shuffled full chunk, filter mask 0:
    what HDF5's own shuffle + deflate filters would store, so any HDF5 reader reads it."""
    rng = np.random.default_rng(3)
    data = {"/cells/soc": rng.random((5000, 96)).astype(np.float32),
            "/cells/balancing": rng.random((5000, 96)) < 0.1,
            "/time": np.arange(70000) * 0.1}
    for engine in ENGINES:
        path = tmp_path / f"{engine}.h5"
        with store.ResultWriter(path, engine=engine) as w:
            for a in range(0, 5000, 1300):
                w.append({k: v[a:a + 1300] for k, v in data.items() if k != "/time"})
            w.append({"/time": data["/time"]})
        with h5py.File(path, "r") as f:
            for key, arr in data.items():
                ds = f[key]
                rows = ds.chunks[0]
                assert ds.id.get_num_chunks() == -(-len(arr) // rows)
                for k in range(ds.id.get_num_chunks()):
                    mask, blob = ds.id.read_direct_chunk((k * rows,) + (0,) * (arr.ndim - 1))
                    assert mask == 0
                    full = np.zeros((rows,) + arr.shape[1:], arr.dtype)
                    part = arr[k * rows:(k + 1) * rows]
                    full[:len(part)] = part
                    size = arr.dtype.itemsize
                    raw = full.reshape(-1).view(np.uint8).reshape(-1, size).T.tobytes()
                    assert zlib.decompress(blob) == raw
        assert_reads_back(path, data)


def test_direct_path_matches_h5py_filters(tmp_path):
    r = sample_result(T=9000, S=40)
    for engine in ["h5py"] + ENGINES:
        with store.ResultWriter(tmp_path / f"{engine}.h5", engine=engine) as w:
            for a in range(0, 9000, 2500):
                w.append({k: v[a:a + 2500] for k, v in r.datasets.items() if len(v) == 9000})
            w.put("/cells/whole", r.datasets["/cells/voltage"])
    ref = store.load(tmp_path / "h5py.h5")
    for engine in ENGINES:
        back = store.load(tmp_path / f"{engine}.h5")
        assert set(back.datasets) == set(ref.datasets)
        for k in ref.datasets:
            assert back[k].dtype == ref[k].dtype
            assert back[k].tobytes() == ref[k].tobytes(), k


def test_libdeflate_output_is_a_zlib_stream(tmp_path):
    if not HAVE_LIBDEFLATE:
        pytest.skip("the optional 'deflate' package is not installed")
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.normal(size=300000)).astype(np.float32)
    shuffled = store._shuffled(x)
    assert zlib.decompress(bytes(store._libdeflate()(shuffled))) == shuffled.tobytes()
    w = store.ResultWriter(tmp_path / "r.h5")               # the default picks it
    assert w.engine == "libdeflate"
    w.abort()


def test_engine_choice_without_libdeflate(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_LIBDEFLATE", [None])
    w = store.ResultWriter(tmp_path / "a.h5")
    assert w.engine == "zlib"
    w.abort()
    with pytest.raises(StorageError, match="deflate"):
        store.ResultWriter(tmp_path / "b.h5", engine="libdeflate")
    with pytest.raises(StorageError, match="engine must be one of"):
        store.ResultWriter(tmp_path / "c.h5", engine="zstd")
    with pytest.raises(StorageError, match="threads"):
        store.ResultWriter(tmp_path / "c.h5", threads=-1)
    assert store.ResultWriter(tmp_path / "d.h5", "lzf").close().exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "d.h5"]


def _failing(*args):
    raise zlib.error("simulated compression failure")


@pytest.mark.parametrize("when", ["append", "close"])
def test_worker_failure_surfaces_and_leaves_nothing(tmp_path, when):
    final = store.save(sample_result(), tmp_path / "r.h5")
    before = final.read_bytes()
    w = store.ResultWriter(final, engine="zlib", threads=1)
    w._compress = _failing
    big = np.zeros((3000, 96), np.float32)                 # one full chunk (2730 rows)
    with pytest.raises(StorageError, match="simulated compression failure") as e:
        w.append({"/cells/soc": big})      # raises here if the thread failed already
        if when == "append":
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:            # the error comes with the next call
                w.append({"/cells/soc": big[:1]})
                time.sleep(0.01)
        else:
            w.close()
    assert str(final) in str(e.value)
    assert list(tmp_path.iterdir()) == [final] and final.read_bytes() == before
    assert not writer_threads()
    with pytest.raises(StorageError, match="aborted"):
        w.append({"/cells/soc": big})


def test_closed_file_and_bad_rows_raise_storage_error(tmp_path):
    w = store.ResultWriter(tmp_path / "r.h5")
    w.append({"/cells/soc": np.zeros((10, 4), np.float32)})
    with pytest.raises(StorageError, match=r"r\.h5.*/cells/soc.*\(5,\)"):
        w.append({"/cells/soc": np.zeros((10, 5), np.float32)})
    assert list(tmp_path.iterdir()) == []
    w = store.ResultWriter(tmp_path / "r.h5")
    w.append({"/time": np.arange(100000.0)})
    w.f.close()                                            # the file closed behind its back
    with pytest.raises(StorageError, match=r"r\.h5"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_abort_stops_workers_promptly(tmp_path):
    def slow(data):
        time.sleep(0.05)
        return zlib.compress(data, 1)

    w = store.ResultWriter(tmp_path / "r.h5", engine="zlib", threads=2,
                           max_pending_bytes=1 << 30)
    w._compress = slow
    w.append({"/cells/soc": np.zeros((2730 * 80, 96), np.float32)})   # 80 chunks: > 2 s of work
    assert len(w._pending) > 40
    t = time.perf_counter()
    w.abort()
    assert time.perf_counter() - t < 0.5
    assert not writer_threads()
    assert list(tmp_path.iterdir()) == []


def test_back_pressure_bounds_pending_chunks(tmp_path):
    def slow(data):
        time.sleep(0.002)
        return zlib.compress(data, 1)

    bound = 3 << 20
    w = store.ResultWriter(tmp_path / "r.h5", engine="zlib", threads=2, max_pending_bytes=bound)
    w._compress = slow
    rng = np.random.default_rng(2)
    data = rng.random((30000, 96)).astype(np.float32)
    for a in range(0, 30000, 3600):
        w.append({"/cells/soc": data[a:a + 3600]})
        assert w._pending_bytes <= bound
    w.flush()
    assert w._pending_bytes == 0 and not w._pending
    w.append({"/cells/soc": data[:10]})
    w.close()
    assert_reads_back(tmp_path / "r.h5", {"/cells/soc": np.concatenate((data, data[:10]))})
    assert not writer_threads()


FULL_DISK = r"""
import resource, signal, sys
import numpy as np
from packbms import store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # over the limit: write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, resource.RLIM_INFINITY))
rng = np.random.default_rng(0)
try:
    with store.ResultWriter(sys.argv[1]) as w:
        for _ in range(10):
            w.append({"/cells/soc": rng.random((3600, 96)).astype(np.float32)})
except store.StorageError as e:
    print("StorageError:", e)
"""


def test_full_disk_raises_storage_error(tmp_path):
    """A file that cannot grow (RLIMIT_FSIZE, like a full disk): StorageError naming the
    file, nothing left behind."""
    import subprocess
    import sys

    pytest.importorskip("resource")
    path = tmp_path / "r.h5"
    p = subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("StorageError:") and str(path) in p.stdout
    assert list(tmp_path.iterdir()) == []


def test_close_is_idempotent_and_append_after_close_fails(tmp_path):
    w = store.ResultWriter(tmp_path / "r.h5")
    w.append({"/time": np.arange(5.0)})
    assert w.close() == w.close() == tmp_path / "r.h5"
    with pytest.raises(StorageError, match="closed"):
        w.append({"/time": np.arange(5.0)})
    assert store.load(tmp_path / "r.h5")["/time"].tolist() == [0, 1, 2, 3, 4]


def test_interrupt_mid_append_publishes_nothing(tmp_path, monkeypatch):
    """Ctrl-C inside append (e.g. waiting for the compression threads) must not let a later
    close() publish a file whose extent was grown but whose chunks were never written."""
    path = tmp_path / "ki.h5"
    w = store.ResultWriter(path)
    w.append({"/time": np.arange(10.0)})

    def interrupted(s, arr):
        raise KeyboardInterrupt

    monkeypatch.setattr(w, "_feed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        w.append({"/time": np.arange(10.0, 300_000.0)})
    with pytest.raises(StorageError, match="aborted"):
        w.close()
    assert not path.exists() and not list(tmp_path.iterdir())
    assert not writer_threads()


@pytest.mark.parametrize("engine", ENGINES + ["h5py"])
@pytest.mark.parametrize("first, later", [(np.int32, np.int64), (np.uint8, np.int16),
                                          (np.int16, np.float64)])
def test_later_rows_that_do_not_fit_raise(tmp_path, engine, first, later):
    """A dataset keeps its first rows' dtype; later rows beyond its range would be wrapped by
    NumPy or clamped by HDF5, a silently wrong number either way: StorageError instead, the
    same for every engine. Rows that fit are converted."""
    info = np.iinfo(first)
    ok = tmp_path / "ok.h5"
    with store.ResultWriter(ok, engine=engine) as w:
        w.append({"/x": np.array([1, 2], first)})
        w.append({"/x": np.array([info.min, info.max], later)})
    with h5py.File(ok, "r") as f:
        assert f["/x"].dtype == first and f["/x"][()].tolist() == [1, 2, info.min, info.max]
    bad = tmp_path / "bad.h5"
    with pytest.raises(StorageError, match="do not fit"):
        with store.ResultWriter(bad, engine=engine) as w:
            w.append({"/x": np.array([1, 2], first)})
            w.append({"/x": np.array([0, int(info.max) + 1], later)})
    assert not bad.exists()
