"""Reading and writing CAN logs as :class:`FrameTable` (see :mod:`packbms.io.readers`,
:mod:`packbms.io.writers` and the native BLF writer in :mod:`packbms.io.blf`)."""

from .frames import FrameTable
from .readers import ENGINES, NATIVE_SUFFIXES, SUPPORTED_SUFFIXES, ReadReport, iter_log, read_log
from .writers import WRITE_SUFFIXES, write_log

__all__ = ["FrameTable", "read_log", "iter_log", "ReadReport", "SUPPORTED_SUFFIXES", "ENGINES",
           "NATIVE_SUFFIXES",
           "write_log", "WRITE_SUFFIXES"]
