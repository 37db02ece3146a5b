"""The deletion cascade's write paths agree: one drop (items + users) applied to two copies of the session's
warehouse — with the history purge, where each changed table is written once into a fresh directory, and without
it, every table MERGEd — leaves the same rows in every table, and the purged copy keeps no older version. The
list rewrite (rows cut, gaps closed without a shuffle) matches a plain model of it on random lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.catalog import apply_drops, cascade, read_drops
from conftest import copy_warehouse
from hypothesis_profiles import spark_examples

LIST_SCHEMA = "version STRING, user_id STRING, rank INT, parent_asin STRING, score FLOAT"
lists_and_cuts = st.lists(                        # per list: its length, and which of its ranks are cut
    st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(1, n)))), min_size=1, max_size=12)


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast", "sort-merge"])
@settings(max_examples=spark_examples(20))
@given(lists=lists_and_cuts)
def test_the_list_rewrite_cuts_the_gone_rows_and_ranks_the_rest_1_to_n(spark, broadcast, lists):
    rows = [(f"v{u % 2}", f"u{u}", r, f"i{u}-{r}", float(-r)) for u, (n, _) in enumerate(lists)
            for r in range(1, n + 1)]
    gone = [(f"v{u % 2}", f"u{u}", r) for u, (_, cut) in enumerate(lists) for r in cut]
    out = cascade._lists_without(spark.createDataFrame(rows, LIST_SCHEMA),
                                 spark.createDataFrame(gone, "version STRING, user_id STRING, rank INT"),
                                 (C.VERSION, C.USER_ID), broadcast=broadcast)
    expected = []
    for u, (n, cut) in enumerate(lists):
        kept = [r for r in range(1, n + 1) if r not in cut]
        expected += [(f"v{u % 2}", f"u{u}", new, f"i{u}-{old}", float(-old)) for new, old in enumerate(kept, 1)]
    assert sorted(tuple(r) for r in out.collect()) == sorted(expected)


def _rows(spark, warehouse: Path) -> dict[str, list[str]]:
    """Every Delta table's current rows as sorted JSON (``ops/*`` left out: it records when, not what)."""
    out = {}
    for path in T.find_tables(warehouse):
        rel = path.relative_to(Path(warehouse).resolve()).as_posix()
        if rel.startswith("ops/"):
            continue
        df = spark.read.format("delta").load(str(path))
        out[rel] = sorted(r[0] for r in df.select(F.to_json(F.struct(*sorted(df.columns)))).collect())
    return out


def _history(spark, warehouse: Path, rel: str) -> list[int]:
    path = T.table_path(warehouse, rel)
    return sorted(r["version"] for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect())


def test_a_purging_run_writes_what_the_merges_write_and_no_history(spark, built_warehouse, tmp_path):
    version = built_warehouse.summary["version"]
    lists = T.read_table(spark, built_warehouse.settings.warehouse, C.RECS_USER_TOPK).where(
        F.col(C.VERSION) == version)
    popular = [r[0] for r in lists.groupBy(C.ITEM_ID).count().orderBy(F.desc("count"), C.ITEM_ID).limit(3).collect()]
    users = [r[0] for r in lists.select(C.USER_ID).distinct().orderBy(C.USER_ID).limit(3).collect()]
    drops = tmp_path / "drops"
    drops.mkdir()
    (drops / "items.csv").write_text("parent_asin,reason,requested_at\n"
                                     + "".join(f"{i},takedown,2026-01-01T00:00:00Z\n" for i in popular))
    (drops / "users.jsonl").write_text("".join(json.dumps({"user_id": u, "reason": "gdpr", "requested_at":
                                                           "2026-01-02T10:00:00+00:00"}) + "\n" for u in users))

    merged = copy_warehouse(built_warehouse, tmp_path / "merged")
    merged.publish = merged.publish.model_copy(update={"rewrite_share": 1.0})     # a MERGE wherever one exists
    merged.deletions = merged.deletions.model_copy(update={"rewrite_file_share": 1.0})
    merge_report = apply_drops(spark, merged, read_drops(drops=drops), purge_history=False)
    purged = copy_warehouse(built_warehouse, tmp_path / "purged")
    purge_report = apply_drops(spark, purged, read_drops(drops=drops), purge_history=True)

    assert purge_report["rows_removed"] == merge_report["rows_removed"]
    assert sorted(purge_report["fresh"]) == sorted(purge_report["changed"]) and merge_report["fresh"] == []
    assert {C.RECS_USER_TOPK, C.RECS_SIMILAR_ITEMS, C.RECS_POPULAR, C.SILVER_REVIEWS} <= set(purge_report["fresh"])
    assert _rows(spark, purged.warehouse) == _rows(spark, merged.warehouse)
    refilled = purge_report["refill"].get("refilled")
    for rel in purge_report["fresh"]:          # version 0 (created) and 1 (the rows); a refill MERGE may follow
        assert _history(spark, purged.warehouse, rel) in ([0, 1], [0, 1, 2] if rel == C.RECS_USER_TOPK and
                                                          refilled else [0, 1]), rel


def _list_table(spark, warehouse: Path, lists: int) -> str:
    """recs_user_topk with ``lists`` lists of 3 items, one list per file: u<n> holds a<n>, b<n> and ``shared``."""
    rows = [("v1", f"u{u:02d}", r, item, 1.0 / r, "m") for u in range(lists)
            for r, item in enumerate((f"a{u}", f"b{u}", "shared"), 1)]
    path = T.table_path(warehouse, C.RECS_USER_TOPK)
    (spark.createDataFrame(rows, "version STRING, user_id STRING, rank INT, parent_asin STRING, score DOUBLE, "
                                 "model STRING")
     .repartitionByRange(lists, C.USER_ID).sortWithinPartitions(C.USER_ID, C.RANK)
     .write.format("delta").save(path))
    return path


@pytest.mark.parametrize(("item", "operation"), [("a3", "MERGE"), ("shared", "WRITE")],
                         ids=["one-file-merged", "every-file-rewritten"])
def test_a_list_table_is_merged_only_when_the_merge_would_rewrite_few_of_its_files(spark, tmp_path, item, operation):
    path = _list_table(spark, tmp_path, lists=10)
    assert len(spark.read.format("delta").load(path).inputFiles()) == 10
    removed = spark.createDataFrame([(item, "h")], f"{C.ITEM_ID} STRING, id_hash STRING")
    lists = spark.read.format("delta").load(path)
    plan = cascade.rerank(lists, (C.VERSION, C.USER_ID), C.ITEM_ID, (C.SCORE, C.MODEL), removed)
    # one changed list of 10 touches 1 file of 10 (0.1 <= 0.3); the shared item touches all 10
    outcome = cascade.apply_plan(spark, tmp_path, C.RECS_USER_TOPK, plan, rewrite_file_share=0.3)
    assert outcome.removed == {"h": 1 if item == "a3" else 10}
    last = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["operation"]
    assert last == operation
    after = spark.read.format("delta").load(path)
    assert after.where(F.col(C.ITEM_ID) == item).isEmpty()
    ranks = {r[0]: sorted(r[1]) for r in after.groupBy(C.USER_ID).agg(F.collect_list(C.RANK)).collect()}
    assert len(ranks) == 10 and all(v == list(range(1, len(v) + 1)) for v in ranks.values())
