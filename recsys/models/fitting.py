"""Model registry: one ``fit(interactions, params, items=None)`` per name and one :func:`load_model`, so
training, evaluation and publish code never branch on the model."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recsys.models import content, implicit_als, popularity, spark_als
from recsys.models.factors import FactorModel
from recsys.models.params import model_params
from recsys.multistage import model as multistage

MODELS: dict[str, Callable[..., Any]] = {
    "spark_als": spark_als.fit,
    "implicit_als": implicit_als.fit,
    "popularity": popularity.fit,
    "content": content.fit,
    "multistage": multistage.fit,
}


def fit_model(name: str, interactions, params: Mapping[str, Any] | None = None, items=None) -> FactorModel:
    """Fit model ``name`` with validated ``params`` on training interactions (user_idx, item_idx, weight)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](interactions, model_params(name, params), items=items)


def load_model(spark, path: Path | str, seen=None):
    """A saved model of any kind (its ``model.json`` says which): a :class:`FactorModel` or a
    :class:`~recsys.multistage.model.MultiStageModel`, both scoring through ``recommend``/``recommend_lists``."""
    name = json.loads((Path(path) / "model.json").read_text())["name"]
    kind = multistage.MultiStageModel if name == multistage.MULTISTAGE else FactorModel
    return kind.load(spark, path, seen=seen)
