"""Stage three: each user's list is cut from the ranker's order, or re-ranked for diversity by a determinantal point
process over the best ``pool`` candidates (:mod:`recsys.rerank.dpp`: the kernel from the items' embeddings and
the ranker's relevance, ``strength`` 0 = the ranker's order).

The strength is chosen when the model is fitted, on the labelled users scored by cross-fitted rankers: the largest
strength of ``diversity_grid`` such that it and every smaller one lose at most ``diversity_max_loss`` (relative) of
MAP@10 against the ranker's own order (:func:`choose_strength`) — a run of strengths, not one lucky point of a noisy
curve — among those that raise intra-list diversity by at least ``MIN_GAIN`` (embeddings that barely separate the
candidates, e.g. a heavily regularised ALS on a tiny set, make the re-rank a shuffle that only costs accuracy); the
curve of MAP@10 against intra-list diversity is kept for the run's report.

The loss is the upper one-sided ``confidence`` bound of the users' paired MAP@10 differences (normal approximation,
:func:`loss_bound`), not the difference of two means: on a few dozen labelled users (Subscription_Boxes: 53) a
re-rank that moves two users' hits reads as a 15 % gain or loss, and a strength chosen on that noise halved the
test set's hits. Many users make the bound the plain loss; ``confidence`` 0.5 is the plain loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from recsys.metrics import python_metrics as PM
from recsys.metrics.definitions import MAP, metric_key
from recsys.multistage.retrievers import positions
from recsys.rerank import dpp

K = 10          # the list length the strength is chosen at (the project's primary metric: MAP@10)
MIN_GAIN = 0.01  # intra-list diversity a strength must add to the ranker's order to be worth choosing


@dataclass
class Lists:
    """One list per row: ``items[offsets[r]:offsets[r + 1]]`` best first, with their ranker scores."""

    offsets: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def of(self, row: int) -> np.ndarray:
        return self.items[self.offsets[row]:self.offsets[row + 1]]


@dataclass(frozen=True)
class Space:
    """The item embeddings the re-rank and diversity work in, prepared once (a scoring task keeps one for all its
    blocks: normalising 94K × 99 vectors per block of 512 users cost more than the re-rank itself): unit rows, and
    a last zero row that stands for items without a vector (unlike every other item)."""

    row_of: np.ndarray          # item_idx -> row of ``unit`` (-1: none)
    unit: np.ndarray            # (vectors + 1) × D, float32

    @classmethod
    def of(cls, row_of: np.ndarray, vectors: np.ndarray) -> Space:
        unit = dpp.unit_rows(vectors)
        return cls(row_of, np.vstack([unit, np.zeros((1, unit.shape[1]), dtype=np.float32)]))

    def rows(self, items: np.ndarray) -> np.ndarray:
        """Rows of :attr:`unit` for ``items``; the zero row for items without a vector."""
        pos = positions(self.row_of, items)
        return np.where(pos < 0, len(self.unit) - 1, pos)

    def vectors_of(self, items: np.ndarray) -> np.ndarray:
        return self.unit[self.rows(items)]


def top_lists(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int, k: int, strength: float,
              pool: int, space: Space | None) -> Lists:
    """Each row's top ``k`` of its candidates by ``scores`` (ties to the smaller item), re-ranked for diversity
    among its best ``pool`` when ``strength`` > 0 and a ``space`` is given."""
    order = np.lexsort((items, -scores, rows))
    rows, items, scores = rows[order], items[order], scores[order]
    starts = np.searchsorted(rows, np.arange(n_rows + 1))
    position = np.arange(len(rows)) - starts[rows]
    if strength <= 0 or space is None:
        keep = position < k
        counts = np.bincount(rows[keep], minlength=n_rows)
        return Lists(np.append(0, np.cumsum(counts)).astype(np.int32), items[keep], scores[keep])
    sizes = np.minimum(np.diff(starts), pool)
    picked_items: list[np.ndarray] = [np.zeros(0, np.int32)] * n_rows
    picked_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * n_rows
    full = np.flatnonzero(sizes == pool)                # lists of one length are re-ranked together
    if len(full):
        take = starts[full][:, None] + np.arange(pool)
        cand, rel = items[take], scores[take]
        positions = dpp.rerank_batch(rel, space.rows(cand), space.unit, k, strength, unit=True)
        for j, row in enumerate(full.tolist()):
            picked_items[row] = cand[j, positions[j]]
            picked_scores[row] = rel[j, positions[j]]
    for row in np.flatnonzero((sizes > 0) & (sizes < pool)).tolist():
        cand, rel = items[starts[row]:starts[row] + sizes[row]], scores[starts[row]:starts[row] + sizes[row]]
        positions = dpp.rerank(rel, space.vectors_of(cand), k, strength)
        picked_items[row], picked_scores[row] = cand[positions], rel[positions]
    counts = np.array([len(p) for p in picked_items], dtype=np.int64)
    return Lists(np.append(0, np.cumsum(counts)).astype(np.int32),
                 np.concatenate(picked_items).astype(np.int32) if n_rows else np.zeros(0, np.int32),
                 np.concatenate(picked_scores).astype(np.float32) if n_rows else np.zeros(0, np.float32))


def choose_strength(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, users: np.ndarray,
                    truth: dict[int, list[int]], grid: list[float], max_loss: float, pool: int,
                    space: Space | None, confidence: float = 0.95) -> tuple[float, list[dict]]:
    """The strength (module docstring) and the (strength, MAP@10, loss bound, diversity) curve; ``rows`` index
    ``users``, whose held-out items are ``truth``."""
    if space is None or not len(users):
        return 0.0, []
    curve, per_user = [], []
    for strength in sorted({0.0, *grid}):
        lists = top_lists(rows, items, scores, len(users), K, strength, pool, space)
        predictions = {int(u): lists.of(r).tolist() for r, u in enumerate(users)}
        per_user.append(PM.per_user_metrics(predictions, truth, [K])[metric_key(MAP, K)])
        diversity = _diversity(lists, len(users), space)
        curve.append({"strength": strength, "map@10": round(float(per_user[-1].mean()), 5),
                      "loss_bound": round(loss_bound(per_user[0], per_user[-1], confidence), 5),
                      "diversity": round(diversity, 5)})
    plain, chosen = curve[0]["diversity"], 0.0
    for point in curve:                 # the longest run of strengths from 0 that all keep the loss within bounds
        if point["loss_bound"] > max_loss:
            break
        if point["diversity"] >= plain + MIN_GAIN:     # … and that buys diversity: else the re-rank only shuffles
            chosen = point["strength"]
    return chosen, curve


def loss_bound(base: np.ndarray, other: np.ndarray, confidence: float) -> float:
    """Upper one-sided ``confidence`` bound of the relative MAP@10 loss of ``other`` against ``base`` (per-user
    values of the same users): the mean paired loss plus z standard errors, over the base's mean. 0 when the base
    has no hit (nothing to lose); with one user there is no spread to measure, the bound is its loss."""
    reference = float(base.mean()) if len(base) else 0.0
    if reference <= 0:
        return 0.0
    loss = base - other
    return (float(loss.mean()) + NormalDist().inv_cdf(confidence) * standard_error(loss)) / reference


def standard_error(values: np.ndarray) -> float:
    """The standard error of ``values``' mean (0 for fewer than two values: no spread to measure)."""
    return float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def _diversity(lists: Lists, n_rows: int, space: Space) -> float:
    """Mean intra-list diversity (1 − cosine) of the lists, in the embeddings' space."""
    return dpp.intra_list_diversity([space.rows(lists.of(r)) for r in range(n_rows)], space.unit)
