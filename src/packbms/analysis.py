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
from .balancing import plan_balancing
from .errors import EstimationError
from .dbc import CompiledDatabase, compile_database, decode, load_database
from .io import iter_log
from .kernels.stats import flag_time, voltage_stats
from .layout import Layout, load_layout
from .signals import concat_signal_tables
from .soc import estimate_soc, nominal_params
from .telemetry import PackTelemetry, TelemetryAligner, build_telemetry, concat_telemetry

__all__ = ["analyze", "load_telemetry", "Analysis"]

DEFAULT_CHUNK_FRAMES = 100_000


@dataclass
class Analysis:
    """What :func:`analyze` returns.

    Attributes
    ----------
    result : store.Result
        What is stored in the HDF5 file (kept in memory when ``out`` is None, else read back
        from the file on first access: the rows are streamed to disk while the log is read).
    layout : Layout
    balancing : BalancingPlan or None
        The plan at the log's end (None with ``method="none"``).
    soc_state : SocState or None
        The estimator state after the last sample (to continue with a following log).
    stats : dict
        Whole-log figures gathered while streaming (summary printing).
    timings_s : dict
        Seconds spent per stage.
    out : Path or None
        The written file.
    method : str
    """

    layout: Layout
    balancing: object = None
    soc_state: object = None
    stats: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)
    out: Path | None = None
    method: str = "none"
    _result: store.Result | None = field(default=None, repr=False)

    @property
    def result(self) -> store.Result:
        """The stored result (read back from ``out`` on first use when it was streamed there)."""
        if self._result is None and self.out is not None:
            self._result = store.load(self.out)
        return self._result


def _prepare(dbc, layout) -> tuple[CompiledDatabase, Layout]:
    db = dbc if isinstance(dbc, CompiledDatabase) else compile_database(
        dbc if not isinstance(dbc, (str, Path)) else load_database(dbc))
    lay = layout if isinstance(layout, Layout) else load_layout(layout)
    lay.validate(db.database)
    return db, lay


def _decoded_chunks(log, cdb, wanted, chunk_frames, timings):
    """Read the log chunk by chunk and decode the messages the layout needs, adding the time
    spent to ``timings["read"]`` and ``timings["decode"]``; each chunk's frames are dropped once
    decoded."""
    clock = _time.perf_counter()
    for frames in iter_log(log, chunk_frames=chunk_frames):
        now = _time.perf_counter()
        timings["read"] += now - clock
        signals = decode(frames, cdb, messages=wanted)
        if signals.source is None:
            signals.source = str(log)
        del frames
        clock = _time.perf_counter()
        timings["decode"] += clock - now
        yield signals
        clock = _time.perf_counter()


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
    timings["read"] = timings["decode"] = 0.0
    signals = concat_signal_tables(list(_decoded_chunks(log, cdb, wanted, chunk_frames, timings)))
    t = _time.perf_counter()
    tel = build_telemetry(signals, lay, cdb.database)
    timings["align"] = _time.perf_counter() - t
    return tel, lay


#: Default spacing of the stored result's rows (s); 0 stores every sample of the current.
DEFAULT_OUTPUT_DT_S = 0.1


def output_rows(time_s: np.ndarray, dt_s: float) -> np.ndarray:
    """Rows kept in the stored result: the last sample of each ``dt_s`` bin (all when 0).

    Bins are ``floor(time_s / dt_s)``, so rows fall on the same grid whichever way a log is
    chunked.

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


def bin_mean(values: np.ndarray, hold_s: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Time-weighted mean of ``values`` over each output bin.

    Row k stands for the time from its bin's first sample (the one after ``rows[k-1]``) to the
    next bin's first sample; each sample holds for ``hold_s`` (the time to the next sample).
    Integrating the result over the bins gives the same charge as the full-rate signal. A bin
    of zero duration (the log's last sample alone) keeps its sample.
    """
    if len(rows) == len(values):
        return values.copy()
    starts = np.concatenate(([0], rows[:-1] + 1))
    q = np.add.reduceat(values * hold_s, starts)
    span = np.add.reduceat(hold_s, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = q / span
    return np.where(span > 0, mean, values[rows])


class _Decimator:
    """Sends the stored rows on, chunk by chunk: the last sample of each ``dt_s`` bin (every
    sample when 0), ``/pack/current`` as the time-weighted mean over the bin.

    A chunk's last sample may not end its bin (the next chunk can continue it): its row is held
    back, with the charge and time its bin has gathered, until the next chunk or
    :meth:`finish`. Only the kept rows of the [T, S] series ever reach here.
    """

    def __init__(self, dt_s: float, sink=None):
        self.dt_s = dt_s
        self.pending: dict | None = None
        self.parts: dict[str, list] = {}
        self.sink = sink          # called with each batch of rows; else rows are kept here

    def rows(self, time_s: np.ndarray) -> np.ndarray:
        """The rows of a chunk that may be stored: each bin's last sample and the chunk's last
        sample (:func:`output_rows`)."""
        return output_rows(time_s, self.dt_s)

    def push(self, time_s: np.ndarray, current_a: np.ndarray, rows: np.ndarray,
             sampled: dict) -> None:
        """One chunk: its full-rate time and current, the rows :meth:`rows` chose and the
        other series at those rows."""
        t, i = time_s, current_a
        n = len(t)
        if n == 0:
            return
        if self.dt_s <= 0:
            self._emit({"/time": t, "/pack/current": i, **sampled})
            return
        hold = np.empty(n)
        np.subtract(t[1:], t[:-1], out=hold[:-1])
        hold[-1] = 0.0                          # until the next chunk's first sample
        starts = np.concatenate(([0], rows[:-1] + 1))
        q = np.add.reduceat(i * hold, starts)
        span = np.add.reduceat(hold, starts)
        bins = np.floor(t[rows] / self.dt_s)
        first = None
        if self.pending is not None:
            p = self.pending
            gap = t[0] - p["t"]
            p["q"] += p["i"] * gap
            p["span"] += gap
            if np.floor(t[0] / self.dt_s) == p["bin"]:     # its bin goes on in this chunk
                q[0] += p["q"]
                span[0] += p["span"]
            else:
                first = self._pending_row()
            self.pending = None
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(span > 0, q / span, i[rows])
        batch = {"/time": t[rows], "/pack/current": mean, **sampled}
        self.pending = {"row": {k: v[-1:] for k, v in batch.items()}, "bin": bins[-1],
                        "q": q[-1], "span": span[-1], "t": t[-1], "i": i[-1]}
        batch = {k: v[:-1] for k, v in batch.items()}
        if first is not None:
            batch = {k: np.concatenate((first[k], v)) for k, v in batch.items()}
        if len(batch["/time"]):
            self._emit(batch)

    def _pending_row(self) -> dict:
        p = self.pending
        row = dict(p["row"])
        if p["span"] > 0:
            row["/pack/current"] = np.array([p["q"] / p["span"]])
        else:                                    # a bin of zero duration keeps its sample
            row["/pack/current"] = np.array([p["i"]])
        return row

    def _emit(self, batch: dict) -> None:
        if self.sink is not None:
            self.sink(batch)
        else:
            for key, v in batch.items():
                self.parts.setdefault(key, []).append(v)

    def finish(self) -> dict:
        if self.pending is not None:
            self._emit(self._pending_row())
            self.pending = None
        return {k: np.concatenate(v) for k, v in self.parts.items()}


class _Running:
    """Whole-log statistics accumulated chunk by chunk (summary and per-cell datasets)."""

    def __init__(self):
        self.v_min = self.v_max = self.v_sum = self.v_n = None
        self.i_min, self.i_max = np.inf, -np.inf
        self.ah_out = self.ah_in = 0.0
        self.pv_min, self.pv_max = np.inf, -np.inf
        self.temp_min, self.temp_max = np.inf, -np.inf
        self.temp_sensors = 0
        self.duty_s = None
        self.flag_t0 = None
        self.prev = None          # (t, i, flags) of the previous chunk's last sample
        self.rows = 0
        self.end_voltage = None   # last row where every cell had a fresh voltage
        self.soc_start = None     # usable pack SoC at the first row with every cell fresh
        self.soc_end = self.soc_std_end = None
        self.usable_end = np.nan

    def push_soc(self, soc, first_fresh_usable: float | None) -> None:
        """Fold a chunk's SoC result in (``first_fresh_usable``: the usable pack SoC at the
        chunk's first row with every cell fresh, None when it has none)."""
        if self.soc_start is None and first_fresh_usable is not None:
            self.soc_start = float(first_fresh_usable)
        self.soc_end = soc.soc[-1].copy()
        self.soc_std_end = soc.soc_std[-1].copy()
        self.usable_end = float(soc.pack.usable[-1])

    def push(self, tel: PackTelemetry) -> int:
        """Fold a chunk of telemetry in; returns its first row with every cell fresh (-1:
        none)."""
        n = len(tel)
        if n == 0:
            return -1
        v = tel.cell_voltage
        if self.v_min is None:
            s = v.shape[1]
            self.v_min, self.v_max = np.full(s, np.inf), np.full(s, -np.inf)
            self.v_sum, self.v_n = np.zeros(s), np.zeros(s, np.int64)
        first, last = voltage_stats(v, tel.cell_voltage_stale, self.v_min, self.v_max,
                                    self.v_sum, self.v_n)
        if last >= 0:
            self.end_voltage = v[last].copy()
        self.i_min = min(self.i_min, float(tel.current.min()))
        self.i_max = max(self.i_max, float(tel.current.max()))
        t, i = tel.time, tel.current
        flags = tel.balancing
        if self.prev is not None:                    # the previous chunk's last sample holds
            pt, pi, pf = self.prev                   # until this chunk's first
            t = np.concatenate(([pt], t))
            i = np.concatenate(([pi], i))
            if flags is not None and pf is not None:
                flags = np.concatenate((pf[None, :], flags))
        dt = np.diff(t)
        q = i[:-1] * dt
        self.ah_out += float(q[q > 0].sum()) / 3600.0
        self.ah_in -= float(q[q < 0].sum()) / 3600.0
        if flags is not None and len(flags) == len(t):
            if self.duty_s is None:
                self.duty_s = np.zeros(flags.shape[1])
                self.flag_t0 = float(t[0])
            flag_time(flags, t, self.duty_s)
        self.prev = (float(tel.time[-1]), float(tel.current[-1]),
                     None if tel.balancing is None else tel.balancing[-1].copy())
        if tel.pack_voltage is not None and np.isfinite(tel.pack_voltage).any():
            self.pv_min = min(self.pv_min, float(np.nanmin(tel.pack_voltage)))
            self.pv_max = max(self.pv_max, float(np.nanmax(tel.pack_voltage)))
        if tel.cell_temperature is not None and np.isfinite(tel.cell_temperature).any():
            self.temp_min = min(self.temp_min, float(np.nanmin(tel.cell_temperature)))
            self.temp_max = max(self.temp_max, float(np.nanmax(tel.cell_temperature)))
            self.temp_sensors = tel.cell_temperature.shape[1]
        self.rows += n
        return first

    def duty(self) -> tuple[np.ndarray | None, float]:
        if self.duty_s is None or self.prev is None:
            return None, 0.0
        span = self.prev[0] - self.flag_t0
        return (self.duty_s / span if span > 0 else np.zeros_like(self.duty_s)), span

    def voltage_stats(self) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "/cells/voltage_min": np.where(self.v_n > 0, self.v_min, np.nan),
                "/cells/voltage_max": np.where(self.v_n > 0, self.v_max, np.nan),
                "/cells/voltage_mean": np.where(self.v_n > 0, self.v_sum / self.v_n, np.nan),
            }


METHODS = ("auto", "smoother", "ekf", "coulomb", "none")
#: With method="auto", the smoother runs while the drive stays under this many cell-samples
#: (about 2.9 h of 96 cells at 100 Hz). The smoother streams too (it holds its records, 48 bytes
#: per cell-update, and the [T] current: ~90 MB per hour of 96 cells at 5 Hz voltages), so this
#: bounds memory, not a full-rate copy; a longer log goes on with the streaming EKF from where
#: the smoother's forward filter is.
AUTO_WHOLE_DRIVE_CELL_SAMPLES = 100_000_000
#: ... and while the filtered rows it holds for a fallback (the stored SoC rows, as many as
#: the smoothed output will have) stay under this many bytes: ~55 MB per hour of 96 cells at
#: the default 0.1 s rows, but ~560 MB per hour with ``output_dt_s=0``.
AUTO_HELD_BYTES = 512 << 20


def analyze(log, dbc, layout, *, out=None, method: str = "auto", fit: bool = False,
            soc_config=None, output_dt_s: float = DEFAULT_OUTPUT_DT_S,
            chunk_frames: int = DEFAULT_CHUNK_FRAMES,
            compression: str | None = "gzip",
            whole_drive_cell_samples: int | None = None) -> Analysis:
    """Analyse one log, chunk by chunk, and optionally write the HDF5 result.

    The log is read ``chunk_frames`` frames at a time; each chunk is decoded, aligned
    (:class:`~packbms.telemetry.TelemetryAligner`) and estimated with the state carried over,
    then cut to the stored rows. Peak memory is one chunk of frames and telemetry plus the
    stored (decimated) result, whatever the log's size.

    Parameters
    ----------
    log, dbc, layout
        As for :func:`load_telemetry`.
    out
        Where to write the result (``.h5``); nothing is written when None.
    method
        SoC estimator. ``"auto"`` (default): the RTS smoother over the whole drive when it
        has at most ``whole_drive_cell_samples`` cell-samples (default
        :data:`AUTO_WHOLE_DRIVE_CELL_SAMPLES`) and its stored SoC rows take at most
        :data:`AUTO_HELD_BYTES`, else it goes on as the streaming EKF (the summary and the
        ``method`` attr say which ran). ``"smoother"`` always smooths; it
        streams the forward filter chunk by chunk (:class:`packbms.soc.SmootherStream`) and
        holds only its records, the [T] current and the stored rows until the backward pass
        (~90 MB per hour of 96 cells); ``"ekf"`` and ``"coulomb"`` stream in bounded memory;
        ``"none"`` stores telemetry only.
    fit
        Identify each cell's capacity, R0, RC and self-discharge from the log
        (:mod:`packbms.identify`), estimate with them, and grade the cells
        (:mod:`packbms.quality`, stored under ``/quality``). Holds the whole drive in memory.
    soc_config
        :class:`packbms.soc.EKFConfig` or :class:`packbms.soc.CoulombConfig` (defaults when None).
    output_dt_s
        Row spacing of the stored time series (s). Estimation always runs on every sample of
        the current; the stored result keeps the last sample of each ``output_dt_s`` bin, and
        ``/pack/current`` is the time-weighted mean over the bin (charge-preserving). 0 keeps
        every sample. Default 0.1 s.
    chunk_frames
        Frames per read chunk.
    compression
        HDF5 compression of ``out``: ``"gzip"`` (default), ``"lzf"`` or None
        (see :class:`packbms.store.ResultWriter`).

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
    if not output_dt_s >= 0:
        raise EstimationError(f"output_dt_s must be >= 0, got {output_dt_s}")
    timings = {"prepare": 0.0, "read": 0.0, "decode": 0.0, "align": 0.0}
    clock = _time.perf_counter()
    cdb, lay = _prepare(dbc, layout)
    wanted = lay.required_messages(cdb.database)
    aligner = TelemetryAligner(lay, cdb.database)
    params = None
    if fit and method == "none":
        raise EstimationError("fit=True needs a SoC method (identification feeds the estimator)")
    if fit:                                   # a bad [quality] section fails before any reading
        from .quality import quality_config
        quality_config(lay.raw.get("quality", {}), where=f"{lay.path or 'layout'} [quality]")
    if method != "none":
        params = nominal_params(lay.cells_in_series, lay.capacity_ah,
                                lay.ocv_table if lay.ocv_table is not None else lay.chemistry)
    running = _Running()
    if chunk_frames < 1:
        raise EstimationError(f"chunk_frames must be >= 1, got {chunk_frames}")
    writer = store.ResultWriter(out, compression) if out is not None else None
    timings["prepare"] = _time.perf_counter() - clock
    if method != "none":
        timings["estimate"] = 0.0
    try:
        return _analyze_stream(log, cdb, lay, wanted, aligner, params, running, writer, method,
                               soc_config, output_dt_s, chunk_frames, timings, dbc, fit=fit,
                               whole_limit=whole_drive_cell_samples)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


#: Datasets of a SoC result (the streaming smoother holds them back until its backward pass).
_SOC_KEYS = ("/cells/soc", "/cells/soc_std", "/pack/soc", "/pack/soc_min", "/pack/soc_max",
             "/pack/soc_mean")


class _Estimation:
    """Per-chunk estimation with its state carried over, feeding the stored rows.

    With ``stream_smoother`` the chunks go through :class:`packbms.soc.SmootherStream`: the
    stored rows of the telemetry go on at once, the filtered SoC rows are held back (with the
    smoother's records) until :meth:`finish` replaces them by the smoothed ones. Past
    ``smoother_limit`` cell-samples it falls back to the streaming EKF: the held filtered
    rows are sent as they are (they are the EKF's) and the filter goes on.
    """

    def __init__(self, lay, params, soc_config, running, output_dt_s, timings, sink,
                 stream_smoother=False, smoother_limit=np.inf, held_limit=np.inf):
        self.lay, self.params, self.soc_config = lay, params, soc_config
        self.running, self.timings = running, timings
        self.decim = _Decimator(output_dt_s, sink=self._sink)
        self.out_sink = sink              # writer.append, or None: kept in self.parts
        self.parts: dict[str, list] = {}
        self.state = None
        self.soc_attrs: dict = {}
        self.last_soc = None
        self.rests: list = []
        self.info: dict = {}
        self.smoother = None
        if stream_smoother:
            from .soc import SmootherStream
            self.smoother = SmootherStream(params, soc_config)
        self.smoother_limit = smoother_limit
        self.held_limit = held_limit      # bytes of filtered rows held (auto only)
        self.held_bytes = 0
        # auto may fall back to the EKF: its filtered rows are held until the smoother ends
        self.may_fall_back = bool(np.isfinite(smoother_limit) or np.isfinite(held_limit))
        self.samples = 0
        self.rows_seen = 0
        self.first_fresh_row = -1         # global row of the first all-fresh row
        self.held_soc: list = []          # filtered SoC rows held for auto's fallback
        self.held_rows: list = []         # the global rows they stand for
        self.fell_back = False

    # -- where the stored rows go --------------------------------------------------------
    def _out(self, batch: dict) -> None:
        if self.out_sink is not None:
            self.out_sink(batch)
        else:
            for key, v in batch.items():
                self.parts.setdefault(key, []).append(v)

    def _sink(self, batch: dict) -> None:
        rows = batch.pop("/_row")
        if self.smoother is not None and "/cells/soc" in batch:
            soc = {k: batch.pop(k) for k in _SOC_KEYS}
            if self.may_fall_back:
                self.held_soc.append(soc)
                self.held_bytes += sum(v.nbytes for v in soc.values())
            self.held_rows.append(rows)
        self._out(batch)

    def _fall_back(self) -> None:
        """Past the smoother's limit: send the held (filtered) rows, go on as the EKF."""
        for part in self.held_soc:
            self._out(part)
        self.held_soc, self.held_rows = [], []
        self.smoother = None
        self.fell_back = True

    # -- chunks --------------------------------------------------------------------------
    def process(self, tel: PackTelemetry, method: str) -> None:
        clock = _time.perf_counter()
        first_fresh = self.running.push(tel)
        rows = self.decim.rows(tel.time)
        series = {"/_row": rows + self.rows_seen,
                  "/cells/voltage": tel.cell_voltage[rows],
                  "/cells/voltage_stale": tel.cell_voltage_stale[rows]}
        if tel.pack_voltage is not None:
            series["/pack/voltage"] = tel.pack_voltage[rows]
        if tel.cell_temperature is not None:
            series["/cells/temperature"] = tel.cell_temperature[rows]
        if tel.balancing is not None:
            series["/cells/balancing"] = tel.balancing[rows]
        if method != "none":
            # the estimator runs on every row and keeps the stored ones (plus, until the
            # summary has it, the first row with every cell fresh)
            extra = first_fresh >= 0 and self.running.soc_start is None
            keep = np.union1d(rows, [first_fresh]) if extra else rows
            if extra:
                self.first_fresh_row = self.rows_seen + first_fresh
            if self.smoother is not None:
                self.samples += len(tel) * tel.n_cells
                soc = self.smoother.push(tel.time, tel.current, tel.cell_voltage,
                                         tel.cell_temperature, rows=keep)
                if self.samples > self.smoother_limit or self.held_bytes > self.held_limit:
                    self._fall_back()
            else:
                soc = estimate_soc(tel, self.params, method=method, config=self.soc_config,
                                   state=self.state, rows=keep)
            self.state = soc.state
            usable = None
            if extra:
                usable = float(soc.pack.usable[np.searchsorted(keep, first_fresh)])
                if len(keep) != len(rows):
                    soc = _soc_rows(soc, np.searchsorted(keep, rows))
            self.running.push_soc(soc, usable)
            sets, self.soc_attrs = soc.to_datasets()
            series.update(sets)
            self.last_soc = soc
            self.rests.extend(soc.info.get("rest_periods", []))
            self.info = soc.info
            now = _time.perf_counter()
            self.timings["estimate"] = self.timings.get("estimate", 0.0) + now - clock
            clock = now
        self.rows_seen += len(tel)
        self.decim.push(tel.time, tel.current, rows, series)
        self.timings["write"] = self.timings.get("write", 0.0) + _time.perf_counter() - clock

    def finish(self) -> dict:
        """Flush the last rows (and run the smoother's backward pass); returns the stored
        rows when they were kept in memory."""
        clock = _time.perf_counter()
        self.decim.finish()
        if self.smoother is not None and self.smoother.rows_seen:
            t = _time.perf_counter()
            stored = np.concatenate(self.held_rows)
            self.held_soc, self.held_rows = [], []    # freed before the smoothed rows come
            want = stored
            if self.first_fresh_row >= 0:
                want = np.union1d(stored, [self.first_fresh_row])
            soc = self.smoother.finish(rows=want)
            usable = None
            if self.first_fresh_row >= 0:
                usable = float(soc.pack.usable[np.searchsorted(want, self.first_fresh_row)])
            if len(want) != len(stored):
                soc = _soc_rows(soc, np.searchsorted(want, stored))
            self.running.soc_start = None
            self.running.push_soc(soc, usable)
            sets, self.soc_attrs = soc.to_datasets()
            self._out(sets)
            self.last_soc = soc
            self.info = soc.info
            self.smoother = None
            spent = _time.perf_counter() - t
            self.timings["estimate"] = self.timings.get("estimate", 0.0) + spent
            clock += spent
        self.timings["write"] = self.timings.get("write", 0.0) + _time.perf_counter() - clock
        return {k: np.concatenate(v) for k, v in self.parts.items()}


def _soc_rows(soc, idx):
    """``soc`` (a SocResult) cut to its rows ``idx``."""
    import dataclasses

    from .soc import PackSoc
    pack = PackSoc(**{f.name: getattr(soc.pack, f.name)[idx]
                      for f in dataclasses.fields(PackSoc)})
    return dataclasses.replace(soc, time_s=soc.time_s[idx], soc=soc.soc[idx],
                               soc_std=soc.soc_std[idx], pack=pack, rows=soc.rows[idx])


def _analyze_stream(log, cdb, lay, wanted, aligner, params, running, writer, method,
                    soc_config, output_dt_s, chunk_frames, timings, dbc, fit=False,
                    whole_limit=None) -> Analysis:
    requested = method
    # "smoother" and "auto" stream through the smoother's forward pass (records only), "auto"
    # falling back to the streaming EKF past whole_limit cell-samples (default: the module's
    # AUTO_WHOLE_DRIVE_CELL_SAMPLES, read now) or AUTO_HELD_BYTES of held filtered rows;
    # fit=True holds the whole drive's telemetry (identification needs it) and estimates once
    # at the end
    stream = not fit and method in ("smoother", "auto")
    if whole_limit is None:
        whole_limit = AUTO_WHOLE_DRIVE_CELL_SAMPLES
    limit = float(whole_limit) if method == "auto" else np.inf
    held_limit = AUTO_HELD_BYTES if method == "auto" else np.inf
    est = _Estimation(lay, params, soc_config, running, output_dt_s, timings,
                      writer.append if writer is not None else None,
                      stream_smoother=stream, smoother_limit=limit, held_limit=held_limit)
    effective = "smoother" if stream else method
    held = []
    for signals in _decoded_chunks(log, cdb, wanted, chunk_frames, timings):
        clock = _time.perf_counter()
        tel = aligner.push(signals)
        del signals
        timings["align"] += _time.perf_counter() - clock
        if len(tel):
            if fit:
                held.append(tel)
            else:
                est.process(tel, effective)
                if est.fell_back:
                    effective = "ekf"
    identification = quality = None
    if held:
        tel = concat_telemetry(held)
        held = None
        from .identify import identify
        t = _time.perf_counter()
        identification = identify(tel, layout=lay)
        est.params = identification.params
        timings["identify"] = _time.perf_counter() - t
        effective = "smoother" if method in ("smoother", "auto") else method
        est.process(tel, effective)
        del tel
    datasets = est.finish()                 # rows already went to the writer when writing
    t_write = _time.perf_counter()
    state, soc_attrs, last_soc, rests = est.state, est.soc_attrs, est.last_soc, est.rests
    method = effective
    notes = aligner.finish()
    fixed = running.voltage_stats()
    group_attrs: dict = {}
    plan = None
    if identification is not None:
        from .quality import assess_quality, quality_config
        qcfg = quality_config(lay.raw.get("quality", {}),
                              where=f"{lay.path or 'layout'} [quality]")
        quality = assess_quality(identification, config=qcfg)
        arrays, qattrs = quality.to_group()
        fixed.update({f"/quality/{k}": v for k, v in arrays.items()})
        group_attrs["/quality"] = qattrs
        ia, iattrs = identification.to_datasets()
        fixed.update({f"/quality/identification/{k}": v for k, v in ia.items()})
        group_attrs["/quality/identification"] = iattrs
    if last_soc is not None:
        fixed["/cells/capacity_ah"] = last_soc.capacity_ah
        fixed["/cells/resistance_ohm"] = last_soc.params.r0_ohm
        duty, span = running.duty()
        plan = plan_balancing(last_soc.soc[-1], last_soc.capacity_ah,
                              bleed_current_a=lay.bleed_current_a,
                              chemistry=last_soc.params.chemistry,
                              time_s=float(last_soc.time_s[-1]), observed_duty=duty,
                              observed_duration_s=span)
        arrays, battrs = plan.to_group()
        fixed.update({f"/balancing/{k}": v for k, v in arrays.items()})
        group_attrs["/balancing"] = battrs
    t0 = aligner.t0
    attrs = {
        "source": str(log),
        "layout": lay.text,
        "method": method,
        "output_dt_s": float(output_dt_s),
        "t0": t0,
        "notes": json.dumps(notes),
    }
    if isinstance(log, (str, Path)):
        attrs["source_sha256"] = store.sha256_file(log)
    if isinstance(dbc, (str, Path)):
        attrs["dbc_sha256"] = store.sha256_file(dbc)
    attrs.update({k: v for k, v in soc_attrs.items() if k != "method"})
    t0_unix = t0 if t0 > 1e9 else float("nan")
    dataset_attrs = {
        "/time": {"t0_unix": t0_unix, "output_dt_s": float(output_dt_s)},
        "/pack/current": {"sampling": "time-weighted mean over each row's bin"
                          if output_dt_s > 0 else "sample"}}
    stats = {"running": running, "notes": notes, "rest_periods": _merge_rests(rests),
             "source": aligner.source, "t0": t0, "rows_full_rate": running.rows,
             "identification": identification, "quality": quality,
             "requested_method": requested, "soc_info": est.info}
    result = out_path = None
    if writer is not None:
        for key, arr in fixed.items():
            writer.put(key, arr)
        writer.attrs(attrs)
        for key, a in dataset_attrs.items():
            writer.attrs(a, key)
        for group, a in group_attrs.items():
            writer.attrs(a, group)
        out_path = writer.close()
        timings["write"] = timings.get("write", 0.0) + _time.perf_counter() - t_write
    else:
        datasets.update(fixed)
        result = store.Result(datasets=datasets, attrs=attrs, group_attrs=group_attrs,
                              dataset_attrs=dataset_attrs)
    return Analysis(layout=lay, balancing=plan, soc_state=state, stats=stats,
                    timings_s=timings, out=out_path, method=method, _result=result)


def _merge_rests(rests: list) -> list:
    """Join rest periods that a chunk boundary cut in two."""
    merged: list = []
    for a, b in sorted(rests):
        if merged and a <= merged[-1][1] + 1.0:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged
