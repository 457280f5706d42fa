"""The one exception tree of packbms.

Every error a user can cause (a bad file, a database that does not parse, a layout naming a
signal that does not exist, ...) is raised as a :class:`PackBMSError` subclass whose message names
the thing, what was expected, what was found and, where it helps, a hint. Internal bugs stay
ordinary Python exceptions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "PackBMSError",
    "LogFormatError",
    "DatabaseError",
    "LayoutError",
    "TelemetryError",
    "EstimationError",
    "StorageError",
    "closest_names",
]


class PackBMSError(Exception):
    """Root of every error packbms raises for bad input.

    Catch this one class to handle any user-caused failure; the command line turns it into a
    one-line ``error: ...`` on stderr and exit code 2.
    """


class LogFormatError(PackBMSError):
    """A log file cannot be read: missing, unknown format, truncated or corrupted.

    Parameters
    ----------
    message
        What went wrong.
    path
        The file concerned.
    offset
        Byte offset of the bad record, when known.
    line
        1-based line number of the bad record (text formats), when known.
    """

    def __init__(self, message: str, *, path=None, offset: int | None = None,
                 line: int | None = None):
        self.path = None if path is None else str(path)
        self.offset = offset
        self.line = line
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class DatabaseError(PackBMSError):
    """A CAN database (DBC, KCD, ARXML, ...) fails to load or does not fit the logged frames."""


class LayoutError(PackBMSError):
    """The layout TOML is malformed or names something the database does not have."""


class TelemetryError(PackBMSError):
    """The decoded log cannot be turned into pack telemetry (no current frames, a cell never seen...)."""


class EstimationError(PackBMSError):
    """An estimator was given inputs it cannot work with."""


class StorageError(PackBMSError):
    """An HDF5 result cannot be written or read (unknown schema version, missing dataset...)."""


def closest_names(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names among ``candidates`` that look like ``name``.

    Used to suggest near misses in error messages ("Best matches are [...]").

    Examples
    --------
    >>> closest_names("Cell1_Volt", ["Cell1_Voltage", "Cell2_Voltage", "PackCurrent"])
    ['Cell1_Voltage', 'Cell2_Voltage']
    """
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    if close:
        return close
    low = name.lower()
    return [c for c in candidates if low in c.lower() or c.lower() in low][:n]
