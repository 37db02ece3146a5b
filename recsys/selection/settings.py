"""The ``tuning`` section: how long model selection may search and on how many users (:mod:`recsys.selection`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from recsys.constants import MODELS
from recsys.strict import StrictModel


class TuningSettings(StrictModel):
    """``budget_seconds`` is the whole search of a run (every model), split between the models by ``shares`` (time a
    model leaves unused goes to the next, unless its search converged); 0 keeps ``train.params`` as they are. A
    trial is not started when the longest of its model's last five trials would overrun the budget, and a trial
    still running at the deadline stops there (implicit ALS between iterations, Spark ALS by cancelling its jobs).

    A trial's MAP@K on valid is one draw: a few hundred users, one random initialisation. So the ``rescore_top``
    best trials are fitted again with ``rescore_seeds`` other seeds and the winner is the best mean, not the luckiest
    draw; the time for it is set aside at the end of a model's search when it costs at most ``rescore_share`` of the
    model's budget (dearer trials are not re-scored: the budget goes on searching). The cheapest trial within
    ``parsimony`` of the best value is re-scored too, and an ALS winner is the cheapest re-scored trial (iterations ×
    factors²) whose mean is within ``parsimony`` of the best mean: a fit that costs 2.5× as much for a difference the
    valid split cannot resolve is paid three more times, at full scale, by train, the multi-stage model and
    publish's refit (0 = the best mean, whatever it costs). An ALS search stops once it has had ``patience`` of
    its share and the last ``patience`` of its time brought no trial more than ``parsimony`` better than the last
    gain (the first 2 × ``startup_trials`` trials always run; 0 = search the whole share): such a search has
    converged, and the time it leaves is not spent on the next model but saved. Spark ALS's first trials, the
    dearest of all, are sized so that ``min_trials`` of their cost fit its share (:mod:`recsys.selection.cost`)."""

    budget_seconds: float = Field(480.0, ge=0)     # MovieLens latest-small: 8 of a 13–14 min run on 2 cores
    max_trials: int = Field(1000, ge=1)            # per model and run
    max_users: int = Field(20_000, ge=1)           # trials fit and score at most this many users (seeded sample)
    k: int = Field(10, ge=1)                       # trials are scored with MAP@k on valid
    seed: int = 42
    startup_trials: int = Field(8, ge=1)           # random trials before TPE models the space
    report_every: int = Field(5, ge=1)             # implicit ALS: MAP@k after every N iterations, for the pruner
    rescore_top: int = Field(3, ge=0)              # best trials fitted again with other seeds (0: none)
    rescore_seeds: int = Field(2, ge=1)            # other seeds per re-scored trial
    rescore_share: float = Field(0.3, ge=0, le=1)  # at most this share of a model's budget goes on re-scoring
    parsimony: float = Field(0.01, ge=0, lt=1)     # ALS: the cheapest re-scored trial within this share of the best
    patience: float = Field(0.5, ge=0, lt=1)       # after this share of its budget, an ALS search stops once this
                                                   # share of its time brought no gain > parsimony
    min_trials: int = Field(5, ge=1)               # Spark ALS's first trials are sized for this many in its budget
    shares: dict[str, float] = Field(default_factory=lambda: {"content": 1.0, "implicit_als": 3.0, "spark_als": 4.0})

    @field_validator("shares")
    @classmethod
    def _known_models(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(sorted(MODELS))}")
        if any(share <= 0 for share in value.values()):
            raise ValueError("shares must be > 0")
        return value
