"""Bad logs: every failure is a LogFormatError naming the file and the line or byte offset;
errors="skip" skips bad records and reports them."""

from __future__ import annotations

import struct

import can
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packbms.errors import LogFormatError, PackBMSError
from packbms.io import FrameTable, ReadReport, iter_log, read_log, write_log
from packbms.io import blf as blf_mod

PCAN = "python-can-4.6.1-testdata/"


def _table(n: int, *, t0: float = 1.7e9, seed: int = 0, fd: bool = False) -> FrameTable:
    rng = np.random.default_rng(seed)
    ft = FrameTable.empty(n, 64 if fd else 8)
    ft.timestamp[:] = t0 + np.cumsum(rng.integers(1, 20_000, n)) * 1e-6
    ft.arbitration_id[:] = rng.integers(0, 0x800, n)
    ft.dlc[:] = rng.integers(1, 9, n)
    ft.data[:, :8] = np.where(np.arange(8) < ft.dlc[:, None], rng.integers(0, 256, (n, 8)), 0)
    ft.channel[:] = rng.integers(0, 3, n)
    if fd:
        ft.is_fd[::3] = True
        ft.dlc[::3] = 64
        ft.data[::3] = rng.integers(0, 256, (len(ft.data[::3]), 64))
    return ft


def _raises(path, match=None, **kwargs) -> LogFormatError:
    with pytest.raises(LogFormatError, match=match) as info:
        read_log(path, **kwargs)
    err = info.value
    assert str(path) in str(err)
    assert err.path == str(path)
    return err


# -- file level -------------------------------------------------------------------------------
def test_missing_file_raises_at_call(tmp_path):
    path = tmp_path / "nope.blf"
    _raises(path, "no such file")
    with pytest.raises(LogFormatError, match="no such file"):
        iter_log(path)                     # before any iteration


def test_directory(tmp_path):
    folder = tmp_path / "logs.asc"
    folder.mkdir()
    _raises(folder, "is a directory")


@pytest.mark.parametrize("name, hint", [("drive.acs", ".asc"), ("drive.bfl", ".blf"),
                                        ("drive", None), ("drive.db", None),
                                        ("drive.txt.gz", None)])
def test_unknown_suffix_lists_supported(tmp_path, name, hint):
    path = tmp_path / name
    path.write_bytes(b"1 2 3\n")
    err = _raises(path, "unknown log format")
    for suffix in (".asc", ".blf", ".csv", ".log", ".mf4", ".trc", ".asc.gz"):
        assert suffix in str(err)
    if hint:
        assert hint in str(err).split("did you mean")[1]


@pytest.mark.parametrize("suffix", [".blf", ".mf4", ".MF4", ".blf.gz"])
def test_empty_binary_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    err = _raises(path, "empty file")
    assert err.offset == 0


def test_bad_arguments(realdata):
    path = realdata / PCAN / "logfile.asc"
    with pytest.raises(ValueError, match="errors must be"):
        read_log(path, errors="ignore")
    with pytest.raises(ValueError, match="chunk_frames"):
        iter_log(path, chunk_frames=0)


def test_not_a_blf_file(tmp_path, realdata):
    path = tmp_path / "text.blf"
    path.write_bytes((realdata / PCAN / "logfile.asc").read_bytes())
    err = _raises(path, "not a BLF file")
    assert err.offset == 0
    _raises(path, "not a BLF file", errors="skip")       # nothing readable: raises in skip too


@pytest.mark.parametrize("engine", ["native", "python-can"])
def test_mf4_without_asammdf(monkeypatch, realdata, engine):
    import can.io.mf4

    from packbms.io import native_mf4

    monkeypatch.setattr(can.io.mf4, "asammdf", None)
    monkeypatch.setattr(native_mf4, "_asammdf", lambda: None)
    _raises(realdata / "css-electronics-canedge-mf4/kona-ev_uds_17BD1DB7_00000170.MF4",
            "pip install asammdf", engine=engine)


def test_corrupted_mf4(tmp_path, realdata):
    raw = (realdata / "css-electronics-canedge-mf4/kona-ev_uds_17BD1DB7_00000170.MF4").read_bytes()
    path = tmp_path / "bad.mf4"
    path.write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8)))
    _raises(path, "not a valid ASAM MDF file")
    # A cut MF4 cannot be told from a logger that stopped (asammdf reads the blocks that are
    # there): documented limitation; we return what python-can returns, a prefix of the frames.
    path.write_bytes(raw[:len(raw) // 2])
    half = read_log(path)
    full = read_log(realdata / "css-electronics-canedge-mf4/kona-ev_uds_17BD1DB7_00000170.MF4")
    assert len(half) == len(list(can.LogReader(str(path)))) < len(full)
    np.testing.assert_array_equal(half.timestamp, full.timestamp[:len(half)])


# -- truncated and corrupted BLF --------------------------------------------------------------
@pytest.fixture(scope="module")
def blf_files(tmp_path_factory):
    """A native BLF (containers hold whole objects) and a python-can one (objects straddle)."""
    folder = tmp_path_factory.mktemp("blf")
    ft = _table(12_000, fd=True)
    native = folder / "native.blf"
    write_log(native, ft)
    theirs = folder / "python_can.blf"
    with can.BLFWriter(str(theirs)) as w:
        for m in ft.to_messages():
            w.on_message_received(m)
    return ft, native, theirs


def _containers(path):
    with open(path, "rb") as f:
        header = blf_mod.read_blf_header(f, path)
        return list(blf_mod.iter_blf_objects(f, header.header_size, path))


@pytest.mark.parametrize("which", ["native", "python_can"])
@pytest.mark.parametrize("where", ["in_header_struct", "in_header_padding",
                                   "in_object_header", "in_container", "at_container_end",
                                   "one_byte_short"])
def test_truncated_blf(tmp_path, blf_files, which, where):
    ft, native, theirs = blf_files
    src = native if which == "native" else theirs
    raw = src.read_bytes()
    objs = _containers(src)
    assert len(objs) >= 3
    second = objs[1]
    cut = {"in_header_struct": 40, "in_header_padding": 100,
           "in_object_header": objs[0].offset + 9,
           "in_container": second.offset + second.obj_size // 2,
           "at_container_end": second.offset + second.obj_size + second.obj_size % 4,
           "one_byte_short": len(raw) - 1}[where]
    path = tmp_path / f"cut_{where}.blf"
    path.write_bytes(raw[:cut])
    err = _raises(path)
    assert err.offset is not None and f"byte offset {err.offset}" in str(err)
    assert err.offset <= cut
    assert "truncated" in str(err)
    if where.startswith("in_header"):
        _raises(path, "truncated", errors="skip")
        return
    # skip mode: what was readable, flagged as truncated
    report = ReadReport()
    got = read_log(path, errors="skip", report=report)
    assert report.truncated and not report.ok
    assert report.problems and report.problems[0].offset is not None
    assert len(got) < len(ft) or where == "one_byte_short"      # that cut is in the padding
    np.testing.assert_array_equal(got.timestamp, ft.timestamp[:len(got)])
    np.testing.assert_array_equal(got.widened(64).data, ft.data[:len(got)])


@pytest.mark.parametrize("which", ["native", "python_can"])
def test_corrupted_blf_container(tmp_path, blf_files, which):
    ft, native, theirs = blf_files
    src = native if which == "native" else theirs
    raw = bytearray(src.read_bytes())
    objs = _containers(src)
    second = objs[1]
    mid = second.offset + 32 + (second.obj_size - 32) // 2
    raw[mid:mid + 16] = bytes(16)
    path = tmp_path / "corrupt.blf"
    path.write_bytes(bytes(raw))
    err = _raises(path, "corrupted log container")
    assert err.offset == second.offset
    report = ReadReport()
    got = read_log(path, errors="skip", report=report)
    assert report.skipped == 1 and not report.truncated
    assert report.problems[0].offset == second.offset
    lost = len(ft) - len(got)
    per_container = len(ft) / len(objs)
    assert 0 < lost < 2 * per_container
    # every frame returned is one of the originals, in order
    idx = np.searchsorted(ft.timestamp, got.timestamp)
    np.testing.assert_array_equal(ft.timestamp[idx], got.timestamp)
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(got.widened(64).data, ft.data[idx])


def test_corrupted_blf_object_signature(tmp_path, blf_files):
    ft, native, _ = blf_files
    raw = bytearray(native.read_bytes())
    third = _containers(native)[2]
    raw[third.offset:third.offset + 4] = b"JUNK"
    path = tmp_path / "sig.blf"
    path.write_bytes(bytes(raw))
    err = _raises(path, "LOBJ")
    assert err.offset == third.offset
    report = ReadReport()
    got = read_log(path, errors="skip", report=report)
    assert report.truncated and 0 < len(got) < len(ft)


def test_blf_unknown_compression_method(tmp_path, blf_files):
    _, native, _ = blf_files
    raw = bytearray(native.read_bytes())
    first = _containers(native)[0]
    struct.pack_into("<H", raw, first.offset + 16, 7)
    path = tmp_path / "method.blf"
    path.write_bytes(bytes(raw))
    err = _raises(path, "unknown compression method 7")
    assert err.offset == first.offset


# -- text formats -----------------------------------------------------------------------------
def _lines_of(path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


@pytest.fixture(scope="module")
def text_logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    ft = _table(60)
    out = {}
    for suffix in (".asc", ".csv", ".log", ".trc"):
        path = folder / f"base{suffix}"
        write_log(path, ft)
        out[suffix] = (path, read_log(path))
    return out


def _frame_lines(lines, suffix) -> list[int]:
    """0-based indexes of the lines that hold frames."""
    if suffix == ".asc":
        return [i for i, ln in enumerate(lines) if " Rx " in ln]
    if suffix == ".csv":
        return list(range(1, len(lines)))
    if suffix == ".trc":
        return [i for i, ln in enumerate(lines) if " DT " in ln]
    return list(range(len(lines)))


GARBAGE = {".asc": "this line is garbage\n", ".csv": "garbage,line\n",
           ".log": "garbage line here\n", ".trc": "garbage line\n"}


@pytest.mark.parametrize("suffix", [".asc", ".csv", ".log", ".trc"])
@pytest.mark.parametrize("at", ["first_frame", "middle", "last"])
def test_garbage_line(tmp_path, text_logs, suffix, at):
    base, good = text_logs[suffix]
    lines = _lines_of(base)
    frames = _frame_lines(lines, suffix)
    pos = {"first_frame": frames[0], "middle": frames[len(frames) // 2],
           "last": frames[-1] + 1}[at]
    lines.insert(pos, GARBAGE[suffix])
    path = tmp_path / f"garbage{suffix}"
    path.write_text("".join(lines))
    err = _raises(path)
    assert err.line == pos + 1 and f"line {pos + 1}" in str(err)
    report = ReadReport()
    got = read_log(path, errors="skip", report=report)
    assert report.skipped == 1 and not report.truncated
    assert report.problems[0].line == pos + 1
    np.testing.assert_array_equal(got.timestamp, good.timestamp)
    np.testing.assert_array_equal(got.data, good.data)
    np.testing.assert_array_equal(got.channel, good.channel)


def _asc_bad_data(line: str) -> str:
    toks = line.split()              # time, channel, id, Rx, d, dlc, first data byte, ...
    toks[6] = "ZZ"
    return "   " + " ".join(toks) + "\n"


BAD_HEX = {
    ".asc": _asc_bad_data,
    ".csv": lambda ln: ",".join([ln.split(",")[0], "0xZZ1"] + ln.split(",")[2:]),
    ".log": lambda ln: ln.replace("#", "#ZZ", 1),
    ".trc": lambda ln: ln.rstrip("\n")[:-2] + "QQ\n",
}


@pytest.mark.parametrize("suffix", [".asc", ".csv", ".log", ".trc"])
@pytest.mark.parametrize("which", [0, 7, -1])
def test_bad_hex_record(tmp_path, text_logs, suffix, which):
    base, good = text_logs[suffix]
    lines = _lines_of(base)
    frames = _frame_lines(lines, suffix)
    pos = frames[which]
    lines[pos] = BAD_HEX[suffix](lines[pos])
    path = tmp_path / f"badhex{suffix}"
    path.write_text("".join(lines))
    err = _raises(path)
    assert err.line == pos + 1
    report = ReadReport()
    got = read_log(path, errors="skip", report=report)
    assert report.skipped == 1 and report.problems[0].line == pos + 1
    keep = np.ones(len(good), bool)
    keep[frames.index(pos)] = False
    np.testing.assert_array_equal(got.timestamp, good.timestamp[keep])
    np.testing.assert_array_equal(got.data, good.data[keep])
    np.testing.assert_array_equal(got.arbitration_id, good.arbitration_id[keep])


@pytest.mark.parametrize("suffix, line, match", [
    (".asc", "   0.500000 1  123             Rx   d 8 01 02 03\n", "payload has 3 bytes"),
    (".log", "(1700000000.500000) can0 123#0102030 R\n", "payload has 4 bytes but the DLC says 3"),
    (".csv", "1700000000.5,0x123,0,0,0,8,AQID\n", "payload has 3 bytes but the DLC says 8"),
    (".csv", "1700000000.5,0x7fffffffff,1,0,0,0,\n", "does not fit 29 bits"),
    (".trc", "      9        10.000 DT 1      0123 Rx -  8    01 02\n", "payload has 2 bytes"),
])
def test_inconsistent_record(tmp_path, text_logs, suffix, line, match):
    base, good = text_logs[suffix]
    lines = _lines_of(base)
    pos = _frame_lines(lines, suffix)[3]
    lines.insert(pos, line)
    path = tmp_path / f"inconsistent{suffix}"
    path.write_text("".join(lines))
    err = _raises(path, match)
    assert err.line == pos + 1
    report = ReadReport()
    got = read_log(path, errors="skip", report=report)
    assert report.skipped == 1
    np.testing.assert_array_equal(got.timestamp, good.timestamp)


def test_truncated_trc_v13_line(tmp_path, realdata):
    """python-can drops a TRC line with missing data bytes (IndexError) without a word."""
    lines = (realdata / "foxbms-2/can-log.trc").read_text().splitlines(keepends=True)
    pos = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("4)"))
    lines[pos] = lines[pos][:lines[pos].index("02 03") + 5] + "\n"
    path = tmp_path / "short.trc"
    path.write_text("".join(lines))
    assert len(list(can.LogReader(str(path)))) == 8            # python-can: silently 8 of 9
    err = _raises(path, "not a complete TRC frame record")
    assert err.line == pos + 1
    report = ReadReport()
    assert len(read_log(path, errors="skip", report=report)) == 8
    assert report.skipped == 1


def test_undecodable_bytes_in_asc(tmp_path, realdata):
    raw = (realdata / PCAN / "logfile.asc").read_bytes().splitlines(keepends=True)
    raw.insert(12, b"\xff\xfe\x00garbage\x81\n")
    path = tmp_path / "binary.asc"
    path.write_bytes(b"".join(raw))
    err = _raises(path, "not an ASC record")
    assert err.line == 13
    report = ReadReport()
    assert len(read_log(path, errors="skip", report=report)) == 20
    assert report.skipped == 1


@pytest.mark.parametrize("suffix", [".asc.gz", ".log.gz"])
def test_truncated_gzip_text(tmp_path, suffix):
    ft = _table(3000)
    path = tmp_path / f"x{suffix}"
    write_log(path, ft)
    raw = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(raw[:len(raw) // 2])
    err = _raises(cut, "compressed stream")
    assert err.line is not None and err.line > 1
    report = ReadReport()
    got = read_log(cut, errors="skip", report=report)
    assert report.truncated and 0 < len(got) < len(ft)


def test_not_gzip(tmp_path, realdata):
    path = tmp_path / "plain.asc.gz"
    path.write_bytes((realdata / PCAN / "logfile.asc").read_bytes())
    err = _raises(path, "compressed stream")
    assert err.line == 1


def test_many_bad_lines_are_capped_in_report(tmp_path, text_logs):
    base, good = text_logs[".log"]
    lines = _lines_of(base)
    mixed = []
    for ln in lines:
        mixed += [ln, "junk\n", "more junk\n"]
    path = tmp_path / "junk.log"
    path.write_text("".join(mixed))
    report = ReadReport()
    got = read_log(path, errors="skip", report=report)
    assert len(got) == len(good)
    assert report.skipped == 2 * len(lines)
    assert len(report.problems) == min(ReadReport.MAX_PROBLEMS, report.skipped)
    assert all(isinstance(p, LogFormatError) and p.line for p in report.problems)


# -- fuzz: nothing but LogFormatError ever escapes ------------------------------------------
@pytest.fixture(scope="module")
def fuzz_seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    ft = _table(40, fd=False)
    out = {}
    for suffix in (".asc", ".blf", ".csv", ".log", ".trc"):
        path = folder / f"seed{suffix}"
        write_log(path, ft, compression_level=0 if suffix == ".blf" else 1)
        out[suffix] = path.read_bytes()
    return folder, out


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(suffix=st.sampled_from([".asc", ".blf", ".csv", ".log", ".trc"]),
       edits=st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=0, max_size=6),
                                st.integers(0, 6)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.floats(0, 1)),
       errors=st.sampled_from(["raise", "skip"]))
def test_fuzzed_logs_raise_only_log_format_errors(fuzz_seeds, suffix, edits, cut, errors):
    folder, seeds = fuzz_seeds
    raw = bytearray(seeds[suffix])
    for where, new, drop in edits:
        i = int(where * len(raw))
        raw[i:i + drop] = new
    if cut is not None:
        raw = raw[:int(cut * len(raw))]
    path = folder / f"fuzz{suffix}"
    path.write_bytes(bytes(raw))
    report = ReadReport()
    try:
        ft = read_log(path, errors=errors, report=report)
    except LogFormatError as e:
        assert str(path) in str(e)
        assert isinstance(e, PackBMSError)
        return
    assert isinstance(ft, FrameTable)
    assert report.frames == len(ft)
    assert np.all(ft.dlc <= 64)
