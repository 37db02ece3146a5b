"""Offline evaluation: ranking metrics at K (MAP, NDCG, precision, recall, hit rate, MRR) and coverage,
novelty, intra-list diversity.

Twins with the same names, arguments and numbers (MS Recommenders' layout):

* :mod:`recsys.metrics.python_metrics` — numpy, on ``{user: [items]}`` dicts (CLI, tests, small runs);
* :mod:`recsys.evaluate.spark_metrics` — Spark, on list tables ``(user_id, items: array)`` (the pipeline).

:mod:`recsys.metrics.definitions` holds the definitions, the population rule and the result key names;
:mod:`recsys.evaluate.cli_metrics` is the body of ``recsys metrics``. Importing this package does not
import pyspark.
"""

from recsys.constants import ITEMS
from recsys.metrics.definitions import (
    COVERAGE,
    DIVERSITY,
    HIT_RATE,
    MAP,
    MRR,
    NDCG,
    NOVELTY,
    PRECISION,
    RANKING_METRICS,
    RECALL,
    USERS,
    metric_key,
)

__all__ = [
    "COVERAGE", "DIVERSITY", "HIT_RATE", "ITEMS", "MAP", "MRR", "NDCG", "NOVELTY", "PRECISION",
    "RANKING_METRICS", "RECALL", "USERS", "metric_key",
]
