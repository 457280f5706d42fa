"""Cell models: chemistries (OCV tables) and per-cell equivalent-circuit parameters.

Public API
----------
``Chemistry(name, soc, ocv_v, entropic_v_per_k=0.0, r_activation_k=0.0, t_ref_k=298.15)``
    Frozen. ``soc`` [n] strictly increasing fractions within 0..1, ``ocv_v`` [n] strictly
    increasing volts; ``entropic_v_per_k`` dOCV/dT at the same knots (scalar broadcast);
    ``r_activation_k`` the Arrhenius constant (activation energy / gas constant, K) that scales
    every resistance with temperature. Methods:

    - ``ocv(soc, temperature_k=None)`` -> V (elementwise; entropic term only when a temperature
      is given)
    - ``docv_dsoc(soc)`` -> V per unit SoC
    - ``soc_from_ocv(ocv_v, temperature_k=None)`` -> SoC (inverse table)
    - ``resistance_factor(temperature_k)`` -> ``exp(r_activation_k (1/T - 1/t_ref_k))``
    - ``tables()`` -> ``(soc, ocv_v, entropic_v_per_k)`` contiguous float64 arrays for kernels

``CHEMISTRIES``
    Built-ins: ``"nmc"`` (NMC/graphite, 3.00 V at 0 % .. 4.19 V at 100 %) and ``"lfp"``
    (LFP/graphite, 2.50 V at 0 %, plateau 3.28-3.34 V, 3.60 V at 100 %).
``get_chemistry(name_or_path)``
    A built-in name, a :class:`Chemistry` (returned as is) or a CSV path with columns ``soc``,
    ``ocv_v`` (optionally ``entropic_v_per_k``); raises :class:`CellModelError`.
``CellParams(capacity_ah, r0_ohm, rc_r_ohm, rc_tau_s, coulombic_efficiency=1.0,
self_discharge_a=0.0, chemistry="nmc")``
    Per-cell arrays of length S (``rc_*`` are [S, P], P = 1 or 2 RC pairs); scalars are
    broadcast, ``CellParams.build(cells, ...)`` builds a uniform pack. Properties ``n_cells``,
    ``n_rc``; ``r0_at(temperature_k)``, ``rc_r_at(temperature_k)``, ``take(index)``,
    ``ocv(soc, temperature_k=None)``.
``CellModelError``
    A :class:`packbms.PackBMSError` for a bad table or bad parameters.

Kernels for use inside other kernels (estimators) live in :mod:`packbms.kernels.ocv`
(``ocv_scalar(s, table_soc, table_ocv)``, ``ocv_slope_scalar``, ``soc_from_ocv_scalar``,
``ocv_temp_scalar``) and :mod:`packbms.kernels.ecm` (``resistance_factor_scalar``,
``rc_step_scalar``); pass them ``chemistry.tables()``.

Model (per cell, current ``i`` positive = discharge)::

    v    = OCV(soc, T) - R0(T) i - sum_p v_p
    v_p' = -v_p / tau_p + R_p(T) i / tau_p                     (exact ZOH step: decay exp(-dt/tau))
    soc' = -(eta(i) i + i_sd) / (3600 capacity_ah)           eta = coulombic_efficiency if i < 0 else 1

Tables are piecewise linear and extrapolated linearly by their end segments outside their SoC
range (see :mod:`packbms.kernels.ocv`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PackBMSError, closest_names
from .kernels import ocv as _ocv

__all__ = ["Chemistry", "CellParams", "CellModelError", "CHEMISTRIES", "get_chemistry",
           "T_REF_K"]

#: Reference temperature of the built-in tables (25 °C), K.
T_REF_K = 298.15


class CellModelError(PackBMSError):
    """An OCV table or a set of cell parameters is invalid (names the file/row or the field)."""


def _f64(x) -> np.ndarray:
    # np.ascontiguousarray would turn a 0-d input into 1-d
    return np.asarray(x, dtype=np.float64, order="C")


def _f64_1d(x) -> np.ndarray:
    """Contiguous float64 with at least one dimension (the array kernels need ndim >= 1)."""
    return np.ascontiguousarray(np.atleast_1d(np.asarray(x, dtype=np.float64)))


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Chemistry:
    """An OCV(SoC) table with optional temperature dependence.

    Parameters
    ----------
    name
        Label (``"nmc"``, ``"lfp"`` or the CSV file name).
    soc
        [n] SoC knots, fractions within 0..1, strictly increasing, n >= 2.
    ocv_v
        [n] open-circuit voltage at the knots (V), strictly increasing.
    entropic_v_per_k
        dOCV/dT at the knots (V/K), [n] or a scalar; default 0.
    r_activation_k
        Activation energy over the gas constant (K) for ``R(T) = R_ref exp(r_activation_k
        (1/T - 1/t_ref_k))``; 0 (default) keeps resistances independent of temperature.
    t_ref_k
        Temperature (K) at which the table and the reference resistances hold.

    Raises
    ------
    CellModelError
        Tables of different lengths, not strictly increasing, SoC outside 0..1, voltages outside
        0..10 V, or non-finite values.

    Examples
    --------
    >>> chem = Chemistry("toy", [0.0, 1.0], [3.0, 4.0])
    >>> float(chem.ocv(0.25))
    3.25
    """

    name: str
    soc: np.ndarray
    ocv_v: np.ndarray
    entropic_v_per_k: np.ndarray | float = 0.0
    r_activation_k: float = 0.0
    t_ref_k: float = T_REF_K

    def __post_init__(self):
        soc = _f64(self.soc)
        ocv = _f64(self.ocv_v)
        where = f"chemistry {self.name!r}"
        if soc.ndim != 1 or ocv.ndim != 1 or soc.shape != ocv.shape:
            raise CellModelError(f"{where}: soc and ocv_v must be 1-D of equal length, got "
                                 f"{soc.shape} and {ocv.shape}")
        if soc.size < 2:
            raise CellModelError(f"{where}: the OCV table needs at least 2 points, got {soc.size}")
        ent = _f64(self.entropic_v_per_k)
        if ent.ndim == 0:
            ent = np.full(soc.shape, float(ent))
        if ent.shape != soc.shape:
            raise CellModelError(f"{where}: entropic_v_per_k must be a scalar or have "
                                 f"{soc.size} values, got shape {ent.shape}")
        for label, arr in (("soc", soc), ("ocv_v", ocv), ("entropic_v_per_k", ent)):
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise CellModelError(f"{where}: {label}[{bad[0]}] is not finite ({arr[bad[0]]})")
        _check_table(soc, ocv, where, rows=None)
        if not np.isfinite(self.r_activation_k) or self.r_activation_k < 0:
            raise CellModelError(f"{where}: r_activation_k must be finite and >= 0, got "
                                 f"{self.r_activation_k}")
        if not self.t_ref_k > 0:
            raise CellModelError(f"{where}: t_ref_k must be > 0 K, got {self.t_ref_k}")
        object.__setattr__(self, "soc", _readonly(soc))
        object.__setattr__(self, "ocv_v", _readonly(ocv))
        object.__setattr__(self, "entropic_v_per_k", _readonly(ent))
        object.__setattr__(self, "r_activation_k", float(self.r_activation_k))
        object.__setattr__(self, "t_ref_k", float(self.t_ref_k))

    # -- equality by value (arrays) ----------------------------------------------------------
    def __eq__(self, other):
        if not isinstance(other, Chemistry):
            return NotImplemented
        return (self.name == other.name and np.array_equal(self.soc, other.soc)
                and np.array_equal(self.ocv_v, other.ocv_v)
                and np.array_equal(self.entropic_v_per_k, other.entropic_v_per_k)
                and self.r_activation_k == other.r_activation_k and self.t_ref_k == other.t_ref_k)

    def __hash__(self):
        return hash((self.name, self.soc.tobytes(), self.ocv_v.tobytes()))

    def __repr__(self):
        return (f"Chemistry({self.name!r}, {self.soc.size} points, "
                f"{self.ocv_v[0]:.3f}..{self.ocv_v[-1]:.3f} V)")

    # -- evaluation --------------------------------------------------------------------------
    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(soc, ocv_v, entropic_v_per_k)`` as contiguous float64 arrays for the kernels."""
        return self.soc, self.ocv_v, self.entropic_v_per_k

    @property
    def has_entropic(self) -> bool:
        """True when any entropic coefficient is non-zero."""
        return bool(np.any(self.entropic_v_per_k != 0.0))

    def ocv(self, soc, temperature_k=None):
        """Open-circuit voltage (V) at ``soc`` (fraction, any shape).

        Parameters
        ----------
        soc
            State of charge, fraction; outside the table the end segments are extrapolated.
        temperature_k
            Optional temperature (K, broadcastable to ``soc``): adds
            ``entropic_v_per_k(soc) * (T - t_ref_k)``.

        Returns
        -------
        float or ndarray
            Same shape as ``soc`` (a Python float for a scalar).

        Examples
        --------
        >>> round(float(get_chemistry("nmc").ocv(1.0)), 3)
        4.19
        """
        s = _f64_1d(soc)
        v = _ocv.ocv_interp(s, self.soc, self.ocv_v)
        if temperature_k is not None:
            ent = _ocv.ocv_interp(s, self.soc, self.entropic_v_per_k)
            v = v + ent * (np.asarray(temperature_k, dtype=np.float64) - self.t_ref_k)
            if np.ndim(soc) == 0 and np.ndim(temperature_k) > 0:
                return v
        return _out(v, soc)

    def docv_dsoc(self, soc):
        """Slope dOCV/dSoC (V per unit SoC) at ``soc`` (any shape).

        Examples
        --------
        >>> chem = Chemistry("toy", [0.0, 1.0], [3.0, 4.0])
        >>> float(chem.docv_dsoc(0.5))
        1.0
        """
        return _out(_ocv.ocv_slope(_f64_1d(soc), self.soc, self.ocv_v), soc)

    def soc_from_ocv(self, ocv_v, temperature_k=None):
        """SoC whose open-circuit voltage is ``ocv_v`` (inverse of :meth:`ocv`).

        With ``temperature_k`` the entropic term is removed by a fixed-point iteration on SoC.

        Examples
        --------
        >>> chem = Chemistry("toy", [0.0, 1.0], [3.0, 4.0])
        >>> float(chem.soc_from_ocv(3.5))
        0.5
        """
        v = _f64_1d(ocv_v)
        s = _ocv.soc_from_ocv(v, self.soc, self.ocv_v)
        if temperature_k is not None and self.has_entropic:
            dt = np.asarray(temperature_k, dtype=np.float64) - self.t_ref_k
            for _ in range(20):     # fixed point; contracts fast (dOCV/dT varies slowly)
                ent = _ocv.ocv_interp(s, self.soc, self.entropic_v_per_k)
                s_new = _ocv.soc_from_ocv(_f64_1d(v - ent * dt), self.soc, self.ocv_v)
                done = np.all(np.abs(s_new - s) < 1e-13)
                s = s_new
                if done:
                    break
        return _out(s, ocv_v)

    def resistance_factor(self, temperature_k):
        """Multiplier of reference resistances at ``temperature_k`` (K).

        Examples
        --------
        >>> float(get_chemistry("nmc").resistance_factor(298.15))
        1.0
        """
        t = np.asarray(temperature_k, dtype=np.float64)
        if np.any(~(t > 0)):
            raise CellModelError(f"temperature_k must be > 0 K, got min {t.min()}")
        f = np.exp(self.r_activation_k * (1.0 / t - 1.0 / self.t_ref_k))
        return float(f) if f.ndim == 0 else f


def _out(v: np.ndarray, like):
    """Return a Python float for scalar input, else the array."""
    return float(v.reshape(-1)[0]) if np.ndim(like) == 0 else v


def _check_table(soc: np.ndarray, ocv: np.ndarray, where: str, rows) -> None:
    """Validate a table; ``rows`` maps table index -> human row number (CSV line) or None."""

    def at(i):
        return f" (line {rows[i]})" if rows is not None else f" (point {i})"

    bad = np.flatnonzero((soc < 0.0) | (soc > 1.0))
    if bad.size:
        i = bad[0]
        hint = " (percent? give SoC as a fraction 0..1)" if 1.0 < soc[i] <= 100.0 else ""
        raise CellModelError(f"{where}: soc must be within 0..1, got {soc[i]}{at(i)}{hint}")
    bad = np.flatnonzero((ocv <= 0.0) | (ocv > 10.0))
    if bad.size:
        i = bad[0]
        hint = " (millivolts? give volts)" if ocv[i] > 1000 else ""
        raise CellModelError(f"{where}: ocv_v must be within 0..10 V, got {ocv[i]}{at(i)}{hint}")
    bad = np.flatnonzero(np.diff(soc) <= 0)
    if bad.size:
        i = bad[0] + 1
        raise CellModelError(f"{where}: soc must be strictly increasing, got {soc[i]} after "
                             f"{soc[i - 1]}{at(i)}")
    bad = np.flatnonzero(np.diff(ocv) <= 0)
    if bad.size:
        i = bad[0] + 1
        raise CellModelError(f"{where}: ocv_v must be strictly increasing with soc, got "
                             f"{ocv[i]} V after {ocv[i - 1]} V{at(i)}")


# -- built-in chemistries ------------------------------------------------------------------------
# Written for this project from the typical shape of 25 °C pseudo-OCV curves (C/20 average of
# charge and discharge): NMC/graphite has a steep knee below ~10 % and a gentle rise to 4.19 V;
# LFP/graphite has the two-phase plateau (3.28-3.34 V) over most of the range.
_NMC_SOC = [0.00, 0.01, 0.03, 0.05, 0.08, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50,
            0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.98, 1.00]
_NMC_OCV = [3.000, 3.180, 3.370, 3.450, 3.515, 3.545, 3.590, 3.622, 3.648, 3.670, 3.690, 3.708,
            3.727, 3.750, 3.778, 3.812, 3.850, 3.890, 3.930, 3.970, 4.010, 4.055, 4.105, 4.150,
            4.190]
# dOCV/dT of NMC/graphite: about -0.4 mV/K when empty, near 0 around mid SoC.
_NMC_ENT = np.interp(_NMC_SOC, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                     [-0.40e-3, -0.20e-3, -0.05e-3, 0.05e-3, 0.0, -0.10e-3])

_LFP_SOC = [0.00, 0.01, 0.02, 0.04, 0.06, 0.08, 0.10, 0.15, 0.20, 0.30, 0.40, 0.50, 0.60, 0.65,
            0.70, 0.80, 0.90, 0.95, 0.97, 0.99, 1.00]
_LFP_OCV = [2.500, 2.850, 3.000, 3.120, 3.180, 3.210, 3.230, 3.255, 3.275, 3.290, 3.298, 3.303,
            3.310, 3.322, 3.330, 3.333, 3.338, 3.360, 3.400, 3.500, 3.600]
_LFP_ENT = np.interp(_LFP_SOC, [0.0, 0.5, 1.0], [-0.10e-3, 0.0, -0.05e-3])

#: Built-in chemistries by name.
CHEMISTRIES: dict[str, Chemistry] = {
    "nmc": Chemistry("nmc", _NMC_SOC, _NMC_OCV, _NMC_ENT, r_activation_k=3500.0),
    "lfp": Chemistry("lfp", _LFP_SOC, _LFP_OCV, _LFP_ENT, r_activation_k=4000.0),
}


def get_chemistry(name_or_path) -> Chemistry:
    """A built-in chemistry by name, or one read from a CSV OCV table.

    Parameters
    ----------
    name_or_path
        ``"nmc"`` / ``"lfp"`` (case-insensitive), a :class:`Chemistry` (returned unchanged), or a
        path to a CSV file with a header row naming the columns ``soc`` (fraction 0..1) and
        ``ocv_v`` (V), optionally ``entropic_v_per_k`` (V/K). Other columns are ignored; lines
        starting with ``#`` are comments.

    Returns
    -------
    Chemistry

    Raises
    ------
    CellModelError
        Unknown name (with near misses), unreadable file, missing column, a value that is not a
        number, out of range or not increasing (naming the file and line).

    Examples
    --------
    >>> get_chemistry("LFP").name
    'lfp'
    """
    if isinstance(name_or_path, Chemistry):
        return name_or_path
    key = str(name_or_path)
    if key.lower() in CHEMISTRIES:
        return CHEMISTRIES[key.lower()]
    path = Path(key)
    if path.suffix.lower() in (".csv", ".txt") or path.exists():
        return _read_ocv_csv(path)
    raise CellModelError(f"unknown chemistry {key!r}: expected a built-in name "
                         f"{sorted(CHEMISTRIES)} or the path of a CSV OCV table (columns soc, "
                         f"ocv_v); best matches are {closest_names(key.lower(), CHEMISTRIES)}")


def _read_ocv_csv(path: Path) -> Chemistry:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CellModelError(f"{path}: OCV table not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CellModelError(f"{path}: cannot read OCV table ({e})") from e
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), start=1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise CellModelError(f"{path}: OCV table is empty; expected a header row 'soc,ocv_v'")
    rows = list(csv.reader([ln for _, ln in lines]))
    header = [h.strip().lower() for h in rows[0]]
    cols = {}
    for want in ("soc", "ocv_v"):
        if want not in header:
            raise CellModelError(f"{path}: line {lines[0][0]}: header {header} has no column "
                                 f"{want!r} (expected columns soc, ocv_v; best matches are "
                                 f"{closest_names(want, header)})")
        cols[want] = header.index(want)
    if "entropic_v_per_k" in header:
        cols["entropic_v_per_k"] = header.index("entropic_v_per_k")
    values = {k: [] for k in cols}
    line_nos = []
    for (line_no, _), row in zip(lines[1:], rows[1:]):
        for k, c in cols.items():
            if c >= len(row):
                raise CellModelError(f"{path}: line {line_no}: expected {len(header)} columns, "
                                     f"got {len(row)}")
            try:
                values[k].append(float(row[c]))
            except ValueError:
                raise CellModelError(f"{path}: line {line_no}: column {k!r} is not a number: "
                                     f"{row[c]!r}") from None
        line_nos.append(line_no)
    soc = np.array(values["soc"])
    ocv = np.array(values["ocv_v"])
    if soc.size < 2:
        raise CellModelError(f"{path}: the OCV table needs at least 2 rows, got {soc.size}")
    for label, arr in (("soc", soc), ("ocv_v", ocv)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise CellModelError(f"{path}: line {line_nos[bad[0]]}: {label} is not finite")
    _check_table(soc, ocv, str(path), rows=line_nos)
    ent = np.array(values.get("entropic_v_per_k", [0.0] * soc.size))
    try:
        return Chemistry(path.name, soc, ocv, ent)
    except CellModelError as e:
        raise CellModelError(f"{path}: {e}") from None


# -- per-cell parameters -------------------------------------------------------------------------
@dataclass(eq=False)
class CellParams:
    """Equivalent-circuit parameters of the S cells of a series string.

    Parameters
    ----------
    capacity_ah
        [S] capacity of each cell (Ah). Defines S unless another field is longer.
    r0_ohm
        [S] ohmic resistance at the chemistry's reference temperature.
    rc_r_ohm, rc_tau_s
        [S, P] resistance and time constant of P = 1 or 2 RC pairs. A scalar or a 1-D sequence
        of length P (one value per pair) is broadcast to every cell.
    coulombic_efficiency
        [S] fraction of charging current stored (applied when current < 0); 0 < eta <= 1.
    self_discharge_a
        [S] internal leakage current (A, >= 0) draining the cell at all times.
    chemistry
        A :class:`Chemistry` or anything :func:`get_chemistry` accepts.

    Raises
    ------
    CellModelError
        Non-positive capacity, resistance or time constant, negative self-discharge, efficiency
        outside (0, 1], P not 1 or 2, or lengths that disagree.

    Examples
    --------
    >>> p = CellParams.build(4, capacity_ah=60.0, r0_ohm=1e-3, rc_r_ohm=[4e-4, 6e-4],
    ...                      rc_tau_s=[10.0, 200.0])
    >>> p.n_cells, p.n_rc, p.rc_r_ohm.shape
    (4, 2, (4, 2))
    """

    capacity_ah: np.ndarray
    r0_ohm: np.ndarray
    rc_r_ohm: np.ndarray
    rc_tau_s: np.ndarray
    coulombic_efficiency: np.ndarray = 1.0  # type: ignore[assignment]
    self_discharge_a: np.ndarray = 0.0  # type: ignore[assignment]
    chemistry: Chemistry = field(default="nmc")  # type: ignore[assignment]

    def __post_init__(self):
        self.chemistry = get_chemistry(self.chemistry)
        per_cell = ("capacity_ah", "r0_ohm", "coulombic_efficiency", "self_discharge_a")
        arrays = {k: _f64(getattr(self, k)) for k in per_cell}
        for k, a in arrays.items():
            if a.ndim > 1:
                raise CellModelError(f"CellParams.{k} must be a scalar or 1-D [S], got shape "
                                     f"{a.shape}")
        rc_r = _f64(self.rc_r_ohm)
        rc_tau = _f64(self.rc_tau_s)
        lengths = {a.shape[0] for a in arrays.values() if a.ndim == 1}
        for a in (rc_r, rc_tau):
            if a.ndim == 2:
                lengths.add(a.shape[0])
        if len(lengths) > 1:
            raise CellModelError(f"CellParams: per-cell arrays disagree on the number of cells "
                                 f"({sorted(lengths)})")
        if not lengths:
            raise CellModelError("CellParams: give at least one per-cell array (or use "
                                 "CellParams.build(cells, ...))")
        s = lengths.pop()
        if s < 1:
            raise CellModelError("CellParams: need at least one cell")
        for k, a in arrays.items():
            setattr(self, k, np.ascontiguousarray(np.broadcast_to(a, (s,)), dtype=np.float64))
        self.rc_r_ohm = _rc_2d(rc_r, s, "rc_r_ohm")
        self.rc_tau_s = _rc_2d(rc_tau, s, "rc_tau_s")
        if self.rc_r_ohm.shape != self.rc_tau_s.shape:
            raise CellModelError(f"CellParams: rc_r_ohm {self.rc_r_ohm.shape} and rc_tau_s "
                                 f"{self.rc_tau_s.shape} differ in shape")
        if self.rc_r_ohm.shape[1] not in (1, 2):
            raise CellModelError(f"CellParams: 1 or 2 RC pairs are supported, got "
                                 f"{self.rc_r_ohm.shape[1]}")
        self._positive("capacity_ah", self.capacity_ah)
        self._positive("r0_ohm", self.r0_ohm)
        self._positive("rc_r_ohm", self.rc_r_ohm)
        self._positive("rc_tau_s", self.rc_tau_s)
        eta = self.coulombic_efficiency
        bad = np.flatnonzero(~((eta > 0) & (eta <= 1)))
        if bad.size:
            raise CellModelError(f"CellParams.coulombic_efficiency[{bad[0]}] must be in (0, 1], "
                                 f"got {eta[bad[0]]}")
        sd = self.self_discharge_a
        bad = np.flatnonzero(~(np.isfinite(sd) & (sd >= 0)))
        if bad.size:
            raise CellModelError(f"CellParams.self_discharge_a[{bad[0]}] must be >= 0 A, got "
                                 f"{sd[bad[0]]}")

    @staticmethod
    def _positive(name: str, a: np.ndarray):
        bad = np.flatnonzero(~(np.isfinite(a) & (a > 0)))
        if bad.size:
            idx = tuple(int(i) for i in np.unravel_index(bad[0], a.shape))
            idx = idx[0] if len(idx) == 1 else idx
            raise CellModelError(f"CellParams.{name}[{idx}] must be finite and > 0, got "
                                 f"{a.flat[bad[0]]}")

    @classmethod
    def build(cls, cells: int, *, capacity_ah=60.0, r0_ohm=1.0e-3, rc_r_ohm=(4.0e-4,),
              rc_tau_s=(10.0,), coulombic_efficiency=0.999, self_discharge_a=0.0,
              chemistry="nmc") -> "CellParams":
        """Parameters for ``cells`` cells, broadcasting scalars (and per-pair RC values).

        Parameters
        ----------
        cells
            Number of series cells S (>= 1).
        capacity_ah, r0_ohm, coulombic_efficiency, self_discharge_a
            Scalars or [S] arrays.
        rc_r_ohm, rc_tau_s
            Scalar (one pair), [P] (per pair, same for every cell) or [S, P].
        chemistry
            Built-in name, CSV path or :class:`Chemistry`.

        Returns
        -------
        CellParams

        Examples
        --------
        >>> CellParams.build(3).capacity_ah
        array([60., 60., 60.])
        """
        if int(cells) < 1:
            raise CellModelError(f"cells must be >= 1, got {cells}")
        s = int(cells)

        def per_cell(x, name):
            a = _f64(x)
            if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, s)):
                raise CellModelError(f"CellParams.{name}: got shape {a.shape}, but the number "
                                     f"of cells disagrees: expected a scalar or {s} values")
            return np.broadcast_to(a, (s,))

        return cls(capacity_ah=per_cell(capacity_ah, "capacity_ah"),
                   r0_ohm=per_cell(r0_ohm, "r0_ohm"),
                   rc_r_ohm=_rc_2d(_f64(rc_r_ohm), s, "rc_r_ohm"),
                   rc_tau_s=_rc_2d(_f64(rc_tau_s), s, "rc_tau_s"),
                   coulombic_efficiency=per_cell(coulombic_efficiency, "coulombic_efficiency"),
                   self_discharge_a=per_cell(self_discharge_a, "self_discharge_a"),
                   chemistry=chemistry)

    # -- views -------------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        """Number of series cells S."""
        return int(self.capacity_ah.shape[0])

    @property
    def n_rc(self) -> int:
        """Number of RC pairs P."""
        return int(self.rc_r_ohm.shape[1])

    def r0_at(self, temperature_k) -> np.ndarray:
        """R0 [S] (or broadcast with ``temperature_k``) at temperature ``temperature_k`` (K)."""
        return self.r0_ohm * self.chemistry.resistance_factor(temperature_k)

    def rc_r_at(self, temperature_k) -> np.ndarray:
        """RC resistances [S, P] at a scalar temperature or per-cell temperatures [S] (K)."""
        f = np.asarray(self.chemistry.resistance_factor(temperature_k))
        return self.rc_r_ohm * (f[:, None] if f.ndim == 1 else f)

    def ocv(self, soc, temperature_k=None):
        """OCV of the chemistry (shortcut for ``self.chemistry.ocv``)."""
        return self.chemistry.ocv(soc, temperature_k)

    def take(self, index) -> "CellParams":
        """The parameters of a subset of cells (slice, mask or index array)."""
        idx = np.arange(self.n_cells)[index]
        idx = np.atleast_1d(idx)
        return CellParams(capacity_ah=self.capacity_ah[idx], r0_ohm=self.r0_ohm[idx],
                          rc_r_ohm=self.rc_r_ohm[idx], rc_tau_s=self.rc_tau_s[idx],
                          coulombic_efficiency=self.coulombic_efficiency[idx],
                          self_discharge_a=self.self_discharge_a[idx], chemistry=self.chemistry)

    def __eq__(self, other):
        if not isinstance(other, CellParams):
            return NotImplemented
        return (self.chemistry == other.chemistry
                and all(np.array_equal(getattr(self, k), getattr(other, k))
                        for k in ("capacity_ah", "r0_ohm", "rc_r_ohm", "rc_tau_s",
                                  "coulombic_efficiency", "self_discharge_a")))

    def __repr__(self):
        return (f"CellParams({self.n_cells} cells, {self.n_rc} RC, {self.chemistry.name}, "
                f"capacity {self.capacity_ah.min():.2f}..{self.capacity_ah.max():.2f} Ah)")


def _rc_2d(a: np.ndarray, s: int, name: str) -> np.ndarray:
    """Broadcast an RC parameter to [S, P]: scalar -> one pair, [P] -> per pair, [S, P] as is."""
    if a.ndim == 0:
        a = a.reshape(1, 1)
    elif a.ndim == 1:
        a = a.reshape(1, -1)
    elif a.ndim != 2:
        raise CellModelError(f"CellParams.{name} must be a scalar, [P] or [S, P], got shape "
                             f"{a.shape}")
    if a.shape[0] not in (1, s):
        raise CellModelError(f"CellParams.{name} has {a.shape[0]} rows, expected 1 or {s} cells")
    return np.ascontiguousarray(np.broadcast_to(a, (s, a.shape[1])), dtype=np.float64)
