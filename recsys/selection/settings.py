"""The ``tuning`` section: how long model selection may search and on how many users (:mod:`recsys.selection`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from recsys.constants import MODELS
from recsys.strict import StrictModel


class TuningSettings(StrictModel):
    """``budget_seconds`` is the whole search of a run (every model), split between the models by ``shares`` (time a
    model leaves unused goes to the next); 0 keeps ``train.params`` as they are. A trial is not started when the
    longest of its model's last five trials would overrun the budget, and an implicit ALS trial stops at the
    deadline."""

    budget_seconds: float = Field(360.0, ge=0)     # a MovieLens latest-small pipeline in ≈ 10 min on 2 cores
    max_trials: int = Field(200, ge=1)             # per model and run
    max_users: int = Field(20_000, ge=1)           # trials fit and score at most this many users (seeded sample)
    k: int = Field(10, ge=1)                       # trials are scored with MAP@k on valid
    seed: int = 42
    startup_trials: int = Field(8, ge=1)           # random trials before TPE models the space
    report_every: int = Field(5, ge=1)             # implicit ALS: MAP@k after every N iterations, for the pruner
    shares: dict[str, float] = Field(default_factory=lambda: {"content": 1.0, "implicit_als": 2.0, "spark_als": 3.0})

    @field_validator("shares")
    @classmethod
    def _known_models(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(sorted(MODELS))}")
        if any(share <= 0 for share in value.values()):
            raise ValueError("shares must be > 0")
        return value
