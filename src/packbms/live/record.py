"""Recording live estimates to HDF5, one row per update, in bounded memory.

The file follows the result schema of :mod:`packbms.store` (same dataset paths and units, root
attr ``schema = "packbms-result"``), so :func:`packbms.load` and every tool that reads an
analysis result read a recording too. Extra root attrs say where it came from:
``recording = "live"``, ``started_unix``, ``source`` (the bus), ``layout``, ``method``.

Datasets (``T`` grows by one row per recorded update, ``S`` cells)::

    /time                        [T]    s since the first recorded row; attrs t0 (bus time),
                                        t0_unix (NaN when the bus time is not Unix time)
    /pack/current                [T]    A, positive = discharge (the update's last row)
    /pack/voltage                [T]    V (when the layout names one)
    /pack/soc, /pack/soc_min, /pack/soc_max, /pack/soc_mean   [T]
    /cells/soc, /cells/soc_std   [T, S] float32
    /cells/voltage               [T, S] float32, NaN where stale
    /cells/voltage_stale         [T, S] bool

Every dataset is chunked (64 rows) and compressed (gzip 1 + shuffle); each append resizes the
datasets, writes the row and flushes the file, so memory stays at HDF5's chunk cache however
long the monitor runs and a crash loses at most the row being written. Re-opening an existing
recording appends to it (a restarted monitor continues its file).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from .. import store
from .._version import __version__
from ..errors import StorageError

__all__ = ["Recorder"]

log = logging.getLogger("packbms.live")

CHUNK_ROWS = 64
_SCALARS = ("/pack/current", "/pack/soc", "/pack/soc_min", "/pack/soc_max", "/pack/soc_mean")
_CELLS = ("/cells/soc", "/cells/soc_std", "/cells/voltage")


class Recorder:
    """Append snapshots to an HDF5 recording.

    Parameters
    ----------
    path
        The ``.h5`` file; an existing recording of the same pack is appended to.
    n_cells
        Cells in series.
    pack_voltage
        Record ``/pack/voltage``.
    attrs
        Extra root attributes (source, layout, method...), written when the file is created.

    Raises
    ------
    StorageError
        The folder is missing; the file exists but is not a live recording of ``n_cells``
        cells (it is never overwritten).

    Examples
    --------
    >>> rec = Recorder("live.h5", 96)                       # doctest: +SKIP
    >>> rec.append(monitor.snapshot); rec.close()           # doctest: +SKIP
    """

    def __init__(self, path, n_cells: int, *, pack_voltage: bool = False,
                 attrs: dict | None = None):
        import h5py

        self.path = Path(path)
        self.n_cells = int(n_cells)
        self.rows = 0
        self.moved_aside: Path | None = None
        if not self.path.parent.is_dir():
            raise StorageError(f"{self.path}: folder {self.path.parent} does not exist")
        if self.path.exists():
            try:
                f = h5py.File(self.path, "a", libver="latest")
            except OSError as e:
                # a torn file from a crash: keep it for inspection, start a new one
                aside = self.path.with_name(f"{self.path.stem}.unreadable-{int(time.time())}"
                                            f"{self.path.suffix}")
                self.path.rename(aside)
                self.moved_aside = aside
                log.warning("recording %s could not be opened (%s); moved it to %s and started "
                            "a new file", self.path, e, aside)
                f = None
            if f is not None:
                self._f = f
                self._check_existing()
                return
        try:
            self._f = h5py.File(self.path, "w", libver="latest")
        except OSError as e:
            raise StorageError(f"{self.path}: cannot create recording ({e})") from e
        self._create(pack_voltage, attrs or {})

    # -- file structure -------------------------------------------------------------------
    def _create(self, pack_voltage: bool, attrs: dict) -> None:
        f = self._f
        f.attrs["schema"] = store.SCHEMA
        f.attrs["schema_version"] = store.SCHEMA_VERSION
        f.attrs["packbms_version"] = __version__
        f.attrs["recording"] = "live"
        f.attrs["started_unix"] = time.time()
        for k, v in attrs.items():
            f.attrs[k] = "" if v is None else v
        opts = dict(compression="gzip", compression_opts=1, shuffle=True)
        S = self.n_cells

        def make(key, shape, dtype):
            ds = f.create_dataset(key, shape=(0,) + shape, maxshape=(None,) + shape,
                                  chunks=(CHUNK_ROWS,) + shape, dtype=dtype, **opts)
            ds.attrs["units"] = store.units_of(key)
            return ds

        t = make("/time", (), "f8")
        t.attrs["t0"] = float("nan")
        t.attrs["t0_unix"] = float("nan")
        for key in _SCALARS + (("/pack/voltage",) if pack_voltage else ()):
            make(key, (), "f8")
        for key in _CELLS:
            make(key, (S,), "f4")
        make("/cells/voltage_stale", (S,), "bool")
        f.flush()

    def _check_existing(self) -> None:
        f = self._f
        where = str(self.path)
        if f.attrs.get("recording") != "live" or f.attrs.get("schema") != store.SCHEMA:
            f.close()
            raise StorageError(f"{where}: exists and is not a packbms live recording; choose "
                               f"another --record file (it is never overwritten)")
        ds = f.get("/cells/soc")
        if ds is None or ds.shape[1:] != (self.n_cells,):
            got = None if ds is None else ds.shape[1:]
            f.close()
            raise StorageError(f"{where}: is a recording of a pack with {got} cells, not "
                               f"{self.n_cells}; choose another --record file")
        self.rows = int(f["/time"].shape[0])

    # -- writing --------------------------------------------------------------------------
    def append(self, snap) -> None:
        """Append one row (a :class:`packbms.live.Snapshot`) and flush.

        Raises
        ------
        StorageError
            The write failed (disk full, file removed...).
        """
        f = self._f
        try:
            t = f["/time"]
            if self.rows == 0 or not math.isfinite(float(t.attrs["t0"])):
                t.attrs["t0"] = snap.timestamp
                t.attrs["t0_unix"] = snap.timestamp if snap.timestamp > 1e9 else float("nan")
            n = self.rows
            row = {
                "/time": snap.timestamp - float(t.attrs["t0"]),
                "/pack/current": snap.current_a,
                "/pack/soc": snap.pack_soc,
                "/pack/soc_min": snap.pack_soc_min,
                "/pack/soc_max": snap.pack_soc_max,
                "/pack/soc_mean": snap.pack_soc_mean,
                "/pack/voltage": (float("nan") if snap.pack_voltage_v is None
                                  else snap.pack_voltage_v),
                "/cells/soc": snap.soc,
                "/cells/soc_std": snap.soc_std,
                "/cells/voltage": snap.cell_voltage,
                "/cells/voltage_stale": snap.stale,
            }
            for key, value in row.items():
                ds = f.get(key)
                if ds is None:
                    continue
                ds.resize(n + 1, axis=0)
                ds[n] = value
            f.flush()
        except (OSError, ValueError, KeyError) as e:
            raise StorageError(f"{self.path}: cannot append to the recording ({e})") from e
        self.rows = n + 1

    def close(self) -> None:
        """Flush and close (idempotent)."""
        f, self._f = getattr(self, "_f", None), None
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - closing must not raise on shutdown
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
