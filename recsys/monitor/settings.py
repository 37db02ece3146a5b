"""Settings of post-deployment monitoring (the ``monitor`` section of ``recsys.config.Settings``).

The A/B experiment (``ab``) is defined by the API that runs it (:mod:`recsys.serve.experiment`); the indicators
job and the readout read the same settings, so they name the same variants.
"""

from __future__ import annotations

from pydantic import Field

from recsys.serve.experiment import ABSettings
from recsys.strict import StrictModel


class MonitorSettings(StrictModel):
    """Events compaction, daily indicators and the A/B experiment."""

    ab: ABSettings = Field(default_factory=ABSettings)
    closed_after_s: float = Field(60.0, ge=0)   # a past day's log file untouched this long is closed for good
    session_gap_s: float = Field(1800.0, gt=0)  # a click then an impression within this: rec → rec navigation
    confidence: float = Field(0.95, gt=0, lt=1)  # of the readout's intervals
