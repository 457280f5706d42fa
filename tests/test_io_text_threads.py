"""Native text readers: the parallel path against the serial one (``PACKBMS_READ_THREADS=0``),
the kernels' fast paths against their general paths, and the SWAR helpers byte by byte.

The general path of each kernel follows python-can's readers (checked in test_io_native.py and
test_io_fuzz.py); the fast path must store exactly what the general path would for every line it
takes, and the slices parsed on worker threads must give the frames, counts, problems and line
numbers of one serial pass, wherever block and slice boundaries fall.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packbms.errors import LogFormatError
from packbms.io import FrameTable, ReadReport, iter_log, read_log, write_log
from packbms.io import native_text
from packbms.io.native_text import _TrcHeader
from packbms.kernels import text_scan as K
from test_io_native import assert_same


def _frames(n: int, seed: int, fd: bool = False) -> FrameTable:
    rng = np.random.default_rng(seed)
    ft = FrameTable.empty(n, 64 if fd else 8)
    ft.timestamp[:] = 1.7e9 + np.cumsum(rng.integers(1, 5000, n)) * 1e-6
    ext = rng.random(n) < 0.3
    ft.is_extended[:] = ext
    ft.arbitration_id[:] = np.where(ext, rng.integers(0, 1 << 29, n), rng.integers(0, 1 << 11, n))
    ft.dlc[:] = rng.integers(0, 9, n)
    if fd:
        big = rng.random(n) < 0.2
        ft.is_fd[:] = big
        ft.dlc[big] = rng.choice([12, 16, 24, 48, 64], big.sum())
    for i, d in enumerate(ft.dlc):
        ft.data[i, :d] = rng.integers(0, 256, d)
    ft.channel[:] = rng.integers(0, 3, n)
    return ft


# -- parallel == serial ----------------------------------------------------------------------
#: Bad records of each format (skipped with errors="skip", raised otherwise).
GARBAGE = {
    ".log": (b"garbage line DT\n", b"(1.5) can0 12G#00\n", b"(1.5) can0 123#0G\n"),
    ".asc": (b"garbage line DT\n", b"   12.5 1 1FFFFFFFFF Rx d 1 00\n",
             b"   12.5 1 123 Rx d 2 00\n"),
    ".trc": (b"garbage line DT\n", b"      9 1.5 DT 1 0100 Rx - 3 00 11\n",
             b"      9 1.5 DT 1 01G0 Rx - 1 00\n"),
}


@pytest.fixture(scope="module")
def text_logs(tmp_path_factory):
    """Each text format, with bad lines spread over the file, and its gzip twin."""
    folder = tmp_path_factory.mktemp("threads")
    out = {}
    for suffix, fd in ((".asc", True), (".log", True), (".trc", False)):
        path = folder / f"drive{suffix}"
        write_log(path, _frames(3000, seed=11, fd=fd))
        lines = path.read_bytes().splitlines(keepends=True)
        rng = np.random.default_rng(4)
        for at in sorted(rng.integers(20, len(lines), 12), reverse=True):
            lines.insert(int(at), GARBAGE[suffix][int(at) % len(GARBAGE[suffix])])
        path.write_bytes(b"".join(lines))
        gz = folder / f"drive{suffix}.gz"
        gz.write_bytes(gzip.compress(path.read_bytes()))
        out[suffix] = path, gz
    return out


def _read_all(path, threads: str, monkeypatch, errors="skip"):
    monkeypatch.setenv("PACKBMS_READ_THREADS", threads)
    report = ReadReport()
    ft = read_log(path, engine="native", errors=errors, report=report)
    chunks = list(iter_log(path, engine="native", errors=errors, chunk_frames=333))
    assert_same(FrameTable.concat(chunks), ft)
    report.chunk_widths = [c.width for c in chunks]
    return ft, report


@pytest.mark.parametrize("suffix", [".asc", ".log", ".trc"])
@pytest.mark.parametrize("block", [4093, 8192, 20011])
def test_slices_parsed_at_once_equal_one_serial_pass(text_logs, monkeypatch, suffix, block):
    """Odd and even block sizes cut lines anywhere; slices of 256 bytes and more are parsed on
    1 and 2 worker threads: the same frames, counts and problem lines as the serial pass."""
    path, gz = text_logs[suffix]
    monkeypatch.setattr(native_text, "BLOCK_BYTES", block)
    monkeypatch.setattr(native_text, "PARALLEL_MIN_BYTES", 256)
    for p in (path, gz):
        want, rw = _read_all(p, "0", monkeypatch)
        assert rw.skipped == 12 and len(want) == 3000
        lines = [i + 1 for i, ln in enumerate(path.read_bytes().splitlines(keepends=True))
                 if ln in GARBAGE[suffix]]
        assert [e.line for e in rw.problems] == lines
        for threads in ("2", "3"):
            got, rg = _read_all(p, threads, monkeypatch)
            assert_same(got, want)
            assert (rg.skipped, rg.ignored, rg.frames) == (rw.skipped, rw.ignored, rw.frames)
            assert (got.width, rg.chunk_widths) == (want.width, rw.chunk_widths)
            assert [str(e) for e in rg.problems] == [str(e) for e in rw.problems]


@pytest.mark.parametrize("block", [2048, 4093, 8192])
def test_dropped_rows_before_a_wide_frame_keep_its_payload(tmp_path, monkeypatch, block):
    """A timestamp that parses but is not finite drops its row after the slice is parsed; the
    CAN FD frame after it must still widen the output where it lands (a worker's slice once
    widened one row late and cut the payload to 8 bytes), also when the wide row itself is the
    one dropped, last in its slice."""
    monkeypatch.setattr(native_text, "BLOCK_BYTES", block)
    monkeypatch.setattr(native_text, "PARALLEL_MIN_BYTES", 256)
    wide = b"AB" * 16
    for case in range(3):
        lines = [b"(%d.%06d) can0 123#1122334455667788\n" % (1700000000 + i, i)
                 for i in range(600)]
        at = 150 + 97 * case
        lines[at] = b"(1.7976931348623159e308) can0 123#11\n"
        lines[at + 1 + case % 2] = b"(1700000500.000000) can0 456##1" + wide + b"\n"
        if case == 2:                            # the wide frame itself dropped, then the end
            lines[at] = b"(1.7976931348623159e308) can0 456##1" + wide + b"\n"
            lines = lines[:at + 1]
        path = tmp_path / f"drop{case}.log"
        path.write_bytes(b"".join(lines))
        want, rw = _read_all(path, "0", monkeypatch)
        assert rw.skipped == 1 and want.width == 64
        fd = np.nonzero(want.arbitration_id == 0x456)[0]
        if case < 2:
            assert bytes(want.data[fd[0], :16]) == bytes.fromhex(wide.decode())
        for threads in ("2", "3"):
            got, rg = _read_all(path, threads, monkeypatch)
            assert_same(got, want)
            assert (got.width, rg.chunk_widths) == (want.width, rw.chunk_widths)


@pytest.mark.parametrize("suffix", [".asc", ".log", ".trc"])
def test_first_error_raised_alike_with_threads(text_logs, monkeypatch, suffix):
    """errors="raise": the first bad line is raised, with its line number, in both modes (a
    worker's slice may hold later errors; the earlier one wins)."""
    path, _ = text_logs[suffix]
    monkeypatch.setattr(native_text, "BLOCK_BYTES", 8192)
    monkeypatch.setattr(native_text, "PARALLEL_MIN_BYTES", 256)
    raised = []
    for threads in ("0", "2", "3"):
        monkeypatch.setenv("PACKBMS_READ_THREADS", threads)
        with pytest.raises(LogFormatError) as info:
            read_log(path, engine="native")
        raised.append((info.value.line, str(info.value)))
        seen = 0
        with pytest.raises(LogFormatError):
            for chunk in iter_log(path, engine="native", chunk_frames=100):
                seen += len(chunk)
        assert seen < 3000
    assert raised[0] == raised[1] == raised[2]
    assert raised[0][0] == next(i + 1 for i, ln in enumerate(
        path.read_bytes().splitlines(keepends=True)) if ln in GARBAGE[suffix])


def test_worker_output_grows_and_widens_like_the_serial_pass(tmp_path, monkeypatch):
    """A worker's slice with more rows than its first guess, and with frames that need 64-byte
    payloads: the serial result, chunk widths included (the output widens at the same frame)."""
    path = tmp_path / "fd.log"
    ft = _frames(2000, seed=2).widened(64)
    ft.is_fd[1500:] = True
    ft.dlc[1500:] = 64
    ft.data[1500:] = 7
    write_log(path, ft)
    monkeypatch.setattr(native_text, "BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(native_text, "PARALLEL_MIN_BYTES", 256)
    want, rw = _read_all(path, "0", monkeypatch)
    got, rg = _read_all(path, "2", monkeypatch)
    assert_same(got, want)
    assert_same(got, read_log(path, engine="python-can"))
    assert rg.chunk_widths == rw.chunk_widths and 8 in rw.chunk_widths and 64 in rw.chunk_widths
    short = tmp_path / "short.log"                   # 12-byte lines: more rows than guessed
    short.write_bytes(b"".join(b"(%d) c %X#\n" % (i % 10, i % 16) for i in range(40_000)))
    want, _ = _read_all(short, "0", monkeypatch)
    got, _ = _read_all(short, "2", monkeypatch)
    assert_same(got, want)
    assert len(got) == 40_000


def test_long_lines_and_cut_gzip_alike_with_threads(tmp_path, monkeypatch):
    """Lines longer than a block (kept, the buffer grows) and longer than MAX_LINE_BYTES
    (skipped), and a gzip stream cut short: threads change nothing."""
    monkeypatch.setattr(native_text, "BLOCK_BYTES", 512)
    monkeypatch.setattr(native_text, "MAX_LINE_BYTES", 3000)
    monkeypatch.setattr(native_text, "PARALLEL_MIN_BYTES", 256)
    lines = [b"(%d.5) can0 %03X#0102\n" % (i, i) for i in range(600)]
    lines[100] = b"(100.5) can0 064#" + b"AB" * 2000 + b"\n"        # a bad record, not kept
    lines[300] = b"(300.5) can0 12C#" + b"AB" * 8 + b" " * 1500 + b"\n"   # kept
    lines[301] = b"(301.5)   can0   12D#01" + b" " * 900 + b"\n"
    path = tmp_path / "long.log"
    path.write_bytes(b"".join(lines))
    gz = tmp_path / "cut.log.gz"
    gz.write_bytes(gzip.compress(path.read_bytes())[:-300])
    for p in (path, gz):
        want, rw = _read_all(p, "0", monkeypatch)
        got, rg = _read_all(p, "2", monkeypatch)
        assert_same(got, want)
        assert [str(e) for e in rg.problems] == [str(e) for e in rw.problems]
        assert (rg.skipped, rg.truncated) == (rw.skipped, rw.truncated)
    assert rw.truncated and 300 < len(want) < 599
    assert rw.problems[0].line == 101
    full, _ = _read_all(path, "2", monkeypatch)
    assert len(full) == 599 and full.arbitration_id[299] == 0x12C


@pytest.mark.parametrize("name", [
    "python-can-4.6.1-testdata/logfile.asc", "python-can-4.6.1-testdata/issue_1256.asc",
    "python-can-4.6.1-testdata/test_CanMessage.asc.gz",
    "python-can-4.6.1-testdata/test_CanMessage_V1_1.trc",
    "python-can-4.6.1-testdata/test_CanMessage_V2_1.trc", "foxbms-2/can-log.trc",
])
def test_real_text_logs_alike_with_threads(realdata, monkeypatch, name):
    """Real files cut into 300-byte blocks and parsed in slices: the serial frames, counts and
    problems, and python-can's frames."""
    monkeypatch.setattr(native_text, "BLOCK_BYTES", 300)
    monkeypatch.setattr(native_text, "PARALLEL_MIN_BYTES", 64)
    want, rw = _read_all(realdata / name, "0", monkeypatch)
    got, rg = _read_all(realdata / name, "3", monkeypatch)
    assert_same(got, want)
    assert (rg.ignored, rg.skipped, rg.chunk_widths) == (rw.ignored, rw.skipped, rw.chunk_widths)
    assert_same(got, read_log(realdata / name, engine="python-can"))


def test_default_thread_count(monkeypatch):
    monkeypatch.setenv("PACKBMS_READ_THREADS", "3")
    assert native_text._parse_threads(10) == 3
    monkeypatch.setenv("PACKBMS_READ_THREADS", "0")
    assert native_text._parse_threads(None) == 1
    monkeypatch.delenv("PACKBMS_READ_THREADS")
    assert native_text._parse_threads(native_text.PARALLEL_MIN_BYTES - 1) == 1
    assert 1 <= native_text._parse_threads(None) <= native_text.MAX_DEFAULT_THREADS


# -- fast path == general path ------------------------------------------------------------------
def _scan(kern, raw: bytes, padded: bool, fparams, iparams, width: int, rng):
    """One kernel call over ``raw``: with ``padded`` the array goes on with random bytes past the
    end (lines take the fast path), else it ends with ``raw`` (general path only)."""
    tail = rng.choice(np.frombuffer(b"0123456789 \t\nabcdefABCDEF#.()Rx", np.uint8),
                      K.FAST_REACH + 40) if padded else np.zeros(0, np.uint8)
    buf = np.concatenate([np.frombuffer(raw, np.uint8), tail])
    buf.flags.writeable = False
    cap = 64
    ts = np.full(cap, -1.0)
    aid = np.zeros(cap, np.uint32)
    flags = np.zeros((4, cap), np.bool_)
    dc = np.zeros((2, cap), np.uint8)
    data = np.full((cap, width), 0xEE, np.uint8)     # stale bytes: every row is overwritten
    events = np.zeros((256, K.EVENT_COLUMNS), np.int64)
    state = np.zeros(K.STATE_SIZE, np.int64)
    state[K.S_LINE] = 1
    status = kern(buf, len(raw), fparams, iparams, ts, aid, flags, dc, data, events, state)
    k = int(state[K.S_K])
    return (status, state.tolist(), ts[:k].tobytes(), aid[:k].tolist(), flags[:, :k].tolist(),
            dc[:, :k].tolist(), data[:k].tolist(), events[: state[K.S_EVENTS]].tolist())


def _check_fast_like_general(kern, lines, fparams, iparams):
    rng = np.random.default_rng(len(lines))
    raw = b"".join(lines)
    for width in (8, 64):
        general = _scan(kern, raw, False, fparams, iparams, width, rng)
        fast = _scan(kern, raw, True, fparams, iparams, width, rng)
        assert fast == general


def _pick(*options):
    return st.sampled_from(options)


def _mostly(draw, usual, *unusual):
    """``usual`` 9 times in 10, else one of the unusual forms."""
    if draw(st.integers(0, 9)) or not unusual:
        return draw(usual)
    return draw(st.one_of(*unusual))


_HEXCH = "0123456789abcdefABCDEF"


def _text(alphabet, lo, hi):
    return st.text(alphabet, min_size=lo, max_size=hi).map(str.encode)


def _hex(lo, hi):
    return _text(_HEXCH, lo, hi)


def _blanks(draw, usual=b" "):
    """Blanks between fields; now and then a run long enough to push the fields past the 64
    bytes the ASC and TRC fast paths look at first."""
    return _mostly(draw, st.just(usual), _text(" \t", 1, 4), _pick(b"\x0b", b" \x0b", b""),
                   _text(" ", 30, 60))


@st.composite
def _time_token(draw):
    usual = st.builds(lambda a, b: a + b"." + b, _text("0123456789", 1, 10),
                      _text("0123456789", 1, 6))
    return _mostly(draw, usual,
                   st.builds(lambda a, b: a + b"." + b, _text("0123456789", 0, 20),
                             _text("0123456789", 0, 20)),
                   _pick(b"1e5", b"-1.5", b"+2.0", b"inf", b"nan", b"1_0.5", b".5", b"5.",
                         b"1.2.3", b"", b"x", b"0000000000000000001.5"))


@st.composite
def _data_bytes(draw, n, sep):
    """n hex pairs, each after ``sep`` blanks (a pair now and then 1 or 3 digits long)."""
    out = b""
    for _ in range(n):
        out += _blanks(draw, sep) + _mostly(draw, _hex(2, 2), _hex(1, 1), _hex(3, 3))
    return out


@st.composite
def candump_lines(draw):
    ts = draw(_time_token())
    chan = _mostly(draw, _pick(b"can0", b"vcan12", b"x"), _pick(b"can\xc3\xa9", b"", b"c4n1 "))
    can_id = _mostly(draw, _pick(3, 8).flatmap(lambda n: _hex(n, n)), _hex(0, 10),
                     _pick(b"12x", b"1_2", b"-1", b"+F"))
    sep = _mostly(draw, st.just(b"#"), _pick(b"##1", b"##", b"#R", b"#r5", b"", b"##x"))
    data = _mostly(draw, st.integers(0, 8).flatmap(lambda n: _hex(2 * n, 2 * n)), _hex(0, 20),
                   _pick(b"0G", b"+F", b"-0"))
    tail = _mostly(draw, _pick(b"", b" R", b" T"), _pick(b" r", b" t", b" x", b" R ", b" RR"))
    cr = _mostly(draw, st.just(b""), st.just(b"\r"))
    return (b"(" + ts + b")" + _blanks(draw) + chan + _blanks(draw) + can_id + sep + data + tail
            + cr + b"\n")


@st.composite
def asc_lines(draw):
    lead = _mostly(draw, _pick(b" ", b"   "), _text(" \t", 0, 3))
    ts = draw(_time_token())
    chan = _mostly(draw, _pick(b"1", b"2", b"12"), _pick(b"0", b"1234567", b"CANFD", b"x"))
    can_id = _mostly(draw, st.builds(bytes.__add__, _hex(1, 8), _pick(b"", b"x", b"X")),
                     st.builds(bytes.__add__, _hex(0, 10), _pick(b"", b"x", b"y")))
    direction = _mostly(draw, _pick(b"Rx", b"Tx"), _pick(b"rx", b"TX", b"Ry", b"R", b"Rxx"))
    kind = _mostly(draw, st.just(b"d"), _pick(b"D", b"r", b"R", b"dd", b"x", b"d\x01"))
    code = _mostly(draw, st.integers(0, 8), st.integers(9, 15))
    dlc = _mostly(draw, st.just(b"%X" % code), _pick(b"f", b"10", b"G", b""))
    n = _mostly(draw, st.just(min(code, 8)), st.integers(0, 10))
    data = draw(_data_bytes(n, b" "))
    tail = _mostly(draw, _pick(b"", b"  Length = 227000 BitCount = 59 ID = 123"),
                   _pick(b" x", b"\x0b", b" \x0b"))
    cr = _mostly(draw, st.just(b""), st.just(b"\r"))
    return (lead + ts + _blanks(draw) + chan + _blanks(draw, b"  ") + can_id
            + _blanks(draw, b"             ") + direction + _blanks(draw, b"   ") + kind
            + _blanks(draw) + dlc + data + tail + cr + b"\n")


@st.composite
def trc_lines(draw):
    number = _mostly(draw, _text("0123456789", 1, 7), _pick(b"", b"x", b"-1"))
    ts = draw(_time_token())
    kind = _mostly(draw, st.just(b"DT"), _pick(b"FD", b"RR", b"dt", b"D", b"DTX"))
    bus = _mostly(draw, _pick(b"1", b"2"), _pick(b"0", b"1234567", b"-"))
    can_id = _mostly(draw, _pick(4, 8).flatmap(lambda n: _hex(n, n)), _hex(0, 10))
    direction = _mostly(draw, _pick(b"Rx", b"Tx"), _pick(b"x", b""))
    reserved = _mostly(draw, st.just(b"-"), _pick(b"", b"--"))
    dlc = _mostly(draw, st.integers(0, 8), st.integers(9, 15))
    n = _mostly(draw, st.just(dlc), st.integers(0, 10))
    dlc_text = _mostly(draw, st.just(b"%d" % dlc), _pick(b"x", b"", b"08"))
    data = draw(_data_bytes(n, b" "))
    cr = _mostly(draw, st.just(b"\r"), _pick(b"", b" \r", b"\r\r"))
    fields = (number, ts, kind, bus, can_id, direction, reserved, dlc_text)
    seps = (b"     ", b" ", b" ", b"  ", b" ", b" ", b"  ", b"   ")
    body = b"  "
    for sep, field in zip(seps, fields):
        body += field + _blanks(draw, sep)
    return body.rstrip(b" \t") + data + cr + b"\n"


def _trc_params(columns=b"N,O,T,B,I,d,R,L,D"):
    header = _TrcHeader("x.trc")
    header.line(";$FILEVERSION=2.1", 1)
    header.line(";$STARTTIME=45000.25", 2)
    header.line(";$COLUMNS=" + columns.decode(), 3)
    return header.finish(4)


_SETTINGS = settings(max_examples=100, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.lists(candump_lines(), min_size=1, max_size=12), st.booleans())
def test_candump_fast_path_stores_what_the_general_path_would(lines, cut_last):
    if cut_last:
        lines[-1] = lines[-1].rstrip(b"\n")         # the last line without its newline
    _check_fast_like_general(K.scan_candump, lines, np.zeros(1), np.zeros(1, np.int64))


@_SETTINGS
@given(st.lists(asc_lines(), min_size=1, max_size=12), st.booleans())
def test_asc_fast_path_stores_what_the_general_path_would(lines, cut_last):
    if cut_last:
        lines[-1] = lines[-1].rstrip(b"\n")
    for base in (16, 10):
        _check_fast_like_general(K.scan_asc, lines, np.zeros(1), np.array([base], np.int64))


@_SETTINGS
@given(st.lists(trc_lines(), min_size=1, max_size=12), st.booleans())
def test_trc_fast_path_stores_what_the_general_path_would(lines, cut_last):
    if cut_last:
        lines[-1] = lines[-1].rstrip(b"\n")
    fparams, iparams = _trc_params()
    _check_fast_like_general(K.scan_trc, lines, fparams, iparams)


def test_fast_paths_take_the_usual_lines(tmp_path):
    """The fast paths do take the lines the writers write (else the tests above prove little):
    a run over a whole block stops only at its end."""
    ft = _frames(500, seed=8)
    for suffix in (".asc", ".log", ".trc"):
        path = tmp_path / f"usual{suffix}"
        write_log(path, ft)
        raw = path.read_bytes()
        buf = np.concatenate([np.frombuffer(raw, np.uint8), np.zeros(K.FAST_REACH, np.uint8)])
        buf.flags.writeable = False                 # the readers' kind of array: no new compile
        lines = raw.splitlines(keepends=True)
        if suffix == ".asc":
            first = next(i for i, ln in enumerate(lines) if b"Start of" in ln) + 1
        else:
            first = next(i for i, ln in enumerate(lines) if not ln.startswith(b";"))
        start = sum(len(ln) for ln in lines[:first])
        sink = native_text.FrameSink(600, 8)
        args = (sink.ts, sink.aid, sink.flags, sink.dc, sink.data, 0)
        if suffix == ".asc":
            pos, k = K._asc_run(buf, start, len(raw), *args)
        elif suffix == ".log":
            pos, k = K._candump_run(buf, start, len(raw), *args)
        else:
            header = _TrcHeader(path)
            for i, ln in enumerate(lines[:first]):
                header.line(ln.decode(), i + 1)
            pos, k = K._trc_run(buf, start, len(raw), header.finish(first)[0][0], *args)
        assert k == 500, (suffix, raw[pos:pos + 80])
        sink.k = k
        assert_same(sink.table(), read_log(path, engine="python-can"))


@pytest.mark.parametrize("suffix, line", [
    (".asc", b"   1.500000 1  123" + b" " * 50 + b"Rx   d 3 01 02 03\n"),
    (".asc", b" 3.5 2  1FFx   Tx   d 8 01 02 03 04 05 06 07 08" + b" " * 30 + b"x\n"),
    (".asc", b" 123456789.123456 2  18FEF100x  Rx  d 8 01 02 03 04 05 06 07 08\r\n"),
    (".trc", b"      7       123.456 DT" + b" " * 50 + b"1  0100 Rx -  2    AB CD\r\n"),
    (".trc", b"  1  12345678.9 DT 1 18FEF100 Tx - 8 01 02 03 04 05 06 07 08  \r\n"),
])
def test_long_usual_lines_take_the_field_by_field_fast_path(suffix, line):
    """Lines whose fields do not fit the 64-byte bitmap are parsed field by field, still on the
    fast path, with the general path's result."""
    buf = np.frombuffer(line + b"\0" * K.FAST_REACH, np.uint8)
    sink = native_text.FrameSink(4, 8)
    args = (sink.ts, sink.aid, sink.flags, sink.dc, sink.data, 0)
    if suffix == ".asc":
        pos, k = K._asc_run(buf, 0, len(line), *args)
        _check_fast_like_general(K.scan_asc, [line], np.zeros(1), np.array([16], np.int64))
    else:
        fparams, iparams = _trc_params()
        pos, k = K._trc_run(buf, 0, len(line), fparams[0], *args)
        _check_fast_like_general(K.scan_trc, [line], fparams, iparams)
    assert (pos, k) == (len(line), 1)


# -- SWAR helpers ----------------------------------------------------------------------------
def _words(rng, n=4000):
    """Words whose bytes are every byte value (in the first position) and random others."""
    out = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    out[:256, 0] = np.arange(256)
    out[256:512, 7] = np.arange(256)
    return out


@pytest.mark.parametrize("name, truth", [
    ("_digit_mask", lambda b: 48 <= b <= 57),
    ("_hex_mask", lambda b: chr(b) in "0123456789abcdefABCDEF"),
    ("_blank_mask", lambda b: b in (9, 32)),
    ("_token_mask", lambda b: b > 32),
    ("_newline_mask", lambda b: b == 10),
])
def test_swar_masks_flag_exactly_their_bytes(name, truth):
    fn = getattr(K, name)
    for row in _words(np.random.default_rng(1)):
        mask = int(fn(np.uint64(int.from_bytes(row.tobytes(), "little"))))
        want = sum(0x80 << (8 * j) for j, b in enumerate(row) if truth(int(b)))
        assert mask == want, (name, row)


def test_swar_numbers():
    rng = np.random.default_rng(2)
    for _ in range(3000):
        digits = "".join(rng.choice(list("0123456789"), rng.integers(0, 20)))
        rest = bytes(rng.choice(list(b".x \n#"), 1)) + bytes(rng.integers(0, 256, 16, np.uint8))
        raw = (digits.encode() + rest)[:16]
        w = [np.uint64(int.from_bytes(raw[i:i + 8], "little")) for i in (0, 8)]
        count, value = K._digits16(*w)
        if len(digits) >= 16:                       # 16 digits may go on past the words
            assert count == 17
        else:
            assert (count, value) == (len(digits), int(digits or "0"))
        hexs = "".join(rng.choice(list(_HEXCH), rng.integers(1, 9)))
        w = np.uint64(int.from_bytes((hexs.encode() + b"#" * 8)[:8], "little"))
        assert K._hex_lead(w, np.int64(len(hexs))) == int(hexs, 16)
        if len(hexs) == 8:
            assert int(K._hex_bytes4(w)).to_bytes(4, "little") == bytes.fromhex(hexs)
