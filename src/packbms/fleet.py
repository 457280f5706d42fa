"""Many logs at once: ``packbms fleet`` on dask.distributed (optional extra ``fleet``).

:func:`run_fleet` analyses every log (:func:`packbms.analysis.analyze`) as one Dask task, writes
one HDF5 result per log into the output folder and a fleet summary beside them:

- ``fleet_summary.h5``: group ``/logs`` (one row per log, :data:`SUMMARY_COLUMNS`, one dataset
  per column) and group ``/trends`` (:data:`packbms.trends.TREND_COLUMNS`, with the per-cell
  arrays under ``/trends/cells``); root attrs ``schema`` ("packbms-fleet"), ``schema_version``,
  ``packbms_version``, ``dbc``, ``dbc_sha256``, ``layout`` (text), ``layout_sha256``,
  ``method``, ``output_dt_s``;
- ``fleet_summary.csv`` and ``fleet_trends.csv`` (NaN as an empty field);
- ``fleet_summary.parquet`` and ``fleet_trends.parquet`` when pyarrow is installed.

Without a scheduler address a ``LocalCluster`` runs on this machine (worker processes with one
thread each, bound to 127.0.0.1, no dashboard); with one, the run connects to that cluster, whose
workers must have packbms installed and see the logs, database, layout and output folder under
the same paths. ``workers=0`` runs serially in this process (same results; for debugging).

Resumable: a log whose result file already exists with the same log SHA-256, database SHA-256,
layout text, method and row spacing is not analysed again (its row is rebuilt from the file and
marked ``reused``); a fleet run stamps the results it writes with the root attrs ``dbc``,
``dbc_sha256``, ``layout_sha256`` and ``pack_id``. A log that fails is recorded with its error
(``status = "failed"``, ``error_type``, ``error``) and the run goes on; failed logs are retried
on the next run.

Result files are named ``<log name>-<8 hex digits of the SHA-1 of its absolute path>.h5``, so
logs with the same name in different folders never collide and a rerun finds its files again.

Pack ids: by default the log's file name without its log suffix and without a trailing
``_`` + date/time/sequence part (``bus07_2026-03-01T0800.blf`` and ``bus07_0002.blf`` are both
``bus07``, ``VAN-12_2026-03-04.asc`` is ``VAN-12``; see :data:`DEFAULT_PACK_ID_REGEX`). A rule
``pack_id_regex`` (command line, or ``[fleet] pack_id_regex`` in the layout) is searched in the
log's absolute path (``/`` as separator); the pack id is its group ``pack``, else its first
group, else the whole match.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import sys
import time as _time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from ._cpus import usable_cpus
from ._version import __version__
from .errors import PackBMSError, StorageError
from .trends import TREND_COLUMNS, compute_trends

__all__ = ["run_fleet", "FleetRun", "FleetSummary", "read_summary", "summary_row", "open_result",
           "cell_record", "discover_logs", "result_name", "pack_id_for", "process_log",
           "SUMMARY_COLUMNS", "QUALITY_NAMES", "DEFAULT_PACK_ID_REGEX", "SUMMARY_SCHEMA"]

SUMMARY_SCHEMA = "packbms-fleet"
SUMMARY_SCHEMA_VERSION = 1
SUMMARY_H5, SUMMARY_CSV, TRENDS_CSV = "fleet_summary.h5", "fleet_summary.csv", "fleet_trends.csv"
SUMMARY_PARQUET, TRENDS_PARQUET = "fleet_summary.parquet", "fleet_trends.parquet"

#: Applied to the log's file name without its log suffix (``.blf``, ``.asc.gz``, ...): drops a
#: trailing ``_`` followed by digits, ``T``, ``:``, ``.``, ``_`` or ``-`` (a date, time or number).
DEFAULT_PACK_ID_REGEX = r"^(?P<pack>.+?)(?:_\d[\dT:._-]*)?$"

#: Where the summary row reads per-cell quality values: the first name present wins. The
#: ``/quality`` names are those of :meth:`packbms.quality.QualityReport.to_group` (``flags`` is
#: a bit mask per cell, non-zero = weak); ``/cells/...`` hold the nominal values.
QUALITY_NAMES = {
    "capacity_ah": ("/quality/capacity_ah", "/cells/capacity_ah"),
    "r0_ohm": ("/quality/r0_ohm", "/quality/resistance_ohm", "/cells/resistance_ohm"),
    "outlier": ("/quality/flags", "/quality/outlier", "/quality/weak"),
    "self_discharge_a": ("/quality/self_discharge_a",),
    # attrs of the /quality group
    "grade": ("grade", "pack_grade"),
    "weak_cells": ("weak_cells",),
}

#: Columns of the per-log summary: (name, kind, unit, description); kind in "str", "float", "int".
SUMMARY_COLUMNS = [
    ("log", "str", "", "the log (absolute path)"),
    ("result", "str", "", "its HDF5 result (absolute path; empty when it failed)"),
    ("pack_id", "str", "", "pack or vehicle id (file name or the pack_id_regex rule)"),
    ("status", "str", "", "'analysed', 'reused' (result already there) or 'failed'"),
    ("error_type", "str", "", "exception type when it failed"),
    ("error", "str", "", "error message when it failed"),
    ("start_unix", "float", "s", "absolute time of the first row (Unix s; NaN when unknown)"),
    ("start", "str", "", "the same, ISO 8601 UTC"),
    ("duration_s", "float", "s", "time from the first to the last row"),
    ("n_cells", "int", "", "series cells"),
    ("method", "str", "", "SoC estimator"),
    ("pack_soc_start", "float", "1", "usable pack SoC at the start (after the initial rest)"),
    ("pack_soc_end", "float", "1", "usable pack SoC at the end"),
    ("soc_min", "float", "1", "lowest cell SoC over the log"),
    ("soc_max", "float", "1", "highest cell SoC over the log"),
    ("soc_spread", "float", "1", "cell SoC spread (max - min) at the end"),
    ("usable_capacity_ah", "float", "A.h", "usable capacity at the end (imbalance included)"),
    ("recoverable_capacity_ah", "float", "A.h", "capacity balancing would give back"),
    ("passive_bleed_total_ah", "float", "A.h", "charge the minimal passive plan bleeds"),
    ("capacity_source", "str", "", "'quality' (identified) or 'nominal'"),
    ("capacity_ah_mean", "float", "A.h", "mean cell capacity"),
    ("capacity_ah_min", "float", "A.h", "smallest cell capacity"),
    ("capacity_cv", "float", "1", "coefficient of variation of the cell capacities"),
    ("r0_mean_ohm", "float", "ohm", "mean cell R0"),
    ("r0_cv", "float", "1", "coefficient of variation of the cell R0"),
    ("self_discharge_max_a", "float", "A", "largest per-cell self-discharge (from /quality)"),
    ("n_weak_cells", "float", "", "number of outlier cells (NaN when not evaluated)"),
    ("weak_cells", "str", "", "1-based outlier cells, space-separated"),
    ("grade", "str", "", "pack grade (from /quality; empty when not evaluated)"),
    ("source_sha256", "str", "", "SHA-256 of the log"),
    ("elapsed_s", "float", "s", "wall time of this log's task"),
]

_KIND = {name: kind for name, kind, _, _ in SUMMARY_COLUMNS}
_NAN = math.nan


# ------------------------------------------------------------------------------------------------
# naming
# ------------------------------------------------------------------------------------------------
def _log_stem(path) -> str:
    name = os.path.basename(os.fspath(path))
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[0] or name


def discover_logs(paths) -> list[Path]:
    """The log files named by ``paths``: files as given, folders searched recursively.

    In folders, files with a supported log suffix (:data:`packbms.io.SUPPORTED_SUFFIXES`) are
    taken; hidden files and packbms' own ``.h5`` outputs are not. Duplicates are dropped; the
    result is sorted by absolute path.

    Raises
    ------
    PackBMSError
        A path that does not exist, or no log found.

    Examples
    --------
    >>> discover_logs(["data/"])                                      # doctest: +SKIP
    [PosixPath('/.../data/drive_96s.blf')]
    """
    from .io import SUPPORTED_SUFFIXES

    found: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in p.rglob("*"):
                if f.is_file() and not f.name.startswith(".") and \
                        f.name.lower().endswith(SUPPORTED_SUFFIXES):
                    found.add(f.resolve())
        elif p.is_file():
            found.add(p.resolve())
        else:
            raise PackBMSError(f"{p}: no such file or folder")
    if not found:
        raise PackBMSError(f"no log found in {', '.join(map(str, paths))} (looked for "
                           f"{', '.join(SUPPORTED_SUFFIXES)})")
    return sorted(found)


def result_name(log) -> str:
    """File name of a log's result: its name, then 8 hex digits of its absolute path's SHA-1.

    Examples
    --------
    >>> result_name("/fleet/depot1/bus7.blf")
    'bus7-7d127a7f.h5'
    """
    p = Path(log).absolute().as_posix()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", _log_stem(log))
    return f"{safe}-{hashlib.sha1(p.encode()).hexdigest()[:8]}.h5"


def pack_id_for(log, regex: str | None = None) -> str:
    """Pack or vehicle id of a log (see the module docstring for the rule).

    Examples
    --------
    >>> pack_id_for("/fleet/bus07_2026-03-01T0800.blf"), pack_id_for("/f/bus07_0002.asc.gz")
    ('bus07', 'bus07')
    >>> pack_id_for("/fleet/depot1/VIN123/drive.blf", r"/(?P<pack>VIN\\d+)/")
    'VIN123'
    """
    if regex:
        m = re.search(regex, Path(log).absolute().as_posix())
        if m:
            if "pack" in m.groupdict():
                return m.group("pack")
            return m.group(1) if m.groups() else m.group(0)
    stem = _log_stem(log)
    m = re.match(DEFAULT_PACK_ID_REGEX, stem)
    return m.group("pack") if m else stem


def pack_id_rule_from_layout(text: str) -> str | None:
    """``[fleet] pack_id_regex`` of a layout's TOML text, or None.

    Examples
    --------
    >>> pack_id_rule_from_layout("[fleet]\\npack_id_regex = '/(VIN[0-9]+)/'")
    '/(VIN[0-9]+)/'
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    rule = raw.get("fleet", {}).get("pack_id_regex") if isinstance(raw.get("fleet"), dict) \
        else None
    return str(rule) if rule else None


# ------------------------------------------------------------------------------------------------
# result -> row
# ------------------------------------------------------------------------------------------------
def _first(result, names):
    for n in names:
        if n in result:
            return np.asarray(result[n])
    return None


def _fresh_row(result) -> int:
    """First row where every cell has a voltage (rows before hold the estimator's prior)."""
    stale = result.get("/cells/voltage_stale")
    if stale is None or stale.ndim != 2 or not len(stale):
        return 0
    block = 8192                   # read in blocks: the datasets may be lazy (h5py)
    for a in range(0, len(stale), block):
        ok = np.flatnonzero(~np.asarray(stale[a:a + block]).any(axis=1))
        if len(ok):
            return a + int(ok[0])
    return 0


def _start_row(result) -> int:
    """End of the initial rest: the first fresh row, then as long as ``|current| < C/50``."""
    i0 = _fresh_row(result)
    cur = result.get("/pack/current")
    cap = result.get("/cells/capacity_ah")
    if cur is None or not len(cur):
        return i0
    cur = np.asarray(cur)
    thr = (float(np.nanmedian(np.asarray(cap))) if cap is not None and len(cap) else 50.0) / 50.0
    moving = np.flatnonzero(~(np.abs(cur[i0:]) < thr))
    if not len(moving):                 # rest throughout
        return len(cur) - 1
    return i0 + max(int(moving[0]) - 1, 0)


def _t0_unix(result) -> float:
    t0 = result.dataset_attrs.get("/time", {}).get("t0_unix", _NAN)
    try:
        return float(t0)
    except (TypeError, ValueError):
        return _NAN


def _some(a) -> bool:
    return a is not None and a.ndim == 1 and bool(np.isfinite(a).any())


def _cv(a) -> float:
    if not _some(a):
        return _NAN
    m = float(np.nanmean(a))
    return float(np.nanstd(a) / m) if m else _NAN


def cell_parameters(result) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """Per-cell capacity (Ah) and R0 (Ohm) of a result and where they come from.

    Returns ``(capacity_ah, r0_ohm, source)``: the identified values of ``/quality`` when the
    result has that group (``source = "quality"``), else the nominal ``/cells`` values
    (``"nominal"``); names are looked up in :data:`QUALITY_NAMES`.
    """
    cap = _first(result, QUALITY_NAMES["capacity_ah"])
    r0 = _first(result, QUALITY_NAMES["r0_ohm"])
    has_quality = any(k.startswith("/quality/") for k in result.datasets) or \
        "/quality" in result.group_attrs
    return cap, r0, "quality" if has_quality else "nominal"


def summary_row(result) -> dict:
    """One fleet-summary row (:data:`SUMMARY_COLUMNS`) from an analysis result.

    Reads ``/time`` (+ its ``t0_unix``), ``/pack/current``, ``/pack/soc``, ``/pack/soc_min``,
    ``/pack/soc_max``, ``/cells/voltage_stale`` (first rows), the ``/balancing`` attrs
    ``soc_spread``, ``usable_capacity_ah``,
    ``recoverable_capacity_ah``, ``passive_bleed_total_ah``, the per-cell quality arrays of
    :data:`QUALITY_NAMES` and the ``/quality`` attrs ``grade`` / ``weak_cells``; whatever is
    absent is NaN (numbers) or empty (text). ``log``, ``result``, ``pack_id``, ``status`` and
    ``elapsed_s`` are filled in by the caller. Whole [T, S] series are never read, so a
    result opened lazily (:func:`open_result`) costs little memory whatever its length.

    Parameters
    ----------
    result : packbms.store.Result
        Loaded (:func:`packbms.load`) or lazy (:func:`open_result`).

    Returns
    -------
    dict

    Examples
    --------
    >>> row = summary_row(packbms.load("drive.h5"))                    # doctest: +SKIP
    >>> row["soc_spread"], row["grade"]                                # doctest: +SKIP
    (0.0409, '')
    """
    r = result
    row = {name: ("" if kind == "str" else (0 if kind == "int" else _NAN))
           for name, kind, _, _ in SUMMARY_COLUMNS}
    t = r.get("/time")
    t0 = _t0_unix(r)
    if t is not None and len(t):
        row["start_unix"] = t0 + float(t[0])
        row["start"] = _iso(row["start_unix"])
        row["duration_s"] = float(t[-1] - t[0])
    v = r.get("/cells/voltage")
    row["n_cells"] = int(v.shape[1]) if v is not None and v.ndim == 2 else 0
    row["method"] = str(r.attrs.get("method", ""))
    row["source_sha256"] = str(r.attrs.get("source_sha256", ""))
    i0 = _fresh_row(r)
    lo, hi = r.get("/pack/soc_min"), r.get("/pack/soc_max")
    if lo is None or hi is None:                      # older files: from the cells
        lo = hi = r.get("/cells/soc")
    if lo is not None and len(lo) > i0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            row["soc_min"] = float(np.nanmin(np.asarray(lo[i0:])))
            row["soc_max"] = float(np.nanmax(np.asarray(hi[i0:])))
    psoc = r.get("/pack/soc")
    if psoc is not None and len(psoc):
        row["pack_soc_start"] = float(psoc[_start_row(r)])
        row["pack_soc_end"] = float(psoc[-1])
    bal = r.group_attrs.get("/balancing", {})
    for k in ("soc_spread", "usable_capacity_ah", "recoverable_capacity_ah",
              "passive_bleed_total_ah"):
        if k in bal:
            row[k] = float(bal[k])
    cap, r0, source = cell_parameters(r)
    row["capacity_source"] = source
    if _some(cap):                       # NaN marks a cell the identification could not measure
        row["capacity_ah_mean"] = float(np.nanmean(cap))
        row["capacity_ah_min"] = float(np.nanmin(cap))
        row["capacity_cv"] = _cv(cap)
    if _some(r0):
        row["r0_mean_ohm"] = float(np.nanmean(r0))
        row["r0_cv"] = _cv(r0)
    sd = _first(r, QUALITY_NAMES["self_discharge_a"])
    if _some(sd):
        row["self_discharge_max_a"] = float(np.nanmax(sd))
    qattrs = r.group_attrs.get("/quality", {})
    weak = None
    flags = _first(r, QUALITY_NAMES["outlier"])
    if flags is not None and flags.ndim == 1:
        weak = [int(i) + 1 for i in np.flatnonzero(flags)]
    else:
        for k in QUALITY_NAMES["weak_cells"]:
            if k in qattrs:
                w = qattrs[k]
                if isinstance(w, (list, tuple, np.ndarray)):
                    weak = [int(x) for x in w]
                else:                   # "cell 4: capacity ...\ncell 9: ..." or "4 9"
                    text = str(w)
                    weak = sorted({int(x) for x in (re.findall(r"cell (\d+)", text) or
                                                     re.findall(r"\d+", text))})
                break
    if weak is not None:
        row["n_weak_cells"] = float(len(weak))
        row["weak_cells"] = " ".join(map(str, weak))
    for k in QUALITY_NAMES["grade"]:
        if k in qattrs:
            row["grade"] = str(qattrs[k])
            break
    return row


def cell_record(result) -> dict:
    """Per-cell values the cross-log trends use (:mod:`packbms.trends`).

    ``soc_start``/``soc_start_std`` [S] at the end of the initial rest (the first row where every
    cell has a fresh voltage, then as long as ``|current| < C/50``), ``soc_end``/``soc_end_std``
    at the last row, their absolute times ``t_start_unix``/``t_end_unix`` (NaN when the log has
    no absolute time), and ``capacity_ah``, ``r0_ohm`` [S] (:func:`cell_parameters`).
    """
    r = result
    soc, std, t = r.get("/cells/soc"), r.get("/cells/soc_std"), r.get("/time")
    cap, r0, _ = cell_parameters(r)
    n = int(r["/cells/voltage"].shape[1]) if "/cells/voltage" in r else 0
    nan = np.full(n, np.nan)
    rec = {"t_start_unix": _NAN, "t_end_unix": _NAN, "soc_start": nan, "soc_end": nan,
           "soc_start_std": nan, "soc_end_std": nan,
           "capacity_ah": nan if cap is None else np.asarray(cap, float),
           "r0_ohm": nan if r0 is None else np.asarray(r0, float)}
    if soc is not None and soc.ndim == 2 and len(soc) and t is not None:
        i = _start_row(r)
        t0 = _t0_unix(r)
        rec.update(t_start_unix=t0 + float(t[i]), t_end_unix=t0 + float(t[-1]),
                   soc_start=np.asarray(soc[i], float), soc_end=np.asarray(soc[-1], float))
        if std is not None:
            rec.update(soc_start_std=np.asarray(std[i], float),
                       soc_end_std=np.asarray(std[-1], float))
    return rec


def _iso(t: float) -> str:
    from .trends import _iso as iso
    return iso(t)


# ------------------------------------------------------------------------------------------------
# one task
# ------------------------------------------------------------------------------------------------
_CACHE: dict = {}


def _database(path: str, sha: str):
    key = ("dbc", path, sha)
    if key not in _CACHE:
        from .dbc import compile_database
        _CACHE[key] = compile_database(path)
    return _CACHE[key]


def _layout(path: str, sha: str):
    key = ("layout", path, sha)
    if key not in _CACHE:
        from .layout import load_layout
        _CACHE[key] = load_layout(path)
    return _CACHE[key]


def _text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _reusable(out: Path, log: Path, task: dict) -> bool:
    import h5py

    try:
        with h5py.File(out, "r") as f:
            a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError:
        return False
    if a.get("schema") != store.SCHEMA or str(a.get("method")) != task["method"]:
        return False
    if not math.isclose(float(a.get("output_dt_s", -1.0)), task["output_dt_s"]):
        return False
    if a.get("dbc_sha256") != task["dbc_sha256"] or \
            _text_sha256(str(a.get("layout", ""))) != task["layout_sha256"]:
        return False
    return a.get("source_sha256") == store.sha256_file(log)


def process_log(task: dict) -> dict:
    """Analyse one log (or reuse its result) and summarise it: the unit of work of a fleet run.

    Runs on a Dask worker (or in-process for ``workers=0``); never raises for a bad log.

    Parameters
    ----------
    task
        ``log``, ``result`` (output path), ``pack_id``, ``dbc``, ``dbc_sha256``, ``layout``,
        ``layout_sha256``, ``method``, ``output_dt_s``, ``force`` (ignore an existing result).

    Returns
    -------
    dict
        ``{"row": summary row, "cells": cell record or None}``.
    """
    t = _time.perf_counter()
    log, out = Path(task["log"]), Path(task["result"])
    base = {"log": str(log), "pack_id": task["pack_id"]}
    try:
        if not task.get("force") and out.exists() and _reusable(out, log, task):
            status = "reused"
        else:
            from .analysis import analyze

            # streamed to a temporary name and renamed by the writer (bounded memory); the
            # stamps below come after the rename, and a file without them is never reused
            analyze(log, _database(task["dbc"], task["dbc_sha256"]),
                    _layout(task["layout"], task["layout_sha256"]), out=out,
                    method=task["method"], output_dt_s=task["output_dt_s"])
            _stamp(out, {"dbc": task["dbc"], "dbc_sha256": task["dbc_sha256"],
                         "layout_sha256": task["layout_sha256"], "pack_id": task["pack_id"]})
            status = "analysed"
        with open_result(out) as res:
            row = summary_row(res)
            cells = cell_record(res)
        row.update(base, result=str(out), status=status)
    except Exception as e:  # noqa: BLE001 - one bad log never stops the run
        row = _failed_row(base, e)
        cells = None
    row["elapsed_s"] = _time.perf_counter() - t
    return {"row": row, "cells": cells}


def _stamp(path: Path, attrs: dict) -> None:
    import h5py

    try:
        with h5py.File(path, "r+") as f:
            for k, v in attrs.items():
                f.attrs[k] = v
    except OSError as e:
        raise StorageError(f"{path}: cannot add the fleet attributes ({e})") from e


# one decoder for stored attributes: the store's (bytes, NumPy scalars, JSON text)
_attr = store._from_attr


@contextmanager
def open_result(path):
    """A result file opened lazily: a :class:`packbms.store.Result` whose datasets are h5py
    datasets of the open file (read when indexed). Use it in a ``with`` block.

    Raises
    ------
    StorageError
        Missing file, not HDF5, or not a packbms result.

    Examples
    --------
    >>> with open_result("drive.h5") as res:                     # doctest: +SKIP
    ...     row = summary_row(res)
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StorageError(f"{path}: cannot open the result ({e})") from e
    try:
        if _attr(f.attrs.get("schema")) != store.SCHEMA:
            raise StorageError(f"{path}: not a packbms result")
        res = store.Result(attrs={k: _attr(v) for k, v in f.attrs.items()}, path=str(path))

        def visit(name, obj):
            key = "/" + name
            if isinstance(obj, h5py.Dataset):
                res.datasets[key] = obj
                extra = {k: _attr(v) for k, v in obj.attrs.items() if k != "units"}
                if extra:
                    res.dataset_attrs[key] = extra
            elif len(obj.attrs):
                res.group_attrs[key] = {k: _attr(v) for k, v in obj.attrs.items()}

        f.visititems(visit)
        yield res
    finally:
        f.close()


def _failed_row(base: dict, e: BaseException) -> dict:
    row = {name: ("" if kind == "str" else (0 if kind == "int" else _NAN))
           for name, kind, _, _ in SUMMARY_COLUMNS}
    row.update(base, status="failed", error_type=type(e).__name__)
    if isinstance(e, PackBMSError):
        row["error"] = str(e)
    else:
        # an unexpected exception: keep the type and where it happened
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        row["error"] = f"{type(e).__name__}: {e}{where}"
    return row


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
@dataclass
class FleetRun:
    """What :func:`run_fleet` returns.

    Attributes
    ----------
    rows : list[dict]
        One summary row per log, in the order of the logs.
    trends : list[dict]
        The trends table (:data:`packbms.trends.TREND_COLUMNS`).
    paths : dict[str, Path]
        The summary files written (``h5``, ``csv``, ``trends_csv``, and ``parquet``,
        ``trends_parquet`` with pyarrow).
    elapsed_s : float
    """

    rows: list
    trends: list
    paths: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    def count(self, status: str) -> int:
        """Rows with this status (``analysed``, ``reused``, ``failed``)."""
        return sum(r["status"] == status for r in self.rows)


class _Progress:
    """tqdm bar on stderr: done / failed / remaining (off when not a terminal or quiet)."""

    def __init__(self, total: int, enabled: bool | None):
        self.total, self.failed, self.reused, self.done = total, 0, 0, 0
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is part of the fleet extra
                return
            self.bar = tqdm(total=total, file=sys.stderr, unit="log", dynamic_ncols=True,
                            desc="fleet")

    def update(self, row: dict) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        self.reused += row["status"] == "reused"
        if self.bar is not None:
            self.bar.set_postfix(failed=self.failed, reused=self.reused,
                                 left=self.total - self.done, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _default_workers() -> int:
    return usable_cpus()


def _local_cluster(workers: int, numba_threads: int | None = None):
    """A LocalCluster of ``workers`` processes with one Dask thread each, on 127.0.0.1 only.

    Each worker's Numba pool gets ``numba_threads`` threads (default: the cores split between
    the workers).
    """
    import logging

    from dask.distributed import LocalCluster

    threads = numba_threads or max(1, _default_workers() // workers)
    # numba sizes its pool from NUMBA_NUM_THREADS: split the cores between the worker processes
    env = {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": "1"}
    # loopback only; no dashboard (its HTTP server still runs, on a free loopback port)
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        host="127.0.0.1", scheduler_port=0, dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                        silence_logs=logging.ERROR, env=env)


def _import_dask():
    try:
        import dask.distributed  # noqa: F401
    except ImportError as e:
        raise PackBMSError(f"the fleet run needs dask.distributed ({e.name} is missing); "
                           f"install it with pip install 'packbms[fleet]'") from e


def run_fleet(logs, dbc, layout, out_dir, *, workers: int | None = None,
              scheduler: str | None = None, client=None, method: str = "ekf",
              output_dt_s: float = 0.1, pack_id_regex: str | None = None,
              force: bool = False, progress: bool | None = None) -> FleetRun:
    """Analyse many logs on Dask and write one result per log plus the fleet summary.

    Parameters
    ----------
    logs
        Log files and/or folders (searched recursively, :func:`discover_logs`).
    dbc, layout
        Database and layout paths (shared by every log; workers must see them).
    out_dir
        Output folder (created if needed).
    workers
        Worker processes of the LocalCluster (default: one per core); 0 runs serially in this
        process. Ignored with ``scheduler`` or ``client``.
    scheduler
        Address of an existing Dask scheduler (``tcp://host:8786``).
    client
        An existing ``dask.distributed.Client`` to use (not closed).
    method, output_dt_s
        As for :func:`packbms.analysis.analyze`.
    pack_id_regex
        Pack-id rule (module docstring); default: the layout's ``[fleet] pack_id_regex``, else
        the file name.
    force
        Analyse every log again even when its result is current.
    progress
        Show the progress bar (default: when stderr is a terminal).

    Returns
    -------
    FleetRun

    Raises
    ------
    PackBMSError
        No logs, an unreadable database or layout, dask missing, or an unreachable scheduler.
        A bad log does not raise: its row has ``status = "failed"`` and the error.

    Examples
    --------
    >>> run = run_fleet(["logs/"], "pack.dbc", "pack.toml", "out/", workers=2)  # doctest: +SKIP
    >>> run.count("failed"), run.paths["csv"]                                   # doctest: +SKIP
    (0, PosixPath('out/fleet_summary.csv'))
    """
    from .analysis import METHODS
    from .dbc import compile_database
    from .layout import load_layout

    t_start = _time.perf_counter()
    if method not in METHODS:
        raise PackBMSError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if not output_dt_s >= 0:
        raise PackBMSError(f"output_dt_s must be >= 0, got {output_dt_s}")
    files = discover_logs(logs)
    dbc, layout = Path(dbc).resolve(), Path(layout).resolve()
    # fail fast on the shared inputs, before any cluster starts
    cdb = compile_database(dbc)
    lay = load_layout(layout)
    lay.validate(cdb.database)
    dbc_sha, layout_sha = store.sha256_file(dbc), _text_sha256(lay.text)
    rule = pack_id_regex or pack_id_rule_from_layout(lay.text)
    if rule:
        try:
            re.compile(rule)
        except re.error as e:
            raise PackBMSError(f"pack_id_regex {rule!r} is not a valid regular expression "
                               f"({e})") from e
    out_dir = Path(out_dir).resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{out_dir}: cannot create the output folder ({e})") from e
    tasks = [dict(log=str(f), result=str(out_dir / result_name(f)),
                  pack_id=pack_id_for(f, rule), dbc=str(dbc), dbc_sha256=dbc_sha,
                  layout=str(layout), layout_sha256=layout_sha, method=method,
                  output_dt_s=float(output_dt_s), force=bool(force)) for f in files]
    results: list = [None] * len(tasks)
    bar = _Progress(len(tasks), progress)
    try:
        if client is None and scheduler is None and workers == 0:
            _CACHE[("dbc", str(dbc), dbc_sha)] = cdb
            for i, task in enumerate(tasks):
                results[i] = process_log(task)
                bar.update(results[i]["row"])
        else:
            _run_dask(tasks, results, bar, workers=workers, scheduler=scheduler, client=client)
    finally:
        bar.close()
    rows = [r["row"] for r in results]
    trends, cells = compute_trends(rows, [r["cells"] for r in results])
    attrs = {"dbc": str(dbc), "dbc_sha256": dbc_sha, "layout": lay.text,
             "layout_sha256": layout_sha, "method": method, "output_dt_s": float(output_dt_s),
             "pack_id_regex": rule or ""}
    paths = write_summary(out_dir, rows, trends, cells, attrs)
    return FleetRun(rows=rows, trends=trends, paths=paths,
                    elapsed_s=_time.perf_counter() - t_start)


def _run_dask(tasks, results, bar, *, workers, scheduler, client) -> None:
    _import_dask()
    from dask.distributed import Client, as_completed

    own_client = own_cluster = None
    if client is None:
        if scheduler:
            try:
                client = own_client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise PackBMSError(f"cannot connect to the Dask scheduler at {scheduler} "
                                   f"({e})") from e
        else:
            own_cluster = _local_cluster(workers or _default_workers())
            client = own_client = Client(own_cluster)
    futures: list = []
    try:
        run_id = os.urandom(4).hex()
        futures = [client.submit(process_log, t, pure=False, key=f"packbms-log-{run_id}-{i}")
                   for i, t in enumerate(tasks)]
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            i = index[fut.key]
            try:
                results[i] = fut.result()
            except Exception as e:  # noqa: BLE001 - a worker died or the task could not run
                row = _failed_row({"log": tasks[i]["log"], "pack_id": tasks[i]["pack_id"]}, e)
                row["elapsed_s"] = _NAN
                results[i] = {"row": row, "cells": None}
            bar.update(results[i]["row"])
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()


# ------------------------------------------------------------------------------------------------
# summary files
# ------------------------------------------------------------------------------------------------
def _column(values, kind: str) -> np.ndarray:
    if kind == "str":
        return np.array([str(v) for v in values], dtype=object)
    if kind == "int":
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array([float(v) for v in values], dtype=np.float64)


def _csv_text(rows: list[dict], columns) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c[0] for c in columns])
    for r in rows:
        out = []
        for name, kind, _, _ in columns:
            v = r.get(name, "")
            if kind == "float":
                v = float(v)
                v = "" if not math.isfinite(v) else repr(v)
            out.append(v)
        w.writerow(out)
    return buf.getvalue()


def _atomic_write(path: Path, write) -> Path:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(f"{path}: cannot write ({e})") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _pad(arrays: list) -> np.ndarray:
    n = max((len(a) for a in arrays), default=0)
    out = np.full((len(arrays), n), np.nan)
    for i, a in enumerate(arrays):
        out[i, :len(a)] = a
    return out


def write_summary(out_dir, rows: list[dict], trends: list[dict], trend_cells: dict,
                  attrs: dict) -> dict:
    """Write the fleet summary (HDF5, CSV, and Parquet when pyarrow is installed).

    Returns
    -------
    dict[str, Path]
        ``h5``, ``csv``, ``trends_csv`` (and ``parquet``, ``trends_parquet``).
    """
    import h5py

    out_dir = Path(out_dir)

    def h5(tmp):
        string = h5py.string_dtype("utf-8")
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = SUMMARY_SCHEMA
            f.attrs["schema_version"] = SUMMARY_SCHEMA_VERSION
            f.attrs["packbms_version"] = __version__
            for k, v in attrs.items():
                f.attrs[k] = v
            for group, table, columns in (("logs", rows, SUMMARY_COLUMNS),
                                          ("trends", trends, TREND_COLUMNS)):
                g = f.create_group(group)
                g.attrs["rows"] = len(table)
                g.attrs["columns"] = [c[0] for c in columns]
                for name, kind, unit, doc in columns:
                    col = _column([r[name] for r in table], kind)
                    ds = g.create_dataset(name, data=col, dtype=string if kind == "str" else
                                          col.dtype)
                    ds.attrs["units"] = unit
                    ds.attrs["description"] = doc
            gc = f.create_group("trends/cells")
            gc.attrs["description"] = ("per-cell arrays aligned with the /trends rows, padded "
                                       "with NaN to the largest cell count")
            for name, arrays in trend_cells.items():
                ds = gc.create_dataset(name, data=_pad(arrays))
                ds.attrs["units"] = store.units_of(name)

    paths = {"h5": _atomic_write(out_dir / SUMMARY_H5, h5)}
    for key, name, table, columns in (("csv", SUMMARY_CSV, rows, SUMMARY_COLUMNS),
                                      ("trends_csv", TRENDS_CSV, trends, TREND_COLUMNS)):
        text = _csv_text(table, columns)
        paths[key] = _atomic_write(out_dir / name,
                                   lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return paths
    for key, name, table, columns in (("parquet", SUMMARY_PARQUET, rows, SUMMARY_COLUMNS),
                                      ("trends_parquet", TRENDS_PARQUET, trends, TREND_COLUMNS)):
        tab = pa.table({n: _column([r[n] for r in table], k).tolist() if k == "str" else
                        _column([r[n] for r in table], k) for n, k, _, _ in columns})
        paths[key] = _atomic_write(out_dir / name, lambda tmp, tab=tab: pq.write_table(tab, tmp))
    return paths


@dataclass
class FleetSummary:
    """A fleet summary read back (:func:`read_summary`): columns as arrays.

    Attributes
    ----------
    logs, trends : dict[str, numpy.ndarray]
        Column name -> values (strings as ``str`` objects).
    trend_cells : dict[str, numpy.ndarray]
        [rows, S] per-cell arrays of the trends (NaN-padded).
    attrs : dict
    path : str
    """

    logs: dict
    trends: dict
    trend_cells: dict
    attrs: dict
    path: str = ""

    def rows(self, table: str = "logs") -> list[dict]:
        """The table as a list of dicts."""
        cols = getattr(self, table)
        n = len(next(iter(cols.values()))) if cols else 0
        return [{k: (v[i].item() if isinstance(v[i], np.generic) else v[i])
                 for k, v in cols.items()} for i in range(n)]

    def to_dataframe(self, table: str = "logs"):
        """The ``logs`` or ``trends`` table as a pandas DataFrame (pandas needed)."""
        from .dataframes import _pandas
        return _pandas().DataFrame(dict(getattr(self, table)))


def read_summary(path) -> FleetSummary:
    """Read ``fleet_summary.h5`` (or the folder holding it).

    Raises
    ------
    StorageError
        Missing file or not a packbms fleet summary.

    Examples
    --------
    >>> s = read_summary("out/")                                     # doctest: +SKIP
    >>> s.logs["status"]                                             # doctest: +SKIP
    """
    import h5py

    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_H5
    if not path.exists():
        raise StorageError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StorageError(f"{path}: not an HDF5 file ({e})") from e
    with f:
        if f.attrs.get("schema") != SUMMARY_SCHEMA:
            raise StorageError(f"{path}: not a packbms fleet summary (root attr 'schema' is "
                               f"{f.attrs.get('schema')!r}, expected {SUMMARY_SCHEMA!r})")
        if int(f.attrs.get("schema_version", 0)) > SUMMARY_SCHEMA_VERSION:
            raise StorageError(f"{path}: fleet summary schema version "
                               f"{int(f.attrs['schema_version'])} is newer than this packbms "
                               f"reads; upgrade packbms")
        attrs = {k: (v.decode() if isinstance(v, bytes) else
                     v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}

        def table(name, columns):
            g = f[name]
            out = {}
            for col, kind, _, _ in columns:
                if col not in g:
                    continue
                v = g[col][()]
                out[col] = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in v],
                                    dtype=object) if kind == "str" else v
            return out

        cells = {k: f["trends/cells"][k][()] for k in f["trends/cells"]} \
            if "trends/cells" in f else {}
        return FleetSummary(logs=table("logs", SUMMARY_COLUMNS),
                            trends=table("trends", TREND_COLUMNS), trend_cells=cells,
                            attrs=attrs, path=str(path))
