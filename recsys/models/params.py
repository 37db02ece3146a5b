"""Hyper-parameters, one pydantic model per family; both ALS share one space so they compare fairly.

:class:`ModelParams` is the ``train.params`` section: one typed block per model name, so a misspelt model, a
misspelt parameter or a wrong type is refused when the config loads, not when (or never) the model trains.
Kept free of Spark and numpy: ``recsys.config`` imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError

from recsys.constants import MODELS
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
    alpha: float = Field(10.0, ge=0)          # confidence c = 1 + alpha·w
    iterations: int = Field(15, ge=1)
    seed: int = 42
    num_blocks: int | None = None             # Spark only: user/item blocks (default: parallelism)
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


from recsys.multistage.params import MultiStageParams  # noqa: E402 - it builds on the families above


class ModelParams(StrictModel):
    """Parameters of every model by model name; the field names are ``recsys.constants.MODELS``."""

    spark_als: ALSParams = Field(default_factory=ALSParams)
    implicit_als: ALSParams = Field(default_factory=ALSParams)
    popularity: PopularityParams = Field(default_factory=PopularityParams)
    content: ContentParams = Field(default_factory=ContentParams)
    multistage: MultiStageParams = Field(default_factory=MultiStageParams)

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
