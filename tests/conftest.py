"""Shared fixtures: one real local Spark session (with Delta) per test run, paths to the real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("RECSYS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def spark():
    """A real ``local[2]`` session built by :func:`recsys.spark.get_spark`, UI and progress bars off."""
    from recsys.config import SparkSettings
    from recsys.spark import get_spark

    settings = SparkSettings(master="local[2]", driver_memory="2g", shuffle_partitions=2,
                             ui_enabled=False, console_progress=False, log_level="ERROR")
    session = get_spark(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real Amazon 2023, MovieLens); tests that need it skip only if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
