"""Vector BLF (Binary Logging Format): a vectorised writer and the framing helpers the reader uses.

A BLF file is a 144-byte file header (``FileStatistics``: signature ``LOGG``, declared file size,
object count, start and stop time as Windows ``SYSTEMTIME``) followed by objects. Each object
starts with ``LOBJ``, a header size, a header version, the object size and the object type.
Frames are stored inside ``LOG_CONTAINER`` objects (type 10) whose payload is a zlib-compressed
stream of frame objects; a frame object may be split across two containers.

The layouts follow what python-can's ``can.io.blf`` reads (itself based on Toby Lorenz' *vector_blf*);
python-can's ``BLFReader`` is the oracle every file written here is tested against.

Writer
------
:func:`write_blf` builds every frame object at once with NumPy structured arrays (no per-frame
Python loop), cuts the object stream into containers of at most 128 KiB at object boundaries and
compresses them with zlib (level 1 by default, two threads). Frame objects:

- ``CAN_MESSAGE`` (type 1): classic data and remote frames with ``dlc <= 8``;
- ``CAN_FD_MESSAGE_64`` (type 101): frames with ``is_fd`` or ``dlc > 8``; the EDL flag is set
  only for ``is_fd`` frames; BRS and ESI are not kept by FrameTable, so they are 0;
- ``CAN_ERROR_EXT`` (type 73): error frames with channel, identifier, extended flag, dlc and up
  to 8 data bytes, as python-can's writer does (``is_fd`` of an error frame is not kept).

Channel: FrameTable's 0-based ``channel`` is written as ``channel + 1`` (BLF numbers channels from
1; python-can's reader subtracts 1 again).

Timestamps: object timestamps are unsigned nanosecond offsets from the file's start time, which
the header stores as a ``SYSTEMTIME`` with millisecond resolution; python-can rebuilds
``start + offset_ns * 1e-9``. If the earliest frame is a Unix time (>= 1990-01-01, python-can's
rule), the start is that time floored to the millisecond and offsets are rounded to the nearest
nanosecond: reading back gives every timestamp bit for bit (the float64 spacing at ~1.7e9 s,
2.4e-7 s, is far coarser than the nanosecond offset). Otherwise the timestamps are taken as
relative, the ``SYSTEMTIME`` is left zero (python-can then uses start 0) and they come back within
0.5 ns. Negative relative timestamps cannot be stored. Header start/stop come from the frames, never
from the wall clock, so the same frames always give byte-identical files.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, NamedTuple

import numpy as np

from ..errors import LogFormatError
from .frames import FrameTable

__all__ = ["write_blf", "read_blf_header", "iter_blf_objects", "decompress_container", "BlfHeader",
           "BlfObject"]

# -- layouts ----------------------------------------------------------------------------------
# signature, header size, application id/major/minor/build, binlog major/minor/build/patch,
# file size, uncompressed size, object count, objects read, start SYSTEMTIME, stop SYSTEMTIME
FILE_HEADER = struct.Struct("<4sLBBBBBBBBQQLL8H8H")
FILE_HEADER_SIZE = 144
# signature, header size, header version, object size, object type
OBJ_BASE = struct.Struct("<4sHHLL")
# compression method, (6 reserved), uncompressed size, (4 reserved)
CONTAINER = struct.Struct("<H6xL4x")

LOG_CONTAINER = 10
CAN_MESSAGE = 1
CAN_ERROR_EXT = 73
CAN_FD_MESSAGE_64 = 101
NO_COMPRESSION = 0
ZLIB_DEFLATE = 2

MAX_CONTAINER_BYTES = 128 * 1024
#: Earliest timestamp taken as a Unix time (1990-01-01), as python-can decides.
UNIX_EPOCH_MIN_S = 631152000.0

_TIME_ONE_NANS = 2
_CAN_MSG_EXT = 0x80000000
_REMOTE_FLAG = 0x80
_FD64_REMOTE = 0x0010
_FD64_EDL = 0x1000
_OBJ_HEADER_BYTES = 32          # base header (16) + object header v1 (16)
_SIZE_CAN = 48                  # header + channel/flags/dlc/id + 8 data bytes
_SIZE_ERR = 64                  # header + CAN_ERROR_EXT body (32)
_SIZE_FD_BASE = 72              # header + CAN_FD_MESSAGE_64 body without data (40)
_FD_LENGTHS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64])
_LEN_TO_DLC = np.full(65, 255, np.uint8)
_LEN_TO_DLC[_FD_LENGTHS] = np.arange(16, dtype=np.uint8)

# Application fields as python-can writes them (files known to open in Vector tools).
_APPLICATION = (5, 0, 0, 0)
_BINLOG_VERSION = (2, 6, 8, 1)

_WRITE_CHUNK_FRAMES = 1 << 18


class BlfHeader(NamedTuple):
    """The parts of a BLF file header the readers use."""

    header_size: int
    file_size: int
    object_count: int
    #: the start SYSTEMTIME as Unix seconds, computed as python-can does (0 when not a date)
    start_timestamp: float = 0.0
    uncompressed_size: int = 0


def systemtime_to_timestamp(st) -> float:
    """Unix seconds of a ``SYSTEMTIME`` (year, month, weekday, day, hour, minute, second, ms),
    exactly as python-can's ``can.io.blf.systemtime_to_timestamp``: 0 when it is not a date."""
    try:
        t = _dt.datetime(st[0], st[1], st[3], st[4], st[5], st[6], st[7] * 1000,
                         tzinfo=_dt.timezone.utc)
        return t.timestamp()
    except ValueError:
        return 0


class BlfObject(NamedTuple):
    """A top-level object: where it starts, its type and declared size, and its body."""

    offset: int
    obj_type: int
    obj_size: int
    body: bytes | None


def read_blf_header(f: BinaryIO, path) -> BlfHeader:
    """Read and check the file header; leave ``f`` at the first object.

    Raises
    ------
    LogFormatError
        Empty file, file shorter than a header, wrong signature, impossible header size.
    """
    raw = f.read(FILE_HEADER.size)
    if not raw:
        raise LogFormatError("empty file: a BLF file starts with a 144-byte header", path=path,
                             offset=0)
    if len(raw) < FILE_HEADER.size:
        raise LogFormatError(f"truncated BLF header: {len(raw)} bytes, expected "
                             f"{FILE_HEADER.size}", path=path, offset=len(raw))
    fields = FILE_HEADER.unpack(raw)
    if fields[0] != b"LOGG":
        raise LogFormatError(f"not a BLF file: signature {fields[0]!r}, expected b'LOGG'",
                             path=path, offset=0)
    header_size = fields[1]
    if not FILE_HEADER.size <= header_size <= 1 << 16:
        raise LogFormatError(f"BLF header size {header_size} is not plausible "
                             f"(expected {FILE_HEADER_SIZE})", path=path, offset=4)
    rest = f.read(header_size - FILE_HEADER.size)
    if len(rest) < header_size - FILE_HEADER.size:
        raise LogFormatError(f"truncated BLF header: {FILE_HEADER.size + len(rest)} bytes, "
                             f"expected {header_size}", path=path,
                             offset=FILE_HEADER.size + len(rest))
    return BlfHeader(header_size, fields[10], fields[12], systemtime_to_timestamp(fields[14:22]),
                     fields[11])


def iter_blf_objects(f: BinaryIO, offset: int, path, *, read_bodies: bool = True,
                     file_size: int | None = None):
    """Walk the top-level objects from ``offset`` (where ``f`` is positioned).

    With ``read_bodies=False`` the bodies are skipped with ``seek`` (a cheap scan of the framing).
    A body is never allocated from its declared size alone: with ``file_size`` known, a size past
    the end of the file is refused before reading; otherwise (a compressed stream) the body is read
    in bounded pieces, so memory follows the bytes actually there.

    Raises
    ------
    LogFormatError
        A header without ``LOBJ``, an impossible object size, or an object cut short by the end of
        the file (truncation); ``offset`` is the start of that object.
    """
    while True:
        raw = f.read(OBJ_BASE.size)
        if not raw:
            return
        if len(raw) < OBJ_BASE.size:
            raise LogFormatError(f"truncated: {len(raw)} bytes of an object header at the end of "
                                 "the file", path=path, offset=offset)
        sig, _hsize, _hver, obj_size, obj_type = OBJ_BASE.unpack(raw)
        if sig != b"LOBJ":
            raise LogFormatError(f"corrupted: expected an object signature b'LOBJ', found {sig!r}",
                                 path=path, offset=offset)
        if obj_size < OBJ_BASE.size:
            raise LogFormatError(f"corrupted: object size {obj_size} is smaller than its header",
                                 path=path, offset=offset)
        need = obj_size - OBJ_BASE.size
        if read_bodies and file_size is not None and offset + obj_size > file_size:
            got = max(file_size - offset - OBJ_BASE.size, 0)
        elif read_bodies:
            body = _read_bounded(f, need)
            got = len(body)
        else:
            body = None
            here = f.tell()
            end = f.seek(0, os.SEEK_END)
            got = min(need, end - here)
            f.seek(here + got)
        if got < need:
            raise LogFormatError(f"truncated: object of type {obj_type} declares {obj_size} bytes, "
                                 f"only {OBJ_BASE.size + got} are left in the file",
                                 path=path, offset=offset)
        pad = obj_size % 4
        if pad:
            f.read(pad) if read_bodies else f.seek(pad, os.SEEK_CUR)
        yield BlfObject(offset, obj_type, obj_size, body)
        offset += obj_size + pad


_READ_PIECE = 1 << 24


def _read_bounded(f: BinaryIO, need: int) -> bytes:
    """Read ``need`` bytes (fewer at the end of the stream) in pieces of at most 16 MiB."""
    if need <= _READ_PIECE:
        return f.read(need)
    pieces = []
    while need > 0:
        piece = f.read(min(need, _READ_PIECE))
        if not piece:
            break
        pieces.append(piece)
        need -= len(piece)
    return b"".join(pieces)


#: Largest inflated container accepted when the container does not declare its size (python-can
#: and Vector write at most 128 KiB per container); a bigger one is refused as corrupted.
MAX_INFLATED_BYTES = 64 << 20


def decompress_container(obj: BlfObject, path, zlib_module=zlib):
    """The uncompressed payload of a ``LOG_CONTAINER`` object.

    Output is bounded by the declared uncompressed size (or :data:`MAX_INFLATED_BYTES` when the
    container declares 0), so a small corrupted container cannot inflate without limit.

    Parameters
    ----------
    obj
        The container; ``obj.body`` is any bytes-like object.
    path
        Shown in errors.
    zlib_module
        An inflater with zlib's ``decompressobj`` interface (stdlib ``zlib`` or
        ``isal.isal_zlib``).

    Raises
    ------
    LogFormatError
        Unknown compression method, bad zlib data, an incomplete zlib stream, or a size that does
        not match the container's declared uncompressed size.
    """
    body = obj.body
    if len(body) < CONTAINER.size:
        raise LogFormatError("corrupted: log container shorter than its header", path=path,
                             offset=obj.offset)
    method, usize = CONTAINER.unpack_from(body)
    payload = memoryview(body)[CONTAINER.size:]
    if method == NO_COMPRESSION:
        data = bytes(payload)
    elif method == ZLIB_DEFLATE:
        limit = usize if usize else MAX_INFLATED_BYTES
        z = zlib_module.decompressobj()
        try:
            data = z.decompress(payload, limit + 1)
        except zlib_module.error as e:
            raise LogFormatError(f"corrupted log container: bad zlib data ({e})", path=path,
                                 offset=obj.offset) from e
        if len(data) > limit:
            what = f"the container declares {usize}" if usize else \
                f"more than the {MAX_INFLATED_BYTES} accepted"
            raise LogFormatError(f"corrupted log container: inflates to more bytes than {what}",
                                 path=path, offset=obj.offset)
        if not z.eof:
            raise LogFormatError("corrupted log container: the zlib stream is incomplete",
                                 path=path, offset=obj.offset)
    else:
        raise LogFormatError(f"corrupted log container: unknown compression method {method}",
                             path=path, offset=obj.offset)
    if usize and len(data) != usize:
        raise LogFormatError(f"corrupted log container: {len(data)} bytes after decompression, "
                             f"the container declares {usize}", path=path, offset=obj.offset)
    return data


# -- writer -----------------------------------------------------------------------------------
def _systemtime(ms: int) -> tuple[int, ...]:
    t = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(milliseconds=ms)
    return (t.year, t.month, t.isoweekday() % 7, t.day, t.hour, t.minute, t.second,
            t.microsecond // 1000)


def _floor_ms(t: float) -> int:
    ms = int(np.floor(t * 1000.0))
    while ms / 1000 > t:            # t*1000 may have rounded up across an integer
        ms -= 1
    return ms


def _header_dtype(itemsize: int, body: list) -> np.dtype:
    names = ["sig", "hsize", "hver", "osize", "otype", "tflags", "client", "over", "ts"]
    formats = ["S4", "<u2", "<u2", "<u4", "<u4", "<u4", "<u2", "<u2", "<u8"]
    offsets = [0, 4, 6, 8, 12, 16, 20, 22, 24]
    for name, fmt, off in body:
        names.append(name)
        formats.append(fmt)
        offsets.append(off)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": itemsize})


_CAN_BODY = [("channel", "<u2", 32), ("mflags", "u1", 34), ("dlc", "u1", 35),
             ("id", "<u4", 36), ("data", ("u1", (8,)), 40)]
_ERR_BODY = [("channel", "<u2", 32), ("dlc", "u1", 42), ("id", "<u4", 48),
             ("data", ("u1", (8,)), 56)]
_FD_BODY = [("channel", "u1", 32), ("dlc", "u1", 33), ("valid", "u1", 34), ("id", "<u4", 36),
            ("fdflags", "<u4", 44), ("data", ("u1", (64,)), 72)]


def _validate(frames: FrameTable, path) -> tuple[float, bool]:
    """Check what BLF can store; return (start time, absolute?)."""
    ts = frames.timestamp
    if not np.all(np.isfinite(ts)):
        bad = int(np.flatnonzero(~np.isfinite(ts))[0])
        raise LogFormatError(f"frame {bad}: timestamp {ts[bad]} is not finite", path=path)
    if frames.arbitration_id.size and int(frames.arbitration_id.max()) > 0x1FFFFFFF:
        bad = int(np.argmax(frames.arbitration_id > 0x1FFFFFFF))
        raise LogFormatError(f"frame {bad}: arbitration id {frames.arbitration_id[bad]:#x} does "
                             "not fit 29 bits", path=path)
    dlc = frames.dlc
    big = dlc > 8
    wide = frames.is_fd | big
    bad_len = wide & ~frames.is_error & (_LEN_TO_DLC[np.minimum(dlc, 64)] == 255)
    bad_len |= dlc > 64
    if bad_len.any():
        bad = int(np.argmax(bad_len))
        raise LogFormatError(f"frame {bad}: dlc {dlc[bad]} is not a CAN FD payload length "
                             f"(one of {', '.join(map(str, _FD_LENGTHS))})", path=path)
    if (frames.is_error & big).any():
        bad = int(np.argmax(frames.is_error & big))
        raise LogFormatError(f"frame {bad}: error frame with dlc {dlc[bad]}; BLF error frames "
                             "carry at most 8 data bytes", path=path)
    if (wide & ~frames.is_error & (frames.channel == 255)).any():
        bad = int(np.argmax(wide & ~frames.is_error & (frames.channel == 255)))
        raise LogFormatError(f"frame {bad}: channel index 255 cannot be stored in a BLF CAN FD "
                             "object (one byte, 1-based)", path=path)
    if len(frames) == 0:
        return 0.0, False
    t_min = float(ts.min())
    if t_min >= UNIX_EPOCH_MIN_S:
        if float(ts.max()) >= 253402300800.0:   # year 10000: python-can's datetime fails
            raise LogFormatError("timestamps beyond the year 9999 cannot be stored in BLF",
                                 path=path)
        return _floor_ms(t_min) / 1000, True
    if t_min < 0:
        raise LogFormatError(f"BLF cannot store negative timestamps (earliest is {t_min} s); "
                             "shift the frames to start at 0 or at a Unix time", path=path)
    return 0.0, False


def _encode_objects(frames: FrameTable, start: float) -> tuple[np.ndarray, np.ndarray]:
    """All frame objects of ``frames`` as one byte array, and each object's end offset."""
    n = len(frames)
    dlc = frames.dlc
    is_err = frames.is_error
    is_fd64 = ~is_err & (frames.is_fd | (dlc > 8))
    is_can = ~is_err & ~is_fd64
    fd_len = np.where(is_fd64, dlc, 0).astype(np.int64)
    size = np.where(is_err, _SIZE_ERR, np.where(is_fd64, _SIZE_FD_BASE + fd_len, _SIZE_CAN))
    padded = size + size % 4
    width = int(padded.max())
    if is_fd64.any():
        width = max(width, _SIZE_FD_BASE + 64)      # the FD record's data field is 64 bytes

    offs = np.rint((frames.timestamp - start) * 1e9)
    np.maximum(offs, 0, out=offs)
    ts_ns = offs.astype(np.uint64)
    arb = frames.arbitration_id.astype(np.uint32) | np.where(frames.is_extended,
                                                             np.uint32(_CAN_MSG_EXT),
                                                             np.uint32(0))
    chan = frames.channel.astype(np.uint16) + 1
    w = frames.data.shape[1]
    keep = (np.arange(w) < dlc[:, None]) & ~frames.is_remote[:, None]
    payload = np.where(keep, frames.data, 0).astype(np.uint8)

    slots = np.zeros((n, width), np.uint8)

    def fill(mask, body, otype):
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return None
        rec = slots.view(_header_dtype(width, body)).reshape(n)
        sub = rec[idx] if idx.size != n else rec     # a copy unless every row is of this kind
        sub["sig"] = b"LOBJ"
        sub["hsize"] = _OBJ_HEADER_BYTES
        sub["hver"] = 1
        sub["osize"] = size[idx]
        sub["otype"] = otype
        sub["tflags"] = _TIME_ONE_NANS
        sub["ts"] = ts_ns[idx]
        sub["id"] = arb[idx]
        return idx, sub, rec

    got = fill(is_can, _CAN_BODY, CAN_MESSAGE)
    if got is not None:
        idx, sub, rec = got
        sub["channel"] = chan[idx]
        sub["mflags"] = np.where(frames.is_remote[idx], _REMOTE_FLAG, 0)
        sub["dlc"] = dlc[idx]
        sub["data"] = payload[idx, :8]
        if idx.size != n:
            rec[idx] = sub
    got = fill(is_err, _ERR_BODY, CAN_ERROR_EXT)
    if got is not None:
        idx, sub, rec = got
        sub["channel"] = chan[idx]
        sub["dlc"] = dlc[idx]
        sub["data"] = payload[idx, :8]
        if idx.size != n:
            rec[idx] = sub
    got = fill(is_fd64, _FD_BODY, CAN_FD_MESSAGE_64)
    if got is not None:
        idx, sub, rec = got
        sub["channel"] = chan[idx].astype(np.uint8)
        sub["dlc"] = _LEN_TO_DLC[dlc[idx]]
        sub["valid"] = dlc[idx]
        sub["fdflags"] = (np.where(frames.is_fd[idx], _FD64_EDL, 0)
                          | np.where(frames.is_remote[idx], _FD64_REMOTE, 0))
        data = np.zeros((idx.size, 64), np.uint8)
        data[:, :w] = payload[idx]
        sub["data"] = data
        if idx.size != n:
            rec[idx] = sub
    ends = np.cumsum(padded)
    if np.all(padded == width):
        return slots.reshape(-1), ends
    return slots[np.arange(width) < padded[:, None]], ends


def _container(data, level: int) -> bytes:
    packed = zlib.compress(data, level) if level else bytes(data)
    method = ZLIB_DEFLATE if level else NO_COMPRESSION
    obj_size = OBJ_BASE.size + CONTAINER.size + len(packed)
    return b"".join((OBJ_BASE.pack(b"LOBJ", OBJ_BASE.size, 1, obj_size, LOG_CONTAINER),
                     CONTAINER.pack(method, len(data)), packed, b"\x00" * (obj_size % 4)))


def write_blf(f: BinaryIO, frames: FrameTable, *, compression_level: int = 1, path=None,
              threads: int = 2) -> int:
    """Write ``frames`` as a BLF file to the binary, seekable file object ``f``.

    Parameters
    ----------
    f
        Binary file opened for writing, positioned at 0 and seekable (the header, which holds the
        file size, is written last).
    frames
        The frames, in the order they are to be stored.
    compression_level
        zlib level 0..9 (0 stores containers uncompressed). The default 1 (fastest) writes a
        million classic frames in about half a second; 6 (zlib's default) is about 5 % smaller
        and 2.5 times slower. The output depends only on the frames and this level.
    path
        Shown in error messages.
    threads
        Containers compressed in parallel (zlib releases the GIL); does not change the output.

    Returns
    -------
    int
        Bytes written.

    Raises
    ------
    LogFormatError
        Frames BLF cannot store: non-finite or negative relative timestamps, an identifier over
        29 bits, an FD payload length that is not a CAN FD length, an error frame with more than
        8 data bytes, channel index 255 on a CAN FD frame.

    Examples
    --------
    >>> import io
    >>> from packbms.io.frames import FrameTable
    >>> buf = io.BytesIO()
    >>> write_blf(buf, FrameTable.empty(0))      # the 144-byte header alone
    144
    >>> write_blf(io.BytesIO(), FrameTable.empty(1000)) < 2000   # zeros compress well
    True
    """
    if not 0 <= compression_level <= 9:
        raise ValueError(f"compression_level must be 0..9, got {compression_level}")
    start, absolute = _validate(frames, path)
    n = len(frames)
    f.write(b"\x00" * FILE_HEADER_SIZE)
    written = FILE_HEADER_SIZE
    uncompressed = FILE_HEADER_SIZE
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 and n > 4096 else None
    try:
        for lo in range(0, n, _WRITE_CHUNK_FRAMES):
            buf, ends = _encode_objects(frames.take(slice(lo, lo + _WRITE_CHUNK_FRAMES)), start)
            cuts = [0]
            while cuts[-1] < len(buf):
                k = int(np.searchsorted(ends, cuts[-1] + MAX_CONTAINER_BYTES, side="right")) - 1
                cuts.append(int(ends[k]))
            view = memoryview(buf)
            pieces = [view[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
            if pool is not None:
                blobs = pool.map(lambda p: _container(p, compression_level), pieces)
            else:
                blobs = (_container(p, compression_level) for p in pieces)
            for blob in blobs:
                f.write(blob)
                written += len(blob)
            uncompressed += len(buf) + (OBJ_BASE.size + CONTAINER.size) * len(pieces)
    finally:
        if pool is not None:
            pool.shutdown()
    if absolute:
        t0 = _systemtime(_floor_ms(start))
        t1 = _systemtime(_floor_ms(float(frames.timestamp.max())))
    else:
        t0 = t1 = (0,) * 8
    header = FILE_HEADER.pack(b"LOGG", FILE_HEADER_SIZE, *_APPLICATION, *_BINLOG_VERSION,
                              written, uncompressed, n, 0, *t0, *t1)
    f.seek(0)
    f.write(header + b"\x00" * (FILE_HEADER_SIZE - len(header)))
    f.seek(written)
    return written
