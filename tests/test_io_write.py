"""write_log: every format round-trips through read_log within its capabilities; the native BLF
writer is read by python-can's BLFReader exactly as the frames given."""

from __future__ import annotations

import datetime as dt
import io
import os

import can
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packbms.errors import LogFormatError
from packbms.io import WRITE_SUFFIXES, FrameTable, read_log, write_log
from packbms.io import blf as blf_mod
from strategies import frame_tables


def assert_tables_equal(got: FrameTable, exp: FrameTable, *, ts_tol: float = 0.0,
                        relative: bool = False) -> None:
    assert len(got) == len(exp)
    if not len(exp):
        return
    width = max(got.width, exp.width)
    g, e = got.widened(width), exp.widened(width)
    for col in ("arbitration_id", "is_extended", "is_fd", "is_error", "is_remote", "dlc",
                "channel", "data"):
        np.testing.assert_array_equal(getattr(g, col), getattr(e, col), err_msg=col)
    want = e.timestamp - e.timestamp[0] if relative else e.timestamp
    if ts_tol == 0:
        np.testing.assert_array_equal(g.timestamp, want, err_msg="timestamp")
    else:
        err = np.max(np.abs(g.timestamp - want))
        assert err <= ts_tol, f"timestamps off by {err:.3g} s (allowed {ts_tol:.3g})"


def table_from_messages(msgs) -> FrameTable:
    """python-can's view of a file, channel as python-can gives it (BLF/ASC are 0-based)."""
    return FrameTable.from_messages(msgs)


# -- one round-trip harness, one subclass per format (capability flags) ----------------------
def _round_trip_test(max_examples: int):
    @settings(max_examples=max_examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def test_round_trip(self, tmp_path_factory, data):
        ft = data.draw(frame_tables(**self.strategy))
        path = tmp_path_factory.mktemp("rt") / f"frames{self.suffix}"
        write_log(path, ft)
        got = read_log(path)
        assert got.source == str(path)
        tol = self.ts_tol_absolute if not self.relative and ft.timestamp[:1].min(initial=1e9) \
            >= 631152000 else self.ts_tol
        assert_tables_equal(got, self.expected(ft), ts_tol=tol, relative=self.relative)

    return test_round_trip


class RoundTrip:
    """What a format keeps; subclasses set the flags (python-can's ReaderWriterTest style)."""

    suffix = ""
    strategy: dict = {}
    keeps_fd = True
    keeps_channel = True
    remote_keeps_dlc = True
    error_frames = "full"          # "full": id/ext/dlc/data kept; "flag": only is_error (+chan)
    error_keeps_channel = True
    fd_empty_becomes_remote = False
    relative = False               # the reader gives times relative to the first frame
    ts_tol = 0.0                   # relative (small) timestamps
    ts_tol_absolute = 0.0          # Unix timestamps

    def expected(self, ft: FrameTable) -> FrameTable:
        e = ft.take(slice(None))
        e.data = e.data.copy()
        if not self.keeps_fd:
            e.is_fd[:] = False
        if not self.keeps_channel:
            e.channel[:] = 0
        if not self.remote_keeps_dlc:
            e.dlc[e.is_remote] = 0
        if self.error_frames == "flag":
            err = e.is_error
            e.arbitration_id[err] = 0
            e.is_extended[err] = True         # python-can's Message default
            e.dlc[err] = 0
            e.data[err] = 0
            e.is_fd[err] = False
            if not self.error_keeps_channel:
                e.channel[err] = 0
        if self.fd_empty_becomes_remote:
            e.is_remote[e.is_fd & (e.dlc == 0)] = True
        return e

    max_examples = 50

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.test_round_trip = _round_trip_test(cls.max_examples)   # one per class (hypothesis)


class TestBlfRoundTrip(RoundTrip):
    suffix = ".blf"
    ts_tol = 6e-10                  # nanosecond offsets: within 0.5 ns
    ts_tol_absolute = 0.0           # Unix times come back bit for bit
    max_examples = 100


class TestAscRoundTrip(RoundTrip):
    suffix = ".asc"
    error_frames = "flag"
    fd_empty_becomes_remote = True
    relative = True
    ts_tol = ts_tol_absolute = 6e-7   # 6 decimals


class TestCandumpRoundTrip(RoundTrip):
    suffix = ".log"
    error_frames = "flag"
    error_keeps_channel = False
    remote_keeps_dlc = False
    ts_tol = ts_tol_absolute = 1e-6   # "%f" of the absolute time


class TestCsvRoundTrip(RoundTrip):
    suffix = ".csv"
    keeps_fd = False
    keeps_channel = False


class TestTrcRoundTrip(RoundTrip):
    suffix = ".trc"
    strategy = {"fd": False, "remote": False, "error": False}
    ts_tol = ts_tol_absolute = 2e-6   # 1 us offsets, start time as a float of days


class TestMf4RoundTrip(RoundTrip):
    suffix = ".mf4"
    strategy = {"max_size": 25}
    ts_tol = ts_tol_absolute = 1e-6
    max_examples = 10


@pytest.mark.parametrize("suffix", [".asc.gz", ".log.gz", ".csv.gz", ".trc.gz"])
def test_gzip_variants_round_trip(tmp_path, suffix):
    ft = _classic_table(50, t0=1.7e9)
    path = tmp_path / f"x{suffix}"
    write_log(path, ft)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    plain = tmp_path / f"x{suffix[:-3]}"
    write_log(plain, ft)
    assert_tables_equal(read_log(path), read_log(plain))


def test_write_suffixes_listed():
    assert set(WRITE_SUFFIXES) == {".asc", ".blf", ".csv", ".log", ".mf4", ".trc", ".asc.gz",
                                   ".csv.gz", ".log.gz", ".trc.gz"}


# -- native BLF writer against python-can -----------------------------------------------------
def _classic_table(n: int, *, t0: float, seed: int = 0, channels: int = 3) -> FrameTable:
    rng = np.random.default_rng(seed)
    ft = FrameTable.empty(n)
    ft.timestamp[:] = t0 + np.cumsum(rng.integers(1, 20_000, n)) * 1e-6
    ft.arbitration_id[:] = rng.integers(0, 0x800, n)
    ft.dlc[:] = rng.integers(0, 9, n)
    ft.data[:] = np.where(np.arange(8) < ft.dlc[:, None], rng.integers(0, 256, (n, 8)), 0)
    ft.channel[:] = rng.integers(0, channels, n)
    return ft


def _mixed_table(n: int, *, t0: float, seed: int = 1) -> FrameTable:
    """Classic, extended, remote, error and CAN FD frames of every FD length."""
    rng = np.random.default_rng(seed)
    ft = FrameTable.empty(n, 64)
    ft.timestamp[:] = t0 + np.cumsum(rng.integers(1, 5_000, n)) * 1e-6
    kind = rng.integers(0, 4, n)            # 0 data, 1 remote, 2 error, 3 fd
    ft.is_remote[:] = kind == 1
    ft.is_error[:] = kind == 2
    ft.is_fd[:] = kind == 3
    ft.is_extended[:] = rng.random(n) < 0.5
    ft.arbitration_id[:] = np.where(ft.is_extended, rng.integers(0, 0x20000000, n),
                                    rng.integers(0, 0x800, n))
    fd_len = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64])
    ft.dlc[:] = np.where(ft.is_fd, fd_len[rng.integers(0, 16, n)], rng.integers(0, 9, n))
    keep = (np.arange(64) < ft.dlc[:, None]) & ~ft.is_remote[:, None]
    ft.data[:] = np.where(keep, rng.integers(0, 256, (n, 64)), 0)
    ft.channel[:] = rng.integers(0, 8, n)
    return ft


@pytest.mark.parametrize("t0", [1.7e9 + 0.123456, 0.0, 12.3456789])
def test_native_blf_read_by_python_can_exactly(tmp_path, t0):
    ft = _mixed_table(30_000, t0=t0)        # ~2.5 MB of objects: many containers
    path = tmp_path / "mixed.blf"
    write_log(path, ft)
    reader = can.BLFReader(str(path))
    assert reader.object_count == len(ft)
    assert reader.file_size == os.path.getsize(path)
    msgs = list(reader)
    assert len(msgs) == len(ft)
    got = table_from_messages(msgs)
    assert_tables_equal(got, ft, ts_tol=0.0 if t0 > 1e9 else 6e-10)
    # the flags python-can derives from each object type
    assert [m.is_fd for m in msgs[:200]] == list(ft.is_fd[:200])
    assert all(not m.bitrate_switch for m in msgs[:200])


def test_native_blf_header_times(tmp_path):
    ft = _classic_table(1000, t0=1_700_000_000.9876543)
    path = tmp_path / "h.blf"
    write_log(path, ft)
    reader = can.BLFReader(str(path))
    floor_ms = np.floor(ft.timestamp[0] * 1000) / 1000
    assert reader.start_timestamp == pytest.approx(floor_ms, abs=1e-6)
    assert reader.start_timestamp <= ft.timestamp[0]
    assert reader.stop_timestamp == pytest.approx(np.floor(ft.timestamp[-1] * 1000) / 1000,
                                                  abs=1e-6)
    start = dt.datetime.fromtimestamp(reader.start_timestamp, dt.timezone.utc)
    assert (start.year, start.month) == (2023, 11)


def test_native_blf_relative_times_have_zero_systemtime(tmp_path):
    ft = _classic_table(100, t0=5.0)
    path = tmp_path / "rel.blf"
    write_log(path, ft)
    raw = path.read_bytes()
    fields = blf_mod.FILE_HEADER.unpack(raw[:blf_mod.FILE_HEADER.size])
    assert fields[14:] == (0,) * 16
    reader = can.BLFReader(str(path))
    # python-can's own writer loses relative times over 1 ms (start truncated to ms but not
    # stored); ours are kept
    assert reader.start_timestamp == 0
    first = next(iter(reader))
    assert abs(first.timestamp - ft.timestamp[0]) < 1e-9


def test_native_blf_agrees_with_python_can_writer(tmp_path):
    ft = _classic_table(5000, t0=1.69e9)
    ours, theirs = tmp_path / "ours.blf", tmp_path / "theirs.blf"
    write_log(ours, ft)
    with can.BLFWriter(str(theirs)) as w:
        for m in ft.to_messages():
            w.on_message_received(m)
    a = list(can.BLFReader(str(ours)))
    b = list(can.BLFReader(str(theirs)))
    assert len(a) == len(b) == len(ft)
    for x, y in zip(a[::37], b[::37]):
        assert x.equals(y, timestamp_delta=1e-6)


def test_native_blf_is_deterministic(tmp_path):
    ft = _mixed_table(3000, t0=1.7e9)
    write_log(tmp_path / "a.blf", ft)
    write_log(tmp_path / "b.blf", ft)
    assert (tmp_path / "a.blf").read_bytes() == (tmp_path / "b.blf").read_bytes()
    buf = io.BytesIO()
    blf_mod.write_blf(buf, ft, threads=1)
    assert buf.getvalue() == (tmp_path / "a.blf").read_bytes()


def test_native_blf_containers_hold_whole_objects(tmp_path):
    ft = _mixed_table(10_000, t0=1.7e9)
    path = tmp_path / "c.blf"
    write_log(path, ft, compression_level=0)
    with open(path, "rb") as f:
        header = blf_mod.read_blf_header(f, path)
        containers = [o for o in blf_mod.iter_blf_objects(f, header.header_size, path)]
    assert len(containers) > 3
    count = 0
    for obj in containers:
        assert obj.obj_type == blf_mod.LOG_CONTAINER
        data = blf_mod.decompress_container(obj, path)
        assert len(data) <= blf_mod.MAX_CONTAINER_BYTES
        pos = 0
        while pos < len(data):
            assert data[pos:pos + 4] == b"LOBJ"
            size = int.from_bytes(data[pos + 8:pos + 12], "little")
            pos += size + size % 4
            count += 1
        assert pos == len(data)
    assert count == len(ft)


def test_native_blf_keeps_time_going_backwards(tmp_path):
    ft = _classic_table(200, t0=1.7e9)
    ft.timestamp[:] = ft.timestamp[::-1].copy()
    path = tmp_path / "back.blf"
    write_log(path, ft)
    assert_tables_equal(read_log(path), ft)


def test_native_blf_empty_table(tmp_path):
    path = tmp_path / "empty.blf"
    write_log(path, FrameTable.empty(0))
    assert os.path.getsize(path) == blf_mod.FILE_HEADER_SIZE
    assert list(can.BLFReader(str(path))) == []
    assert len(read_log(path)) == 0


@pytest.mark.parametrize("mutate, match", [
    (lambda ft: ft.timestamp.__setitem__(0, -1.0), "negative"),
    (lambda ft: ft.timestamp.__setitem__(3, np.nan), "not finite"),
    (lambda ft: (ft.is_fd.__setitem__(2, True), ft.dlc.__setitem__(2, 7),
                 ft.dlc.__setitem__(5, 10), ft.is_fd.__setitem__(5, True)), "frame 5: dlc 10"),
    (lambda ft: ft.arbitration_id.__setitem__(1, 0x20000000), "29 bits"),
])
def test_native_blf_refuses_what_it_cannot_store(tmp_path, mutate, match):
    ft = _classic_table(10, t0=0.5)
    mutate(ft)
    path = tmp_path / "bad.blf"
    with pytest.raises(LogFormatError, match=match) as info:
        write_log(path, ft)
    assert str(path) in str(info.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


# -- write_log rules --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["is_fd", "is_remote", "is_error"])
def test_trc_refuses_frames_it_would_drop(tmp_path, kind):
    ft = _classic_table(20, t0=1.7e9)
    getattr(ft, kind)[4] = True
    path = tmp_path / "x.trc"
    with pytest.raises(LogFormatError, match="TRC") as info:
        write_log(path, ft)
    assert "first at index 4" in str(info.value)
    assert not path.exists()


@pytest.mark.parametrize("suffix", [".asc", ".log", ".trc", ".mf4"])
def test_time_going_backwards_refused_where_python_can_would_clamp(tmp_path, suffix):
    ft = _classic_table(20, t0=1.7e9)
    ft.timestamp[7] = ft.timestamp[6] - 0.5
    with pytest.raises(LogFormatError, match="backwards at frame 7"):
        write_log(tmp_path / f"x{suffix}", ft)


def test_csv_keeps_any_time_order(tmp_path):
    ft = _classic_table(20, t0=1.7e9)
    ft.timestamp[:] = ft.timestamp[::-1].copy()
    write_log(tmp_path / "x.csv", ft)
    assert_tables_equal(read_log(tmp_path / "x.csv"), TestCsvRoundTrip().expected(ft))


@pytest.mark.parametrize("name", ["x.txt", "x.blf.gz", "x.mf4.gz", "x", "x.db"])
def test_write_unknown_suffix(tmp_path, name):
    with pytest.raises(LogFormatError, match="supported suffixes are") as info:
        write_log(tmp_path / name, _classic_table(3, t0=0.0))
    assert name in str(info.value)


def test_write_into_missing_folder(tmp_path):
    with pytest.raises(LogFormatError, match="does not exist"):
        write_log(tmp_path / "nope" / "x.blf", _classic_table(3, t0=0.0))


def test_write_rejects_non_table(tmp_path):
    with pytest.raises(TypeError):
        write_log(tmp_path / "x.blf", [1, 2, 3])


def test_write_replaces_existing_file(tmp_path):
    path = tmp_path / "x.blf"
    write_log(path, _classic_table(10, t0=0.0))
    write_log(path, _classic_table(4, t0=0.0))
    assert len(read_log(path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.blf"]


@pytest.mark.parametrize("suffix", [".blf", ".asc"])
def test_crash_while_writing_leaves_old_file_and_no_temp(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"x{suffix}"
    write_log(path, _classic_table(10, t0=1.7e9))
    before = path.read_bytes()

    class Crash(RuntimeError):
        pass

    real_to_messages = FrameTable.to_messages
    real_encode = blf_mod._encode_objects
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise Crash("simulated crash")
        return (real_encode if suffix == ".blf" else real_to_messages)(*args, **kwargs)

    if suffix == ".blf":
        monkeypatch.setattr(blf_mod, "_WRITE_CHUNK_FRAMES", 1000)
        monkeypatch.setattr(blf_mod, "_encode_objects", crashing)
    else:
        import packbms.io.writers as writers

        monkeypatch.setattr(writers, "_BATCH", 1000)
        monkeypatch.setattr(FrameTable, "to_messages", crashing)
    with pytest.raises(Crash):
        write_log(path, _classic_table(5000, t0=1.7e9))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
