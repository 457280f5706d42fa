"""Checkpoints of the live estimator: small ``.npz`` files written atomically.

A checkpoint holds the estimator state (:meth:`packbms.soc.SocState.to_dict`), the time base
of the telemetry alignment (bus time of its first current sample, ``t0``, and of the last
estimated row, ``t_last``) and when it was written (wall clock). It is written to a temporary
name in the same folder, flushed to disk (``fsync``) and renamed over the previous one
(``os.replace``), so a crash or power loss leaves either the old or the new checkpoint, never a
torn one.

Layout of the file (``numpy.savez``; no pickles)::

    meta           JSON text: format, version, packbms_version, saved_unix, method, n_cells,
                   layout_sha256, t0, t_last, updates
    state.<name>   every entry of SocState.to_dict()
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import EstimationError, StorageError
from ..soc import SocState

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "FORMAT", "VERSION"]

FORMAT = "packbms-live-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    state : SocState
        The estimator state after the row at ``t_last``.
    saved_unix : float
        Wall-clock time the checkpoint was written (Unix s).
    t0 : float or None
        Bus time (s) of the alignment's first current sample: the zero of ``state``'s times.
    t_last : float
        Bus time (s) of the last estimated row.
    method : str
    n_cells : int
    layout_sha256 : str
        SHA-256 of the layout text it was made with.
    updates : int
        Updates made by the monitor that wrote it.
    path : str
    """

    state: SocState
    saved_unix: float
    t0: float | None
    t_last: float
    method: str
    n_cells: int
    layout_sha256: str
    updates: int
    path: str

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the checkpoint was written (wall clock)."""
        return (time.time() if now is None else now) - self.saved_unix


def layout_sha256(text: str) -> str:
    """SHA-256 (hex) of a layout's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_checkpoint(path, state: SocState, *, t0: float | None, t_last: float,
                    layout_text: str = "", updates: int = 0,
                    saved_unix: float | None = None) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename).

    Parameters
    ----------
    path
        Target file (conventionally ``.npz``); its folder must exist.
    state
        The estimator state to keep.
    t0, t_last
        Time base and last row of the alignment (bus time, s).
    layout_text
        The layout's text (its hash is stored, to warn when a checkpoint meets another layout).
    updates
        Monitor updates so far (informational).
    saved_unix
        Override the wall-clock stamp (tests).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    StorageError
        The folder is missing or the file cannot be written.

    Examples
    --------
    >>> st = SocState.empty("ekf", 2)
    >>> p = save_checkpoint(tmp / "ck.npz", st, t0=100.0, t_last=160.0)   # doctest: +SKIP
    >>> load_checkpoint(p).t_last                                          # doctest: +SKIP
    160.0
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise StorageError(f"{path}: checkpoint folder {path.parent} does not exist")
    meta = {
        "format": FORMAT, "version": VERSION, "packbms_version": __version__,
        "saved_unix": float(time.time() if saved_unix is None else saved_unix),
        "method": state.method, "n_cells": state.n_cells,
        "layout_sha256": layout_sha256(layout_text), "t0": t0, "t_last": float(t_last),
        "updates": int(updates),
    }
    arrays = {f"state.{k}": np.asarray(v) for k, v in state.to_dict().items()}
    arrays["meta"] = np.asarray(json.dumps(meta))
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:   # make the rename itself durable (best effort: not every OS opens folders)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    except OSError as e:
        raise StorageError(f"{path}: cannot write checkpoint ({e})") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path
        The checkpoint file.

    Returns
    -------
    Checkpoint

    Raises
    ------
    StorageError
        Missing, unreadable or truncated file, not a packbms checkpoint, a newer version, or
        an inconsistent state (the message names the file and what is wrong).
    """
    path = Path(path)
    if not path.exists():
        raise StorageError(f"{path}: checkpoint not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError...
        raise StorageError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") \
            from e
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, ValueError) as e:
        raise StorageError(f"{path}: not a packbms checkpoint (no readable 'meta')") from e
    if meta.get("format") != FORMAT:
        raise StorageError(f"{path}: not a packbms checkpoint (format {meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise StorageError(f"{path}: checkpoint version {meta['version']} is newer than this "
                           f"packbms reads ({VERSION}); upgrade packbms")
    state_d = {k[len("state."):]: v for k, v in arrays.items() if k.startswith("state.")}
    try:
        state = SocState.from_dict(state_d)
        t_last = float(meta["t_last"])
        saved = float(meta["saved_unix"])
    except (EstimationError, KeyError, TypeError, ValueError) as e:
        raise StorageError(f"{path}: damaged checkpoint ({e})") from e
    t0 = meta.get("t0")
    return Checkpoint(state=state, saved_unix=saved, t0=None if t0 is None else float(t0),
                      t_last=t_last, method=state.method, n_cells=state.n_cells,
                      layout_sha256=str(meta.get("layout_sha256", "")),
                      updates=int(meta.get("updates", 0)), path=str(path))
