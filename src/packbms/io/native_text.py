"""Native text log readers (ASC, candump ``-L``, TRC): blocks of bytes through a line kernel.

The file (or its gzip stream, decompressed in bounded blocks) is read in blocks of
:data:`BLOCK_BYTES`; each block is cut after its last newline and handed to the format's kernel in
:mod:`packbms.kernels.text_scan`, which parses the frame lines into FrameTable columns and reports
the other lines as ignored or bad (with their line numbers). Python parses the header lines (ASC
``date``/``base``, TRC ``;$FILEVERSION``/``;$STARTTIME``/``;$COLUMNS``) with python-can's own
regular expressions, turns the kernel's events into :class:`~packbms.errors.LogFormatError` and
recomputes the rare timestamps whose exact rounding needs Python's ``float``.

A plain file is read into reusable buffers (``readinto``, no per-block allocation). With threads
(a file of at least :data:`PARALLEL_MIN_BYTES` on a multi-core machine: one per core up to
:data:`MAX_DEFAULT_THREADS`, or ``$PACKBMS_READ_THREADS``; ``0`` turns them off), each block is
cut at newlines into one slice per thread: the caller's thread parses the first straight into the
output, worker threads the others into their own arrays, appended after it in order (their line
numbers offset by the lines before them), and a worker reads the next block into a second buffer
meanwhile. The first slice's share follows the measured times so that all finish together.
Frames, counts and errors come out in file order either way.

Memory is bounded by the block size, the chunk size and :data:`MAX_LINE_BYTES` (a longer line is a
bad record and is skipped without being kept).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import time
import zlib

import numpy as np

from ..errors import LogFormatError
from ..kernels import text_scan as K
from .native_common import MAX_DEFAULT_THREADS, MAX_THREADS  # noqa: F401 - documented here
from .native_common import EVENT_ROWS, FrameSink, read_threads

__all__ = ["iter_text_tables", "BLOCK_BYTES", "MAX_LINE_BYTES", "PARALLEL_MIN_BYTES",
           "MAX_DEFAULT_THREADS"]

#: Bytes read (or decompressed) per block.
BLOCK_BYTES = 1 << 22
#: A line longer than this is a bad record (and is not kept in memory).
MAX_LINE_BYTES = 1 << 24

_STREAM_ERRORS = (OSError, EOFError, zlib.error)

# python-can's ASC header expressions (can/io/asc.py, ASCReader._extract_header)
_ASC_DATE = re.compile(r"date\s+\w+\s+(?P<datetime_string>.+)", re.IGNORECASE)
_ASC_BASE = re.compile(r"base\s+(?P<base>hex|dec)(?:\s+timestamps\s+"
                       r"(?P<timestamp_format>absolute|relative))?", re.IGNORECASE)
_ASC_COMMENT = re.compile(r"//.*")

_WHAT = {".asc": "ASC", ".log": "candump -L", ".trc": "TRC"}
_FIELD = {
    K.R_FIELDS: "wrong number of fields",
    K.R_BAD_TIME: "bad timestamp",
    K.R_BAD_ID: "bad identifier",
    K.R_BAD_DLC: "bad DLC or data length",
    K.R_BAD_BYTE: "bad data byte (expected hex 00..FF)",
    K.R_BAD_CHANNEL: "bad channel",
    K.R_BAD_FLAGS: "bad CAN FD flags digit",
    K.R_MISSING_COLUMN: "the $COLUMNS header lacks a column this record needs",
}


def _show(text: str, limit: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _decode(raw) -> str:
    return bytes(raw).decode("utf-8", "surrogateescape")


def _message(suffix: str, reason: int, a: int, b: int, text: str) -> str:
    what = _WHAT[suffix]
    if reason == K.R_NOT_RECORD:
        return f"not an {what} record: {_show(text)}" if suffix == ".asc" else \
            f"not a {what} record: {_show(text)}"
    if reason == K.R_INCOMPLETE:
        return f"not a complete TRC frame record: {_show(text)}"
    if reason == K.R_TS_NONFINITE:
        return f"timestamp is not a finite number: {_show(text)}"
    if reason == K.R_AID_RANGE:
        return f"arbitration id {a} does not fit 29 bits"
    if reason == K.R_DLC_RANGE:
        return f"DLC {a} is not between 0 and 64"
    if reason == K.R_PAYLOAD:
        return f"payload has {a} bytes but the DLC says {b}"
    if reason == K.R_LINE_TOO_LONG:
        return f"line longer than {MAX_LINE_BYTES} bytes"
    return f"cannot parse {what} record {_show(text)}: {_FIELD.get(reason, 'bad field')}"


# -- headers (Python, python-can's rules) -----------------------------------------------------
class _AscHeader:
    """ASCReader._extract_header: date, base and comment lines until the first other line."""

    def __init__(self, path):
        self.path = path
        self.base = 16

    def line(self, text: str, lineno: int) -> bool:
        """True: a header line (consumed); False: the header ended before this line."""
        line = text.strip()
        if _ASC_DATE.match(line):
            return True
        m = _ASC_BASE.match(line)
        if m:
            base = m.group("base")
            if base not in ("hex", "dec"):
                raise LogFormatError('bad ASC header: base should be either "hex" or "dec"',
                                     path=self.path, line=lineno)
            self.base = 10 if base == "dec" else 16
            return True
        return bool(_ASC_COMMENT.match(line))

    def finish(self, lineno: int):
        return np.zeros(1), np.array([self.base], np.int64)


class _TrcHeader:
    """TRCReader._extract_header: the leading ";" lines."""

    def __init__(self, path):
        self.path = path
        self.version = "UNKNOWN"
        self.start_time = 0.0
        self.columns: dict[str, int] = {}
        self.num_columns = -1

    def line(self, text: str, lineno: int) -> bool:
        line = text.strip()
        if not line.startswith(";"):
            return False
        try:
            if line.startswith(";$FILEVERSION"):
                try:
                    v = line.split("=")[1]
                    self.version = v if v in ("1.1", "1.3", "2.0", "2.1") else "UNKNOWN"
                except IndexError:
                    pass
            elif line.startswith(";$STARTTIME"):
                try:
                    self.start_time = (_dt.datetime(1899, 12, 30, tzinfo=_dt.timezone.utc)
                                       + _dt.timedelta(days=float(line.split("=")[1]))
                                       ).timestamp()
                except IndexError:
                    pass
            elif line.startswith(";$COLUMNS"):
                try:
                    columns = line.split("=")[1].split(",")
                    self.columns = {c: columns.index(c) for c in columns}
                    self.num_columns = len(columns) - 1
                except IndexError:
                    pass
        except (ValueError, OverflowError) as e:
            raise LogFormatError(f"bad TRC header: {e}", path=self.path, line=lineno) from e
        return True

    def finish(self, lineno: int):
        ip = np.full(K.TRC_PARAMS, -1, np.int64)
        if self.version in ("2.0", "2.1"):
            if not self.columns:
                raise LogFormatError("bad TRC header: File has no column information",
                                     path=self.path, line=lineno)
            ip[K.P_VERSION] = K.TRC_V2
            ip[K.P_NCOL] = self.num_columns
            for key, slot in (("T", K.P_T), ("O", K.P_O), ("I", K.P_I), ("B", K.P_B),
                              ("L", K.P_L), ("l", K.P_LL), ("D", K.P_D), ("d", K.P_DIR)):
                ip[slot] = self.columns.get(key, -1)
        else:
            ip[K.P_VERSION] = {"1.1": K.TRC_V1_1, "1.3": K.TRC_V1_3}.get(self.version,
                                                                          K.TRC_V1_0)
        return np.array([float(self.start_time)]), ip


class _NoHeader:
    def line(self, text: str, lineno: int) -> bool:
        return False

    def finish(self, lineno: int):
        return np.zeros(1), np.zeros(1, np.int64)


_KERNELS = {".asc": "scan_asc", ".log": "scan_candump", ".trc": "scan_trc"}
_HEADERS = {".asc": _AscHeader, ".trc": _TrcHeader}


def _time_of(suffix: str, token: str, fparams, iparams) -> float:
    v = float(token)
    if suffix == ".trc":
        v = v / 1000 if iparams[K.P_VERSION] == K.TRC_V1_0 else v / 1000 + float(fparams[0])
    return v


def _blocks(f):
    """Blocks of the decompressed file. A stream error ends the blocks with the exception
    itself, after the data decompressed before it (``read1`` hands data out as it comes)."""
    while True:
        pieces = []
        got = 0
        try:
            while got < BLOCK_BYTES:
                piece = f.read1(BLOCK_BYTES - got)
                if not piece:
                    break
                pieces.append(piece)
                got += len(piece)
        except _STREAM_ERRORS as e:
            if pieces:
                yield b"".join(pieces)
            yield e
            return
        if not pieces:
            return
        yield pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _gz_line_blocks(f):
    """:meth:`_PlainReader.read`'s blocks for a gzip stream (new bytes objects each time)."""
    carry = b""
    discarding = False
    for block in _blocks(f):
        if isinstance(block, BaseException):
            buf = carry
            yield buf, buf.rfind(b"\n") + 1, True, block, False
            return
        if discarding:
            nl = block.find(b"\n")
            if nl < 0:
                continue
            block = block[nl + 1:]
            discarding = False
        buf = carry + block if carry else block
        end = buf.rfind(b"\n") + 1
        if end == 0:
            if len(buf) > MAX_LINE_BYTES:
                carry, discarding = b"", True
                yield b"", 0, False, None, True
            else:
                carry = buf
            continue
        yield buf, end, False, None, False
        carry = buf[end:]
    if not discarding:
        yield carry, len(carry), True, None, False
    else:
        yield b"", 0, True, None, False


def _buffer(size: int):
    """A block buffer: uninitialised (the reads fill it; no pass to zero it first)."""
    return np.empty(size, np.uint8)


class _PlainReader:
    """Line blocks of a plain file, read (``readinto``) into reusable buffers: one, or two used
    in turn so that the next block can be read while this one is parsed. Only one
    :meth:`read` runs at a time, on any thread."""

    def __init__(self, f, buffers: int):
        self.f = f
        self.bufs = [_buffer(BLOCK_BYTES) for _ in range(buffers)]
        self.cur = 0
        self.carry = None               # (buffer, start, stop) of the last block's cut line
        self.discarding = False

    def read(self):
        """(buffer, end, eof, failure, skipped_line): ``buffer[:end]`` holds whole lines (at the
        end of the file: everything left); it stays valid until the next-but-one call (the next
        call with a single buffer). A line longer than :data:`MAX_LINE_BYTES` is dropped while
        reading and reported as ``skipped_line``."""
        work = self.bufs[self.cur]
        self.cur = (self.cur + 1) % len(self.bufs)
        n = 0
        if self.carry is not None:
            src, a, b = self.carry
            self.carry = None
            n = b - a
            if n > len(work):
                work = self._grow(work, n, 0)
            work[:n] = src[a:b]
        f = self.f
        while True:
            if n == len(work):
                work = self._grow(work, 2 * n, n)       # a line longer than the buffer
            try:
                got = f.readinto(work[n:])
            except _STREAM_ERRORS as e:
                return work, K.rfind_newline(work, 0, n) + 1, True, e, False
            if not got:
                return work, 0 if self.discarding else n, True, None, False
            start = n
            n += got
            if self.discarding:
                nl = K.find_newline(work, start, n)
                if nl < 0:
                    n = 0
                    continue
                work[: n - nl - 1] = work[nl + 1:n]
                n -= nl + 1
                self.discarding = False
            end = K.rfind_newline(work, 0, n) + 1
            if end == 0:
                if n > MAX_LINE_BYTES:
                    n = 0
                    self.discarding = True
                    return work, 0, False, None, True
                continue
            self.carry = (work, end, n)
            return work, end, False, None, False

    def _grow(self, work, size: int, keep: int):
        """A bigger buffer in place of ``work`` (a new object: the old may still be viewed)."""
        new = _buffer(max(size, len(work)))
        new[:keep] = work[:keep]
        i = next(j for j, buf in enumerate(self.bufs) if buf is work)
        self.bufs[i] = new
        return new


class _GzReader:
    def __init__(self, f):
        self._gen = _gz_line_blocks(f)

    def read(self):
        buf, end, eof, failure, long_line = next(self._gen)
        return np.frombuffer(buf, np.uint8), end, eof, failure, long_line


#: Blocks at least this big are cut into slices parsed at once when threads are allowed (the
#: kernels release the GIL); ``PACKBMS_READ_THREADS=0`` turns it off.
PARALLEL_MIN_BYTES = 1 << 20


def _parse_threads(size) -> int:
    """Parsing threads, the caller's included (1: no threads): ``$PACKBMS_READ_THREADS`` if set
    (0 or 1 = none), else one per core up to :data:`MAX_DEFAULT_THREADS`, for files of at least
    :data:`PARALLEL_MIN_BYTES` (a ``.gz``, whose size is not known ahead, counts as big)."""
    return max(1, read_threads(size, PARALLEL_MIN_BYTES))


class _Slice:
    """The outputs of one slice of a block parsed on a worker thread."""

    def __init__(self, capacity: int, width: int, source):
        self.sink = FrameSink(capacity, width, source)
        self.events = np.zeros((EVENT_ROWS, K.EVENT_COLUMNS), np.int64)
        self.state = np.zeros(K.STATE_SIZE, np.int64)
        self.seconds = 0.0
        self.first_wide = -1            # the first row that needed 64 payload columns


class _TextScan:
    """The state of one text log being scanned (see :func:`iter_text_tables`).

    With threads, a block is cut at newlines into one slice per thread: the first is parsed
    here, straight into the output sink; the others on worker threads, each into its own
    :class:`_Slice`, then appended in order (line numbers offset by the lines before them). The
    read of the next block is queued behind the slices, so a worker reads it while this thread
    parses; the first slice's share of the block follows the measured times so that both sides
    finish together.
    """

    def __init__(self, src, chunk_frames: int, kern, size, threads: int):
        self.src = src
        self.suffix = src.fmt.suffix
        self.kern = kern
        self.limit = chunk_frames
        estimate = max(size // 24, 1024) if size is not None else 1 << 16
        self.cap = int(min(chunk_frames, estimate, 1 << 26))
        self.sink = FrameSink(self.cap, 8, src.path)
        self.events = np.zeros((EVENT_ROWS, K.EVENT_COLUMNS), np.int64)
        self.state = np.zeros(K.STATE_SIZE, np.int64)
        self.fparams = self.iparams = None
        self.threads = threads
        self.pool = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=threads - 1,
                                           thread_name_prefix="packbms-text")
        self.slices: list[_Slice] = []
        self.share = 1.0 / max(threads, 1)  # the first slice's part of a block
        self.pending = None                 # the next block's read, on a worker
        self.read_seconds = 0.0

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    # -- reading ahead ----------------------------------------------------------------------
    def _timed_read(self, read):
        t0 = time.perf_counter()
        try:
            return read()
        finally:
            self.read_seconds = time.perf_counter() - t0

    def next_block(self, reader):
        """The block read ahead during the last scan, else one read now."""
        job, self.pending = self.pending, None
        return job.result() if job is not None else reader.read()

    # -- events and output ----------------------------------------------------------------
    def _handle(self, arr, sink, events, n, line_offset=0) -> list:
        """Report the kernel's events (bad records; exact slow timestamps); returns the rows
        dropped from ``sink`` (a timestamp that is not a finite number), ascending."""
        if not n:
            return []
        src = self.src
        drop = []
        for code, ln, a, b, r, x, y, _ in events[:n].tolist():
            ln += line_offset
            if code == K.EV_SLOW_TIME:
                token = _decode(arr[a:b])
                try:
                    t = _time_of(self.suffix, token, self.fparams, self.iparams)
                except (ValueError, OverflowError):
                    t = math.nan
                if math.isfinite(t):
                    sink.ts[r] = t
                else:
                    drop.append(r)
                    src.problem(f"timestamp {token} is not a finite number", line=ln)
            else:
                src.problem(_message(self.suffix, r, x, y, _decode(arr[a:b])), line=ln)
        if drop:
            sink.drop(drop)
        return drop

    def _full(self):
        """The sink is full: grow it up to the chunk size, else hand the chunk out."""
        sink = self.sink
        if sink.capacity < self.limit:
            sink.grow(min(2 * sink.capacity, self.limit))
            return None
        self.sink = FrameSink(self.cap, sink.width, sink.source)
        return sink.table()

    def _append(self, other: FrameSink, first_wide: int = -1):
        """Move the rows of ``other`` after the sink's (yields full chunks), widening the sink
        at row ``first_wide`` of ``other`` as the serial pass would. The rows of ``other`` are
        left as they are: the kernels overwrite every byte of a row."""
        n = other.k
        done = 0
        while done < n:
            if done == first_wide:
                self.sink.widen()
            if self.sink.full:
                table = self._full()
                if table is not None:
                    yield table
            sink = self.sink
            take = min(n - done, sink.capacity - sink.k)
            if done < first_wide:
                take = min(take, first_wide - done)
            a, b, k = done, done + take, sink.k
            cols = min(sink.width, other.width)     # columns past it are zeros
            sink.ts[k:k + take] = other.ts[a:b]
            sink.aid[k:k + take] = other.aid[a:b]
            sink.flags[:, k:k + take] = other.flags[:, a:b]
            sink.dc[:, k:k + take] = other.dc[:, a:b]
            sink.data[k:k + take, :cols] = other.data[a:b, :cols]
            sink.k += take
            done += take
        if first_wide >= n:                 # the wide row itself was dropped, and was last
            self.sink.widen()
        other.k = 0

    # -- scanning ---------------------------------------------------------------------------
    def scan_seq(self, arr, pos: int, end: int, line: int):
        """Generator: scan lines [pos, end) of ``arr`` in this thread; returns the next line."""
        state = self.state
        state[:] = 0
        state[K.S_POS] = pos
        state[K.S_LINE] = line
        while True:
            sink = self.sink
            state[K.S_K] = sink.k
            state[K.S_EVENTS] = 0
            status = self.kern(arr, end, self.fparams, self.iparams, sink.ts, sink.aid,
                               sink.flags, sink.dc, sink.data, self.events, state)
            sink.k = int(state[K.S_K])
            self.src.report.ignored += int(state[K.S_IGNORED])
            state[K.S_IGNORED] = 0
            self._handle(arr, sink, self.events, int(state[K.S_EVENTS]))
            if status == K.DONE:
                return int(state[K.S_LINE])
            if status == K.FULL:
                table = self._full()
                if table is not None:
                    yield table
            elif status == K.WIDE:
                sink.widen()

    def _scan_slice(self, part: _Slice, arr, pos: int, end: int) -> int:
        """Worker thread: parse [pos, end) into ``part`` (line numbers from 0), growing or
        widening its arrays as needed; the status is DONE, or EVENTS_FULL (the caller parses
        the slice again itself)."""
        t0 = time.perf_counter()
        state = part.state
        state[:] = 0
        state[K.S_POS] = pos
        sink = part.sink
        part.first_wide = -1
        while True:
            status = self.kern(arr, end, self.fparams, self.iparams, sink.ts, sink.aid,
                               sink.flags, sink.dc, sink.data, part.events, state)
            sink.k = int(state[K.S_K])
            if status == K.FULL:
                sink.grow()
            elif status == K.WIDE:
                part.first_wide = sink.k
                sink.widen()
            else:
                break
        part.seconds = time.perf_counter() - t0
        return status

    def _cuts(self, buf, pos: int, end: int) -> list:
        """Slice starts (at line starts) and the end: the first slice gets :attr:`share` of the
        bytes, the others equal parts of the rest."""
        cuts = [pos]
        n = self.threads
        size = end - pos
        if n > 1 and size >= PARALLEL_MIN_BYTES:
            first = self.share
            for j in range(1, n):
                target = pos + int(size * (first + (1.0 - first) * (j - 1) / (n - 1)))
                nl = K.find_newline(buf, max(target, cuts[-1]), end)
                if nl < 0 or nl + 1 >= end:
                    break
                cuts.append(nl + 1)
        cuts.append(end)
        return cuts

    def scan(self, arr, pos: int, end: int, line: int, read_next=None):
        """Generator: scan [pos, end) (in slices at once when there are threads and the block is
        big enough); meanwhile read the next block with ``read_next`` on a worker (see
        :meth:`next_block`). Returns the next line number."""
        pool = self.pool
        if pool is None:
            return (yield from self.scan_seq(arr, pos, end, line))
        cuts = self._cuts(arr, pos, end)
        jobs = []
        width = self.sink.width
        for j in range(1, len(cuts) - 1):
            if len(self.slices) < j:        # a first guess at the rows; the worker grows it
                rows = (cuts[j + 1] - cuts[j]) // 32 + 1024
                self.slices.append(_Slice(rows, width, self.src.path))
            part = self.slices[j - 1]
            if part.sink.width != width:    # it widens where the output would
                part = self.slices[j - 1] = _Slice(part.sink.capacity, width, self.src.path)
            jobs.append((part, pool.submit(self._scan_slice, part, arr, cuts[j], cuts[j + 1]),
                         cuts[j], cuts[j + 1]))
        if read_next is not None:
            self.pending = pool.submit(self._timed_read, read_next)
        t0 = time.perf_counter()
        try:
            line = yield from self.scan_seq(arr, pos, cuts[1], line)
        finally:
            for _, job, _, _ in jobs:       # the workers are done with the buffer after this
                job.exception()
        t_first = time.perf_counter() - t0
        t1 = time.perf_counter()
        t_parts = 0.0
        for part, job, a, b in jobs:
            status = job.result()
            if status != K.DONE:            # many bad lines: parse it again here
                part.sink.k = 0
                line = yield from self.scan_seq(arr, a, b, line)
                continue
            t_parts += part.seconds
            state = part.state
            self.src.report.ignored += int(state[K.S_IGNORED])
            dropped = self._handle(arr, part.sink, part.events, int(state[K.S_EVENTS]),
                                   line_offset=line)
            first_wide = part.first_wide
            if first_wide > 0 and dropped:   # rows dropped before it moved it up
                first_wide -= sum(1 for r in dropped if r < first_wide)
            yield from self._append(part.sink, first_wide)
            line += int(state[K.S_LINE])
        if jobs:
            self._balance(cuts, t_first, t_parts, time.perf_counter() - t1, read_next)
        return line

    def _balance(self, cuts, t_first, t_parts, t_append, read_next):
        """Move the first slice's share so that this thread (its slice, then the appends) and
        the workers (their slices, then the read ahead) take the same time."""
        size = cuts[-1] - cuts[0]
        first = cuts[1] - cuts[0]
        if first <= 0 or size <= first or t_first <= 0 or t_parts <= 0:
            return
        w = len(cuts) - 2                   # worker slices
        per_first = t_first / first         # seconds per byte here and on a worker
        per_part = t_parts / (size - first)
        t_read = self.read_seconds if read_next is not None else 0.0
        # first * per_first + t_append = ((size - first) * per_part + t_read) / w
        share = ((size * per_part + t_read) / w - t_append) / (size * (per_first + per_part / w))
        share = min(max(share, 0.1), 0.9)
        self.share = 0.5 * self.share + 0.5 * share


def iter_text_tables(src, chunk_frames: int):
    """Yield FrameTables of at most ``chunk_frames`` rows from the text log of ``src`` (a
    :class:`packbms.io.readers._Source`); problems go through ``src.problem``."""
    suffix = src.fmt.suffix
    path = src.path
    kern = getattr(K, _KERNELS[suffix])
    header = _HEADERS[suffix](path) if suffix in _HEADERS else _NoHeader()
    in_header = suffix in _HEADERS

    f = src._open_binary()
    size = None if src.gz else os.fstat(f.fileno()).st_size
    threads = _parse_threads(size)
    scan = _TextScan(src, chunk_frames, kern, size, threads)
    line = 1
    try:                                    # its threads are shut down whatever happens next
        reader = _GzReader(f) if src.gz else _PlainReader(f, 2 if threads > 1 else 1)
        if not in_header:
            scan.fparams, scan.iparams = header.finish(0)
        block = reader.read()
        while True:
            buf, end, eof, failure, long_line = block
            if long_line:
                src.problem(_message(suffix, K.R_LINE_TOO_LONG, 0, 0, ""), line=line)
                line += 1
                block = reader.read()
                continue
            pos = 0
            if in_header:
                while pos < end:
                    nl = K.find_newline(buf, pos, end)
                    stop = nl if nl >= 0 else end
                    text = _decode(buf[pos:stop])
                    if text.strip():
                        if not header.line(text, line):
                            break
                        src.report.ignored += 1
                    pos = stop + 1 if nl >= 0 else end
                    line += 1
                if pos < end or eof:
                    in_header = False
                    scan.fparams, scan.iparams = header.finish(line)
            read_next = reader.read if not eof and failure is None else None
            if not in_header and pos < end:
                arr = buf.view()
                arr.flags.writeable = False     # one compiled variant of each kernel
                line = yield from scan.scan(arr, pos, end, line, read_next)
                del arr
            if failure is not None:
                src.problem(f"compressed stream is corrupted or cut short ({failure})",
                            line=line, cause=failure, truncated=True)
                break
            if eof:
                break
            block = scan.next_block(reader)
        if in_header:
            header.finish(line)
    finally:
        scan.close()
    if scan.sink.k:
        yield scan.sink.table()
