"""What the metrics mean, defined once for the numpy and Spark twins.

Contract shared by :mod:`recsys.metrics.python_metrics` and :mod:`recsys.evaluate.spark_metrics`:

* A *ranked list* L_u is a user's recommendations, best first. Nulls are dropped and a repeated item counts
  only at its first position (later copies are removed, so the items behind it move up). Items the user saw
  in training are assumed **already excluded by the caller**: the metric code does not know the train set.
* The *relevant set* R_u is the user's distinct, non-null ground-truth items (order and repeats ignored).
* Population: every user of the truth table with |R_u| ≥ 1. A user with no list (absent from the
  predictions) is in the population and scores 0 everywhere. Users with predictions but no truth row are
  ignored. With ``count_empty_truth=True`` users whose truth row is empty also count (as 0 for every
  metric): that is how Spark's ``RankingMetrics`` averages, and how its documented example values arise.
* Per user, with hits_K = |L_u[:K] ∩ R_u| and 1-based positions i:
  P@K = hits_K / K (a list shorter than K is padded with misses); Recall@K = hits_K / |R_u|;
  HR@K = [hits_K > 0]; MRR@K = 1 / (position of the first hit) if that position ≤ K, else 0;
  AP@K = (1 / min(K, |R_u|)) · Σ_{i ≤ K, L_u[i] ∈ R_u} hits(L_u[:i]) / i;
  NDCG@K = DCG@K / IDCG@K with DCG@K = Σ_{i ≤ K, L_u[i] ∈ R_u} 1 / log2(i + 1) and IDCG@K the same sum
  over the first min(K, |R_u|) positions. MAP@K, NDCG@K, … are means over the population.
  These equal ``pyspark.mllib.evaluation.RankingMetrics`` (precisionAt, recallAt, meanAveragePrecisionAt,
  ndcgAt) on lists without repeats, and ``meanAveragePrecision`` is MAP@K for any K ≥ max(|L_u|, |R_u|).
* Beyond accuracy, over the top-K of *every* list given (not only the population):
  coverage@K = distinct recommended items / catalogue size;
  novelty@K = mean over recommended slots of −log2(share of train interactions that hit the item), slots
  whose item never occurs in train skipped (its self-information is unbounded);
  diversity@K (intra-list) = mean over lists of the mean over item pairs of (1 − cosine), using only items
  with a non-zero vector and only lists with at least two of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

# --- metric names; result keys are ``"<name>@<k>"`` (see :func:`metric_key`) ---------------------------------
MAP = "map"
NDCG = "ndcg"
PRECISION = "precision"
RECALL = "recall"
HIT_RATE = "hit_rate"
MRR = "mrr"
RANKING_METRICS: tuple[str, ...] = (MAP, NDCG, PRECISION, RECALL, HIT_RATE, MRR)

COVERAGE = "coverage"
NOVELTY = "novelty"
DIVERSITY = "diversity"

USERS = "users"      # result key: how many users were averaged over (the population)
K = "k"              # key of the cut-off in each row of a metrics-over-K curve

DEFAULT_CURVE_METRICS: tuple[str, ...] = (MAP, RECALL)


def metric_key(name: str, k: int) -> str:
    """``"map@10"``: the one spelling of a metric at a cut-off (result keys and per-user column names)."""
    return f"{name}@{k}"


def check_ks(ks: int | Iterable[int]) -> tuple[int, ...]:
    """Validate cut-offs once for both twins: sorted, distinct, each an int ≥ 1, at least one."""
    if isinstance(ks, (int, np.integer)):
        values: tuple = (ks,)
    elif isinstance(ks, Iterable) and not isinstance(ks, (str, bytes)):
        values = tuple(ks)
    else:
        raise ValueError(f"ks must be an integer or a sequence of integers, got {ks!r}")
    if not values:
        raise ValueError("ks must name at least one cut-off")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every k must be an integer >= 1, got {k!r}")
    return tuple(sorted({int(k) for k in values}))


def check_metric_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate a subset of :data:`RANKING_METRICS` (order kept, repeats dropped)."""
    chosen = tuple(dict.fromkeys(names))
    unknown = [n for n in chosen if n not in RANKING_METRICS]
    if unknown or not chosen:
        raise ValueError(f"metrics must be a non-empty subset of {RANKING_METRICS}, got {list(names)!r}")
    return chosen


@lru_cache(maxsize=16)
def _discounts(kmax: int) -> tuple[float, ...]:
    return tuple(1.0 / math.log2(i + 1) for i in range(1, kmax + 1))


def discounts(kmax: int) -> np.ndarray:
    """``d[i-1] = 1 / log2(i + 1)`` for positions i = 1..kmax; both twins use these exact doubles."""
    return np.array(_discounts(kmax), dtype=np.float64)


def ideal_dcg(kmax: int) -> np.ndarray:
    """``idcg[m-1]`` = DCG of m hits at the top (m = 1..kmax), summed left to right like the DCG itself."""
    return np.cumsum(discounts(kmax))


def dedupe_ranked(items: Iterable[object]) -> list[object]:
    """A ranking as the metrics see it: nulls dropped, each item kept at its first position only."""
    return list(dict.fromkeys(x for x in items if x is not None))
