"""The ``sessions`` section: how the warehouse's rows become the item sequences the session models learn from
(:mod:`recsys.sessions.sequences`).

Reviews get no cut by default (``gap_minutes: null``, one sequence per user): a reviewer writes a few reviews months
apart, so any gap short enough to mean "one visit" would leave nearly every sequence one item long, with no next item
to learn from; the order of a user's reviews is their purchase trajectory, which is what the next-item task asks for
(and how the sequential-recommendation literature reads Amazon data). API events come seconds apart: a gap suits
them, and a deployment that sequences its clicks sets one.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from recsys.constants import ITEM_EVENT_TYPES
from recsys.strict import StrictModel


class SessionSettings(StrictModel):
    gap_minutes: float | None = Field(None, gt=0)   # a new session after this much silence; None: one per user
    event_types: list[str] = Field(default_factory=lambda: sorted(ITEM_EVENT_TYPES))   # of ops/events, in order

    @field_validator("event_types")
    @classmethod
    def _item_events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - ITEM_EVENT_TYPES)
        if unknown:
            raise ValueError(f"event_types: choose among {', '.join(sorted(ITEM_EVENT_TYPES))} (got {unknown})")
        return value
