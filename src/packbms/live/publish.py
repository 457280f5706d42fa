"""The bridge: a layout's ``[publish]`` section, and the CAN frames it turns estimates into.

A ``[publish]`` section names messages of a database (``dbc``, default: the monitored one) and,
for each signal, the *quantity* it carries. Every ``period_s`` of bus time the monitor encodes
the latest estimate with :func:`packbms.dbc.encode` (vectorised, one call per message) and sends
the frames on the monitored bus or a second one::

    [publish]
    dbc = "pack96_publish.dbc"     # relative to the layout's folder; default: the monitored DBC
    period_s = 1.0                 # default period of every message (s of bus time)
    # interface = "socketcan"      # optional second bus for `packbms monitor --publish`
    # channel = "can1"             # (the API takes publish_bus= instead)

    [[publish.message]]            # scalar signals: signal = quantity
    name = "PBMS_PackSoc"
    period_s = 0.1                 # optional, this message only
    signals = { PBMS_PackSoc = "pack_soc_percent", PBMS_WeakestCell = "weakest_cell" }

    [[publish.message]]            # one per-cell quantity in a multiplexed message:
    name = "PBMS_CellSoc"          # cell = mux_value * len(cells) + slot + first_cell (0-based)
    mux = "PBMS_CellGroup"
    cells = ["PBMS_CellSoc1", "PBMS_CellSoc2", "PBMS_CellSoc3"]
    quantity = "cell_soc_percent"
    first_cell = 0
    signals = { PBMS_CellSocCounter = "counter" }   # optional scalars in every frame

Quantities (SoC ones also as ``<name>_percent``, multiplied by 100):

========================  ===========================================================
``pack_soc``              usable pack SoC (:func:`packbms.soc.pack_soc`), fraction
``pack_soc_mean``         mean cell SoC
``min_cell_soc``          lowest cell SoC
``max_cell_soc``          highest cell SoC
``soc_spread``            highest minus lowest cell SoC
``max_cell_soc_std``      largest per-cell 1-sigma
``weakest_cell``          1-based number of the cell that empties first (min SoC x capacity)
``strongest_cell``        1-based number of the cell that fills first (min headroom)
``stale_cells``           number of cells whose voltage is stale
``current_a``             pack current (A, positive = discharge)
``pack_voltage_v``        pack voltage (V; not available without one in the layout)
``counter``               rolling counter, +1 per frame of the message, wraps at the signal's range
``cell_soc``              per cell (``cells`` slots only): SoC
``cell_soc_std``          per cell: 1-sigma of the SoC
``cell_voltage``          per cell: last voltage (V)
``cell_stale``            per cell: 1 when the cell's voltage is stale, else 0
========================  ===========================================================

A value that is not available (NaN: a stale voltage, cells past the pack's end in the last
multiplexed group) is sent as the signal's largest raw value (all bits set for an unsigned
signal, the J1939 "not available" convention). A value outside what the signal can hold is
sent saturated at the signal's limit and counted (``status()["publish"]["clipped"]``), never
wrapped. Bounded quantities (SoC, sigma, cell numbers, counts) are checked against each
signal's range when the section is validated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LayoutError, closest_names

__all__ = ["PublishMessage", "PublishSpec", "Publisher", "parse_publish", "QUANTITIES",
           "CELL_QUANTITIES", "make_publish_dbc_text", "make_publish_layout_text"]

#: Scalar quantities and the range each can take for a pack of S cells (None: unbounded).
QUANTITIES = {
    "pack_soc": (0.0, 1.0),
    "pack_soc_mean": (0.0, 1.0),
    "min_cell_soc": (0.0, 1.0),
    "max_cell_soc": (0.0, 1.0),
    "soc_spread": (0.0, 1.0),
    "max_cell_soc_std": (0.0, 0.5),
    "weakest_cell": (1.0, "S"),
    "strongest_cell": (1.0, "S"),
    "stale_cells": (0.0, "S"),
    "current_a": None,
    "pack_voltage_v": None,
    "counter": None,
}
#: Per-cell quantities (the ``quantity`` of a multiplexed message's ``cells``).
CELL_QUANTITIES = {
    "cell_soc": (0.0, 1.0),
    "cell_soc_std": (0.0, 0.5),
    "cell_voltage": None,
    "cell_stale": (0.0, 1.0),
}
_PERCENT = "_percent"


def _base(quantity: str) -> tuple[str, float]:
    """``(name without _percent, factor)``."""
    if quantity.endswith(_PERCENT) and "soc" in quantity:
        return quantity[: -len(_PERCENT)], 100.0
    return quantity, 1.0


def _known(table: dict) -> list[str]:
    names = list(table)
    return names + [n + _PERCENT for n in names if "soc" in n]


@dataclass(frozen=True)
class PublishMessage:
    """One message of the ``[publish]`` section.

    Attributes
    ----------
    name : str
        Message name in the publish database.
    period_s : float
        Seconds of bus time between two sends.
    signals : tuple of (signal, quantity)
        Scalar signals.
    mux : str or None
        Multiplexer of a per-cell message.
    cells : tuple of str
        The per-cell slots of a multiplexed message.
    quantity : str or None
        What the slots carry (a :data:`CELL_QUANTITIES` name, maybe with ``_percent``).
    first_cell : int
        0-based cell of slot 0 in group 0.
    """

    name: str
    period_s: float
    signals: tuple = ()
    mux: str | None = None
    cells: tuple = ()
    quantity: str | None = None
    first_cell: int = 0

    def groups(self, n_cells: int) -> int:
        """Multiplexer values needed to carry ``n_cells`` cells (0 for a scalar message)."""
        if not self.cells:
            return 0
        return max(1, -(-(n_cells - self.first_cell) // len(self.cells)))


@dataclass(frozen=True)
class PublishSpec:
    """A parsed ``[publish]`` section (see the module docstring for the keys).

    Attributes
    ----------
    messages : tuple of PublishMessage
    period_s : float
        Default period.
    dbc : pathlib.Path or None
        Publish database (resolved against the layout's folder); None: the monitored one.
    interface, channel : str or None
        Optional second bus for the ``monitor`` command.
    where : str
        ``"<layout path>: [publish]"`` for error messages.
    """

    messages: tuple
    period_s: float = 1.0
    dbc: Path | None = None
    interface: str | None = None
    channel: str | None = None
    where: str = "[publish]"

    def _fail(self, what: str):
        raise LayoutError(f"{self.where} {what}")

    def validate(self, database, n_cells: int) -> "PublishSpec":
        """Check every message, signal and quantity against the publish database.

        Parameters
        ----------
        database
            cantools database or :class:`packbms.dbc.CompiledDatabase` holding the messages.
        n_cells
            Cells in series (per-cell messages must be able to address them all).

        Returns
        -------
        PublishSpec
            ``self``.

        Raises
        ------
        LayoutError
            Naming the section, the missing message or signal and the closest names the
            database has; a signal that is not a multiplexer; multiplexer values that do not
            reach every cell; a signal too narrow for its quantity.
        """
        db = getattr(database, "database", database)
        messages = {m.name: m for m in db.messages}
        for pm in self.messages:
            msg = messages.get(pm.name)
            if msg is None:
                self._fail(f"message {pm.name!r} is not in the publish database; best matches "
                           f"are {closest_names(pm.name, messages)}")
            sigs = {s.name: s for s in msg.signals}

            def signal(name: str):
                s = sigs.get(name)
                if s is None:
                    self._fail(f"message {pm.name!r} has no signal {name!r}; best matches are "
                               f"{closest_names(name, sigs)}")
                return s

            for name, quantity in pm.signals:
                _check_range(self, pm.name, signal(name), QUANTITIES, quantity, n_cells)
            if pm.cells:
                mux = signal(pm.mux)
                if not mux.is_multiplexer:
                    muxes = [s.name for s in msg.signals if s.is_multiplexer]
                    self._fail(f"signal {pm.mux!r} of message {pm.name!r} is not a multiplexer "
                               f"(the message's multiplexers: {muxes})")
                need = set(range(pm.groups(n_cells)))
                for name in pm.cells:
                    s = signal(name)
                    if s.multiplexer_signal != pm.mux:
                        self._fail(f"signal {name!r} of message {pm.name!r} is not under the "
                                   f"multiplexer {pm.mux!r}")
                    missing = sorted(need - set(s.multiplexer_ids or ()))
                    if missing:
                        self._fail(f"message {pm.name!r}: {n_cells} cells need {pm.mux} values "
                                   f"0..{len(need) - 1}, but signal {name!r} is not sent for "
                                   f"{_ranges(missing)}")
                    _check_range(self, pm.name, s, CELL_QUANTITIES, pm.quantity, n_cells)
                for name, _ in pm.signals:
                    if sigs[name].multiplexer_signal is not None:
                        self._fail(f"scalar signal {name!r} of message {pm.name!r} is "
                                   f"multiplexed; put only signals sent in every frame in "
                                   f"signals")
        return self


def _ranges(values: list[int]) -> str:
    out, start = [], values[0]
    for a, b in zip(values, values[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


def _signal_limits(sig) -> tuple[float, float] | None:
    """Physical range an integer signal can hold (None for float signals)."""
    if sig.is_float:
        return None
    n = int(sig.length)
    lo, hi = (-(1 << (n - 1)), (1 << (n - 1)) - 1) if sig.is_signed else (0, (1 << n) - 1)
    a, b = lo * sig.scale + sig.offset, hi * sig.scale + sig.offset
    return (min(a, b), max(a, b))


def _check_range(spec, message, sig, table, quantity, n_cells):
    base, factor = _base(quantity)
    rng = table[base]
    if rng is None:
        return
    lo = rng[0] * factor
    hi = (n_cells if rng[1] == "S" else rng[1]) * factor
    limits = _signal_limits(sig)
    if limits is None:
        return
    # half a step of slack: the value is rounded to the nearest raw step
    slack = abs(sig.scale) / 2
    if lo < limits[0] - slack or hi > limits[1] + slack:
        spec._fail(f"signal {sig.name!r} of message {message!r} holds {limits[0]:g}..{limits[1]:g} "
                   f"but {quantity} needs {lo:g}..{hi:g}")


def parse_publish(layout) -> PublishSpec | None:
    """Parse and check the keys of a layout's ``[publish]`` section (not the database names:
    see :meth:`PublishSpec.validate`).

    Parameters
    ----------
    layout
        A :class:`packbms.layout.Layout` (its ``raw`` TOML and ``path``).

    Returns
    -------
    PublishSpec or None
        None when the layout has no ``[publish]`` section.

    Raises
    ------
    LayoutError
        Unknown keys (with near misses), wrong types, no message, a period that is not > 0,
        an unknown quantity (with near misses).

    Examples
    --------
    >>> from packbms.layout import parse_layout
    >>> lay = parse_layout('''
    ... [pack]
    ... cells_in_series = 2
    ... capacity_ah = 5.0
    ... chemistry = "nmc"
    ... [current]
    ... signal = "I"
    ... [cell_voltage]
    ... pattern = "V{index}"
    ... [[publish.message]]
    ... name = "Soc"
    ... signals = { PackSoc = "pack_soc_percent" }
    ... ''')
    >>> parse_publish(lay).messages[0].signals
    (('PackSoc', 'pack_soc_percent'),)
    """
    raw = getattr(layout, "raw", None) or {}
    sec = raw.get("publish")
    if sec is None:
        return None
    where = f"{layout.path}: [publish]" if getattr(layout, "path", None) else "[publish]"

    def fail(what: str):
        raise LayoutError(f"{where} {what}")

    if not isinstance(sec, dict):
        fail(f"must be a table, got {type(sec).__name__}")
    known = {"dbc", "period_s", "interface", "channel", "message"}
    for key in sec:
        if key not in known:
            fail(f"unknown key {key!r}; known keys are {sorted(known)} (best matches: "
                 f"{closest_names(key, known)})")

    def number(d, key, default, ctx):
        v = d.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not v > 0:
            fail(f"{ctx}{key} must be a number > 0 (seconds), got {v!r}")
        return float(v)

    def text(d, key, ctx, default=None):
        v = d.get(key, default)
        if v is not None and not isinstance(v, str):
            fail(f"{ctx}{key} must be a string, got {v!r}")
        return v

    period = number(sec, "period_s", 1.0, "")
    dbc = text(sec, "dbc", "")
    dbc_path = None
    if dbc is not None:
        dbc_path = Path(dbc)
        if not dbc_path.is_absolute() and getattr(layout, "path", None):
            dbc_path = Path(layout.path).parent / dbc_path
    channel = sec.get("channel")
    if channel is not None and not isinstance(channel, (str, int)):
        fail(f"channel must be a string or an integer, got {channel!r}")
    msgs = sec.get("message")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        fail("needs at least one [[publish.message]] table (name and signals or cells)")
    out = []
    msg_keys = {"name", "period_s", "signals", "mux", "cells", "quantity", "first_cell"}
    for i, m in enumerate(msgs):
        ctx = f"message {i + 1}: "
        for key in m:
            if key not in msg_keys:
                fail(f"{ctx}unknown key {key!r}; known keys are {sorted(msg_keys)} (best "
                     f"matches: {closest_names(key, msg_keys)})")
        name = text(m, "name", ctx)
        if not name:
            fail(f"{ctx}needs name = \"<message in the publish database>\"")
        ctx = f"message {name!r}: "
        p = number(m, "period_s", period, ctx)
        signals = m.get("signals", {})
        if not isinstance(signals, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in signals.items()):
            fail(f"{ctx}signals must be a table of signal = \"quantity\" strings")
        for sig, q in signals.items():
            if q not in _known(QUANTITIES):
                hint = (" (per-cell quantities go in cells/quantity of a multiplexed message)"
                        if _base(q)[0] in CELL_QUANTITIES else "")
                fail(f"{ctx}signal {sig!r}: unknown quantity {q!r}{hint}; best matches are "
                     f"{closest_names(q, _known(QUANTITIES))}")
        cells = m.get("cells")
        mux = text(m, "mux", ctx)
        quantity = text(m, "quantity", ctx)
        first = m.get("first_cell", 0)
        if cells is None:
            if mux is not None or quantity is not None:
                fail(f"{ctx}mux and quantity need cells = [\"<slot signal>\", ...]")
            if not signals:
                fail(f"{ctx}needs signals = {{ Signal = \"quantity\" }} or cells")
            cells_t = ()
        else:
            if not isinstance(cells, list) or not cells or not all(isinstance(c, str)
                                                                   for c in cells):
                fail(f"{ctx}cells must be a non-empty list of signal names")
            if mux is None:
                fail(f"{ctx}cells need mux = \"<multiplexer signal>\"")
            if quantity is None:
                fail(f"{ctx}cells need quantity = one of {_known(CELL_QUANTITIES)}")
            if quantity not in _known(CELL_QUANTITIES):
                fail(f"{ctx}unknown per-cell quantity {quantity!r}; best matches are "
                     f"{closest_names(quantity, _known(CELL_QUANTITIES))}")
            if isinstance(first, bool) or not isinstance(first, int) or first < 0:
                fail(f"{ctx}first_cell must be an integer >= 0, got {first!r}")
            cells_t = tuple(cells)
        out.append(PublishMessage(name=name, period_s=p, signals=tuple(signals.items()),
                                  mux=mux, cells=cells_t, quantity=quantity,
                                  first_cell=int(first)))
    names = [m.name for m in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        fail(f"message {sorted(dup)[0]!r} is listed twice")
    return PublishSpec(messages=tuple(out), period_s=period, dbc=dbc_path,
                       interface=text(sec, "interface", ""),
                       channel=None if channel is None else str(channel), where=where)


# ------------------------------------------------------------------------------------------------
# encoding
# ------------------------------------------------------------------------------------------------
def _scalar(snapshot, base: str) -> float:
    s = snapshot
    if base == "pack_soc":
        return s.pack_soc
    if base == "pack_soc_mean":
        return s.pack_soc_mean
    if base == "min_cell_soc":
        return s.pack_soc_min
    if base == "max_cell_soc":
        return s.pack_soc_max
    if base == "soc_spread":
        return s.pack_soc_max - s.pack_soc_min
    if base == "max_cell_soc_std":
        return float(np.max(s.soc_std))
    if base == "weakest_cell":
        return float(s.weakest_cell + 1)
    if base == "strongest_cell":
        return float(s.strongest_cell + 1)
    if base == "stale_cells":
        return float(np.count_nonzero(s.stale))
    if base == "current_a":
        return s.current_a
    if base == "pack_voltage_v":
        return float("nan") if s.pack_voltage_v is None else s.pack_voltage_v
    raise KeyError(base)  # pragma: no cover - parse_publish rejects unknown names


def _per_cell(snapshot, base: str) -> np.ndarray:
    if base == "cell_soc":
        return snapshot.soc
    if base == "cell_soc_std":
        return snapshot.soc_std
    if base == "cell_voltage":
        return snapshot.cell_voltage
    if base == "cell_stale":
        return snapshot.stale.astype(np.float64)
    raise KeyError(base)  # pragma: no cover


class _Encoded:
    """Per-message constants: signal limits, not-available values, cell index table."""

    def __init__(self, cdb, pm: PublishMessage, n_cells: int):
        self.pm = pm
        m = cdb.message_index(pm.name)
        self.index = m
        names = cdb.signal_names[m]
        first = int(cdb.sig_first[m])
        self.limits = {}
        self.not_available = {}
        for j, name in enumerate(names):
            s = first + j
            if cdb.sig_float[s]:
                self.limits[name] = (-np.inf, np.inf)
                self.not_available[name] = float("nan")
                continue
            n = int(cdb.sig_length[s])
            if cdb.sig_signed[s]:
                lo, hi = -(1 << (n - 1)), (1 << (n - 1)) - 1
            else:
                lo, hi = 0, (1 << n) - 1
            scale, offset = float(cdb.sig_scale[s]), float(cdb.sig_offset[s])
            a, b = lo * scale + offset, hi * scale + offset
            self.limits[name] = (min(a, b), max(a, b))
            self.not_available[name] = hi * scale + offset
            if name == pm.mux:
                self.mux_scale, self.mux_offset = scale, offset
        self.counter_span = {}
        for name, q in pm.signals:
            if q == "counter":
                s = first + names.index(name)
                self.counter_span[name] = (1 << int(cdb.sig_length[s])) if not cdb.sig_float[s] \
                    else 1 << 24
        k = len(pm.cells)
        g = pm.groups(n_cells)
        self.n_frames = max(1, g)
        if k:
            cell = (np.arange(g)[:, None] * k + np.arange(k)[None, :] + pm.first_cell)
            self.cell = cell                      # [G, k] 0-based cell of each slot
            self.cell_ok = cell < n_cells
        self.counter = 0


class Publisher:
    """Turns snapshots into the frames a :class:`PublishSpec` describes.

    Parameters
    ----------
    spec
        The validated publish section.
    cdb
        :class:`packbms.dbc.CompiledDatabase` of the publish database.
    n_cells
        Cells in series.

    Examples
    --------
    >>> pub = Publisher(spec, compile_database(db), 96)            # doctest: +SKIP
    >>> frames = pub.frames(snapshot, t=snapshot.timestamp)        # doctest: +SKIP
    """

    def __init__(self, spec: PublishSpec, cdb, n_cells: int):
        self.spec = spec
        self.cdb = cdb
        self.n_cells = int(n_cells)
        self._enc = [_Encoded(cdb, pm, self.n_cells) for pm in spec.messages]
        self._next = [None] * len(self._enc)
        self.clipped = 0

    def due(self, t: float) -> list[int]:
        """Indices of the messages due at bus time ``t`` (s); marks them as sent.

        A message is due on the first call and then every ``period_s``, a quarter period early
        at most (updates come at the monitor's cadence, with jitter: a message whose period
        equals the cadence must not skip an update because its frame came a millisecond
        early); after a pause longer than a period it restarts from ``t`` instead of catching
        up.
        """
        from .monitor import _schedule

        out = []
        for i, e in enumerate(self._enc):
            due, self._next[i] = _schedule(self._next[i], t, e.pm.period_s)
            if due:
                out.append(i)
        return out

    def _fit(self, e: _Encoded, name: str, v) -> np.ndarray:
        v = np.array(v, dtype=np.float64, ndmin=1)
        na = ~np.isfinite(v)
        if na.any():
            v[na] = e.not_available[name]
        lo, hi = e.limits[name]
        out = (v < lo) | (v > hi)
        if out.any():
            self.clipped += int(np.count_nonzero(out))
            np.clip(v, lo, hi, out=v)
        return v

    def frames(self, snapshot, t: float, which=None):
        """Encode the messages ``which`` (indices; default all) for one snapshot.

        Parameters
        ----------
        snapshot
            A :class:`packbms.live.Snapshot`.
        t
            Timestamp of the frames (s).
        which
            Message indices, as :meth:`due` returns them.

        Returns
        -------
        list of FrameTable
            One table per message (a multiplexed message has one frame per group).

        Raises
        ------
        DatabaseError
            From :func:`packbms.dbc.encode` (should not happen for a validated spec).
        """
        from ..dbc import encode

        out = []
        for i in (range(len(self._enc)) if which is None else which):
            e = self._enc[i]
            pm = e.pm
            n = e.n_frames
            values = {}
            for name, q in pm.signals:
                if q == "counter":
                    span = e.counter_span[name]
                    values[name] = (e.counter + np.arange(n)) % span
                    continue
                base, factor = _base(q)
                values[name] = np.broadcast_to(self._fit(e, name, _scalar(snapshot, base)
                                                         * factor), (n,))
            if pm.cells:
                base, factor = _base(pm.quantity)
                per_cell = np.asarray(_per_cell(snapshot, base), dtype=np.float64) * factor
                vals = np.full(e.cell.shape, np.nan)
                vals[e.cell_ok] = per_cell[e.cell[e.cell_ok]]
                for slot, name in enumerate(pm.cells):
                    values[name] = self._fit(e, name, vals[:, slot])
                values[pm.mux] = np.arange(n) * e.mux_scale + e.mux_offset
            e.counter += n
            out.append(encode(self.cdb, e.index, np.full(n, float(t)), values))
        return out


# ------------------------------------------------------------------------------------------------
# the reference publish database and layout
# ------------------------------------------------------------------------------------------------
#: Identifiers of the reference publish database.
ID_PUBLISH_PACK = 0x400
ID_PUBLISH_STATS = 0x401
ID_PUBLISH_CELL_SOC = 0x410
ID_PUBLISH_CELL_STD = 0x411
CELLS_PER_PUBLISH_FRAME = 3


def make_publish_dbc_text(cells: int = 96) -> str:
    """The reference publish database for ``cells`` cells (``data/pack96_publish.dbc`` is
    ``make_publish_dbc_text(96)``).

    Four messages: ``PBMS_PackSoc`` (usable, min and max SoC in 0.01 %, the weakest cell and a
    counter), ``PBMS_PackStats`` (mean SoC, spread, largest sigma, stale cells, strongest
    cell), and per-cell SoC and sigma in multiplexed ``PBMS_CellSoc`` / ``PBMS_CellSocStd``
    (three cells per frame, 0.01 %).

    Examples
    --------
    >>> import cantools
    >>> db = cantools.database.load_string(make_publish_dbc_text(12), database_format="dbc")
    >>> [m.name for m in db.messages]
    ['PBMS_PackSoc', 'PBMS_PackStats', 'PBMS_CellSoc', 'PBMS_CellSocStd']
    """
    if not 1 <= cells <= 255:
        raise ValueError(f"cells must be 1..255 (PBMS_StaleCells has 8 bits), got {cells}")
    g = -(-cells // CELLS_PER_PUBLISH_FRAME)
    pct = '(0.01,0) [0|100] "%" Vector__XXX'
    lines = [f'VERSION "packbms-publish-{cells}s"', "", "", "NS_ :", "\tCM_", "\tBA_DEF_",
             "\tBA_", "\tBA_DEF_DEF_", "\tSG_MUL_VAL_", "", "BS_:", "", "BU_: PBMS", "", ""]
    lines.append(f"BO_ {ID_PUBLISH_PACK} PBMS_PackSoc: 8 PBMS")
    lines.append(f" SG_ PBMS_PackSoc : 0|14@1+ {pct}")
    lines.append(f" SG_ PBMS_MinCellSoc : 14|14@1+ {pct}")
    lines.append(f" SG_ PBMS_MaxCellSoc : 28|14@1+ {pct}")
    lines.append(' SG_ PBMS_WeakestCell : 42|10@1+ (1,0) [1|1023] "" Vector__XXX')
    lines.append(' SG_ PBMS_StaleCells : 52|8@1+ (1,0) [0|255] "" Vector__XXX')
    lines.append(' SG_ PBMS_PackSocCounter : 60|4@1+ (1,0) [0|15] "" Vector__XXX')
    lines.append("")
    lines.append(f"BO_ {ID_PUBLISH_STATS} PBMS_PackStats: 8 PBMS")
    lines.append(f" SG_ PBMS_MeanCellSoc : 0|14@1+ {pct}")
    lines.append(f" SG_ PBMS_SocSpread : 14|14@1+ {pct}")
    lines.append(f" SG_ PBMS_MaxSocStd : 28|14@1+ {pct}")
    lines.append(' SG_ PBMS_StrongestCell : 42|10@1+ (1,0) [1|1023] "" Vector__XXX')
    lines.append(' SG_ PBMS_Current : 52|12@1- (0.5,0) [-1024|1023.5] "A" Vector__XXX')
    lines.append("")
    for fid, name, sig in ((ID_PUBLISH_CELL_SOC, "PBMS_CellSoc", "PBMS_CellSoc"),
                           (ID_PUBLISH_CELL_STD, "PBMS_CellSocStd", "PBMS_CellSocStd")):
        mux = f"{name}Group"
        lines.append(f"BO_ {fid} {name}: 8 PBMS")
        lines.append(f' SG_ {mux} M : 0|8@1+ (1,0) [0|{g - 1}] "" Vector__XXX')
        for j in range(CELLS_PER_PUBLISH_FRAME):
            lines.append(f" SG_ {sig}{j + 1} m0 : {8 + 16 * j}|16@1+ (0.01,0) [0|100] \"%\" "
                         f"Vector__XXX")
        lines.append(f' SG_ {name}Counter : 56|8@1+ (1,0) [0|255] "" Vector__XXX')
        lines.append("")
    lines.append("")
    lines.append(f'CM_ "Estimates published by packbms monitor for a pack of {cells} cells '
                 f'(fractions sent in percent; the largest raw value of a signal = not '
                 f'available).";')
    lines.append(f'CM_ BO_ {ID_PUBLISH_PACK} "Usable pack SoC, lowest and highest cell SoC, '
                 f'the cell that empties first (1-based) and the number of stale cells.";')
    lines.append(f'CM_ BO_ {ID_PUBLISH_STATS} "Mean cell SoC, spread, largest 1-sigma, the '
                 f'cell that fills first (1-based), pack current (A, positive = discharge).";')
    lines.append(f'CM_ BO_ {ID_PUBLISH_CELL_SOC} "Cell SoC, multiplexed: group g carries cells '
                 f'3g+1..3g+3 (1-based).";')
    lines.append(f'CM_ BO_ {ID_PUBLISH_CELL_STD} "1-sigma of the cell SoC, multiplexed like '
                 f'PBMS_CellSoc.";')
    lines.append('BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;')
    lines.append('BA_DEF_DEF_ "GenMsgCycleTime" 0;')
    for fid, cyc in ((ID_PUBLISH_PACK, 100), (ID_PUBLISH_STATS, 1000),
                     (ID_PUBLISH_CELL_SOC, max(1, 1000 // g)),
                     (ID_PUBLISH_CELL_STD, max(1, 1000 // g))):
        lines.append(f'BA_ "GenMsgCycleTime" BO_ {fid} {cyc};')
    lines.append("")
    for fid, sig, mux in ((ID_PUBLISH_CELL_SOC, "PBMS_CellSoc", "PBMS_CellSocGroup"),
                          (ID_PUBLISH_CELL_STD, "PBMS_CellSocStd", "PBMS_CellSocStdGroup")):
        for j in range(CELLS_PER_PUBLISH_FRAME):
            lines.append(f"SG_MUL_VAL_ {fid} {sig}{j + 1} {mux} 0-{g - 1};")
    lines.append("")
    return "\n".join(lines)


def make_publish_layout_text(dbc: str = "pack96_publish.dbc") -> str:
    """The ``[publish]`` section for :func:`make_publish_dbc_text`'s database (appended to the
    pack layout in ``data/pack96_live.toml``).

    Examples
    --------
    >>> "[[publish.message]]" in make_publish_layout_text()
    True
    """
    slots = ", ".join(f'"PBMS_CellSoc{j + 1}"' for j in range(CELLS_PER_PUBLISH_FRAME))
    stds = ", ".join(f'"PBMS_CellSocStd{j + 1}"' for j in range(CELLS_PER_PUBLISH_FRAME))
    return f'''[publish]                      # what `packbms monitor --publish` sends (packbms.live)
dbc = "{dbc}"
period_s = 1.0                 # default period of each message (s of bus time)

[[publish.message]]
name = "PBMS_PackSoc"
period_s = 0.1
signals = {{ PBMS_PackSoc = "pack_soc_percent", PBMS_MinCellSoc = "min_cell_soc_percent", PBMS_MaxCellSoc = "max_cell_soc_percent", PBMS_WeakestCell = "weakest_cell", PBMS_StaleCells = "stale_cells", PBMS_PackSocCounter = "counter" }}

[[publish.message]]
name = "PBMS_PackStats"
signals = {{ PBMS_MeanCellSoc = "pack_soc_mean_percent", PBMS_SocSpread = "soc_spread_percent", PBMS_MaxSocStd = "max_cell_soc_std_percent", PBMS_StrongestCell = "strongest_cell", PBMS_Current = "current_a" }}

[[publish.message]]             # cell = PBMS_CellSocGroup * 3 + slot (0-based)
name = "PBMS_CellSoc"
mux = "PBMS_CellSocGroup"
cells = [{slots}]
quantity = "cell_soc_percent"
signals = {{ PBMS_CellSocCounter = "counter" }}

[[publish.message]]
name = "PBMS_CellSocStd"
mux = "PBMS_CellSocStdGroup"
cells = [{stds}]
quantity = "cell_soc_std_percent"
'''
