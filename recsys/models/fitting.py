"""Factor-model registry: one ``fit(interactions, params, items=None) -> FactorModel`` per name (the multi-stage
model, built on these, is dispatched one level up: :mod:`recsys.loading`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from recsys.models import content, implicit_als, popularity, spark_als
from recsys.models.factors import FactorModel
from recsys.models.params import model_params

MODELS: dict[str, Callable[..., FactorModel]] = {
    "spark_als": spark_als.fit,
    "implicit_als": implicit_als.fit,
    "popularity": popularity.fit,
    "content": content.fit,
}


def fit_model(name: str, interactions, params: Mapping[str, Any] | None = None, items=None) -> FactorModel:
    """Fit model ``name`` with validated ``params`` on training interactions (user_idx, item_idx, weight)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](interactions, model_params(name, params), items=items)

