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


METHODS = ("auto", "smoother", "ekf", "coulomb", "none")
#: With method="auto", the smoother runs when the whole drive's telemetry stays under this many
#: cell-samples (about 1.5 h of 96 cells at 100 Hz, ~2 GB of full-rate arrays); longer logs
#: stream through the EKF in bounded memory.
AUTO_WHOLE_DRIVE_CELL_SAMPLES = 50_000_000


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
    """Cuts full-rate series into the stored rows chunk by chunk, holding back the samples of
    the last (possibly incomplete) bin until the next chunk or :meth:`finish`."""

    def __init__(self, dt_s: float, sink=None):
        self.dt_s = dt_s
        self.carry: dict | None = None
        self.parts: dict[str, list] = {}
        self.sink = sink          # called with each batch of rows; else rows are kept here

    def push(self, series: dict, final: bool = False) -> None:
        if self.carry is not None:
            series = {k: np.concatenate((self.carry[k], v)) for k, v in series.items()}
            self.carry = None
        t = series["/time"]
        n = len(t)
        if n == 0:
            return
        if final or self.dt_s <= 0:
            k = n
        else:
            b = np.floor(t / self.dt_s)
            k = int(np.searchsorted(b, b[-1], side="left"))   # first sample of the last bin
            if k == 0:                                        # a single (open) bin so far
                self.carry = series
                return
        hold = np.diff(t, append=t[-1])                        # time each sample holds
        rows = output_rows(t[:k], self.dt_s)
        batch = {key: bin_mean(v[:k], hold[:k], rows) if key == "/pack/current" else v[:k][rows]
                 for key, v in series.items()}
        if self.sink is not None:
            self.sink(batch)
        else:
            for key, v in batch.items():
                self.parts.setdefault(key, []).append(v)
        if k < n:
            self.carry = {key: v[k:] for key, v in series.items()}

    def finish(self) -> dict:
        if self.carry is not None:
            self.push({k: v[:0] for k, v in self.carry.items()}, final=True)
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

    def push_soc(self, tel: PackTelemetry, soc) -> None:
        if self.soc_start is None:
            fresh = np.flatnonzero(~tel.cell_voltage_stale.any(axis=1))
            if len(fresh):
                self.soc_start = float(soc.pack.usable[fresh[0]])
        self.soc_end = soc.soc[-1].copy()
        self.soc_std_end = soc.soc_std[-1].copy()
        self.usable_end = float(soc.pack.usable[-1])

    def push(self, tel: PackTelemetry) -> None:
        n = len(tel)
        if n == 0:
            return
        v = tel.cell_voltage
        # fmin/fmax skip NaN (stale) without copying the chunk; all-NaN columns give NaN
        mins, maxs = np.fmin.reduce(v, axis=0), np.fmax.reduce(v, axis=0)
        cnt = np.count_nonzero(~np.isnan(v), axis=0)
        sums = np.nansum(v, axis=0)
        if self.v_min is None:
            self.v_min, self.v_max, self.v_sum, self.v_n = mins, maxs, sums, cnt
        else:
            self.v_min = np.fmin(self.v_min, mins)
            self.v_max = np.fmax(self.v_max, maxs)
            self.v_sum += sums
            self.v_n += cnt
        full = np.flatnonzero(~tel.cell_voltage_stale.any(axis=1))
        if len(full):
            self.end_voltage = v[full[-1]].copy()
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
            self.duty_s += (flags[:-1] != 0).T.astype(np.float64) @ dt
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
#: With method="auto", the smoother runs when the whole drive's telemetry stays under this many
#: cell-samples (about 1.5 h of 96 cells at 100 Hz, ~2 GB of full-rate arrays); longer logs
#: stream through the EKF in bounded memory.
AUTO_WHOLE_DRIVE_CELL_SAMPLES = 50_000_000


def analyze(log, dbc, layout, *, out=None, method: str = "auto", fit: bool = False,
            soc_config=None, output_dt_s: float = DEFAULT_OUTPUT_DT_S,
            chunk_frames: int = DEFAULT_CHUNK_FRAMES,
            compression: str | None = "gzip",
            whole_drive_cell_samples: int = AUTO_WHOLE_DRIVE_CELL_SAMPLES) -> Analysis:
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
        SoC estimator. ``"auto"`` (default): the RTS smoother over the whole drive when its
        telemetry fits under ``whole_drive_cell_samples``, else the streaming EKF (the summary
        and the ``method`` attr say which ran). ``"smoother"`` always smooths (holds the whole
        drive's telemetry in memory); ``"ekf"`` and ``"coulomb"`` stream in bounded memory;
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
    decim = _Decimator(output_dt_s, sink=writer.append if writer is not None else None)
    timings["prepare"] = _time.perf_counter() - clock
    if method != "none":
        timings["estimate"] = 0.0
    try:
        return _analyze_stream(log, cdb, lay, wanted, aligner, params, running, writer, decim,
                               method, soc_config, output_dt_s, chunk_frames, timings, dbc,
                               fit=fit, whole_limit=whole_drive_cell_samples)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


class _Estimation:
    """Per-chunk estimation with its state carried over, feeding the stored rows."""

    def __init__(self, lay, params, soc_config, running, decim, timings):
        self.lay, self.params, self.soc_config = lay, params, soc_config
        self.running, self.decim, self.timings = running, decim, timings
        self.state = None
        self.soc_attrs: dict = {}
        self.last_soc = None
        self.rests: list = []
        self.info: dict = {}

    def process(self, tel: PackTelemetry, method: str) -> None:
        clock = _time.perf_counter()
        self.running.push(tel)
        series = {"/time": tel.time, "/pack/current": tel.current,
                  "/cells/voltage": tel.cell_voltage,
                  "/cells/voltage_stale": tel.cell_voltage_stale}
        if tel.pack_voltage is not None:
            series["/pack/voltage"] = tel.pack_voltage
        if tel.cell_temperature is not None:
            series["/cells/temperature"] = tel.cell_temperature
        if tel.balancing is not None:
            series["/cells/balancing"] = tel.balancing
        if method != "none":
            soc = estimate_soc(tel, self.params, method=method, config=self.soc_config,
                               state=self.state)
            self.state = soc.state
            self.running.push_soc(tel, soc)
            sets, self.soc_attrs = soc.to_datasets()
            series.update(sets)
            self.last_soc = soc
            self.rests.extend(soc.info.get("rest_periods", []))
            self.info = soc.info
            now = _time.perf_counter()
            self.timings["estimate"] = self.timings.get("estimate", 0.0) + now - clock
            clock = now
        self.decim.push(series)
        self.timings["write"] = self.timings.get("write", 0.0) + _time.perf_counter() - clock


def _analyze_stream(log, cdb, lay, wanted, aligner, params, running, writer, decim, method,
                    soc_config, output_dt_s, chunk_frames, timings, dbc, fit=False,
                    whole_limit=None) -> Analysis:
    requested = method
    est = _Estimation(lay, params, soc_config, running, decim, timings)
    # "smoother", "auto" and --fit want the whole drive: hold the telemetry chunks; "auto" falls
    # back to the streaming EKF once the held telemetry passes whole_limit cell-samples
    holding = fit or method in ("smoother", "auto")
    limit = np.inf if (fit or method == "smoother") else float(whole_limit)
    held, held_samples = [], 0
    effective = method
    for signals in _decoded_chunks(log, cdb, wanted, chunk_frames, timings):
        clock = _time.perf_counter()
        tel = aligner.push(signals)
        del signals
        timings["align"] += _time.perf_counter() - clock
        if len(tel):
            if holding:
                held.append(tel)
                held_samples += len(tel) * tel.n_cells
                if held_samples > limit:
                    effective = "ekf"
                    holding = False
                    for part in held:
                        est.process(part, effective)
                    held = []
            else:
                est.process(tel, effective)
    identification = quality = None
    if held:
        tel = concat_telemetry(held)
        held = None
        if fit:
            from .identify import identify
            t = _time.perf_counter()
            identification = identify(tel, layout=lay)
            est.params = identification.params
            timings["identify"] = _time.perf_counter() - t
        effective = "smoother" if method in ("smoother", "auto") else method
        est.process(tel, effective)
        del tel
    state, soc_attrs, last_soc, rests = est.state, est.soc_attrs, est.last_soc, est.rests
    method = effective
    notes = aligner.finish()
    t_write = _time.perf_counter()
    datasets = decim.finish()               # rows already went to the writer when writing
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
