"""Shared pytest fixtures and paths for the packbms tests (append new fixtures below, grouped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: Real third-party data beside the project (see ../shared/realdata/SOURCES.md); never copied in.
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture
def realdata() -> Path:
    """The real-data folder; skips the test when it is not there."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is missing")
    return REALDATA


@pytest.fixture(autouse=True)
def _seed_numpy_global_rng():
    """Seed NumPy's legacy global RNG so no test depends on unseeded randomness."""
    np.random.seed(20240229)
    yield
