"""Where the bundled reference data lives (installed package or source checkout)."""

from __future__ import annotations

from pathlib import Path

from .errors import PackBMSError

SAMPLE_FILES = ("pack96.dbc", "pack96.toml", "drive_96s.blf", "drive_96s.truth.h5")


def data_dir() -> Path:
    """Folder holding the bundled DBC, layout and sample drive.

    Installed, it is the ``packbms.data`` package (mapped from the repository's ``data/``); in a
    source checkout without installation, ``data/`` beside ``src/``.

    Raises
    ------
    PackBMSError
        When neither location holds the sample files.
    """
    here = Path(__file__).resolve().parent
    candidates = [here / "data", here.parents[1] / "data"]
    try:
        from importlib.resources import files

        candidates.insert(0, Path(str(files("packbms.data"))))
    except (ImportError, TypeError, ValueError):  # not installed as a package
        pass
    for cand in candidates:
        if all((cand / f).exists() for f in SAMPLE_FILES):
            return cand
    raise PackBMSError("the bundled sample data is missing (looked in packbms/data and the "
                       "source tree's data/); reinstall packbms")
