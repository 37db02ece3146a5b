"""The ``sessions`` section: how the warehouse's rows become the item sequences the session models learn from
(:mod:`recsys.sessions.sequences`); and the co-occurrence model's parameters (``train.params.cooccurrence``), here so
that :mod:`recsys.models.params` reads them without importing the package that scores with them.

Reviews get no cut by default (``gap_minutes: null``, one sequence per user): a reviewer writes a few reviews months
apart, so any gap short enough to mean "one visit" would leave nearly every sequence one item long, with no next item
to learn from; the order of a user's reviews is their purchase trajectory, which is what the next-item task asks for
(and how the sequential-recommendation literature reads Amazon data). API events come seconds apart: a gap suits
them, and a deployment that sequences its clicks sets one.
"""

from __future__ import annotations

from typing import Literal

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


class CooccurrenceParams(StrictModel):
    """Last-items co-occurrence on sequences (:mod:`recsys.sessions.cooccurrence`): item j follows item i within
    ``window`` steps (weight 1/distance; ``backward``: the share the reverse direction adds), rows normalised by
    ``normalise`` (``cosine``, or ``conditional`` damped by the followed item's popularity^``alpha``), the best
    ``neighbours`` kept per item; a session scores the rows of its last ``last_items`` items, the l-th latest
    weighted ``decay``^l. ``sessions`` is set by the train step from the ``sessions`` section. Default: the plain
    conditional probability (alpha 0), the best on MovieLens latest-small's validation split (HR@20 0.189 against
    0.134 for cosine; damping by popularity^0.25 or ^0.5 made it worse: 0.163, 0.128)."""

    window: int = Field(3, ge=1)
    backward: float = Field(0.0, ge=0, le=1)
    normalise: Literal["cosine", "conditional"] = "conditional"
    alpha: float = Field(0.0, ge=0, le=1)
    neighbours: int = Field(200, ge=1)
    last_items: int = Field(3, ge=1)
    decay: float = Field(0.5, gt=0, le=1)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
