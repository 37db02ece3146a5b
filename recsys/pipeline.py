"""Every step in order, in one local Spark session (``recsys pipeline`` / ``make demo``).

The Airflow DAG runs the same library functions as separate spark-submit jobs; this is the
single-process path for a laptop or a test. A Great Expectations gate follows bronze, silver, gold and the
written (not yet current) published version; a failed gate raises :class:`~recsys.quality.QualityGateError`
before anything is published, so the API keeps serving the previous version.
"""

from __future__ import annotations

from collections.abc import Callable

from recsys import registry
from recsys.config import Settings
from recsys.evaluate.runner import evaluate_run
from recsys.features import build_features
from recsys.ingest import ingest
from recsys.logs import step
from recsys.publish import publish
from recsys.quality import validate_layer
from recsys.silver import build_silver
from recsys.train import train


def layer_gate(spark, settings: Settings, run_id: str, results: dict | None = None) -> Callable[..., None]:
    """``gate(layer, version=None)``: validate a layer under ``<run_id>-<layer>``, note the outcome in ``results``,
    raise :class:`~recsys.quality.QualityGateError` if it failed."""
    def gate(layer: str, version: str | None = None) -> None:
        result = validate_layer(spark, settings.warehouse, layer, settings, f"{run_id}-{layer}", version=version)
        if results is not None:
            results[layer] = {"success": result.success, "expectations": len(result.outcomes),
                              "warnings": len(result.warnings), "data_docs": str(result.data_docs)}
        result.raise_if_failed()
    return gate


def build_data(spark, settings: Settings, gate: Callable[..., None]) -> dict:
    """ingest (new or changed raw files only) → gate → silver → gate → features → gate; what each step did."""
    out: dict[str, object] = {}
    report = ingest(spark, settings.source, settings.warehouse, settings.ingest)
    out["ingest"] = report.to_dict()
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} raw file(s) failed to ingest: "
                           + ", ".join(f["path"] for f in report.failed))
    gate("bronze")
    out["silver"] = build_silver(spark, settings.warehouse)
    gate("silver")
    out["features"] = build_features(spark, settings.warehouse, settings.features)
    gate("gold")
    return out


def run_pipeline(spark, settings: Settings, run_id: str | None = None) -> dict:
    """ingest → silver → features (each gated) → train every configured model → evaluate/promote → gated
    publish."""
    run_id = run_id or registry.new_run_id()
    gates: dict[str, object] = {}
    gate = layer_gate(spark, settings, run_id, gates)
    out: dict[str, object] = {"run_id": run_id, "gates": gates}
    with step("pipeline", source=str(settings.source), warehouse=str(settings.warehouse), run_id=run_id):
        out.update(build_data(spark, settings, gate))
        out["train"] = [train(spark, settings, model, run_id) for model in settings.train.models]
        evaluation = evaluate_run(spark, settings, run_id)
        out["evaluate"] = {"decision": evaluation["decision"], "report": evaluation.get("report"),
                           "metrics": {m: {k: v for k, v in r["metrics"].items() if k.endswith("@10")}
                                       for m, r in evaluation["models"].items()}}
        out["publish"] = publish(spark, settings, gate=lambda version: gate("published", version))
    return out
