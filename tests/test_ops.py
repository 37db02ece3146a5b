"""One rule for what is current in the ops tables (:mod:`recsys.ops`), on small Delta tables written with delta-rs.

The agreement tests publish two versions in the same second — what a republish right after a publish does — and
ask every reader of "the current version" (the API, the DAG's check, pruning's kept set, the quality gate's default)
the same question: all must answer the greater version, v2, and pruning must keep it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from recsys import constants as C
from recsys import ops

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
UTC_US = pa.timestamp("us", tz="UTC")
PUBLISHED_SCHEMA = pa.schema([(C.VERSION, pa.string()), (C.MODEL, pa.string()), (ops.RUN_ID, pa.string()),
                              (ops.PUBLISHED_AT, UTC_US), (ops.K, pa.int32())])
REGISTRY_SCHEMA = pa.schema([(ops.RUN_ID, pa.string()), (C.MODEL, pa.string()), ("stage", pa.string()),
                             (ops.MODEL_PATH, pa.string()), ("params", pa.string()), ("metric", pa.float64()),
                             ("reason", pa.string()), (ops.UPDATED_AT, UTC_US)])


def switch(warehouse: Path, version: str, at: datetime | None, run_id: str = "run-1",
           schema: pa.Schema = PUBLISHED_SCHEMA) -> None:
    """Append one ``ops/published`` row (``at=None``: a row written without a switch time)."""
    row = {C.VERSION: version, C.MODEL: "popularity", ops.RUN_ID: run_id, ops.PUBLISHED_AT: at, ops.K: 2}
    write_deltalake(warehouse / C.PUBLISHED, pa.Table.from_pylist([row], schema=schema), mode="append")


def register(warehouse: Path, run_id: str, model: str, stage: str, at: datetime, model_path: str) -> None:
    row = {ops.RUN_ID: run_id, C.MODEL: model, "stage": stage, ops.MODEL_PATH: model_path, "params": "{}",
           "metric": None, "reason": "", ops.UPDATED_AT: at}
    write_deltalake(warehouse / C.MODEL_REGISTRY, pa.Table.from_pylist([row], schema=REGISTRY_SCHEMA), mode="append")


# --- ops/published ----------------------------------------------------------------------------------------------


def test_a_warehouse_without_ops_tables_has_nothing_current(tmp_path):
    assert ops.published_log_version(tmp_path) == -1
    assert ops.current_published(tmp_path) is None and ops.current_version(tmp_path) is None
    assert ops.published_versions(tmp_path) == [] and ops.unswitched(tmp_path) == {}
    assert ops.kept_versions(tmp_path, keep=2) == set()
    assert ops.registry_state(tmp_path) == [] and ops.production_model(tmp_path) is None
    assert ops.run_models(tmp_path, "run-1") == []


def test_a_row_without_published_at_is_never_current(tmp_path):
    switch(tmp_path, "v1", T0)
    switch(tmp_path, "v9", None)                       # written, never switched
    assert ops.current_version(tmp_path) == "v1"
    assert ops.published_versions(tmp_path) == ["v1"]
    assert ops.current_published(tmp_path, "v9") is None


def test_the_greatest_published_at_wins_whatever_the_append_order(tmp_path):
    switch(tmp_path, "v2", T0 + timedelta(days=1))
    switch(tmp_path, "v1", T0)                         # appended last, published earlier
    assert ops.current_published(tmp_path) == ops.Published("v2", "popularity", "run-1", T0 + timedelta(days=1), 2)


def test_a_same_second_tie_goes_to_the_greater_version(tmp_path):
    switch(tmp_path, "v1", T0)
    switch(tmp_path, "v2", T0)
    switch(tmp_path, "v10", T0 - timedelta(seconds=1))
    assert ops.current_version(tmp_path) == "v2"
    assert ops.published_versions(tmp_path) == ["v2", "v1", "v10"]


def test_a_republished_version_counts_once_at_its_latest_switch(tmp_path):
    switch(tmp_path, "v1", T0, run_id="run-1")
    switch(tmp_path, "v2", T0 + timedelta(hours=1))
    switch(tmp_path, "v1", T0 + timedelta(hours=2), run_id="run-1b")     # rolled back to v1
    assert ops.published_versions(tmp_path) == ["v1", "v2"]
    assert ops.current_published(tmp_path).run_id == "run-1b"
    assert ops.current_published(tmp_path, "v2").published_at == T0 + timedelta(hours=1)


def test_timestamps_without_a_zone_read_as_utc(tmp_path):
    naive = pa.schema([f if f.name != ops.PUBLISHED_AT else pa.field(ops.PUBLISHED_AT, pa.timestamp("us"))
                       for f in PUBLISHED_SCHEMA])
    switch(tmp_path, "v1", T0.replace(tzinfo=None), schema=naive)
    assert ops.current_published(tmp_path).published_at == T0


def test_kept_versions_are_the_newest_the_pinned_and_the_recently_written(tmp_path):
    for day, version in enumerate(["v1", "v2", "v3", "v4"]):
        switch(tmp_path, version, T0 + timedelta(days=day))
    now = T0 + timedelta(days=10)
    (tmp_path / ops.UNSWITCHED).write_text(json.dumps({
        "v5": (now - timedelta(hours=1)).isoformat(), "v6": (now - timedelta(hours=100)).isoformat()}))
    assert ops.unswitched(tmp_path) == {"v5": now - timedelta(hours=1), "v6": now - timedelta(hours=100)}
    assert ops.kept_versions(tmp_path, 2, pinned={"v1"}, grace_hours=48, now=now) == {"v4", "v3", "v1", "v5"}


# --- ops/model_registry -----------------------------------------------------------------------------------------


def test_registry_state_is_the_latest_row_of_each_model(tmp_path):
    t = lambda minute: T0 + timedelta(minutes=minute)  # noqa: E731
    register(tmp_path, "run-a", "spark_als", ops.CANDIDATE, t(1), "models/spark_als/run-a")
    register(tmp_path, "run-a", "popularity", ops.CANDIDATE, t(1), "models/popularity/run-a")
    register(tmp_path, "run-a", "spark_als", ops.PRODUCTION, t(2), "models/spark_als/run-a")
    register(tmp_path, "run-b", "implicit_als", ops.CANDIDATE, t(3), "/elsewhere/implicit_als/run-b")
    assert [(r[ops.RUN_ID], r[C.MODEL], r["stage"]) for r in ops.registry_state(tmp_path)] == [
        ("run-a", "popularity", ops.CANDIDATE), ("run-a", "spark_als", ops.PRODUCTION),
        ("run-b", "implicit_als", ops.CANDIDATE)]
    assert ops.production_model(tmp_path)[ops.RUN_ID] == "run-a"
    register(tmp_path, "run-a", "spark_als", ops.ARCHIVED, t(4), "models/spark_als/run-a")
    register(tmp_path, "run-b", "implicit_als", ops.PRODUCTION, t(4), "/elsewhere/implicit_als/run-b")
    prod = ops.production_model(tmp_path)
    assert (prod[ops.RUN_ID], prod[ops.UPDATED_AT]) == ("run-b", t(4))
    assert [(r[C.MODEL], r["stage"]) for r in ops.run_models(tmp_path, "run-a")] == [
        ("popularity", ops.CANDIDATE), ("spark_als", ops.ARCHIVED)]


def test_model_paths_are_stored_relative_and_read_absolute(tmp_path):
    warehouse = tmp_path / "wh"
    inside = warehouse / "models" / "spark_als" / "run-a"
    assert ops.stored_path(warehouse, str(inside)) == "models/spark_als/run-a"
    assert ops.stored_path(warehouse, "/elsewhere/m") == "/elsewhere/m"           # outside: kept as given
    register(warehouse, "run-a", "spark_als", ops.PRODUCTION, T0, ops.stored_path(warehouse, str(inside)))
    register(warehouse, "run-old", "popularity", ops.ARCHIVED, T0, "/old/warehouse/models/popularity/run-old")
    paths = {r[ops.RUN_ID]: r[ops.MODEL_PATH] for r in ops.registry_state(warehouse)}
    assert paths == {"run-a": str(inside.resolve()), "run-old": "/old/warehouse/models/popularity/run-old"}
    moved = tmp_path / "moved"
    warehouse.rename(moved)                                                       # a copied or moved warehouse
    assert ops.production_model(moved)[ops.MODEL_PATH] == str((moved / "models/spark_als/run-a").resolve())


# --- every reader agrees on a same-second republish ---------------------------------------------------------------


def _gold_rows(warehouse: Path, version: str, item: str) -> None:
    """Two users, one similar list and one popular list for ``version``: enough for a snapshot."""
    topk = [{C.VERSION: version, C.USER_ID: user, C.RANK: 1, C.ITEM_ID: item, C.SCORE: 1.0, C.MODEL: "popularity"}
            for user in ("U1", "U2")]
    write_deltalake(warehouse / C.RECS_USER_TOPK, pa.Table.from_pylist(topk, schema=pa.schema([
        (C.VERSION, pa.string()), (C.USER_ID, pa.string()), (C.RANK, pa.int32()), (C.ITEM_ID, pa.string()),
        (C.SCORE, pa.float64()), (C.MODEL, pa.string())])), mode="append")
    similar = [{C.VERSION: version, C.ITEM_ID: item, C.RANK: 1, "similar_asin": "I0", C.SCORE: 1.0, "method": "als"}]
    write_deltalake(warehouse / C.RECS_SIMILAR_ITEMS, pa.Table.from_pylist(similar, schema=pa.schema([
        (C.VERSION, pa.string()), (C.ITEM_ID, pa.string()), (C.RANK, pa.int32()), ("similar_asin", pa.string()),
        (C.SCORE, pa.float64()), ("method", pa.string())])), mode="append")
    popular = [{C.VERSION: version, C.CATEGORY: "__all__", C.RANK: 1, C.ITEM_ID: item, C.SCORE: 1.0}]
    write_deltalake(warehouse / C.RECS_POPULAR, pa.Table.from_pylist(popular, schema=pa.schema([
        (C.VERSION, pa.string()), (C.CATEGORY, pa.string()), (C.RANK, pa.int32()), (C.ITEM_ID, pa.string()),
        (C.SCORE, pa.float64())])), mode="append")


@pytest.fixture(params=[("v1", "v2"), ("v2", "v1")], ids=["v2-appended-last", "v2-appended-first"])
def republished(request, tmp_path) -> Path:
    """v1 and v2 switched within the same second (equal ``published_at``), their rows appended in either order:
    a reader that takes the first row of the greatest time answers v1 for one of the two."""
    warehouse = tmp_path / "wh"
    for version in request.param:
        _gold_rows(warehouse, version, item="I" + version[1:])
        switch(warehouse, version, T0)
    return warehouse


def _serve_settings():
    from recsys.serve.settings import ServeSettings

    return ServeSettings(reload_interval_s=0.0, build_in_subprocess=False, access_log=False)


def test_api_dag_gate_and_pruning_agree_on_a_same_second_republish(republished):
    from recsys.orchestration import confirm_published
    from recsys.quality.gate import _current_version
    from recsys.serve.app import create_app

    client = create_app(republished, _serve_settings()).test_client()
    assert client.get("/ready").get_json()["version"] == "v2"
    assert [i["parent_asin"] for i in client.get("/v1/users/U1/recommendations?k=1").get_json()["items"]] == ["I2"]
    assert ops.current_version(republished) == "v2"                     # publish, refill and random_version's base
    assert confirm_published(republished, "v2").version == "v2"         # the DAG's signal_api check
    assert _current_version(republished) == "v2"                        # the published gate's default version
    assert ops.kept_versions(republished, keep=1) == {"v2"}             # pruning keeps what is served


def test_pruning_a_same_second_republish_removes_only_what_is_not_served(spark, republished):
    from recsys.publish import prune_versions
    from recsys.serve.app import create_app

    assert prune_versions(spark, republished, keep=1, grace_hours=48) == ["v1"]
    left = {r[C.VERSION] for r in spark.read.format("delta").load(str(republished / C.RECS_USER_TOPK)).collect()}
    assert left == {"v2"}
    assert create_app(republished, _serve_settings()).test_client().get("/ready").get_json()["version"] == "v2"
