"""Cell imbalance and what balancing would take, from per-cell SoC and capacity.

Everything is computed at one instant (by default the end of the log) from each cell's SoC
``s_i`` (fraction) and capacity ``C_i`` (Ah). Units are explicit in every name: charge in Ah,
time in h, energy in Wh, SoC as a fraction (foxBMS issue #91 was a unit slip in exactly this
computation; the tests check hand-computed cases).

Definitions (per cell ``q_i = s_i C_i``, the charge it holds)::

    soc_offset_i        = s_i - min_j s_j                     (fraction)
    charge_offset_ah_i  = q_i - min_j q_j                     (Ah)
    dischargeable_ah    = min_i q_i                           (first cell empty)
    chargeable_ah       = min_i (C_i - q_i)                   (first cell full)
    usable_capacity_ah  = dischargeable_ah + chargeable_ah    (what one full cycle can use now)
    balanced_capacity_ah = min_i C_i                          (perfectly balanced string)
    recoverable_capacity_ah = balanced - usable

Plans (each restores the usable capacity to ``balanced_capacity_ah``):

- **passive** (bleed resistors; can only remove charge): the least charge to bleed. Keeping
  the dischargeable charge ``D = min q``, a cell must leave headroom ``H = min C - D``, so it
  bleeds ``max(0, q_i - (C_i - H))``. Time at the layout's ``bleed_current_a``:
  ``bleed_ah / bleed_current_a`` (h, cells bleed in parallel, so the plan takes the longest);
  energy dissipated: ``C_i * integral of OCV(s) ds`` over the SoC the cell bleeds through (Wh;
  the terminal voltage differs from the OCV by ``R0 * bleed_current_a``, under 1 mV).
- **active** (ideal lossless charge transfer between cells): the least charge moved. A cell may
  hold ``q_i' in [D, C_i - min C + D]``; the plan picks ``D`` so that the charge given by cells
  above their window equals the charge taken by cells below it (exactly, over the piecewise
  linear balance), and moves ``sum max(0, q_i - q_i')``. Real converters lose 5-20 %.
- **top** and **bottom** targets, as BMSs commonly implement them: top balancing aligns every
  cell's headroom ``C_i - q_i`` (they reach full together), bottom balancing every cell's charge
  ``q_i`` (they reach empty together); passive versions bleed down to the cell with the most
  headroom / least charge, active versions move charge to the common mean. With equal
  capacities top, bottom and the minimal passive plan coincide.

Observed balancing duty (when the log carries per-cell balancing flags): the fraction of the
log's time each cell was bleeding, each flag held until the next row, and the charge that
implies at ``bleed_current_a``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .cell import Chemistry, get_chemistry
from .errors import EstimationError

__all__ = ["BalancingPlan", "plan_balancing", "estimate_balancing", "balancing_duty",
           "ocv_energy_wh"]


def ocv_energy_wh(chemistry, capacity_ah, soc_from, soc_to) -> np.ndarray:
    """Energy (Wh) a cell delivers at its OCV while its SoC goes from ``soc_from`` to ``soc_to``.

    ``C * integral_{soc_to}^{soc_from} OCV(s) ds`` with the piecewise-linear table (exact,
    including its linear extrapolation outside the table).

    Examples
    --------
    >>> toy = Chemistry("toy", [0.0, 1.0], [3.0, 4.0])
    >>> round(float(ocv_energy_wh(toy, 50.0, 0.6, 0.5)), 6)   # 50 * (0.3 + 0.055)
    17.75
    """
    chem = get_chemistry(chemistry)
    ts, tv = chem.soc, chem.ocv_v
    slope = np.diff(tv) / np.diff(ts)
    seg = np.diff(ts) * (tv[:-1] + tv[1:]) / 2.0
    g = np.concatenate(([0.0], np.cumsum(seg)))

    def prim(s):
        s = np.asarray(s, dtype=np.float64)
        j = np.clip(np.searchsorted(ts, s, side="right") - 1, 0, ts.size - 2)
        d = s - ts[j]
        return g[j] + tv[j] * d + slope[j] * d * d / 2.0

    return np.asarray(capacity_ah, dtype=np.float64) * (prim(soc_from) - prim(soc_to))


def balancing_duty(time_s, flags) -> np.ndarray:
    """Fraction of time each cell was bleeding, each row's flag held until the next row.

    Parameters
    ----------
    time_s
        [T] row times (s), non-decreasing.
    flags
        [T, S] bool (or 0/1) balancing flags.

    Returns
    -------
    float64 [S]
        Time-weighted duty 0..1 (the last row carries no duration); zeros for fewer than two
        rows.

    Examples
    --------
    >>> balancing_duty([0.0, 1.0, 2.0, 4.0], [[1, 0], [1, 1], [0, 1], [0, 1]]).tolist()
    [0.5, 0.75]
    """
    t = np.asarray(time_s, dtype=np.float64)
    f = np.asarray(flags)
    if f.ndim != 2 or f.shape[0] != t.shape[0]:
        raise EstimationError(f"balancing flags {f.shape} must be [T, S] with T = {t.shape[0]}")
    if t.shape[0] < 2:
        return np.zeros(f.shape[1])
    dt = np.diff(t)
    total = dt.sum()
    if not total > 0:
        return np.zeros(f.shape[1])
    return (f[:-1] != 0).T.astype(np.float64) @ dt / total


def _usable(q, cap):
    return float(np.min(q) + np.min(cap - q))


def _active_min_move(q: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Target charges q' (same total) of the least-transfer plan reaching min(cap) usable."""
    w = cap - cap.min()                       # window width of each cell
    total = q.sum()
    n = q.size
    d_lo = (total - w.sum()) / n              # sum of the window tops >= total
    d_hi = total / n                          # sum of the window bottoms <= total

    def f(d):                                 # given minus taken; decreasing in d
        return np.maximum(q - (w + d), 0.0).sum() - np.maximum(d - q, 0.0).sum()

    pts = np.unique(np.clip(np.concatenate((q, q - w, [d_lo, d_hi])), d_lo, d_hi))
    vals = np.array([f(d) for d in pts])
    k = int(np.argmax(vals <= 0.0)) if np.any(vals <= 0.0) else pts.size - 1
    if k == 0 or vals[k] == 0.0:
        d = pts[k]
    else:                                     # f is linear between breakpoints: exact root
        d0, d1, f0, f1 = pts[k - 1], pts[k], vals[k - 1], vals[k]
        d = d0 + (d1 - d0) * f0 / (f0 - f1)
    target = np.clip(q, d, w + d)
    # the root balances given and taken up to rounding; put any residue on the roomiest cell
    resid = total - target.sum()
    target[np.argmax(w + d - target)] += resid
    return target


@dataclass
class BalancingPlan:
    """Imbalance of a string at one instant and what balancing it would take.

    Per-cell arrays [S] and scalars; see the module docstring for the definitions. Names carry
    units (``_ah``, ``_h``, ``_wh``, ``_a``, ``_s``); SoC values and ``*_fraction`` are 0..1.
    Transfers are signed: positive = the cell receives charge.
    """

    # per cell
    soc: np.ndarray
    capacity_ah: np.ndarray
    charge_ah: np.ndarray
    soc_offset: np.ndarray
    charge_offset_ah: np.ndarray
    passive_bleed_ah: np.ndarray
    passive_time_h: np.ndarray
    passive_energy_wh: np.ndarray
    active_transfer_ah: np.ndarray
    top_bleed_ah: np.ndarray
    bottom_bleed_ah: np.ndarray
    top_transfer_ah: np.ndarray
    bottom_transfer_ah: np.ndarray
    # scalars
    time_s: float
    bleed_current_a: float
    dischargeable_ah: float
    chargeable_ah: float
    usable_soc: float
    usable_capacity_ah: float
    balanced_capacity_ah: float
    recoverable_capacity_ah: float
    usable_capacity_fraction: float
    recoverable_capacity_fraction: float
    soc_spread: float
    passive_bleed_total_ah: float
    passive_duration_h: float
    passive_energy_total_wh: float
    passive_usable_capacity_ah: float
    active_moved_ah: float
    active_usable_capacity_ah: float
    top_bleed_total_ah: float
    top_duration_h: float
    top_energy_total_wh: float
    top_moved_ah: float
    top_usable_capacity_ah: float
    bottom_bleed_total_ah: float
    bottom_duration_h: float
    bottom_energy_total_wh: float
    bottom_moved_ah: float
    bottom_usable_capacity_ah: float
    # observed (None without balancing flags in the log)
    duty: np.ndarray | None = None
    observed_bleed_ah: np.ndarray | None = None
    observed_duration_s: float | None = None

    @property
    def n_cells(self) -> int:
        return int(self.soc.shape[0])

    def most_imbalanced(self, n: int = 5) -> np.ndarray:
        """0-based indices of the ``n`` cells farthest from the median SoC, farthest first.

        Examples
        --------
        >>> plan_balancing([0.5, 0.9, 0.52, 0.3], [50.0] * 4).most_imbalanced(2).tolist()
        [1, 3]
        """
        dev = np.abs(self.soc - np.median(self.soc))
        return np.argsort(-dev, kind="stable")[:n]

    def to_group(self) -> tuple[dict, dict]:
        """``(arrays, attrs)`` for an HDF5 group such as ``/balancing``.

        ``arrays`` maps names to the per-cell float64 arrays [S] (and ``duty``,
        ``observed_bleed_ah`` when known); ``attrs`` maps names to Python floats.

        Examples
        --------
        >>> arrays, attrs = plan_balancing([0.5, 0.6], [50.0, 50.0]).to_group()
        >>> arrays["passive_bleed_ah"].tolist(), attrs["recoverable_capacity_ah"]
        ([0.0, 5.0], 5.0)
        """
        arrays, attrs = {}, {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, np.ndarray):
                arrays[f.name] = np.asarray(v, dtype=np.float64)
            else:
                attrs[f.name] = float(v)
        return arrays, attrs


def plan_balancing(soc, capacity_ah, *, bleed_current_a: float = 0.1, chemistry="nmc",
                   time_s: float = float("nan"), balancing_flags=None,
                   flag_time_s=None, observed_duty=None,
                   observed_duration_s: float | None = None) -> BalancingPlan:
    """Imbalance and balancing plans from per-cell SoC and capacity at one instant.

    Parameters
    ----------
    soc
        [S] cell SoC (fractions 0..1).
    capacity_ah
        [S] cell capacities (Ah), or a scalar for identical cells.
    bleed_current_a
        Passive balancing current per cell (A), the layout's ``[balancing] bleed_current_a``.
    chemistry
        For the OCV in the dissipated energy (built-in name, CSV path or Chemistry).
    time_s
        The instant the SoC refers to (s), stored in the plan.
    balancing_flags, flag_time_s
        Optional [T, S] per-cell balancing flags and their [T] row times (s): the observed
        duty per cell.
    observed_duty, observed_duration_s
        Alternatively, a duty [S] already computed (e.g. accumulated chunk by chunk) over
        ``observed_duration_s`` seconds.

    Returns
    -------
    BalancingPlan

    Raises
    ------
    EstimationError
        SoC not finite or outside 0..1 (a percent given?), capacities not positive, shapes
        that disagree, a bleed current that is not positive.

    Examples
    --------
    Three 50 Ah cells at 50, 60 and 55 % (hand-computed in tests/test_balancing.py):

    >>> p = plan_balancing([0.50, 0.60, 0.55], 50.0, bleed_current_a=0.1)
    >>> p.usable_capacity_ah, p.recoverable_capacity_ah, p.passive_bleed_ah.round(9).tolist()
    (45.0, 5.0, [0.0, 5.0, 2.5])
    >>> round(p.passive_duration_h, 9), round(p.active_moved_ah, 9)
    (50.0, 2.5)
    """
    s = np.asarray(soc, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise EstimationError(f"soc must be a non-empty 1-D array [S], got shape {s.shape}")
    cap = np.broadcast_to(np.asarray(capacity_ah, dtype=np.float64), s.shape).copy() \
        if np.ndim(capacity_ah) == 0 else np.asarray(capacity_ah, dtype=np.float64)
    if cap.shape != s.shape:
        raise EstimationError(f"capacity_ah {cap.shape} and soc {s.shape} must match")
    if not np.all(np.isfinite(s)):
        raise EstimationError(f"soc of cell {int(np.flatnonzero(~np.isfinite(s))[0]) + 1} is "
                              f"not finite")
    if np.any(s < 0) or np.any(s > 1):
        j = int(np.flatnonzero((s < 0) | (s > 1))[0])
        hint = " (percent? give SoC as a fraction 0..1)" if 1 < s[j] <= 100 else ""
        raise EstimationError(f"soc of cell {j + 1} is {s[j]}, outside 0..1{hint}")
    if not np.all(np.isfinite(cap) & (cap > 0)):
        raise EstimationError("capacity_ah must be finite and > 0 for every cell")
    if not (np.isfinite(bleed_current_a) and bleed_current_a > 0):
        raise EstimationError(f"bleed_current_a must be > 0 A, got {bleed_current_a}")
    chem = get_chemistry(chemistry) if not isinstance(chemistry, Chemistry) else chemistry

    q = s * cap
    d_now = float(np.min(q))
    u_now = float(np.min(cap - q))
    usable = d_now + u_now
    balanced = float(np.min(cap))

    def bleed_plan(bleed):
        bleed = np.maximum(bleed, 0.0)
        time_h = bleed / bleed_current_a
        energy = ocv_energy_wh(chem, cap, s, s - bleed / cap)
        return bleed, time_h, energy, _usable(q - bleed, cap)

    # passive, least bleed: keep D = min q, leave headroom H = min C - D everywhere
    head = balanced - d_now
    p_bleed, p_time, p_energy, p_usable = bleed_plan(q - (cap - head))
    # top: align headroom to the largest; bottom: align charge to the smallest
    t_bleed, t_time, t_energy, t_usable = bleed_plan((cap - q).max() - (cap - q))
    b_bleed, b_time, b_energy, b_usable = bleed_plan(q - q.min())
    # active
    a_target = _active_min_move(q, cap)
    a_transfer = a_target - q
    top_target = cap - (cap.sum() - q.sum()) / q.size
    bottom_target = np.full(q.size, q.mean())
    top_transfer = top_target - q
    bottom_transfer = bottom_target - q

    duty = observed = obs_dur = None
    if observed_duty is not None:
        duty = np.asarray(observed_duty, dtype=np.float64)
        if duty.shape != s.shape:
            raise EstimationError(f"observed_duty describes {duty.shape[0]} cells, soc {s.size}")
        obs_dur = float(observed_duration_s or 0.0)
        observed = duty * obs_dur * bleed_current_a / 3600.0
    elif balancing_flags is not None:
        if flag_time_s is None:
            raise EstimationError("balancing_flags need flag_time_s (the row times)")
        ft = np.asarray(flag_time_s, dtype=np.float64)
        duty = balancing_duty(ft, balancing_flags)
        if duty.shape != s.shape:
            raise EstimationError(f"balancing flags describe {duty.shape[0]} cells, soc {s.size}")
        obs_dur = float(ft[-1] - ft[0]) if ft.size > 1 else 0.0
        observed = duty * obs_dur * bleed_current_a / 3600.0

    tot = d_now + u_now
    return BalancingPlan(
        soc=s.copy(), capacity_ah=cap.copy(), charge_ah=q, soc_offset=s - s.min(),
        charge_offset_ah=q - q.min(),
        passive_bleed_ah=p_bleed, passive_time_h=p_time, passive_energy_wh=p_energy,
        active_transfer_ah=a_transfer, top_bleed_ah=t_bleed, bottom_bleed_ah=b_bleed,
        top_transfer_ah=top_transfer, bottom_transfer_ah=bottom_transfer,
        time_s=float(time_s), bleed_current_a=float(bleed_current_a), dischargeable_ah=d_now,
        chargeable_ah=u_now, usable_soc=d_now / tot if tot > 0 else float("nan"),
        usable_capacity_ah=usable, balanced_capacity_ah=balanced,
        recoverable_capacity_ah=balanced - usable, usable_capacity_fraction=usable / balanced,
        recoverable_capacity_fraction=(balanced - usable) / balanced,
        soc_spread=float(s.max() - s.min()),
        passive_bleed_total_ah=float(p_bleed.sum()), passive_duration_h=float(p_time.max()),
        passive_energy_total_wh=float(p_energy.sum()), passive_usable_capacity_ah=p_usable,
        active_moved_ah=float(np.maximum(-a_transfer, 0.0).sum()),
        active_usable_capacity_ah=_usable(a_target, cap),
        top_bleed_total_ah=float(t_bleed.sum()), top_duration_h=float(t_time.max()),
        top_energy_total_wh=float(t_energy.sum()),
        top_moved_ah=float(np.maximum(-top_transfer, 0.0).sum()),
        top_usable_capacity_ah=t_usable,
        bottom_bleed_total_ah=float(b_bleed.sum()), bottom_duration_h=float(b_time.max()),
        bottom_energy_total_wh=float(b_energy.sum()),
        bottom_moved_ah=float(np.maximum(-bottom_transfer, 0.0).sum()),
        bottom_usable_capacity_ah=b_usable,
        duty=duty, observed_bleed_ah=observed, observed_duration_s=obs_dur)


def estimate_balancing(result, *, layout=None, telemetry=None, at: int = -1,
                       bleed_current_a: float | None = None) -> BalancingPlan:
    """Balancing plan from a SoC result (by default at its last row).

    Parameters
    ----------
    result
        A :class:`packbms.soc.SocResult` (its ``soc``, ``capacity_ah`` and chemistry are used).
    layout
        The layout, for ``bleed_current_a`` (default 0.1 A without a layout).
    telemetry
        The :class:`~packbms.telemetry.PackTelemetry`, for the observed duty when it carries
        balancing flags.
    at
        Row of ``result`` to plan from (default the last).
    bleed_current_a
        Overrides the layout's value.

    Returns
    -------
    BalancingPlan

    Raises
    ------
    EstimationError
        An empty result or a row out of range.

    Examples
    --------
    >>> res = estimate_soc(tel, layout=lay)                                    # doctest: +SKIP
    >>> plan = estimate_balancing(res, layout=lay, telemetry=tel)               # doctest: +SKIP
    >>> arrays, attrs = plan.to_group()                                         # doctest: +SKIP
    """
    n_t = result.soc.shape[0]
    if n_t == 0:
        raise EstimationError("the SoC result has no rows to plan balancing from")
    if not -n_t <= at < n_t:
        raise EstimationError(f"row {at} is out of range for a result of {n_t} rows")
    if bleed_current_a is None:
        bleed_current_a = layout.bleed_current_a if layout is not None else 0.1
    flags = ft = None
    if telemetry is not None and getattr(telemetry, "balancing", None) is not None:
        flags, ft = telemetry.balancing, telemetry.time
    return plan_balancing(result.soc[at], result.capacity_ah, bleed_current_a=bleed_current_a,
                          chemistry=result.params.chemistry, time_s=float(result.time_s[at]),
                          balancing_flags=flags, flag_time_s=ft)
