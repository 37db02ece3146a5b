"""Bronze → silver: one row per (user_id, parent_asin) and one row per parent_asin, by Delta MERGE.

``silver/reviews`` keeps the earliest review of each (user, item) pair — the official Amazon 2023
benchmark rule — ties broken by source file and line so the choice never depends on partitioning.
``silver/items`` keeps the latest metadata row of each item (last ingested, then last line).
Both are recomputed from bronze and MERGEd on their keys with update-if-changed, insert and
delete-not-in-source, so a rerun on unchanged bronze commits no row changes. Deleted items and erased
users (``ops/deletions``) are left out, so a raw file that still holds them cannot bring them back.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.catalog.guard import exclude_deleted
from recsys.logs import step

REVIEW_COLUMNS = T.SILVER_REVIEWS.columns
ITEM_COLUMNS = T.SILVER_ITEMS.columns


def earliest_reviews(bronze: DataFrame) -> DataFrame:
    """Earliest review per (user_id, parent_asin); exact duplicates collapse with it."""
    order = Window.partitionBy(C.USER_ID, C.ITEM_ID).orderBy(
        F.col(C.TIMESTAMP).asc(), F.col(C.SOURCE_FILE).asc(), F.col(C.LINE).asc())
    return (bronze.withColumn("_rn", F.row_number().over(order))
            .where(F.col("_rn") == 1).select(*REVIEW_COLUMNS))


def latest_items(bronze: DataFrame) -> DataFrame:
    """Latest metadata row per parent_asin (last ingested file, then last line)."""
    order = Window.partitionBy(C.ITEM_ID).orderBy(
        F.col(C.INGESTED_AT).desc(), F.col(C.SOURCE_FILE).desc(), F.col(C.LINE).desc())
    return (bronze.withColumn("_rn", F.row_number().over(order))
            .where(F.col("_rn") == 1).select(*ITEM_COLUMNS))


def _merge(spark: SparkSession, path: str, source: DataFrame, keys: tuple[str, ...], columns: list[str]) -> dict:
    """MERGE ``source`` into ``path`` on ``keys``: update changed rows, insert new, delete vanished."""
    from delta.tables import DeltaTable

    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in columns if c not in keys)
    (DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), on)
     .whenMatchedUpdateAll(condition=changed)
     .whenNotMatchedInsertAll()
     .whenNotMatchedBySourceDelete()
     .execute())
    last = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").first()
    metrics = last["operationMetrics"] or {}
    return {k: int(metrics.get(k, 0)) for k in
            ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsDeleted")}


def _bronze_versions(warehouse: Path) -> dict[str, int]:
    from recsys.tables import describe_table

    return {rel: int(describe_table(Path(T.table_path(warehouse, rel)))["version"])
            for rel in (C.BRONZE_REVIEWS, C.BRONZE_ITEMS) if _exists(warehouse, rel)}


def _built_from(spark: SparkSession, path: str) -> dict | None:
    """Bronze versions recorded in the last commit of a silver table (None if never built)."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).select("userMetadata").first()
    try:
        return json.loads(row["userMetadata"]) if row and row["userMetadata"] else None
    except ValueError:
        return None


def build_silver(spark: SparkSession, warehouse: Path, *, force: bool = False) -> dict:
    """Rebuild both silver tables from bronze; returns the MERGE row counts per table.

    Each MERGE commit records the bronze versions it was built from; when bronze has not changed
    since, the step is skipped (reruns of the pipeline cost nothing here).
    """
    versions = _bronze_versions(warehouse)
    if not versions:
        raise FileNotFoundError(f"no bronze tables under {warehouse}: run `recsys ingest` first")
    out: dict[str, dict] = {}
    with step("build_silver", warehouse=str(warehouse), bronze_versions=versions) as rec:
        reviews_path = T.ensure_table(spark, warehouse, T.SILVER_REVIEWS)
        items_path = T.ensure_table(spark, warehouse, T.SILVER_ITEMS)
        built = [p for p, rel in ((reviews_path, C.BRONZE_REVIEWS), (items_path, C.BRONZE_ITEMS)) if rel in versions]
        if not force and all(_built_from(spark, p) == versions for p in built):
            rec["skipped"] = "bronze unchanged since the last build"
            return out
        with T.spark_conf(spark, {"spark.databricks.delta.commitInfo.userMetadata": json.dumps(versions)}):
            if C.BRONZE_REVIEWS in versions:
                out[C.SILVER_REVIEWS] = _merge(spark, reviews_path,
                                               exclude_deleted(spark, warehouse, earliest_reviews(
                                                   T.read_table(spark, warehouse, C.BRONZE_REVIEWS))),
                                               (C.USER_ID, C.ITEM_ID), REVIEW_COLUMNS)
            if C.BRONZE_ITEMS in versions:
                out[C.SILVER_ITEMS] = _merge(spark, items_path,
                                             exclude_deleted(spark, warehouse, latest_items(
                                                 T.read_table(spark, warehouse, C.BRONZE_ITEMS))),
                                             (C.ITEM_ID,), ITEM_COLUMNS)
        rec["merge"] = out
    return out


def _exists(warehouse: Path, rel: str) -> bool:
    return T.is_delta_table(Path(T.table_path(warehouse, rel)))
