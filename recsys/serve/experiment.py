"""The A/B experiment the API runs: its settings (``monitor.ab`` in the configuration) and who gets which variant.

Defined in ``serve`` because the API assigns users with it; the indicators job and the readout
(``recsys.monitor``) read the same settings, so they name the same variants. Assignment hashes ``salt:user_id``
with SHA-256 and maps the first 8 bytes to a point in [0, 1); variants own consecutive intervals of width
``share`` in name order. No state is stored: every API worker, the simulator and a later audit compute the same
variant for the same user, and a new salt gives an independent split.
"""

from __future__ import annotations

import hashlib

from pydantic import Field, model_validator

from recsys.ids import is_valid_id
from recsys.strict import StrictModel

CURRENT = "current"                    # a variant that serves whatever ops/published points at
_SCALE = float(1 << 64)


class VariantSettings(StrictModel):
    """One arm of an experiment: which published version it serves, and its share of users."""

    version: str = CURRENT             # a version of ops/published, or "current"
    share: float = Field(0.5, gt=0, le=1)


class ABSettings(StrictModel):
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

    def pinned_versions(self) -> set[str]:
        """The published versions variants serve by name (not ``current``), experiment enabled or not."""
        return {v.version for v in self.variants.values()} - {CURRENT}


def bucket(salt: str, user_id: str) -> float:
    """The user's point in [0, 1) for this salt (uniform over users for any fixed salt)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign(ab: ABSettings, user_id: str) -> str:
    """The variant of ``user_id``: the one whose share interval holds the user's bucket."""
    point = bucket(ab.salt, user_id)
    edge = 0.0
    names = sorted(ab.variants)
    for name in names:
        edge += ab.variants[name].share
        if point < edge:
            return name
    return names[-1]          # shares sum to 1 up to rounding: the last interval is closed above
