"""Settings of post-deployment monitoring (the ``monitor`` section of ``recsys.config.Settings``).

The A/B experiment lives here rather than in ``serve`` because the API, the indicators job and the readout must
agree on it: the API assigns users with the salt and shares, the readout names the same variants. It is also read
by the gunicorn workers from ``RECSYS_MONITOR`` (JSON), which :func:`recsys.serve.server.gunicorn_env` fills.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from recsys.ids import is_valid_id

CURRENT = "current"                    # a variant that serves whatever ops/published points at


class VariantSettings(BaseModel):
    """One arm of an experiment: which published version it serves, and its share of users."""

    version: str = CURRENT             # a version of ops/published, or "current"
    share: float = Field(0.5, gt=0, le=1)


class ABSettings(BaseModel):
    """A deterministic user split: ``sha256(salt:user_id)`` picks a variant by cumulative share.

    Changing the salt reshuffles everybody (a new experiment); changing shares moves only users near the
    boundaries. ``enabled: false`` serves the current version to everyone and stamps no variant.
    """

    enabled: bool = False
    experiment: str = "exp-1"
    salt: str = Field("recsys-ab-1", min_length=1)
    control: str = "control"           # the variant the readout compares the others against
    variants: dict[str, VariantSettings] = Field(default_factory=lambda: {
        "control": VariantSettings(version=CURRENT, share=0.5),
        "treatment": VariantSettings(version=CURRENT, share=0.5)})

    @model_validator(mode="after")
    def _consistent(self) -> "ABSettings":
        bad = [name for name in [self.experiment, *self.variants] if not is_valid_id(name)]
        if bad:
            raise ValueError(f"experiment and variant names must be 1-64 characters of A-Z a-z 0-9 _ -: {bad}")
        if self.control not in self.variants:
            raise ValueError(f"control variant {self.control!r} is not one of {', '.join(self.variants)}")
        total = sum(v.share for v in self.variants.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"variant shares must sum to 1, not {total:g}")
        return self


class MonitorSettings(BaseModel):
    """Events compaction, daily indicators and the A/B experiment."""

    ab: ABSettings = Field(default_factory=ABSettings)
    closed_after_s: float = Field(60.0, ge=0)   # a past day's log file untouched this long is closed for good
    session_gap_s: float = Field(1800.0, gt=0)  # a click then an impression within this: rec → rec navigation
    confidence: float = Field(0.95, gt=0, lt=1)  # of the readout's intervals
