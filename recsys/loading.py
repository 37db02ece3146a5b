"""Any model by name, fitted or saved: the factor models of :mod:`recsys.models`, the multi-stage model
(:mod:`recsys.multistage`), which is built on them and so lives above that package, and the session models
(:mod:`recsys.sessions`); training, evaluation and publish go through here and never branch on the model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys.constants import MULTISTAGE, SESSION_MODELS
from recsys.models import MODELS as FACTOR_MODELS
from recsys.models import FactorModel
from recsys.models import fit_model as fit_factor_model
from recsys.models.params import model_params
from recsys.multistage import model as multistage
from recsys import session_model

MODELS = (*FACTOR_MODELS, MULTISTAGE, *SESSION_MODELS)   # every model a run can train


def fit_model(name: str, interactions, params: Mapping[str, Any] | None = None, items=None):
    """Fit model ``name`` with validated ``params`` on training interactions (user_idx, item_idx, weight, …)."""
    if name == MULTISTAGE:
        return multistage.fit(interactions, model_params(name, params), items=items)
    if name in SESSION_MODELS:
        return session_model.fit(name, interactions, model_params(name, params), items=items)
    return fit_factor_model(name, interactions, params, items=items)


def refit_model(name: str, candidate: Path | str, interactions, params: Mapping[str, Any] | None = None,
                items=None):
    """Publish's refit of the evaluated ``candidate`` folder on every split: the multi-stage model keeps the
    candidate's ranker and refits its retrievers (:func:`recsys.multistage.model.refit`); every other model is
    fitted afresh with the candidate's ``params``."""
    if name == MULTISTAGE:
        return multistage.refit(candidate, interactions, model_params(name, params), items=items)
    return fit_model(name, interactions, params, items=items)


def load_model(spark, path: Path | str, seen=None):
    """A saved model of any kind (its ``model.json`` says which): a :class:`FactorModel`, a
    :class:`~recsys.multistage.model.MultiStageModel` or a :class:`~recsys.session_model.SessionModel`, all
    scoring through ``recommend``/``recommend_lists``."""
    name = json.loads((Path(path) / "model.json").read_text())["name"]
    kind = (multistage.MultiStageModel if name == MULTISTAGE else
            session_model.SessionModel if name in SESSION_MODELS else FactorModel)
    return kind.load(spark, path, seen=seen)
