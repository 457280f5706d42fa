"""The offline pipeline: log -> frames -> signals -> telemetry -> results -> HDF5.

``analyze`` is what ``packbms analyze`` runs; ``load_telemetry`` stops after alignment for users
who want the aligned arrays only.
"""

from __future__ import annotations

import json
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .balancing import estimate_balancing
from .errors import EstimationError
from .dbc import CompiledDatabase, compile_database, decode, load_database
from .io import iter_log
from .layout import Layout, load_layout
from .signals import concat_signal_tables
from .soc import estimate_soc
from .telemetry import PackTelemetry, build_telemetry

__all__ = ["analyze", "load_telemetry", "Analysis"]

DEFAULT_CHUNK_FRAMES = 1_000_000


@dataclass
class Analysis:
    """What :func:`analyze` returns: the stored result plus the in-memory telemetry."""

    result: store.Result
    telemetry: PackTelemetry
    layout: Layout
    soc: object = None          # packbms.soc.SocResult when a method ran
    balancing: object = None    # packbms.balancing.BalancingPlan
    timings_s: dict = field(default_factory=dict)
    out: Path | None = None


def _prepare(dbc, layout) -> tuple[CompiledDatabase, Layout]:
    db = dbc if isinstance(dbc, CompiledDatabase) else compile_database(
        dbc if not isinstance(dbc, (str, Path)) else load_database(dbc))
    lay = layout if isinstance(layout, Layout) else load_layout(layout)
    lay.validate(db.database)
    return db, lay


def load_telemetry(log, dbc, layout, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                   timings: dict | None = None) -> tuple[PackTelemetry, Layout]:
    """Read, decode and align a log.

    Parameters
    ----------
    log
        Path of a CAN log in any supported format.
    dbc
        Database path, cantools database or :class:`packbms.dbc.CompiledDatabase`.
    layout
        Layout path or :class:`packbms.layout.Layout`.
    chunk_frames
        Frames per read chunk; frames are decoded chunk by chunk and dropped, so memory holds
        one chunk of frames plus the decoded signals the layout needs.

    Returns
    -------
    (PackTelemetry, Layout)

    Raises
    ------
    PackBMSError
        Any input problem (see :mod:`packbms.errors`).

    Examples
    --------
    >>> tel, lay = load_telemetry("data/drive_96s.blf", "data/pack96.dbc",
    ...                           "data/pack96.toml")                          # doctest: +SKIP
    """
    timings = {} if timings is None else timings
    t = _time.perf_counter()
    cdb, lay = _prepare(dbc, layout)
    wanted = lay.required_messages(cdb.database)
    timings["prepare"] = _time.perf_counter() - t
    t_read = t_dec = 0.0
    parts = []
    t = _time.perf_counter()
    for frames in iter_log(log, chunk_frames=chunk_frames):
        t1 = _time.perf_counter()
        t_read += t1 - t
        parts.append(decode(frames, cdb, messages=wanted))
        t = _time.perf_counter()
        t_dec += t - t1
    timings["read"], timings["decode"] = t_read, t_dec
    signals = concat_signal_tables(parts)
    if signals.source is None:
        signals.source = str(log)
    t = _time.perf_counter()
    tel = build_telemetry(signals, lay, cdb.database)
    timings["align"] = _time.perf_counter() - t
    return tel, lay


def _voltage_stats(tel: PackTelemetry) -> dict:
    v = tel.cell_voltage
    with np.errstate(invalid="ignore"):
        return {
            "/cells/voltage_min": np.nanmin(v, axis=0),
            "/cells/voltage_max": np.nanmax(v, axis=0),
            "/cells/voltage_mean": np.nanmean(v, axis=0),
        }


METHODS = ("ekf", "coulomb", "none")


#: Default spacing of the stored result's rows (s); 0 stores every sample of the current.
DEFAULT_OUTPUT_DT_S = 0.1


def output_rows(time_s: np.ndarray, dt_s: float) -> np.ndarray:
    """Rows kept in the stored result: the last sample of each ``dt_s`` bin (all when 0).

    Examples
    --------
    >>> output_rows(np.array([0.0, 0.04, 0.09, 0.1, 0.15, 0.31]), 0.1).tolist()
    [2, 4, 5]
    """
    n = len(time_s)
    if dt_s <= 0 or n == 0:
        return np.arange(n)
    b = np.floor(time_s / dt_s)
    return np.append(np.flatnonzero(b[1:] != b[:-1]), n - 1)


def bin_mean_current(time_s: np.ndarray, current_a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean current over each output bin (time-weighted, zero-order hold), so that integrating
    the stored current gives the same charge as the full-rate signal.

    Row k stands for the time from its bin's first sample (the one after ``rows[k-1]``) to the
    next bin's first sample; each sample's current holds until the next sample.
    """
    n = len(time_s)
    if len(rows) == n:
        return current_a.copy()
    dt = np.diff(time_s, append=time_s[-1])
    starts = np.concatenate(([0], rows[:-1] + 1))
    q = np.add.reduceat(current_a * dt, starts)
    span = np.add.reduceat(dt, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = q / span
    return np.where(span > 0, mean, current_a[rows])


def analyze(log, dbc, layout, *, out=None, method: str = "ekf", soc_config=None,
            output_dt_s: float = DEFAULT_OUTPUT_DT_S,
            chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Analysis:
    """Analyse one log and optionally write the HDF5 result.

    Parameters
    ----------
    log, dbc, layout
        As for :func:`load_telemetry`.
    out
        Where to write the result (``.h5``); nothing is written when None.
    method
        SoC estimator: ``"ekf"`` (default), ``"coulomb"``, or ``"none"`` (telemetry only).
    soc_config
        :class:`packbms.soc.EKFConfig` or :class:`packbms.soc.CoulombConfig` (defaults when None).
    output_dt_s
        Row spacing of the stored time series (s). Estimation always runs on every sample of
        the current; the stored result keeps the last sample of each ``output_dt_s`` bin, and
        ``/pack/current`` is the time-weighted mean over the bin (charge-preserving). 0 keeps
        every sample. Default 0.1 s.
    chunk_frames
        Frames per read chunk.

    Returns
    -------
    Analysis

    Raises
    ------
    PackBMSError
        Any input or storage problem.

    Examples
    --------
    >>> a = analyze("data/drive_96s.blf", "data/pack96.dbc", "data/pack96.toml",
    ...             out="drive.h5")                                            # doctest: +SKIP
    >>> a.result["/cells/voltage"].shape                                       # doctest: +SKIP
    (15000, 96)
    """
    if method not in METHODS:
        raise EstimationError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    timings: dict = {}
    tel, lay = load_telemetry(log, dbc, layout, chunk_frames=chunk_frames, timings=timings)
    if not output_dt_s >= 0:
        raise EstimationError(f"output_dt_s must be >= 0, got {output_dt_s}")
    series = {
        "/time": tel.time,
        "/cells/voltage": tel.cell_voltage,
        "/cells/voltage_stale": tel.cell_voltage_stale,
    }
    if tel.pack_voltage is not None:
        series["/pack/voltage"] = tel.pack_voltage
    if tel.cell_temperature is not None:
        series["/cells/temperature"] = tel.cell_temperature
    if tel.balancing is not None:
        series["/cells/balancing"] = tel.balancing
    datasets = _voltage_stats(tel)
    soc = plan = None
    group_attrs: dict = {}
    extra_attrs: dict = {}
    if method != "none":
        t = _time.perf_counter()
        soc = estimate_soc(tel, layout=lay, method=method, config=soc_config)
        soc_sets, extra_attrs = soc.to_datasets()
        series.update(soc_sets)
        datasets["/cells/capacity_ah"] = soc.capacity_ah
        datasets["/cells/resistance_ohm"] = soc.params.r0_ohm
        timings["estimate"] = _time.perf_counter() - t
        plan = estimate_balancing(soc, layout=lay, telemetry=tel)
        arrays, battrs = plan.to_group()
        datasets.update({f"/balancing/{k}": v for k, v in arrays.items()})
        group_attrs["/balancing"] = battrs
    rows = output_rows(tel.time, output_dt_s)
    datasets.update({k: v[rows] for k, v in series.items()})
    datasets["/pack/current"] = bin_mean_current(tel.time, tel.current, rows)
    attrs = {
        "source": str(log),
        "layout": lay.text,
        "method": method,
        "output_dt_s": float(output_dt_s),
        "t0": tel.t0,
        "notes": json.dumps(tel.notes),
    }
    if isinstance(log, (str, Path)):
        attrs["source_sha256"] = store.sha256_file(log)
    if isinstance(dbc, (str, Path)):
        attrs["dbc_sha256"] = store.sha256_file(dbc)
    attrs.update({k: v for k, v in extra_attrs.items() if k != "method"})
    result = store.Result(datasets=datasets, attrs=attrs, group_attrs=group_attrs, dataset_attrs={
        "/time": {"t0_unix": tel.t0 if tel.t0_is_unix else float("nan"),
                  "output_dt_s": float(output_dt_s)},
        "/pack/current": {"sampling": "time-weighted mean over each row's bin"
                          if len(rows) < len(tel.time) else "sample"}})
    out_path = None
    if out is not None:
        t = _time.perf_counter()
        out_path = store.save(result, out)
        timings["write"] = _time.perf_counter() - t
    return Analysis(result=result, telemetry=tel, layout=lay, soc=soc, balancing=plan,
                    timings_s=timings, out=out_path)
