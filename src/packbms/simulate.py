"""Pack simulator: realistic CAN logs of a series string with ground truth.

Each of S series cells is an equivalent-circuit model (:mod:`packbms.cell`: OCV(SoC, T), R0, one
or two RC pairs, capacity, coulombic efficiency, self-discharge current, Arrhenius resistance)
with a lumped per-cell temperature. The cells differ by a seeded, realistic spread (capacity,
resistance, initial SoC, optional outlier cells). One pack current profile (rest, urban
stop-and-go with regenerative braking, highway, CC charging) drives them on a 10 ms step
(:func:`packbms.kernels.ecm.simulate_ecm`, exact RC discretisation under zero-order hold).

What a BMS would put on the bus is then encoded with :func:`packbms.dbc.encode` against the
reference database (:func:`make_dbc_text`; ``data/pack96.dbc`` is its 96-cell instance):

========================  =========  ======================================================
message                   rate       content
========================  =========  ======================================================
BMS_PackStatus 0x100      100 Hz     pack current (17-bit Motorola, 0.01 A, **positive =
                                     charge** on the bus), pack voltage (0.01 V), counter
BMS_CellVoltages 0x200    5 Hz/cell  mux ``CellGroup`` g: cells 3g+1..3g+3 in V1..V3 (1 mV);
                                     the G groups spread over each 200 ms
BMS_CellTemperatures      1 Hz       extended id 0x18FF50E5; mux ``TempGroup`` g: sensors
                                     4g+1..4g+4 in T1..T4 (0.5 °C, offset -40)
BMS_Balancing 0x300       1 Hz       mux ``BalGroup`` g: Bal1..Bal48 = cells 48g+1..48g+48
BMS_CellSummary 0x310     1 Hz       min/max cell voltage and index, max temperature, state
========================  =========  ======================================================

Sensor effects: cell-voltage noise then 1 mV quantisation, current noise plus a constant offset
(0.01 A quantisation), pack-voltage noise, temperature noise (0.5 °C quantisation), and
timestamp jitter on every frame; frames are interleaved and sorted by time. Timestamps are
absolute: ``t0_unix`` (default 2026-01-01T08:00:00Z) plus the simulated time.

Everything is seeded: the same ``seed`` and :class:`SimConfig` give identical frames and truth.
Independent random streams (profile, cell spread, sensor noise, timing jitter) are spawned from
the seed, so changing the noise level does not change the cells or the drive.

Public API: :class:`SimConfig`, :func:`simulate_pack`, :class:`SimResult`, :class:`Truth`,
:func:`make_profile`, :class:`Profile`, :func:`parse_segments`, :func:`draw_cells`,
:func:`write_simulation`, :func:`write_truth`, :func:`load_truth`, :func:`make_dbc_text`,
:func:`make_layout_text`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._version import __version__
from .cell import CellParams, Chemistry, get_chemistry
from .errors import PackBMSError, StorageError, closest_names
from .io.frames import FrameTable
from .kernels.ecm import simulate_ecm

__all__ = [
    "SimConfig", "SimResult", "Truth", "Profile", "Segment", "SEGMENT_KINDS", "simulate_pack",
    "make_profile", "parse_segments", "default_segments", "draw_cells", "write_simulation",
    "check_output_paths",
    "write_truth", "load_truth", "make_dbc_text", "make_layout_text", "DEFAULT_T0_UNIX",
    "CELLS_PER_VOLTAGE_FRAME", "SENSORS_PER_TEMPERATURE_FRAME", "FLAGS_PER_BALANCING_FRAME",
]

#: 2026-01-01T08:00:00Z, the default absolute start of a simulated log.
DEFAULT_T0_UNIX = 1767254400.0
#: Segment kinds a profile is made of, with their code in the truth file.
SEGMENT_KINDS = ("rest", "urban", "highway", "charge")
CELLS_PER_VOLTAGE_FRAME = 3
SENSORS_PER_TEMPERATURE_FRAME = 4
FLAGS_PER_BALANCING_FRAME = 48
#: BMS_CellSummary state values.
STATE_REST, STATE_DRIVE, STATE_CHARGE = 0, 1, 2

_TRUTH_SCHEMA = "packbms.truth"
_TRUTH_VERSION = 1

ID_PACK = 0x100
ID_CELLS = 0x200
ID_TEMPS = 0x18FF50E5
ID_BALANCING = 0x300
ID_SUMMARY = 0x310


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a simulated drive (the seed is passed separately).

    Cell indices in this class are 0-based (the CLI takes 1-based cell numbers).

    Attributes
    ----------
    cells
        Number of series cells S (1..765).
    chemistry
        Built-in chemistry name or an OCV CSV path (see :func:`packbms.cell.get_chemistry`).
    capacity_ah, r0_ohm
        Nominal capacity (Ah) and ohmic resistance (Ohm, at 25 °C) of a cell.
    n_rc, rc_r_ohm, rc_tau_s
        Number of RC pairs (1 or 2) and their nominal resistances (Ohm) and time constants (s);
        ``None`` picks defaults for ``n_rc``: 1 pair (0.5 mOhm, 30 s) or 2 pairs
        (0.3 mOhm, 8 s; 0.5 mOhm, 250 s).
    coulombic_efficiency
        Fraction of charge current stored.
    self_discharge_a
        Nominal self-discharge current of a healthy cell (A).
    duration_s, rest_s, initial_rest_s, segments, charge_c_rate
        The current profile: with ``segments`` ``None``, :func:`default_segments` lays out
        ``duration_s`` with an initial rest of ``initial_rest_s``, a rest of ``rest_s`` after a
        first drive, then a CC charge at ``charge_c_rate`` and a last urban drive. Otherwise
        ``segments`` is a sequence of ``(kind, seconds)`` and sets the duration.
    initial_soc, initial_soc_sigma
        Mean and standard deviation of the cells' initial SoC (fractions).
    capacity_sigma, r0_sigma, rc_sigma
        Relative standard deviations of capacity, R0 and the RC resistances. Spreads are normal
        and clipped at 3 sigma.
    self_discharge_cells, outlier_self_discharge_a
        Cells with an abnormal self-discharge current (A).
    high_resistance_cells, high_resistance_factor
        Cells whose R0 and RC resistances are multiplied by the factor.
    weak_cells, weak_capacity_factor
        Cells whose capacity is multiplied by the factor.
    thermal, ambient_c, ambient_sigma_c, thermal_r_k_per_w, thermal_c_j_per_k
        Lumped per-cell thermal model (Joule heat in, conduction to a per-cell ambient out);
        ``thermal=False`` holds every cell at its ambient temperature.
    bleed_current_a, balance_threshold_v
        Passive balancing: while the pack rests or charges (the segment at the start of each
        second), cells more than the threshold above the lowest cell (voltages at the end of
        the previous second) bleed this current for that second. 0 disables it.
    dt_s
        Simulation step (s); must be 10 ms or divide it (the pack message runs every 10 ms).
    truth_rate_hz
        Rate of the stored truth (>= 1 Hz; ``1 / truth_rate_hz`` must be a whole number of
        steps dividing 1 s).
    voltage_noise_v, current_noise_a, current_offset_a, pack_voltage_noise_v,
    temperature_noise_c, jitter_s
        Sensor effects (standard deviations, except the offset). ``current_offset_a`` is added
        to the measured current in packbms' convention (positive = discharge): the log reads
        this much more discharge than flows.
    cell_voltage_period_s, temperature_period_s
        Refresh period of every cell voltage (each of the G mux groups is sent once per
        period, spread evenly) and of every temperature sensor (a multiple of the truth
        period: sensors are sampled on a truth row).
    temperature_sensors
        Number of temperature sensors (``None``: one per 3 cells); sensor j measures cell
        ``min(3 j + 1, S - 1)``.
    t0_unix
        Absolute time of the first simulated step (Unix s).
    channel
        CAN channel index written into the frames.
    """

    cells: int = 96
    chemistry: str = "nmc"
    capacity_ah: float = 60.0
    r0_ohm: float = 1.0e-3
    n_rc: int = 2
    rc_r_ohm: tuple | None = None
    rc_tau_s: tuple | None = None
    coulombic_efficiency: float = 0.999
    self_discharge_a: float = 0.002
    duration_s: float = 1500.0
    rest_s: float = 600.0
    initial_rest_s: float = 60.0
    segments: tuple | None = None
    charge_c_rate: float = 0.5
    initial_soc: float = 0.75
    initial_soc_sigma: float = 0.015
    capacity_sigma: float = 0.012
    r0_sigma: float = 0.05
    rc_sigma: float = 0.05
    self_discharge_cells: tuple = ()
    outlier_self_discharge_a: float = 0.2
    high_resistance_cells: tuple = ()
    high_resistance_factor: float = 1.5
    weak_cells: tuple = ()
    weak_capacity_factor: float = 0.9
    thermal: bool = True
    ambient_c: float = 25.0
    ambient_sigma_c: float = 0.5
    thermal_r_k_per_w: float = 3.0
    thermal_c_j_per_k: float = 1100.0
    bleed_current_a: float = 0.1
    balance_threshold_v: float = 0.010
    dt_s: float = 0.01
    truth_rate_hz: float = 10.0
    voltage_noise_v: float = 0.0015
    current_noise_a: float = 0.1
    current_offset_a: float = 0.1
    pack_voltage_noise_v: float = 0.05
    temperature_noise_c: float = 0.2
    jitter_s: float = 1.0e-4
    cell_voltage_period_s: float = 0.2
    temperature_period_s: float = 1.0
    temperature_sensors: int | None = None
    t0_unix: float = DEFAULT_T0_UNIX
    channel: int = 0

    # -- derived -------------------------------------------------------------------------------
    @property
    def rc_values(self) -> tuple[tuple, tuple]:
        """``(rc_r_ohm, rc_tau_s)`` with the defaults for ``n_rc`` filled in."""
        if self.rc_r_ohm is not None and self.rc_tau_s is not None:
            return tuple(self.rc_r_ohm), tuple(self.rc_tau_s)
        if self.n_rc == 1:
            return (5.0e-4,), (30.0,)
        return (3.0e-4, 5.0e-4), (8.0, 250.0)

    @property
    def n_sensors(self) -> int:
        """Number of temperature sensors."""
        if self.temperature_sensors is not None:
            return int(self.temperature_sensors)
        return -(-self.cells // CELLS_PER_VOLTAGE_FRAME)

    def sensor_cells(self) -> np.ndarray:
        """0-based cell measured by each temperature sensor."""
        return np.minimum(np.arange(self.n_sensors) * 3 + 1, self.cells - 1).astype(np.int64)

    def to_dict(self) -> dict:
        """A JSON-friendly dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "SimConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`PackBMSError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise PackBMSError(f"unknown simulation option {unknown[0]!r}; best matches are "
                               f"{closest_names(unknown[0], names)}")
        kw = {}
        for k, v in d.items():
            if isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kw[k] = v
        return cls(**kw)

    def validate(self) -> "SimConfig":
        """Check every option; returns ``self``.

        Raises
        ------
        PackBMSError
            Naming the option, the value and what is allowed.
        """
        def bad(name, what):
            raise PackBMSError(f"simulation option {name} = {getattr(self, name)!r}: {what}")

        if not 1 <= self.cells <= 765:
            bad("cells", "must be 1..765 (the balancing mux holds 16 groups of 48)")
        if self.n_rc not in (1, 2):
            bad("n_rc", "must be 1 or 2")
        r, tau = self.rc_values
        if len(r) != self.n_rc or len(tau) != self.n_rc:
            raise PackBMSError(f"rc_r_ohm and rc_tau_s need {self.n_rc} values each (n_rc), got "
                               f"{len(r)} and {len(tau)}")
        for name in ("capacity_ah", "r0_ohm", "dt_s", "truth_rate_hz", "cell_voltage_period_s",
                     "temperature_period_s", "thermal_r_k_per_w", "thermal_c_j_per_k",
                     "high_resistance_factor", "weak_capacity_factor"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                bad(name, "must be a finite number > 0")
        for name in ("self_discharge_a", "outlier_self_discharge_a", "initial_soc_sigma",
                     "capacity_sigma", "r0_sigma", "rc_sigma", "ambient_sigma_c",
                     "bleed_current_a", "balance_threshold_v", "voltage_noise_v",
                     "current_noise_a", "pack_voltage_noise_v", "temperature_noise_c",
                     "jitter_s", "charge_c_rate", "rest_s", "initial_rest_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                bad(name, "must be a finite number >= 0")
        if not 0 < self.coulombic_efficiency <= 1:
            bad("coulombic_efficiency", "must be in (0, 1]")
        if not 0 <= self.initial_soc <= 1:
            bad("initial_soc", "must be a fraction 0..1")
        if self.capacity_sigma >= 0.2 or self.r0_sigma >= 0.3 or self.rc_sigma >= 0.3:
            raise PackBMSError("capacity_sigma must be < 0.2 and r0_sigma, rc_sigma < 0.3 "
                               "(spreads are relative standard deviations)")
        if not math.isfinite(self.current_offset_a) or abs(self.current_offset_a) > 50:
            bad("current_offset_a", "must be finite and within +-50 A")
        if not -40 < self.ambient_c < 80:
            bad("ambient_c", "must be within -40..80 °C")
        if self.jitter_s > 0.002:
            bad("jitter_s", "must be <= 2 ms (frames of one message must stay in order)")
        steps_per_10ms = 0.01 / self.dt_s
        if self.dt_s > 0.01 or abs(steps_per_10ms - round(steps_per_10ms)) > 1e-9:
            bad("dt_s", "must be 10 ms or divide 10 ms (the pack message runs at 100 Hz)")
        if abs(round(1.0 / self.dt_s) * self.dt_s - 1.0) > 1e-9:
            bad("dt_s", "1 s must be a whole number of steps")
        decim = 1.0 / (self.truth_rate_hz * self.dt_s)
        if (decim < 1 - 1e-9 or abs(decim - round(decim)) > 1e-6
                or round(1.0 / self.dt_s) % round(decim)):
            bad("truth_rate_hz", f"must be at least 1 Hz, with 1/truth_rate_hz a multiple of "
                                 f"dt_s = {self.dt_s} s that divides 1 s")
        for name, unit in (("cell_voltage_period_s", self.dt_s),
                           ("temperature_period_s", 1.0 / self.truth_rate_hz)):
            n = getattr(self, name) / unit
            if n < 1 - 1e-9 or abs(n - round(n)) > 1e-6:
                bad(name, f"must be a multiple of {unit:g} s")
        if self.n_sensors < 1 or self.n_sensors > 1020:
            bad("temperature_sensors", "must be 1..1020")
        for name in ("self_discharge_cells", "high_resistance_cells", "weak_cells"):
            for c in getattr(self, name):
                if not (isinstance(c, (int, np.integer)) and 0 <= c < self.cells):
                    bad(name, f"cell indices are 0-based and must be in 0..{self.cells - 1}")
        if self.channel < 0 or self.channel > 255:
            bad("channel", "must be 0..255")
        if not math.isfinite(self.t0_unix) or self.t0_unix < 0:
            bad("t0_unix", "must be a finite Unix time >= 0")
        get_chemistry(self.chemistry)
        self.profile_segments()
        return self

    def profile_segments(self) -> tuple:
        """The ``(kind, seconds)`` plan of the profile (explicit or :func:`default_segments`)."""
        if self.segments is not None:
            return parse_segments(self.segments)
        return default_segments(self.duration_s, self.rest_s, self.initial_rest_s)


# ------------------------------------------------------------------------------------------------
# current profile
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One stretch of a profile: ``kind`` in :data:`SEGMENT_KINDS`, ``[start_s, end_s)``."""

    kind: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Profile:
    """A pack current profile on a fixed step.

    Attributes
    ----------
    dt_s : float
    current_a : float64 [T]
        Current held over ``[k dt, (k+1) dt)`` (A, positive = discharge).
    segments : tuple of Segment
    """

    dt_s: float
    current_a: np.ndarray
    segments: tuple

    @property
    def time_s(self) -> np.ndarray:
        """Step start times (s)."""
        return np.arange(self.current_a.shape[0]) * self.dt_s

    @property
    def duration_s(self) -> float:
        return self.current_a.shape[0] * self.dt_s

    def segment_codes(self) -> np.ndarray:
        """uint8 [T]: index into :data:`SEGMENT_KINDS` of the segment each step belongs to."""
        codes = np.zeros(self.current_a.shape[0], np.uint8)
        for seg in self.segments:
            a = int(round(seg.start_s / self.dt_s))
            b = int(round(seg.end_s / self.dt_s))
            codes[a:b] = SEGMENT_KINDS.index(seg.kind)
        return codes


def parse_segments(spec) -> tuple:
    """Normalise a segment plan to a tuple of ``(kind, seconds)``.

    Parameters
    ----------
    spec
        A string ``"rest:60,urban:300,highway:240,rest:600,charge:180"`` or a sequence of
        ``(kind, seconds)`` pairs.

    Returns
    -------
    tuple of (str, float)

    Raises
    ------
    PackBMSError
        Unknown kind (with near misses), a duration that is not a positive number, or an
        empty plan.

    Examples
    --------
    >>> parse_segments("rest:60, urban:120")
    (('rest', 60.0), ('urban', 120.0))
    """
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if ":" not in part:
                raise PackBMSError(f"profile segment {part!r}: expected kind:seconds, e.g. "
                                   f"urban:300")
            kind, _, secs = part.partition(":")
            items.append((kind.strip(), secs.strip()))
    else:
        items = list(spec)
    out = []
    for item in items:
        try:
            kind, secs = item
        except (TypeError, ValueError):
            raise PackBMSError(f"profile segment {item!r}: expected (kind, seconds)") from None
        kind = str(kind).lower()
        if kind not in SEGMENT_KINDS:
            raise PackBMSError(f"unknown profile segment kind {kind!r}; known kinds are "
                               f"{list(SEGMENT_KINDS)} (best matches: "
                               f"{closest_names(kind, SEGMENT_KINDS)})")
        try:
            secs = float(secs)
        except (TypeError, ValueError):
            raise PackBMSError(f"profile segment {kind}: duration {secs!r} is not a number") \
                from None
        if not (math.isfinite(secs) and secs > 0):
            raise PackBMSError(f"profile segment {kind}: duration must be > 0 s, got {secs}")
        out.append((kind, secs))
    if not out:
        raise PackBMSError("the profile has no segments")
    return tuple(out)


def default_segments(duration_s: float, rest_s: float = 600.0,
                     initial_rest_s: float = 60.0) -> tuple:
    """The default drive: rest, urban, highway, a long rest, CC charge, urban.

    The initial rest (cells fully relaxed) lets an estimator start from OCV; the drive moves the
    SoC and builds polarisation; the long rest ``rest_s`` lets the cells relax again (an OCV
    correction point after a drive); the charge and the last drive test tracking in both
    directions. The time outside the two rests is split 25/25/20/30 % between urban, highway,
    charge and the final urban drive.

    Raises
    ------
    PackBMSError
        When the two rests leave less than 20 s of driving.

    Examples
    --------
    >>> default_segments(1500, 600, 60)
    (('rest', 60.0), ('urban', 210.0), ('highway', 210.0), ('rest', 600.0), ('charge', 168.0), ('urban', 252.0))
    """
    left = float(duration_s) - float(rest_s) - float(initial_rest_s)
    if not left >= 20.0:
        raise PackBMSError(f"duration_s = {duration_s} leaves {left:g} s for driving after the "
                           f"rests (initial {initial_rest_s} s + rest {rest_s} s); need >= 20 s")
    parts = [("rest", float(initial_rest_s)), ("urban", 0.25 * left), ("highway", 0.25 * left),
             ("rest", float(rest_s)), ("charge", 0.20 * left), ("urban", 0.30 * left)]
    return tuple((k, round(v, 6)) for k, v in parts if v > 0)


def _taper(n: int, dt_s: float, ramp_s: float) -> np.ndarray:
    """Envelope rising from 0 to 1 over ``ramp_s`` at both ends of n steps."""
    t = np.arange(n) * dt_s
    end = n * dt_s
    return np.clip(np.minimum(t, end - t) / ramp_s, 0.0, 1.0)


def _urban(n: int, dt_s: float, c: float, rng: np.random.Generator) -> np.ndarray:
    """Stop-and-go: idle, accelerate (0.4-1 C burst), cruise (0.15-0.35 C), brake with regen
    (to -1 C)."""
    dur = n * dt_s
    kt, ki = [0.0], [0.0]
    t = 0.0
    aux = 0.01 * c   # auxiliaries while stopped
    while t < dur:
        stop = rng.uniform(2.0, 10.0)
        kt += [t + 1.0, t + stop]
        ki += [aux, aux]
        t += stop
        acc = rng.uniform(3.0, 8.0)
        peak = rng.uniform(0.4, 1.0) * c
        cruise = rng.uniform(0.15, 0.35) * c
        kt += [t + 0.4 * acc, t + acc]
        ki += [peak, cruise]
        t += acc
        cru = rng.uniform(8.0, 30.0)
        m = max(1, int(cru // 2.0))
        wiggle = rng.normal(0.0, 0.05 * c, m)
        for j in range(m):
            kt.append(t + (j + 1) * cru / (m + 1))
            ki.append(max(cruise + wiggle[j], 0.02 * c))
        t += cru
        brake = rng.uniform(2.0, 6.0)
        regen = -rng.uniform(0.3, 1.0) * c
        kt += [t + 0.3 * brake, t + brake]
        ki += [regen, 0.0]
        t += brake
    i = np.interp(np.arange(n) * dt_s, kt, ki)
    return i * _taper(n, dt_s, 2.0)


def _highway(n: int, dt_s: float, c: float, rng: np.random.Generator) -> np.ndarray:
    """0.5-1.5 C around a cruising level, with overtakes and lift-offs (regen)."""
    dur = n * dt_s
    m = int(math.ceil(dur)) + 2
    level = rng.uniform(0.6, 0.9) * c
    tau = 20.0
    sigma = 0.15 * c * math.sqrt(1.0 - (1.0 - 1.0 / tau) ** 2)
    x = np.empty(m)
    x[0] = level
    shocks = rng.normal(0.0, sigma, m)
    events = rng.random(m)
    ev_len = rng.uniform(3.0, 10.0, m)
    ev_amp = rng.uniform(0.2, 0.6, m) * c
    bump = np.zeros(m)
    for k in range(1, m):
        x[k] = x[k - 1] + (level - x[k - 1]) / tau + shocks[k]
        if events[k] < 1.0 / 60.0:                          # overtake
            bump[k:k + int(ev_len[k])] += ev_amp[k]
        elif events[k] < 1.0 / 60.0 + 1.0 / 90.0:           # lift off: regen
            bump[k:k + int(ev_len[k] * 0.6)] -= x[k] + ev_amp[k]
    i = np.clip(x + bump, -1.0 * c, 1.5 * c)
    i = np.interp(np.arange(n) * dt_s, np.arange(m, dtype=np.float64), i)
    return i * _taper(n, dt_s, 10.0)


def _charge(n: int, dt_s: float, c: float, c_rate: float) -> np.ndarray:
    """Constant-current charge (negative current) with 5 s ramps."""
    return -c_rate * c * _taper(n, dt_s, 5.0)


def make_profile(segments=None, *, duration_s: float = 1500.0, rest_s: float = 600.0,
                 initial_rest_s: float = 60.0, capacity_ah: float = 60.0,
                 charge_c_rate: float = 0.5, dt_s: float = 0.01, seed=0) -> Profile:
    """Build a seeded pack current profile from segments.

    Parameters
    ----------
    segments
        ``(kind, seconds)`` pairs or a string (see :func:`parse_segments`); ``None`` uses
        :func:`default_segments` of ``duration_s``, ``rest_s`` and ``initial_rest_s``.
    capacity_ah
        Sets the C-rate scale: urban bursts 0.4-1 C, regen to -1 C, highway 0.5-1.5 C.
    charge_c_rate
        CC charging current (C).
    dt_s
        Step (s).
    seed
        An int, ``numpy.random.SeedSequence`` or ``Generator``.

    Returns
    -------
    Profile
        Piecewise-linear (continuous) current, exactly 0 A during rests; positive =
        discharge.

    Examples
    --------
    >>> p = make_profile("rest:10,urban:20", dt_s=0.1, seed=1)
    >>> p.current_a.shape, [s.kind for s in p.segments]
    ((300,), ['rest', 'urban'])
    """
    plan = parse_segments(segments) if segments is not None else \
        default_segments(duration_s, rest_s, initial_rest_s)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if not (capacity_ah > 0 and dt_s > 0):
        raise PackBMSError("make_profile: capacity_ah and dt_s must be > 0")
    parts, segs = [], []
    k = 0
    for kind, secs in plan:
        n = int(round(secs / dt_s))
        if n < 1:
            raise PackBMSError(f"profile segment {kind}:{secs} is shorter than one step "
                               f"({dt_s} s)")
        if kind == "rest":
            part = np.zeros(n)
        elif kind == "urban":
            part = _urban(n, dt_s, capacity_ah, rng)
        elif kind == "highway":
            part = _highway(n, dt_s, capacity_ah, rng)
        else:
            part = _charge(n, dt_s, capacity_ah, charge_c_rate)
        parts.append(part)
        segs.append(Segment(kind, round(k * dt_s, 9), round((k + n) * dt_s, 9)))
        k += n
    return Profile(dt_s=dt_s, current_a=np.ascontiguousarray(np.concatenate(parts)),
                   segments=tuple(segs))


# ------------------------------------------------------------------------------------------------
# cell spread
# ------------------------------------------------------------------------------------------------
def _clipped_normal(rng, sigma: float, n: int) -> np.ndarray:
    return np.clip(rng.normal(0.0, 1.0, n), -3.0, 3.0) * sigma


def draw_cells(config: SimConfig, seed) -> tuple[CellParams, np.ndarray, np.ndarray]:
    """Draw the cells of a pack: parameters, initial SoC and per-cell ambient temperature.

    Parameters
    ----------
    config
        The simulation options (spreads and outliers).
    seed
        An int, ``SeedSequence`` or ``Generator``.

    Returns
    -------
    params : CellParams
    initial_soc : float64 [S]
        Clipped to 0.01..0.99.
    ambient_c : float64 [S]

    Examples
    --------
    >>> params, soc0, amb = draw_cells(SimConfig(cells=4), seed=1)
    >>> params.n_cells, soc0.shape
    (4, (4,))
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    s = config.cells
    rc_r, rc_tau = config.rc_values
    cap = config.capacity_ah * (1.0 + _clipped_normal(rng, config.capacity_sigma, s))
    r0 = config.r0_ohm * (1.0 + _clipped_normal(rng, config.r0_sigma, s))
    rc = np.asarray(rc_r, np.float64)[None, :] * (
        1.0 + _clipped_normal(rng, config.rc_sigma, s * len(rc_r)).reshape(s, len(rc_r)))
    tau = np.broadcast_to(np.asarray(rc_tau, np.float64), (s, len(rc_tau))).copy()
    soc0 = np.clip(config.initial_soc + _clipped_normal(rng, config.initial_soc_sigma, s),
                   0.01, 0.99)
    ambient = config.ambient_c + _clipped_normal(rng, config.ambient_sigma_c, s)
    sd = np.full(s, config.self_discharge_a)
    # the healthy cells' leakage varies too (x0.5..x1.5)
    sd *= rng.uniform(0.5, 1.5, s)
    idx = np.asarray(config.self_discharge_cells, dtype=np.int64)
    sd[idx] = config.outlier_self_discharge_a
    idx = np.asarray(config.high_resistance_cells, dtype=np.int64)
    r0[idx] *= config.high_resistance_factor
    rc[idx] *= config.high_resistance_factor
    idx = np.asarray(config.weak_cells, dtype=np.int64)
    cap[idx] *= config.weak_capacity_factor
    params = CellParams(capacity_ah=cap, r0_ohm=r0, rc_r_ohm=rc, rc_tau_s=tau,
                        coulombic_efficiency=np.full(s, config.coulombic_efficiency),
                        self_discharge_a=sd, chemistry=get_chemistry(config.chemistry))
    return params, soc0, ambient


# ------------------------------------------------------------------------------------------------
# truth and results
# ------------------------------------------------------------------------------------------------
@dataclass
class Truth:
    """Ground truth of a simulated drive, at ``truth_rate_hz`` (the schema of the truth file).

    Attributes
    ----------
    time_s : float64 [Td]
        Seconds from the log start (the first step); absolute time = ``t0_unix + time_s``.
    soc, voltage_v, temperature_c : [Td, S]
        True SoC (fraction), terminal voltage (V) and temperature (°C) of each cell at
        ``time_s`` (instantaneous samples, not averages).
    balancing : bool [Td, S]
        Whether each cell was bleeding.
    current_a, pack_voltage_v : [Td]
        True pack current (A, positive = discharge) held from ``time_s`` on, and the sum of the
        cell voltages.
    charge_ah : float64 [Td]
        Exact integral of the true pack current from the start (Ah discharged) - what a perfect
        coulomb counter reads.
    segment : uint8 [Td]
        Index into :data:`SEGMENT_KINDS`; ``segments`` lists ``(kind, start_s, end_s)``.
    params : CellParams
        The true cells (capacity, R0 and RC at 25 °C, efficiency, self-discharge, chemistry).
    initial_soc : float64 [S]
    ambient_c : float64 [S]
    sensor_cells : int64 [K]
        0-based cell measured by each temperature sensor.
    t0_unix, dt_s, seed, config
        Start time, simulation step, the seed and the :class:`SimConfig` as a dict.
    """

    time_s: np.ndarray
    soc: np.ndarray
    voltage_v: np.ndarray
    temperature_c: np.ndarray
    balancing: np.ndarray
    current_a: np.ndarray
    pack_voltage_v: np.ndarray
    charge_ah: np.ndarray
    segment: np.ndarray
    segments: tuple
    params: CellParams
    initial_soc: np.ndarray
    ambient_c: np.ndarray
    sensor_cells: np.ndarray
    t0_unix: float
    dt_s: float
    seed: int
    config: dict = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return int(self.soc.shape[1])

    @property
    def capacity_ah(self) -> np.ndarray:
        return self.params.capacity_ah

    @property
    def r0_ohm(self) -> np.ndarray:
        return self.params.r0_ohm

    def rest_windows(self, min_s: float = 0.0) -> list[tuple[float, float]]:
        """``(start_s, end_s)`` of the rest segments at least ``min_s`` long."""
        return [(a, b) for k, a, b in self.segments if k == "rest" and b - a >= min_s]


@dataclass
class SimResult:
    """What :func:`simulate_pack` returns.

    Attributes
    ----------
    config : SimConfig
    seed : int
    truth : Truth
        Ground truth at ``config.truth_rate_hz``.
    frames : FrameTable
        The CAN log, sorted by timestamp (absolute Unix seconds).
    profile : Profile
        The true pack current on every simulation step.
    pack_voltage_v : float64 [T]
        True pack voltage on every step.
    sensor_truth : dict
        Per message name, ``(frame_times_s, true_values)`` of what each frame measured before
        noise and quantisation: ``BMS_CellVoltages`` [n, 3] (V), ``BMS_PackStatus`` [n, 2]
        (current A discharge-positive, pack voltage V), ``BMS_CellTemperatures`` [n, 4] (°C).
        Frame times are relative to ``t0_unix`` and exclude jitter.
    dbc_text, layout_text : str
        The database the frames follow and a matching layout.
    """

    config: SimConfig
    seed: int
    truth: Truth
    frames: FrameTable
    profile: Profile
    pack_voltage_v: np.ndarray
    sensor_truth: dict
    dbc_text: str
    layout_text: str

    def database(self):
        """The cantools database of :attr:`dbc_text`."""
        import cantools
        return cantools.database.load_string(self.dbc_text, database_format="dbc")


# ------------------------------------------------------------------------------------------------
# database and layout
# ------------------------------------------------------------------------------------------------
_DBC_HEADER = '''VERSION "packbms-{cells}s"


NS_ :
	NS_DESC_
	CM_
	BA_DEF_
	BA_
	VAL_
	CAT_DEF_
	CAT_
	FILTER
	BA_DEF_DEF_
	EV_DATA_
	ENVVAR_DATA_
	SGTYPE_
	SGTYPE_VAL_
	BA_DEF_SGTYPE_
	BA_SGTYPE_
	SIG_TYPE_REF_
	VAL_TABLE_
	SIG_GROUP_
	SIG_VALTYPE_
	SIGTYPE_VALTYPE_
	BO_TX_BU_
	BA_DEF_REL_
	BA_REL_
	BA_DEF_DEF_REL_
	BU_SG_REL_
	BU_EV_REL_
	BU_BO_REL_
	SG_MUL_VAL_

BS_:

BU_: BMS

'''


def make_dbc_text(cells: int = 96, temperature_sensors: int | None = None) -> str:
    """The reference BMS database for a string of ``cells`` cells, as DBC text.

    ``data/pack96.dbc`` is ``make_dbc_text(96)``. Multiplexed signals carry every mux value
    through ``SG_MUL_VAL_`` (extended multiplexing), so ``V1`` exists once and reads cell
    ``3 g + 1`` in group g.

    Parameters
    ----------
    cells
        Series cells (1..765).
    temperature_sensors
        Sensors (default one per 3 cells).

    Returns
    -------
    str

    Examples
    --------
    >>> import cantools
    >>> db = cantools.database.load_string(make_dbc_text(12), database_format="dbc")
    >>> [m.name for m in db.messages]
    ['BMS_PackStatus', 'BMS_CellVoltages', 'BMS_CellTemperatures', 'BMS_Balancing', 'BMS_CellSummary']
    """
    n_sens = temperature_sensors if temperature_sensors is not None else -(-cells // 3)
    g_cells = -(-cells // CELLS_PER_VOLTAGE_FRAME)
    g_temps = -(-n_sens // SENSORS_PER_TEMPERATURE_FRAME)
    g_bal = -(-cells // FLAGS_PER_BALANCING_FRAME)
    v_scale = "(0.001,0) [0|65.535] \"V\" Vector__XXX"
    lines = [_DBC_HEADER.format(cells=cells)]
    lines.append(f"BO_ {ID_PACK} BMS_PackStatus: 8 BMS")
    lines.append(' SG_ BMS_PackCurrent : 7|17@0- (0.01,0) [-655.36|655.35] "A" Vector__XXX')
    lines.append(' SG_ BMS_PackVoltage : 24|16@1+ (0.01,0) [0|655.35] "V" Vector__XXX')
    lines.append(' SG_ BMS_PackCounter : 60|4@1+ (1,0) [0|15] "" Vector__XXX')
    lines.append("")
    lines.append(f"BO_ {ID_CELLS} BMS_CellVoltages: 7 BMS")
    lines.append(f' SG_ CellGroup M : 0|8@1+ (1,0) [0|{g_cells - 1}] "" Vector__XXX')
    for j in range(CELLS_PER_VOLTAGE_FRAME):
        lines.append(f" SG_ V{j + 1} m0 : {8 + 16 * j}|16@1+ {v_scale}")
    lines.append("")
    lines.append(f"BO_ {ID_TEMPS | 0x80000000} BMS_CellTemperatures: 5 BMS")
    lines.append(f' SG_ TempGroup M : 0|8@1+ (1,0) [0|{g_temps - 1}] "" Vector__XXX')
    for j in range(SENSORS_PER_TEMPERATURE_FRAME):
        lines.append(f' SG_ T{j + 1} m0 : {8 + 8 * j}|8@1+ (0.5,-40) [-40|87.5] "degC" '
                     f'Vector__XXX')
    lines.append("")
    lines.append(f"BO_ {ID_BALANCING} BMS_Balancing: 7 BMS")
    lines.append(f' SG_ BalGroup M : 0|8@1+ (1,0) [0|{g_bal - 1}] "" Vector__XXX')
    for j in range(FLAGS_PER_BALANCING_FRAME):
        lines.append(f' SG_ Bal{j + 1} m0 : {8 + j}|1@1+ (1,0) [0|1] "" Vector__XXX')
    lines.append("")
    lines.append(f"BO_ {ID_SUMMARY} BMS_CellSummary: 8 BMS")
    lines.append(f" SG_ BMS_MaxCellVoltage : 0|16@1+ {v_scale}")
    lines.append(f" SG_ BMS_MinCellVoltage : 16|16@1+ {v_scale}")
    lines.append(' SG_ BMS_MaxCellIndex : 32|8@1+ (1,0) [1|255] "" Vector__XXX')
    lines.append(' SG_ BMS_MinCellIndex : 40|8@1+ (1,0) [1|255] "" Vector__XXX')
    lines.append(' SG_ BMS_State : 48|2@1+ (1,0) [0|3] "" Vector__XXX')
    lines.append(' SG_ BMS_BalancingActive : 50|1@1+ (1,0) [0|1] "" Vector__XXX')
    lines.append(' SG_ BMS_MaxTemperature : 56|8@1+ (0.5,-40) [-40|87.5] "degC" Vector__XXX')
    lines.append("")
    lines.append("")
    cm = [
        f'CM_ "Reference BMS database of packbms: {cells} cells in series, {n_sens} temperature '
        f'sensors.";',
        f'CM_ BO_ {ID_PACK} "Pack current and voltage, every 10 ms.";',
        f'CM_ SG_ {ID_PACK} BMS_PackCurrent "Pack current, positive = CHARGE (into the pack). '
        f'Motorola, 17-bit signed.";',
        f'CM_ SG_ {ID_PACK} BMS_PackCounter "Rolling counter 0..15, +1 per frame.";',
        f'CM_ BO_ {ID_CELLS} "Cell voltages, multiplexed: group g carries cells 3g+1..3g+3 '
        f'(1-based) in V1..V3; {g_cells} groups, each group every 200 ms.";',
        f'CM_ BO_ {ID_TEMPS | 0x80000000} "Temperature sensors, multiplexed: group g carries '
        f'sensors 4g+1..4g+4 in T1..T4, every group once a second.";',
        f'CM_ BO_ {ID_BALANCING} "Passive balancing flags, multiplexed: group g carries cells '
        f'48g+1..48g+48 in Bal1..Bal48 (1 = bleeding), once a second.";',
        f'CM_ BO_ {ID_SUMMARY} "Cell min/max summary (1-based indices) and BMS state, once a '
        f'second.";',
    ]
    lines.extend(cm)
    lines.append('BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;')
    lines.append('BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN";')
    lines.append('BA_DEF_DEF_ "GenMsgCycleTime" 0;')
    lines.append('BA_DEF_DEF_ "VFrameFormat" "StandardCAN";')
    cyc_cells = max(1, int(round(200 / g_cells)))
    for fid, cyc in ((ID_PACK, 10), (ID_CELLS, cyc_cells), (ID_TEMPS | 0x80000000,
                     max(1, int(round(1000 / g_temps)))), (ID_BALANCING, 1000 // g_bal),
                     (ID_SUMMARY, 1000)):
        lines.append(f'BA_ "GenMsgCycleTime" BO_ {fid} {cyc};')
    lines.append(f'BA_ "VFrameFormat" BO_ {ID_TEMPS | 0x80000000} 1;')
    lines.append(f'VAL_ {ID_SUMMARY} BMS_State 0 "Rest" 1 "Drive" 2 "Charge" 3 "Fault" ;')
    lines.append("")
    for j in range(CELLS_PER_VOLTAGE_FRAME):
        lines.append(f"SG_MUL_VAL_ {ID_CELLS} V{j + 1} CellGroup 0-{g_cells - 1};")
    for j in range(SENSORS_PER_TEMPERATURE_FRAME):
        lines.append(f"SG_MUL_VAL_ {ID_TEMPS | 0x80000000} T{j + 1} TempGroup 0-{g_temps - 1};")
    for j in range(FLAGS_PER_BALANCING_FRAME):
        lines.append(f"SG_MUL_VAL_ {ID_BALANCING} Bal{j + 1} BalGroup 0-{g_bal - 1};")
    lines.append("")
    return "\n".join(lines)


def make_layout_text(config: SimConfig | None = None) -> str:
    """A layout TOML matching :func:`make_dbc_text` for ``config`` (``data/pack96.toml``).

    Examples
    --------
    >>> from packbms.layout import parse_layout
    >>> parse_layout(make_layout_text(SimConfig(cells=12))).cell_voltage.signals
    ('V1', 'V2', 'V3')
    """
    cfg = config or SimConfig()
    chem = cfg.chemistry
    chem_line = f'chemistry = "{chem}"' if str(chem).lower() in ("nmc", "lfp") else \
        f'ocv_table = "{Path(str(chem)).as_posix()}"'
    bal = ", ".join(f'"Bal{j + 1}"' for j in range(FLAGS_PER_BALANCING_FRAME))
    temps = ", ".join(f'"T{j + 1}"' for j in range(SENSORS_PER_TEMPERATURE_FRAME))
    return f'''# Layout of the packbms reference BMS ({cfg.cells} cells in series).
# Generated by packbms.simulate.make_layout_text; matches the database of make_dbc_text.

[pack]
cells_in_series = {cfg.cells}
cells_in_parallel = 1
capacity_ah = {float(cfg.capacity_ah)!r}
{chem_line}

[current]
signal = "BMS_PackCurrent"
positive = "charge"            # the bus carries charge-positive current; packbms flips it

[pack_voltage]
signal = "BMS_PackVoltage"

[cell_voltage]                 # cell = CellGroup * 3 + slot (0-based)
message = "BMS_CellVoltages"
mux = "CellGroup"
signals = ["V1", "V2", "V3"]
first_cell = 0

[cell_temperature]             # sensor = TempGroup * 4 + slot; sensor j sits on cell 3j+2 (1-based)
message = "BMS_CellTemperatures"
mux = "TempGroup"
signals = [{temps}]
first_cell = 0
count = {cfg.n_sensors}

[balancing_flags]              # cell = BalGroup * 48 + slot; 1 = bleeding
message = "BMS_Balancing"
mux = "BalGroup"
signals = [{bal}]
first_cell = 0

[balancing]
bleed_current_a = {float(cfg.bleed_current_a) if cfg.bleed_current_a > 0 else 0.1!r}
'''


# ------------------------------------------------------------------------------------------------
# the simulation
# ------------------------------------------------------------------------------------------------
def simulate_pack(config: SimConfig | None = None, *, seed: int) -> SimResult:
    """Simulate a pack drive and encode what its BMS puts on the CAN bus.

    Parameters
    ----------
    config
        Options (default :class:`SimConfig`: 96 NMC cells of 60 Ah, a 25-minute drive with a
        10-minute rest).
    seed
        Seeds everything; the same seed and config give identical results.

    Returns
    -------
    SimResult

    Raises
    ------
    PackBMSError
        An invalid option.

    Examples
    --------
    >>> r = simulate_pack(SimConfig(cells=6, segments="rest:5,urban:10"), seed=3)
    >>> r.truth.soc.shape, len(r.frames) > 1500
    ((150, 6), True)
    """
    from . import dbc as _dbc

    cfg = (config or SimConfig()).validate()
    seed = int(seed)
    ss = np.random.SeedSequence(seed)
    ss_profile, ss_cells, ss_sensors, ss_jitter = ss.spawn(4)
    dt = float(cfg.dt_s)
    profile = make_profile(cfg.profile_segments(), capacity_ah=cfg.capacity_ah,
                           charge_c_rate=cfg.charge_c_rate, dt_s=dt,
                           seed=np.random.default_rng(ss_profile))
    params, soc0, ambient = draw_cells(cfg, np.random.default_rng(ss_cells))
    s = cfg.cells
    current = profile.current_a
    n_t = current.shape[0]
    steps_per_s = int(round(1.0 / dt))
    decim = int(round(1.0 / (cfg.truth_rate_hz * dt)))
    n_td = (n_t + decim - 1) // decim
    n_blocks = (n_t + steps_per_s - 1) // steps_per_s

    # cell-voltage sample requests: group g every period, offset by g * period / G
    g_cells = -(-s // CELLS_PER_VOLTAGE_FRAME)
    period_steps = int(round(cfg.cell_voltage_period_s / dt))
    n_per = np.arange(0, n_t, period_steps)
    rel = (np.arange(g_cells) * period_steps) // g_cells
    req_step = (n_per[:, None] + rel[None, :]).reshape(-1)
    req_group = np.broadcast_to(np.arange(g_cells), (n_per.size, g_cells)).reshape(-1)
    keep = req_step < n_t
    req_step = np.ascontiguousarray(req_step[keep], dtype=np.int64)
    req_group = np.ascontiguousarray(req_group[keep], dtype=np.int64)
    req_cell0 = req_group * CELLS_PER_VOLTAGE_FRAME
    req_n = np.minimum(CELLS_PER_VOLTAGE_FRAME, s - req_cell0).astype(np.int64)

    table_soc, table_ocv, table_ent = params.chemistry.tables()
    codes = profile.segment_codes()
    # the BMS balances while the vehicle is parked or on the charger, not while driving
    block_code = codes[::steps_per_s]
    bal_allowed = np.ascontiguousarray(
        (block_code == SEGMENT_KINDS.index("rest")) | (block_code == SEGMENT_KINDS.index("charge")),
        dtype=np.uint8)
    out_pack_v = np.empty(n_t)
    out_soc = np.empty((n_td, s))
    out_v = np.empty((n_td, s))
    out_temp = np.empty((n_td, s))
    out_bal = np.empty((n_blocks, s), np.uint8)
    out_req = np.zeros((req_step.size, CELLS_PER_VOLTAGE_FRAME))
    out_charge = np.empty(n_t)
    simulate_ecm(
        current, dt, steps_per_s, decim,
        np.ascontiguousarray(soc0), params.capacity_ah, params.r0_ohm, params.rc_r_ohm,
        np.ascontiguousarray(np.exp(-dt / params.rc_tau_s)), params.coulombic_efficiency,
        params.self_discharge_a, table_soc, table_ocv, table_ent,
        bool(cfg.thermal and params.chemistry.has_entropic), params.chemistry.t_ref_k,
        params.chemistry.r_activation_k, np.ascontiguousarray(ambient),
        np.ascontiguousarray(ambient), float(cfg.thermal_r_k_per_w),
        float(cfg.thermal_c_j_per_k), bool(cfg.thermal), float(cfg.bleed_current_a),
        float(cfg.balance_threshold_v), bal_allowed,
        req_step, req_cell0, req_n,
        out_pack_v, out_soc, out_v, out_temp, out_bal, out_req, out_charge)

    td_steps = np.arange(n_td) * decim
    truth = Truth(
        time_s=td_steps * dt, soc=out_soc, voltage_v=out_v, temperature_c=out_temp,
        balancing=out_bal[td_steps // steps_per_s].astype(bool), current_a=current[td_steps],
        pack_voltage_v=out_pack_v[td_steps], charge_ah=out_charge[td_steps],
        segment=codes[td_steps],
        segments=tuple((g.kind, g.start_s, g.end_s) for g in profile.segments),
        params=params, initial_soc=soc0, ambient_c=ambient, sensor_cells=cfg.sensor_cells(),
        t0_unix=float(cfg.t0_unix), dt_s=dt, seed=seed, config=cfg.to_dict())

    # -- what the BMS sends ----------------------------------------------------------------
    dbc_text = make_dbc_text(s, cfg.n_sensors)
    import cantools
    db = cantools.database.load_string(dbc_text, database_format="dbc")
    cdb = _dbc.compile_database(db)
    rng = np.random.default_rng(ss_sensors)
    tables, sensor_truth = [], {}

    # pack status at every 10 ms; sampled on the step, sent 2 ms later
    pk = np.arange(0, n_t, int(round(0.01 / dt)))
    t_pack = pk * dt + 0.002
    i_true = current[pk]
    v_true = out_pack_v[pk]
    i_meas = i_true + cfg.current_offset_a + rng.normal(0.0, cfg.current_noise_a, pk.size)
    v_meas = v_true + rng.normal(0.0, cfg.pack_voltage_noise_v, pk.size)
    tables.append(_dbc.encode(cdb, "BMS_PackStatus", t_pack, {
        "BMS_PackCurrent": np.round(-i_meas, 2),          # charge-positive on the bus
        "BMS_PackVoltage": np.round(v_meas, 2),
        "BMS_PackCounter": (np.arange(pk.size) % 16).astype(np.float64)}, channel=cfg.channel))
    sensor_truth["BMS_PackStatus"] = (t_pack, np.column_stack([i_true, v_true]))

    # cell voltages: one frame per request, sent 1 ms after sampling
    t_cells = req_step * dt + 0.001
    noisy = out_req + rng.normal(0.0, cfg.voltage_noise_v, out_req.shape)
    noisy = np.round(noisy, 3)
    present = np.arange(CELLS_PER_VOLTAGE_FRAME)[None, :] < req_n[:, None]
    noisy = np.where(present, noisy, 0.0)
    vals = {"CellGroup": req_group.astype(np.float64)}
    for j in range(CELLS_PER_VOLTAGE_FRAME):
        vals[f"V{j + 1}"] = noisy[:, j]
    tables.append(_dbc.encode(cdb, "BMS_CellVoltages", t_cells, vals, channel=cfg.channel))
    sensor_truth["BMS_CellVoltages"] = (t_cells, np.where(present, out_req, np.nan))

    # temperatures: all sensors sampled at the start of each period (a truth row), group g
    # sent 0.5 s + g * 10 ms later
    g_temps = -(-cfg.n_sensors // SENSORS_PER_TEMPERATURE_FRAME)
    t_period = int(round(cfg.temperature_period_s / dt))
    base = np.arange(0, n_t, t_period)
    step_t = np.repeat(base, g_temps)
    grp_t = np.tile(np.arange(g_temps), base.size)
    t_temps = step_t * dt + 0.5 + grp_t * 0.01
    keep = t_temps < n_t * dt
    step_t, grp_t, t_temps = step_t[keep], grp_t[keep], t_temps[keep]
    sens = grp_t[:, None] * SENSORS_PER_TEMPERATURE_FRAME + np.arange(4)[None, :]
    sens_ok = sens < cfg.n_sensors
    sens_cell = cfg.sensor_cells()[np.minimum(sens, cfg.n_sensors - 1)]
    temp_true = out_temp[(step_t // decim)[:, None], sens_cell]
    temp_true = np.where(sens_ok, temp_true, np.nan)
    temp_meas = temp_true + rng.normal(0.0, cfg.temperature_noise_c, temp_true.shape)
    temp_meas = np.clip(np.round((temp_meas + 40.0) * 2.0) / 2.0 - 40.0, -40.0, 87.5)
    vals = {"TempGroup": grp_t.astype(np.float64)}
    for j in range(SENSORS_PER_TEMPERATURE_FRAME):
        vals[f"T{j + 1}"] = np.where(sens_ok[:, j], temp_meas[:, j], -40.0)
    tables.append(_dbc.encode(cdb, "BMS_CellTemperatures", t_temps, vals, channel=cfg.channel))
    sensor_truth["BMS_CellTemperatures"] = (t_temps, temp_true)

    g_bal = -(-s // FLAGS_PER_BALANCING_FRAME)
    sec = np.arange(n_blocks)
    step_b = (sec[:, None] * steps_per_s + int(round(0.7 / dt))
              + np.arange(g_bal)[None, :] * int(round(0.01 / dt))).reshape(-1)
    grp_b = np.broadcast_to(np.arange(g_bal), (n_blocks, g_bal)).reshape(-1)
    blk_b = np.broadcast_to(sec[:, None], (n_blocks, g_bal)).reshape(-1)
    keep = step_b < n_t
    step_b, grp_b, blk_b = step_b[keep], grp_b[keep], blk_b[keep]
    padded = np.zeros((n_blocks, g_bal * FLAGS_PER_BALANCING_FRAME))
    padded[:, :s] = out_bal
    flags = padded.reshape(n_blocks, g_bal, FLAGS_PER_BALANCING_FRAME)[blk_b, grp_b]
    vals = {"BalGroup": grp_b.astype(np.float64)}
    for j in range(FLAGS_PER_BALANCING_FRAME):
        vals[f"Bal{j + 1}"] = flags[:, j]
    tables.append(_dbc.encode(cdb, "BMS_Balancing", step_b * dt, vals, channel=cfg.channel))

    # the summary: all cells sampled at the start of each second (a truth row), sent 5 ms later
    step_m = sec * steps_per_s
    rows = step_m // decim
    v_rows = np.round(out_v[rows] + rng.normal(0.0, cfg.voltage_noise_v, (rows.size, s)), 3)
    state = np.where(codes[step_m] == SEGMENT_KINDS.index("rest"), STATE_REST,
                     np.where(codes[step_m] == SEGMENT_KINDS.index("charge"), STATE_CHARGE,
                              STATE_DRIVE))
    t_max = out_temp[rows][:, cfg.sensor_cells()].max(axis=1)
    tables.append(_dbc.encode(cdb, "BMS_CellSummary", step_m * dt + 0.005, {
        "BMS_MaxCellVoltage": v_rows.max(axis=1), "BMS_MinCellVoltage": v_rows.min(axis=1),
        "BMS_MaxCellIndex": v_rows.argmax(axis=1) + 1.0,
        "BMS_MinCellIndex": v_rows.argmin(axis=1) + 1.0,
        "BMS_State": state.astype(np.float64),
        "BMS_BalancingActive": out_bal[step_m // steps_per_s].any(axis=1).astype(np.float64),
        "BMS_MaxTemperature": np.clip(np.round((t_max + 40.0) * 2.0) / 2.0 - 40.0, -40, 87.5),
    }, channel=cfg.channel))

    frames = FrameTable.concat(tables)
    jrng = np.random.default_rng(ss_jitter)
    jitter = np.clip(jrng.normal(0.0, cfg.jitter_s, len(frames)), -3 * cfg.jitter_s,
                     3 * cfg.jitter_s) if cfg.jitter_s > 0 else 0.0
    rel_t = frames.timestamp + jitter
    order = np.argsort(rel_t, kind="stable")
    frames = frames.take(order)
    frames.timestamp = np.ascontiguousarray(cfg.t0_unix + rel_t[order])
    return SimResult(config=cfg, seed=seed, truth=truth, frames=frames, profile=profile,
                     pack_voltage_v=out_pack_v, sensor_truth=sensor_truth, dbc_text=dbc_text,
                     layout_text=make_layout_text(cfg))


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def write_truth(path, truth: Truth | SimResult) -> Path:
    """Write the ground truth to HDF5 (written to a temporary name, then renamed).

    Schema (``attrs['schema'] = 'packbms.truth'``, ``attrs['schema_version'] = 1``):

    - ``/time_s`` [Td] float64, attr ``t0_unix``
    - ``/pack/current_a``, ``/pack/voltage_v`` [Td] float32; ``/pack/charge_ah`` [Td] float64;
      ``/pack/segment`` [Td] uint8 (attr ``kinds``); ``/pack/segments`` table
      (``kind`` str, ``start_s``, ``end_s``)
    - ``/cells/soc``, ``/cells/voltage_v``, ``/cells/temperature_c`` [Td, S] float32;
      ``/cells/balancing`` [Td, S] bool
    - ``/cells/capacity_ah``, ``/cells/r0_ohm``, ``/cells/coulombic_efficiency``,
      ``/cells/self_discharge_a``, ``/cells/initial_soc``, ``/cells/ambient_c`` [S] float64;
      ``/cells/rc_r_ohm``, ``/cells/rc_tau_s`` [S, P] float64
    - ``/sensors/temperature_cell`` [K] int64 (0-based cell of each sensor)
    - ``/chemistry/soc``, ``/chemistry/ocv_v``, ``/chemistry/entropic_v_per_k`` [n]; attrs
      ``name``, ``r_activation_k``, ``t_ref_k``
    - root attrs: ``schema``, ``schema_version``, ``packbms_version``, ``seed``, ``dt_s``,
      ``truth_rate_hz``, ``t0_unix``, ``config`` (JSON of :class:`SimConfig`)

    Parameters
    ----------
    path
        Output ``.h5`` file.
    truth
        A :class:`Truth` or a :class:`SimResult`.

    Returns
    -------
    Path

    Raises
    ------
    StorageError
        The file cannot be written.
    """
    import h5py

    tr = truth.truth if isinstance(truth, SimResult) else truth
    path = Path(path)
    tmp = _tmp_name(path)
    comp = dict(compression="gzip", compression_opts=6, shuffle=True)
    try:
        with h5py.File(tmp, "w", track_order=False) as f:
            def ds(name, data, compress=True, **attrs):
                data = np.asarray(data)
                kw = comp if (compress and data.size > 64) else {}
                d = f.create_dataset(name, data=data, track_times=False, **kw)
                for k, v in attrs.items():
                    d.attrs[k] = v
                return d

            f.attrs["schema"] = _TRUTH_SCHEMA
            f.attrs["schema_version"] = _TRUTH_VERSION
            f.attrs["packbms_version"] = __version__
            f.attrs["seed"] = int(tr.seed)
            f.attrs["dt_s"] = float(tr.dt_s)
            rate = 1.0 / (tr.time_s[1] - tr.time_s[0]) if tr.time_s.size > 1 else 0.0
            f.attrs["truth_rate_hz"] = float(round(rate, 9))
            f.attrs["t0_unix"] = float(tr.t0_unix)
            f.attrs["config"] = json.dumps(tr.config, sort_keys=True)
            ds("time_s", tr.time_s.astype(np.float64), t0_unix=float(tr.t0_unix), units="s")
            ds("pack/current_a", tr.current_a.astype(np.float32), units="A, + = discharge")
            ds("pack/voltage_v", tr.pack_voltage_v.astype(np.float32), units="V")
            ds("pack/charge_ah", tr.charge_ah.astype(np.float64), units="Ah discharged")
            ds("pack/segment", tr.segment.astype(np.uint8), kinds=json.dumps(SEGMENT_KINDS))
            seg = f.create_group("pack/segments", track_order=False)
            seg.create_dataset("kind", data=np.array([k for k, _, _ in tr.segments],
                                                     dtype=h5py.string_dtype()),
                               track_times=False)
            seg.create_dataset("start_s", data=np.array([a for _, a, _ in tr.segments], float),
                               track_times=False)
            seg.create_dataset("end_s", data=np.array([b for _, _, b in tr.segments], float),
                               track_times=False)
            ds("cells/soc", tr.soc.astype(np.float32))
            ds("cells/voltage_v", tr.voltage_v.astype(np.float32), units="V")
            ds("cells/temperature_c", tr.temperature_c.astype(np.float32), units="degC")
            ds("cells/balancing", tr.balancing.astype(bool))
            p = tr.params
            for name in ("capacity_ah", "r0_ohm", "rc_r_ohm", "rc_tau_s", "coulombic_efficiency",
                         "self_discharge_a"):
                ds(f"cells/{name}", getattr(p, name), compress=False)
            ds("cells/initial_soc", tr.initial_soc, compress=False)
            ds("cells/ambient_c", tr.ambient_c, compress=False)
            ds("sensors/temperature_cell", tr.sensor_cells.astype(np.int64), compress=False)
            chem = p.chemistry
            ds("chemistry/soc", chem.soc, compress=False)
            ds("chemistry/ocv_v", chem.ocv_v, compress=False)
            ds("chemistry/entropic_v_per_k", chem.entropic_v_per_k, compress=False)
            f["chemistry"].attrs["name"] = chem.name
            f["chemistry"].attrs["r_activation_k"] = chem.r_activation_k
            f["chemistry"].attrs["t_ref_k"] = chem.t_ref_k
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot write the truth file ({e})") from e
    return path


def load_truth(path) -> Truth:
    """Read a truth file written by :func:`write_truth`.

    Returns
    -------
    Truth
        float32 datasets are returned as float64.

    Raises
    ------
    StorageError
        Missing file, not a truth file, an unknown schema version or a missing dataset (naming
        the HDF5 path).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> r = simulate_pack(SimConfig(cells=3, segments="rest:2,charge:3"), seed=0)
    >>> p = write_truth(pathlib.Path(tempfile.mkdtemp()) / "t.h5", r)
    >>> load_truth(p).soc.shape
    (50, 3)
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise StorageError(f"{path}: truth file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StorageError(f"{path}: not an HDF5 file ({e})") from e
    with f:
        if f.attrs.get("schema") != _TRUTH_SCHEMA:
            raise StorageError(f"{path}: not a packbms truth file (attr schema = "
                               f"{f.attrs.get('schema')!r}, expected {_TRUTH_SCHEMA!r})")
        ver = int(f.attrs.get("schema_version", -1))
        if ver != _TRUTH_VERSION:
            raise StorageError(f"{path}: truth schema version {ver} is not supported (this "
                               f"packbms reads version {_TRUTH_VERSION})")

        def get(name, dtype=None):
            if name not in f:
                raise StorageError(f"{path}: dataset /{name} is missing")
            a = f[name][()]
            return a.astype(dtype) if dtype is not None else a

        chem = Chemistry(str(f["chemistry"].attrs["name"]), get("chemistry/soc"),
                         get("chemistry/ocv_v"), get("chemistry/entropic_v_per_k"),
                         float(f["chemistry"].attrs["r_activation_k"]),
                         float(f["chemistry"].attrs["t_ref_k"]))
        params = CellParams(capacity_ah=get("cells/capacity_ah"), r0_ohm=get("cells/r0_ohm"),
                            rc_r_ohm=get("cells/rc_r_ohm"), rc_tau_s=get("cells/rc_tau_s"),
                            coulombic_efficiency=get("cells/coulombic_efficiency"),
                            self_discharge_a=get("cells/self_discharge_a"), chemistry=chem)
        kinds = [k.decode() if isinstance(k, bytes) else str(k)
                 for k in get("pack/segments/kind")]
        segs = tuple(zip(kinds, (float(x) for x in get("pack/segments/start_s")),
                         (float(x) for x in get("pack/segments/end_s"))))
        return Truth(
            time_s=get("time_s", np.float64), soc=get("cells/soc", np.float64),
            voltage_v=get("cells/voltage_v", np.float64),
            temperature_c=get("cells/temperature_c", np.float64),
            balancing=get("cells/balancing", bool), current_a=get("pack/current_a", np.float64),
            pack_voltage_v=get("pack/voltage_v", np.float64),
            charge_ah=get("pack/charge_ah", np.float64), segment=get("pack/segment", np.uint8),
            segments=segs, params=params, initial_soc=get("cells/initial_soc", np.float64),
            ambient_c=get("cells/ambient_c", np.float64),
            sensor_cells=get("sensors/temperature_cell", np.int64),
            t0_unix=float(f.attrs["t0_unix"]), dt_s=float(f.attrs["dt_s"]),
            seed=int(f.attrs["seed"]), config=json.loads(f.attrs["config"]))


def check_output_paths(log_path, truth_path=None, dbc_path=None, layout_path=None) -> None:
    """Fail early (before a long simulation) when an output cannot be written.

    Raises
    ------
    PackBMSError
        The log suffix is not a format :func:`packbms.io.write_log` writes, or a folder does not
        exist.
    """
    from .io import WRITE_SUFFIXES

    name = Path(log_path).name.lower()
    if not any(name.endswith(s) for s in WRITE_SUFFIXES):
        raise PackBMSError(f"{log_path}: cannot write this log format; the suffix must be one of "
                           f"{', '.join(WRITE_SUFFIXES)}")
    for p in (log_path, truth_path, dbc_path, layout_path):
        if p is not None and not Path(p).resolve().parent.is_dir():
            raise PackBMSError(f"{p}: folder {str(Path(p).parent)!r} does not exist")


def write_simulation(result: SimResult, log_path, truth_path=None, *, dbc_path=None,
                     layout_path=None) -> dict:
    """Write a simulated drive: the CAN log, and optionally its truth, database and layout.

    Parameters
    ----------
    result
        From :func:`simulate_pack`.
    log_path
        The log; its suffix picks the format (``.blf``, ``.asc``, ``.log``, ``.trc``, ``.csv``,
        ``.mf4`` with asammdf), see :func:`packbms.io.write_log`.
    truth_path
        HDF5 truth file (:func:`write_truth`), optional.
    dbc_path, layout_path
        Write :attr:`SimResult.dbc_text` / :attr:`SimResult.layout_text` there, optional.

    Returns
    -------
    dict
        ``{"log": Path, "truth": Path | None, "dbc": ..., "layout": ...}``.

    Raises
    ------
    PackBMSError
        Unknown log format or a file that cannot be written.
    """
    from .io import write_log

    check_output_paths(log_path, truth_path, dbc_path, layout_path)
    out = {"log": Path(log_path), "truth": None, "dbc": None, "layout": None}
    write_log(log_path, result.frames)
    if truth_path is not None:
        out["truth"] = write_truth(truth_path, result)
    for key, p, text in (("dbc", dbc_path, result.dbc_text),
                         ("layout", layout_path, result.layout_text)):
        if p is not None:
            p = Path(p)
            tmp = _tmp_name(p)
            try:
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, p)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise PackBMSError(f"{p}: cannot write ({e})") from e
            out[key] = p
    return out
