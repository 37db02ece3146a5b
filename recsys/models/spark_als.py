"""Spark MLlib ALS with implicit feedback (Hu–Koren–Volinsky), trained on the interaction weights w.

Spark scales the regularisation by each user's/item's number of ratings (ALS-WR), implicit does not;
the same ``regularization`` value therefore means more shrinkage here. Model selection searches both in implicit's
flat units and maps them (:mod:`recsys.selection.spaces`).

``alpha`` means what it means in implicit: an interaction's confidence is c = α·w. Spark's own is c = 1 + α'·r
for a rating r > 0 (a preference of 1), so Spark is given r = α·w − 1 with α' = 1 — the same c, the same least
squares. Where α·w < 1 (implicit weighs the interaction under an unobserved pair) Spark cannot follow: it can only
keep the interaction at c = 1 (r held at a tiny positive value; a rating of 0 would drop it) or leave it out.
``min_confidence`` chooses: interactions with α·w below it are left out, those between it and 1 kept at c = 1 — except
a user's whose every interaction is below it keeps them all (a user without rows would get no factors, no list).
Which threshold comes closest to implicit's least squares is measured by model selection
(:mod:`recsys.selection.confidence`).
"""

from __future__ import annotations

import time

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.models.factors import FactorModel
from recsys.models.params import ALSParams
from recsys.models.weighting import weigh_frame

MIN_RATING = 1e-6          # c = 1 + MIN_RATING: an interaction implicit weighs under 1 stays a preference here


def spark_ratings(interactions: DataFrame, params: ALSParams) -> DataFrame:
    """(user_idx, item_idx, weight): the rating r = max(α·w − 1, MIN_RATING) that gives Spark (α' = 1) implicit's
    confidence α·w, w re-weighted by ``params.weighting`` first; interactions below ``params.min_confidence`` left
    out (module docstring)."""
    weighted = weigh_frame(interactions, params.weighting).withColumn(
        "confidence", F.col("weight") * F.lit(float(params.alpha)))
    if params.min_confidence > 0:
        floor = F.lit(float(params.min_confidence))
        weighted = (weighted.withColumn("strongest", F.max("confidence").over(Window.partitionBy(C.USER_IDX)))
                    .where((F.col("confidence") >= floor) | (F.col("strongest") < floor)))
    return weighted.select(C.USER_IDX, C.ITEM_IDX,
                           F.greatest(F.col("confidence") - 1.0, F.lit(MIN_RATING)).cast("float").alias("weight"))


def fit(interactions: DataFrame, params: ALSParams, items: DataFrame | None = None) -> FactorModel:
    """Fit on (user_idx, item_idx, weight[, timestamp]), w re-weighted by ``params.weighting``; ``items`` is unused
    (one signature for every model)."""
    from pyspark import StorageLevel
    from pyspark.ml.recommendation import ALS

    spark = interactions.sparkSession
    ratings = spark_ratings(interactions, params).persist(StorageLevel.MEMORY_AND_DISK)
    blocks = params.num_blocks or max(2, spark.sparkContext.defaultParallelism)
    als = ALS(rank=params.factors, maxIter=params.iterations, regParam=params.regularization, alpha=1.0,
              implicitPrefs=True, userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol="weight",
              coldStartStrategy="drop", nonnegative=False, seed=params.seed, checkpointInterval=5,
              numUserBlocks=blocks, numItemBlocks=blocks)
    try:
        start = time.perf_counter()
        model = als.fit(ratings)
        # Materialise the factors once while the ratings are still cached.
        users = model.userFactors.persist(StorageLevel.MEMORY_AND_DISK)
        items_f = model.itemFactors.persist(StorageLevel.MEMORY_AND_DISK)
        users.count(), items_f.count()
        seconds = time.perf_counter() - start
    finally:
        ratings.unpersist()
    return FactorModel(name="spark_als", params=params.model_dump(), user_factors=users, item_factors=items_f,
                       seen=interactions.select(C.USER_IDX, C.ITEM_IDX), info={"train_seconds": round(seconds, 3)})
