"""Native readers (Numba kernels) against python-can: real files, round trips through python-can's
writers and ours, format edge cases, streaming in bounded memory."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tracemalloc

import can
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packbms.errors import LogFormatError
from packbms.io import FrameTable, ReadReport, iter_log, read_log, write_log
from packbms.io import native_blf, native_text
from packbms.io.readers import ENGINES, NATIVE_SUFFIXES
from strategies import blf_bytes, frame_tables

PCAN = "python-can-4.6.1-testdata/"
CSS = "css-electronics-canedge-mf4/"
REAL_LOGS = [
    PCAN + "logfile.asc", PCAN + "issue_1256.asc", PCAN + "test_CanMessage.asc.gz",
    PCAN + "issue_1905.blf", PCAN + "test_CanMessage.blf", PCAN + "test_CanFdMessage.blf",
    PCAN + "test_CanMessage_V1_1.trc", PCAN + "test_CanMessage_V2_1.trc",
    "foxbms-2/can-log.trc",
    CSS + "kona-ev_uds_17BD1DB7_00000170.MF4", CSS + "leaf-2019_uds_2F6913DB_00000001.MF4",
    CSS + "800v-ev_uds_2F6913DB_00000001-63BEF5CD.MF4", CSS + "j1939-truck_00000001.MF4",
]
COLUMNS = ("timestamp", "arbitration_id", "is_extended", "is_fd", "is_error", "is_remote", "dlc",
           "channel")


def assert_same(got: FrameTable, want: FrameTable) -> None:
    """Frame for frame, timestamps bit for bit, payload zero-padded alike."""
    assert len(got) == len(want)
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_array_equal(got.widened(64).data, want.widened(64).data, err_msg="data")


def both_engines(path, **kwargs):
    """(native table, report), (python-can table, report)."""
    out = []
    for engine in ("native", "python-can"):
        report = ReadReport()
        out.append((read_log(path, engine=engine, report=report, **kwargs), report))
        assert report.engine == engine
    return out


# -- real files -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", REAL_LOGS)
def test_real_logs_native_equals_python_can(realdata, name):
    (a, ra), (b, rb) = both_engines(realdata / name)
    assert_same(a, b)
    assert ra.frames == rb.frames == len(a) > 0
    assert ra.ok and rb.ok
    if not name.lower().endswith((".blf", ".mf4")):
        assert ra.ignored == rb.ignored       # text lines that are not frames, counted alike


@pytest.mark.parametrize("name", [PCAN + "issue_1905.blf", PCAN + "logfile.asc",
                                  "foxbms-2/can-log.trc",
                                  CSS + "kona-ev_uds_17BD1DB7_00000170.MF4"])
def test_real_logs_gzipped_native(realdata, tmp_path, name):
    inner = os.path.splitext(name)[1]
    packed = tmp_path / f"copy{inner}.gz"
    with open(realdata / name, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert_same(read_log(packed, engine="native"), read_log(realdata / name, engine="python-can"))


def test_engine_argument(realdata, tmp_path):
    assert ENGINES == ("auto", "native", "python-can")
    assert set(NATIVE_SUFFIXES) == {".asc", ".blf", ".log", ".mf4", ".trc"}
    path = realdata / PCAN / "logfile.asc"
    with pytest.raises(ValueError, match="engine must be"):
        read_log(path, engine="fast")
    csv = tmp_path / "x.csv"
    write_log(csv, read_log(path))
    with pytest.raises(ValueError, match="no native reader for CSV"):
        read_log(csv, engine="native")
    report = ReadReport()
    assert len(read_log(csv, report=report)) == 20 and report.engine == "python-can"
    report = ReadReport()
    read_log(path, report=report)
    assert report.engine == "native"              # auto picks the native reader


# -- round trips: frames written by python-can's writers (and ours), read by both engines -----
def _python_can_write(path, frames: FrameTable) -> None:
    """Write with python-can's own writer class (BLF: python-can's BLFWriter, which lets objects
    straddle containers)."""
    msgs = frames.to_messages()
    suffix = path.suffix.lower()
    if suffix == ".mf4":
        for m in msgs:
            m.channel += 1
    if suffix == ".blf":
        writer = can.BLFWriter(str(path))
    else:
        writer = {".asc": can.ASCWriter, ".log": can.CanutilsLogWriter, ".trc": can.TRCWriter,
                  ".mf4": can.MF4Writer}[suffix](str(path))
    for m in msgs:
        writer.on_message_received(m)
    writer.stop()


ORACLE_CASES = [
    # suffix, writer, strategy options
    (".blf", "packbms", {"max_size": 60}),
    (".blf", "python-can", {"max_size": 60}),
    (".asc", "python-can", {}),
    (".log", "python-can", {}),
    (".trc", "python-can", {"fd": False, "remote": False, "error": False}),
    (".mf4", "python-can", {"max_size": 20}),
]


@pytest.mark.parametrize("suffix, writer, options", ORACLE_CASES,
                         ids=[f"{s[1:]}-{w}" for s, w, _ in ORACLE_CASES])
@settings(deadline=None, max_examples=40,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_round_trip_native_reads_like_python_can(tmp_path, suffix, writer, options, data):
    ft = data.draw(frame_tables(**options))
    path = tmp_path / f"frames{suffix}"
    if writer == "packbms":
        write_log(path, ft)
    else:
        _python_can_write(path, ft)
    (a, ra), (b, rb) = both_engines(path)
    assert_same(a, b)
    assert ra.ok and rb.ok and ra.frames == len(ft)
    chunk = data.draw(st.integers(1, max(len(ft), 1)))
    chunks = list(iter_log(path, chunk_frames=chunk, engine="native"))
    assert all(len(c) == chunk for c in chunks[:-1])
    if chunks:
        assert_same(FrameTable.concat(chunks), a)


@settings(deadline=None, max_examples=300,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(raw=blf_bytes(max_objects=14))
def test_blf_objects_of_every_kind_read_like_python_can(tmp_path, raw):
    """Object types 1, 86, 73, 100, 101 and skipped ones, header versions 1 and 2, 10 us and
    1 ns units, offsets past 2**53 units, objects straddling containers."""
    path = tmp_path / "objects.blf"
    path.write_bytes(raw)
    (a, ra), (b, rb) = both_engines(path)
    assert_same(a, b)
    assert ra.ok and rb.ok


@settings(deadline=None, max_examples=150,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(raw=blf_bytes(max_objects=10, bad=True))
def test_blf_bad_records_skipped_like_python_can(tmp_path, raw):
    """DLC over 64 and FD payloads over 64 bytes: the same frames kept, the same records
    counted, each named by its container's offset."""
    path = tmp_path / "bad.blf"
    path.write_bytes(raw)
    (a, ra), (b, rb) = both_engines(path, errors="skip")
    assert_same(a, b)
    assert ra.skipped == rb.skipped
    assert [p.offset for p in ra.problems] == [p.offset for p in rb.problems]
    if ra.skipped:
        with pytest.raises(LogFormatError) as info:
            read_log(path, engine="native")
        assert info.value.offset == ra.problems[0].offset


def test_blf_slow_timestamps_exactly_as_python_can(tmp_path):
    """Relative times past 104 days: nanosecond offsets over 2**53 are rounded as python-can's
    Decimal arithmetic does."""
    ft = FrameTable.empty(50)
    ft.timestamp[:] = 1.0e7 + np.arange(50) * 0.123456789
    ft.dlc[:] = 1
    path = tmp_path / "late.blf"
    write_log(path, ft)
    (a, _), (b, _) = both_engines(path)
    assert_same(a, b)
    assert np.max(np.abs(a.timestamp - ft.timestamp)) <= np.spacing(1.0e7)


@pytest.mark.parametrize("name", native_blf.available_inflaters())
def test_every_inflater_gives_the_same_frames(tmp_path, monkeypatch, name):
    rng = np.random.default_rng(4)
    ft = FrameTable.empty(20_000)
    ft.timestamp[:] = 1.7e9 + np.cumsum(rng.integers(1, 5000, 20_000)) * 1e-6
    ft.arbitration_id[:] = rng.integers(0, 0x800, 20_000)
    ft.dlc[:] = 8
    ft.data[:] = rng.integers(0, 4, (20_000, 8))
    path = tmp_path / "drive.blf"
    write_log(path, ft)
    monkeypatch.setenv("PACKBMS_INFLATER", name)
    assert_same(read_log(path, engine="native"), ft)
    assert native_blf.inflate_all(path, name) == 20_000 * 48     # CAN_MESSAGE objects
    # a damaged container gives the same error whichever inflater is used
    raw = bytearray(path.read_bytes())
    raw[144 + 32 + 100: 144 + 32 + 116] = bytes(16)
    bad = tmp_path / "bad.blf"
    bad.write_bytes(bytes(raw))
    with pytest.raises(LogFormatError, match="corrupted log container") as info:
        read_log(bad, engine="native")
    assert info.value.offset == 144


def test_unknown_inflater():
    with pytest.raises(ValueError, match="not available"):
        native_blf.inflater("brotli")


@pytest.mark.parametrize("threads", ["0", "1", "2"])
def test_blf_prefetch_thread_same_result_and_errors(tmp_path, monkeypatch, threads):
    """With and without the read-ahead thread: the same frames, and an error in the middle of
    the file is raised in order (frames before it were yielded)."""
    monkeypatch.setenv("PACKBMS_READ_THREADS", threads)
    monkeypatch.setattr(native_blf, "PREFETCH_MIN_BYTES", 0)
    rng = np.random.default_rng(5)
    ft = FrameTable.empty(60_000)
    ft.timestamp[:] = 1.7e9 + np.arange(60_000) * 1e-3
    ft.data[:] = rng.integers(0, 256, (60_000, 8))
    ft.dlc[:] = 8
    path = tmp_path / "drive.blf"
    write_log(path, ft)
    assert_same(read_log(path), ft)
    raw = bytearray(path.read_bytes())
    objs = []
    pos = 144
    while pos < len(raw):
        size = struct.unpack_from("<L", raw, pos + 8)[0]
        objs.append(pos)
        pos += size + size % 4
    third = objs[2]
    raw[third + 40: third + 60] = bytes(20)
    bad = tmp_path / "bad.blf"
    bad.write_bytes(bytes(raw))
    got = []
    with pytest.raises(LogFormatError) as info:
        for chunk in iter_log(bad, chunk_frames=1000):
            got.append(chunk)
    assert info.value.offset == third
    assert 0 < sum(map(len, got)) <= 3 * 60_000 // (len(objs) - 1)
    # stop reading early: the worker thread is shut down, nothing leaks
    it = iter_log(path, chunk_frames=1000)
    next(it)
    it.close()


# -- ASC --------------------------------------------------------------------------------------
ASC_CASES = {
    "dec_base": (
        "date Mon Jan 01 10:00:00.000 am 2024\nbase dec  timestamps relative\n"
        "internal events logged\n"
        "   0.100000 1  256             Rx   d 2 10 255\n"
        "   0.200000 2  4096x           Tx   d 1 7\n"
        "   0.300000 1  17              Rx   r 3\n"),
    "fd_lines": (
        "date Sam Sep 30 15:06:13.191 2017\nbase hex  timestamps absolute\n"
        "no internal events logged\n"
        "   1.000000 CANFD   1 Rx        123  Sym_Name                   1 0 9 12 "
        "01 02 03 04 05 06 07 08 09 0A 0B 0C   102203  133   303000 e0006659\n"
        "   1.100000 CANFD   2 Tx  1ABCDEFx                                0 1 5  5 "
        "AA BB CC DD EE 140000 73 200050\n"
        "   1.200000 CANFD   3 Rx        7FF                                  1 0 8 0 "
        "140000 73 200050\n"
        "   1.300000 CANFD   4 Rx ErrorFrame Not Acknowledge error\n"
        "   1.400000 CANFD   1 Rx        100 1 0 f 64 " + " ".join(["11"] * 64) + " 1 2 3\n"),
    "crlf_and_weird_spacing": (
        "date Sam Sep 30 15:06:13.191 2017\r\nbase hex timestamps absolute\r\n"
        "// a comment\r\n\r\n"
        "\t0.015991\t1\t12\tRx\td\t2\t01\t02\r\n"
        "   0.02 1  12  Rx d 0 \r\n"
        "   0.03 1 ErrorFrame ECC: 10100010\r\n"
        "   0.04 1  0x1Fx Rx d 1 +0A\r\n"
        "   0.05 2  100 Rx R\r\n"
        "   0.060000000000000000000001 1 1_0 Rx d 1 0_f\r\n"
        "   0.07 CAN 1 Status:chip status error active\r\n"
        "   0.08 1  Statistic: D 0 R 0 XD 0 XR 0 E 0 O 0 B 0.00%\r\n"
        "End TriggerBlock\r\n"),
    "classic_dlc_codes": (
        "base hex  timestamps absolute\n"
        "   0.1 1 10 Rx d 9 01 02 03 04 05 06 07 08 09\n"
        "   0.2 1 11 Rx d F 01 02 03 04 05 06 07 08\n"
        "   0.3 300 12 Rx d 0\n"),
    "no_header": "   0.5 1 123 Rx d 1 01\n   0.6 1 124 Rx d 1 02",
}


@pytest.mark.parametrize("case", sorted(ASC_CASES))
def test_asc_cases_like_python_can(tmp_path, case):
    path = tmp_path / f"{case}.asc"
    path.write_bytes(ASC_CASES[case].encode())
    (a, ra), (b, rb) = both_engines(path)
    assert_same(a, b)
    assert len(a) > 0 and ra.ok and rb.ok and ra.ignored == rb.ignored


def test_asc_fd_and_bases_values(tmp_path):
    path = tmp_path / "fd.asc"
    path.write_bytes(ASC_CASES["fd_lines"].encode())
    ft = read_log(path, engine="native")
    assert list(ft.is_fd) == [True] * 5
    assert list(ft.dlc) == [12, 5, 8, 0, 64]
    assert list(ft.is_remote) == [False, False, True, False, False]
    assert list(ft.is_error) == [False, False, False, True, False]
    assert list(ft.channel) == [0, 1, 2, 3, 0]
    assert ft.arbitration_id[1] == 0x1ABCDEF and ft.is_extended[1]
    np.testing.assert_array_equal(ft.data[0, :12], np.arange(1, 13))
    path = tmp_path / "dec.asc"
    path.write_bytes(ASC_CASES["dec_base"].encode())
    ft = read_log(path, engine="native")
    assert list(ft.arbitration_id) == [256, 4096, 17]
    assert list(ft.data[0, :2]) == [10, 255]
    assert list(ft.dlc) == [2, 1, 3] and ft.is_remote[2]


def test_asc_bad_base_is_a_header_error(tmp_path):
    path = tmp_path / "base.asc"
    path.write_text("date Mon Jan 01 10:00:00.000 am 2024\nBASE HEX timestamps absolute\n"
                    "   0.1 1 10 Rx d 1 01\n")
    for engine in ("native", "python-can"):
        with pytest.raises(LogFormatError, match="bad ASC header") as info:
            read_log(path, engine=engine, errors="skip")
        assert info.value.line == 2


# -- candump ----------------------------------------------------------------------------------
CANDUMP = (
    "(1700000000.000001) can0 123#DEADBEEF\n"
    "(1700000000.000002) vcan12 1ABCDEFF#R\n"
    "(1700000000.000003) can1 7FF#R5 T\n"
    "(1700000000.000004) can0 321##3" + "11" * 48 + " R\n"
    "(1700000000.000005) can2 20000080#0000000000000000\n"
    "(1700000000.000006) 3 0x12#0a0B\r\n"
    "(1.7e9) can0 001#\n"
    "(1700000000.5) can0 001##0\n"
    "(1_700_000_000.25) can1 00000001#01\n"
)


def test_candump_cases_like_python_can(tmp_path):
    path = tmp_path / "cases.log"
    path.write_text(CANDUMP)
    (a, ra), (b, rb) = both_engines(path)
    assert_same(a, b)
    assert ra.ok and len(a) == 9
    assert list(a.is_fd) == [False, False, False, True, False, False, False, True, False]
    assert list(a.is_remote[:3]) == [False, True, True] and a.dlc[2] == 5
    assert a.is_error[4] and a.arbitration_id[4] == 0 and a.channel[4] == 0
    assert list(a.channel) == [0, 12, 1, 0, 0, 3, 0, 0, 1]
    assert a.dlc[3] == 48 and a.width == 64


# -- TRC --------------------------------------------------------------------------------------
TRC_CASES = {
    "v1_0": ("      1)      1841 0001  8  00 00 00 00 00 00 00 00\n"
             "      2)      3992 FFFFFFFF  4  00 00 00 08  BUSHEAVY\n"
             "      3)      4001 00000100  2  RTR\n"
             "      4)      4010 0123  3  0A 0B 0C\n"),
    "v1_3": (";$FILEVERSION=1.3\n;$STARTTIME=45713.5595674003052\n"
             "     1)         1.000 1  Rx        0243 -  8    00 C7 C8 00 00 00 00 00\n"
             "     2)        10.500 2  Tx    18FF1234 -  2    01 02\n"
             "     3)        11.000 1  Rx        0111 -  4    RTR\n"
             "     4)        12.000 1  Warng FFFFFFFF -  4    00 00 00 08 BUSHEAVY\n"),
    "v2_0_length_column": (";$FILEVERSION=2.0\n;$STARTTIME=44548.6028595139\n"
                           ";$COLUMNS=N,O,T,B,I,d,l,D\n"
                           "      1     17535.400 DT 1  00000100 Tx 8    00 01 02 03 04 05 06 07\n"
                           "      2     17540.300 FD 2  00000101 Rx 12   " + "AB " * 12 + "\n"
                           "      3     17541.300 FB 1  00000101 Rx 20   " + "CD " * 20 + "\n"
                           "      4     17542.300 RR 1      0704 Rx 1\n"
                           "      5     17543.300 ST 1         - Rx 4    00 00 00 08\n"),
    "v2_1_fd": (";$FILEVERSION=2.1\r\n;$STARTTIME=44548.6028595139\r\n"
                ";$COLUMNS=N,O,T,B,I,d,R,L,D\r\n"
                "      1     17535.400 FE 3  00000100 Tx -  9    " + "01 " * 12 + "\r\n"
                "      2     17535.500 BI 1  00000100 Tx -  15   " + "02 " * 64 + "\r\n"
                "      3     17535.600 DT 1      0100 Rx -  0\r\n"
                "      4     17535.700 EC 1      0100 Rx -  0\r\n"),
}


@pytest.mark.parametrize("case", sorted(TRC_CASES))
def test_trc_versions_like_python_can(tmp_path, case):
    path = tmp_path / f"{case}.trc"
    path.write_bytes(TRC_CASES[case].encode())
    (a, ra), (b, rb) = both_engines(path)
    assert_same(a, b)
    assert len(a) >= 3 and ra.ok and rb.ok and ra.ignored == rb.ignored


def test_trc_v2_without_columns(tmp_path):
    path = tmp_path / "nocols.trc"
    path.write_text(";$FILEVERSION=2.1\n;$STARTTIME=44548.6\n      1     1.0 DT 1 0100 Tx -  0\n")
    for engine in ("native", "python-can"):
        with pytest.raises(LogFormatError, match="no column information"):
            read_log(path, engine=engine)


# -- streaming: chunks and bounded memory -----------------------------------------------------
def _drive(n: int, seed: int = 0) -> FrameTable:
    rng = np.random.default_rng(seed)
    ft = FrameTable.empty(n)
    ft.timestamp[:] = 1.7e9 + np.cumsum(rng.integers(1, 4000, n)) * 1e-6
    ft.arbitration_id[:] = rng.integers(0x100, 0x700, n)
    ft.dlc[:] = 8
    ft.data[:] = rng.integers(0, 256, (n, 8))
    ft.channel[:] = rng.integers(0, 2, n)
    return ft


@pytest.fixture(scope="module")
def big_logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    ft = _drive(150_000)
    paths = {}
    for suffix in (".blf", ".log"):
        paths[suffix] = folder / f"drive{suffix}"
        write_log(paths[suffix], ft)
    return ft, paths


@pytest.mark.parametrize("suffix", [".blf", ".log"])
def test_iter_log_memory_is_bounded_by_the_chunk(big_logs, monkeypatch, suffix):
    """Peak traced memory while streaming 150k frames in chunks of 4,000 stays a small fraction
    of the decoded table (about 4 MB)."""
    ft, paths = big_logs
    monkeypatch.setattr(native_text, "BLOCK_BYTES", 1 << 16)
    monkeypatch.setenv("PACKBMS_READ_THREADS", "0")
    list(iter_log(paths[suffix], chunk_frames=4000))            # compile outside the trace
    decoded = len(ft) * (8 + 4 + 4 + 2 + 8)
    tracemalloc.start()
    try:
        n = last = 0
        for chunk in iter_log(paths[suffix], chunk_frames=4000):
            assert len(chunk) == 4000 or n + len(chunk) == len(ft)
            np.testing.assert_array_equal(chunk.timestamp, ft.timestamp[n:n + len(chunk)])
            n += len(chunk)
            last = chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == len(ft) and len(last)
    assert peak < decoded / 4, f"peak {peak / 1e6:.1f} MB for a {decoded / 1e6:.1f} MB table"


def test_long_text_line_is_a_bad_record_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(native_text, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(native_text, "BLOCK_BYTES", 256)
    path = tmp_path / "long.log"
    path.write_text("(1.0) can0 001#01\n(2.0) can0 002#" + "AB" * 3000 + "\n(3.0) can0 003#03\n")
    with pytest.raises(LogFormatError, match="line longer than 1000 bytes") as info:
        read_log(path, engine="native")
    assert info.value.line == 2
    report = ReadReport()
    ft = read_log(path, engine="native", errors="skip", report=report)
    assert list(ft.arbitration_id) == [1, 3] and report.skipped == 1


def test_text_block_boundaries_do_not_matter(tmp_path, monkeypatch, realdata):
    """Lines cut by block ends are carried over: tiny blocks give the same frames and lines."""
    monkeypatch.setattr(native_text, "BLOCK_BYTES", 7)
    for name in (PCAN + "logfile.asc", PCAN + "test_CanMessage_V2_1.trc",
                 PCAN + "test_CanMessage.asc.gz"):
        report = ReadReport()
        got = read_log(realdata / name, engine="native", report=report)
        (b, rb) = both_engines(realdata / name)[1]
        assert_same(got, b)
        assert report.ignored == rb.ignored


@pytest.mark.parametrize("suffix", [".asc", ".log", ".trc"])
def test_text_halves_parsed_in_parallel_like_serial(tmp_path, monkeypatch, suffix):
    """Blocks cut in two halves parsed at once: the same frames, counts and line numbers."""
    path = tmp_path / f"drive{suffix}"
    write_log(path, _drive(4000, seed=3))
    lines = path.read_bytes().splitlines(keepends=True)
    for at in (len(lines) - 5, 2000, 1500, 900, 40):
        lines.insert(at, b"garbage line DT\n")
    path.write_bytes(b"".join(lines))
    monkeypatch.setattr(native_text, "BLOCK_BYTES", 8192)
    monkeypatch.setattr(native_text, "PARALLEL_MIN_BYTES", 256)
    out = {}
    for threads in ("0", "2"):
        monkeypatch.setenv("PACKBMS_READ_THREADS", threads)
        report = ReadReport()
        ft = read_log(path, engine="native", errors="skip", report=report)
        chunks = list(iter_log(path, engine="native", errors="skip", chunk_frames=700))
        assert_same(FrameTable.concat(chunks), ft)
        out[threads] = (ft, report)
    (a, ra), (b, rb) = out["0"], out["2"]
    assert_same(a, b)
    assert ra.skipped == rb.skipped == 5 and ra.ignored == rb.ignored
    assert [p.line for p in ra.problems] == [p.line for p in rb.problems]
    assert [p.line for p in ra.problems] == [i + 1 for i, ln in enumerate(lines)
                                             if ln.startswith(b"garbage")]
    assert len(a) == 4000
