"""pandas views of a result: ``packbms.load(path).to_dataframe(...)`` (pandas is optional).

The HDF5 result stays the storage format; these tables are copies for pandas users:

====================  ===========================================================================
``which``             table
====================  ===========================================================================
``"pack"``            index ``time_s`` (s from the log start); one column per ``/pack`` series
                      (``current``, ``voltage``, ``soc``, ``soc_min``, ...), same names as in HDF5
``"cells/soc"``,      any [T, S] dataset: index ``time_s``, columns ``cell_1`` .. ``cell_S``
``"cells/voltage"``   (``sensor_1`` .. for ``cells/temperature``); ``long=True`` gives the tidy form
...                   (``time_s``, ``cell``, value)
``"cells"``           the per-cell [S] arrays of ``/cells`` (``capacity_ah``, ``resistance_ohm``,
                      ``voltage_min`` ...), index ``cell`` = 1..S
``"balancing"``,      the per-cell arrays of that group, index ``cell``; the group's scalar
``"quality"``         attributes go to ``DataFrame.attrs``
====================  ===========================================================================

``DataFrame.attrs["units"]`` maps each column to its unit (from the schema); ``absolute_time=True``
replaces ``time_s`` by a UTC ``DatetimeIndex`` named ``time`` (needs ``t0_unix``).
"""

from __future__ import annotations

import math

import numpy as np

from . import store
from .errors import PackBMSError, StorageError

__all__ = ["to_dataframe"]

_GROUP_TABLES = ("cells", "balancing", "quality")


def _pandas():
    try:
        import pandas as pd
    except ImportError as e:
        raise PackBMSError("to_dataframe needs pandas; install it with pip install pandas") from e
    return pd


def _time_index(pd, result, absolute_time: bool):
    t = np.asarray(result["/time"], dtype=np.float64)
    if not absolute_time:
        return pd.Index(t, name="time_s")
    t0 = result.dataset_attrs.get("/time", {}).get("t0_unix", math.nan)
    if t0 is None or not math.isfinite(float(t0)):
        where = f"{result.path}: " if result.path else ""
        raise StorageError(f"{where}the log has no absolute time (/time attr t0_unix is NaN); "
                           f"use absolute_time=False")
    return pd.DatetimeIndex(pd.to_datetime(float(t0) + t, unit="s", utc=True), name="time")


def to_dataframe(result, which: str = "pack", *, absolute_time: bool = False,
                 long: bool = False):
    """A table of a result as a pandas DataFrame.

    Parameters
    ----------
    result : packbms.store.Result or path
        A result (or an ``.h5`` file, loaded with :func:`packbms.load`).
    which
        ``"pack"``, a [T, S] dataset such as ``"cells/soc"``, or a per-cell group: ``"cells"``,
        ``"balancing"``, ``"quality"`` (see the module docstring).
    absolute_time
        Index time series by UTC timestamps instead of seconds from the log start.
    long
        For [T, S] datasets: tidy columns (time, ``cell`` 1..S, value) instead of one column per
        cell.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    PackBMSError
        pandas is not installed, or ``which`` names nothing in the result (the message lists
        what there is).

    Examples
    --------
    >>> res = packbms.load("drive.h5")                                  # doctest: +SKIP
    >>> res.to_dataframe("pack")[["current", "soc"]].describe()        # doctest: +SKIP
    >>> soc = res.to_dataframe("cells/soc", absolute_time=True)        # doctest: +SKIP
    >>> soc.resample("1min").mean()                                     # doctest: +SKIP
    """
    pd = _pandas()
    if not isinstance(result, store.Result):
        result = store.load(result)
    key = "/" + which.strip("/")
    name = key[1:]
    units = {}
    if name == "pack":
        t_len = len(result["/time"])
        cols = {k[len("/pack/"):]: v for k, v in sorted(result.datasets.items())
                if k.startswith("/pack/") and v.ndim == 1 and len(v) == t_len}
        units = {c: store.units_of(f"/pack/{c}") for c in cols}
        df = pd.DataFrame(cols, index=_time_index(pd, result, absolute_time))
    elif name in _GROUP_TABLES:
        n = result.n_cells if "/cells/voltage" in result else None
        cols = {k[len(key) + 1:]: v for k, v in sorted(result.datasets.items())
                if k.startswith(key + "/") and v.ndim == 1 and "/" not in k[len(key) + 1:]
                and (n is None or len(v) == n)}
        if not cols and key not in result.group_attrs:
            raise PackBMSError(f"the result has no per-cell arrays under {key}"
                               + (f" ({result.path})" if result.path else ""))
        n = n if n is not None else len(next(iter(cols.values())))
        units = {c: store.units_of(f"{key}/{c}") for c in cols}
        df = pd.DataFrame(cols, index=pd.RangeIndex(1, n + 1, name="cell"))
        df.attrs.update(result.group_attrs.get(key, {}))
    elif key in result.datasets and result.datasets[key].ndim == 2:
        arr = result.datasets[key]
        if arr.shape[0] != len(result["/time"]):
            raise PackBMSError(f"{key} has {arr.shape[0]} rows, /time {len(result['/time'])}")
        prefix = "sensor" if key.endswith("temperature") else "cell"
        index = _time_index(pd, result, absolute_time)
        value = key.rsplit("/", 1)[1]
        units = {value: store.units_of(key)}
        if long:
            n_t, n_s = arr.shape
            df = pd.DataFrame({index.name: np.repeat(index.values, n_s),
                               prefix: np.tile(np.arange(1, n_s + 1), n_t),
                               value: arr.reshape(-1)})
        else:
            df = pd.DataFrame(arr, index=index,
                              columns=[f"{prefix}_{i + 1}" for i in range(arr.shape[1])])
            units = {c: store.units_of(key) for c in df.columns}
    else:
        two_d = sorted(k[1:] for k, v in result.datasets.items() if v.ndim == 2)
        raise PackBMSError(f"cannot make a table of {which!r}; choose 'pack', one of "
                           f"{list(_GROUP_TABLES)}, or a [T, S] dataset: {two_d}")
    df.attrs["units"] = units
    if result.path:
        df.attrs["source"] = result.path
    return df
