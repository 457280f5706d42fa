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

__all__ = ["Result", "save", "load", "sha256_file", "SCHEMA", "SCHEMA_VERSION"]

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
}


def units_of(key: str) -> str:
    """Units of a dataset: from the schema table, else from the name's suffix."""
    if key in UNITS:
        return UNITS[key]
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


def save(result: Result, path) -> Path:
    """Write ``result`` to ``path`` atomically (temporary name, then rename).

    Parameters
    ----------
    result
        The datasets and attributes to store.
    path
        Target ``.h5`` file; its folder must exist.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    StorageError
        The folder does not exist or the file cannot be written.
    """
    import h5py

    path = Path(path)
    if not path.parent.exists():
        raise StorageError(f"{path}: folder {path.parent} does not exist")
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SCHEMA
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["packbms_version"] = __version__
            for k, v in result.attrs.items():
                f.attrs[k] = _to_attr(v)
            for key, arr in result.datasets.items():
                arr = np.asarray(arr)
                kwargs = {}
                if arr.ndim >= 1 and arr.size > 1024:
                    rows = max(1, min(arr.shape[0], (1 << 18) // max(1, arr[0].size)))
                    kwargs = dict(chunks=(rows,) + arr.shape[1:], compression="gzip",
                                  compression_opts=4, shuffle=True)
                ds = f.create_dataset(key, data=arr, **kwargs)
                ds.attrs["units"] = units_of(key)
                for k, v in result.dataset_attrs.get(key, {}).items():
                    ds.attrs[k] = _to_attr(v)
            for group, attrs in result.group_attrs.items():
                g = f.require_group(group)
                for k, v in attrs.items():
                    g.attrs[k] = _to_attr(v)
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(f"{path}: cannot write result ({e})") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
