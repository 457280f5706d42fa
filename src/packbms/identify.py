"""Cell parameters identified from the log itself: R0, RC pairs, capacity, self-discharge.

Engineers rarely have equivalent-circuit parameters for the cells of a logged pack. This module
learns them, per cell, from what the log carries (pack current, cell voltages, optionally
temperatures and balancing flags), each with a 1-sigma uncertainty, and returns a
:class:`~packbms.cell.CellParams` that the estimators take in a second pass
(``estimate_soc(telemetry, params=ident.params)``).

Methods (all per cell; kernels in :mod:`packbms.kernels.identify`)
------------------------------------------------------------------
**R0 from current steps.** Every pair of consecutive *fresh* samples of a cell's voltage (at
most ``step_max_pair_s`` apart) across which the current changed by at least
``step_min_current_a`` (0.1 C) gives ``dV = -R0 f(T) dI + e``: over a fraction of a second the
RC voltages and the OCV hardly move, so the jump is ohmic. Cell voltages on CAN are sampled at a
few Hz while the current runs at 100 Hz, and each is zero-order held on the current's time base:
each sample is paired with the current *at its own instant* (the mean of the two current rows
around the row where it appeared; pairs whose sample instants straddle a jump in the current are
dropped, see ``step_steady_fraction``). ``f(T)`` is the chemistry's Arrhenius factor at the
cell's temperature sensor, so R0 is reported at the chemistry's reference temperature (25 °C)
like the simulator's and the estimators' parameters. The slope is fitted through the origin from
a robust start (the median ratio), dropping points beyond 3.5 robust sigmas (5 passes); its
uncertainty is the residual scatter over ``sqrt(sum dI^2)`` combined with what the cell's
distance from its temperature sensor may cost (``sensor_mismatch_k``, 0.7 K: 2.7 % for NMC).
Measured: within 3-7 % of the truth on 24-cell drives (8 % on the bundled 96-cell drive, where
the cells between two sensors run up to 1.4 K warmer or cooler than the sensor), z-scores about
1; the residual bias of the method is the RC pairs charging during the ~0.2 s between samples
(``R1 dt / (2 tau1)``, about +1 %).

**RC pairs from relaxation.** In every rest of at least ``relax_min_s`` that follows a load,
each cell's voltage is fitted with the exact model of a relaxing equivalent circuit::

    v_k + R0 f I_k = OCV - sum_p R_p g_p(t_k)

where ``g_p`` is the whole log's (offset-corrected) current passed through a first-order lag of
time constant ``tau_p`` (the RC-pair voltage per ohm, :func:`~packbms.kernels.identify.rc_filter`):
the load before the rest sets the starting polarisation, nothing is assumed about it. For fixed
time constants the model is linear in ``(OCV, R_1, R_2)``; the time constants are shared by the
pack (a property of the cell design) and chosen on a log-spaced grid (``tau_grid_s``, no longer
than the rest) by the summed, per-cell normalised residual over ``tau_search_cells`` cells and
all rests, then refined by a parabola in ``log tau``. One or two pairs (``n_rc``; ``"auto"``
keeps the second pair when it lowers the residual significantly, median F statistic over the
cells above ``rc_f_threshold``, and the two time constants are at least a factor 3 apart).
``R_p`` is referred to 25 °C with the Arrhenius factor at the rest and averaged over the rests,
weighted by their precision; a pair whose resistance exceeds ``rc_max_r0_ratio`` times R0 is
reported but not used (a relaxation no equivalent circuit represents, as after a discharge to
the cut-off). Measured: tau 7.7-7.8 s and 249-251 s for the true 8 s and 250 s, resistances
within 10 % (18 % on the bundled drive, one 10-minute rest).

**OCV at rests.** Each rest of at least ``ocv_min_rest_s`` gives an OCV per cell. A rest that
followed a load is fitted with its *own* time constants (chosen on that rest alone: real cells
relax more slowly near empty) and its fitted ``OCV`` is the relaxed voltage extrapolated past
the end of the rest: on the simulated drives (8 s and 250 s pairs, 8-minute rests) within
0.4 mV of the truth, where the last voltage is still 2-8 mV off. A rest with no load before it
(the start of a log) is read as its mean voltage. Its uncertainty: the fit's (with the
intercept's covariance against slow exponentials), a share of the modelled polarisation left at
the end (``ocv_model_fraction``), floors, and for a rest at the log start
``unknown_history_ocv_v`` (the log carries no history). Errors every cell shares (OCV table,
front-end offset, unknown history) are kept apart from each cell's own: comparisons between
cells use only the latter.

**Capacity and self-discharge from rests.** The rest OCVs give SoCs through the chemistry's
table (entropic term at the cell's temperature). Between rests the charge is counted from the
pack current minus the current sensor's offset (estimated as the median current over the rests,
when ``estimate_current_offset``: the cells carry no current at rest), charge scaled by the
coulombic efficiency, plus the charge each cell bled for balancing (logged flags times
``bleed_current_a``). Per cell the rest SoCs are fitted by weighted least squares::

    soc_r = soc_0 - Q_r / C - i_sd t_r / (3600 C)

With three or more rests whose charge and time are not collinear (a charge between two
discharges), capacity ``C`` and self-discharge ``i_sd`` are both identified; with two rests only
``C`` (``i_sd`` assumed 0, reported NaN); with fewer, or rests closer than
``capacity_min_delta_soc`` in SoC, neither (NaN, and the estimator keeps the nominal capacity).
The uncertainty propagates the rest SoC uncertainties and the current offset's uncertainty over
the time between the rests; ``capacity_cell_std_ah`` is the (much smaller) uncertainty of
comparing cells. Self-discharge is reported relative to the pack's median cell
(:func:`relative_self_discharge`: one least-squares operator for every cell, so shared errors
cancel). Measured on the one-hour 24-cell drives: capacity within 0.35 % (with a 0.5 A current
sensor offset), a planted 0.2 A leak found at 0.21 A with a 1-sigma of 0.026 A, healthy cells
within 0.03 A; on the bundled drive (two rests only 4.6 points of SoC apart) capacity within
2.1 % with a stated 1-sigma of about 5 %, and no self-discharge (the report says why).

**OCV offset.** With three or more rests the pack-common offset of the OCV table (the table
reads ``delta`` volts low or high for every cell) is fitted to the residuals of the capacity
fits (a scan of ``delta``, refined by a parabola of the summed chi-square); it is reported with
its uncertainty and applied only when it is significant (beyond 3 sigma and with a sigma under
2 mV): the rests are then read through the shifted table before capacity and self-discharge are
fitted, and ``params.chemistry`` is the shifted table. It needs rests where the table's slope
differs (a 5 mV offset is found to 0.6 mV from rests at 97, 55, 7, 30 and 80 % SoC); on a narrow
SoC window it is indistinguishable from a SoC offset and the report says so. A scale of the SoC
axis is the capacity itself.

**Bench data.** :func:`identify_arrays` takes one cell's ``[T]`` arrays as well; with
``samples="every_row"`` every row is a sample taken with its own current (a cycler's log).
:func:`discharge_capacity` counts full discharges between the cut-off voltages and
:func:`pseudo_ocv_curve` turns a slow discharge and charge into an OCV table
(``tests/test_realcells.py``: LG M50 4.81 Ah from its C/10 discharge and 4.84 Ah from its
rests; Nissan Leaf 29.1-30.1 Ah at C/15 and 30.3 Ah at 1 C, R0 1.60 mOhm from the HPPC pulses
against 1.57 by hand, the HPPC's relaxed OCVs within 20 mV of the C/15 pseudo-OCV mid-range).

Assumptions
-----------
- Current positive = discharge; one current through the string; cells at rest carry no current
  other than balancing bleed and their own self-discharge.
- A cell's temperature is its sensor's: with K sensors along S cells, cell ``c`` uses sensor
  ``c K // S`` (the reference layout's placement); without temperatures no referral is made.
- Rests are detected on the current as for the estimators (:mod:`packbms.kernels.rest`).
- Resistances and time constants do not depend on SoC or current (only on temperature).

Public API
----------
:class:`IdentifyConfig`, :class:`Identification`, :class:`RestPoint`, :func:`identify`
(PackTelemetry), :func:`identify_arrays` (plain arrays; a single cell's ``[T]`` voltage is
accepted), and the building blocks :func:`r0_from_steps`, :func:`fit_rest_points`,
:func:`relative_self_discharge`, :func:`pseudo_ocv_curve`, :func:`discharge_capacity`,
:func:`sensor_of_cell`.
"""

from __future__ import annotations

import dataclasses
import math
import time as _time
from dataclasses import dataclass, field

import numpy as np

from .cell import CellParams, Chemistry, get_chemistry
from .errors import EstimationError
from .kernels.ekf import block_width
from .kernels.identify import (bleed_charge, cumulative_charge, nominal_step, rc_filter,
                               relax_solve, relax_sums, robust_slope, step_pairs)
from .kernels.rest import rest_age

__all__ = ["IdentifyConfig", "Identification", "RestPoint", "identify", "identify_arrays",
           "r0_from_steps", "pseudo_ocv_curve", "discharge_capacity", "sensor_of_cell",
           "fit_rest_points", "relative_self_discharge"]


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentifyConfig:
    """Options of :func:`identify` (units in the names; defaults by meaning).

    Attributes
    ----------
    samples
        ``"change"`` (CAN telemetry: a cell's sample is a row where its held voltage changed) or
        ``"every_row"`` (bench data: every finite row is a sample taken with that row's
        current).
    rest_current_a
        |current| below which the pack rests (A); None: the larger of C/50 and three times
        ``current_noise_a`` (as the estimators).
    current_noise_a
        1-sigma noise of the current sensor (A), for the default rest threshold.
    rest_debounce_s
        How long the current must stay above the threshold to end a rest (s).
    step_min_current_a
        Smallest current change across a sample pair used for R0 (A); None: 0.1 C.
    step_max_pair_s
        Longest time between the two samples of a pair (s).
    step_steady_fraction
        A pair is dropped when the current moved by more than this fraction of its change
        *within* one sample's own instant (the rows around it), i.e. when it is unclear which
        side of a jump the sample was taken on.
    step_min_pairs
        Fewest pairs for an R0 (else NaN, nominal kept).
    relax_min_s
        Shortest rest used for a relaxation fit (s).
    relax_max_s
        The time constants are searched on the first ``relax_max_s`` of each rest (s): the
        regressors of the 49-point grid take ``49 x 8`` bytes per row (56 MB for 30 minutes at
        100 Hz); the resistances and the OCV are then fitted over the whole rest.
    ocv_min_rest_s
        Shortest rest used for an OCV reading (s); what polarisation the RC model still
        predicts at its end is removed and counted in its uncertainty.
    relax_min_load_c
        A rest follows a load when a 30 s or a 300 s lag of the current, at the rest start, is
        at least this many C; otherwise only its OCV is read (RC values from the other rests).
    tau_grid_s
        ``(first, last, count)`` of the log-spaced grid of candidate time constants (s).
    tau_search_cells
        The time constants are the pack's: they are chosen on this many cells, evenly spread
        over the string (all cells when fewer); resistances are fitted for every cell.
    n_rc
        1, 2 or ``"auto"`` RC pairs.
    rc_f_threshold
        ``"auto"`` keeps the second pair when the median over cells of the F statistic of the
        extra pair exceeds this.
    rc_max_r0_ratio
        RC pairs whose summed resistance exceeds this many times R0 are implausible for an
        equivalent circuit (a slow relaxation the model cannot represent, as after a discharge
        to the cut-off): they are reported but the estimator keeps the nominal pair.
    ocv_floor_v, ocv_cell_floor_v, ocv_model_fraction, unknown_history_ocv_v
        OCV uncertainty at a rest: a floor common to every cell (V: table error, front-end
        offset), a floor of each cell's own error, the share of the modelled polarisation left
        at the end of the rest (the cell's own), and the extra uncertainty of a rest at the start
        of the log (common; a tenth of it counted as the cell's own).
    capacity_min_delta_soc
        Rest SoCs must span at least this for a capacity.
    max_capacity_rel_std
        Capacities less certain than this (relative 1-sigma) are reported NaN.
    estimate_current_offset
        Subtract the median rest current (the sensor offset) before counting charge.
    sensor_mismatch_k
        1-sigma temperature difference (K) between a cell and the sensor it is assigned when
        there are fewer sensors than cells (the cells between sensors); enters the uncertainty
        of the resistances through the Arrhenius law (about 4 % per kelvin for NMC).
    bleed_current_a
        Passive balancing current per cell (A) applied while a cell's logged flag is set.
    max_hold_s
        Longest time a current sample is held (s), as in the estimators.
    """

    samples: str = "change"
    rest_current_a: float | None = None
    current_noise_a: float = 0.5
    rest_debounce_s: float = 1.0
    step_min_current_a: float | None = None
    step_max_pair_s: float = 1.0
    step_steady_fraction: float = 0.2
    step_min_pairs: int = 10
    relax_min_s: float = 120.0
    relax_max_s: float = 1800.0
    ocv_min_rest_s: float = 30.0
    relax_min_load_c: float = 0.05
    tau_grid_s: tuple = (1.0, 3000.0, 49)
    tau_search_cells: int = 24
    n_rc: object = "auto"
    rc_f_threshold: float = 20.0
    rc_max_r0_ratio: float = 20.0
    ocv_floor_v: float = 0.5e-3
    ocv_cell_floor_v: float = 0.1e-3
    ocv_model_fraction: float = 0.03
    unknown_history_ocv_v: float = 2.0e-3
    capacity_min_delta_soc: float = 0.02
    max_capacity_rel_std: float = 0.25
    estimate_current_offset: bool = True
    sensor_mismatch_k: float = 0.7
    bleed_current_a: float = 0.0
    max_hold_s: float = 1.0

    def check(self) -> "IdentifyConfig":
        """Validate; returns self. Raises :class:`EstimationError` naming the field."""
        def bad(name, what):
            raise EstimationError(f"IdentifyConfig.{name} = {getattr(self, name)!r}: {what}")

        if self.samples not in ("change", "every_row"):
            bad("samples", "must be 'change' or 'every_row'")
        if self.n_rc not in (1, 2, "auto"):
            bad("n_rc", "must be 1, 2 or 'auto'")
        for name in ("current_noise_a", "rest_debounce_s", "step_steady_fraction",
                     "ocv_floor_v", "ocv_cell_floor_v", "ocv_model_fraction",
                     "unknown_history_ocv_v", "capacity_min_delta_soc", "bleed_current_a",
                     "relax_min_load_c", "sensor_mismatch_k"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                bad(name, "must be a finite number >= 0")
        for name in ("step_max_pair_s", "relax_min_s", "relax_max_s", "ocv_min_rest_s",
                     "max_hold_s", "rc_f_threshold", "rc_max_r0_ratio", "max_capacity_rel_std"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                bad(name, "must be a finite number > 0")
        for name in ("rest_current_a", "step_min_current_a"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                bad(name, "must be None or a finite number > 0")
        if not (isinstance(self.step_min_pairs, int) and self.step_min_pairs >= 2):
            bad("step_min_pairs", "must be an integer >= 2")
        if not (isinstance(self.tau_search_cells, int) and self.tau_search_cells >= 1):
            bad("tau_search_cells", "must be an integer >= 1")
        try:
            a, b, n = self.tau_grid_s
            ok = 0 < float(a) < float(b) and int(n) >= 3
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bad("tau_grid_s", "must be (first_s, last_s, count) with 0 < first < last, count >= 3")
        return self

    def rest_threshold_a(self, capacity_ah: float) -> float:
        """|current| (A) below which the pack rests."""
        if self.rest_current_a is not None:
            return float(self.rest_current_a)
        return max(float(capacity_ah) / 50.0, 3.0 * self.current_noise_a)


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
@dataclass
class RestPoint:
    """One rest used for an OCV reading.

    Attributes
    ----------
    start_s, end_s : float
        The rest (s, in the log's time base).
    ocv_v, ocv_std_v : float64 [S]
        Extrapolated relaxed OCV per cell and its 1-sigma (V); NaN for a cell without samples.
    ocv_cell_std_v : float64 [S]
        The part of ``ocv_std_v`` that is the cell's own (see ``soc_cell_std``).
    soc, soc_std : float64 [S]
        SoC read from it through the chemistry's table (fraction) and its 1-sigma.
    soc_cell_std : float64 [S]
        The part of ``soc_std`` that is the cell's own (not shared by every cell: the table's
        error, a front-end offset and an unknown history are left out); what a comparison of
        cells with each other is uncertain by.
    bleed_ah : float64 [S]
        Charge bled by balancing up to the rest (Ah; included in ``charge_ah``).
    charge_ah : float64 [S]
        Charge counted out of each cell from the log start to the rest (Ah).
    temperature_c : float64 [S]
        Cell temperature during the rest (°C; NaN when unknown).
    fitted : bool
        True when the rest followed a load and its relaxation was fitted (RC values); False
        when the OCV was read with RC values from the other rests (or none: a log that starts
        at rest).
    polarisation_v : float64 [S]
        Modelled RC voltage left at the end of the rest (V).
    """

    start_s: float
    end_s: float
    ocv_v: np.ndarray
    ocv_std_v: np.ndarray
    ocv_cell_std_v: np.ndarray
    soc: np.ndarray
    soc_std: np.ndarray
    soc_cell_std: np.ndarray
    bleed_ah: np.ndarray
    charge_ah: np.ndarray
    temperature_c: np.ndarray
    fitted: bool
    polarisation_v: np.ndarray

    @property
    def mid_s(self) -> float:
        return 0.5 * (self.start_s + self.end_s)


@dataclass
class Identification:
    """What :func:`identify` returns.

    Per-cell arrays are [S]; a NaN means "not identifiable from this log" (the matching
    ``params`` field then holds the nominal value).

    Attributes
    ----------
    params : CellParams
        Parameters for the estimators: identified values where available, nominal elsewhere;
        resistances at the chemistry's reference temperature.
    nominal : CellParams
        The fallback parameters.
    r0_ohm, r0_std_ohm : float64 [S]
        Ohmic resistance at the reference temperature and its 1-sigma.
    r0_pairs : int64 [S]
        Sample pairs used for R0.
    rc_tau_s, rc_tau_std_s : float64 [P]
        Time constants shared by the pack (s) and their 1-sigma (from the curvature of the
        residual in log tau); empty when no rest followed a load.
    rc_r_ohm, rc_r_std_ohm : float64 [S, P]
        RC-pair resistances at the reference temperature.
    capacity_ah, capacity_std_ah : float64 [S]
        Capacity (Ah) and its 1-sigma, including the errors every cell shares (OCV table,
        current offset).
    capacity_cell_std_ah : float64 [S]
        The 1-sigma of comparing cells with each other (their own errors only): what outlier
        detection uses.
    self_discharge_a, self_discharge_std_a : float64 [S]
        Self-discharge current (A, positive drains the cell); needs three suitable rests.
        Its uncertainty includes the errors every cell shares (OCV table, unknown history).
    self_discharge_rel_a, self_discharge_rel_std_a : float64 [S]
        Self-discharge relative to the pack's median cell (A; :func:`relative_self_discharge`):
        shared errors cancel, so this is what finds a leaking cell.
    ocv_offset_v, ocv_offset_std_v : float
        Pack-common OCV table offset (V) and its 1-sigma; NaN when not identifiable.
    ocv_offset_applied : bool
    current_offset_a, current_offset_std_a : float
        Current sensor offset found in the rests (A, subtracted when counting charge).
    rests : list of RestPoint
    info : dict
        ``rest_threshold_a``, ``step_min_current_a``, ``n_rc_chosen``, ``rc_f_median``,
        ``notes`` (list of plain-language statements of what could not be identified and
        why), ``elapsed_s``.
    """

    params: CellParams
    nominal: CellParams
    r0_ohm: np.ndarray
    r0_std_ohm: np.ndarray
    r0_pairs: np.ndarray
    rc_tau_s: np.ndarray
    rc_tau_std_s: np.ndarray
    rc_r_ohm: np.ndarray
    rc_r_std_ohm: np.ndarray
    capacity_ah: np.ndarray
    capacity_std_ah: np.ndarray
    capacity_cell_std_ah: np.ndarray
    self_discharge_a: np.ndarray
    self_discharge_std_a: np.ndarray
    self_discharge_rel_a: np.ndarray
    self_discharge_rel_std_a: np.ndarray
    ocv_offset_v: float
    ocv_offset_std_v: float
    ocv_offset_applied: bool
    current_offset_a: float
    current_offset_std_a: float
    rests: list
    info: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return int(self.r0_ohm.shape[0])

    def to_datasets(self) -> tuple[dict, dict]:
        """``(arrays, attrs)`` for an HDF5 group (e.g. ``/quality/identification``).

        ``arrays``: the per-cell arrays (``r0_ohm``, ``r0_std_ohm``, ``r0_pairs``,
        ``capacity_ah``, ``capacity_std_ah``, ``self_discharge_a``, ``self_discharge_std_a``,
        ``rc_r_ohm`` [S, P], ``rc_r_std_ohm``, ``rc_tau_s`` [P], ``rc_tau_std_s``) and per
        rest ``rest_ocv_v``, ``rest_ocv_std_v``, ``rest_soc``, ``rest_soc_std``,
        ``rest_charge_ah`` [R, S], ``rest_start_s``, ``rest_end_s`` [R]. ``attrs``: scalars.
        """
        arrays = {k: np.asarray(getattr(self, k)) for k in (
            "r0_ohm", "r0_std_ohm", "r0_pairs", "capacity_ah", "capacity_std_ah",
            "capacity_cell_std_ah",
            "self_discharge_a", "self_discharge_std_a", "self_discharge_rel_a",
            "self_discharge_rel_std_a", "rc_r_ohm", "rc_r_std_ohm", "rc_tau_s",
            "rc_tau_std_s")}
        s = self.n_cells
        if self.rests:
            for k in ("ocv_v", "ocv_std_v", "soc", "soc_std", "charge_ah"):
                arrays[f"rest_{k}"] = np.stack([getattr(r, k) for r in self.rests])
            arrays["rest_start_s"] = np.array([r.start_s for r in self.rests])
            arrays["rest_end_s"] = np.array([r.end_s for r in self.rests])
        else:
            for k in ("ocv_v", "ocv_std_v", "soc", "soc_std", "charge_ah"):
                arrays[f"rest_{k}"] = np.zeros((0, s))
            arrays["rest_start_s"] = np.zeros(0)
            arrays["rest_end_s"] = np.zeros(0)
        attrs = {"ocv_offset_v": float(self.ocv_offset_v),
                 "ocv_offset_std_v": float(self.ocv_offset_std_v),
                 "ocv_offset_applied": bool(self.ocv_offset_applied),
                 "current_offset_a": float(self.current_offset_a),
                 "current_offset_std_a": float(self.current_offset_std_a),
                 "n_rests": len(self.rests),
                 "notes": "\n".join(self.info.get("notes", []))}
        return arrays, attrs

    def summary(self) -> str:
        """A few lines of plain text: pack medians, ranges and what could not be identified."""
        def rng(a, scale, fmt):
            a = a[np.isfinite(a)]
            if not a.size:
                return "not identified"
            return (f"median {fmt.format(np.median(a) * scale)}, "
                    f"{fmt.format(a.min() * scale)}..{fmt.format(a.max() * scale)}")

        lines = [f"R0         {rng(self.r0_ohm, 1e3, '{:.3f}')} mOhm (25 degC)",
                 f"capacity   {rng(self.capacity_ah, 1.0, '{:.2f}')} Ah"]
        if self.rc_tau_s.size:
            taus = ", ".join(f"{t:.3g} s" for t in self.rc_tau_s)
            r_sum = rng(self.rc_r_ohm.sum(axis=1), 1e3, "{:.3f}")
            lines.append(f"RC         tau {taus}; R {r_sum} mOhm (sum)")
        if np.isfinite(self.self_discharge_rel_a).any():
            lines.append(f"self-disch {rng(self.self_discharge_rel_a, 1e3, '{:+.0f}')} mA "
                         f"relative to the median cell")
        lines.append(f"rests      {len(self.rests)} used; current offset "
                     f"{self.current_offset_a:+.3f} A")
        lines.extend(f"note       {n}" for n in self.info.get("notes", []))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
#: Lags (s) of the current whose value at a rest's start says whether a load preceded it.
_LAG_TAUS = np.array([30.0, 300.0])

def sensor_of_cell(n_cells: int, n_sensors: int) -> np.ndarray:
    """Temperature sensor used for each cell: ``c * K // S`` (sensors spread evenly).

    Examples
    --------
    >>> sensor_of_cell(6, 2).tolist()
    [0, 0, 0, 1, 1, 1]
    """
    if n_sensors <= 0:
        return np.full(n_cells, -1, np.int64)
    return (np.arange(n_cells, dtype=np.int64) * int(n_sensors)) // int(n_cells)


def _f64(a, name, ndim=None):
    try:
        out = np.require(np.asarray(a, dtype=np.float64), np.float64, ["C", "W"])
    except (TypeError, ValueError) as e:
        raise EstimationError(f"{name}: expected numbers ({e})") from e
    if ndim is not None and out.ndim != ndim:
        raise EstimationError(f"{name}: expected {ndim}-D, got shape {out.shape}")
    return out


def _rests(time_s, current_a, threshold_a, debounce_s, min_s):
    """``[(k0, k1)]`` row ranges of rests at least ``min_s`` long (k1 exclusive) and all rest
    rows (bool [T])."""
    n = time_s.shape[0]
    age = np.empty(n)
    quiet = np.empty(n, np.bool_)
    rest_age(time_s, current_a, float(threshold_a), float(debounce_s),
             np.array([np.nan, np.nan]), age, quiet)
    at = age >= 0
    edges = np.diff(np.concatenate(([0], at.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    # a rest "ends" after the debounce: drop its trailing non-quiet rows
    out = []
    for a, b in zip(starts, ends):
        q = np.flatnonzero(quiet[a:b])
        if not q.size:
            continue
        b = a + int(q[-1]) + 1
        if time_s[b - 1] - time_s[a] >= min_s:
            out.append((int(a), int(b)))
    return out, at & quiet


def _cell_temperatures(temp, sensors, k0, k1):
    """Mean temperature (°C) per cell over rows k0..k1 (NaN when unknown)."""
    s = sensors.shape[0]
    if temp is None or temp.shape[1] == 0:
        return np.full(s, np.nan)
    with np.errstate(invalid="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_sensor = np.nanmean(temp[k0:k1], axis=0)
    out = per_sensor[np.clip(sensors, 0, None)]
    out[sensors < 0] = np.nan
    return out


def _factor(chem: Chemistry, temperature_c):
    t = np.asarray(temperature_c, dtype=np.float64)
    t = np.where(np.isfinite(t), t, chem.t_ref_k - 273.15)
    return np.asarray(chem.resistance_factor(t + 273.15), dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# R0
# ------------------------------------------------------------------------------------------------
def r0_from_steps(time_s, current_a, cell_voltage_v, *, temperature_c=None, chemistry=None,
                  min_current_step_a: float, max_pair_s: float = 1.0,
                  steady_fraction: float = 0.2, min_pairs: int = 10,
                  samples: str = "change", sensors=None):
    """Ohmic resistance of each cell from voltage jumps across current steps.

    Parameters
    ----------
    time_s, current_a
        [T] times (s) and current (A, positive = discharge).
    cell_voltage_v
        [T, S] or [T] cell voltages (V), NaN where stale.
    temperature_c
        Optional [T, K] or [T] temperatures (°C): R0 is referred to the chemistry's reference
        temperature with its Arrhenius law.
    chemistry
        For the Arrhenius law (None or a chemistry without one: no referral).
    min_current_step_a, max_pair_s, steady_fraction, min_pairs, samples
        See :class:`IdentifyConfig` (``step_*`` fields and ``samples``).
    sensors
        [S] sensor index of each cell (default :func:`sensor_of_cell`).

    Returns
    -------
    (r0_ohm, r0_std_ohm, n_pairs)
        [S] arrays (scalars' arrays of length 1 for a [T] voltage); NaN with fewer than
        ``min_pairs`` pairs.

    Examples
    --------
    >>> t = np.arange(0, 40, 0.1)
    >>> i = np.where((t // 2) % 2 == 0, 0.0, 50.0)      # 0 / 50 A steps every 2 s
    >>> v = 3.7 - 0.002 * i
    >>> r0, std, n = r0_from_steps(t, i, v, min_current_step_a=5.0, samples="every_row")
    >>> round(float(r0[0]), 6), int(n[0])
    (0.002, 19)
    """
    t = _f64(time_s, "time_s", 1)
    i = _f64(current_a, "current_a", 1)
    v = _f64(cell_voltage_v, "cell_voltage_v")
    if v.ndim == 1:
        v = v[:, None].copy()
    n_s = v.shape[1]
    temp, sens, act, tref = _temps(temperature_c, chemistry, t.shape[0], n_s, sensors)
    args = (t, i, v, temp, sens, act, tref, samples == "every_row", float(max_pair_s),
            float(min_current_step_a), float(steady_fraction))
    import numba
    width = block_width(n_s, numba.get_num_threads())
    count = np.zeros(n_s, np.int64)
    step_pairs(*args, True, np.zeros(n_s + 1, np.int64), np.empty(0), np.empty(0),
               np.empty(0), count, width)
    off = np.concatenate(([0], np.cumsum(count))).astype(np.int64)
    di = np.empty(off[-1])
    dv = np.empty(off[-1])
    tt = np.empty(off[-1])
    step_pairs(*args, False, off, di, dv, tt, count, width)
    r0 = np.empty(n_s)
    std = np.empty(n_s)
    n = np.empty(n_s, np.int64)
    robust_slope(off, di, -dv, 3.5, 5, int(min_pairs), r0, std, n)
    return r0, std, n


def _temps(temperature_c, chemistry, n_t, n_s, sensors):
    """Kernel-ready ``(temp [T, K], sensor_of_cell [S], activation_k, t_ref_k)``."""
    chem = get_chemistry(chemistry) if chemistry is not None else None
    if temperature_c is None or chem is None or chem.r_activation_k == 0.0:
        return (np.zeros((n_t, 0)), np.full(n_s, -1, np.int64),
                0.0 if chem is None else chem.r_activation_k,
                298.15 if chem is None else chem.t_ref_k)
    temp = _f64(temperature_c, "temperature_c")
    if temp.ndim == 1:
        temp = temp[:, None].copy()
    if temp.shape[0] != n_t:
        raise EstimationError(f"temperature_c has {temp.shape[0]} rows, expected {n_t}")
    sens = (sensor_of_cell(n_s, temp.shape[1]) if sensors is None
            else np.ascontiguousarray(sensors, dtype=np.int64))
    return temp, sens, chem.r_activation_k, chem.t_ref_k


# ------------------------------------------------------------------------------------------------
# relaxation
# ------------------------------------------------------------------------------------------------
def _window_sums(t, i_corr, v, every_row, windows, taus, r0_f, max_hold_s, min_n=20):
    """For each window ``(k0, k1)`` (in time order): the centred relaxation sums of every cell
    (:func:`relax_sums`) against the RC-pair regressors of ``taus``, computed by one pass of
    :func:`rc_filter` over the log that keeps only the window rows. ``r0_f`` is a list of [S]
    arrays (R0 at each window's temperature). Yields one dict per window."""
    taus = np.ascontiguousarray(taus, dtype=np.float64)
    g = taus.size
    n_s = v.shape[1]
    state = np.zeros(g)
    dt0 = nominal_step(t)
    pos = 0
    for (k0, k1), rf in zip(windows, r0_f):
        rc_filter(t, i_corr, taus, float(max_hold_s), dt0, pos, k0, state, np.zeros((0, g)))
        reg = np.empty((k1 - k0, g))
        rc_filter(t, i_corr, taus, float(max_hold_s), dt0, k0, k1, state, reg)
        pos = k1
        out = dict(n=np.empty(n_s, np.int64), my=np.empty(n_s), mg=np.empty((n_s, g)),
                   syy=np.empty(n_s), sgy=np.empty((n_s, g)), sgg=np.empty((n_s, g, g)))
        relax_sums(k0, k1, i_corr, v, every_row, np.ascontiguousarray(rf, dtype=np.float64),
                   reg, int(min_n), out["n"], out["my"], out["mg"], out["syy"], out["sgy"],
                   out["sgg"])
        out["g_start"] = reg[0].copy()
        out["g_end"] = reg[-1].copy()
        yield out


def _solve(sums, cols):
    cols = np.ascontiguousarray(np.atleast_2d(cols), dtype=np.int64)
    n_s = sums["n"].shape[0]
    sse = np.empty((n_s, cols.shape[0]))
    coef = np.empty((n_s, cols.shape[0], cols.shape[1] + 1))
    relax_solve(sums["n"], sums["my"], sums["mg"], sums["syy"], sums["sgy"], sums["sgg"], cols,
                sse, coef)
    return sse, coef


def _parabola_min(x, y):
    """Vertex of the parabola through three points (x ascending); the middle x if degenerate."""
    x0, x1, x2 = x
    y0, y1, y2 = y
    d = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / d
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / d
    if not a > 0:
        return x1, np.inf
    return float(np.clip(-b / (2 * a), x0, x2)), float(2 * a)


def _surface(sums, grid, max_tau_s=np.inf):
    """Residual surfaces of one rest over the tau grid, summed over its cells, each cell's
    residual normalised by its noise variance (so every cell weighs the same).

    Returns ``(tot1 [G], tot2 [G(G-1)/2], fstats list, n_cells_used)``; candidates with a tau
    above ``max_tau_s`` or a non-positive resistance are left out (1e30)."""
    g = grid.size
    one = np.arange(g).reshape(-1, 1)
    ii, jj = np.triu_indices(g, 1)
    two = np.column_stack([ii, jj])
    sse1, c1 = _solve(sums, one)
    sse2, c2 = _solve(sums, two)
    sse1 = np.where((c1[:, :, 1] > 0) & (grid[None, :] <= max_tau_s), sse1, np.nan)
    sse2 = np.where((c2[:, :, 1] > 0) & (c2[:, :, 2] > 0) & (grid[jj][None, :] <= max_tau_s),
                    sse2, np.nan)
    ok = np.isfinite(sse1).any(axis=1) & (sums["n"] > 10)
    if not ok.any():
        return np.full(g, 1e30), np.full(two.shape[0], 1e30), [], 0
    n = sums["n"][ok].astype(np.float64)
    best1 = np.nanmin(sse1[ok], axis=1)
    best2 = np.min(np.where(np.isfinite(sse2[ok]), sse2[ok], np.inf), axis=1)
    var = np.where(np.isfinite(best2), best2, best1) / np.maximum(n - 5, 1)
    var = np.maximum(var, 1e-30)
    tot1 = np.sum(np.where(np.isfinite(sse1[ok]), sse1[ok] / var[:, None], 1e30), axis=0)
    tot2 = np.sum(np.where(np.isfinite(sse2[ok]), sse2[ok] / var[:, None], 1e30), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (best1 - best2) / 2.0 / (best2 / np.maximum(n - 5, 1))
    return (np.minimum(tot1, 1e30), np.minimum(tot2, 1e30),
            np.where(np.isfinite(f), f, 0.0).tolist(), int(ok.sum()))


def _pick_taus(tot1, tot2, grid, use2):
    """Time constants at the minimum of a summed surface, refined by parabolas in log tau.

    Returns ``(taus [P], tau_std [P])`` (std from where the chi-square rises by one)."""
    lg = np.log(grid)
    g = grid.size
    ii, jj = np.triu_indices(g, 1)
    if use2 and tot2.min() < 1e29:
        q = int(np.argmin(tot2))
        a, b = ii[q], jj[q]
        taus, stds = [], []
        for idx, other, first in ((a, b, True), (b, a, False)):
            cand = []
            for d in (-1, 0, 1):
                j = idx + d
                lo, hi = (j, other) if first else (other, j)
                if j < 0 or j >= g or lo >= hi:
                    cand = None
                    break
                cand.append(tot2[np.flatnonzero((ii == lo) & (jj == hi))[0]])
            if cand is None or not np.all(np.array(cand) < 1e29):
                taus.append(float(grid[idx]))
                stds.append(float("nan"))
                continue
            x, curv = _parabola_min(lg[idx - 1:idx + 2], cand)
            taus.append(float(math.exp(x)))
            stds.append(float(math.exp(x) * math.sqrt(2.0 / curv)) if curv > 0
                        else float("nan"))
        return np.array(taus), np.array(stds)
    if tot1.min() >= 1e29:
        return np.zeros(0), np.zeros(0)
    q = int(np.argmin(tot1))
    if 0 < q < g - 1 and np.all(tot1[q - 1:q + 2] < 1e29):
        x, curv = _parabola_min(lg[q - 1:q + 2], tot1[q - 1:q + 2])
        tau = math.exp(x)
        std = tau * math.sqrt(2.0 / curv) if curv > 0 else float("nan")
    else:
        tau, std = float(grid[q]), float("nan")
    return np.array([tau]), np.array([std])


def _choose_taus(surfaces, grid, n_rc, f_threshold):
    """Pack time constants from the per-rest surfaces (:func:`_surface`) summed over rests.

    Returns ``(taus [P], tau_std [P], info)``."""
    info = {"rc_f_median": float("nan")}
    used = [sf for sf in surfaces if sf[3] > 0]
    if not used:
        return np.zeros(0), np.zeros(0), info
    tot1 = np.minimum(np.sum([sf[0] for sf in used], axis=0), 1e30)
    tot2 = np.minimum(np.sum([sf[1] for sf in used], axis=0), 1e30)
    fstats = [f for sf in used for f in sf[2]]
    info["rc_f_median"] = float(np.median(fstats)) if fstats else float("nan")
    use2 = (n_rc == 2) or (n_rc == "auto" and info["rc_f_median"] > f_threshold)
    taus, stds = _pick_taus(tot1, tot2, grid, use2)
    if n_rc == "auto" and taus.size == 2 and taus[1] < 3.0 * taus[0]:
        # two time constants closer than a factor 3 are one relaxation split in two
        taus, stds = _pick_taus(tot1, tot2, grid, False)
    info["n_rc_chosen"] = int(taus.size)
    return taus, stds, info


# ------------------------------------------------------------------------------------------------
# capacity, self-discharge and OCV offset from rest points
# ------------------------------------------------------------------------------------------------
def fit_rest_points(soc, soc_std, charge_ah, time_s, *, offset_std_a: float = 0.0,
                    nominal_capacity_ah=None, min_delta_soc: float = 0.05,
                    max_rel_std: float = 0.25):
    """Capacity and self-discharge of each cell from SoC readings at rests.

    Weighted least squares of ``soc_r = soc_0 - Q_r / C - i_sd t_r / (3600 C)`` per cell.

    Parameters
    ----------
    soc, soc_std
        [R, S] SoC at each rest (fraction) and its 1-sigma.
    charge_ah
        [R, S] charge counted out of each cell up to each rest (Ah).
    time_s
        [R] time of each rest (s).
    offset_std_a
        1-sigma of the current offset left in the counted charge (A): adds
        ``offset_std_a (t_r - t_0) / 3600 / C`` to each rest's SoC uncertainty.
    nominal_capacity_ah
        [S] or scalar, to convert the offset uncertainty (default: 1 Ah, i.e. ignore).
    min_delta_soc, max_rel_std
        See :class:`IdentifyConfig` (``capacity_min_delta_soc``, ``max_capacity_rel_std``).

    Returns
    -------
    dict
        ``capacity_ah``, ``capacity_std_ah``, ``self_discharge_a``, ``self_discharge_std_a``,
        ``soc0``, ``residual`` [R, S] (SoC minus fit), ``chi2`` [S] and ``mode`` ("capacity and
        self-discharge", "capacity", or "none").

    Examples
    --------
    >>> soc = np.array([[0.9], [0.5], [0.7]])
    >>> q = np.array([[0.0], [24.0], [12.0]])           # 60 Ah: 24 Ah out is 0.4 of SoC
    >>> out = fit_rest_points(soc, np.full((3, 1), 1e-3), q, np.array([0.0, 3600.0, 7200.0]))
    >>> round(float(out["capacity_ah"][0]), 6), abs(round(float(out["self_discharge_a"][0]), 6))
    (60.0, 0.0)
    """
    s = np.asarray(soc, dtype=np.float64)
    sd = np.asarray(soc_std, dtype=np.float64)
    q = np.asarray(charge_ah, dtype=np.float64)
    t = np.asarray(time_s, dtype=np.float64)
    n_r, n_s = s.shape
    cap0 = np.broadcast_to(np.asarray(1.0 if nominal_capacity_ah is None else
                                      nominal_capacity_ah, dtype=np.float64), (n_s,))
    out = {k: np.full(n_s, np.nan) for k in ("capacity_ah", "capacity_std_ah",
                                              "self_discharge_a", "self_discharge_std_a",
                                              "soc0", "chi2")}
    out["residual"] = np.full((n_r, n_s), np.nan)
    out["mode"] = np.array(["none"] * n_s, dtype=object)
    ok = np.isfinite(s) & np.isfinite(sd) & (sd > 0) & np.isfinite(q)
    n_ok = ok.sum(axis=0)
    with np.errstate(invalid="ignore"):
        span = (np.where(ok, s, -np.inf).max(axis=0) - np.where(ok, s, np.inf).min(axis=0))
        t_first = np.where(ok, t[:, None], np.inf).min(axis=0)
        var = sd ** 2 + (offset_std_a * (t[:, None] - t_first[None, :]) / 3600.0
                         / cap0[None, :]) ** 2
        w = np.where(ok, 1.0 / var, 0.0)                       # [R, S]
    sr = np.where(ok, s, 0.0)
    x = np.stack([np.ones((n_r, n_s)), -np.where(ok, q, 0.0),
                  -np.broadcast_to(t[:, None] / 3600.0, (n_r, n_s))], axis=-1)   # [R, S, 3]
    a3 = np.einsum("rsp,rs,rsq->spq", x, w, x)
    b3 = np.einsum("rsp,rs,rs->sp", x, w, sr)
    usable = (n_ok >= 2) & (span >= min_delta_soc)
    # three parameters where three rests are not collinear in (1, Q, t)
    use3 = usable & (n_ok >= 3)
    if use3.any():
        scale = np.sqrt(np.abs(np.einsum("spp->sp", a3))) + 1e-300
        norm = a3 / scale[:, :, None] / scale[:, None, :]
        with np.errstate(invalid="ignore"):
            ev = np.linalg.eigvalsh(np.where(use3[:, None, None], norm, np.eye(3)))
        use3 &= ev[:, 0] > 1e-10 * ev[:, -1]
    for n_par, sel in ((3, use3), (2, usable & ~use3)):
        idx = np.flatnonzero(sel)
        if not idx.size:
            continue
        a = a3[idx][:, :n_par, :n_par]
        try:
            cov = np.linalg.inv(a)
        except np.linalg.LinAlgError:
            cov = np.stack([np.linalg.pinv(m) for m in a])
        theta = np.einsum("spq,sq->sp", cov, b3[idx][:, :n_par])
        u = theta[:, 1]
        good = u > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            cap = 1.0 / u
            cap_std = np.sqrt(cov[:, 1, 1]) / (u * u)
        good &= np.isfinite(cap_std) & (cap_std / cap <= max_rel_std)
        idx, theta, cov, cap, cap_std = idx[good], theta[good], cov[good], cap[good], \
            cap_std[good]
        if not idx.size:
            continue
        fitv = np.einsum("rsp,sp->rs", x[:, idx, :n_par], theta)
        res = np.where(ok[:, idx], s[:, idx] - fitv, np.nan)
        out["capacity_ah"][idx] = cap
        out["capacity_std_ah"][idx] = cap_std
        out["soc0"][idx] = theta[:, 0]
        out["residual"][:, idx] = res
        out["chi2"][idx] = np.nansum(res * res * w[:, idx], axis=0)
        out["mode"][idx] = "capacity and self-discharge" if n_par == 3 else "capacity"
        if n_par == 3:
            # i_sd = C w = w / u, with w the SoC lost per hour
            uu, wv = theta[:, 1], theta[:, 2]
            jac = np.stack([-wv / (uu * uu), 1.0 / uu], axis=1)
            var_isd = np.einsum("sp,spq,sq->s", jac, cov[:, 1:, 1:], jac)
            out["self_discharge_a"][idx] = wv / uu
            out["self_discharge_std_a"][idx] = np.sqrt(np.maximum(var_isd, 0.0))
    return out


def relative_self_discharge(soc, soc_cell_std, charge_ah, bleed_ah, time_s, capacity_ah):
    """Each cell's self-discharge relative to the pack's median cell, from rest SoCs.

    Every cell's rest SoCs, with its balancing bleed added back (``s'_c = s_c + B_c / C_c``),
    are fitted with the *same* linear least-squares operator (common design and weights)::

        s'_c(r) = s0_c - Q_r / C_c - i_c t_r / (3600 C_c)

    (``Q_r`` the pack's counted charge, weights from the median over the cells of their own
    SoC uncertainty at each rest). Because the operator is the same for every cell, an error
    shared by all cells at a rest (OCV table, sensor offset, unknown history) moves every
    cell's fit alike and cancels in ``i_rel = i_c - median(i)`` (A, positive: the cell loses
    charge faster than the median cell). The uncertainty propagates the cell's own SoC
    uncertainty. Needs three rests whose charge and time are not collinear.

    Parameters
    ----------
    soc, soc_cell_std, charge_ah, bleed_ah
        [R, S] rest SoCs, their per-cell 1-sigma, counted charge (bleed included) and the
        balancing bleed (Ah).
    time_s
        [R] rest times (s).
    capacity_ah
        [S] capacities (identified, else nominal) to convert the bleed.

    Returns
    -------
    (i_rel_a, i_rel_std_a)
        [S] arrays; NaN where not identifiable.

    Examples
    --------
    >>> t = np.array([0.0, 3600.0, 7200.0])
    >>> q = np.array([0.0, 30.0, 15.0])[:, None] * np.ones((1, 3))
    >>> soc = 0.9 - q / 60.0 - np.outer(t / 3600.0, [0.0, 0.0, 0.2 / 60.0])
    >>> i_rel, _ = relative_self_discharge(soc, np.full((3, 3), 1e-4), q, np.zeros((3, 3)), t,
    ...                                    np.full(3, 60.0))
    >>> np.round(i_rel, 6).tolist()
    [0.0, 0.0, 0.2]
    """
    s = np.asarray(soc, dtype=np.float64)
    sd = np.asarray(soc_cell_std, dtype=np.float64)
    q = np.asarray(charge_ah, dtype=np.float64)
    b = np.asarray(bleed_ah, dtype=np.float64)
    t = np.asarray(time_s, dtype=np.float64)
    cap = np.asarray(capacity_ah, dtype=np.float64)
    n_r, n_s = s.shape
    nan = np.full(n_s, np.nan)
    if n_r < 3 or n_s < 3:
        return nan, nan.copy()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sp = s + b / cap[None, :]
        qp = np.nanmedian(q - b, axis=1)                      # the pack's counted charge
        var_r = np.nanmedian(sd ** 2, axis=1)                 # one weight per rest
    rows = np.isfinite(qp) & np.isfinite(var_r) & (var_r > 0)
    if rows.sum() < 3:
        return nan, nan.copy()
    x = np.column_stack([np.ones(n_r), -qp, -t / 3600.0])[rows]
    w = 1.0 / var_r[rows]
    a = (x.T * w) @ x
    scale = np.sqrt(np.diag(a))
    ev = np.linalg.eigvalsh(a / np.outer(scale, scale))
    if not ev[0] > 1e-10 * ev[-1]:
        return nan, nan.copy()
    m = np.linalg.solve(a, x.T * w)                            # [3, R'] the common operator
    spr = sp[rows]
    ok = np.isfinite(spr).all(axis=0)
    theta = m @ np.where(np.isfinite(spr), spr, 0.0)           # [3, S]
    u, wv = theta[1], theta[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        i_abs = np.where(ok & (u > 0), wv / u, np.nan)
        std = np.sqrt(np.sum((m[2][:, None] ** 2) * np.where(np.isfinite(sd[rows]),
                                                             sd[rows], np.inf) ** 2, axis=0))
        std = std / u
    if np.isfinite(i_abs).sum() < 3:
        return nan, nan.copy()
    i_rel = i_abs - np.nanmedian(i_abs)
    return i_rel, np.where(np.isfinite(i_rel), std, np.nan)


def _ocv_offset(rests, chem, fitted, min_rests=3):
    """Pack-common OCV offset (V): moves every rest SoC by ``-delta / slope``; chosen to
    minimise the summed chi-square of the per-cell rest fits. Returns ``(delta, std)``."""
    if len(rests) < min_rests:
        return float("nan"), float("nan")
    soc = np.stack([r.soc for r in rests])
    sd = np.stack([r.soc_std for r in rests])
    q = np.stack([r.charge_ah for r in rests])
    t = np.array([r.mid_s for r in rests])
    slope = np.asarray(chem.docv_dsoc(np.clip(soc, 0, 1)), dtype=np.float64)
    deltas = np.linspace(-0.02, 0.02, 41)
    chi = []
    for d in deltas:
        o = fit_rest_points(soc - d / slope, sd, q, t, **fitted)
        c = o["chi2"]
        chi.append(np.nansum(c) if np.isfinite(c).any() else np.nan)
    chi = np.array(chi)
    if not np.isfinite(chi).all():
        return float("nan"), float("nan")
    k = int(np.argmin(chi))
    if k == 0 or k == deltas.size - 1:
        return float(deltas[k]), float("nan")
    x, curv = _parabola_min(deltas[k - 1:k + 2], chi[k - 1:k + 2])
    return x, (math.sqrt(2.0 / curv) if curv > 0 and np.isfinite(curv) else float("nan"))


# ------------------------------------------------------------------------------------------------
# the public entry points
# ------------------------------------------------------------------------------------------------
def _read_soc(rest: RestPoint, chem: Chemistry, with_temperature: bool) -> RestPoint:
    """A rest's SoC (and its uncertainties) read again through ``chem``."""
    tk = rest.temperature_c + 273.15 if with_temperature else None
    if tk is not None:
        tk = np.where(np.isfinite(tk), tk, chem.t_ref_k)
    with np.errstate(invalid="ignore"):
        soc = np.asarray(chem.soc_from_ocv(rest.ocv_v, tk), dtype=np.float64)
        slope = np.abs(np.asarray(chem.docv_dsoc(np.clip(soc, 0.0, 1.0)), dtype=np.float64))
    return dataclasses.replace(rest, soc=soc, soc_std=rest.ocv_std_v / slope,
                               soc_cell_std=rest.ocv_cell_std_v / slope)


def identify_arrays(time_s, current_a, cell_voltage_v, *, nominal: CellParams | None = None,
                    chemistry=None, capacity_ah: float | None = None, temperature_c=None,
                    balancing=None, config: IdentifyConfig | None = None) -> Identification:
    """Identify every cell's parameters from plain arrays.

    Parameters
    ----------
    time_s
        [T] times (s), non-decreasing.
    current_a
        [T] current (A, positive = discharge).
    cell_voltage_v
        [T, S] cell voltages (V, NaN where stale), or [T] for a single cell.
    nominal
        Fallback parameters (and their chemistry); default: :func:`packbms.soc.nominal_params`
        of ``capacity_ah`` and ``chemistry``.
    chemistry, capacity_ah
        Needed when ``nominal`` is None.
    temperature_c
        Optional [T, K] or [T] temperatures (°C, NaN where stale).
    balancing
        Optional [T, S] bool balancing flags (with ``config.bleed_current_a``).
    config
        :class:`IdentifyConfig`.

    Returns
    -------
    Identification

    Raises
    ------
    EstimationError
        Shapes that disagree, times going back, non-finite time or current, missing nominal
        information, a bad config.

    Examples
    --------
    >>> t = np.arange(0, 40, 0.1)
    >>> i = np.where((t // 2) % 2 == 0, 0.0, 50.0)
    >>> v = 3.7 - 0.002 * i
    >>> ident = identify_arrays(t, i, v, chemistry="nmc", capacity_ah=50.0,
    ...                         config=IdentifyConfig(samples="every_row"))
    >>> round(float(ident.r0_ohm[0]), 6)
    0.002
    """
    started = _time.perf_counter()
    cfg = (config or IdentifyConfig()).check()
    t = _f64(time_s, "time_s", 1)
    i = _f64(current_a, "current_a", 1)
    v = _f64(cell_voltage_v, "cell_voltage_v")
    if v.ndim == 1:
        v = v[:, None].copy()
    if v.ndim != 2:
        raise EstimationError(f"cell_voltage_v: expected [T] or [T, S], got shape {v.shape}")
    n_t, n_s = v.shape
    if t.shape[0] != n_t or i.shape[0] != n_t:
        raise EstimationError(f"time_s {t.shape}, current_a {i.shape} and cell_voltage_v "
                              f"{v.shape} must have the same number of rows")
    if n_t < 2:
        raise EstimationError("identification needs at least 2 rows")
    if not (np.isfinite(t).all() and np.isfinite(i).all()):
        raise EstimationError("time_s and current_a must be finite (drop NaN rows first)")
    if np.any(np.diff(t) < 0):
        k = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1
        raise EstimationError(f"time_s must be non-decreasing; row {k} goes back from "
                              f"{t[k - 1]} s to {t[k]} s")
    if nominal is None:
        if chemistry is None or capacity_ah is None:
            raise EstimationError("identify needs nominal params, or chemistry and capacity_ah")
        from .soc import nominal_params
        nominal = nominal_params(n_s, float(capacity_ah), chemistry)
    if nominal.n_cells != n_s:
        raise EstimationError(f"cell_voltage_v has {n_s} cells but nominal params describe "
                              f"{nominal.n_cells}")
    chem = nominal.chemistry
    cap_nom = float(np.mean(nominal.capacity_ah))
    notes: list[str] = []
    every_row = cfg.samples == "every_row"
    temp, sens, act, tref = _temps(temperature_c, chem, n_t, n_s, None)
    temp_or_none = temp if temp.shape[1] else None

    # -- rests and the current offset -----------------------------------------------------------
    threshold = cfg.rest_threshold_a(cap_nom)
    rests, rest_rows = _rests(t, i, threshold, cfg.rest_debounce_s, cfg.ocv_min_rest_s)
    all_rests, _ = _rests(t, i, threshold, cfg.rest_debounce_s, 30.0)
    offset, offset_std = 0.0, 0.0
    if cfg.estimate_current_offset and all_rests:
        rows = np.concatenate([np.arange(a, b) for a, b in all_rests])
        cur = i[rows]
        offset = float(np.median(cur))
        # ~1 independent sample per second of rest
        dur = sum(t[b - 1] - t[a] for a, b in all_rests)
        offset_std = float(1.4826 * np.median(np.abs(cur - offset)) / math.sqrt(max(dur, 1.0)))
    elif not all_rests:
        notes.append("no rest of 30 s or more: the current sensor offset is unknown")
    i_corr = np.ascontiguousarray(i - offset)

    # -- R0 -----------------------------------------------------------------------------------
    min_step = cfg.step_min_current_a if cfg.step_min_current_a is not None else 0.1 * cap_nom
    r0, r0_std_fit, r0_n = r0_from_steps(
        t, i_corr, v, temperature_c=temp_or_none, chemistry=chem if temp_or_none is not None
        else None, min_current_step_a=min_step, max_pair_s=cfg.step_max_pair_s,
        steady_fraction=cfg.step_steady_fraction, min_pairs=cfg.step_min_pairs,
        samples=cfg.samples, sensors=sens if temp_or_none is not None else None)
    # a cell's temperature is its sensor's: with fewer sensors than cells the cells between
    # them differ by a kelvin or so, and R0 by activation_k / T^2 per kelvin
    mismatch = 0.0
    if temp_or_none is not None and temp.shape[1] < n_s:
        mismatch = cfg.sensor_mismatch_k * chem.r_activation_k / chem.t_ref_k ** 2
    r0_std = np.sqrt(r0_std_fit ** 2 + (mismatch * r0) ** 2)
    if not np.isfinite(r0).all():
        notes.append(f"R0 not identified for {int((~np.isfinite(r0)).sum())} cell(s): fewer "
                     f"than {cfg.step_min_pairs} current steps of {min_step:.3g} A or more")
    r0_use = np.where(np.isfinite(r0), r0, nominal.r0_ohm)

    # -- relaxation: time constants, resistances, OCV at rests --------------------------------
    lo, hi, cnt = cfg.tau_grid_s
    grid = np.geomspace(float(lo), float(hi), int(cnt))
    rest_info = []
    lag_state = np.zeros(2)
    dt0 = nominal_step(t)
    pos = 0
    for a, b in rests:
        tc = _cell_temperatures(temp_or_none, sens, a, b)
        f = _factor(chem, tc) if temp_or_none is not None else np.ones(n_s)
        # excitation: 30 s and 300 s lags of the current at the rest start
        rc_filter(t, i_corr, _LAG_TAUS, cfg.max_hold_s, dt0, pos, a + 1, lag_state,
                  np.zeros((0, 2)))
        pos = a + 1
        loaded = np.abs(lag_state).max() >= cfg.relax_min_load_c * cap_nom
        fit = loaded and t[b - 1] - t[a] >= cfg.relax_min_s
        rest_info.append((a, b, tc, f, loaded, fit))
    fits = [r for r in rest_info if r[5]]
    # time constants are the pack's: choose them on an evenly spread subset of the cells
    sub = np.unique(np.linspace(0, n_s - 1, min(n_s, cfg.tau_search_cells)).round()
                    .astype(np.int64))
    v_sub = v if sub.size == n_s else np.ascontiguousarray(v[:, sub])
    # (the grid search looks at the first relax_max_s of each rest: bounded memory)
    windows = [(r[0], min(r[1], int(np.searchsorted(t, t[r[0]] + cfg.relax_max_s)) + 1))
               for r in fits]
    surfaces = [_surface(sums, grid, max_tau_s=t[w[1] - 1] - t[w[0]])
                for w, sums in zip(windows, _window_sums(
                    t, i_corr, v_sub, every_row, windows, grid,
                    [(r0_use * r[3])[sub] for r in fits], cfg.max_hold_s))]
    taus, tau_std, tinfo = _choose_taus(surfaces, grid, cfg.n_rc, cfg.rc_f_threshold)
    # each fitted rest's own time constants, for reading its OCV (they change with SoC)
    use2 = taus.size == 2
    own_taus = {r[0]: _pick_taus(sf[0], sf[1], grid, use2)[0] for r, sf in zip(fits, surfaces)}
    n_p = taus.size
    if n_p == 0:
        notes.append("no rest of at least %.0f s after a load: RC pairs not identified"
                     % cfg.relax_min_s)
    # every rest again, with the chosen time constants
    per_rest = list(zip(rest_info, _window_sums(
        t, i_corr, v, every_row, [(r[0], r[1]) for r in rest_info],
        taus if n_p else np.array([30.0]), [r0_use * r[3] for r in rest_info],
        cfg.max_hold_s)))
    per_rest = [(*r, sums) for r, sums in per_rest]
    rc_r = np.full((n_s, max(n_p, 1)), np.nan)
    rc_r_std = np.full((n_s, max(n_p, 1)), np.nan)
    if n_p:
        est, wts = [], []
        for a, b, tc, f, loaded, fit, sums in per_rest:
            if not fit:
                continue
            sse, coef = _solve(sums, np.arange(n_p).reshape(1, -1))
            r = coef[:, 0, 1:]
            dof = np.maximum(sums["n"] - n_p - 1, 1)
            var = sse[:, 0] / dof
            cov_diag = _cov_diag(sums, n_p) * var[:, None]
            est.append(r / f[:, None])
            wts.append(1.0 / (cov_diag / f[:, None] ** 2))
        est = np.stack(est)
        wts = np.stack(wts)
        good = np.isfinite(est) & np.isfinite(wts) & (wts > 0)
        w = np.where(good, wts, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.sum(np.where(good, est, 0.0) * w, axis=0) / np.sum(w, axis=0)
            stat = 1.0 / np.sqrt(np.sum(w, axis=0))
            k = good.sum(axis=0)
            scatter = np.sqrt(np.sum(np.where(good, (est - mean) ** 2, 0.0), axis=0)
                              / np.maximum(k - 1, 1) / np.maximum(k, 1))
        rc_r = mean
        rc_r_std = np.where(k > 1, np.maximum(stat, scatter), stat)
        rc_r_std = np.sqrt(rc_r_std ** 2 + (mismatch * rc_r) ** 2)
        neg = ~(rc_r > 0)
        if neg.any():
            notes.append(f"RC resistance not identified for {int(neg.any(axis=1).sum())} "
                         f"cell(s) (fit gave a non-positive value)")
            rc_r = np.where(neg, np.nan, rc_r)
    rc_r_use = (np.where(np.isfinite(rc_r), rc_r,
                         np.nanmedian(rc_r, axis=0) if np.isfinite(rc_r).any() else np.nan)
                if n_p else None)
    rc_ok = n_p > 0 and bool(np.isfinite(rc_r_use).all())
    if rc_ok:
        r0_ref = float(np.median(r0_use))
        ratio = float(np.median(rc_r_use.sum(axis=1))) / r0_ref
        if ratio > cfg.rc_max_r0_ratio:
            rc_ok = False
            notes.append(f"RC pairs implausible (their resistance is {ratio:.0f} times R0: a "
                         f"relaxation slower than the model, e.g. near empty): not used for the "
                         f"estimator's parameters")

    # -- OCV at each rest ---------------------------------------------------------------------
    q_pack = np.empty(n_t)
    eta = float(np.mean(nominal.coulombic_efficiency))
    cumulative_charge(t, i, offset, eta, cfg.max_hold_s, q_pack)
    mid_rows = np.array([(a + b - 1) // 2 for a, b, *_ in per_rest], dtype=np.int64)
    bleed = np.zeros((len(per_rest), n_s))
    if balancing is not None and cfg.bleed_current_a > 0 and len(per_rest):
        flags = np.ascontiguousarray(np.asarray(balancing, dtype=np.bool_))
        if flags.shape != (n_t, n_s):
            raise EstimationError(f"balancing: expected shape {(n_t, n_s)}, got {flags.shape}")
        bleed_charge(t, flags, float(cfg.bleed_current_a), mid_rows, cfg.max_hold_s, bleed)
    rest_points = []
    for j, (a, b, tc, f, loaded, fit, sums) in enumerate(per_rest):
        n = sums["n"].astype(np.float64)
        model_v = np.zeros(n_s)
        if n_p and fit and own_taus.get(a, np.zeros(0)).size:
            # the rest's own fit, with its own time constants: RC values change with SoC in
            # real cells (diffusion polarisation grows near empty), so another rest's values
            # would mislead here
            tw = own_taus[a]
            sums = next(_window_sums(t, i_corr, v, every_row, [(a, b)], tw, [r0_use * f],
                                     cfg.max_hold_s))
            k_p = tw.size
            sse, coef = _solve(sums, np.arange(k_p).reshape(1, -1))
            own = coef[:, 0, 1:]
            bad = ~np.isfinite(coef[:, 0, 0])
            own = np.where(bad[:, None], 0.0, own)
            ocv = sums["my"] + np.sum(own * sums["mg"], axis=1)
            pol_end = np.sum(own * sums["g_end"][None, :], axis=1)
            resid_var = np.where(bad, sums["syy"], sse[:, 0]) / np.maximum(n - k_p - 1, 1)
            # the intercept is uncertain by more than the mean when the exponentials are slow
            # against the rest (they trade off against it): mg^T cov(R) mg
            n_eff0 = np.minimum(n, max(t[b - 1] - t[a], 1.0))
            for c in range(n_s):
                g = sums["sgg"][c, :k_p, :k_p]
                if np.isfinite(g).all() and not bad[c]:
                    try:
                        quad = float(sums["mg"][c] @ np.linalg.solve(g, sums["mg"][c]))
                    except np.linalg.LinAlgError:
                        quad = np.inf
                    model_v[c] = math.sqrt(max(resid_var[c], 0.0) * quad * n[c]
                                           / max(n_eff0[c], 1.0))
        else:
            # no load before it: read the mean; whatever polarisation the pack's RC values
            # still predict counts in full as uncertainty (not as a correction)
            ocv = sums["my"].copy()
            pol_end = np.zeros(n_s)
            if n_p and rc_ok:
                model_v = np.abs(np.sum(rc_r_use * f[:, None] * sums["mg"], axis=1))
            resid_var = sums["syy"] / np.maximum(n - 1, 1)
        # residual noise is correlated (quantisation, slow drift): count ~1 sample per second
        n_eff = np.minimum(n, max(t[b - 1] - t[a], 1.0))
        history = a == 0 or (not loaded and t[a] - t[0] < 1.0)
        hist_v = cfg.unknown_history_ocv_v if history else 0.0
        # the cell's own error (fit noise, its share of the model error, a small floor) and
        # the part common to every cell (table error, front-end offset, unknown history)
        var_cell = (np.maximum(resid_var, 0.0) / np.maximum(n_eff, 1.0)
                    + (cfg.ocv_model_fraction * pol_end) ** 2 + cfg.ocv_cell_floor_v ** 2
                    + (0.1 * hist_v) ** 2 + model_v ** 2)
        ocv_std = np.sqrt(var_cell + cfg.ocv_floor_v ** 2 + hist_v ** 2)
        ocv_cell_std = np.sqrt(var_cell)
        ocv = np.where(sums["n"] >= 20, ocv, np.nan)
        tk = tc + 273.15 if temp_or_none is not None else None
        with np.errstate(invalid="ignore"):
            soc = np.asarray(chem.soc_from_ocv(ocv, tk if tk is None or np.isfinite(tk).all()
                                               else np.where(np.isfinite(tk), tk,
                                                             chem.t_ref_k)), dtype=np.float64)
            slope = np.asarray(chem.docv_dsoc(np.clip(soc, 0.0, 1.0)), dtype=np.float64)
        soc_std = ocv_std / np.abs(slope)
        charge = q_pack[mid_rows[j]] + bleed[j]
        rest_points.append(RestPoint(start_s=float(t[a]), end_s=float(t[b - 1]), ocv_v=ocv,
                                     ocv_std_v=ocv_std, ocv_cell_std_v=ocv_cell_std, soc=soc,
                                     soc_std=soc_std, soc_cell_std=ocv_cell_std / np.abs(slope),
                                     bleed_ah=bleed[j],
                                     charge_ah=charge, temperature_c=tc, fitted=bool(fit),
                                     polarisation_v=pol_end))

    # -- capacity, self-discharge, OCV offset -------------------------------------------------
    nan_s = np.full(n_s, np.nan)
    cap, cap_std, isd, isd_std = nan_s.copy(), nan_s.copy(), nan_s.copy(), nan_s.copy()
    cap_cell_std = nan_s.copy()
    isd_rel, isd_rel_std = nan_s.copy(), nan_s.copy()
    delta, delta_std, applied = float("nan"), float("nan"), False
    fitted_kw = dict(offset_std_a=offset_std, nominal_capacity_ah=nominal.capacity_ah,
                     min_delta_soc=cfg.capacity_min_delta_soc,
                     max_rel_std=cfg.max_capacity_rel_std)
    chem_use = chem
    if len(rest_points) >= 3:
        delta, delta_std = _ocv_offset(rest_points, chem, fitted_kw)
        if np.isfinite(delta_std) and delta_std < 2e-3 and abs(delta) > 3 * delta_std:
            applied = True
            # read every rest again through the corrected table
            chem_use = Chemistry(f"{chem.name}+offset", chem.soc, chem.ocv_v + delta,
                                 chem.entropic_v_per_k, chem.r_activation_k, chem.t_ref_k)
            rest_points = [_read_soc(r, chem_use, temp_or_none is not None)
                           for r in rest_points]
            notes.append(f"OCV table offset {delta * 1e3:+.1f} mV +- {delta_std * 1e3:.1f} mV: "
                         f"applied (rest SoCs read through the corrected table)")
        elif np.isfinite(delta_std) and delta_std < 2e-3:
            notes.append(f"OCV table offset {delta * 1e3:+.1f} mV +- {delta_std * 1e3:.1f} mV:"
                         f" not significant, not applied")
        else:
            notes.append("OCV table offset not identifiable from these rests (the rest SoCs "
                         "do not separate it from a SoC offset): not applied")
    if len(rest_points) >= 2:
        soc_m = np.stack([r.soc for r in rest_points])
        sd_m = np.stack([r.soc_std for r in rest_points])
        q_m = np.stack([r.charge_ah for r in rest_points])
        t_m = np.array([r.mid_s for r in rest_points])
        fit = fit_rest_points(soc_m, sd_m, q_m, t_m, **fitted_kw)
        cap, cap_std = fit["capacity_ah"], fit["capacity_std_ah"]
        # the uncertainty of comparing cells: their own errors only (same charge for all)
        fit_cell = fit_rest_points(soc_m, np.stack([r.soc_cell_std for r in rest_points]),
                                   q_m, t_m, **{**fitted_kw, "offset_std_a": 0.0,
                                                "max_rel_std": np.inf})
        cap_cell_std = np.where(np.isfinite(cap), fit_cell["capacity_std_ah"], np.nan)
        isd, isd_std = fit["self_discharge_a"], fit["self_discharge_std_a"]
        if not np.isfinite(cap).all():
            with np.errstate(invalid="ignore"):
                span = np.nanmax(soc_m, axis=0) - np.nanmin(soc_m, axis=0)
            missing = ~np.isfinite(cap)
            narrow = missing & ~(span >= cfg.capacity_min_delta_soc)
            if narrow.any():
                notes.append(f"capacity not identified for {int(narrow.sum())} cell(s): their "
                             f"rest SoCs span {np.nanmedian(span[narrow]) * 100:.1f} points "
                             f"(need {cfg.capacity_min_delta_soc * 100:.0f})")
            if (missing & ~narrow).any():
                notes.append(f"capacity not identified for {int((missing & ~narrow).sum())} "
                             f"cell(s): less certain than {cfg.max_capacity_rel_std * 100:.0f} "
                             f"% (flat OCV between the rests, or rests too short to relax)")
        cap_use = np.where(np.isfinite(cap), cap, nominal.capacity_ah)
        isd_rel, isd_rel_std = relative_self_discharge(
            soc_m, np.stack([r.soc_cell_std for r in rest_points]), q_m,
            np.stack([r.bleed_ah for r in rest_points]), t_m, cap_use)
        if not np.isfinite(isd_rel).any():
            notes.append("self-discharge not identified: needs three rests with a charge "
                         "between two discharges (charge and time not collinear)")
    else:
        notes.append(f"{len(rest_points)} rest(s) of at least {cfg.ocv_min_rest_s:.0f} s: "
                     f"capacity needs two rests with charge moved between them")

    # -- parameters for the estimators --------------------------------------------------------
    if rc_ok:
        rc_params = np.where(np.isfinite(rc_r), rc_r, rc_r_use)
        tau_params = np.broadcast_to(taus, (n_s, n_p))
    else:
        rc_params, tau_params = nominal.rc_r_ohm, nominal.rc_tau_s
    params = CellParams(capacity_ah=np.where(np.isfinite(cap), cap, nominal.capacity_ah),
                        r0_ohm=r0_use, rc_r_ohm=rc_params, rc_tau_s=tau_params,
                        coulombic_efficiency=nominal.coulombic_efficiency,
                        self_discharge_a=np.where(np.isfinite(isd) & (isd > 0), isd, 0.0),
                        chemistry=chem_use)
    info = {"rest_threshold_a": threshold, "step_min_current_a": float(min_step),
            "notes": notes, "elapsed_s": _time.perf_counter() - started, **tinfo}
    return Identification(
        params=params, nominal=nominal, r0_ohm=r0, r0_std_ohm=r0_std, r0_pairs=r0_n,
        rc_tau_s=taus, rc_tau_std_s=tau_std,
        rc_r_ohm=rc_r if n_p else np.zeros((n_s, 0)),
        rc_r_std_ohm=rc_r_std if n_p else np.zeros((n_s, 0)),
        capacity_ah=cap, capacity_std_ah=cap_std, capacity_cell_std_ah=cap_cell_std,
        self_discharge_a=isd,
        self_discharge_std_a=isd_std, self_discharge_rel_a=isd_rel,
        self_discharge_rel_std_a=isd_rel_std, ocv_offset_v=delta, ocv_offset_std_v=delta_std,
        ocv_offset_applied=applied, current_offset_a=offset, current_offset_std_a=offset_std,
        rests=rest_points, info=info)


def _cov_diag(sums, n_p):
    """Diagonal of the inverse centred Gram matrix [S, P] (the R covariance per unit noise)."""
    g = sums["sgg"][:, :n_p, :n_p]
    out = np.full((g.shape[0], n_p), np.nan)
    for c in range(g.shape[0]):
        if np.isfinite(g[c]).all():
            try:
                out[c] = np.diag(np.linalg.inv(g[c]))
            except np.linalg.LinAlgError:
                pass
    return out


def identify(telemetry, params: CellParams | None = None, *, layout=None,
             config: IdentifyConfig | None = None) -> Identification:
    """Identify every cell's parameters from a drive's telemetry.

    Parameters
    ----------
    telemetry
        :class:`packbms.telemetry.PackTelemetry`.
    params
        Nominal (fallback) parameters; None builds :func:`packbms.soc.nominal_params` from
        ``layout``.
    layout
        :class:`packbms.layout.Layout` (cell count, capacity, chemistry and the balancing
        bleed current, used when ``config`` leaves ``bleed_current_a`` at 0).
    config
        :class:`IdentifyConfig`.

    Returns
    -------
    Identification

    Raises
    ------
    EstimationError
        Neither params nor layout, cell counts that disagree, or any error of
        :func:`identify_arrays` (prefixed with the log's name).

    Examples
    --------
    >>> tel, lay = load_telemetry("data/drive_96s.blf", "data/pack96.dbc",
    ...                           "data/pack96.toml")                          # doctest: +SKIP
    >>> ident = identify(tel, layout=lay)                                      # doctest: +SKIP
    >>> soc = estimate_soc(tel, params=ident.params, method="smoother")        # doctest: +SKIP
    """
    cfg = config or IdentifyConfig()
    if params is None:
        if layout is None:
            raise EstimationError("identify needs params or a layout (capacity and chemistry)")
        from .soc import _params_from_layout
        params = _params_from_layout(layout)
    if layout is not None and cfg.bleed_current_a == 0.0 and telemetry.balancing is not None:
        cfg = dataclasses.replace(cfg, bleed_current_a=float(layout.bleed_current_a))
    where = f"{telemetry.source}: " if getattr(telemetry, "source", None) else ""
    try:
        return identify_arrays(telemetry.time, telemetry.current, telemetry.cell_voltage,
                               nominal=params, temperature_c=telemetry.cell_temperature,
                               balancing=telemetry.balancing, config=cfg)
    except EstimationError as e:
        if where:
            raise EstimationError(f"{where}{e}") from e
        raise


# ------------------------------------------------------------------------------------------------
# bench data: pseudo-OCV and full-discharge capacity
# ------------------------------------------------------------------------------------------------
def discharge_capacity(time_s, current_a, voltage_v, *, v_min: float, v_max: float,
                       tolerance_v: float = 0.02, min_current_a: float | None = None):
    """Capacities (Ah) of the full discharges in one cell's log.

    A full discharge runs from the last row at or above ``v_max - tolerance_v`` (the end of a
    charge, or the rest after it) to the next row at or below ``v_min + tolerance_v``; its
    capacity is the net charge counted between the two (short charge pulses on the way, as in
    an HPPC test, are counted with their sign). Currents below ``min_current_a`` in magnitude
    (default: 1 % of the largest in the log) are a cycler's zero-offset at rest and not
    counted: 10 mA over a two-day rest is a fifth of an Ah.

    Parameters
    ----------
    time_s, current_a, voltage_v
        [T] times (s), current (A, positive = discharge) and voltage (V).
    v_min, v_max
        The cell's discharge and charge cut-off voltages (V).
    tolerance_v
        How close to a cut-off counts as reaching it (V).
    min_current_a
        Smallest current counted (A); see above.

    Returns
    -------
    list of ``(capacity_ah, start_s, end_s, mean_current_a)``
        ``mean_current_a`` is the capacity over the time from start to end (rests included).

    Examples
    --------
    >>> t = np.arange(0.0, 36001.0, 10.0)
    >>> v = np.linspace(4.2, 2.5, t.size)
    >>> [round(c, 3) for c, *_ in discharge_capacity(t, np.full(t.size, 0.5), v, v_min=2.5,
    ...                                                   v_max=4.2, tolerance_v=0.0)]
    [5.0]
    """
    t = _f64(time_s, "time_s", 1)
    i = _f64(current_a, "current_a", 1)
    v = _f64(voltage_v, "voltage_v", 1)
    if not (t.shape == i.shape == v.shape):
        raise EstimationError(f"discharge_capacity: time_s {t.shape}, current_a {i.shape} and "
                              f"voltage_v {v.shape} differ")
    floor = (0.01 * float(np.max(np.abs(i))) if min_current_a is None
             else float(min_current_a))
    q = np.empty(t.size)
    cumulative_charge(t, np.where(np.abs(i) < floor, 0.0, i), 0.0, 1.0, np.inf, q)
    top = v >= v_max - tolerance_v
    bottom = v <= v_min + tolerance_v
    out = []
    k = 0
    while k < t.size:
        tops = np.flatnonzero(top[k:])
        if not tops.size:
            break
        a0 = k + int(tops[0])
        ends = np.flatnonzero(bottom[a0:])
        if not ends.size:
            break
        b = a0 + int(ends[0])
        a = a0 + int(np.flatnonzero(top[a0:b + 1])[-1])
        if b > a:
            out.append((float(q[b] - q[a]), float(t[a]), float(t[b]),
                        float((q[b] - q[a]) * 3600.0 / max(t[b] - t[a], 1e-9))))
        k = b + 1
    return out


def pseudo_ocv_curve(time_s, current_a, voltage_v, *, capacity_ah: float | None = None,
                     n_points: int = 101, name: str = "pseudo-ocv") -> Chemistry:
    """An OCV(SoC) table from a slow full discharge and a slow full charge (pseudo-OCV).

    The discharge and the charge (each the longest stretch of one sign of current) are mapped
    onto SoC by counting charge (the discharge starts full, the charge starts empty) with
    ``capacity_ah`` (default: the charge of the discharge), and their voltages are averaged at
    equal SoC: the ohmic and diffusion overpotentials of a slow, symmetric test (same current
    both ways) cancel to first order. A small monotone correction keeps the table strictly
    increasing, as :class:`~packbms.cell.Chemistry` requires.

    Parameters
    ----------
    time_s, current_a, voltage_v
        [T] one cell's log (A positive = discharge, V).
    capacity_ah
        Capacity to map charge to SoC (default: the discharged charge).
    n_points
        Table knots (uniform SoC grid 0..1).

    Returns
    -------
    Chemistry

    Raises
    ------
    EstimationError
        When the log has no discharge or no charge stretch.

    Examples
    --------
    >>> t = np.arange(0.0, 72000.0, 10.0)
    >>> i = np.where(t < 36000, 0.5, -0.5)
    >>> s = np.where(t < 36000, 1 - t / 36000, (t - 36000) / 36000)
    >>> v = 3.0 + s - 0.02 * i                          # OCV = 3 + soc, 40 mOhm
    >>> chem = pseudo_ocv_curve(t, i, v, n_points=11)
    >>> round(float(chem.ocv(0.5)), 3)
    3.5
    """
    t = _f64(time_s, "time_s", 1)
    i = _f64(current_a, "current_a", 1)
    v = _f64(voltage_v, "voltage_v", 1)

    def longest(sign):
        m = (np.sign(i) == sign) & (np.abs(i) > 1e-6)
        edges = np.diff(np.concatenate(([0], m.astype(np.int8), [0])))
        s, e = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if not s.size:
            raise EstimationError(f"pseudo_ocv_curve: no {'discharge' if sign > 0 else 'charge'}"
                                  f" stretch in the log")
        j = int(np.argmax(e - s))
        return int(s[j]), int(e[j])

    (a1, b1), (a2, b2) = longest(1.0), longest(-1.0)
    q = np.empty(t.size)
    cumulative_charge(t, i, 0.0, 1.0, np.inf, q)
    qd = q[a1:b1] - q[a1]
    qc = q[a2] - q[a2:b2]                   # charge stored since the charge started
    cap = float(capacity_ah) if capacity_ah is not None else float(qd[-1])
    soc_d = 1.0 - qd / cap
    soc_c = qc / cap
    grid = np.linspace(0.0, 1.0, int(n_points))
    vd = np.interp(grid, soc_d[::-1], v[a1:b1][::-1])
    vc = np.interp(grid, soc_c, v[a2:b2])
    ocv = 0.5 * (vd + vc)
    # strictly increasing: a running maximum plus a tiny ramp (sub-microvolt)
    ocv = np.maximum.accumulate(ocv) + np.arange(grid.size) * 1e-7
    return Chemistry(name, grid, ocv)
