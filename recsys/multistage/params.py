"""The multi-stage model's parameters (kept free of Spark and numpy: ``recsys.config`` reads them).

Its retrievers' own hyper-parameters are not here: the ALS and content retrievers take what model selection chose
for ``implicit_als`` and ``content`` in the same run (``train.params`` when nothing was searched), so the
multi-stage model is built from the run's best single models rather than from a second, untuned copy of them.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from recsys.models.params import ALSParams, ContentParams
from recsys.retrieval.settings import RetrievalSettings
from recsys.strict import StrictModel

MULTISTAGE = "multistage"
RETRIEVERS = ("als", "content", "cooccurrence", "category_popular")
RETRIEVER_MODELS = {"als": "implicit_als", "content": "content"}   # retriever -> the model whose selection it takes


class RankerParams(StrictModel):
    """XGBoost learning-to-rank (``rank:ndcg`` / ``rank:map`` / ``rank:pairwise``) on the candidates' features."""

    objective: str = Field("rank:ndcg", pattern="^rank:(ndcg|map|pairwise)$")
    n_estimators: int = Field(300, ge=1)             # at most: cross-fitting's early stopping usually picks fewer
    max_depth: int = Field(6, ge=1)
    learning_rate: float = Field(0.1, gt=0)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(0.8, gt=0, le=1)
    early_stopping_rounds: int = Field(50, ge=1)     # of the cross-fitted rankers, on their held-out fold's NDCG
    seed: int = 42


class MultiStageParams(StrictModel):
    """Retrieve ``per_retriever`` candidates from each of ``retrievers``, rank their union with the ranker.

    ``recent_items``: the user's latest items the co-occurrence retriever expands; ``neighbours``: co-occurring
    items kept per item; ``label_holdout``: when the rows fitted carry a single split, each user's last that many
    interactions label the ranker's training (otherwise the latest split does); ``max_rank_users``: users whose
    candidates train the ranker (a seeded sample above it); ``recent_days``: the window of "recent" popularity.
    ``folds`` cross-fitted rankers score every labelled user with a ranker that did not see it: their early stopping
    sets the final ranker's number of trees, and on their scores the diversity strength is chosen
    (:mod:`recsys.multistage.diversity`)."""

    retrievers: list[str] = Field(default_factory=lambda: list(RETRIEVERS))
    per_retriever: int = Field(100, ge=1)
    recent_items: int = Field(20, ge=1)
    neighbours: int = Field(100, ge=1)
    label_holdout: int = Field(1, ge=1)
    max_rank_users: int = Field(50_000, ge=1)
    recent_days: float = Field(30.0, gt=0)
    ranker: RankerParams = Field(default_factory=RankerParams)
    folds: int = Field(2, ge=0)                          # cross-fitted rankers (early stopping, diversity)
    diversity_grid: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    diversity_max_loss: float = Field(0.02, ge=0, lt=1)  # relative MAP@10 the diversity may cost on those users
    diversity_pool: int = Field(50, ge=1)               # the ranker's best candidates a list is re-ranked from
    als: ALSParams = Field(default_factory=ALSParams)              # set by the train step (module docstring)
    content: ContentParams = Field(default_factory=ContentParams)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)   # the ``retrieval`` section, ditto

    @field_validator("retrievers")
    @classmethod
    def _known_retrievers(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(RETRIEVERS))
        if unknown or not value:
            raise ValueError(f"retrievers: choose one or more of {', '.join(RETRIEVERS)} (got {value})")
        return value

    @field_validator("diversity_grid")
    @classmethod
    def _strengths(cls, value: list[float]) -> list[float]:
        if any(not 0 <= s < 1 for s in value):
            raise ValueError("diversity strengths must be in [0, 1)")
        return value
