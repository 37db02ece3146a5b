"""Hyper-parameter search: every trial fits on ``train`` and is scored with MAP@K on ``valid`` (seen
training items excluded), trials run ``parallel`` at a time (threads: Spark accepts concurrent jobs
from one session, implicit's solver releases the GIL), and each trial is recorded in ``ops/runs``
with stage ``trial`` so ``recsys runs`` shows the search beside the runs it informed.
"""

from __future__ import annotations

import itertools
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import registry
from recsys import tables as T
from recsys.config import Settings
from recsys.evaluate import spark_metrics as SM
from recsys.logs import step
from recsys.models import fit_model
from recsys.train import catalog_text, interactions_version

TRAIN, VALID = "train", "valid"

DEFAULT_SPACE: dict[str, list[Any]] = {
    "factors": [16, 32, 64, 128],
    "regularization": [0.01, 0.05, 0.1, 0.5],
    "alpha": [1.0, 5.0, 10.0, 40.0],
    "iterations": [15],
}


def candidates(space: dict[str, list[Any]], trials: int | None, seed: int) -> list[dict[str, Any]]:
    """The full grid, or ``trials`` random draws from it (without repetition)."""
    keys = sorted(space)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    if trials is None or trials >= len(grid):
        return grid
    return random.Random(seed).sample(grid, trials)


def tune(spark: SparkSession, settings: Settings, model: str, *, space: dict[str, list[Any]] | None = None,
         trials: int | None = 8, parallel: int = 1, k: int = 10, run_id: str | None = None) -> dict:
    """Search ``space`` for ``model``; returns the best params and every trial's MAP@k on valid."""
    warehouse = settings.warehouse
    run_id = run_id or registry.new_run_id()
    interactions = T.read_table(spark, warehouse, C.INTERACTIONS)
    train = interactions.where(F.col(C.SPLIT) == TRAIN).select(C.USER_IDX, C.ITEM_IDX, "weight").cache()
    valid = interactions.where(F.col(C.SPLIT) == VALID).select(C.USER_IDX, C.ITEM_IDX)
    truth = SM.to_lists(valid, user_col=C.USER_IDX, item_col=C.ITEM_IDX).cache()
    if truth.limit(1).count() == 0:
        raise ValueError("the validation split is empty: choose a split strategy that fills it")
    items = catalog_text(spark, warehouse) if model == "content" else None
    base = settings.train.params.of(model).model_dump()
    grid = candidates(space or DEFAULT_SPACE, trials or None, seed=settings.features.split.seed)
    metric = f"map@{k}"
    versions = {C.INTERACTIONS: interactions_version(warehouse)}

    def trial(params: dict[str, Any]) -> dict:
        full = {**base, **params}
        fitted = fit_model(model, train, full, items=items)
        preds = fitted.recommend_lists(users=truth.select(C.USER_IDX), k=k)
        try:
            metrics = SM.ranking_metrics(preds, truth, [k], user_col=C.USER_IDX)
        finally:
            fitted.discard_scratch()
        return {"params": fitted.params, "metrics": metrics, "train_seconds": fitted.info.get("train_seconds")}

    with step("tune", model=model, run_id=run_id, trials=len(grid), parallel=parallel) as rec:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            results = list(pool.map(trial, grid))
        for r in results:
            registry.record_run(spark, warehouse, run_id=run_id, model=model, stage="trial", params=r["params"],
                                metrics={key: v for key, v in r["metrics"].items() if v == v},
                                train_seconds=r["train_seconds"], split=VALID, data_versions=versions,
                                model_path="")
        best = max(results, key=lambda r: r["metrics"].get(metric, float("-inf")))
        rec.update(best_params=best["params"], best=best["metrics"].get(metric))
    train.unpersist()
    truth.unpersist()
    return {"run_id": run_id, "model": model, "metric": metric, "best": best,
            "trials": [{"params": r["params"], metric: r["metrics"].get(metric)} for r in results]}
