"""packbms: battery-pack analysis from CAN logs with a Numba core."""

from ._version import __version__
from .errors import (DatabaseError, EstimationError, LayoutError, LogFormatError, PackBMSError,
                     StorageError, TelemetryError)
from .io.frames import FrameTable

__all__ = [
    "__version__", "FrameTable", "PackBMSError", "LogFormatError", "DatabaseError", "LayoutError",
    "TelemetryError", "EstimationError", "StorageError",
]
