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
from .kernels.align import count_backwards, zoh_events_carry
from .layout import Layout, SignalGroup
from .signals import SignalTable

__all__ = ["PackTelemetry", "TelemetryAligner", "build_telemetry"]

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
        # per-signal (sparse) storage: only the rows carrying each signal are touched
        mux, mux_present = m.dense(group.mux)
        k = len(group.signals)
        for slot, name in enumerate(group.signals):
            rows, v = m.sparse(name)
            if rows is None:
                rows = np.arange(len(v))
            keep = mux_present[rows]
            if not keep.all():
                rows, v = rows[keep], v[keep]
            ts.append(m.timestamps[rows])
            idx.append(np.rint(mux[rows]).astype(np.int64) * k + slot + group.first_cell)
            vals.append(v)
    else:
        names = group.signal_names() if isinstance(group, SignalGroup) else group
        for i, name in enumerate(names):
            t, v = table.signal(name)
            backwards += int(count_backwards(t))
            ts.append(t)
            idx.append(np.full(len(t), i, np.int64))
            vals.append(v)
    return (np.concatenate(ts), np.concatenate(idx), np.concatenate(vals), backwards)


def _describe(group: SignalGroup, i: int) -> str:
    if group.is_mux:
        k = len(group.signals)
        j = i - group.first_cell
        return (f"{group.message}.{group.signals[j % k]} with {group.mux}={j // k}"
                if j >= 0 else f"index {i}")
    return group.signal_names()[i]


class _GroupAligner:
    """Carried state of one aligned group (cells, sensors, flags or the pack voltage)."""

    def __init__(self, source, count: int, label: str, stale_after_s: float | None):
        self.source = source            # SignalGroup or list of signal names
        self.count = count
        self.label = label
        self.stale_after = stale_after_s if stale_after_s is not None else STALE_MIN_S
        self.frozen = stale_after_s is not None
        self.cur_v = np.full(count, np.nan)
        self.cur_t = np.full(count, -np.inf)
        self.n_seen = np.zeros(count, np.int64)
        self.first_t = np.full(count, np.inf)
        self.last_t = np.full(count, -np.inf)
        self.pending = (np.zeros(0), np.zeros(0, np.int64), np.zeros(0))
        self.backwards = 0
        self.out_of_range = 0

    def _update_stale(self, t, idx):
        """Stale threshold from the refresh interval seen so far; frozen once every index has
        at least 10 events, so a long log and its chunks agree after the first seconds."""
        if self.frozen or len(t) == 0:
            return
        np.minimum.at(self.first_t, idx, t)
        np.maximum.at(self.last_t, idx, t)
        n = self.n_seen
        ok = n > 1
        if ok.any():
            interval = np.median((self.last_t[ok] - self.first_t[ok]) / (n[ok] - 1))
            self.stale_after = max(STALE_MIN_S, STALE_INTERVALS * float(interval))
        if n.min() >= 10:
            self.frozen = True

    def push(self, table: SignalTable, target_abs: np.ndarray):
        t, idx, v, backwards = _group_events(table, self.source)
        self.backwards += backwards
        inside = (idx >= 0) & (idx < self.count)
        self.out_of_range += int(np.count_nonzero(~inside))
        t, idx, v = t[inside], idx[inside], v[inside].astype(np.float64)
        pt, pi, pv = self.pending
        if len(pt):
            t, idx, v = np.concatenate((pt, t)), np.concatenate((pi, idx)), np.concatenate((pv, v))
        order = np.argsort(t, kind="stable")
        t, idx, v = t[order], idx[order], v[order]
        n_t = len(target_abs)
        out = np.empty((n_t, self.count))
        stale = np.empty((n_t, self.count), dtype=bool)
        # the threshold uses the events up to this chunk's end, before the kernel consumes them
        upto = np.searchsorted(t, target_abs[-1], side="right") if n_t else 0
        self.n_seen += np.bincount(idx[:upto], minlength=self.count)
        self._update_stale(t[:upto], idx[:upto])
        used = zoh_events_carry(target_abs, t, idx, v, np.full(self.count, self.stale_after),
                                self.cur_v, self.cur_t, out, stale)
        self.pending = (t[used:], idx[used:], v[used:])
        return out, stale

    @property
    def seen(self) -> np.ndarray:
        """Indices with at least one event so far (applied, or pending after the last sample)."""
        seen = self.n_seen > 0
        seen[self.pending[1]] = True
        return seen


class TelemetryAligner:
    """Incremental alignment: push the decoded signals of consecutive chunks, get telemetry
    rows for each chunk's current samples, with the held values carried across chunks.

    Pushing a whole log at once gives exactly :func:`build_telemetry`'s result; pushing it in
    chunks gives the same rows once each group's stale threshold is settled (after every
    index has been refreshed 10 times; before that the threshold is estimated from the
    events seen so far). Values that arrive after the current sample they belong to are held
    back until the next current sample; a current sample older than one already emitted
    (time going backwards across chunks) is dropped and counted in
    ``notes["current_dropped_backwards"]``.

    Parameters
    ----------
    layout
        The validated layout.
    database
        Optional cantools database (sizes a multiplexed temperature group without ``count``).

    Examples
    --------
    >>> al = TelemetryAligner(layout, db)                          # doctest: +SKIP
    >>> for frames in iter_log("drive.blf"):                       # doctest: +SKIP
    ...     tel = al.push(decode(frames, cdb))
    >>> al.finish()                                                 # doctest: +SKIP
    """

    def __init__(self, layout: Layout, database=None):
        self.layout = layout
        self.database = database
        self.t0: float | None = None
        self.t_last = -np.inf
        self.notes: dict = {"time_backwards": {"current": 0}, "stale_after_s": {},
                            "decode": {"decoded": 0, "unknown_id": 0, "too_short": 0,
                                       "error_or_remote": 0}}
        self._gap = {"count": 0, "longest_s": 0.0, "threshold_s": None}
        self._not_finite = 0
        self._dropped = 0
        self._dt_median: float | None = None
        self._stale_sum = 0
        self._rows = 0
        self.source = None
        S = layout.cells_in_series
        self.groups: dict[str, _GroupAligner] = {}
        if layout.pack_voltage_signal:
            self.groups["pack_voltage"] = _GroupAligner([layout.pack_voltage_signal], 1,
                                                        "pack_voltage", None)
        self.groups["cell_voltage"] = _GroupAligner(layout.cell_voltage, S, "cell_voltage",
                                                    layout.cell_voltage.stale_after_s)
        self._temp_group = layout.cell_temperature
        if layout.balancing_flags is not None:
            self.groups["balancing_flags"] = _GroupAligner(
                layout.balancing_flags, S, "balancing_flags", layout.balancing_flags.stale_after_s)

    def _ensure_temperature(self, table: SignalTable):
        tg = self._temp_group
        if tg is None or "cell_temperature" in self.groups:
            return
        k = tg.count
        if k < 0 and self.database is not None:
            k = self.layout.mux_cell_count(tg, self.database)
        if k <= 0:
            _, idx, _, _ = _group_events(table, tg)
            k = int(idx.max()) + 1 if len(idx) else 0
        if k > 0:
            self.groups["cell_temperature"] = _GroupAligner(tg, k, "cell_temperature",
                                                            tg.stale_after_s)

    def push(self, signals: SignalTable) -> PackTelemetry:
        """Align one chunk; returns the telemetry rows of its current samples (maybe none)."""
        where = _where(signals)
        self.source = self.source or signals.source
        for k, v in vars(signals.counts).items():
            self.notes["decode"][k] += v
        t_cur, i_cur = signals.signal(self.layout.current_signal)
        self.notes["time_backwards"]["current"] += int(count_backwards(t_cur))
        if len(t_cur) and t_cur[0] < self.t_last:
            self.notes["time_backwards"]["current"] += 1
        order = np.argsort(t_cur, kind="stable")
        t_cur, i_cur = t_cur[order], i_cur[order]
        keep = np.isfinite(i_cur)
        self._not_finite += int((~keep).sum())
        late = t_cur < self.t_last
        self._dropped += int((late & keep).sum())
        keep &= ~late
        if not keep.all():
            t_cur, i_cur = t_cur[keep], i_cur[keep]
        if self.t0 is None and len(t_cur):
            self.t0 = float(t_cur[0])
        if len(t_cur):
            prev = self.t_last
            steps = np.diff(t_cur) if not np.isfinite(prev) else np.diff(t_cur, prepend=prev)
            if self._dt_median is None and len(steps):
                self._dt_median = float(np.median(steps))
            if len(steps) and self._dt_median is not None:
                limit = max(1.0, GAP_INTERVALS * self._dt_median)
                self._gap["threshold_s"] = limit
                big = steps[steps > limit]
                self._gap["count"] += int(len(big))
                if len(big):
                    self._gap["longest_s"] = max(self._gap["longest_s"], float(big.max()))
            self.t_last = float(t_cur[-1])
        self._ensure_temperature(signals)
        aligned = {name: g.push(signals, t_cur) for name, g in self.groups.items()}
        cv, cv_stale = aligned["cell_voltage"]
        self._stale_sum += int(cv_stale.sum())
        self._rows += len(t_cur)
        pv = aligned.get("pack_voltage")
        temps = aligned.get("cell_temperature")
        flags = aligned.get("balancing_flags")
        bal = None
        if flags is not None and self.groups["balancing_flags"].seen.any():
            bal = (flags[0] != 0) & ~flags[1]      # stale entries are NaN (!= 0) but masked
        if temps is not None and not self.groups["cell_temperature"].seen.any():
            temps = None
        t0 = self.t0 if self.t0 is not None else 0.0
        return PackTelemetry(
            time=t_cur - t0, t0=t0, current=i_cur * self.layout.current_sign,
            cell_voltage=cv, cell_voltage_stale=cv_stale,
            pack_voltage=pv[0][:, 0] if pv is not None and self.groups["pack_voltage"].seen[0]
            else None,
            cell_temperature=None if temps is None else temps[0],
            cell_temperature_stale=None if temps is None else temps[1],
            balancing=bal, notes=self._current_notes(), source=self.source or where.rstrip(": "))

    def _current_notes(self) -> dict:
        notes = self.notes
        for name, g in self.groups.items():
            notes["time_backwards"][name] = g.backwards
            notes["stale_after_s"][name] = g.stale_after
            if g.out_of_range:
                notes.setdefault("out_of_range_index", {})[name] = g.out_of_range
        if self._not_finite:
            notes["current_not_finite"] = self._not_finite
        if self._dropped:
            notes["current_dropped_backwards"] = self._dropped
        if self._gap["threshold_s"] is not None:
            notes["current_gaps"] = dict(self._gap)
        cells = self._rows * self.layout.cells_in_series
        notes["cell_voltage_stale_fraction"] = self._stale_sum / cells if cells else 0.0
        if self._temp_group is not None and "cell_temperature" not in self.groups:
            notes["cell_temperature_missing"] = True
        return notes

    def finish(self) -> dict:
        """Check what the whole stream must satisfy; returns the final notes.

        Raises
        ------
        TelemetryError
            No current sample at all, or a cell whose voltage never appeared.
        """
        where = f"{self.source}: " if self.source else ""
        if self.t0 is None:
            d = self.notes["decode"]
            if self._not_finite:
                raise TelemetryError(f"{where}every value of {self.layout.current_signal!r} is "
                                     f"NaN or inf")
            raise TelemetryError(
                f"{where}no frame carries the current signal {self.layout.current_signal!r} "
                f"({d['decoded']} frames decoded, {d['unknown_id']} with IDs the database does "
                f"not know, {d['too_short']} too short); is this the right log and database?")
        seen = self.groups["cell_voltage"].seen
        if not seen.all():
            missing = np.flatnonzero(~seen)
            names = ", ".join(f"cell {i + 1} ({_describe(self.layout.cell_voltage, i)})"
                              for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise TelemetryError(f"{where}no voltage in the log for {names}{more}")
        return self._current_notes()


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
    aligner = TelemetryAligner(layout, database)
    tel = aligner.push(signals)
    tel.notes = aligner.finish()
    return tel


def concat_telemetry(parts) -> PackTelemetry:
    """Join telemetry chunks of one log (from :class:`TelemetryAligner` pushes) in time order."""
    parts = [p for p in parts if len(p)] or list(parts)[:1]
    if len(parts) == 1:
        return parts[0]

    def cat(name):
        arrays = [getattr(p, name) for p in parts]
        if any(a is None for a in arrays):
            return None
        return np.concatenate(arrays)

    last = parts[-1]
    return PackTelemetry(
        time=cat("time"), t0=parts[0].t0, current=cat("current"),
        cell_voltage=cat("cell_voltage"), cell_voltage_stale=cat("cell_voltage_stale"),
        pack_voltage=cat("pack_voltage"), cell_temperature=cat("cell_temperature"),
        cell_temperature_stale=cat("cell_temperature_stale"), balancing=cat("balancing"),
        notes=last.notes, source=last.source)
