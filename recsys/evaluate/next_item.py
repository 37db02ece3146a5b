"""The next-item task, for every model of a run: does the user's top-20 (fitted items excluded) hold the first item
they went on to take? The GRU4Rec papers' protocol — each test user's history in order, the target the first
held-out (test) item by time — so session models and the others are compared on the question session models answer.

HR@20 = share of test users whose target is in their top 20; MRR@20 = mean of 1 / (target's position), 0 beyond 20
or without a list. These are hit rate and MRR of :mod:`recsys.metrics.definitions` with the one target as the
relevant set, so the numpy and Spark twins compute them; the target is chosen here, the same way in both (earliest
test timestamp, ties by the lower item index).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.evaluate import spark_metrics as SM
from recsys.metrics import python_metrics as npm
from recsys.metrics.definitions import HIT_RATE, MRR, metric_key

K = 20
HR = "hr"
NAMES = {HIT_RATE: HR, MRR: MRR}       # the ranking metric → its name in the next-item task


def keys(k: int = K) -> tuple[str, str]:
    """The result keys: ``hr@20``, ``mrr@20``."""
    return metric_key(HR, k), metric_key(MRR, k)


def first_held_out(test: DataFrame) -> DataFrame:
    """(user_idx, items = [target]) for every user with a test row: the earliest, ties by the lower item index."""
    order = Window.partitionBy(C.USER_IDX).orderBy(C.TIMESTAMP, C.ITEM_IDX)
    return (test.select(C.USER_IDX, C.ITEM_IDX, C.TIMESTAMP).withColumn("_n", F.row_number().over(order))
            .where(F.col("_n") == 1).select(C.USER_IDX, F.array(C.ITEM_IDX).alias(C.ITEMS)))


def first_items(users: Sequence[Hashable], items: Sequence[Hashable], stamps: Sequence[int]) -> dict[Hashable, list]:
    """The numpy twin of :func:`first_held_out`: user → [target] from parallel arrays of test rows."""
    best: dict[Hashable, tuple[int, Hashable]] = {}
    for user, item, stamp in zip(users, items, np.asarray(stamps).tolist()):
        if user not in best or (stamp, item) < best[user]:
            best[user] = (stamp, item)
    return {user: [item] for user, (_, item) in best.items()}


def _renamed(metrics: Mapping[str, float], k: int) -> dict[str, float]:
    return {metric_key(new, k): float(metrics[metric_key(old, k)]) for old, new in NAMES.items()}


def next_item_metrics(predictions: DataFrame, test: DataFrame | None, k: int = K, *,
                      targets: DataFrame | None = None) -> dict[str, float]:
    """``hr@k`` and ``mrr@k`` of ranked lists (user_idx, items) against the test rows (user_idx, item_idx,
    timestamp), or against ``targets`` (:func:`first_held_out` of them, when a caller scoring several models has it)."""
    targets = first_held_out(test) if targets is None else targets
    metrics = SM.ranking_metrics(predictions, targets, [k], user_col=C.USER_IDX)
    return _renamed(metrics, k)


def next_item_metrics_numpy(predictions: Mapping[Hashable, Sequence[Hashable]],
                            targets: Mapping[Hashable, Sequence[Hashable]], k: int = K) -> dict[str, float]:
    """The numpy twin: ``targets`` from :func:`first_items`."""
    return _renamed(npm.ranking_metrics(predictions, targets, [k]), k)
