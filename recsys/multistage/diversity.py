"""Stage three: each user's list is cut from the ranker's order, or re-ranked for diversity by a determinantal point
process over the best ``pool`` candidates (:mod:`recsys.rerank.dpp`: the kernel from the items' embeddings and
the ranker's relevance, ``strength`` 0 = the ranker's order).

The strength is chosen when the model is fitted, on the labelled users scored by cross-fitted rankers: the largest
strength of ``diversity_grid`` such that it and every smaller one lose at most ``diversity_max_loss`` (relative) of
MAP@10 against the ranker's own order (:func:`choose_strength`) — a run of strengths, not one lucky point of a noisy
curve — among those that raise intra-list diversity by at least ``MIN_GAIN`` (embeddings that barely separate the
candidates, e.g. a heavily regularised ALS on a tiny set, make the re-rank a shuffle that only costs accuracy); the
curve of MAP@10 against intra-list diversity is kept for the run's report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.metrics import python_metrics as PM
from recsys.metrics.definitions import MAP, metric_key
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


def embedding_rows(items: np.ndarray, row_of: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Rows of ``vectors`` for ``items``; an item without a vector gets a zero row (the re-rank's "unlike all")."""
    safe = np.clip(items, 0, len(row_of) - 1)
    pos = np.where(items < len(row_of), row_of[safe], -1)
    out = vectors[np.maximum(pos, 0)].copy()
    out[pos < 0] = 0.0
    return out


def top_lists(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int, k: int, strength: float,
              pool: int, embeddings: tuple[np.ndarray, np.ndarray] | None) -> Lists:
    """Each row's top ``k`` of its candidates by ``scores`` (ties to the smaller item), re-ranked for diversity
    among its best ``pool`` when ``strength`` > 0 and ``embeddings`` (row_of, vectors) are given."""
    order = np.lexsort((items, -scores, rows))
    rows, items, scores = rows[order], items[order], scores[order]
    starts = np.searchsorted(rows, np.arange(n_rows + 1))
    position = np.arange(len(rows)) - starts[rows]
    if strength <= 0 or embeddings is None:
        keep = position < k
        counts = np.bincount(rows[keep], minlength=n_rows)
        return Lists(np.append(0, np.cumsum(counts)).astype(np.int32), items[keep], scores[keep])
    row_of, vectors = embeddings
    unit = dpp.unit_rows(vectors)
    sizes = np.minimum(np.diff(starts), pool)
    picked_items: list[np.ndarray] = [np.zeros(0, np.int32)] * n_rows
    picked_scores: list[np.ndarray] = [np.zeros(0, np.float32)] * n_rows
    full = np.flatnonzero(sizes == pool)                # lists of one length are re-ranked together
    if len(full):
        take = starts[full][:, None] + np.arange(pool)
        cand, rel = items[take], scores[take]
        positions = dpp.rerank_batch(rel, _rows_in(cand, row_of, len(unit)), np.vstack([unit, np.zeros_like(unit[:1])]),
                                     k, strength, unit=True)
        for j, row in enumerate(full.tolist()):
            picked_items[row] = cand[j, positions[j]]
            picked_scores[row] = rel[j, positions[j]]
    for row in np.flatnonzero((sizes > 0) & (sizes < pool)).tolist():
        cand, rel = items[starts[row]:starts[row] + sizes[row]], scores[starts[row]:starts[row] + sizes[row]]
        positions = dpp.rerank(rel, embedding_rows(cand, row_of, unit), k, strength)
        picked_items[row], picked_scores[row] = cand[positions], rel[positions]
    counts = np.array([len(p) for p in picked_items], dtype=np.int64)
    return Lists(np.append(0, np.cumsum(counts)).astype(np.int32),
                 np.concatenate(picked_items).astype(np.int32) if n_rows else np.zeros(0, np.int32),
                 np.concatenate(picked_scores).astype(np.float32) if n_rows else np.zeros(0, np.float32))


def _rows_in(items: np.ndarray, row_of: np.ndarray, missing: int) -> np.ndarray:
    """Rows of the embedding matrix for ``items``; ``missing`` (a zero row appended to it) for items without one."""
    safe = np.clip(items, 0, len(row_of) - 1)
    pos = np.where(items < len(row_of), row_of[safe], -1)
    return np.where(pos < 0, missing, pos)


def choose_strength(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, users: np.ndarray,
                    truth: dict[int, list[int]], grid: list[float], max_loss: float, pool: int,
                    embeddings: tuple[np.ndarray, np.ndarray] | None) -> tuple[float, list[dict]]:
    """The strength (module docstring) and the (strength, MAP@10, diversity) curve; ``rows`` index ``users``, whose
    held-out items are ``truth``."""
    if embeddings is None or not len(users):
        return 0.0, []
    row_of, vectors = embeddings
    unit = dpp.unit_rows(vectors)
    curve = []
    for strength in sorted({0.0, *grid}):
        lists = top_lists(rows, items, scores, len(users), K, strength, pool, embeddings)
        predictions = {int(u): lists.of(r).tolist() for r, u in enumerate(users)}
        value = PM.ranking_metrics(predictions, truth, [K])[metric_key(MAP, K)]
        diversity = _diversity(lists, len(users), row_of, unit)
        curve.append({"strength": strength, "map@10": round(value, 5), "diversity": round(diversity, 5)})
    base, plain, chosen = curve[0]["map@10"], curve[0]["diversity"], 0.0
    for point in curve:                 # the longest run of strengths from 0 that all keep the loss within bounds
        if point["map@10"] < base * (1 - max_loss):
            break
        if point["diversity"] >= plain + MIN_GAIN:     # … and that buys diversity: else the re-rank only shuffles
            chosen = point["strength"]
    return chosen, curve


def _diversity(lists: Lists, n_rows: int, row_of: np.ndarray, unit: np.ndarray) -> float:
    """Mean intra-list diversity (1 − cosine) of the lists, in the embeddings' space."""
    positions = [np.where(lists.of(r) < len(row_of), row_of[np.clip(lists.of(r), 0, len(row_of) - 1)], -1)
                 for r in range(n_rows)]
    padded = np.vstack([unit, np.zeros((1, unit.shape[1]), dtype=unit.dtype)])
    return dpp.intra_list_diversity([np.where(p < 0, len(unit), p) for p in positions], padded)
