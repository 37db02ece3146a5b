"""Train step: fit one model of a run on the configured splits of gold/interactions, save it under
``<warehouse>/models/<model>/<run_id>/`` and register it as a candidate.

Each model of a run is an independent call (the DAG runs them in parallel); all of them see the
same interactions version, recorded with the model for lineage.
"""

from __future__ import annotations

import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import ops, registry
from recsys import tables as T
from recsys.config import Settings
from recsys.constants import MULTISTAGE, RETRIEVER_MODELS, SESSION_MODELS
from recsys.features import catalog_text, interactions_version
from recsys.loading import MODELS, fit_model, load_model, refit_model
from recsys.logs import step
from recsys.models import FactorModel, factor_cache


def training_data(spark: SparkSession, warehouse: Path, splits: list[str] | None) -> DataFrame:
    """gold/interactions restricted to ``splits`` (None = every row), with what a model's weighting reads (and the
    split: the multi-stage model labels its ranker with the latest one)."""
    df = T.read_table(spark, warehouse, C.INTERACTIONS)
    if splits:
        df = df.where(F.col(C.SPLIT).isin(splits))
    return df.select(C.USER_IDX, C.ITEM_IDX, "weight", C.TIMESTAMP, C.SPLIT)


def model_items(spark: SparkSession, warehouse: Path, model: str) -> DataFrame | None:
    """The catalogue a model reads besides the interactions: item text (content), text and item features
    (multi-stage), the live items and the API's item events (session models), nothing (the others)."""
    from recsys.multistage.model import catalogue_items
    from recsys.session_model import session_inputs

    if model == "content":
        return catalog_text(spark, warehouse)
    if model in SESSION_MODELS:
        return session_inputs(spark, warehouse)
    return catalogue_items(spark, warehouse) if model == MULTISTAGE else None


def fit_and_save(spark: SparkSession, warehouse: Path, model: str, params: dict, splits: list[str] | None,
                 path: Path, refit_of: Path | None = None) -> FactorModel:
    """Fit ``model`` on ``splits`` and save it to ``path``; returns the fitted model. ``refit_of``: the evaluated
    candidate's folder, when this is publish's refit of it (:func:`recsys.loading.refit_model`)."""
    data = training_data(spark, warehouse, splits).cache()
    try:
        with factor_cache.using(warehouse):      # the same ALS fit twice in a run is paid once
            items = model_items(spark, warehouse, model)
            fitted = (fit_model(model, data, params, items=items) if refit_of is None
                      else refit_model(model, refit_of, data, params, items=items))
        fitted.info["interactions_version"] = interactions_version(warehouse)
        fitted.info["fit_splits"] = splits or ["all"]
        fitted.save(path)
        if fitted.scratch is not None:   # numpy-fitted: serve the saved copy, drop the temp one
            temporary, fitted = fitted, load_model(spark, path, seen=fitted.seen)
            temporary.discard_scratch()
    finally:
        data.unpersist()
    return fitted


def retriever_params(settings: Settings, run_id: str) -> dict:
    """The multi-stage retrievers' parameters: what selection chose for implicit ALS and content in ``run_id``, or
    their ``train.params`` where nothing was searched, so the retrievers are the run's own single models; and the
    ``retrieval`` section (when its ALS retriever searches an approximate index)."""
    from recsys.selection.step import selected_params

    chosen = {retriever: selected_params(settings.warehouse, run_id, model)
              or settings.train.params.of(model).model_dump()
              for retriever, model in RETRIEVER_MODELS.items()}
    return {**chosen, "retrieval": settings.retrieval.model_dump()}


def train(spark: SparkSession, settings: Settings, model: str, run_id: str, params: dict | None = None) -> dict:
    """Train one candidate of ``run_id``; returns its registry entry. Parameters, first found first: ``params``,
    the run's model selection (:mod:`recsys.selection`), ``train.params``."""
    from recsys.selection.step import selected_params

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    warehouse = settings.warehouse
    params = params or selected_params(warehouse, run_id, model) or {}
    if model == MULTISTAGE:
        params = {**retriever_params(settings, run_id), **params}
    if model in SESSION_MODELS:
        params = {"sessions": settings.sessions.model_dump(), **params}
    params = settings.train.params.updated({model: params}).of(model).model_dump()
    path = ops.model_dir(warehouse, model, run_id)
    with step("train", model=model, run_id=run_id, params=params) as rec:
        start = time.perf_counter()
        fitted = fit_and_save(spark, warehouse, model, params, settings.train.fit_splits, path)
        rec.update(train_seconds=fitted.info.get("train_seconds"), wall_seconds=round(time.perf_counter() - start, 3),
                   path=str(path))
        registry.set_stage(spark, warehouse, run_id=run_id, model=model, stage=ops.CANDIDATE,
                           model_path=str(path), params=fitted.params, metric=None,
                           reason=f"trained on {'+'.join(settings.train.fit_splits)}")
    return {"run_id": run_id, "model": model, "path": str(path), "train_seconds": fitted.info.get("train_seconds")}
