"""The live pack monitor: CAN bus -> per-cell SoC now, estimates back on the bus.

:class:`PackMonitor` is a python-can :class:`~can.Listener`. A :class:`~can.Notifier` thread
hands it every received frame; it stores the frame in a preallocated buffer (one
``struct.pack_into``, about a microsecond) and returns. A worker thread wakes at a fixed
cadence (default 10 Hz), swaps the buffer and runs the offline pipeline's own steps on the
chunk: :func:`packbms.dbc.decode`, :class:`packbms.telemetry.TelemetryAligner` (held values
carried across chunks) and :func:`packbms.soc.estimate_soc_arrays` with the state carried from
the previous chunk. Each update yields an immutable :class:`Snapshot` (per-cell SoC and sigma,
pack SoC, stale cells, balancing plan on demand), calls the callbacks, publishes frames, appends
to the recording and writes a checkpoint when due.

Time is the bus's: frame timestamps drive the estimator, the publish period and the
checkpoint period (so replaying a log faster than real time gives the offline result). A
backward jump of more than ``time_jump_s`` starts a new time base (counted), a forward jump is
a gap (counted; no current flows across it beyond ``max_hold_s``, as offline).

Nothing the bus or a callback does stops the monitor: receive errors, error frames, bus-off,
unknown identifiers, frames that do not decode, stale cells, time jumps and exceptions in
callbacks are counted in :meth:`PackMonitor.status`, logged (``logging.getLogger(
"packbms.live")``) and survived.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import can
import numpy as np

from ..errors import EstimationError, LayoutError, PackBMSError, StorageError
from ..io.frames import FrameTable

__all__ = ["PackMonitor", "Snapshot", "FrameBuffer"]

log = logging.getLogger("packbms.live")

_NAN = float("nan")
_BUS_STATES = {"ACTIVE": "active", "PASSIVE": "error-passive", "ERROR": "bus-off"}


# ------------------------------------------------------------------------------------------------
# receive buffer
# ------------------------------------------------------------------------------------------------
class FrameBuffer:
    """Frames received on the Notifier thread, packed into a preallocated byte buffer.

    One record per frame (``struct`` layout = the NumPy dtype :attr:`dtype`, no copies of
    ``Message`` objects kept). :meth:`take` swaps in a spare buffer under a lock and returns
    the frames as a :class:`FrameTable` with their arrival times. The buffer doubles when full,
    up to ``max_frames``; beyond that frames are dropped and counted.

    Parameters
    ----------
    width
        Payload bytes per record: 8, or 64 for CAN FD.
    capacity
        Initial records.
    max_frames
        Most frames held between two takes.
    """

    def __init__(self, width: int = 8, capacity: int = 8192, max_frames: int = 1_000_000):
        if width not in (8, 64):
            raise ValueError(f"width must be 8 or 64, got {width}")
        self.width = width
        self._struct = struct.Struct(f"<ddIBBBB{width}s")
        self.dtype = np.dtype([("timestamp", "<f8"), ("arrival", "<f8"), ("id", "<u4"),
                               ("flags", "u1"), ("dlc", "u1"), ("channel", "u1"), ("pad", "u1"),
                               ("data", "u1", (width,))])
        assert self.dtype.itemsize == self._struct.size
        self._size = self._struct.size
        self._max = max(int(max_frames), 1)
        cap = min(max(int(capacity), 16), self._max)
        self._buf = bytearray(cap * self._size)
        self._spare = bytearray(cap * self._size)
        self._n = 0
        self._lock = threading.Lock()
        self.dropped = 0

    def append(self, timestamp: float, arrival: float, arbitration_id: int, flags: int,
               dlc: int, channel: int, data) -> bool:
        """Store one frame; False when it was dropped (buffer at ``max_frames``)."""
        with self._lock:
            n = self._n
            off = n * self._size
            if off + self._size > len(self._buf):
                if n >= self._max:
                    self.dropped += 1
                    return False
                grow = min(n, self._max - n)
                self._buf.extend(bytes(grow * self._size))
            self._struct.pack_into(self._buf, off, timestamp, arrival, arbitration_id, flags,
                                   dlc, channel, 0, data)
            self._n = n + 1
        return True

    def __len__(self) -> int:
        return self._n

    def take(self) -> tuple[FrameTable, np.ndarray]:
        """The frames received since the last call and their arrival times
        (``time.perf_counter`` seconds). Call from one thread only."""
        with self._lock:
            buf, n = self._buf, self._n
            self._buf, self._n = self._spare, 0
        rec = np.frombuffer(buf, self.dtype, count=n)
        flags = rec["flags"]
        frames = FrameTable(
            timestamp=rec["timestamp"].copy(), arbitration_id=rec["id"].copy(),
            is_extended=(flags & 1) != 0, is_fd=(flags & 2) != 0, is_error=(flags & 8) != 0,
            is_remote=(flags & 4) != 0, dlc=rec["dlc"].copy(), channel=rec["channel"].copy(),
            data=rec["data"].copy())
        arrival = rec["arrival"].copy()
        del rec, flags          # no view may outlive the swap: the buffer is resized later
        self._spare = buf
        return frames, arrival


# ------------------------------------------------------------------------------------------------
# snapshot
# ------------------------------------------------------------------------------------------------
def _frozen(a) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The estimate after one update (immutable; arrays are read-only).

    Attributes
    ----------
    update : int
        1 for the first update, then +1 per update.
    timestamp : float
        Bus time of the last row (s; Unix time on most interfaces).
    time_s : float
        Seconds since the monitor's time base (its first current sample).
    rows : int
        Current samples estimated in this update.
    current_a : float
        Pack current on the last row (A, positive = discharge).
    pack_voltage_v : float or None
    soc, soc_std : float64 [S]
        Per-cell SoC (fraction 0..1) and its 1-sigma.
    cell_voltage : float64 [S]
        Last voltage per cell (V), NaN where stale.
    stale : bool [S]
        Cells whose voltage is older than the layout's stale limit (or never seen).
    capacity_ah : float64 [S]
        Capacities the estimator uses.
    pack_soc : float
        Usable pack SoC (:func:`packbms.soc.pack_soc`).
    pack_soc_min, pack_soc_max, pack_soc_mean : float
    weakest_cell : int
        0-based index of the cell that empties first (lowest ``soc * capacity_ah``).
    strongest_cell : int
        0-based index of the cell that fills first (lowest ``(1 - soc) * capacity_ah``).
    method : str
    """

    update: int
    timestamp: float
    time_s: float
    rows: int
    current_a: float
    pack_voltage_v: float | None
    soc: np.ndarray
    soc_std: np.ndarray
    cell_voltage: np.ndarray
    stale: np.ndarray
    capacity_ah: np.ndarray
    pack_soc: float
    pack_soc_min: float
    pack_soc_max: float
    pack_soc_mean: float
    weakest_cell: int
    strongest_cell: int
    method: str
    chemistry: object = field(default=None, repr=False)
    bleed_current_a: float = 0.1

    @property
    def n_cells(self) -> int:
        return int(self.soc.shape[0])

    @property
    def stale_cells(self) -> list[int]:
        """1-based numbers of the stale cells."""
        return [int(i) + 1 for i in np.flatnonzero(self.stale)]

    @functools.cached_property
    def balancing(self):
        """The :class:`packbms.balancing.BalancingPlan` at this instant (computed on first
        access, then cached)."""
        from ..balancing import plan_balancing

        return plan_balancing(np.clip(self.soc, 0.0, 1.0), self.capacity_ah,
                              bleed_current_a=self.bleed_current_a,
                              chemistry=self.chemistry if self.chemistry is not None else "nmc",
                              time_s=self.time_s)

    def to_dict(self) -> dict:
        """Plain numbers and lists (JSON-friendly)."""
        out = {}
        for k in ("update", "timestamp", "time_s", "rows", "current_a", "pack_voltage_v",
                  "pack_soc", "pack_soc_min", "pack_soc_max", "pack_soc_mean", "weakest_cell",
                  "strongest_cell", "method"):
            out[k] = getattr(self, k)
        for k in ("soc", "soc_std", "cell_voltage", "stale"):
            out[k] = getattr(self, k).tolist()
        return out


# ------------------------------------------------------------------------------------------------
# the monitor
# ------------------------------------------------------------------------------------------------
def _channel_index(channel) -> int:
    if channel is None:
        return 0
    if isinstance(channel, (int, np.integer)):
        return int(channel) & 0xFF
    digits = "".join(ch for ch in str(channel) if ch.isdigit())
    return int(digits) & 0xFF if digits else 0


class _Histogram:
    """Distribution of a positive quantity (seconds) since the start, in log-spaced bins:
    constant memory and cost however long the monitor runs; percentiles to within a bin
    (2.3 %)."""

    EDGES = np.geomspace(1e-6, 1e4, 1001)

    def __init__(self):
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)
        self.n = 0
        self.max = 0.0

    def add(self, v) -> None:
        v = np.asarray(v, np.float64).reshape(-1)
        if not v.size:
            return
        self.counts += np.bincount(np.searchsorted(self.EDGES, v), minlength=len(self.counts))
        self.n += int(v.size)
        self.max = max(self.max, float(v.max()))

    def summary(self) -> dict | None:
        if self.n == 0:
            return None
        cum = np.cumsum(self.counts)
        out = {}
        edges = np.concatenate(([0.0], self.EDGES, [np.inf]))
        for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            k = int(np.searchsorted(cum, q * self.n, side="left"))
            lo, hi = edges[k], edges[k + 1]
            out[name] = float(min(self.max, np.sqrt(lo * hi) if lo > 0 else hi))
        out["max"] = self.max
        out["samples"] = self.n
        return out


def _schedule(nxt: float | None, t: float, period_s: float) -> tuple[bool, float]:
    """``(due, next)`` for a periodic action in bus time: due first at once, then every
    ``period_s`` (up to a quarter period early, so update jitter does not skip one); after a
    pause longer than a period it restarts from ``t`` instead of catching up."""
    if nxt is not None and t < nxt - 0.25 * period_s:
        return False, nxt
    if nxt is None or t - nxt >= period_s:
        return True, t + period_s
    return True, nxt + period_s


@contextlib.contextmanager
def _numba_threads(n: int | None):
    """Run the block with ``n`` Numba threads on this thread (thread-local setting)."""
    if n is None:
        yield
        return
    import numba

    prev = numba.get_num_threads()
    want = min(int(n), numba.config.NUMBA_NUM_THREADS)
    if want != prev:
        numba.set_num_threads(want)
    try:
        yield
    finally:
        if want != prev:
            numba.set_num_threads(prev)


def _detached(state):
    """``state`` without its time base (after a restart on another clock or a backward time
    jump): no current is held across, no rest is in progress."""
    st = state.copy()
    st.t_last_s = _NAN
    st.i_last_a = _NAN
    st.rest_start_s = _NAN
    st.rest_above_s = _NAN
    return st


class PackMonitor(can.Listener):
    """Per-cell SoC from a live CAN bus, with an optional bridge back onto the bus.

    Parameters
    ----------
    bus
        A python-can bus (``can.Bus(interface=..., channel=...)``), or None to feed frames
        yourself (:meth:`process`, or :meth:`on_message_received` + :meth:`step`, or add the
        monitor as a listener to your own :class:`can.Notifier` and pass ``bus=None``).
    database
        Path of the pack's CAN database, a cantools database or a
        :class:`packbms.dbc.CompiledDatabase`.
    layout
        Layout path or :class:`packbms.layout.Layout` (validated against ``database``).
    method
        ``"ekf"`` (default) or ``"coulomb"``.
    config
        :class:`packbms.soc.EKFConfig` / :class:`packbms.soc.CoulombConfig` (defaults: as
        ``packbms analyze``).
    params
        Estimator cell parameters (default: nominal ones from the layout).
    cadence_hz
        Updates per second of the worker thread (default 10).
    publish
        Publish estimates: True uses the layout's ``[publish]`` section (see
        :mod:`packbms.live.publish`), or pass a :class:`PublishSpec`. Default: publish when
        ``publish_bus`` is given.
    publish_bus
        Bus to send on (default: ``bus``). With a python-can interface that is not thread-safe
        for concurrent send and receive, pass a ``can.ThreadSafeBus``.
    publish_database
        Database of the published messages (default: the ``[publish]`` section's ``dbc``,
        else ``database``).
    checkpoint
        Checkpoint file (``.npz``). When it exists at start the estimator resumes from it
        (unless it is stale, see ``checkpoint_max_age_s``); it is rewritten atomically every
        ``checkpoint_every_s`` of bus time and on :meth:`stop`.
    checkpoint_every_s
        Seconds of bus time between checkpoints (default 10).
    checkpoint_max_age_s
        A checkpoint older than this (wall clock since it was written, or bus time between its
        last row and the first new frame) is not resumed: the cells start afresh from their
        OCV (``config.init``), a warning is logged and ``status()["checkpoint"]["mode"]`` is
        ``"stale"``. Default 3600 s.
    record
        HDF5 file to append one row per update to (:class:`packbms.live.Recorder`).
    record_every_s
        Seconds of bus time between recorded rows (default 0: every update).
    on_update
        Callable or list of callables ``f(snapshot)``, called on the worker thread after each
        update. Exceptions are caught, logged and counted.
    time_source
        ``"message"`` (default): the frames' timestamps; ``"arrival"``: the wall clock when the
        frame was received (for interfaces that do not stamp frames).
    time_jump_s
        A frame this much older than the newest seen is a backward time jump (the estimator
        keeps its SoC and restarts its time base); a step this much forward is counted as a
        gap. Default 5 s.
    max_buffer_frames
        Frames the receive buffer holds between two updates before dropping (counted).
    threads
        Numba threads for the estimator on the monitor's threads (default 1: small chunks
        gain nothing from more, and a live box should keep cores for others). None: leave
        Numba's setting.

    Raises
    ------
    PackBMSError
        Database or layout errors, a missing ``[publish]`` section, a recording that cannot
        be created. A bad checkpoint does not raise: it is reported and ignored.

    Examples
    --------
    >>> import can
    >>> from packbms.live import PackMonitor
    >>> bus = can.Bus(interface="socketcan", channel="can0")                 # doctest: +SKIP
    >>> with PackMonitor(bus, "pack96.dbc", "pack96_live.toml", publish=True,
    ...                  checkpoint="soc.npz") as mon:                       # doctest: +SKIP
    ...     for snap in mon.updates():
    ...         print(f"{snap.pack_soc:.1%}, weakest cell {snap.weakest_cell + 1}")
    """

    def __init__(self, bus, database, layout, *, method: str = "ekf", config=None,
                 params=None, cadence_hz: float = 10.0, publish=None, publish_bus=None,
                 publish_database=None, checkpoint=None, checkpoint_every_s: float = 10.0,
                 checkpoint_max_age_s: float = 3600.0, record=None,
                 record_every_s: float = 0.0, on_update=None, time_source: str = "message",
                 time_jump_s: float = 5.0, max_buffer_frames: int = 1_000_000,
                 threads: int | None = 1):
        from ..dbc import CompiledDatabase, compile_database, load_database
        from ..layout import Layout, load_layout
        from ..soc import METHODS, CoulombConfig, EKFConfig, _params_from_layout
        from .publish import PublishSpec, Publisher, parse_publish

        if method not in METHODS:
            raise PackBMSError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        for name, v, strict in (("cadence_hz", cadence_hz, True),
                                ("time_jump_s", time_jump_s, True),
                                ("checkpoint_every_s", checkpoint_every_s, True),
                                ("checkpoint_max_age_s", checkpoint_max_age_s, False),
                                ("record_every_s", record_every_s, False)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not (v > 0 if strict else v >= 0):
                raise PackBMSError(f"{name} must be a finite number {'>' if strict else '>='} "
                                   f"0, got {v!r}")
        if isinstance(max_buffer_frames, bool) or not isinstance(max_buffer_frames, int) \
                or max_buffer_frames < 1:
            raise PackBMSError(f"max_buffer_frames must be an integer >= 1, got "
                               f"{max_buffer_frames!r}")
        if time_source not in ("message", "arrival"):
            raise PackBMSError(f"time_source must be 'message' or 'arrival', got "
                               f"{time_source!r}")
        self.bus = bus
        self.method = method
        self.config = config
        self.cadence_hz = float(cadence_hz)
        self.time_source = time_source
        self.time_jump_s = float(time_jump_s)
        self.threads = threads
        self.checkpoint_every_s = float(checkpoint_every_s)
        self.checkpoint_max_age_s = float(checkpoint_max_age_s)
        self.record_every_s = float(record_every_s)

        # -- database and layout ----------------------------------------------------------
        self._dbc_path = None
        if isinstance(database, CompiledDatabase):
            cdb = database
        elif isinstance(database, (str, Path)):
            cdb = compile_database(load_database(database))
            self._dbc_path = str(database)
        else:
            cdb = compile_database(database)
        self.cdb = cdb
        self.layout = layout if isinstance(layout, Layout) else load_layout(layout)
        self.layout.validate(cdb.database)
        self.params = params if params is not None else _params_from_layout(self.layout)
        self.n_cells = self.layout.cells_in_series
        if self.params.n_cells != self.n_cells:
            raise PackBMSError(f"params describe {self.params.n_cells} cells but the layout "
                               f"has {self.n_cells}")
        if config is not None:        # fail now, not on every update
            want = EKFConfig if method == "ekf" else CoulombConfig
            if not isinstance(config, want):
                raise EstimationError(f"method {method!r} takes a {want.__name__}, got "
                                      f"{type(config).__name__}")
            config.check(self.n_cells)
        self._wanted = self.layout.required_messages(cdb.database)
        self._setup_filter()
        width = 64 if bool(np.any(cdb.encoded_length > 8) or np.any(cdb.is_fd)) else 8
        self._buffer = FrameBuffer(width=width, max_frames=max_buffer_frames)

        # -- publishing -------------------------------------------------------------------
        self.publisher = None
        self.publish_bus = publish_bus if publish_bus is not None else bus
        if publish is None:
            publish = publish_bus is not None
        if publish:
            spec = publish if isinstance(publish, PublishSpec) else parse_publish(self.layout)
            if spec is None:
                where = f"{self.layout.path}: " if self.layout.path else ""
                raise LayoutError(f"{where}publishing needs a [publish] section in the layout "
                                  f"(see packbms.live.publish)")
            if publish_database is None:
                pcdb = compile_database(load_database(spec.dbc)) if spec.dbc is not None \
                    else cdb
            elif isinstance(publish_database, CompiledDatabase):
                pcdb = publish_database
            elif isinstance(publish_database, (str, Path)):
                pcdb = compile_database(load_database(publish_database))
            else:
                pcdb = compile_database(publish_database)
            spec.validate(pcdb.database, self.n_cells)
            self.publisher = Publisher(spec, pcdb, self.n_cells)
            self.publish_spec = spec

        # -- state ------------------------------------------------------------------------
        self._aligner = None
        self._state = None
        self._t_max = -math.inf
        self._snapshot: Snapshot | None = None
        self._updates = 0
        self._rows = 0
        self._callbacks = [] if on_update is None else (
            list(on_update) if isinstance(on_update, (list, tuple)) else [on_update])
        self._cond = threading.Condition()
        self._step_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._notifier = None
        self._worker = None
        self._running = False
        self._stopping = False
        self._stopped = False
        self._shutdown_in_worker = False
        self._latency = _Histogram()
        self._step_time = _Histogram()
        self._consecutive_errors = 0
        self._next_state_poll = 0.0
        self._channels: dict = {}
        c = self._counts = {
            "frames_received": 0, "frames_buffered": 0, "error_frames": 0,
            "remote_frames": 0, "unknown_id": 0, "not_used": 0, "too_long": 0,
            "bus_errors": 0, "bus_off_events": 0, "updates": 0, "update_errors": 0,
            "callback_errors": 0, "time_jumps_backward": 0, "time_gaps": 0,
            "longest_gap_s": 0.0, "bad_messages": 0, "rows": 0,
        }
        self._bus_state = "unknown"
        self._last_errors = {"bus": None, "update": None, "callback": None, "publish": None,
                             "record": None, "checkpoint": None}
        self._publish_counts = {"frames_sent": 0, "errors": 0}
        c["started_unix"] = time.time()

        # -- checkpoint -------------------------------------------------------------------
        self.checkpoint_path = None if checkpoint is None else Path(checkpoint)
        self._ckpt_pending = None
        self._ckpt_status = {"path": None if checkpoint is None else str(checkpoint),
                             "mode": "none", "written": 0, "errors": 0, "last_written_t": None,
                             "message": None}
        self._next_checkpoint_t = None
        if self.checkpoint_path is not None:
            self._load_checkpoint()

        # -- recording --------------------------------------------------------------------
        self.recorder = None
        self._next_record_t = None
        self._recorded_update = 0
        self._record_counts = {"rows": 0, "errors": 0}
        if record is not None:
            from .record import Recorder

            attrs = {"source": self._bus_name(), "layout": self.layout.text,
                     "method": method}
            if self._dbc_path:
                from ..store import sha256_file
                attrs["dbc_sha256"] = sha256_file(self._dbc_path)
            self.recorder = Recorder(record, self.n_cells,
                                     pack_voltage=self.layout.pack_voltage_signal is not None,
                                     attrs=attrs)
            self._record_counts["rows"] = 0
            if self.recorder.moved_aside is not None:
                self._last_errors["record"] = (f"unreadable recording moved to "
                                               f"{self.recorder.moved_aside}")

    # -- helpers ------------------------------------------------------------------------------
    def _bus_name(self) -> str:
        if self.bus is None:
            return "frames fed by the caller"
        return str(getattr(self.bus, "channel_info", None) or type(self.bus).__name__)

    def _setup_filter(self) -> None:
        """Exact ``(is_extended << 32) | id`` keys for the listener-side filter (off when the
        database matches ids through masks, e.g. J1939)."""
        cdb = self.cdb
        full = np.uint32(0xFFFFFFFF)
        keys = (cdb.is_extended.astype(np.uint64) << np.uint64(32)) | cdb.frame_id.astype(
            np.uint64)
        self._known_keys = np.unique(keys)
        wanted_idx = [cdb.message_index(n) for n in self._wanted]
        self._wanted_keys = np.unique(keys[wanted_idx])
        if np.all(cdb.match_mask == full):
            self._filter_wanted = {int(k) for k in self._wanted_keys}
            self._filter_known = {int(k) for k in self._known_keys}
        else:
            self._filter_wanted = self._filter_known = None

    # -- checkpoint ---------------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        from .checkpoint import layout_sha256, load_checkpoint

        st = self._ckpt_status
        path = self.checkpoint_path
        if not path.exists():
            st["mode"] = "new"
            st["message"] = "no checkpoint yet; starting afresh"
            return
        try:
            ck = load_checkpoint(path)
        except StorageError as e:
            st["mode"] = "unreadable"
            st["message"] = f"{e}; starting afresh (OCV initialisation)"
            log.warning("checkpoint %s", st["message"])
            return
        if ck.method != self.method or ck.n_cells != self.n_cells:
            st["mode"] = "mismatch"
            st["message"] = (f"{path}: checkpoint is for {ck.method!r} with {ck.n_cells} cells, "
                             f"this monitor runs {self.method!r} with {self.n_cells}; starting "
                             f"afresh (OCV initialisation)")
            log.warning("%s", st["message"])
            return
        if ck.layout_sha256 != layout_sha256(self.layout.text):
            log.warning("checkpoint %s was written with another layout text; resuming anyway",
                        path)
        age = ck.age_s()
        st["age_s"] = age
        if age > self.checkpoint_max_age_s:
            self._stale_checkpoint(f"{path}: checkpoint written {age:.0f} s ago, older than "
                                   f"checkpoint_max_age_s = {self.checkpoint_max_age_s:g} s")
            return
        self._ckpt_pending = ck
        st["mode"] = "loaded"
        st["message"] = f"{path}: resuming from the checkpoint written {age:.0f} s ago"
        log.info("%s", st["message"])

    def _stale_checkpoint(self, why: str) -> None:
        st = self._ckpt_status
        st["mode"] = "stale"
        st["message"] = f"{why}; the cells start afresh from their OCV"
        log.warning("%s", st["message"])

    def _resume(self, t_first: float) -> None:
        """Apply a loaded checkpoint before the first chunk (t_first: its first bus time)."""
        ck, self._ckpt_pending = self._ckpt_pending, None
        st = self._ckpt_status
        from ..telemetry import TelemetryAligner

        gap = t_first - ck.t_last
        if gap > self.checkpoint_max_age_s:
            self._stale_checkpoint(f"{ck.path}: the bus resumes {gap:.0f} s after the "
                                   f"checkpoint's last row, more than checkpoint_max_age_s = "
                                   f"{self.checkpoint_max_age_s:g} s")
            return
        if gap >= -self.time_jump_s and ck.t0 is not None:
            # the bus continues the checkpoint's clock: continue its time base exactly
            al = TelemetryAligner(self.layout, self.cdb.database)
            al.t0 = ck.t0
            al.t_last = ck.t_last
            self._aligner = al
            self._state = ck.state
            self._t_max = max(self._t_max, ck.t_last)
            st["mode"] = "continued"
            st["message"] = (f"{ck.path}: continued the checkpoint's time base ({gap:.1f} s "
                             f"after its last row)")
        else:
            self._state = _detached(ck.state)
            st["mode"] = "rebased"
            st["message"] = (f"{ck.path}: resumed the SoC on a new time base (the bus clock "
                             f"is {-gap:.0f} s before the checkpoint's last row)")
        log.info("%s", st["message"])

    def _write_checkpoint(self) -> None:
        from .checkpoint import save_checkpoint

        if self.checkpoint_path is None or self._state is None or self._aligner is None:
            return
        st = self._ckpt_status
        try:
            save_checkpoint(self.checkpoint_path, self._state, t0=self._aligner.t0,
                            t_last=self._aligner.t_last, layout_text=self.layout.text,
                            updates=self._updates)
            st["written"] += 1
            st["last_written_t"] = float(self._aligner.t_last)
        except Exception as e:  # noqa: BLE001 - a full disk must not stop the monitor
            st["errors"] += 1
            self._last_errors["checkpoint"] = str(e)
            log.warning("checkpoint not written: %s", e)

    # -- python-can Listener interface --------------------------------------------------------
    def on_message_received(self, msg) -> None:
        """Buffer one frame (called by the Notifier thread; cheap, never raises)."""
        c = self._counts
        c["frames_received"] += 1
        self._consecutive_errors = 0
        try:
            if msg.is_error_frame:
                c["error_frames"] += 1
                return
            ext = msg.is_extended_id
            ident = msg.arbitration_id
            if self._filter_wanted is not None:
                key = (int(ext) << 32) | ident
                if key not in self._filter_wanted:
                    if key in self._filter_known:
                        c["not_used"] += 1
                    else:
                        c["unknown_id"] += 1
                    return
            if msg.is_remote_frame:
                c["remote_frames"] += 1
                return
            data = msg.data
            if data is not None and len(data) > self._buffer.width:
                c["too_long"] += 1
                return
            ch = self._channels.get(msg.channel)
            if ch is None:
                ch = self._channels[msg.channel] = _channel_index(msg.channel)
            arrival = time.perf_counter()
            ts = msg.timestamp if self.time_source == "message" else time.time()
            if self._buffer.append(ts, arrival, ident, ext | (msg.is_fd << 1),
                                   min(int(msg.dlc), 255), ch,
                                   data if data is not None else b""):
                c["frames_buffered"] += 1
        except Exception as e:  # noqa: BLE001 - a malformed message object is dropped
            c["bad_messages"] += 1
            self._last_errors["bus"] = f"malformed message dropped ({type(e).__name__}: {e})"

    def __call__(self, msg) -> None:
        self.on_message_received(msg)

    def on_error(self, exc: Exception) -> None:
        """A receive error on the Notifier thread: count it, back off, keep receiving."""
        c = self._counts
        c["bus_errors"] += 1
        self._last_errors["bus"] = f"{type(exc).__name__}: {exc}"
        self._consecutive_errors += 1
        k = self._consecutive_errors
        if k <= 3 or k % 100 == 0:
            log.warning("CAN receive error (%d in a row): %s", k, self._last_errors["bus"])
        text = str(exc).lower()
        if "bus-off" in text or "bus off" in text or "busoff" in text:
            self._set_bus_state("bus-off")
        # a bus that keeps failing must not spin the receive thread: back off up to 0.5 s
        if k > 1 and not self._stop_event.is_set():
            self._stop_event.wait(min(0.5, 0.005 * 2 ** min(k, 10)))

    def _set_bus_state(self, state: str) -> None:
        if state != self._bus_state:
            if state == "bus-off":
                self._counts["bus_off_events"] += 1
                log.warning("CAN bus %s is bus-off", self._bus_name())
            elif self._bus_state == "bus-off":
                log.info("CAN bus %s recovered (%s)", self._bus_name(), state)
            self._bus_state = state

    def _poll_bus_state(self) -> None:
        now = time.monotonic()
        if self.bus is None or now < self._next_state_poll:
            return
        self._next_state_poll = now + 1.0
        try:
            state = self.bus.state
        except Exception:  # noqa: BLE001 - NotImplementedError and driver errors alike
            return
        name = getattr(state, "name", None)
        if name in _BUS_STATES:
            self._set_bus_state(_BUS_STATES[name])

    # -- processing ---------------------------------------------------------------------------
    def step(self) -> Snapshot | None:
        """Process the frames buffered since the last step (what the worker thread does at
        each tick). Never raises; returns the new snapshot, or None when nothing new was
        estimated."""
        with self._step_lock, self._numba_threads():
            self._poll_bus_state()
            frames, arrival = self._buffer.take()
            return self._process_locked(frames, arrival)

    def process(self, frames: FrameTable) -> Snapshot | None:
        """Process a chunk of frames synchronously (no threads; deterministic).

        Parameters
        ----------
        frames
            Frames in bus order, e.g. a slice of :func:`packbms.io.read_log`'s table.

        Returns
        -------
        Snapshot or None
            The new estimate, or None when the chunk held no current sample to estimate.

        Examples
        --------
        >>> mon = PackMonitor(None, "pack96.dbc", "pack96.toml")           # doctest: +SKIP
        >>> for chunk in iter_log("drive.blf", chunk_frames=10_000):         # doctest: +SKIP
        ...     snap = mon.process(chunk)
        """
        if not isinstance(frames, FrameTable):
            raise TypeError(f"process() expects a FrameTable, got {type(frames).__name__}")
        with self._step_lock, self._numba_threads():
            c = self._counts
            n = len(frames)
            c["frames_received"] += n
            if n:
                err = int(np.count_nonzero(frames.is_error))
                c["error_frames"] += err
                keys = (frames.is_extended.astype(np.uint64) << np.uint64(32)) | \
                    frames.arbitration_id.astype(np.uint64)
                ok = ~frames.is_error
                if self._filter_wanted is not None:
                    wanted = np.isin(keys, self._wanted_keys)
                    known = np.isin(keys, self._known_keys)
                    c["unknown_id"] += int(np.count_nonzero(ok & ~known))
                    c["not_used"] += int(np.count_nonzero(ok & known & ~wanted))
                    ok &= wanted
                c["remote_frames"] += int(np.count_nonzero(ok & frames.is_remote))
                ok &= ~frames.is_remote
                c["frames_buffered"] += int(np.count_nonzero(ok))
                if not ok.all():
                    frames = frames.take(ok)
            return self._process_locked(frames, None)

    def _numba_threads(self):
        return _numba_threads(self.threads)

    def _process_locked(self, frames: FrameTable, arrival) -> Snapshot | None:
        t_start = time.perf_counter()
        try:
            snap = self._pipeline(frames)
        except Exception as e:  # noqa: BLE001 - the monitor must survive any bad chunk
            self._counts["update_errors"] += 1
            self._last_errors["update"] = f"{type(e).__name__}: {e}"
            if self._counts["update_errors"] <= 3:
                log.exception("update failed (chunk of %d frames skipped)", len(frames))
            else:
                log.debug("update failed: %s", e)
            return None
        done = time.perf_counter()
        if snap is None:
            return None
        self._step_time.add(done - t_start)
        if arrival is not None and len(arrival):
            self._latency.add(done - arrival)
        self._after_update(snap)
        return snap

    def _split_time_jumps(self, frames: FrameTable) -> list[tuple[FrameTable, bool]]:
        """Split the chunk where time jumps back by more than ``time_jump_s``; the flag says
        whether a new time base starts with the part. Counts forward gaps."""
        ts = frames.timestamp
        jump = self.time_jump_s
        parts = []
        start, rebase, t_max = 0, False, self._t_max
        while True:
            seg = ts[start:]
            run = np.maximum.accumulate(np.concatenate(([t_max], seg)))
            before = run[:-1]
            back = np.flatnonzero(seg < before - jump)
            end = int(back[0]) if len(back) else len(seg)
            step = seg[:end] - before[:end]
            gaps = step[np.isfinite(step) & (step > jump)]
            if len(gaps):
                self._counts["time_gaps"] += int(len(gaps))
                self._counts["longest_gap_s"] = max(self._counts["longest_gap_s"],
                                                    float(gaps.max()))
            if end:
                whole = start == 0 and end == len(ts)
                parts.append((frames if whole else frames.take(slice(start, start + end)),
                              rebase))
                rebase = False
            if not len(back):
                t_max = float(run[end])
                break
            # after the jump the running maximum restarts from the jump's first frame
            start, rebase, t_max = start + end, True, -math.inf
        self._t_max = t_max
        return parts

    def _rebase(self, why: str) -> None:
        self._counts["time_jumps_backward"] += 1
        log.warning("bus time jumped back (%s); SoC kept, time base restarted", why)
        if self._state is not None:
            self._state = _detached(self._state)
        self._aligner = None
        if self.publisher is not None:
            self.publisher._next = [None] * len(self.publisher._next)
        self._next_checkpoint_t = None
        self._next_record_t = None

    def _pipeline(self, frames: FrameTable) -> Snapshot | None:
        if not len(frames):
            return None
        snap = None
        for part, rebase in self._split_time_jumps(frames):
            if rebase:
                self._rebase(f"to {part.timestamp[0]:.3f} s")
            s = self._estimate(part)
            if s is not None:
                snap = s
        return snap

    def _estimate(self, frames: FrameTable) -> Snapshot | None:
        from ..dbc import decode
        from ..soc import estimate_soc_arrays
        from ..telemetry import TelemetryAligner

        if self._ckpt_pending is not None:
            self._resume(float(np.min(frames.timestamp)))
        if self._aligner is None:
            self._aligner = TelemetryAligner(self.layout, self.cdb.database)
        signals = decode(frames, self.cdb, messages=self._wanted)
        tel = self._aligner.push(signals)
        n = len(tel.time)
        if n == 0:
            return None
        res = estimate_soc_arrays(tel.time, tel.current, tel.cell_voltage, self.params,
                                  method=self.method, config=self.config, state=self._state,
                                  temperature_c=tel.cell_temperature)
        self._state = res.state
        self._rows += n
        self._counts["rows"] = self._rows
        self._updates += 1
        self._counts["updates"] = self._updates
        soc = res.soc[-1]
        cap = res.capacity_ah
        pack = res.pack
        chem = self.params.chemistry
        return Snapshot(
            update=self._updates, timestamp=float(tel.t0 + tel.time[-1]),
            time_s=float(tel.time[-1]), rows=n, current_a=float(tel.current[-1]),
            pack_voltage_v=None if tel.pack_voltage is None else float(tel.pack_voltage[-1]),
            soc=_frozen(soc), soc_std=_frozen(res.soc_std[-1]),
            cell_voltage=_frozen(tel.cell_voltage[-1]),
            stale=_frozen(tel.cell_voltage_stale[-1]), capacity_ah=_frozen(cap),
            pack_soc=float(pack.usable[-1]), pack_soc_min=float(pack.min[-1]),
            pack_soc_max=float(pack.max[-1]), pack_soc_mean=float(pack.mean[-1]),
            weakest_cell=int(np.argmin(soc * cap)),
            strongest_cell=int(np.argmin((1.0 - soc) * cap)), method=self.method,
            chemistry=chem, bleed_current_a=self.layout.bleed_current_a)

    def _after_update(self, snap: Snapshot) -> None:
        with self._cond:
            self._snapshot = snap
            self._cond.notify_all()
        t = snap.timestamp
        due, nxt = _schedule(self._next_record_t, t, self.record_every_s)
        if self.recorder is not None and due:
            self._next_record_t = nxt
            self._record(snap)
        for cb in list(self._callbacks):
            try:
                cb(snap)
            except Exception as e:  # noqa: BLE001 - a callback must not stop the monitor
                self._counts["callback_errors"] += 1
                self._last_errors["callback"] = f"{type(e).__name__}: {e}"
                if self._counts["callback_errors"] <= 3:
                    log.exception("on_update callback %r failed", cb)
        if self.publisher is not None:
            self._publish(snap)
        if self.checkpoint_path is not None:
            if self._next_checkpoint_t is None:
                self._next_checkpoint_t = t + self.checkpoint_every_s
            else:
                due, nxt = _schedule(self._next_checkpoint_t, t, self.checkpoint_every_s)
                if due:
                    self._next_checkpoint_t = nxt
                    self._write_checkpoint()

    def _record(self, snap: Snapshot) -> None:
        try:
            self.recorder.append(snap)
            self._record_counts["rows"] += 1
            self._recorded_update = snap.update
        except Exception as e:  # noqa: BLE001 - a full disk must not stop the monitor
            self._record_counts["errors"] += 1
            self._last_errors["record"] = str(e)
            if self._record_counts["errors"] <= 3:
                log.warning("recording: %s", e)

    def _publish(self, snap: Snapshot) -> None:
        pc = self._publish_counts
        try:
            due = self.publisher.due(snap.timestamp)
            if not due:
                return
            tables = self.publisher.frames(snap, snap.timestamp, due)
        except Exception as e:  # noqa: BLE001
            pc["errors"] += 1
            self._last_errors["publish"] = f"{type(e).__name__}: {e}"
            return
        self.last_published = (snap, tables)
        if self.publish_bus is None:
            return
        for ft in tables:
            for i in range(len(ft)):
                n = int(ft.dlc[i])
                msg = can.Message(timestamp=float(ft.timestamp[i]),
                                  arbitration_id=int(ft.arbitration_id[i]),
                                  is_extended_id=bool(ft.is_extended[i]), is_fd=bool(ft.is_fd[i]),
                                  dlc=n, data=bytes(ft.data[i, :n]), check=False)
                try:
                    self.publish_bus.send(msg, timeout=0.05)
                    pc["frames_sent"] += 1
                except Exception as e:  # noqa: BLE001 - CanOperationError, queue full...
                    pc["errors"] += 1
                    self._last_errors["publish"] = f"{type(e).__name__}: {e}"
                    if pc["errors"] <= 3:
                        log.warning("publishing failed: %s", self._last_errors["publish"])

    # -- results ------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot | None:
        """The latest estimate (None before the first update)."""
        return self._snapshot

    @property
    def frames_received(self) -> int:
        """Frames received so far (every kind; cheap, for polling)."""
        return self._counts["frames_received"]

    @property
    def state(self):
        """The estimator's :class:`packbms.soc.SocState` after the last update (a copy)."""
        return None if self._state is None else self._state.copy()

    def wait(self, timeout: float | None = None, after: int | None = None) -> Snapshot | None:
        """Block until an update newer than ``after`` (default: the current one) exists.

        Returns the snapshot, or None on timeout or when the monitor stopped.
        """
        with self._cond:
            seen = (self._snapshot.update if self._snapshot is not None else 0) \
                if after is None else after
            end = None if timeout is None else time.monotonic() + timeout
            while (self._snapshot is None or self._snapshot.update <= seen):
                if self._stopped:
                    return None
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.5)
            return self._snapshot

    def updates(self, timeout: float | None = None):
        """Yield each new snapshot until the monitor stops (or ``timeout`` passes without
        one). Updates that arrive while the caller is busy are skipped, not queued."""
        last = 0
        while True:
            snap = self.wait(timeout, after=last)
            if snap is None:
                return
            last = snap.update
            yield snap

    def add_callback(self, fn) -> None:
        """Call ``fn(snapshot)`` after every update (on the worker thread)."""
        self._callbacks.append(fn)

    def status(self) -> dict:
        """What happened so far: counters, bus state, stale cells, checkpoint, publishing,
        recording, latency (s from a frame's arrival to the estimate that includes it) and
        the telemetry notes of the alignment. A plain dict (safe to print or JSON-dump)."""
        c = dict(self._counts)
        snap = self._snapshot
        out = {
            **c,
            "frames_dropped_overflow": self._buffer.dropped,
            "bus": self._bus_name(),
            "bus_state": self._bus_state,
            "running": self._running,
            "stale_cells": [] if snap is None else snap.stale_cells,
            "last_update_t": None if snap is None else snap.timestamp,
            "checkpoint": dict(self._ckpt_status),
            "publish": None if self.publisher is None else {
                **self._publish_counts, "clipped": self.publisher.clipped},
            "record": None if self.recorder is None else {
                **self._record_counts, "path": str(self.recorder.path)},
            "latency_s": self._latency.summary(),
            "update_time_s": self._step_time.summary(),
            "last_errors": {k: v for k, v in self._last_errors.items() if v},
        }
        if self._aligner is not None:
            notes = self._aligner.notes
            out["telemetry"] = {
                "decode": dict(notes.get("decode", {})),
                "current_dropped_backwards": notes.get("current_dropped_backwards", 0),
                "current_not_finite": notes.get("current_not_finite", 0),
                "current_gaps": notes.get("current_gaps"),
                "cell_voltage_stale_fraction": notes.get("cell_voltage_stale_fraction"),
            }
        return out

    # -- threads ------------------------------------------------------------------------------
    def start(self) -> "PackMonitor":
        """Start receiving (a :class:`can.Notifier` on ``bus``) and the update thread.

        Returns ``self``; :meth:`stop` (or leaving a ``with`` block) ends both.
        """
        if self._running:
            return self
        if self._stopped:
            raise PackBMSError("this PackMonitor was stopped; create a new one")
        self._running = True
        self._stop_event.clear()
        if self.bus is not None:
            self._notifier = can.Notifier(self.bus, [self], timeout=0.1)
        if self.cadence_hz > 0:
            self._worker = threading.Thread(target=self._run, name="packbms-monitor",
                                            daemon=True)
            self._worker.start()
        return self

    def _run(self) -> None:
        if self.threads is not None:
            import numba
            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
        period = 1.0 / self.cadence_hz
        nxt = time.monotonic() + period
        while not self._stop_event.wait(max(0.0, nxt - time.monotonic())):
            try:
                self.step()
            except Exception:  # noqa: BLE001 - step() does not raise; belt and braces
                log.exception("monitor step failed")
            nxt += period
            now = time.monotonic()
            if nxt < now:              # fell behind: skip the missed ticks
                nxt = now + period
        if self._shutdown_in_worker:   # stop() was called from a callback
            self._shutdown(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving, process what is buffered, write the checkpoint, close the
        recording. Idempotent; also called by :meth:`can.Notifier.stop`. Called from an
        ``on_update`` callback, it returns at once and the worker shuts down after the
        update."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        if self._worker is not None and threading.current_thread() is self._worker:
            self._stop_event.set()
            self._shutdown_in_worker = True
            return
        self._shutdown(timeout)

    def _shutdown(self, timeout: float) -> None:
        try:
            notifier, self._notifier = self._notifier, None
            if notifier is not None:
                notifier.stop(timeout)
            self._stop_event.set()
            worker, self._worker = self._worker, None
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout)
            self.step()
            if self.checkpoint_path is not None:
                self._write_checkpoint()
        finally:
            if self.recorder is not None:
                snap = self._snapshot
                if snap is not None and self._recorded_update != snap.update:
                    self._record(snap)          # the final state is always in the file
                self.recorder.close()
            self._running = False
            self._stopped = True
            with self._cond:
                self._cond.notify_all()

    def __enter__(self) -> "PackMonitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
