"""Read CAN logs into :class:`~packbms.io.frames.FrameTable` chunks.

Two engines give the same frames (``engine=`` of :func:`read_log` / :func:`iter_log`):

- ``"native"``: Numba kernels over the file's bytes (:mod:`packbms.io.native_blf`,
  :mod:`packbms.io.native_text`) for BLF, ASC, candump ``.log`` and TRC, and asammdf's record
  arrays converted whole for MF4 (:mod:`packbms.io.native_mf4`). Python only reads blocks,
  inflates, parses headers and allocates; on a 1-hour 96-cell drive about 18x (MF4), 20x (TRC),
  40x (BLF, candump) and 45x (ASC) python-can's speed (``benchmarks/bench_io.py``).
- ``"python-can"``: python-can's readers parse the records; this module feeds them, turns their
  ``Message`` objects into columns in batches and their failures into errors. The only engine for
  CSV, and the reference the native readers are tested against.

``"auto"`` (the default) is native wherever there is a native reader (:data:`NATIVE_SUFFIXES`).
Every way a file can be broken becomes a :class:`~packbms.errors.LogFormatError` naming the file
and the line or byte offset.

Formats
-------
===================== =========================== ==========================================
suffix                python-can reader           FrameTable.channel (0 = first bus)
===================== =========================== ==========================================
``.asc``              ``ASCReader``               file channel - 1 (ASC counts from 1)
``.blf``              ``BLFReader`` (objects)     file channel - 1 (BLF counts from 1)
``.csv``              ``CSVReader``               0 (the format has no channel)
``.log`` (candump -L) ``CanutilsLogReader``       the digits of the interface: can0 -> 0
``.mf4`` (asammdf)    ``MF4Reader``               BusChannel - 1 (ASAM counts from 1)
``.trc``              ``TRCReader``               bus - 1 (PEAK counts from 1; v1.0/1.1 -> 0)
===================== =========================== ==========================================

Each may be gzip-compressed (``.asc.gz``, ``.blf.gz``, ...), as python-can's ``LogReader`` allows.
Suffixes are matched case-insensitively (``.MF4``). A file channel of 0 (not a valid 1-based
number) maps to 0 too; channels above 255 wrap (``& 0xFF``).

What the native readers read: BLF ``CAN_MESSAGE``, ``CAN_MESSAGE2``, ``CAN_ERROR_EXT``,
``CAN_FD_MESSAGE``, ``CAN_FD_MESSAGE_64`` objects (header versions 1 and 2, 10 us and 1 ns time
units, objects split across containers, zlib or stored containers); ASC classic and CAN FD data,
remote and error frames in hex or dec base; candump classic, CAN FD (``##``), remote (``#R``) and
error frames; TRC 1.0, 1.1, 1.3, 2.0 and 2.1 (``DT``, ``FD``, ``FB``, ``FE``, ``BI``, ``RR``);
MF4 ``CAN_DataFrame``, ``CAN_ErrorFrame`` and ``CAN_RemoteFrame`` groups. They parse each field
with Python's own ``int``/``float``/``fromhex`` grammars, except that only ASCII digits and
whitespace count as such (python-can, through ``str``, also takes e.g. fullwidth digits or
U+00A0 as a separator).

Frames come in FILE order: nothing is sorted, and time going backwards is not an error here. (For
MF4, python-can merges the data, error and remote frame groups by timestamp; that merged order is
the order returned.) Timestamps are python-can's, bit for bit: absolute Unix seconds for BLF, MF4,
TRC, CSV and candump; relative to the measurement start for ASC (python-can's default).

Differences from iterating python-can's reader directly, all deliberate:

- the channel mapping above (python-can passes the file's number through for TRC and MF4 but
  subtracts 1 for ASC and BLF);
- TRC CAN FD frames get ``dlc`` = payload length in bytes (python-can leaves the DLC code there);
- a record python-can accepts but that cannot be a CAN frame (identifier over 29 bits, DLC over
  64, non-finite time; in text formats also a payload shorter or longer than its DLC) is a bad
  record;
- a line that python-can silently passes over but is not a comment, header or event line of the
  format (e.g. a garbage line in an ASC file, a TRC data line with missing bytes) is a bad record;
- a BLF file that ends early, or whose container does not decompress (or inflates to another size
  than it declares), is an error (python-can stops silently or raises ``zlib.error``); a BLF
  object smaller than its fields, or of size 0, is a corrupted container (python-can reads past
  it, or loops forever);
- an ASC file without an "internal events logged" header line keeps its first frame (python-can's
  header parser swallows that line; it is handed to the reader once more).

Known limit: a cut MF4 file reads like one whose logger stopped early (asammdf reads the blocks
that are there), so MF4 truncation is not detected.

Errors
------
``errors="raise"`` (default): the first bad record raises :class:`~packbms.errors.LogFormatError`
with the line (text formats) or byte offset (BLF: the offset of the log container holding it).
``errors="skip"``: bad records are skipped and counted, and a file that ends early returns what
was readable; pass a :class:`ReadReport` to learn what happened. A skipped record is a text line, a
BLF frame object, a BLF container that does not inflate, or (native engine) the rest of a BLF
container whose objects cannot be parsed (the python-can engine drops the whole container).
File-level problems raise in both modes: a missing file, a directory, an unknown suffix, an empty
binary file (BLF, MF4), a BLF without its header, a TRC or ASC header python-can refuses, MF4
without asammdf. An empty text file (ASC, CSV, candump, TRC) is a valid log without frames: it
gives an empty table.

Memory: the native readers read blocks (text: 4 MiB; BLF: one container at a time, at most 8
inflated ahead), never allocate from a size or count the file declares without checking it
against the file size or a fixed maximum, and write frames into arrays of ``chunk_frames`` rows.
"""

from __future__ import annotations

import gc
import gzip
import os
import re
import struct
import traceback
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice

import numpy as np

from ..errors import LogFormatError, closest_names
from . import blf as _blf
from .frames import _DLC_TO_LEN, FrameTable

__all__ = ["read_log", "iter_log", "ReadReport", "SUPPORTED_SUFFIXES", "NATIVE_SUFFIXES", "ENGINES"]


@dataclass(frozen=True)
class _Format:
    name: str
    suffix: str
    binary: bool
    #: added to python-can's integer channel to get a 0-based index (clamped at 0)
    channel_shift: int
    #: text formats: how a payload's length must match the DLC ("can": dlc, or min(dlc, 8) for
    #: classic frames; "dlc": exactly dlc); None: no record checks (binary formats)
    payload_rule: str | None


_FORMATS = {
    ".asc": _Format("ASC", ".asc", False, 0, "can"),
    ".blf": _Format("BLF", ".blf", True, 0, None),
    ".csv": _Format("CSV", ".csv", False, 0, "dlc"),
    ".log": _Format("candump", ".log", False, 0, "dlc"),
    ".mf4": _Format("MF4", ".mf4", True, -1, None),
    ".trc": _Format("TRC", ".trc", False, -1, "can"),
}

#: Suffixes :func:`read_log` and :func:`iter_log` accept (case-insensitive).
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(sorted(_FORMATS)) + tuple(
    s + ".gz" for s in sorted(_FORMATS))

_BATCH = 16384
_PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError, ArithmeticError,
                 struct.error)
_STREAM_ERRORS = (OSError, EOFError, zlib.error)


@dataclass
class ReadReport:
    """What happened while reading one log (filled in by :func:`read_log` / :func:`iter_log`).

    Attributes
    ----------
    path : str or None
        The file read.
    format : str or None
        Format name ("ASC", "BLF", ...).
    frames : int
        Frames returned so far.
    skipped : int
        Bad records skipped (``errors="skip"``): text lines, or whole BLF log containers.
    ignored : int
        Text lines that are not frames but are valid in the format (header, comments, status and
        statistics events, ...). Native BLF reader: objects that are not CAN frames (and frame
        objects of an unknown header version). 0 for MF4 and the python-can BLF engine.
    truncated : bool
        The file ended early, or could not be read past some point (``errors="skip"`` only;
        ``errors="raise"`` raises instead).
    problems : list of LogFormatError
        The first :attr:`MAX_PROBLEMS` problems, each with ``path``, ``line`` or ``offset``.
    engine : str or None
        ``"native"`` or ``"python-can"``: the engine that read the file.

    Examples
    --------
    >>> report = ReadReport()
    >>> report.ok
    True
    """

    path: str | None = None
    format: str | None = None
    frames: int = 0
    skipped: int = 0
    ignored: int = 0
    truncated: bool = False
    problems: list = field(default_factory=list)
    engine: str | None = None

    MAX_PROBLEMS = 100

    @property
    def ok(self) -> bool:
        """True when nothing was skipped and the file was read to its end."""
        return self.skipped == 0 and not self.truncated

    def _add(self, err: LogFormatError, *, truncated: bool = False) -> None:
        if truncated:
            self.truncated = True
        else:
            self.skipped += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(err)


def split_suffix(path) -> tuple[str, bool]:
    """The log suffix of ``path`` in lower case, and whether it ends in ``.gz``.

    Examples
    --------
    >>> split_suffix("run.2024.ASC.gz")
    ('.asc', True)
    """
    name = os.path.basename(os.fspath(path)).lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    return os.path.splitext(name)[1], gz


def _unknown_suffix_message(path, supported) -> str:
    suffix, gz = split_suffix(path)
    shown = (suffix + (".gz" if gz else "")) or "(none)"
    hint = closest_names(shown, supported)
    more = f"; did you mean {', '.join(hint)}?" if hint else ""
    return f"unknown log format {shown!r}: supported suffixes are {', '.join(supported)}{more}"


def _show(text: str, limit: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


@lru_cache(maxsize=4096)
def _channel(channel, shift: int) -> int:
    if channel is None:
        return 0
    if isinstance(channel, (int, np.integer)):
        return max(int(channel) + shift, 0) & 0xFF
    digits = "".join(ch for ch in str(channel) if ch.isdigit())
    return int(digits) & 0xFF if digits else 0


# -- sources: one opened log, yielding (python-can Message, position) ----------------------------
class _Source:
    def __init__(self, path: str, fmt: _Format, gz: bool, errors: str, report: ReadReport):
        self.path = path
        self.fmt = fmt
        self.gz = gz
        self.skip = errors == "skip"
        self.report = report
        self._files: list = []

    def _open_binary(self):
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise LogFormatError(f"cannot open: {e.strerror or e}", path=self.path) from e
        self._files.append(f)
        if self.gz:
            f = gzip.GzipFile(fileobj=f, mode="rb")
            self._files.append(f)
        return f

    def close(self) -> None:
        for f in reversed(self._files):
            try:
                f.close()
            except Exception:  # noqa: BLE001 - closing a broken stream must not mask the error
                pass
        self._files.clear()

    def problem(self, message: str, *, line=None, offset=None, cause=None,
                truncated: bool = False) -> None:
        """Raise (errors="raise") or record a bad record / an early end (errors="skip")."""
        self.problem_err(LogFormatError(message, path=self.path, line=line, offset=offset),
                         cause=cause, truncated=truncated)

    def problem_err(self, err: LogFormatError, *, cause=None, truncated: bool = False) -> None:
        if not self.skip:
            raise err from cause
        self.report._add(err, truncated=truncated)

    def messages(self) -> Iterator[tuple]:
        raise NotImplementedError


class _LineFeed:
    """The text "file" handed to python-can's text readers.

    Decodes lines (UTF-8, undecodable bytes kept as surrogates so python-can sees them and fails
    on them), drops blank lines, counts line numbers, judges every line that produced no frame,
    and replays the header lines when a reader has to be restarted after a bad record.
    """

    def __init__(self, raw, source: "_TextSource"):
        self._raw = raw
        self._src = source
        self.lineno = 0
        self.first_line: int | None = None
        self._cur: tuple[int, str] | None = None
        self._cur_produced = True
        self._seen_frame = False
        self._prefix: list[str] = []
        self._replay: deque = deque()
        self._retried: set[int] = set()
        self._dead = False

    def __iter__(self):
        return self

    def __bool__(self):
        return True

    def __next__(self) -> str:
        self._settle()
        if self._replay:
            item = self._replay.popleft()
            if isinstance(item, tuple):        # a line handed out again by retry()
                self._cur, self._cur_produced = item, False
                return item[1]
            return item
        if self._dead:
            raise StopIteration
        while True:
            try:
                raw = self._raw.readline()
            except _STREAM_ERRORS as e:
                self._dead = True
                self._src.problem(f"compressed stream is corrupted or cut short ({e})",
                                  line=self.lineno + 1, cause=e, truncated=True)
                raise StopIteration from None
            if not raw:
                self._dead = True
                raise StopIteration
            self.lineno += 1
            text = raw.decode("utf-8", "surrogateescape")
            if not text.strip():
                continue
            if self.first_line is None:
                self.first_line = self.lineno
            self._cur = (self.lineno, text)
            self._cur_produced = False
            if not self._seen_frame:
                self._prefix.append(text)
            return text

    def _settle(self) -> None:
        cur, self._cur = self._cur, None
        if cur is not None and not self._cur_produced:
            self._src.judge(*cur)

    def produced(self) -> None:
        """The current line gave a frame."""
        self._cur_produced = True
        if not self._seen_frame:
            self._seen_frame = True
            if self._cur is not None and self._prefix and self._prefix[-1] is self._cur[1]:
                self._prefix.pop()

    def has_current(self) -> bool:
        """A line read from the file (not a replayed header line) is being parsed."""
        return self._cur is not None

    def current(self) -> tuple[int, str]:
        return self._cur if self._cur is not None else (self.lineno, "")

    def discard_current(self) -> None:
        """The current line was a bad record (already reported); forget it."""
        if self._cur is not None:
            if not self._seen_frame and self._prefix and self._prefix[-1] is self._cur[1]:
                self._prefix.pop()
            self._cur = None

    def retry(self, lineno: int, text: str) -> bool:
        """Hand a line out once more (python-can's ASC header parser swallows the first frame
        line of a file without an "internal events logged" line); False if already retried."""
        if lineno in self._retried:
            return False
        self._retried.add(lineno)
        self._replay.appendleft((lineno, text))
        return True

    def replay_header(self) -> None:
        """Hand the lines before the first frame out again (for a restarted reader)."""
        self._replay = deque(self._prefix)

    def close(self) -> None:
        pass


_ASC_NON_EVENT = re.compile(
    r"\s*(//|date\b|base\b|(no\s+)?internal\s+events\s+logged|begin\s+triggerblock|"
    r"end\s+triggerblock)", re.IGNORECASE)
# the lines python-can's ASCReader turns into frames (its ASC_MESSAGE_REGEX)
_ASC_FRAME = re.compile(r"\d+\.\d+\s+(\d+\s+(\w+\s+(Tx|Rx)|ErrorFrame)|CANFD)",
                        re.ASCII | re.IGNORECASE)
_TRC_V2_FRAME_TYPES = frozenset({"DT", "FD", "FB", "FE", "BI", "RR"})


class _TextSource(_Source):
    def _reader_class(self):
        import can

        return {".asc": can.ASCReader, ".csv": can.CSVReader, ".log": can.CanutilsLogReader,
                ".trc": can.TRCReader}[self.fmt.suffix]

    def messages(self):
        feed = self._feed = _LineFeed(self._open_binary(), self)
        cls = self._reader_class()
        self._reader = cls(feed)
        it = iter(self._reader)
        while True:
            try:
                msg = next(it)
            except StopIteration:
                return
            except NotImplementedError as e:
                raise LogFormatError(f"unsupported {self.fmt.name} file: {e}", path=self.path,
                                     line=feed.current()[0]) from e
            except _PARSE_ERRORS as e:
                lineno, text = feed.current()
                if _raised_in(e, "_extract_header") or not feed.has_current():
                    # not one record: the header, or a line python-can keeps from it (TRC hands
                    # the last header line on as a record when no record follows)
                    raise LogFormatError(f"bad {self.fmt.name} header: {e}", path=self.path,
                                         line=lineno) from e
                self.problem(f"cannot parse {self.fmt.name} record {_show(text)}: {e}",
                             line=lineno, cause=e)
                feed.discard_current()
                feed.replay_header()
                self._reader = cls(feed)
                it = iter(self._reader)
                continue
            feed.produced()
            yield msg, feed.current()[0]

    def judge(self, lineno: int, text: str) -> None:
        """A line that gave no frame: a valid non-frame line (counted), or a bad record."""
        if (self.fmt.suffix == ".asc" and _ASC_FRAME.match(text.strip())
                and self._feed.retry(lineno, text)):
            return
        reason = self._bad_line_reason(text, lineno)
        if reason is None:
            self.report.ignored += 1
        else:
            self.problem(f"{reason}: {_show(text)}", line=lineno)

    def _bad_line_reason(self, text: str, lineno: int) -> str | None:
        suffix = self.fmt.suffix
        if suffix == ".asc":
            if _ASC_NON_EVENT.match(text):
                return None
            try:
                float(text.split(None, 1)[0])
                return None      # a timestamped event python-can does not turn into a frame
            except ValueError:
                return "not an ASC record"
        if suffix == ".trc":
            return self._trc_reason(text)
        if suffix == ".csv":
            return None if lineno == self._feed.first_line else "not a CSV record"
        return "not a candump -L record"

    def _trc_reason(self, text: str) -> str | None:
        from can.io.trc import TRCFileVersion

        if text.lstrip().startswith(";"):
            return None
        reader = self._reader
        cols = text.split()
        version = getattr(reader, "file_version", TRCFileVersion.UNKNOWN)
        if version in (TRCFileVersion.UNKNOWN, TRCFileVersion.V1_0):
            ok = len(cols) > 2 and cols[2] == "FFFFFFFF"      # bus information line
        elif version == TRCFileVersion.V1_1:
            ok = len(cols) > 2 and cols[2] not in ("Tx", "Rx")
        elif version == TRCFileVersion.V1_3:
            ok = len(cols) > 3 and cols[3] not in ("Tx", "Rx")
        else:
            col = getattr(reader, "columns", {}).get("T")
            ok = col is not None and len(cols) > col and cols[col] not in _TRC_V2_FRAME_TYPES
        return None if ok else "not a complete TRC frame record"


def _raised_in(exc: BaseException, function_name: str) -> bool:
    return any(frame.f_code.co_name == function_name
               for frame, _ in traceback.walk_tb(exc.__traceback__))


class _BlfSource(_Source):
    def messages(self):
        import can
        from can.io.blf import BLFParseError

        f = self._open_binary()
        try:
            header = _blf.read_blf_header(f, self.path)
            if not self.gz and not self.skip:
                # Walk the container framing first, so a truncated file raises before any frame.
                size = os.fstat(f.fileno()).st_size
                for _ in _blf.iter_blf_objects(f, header.header_size, self.path,
                                               read_bodies=False):
                    pass
                if header.file_size > size:
                    raise LogFormatError(
                        f"truncated: the header declares {header.file_size} bytes, the file has "
                        f"{size}", path=self.path, offset=size)
            f.seek(0)
            reader = can.BLFReader(f)
        except _STREAM_ERRORS as e:
            raise LogFormatError(f"cannot read the BLF header: {e}", path=self.path,
                                 offset=0) from e
        end = header.header_size
        resync = False
        try:
            for obj in _blf.iter_blf_objects(f, header.header_size, self.path):
                end = obj.offset + obj.obj_size + obj.obj_size % 4
                if obj.obj_type != _blf.LOG_CONTAINER:
                    continue            # python-can reads frames from containers only
                try:
                    data = _blf.decompress_container(obj, self.path)
                except LogFormatError as e:
                    self.problem_err(e, cause=e.__cause__)
                    reader._tail, resync = b"", True
                    continue
                if resync:
                    # the skipped container may have held the start of an object: restart at
                    # the first object header in this one
                    at = data.find(b"LOBJ")
                    data = data[at:] if at >= 0 else b""
                    resync = False
                try:
                    msgs = list(reader._parse_container(data))
                except (BLFParseError, *_PARSE_ERRORS) as e:
                    self.problem("corrupted log container: cannot parse its objects "
                                 f"({e or 'bad object header'})", offset=obj.offset, cause=e)
                    reader._tail, resync = b"", True
                    continue
                for m in msgs:
                    yield m, obj.offset
        except LogFormatError as e:       # framing: cut short or no LOBJ signature
            self.problem_err(e, cause=e.__cause__, truncated=True)
            return
        except _STREAM_ERRORS as e:
            self.problem(f"compressed stream is corrupted or cut short ({e})", offset=end,
                         cause=e, truncated=True)
            return
        if reader._tail.strip(b"\x00"):
            self.problem("truncated: the last frame object is incomplete", offset=end,
                         truncated=True)
        elif not self.gz and header.file_size > f.tell():
            size = f.tell()
            self.problem(f"truncated: the header declares {header.file_size} bytes, the file has "
                         f"{size}", offset=size, truncated=True)


class _Mf4Source(_Source):
    def messages(self):
        from can.io import mf4 as _mf4

        if getattr(_mf4, "asammdf", None) is None:
            raise LogFormatError("reading MF4 needs the optional package asammdf: "
                                 "pip install asammdf", path=self.path)
        try:
            reader = _mf4.MF4Reader(self._open_binary() if self.gz else self.path)
        except Exception as e:  # noqa: BLE001 - asammdf raises anything on a bad file
            from .native_mf4 import _collect_broken_mdf

            _collect_broken_mdf()   # finalize asammdf's half-built object now
            raise LogFormatError(f"cannot read MF4: {type(e).__name__}: {e}",
                                 path=self.path) from e
        try:
            it = iter(reader)
            while True:
                try:
                    msg = next(it)
                except StopIteration:
                    return
                except Exception as e:  # noqa: BLE001
                    self.problem(f"cannot read MF4 records: {type(e).__name__}: {e}", cause=e,
                                 truncated=True)
                    return
                yield msg, None
        finally:
            try:
                reader.stop()
            except Exception:  # noqa: BLE001
                pass


# -- Message batches to columns ---------------------------------------------------------------
def _to_table(batch: list, src: _Source) -> FrameTable:
    fmt = src.fmt
    n = len(batch)
    msgs = [b[0] for b in batch]
    try:
        num = np.array([(m.timestamp, m.arbitration_id, m.dlc) for m in msgs], dtype=np.float64)
    except (OverflowError, TypeError, ValueError):
        num = np.array([tuple(_as_float(v) for v in (m.timestamp, m.arbitration_id, m.dlc))
                        for m in msgs], dtype=np.float64)
    flags = np.array([(m.is_extended_id, m.is_fd, m.is_error_frame, m.is_remote_frame)
                      for m in msgs], dtype=bool).reshape(n, 4)
    num = num.reshape(n, 3)
    datas = [m.data for m in msgs]
    lens = np.fromiter(map(len, datas), np.int64, n)
    shift = fmt.channel_shift
    chan = np.fromiter((_channel(m.channel, shift) for m in msgs), np.uint8, n)
    ts, aid, dlc = num[:, 0], num[:, 1], num[:, 2]
    is_fd, is_err, is_rtr = flags[:, 1], flags[:, 2], flags[:, 3]

    if fmt.suffix == ".trc":
        code = is_fd & (dlc >= 9) & (dlc <= 15)       # python-can leaves the DLC code here
        if code.any():
            dlc = dlc.copy()
            dlc[code] = _DLC_TO_LEN[dlc[code].astype(np.int64)]

    bad = ~np.isfinite(ts) | ~((aid >= 0) & (aid <= 0x1FFFFFFF)) | ~((dlc >= 0) & (dlc <= 64))
    bad |= lens > 64
    expect = dlc
    if fmt.payload_rule == "can":
        expect = np.where(is_fd, dlc, np.minimum(dlc, 8))
        bad |= ~is_rtr & ~is_err & (lens != expect)
    elif fmt.payload_rule == "dlc":
        bad |= ~is_rtr & (lens != expect)
    if bad.any():
        where = "offset" if fmt.binary else "line"
        for i in np.flatnonzero(bad):
            src.problem(_record_problem(ts[i], aid[i], dlc[i], lens[i], expect[i]),
                        **{where: batch[i][1]})
        keep = ~bad
        ts, aid, dlc, lens, chan = ts[keep], aid[keep], dlc[keep], lens[keep], chan[keep]
        flags = flags[keep]
        datas = [d for d, k in zip(datas, keep) if k]
        n = len(ts)

    width = 64 if n and int(lens.max()) > 8 else 8
    data = np.zeros((n, width), np.uint8)
    if n:
        data[np.arange(width) < lens[:, None]] = np.frombuffer(b"".join(datas), np.uint8)
    return FrameTable(timestamp=ts, arbitration_id=aid.astype(np.uint32),
                      is_extended=flags[:, 0], is_fd=flags[:, 1], is_error=flags[:, 2],
                      is_remote=flags[:, 3], dlc=dlc.astype(np.uint8), channel=chan, data=data,
                      source=src.path)


def _as_float(v) -> float:
    try:
        return float(v)
    except (OverflowError, TypeError, ValueError):
        return float("nan")


def _record_problem(ts, aid, dlc, length, expect) -> str:
    if not np.isfinite(ts):
        return f"timestamp {ts} is not a finite number"
    if not np.isfinite(aid) or not 0 <= aid <= 0x1FFFFFFF:
        return f"arbitration id {aid:.0f} does not fit 29 bits"
    if not 0 <= dlc <= 64:
        return f"DLC {dlc:.0f} is not between 0 and 64"
    return f"payload has {length} bytes but the DLC says {expect:.0f}"


# -- native sources ---------------------------------------------------------------------------
class _NativeBlfSource(_Source):
    engine = "native"

    def tables(self, chunk_frames: int) -> Iterator[FrameTable]:
        from .native_blf import iter_blf_tables

        return iter_blf_tables(self, chunk_frames)


class _NativeTextSource(_Source):
    engine = "native"

    def tables(self, chunk_frames: int) -> Iterator[FrameTable]:
        from .native_text import iter_text_tables

        return iter_text_tables(self, chunk_frames)


class _NativeMf4Source(_Source):
    engine = "native"

    def tables(self, chunk_frames: int) -> Iterator[FrameTable]:
        from .native_mf4 import iter_mf4_tables

        return iter_mf4_tables(self, chunk_frames)


#: suffix -> (native source, python-can source)
_SOURCES = {
    ".asc": (_NativeTextSource, _TextSource),
    ".blf": (_NativeBlfSource, _BlfSource),
    ".csv": (None, _TextSource),
    ".log": (_NativeTextSource, _TextSource),
    ".mf4": (_NativeMf4Source, _Mf4Source),
    ".trc": (_NativeTextSource, _TextSource),
}

#: Values of the ``engine`` argument of :func:`read_log` and :func:`iter_log`.
ENGINES = ("auto", "native", "python-can")

#: Suffixes with a native (Numba) reader; the others are read by python-can.
NATIVE_SUFFIXES: tuple[str, ...] = tuple(sorted(s for s, (n, _) in _SOURCES.items() if n))


# -- public API -------------------------------------------------------------------------------
def _open_source(path, errors: str, report: ReadReport, engine: str = "auto") -> _Source:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    p = os.fspath(path)
    if not isinstance(p, str):
        p = os.fsdecode(p)
    report.path = p
    if os.path.isdir(p):
        raise LogFormatError("is a directory, expected a log file", path=p)
    if not os.path.exists(p):
        raise LogFormatError("no such file", path=p)
    suffix, gz = split_suffix(p)
    fmt = _FORMATS.get(suffix)
    if fmt is None:
        raise LogFormatError(_unknown_suffix_message(p, SUPPORTED_SUFFIXES), path=p)
    report.format = fmt.name
    try:
        size = os.path.getsize(p)
    except OSError as e:
        raise LogFormatError(f"cannot open: {e.strerror or e}", path=p) from e
    if size == 0 and fmt.binary:
        raise LogFormatError(f"empty file: not a {fmt.name} file", path=p, offset=0)
    native, fallback = _SOURCES[fmt.suffix]
    if engine == "native" and native is None:
        raise ValueError(f"no native reader for {fmt.name} logs (native: "
                         f"{', '.join(NATIVE_SUFFIXES)}); use engine='auto' or 'python-can'")
    cls = fallback if engine == "python-can" or native is None else native
    report.engine = getattr(cls, "engine", "python-can")
    return cls(p, fmt, gz, errors, report)


def _message_tables(src: _Source) -> Iterator[FrameTable]:
    """python-can's messages converted to tables in batches."""
    it = src.messages()
    while True:
        # The batch's Message objects all survive the young GC generations, which makes
        # CPython run full collections over and over (about 40 % of the reading time); they
        # hold no cycles, so collection waits until the batch is converted. No caller code
        # runs while it is off.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            batch = list(islice(it, _BATCH))
            table = _to_table(batch, src) if batch else None
        finally:
            if gc_was_enabled:
                gc.enable()
        del batch
        if table is None:
            return
        yield table


def _chunks(src: _Source, chunk_frames: int) -> Iterator[FrameTable]:
    """The source's tables cut and joined into chunks of exactly ``chunk_frames`` (the last
    may be shorter)."""
    try:
        tables = src.tables(chunk_frames) if hasattr(src, "tables") else _message_tables(src)
        pending: list[FrameTable] = []
        filled = 0
        for table in tables:
            while len(table):
                room = chunk_frames - filled
                if len(table) > room:
                    piece, table = table.take(slice(0, room)), table.take(slice(room, None))
                else:
                    piece, table = table, table.take(slice(0, 0))
                pending.append(piece)
                filled += len(piece)
                if filled == chunk_frames:
                    chunk = pending[0] if len(pending) == 1 else FrameTable.concat(pending)
                    pending, filled = [], 0
                    src.report.frames += len(chunk)
                    yield chunk
        if pending:
            chunk = pending[0] if len(pending) == 1 else FrameTable.concat(pending)
            src.report.frames += len(chunk)
            yield chunk
    finally:
        src.close()


def iter_log(path, *, chunk_frames: int = 1_000_000, errors: str = "raise",
             report: ReadReport | None = None, engine: str = "auto") -> Iterator[FrameTable]:
    """Read a CAN log as FrameTable chunks of at most ``chunk_frames`` frames, in file order.

    Native readers (Numba kernels over the file's bytes: BLF, ASC, candump ``.log``, TRC; MF4
    through asammdf's record arrays) stream the file in bounded blocks; python-can's readers
    (CSV, or ``engine="python-can"``) are streamed and their messages converted in batches. Either
    way memory stays bounded by the chunk size whatever the file size, and both give the same
    frames. Path problems (missing file, directory, unknown suffix, empty binary file) raise at
    the call, before iteration starts.

    Parameters
    ----------
    path
        The log; its suffix picks the format (see :data:`SUPPORTED_SUFFIXES`).
    chunk_frames
        Frames per chunk (every chunk but the last has exactly this many).
    errors
        ``"raise"``: raise at the first bad record. ``"skip"``: skip bad records, stop early at a
        truncation, and record both in ``report``.
    report
        A :class:`ReadReport` filled in while iterating (frames, skipped, ignored, truncated,
        problems).
    engine
        ``"auto"`` (native where there is a native reader, see :data:`NATIVE_SUFFIXES`),
        ``"native"`` (ValueError for a format without one) or ``"python-can"``.

    Yields
    ------
    FrameTable
        With ``source`` set to the path.

    Raises
    ------
    LogFormatError
        File problems and, with ``errors="raise"``, bad records; the message names the file and
        the line or byte offset.
    ValueError
        A bad ``chunk_frames``, ``errors`` or ``engine``.

    Examples
    --------
    >>> from packbms.io import iter_log
    >>> for chunk in iter_log("drive.blf", chunk_frames=500_000):  # doctest: +SKIP
    ...     print(len(chunk))
    """
    if int(chunk_frames) < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    src = _open_source(path, errors, report if report is not None else ReadReport(), engine)
    return _chunks(src, int(chunk_frames))


def read_log(path, *, errors: str = "raise", report: ReadReport | None = None,
             engine: str = "auto") -> FrameTable:
    """Read a whole CAN log into one FrameTable, in file order.

    Parameters
    ----------
    path
        The log: ``.asc``, ``.blf``, ``.csv``, ``.log`` (candump -L), ``.mf4`` (needs asammdf),
        ``.trc``, each optionally gzip-compressed (``.asc.gz``, ...).
    errors
        ``"raise"`` (default) or ``"skip"``; see :func:`iter_log`.
    report
        Optional :class:`ReadReport` to fill in.
    engine
        ``"auto"`` (default), ``"native"`` or ``"python-can"``; see :func:`iter_log`.

    Returns
    -------
    FrameTable
        ``source`` is the path; empty for a text log without frames.

    Raises
    ------
    LogFormatError
        The file is missing, of an unknown format, truncated or corrupted (with the line or byte
        offset of the bad record).

    Examples
    --------
    >>> from packbms.io import read_log, ReadReport
    >>> report = ReadReport()
    >>> frames = read_log("drive.asc", errors="skip", report=report)  # doctest: +SKIP
    >>> report.skipped, report.problems[:1]  # doctest: +SKIP
    (1, [LogFormatError('drive.asc, line 12: not an ASC record: ...')])
    """
    chunks = list(iter_log(path, chunk_frames=_WHOLE, errors=errors, report=report,
                           engine=engine))
    if len(chunks) == 1:
        return chunks[0]
    if chunks:
        return FrameTable.concat(chunks)
    return FrameTable.empty(0, source=os.fsdecode(os.fspath(path)))


#: chunk size meaning "the whole file" (native readers then grow one table instead of chunking)
_WHOLE = 1 << 62
