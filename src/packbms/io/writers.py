"""Write a :class:`~packbms.io.frames.FrameTable` as a CAN log.

``.blf`` uses the native vectorised writer of :mod:`packbms.io.blf` (a million frames in about a
second); every other format goes through python-can's writer, fed in batches of
``FrameTable.to_messages()``. Every file is written under a temporary name in the target folder,
flushed to disk and then renamed, so a crash never leaves a half-written file under the final name.

What each format keeps (read back with :func:`packbms.io.read_log`)
-------------------------------------------------------------------
========== ============================= ====== ========================== ===================
suffix     timestamps                    CAN FD error frames               channel / remote
========== ============================= ====== ========================== ===================
``.blf``   exact (Unix times, bit for    yes    id, extended, dlc, data    yes / yes
           bit) or 0.5 ns (relative)            (not is_fd)
``.asc``   relative to the first frame,  yes*   flag and channel only      yes / yes
           1 us (6 decimals)
``.log``   absolute, 1 us                yes    flag only (channel 0)      yes / no dlc
``.csv``   exact (repr)                  no**   id, extended, dlc, data    no / yes
``.trc``   absolute, about 1 us          no     no                         yes / no
``.mf4``   absolute, about 1 us          yes    id, extended, data, is_fd  yes / yes
========== ============================= ====== ========================== ===================

\\* python-can's ASC reader takes a CAN FD frame with no data bytes for a remote frame.
\\** the payload and dlc are kept, the ``is_fd`` flag is not.

TRC (python-can's writer) cannot store CAN FD, remote or error frames: :func:`write_log` raises
rather than drop them silently. Text formats and MF4 need timestamps that never go backwards
(python-can's writers would clamp them); BLF and CSV store any order.
"""

from __future__ import annotations

import gc
import gzip
import io
import os
import secrets
from pathlib import Path

import numpy as np

from ..errors import LogFormatError
from .blf import write_blf
from .frames import FrameTable
from .readers import _unknown_suffix_message, split_suffix

__all__ = ["write_log", "WRITE_SUFFIXES"]

_PLAIN = (".asc", ".blf", ".csv", ".log", ".mf4", ".trc")
_GZ_OK = (".asc", ".csv", ".log", ".trc")     # python-can cannot gzip BLF or MF4 output

#: Suffixes :func:`write_log` accepts (case-insensitive).
WRITE_SUFFIXES: tuple[str, ...] = _PLAIN + tuple(s + ".gz" for s in _GZ_OK)

_BATCH = 10_000
_MONOTONE_REQUIRED = (".asc", ".log", ".trc", ".mf4")


class _NamedText(io.TextIOWrapper):
    """A text stream whose ``name`` is the final path (python-can's TRC header prints it)."""

    def __init__(self, buffer, shown_name: str, **kwargs):
        super().__init__(buffer, **kwargs)
        self._shown_name = shown_name

    @property
    def name(self):  # noqa: D401
        return self._shown_name


def _writer_class(suffix: str):
    import can

    return {".asc": can.ASCWriter, ".csv": can.CSVWriter, ".log": can.CanutilsLogWriter,
            ".trc": can.TRCWriter, ".mf4": can.MF4Writer}[suffix]


def _check_frames(frames: FrameTable, suffix: str, path: str) -> None:
    if suffix == ".trc":
        for mask, what in ((frames.is_fd, "CAN FD"), (frames.is_remote, "remote"),
                           (frames.is_error, "error")):
            if mask.any():
                raise LogFormatError(
                    f"TRC (python-can's writer) cannot store {what} frames ({int(mask.sum())} "
                    f"of {len(frames)}, first at index {int(np.argmax(mask))}); write .blf, "
                    ".asc, .log or .mf4 instead", path=path)
    if suffix in _MONOTONE_REQUIRED and len(frames) > 1:
        back = np.diff(frames.timestamp) < 0
        if back.any():
            i = int(np.argmax(back)) + 1
            raise LogFormatError(
                f"timestamps go backwards at frame {i} ({frames.timestamp[i - 1]!r} -> "
                f"{frames.timestamp[i]!r}); {suffix} keeps only non-decreasing times: sort the "
                "frames or write .blf or .csv", path=path)
    if not np.all(np.isfinite(frames.timestamp)):
        i = int(np.argmax(~np.isfinite(frames.timestamp)))
        raise LogFormatError(f"frame {i}: timestamp {frames.timestamp[i]} is not finite",
                             path=path)


def _write_python_can(fh, frames: FrameTable, suffix: str, gz: bool, shown: str) -> None:
    import can

    cls = _writer_class(suffix)
    if suffix == ".mf4":
        if getattr(can.io.mf4, "asammdf", None) is None:
            raise LogFormatError("writing MF4 needs the optional package asammdf: "
                                 "pip install asammdf", path=shown)
        writer = cls(fh)
    else:
        stream = gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") if gz else fh
        writer = cls(_NamedText(stream, shown, encoding="utf-8", newline="\n"))
    try:
        for lo in range(0, len(frames), _BATCH):
            gc_was_enabled = gc.isenabled()
            gc.disable()                # see readers._chunks: batches of Messages hold no cycles
            try:
                msgs = frames.take(slice(lo, lo + _BATCH)).to_messages()
                if suffix == ".mf4":
                    for m in msgs:      # ASAM BusChannel counts from 1; FrameTable from 0
                        m.channel += 1
                for m in msgs:
                    writer.on_message_received(m)
                del msgs
            finally:
                if gc_was_enabled:
                    gc.enable()
    finally:
        writer.stop()


def write_log(path, frames: FrameTable, *, compression_level: int = 1) -> Path:
    """Write ``frames`` to ``path`` in the format its suffix names, atomically.

    Parameters
    ----------
    path
        Target file; one of :data:`WRITE_SUFFIXES`. An existing file is replaced. The folder must
        exist.
    frames
        The frames, written in table order.
    compression_level
        zlib level for ``.blf`` (0..9); ignored by the other formats.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    LogFormatError
        Unknown suffix, missing folder, frames the format cannot store (see the module table: TRC
        with CAN FD/remote/error frames, timestamps going backwards in a text format or MF4,
        BLF limits), MF4 without asammdf, or an OS error while writing.

    Examples
    --------
    >>> from packbms.io import write_log, read_log
    >>> from packbms.io.frames import FrameTable
    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "empty.blf")
    >>> write_log(out, FrameTable.empty(0)).name
    'empty.blf'
    >>> len(read_log(out))
    0
    """
    if not isinstance(frames, FrameTable):
        raise TypeError(f"frames must be a FrameTable, got {type(frames).__name__}")
    target = Path(os.fspath(path))
    shown = str(target)
    suffix, gz = split_suffix(target)
    if suffix not in _PLAIN or (gz and suffix not in _GZ_OK):
        raise LogFormatError(_unknown_suffix_message(target, WRITE_SUFFIXES), path=shown)
    if target.is_dir():
        raise LogFormatError("is a directory, expected a file name", path=shown)
    folder = target.parent
    if not folder.is_dir():
        raise LogFormatError(f"folder {str(folder)!r} does not exist", path=shown)
    _check_frames(frames, suffix, shown)

    tmp = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as fh:
            if suffix == ".blf":
                write_blf(fh, frames, compression_level=compression_level, path=shown)
            else:
                _write_python_can(fh, frames, suffix, gz, shown)
        # the writers close the file: sync it to disk through a new descriptor before the rename
        fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as e:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise LogFormatError(f"cannot write: {e.strerror or e}", path=shown) from e
        if isinstance(e, (ValueError, TypeError, OverflowError, IndexError)) and suffix != ".blf":
            raise LogFormatError(f"python-can's {suffix} writer failed: {e}", path=shown) from e
        raise
    return target
