"""read_log / iter_log on real logs agree frame for frame with python-can's LogReader."""

from __future__ import annotations

import functools
import gzip
import shutil

import can
import numpy as np
import pytest

from packbms.io import SUPPORTED_SUFFIXES, FrameTable, ReadReport, iter_log, read_log

PCAN = "python-can-4.6.1-testdata/"
CSS = "css-electronics-canedge-mf4/"
SMALL_LOGS = [
    PCAN + "logfile.asc", PCAN + "issue_1256.asc", PCAN + "test_CanMessage.asc.gz",
    PCAN + "issue_1905.blf", PCAN + "test_CanMessage.blf", PCAN + "test_CanFdMessage.blf",
    PCAN + "test_CanMessage_V1_1.trc", PCAN + "test_CanMessage_V2_1.trc",
    "foxbms-2/can-log.trc",
    CSS + "kona-ev_uds_17BD1DB7_00000170.MF4", CSS + "leaf-2019_uds_2F6913DB_00000001.MF4",
    CSS + "800v-ev_uds_2F6913DB_00000001-63BEF5CD.MF4",
]
BIG_LOG = CSS + "j1939-truck_00000001.MF4"          # 150,411 frames

# The channel mapping packbms documents, written out here independently of the reader: python-can
# already makes ASC and BLF channels 0-based; TRC and MF4 bus numbers count from 1.
CHANNEL_SHIFT = {".asc": 0, ".blf": 0, ".csv": 0, ".log": 0, ".trc": -1, ".mf4": -1}
FD_LEN = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64]


def _suffix(path) -> str:
    name = str(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name[name.rindex("."):]


@functools.lru_cache(maxsize=None)
def python_can_view(path: str) -> dict:
    """Columns straight from can.LogReader, with the documented channel mapping."""
    msgs = list(can.LogReader(path))
    shift = CHANNEL_SHIFT[_suffix(path)]
    n = len(msgs)
    lens = np.array([len(m.data) for m in msgs], np.int64)
    width = 64 if n and lens.max() > 8 else 8
    data = np.zeros((n, width), np.uint8)
    data[np.arange(width) < lens[:, None]] = np.frombuffer(b"".join(bytes(m.data) for m in msgs),
                                                           np.uint8)

    def chan(c):
        if c is None:
            return 0
        if isinstance(c, int):
            return max(c + shift, 0) & 0xFF
        digits = "".join(ch for ch in c if ch.isdigit())
        return int(digits) & 0xFF if digits else 0

    dlc = [m.dlc for m in msgs]
    if _suffix(path) == ".trc":          # documented: TRC FD gives the DLC code; we give bytes
        dlc = [FD_LEN[d] if m.is_fd and d <= 15 else d for d, m in zip(dlc, msgs)]
    return {
        "timestamp": np.array([m.timestamp for m in msgs], np.float64),
        "arbitration_id": np.array([m.arbitration_id for m in msgs], np.uint32),
        "is_extended": np.array([m.is_extended_id for m in msgs], bool),
        "is_fd": np.array([m.is_fd for m in msgs], bool),
        "is_error": np.array([m.is_error_frame for m in msgs], bool),
        "is_remote": np.array([m.is_remote_frame for m in msgs], bool),
        "dlc": np.array(dlc, np.uint8),
        "channel": np.array([chan(m.channel) for m in msgs], np.uint8),
        "data": data,
    }


def assert_matches(ft: FrameTable, view: dict) -> None:
    assert len(ft) == len(view["timestamp"])
    for name, want in view.items():
        got = getattr(ft, name)
        if name == "data":
            width = max(got.shape[1], want.shape[1])
            got = np.pad(got, ((0, 0), (0, width - got.shape[1])))
            want = np.pad(want, ((0, 0), (0, width - want.shape[1])))
        np.testing.assert_array_equal(got, want, err_msg=name)   # timestamps: exactly equal


@pytest.mark.parametrize("name", SMALL_LOGS)
def test_read_log_matches_python_can(realdata, name):
    path = realdata / name
    report = ReadReport()
    ft = read_log(path, report=report)
    assert ft.source == str(path)
    assert_matches(ft, python_can_view(str(path)))
    assert report.ok and report.frames == len(ft) and report.problems == []
    assert len(ft) > 0


@pytest.mark.parametrize("name", SMALL_LOGS)
def test_iter_log_small_chunks_concatenate_to_read_log(realdata, name):
    path = realdata / name
    chunks = list(iter_log(path, chunk_frames=7))
    assert all(len(c) == 7 for c in chunks[:-1]) and 1 <= len(chunks[-1]) <= 7
    assert all(c.source == str(path) for c in chunks)
    assert_matches(FrameTable.concat(chunks), python_can_view(str(path)))


def test_iter_log_big_file_in_bounded_chunks(realdata):
    path = realdata / BIG_LOG
    report = ReadReport()
    chunks = list(iter_log(path, chunk_frames=40_000, report=report))
    assert [len(c) for c in chunks] == [40_000, 40_000, 40_000, 30_411]
    assert report.ok and report.frames == 150_411
    view = python_can_view(str(path))
    assert_matches(FrameTable.concat(chunks), view)
    assert set(np.unique(view["channel"])) == {0, 8}     # BusChannel 1 and 9


@pytest.mark.parametrize("name, inner", [
    (PCAN + "issue_1905.blf", ".blf"), (PCAN + "logfile.asc", ".asc"),
    (CSS + "kona-ev_uds_17BD1DB7_00000170.MF4", ".MF4"), ("foxbms-2/can-log.trc", ".trc"),
])
def test_gzip_compressed_logs(realdata, tmp_path, name, inner):
    plain = realdata / name
    packed = tmp_path / f"copy{inner}.gz"
    with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    ft = read_log(packed)
    assert ft.source == str(packed)
    assert_matches(ft, python_can_view(str(plain)))


def test_supported_suffixes():
    plain = {".asc", ".blf", ".csv", ".log", ".mf4", ".trc"}
    assert set(SUPPORTED_SUFFIXES) == plain | {s + ".gz" for s in plain}


def test_read_accepts_str_and_pathlike(realdata):
    path = realdata / PCAN / "logfile.asc"
    a, b = read_log(path), read_log(str(path))
    assert a.source == b.source == str(path)
    np.testing.assert_array_equal(a.data, b.data)


def test_report_counts_non_frame_lines(realdata):
    report = ReadReport()
    read_log(realdata / PCAN / "logfile.asc", report=report)
    # 6 header/comment lines, start of measurement, 3 chip-status and 7 statistic events,
    # 2 J1939TP lines, End TriggerBlock: every line without a frame is accounted for
    with open(realdata / PCAN / "logfile.asc") as f:
        lines = [ln for ln in f if ln.strip()]
    assert report.ignored + report.frames == len(lines)
    assert report.ignored == 19


def test_time_order_is_file_order(tmp_path):
    path = tmp_path / "back.log"
    path.write_text("(2.000000) can0 123#01 R\n(1.000000) can1 124#0203 R\n"
                    "(3.000000) vcan2 125#R R\n")
    ft = read_log(path)
    np.testing.assert_array_equal(ft.timestamp, [2.0, 1.0, 3.0])
    np.testing.assert_array_equal(ft.channel, [0, 1, 2])
    np.testing.assert_array_equal(ft.dlc, [1, 2, 0])
    assert list(ft.is_remote) == [False, False, True]


def test_asc_first_frame_after_short_header_is_kept(tmp_path):
    """python-can's ASCReader swallows the first frame line when the header has no "internal
    events logged" line; read_log hands that line to it again."""
    path = tmp_path / "short_header.asc"
    path.write_text("date Sam Sep 30 15:06:13.191 2017\nbase hex  timestamps absolute\n"
                    "   0.015991 1  100 Rx d 2 01 02\n   0.025991 2  101 Rx d 1 03\n")
    assert len(list(can.LogReader(str(path)))) == 1
    ft = read_log(path)
    np.testing.assert_array_equal(ft.timestamp, [0.015991, 0.025991])
    np.testing.assert_array_equal(ft.arbitration_id, [0x100, 0x101])
    np.testing.assert_array_equal(ft.channel, [0, 1])
    np.testing.assert_array_equal(ft.data[:, :2], [[1, 2], [3, 0]])


def test_trc_fd_dlc_is_payload_length(tmp_path):
    path = tmp_path / "fd.trc"
    payload = " ".join(f"{i:02X}" for i in range(12))
    path.write_text(";$FILEVERSION=2.1\n;$STARTTIME=44548.6028595139\n"
                    ";$COLUMNS=N,O,T,B,I,d,R,L,D\n"
                    f"      1     17535.400 FD 2  00000100 Rx -  9    {payload}\n"
                    "      2     17536.400 DT 1      0704 Rx -  2    0A 0B\n")
    msgs = list(can.LogReader(str(path)))
    assert msgs[0].dlc == 9 and len(msgs[0].data) == 12        # python-can: the DLC code
    ft = read_log(path)
    assert list(ft.dlc) == [12, 2]
    assert list(ft.is_fd) == [True, False]
    assert list(ft.channel) == [1, 0]
    np.testing.assert_array_equal(ft.data[0, :12], np.arange(12))


def test_empty_text_logs_give_empty_tables(tmp_path):
    for suffix in (".asc", ".csv", ".log", ".trc"):
        path = tmp_path / f"empty{suffix}"
        path.write_bytes(b"")
        ft = read_log(path)
        assert len(ft) == 0 and ft.source == str(path)
        assert list(iter_log(path)) == []
