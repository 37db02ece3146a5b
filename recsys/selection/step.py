"""The ``select`` step: search every model of a run that has a space, within one budget, and leave the winners
where the train step finds them (``ops/selection/<run_id>.json``, read through :func:`recsys.ops.selection`), every
trial recorded in ``ops/runs`` with stage ``trial`` (split ``valid``). A budget of 0 searches nothing: train then
fits ``train.params`` as configured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from recsys import constants as C
from recsys import ops, registry
from recsys.config import Settings
from recsys.features import catalog_text, interactions_version
from recsys.logs import step
from recsys.selection import search as S
from recsys.constants import MULTISTAGE, RETRIEVER_MODELS, SESSION_MODELS
from recsys.selection import cost, scale, spaces
from recsys.selection.data import VALID, SearchData, search_data
from recsys.selection.confidence import spark_min_confidence
from recsys.selection.portfolio import starting_points
from recsys.selection.settings import TuningSettings

TRIAL = "trial"
CONFIDENCE_SHARE = 0.25     # of Spark ALS's budget, at most, to measure which weak interactions it leaves out


def selected_params(warehouse: Path, run_id: str, model: str) -> dict[str, Any] | None:
    """The parameters selection chose for ``model`` in ``run_id`` (None: not searched, or no trial finished)."""
    return (ops.selection(warehouse, run_id).get("models", {}).get(model) or {}).get("best")


def searched_models(models: Sequence[str]) -> list[str]:
    """The models with a space among ``models``, in search order; the multi-stage model brings the models whose
    winners its retrievers take (:func:`recsys.train.retriever_params`), e.g. when a retrain trains it alone."""
    wanted = set(models)
    if MULTISTAGE in wanted:
        wanted |= set(RETRIEVER_MODELS.values())
    return [m for m in spaces.SEARCHED if m in wanted]


def select_models(spark, settings: Settings, run_id: str, models: Sequence[str] | None = None) -> dict[str, Any]:
    """Search ``models`` (default: ``train.models``) in :data:`spaces.SEARCHED` order, each with its share of the
    remaining budget; returns (and writes) the run's selection."""
    tuning = settings.tuning
    chosen = searched_models(models or settings.train.models)
    if tuning.budget_seconds <= 0 or not chosen:
        return {"run_id": run_id, "budget_seconds": tuning.budget_seconds, "models": {}}
    with step("select", run_id=run_id, models=chosen, budget_seconds=tuning.budget_seconds) as rec:
        start = time.perf_counter()
        deadline = start + tuning.budget_seconds
        data = search_data(spark, settings.warehouse, max_users=tuning.max_users, seed=tuning.seed)
        out: dict[str, Any] = {"run_id": run_id, "budget_seconds": tuning.budget_seconds, "k": tuning.k,
                               "note": data.note, "models": {}}
        if not data.truth:
            out["note"] = "the validation split is empty: nothing searched, train.params as configured"
            chosen = []
        for i, model in enumerate(chosen):
            left = chosen[i:]
            share = tuning.shares.get(model, 1.0) / sum(tuning.shares.get(m, 1.0) for m in left)
            began = time.perf_counter()
            budget = max(0.0, deadline - began) * share
            result = search_model(spark, settings, model, run_id, data, budget_seconds=budget, searched=out["models"])
            out["models"][model] = summary(result)
            if result.converged:                # its leftover is saved, not handed to the next model
                deadline -= max(0.0, budget - (time.perf_counter() - began))
        out["seconds"] = round(time.perf_counter() - start, 3)
        path = ops.selection_path(settings.warehouse, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2, default=str))
        tmp.replace(path)
        rec.update(seconds=out["seconds"], note=data.note,
                   **{f"{m}.valid_map@{tuning.k}": r["best_value"] for m, r in out["models"].items()})
    return out


def _first(model: str, implicit: dict[str, Any] | None, data: SearchData,
           min_confidence: float = 0.0) -> list[dict[str, Any]]:
    """What a new study tries after the configured parameters. implicit ALS: the generic starting points
    (:mod:`recsys.selection.portfolio`). Spark ALS: ``implicit``, implicit's winner (:func:`_implicit_best`; mapped by
    :mod:`recsys.selection.spaces`) with the interactions under ``min_confidence`` left out
    (:mod:`recsys.selection.confidence`), its trials being the dearest and the flat-λ winner a good guess for it; the
    portfolio's points are left to implicit, which tries them in a fraction of the time."""
    if model == "implicit_als":
        return starting_points(graded=len(np.unique(data.weights)) > 1)
    if not implicit:
        return []
    flat = implicit["regularization"]
    return [{**implicit, "regularization": spaces.spark_regularization(flat, data.typical_count),
             "iterations": spaces.iterations_in(model, implicit["iterations"]), "min_confidence": min_confidence}]


def _fit_seconds(done: dict[str, Any], implicit: dict[str, Any] | None) -> float:
    """What implicit's winner took as a trial (its longest trial when the winner is not among them)."""
    trials = (done.get("implicit_als") or {}).get("trials") or []
    own = [t["seconds"] for t in trials if t["params"] == implicit]
    return max(own or [t["seconds"] for t in trials] or [0.0])


def _implicit_best(model: str, done: dict[str, Any]) -> dict[str, Any] | None:
    """implicit ALS's winner as its trials fitted it (Spark's trials fit the same sample), when ``model`` is Spark
    ALS and implicit was searched before it."""
    implicit = done.get("implicit_als") or {}
    return (implicit.get("searched_best") or implicit.get("best")) if model == "spark_als" else None


def _sizer(model: str, data: SearchData, budget_seconds: float, tuning: TuningSettings) -> S.Sizer | None:
    """Spark ALS: its first trials sized so that ``tuning.min_trials`` of them fit its budget
    (:mod:`recsys.selection.cost`); the other models' trials cost seconds, not a share of the budget."""
    if model != "spark_als":
        return None
    return partial(cost.sized, seconds=budget_seconds / tuning.min_trials)


def search_model(spark, settings: Settings, model: str, run_id: str, data: SearchData, *, budget_seconds: float,
                 searched: dict[str, Any] | None = None, study: str | None = None) -> S.Search:
    """One model's search on ``data`` (train/valid only), its trials appended to ``ops/runs`` in one commit;
    ``searched``: the :func:`summary` of the models the run searched before it (Spark starts from implicit's)."""
    tuning = settings.tuning
    base = settings.train.params.of(model).model_dump()
    opened = S.open_study(settings.warehouse, study or S.study_name(model, run_id), tuning)
    with step("search", model=model, run_id=run_id, study=opened.study_name, budget_seconds=round(budget_seconds, 1),
              note=data.note) as rec:
        start = time.perf_counter()
        implicit = _implicit_best(model, searched or {}) if not opened.trials else None   # a new study only
        mapping = spark_min_confidence(data, implicit, tuning.k, budget_seconds * CONFIDENCE_SHARE,
                                       _fit_seconds(searched or {}, implicit)) if implicit else None
        if mapping is not None:
            rec.update(min_confidence=mapping.min_confidence, confidence_map=mapping.measured)
        left = max(0.0, budget_seconds - (time.perf_counter() - start))
        result = S.run_search(opened, model, base, _trial(spark, settings, model, data), budget_seconds=left,
                              tuning=tuning, typical_count=data.typical_count,
                              first=_first(model, implicit, data, mapping.min_confidence if mapping else 0.0),
                              size=_sizer(model, data, left, tuning))
        result.note, result.typical_count = data.note, data.typical_count
        full = scale.at_full_scale(model, result.best, data.fraction)
        if full != result.best:
            result.searched_best, result.best = result.best, full
        result.confidence_map = mapping.measured if mapping else None
        rec.update(trials=len(result.trials), previous_trials=result.previous_trials, converged=result.converged,
                   best=result.best_value,
                   rescored=[(r["number"], round(r["mean"], 5)) for r in result.rescored],
                   best_params=result.best, searched_params=result.searched_best, seconds=result.seconds)
    versions = {C.INTERACTIONS: interactions_version(settings.warehouse)}
    metric = f"map@{tuning.k}"
    rows = [{"run_id": run_id, "model": model, "stage": TRIAL, "params": t["params"],
             "metrics": {metric: t["value"]} if t["value"] is not None else {}, "train_seconds": t["seconds"],
             "split": VALID, "data_versions": versions, "model_path": ""} for t in result.trials]
    if rows:
        registry.record_runs(spark, settings.warehouse, rows)
    return result


def summary(result: S.Search) -> dict[str, Any]:
    """What the selection file keeps of a search: the winner, every trial of this session, the re-scored best,
    the time spent."""
    return {"best": result.best, "best_value": result.best_value, "study": result.study,
            "previous_trials": result.previous_trials, "seconds": result.seconds, "note": result.note,
            "typical_count": result.typical_count, "rescored": result.rescored, "trials": result.trials,
            "confidence_map": result.confidence_map, "searched_best": result.searched_best,
            "converged": result.converged}


def _trial(spark, settings: Settings, model: str, data: SearchData) -> S.Trial:
    tuning = settings.tuning
    if model in SESSION_MODELS:
        from recsys.selection.sessions import session_trial

        return session_trial(model, data, tuning.k)
    if model == "implicit_als":
        return S.implicit_trial(data, tuning.k, tuning.report_every)
    if model == "spark_als":
        return S.spark_trial(spark, data, tuning.k)
    return S.content_trial(data, _catalog_text(spark, settings.warehouse), tuning.k)


def _catalog_text(spark, warehouse: Path):
    table = catalog_text(spark, warehouse).toArrow()
    return (table.column(C.ITEM_IDX).to_numpy().astype("int64"), [t or "" for t in table.column("text").to_pylist()])
