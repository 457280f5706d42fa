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
from .dbc import CompiledDatabase, compile_database, decode, load_database
from .io import iter_log
from .layout import Layout, load_layout
from .signals import concat_signal_tables
from .telemetry import PackTelemetry, build_telemetry

__all__ = ["analyze", "load_telemetry", "Analysis"]

DEFAULT_CHUNK_FRAMES = 1_000_000


@dataclass
class Analysis:
    """What :func:`analyze` returns: the stored result plus the in-memory telemetry."""

    result: store.Result
    telemetry: PackTelemetry
    layout: Layout
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


def analyze(log, dbc, layout, *, out=None, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> Analysis:
    """Analyse one log and optionally write the HDF5 result.

    Parameters
    ----------
    log, dbc, layout
        As for :func:`load_telemetry`.
    out
        Where to write the result (``.h5``); nothing is written when None.
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
    (150000, 96)
    """
    timings: dict = {}
    tel, lay = load_telemetry(log, dbc, layout, chunk_frames=chunk_frames, timings=timings)
    datasets = {
        "/time": tel.time,
        "/pack/current": tel.current,
        "/cells/voltage": tel.cell_voltage,
        "/cells/voltage_stale": tel.cell_voltage_stale,
    }
    if tel.pack_voltage is not None:
        datasets["/pack/voltage"] = tel.pack_voltage
    if tel.cell_temperature is not None:
        datasets["/cells/temperature"] = tel.cell_temperature
    if tel.balancing is not None:
        datasets["/cells/balancing"] = tel.balancing
    datasets.update(_voltage_stats(tel))
    attrs = {
        "source": str(log),
        "layout": lay.text,
        "method": "none",
        "t0": tel.t0,
        "notes": json.dumps(tel.notes),
    }
    if isinstance(log, (str, Path)):
        attrs["source_sha256"] = store.sha256_file(log)
    if isinstance(dbc, (str, Path)):
        attrs["dbc_sha256"] = store.sha256_file(dbc)
    result = store.Result(datasets=datasets, attrs=attrs, dataset_attrs={
        "/time": {"t0_unix": tel.t0 if tel.t0_is_unix else float("nan")}})
    out_path = None
    if out is not None:
        t = _time.perf_counter()
        out_path = store.save(result, out)
        timings["write"] = _time.perf_counter() - t
    return Analysis(result=result, telemetry=tel, layout=lay, timings_s=timings, out=out_path)
