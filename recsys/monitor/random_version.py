"""A published version whose user lists are random: the null model of online tests.

Why publish it at all: an A/B test, or the simulator, needs a reference that is known to carry no signal, served
through exactly the same tables, snapshot and API as a real model — so any difference in the indicators comes
from the lists and not from the plumbing. Lists are K + spare distinct unseen, non-deleted items per user, drawn
with a seeded ``rand`` (ties by item index); similar-item and popular lists are copied from the current version,
so only the personalised lists differ. Cost: a users × items cross join — meant for test-sized catalogues.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import ops
from recsys import tables as T
from recsys.config import Settings
from recsys.logs import step
from recsys.publish import _write_version

RANDOM_MODEL = "random"


def publish_random(spark: SparkSession, settings: Settings, version: str, seed: int = 0) -> dict:
    """Write ``version`` with random user lists and append it to ``ops/published`` (it becomes current)."""
    warehouse = settings.warehouse
    k = settings.publish.k + settings.publish.spare
    base = ops.current_version(warehouse)
    if base is None:
        raise LookupError("nothing published yet: the random version copies the current similar/popular lists")
    with step("publish_random", version=version, base=base):
        items = (T.read_table(spark, warehouse, C.ITEM_INDEX).where(~F.col("deleted"))
                 .select(C.ITEM_IDX, C.ITEM_ID))
        seen = T.read_table(spark, warehouse, C.INTERACTIONS).select(C.USER_IDX, C.ITEM_IDX)
        users = T.read_table(spark, warehouse, C.USER_INDEX)
        order = Window.partitionBy(C.USER_IDX).orderBy(F.col(C.SCORE).desc(), C.ITEM_IDX)
        recs = (users.crossJoin(items).join(seen, [C.USER_IDX, C.ITEM_IDX], "left_anti")
                .withColumn(C.SCORE, F.rand(seed))
                .withColumn(C.RANK, F.row_number().over(order)).where(F.col(C.RANK) <= k)
                .select(F.lit(version).alias(C.VERSION), C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE,
                        F.lit(RANDOM_MODEL).alias(C.MODEL)))
        _write_version(recs, T.table_path(warehouse, C.RECS_USER_TOPK), version, (C.USER_ID, C.RANK))
        for spec, sort_by in ((T.RECS_SIMILAR_ITEMS, (C.ITEM_ID, "method", C.RANK)),
                              (T.RECS_POPULAR, (C.CATEGORY, C.RANK))):
            rows = (T.read_table(spark, warehouse, spec.path).where(F.col(C.VERSION) == base)
                    .withColumn(C.VERSION, F.lit(version)))
            _write_version(rows, T.ensure_table(spark, warehouse, spec), version, sort_by)
        spark.createDataFrame([{C.VERSION: version, C.MODEL: RANDOM_MODEL, "run_id": None,
                                "published_at": datetime.now(timezone.utc), "k": settings.publish.k}],
                              schema=T.PUBLISHED.ddl).write.format("delta").mode("append").save(
            T.table_path(warehouse, C.PUBLISHED))
    return {"version": version, "model": RANDOM_MODEL, "copied_from": base}
