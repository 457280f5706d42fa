"""Trends across the logs of one pack: capacity fade, resistance growth, parked self-discharge.

A fleet run (:mod:`packbms.fleet`) gives, per log, a summary row and a small per-cell record
(:func:`packbms.fleet.cell_record`: each cell's SoC and its 1-sigma at the start and at the end of
the log, capacity and R0, and the absolute times of those SoC samples). :func:`compute_trends`
groups the logs by pack id, orders them by start time and derives, per log:

- **capacity fade**: ``1 - C_k / C_0`` with ``C`` the pack's mean cell capacity of log k and of
  the pack's first log; **resistance growth**: ``R_k / R_0 - 1`` with the mean cell R0. Both use
  the identified values (``/quality``) when the results carry them, else the nominal ones (the
  ``capacity_source`` column says which; nominal values give zero fade by construction).
- **self-discharge over the park before the log** (between the end of log k-1 and the start of
  log k, ``dt`` hours)::

      d_i      = soc_start_i(k) - soc_end_i(k-1)              SoC change of cell i while parked
      I_pack   = -mean_i(d_i) * mean_i(C_i) / dt              A, common drain (self-discharge of
                                                                  the average cell + BMS/parasitic)
      I_rel_i  = -(d_i - mean_j d_j) * C_i / dt               A, how much faster cell i lost
                                                                  charge than the pack's mean
      sigma_i  = sqrt(std_end_i(k-1)^2 + std_start_i(k)^2) * C_i / dt

  A cell is **flagged** when its deviation from the median ``I_rel`` exceeds both
  ``z_threshold`` robust standard deviations of the pack (1.4826 * MAD over its cells) and
  ``sigma_threshold`` times its own ``sigma_i`` (so short parks, where the SoC uncertainty
  dominates, flag nothing). Passive balancing while parked also drains cells and looks the same;
  a BMS that balances when parked needs its balancing log to tell the two apart.

The start SoC of a log is taken at the end of its initial rest (the EKF has converged on the
relaxed voltage there) and the end SoC at its last row; see :func:`packbms.fleet.cell_record`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TREND_COLUMNS", "compute_trends", "parked_self_discharge", "ParkedDrain"]

#: Columns of the trends table: (name, kind, unit, description); kind in "str", "float", "int".
TREND_COLUMNS = [
    ("pack_id", "str", "", "pack or vehicle id"),
    ("log", "str", "", "the log"),
    ("log_index", "int", "", "0-based position of the log in the pack's time order"),
    ("n_logs", "int", "", "logs of this pack in the run (failed ones excluded)"),
    ("start_unix", "float", "s", "absolute start time of the log (Unix s; NaN when unknown)"),
    ("start", "str", "", "start time, ISO 8601 UTC"),
    ("days_since_first", "float", "d", "days since the pack's first log started"),
    ("capacity_source", "str", "", "'quality' (identified) or 'nominal'"),
    ("capacity_ah_mean", "float", "A.h", "mean cell capacity"),
    ("capacity_fade_fraction", "float", "1", "1 - capacity / capacity of the first log"),
    ("r0_mean_ohm", "float", "ohm", "mean cell R0"),
    ("resistance_growth_fraction", "float", "1", "R0 / R0 of the first log - 1"),
    ("parked_h", "float", "h", "time parked since the previous log of the pack"),
    ("pack_soc_change_parked", "float", "1", "mean cell SoC change over the park"),
    ("self_discharge_pack_a", "float", "A", "common drain over the park (mean cell)"),
    ("self_discharge_rel_max_a", "float", "A",
     "largest self-discharge relative to the pack mean over the park"),
    ("self_discharge_rel_max_cell", "int", "", "1-based cell with that largest value (0: none)"),
    ("self_discharge_flagged", "str", "", "1-based cells flagged over the park, space-separated"),
]


class ParkedDrain:
    """Self-discharge over one park, per cell (see the module docstring for the definitions).

    Attributes
    ----------
    parked_h : float
    soc_change : float64 [S]
        ``d_i``.
    pack_a : float
        ``I_pack``.
    rel_a, sigma_a : float64 [S]
        ``I_rel_i`` and its 1-sigma.
    flagged : bool [S]
    """

    def __init__(self, parked_h, soc_change, pack_a, rel_a, sigma_a, flagged):
        self.parked_h = parked_h
        self.soc_change = soc_change
        self.pack_a = pack_a
        self.rel_a = rel_a
        self.sigma_a = sigma_a
        self.flagged = flagged


def parked_self_discharge(before: dict, after: dict, *, z_threshold: float = 5.0,
                          sigma_threshold: float = 3.0) -> ParkedDrain | None:
    """Self-discharge of each cell over the park between two logs of the same pack.

    Parameters
    ----------
    before, after
        Cell records (:func:`packbms.fleet.cell_record`) of the earlier and the later log:
        ``t_end_unix``/``t_start_unix`` (s), ``soc_end``/``soc_start`` [S], their ``*_std``
        [S], and ``capacity_ah`` [S] (of ``after`` is used).
    z_threshold, sigma_threshold
        Flagging rule (module docstring).

    Returns
    -------
    ParkedDrain or None
        None when the park cannot be measured: unknown absolute times, logs that overlap,
        different cell counts or non-finite SoC.

    Examples
    --------
    Four 50 Ah cells parked 10 h; cell 3 lost 2 points more than the others (1 Ah = 0.1 A):

    >>> rec = lambda soc, t: dict(t_start_unix=t, t_end_unix=t, soc_start=np.array(soc),
    ...     soc_end=np.array(soc), soc_start_std=np.full(4, 1e-3), soc_end_std=np.full(4, 1e-3),
    ...     capacity_ah=np.full(4, 50.0))
    >>> d = parked_self_discharge(rec([0.5, 0.5, 0.5, 0.5], 0.0),
    ...                           rec([0.49, 0.49, 0.47, 0.49], 36000.0))
    >>> round(d.parked_h, 3), np.round(d.rel_a, 3).tolist(), d.flagged.tolist()
    (10.0, [-0.025, -0.025, 0.075, -0.025], [False, False, True, False])
    """
    t0, t1 = float(before.get("t_end_unix", math.nan)), float(after.get("t_start_unix", math.nan))
    s0, s1 = np.asarray(before["soc_end"], float), np.asarray(after["soc_start"], float)
    if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0) or s0.shape != s1.shape \
            or s0.size == 0 or not (np.isfinite(s0).all() and np.isfinite(s1).all()):
        return None
    dt_h = (t1 - t0) / 3600.0
    cap = np.asarray(after["capacity_ah"], float)
    d = s1 - s0
    rel = -(d - d.mean()) * cap / dt_h
    pack_a = float(-d.mean() * cap.mean() / dt_h)
    sig = np.hypot(np.asarray(before["soc_end_std"], float),
                   np.asarray(after["soc_start_std"], float)) * cap / dt_h
    dev = rel - np.median(rel)
    scale = 1.4826 * np.median(np.abs(dev))
    with np.errstate(invalid="ignore"):
        flagged = (np.abs(dev) > z_threshold * scale) & (np.abs(dev) > sigma_threshold * sig)
    return ParkedDrain(dt_h, d, pack_a, rel, sig, flagged)


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b != 0 else math.nan


def _iso(t: float) -> str:
    if not math.isfinite(t):
        return ""
    import datetime as _dt
    d = _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
    return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def compute_trends(rows: list[dict], records: list[dict | None], *, z_threshold: float = 5.0,
                   sigma_threshold: float = 3.0) -> tuple[list[dict], dict]:
    """Per-pack trends over time from a fleet run's summary rows and cell records.

    Parameters
    ----------
    rows
        Summary rows (:data:`packbms.fleet.SUMMARY_COLUMNS`); failed rows are ignored.
    records
        Cell records aligned with ``rows`` (None for failed logs).
    z_threshold, sigma_threshold
        Self-discharge flagging rule (module docstring).

    Returns
    -------
    (list[dict], dict)
        The trends table (one row per successful log, :data:`TREND_COLUMNS`, ordered by pack id
        then start time) and per-row per-cell arrays ``{"self_discharge_rel_a": [...],
        "self_discharge_sigma_a": [...], "capacity_ah": [...], "r0_ohm": [...]}`` (lists of
        float64 [S] arrays aligned with the table; NaN arrays where a log has no park before
        it).

    Examples
    --------
    >>> table, cells = compute_trends([], [])
    >>> table, sorted(cells)
    ([], ['capacity_ah', 'r0_ohm', 'self_discharge_rel_a', 'self_discharge_sigma_a'])
    """
    packs: dict[str, list[int]] = {}
    for i, (row, rec) in enumerate(zip(rows, records)):
        if row.get("status") == "failed" or rec is None:
            continue
        packs.setdefault(str(row["pack_id"]), []).append(i)
    out: list[dict] = []
    cells = {"self_discharge_rel_a": [], "self_discharge_sigma_a": [], "capacity_ah": [],
             "r0_ohm": []}
    for pack in sorted(packs):
        idx = sorted(packs[pack], key=lambda i: (
            math.inf if not math.isfinite(rows[i].get("start_unix", math.nan))
            else rows[i]["start_unix"], str(rows[i]["log"])))
        first = rows[idx[0]]
        cap0, r00 = first.get("capacity_ah_mean", math.nan), first.get("r0_mean_ohm", math.nan)
        t_first = first.get("start_unix", math.nan)
        for k, i in enumerate(idx):
            row, rec = rows[i], records[i]
            cap, r0 = row.get("capacity_ah_mean", math.nan), row.get("r0_mean_ohm", math.nan)
            n = len(np.asarray(rec["soc_end"]))
            tr = {
                "pack_id": pack, "log": row["log"], "log_index": k, "n_logs": len(idx),
                "start_unix": row.get("start_unix", math.nan),
                "start": _iso(row.get("start_unix", math.nan)),
                "days_since_first": (row.get("start_unix", math.nan) - t_first) / 86400.0,
                "capacity_source": row.get("capacity_source", ""),
                "capacity_ah_mean": cap, "capacity_fade_fraction": 1.0 - _ratio(cap, cap0),
                "r0_mean_ohm": r0, "resistance_growth_fraction": _ratio(r0, r00) - 1.0,
                "parked_h": math.nan, "pack_soc_change_parked": math.nan,
                "self_discharge_pack_a": math.nan, "self_discharge_rel_max_a": math.nan,
                "self_discharge_rel_max_cell": 0, "self_discharge_flagged": "",
            }
            rel = sig = np.full(n, np.nan)
            if k > 0:
                drain = parked_self_discharge(records[idx[k - 1]], rec, z_threshold=z_threshold,
                                              sigma_threshold=sigma_threshold)
                if drain is not None:
                    j = int(np.argmax(drain.rel_a))
                    tr.update(parked_h=drain.parked_h,
                              pack_soc_change_parked=float(drain.soc_change.mean()),
                              self_discharge_pack_a=drain.pack_a,
                              self_discharge_rel_max_a=float(drain.rel_a[j]),
                              self_discharge_rel_max_cell=j + 1,
                              self_discharge_flagged=" ".join(
                                  str(c + 1) for c in np.flatnonzero(drain.flagged)))
                    rel, sig = drain.rel_a, drain.sigma_a
            out.append(tr)
            cells["self_discharge_rel_a"].append(np.asarray(rel, float))
            cells["self_discharge_sigma_a"].append(np.asarray(sig, float))
            cells["capacity_ah"].append(np.asarray(rec["capacity_ah"], float))
            cells["r0_ohm"].append(np.asarray(rec["r0_ohm"], float))
    return out, cells
