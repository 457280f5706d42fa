"""The pack layout file (TOML): which database signal is what.

See DESIGN.md for the contract. Example::

    [pack]
    cells_in_series = 96
    cells_in_parallel = 1
    capacity_ah = 60.0
    chemistry = "nmc"              # or: ocv_table = "ocv.csv" (columns soc, ocv_v)

    [current]
    signal = "BMS_PackCurrent"
    positive = "charge"            # how the log's sign maps; packbms is discharge-positive

    [pack_voltage]                 # optional
    signal = "BMS_PackVoltage"

    [cell_voltage]                 # a name pattern ...
    pattern = "Cell{index}_Voltage"          # {index} = 1..cells_in_series
    # ... or a multiplexed group: cell = mux_value * len(signals) + slot + first_cell (0-based)
    # message = "BMS_CellVoltages"
    # mux = "CellGroup"
    # signals = ["V1", "V2", "V3", "V4"]
    # first_cell = 0

    [cell_temperature]             # optional; same two forms; `count` sensors (may be < cells)
    [balancing_flags]              # optional; same two forms; one flag per cell (non-zero = bleeding)
    [balancing]
    bleed_current_a = 0.1

Every group also takes ``stale_after_s``: a value older than this is marked stale (default: five
times the group's median refresh interval, at least 1 s).

Signal names may be written ``"Message.Signal"`` where a bare name is not unique. Relative paths
(``ocv_table``) resolve against the layout file's folder.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import LayoutError, closest_names

__all__ = ["Layout", "SignalGroup", "load_layout", "parse_layout"]

_KNOWN_SECTIONS = {"pack", "current", "pack_voltage", "cell_voltage", "cell_temperature",
                   "balancing_flags", "balancing", "publish", "quality", "estimation", "fleet"}


@dataclass(frozen=True)
class SignalGroup:
    """Where a per-cell (or per-sensor) quantity lives in the database.

    Either ``pattern`` (one signal per index, ``pattern.format(index=i)`` for i = 1..count) or a
    multiplexed group (``message``, ``mux``, ``signals``, ``first_cell``): the value of slot j in a
    frame whose multiplexer reads m belongs to index ``m * len(signals) + j + first_cell``.
    """

    section: str
    count: int
    pattern: str | None = None
    message: str | None = None
    mux: str | None = None
    signals: tuple = ()
    first_cell: int = 0
    stale_after_s: float | None = None

    @property
    def is_mux(self) -> bool:
        return self.pattern is None

    def signal_names(self) -> list[str]:
        """Per-index signal names of a pattern group (index 1..count)."""
        if self.pattern is None:
            return list(self.signals)
        return [self.pattern.format(index=i) for i in range(1, self.count + 1)]


@dataclass(frozen=True)
class Layout:
    """A validated pack layout. Build it with :func:`load_layout` or :func:`parse_layout`."""

    cells_in_series: int
    cells_in_parallel: int
    capacity_ah: float
    chemistry: str | None
    ocv_table: Path | None
    current_signal: str
    current_positive: str
    pack_voltage_signal: str | None
    cell_voltage: SignalGroup
    cell_temperature: SignalGroup | None
    balancing_flags: SignalGroup | None
    bleed_current_a: float
    current_stale_after_s: float | None = None
    text: str = ""
    path: str | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def current_sign(self) -> float:
        """Multiplier that turns the log's current into packbms' discharge-positive convention."""
        return 1.0 if self.current_positive == "discharge" else -1.0

    def validate(self, database) -> "Layout":
        """Check every named message and signal against a cantools database.

        Parameters
        ----------
        database
            A ``cantools.database.can.Database`` (or anything with ``.messages``), or a
            :class:`packbms.dbc.CompiledDatabase` exposing ``.database``.

        Returns
        -------
        Layout
            ``self``, so calls chain.

        Raises
        ------
        LayoutError
            Naming the layout file, the section, the missing message or signal and the closest
            names the database has.
        """
        db = getattr(database, "database", database)
        messages = {m.name: m for m in db.messages}
        owners: dict[str, list[str]] = {}
        for m in db.messages:
            for s in m.signals:
                owners.setdefault(s.name, []).append(m.name)

        def check_signal(name: str, section: str):
            if "." in name:
                msg, sig = name.split(".", 1)
                if msg in messages:
                    if sig not in [s.name for s in messages[msg].signals]:
                        self._fail(section, f"message {msg!r} has no signal {sig!r}; best matches "
                                   f"are {closest_names(sig, [s.name for s in messages[msg].signals])}")
                    return
            if name not in owners:
                self._fail(section, f"signal {name!r} is not in the database; best matches are "
                           f"{closest_names(name, owners)}")
            if len(owners[name]) > 1:
                self._fail(section, f"signal {name!r} is in several messages {owners[name]}; "
                           f"write it as 'Message.{name}'")

        check_signal(self.current_signal, "current")
        if self.pack_voltage_signal:
            check_signal(self.pack_voltage_signal, "pack_voltage")
        for group in (self.cell_voltage, self.cell_temperature, self.balancing_flags):
            if group is None:
                continue
            if not group.is_mux:
                for name in group.signal_names():
                    check_signal(name, group.section)
                continue
            if group.message not in messages:
                self._fail(group.section, f"message {group.message!r} is not in the database; "
                           f"best matches are {closest_names(group.message, messages)}")
            msg = messages[group.message]
            names = [s.name for s in msg.signals]
            mux_sig = next((s for s in msg.signals if s.name == group.mux), None)
            if mux_sig is None:
                self._fail(group.section, f"message {msg.name!r} has no signal {group.mux!r}; "
                           f"best matches are {closest_names(group.mux, names)}")
            if not mux_sig.is_multiplexer:
                muxes = [s.name for s in msg.signals if s.is_multiplexer]
                self._fail(group.section, f"signal {group.mux!r} of message {msg.name!r} is not a "
                           f"multiplexer (the message's multiplexers: {muxes})")
            for sig in group.signals:
                if sig not in names:
                    self._fail(group.section, f"message {msg.name!r} has no signal {sig!r}; best "
                               f"matches are {closest_names(sig, names)}")
        return self

    def _fail(self, section: str, what: str):
        where = f"{self.path}: " if self.path else ""
        raise LayoutError(f"{where}[{section}] {what}")

    def required_messages(self, database) -> list[str]:
        """Names of the database messages that carry a signal this layout uses."""
        db = getattr(database, "database", database)
        owners: dict[str, list[str]] = {}
        for m in db.messages:
            for s in m.signals:
                owners.setdefault(s.name, []).append(m.name)
        names: set[str] = set()

        def add(signal: str):
            if "." in signal and signal.split(".", 1)[0] in {m.name for m in db.messages}:
                names.add(signal.split(".", 1)[0])
            else:
                names.update(owners.get(signal, []))

        add(self.current_signal)
        if self.pack_voltage_signal:
            add(self.pack_voltage_signal)
        for group in (self.cell_voltage, self.cell_temperature, self.balancing_flags):
            if group is None:
                continue
            if group.is_mux:
                names.add(group.message)
            else:
                for n in group.signal_names():
                    add(n)
        return sorted(names)

    def mux_cell_count(self, group: SignalGroup, database) -> int:
        """Indices a multiplexed group can address, from the database's multiplexer values."""
        db = getattr(database, "database", database)
        msg = db.get_message_by_name(group.message)
        ids = set()
        for s in msg.signals:
            if s.name in group.signals and s.multiplexer_ids:
                ids.update(s.multiplexer_ids)
        if not ids:
            return 0
        return (max(ids) + 1) * len(group.signals) + group.first_cell


def load_layout(path, database=None) -> Layout:
    """Read a layout TOML file, and validate it against ``database`` if given.

    Parameters
    ----------
    path
        The ``.toml`` file.
    database
        Optional cantools database or :class:`packbms.dbc.CompiledDatabase` to validate against.

    Returns
    -------
    Layout

    Raises
    ------
    LayoutError
        File missing, TOML syntax error, missing or mistyped keys, unknown signal names.

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
    ... ''')
    >>> lay.cell_voltage.signal_names()
    ['V1', 'V2']
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayoutError(f"{p}: layout file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LayoutError(f"{p}: cannot read layout file ({e})") from e
    layout = parse_layout(text, path=p)
    if database is not None:
        layout.validate(database)
    return layout


def parse_layout(text: str, *, path=None) -> Layout:
    """Parse layout TOML text (see :func:`load_layout`)."""
    where = f"{path}: " if path else ""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LayoutError(f"{where}invalid TOML: {e}") from e

    def fail(msg: str):
        raise LayoutError(f"{where}{msg}")

    unknown = set(raw) - _KNOWN_SECTIONS
    if unknown:
        name = sorted(unknown)[0]
        fail(f"unknown section [{name}]; known sections are {sorted(_KNOWN_SECTIONS)} "
             f"(best matches: {closest_names(name, _KNOWN_SECTIONS)})")

    def section(name: str, required: bool = True) -> dict | None:
        sec = raw.get(name)
        if sec is None:
            if required:
                fail(f"missing section [{name}]")
            return None
        if not isinstance(sec, dict):
            fail(f"[{name}] must be a table, got {type(sec).__name__}")
        return sec

    def get(sec: dict, sname: str, key: str, typ, default=..., allowed=None):
        if key not in sec:
            if default is ...:
                fail(f"[{sname}] missing key {key!r}")
            return default
        val = sec[key]
        if typ is float and isinstance(val, int) and not isinstance(val, bool):
            val = float(val)
        if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
            fail(f"[{sname}] {key} must be {typ.__name__}, got {val!r}")
        if allowed is not None and val not in allowed:
            fail(f"[{sname}] {key} must be one of {sorted(allowed)}, got {val!r}")
        return val

    pack = section("pack")
    cells = get(pack, "pack", "cells_in_series", int)
    if cells < 1:
        fail(f"[pack] cells_in_series must be >= 1, got {cells}")
    parallel = get(pack, "pack", "cells_in_parallel", int, 1)
    if parallel < 1:
        fail(f"[pack] cells_in_parallel must be >= 1, got {parallel}")
    capacity = get(pack, "pack", "capacity_ah", float)
    if not capacity > 0:
        fail(f"[pack] capacity_ah must be > 0, got {capacity}")
    chemistry = get(pack, "pack", "chemistry", str, None)
    ocv_table = get(pack, "pack", "ocv_table", str, None)
    if (chemistry is None) == (ocv_table is None):
        fail("[pack] give exactly one of chemistry (a built-in name) or ocv_table (a CSV path)")
    ocv_path = None
    if ocv_table is not None:
        ocv_path = Path(ocv_table)
        if not ocv_path.is_absolute() and path is not None:
            ocv_path = Path(path).parent / ocv_path

    cur = section("current")
    current_signal = get(cur, "current", "signal", str)
    positive = get(cur, "current", "positive", str, "discharge", {"discharge", "charge"})
    current_stale = get(cur, "current", "stale_after_s", float, None)
    pv = section("pack_voltage", required=False)
    pv_signal = get(pv, "pack_voltage", "signal", str) if pv is not None else None

    def group(name: str, required: bool, default_count: int | None) -> SignalGroup | None:
        sec = section(name, required)
        if sec is None:
            return None
        stale = get(sec, name, "stale_after_s", float, None)
        if stale is not None and not stale > 0:
            fail(f"[{name}] stale_after_s must be > 0, got {stale}")
        count = get(sec, name, "count", int, default_count)
        if "pattern" in sec:
            extra = {"message", "mux", "signals"} & set(sec)
            if extra:
                fail(f"[{name}] give either pattern or message/mux/signals, not both (found "
                     f"{sorted(extra)})")
            pattern = get(sec, name, "pattern", str)
            if "{index" not in pattern:
                fail(f"[{name}] pattern {pattern!r} must contain {{index}}")
            try:
                pattern.format(index=1)
            except (KeyError, IndexError, ValueError) as e:
                fail(f"[{name}] pattern {pattern!r} is not a valid format string ({e})")
            if count is None:
                fail(f"[{name}] a pattern group needs count (number of sensors)")
            return SignalGroup(section=name, count=count, pattern=pattern, stale_after_s=stale)
        if "message" not in sec:
            fail(f"[{name}] needs either pattern = \"...{{index}}...\" or message, mux and signals")
        message = get(sec, name, "message", str)
        mux = get(sec, name, "mux", str)
        signals = get(sec, name, "signals", list)
        if not signals or not all(isinstance(s, str) for s in signals):
            fail(f"[{name}] signals must be a non-empty list of signal names")
        first = get(sec, name, "first_cell", int, 0)
        return SignalGroup(section=name, count=count if count is not None else -1,
                           message=message, mux=mux, signals=tuple(signals), first_cell=first,
                           stale_after_s=stale)

    cell_voltage = group("cell_voltage", True, cells)
    if cell_voltage.count != cells:
        fail(f"[cell_voltage] count {cell_voltage.count} differs from cells_in_series {cells}")
    temps = group("cell_temperature", False, None)
    flags = group("balancing_flags", False, cells)
    bal = section("balancing", required=False) or {}
    bleed = get(bal, "balancing", "bleed_current_a", float, 0.1)
    if not bleed > 0:
        fail(f"[balancing] bleed_current_a must be > 0, got {bleed}")

    return Layout(
        cells_in_series=cells, cells_in_parallel=parallel, capacity_ah=capacity,
        chemistry=chemistry, ocv_table=ocv_path, current_signal=current_signal,
        current_positive=positive, pack_voltage_signal=pv_signal, cell_voltage=cell_voltage,
        cell_temperature=temps, balancing_flags=flags, bleed_current_a=bleed,
        current_stale_after_s=current_stale, text=text,
        path=None if path is None else str(path), raw=raw,
    )
