"""Evaluate every candidate of a run on the same split with the same code, record the metrics in
``ops/runs``, apply the promotion rule, and write the side-by-side report.

Protocol: candidates were fitted on ``train.fit_splits`` (default train+valid); each is asked for
its top-``kmax`` list for every user with ≥1 test interaction, seen (fitted) items excluded; truth is
the user's test items; users without a list count 0 (:mod:`recsys.metrics.definitions`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import ops, registry
from recsys import tables as T
from recsys.config import Settings
from recsys.evaluate import next_item as NI
from recsys.evaluate import spark_metrics as SM
from recsys.logs import step, timed
from recsys.loading import load_model
from recsys.models import FactorModel

log = logging.getLogger(__name__)
TEST = "test"


@dataclass
class EvaluationData:
    """What every model of a run is scored against, built and cached once for all of them from the fitted pairs
    (user_idx, item_idx) and test rows (user_idx, item_idx, timestamp): the test lists (``truth``), each test user's
    next item (``targets``), the fitted items' counts (novelty) and popularity percentiles, the live catalogue's
    size."""

    truth: DataFrame
    targets: DataFrame
    counts: DataFrame
    percentiles: DataFrame
    catalog_size: int

    @classmethod
    def of(cls, fit: DataFrame, test: DataFrame, catalog_size: int) -> EvaluationData:
        truth = SM.to_lists(test, user_col=C.USER_IDX, item_col=C.ITEM_IDX).cache()
        return cls(truth, NI.first_held_out(test).cache(),
                   SM.item_counts(fit, item_col=C.ITEM_IDX).cache(), popularity_percentiles(fit).cache(),
                   catalog_size)

    def unpersist(self) -> None:
        for frame in (self.truth, self.targets, self.counts, self.percentiles):
            frame.unpersist()


def evaluate_model(model: FactorModel, data: EvaluationData, ks: list[int],
                   curve_max_k: int) -> tuple[dict[str, float], list[dict]]:
    """Metrics at ``ks``, the next-item task's (:mod:`recsys.evaluate.next_item`) and curves over
    K = 1..curve_max_k for one model (predictions cached once)."""
    kmax = max(max(ks), curve_max_k, NI.K)
    seconds: dict[str, float] = {}
    preds = model.recommend_lists(users=data.truth.select(C.USER_IDX), k=kmax).cache()
    try:
        with timed(seconds, "lists"):
            lists = preds.count()
        with timed(seconds, "ranking"):
            metrics = SM.ranking_metrics(preds, data.truth, ks, user_col=C.USER_IDX)
        with timed(seconds, "next_item"):
            metrics.update(NI.next_item_metrics(preds, None, targets=data.targets))
        vectors = model.item_factors.select(F.col("id").alias(C.ITEM_IDX), F.col("features").alias(SM.VECTOR))
        with timed(seconds, "beyond_accuracy"):
            metrics.update(SM.beyond_accuracy_metrics(preds, ks, catalog_size=data.catalog_size, counts=data.counts,
                                                      item_vectors=vectors, item_col=C.ITEM_IDX,
                                                      user_col=C.USER_IDX))
        with timed(seconds, "curves"):
            curves = SM.metrics_over_k(preds, data.truth, range(1, curve_max_k + 1), user_col=C.USER_IDX)
        with timed(seconds, "popularity_bias"):
            metrics["popularity_percentile@10"] = popularity_percentile(preds, data.percentiles, 10)
    finally:
        preds.unpersist()
    log.info("evaluated model=%s lists=%d k=%d seconds=%s", model.name, lists, kmax, json.dumps(seconds))
    return metrics, curves


def popularity_percentiles(fit: DataFrame) -> DataFrame:
    """(item_idx, pct): each fitted item's popularity percentile (0 = least, 1 = most interactions)."""
    counts = fit.groupBy(C.ITEM_IDX).count()
    return counts.select(C.ITEM_IDX, F.percent_rank().over(Window.orderBy("count")).alias("pct"))


def popularity_percentile(preds: DataFrame, percentiles: DataFrame, k: int) -> float:
    """Mean popularity percentile (:func:`popularity_percentiles`; items never fitted count 0) of the recommended
    top-``k`` items: the popularity bias of a model."""
    slots = preds.select(F.explode(F.slice(C.ITEMS, 1, k)).alias(C.ITEM_IDX))
    value = slots.join(percentiles, C.ITEM_IDX, "left").agg(F.avg(F.coalesce("pct", F.lit(0.0)))).first()[0]
    return float(value) if value is not None else float("nan")


def evaluate_run(spark: SparkSession, settings: Settings, run_id: str, report: bool = True) -> dict:
    """Evaluate all candidates of ``run_id``; promote the best if the rule allows; write the report."""
    warehouse = settings.warehouse
    conf = settings.evaluate
    cands = ops.run_models(warehouse, run_id)
    if not cands:
        raise ValueError(f"run {run_id} has no trained models: run the train step first")
    interactions = T.read_table(spark, warehouse, C.INTERACTIONS)
    fit = interactions.where(F.col(C.SPLIT).isin(settings.train.fit_splits)).select(C.USER_IDX, C.ITEM_IDX).cache()
    test = interactions.where(F.col(C.SPLIT) == TEST).select(C.USER_IDX, C.ITEM_IDX, C.TIMESTAMP).cache()
    catalog = T.read_table(spark, warehouse, C.ITEM_INDEX).where(~F.col("deleted")).count()
    data_versions = {C.INTERACTIONS: int(T.describe_table(Path(T.table_path(warehouse, C.INTERACTIONS)))["version"])}
    results: dict[str, dict] = {}
    data = EvaluationData.of(fit, test, catalog)
    with step("evaluate", run_id=run_id, models=[c[C.MODEL] for c in cands]) as rec:
        for cand in cands:
            model = load_model(spark, cand["model_path"], seen=fit)
            metrics, curves = evaluate_model(model, data, conf.ks, conf.curve_max_k)
            train_seconds = model.info.get("train_seconds")
            results[cand[C.MODEL]] = {"metrics": metrics, "curves": curves, "train_seconds": train_seconds,
                                      "params": model.params, "model_path": cand["model_path"], "info": model.info}
            registry.record_run(spark, warehouse, run_id=run_id, model=cand[C.MODEL], stage=ops.CANDIDATE,
                                params=model.params, metrics={k: v for k, v in metrics.items() if v == v},
                                train_seconds=train_seconds, split=TEST, data_versions=data_versions,
                                model_path=cand["model_path"])
        decision = promote(spark, settings, run_id, results, split=(fit, test))
        rec.update(decision=decision, **{f"{m}.{conf.primary_metric}": r["metrics"].get(conf.primary_metric)
                                         for m, r in results.items()})
    data.unpersist()
    fit.unpersist()
    test.unpersist()
    out = {"run_id": run_id, "decision": decision,
           "models": {m: {"metrics": r["metrics"], "train_seconds": r["train_seconds"], "params": r["params"]}
                      for m, r in results.items()}}
    if report:
        from recsys.evaluate.report import write_report

        out["report"] = str(write_report(settings.reports / run_id, out, results, ops.selection(warehouse, run_id)))
    return out


def production_on_split(spark: SparkSession, settings: Settings, current: dict, fit: DataFrame,
                        test: DataFrame) -> float | None:
    """The production model's primary metric re-measured on this run's split (its recorded figure came from an
    older split, so comparing against it would compare data, not models). None if its files are gone.

    The model scored is the one registered (fitted on its own run's fit splits, not the refit-on-all copy that
    was published), so with time-ordered splits it has never seen the newest test interactions; users and items
    it does not know get no list and count 0, which is the point of asking it about the newest data.
    """
    metric = settings.evaluate.primary_metric
    _, _, cut = metric.partition("@")
    if not cut.isdigit():
        return None                 # not a ranking metric at K: only the recorded figure can be compared
    k = int(cut)
    try:
        model = load_model(spark, current["model_path"], seen=fit)
    except Exception:  # noqa: BLE001 - a pruned or erased model folder: fall back to the recorded figure
        log.warning("production model %s of %s cannot be loaded from %s; using its recorded metric",
                    current[C.MODEL], current["run_id"], current["model_path"])
        return None
    truth = SM.to_lists(test, user_col=C.USER_IDX, item_col=C.ITEM_IDX)
    preds = model.recommend_lists(users=truth.select(C.USER_IDX), k=k)
    return SM.ranking_metrics(preds, truth, [k], user_col=C.USER_IDX).get(metric)


def promote(spark: SparkSession, settings: Settings, run_id: str, results: dict[str, dict],
            split: tuple[DataFrame, DataFrame] | None = None) -> dict:
    """Promotion gate: the run's best model on the primary metric becomes production unless it is worse than the
    current production model by more than ``evaluate.promotion_tolerance`` — both measured on this run's test
    split (``split`` = (fit, test); production's recorded metric only when its model cannot be re-scored).
    Either way the decision and both figures are written to ``ops/model_registry``."""
    metric = settings.evaluate.primary_metric
    tolerance = settings.evaluate.promotion_tolerance
    scored = {m: r["metrics"][metric] for m, r in results.items()
              if r["metrics"].get(metric) is not None and r["metrics"][metric] == r["metrics"][metric]}
    if not scored:
        return {"promoted": None, "reason": f"no model has {metric}"}
    best = max(sorted(scored), key=lambda m: scored[m])
    current = ops.production_model(settings.warehouse)
    baseline, basis = (current or {}).get("metric"), "recorded"
    if current and current["run_id"] != run_id and split is not None:
        measured = production_on_split(spark, settings, current, *split)
        if measured is not None:
            baseline, basis = measured, "re-measured on this run's test split"
    if current and baseline is not None and scored[best] < baseline - tolerance:
        reason = (f"{best} {metric}={scored[best]:.4f} is worse than production {current['model']} of "
                  f"{current['run_id']} ({baseline:.4f}, {basis}) by more than {tolerance}")
        registry.set_stage(spark, settings.warehouse, run_id=run_id, model=best, stage=ops.REJECTED,
                           model_path=results[best]["model_path"], params=results[best]["params"],
                           metric=scored[best], reason=reason)
        return {"promoted": None, "rejected": best, metric: scored[best], "production": baseline,
                "basis": basis, "reason": reason}
    if current:
        registry.set_stage(spark, settings.warehouse, run_id=current["run_id"], model=current[C.MODEL],
                           stage=ops.ARCHIVED, model_path=current["model_path"],
                           params=json.loads(current["params"] or "{}"), metric=current["metric"],
                           reason=f"superseded by {run_id}/{best}")
    reason = f"best {metric} of run ({scored[best]:.4f})"
    if current and baseline is not None:
        reason += f" vs production {current['model']} of {current['run_id']} ({baseline:.4f}, {basis}; " \
                  f"tolerance {tolerance})"
    registry.set_stage(spark, settings.warehouse, run_id=run_id, model=best, stage=ops.PRODUCTION,
                       model_path=results[best]["model_path"], params=results[best]["params"],
                       metric=scored[best], reason=reason)
    return {"promoted": best, metric: scored[best], "production": baseline, "basis": basis, "reason": reason}
