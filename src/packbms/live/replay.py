"""Play a CAN log onto a bus, paced by the log's own timestamps (what ``packbms replay`` runs)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PackBMSError
from ..io.frames import FrameTable

__all__ = ["replay", "ReplayReport"]

log = logging.getLogger("packbms.live")


@dataclass
class ReplayReport:
    """What :func:`replay` did.

    Attributes
    ----------
    frames_sent, frames_failed, frames_skipped : int
        Sent; given up after ``retries`` failed sends; skipped (error frames).
    wall_s : float
        Wall-clock duration.
    log_span_s : float
        Span of the log's timestamps that was played.
    last_error : str or None
    stopped : bool
        True when ``stop`` ended the replay early.
    """

    frames_sent: int = 0
    frames_failed: int = 0
    frames_skipped: int = 0
    wall_s: float = 0.0
    log_span_s: float = 0.0
    last_error: str | None = None
    stopped: bool = False
    errors: int = field(default=0, repr=False)

    @property
    def rate_fps(self) -> float:
        """Frames sent per wall-clock second."""
        return self.frames_sent / self.wall_s if self.wall_s > 0 else float("nan")


def _chunks(source, chunk_frames: int):
    if isinstance(source, FrameTable):
        for a in range(0, len(source), chunk_frames):
            yield source.take(slice(a, a + chunk_frames))
        return
    if isinstance(source, (str, Path)):
        from ..io import iter_log
        yield from iter_log(source, chunk_frames=chunk_frames)
        return
    yield from source


def replay(source, bus, *, speed: float = 1.0, chunk_frames: int = 50_000,
           stop: threading.Event | None = None, retries: int = 20,
           skip_error_frames: bool = True) -> ReplayReport:
    """Send the frames of a log on a bus, at the log's pace divided by ``speed``.

    Frame ``k`` is sent ``(t_k - t_0) / speed`` seconds after the first; ``speed=0`` sends as
    fast as the bus accepts. Every frame carries its log timestamp (a virtual bus created with
    ``preserve_timestamps=True`` passes it on; hardware stamps frames on reception).

    Parameters
    ----------
    source
        A :class:`FrameTable`, a log path (any format :func:`packbms.io.iter_log` reads) or an
        iterable of FrameTables.
    bus
        A python-can bus to send on.
    speed
        Playback speed (1 = real time, 10 = ten times faster, 0 = as fast as possible).
    chunk_frames
        Frames read and converted at a time (bounds memory).
    stop
        Set this event to end the replay early.
    retries
        Attempts per frame when the bus refuses it (a full transmit queue), 1 ms apart.
    skip_error_frames
        Do not send the log's error frames (most interfaces cannot).

    Returns
    -------
    ReplayReport

    Raises
    ------
    PackBMSError
        A negative or non-finite speed; a log that cannot be read (:class:`LogFormatError`).

    Examples
    --------
    >>> bus = can.Bus(interface="virtual", channel="x", preserve_timestamps=True)  # doctest: +SKIP
    >>> replay("data/drive_96s.blf", bus, speed=0).frames_sent                   # doctest: +SKIP
    406500
    """
    import can

    if not (isinstance(speed, (int, float)) and np.isfinite(speed) and speed >= 0):
        raise PackBMSError(f"speed must be a number >= 0 (0 = as fast as possible), got "
                           f"{speed!r}")
    rep = ReplayReport()
    wall0 = time.perf_counter()
    t_first = None
    t_last = None
    for chunk in _chunks(source, chunk_frames):
        if not len(chunk):
            continue
        if skip_error_frames and chunk.is_error.any():
            rep.frames_skipped += int(np.count_nonzero(chunk.is_error))
            chunk = chunk.take(~chunk.is_error)
            if not len(chunk):
                continue
        if t_first is None:
            t_first = float(chunk.timestamp[0])
        ts = chunk.timestamp
        ids = chunk.arbitration_id.tolist()
        ext = chunk.is_extended.tolist()
        fd = chunk.is_fd.tolist()
        err = chunk.is_error.tolist()
        rem = chunk.is_remote.tolist()
        dlc = chunk.dlc.tolist()
        data = chunk.data
        due = ((ts - t_first) / speed).tolist() if speed > 0 else None
        tsl = ts.tolist()
        for i in range(len(chunk)):
            if stop is not None and stop.is_set():
                rep.stopped = True
                break
            if due is not None:
                wait = due[i] - (time.perf_counter() - wall0)
                if wait > 0.0005:
                    if stop is not None:
                        if stop.wait(wait):
                            rep.stopped = True
                            break
                    else:
                        time.sleep(wait)
            n = dlc[i]
            msg = can.Message(timestamp=tsl[i], arbitration_id=ids[i], is_extended_id=ext[i],
                              is_fd=fd[i], is_error_frame=err[i], is_remote_frame=rem[i],
                              dlc=n, data=None if rem[i] else data[i, :n].tobytes(),
                              check=False)
            for attempt in range(retries + 1):
                try:
                    bus.send(msg, timeout=0.1)
                    rep.frames_sent += 1
                    break
                except (can.CanError, OSError) as e:
                    rep.errors += 1
                    rep.last_error = f"{type(e).__name__}: {e}"
                    if attempt == retries:
                        rep.frames_failed += 1
                        if rep.frames_failed <= 3:
                            log.warning("replay: frame %d not sent: %s", rep.frames_sent
                                        + rep.frames_failed, rep.last_error)
                    else:
                        time.sleep(0.001)
            t_last = tsl[i]
        if rep.stopped:
            break
    rep.wall_s = time.perf_counter() - wall0
    rep.log_span_s = 0.0 if t_first is None or t_last is None else t_last - t_first
    return rep
