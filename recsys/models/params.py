"""Hyper-parameters, one pydantic model per family; both ALS share one space so they compare fairly.

:class:`ModelParams` is the ``train.params`` section: one typed block per model name, so a misspelt model, a
misspelt parameter or a wrong type is refused when the config loads, not when (or never) the model trains.
Kept free of Spark and numpy: ``recsys.config`` imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError

from recsys.constants import MODELS
from recsys.strict import StrictModel, config_error


class ALSParams(StrictModel):
    factors: int = Field(16, ge=1)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(10.0, ge=0)          # confidence c = 1 + alpha·w
    iterations: int = Field(15, ge=1)
    seed: int = 42
    num_blocks: int | None = None             # Spark only: user/item blocks (default: parallelism)


class PopularityParams(StrictModel):
    """Item score = Σ training weights w (already recency-decayed in gold/interactions)."""

    by: str = Field("weight", pattern="^(weight|count)$")


class ContentParams(StrictModel):
    """TF-IDF over title + features + description + store, reduced by truncated SVD, L2-normalised."""

    dims: int = Field(64, ge=2)
    max_features: int = Field(50_000, ge=100)
    min_df: int = Field(2, ge=1)
    seed: int = 42


class ModelParams(StrictModel):
    """Parameters of every model by model name; the field names are ``recsys.constants.MODELS``."""

    spark_als: ALSParams = Field(default_factory=ALSParams)
    implicit_als: ALSParams = Field(default_factory=ALSParams)
    popularity: PopularityParams = Field(default_factory=PopularityParams)
    content: ContentParams = Field(default_factory=ContentParams)

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
