"""Hyper-parameters, one pydantic model per family; both ALS share one space so they compare fairly."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ALSParams(BaseModel):
    factors: int = Field(64, ge=1)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(10.0, ge=0)          # confidence c = 1 + alpha·w
    iterations: int = Field(15, ge=1)
    seed: int = 42
    num_blocks: int | None = None             # Spark only: user/item blocks (default: parallelism)


class PopularityParams(BaseModel):
    """Item score = Σ training weights w (already recency-decayed in gold/interactions)."""

    by: str = Field("weight", pattern="^(weight|count)$")


class ContentParams(BaseModel):
    """TF-IDF over title + features + description + store, reduced by truncated SVD, L2-normalised."""

    dims: int = Field(64, ge=2)
    max_features: int = Field(50_000, ge=100)
    min_df: int = Field(2, ge=1)
    seed: int = 42
