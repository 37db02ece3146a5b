"""Hyper-parameters, one pydantic model per family; both ALS share one space so they compare fairly.

:class:`ModelParams` is the ``train.params`` section: one typed block per model name, so a misspelt model, a
misspelt parameter or a wrong type is refused when the config loads, not when (or never) the model trains.
Kept free of Spark and numpy: ``recsys.config`` imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from recsys.constants import MODELS, RETRIEVERS
from recsys.retrieval.settings import RetrievalSettings
from recsys.sessions.gru4rec.params import Gru4RecParams
from recsys.sessions.settings import CooccurrenceParams, SessionSettings
from recsys.strict import StrictModel, config_error


class WeightingParams(StrictModel):
    """How a model re-weighs the interaction strengths w of gold/interactions before it fits (identity by default,
    so w stays as the features step built it). In order: ``power`` (w^power: 0 = binary, every interaction 1; with
    rating-only strengths w = rating/5 it is the rating power), then ``scheme`` over the user × item matrix
    (``bm25`` with ``bm25_k1``/``bm25_b``, or ``tfidf``: implicit's definitions, the idf floored at 0), then a recency
    decay 0.5^(age_days / ``half_life_days``), age counted from the newest interaction the model is fitted on.

    Part of a model's parameters, not of the features step, so model selection searches it per model and the
    chosen weighting follows the model into its refits (publish)."""

    power: float = Field(1.0, ge=0)
    scheme: Literal["none", "bm25", "tfidf"] = "none"
    bm25_k1: float = Field(100.0, gt=0)
    bm25_b: float = Field(0.8, ge=0, le=1)
    half_life_days: float | None = Field(None, gt=0)

    @property
    def identity(self) -> bool:
        return self.power == 1.0 and self.scheme == "none" and self.half_life_days is None


class ALSParams(StrictModel):
    factors: int = Field(16, ge=1)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(10.0, ge=0)          # confidence c = alpha·w (implicit's; Spark: max(alpha·w, 1))
    iterations: int = Field(15, ge=1)
    seed: int = 42
    num_blocks: int | None = None             # Spark only: user/item blocks (default: parallelism)
    min_confidence: float = Field(0.0, ge=0)  # Spark only: interactions with alpha·w below it left out (spark_als)
    weighting: WeightingParams = Field(default_factory=WeightingParams)


class PopularityParams(StrictModel):
    """Item score = Σ training weights w (already recency-decayed in gold/interactions)."""

    by: str = Field("weight", pattern="^(weight|count)$")


class ContentParams(StrictModel):
    """TF-IDF over title + features + description + store, reduced by truncated SVD, L2-normalised."""

    dims: int = Field(64, ge=2)
    max_features: int = Field(50_000, ge=100)
    min_df: int = Field(2, ge=1)
    seed: int = 42
    weighting: WeightingParams = Field(default_factory=WeightingParams)   # of the items in a user's profile


class RankerParams(StrictModel):
    """XGBoost learning-to-rank (``rank:ndcg`` / ``rank:map`` / ``rank:pairwise``) on the candidates' features."""

    objective: str = Field("rank:ndcg", pattern="^rank:(ndcg|map|pairwise)$")
    n_estimators: int = Field(300, ge=1)             # at most: cross-fitting's early stopping usually picks fewer
    # shallower trees at a brisker rate than XGBoost's 6 and 0.1: on held-out labelled users
    # (benchmarks/bench_ranker_trees.py) MAP@10 +1.9 % on an Appliances-size run (7,838 users) and +2.8 % on MovieLens
    # for 0.55× / 0.81× the work per candidate scored (rounds × depth); All_Beauty's 121 users cannot tell them apart
    max_depth: int = Field(4, ge=1)
    learning_rate: float = Field(0.2, gt=0)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(0.8, gt=0, le=1)
    early_stopping_rounds: int = Field(50, ge=1)     # of the cross-fitted rankers, on their held-out fold's NDCG
    # > 0: the final ranker's trees are the fewest whose cross-fitted MAP@10 is within this share of the early-stopped
    # rankers' (every tree is paid for each candidate of every user scored); 0 = the folds' mean best. Off: at 0.01
    # MovieLens' multi-stage MAP@10 fell to 0.0318 (16 trees) from 0.0334, Appliances' 0.0216 → 0.0213 (13 trees)
    parsimony: float = Field(0.0, ge=0, lt=1)
    seed: int = 42


class MultiStageParams(StrictModel):
    """Retrieve ``per_retriever`` candidates from each of ``retrievers``, rank their union with the ranker.

    ``recent_items``: the user's latest items the co-occurrence retriever expands; ``neighbours``: co-occurring
    items kept per item; ``label_holdout``: when the rows fitted carry a single split, each user's last that many
    interactions label the ranker's training (otherwise the latest split does); while there are fewer than
    ``label_queries`` queries (one per labelled user and window), earlier windows (each user's rows just before the
    later window, up to ``label_windows`` windows, each with its own stage one) add queries
    (:func:`recsys.multistage.model.label_windows`);
    ``max_rank_users``: users whose candidates train the ranker (a seeded sample above it); ``recent_days``: the
    window of "recent" popularity; ``trend_half_life_days``: the half-life of the ``trending`` retriever's decayed
    counts (a week: on a temporal split the items bought in the weeks after the cut are those of the last weeks
    before it, not of all time).
    ``score_per_retriever``: the candidates per retriever when users are scored (evaluation, publish; the ranker
    trains on ``per_retriever``): measured offline on one fitted model each, scoring the best 50 instead of 100 cost
    0.4 % of MAP@10 on MovieLens last-5 and nothing on Appliances-size synthetic data, and made scoring 1.7× faster
    (``benchmarks/bench_multistage_scoring.py``).
    ``folds`` cross-fitted rankers score every labelled user with a ranker that did not see it: their early stopping
    sets the final ranker's number of trees, and on their scores the diversity strength is chosen
    (:mod:`recsys.multistage.diversity`).

    ``als``, ``content`` and ``retrieval`` are set by the train step: the ALS and content retrievers take what model
    selection chose for ``implicit_als`` and ``content`` in the same run (``train.params`` when nothing was searched),
    so the model is built from the run's best single models, not from untuned copies of them."""

    retrievers: list[str] = Field(default_factory=lambda: list(RETRIEVERS))
    per_retriever: int = Field(100, ge=1)
    score_per_retriever: int = Field(50, ge=1)          # when scoring users (evaluate, publish): at most this many
    recent_items: int = Field(20, ge=1)
    neighbours: int = Field(100, ge=1)
    label_holdout: int = Field(1, ge=1)
    label_windows: int = Field(4, ge=1)
    label_queries: int = Field(5_000, ge=1)
    max_rank_users: int = Field(50_000, ge=1)
    recent_days: float = Field(30.0, gt=0)
    trend_half_life_days: float = Field(7.0, gt=0)
    ranker: RankerParams = Field(default_factory=RankerParams)
    folds: int = Field(2, ge=0)                          # cross-fitted rankers (early stopping, diversity)
    diversity_grid: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    diversity_max_loss: float = Field(0.02, ge=0, lt=1)  # relative MAP@10 the diversity may cost on those users
    diversity_confidence: float = Field(0.95, ge=0.5, lt=1)  # … with this confidence (one-sided; 0.5: the mean)
    diversity_pool: int = Field(50, ge=1)               # the ranker's best candidates a list is re-ranked from
    als: ALSParams = Field(default_factory=ALSParams)
    content: ContentParams = Field(default_factory=ContentParams)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)

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


class Gru4RecModelParams(Gru4RecParams):
    """GRU4Rec as a model of a run: its own parameters (:class:`Gru4RecParams`) and the ``sessions`` it is fitted
    on, set by the train step from the ``sessions`` section. ``processes`` > 1 trains it data-parallel in that many
    Spark tasks (TorchDistributor, gradients averaged over gloo every mini-batch; at most the cluster's task slots);
    model selection's trials always run in one process."""

    sessions: SessionSettings = Field(default_factory=SessionSettings)
    processes: int = Field(1, ge=1)


class ModelParams(StrictModel):
    """Parameters of every model by model name; the field names are ``recsys.constants.MODELS``."""

    spark_als: ALSParams = Field(default_factory=ALSParams)
    implicit_als: ALSParams = Field(default_factory=ALSParams)
    popularity: PopularityParams = Field(default_factory=PopularityParams)
    content: ContentParams = Field(default_factory=ContentParams)
    multistage: MultiStageParams = Field(default_factory=MultiStageParams)
    cooccurrence: CooccurrenceParams = Field(default_factory=CooccurrenceParams)
    gru4rec: Gru4RecModelParams = Field(default_factory=Gru4RecModelParams)

    def of(self, model: str) -> StrictModel:
        """The parameters of ``model``."""
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
        return getattr(self, model)

    def updated(self, changes: Mapping[str, Mapping[str, Any]]) -> ModelParams:
        """A copy with ``changes`` (model -> parameters) merged over this one's, checked like the config."""
        merged = self.model_dump()
        for model, values in changes.items():
            merged[model] = {**merged.get(model, {}), **values}
        try:
            return ModelParams.model_validate(merged)
        except ValidationError as exc:
            raise config_error(exc) from None


def model_params(model: str, values: Mapping[str, Any] | None = None) -> StrictModel:
    """``values`` checked as ``model``'s parameters; the keys not given take the defaults of its family."""
    return ModelParams().updated({model: values or {}}).of(model)
