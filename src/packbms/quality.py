"""Cell quality: weak cells by robust scores, pack consistency and a pack grade.

Built on :func:`packbms.identify.identify` (per-cell capacity, R0 and self-discharge with their
uncertainties). :func:`assess_quality` returns a :class:`QualityReport` that lists the weak
cells and why, the pack's consistency metrics and a grade, and writes itself to the HDF5
``/quality`` group (:meth:`QualityReport.to_group`). :func:`self_discharge_between` compares two
logs of the same pack (the end of one and the start of the next, parked in between).

Outlier rule (documented, configurable in the layout's ``[quality]`` section)
---------------------------------------------------------------------------------
For each metric ``x`` over the cells where it was identified (capacity, R0, self-discharge
relative to the median cell), with ``med`` the median and ``MAD`` the median absolute
deviation::

    scale = max(1.4826 MAD, floor)          robust z = (x - med) / scale

signed so that the *weak* direction is positive (capacity below the median, R0 or
self-discharge above it). A cell is flagged on that metric when

1. its robust z exceeds ``outlier_z`` (3.5, Iglewicz and Hoaglin's modified z-score), and
2. its deviation is significant against its own uncertainty: ``|x - med| > significance *
   sigma_x`` (3 sigma; ``sigma_x`` the cell's own 1-sigma, :attr:`Identification
   .capacity_cell_std_ah` etc.).

The floors stop a homogeneous pack, whose MAD is tiny, from turning measurement noise into
outliers: capacity 1 % and R0 3 % of the median (``mad_floor_capacity``, ``mad_floor_r0``),
self-discharge 0.5 % of capacity per day (``mad_floor_self_discharge_pct_per_day``). At least
``min_cells`` (5) identified cells are needed for a robust median.

Pack grade
----------
``A`` healthy and consistent; ``B`` at least one outlier or an inconsistent pack (capacity CV
above ``b_capacity_cv`` = 2 %, R0 CV above ``b_r0_cv`` = 10 %); ``C`` a weak cell beyond a C
limit (capacity below ``c_capacity_ratio`` = 0.92 of the median, R0 above ``c_r0_ratio`` = 1.3
times the median, self-discharge above the median by ``c_self_discharge_pct_per_day`` = 2 %
per day) or a pack whose median capacity is below ``c_soh`` = 0.80 of nominal; ``D`` a weak
cell beyond a D limit (``d_capacity_ratio`` 0.80, ``d_r0_ratio`` 2.0,
``d_self_discharge_pct_per_day`` 10) or a median capacity below ``d_soh`` = 0.65 of nominal.
The worst applicable grade wins; ``passed`` is the grade being in ``pass_grades`` (A, B).
Metrics that could not be identified from the log do not grade (the report says so).

Layout keys
-----------
Every threshold above is a key of the ``[quality]`` table, for example::

    [quality]
    outlier_z = 3.5
    c_r0_ratio = 1.25
    pass_grades = ["A", "B", "C"]

:func:`quality_config` parses ``layout.raw.get("quality", {})`` (unknown keys are errors with
near-miss suggestions).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import LayoutError, PackBMSError, closest_names

__all__ = ["QualityConfig", "QualityReport", "WeakCell", "assess_quality", "quality_config",
           "robust_z", "self_discharge_between", "FLAG_CAPACITY", "FLAG_R0",
           "FLAG_SELF_DISCHARGE"]

#: Bits of :attr:`QualityReport.flags`.
FLAG_CAPACITY, FLAG_R0, FLAG_SELF_DISCHARGE = 1, 2, 4
_GRADES = ("A", "B", "C", "D")


@dataclass(frozen=True)
class QualityConfig:
    """Outlier and grade rules (see the module docstring); every field is a ``[quality]``
    layout key."""

    outlier_z: float = 3.5
    significance: float = 3.0
    min_cells: int = 5
    mad_floor_capacity: float = 0.01
    mad_floor_r0: float = 0.03
    mad_floor_self_discharge_pct_per_day: float = 0.5
    b_capacity_cv: float = 0.02
    b_r0_cv: float = 0.10
    c_capacity_ratio: float = 0.92
    c_r0_ratio: float = 1.3
    c_self_discharge_pct_per_day: float = 2.0
    c_soh: float = 0.80
    d_capacity_ratio: float = 0.80
    d_r0_ratio: float = 2.0
    d_self_discharge_pct_per_day: float = 10.0
    d_soh: float = 0.65
    pass_grades: tuple = ("A", "B")

    def check(self, where: str = "QualityConfig") -> "QualityConfig":
        """Validate; returns self. Raises :class:`packbms.errors.LayoutError` naming the key."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "pass_grades":
                if (not isinstance(v, (tuple, list)) or not v
                        or any(g not in _GRADES for g in v)):
                    raise LayoutError(f"{where}: pass_grades = {v!r}: expected a non-empty list "
                                      f"of grades from {list(_GRADES)}")
                continue
            if f.name == "min_cells":
                if isinstance(v, bool) or not isinstance(v, int) or v < 3:
                    raise LayoutError(f"{where}: min_cells = {v!r}: expected an integer >= 3")
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v <= 0:
                raise LayoutError(f"{where}: {f.name} = {v!r}: expected a number > 0")
        for name in ("c_capacity_ratio", "d_capacity_ratio", "c_soh", "d_soh"):
            if getattr(self, name) >= 1.0:
                raise LayoutError(f"{where}: {name} = {getattr(self, name)!r}: expected a "
                                  f"fraction below 1")
        for name in ("c_r0_ratio", "d_r0_ratio"):
            if getattr(self, name) <= 1.0:
                raise LayoutError(f"{where}: {name} = {getattr(self, name)!r}: expected a "
                                  f"factor above 1")
        if self.d_capacity_ratio > self.c_capacity_ratio or self.d_r0_ratio < self.c_r0_ratio \
                or self.d_soh > self.c_soh \
                or self.d_self_discharge_pct_per_day < self.c_self_discharge_pct_per_day:
            raise LayoutError(f"{where}: the D limits must be at least as severe as the C "
                              f"limits")
        return self


def quality_config(raw, *, where: str = "layout [quality]") -> QualityConfig:
    """A :class:`QualityConfig` from the layout's ``[quality]`` table.

    Parameters
    ----------
    raw
        ``layout.raw.get("quality", {})`` (a dict; None or empty gives the defaults).
    where
        Named in error messages (e.g. the layout path).

    Returns
    -------
    QualityConfig

    Raises
    ------
    LayoutError
        Not a table, an unknown key (with near misses), a value of the wrong type or range.

    Examples
    --------
    >>> quality_config({"outlier_z": 4, "pass_grades": ["A"]}).outlier_z
    4
    >>> quality_config({"outlier_zz": 4})                   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packbms.errors.LayoutError: layout [quality]: unknown key 'outlier_zz'; best matches are ...
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LayoutError(f"{where}: expected a table of rules, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(QualityConfig)}
    kw = {}
    for k, v in raw.items():
        if k not in names:
            raise LayoutError(f"{where}: unknown key {k!r}; best matches are "
                              f"{closest_names(k, sorted(names))}")
        kw[k] = tuple(v) if k == "pass_grades" and isinstance(v, list) else v
    return QualityConfig(**kw).check(where)


# ------------------------------------------------------------------------------------------------
# robust scores
# ------------------------------------------------------------------------------------------------
def robust_z(x, *, floor: float = 0.0, min_n: int = 5):
    """Modified z-scores ``(x - median) / max(1.4826 MAD, floor)`` (NaN stays NaN).

    Parameters
    ----------
    x
        [S] values (NaN: not available).
    floor
        Smallest scale (same unit as ``x``).
    min_n
        Fewer finite values than this give all-NaN scores.

    Returns
    -------
    (z, median, scale)

    Examples
    --------
    >>> z, med, scale = robust_z([1.0, 1.01, 0.99, 1.0, 1.02, 1.5], floor=0.03)
    >>> [round(float(v), 1) for v in z]
    [-0.2, 0.2, -0.5, -0.2, 0.5, 16.5]
    """
    a = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(a)
    if ok.sum() < min_n:
        return np.full(a.shape, np.nan), float("nan"), float("nan")
    med = float(np.median(a[ok]))
    mad = float(np.median(np.abs(a[ok] - med)))
    scale = max(1.4826 * mad, float(floor))
    if not scale > 0:
        scale = float("inf")
    z = (a - med) / scale
    return z, med, scale


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------
@dataclass
class WeakCell:
    """One finding: a cell flagged on one metric.

    Attributes
    ----------
    cell : int
        0-based index (printed 1-based).
    metric : str
        ``"capacity"``, ``"r0"`` or ``"self_discharge"``.
    value, median, sigma : float
        The cell's value, the pack median and the cell's own 1-sigma (SI units: Ah, Ohm, A).
    deviation : float
        ``value / median - 1`` (capacity, R0) or the excess over the median in % of capacity
        per day (self-discharge).
    robust_z : float
        Modified z-score, positive in the weak direction.
    grade : str
        The worst grade this finding implies (B, C or D).
    reason : str
        One line for people.
    """

    cell: int
    metric: str
    value: float
    median: float
    sigma: float
    deviation: float
    robust_z: float
    grade: str
    reason: str


@dataclass
class QualityReport:
    """Weak cells, consistency metrics and the pack grade (:func:`assess_quality`).

    Per-cell arrays [S] (NaN where not identified); ``flags`` is a bit mask per cell
    (:data:`FLAG_CAPACITY`, :data:`FLAG_R0`, :data:`FLAG_SELF_DISCHARGE`).

    Attributes
    ----------
    capacity_ah, capacity_std_ah, r0_ohm, r0_std_ohm
        From the identification (R0 at 25 °C).
    self_discharge_a, self_discharge_std_a
        Self-discharge relative to the median cell (A; positive: leaks faster).
    self_discharge_pct_per_day
        The same as % of the cell's capacity per day.
    z_capacity, z_r0, z_self_discharge
        Robust z-scores, positive in the weak direction.
    flags, weak
        Bit mask and "flagged on any metric".
    capacity_cv, r0_cv
        Coefficients of variation over the cells (robust: 1.4826 MAD / median).
    rest_voltage_spread_v, rest_soc_spread
        Max - min over the cells of the relaxed OCV (V) and of the SoC at the last rest
        (NaN without a rest).
    soh
        Median capacity over the nominal capacity (NaN when capacity was not identified).
    grade, passed
        Pack grade (A-D) and whether it is in ``config.pass_grades``.
    findings
        :class:`WeakCell` per flagged metric, worst first.
    notes
        What could not be assessed and why.
    """

    capacity_ah: np.ndarray
    capacity_std_ah: np.ndarray
    r0_ohm: np.ndarray
    r0_std_ohm: np.ndarray
    self_discharge_a: np.ndarray
    self_discharge_std_a: np.ndarray
    self_discharge_pct_per_day: np.ndarray
    z_capacity: np.ndarray
    z_r0: np.ndarray
    z_self_discharge: np.ndarray
    flags: np.ndarray
    capacity_cv: float
    r0_cv: float
    rest_voltage_spread_v: float
    rest_soc_spread: float
    soh: float
    grade: str
    passed: bool
    findings: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    config: QualityConfig = field(default_factory=QualityConfig)

    @property
    def weak(self) -> np.ndarray:
        return self.flags != 0

    @property
    def n_cells(self) -> int:
        return int(self.flags.shape[0])

    def weak_cells(self) -> list[str]:
        """One line per finding, worst first, e.g.
        ``"cell 43: R0 1.52 mOhm, +48 % vs median 1.03 mOhm (robust z 9.1)"``."""
        return [f.reason for f in self.findings]

    def summary(self) -> str:
        """Plain text for the command line: grade, consistency, weak cells, notes."""
        lines = [f"grade      {self.grade} ({'pass' if self.passed else 'fail'}); "
                 f"{int(self.weak.sum())} weak cell(s) of {self.n_cells}"]
        parts = []
        if np.isfinite(self.capacity_cv):
            parts.append(f"capacity CV {self.capacity_cv * 100:.2f} %")
        if np.isfinite(self.r0_cv):
            parts.append(f"R0 CV {self.r0_cv * 100:.2f} %")
        if np.isfinite(self.rest_voltage_spread_v):
            parts.append(f"rest voltage spread {self.rest_voltage_spread_v * 1e3:.1f} mV")
        if np.isfinite(self.soh):
            parts.append(f"SoH {self.soh * 100:.1f} %")
        if parts:
            lines.append("pack       " + ", ".join(parts))
        lines.extend(f"weak       {r}" for r in self.weak_cells())
        lines.extend(f"note       {n}" for n in self.notes)
        return "\n".join(lines)

    def to_group(self) -> tuple[dict, dict]:
        """``(arrays, attrs)`` for the HDF5 ``/quality`` group.

        ``arrays``: the per-cell float64 arrays (``capacity_ah``, ``capacity_std_ah``,
        ``r0_ohm``, ``r0_std_ohm``, ``self_discharge_a``, ``self_discharge_std_a``,
        ``self_discharge_pct_per_day``, ``z_capacity``, ``z_r0``, ``z_self_discharge``) and
        ``flags`` (uint8). ``attrs``: ``grade`` (str), ``passed`` (bool), ``capacity_cv``,
        ``r0_cv``, ``rest_voltage_spread_v``, ``rest_soc_spread``, ``soh`` (floats),
        ``n_weak`` (int), ``weak_cells`` and ``notes`` (newline-joined text) and ``rules`` (the
        :class:`QualityConfig` as JSON).

        Examples
        --------
        >>> rep = assess_quality(None, capacity_ah=np.full(6, 50.0), r0_ohm=np.full(6, 1e-3))
        >>> arrays, attrs = rep.to_group()
        >>> attrs["grade"], arrays["flags"].dtype.name
        ('A', 'uint8')
        """
        import json
        names = ("capacity_ah", "capacity_std_ah", "r0_ohm", "r0_std_ohm", "self_discharge_a",
                 "self_discharge_std_a", "self_discharge_pct_per_day", "z_capacity", "z_r0",
                 "z_self_discharge")
        arrays = {k: np.asarray(getattr(self, k), dtype=np.float64) for k in names}
        arrays["flags"] = np.asarray(self.flags, dtype=np.uint8)
        attrs = {"grade": self.grade, "passed": bool(self.passed),
                 "capacity_cv": float(self.capacity_cv), "r0_cv": float(self.r0_cv),
                 "rest_voltage_spread_v": float(self.rest_voltage_spread_v),
                 "rest_soc_spread": float(self.rest_soc_spread), "soh": float(self.soh),
                 "n_weak": int(self.weak.sum()), "weak_cells": "\n".join(self.weak_cells()),
                 "notes": "\n".join(self.notes),
                 "rules": json.dumps(dataclasses.asdict(self.config), sort_keys=True)}
        return arrays, attrs


def _arr(x, n, name):
    if x is None:
        return np.full(n, np.nan)
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.shape[0] != n:
        raise PackBMSError(f"assess_quality: {name} has {a.shape[0]} values, expected {n}")
    return a


def assess_quality(identification=None, *, config: QualityConfig | None = None,
                   nominal_capacity_ah: float | None = None, capacity_ah=None,
                   capacity_std_ah=None, r0_ohm=None, r0_std_ohm=None, self_discharge_a=None,
                   self_discharge_std_a=None) -> QualityReport:
    """Weak cells, consistency and grade of a pack.

    Parameters
    ----------
    identification
        A :class:`packbms.identify.Identification` (its capacity with the cells' own
        uncertainty, R0, relative self-discharge and rest points are used), or None to give
        the per-cell arrays directly.
    config
        :class:`QualityConfig` (``quality_config(layout.raw.get("quality", {}))``).
    nominal_capacity_ah
        For the state of health (median capacity over nominal); default: the identification's
        nominal capacity.
    capacity_ah, capacity_std_ah, r0_ohm, r0_std_ohm, self_discharge_a, self_discharge_std_a
        [S] arrays overriding (or replacing) the identification's; self-discharge relative to
        the median cell. Missing uncertainties count as 0 (only the robust z decides).

    Returns
    -------
    QualityReport

    Raises
    ------
    PackBMSError
        Arrays of different lengths, nothing to assess.

    Examples
    --------
    >>> cap = np.array([60.1, 59.8, 60.3, 59.9, 60.0, 54.0])
    >>> rep = assess_quality(None, capacity_ah=cap, capacity_std_ah=np.full(6, 0.2))
    >>> rep.grade, rep.weak_cells()[0].split(":")[0]
    ('C', 'cell 6')
    """
    cfg = (config or QualityConfig()).check()
    ident = identification
    notes: list[str] = []
    if ident is not None:
        n = ident.n_cells
        cap = _arr(capacity_ah if capacity_ah is not None else ident.capacity_ah, n,
                   "capacity_ah")
        cap_std = _arr(capacity_std_ah if capacity_std_ah is not None
                       else ident.capacity_cell_std_ah, n, "capacity_std_ah")
        r0 = _arr(r0_ohm if r0_ohm is not None else ident.r0_ohm, n, "r0_ohm")
        r0_std = _arr(r0_std_ohm if r0_std_ohm is not None else ident.r0_std_ohm, n,
                      "r0_std_ohm")
        sd = _arr(self_discharge_a if self_discharge_a is not None
                  else ident.self_discharge_rel_a, n, "self_discharge_a")
        sd_std = _arr(self_discharge_std_a if self_discharge_std_a is not None
                      else ident.self_discharge_rel_std_a, n, "self_discharge_std_a")
        nominal = (float(np.mean(ident.nominal.capacity_ah)) if nominal_capacity_ah is None
                   else float(nominal_capacity_ah))
        cap_for_rate = np.where(np.isfinite(cap), cap, ident.params.capacity_ah)
    else:
        given = [a for a in (capacity_ah, r0_ohm, self_discharge_a) if a is not None]
        if not given:
            raise PackBMSError("assess_quality: give an identification or per-cell arrays")
        n = int(np.asarray(given[0]).reshape(-1).shape[0])
        cap = _arr(capacity_ah, n, "capacity_ah")
        cap_std = _arr(capacity_std_ah, n, "capacity_std_ah")
        r0 = _arr(r0_ohm, n, "r0_ohm")
        r0_std = _arr(r0_std_ohm, n, "r0_std_ohm")
        sd = _arr(self_discharge_a, n, "self_discharge_a")
        sd_std = _arr(self_discharge_std_a, n, "self_discharge_std_a")
        nominal = float(nominal_capacity_ah) if nominal_capacity_ah is not None else np.nan
        cap_for_rate = np.where(np.isfinite(cap), cap, np.nanmedian(cap) if
                                np.isfinite(cap).any() else np.nan)
    sd_pct = sd / cap_for_rate * 24.0 * 100.0
    sd_pct_std = sd_std / cap_for_rate * 24.0 * 100.0

    flags = np.zeros(n, np.uint8)
    findings: list[WeakCell] = []

    def assess(metric, x, x_std, sign, floor_abs, flag, label, fmt, unit, limits):
        """Robust z in the weak direction, flag, findings. ``limits`` -> grade of a finding."""
        z, med, scale = robust_z(x, floor=floor_abs, min_n=cfg.min_cells)
        z = sign * z
        if not np.isfinite(med):
            have = int(np.isfinite(x).sum())
            notes.append(f"{label}: identified for {have} cell(s); need {cfg.min_cells} to "
                         f"compare cells" if have else f"{label}: not identified from this log")
            return z, med
        sig = np.where(np.isfinite(x_std), x_std, 0.0)
        dev = np.abs(x - med)
        hit = (z > cfg.outlier_z) & (dev > cfg.significance * sig)
        for c in np.flatnonzero(hit):
            flags[c] |= flag
            grade, deviation, text = limits(x[c], med)
            how = f"robust z {z[c]:.1f}" + (f", {dev[c] / sig[c]:.0f} sigma" if sig[c] > 0
                                            else "")
            if metric == "self_discharge":
                what = (f"self-discharge {text} above the median cell "
                        f"({sd[c] * 1e3:+.0f} mA)")
            else:
                what = f"{label} {fmt(x[c])} {unit}, {text} vs median {fmt(med)} {unit}"
            findings.append(WeakCell(
                cell=int(c), metric=metric, value=float(x[c]), median=float(med),
                sigma=float(sig[c]), deviation=float(deviation), robust_z=float(z[c]),
                grade=grade, reason=f"cell {c + 1}: {what} ({how})"))
        return z, med

    def cap_limits(v, med):
        r = v / med
        g = "D" if r < cfg.d_capacity_ratio else "C" if r < cfg.c_capacity_ratio else "B"
        return g, r - 1.0, f"{(r - 1) * 100:+.0f} %"

    def r0_limits(v, med):
        r = v / med
        g = "D" if r > cfg.d_r0_ratio else "C" if r > cfg.c_r0_ratio else "B"
        return g, r - 1.0, f"{(r - 1) * 100:+.0f} %"

    med_cap = float(np.nanmedian(cap)) if np.isfinite(cap).any() else np.nan
    z_cap, _ = assess("capacity", cap, cap_std, -1.0,
                      cfg.mad_floor_capacity * (med_cap if np.isfinite(med_cap) else 0.0),
                      FLAG_CAPACITY, "capacity", lambda v: f"{v:.2f}", "Ah", cap_limits)
    med_r0 = float(np.nanmedian(r0)) if np.isfinite(r0).any() else np.nan
    z_r0, _ = assess("r0", r0 * 1e3, r0_std * 1e3, 1.0,
                     cfg.mad_floor_r0 * (med_r0 * 1e3 if np.isfinite(med_r0) else 0.0), FLAG_R0,
                     "R0", lambda v: f"{v:.3f}", "mOhm", r0_limits)
    # findings of R0 were made in mOhm for printing; store SI
    for f in findings:
        if f.metric == "r0":
            f.value *= 1e-3
            f.median *= 1e-3
            f.sigma *= 1e-3

    def sd_limits(v, med):
        excess = v - med
        g = ("D" if excess > cfg.d_self_discharge_pct_per_day else
             "C" if excess > cfg.c_self_discharge_pct_per_day else "B")
        return g, excess, f"{excess:.2f} %/day"

    z_sd, _ = assess("self_discharge", sd_pct, sd_pct_std, 1.0,
                     cfg.mad_floor_self_discharge_pct_per_day, FLAG_SELF_DISCHARGE,
                     "self-discharge", lambda v: f"{v:+.2f}", "%/day", sd_limits)
    for f in findings:
        if f.metric == "self_discharge":
            # keep the finding in A, relative to the median cell, and its % per day excess
            c = f.cell
            f.value, f.median, f.sigma = float(sd[c]), float(np.nanmedian(sd)), float(sd_std[c])

    # consistency
    def cv(x):
        x = x[np.isfinite(x)]
        if x.size < cfg.min_cells:
            return float("nan")
        med = np.median(x)
        return float(1.4826 * np.median(np.abs(x - med)) / med)

    capacity_cv, r0_cv = cv(cap), cv(r0)
    spread_v = spread_soc = float("nan")
    if ident is not None and ident.rests:
        last = ident.rests[-1]
        ok = np.isfinite(last.ocv_v)
        if ok.sum() >= 2:
            spread_v = float(last.ocv_v[ok].max() - last.ocv_v[ok].min())
            spread_soc = float(np.nanmax(last.soc) - np.nanmin(last.soc))
    soh = float(med_cap / nominal) if np.isfinite(med_cap) and np.isfinite(nominal) and \
        nominal > 0 else float("nan")

    # grade
    rank = {g: k for k, g in enumerate(_GRADES)}
    grade = "A"

    def worse(g):
        nonlocal grade
        if rank[g] > rank[grade]:
            grade = g

    for f in findings:
        worse(f.grade)
    if np.isfinite(capacity_cv) and capacity_cv > cfg.b_capacity_cv:
        worse("B")
        notes.append(f"capacity spread: CV {capacity_cv * 100:.1f} % above "
                     f"{cfg.b_capacity_cv * 100:.1f} %")
    if np.isfinite(r0_cv) and r0_cv > cfg.b_r0_cv:
        worse("B")
        notes.append(f"R0 spread: CV {r0_cv * 100:.1f} % above {cfg.b_r0_cv * 100:.1f} %")
    if np.isfinite(soh):
        if soh < cfg.d_soh:
            worse("D")
        elif soh < cfg.c_soh:
            worse("C")
        if soh < cfg.c_soh:
            notes.append(f"state of health {soh * 100:.0f} % of nominal capacity")
    findings.sort(key=lambda f: (-rank[f.grade], -f.robust_z))
    return QualityReport(
        capacity_ah=cap, capacity_std_ah=cap_std, r0_ohm=r0, r0_std_ohm=r0_std,
        self_discharge_a=sd, self_discharge_std_a=sd_std, self_discharge_pct_per_day=sd_pct,
        z_capacity=z_cap, z_r0=z_r0, z_self_discharge=z_sd, flags=flags,
        capacity_cv=capacity_cv, r0_cv=r0_cv, rest_voltage_spread_v=spread_v,
        rest_soc_spread=spread_soc, soh=soh, grade=grade, passed=grade in cfg.pass_grades,
        findings=findings, notes=notes, config=cfg)


# ------------------------------------------------------------------------------------------------
# across logs
# ------------------------------------------------------------------------------------------------
def self_discharge_between(soc_end, soc_start, parked_s: float, capacity_ah, *,
                           soc_end_std=None, soc_start_std=None) -> dict:
    """Self-discharge of each cell while the pack was parked between two logs.

    With no current through the string while parked, each cell's SoC falls by its own leakage
    (and any balancing bleed, which the caller should add back). Relative to the median cell
    the common part (the BMS supply, a common OCV error) cancels::

        drop_c = soc_end_c - soc_start_c                       (fraction)
        i_c    = drop_c * 3600 C_c / parked_h / 3600           (A)
        rel_c  = i_c - median(i)

    Parameters
    ----------
    soc_end
        [S] SoC at the end of the first log (e.g. ``result.soc[-1]`` or a rest reading).
    soc_start
        [S] SoC at the start of the next log (after the pack was parked).
    parked_s
        Time between the two (s).
    capacity_ah
        [S] or scalar capacities (Ah).
    soc_end_std, soc_start_std
        Optional [S] 1-sigma of the readings (fractions).

    Returns
    -------
    dict
        ``self_discharge_a`` (absolute, [S]), ``self_discharge_rel_a`` (relative to the median
        cell), ``pct_per_day`` and ``rel_pct_per_day`` (% of capacity per day), and
        ``std_a`` / ``std_pct_per_day`` when the uncertainties are given.

    Raises
    ------
    PackBMSError
        Shapes that disagree or a parked time that is not positive.

    Examples
    --------
    >>> out = self_discharge_between([0.80, 0.80, 0.80], [0.79, 0.79, 0.75], 86400.0, 50.0)
    >>> np.round(out["rel_pct_per_day"], 2).tolist()
    [0.0, 0.0, 4.0]
    """
    a = np.asarray(soc_end, dtype=np.float64).reshape(-1)
    b = np.asarray(soc_start, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise PackBMSError(f"self_discharge_between: soc_end {a.shape} and soc_start {b.shape} "
                           f"differ")
    if not (isinstance(parked_s, (int, float, np.floating)) and parked_s > 0):
        raise PackBMSError(f"self_discharge_between: parked_s must be > 0 s, got {parked_s!r}")
    cap = np.broadcast_to(np.asarray(capacity_ah, dtype=np.float64), a.shape)
    drop = a - b
    i = drop * cap * 3600.0 / float(parked_s)
    med = float(np.nanmedian(i))
    out = {"self_discharge_a": i, "self_discharge_rel_a": i - med,
           "pct_per_day": drop * 86400.0 / float(parked_s) * 100.0}
    out["rel_pct_per_day"] = (i - med) / cap * 24.0 * 100.0
    if soc_end_std is not None and soc_start_std is not None:
        sd = np.hypot(np.asarray(soc_end_std, dtype=np.float64),
                      np.asarray(soc_start_std, dtype=np.float64))
        out["std_a"] = sd * cap * 3600.0 / float(parked_s)
        out["std_pct_per_day"] = sd * 86400.0 / float(parked_s) * 100.0
    return out
