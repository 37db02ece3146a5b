"""Incremental retraining in one local Spark session: the ``recsys_retrain`` DAG's steps for a laptop or a test.

new or changed raw files only (``ops/ingested_files`` skips the rest) → silver MERGE → features (interactions and
splits rebuilt over everything, so the test split holds the newest interactions) → train the production model's
family (the configured candidates while nothing is in production) → evaluate, where the promotion gate compares
the candidate with the production model *re-scored on this same split* and records the decision in
``ops/model_registry`` (:func:`recsys.evaluate.runner.promote`) → publish only if promoted. Training is a
retrain from scratch: the data grew, and an ALS fit on this size costs seconds (benchmarks/bench_train.py), so warm starts would
save little and make runs depend on their history. Quality gates follow each layer as in ``recsys pipeline``.
"""

from __future__ import annotations

from collections.abc import Sequence

from recsys import registry
from recsys.config import Settings
from recsys.evaluate.runner import evaluate_run
from recsys.logs import step
from recsys.pipeline import build_data, layer_gate
from recsys.publish import publish
from recsys.train import train


def retrain(spark, settings: Settings, *, models: Sequence[str] | None = None, run_id: str | None = None) -> dict:
    """One incremental retrain; returns what each step did, the gate's decision and the version if published."""
    run_id = run_id or registry.new_run_id()
    out: dict[str, object] = {"run_id": run_id}
    gate = layer_gate(spark, settings, run_id)
    with step("retrain", warehouse=str(settings.warehouse), run_id=run_id) as rec:
        if models is None:
            prod = registry.production(spark, settings.warehouse)
            models = [prod["model"]] if prod else list(settings.train.models)
        out.update(build_data(spark, settings, gate))
        out["train"] = [train(spark, settings, model, run_id) for model in models]
        evaluation = evaluate_run(spark, settings, run_id)
        out["decision"] = evaluation["decision"]
        out["metrics"] = {m: r["metrics"].get(settings.evaluate.primary_metric)
                          for m, r in evaluation["models"].items()}
        if evaluation["decision"].get("promoted"):
            out["publish"] = publish(spark, settings, gate=lambda version: gate("published", version))
        rec.update(models=list(models), promoted=evaluation["decision"].get("promoted"))
    return out
