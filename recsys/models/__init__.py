"""Model registry: one ``fit(interactions, params, items=None) -> FactorModel`` per name, so
training, evaluation and publish code never branch on the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from recsys.models import content, implicit_als, popularity, spark_als
from recsys.models.factors import FactorModel
from recsys.models.params import ALSParams, ContentParams, PopularityParams

MODELS: dict[str, tuple[Callable[..., FactorModel], type[BaseModel]]] = {
    "spark_als": (spark_als.fit, ALSParams),
    "implicit_als": (implicit_als.fit, ALSParams),
    "popularity": (popularity.fit, PopularityParams),
    "content": (content.fit, ContentParams),
}


def fit_model(name: str, interactions, params: dict[str, Any] | None = None, items=None) -> FactorModel:
    """Fit model ``name`` with validated ``params`` on training interactions (user_idx, item_idx, weight)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    fit, param_cls = MODELS[name]
    return fit(interactions, param_cls(**(params or {})), items=items)


__all__ = ["MODELS", "FactorModel", "fit_model"]
