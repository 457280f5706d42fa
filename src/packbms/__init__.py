"""packbms: battery-pack analysis from CAN logs with a Numba core."""

from ._version import __version__
from .errors import (DatabaseError, EstimationError, LayoutError, LogFormatError, PackBMSError,
                     StorageError, TelemetryError)
from .io.frames import FrameTable
from .store import load

__all__ = [
    "__version__", "FrameTable", "PackBMSError", "LogFormatError", "DatabaseError", "LayoutError",
    "TelemetryError", "EstimationError", "StorageError", "load", "read_log", "iter_log",
    "analyze",
]


def __getattr__(name):
    # lazy: importing packbms must stay cheap (the CLI's cold start), so the modules that pull
    # in cantools and python-can load on first use
    if name in ("read_log", "iter_log"):
        from . import io
        return getattr(io, name)
    if name == "analyze":
        from .analysis import analyze
        return analyze
    raise AttributeError(f"module 'packbms' has no attribute {name!r}")
