"""The HDF5 result file: the one place that knows its layout (DESIGN.md, "HDF5 result").

::

    /time                 [T]    s from log start; attr t0_unix (NaN when the log has no absolute time)
    /pack/current         [T]    A, positive = discharge
    /pack/voltage         [T]    V (when the layout names a pack voltage)
    /pack/soc             [T]    fraction (estimation)
    /cells/voltage        [T, S] V, NaN where stale
    /cells/voltage_stale  [T, S] bool
    /cells/soc, /cells/soc_std [T, S] fraction (estimation)
    /cells/temperature    [T, K] degC
    /cells/capacity_ah, /cells/resistance_ohm [S]
    /cells/voltage_min, /cells/voltage_max, /cells/voltage_mean [S] V over the log
    /balancing, /quality  groups of per-cell arrays and scalar attrs

Per-cell time series ([T, S] and [T, K] floats) are stored as float32: 0.24 µV at 4 V and 6e-8
in SoC, far below any sensor's resolution, and it makes files about 3x smaller and writing about
3x faster than float64 (gzip level 1 with shuffle; ``compression="lzf"`` or ``None`` trade size for
speed). Everything else keeps its dtype.

Time series are chunked about 256 k values per chunk (1 MB of float32 at 96 cells). With gzip,
:class:`ResultWriter` does HDF5's shuffle in NumPy and deflates each full chunk on a small
thread pool (libdeflate when the optional ``deflate`` package is installed, else zlib; both
release the GIL), then writes the finished chunk with ``write_direct_chunk`` under the
standard shuffle + deflate filters the dataset declares: the file is the one HDF5 itself would
write, read by h5py, h5dump or MATLAB, and the caller's thread only copies rows into chunks.

Root attrs: ``schema`` ("packbms-result"), ``schema_version``, ``packbms_version``, ``source``,
``source_sha256``, ``dbc_sha256``, ``layout`` (its text), ``method``. Every dataset carries a
``units`` attr. Files are written under a temporary name in the target folder and renamed, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._cpus import usable_cpus
from ._version import __version__
from .errors import StorageError

__all__ = ["Result", "ResultWriter", "save", "load", "sha256_file", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA = "packbms-result"
SCHEMA_VERSION = 1

UNITS = {
    "/time": "s",
    "/pack/current": "A",
    "/pack/voltage": "V",
    "/pack/soc": "1",
    "/cells/voltage": "V",
    "/cells/voltage_stale": "bool",
    "/cells/voltage_min": "V",
    "/cells/voltage_max": "V",
    "/cells/voltage_mean": "V",
    "/cells/soc": "1",
    "/cells/soc_std": "1",
    "/cells/temperature": "degC",
    "/cells/capacity_ah": "A.h",
    "/cells/resistance_ohm": "ohm",
    "/cells/balancing": "bool",
    "/pack/soc_min": "1",
    "/pack/soc_max": "1",
    "/pack/soc_mean": "1",
    "/quality/self_discharge_pct_per_day": "%/day",
    "/quality/flags": "bitmask",
}


def units_of(key: str) -> str:
    """Units of a dataset: from the schema table, else from the name's suffix."""
    if key in UNITS:
        return UNITS[key]
    if key.rsplit("/", 1)[-1].startswith("z_"):
        return "1"
    for suffix, unit in (("_ah", "A.h"), ("_wh", "W.h"), ("_h", "h"), ("_s", "s"), ("_a", "A"),
                         ("_v", "V"), ("_ohm", "ohm"), ("soc", "1"), ("_fraction", "1"),
                         ("duty", "1"), ("soc_offset", "1")):
        if key.endswith(suffix):
            return unit
    return ""


@dataclass
class Result:
    """An analysis result: datasets by HDF5 path plus attributes.

    Attributes
    ----------
    datasets : dict[str, numpy.ndarray]
        Keyed by absolute HDF5 path, e.g. ``"/cells/voltage"``.
    attrs : dict
        Root attributes.
    group_attrs : dict[str, dict]
        Scalar attributes per group, e.g. ``{"/balancing": {"usable_capacity_ah": 58.2}}``.
    dataset_attrs : dict[str, dict]
        Extra attributes per dataset (``units`` is set from the schema), e.g.
        ``{"/time": {"t0_unix": 1.767e9}}``.

    Examples
    --------
    >>> r = Result({"/time": np.arange(3.0), "/pack/current": np.zeros(3)})
    >>> r["/time"].shape
    (3,)
    """

    datasets: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    group_attrs: dict = field(default_factory=dict)
    dataset_attrs: dict = field(default_factory=dict)
    path: str | None = None

    def __getitem__(self, key: str) -> np.ndarray:
        key = key if key.startswith("/") else "/" + key
        try:
            return self.datasets[key]
        except KeyError:
            where = f" in {self.path}" if self.path else ""
            raise StorageError(f"no dataset {key!r}{where}; it has {sorted(self.datasets)}") from None

    def __contains__(self, key: str) -> bool:
        return (key if key.startswith("/") else "/" + key) in self.datasets

    def get(self, key: str, default=None):
        return self.datasets.get(key if key.startswith("/") else "/" + key, default)

    @property
    def time(self) -> np.ndarray:
        return self["/time"]

    def to_dataframe(self, *args, **kwargs):
        """A pandas DataFrame of part of the result (needs pandas); see
        :func:`packbms.dataframes.to_dataframe` for ``which`` ("pack", "cells/soc", ...)."""
        from .dataframes import to_dataframe
        return to_dataframe(self, *args, **kwargs)

    @property
    def n_cells(self) -> int:
        return self["/cells/voltage"].shape[1]


def sha256_file(path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _to_attr(value):
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if value is None:
        return ""
    return value


COMPRESSIONS = ("gzip", "lzf", None)

#: How gzip chunks are made: ``"auto"`` (libdeflate when importable, else zlib), ``"libdeflate"``,
#: ``"zlib"`` (both compress off the caller's thread and write finished chunks directly), or
#: ``"h5py"`` (HDF5's own filters, in the caller's thread).
ENGINES = ("auto", "libdeflate", "zlib", "h5py")

#: Raw bytes of chunks handed to the compression threads and not yet written (default bound).
MAX_PENDING_BYTES = 16 << 20


def _stored_dtype(arr: np.ndarray) -> np.dtype:
    """The dtype an array is stored as: per-cell float series ([T, K] float64) as float32 (see
    the module docstring); everything else keeps its dtype."""
    if arr.ndim == 2 and arr.dtype == np.float64:
        return np.dtype(np.float32)
    return arr.dtype


def _stored(arr: np.ndarray) -> np.ndarray:
    """The array as stored (:func:`_stored_dtype`)."""
    arr = np.asarray(arr)
    return arr.astype(_stored_dtype(arr), copy=False)


def _chunk_rows(row_elems: int) -> int:
    """Rows per HDF5 chunk: about 256 k elements (1-2 MB) per chunk."""
    return max(1, min(1 << 16, (1 << 18) // max(1, row_elems)))


def _direct_dtype(dtype: np.dtype) -> np.dtype | None:
    """The (native) dtype whose bytes can go into a chunk as they are, or None: booleans, integers
    and IEEE floats, which h5py maps to HDF5 types with the same bytes (bool to an int8 enum)."""
    if dtype.kind in "biu" or dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return dtype.newbyteorder("=") if dtype.itemsize > 1 else dtype
    return None


def _zlib_level1(data) -> bytes:
    return zlib.compress(data, 1)


_LIBDEFLATE: list = []          # [compress function or None], filled on first use


def _libdeflate():
    """libdeflate's zlib-stream compressor at level 1 (the optional ``deflate`` package), or None
    when it is missing or its output does not inflate back (checked once with zlib, the inflater
    HDF5's deflate filter uses)."""
    if not _LIBDEFLATE:
        fn = None
        try:
            import deflate

            def fn(data):
                return deflate.zlib_compress(data, 1)

            rng = np.random.default_rng(0)
            sample = np.concatenate((np.cumsum(rng.normal(size=20000)).astype(np.float32),
                                     np.zeros(5000, np.float32)))
            sample = _shuffled(sample)
            if zlib.decompress(bytes(fn(sample))) != sample.tobytes():
                fn = None
        except Exception:       # not installed, or broken: zlib does the job
            fn = None
        _LIBDEFLATE.append(fn)
    return _LIBDEFLATE[0]


def _shuffled(buf: np.ndarray) -> np.ndarray:
    """HDF5's shuffle filter in NumPy: byte j of element i goes to ``j * n + i``."""
    size = buf.dtype.itemsize
    raw = buf.reshape(-1).view(np.uint8)
    if size == 1:               # HDF5's shuffle leaves 1-byte elements as they are
        return raw
    return raw.reshape(-1, size).T.copy()


def _encode(buf: np.ndarray, compress) -> bytes:
    """One chunk as HDF5's gzip pipeline (shuffle, then deflate) would store it."""
    return compress(_shuffled(buf))


class _Series:
    """A dataset written chunk by chunk: rows short of a full chunk wait in ``buf``."""

    __slots__ = ("key", "ds", "dtype", "rows", "row_shape", "n", "buf", "fill", "next",
                 "spare")

    def __init__(self, key, ds, dtype, rows, row_shape):
        self.key, self.ds, self.dtype = key, ds, dtype
        self.rows, self.row_shape = rows, row_shape
        self.n = 0              # rows appended
        self.buf = None         # the chunk being filled ...
        self.fill = 0           # ... and its rows so far
        self.next = 0           # index of the next chunk to hand over
        self.spare = None       # a written chunk's buffer, for reuse

    def take_buffer(self) -> np.ndarray:
        buf, self.spare = self.spare, None
        if buf is None:
            buf = np.empty((self.rows,) + self.row_shape, self.dtype)
        return buf


class ResultWriter:
    """Write a result file incrementally: time series appended chunk by chunk, so a log of any
    length is written in bounded memory. Use as a context manager; the file appears under its
    final name only when the block ends without an exception.

    With gzip (the default), chunks are compressed on a small pool of threads while the caller
    goes on, and written as finished chunks carrying HDF5's standard shuffle and deflate filters,
    so any HDF5 reader (h5py, h5dump, MATLAB) reads them. Rows short of a full chunk wait until
    more rows arrive or the file is closed. At most ``max_pending_bytes`` of chunks wait for
    compression: past that, :meth:`append` waits (back-pressure, bounded memory). An error met
    on a compression thread is raised by the next :meth:`append`, :meth:`put`, :meth:`flush` or
    :meth:`close`. A writer is used from one thread.

    Parameters
    ----------
    path
        Target ``.h5`` file; its folder must exist.
    compression
        ``"gzip"`` (default, level 1 with shuffle, readable everywhere), ``"lzf"`` (faster, h5py
        only) or None.
    engine
        How gzip chunks are made: ``"auto"`` (default: libdeflate through the optional
        ``deflate`` package when it is installed and works, else the standard library's zlib),
        ``"libdeflate"``, ``"zlib"``, or ``"h5py"`` (HDF5 compresses in the caller's thread, as
        with lzf). The files are the same to a reader. The engine used is in :attr:`engine`.
    threads
        Compression threads (default: 2, or 1 on a single core); 0 compresses in the caller's
        thread.
    max_pending_bytes
        Bound on the raw bytes of chunks handed to the threads and not yet written (16 MiB);
        their compressed forms take at most about as much again.

    Raises
    ------
    StorageError
        The folder does not exist, the file cannot be written, or an argument is invalid.

    Examples
    --------
    >>> with ResultWriter("drive.h5") as w:                       # doctest: +SKIP
    ...     for rows in chunks:
    ...         w.append({"/time": rows.time, "/cells/soc": rows.soc})
    ...     w.put("/cells/capacity_ah", capacity)
    ...     w.attrs({"method": "ekf"})
    """

    def __init__(self, path, compression: str | None = "gzip", *, engine: str = "auto",
                 threads: int | None = None, max_pending_bytes: int = MAX_PENDING_BYTES):
        import h5py

        self.path = Path(path)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{id(self):x}"
        self.f = None
        self._state = "open"
        self._pool = None
        self._pending: deque = deque()    # (series, chunk index, buffer, future), in order
        self._pending_bytes = 0
        self._series: dict[str, _Series] = {}
        if compression not in COMPRESSIONS:
            raise StorageError(f"compression must be one of {list(COMPRESSIONS)}, got "
                               f"{compression!r}")
        if engine not in ENGINES:
            raise StorageError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise StorageError(f"threads must be an integer >= 0, got {threads!r}")
        self.filters = {"gzip": dict(compression="gzip", compression_opts=1, shuffle=True),
                        "lzf": dict(compression="lzf", shuffle=True), None: {}}[compression]
        self._compress = None
        self.engine = "h5py" if compression is not None else None
        if compression == "gzip" and engine != "h5py":
            fast = _libdeflate() if engine in ("auto", "libdeflate") else None
            if engine == "libdeflate" and fast is None:
                raise StorageError("engine 'libdeflate' needs the 'deflate' package "
                                   "(pip install deflate); engine='auto' falls back to zlib")
            self._compress = fast or _zlib_level1
            self.engine = "libdeflate" if fast is not None else "zlib"
        self.threads = min(2, usable_cpus()) if threads is None else threads
        self.max_pending_bytes = int(max_pending_bytes)
        if not self.path.parent.exists():
            raise StorageError(f"{self.path}: folder {self.path.parent} does not exist")
        try:
            self.f = h5py.File(self.tmp, "w")
            self.f.attrs["schema"] = SCHEMA
            self.f.attrs["schema_version"] = SCHEMA_VERSION
            self.f.attrs["packbms_version"] = __version__
        except OSError as e:
            self.abort()
            raise StorageError(f"{self.path}: cannot write result ({e})") from e

    def _guard(self, fn, *args):
        """Run one operation; any failure drops the temporary file and becomes a StorageError."""
        if self._state != "open":
            raise StorageError(f"{self.path}: the writer is {self._state}; nothing more can "
                               "be written")
        try:
            return fn(*args)
        except StorageError:
            self.abort()
            raise
        except Exception as e:
            self.abort()
            raise StorageError(f"{self.path}: cannot write result "
                               f"({type(e).__name__}: {e})") from e
        except BaseException:               # Ctrl-C mid-append: never publish a padded file
            self.abort()
            raise

    # -- the direct chunk path -----------------------------------------------------------
    def _submit(self, s: _Series, buf: np.ndarray) -> None:
        """Hand a full chunk over: compressed on the pool (or here with ``threads=0``)."""
        index, s.next = s.next, s.next + 1
        if self.threads == 0:
            self._write(s, index, _encode(buf, self._compress))
            s.spare = buf
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="packbms-store")
        self._pending.append((s, index, buf, self._pool.submit(_encode, buf, self._compress)))
        self._pending_bytes += buf.nbytes
        self._drain(self.max_pending_bytes)

    def _drain(self, budget: int) -> None:
        """Write the finished chunks at the head of the queue; wait for the oldest while more
        than ``budget`` bytes are pending; raise a compression thread's error."""
        pending = self._pending
        while pending:
            s, index, buf, fut = pending[0]
            if not fut.done() and self._pending_bytes <= budget:
                break
            data = fut.result()
            pending.popleft()
            self._pending_bytes -= buf.nbytes
            self._write(s, index, data)
            s.spare = buf
        for *_, fut in pending:
            if fut.done() and fut.exception() is not None:
                fut.result()

    def _write(self, s: _Series, index: int, data) -> None:
        s.ds.id.write_direct_chunk((index * s.rows,) + (0,) * len(s.row_shape), data, 0)

    def _feed(self, s: _Series, arr: np.ndarray) -> None:
        """Rows into chunks: top up the waiting chunk, hand over every full one, keep the rest."""
        m, i, rows = arr.shape[0], 0, s.rows
        if s.fill:
            i = min(m, rows - s.fill)
            s.buf[s.fill:s.fill + i] = arr[:i]
            s.fill += i
            if s.fill == rows:
                buf, s.buf, s.fill = s.buf, None, 0
                self._submit(s, buf)
        while m - i >= rows:
            buf = s.take_buffer()
            np.copyto(buf, arr[i:i + rows], casting="unsafe")
            i += rows
            self._submit(s, buf)
        if i < m:
            s.buf = s.take_buffer()
            s.buf[:m - i] = arr[i:]
            s.fill = m - i

    def _finish_series(self, s: _Series) -> None:
        """Hand over the last, partial chunk (padded with zeros, as HDF5 stores edge chunks)."""
        if s.fill:
            buf, s.buf = s.buf, None
            buf[s.fill:] = 0
            s.fill = 0
            self._submit(s, buf)
        s.spare = None

    # -- public operations ---------------------------------------------------------------
    def append(self, series: dict) -> None:
        """Append rows (axis 0) to resizable datasets, created on first use.

        Parameters
        ----------
        series : dict[str, numpy.ndarray]
            Rows by HDF5 path; each array's axis 0 is time. A dataset keeps the row shape and
            dtype of its first rows (later rows are converted to that dtype). The arrays may be
            reused by the caller once this returns.

        Raises
        ------
        StorageError
            The rows do not fit the dataset, or writing failed (here or on a compression
            thread); the temporary file is then removed.
        """
        self._guard(self._append, series)

    def _append(self, series: dict) -> None:
        for key, arr in series.items():
            arr = np.asarray(arr)
            if arr.ndim == 0:
                raise StorageError(f"{self.path}: {key}: append needs rows (an array with a "
                                   "time axis), got a scalar")
            s = self._series.get(key)
            if s is None and key not in self.f:
                s = self._create(key, arr)
            if s is None:                    # lzf, None, or a dtype h5py converts itself
                arr = _stored(arr)
                ds = self.f[key]
                self._check_fits(key, arr, ds.dtype)
                n = ds.shape[0]
                ds.resize(n + arr.shape[0], axis=0)
                ds[n:] = arr
                continue
            if arr.shape[1:] != s.row_shape:
                raise StorageError(f"{self.path}: {key}: rows of shape {arr.shape[1:]}, "
                                   f"but the dataset's rows are {s.row_shape}")
            self._check_fits(key, arr, s.ds.dtype)
            if arr.shape[0]:
                s.n += arr.shape[0]
                s.ds.resize(s.n, axis=0)     # a chunk is written only inside the extent
                self._feed(s, arr)
        if self._pending:
            self._drain(self.max_pending_bytes)

    def _check_fits(self, key: str, arr: np.ndarray, dtype: np.dtype) -> None:
        """Later rows of a wider dtype must fit the dataset's integer dtype: NumPy would wrap
        them and HDF5 clamp them, either a silently wrong number."""
        if dtype.kind not in "iu" or not arr.size or np.can_cast(arr.dtype, dtype, "safe"):
            return
        info = np.iinfo(dtype)
        lo, hi = arr.min(), arr.max()
        if not (np.isfinite(lo) and np.isfinite(hi) and info.min <= lo and hi <= info.max):
            raise StorageError(f"{self.path}: {key}: values {lo}..{hi} do not fit the "
                               f"dataset's {dtype} (its dtype is that of its first rows)")

    def _create(self, key: str, arr: np.ndarray) -> _Series | None:
        dtype = _stored_dtype(arr)
        direct = _direct_dtype(dtype) if self._compress is not None else None
        row_shape = arr.shape[1:]
        rows = _chunk_rows(int(np.prod(row_shape)) if row_shape else 1)
        ds = self.f.create_dataset(key, shape=(0,) + row_shape, maxshape=(None,) + row_shape,
                                   dtype=direct or dtype, chunks=(rows,) + row_shape,
                                   **self.filters)
        ds.attrs["units"] = units_of(key)
        if direct is None:
            return None
        s = self._series[key] = _Series(key, ds, direct, rows, row_shape)
        return s

    def put(self, key: str, arr) -> None:
        """Write a whole dataset at once (chunked and compressed when larger than 1024 values).

        Raises
        ------
        StorageError
            As for :meth:`append`.
        """
        self._guard(self._put, key, arr)

    def _put(self, key: str, arr) -> None:
        arr = np.asarray(arr)
        dtype = _stored_dtype(arr)
        if arr.ndim >= 1 and arr.size > 1024:
            row_shape = arr.shape[1:]
            rows = min(arr.shape[0], _chunk_rows(int(np.prod(row_shape)) if row_shape else 1))
            direct = _direct_dtype(dtype) if self._compress is not None else None
            if direct is not None:
                ds = self.f.create_dataset(key, shape=arr.shape, dtype=direct,
                                           chunks=(rows,) + row_shape, **self.filters)
                ds.attrs["units"] = units_of(key)
                s = _Series(key, ds, direct, rows, row_shape)
                s.n = arr.shape[0]
                self._feed(s, arr)
                self._finish_series(s)
                return
            ds = self.f.create_dataset(key, data=arr.astype(dtype, copy=False),
                                       chunks=(rows,) + row_shape, **self.filters)
        else:
            ds = self.f.create_dataset(key, data=arr.astype(dtype, copy=False))
        ds.attrs["units"] = units_of(key)

    def attrs(self, attrs: dict, node: str = "/") -> None:
        """Set attributes on the root, a group (created if needed) or a dataset."""
        def set_all():
            obj = self.f[node] if node in self.f else self.f.require_group(node)
            for k, v in attrs.items():
                obj.attrs[k] = _to_attr(v)
        self._guard(set_all)

    def flush(self) -> None:
        """Wait for the chunks being compressed, write them and flush the file to disk.

        Rows short of a full chunk stay in memory until more rows come or :meth:`close` (every
        chunk but a dataset's last is written whole, once).

        Raises
        ------
        StorageError
            As for :meth:`append`.
        """
        def flush_all():
            self._drain(-1)
            self.f.flush()
        self._guard(flush_all)

    def close(self) -> Path:
        """Write the last chunks, finish the file and move it to its final name.

        Returns
        -------
        pathlib.Path
            The written file.

        Raises
        ------
        StorageError
            Writing failed (now, or earlier on a compression thread); the temporary file is
            removed and the final name left untouched.
        """
        if self._state == "closed":
            return self.path

        def finish():
            for s in self._series.values():
                self._finish_series(s)
            self._drain(-1)
            self._stop_workers()
            self.f.close()
            os.replace(self.tmp, self.path)

        self._guard(finish)
        self._state = "closed"
        return self.path

    def _stop_workers(self) -> None:
        """Cancel the chunks not started yet and wait for those being compressed (a chunk
        takes milliseconds), so no thread outlives the writer."""
        for *_, fut in self._pending:
            fut.cancel()
        self._pending.clear()
        self._pending_bytes = 0
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def abort(self) -> None:
        """Stop the compression threads and drop the temporary file (the final name is left
        untouched). Safe to call more than once."""
        if self._state == "closed":
            return
        self._state = "aborted"
        try:
            self._stop_workers()
            self._series.clear()
            if self.f is not None and self.f.id.valid:
                try:
                    self.f.close()
                except Exception:       # e.g. a full disk: HDF5 cannot flush what it holds
                    pass                # the file is dropped below either way
        finally:
            if self.tmp.exists():
                self.tmp.unlink()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save(result: Result, path, compression: str | None = "gzip") -> Path:
    """Write ``result`` to ``path`` atomically (temporary name, then rename).

    Parameters
    ----------
    result
        The datasets and attributes to store.
    path
        Target ``.h5`` file; its folder must exist.
    compression
        As for :class:`ResultWriter`.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    StorageError
        The folder does not exist or the file cannot be written.
    """
    with ResultWriter(path, compression) as w:
        w.attrs(result.attrs)
        for key, arr in result.datasets.items():
            w.put(key, arr)
        for key, attrs in result.dataset_attrs.items():
            if key in result.datasets:
                w.attrs(attrs, key)
        for group, attrs in result.group_attrs.items():
            w.attrs(attrs, group)
    return Path(path)


def load(path) -> Result:
    """Read a result file written by :func:`save`.

    Parameters
    ----------
    path
        An ``.h5`` file written by packbms.

    Returns
    -------
    Result

    Raises
    ------
    StorageError
        Missing file, not HDF5, not a packbms result, or written by a newer schema version.

    Examples
    --------
    >>> res = packbms.load("drive.h5")                     # doctest: +SKIP
    >>> res["/cells/voltage"].shape                         # doctest: +SKIP
    (150000, 96)
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise StorageError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StorageError(f"{path}: not an HDF5 file ({e})") from e
    with f:
        if f.attrs.get("schema") != SCHEMA:
            raise StorageError(f"{path}: not a packbms result (root attr 'schema' is "
                               f"{f.attrs.get('schema')!r}, expected {SCHEMA!r})")
        version = int(f.attrs.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise StorageError(f"{path}: schema version {version} is newer than this packbms "
                               f"reads ({SCHEMA_VERSION}); upgrade packbms")
        res = Result(attrs={k: _from_attr(v) for k, v in f.attrs.items()}, path=str(path))

        def visit(name, obj):
            key = "/" + name
            try:
                if isinstance(obj, h5py.Dataset):
                    res.datasets[key] = obj[()]
                    extra = {k: _from_attr(v) for k, v in obj.attrs.items() if k != "units"}
                    if extra:
                        res.dataset_attrs[key] = extra
                elif len(obj.attrs):
                    res.group_attrs[key] = {k: _from_attr(v) for k, v in obj.attrs.items()}
            except OSError as e:
                raise StorageError(f"{path}: cannot read {key} ({e})") from e

        f.visititems(visit)
    return res


def _from_attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v
