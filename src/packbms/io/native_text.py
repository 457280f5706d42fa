"""Native text log readers (ASC, candump ``-L``, TRC): blocks of bytes through a line kernel.

The file (or its gzip stream, decompressed in bounded blocks) is read in blocks of
:data:`BLOCK_BYTES`; each block is cut after its last newline and handed to the format's kernel in
:mod:`packbms.kernels.text_scan`, which parses the frame lines into FrameTable columns and reports
the other lines as ignored or bad (with their line numbers). Python parses the header lines (ASC
``date``/``base``, TRC ``;$FILEVERSION``/``;$STARTTIME``/``;$COLUMNS``) with python-can's own
regular expressions, turns the kernel's events into :class:`~packbms.errors.LogFormatError` and
recomputes the rare timestamps whose exact rounding needs Python's ``float``.

A plain file is read into one reusable buffer (``readinto``, no per-block allocation). On a
multi-core machine a block of at least :data:`PARALLEL_MIN_BYTES` is cut at a newline near its
middle and both halves are parsed at once (the second on a worker thread, into its own arrays,
then appended; its line numbers are offset by the first half's); ``PACKBMS_READ_THREADS=0`` turns
this off. Frames, counts and errors come out in file order either way.

Memory is bounded by the block size, the chunk size and :data:`MAX_LINE_BYTES` (a longer line is a
bad record and is skipped without being kept).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import zlib

import numpy as np

from ..errors import LogFormatError
from ..kernels import text_scan as K
from .native_common import FrameSink

__all__ = ["iter_text_tables", "BLOCK_BYTES", "MAX_LINE_BYTES", "PARALLEL_MIN_BYTES"]

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


def _blocks(f, gz: bool):
    """Blocks of the (decompressed) file. A stream error ends the blocks with the exception
    itself, after the data decompressed before it (``read1`` hands data out as it comes)."""
    while True:
        pieces = []
        got = 0
        try:
            while got < BLOCK_BYTES:
                piece = f.read1(BLOCK_BYTES - got) if gz else f.read(BLOCK_BYTES - got)
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


def _line_blocks(f, gz: bool):
    """(buffer, end, eof, failure, skipped_line): ``buffer[:end]`` holds whole lines (at the end
    of the file: everything left). The buffer is reused: its contents are valid until the next
    item is asked for. A line longer than :data:`MAX_LINE_BYTES` is dropped while reading and
    reported as ``skipped_line`` (its line number offset in lines from the previous item)."""
    if gz:
        carry = b""
        discarding = False
        for block in _blocks(f, True):
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
        return
    # plain file: one reusable buffer, read into (no per-block allocation, no concatenation)
    work = bytearray(BLOCK_BYTES)
    n = 0
    discarding = False
    while True:
        if n == len(work):
            work.extend(bytes(len(work)))          # a line longer than the buffer
        view = memoryview(work)
        try:
            got = f.readinto(view[n:])
        except _STREAM_ERRORS as e:
            del view
            end = work.rfind(b"\n", 0, n) + 1
            yield work, end, True, e, False
            return
        del view
        if not got:
            yield work, 0 if discarding else n, True, None, False
            return
        start = n
        n += got
        if discarding:
            nl = work.find(b"\n", start, n)
            if nl < 0:
                n = 0
                continue
            work[: n - nl - 1] = work[nl + 1:n]
            n -= nl + 1
            discarding = False
        end = work.rfind(b"\n", 0, n) + 1
        if end == 0:
            if n > MAX_LINE_BYTES:
                n = 0
                discarding = True
                yield work, 0, False, None, True
            continue
        yield work, end, False, None, False
        rest = n - end
        work[:rest] = work[end:n]
        n = rest


#: Blocks at least this big are parsed in two halves at once when threads are allowed (the
#: kernels release the GIL); ``PACKBMS_READ_THREADS=0`` turns it off.
PARALLEL_MIN_BYTES = 1 << 20


def _threads_allowed(size) -> bool:
    env = os.environ.get("PACKBMS_READ_THREADS", "")
    if env.isdigit():
        return int(env) > 1
    return (os.cpu_count() or 1) > 1 and (size is None or size >= PARALLEL_MIN_BYTES)


class _TextScan:
    """The state of one text log being scanned (see :func:`iter_text_tables`)."""

    def __init__(self, src, chunk_frames: int, kern, size):
        self.src = src
        self.suffix = src.fmt.suffix
        self.kern = kern
        self.limit = chunk_frames
        estimate = max(size // 24, 1024) if size is not None else 1 << 16
        self.cap = int(min(chunk_frames, estimate, 1 << 26))
        self.sink = FrameSink(self.cap, 8, src.path)
        self.events = np.zeros((256, K.EVENT_COLUMNS), np.int64)
        self.state = np.zeros(K.STATE_SIZE, np.int64)
        self.fparams = self.iparams = None
        self.pool = None
        self.other = None               # second half's outputs (parallel mode)
        self.events_b = np.zeros((256, K.EVENT_COLUMNS), np.int64)
        self.state_b = np.zeros(K.STATE_SIZE, np.int64)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    # -- events and output ----------------------------------------------------------------
    def _handle(self, arr, sink, events, n, line_offset=0):
        """Report the kernel's events (bad records; exact slow timestamps)."""
        if not n:
            return
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

    def _full(self):
        """The sink is full: grow it up to the chunk size, else hand the chunk out."""
        sink = self.sink
        if sink.capacity < self.limit:
            sink.grow(min(2 * sink.capacity, self.limit))
            return None
        self.sink = FrameSink(self.cap, sink.width, sink.source)
        return sink.table()

    def _append(self, other: FrameSink):
        """Move the rows of ``other`` after the sink's (yields full chunks)."""
        n = other.k
        done = 0
        if other.width > self.sink.width:
            self.sink.widen()
        while done < n:
            if self.sink.full:
                table = self._full()
                if table is not None:
                    yield table
            sink = self.sink
            take = min(n - done, sink.capacity - sink.k)
            a, b, k = done, done + take, sink.k
            sink.ts[k:k + take] = other.ts[a:b]
            sink.aid[k:k + take] = other.aid[a:b]
            sink.flags[:, k:k + take] = other.flags[:, a:b]
            sink.dc[:, k:k + take] = other.dc[:, a:b]
            sink.data[k:k + take, : other.width] = other.data[a:b]
            sink.k += take
            done += take
        other.data[:n] = 0
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

    def scan(self, arr, buf, pos: int, end: int, line: int):
        """Generator: scan [pos, end), in two halves at once when the block is big enough."""
        nl = buf.find(b"\n", pos + (end - pos) // 2, end) if self.pool is not None else -1
        if end - pos < PARALLEL_MIN_BYTES or nl < 0 or nl + 1 >= end:
            return (yield from self.scan_seq(arr, pos, end, line))
        split = nl + 1
        other = self.other
        need = (end - split) // 8 + 16
        if other is None or other.capacity < need or other.width < self.sink.width:
            other = self.other = FrameSink(need, self.sink.width, self.src.path)
        sb = self.state_b
        sb[:] = 0
        sb[K.S_POS] = split                 # line numbers relative to the split
        job = self.pool.submit(self.kern, arr, end, self.fparams, self.iparams, other.ts,
                               other.aid, other.flags, other.dc, other.data, self.events_b, sb)
        try:
            line = yield from self.scan_seq(arr, pos, split, line)
        finally:
            status_b = job.result()
        other.k = int(sb[K.S_K])
        if status_b != K.DONE:              # full, wide or many bad lines: redo it here
            other.data[: other.k] = 0
            other.k = 0
            return (yield from self.scan_seq(arr, split, end, line))
        self.src.report.ignored += int(sb[K.S_IGNORED])
        self._handle(arr, other, self.events_b, int(sb[K.S_EVENTS]), line_offset=line)
        yield from self._append(other)
        return line + int(sb[K.S_LINE])


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
    scan = _TextScan(src, chunk_frames, kern, size)
    if not in_header:
        scan.fparams, scan.iparams = header.finish(0)
    if _threads_allowed(size):
        from concurrent.futures import ThreadPoolExecutor

        scan.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packbms-text")
    line = 1
    try:
        for buf, end, eof, failure, long_line in _line_blocks(f, src.gz):
            if long_line:
                src.problem(_message(suffix, K.R_LINE_TOO_LONG, 0, 0, ""), line=line)
                line += 1
                continue
            pos = 0
            if in_header:
                while pos < end:
                    nl = buf.find(b"\n", pos, end)
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
            if not in_header and pos < end:
                arr = np.frombuffer(buf, np.uint8)
                if arr.flags.writeable:
                    arr = arr.view()
                    arr.flags.writeable = False
                line = yield from scan.scan(arr, buf, pos, end, line)
                del arr
            if failure is not None:
                src.problem(f"compressed stream is corrupted or cut short ({failure})",
                            line=line, cause=failure, truncated=True)
                break
            if eof:
                break
        if in_header:
            header.finish(line)
    finally:
        scan.close()
    if scan.sink.k:
        yield scan.sink.table()
