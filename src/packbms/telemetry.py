"""Decoded signals -> pack telemetry aligned on the current signal's time base.

Alignment is a zero-order hold: at each current sample, every cell shows the last value received
for it. A held value older than the group's ``stale_after_s`` is *stale*: it is stored as NaN and
flagged in the stale mask, never filled silently. Streams whose timestamps go backwards are sorted
stably (equal times keep their log order) and the number of backward steps is reported in
``PackTelemetry.notes["time_backwards"]``; packbms does not raise for them, because loggers that
merge channels commonly produce a few.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import TelemetryError
from .kernels.align import count_backwards, zoh_events
from .layout import Layout, SignalGroup
from .signals import SignalTable

__all__ = ["PackTelemetry", "build_telemetry"]

#: A stale threshold is this many median refresh intervals ...
STALE_INTERVALS = 5.0
#: ... but never shorter than this (s).
STALE_MIN_S = 1.0
#: A step in the current's time base longer than this many median steps (and >= 1 s) is a gap.
GAP_INTERVALS = 10.0


@dataclass
class PackTelemetry:
    """Pack signals on one time base (the current signal's).

    Attributes
    ----------
    time : float64 [T]
        Seconds from the first current sample.
    t0 : float
        Timestamp of the first current sample as the log gives it (Unix seconds for most
        formats, else the log's own origin); see ``t0_is_unix``.
    current : float64 [T]
        Pack current in A, positive = discharge (the layout's sign already applied).
    pack_voltage : float64 [T] or None
    cell_voltage : float64 [T, S]
        Volts; NaN where stale.
    cell_voltage_stale : bool [T, S]
    cell_temperature : float64 [T, K] or None
        Degrees Celsius as the log gives them; NaN where stale.
    cell_temperature_stale : bool [T, K] or None
    balancing : bool [T, S] or None
        Per-cell balancing flag as logged (False where stale).
    notes : dict
        What happened on the way: decode counts, backward time steps, gaps, stale fractions.
    """

    time: np.ndarray
    t0: float
    current: np.ndarray
    cell_voltage: np.ndarray
    cell_voltage_stale: np.ndarray
    pack_voltage: np.ndarray | None = None
    cell_temperature: np.ndarray | None = None
    cell_temperature_stale: np.ndarray | None = None
    balancing: np.ndarray | None = None
    notes: dict = field(default_factory=dict)
    source: str | None = None

    @property
    def n_cells(self) -> int:
        return self.cell_voltage.shape[1]

    @property
    def t0_is_unix(self) -> bool:
        """True when ``t0`` looks like a Unix time (after 2001)."""
        return bool(self.t0 > 1e9)

    def __len__(self) -> int:
        return len(self.time)


def _where(table: SignalTable) -> str:
    return f"{table.source}: " if table.source else ""


def _group_events(table: SignalTable, group) -> tuple[np.ndarray, ...]:
    """(t, idx, value, backwards) events of a group, idx 0-based, in log order per stream.

    ``group`` is a :class:`SignalGroup` or a plain list of signal names (index = position).
    """
    ts, idx, vals = [], [], []
    backwards = 0
    if isinstance(group, SignalGroup) and group.is_mux:
        m = table.messages.get(group.message)
        if m is None or len(m) == 0:
            return (np.zeros(0), np.zeros(0, np.int64), np.zeros(0), 0)
        backwards += int(count_backwards(m.timestamps))
        mux_col = m.column(group.mux)
        mux = m.values[:, mux_col]
        k = len(group.signals)
        for slot, name in enumerate(group.signals):
            col = m.column(name)
            keep = m.present[:, col] & m.present[:, mux_col]
            ts.append(m.timestamps[keep])
            idx.append(np.rint(mux[keep]).astype(np.int64) * k + slot + group.first_cell)
            vals.append(m.values[keep, col])
    else:
        names = group.signal_names() if isinstance(group, SignalGroup) else group
        for i, name in enumerate(names):
            t, v = table.signal(name)
            backwards += int(count_backwards(t))
            ts.append(t)
            idx.append(np.full(len(t), i, np.int64))
            vals.append(v)
    return (np.concatenate(ts), np.concatenate(idx), np.concatenate(vals), backwards)


def _align_group(table, group, count, target_abs, notes, label, stale_after_s=None):
    t, idx, v, backwards = _group_events(table, group)
    notes["time_backwards"][label] = backwards
    order = np.argsort(t, kind="stable")
    t, idx, v = t[order], idx[order], v[order]
    outside = int(np.count_nonzero((idx < 0) | (idx >= count)))
    if outside:
        notes.setdefault("out_of_range_index", {})[label] = outside
    if stale_after_s is not None:
        stale_after = stale_after_s
    else:
        inside = (idx >= 0) & (idx < count)
        n_per = np.bincount(idx[inside], minlength=count)
        first = np.full(count, np.inf)
        last = np.full(count, -np.inf)
        np.minimum.at(first, idx[inside], t[inside])
        np.maximum.at(last, idx[inside], t[inside])
        ok = n_per > 1
        interval = np.median((last[ok] - first[ok]) / (n_per[ok] - 1)) if ok.any() else 0.0
        stale_after = max(STALE_MIN_S, STALE_INTERVALS * float(interval))
    notes["stale_after_s"][label] = stale_after
    out = np.empty((len(target_abs), count))
    stale = np.empty((len(target_abs), count), dtype=bool)
    zoh_events(target_abs, t, idx, v.astype(np.float64), np.full(count, stale_after), out, stale)
    seen = np.zeros(count, bool)
    seen[idx[(idx >= 0) & (idx < count)]] = True
    return out, stale, seen


def _describe(group: SignalGroup, i: int) -> str:
    if group.is_mux:
        k = len(group.signals)
        j = i - group.first_cell
        return (f"{group.message}.{group.signals[j % k]} with {group.mux}={j // k}"
                if j >= 0 else f"index {i}")
    return group.signal_names()[i]


def build_telemetry(signals: SignalTable, layout: Layout, database=None) -> PackTelemetry:
    """Align the signals the layout names onto the current signal's time base.

    Parameters
    ----------
    signals
        Decoded log (:func:`packbms.dbc.decode`).
    layout
        The pack layout, already validated against the database.
    database
        Optional cantools database; used to size a multiplexed temperature group whose
        ``count`` the layout leaves out.

    Returns
    -------
    PackTelemetry

    Raises
    ------
    TelemetryError
        No frame carries the current signal; a cell's voltage never appears in the log.

    Examples
    --------
    >>> tel = build_telemetry(decode(frames, cdb), layout)       # doctest: +SKIP
    >>> tel.cell_voltage.shape                                    # doctest: +SKIP
    (150000, 96)
    """
    where = _where(signals)
    notes: dict = {"time_backwards": {}, "stale_after_s": {}, "decode": vars(signals.counts).copy()}

    t_cur, i_cur = signals.signal(layout.current_signal)
    if len(t_cur) == 0:
        c = signals.counts
        raise TelemetryError(
            f"{where}no frame carries the current signal {layout.current_signal!r} "
            f"({c.decoded} frames decoded, {c.unknown_id} with IDs the database does not know, "
            f"{c.too_short} too short); is this the right log and database?")
    notes["time_backwards"]["current"] = int(count_backwards(t_cur))
    order = np.argsort(t_cur, kind="stable")
    t_cur, i_cur = t_cur[order], i_cur[order]
    finite = np.isfinite(i_cur)
    if not finite.all():
        notes["current_not_finite"] = int((~finite).sum())
        t_cur, i_cur = t_cur[finite], i_cur[finite]
        if len(t_cur) == 0:
            raise TelemetryError(f"{where}every value of {layout.current_signal!r} is NaN or inf")
    t0 = float(t_cur[0])
    time = t_cur - t0
    if len(time) > 1:
        dt = np.diff(time)
        limit = max(1.0, GAP_INTERVALS * float(np.median(dt)))
        gaps = np.flatnonzero(dt > limit)
        notes["current_gaps"] = {"count": int(len(gaps)),
                                 "longest_s": float(dt[gaps].max()) if len(gaps) else 0.0,
                                 "threshold_s": limit}

    pack_voltage = None
    if layout.pack_voltage_signal:
        pv, _, seen = _align_group(signals, [layout.pack_voltage_signal], 1, t_cur, notes,
                                   "pack_voltage")
        pack_voltage = pv[:, 0] if seen[0] else None

    S = layout.cells_in_series
    cv, cv_stale, seen = _align_group(signals, layout.cell_voltage, S, t_cur, notes,
                                      "cell_voltage", layout.cell_voltage.stale_after_s)
    if not seen.all():
        missing = np.flatnonzero(~seen)
        names = ", ".join(f"cell {i + 1} ({_describe(layout.cell_voltage, i)})"
                          for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise TelemetryError(f"{where}no voltage in the log for {names}{more}")
    notes["cell_voltage_stale_fraction"] = float(cv_stale.mean())

    temps = temps_stale = None
    tg = layout.cell_temperature
    if tg is not None:
        k = tg.count
        if k < 0:
            k = layout.mux_cell_count(tg, database) if database is not None else 0
            if k <= 0:
                _, idx, _, _ = _group_events(signals, tg)
                k = int(idx.max()) + 1 if len(idx) else 0
        if k > 0:
            temps, temps_stale, tseen = _align_group(signals, tg, k, t_cur, notes,
                                                     "cell_temperature", tg.stale_after_s)
            if not tseen.any():
                temps = temps_stale = None
                notes["cell_temperature_missing"] = True

    bal = None
    if layout.balancing_flags is not None:
        b, b_stale, bseen = _align_group(signals, layout.balancing_flags, S, t_cur, notes,
                                         "balancing_flags", layout.balancing_flags.stale_after_s)
        if bseen.any():
            bal = (b != 0) & ~b_stale        # stale entries are NaN (!= 0) but masked

    return PackTelemetry(
        time=time, t0=t0, current=i_cur * layout.current_sign, cell_voltage=cv,
        cell_voltage_stale=cv_stale, pack_voltage=pack_voltage, cell_temperature=temps,
        cell_temperature_stale=temps_stale, balancing=bal, notes=notes, source=signals.source)
