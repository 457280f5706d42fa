"""State of charge per cell: coulomb counting with OCV correction, an extended Kalman filter and
its offline Rauch-Tung-Striebel smoother.

The estimators run over a :class:`~packbms.telemetry.PackTelemetry` (or plain arrays), batched
over cells by Numba kernels (:mod:`packbms.kernels.ekf`, :mod:`packbms.kernels.coulomb`):

``method="ekf"`` (default)
    A per-cell extended Kalman filter on a one-RC equivalent circuit (state: SoC and the RC
    voltage; input: pack current; measurement: the cell's terminal voltage). Noise comes from
    meaningful quantities in :class:`EKFConfig` (sensor noise in mV, current offset in A,
    resistance uncertainty in percent, the OCV table's error in mV), not from tuning constants.
``method="smoother"``
    Offline: the same filter forward, then a Rauch-Tung-Striebel pass backward over the whole
    call's rows (:func:`packbms.kernels.ekf.rts_smooth`), so every row's SoC uses the whole
    drive (a wrong start is corrected from the start, lags disappear). It needs the whole drive
    in one call: chunked calls smooth each chunk on its own (the returned ``state`` is the
    filter's, so a live EKF or another chunk can continue from it). Memory: the filtered state
    is stored at measurement updates only (48 bytes per cell-update: 1.7 MB per cell-hour at
    5 Hz; 68 MB for an hour of 96 cells), and the rows between two updates are replayed from
    it on the way back, so the cost does not grow with the current's 100 Hz rate; the [T, S]
    SoC and std outputs (the same as the filter's) are larger. Measured below; this is the
    method to use for logged drives.
``method="coulomb"``
    Coulomb counting with OCV initialisation and correction at rests (:class:`CoulombConfig`).
    Its error bound is stated in :class:`CoulombConfig`.

Flat OCV (LFP)
--------------
Where dOCV/dSoC is small, a millivolt of OCV error is points of SoC. The EKF counts the OCV
table's own error (``EKFConfig.ocv_error_v``, 1 mV) as *correlated* over
``ocv_error_time_s``, so thousands of plateau samples cannot make it confident, and its sigma
grows where the voltage says little (on the simulated LFP drives: median sigma 0.17 % near the
top of the curve, 10-20 % on the plateau, errors beyond 3 sigma under 2 %,
``tests/test_soc_flat_ocv.py``). ``SocResult.info["flat_ocv_fraction"]`` reports the share of
cell-rows whose estimate sat where the slope is below :data:`FLAT_OCV_SLOPE_V` (0.1 V per unit
SoC). Hysteresis is not modelled (it belongs in ``ocv_error_v``).

Both keep their state explicit in a :class:`SocState`: running a log in chunks and passing the
returned ``state`` to the next call gives the same numbers as one call (bit for bit); the state
serialises to plain arrays (:meth:`SocState.to_dict`) for checkpoints.

Assumptions shared by the estimators
------------------------------------
- Current positive = discharge; one current flows through every cell of the string (balancing
  bleed currents of ~0.1 A are not modelled; they show up as a small per-cell drift).
- Cell parameters are *nominal* (:func:`nominal_params`) unless the caller passes identified
  ones: the estimators do not know each cell's true capacity and resistance.
- Between two rows the previous row's current is held (zero-order hold) for at most
  ``max_hold_s``; a longer gap is assumed to carry no current.
- The OCV table is the chemistry's at its reference temperature (entropic term ignored: under
  0.5 mV for +-10 K on the built-in tables). Resistances follow the chemistry's Arrhenius law
  with the pack's mean measured temperature when the telemetry has temperatures.
- SoC outputs are clipped to 0..1; the internal state is not (an EKF that wanders to 1.003 must
  be able to come back without a kink).

- Each cell starts on its first row with a voltage (multiplexed voltages arrive over the first
  few hundred ms); until then it reports the prior ``initial_soc`` with ``initial_soc_std``.

Measured accuracy (``tests/test_soc_truth.py``, ``tests/test_smoother.py``: 25-minute drives
of 24 simulated cells, seeds 1-3, and the bundled 96-cell drive; truth with two RC pairs and a
cell spread, the estimator with nominal one-RC parameters, current sensor offset 0.5 A and noise
0.5 A, start 20 points off): EKF per-cell SoC RMSE after the first 10 minutes 0.43-0.52 % for the
worst cell of a simulated pack and 0.93 % on the bundled drive (its worst cell has 1.5 times the
nominal resistance); final per-cell offsets from the pack mean within 0.06 points (0.07 on the
bundled drive) of the true offsets; every cell within 2 points of the truth 56 s after the start
(the correlated OCV error slows the first minute: 9-22 s without it). The smoother on the same
drives: whole-drive RMSE 0.28-0.33 % against the filter's 0.64-0.67 % (0.31 % against 0.39 % on
the bundled drive), worst cell after 10 minutes 0.29-0.35 % (0.56 %), every cell within 2
points from the first row. With parameters identified from the log
(:func:`packbms.identify.identify`) on the one-hour identification drive: EKF 0.86 % -> 0.36 %,
smoother 0.80 % -> 0.30 %. Coulomb counting: within 0.8 % once the first 5-minute rest has
corrected it (the slow relaxation tail left after 5 minutes dominates), inside its stated bound.

Pack SoC (:func:`pack_soc`) follows foxBMS and Simscape Battery: min, max and mean cell SoC and
the *usable* pack SoC, the charge the pack can still deliver before its first cell is empty over
the charge between its first-empty and first-full limits.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time as _time
from dataclasses import dataclass, field
from typing import Sequence

import numba
import numpy as np

from .cell import CellParams, get_chemistry
from .errors import EstimationError
from .kernels.balancing import pack_soc_rows
from .kernels.coulomb import coulomb_run
from .kernels.ekf import (INIT_AUTO, INIT_GIVEN, INIT_OCV, KIND_GIVEN, KIND_OCV, KIND_PENDING,
                          block_width, ekf_run, merge_records, record_capacity,
                          rts_smooth)
from .kernels.rest import rest_age

__all__ = ["EKFConfig", "CoulombConfig", "SocState", "SocResult", "PackSoc", "estimate_soc",
           "estimate_soc_arrays", "SmootherStream", "pack_soc", "nominal_params", "uniform_ocv_grid",
           "METHODS", "FLAT_OCV_SLOPE_V", "NOMINAL_R0_OHM_AH", "NOMINAL_RC_R_OHM_AH",
           "NOMINAL_RC_TAU_S"]

#: Estimator names accepted by ``method=``.
METHODS = ("ekf", "coulomb", "smoother")
#: Methods that run the EKF (and share its state and configuration).
_EKF_METHODS = ("ekf", "smoother")
#: dOCV/dSoC (V per unit SoC) below which the OCV counts as flat: 1 mV of voltage error is
#: then worth more than a point of SoC (LFP plateaus run at 0.03-0.15 V per unit SoC).
FLAT_OCV_SLOPE_V = 0.1

#: Nominal ohmic resistance times capacity (Ohm Ah): R0 = 0.060 / capacity_ah, i.e. 1 mOhm for
#: a 60 Ah cell, 20 mOhm for a 3 Ah cylindrical cell (typical of NMC and LFP power/energy cells
#: at 25 °C; resistance scales inversely with electrode area, hence with capacity).
NOMINAL_R0_OHM_AH = 0.060
#: Nominal resistance of the one RC pair times capacity (Ohm Ah): 0.5 mOhm for 60 Ah.
NOMINAL_RC_R_OHM_AH = 0.030
#: Nominal time constant of the one RC pair (s): a single pair lumping the fast (seconds) and
#: slow (minutes) diffusion polarisation of a real cell.
NOMINAL_RC_TAU_S = 30.0
#: Nominal coulombic efficiency on charge.
NOMINAL_COULOMBIC_EFFICIENCY = 0.999


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
def _number(v, low: float, strict: bool = False) -> bool:
    """True for a finite real number above ``low`` (or at it unless ``strict``)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(v) and (v > low if strict else v >= low)


@dataclass(frozen=True)
class _CommonConfig:
    """Options shared by both estimators (documented on each subclass)."""

    init: str = "auto"
    initial_soc: float | Sequence[float] = 0.5
    initial_soc_std: float = 0.3
    ocv_init_soc_std: float = 0.05
    rest_current_a: float | None = None
    rest_debounce_s: float = 1.0
    current_noise_a: float = 0.5
    current_offset_a: float = 0.5
    capacity_error: float = 0.03
    max_hold_s: float = 1.0
    use_temperature: bool = True

    def _check(self, n_cells: int) -> None:
        def bad(name, what):
            raise EstimationError(f"{type(self).__name__}.{name} = {getattr(self, name)!r}: "
                                  f"{what}")

        if self.init not in ("auto", "ocv", "given"):
            bad("init", "must be 'auto', 'ocv' or 'given'")
        s0 = np.asarray(self.initial_soc, dtype=np.float64)
        if s0.ndim > 1 or (s0.ndim == 1 and s0.shape[0] != n_cells):
            bad("initial_soc", f"must be a scalar or have one value per cell ({n_cells})")
        if not np.all(np.isfinite(s0)) or np.any(s0 < -0.5) or np.any(s0 > 1.5):
            bad("initial_soc", "must be finite fractions (0..1; percent? divide by 100)")
        for name in ("initial_soc_std", "ocv_init_soc_std", "max_hold_s"):
            if not _number(getattr(self, name), 0.0, strict=True):
                bad(name, "must be a finite number > 0")
        for name in ("current_noise_a", "current_offset_a", "capacity_error",
                     "rest_debounce_s"):
            if not _number(getattr(self, name), 0.0):
                bad(name, "must be a finite number >= 0")
        if self.rest_current_a is not None and not _number(self.rest_current_a, 0.0,
                                                           strict=True):
            bad("rest_current_a", "must be None or a finite number > 0 (A)")

    def rest_threshold_a(self, capacity_ah: np.ndarray) -> float:
        """|current| (A) below which the pack counts as resting.

        ``rest_current_a`` when given, else the larger of C/50 (of the mean capacity) and three
        standard deviations of the current sensor noise, so that noise alone never breaks a rest.
        """
        if self.rest_current_a is not None:
            return float(self.rest_current_a)
        return max(float(np.mean(capacity_ah)) / 50.0, 3.0 * self.current_noise_a)


@dataclass(frozen=True)
class EKFConfig(_CommonConfig):
    """Noise and initialisation of the EKF, by meaning (units in the names).

    Attributes
    ----------
    voltage_noise_v
        1-sigma noise of a cell-voltage measurement (V); 2 mV is a typical BMS front end
        (the simulator's default is 1.5 mV).
    voltage_resolution_v
        Quantisation step of the logged cell voltage (V); adds ``step^2 / 12`` of variance.
    current_noise_a
        1-sigma white noise of one current sample (A).
    current_offset_a
        1-sigma uncertainty of the current sensor's offset (A). It enters as a SoC random walk
        whose spread after one hour equals what this offset would integrate to in one hour.
    capacity_error
        Relative 1-sigma error of the nominal capacity (0.03 = 3 %): scales the current's
        contribution to the SoC process noise.
    resistance_error
        Relative 1-sigma error of the nominal R0 and RC resistance (0.5 = 50 %: cell spread,
        temperature, ageing, and the slow polarisation a one-pair model lacks). R0's share
        becomes measurement noise ``(resistance_error R0 i)^2`` and the RC's process noise on
        the RC voltage, so large currents weigh less than rests, where the voltage is nearly
        the OCV. The slow polarisation adds ``(resistance_error R_rc L)^2`` of measurement
        noise, with ``L`` the recent load (|current| averaged over ``polarisation_memory_s``),
        and the same voltage, converted to SoC by the OCV slope, to the reported ``soc_std``.
    polarisation_memory_s
        Time constant of the recent-load average (s): how long slow diffusion polarisation
        outlives a load (minutes for NMC and LFP).
    init
        How each cell starts, on the first row that has a voltage for it (multiplexed cell
        voltages arrive over the first few hundred ms; until its first voltage a cell reports
        ``initial_soc`` with ``initial_soc_std``): ``"auto"`` reads the SoC from that voltage
        as an OCV when the pack rests on that row (|current| below the rest threshold; SoC
        sigma ``ocv_init_soc_std``), else takes ``initial_soc`` (sigma ``initial_soc_std``);
        ``"ocv"`` always reads the voltage (R0 drop compensated); ``"given"`` always takes
        ``initial_soc``, from the first row.
    initial_soc, initial_soc_std
        Prior SoC (scalar or one per cell) and its 1-sigma when it is used (0.3: "unknown").
    ocv_init_soc_std
        1-sigma of an OCV-based start (the cells may not be relaxed when the log starts).
    initial_rc_voltage_std_v
        1-sigma of the initial RC voltage (V); the RC voltage starts at 0.
    rest_current_a
        See :meth:`rest_threshold_a` (None: C/50 or 3 sigma of the current noise). The EKF
        uses it only to decide an ``"auto"`` start; ``info["rest_periods"]`` lists rests.
    rest_debounce_s
        How long the current must stay at or above the rest threshold to end a rest (s), so
        that a few noisy samples do not (:mod:`packbms.kernels.rest`).
    max_hold_s
        Longest time a current sample is held (s); see the module docstring.
    update_on_change
        Use a cell voltage only on rows where it differs from the last one used. Telemetry holds
        each voltage until the next sample (zero-order hold) while the current runs faster; a
        held value is one measurement, and pairing it with later currents would bias the
        filter under load. A new sample equal to the old one (at 1 mV resolution) is skipped at
        no loss.
    use_temperature
        Scale R0 and the RC resistance with the chemistry's Arrhenius law at the mean measured
        cell temperature (when the telemetry has temperatures).
    ocv_error_v
        1-sigma error of the OCV table as a model of the cell (V): table error, hysteresis,
        relaxation the model lacks. It is *correlated*: the same error sits in every
        measurement for about ``ocv_error_time_s``, so many voltage samples cannot average it
        away. Each update adds ``ocv_error_v^2 * ocv_error_time_s / dt_u`` of measurement
        variance (``dt_u`` the time since the cell's previous update, at least
        ``ocv_error_v^2``): over one correlation time the voltage tells the SoC to
        ``ocv_error_v / slope`` and no better. This is what keeps the filter honest on flat
        OCV curves (LFP: 1 mV of error is 3 points of SoC on the 0.03 V/SoC plateau), where
        independent updates would make it over-confident. 0 disables the term.
    ocv_error_time_s
        Correlation time of the OCV error (s).
    """

    voltage_noise_v: float = 2.0e-3
    voltage_resolution_v: float = 1.0e-3
    resistance_error: float = 0.5
    initial_rc_voltage_std_v: float = 0.01
    polarisation_memory_s: float = 600.0
    update_on_change: bool = True
    ocv_error_v: float = 1.0e-3
    ocv_error_time_s: float = 400.0

    def check(self, n_cells: int) -> "EKFConfig":
        """Validate; returns self. Raises :class:`EstimationError` naming the field."""
        self._check(n_cells)
        for name in ("voltage_noise_v", "voltage_resolution_v", "resistance_error",
                     "initial_rc_voltage_std_v", "ocv_error_v"):
            v = getattr(self, name)
            if not _number(v, 0.0):
                raise EstimationError(f"EKFConfig.{name} = {v!r}: must be a finite number >= 0")
        for name in ("polarisation_memory_s", "ocv_error_time_s"):
            if not _number(getattr(self, name), 0.0, strict=True):
                raise EstimationError(f"EKFConfig.{name} = {getattr(self, name)!r}: must be a "
                                      f"finite number > 0")
        if self.voltage_noise_v == 0 and self.voltage_resolution_v == 0:
            raise EstimationError("EKFConfig: voltage_noise_v and voltage_resolution_v are both "
                                  "0; the measurement needs some noise")
        return self


@dataclass(frozen=True)
class CoulombConfig(_CommonConfig):
    """Coulomb counting with OCV initialisation and correction at rest.

    Rests: the pack rests while ``|current| < rest_threshold_a`` (default C/50 or 3 sigma of
    the current noise); a rest that lasts ``rest_min_s`` (default 300 s, five time constants
    of a 60 s diffusion relaxation) corrects every cell's SoC from its OCV. Relaxation-aware
    reading: the voltage is averaged over the rest with an exponential moving average of time
    constant ``ocv_average_s`` (30 s, so the unrelaxed start of the rest weighs
    ``exp(-rest_min_s / ocv_average_s) = 5e-5``), and the correction is repeated on every rest
    row after ``rest_min_s``, so counting resumes from the reading at the *end* of the rest.

    Start: see ``init`` in :class:`EKFConfig` (same options). With ``init="auto"`` and a log
    that starts under load, SoC starts at ``initial_soc`` and is only as good as that guess
    until the first rest of ``rest_min_s``.

    Error bound (stated and tested): after a correction at time ``t_c`` and until the next::

        |soc(t) - soc_true(t)| <= ocv_err / slope + |b| (t - t_c) / (3600 C)
                                  + delta_C |dQ| / C + 4 sigma_i sqrt(dt (t - t_c)) / (3600 C)

    with ``ocv_err`` the error of the averaged rest voltage as an OCV (V: residual polarisation,
    sensor offset, OCV table error), ``slope`` dOCV/dSoC there (V per unit SoC), ``b`` the
    current sensor offset (A, plus any self-discharge current), ``C`` the estimator's capacity
    (Ah), ``delta_C = |1 - C / C_true|`` its relative error, ``dQ`` the charge moved since
    ``t_c`` (Ah), ``sigma_i`` the current noise and ``dt`` the sample period (the last term is a
    4-sigma bound on integrated white noise). Before the first correction the first term is the
    initial SoC error. On the simulated drives (5-minute reading after a highway stretch) the
    first term dominates: about 0.5-0.9 points, from the polarisation left after 5 minutes;
    ``tests/test_soc_truth.py`` checks the bound with the drives' true error sources.
    ``soc_std`` reports the same terms as a 1-sigma with the configured ``ocv_error_v``,
    ``current_offset_a``, ``capacity_error`` and ``current_noise_a``, combined in quadrature.

    Attributes
    ----------
    rest_min_s
        Minimum rest duration before an OCV reading is used (s).
    ocv_average_s
        Time constant of the rest-voltage average (s).
    ocv_error_v
        1-sigma error of an averaged rest voltage taken as OCV (V): 3 mV covers the slow
        diffusion tail left after 5 min (up to ~7 mV right after 1 C driving, so 3 sigma) and a
        BMS front-end offset.
    current_offset_a, current_noise_a, capacity_error
        As in :class:`EKFConfig` (used for ``soc_std``).
    init, initial_soc, initial_soc_std, ocv_init_soc_std, rest_current_a, rest_debounce_s,
    max_hold_s, use_temperature
        As in :class:`EKFConfig` (temperature only matters for the R0 drop at an OCV start).
    """

    rest_min_s: float = 300.0
    ocv_average_s: float = 30.0
    ocv_error_v: float = 3.0e-3

    def check(self, n_cells: int) -> "CoulombConfig":
        """Validate; returns self. Raises :class:`EstimationError` naming the field."""
        self._check(n_cells)
        for name in ("rest_min_s", "ocv_average_s", "ocv_error_v"):
            v = getattr(self, name)
            if not _number(v, 0.0, strict=True):
                raise EstimationError(f"CoulombConfig.{name} = {v!r}: must be a finite "
                                      f"number > 0")
        return self


# ------------------------------------------------------------------------------------------------
# state
# ------------------------------------------------------------------------------------------------
_STATE_CELL_FIELDS = ("x", "P", "v_last", "updates", "init_kind", "v_avg", "t_since_s",
                      "h2_sum", "dq_ah", "rest_used", "n_corrections", "t_update")
#: State fields added after the first release: a checkpoint without them reads as NaN.
_STATE_OPTIONAL = {"t_update": np.nan}


@dataclass
class SocState:
    """Everything an estimator carries from one chunk of rows to the next.

    Attributes
    ----------
    method : str
        ``"ekf"``, ``"smoother"`` (the same filter state; either continues the other) or
        ``"coulomb"``.
    x : float64 [S, 2]
        Per cell: SoC (fraction, not clipped) and RC voltage (V; 0 for coulomb counting).
    P : float64 [S, 2, 2]
        EKF covariance. For coulomb counting ``P[:, 0, 0]`` is the SoC variance at the last
        correction (or start) and the rest is unused.
    v_last : float64 [S]
        Last cell voltage used by an EKF update (NaN: none).
    updates : int64 [S]
        EKF measurement updates made so far.
    init_kind : int64 [S]
        How each cell started: 0 not yet (no voltage seen), 1 from the prior ``initial_soc``,
        2 from its OCV.
    v_avg, t_since_s, h2_sum, dq_ah, rest_used : float64 [S]; n_corrections : int64 [S]
        Coulomb counting: averaged rest voltage (NaN: none), time (s), sum of squared hold
        steps (s^2) and charge (Ah) since the last correction, whether the current rest
        already corrected the cell, and rests used so far.
    t_update : float64 [S]
        EKF: time of each cell's last measurement update (s; NaN: none), for the correlated
        OCV error (:class:`EKFConfig` ``ocv_error_v``). A checkpoint written before this field
        existed reads as NaN.
    t_last_s, i_last_a : float
        Time (s, in the caller's time base) and current (A) of the last row; NaN before any.
    rest_start_s, rest_above_s : float
        Start of the rest in progress (NaN: none) and of the current excursion above the rest
        threshold within it (NaN: none); see :mod:`packbms.kernels.rest`.
    temp_last_c : float
        Last finite mean cell temperature (°C; NaN: none yet).
    rows : int
        Rows processed so far.
    """

    method: str
    x: np.ndarray
    P: np.ndarray
    v_last: np.ndarray
    updates: np.ndarray
    init_kind: np.ndarray
    v_avg: np.ndarray
    t_since_s: np.ndarray
    h2_sum: np.ndarray
    dq_ah: np.ndarray
    rest_used: np.ndarray
    n_corrections: np.ndarray
    t_update: np.ndarray = None  # type: ignore[assignment]
    t_last_s: float = float("nan")
    i_last_a: float = float("nan")
    rest_start_s: float = float("nan")
    rest_above_s: float = float("nan")
    load_a: float = float("nan")
    temp_last_c: float = float("nan")
    rows: int = 0

    def __post_init__(self):
        if self.t_update is None:
            self.t_update = np.full(self.x.shape[0], np.nan)

    @property
    def n_cells(self) -> int:
        """Number of cells S."""
        return int(self.x.shape[0])

    @property
    def soc(self) -> np.ndarray:
        """Current SoC per cell [S], clipped to 0..1."""
        return np.clip(self.x[:, 0], 0.0, 1.0)

    @property
    def soc_std(self) -> np.ndarray:
        """Current 1-sigma of the SoC per cell [S] (for coulomb counting: at the last row)."""
        return (np.sqrt(self.P[:, 0, 0]) if self.method in _EKF_METHODS
                else self._coulomb_std)

    _coulomb_std: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore

    def copy(self) -> "SocState":
        """A deep copy (the kernels update state arrays in place)."""
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in _STATE_CELL_FIELDS:
            kw[k] = np.array(kw[k], copy=True)
        if kw["_coulomb_std"] is not None:
            kw["_coulomb_std"] = np.array(kw["_coulomb_std"], copy=True)
        return SocState(**kw)

    def to_dict(self) -> dict:
        """Plain arrays and numbers (for checkpoints: ``np.savez(path, **state.to_dict())``).

        Examples
        --------
        >>> st = SocState.empty("ekf", 3)
        >>> SocState.from_dict(st.to_dict()).x.shape
        (3, 2)
        """
        d = {k: np.array(getattr(self, k), copy=True) for k in _STATE_CELL_FIELDS}
        d["method"] = self.method
        for k in ("t_last_s", "i_last_a", "rest_start_s", "rest_above_s",
                  "load_a", "temp_last_c"):
            d[k] = float(getattr(self, k))
        d["rows"] = int(self.rows)
        if self._coulomb_std is not None:
            d["coulomb_std"] = np.array(self._coulomb_std, copy=True)
        return d

    @classmethod
    def from_dict(cls, d) -> "SocState":
        """Inverse of :meth:`to_dict` (also accepts an ``np.load`` result of a ``.npz``).

        Raises
        ------
        EstimationError
            A missing key or arrays of inconsistent shapes.
        """
        try:
            method = str(np.asarray(d["method"]))
            x_shape = np.shape(d["x"])
            kw = {k: (np.array(d[k]) if k in d or k not in _STATE_OPTIONAL
                      else np.full(x_shape[:1], _STATE_OPTIONAL[k]))
                  for k in _STATE_CELL_FIELDS}
            scal = {k: float(np.asarray(d[k])) for k in ("t_last_s", "i_last_a", "rest_start_s",
                                                         "rest_above_s", "load_a",
                                                         "temp_last_c")}
            rows = int(np.asarray(d["rows"]))
            cstd = np.array(d["coulomb_std"]) if "coulomb_std" in d else None
        except KeyError as e:
            raise EstimationError(f"SoC state: missing key {e.args[0]!r}") from None
        if method not in METHODS:
            raise EstimationError(f"SoC state: unknown method {method!r}")
        s = kw["x"].shape[0] if kw["x"].ndim == 2 else -1
        if kw["x"].shape != (s, 2) or kw["P"].shape != (s, 2, 2) or any(
                kw[k].shape != (s,) for k in _STATE_CELL_FIELDS if k not in ("x", "P")):
            raise EstimationError("SoC state: inconsistent array shapes "
                                  f"{ {k: v.shape for k, v in kw.items()} }")
        for k in _STATE_CELL_FIELDS:
            dtype = np.int64 if k in ("updates", "init_kind", "n_corrections") else np.float64
            kw[k] = np.ascontiguousarray(kw[k], dtype=dtype)
        return cls(method=method, rows=rows, _coulomb_std=cstd, **kw, **scal)

    @classmethod
    def empty(cls, method: str, n_cells: int) -> "SocState":
        """A state before any row (SoC set on the first row from the config's ``init``)."""
        s = int(n_cells)
        nan = np.full(s, np.nan)
        return cls(method=method, x=np.zeros((s, 2)), P=np.zeros((s, 2, 2)), v_last=nan.copy(),
                   updates=np.zeros(s, np.int64), init_kind=np.zeros(s, np.int64),
                   v_avg=nan.copy(), t_since_s=np.zeros(s),
                   h2_sum=np.zeros(s), dq_ah=np.zeros(s), rest_used=np.zeros(s),
                   n_corrections=np.zeros(s, np.int64))


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
@dataclass
class PackSoc:
    """Pack-level SoC over time (all [T], or scalars for a single row).

    Attributes
    ----------
    min, max, mean
        Lowest, highest and arithmetic mean cell SoC (fractions).
    usable
        ``dischargeable_ah / (dischargeable_ah + chargeable_ah)``: the usable pack SoC.
    dischargeable_ah
        ``min_i soc_i C_i``: charge the string delivers before its first cell is empty.
    chargeable_ah
        ``min_i (1 - soc_i) C_i``: charge it takes before its first cell is full.
    """

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    usable: np.ndarray
    dischargeable_ah: np.ndarray
    chargeable_ah: np.ndarray

    @property
    def usable_capacity_ah(self) -> np.ndarray:
        """``dischargeable_ah + chargeable_ah``: the capacity the string can use now (Ah)."""
        return self.dischargeable_ah + self.chargeable_ah


def pack_soc(soc, capacity_ah) -> PackSoc:
    """Pack min, max, mean and usable SoC from per-cell SoC and capacity.

    The usable pack SoC is the charge the string can still deliver before its first cell is
    empty, over the charge between its first-empty and first-full limits::

        D = min_i soc_i C_i                      (dischargeable, Ah)
        U = min_i (1 - soc_i) C_i                (chargeable, Ah)
        usable = D / (D + U)

    as foxBMS and MathWorks Simscape Battery report it. For identical capacities it reduces to
    ``min / (min + 1 - max)``. SoC is clipped to 0..1 first.

    Parameters
    ----------
    soc
        [T, S] or [S] per-cell SoC (fractions).
    capacity_ah
        [S] cell capacities (Ah).

    Returns
    -------
    PackSoc
        Fields of shape [T] (or floats for [S] input). A row with a NaN SoC gives NaN.

    Raises
    ------
    EstimationError
        Shapes that disagree or capacities that are not positive.

    Examples
    --------
    >>> p = pack_soc([0.2, 0.5, 0.9], [10.0, 10.0, 10.0])
    >>> round(float(p.usable), 4)            # 2 Ah left / (2 Ah + 1 Ah headroom)
    0.6667
    """
    s = np.asarray(soc, dtype=np.float64)
    cap = np.asarray(capacity_ah, dtype=np.float64)
    if s.ndim not in (1, 2) or cap.ndim != 1 or s.shape[-1] != cap.shape[0]:
        raise EstimationError(f"pack_soc: soc {s.shape} must be [T, S] or [S] with S = "
                              f"len(capacity_ah) = {cap.shape}")
    if not np.all(cap > 0):
        raise EstimationError("pack_soc: capacity_ah must be > 0 for every cell")
    rows = _kernel_array(s.reshape(-1, s.shape[-1]))
    n = rows.shape[0]
    outs = [np.empty(n) for _ in range(6)]
    pack_soc_rows(rows, _kernel_array(cap), *outs)
    lo, hi, mean, usable, d, u = (o if s.ndim == 2 else o[0] for o in outs)
    return PackSoc(min=lo, max=hi, mean=mean, usable=usable, dischargeable_ah=d,
                   chargeable_ah=u)


@dataclass
class SocResult:
    """What :func:`estimate_soc` returns.

    Attributes
    ----------
    time_s : float64 [T]
    soc, soc_std : float64 [T, S]
        Per-cell SoC (0..1, clipped) and its 1-sigma.
    pack : PackSoc
        Pack min/max/mean/usable SoC [T] from ``soc`` and ``capacity_ah``.
    state : SocState
        The state after the last row: pass it as ``state=`` with the next chunk.
    method : str
    capacity_ah : float64 [S]
        Capacities the estimator used (nominal unless identified ones were passed).
    params : CellParams
        The estimator's cell parameters.
    config : EKFConfig or CoulombConfig
        The configuration used.
    info : dict
        ``rest_periods`` (list of ``(start_s, end_s)`` rests of at least ``rest_min_s``,
        300 s for the EKF), ``rest_threshold_a``, ``updates`` [S] (EKF) or
        ``corrections`` [S] (coulomb), ``init`` (per-cell "ocv"/"given", first chunk only),
        ``elapsed_s``; EKF and smoother: ``flat_ocv_fraction`` (share of cell-rows on a flat
        part of the OCV, slope below :data:`FLAT_OCV_SLOPE_V`: there the SoC rests on coulomb
        counting and the sigma says so); smoother: ``smoother_records`` (stored updates),
        ``smoother_memory_bytes`` and ``smoother_backward_s``.
    rows : int64 [R] or None
        The input rows the outputs stand for (``rows=`` of :func:`estimate_soc_arrays`);
        None: every row.
    """

    time_s: np.ndarray
    soc: np.ndarray
    soc_std: np.ndarray
    pack: PackSoc
    state: SocState
    method: str
    capacity_ah: np.ndarray
    params: CellParams
    config: object = None
    info: dict = field(default_factory=dict)
    rows: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        return int(self.soc.shape[1])

    def to_datasets(self) -> tuple[dict, dict]:
        """``(datasets, attrs)`` for the HDF5 result (paths of DESIGN.md).

        ``/cells/soc``, ``/cells/soc_std`` [T, S]; ``/pack/soc`` (the usable pack SoC),
        ``/pack/soc_min``, ``/pack/soc_max``, ``/pack/soc_mean`` [T]; attrs ``method`` and
        ``soc_config`` (JSON of the configuration).

        Examples
        --------
        >>> import numpy as np
        >>> r = estimate_soc_arrays(np.arange(3.0), np.zeros(3), np.full((3, 2), 3.75),
        ...                         nominal_params(2, 60.0))
        >>> sorted(r.to_datasets()[0])[:3]
        ['/cells/soc', '/cells/soc_std', '/pack/soc']
        """
        import json
        datasets = {"/cells/soc": self.soc, "/cells/soc_std": self.soc_std,
                    "/pack/soc": self.pack.usable, "/pack/soc_min": self.pack.min,
                    "/pack/soc_max": self.pack.max, "/pack/soc_mean": self.pack.mean}
        cfg = {} if self.config is None else {
            k: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, tuple, list)) else v)
            for k, v in dataclasses.asdict(self.config).items()}
        return datasets, {"method": self.method, "soc_config": json.dumps(cfg, sort_keys=True)}


# ------------------------------------------------------------------------------------------------
# parameters and tables
# ------------------------------------------------------------------------------------------------
def nominal_params(cells: int, capacity_ah: float, chemistry="nmc") -> CellParams:
    """Nominal one-RC estimator parameters for a string of identical cells.

    R0 = :data:`NOMINAL_R0_OHM_AH` / capacity, RC resistance = :data:`NOMINAL_RC_R_OHM_AH` /
    capacity, tau = :data:`NOMINAL_RC_TAU_S`, coulombic efficiency 0.999: typical values, not
    the pack's truth; :class:`EKFConfig.resistance_error` says how far off they may be.

    Parameters
    ----------
    cells
        Series cells S.
    capacity_ah
        Nominal capacity of one series element (Ah).
    chemistry
        Built-in name, CSV path or :class:`~packbms.cell.Chemistry`.

    Returns
    -------
    CellParams

    Examples
    --------
    >>> p = nominal_params(4, 60.0)
    >>> float(p.r0_ohm[0]), float(p.rc_r_ohm[0, 0]), float(p.rc_tau_s[0, 0])
    (0.001, 0.0005, 30.0)
    """
    cap = float(capacity_ah)
    return CellParams.build(int(cells), capacity_ah=cap, r0_ohm=NOMINAL_R0_OHM_AH / cap,
                            rc_r_ohm=NOMINAL_RC_R_OHM_AH / cap, rc_tau_s=NOMINAL_RC_TAU_S,
                            coulombic_efficiency=NOMINAL_COULOMBIC_EFFICIENCY,
                            chemistry=chemistry)


def _params_from_layout(layout) -> CellParams:
    chem = layout.ocv_table if layout.ocv_table is not None else layout.chemistry
    return nominal_params(layout.cells_in_series, layout.capacity_ah, chem)


def uniform_ocv_grid(chemistry, max_points: int = 2049) -> tuple[float, float, np.ndarray]:
    """The OCV table on a uniform SoC grid, for O(1) lookups in the EKF.

    If every knot of the table lies on a uniform grid of at most ``max_points`` points (the
    built-in tables: a 0.01 grid), that grid reproduces the piecewise-linear table exactly.
    Otherwise the table is resampled on ``max_points`` points (error at a kink of the table
    at most ``|slope change| h / 4``, below 1 mV for ordinary tables).

    Returns
    -------
    (s0, inv_h, ocv_v)
        First SoC knot, 1 / spacing, OCV at the grid knots.

    Examples
    --------
    >>> s0, inv_h, ocv = uniform_ocv_grid("nmc")
    >>> s0, round(1 / inv_h, 6), ocv.size
    (0.0, 0.01, 101)
    """
    chem = get_chemistry(chemistry)
    ts, tv = chem.soc, chem.ocv_v
    a, b = float(ts[0]), float(ts[-1])
    span = b - a
    rel = (ts - a) / span
    n_min = int(math.ceil(1.0 / float(np.min(np.diff(rel))) - 1e-9))
    n_int = None
    for n in range(max(1, n_min), max_points):
        u = rel * n
        if np.all(np.abs(u - np.rint(u)) < 1e-9):
            n_int = n
            break
    if n_int is None:
        n_int = max_points - 1
    grid_s = a + span * np.arange(n_int + 1) / n_int
    if n_int is not None:
        # snap knots that should coincide so np.interp reproduces the table exactly
        grid_s[np.rint(rel * n_int).astype(np.int64)] = ts
    ocv = np.interp(grid_s, ts, tv)
    return a, n_int / span, np.ascontiguousarray(ocv)


@functools.lru_cache(maxsize=16)
def _cached_grid(chem) -> tuple:
    """:func:`uniform_ocv_grid` per chemistry, computed once (live chunks call often)."""
    return uniform_ocv_grid(chem)


def _one_rc(params: CellParams) -> tuple[np.ndarray, np.ndarray]:
    """The estimator's single RC pair: one pair as is; two pairs lumped (R summed, tau
    resistance-weighted)."""
    r = params.rc_r_ohm
    tau = params.rc_tau_s
    if r.shape[1] == 1:
        return np.ascontiguousarray(r[:, 0]), np.ascontiguousarray(tau[:, 0])
    rs = r.sum(axis=1)
    return np.ascontiguousarray(rs), np.ascontiguousarray((r * tau).sum(axis=1) / rs)


# ------------------------------------------------------------------------------------------------
# the estimators
# ------------------------------------------------------------------------------------------------
def _kernel_array(a, dtype=np.float64) -> np.ndarray:
    """A writable C-contiguous array: Numba compiles a separate version of a kernel for
    read-only arrays (broadcast views, a Chemistry's tables), costing seconds at a cold start."""
    return np.require(np.asarray(a, dtype=dtype), dtype, ["C", "W"])


def _as_f64(a, name: str, ndim: int) -> np.ndarray:
    try:
        out = _kernel_array(a)
    except (TypeError, ValueError) as e:
        raise EstimationError(f"{name}: expected numbers ({e})") from e
    if out.ndim != ndim:
        raise EstimationError(f"{name}: expected {ndim}-D, got shape {out.shape}")
    return out


_INIT_MODES = {"given": INIT_GIVEN, "auto": INIT_AUTO, "ocv": INIT_OCV}
_KIND_NAMES = {KIND_PENDING: "pending", KIND_GIVEN: "given", KIND_OCV: "ocv"}


def _resistance_factor(params: CellParams, temperature_c, state: SocState, n_t: int,
                       use: bool) -> np.ndarray:
    """Per-row Arrhenius factor from the mean cell temperature (held across NaN rows)."""
    if not use or temperature_c is None or params.chemistry.r_activation_k == 0.0:
        return np.ones(n_t)
    t = np.asarray(temperature_c, dtype=np.float64)
    if t.ndim == 2:
        with np.errstate(invalid="ignore"), _quiet():
            t = np.nanmean(t, axis=1) if t.shape[1] else np.full(n_t, np.nan)
    if t.shape != (n_t,):
        raise EstimationError(f"temperature_c: expected [T] or [T, K] with T = {n_t}, got "
                              f"{np.shape(temperature_c)}")
    # forward fill, starting from the state's last value
    filled = np.concatenate(([state.temp_last_c], t))
    idx = np.where(np.isfinite(filled), np.arange(filled.size), 0)
    np.maximum.accumulate(idx, out=idx)
    filled = filled[idx][1:]
    if np.isfinite(filled).any():
        state.temp_last_c = float(filled[np.flatnonzero(np.isfinite(filled))[-1]])
    filled = np.where(np.isfinite(filled), filled, params.chemistry.t_ref_k - 273.15)
    return _kernel_array(params.chemistry.resistance_factor(filled + 273.15))


class _quiet:
    """Silence numpy's 'mean of empty slice' warning inside a with block."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def _rest_periods(time_s: np.ndarray, age: np.ndarray, min_s: float) -> list:
    """``(start_s, end_s)`` of the rests in ``age`` at least ``min_s`` long (a rest still in
    progress at the last row ends there)."""
    if time_s.size == 0:
        return []
    at_rest = age >= 0
    edges = np.diff(np.concatenate(([0], at_rest.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    out = []
    for a, b in zip(starts, ends):
        t_start = float(time_s[a] - age[a])
        if age[b] >= min_s:
            out.append((t_start, float(time_s[b])))
    return out


def _smoother_records(t, v, st: SocState, cfg) -> dict:
    """Record arrays for the RTS smoother: the filtered state at every measurement update.

    Memory: 48 bytes per record (row int64, x 2 x float64, P 3 x float64); a cell records on
    its start and on every update, i.e. at its voltage refresh rate (5 Hz on the reference
    BMS), not at the current's 100 Hz: 1.7 MB per cell-hour at 5 Hz, 166 MB for an hour of 96
    cells. The [T, S] SoC and std outputs (8 bytes each per cell and row) are larger.
    """
    n_s = v.shape[1]
    cnt = np.empty(n_s, np.int64)
    record_capacity(t, v, st.init_kind, bool(cfg.update_on_change), st.v_last, cnt,
                    block_width(n_s, numba.get_num_threads()))
    off = np.zeros(n_s + 1, np.int64)
    np.cumsum(cnt, out=off[1:])
    total = int(off[-1])
    return dict(rec_off=off, rec_row=np.empty(total, np.int64), rec_x=np.empty((total, 2)),
                rec_p=np.empty((total, 3)), rec_n=np.zeros(n_s, np.int64))


def _flat_fraction(soc: np.ndarray, chem, max_rows: int = 2_000) -> float:
    """Fraction of cell-rows whose SoC sits where the OCV is flat (slope below
    :data:`FLAT_OCV_SLOPE_V`), on at most ``max_rows`` evenly spaced rows."""
    if soc.size == 0:
        return 0.0
    step = -(-soc.shape[0] // max_rows)
    sample = np.ascontiguousarray(soc[::step])
    slope = chem.docv_dsoc(sample)
    return float(np.mean(np.abs(slope) < FLAT_OCV_SLOPE_V))


def estimate_soc_arrays(time_s, current_a, cell_voltage_v, params: CellParams, *,
                        method: str = "ekf", config=None, state: SocState | None = None,
                        temperature_c=None, rows=None, _hold=None) -> SocResult:
    """Estimate every cell's SoC from plain arrays.

    Parameters
    ----------
    time_s
        [T] row times (s), non-decreasing; when ``state`` is given they continue its time base.
    current_a
        [T] pack current (A, positive = discharge).
    cell_voltage_v
        [T, S] cell voltages (V); NaN where no fresh value exists (stale), the estimator then
        predicts without a measurement.
    params
        The estimator's cell parameters (:func:`nominal_params`, or identified ones). With two
        RC pairs the EKF lumps them into one (resistances summed, tau resistance-weighted).
    method
        ``"ekf"``, ``"smoother"`` (offline: the whole call's rows smoothed; see the module
        docstring) or ``"coulomb"``.
    config
        :class:`EKFConfig` (ekf, smoother) / :class:`CoulombConfig` (default: the defaults of
        ``method``).
    state
        The ``state`` of a previous result to continue from; None starts afresh (SoC from the
        first row as ``config.init`` says). It is not modified; the result holds a new one.
    temperature_c
        Optional [T] or [T, K] cell temperatures (°C, NaN allowed) for the resistances.
    rows
        Optional increasing row indices: the estimator still runs on every row, but the
        result (``time_s``, ``soc``, ``soc_std``, ``pack``) holds only these rows (a 100 Hz
        drive kept at 10 Hz: a tenth of the output memory, and the EKF and smoother skip the
        work of the rows nobody keeps). None keeps every row.

    Returns
    -------
    SocResult

    Raises
    ------
    EstimationError
        Unknown method, shapes that disagree, times not increasing, a config of the other
        method, a state of another method or cell count.

    Examples
    --------
    >>> import numpy as np
    >>> p = nominal_params(2, 60.0)
    >>> t = np.arange(5.0)
    >>> v = np.full((5, 2), 3.75)
    >>> r = estimate_soc_arrays(t, np.zeros(5), v, p)
    >>> np.round(r.soc[-1], 3)
    array([0.5, 0.5])
    """
    t_start = _time.perf_counter()
    if method not in METHODS:
        from .errors import closest_names
        raise EstimationError(f"unknown SoC method {method!r}: expected one of {list(METHODS)} "
                              f"(best matches: {closest_names(str(method), METHODS)})")
    if not isinstance(params, CellParams):
        raise EstimationError(f"params must be a packbms.cell.CellParams, got "
                              f"{type(params).__name__}")
    t = _as_f64(time_s, "time_s", 1)
    i = _as_f64(current_a, "current_a", 1)
    v = _as_f64(cell_voltage_v, "cell_voltage_v", 2)
    n_t, n_s = v.shape
    if t.shape[0] != n_t or i.shape[0] != n_t:
        raise EstimationError(f"time_s {t.shape}, current_a {i.shape} and cell_voltage_v "
                              f"{v.shape} must have the same number of rows")
    if n_s != params.n_cells:
        raise EstimationError(f"cell_voltage_v has {n_s} cells but params describe "
                              f"{params.n_cells}")
    if not np.all(np.isfinite(t)) or not np.all(np.isfinite(i)):
        raise EstimationError("time_s and current_a must be finite (drop NaN rows first)")
    if n_t > 1 and np.any(np.diff(t) < 0):
        k = int(np.flatnonzero(np.diff(t) < 0)[0]) + 1
        raise EstimationError(f"time_s must be non-decreasing; row {k} goes back from "
                              f"{t[k - 1]} s to {t[k]} s")
    want = EKFConfig if method in _EKF_METHODS else CoulombConfig
    cfg = want() if config is None else config
    if not isinstance(cfg, want):
        raise EstimationError(f"method {method!r} takes a {want.__name__}, got "
                              f"{type(cfg).__name__}")
    cfg.check(n_s)
    if state is None:
        st = SocState.empty(method, n_s)
    else:
        if not isinstance(state, SocState):
            raise EstimationError("state must be a SocState (SocState.from_dict reads a dict)")
        same = (state.method == method
                or (state.method in _EKF_METHODS and method in _EKF_METHODS))
        if not same or state.n_cells != n_s:
            raise EstimationError(f"state is for method {state.method!r} with {state.n_cells} "
                                  f"cells; this call is {method!r} with {n_s}")
        st = state.copy()
        st.method = method
        if n_t and st.t_last_s == st.t_last_s and t[0] < st.t_last_s:
            raise EstimationError(f"time_s starts at {t[0]} s, before the state's last row "
                                  f"({st.t_last_s} s): chunks must continue one time base")

    if rows is None:
        keep = None
        n_out = n_t
        out_at = np.arange(n_t, dtype=np.int64)
    else:
        keep = np.asarray(rows)
        if keep.ndim != 1 or (keep.size and (keep.dtype.kind not in "iu"
                                             or keep[0] < 0 or keep[-1] >= n_t
                                             or np.any(np.diff(keep) <= 0))):
            raise EstimationError(f"rows must be increasing integer row indices in 0..{n_t - 1}")
        keep = keep.astype(np.int64)
        n_out = len(keep)
        out_at = np.full(n_t, -1, np.int64)
        out_at[keep] = np.arange(n_out)

    threshold = cfg.rest_threshold_a(params.capacity_ah)
    rf = _resistance_factor(params, temperature_c, st, n_t, cfg.use_temperature)
    info: dict = {"rest_threshold_a": threshold}
    prior = _kernel_array(np.broadcast_to(np.asarray(cfg.initial_soc, dtype=np.float64),
                                          (n_s,)))
    mode = _INIT_MODES[cfg.init]
    prior_var = float(cfg.initial_soc_std) ** 2
    ocv_var = float(cfg.ocv_init_soc_std) ** 2
    table_soc, table_ocv = (_kernel_array(a) for a in params.chemistry.tables()[:2])
    cap, r0, eta = (_kernel_array(a) for a in (params.capacity_ah, params.r0_ohm,
                                               params.coulombic_efficiency))
    width = block_width(n_s, numba.get_num_threads())

    age = np.empty(n_t)
    quiet = np.empty(n_t, dtype=np.bool_)
    rest_state = np.array([st.rest_start_s, st.rest_above_s])
    rest_age(t, i, threshold, float(cfg.rest_debounce_s), rest_state, age, quiet)
    st.rest_start_s, st.rest_above_s = float(rest_state[0]), float(rest_state[1])
    pack_state = np.array([st.t_last_s, st.i_last_a, st.load_a])
    out_soc = np.empty((n_out, n_s))
    out_std = np.empty((n_out, n_s))
    chem = params.chemistry
    if method in _EKF_METHODS:
        r1, tau1 = (_kernel_array(a) for a in _one_rc(params))
        s0, inv_h, grid = _cached_grid(chem)
        grid = grid.copy()
        noise = (float(cfg.max_hold_s), cfg.current_noise_a ** 2, cfg.current_offset_a ** 2,
                 cfg.capacity_error ** 2, cfg.resistance_error ** 2,
                 cfg.voltage_noise_v ** 2 + cfg.voltage_resolution_v ** 2 / 12.0,
                 cfg.resistance_error ** 2, float(cfg.polarisation_memory_s),
                 bool(cfg.update_on_change))
        rec = {}
        if method == "smoother":
            rec = _smoother_records(t, v, st, cfg)
            pack_state0 = pack_state.copy()
        # per-row resistance factor: scale R by the factor of each row through the current
        # (R0 i and R1 i appear only as products with i)
        ekf_run(t, i, v, cap, r0, r1, tau1, eta, s0, inv_h, grid, table_soc, table_ocv,
                *noise, rf, mode, threshold, prior, prior_var, ocv_var,
                float(cfg.initial_rc_voltage_std_v) ** 2,
                st.x, st.P, st.v_last, st.init_kind, pack_state, out_at, out_soc, out_std,
                st.updates,
                width, float(cfg.ocv_error_v) ** 2, float(cfg.ocv_error_time_s), st.t_update,
                **rec)
        if method == "smoother" and _hold is not None:   # SmootherStream: backward later
            _hold._collect(t, i, rf, rec, pack_state0, out_at,
                           (noise[0], noise[7], cap, r1, tau1, eta, s0, inv_h, grid, noise[1],
                            noise[2], noise[3], noise[4], noise[6]))
        elif method == "smoother":
            t_b = _time.perf_counter()
            rts_smooth(t, i, pack_state0, noise[0], noise[7], cap, r1, tau1, eta, s0, inv_h,
                       grid, noise[1], noise[2], noise[3], noise[4], noise[6], rf,
                       rec["rec_off"], rec["rec_n"], rec["rec_row"], rec["rec_x"],
                       rec["rec_p"], out_at, out_soc, out_std, False, prior, 0.0)
            info["smoother_records"] = int(rec["rec_n"].sum())
            info["smoother_memory_bytes"] = int(rec["rec_row"].nbytes + rec["rec_x"].nbytes
                                                + rec["rec_p"].nbytes)
            info["smoother_backward_s"] = _time.perf_counter() - t_b
        info["updates"] = st.updates.copy()
        info["flat_ocv_fraction"] = _flat_fraction(out_soc, chem)
        rest_min = 300.0
    else:
        if keep is not None:                       # the coulomb kernel writes every row
            out_soc = np.empty((n_t, n_s))
            out_std = np.empty((n_t, n_s))
        p00 = np.ascontiguousarray(st.P[:, 0, 0])
        soc_c = np.ascontiguousarray(st.x[:, 0])
        coulomb_run(t, i, v, age, quiet, cap, eta, r0, rf, table_soc, table_ocv,
                    float(cfg.max_hold_s),
                    float(cfg.rest_min_s), float(cfg.ocv_average_s), cfg.current_noise_a ** 2,
                    cfg.current_offset_a ** 2, cfg.capacity_error ** 2, cfg.ocv_error_v ** 2,
                    mode, threshold, prior, prior_var, ocv_var,
                    soc_c, p00, st.v_avg, st.t_since_s, st.h2_sum, st.dq_ah, st.rest_used,
                    st.n_corrections, st.init_kind, pack_state, out_soc, out_std, width)
        st.x[:, 0] = soc_c
        st.P[:, 0, 0] = p00
        if n_t:
            st._coulomb_std = out_std[-1].copy()
        if keep is not None:
            out_soc, out_std = out_soc[keep], out_std[keep]
        info["corrections"] = st.n_corrections.copy()
        rest_min = float(cfg.rest_min_s)
    st.t_last_s = float(pack_state[0])
    st.i_last_a = float(pack_state[1])
    if method in _EKF_METHODS:
        st.load_a = float(pack_state[2])
    st.rows += n_t
    info["init"] = [_KIND_NAMES[int(k)] for k in st.init_kind]
    info["rest_periods"] = _rest_periods(t, age, rest_min)
    info["elapsed_s"] = _time.perf_counter() - t_start
    return SocResult(time_s=t if keep is None else t[keep], soc=out_soc, soc_std=out_std,
                     pack=pack_soc(out_soc, cap), state=st, method=method,
                     capacity_ah=params.capacity_ah.copy(), params=params, config=cfg,
                     info=info, rows=keep)


class SmootherStream:
    """The RTS smoother fed chunk by chunk, for drives too long to hold.

    :meth:`push` runs the forward filter on a chunk (exactly :func:`estimate_soc_arrays` with
    ``method="smoother"``, state carried) and keeps only what the backward pass needs: the
    filtered state at each measurement update (48 bytes per cell-update) and the chunk's time,
    current and resistance factor ([T] arrays); its voltages can be dropped. :meth:`finish`
    runs the backward pass over everything pushed and returns the smoothed SoC at the rows
    asked for: the same numbers as one ``estimate_soc_arrays(..., method="smoother")`` call
    over the whole drive.

    Parameters
    ----------
    params, config
        As for :func:`estimate_soc_arrays` (an :class:`EKFConfig`).

    Examples
    --------
    >>> p = nominal_params(2, 60.0)
    >>> sm = SmootherStream(p)
    >>> t = np.arange(10.0)
    >>> for a in (0, 5):
    ...     f = sm.push(t[a:a + 5], np.full(5, 10.0), np.full((5, 2), 3.7))
    >>> sm.finish().soc.shape
    (10, 2)
    """

    def __init__(self, params: CellParams, config: EKFConfig | None = None):
        self.params = params
        self.config = EKFConfig() if config is None else config
        self.state: SocState | None = None
        self.rows_seen = 0
        self._parts: list = []
        self._fixed = None
        self._pack_state0 = None
        self._finished = False
        self.info: dict = {}

    @property
    def memory_bytes(self) -> int:
        """Bytes held for the backward pass so far."""
        return int(sum(a.nbytes for part in self._parts for a in part.values()
                       if a is not None))

    def push(self, time_s, current_a, cell_voltage_v, temperature_c=None,
             rows=None) -> SocResult:
        """Filter one chunk (rows continue the previous chunk's time base).

        Returns the filtered :class:`SocResult` at ``rows`` (chunk-local; None: every row);
        rows of the chunk that :meth:`finish` may be asked for must be among them.
        """
        if self._finished:
            raise EstimationError("SmootherStream.push after finish: start a new stream")
        res = estimate_soc_arrays(time_s, current_a, cell_voltage_v, self.params,
                                  method="smoother", config=self.config, state=self.state,
                                  temperature_c=temperature_c, rows=rows, _hold=self)
        self.state = res.state
        self.info = res.info
        return res

    def _collect(self, t, i, rf, rec, pack_state0, out_at, fixed):
        if self._pack_state0 is None:
            self._pack_state0 = pack_state0
            self._fixed = fixed
            self._prior = _kernel_array(np.broadcast_to(np.asarray(
                self.config.initial_soc, dtype=np.float64), (self.params.n_cells,)))
        self._parts.append({"t": np.array(t), "i": np.array(i), "rf": np.array(rf),
                            **rec, "row0": np.array(self.rows_seen),
                            "kept": np.flatnonzero(out_at >= 0) + self.rows_seen})
        self.rows_seen += len(t)

    def finish(self, rows=None) -> SocResult:
        """The backward pass: smoothed SoC at ``rows`` (indices over every row pushed, among
        the rows each push kept; None: every kept row). Once: it consumes what was held."""
        if self._finished:
            raise EstimationError("SmootherStream.finish: already finished (it consumes "
                                  "what was held; start a new stream)")
        if not self._parts:
            raise EstimationError("SmootherStream.finish: nothing was pushed")
        t_b = _time.perf_counter()
        def cat(key):
            return np.concatenate([p[key] for p in self._parts])

        t, i, rf, kept = cat("t"), cat("i"), cat("rf"), cat("kept")
        if rows is None:    # checked before the records are merged (and freed)
            want = kept
        else:
            want = np.asarray(rows, dtype=np.int64)
            if want.ndim != 1 or np.any(np.diff(want) <= 0) or not np.all(np.isin(want, kept)):
                raise EstimationError("SmootherStream.finish: rows must be increasing and "
                                      "among the rows kept by push")
        n_s = self.params.n_cells
        # records cell by cell, chunk after chunk
        counts = np.stack([p["rec_n"] for p in self._parts])             # [chunks, S]
        per_cell = counts.sum(axis=0)
        rec_off = np.zeros(n_s + 1, np.int64)
        np.cumsum(per_cell, out=rec_off[1:])
        total = int(rec_off[-1])
        rec_row = np.empty(total, np.int64)
        rec_x = np.empty((total, 2))
        rec_p = np.empty((total, 3))
        nxt = rec_off[:-1].copy()
        for r in self._parts:
            merge_records(r["rec_off"], r["rec_n"], r["rec_row"], r["rec_x"], r["rec_p"],
                          int(r["row0"]), nxt, rec_row, rec_x, rec_p)
            for key in ("rec_row", "rec_x", "rec_p"):      # freed as they are merged
                r[key] = None
        out_at = np.full(len(t), -1, np.int64)
        out_at[want] = np.arange(len(want))
        out_soc = np.empty((len(want), n_s))
        out_std = np.empty((len(want), n_s))
        (max_hold, load_tau, cap, r1, tau1, eta, s0, inv_h, grid, q_noise, q_off, q_cap,
         q_rc, r_res) = self._fixed
        rts_smooth(t, i, self._pack_state0, max_hold, load_tau, cap, r1, tau1, eta, s0, inv_h,
                   grid, q_noise, q_off, q_cap, q_rc, r_res, rf, rec_off, per_cell.astype(
                       np.int64), rec_row, rec_x, rec_p, out_at, out_soc, out_std, True,
                   self._prior, float(self.config.initial_soc_std))
        info = dict(self.info)
        info["smoother_records"] = total
        info["smoother_memory_bytes"] = int(rec_row.nbytes + rec_x.nbytes + rec_p.nbytes)
        info["smoother_backward_s"] = _time.perf_counter() - t_b
        info["flat_ocv_fraction"] = _flat_fraction(out_soc, self.params.chemistry)
        self._parts = []
        self._finished = True
        cap_k = _kernel_array(self.params.capacity_ah)
        return SocResult(time_s=t[want], soc=out_soc, soc_std=out_std,
                         pack=pack_soc(out_soc, cap_k), state=self.state, method="smoother",
                         capacity_ah=self.params.capacity_ah.copy(), params=self.params,
                         config=self.config, info=info, rows=want)


def estimate_soc(telemetry, params: CellParams | None = None, *, layout=None,
                 method: str = "ekf", config=None, state: SocState | None = None,
                 rows=None) -> SocResult:
    """Estimate every cell's SoC over a drive.

    Parameters
    ----------
    telemetry
        A :class:`packbms.telemetry.PackTelemetry` (time, current, cell voltages with NaN where
        stale, optional temperatures).
    params
        Estimator cell parameters; None builds :func:`nominal_params` from ``layout``
        (``cells_in_series``, ``capacity_ah``, ``chemistry`` or ``ocv_table``).
    layout
        A :class:`packbms.layout.Layout`; needed when ``params`` is None.
    method
        ``"ekf"`` (default), ``"smoother"`` (offline, whole drive) or ``"coulomb"``.
    config
        :class:`EKFConfig` or :class:`CoulombConfig`.
    state
        Continue from a previous result's ``state`` (live monitoring, chunked logs).
    rows
        Keep only these rows in the result (see :func:`estimate_soc_arrays`).

    Returns
    -------
    SocResult

    Raises
    ------
    EstimationError
        Neither params nor layout, cell counts that disagree, or any error of
        :func:`estimate_soc_arrays`.

    Examples
    --------
    >>> tel, lay = load_telemetry("data/drive_96s.blf", "data/pack96.dbc",
    ...                           "data/pack96.toml")                          # doctest: +SKIP
    >>> res = estimate_soc(tel, layout=lay)                                    # doctest: +SKIP
    >>> res.soc.shape, float(res.pack.usable[-1])                              # doctest: +SKIP
    ((150000, 96), 0.68...)
    """
    if params is None:
        if layout is None:
            raise EstimationError("estimate_soc needs params or a layout (for the capacity and "
                                  "chemistry)")
        params = _params_from_layout(layout)
    where = f"{telemetry.source}: " if getattr(telemetry, "source", None) else ""
    if telemetry.cell_voltage.shape[1] != params.n_cells:
        raise EstimationError(f"{where}telemetry has {telemetry.cell_voltage.shape[1]} cells but "
                              f"the parameters describe {params.n_cells}")
    try:
        return estimate_soc_arrays(telemetry.time, telemetry.current, telemetry.cell_voltage,
                                   params, method=method, config=config, state=state,
                                   temperature_c=telemetry.cell_temperature, rows=rows)
    except EstimationError as e:
        if where:
            raise EstimationError(f"{where}{e}") from e
        raise
