"""The native BLF reader with worker threads gives exactly what it gives without them
(``PACKBMS_READ_THREADS=0``): the same frames, chunks (lengths and payload widths), report counts,
problems and errors, on files whose objects straddle containers and batches of containers, and
on truncated and corrupted files, in ``errors="raise"`` and ``errors="skip"`` modes."""

from __future__ import annotations

import gzip
import os
import random
import struct
import threading
import time
import zlib
from contextlib import contextmanager

import can
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packbms.errors import LogFormatError
from packbms.io import FrameTable, ReadReport, iter_log, read_log, write_log
from packbms.io import native_blf
from packbms.kernels import blf_scan
from strategies import blf_objects, byte_mutations, frame_tables

#: (PACKBMS_READ_THREADS, objects per batch): the reference first, then one worker inflating
#: (the caller parses), and two or three workers inflating and parsing, with batches of one,
#: a few and many containers (batch boundaries everywhere, or nowhere).
REFERENCE = ("0", 16)
MODES = [("1", 2), ("2", 1), ("2", 3), ("2", 16), ("3", 2)]
COLUMNS = ("timestamp", "arbitration_id", "is_extended", "is_fd", "is_error", "is_remote", "dlc",
           "channel", "data")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


@contextmanager
def threads_mode(threads: str, batch: int):
    """Read with ``threads`` workers and ``batch`` objects per batch, whatever the file size."""
    saved = (os.environ.get("PACKBMS_READ_THREADS"), native_blf.BATCH_OBJECTS,
             native_blf.PREFETCH_MIN_BYTES)
    os.environ["PACKBMS_READ_THREADS"] = threads
    native_blf.BATCH_OBJECTS = batch
    native_blf.PREFETCH_MIN_BYTES = 0
    try:
        yield
    finally:
        env, native_blf.BATCH_OBJECTS, native_blf.PREFETCH_MIN_BYTES = saved
        if env is None:
            os.environ.pop("PACKBMS_READ_THREADS", None)
        else:
            os.environ["PACKBMS_READ_THREADS"] = env


def _table_key(ft: FrameTable) -> tuple:
    return (len(ft), ft.data.shape[1]) + tuple(getattr(ft, c).tobytes() for c in COLUMNS)


def _report_key(report: ReadReport) -> tuple:
    return (report.frames, report.skipped, report.ignored, report.truncated,
            tuple((str(p), p.offset) for p in report.problems))


def outcome(path, errors: str = "raise", chunk: int = 7) -> dict:
    """Everything a caller can observe: read_log's table and report or its error; iter_log's
    chunks, and the error after them if any."""
    out = {}
    report = ReadReport()
    try:
        out["read"] = _table_key(read_log(path, errors=errors, report=report, engine="native"))
    except LogFormatError as e:
        out["read"] = ("error", str(e), e.offset)
    out["read_report"] = _report_key(report)
    report = ReadReport()
    chunks = []
    try:
        for c in iter_log(path, chunk_frames=chunk, errors=errors, report=report,
                          engine="native"):
            chunks.append(_table_key(c))
    except LogFormatError as e:
        chunks.append(("error", str(e), e.offset))
    out["iter"] = chunks
    out["iter_report"] = _report_key(report)
    return out


def assert_all_modes_alike(path, errors: str = "raise", chunk: int = 7) -> dict:
    with threads_mode(*REFERENCE):
        want = outcome(path, errors, chunk)
    for mode in MODES:
        with threads_mode(*mode):
            got = outcome(path, errors, chunk)
        for key in want:
            assert got[key] == want[key], f"threads={mode[0]} batch={mode[1]}: {key} differs"
    return want


def _pc_write(path, ft: FrameTable, container_bytes: int) -> None:
    """python-can's writer: it cuts containers at a fixed size, so objects straddle them."""
    with can.BLFWriter(str(path)) as w:
        w.max_container_size = container_bytes
        for m in ft.to_messages():
            w.on_message_received(m)


def _mixed(n: int, seed: int) -> FrameTable:
    """Classic, extended, remote, error frames and a few CAN FD frames of every length."""
    rng = np.random.default_rng(seed)
    ft = FrameTable.empty(n, 64)
    ft.timestamp[:] = 1.7e9 + np.cumsum(rng.integers(1, 20_000, n)) * 1e-6
    ft.is_extended[:] = rng.random(n) < 0.3
    ft.arbitration_id[:] = np.where(ft.is_extended, rng.integers(0, 1 << 29, n),
                                    rng.integers(0, 0x800, n))
    ft.dlc[:] = rng.integers(0, 9, n)
    fd = rng.random(n) < 0.05
    ft.is_fd[fd] = True
    ft.dlc[fd] = rng.choice([0, 8, 12, 16, 20, 24, 32, 48, 64], fd.sum())
    ft.is_remote[:] = ~fd & (rng.random(n) < 0.05)
    ft.is_error[:] = ~fd & ~ft.is_remote & (rng.random(n) < 0.03)
    ft.data[:] = np.where((np.arange(64) < ft.dlc[:, None]) & ~ft.is_remote[:, None],
                          rng.integers(0, 256, (n, 64)), 0)
    ft.channel[:] = rng.integers(0, 3, n)
    return ft


def _objects_of(raw: bytes) -> list[tuple[int, int]]:
    """(offset, size) of the top-level objects of a BLF file."""
    out = []
    pos = struct.unpack_from("<L", raw, 4)[0]
    while pos + 16 <= len(raw):
        size = struct.unpack_from("<L", raw, pos + 8)[0]
        out.append((pos, size))
        pos += size + size % 4
    return out


@pytest.fixture(scope="module")
def straddling(tmp_path_factory):
    """A python-can file of many small containers (objects cut in two at every container end,
    FD frames appearing mid-file) and the frames written."""
    ft = _mixed(3000, seed=3)
    path = tmp_path_factory.mktemp("threads") / "straddling.blf"
    _pc_write(path, ft, container_bytes=2000)
    assert len(_objects_of(path.read_bytes())) > 40
    return ft, path


# -- whole files --------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 7, 1000, 10 ** 9])
def test_straddling_objects_same_in_every_mode(straddling, chunk):
    ft, path = straddling
    want = assert_all_modes_alike(path, chunk=chunk)
    got = read_log(path, engine="python-can")
    assert want["read"] == _table_key(got)              # and equal to python-can's reader
    assert want["read"][0] == len(ft)


def test_native_writer_files_same_in_every_mode(tmp_path):
    ft = _mixed(20_000, seed=4)
    path = tmp_path / "native.blf"
    write_log(path, ft)
    want = assert_all_modes_alike(path, chunk=4096)
    assert want["read"] == _table_key(ft.widened(64))


def test_late_wide_frame_widens_the_same_chunk(tmp_path):
    """The first CAN FD frame past 8 bytes comes late: chunks before it keep 8 payload columns,
    with or without threads."""
    ft = _mixed(4000, seed=5)
    ft.is_fd[:] = False
    ft.dlc[:] = np.minimum(ft.dlc, 8)
    ft.data[:, 8:] = 0
    ft.is_fd[3500] = True
    ft.is_remote[3500] = ft.is_error[3500] = False
    ft.dlc[3500] = 64
    ft.data[3500] = 7
    path = tmp_path / "late.blf"
    _pc_write(path, ft, container_bytes=3000)
    want = assert_all_modes_alike(path, chunk=1000)
    assert [c[1] for c in want["iter"]] == [8, 8, 8, 64]


def test_slow_timestamps_same_in_every_mode(tmp_path):
    """Relative times past 104 days (nanosecond offsets over 2**53) in every container."""
    ft = FrameTable.empty(3000)
    ft.timestamp[:] = 1.0e7 + np.arange(3000) * 0.123456789
    ft.dlc[:] = 2
    ft.data[:, :2] = 5
    path = tmp_path / "late.blf"
    _pc_write(path, ft, container_bytes=1500)
    want = assert_all_modes_alike(path)
    assert want["read"] == _table_key(read_log(path, engine="python-can"))


def test_top_level_objects_between_containers(tmp_path, straddling):
    """Objects that are not containers between containers (python-can skips them) are counted
    alike, and do not break the objects straddling the containers around them."""
    _, path = straddling
    raw = path.read_bytes()
    objs = _objects_of(raw)
    extra = struct.pack("<4sHHLL", b"LOBJ", 16, 1, 16 + 20, 65) + bytes(20)
    out = bytearray(raw[:objs[0][0]])
    for i, (pos, size) in enumerate(objs):
        out += raw[pos:pos + size + size % 4]
        if i % 5 == 2:
            out += extra
    struct.pack_into("<Q", out, 8, len(out))               # declared file size
    bad = tmp_path / "extra.blf"
    bad.write_bytes(bytes(out))
    want = assert_all_modes_alike(bad)
    assert want["read"] == _table_key(read_log(path, engine="native"))
    assert want["read_report"][2] == len(range(2, len(objs), 5))


def test_gzipped_same_in_every_mode(tmp_path, straddling):
    _, path = straddling
    packed = tmp_path / "copy.blf.gz"
    packed.write_bytes(gzip.compress(path.read_bytes(), 1))
    want = assert_all_modes_alike(packed, chunk=500)
    assert want["read"] == _table_key(read_log(path, engine="native"))


def test_every_inflater_same_in_every_mode(straddling, monkeypatch):
    _, path = straddling
    for name in native_blf.available_inflaters():
        monkeypatch.setenv("PACKBMS_INFLATER", name)
        assert_all_modes_alike(path, chunk=999)


def test_worker_timing_does_not_matter(straddling, monkeypatch):
    """Workers finishing in any order (random delays while inflating) change nothing."""
    ft, path = straddling
    with threads_mode(*REFERENCE):
        want = outcome(path, chunk=333)
    rnd = random.Random(7)
    inflate = native_blf._inflate

    def slow(*args):
        time.sleep(rnd.random() * 0.002)
        return inflate(*args)

    monkeypatch.setattr(native_blf, "_inflate", slow)
    for mode in [("2", 1), ("3", 2), ("4", 1)]:
        with threads_mode(*mode):
            assert outcome(path, chunk=333) == want


# -- damaged files ------------------------------------------------------------------------------
def _replace_container(raw: bytes, pos: int, size: int, body: bytes) -> bytearray:
    """``raw`` with the container object at ``pos`` (``size`` bytes) holding ``body`` deflated
    instead, and the file header's size updated."""
    packed = zlib.compress(body)
    new = 32 + len(packed)
    head = struct.pack("<4sHHLL", b"LOBJ", 16, 1, new, 10) + struct.pack("<H6xL4x", 2,
                                                                           len(body))
    out = bytearray(raw[:pos]) + head + packed + bytes(new % 4) + raw[pos + size + size % 4:]
    struct.pack_into("<Q", out, 8, len(out))
    return out


def _damage(raw: bytes, kind: str, which: int) -> bytes:
    objs = _objects_of(raw)
    pos, size = objs[which % len(objs)]
    out = bytearray(raw)
    if kind == "zlib":                         # bad zlib data: the container is skipped
        mid = pos + 32 + (size - 32) // 2
        out[mid:mid + 8] = bytes(8)
    elif kind == "stream":                     # a bad object inside the inflated stream
        body = zlib.decompress(raw[pos + 32:pos + size])
        at = body.find(b"LOBJ", 30)
        if at < 0:
            at = 0
        out = _replace_container(raw, pos, size, body[:at] + b"JUNK" + body[at + 4:])
    elif kind == "dlc":                        # a DLC over 64: a bad record
        body = bytearray(zlib.decompress(raw[pos + 32:pos + size]))
        at = body.find(b"LOBJ", 30)
        if at >= 0 and at + 48 <= len(body) and struct.unpack_from("<L", body, at + 12)[0] in (1,
                                                                                               86):
            body[at + 35] = 200
        out = _replace_container(raw, pos, size, bytes(body))
    elif kind == "cut":                        # the file ends inside an object
        out = out[:pos + size // 2]
    elif kind == "signature":                  # framing: no LOBJ where an object starts
        out[pos:pos + 4] = b"JUNK"
    return bytes(out)


@pytest.mark.parametrize("errors", ["raise", "skip"])
@pytest.mark.parametrize("kind", ["zlib", "stream", "dlc", "cut", "signature"])
@pytest.mark.parametrize("which", [0, 1, 5, 17, -1])
def test_damaged_files_same_in_every_mode(tmp_path, straddling, kind, which, errors):
    _, path = straddling
    bad = tmp_path / f"{kind}.blf"
    bad.write_bytes(_damage(path.read_bytes(), kind, which))
    want = assert_all_modes_alike(bad, errors=errors, chunk=250)
    if errors == "raise":
        assert want["read"][0] == "error"
        assert want["read"][2] is not None and f"byte offset {want['read'][2]}" in want["read"][1]
    else:
        assert want["read_report"][1] or want["read_report"][3]   # skipped or truncated
    if errors == "skip" and kind in ("zlib", "dlc"):
        # and what python-can's reader gives, resuming after a skipped container at its first
        # object header (a container whose stream is corrupted midway differs: the python-can
        # engine drops the frames before the damage in that container, the native reader keeps
        # them, with or without threads)
        report = ReadReport()
        theirs = read_log(bad, errors="skip", report=report, engine="python-can")
        assert want["read"][0] == len(theirs)
        assert want["read"] == _table_key(theirs.widened(want["read"][1]))
        assert want["read_report"][1] == report.skipped


@st.composite
def blf_files(draw, *, bad: bool = False):
    """Objects of every kind (strategies.blf_objects) cut into many zlib or stored containers,
    now and then a top-level object that is not a container between them."""
    objs = draw(blf_objects(max_objects=30, bad=bad))
    stream = b"".join(objs)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)]) if b > a]
    body = b""
    for piece in pieces:
        if draw(st.integers(0, 5)) == 0:
            body += struct.pack("<4sHHLL", b"LOBJ", 16, 1, 16 + 8, 65) + bytes(8)
        method = draw(st.sampled_from((0, 2)))
        packed = zlib.compress(piece) if method == 2 else piece
        size = 32 + len(packed)
        body += (struct.pack("<4sHHLL", b"LOBJ", 16, 1, size, 10)
                 + struct.pack("<H6xL4x", method, len(piece)) + packed + b"\x00" * (size % 4))
    start = draw(st.sampled_from(((0,) * 8, (2024, 5, 3, 9, 13, 45, 7, 123))))
    header = struct.pack("<4sLBBBBBBBBQQLL8H8H", b"LOGG", 144, 5, 0, 0, 0, 2, 6, 8, 1,
                         144 + len(body), 0, len(objs), 0, *start, *start)
    return header + b"\x00" * (144 - len(header)) + body


@settings(max_examples=60, **SETTINGS)
@given(raw=blf_files(bad=True), errors=st.sampled_from(["raise", "skip"]),
       chunk=st.integers(1, 12))
def test_generated_files_same_in_every_mode(tmp_path, raw, errors, chunk):
    """Every object type, header versions 1 and 2, padding, bad records, many containers."""
    path = tmp_path / "gen.blf"
    path.write_bytes(raw)
    assert_all_modes_alike(path, errors=errors, chunk=chunk)


@settings(max_examples=60, **SETTINGS)
@given(data=st.data(), errors=st.sampled_from(["raise", "skip"]))
def test_mutated_files_same_in_every_mode(tmp_path, straddling, data, errors):
    """Bytes flipped, inserted, deleted, the file cut: errors and skips the same in every
    mode."""
    _, path = straddling
    raw = data.draw(byte_mutations(path.read_bytes()[:30_000], max_edits=3))
    bad = tmp_path / "mutated.blf"
    bad.write_bytes(raw)
    assert_all_modes_alike(bad, errors=errors, chunk=data.draw(st.integers(1, 400)))


@settings(max_examples=25, **SETTINGS)
@given(ft=frame_tables(min_size=1, max_size=60), container=st.integers(140, 400))
def test_python_can_files_read_like_python_can_in_every_mode(tmp_path, ft, container):
    """(python-can's writer loses data when a container is smaller than an object: at least
    136 bytes, a 64-byte CAN FD frame.)"""
    path = tmp_path / "pc.blf"
    _pc_write(path, ft, container_bytes=container)
    want = assert_all_modes_alike(path, chunk=5)
    assert want["read"] == _table_key(read_log(path, engine="python-can"))


# -- the machinery ------------------------------------------------------------------------------
def test_stopping_early_shuts_the_workers_down(straddling):
    _, path = straddling
    before = threading.active_count()
    with threads_mode("2", 1):
        for _ in range(3):
            it = iter_log(path, chunk_frames=10)
            next(it)
            it.close()
        with pytest.raises(LogFormatError):
            bad = path.with_name("stop.blf")
            bad.write_bytes(_damage(path.read_bytes(), "dlc", 3))
            for _ in iter_log(bad, chunk_frames=10):
                pass
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_thread_count_defaults(monkeypatch):
    """One worker per core this process may run on (its affinity), up to MAX_DEFAULT_THREADS;
    none for small files or one core; $PACKBMS_READ_THREADS wins, capped at MAX_THREADS."""
    def cores(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: n)

    monkeypatch.delenv("PACKBMS_READ_THREADS", raising=False)
    cores(2)
    assert native_blf._read_threads(10 << 20) == 2
    assert native_blf._read_threads(1000) == 0               # small file
    assert native_blf._read_threads(None) == 2               # .blf.gz: size unknown
    cores(64)
    assert native_blf._read_threads(10 << 20) == native_blf.MAX_DEFAULT_THREADS
    cores(1)
    assert native_blf._read_threads(10 << 20) == 0
    monkeypatch.setenv("PACKBMS_READ_THREADS", "3")
    assert native_blf._read_threads(1000) == 3
    monkeypatch.setenv("PACKBMS_READ_THREADS", "1000")
    assert native_blf._read_threads(1000) == native_blf.MAX_THREADS


def test_stop_position_in_the_kernel():
    """state[S_STOP]: the walk stops before the first object found at or after it and says
    where that object was found."""
    obj = struct.pack("<4sHHLLLHHQ", b"LOBJ", 32, 1, 48, 1, 2, 0, 0, 5) + bytes(16)
    buf = np.frombuffer(obj * 3, np.uint8)
    sink = native_blf.FrameSink(8)
    state = np.zeros(blf_scan.STATE_SIZE, np.int64)
    state[blf_scan.S_STOP] = 48
    state[blf_scan.S_FOUND] = -1
    status = native_blf._scan(buf, 0.0, sink, native_blf.new_events(), state)
    assert status == blf_scan.DONE
    assert state[blf_scan.S_K] == 1 and state[blf_scan.S_FOUND] == 48
    assert state[blf_scan.S_POS] == 48
    state[:] = 0
    status = native_blf._scan(buf, 0.0, sink, native_blf.new_events(), state)
    assert status == blf_scan.DONE and state[blf_scan.S_K] == 3 and state[blf_scan.S_POS] == 144


@pytest.mark.parametrize("name", native_blf.available_inflaters())
def test_workers_parse_and_join_straddling_objects(straddling, monkeypatch, name):
    """Not a fallback in disguise: with two workers, the workers take every container (with
    libdeflate inflated into one buffer per batch and parsed as one stream; else one by one,
    joining the objects cut by each container end without copying the container), the
    caller's thread none."""
    _, path = straddling
    counts = {"stream": 0, "quiet": 0, "caller": 0, "joined": 0, "not joined": 0}
    stream, quiet, take, joined = (native_blf._Output.take_stream,
                                   native_blf._Output.take_quietly, native_blf._Output.take,
                                   native_blf._Output._joined)

    def count_stream(self, buf, total, ends, items):
        ok = stream(self, buf, total, ends, items)
        counts["stream"] += len(items) if ok else 0
        return ok

    def count_quiet(self, items):
        n = quiet(self, items)
        counts["quiet"] += n
        return n

    def count_take(self, *args):
        counts["caller"] += 1
        return take(self, *args)

    def count_joined(self, *args):
        got = joined(self, *args)
        counts["joined" if got is not None else "not joined"] += 1
        return got

    monkeypatch.setenv("PACKBMS_INFLATER", name)
    monkeypatch.setattr(native_blf._Output, "take_stream", count_stream)
    monkeypatch.setattr(native_blf._Output, "take_quietly", count_quiet)
    monkeypatch.setattr(native_blf._Output, "take", count_take)
    monkeypatch.setattr(native_blf._Output, "_joined", count_joined)
    containers = len(_objects_of(path.read_bytes()))
    with threads_mode("2", 3):
        read_log(path)
    assert counts["caller"] == 0 and counts["not joined"] == 0
    if name == "deflate" and native_blf._Libdeflate.available():
        # joins only at batch starts
        assert counts["stream"] == containers and counts["quiet"] == 0
        assert 0 < counts["joined"] <= containers // 3
    else:
        # most container ends cut an object (the others end between two objects)
        assert counts["quiet"] == containers and counts["stream"] == 0
        assert counts["joined"] > containers * 0.75


def test_without_libdeflate_through_ctypes(straddling, monkeypatch):
    """The ``deflate`` inflater without its C symbols reachable: one bytes object per
    container, the same frames."""
    _, path = straddling
    monkeypatch.setenv("PACKBMS_INFLATER", native_blf.available_inflaters()[0])
    with threads_mode(*REFERENCE):
        want = outcome(path, chunk=10 ** 9)
    monkeypatch.setattr(native_blf._Libdeflate, "available", classmethod(lambda cls: False))
    monkeypatch.setattr(native_blf._Libdeflate, "load", classmethod(lambda cls: None))
    for mode in MODES:
        with threads_mode(*mode):
            assert outcome(path, chunk=10 ** 9) == want


def _pc_write_messages(path, messages, container_bytes: int) -> None:
    with can.BLFWriter(str(path)) as w:
        w.max_container_size = container_bytes
        for m in messages:
            w.on_message_received(m)


@pytest.mark.parametrize("container", [150, 211, 997, 2048])
def test_payloads_holding_the_object_signature(tmp_path, container):
    """Payloads holding b"LOBJ" where the next container starts: a worker's guess of where the
    first whole object starts is wrong there, and the join must notice."""
    messages = []
    for i in range(400):
        at = i % 61
        data = bytearray((i * 7 + j) % 256 for j in range(64))
        data[at:at + 4] = b"LOBJ"
        if i % 3:
            messages.append(can.Message(timestamp=1.7e9 + i * 1e-3, arbitration_id=i,
                                        data=bytes(data[:8]) if at > 4 else b"LOBJ1234"))
        else:
            messages.append(can.Message(timestamp=1.7e9 + i * 1e-3, arbitration_id=i,
                                        is_fd=True, data=bytes(data)))
    path = tmp_path / "sig.blf"
    _pc_write_messages(path, messages, container)
    want = assert_all_modes_alike(path, chunk=50)
    assert want["read"] == _table_key(read_log(path, engine="python-can").widened(64))


@pytest.mark.parametrize("errors", ["raise", "skip"])
def test_bad_records_across_container_ends(tmp_path, errors):
    """DLCs over 64 everywhere, also in objects cut by a container end: counted alike, the
    rows before them in the same container kept alike."""
    rng = np.random.default_rng(9)
    messages = [can.Message(timestamp=1.7e9 + i * 1e-3, arbitration_id=i % 0x800,
                            data=bytes(rng.integers(0, 256, 8).tolist()),
                            dlc=200 if rng.random() < 0.05 else 8, check=False)
                for i in range(3000)]
    path = tmp_path / "dlc.blf"
    _pc_write_messages(path, messages, 700)
    want = assert_all_modes_alike(path, errors=errors, chunk=100)
    if errors == "skip":
        bad = sum(m.dlc > 64 for m in messages)
        assert want["read_report"][1] == bad
        assert want["read"][0] == len(messages) - bad


def test_streaming_memory_stays_bounded_with_workers(tmp_path):
    """iter_log with two workers: peak traced memory is the chunk plus the batches in flight
    (at most 2 * threads + 1 batches of BATCH_OBJECTS containers), not the file."""
    import tracemalloc

    rng = np.random.default_rng(8)
    n = 150_000
    ft = FrameTable.empty(n)
    ft.timestamp[:] = 1.7e9 + np.arange(n) * 1e-3
    ft.arbitration_id[:] = rng.integers(0, 0x800, n)
    ft.dlc[:] = 8
    ft.data[:] = rng.integers(0, 256, (n, 8))
    path = tmp_path / "big.blf"
    write_log(path, ft)                        # 48-byte objects in 128 KiB containers
    inflated = n * 48
    with threads_mode("2", 1):
        list(iter_log(path, chunk_frames=4000))
        tracemalloc.start()
        try:
            got = 0
            for chunk in iter_log(path, chunk_frames=4000):
                np.testing.assert_array_equal(chunk.timestamp, ft.timestamp[got:got + len(chunk)])
                got += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert got == n
    in_flight = (2 * 2 + 1 + 2) * (128 << 10)  # batches queued, the one parsed, the one inflating
    assert peak < in_flight + 4 * 4000 * 26, f"peak {peak / 1e6:.1f} MB"
    assert peak < inflated / 3


@pytest.mark.parametrize("window", [1, 4096, 70_001])
def test_objects_across_mapped_windows(straddling, monkeypatch, window):
    """The file is mapped a window at a time: top-level objects cut by a window end are mapped
    again whole, in every mode."""
    _, path = straddling
    with threads_mode(*REFERENCE):
        want = outcome(path, chunk=500)
    monkeypatch.setattr(native_blf, "MAP_WINDOW_BYTES", window)
    for mode in [REFERENCE, ("2", 3)]:
        with threads_mode(*mode):
            assert outcome(path, chunk=500) == want
    raw = path.read_bytes()
    cut = path.with_name("cut.blf")
    cut.write_bytes(raw[:len(raw) - 100])
    with threads_mode(*REFERENCE):
        with pytest.raises(LogFormatError, match="truncated") as info:
            read_log(cut)
    assert info.value.offset == _objects_of(raw)[-1][0]


@pytest.mark.parametrize("name", ["issue_1905.blf", "test_CanMessage.blf",
                                  "test_CanFdMessage.blf"])
def test_real_files_same_in_every_mode(realdata, name):
    path = realdata / "python-can-4.6.1-testdata" / name
    want = assert_all_modes_alike(path, chunk=3)
    theirs = read_log(path, engine="python-can")
    assert want["read"] == _table_key(theirs.widened(want["read"][1]))


def test_libdeflate_decompressors_are_freed(straddling, monkeypatch):
    """Each worker frees the decompressor it allocated as it ends (none leaked per read, none
    freed while a worker may still use it)."""
    if not native_blf._Libdeflate.available():
        pytest.skip("libdeflate is not reachable through the 'deflate' package")
    _, path = straddling
    ctypes_mod, alloc, free, run = native_blf._Libdeflate._lib
    counts = {"alloc": 0, "free": 0, "freed by a worker": 0}

    def counted_alloc():
        counts["alloc"] += 1
        return alloc()

    def counted_free(handle):
        counts["free"] += 1
        counts["freed by a worker"] += threading.current_thread().name.startswith("packbms-blf")
        return free(handle)

    monkeypatch.setattr(native_blf._Libdeflate, "_lib", (ctypes_mod, counted_alloc,
                                                         counted_free, run))
    monkeypatch.setenv("PACKBMS_INFLATER", "deflate")
    with threads_mode("2", 3):
        for _ in range(5):
            read_log(path)
        it = iter_log(path, chunk_frames=7)
        next(it)
        it.close()                              # stopped early: the workers still free theirs
    assert counts["alloc"] > 0
    assert counts["free"] == counts["alloc"] == counts["freed by a worker"]


def test_undeclared_container_sizes_count_against_the_batch_budget():
    """A container declaring no inflated size may still inflate to the per-container maximum:
    the batch budget counts what it could take, so batches stay bounded."""
    from packbms.io import blf as _blf

    def body(usize, payload):
        return _blf.CONTAINER.pack(_blf.ZLIB_DEFLATE, usize) + b"\0" * payload

    assert native_blf._declared_bytes(body(5000, 100)) == 5000
    assert native_blf._declared_bytes(body(0, 100)) == 1032 * 100 + 64
    assert native_blf._declared_bytes(body(0, 10 ** 6)) == _blf.MAX_INFLATED_BYTES
    assert native_blf._declared_bytes(body(2 ** 32 - 1, 10)) == _blf.MAX_INFLATED_BYTES


def test_workers_end_before_an_interrupted_exit_returns(monkeypatch):
    """A second Ctrl-C while the pool waits for its workers must not return (and free what they
    use) before they have ended: the interrupt is raised once they have."""
    ended = []
    release = threading.Event()
    pool = native_blf._Workers(2, on_exit=lambda: ended.append(threading.current_thread().name))
    pool.submit(release.wait, 5.0)
    first = pool.threads[0]
    real_join = first.join
    calls = []

    def interrupted_join(timeout=None):
        calls.append(1)
        if len(calls) == 1:
            release.set()
            raise KeyboardInterrupt
        return real_join(timeout)

    monkeypatch.setattr(first, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        pool.__exit__(None, None, None)
    assert sorted(ended) == sorted(t.name for t in pool.threads)
    assert not any(t.is_alive() for t in pool.threads)
