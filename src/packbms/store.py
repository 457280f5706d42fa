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

Root attrs: ``schema`` ("packbms-result"), ``schema_version``, ``packbms_version``, ``source``,
``source_sha256``, ``dbc_sha256``, ``layout`` (its text), ``method``. Every dataset carries a
``units`` attr. Files are written under a temporary name in the target folder and renamed, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


def _stored(arr: np.ndarray) -> np.ndarray:
    """The array as stored: per-cell float series go to float32 (see the module docstring)."""
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.dtype == np.float64:
        return arr.astype(np.float32)
    return arr


def _chunk_rows(row_elems: int) -> int:
    """Rows per HDF5 chunk: about 256 k elements (1-2 MB) per chunk."""
    return max(1, min(1 << 16, (1 << 18) // max(1, row_elems)))


class ResultWriter:
    """Write a result file incrementally: time series appended chunk by chunk, so a log of any
    length is written in bounded memory. Use as a context manager; the file appears under its
    final name only when the block ends without an exception.

    Parameters
    ----------
    path
        Target ``.h5`` file; its folder must exist.
    compression
        ``"gzip"`` (default, level 1, readable everywhere), ``"lzf"`` (faster, h5py only) or
        None.

    Raises
    ------
    StorageError
        The folder does not exist or the file cannot be written.

    Examples
    --------
    >>> with ResultWriter("drive.h5") as w:                       # doctest: +SKIP
    ...     for rows in chunks:
    ...         w.append({"/time": rows.time, "/cells/soc": rows.soc})
    ...     w.put("/cells/capacity_ah", capacity)
    ...     w.attrs({"method": "ekf"})
    """

    def __init__(self, path, compression: str | None = "gzip"):
        import h5py

        if compression not in COMPRESSIONS:
            raise StorageError(f"compression must be one of {list(COMPRESSIONS)}, got "
                               f"{compression!r}")
        self.filters = {"gzip": dict(compression="gzip", compression_opts=1, shuffle=True),
                        "lzf": dict(compression="lzf", shuffle=True), None: {}}[compression]
        self.path = Path(path)
        if not self.path.parent.exists():
            raise StorageError(f"{self.path}: folder {self.path.parent} does not exist")
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}"
        try:
            self.f = h5py.File(self.tmp, "w")
            self.f.attrs["schema"] = SCHEMA
            self.f.attrs["schema_version"] = SCHEMA_VERSION
            self.f.attrs["packbms_version"] = __version__
        except OSError as e:
            self.abort()
            raise StorageError(f"{self.path}: cannot write result ({e})") from e

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            self.abort()
            raise StorageError(f"{self.path}: cannot write result ({e})") from e

    def append(self, series: dict) -> None:
        """Append rows (axis 0) to resizable datasets, created on first use."""
        self._guard(self._append, series)

    def _append(self, series: dict) -> None:
        for key, arr in series.items():
            arr = _stored(arr)
            if key not in self.f:
                row = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
                ds = self.f.create_dataset(
                    key, shape=(0,) + arr.shape[1:], maxshape=(None,) + arr.shape[1:],
                    dtype=arr.dtype, chunks=(_chunk_rows(row),) + arr.shape[1:],
                    **self.filters)
                ds.attrs["units"] = units_of(key)
            ds = self.f[key]
            n = ds.shape[0]
            ds.resize(n + arr.shape[0], axis=0)
            ds[n:] = arr

    def put(self, key: str, arr) -> None:
        """Write a whole dataset at once."""
        self._guard(self._put, key, arr)

    def _put(self, key: str, arr) -> None:
        arr = _stored(arr)
        kwargs = {}
        if arr.ndim >= 1 and arr.size > 1024:
            row = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
            kwargs = dict(chunks=(min(arr.shape[0], _chunk_rows(row)),) + arr.shape[1:],
                          **self.filters)
        ds = self.f.create_dataset(key, data=arr, **kwargs)
        ds.attrs["units"] = units_of(key)

    def attrs(self, attrs: dict, node: str = "/") -> None:
        """Set attributes on the root, a group (created if needed) or a dataset."""
        def set_all():
            obj = self.f[node] if node in self.f else self.f.require_group(node)
            for k, v in attrs.items():
                obj.attrs[k] = _to_attr(v)
        self._guard(set_all)

    def close(self) -> Path:
        """Finish the file and move it to its final name."""
        try:
            self.f.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise StorageError(f"{self.path}: cannot write result ({e})") from e
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (the final name is left untouched)."""
        try:
            if getattr(self, "f", None) is not None and self.f.id.valid:
                self.f.close()
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
