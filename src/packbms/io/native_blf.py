"""Native BLF reader: Python reads the container framing and inflates, one kernel parses.

For each ``LOG_CONTAINER`` the compressed payload is inflated (see :func:`inflater`), the unparsed
tail of the previous container is joined to it (frame objects may straddle containers), and
:func:`packbms.kernels.blf_scan.scan_blf` writes the frames straight into FrameTable columns.
Frames equal python-can's ``BLFReader`` output field for field, timestamps bit for bit (the kernel
divides the integer offset exactly as python-can's ``Decimal`` arithmetic rounds it; offsets over
2**53 units are recomputed with ``Decimal`` here). Objects that are not CAN frames are skipped and
counted in :attr:`ReadReport.ignored <packbms.io.readers.ReadReport>`.

The tail is not copied in front of the whole container when it can be avoided: the tail and the
head of the container up to its first ``LOBJ`` are parsed on their own, and if that walk stops
exactly at that ``LOBJ`` (the kernel's ``state[S_STOP]``), the container is parsed in place from
there; otherwise (a payload holding ``LOBJ``, a damaged stream) the two are joined and parsed as
python-can does.

Threads: ``$PACKBMS_READ_THREADS`` sets how many worker threads read a file (0: none, everything
in the caller's thread). By default there is one per core, at most :data:`MAX_DEFAULT_THREADS`,
on a multi-core machine for files of at least :data:`PREFETCH_MIN_BYTES` (and ``.blf.gz``), else
none (the default used to be one inflating thread; the meaning of 0 and 1 is unchanged). The
caller's thread always walks the top-level framing, in file order (a plain file is mapped in
memory :data:`MAP_WINDOW_BYTES` at a time: the bodies are views, not copies), and hands the
objects to the workers in batches of :data:`BATCH_OBJECTS`, at most ``2 * threads + 1`` batches
ahead (bounded memory):

- 1 thread: the worker inflates a batch, the caller's thread parses it (a pipeline of two);
- 2 or more: each worker inflates its batch, then waits for its turn (batches parse in file
  order) and parses it straight into the output, then passes the turn on. Both cores inflate
  all the time; parsing, a fifth of the work, is done in file order by whichever worker holds the
  turn. With libdeflate (the ``deflate`` inflater, its C functions called through ``ctypes``, see
  :class:`_Libdeflate`) a worker inflates the containers of its batch one after another into one
  buffer it reuses (no allocation, no page faults, no copy) and parses them as one stream with
  one kernel call, which gives the frames of parsing them one by one with the tail carried over;
  with the other inflaters, container by container. A worker stops at the first container that
  needs anything raised, counted or handed out (a bad record, a corrupted or unreadable
  container, an ``iter_log`` chunk ending in the batch): the rows it wrote for it (for the whole
  stream) are undone and the caller's thread takes the rest of the batch the reference way, then
  passes the turn on.

Either way the same code parses the same bytes in the same order into the same output, so frames,
chunks, errors (file and byte offset) and ``errors="skip"`` counts do not depend on the thread
count. zlib, isal, libdeflate and the kernel all release the GIL.

Memory is bounded: a container body is read only after its declared size is checked against the
file size (plain files) or in bounded pieces (``.blf.gz``), inflation is bounded by the container's
declared uncompressed size and a fixed maximum (:data:`packbms.io.blf.MAX_INFLATED_BYTES`), at
most ``2 * threads + 1`` batches of at most :data:`BATCH_OBJECTS` containers and
:data:`BATCH_BYTES` declared inflated bytes (plus one container) are inflated ahead of the one
being parsed, and outputs are allocated by the caller's chunk size. Big output columns (and the
workers' buffers) are mapped on their own with transparent huge pages asked for
(:data:`HUGE_COLUMN_BYTES`).

Inflaters, fastest first when importable: ``deflate`` (libdeflate, one-shot with the declared
size), ``isal`` (``isal.isal_zlib``), stdlib ``zlib`` (always there, the reference). Set the
environment variable ``PACKBMS_INFLATER`` to ``zlib``, ``isal`` or ``deflate`` to pick one; every
inflater falls back to stdlib ``zlib`` to classify a container it cannot inflate, so errors are the
same whichever is used.
"""

from __future__ import annotations

import mmap
import os
import threading
import zlib
from decimal import Decimal

import numpy as np

from ..errors import LogFormatError
from ..kernels import blf_scan as K
from . import blf as _blf
from .native_common import MAX_DEFAULT_THREADS, MAX_THREADS  # noqa: F401 - documented here
from .native_common import FrameSink, new_events, read_threads

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


class _Libdeflate:
    """libdeflate's zlib decompressor (the one inside the ``deflate`` package) called through
    ctypes, inflating into memory the caller owns: a worker inflates a batch of containers one
    after another into one reused buffer (no allocation, no page faults, no copy), which is then
    parsed as one stream. ``ctypes`` releases the GIL during the call. :meth:`load` gives None
    when the library or its symbols are not there (the reader then uses ``deflate``'s Python
    API, one bytes object per container)."""

    _loaded = False
    _lib = None

    @classmethod
    def available(cls) -> bool:
        """Whether the library and its symbols are there (allocates nothing)."""
        cls._load_lib()
        return cls._lib is not None

    @classmethod
    def load(cls):
        """A decompressor (its caller closes it), or None without the library."""
        cls._load_lib()
        return None if cls._lib is None else cls()

    @classmethod
    def _load_lib(cls) -> None:
        if not cls._loaded:
            cls._loaded = True
            try:
                import ctypes

                import deflate._deflate as ext
                lib = ctypes.CDLL(ext.__file__)
                alloc, free = lib.libdeflate_alloc_decompressor, lib.libdeflate_free_decompressor
                run = lib.libdeflate_zlib_decompress
            except (ImportError, OSError, AttributeError):
                return
            alloc.restype, alloc.argtypes = ctypes.c_void_p, []
            free.restype, free.argtypes = None, [ctypes.c_void_p]
            run.restype = ctypes.c_int
            run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                            ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
            cls._lib = (ctypes, alloc, free, run)

    def __init__(self):
        ctypes, alloc, self._free, self._run = self._lib
        self._out = ctypes.c_size_t()
        self._ref = ctypes.byref(self._out)
        self._handle = alloc()
        if not self._handle:
            raise MemoryError("libdeflate_alloc_decompressor failed")

    def close(self) -> None:
        if self._handle:
            self._free(self._handle)
            self._handle = None

    def inflate(self, src: int, n: int, dst: int, usize: int) -> bool:
        """Inflate the zlib stream of ``n`` bytes at address ``src`` to exactly ``usize`` bytes
        at address ``dst``."""
        return self._run(self._handle, src, n, dst, usize, self._ref) == 0 and \
            self._out.value == usize


def _address(buffer) -> int:
    return np.frombuffer(buffer, np.uint8).__array_interface__["data"][0]


#: Files at least this big are read with worker threads (see :func:`_read_threads`).
PREFETCH_MIN_BYTES = 1 << 20
#: Top-level objects handed to a worker at once (one synchronisation per batch, not per
#: container: about 2 MiB inflated with 128 KiB containers).
BATCH_OBJECTS = 16
#: ... and at most this many inflated bytes declared (the containers of a batch are in memory
#: together).
BATCH_BYTES = 4 << 20


def _read_threads(size) -> int:
    """Worker threads: ``$PACKBMS_READ_THREADS`` if set (0 = none), else one per core up to
    :data:`MAX_DEFAULT_THREADS` for files of at least :data:`PREFETCH_MIN_BYTES` on a multi-core
    machine (0 on one core and for smaller files; a ``.blf.gz``, whose size is not known ahead,
    counts as big)."""
    return read_threads(size, PREFETCH_MIN_BYTES)


def inflate_all(path, name: str | None = None, threads: int = 0) -> int:
    """Inflate every container of a BLF file and return the inflated byte count (the
    inflate-only floor measured by ``benchmarks/bench_io.py``; ``threads`` > 0 inflates on that
    many worker threads, in batches of :data:`BATCH_OBJECTS` as :func:`iter_blf_tables` does)."""
    run = inflater(name)
    total = 0
    with open(path, "rb") as f:
        header = _blf.read_blf_header(f, path)
        size = os.fstat(f.fileno()).st_size
        objects = _objects(f, header.header_size, path, size)
        batches = (_pooled(objects, run, path, threads) if threads
                   else ((0, [_inflated_item(obj, run, path)], 0) for obj in objects))
        for _b, items, _taken in batches:
            for _obj, data, problem in items:
                if problem is not None:
                    raise problem
                total += len(data) if data is not None else 0
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

#: the smallest frame object (base header 16 + header v1 16 + CAN_MESSAGE body 16): n bytes of
#: objects hold at most n // 48 frames
_MIN_FRAME_OBJECT = 48


def _readonly(data) -> np.ndarray:
    arr = np.frombuffer(data, np.uint8)
    if arr.flags.writeable:
        arr = arr.view()
        arr.flags.writeable = False   # one kernel signature whatever the inflater gives
    return arr


def _scan(arr, start_ts, sink, events, state):
    return K.scan_blf(arr, start_ts, sink.ts, sink.aid, sink.flags, sink.dc, sink.data,
                      sink.data.view(np.uint64), events, state)


#: Bytes of the file mapped at once by :func:`_objects` (a window is unmapped once the objects
#: read from it are done with: memory stays bounded whatever the file size).
MAP_WINDOW_BYTES = 16 << 20


def _objects(f, offset: int, path, size):
    """:func:`packbms.io.blf.iter_blf_objects` over a plain file (``size`` known) without a read
    per object: windows of the file are mapped in memory and the bodies are views of them (no
    copy, no allocation, no system call per object; a file truncated by another process while it
    is read this way ends the process with SIGBUS, as with any mapped file). At the first object
    that is not plainly whole (no ``LOBJ``, an impossible size, cut by the end of the file) the
    rest is walked by ``iter_blf_objects`` itself, which raises its errors."""
    if size is None:
        yield from _blf.iter_blf_objects(f, offset, path)
        return
    head = _blf.OBJ_BASE
    grain = mmap.ALLOCATIONGRANULARITY
    win = None
    w0 = w1 = 0                 # the file bytes the current window maps

    def window(pos, need):
        """Map a window holding ``need`` bytes from ``pos``; False when mapping fails."""
        nonlocal win, w0, w1
        w0 = pos // grain * grain
        w1 = min(size, max(w0 + MAP_WINDOW_BYTES, pos + need))
        try:
            win = memoryview(mmap.mmap(f.fileno(), w1 - w0, access=mmap.ACCESS_READ, offset=w0))
        except (OSError, ValueError):
            w1 = 0
            return False
        return True

    pos = offset
    while pos + head.size <= size:
        if pos + head.size > w1 and not window(pos, head.size):
            break
        sig, _hsize, _hver, obj_size, obj_type = head.unpack_from(win, pos - w0)
        if sig != b"LOBJ" or obj_size < head.size or pos + obj_size > size:
            break
        if pos + obj_size > w1 and not window(pos, obj_size):
            break
        yield _blf.BlfObject(pos, obj_type, obj_size,
                             win[pos - w0 + head.size:pos - w0 + obj_size])
        pos += obj_size + obj_size % 4
    win = None
    if pos < size:
        f.seek(pos)
        yield from _blf.iter_blf_objects(f, pos, path, file_size=size)


def _inflated_item(obj, run, path):
    """(object, inflated bytes or None, LogFormatError or None) of one top-level object."""
    if obj.obj_type != _blf.LOG_CONTAINER:
        return obj, None, None
    try:
        return obj, _inflate(obj, run, path), None
    except LogFormatError as e:
        return obj, None, e


class _Turn:
    """Whose turn it is to parse into the output: batches parse in file order, each by the worker
    that inflated it, or by the consumer when that worker stopped at something the consumer must
    raise, count or hand out."""

    def __init__(self):
        self.cond = threading.Condition()
        self.next = 0             # the batch whose turn it is
        self.consumer = False     # ... and the consumer must finish it first
        self.closed = False

    def wait(self, b: int) -> bool:
        with self.cond:
            while not self.closed and (self.next != b or self.consumer):
                self.cond.wait()
            return not self.closed

    def done(self, b: int, whole: bool) -> None:
        """Batch ``b``'s worker is done: with the whole batch (the next batch's turn), or not
        (the consumer's turn)."""
        with self.cond:
            if whole:
                self.next = b + 1
            else:
                self.consumer = True
            self.cond.notify_all()

    def release(self, b: int) -> None:
        """The consumer finished batch ``b``."""
        with self.cond:
            self.next, self.consumer = b + 1, False
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _Workers:
    """A minimal thread pool whose threads are all started before any work is handed out
    (``ThreadPoolExecutor`` starts one per ``submit``, each start then waiting for a core
    while the first workers are already busy)."""

    def __init__(self, threads: int, on_exit=None):
        import queue

        self.on_exit = on_exit          # called in each worker thread as it ends
        self.jobs = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._run, name=f"packbms-blf-{i}", daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                fut, fn, args = job
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - handed to the consumer
                    fut.set_exception(e)
        finally:
            if self.on_exit is not None:
                self.on_exit()

    def submit(self, fn, *args):
        from concurrent.futures import Future

        fut = Future()
        self.jobs.put((fut, fn, args))
        return fut

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        interrupted = None
        for t in self.threads:
            while True:             # a second Ctrl-C still waits for the workers to end
                try:
                    t.join()
                    break
                except BaseException as e:  # noqa: BLE001 - raised once they have
                    interrupted = interrupted or e
        if interrupted is not None:
            raise interrupted


class _Batch:
    """A worker's reused buffer: containers inflated one after another (libdeflate through
    :class:`_Libdeflate`, stored ones copied), in file order, as one stream."""

    def __init__(self, lib: _Libdeflate):
        self.lib = lib
        self.buf = np.empty(0, np.uint8)
        self.addr = 0

    def reserve(self, nbytes: int) -> None:
        if nbytes > len(self.buf):
            old = self.buf
            self.buf = _column(max(nbytes, 2 * len(old), 1 << 21), np.uint8)
            self.addr = _address(self.buf)
            self.buf[:len(old)] = old

    def append(self, obj, at: int) -> int:
        """Inflate container ``obj`` to ``buf[at:]``; its inflated size, or -1 when it has to go
        the checking way (:func:`_inflate`: unknown size, bad data, ...)."""
        body = obj.body
        if len(body) < _CONTAINER_HEADER:
            return -1
        method, usize = _blf.CONTAINER.unpack_from(body)
        n = len(body) - _CONTAINER_HEADER
        if method == _blf.ZLIB_DEFLATE:
            if not usize or usize > _blf.MAX_INFLATED_BYTES or usize > 1100 * n + 64:
                return -1
            self.reserve(at + usize)
            ok = self.lib.inflate(_address(body) + _CONTAINER_HEADER, n, self.addr + at, usize)
            return usize if ok else -1
        if method == _blf.NO_COMPRESSION and (not usize or usize == n):
            self.reserve(at + n)
            self.buf[at:at + n] = np.frombuffer(body, np.uint8, n, _CONTAINER_HEADER)
            return n
        return -1


def _declared_bytes(body) -> int:
    """What inflating a container body may take, for the batch budget: its declared size, or
    when it declares none, what its payload could inflate to (deflate expands at most ~1032:1),
    capped at what any container may take (:data:`packbms.io.blf.MAX_INFLATED_BYTES`)."""
    usize = _blf.CONTAINER.unpack_from(body)[1]
    if not usize:
        usize = 1032 * (len(body) - _CONTAINER_HEADER) + 64
    return min(usize, _blf.MAX_INFLATED_BYTES)


def _pooled(objects, run, path, threads: int, out=None):
    """Batches ``(index, items, taken)`` in file order: ``items`` are :func:`_inflated_item` of
    up to :data:`BATCH_OBJECTS` top-level objects (fewer when their declared inflated size
    passes :data:`BATCH_BYTES`), inflated by ``threads`` worker threads at most
    ``2 * threads + 1`` batches ahead of the consumer (bounded memory). With ``out`` (a
    :class:`_Output`), each worker then waits for its batch's turn and takes the leading
    ``taken`` items into it (:meth:`_Output.take_stream`, :meth:`_Output.take_quietly`); the
    consumer takes the rest. The framing is read here, in the consumer's thread; its errors are
    raised after the batches before them."""
    from collections import deque

    turn = out.turn if out is not None else None
    fast = turn is not None and getattr(run, "name", None) == "deflate" and \
        _Libdeflate.available()
    local = threading.local()

    def free_batch():               # in each worker as it ends: nothing else uses its handle
        batch = getattr(local, "batch", None)
        if batch is not None:
            batch.lib.close()

    def job(b, objs):
        if not fast:
            items = [_inflated_item(obj, run, path) for obj in objs]
            taken = 0
            if turn is not None and turn.wait(b):
                try:
                    taken = out.take_quietly(items)
                finally:
                    turn.done(b, taken == len(items))
            return b, items, taken
        batch = getattr(local, "batch", None)
        if batch is None:
            batch = local.batch = _Batch(_Libdeflate())
        # the leading containers inflated into the batch buffer as one stream, the rest (from
        # the first that has to go the checking way) one by one
        items = []
        ends = []                   # where each streamed container ends in the buffer
        total = 0
        streamed = 0
        for obj in objs:
            if streamed == len(items):
                if obj.obj_type != _blf.LOG_CONTAINER:
                    items.append((obj, None, None))
                    streamed += 1
                    continue
                size = batch.append(obj, total)
                if size >= 0:
                    total += size
                    ends.append(total)
                    items.append((obj, None, None))
                    streamed += 1
                    continue
            items.append(_inflated_item(obj, run, path))
        taken = 0
        if turn.wait(b):
            try:
                if out.take_stream(batch.buf, total, ends, items[:streamed]):
                    taken = streamed + out.take_quietly(items[streamed:])
            finally:
                turn.done(b, taken == len(items))
        # the streamed containers the consumer takes, as bytes (the buffer is reused)
        at = 0
        for i in range(streamed):
            obj = items[i][0]
            if obj.obj_type == _blf.LOG_CONTAINER:
                end = ends.pop(0)
                if i >= taken:
                    items[i] = (obj, batch.buf[at:end].tobytes(), None)
                at = end
        return b, items, taken

    pending: deque = deque()
    with _Workers(threads, on_exit=free_batch) as pool:
        try:
            failure = None
            it = iter(objects)
            b = 0
            while True:
                while failure is None and len(pending) < 2 * threads + 1:
                    objs = []
                    declared = 0
                    try:
                        while len(objs) < BATCH_OBJECTS and declared < BATCH_BYTES:
                            obj = next(it)
                            objs.append(obj)
                            if obj.obj_type == _blf.LOG_CONTAINER and \
                                    len(obj.body) >= _CONTAINER_HEADER:
                                declared += _declared_bytes(obj.body)
                    except StopIteration:
                        failure = StopIteration
                    except Exception as e:  # noqa: BLE001 - raised after the earlier ones
                        failure = e
                    if objs:
                        pending.append(pool.submit(job, b, objs))
                        b += 1
                if not pending:
                    if failure is not None and failure is not StopIteration:
                        raise failure
                    return
                yield pending.popleft().result()
        finally:
            if turn is not None:
                turn.close()
            for fut in pending:
                fut.cancel()


#: Output columns at least this big get their own anonymous mapping with transparent huge pages
#: asked for (NumPy asks only from 4 MiB on): a fresh table is written once, and 4 KiB page
#: faults cost about as much as parsing it.
HUGE_COLUMN_BYTES = 1 << 20
_HUGE = 2 << 20


def _column(shape, dtype) -> np.ndarray:
    """A zeroed array of ``shape``; a big one on 2 MiB-aligned huge pages where available."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    nbytes = count * dtype.itemsize
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_COLUMN_BYTES or advise is None:
        return np.zeros(shape, dtype)
    try:
        m = mmap.mmap(-1, nbytes + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(advise)
    except (OSError, ValueError, AttributeError):
        return np.zeros(shape, dtype)
    start = -np.frombuffer(m, np.uint8, 1).ctypes.data % _HUGE
    return np.frombuffer(m, dtype, count, start).reshape(shape)


def _new_sink(capacity: int, width: int, path) -> FrameSink:
    """:class:`FrameSink` whose columns come from :func:`_column`."""
    sink = FrameSink(1, width, path)
    capacity = max(int(capacity), 1)
    sink.ts = _column(capacity, np.float64)
    sink.aid = _column(capacity, np.uint32)
    sink.flags = _column((4, capacity), np.bool_)
    sink.dc = _column((2, capacity), np.uint8)
    sink.data = _column((capacity, width), np.uint8)
    return sink


class _Output:
    """The frames in file order: FrameSink chunks, the unparsed tail of the last container, and
    the two ways of taking a container: :meth:`take` (the consumer: raises or counts every
    problem, hands out full chunks) and :meth:`take_quietly` (a worker whose turn it is: stops,
    leaving the rest to :meth:`take`, at anything that must be raised, counted or handed out)."""

    def __init__(self, src, start_ts: float, cap: int, limit: int, threads: int):
        self.src = src
        self.path = src.path
        self.start_ts = start_ts
        self.cap = cap
        self.limit = limit
        self.sink = _new_sink(cap, 8, src.path)
        self.events = new_events()
        self.state = np.zeros(K.STATE_SIZE, np.int64)
        self.tail = b""
        self.resync = False
        self.end = 0
        self.turn = _Turn() if threads >= 2 else None

    # -- quietly (any thread whose turn it is) --------------------------------------------------
    def _quiet(self, arr, pos: int = 0, stop: int = 0):
        """Parse ``arr`` from ``pos`` (up to the object found at or after ``stop`` when > 0) into
        the sink. Returns the final state, or None after undoing the rows of this call when a
        record must be raised or counted, the stream is corrupted or the chunk is full."""
        sink, events = self.sink, self.events
        state = np.zeros(K.STATE_SIZE, np.int64)
        state[K.S_POS] = pos
        state[K.S_STOP] = stop
        state[K.S_FOUND] = -1
        k0 = sink.k
        while True:
            state[K.S_K] = sink.k
            status = _scan(arr, self.start_ts, sink, events, state)
            sink.k = int(state[K.S_K])
            ne = int(state[K.S_EVENTS])
            if ne:
                for code, p, a, b in events[:ne].tolist():
                    if code != K.EV_SLOW_TIME:
                        sink.k = k0
                        return None
                    sink.ts[a] = _slow_time(arr, p, b, self.start_ts)
                state[K.S_EVENTS] = 0
            if status == K.DONE:
                return state
            if status == K.WIDE:
                sink.widen()           # the reference path widens at this frame too
            elif status == K.FULL and sink.capacity < self.limit:
                sink.grow(min(2 * sink.capacity, self.limit))
            elif status != K.EVENTS_FULL:
                sink.k = k0            # CORRUPT, or a full chunk to hand out
                return None

    def _joined(self, data, at: int):
        """Parse the tail joined to the head of ``data`` up to ``data[at]`` (its first ``LOBJ``),
        without copying ``data``. Returns the non-frame objects skipped when that walk reaches
        exactly the object at ``at`` (``data`` from ``at`` on then parses as ``tail + data``),
        else None (rows undone)."""
        tail = self.tail
        end = len(tail) + at
        k0 = self.sink.k
        state = self._quiet(_readonly(tail + data[:at + 4]), 0, end)
        if state is None:
            return None
        if state[K.S_FOUND] != end:
            self.sink.k = k0
            return None
        return int(state[K.S_IGNORED])

    def _start(self, data):
        """``(bytes, position)`` to parse a container from, the tail taken care of, and the
        non-frame objects skipped on the way."""
        if self.resync:
            # the skipped container may have held the start of an object: restart at the first
            # object header in this one
            at = data.find(b"LOBJ")
            return (data, at, 0) if at >= 0 else (b"", 0, 0)
        if not self.tail:
            return data, 0, 0
        at = data.find(b"LOBJ")
        if at >= 0:
            ignored = self._joined(data, at)
            if ignored is not None:
                return data, at, ignored
        return self.tail + data, 0, 0

    def take_stream(self, buf, total: int, ends, items) -> bool:
        """Take ``items`` whose containers are inflated one after another in ``buf[:total]``
        (each ending at ``ends[i]``), parsing them as one stream, which gives the frames of
        parsing them one by one with the tail carried over. All or nothing: False (nothing
        taken) when anything must be raised, counted or handed out, or the chunk would fill."""
        others = sum(1 for obj, _, _ in items if obj.obj_type != _blf.LOG_CONTAINER)
        if not ends:                           # no container: the tail waits for the next one
            self.src.report.ignored += others
            if items:
                obj = items[-1][0]
                self.end = obj.offset + obj.obj_size + obj.obj_size % 4
            return True
        sink = self.sink
        k0, ignored = sink.k, 0
        if sink.k + (total + len(self.tail)) // _MIN_FRAME_OBJECT + len(items) + 2 > self.limit:
            return False                       # a chunk may end in this batch: the consumer's
        stream = buf[:total].view()
        stream.flags.writeable = False
        pos = 0
        if self.resync or self.tail:
            first = buf[:min(ends[0], 1 << 12)].tobytes()
            at = first.find(b"LOBJ")
            if at < 0 and ends[0] > len(first):
                at = buf[:ends[0]].tobytes().find(b"LOBJ")
            if self.resync:
                # after a skipped container: restart at the first object header of the next
                pos = at if at >= 0 else ends[0]
            else:
                if at < 0:
                    return False
                ignored = self._joined(first if at + 4 <= len(first)
                                       else buf[:at + 4].tobytes(), at)
                if ignored is None:
                    return False
                pos = at
        state = self._quiet(stream, pos)
        if state is None:
            sink.k = k0
            return False
        self.src.report.ignored += ignored + int(state[K.S_IGNORED]) + others
        self.tail = stream[int(state[K.S_POS]):].tobytes()
        self.resync = False
        if items:
            obj = items[-1][0]
            self.end = obj.offset + obj.obj_size + obj.obj_size % 4
        return True

    def take_quietly(self, items) -> int:
        """Take the leading items that need nothing raised, counted or handed out; return how
        many were taken."""
        report = self.src.report
        for i, (obj, data, problem) in enumerate(items):
            if problem is not None:
                return i
            if data is not None:
                k0 = self.sink.k
                buf, pos, ignored = self._start(data)
                state = self._quiet(_readonly(buf), pos)
                if state is None:
                    self.sink.k = k0
                    return i
                report.ignored += ignored + int(state[K.S_IGNORED])
                self.tail = bytes(buf[int(state[K.S_POS]):])
                self.resync = False
            else:
                report.ignored += 1   # python-can reads frames from containers only
            self.end = obj.offset + obj.obj_size + obj.obj_size % 4
        return len(items)

    # -- the reference way (the consumer) ---------------------------------------------------------
    def take(self, obj, data, problem):
        """Take one top-level object, raising or counting its problems; yield full chunks."""
        self.end = obj.offset + obj.obj_size + obj.obj_size % 4
        if problem is not None:
            self.src.problem_err(problem, cause=problem.__cause__)
            self.tail, self.resync = b"", True
            return
        if data is None:
            self.src.report.ignored += 1      # python-can reads frames from containers only
            return
        buf, pos, ignored = self._start(data)
        self.resync = False
        self.src.report.ignored += ignored
        yield from self._parse(obj, _readonly(buf), pos)

    def _room(self):
        """Make room for one more row: grow the sink up to the chunk size, else hand it out and
        start a new one (returned)."""
        sink = self.sink
        if sink.capacity < self.limit:
            sink.grow(min(2 * sink.capacity, self.limit))
            return None
        table = sink.table()
        self.sink = _new_sink(self.cap, sink.width, self.path)
        return table

    def _parse(self, obj, arr, pos: int):
        """Parse ``arr`` from ``pos``, raising or counting every problem."""
        src = self.src
        state = self.state
        events = self.events
        start_ts = self.start_ts
        state[:] = 0
        state[K.S_POS] = pos
        while True:
            sink = self.sink
            state[K.S_K] = sink.k
            state[K.S_EVENTS] = 0
            status = _scan(arr, start_ts, sink, events, state)
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
                self.tail = bytes(arr[int(state[K.S_POS]):])
                return
            if status == K.FULL:
                table = self._room()
                if table is not None:
                    yield table
            elif status == K.WIDE:
                sink.widen()
            elif status == K.CORRUPT:
                reason = _CORRUPT_REASON.get(int(state[K.S_ERR]), "bad object header")
                src.problem(f"corrupted log container: cannot parse its objects ({reason})",
                            offset=obj.offset)
                self.tail, self.resync = b"", True
                return


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
    cap = int(min(chunk_frames, max(hint, 1024), 1 << 26))
    threads = _read_threads(size)
    out = _Output(src, float(header.start_timestamp), cap, chunk_frames, threads)
    out.end = header.header_size
    objects = _objects(f, header.header_size, path, size)
    if threads:
        batches = _pooled(objects, run, path, threads, out if threads >= 2 else None)
    else:
        batches = ((0, [_inflated_item(obj, run, path)], 0) for obj in objects)
    try:
        for b, items, taken in batches:
            for obj, data, problem in items[taken:]:
                yield from out.take(obj, data, problem)
            if out.turn is not None and taken < len(items):
                out.turn.release(b)
        if out.tail.strip(b"\x00"):
            src.problem("truncated: the last frame object is incomplete", offset=out.end,
                        truncated=True)
        elif not src.gz and header.file_size > size:
            src.problem(f"truncated: the header declares {header.file_size} bytes, the file has "
                        f"{size}", offset=size, truncated=True)
    except LogFormatError as e:
        # framing (cut short, no LOBJ): skip mode keeps what was read; raise mode re-raises
        src.problem_err(e, cause=e.__cause__, truncated=True)
    except (OSError, EOFError, zlib.error) as e:
        src.problem(f"compressed stream is corrupted or cut short ({e})", offset=out.end,
                    cause=e, truncated=True)
    finally:
        batches.close()
    if out.sink.k:
        yield out.sink.table()
