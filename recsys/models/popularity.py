"""Popularity: the cold-start fallback and the baseline every personalised model must beat.

Expressed as a one-factor model (user = [1], item = [score]) so it is scored, evaluated and
published by the same code as ALS; ties are broken by item index like everywhere else.
"""

from __future__ import annotations

import time

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.models.factors import FactorModel
from recsys.models.params import PopularityParams

GLOBAL = "__all__"


def item_scores(interactions: DataFrame, params: PopularityParams) -> DataFrame:
    value = F.sum("weight") if params.by == "weight" else F.count(F.lit(1))
    return interactions.groupBy(C.ITEM_IDX).agg(value.cast("double").alias(C.SCORE))


def fit(interactions: DataFrame, params: PopularityParams, items: DataFrame | None = None) -> FactorModel:
    start = time.perf_counter()
    scores = item_scores(interactions, params).cache()
    scores.count()
    users = interactions.select(F.col(C.USER_IDX).alias("id")).distinct().withColumn(
        "features", F.array(F.lit(1.0).cast("float")))
    item_f = scores.select(F.col(C.ITEM_IDX).alias("id"), F.array(F.col(C.SCORE).cast("float")).alias("features"))
    return FactorModel(name="popularity", params=params.model_dump(), user_factors=users, item_factors=item_f,
                       seen=interactions.select(C.USER_IDX, C.ITEM_IDX), cosine_similar=False,
                       info={"train_seconds": round(time.perf_counter() - start, 3)})


def popular_by_category(interactions: DataFrame, item_index: DataFrame, k: int,
                        params: PopularityParams | None = None) -> DataFrame:
    """Top-k items per category plus the global list (category ``__all__``) →
    (category, item_idx, score, rank); deleted items are left out."""
    scores = item_scores(interactions, params or PopularityParams())
    live = item_index.where(~F.col("deleted")).select(C.ITEM_IDX, C.CATEGORY)
    scored = scores.join(live, C.ITEM_IDX)
    both = scored.unionByName(scored.withColumn(C.CATEGORY, F.lit(GLOBAL)))
    order = Window.partitionBy(C.CATEGORY).orderBy(F.desc(C.SCORE), F.asc(C.ITEM_IDX))
    return (both.withColumn(C.RANK, F.row_number().over(order)).where(F.col(C.RANK) <= k)
            .select(C.CATEGORY, C.ITEM_IDX, C.SCORE, C.RANK))
