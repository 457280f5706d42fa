"""Native BLF reader: Python reads the container framing and inflates, one kernel parses.

For each ``LOG_CONTAINER`` the compressed payload is inflated (see :func:`inflater`), the unparsed
tail of the previous container is put in front (frame objects may straddle containers), and
:func:`packbms.kernels.blf_scan.scan_blf` writes the frames straight into FrameTable columns. Frames
equal python-can's ``BLFReader`` output field for field, timestamps bit for bit (the kernel divides
the integer offset exactly as python-can's ``Decimal`` arithmetic rounds it; offsets over 2**53
units are recomputed with ``Decimal`` here). Objects that are not CAN frames are skipped and
counted in :attr:`ReadReport.ignored <packbms.io.readers.ReadReport>`.

On a multi-core machine, files of at least :data:`PREFETCH_MIN_BYTES` have their containers
inflated by a worker thread (``$PACKBMS_READ_THREADS`` sets the count, 0 turns it off), at most 8
containers ahead, while the kernel parses in the caller's thread; zlib, isal, libdeflate
and the kernel all release the GIL. Results and errors come in file order either way.

Memory is bounded: a container body is read only after its declared size is checked against the
file size (plain files) or in bounded pieces (``.blf.gz``), inflation is bounded by the container's
declared uncompressed size and a fixed maximum (:data:`packbms.io.blf.MAX_INFLATED_BYTES`), and
outputs are allocated by the caller's chunk size.

Inflaters, fastest first when importable: ``deflate`` (libdeflate, one-shot with the declared
size), ``isal`` (``isal.isal_zlib``), stdlib ``zlib`` (always there, the reference). Set the
environment variable ``PACKBMS_INFLATER`` to ``zlib``, ``isal`` or ``deflate`` to pick one; every
inflater falls back to stdlib ``zlib`` to classify a container it cannot inflate, so errors are the
same whichever is used.
"""

from __future__ import annotations

import os
import zlib
from decimal import Decimal

import numpy as np

from ..errors import LogFormatError
from ..kernels import blf_scan as K
from . import blf as _blf
from .native_common import FrameSink, new_events

__all__ = ["inflater", "available_inflaters", "iter_blf_tables", "inflate_all"]

_CONTAINER_HEADER = _blf.CONTAINER.size


def available_inflaters() -> list[str]:
    """Names of the inflaters importable here, fastest first (``zlib`` is always last).

    Examples
    --------
    >>> available_inflaters()[-1]
    'zlib'
    """
    names = []
    try:
        import deflate  # noqa: F401

        names.append("deflate")
    except ImportError:
        pass
    try:
        import isal.isal_zlib  # noqa: F401

        names.append("isal")
    except ImportError:
        pass
    names.append("zlib")
    return names


def inflater(name: str | None = None):
    """A function ``(payload, usize) -> bytes-like`` inflating one zlib container payload, or
    None when the payload must go through the checking stdlib path.

    Parameters
    ----------
    name
        ``"deflate"``, ``"isal"``, ``"zlib"`` or None (``$PACKBMS_INFLATER``, else the fastest
        available).

    Raises
    ------
    ValueError
        An unknown or unavailable inflater.
    """
    name = name or os.environ.get("PACKBMS_INFLATER") or available_inflaters()[0]
    if name not in available_inflaters():
        raise ValueError(f"inflater {name!r} is not available; available: "
                         f"{', '.join(available_inflaters())}")
    if name == "deflate":
        import deflate

        err = deflate.DeflateError

        def run(payload, usize):
            # libdeflate allocates the declared size up front: only a size that deflate could
            # reach from this payload (at most about 1032:1) and below the fixed maximum
            if not usize or usize > _blf.MAX_INFLATED_BYTES or usize > 1100 * len(payload) + 64:
                return None
            try:
                out = deflate.zlib_decompress(payload, usize)
            except err:
                return None
            return out if len(out) == usize else None

        run.name = "deflate"
        return run
    module = zlib
    if name == "isal":
        from isal import isal_zlib as module

    def run(payload, usize):
        if usize > _blf.MAX_INFLATED_BYTES:
            return None
        z = module.decompressobj()
        try:
            out = z.decompress(payload, (usize or _blf.MAX_INFLATED_BYTES) + 1)
        except module.error:
            return None
        if not z.eof or (usize and len(out) != usize) or len(out) > _blf.MAX_INFLATED_BYTES:
            return None
        return out

    run.name = name
    return run


def _inflate(obj: _blf.BlfObject, run, path):
    body = obj.body
    if len(body) >= _CONTAINER_HEADER:
        method, usize = _blf.CONTAINER.unpack_from(body)
        if method == _blf.ZLIB_DEFLATE:
            out = run(memoryview(body)[_CONTAINER_HEADER:], usize)
            if out is not None:
                return out
    # uncompressed containers, and every failure: the checking stdlib path (raises the error)
    return _blf.decompress_container(obj, path)


def _inflated(objects, run, path):
    """(object, inflated bytes or None, LogFormatError or None) for each top-level object;
    framing errors escape."""
    for obj in objects:
        if obj.obj_type != _blf.LOG_CONTAINER:
            yield obj, None, None
            continue
        try:
            yield obj, _inflate(obj, run, path), None
        except LogFormatError as e:
            yield obj, None, e


#: Files at least this big have their containers inflated by worker threads (1 by default, or
#: ``$PACKBMS_READ_THREADS``; 0 turns it off) while the kernel parses in the caller's thread.
PREFETCH_MIN_BYTES = 1 << 20
_PREFETCH_DEPTH = 8


def _read_threads(size) -> int:
    """Inflating threads: ``$PACKBMS_READ_THREADS`` if set (0 = none), else 1 on a multi-core
    machine for files of at least :data:`PREFETCH_MIN_BYTES` (inflating one container while the
    kernel parses the previous one; a second inflating thread pays off only for the slow stdlib
    inflater and a free third core)."""
    env = os.environ.get("PACKBMS_READ_THREADS", "")
    if env.isdigit():
        return int(env)
    if (os.cpu_count() or 1) < 2 or (size is not None and size < PREFETCH_MIN_BYTES):
        return 0
    return 1


def _pooled(objects, run, path, threads: int, depth: int = _PREFETCH_DEPTH):
    """:func:`_inflated` with the containers inflated by ``threads`` worker threads, at most
    ``depth`` containers ahead of the consumer (bounded memory), results in file order. The
    framing is read here, in the consumer's thread; its errors are raised in order."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def job(obj):
        try:
            return obj, _inflate(obj, run, path), None
        except LogFormatError as e:
            return obj, None, e

    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="packbms-inflate") as pool:
        try:
            failure = None
            it = iter(objects)
            while True:
                while failure is None and len(pending) < depth:
                    try:
                        obj = next(it)
                    except StopIteration:
                        failure = StopIteration
                        break
                    except BaseException as e:  # noqa: BLE001 - raised after the earlier ones
                        failure = e
                        break
                    if obj.obj_type != _blf.LOG_CONTAINER:
                        pending.append(obj)
                    else:
                        pending.append(pool.submit(job, obj))
                if not pending:
                    if failure is not None and failure is not StopIteration:
                        raise failure
                    return
                head = pending.popleft()
                yield (head, None, None) if isinstance(head, _blf.BlfObject) else head.result()
        finally:
            for fut in pending:
                if not isinstance(fut, _blf.BlfObject):
                    fut.cancel()


def inflate_all(path, name: str | None = None) -> int:
    """Inflate every container of a BLF file and return the inflated byte count (the
    inflate-only floor measured by ``benchmarks/bench_io.py``)."""
    run = inflater(name)
    total = 0
    with open(path, "rb") as f:
        header = _blf.read_blf_header(f, path)
        size = os.fstat(f.fileno()).st_size
        for obj in _blf.iter_blf_objects(f, header.header_size, path, file_size=size):
            if obj.obj_type == _blf.LOG_CONTAINER:
                total += len(_inflate(obj, run, path))
    return total


def _slow_time(buf, p: int, raw: int, start_ts) -> float:
    """python-can's timestamp for an offset over 2**53 units: exact Decimal product, rounded."""
    flags = int.from_bytes(bytes(buf[p + 16:p + 20]), "little")
    factor = Decimal("1e-5") if flags == 1 else Decimal("1e-9")
    return float(Decimal(raw & 0xFFFFFFFFFFFFFFFF) * factor) + start_ts


_CORRUPT_REASON = {
    K.ERR_NO_SIGNATURE: "no object signature b'LOBJ' where the next object should start",
    K.ERR_OBJECT_SIZE: "an object declares a size smaller than its header",
    K.ERR_OBJECT_TOO_SMALL: "a frame object is smaller than its fields",
}


def iter_blf_tables(src, chunk_frames: int, *, inflater_name: str | None = None):
    """Yield FrameTables of at most ``chunk_frames`` rows from the BLF file of ``src``.

    ``src`` is a :class:`packbms.io.readers._Source` (path, gz flag, errors mode, report); every
    problem goes through ``src.problem`` (raise, or count in skip mode).
    """
    path = src.path
    run = inflater(inflater_name)
    f = src._open_binary()
    try:
        header = _blf.read_blf_header(f, path)
        size = None
        if not src.gz:
            size = os.fstat(f.fileno()).st_size
            if not src.skip and chunk_frames < 1 << 40:
                # Streaming: walk the framing first, so a truncated file raises before any
                # chunk is handed out (a whole-file read raises either way).
                for _ in _blf.iter_blf_objects(f, header.header_size, path, read_bodies=False):
                    pass
                if header.file_size > size:
                    raise LogFormatError(
                        f"truncated: the header declares {header.file_size} bytes, the file has "
                        f"{size}", path=path, offset=size)
                f.seek(header.header_size)
    except (OSError, EOFError, zlib.error) as e:
        raise LogFormatError(f"cannot read the BLF header: {e}", path=path, offset=0) from e

    # Rows allocated: the chunk size, or for a whole-file read a hint checked against the file
    # size (at most one frame per 2 bytes, the best compression of repeated 48-byte objects);
    # never a count the header declares alone. Outgrown arrays double, up to the chunk size.
    hint = header.object_count if size is None else min(header.object_count,
                                                         max(size // 2, 1))
    limit = chunk_frames
    cap = int(min(limit, max(hint, 1024), 1 << 26))
    sink = FrameSink(cap, 8, path)
    events = new_events()
    state = np.zeros(K.STATE_SIZE, np.int64)
    start_ts = float(header.start_timestamp)
    tail = b""
    resync = False
    end = header.header_size
    objects = _blf.iter_blf_objects(f, header.header_size, path, file_size=size)
    threads = _read_threads(size)
    items = _pooled(objects, run, path, threads) if threads else _inflated(objects, run, path)
    try:
        for obj, data, problem in items:
            end = obj.offset + obj.obj_size + obj.obj_size % 4
            if problem is not None:
                src.problem_err(problem, cause=problem.__cause__)
                tail, resync = b"", True
                continue
            if data is None:
                src.report.ignored += 1       # python-can reads frames from containers only
                continue
            if resync:
                # the skipped container may have held the start of an object: restart at the
                # first object header in this one
                at = data.find(b"LOBJ")
                data = data[at:] if at >= 0 else b""
                resync = False
            buf = tail + data if tail else data
            arr = np.frombuffer(buf, np.uint8)
            if arr.flags.writeable:
                arr = arr.view()
                arr.flags.writeable = False   # one kernel signature whatever the inflater gives
            state[:] = 0
            while True:
                state[K.S_K] = sink.k
                state[K.S_EVENTS] = 0
                status = K.scan_blf(arr, start_ts, sink.ts, sink.aid, sink.flags, sink.dc,
                                    sink.data, events, state)
                sink.k = int(state[K.S_K])
                src.report.ignored += int(state[K.S_IGNORED])
                state[K.S_IGNORED] = 0
                for code, p, a, b in (events[: state[K.S_EVENTS]].tolist()
                                      if state[K.S_EVENTS] else ()):
                    if code == K.EV_SLOW_TIME:
                        sink.ts[a] = _slow_time(arr, p, b, start_ts)
                    elif code == K.EV_BAD_DLC:
                        src.problem(f"DLC {a} is not between 0 and 64", offset=obj.offset)
                    else:
                        src.problem(f"payload has {a} bytes, over 64", offset=obj.offset)
                if status == K.DONE:
                    tail = bytes(buf[int(state[K.S_POS]):])
                    break
                if status == K.FULL:
                    if sink.capacity < limit:
                        sink.grow(min(2 * sink.capacity, limit))
                    else:
                        yield sink.table()
                        sink = FrameSink(cap, sink.width, path)
                elif status == K.WIDE:
                    sink.widen()
                elif status == K.CORRUPT:
                    reason = _CORRUPT_REASON.get(int(state[K.S_ERR]), "bad object header")
                    src.problem(f"corrupted log container: cannot parse its objects ({reason})",
                                offset=obj.offset)
                    tail, resync = b"", True
                    break
        if tail.strip(b"\x00"):
            src.problem("truncated: the last frame object is incomplete", offset=end,
                        truncated=True)
        elif not src.gz and header.file_size > size:
            src.problem(f"truncated: the header declares {header.file_size} bytes, the file has "
                        f"{size}", offset=size, truncated=True)
    except LogFormatError as e:
        # framing (cut short, no LOBJ): skip mode keeps what was read; raise mode re-raises
        src.problem_err(e, cause=e.__cause__, truncated=True)
    except (OSError, EOFError, zlib.error) as e:
        src.problem(f"compressed stream is corrupted or cut short ({e})", offset=end, cause=e,
                    truncated=True)
    finally:
        items.close()
    if sink.k:
        yield sink.table()
