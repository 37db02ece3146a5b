"""The whole pipeline on a small planted-cluster synthetic dump: every table appears, both ALS beat
popularity, the published lists obey their contract, the API serves them, and a failed publish
leaves the previous version current.

The run is the session's shared ``built_warehouse`` (tests/conftest.py: every model family, K=5), read only; the
failed-publish test writes, so it works on a copy."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from conftest import copy_warehouse
from recsys import constants as C
from recsys import ops, registry
from recsys import tables as T
from recsys.config import load_settings
from recsys.pipeline import run_pipeline
from recsys.publish import publish
from recsys.synth import generate


@pytest.fixture(scope="module")
def demo(built_warehouse):
    """``(settings, run_pipeline summary)`` of the shared warehouse: read it, never write it."""
    return built_warehouse.settings, built_warehouse.summary


def test_every_table_of_the_pipeline_exists(demo):
    settings, _ = demo
    found = {str(p.relative_to(settings.warehouse)) for p in T.find_tables(settings.warehouse)}
    assert {C.BRONZE_REVIEWS, C.BRONZE_ITEMS, C.QUARANTINE_REVIEWS, C.QUARANTINE_ITEMS, C.INGESTED_FILES,
            C.SILVER_REVIEWS, C.SILVER_ITEMS, C.USER_INDEX, C.ITEM_INDEX, C.INTERACTIONS, C.SPLITS, C.RUNS,
            C.MODEL_REGISTRY, C.RECS_USER_TOPK, C.RECS_SIMILAR_ITEMS, C.RECS_POPULAR, C.PUBLISHED} <= found


def test_bad_lines_of_the_dump_are_quarantined_and_counted(demo):
    _, summary = demo
    ingest = summary["ingest"]
    assert ingest["quarantined"] > 0 and ingest["blank"] > 0
    assert ingest["lines"] == ingest["blank"] + ingest["good"] + ingest["quarantined"]


def test_both_als_beat_popularity_on_the_planted_structure(demo):
    _, summary = demo
    metrics = {model: result["metrics"] for model, result in summary["evaluate"]["models"].items()}
    assert metrics["spark_als"]["map@10"] > 1.3 * metrics["popularity"]["map@10"]
    assert metrics["implicit_als"]["map@10"] > 1.3 * metrics["popularity"]["map@10"]
    assert metrics["multistage"]["map@10"] > 1.3 * metrics["popularity"]["map@10"]
    assert summary["evaluate"]["decision"]["promoted"] in ("spark_als", "implicit_als", "multistage")


def test_runs_and_registry_record_every_candidate(spark, demo):
    settings, summary = demo
    runs = [r for r in registry.list_runs(spark, settings.warehouse) if r["run_id"] == summary["run_id"]]
    assert sorted(r["model"] for r in runs) == ["content", "implicit_als", "multistage", "popularity", "spark_als"]
    assert all("map@10" in r["metrics"] and r["train_seconds"] is not None for r in runs)
    prod = ops.production_model(settings.warehouse)
    assert prod["model"] == summary["evaluate"]["decision"]["promoted"] and prod["run_id"] == summary["run_id"]
    report = Path(summary["evaluate"]["report"])
    assert report.is_file() and (report.parent / "metrics_over_k.png").stat().st_size > 10_000


def test_published_lists_obey_the_contract(spark, demo):
    settings, summary = demo
    version = summary["version"]
    assert ops.current_version(settings.warehouse) == version
    recs = T.read_table(spark, settings.warehouse, C.RECS_USER_TOPK).where(F.col(C.VERSION) == version)
    per_user = recs.groupBy(C.USER_ID).agg(F.count("*").alias("n"), F.max(C.RANK).alias("max_rank"),
                                          F.countDistinct(C.ITEM_ID).alias("distinct"))
    bad = per_user.where((F.col("n") > 8) | (F.col("max_rank") != F.col("n")) | (F.col("distinct") != F.col("n")))
    assert per_user.count() > 0 and bad.count() == 0
    seen = T.read_table(spark, settings.warehouse, C.SILVER_REVIEWS).select(C.USER_ID, C.ITEM_ID)
    assert recs.join(seen, [C.USER_ID, C.ITEM_ID]).count() == 0          # nothing the user already reviewed
    similar = T.read_table(spark, settings.warehouse, C.RECS_SIMILAR_ITEMS).where(F.col(C.VERSION) == version)
    assert {r["method"] for r in similar.select("method").distinct().collect()} == {"als", "content"}
    assert similar.where(F.col(C.ITEM_ID) == F.col("similar_asin")).count() == 0
    popular = T.read_table(spark, settings.warehouse, C.RECS_POPULAR).where(F.col(C.VERSION) == version)
    assert {r[C.CATEGORY] for r in popular.select(C.CATEGORY).distinct().collect()} == \
        {"__all__", "Appliances", "All_Beauty"}


def test_the_api_serves_the_published_version(spark, demo):
    from recsys.serve import create_app

    settings, summary = demo
    version = summary["version"]
    row = T.read_table(spark, settings.warehouse, C.RECS_USER_TOPK).where(
        (F.col(C.VERSION) == version) & (F.col(C.RANK) == 1)).first()
    client = create_app(settings.warehouse, settings.serve).test_client()
    body = client.get(f"/v1/users/{row[C.USER_ID]}/recommendations?k=5").get_json()
    assert body["version"] == version and body["source"] == "personalized"
    assert body["items"][0]["parent_asin"] == row[C.ITEM_ID]


def test_a_failed_publish_gate_leaves_the_previous_version_current(spark, built_warehouse, tmp_path):
    settings = copy_warehouse(built_warehouse, tmp_path)        # publish writes the version before its gate runs
    before = ops.current_version(settings.warehouse)

    def failing_gate(version: str) -> None:
        raise RuntimeError(f"gate refused {version}")

    settings = settings.model_copy(update={"publish": settings.publish.model_copy(update={"refit_on_all": False})})
    with pytest.raises(RuntimeError, match="gate refused"):
        publish(spark, settings, gate=failing_gate)
    assert ops.current_version(settings.warehouse) == before


def test_a_run_of_popularity_alone_publishes_through_the_gate(spark, tmp_path):
    """No ALS or content model in the run: no similar items to publish, and the published gate still passes
    (the table exists, without rows for this version) instead of failing on a missing table."""
    settings = load_settings(warehouse=tmp_path / "wh", source=tmp_path / "src", reports=tmp_path / "reports")
    # A warehouse of its own: in one with a production ALS the gate would publish that ALS's similar items.
    settings.synth = settings.synth.model_copy(update={"users": 150, "items": 40, "reviews": 1000, "clusters": 3,
                                                       "categories": ["Appliances"]})
    settings.train = settings.train.model_copy(update={"models": ["popularity"]})
    settings.publish = settings.publish.model_copy(update={"k": 5, "spare": 2})
    generate(settings.source, settings.synth, progress=False)
    summary = run_pipeline(spark, settings)
    version = summary["version"]
    assert ops.current_version(settings.warehouse) == version
    assert summary["gates"]["published"]["success"]
    assert T.read_table(spark, settings.warehouse, C.RECS_SIMILAR_ITEMS).where(F.col(C.VERSION) == version).count() == 0
    assert T.read_table(spark, settings.warehouse, C.RECS_USER_TOPK).where(F.col(C.VERSION) == version).count() > 0
