"""Hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE``: ``default`` (``make test``, ``make test-fast``) and
``full`` (``make test-all``). Loaded by ``conftest.py`` before any test runs.

Pure-Python properties keep their example counts in every profile: an example costs microseconds. A property whose
every example runs Spark jobs asks :func:`spark_examples` instead, so ``make test`` pays a few examples (each one
still checks the whole property) and ``make test-all`` the count the test was written with."""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
_SPARK_SHARE = {"default": 0.25, "full": 1.0}

settings.register_profile("default", deadline=None)
settings.register_profile("full", deadline=None)
settings.load_profile(PROFILE)


def spark_examples(full: int, floor: int = 4) -> int:
    """Examples for a Spark-backed property: ``full`` under ``full``, a quarter (at least ``floor``) otherwise."""
    if PROFILE not in _SPARK_SHARE:
        raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: expected one of {sorted(_SPARK_SHARE)}")
    return min(full, max(floor, round(full * _SPARK_SHARE[PROFILE])))
