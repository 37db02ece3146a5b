"""Ranking metrics in numpy, for lists that fit in memory (the CLI, tests, small experiments).

Twin of :mod:`recsys.evaluate.spark_metrics`: same function names, same arguments (a dict per user
instead of a DataFrame), same result keys, same numbers to 1e-9. Definitions and the population rule
are in :mod:`recsys.metrics.definitions`. The only per-item Python work is building a users × K hit
matrix; every metric at every K is then read off cumulative sums of it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence

import numpy as np

from recsys.constants import USER_ID
from recsys.metrics.definitions import (
    COVERAGE,
    DEFAULT_CURVE_METRICS,
    DIVERSITY,
    HIT_RATE,
    K,
    MAP,
    MRR,
    NDCG,
    NOVELTY,
    PRECISION,
    RANKING_METRICS,
    RECALL,
    USERS,
    check_ks,
    check_metric_names,
    dedupe_ranked,
    discounts,
    ideal_dcg,
    metric_key,
)

Predictions = Mapping[Hashable, Sequence[Hashable]]
Truth = Mapping[Hashable, Collection[Hashable]]


class _Hits:
    """The population's hit matrix, with the running sums every metric at every K is read from.

    Cumulative sums are taken once over kmax columns; column K-1 is then each metric's sum over the
    first K positions, added left to right exactly like the Spark twin and ``RankingMetrics``.
    """

    def __init__(self, users: list[Hashable], hits: np.ndarray, n_relevant: np.ndarray) -> None:
        self.users = users
        kmax = hits.shape[1]
        positions = np.arange(1, kmax + 1)
        self.cum_hits = np.cumsum(hits, axis=1)
        self.cum_ap = np.cumsum(np.where(hits, self.cum_hits / positions, 0.0), axis=1)
        self.cum_dcg = np.cumsum(np.where(hits, discounts(kmax), 0.0), axis=1)
        self.first_hit = np.where(hits.any(axis=1), np.argmax(hits, axis=1) + 1, kmax + 1)
        self.idcg = ideal_dcg(kmax)
        self.n_relevant = n_relevant  # |R_u|; 0 only for empty-truth users under count_empty_truth
        self.has_truth = n_relevant > 0
        self.safe_n_relevant = np.where(self.has_truth, n_relevant, 1)

    def at(self, name: str, k: int) -> np.ndarray:
        """Per-user values of one metric at cut-off ``k`` (≤ kmax), 0 where |R_u| = 0."""
        col = k - 1
        n_hits = self.cum_hits[:, col]
        ideal_hits = np.minimum(k, self.safe_n_relevant)
        if name == PRECISION:
            out = n_hits / k
        elif name == RECALL:
            out = n_hits / self.safe_n_relevant
        elif name == HIT_RATE:
            out = (n_hits > 0).astype(np.float64)
        elif name == MRR:
            out = np.where(self.first_hit <= k, 1.0 / self.first_hit, 0.0)
        elif name == MAP:
            out = self.cum_ap[:, col] / ideal_hits
        elif name == NDCG:
            out = self.cum_dcg[:, col] / self.idcg[ideal_hits - 1]
        else:  # pragma: no cover - names are validated by the callers
            raise ValueError(name)
        return np.where(self.has_truth, out, 0.0)


def _hit_matrix(predictions: Predictions, truth: Truth, kmax: int, count_empty_truth: bool) -> _Hits:
    users: list[Hashable] = []
    n_relevant: list[int] = []
    rows: list[list[bool]] = []
    for user, relevant_items in truth.items():
        relevant = {x for x in relevant_items if x is not None}
        if not relevant and not count_empty_truth:
            continue
        ranked = dedupe_ranked(predictions.get(user, ()))[:kmax]
        users.append(user)
        n_relevant.append(len(relevant))
        rows.append([x in relevant for x in ranked])
    hits = np.zeros((len(users), kmax), dtype=bool)
    for r, row in enumerate(rows):
        hits[r, : len(row)] = row
    return _Hits(users, hits, np.array(n_relevant, dtype=np.int64))


def per_user_metrics(
    predictions: Predictions,
    truth: Truth,
    ks: int | Iterable[int],
    *,
    count_empty_truth: bool = False,
) -> dict[str, np.ndarray]:
    """Every ranking metric at every K for each population user (for per-segment reports).

    Returns ``{"user_id": object array of users, "map@10": float array, …}``, rows aligned, users in
    the truth mapping's order.
    """
    kk = check_ks(ks)
    table = _hit_matrix(predictions, truth, kk[-1], count_empty_truth)
    out: dict[str, np.ndarray] = {USER_ID: np.fromiter(table.users, dtype=object, count=len(table.users))}
    for k in kk:
        for name in RANKING_METRICS:
            out[metric_key(name, k)] = table.at(name, k)
    return out


def ranking_metrics(
    predictions: Predictions,
    truth: Truth,
    ks: int | Iterable[int],
    *,
    count_empty_truth: bool = False,
) -> dict[str, float]:
    """Population means of MAP, NDCG, precision, recall, hit rate and MRR at each K, plus ``users``.

    ``predictions``: user → ranked items (best first); ``truth``: user → relevant items. Keys
    ``"map@10"``, …, ``"users"``. With an empty population every metric is NaN (undefined), ``users`` 0.
    """
    kk = check_ks(ks)
    table = _hit_matrix(predictions, truth, kk[-1], count_empty_truth)
    result: dict[str, float] = {}
    for k in kk:
        for name in RANKING_METRICS:
            result[metric_key(name, k)] = _mean(table.at(name, k))
    result[USERS] = len(table.users)
    return result


def metrics_over_k(
    predictions: Predictions,
    truth: Truth,
    ks: int | Iterable[int] = range(1, 101),
    *,
    metrics: Iterable[str] = DEFAULT_CURVE_METRICS,
    count_empty_truth: bool = False,
) -> list[dict[str, float]]:
    """Metric curves: one row ``{"k": k, "map": …, "recall": …}`` per cut-off, ascending k."""
    kk = check_ks(ks)
    names = check_metric_names(metrics)
    table = _hit_matrix(predictions, truth, kk[-1], count_empty_truth)
    return [{K: k, **{name: _mean(table.at(name, k)) for name in names}} for k in kk]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


# --- beyond accuracy ----------------------------------------------------------------------------------------


def _top_k(predictions: Predictions, k: int) -> Iterable[list[Hashable]]:
    (k,) = check_ks(k)
    return (dedupe_ranked(items)[:k] for items in predictions.values())


def catalog_coverage(predictions: Predictions, k: int, catalog_size: int) -> float:
    """Share of the catalogue that appears in at least one top-K list (all lists given, not a population)."""
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be >= 1, got {catalog_size}")
    distinct = set().union(*_top_k(predictions, k))
    return len(distinct) / catalog_size


def novelty(predictions: Predictions, train: Iterable[Hashable] | Truth, k: int) -> float:
    """Mean self-information −log2(share of train interactions) over recommended top-K slots.

    ``train``: the item of every train interaction (one entry per interaction, like the item column of
    the train table), or user → items. Slots whose item never occurs in train are skipped; NaN if none is
    left.
    """
    items = (x for xs in train.values() for x in xs) if isinstance(train, Mapping) else train
    counts = Counter(x for x in items if x is not None)
    total = sum(counts.values())
    bits = [-math.log2(counts[x] / total) for items in _top_k(predictions, k) for x in items if x in counts]
    return float(np.mean(bits)) if bits else math.nan


def intra_list_diversity(
    predictions: Predictions, item_vectors: Mapping[Hashable, Sequence[float] | np.ndarray], k: int
) -> float:
    """Mean over lists of the mean pairwise (1 − cosine) of the top-K items' vectors.

    Items without a vector (or with a zero vector) are left out of their list; lists with fewer than two
    vectors left are skipped; NaN if no list remains.
    """
    per_list: list[float] = []
    for items in _top_k(predictions, k):
        vectors = [np.asarray(item_vectors[x], dtype=np.float64) for x in items if x in item_vectors]
        vectors = [v for v in vectors if np.any(v)]
        n = len(vectors)
        if n < 2:
            continue
        unit = np.stack(vectors)
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        cosines = (unit @ unit.T)[np.triu_indices(n, k=1)]
        per_list.append(float(np.mean(1.0 - cosines)))
    return float(np.mean(per_list)) if per_list else math.nan


def beyond_accuracy_metrics(
    predictions: Predictions,
    ks: int | Iterable[int],
    *,
    catalog_size: int | None = None,
    train: Iterable[Hashable] | Truth | None = None,
    item_vectors: Mapping[Hashable, Sequence[float] | np.ndarray] | None = None,
) -> dict[str, float]:
    """``coverage@K``, ``novelty@K``, ``diversity@K`` at every K of ``ks`` — each only when its input is given."""
    out: dict[str, float] = {}
    for k in check_ks(ks):
        if catalog_size is not None:
            out[metric_key(COVERAGE, k)] = catalog_coverage(predictions, k, catalog_size)
        if train is not None:
            out[metric_key(NOVELTY, k)] = novelty(predictions, train, k)
        if item_vectors is not None:
            out[metric_key(DIVERSITY, k)] = intra_list_diversity(predictions, item_vectors, k)
    return out
